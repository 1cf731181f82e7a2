//! Watch statistics per stream and viewer (`stream_viewers`): counted in
//! memory by `crate::money::stats` and added here in batches.

use std::collections::{HashMap, HashSet};

use sqlx::Row;
use sqlx::any::AnyRow;
use streamweave_ledger::Address;

use super::{Statement, Store, get_parsed, get_u64, to_i64};
use crate::money::stats::{StreamTotals, ViewerDelta};

fn viewer_delta_from_row(row: &AnyRow) -> Result<ViewerDelta, sqlx::Error> {
    Ok(ViewerDelta {
        session_started_ms: Some(row.try_get("first_session_ms")?),
        sessions: get_u64(row, "sessions")?,
        paid_media_ms: get_u64(row, "paid_media_ms")?,
        gross: get_parsed(row, "gross")?,
        net: get_parsed(row, "net")?,
        fee: get_parsed(row, "fee")?,
    })
}

/// Viewers per statement when statistics are written through sqlx (on
/// PostgreSQL; 8 parameters each). Not more: when this path also wrote
/// SQLite's, binding a parameter through sqlx's SQLite driver looked its
/// name up in a list as long as the statement's parameters, so binding
/// grew with the square of the rows (at 500 rows a tenth of the server's
/// CPU at 10,000 viewers).
const STATS_CHUNK_ROWS: usize = 64;

impl Store {
    /// Adds counted watch statistics, all or nothing: on SQLite on the
    /// embedded database's writer thread, on PostgreSQL in chunked
    /// statements.
    pub async fn add_viewer_stats(
        &self,
        batch: &[((String, Address), ViewerDelta)],
    ) -> Result<(), sqlx::Error> {
        if let Some(writer) = &self.sqlite_ledger {
            // On the embedded database's writer thread, taking turns with
            // the ledger's commits (see `sqlite_ledger`).
            return writer.add_viewer_stats(batch.to_vec()).await;
        }
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin_read_then_write())
            .await?;
        // A few statements per chunk of viewers rather than two per viewer:
        // a second's statistics of 10,000 viewers is one chunked read and
        // one chunked write, not 20,000 round trips.
        for chunk in batch.chunks(STATS_CHUNK_ROWS) {
            let keys: Vec<(String, String)> = chunk
                .iter()
                .map(|((stream_id, viewer), _)| (stream_id.clone(), format!("{viewer:#x}")))
                .collect();
            let mut select = Statement::new(
                "SELECT stream_id, viewer, first_session_ms, sessions, paid_media_ms, gross, net, fee \
                 FROM stream_viewers WHERE (stream_id, viewer) IN (",
            );
            for (index, (stream_id, viewer)) in keys.iter().enumerate() {
                select
                    .push(if index == 0 { "(" } else { ", (" })
                    .bind(stream_id.clone())
                    .push(", ")
                    .bind(viewer.clone())
                    .push(")");
            }
            select.push(")").push(self.dialect.lock_rows());
            let mut stored: HashMap<(String, String), ViewerDelta> = HashMap::new();
            for row in select.query()?.fetch_all(&mut *tx).await? {
                stored.insert(
                    (row.try_get("stream_id")?, row.try_get("viewer")?),
                    viewer_delta_from_row(&row)?,
                );
            }
            // Written whole: each row as read (locked on PostgreSQL) plus its delta.
            let mut insert = Statement::new(
                "INSERT INTO stream_viewers \
                 (stream_id, viewer, first_session_ms, sessions, paid_media_ms, gross, net, fee) VALUES ",
            );
            let mut rows = 0;
            for (key, (_, delta)) in keys.into_iter().zip(chunk) {
                let sum = stored
                    .remove(&key)
                    .unwrap_or_default()
                    .merged(delta)
                    .ok_or_else(|| sqlx::Error::Protocol("watch statistics overflow".into()))?;
                let (stream_id, viewer) = key;
                let Some(first_session_ms) = sum.session_started_ms else {
                    // Every delta comes from a session this server started,
                    // which was counted first; a row without one would be a bug.
                    tracing::warn!(stream = %stream_id, %viewer, "watch statistics without a session; skipped");
                    continue;
                };
                insert
                    .push(if rows == 0 { "(" } else { ", (" })
                    .bind(stream_id)
                    .push(", ")
                    .bind(viewer)
                    .push(", ")
                    .bind(first_session_ms)
                    .push(", ")
                    .bind(to_i64(sum.sessions))
                    .push(", ")
                    .bind(to_i64(sum.paid_media_ms))
                    .push(", ")
                    .bind(sum.gross.to_string())
                    .push(", ")
                    .bind(sum.net.to_string())
                    .push(", ")
                    .bind(sum.fee.to_string())
                    .push(")");
                rows += 1;
            }
            if rows == 0 {
                continue;
            }
            insert.push(
                " ON CONFLICT (stream_id, viewer) DO UPDATE SET first_session_ms = excluded.first_session_ms, \
                 sessions = excluded.sessions, paid_media_ms = excluded.paid_media_ms, \
                 gross = excluded.gross, net = excluded.net, fee = excluded.fee",
            );
            insert.query()?.execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// A stream's written watch statistics, and the viewers they count.
    pub async fn stream_stats(
        &self,
        stream_id: &str,
    ) -> Result<(StreamTotals, HashSet<Address>), sqlx::Error> {
        let rows = sqlx::query(
            "SELECT viewer, first_session_ms, sessions, paid_media_ms, gross, net, fee \
             FROM stream_viewers WHERE stream_id = $1",
        )
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await?;
        let mut totals = StreamTotals::default();
        let mut viewers = HashSet::with_capacity(rows.len());
        for row in &rows {
            let viewer: Address = get_parsed(row, "viewer")?;
            totals.add(&viewer_delta_from_row(row)?, viewers.insert(viewer));
        }
        Ok((totals, viewers))
    }
}
