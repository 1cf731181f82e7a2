//! Streams, their renditions (the ladder) and segments (the media index).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, decode_err, get_u64, to_i64};
use crate::model::{
    AccessMode, RenditionRecord, SegmentRecord, StreamRecord, StreamSource, StreamState,
};

/// The columns `stream_from_row` reads (a macro, so queries stay static strings).
macro_rules! stream_columns {
    () => {
        "id, title, stream_key, owner, state, created_at_ms, started_at_ms, ended_at_ms, end_error, \
         access, price_amount, price_period_seconds, preview_seconds, retention_days, expired_at_ms, \
         archive_public, description, category, tags, source, duration_ms, member_tiers, views"
    };
}
pub(super) use stream_columns;

pub(super) fn stream_from_row(row: &AnyRow) -> Result<StreamRecord, sqlx::Error> {
    let state: String = row.try_get("state")?;
    Ok(StreamRecord {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        stream_key: row.try_get("stream_key")?,
        owner: row.try_get("owner")?,
        state: StreamState::parse(&state)
            .ok_or_else(|| decode_err(format!("bad state {state}")))?,
        created_at_ms: row.try_get("created_at_ms")?,
        started_at_ms: row.try_get("started_at_ms")?,
        ended_at_ms: row.try_get("ended_at_ms")?,
        end_error: row.try_get("end_error")?,
        access: match row.try_get::<&str, _>("access")? {
            "free" => AccessMode::Free,
            "per_second" => AccessMode::PerSecond,
            "ticket" => AccessMode::Ticket,
            "members" => AccessMode::Members,
            other => return Err(decode_err(format!("bad access {other}"))),
        },
        price: match (
            row.try_get::<Option<String>, _>("price_amount")?,
            row.try_get::<Option<i64>, _>("price_period_seconds")?,
        ) {
            (Some(amount), Some(period)) => Some(streamweave_ledger::Price {
                amount: amount.parse().map_err(decode_err)?,
                period_seconds: u32::try_from(period).map_err(decode_err)?,
            }),
            _ => None,
        },
        preview_seconds: u32::try_from(row.try_get::<i64, _>("preview_seconds")?).unwrap_or(0),
        retention_days: row
            .try_get::<Option<i64>, _>("retention_days")?
            .and_then(|d| u32::try_from(d).ok()),
        expired_at_ms: row.try_get("expired_at_ms")?,
        archive_public: row.try_get::<i64, _>("archive_public")? != 0,
        description: row.try_get("description")?,
        category: row.try_get("category")?,
        tags: row
            .try_get::<&str, _>("tags")?
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        source: match row.try_get::<&str, _>("source")? {
            "upload" => StreamSource::Upload,
            _ => StreamSource::Live,
        },
        duration_ms: row
            .try_get::<Option<i64>, _>("duration_ms")?
            .and_then(|ms| u64::try_from(ms).ok()),
        member_tiers: serde_json::from_str(row.try_get::<&str, _>("member_tiers")?)
            .map_err(decode_err)?,
        views: u64::try_from(row.try_get::<i64, _>("views")?).unwrap_or(0),
    })
}

fn member_tiers_json(tiers: &[String]) -> String {
    serde_json::to_string(tiers).unwrap_or_else(|_| "[]".into())
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
    /// Only live broadcasts, or only uploaded videos.
    pub source: Option<StreamSource>,
    /// Only this access (`free`, `per_second`, `members`, `ticket`).
    pub access: Option<&'static str>,
    /// Only videos and recordings at least this long / shorter than this.
    pub min_duration_ms: Option<i64>,
    pub max_duration_ms: Option<i64>,
    /// Most played first instead of newest first.
    pub most_watched: bool,
}

impl Store {
    /// Marks streams this node was ingesting when it stopped as ended
    /// (other nodes' live streams go on).
    pub async fn end_interrupted_streams(&self, now_ms: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE streams SET state = 'ended', ended_at_ms = $1, \
             end_error = 'the server stopped while the stream was live' WHERE state = 'live' \
             AND (live_node IS NULL OR live_node = $2)",
        )
        .bind(now_ms)
        .bind(&*self.node)
        .execute(&self.pool)
        .await?;
        // Their events ended with them.
        sqlx::query(
            "UPDATE events SET state = 'ended', ended_at_ms = $1 WHERE state = 'live' \
             AND stream_id IN (SELECT id FROM streams WHERE state = 'ended')",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn insert_stream(&self, stream: &StreamRecord) -> Result<(), sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        self.insert_stream_in(&mut connection, stream).await
    }

