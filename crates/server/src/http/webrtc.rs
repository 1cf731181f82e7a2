//! WebRTC over HTTP: WHIP (RFC 9725), `POST /api/v1/streams/{id}/whip`
//! with an SDP offer publishes; WHEP, `POST /api/v1/streams/{id}/whep`,
//! plays. `DELETE` on the session an answer names ends it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::problem::{ApiError, Problem, ProblemKind};
use super::streams::find_stream;
use crate::live::webrtc::{Admission, PlayGate, WebrtcError};
use crate::model::{StreamSource, now_ms};
use crate::money::sessions::{MediaSpan, MemberWatch, Pass};
use crate::money::verifier::Verifier;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(whip_publish, whip_options))
        .routes(routes!(whip_end))
        .routes(routes!(whep_play, whep_options))
        .routes(routes!(whep_end))
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
    require_sdp(&headers)?;
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
        .map_err(problem_of)?;
    let location = format!("/api/v1/streams/{}/whip/{}", stream.id, answer.session_id);
    Ok(answer_response(&state, location, answer.sdp))
}

/// The STUN/TURN servers to gather candidates with, as `Link: <...>;
/// rel="ice-server"` headers (RFC 9725, 4.6), before making the offer.
#[utoipa::path(
    options,
    path = "/api/v1/streams/{id}/whip",
    tag = "streams",
    params(("id" = String, Path, description = "Stream id")),
    responses((status = 204, description = "`Link` headers name the ICE servers, if the server has any")),
)]
async fn whip_options(State(state): State<AppState>) -> Response {
    ice_servers(&state)
}

/// The STUN/TURN servers to gather candidates with, as for WHIP.
#[utoipa::path(
    options,
    path = "/api/v1/streams/{id}/whep",
    tag = "playback",
    params(("id" = String, Path, description = "Stream id")),
    responses((status = 204, description = "`Link` headers name the ICE servers, if the server has any")),
)]
async fn whep_options(State(state): State<AppState>) -> Response {
    ice_servers(&state)
}

fn ice_servers(state: &AppState) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    add_ice_links(state, response.headers_mut());
    response
}

fn add_ice_links(state: &AppState, headers: &mut HeaderMap) {
    for link in &state.settings.webrtc_ice_links {
        if let Ok(value) = header::HeaderValue::from_str(link) {
            headers.append(header::LINK, value);
        }
    }
}

/// `201 Created` with the SDP answer, the session's `Location` and the ICE servers.
fn answer_response(state: &AppState, location: String, sdp: String) -> Response {
    let mut response = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, SDP.to_string()),
            (header::LOCATION, location),
        ],
        sdp,
    )
        .into_response();
    add_ice_links(state, response.headers_mut());
    response
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
    if state.webrtc.end_publish(&stream.id, &session) {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::not_found("no such WebRTC session"))
    }
}

