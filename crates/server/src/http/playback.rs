//! `/live/{id}/...`: a stream's HLS as any player reads it: the master
//! playlist, per-rendition media playlists, init files and segments.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use streamweave_cas::Cid;
use streamweave_media::playlist::{
    self, MasterEntry, MediaPlaylistSpec, PlaylistPart, PlaylistSegment,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::problem::{ApiError, Problem};
use super::ranges::{FileAnswer, immutable_file, load_file};
use super::request_fields::RequestFields;
use super::streams::is_stream_id;
use crate::live::media_index::{SharedMedia, StreamMedia, read_lock};
use crate::model::StreamState;
pub use crate::money::sessions::MediaSpan;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(master_playlist))
        .routes(routes!(rendition_file))
}

const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";
/// A video rendition's init files, segments and parts.
pub const VIDEO_CONTENT_TYPE: &str = "video/mp4";
/// An audio rendition's.
pub const AUDIO_CONTENT_TYPE: &str = "audio/mp4";

/// A playlist answer's own headers (the lane's follow them).
pub fn playlist_headers() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(PLAYLIST_CONTENT_TYPE),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}

pub fn playlist_response(body: Bytes) -> Response {
    (playlist_headers(), body).into_response()
}

pub async fn stream_media(state: &AppState, id: &str) -> Result<SharedMedia, ApiError> {
    if !is_stream_id(id) {
        return Err(ApiError::not_found("no such stream"));
    }
    state
        .index
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such stream"))
}

/// Renders the master playlist of a stream's media.
pub fn master_for(media: &StreamMedia) -> Result<String, ApiError> {
    master_up_to(media, None)
}

/// The short side of a rendition's picture (`720p` is 720 either way
/// round); `None` for audio.
pub fn short_side(info: &crate::model::RenditionRecord) -> Option<u32> {
    match (info.width, info.height) {
        (Some(width), Some(height)) => Some(width.min(height)),
        (None, height) => height,
        (width, None) => width,
    }
}

