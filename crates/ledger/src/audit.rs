//! The audit: re-derives every balance from the transfers and checks the
//! ledger's invariants. Pure, so the same code checks a live database, an
//! export, or a property test's in-memory ledger.

use std::collections::HashMap;

use alloy_primitives::{Address, B256};

use crate::book::{AccountRef, Transfer, TransferKind};
use crate::channel::{Channel, ChannelState};

/// Balances re-derived from transfers (credits minus debits).
#[derive(Debug, Clone, Default)]
pub struct Balances {
    balances: HashMap<AccountRef, i128>,
}

impl Balances {
    /// Sums transfers into balances. Amounts up to 2^127 per account are
    /// exact; beyond that the audit reports an overflow violation.
    pub fn from_transfers<'a>(
        transfers: impl IntoIterator<Item = &'a Transfer>,
    ) -> (Balances, Vec<String>) {
        let mut balances = Balances::default();
        let mut violations = Vec::new();
        for transfer in transfers {
            if transfer.amount.is_zero() {
                violations.push(format!("transfer {} moves zero", transfer.id));
            }
            let Ok(amount) = i128::try_from(transfer.amount.0) else {
                violations.push(format!(
                    "transfer {} amount exceeds the audit's range",
                    transfer.id
                ));
                continue;
            };
            for (account, delta) in [(transfer.debit, -amount), (transfer.credit, amount)] {
                let entry = balances.balances.entry(account).or_insert(0);
                match entry.checked_add(delta) {
                    Some(sum) => *entry = sum,
                    None => violations.push(format!("balance of {} overflows", account.key())),
                }
            }
        }
        (balances, violations)
    }

    /// Balance of an account (0 if it never moved).
    pub fn get(&self, account: &AccountRef) -> i128 {
        self.balances.get(account).copied().unwrap_or(0)
    }

    /// Every account with its balance.
    pub fn iter(&self) -> impl Iterator<Item = (&AccountRef, &i128)> {
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
        | AccountRef::World { asset } => Some(*asset),
        AccountRef::Escrow { channel } | AccountRef::Clearing { channel } => {
            channels.get(channel).map(|c| c.token)
        }
    }
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

    let mut per_asset: HashMap<Address, i128> = HashMap::new();
    for (account, balance) in balances.iter() {
        if let Some(asset) = asset_of(account, &by_id) {
            let sum = per_asset.entry(asset).or_insert(0);
            *sum = sum.saturating_add(*balance);
        }
        if *balance < 0 && !account.may_go_negative() {
            violations.push(format!("{} is negative: {balance}", account.key()));
        }
    }
    for (asset, sum) in per_asset {
        if sum != 0 {
            violations.push(format!(
                "debits and credits of asset {asset:#x} differ by {sum}"
            ));
        }
    }

    // Per channel: what moved, by kind and recipient.
    #[derive(Default)]
    struct Flows {
        funded: i128,
        fee: i128,
        shares: HashMap<Address, i128>,
        leftover_net: i128,
        released: HashMap<Address, i128>,
        refunded: i128,
    }
    let mut flows: HashMap<B256, Flows> = HashMap::new();
    for transfer in transfers {
        let Some(channel) = transfer.channel else {
            continue;
        };
        let amount = i128::try_from(transfer.amount.0).unwrap_or(i128::MAX);
        let flow = flows.entry(channel).or_default();
        match (transfer.kind, transfer.credit) {
            (TransferKind::ChannelOpen | TransferKind::ChannelTopUp, _) => flow.funded += amount,
            (TransferKind::VoucherFee, _) => flow.fee += amount,
            (TransferKind::VoucherShare, AccountRef::Revenue { owner, .. }) => {
                *flow.shares.entry(owner).or_insert(0) += amount
            }
            (TransferKind::VoucherLeftover, AccountRef::Clearing { .. }) => {
                flow.leftover_net += amount
            }
            (TransferKind::VoucherLeftover, _) => flow.leftover_net -= amount,
            (TransferKind::CloseLeftover, AccountRef::Revenue { owner, .. }) => {
                *flow.released.entry(owner).or_insert(0) += amount
            }
            (TransferKind::CloseRefund, _) => flow.refunded += amount,
            _ => violations.push(format!("transfer {} has an unexpected shape", transfer.id)),
        }
    }
    for channel in channels {
        let name = format!("channel {:#x}", channel.id);
        let flow = flows.remove(&channel.id).unwrap_or_default();
        let deposit = i128::try_from(channel.deposit.0).unwrap_or(i128::MAX);
        let redeemed = i128::try_from(channel.redeemed.0).unwrap_or(i128::MAX);
        if flow.funded != deposit {
            violations.push(format!(
                "{name}: funded {} but deposit is {deposit}",
                flow.funded
            ));
        }
        if channel.redeemed > channel.deposit {
            violations.push(format!("{name}: redeemed exceeds deposit"));
        }
        let escrow = balances.get(&AccountRef::Escrow {
            channel: channel.id,
        });
        let expected_escrow = if channel.state == ChannelState::Closed {
            0
        } else {
            deposit - redeemed
        };
        if escrow != expected_escrow {
            violations.push(format!(
                "{name}: escrow holds {escrow}, expected {expected_escrow}"
            ));
        }
        let totals = channel.policy.totals(channel.redeemed);
        let shares_out: i128 = flow.shares.values().sum();
        if flow.fee + shares_out + flow.leftover_net != redeemed {
            violations.push(format!(
                "{name}: {} left escrow for vouchers, redeemed is {redeemed}",
                flow.fee + shares_out + flow.leftover_net
            ));
        }
        if flow.fee != i128::try_from(totals.fee.0).unwrap_or(i128::MAX) {
            violations.push(format!(
                "{name}: fee paid {} differs from the formula {}",
                flow.fee, totals.fee
            ));
        }
        let closed = channel.state == ChannelState::Closed;
        for (index, recipient) in channel.policy.recipients.iter().enumerate() {
            let mut expected = i128::try_from(totals.recipients[index].0).unwrap_or(i128::MAX);
            if closed && (index as u128) < totals.leftover.0 {
                expected += 1;
            }
            let got = flow.shares.get(&recipient.address).copied().unwrap_or(0)
                + flow.released.get(&recipient.address).copied().unwrap_or(0);
            if got != expected {
                violations.push(format!(
                    "{name}: recipient {:#x} received {got}, the split gives {expected}",
                    recipient.address
                ));
            }
        }
        let clearing = balances.get(&AccountRef::Clearing {
            channel: channel.id,
        });
        let expected_clearing = if closed {
            0
        } else {
            i128::try_from(totals.leftover.0).unwrap_or(i128::MAX)
        };
        if clearing != expected_clearing {
            violations.push(format!(
                "{name}: clearing holds {clearing}, expected {expected_clearing}"
            ));
        }
        if closed && flow.refunded != deposit - redeemed {
            violations.push(format!(
                "{name}: refunded {} at close, expected {}",
                flow.refunded,
                deposit - redeemed
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
