//! `GET /api/v1/streams/{id}/thumbnail.jpg`: a frame of the stream's latest
//! segment (smallest video rendition), made by ffmpeg and cached per stream
//! until a newer segment is at least [`REFRESH_MS`] younger. At most
//! [`MAX_RUNNING`] ffmpeg processes run at once (a stream with a cached frame
//! gets that frame instead of waiting for one); the cache holds at most
//! [`MAX_CACHED`] streams.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Mutex;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::playback::stream_media;
use super::problem::{ApiError, Problem};
use super::ranges::load_file;
use crate::media_index::read_lock;
use crate::model::now_ms;

/// How often a live stream's thumbnail is remade, at most.
pub const REFRESH_MS: i64 = 10_000;
/// ffmpeg processes making thumbnails at once.
pub const MAX_RUNNING: usize = 2;
/// Streams whose thumbnail is kept.
pub const MAX_CACHED: usize = 1000;
/// Thumbnail width in pixels (height follows the aspect ratio).
pub const WIDTH_PX: u32 = 320;

struct Cached {
    sequence: usize,
    made_at_ms: i64,
    jpeg: Bytes,
}

/// Thumbnails made so far, and the bound on ffmpeg processes.
pub struct Thumbnails {
    cache: Mutex<HashMap<String, Cached>>,
    running: Semaphore,
}

impl Default for Thumbnails {
    fn default() -> Self {
        Thumbnails {
            cache: Mutex::new(HashMap::new()),
            running: Semaphore::new(MAX_RUNNING),
        }
    }
}

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
        let last = rendition.segments.len() - 1;
        (
            rendition.init.expect("filtered on init"),
            last,
            rendition.segments[last].cid,
        )
    };
    let now = now_ms();
    let cached = {
        let cache = state
            .thumbnails
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache
            .get(&id)
            .map(|c| (c.sequence, c.made_at_ms, c.jpeg.clone()))
    };
    if let Some((made_of, made_at_ms, jpeg)) = &cached
        && (*made_of == sequence || now - made_at_ms < REFRESH_MS)
    {
        return Ok(jpeg_response(jpeg.clone()));
    }
    // Both ffmpeg slots busy: an older frame now beats a newer one later.
    let _permit = match (state.thumbnails.running.try_acquire(), cached) {
        (Ok(permit), _) => permit,
        (Err(_), Some((_, _, jpeg))) => return Ok(jpeg_response(jpeg)),
        (Err(_), None) => state
            .thumbnails
            .running
            .acquire()
            .await
            .map_err(|_| ApiError::not_found("shutting down"))?,
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
    let mut cache = state
        .thumbnails
        .cache
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if cache.len() >= MAX_CACHED && !cache.contains_key(&id) {
        // Drop the oldest: streams nobody looked at lately.
        if let Some(oldest) = cache
            .iter()
            .min_by_key(|(_, c)| c.made_at_ms)
            .map(|(k, _)| k.clone())
        {
            cache.remove(&oldest);
        }
    }
    cache.insert(
        id,
        Cached {
            sequence,
            made_at_ms: now,
            jpeg: jpeg.clone(),
        },
    );
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

/// The first frame of an fMP4 segment (init + media), as a JPEG.
async fn frame(ffmpeg: &std::path::Path, init: &[u8], segment: &[u8]) -> std::io::Result<Bytes> {
    let mut child = tokio::process::Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "mp4",
            "-i",
            "pipe:0",
            "-frames:v",
            "1",
        ])
        .args([
            "-vf",
            &format!("scale={WIDTH_PX}:-2"),
            "-q:v",
            "5",
            "-f",
            "image2",
            "-c:v",
            "mjpeg",
            "pipe:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = [init, segment].concat();
    let writer = tokio::spawn(async move {
        // ffmpeg may stop reading once it has its frame: a broken pipe is fine.
        let _ = stdin.write_all(&input).await;
    });
    let output = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| std::io::Error::other("ffmpeg took over 10 s"))??;
    let _ = writer.await;
    if !output.status.success() || output.stdout.len() < 4 || output.stdout[..2] != [0xff, 0xd8] {
        return Err(std::io::Error::other(format!(
            "ffmpeg exited with {}",
            output.status
        )));
    }
    Ok(Bytes::from(output.stdout))
}
