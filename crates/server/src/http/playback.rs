//! `/live/{id}/...`: a stream's HLS as any player reads it: the master
//! playlist, per-rendition media playlists, init files and segments.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use streamweave_media::playlist::{self, MasterEntry, MediaPlaylistSpec, PlaylistSegment};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::problem::{ApiError, Problem};
use super::ranges::{immutable_file, load_file};
use super::streams::is_stream_id;
use crate::live::media_index::{SharedMedia, StreamMedia, read_lock};
use crate::model::StreamState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(master_playlist))
        .routes(routes!(rendition_file))
}

const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";

pub fn playlist_response(body: Bytes) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(PLAYLIST_CONTENT_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
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
        ("file" = String, Path, description = "index.m3u8, init.mp4, init-{sequence}.mp4 (after a restarted source) or {sequence}.m4s"),
    ),
    responses(
        (status = 200, description = "Playlist or media (segments: immutable, ranges supported)"),
        (status = 206, description = "Partial content"),
        (status = 304, description = "Not modified"),
        (status = 402, description = "A paid stream's segment: play through a session (its creator and admins, with their bearer token, need none)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown stream, rendition or file", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rendition_file(
    State(state): State<AppState>,
    caller: Option<Caller>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path((id, rendition, file)): Path<(String, String, String)>,
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
    let free_pass = |_: u64, _: u32| Ok(());
    let mut gate: Option<&(dyn Fn(u64, u32) -> Result<(), ApiError> + Sync)> = None;
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
    rendition_response(&state, &id, &rendition, &file, &headers, gate).await
}

/// Serves a rendition's file; segments of paid streams pass `gate` (a
/// session's), or answer 402 without one.
pub async fn rendition_response(
    state: &AppState,
    id: &str,
    rendition: &str,
    file: &str,
    headers: &HeaderMap,
    gate: Option<&(dyn Fn(u64, u32) -> Result<(), ApiError> + Sync)>,
) -> Result<Response, ApiError> {
    let media = stream_media(state, id).await?;
    let request = parse_file_name(file)?;
    let (cid, content_type) = {
        let media = read_lock!(media);
        let Some(found) = media.rendition(rendition) else {
            return Err(ApiError::not_found("no such rendition"));
        };
        let content_type = if found.info.height.is_some() {
            "video/mp4"
        } else {
            "audio/mp4"
        };
        match request {
            FileRequest::Playlist => {
                let body =
                    media.playlist(rendition, |media| render_media(media, rendition, state))?;
                return Ok(playlist_response(body));
            }

            FileRequest::Init => (
                found
                    .init
                    .ok_or_else(|| ApiError::not_found("no init file yet"))?,
                content_type,
            ),
            FileRequest::PeriodInit(sequence) => (
                usize::try_from(sequence)
                    .ok()
                    .and_then(|i| found.segments.get(i))
                    .and_then(|segment| segment.init)
                    .ok_or_else(|| ApiError::not_found("no such init file"))?,
                content_type,
            ),
            FileRequest::Segment(sequence) => {
                let segment = usize::try_from(sequence)
                    .ok()
                    .and_then(|i| found.segments.get(i))
                    .ok_or_else(|| ApiError::not_found("no such segment"))?;
                if media.paid {
                    match gate {
                        Some(gate) => gate(sequence, segment.duration_ms)?,
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
                (segment.cid, content_type)
            }
        }
    };
    let bytes = load_file(state, cid)
        .await?
        .ok_or_else(|| ApiError::not_found("segment bytes missing from the blockstore"))?;
    Ok(immutable_file(headers, &cid, content_type, bytes))
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
    Ok(playlist::render_media_playlist(&MediaPlaylistSpec {
        init_uri: "init.mp4",
        segments: &segments,
        segment_duration_ms: state.settings.segment_duration_ms,
        ended: media.state == StreamState::Ended,
        live_window_segments: state.settings.live_window_segments,
    }))
}

enum FileRequest {
    Playlist,
    Init,
    /// `init-N.mp4`: the init file of a source restarted at segment N.
    PeriodInit(u64),
    Segment(u64),
}

/// A decimal number of at most 19 digits (fits a u64).
fn file_number(digits: &str) -> Option<u64> {
    (!digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn parse_file_name(file: &str) -> Result<FileRequest, ApiError> {
    match file {
        "index.m3u8" => Ok(FileRequest::Playlist),
        "init.mp4" => Ok(FileRequest::Init),
        _ => {
            if let Some(number) = file.strip_suffix(".m4s").and_then(file_number) {
                Ok(FileRequest::Segment(number))
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
