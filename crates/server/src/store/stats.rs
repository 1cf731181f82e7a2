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

impl Store {
    /// Adds counted watch statistics, all or nothing.
    pub async fn add_viewer_stats(
        &self,
        batch: &[((String, Address), ViewerDelta)],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin_read_then_write())
            .await?;
        for ((stream_id, viewer), delta) in batch {
            let viewer = format!("{viewer:#x}");
            let mut select = Statement::new(
                "SELECT first_session_ms, sessions, paid_media_ms, gross, net, fee FROM stream_viewers \
                 WHERE stream_id = ",
            );
            select
                .bind(stream_id.clone())
                .push(" AND viewer = ")
                .bind(viewer.clone())
                .push(self.dialect.lock_rows());
            let row = select.query()?.fetch_optional(&mut *tx).await?;
            let stored = match &row {
                Some(row) => viewer_delta_from_row(row)?,
                None => ViewerDelta::default(),
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
            // Written whole: the row as read (locked on PostgreSQL) plus the delta.
            sqlx::query(
                "INSERT INTO stream_viewers \
                 (stream_id, viewer, first_session_ms, sessions, paid_media_ms, gross, net, fee) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (stream_id, viewer) DO UPDATE SET first_session_ms = excluded.first_session_ms, \
                 sessions = excluded.sessions, paid_media_ms = excluded.paid_media_ms, \
                 gross = excluded.gross, net = excluded.net, fee = excluded.fee",
            )
            .bind(stream_id)
            .bind(&viewer)
            .bind(first_session_ms)
            .bind(to_i64(sum.sessions))
            .bind(to_i64(sum.paid_media_ms))
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
