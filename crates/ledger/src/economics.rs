//! The arithmetic of `shared/spec/economics.md`: one-off splits, ticket
//! payouts by delivery, the tip leaderboard, market sales, memberships and
//! the engagement pool's rounds. Integers only (u128 base units, products in
//! 256 bits), every function total and free of I/O and clocks, so any
//! independent client re-derives every number from the same inputs.

use std::collections::BTreeMap;

use alloy_primitives::{Address, U256};

use crate::Amount;
use crate::split::{BPS_DENOMINATOR, Recipient, RevenuePolicy};

/// Why an economic computation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EconomicsError {
    /// A duration or period of zero.
    #[error("a duration must be positive")]
    ZeroDuration,
    /// Basis points above 10000, or fees that together pass 100%.
    #[error("basis points must be at most 10000 in total")]
    BasisPoints,
    /// An upgrade to a tier that does not cost more.
    #[error("an upgrade must be to a higher price")]
    NotAnUpgrade,
    /// A result that does not fit the range of amounts.
    #[error("amount overflow")]
    Overflow,
    /// A policy that cannot take the view pool as one more recipient.
    #[error("the revenue policy cannot take the view pool: {0}")]
    Policy(crate::split::PolicyError),
}

fn to_amount(value: U256) -> Result<Amount, EconomicsError> {
    u128::try_from(value)
        .map(Amount)
        .map_err(|_| EconomicsError::Overflow)
}

/// `floor(value * bps / 10000)`.
fn bps_floor(value: Amount, bps: u16) -> Amount {
    let product = U256::from(value.0) * U256::from(bps.min(BPS_DENOMINATOR));
    // bps <= 10000, so the result is at most `value`.
    Amount(u128::try_from(product / U256::from(BPS_DENOMINATOR)).unwrap_or(value.0))
}

/// `ceil(value * bps / 10000)`.
fn bps_ceil(value: Amount, bps: u16) -> Amount {
    let product = U256::from(value.0) * U256::from(bps.min(BPS_DENOMINATOR));
    Amount(u128::try_from(product.div_ceil(U256::from(BPS_DENOMINATOR))).unwrap_or(value.0))
}

/// A one-off payment divided by a revenue policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOffSplit {
    /// The platform's fee (zero when split without a fee).
    pub fee: Amount,
    /// What each recipient receives, in policy order; the leftover units
    /// are already added to the first recipient.
    pub recipients: Vec<(Address, Amount)>,
}

impl OneOffSplit {
    /// Fee plus every recipient: always the amount split.
    pub fn total(&self) -> u128 {
        self.recipients
            .iter()
            .fold(self.fee.0, |sum, (_, amount)| sum + amount.0)
    }
}

/// Splits a one-off payment (a ticket sale's release, a membership, a pool
/// allocation) "like a voucher step": the fee rounded up, shares rounded
/// down, and the leftover units to the policy's first recipient (one-off
/// payments hold nothing back). `with_fee: false` skips the platform fee
/// (pool allocations, which paid it already).
pub fn one_off_split(policy: &RevenuePolicy, amount: Amount, with_fee: bool) -> OneOffSplit {
    let policy = if with_fee {
        std::borrow::Cow::Borrowed(policy)
    } else {
        std::borrow::Cow::Owned(RevenuePolicy {
            platform_fee_bps: 0,
            recipients: policy.recipients.clone(),
        })
    };
    let totals = policy.totals(amount);
    let mut recipients: Vec<(Address, Amount)> = policy
        .recipients
        .iter()
        .zip(&totals.recipients)
        .map(|(r, share)| (r.address, *share))
        .collect();
    if let Some((_, first)) = recipients.first_mut() {
        first.0 += totals.leftover.0;
    }
    OneOffSplit {
        fee: totals.fee,
        recipients,
    }
}

// ---- Tickets ----

/// What finalization does with one ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketPayout {
    /// Returned to the ticket's current holder.
    pub refund: Amount,
    /// Released to the creator's side (`price_paid - refund`).
    pub released: Amount,
}

/// Finalization of an event: each ticket's refund for the undelivered part
/// and the total released (split once, like a voucher step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFinalization {
    /// `min(live media time, scheduled)`.
    pub delivered_ms: u64,
    /// `duration_seconds * 1000`.
    pub scheduled_ms: u64,
    /// Per ticket, in the order given.
    pub tickets: Vec<TicketPayout>,
    /// Sum of every ticket's `released`.
    pub released_total: Amount,
}

