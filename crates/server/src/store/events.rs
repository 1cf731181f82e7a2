//! Events, tickets, collectibles and market listings. Every operation that
//! moves money moves its items in the same transaction as the ledger
//! transfers (`ledger::apply_batch`): a ticket exists exactly when it was
//! paid for, an item changes hands exactly when the buyer paid.

use sqlx::Row;
use sqlx::any::AnyRow;
use streamweave_ledger::{AccountRef, Address, Amount, B128, Balance, Transfer, TransferKind};

use super::ledger::apply_batch;
use super::{
    LedgerBatch, Refusal, Statement, Store, decode_err, get_parsed, get_u64, row_by, rows_by,
    to_i64,
};

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    Scheduled,
    Live,
    Ended,
    Finalized,
    Cancelled,
}

impl EventState {
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Scheduled => "scheduled",
            EventState::Live => "live",
            EventState::Ended => "ended",
            EventState::Finalized => "finalized",
            EventState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<EventState> {
        Some(match text {
            "scheduled" => EventState::Scheduled,
            "live" => EventState::Live,
            "ended" => EventState::Ended,
            "finalized" => EventState::Finalized,
            "cancelled" => EventState::Cancelled,
            _ => return None,
        })
    }

    /// Finalized or cancelled: its money has been paid out or refunded.
    pub fn is_closed(self) -> bool {
        matches!(self, EventState::Finalized | EventState::Cancelled)
    }
}

/// An event row.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// `0x` and 32 hex digits (the ledger account's id).
    pub id: String,
    pub stream_id: String,
    pub creator: Address,
    pub title: String,
    pub description: String,
    pub category: Option<String>,
    pub starts_at_ms: i64,
    pub duration_seconds: u64,
    pub ticket_price: Amount,
    pub ticket_supply: u64,
    pub per_wallet: u64,
    pub sale_ends_at_ms: i64,
    pub resale_max_bps: u16,
    pub royalty_bps: u16,
    pub state: EventState,
    pub tickets_sold: u64,
    /// Ticket money released to the creator's side at finalization.
    pub released: Amount,
    pub delivered_ms: Option<u64>,
    pub went_live_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    /// When it was finalized or cancelled.
    pub closed_at_ms: Option<i64>,
    /// The final leaderboard (JSON), frozen at finalization.
    pub leaderboard: Option<String>,
    pub created_at_ms: i64,
}

impl EventRecord {
    /// The scheduled end.
    pub fn ends_at_ms(&self) -> i64 {
        self.starts_at_ms
            .saturating_add(to_i64(self.duration_seconds).saturating_mul(1000))
    }

    /// The ledger account holding its ticket money.
    pub fn account(&self) -> Result<AccountRef, sqlx::Error> {
        event_account(&self.id)
    }
}

/// The ledger account of an event id (default asset).
pub fn event_account(event_id: &str) -> Result<AccountRef, sqlx::Error> {
    let event: B128 = event_id.parse().map_err(decode_err)?;
    Ok(AccountRef::Event {
        event,
        asset: Address::ZERO,
    })
}

/// A ticket row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketRecord {
    pub id: String,
    pub event_id: String,
    pub buyer: Address,
    pub owner: Address,
    pub price_paid: Amount,
    pub face_price: Amount,
    pub refunded: Amount,
    pub created_at_ms: i64,
}

/// An event's collectible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectibleRecord {
    pub id: String,
    pub event_id: String,
    pub creator: Address,
    pub owner: Address,
    pub royalty_bps: u16,
    pub archive_root_cid: Option<String>,
    pub metadata_cid: String,
    pub minted_at_ms: i64,
}

/// One owner in a collectible's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerEntry {
    pub owner: Address,
    pub since_ms: i64,
    /// What they paid on the market (`None` when minted to them).
    pub price: Option<Amount>,
}

/// What a listing sells.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Collectible,
    Ticket,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Collectible => "collectible",
            ItemKind::Ticket => "ticket",
        }
    }
}

/// A listing's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListingState {
    Open,
    Sold,
    Withdrawn,
}

impl ListingState {
    pub fn as_str(self) -> &'static str {
        match self {
            ListingState::Open => "open",
            ListingState::Sold => "sold",
            ListingState::Withdrawn => "withdrawn",
        }
    }
}

/// A market listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingRecord {
    pub id: String,
    pub kind: ItemKind,
    pub item_id: String,
    pub event_id: String,
    pub seller: Address,
    pub price: Amount,
    pub state: ListingState,
    pub buyer: Option<Address>,
    pub created_at_ms: i64,
    pub closed_at_ms: Option<i64>,
}

/// Filters of `GET /api/v1/market/listings`.
#[derive(Debug, Clone, Default)]
pub struct ListingFilter {
    pub kind: Option<ItemKind>,
    pub event_id: Option<String>,
    pub seller: Option<Address>,
    pub state: Option<ListingState>,
}

