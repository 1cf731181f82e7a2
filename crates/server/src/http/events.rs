//! WebSockets of events: a stream's ([`StreamEvent`],
//! `GET /api/v1/streams/{id}/events`) and an account's ([`AccountEvent`],
//! `GET /api/v1/accounts/me/events`).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::problem::ApiError;
use crate::live::events::{AccountEvent, StreamEvent};
use crate::model::now_ms;

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// A session token; the stream's owner (or an admin) also gets earnings.
    pub token: Option<String>,
}

/// Upgrades to a WebSocket that pushes the stream's events as JSON text.
pub async fn stream_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let stream = state
        .db
        .stream(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such stream"))?;
    let mut owner_view = false;
    if let Some(token) = query.token.as_deref() {
        if state
            .settings
            .admin_token
            .as_deref()
            .is_some_and(|admin| super::constant_time_eq(admin.as_bytes(), token.as_bytes()))
        {
            owner_view = true;
        } else if let Some(address) = state
            .ledger
            .token_address(&super::auth::token_hash(token), now_ms())
            .await?
        {
            owner_view = stream.owned_by(address) || state.settings.admins.contains(&address);
        }
    }
    let receiver = state.events.subscribe(&id);
    let first = vec![
        StreamEvent::State {
            state: stream.state.as_str().to_string(),
        },
        StreamEvent::Viewers {
            count: state.viewers(
                &id,
                stream.access == crate::model::AccessMode::Free,
                now_ms(),
            ),
        },
    ];
    let permit = super::socket_permit(&state)?;
    Ok(upgrade
        .max_message_size(4096)
        .on_upgrade(move |socket| async move {
            forward(socket, receiver, first, |event: &StreamEvent| {
                owner_view || !event.private()
            })
            .await;
            drop(permit);
        }))
}

/// Sends `first`, then every event `visible` lets through, until the
/// client leaves or falls behind (dropped, never buffered).
async fn forward<E: serde::Serialize + Clone>(
    mut socket: WebSocket,
    mut events: tokio::sync::broadcast::Receiver<E>,
    first: Vec<E>,
    visible: impl Fn(&E) -> bool,
) {
    for event in first {
        if send(&mut socket, &event).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    if !visible(&event) {
                        continue;
                    }
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
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send<E: serde::Serialize>(socket: &mut WebSocket, event: &E) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

#[derive(Debug, Deserialize)]
pub struct AccountEventsQuery {
    /// A session token (browsers cannot set headers on a WebSocket).
    pub token: String,
}

/// Upgrades to a WebSocket that pushes the signed-in account's events
/// (membership renewals and their failures) as JSON text.
pub async fn account_events(
    State(state): State<AppState>,
    Query(query): Query<AccountEventsQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Some(address) = state
        .ledger
        .token_address(&super::auth::token_hash(&query.token), now_ms())
        .await?
    else {
        return Err(ApiError::new(
            super::problem::ProblemKind::Unauthorized,
            "sign in: ?token= names a valid session token",
        ));
    };
    let receiver = state
        .memberships
        .account_events
        .subscribe(&format!("{address:#x}"));
    let permit = super::socket_permit(&state)?;
    Ok(upgrade
        .max_message_size(4096)
        .on_upgrade(move |socket| async move {
            forward(socket, receiver, Vec::new(), |_: &AccountEvent| true).await;
            drop(permit);
        }))
}