/// One ticket at finalization: `refund = floor(price_paid * (scheduled -
/// delivered) / scheduled)`, `released = price_paid - refund`.
pub fn ticket_payout(
    price_paid: Amount,
    delivered_ms: u64,
    scheduled_ms: u64,
) -> Result<TicketPayout, EconomicsError> {
    if scheduled_ms == 0 {
        return Err(EconomicsError::ZeroDuration);
    }
    let delivered_ms = delivered_ms.min(scheduled_ms);
    let undelivered = U256::from(scheduled_ms - delivered_ms);
    let refund = U256::from(price_paid.0) * undelivered / U256::from(scheduled_ms);
    // undelivered <= scheduled, so refund <= price_paid.
    let refund = to_amount(refund)?;
    Ok(TicketPayout {
        refund,
        released: Amount(price_paid.0 - refund.0),
    })
}

/// Finalizes an event of `duration_seconds` whose stream delivered
/// `live_media_ms` of live media, for tickets bought at `prices_paid`.
pub fn finalize_event(
    prices_paid: &[Amount],
    live_media_ms: u64,
    duration_seconds: u64,
) -> Result<EventFinalization, EconomicsError> {
    let scheduled_ms = duration_seconds
        .checked_mul(1000)
        .ok_or(EconomicsError::Overflow)?;
    let delivered_ms = live_media_ms.min(scheduled_ms);
    let mut tickets = Vec::with_capacity(prices_paid.len());
    let mut released_total = Amount(0);
    for price in prices_paid {
        let payout = ticket_payout(*price, delivered_ms, scheduled_ms)?;
        released_total = released_total
            .checked_add(payout.released)
            .ok_or(EconomicsError::Overflow)?;
        tickets.push(payout);
    }
    Ok(EventFinalization {
        delivered_ms,
        scheduled_ms,
        tickets,
        released_total,
    })
}

// ---- The leaderboard ----

/// One tip during an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTip {
    pub tipper: Address,
    pub amount: Amount,
    pub at_ms: i64,
}

/// A tipper's place on the leaderboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub tipper: Address,
    /// Sum of the tipper's tips.
    pub total: Amount,
    /// When the tipper's total first reached its final value.
    pub reached_at_ms: i64,
}

/// The leaderboard: per tipper the sum of tips, ordered by total (highest
/// first), then by when that total was first reached (earlier first), then
/// by address (lower first). `excluded` (the creator and the recipients of
/// the creator's policy) are not ranked. Tips are taken in time order
/// (equal times in the order given).
pub fn leaderboard(
    tips: &[EventTip],
    excluded: &[Address],
) -> Result<Vec<Standing>, EconomicsError> {
    let mut ordered: Vec<&EventTip> = tips.iter().collect();
    ordered.sort_by_key(|tip| tip.at_ms);
    let mut standings: BTreeMap<Address, Standing> = BTreeMap::new();
    for tip in ordered {
        if excluded.contains(&tip.tipper) || tip.amount.is_zero() {
            continue;
        }
        let standing = standings.entry(tip.tipper).or_insert(Standing {
            tipper: tip.tipper,
            total: Amount(0),
            reached_at_ms: tip.at_ms,
        });
        standing.total = standing
            .total
            .checked_add(tip.amount)
            .ok_or(EconomicsError::Overflow)?;
        // A positive tip raises the total: the final value is first reached
        // at the tipper's last tip.
        standing.reached_at_ms = tip.at_ms;
    }
    let mut board: Vec<Standing> = standings.into_values().collect();
    board.sort_by(|a, b| {
        b.total
            .0
            .cmp(&a.total.0)
            .then(a.reached_at_ms.cmp(&b.reached_at_ms))
            .then(a.tipper.cmp(&b.tipper))
    });
    Ok(board)
}

// ---- The market ----

/// Where a sale's price goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleSplit {
    /// `ceil(price * market_fee_bps / 10000)` to the platform.
    pub fee: Amount,
    /// `floor(price * royalty_bps / 10000)` to the collectible's creator.
    pub royalty: Amount,
    /// The rest, to the seller.
    pub seller: Amount,
}

/// A sale at `price`: the platform's fee (rounded up), the creator's royalty
/// (rounded down), the rest to the seller.
pub fn sale_split(
    price: Amount,
    market_fee_bps: u16,
    royalty_bps: u16,
) -> Result<SaleSplit, EconomicsError> {
    if u32::from(market_fee_bps) + u32::from(royalty_bps) > u32::from(BPS_DENOMINATOR) {
        return Err(EconomicsError::BasisPoints);
    }
    let fee = bps_ceil(price, market_fee_bps);
    let royalty = bps_floor(price, royalty_bps);
    // fee + royalty <= ceil(price * (f + r) / 10000) <= price.
    let seller = price
        .checked_sub(fee)
        .and_then(|rest| rest.checked_sub(royalty))
        .ok_or(EconomicsError::Overflow)?;
    Ok(SaleSplit {
        fee,
        royalty,
        seller,
    })
}

