//! Events: a scheduled live show in its own room (a stream watched by
//! ticket), tickets paid into the event's ledger account, a leaderboard of
//! the tips during the show, and finalization, which pays the creator for
//! what was delivered, refunds the rest and mints the event's collectible
//! to the top tipper. The arithmetic is `streamweave_ledger::economics`
//! (the spec's, to the unit); the items and their money move together in
//! the store's transactions.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use streamweave_cas::Blockstore;
use streamweave_ledger::economics::{self, EconomicsError, EventTip, Standing};
use streamweave_ledger::{AccountRef, Address, Amount, RevenuePolicy, Transfer, TransferKind};
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::live::events::{Events, StreamEvent};
use crate::store::{
    CollectibleRecord, CommerceRefusal, EventRecord, EventState, EventTipRecord, Finalization,
    Store, random_id,
};

/// What the ticketing rules need of the node's settings.
#[derive(Debug, Clone)]
pub struct TicketingSettings {
    pub platform_fee_bps: u16,
    pub segment_duration_ms: u32,
    /// After a stream ends, how long before its event finalizes on its own.
    pub finalize_after_ms: i64,
}

/// Why an event operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TicketingError {
    #[error(transparent)]
    Refused(#[from] CommerceRefusal),
    /// Finalizing a live event, or a scheduled one before its end.
    #[error("{0}")]
    NotYet(&'static str),
    #[error(transparent)]
    Economics(#[from] EconomicsError),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error("storing the collectible's metadata: {0}")]
    Metadata(#[source] anyhow::Error),
}

/// A place on the leaderboard, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct StandingView {
    /// 1 for the top.
    pub rank: u32,
    pub tipper: String,
    /// Sum of the tipper's tips, base units.
    pub total: String,
    /// When the tipper's total first reached this value (RFC 3339).
    pub reached_at: String,
}

fn standing_views(board: &[Standing]) -> Vec<StandingView> {
    board
        .iter()
        .enumerate()
        .map(|(index, standing)| StandingView {
            rank: u32::try_from(index + 1).unwrap_or(u32::MAX),
            tipper: format!("{:#x}", standing.tipper),
            total: standing.total.to_string(),
            reached_at: crate::http::auth::rfc3339(standing.reached_at_ms),
        })
        .collect()
}

/// Events, their leaderboards and finalization.
#[derive(Clone)]
pub struct Ticketing {
    pub store: Store,
    pub blockstore: Arc<Blockstore>,
    pub events: Arc<Events>,
    pub settings: TicketingSettings,
}

impl Ticketing {
    /// The creator's revenue policy with the node's platform fee (the sole
    /// creator when none is set), as tips and vouchers use it.
    pub async fn policy(&self, creator: Address) -> Result<RevenuePolicy, sqlx::Error> {
        Ok(match self.store.policy(creator).await? {
            Some(mut policy) => {
                policy.platform_fee_bps = self.settings.platform_fee_bps;
                policy
            }
            None => RevenuePolicy::sole(creator, self.settings.platform_fee_bps),
        })
    }

    /// The event's leaderboard: the frozen one once finalized, else as the
    /// tips stand now. The creator and the policy's recipients are not
    /// ranked.
    pub async fn leaderboard(
        &self,
        event: &EventRecord,
    ) -> Result<(bool, Vec<StandingView>), TicketingError> {
        if let Some(frozen) = &event.leaderboard {
            let standings: Vec<StandingView> = serde_json::from_str(frozen)
                .map_err(|err| sqlx::Error::Decode(err.to_string().into()))?;
            return Ok((true, standings));
        }
        let board = self.standings(event).await?;
        Ok((false, standing_views(&board)))
    }

    async fn standings(&self, event: &EventRecord) -> Result<Vec<Standing>, TicketingError> {
        let tips: Vec<EventTip> = self
            .store
            .event_tips(&event.id)
            .await?
            .into_iter()
            .map(|tip: EventTipRecord| EventTip {
                tipper: tip.tipper,
                amount: tip.amount,
                at_ms: tip.at_ms,
            })
            .collect();
        let policy = self.policy(event.creator).await?;
        let mut excluded: Vec<Address> = policy.recipients.iter().map(|r| r.address).collect();
        excluded.push(event.creator);
        Ok(economics::leaderboard(&tips, &excluded)?)
    }

    /// Counts a paid tip on the leaderboard of the live event whose room
    /// `stream_id` is (once per tip id), and pushes the new standings.
    pub async fn tip_paid(
        &self,
        tip_id: &str,
        stream_id: &str,
        tip: EventTipRecord,
    ) -> Result<(), TicketingError> {
        let Some(event_id) = self.store.record_event_tip(tip_id, stream_id, &tip).await? else {
            return Ok(());
        };
        if let Some(event) = self.store.event(&event_id).await? {
            let (frozen, standings) = self.leaderboard(&event).await?;
            self.events
                .publish(stream_id, StreamEvent::Leaderboard { frozen, standings });
        }
        Ok(())
    }

    /// Finalizes an event: freezes the leaderboard, refunds each ticket's
    /// undelivered part to its holder, releases the rest (split once by
    /// the creator's policy) and mints the collectible to the top of the
    /// leaderboard (the creator when nobody tipped). An event that never
    /// went live finalizes after its scheduled end, refunding everything.
    pub async fn finalize(
        &self,
        event_id: &str,
        now_ms: i64,
    ) -> Result<EventRecord, TicketingError> {
        let event = self
            .store
            .event(event_id)
            .await?
            .ok_or(CommerceRefusal::NoSuchEvent)?;
        match event.state {
            EventState::Ended => {}
            EventState::Scheduled if now_ms >= event.ends_at_ms() => {}
            EventState::Scheduled => {
                return Err(TicketingError::NotYet(
                    "the event has not happened yet: finalize it after its scheduled end, or cancel it",
                ));
            }
            EventState::Live => {
                return Err(TicketingError::NotYet(
                    "the event is live: finalize it once its stream has ended",
                ));
            }
            EventState::Finalized | EventState::Cancelled => {
                return Err(CommerceRefusal::EventState(event.state).into());
            }
        }
        let tickets = self.store.event_tickets(&event.id).await?;
        let live_media_ms = if event.went_live_at_ms.is_some() {
            self.store.live_media_ms(&event.stream_id).await?
        } else {
            0
        };
        let prices: Vec<Amount> = tickets.iter().map(|t| t.price_paid).collect();
        let payout = economics::finalize_event(&prices, live_media_ms, event.duration_seconds)?;
        let policy = self.policy(event.creator).await?;
        let split = economics::one_off_split(&policy, payout.released_total, true);
        let account = event.account()?;
        let mut release = Vec::new();
        let mut push = |suffix: String, credit: AccountRef, amount: Amount| {
            if !amount.is_zero() {
                release.push(Transfer {
                    id: format!("event:{}:release:{suffix}", event.id),
                    debit: account,
                    credit,
                    asset: Address::ZERO,
                    amount,
                    kind: TransferKind::TicketRelease,
                    channel: None,
                });
            }
        };
        push(
            "fee".into(),
            AccountRef::Platform {
                asset: Address::ZERO,
            },
            split.fee,
        );
        for (index, (recipient, amount)) in split.recipients.iter().enumerate() {
            push(
                index.to_string(),
                AccountRef::Revenue {
                    owner: *recipient,
                    asset: Address::ZERO,
                },
                *amount,
            );
        }
        let board = self.standings(&event).await?;
        let standings = standing_views(&board);
        let winner = board.first().map_or(event.creator, |s| s.tipper);
        let archive = if event.went_live_at_ms.is_some() {
            crate::archive::current_archive(
                &self.store,
                &self.blockstore,
                &event.stream_id,
                self.settings.segment_duration_ms,
            )
            .await
            .map_err(TicketingError::Metadata)?
            .map(|(summary, _)| summary.root_cid)
        } else {
            None
        };
        let metadata = serde_json::json!({
            "kind": "streamweave.event-collectible",
            "event": {
                "id": event.id,
                "title": event.title,
                "description": event.description,
                "starts_at": crate::http::auth::rfc3339(event.starts_at_ms),
                "duration_seconds": event.duration_seconds,
                "stream_id": event.stream_id,
                "went_live_at": event.went_live_at_ms.map(crate::http::auth::rfc3339),
                "ended_at": event.ended_at_ms.map(crate::http::auth::rfc3339),
                "delivered_ms": payout.delivered_ms,
                "tickets_sold": event.tickets_sold,
            },
            "creator": format!("{:#x}", event.creator),
            "recording": archive,
            "leaderboard": standings,
            "minted_to": format!("{winner:#x}"),
            "finalized_at": crate::http::auth::rfc3339(now_ms),
        });
        let bytes = serde_json::to_vec_pretty(&metadata)
            .map_err(|err| TicketingError::Metadata(err.into()))?;
        let blockstore = self.blockstore.clone();
        let metadata_cid = tokio::task::spawn_blocking(move || blockstore.put_file(&bytes))
            .await
            .map_err(|err| TicketingError::Metadata(err.into()))?
            .map_err(|err| TicketingError::Metadata(err.into()))?;
        let finalization = Finalization {
            event_id: event.id.clone(),
            expected_state: event.state,
            expected_tickets_sold: event.tickets_sold,
            delivered_ms: payout.delivered_ms,
            leaderboard_json: serde_json::to_string(&standings)
                .map_err(|err| TicketingError::Metadata(err.into()))?,
            refunds: tickets
                .iter()
                .zip(&payout.tickets)
                .map(|(ticket, p)| (ticket.id.clone(), p.refund))
                .collect(),
            release,
            released: payout.released_total,
            collectible: CollectibleRecord {
                id: random_id(),
                event_id: event.id.clone(),
                creator: event.creator,
                owner: winner,
                royalty_bps: event.royalty_bps,
                archive_root_cid: archive,
                metadata_cid: metadata_cid.to_string(),
                minted_at_ms: now_ms,
            },
            now_ms,
        };
        self.store.finalize_event(&finalization).await??;
        info!(event = %event.id, delivered_ms = payout.delivered_ms, released = %payout.released_total, "event finalized");
        self.events.publish(
            &event.stream_id,
            StreamEvent::Leaderboard {
                frozen: true,
                standings,
            },
        );
        Ok(self
            .store
            .event(&event.id)
            .await?
            .ok_or(CommerceRefusal::NoSuchEvent)?)
    }

    /// Finalizes, now and then, every event whose stream ended
    /// `finalize_after_ms` ago (and every scheduled event that never went
    /// live that long after its scheduled end).
    pub async fn run_finalizer(self) {
        let period = Duration::from_millis(
            u64::try_from(self.settings.finalize_after_ms.clamp(1000, 30_000)).unwrap_or(30_000),
        );
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = crate::model::now_ms();
            let due = match self
                .store
                .events_due(now.saturating_sub(self.settings.finalize_after_ms))
                .await
            {
                Ok(due) => due,
                Err(err) => {
                    warn!(%err, "listing events due for finalization");
                    continue;
                }
            };
            for event in due {
                match self.finalize(&event.id, now).await {
                    Ok(_) | Err(TicketingError::Refused(CommerceRefusal::EventState(_))) => {}
                    Err(err) => warn!(event = %event.id, %err, "finalizing an event"),
                }
            }
        }
    }
}
