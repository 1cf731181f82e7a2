//! The ledger: transfers are inserted once (their ids make retries
//! idempotent), balances move in the same transaction and never leave their
//! range (only the outside world's may go below zero, none beyond
//! ±(2^128-1): checked here and by each schema), channels are saved whole.

use std::collections::{HashMap, HashSet};

use sqlx::Row;
use sqlx::any::AnyRow;
use streamweave_ledger::{AccountRef, Address, Amount, B256, Balance, Channel, Transfer};

use super::{Dialect, Statement, Store, decode_err, get_parsed};

/// One operation's writes: all of them or none.
#[derive(Debug, Clone, Default)]
pub struct LedgerBatch {
    pub transfers: Vec<Transfer>,
    pub channels: Vec<ChannelWrite>,
    /// Vouchers accepted whose step is kept in the journal, not yet in
    /// their channel's row (appended after the batch's other writes).
    pub journal: Vec<JournalEntry>,
    /// Deletes the journal's rows below this sequence number before the
    /// batch's other writes: the batch folds every step they hold that is
    /// not folded yet (rows at or above it stay, folded or not).
    pub journal_folded_below: Option<i64>,
}

/// A voucher accepted and durable whose ledger step is not yet folded into
/// its channel's row, balances and transfers (the engine folds them; see
/// `money::payments`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Its place in the journal, given by the engine: increasing in the
    /// order vouchers were accepted.
    pub seq: i64,
    pub channel: B256,
    pub amount: Amount,
    /// The voucher's canonical signature bytes.
    pub signature: [u8; 65],
    pub accepted_at_ms: i64,
}

/// A channel's new state and the revision it was built on (`None`: a new
/// channel). The write happens only if the stored revision is still that
/// one, so nodes sharing a database never build on a replaced state.
#[derive(Debug, Clone)]
pub struct ChannelWrite {
    pub base_revision: Option<u64>,
    pub channel: Channel,
    /// A voucher's step written to the row alone, its transfers deferred
    /// (PostgreSQL shared by several nodes; see [`Store::fold_deferred`]).
    /// `None`: the batch carries the write's transfers, and the row must
    /// have no deferred step left.
    pub deferred: Option<DeferredStep>,
}

impl ChannelWrite {
    /// A write whose transfers are in its batch.
    pub fn new(base_revision: Option<u64>, channel: Channel) -> ChannelWrite {
        ChannelWrite {
            base_revision,
            channel,
            deferred: None,
        }
    }
}

/// A voucher step whose transfers wait in its channel's row: the row keeps
/// the redeemed amount its transfers reach (`folded_redeemed`) and when its
/// first and latest waiting steps were accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferredStep {
    /// The redeemed amount of the state the write was built on.
    pub base_redeemed: Amount,
    pub accepted_at_ms: i64,
    /// Where the pool round of `accepted_at_ms` began: a row whose waiting
    /// steps began before it is not written (folded first), so that one
    /// fold never spans two rounds.
    pub round_start_ms: i64,
}

/// Why a batch was refused (the rest of a group commit goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("insufficient balance in {0}")]
    Insufficient(String),
    #[error("the balance of {0} would exceed the amount range (2^128-1 base units)")]
    Overflow(String),
    /// A transfer id already used for a different transfer: the request
    /// reused an idempotency key with another body.
    #[error("the id {0} was already used for a different request")]
    IdempotencyConflict(String),
    /// The channel's stored state is not the one the batch was built on
    /// (another node committed first): reload and plan again.
    #[error("the channel {0:#x} changed meanwhile")]
    ChannelChanged(B256),
}

/// A stored transfer with its position and time.
#[derive(Debug, Clone)]
pub struct StoredTransfer {
    pub seq: i64,
    pub transfer: Transfer,
    pub created_at_ms: i64,
}

/// Rows per multi-row INSERT (SQLite allows 32766 bound values; 9 per row).
const INSERT_CHUNK_ROWS: usize = 1000;