/// The highest price a ticket may be listed at: `floor(face * bps / 10000)`
/// (`bps` may exceed 10000: resale above face value; a cap beyond the
/// amount range is the range's end).
pub fn resale_cap(face_price: Amount, resale_max_bps: u16) -> Amount {
    let product = U256::from(face_price.0) * U256::from(resale_max_bps);
    Amount(u128::try_from(product / U256::from(BPS_DENOMINATOR)).unwrap_or(u128::MAX))
}

// ---- Memberships ----

/// Expiry after buying or renewing a period: `max(now, expires_at) + P`.
pub fn membership_expiry(
    now_ms: i64,
    expires_at_ms: Option<i64>,
    period_seconds: u64,
) -> Result<i64, EconomicsError> {
    if period_seconds == 0 {
        return Err(EconomicsError::ZeroDuration);
    }
    let period_ms = i64::try_from(period_seconds)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .ok_or(EconomicsError::Overflow)?;
    now_ms
        .max(expires_at_ms.unwrap_or(now_ms))
        .checked_add(period_ms)
        .ok_or(EconomicsError::Overflow)
}

/// What an upgrade within one offerer costs now, expiry unchanged:
/// `ceil((new - old) * remaining_ms / (P * 1000))`.
pub fn upgrade_charge(
    old_price: Amount,
    new_price: Amount,
    remaining_ms: u64,
    period_seconds: u64,
) -> Result<Amount, EconomicsError> {
    if period_seconds == 0 {
        return Err(EconomicsError::ZeroDuration);
    }
    let difference = new_price
        .checked_sub(old_price)
        .filter(|d| !d.is_zero())
        .ok_or(EconomicsError::NotAnUpgrade)?;
    let period_ms = U256::from(period_seconds) * U256::from(1000u32);
    let charge = (U256::from(difference.0) * U256::from(remaining_ms)).div_ceil(period_ms);
    to_amount(charge)
}

/// A platform tier's payment: `floor(price * pool_bps / 10000)` to the
/// round's pool, the rest to the platform. Answers (pool, platform).
pub fn platform_tier_revenue(price: Amount, pool_bps: u16) -> (Amount, Amount) {
    let pool = bps_floor(price, pool_bps);
    (pool, Amount(price.0 - pool.0))
}

// ---- The pool ----

/// The recipient that stands for the engagement pool in a channel's policy
/// (`keccak256("streamweave.view-pool")`, last 20 bytes): nobody holds its
/// key, and what a channel credits to it feeds the pool's rounds as `V`.
pub const VIEW_POOL_RECIPIENT: Address =
    alloy_primitives::address!("0x0c901b8ec97f12dad74c767a0ba8caa5a5ce74fb");

