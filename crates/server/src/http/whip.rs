//! WHIP (RFC 9725): `POST /api/v1/streams/{id}/whip` with an SDP offer
//! publishes over WebRTC; `DELETE` on the session it names ends it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::problem::{ApiError, Problem, ProblemKind};
use super::streams::find_stream;
use crate::live::webrtc::WhipError;
use crate::model::StreamSource;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(whip_publish))
        .routes(routes!(whip_end))
}

const SDP: &str = "application/sdp";

/// Go live over WebRTC: the body is the publisher's SDP offer (H.264 or VP8
/// video, Opus audio; all ICE candidates gathered, no trickle). The bearer
/// is the stream key, or the token of the stream's owner. Answers `201`
/// with the SDP answer and, in `Location`, the session to `DELETE` to end
/// the stream. The media joins the same ladder as RTMP.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{id}/whip",
    tag = "streams",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Stream id")),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer"),
    responses(
        (status = 201, description = "SDP answer; `Location` names the session", body = String, content_type = "application/sdp"),
        (status = 400, description = "Unreadable offer, or no H.264/VP8 video in it", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No bearer, or not the key or owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already live, ended, or an uploaded video", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/sdp", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "At the live-stream or publisher limit", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn whip_publish(
    State(state): State<AppState>,
    Path(id): Path<String>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    let stream = find_stream(&state, &id).await?;
    authorize(&state, &headers, &stream).await?;
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim() == SDP);
    if !is_sdp {
        return Err(ApiError::new(
            ProblemKind::UnsupportedMediaType,
            "send the SDP offer as application/sdp",
        ));
    }
    if stream.source == StreamSource::Upload {
        return Err(conflict("this stream is an uploaded video"));
    }
    let peer = peer
        .map(|axum::Extension(axum::extract::ConnectInfo(peer))| peer)
        .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
    let answer = state
        .webrtc
        .publish(&stream.id, &stream.stream_key, &body, peer)
        .await
        .map_err(|err| match err {
            WhipError::BadOffer(_) | WhipError::NoUsableCodec => {
                ApiError::new(ProblemKind::BadRequest, err.to_string())
            }
            WhipError::Refused(reason) if reason.contains("limit") => busy(reason),
            WhipError::Refused(reason) if reason.contains("temporarily") => busy(reason),
            WhipError::Refused(reason) => conflict(reason),
            WhipError::Busy => busy(err.to_string()),
            WhipError::Io(err) => {
                tracing::error!(%err, "opening WebRTC sockets");
                ApiError::new(ProblemKind::Internal, "could not open a WebRTC port")
            }
        })?;
    let location = format!("/api/v1/streams/{}/whip/{}", stream.id, answer.session_id);
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, SDP.to_string()),
            (header::LOCATION, location),
        ],
        answer.sdp,
    )
        .into_response())
}

/// End a WebRTC publish (the session named by `Location`); the stream
/// ends and is archived as after an RTMP publish. Same bearer as to start.
#[utoipa::path(
    delete,
    path = "/api/v1/streams/{id}/whip/{session}",
    tag = "streams",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Stream id"),
        ("session" = String, Path, description = "Session id from `Location`"),
    ),
    responses(
        (status = 200, description = "Ending"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stream or session", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn whip_end(
    State(state): State<AppState>,
    Path((id, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let stream = find_stream(&state, &id).await?;
    authorize(&state, &headers, &stream).await?;
    if state.webrtc.end(&stream.id, &session) {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::not_found("no such WebRTC session"))
    }
}

/// The bearer must be the stream's key or its owner's (or an admin's) token.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    stream: &crate::model::StreamRecord,
) -> Result<(), ApiError> {
    let unauthorized = || {
        ApiError::new(
            ProblemKind::Unauthorized,
            "give the stream key (or the owner's token) as the bearer",
        )
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(unauthorized)?;
    if super::constant_time_eq(token.as_bytes(), stream.stream_key.as_bytes()) {
        return Ok(());
    }
    let caller = super::auth::caller_for_token(state, token)
        .await
        .map_err(|_| unauthorized())?;
    if caller.is_admin() || caller.address().is_some_and(|a| stream.owned_by(a)) {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

fn conflict(detail: impl Into<String>) -> ApiError {
    ApiError::custom(
        StatusCode::CONFLICT,
        "stream-not-publishable",
        "The stream cannot be published now",
        detail,
    )
}

fn busy(detail: impl Into<String>) -> ApiError {
    ApiError::custom(
        StatusCode::SERVICE_UNAVAILABLE,
        "publish-limit",
        "No room for another publisher",
        detail,
    )
}
