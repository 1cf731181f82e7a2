//! Chat rooms (one per stream: messages, mutes) and tips: each tip counted
//! once into its stream's running totals, with the message that shows it.

use sqlx::Row;
use streamweave_ledger::Amount;

use super::{Statement, Store, get_parsed, to_i64};
use crate::community::chat::ChatMessage;

/// Tips a stream received: how many, what they moved, the creator's share and
/// the platform's fee (base units).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TipTotals {
    pub tips: u64,
    pub gross: Amount,
    pub creator: Amount,
    pub fee: Amount,
}

impl TipTotals {
    /// The sum of two totals; `None` on overflow.
    pub fn plus(&self, other: &TipTotals) -> Option<TipTotals> {
        Some(TipTotals {
            tips: self.tips.checked_add(other.tips)?,
            gross: self.gross.checked_add(other.gross)?,
            creator: self.creator.checked_add(other.creator)?,
            fee: self.fee.checked_add(other.fee)?,
        })
    }
}

async fn insert_message(
    connection: &mut sqlx::AnyConnection,
    stream_id: &str,
    message: &ChatMessage,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chat_messages (id, stream_id, author, body, tip_amount, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&message.id)
    .bind(stream_id)
    .bind(&message.author)
    .bind(&message.text)
    .bind(&message.tip)
    .bind(message.time_ms)
    .execute(connection)
    .await?;
    Ok(())
}

/// A stream's tip totals; `lock` is appended to the query (the dialect's
/// row lock inside a transaction that updates them, else empty).
async fn tip_totals(
    connection: &mut sqlx::AnyConnection,
    stream_id: &str,
    lock: &str,
) -> Result<TipTotals, sqlx::Error> {
    let mut select = Statement::new(
        "SELECT tips, gross, creator, fee FROM stream_tip_totals WHERE stream_id = ",
    );
    select.bind(stream_id.to_string()).push(lock);
    let row = select.query()?.fetch_optional(connection).await?;
    let Some(row) = row else {
        return Ok(TipTotals::default());
    };
    Ok(TipTotals {
        tips: u64::try_from(row.try_get::<i64, _>("tips")?).unwrap_or(0),
        gross: get_parsed(&row, "gross")?,
        creator: get_parsed(&row, "creator")?,
        fee: get_parsed(&row, "fee")?,
    })
}

impl Store {
    /// Stores a chat message (durably, before anyone is told of it).
    pub async fn insert_chat_message(
        &self,
        stream_id: &str,
        message: &ChatMessage,
    ) -> Result<(), sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        insert_message(&mut connection, stream_id, message).await
    }

    /// Records a tip once per tip id: counts it into its stream's totals and
    /// stores the chat message that shows it, in one transaction. `false`
    /// when the tip was recorded before (nothing is written then).
    pub async fn record_tip(
        &self,
        tip_id: &str,
        stream_id: &str,
        tip: &TipTotals,
        message: &ChatMessage,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin_read_then_write())
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO stream_tips (tip_id, stream_id, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (tip_id) DO NOTHING",
        )
        .bind(tip_id)
        .bind(stream_id)
        .bind(message.time_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            return Ok(false);
        }
        // The totals row exists before it is read, so that concurrent
        // writers lock the same row.
        sqlx::query(
            "INSERT INTO stream_tip_totals (stream_id, tips, gross, creator, fee) \
             VALUES ($1, 0, '0', '0', '0') ON CONFLICT (stream_id) DO NOTHING",
        )
        .bind(stream_id)
        .execute(&mut *tx)
        .await?;
        let stored = tip_totals(&mut tx, stream_id, self.dialect.lock_rows()).await?;
        let sum = stored
            .plus(tip)
            .ok_or_else(|| sqlx::Error::Protocol("tip totals overflow".into()))?;
        sqlx::query(
            "UPDATE stream_tip_totals SET tips = $1, gross = $2, creator = $3, fee = $4 \
             WHERE stream_id = $5",
        )
        .bind(to_i64(sum.tips))
        .bind(sum.gross.to_string())
        .bind(sum.creator.to_string())
        .bind(sum.fee.to_string())
        .bind(stream_id)
        .execute(&mut *tx)
        .await?;
        insert_message(&mut tx, stream_id, message).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A stream's tip totals (zero when never tipped).
    pub async fn stream_tip_totals(&self, stream_id: &str) -> Result<TipTotals, sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        tip_totals(&mut connection, stream_id, "").await
    }

    /// A room's last `limit` messages that are not deleted, oldest first.
    pub async fn chat_history(
        &self,
        stream_id: &str,
        limit: i64,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        // `rowid` is insertion order: SQLite's own, a declared column on PostgreSQL.
        let rows = sqlx::query(
            "SELECT id, author, body, tip_amount, created_at_ms FROM chat_messages \
             WHERE stream_id = $1 AND deleted = 0 ORDER BY created_at_ms DESC, rowid DESC LIMIT $2",
        )
        .bind(stream_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut messages = rows
            .iter()
            .map(|row| {
                Ok(ChatMessage {
                    id: row.try_get("id")?,
                    author: row.try_get("author")?,
                    text: row.try_get("body")?,
                    tip: row.try_get("tip_amount")?,
                    time_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        messages.reverse();
        Ok(messages)
    }

    /// Marks a message deleted; `false` when the room has no such message.
    pub async fn delete_chat_message(
        &self,
        stream_id: &str,
        id: &str,
    ) -> Result<bool, sqlx::Error> {
        let done =
            sqlx::query("UPDATE chat_messages SET deleted = 1 WHERE stream_id = $1 AND id = $2")
                .bind(stream_id)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Mutes an account in a room and deletes its messages there, in one transaction.
    pub async fn mute(
        &self,
        stream_id: &str,
        address: &str,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO chat_mutes (stream_id, address, muted_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (stream_id, address) DO NOTHING",
        )
        .bind(stream_id)
        .bind(address)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE chat_messages SET deleted = 1 WHERE stream_id = $1 AND author = $2")
            .bind(stream_id)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    pub async fn unmute(&self, stream_id: &str, address: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM chat_mutes WHERE stream_id = $1 AND address = $2")
            .bind(stream_id)
            .bind(address)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn is_muted(&self, stream_id: &str, address: &str) -> Result<bool, sqlx::Error> {
        Ok(
            sqlx::query("SELECT 1 FROM chat_mutes WHERE stream_id = $1 AND address = $2")
                .bind(stream_id)
                .bind(address)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }
}
