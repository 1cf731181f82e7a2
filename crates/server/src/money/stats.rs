//! Watch statistics per stream: unique viewers, paid viewer time, and the
//! gross and net revenue of the vouchers its sessions signed.
//!
//! Counted in memory as sessions start, segments are granted and vouchers are
//! accepted, then written to the database once a second in one transaction
//! (and at shutdown). The ledger holds the money; these are a report of it per
//! stream, and a crash loses at most the last second of the report.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use streamweave_ledger::{Address, Amount};
use tracing::warn;

use crate::store::Store;

/// How often counted statistics are written.
pub const FLUSH_INTERVAL_MS: u64 = 1_000;

/// What one viewer added to one stream's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewerDelta {
    /// Set when a session started (the time of the first one counted here).
    pub session_started_ms: Option<i64>,
    /// Sessions started.
    pub sessions: u64,
    /// Media time granted beyond the free preview.
    pub paid_media_ms: u64,
    /// What the viewer's vouchers moved.
    pub gross: Amount,
    /// The creator's share of it.
    pub net: Amount,
    /// The platform's fee of it.
    pub fee: Amount,
}

impl ViewerDelta {
    /// Adds `other` to this delta; `None` on overflow.
    pub fn merged(&self, other: &ViewerDelta) -> Option<ViewerDelta> {
        Some(ViewerDelta {
            session_started_ms: match (self.session_started_ms, other.session_started_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            sessions: self.sessions.checked_add(other.sessions)?,
            paid_media_ms: self.paid_media_ms.checked_add(other.paid_media_ms)?,
            gross: self.gross.checked_add(other.gross)?,
            net: self.net.checked_add(other.net)?,
            fee: self.fee.checked_add(other.fee)?,
        })
    }
}

/// A stream's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamTotals {
    pub unique_viewers: u64,
    pub sessions: u64,
    pub paid_media_ms: u64,
    pub gross: Amount,
    pub net: Amount,
    pub fee: Amount,
}

impl StreamTotals {
    /// Adds one viewer's row (or pending delta); `first` says whether the
    /// viewer is new to these totals.
    pub fn add(&mut self, delta: &ViewerDelta, first: bool) {
        if first {
            self.unique_viewers += 1;
        }
        self.sessions = self.sessions.saturating_add(delta.sessions);
        self.paid_media_ms = self.paid_media_ms.saturating_add(delta.paid_media_ms);
        self.gross = Amount(self.gross.0.saturating_add(delta.gross.0));
        self.net = Amount(self.net.0.saturating_add(delta.net.0));
        self.fee = Amount(self.fee.0.saturating_add(delta.fee.0));
    }
}

/// The counters not yet written, and the database they go to.
pub struct WatchStats {
    db: Store,
    pending: Mutex<HashMap<(String, Address), ViewerDelta>>,
}

impl WatchStats {
    pub fn new(db: Store) -> Self {
        WatchStats {
            db,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn add(&self, stream_id: &str, viewer: Address, delta: ViewerDelta) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending.entry((stream_id.to_string(), viewer)).or_default();
        match entry.merged(&delta) {
            Some(sum) => *entry = sum,
            None => warn!(
                stream = stream_id,
                "watch statistics overflowed; delta dropped"
            ),
        }
    }

    /// A viewer started a session on a stream.
    pub fn session_started(&self, stream_id: &str, viewer: Address, now_ms: i64) {
        self.add(
            stream_id,
            viewer,
            ViewerDelta {
                session_started_ms: Some(now_ms),
                sessions: 1,
                ..ViewerDelta::default()
            },
        );
    }

    /// The gate granted paid media time.
    pub fn media_paid(&self, stream_id: &str, viewer: Address, paid_media_ms: u64) {
        if paid_media_ms > 0 {
            self.add(
                stream_id,
                viewer,
                ViewerDelta {
                    paid_media_ms,
                    ..ViewerDelta::default()
                },
            );
        }
    }

    /// A voucher of the viewer's moved money for the stream.
    pub fn earned(
        &self,
        stream_id: &str,
        viewer: Address,
        gross: Amount,
        net: Amount,
        fee: Amount,
    ) {
        self.add(
            stream_id,
            viewer,
            ViewerDelta {
                gross,
                net,
                fee,
                ..ViewerDelta::default()
            },
        );
    }

    /// Writes what has been counted. On failure the counts are kept for the next try.
    pub async fn flush(&self) -> Result<(), sqlx::Error> {
        let batch: Vec<_> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(err) = self.db.add_viewer_stats(&batch).await {
            for ((stream_id, viewer), delta) in batch {
                self.add(&stream_id, viewer, delta);
            }
            return Err(err);
        }
        Ok(())
    }

    /// The stream's statistics: what is written plus what is still counted in memory.
    pub async fn totals(&self, stream_id: &str) -> Result<StreamTotals, sqlx::Error> {
        let (mut totals, known) = self.db.stream_stats(stream_id).await?;
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for ((stream, viewer), delta) in pending.iter() {
            if stream == stream_id {
                totals.add(delta, !known.contains(viewer));
            }
        }
        Ok(totals)
    }

    /// Writes counted statistics every [`FLUSH_INTERVAL_MS`] until the process ends.
    pub async fn run(self: std::sync::Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(FLUSH_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = self.flush().await {
                warn!(%err, "writing watch statistics failed; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_merge_and_overflow_is_refused() {
        let a = ViewerDelta {
            session_started_ms: Some(20),
            sessions: 1,
            paid_media_ms: 2_000,
            gross: Amount(10),
            net: Amount(9),
            fee: Amount(1),
        };
        let b = ViewerDelta {
            session_started_ms: Some(10),
            paid_media_ms: 4_000,
            gross: Amount(20),
            ..ViewerDelta::default()
        };
        let sum = a.merged(&b).unwrap();
        assert_eq!(sum.session_started_ms, Some(10));
        assert_eq!(sum.paid_media_ms, 6_000);
        assert_eq!(sum.gross, Amount(30));
        assert_eq!(sum.net, Amount(9));
        let huge = ViewerDelta {
            gross: Amount(u128::MAX),
            ..ViewerDelta::default()
        };
        assert!(a.merged(&huge).is_none());
    }

    #[test]
    fn totals_count_each_viewer_once() {
        let mut totals = StreamTotals::default();
        let delta = ViewerDelta {
            sessions: 1,
            paid_media_ms: 1_000,
            ..ViewerDelta::default()
        };
        totals.add(&delta, true);
        totals.add(&delta, false);
        assert_eq!(totals.unique_viewers, 1);
        assert_eq!(totals.sessions, 2);
        assert_eq!(totals.paid_media_ms, 2_000);
    }
}
