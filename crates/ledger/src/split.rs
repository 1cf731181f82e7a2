//! Revenue splits (spec "Splits"): a platform fee rounded up, recipients'
//! totals floored, leftover units held until the channel closes. Every total
//! is a function of the gross alone, so steps transfer differences.

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::Amount;
use crate::book::{AccountRef, Transfer, TransferKind};

/// Largest number of recipients in a policy.
pub const MAX_RECIPIENTS: usize = 16;
/// 100% in basis points.
pub const BPS_DENOMINATOR: u16 = 10_000;

/// One recipient of a payee's revenue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// Who receives.
    pub address: Address,
    /// Integer share, relative to the sum of shares.
    pub share: u64,
}

/// A payee's revenue policy, copied into each channel when it opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevenuePolicy {
    /// Platform fee in basis points (300 = 3%).
    pub platform_fee_bps: u16,
    /// Recipients in payout order.
    pub recipients: Vec<Recipient>,
}

/// Why a policy is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Fee above 10000 bps.
    #[error("platform fee must be at most 10000 bps")]
    FeeTooHigh,
    /// No recipients, or more than [`MAX_RECIPIENTS`].
    #[error("a policy has 1 to 16 recipients")]
    RecipientCount,
    /// A share of zero.
    #[error("every share must be positive")]
    ZeroShare,
    /// The same address twice.
    #[error("recipients must be distinct")]
    DuplicateRecipient,
    /// Shares whose sum overflows.
    #[error("shares are too large")]
    SharesTooLarge,
}

/// What a gross amount divides into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitTotals {
    /// The platform's fee.
    pub fee: Amount,
    /// Each recipient's total, in policy order.
    pub recipients: Vec<Amount>,
    /// Units not yet given to anyone (fewer than the number of recipients).
    pub leftover: Amount,
}

impl RevenuePolicy {
    /// A policy paying everything after the fee to one address.
    pub fn sole(address: Address, platform_fee_bps: u16) -> Self {
        RevenuePolicy {
            platform_fee_bps,
            recipients: vec![Recipient { address, share: 1 }],
        }
    }

    /// Checks the policy's rules.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.platform_fee_bps > BPS_DENOMINATOR {
            return Err(PolicyError::FeeTooHigh);
        }
        if self.recipients.is_empty() || self.recipients.len() > MAX_RECIPIENTS {
            return Err(PolicyError::RecipientCount);
        }
        if self.recipients.iter().any(|r| r.share == 0) {
            return Err(PolicyError::ZeroShare);
        }
        for (index, recipient) in self.recipients.iter().enumerate() {
            if self.recipients[..index]
                .iter()
                .any(|r| r.address == recipient.address)
            {
                return Err(PolicyError::DuplicateRecipient);
            }
        }
        self.recipients
            .iter()
            .try_fold(0u64, |sum, r| sum.checked_add(r.share))
            .ok_or(PolicyError::SharesTooLarge)?;
        Ok(())
    }

    fn sum_of_shares(&self) -> u64 {
        self.recipients
            .iter()
            .map(|r| r.share)
            .fold(0u64, u64::saturating_add)
    }

    /// `fee(g) = ceil(g * bps / 10000)`, exact for every u128 `g`.
    pub fn fee(&self, gross: Amount) -> Amount {
        let product = U256::from(gross.0) * U256::from(self.platform_fee_bps);
        let fee = product.div_ceil(U256::from(BPS_DENOMINATOR));
        // fee <= gross because bps <= 10000 (validated), so it fits u128.
        Amount(u128::try_from(fee).unwrap_or(gross.0))
    }

    /// The totals for a channel whose redeemed amount is `gross`.
    pub fn totals(&self, gross: Amount) -> SplitTotals {
        let fee = self.fee(gross);
        let rest = gross.0 - fee.0;
        let sum = U256::from(self.sum_of_shares().max(1));
        let recipients: Vec<Amount> = self
            .recipients
            .iter()
            .map(|r| {
                let total = U256::from(rest) * U256::from(r.share) / sum;
                // share <= sum, so total <= rest.
                Amount(u128::try_from(total).unwrap_or(rest))
            })
            .collect();
        let given: u128 = recipients.iter().map(|a| a.0).sum();
        SplitTotals {
            fee,
            leftover: Amount(rest - given),
            recipients,
        }
    }
}

