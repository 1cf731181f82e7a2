//! A creator's earnings as they move, announced per stream at most once an
//! interval ([`ANNOUNCE_INTERVAL_MS`]) rather than once a voucher.
//!
//! A popular stream accepts thousands of vouchers a second. One event each
//! would be thousands of messages a second through every listener of the
//! stream's topic (viewers' sockets receive, then filter out, the private
//! ones, and a listener that falls behind is dropped) and through NATS to
//! every node of a cluster. The [`EarningsTally`] sums what the vouchers
//! moved per stream; the [`EarningsFeed`] publishes each stream's sum, with
//! how many vouchers made it, once an interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamweave_ledger::Amount;

use super::events::{Events, StreamEvent};

/// How often a stream's summed earnings are announced.
pub const ANNOUNCE_INTERVAL_MS: u64 = 250;

/// What vouchers moved for one stream since its last announcement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EarningsStep {
    /// Vouchers summed here.
    pub vouchers: u64,
    /// What they added to their channels, base units.
    pub gross: Amount,
    /// The creator's share of it.
    pub creator: Amount,
    /// The platform's fee of it.
    pub fee: Amount,
}

impl EarningsStep {
    /// One voucher's step.
    pub fn voucher(gross: Amount, creator: Amount, fee: Amount) -> Self {
        EarningsStep {
            vouchers: 1,
            gross,
            creator,
            fee,
        }
    }

    /// Both steps as one; `None` on overflow.
    pub fn merged(&self, other: &EarningsStep) -> Option<EarningsStep> {
        Some(EarningsStep {
            vouchers: self.vouchers.checked_add(other.vouchers)?,
            gross: self.gross.checked_add(other.gross)?,
            creator: self.creator.checked_add(other.creator)?,
            fee: self.fee.checked_add(other.fee)?,
        })
    }

    /// The event that announces it.
    pub fn event(&self) -> StreamEvent {
        StreamEvent::Earnings {
            vouchers: self.vouchers,
            gross: self.gross.to_string(),
            creator: self.creator.to_string(),
            fee: self.fee.to_string(),
        }
    }
}

/// Steps summed per stream, not yet announced. Free of I/O and clocks:
/// the feed decides when to drain it.
#[derive(Debug, Default)]
pub struct EarningsTally {
    pending: HashMap<String, EarningsStep>,
}

impl EarningsTally {
    /// Adds a voucher's step to its stream's sum. When the sum would
    /// overflow, the sum so far is returned, to be announced now, and the
    /// step starts the next one: nothing is lost or counted twice.
    pub fn add(&mut self, stream_id: &str, step: EarningsStep) -> Option<EarningsStep> {
        match self.pending.get_mut(stream_id) {
            Some(sum) => match sum.merged(&step) {
                Some(merged) => {
                    *sum = merged;
                    None
                }
                None => Some(std::mem::replace(sum, step)),
            },
            None => {
                self.pending.insert(stream_id.to_string(), step);
                None
            }
        }
    }

    /// Every stream's sum, leaving the tally empty.
    pub fn drain(&mut self) -> Vec<(String, EarningsStep)> {
        self.pending.drain().collect()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Publishes the streams' summed earnings on their topics.
pub struct EarningsFeed {
    tally: Mutex<EarningsTally>,
    events: Arc<Events>,
}

impl EarningsFeed {
    pub fn new(events: Arc<Events>) -> Self {
        EarningsFeed {
            tally: Mutex::default(),
            events,
        }
    }

    /// A voucher moved money for the stream.
    pub fn earned(&self, stream_id: &str, gross: Amount, creator: Amount, fee: Amount) {
        let full = self
            .tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(stream_id, EarningsStep::voucher(gross, creator, fee));
        if let Some(full) = full {
            self.events.publish(stream_id, full.event());
        }
    }

    /// Announces every stream's sum now.
    pub fn announce(&self) {
        let steps = {
            let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            if tally.is_empty() {
                return;
            }
            tally.drain()
        };
        for (stream_id, step) in steps {
            self.events.publish(&stream_id, step.event());
        }
    }

    /// Announces every [`ANNOUNCE_INTERVAL_MS`] until the process ends.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(ANNOUNCE_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.announce();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(gross: u128, creator: u128, fee: u128) -> EarningsStep {
        EarningsStep::voucher(Amount(gross), Amount(creator), Amount(fee))
    }

    #[test]
    fn a_streams_vouchers_are_summed_until_drained() {
        let mut tally = EarningsTally::default();
        assert_eq!(tally.add("a", step(1000, 970, 30)), None);
        assert_eq!(tally.add("b", step(5, 5, 0)), None);
        assert_eq!(tally.add("a", step(2000, 1940, 60)), None);
        let mut drained = tally.drain();
        drained.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            drained,
            vec![
                (
                    "a".to_string(),
                    EarningsStep {
                        vouchers: 2,
                        gross: Amount(3000),
                        creator: Amount(2910),
                        fee: Amount(90),
                    }
                ),
                ("b".to_string(), step(5, 5, 0)),
            ]
        );
        assert!(tally.is_empty());
        assert!(tally.drain().is_empty());
    }

    #[test]
    fn an_overflowing_sum_is_handed_back_whole_and_the_step_starts_anew() {
        let mut tally = EarningsTally::default();
        assert_eq!(tally.add("a", step(u128::MAX - 1, 1, 0)), None);
        assert_eq!(
            tally.add("a", step(2, 2, 0)),
            Some(step(u128::MAX - 1, 1, 0))
        );
        assert_eq!(tally.drain(), vec![("a".to_string(), step(2, 2, 0))]);
    }

    #[test]
    fn the_announcement_carries_the_sum_as_decimal_strings() {
        let event = EarningsStep {
            vouchers: 3,
            gross: Amount(u128::MAX),
            creator: Amount(7),
            fee: Amount(0),
        }
        .event();
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "type": "earnings",
                "vouchers": 3,
                "gross": u128::MAX.to_string(),
                "creator": "7",
                "fee": "0",
            })
        );
    }

    #[tokio::test]
    async fn the_feed_publishes_one_event_a_stream_per_announcement() {
        let events = Arc::new(Events::default());
        let mut listener = events.subscribe("s");
        let feed = EarningsFeed::new(events.clone());
        for _ in 0..100 {
            feed.earned("s", Amount(10), Amount(9), Amount(1));
        }
        assert!(
            listener.try_recv().is_err(),
            "nothing before the announcement"
        );
        feed.announce();
        assert_eq!(
            listener.try_recv().expect("one event"),
            StreamEvent::Earnings {
                vouchers: 100,
                gross: "1000".into(),
                creator: "900".into(),
                fee: "100".into(),
            }
        );
        assert!(listener.try_recv().is_err(), "only one");
        feed.announce();
        assert!(listener.try_recv().is_err(), "nothing new, nothing sent");
    }
}
