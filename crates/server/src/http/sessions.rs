//! Pay as you watch: sessions on paid streams and their playback under
//! `/play/{session}/...` (spec "Metering"), gated segment by segment.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use streamweave_ledger::{Address, Amount, B256, ChannelState, GateDecision, Meter};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::playback::{
    MediaSpan, RenditionRequest, master_for, master_up_to, playlist_response, rendition_response,
    short_side, stream_media,
};
use super::problem::{ApiError, ApiJson, Problem};
use super::request_fields::RequestFields;
use super::streams::PriceBody;
use super::ticketing::ticket_required;
use crate::live::media_index::read_lock;
use crate::model::{AccessMode, now_ms};
use crate::money::sessions::{Pass, Session};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_session))
        .routes(routes!(session_progress))
        .routes(routes!(end_session))
}

/// A session's playlists and media (the playback lane's).
pub fn play_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(session_master))
        .routes(routes!(session_file))
}

/// Segments of prepayment accepted ahead of playback.
const PREPAY_SEGMENTS: u64 = 2;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSession {
    /// Per-second streams: a channel of the caller's, open, paying this
    /// stream's creator. Absent for an event's room (`{}`: the caller's
    /// ticket admits them).
    pub channel_id: Option<String>,
    /// Most this session may spend (base units).
    pub max_spend: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    /// `/play/{id}/master.m3u8`: any HLS client plays it while another component pays.
    pub playback_url: String,
    /// Per-second sessions: the price.
    pub price: Option<PriceBody>,
    pub preview_seconds: u32,
    /// Per-second sessions: the paying channel.
    pub channel_id: Option<String>,
    /// The channel's redeemed amount when the session began: what it owes counts from here.
    #[schema(value_type = Option<String>)]
    pub paid_from: Option<Amount>,
    /// Ticket sessions: the ticket that admits the viewer (one session per ticket at a time).
    pub ticket_id: Option<String>,
    /// Member sessions: the membership that admits the viewer.
    pub membership_id: Option<String>,
    /// Member sessions: the best quality the tier allows (short side, pixels).
    pub max_height: Option<u32>,
    /// Member sessions: when the playback URL stops working (then start a new session).
    pub expires_at: Option<String>,
}

impl SessionView {
    /// A session admitted without paying per segment: by a ticket, a
    /// membership, or as the host.
    fn admitted(session: &Session) -> SessionView {
        let (ticket_id, max_height, expires_at_ms) = match &session.pass {
            Pass::Ticket { ticket_id } => (Some(ticket_id.clone()), None, None),
            Pass::Member {
                max_height,
                expires_at_ms,
                ..
            } => (None, Some(*max_height), Some(*expires_at_ms)),
            Pass::Channel { .. } | Pass::Host => (None, None, None),
        };
        SessionView {
            id: session.id.clone(),
            playback_url: format!("/play/{}/master.m3u8", session.id),
            price: None,
            preview_seconds: 0,
            channel_id: None,
            paid_from: None,
            ticket_id,
            membership_id: None,
            max_height,
            expires_at: expires_at_ms.map(super::auth::rfc3339),
        }
    }
}

