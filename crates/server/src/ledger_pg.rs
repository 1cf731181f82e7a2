//! The ledger on PostgreSQL: the same operations as the SQLite store; amounts
//! travel as text and are NUMERIC in the database, which enforces
//! non-negative balances itself. Balance rows are locked (`FOR UPDATE`) in
//! the transaction that moves them, so several nodes may write.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row};
use streamweave_ledger::{AccountRef, Address, Channel, RevenuePolicy, Transfer};

use crate::ledger_db::{
    INSERT_CHUNK_ROWS, LedgerBatch, Refusal, StoredTransfer, TransferRow, account_kind, decode_err,
    first_conflict, last_states, merge, net_deltas, order_independent, retried_transfers,
};
use crate::ledger_store::LedgerStore;

#[derive(Clone)]
pub struct PgLedger {
    pool: PgPool,
}

impl PgLedger {
    /// Connects and applies the migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgLedger { pool })
    }

    /// Connects with every table in `schema` (created if missing): isolated
    /// test runs on a shared server.
    #[cfg(test)]
    pub async fn connect_in_schema(url: &str, schema: &str) -> anyhow::Result<Self> {
        use std::str::FromStr;
        let admin = PgPoolOptions::new().max_connections(1).connect(url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&admin)
        .await?;
        let options =
            sqlx::postgres::PgConnectOptions::from_str(url)?.options([("search_path", schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgLedger { pool })
    }

    #[cfg(test)]
    pub async fn drop_schema(&self, schema: &str) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[cfg(test)]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl LedgerStore for PgLedger {
    async fn commit(
        &self,
        batches: &[LedgerBatch],
        now_ms: i64,
    ) -> Result<Vec<Result<(), Refusal>>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
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

    async fn all_transfers(&self) -> Result<Vec<Transfer>, sqlx::Error> {
        let rows = sqlx::query("SELECT body FROM ledger_transfers ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| serde_json::from_str(row.try_get::<&str, _>("body")?).map_err(decode_err))
            .collect()
    }

    async fn stored_balances(&self) -> Result<Vec<(String, i128)>, sqlx::Error> {
        let rows = sqlx::query("SELECT key, balance::text AS balance FROM ledger_accounts")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("key")?,
                    row.try_get::<&str, _>("balance")?
                        .parse()
                        .map_err(decode_err)?,
                ))
            })
            .collect()
    }

    async fn balance(&self, account: &AccountRef) -> Result<i128, sqlx::Error> {
        let row =
            sqlx::query("SELECT balance::text AS balance FROM ledger_accounts WHERE key = $1")
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

    async fn transfers_of(
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
                    transfer: serde_json::from_str(row.try_get::<&str, _>("body")?)
                        .map_err(decode_err)?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect()
    }

    async fn policy(&self, owner: Address) -> Result<Option<RevenuePolicy>, sqlx::Error> {
        let row = sqlx::query("SELECT body FROM revenue_policies WHERE owner = $1")
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
            "INSERT INTO revenue_policies (owner, body, updated_at_ms) VALUES ($1, $2, $3) \
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
            "INSERT INTO withdrawals (id, address, asset, amount, state, created_at_ms) \
             VALUES ($1, $2, $3, $4::numeric, 'pending', $5) ON CONFLICT (id) DO NOTHING",
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

    async fn insert_challenge(
        &self,
        nonce: &str,
        address: Address,
        message: &str,
        expires_at_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM auth_challenges WHERE expires_at_ms < $1")
            .bind(expires_at_ms - 24 * 3_600_000)
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO auth_challenges (nonce, address, message, expires_at_ms) VALUES ($1, $2, $3, $4)")
            .bind(nonce)
            .bind(format!("{address:#x}"))
            .bind(message)
            .bind(expires_at_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn take_challenge(&self, nonce: &str) -> Result<Option<(String, i64)>, sqlx::Error> {
        let row = sqlx::query(
            "DELETE FROM auth_challenges WHERE nonce = $1 RETURNING message, expires_at_ms",
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
            "INSERT INTO auth_tokens (token_hash, address, expires_at_ms) VALUES ($1, $2, $3)",
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
        let row = sqlx::query("SELECT address FROM auth_tokens WHERE token_hash = $1 AND NOT revoked AND expires_at_ms > $2")
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
        sqlx::query("UPDATE auth_tokens SET revoked = TRUE WHERE token_hash = $1")
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
                    "INSERT INTO payout_thresholds (owner, threshold, updated_at_ms) VALUES ($1, $2::numeric, $3) \
                     ON CONFLICT (owner) DO UPDATE SET threshold = excluded.threshold, updated_at_ms = excluded.updated_at_ms",
                )
                .bind(format!("{owner:#x}"))
                .bind(threshold.to_string())
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM payout_thresholds WHERE owner = $1")
                    .bind(format!("{owner:#x}"))
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    async fn payout_thresholds(&self) -> Result<Vec<(Address, u128)>, sqlx::Error> {
        let rows = sqlx::query("SELECT owner, threshold::text AS threshold FROM payout_thresholds")
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
    tx: &mut sqlx::Transaction<'_, Postgres>,
    batch: &LedgerBatch,
    now_ms: i64,
) -> Result<Result<(), Refusal>, sqlx::Error> {
    use sqlx::QueryBuilder;
    // 1. Insert the transfers; ids already present are retries and move nothing.
    let mut inserted = std::collections::HashSet::new();
    for chunk in batch.transfers.chunks(INSERT_CHUNK_ROWS) {
        let mut rows = Vec::with_capacity(chunk.len());
        for transfer in chunk {
            rows.push(TransferRow::new(transfer)?);
        }
        let mut insert = QueryBuilder::<Postgres>::new(
            "INSERT INTO ledger_transfers (id, debit, credit, body, asset, amount, kind, channel, created_at_ms) ",
        );
        insert.push_values(&rows, |mut b, row| {
            b.push_bind(&row.id)
                .push_bind(&row.debit)
                .push_bind(&row.credit)
                .push_bind(&row.body)
                .push_bind(&row.asset)
                .push_bind(&row.amount)
                .push_unseparated("::numeric")
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
        let mut select =
            QueryBuilder::<Postgres>::new("SELECT id, body FROM ledger_transfers WHERE id IN (");
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
    // 2. Net balance change per account, checked against the locked balances.
    let deltas = net_deltas(&batch.transfers, &inserted)?;
    if !deltas.is_empty() {
        let mut create = QueryBuilder::<Postgres>::new(
            "INSERT INTO ledger_accounts (key, kind, owner, asset, balance) ",
        );
        let accounts: Vec<_> = deltas
            .iter()
            .map(|(a, _)| (a.key(), account_kind(a)))
            .collect();
        create.push_values(&accounts, |mut b, (key, (kind, owner, asset))| {
            b.push_bind(key)
                .push_bind(*kind)
                .push_bind(owner)
                .push_bind(asset)
                .push("0");
        });
        create.push(" ON CONFLICT (key) DO NOTHING");
        create.build().execute(&mut **tx).await?;
        // Lock in key order so concurrent nodes cannot deadlock.
        let mut keys: Vec<String> = accounts.iter().map(|(key, _)| key.clone()).collect();
        keys.sort();
        let rows = sqlx::query("SELECT key, balance::text AS balance FROM ledger_accounts WHERE key = ANY($1) ORDER BY key FOR UPDATE")
            .bind(&keys)
            .fetch_all(&mut **tx)
            .await?;
        let mut current = std::collections::HashMap::new();
        for row in rows {
            current.insert(
                row.try_get::<String, _>("key")?,
                row.try_get::<&str, _>("balance")?
                    .parse::<i128>()
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
            updates.push((key, next.to_string()));
        }
        let mut update = QueryBuilder::<Postgres>::new(
            "UPDATE ledger_accounts AS a SET balance = v.balance::numeric FROM (",
        );
        update.push_values(&updates, |mut b, (key, balance)| {
            b.push_bind(key).push_bind(balance);
        });
        update.push(") AS v (key, balance) WHERE a.key = v.key");
        update.build().execute(&mut **tx).await?;
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
        let mut upsert = QueryBuilder::<Postgres>::new(
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
