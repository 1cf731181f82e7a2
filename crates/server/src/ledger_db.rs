//! The ledger's storage on SQLite: transfers are inserted once (their ids make
//! retries idempotent), balances move in the same transaction and may never
//! go below zero (checked here and by the schema), channels are saved whole.

use sqlx::{Row, SqlitePool};

pub use crate::ledger_store::{LedgerDb, LedgerStore};
use streamweave_ledger::{AccountRef, Address, B256, Channel, RevenuePolicy, Transfer};

/// One operation's writes: all of them or none.
#[derive(Debug, Clone, Default)]
pub struct LedgerBatch {
    pub transfers: Vec<Transfer>,
    pub channels: Vec<Channel>,
}

/// Why a batch was refused (the rest of a group commit goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("insufficient balance in {0}")]
    Insufficient(String),
    /// A transfer id already used for a different transfer: the request
    /// reused an idempotency key with another body.
    #[error("the id {0} was already used for a different request")]
    IdempotencyConflict(String),
}

/// The transfers of `batch` whose ids were already stored (retries), to be
/// compared with what is stored under those ids.
pub(crate) fn retried_transfers<'a>(
    batch: &'a LedgerBatch,
    inserted: &std::collections::HashSet<String>,
) -> Vec<&'a Transfer> {
    batch
        .transfers
        .iter()
        .filter(|t| !inserted.contains(&t.id))
        .collect()
}

/// The first retried transfer whose stored body differs: a reused key.
pub(crate) fn first_conflict(
    retried: &[&Transfer],
    stored: &std::collections::HashMap<String, String>,
) -> Result<Option<Refusal>, sqlx::Error> {
    for transfer in retried {
        let body = serde_json::to_string(transfer).map_err(decode_err)?;
        if stored
            .get(&transfer.id)
            .is_some_and(|stored| *stored != body)
        {
            return Ok(Some(Refusal::IdempotencyConflict(transfer.id.clone())));
        }
    }
    Ok(None)
}

/// A stored transfer with its position and time.
#[derive(Debug, Clone)]
pub struct StoredTransfer {
    pub seq: i64,
    pub transfer: Transfer,
    pub created_at_ms: i64,
}

/// The ledger on SQLite (the embedded default).
#[derive(Clone)]
pub struct SqliteLedger {
    pool: SqlitePool,
}

pub(crate) fn account_kind(account: &AccountRef) -> (&'static str, Option<String>, String) {
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
        AccountRef::World { asset } => ("world", None, format!("{asset:#x}")),
    }
}

pub(crate) fn decode_err(err: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(err.to_string().into())
}

impl SqliteLedger {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteLedger { pool }
    }
}

impl LedgerStore for SqliteLedger {
    /// Commits a group of batches in one transaction (one durable commit).
    /// Each batch is all-or-nothing: a refused batch is rolled back to its
    /// savepoint and reported; the others commit.
    async fn commit(
        &self,
        batches: &[LedgerBatch],
        now_ms: i64,
    ) -> Result<Vec<Result<(), Refusal>>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // The common case (vouchers, settlements, deposits): the whole group
        // in one go, when no batch can depend on another's order.
        if batches.len() > 1 && order_independent(batches) {
            let merged = merge(batches);
            let mut savepoint = sqlx::Acquire::begin(&mut *tx).await?;
            if apply_batch(&mut savepoint, &merged, now_ms).await?.is_ok() {
                savepoint.commit().await?;
                tx.commit().await?;
                return Ok(vec![Ok(()); batches.len()]);
            }
            savepoint.rollback().await?;
        }
        // Something was refused: each batch on its own, so the others still commit.
        let mut results = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut savepoint = sqlx::Acquire::begin(&mut *tx).await?;
            match apply_batch(&mut savepoint, batch, now_ms).await? {
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

    async fn channels(&self) -> Result<Vec<Channel>, sqlx::Error> {
        let rows = sqlx::query("SELECT body FROM channels ORDER BY created_at_ms, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| serde_json::from_str(row.try_get::<&str, _>("body")?).map_err(decode_err))
            .collect()
    }

    /// Every transfer in commit order (for the audit).
    async fn all_transfers(&self) -> Result<Vec<Transfer>, sqlx::Error> {
        let rows = sqlx::query("SELECT body FROM ledger_transfers ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| serde_json::from_str(row.try_get::<&str, _>("body")?).map_err(decode_err))
            .collect()
    }

    /// Cached balances (the audit re-derives and compares them).
    async fn stored_balances(&self) -> Result<Vec<(String, i128)>, sqlx::Error> {
        let rows = sqlx::query("SELECT key, balance FROM ledger_accounts")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let balance: &str = row.try_get("balance")?;
                Ok((row.try_get("key")?, balance.parse().map_err(decode_err)?))
            })
            .collect()
    }

    async fn balance(&self, account: &AccountRef) -> Result<i128, sqlx::Error> {
        let row = sqlx::query("SELECT balance FROM ledger_accounts WHERE key = ?")
            .bind(account.key())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => row
                .try_get::<&str, _>("balance")?
                .parse()
                .map_err(decode_err),
            None => Ok(0),
        }
    }