pub(super) fn account_columns(account: &AccountRef) -> (&'static str, Option<String>, String) {
    match account {
        AccountRef::Available { owner, asset } => (
            "available",
            Some(format!("{owner:#x}")),
            format!("{asset:#x}"),
        ),
        AccountRef::Revenue { owner, asset } => (
            "revenue",
            Some(format!("{owner:#x}")),
            format!("{asset:#x}"),
        ),
        AccountRef::Escrow { channel } => ("escrow", None, format!("{channel:#x}")),
        AccountRef::Clearing { channel } => ("clearing", None, format!("{channel:#x}")),
        AccountRef::Platform { asset } => ("platform", None, format!("{asset:#x}")),
        AccountRef::Event { asset, .. } => ("event", None, format!("{asset:#x}")),
        AccountRef::Pool { asset } => ("pool", None, format!("{asset:#x}")),
        AccountRef::World { asset } => ("world", None, format!("{asset:#x}")),
    }
}

/// A channel's body with the revision its row holds (bodies stored before
/// revisions existed have none).
pub(super) fn channel_row(row: &AnyRow) -> Result<Channel, sqlx::Error> {
    let mut channel: Channel = json_body(row)?;
    channel.revision = u64::try_from(row.try_get::<i64, _>("revision")?).map_err(decode_err)?;
    Ok(channel)
}

fn json_body<T: serde::de::DeserializeOwned>(row: &AnyRow) -> Result<T, sqlx::Error> {
    serde_json::from_str(row.try_get::<&str, _>("body")?).map_err(decode_err)
}

