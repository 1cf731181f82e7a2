//! `/api/v1/streams`: create, list and describe streams; list their segments.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::problem::{ApiError, ApiJson, Problem};
use crate::model::{AccessMode, RenditionRecord, SegmentRecord, StreamRecord, StreamState, now_ms};
use crate::store::StreamFilter;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_stream, list_streams))
        .routes(routes!(get_stream, update_stream))
        .routes(routes!(list_segments))
        .routes(routes!(stream_key))
        .routes(routes!(rotate_stream_key))
        .routes(routes!(stream_stats))
        .routes(routes!(stream_archive))
}

/// Longest stream title, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// Body of `POST /api/v1/streams`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// 1 to 200 characters.
    pub title: String,
    /// `free` (default), `per_second` (needs `price` and a signed-in
    /// creator) or `members` (needs `tiers`).
    pub access: Option<AccessMode>,
    pub price: Option<PriceBody>,
    /// Free seconds before a paid stream charges (default 0).
    pub preview_seconds: Option<u32>,
    /// Days the recording is kept after the stream ends (1 to 36500;
    /// default: forever).
    pub retention_days: Option<u32>,
    /// Make a paid stream's archive public (default false).
    pub archive_public: Option<bool>,
    /// Up to 2000 characters (default empty).
    pub description: Option<String>,
    /// One category: 1 to 32 of `a-z 0-9 -`.
    pub category: Option<String>,
    /// Up to 10 tags, each 1 to 32 of `a-z 0-9 -` (upper case is lowered).
    pub tags: Option<Vec<String>>,
    /// `members` streams: the tiers whose members watch (tier ids of the
    /// creator's or the platform's, or `platform` for any platform tier).
    pub tiers: Option<Vec<String>>,
}

/// A price: `amount` base units per `period_seconds`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    /// Base units, decimal string.
    pub amount: String,
    /// 1 to 31536000.
    pub period_seconds: u32,
}

/// Body of `PATCH /api/v1/streams/{id}`: what is present changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStream {
    pub title: Option<String>,
    pub access: Option<AccessMode>,
    pub price: Option<PriceBody>,
    pub preview_seconds: Option<u32>,
    /// Days the recording is kept after the stream ends; 0 keeps it forever.
    pub retention_days: Option<u32>,
    /// Make a paid stream's archive public, or private again.
    pub archive_public: Option<bool>,
    pub description: Option<String>,
    /// A category, or `""` for none.
    pub category: Option<String>,
    /// Replaces the tags.
    pub tags: Option<Vec<String>>,
    /// `members` streams: the tiers whose members watch (tier ids of the
    /// creator's or the platform's, or `platform` for any platform tier).
    pub tiers: Option<Vec<String>>,
}

/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Most tags a stream has.
const MAX_TAGS: usize = 10;

/// A category or tag: 1 to 32 of `a-z 0-9 -`, lowered.
fn label(text: &str, what: &str) -> Result<String, ApiError> {
    let label = text.trim().to_ascii_lowercase();
    if label.is_empty()
        || label.len() > 32
        || !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1 to 32 characters of a-z, 0-9 and -"
        )));
    }
    Ok(label)
}

/// Applies what a create or update body says about description, category and tags.
pub(super) fn apply_details(
    stream: &mut StreamRecord,
    description: Option<&str>,
    category: Option<&str>,
    tags: Option<&[String]>,
) -> Result<(), ApiError> {
    if let Some(text) = description {
        let text = text.trim();
        if text.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ApiError::bad_request(format!(
                "description must have at most {MAX_DESCRIPTION_CHARS} characters"
            )));
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(ApiError::bad_request(
                "description must not contain control characters other than new lines",
            ));
        }
        stream.description = text.to_string();
    }
    match category {
        None => {}
        Some(text) if text.trim().is_empty() => stream.category = None,
        Some(text) => stream.category = Some(label(text, "category")?),
    }
    if let Some(tags) = tags {
        if tags.len() > MAX_TAGS {
            return Err(ApiError::bad_request(format!("at most {MAX_TAGS} tags")));
        }
        let mut labels = Vec::with_capacity(tags.len());
        for tag in tags {
            let tag = label(tag, "a tag")?;
            if !labels.contains(&tag) {
                labels.push(tag);
            }
        }
        stream.tags = labels;
    }
    Ok(())
}