fn session_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Start watching a paid stream through a channel.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{id}/sessions",
    tag = "playback",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Stream id")),
    request_body = StartSession,
    responses(
        (status = 201, body = SessionView),
        (status = 400, description = "Free stream, or a channel that cannot pay it", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "An event's room without a ticket (`ticket-required`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stream or channel", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn start_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StartSession>,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    let viewer = caller.account()?;
    let stream = state
        .db
        .stream(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such stream"))?;
    if stream.access == AccessMode::Ticket {
        return start_room_session(&state, &caller, viewer, &stream).await;
    }
    if stream.access == AccessMode::Members {
        return start_member_session(&state, viewer, &stream).await;
    }
    let (AccessMode::PerSecond, Some(price), Some(owner)) =
        (stream.access, stream.price, stream.owner.as_deref())
    else {
        return Err(ApiError::bad_request(
            "this stream is free: play its playback_url, no session needed",
        ));
    };
    let channel_id: B256 = body
        .channel_id
        .as_deref()
        .ok_or_else(|| {
            ApiError::bad_request("channel_id: a paid stream is watched through a channel")
        })?
        .parse()
        .map_err(|_| ApiError::not_found("no such channel"))?;
    let channel = state
        .payments
        .channel_or_load(&channel_id)
        .await
        .filter(|c| c.payer == viewer)
        .ok_or_else(|| ApiError::not_found("no such channel"))?;
    if format!("{:#x}", channel.payee) != owner {
        return Err(ApiError::bad_request(
            "this channel pays someone else, not this stream's creator",
        ));
    }
    let now = now_ms();
    if channel.state != ChannelState::Open
        || u64::try_from(now).unwrap_or(0) >= channel.expires_at_ms
    {
        return Err(ApiError::bad_request("the channel is not open"));
    }
    let max_spend = match body.max_spend.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<Amount>()
                .map_err(|err| ApiError::bad_request(format!("max_spend: {err}")))?,
        ),
    };
    let segment_ms = u64::from(state.settings.segment_duration_ms);
    // Real segments run a little past the target duration (audio frames do
    // not divide it), so the window allows a quarter segment of slack.
    let meter = Meter::new(
        price,
        channel.redeemed,
        max_spend,
        PREPAY_SEGMENTS * segment_ms + segment_ms / 4,
    )
    .with_preview(u64::from(stream.preview_seconds) * 1000);
    let session = Session {
        id: session_id(),
        stream_id: stream.id.clone(),
        viewer,
        pass: Pass::Channel {
            channel: channel.id,
            meter,
        },
        last_request_ms: now,
    };
    let view = SessionView {
        id: session.id.clone(),
        playback_url: format!("/play/{}/master.m3u8", session.id),
        price: Some(PriceBody {
            amount: price.amount.to_string(),
            period_seconds: price.period_seconds,
        }),
        preview_seconds: stream.preview_seconds,
        channel_id: Some(format!("{:#x}", channel.id)),
        paid_from: Some(channel.redeemed),
        ticket_id: None,
        membership_id: None,
        max_height: None,
        expires_at: None,
    };
    // On a cluster, another node picks the session up if this one goes.
    if state.settings.clustered() {
        let Pass::Channel { meter, .. } = &session.pass else {
            unreachable!("a channel session")
        };
        state
            .db
            .save_play_session(&crate::store::PlaySessionRecord {
                id: session.id.clone(),
                stream_id: stream.id.clone(),
                viewer: format!("{viewer:#x}"),
                channel: format!("{:#x}", channel.id),
                meter: serde_json::to_string(meter).map_err(anyhow::Error::from)?,
                created_at_ms: now,
            })
            .await?;
    }
    state.sessions.start(session);
    Ok(started(&state, &stream.id, viewer, now, view))
}

/// A session began: counted in the statistics, the viewer count pushed.
fn started(
    state: &AppState,
    stream_id: &str,
    viewer: streamweave_ledger::Address,
    now: i64,
    view: SessionView,
) -> (StatusCode, Json<SessionView>) {
    state.stats.session_started(stream_id, viewer, now);
    let count = state.viewers(stream_id, false, now);
    state.events.publish(
        stream_id,
        crate::live::events::StreamEvent::Viewers { count },
    );
    (StatusCode::CREATED, Json(view))
}

