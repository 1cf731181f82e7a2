//! Chat rooms and tips. Readers join `GET /api/v1/streams/{id}/chat` (a
//! WebSocket); signed-in accounts post over it or with
//! `POST /api/v1/streams/{id}/chat/messages`; creators delete and mute;
//! `POST /api/v1/streams/{id}/tips` pays the creator and shows in the room;
//! `POST /api/v1/streams/{id}/reactions` sends a live reaction to the room.

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use streamweave_ledger::{Address, Amount};
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::accounts::{movement_amount, random_id, transfer_id};
use super::auth::{Caller, caller_for_token, parse_address};
use super::payments::{engine_error, revenue_policy};
use super::problem::{ApiError, ApiJson, Problem, ProblemKind};
use super::streams::find_stream;
use crate::community::chat::{ChatError, ChatEvent, ChatMessage, HISTORY_LEN, message_text};
use crate::model::{StreamRecord, now_ms};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_message))
        .routes(routes!(delete_message))
        .routes(routes!(mute, unmute))
        .routes(routes!(tip))
        .routes(routes!(react))
}

/// The stream, if the caller is its creator or an admin.
async fn moderated_stream(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<StreamRecord, ApiError> {
    let stream = find_stream(state, id).await?;
    if !(caller.is_admin() || caller.address().is_some_and(|a| stream.owned_by(a))) {
        return Err(ApiError::new(
            ProblemKind::Forbidden,
            "only the stream's creator moderates its chat",
        ));
    }
    Ok(stream)
}

fn chat_error(err: ChatError) -> ApiError {
    match err {
        ChatError::TooFast { wait_ms } => ApiError::custom(
            StatusCode::TOO_MANY_REQUESTS,
            "chat-too-fast",
            "Too many messages",
            err.to_string(),
        )
        .with(serde_json::json!({ "retry_after_ms": wait_ms })),
        other => ApiError::bad_request(other.to_string()),
    }
}

/// Checks, stores and broadcasts one message from `author`.
async fn post(
    state: &AppState,
    stream_id: &str,
    author: Address,
    text: &str,
) -> Result<ChatMessage, ApiError> {
    super::ticketing::check_room_speaker(state, stream_id, author).await?;
    let author = format!("{author:#x}");
    if state.db.is_muted(stream_id, &author).await? {
        return Err(ApiError::new(
            ProblemKind::Forbidden,
            "the creator muted you in this room",
        ));
    }
    let text = message_text(text).map_err(chat_error)?;
    let now = now_ms();
    state
        .chat
        .admit(stream_id, &author, now)
        .map_err(chat_error)?;
    let message = ChatMessage {
        id: random_id("m"),
        author,
        text,
        tip: None,
        time_ms: now,
    };
    state.db.insert_chat_message(stream_id, &message).await?;
    state.chat.publish(
        stream_id,
        ChatEvent::Message {
            message: message.clone(),
        },
    );
    Ok(message)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// 1 to 500 characters of plain text.
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    pub author: String,
    pub text: String,
    /// Base units, for a tip.
    pub tip: Option<String>,
    pub time_ms: i64,
}

impl From<ChatMessage> for MessageView {
    fn from(m: ChatMessage) -> Self {
        MessageView {
            id: m.id,
            author: m.author,
            text: m.text,
            tip: m.tip,
            time_ms: m.time_ms,
        }
    }
}

/// Post a chat message (signed-in accounts; one a second).
#[utoipa::path(
    post,
    path = "/api/v1/streams/{id}/chat/messages",
    tag = "chat",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Stream id")),
    request_body = PostMessage,
    responses(
        (status = 201, body = MessageView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Muted in this room", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "More than one message a second", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn post_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PostMessage>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    let author = caller.account()?;
    let stream = find_stream(&state, &id).await?;
    let message = post(&state, &stream.id, author, &body.text).await?;
    Ok((StatusCode::CREATED, Json(message.into())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostReaction {
    /// One of 👏 ❤️ 🔥 😂 😮 🎉.
    pub emoji: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReactionView {
    pub emoji: String,
    pub author: String,
    /// The stream's media time when it was sent (the live edge).
    pub media_time_ms: u64,
    pub time_ms: i64,
}

/// Send a live reaction to everyone watching (signed-in accounts; at most
/// five every ten seconds). It reaches the room's chat sockets as
/// `{"type": "reaction", "emoji", "author", "media_time_ms", "time_ms"}`.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{id}/reactions",
    tag = "chat",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Stream id")),
    request_body = PostReaction,
    responses(
        (status = 201, body = ReactionView),
        (status = 400, description = "Not one of the reactions", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Muted in this room, or not a ticket holder of an event's room", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The stream is not live", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "More than five in ten seconds", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn react(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PostReaction>,
) -> Result<(StatusCode, Json<ReactionView>), ApiError> {
    use crate::community::reactions::{ReactionError, reaction};
    let author = caller.account()?;
    let stream = find_stream(&state, &id).await?;
    let emoji = reaction(&body.emoji).map_err(|err| {
        ApiError::custom(
            StatusCode::BAD_REQUEST,
            "reaction-unknown",
            "Unknown reaction",
            err.to_string(),
        )
    })?;
    if stream.state != crate::model::StreamState::Live {
        return Err(ApiError::custom(
            StatusCode::CONFLICT,
            "stream-not-live",
            "The stream is not live",
            "reactions go to live streams",
        ));
    }
    super::ticketing::check_room_speaker(&state, &stream.id, author).await?;
    let author = format!("{author:#x}");
    if state.db.is_muted(&stream.id, &author).await? {
        return Err(ApiError::new(
            ProblemKind::Forbidden,
            "the creator muted you in this room",
        ));
    }
    let now = now_ms();
    state
        .chat
        .admit_reaction(&stream.id, &author, now)
        .map_err(|err| match err {
            ReactionError::TooFast { wait_ms } => ApiError::custom(
                StatusCode::TOO_MANY_REQUESTS,
                "reactions-too-fast",
                "Too many reactions",
                err.to_string(),
            )
            .with(serde_json::json!({ "retry_after_ms": wait_ms })),
            ReactionError::Unknown => ApiError::bad_request(err.to_string()),
        })?;
    let media_time_ms = match state.index.get(&stream.id).await? {
        Some(media) => media
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .media_time_ms(),
        None => 0,
    };
    let view = ReactionView {
        emoji: emoji.to_string(),
        author: author.clone(),
        media_time_ms,
        time_ms: now,
    };
    state.chat.publish(
        &stream.id,
        ChatEvent::Reaction {
            emoji: view.emoji.clone(),
            author,
            media_time_ms,
            time_ms: now,
        },
    );
    Ok((StatusCode::CREATED, Json(view)))
}

/// Delete a message (the stream's creator and admins).
#[utoipa::path(
    delete,
    path = "/api/v1/streams/{id}/chat/messages/{message}",
    tag = "chat",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Stream id"), ("message" = String, Path, description = "Message id")),
    responses((status = 204, description = "Deleted"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn delete_message(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, message)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let stream = moderated_stream(&state, &caller, &id).await?;
    if !state.db.delete_chat_message(&stream.id, &message).await? {
        return Err(ApiError::not_found("no such message in this room"));
    }
    state
        .chat
        .publish(&stream.id, ChatEvent::Deleted { id: message });
    Ok(StatusCode::NO_CONTENT)
}

/// Mute an account in the room: its messages disappear and it cannot post.
#[utoipa::path(
    put,
    path = "/api/v1/streams/{id}/chat/mutes/{address}",
    tag = "chat",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Stream id"), ("address" = String, Path, description = "Account")),
    responses((status = 204, description = "Muted"), (status = 403, body = Problem, content_type = "application/problem+json"))
)]
async fn mute(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, address)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let stream = moderated_stream(&state, &caller, &id).await?;
    let address = format!("{:#x}", parse_address(&address)?);
    state.db.mute(&stream.id, &address, now_ms()).await?;
    state.chat.publish(&stream.id, ChatEvent::Muted { address });
    Ok(StatusCode::NO_CONTENT)
}

/// Let a muted account post again (its deleted messages stay deleted).
#[utoipa::path(
    delete,
    path = "/api/v1/streams/{id}/chat/mutes/{address}",
    tag = "chat",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Stream id"), ("address" = String, Path, description = "Account")),
    responses((status = 204, description = "Unmuted"), (status = 403, body = Problem, content_type = "application/problem+json"))
)]
async fn unmute(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, address)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let stream = moderated_stream(&state, &caller, &id).await?;
    let address = format!("{:#x}", parse_address(&address)?);
    state.db.unmute(&stream.id, &address).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TipRequest {
    /// Base units, decimal string, positive.
    pub amount: String,
    /// Shown in the chat with the tip (up to 500 characters).
    pub message: Option<String>,
    /// Idempotency key: the same id pays once.
    pub id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TipView {
    pub id: String,
    #[schema(value_type = String)]
    pub amount: Amount,
    /// The platform's fee of it.
    #[schema(value_type = String)]
    pub fee: Amount,
    /// Each recipient's share, in policy order, before the leftover units
    /// (fewer than the recipients), which go one each to the first ones.
    #[schema(value_type = Vec<String>)]
    pub recipients: Vec<Amount>,
    /// The chat message that shows it (absent for a repeated request).
    pub message: Option<MessageView>,
}

/// Tip the stream's creator from the available balance, split by the
/// creator's revenue policy (platform fee included); shown in the chat.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{id}/tips",
    tag = "chat",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Stream id")),
    request_body = TipRequest,
    responses(
        (status = 201, body = TipView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough available balance", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn tip(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TipRequest>,
) -> Result<(StatusCode, Json<TipView>), ApiError> {
    let payer = caller.account()?;
    let stream = find_stream(&state, &id).await?;
    let creator = match stream.owner.as_deref() {
        Some(owner) => parse_address(owner)?,
        None => return Err(ApiError::bad_request("this stream has no creator to tip")),
    };
    if creator == payer {
        return Err(ApiError::bad_request("you cannot tip yourself"));
    }
    super::ticketing::check_room_speaker(&state, &stream.id, payer).await?;
    let amount = movement_amount(&body.amount)?;
    let text = match body.message.as_deref().map(str::trim) {
        None | Some("") => String::new(),
        Some(text) => message_text(text).map_err(chat_error)?,
    };
    let tip_id = transfer_id(&format!("tip:{payer:#x}"), body.id.as_deref())?;
    let policy = revenue_policy(&state, creator).await?;
    let order = crate::community::tips::TipOrder {
        tip_id: tip_id.clone(),
        payer,
        creator,
        policy,
        stream_id: stream.id.clone(),
        amount,
        text,
    };
    let paid = state
        .tips
        .pay(order, random_id("m"))
        .await
        .map_err(|err| match err {
            crate::community::tips::TipError::Engine(err) => engine_error(err),
            crate::community::tips::TipError::Store(err) => ApiError::from(err),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(TipView {
            id: tip_id,
            amount,
            fee: paid.fee,
            recipients: paid.recipients,
            message: paid.shown.map(Into::into),
        }),
    ))
}

/// What a reader sends over the socket.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    /// Sign in with a session token (the one `POST /api/v1/auth/login` gave).
    Auth {
        token: String,
    },
    Post {
        text: String,
    },
}

/// Upgrades to the room's WebSocket: first a `history` event, then every
/// message, deletion and mute as JSON text.
pub async fn chat_socket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let stream = find_stream(&state, &id).await?;
    let permit = super::socket_permit(&state)?;
    let receiver = state.chat.subscribe(&stream.id);
    let history = state.db.chat_history(&stream.id, HISTORY_LEN).await?;
    Ok(upgrade
        .max_message_size(4096)
        .on_upgrade(move |socket| async move {
            room(socket, state, stream.id, receiver, history).await;
            drop(permit);
        }))
}

async fn room(
    mut socket: WebSocket,
    state: AppState,
    stream_id: String,
    mut events: tokio::sync::broadcast::Receiver<ChatEvent>,
    history: Vec<ChatMessage>,
) {
    if send(&mut socket, &ChatEvent::History { messages: history })
        .await
        .is_err()
    {
        return;
    }
    let mut author: Option<Address> = None;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    if send(&mut socket, &event).await.is_err() {
                        return;
                    }
                }
                // Too slow to keep up: dropped rather than buffered.
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let reply = match serde_json::from_str::<ClientMessage>(&text) {
                    Err(_) => Some(ChatEvent::Error {
                        detail: "send {\"type\":\"auth\",\"token\":...} or {\"type\":\"post\",\"text\":...}".into(),
                    }),
                    Ok(ClientMessage::Auth { token }) => match caller_for_token(&state, &token).await {
                        Ok(caller) => match caller.address() {
                            Some(address) => {
                                author = Some(address);
                                Some(ChatEvent::SignedIn { address: format!("{address:#x}") })
                            }
                            None => Some(ChatEvent::Error { detail: "sign in with a wallet to chat".into() }),
                        },
                        Err(err) => Some(ChatEvent::Error { detail: err.detail().to_string() }),
                    },
                    Ok(ClientMessage::Post { text }) => match author {
                        None => Some(ChatEvent::Error { detail: "sign in to post".into() }),
                        // Everyone, the poster included, receives it from the room.
                        Some(address) => post(&state, &stream_id, address, &text)
                            .await
                            .err()
                            .map(|err| ChatEvent::Error { detail: err.detail().to_string() }),
                    },
                };
                if let Some(reply) = reply
                    && send(&mut socket, &reply).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn send(socket: &mut WebSocket, event: &ChatEvent) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}