/// Applies a retention setting: 0 (or absent at creation) keeps forever.
pub(super) fn apply_retention(
    stream: &mut StreamRecord,
    days: Option<u32>,
) -> Result<(), ApiError> {
    match days {
        None => Ok(()),
        Some(0) => {
            stream.retention_days = None;
            Ok(())
        }
        Some(days) if days <= 36_500 => {
            stream.retention_days = Some(days);
            Ok(())
        }
        Some(_) => Err(ApiError::bad_request(
            "retention_days must be at most 36500 (0 keeps forever)",
        )),
    }
}

fn parse_price(body: &PriceBody) -> Result<streamweave_ledger::Price, ApiError> {
    let amount: streamweave_ledger::Amount = body
        .amount
        .parse()
        .map_err(|err| ApiError::bad_request(format!("price.amount: {err}")))?;
    if amount.is_zero() {
        return Err(ApiError::bad_request("price.amount must be positive"));
    }
    if !(1..=31_536_000).contains(&body.period_seconds) {
        return Err(ApiError::bad_request(
            "price.period_seconds must be between 1 and 31536000",
        ));
    }
    Ok(streamweave_ledger::Price {
        amount,
        period_seconds: body.period_seconds,
    })
}

/// Applies access settings, checking that a paid stream has a price and an owner to pay.
pub(super) fn apply_access(
    stream: &mut StreamRecord,
    access: Option<AccessMode>,
    price: Option<&PriceBody>,
    preview_seconds: Option<u32>,
) -> Result<(), ApiError> {
    if stream.access == AccessMode::Ticket && (access.is_some() || price.is_some()) {
        return Err(ApiError::bad_request(
            "an event's stream is watched by ticket: change the event instead",
        ));
    }
    if access == Some(AccessMode::Ticket) {
        return Err(ApiError::bad_request(
            "ticket access belongs to events: create an event (POST /api/v1/events)",
        ));
    }
    if let Some(price) = price {
        stream.price = Some(parse_price(price)?);
    }
    if let Some(access) = access {
        stream.access = access;
    }
    if let Some(preview) = preview_seconds {
        if preview > 86_400 {
            return Err(ApiError::bad_request(
                "preview_seconds must be at most 86400",
            ));
        }
        stream.preview_seconds = preview;
    }
    if stream.access == AccessMode::PerSecond {
        if stream.price.is_none() {
            return Err(ApiError::bad_request("a per_second stream needs a price"));
        }
        if stream.owner.is_none() {
            return Err(ApiError::bad_request(
                "a per_second stream pays its owner: create it signed in with the creator's wallet",
            ));
        }
    }
    Ok(())
}

pub(super) fn validate_title(title: &str) -> Result<String, ApiError> {
    let title = title.trim().to_string();
    let chars = title.chars().count();
    if chars == 0 || chars > MAX_TITLE_CHARS {
        return Err(ApiError::bad_request(format!(
            "title must have 1 to {MAX_TITLE_CHARS} characters"
        )));
    }
    if title.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "title must not contain control characters",
        ));
    }
    Ok(title)
}