    /// Transfers touching an owner's accounts, newest first, before `before_seq`.
    async fn transfers_of(
        &self,
        owner: Address,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredTransfer>, sqlx::Error> {
        let owner = format!("{owner:#x}");
        let rows = sqlx::query(
            "SELECT t.seq, t.body, t.created_at_ms FROM ledger_transfers t \
             WHERE (t.debit IN (SELECT key FROM ledger_accounts WHERE owner = ?1) \
                OR t.credit IN (SELECT key FROM ledger_accounts WHERE owner = ?1)) \
               AND t.seq < ?2 ORDER BY t.seq DESC LIMIT ?3",
        )
        .bind(owner)
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredTransfer {
                    seq: row.try_get("seq")?,
                    transfer: serde_json::from_str(row.try_get::<&str, _>("body")?)
                        .map_err(decode_err)?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect()
    }

    async fn policy(&self, owner: Address) -> Result<Option<RevenuePolicy>, sqlx::Error> {
        let row = sqlx::query("SELECT body FROM revenue_policies WHERE owner = ?")
            .bind(format!("{owner:#x}"))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| serde_json::from_str(row.try_get::<&str, _>("body")?).map_err(decode_err))
            .transpose()
    }

    async fn set_policy(
        &self,
        owner: Address,
        policy: &RevenuePolicy,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO revenue_policies (owner, body, updated_at_ms) VALUES (?, ?, ?) \
             ON CONFLICT (owner) DO UPDATE SET body = excluded.body, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(format!("{owner:#x}"))
        .bind(serde_json::to_string(policy).map_err(decode_err)?)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_withdrawal(
        &self,
        id: &str,
        owner: Address,
        asset: Address,
        amount: u128,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT OR IGNORE INTO withdrawals (id, address, asset, amount, state, created_at_ms) VALUES (?, ?, ?, ?, 'pending', ?)",
        )
        .bind(id)
        .bind(format!("{owner:#x}"))
        .bind(format!("{asset:#x}"))
        .bind(amount.to_string())
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // Sign-in.

    async fn insert_challenge(
        &self,
        nonce: &str,
        address: Address,
        message: &str,
        expires_at_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM auth_challenges WHERE expires_at_ms < ?")
            .bind(expires_at_ms - 24 * 3_600_000)
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO auth_challenges (nonce, address, message, expires_at_ms) VALUES (?, ?, ?, ?)")
            .bind(nonce)
            .bind(format!("{address:#x}"))
            .bind(message)
            .bind(expires_at_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Consumes a challenge (single use): its message and expiry.
    async fn take_challenge(&self, nonce: &str) -> Result<Option<(String, i64)>, sqlx::Error> {
        let row = sqlx::query(
            "DELETE FROM auth_challenges WHERE nonce = ? RETURNING message, expires_at_ms",
        )
        .bind(nonce)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((row.try_get("message")?, row.try_get("expires_at_ms")?)))
            .transpose()
    }

    async fn insert_token(
        &self,
        token_hash: &str,
        address: Address,
        expires_at_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO auth_tokens (token_hash, address, expires_at_ms) VALUES (?, ?, ?)",
        )
        .bind(token_hash)
        .bind(format!("{address:#x}"))
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn token_address(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<Address>, sqlx::Error> {
        let row = sqlx::query("SELECT address FROM auth_tokens WHERE token_hash = ? AND revoked = 0 AND expires_at_ms > ?")
            .bind(token_hash)
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            row.try_get::<&str, _>("address")?
                .parse()
                .map_err(decode_err)
        })
        .transpose()
    }

    async fn revoke_token(&self, token_hash: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE auth_tokens SET revoked = 1 WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
    async fn set_payout_threshold(
        &self,
        owner: Address,
        threshold: Option<u128>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        match threshold {
            Some(threshold) => {
                sqlx::query(
                    "INSERT INTO payout_thresholds (owner, threshold, updated_at_ms) VALUES (?, ?, ?) \
                     ON CONFLICT (owner) DO UPDATE SET threshold = excluded.threshold, updated_at_ms = excluded.updated_at_ms",
                )
                .bind(format!("{owner:#x}"))
                .bind(threshold.to_string())
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM payout_thresholds WHERE owner = ?")
                    .bind(format!("{owner:#x}"))
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    async fn payout_thresholds(&self) -> Result<Vec<(Address, u128)>, sqlx::Error> {
        let rows = sqlx::query("SELECT owner, threshold FROM payout_thresholds")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<&str, _>("owner")?
                        .parse()
                        .map_err(decode_err)?,
                    row.try_get::<&str, _>("threshold")?
                        .parse()
                        .map_err(decode_err)?,
                ))
            })
            .collect()
    }
}

async fn apply_batch(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    batch: &LedgerBatch,
    now_ms: i64,
) -> Result<Result<(), Refusal>, sqlx::Error> {
    use sqlx::QueryBuilder;
    // 1. Insert the transfers; ids already present are retries and move nothing.
    let mut inserted = std::collections::HashSet::new();
    for chunk in batch.transfers.chunks(INSERT_CHUNK_ROWS) {
        let mut insert = QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO ledger_transfers (id, debit, credit, body, asset, amount, kind, channel, created_at_ms) ",
        );
        let mut rows = Vec::with_capacity(chunk.len());
        for transfer in chunk {
            rows.push(TransferRow::new(transfer)?);
        }
        insert.push_values(&rows, |mut b, row| {
            b.push_bind(&row.id)
                .push_bind(&row.debit)
                .push_bind(&row.credit)
                .push_bind(&row.body)
                .push_bind(&row.asset)
                .push_bind(&row.amount)
                .push_bind(&row.kind)
                .push_bind(&row.channel)
                .push_bind(now_ms);
        });
        insert.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
        for row in insert.build().fetch_all(&mut **tx).await? {
            inserted.insert(row.try_get::<String, _>("id")?);
        }
    }
    // A retried id must carry the same transfer: otherwise the key was reused.
    let retried = retried_transfers(batch, &inserted);
    if !retried.is_empty() {
        let mut select = QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT id, body FROM ledger_transfers WHERE id IN (",
        );
        let mut ids = select.separated(", ");
        for transfer in &retried {
            ids.push_bind(&transfer.id);
        }
        select.push(")");
        let mut stored = std::collections::HashMap::new();
        for row in select.build().fetch_all(&mut **tx).await? {
            stored.insert(
                row.try_get::<String, _>("id")?,
                row.try_get::<String, _>("body")?,
            );
        }
        if let Some(conflict) = first_conflict(&retried, &stored)? {
            return Ok(Err(conflict));
        }
    }
    // 2. Net balance change per account, checked once against the stored balances.
    let deltas = net_deltas(&batch.transfers, &inserted)?;
    if !deltas.is_empty() {
        let mut current: std::collections::HashMap<String, i128> = std::collections::HashMap::new();
        let mut select = QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT key, balance FROM ledger_accounts WHERE key IN (",
        );
        let mut keys = select.separated(", ");
        for (account, _) in &deltas {
            keys.push_bind(account.key());
        }
        select.push(")");
        for row in select.build().fetch_all(&mut **tx).await? {
            current.insert(
                row.try_get("key")?,
                row.try_get::<&str, _>("balance")?
                    .parse()
                    .map_err(decode_err)?,
            );
        }
        let mut updates = Vec::with_capacity(deltas.len());
        for (account, delta) in &deltas {
            let key = account.key();
            let next = current
                .get(&key)
                .copied()
                .unwrap_or(0)
                .checked_add(*delta)
                .ok_or_else(|| decode_err("balance overflow"))?;
            if next < 0 && !account.may_go_negative() {
                return Ok(Err(Refusal::Insufficient(key)));
            }
            let (kind, owner, asset) = account_kind(account);
            updates.push((key, kind, owner, asset, next.to_string()));
        }
        let mut upsert = QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO ledger_accounts (key, kind, owner, asset, balance) ",
        );
        upsert.push_values(&updates, |mut b, (key, kind, owner, asset, balance)| {
            b.push_bind(key)
                .push_bind(*kind)
                .push_bind(owner)
                .push_bind(asset)
                .push_bind(balance);
        });
        upsert.push(" ON CONFLICT (key) DO UPDATE SET balance = excluded.balance");
        upsert.build().execute(&mut **tx).await?;
    }
    // 3. Channels: the last state of each.
    let channels = last_states(&batch.channels);
    if !channels.is_empty() {
        let mut rows = Vec::with_capacity(channels.len());
        for channel in channels {
            rows.push((
                format!("{:#x}", channel.id),
                format!("{:#x}", channel.payer),
                format!("{:#x}", channel.payee),
                channel.state.name(),
                serde_json::to_string(channel).map_err(decode_err)?,
            ));
        }
        let mut upsert = QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO channels (id, payer, payee, state, body, created_at_ms, updated_at_ms) ",
        );
        upsert.push_values(&rows, |mut b, (id, payer, payee, state, body)| {
            b.push_bind(id)
                .push_bind(payer)
                .push_bind(payee)
                .push_bind(*state)
                .push_bind(body)
                .push_bind(now_ms)
                .push_bind(now_ms);
        });
        upsert.push(
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body, updated_at_ms = excluded.updated_at_ms",
        );
        upsert.build().execute(&mut **tx).await?;
    }
    Ok(Ok(()))
}

