//! Memberships and the engagement pool. A member buys a tier of an offerer
//! (the platform or a creator); the tier bounds the quality and the streams
//! at once of member sessions. Platform-tier money feeds the pool of the
//! current round; when a round closes the pool is divided among creators by
//! what members were served (`streamweave_ledger::economics::close_round`,
//! the spec's arithmetic), each creator's allocation split by its policy
//! without a second fee, and the round's statement is published to the
//! blockstore. What nobody earned carries to the next round.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamweave_cas::Blockstore;
use streamweave_ledger::economics::{
    self, EconomicsError, PoolMode, RoundInputs, Watched, membership_expiry, platform_tier_revenue,
    upgrade_charge,
};
use streamweave_ledger::{AccountRef, Address, Amount, RevenuePolicy, Transfer, TransferKind};
use tracing::{info, warn};

use crate::live::events::{AccountEvent, AccountEvents};

use crate::store::{
    CommerceRefusal, MemberItem, MembershipPayment, MembershipRecord, MembershipWrite, Offerer,
    PaymentKind, RoundRecord, Store, TierRecord, WatchDelta, random_id,
};

/// How long rounds are and where they begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundClock {
    /// A round boundary (Unix ms).
    pub anchor_ms: i64,
    pub length_ms: i64,
}

/// Sunday 4 January 1970, 02:00 UTC: weekly rounds close on Sundays at 02:00.
const FIRST_SUNDAY_0200_MS: i64 = (3 * 86_400 + 2 * 3600) * 1000;

impl RoundClock {
    pub fn weekly() -> RoundClock {
        RoundClock {
            anchor_ms: FIRST_SUNDAY_0200_MS,
            length_ms: 7 * 86_400_000,
        }
    }

    pub fn daily() -> RoundClock {
        RoundClock {
            anchor_ms: FIRST_SUNDAY_0200_MS,
            length_ms: 86_400_000,
        }
    }

    /// Rounds of `seconds` from the Unix epoch (tests, short demos).
    pub fn every(seconds: u64) -> RoundClock {
        RoundClock {
            anchor_ms: 0,
            length_ms: i64::try_from(seconds.max(1))
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
        }
    }

    /// The round `at_ms` falls in.
    pub fn round_at(&self, at_ms: i64) -> i64 {
        (at_ms - self.anchor_ms).div_euclid(self.length_ms)
    }

    /// Where round `round` begins and ends.
    pub fn bounds(&self, round: i64) -> (i64, i64) {
        let start = self
            .anchor_ms
            .saturating_add(round.saturating_mul(self.length_ms));
        (start, start.saturating_add(self.length_ms))
    }
}

/// The node's membership settings.
#[derive(Debug, Clone)]
pub struct MembershipSettings {
    pub platform_fee_bps: u16,
    /// Of platform-tier revenue, to the pool.
    pub pool_bps: u16,
    pub mode: PoolMode,
    pub clock: RoundClock,
}