/// A stream as anyone may see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamView {
    pub id: String,
    pub title: String,
    pub state: StreamState,
    /// The creator's address, when a signed-in creator made the stream.
    pub owner: Option<String>,
    pub access: AccessMode,
    /// For `per_second` streams.
    pub price: Option<PriceBody>,
    /// For `members` streams: the tiers whose members watch (tier ids, or
    /// `platform` for any platform tier).
    pub tiers: Vec<String>,
    /// Plays started (master playlists served, public or in a session).
    pub views: u64,
    pub preview_seconds: u32,
    /// Master playlist, relative to the server.
    pub playback_url: String,
    /// While a WebRTC publisher sends the stream to this server: where to
    /// POST a WHEP offer to watch its source with the least delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whep_url: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once live.
    pub started_at: Option<String>,
    /// RFC 3339, once ended.
    pub ended_at: Option<String>,
    /// Why the stream ended, when it ended abnormally.
    pub end_error: Option<String>,
    /// The ladder, once live.
    pub renditions: Vec<RenditionRecord>,
    /// Days the recording is kept after the end (absent: forever).
    pub retention_days: Option<u32>,
    /// RFC 3339, when retention removed the recording.
    pub expired_at: Option<String>,
    /// Whether anyone may fetch the archive (always, for free streams).
    pub archive_public: bool,
    pub description: String,
    pub category: Option<String>,
    pub tags: Vec<String>,
    /// Watching now: paying sessions, or for a free stream the distinct
    /// addresses that fetched its playlists in the last 15 s.
    pub viewers: usize,
    /// `live` (a broadcast) or `upload` (a video: see `/api/v1/videos`).
    pub source: crate::model::StreamSource,
}

/// Answer to a stream's creation: its view plus what the creator publishes with.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamCreated {
    #[serde(flatten)]
    pub stream: StreamView,
    /// Secret: whoever has it can publish.
    pub stream_key: String,
    /// RTMP server URL (OBS "Server"); publish to `{rtmp_url}/{stream_key}`.
    pub rtmp_url: String,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// What `end_error` says to anyone but the stream's creator and admins: the
/// cause itself (ffmpeg's output, paths) is internal.
const PUBLIC_END_ERROR: &str = "the broadcast ended unexpectedly";

pub(super) fn view(
    state: &AppState,
    stream: &StreamRecord,
    renditions: Vec<RenditionRecord>,
    viewer: Option<&Caller>,
) -> StreamView {
    let owner_or_admin = viewer.is_some_and(|caller| {
        caller.is_admin()
            || stream
                .owner
                .as_deref()
                .is_some_and(|owner| caller.address().is_some_and(|a| format!("{a:#x}") == owner))
    });
    StreamView {
        id: stream.id.clone(),
        title: stream.title.clone(),
        state: stream.state,
        owner: stream.owner.clone(),
        access: stream.access,
        price: stream.price.map(|p| PriceBody {
            amount: p.amount.to_string(),
            period_seconds: p.period_seconds,
        }),
        preview_seconds: stream.preview_seconds,
        playback_url: format!("/live/{}/master.m3u8", stream.id),
        whep_url: (stream.state == StreamState::Live && state.webrtc.has_source(&stream.id))
            .then(|| format!("/api/v1/streams/{}/whep", stream.id)),
        created_at: rfc3339(stream.created_at_ms),
        started_at: stream.started_at_ms.map(rfc3339),
        ended_at: stream.ended_at_ms.map(rfc3339),
        end_error: match &stream.end_error {
            Some(cause) if owner_or_admin => Some(cause.clone()),
            Some(_) => Some(PUBLIC_END_ERROR.to_string()),
            None => None,
        },
        renditions,
        retention_days: stream.retention_days,
        expired_at: stream.expired_at_ms.map(rfc3339),
        archive_public: stream.archive_public || stream.access == AccessMode::Free,
        description: stream.description.clone(),
        category: stream.category.clone(),
        tags: stream.tags.clone(),
        viewers: state.viewers(&stream.id, stream.access == AccessMode::Free, now_ms()),
        source: stream.source,
        tiers: stream.member_tiers.clone(),
        views: stream.views,
    }
}

/// A stream as created: idle, free, with a fresh id and key (a video's key
/// is never handed out, so nothing publishes to it).
pub(super) fn new_record(
    title: String,
    owner: Option<String>,
    source: crate::model::StreamSource,
    archive_public: bool,
) -> StreamRecord {
    StreamRecord {
        id: random_token(12),
        title,
        stream_key: format!("sk_{}", random_token(32)),
        owner,
        state: StreamState::Idle,
        created_at_ms: now_ms(),
        started_at_ms: None,
        ended_at_ms: None,
        end_error: None,
        access: AccessMode::Free,
        price: None,
        preview_seconds: 0,
        retention_days: None,
        expired_at_ms: None,
        archive_public,
        description: String::new(),
        category: None,
        tags: Vec::new(),
        source,
        duration_ms: None,
        member_tiers: Vec::new(),
        views: 0,
    }
}

