//! Live feedback per stream (viewer counts, live state and, to the creator,
//! earnings as vouchers move money) and per account (renewals). Bounded
//! broadcast channels: a consumer that falls behind is dropped, never
//! buffered without limit.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Messages buffered per stream before slow consumers are dropped.
pub const EVENT_BUFFER: usize = 64;

/// One event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// Sessions watching now.
    Viewers { count: usize },
    /// `idle`, `live` or `ended`.
    State { state: String },
    /// Vouchers moved money to the creator (creator and admins only): the
    /// sum of those accepted since the stream's last `earnings` event, sent
    /// at most once every [`super::earnings::ANNOUNCE_INTERVAL_MS`].
    Earnings {
        /// How many vouchers the sums cover.
        vouchers: u64,
        /// What they added to their channels, base units.
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

/// What happens to an account that its owner should hear of at once
/// (`GET /api/v1/accounts/me/events`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AccountEvent {
    /// A membership renewed at expiry.
    MembershipRenewed {
        membership_id: String,
        tier_id: String,
        /// RFC 3339.
        expires_at: String,
    },
    /// A renewal that could not be paid, with the reason shown to the member.
    MembershipRenewalFailed {
        membership_id: String,
        tier_id: String,
        reason: String,
    },
}

/// Per-stream events.
pub type Events = Topics<StreamEvent>;
/// Per-account events, keyed by the account's address (`{:#x}`).
pub type AccountEvents = Topics<AccountEvent>;

/// Carries what this node publishes to the other nodes of a cluster.
pub type Relay<E> = Box<dyn Fn(&str, &E) + Send + Sync>;

/// Broadcast channels by topic (a stream id, an account), made on first
/// use; with a relay, what is published here also reaches other nodes.
pub struct Topics<E> {
    topics: Mutex<HashMap<String, broadcast::Sender<E>>>,
    capacity: usize,
    relay: std::sync::OnceLock<Relay<E>>,
}

impl<E> Default for Topics<E> {
    fn default() -> Self {
        Topics::with_capacity(EVENT_BUFFER)
    }
}

impl<E> Topics<E> {
    /// Topics whose slow listeners are dropped after `capacity` messages.
    pub fn with_capacity(capacity: usize) -> Self {
        Topics {
            topics: Mutex::default(),
            capacity,
            relay: std::sync::OnceLock::new(),
        }
    }

    /// Sends what is published from now on to other nodes too (once).
    pub fn set_relay(&self, relay: Relay<E>) {
        let _ = self.relay.set(relay);
    }
}

impl<E: Clone> Topics<E> {
    fn sender(&self, topic: &str) -> broadcast::Sender<E> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        // Forget channels nobody listens to, so the map stays bounded by live interest.
        if topics.len() > 10_000 {
            topics.retain(|_, sender| sender.receiver_count() > 0);
        }
        topics
            .entry(topic.to_string())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .clone()
    }

    /// Sends to everyone listening to the topic, here and on the other
    /// nodes (nobody is fine).
    pub fn publish(&self, topic: &str, event: E) {
        if let Some(relay) = self.relay.get() {
            relay(topic, &event);
        }
        self.deliver(topic, event);
    }

    /// Sends to this node's listeners only (what another node published).
    pub fn deliver(&self, topic: &str, event: E) {
        let _ = self.sender(topic).send(event);
    }

    /// Listens to a topic.
    pub fn subscribe(&self, topic: &str) -> broadcast::Receiver<E> {
        self.sender(topic).subscribe()
    }
}