/// Watch over WebRTC (WHEP): the body is the viewer's SDP offer
/// (receive-only video, and audio; a data channel for notices). Plays the
/// publisher's own media, the lowest-latency way, for streams published
/// over WebRTC (WHIP) to this server. Free streams need no bearer; on a
/// paid stream the bearer is the session's id (`POST .../sessions`): its
/// media time is metered as over HLS, forwarding pauses when payment is
/// due (the 402 problem is sent on the data channel as `{"notice":
/// "payment-required", "problem"}`) and resumes once the voucher is
/// accepted (`POST /api/v1/channels/{id}/vouchers`). On a members stream
/// the bearer is a member session's id: the source's picture must be
/// within the member's tier (else 403 `tier-quality`: HLS carries the
/// tier's rungs), and the media forwarded counts as the member's watch
/// time for the engagement pool, each moment once, as over HLS.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{id}/whep",
    tag = "playback",
    security((), ("bearer" = [])),
    params(("id" = String, Path, description = "Stream id")),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer"),
    responses(
        (status = 201, description = "SDP answer; `Location` names the session", body = String, content_type = "application/sdp"),
        (status = 400, description = "Unreadable offer, or no codec in common with the stream", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A paid stream without a session of it", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A member session whose tier is below the source's picture (`tier-quality`: watch over HLS)", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not published over WebRTC to this server (watch over HLS)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/sdp", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "At the viewer limit", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn whep_play(
    State(state): State<AppState>,
    Path(id): Path<String>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    let stream = find_stream(&state, &id).await?;
    require_sdp(&headers)?;
    let gate: PlayGate = if stream.access.is_gated() {
        let token = super::bearer_token(&headers).ok_or_else(|| {
            ApiError::new(
                ProblemKind::Unauthorized,
                "a paid stream: give the session's id (POST .../sessions) as the bearer",
            )
        })?;
        let found = super::sessions::live_session(&state, token).await?;
        if found.stream_id != stream.id {
            return Err(ApiError::new(
                ProblemKind::Unauthorized,
                "that session is for another stream",
            ));
        }
        if let Pass::Member { max_height, .. } = &found.pass {
            source_within_tier(&state, &stream.id, *max_height).await?;
        }
        session_gate(&state, found)
    } else {
        Arc::new(|_: MediaSpan| Admission::Serve)
    };
    let peer = peer
        .map(|axum::Extension(axum::extract::ConnectInfo(peer))| peer)
        .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
    let gate = marking_media(state.verifier.clone(), gate);
    let answer = state
        .webrtc
        .play(&stream.id, &body, gate, peer)
        .await
        .map_err(problem_of)?;
    let location = format!("/api/v1/streams/{}/whep/{}", stream.id, answer.session_id);
    Ok(answer_response(&state, location, answer.sdp))
}

/// Stop watching over WebRTC (the session named by `Location`).
#[utoipa::path(
    delete,
    path = "/api/v1/streams/{id}/whep/{session}",
    tag = "playback",
    params(
        ("id" = String, Path, description = "Stream id"),
        ("session" = String, Path, description = "Session id from `Location`"),
    ),
    responses(
        (status = 200, description = "Ending"),
        (status = 404, description = "No such stream or session", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn whep_end(
    State(state): State<AppState>,
    Path((id, session)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    // The session id is the secret: whoever holds it may end it.
    if state.webrtc.end_play(&id, &session) {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::not_found("no such WebRTC session"))
    }
}

/// `gate`, marking media answered for each frame it lets through: vouchers
/// recovered meanwhile yield to the frames, as they do to HLS answers.
fn marking_media(verifier: Verifier, gate: PlayGate) -> PlayGate {
    Arc::new(move |span: MediaSpan| {
        let admission = gate(span);
        if admission == Admission::Serve {
            verifier.media_answered();
        }
        admission
    })
}

/// What a viewing session's WebRTC frames must pass.
fn session_gate(state: &AppState, found: crate::money::sessions::Session) -> PlayGate {
    match found.pass.clone() {
        Pass::Channel { channel, meter } => {
            let state = state.clone();
            let (viewer, price) = (found.viewer, meter.price);
            Arc::new(move |span: MediaSpan| {
                let payer = super::sessions::Payer {
                    session_id: &found.id,
                    stream_id: &found.stream_id,
                    viewer,
                    channel_id: channel,
                    price,
                };
                match super::sessions::channel_gate(&state, &payer, "source", span) {
                    Ok(()) => Admission::Serve,
                    Err(err) if err.status() == StatusCode::PAYMENT_REQUIRED => {
                        Admission::PaymentRequired(err.problem_json())
                    }
                    Err(err) => Admission::Refused(err.detail().to_string()),
                }
            })
        }
        Pass::Ticket { .. } | Pass::Host => {
            let state = state.clone();
            Arc::new(move |_: MediaSpan| {
                if state.sessions.get(&found.id, now_ms()).is_none() {
                    return Admission::Refused("the session ended".into());
                }
                state.sessions.touch(&found.id, now_ms());
                Admission::Serve
            })
        }
        Pass::Member { .. } => {
            let state = state.clone();
            let segment_duration_ms = u64::from(state.settings.segment_duration_ms);
            Arc::new(move |span: MediaSpan| {
                let now = now_ms();
                match state.sessions.member_watched(&found.id, span, now) {
                    MemberWatch::Served { new_ms } => {
                        if new_ms > 0 {
                            // Live media: how far the member got is where
                            // the frame ends on the stream's timeline.
                            let furthest_ms = span
                                .position
                                .saturating_mul(segment_duration_ms)
                                .saturating_add(u64::from(span.through_ms));
                            state.memberships.served(
                                found.viewer,
                                &found.stream_id,
                                crate::store::WatchDelta {
                                    served_ms: u64::from(new_ms),
                                    furthest_ms,
                                },
                                now,
                            );
                        }
                        Admission::Serve
                    }
                    MemberWatch::Ended => Admission::Refused("the session ended".into()),
                    MemberWatch::Expired => {
                        Admission::Refused("member sessions last 4 hours: start a new one".into())
                    }
                }
            })
        }
    }
}

/// WHEP forwards the publisher's own picture: a member's tier must allow
/// the source's size (over HLS the member gets the ladder's rungs up to it).
async fn source_within_tier(
    state: &AppState,
    stream_id: &str,
    max_height: u32,
) -> Result<(), ApiError> {
    tier_allows_source(state.db.stream_source_size(stream_id).await?, max_height)
}

/// Whether a tier of `max_height` admits a source of `source_size`
/// (width, height; `None` before it went live). A picture's quality is its
/// short side (a portrait 1080x1920 is 1080p).
fn tier_allows_source(source_size: Option<(u32, u32)>, max_height: u32) -> Result<(), ApiError> {
    match source_size {
        Some((width, height)) if width.min(height) <= max_height => Ok(()),
        Some((width, height)) => Err(ApiError::custom(
            StatusCode::FORBIDDEN,
            "tier-quality",
            "Above your tier's quality",
            format!(
                "your tier allows up to {max_height}p and WebRTC carries the source's {}p: watch over HLS",
                width.min(height)
            ),
        )),
        None => Err(ApiError::custom(
            StatusCode::CONFLICT,
            "not-started",
            "Not started",
            "the stream's picture is not known yet: retry in a moment",
        )),
    }
}

fn problem_of(err: WebrtcError) -> ApiError {
    match err {
        WebrtcError::BadOffer(_) | WebrtcError::NoUsableCodec | WebrtcError::NoCommonCodec(_) => {
            ApiError::new(ProblemKind::BadRequest, err.to_string())
        }
        WebrtcError::Refused(reason) if reason.contains("limit") => busy(reason),
        WebrtcError::Refused(reason) if reason.contains("temporarily") => busy(reason),
        WebrtcError::Refused(reason) => conflict(reason),
        WebrtcError::NoSource => ApiError::custom(
            StatusCode::CONFLICT,
            "not-published-over-webrtc",
            "Not published over WebRTC here",
            err.to_string(),
        ),
        WebrtcError::Busy => busy(err.to_string()),
        WebrtcError::Io(err) => {
            tracing::error!(%err, "opening WebRTC sockets");
            ApiError::new(ProblemKind::Internal, "could not open a WebRTC port")
        }
    }
}

fn require_sdp(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim() == SDP);
    if is_sdp {
        Ok(())
    } else {
        Err(ApiError::new(
            ProblemKind::UnsupportedMediaType,
            "send the SDP offer as application/sdp",
        ))
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
    let token = super::bearer_token(headers).ok_or_else(unauthorized)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tier_admits_a_source_up_to_its_quality_by_the_short_side() {
        assert!(tier_allows_source(Some((1280, 720)), 720).is_ok());
        assert!(tier_allows_source(Some((320, 240)), 360).is_ok());
        assert!(
            tier_allows_source(Some((1080, 1920)), 1080).is_ok(),
            "portrait"
        );
        let above = tier_allows_source(Some((1920, 1080)), 720).expect_err("1080p in 720p");
        assert_eq!(above.status(), StatusCode::FORBIDDEN);
        assert!(above.detail().contains("1080p"), "{}", above.detail());
        assert_eq!(above.problem_json()["type"], "/problems/tier-quality");
        let unknown = tier_allows_source(None, 1080).expect_err("not live yet");
        assert_eq!(unknown.status(), StatusCode::CONFLICT);
    }

    #[tokio::test]
    async fn only_frames_let_through_mark_media_answered() {
        let span = MediaSpan {
            position: 0,
            through_ms: 33,
            whole: false,
        };
        let start = || {
            Verifier::start(1, 10, &tokio::runtime::Handle::current()).expect("recovery threads")
        };
        let unpaid = start();
        let pause = marking_media(
            unpaid.clone(),
            Arc::new(|_: MediaSpan| Admission::PaymentRequired(serde_json::json!({}))),
        );
        assert!(matches!(pause(span), Admission::PaymentRequired(_)));
        let refuse = marking_media(
            unpaid.clone(),
            Arc::new(|_: MediaSpan| Admission::Refused("ended".into())),
        );
        assert!(matches!(refuse(span), Admission::Refused(_)));
        assert!(!unpaid.media_recently_answered());
        let paid = start();
        let serve = marking_media(paid.clone(), Arc::new(|_: MediaSpan| Admission::Serve));
        assert_eq!(serve(span), Admission::Serve);
        assert!(paid.media_recently_answered());
    }
}