    /// Inserts a stream row on `connection` (inside a caller's transaction).
    pub(super) async fn insert_stream_in(
        &self,
        connection: &mut sqlx::AnyConnection,
        stream: &StreamRecord,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO streams (id, title, stream_key, owner, state, created_at_ms, access, price_amount, \
             price_period_seconds, preview_seconds, retention_days, archive_public, description, \
             category, tags, source, member_tiers) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
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
        .bind(i64::from(stream.archive_public))
        .bind(&stream.description)
        .bind(&stream.category)
        .bind(stored_tags(&stream.tags))
        .bind(stream.source.as_str())
        .bind(member_tiers_json(&stream.member_tiers))
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    /// Saves what `PATCH /api/v1/streams/{id}` may change.
    pub async fn update_stream(&self, stream: &StreamRecord) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE streams SET title = $1, access = $2, price_amount = $3, price_period_seconds = $4, \
             preview_seconds = $5, retention_days = $6, archive_public = $7, description = $8, \
             category = $9, tags = $10, member_tiers = $11 WHERE id = $12",
        )
        .bind(&stream.title)
        .bind(stream.access.as_str())
        .bind(stream.price.map(|p| p.amount.to_string()))
        .bind(stream.price.map(|p| i64::from(p.period_seconds)))
        .bind(i64::from(stream.preview_seconds))
        .bind(stream.retention_days.map(i64::from))
        .bind(i64::from(stream.archive_public))
        .bind(&stream.description)
        .bind(&stream.category)
        .bind(stored_tags(&stream.tags))
        .bind(member_tiers_json(&stream.member_tiers))
        .bind(&stream.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_stream_key(&self, id: &str, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE streams SET stream_key = $1 WHERE id = $2")
            .bind(key)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Adds plays counted in memory since the last time.
    pub async fn add_views(&self, views: &[(String, u64)]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for (id, count) in views {
            sqlx::query("UPDATE streams SET views = views + $1 WHERE id = $2")
                .bind(i64::try_from(*count).unwrap_or(i64::MAX))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    pub async fn stream(&self, id: &str) -> Result<Option<StreamRecord>, sqlx::Error> {
        sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(stream_from_row)
        .transpose()
    }

    /// The picture size of a stream's source (width, height), once it went
    /// live (or, for a video, once probed).
    pub async fn stream_source_size(&self, id: &str) -> Result<Option<(u32, u32)>, sqlx::Error> {
        let row = sqlx::query("SELECT source_width, source_height FROM streams WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let side = |column: &str| -> Result<Option<u32>, sqlx::Error> {
            Ok(row
                .try_get::<Option<i64>, _>(column)?
                .and_then(|v| u32::try_from(v).ok()))
        };
        Ok(side("source_width")?.zip(side("source_height")?))
    }

    pub async fn stream_by_key(&self, key: &str) -> Result<Option<StreamRecord>, sqlx::Error> {
        sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE stream_key = $1"
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
        // A recording's length is how long it was live.
        let sql = |order: &str| {
            format!(
                "SELECT {} FROM streams WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR owner = $2) \
                 AND ($3 IS NULL OR category = $3) AND ($4 IS NULL OR instr(tags, $4) > 0) \
                 AND ($5 IS NULL OR instr(lower(title), lower($5)) > 0 OR owner = lower($5)) \
                 AND ($7 IS NULL OR source = $7) AND ($8 IS NULL OR access = $8) \
                 AND ($9 IS NULL OR COALESCE(duration_ms, CASE WHEN state = 'ended' \
                     THEN ended_at_ms - started_at_ms END) >= $9) \
                 AND ($10 IS NULL OR COALESCE(duration_ms, CASE WHEN state = 'ended' \
                     THEN ended_at_ms - started_at_ms END) < $10) \
                 ORDER BY {order} LIMIT $6",
                stream_columns!()
            )
        };
        let sql = if filter.most_watched {
            sql("views DESC, created_at_ms DESC, id")
        } else {
            sql("created_at_ms DESC, id")
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(state)
            .bind(&filter.owner)
            .bind(&filter.category)
            .bind(tag)
            .bind(&filter.search)
            .bind(limit)
            .bind(filter.source.map(|s| s.as_str()))
            .bind(filter.access)
            .bind(filter.min_duration_ms)
            .bind(filter.max_duration_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stream_from_row).collect()
    }

    /// Moves an idle stream to live with its ladder, in one transaction
    /// (an event's stream takes its event live with it). Returns `false`
    /// when the stream was not idle, or is the room of an event that is no
    /// longer scheduled (cancelled, finalized).
    pub async fn start_stream(
        &self,
        id: &str,
        now_ms: i64,
        source: (u32, u32),
        renditions: &[RenditionRecord],
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE streams SET state = 'live', started_at_ms = $1, source_width = $2, source_height = $3, \
             live_node = $5, ingest_seen_ms = $1 WHERE id = $4 AND state = 'idle' \
             AND NOT EXISTS (SELECT 1 FROM events WHERE stream_id = $4 AND state <> 'scheduled')",
        )
        .bind(now_ms)
        .bind(i64::from(source.0))
        .bind(i64::from(source.1))
        .bind(id)
        .bind(&*self.node)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE events SET state = 'live', went_live_at_ms = $1 WHERE stream_id = $2 AND state = 'scheduled'",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        insert_renditions(&mut tx, id, renditions).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn end_stream(
        &self,
        id: &str,
        now_ms: i64,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE streams SET state = 'ended', ended_at_ms = $1, end_error = $2 WHERE id = $3 AND state <> 'ended'",
        )
        .bind(now_ms)
        .bind(error)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        end_live_event(&mut tx, id, now_ms).await?;
        tx.commit().await?;
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
            "UPDATE renditions SET init_cid = $1, init_size = $2 WHERE stream_id = $3 AND name = $4",
        )
        .bind(cid)
        .bind(to_i64(size))
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
                "INSERT INTO segments (stream_id, rendition, sequence, duration_ms, size, cid, created_at_ms, init_cid) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(&segment.rendition)
            .bind(to_i64(segment.sequence))
            .bind(i64::from(segment.duration_ms))
            .bind(to_i64(segment.size))
            .bind(&segment.cid)
            .bind(now_ms)
            .bind(segment.init_cid.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Which streams' access rules govern a stored file: `None` when no
    /// stream references the CID, else whether some free stream does.
    pub async fn cid_is_free(&self, cid: &str) -> Result<Option<bool>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS streams, \
             COUNT(CASE WHEN s.access = 'free' OR s.archive_public = 1 THEN 1 END) AS free \
             FROM streams s WHERE s.id IN \
             (SELECT stream_id FROM segments WHERE cid = $1 OR init_cid = $1 \
              UNION SELECT stream_id FROM renditions WHERE init_cid = $1)",
        )
        .bind(cid)
        .fetch_one(&self.pool)
        .await?;
        let streams: i64 = row.try_get("streams")?;
        let free: i64 = row.try_get("free")?;
        if streams == 0 {
            // A collectible's metadata and a pool round's statement are public.
            let metadata = sqlx::query(
                "SELECT 1 AS found FROM collectibles WHERE metadata_cid = $1 \
                 UNION SELECT 1 AS found FROM pool_rounds WHERE statement_cid = $1",
            )
            .bind(cid)
            .fetch_optional(&self.pool)
            .await?;
            return Ok(metadata.map(|_| true));
        }
        Ok(Some(free > 0))
    }

    /// The ladder of a stream, in position order.
    pub async fn renditions(&self, id: &str) -> Result<Vec<RenditionRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT name, width, height, bandwidth_bps, codecs, init_cid, init_size FROM renditions \
             WHERE stream_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let dimension = |value: Option<i64>| value.map(|v| u32::try_from(v).unwrap_or(0));
        rows.iter()
            .map(|row| {
                Ok(RenditionRecord {
                    name: row.try_get("name")?,
                    width: dimension(row.try_get("width")?),
                    height: dimension(row.try_get("height")?),
                    bandwidth_bps: get_u64(row, "bandwidth_bps")?,
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
            "SELECT s.rendition, s.sequence, s.duration_ms, s.size, s.cid, s.init_cid FROM segments s \
             JOIN renditions r ON r.stream_id = s.stream_id AND r.name = s.rendition \
             WHERE s.stream_id = $1 ORDER BY r.position, s.sequence",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SegmentRecord {
                    rendition: row.try_get("rendition")?,
                    sequence: get_u64(row, "sequence")?,
                    duration_ms: u32::try_from(get_u64(row, "duration_ms")?).unwrap_or(u32::MAX),
                    size: get_u64(row, "size")?,
                    cid: row.try_get("cid")?,
                    init_cid: row.try_get("init_cid")?,
                })
            })
            .collect()
    }

    /// The ingesting node's sign of life for its live streams. Answers the
    /// ones live on another node now (a publisher continued them there
    /// while this node was unreachable): their pipelines here must stop.
    /// A stream still starting here is neither.
    pub async fn heartbeat_ingest(
        &self,
        ids: &[String],
        now_ms: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut lost = Vec::new();
        for id in ids {
            let done = sqlx::query(
                "UPDATE streams SET ingest_seen_ms = $1 WHERE id = $2 AND state = 'live' AND live_node = $3",
            )
            .bind(now_ms)
            .bind(id)
            .bind(&*self.node)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 0 {
                // Not live yet (still starting) is not lost: live elsewhere is.
                let elsewhere: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM streams WHERE id = $1 AND state = 'live' \
                     AND (live_node IS NULL OR live_node <> $2)",
                )
                .bind(id)
                .bind(&*self.node)
                .fetch_optional(&self.pool)
                .await?;
                if elsewhere.is_some() {
                    lost.push(id.clone());
                }
            }
        }
        Ok(lost)
    }

    /// Makes this node the ingesting node of a live stream whose ingest has
    /// been silent since before `silent_since_ms` (its node died): `false`
    /// when it is not live, or its ingest is alive, or another node won.
    pub async fn claim_silent_stream(
        &self,
        id: &str,
        now_ms: i64,
        silent_since_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE streams SET live_node = $1, ingest_seen_ms = $2 WHERE id = $3 AND state = 'live' \
             AND COALESCE(ingest_seen_ms, started_at_ms, 0) < $4",
        )
        .bind(&*self.node)
        .bind(now_ms)
        .bind(id)
        .bind(silent_since_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The next sequence number of each rendition of a stream that has segments.
    pub async fn next_sequences(&self, id: &str) -> Result<Vec<(String, u64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT rendition, CAST(MAX(sequence) + 1 AS BIGINT) AS next FROM segments \
             WHERE stream_id = $1 GROUP BY rendition",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("rendition")?, get_u64(row, "next")?)))
            .collect()
    }

    /// Live streams whose ingest has been silent since before `silent_since_ms`.
    pub async fn silent_streams(&self, silent_since_ms: i64) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT id FROM streams WHERE state = 'live' \
             AND COALESCE(ingest_seen_ms, started_at_ms, 0) < $1 ORDER BY id",
        )
        .bind(silent_since_ms)
        .fetch_all(&self.pool)
        .await
    }

