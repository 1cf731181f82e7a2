//! The audit: re-derives every balance from the transfers and checks the
//! ledger's invariants. Pure, so the same code checks a live database, an
//! export, or a property test's in-memory ledger.

use std::collections::HashMap;

use alloy_primitives::{Address, B256, I256};

use crate::amount::Amount;
use crate::balance::Balance;
use crate::book::{AccountRef, Transfer, TransferKind};
use crate::channel::{Channel, ChannelState};

/// Balances re-derived from transfers (credits minus debits).
#[derive(Debug, Clone, Default)]
pub struct Balances {
    balances: HashMap<AccountRef, Balance>,
}

impl Balances {
    /// Sums transfers into balances, exactly over the whole amount range; a
    /// balance beyond -(2^128-1) ..= 2^128-1 is reported as an overflow.
    pub fn from_transfers<'a>(
        transfers: impl IntoIterator<Item = &'a Transfer>,
    ) -> (Balances, Vec<String>) {
        let mut balances = Balances::default();
        let mut violations = Vec::new();
        for transfer in transfers {
            if transfer.amount.is_zero() {
                violations.push(format!("transfer {} moves zero", transfer.id));
            }
            for (account, credit) in [(transfer.debit, false), (transfer.credit, true)] {
                let entry = balances.balances.entry(account).or_default();
                let moved = if credit {
                    entry.credit(transfer.amount)
                } else {
                    entry.debit(transfer.amount)
                };
                match moved {
                    Some(sum) => *entry = sum,
                    None => violations.push(format!("balance of {} overflows", account.key())),
                }
            }
        }
        (balances, violations)
    }

    /// Balance of an account (0 if it never moved).
    pub fn get(&self, account: &AccountRef) -> Balance {
        self.balances.get(account).copied().unwrap_or_default()
    }

    /// Every account with its balance.
    pub fn iter(&self) -> impl Iterator<Item = (&AccountRef, &Balance)> {
        self.balances.iter()
    }
}

/// What an audit found.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    /// Every broken invariant, named.
    pub violations: Vec<String>,
    /// Transfers checked.
    pub transfers: usize,
    /// Channels checked.
    pub channels: usize,
    /// Accounts seen.
    pub accounts: usize,
}