/// Why a membership operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error(transparent)]
    Refused(#[from] CommerceRefusal),
    #[error("this tier's offerer is suspended")]
    Suspended,
    #[error(transparent)]
    Economics(#[from] EconomicsError),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error("publishing the round's statement: {0}")]
    Statement(#[source] anyhow::Error),
}

/// What a join did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// A new period (or a first one): charged the tier's price.
    Period,
    /// A dearer tier of the same offerer: charged the difference for the rest of the period.
    Upgrade,
    /// A cheaper tier: takes effect at the next renewal, nothing charged.
    Downgrade,
}

/// Served media per (member, item) not yet written, per round.
#[derive(Default)]
struct Served {
    pending: HashMap<(i64, Address, String), WatchDelta>,
}

/// Memberships, renewals, what members were served, and the pool's rounds.
#[derive(Clone)]
pub struct Memberships {
    pub store: Store,
    pub blockstore: Arc<Blockstore>,
    pub settings: MembershipSettings,
    /// Where renewals are told to their members.
    pub account_events: Arc<AccountEvents>,
    served: Arc<Mutex<Served>>,
}

/// How long after its end a round waits before it closes.
const CLOSE_GRACE_MS: i64 = 2_000;

/// Pending served-media entries kept in memory before a flush forces one.
const MAX_PENDING: usize = 100_000;

impl Memberships {
    pub fn new(
        store: Store,
        blockstore: Arc<Blockstore>,
        settings: MembershipSettings,
        account_events: Arc<AccountEvents>,
    ) -> Self {
        Memberships {
            store,
            blockstore,
            settings,
            account_events,
            served: Arc::default(),
        }
    }

    async fn policy(&self, creator: Address, with_fee: bool) -> Result<RevenuePolicy, sqlx::Error> {
        let fee = if with_fee {
            self.settings.platform_fee_bps
        } else {
            0
        };
        Ok(match self.store.policy(creator).await? {
            Some(mut policy) => {
                policy.platform_fee_bps = fee;
                policy
            }
            None => RevenuePolicy::sole(creator, fee),
        })
    }

    /// The transfers paying `amount` for a tier of `offerer` from `member`,
    /// and the part that went to the pool.
    async fn payment_transfers(
        &self,
        id: &str,
        member: Address,
        offerer: Offerer,
        amount: Amount,
    ) -> Result<(Vec<Transfer>, Amount), MembershipError> {
        let from = AccountRef::Available {
            owner: member,
            asset: Address::ZERO,
        };
        let mut transfers = Vec::new();
        let mut push = |suffix: String, credit: AccountRef, units: Amount| {
            if !units.is_zero() {
                transfers.push(Transfer {
                    id: format!("{id}:{suffix}"),
                    debit: from,
                    credit,
                    asset: Address::ZERO,
                    amount: units,
                    kind: TransferKind::Membership,
                    channel: None,
                });
            }
        };
        let pooled = match offerer {
            Offerer::Platform => {
                let (pool, platform) = platform_tier_revenue(amount, self.settings.pool_bps);
                push(
                    "pool".into(),
                    AccountRef::Pool {
                        asset: Address::ZERO,
                    },
                    pool,
                );
                push(
                    "platform".into(),
                    AccountRef::Platform {
                        asset: Address::ZERO,
                    },
                    platform,
                );
                pool
            }
            Offerer::Creator(creator) => {
                let policy = self.policy(creator, true).await?;
                let split = economics::one_off_split(&policy, amount, true);
                push(
                    "fee".into(),
                    AccountRef::Platform {
                        asset: Address::ZERO,
                    },
                    split.fee,
                );
                for (index, (recipient, units)) in split.recipients.iter().enumerate() {
                    push(
                        index.to_string(),
                        AccountRef::Revenue {
                            owner: *recipient,
                            asset: Address::ZERO,
                        },
                        *units,
                    );
                }
                Amount(0)
            }
        };
        Ok((transfers, pooled))
    }

    /// Buys `tier` for `member` (spec "Memberships"): a new or renewed
    /// period is `max(now, expires_at) + P` at the tier's price; a dearer
    /// tier of the same offerer upgrades now for the rest of the period; a
    /// cheaper one waits for the renewal. `key` makes it idempotent.
    pub async fn join(
        &self,
        member: Address,
        tier: &TierRecord,
        auto_renew: bool,
        key: &str,
        now_ms: i64,
    ) -> Result<(MembershipRecord, JoinKind), MembershipError> {
        if tier.suspended {
            return Err(MembershipError::Suspended);
        }
        // A concurrent change of the same membership: computed again once.
        for attempt in 0..2 {
            let previous = self.store.membership_with(member, tier.offerer).await?;
            let active = previous.as_ref().filter(|m| m.expires_at_ms > now_ms);
            let current_tier = match active {
                Some(m) => self.store.tier(&m.tier_id).await?,
                None => None,
            };
            let (kind, charge, expires_at_ms, tier_id, next_tier_id) = match (active, current_tier)
            {
                (Some(m), Some(current)) if current.id != tier.id => {
                    if tier.price > current.price {
                        let remaining = u64::try_from(m.expires_at_ms - now_ms).unwrap_or(0);
                        let charge = upgrade_charge(
                            current.price,
                            tier.price,
                            remaining,
                            current.period_seconds,
                        )?;
                        (
                            JoinKind::Upgrade,
                            charge,
                            m.expires_at_ms,
                            tier.id.clone(),
                            None,
                        )
                    } else {
                        (
                            JoinKind::Downgrade,
                            Amount(0),
                            m.expires_at_ms,
                            current.id.clone(),
                            Some(tier.id.clone()),
                        )
                    }
                }
                (active, _) => (
                    JoinKind::Period,
                    tier.price,
                    membership_expiry(
                        now_ms,
                        active.map(|m| m.expires_at_ms),
                        tier.period_seconds,
                    )?,
                    tier.id.clone(),
                    None,
                ),
            };
            let payment_id = format!("membership:{member:#x}:{key}");
            let (transfers, payment) = if charge.is_zero() {
                (Vec::new(), None)
            } else {
                let (transfers, pooled) = self
                    .payment_transfers(&payment_id, member, tier.offerer, charge)
                    .await?;
                let payment = MembershipPayment {
                    id: payment_id.clone(),
                    kind: match kind {
                        JoinKind::Upgrade => PaymentKind::Upgrade,
                        _ if active.is_some() => PaymentKind::Renewal,
                        _ => PaymentKind::Join,
                    },
                    tier_id: tier.id.clone(),
                    amount: charge,
                    pool_amount: pooled,
                    round: self.settings.clock.round_at(now_ms),
                };
                (transfers, Some(payment))
            };
            let membership = MembershipRecord {
                id: previous.as_ref().map_or_else(random_id, |m| m.id.clone()),
                member,
                offerer: tier.offerer,
                tier_id,
                next_tier_id,
                expires_at_ms,
                auto_renew,
                renewal_failure: None,
                renewal_failed_at_ms: None,
                created_at_ms: previous.as_ref().map_or(now_ms, |m| m.created_at_ms),
            };
            let write = MembershipWrite {
                previous: previous
                    .as_ref()
                    .map(|m| (m.tier_id.clone(), m.expires_at_ms)),
                membership,
                payment,
                transfers,
                now_ms,
            };
            match self.store.write_membership(&write).await? {
                Ok(saved) => return Ok((saved, kind)),
                Err(CommerceRefusal::Changed) if attempt == 0 => continue,
                Err(refusal) => return Err(refusal.into()),
            }
        }
        Err(CommerceRefusal::Changed.into())
    }

    /// Renews one membership at expiry: its pending downgrade's tier, else
    /// its own, at the tier's price now. A failure is recorded with its
    /// reason (shown to the member) and retried later.
    pub async fn renew(
        &self,
        membership: &MembershipRecord,
        now_ms: i64,
    ) -> Result<(), MembershipError> {
        let tier_id = membership
            .next_tier_id
            .clone()
            .unwrap_or_else(|| membership.tier_id.clone());
        let Some(tier) = self.store.tier(&tier_id).await? else {
            return self
                .renewal_failed(membership, "the tier no longer exists", now_ms)
                .await;
        };
        let key = format!("renewal:{}:{}", membership.id, membership.expires_at_ms);
        let outcome = if tier.suspended {
            Err(MembershipError::Suspended)
        } else {
            self.renew_with(membership, &tier, &key, now_ms).await
        };
        match outcome {
            Ok(expires_at_ms) => {
                self.account_events.publish(
                    &format!("{:#x}", membership.member),
                    AccountEvent::MembershipRenewed {
                        membership_id: membership.id.clone(),
                        tier_id: tier.id.clone(),
                        expires_at: crate::http::auth::rfc3339(expires_at_ms),
                    },
                );
                Ok(())
            }
            Err(err @ (MembershipError::Suspended | MembershipError::Refused(_))) => {
                let reason = match &err {
                    MembershipError::Refused(CommerceRefusal::Ledger(
                        crate::store::Refusal::Insufficient(_),
                    )) => format!(
                        "not enough available balance to pay {} base units for \"{}\"",
                        tier.price, tier.name
                    ),
                    other => other.to_string(),
                };
                self.renewal_failed(membership, &reason, now_ms).await
            }
            Err(err) => Err(err),
        }
    }

    /// Records why a renewal failed (shown on the member's account) and
    /// tells the member's open sockets.
    async fn renewal_failed(
        &self,
        membership: &MembershipRecord,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), MembershipError> {
        warn!(membership = %membership.id, %reason, "renewal failed");
        self.store
            .record_renewal_failure(&membership.id, reason, now_ms)
            .await?;
        self.account_events.publish(
            &format!("{:#x}", membership.member),
            AccountEvent::MembershipRenewalFailed {
                membership_id: membership.id.clone(),
                tier_id: membership
                    .next_tier_id
                    .clone()
                    .unwrap_or_else(|| membership.tier_id.clone()),
                reason: reason.to_string(),
            },
        );
        Ok(())
    }

    async fn renew_with(
        &self,
        membership: &MembershipRecord,
        tier: &TierRecord,
        key: &str,
        now_ms: i64,
    ) -> Result<i64, MembershipError> {
        let payment_id = format!("membership:{}", key);
        let (transfers, pooled) = self
            .payment_transfers(&payment_id, membership.member, tier.offerer, tier.price)
            .await?;
        let expires_at_ms =
            membership_expiry(now_ms, Some(membership.expires_at_ms), tier.period_seconds)?;
        let write = MembershipWrite {
            previous: Some((membership.tier_id.clone(), membership.expires_at_ms)),
            membership: MembershipRecord {
                tier_id: tier.id.clone(),
                next_tier_id: None,
                expires_at_ms,
                renewal_failure: None,
                renewal_failed_at_ms: None,
                ..membership.clone()
            },
            payment: Some(MembershipPayment {
                id: payment_id,
                kind: PaymentKind::Renewal,
                tier_id: tier.id.clone(),
                amount: tier.price,
                pool_amount: pooled,
                round: self.settings.clock.round_at(now_ms),
            }),
            transfers,
            now_ms,
        };
        self.store.write_membership(&write).await??;
        Ok(expires_at_ms)
    }

    /// Counts media served to a member on an item (server-measured: a
    /// segment's duration once per session), and how far into it they got.
    pub fn served(&self, member: Address, stream_id: &str, delta: WatchDelta, now_ms: i64) {
        let round = self.settings.clock.round_at(now_ms);
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        if served.pending.len() >= MAX_PENDING
            && !served
                .pending
                .contains_key(&(round, member, stream_id.to_string()))
        {
            // Bounded: the flush task writes these out every few seconds.
            warn!("served-media entries full; one dropped");
            return;
        }
        let entry = served
            .pending
            .entry((round, member, stream_id.to_string()))
            .or_default();
        entry.served_ms = entry.served_ms.saturating_add(delta.served_ms);
        entry.furthest_ms = entry.furthest_ms.max(delta.furthest_ms);
    }

    /// Writes what was served to the store.
    pub async fn flush_served(&self) -> Result<(), sqlx::Error> {
        let pending = std::mem::take(
            &mut self
                .served
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pending,
        );
        let mut by_round: BTreeMap<i64, Vec<(MemberItem, WatchDelta)>> = BTreeMap::new();
        for ((round, member, stream), delta) in pending {
            by_round
                .entry(round)
                .or_default()
                .push(((member, stream), delta));
        }
        for (round, deltas) in by_round {
            self.store.add_member_watch(round, &deltas).await?;
        }
        Ok(())
    }

    /// Closes every round before the current one that had pool money or
    /// members' watching, oldest first.
    pub async fn close_due_rounds(&self, now_ms: i64) -> Result<Vec<i64>, MembershipError> {
        self.flush_served().await?;
        // Voucher steps stamped just before a round's end may commit just
        // after it: a round closes a moment after it ends.
        let current = self
            .settings
            .clock
            .round_at(now_ms.saturating_sub(CLOSE_GRACE_MS));
        let last = self.store.pool_rounds(1).await?.into_iter().next();
        let after = last.as_ref().map_or(i64::MIN, |r| r.round);
        let mut rounds = self.store.rounds_with_activity(after, current).await?;
        // A round with only view-pool money still closes, so `V` reaches
        // the pool (and carries) rather than waiting for members.
        let previous = current - 1;
        if rounds.is_empty() && previous > after {
            let (_, ends_at_ms) = self.settings.clock.bounds(previous);
            let since = last.as_ref().map(|r| r.ends_at_ms);
            if !self
                .store
                .view_pool_inflow(since, ends_at_ms)
                .await?
                .is_zero()
            {
                rounds.push(previous);
            }
        }
        let mut closed = Vec::new();
        for round in rounds {
            if self.close_round(round, now_ms).await? {
                closed.push(round);
            }
        }
        Ok(closed)
    }

    /// Closes one round: inputs from the store, the spec's division, the
    /// statement published, the allocations paid. `false` if closed already.
    pub async fn close_round(&self, round: i64, now_ms: i64) -> Result<bool, MembershipError> {
        let last = self.store.pool_rounds(1).await?.into_iter().next();
        let carry_in = last.as_ref().map_or(Amount(0), |r| r.carry_out);
        let (starts_at_ms, ends_at_ms) = self.settings.clock.bounds(round);
        // `V`: everything voucher steps credited the view pool since the
        // last closed round ended (rounds without activity are not closed,
        // and had no engagement to share it by).
        let view_since_ms = last.as_ref().map(|r| r.ends_at_ms);
        let view_inflow = self
            .store
            .view_pool_inflow(view_since_ms, ends_at_ms)
            .await?;
        let contributions: BTreeMap<Address, Amount> = self
            .store
            .round_contributions(round)
            .await?
            .into_iter()
            .collect();
        let mut engagement: BTreeMap<Address, BTreeMap<Address, u128>> = BTreeMap::new();
        let mut watched = Vec::new();
        for watch in self.store.round_watch(round).await? {
            let Some(creator) = watch.creator else {
                continue;
            };
            let e = economics::engagement(match watch.video_duration_ms {
                Some(duration_ms) => Watched::Video {
                    served_ms: watch.served_ms,
                    duration_ms,
                    furthest_position_ms: watch.furthest_ms,
                },
                None => Watched::Live {
                    served_ms: watch.served_ms,
                },
            });
            watched.push(serde_json::json!({
                "member": format!("{:#x}", watch.member),
                "creator": format!("{creator:#x}"),
                "item": watch.stream_id,
                "served_ms": watch.served_ms,
                "furthest_ms": watch.furthest_ms,
                "duration_ms": watch.video_duration_ms,
                "engagement": e.to_string(),
            }));
            if e > 0 {
                let per_creator = engagement.entry(watch.member).or_default();
                let entry = per_creator.entry(creator).or_insert(0);
                *entry = entry.saturating_add(e);
            }
        }
        let inputs = RoundInputs {
            contributions: contributions.clone(),
            view_inflow,
            carry: carry_in,
            engagement: engagement.clone(),
        };
        let outcome = economics::close_round(&inputs, self.settings.mode)?;
        let mode = match self.settings.mode {
            PoolMode::UserCentric => "user-centric",
            PoolMode::ProRata => "pro-rata",
        };
        let mut transfers = Vec::new();
        if !view_inflow.is_zero() {
            transfers.push(Transfer {
                id: format!("view-pool:{round}"),
                debit: crate::store::view_pool_account(),
                credit: AccountRef::Pool {
                    asset: Address::ZERO,
                },
                asset: Address::ZERO,
                amount: view_inflow,
                kind: TransferKind::ViewPoolInflow,
                channel: None,
            });
        }
        let mut paid = Vec::new();
        for (creator, amount) in &outcome.allocations {
            if amount.is_zero() {
                continue;
            }
            let policy = self.policy(*creator, false).await?;
            let split = economics::one_off_split(&policy, *amount, false);
            let mut shares = Vec::new();
            for (index, (recipient, units)) in split.recipients.iter().enumerate() {
                shares.push(serde_json::json!({
                    "recipient": format!("{recipient:#x}"),
                    "amount": units.to_string(),
                }));
                if units.is_zero() {
                    continue;
                }
                transfers.push(Transfer {
                    id: format!("pool:{round}:{creator:#x}:{index}"),
                    debit: AccountRef::Pool {
                        asset: Address::ZERO,
                    },
                    credit: AccountRef::Revenue {
                        owner: *recipient,
                        asset: Address::ZERO,
                    },
                    asset: Address::ZERO,
                    amount: *units,
                    kind: TransferKind::PoolAllocation,
                    channel: None,
                });
            }
            paid.push(serde_json::json!({
                "creator": format!("{creator:#x}"),
                "amount": amount.to_string(),
                "split": shares,
            }));
        }
        let text = |m: &BTreeMap<Address, Amount>| -> BTreeMap<String, String> {
            m.iter()
                .map(|(a, v)| (format!("{a:#x}"), v.to_string()))
                .collect()
        };
        let statement = serde_json::json!({
            "kind": "streamweave.pool-round",
            "round": round,
            "starts_at": crate::http::auth::rfc3339(starts_at_ms),
            "ends_at": crate::http::auth::rfc3339(ends_at_ms),
            "mode": mode,
            "pool_bps": self.settings.pool_bps,
            "contributions": text(&contributions),
            "view_inflow": view_inflow.to_string(),
            "view_inflow_since": view_since_ms.map(crate::http::auth::rfc3339),
            "carry_in": carry_in.to_string(),
            "engagement": engagement.iter().map(|(m, per)| (format!("{m:#x}"), per.iter().map(|(c, e)| (format!("{c:#x}"), e.to_string())).collect::<BTreeMap<_, _>>())).collect::<BTreeMap<_, _>>(),
            "watched": watched,
            "allocations": paid,
            "carry_out": outcome.carry.to_string(),
        });
        let bytes = serde_json::to_vec_pretty(&statement)
            .map_err(|err| MembershipError::Statement(err.into()))?;
        let blockstore = self.blockstore.clone();
        let cid = tokio::task::spawn_blocking(move || blockstore.put_file(&bytes))
            .await
            .map_err(|err| MembershipError::Statement(err.into()))?
            .map_err(|err| MembershipError::Statement(err.into()))?;
        let total_contributions = contributions
            .values()
            .try_fold(Amount(0), |sum, c| sum.checked_add(*c))
            .ok_or(EconomicsError::Overflow)?;
        let record = RoundRecord {
            round,
            starts_at_ms,
            ends_at_ms,
            contributions: total_contributions,
            view_inflow,
            carry_in,
            carry_out: outcome.carry,
            mode: mode.into(),
            statement_cid: cid.to_string(),
            closed_at_ms: now_ms,
            allocations: outcome
                .allocations
                .iter()
                .filter(|(_, a)| !a.is_zero())
                .map(|(c, a)| (*c, *a))
                .collect(),
        };
        let closed = self.store.close_pool_round(&record, &transfers).await??;
        if closed {
            info!(round, statement = %cid, carry = %outcome.carry, "pool round closed");
        }
        Ok(closed)
    }

    /// Renews due memberships, writes what was served and closes rounds,
    /// every `period`.
    pub async fn run(self, period: Duration) {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = crate::model::now_ms();
            match self.store.memberships_due(now, 3_600_000).await {
                Ok(due) => {
                    for membership in due {
                        if let Err(err) = self.renew(&membership, now).await {
                            warn!(membership = %membership.id, %err, "renewing a membership");
                        }
                    }
                }
                Err(err) => warn!(%err, "listing memberships due"),
            }
            if let Err(err) = self.close_due_rounds(now).await {
                warn!(%err, "closing pool rounds");
            }
        }
    }
}
