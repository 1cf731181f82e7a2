//! Metering (spec "Metering"): what a viewing session owes for the media
//! time it has been granted, and the gate's decision for each segment.
//! Pure: the caller passes the channel's redeemed amount and the segment.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

use crate::Amount;

/// A stream's price: `amount` per `period_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Base units per period.
    pub amount: Amount,
    /// Period length in seconds (positive).
    pub period_seconds: u32,
}

impl Price {
    /// `ceil(amount * T / (period_seconds * 1000))` for `T` milliseconds,
    /// exact for every input; `None` for a zero period or a result beyond u128.
    pub fn owed(&self, media_ms: u64) -> Option<Amount> {
        if self.period_seconds == 0 {
            return None;
        }
        let numerator = U256::from(self.amount.0) * U256::from(media_ms);
        let denominator = U256::from(self.period_seconds) * U256::from(1000u32);
        u128::try_from(numerator.div_ceil(denominator))
            .ok()
            .map(Amount)
    }
}

/// The gate's answer for one segment request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    /// Serve it; `newly_granted` when this request added media time.
    Serve {
        /// Whether the segment's time was granted just now (not a refetch).
        newly_granted: bool,
    },
    /// 402: the channel must reach `required` (cumulative, ready to sign).
    PaymentRequired {
        /// Cumulative channel amount that pays for this segment.
        required: Amount,
    },
    /// 402 with the cap reached: the session may not spend more.
    CapReached {
        /// The session's cap.
        cap: Amount,
        /// What the segment would need in total.
        required: Amount,
    },
}

/// Positions a meter tracks as granted in part before the oldest count as whole.
const MAX_PARTIAL_POSITIONS: usize = 64;

/// One viewing session's meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    /// Price when the session started (a later price change does not apply).
    pub price: Price,
    /// The channel's redeemed amount when the session started.
    pub base: Amount,
    /// Media time granted so far.
    pub granted_ms: u64,
    /// Segment positions (media sequence numbers) already granted: any
    /// rendition of a granted position is free to fetch again.
    granted: BTreeSet<u64>,
    /// Positions granted in part (LL-HLS partial segments): how far into
    /// the segment, in milliseconds, its time is granted.
    #[serde(default)]
    partial: BTreeMap<u64, u32>,
    /// Most the session may spend beyond `base`.
    pub max_spend: Option<Amount>,
    /// How far ahead of the granted time vouchers are accepted.
    pub prepay_ms: u64,
    /// Media time at the start that costs nothing (the free preview).
    #[serde(default)]
    pub free_ms: u64,
}

impl Meter {
    /// A meter starting at the channel's current redeemed amount.
    pub fn new(price: Price, base: Amount, max_spend: Option<Amount>, prepay_ms: u64) -> Self {
        Meter {
            price,
            base,
            granted_ms: 0,
            granted: BTreeSet::new(),
            partial: BTreeMap::new(),
            max_spend,
            prepay_ms,
            free_ms: 0,
        }
    }

    /// The meter of a session picked up by another node, which knows the
    /// channel's `paid` amount but not which segments were served: every
    /// paid media millisecond, less the prepay window (the viewer may have
    /// paid that far ahead), counts as granted. So the viewer never pays
    /// again for what they paid for, and gets at most the prepay window
    /// of media without paying.
    pub fn resumed(mut self, paid: Amount) -> Self {
        let units = paid.0.saturating_sub(self.base.0);
        let paid_ms = if self.price.amount.0 == 0 {
            u64::MAX
        } else {
            // The longest time `owed` covers with `units`.
            let period_ms = u128::from(self.price.period_seconds) * 1000;
            let covered =
                U256::from(units) * U256::from(period_ms) / U256::from(self.price.amount.0);
            u64::try_from(covered)
                .unwrap_or(u64::MAX)
                .saturating_add(self.free_ms)
        };
        self.granted_ms = paid_ms.saturating_sub(self.prepay_ms);
        self
    }

    /// With the first `free_ms` of media free (a stream's preview).
    pub fn with_preview(mut self, free_ms: u64) -> Self {
        self.free_ms = free_ms;
        self
    }

