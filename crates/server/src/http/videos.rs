//! Uploaded videos: `POST /api/v1/videos` turns a finished upload into a
//! video (processing, then ready or failed), `GET` lists and describes them
//! with processing progress, `DELETE` cancels processing or removes one.
//! Videos play like recordings (`playback_url`, sessions for paid ones).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::problem::{ApiError, ApiJson, Problem};
use super::streams::{
    ListStreamsQuery, PriceBody, StreamView, apply_access, apply_details, apply_retention,
    find_stream, list_views, new_record, owned_stream, validate_title, view,
};
use crate::library::Processing;
use crate::model::{AccessMode, StreamRecord, StreamSource, StreamState, now_ms};
use crate::store::VideoJob;
use crate::uploads::is_upload_id;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_video, list_videos))
        .routes(routes!(get_video, delete_video))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVideo {
    /// A finished upload of yours (`/api/v1/uploads/{id}`).
    pub upload_id: String,
    /// 1 to 200 characters.
    pub title: String,
    /// `free` (default) or `per_second` (needs `price`).
    pub access: Option<AccessMode>,
    pub price: Option<PriceBody>,
    /// Free seconds before a paid video charges (default 0).
    pub preview_seconds: Option<u32>,
    /// Days the video is kept (default: forever).
    pub retention_days: Option<u32>,
    /// Make a paid video's archive public (default false).
    pub archive_public: Option<bool>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub tags: Option<Vec<String>>,
    /// `members` streams: the tiers whose members watch (tier ids of the
    /// creator's or the platform's, or `platform` for any platform tier).
    pub tiers: Option<Vec<String>>,
}

/// Processing progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProgressView {
    /// 0 to 100.
    pub percent: u8,
    /// Media seconds per second (`"2.5"`), once known.
    pub speed: Option<String>,
    /// Seconds left at that speed.
    pub eta_seconds: Option<u64>,
}

/// A video: the stream view plus its processing.
#[derive(Debug, Serialize, ToSchema)]
pub struct VideoView {
    #[serde(flatten)]
    pub stream: StreamView,
    /// `processing`, `ready` or `failed`.
    pub status: &'static str,
    /// While processing: `null` while waiting for a transcode slot.
    pub progress: Option<ProgressView>,
    /// Why processing failed (failed videos).
    pub failure_reason: Option<String>,
    /// Once ready.
    pub duration_ms: Option<u64>,
}

fn video_view(state: &AppState, record: &StreamRecord, stream: StreamView) -> VideoView {
    let failed = record.state == StreamState::Ended && record.end_error.is_some();
    let status = match record.state {
        StreamState::Ended if failed => "failed",
        StreamState::Ended => "ready",
        _ => "processing",
    };
    let progress = match state.library.processing(&record.id) {
        Some(Processing::Transcoding(progress)) => Some(ProgressView {
            percent: progress.percent(),
            speed: progress
                .speed_milli
                .map(|m| format!("{}.{:03}", m / 1000, m % 1000)),
            eta_seconds: progress.eta_ms().map(|ms| ms.div_ceil(1000)),
        }),
        Some(Processing::Queued) | None => None,
    };
    VideoView {
        failure_reason: if failed {
            record.end_error.clone()
        } else {
            None
        },
        duration_ms: record.duration_ms,
        status,
        progress,
        stream,
    }
}

async fn video_record(state: &AppState, id: &str) -> Result<StreamRecord, ApiError> {
    let record = find_stream(state, id).await?;
    if record.source != StreamSource::Upload {
        return Err(ApiError::not_found("no such video"));
    }
    Ok(record)
}

/// Make a video of a finished upload; it is processed in the background.
#[utoipa::path(
    post,
    path = "/api/v1/videos",
    tag = "videos",
    security(("bearer" = [])),
    request_body = CreateVideo,
    responses(
        (status = 201, description = "Processing", body = VideoView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such upload of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The upload is not finished", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_video(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateVideo>,
) -> Result<(StatusCode, Json<VideoView>), ApiError> {
    let owner = format!("{:#x}", caller.account()?);
    if !is_upload_id(&body.upload_id) {
        return Err(ApiError::not_found("no such upload"));
    }
    match state.uploads.claim(&body.upload_id, &owner, now_ms()).await {
        Ok(_) => {}
        Err(crate::uploads::UploadError::Incomplete { offset, length }) => {
            return Err(ApiError::custom(
                StatusCode::CONFLICT,
                "upload-incomplete",
                "Upload incomplete",
                format!("the upload has {offset} of its {length} bytes; finish it first"),
            ));
        }
        Err(err @ crate::uploads::UploadError::Io(_)) => {
            return Err(ApiError::from(anyhow::anyhow!("claiming an upload: {err}")));
        }
        Err(_) => return Err(ApiError::not_found("no such upload")),
    }
    let mut record = new_record(
        validate_title(&body.title)?,
        Some(owner.clone()),
        StreamSource::Upload,
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
    state
        .db
        .insert_video(&record, &body.upload_id, record.created_at_ms)
        .await?;
    state
        .library
        .enqueue(VideoJob {
            stream_id: record.id.clone(),
            upload_id: body.upload_id,
            owner,
        })
        .await;
    tracing::info!(video = %record.id, "video queued");
    let stream = view(&state, &record, Vec::new(), Some(&caller));
    Ok((
        StatusCode::CREATED,
        Json(video_view(&state, &record, stream)),
    ))
}

/// List videos, newest first (the same filters as streams).
#[utoipa::path(
    get,
    path = "/api/v1/videos",
    tag = "videos",
    params(ListStreamsQuery),
    responses((status = 200, body = [VideoView]), (status = 400, body = Problem, content_type = "application/problem+json"))
)]
async fn list_videos(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Query(query): Query<ListStreamsQuery>,
) -> Result<Json<Vec<VideoView>>, ApiError> {
    let views = list_views(&state, caller.as_ref(), &query, Some(StreamSource::Upload)).await?;
    let mut videos = Vec::with_capacity(views.len());
    for stream in views {
        let record = video_record(&state, &stream.id).await?;
        videos.push(video_view(&state, &record, stream));
    }
    Ok(Json(videos))
}

/// Describe a video, with its processing progress.
#[utoipa::path(
    get,
    path = "/api/v1/videos/{id}",
    tag = "videos",
    params(("id" = String, Path, description = "Video id")),
    responses((status = 200, body = VideoView), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn get_video(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
) -> Result<Json<VideoView>, ApiError> {
    let record = video_record(&state, &id).await?;
    let renditions = state.db.renditions(&id).await?;
    let stream = view(&state, &record, renditions, caller.as_ref());
    Ok(Json(video_view(&state, &record, stream)))
}

/// Cancel a video's processing, or remove a processed video (owner, admins).
#[utoipa::path(
    delete,
    path = "/api/v1/videos/{id}",
    tag = "videos",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Video id")),
    responses((status = 204, description = "Cancelled or removed"), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn delete_video(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let record = owned_stream(&state, &caller, &id).await?;
    if record.source != StreamSource::Upload {
        return Err(ApiError::not_found("no such video"));
    }
    if !state.library.cancel(&id) {
        // Not processing: retention removes the recording on its next round.
        state.db.expire_video_now(&id, now_ms()).await?;
    }
    tracing::info!(video = %id, "video removed");
    Ok(StatusCode::NO_CONTENT)
}