impl Store {
    /// Commits a group of batches in one transaction (one durable commit).
    /// Each batch is all-or-nothing: a refused batch is rolled back (with
    /// the transaction when it was alone or taken with the others at once,
    /// else to its savepoint) and reported; the others commit.
    pub async fn commit(
        &self,
        batches: &[LedgerBatch],
        now_ms: i64,
    ) -> Result<Vec<Result<(), Refusal>>, sqlx::Error> {
        if let Some(writer) = &self.sqlite_ledger {
            return writer.commit(batches, now_ms).await;
        }
        // Vouchers kept in the journal, alone: one statement, atomic and
        // durable by itself, without a transaction's two more round trips.
        let journaled: Vec<&JournalEntry> = batches.iter().flat_map(|b| &b.journal).collect();
        if !journaled.is_empty()
            && journaled.len() <= INSERT_CHUNK_ROWS
            && batches.iter().all(|b| {
                b.transfers.is_empty() && b.channels.is_empty() && b.journal_folded_below.is_none()
            })
        {
            journal_append(&journaled)
                .query()?
                .execute(&self.pool)
                .await?;
            return Ok(vec![Ok(()); batches.len()]);
        }
        // Vouchers whose steps wait in their rows, alone: one statement
        // writing every row over its revision, atomic and durable by
        // itself; a batch whose row moved on meanwhile is refused alone.
        if batches.iter().all(|b| {
            b.transfers.is_empty()
                && b.journal.is_empty()
                && b.journal_folded_below.is_none()
                && !b.channels.is_empty()
                && b.channels
                    .iter()
                    .all(|w| w.deferred.is_some() && w.base_revision.is_some())
        }) {
            let states = last_states(batches.iter().flat_map(|b| &b.channels))?;
            let mut written = HashSet::with_capacity(states.len());
            for chunk in states.chunks(INSERT_CHUNK_ROWS) {
                for row in channel_update(chunk, now_ms)?
                    .query()?
                    .fetch_all(&self.pool)
                    .await?
                {
                    written.insert(row.try_get::<String, _>("id")?);
                }
            }
            return Ok(batches
                .iter()
                .map(|b| {
                    match b
                        .channels
                        .iter()
                        .find(|w| !written.contains(&format!("{:#x}", w.channel.id)))
                    {
                        Some(moved) => Err(Refusal::ChannelChanged(moved.channel.id)),
                        None => Ok(()),
                    }
                })
                .collect());
        }
        let mut tx = self.pool.begin().await?;
        // The common case (vouchers, settlements, deposits): the whole group
        // in one go, when no batch can depend on another's order, and
        // without a savepoint (two round trips of a commit that waits for
        // each): a refusal rolls the transaction back and starts again.
        if batches.len() == 1 || (batches.len() > 1 && order_independent(batches)) {
            let merged;
            let whole = match batches {
                [only] => only,
                _ => {
                    merged = merge(batches);
                    &merged
                }
            };
            match apply_batch(&mut tx, self.dialect, whole, now_ms).await? {
                Ok(()) => {
                    tx.commit().await?;
                    return Ok(vec![Ok(()); batches.len()]);
                }
                Err(refusal) if batches.len() == 1 => {
                    tx.rollback().await?;
                    return Ok(vec![Err(refusal)]);
                }
                Err(_) => {
                    tx.rollback().await?;
                    tx = self.pool.begin().await?;
                }
            }
        }
        // Something was refused: each batch on its own, so the others still commit.
        let mut results = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut savepoint = sqlx::Acquire::begin(&mut *tx).await?;
            match apply_batch(&mut savepoint, self.dialect, batch, now_ms).await? {
                Ok(()) => {
                    savepoint.commit().await?;
                    results.push(Ok(()));
                }
                Err(refusal) => {
                    savepoint.rollback().await?;
                    results.push(Err(refusal));
                }
            }
        }
        tx.commit().await?;
        Ok(results)
    }

    /// Every channel, oldest first.
    pub async fn channels(&self) -> Result<Vec<Channel>, sqlx::Error> {
        let rows = sqlx::query("SELECT body, revision FROM channels ORDER BY created_at_ms, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(channel_row).collect()
    }

    /// Channels as stored now, those of `ids` that exist.
    pub async fn channels_by_id(&self, ids: &[B256]) -> Result<Vec<Channel>, sqlx::Error> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK_ROWS) {
            let mut select = Statement::new("SELECT body, revision FROM channels WHERE id IN (");
            for (index, id) in chunk.iter().enumerate() {
                if index > 0 {
                    select.push(", ");
                }
                select.bind(format!("{id:#x}"));
            }
            select.push(")");
            for row in select.query()?.fetch_all(&self.pool).await? {
                found.push(channel_row(&row)?);
            }
        }
        Ok(found)
    }

    /// One channel as stored now (another node may have changed it).
    pub async fn channel(&self, id: &B256) -> Result<Option<Channel>, sqlx::Error> {
        sqlx::query("SELECT body, revision FROM channels WHERE id = $1")
            .bind(format!("{id:#x}"))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(channel_row)
            .transpose()
    }

    /// The voucher journal in the order it was written: vouchers accepted
    /// whose steps are not folded into their channels' rows yet.
    pub async fn voucher_journal(&self) -> Result<Vec<JournalEntry>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT seq, channel, amount, signature, accepted_at_ms FROM voucher_journal ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(JournalEntry {
                    seq: row.try_get("seq")?,
                    channel: get_parsed(row, "channel")?,
                    amount: get_parsed(row, "amount")?,
                    signature: row.try_get::<Vec<u8>, _>("signature")?.try_into().map_err(
                        |_| sqlx::Error::Decode("a journal signature is not 65 bytes".into()),
                    )?,
                    accepted_at_ms: row.try_get("accepted_at_ms")?,
                })
            })
            .collect()
    }

    /// Every transfer in commit order (for the audit).
    pub async fn all_transfers(&self) -> Result<Vec<Transfer>, sqlx::Error> {
        let rows = sqlx::query("SELECT body FROM ledger_transfers ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(json_body).collect()
    }

    /// Cached balances by account key (the audit re-derives and compares them).
    pub async fn stored_balances(&self) -> Result<Vec<(String, Balance)>, sqlx::Error> {
        let rows = sqlx::query("SELECT key, CAST(balance AS TEXT) AS balance FROM ledger_accounts")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("key")?, get_parsed(row, "balance")?)))
            .collect()
    }

    /// An account's balance (zero if it never moved).
    pub async fn balance(&self, account: &AccountRef) -> Result<Balance, sqlx::Error> {
        let row = sqlx::query(
            "SELECT CAST(balance AS TEXT) AS balance FROM ledger_accounts WHERE key = $1",
        )
        .bind(account.key())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => get_parsed(&row, "balance"),
            None => Ok(Balance::ZERO),
        }
    }

    /// Transfers touching an owner's accounts, newest first, before `before_seq`.
    pub async fn transfers_of(
        &self,
        owner: Address,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredTransfer>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT t.seq, t.body, t.created_at_ms FROM ledger_transfers t \
             WHERE (t.debit IN (SELECT key FROM ledger_accounts WHERE owner = $1) \
                OR t.credit IN (SELECT key FROM ledger_accounts WHERE owner = $1)) \
               AND t.seq < $2 ORDER BY t.seq DESC LIMIT $3",
        )
        .bind(format!("{owner:#x}"))
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredTransfer {
                    seq: row.try_get("seq")?,
                    transfer: json_body(row)?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect()
    }
}