    /// The largest cumulative voucher accepted for this session where this
    /// meter does not see every segment served (another node of a cluster
    /// serves them): one prepay window past the channel's `paid` amount,
    /// never past the cap.
    pub fn max_voucher_past(&self, paid: Amount) -> Amount {
        let window = self.owed(self.free_ms.saturating_add(self.prepay_ms));
        let ahead = paid.checked_add(window).unwrap_or(Amount(u128::MAX));
        match self.max_spend {
            Some(cap) => ahead.min(self.base.checked_add(cap).unwrap_or(Amount(u128::MAX))),
            None => ahead,
        }
    }

    /// What `media_ms` of granted time costs, net of the preview.
    fn owed(&self, media_ms: u64) -> Amount {
        self.price
            .owed(media_ms.saturating_sub(self.free_ms))
            .unwrap_or(Amount(u128::MAX))
    }

    /// What the session has been charged so far (beyond `base`).
    pub fn spent(&self) -> Amount {
        self.price
            .owed(self.granted_ms)
            .unwrap_or(Amount(u128::MAX))
    }

    /// Decides a request for the segment at `position` lasting `duration_ms`,
    /// given the channel's redeemed amount `paid`. A served segment's time
    /// is granted; a refetch of a granted position is free.
    pub fn decide(&mut self, position: u64, duration_ms: u32, paid: Amount) -> GateDecision {
        self.decide_span(position, duration_ms, true, paid)
    }

    /// Decides a request for media of the segment at `position` up to
    /// `through_ms` into it: a partial segment (LL-HLS) ends there, a whole
    /// segment (`whole`) at its duration. Only time not granted before at
    /// this position is charged, so parts and then the whole segment cost
    /// the segment's duration once; any rendition of a granted span is free.
    pub fn decide_span(
        &mut self,
        position: u64,
        through_ms: u32,
        whole: bool,
        paid: Amount,
    ) -> GateDecision {
        if self.granted.contains(&position) {
            return GateDecision::Serve {
                newly_granted: false,
            };
        }
        let already_ms = self.partial.get(&position).copied().unwrap_or(0);
        let adds_ms = through_ms.saturating_sub(already_ms);
        if adds_ms == 0 && !whole {
            return GateDecision::Serve {
                newly_granted: false,
            };
        }
        let after_ms = self.granted_ms.saturating_add(u64::from(adds_ms));
        let owed = self.owed(after_ms);
        let required = self.base.checked_add(owed).unwrap_or(Amount(u128::MAX));
        if let Some(cap) = self.max_spend
            && owed > cap
        {
            return GateDecision::CapReached { cap, required };
        }
        if paid < required {
            return GateDecision::PaymentRequired { required };
        }
        self.granted_ms = after_ms;
        if whole {
            self.partial.remove(&position);
            self.granted.insert(position);
        } else {
            self.partial.insert(position, through_ms);
            // A player that only ever fetches parts leaves one entry per
            // segment: the oldest count as granted whole (never charged
            // again) past a bound.
            while self.partial.len() > MAX_PARTIAL_POSITIONS {
                if let Some((oldest, _)) = self.partial.pop_first() {
                    self.granted.insert(oldest);
                }
            }
        }
        GateDecision::Serve {
            newly_granted: adds_ms > 0,
        }
    }