    /// Ends a live stream whose ingest is still silent since before
    /// `silent_since_ms` (its publisher did not come back), with its event:
    /// `false` when its ingest came back or it already ended.
    pub async fn end_silent_stream(
        &self,
        id: &str,
        now_ms: i64,
        silent_since_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE streams SET state = 'ended', ended_at_ms = $1, \
             end_error = 'the ingesting server stopped and the publisher did not come back' \
             WHERE id = $2 AND state = 'live' AND COALESCE(ingest_seen_ms, started_at_ms, 0) < $3",
        )
        .bind(now_ms)
        .bind(id)
        .bind(silent_since_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        end_live_event(&mut tx, id, now_ms).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// The live event whose room a stream is ends with it.
async fn end_live_event(
    tx: &mut sqlx::AnyConnection,
    stream_id: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE events SET state = 'ended', ended_at_ms = $1 WHERE stream_id = $2 AND state = 'live'",
    )
    .bind(now_ms)
    .bind(stream_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A stream's ladder, in order.
pub(super) async fn insert_renditions(
    tx: &mut sqlx::AnyConnection,
    id: &str,
    renditions: &[RenditionRecord],
) -> Result<(), sqlx::Error> {
    for (position, rendition) in renditions.iter().enumerate() {
        sqlx::query(
            "INSERT INTO renditions (stream_id, name, position, kind, width, height, bandwidth_bps, codecs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(&rendition.name)
        .bind(to_i64(position))
        .bind(if rendition.height.is_some() { "video" } else { "audio" })
        .bind(rendition.width.map(i64::from))
        .bind(rendition.height.map(i64::from))
        .bind(to_i64(rendition.bandwidth_bps))
        .bind(&rendition.codecs)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