/// The policy a channel copies when part of each voucher step feeds the
/// pool: every share scaled by `10000 - view_pool_bps` and the pool added
/// last with `sum_of_shares * view_pool_bps`, both reduced by their common
/// divisor. The pool's running total is then
/// `floor(rest * view_pool_bps / 10000)` of each step's `rest`, exactly the
/// `view_pool_bps` part of the creator shares. `view_pool_bps` 0 answers
/// the policy unchanged.
pub fn with_view_pool(
    policy: &RevenuePolicy,
    view_pool_bps: u16,
) -> Result<RevenuePolicy, EconomicsError> {
    if view_pool_bps == 0 {
        return Ok(policy.clone());
    }
    if view_pool_bps >= BPS_DENOMINATOR {
        return Err(EconomicsError::BasisPoints);
    }
    let keep = u128::from(BPS_DENOMINATOR - view_pool_bps);
    let sum = policy
        .recipients
        .iter()
        .try_fold(0u128, |sum, r| sum.checked_add(u128::from(r.share)))
        .ok_or(EconomicsError::Overflow)?;
    let mut shares: Vec<u128> = policy
        .recipients
        .iter()
        .map(|r| u128::from(r.share) * keep)
        .collect();
    shares.push(sum * u128::from(view_pool_bps));
    let divisor = shares.iter().fold(0u128, |g, s| gcd(g, *s)).max(1);
    let mut addresses: Vec<Address> = policy.recipients.iter().map(|r| r.address).collect();
    addresses.push(VIEW_POOL_RECIPIENT);
    let recipients = addresses
        .into_iter()
        .zip(shares)
        .map(|(address, share)| {
            u64::try_from(share / divisor)
                .map(|share| Recipient { address, share })
                .map_err(|_| EconomicsError::Overflow)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pooled = RevenuePolicy {
        platform_fee_bps: policy.platform_fee_bps,
        recipients,
    };
    pooled.validate().map_err(EconomicsError::Policy)?;
    Ok(pooled)
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// What a member watched of one content item in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// A video of `duration_ms`, watched as far as `furthest_position_ms`.
    Video {
        served_ms: u64,
        duration_ms: u64,
        furthest_position_ms: u64,
    },
    /// A live stream.
    Live { served_ms: u64 },
}

/// Engagement of one member on one item: `floor(s * mult / 1000)` with `s`
/// capped at twice a video's duration, and `mult = 1000 + floor(1000 *
/// furthest / duration)` for videos (1.0 to 2.0 in thousandths; the furthest
/// position counts up to the duration), 1000 for live streams.
pub fn engagement(watched: Watched) -> u128 {
    match watched {
        Watched::Live { served_ms } => u128::from(served_ms),
        Watched::Video {
            served_ms,
            duration_ms,
            furthest_position_ms,
        } => {
            if duration_ms == 0 {
                return 0;
            }
            let served = u128::from(served_ms.min(duration_ms.saturating_mul(2)));
            let furthest = u128::from(furthest_position_ms.min(duration_ms));
            let multiplier = 1000 + 1000 * furthest / u128::from(duration_ms);
            served * multiplier / 1000
        }
    }
}

/// Divides `total` in proportion to `weights` by largest remainder:
/// `q = floor(T * w / W)`, and the units left go one each to the largest
/// `(T * w) mod W`, ties to the lower address. Every unit is allocated when
/// some weight is positive; with none, nothing is (and `None` is answered).
pub fn largest_remainder(
    total: Amount,
    weights: &BTreeMap<Address, u128>,
) -> Option<BTreeMap<Address, Amount>> {
    let weight_sum = weights
        .values()
        .fold(U256::ZERO, |sum, w| sum + U256::from(*w));
    if weight_sum.is_zero() {
        return None;
    }
    let mut shares = BTreeMap::new();
    let mut remainders: Vec<(U256, Address)> = Vec::with_capacity(weights.len());
    let mut given = 0u128;
    for (address, weight) in weights {
        let product = U256::from(total.0) * U256::from(*weight);
        // w <= W, so the quotient is at most `total`.
        let quotient = u128::try_from(product / weight_sum).unwrap_or(total.0);
        given += quotient;
        shares.insert(*address, Amount(quotient));
        remainders.push((product % weight_sum, *address));
    }
    // Largest remainder first; equal remainders to the lower address.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let left = total.0 - given;
    for (_, address) in remainders
        .iter()
        .take(usize::try_from(left).unwrap_or(usize::MAX))
    {
        if let Some(share) = shares.get_mut(address) {
            share.0 += 1;
        }
    }
    Some(shares)
}

/// How a round divides the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    /// Each member's contribution follows that member's engagement; the rest
    /// is divided by everyone's engagement.
    #[default]
    UserCentric,
    /// Everything is divided by everyone's engagement.
    ProRata,
}

/// The inputs of one round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundInputs {
    /// `C[m]`: the pool part of each member's platform-tier payments.
    pub contributions: BTreeMap<Address, Amount>,
    /// `V`: the view-pool inflow from voucher steps.
    pub view_inflow: Amount,
    /// `K`: the carry from the previous round.
    pub carry: Amount,
    /// `E[m][c]`: engagement of member `m` on creator `c`.
    pub engagement: BTreeMap<Address, BTreeMap<Address, u128>>,
}

/// What a round pays each creator and carries to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundOutcome {
    /// Each creator's allocation (before splitting by its policy).
    pub allocations: BTreeMap<Address, Amount>,
    /// Left in the pool for the next round.
    pub carry: Amount,
}

impl RoundOutcome {
    fn add(&mut self, shares: BTreeMap<Address, Amount>) -> Result<(), EconomicsError> {
        for (creator, amount) in shares {
            let entry = self.allocations.entry(creator).or_insert(Amount(0));
            *entry = entry.checked_add(amount).ok_or(EconomicsError::Overflow)?;
        }
        Ok(())
    }

    /// Allocations plus carry.
    pub fn total(&self) -> Option<Amount> {
        self.allocations
            .values()
            .try_fold(self.carry, |sum, a| sum.checked_add(*a))
    }
}