/// One tip on an event's leaderboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTipRecord {
    pub tipper: Address,
    pub amount: Amount,
    pub at_ms: i64,
}

/// Why a sale, a cancellation or a finalization did not happen (nothing
/// moved).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommerceRefusal {
    #[error("no such event")]
    NoSuchEvent,
    #[error("the event is {}", .0.as_str())]
    EventState(EventState),
    #[error("the ticket sale is over")]
    SaleOver,
    #[error("sold out: {left} tickets left")]
    SoldOut { left: u64 },
    #[error("at most {per_wallet} tickets per wallet; this wallet holds {held}")]
    WalletLimit { per_wallet: u64, held: u64 },
    #[error("the id was already used for a different purchase")]
    KeyReused,
    #[error("the event changed while it was being finalized")]
    Changed,
    #[error("no such listing")]
    NoSuchListing,
    #[error("the listing is no longer open")]
    ListingClosed,
    #[error("that is your own listing")]
    OwnListing,
    #[error("the seller no longer owns the item")]
    NotOwner,
    #[error("a ticket is sold on the market only before its event starts")]
    TicketResaleOver,
    #[error(transparent)]
    Ledger(#[from] Refusal),
}

/// A purchase of tickets.
#[derive(Debug, Clone)]
pub struct TicketPurchase {
    pub event_id: String,
    pub buyer: Address,
    pub quantity: u64,
    /// `{buyer}:{key}`: the same purchase id buys once.
    pub purchase_id: String,
    pub now_ms: i64,
}

/// Everything finalization writes, computed by the caller from the event as
/// read (`expected_*` guard against a change in between).
#[derive(Debug, Clone)]
pub struct Finalization {
    pub event_id: String,
    pub expected_state: EventState,
    pub expected_tickets_sold: u64,
    pub delivered_ms: u64,
    pub leaderboard_json: String,
    /// Per ticket: its refund (paid to its current owner).
    pub refunds: Vec<(String, Amount)>,
    /// The release's split (event account -> platform and revenue).
    pub release: Vec<Transfer>,
    pub released: Amount,
    pub collectible: CollectibleRecord,
    pub now_ms: i64,
}

/// A market sale, as computed by the caller (the split of `listing.price`).
#[derive(Debug, Clone)]
pub struct Sale {
    pub listing_id: String,
    pub buyer: Address,
    pub fee: Amount,
    pub royalty: Amount,
    pub seller_part: Amount,
    pub now_ms: i64,
}

const EVENT_COLUMNS: &str = "id, stream_id, creator, title, description, category, starts_at_ms, \
    duration_seconds, ticket_price, ticket_supply, per_wallet, sale_ends_at_ms, resale_max_bps, \
    royalty_bps, state, tickets_sold, released, delivered_ms, went_live_at_ms, ended_at_ms, \
    closed_at_ms, leaderboard, created_at_ms";
const TICKET_COLUMNS: &str =
    "id, event_id, buyer, owner, price_paid, face_price, refunded, created_at_ms";
const COLLECTIBLE_COLUMNS: &str =
    "id, event_id, creator, owner, royalty_bps, archive_root_cid, metadata_cid, minted_at_ms";
const LISTING_COLUMNS: &str =
    "id, kind, item_id, event_id, seller, price, state, buyer, created_at_ms, closed_at_ms";

