//! The chain watcher's cursor and the settler's transactions.

use sqlx::Row;

use super::Store;

/// A transaction the settler signed, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTxRecord {
    /// 0x-hex.
    pub hash: String,
    pub chain_id: u64,
    /// Escrow and sender, lower-case 0x-hex.
    pub escrow: String,
    pub sender: String,
    pub nonce: u64,
    /// The signed bytes, 0x-hex.
    pub raw: String,
    /// `settle` or `finalize`.
    pub kind: String,
    /// What it settles or finalizes (JSON).
    pub body: String,
    /// `sent`, `mined`, `failed` or `dropped`.
    pub state: String,
    pub created_at_ms: i64,
}

fn i64_of(value: u64) -> Result<i64, sqlx::Error> {
    i64::try_from(value).map_err(|err| sqlx::Error::Encode(Box::new(err)))
}

fn u64_of(value: i64) -> Result<u64, sqlx::Error> {
    u64::try_from(value).map_err(|err| sqlx::Error::Decode(Box::new(err)))
}

impl Store {
    /// The next block to read and the hash of the last final one read.
    pub async fn chain_cursor(
        &self,
        chain_id: u64,
        escrow: &str,
    ) -> Result<Option<(u64, Option<String>)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT next_block, last_hash FROM chain_cursors WHERE chain_id = $1 AND escrow = $2",
        )
        .bind(i64_of(chain_id)?)
        .bind(escrow)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok((
                u64_of(row.try_get("next_block")?)?,
                row.try_get("last_hash")?,
            ))
        })
        .transpose()
    }

    /// Moves the cursor forward (never back: another node may be ahead).
    pub async fn advance_chain_cursor(
        &self,
        chain_id: u64,
        escrow: &str,
        next_block: u64,
        last_hash: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO chain_cursors (chain_id, escrow, next_block, last_hash) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (chain_id, escrow) DO UPDATE \
             SET next_block = excluded.next_block, last_hash = excluded.last_hash \
             WHERE chain_cursors.next_block < excluded.next_block",
        )
        .bind(i64_of(chain_id)?)
        .bind(escrow)
        .bind(i64_of(next_block)?)
        .bind(last_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a signed transaction before it is sent.
    pub async fn save_chain_tx(&self, tx: &ChainTxRecord) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO chain_txs (hash, chain_id, escrow, sender, nonce, raw, kind, body, \
             state, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(&tx.hash)
        .bind(i64_of(tx.chain_id)?)
        .bind(&tx.escrow)
        .bind(&tx.sender)
        .bind(i64_of(tx.nonce)?)
        .bind(&tx.raw)
        .bind(&tx.kind)
        .bind(&tx.body)
        .bind(&tx.state)
        .bind(tx.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A sent transaction's end: `mined`, `failed` or `dropped`.
    pub async fn end_chain_tx(
        &self,
        hash: &str,
        state: &str,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE chain_txs SET state = $1, updated_at_ms = $2 WHERE hash = $3 AND state = 'sent'",
        )
        .bind(state)
        .bind(now_ms)
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Transactions of `sender` on this escrow, newest first; only those
    /// still in flight when `in_flight`.
    pub async fn chain_txs(
        &self,
        chain_id: u64,
        escrow: &str,
        in_flight: bool,
        limit: i64,
    ) -> Result<Vec<ChainTxRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT hash, chain_id, escrow, sender, nonce, raw, kind, body, state, created_at_ms \
             FROM chain_txs WHERE chain_id = $1 AND escrow = $2 AND ($3 = 0 OR state = 'sent') \
             ORDER BY created_at_ms DESC, nonce DESC LIMIT $4",
        )
        .bind(i64_of(chain_id)?)
        .bind(escrow)
        .bind(i64::from(in_flight))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ChainTxRecord {
                    hash: row.try_get("hash")?,
                    chain_id: u64_of(row.try_get("chain_id")?)?,
                    escrow: row.try_get("escrow")?,
                    sender: row.try_get("sender")?,
                    nonce: u64_of(row.try_get("nonce")?)?,
                    raw: row.try_get("raw")?,
                    kind: row.try_get("kind")?,
                    body: row.try_get("body")?,
                    state: row.try_get("state")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect()
    }
}