    /// The largest cumulative voucher the server accepts now for this
    /// session: paid up to the prepay window past the granted time, and
    /// never past the cap.
    pub fn max_voucher(&self) -> Amount {
        let ahead = self.owed(self.granted_ms.saturating_add(self.prepay_ms));
        let limited = match self.max_spend {
            Some(cap) if cap < ahead => cap,
            _ => ahead,
        };
        self.base.checked_add(limited).unwrap_or(Amount(u128::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_resumed_meter_never_charges_twice_nor_gives_more_than_the_window(
            amount in 1u128..10_000_000,
            period_seconds in 1u32..3600,
            base in 0u128..1_000_000,
            granted_ms in 0u64..10_000_000,
            ahead_ms in 0u64..=4_000,
            free_ms in 0u64..30_000,
        ) {
            let price = Price { amount: Amount(amount), period_seconds };
            let prepay_ms = 4_000;
            let meter = Meter::new(price, Amount(base), None, prepay_ms).with_preview(free_ms);
            // What a viewer granted `granted_ms` paid, up to the window ahead.
            let paid = Amount(base + meter.owed(granted_ms + ahead_ms).0);
            let resumed = meter.clone().resumed(paid);
            // Never more granted than paid for: no second payment for it...
            prop_assert!(Amount(base + resumed.owed(resumed.granted_ms).0) <= paid);
            // ...and at most the window less than what was really granted.
            prop_assert!(resumed.granted_ms + prepay_ms >= granted_ms);
        }
    }

    const PER_MINUTE: Price = Price {
        amount: Amount(50_000),
        period_seconds: 60,
    };

    #[test]
    fn owed_rounds_up() {
        assert_eq!(PER_MINUTE.owed(0), Some(Amount(0)));
        assert_eq!(
            PER_MINUTE.owed(2000),
            Some(Amount(1667)),
            "50000 * 2/60 = 1666.67 -> 1667"
        );
        assert_eq!(PER_MINUTE.owed(60_000), Some(Amount(50_000)));
        let per_second = Price {
            amount: Amount(1),
            period_seconds: 1,
        };
        assert_eq!(per_second.owed(1), Some(Amount(1)));
        assert_eq!(
            Price {
                amount: Amount(1),
                period_seconds: 0
            }
            .owed(5),
            None
        );
        let huge = Price {
            amount: Amount(u128::MAX),
            period_seconds: 1,
        };
        assert_eq!(huge.owed(1000), Some(Amount(u128::MAX)));
        assert_eq!(huge.owed(2000), None);
    }

    #[test]
    fn a_window_past_what_was_paid_when_another_node_serves() {
        // 50_000 a minute: 4 s of window cost 3334 (rounded up).
        let meter = Meter::new(PER_MINUTE, Amount(100), None, 4000);
        assert_eq!(meter.max_voucher_past(Amount(100)), Amount(100 + 3334));
        assert_eq!(meter.max_voucher_past(Amount(9000)), Amount(9000 + 3334));
        // The preview is free, not part of the window's price.
        let previewed = meter.clone().with_preview(10_000);
        assert_eq!(previewed.max_voucher_past(Amount(100)), Amount(100 + 3334));
        // Never past the cap.
        let capped = Meter::new(PER_MINUTE, Amount(100), Some(Amount(5000)), 4000);
        assert_eq!(capped.max_voucher_past(Amount(4000)), Amount(5100));
        assert_eq!(capped.max_voucher_past(Amount(1000)), Amount(1000 + 3334));
        // No overflow at the top.
        assert_eq!(
            meter.max_voucher_past(Amount(u128::MAX - 1)),
            Amount(u128::MAX)
        );
    }

    #[test]
    fn the_gate_charges_once_per_position() {
        let mut meter = Meter::new(PER_MINUTE, Amount(100), None, 4000);
        assert_eq!(
            meter.decide(0, 2000, Amount(100)),
            GateDecision::PaymentRequired {
                required: Amount(1767)
            }
        );
        assert_eq!(
            meter.max_voucher(),
            Amount(100 + 3334),
            "two segments ahead"
        );
        assert_eq!(
            meter.decide(0, 2000, Amount(1767)),
            GateDecision::Serve {
                newly_granted: true
            }
        );
        assert_eq!(
            meter.decide(0, 2000, Amount(1767)),
            GateDecision::Serve {
                newly_granted: false
            },
            "refetch is free"
        );
        assert_eq!(
            meter.decide(1, 2000, Amount(1767)),
            GateDecision::PaymentRequired {
                required: Amount(3434)
            }
        );
        assert_eq!(
            meter.decide(1, 2000, Amount(5000)),
            GateDecision::Serve {
                newly_granted: true
            }
        );
        assert_eq!(meter.spent(), Amount(3334));
    }

    #[test]
    fn the_preview_is_free() {
        let mut meter = Meter::new(PER_MINUTE, Amount(0), None, 4000).with_preview(4000);
        assert_eq!(
            meter.decide(0, 2000, Amount(0)),
            GateDecision::Serve {
                newly_granted: true
            }
        );
        assert_eq!(
            meter.decide(1, 2000, Amount(0)),
            GateDecision::Serve {
                newly_granted: true
            }
        );
        assert_eq!(
            meter.decide(2, 2000, Amount(0)),
            GateDecision::PaymentRequired {
                required: Amount(1667)
            }
        );
    }

    #[test]
    fn the_cap_stops_spending() {
        let mut meter = Meter::new(PER_MINUTE, Amount(0), Some(Amount(2000)), 4000);
        assert_eq!(
            meter.decide(0, 2000, Amount(1667)),
            GateDecision::Serve {
                newly_granted: true
            }
        );
        assert_eq!(
            meter.decide(1, 2000, Amount(10_000)),
            GateDecision::CapReached {
                cap: Amount(2000),
                required: Amount(3334)
            }
        );
        assert_eq!(meter.max_voucher(), Amount(2000));
    }

    #[test]
    fn parts_then_the_whole_segment_cost_the_segment_once() {
        let mut meter = Meter::new(PER_MINUTE, Amount(0), None, 4000);
        // Three parts of segment 0 (0.5 s, 1 s, 1.5 s into it).
        assert_eq!(
            meter.decide_span(0, 500, false, Amount(0)),
            GateDecision::PaymentRequired {
                required: Amount(417)
            }
        );
        for through_ms in [500, 1000, 1500] {
            assert_eq!(
                meter.decide_span(0, through_ms, false, Amount(2000)),
                GateDecision::Serve {
                    newly_granted: true
                }
            );
        }
        assert_eq!(meter.granted_ms, 1500);
        assert_eq!(
            meter.decide_span(0, 1000, false, Amount(2000)),
            GateDecision::Serve {
                newly_granted: false
            },
            "another rendition's earlier part is free"
        );
        // The whole segment charges what the parts did not cover.
        assert_eq!(
            meter.decide(0, 2000, Amount(2000)),
            GateDecision::Serve {
                newly_granted: true
            }
        );
        assert_eq!(meter.granted_ms, 2000);
        assert_eq!(meter.spent(), Amount(1667));
        assert_eq!(
            meter.decide_span(0, 2000, false, Amount(2000)),
            GateDecision::Serve {
                newly_granted: false
            }
        );
    }

    proptest! {
        #[test]
        fn parts_in_any_order_never_charge_past_the_segment(
            throughs in prop::collection::vec(1u32..2000, 1..12),
            whole_at_end in any::<bool>(),
        ) {
            let mut meter = Meter::new(PER_MINUTE, Amount(0), None, 0);
            let rich = Amount(u128::MAX / 2);
            let mut furthest = 0u32;
            for through in &throughs {
                let decision = meter.decide_span(3, *through, false, rich);
                prop_assert_eq!(decision, GateDecision::Serve { newly_granted: *through > furthest });
                furthest = furthest.max(*through);
                prop_assert_eq!(meter.granted_ms, u64::from(furthest));
            }
            if whole_at_end {
                meter.decide(3, 2000, rich);
                prop_assert_eq!(meter.granted_ms, 2000);
            }
        }

        #[test]
        fn charges_follow_the_formula(durations in prop::collection::vec(1u32..10_000, 1..40), amount in 1u128..1_000_000_000, period in 1u32..3600) {
            let price = Price { amount: Amount(amount), period_seconds: period };
            let mut meter = Meter::new(price, Amount(7), None, 0);
            let mut total_ms = 0u64;
            for (position, duration) in durations.iter().enumerate() {
                let GateDecision::PaymentRequired { required } = meter.decide(position as u64, *duration, Amount(0)) else {
                    prop_assert!(price.owed(total_ms + u64::from(*duration)) == Some(Amount(0)));
                    total_ms += u64::from(*duration);
                    continue;
                };
                prop_assert_eq!(meter.decide(position as u64, *duration, required), GateDecision::Serve { newly_granted: true });
                total_ms += u64::from(*duration);
                prop_assert_eq!(required, Amount(7 + price.owed(total_ms).expect("fits").0));
                prop_assert_eq!(meter.spent(), price.owed(total_ms).expect("fits"));
            }
        }
    }
}
