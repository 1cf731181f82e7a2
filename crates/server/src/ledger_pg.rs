//! The ledger on PostgreSQL: the same operations as the SQLite store; amounts
//! travel as text and are NUMERIC in the database, which enforces
//! non-negative balances itself. Balance rows are locked (`FOR UPDATE`) in
//! the transaction that moves them, so several nodes may write.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row};
use streamweave_ledger::{AccountRef, Address, B256, Channel, RevenuePolicy, Transfer};

use crate::ledger_db::{LedgerBatch, Refusal, StoredTransfer, account_kind, decode_err};
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
    for transfer in &batch.transfers {
        let exists = sqlx::query("SELECT 1 FROM ledger_transfers WHERE id = $1")
            .bind(&transfer.id)
            .fetch_optional(&mut **tx)
            .await?;
        if exists.is_some() {
            continue; // a retry: already applied
        }
        let amount = i128::try_from(transfer.amount.0).map_err(decode_err)?;
        for (account, delta) in [(transfer.debit, -amount), (transfer.credit, amount)] {
            let key = account.key();
            let (kind, owner, asset) = account_kind(&account);
            sqlx::query(
                "INSERT INTO ledger_accounts (key, kind, owner, asset, balance) VALUES ($1, $2, $3, $4, 0) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(&key)
            .bind(kind)
            .bind(owner)
            .bind(asset)
            .execute(&mut **tx)
            .await?;
            let current: i128 = sqlx::query(
                "SELECT balance::text AS balance FROM ledger_accounts WHERE key = $1 FOR UPDATE",
            )
            .bind(&key)
            .fetch_one(&mut **tx)
            .await?
            .try_get::<&str, _>("balance")?
            .parse()
            .map_err(decode_err)?;
            let next = current
                .checked_add(delta)
                .ok_or_else(|| decode_err("balance overflow"))?;
            if next < 0 && !account.may_go_negative() {
                return Ok(Err(Refusal::Insufficient(key)));
            }
            sqlx::query("UPDATE ledger_accounts SET balance = $2::numeric WHERE key = $1")
                .bind(&key)
                .bind(next.to_string())
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO ledger_transfers (id, debit, credit, body, asset, amount, kind, channel, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6::numeric, $7, $8, $9)",
        )
        .bind(&transfer.id)
        .bind(transfer.debit.key())
        .bind(transfer.credit.key())
        .bind(serde_json::to_string(transfer).map_err(decode_err)?)
        .bind(format!("{:#x}", transfer.asset))
        .bind(transfer.amount.to_string())
        .bind(serde_json::to_value(transfer.kind).map_err(decode_err)?.as_str().unwrap_or_default().to_string())
        .bind(transfer.channel.map(|c: B256| format!("{c:#x}")))
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    }
    for channel in &batch.channels {
        sqlx::query(
            "INSERT INTO channels (id, payer, payee, state, body, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(format!("{:#x}", channel.id))
        .bind(format!("{:#x}", channel.payer))
        .bind(format!("{:#x}", channel.payee))
        .bind(channel.state.name())
        .bind(serde_json::to_string(channel).map_err(decode_err)?)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(Ok(()))
}
