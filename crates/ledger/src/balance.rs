//! Balances: credits minus debits of one account. Amounts span 0 ..= 2^128-1,
//! so a balance spans -(2^128-1) ..= 2^128-1 (only the outside world's goes
//! below zero); anything beyond is an overflow, refused, never wrapped.

use std::fmt;
use std::str::FromStr;

use alloy_primitives::I256;

use crate::amount::Amount;

/// A signed balance of base units over the whole amount range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Balance(I256);

/// Why text is not a balance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    #[error("balance must be a decimal integer")]
    NotDecimal,
    #[error("balance exceeds the range -(2^128-1) ..= 2^128-1")]
    OutOfRange,
}

fn magnitude_limit() -> I256 {
    I256::try_from(u128::MAX).unwrap_or(I256::MAX)
}

impl Balance {
    /// Zero.
    pub const ZERO: Balance = Balance(I256::ZERO);

    fn within_range(value: I256) -> Option<Balance> {
        let limit = magnitude_limit();
        (value <= limit && value >= -limit).then_some(Balance(value))
    }

    /// `self + amount`, or `None` beyond 2^128-1.
    pub fn credit(self, amount: Amount) -> Option<Balance> {
        self.checked_add(Balance::from(amount))
    }

    /// `self - amount`, or `None` below -(2^128-1).
    pub fn debit(self, amount: Amount) -> Option<Balance> {
        self.checked_add(-Balance::from(amount))
    }

    /// `self + other`, or `None` outside the range.
    pub fn checked_add(self, other: Balance) -> Option<Balance> {
        Balance::within_range(self.0.checked_add(other.0)?)
    }

    /// Whether this is below zero.
    pub fn is_negative(self) -> bool {
        self.0.is_negative()
    }

    /// The exact value, for sums that may leave the range on the way.
    pub(crate) fn wide(self) -> I256 {
        self.0
    }

    /// The balance as an amount; `None` when below zero.
    pub fn to_amount(self) -> Option<Amount> {
        u128::try_from(self.0).ok().map(Amount)
    }

    /// The balance as an amount, zero when below zero.
    pub fn non_negative(self) -> Amount {
        self.to_amount().unwrap_or(Amount::ZERO)
    }
}

impl From<Amount> for Balance {
    fn from(amount: Amount) -> Self {
        Balance(I256::try_from(amount.0).unwrap_or(I256::MAX))
    }
}

impl From<i128> for Balance {
    fn from(value: i128) -> Self {
        Balance(I256::try_from(value).unwrap_or(I256::ZERO))
    }
}

impl std::ops::Neg for Balance {
    type Output = Balance;

    /// Exact: the range is symmetric.
    fn neg(self) -> Balance {
        Balance(-self.0)
    }
}

impl PartialEq<i128> for Balance {
    fn eq(&self, other: &i128) -> bool {
        *self == Balance::from(*other)
    }
}

impl PartialOrd<i128> for Balance {
    fn partial_cmp(&self, other: &i128) -> Option<std::cmp::Ordering> {
        Some(self.cmp(&Balance::from(*other)))
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Balance {
    type Err = BalanceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BalanceError::NotDecimal);
        }
        let value = I256::from_dec_str(text).map_err(|_| BalanceError::OutOfRange)?;
        Balance::within_range(value).ok_or(BalanceError::OutOfRange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_the_whole_amount_range_both_ways() {
        let max = Balance::from(Amount(u128::MAX));
        assert_eq!(max.to_string(), u128::MAX.to_string());
        assert_eq!((-max).to_string(), format!("-{}", u128::MAX));
        assert_eq!(max.credit(Amount(1)), None);
        assert_eq!((-max).debit(Amount(1)), None);
        assert_eq!(
            Balance::ZERO.debit(Amount(u128::MAX)),
            Some(-max),
            "the outside world may owe everything"
        );
        assert_eq!(max.to_amount(), Some(Amount(u128::MAX)));
        assert_eq!((-max).to_amount(), None);
        assert_eq!((-max).non_negative(), Amount::ZERO);
    }

    #[test]
    fn parses_and_prints_decimal() {
        for text in ["0", "1", "-1", "170141183460469231731687303715884105728"] {
            assert_eq!(text.parse::<Balance>().expect(text).to_string(), text);
        }
        let too_large = "340282366920938463463374607431768211456";
        assert_eq!(too_large.parse::<Balance>(), Err(BalanceError::OutOfRange));
        assert_eq!(
            format!("-{too_large}").parse::<Balance>(),
            Err(BalanceError::OutOfRange)
        );
        for bad in ["", "-", "+1", "1.5", " 1", "0x1"] {
            assert_eq!(
                bad.parse::<Balance>(),
                Err(BalanceError::NotDecimal),
                "{bad}"
            );
        }
        assert!(Balance::from(-5) < 0);
        assert!(Balance::from(5) == 5);
    }
}