/// The transfers of a tip of `amount` from `payer`'s available balance,
/// split by `policy`: the fee (rounded up) to the platform, each recipient
/// its floored share, and the few leftover units one each to the recipients
/// in list order (a tip is final, so nothing waits). Ids are `{id}:fee`,
/// `{id}:{index}`, so a retried tip with the same id moves money once.
/// Answers nothing for a zero amount.
pub fn tip_transfers(
    id: &str,
    payer: Address,
    asset: Address,
    policy: &RevenuePolicy,
    amount: Amount,
) -> Vec<Transfer> {
    let totals = policy.totals(amount);
    let from = AccountRef::Available {
        owner: payer,
        asset,
    };
    let mut transfers = Vec::with_capacity(policy.recipients.len() + 1);
    if totals.fee.0 > 0 {
        transfers.push(Transfer {
            id: format!("{id}:fee"),
            debit: from,
            credit: AccountRef::Platform { asset },
            asset,
            amount: totals.fee,
            kind: TransferKind::Tip,
            channel: None,
        });
    }
    // leftover < number of recipients, so it fits in usize.
    let leftover = usize::try_from(totals.leftover.0).unwrap_or(usize::MAX);
    for (index, (recipient, share)) in policy.recipients.iter().zip(&totals.recipients).enumerate()
    {
        let units = share.0 + u128::from(index < leftover);
        if units > 0 {
            transfers.push(Transfer {
                id: format!("{id}:{index}"),
                debit: from,
                credit: AccountRef::Revenue {
                    owner: recipient.address,
                    asset,
                },
                asset,
                amount: Amount(units),
                kind: TransferKind::Tip,
                channel: None,
            });
        }
    }
    transfers
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(shares: &[u64], bps: u16) -> RevenuePolicy {
        RevenuePolicy {
            platform_fee_bps: bps,
            recipients: shares
                .iter()
                .enumerate()
                .map(|(i, &share)| Recipient {
                    address: Address::with_last_byte(i as u8 + 1),
                    share,
                })
                .collect(),
        }
    }

    #[test]
    fn worked_example() {
        let p = policy(&[2, 1], 300);
        let t = p.totals(Amount(1000));
        assert_eq!(t.fee, Amount(30));
        assert_eq!(t.recipients, [Amount(646), Amount(323)]);
        assert_eq!(t.leftover, Amount(1));
        assert_eq!(p.fee(Amount(1)), Amount(1), "the fee rounds up");
        assert_eq!(
            p.fee(Amount(u128::MAX)).0,
            u128::MAX / 10000 * 300 + (u128::MAX % 10000 * 300).div_ceil(10000)
        );
    }

    #[test]
    fn validation() {
        assert_eq!(
            policy(&[], 300).validate(),
            Err(PolicyError::RecipientCount)
        );
        assert_eq!(policy(&[1, 0], 300).validate(), Err(PolicyError::ZeroShare));
        assert_eq!(
            policy(&[1], 10_001).validate(),
            Err(PolicyError::FeeTooHigh)
        );
        assert_eq!(
            policy(&[u64::MAX, 1], 0).validate(),
            Err(PolicyError::SharesTooLarge)
        );
        let mut twice = policy(&[1, 1], 300);
        twice.recipients[1].address = twice.recipients[0].address;
        assert_eq!(twice.validate(), Err(PolicyError::DuplicateRecipient));
        assert_eq!(policy(&[3, 2, 1], 300).validate(), Ok(()));
    }

    #[test]
    fn a_tip_splits_like_a_voucher_and_gives_the_leftover_away() {
        let p = policy(&[2, 1], 300);
        let payer = Address::with_last_byte(9);
        let tip = tip_transfers("tip:1", payer, Address::ZERO, &p, Amount(1000));
        let amounts: Vec<(String, u128)> = tip.iter().map(|t| (t.id.clone(), t.amount.0)).collect();
        assert_eq!(
            amounts,
            [
                ("tip:1:fee".to_string(), 30),
                ("tip:1:0".to_string(), 647),
                ("tip:1:1".to_string(), 323)
            ]
        );
        assert!(tip.iter().all(|t| t.kind == TransferKind::Tip
            && t.debit
                == AccountRef::Available {
                    owner: payer,
                    asset: Address::ZERO
                }));
        assert!(tip_transfers("tip:2", payer, Address::ZERO, &p, Amount(0)).is_empty());
    }

    proptest! {
        #[test]
        fn tips_move_exactly_the_amount(
            shares in prop::collection::vec(1u64..1_000_000, 1..6),
            bps in 0u16..=10_000,
            amount in any::<u128>(),
        ) {
            let p = policy(&shares, bps);
            let tip = tip_transfers("t", Address::ZERO, Address::ZERO, &p, Amount(amount));
            let mut sum = 0u128;
            for t in &tip {
                prop_assert!(t.amount.0 > 0);
                sum = sum.checked_add(t.amount.0).expect("a tip never moves more than its amount");
            }
            prop_assert_eq!(sum, amount);
            prop_assert_eq!(tip.first().filter(|t| t.id == "t:fee").map_or(0, |t| t.amount.0), p.fee(Amount(amount)).0);
        }

        #[test]
        fn totals_sum_to_gross_and_are_monotone(
            shares in prop::collection::vec(1u64..1_000_000, 1..6),
            bps in 0u16..=10_000,
            a in any::<u128>(),
            b in any::<u128>(),
        ) {
            let p = policy(&shares, bps);
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            let t_low = p.totals(Amount(low));
            let t_high = p.totals(Amount(high));
            for t in [&t_low, &t_high] {
                let sum: u128 = t.fee.0 + t.recipients.iter().map(|x| x.0).sum::<u128>() + t.leftover.0;
                prop_assert!(t.leftover.0 < shares.len() as u128);
                prop_assert_eq!(sum, if std::ptr::eq(t, &t_low) { low } else { high });
            }
            prop_assert!(t_low.fee <= t_high.fee);
            for (x, y) in t_low.recipients.iter().zip(&t_high.recipients) {
                prop_assert!(x <= y);
            }
        }
    }
}
