//! Watch statistics per stream and viewer (`stream_viewers`): counted in
//! memory by `crate::money::stats` and added here in batches.

use std::collections::HashSet;

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
/// PostgreSQL: 8 parameters each, of the 65,535 a statement may bind).
/// (When this path also wrote SQLite's, binding a parameter through sqlx's
/// SQLite driver grew with the statement's parameters, so it took 64.)
const STATS_CHUNK_ROWS: usize = 1_000;

/// Adds each row to the stored one in the statement itself: a session's
/// first start is the earliest, counts and amounts are sums (exact
/// `NUMERIC`; the schema refuses an amount beyond 2^128-1).
const ADD_STATS: &str = " ON CONFLICT (stream_id, viewer) DO UPDATE SET \
     first_session_ms = LEAST(stream_viewers.first_session_ms, excluded.first_session_ms), \
     sessions = stream_viewers.sessions + excluded.sessions, \
     paid_media_ms = stream_viewers.paid_media_ms + excluded.paid_media_ms, \
     gross = CAST(CAST(stream_viewers.gross AS NUMERIC) + CAST(excluded.gross AS NUMERIC) AS TEXT), \
     net = CAST(CAST(stream_viewers.net AS NUMERIC) + CAST(excluded.net AS NUMERIC) AS TEXT), \
     fee = CAST(CAST(stream_viewers.fee AS NUMERIC) + CAST(excluded.fee AS NUMERIC) AS TEXT)";

impl Store {
    /// Adds counted watch statistics, all or nothing: on SQLite on the
    /// embedded database's writer thread, on PostgreSQL in one transaction
    /// of statements that add to the rows where they are (no read first).
    pub async fn add_viewer_stats(
        &self,
        batch: &[((String, Address), ViewerDelta)],
    ) -> Result<(), sqlx::Error> {
        if let Some(writer) = &self.sqlite_ledger {
            // On the embedded database's writer thread, taking turns with
            // the ledger's commits (see `sqlite_ledger`).
            return writer.add_viewer_stats(batch.to_vec()).await;
        }
        let mut tx = self.pool.begin().await?;
        // A statement or two per thousand viewers rather than two per
        // viewer (or a read and a write per chunk: reading 64 rows back by
        // their keys took PostgreSQL a millisecond to plan, every time).
        for chunk in batch.chunks(STATS_CHUNK_ROWS) {
            // Viewers whose session started since the last write may be
            // new rows; the others only add to theirs.
            let (started, watching): (Vec<_>, Vec<_>) = chunk
                .iter()
                .partition(|(_, delta)| delta.session_started_ms.is_some());
            if !started.is_empty() {
                let mut insert = Statement::new(
                    "INSERT INTO stream_viewers \
                     (stream_id, viewer, first_session_ms, sessions, paid_media_ms, gross, net, fee) VALUES ",
                );
                for (index, (key, delta)) in started.iter().enumerate() {
                    push_row(&mut insert, index, key, delta.session_started_ms, delta);
                }
                insert.push(ADD_STATS);
                insert.query()?.execute(&mut *tx).await?;
            }
            if !watching.is_empty() {
                let mut update = Statement::new(
                    "UPDATE stream_viewers SET sessions = stream_viewers.sessions + d.sessions, \
                     paid_media_ms = stream_viewers.paid_media_ms + d.paid_media_ms, \
                     gross = CAST(CAST(stream_viewers.gross AS NUMERIC) + CAST(d.gross AS NUMERIC) AS TEXT), \
                     net = CAST(CAST(stream_viewers.net AS NUMERIC) + CAST(d.net AS NUMERIC) AS TEXT), \
                     fee = CAST(CAST(stream_viewers.fee AS NUMERIC) + CAST(d.fee AS NUMERIC) AS TEXT) \
                     FROM (VALUES ",
                );
                for (index, (key, delta)) in watching.iter().enumerate() {
                    push_row(&mut update, index, key, None, delta);
                }
                update.push(
                    ") AS d (stream_id, viewer, sessions, paid_media_ms, gross, net, fee) \
                     WHERE stream_viewers.stream_id = d.stream_id AND stream_viewers.viewer = d.viewer",
                );
                let updated = update.query()?.execute(&mut *tx).await?.rows_affected();
                if updated < watching.len() as u64 {
                    // Every delta comes from a session this server started,
                    // which was counted first; a row without one would be a bug.
                    tracing::warn!(
                        skipped = watching.len() as u64 - updated,
                        "watch statistics without a session; skipped"
                    );
                }
            }
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

/// Appends one viewer's row to a `VALUES` list (the `index`-th): stream,
/// viewer, the session's start when given, then the delta's sessions,
/// paid media time, gross, net and fee.
fn push_row(
    statement: &mut Statement,
    index: usize,
    (stream_id, viewer): &(String, Address),
    first_session_ms: Option<i64>,
    delta: &ViewerDelta,
) {
    statement
        .push(if index == 0 { "(" } else { ", (" })
        .bind(stream_id.clone())
        .push(", ")
        .bind(format!("{viewer:#x}"))
        .push(", ");
    if let Some(first_session_ms) = first_session_ms {
        statement.bind(first_session_ms).push(", ");
    }
    statement
        .bind(to_i64(delta.sessions))
        .push(", ")
        .bind(to_i64(delta.paid_media_ms))
        .push(", ")
        .bind(delta.gross.to_string())
        .push(", ")
        .bind(delta.net.to_string())
        .push(", ")
        .bind(delta.fee.to_string())
        .push(")");
}