pub(super) fn random_token(length: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..length)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Whether `id` has the shape of a stream id (so junk never reaches the database).
pub fn is_stream_id(id: &str) -> bool {
    id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Create a stream; a signed-in account owns what it creates.
#[utoipa::path(
    post,
    path = "/api/v1/streams",
    tag = "streams",
    request_body = CreateStream,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = StreamCreated),
        (status = 400, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateStream>,
) -> Result<(StatusCode, Json<StreamCreated>), ApiError> {
    let title = validate_title(&body.title)?;
    let mut record = new_record(
        title,
        caller.address().map(|a| format!("{a:#x}")),
        crate::model::StreamSource::Live,
        body.archive_public.unwrap_or(false),
    );
    apply_details(
        &mut record,
        body.description.as_deref(),
        body.category.as_deref(),
        body.tags.as_deref(),
    )?;
    apply_retention(&mut record, body.retention_days)?;
    apply_access(
        &mut record,
        body.access,
        body.price.as_ref(),
        body.preview_seconds,
    )?;
    super::memberships::apply_member_tiers(&state, &mut record, body.tiers.as_deref()).await?;
    state.db.insert_stream(&record).await?;
    tracing::info!(stream = %record.id, "stream created");
    Ok((
        StatusCode::CREATED,
        Json(StreamCreated {
            stream: view(&state, &record, Vec::new(), Some(&caller)),
            stream_key: record.stream_key.clone(),
            rtmp_url: state.settings.public_rtmp_url.clone(),
        }),
    ))
}

/// Filters of the stream list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListStreamsQuery {
    /// Only streams in this state.
    pub state: Option<String>,
    /// At most this many (1..=200, default 50).
    pub limit: Option<i64>,
    /// Only this creator's streams (address).
    pub owner: Option<String>,
    /// Only streams in this category.
    pub category: Option<String>,
    /// Only streams with this tag.
    pub tag: Option<String>,
    /// Search: part of the title (any case), or a creator's address.
    pub q: Option<String>,
    /// Only live broadcasts (`live`) or uploaded videos (`upload`).
    pub source: Option<String>,
    /// `newest` (default) or `most_watched` (most plays first).
    pub sort: Option<String>,
    /// Only this access: `free`, `per_second`, `members` or `ticket`.
    pub access: Option<String>,
    /// Videos and recordings by length: `short` (under 4 minutes),
    /// `medium` (4 to 20) or `long` (over 20).
    pub duration: Option<String>,
}

