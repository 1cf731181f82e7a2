//! Accounts around the ledger: revenue policies, withdrawal records,
//! automatic payout thresholds, and sign-in (challenges, session tokens).

use sqlx::Row;
use streamweave_ledger::{Address, RevenuePolicy};

use super::{Statement, Store, decode_err, get_parsed};

/// Deletes the sign-in challenges expired at `$1` (Unix ms).
const DELETE_EXPIRED_CHALLENGES: &str = "DELETE FROM auth_challenges WHERE expires_at_ms <= $1";

impl Store {
    /// An owner's revenue policy, if set.
    pub async fn policy(&self, owner: Address) -> Result<Option<RevenuePolicy>, sqlx::Error> {
        let row = sqlx::query("SELECT body FROM revenue_policies WHERE owner = $1")
            .bind(format!("{owner:#x}"))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| serde_json::from_str(row.try_get::<&str, _>("body")?).map_err(decode_err))
            .transpose()
    }

    pub async fn set_policy(
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

    /// Records a pending withdrawal (idempotent by id).
    pub async fn record_withdrawal(
        &self,
        id: &str,
        owner: Address,
        asset: Address,
        amount: u128,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut insert = Statement::new(
            "INSERT INTO withdrawals (id, address, asset, amount, state, created_at_ms) VALUES (",
        );
        insert
            .bind(id.to_string())
            .push(", ")
            .bind(format!("{owner:#x}"))
            .push(", ")
            .bind(format!("{asset:#x}"))
            .push(", ")
            .bind_ledger_amount(amount.to_string(), self.dialect)
            .push(", 'pending', ")
            .bind(now_ms)
            .push(") ON CONFLICT (id) DO NOTHING");
        insert.query()?.execute(&self.pool).await?;
        Ok(())
    }

    /// An owner's withdrawal records, newest first: (id, amount, state).
    #[cfg(test)]
    pub async fn withdrawals_of(
        &self,
        owner: Address,
    ) -> Result<Vec<(String, u128, String)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, CAST(amount AS TEXT) AS amount, state FROM withdrawals \
             WHERE address = $1 ORDER BY created_at_ms DESC, id",
        )
        .bind(format!("{owner:#x}"))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("id")?,
                    get_parsed(row, "amount")?,
                    row.try_get("state")?,
                ))
            })
            .collect()
    }

    /// Sets (or with `None` clears) an account's automatic payout threshold.
    pub async fn set_payout_threshold(
        &self,
        owner: Address,
        threshold: Option<u128>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        match threshold {
            Some(threshold) => {
                let mut upsert = Statement::new(
                    "INSERT INTO payout_thresholds (owner, threshold, updated_at_ms) VALUES (",
                );
                upsert
                    .bind(format!("{owner:#x}"))
                    .push(", ")
                    .bind_ledger_amount(threshold.to_string(), self.dialect)
                    .push(", ")
                    .bind(now_ms)
                    .push(
                        ") ON CONFLICT (owner) DO UPDATE SET threshold = excluded.threshold, \
                         updated_at_ms = excluded.updated_at_ms",
                    );
                upsert.query()?.execute(&self.pool).await?;
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

    /// Every account's payout threshold.
    pub async fn payout_thresholds(&self) -> Result<Vec<(Address, u128)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT owner, CAST(threshold AS TEXT) AS threshold FROM payout_thresholds ORDER BY owner",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((get_parsed(row, "owner")?, get_parsed(row, "threshold")?)))
            .collect()
    }

    // Sign-in.

    /// Stores a sign-in challenge; challenges that expired are deleted
    /// first, so the table holds only what was issued in the last minutes.
    /// Both in one transaction: one commit (one `fsync` on SQLite) a
    /// challenge, not two, when a crowd signs in at once.
    pub async fn insert_challenge(
        &self,
        nonce: &str,
        address: Address,
        message: &str,
        expires_at_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(DELETE_EXPIRED_CHALLENGES)
            .bind(crate::model::now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO auth_challenges (nonce, address, message, expires_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(nonce)
        .bind(format!("{address:#x}"))
        .bind(message)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Deletes the challenges expired at `now_ms`; answers how many.
    #[cfg(test)]
    pub async fn expire_challenges(&self, now_ms: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(DELETE_EXPIRED_CHALLENGES)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// A challenge's message and expiry, left in place.
    pub async fn challenge(&self, nonce: &str) -> Result<Option<(String, i64)>, sqlx::Error> {
        let row =
            sqlx::query("SELECT message, expires_at_ms FROM auth_challenges WHERE nonce = $1")
                .bind(nonce)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| Ok((row.try_get("message")?, row.try_get("expires_at_ms")?)))
            .transpose()
    }

    /// Consumes a challenge (single use) and, given a session `token` (its
    /// hash, address and expiry: the challenge was answered), stores the
    /// token, in one transaction: one commit a sign-in. `false`: the
    /// challenge was gone (consumed meanwhile), and no token is stored.
    pub async fn consume_challenge(
        &self,
        nonce: &str,
        token: Option<(&str, Address, i64)>,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let consumed = sqlx::query("DELETE FROM auth_challenges WHERE nonce = $1")
            .bind(nonce)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !consumed {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some((token_hash, address, expires_at_ms)) = token {
            sqlx::query(
                "INSERT INTO auth_tokens (token_hash, address, expires_at_ms) VALUES ($1, $2, $3)",
            )
            .bind(token_hash)
            .bind(format!("{address:#x}"))
            .bind(expires_at_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// How many challenges are stored (issued and neither used nor expired away).
    #[cfg(test)]
    pub async fn challenge_count(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM auth_challenges")
            .fetch_one(&self.pool)
            .await
    }

    /// The account a session token stands for, unless expired or revoked.
    pub async fn token_address(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<Address>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT address FROM auth_tokens WHERE token_hash = $1 AND revoked = 0 AND expires_at_ms > $2",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| get_parsed(&row, "address")).transpose()
    }

    pub async fn revoke_token(&self, token_hash: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE auth_tokens SET revoked = 1 WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
