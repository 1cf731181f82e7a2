//! The market: owners list collectibles and tickets at a price, buyers pay
//! from their available balance; item and money move in one transaction
//! (the spec's split: the market fee, the creator's royalty on
//! collectibles, the rest to the seller).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use streamweave_ledger::economics::{resale_cap, sale_split};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::accounts::transfer_id;
use super::auth::{Caller, parse_address, rfc3339};
use super::problem::{ApiError, ApiJson, Problem};
use super::ticketing::{commerce_error, find_event};
use crate::model::now_ms;
use crate::store::{
    CommerceRefusal, EventState, ItemKind, ListingFilter, ListingRecord, ListingState, Sale,
    random_id,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_listing, list_listings))
        .routes(routes!(withdraw_listing))
        .routes(routes!(buy_listing))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRef {
    /// `collectible` or `ticket`.
    pub kind: ItemKind,
    pub id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateListing {
    pub item: ItemRef,
    /// Base units (positive).
    pub price: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListingView {
    pub id: String,
    pub item: ItemRef,
    pub event_id: String,
    pub seller: String,
    pub price: String,
    /// `open`, `sold` or `withdrawn`.
    pub state: ListingState,
    pub buyer: Option<String>,
    pub created_at: String,
    pub closed_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListingList {
    pub listings: Vec<ListingView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuyListing {
    /// Idempotency key (a repeated purchase of a listing you bought answers the same).
    pub id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SaleView {
    pub price: String,
    /// The market's fee (rounded up).
    pub fee: String,
    /// The creator's royalty (rounded down; collectibles only).
    pub royalty: String,
    /// What the seller received.
    pub seller: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Purchase {
    pub listing: ListingView,
    pub sale: SaleView,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListingsQuery {
    /// `collectible` or `ticket`.
    pub kind: Option<String>,
    /// Event id.
    pub event: Option<String>,
    /// Seller address.
    pub seller: Option<String>,
    /// `open` (default), `sold`, `withdrawn` or `all`.
    pub state: Option<String>,
}

fn listing_view(listing: ListingRecord) -> ListingView {
    ListingView {
        id: listing.id,
        item: ItemRef {
            kind: listing.kind,
            id: listing.item_id,
        },
        event_id: listing.event_id,
        seller: format!("{:#x}", listing.seller),
        price: listing.price.to_string(),
        state: listing.state,
        buyer: listing.buyer.map(|b| format!("{b:#x}")),
        created_at: rfc3339(listing.created_at_ms),
        closed_at: listing.closed_at_ms.map(rfc3339),
    }
}

/// The royalty rate of a listed item: its collectible's, none for tickets.
async fn royalty_bps(state: &AppState, listing: &ListingRecord) -> Result<u16, ApiError> {
    Ok(match listing.kind {
        ItemKind::Ticket => 0,
        ItemKind::Collectible => state
            .db
            .collectible(&listing.item_id)
            .await?
            .map_or(0, |c| c.royalty_bps),
    })
}

/// List an item you own. A ticket only before its event starts, at most
/// `floor(face_price * resale_max_bps / 10000)`.
#[utoipa::path(
    post,
    path = "/api/v1/market/listings",
    tag = "market",
    security(("bearer" = [])),
    request_body = CreateListing,
    responses(
        (status = 201, body = ListingView),
        (status = 400, description = "Bad price, or above the resale cap", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Listed already, or the ticket's event started", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_listing(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateListing>,
) -> Result<(StatusCode, Json<ListingView>), ApiError> {
    let seller = caller.account()?;
    let price: streamweave_ledger::Amount = body
        .price
        .parse()
        .map_err(|err| ApiError::bad_request(format!("price: {err}")))?;
    if price.is_zero() {
        return Err(ApiError::bad_request("price must be positive"));
    }
    let now = now_ms();
    let event_id = match body.item.kind {
        ItemKind::Ticket => {
            let ticket = state
                .db
                .ticket(&body.item.id)
                .await?
                .filter(|t| t.owner == seller)
                .ok_or_else(|| ApiError::not_found("no such ticket of yours"))?;
            let event = find_event(&state, &ticket.event_id).await?;
            if event.state != EventState::Scheduled || now >= event.starts_at_ms {
                return Err(commerce_error(CommerceRefusal::TicketResaleOver));
            }
            if !ticket.refunded.is_zero() {
                return Err(ApiError::bad_request("this ticket was refunded"));
            }
            let cap = resale_cap(ticket.face_price, event.resale_max_bps);
            if price > cap {
                return Err(ApiError::custom(
                    StatusCode::BAD_REQUEST,
                    "above-resale-cap",
                    "Above the resale cap",
                    format!("this ticket may be listed at most at {cap}"),
                )
                .with(serde_json::json!({ "max_price": cap.to_string() })));
            }
            event.id
        }
        ItemKind::Collectible => {
            state
                .db
                .collectible(&body.item.id)
                .await?
                .filter(|c| c.owner == seller)
                .ok_or_else(|| ApiError::not_found("no such collectible of yours"))?
                .event_id
        }
    };
    let listing = ListingRecord {
        id: random_id(),
        kind: body.item.kind,
        item_id: body.item.id,
        event_id,
        seller,
        price,
        state: ListingState::Open,
        buyer: None,
        created_at_ms: now,
        closed_at_ms: None,
    };
    if !state.db.insert_listing(&listing).await? {
        return Err(ApiError::custom(
            StatusCode::CONFLICT,
            "already-listed",
            "Listed already",
            "this item has an open listing: withdraw it first",
        ));
    }
    Ok((StatusCode::CREATED, Json(listing_view(listing))))
}

/// Listings, newest first (open ones unless `state` says otherwise).
#[utoipa::path(
    get,
    path = "/api/v1/market/listings",
    tag = "market",
    params(ListingsQuery),
    responses((status = 200, body = ListingList), (status = 400, body = Problem, content_type = "application/problem+json"))
)]
async fn list_listings(
    State(state): State<AppState>,
    Query(query): Query<ListingsQuery>,
) -> Result<Json<ListingList>, ApiError> {
    let filter = ListingFilter {
        kind: match query.kind.as_deref() {
            None | Some("") => None,
            Some("collectible") => Some(ItemKind::Collectible),
            Some("ticket") => Some(ItemKind::Ticket),
            Some(_) => return Err(ApiError::bad_request("kind must be collectible or ticket")),
        },
        event_id: query.event.filter(|e| !e.is_empty()),
        seller: match query.seller.as_deref() {
            None | Some("") => None,
            Some(text) => Some(parse_address(text)?),
        },
        state: match query.state.as_deref() {
            None | Some("") | Some("open") => Some(ListingState::Open),
            Some("sold") => Some(ListingState::Sold),
            Some("withdrawn") => Some(ListingState::Withdrawn),
            Some("all") => None,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "state must be open, sold, withdrawn or all",
                ));
            }
        },
    };
    let listings = state.db.listings(&filter, 500).await?;
    Ok(Json(ListingList {
        listings: listings.into_iter().map(listing_view).collect(),
    }))
}

/// Withdraw your open listing.
#[utoipa::path(
    delete,
    path = "/api/v1/market/listings/{id}",
    tag = "market",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Listing id")),
    responses((status = 204, description = "Withdrawn"), (status = 404, description = "No open listing of yours", body = Problem, content_type = "application/problem+json"))
)]
async fn withdraw_listing(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let seller = caller.account()?;
    if state.db.withdraw_listing(&id, seller, now_ms()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no open listing of yours with this id"))
    }
}

/// Buy a listing from your available balance.
#[utoipa::path(
    post,
    path = "/api/v1/market/listings/{id}/buy",
    tag = "market",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Listing id")),
    request_body = BuyListing,
    responses(
        (status = 200, body = Purchase),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Sold or withdrawn, your own, not enough balance", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn buy_listing(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<BuyListing>,
) -> Result<Json<Purchase>, ApiError> {
    let buyer = caller.account()?;
    // Buying is idempotent per buyer already (a repeat answers the sale);
    // a key is still checked like every other idempotency key.
    transfer_id(&format!("{buyer:#x}"), body.id.as_deref())?;
    let listing = state
        .db
        .listing(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such listing"))?;
    let royalty_bps = royalty_bps(&state, &listing).await?;
    let split = sale_split(listing.price, state.settings.market_fee_bps, royalty_bps)
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let sold = state
        .db
        .buy_listing(&Sale {
            listing_id: listing.id.clone(),
            buyer,
            fee: split.fee,
            royalty: split.royalty,
            seller_part: split.seller,
            now_ms: now_ms(),
        })
        .await?
        .map_err(commerce_error)?;
    tracing::info!(listing = %sold.id, price = %sold.price, "market sale");
    if sold.kind == ItemKind::Ticket {
        // A ticket admits one holder: the seller's session ends.
        state.sessions.end_ticket(&sold.item_id);
        if state.settings.clustered() {
            state
                .db
                .end_admitted_sessions_of_ticket(&sold.item_id)
                .await?;
        }
    }
    Ok(Json(Purchase {
        sale: SaleView {
            price: sold.price.to_string(),
            fee: split.fee.to_string(),
            royalty: split.royalty.to_string(),
            seller: split.seller.to_string(),
        },
        listing: listing_view(sold),
    }))
}