/// List streams, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/streams",
    tag = "streams",
    params(ListStreamsQuery),
    responses(
        (status = 200, description = "Streams", body = [StreamView]),
        (status = 400, description = "Bad filter", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_streams(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Query(query): Query<ListStreamsQuery>,
) -> Result<Json<Vec<StreamView>>, ApiError> {
    let source = match query.source.as_deref() {
        None | Some("") => None,
        Some("live") => Some(crate::model::StreamSource::Live),
        Some("upload") => Some(crate::model::StreamSource::Upload),
        Some(_) => return Err(ApiError::bad_request("source must be live or upload")),
    };
    list_views(&state, caller.as_ref(), &query, source)
        .await
        .map(Json)
}

/// Stream views matching `query` (and `source`), newest first.
pub(super) async fn list_views(
    state: &AppState,
    caller: Option<&Caller>,
    query: &ListStreamsQuery,
    source: Option<crate::model::StreamSource>,
) -> Result<Vec<StreamView>, ApiError> {
    let non_empty = |text: &Option<String>| {
        text.as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    let filter = StreamFilter {
        state: match query.state.as_deref() {
            None => None,
            Some(text) => Some(
                StreamState::parse(text)
                    .ok_or_else(|| ApiError::bad_request("state must be idle, live or ended"))?,
            ),
        },
        owner: match non_empty(&query.owner) {
            None => None,
            Some(text) => Some(format!("{:#x}", super::auth::parse_address(&text)?)),
        },
        category: non_empty(&query.category)
            .map(|c| label(&c, "category"))
            .transpose()?,
        tag: non_empty(&query.tag)
            .map(|t| label(&t, "tag"))
            .transpose()?,
        search: match non_empty(&query.q) {
            Some(q) if q.chars().count() > MAX_TITLE_CHARS => {
                return Err(ApiError::bad_request("the search is too long"));
            }
            q => q,
        },
        source,
        access: match query.access.as_deref() {
            None | Some("") => None,
            Some("free") => Some("free"),
            Some("per_second") => Some("per_second"),
            Some("members") => Some("members"),
            Some("ticket") => Some("ticket"),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "access must be free, per_second, members or ticket",
                ));
            }
        },
        min_duration_ms: None,
        max_duration_ms: None,
        most_watched: match query.sort.as_deref() {
            None | Some("") | Some("newest") => false,
            Some("most_watched") => true,
            Some(_) => {
                return Err(ApiError::bad_request("sort must be newest or most_watched"));
            }
        },
    };
    const MINUTE_MS: i64 = 60_000;
    let (min_duration_ms, max_duration_ms) = match query.duration.as_deref() {
        None | Some("") => (None, None),
        Some("short") => (None, Some(4 * MINUTE_MS)),
        Some("medium") => (Some(4 * MINUTE_MS), Some(20 * MINUTE_MS)),
        Some("long") => (Some(20 * MINUTE_MS), None),
        Some(_) => {
            return Err(ApiError::bad_request(
                "duration must be short, medium or long",
            ));
        }
    };
    // A duration filter only matches items with a known length.
    let filter = StreamFilter {
        min_duration_ms: min_duration_ms.or(query.duration.is_some().then_some(0)),
        max_duration_ms,
        ..filter
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 200"));
    }
    let streams = state.db.streams(&filter, limit).await?;
    let mut views = Vec::with_capacity(streams.len());
    for stream in &streams {
        views.push(view(
            state,
            stream,
            state.db.renditions(&stream.id).await?,
            caller,
        ));
    }
    Ok(views)
}