/// The first transfer of `batch` that was not inserted (its id was taken)
/// and differs from what is stored under its id.
async fn first_reused_id(
    tx: &mut sqlx::AnyConnection,
    batch: &LedgerBatch,
    inserted: &HashSet<String>,
) -> Result<Option<Refusal>, sqlx::Error> {
    let retried: Vec<&Transfer> = batch
        .transfers
        .iter()
        .filter(|t| !inserted.contains(&t.id))
        .collect();
    if retried.is_empty() {
        return Ok(None);
    }
    let mut select = Statement::new("SELECT id, body FROM ledger_transfers WHERE id IN (");
    for (index, transfer) in retried.iter().enumerate() {
        if index > 0 {
            select.push(", ");
        }
        select.bind(transfer.id.clone());
    }
    select.push(")");
    let mut stored = std::collections::HashMap::new();
    for row in select.query()?.fetch_all(&mut *tx).await? {
        stored.insert(
            row.try_get::<String, _>("id")?,
            row.try_get::<String, _>("body")?,
        );
    }
    for transfer in retried {
        let body = TransferRow::new(transfer)?.body;
        if stored.get(&transfer.id).is_some_and(|kept| *kept != body) {
            return Ok(Some(Refusal::IdempotencyConflict(transfer.id.clone())));
        }
    }
    Ok(None)
}

