//! `GET /api/v1/streams/{id}/thumbnail.jpg`: a frame of the stream's latest
//! segment, made and cached by [`crate::live::thumbnails`].

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::playback::stream_media;
use super::problem::{ApiError, Problem};
use super::ranges::load_file;
use crate::live::media_index::read_lock;
use crate::live::thumbnails::{Lookup, frame};
use crate::model::now_ms;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(thumbnail))
}

/// A JPEG frame of the stream (free, also for paid streams).
#[utoipa::path(
    get,
    path = "/api/v1/streams/{id}/thumbnail.jpg",
    tag = "streams",
    params(("id" = String, Path, description = "Stream id")),
    responses(
        (status = 200, description = "JPEG", content_type = "image/jpeg"),
        (status = 404, description = "No such stream, or no video yet", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn thumbnail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let media = stream_media(&state, &id).await?;
    let (init, sequence, segment) = {
        let media = read_lock!(media);
        let rendition = media
            .renditions
            .iter()
            .filter(|r| r.info.height.is_some() && r.init.is_some() && !r.segments.is_empty())
            .min_by_key(|r| r.info.height)
            .ok_or_else(|| ApiError::not_found("no video yet"))?;
        // Live: the newest frame. A recording or video: a poster from a
        // tenth of the way in (its last frame is often black).
        let count = rendition.segments.len();
        let chosen = if media.state == crate::model::StreamState::Live {
            count - 1
        } else {
            count / 10
        };
        (
            rendition.init.expect("filtered on init"),
            chosen,
            rendition.segments[chosen].cid,
        )
    };
    let now = now_ms();
    let _permit = match state.thumbnails.lookup(&id, sequence, now).await {
        Some(Lookup::Serve(jpeg)) => return Ok(jpeg_response(jpeg)),
        Some(Lookup::Make(permit)) => permit,
        None => return Err(ApiError::not_found("shutting down")),
    };
    let (Some(init), Some(segment)) = (
        load_file(&state, init).await?,
        load_file(&state, segment).await?,
    ) else {
        return Err(ApiError::not_found("the media is gone"));
    };
    let jpeg = frame(&state.settings.ffmpeg, &init, &segment)
        .await
        .map_err(|err| {
            tracing::warn!(stream = %id, error = %err, "thumbnail failed");
            ApiError::not_found("no thumbnail could be made")
        })?;
    state.thumbnails.store(&id, sequence, now, jpeg.clone());
    Ok(jpeg_response(jpeg))
}

fn jpeg_response(jpeg: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=10"),
            ),
        ],
        jpeg,
    )
        .into_response()
}
