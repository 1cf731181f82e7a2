//! StreamWeave's payment core, as `shared/spec/payments.md` defines it:
//! amounts, EIP-712 vouchers and channel ids, signature recovery, revenue
//! splits, the channel state machine, the double-entry model and its audit;
//! and the arithmetic of `shared/spec/economics.md` ([`economics`]: tickets,
//! the leaderboard, market sales, memberships, the pool's rounds).
//!
//! Free of I/O, threads and clocks: time is an argument (`now_ms`), and every
//! operation returns the transfers a store must persist atomically.

mod amount;
mod audit;
mod balance;
mod book;
mod channel;
mod crypto;
pub mod economics;
mod metering;
mod siwe;
mod split;

pub use alloy_primitives::{Address, B128, B256};
pub use amount::{Amount, AmountError};
pub use audit::{AuditReport, Balances, audit};
pub use balance::{Balance, BalanceError};
pub use book::{AccountRef, Transfer, TransferKind};
pub use channel::{
    ChainOpen, ChainStep, Channel, ChannelError, ChannelState, OnChain, OpenChannel,
    VerifiedVoucher, VoucherOutcome, VoucherSigner,
};
pub use crypto::{PaymentDomain, Signature65, SignatureError, SigningKey, personal_sign_digest};
pub use metering::{GateDecision, Meter, Price};
pub use siwe::{SiweError, SiweMessage};
pub use split::{
    MAX_RECIPIENTS, PolicyError, Recipient, RevenuePolicy, SplitTotals, tip_transfers,
};
