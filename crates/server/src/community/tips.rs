//! Tips: money from a viewer's available balance to the creator's side,
//! split by the creator's policy exactly as a voucher step
//! (`streamweave_ledger::tip_transfers`), then counted in the stream's
//! totals and shown in its chat once per tip id, like the money.

use std::sync::Arc;

use streamweave_ledger::{AccountRef, Address, Amount, RevenuePolicy, tip_transfers};

use crate::community::chat::{ChatEvent, ChatMessage, ChatRooms};
use crate::live::events::{Events, StreamEvent};
use crate::model::now_ms;
use crate::money::payments::{EngineError, Operation, Payments};
use crate::store::{Store, TipTotals};

/// One tip to pay.
#[derive(Debug, Clone)]
pub struct TipOrder {
    /// The transfer id prefix (`tip:{payer}:{key}`): the same id pays once.
    pub tip_id: String,
    pub payer: Address,
    pub creator: Address,
    /// The creator's policy now.
    pub policy: RevenuePolicy,
    pub stream_id: String,
    pub amount: Amount,
    /// The chat message with it (already checked; may be empty).
    pub text: String,
}

/// What a paid tip did.
#[derive(Debug, Clone)]
pub struct TipOutcome {
    pub fee: Amount,
    /// Each recipient's share, in policy order.
    pub recipients: Vec<Amount>,
    /// The chat message that shows it; `None` for a repeated tip id.
    pub shown: Option<ChatMessage>,
}

/// Why a tip was not paid.
#[derive(Debug, thiserror::Error)]
pub enum TipError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// Pays tips and shows them.
#[derive(Clone)]
pub struct Tips {
    pub store: Store,
    pub payments: Payments,
    pub chat: Arc<ChatRooms>,
    pub events: Arc<Events>,
    /// Counts tips during an event on its leaderboard.
    pub ticketing: crate::ticketing::Ticketing,
}

impl Tips {
    /// Moves the money (acknowledged once durable), then records and shows
    /// the tip once per id.
    pub async fn pay(&self, order: TipOrder, message_id: String) -> Result<TipOutcome, TipError> {
        let transfers = tip_transfers(
            &order.tip_id,
            order.payer,
            Address::ZERO,
            &order.policy,
            order.amount,
        );
        // What the creator receives exactly (their share, plus a leftover
        // unit when they come first in the policy).
        let creator_account = AccountRef::Revenue {
            owner: order.creator,
            asset: Address::ZERO,
        };
        let creator_share = transfers
            .iter()
            .filter(|t| t.credit == creator_account)
            .fold(Amount(0), |sum, t| Amount(sum.0.saturating_add(t.amount.0)));
        self.payments
            .submit(Operation::Transfers(transfers))
            .await?;
        let totals = order.policy.totals(order.amount);
        let author = format!("{:#x}", order.payer);
        let muted = self.store.is_muted(&order.stream_id, &author).await?;
        let message = ChatMessage {
            id: message_id,
            author: author.clone(),
            // A muted account's tip is paid and shown, without its words.
            text: if muted { String::new() } else { order.text },
            tip: Some(order.amount.to_string()),
            time_ms: now_ms(),
        };
        let tip_totals = TipTotals {
            tips: 1,
            gross: order.amount,
            creator: creator_share,
            fee: totals.fee,
        };
        let first_time = self
            .store
            .record_tip(&order.tip_id, &order.stream_id, &tip_totals, &message)
            .await?;
        // On an event's leaderboard while it is live (once per tip id, like the totals).
        let on_board = crate::store::EventTipRecord {
            tipper: order.payer,
            amount: order.amount,
            at_ms: message.time_ms,
        };
        // A store failure fails the request: a retry with the same id
        // moves no money again and counts the tip once.
        match self
            .ticketing
            .tip_paid(&order.tip_id, &order.stream_id, on_board)
            .await
        {
            Ok(()) => {}
            Err(crate::ticketing::TicketingError::Store(err)) => return Err(err.into()),
            Err(err) => {
                tracing::warn!(tip = %order.tip_id, %err, "counting a tip on an event's leaderboard")
            }
        }
        let shown = first_time.then(|| {
            self.chat.publish(
                &order.stream_id,
                ChatEvent::Message {
                    message: message.clone(),
                },
            );
            self.events.publish(
                &order.stream_id,
                StreamEvent::Tip {
                    from: author,
                    gross: order.amount.to_string(),
                    creator: creator_share.to_string(),
                    fee: totals.fee.to_string(),
                },
            );
            message
        });
        Ok(TipOutcome {
            fee: totals.fee,
            recipients: totals.recipients,
            shown,
        })
    }
}