pub(super) async fn apply_batch(
    tx: &mut sqlx::AnyConnection,
    dialect: Dialect,
    batch: &LedgerBatch,
    now_ms: i64,
) -> Result<Result<(), Refusal>, sqlx::Error> {
    // 0. A fold deletes the journal's rows it folds first (their steps are
    //    in this batch).
    if let Some(below) = batch.journal_folded_below {
        sqlx::query("DELETE FROM voucher_journal WHERE seq < $1")
            .bind(below)
            .execute(&mut *tx)
            .await?;
    }
    // 1. Channels: the last state of each, only over the revision it was
    //    built on.
    if let Some(changed) = write_channels(tx, &batch.channels, now_ms).await? {
        return Ok(Err(Refusal::ChannelChanged(changed)));
    }
    // 2. Insert the transfers; ids already present are retries and move nothing.
    let mut inserted = HashSet::new();
    for chunk in batch.transfers.chunks(INSERT_CHUNK_ROWS) {
        let mut insert = Statement::new(
            "INSERT INTO ledger_transfers (id, debit, credit, body, asset, amount, kind, channel, created_at_ms) VALUES ",
        );
        for (index, transfer) in chunk.iter().enumerate() {
            let row = TransferRow::new(transfer)?;
            insert.push(if index == 0 { "(" } else { ", (" });
            insert
                .bind(row.id)
                .push(", ")
                .bind(row.debit)
                .push(", ")
                .bind(row.credit)
                .push(", ")
                .bind(row.body)
                .push(", ")
                .bind(row.asset)
                .push(", ")
                .bind_ledger_amount(row.amount, dialect)
                .push(", ")
                .bind(row.kind)
                .push(", ")
                .bind(row.channel)
                .push(", ")
                .bind(now_ms)
                .push(")");
        }
        insert.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
        for row in insert.query()?.fetch_all(&mut *tx).await? {
            inserted.insert(row.try_get::<String, _>("id")?);
        }
    }
    // A retried id must carry the same transfer, or the key was reused.
    if let Some(conflict) = first_reused_id(tx, batch, &inserted).await? {
        return Ok(Err(conflict));
    }
    // 3. Net balance change per account, checked once against the stored
    //    (on PostgreSQL: locked) balances.
    let deltas = match net_deltas(&batch.transfers, &inserted) {
        Ok(deltas) => deltas,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if !deltas.is_empty() {
        let mut current = locked_balances(tx, dialect, &deltas).await?;
        if current.len() < deltas.len() {
            // New accounts: created at zero first, so that concurrent
            // writers on PostgreSQL lock the same rows instead of racing.
            let mut create = Statement::new(
                "INSERT INTO ledger_accounts (key, kind, owner, asset, balance) VALUES ",
            );
            let mut first = true;
            for (account, _) in &deltas {
                let key = account.key();
                if current.contains_key(&key) {
                    continue;
                }
                let (kind, owner, asset) = account_columns(account);
                create.push(if first { "(" } else { ", (" });
                first = false;
                create
                    .bind(key)
                    .push(", ")
                    .bind(kind)
                    .push(", ")
                    .bind(owner)
                    .push(", ")
                    .bind(asset)
                    .push(", ")
                    .bind_ledger_amount("0".to_string(), dialect)
                    .push(")");
            }
            create.push(" ON CONFLICT (key) DO NOTHING");
            create.query()?.execute(&mut *tx).await?;
            current = locked_balances(tx, dialect, &deltas).await?;
        }
        let mut update = Statement::new(
            "INSERT INTO ledger_accounts (key, kind, owner, asset, balance) VALUES ",
        );
        for (index, (account, delta)) in deltas.iter().enumerate() {
            let key = account.key();
            let stored = current.get(&key).copied().unwrap_or(Balance::ZERO);
            let Some(next) = stored.checked_add(*delta) else {
                return Ok(Err(Refusal::Overflow(key)));
            };
            if next.is_negative() && !account.may_go_negative() {
                return Ok(Err(Refusal::Insufficient(key)));
            }
            let (kind, owner, asset) = account_columns(account);
            update.push(if index == 0 { "(" } else { ", (" });
            update
                .bind(key)
                .push(", ")
                .bind(kind)
                .push(", ")
                .bind(owner)
                .push(", ")
                .bind(asset)
                .push(", ")
                .bind_ledger_amount(next.to_string(), dialect)
                .push(")");
        }
        update.push(" ON CONFLICT (key) DO UPDATE SET balance = excluded.balance");
        update.query()?.execute(&mut *tx).await?;
    }
    // 4. Vouchers kept in the journal.
    let entries: Vec<&JournalEntry> = batch.journal.iter().collect();
    for chunk in entries.chunks(INSERT_CHUNK_ROWS) {
        journal_append(chunk).query()?.execute(&mut *tx).await?;
    }
    Ok(Ok(()))
}

/// The statement appending `entries` to the voucher journal.
fn journal_append(entries: &[&JournalEntry]) -> Statement {
    let mut insert = Statement::new(
        "INSERT INTO voucher_journal (seq, channel, amount, signature, accepted_at_ms) VALUES ",
    );
    for (index, entry) in entries.iter().enumerate() {
        insert.push(if index == 0 { "(" } else { ", (" });
        insert
            .bind(entry.seq)
            .push(", ")
            .bind(format!("{:#x}", entry.channel))
            .push(", ")
            .bind(entry.amount.to_string())
            .push(", ")
            .bind(entry.signature.to_vec())
            .push(", ")
            .bind(entry.accepted_at_ms)
            .push(")");
    }
    insert
}

/// The stored balances of the accounts a batch moves, locked for the rest
/// of the transaction (in key order, so concurrent writers cannot deadlock).
async fn locked_balances(
    tx: &mut sqlx::AnyConnection,
    dialect: Dialect,
    deltas: &[(AccountRef, Balance)],
) -> Result<HashMap<String, Balance>, sqlx::Error> {
    let mut select = Statement::new(
        "SELECT key, CAST(balance AS TEXT) AS balance FROM ledger_accounts WHERE key IN (",
    );
    for (index, (account, _)) in deltas.iter().enumerate() {
        if index > 0 {
            select.push(", ");
        }
        select.bind(account.key());
    }
    select.push(") ORDER BY key").push(dialect.lock_rows());
    let mut current = HashMap::with_capacity(deltas.len());
    for row in select.query()?.fetch_all(&mut *tx).await? {
        current.insert(
            row.try_get::<String, _>("key")?,
            get_parsed(&row, "balance")?,
        );
    }
    Ok(current)
}

/// Whether a group's batches may be checked as one: no transfer debits an
/// account a user spends from (only the outside world, escrow and clearing,
/// which the channel rules keep covered), so no batch can be funded by a
/// later one.
pub(super) fn order_independent(batches: &[LedgerBatch]) -> bool {
    batches.iter().flat_map(|b| &b.transfers).all(|t| {
        matches!(
            t.debit,
            AccountRef::World { .. } | AccountRef::Escrow { .. } | AccountRef::Clearing { .. }
        )
    })
}

/// All batches of a group as one.
pub(super) fn merge(batches: &[LedgerBatch]) -> LedgerBatch {
    LedgerBatch {
        transfers: batches
            .iter()
            .flat_map(|b| b.transfers.iter().cloned())
            .collect(),
        channels: batches
            .iter()
            .flat_map(|b| b.channels.iter().cloned())
            .collect(),
        journal: batches
            .iter()
            .flat_map(|b| b.journal.iter().cloned())
            .collect(),
        journal_folded_below: batches.iter().filter_map(|b| b.journal_folded_below).max(),
    }
}

/// A transfer as stored.
pub(super) struct TransferRow {
    pub id: String,
    pub debit: String,
    pub credit: String,
    pub body: String,
    pub asset: String,
    pub amount: String,
    pub kind: String,
    pub channel: Option<String>,
}

impl TransferRow {
    pub(super) fn new(transfer: &Transfer) -> Result<Self, sqlx::Error> {
        Ok(TransferRow {
            id: transfer.id.clone(),
            debit: transfer.debit.key(),
            credit: transfer.credit.key(),
            body: serde_json::to_string(transfer).map_err(decode_err)?,
            asset: format!("{:#x}", transfer.asset),
            amount: transfer.amount.to_string(),
            kind: serde_json::to_value(transfer.kind)
                .map_err(decode_err)?
                .as_str()
                .unwrap_or_default()
                .to_string(),
            channel: transfer.channel.map(|c: B256| format!("{c:#x}")),
        })
    }
}

/// Net change per account of the transfers that were inserted (each id
/// once), in the order they apply; a change beyond the balance range is an
/// overflow, refused.
pub(super) fn net_deltas(
    transfers: &[Transfer],
    inserted: &HashSet<String>,
) -> Result<Vec<(AccountRef, Balance)>, Refusal> {
    let mut seen = HashSet::new();
    let mut deltas: Vec<(AccountRef, Balance)> = Vec::new();
    let mut index: HashMap<AccountRef, usize> = HashMap::new();
    for transfer in transfers {
        if !inserted.contains(&transfer.id) || !seen.insert(transfer.id.as_str()) {
            continue;
        }
        for (account, credit) in [(transfer.debit, false), (transfer.credit, true)] {
            let slot = *index.entry(account).or_insert_with(|| {
                deltas.push((account, Balance::ZERO));
                deltas.len() - 1
            });
            let delta = &mut deltas[slot].1;
            let moved = if credit {
                delta.credit(transfer.amount)
            } else {
                delta.debit(transfer.amount)
            };
            *delta = moved.ok_or_else(|| Refusal::Overflow(account.key()))?;
        }
    }
    Ok(deltas)
}

/// A channel's writes in one batch, as one: the revision its first write
/// was built on, its last state, and their deferred step (only when every
/// write of it defers one: from the first one's base to the last one's).
pub(super) type LastState<'a> = (Option<u64>, &'a Channel, Option<DeferredStep>);

