//! The embedded database (SQLite, WAL, durable commits) and its queries.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::model::{AccessMode, RenditionRecord, SegmentRecord, StreamRecord, StreamState};

/// Opens (creating if needed) the database under `data_dir` and migrates it.
pub async fn open(data_dir: &Path) -> anyhow::Result<SqlitePool> {
    let path = data_dir.join("streamweave.sqlite");
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(std::time::Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?;
    sqlx::migrate!("migrations/sqlite").run(&pool).await?;
    Ok(pool)
}

/// Opens the database of an existing data directory (for offline tools);
/// a directory without one is an error, never a new empty database.
pub async fn open_existing(data_dir: &Path) -> anyhow::Result<Db> {
    if !data_dir.join("streamweave.sqlite").exists() {
        anyhow::bail!("no StreamWeave data in {}", data_dir.display());
    }
    Ok(Db::new(open(data_dir).await?))
}

/// Database queries about streams and media.
#[derive(Clone)]
pub struct Db {
    pool: SqlitePool,
}

fn stream_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<StreamRecord, sqlx::Error> {
    let state: String = row.try_get("state")?;
    Ok(StreamRecord {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        stream_key: row.try_get("stream_key")?,
        owner: row.try_get("owner")?,
        state: StreamState::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("bad state {state}").into()))?,
        created_at_ms: row.try_get("created_at_ms")?,
        started_at_ms: row.try_get("started_at_ms")?,
        ended_at_ms: row.try_get("ended_at_ms")?,
        end_error: row.try_get("end_error")?,
        access: match row.try_get::<&str, _>("access")? {
            "per_second" => AccessMode::PerSecond,
            _ => AccessMode::Free,
        },
        price: match (
            row.try_get::<Option<String>, _>("price_amount")?,
            row.try_get::<Option<i64>, _>("price_period_seconds")?,
        ) {
            (Some(amount), Some(period)) => Some(streamweave_ledger::Price {
                amount: amount
                    .parse()
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                period_seconds: u32::try_from(period)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            }),
            _ => None,
        },
        preview_seconds: u32::try_from(row.try_get::<i64, _>("preview_seconds")?).unwrap_or(0),
        retention_days: row
            .try_get::<Option<i64>, _>("retention_days")?
            .and_then(|d| u32::try_from(d).ok()),
        expired_at_ms: row.try_get("expired_at_ms")?,
        archive_public: row.try_get("archive_public")?,
        description: row.try_get("description")?,
        category: row.try_get("category")?,
        tags: row
            .try_get::<&str, _>("tags")?
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// Tips a stream received: how many, what they moved, the creator's share and
/// the platform's fee (base units).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TipTotals {
    pub tips: u64,
    pub gross: streamweave_ledger::Amount,
    pub creator: streamweave_ledger::Amount,
    pub fee: streamweave_ledger::Amount,
}

impl TipTotals {
    /// The sum of two totals; `None` on overflow.
    pub fn plus(&self, other: &TipTotals) -> Option<TipTotals> {
        Some(TipTotals {
            tips: self.tips.checked_add(other.tips)?,
            gross: streamweave_ledger::Amount(self.gross.0.checked_add(other.gross.0)?),
            creator: streamweave_ledger::Amount(self.creator.0.checked_add(other.creator.0)?),
            fee: streamweave_ledger::Amount(self.fee.0.checked_add(other.fee.0)?),
        })
    }
}

async fn insert_message(
    executor: impl sqlx::SqliteExecutor<'_>,
    stream_id: &str,
    message: &crate::community::chat::ChatMessage,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chat_messages (id, stream_id, author, body, tip_amount, created_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&message.id)
    .bind(stream_id)
    .bind(&message.author)
    .bind(&message.text)
    .bind(&message.tip)
    .bind(message.time_ms)
    .execute(executor)
    .await?;
    Ok(())
}

async fn tip_totals(
    connection: &mut sqlx::SqliteConnection,
    stream_id: &str,
) -> Result<TipTotals, sqlx::Error> {
    let row =
        sqlx::query("SELECT tips, gross, creator, fee FROM stream_tip_totals WHERE stream_id = ?")
            .bind(stream_id)
            .fetch_optional(connection)
            .await?;
    let Some(row) = row else {
        return Ok(TipTotals::default());
    };
    let amount = |column: &str| -> Result<streamweave_ledger::Amount, sqlx::Error> {
        row.try_get::<&str, _>(column)?
            .parse()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    Ok(TipTotals {
        tips: u64::try_from(row.try_get::<i64, _>("tips")?).unwrap_or(0),
        gross: amount("gross")?,
        creator: amount("creator")?,
        fee: amount("fee")?,
    })
}

/// Tags as stored: `,a,b,` (empty when none), so `instr(tags, ',a,')` finds one.
fn stored_tags(tags: &[String]) -> String {
    if tags.is_empty() {
        String::new()
    } else {
        format!(",{},", tags.join(","))
    }
}

/// What a stream list may be narrowed to; `None` matches everything.
#[derive(Debug, Default, Clone)]
pub struct StreamFilter {
    pub state: Option<StreamState>,
    /// Owner address, lower-case.
    pub owner: Option<String>,
    pub category: Option<String>,
    pub tag: Option<String>,
    /// Part of the title (any case), or a creator's address.
    pub search: Option<String>,
}

/// The columns `stream_from_row` reads (a macro, so queries stay static strings).
macro_rules! stream_columns {
    () => {
        "id, title, stream_key, owner, state, created_at_ms, started_at_ms, ended_at_ms, end_error, \
         access, price_amount, price_period_seconds, preview_seconds, retention_days, expired_at_ms, \
         archive_public, description, category, tags"
    };
}

impl Db {
    pub fn new(pool: SqlitePool) -> Self {
        Db { pool }
    }

    /// Marks streams that were live when the server stopped as ended.
    pub async fn end_interrupted_streams(&self, now_ms: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE streams SET state = 'ended', ended_at_ms = ?, \
             end_error = 'the server stopped while the stream was live' WHERE state = 'live'",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn insert_stream(&self, stream: &StreamRecord) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO streams (id, title, stream_key, owner, state, created_at_ms, access, price_amount, \
             price_period_seconds, preview_seconds, retention_days, archive_public, description, \
             category, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&stream.id)
        .bind(&stream.title)
        .bind(&stream.stream_key)
        .bind(&stream.owner)
        .bind(stream.state.as_str())
        .bind(stream.created_at_ms)
        .bind(stream.access.as_str())
        .bind(stream.price.map(|p| p.amount.to_string()))
        .bind(stream.price.map(|p| i64::from(p.period_seconds)))
        .bind(i64::from(stream.preview_seconds))
        .bind(stream.retention_days.map(i64::from))
        .bind(stream.archive_public)
        .bind(&stream.description)
        .bind(&stream.category)
        .bind(stored_tags(&stream.tags))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Saves what `PATCH /api/v1/streams/{id}` may change.
    pub async fn update_stream(&self, stream: &StreamRecord) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE streams SET title = ?, access = ?, price_amount = ?, price_period_seconds = ?, \
             preview_seconds = ?, retention_days = ?, archive_public = ?, description = ?, \
             category = ?, tags = ? WHERE id = ?",
        )
        .bind(&stream.title)
        .bind(stream.access.as_str())
        .bind(stream.price.map(|p| p.amount.to_string()))
        .bind(stream.price.map(|p| i64::from(p.period_seconds)))
        .bind(i64::from(stream.preview_seconds))
        .bind(stream.retention_days.map(i64::from))
        .bind(stream.archive_public)
        .bind(&stream.description)
        .bind(&stream.category)
        .bind(stored_tags(&stream.tags))
        .bind(&stream.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_stream_key(&self, id: &str, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE streams SET stream_key = ? WHERE id = ?")
            .bind(key)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn stream(&self, id: &str) -> Result<Option<StreamRecord>, sqlx::Error> {
        sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(stream_from_row)
        .transpose()
    }

    pub async fn stream_by_key(&self, key: &str) -> Result<Option<StreamRecord>, sqlx::Error> {
        sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE stream_key = ?"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(stream_from_row)
        .transpose()
    }

    /// Streams matching `filter`, newest first; at most `limit`.
    pub async fn streams(
        &self,
        filter: &StreamFilter,
        limit: i64,
    ) -> Result<Vec<StreamRecord>, sqlx::Error> {
        let state = filter.state.map(|s| s.as_str());
        let tag = filter.tag.as_ref().map(|t| format!(",{t},"));
        let rows = sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR owner = ?2) \
             AND (?3 IS NULL OR category = ?3) AND (?4 IS NULL OR instr(tags, ?4) > 0) \
             AND (?5 IS NULL OR instr(lower(title), lower(?5)) > 0 OR owner = lower(?5)) \
             ORDER BY created_at_ms DESC, id LIMIT ?6"
        ))
        .bind(state)
        .bind(&filter.owner)
        .bind(&filter.category)
        .bind(tag)
        .bind(&filter.search)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stream_from_row).collect()
    }

    /// Stores a chat message (durably, before anyone is told of it).
    pub async fn insert_chat_message(
        &self,
        stream_id: &str,
        message: &crate::community::chat::ChatMessage,
    ) -> Result<(), sqlx::Error> {
        insert_message(&self.pool, stream_id, message).await
    }

    /// Records a tip once per tip id: counts it into its stream's totals and
    /// stores the chat message that shows it, in one transaction. `false`
    /// when the tip was recorded before (nothing is written then).
    pub async fn record_tip(
        &self,
        tip_id: &str,
        stream_id: &str,
        tip: &TipTotals,
        message: &crate::community::chat::ChatMessage,
    ) -> Result<bool, sqlx::Error> {
        // IMMEDIATE: read-then-write of the totals.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inserted = sqlx::query(
            "INSERT INTO stream_tips (tip_id, stream_id, created_at_ms) VALUES (?, ?, ?) \
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
        let stored = tip_totals(&mut tx, stream_id).await?;
        let sum = stored
            .plus(tip)
            .ok_or_else(|| sqlx::Error::Protocol("tip totals overflow".into()))?;
        sqlx::query(
            "INSERT OR REPLACE INTO stream_tip_totals (stream_id, tips, gross, creator, fee) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(stream_id)
        .bind(i64::try_from(sum.tips).unwrap_or(i64::MAX))
        .bind(sum.gross.to_string())
        .bind(sum.creator.to_string())
        .bind(sum.fee.to_string())
        .execute(&mut *tx)
        .await?;
        insert_message(&mut *tx, stream_id, message).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A stream's tip totals (zero when never tipped).
    pub async fn stream_tip_totals(&self, stream_id: &str) -> Result<TipTotals, sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        tip_totals(&mut connection, stream_id).await
    }

    /// A room's last `limit` messages that are not deleted, oldest first.
    pub async fn chat_history(
        &self,
        stream_id: &str,
        limit: i64,
    ) -> Result<Vec<crate::community::chat::ChatMessage>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, author, body, tip_amount, created_at_ms FROM chat_messages \
             WHERE stream_id = ? AND deleted = 0 ORDER BY created_at_ms DESC, rowid DESC LIMIT ?",
        )
        .bind(stream_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut messages = rows
            .iter()
            .map(|row| {
                Ok(crate::community::chat::ChatMessage {
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
            sqlx::query("UPDATE chat_messages SET deleted = 1 WHERE stream_id = ? AND id = ?")
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
            "INSERT INTO chat_mutes (stream_id, address, muted_at_ms) VALUES (?, ?, ?) \
             ON CONFLICT (stream_id, address) DO NOTHING",
        )
        .bind(stream_id)
        .bind(address)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE chat_messages SET deleted = 1 WHERE stream_id = ? AND author = ?")
            .bind(stream_id)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    pub async fn unmute(&self, stream_id: &str, address: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM chat_mutes WHERE stream_id = ? AND address = ?")
            .bind(stream_id)
            .bind(address)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn is_muted(&self, stream_id: &str, address: &str) -> Result<bool, sqlx::Error> {
        Ok(
            sqlx::query("SELECT 1 FROM chat_mutes WHERE stream_id = ? AND address = ?")
                .bind(stream_id)
                .bind(address)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Moves an idle stream to live with its ladder, in one transaction.
    /// Returns `false` when the stream was not idle.
    pub async fn start_stream(
        &self,
        id: &str,
        now_ms: i64,
        source: (u32, u32),
        renditions: &[RenditionRecord],
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE streams SET state = 'live', started_at_ms = ?, source_width = ?, source_height = ? \
             WHERE id = ? AND state = 'idle'",
        )
        .bind(now_ms)
        .bind(source.0)
        .bind(source.1)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        for (position, rendition) in renditions.iter().enumerate() {
            sqlx::query(
                "INSERT INTO renditions (stream_id, name, position, kind, width, height, bandwidth_bps, codecs) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(&rendition.name)
            .bind(position as i64)
            .bind(if rendition.height.is_some() { "video" } else { "audio" })
            .bind(rendition.width)
            .bind(rendition.height)
            .bind(rendition.bandwidth_bps as i64)
            .bind(&rendition.codecs)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn end_stream(
        &self,
        id: &str,
        now_ms: i64,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE streams SET state = 'ended', ended_at_ms = ?, end_error = ? WHERE id = ? AND state != 'ended'",
        )
        .bind(now_ms)
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_init(
        &self,
        id: &str,
        rendition: &str,
        cid: &str,
        size: u64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE renditions SET init_cid = ?, init_size = ? WHERE stream_id = ? AND name = ?",
        )
        .bind(cid)
        .bind(size as i64)
        .bind(id)
        .bind(rendition)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Inserts segments in one transaction (one durable commit).
    pub async fn insert_segments(
        &self,
        id: &str,
        segments: impl Iterator<Item = &SegmentRecord>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for segment in segments {
            sqlx::query(
                "INSERT OR IGNORE INTO segments (stream_id, rendition, sequence, duration_ms, size, cid, created_at_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(&segment.rendition)
            .bind(segment.sequence as i64)
            .bind(i64::from(segment.duration_ms))
            .bind(segment.size as i64)
            .bind(&segment.cid)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Which streams' access rules govern a stored file: `None` when no
    /// stream references the CID, else whether some free stream does.
    pub async fn cid_is_free(&self, cid: &str) -> Result<Option<bool>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS streams, COALESCE(SUM(s.access = 'free' OR s.archive_public = 1), 0) AS free FROM streams s WHERE s.id IN \
             (SELECT stream_id FROM segments WHERE cid = ?1 UNION SELECT stream_id FROM renditions WHERE init_cid = ?1)",
        )
        .bind(cid)
        .fetch_one(&self.pool)
        .await?;
        let streams: i64 = row.try_get("streams")?;
        let free: i64 = row.try_get("free")?;
        Ok((streams > 0).then_some(free > 0))
    }

    /// The ladder of a stream, in position order.
    pub async fn renditions(&self, id: &str) -> Result<Vec<RenditionRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT name, width, height, bandwidth_bps, codecs, init_cid, init_size FROM renditions \
             WHERE stream_id = ? ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RenditionRecord {
                    name: row.try_get("name")?,
                    width: row.try_get("width")?,
                    height: row.try_get("height")?,
                    bandwidth_bps: row.try_get::<i64, _>("bandwidth_bps")?.max(0) as u64,
                    codecs: row.try_get("codecs")?,
                    init_cid: row.try_get("init_cid")?,
                    init_size: row
                        .try_get::<Option<i64>, _>("init_size")?
                        .map(|s| s.max(0) as u64),
                })
            })
            .collect()
    }

    /// Every segment of a stream, by rendition position then sequence.
    pub async fn segments(&self, id: &str) -> Result<Vec<SegmentRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT s.rendition, s.sequence, s.duration_ms, s.size, s.cid FROM segments s \
             JOIN renditions r ON r.stream_id = s.stream_id AND r.name = s.rendition \
             WHERE s.stream_id = ? ORDER BY r.position, s.sequence",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SegmentRecord {
                    rendition: row.try_get("rendition")?,
                    sequence: row.try_get::<i64, _>("sequence")?.max(0) as u64,
                    duration_ms: row
                        .try_get::<i64, _>("duration_ms")?
                        .clamp(0, i64::from(u32::MAX)) as u32,
                    size: row.try_get::<i64, _>("size")?.max(0) as u64,
                    cid: row.try_get("cid")?,
                })
            })
            .collect()
    }

    /// Adds counted watch statistics, all or nothing.
    pub async fn add_viewer_stats(
        &self,
        batch: &[(
            (String, streamweave_ledger::Address),
            crate::money::stats::ViewerDelta,
        )],
    ) -> Result<(), sqlx::Error> {
        // IMMEDIATE: this transaction reads then writes, and a deferred one
        // could not upgrade to a writer after another connection's commit
        // (SQLITE_BUSY without waiting); taking the write lock first waits
        // for it under the busy timeout instead.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for ((stream_id, viewer), delta) in batch {
            let viewer = format!("{viewer:#x}");
            let row = sqlx::query(
                "SELECT first_session_ms, sessions, paid_media_ms, gross, net, fee FROM stream_viewers \
                 WHERE stream_id = ? AND viewer = ?",
            )
            .bind(stream_id)
            .bind(&viewer)
            .fetch_optional(&mut *tx)
            .await?;
            let stored = match &row {
                Some(row) => viewer_delta_from_row(row)?,
                None => crate::money::stats::ViewerDelta::default(),
            };
            let sum = stored
                .merged(delta)
                .ok_or_else(|| sqlx::Error::Protocol("watch statistics overflow".into()))?;
            let Some(first_session_ms) = sum.session_started_ms else {
                // Every delta comes from a session this server started, which
                // was counted first; a row without one would be a bug.
                tracing::warn!(stream = %stream_id, %viewer, "watch statistics without a session; skipped");
                continue;
            };
            sqlx::query(
                "INSERT OR REPLACE INTO stream_viewers \
                 (stream_id, viewer, first_session_ms, sessions, paid_media_ms, gross, net, fee) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(stream_id)
            .bind(&viewer)
            .bind(first_session_ms)
            .bind(i64::try_from(sum.sessions).unwrap_or(i64::MAX))
            .bind(i64::try_from(sum.paid_media_ms).unwrap_or(i64::MAX))
            .bind(sum.gross.to_string())
            .bind(sum.net.to_string())
            .bind(sum.fee.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// A stream's written watch statistics, and the viewers they count.
    pub async fn stream_stats(
        &self,
        stream_id: &str,
    ) -> Result<
        (
            crate::money::stats::StreamTotals,
            std::collections::HashSet<streamweave_ledger::Address>,
        ),
        sqlx::Error,
    > {
        let rows = sqlx::query(
            "SELECT viewer, first_session_ms, sessions, paid_media_ms, gross, net, fee \
             FROM stream_viewers WHERE stream_id = ?",
        )
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await?;
        let mut totals = crate::money::stats::StreamTotals::default();
        let mut viewers = std::collections::HashSet::with_capacity(rows.len());
        for row in &rows {
            let viewer: String = row.try_get("viewer")?;
            let viewer = viewer
                .parse()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            totals.add(&viewer_delta_from_row(row)?, viewers.insert(viewer));
        }
        Ok((totals, viewers))
    }

    /// Records an archive root built for a stream and the blocks it added,
    /// in one transaction (idempotent). It is complete when the stream has
    /// ended and the archive holds every segment.
    pub async fn insert_archive(
        &self,
        stream_id: &str,
        segments: usize,
        summary: &crate::archive::ArchiveSummary,
        added: &[streamweave_cas::Cid],
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO archives \
             (root_cid, stream_id, segments, car_size, piece_cid, piece_size, built_at_ms, complete) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, \
             (SELECT s.state = 'ended' AND ?3 = (SELECT COUNT(*) FROM segments g WHERE g.stream_id = s.id) \
              FROM streams s WHERE s.id = ?2)) \
             ON CONFLICT (root_cid) DO UPDATE SET complete = MAX(complete, excluded.complete)",
        )
        .bind(&summary.root_cid)
        .bind(stream_id)
        .bind(i64::try_from(segments).unwrap_or(i64::MAX))
        .bind(i64::try_from(summary.car_size).unwrap_or(i64::MAX))
        .bind(&summary.piece_cid)
        .bind(i64::try_from(summary.piece_size).unwrap_or(i64::MAX))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        for cid in added {
            sqlx::query("INSERT OR IGNORE INTO archive_blocks (cid, root_cid) VALUES (?, ?)")
                .bind(cid.to_string())
                .bind(&summary.root_cid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// The archive of a stream at `segments` segments, if built.
    pub async fn archive_at(
        &self,
        stream_id: &str,
        segments: usize,
    ) -> Result<Option<crate::archive::ArchiveSummary>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT root_cid, car_size, piece_cid, piece_size FROM archives \
             WHERE stream_id = ? AND segments = ? ORDER BY built_at_ms DESC LIMIT 1",
        )
        .bind(stream_id)
        .bind(i64::try_from(segments).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(crate::archive::ArchiveSummary {
                root_cid: row.try_get("root_cid")?,
                car_size: row.try_get::<i64, _>("car_size")?.max(0) as u64,
                piece_cid: row.try_get("piece_cid")?,
                piece_size: row.try_get::<i64, _>("piece_size")?.max(0) as u64,
            })
        })
        .transpose()
    }

    /// The stream an archive root, or a block an archive added, belongs to.
    pub async fn archive_stream(&self, cid: &str) -> Result<Option<StreamRecord>, sqlx::Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE id = (SELECT stream_id FROM archives WHERE root_cid = ?1 \
             UNION SELECT a.stream_id FROM archive_blocks b JOIN archives a ON a.root_cid = b.root_cid \
             WHERE b.cid = ?1 LIMIT 1)"
        ))
        .bind(cid)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(stream_from_row).transpose()
    }

    /// Ended streams whose complete archive is not built yet: (id, segments).
    pub async fn streams_needing_archive(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, usize)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT s.id, (SELECT COUNT(*) FROM segments g WHERE g.stream_id = s.id) AS n \
             FROM streams s WHERE s.state = 'ended' \
             AND EXISTS (SELECT 1 FROM segments g WHERE g.stream_id = s.id) \
             AND NOT EXISTS (SELECT 1 FROM archives a WHERE a.stream_id = s.id AND a.complete = 1) \
             ORDER BY s.ended_at_ms LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("id")?,
                    row.try_get::<i64, _>("n")?.max(0) as usize,
                ))
            })
            .collect()
    }

    /// Adds a pending replica on `target` for every complete archive of an
    /// ended stream that has none there; answers how many.
    pub async fn add_missing_replicas(
        &self,
        target: &str,
        now_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        sqlx::query(
            "INSERT OR IGNORE INTO archive_replicas \
             (root_cid, target, state, attempts, updated_at_ms, next_attempt_ms) \
             SELECT a.root_cid, ?1, 'pending', 0, ?2, ?2 FROM archives a WHERE a.complete = 1 \
             AND NOT EXISTS (SELECT 1 FROM archive_replicas r WHERE r.root_cid = a.root_cid AND r.target = ?1)",
        )
        .bind(target)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected())
    }

    /// Replicas due for a write or a check.
    pub async fn due_replicas(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<crate::archive::replication::ReplicaRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT r.root_cid, r.target, r.state, r.attempts, r.last_error, r.updated_at_ms, \
             r.next_attempt_ms, a.piece_cid, a.stream_id FROM archive_replicas r \
             JOIN archives a ON a.root_cid = r.root_cid WHERE r.next_attempt_ms <= ? \
             ORDER BY r.next_attempt_ms LIMIT ?",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(replica_from_row).collect()
    }

    /// Every replica, by stream and root (for status views).
    pub async fn replicas(
        &self,
        root_cid: Option<&str>,
    ) -> Result<Vec<crate::archive::replication::ReplicaRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT r.root_cid, r.target, r.state, r.attempts, r.last_error, r.updated_at_ms, \
             r.next_attempt_ms, a.piece_cid, a.stream_id FROM archive_replicas r \
             JOIN archives a ON a.root_cid = r.root_cid WHERE ?1 IS NULL OR r.root_cid = ?1 \
             ORDER BY a.stream_id, r.root_cid, r.target",
        )
        .bind(root_cid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(replica_from_row).collect()
    }

    /// Records a replica's new state.
    pub async fn set_replica(
        &self,
        root_cid: &str,
        target: &str,
        update: &crate::archive::replication::ReplicaUpdate<'_>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let crate::archive::replication::ReplicaUpdate {
            state,
            attempts,
            last_error,
            next_attempt_ms,
        } = *update;
        sqlx::query(
            "UPDATE archive_replicas SET state = ?, attempts = ?, last_error = ?, \
             updated_at_ms = ?, next_attempt_ms = ? WHERE root_cid = ? AND target = ?",
        )
        .bind(state)
        .bind(i64::from(attempts))
        .bind(last_error)
        .bind(now_ms)
        .bind(next_attempt_ms)
        .bind(root_cid)
        .bind(target)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Removes the recordings of ended streams past their retention, in one
    /// transaction each: segments, init references, archives and their
    /// records. Answers each expired stream with the archive roots it had.
    pub async fn expire_streams(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, Vec<String>)>, sqlx::Error> {
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM streams WHERE state = 'ended' AND expired_at_ms IS NULL \
             AND retention_days IS NOT NULL AND ended_at_ms + retention_days * 86400000 <= ? LIMIT 16",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut expired = Vec::with_capacity(due.len());
        for id in due {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let roots: Vec<String> =
                sqlx::query_scalar("SELECT root_cid FROM archives WHERE stream_id = ?")
                    .bind(&id)
                    .fetch_all(&mut *tx)
                    .await?;
            for statement in [
                "DELETE FROM archive_replicas WHERE root_cid IN (SELECT root_cid FROM archives WHERE stream_id = ?1)",
                "DELETE FROM archive_blocks WHERE root_cid IN (SELECT root_cid FROM archives WHERE stream_id = ?1)",
                "DELETE FROM archives WHERE stream_id = ?1",
                "DELETE FROM segments WHERE stream_id = ?1",
                "UPDATE renditions SET init_cid = NULL, init_size = NULL WHERE stream_id = ?1",
            ] {
                sqlx::query(statement).bind(&id).execute(&mut *tx).await?;
            }
            sqlx::query("UPDATE streams SET expired_at_ms = ? WHERE id = ?")
                .bind(now_ms)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            expired.push((id, roots));
        }
        Ok(expired)
    }

    /// Every CID the database still references: segments, init files,
    /// archive roots and the blocks archives added. (Their DAGs' inner
    /// blocks are found by walking from these.)
    pub async fn referenced_cids(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT cid FROM segments UNION SELECT init_cid FROM renditions WHERE init_cid IS NOT NULL \
             UNION SELECT root_cid FROM archives UNION SELECT cid FROM archive_blocks",
        )
        .fetch_all(&self.pool)
        .await
    }
}