/// The master playlist listing only renditions up to `max_height` (a
/// member's tier), audio always.
pub fn master_up_to(media: &StreamMedia, max_height: Option<u32>) -> Result<String, ApiError> {
    if media.renditions.is_empty() {
        return Err(ApiError::not_found("the stream has not started yet"));
    }
    let entries: Vec<(bool, MasterEntry<'_>)> = media
        .renditions
        .iter()
        .filter(|r| match (max_height, short_side(&r.info)) {
            (Some(max), Some(side)) => side <= max,
            _ => true,
        })
        .map(|r| {
            (
                r.info.height.is_some(),
                MasterEntry {
                    name: &r.info.name,
                    uri: format!("{}/index.m3u8", r.info.name),
                    bandwidth_bps: r.info.bandwidth_bps,
                    codecs: &r.info.codecs,
                    resolution: r.info.width.zip(r.info.height),
                },
            )
        })
        .collect();
    let videos: Vec<MasterEntry<'_>> = entries
        .iter()
        .filter(|(v, _)| *v)
        .map(|(_, e)| e.clone())
        .collect();
    let audio = entries.iter().find(|(v, _)| !*v).map(|(_, e)| e);
    Ok(playlist::render_master_playlist(&videos, audio))
}

/// Master playlist of a stream (free streams; paid ones play through sessions).
#[utoipa::path(
    get,
    path = "/live/{id}/master.m3u8",
    tag = "playback",
    params(("id" = String, Path, description = "Stream id")),
    responses(
        (status = 200, description = "HLS master playlist", content_type = "application/vnd.apple.mpegurl", body = String),
        (status = 404, description = "No such stream, or not started", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn master_playlist(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let media = stream_media(&state, &id).await?;
    let body = read_lock!(media).playlist("master", master_for)?;
    state.views.played(&id);
    Ok(playlist_response(body))
}

/// A rendition's `index.m3u8`, `init.mp4` or segment `{sequence}.m4s`.
#[utoipa::path(
    get,
    path = "/live/{id}/{rendition}/{file}",
    tag = "playback",
    params(
        ("id" = String, Path, description = "Stream id"),
        ("rendition" = String, Path, description = "Rendition name, e.g. 720p or audio"),
        ("file" = String, Path, description = "index.m3u8, init.mp4, init-{sequence}.mp4 (after a restarted source), {sequence}.m4s, or {sequence}.{part}.m4s (a live LL-HLS part; the hinted one is answered once written)"),
        ("_HLS_msn" = Option<u64>, Query, description = "On index.m3u8 of a live stream: hold the response until segment _HLS_msn is listed (LL-HLS blocking reload)"),
        ("_HLS_part" = Option<u32>, Query, description = "With _HLS_msn: until part _HLS_part of it is listed"),
    ),
    responses(
        (status = 200, description = "Playlist or media (segments: immutable, ranges supported)"),
        (status = 206, description = "Partial content"),
        (status = 304, description = "Not modified"),
        (status = 402, description = "A paid stream's segment: play through a session (its creator and admins, with their bearer token, need none)", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed _HLS_msn/_HLS_part, or _HLS_msn more than two segments past the live edge", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown stream, rendition or file", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A blocking reload or hinted part not ready within three target durations", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rendition_file(
    State(state): State<AppState>,
    caller: Option<Caller>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path((id, rendition, file)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A free live stream's viewers: whoever keeps fetching its playlists.
    if file == "index.m3u8"
        && let Some(Extension(ConnectInfo(address))) = peer
        && let Ok(media) = stream_media(&state, &id).await
    {
        let counted = {
            let media = read_lock!(media);
            !media.paid && media.state == StreamState::Live
        };
        if counted {
            state
                .audience
                .saw(&id, address.ip(), crate::model::now_ms());
        }
    }
    // A paid stream's creator (and admins) preview it without paying.
    let free_pass = |_: MediaSpan| Ok(());
    let mut gate: Option<Gate<'_>> = None;
    if let Some(caller) = caller {
        let previews = caller.is_admin()
            || match caller.address() {
                Some(address) => state
                    .db
                    .stream(&id)
                    .await?
                    .is_some_and(|s| s.owned_by(address)),
                None => false,
            };
        if previews {
            gate = Some(&free_pass);
        }
    }
    let request = RenditionRequest::parse(&rendition, &file, query.as_deref())?;
    rendition_response(&state, &id, &request, &headers, gate).await
}

/// A rendition's playlist answered from memory, without awaiting
/// anything or changing anything: the stream's media is resident and its
/// playlist rendered (or rendered now). With it, whether the stream is
/// free and live: its playlist readers are its audience, counted by the
/// caller once the request is let through, as [`rendition_file`] does.
/// `None` when the router must answer (the media is not resident, no such
/// rendition). Playlists are free on paid streams too.
pub fn resident_playlist(state: &AppState, id: &str, rendition: &str) -> Option<(Bytes, bool)> {
    let media = state.index.resident(id)?;
    let media = read_lock!(media);
    media.rendition(rendition)?;
    let free_live = !media.paid && media.state == StreamState::Live;
    let playlist = media
        .playlist(rendition, |media| render_media(media, rendition, state))
        .ok()?;
    Some((playlist, free_live))
}

/// A paid stream's gate: lets a span through or answers why not.
pub type Gate<'a> = &'a (dyn Fn(MediaSpan) -> Result<(), ApiError> + Sync);

/// A request for one of a rendition's files.
#[derive(Debug, Clone)]
pub struct RenditionRequest {
    pub rendition: String,
    file: FileRequest,
}

impl RenditionRequest {
    /// From the path's rendition and file name and the query string
    /// (`_HLS_msn` and `_HLS_part` on a playlist: a blocking reload).
    pub fn parse(rendition: &str, file: &str, query: Option<&str>) -> Result<Self, ApiError> {
        let mut file = parse_file_name(file)?;
        if let FileRequest::Playlist(reload) = &mut file {
            *reload = blocking_reload(query)?;
        }
        Ok(RenditionRequest {
            rendition: rendition.to_string(),
            file,
        })
    }
}

/// `_HLS_msn` (and `_HLS_part`) of a blocking playlist reload.
fn blocking_reload(query: Option<&str>) -> Result<Option<(u64, Option<u32>)>, ApiError> {
    let mut msn = None;
    let mut part = None;
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad =
            |name: &str| ApiError::bad_request(format!("{name} must be a non-negative integer"));
        match key {
            "_HLS_msn" => msn = Some(file_number(value).ok_or_else(|| bad("_HLS_msn"))?),
            "_HLS_part" => {
                part = Some(
                    file_number(value)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| bad("_HLS_part"))?,
                )
            }
            _ => {}
        }
    }
    match (msn, part) {
        (None, Some(_)) => Err(ApiError::bad_request("_HLS_part needs _HLS_msn")),
        (None, None) => Ok(None),
        (Some(msn), part) => Ok(Some((msn, part))),
    }
}

/// Serves a rendition's file; segments and parts of paid streams pass
/// `gate` (a session's), or answer 402 without one.
pub async fn rendition_response(
    state: &AppState,
    id: &str,
    request: &RenditionRequest,
    headers: &HeaderMap,
    gate: Option<Gate<'_>>,
) -> Result<Response, ApiError> {
    let media = stream_media(state, id).await?;
    let rendition = request.rendition.as_str();
    // A blocking reload waits for its segment or part; a hinted part for
    // ffmpeg to write it.
    match request.file {
        FileRequest::Playlist(Some((msn, part))) => {
            wait_for_media(state, &media, rendition, msn, part, Awaited::Playlist).await?;
        }
        FileRequest::Part(sequence, index) => {
            wait_for_media(
                state,
                &media,
                rendition,
                sequence,
                Some(index),
                Awaited::PartFile,
            )
            .await?;
        }
        _ => {}
    }
    let located = locate(&read_lock!(media), rendition, request.file, state)?;
    let (cid, content_type, span) = match located {
        Located::Playlist(body) => return Ok(playlist_response(body)),
        Located::File {
            cid,
            content_type,
            paid_span,
        } => (cid, content_type, paid_span),
    };
    if let Some(span) = span {
        match gate {
            Some(gate) => gate(span)?,
            None => {
                return Err(ApiError::custom(
                    StatusCode::PAYMENT_REQUIRED,
                    "session-required",
                    "Payment required",
                    "this stream is paid by the second or watched by ticket: start a session (POST /api/v1/streams/{id}/sessions) and play its playback_url",
                ));
            }
        }
    }
    let bytes = load_file(state, cid)
        .await?
        .ok_or_else(|| ApiError::not_found("segment bytes missing from the blockstore"))?;
    Ok(immutable_file(headers, &cid, content_type, bytes))
}

/// What a rendition request names in a stream's media.
enum Located {
    /// The rendition's playlist, rendered.
    Playlist(Bytes),
    /// A file of the blockstore; `paid_span`: the media it holds, when
    /// the stream is paid (a gate must let it through first).
    File {
        cid: Cid,
        content_type: &'static str,
        paid_span: Option<MediaSpan>,
    },
}

/// Finds `file` of `rendition` in `media`, without waiting (a blocking
/// reload or a hinted part has waited before).
fn locate(
    media: &StreamMedia,
    rendition: &str,
    file: FileRequest,
    state: &AppState,
) -> Result<Located, ApiError> {
    let Some(found) = media.rendition(rendition) else {
        return Err(ApiError::not_found("no such rendition"));
    };
    let content_type = if found.info.height.is_some() {
        VIDEO_CONTENT_TYPE
    } else {
        AUDIO_CONTENT_TYPE
    };
    let paid = |span: MediaSpan| media.paid.then_some(span);
    let (cid, paid_span) = match file {
        FileRequest::Playlist(_) => {
            let body = media.playlist(rendition, |media| render_media(media, rendition, state))?;
            return Ok(Located::Playlist(body));
        }
        FileRequest::Init => (
            found
                .init
                .ok_or_else(|| ApiError::not_found("no init file yet"))?,
            None,
        ),
        FileRequest::PeriodInit(sequence) => (
            usize::try_from(sequence)
                .ok()
                .and_then(|i| found.segments.get(i))
                .and_then(|segment| segment.init)
                .ok_or_else(|| ApiError::not_found("no such init file"))?,
            None,
        ),
        FileRequest::Segment(sequence) => {
            let segment = usize::try_from(sequence)
                .ok()
                .and_then(|i| found.segments.get(i))
                .ok_or_else(|| ApiError::not_found("no such segment"))?;
            let span = MediaSpan {
                position: sequence,
                through_ms: segment.duration_ms,
                whole: true,
            };
            (segment.cid, paid(span))
        }
        FileRequest::Part(sequence, index) => {
            let part = found.part(sequence, index).ok_or_else(|| {
                ApiError::not_found("no such part: it is older than the playlist's parts, or its segment ended before it")
            })?;
            let span = MediaSpan {
                position: sequence,
                through_ms: part.offset_ms.saturating_add(part.duration_ms),
                whole: false,
            };
            (part.cid, paid(span))
        }
    };
    Ok(Located::File {
        cid,
        content_type,
        paid_span,
    })
}

/// A rendition's media file (a segment, a part, an init file) answered
/// from memory, without awaiting anything: the stream's media is
/// resident, the file is written and its bytes are in the file cache.
/// Once all that is known, `over_limit` may refuse the request (its
/// answer is the answer), then `gate` lets a paid stream's span through
/// (`None`: a paid stream's files take the router, which knows who may
/// preview them). A gate's answer stands, as the router's would, except a
/// 402 on a node of a cluster: the router first looks at the stored
/// channel (another node may have accepted the voucher). `None` when the
/// router must answer: a playlist, a file not resident, every refusal
/// but the gate's.
pub fn resident_file(
    state: &AppState,
    id: &str,
    request: (&str, &str),
    headers: &impl RequestFields,
    over_limit: impl FnOnce() -> Option<Response>,
    gate: Option<Gate<'_>>,
) -> Option<FileAnswer> {
    let (rendition, file) = request;
    let file = parse_file_name(file).ok()?;
    if matches!(file, FileRequest::Playlist(_)) {
        return None;
    }
    let media = state.index.resident(id)?;
    let Located::File {
        cid,
        content_type,
        paid_span,
    } = locate(&read_lock!(media), rendition, file, state).ok()?
    else {
        return None;
    };
    let bytes = state.cache.get(&cid)?;
    if paid_span.is_some() && gate.is_none() {
        return None;
    }
    if let Some(refused) = over_limit() {
        return Some(FileAnswer::Other(refused));
    }
    if let (Some(span), Some(gate)) = (paid_span, gate)
        && let Err(refused) = gate(span)
    {
        if refused.status() == StatusCode::PAYMENT_REQUIRED && state.settings.clustered() {
            return None;
        }
        return Some(FileAnswer::Other(refused.into_response()));
    }
    Some(FileAnswer::for_request(headers, &cid, content_type, bytes))
}

/// What a request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaited {
    /// A blocking playlist reload (`_HLS_msn`, `_HLS_part`): a part past
    /// the last of a finished segment means the next segment's first.
    Playlist,
    /// A part file (the preload hint): one past the last of a finished
    /// segment, or far past the live edge, never comes.
    PartFile,
}

/// Holds a blocking playlist reload (or a hinted part) until the
/// rendition has segment `msn` (part `part` of it), for at most three
/// target durations; a stream that is not live answers at once.
async fn wait_for_media(
    state: &AppState,
    media: &SharedMedia,
    rendition: &str,
    msn: u64,
    part: Option<u32>,
    awaited: Awaited,
) -> Result<(), ApiError> {
    let hold = std::time::Duration::from_millis(u64::from(state.settings.segment_duration_ms) * 3);
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        let changes = {
            let media = read_lock!(media);
            if media.state != StreamState::Live {
                return Ok(());
            }
            let Some(found) = media.rendition(rendition) else {
                return Err(ApiError::not_found("no such rendition"));
            };
            if found.has(msn, part) {
                return Ok(());
            }
            let open = found.segments.len() as u64;
            match awaited {
                Awaited::Playlist if msn > open.saturating_add(2) => {
                    return Err(ApiError::bad_request(format!(
                        "_HLS_msn {msn} is more than two segments past the live edge ({open})"
                    )));
                }
                Awaited::PartFile if msn > open.saturating_add(2) || msn < open => {
                    return Err(ApiError::not_found("no such part"));
                }
                _ => {}
            }
            media.changes()
        };
        let notified = changes.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let media = read_lock!(media);
            if media.state != StreamState::Live
                || media.rendition(rendition).is_none_or(|r| r.has(msn, part))
            {
                return Ok(());
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(ApiError::custom(
                StatusCode::SERVICE_UNAVAILABLE,
                "media-not-ready",
                "Media not ready",
                "the requested segment or part did not arrive within three target durations",
            ));
        }
    }
}

fn render_media(
    media: &StreamMedia,
    rendition: &str,
    state: &AppState,
) -> Result<String, ApiError> {
    let found = media
        .rendition(rendition)
        .ok_or_else(|| ApiError::not_found("no such rendition"))?;
    let segments: Vec<PlaylistSegment> = found
        .segments
        .iter()
        .enumerate()
        .map(|(sequence, s)| PlaylistSegment {
            sequence: sequence as u64,
            duration_ms: s.duration_ms,
            uri: format!("{sequence}.m4s"),
            new_init_uri: s.init.map(|_| playlist::period_init_uri(sequence as u64)),
        })
        .collect();
    let parts: Vec<PlaylistPart> = found
        .parts
        .iter()
        .map(|p| PlaylistPart {
            sequence: p.sequence,
            duration_ms: p.duration_ms,
            uri: playlist::part_uri(p.sequence, p.index),
            independent: p.independent,
        })
        .collect();
    let open = found.segments.len() as u64;
    // The part ffmpeg writes next: the next of the open segment, or the
    // first of the next segment when the last part is expected to end it.
    let (hint_sequence, hint_index) = match found.parts.back() {
        Some(last) if last.sequence == open && last.ends_segment => (open + 1, 0),
        Some(last) if last.sequence == open => (open, last.index + 1),
        _ => (open, 0),
    };
    Ok(playlist::render_media_playlist(&MediaPlaylistSpec {
        init_uri: "init.mp4",
        segments: &segments,
        segment_duration_ms: state.settings.segment_duration_ms,
        ended: media.state == StreamState::Ended,
        live_window_segments: state.settings.live_window_segments,
        parts: &parts,
        part_target_ms: found.longest_part_ms,
        preload_hint: (media.state == StreamState::Live && found.init.is_some())
            .then(|| playlist::part_uri(hint_sequence, hint_index)),
    }))
}

#[derive(Debug, Clone, Copy)]
enum FileRequest {
    /// `index.m3u8`, with a blocking reload's segment and part.
    Playlist(Option<(u64, Option<u32>)>),
    Init,
    /// `init-N.mp4`: the init file of a source restarted at segment N.
    PeriodInit(u64),
    Segment(u64),
    /// `N.P.m4s`: part P of segment N (LL-HLS).
    Part(u64, u32),
}

/// A decimal number of at most 19 digits (fits a u64).
fn file_number(digits: &str) -> Option<u64> {
    (!digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn parse_file_name(file: &str) -> Result<FileRequest, ApiError> {
    match file {
        "index.m3u8" => Ok(FileRequest::Playlist(None)),
        "init.mp4" => Ok(FileRequest::Init),
        _ => {
            let media = file.strip_suffix(".m4s");
            if let Some(number) = media.and_then(file_number) {
                Ok(FileRequest::Segment(number))
            } else if let Some((sequence, index)) = media
                .and_then(|name| name.split_once('.'))
                .and_then(|(s, p)| Some((file_number(s)?, u32::try_from(file_number(p)?).ok()?)))
            {
                Ok(FileRequest::Part(sequence, index))
            } else if let Some(number) = file
                .strip_prefix("init-")
                .and_then(|rest| rest.strip_suffix(".mp4"))
                .and_then(file_number)
            {
                Ok(FileRequest::PeriodInit(number))
            } else {
                Err(ApiError::not_found("no such file"))
            }
        }
    }
}
