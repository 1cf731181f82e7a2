//! Events and their tickets, leaderboards and collectibles over HTTP:
//! `/api/v1/events...`, `/api/v1/collectibles/{id}`, an account's tickets
//! and collectibles. The room itself is a session on the event's stream
//! (`http::sessions`); the market is `http::market`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use streamweave_ledger::{Address, Amount};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::accounts::transfer_id;
use super::auth::{Caller, parse_address, rfc3339};
use super::payments::engine_error;
use super::problem::{ApiError, ApiJson, Problem, ProblemKind};
use super::streams::{apply_details, new_record, validate_title};
use crate::model::{AccessMode, StreamSource, now_ms};
use crate::money::payments::EngineError;
use crate::store::{
    CollectibleRecord, CommerceRefusal, EventRecord, EventState, TicketPurchase, TicketRecord,
};
use crate::ticketing::{StandingView, TicketingError};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_event, list_events))
        .routes(routes!(get_event, patch_event))
        .routes(routes!(cancel_event))
        .routes(routes!(finalize_event))
        .routes(routes!(buy_tickets, event_tickets))
        .routes(routes!(leaderboard))
        .routes(routes!(account_tickets))
        .routes(routes!(get_collectible))
        .routes(routes!(account_collectibles))
}

/// Most tickets one event may offer.
const MAX_SUPPLY: u64 = 1_000_000;
/// Longest event.
const MAX_DURATION_SECONDS: u64 = 7 * 86_400;
/// Most tickets bought in one request.
const MAX_QUANTITY: u64 = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketTerms {
    /// Base units per ticket (positive).
    pub price: String,
    /// Tickets on sale (1 to 1,000,000).
    pub supply: u64,
    /// Most tickets one wallet buys (default 4).
    pub per_wallet: Option<u64>,
    /// RFC 3339; default the event's scheduled end.
    pub sale_ends_at: Option<String>,
    /// Highest resale price, in basis points of the face price (default 10000).
    pub resale_max_bps: Option<u16>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    /// 1 to 200 characters.
    pub title: String,
    pub description: Option<String>,
    pub category: Option<String>,
    /// RFC 3339.
    pub starts_at: String,
    /// 1 to 604800.
    pub duration_seconds: u64,
    pub ticket: TicketTerms,
    /// The creator's royalty on market sales of the event's collectible (default 0).
    pub royalty_bps: Option<u16>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketChanges {
    pub price: Option<String>,
    pub supply: Option<u64>,
    pub per_wallet: Option<u64>,
    pub sale_ends_at: Option<String>,
    pub resale_max_bps: Option<u16>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchEvent {
    pub title: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub starts_at: Option<String>,
    pub duration_seconds: Option<u64>,
    pub ticket: Option<TicketChanges>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TicketTermsView {
    pub price: String,
    pub supply: u64,
    pub per_wallet: u64,
    pub sale_ends_at: String,
    pub resale_max_bps: u16,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    /// The event's room: a stream with `access` `ticket`.
    pub stream_id: String,
    pub creator: String,
    pub title: String,
    pub description: String,
    pub category: Option<String>,
    pub starts_at: String,
    pub ends_at: String,
    pub duration_seconds: u64,
    /// `scheduled`, `live`, `ended`, `finalized` or `cancelled`.
    pub state: EventState,
    pub ticket: TicketTermsView,
    pub tickets_sold: u64,
    pub tickets_left: u64,
    pub royalty_bps: u16,
    pub went_live_at: Option<String>,
    pub ended_at: Option<String>,
    /// Finalized: live media time counted as delivered.
    pub delivered_ms: Option<u64>,
    /// Finalized: ticket money released to the creator's side.
    pub released: Option<String>,
    pub finalized_at: Option<String>,
    pub cancelled_at: Option<String>,
    pub collectible_id: Option<String>,
    /// The creator's and admins' only: the key to go live with.
    pub stream_key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TicketView {
    pub id: String,
    pub event_id: String,
    pub owner: String,
    pub price_paid: String,
    pub face_price: String,
    /// Returned to the holder so far (cancellation, undelivered time).
    pub refunded: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TicketList {
    pub tickets: Vec<TicketView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderboardView {
    pub event_id: String,
    /// Frozen at finalization.
    pub frozen: bool,
    pub standings: Vec<StandingView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OwnerView {
    pub owner: String,
    pub since: String,
    /// What they paid on the market; absent for the mint.
    pub price: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CollectibleView {
    pub id: String,
    pub event_id: String,
    pub creator: String,
    pub owner: String,
    /// The recording's archive root (`/ipfs/{cid}`).
    pub archive_root_cid: Option<String>,
    /// The metadata document (`/ipfs/{cid}`): event, times, recording, leaderboard.
    pub metadata_cid: String,
    pub minted_at: String,
    pub royalty_bps: u16,
    /// Owners from the mint to now.
    pub history: Vec<OwnerView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CollectibleList {
    pub collectibles: Vec<CollectibleView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuyTickets {
    /// 1 to 100 (default 1).
    pub quantity: Option<u64>,
    /// Idempotency key: the same key buys once.
    pub id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListEventsQuery {
    /// `scheduled`, `live`, `ended`, `finalized` or `cancelled`.
    pub state: Option<String>,
}

fn parse_time(field: &str, text: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| ApiError::bad_request(format!("{field}: not an RFC 3339 time")))
}

fn positive_amount(field: &str, text: &str) -> Result<Amount, ApiError> {
    let amount: Amount = text
        .parse()
        .map_err(|err| ApiError::bad_request(format!("{field}: {err}")))?;
    if amount.is_zero() {
        return Err(ApiError::bad_request(format!("{field} must be positive")));
    }
    Ok(amount)
}

fn check_duration(duration_seconds: u64) -> Result<(), ApiError> {
    if !(1..=MAX_DURATION_SECONDS).contains(&duration_seconds) {
        return Err(ApiError::bad_request(format!(
            "duration_seconds must be 1 to {MAX_DURATION_SECONDS}"
        )));
    }
    Ok(())
}

fn check_supply(supply: u64) -> Result<(), ApiError> {
    if !(1..=MAX_SUPPLY).contains(&supply) {
        return Err(ApiError::bad_request(format!(
            "ticket.supply must be 1 to {MAX_SUPPLY}"
        )));
    }
    Ok(())
}

fn check_per_wallet(per_wallet: u64) -> Result<(), ApiError> {
    if per_wallet == 0 || per_wallet > MAX_SUPPLY {
        return Err(ApiError::bad_request(format!(
            "ticket.per_wallet must be 1 to {MAX_SUPPLY}"
        )));
    }
    Ok(())
}

fn check_sale_end(event: &EventRecord) -> Result<(), ApiError> {
    if event.sale_ends_at_ms > event.ends_at_ms() {
        return Err(ApiError::bad_request(
            "ticket.sale_ends_at must be at or before the event's end",
        ));
    }
    Ok(())
}

pub fn event_view(
    event: &EventRecord,
    collectible: Option<&str>,
    caller: Option<&Caller>,
    stream_key: Option<&str>,
) -> EventView {
    let privileged = caller.is_some_and(|c| c.may_act_for(event.creator));
    let closed = event.closed_at_ms.map(rfc3339);
    EventView {
        id: event.id.clone(),
        stream_id: event.stream_id.clone(),
        creator: format!("{:#x}", event.creator),
        title: event.title.clone(),
        description: event.description.clone(),
        category: event.category.clone(),
        starts_at: rfc3339(event.starts_at_ms),
        ends_at: rfc3339(event.ends_at_ms()),
        duration_seconds: event.duration_seconds,
        state: event.state,
        ticket: TicketTermsView {
            price: event.ticket_price.to_string(),
            supply: event.ticket_supply,
            per_wallet: event.per_wallet,
            sale_ends_at: rfc3339(event.sale_ends_at_ms),
            resale_max_bps: event.resale_max_bps,
        },
        tickets_sold: event.tickets_sold,
        tickets_left: event.ticket_supply.saturating_sub(event.tickets_sold),
        royalty_bps: event.royalty_bps,
        went_live_at: event.went_live_at_ms.map(rfc3339),
        ended_at: event.ended_at_ms.map(rfc3339),
        delivered_ms: event.delivered_ms,
        released: (event.state == EventState::Finalized).then(|| event.released.to_string()),
        finalized_at: if event.state == EventState::Finalized {
            closed.clone()
        } else {
            None
        },
        cancelled_at: if event.state == EventState::Cancelled {
            closed
        } else {
            None
        },
        collectible_id: collectible.map(str::to_string),
        stream_key: if privileged {
            stream_key.map(str::to_string)
        } else {
            None
        },
    }
}

async fn full_view(
    state: &AppState,
    event: &EventRecord,
    caller: Option<&Caller>,
) -> Result<EventView, ApiError> {
    let collectible = state.db.collectible_of_event(&event.id).await?;
    let key = match caller {
        Some(c) if c.may_act_for(event.creator) => state
            .db
            .stream(&event.stream_id)
            .await?
            .map(|s| s.stream_key),
        _ => None,
    };
    Ok(event_view(
        event,
        collectible.as_ref().map(|c| c.id.as_str()),
        caller,
        key.as_deref(),
    ))
}

pub fn ticket_view(ticket: &TicketRecord) -> TicketView {
    TicketView {
        id: ticket.id.clone(),
        event_id: ticket.event_id.clone(),
        owner: format!("{:#x}", ticket.owner),
        price_paid: ticket.price_paid.to_string(),
        face_price: ticket.face_price.to_string(),
        refunded: ticket.refunded.to_string(),
        created_at: rfc3339(ticket.created_at_ms),
    }
}

pub async fn find_event(state: &AppState, id: &str) -> Result<EventRecord, ApiError> {
    state
        .db
        .event(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such event"))
}

/// The event, if the caller is its creator or an admin (else 404, not
/// revealing more).
async fn managed_event(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<EventRecord, ApiError> {
    let event = find_event(state, id).await?;
    if caller.may_act_for(event.creator) {
        Ok(event)
    } else {
        Err(ApiError::new(
            ProblemKind::Forbidden,
            "only the event's creator or an admin may do this",
        ))
    }
}

/// The HTTP answer to a refused sale, cancellation or finalization.
pub fn commerce_error(refusal: CommerceRefusal) -> ApiError {
    let conflict = |slug: &'static str, title: &'static str, detail: String| {
        ApiError::custom(StatusCode::CONFLICT, slug, title, detail)
    };
    let detail = refusal.to_string();
    match refusal {
        CommerceRefusal::NoSuchEvent => ApiError::not_found(detail),
        CommerceRefusal::NoSuchListing => ApiError::not_found(detail),
        CommerceRefusal::EventState(event_state) => {
            conflict("event-state", "Not possible in this state", detail)
                .with(json!({ "state": event_state }))
        }
        CommerceRefusal::SaleOver => conflict("sale-over", "Ticket sale over", detail),
        CommerceRefusal::SoldOut { left } => {
            conflict("sold-out", "Sold out", detail).with(json!({ "tickets_left": left }))
        }
        CommerceRefusal::WalletLimit { per_wallet, held } => {
            conflict("ticket-limit", "Ticket limit reached", detail)
                .with(json!({ "per_wallet": per_wallet, "held": held }))
        }
        CommerceRefusal::KeyReused => conflict(
            "idempotency-conflict",
            "Idempotency key reused",
            format!("{detail}; use a new id for a new request"),
        ),
        CommerceRefusal::Changed => conflict("event-changed", "Try again", detail),
        CommerceRefusal::ListingClosed => conflict("listing-closed", "Listing closed", detail),
        CommerceRefusal::OwnListing => conflict("own-listing", "Your own listing", detail),
        CommerceRefusal::NotOwner => conflict("not-owner", "Not the owner", detail),
        CommerceRefusal::TicketResaleOver => {
            conflict("ticket-resale-over", "Ticket resale over", detail)
        }
        CommerceRefusal::Ledger(refusal) => engine_error(EngineError::Refused(refusal)),
    }
}

fn ticketing_error(err: TicketingError) -> ApiError {
    match err {
        TicketingError::Refused(refusal) => commerce_error(refusal),
        TicketingError::NotYet(detail) => ApiError::custom(
            StatusCode::CONFLICT,
            "event-not-over",
            "The event is not over",
            detail,
        ),
        TicketingError::Economics(err) => ApiError::bad_request(err.to_string()),
        TicketingError::Store(err) => ApiError::from(err),
        TicketingError::Metadata(err) => ApiError::from(err),
    }
}

/// Schedule an event: its own room (a stream watched by ticket) and tickets on sale.
#[utoipa::path(
    post,
    path = "/api/v1/events",
    tag = "events",
    security(("bearer" = [])),
    request_body = CreateEvent,
    responses(
        (status = 201, body = EventView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_event(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateEvent>,
) -> Result<(StatusCode, Json<EventView>), ApiError> {
    let creator = caller.account()?;
    let title = validate_title(&body.title)?;
    let starts_at_ms = parse_time("starts_at", &body.starts_at)?;
    check_duration(body.duration_seconds)?;
    let price = positive_amount("ticket.price", &body.ticket.price)?;
    check_supply(body.ticket.supply)?;
    let per_wallet = body.ticket.per_wallet.unwrap_or(4);
    check_per_wallet(per_wallet)?;
    let royalty_bps = body.royalty_bps.unwrap_or(0);
    if u32::from(royalty_bps) + u32::from(state.settings.market_fee_bps) > 10_000 {
        return Err(ApiError::bad_request(format!(
            "royalty_bps must be at most {} (10000 less the market fee)",
            10_000 - state.settings.market_fee_bps
        )));
    }
    let now = now_ms();
    let mut stream = new_record(
        title.clone(),
        Some(format!("{creator:#x}")),
        StreamSource::Live,
        false,
    );
    apply_details(
        &mut stream,
        body.description.as_deref(),
        body.category.as_deref(),
        None,
    )?;
    stream.access = AccessMode::Ticket;
    let mut event = EventRecord {
        id: format!("0x{}", crate::store::random_id()),
        stream_id: stream.id.clone(),
        creator,
        title,
        description: stream.description.clone(),
        category: stream.category.clone(),
        starts_at_ms,
        duration_seconds: body.duration_seconds,
        ticket_price: price,
        ticket_supply: body.ticket.supply,
        per_wallet,
        sale_ends_at_ms: 0,
        resale_max_bps: body.ticket.resale_max_bps.unwrap_or(10_000),
        royalty_bps,
        state: EventState::Scheduled,
        tickets_sold: 0,
        released: Amount(0),
        delivered_ms: None,
        went_live_at_ms: None,
        ended_at_ms: None,
        closed_at_ms: None,
        leaderboard: None,
        created_at_ms: now,
    };
    if event.ends_at_ms() <= now {
        return Err(ApiError::bad_request("the event would be over already"));
    }
    event.sale_ends_at_ms = match body.ticket.sale_ends_at.as_deref() {
        Some(text) => parse_time("ticket.sale_ends_at", text)?,
        None => event.ends_at_ms(),
    };
    check_sale_end(&event)?;
    state.db.insert_event(&stream, &event).await?;
    tracing::info!(event = %event.id, stream = %stream.id, "event scheduled");
    Ok((
        StatusCode::CREATED,
        Json(event_view(
            &event,
            None,
            Some(&caller),
            Some(&stream.stream_key),
        )),
    ))
}

/// Events by start, soonest first.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(ListEventsQuery),
    responses((status = 200, body = EventList), (status = 400, body = Problem, content_type = "application/problem+json"))
)]
async fn list_events(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Query(query): Query<ListEventsQuery>,
) -> Result<Json<EventList>, ApiError> {
    let filter = match query.state.as_deref() {
        None | Some("") => None,
        Some(text) => Some(EventState::parse(text).ok_or_else(|| {
            ApiError::bad_request("state must be scheduled, live, ended, finalized or cancelled")
        })?),
    };
    let mut events = Vec::new();
    for event in state.db.events(filter, 500).await? {
        events.push(full_view(&state, &event, caller.as_ref()).await?);
    }
    Ok(Json(EventList { events }))
}

/// One event.
#[utoipa::path(
    get,
    path = "/api/v1/events/{id}",
    tag = "events",
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, body = EventView), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn get_event(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
) -> Result<Json<EventView>, ApiError> {
    let event = find_event(&state, &id).await?;
    Ok(Json(full_view(&state, &event, caller.as_ref()).await?))
}

/// Change a scheduled event (creator or admin). A new ticket price applies
/// to later sales; sold tickets keep what they paid.
#[utoipa::path(
    patch,
    path = "/api/v1/events/{id}",
    tag = "events",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    request_body = PatchEvent,
    responses(
        (status = 200, body = EventView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Started, or supply below what was sold", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn patch_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchEvent>,
) -> Result<Json<EventView>, ApiError> {
    let mut event = managed_event(&state, &caller, &id).await?;
    if event.state != EventState::Scheduled {
        return Err(commerce_error(CommerceRefusal::EventState(event.state)));
    }
    let end_before = event.ends_at_ms();
    if let Some(title) = &body.title {
        event.title = validate_title(title)?;
    }
    if body.description.is_some() || body.category.is_some() {
        let mut details = new_record(String::new(), None, StreamSource::Live, false);
        details.description = event.description.clone();
        details.category = event.category.clone();
        apply_details(
            &mut details,
            body.description.as_deref(),
            body.category.as_deref(),
            None,
        )?;
        event.description = details.description;
        event.category = details.category;
    }
    if let Some(starts_at) = &body.starts_at {
        event.starts_at_ms = parse_time("starts_at", starts_at)?;
    }
    if let Some(duration) = body.duration_seconds {
        check_duration(duration)?;
        event.duration_seconds = duration;
    }
    // A sale that ended with the event moves with it.
    if event.sale_ends_at_ms == end_before {
        event.sale_ends_at_ms = event.ends_at_ms();
    }
    if let Some(ticket) = &body.ticket {
        if let Some(price) = &ticket.price {
            event.ticket_price = positive_amount("ticket.price", price)?;
        }
        if let Some(supply) = ticket.supply {
            check_supply(supply)?;
            if supply < event.tickets_sold {
                return Err(ApiError::custom(
                    StatusCode::CONFLICT,
                    "supply-below-sold",
                    "Supply below tickets sold",
                    format!("{} tickets are sold already", event.tickets_sold),
                ));
            }
            event.ticket_supply = supply;
        }
        if let Some(per_wallet) = ticket.per_wallet {
            check_per_wallet(per_wallet)?;
            event.per_wallet = per_wallet;
        }
        if let Some(sale_ends_at) = &ticket.sale_ends_at {
            event.sale_ends_at_ms = parse_time("ticket.sale_ends_at", sale_ends_at)?;
        }
        if let Some(bps) = ticket.resale_max_bps {
            event.resale_max_bps = bps;
        }
    }
    if event.ends_at_ms() <= now_ms() {
        return Err(ApiError::bad_request("the event would be over already"));
    }
    check_sale_end(&event)?;
    if !state.db.update_event(&event).await? {
        let now = find_event(&state, &id).await?;
        return Err(if now.state != EventState::Scheduled {
            commerce_error(CommerceRefusal::EventState(now.state))
        } else {
            ApiError::custom(
                StatusCode::CONFLICT,
                "supply-below-sold",
                "Supply below tickets sold",
                format!("{} tickets are sold already", now.tickets_sold),
            )
        });
    }
    let event = find_event(&state, &id).await?;
    Ok(Json(full_view(&state, &event, Some(&caller)).await?))
}

/// Cancel an event before finalization (creator or admin): every ticket is
/// refunded what it paid.
#[utoipa::path(
    post,
    path = "/api/v1/events/{id}/cancel",
    tag = "events",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, body = EventView),
        (status = 409, description = "Finalized or cancelled already", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn cancel_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<EventView>, ApiError> {
    let event = managed_event(&state, &caller, &id).await?;
    state
        .db
        .cancel_event(&event.id, now_ms())
        .await?
        .map_err(commerce_error)?;
    tracing::info!(event = %event.id, "event cancelled");
    // Its tickets were refunded: nobody watches on them any more.
    state.sessions.end_stream(&event.stream_id);
    if state.settings.clustered() {
        // Other nodes drop theirs when they next write what they served.
        state
            .db
            .end_admitted_sessions_of_stream(&event.stream_id)
            .await?;
    }
    let event = find_event(&state, &id).await?;
    Ok(Json(full_view(&state, &event, Some(&caller)).await?))
}

/// Finalize an event whose stream has ended (creator or admin; otherwise
/// automatic `--event-finalize-after-s` after the end): freezes the
/// leaderboard, pays out by delivery, mints the collectible.
#[utoipa::path(
    post,
    path = "/api/v1/events/{id}/finalize",
    tag = "events",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, body = EventView),
        (status = 409, description = "Live, not over yet, cancelled, or finalized already", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn finalize_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<EventView>, ApiError> {
    let event = managed_event(&state, &caller, &id).await?;
    let event = state
        .ticketing
        .finalize(&event.id, now_ms())
        .await
        .map_err(ticketing_error)?;
    Ok(Json(full_view(&state, &event, Some(&caller)).await?))
}

/// Buy tickets from your available balance.
#[utoipa::path(
    post,
    path = "/api/v1/events/{id}/tickets",
    tag = "events",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    request_body = BuyTickets,
    responses(
        (status = 201, body = TicketList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Sold out, sale over, over the per-wallet limit, not enough balance", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn buy_tickets(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<BuyTickets>,
) -> Result<(StatusCode, Json<TicketList>), ApiError> {
    let buyer = caller.account()?;
    let quantity = body.quantity.unwrap_or(1);
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(ApiError::bad_request(format!(
            "quantity must be 1 to {MAX_QUANTITY}"
        )));
    }
    let purchase_id = transfer_id(&format!("{buyer:#x}"), body.id.as_deref())?;
    let tickets = state
        .db
        .buy_tickets(&TicketPurchase {
            event_id: id,
            buyer,
            quantity,
            purchase_id,
            now_ms: now_ms(),
        })
        .await?
        .map_err(commerce_error)?;
    Ok((
        StatusCode::CREATED,
        Json(TicketList {
            tickets: tickets.iter().map(ticket_view).collect(),
        }),
    ))
}

/// Every ticket sold for an event (creator and admins).
#[utoipa::path(
    get,
    path = "/api/v1/events/{id}/tickets",
    tag = "events",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, body = TicketList), (status = 403, body = Problem, content_type = "application/problem+json"))
)]
async fn event_tickets(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TicketList>, ApiError> {
    let event = managed_event(&state, &caller, &id).await?;
    let tickets = state.db.event_tickets(&event.id).await?;
    Ok(Json(TicketList {
        tickets: tickets.iter().map(ticket_view).collect(),
    }))
}

/// The event's tip leaderboard (frozen once finalized). Changes are also
/// pushed on the stream's events WebSocket (`leaderboard`).
#[utoipa::path(
    get,
    path = "/api/v1/events/{id}/leaderboard",
    tag = "events",
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, body = LeaderboardView), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn leaderboard(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<LeaderboardView>, ApiError> {
    let event = find_event(&state, &id).await?;
    let (frozen, standings) = state
        .ticketing
        .leaderboard(&event)
        .await
        .map_err(ticketing_error)?;
    Ok(Json(LeaderboardView {
        event_id: event.id,
        frozen,
        standings,
    }))
}

/// An account's tickets, newest first (the account itself and admins).
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{address}/tickets",
    tag = "events",
    security(("bearer" = [])),
    params(("address" = String, Path, description = "Account address")),
    responses((status = 200, body = TicketList), (status = 403, body = Problem, content_type = "application/problem+json"))
)]
async fn account_tickets(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
) -> Result<Json<TicketList>, ApiError> {
    let owner = parse_address(&address)?;
    if !caller.may_act_for(owner) {
        return Err(ApiError::new(
            ProblemKind::Forbidden,
            "only the account itself sees its tickets",
        ));
    }
    let tickets = state.db.tickets_of(owner).await?;
    Ok(Json(TicketList {
        tickets: tickets.iter().map(ticket_view).collect(),
    }))
}

async fn collectible_view(
    state: &AppState,
    collectible: CollectibleRecord,
) -> Result<CollectibleView, ApiError> {
    let history = state.db.collectible_history(&collectible.id).await?;
    Ok(CollectibleView {
        id: collectible.id,
        event_id: collectible.event_id,
        creator: format!("{:#x}", collectible.creator),
        owner: format!("{:#x}", collectible.owner),
        archive_root_cid: collectible.archive_root_cid,
        metadata_cid: collectible.metadata_cid,
        minted_at: rfc3339(collectible.minted_at_ms),
        royalty_bps: collectible.royalty_bps,
        history: history
            .into_iter()
            .map(|entry| OwnerView {
                owner: format!("{:#x}", entry.owner),
                since: rfc3339(entry.since_ms),
                price: entry.price.map(|p| p.to_string()),
            })
            .collect(),
    })
}

/// A collectible with its history of owners.
#[utoipa::path(
    get,
    path = "/api/v1/collectibles/{id}",
    tag = "events",
    params(("id" = String, Path, description = "Collectible id")),
    responses((status = 200, body = CollectibleView), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn get_collectible(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CollectibleView>, ApiError> {
    let collectible = state
        .db
        .collectible(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such collectible"))?;
    Ok(Json(collectible_view(&state, collectible).await?))
}

/// The collectibles an account holds.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{address}/collectibles",
    tag = "events",
    params(("address" = String, Path, description = "Account address")),
    responses((status = 200, body = CollectibleList), (status = 400, body = Problem, content_type = "application/problem+json"))
)]
async fn account_collectibles(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> Result<Json<CollectibleList>, ApiError> {
    let owner: Address = parse_address(&address)?;
    let mut collectibles = Vec::new();
    for collectible in state.db.collectibles_of(owner).await? {
        collectibles.push(collectible_view(&state, collectible).await?);
    }
    Ok(Json(CollectibleList { collectibles }))
}

/// Refuses a post or tip in an event's room from someone without a ticket.
pub async fn check_room_speaker(
    state: &AppState,
    stream_id: &str,
    address: Address,
) -> Result<(), ApiError> {
    let Some(event) = state.db.event_of_stream(stream_id).await? else {
        return Ok(());
    };
    if address == event.creator || state.db.valid_ticket(&event.id, address).await?.is_some() {
        return Ok(());
    }
    Err(ticket_required(
        "only ticket holders and the creator post in an event's room",
    ))
}

/// 403 `/problems/ticket-required`.
pub fn ticket_required(detail: &str) -> ApiError {
    ApiError::custom(
        StatusCode::FORBIDDEN,
        "ticket-required",
        "Ticket required",
        detail.to_string(),
    )
}