/// Describe a stream.
#[utoipa::path(
    get,
    path = "/api/v1/streams/{id}",
    tag = "streams",
    params(("id" = String, Path, description = "Stream id")),
    responses(
        (status = 200, description = "The stream", body = StreamView),
        (status = 404, description = "No such stream", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_stream(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
) -> Result<Json<StreamView>, ApiError> {
    let stream = find_stream(&state, &id).await?;
    let renditions = state.db.renditions(&id).await?;
    Ok(Json(view(&state, &stream, renditions, caller.as_ref())))
}

pub(super) async fn find_stream(state: &AppState, id: &str) -> Result<StreamRecord, ApiError> {
    if !is_stream_id(id) {
        return Err(ApiError::not_found("no such stream"));
    }
    state
        .db
        .stream(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such stream"))
}

/// List a stream's stored segments in order (by rendition, then sequence).
#[utoipa::path(
    get,
    path = "/api/v1/streams/{id}/segments",
    tag = "streams",
    params(("id" = String, Path, description = "Stream id")),
    responses(
        (status = 200, description = "Segments", body = [SegmentRecord]),
        (status = 404, description = "No such stream", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_segments(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<SegmentRecord>>, ApiError> {
    find_stream(&state, &id).await?;
    Ok(Json(state.db.segments(&id).await?))
}

/// A stream's publishing credentials (owner and admins only).
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamKeyView {
    pub stream_key: String,
    pub rtmp_url: String,
}

pub(super) async fn owned_stream(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<StreamRecord, ApiError> {
    let stream = find_stream(state, id).await?;
    if caller.is_admin() || caller.address().is_some_and(|a| stream.owned_by(a)) {
        Ok(stream)
    } else {
        // Not revealing whether someone else's stream exists.
        Err(ApiError::not_found("no such stream"))
    }
}

/// Watch statistics of a stream (owner and admins).
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamStatsView {
    pub stream_id: String,
    /// Distinct accounts that started a paid session.
    pub unique_viewers: u64,
    /// Sessions started.
    pub sessions: u64,
    /// Sessions requesting media now.
    pub viewers_now: u64,
    /// Paid media time granted to all viewers together (viewer-milliseconds).
    pub paid_viewer_ms: u64,
    /// The same in whole viewer-seconds.
    pub paid_viewer_seconds: u64,
    /// What viewers' vouchers moved (base units).
    #[schema(value_type = String)]
    pub gross: streamweave_ledger::Amount,
    /// The creator's share of it, after the platform fee and collaborators' splits.
    #[schema(value_type = String)]
    pub net: streamweave_ledger::Amount,
    /// The platform's fee of it.
    #[schema(value_type = String)]
    pub platform_fee: streamweave_ledger::Amount,
    /// Tips received (count).
    pub tips: u64,
    /// What the tips moved (base units).
    #[schema(value_type = String)]
    pub tips_gross: streamweave_ledger::Amount,
    /// The creator's share of the tips.
    #[schema(value_type = String)]
    pub tips_net: streamweave_ledger::Amount,
}

/// Watch statistics: unique viewers, paid viewer time, gross and net revenue
/// (owner and admins).
#[utoipa::path(
    get,
    path = "/api/v1/streams/{id}/stats",
    tag = "streams",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Stream id")),
    responses(
        (status = 200, body = StreamStatsView),
        (status = 404, description = "No such stream, or not yours", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn stream_stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<StreamStatsView>, ApiError> {
    let stream = owned_stream(&state, &caller, &id).await?;
    let totals = state.stats.totals(&stream.id).await?;
    let tips = state.db.stream_tip_totals(&stream.id).await?;
    Ok(Json(StreamStatsView {
        stream_id: stream.id.clone(),
        unique_viewers: totals.unique_viewers,
        sessions: totals.sessions,
        viewers_now: state.sessions.viewers(&stream.id, now_ms()) as u64,
        paid_viewer_ms: totals.paid_media_ms,
        paid_viewer_seconds: totals.paid_media_ms / 1000,
        gross: totals.gross,
        net: totals.net,
        platform_fee: totals.fee,
        tips: tips.tips,
        tips_gross: tips.gross,
        tips_net: tips.creator,
    }))
}

/// The recording as an IPFS folder (see `crate::archive`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ArchiveView {
    pub stream_id: String,
    /// The UnixFS directory's CID: `/ipfs/{root_cid}/master.m3u8` plays it.
    pub root_cid: String,
    /// Bytes of the CARv1 of the root (`streamweave archive export`).
    pub car_size: u64,
    /// The CAR's Piece CID (v2, FRC-0069).
    pub piece_cid: String,
    /// The padded piece size in bytes.
    pub piece_size: u64,
    /// Segments it holds (a live stream's archive grows).
    pub segments: usize,
    /// Whether the recording is complete (the stream ended).
    pub complete: bool,
    /// Replicas of this archive (complete archives are replicated).
    #[schema(value_type = Vec<Object>)]
    pub replicas: Vec<crate::archive::replication::ReplicaRecord>,
}

/// The recording as a content-addressed folder: root CID, CAR size and
/// Piece CID. Free streams' archives are public, and paid streams' whose
/// creator made them public (`archive_public`); other paid streams', their
/// owner's and the admins'.
#[utoipa::path(
    get,
    path = "/api/v1/streams/{id}/archive",
    tag = "streams",
    params(("id" = String, Path, description = "Stream id")),
    responses(
        (status = 200, body = ArchiveView),
        (status = 404, description = "No such stream, no media yet, or not yours", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn stream_archive(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ArchiveView>, ApiError> {
    let stream = match (find_stream(&state, &id).await?, caller) {
        (stream, _) if stream.access == AccessMode::Free || stream.archive_public => stream,
        (_, Some(caller)) => owned_stream(&state, &caller, &id).await?,
        (_, None) => return Err(ApiError::not_found("no such stream")),
    };
    let complete = stream.state == StreamState::Ended;
    let Some((summary, segments)) = crate::archive::current_archive(
        &state.db,
        &state.blockstore,
        &stream.id,
        state.settings.segment_duration_ms,
    )
    .await?
    else {
        return Err(ApiError::not_found("the stream has no media yet"));
    };
    let replicas = state.db.replicas(Some(&summary.root_cid)).await?;
    Ok(Json(archive_view(
        &stream.id, summary, segments, complete, replicas,
    )))
}

fn archive_view(
    stream_id: &str,
    summary: crate::archive::ArchiveSummary,
    segments: usize,
    complete: bool,
    replicas: Vec<crate::archive::replication::ReplicaRecord>,
) -> ArchiveView {
    ArchiveView {
        stream_id: stream_id.to_string(),
        root_cid: summary.root_cid,
        car_size: summary.car_size,
        piece_cid: summary.piece_cid,
        piece_size: summary.piece_size,
        segments,
        complete,
        replicas,
    }
}

/// The stream key and RTMP URL (owner and admins).
#[utoipa::path(
    get,
    path = "/api/v1/streams/{id}/key",
    tag = "streams",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Stream id")),
    responses(
        (status = 200, body = StreamKeyView),
        (status = 404, description = "No such stream, or not yours", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn stream_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<StreamKeyView>, ApiError> {
    let stream = owned_stream(&state, &caller, &id).await?;
    Ok(Json(StreamKeyView {
        stream_key: stream.stream_key,
        rtmp_url: state.settings.public_rtmp_url.clone(),
    }))
}

/// Replace the stream key; the old one stops working (owner and admins).
#[utoipa::path(
    post,
    path = "/api/v1/streams/{id}/key/rotate",
    tag = "streams",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Stream id")),
    responses(
        (status = 200, body = StreamKeyView),
        (status = 404, description = "No such stream, or not yours", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rotate_stream_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<StreamKeyView>, ApiError> {
    let stream = owned_stream(&state, &caller, &id).await?;
    let stream_key = format!("sk_{}", random_token(32));
    state.db.set_stream_key(&stream.id, &stream_key).await?;
    tracing::info!(stream = %stream.id, "stream key rotated");
    Ok(Json(StreamKeyView {
        stream_key,
        rtmp_url: state.settings.public_rtmp_url.clone(),
    }))
}

/// Change a stream's title, access mode, price or preview (owner and admins).
/// A price change applies to sessions started after it.
#[utoipa::path(
    patch,
    path = "/api/v1/streams/{id}",
    tag = "streams",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Stream id")),
    request_body = UpdateStream,
    responses(
        (status = 200, body = StreamView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stream, or not yours", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateStream>,
) -> Result<Json<StreamView>, ApiError> {
    let mut stream = owned_stream(&state, &caller, &id).await?;
    if let Some(title) = &body.title {
        stream.title = validate_title(title)?;
    }
    apply_retention(&mut stream, body.retention_days)?;
    if let Some(public) = body.archive_public {
        stream.archive_public = public;
    }
    apply_details(
        &mut stream,
        body.description.as_deref(),
        body.category.as_deref(),
        body.tags.as_deref(),
    )?;
    apply_access(
        &mut stream,
        body.access,
        body.price.as_ref(),
        body.preview_seconds,
    )?;
    super::memberships::apply_member_tiers(&state, &mut stream, body.tiers.as_deref()).await?;
    state.db.update_stream(&stream).await?;
    state.public_cids.forget();
    state.index.set_paid(&stream.id, stream.access.is_gated());
    let renditions = state.db.renditions(&stream.id).await?;
    Ok(Json(view(&state, &stream, renditions, Some(&caller))))
}