fn viewer_delta_from_row(
    row: &sqlx::sqlite::SqliteRow,
) -> Result<crate::money::stats::ViewerDelta, sqlx::Error> {
    let amount = |column: &str| -> Result<streamweave_ledger::Amount, sqlx::Error> {
        row.try_get::<&str, _>(column)?
            .parse()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    Ok(crate::money::stats::ViewerDelta {
        session_started_ms: Some(row.try_get("first_session_ms")?),
        sessions: row.try_get::<i64, _>("sessions")?.max(0) as u64,
        paid_media_ms: row.try_get::<i64, _>("paid_media_ms")?.max(0) as u64,
        gross: amount("gross")?,
        net: amount("net")?,
        fee: amount("fee")?,
    })
}

fn replica_from_row(
    row: &sqlx::sqlite::SqliteRow,
) -> Result<crate::archive::replication::ReplicaRecord, sqlx::Error> {
    Ok(crate::archive::replication::ReplicaRecord {
        root_cid: row.try_get("root_cid")?,
        target: row.try_get("target")?,
        state: row.try_get("state")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        last_error: row.try_get("last_error")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        next_attempt_ms: row.try_get("next_attempt_ms")?,
        piece_cid: row.try_get("piece_cid")?,
        stream_id: row.try_get("stream_id")?,
    })
}