impl AuditReport {
    /// Whether every invariant holds.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

fn asset_of(account: &AccountRef, channels: &HashMap<B256, &Channel>) -> Option<Address> {
    match account {
        AccountRef::Available { asset, .. }
        | AccountRef::Revenue { asset, .. }
        | AccountRef::Platform { asset }
        | AccountRef::Event { asset, .. }
        | AccountRef::Pool { asset }
        | AccountRef::World { asset } => Some(*asset),
        AccountRef::Escrow { channel } | AccountRef::Clearing { channel } => {
            channels.get(channel).map(|c| c.token)
        }
    }
}

fn wide(amount: Amount) -> I256 {
    I256::try_from(amount.0).unwrap_or(I256::MAX)
}

fn wide_balance(balance: Balance) -> I256 {
    balance.wide()
}

fn add(sum: &mut I256, amount: I256) {
    *sum = sum.saturating_add(amount);
}

/// Checks: debits = credits per asset; no balance but the world's below zero;
/// transfer ids unique; each channel's escrow = deposit - redeemed until it
/// closes (0 after); what left escrow for vouchers = redeemed; each
/// recipient's revenue and the platform fee from each channel equal the split
/// formula for its redeemed (plus released leftover units once closed).
pub fn audit(transfers: &[Transfer], channels: &[Channel]) -> AuditReport {
    let by_id: HashMap<B256, &Channel> = channels.iter().map(|c| (c.id, c)).collect();
    let (balances, mut violations) = Balances::from_transfers(transfers);

    let mut ids = std::collections::HashSet::with_capacity(transfers.len());
    for transfer in transfers {
        if !ids.insert(transfer.id.as_str()) {
            violations.push(format!("transfer id {} is used twice", transfer.id));
        }
        for account in [transfer.debit, transfer.credit] {
            match asset_of(&account, &by_id) {
                Some(asset) if asset == transfer.asset => {}
                Some(_) => violations.push(format!("transfer {} mixes assets", transfer.id)),
                None => violations.push(format!(
                    "transfer {} names unknown channel account {}",
                    transfer.id,
                    account.key()
                )),
            }
        }
    }

    let mut per_asset: HashMap<Address, I256> = HashMap::new();
    for (account, balance) in balances.iter() {
        if let Some(asset) = asset_of(account, &by_id) {
            let sum = per_asset.entry(asset).or_insert(I256::ZERO);
            *sum = sum.saturating_add(wide_balance(*balance));
        }
        if balance.is_negative() && !account.may_go_negative() {
            violations.push(format!("{} is negative: {balance}", account.key()));
        }
    }
    for (asset, sum) in per_asset {
        if sum != I256::ZERO {
            violations.push(format!(
                "debits and credits of asset {asset:#x} differ by {sum}"
            ));
        }
    }

    // Per channel: what moved, by kind and recipient.
    // Sums are 256-bit: exact for any number of 128-bit amounts in practice.
    #[derive(Default)]
    struct Flows {
        funded: I256,
        fee: I256,
        shares: HashMap<Address, I256>,
        leftover_net: I256,
        released: HashMap<Address, I256>,
        refunded: I256,
    }
    let mut flows: HashMap<B256, Flows> = HashMap::new();
    for transfer in transfers {
        let Some(channel) = transfer.channel else {
            continue;
        };
        let amount = wide(transfer.amount);
        let flow = flows.entry(channel).or_default();
        match (transfer.kind, transfer.credit) {
            (TransferKind::ChannelOpen | TransferKind::ChannelTopUp, _) => {
                add(&mut flow.funded, amount)
            }
            (TransferKind::VoucherFee, _) => add(&mut flow.fee, amount),
            (TransferKind::VoucherShare, AccountRef::Revenue { owner, .. }) => {
                add(flow.shares.entry(owner).or_default(), amount)
            }
            (TransferKind::VoucherLeftover, AccountRef::Clearing { .. }) => {
                add(&mut flow.leftover_net, amount)
            }
            (TransferKind::VoucherLeftover, _) => add(&mut flow.leftover_net, -amount),
            (TransferKind::CloseLeftover, AccountRef::Revenue { owner, .. }) => {
                add(flow.released.entry(owner).or_default(), amount)
            }
            (TransferKind::CloseRefund, _) => add(&mut flow.refunded, amount),
            _ => violations.push(format!("transfer {} has an unexpected shape", transfer.id)),
        }
    }
    for channel in channels {
        let name = format!("channel {:#x}", channel.id);
        let flow = flows.remove(&channel.id).unwrap_or_default();
        let deposit = wide(channel.deposit);
        let redeemed = wide(channel.redeemed);
        if flow.funded != deposit {
            violations.push(format!(
                "{name}: funded {} but deposit is {deposit}",
                flow.funded
            ));
        }
        if channel.redeemed > channel.deposit {
            violations.push(format!("{name}: redeemed exceeds deposit"));
        }
        let escrow = wide_balance(balances.get(&AccountRef::Escrow {
            channel: channel.id,
        }));
        let expected_escrow = if channel.state == ChannelState::Closed {
            I256::ZERO
        } else {
            deposit.saturating_sub(redeemed)
        };
        if escrow != expected_escrow {
            violations.push(format!(
                "{name}: escrow holds {escrow}, expected {expected_escrow}"
            ));
        }
        let totals = channel.policy.totals(channel.redeemed);
        let mut left_escrow = flow.fee.saturating_add(flow.leftover_net);
        for share in flow.shares.values() {
            add(&mut left_escrow, *share);
        }
        if left_escrow != redeemed {
            violations.push(format!(
                "{name}: {left_escrow} left escrow for vouchers, redeemed is {redeemed}"
            ));
        }
        if flow.fee != wide(totals.fee) {
            violations.push(format!(
                "{name}: fee paid {} differs from the formula {}",
                flow.fee, totals.fee
            ));
        }
        let closed = channel.state == ChannelState::Closed;
        for (index, recipient) in channel.policy.recipients.iter().enumerate() {
            let mut expected = wide(totals.recipients[index]);
            if closed && (index as u128) < totals.leftover.0 {
                add(&mut expected, I256::ONE);
            }
            let got = flow
                .shares
                .get(&recipient.address)
                .copied()
                .unwrap_or_default()
                .saturating_add(
                    flow.released
                        .get(&recipient.address)
                        .copied()
                        .unwrap_or_default(),
                );
            if got != expected {
                violations.push(format!(
                    "{name}: recipient {:#x} received {got}, the split gives {expected}",
                    recipient.address
                ));
            }
        }
        let clearing = wide_balance(balances.get(&AccountRef::Clearing {
            channel: channel.id,
        }));
        let expected_clearing = if closed {
            I256::ZERO
        } else {
            wide(totals.leftover)
        };
        if clearing != expected_clearing {
            violations.push(format!(
                "{name}: clearing holds {clearing}, expected {expected_clearing}"
            ));
        }
        if closed && flow.refunded != deposit.saturating_sub(redeemed) {
            violations.push(format!(
                "{name}: refunded {} at close, expected {}",
                flow.refunded,
                deposit.saturating_sub(redeemed)
            ));
        }
    }
    for channel in flows.keys() {
        violations.push(format!(
            "transfers name channel {channel:#x}, which does not exist"
        ));
    }
    AuditReport {
        violations,
        transfers: transfers.len(),
        channels: channels.len(),
        accounts: balances.balances.len(),
    }
}
