//! Live feedback per stream: viewer counts, live state and, to the creator,
//! earnings as vouchers move money. Bounded broadcast channels: a consumer
//! that falls behind is dropped, never buffered without limit.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

/// Messages buffered per stream before slow consumers are dropped.
pub const EVENT_BUFFER: usize = 64;

/// One event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// Sessions watching now.
    Viewers { count: usize },
    /// `idle`, `live` or `ended`.
    State { state: String },
    /// A voucher moved money to the creator (creator and admins only).
    Earnings {
        channel_id: String,
        /// What the voucher added to the channel, base units.
        gross: String,
        /// The creator's share of it.
        creator: String,
        /// The platform's fee of it.
        fee: String,
    },
    /// An uploaded video's processing: `processing` with progress, then
    /// `ready` or `failed`.
    Processing {
        status: String,
        /// 0 to 100.
        percent: u8,
        /// Media seconds per second, thousandths (`2500` is 2.5x).
        speed_milli: Option<u32>,
        eta_seconds: Option<u64>,
    },
    /// A viewer tipped the creator (creator and admins only; the chat shows it to all).
    Tip {
        from: String,
        gross: String,
        /// The creator's share of it.
        creator: String,
        fee: String,
    },
    /// An event's leaderboard changed (a tip during the show), or froze.
    Leaderboard {
        frozen: bool,
        standings: Vec<crate::ticketing::StandingView>,
    },
}

impl StreamEvent {
    /// Whether only the stream's owner may see it.
    pub fn private(&self) -> bool {
        matches!(self, StreamEvent::Earnings { .. } | StreamEvent::Tip { .. })
    }
}

/// Per-stream broadcast channels, made on first use.
#[derive(Default)]
pub struct Events {
    streams: Mutex<HashMap<String, broadcast::Sender<StreamEvent>>>,
}

impl Events {
    fn sender(&self, stream_id: &str) -> broadcast::Sender<StreamEvent> {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        // Forget channels nobody listens to, so the map stays bounded by live interest.
        if streams.len() > 10_000 {
            streams.retain(|_, sender| sender.receiver_count() > 0);
        }
        streams
            .entry(stream_id.to_string())
            .or_insert_with(|| broadcast::channel(EVENT_BUFFER).0)
            .clone()
    }

    /// Sends to everyone listening to the stream (nobody is fine).
    pub fn publish(&self, stream_id: &str, event: StreamEvent) {
        let _ = self.sender(stream_id).send(event);
    }

    /// Listens to a stream.
    pub fn subscribe(&self, stream_id: &str) -> broadcast::Receiver<StreamEvent> {
        self.sender(stream_id).subscribe()
    }
}
