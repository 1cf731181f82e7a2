//! Plays started per stream or video ("most watched"): each master playlist
//! served counts one, in memory, and is added to the stream's row every few
//! seconds (one write per stream per flush, off the playback path). The
//! pending counts are bounded: past [`MAX_PENDING`] streams a flush is due
//! and further new streams wait for it.

use std::collections::HashMap;
use std::sync::Mutex;

/// Streams with pending plays kept before new ones are not counted.
pub const MAX_PENDING: usize = 50_000;

#[derive(Default)]
pub struct Views {
    pending: Mutex<HashMap<String, u64>>,
}

impl Views {
    /// Counts one play of `stream_id`.
    pub fn played(&self, stream_id: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = pending.get_mut(stream_id) {
            *count = count.saturating_add(1);
        } else if pending.len() < MAX_PENDING {
            pending.insert(stream_id.to_string(), 1);
        }
    }

    /// The counts since the last call, emptied.
    pub fn take(&self) -> Vec<(String, u64)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut taken: Vec<(String, u64)> = pending.drain().collect();
        taken.sort();
        taken
    }

    /// Gives counts back after a failed write, so no play is lost.
    pub fn restore(&self, counts: Vec<(String, u64)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (id, count) in counts {
            let entry = pending.entry(id).or_insert(0);
            *entry = entry.saturating_add(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_add_up_and_a_failed_write_keeps_them() {
        let views = Views::default();
        views.played("a");
        views.played("a");
        views.played("b");
        let taken = views.take();
        assert_eq!(taken, vec![("a".into(), 2), ("b".into(), 1)]);
        assert!(views.take().is_empty());
        views.played("a");
        views.restore(taken);
        assert_eq!(views.take(), vec![("a".into(), 3), ("b".into(), 1)]);
    }

    #[test]
    fn pending_streams_are_bounded() {
        let views = Views::default();
        for n in 0..MAX_PENDING + 10 {
            views.played(&n.to_string());
        }
        assert_eq!(views.take().len(), MAX_PENDING);
    }
}