/// Per channel, in first-seen order, its writes as one; a channel written
/// both with and without deferred steps in one batch is an error (the
/// transfers of the one would not cover the steps of the other).
pub(super) fn last_states<'a>(
    writes: impl IntoIterator<Item = &'a ChannelWrite>,
) -> Result<Vec<LastState<'a>>, sqlx::Error> {
    let mut order: Vec<LastState<'a>> = Vec::new();
    let mut index: HashMap<B256, usize> = HashMap::new();
    for write in writes {
        match index.get(&write.channel.id) {
            Some(&slot) => {
                let (_, channel, deferred) = &mut order[slot];
                *channel = &write.channel;
                match (deferred.as_mut(), write.deferred) {
                    (Some(step), Some(next)) => {
                        step.accepted_at_ms = next.accepted_at_ms;
                        step.round_start_ms = next.round_start_ms;
                    }
                    (None, None) => {}
                    _ => {
                        return Err(sqlx::Error::Protocol(format!(
                            "channel {:#x} written with and without a deferred step in one batch",
                            write.channel.id
                        )));
                    }
                }
            }
            None => {
                index.insert(write.channel.id, order.len());
                order.push((write.base_revision, &write.channel, write.deferred));
            }
        }
    }
    Ok(order)
}

/// Stores channel states over their base revisions; answers the first
/// channel whose stored revision moved on (nothing is then to be kept).
async fn write_channels(
    tx: &mut sqlx::AnyConnection,
    writes: &[ChannelWrite],
    now_ms: i64,
) -> Result<Option<B256>, sqlx::Error> {
    let states = last_states(writes)?;
    let revision = |value: u64| i64::try_from(value).map_err(decode_err);
    let (new, updated): (Vec<_>, Vec<_>) =
        states.into_iter().partition(|(base, _, _)| base.is_none());
    if !new.is_empty() {
        let mut insert = Statement::new(
            "INSERT INTO channels (id, payer, payee, state, body, created_at_ms, updated_at_ms, revision) VALUES ",
        );
        if let Some((_, channel, _)) = new.iter().find(|(_, _, deferred)| deferred.is_some()) {
            return Err(sqlx::Error::Protocol(format!(
                "channel {:#x}: a deferred step on a channel not stored yet",
                channel.id
            )));
        }
        for (index, (_, channel, _)) in new.iter().enumerate() {
            insert.push(if index == 0 { "(" } else { ", (" });
            insert
                .bind(format!("{:#x}", channel.id))
                .push(", ")
                .bind(format!("{:#x}", channel.payer))
                .push(", ")
                .bind(format!("{:#x}", channel.payee))
                .push(", ")
                .bind(channel.state.name())
                .push(", ")
                .bind(serde_json::to_string(channel).map_err(decode_err)?)
                .push(", ")
                .bind(now_ms)
                .push(", ")
                .bind(now_ms)
                .push(", ")
                .bind(revision(channel.revision)?)
                .push(")");
        }
        insert.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
        if let Some(taken) = first_unwritten(tx, insert, &new).await? {
            return Ok(Some(taken));
        }
    }
    if !updated.is_empty() {
        let update = channel_update(&updated, now_ms)?;
        if let Some(moved) = first_unwritten(tx, update, &updated).await? {
            return Ok(Some(moved));
        }
    }
    Ok(None)
}