/// Whether a group's batches may be checked as one: no transfer debits an
/// account a user spends from (only the outside world, escrow and clearing,
/// which the channel rules keep covered), so no batch can be funded by a
/// later one.
pub(crate) fn order_independent(batches: &[LedgerBatch]) -> bool {
    batches.iter().flat_map(|b| &b.transfers).all(|t| {
        matches!(
            t.debit,
            AccountRef::World { .. } | AccountRef::Escrow { .. } | AccountRef::Clearing { .. }
        )
    })
}

/// All batches of a group as one.
pub(crate) fn merge(batches: &[LedgerBatch]) -> LedgerBatch {
    LedgerBatch {
        transfers: batches
            .iter()
            .flat_map(|b| b.transfers.iter().cloned())
            .collect(),
        channels: batches
            .iter()
            .flat_map(|b| b.channels.iter().cloned())
            .collect(),
    }
}

/// Rows per multi-row INSERT (SQLite allows 32766 bound values; 9 per row).
pub(crate) const INSERT_CHUNK_ROWS: usize = 1000;

/// A transfer as stored.
pub(crate) struct TransferRow {
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
    pub fn new(transfer: &Transfer) -> Result<Self, sqlx::Error> {
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

/// Net change per account of the transfers that were inserted (each id once).
pub(crate) fn net_deltas(
    transfers: &[Transfer],
    inserted: &std::collections::HashSet<String>,
) -> Result<Vec<(AccountRef, i128)>, sqlx::Error> {
    let mut seen = std::collections::HashSet::new();
    let mut deltas: Vec<(AccountRef, i128)> = Vec::new();
    let mut index: std::collections::HashMap<AccountRef, usize> = std::collections::HashMap::new();
    for transfer in transfers {
        if !inserted.contains(&transfer.id) || !seen.insert(transfer.id.as_str()) {
            continue;
        }
        let amount = i128::try_from(transfer.amount.0).map_err(decode_err)?;
        for (account, delta) in [(transfer.debit, -amount), (transfer.credit, amount)] {
            let slot = *index.entry(account).or_insert_with(|| {
                deltas.push((account, 0));
                deltas.len() - 1
            });
            deltas[slot].1 = deltas[slot]
                .1
                .checked_add(delta)
                .ok_or_else(|| decode_err("balance overflow"))?;
        }
    }
    Ok(deltas)
}

/// The last state of each channel, in first-seen order.
pub(crate) fn last_states(channels: &[Channel]) -> Vec<&Channel> {
    let mut order: Vec<&Channel> = Vec::new();
    for channel in channels {
        match order.iter_mut().find(|c| c.id == channel.id) {
            Some(slot) => *slot = channel,
            None => order.push(channel),
        }
    }
    order
}