fn event_row(row: &AnyRow) -> Result<EventRecord, sqlx::Error> {
    let state: &str = row.try_get("state")?;
    Ok(EventRecord {
        id: row.try_get("id")?,
        stream_id: row.try_get("stream_id")?,
        creator: get_parsed(row, "creator")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        category: row.try_get("category")?,
        starts_at_ms: row.try_get("starts_at_ms")?,
        duration_seconds: get_u64(row, "duration_seconds")?,
        ticket_price: get_parsed(row, "ticket_price")?,
        ticket_supply: get_u64(row, "ticket_supply")?,
        per_wallet: get_u64(row, "per_wallet")?,
        sale_ends_at_ms: row.try_get("sale_ends_at_ms")?,
        resale_max_bps: u16::try_from(row.try_get::<i64, _>("resale_max_bps")?)
            .map_err(decode_err)?,
        royalty_bps: u16::try_from(row.try_get::<i64, _>("royalty_bps")?).map_err(decode_err)?,
        state: EventState::parse(state).ok_or_else(|| decode_err(format!("bad state {state}")))?,
        tickets_sold: get_u64(row, "tickets_sold")?,
        released: get_parsed(row, "released")?,
        delivered_ms: row
            .try_get::<Option<i64>, _>("delivered_ms")?
            .map(|ms| ms.max(0) as u64),
        went_live_at_ms: row.try_get("went_live_at_ms")?,
        ended_at_ms: row.try_get("ended_at_ms")?,
        closed_at_ms: row.try_get("closed_at_ms")?,
        leaderboard: row.try_get("leaderboard")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn ticket_row(row: &AnyRow) -> Result<TicketRecord, sqlx::Error> {
    Ok(TicketRecord {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        buyer: get_parsed(row, "buyer")?,
        owner: get_parsed(row, "owner")?,
        price_paid: get_parsed(row, "price_paid")?,
        face_price: get_parsed(row, "face_price")?,
        refunded: get_parsed(row, "refunded")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn collectible_row(row: &AnyRow) -> Result<CollectibleRecord, sqlx::Error> {
    Ok(CollectibleRecord {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        creator: get_parsed(row, "creator")?,
        owner: get_parsed(row, "owner")?,
        royalty_bps: u16::try_from(row.try_get::<i64, _>("royalty_bps")?).map_err(decode_err)?,
        archive_root_cid: row.try_get("archive_root_cid")?,
        metadata_cid: row.try_get("metadata_cid")?,
        minted_at_ms: row.try_get("minted_at_ms")?,
    })
}

fn listing_row(row: &AnyRow) -> Result<ListingRecord, sqlx::Error> {
    Ok(ListingRecord {
        id: row.try_get("id")?,
        kind: match row.try_get::<&str, _>("kind")? {
            "collectible" => ItemKind::Collectible,
            "ticket" => ItemKind::Ticket,
            other => return Err(decode_err(format!("bad item kind {other}"))),
        },
        item_id: row.try_get("item_id")?,
        event_id: row.try_get("event_id")?,
        seller: get_parsed(row, "seller")?,
        price: get_parsed(row, "price")?,
        state: match row.try_get::<&str, _>("state")? {
            "open" => ListingState::Open,
            "sold" => ListingState::Sold,
            "withdrawn" => ListingState::Withdrawn,
            other => return Err(decode_err(format!("bad listing state {other}"))),
        },
        buyer: match row.try_get::<Option<&str>, _>("buyer")? {
            Some(text) => Some(text.parse().map_err(decode_err)?),
            None => None,
        },
        created_at_ms: row.try_get("created_at_ms")?,
        closed_at_ms: row.try_get("closed_at_ms")?,
    })
}

fn hex(address: Address) -> String {
    format!("{address:#x}")
}

/// A fresh random id (32 hex digits).
pub fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn transfer(
    id: String,
    debit: AccountRef,
    credit: AccountRef,
    amount: Amount,
    kind: TransferKind,
) -> Transfer {
    Transfer {
        id,
        debit,
        credit,
        asset: Address::ZERO,
        amount,
        kind,
        channel: None,
    }
}

fn available(owner: Address) -> AccountRef {
    AccountRef::Available {
        owner,
        asset: Address::ZERO,
    }
}

impl Store {
    /// Creates an event with its stream, in one transaction.
    pub async fn insert_event(
        &self,
        stream: &crate::model::StreamRecord,
        event: &EventRecord,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        self.insert_stream_in(&mut tx, stream).await?;
        sqlx::query(
            "INSERT INTO events (id, stream_id, creator, title, description, category, starts_at_ms, \
             duration_seconds, ticket_price, ticket_supply, per_wallet, sale_ends_at_ms, resale_max_bps, \
             royalty_bps, state, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&event.id)
        .bind(&event.stream_id)
        .bind(hex(event.creator))
        .bind(&event.title)
        .bind(&event.description)
        .bind(&event.category)
        .bind(event.starts_at_ms)
        .bind(to_i64(event.duration_seconds))
        .bind(event.ticket_price.to_string())
        .bind(to_i64(event.ticket_supply))
        .bind(to_i64(event.per_wallet))
        .bind(event.sale_ends_at_ms)
        .bind(i64::from(event.resale_max_bps))
        .bind(i64::from(event.royalty_bps))
        .bind(event.state.as_str())
        .bind(event.created_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Saves what `PATCH /api/v1/events/{id}` may change, while the event
    /// is still scheduled and its supply covers what was sold. Answers
    /// whether it was saved.
    pub async fn update_event(&self, event: &EventRecord) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE events SET title = $1, description = $2, category = $3, starts_at_ms = $4, \
             duration_seconds = $5, ticket_price = $6, ticket_supply = $7, per_wallet = $8, \
             sale_ends_at_ms = $9, resale_max_bps = $10 \
             WHERE id = $11 AND state = 'scheduled' AND tickets_sold <= $7",
        )
        .bind(&event.title)
        .bind(&event.description)
        .bind(&event.category)
        .bind(event.starts_at_ms)
        .bind(to_i64(event.duration_seconds))
        .bind(event.ticket_price.to_string())
        .bind(to_i64(event.ticket_supply))
        .bind(to_i64(event.per_wallet))
        .bind(event.sale_ends_at_ms)
        .bind(i64::from(event.resale_max_bps))
        .bind(&event.id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("UPDATE streams SET title = $1, description = $2, category = $3 WHERE id = $4")
            .bind(&event.title)
            .bind(&event.description)
            .bind(&event.category)
            .bind(&event.stream_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn event(&self, id: &str) -> Result<Option<EventRecord>, sqlx::Error> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
        row_by(&self.pool, sql, id, event_row).await
    }

    /// The event whose room `stream_id` is.
    pub async fn event_of_stream(
        &self,
        stream_id: &str,
    ) -> Result<Option<EventRecord>, sqlx::Error> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1");
        row_by(&self.pool, sql, stream_id, event_row).await
    }

    /// Events by start (soonest first), optionally in one state.
    pub async fn events(
        &self,
        state: Option<EventState>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, sqlx::Error> {
        let mut select = Statement::new(&format!("SELECT {EVENT_COLUMNS} FROM events"));
        if let Some(state) = state {
            select.push(" WHERE state = ").bind(state.as_str());
        }
        select.push(" ORDER BY starts_at_ms, id LIMIT ").bind(limit);
        select
            .query()?
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event_row)
            .collect()
    }

    /// Events due for automatic finalization: ended before `ended_before_ms`,
    /// or never gone live and scheduled to end before it.
    pub async fn events_due(&self, ended_before_ms: i64) -> Result<Vec<EventRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE (state = 'ended' AND ended_at_ms <= $1) \
             OR (state = 'scheduled' AND starts_at_ms + duration_seconds * 1000 <= $1) \
             ORDER BY starts_at_ms LIMIT 100"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ended_before_ms)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event_row)
            .collect()
    }

    /// The live media time of a stream: the longest rendition's segments.
    pub async fn live_media_ms(&self, stream_id: &str) -> Result<u64, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT) AS total FROM segments \
             WHERE stream_id = $1 GROUP BY rendition",
        )
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await?;
        let mut longest = 0;
        for row in &rows {
            longest = longest.max(get_u64(row, "total")?);
        }
        Ok(longest)
    }

    /// Buys tickets: supply, the sale's end and the per-wallet limit are
    /// checked under the event's lock, tickets are inserted and paid for in
    /// one transaction. A repeated purchase id answers the same tickets.
    pub async fn buy_tickets(
        &self,
        purchase: &TicketPurchase,
    ) -> Result<Result<Vec<TicketRecord>, CommerceRefusal>, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin_read_then_write())
            .await?;
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE purchase_id = $1 ORDER BY created_at_ms, id"
        );
        let earlier: Vec<TicketRecord> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&purchase.purchase_id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(ticket_row)
            .collect::<Result<_, _>>()?;
        if !earlier.is_empty() {
            let same = earlier.len() as u64 == purchase.quantity
                && earlier.iter().all(|t| t.event_id == purchase.event_id);
            return Ok(if same {
                Ok(earlier)
            } else {
                Err(CommerceRefusal::KeyReused)
            });
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id = $1{}",
            self.dialect.lock_rows()
        );
        let Some(event) = row_by(&mut *tx, sql, &purchase.event_id, event_row).await? else {
            return Ok(Err(CommerceRefusal::NoSuchEvent));
        };
        if !matches!(event.state, EventState::Scheduled | EventState::Live) {
            return Ok(Err(CommerceRefusal::EventState(event.state)));
        }
        if purchase.now_ms >= event.sale_ends_at_ms {
            return Ok(Err(CommerceRefusal::SaleOver));
        }
        let left = event.ticket_supply.saturating_sub(event.tickets_sold);
        if purchase.quantity > left {
            return Ok(Err(CommerceRefusal::SoldOut { left }));
        }
        let held =
            sqlx::query("SELECT COUNT(*) AS held FROM tickets WHERE event_id = $1 AND buyer = $2")
                .bind(&event.id)
                .bind(hex(purchase.buyer))
                .fetch_one(&mut *tx)
                .await?;
        let held = get_u64(&held, "held")?;
        if held.saturating_add(purchase.quantity) > event.per_wallet {
            return Ok(Err(CommerceRefusal::WalletLimit {
                per_wallet: event.per_wallet,
                held,
            }));
        }
        let total = u128::from(purchase.quantity)
            .checked_mul(event.ticket_price.0)
            .map(Amount)
            .ok_or(CommerceRefusal::Ledger(Refusal::Overflow(format!(
                "tickets of {}",
                event.id
            ))));
        let total = match total {
            Ok(total) => total,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let mut tickets = Vec::new();
        for _ in 0..purchase.quantity {
            let ticket = TicketRecord {
                id: random_id(),
                event_id: event.id.clone(),
                buyer: purchase.buyer,
                owner: purchase.buyer,
                price_paid: event.ticket_price,
                face_price: event.ticket_price,
                refunded: Amount(0),
                created_at_ms: purchase.now_ms,
            };
            sqlx::query(
                "INSERT INTO tickets (id, event_id, purchase_id, buyer, owner, price_paid, face_price, \
                 refunded, created_at_ms) VALUES ($1, $2, $3, $4, $4, $5, $5, '0', $6)",
            )
            .bind(&ticket.id)
            .bind(&ticket.event_id)
            .bind(&purchase.purchase_id)
            .bind(hex(ticket.buyer))
            .bind(ticket.price_paid.to_string())
            .bind(ticket.created_at_ms)
            .execute(&mut *tx)
            .await?;
            tickets.push(ticket);
        }
        sqlx::query("UPDATE events SET tickets_sold = tickets_sold + $1 WHERE id = $2")
            .bind(to_i64(purchase.quantity))
            .bind(&event.id)
            .execute(&mut *tx)
            .await?;
        let batch = LedgerBatch {
            transfers: vec![transfer(
                format!("ticket:{}", purchase.purchase_id),
                available(purchase.buyer),
                event.account()?,
                total,
                TransferKind::TicketSale,
            )],
            channels: Vec::new(),
            ..Default::default()
        };
        if let Err(refusal) = apply_batch(&mut tx, self.dialect, &batch, purchase.now_ms).await? {
            return Ok(Err(refusal.into()));
        }
        tx.commit().await?;
        // In the order a repeated purchase reads them back.
        tickets.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Ok(tickets))
    }

    pub async fn ticket(&self, id: &str) -> Result<Option<TicketRecord>, sqlx::Error> {
        let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1");
        row_by(&self.pool, sql, id, ticket_row).await
    }

    /// Tickets held by `owner`, newest first.
    pub async fn tickets_of(&self, owner: Address) -> Result<Vec<TicketRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE owner = $1 ORDER BY created_at_ms DESC, id LIMIT 1000"
        );
        rows_by(&self.pool, sql, &hex(owner), ticket_row).await
    }

    /// Every ticket of an event, in purchase order.
    pub async fn event_tickets(&self, event_id: &str) -> Result<Vec<TicketRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE event_id = $1 ORDER BY created_at_ms, id"
        );
        rows_by(&self.pool, sql, event_id, ticket_row).await
    }

    /// A ticket of `owner`'s for the event that was not refunded.
    pub async fn valid_ticket(
        &self,
        event_id: &str,
        owner: Address,
    ) -> Result<Option<TicketRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE event_id = $1 AND owner = $2 AND refunded = '0' \
             ORDER BY created_at_ms, id LIMIT 1"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(event_id)
            .bind(hex(owner))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(ticket_row)
            .transpose()
    }

    /// Cancels an event that is not closed: every ticket refunded its
    /// `price_paid` to its holder, open listings of its tickets withdrawn.
    pub async fn cancel_event(
        &self,
        event_id: &str,
        now_ms: i64,
    ) -> Result<Result<(), CommerceRefusal>, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin_read_then_write())
            .await?;
        let Some(event) = locked_event(&mut tx, self.dialect, event_id).await? else {
            return Ok(Err(CommerceRefusal::NoSuchEvent));
        };
        if event.state.is_closed() {
            return Ok(Err(CommerceRefusal::EventState(event.state)));
        }
        let account = event.account()?;
        let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE event_id = $1 ORDER BY id");
        let tickets: Vec<TicketRecord> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(event_id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(ticket_row)
            .collect::<Result<_, _>>()?;
        let mut batch = LedgerBatch::default();
        for ticket in tickets.iter().filter(|t| t.refunded.is_zero()) {
            batch.transfers.push(transfer(
                format!("event:{event_id}:refund:{}", ticket.id),
                account,
                available(ticket.owner),
                ticket.price_paid,
                TransferKind::TicketRefund,
            ));
        }
        sqlx::query("UPDATE tickets SET refunded = price_paid WHERE event_id = $1")
            .bind(event_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE events SET state = 'cancelled', closed_at_ms = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(event_id)
            .execute(&mut *tx)
            .await?;
        withdraw_event_listings(&mut tx, event_id, now_ms).await?;
        if let Err(refusal) = apply_batch(&mut tx, self.dialect, &batch, now_ms).await? {
            return Ok(Err(refusal.into()));
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Finalizes an event as computed by the caller: refunds, the release,
    /// the frozen leaderboard and the collectible, all or nothing.
    pub async fn finalize_event(
        &self,
        finalization: &Finalization,
    ) -> Result<Result<(), CommerceRefusal>, sqlx::Error> {
        let f = finalization;
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin_read_then_write())
            .await?;
        let Some(event) = locked_event(&mut tx, self.dialect, &f.event_id).await? else {
            return Ok(Err(CommerceRefusal::NoSuchEvent));
        };
        if event.state != f.expected_state || event.tickets_sold != f.expected_tickets_sold {
            return Ok(Err(if event.state.is_closed() {
                CommerceRefusal::EventState(event.state)
            } else {
                CommerceRefusal::Changed
            }));
        }
        let account = event.account()?;
        let mut batch = LedgerBatch {
            transfers: f.release.clone(),
            channels: Vec::new(),
            ..Default::default()
        };
        for (ticket_id, refund) in &f.refunds {
            let row = sqlx::query("SELECT owner FROM tickets WHERE id = $1 AND event_id = $2")
                .bind(ticket_id)
                .bind(&f.event_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Ok(Err(CommerceRefusal::Changed));
            };
            if refund.is_zero() {
                continue;
            }
            let owner: Address = get_parsed(&row, "owner")?;
            sqlx::query("UPDATE tickets SET refunded = $1 WHERE id = $2")
                .bind(refund.to_string())
                .bind(ticket_id)
                .execute(&mut *tx)
                .await?;
            batch.transfers.push(transfer(
                format!("event:{}:refund:{ticket_id}", f.event_id),
                account,
                available(owner),
                *refund,
                TransferKind::TicketRefund,
            ));
        }
        sqlx::query(
            "UPDATE events SET state = 'finalized', closed_at_ms = $1, delivered_ms = $2, \
             released = $3, leaderboard = $4 WHERE id = $5",
        )
        .bind(f.now_ms)
        .bind(to_i64(f.delivered_ms))
        .bind(f.released.to_string())
        .bind(&f.leaderboard_json)
        .bind(&f.event_id)
        .execute(&mut *tx)
        .await?;
        let c = &f.collectible;
        sqlx::query(
            "INSERT INTO collectibles (id, event_id, creator, owner, royalty_bps, archive_root_cid, \
             metadata_cid, minted_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.id)
        .bind(&c.event_id)
        .bind(hex(c.creator))
        .bind(hex(c.owner))
        .bind(i64::from(c.royalty_bps))
        .bind(&c.archive_root_cid)
        .bind(&c.metadata_cid)
        .bind(c.minted_at_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO collectible_owners (collectible_id, seq, owner, since_ms, price) \
             VALUES ($1, 0, $2, $3, NULL)",
        )
        .bind(&c.id)
        .bind(hex(c.owner))
        .bind(c.minted_at_ms)
        .execute(&mut *tx)
        .await?;
        withdraw_event_listings(&mut tx, &f.event_id, f.now_ms).await?;
        if let Err(refusal) = apply_batch(&mut tx, self.dialect, &batch, f.now_ms).await? {
            return Ok(Err(refusal.into()));
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Records a tip on the leaderboard of the event whose room
    /// `stream_id` is, if that event is live (once per tip id). Answers the
    /// event's id when recorded.
    pub async fn record_event_tip(
        &self,
        tip_id: &str,
        stream_id: &str,
        tip: &EventTipRecord,
    ) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO event_tips (tip_id, event_id, tipper, amount, at_ms) \
             SELECT $1, id, $2, $3, $4 FROM events WHERE stream_id = $5 AND state = 'live' \
             ON CONFLICT (tip_id) DO NOTHING RETURNING event_id",
        )
        .bind(tip_id)
        .bind(hex(tip.tipper))
        .bind(tip.amount.to_string())
        .bind(tip.at_ms)
        .bind(stream_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| row.try_get("event_id")).transpose()
    }

    /// Every tip on an event's leaderboard, in time order.
    pub async fn event_tips(&self, event_id: &str) -> Result<Vec<EventTipRecord>, sqlx::Error> {
        sqlx::query(
            "SELECT tipper, amount, at_ms FROM event_tips WHERE event_id = $1 ORDER BY at_ms, tip_id",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(EventTipRecord {
                tipper: get_parsed(row, "tipper")?,
                amount: get_parsed(row, "amount")?,
                at_ms: row.try_get("at_ms")?,
            })
        })
        .collect()
    }

    pub async fn collectible(&self, id: &str) -> Result<Option<CollectibleRecord>, sqlx::Error> {
        let sql = format!("SELECT {COLLECTIBLE_COLUMNS} FROM collectibles WHERE id = $1");
        row_by(&self.pool, sql, id, collectible_row).await
    }

    pub async fn collectible_of_event(
        &self,
        event_id: &str,
    ) -> Result<Option<CollectibleRecord>, sqlx::Error> {
        let sql = format!("SELECT {COLLECTIBLE_COLUMNS} FROM collectibles WHERE event_id = $1");
        row_by(&self.pool, sql, event_id, collectible_row).await
    }

    pub async fn collectibles_of(
        &self,
        owner: Address,
    ) -> Result<Vec<CollectibleRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLLECTIBLE_COLUMNS} FROM collectibles WHERE owner = $1 ORDER BY minted_at_ms DESC LIMIT 1000"
        );
        rows_by(&self.pool, sql, &hex(owner), collectible_row).await
    }

    /// A collectible's owners, first (minted) to current.
    pub async fn collectible_history(&self, id: &str) -> Result<Vec<OwnerEntry>, sqlx::Error> {
        sqlx::query(
            "SELECT owner, since_ms, price FROM collectible_owners WHERE collectible_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(OwnerEntry {
                owner: get_parsed(row, "owner")?,
                since_ms: row.try_get("since_ms")?,
                price: match row.try_get::<Option<&str>, _>("price")? {
                    Some(text) => Some(text.parse().map_err(decode_err)?),
                    None => None,
                },
            })
        })
        .collect()
    }

    /// Opens a listing; `false` when the item already has an open one.
    pub async fn insert_listing(&self, listing: &ListingRecord) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO listings (id, kind, item_id, event_id, seller, price, state, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 'open', $7) ON CONFLICT DO NOTHING",
        )
        .bind(&listing.id)
        .bind(listing.kind.as_str())
        .bind(&listing.item_id)
        .bind(&listing.event_id)
        .bind(hex(listing.seller))
        .bind(listing.price.to_string())
        .bind(listing.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn listing(&self, id: &str) -> Result<Option<ListingRecord>, sqlx::Error> {
        let sql = format!("SELECT {LISTING_COLUMNS} FROM listings WHERE id = $1");
        row_by(&self.pool, sql, id, listing_row).await
    }

    /// Listings, newest first.
    pub async fn listings(
        &self,
        filter: &ListingFilter,
        limit: i64,
    ) -> Result<Vec<ListingRecord>, sqlx::Error> {
        let mut select = Statement::new(&format!(
            "SELECT {LISTING_COLUMNS} FROM listings WHERE 1 = 1"
        ));
        if let Some(kind) = filter.kind {
            select.push(" AND kind = ").bind(kind.as_str());
        }
        if let Some(event) = &filter.event_id {
            select.push(" AND event_id = ").bind(event.clone());
        }
        if let Some(seller) = filter.seller {
            select.push(" AND seller = ").bind(hex(seller));
        }
        if let Some(state) = filter.state {
            select.push(" AND state = ").bind(state.as_str());
        }
        select
            .push(" ORDER BY created_at_ms DESC, id LIMIT ")
            .bind(limit);
        select
            .query()?
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(listing_row)
            .collect()
    }

    /// Withdraws an open listing of `seller`'s; `false` if there is none.
    pub async fn withdraw_listing(
        &self,
        id: &str,
        seller: Address,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE listings SET state = 'withdrawn', closed_at_ms = $1 \
             WHERE id = $2 AND seller = $3 AND state = 'open'",
        )
        .bind(now_ms)
        .bind(id)
        .bind(hex(seller))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Buys a listing: the item changes hands and the price moves (to the
    /// seller, the platform's fee, the creator's royalty) in one
    /// transaction. The same buyer asking again for a listing they bought
    /// gets `Ok` (a retry).
    pub async fn buy_listing(
        &self,
        sale: &Sale,
    ) -> Result<Result<ListingRecord, CommerceRefusal>, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin_read_then_write())
            .await?;
        // A ticket's event is locked first, as finalization and
        // cancellation lock it before its tickets and listings: one order,
        // no deadlock.
        let ticket_event =
            sqlx::query("SELECT event_id FROM listings WHERE id = $1 AND kind = 'ticket'")
                .bind(&sale.listing_id)
                .fetch_optional(&mut *tx)
                .await?;
        let event = match ticket_event {
            Some(row) => {
                let event_id: String = row.try_get("event_id")?;
                locked_event(&mut tx, self.dialect, &event_id).await?
            }
            None => None,
        };
        let sql = format!(
            "SELECT {LISTING_COLUMNS} FROM listings WHERE id = $1{}",
            self.dialect.lock_rows()
        );
        let Some(listing) = row_by(&mut *tx, sql, &sale.listing_id, listing_row).await? else {
            return Ok(Err(CommerceRefusal::NoSuchListing));
        };
        if listing.state == ListingState::Sold && listing.buyer == Some(sale.buyer) {
            return Ok(Ok(listing));
        }
        if listing.state != ListingState::Open {
            return Ok(Err(CommerceRefusal::ListingClosed));
        }
        if listing.seller == sale.buyer {
            return Ok(Err(CommerceRefusal::OwnListing));
        }
        let (table, columns) = match listing.kind {
            ItemKind::Ticket => ("tickets", "owner, refunded"),
            ItemKind::Collectible => ("collectibles", "owner, creator"),
        };
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE id = $1{}",
            self.dialect.lock_rows()
        );
        let item = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&listing.item_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(item) = item else {
            return Ok(Err(CommerceRefusal::NotOwner));
        };
        let owner: Address = get_parsed(&item, "owner")?;
        if owner != listing.seller {
            return Ok(Err(CommerceRefusal::NotOwner));
        }
        if listing.kind == ItemKind::Ticket {
            let refunded: Amount = get_parsed(&item, "refunded")?;
            let open = event
                .is_some_and(|e| e.state == EventState::Scheduled && sale.now_ms < e.starts_at_ms);
            if !open || !refunded.is_zero() {
                return Ok(Err(CommerceRefusal::TicketResaleOver));
            }
        }
        let mut transfers = Vec::new();
        let prefix = format!("sale:{}", listing.id);
        let from = available(sale.buyer);
        if !sale.seller_part.is_zero() {
            transfers.push(transfer(
                format!("{prefix}:seller"),
                from,
                available(listing.seller),
                sale.seller_part,
                TransferKind::MarketSale,
            ));
        }
        if !sale.fee.is_zero() {
            transfers.push(transfer(
                format!("{prefix}:fee"),
                from,
                AccountRef::Platform {
                    asset: Address::ZERO,
                },
                sale.fee,
                TransferKind::MarketSale,
            ));
        }
        if !sale.royalty.is_zero() {
            let creator: Address = get_parsed(&item, "creator")?;
            transfers.push(transfer(
                format!("{prefix}:royalty"),
                from,
                AccountRef::Revenue {
                    owner: creator,
                    asset: Address::ZERO,
                },
                sale.royalty,
                TransferKind::MarketSale,
            ));
        }
        let sql = format!("UPDATE {table} SET owner = $1 WHERE id = $2");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(hex(sale.buyer))
            .bind(&listing.item_id)
            .execute(&mut *tx)
            .await?;
        if listing.kind == ItemKind::Collectible {
            sqlx::query(
                "INSERT INTO collectible_owners (collectible_id, seq, owner, since_ms, price) \
                 SELECT $1, COALESCE(MAX(seq), -1) + 1, $2, $3, $4 FROM collectible_owners \
                 WHERE collectible_id = $1",
            )
            .bind(&listing.item_id)
            .bind(hex(sale.buyer))
            .bind(sale.now_ms)
            .bind(listing.price.to_string())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE listings SET state = 'sold', buyer = $1, closed_at_ms = $2 WHERE id = $3",
        )
        .bind(hex(sale.buyer))
        .bind(sale.now_ms)
        .bind(&listing.id)
        .execute(&mut *tx)
        .await?;
        let batch = LedgerBatch {
            transfers,
            channels: Vec::new(),
            ..Default::default()
        };
        if let Err(refusal) = apply_batch(&mut tx, self.dialect, &batch, sale.now_ms).await? {
            return Ok(Err(refusal.into()));
        }
        tx.commit().await?;
        Ok(Ok(ListingRecord {
            state: ListingState::Sold,
            buyer: Some(sale.buyer),
            closed_at_ms: Some(sale.now_ms),
            ..listing
        }))
    }

    /// What the audit checks of events and collectibles: each event's
    /// account holds sold - refunded - released; each collectible has
    /// exactly one owner, the last of its history. Answers the violations.
    pub async fn audit_events(&self) -> Result<Vec<String>, sqlx::Error> {
        let mut violations = Vec::new();
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY id");
        let events: Vec<EventRecord> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event_row)
            .collect::<Result<_, _>>()?;
        for event in &events {
            let tickets = self.event_tickets(&event.id).await?;
            // sold - refunded - released, exactly over the amount range.
            let mut expected = Some(Balance::ZERO);
            for ticket in &tickets {
                if ticket.refunded > ticket.price_paid {
                    violations.push(format!("ticket {}: refunded more than paid", ticket.id));
                }
                expected = expected
                    .and_then(|e| e.credit(ticket.price_paid))
                    .and_then(|e| e.debit(ticket.refunded));
            }
            let Some(expected) = expected.and_then(|e| e.debit(event.released)) else {
                violations.push(format!("event {}: its sums overflow", event.id));
                continue;
            };
            if tickets.len() as u64 != event.tickets_sold {
                violations.push(format!(
                    "event {}: {} tickets but {} sold",
                    event.id,
                    tickets.len(),
                    event.tickets_sold
                ));
            }
            let held = self.balance(&event.account()?).await?;
            if held != expected {
                violations.push(format!(
                    "event {}: its account holds {held} but sold - refunded - released is {expected}",
                    event.id
                ));
            }
        }
        let sql = format!("SELECT {COLLECTIBLE_COLUMNS} FROM collectibles ORDER BY id");
        let collectibles: Vec<CollectibleRecord> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(collectible_row)
            .collect::<Result<_, _>>()?;
        for collectible in &collectibles {
            let history = self.collectible_history(&collectible.id).await?;
            match history.last() {
                Some(last) if last.owner == collectible.owner => {}
                _ => violations.push(format!(
                    "collectible {}: its owner is not the last of its history",
                    collectible.id
                )),
            }
        }
        let duplicated =
            sqlx::query("SELECT event_id FROM collectibles GROUP BY event_id HAVING COUNT(*) > 1")
                .fetch_all(&self.pool)
                .await?;
        for row in &duplicated {
            violations.push(format!(
                "event {}: more than one collectible",
                row.try_get::<String, _>("event_id")?
            ));
        }
        Ok(violations)
    }
}

async fn locked_event(
    tx: &mut sqlx::AnyConnection,
    dialect: super::Dialect,
    id: &str,
) -> Result<Option<EventRecord>, sqlx::Error> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE id = $1{}",
        dialect.lock_rows()
    );
    row_by(&mut *tx, sql, id, event_row).await
}

async fn withdraw_event_listings(
    tx: &mut sqlx::AnyConnection,
    event_id: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE listings SET state = 'withdrawn', closed_at_ms = $1 \
         WHERE event_id = $2 AND kind = 'ticket' AND state = 'open'",
    )
    .bind(now_ms)
    .bind(event_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