/// A session in an event's room: for a holder of a ticket that was not
/// refunded (a new one ends the ticket's previous session), the creator or
/// an admin; the event must not be cancelled.
async fn start_room_session(
    state: &AppState,
    caller: &Caller,
    viewer: streamweave_ledger::Address,
    stream: &crate::model::StreamRecord,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    let event = state
        .db
        .event_of_stream(&stream.id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such event"))?;
    if event.state == crate::store::EventState::Cancelled {
        return Err(ticket_required(
            "the event was cancelled and its tickets refunded",
        ));
    }
    let pass = if caller.may_act_for(event.creator) {
        Pass::Host
    } else {
        match state.db.valid_ticket(&event.id, viewer).await? {
            Some(ticket) => Pass::Ticket {
                ticket_id: ticket.id,
            },
            None => {
                return Err(
                    ticket_required("this is an event's room: buy a ticket to watch")
                        .with(json!({ "event_id": event.id })),
                );
            }
        }
    };
    let now = now_ms();
    let session = Session {
        id: session_id(),
        stream_id: stream.id.clone(),
        viewer,
        pass,
        last_request_ms: now,
    };
    let view = SessionView::admitted(&session);
    if state.settings.clustered()
        && let Some(record) = admitted_record(&session)
    {
        state.db.save_admitted_session(&record).await?;
    }
    state.sessions.start(session);
    Ok(started(state, &stream.id, viewer, now, view))
}

/// How an admitted session is stored for the other nodes of a cluster.
fn admitted_record(session: &Session) -> Option<crate::store::AdmittedSessionRecord> {
    use crate::store::Admission;
    let admission = match &session.pass {
        Pass::Channel { .. } => return None,
        Pass::Ticket { ticket_id } => Admission::Ticket {
            ticket_id: ticket_id.clone(),
        },
        Pass::Host => Admission::Host,
        Pass::Member {
            max_height,
            expires_at_ms,
            ..
        } => Admission::Member {
            max_height: *max_height,
            expires_at_ms: *expires_at_ms,
        },
    };
    Some(crate::store::AdmittedSessionRecord {
        id: session.id.clone(),
        stream_id: session.stream_id.clone(),
        viewer: format!("{:#x}", session.viewer),
        admission,
        last_seen_ms: session.last_request_ms,
        created_at_ms: session.last_request_ms,
    })
}

/// The 409 of a member at their tier's limit, listing their sessions.
fn too_many_streams(max_streams: usize, active: &[(String, String)]) -> ApiError {
    let listed: Vec<_> = active
        .iter()
        .map(|(id, stream_id)| json!({ "id": id, "stream_id": stream_id }))
        .collect();
    ApiError::custom(
        StatusCode::CONFLICT,
        "too-many-streams",
        "Too many streams at once",
        format!(
            "your tier allows {max_streams} at once: end one (DELETE /api/v1/sessions/{{id}}) first"
        ),
    )
    .with(json!({ "max_streams": max_streams, "active_sessions": listed }))
}

/// A member session: for an active member of one of the stream's tiers
/// (the creator watches their own stream as host), valid 4 hours, limited
/// to the tier's quality and, across streams, to its `max_streams`.
async fn start_member_session(
    state: &AppState,
    viewer: streamweave_ledger::Address,
    stream: &crate::model::StreamRecord,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    let now = now_ms();
    let mut best: Option<(crate::store::MembershipRecord, crate::store::TierRecord)> = None;
    if !stream.owned_by(viewer) {
        for membership in state.db.memberships_of(viewer).await? {
            if membership.expires_at_ms <= now {
                continue;
            }
            let Some(tier) = state.db.tier(&membership.tier_id).await? else {
                continue;
            };
            let admits = stream.member_tiers.iter().any(|t| {
                *t == tier.id
                    || (t == "platform" && tier.offerer == crate::store::Offerer::Platform)
            });
            if admits
                && best
                    .as_ref()
                    .is_none_or(|(_, b)| tier.max_height > b.max_height)
            {
                best = Some((membership, tier));
            }
        }
    }
    let (pass, max_streams, membership_id) = match best {
        Some((membership, tier)) => (
            Pass::Member {
                max_height: tier.max_height,
                expires_at_ms: now + crate::money::sessions::MEMBER_SESSION_MS,
                counted: Default::default(),
            },
            usize::try_from(tier.max_streams).unwrap_or(1),
            Some(membership.id),
        ),
        None if stream.owned_by(viewer) => (Pass::Host, usize::MAX, None),
        None => {
            return Err(ApiError::custom(
                StatusCode::FORBIDDEN,
                "membership-required",
                "Membership required",
                "this stream is for members of its tiers: join one to watch",
            )
            .with(json!({ "tiers": stream.member_tiers })));
        }
    };
    let session = Session {
        id: session_id(),
        stream_id: stream.id.clone(),
        viewer,
        pass,
        last_request_ms: now,
    };
    let view = SessionView {
        membership_id,
        ..SessionView::admitted(&session)
    };
    if state.settings.clustered() {
        // Counted across the cluster's nodes, in the database.
        let record = admitted_record(&session).expect("an admitted session");
        if matches!(session.pass, Pass::Host) {
            state.db.save_admitted_session(&record).await?;
        } else if let Err(active) = state
            .db
            .start_member_session(
                &record,
                max_streams,
                now - crate::money::sessions::MEMBER_IDLE_TIMEOUT_MS,
            )
            .await?
        {
            return Err(too_many_streams(max_streams, &active));
        }
        state.sessions.start(session);
    } else if matches!(session.pass, Pass::Host) {
        state.sessions.start(session);
    } else if let Err(active) = state.sessions.start_member(session, max_streams, now) {
        let active: Vec<(String, String)> =
            active.into_iter().map(|s| (s.id, s.stream_id)).collect();
        return Err(too_many_streams(max_streams, &active));
    }
    Ok(started(state, &stream.id, viewer, now, view))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Where the player is, in media milliseconds.
    pub position_ms: u64,
}

/// Where a member is in what they watch (every 30 s or so): the position to
/// resume from. Watch time for the pool is what the server served, never
/// this.
#[utoipa::path(
    post,
    path = "/api/v1/sessions/{session}/progress",
    tag = "playback",
    security(("bearer" = [])),
    params(("session" = String, Path, description = "Session id")),
    request_body = Progress,
    responses((status = 204, description = "Recorded"), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn session_progress(
    State(state): State<AppState>,
    caller: Caller,
    Path(session): Path<String>,
    ApiJson(body): ApiJson<Progress>,
) -> Result<StatusCode, ApiError> {
    let now = now_ms();
    let found = state
        .sessions
        .get(&session, now)
        .filter(|s| caller.may_act_for(s.viewer))
        .ok_or_else(|| ApiError::not_found("no such session"))?;
    if body.position_ms > 30 * 86_400_000 {
        return Err(ApiError::bad_request("position_ms is beyond any media"));
    }
    state.sessions.touch(&found.id, now);
    state
        .db
        .set_progress(found.viewer, &found.stream_id, body.position_ms, now)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// End a session (the viewer's).
#[utoipa::path(
    delete,
    path = "/api/v1/sessions/{session}",
    tag = "playback",
    security(("bearer" = [])),
    params(("session" = String, Path, description = "Session id")),
    responses((status = 204, description = "Ended"), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn end_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(session): Path<String>,
) -> Result<StatusCode, ApiError> {
    let now = now_ms();
    let resident = state.sessions.get(&session, now);
    let found = match resident {
        Some(found) => Some(found),
        // Started on another node of the cluster.
        None => picked_up(&state, &session, now).await?,
    }
    .filter(|s| caller.may_act_for(s.viewer))
    .ok_or_else(|| ApiError::not_found("no such session"))?;
    state.sessions.end(&found.id);
    if state.settings.clustered() {
        state.db.end_admitted_session(&found.id).await?;
    }
    let count = state.viewers(&found.stream_id, false, now_ms());
    state.events.publish(
        &found.stream_id,
        crate::live::events::StreamEvent::Viewers { count },
    );
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn live_session(state: &AppState, session: &str) -> Result<Session, ApiError> {
    let now = now_ms();
    let found = match state.sessions.get(session, now) {
        Some(found) => found,
        None => picked_up(state, session, now)
            .await?
            .ok_or_else(|| ApiError::not_found("no such session, or it ended"))?,
    };
    if let Pass::Member { expires_at_ms, .. } = &found.pass
        && now >= *expires_at_ms
    {
        state.sessions.end(&found.id);
        return Err(ApiError::custom(
            StatusCode::UNAUTHORIZED,
            "session-expired",
            "Session expired",
            "member sessions last 4 hours: start a new one",
        ));
    }
    if let Some(channel) = found.pass.channel() {
        // Its state only: no copy of the channel on each request.
        let channel_state = state
            .payments
            .channel_state(&channel)
            .ok_or_else(|| ApiError::not_found("no such channel"))?;
        if channel_state == ChannelState::Closed {
            state.sessions.end(&found.id);
            return Err(ApiError::not_found("the session's channel has closed"));
        }
    }
    state.sessions.touch(session, now);
    Ok(found)
}

/// A session's rendition playlist answered from memory, without awaiting
/// or changing anything (see [`super::playback::resident_playlist`]; the
/// caller touches the session once the request is let through): the
/// session is resident and pays by channel or was admitted (a ticket, the
/// host), its channel is open, and its stream's media is resident. `None`
/// when the router must answer: members (whose tier bounds the
/// renditions), a session not in memory, a closed channel, and every
/// refusal.
pub(super) fn resident_playlist(
    state: &AppState,
    session: &str,
    rendition: &str,
    now_ms: i64,
) -> Option<bytes::Bytes> {
    // Read in place: a playlist poll copies neither the session nor its
    // channel.
    let (stream_id, channel) = state.sessions.peek(session, now_ms, |found| {
        (!matches!(found.pass, Pass::Member { .. }))
            .then(|| (found.stream_id.clone(), found.pass.channel()))
    })??;
    if let Some(channel) = channel
        && state.payments.channel_state(&channel)? == ChannelState::Closed
    {
        return None;
    }
    super::playback::resident_playlist(state, &stream_id, rendition).map(|(playlist, _)| playlist)
}

/// A session's media file (a segment, a part, an init file) answered
/// from memory, without awaiting anything (see
/// [`super::playback::resident_file`], which runs `over_limit` and the
/// gate): the session is resident and pays by channel or was admitted (a
/// ticket, the host), its channel is open, and the file's bytes are
/// cached. A channel's gate is the router's and grants the span. `None`
/// when the router must answer: members (whose tier bounds the
/// renditions), a session not in memory, a closed channel.
pub(super) fn resident_file(
    state: &AppState,
    session: &str,
    request: (&str, &str),
    headers: &impl RequestFields,
    now_ms: i64,
    over_limit: impl FnOnce() -> Option<Response>,
) -> Option<super::ranges::FileAnswer> {
    // Read in place, then released: the gate takes the sessions' lock.
    let (stream_id, paying) = state.sessions.peek(session, now_ms, |found| {
        (!matches!(found.pass, Pass::Member { .. })).then(|| {
            let paying = Payer::of(found).map(|p| (p.viewer, p.channel_id, p.price));
            (found.stream_id.clone(), paying)
        })
    })??;
    let payer = match paying {
        Some((viewer, channel_id, price)) => {
            if state.payments.channel_state(&channel_id)? == ChannelState::Closed {
                return None;
            }
            Some(Payer {
                session_id: session,
                stream_id: &stream_id,
                viewer,
                channel_id,
                price,
            })
        }
        None => None,
    };
    // Admitted (a ticket, the host): nothing to pay per segment.
    let gate = |span: MediaSpan| match &payer {
        Some(payer) => channel_gate(state, payer, request.0, span),
        None => Ok(()),
    };
    let answer = super::playback::resident_file(
        state,
        &stream_id,
        request,
        headers,
        over_limit,
        Some(&gate),
    )?;
    state.sessions.touch(session, now_ms);
    Some(answer)
}

/// A session's master playlist (free).
#[utoipa::path(
    get,
    path = "/play/{session}/master.m3u8",
    tag = "playback",
    params(("session" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "HLS master playlist", content_type = "application/vnd.apple.mpegurl", body = String),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn session_master(
    State(state): State<AppState>,
    Path(session): Path<String>,
) -> Result<Response, ApiError> {
    let found = live_session(&state, &session).await?;
    let media = stream_media(&state, &found.stream_id).await?;
    let body = match &found.pass {
        // Only what the member's tier allows.
        Pass::Member { max_height, .. } => {
            bytes::Bytes::from(master_up_to(&read_lock!(media), Some(*max_height))?)
        }
        _ => read_lock!(media).playlist("master", master_for)?,
    };
    state.views.played(&found.stream_id);
    Ok(playlist_response(body))
}

/// A session's playlists and init files (free) and segments (paid: 402 until
/// the channel covers them).
#[utoipa::path(
    get,
    path = "/play/{session}/{rendition}/{file}",
    tag = "playback",
    params(
        ("session" = String, Path, description = "Session id"),
        ("rendition" = String, Path, description = "Rendition name"),
        ("file" = String, Path, description = "index.m3u8, init.mp4, init-{sequence}.mp4 (after a restarted source), {sequence}.m4s, or {sequence}.{part}.m4s (a live LL-HLS part; the hinted one is answered once written)"),
        ("_HLS_msn" = Option<u64>, Query, description = "On index.m3u8 of a live stream: hold the response until segment _HLS_msn is listed (LL-HLS blocking reload)"),
        ("_HLS_part" = Option<u32>, Query, description = "With _HLS_msn: until part _HLS_part of it is listed"),
    ),
    responses(
        (status = 200, description = "Playlist or media"),
        (status = 400, description = "Malformed _HLS_msn/_HLS_part", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Pay `required_amount` (cumulative) on `channel_id`, or the spending cap is reached", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A blocking reload or hinted part not ready within three target durations", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn session_file(
    State(state): State<AppState>,
    Path((session, rendition, file)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let found = live_session(&state, &session).await?;
    let request = RenditionRequest::parse(&rendition, &file, query.as_deref())?;
    if let Pass::Member { max_height, .. } = &found.pass {
        return member_file(&state, &found, *max_height, &request, &headers).await;
    }
    let Some(payer) = Payer::of(&found) else {
        // A ticket or the host: admitted, nothing to pay per segment.
        let admitted = |_: MediaSpan| Ok(());
        return rendition_response(
            &state,
            &found.stream_id,
            &request,
            &headers,
            Some(&admitted),
        )
        .await;
    };
    let channel_id = payer.channel_id;
    let gate = |span: MediaSpan| -> Result<(), ApiError> {
        channel_gate(&state, &payer, &request.rendition, span)
    };
    // On nodes sharing a database the voucher may have been accepted by
    // another node: look once at the stored channel before asking again.
    let mut refreshed = !state.settings.clustered();
    loop {
        let answer =
            rendition_response(&state, &found.stream_id, &request, &headers, Some(&gate)).await;
        let unpaid = answer
            .as_ref()
            .is_err_and(|e| e.status() == StatusCode::PAYMENT_REQUIRED);
        if refreshed || !unpaid || !state.payments.refresh(&channel_id).await {
            return answer;
        }
        refreshed = true;
    }
}

/// A session paying by channel, as its gate needs it (borrowed: the
/// session is not copied for each request).
#[derive(Debug, Clone, Copy)]
pub(super) struct Payer<'a> {
    pub session_id: &'a str,
    pub stream_id: &'a str,
    pub viewer: Address,
    pub channel_id: B256,
    pub price: streamweave_ledger::Price,
}

impl<'a> Payer<'a> {
    /// `session`'s payer, if it pays by channel.
    pub fn of(session: &'a Session) -> Option<Self> {
        match &session.pass {
            Pass::Channel { channel, meter } => Some(Payer {
                session_id: &session.id,
                stream_id: &session.stream_id,
                viewer: session.viewer,
                channel_id: *channel,
                price: meter.price,
            }),
            _ => None,
        }
    }
}

/// The gate of a session paying on its channel: serve the media of
/// `span` once the channel covers it, else a 402 whose details say what to
/// pay (for HLS files and WHEP frames alike).
pub(super) fn channel_gate(
    state: &AppState,
    payer: &Payer<'_>,
    rendition: &str,
    span: MediaSpan,
) -> Result<(), ApiError> {
    let Payer {
        session_id,
        stream_id,
        viewer,
        channel_id,
        price,
    } = *payer;
    let segment_target_ms = state.settings.segment_duration_ms;
    let paid = state.payments.redeemed(&channel_id).unwrap_or_default();
    let (decision, paid_media_ms) = state
        .sessions
        .decide(session_id, span, paid, now_ms())
        .ok_or_else(|| ApiError::not_found("the session ended"))?;
    state.stats.media_paid(stream_id, viewer, paid_media_ms);
    let details = |required: Amount| {
        json!({
            "channel_id": format!("{channel_id:#x}"),
            "required_amount": required.to_string(),
            // A part's segment is still being written: its target duration.
            "segment": {
                "rendition": rendition,
                "sequence": span.position,
                "duration_ms": if span.whole { span.through_ms } else { span.through_ms.max(segment_target_ms) },
                "through_ms": span.through_ms,
                "whole": span.whole,
            },
            "price": { "amount": price.amount.to_string(), "period_seconds": price.period_seconds },
        })
    };
    match decision {
        GateDecision::Serve { .. } => Ok(()),
        GateDecision::PaymentRequired { required } => Err(ApiError::custom(
            StatusCode::PAYMENT_REQUIRED,
            "payment-required",
            "Payment required",
            format!("sign a voucher for {required} on the channel, then retry"),
        )
        .with(details(required))),
        GateDecision::CapReached { cap, required } => Err(ApiError::custom(
            StatusCode::PAYMENT_REQUIRED,
            "spending-cap-reached",
            "Spending cap reached",
            format!("this session may spend at most {cap}"),
        )
        .with(details(required))),
    }
}

/// A member session's file: renditions above the tier's quality refused,
/// each segment counted as served once (its media time, and how far into
/// the item the member got).
async fn member_file(
    state: &AppState,
    found: &Session,
    max_height: u32,
    request: &RenditionRequest,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let media = stream_media(state, &found.stream_id).await?;
    let (too_high, segment_ms) = {
        let media = read_lock!(media);
        let found_rendition = media
            .rendition(&request.rendition)
            .ok_or_else(|| ApiError::not_found("no such rendition"))?;
        let too_high = short_side(&found_rendition.info).is_some_and(|side| side > max_height);
        // Where each segment starts in the item (for how far the member got).
        let starts: Vec<u64> = found_rendition
            .segments
            .iter()
            .scan(0u64, |start, s| {
                let this = *start;
                *start += u64::from(s.duration_ms);
                Some(this)
            })
            .collect();
        let ends = (starts, media.media_time_ms());
        (too_high, ends)
    };
    if too_high {
        return Err(ApiError::custom(
            StatusCode::FORBIDDEN,
            "tier-quality",
            "Above your tier's quality",
            format!("your tier allows up to {max_height}p"),
        ));
    }
    let member = found.viewer;
    let stream_id = found.stream_id.clone();
    let session_id = found.id.clone();
    let count = |span: MediaSpan| -> Result<(), ApiError> {
        let now = now_ms();
        let served_ms = state.sessions.newly_served(&session_id, span, now);
        if served_ms > 0 {
            // The open segment starts at the live edge.
            let (starts, live_edge_ms) = &segment_ms;
            let start = usize::try_from(span.position)
                .ok()
                .and_then(|i| starts.get(i))
                .copied()
                .unwrap_or(*live_edge_ms);
            state.memberships.served(
                member,
                &stream_id,
                crate::store::WatchDelta {
                    served_ms: u64::from(served_ms),
                    furthest_ms: start + u64::from(span.through_ms),
                },
                now,
            );
        }
        Ok(())
    };
    rendition_response(state, &found.stream_id, request, headers, Some(&count)).await
}

/// Refuses vouchers beyond a session's prepay window.
pub async fn check_prepay_window(
    state: &AppState,
    channel: &B256,
    amount: Amount,
) -> Result<(), ApiError> {
    let clustered = state.settings.clustered();
    let shared_paid = || clustered.then(|| state.payments.redeemed(channel).unwrap_or_default());
    let mut max = state.sessions.max_voucher(channel, shared_paid());
    if clustered && max.is_some_and(|max| amount > max) && state.payments.refresh(channel).await {
        // Another node moved the channel on since this one last looked.
        max = state.sessions.max_voucher(channel, shared_paid());
    }
    match max {
        Some(max) if amount > max => Err(ApiError::custom(
            StatusCode::CONFLICT,
            "voucher-beyond-prepay-window",
            "Voucher too far ahead",
            format!("a session on this channel accepts vouchers up to {max} now"),
        )
        .with(json!({ "max_amount": max.to_string() }))),
        _ => Ok(()),
    }
}

/// A session admitted by a ticket, a membership or as host that another
/// node started (its served-segment count starts again here).
async fn admitted_elsewhere(
    state: &AppState,
    id: &str,
    now: i64,
) -> Result<Option<Session>, ApiError> {
    use crate::store::Admission;
    let Some(record) = state.db.admitted_session(id, now).await? else {
        return Ok(None);
    };
    let Ok(viewer) = record.viewer.parse::<streamweave_ledger::Address>() else {
        return Ok(None);
    };
    let pass = match record.admission {
        Admission::Ticket { ticket_id } => Pass::Ticket { ticket_id },
        Admission::Host => Pass::Host,
        Admission::Member {
            max_height,
            expires_at_ms,
        } => Pass::Member {
            max_height,
            expires_at_ms,
            counted: Default::default(),
        },
    };
    let session = Session {
        id: record.id,
        stream_id: record.stream_id,
        viewer,
        pass,
        last_request_ms: now,
    };
    tracing::info!(session = %session.id, "picked up a session another node started");
    state.sessions.start(session.clone());
    Ok(Some(session))
}

/// A paid session another node of the cluster started (that node is gone,
/// or the balancer moved the viewer): its meter resumes from the channel's
/// redeemed amount, counting every paid millisecond less the prepay window
/// as served, so the viewer neither pays twice nor gets more than the
/// window free.
async fn picked_up(state: &AppState, id: &str, now: i64) -> Result<Option<Session>, ApiError> {
    if !state.settings.clustered() {
        return Ok(None);
    }
    let Some(record) = state.db.play_session(id, now).await? else {
        return admitted_elsewhere(state, id, now).await;
    };
    let (Ok(channel_id), Ok(viewer), Ok(meter)) = (
        record.channel.parse::<B256>(),
        record.viewer.parse::<streamweave_ledger::Address>(),
        serde_json::from_str::<Meter>(&record.meter),
    ) else {
        return Ok(None);
    };
    state.payments.refresh(&channel_id).await;
    let Some(channel) = state.payments.channel_or_load(&channel_id).await else {
        return Ok(None);
    };
    if channel.state != ChannelState::Open {
        return Ok(None);
    }
    let session = Session {
        id: record.id,
        stream_id: record.stream_id,
        viewer,
        pass: Pass::Channel {
            channel: channel_id,
            meter: meter.resumed(channel.redeemed),
        },
        last_request_ms: now,
    };
    tracing::info!(session = %session.id, "picked up a session another node started");
    state.sessions.start(session.clone());
    Ok(Some(session))
}
