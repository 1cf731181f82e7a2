//! The double-entry model: accounts and immutable transfers between them.
//!
//! An account's balance is its credits minus its debits. Every transfer
//! debits one account and credits another by the same positive amount, so
//! the balances of one asset always sum to zero; the `World` account (money
//! outside the platform) is the only one allowed below zero.

use alloy_primitives::{Address, B128, B256};
use serde::{Deserialize, Serialize};

use crate::Amount;

/// A ledger account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccountRef {
    /// A user's spendable balance.
    Available {
        /// Owner.
        owner: Address,
        /// Asset (token address; zero for the default asset).
        asset: Address,
    },
    /// A user's earned revenue (creator, collaborator, pool).
    Revenue {
        /// Owner.
        owner: Address,
        /// Asset.
        asset: Address,
    },
    /// A channel's escrowed deposit.
    Escrow {
        /// Channel id.
        channel: B256,
    },
    /// A channel's leftover split units, held until close.
    Clearing {
        /// Channel id.
        channel: B256,
    },
    /// Platform fees.
    Platform {
        /// Asset.
        asset: Address,
    },
    /// An event's ticket money, held until the event is finalized (released
    /// to the creator's side, the undelivered part refunded) or cancelled.
    Event {
        /// Event id.
        event: B128,
        /// Asset.
        asset: Address,
    },
    /// The engagement pool: the pool part of platform-tier payments, paid
    /// out to creators when a round closes (what nobody earned carries).
    Pool {
        /// Asset.
        asset: Address,
    },
    /// Money outside the platform: deposits come from it, withdrawals go to it.
    World {
        /// Asset.
        asset: Address,
    },
}

impl AccountRef {
    /// A stable text key (`available:0x..:0x..`), for storage.
    pub fn key(&self) -> String {
        match self {
            AccountRef::Available { owner, asset } => format!("available:{asset:#x}:{owner:#x}"),
            AccountRef::Revenue { owner, asset } => format!("revenue:{asset:#x}:{owner:#x}"),
            AccountRef::Escrow { channel } => format!("escrow:{channel:#x}"),
            AccountRef::Clearing { channel } => format!("clearing:{channel:#x}"),
            AccountRef::Platform { asset } => format!("platform:{asset:#x}"),
            AccountRef::Event { event, asset } => format!("event:{asset:#x}:{event:#x}"),
            AccountRef::Pool { asset } => format!("pool:{asset:#x}"),
            AccountRef::World { asset } => format!("world:{asset:#x}"),
        }
    }

    /// Whether the balance may go below zero (only the outside world's).
    pub fn may_go_negative(&self) -> bool {
        matches!(self, AccountRef::World { .. })
    }
}

/// What a transfer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// World -> available.
    Deposit,
    /// Available or revenue -> world.
    Withdrawal,
    /// Available -> escrow, when a channel opens.
    ChannelOpen,
    /// Available -> escrow, a top-up.
    ChannelTopUp,
    /// Escrow -> platform, the fee of a voucher step.
    VoucherFee,
    /// Escrow -> revenue, a recipient's part of a voucher step.
    VoucherShare,
    /// Escrow -> clearing, the leftover units of a voucher step.
    VoucherLeftover,
    /// Escrow -> available, what the payer gets back at close.
    CloseRefund,
    /// Clearing -> revenue, leftover units released at close.
    CloseLeftover,
    /// Available -> revenue/platform: a tip and its split.
    Tip,
    /// Available -> event: tickets bought.
    TicketSale,
    /// Event -> available: a ticket's refund (cancellation, undelivered time).
    TicketRefund,
    /// Event -> revenue/platform: ticket money released at finalization.
    TicketRelease,
    /// Available -> available/revenue/platform: a market sale (the seller's
    /// part, the creator's royalty, the platform's fee).
    MarketSale,
    /// Available -> platform/pool/revenue: a membership's payment (a
    /// creator tier split by the creator's policy; a platform tier's pool
    /// part to the pool, the rest to the platform).
    Membership,
    /// Pool -> revenue: a creator's allocation when a round closes.
    PoolAllocation,
    /// Revenue of the view-pool recipient -> pool: the voucher steps' pool
    /// part (`V`), moved when a round closes.
    ViewPoolInflow,
}

/// An immutable movement of money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Unique and deterministic, so a retried operation is idempotent.
    pub id: String,
    /// Where the money leaves.
    pub debit: AccountRef,
    /// Where it arrives.
    pub credit: AccountRef,
    /// Asset moved.
    pub asset: Address,
    /// Positive amount.
    pub amount: Amount,
    /// Why.
    pub kind: TransferKind,
    /// The channel it concerns, if any.
    pub channel: Option<B256>,
}