/// The statement writing `updated` (channels stored before) over their
/// base revisions, answering the ids it wrote.
fn channel_update(updated: &[LastState<'_>], now_ms: i64) -> Result<Statement, sqlx::Error> {
    let revision = |value: u64| i64::try_from(value).map_err(decode_err);
    // One statement for the group: the new states as a table, joined on
    // id and the expected revision. A deferred voucher step keeps the
    // amount the row's transfers reach (the first waiting step's base)
    // and is refused on a row whose waiting steps began in an earlier
    // pool round; any other write is refused on a row with waiting
    // steps (the engine folds them, then plans again).
    let mut update = Statement::new(
        "WITH next (id, state, body, revision, base, deferred, base_redeemed, accepted_ms, round_start_ms) AS (VALUES ",
    );
    for (index, (base, channel, deferred)) in updated.iter().enumerate() {
        update.push(if index == 0 { "(" } else { ", (" });
        update
            .bind(format!("{:#x}", channel.id))
            .push(", ")
            .bind(channel.state.name())
            .push(", ")
            .bind(serde_json::to_string(channel).map_err(decode_err)?)
            .push(", CAST(")
            .bind(revision(channel.revision)?)
            .push(" AS BIGINT), CAST(")
            .bind(revision(base.unwrap_or(0))?)
            .push(" AS BIGINT), CAST(")
            .bind(i64::from(deferred.is_some()))
            .push(" AS BIGINT), CAST(")
            .bind(deferred.map_or_else(|| "0".to_string(), |d| d.base_redeemed.to_string()))
            .push(" AS NUMERIC), CAST(")
            .bind(deferred.map_or(0, |d| d.accepted_at_ms))
            .push(" AS BIGINT), CAST(")
            .bind(deferred.map_or(0, |d| d.round_start_ms))
            .push(" AS BIGINT))");
    }
    update
        .push(
            ") UPDATE channels SET state = next.state, body = next.body, revision = next.revision, \
             folded_redeemed = CASE WHEN next.deferred = 1 \
               THEN COALESCE(channels.folded_redeemed, next.base_redeemed) END, \
             unfolded_first_ms = CASE WHEN next.deferred = 1 \
               THEN COALESCE(channels.unfolded_first_ms, next.accepted_ms) END, \
             unfolded_last_ms = CASE WHEN next.deferred = 1 THEN next.accepted_ms END, \
             updated_at_ms = ",
        )
        .bind(now_ms)
        .push(
            " FROM next WHERE channels.id = next.id AND channels.revision = next.base \
             AND CASE WHEN next.deferred = 1 \
               THEN channels.unfolded_first_ms IS NULL OR channels.unfolded_first_ms >= next.round_start_ms \
               ELSE channels.folded_redeemed IS NULL END \
             RETURNING channels.id",
        );
    Ok(update)
}

/// Runs a write that answers the ids of the channels it wrote; the first
/// of `states` it did not write (its row was not as expected).
async fn first_unwritten(
    tx: &mut sqlx::AnyConnection,
    write: Statement,
    states: &[LastState<'_>],
) -> Result<Option<B256>, sqlx::Error> {
    let written: HashSet<String> = write
        .query()?
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>("id"))
        .collect::<Result<_, _>>()?;
    Ok(states
        .iter()
        .find(|(_, c, _)| !written.contains(&format!("{:#x}", c.id)))
        .map(|(_, c, _)| c.id))
}