/// Closes a round: every unit of `sum C + V + K` is allocated to a creator
/// or carried (only when nobody engaged with anything).
pub fn close_round(inputs: &RoundInputs, mode: PoolMode) -> Result<RoundOutcome, EconomicsError> {
    let add = |a: Amount, b: Amount| a.checked_add(b).ok_or(EconomicsError::Overflow);
    // sum_m E[m][c], per creator.
    let mut by_creator: BTreeMap<Address, u128> = BTreeMap::new();
    for per_creator in inputs.engagement.values() {
        for (creator, e) in per_creator {
            let entry = by_creator.entry(*creator).or_insert(0);
            *entry = entry.checked_add(*e).ok_or(EconomicsError::Overflow)?;
        }
    }
    let mut outcome = RoundOutcome::default();
    let mut undirected = add(inputs.view_inflow, inputs.carry)?;
    for (member, contribution) in &inputs.contributions {
        let member_shares = match mode {
            PoolMode::UserCentric => inputs
                .engagement
                .get(member)
                .and_then(|weights| largest_remainder(*contribution, weights)),
            PoolMode::ProRata => None,
        };
        match member_shares {
            Some(shares) => outcome.add(shares)?,
            None => undirected = add(undirected, *contribution)?,
        }
    }
    match largest_remainder(undirected, &by_creator) {
        Some(shares) => outcome.add(shares)?,
        None => outcome.carry = undirected,
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::Recipient;
    use proptest::prelude::*;

    fn addr(n: u8) -> Address {
        Address::repeat_byte(n)
    }

    #[test]
    fn the_view_pool_recipient_is_its_documented_hash() {
        let hash = alloy_primitives::keccak256(b"streamweave.view-pool");
        assert_eq!(VIEW_POOL_RECIPIENT, Address::from_slice(&hash[12..]));
    }

    #[test]
    fn the_view_pool_takes_its_part_of_the_creator_shares() {
        // A creator and a collaborator 3:1, 10% to the pool: 27:9:4.
        let policy = RevenuePolicy {
            platform_fee_bps: 300,
            recipients: vec![
                Recipient {
                    address: addr(1),
                    share: 3,
                },
                Recipient {
                    address: addr(2),
                    share: 1,
                },
            ],
        };
        let pooled = with_view_pool(&policy, 1000).unwrap();
        let shares: Vec<u64> = pooled.recipients.iter().map(|r| r.share).collect();
        assert_eq!(shares, [27, 9, 4]);
        assert_eq!(pooled.recipients[2].address, VIEW_POOL_RECIPIENT);
        // 100000 gross: fee 3000, rest 97000, the pool 9700.
        assert_eq!(pooled.totals(Amount(100_000)).recipients[2], Amount(9_700));
        assert_eq!(with_view_pool(&policy, 0).unwrap(), policy);
        assert_eq!(
            with_view_pool(&policy, 10_000),
            Err(EconomicsError::BasisPoints)
        );
        let full = RevenuePolicy {
            platform_fee_bps: 0,
            recipients: (0..16)
                .map(|n| Recipient {
                    address: addr(n + 1),
                    share: 1,
                })
                .collect(),
        };
        assert!(matches!(
            with_view_pool(&full, 100),
            Err(EconomicsError::Policy(_))
        ));
    }

    #[test]
    fn ticket_refunds_follow_delivery() {
        // 2 h scheduled, 90 min delivered: a quarter back.
        let payout = ticket_payout(Amount(10_000), 5_400_000, 7_200_000).unwrap();
        assert_eq!(
            payout,
            TicketPayout {
                refund: Amount(2_500),
                released: Amount(7_500)
            }
        );
        // Rounded down: 1000 * 1/3 = 333.
        let payout = ticket_payout(Amount(1000), 2, 3).unwrap();
        assert_eq!(payout.refund, Amount(333));
        assert_eq!(payout.released, Amount(667));
        // Streaming past the schedule delivers no more than scheduled.
        let done = finalize_event(&[Amount(7), Amount(9)], 10_000_000, 60).unwrap();
        assert_eq!(done.delivered_ms, 60_000);
        assert_eq!(done.released_total, Amount(16));
        assert!(done.tickets.iter().all(|t| t.refund.is_zero()));
        // Nothing streamed: everything back.
        let none = finalize_event(&[Amount(5)], 0, 60).unwrap();
        assert_eq!(none.tickets[0].refund, Amount(5));
        assert_eq!(
            finalize_event(&[Amount(5)], 0, 0),
            Err(EconomicsError::ZeroDuration)
        );
    }

    #[test]
    fn the_leaderboard_orders_by_total_then_time_then_address() {
        let tips = [
            EventTip {
                tipper: addr(3),
                amount: Amount(50),
                at_ms: 10,
            },
            EventTip {
                tipper: addr(2),
                amount: Amount(30),
                at_ms: 5,
            },
            EventTip {
                tipper: addr(2),
                amount: Amount(20),
                at_ms: 20,
            },
            EventTip {
                tipper: addr(1),
                amount: Amount(50),
                at_ms: 10,
            },
            EventTip {
                tipper: addr(9),
                amount: Amount(1000),
                at_ms: 1,
            },
            EventTip {
                tipper: addr(4),
                amount: Amount(10),
                at_ms: 2,
            },
        ];
        let board = leaderboard(&tips, &[addr(9)]).unwrap();
        let order: Vec<Address> = board.iter().map(|s| s.tipper).collect();
        // 1 and 3 reached 50 at 10 (tie to the lower address), 2 at 20.
        assert_eq!(order, vec![addr(1), addr(3), addr(2), addr(4)]);
        assert_eq!(board[2].reached_at_ms, 20);
        assert!(leaderboard(&[], &[]).unwrap().is_empty());
    }

    #[test]
    fn market_sales_and_the_resale_cap() {
        let sale = sale_split(Amount(1001), 200, 500).unwrap();
        // fee ceil(20.02) = 21, royalty floor(50.05) = 50.
        assert_eq!(
            sale,
            SaleSplit {
                fee: Amount(21),
                royalty: Amount(50),
                seller: Amount(930)
            }
        );
        assert_eq!(
            sale_split(Amount(1), 9000, 2000),
            Err(EconomicsError::BasisPoints)
        );
        assert_eq!(
            resale_cap(Amount(999), 12_000),
            Amount(1198),
            "above face value when the creator allows it"
        );
        assert_eq!(resale_cap(Amount(u128::MAX), 65_535), Amount(u128::MAX));
        assert_eq!(resale_cap(Amount(999), 5_000), Amount(499));
    }

    #[test]
    fn memberships_extend_and_upgrades_charge_the_rest_of_the_period() {
        assert_eq!(membership_expiry(1_000, None, 30).unwrap(), 31_000);
        assert_eq!(membership_expiry(1_000, Some(5_000), 30).unwrap(), 35_000);
        assert_eq!(
            membership_expiry(9_000, Some(5_000), 30).unwrap(),
            39_000,
            "lapsed: from now"
        );
        // Half a 30-day period left, 10 more a period: 5.
        let period = 2_592_000;
        assert_eq!(
            upgrade_charge(Amount(10), Amount(20), period * 500, period).unwrap(),
            Amount(5)
        );
        // Rounded up.
        assert_eq!(
            upgrade_charge(Amount(0), Amount(3), 1, 1).unwrap(),
            Amount(1)
        );
        assert_eq!(
            upgrade_charge(Amount(5), Amount(5), 1, 1),
            Err(EconomicsError::NotAnUpgrade)
        );
        assert_eq!(
            platform_tier_revenue(Amount(999), 7000),
            (Amount(699), Amount(300))
        );
    }

    #[test]
    fn engagement_caps_and_completion() {
        let video = |served, furthest| Watched::Video {
            served_ms: served,
            duration_ms: 1000,
            furthest_position_ms: furthest,
        };
        assert_eq!(engagement(video(1000, 1000)), 2000);
        assert_eq!(
            engagement(video(5000, 500)),
            3000,
            "served capped at 2x, mult 1.5"
        );
        assert_eq!(engagement(video(999, 0)), 999);
        assert_eq!(
            engagement(video(10, 9999)),
            20,
            "furthest counts up to the duration"
        );
        assert_eq!(engagement(Watched::Live { served_ms: 123_456 }), 123_456);
        assert_eq!(
            engagement(Watched::Video {
                served_ms: 5,
                duration_ms: 0,
                furthest_position_ms: 0
            }),
            0
        );
    }

    #[test]
    fn largest_remainder_allocates_every_unit_with_ties_to_the_lower_address() {
        let weights = BTreeMap::from([(addr(2), 1u128), (addr(1), 1), (addr(3), 1)]);
        let shares = largest_remainder(Amount(10), &weights).unwrap();
        // 3 each, the unit left to the lowest address.
        assert_eq!(shares[&addr(1)], Amount(4));
        assert_eq!(shares[&addr(2)], Amount(3));
        assert_eq!(shares[&addr(3)], Amount(3));
        let weights = BTreeMap::from([(addr(1), 1u128), (addr(2), 2)]);
        let shares = largest_remainder(Amount(2), &weights).unwrap();
        // q = 0 and 1; remainders 2 and 1 (mod 3): the unit to addr(1).
        assert_eq!((shares[&addr(1)], shares[&addr(2)]), (Amount(1), Amount(1)));
        assert!(largest_remainder(Amount(5), &BTreeMap::from([(addr(1), 0u128)])).is_none());
    }

    #[test]
    fn a_round_user_centric_and_pro_rata() {
        let (alice, bob, carol) = (addr(0xa1), addr(0xb2), addr(0xc3));
        let (x, y) = (addr(0x10), addr(0x20));
        let inputs = RoundInputs {
            contributions: BTreeMap::from([
                (alice, Amount(700)),
                (bob, Amount(700)),
                (carol, Amount(70)),
            ]),
            view_inflow: Amount(30),
            carry: Amount(0),
            engagement: BTreeMap::from([
                (alice, BTreeMap::from([(x, 1u128)])),
                (bob, BTreeMap::from([(x, 1u128), (y, 3)])),
            ]),
        };
        let round = close_round(&inputs, PoolMode::UserCentric).unwrap();
        // alice -> x 700; bob -> x 175, y 525; U = 30 + 70 = 100 by totals
        // x 2, y 3: x 40, y 60.
        assert_eq!(round.allocations[&x], Amount(915));
        assert_eq!(round.allocations[&y], Amount(585));
        assert_eq!(round.carry, Amount(0));
        let round = close_round(&inputs, PoolMode::ProRata).unwrap();
        // 1500 by 2:3.
        assert_eq!(round.allocations[&x], Amount(600));
        assert_eq!(round.allocations[&y], Amount(900));
        // Nobody engaged: everything carries.
        let idle = RoundInputs {
            engagement: BTreeMap::new(),
            carry: Amount(5),
            ..inputs
        };
        let round = close_round(&idle, PoolMode::UserCentric).unwrap();
        assert!(round.allocations.is_empty());
        assert_eq!(
            round.carry,
            Amount(1505),
            "1470 contributed, 30 viewed, 5 carried"
        );
    }

    #[test]
    fn one_off_splits_give_the_leftover_to_the_first_recipient() {
        let policy = RevenuePolicy {
            platform_fee_bps: 300,
            recipients: vec![
                Recipient {
                    address: addr(1),
                    share: 1,
                },
                Recipient {
                    address: addr(2),
                    share: 1,
                },
                Recipient {
                    address: addr(3),
                    share: 1,
                },
            ],
        };
        let split = one_off_split(&policy, Amount(1000), true);
        // fee 30; 970 / 3 = 323 each, 1 left to the first.
        assert_eq!(split.fee, Amount(30));
        assert_eq!(
            split.recipients,
            vec![
                (addr(1), Amount(324)),
                (addr(2), Amount(323)),
                (addr(3), Amount(323))
            ]
        );
        let no_fee = one_off_split(&policy, Amount(1000), false);
        assert_eq!(no_fee.fee, Amount(0));
        assert_eq!(no_fee.recipients[0].1, Amount(334));
    }

    fn arb_policy() -> impl Strategy<Value = RevenuePolicy> {
        (
            0u16..=10_000,
            prop::collection::vec(1u64..1_000_000, 1..=16),
        )
            .prop_map(|(bps, shares)| RevenuePolicy {
                platform_fee_bps: bps,
                recipients: shares
                    .into_iter()
                    .enumerate()
                    .map(|(i, share)| Recipient {
                        address: addr(i as u8 + 1),
                        share,
                    })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn the_view_pool_total_is_its_bps_of_the_rest(
            shares in prop::collection::vec(1u64..=u64::from(u32::MAX), 1..16),
            fee_bps in 0u16..=10_000,
            view_pool_bps in 1u16..10_000,
            gross in any::<u128>(),
        ) {
            let policy = RevenuePolicy {
                platform_fee_bps: fee_bps,
                recipients: shares.iter().enumerate().map(|(n, share)| Recipient {
                    address: addr(u8::try_from(n + 1).unwrap()),
                    share: *share,
                }).collect(),
            };
            let pooled = with_view_pool(&policy, view_pool_bps).unwrap();
            let totals = pooled.totals(Amount(gross));
            let rest = gross - policy.fee(Amount(gross)).0;
            let expected = U256::from(rest) * U256::from(view_pool_bps) / U256::from(10_000u32);
            prop_assert_eq!(U256::from(totals.recipients[shares.len()].0), expected);
            prop_assert_eq!(totals.fee, policy.totals(Amount(gross)).fee);
        }

        #[test]
        fn one_off_splits_conserve_every_unit(policy in arb_policy(), amount in any::<u128>(), with_fee in any::<bool>()) {
            let split = one_off_split(&policy, Amount(amount), with_fee);
            prop_assert_eq!(split.total(), amount);
        }

        #[test]
        fn tickets_conserve_and_refunds_never_exceed_the_price(
            prices in prop::collection::vec(0u128..u128::MAX / 1024, 0..50),
            live_ms in any::<u64>(),
            duration_s in 1u64..1_000_000,
        ) {
            let prices: Vec<Amount> = prices.into_iter().map(Amount).collect();
            let done = finalize_event(&prices, live_ms, duration_s).unwrap();
            let mut released = 0u128;
            for (price, payout) in prices.iter().zip(&done.tickets) {
                prop_assert!(payout.refund.0 <= price.0);
                prop_assert_eq!(payout.refund.0 + payout.released.0, price.0);
                released += payout.released.0;
            }
            prop_assert_eq!(released, done.released_total.0);
            // More delivery never refunds more.
            let later = finalize_event(&prices, live_ms.saturating_add(1000), duration_s).unwrap();
            for (a, b) in done.tickets.iter().zip(&later.tickets) {
                prop_assert!(b.refund.0 <= a.refund.0);
            }
        }

        #[test]
        fn sales_conserve(price in any::<u128>(), fee in 0u16..=10_000, royalty in 0u16..=10_000) {
            match sale_split(Amount(price), fee, royalty) {
                Ok(sale) => prop_assert_eq!(sale.fee.0 + sale.royalty.0 + sale.seller.0, price),
                Err(err) => {
                    prop_assert_eq!(err, EconomicsError::BasisPoints);
                    prop_assert!(u32::from(fee) + u32::from(royalty) > 10_000);
                }
            }
        }

        #[test]
        fn sales_follow_the_spec_formula(price in 0u128..=u128::from(u64::MAX), fee in 0u16..=5_000, royalty in 0u16..=5_000) {
            let sale = sale_split(Amount(price), fee, royalty).expect("within 100%");
            prop_assert_eq!(sale.fee.0, (price * u128::from(fee)).div_ceil(10_000));
            prop_assert_eq!(sale.royalty.0, price * u128::from(royalty) / 10_000);
        }

        #[test]
        fn the_resale_cap_is_the_spec_formula(face in 0u128..=u128::from(u64::MAX), bps in any::<u16>()) {
            prop_assert_eq!(resale_cap(Amount(face), bps).0, face * u128::from(bps) / 10_000);
        }

        #[test]
        fn largest_remainder_is_exact_and_proportional(
            total in any::<u128>(),
            weights in prop::collection::vec(0u128..u128::MAX, 1..20),
        ) {
            let weights: BTreeMap<Address, u128> =
                weights.into_iter().enumerate().map(|(i, w)| (addr(i as u8), w)).collect();
            match largest_remainder(Amount(total), &weights) {
                None => prop_assert!(weights.values().all(|w| *w == 0)),
                Some(shares) => {
                    let sum = shares.values().fold(0u128, |s, a| s + a.0);
                    prop_assert_eq!(sum, total);
                    let weight_sum = weights.values().fold(U256::ZERO, |s, w| s + U256::from(*w));
                    for (address, share) in &shares {
                        let exact = U256::from(total) * U256::from(weights[address]) / weight_sum;
                        let floor = u128::try_from(exact).unwrap();
                        // Each share is its floor or one more, never to a zero weight.
                        prop_assert!(share.0 == floor || share.0 == floor + 1);
                        if weights[address] == 0 {
                            prop_assert_eq!(share.0, 0);
                        }
                    }
                }
            }
        }

        #[test]
        fn a_round_allocates_or_carries_every_unit(
            contributions in prop::collection::vec(0u128..1u128 << 100, 0..8),
            engaged in prop::collection::vec(prop::collection::vec(0u128..1_000_000, 3), 0..8),
            view in 0u128..1u128 << 100,
            carry in 0u128..1u128 << 100,
            pro_rata in any::<bool>(),
        ) {
            let creators = [addr(0x10), addr(0x20), addr(0x30)];
            let inputs = RoundInputs {
                contributions: contributions.iter().enumerate().map(|(i, c)| (addr(0x80 + i as u8), Amount(*c))).collect(),
                view_inflow: Amount(view),
                carry: Amount(carry),
                engagement: engaged.iter().enumerate().map(|(i, row)| {
                    (addr(0x80 + i as u8), creators.iter().copied().zip(row.iter().copied()).collect())
                }).collect(),
            };
            let mode = if pro_rata { PoolMode::ProRata } else { PoolMode::UserCentric };
            let round = close_round(&inputs, mode).unwrap();
            let inflow = contributions.iter().sum::<u128>() + view + carry;
            prop_assert_eq!(round.total().unwrap().0, inflow);
            let anyone_engaged = engaged.iter().flatten().any(|e| *e > 0);
            if anyone_engaged {
                prop_assert_eq!(round.carry.0, 0);
            } else {
                prop_assert!(round.allocations.is_empty());
            }
            // Nobody is paid for content nobody watched.
            for (creator, amount) in &round.allocations {
                let watched: u128 = engaged.iter().map(|row| row[creators.iter().position(|c| c == creator).unwrap()]).sum();
                prop_assert!(watched > 0 || amount.is_zero());
            }
        }

        #[test]
        fn upgrades_never_charge_more_than_the_difference(
            old in 0u128..1u128 << 100, more in 1u128..1u128 << 100,
            period_s in 1u64..100_000_000, remaining_fraction in 0u64..=1000,
        ) {
            let remaining_ms = period_s * 1000 / 1000 * remaining_fraction;
            let charge = upgrade_charge(Amount(old), Amount(old + more), remaining_ms, period_s).unwrap();
            prop_assert!(charge.0 <= more);
        }
    }
}
