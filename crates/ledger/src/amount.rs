//! Amounts: non-negative integers of an asset's base units, 0 ..= 2^128-1.
//! Checked arithmetic only; JSON carries them as decimal strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of base units (USDC: 1 USDC = 1000000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub u128);

/// Why text is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    /// Empty text.
    #[error("amount is empty")]
    Empty,
    /// Anything but ASCII digits (signs, spaces, decimals, exponents).
    #[error("amount must be a decimal string of base units (digits only)")]
    NotDigits,
    /// Larger than 2^128-1.
    #[error("amount exceeds 2^128-1")]
    TooLarge,
}

impl Amount {
    /// Zero.
    pub const ZERO: Amount = Amount(0);

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `self - other`, or `None` below zero.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// Whether this is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountError::NotDigits);
        }
        text.parse::<u128>()
            .map(Amount)
            .map_err(|_| AmountError::TooLarge)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_plain_digits() {
        assert_eq!("1500000".parse(), Ok(Amount(1_500_000)));
        assert_eq!("0".parse(), Ok(Amount(0)));
        assert_eq!(u128::MAX.to_string().parse(), Ok(Amount(u128::MAX)));
        assert_eq!(
            "340282366920938463463374607431768211456".parse::<Amount>(),
            Err(AmountError::TooLarge)
        );
        for bad in ["-1", "+1", " 1", "1 ", "1.5", "1e6", "0x10", "１"] {
            assert_eq!(bad.parse::<Amount>(), Err(AmountError::NotDigits), "{bad}");
        }
        assert_eq!("".parse::<Amount>(), Err(AmountError::Empty));
    }

    #[test]
    fn json_is_a_decimal_string() {
        assert_eq!(serde_json::to_string(&Amount(42)).expect("json"), "\"42\"");
        assert_eq!(
            serde_json::from_str::<Amount>("\"42\"").expect("json"),
            Amount(42)
        );
        assert!(
            serde_json::from_str::<Amount>("42").is_err(),
            "numbers are refused"
        );
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Amount(u128::MAX).checked_add(Amount(1)), None);
        assert_eq!(Amount(1).checked_sub(Amount(2)), None);
        assert_eq!(Amount(3).checked_sub(Amount(2)), Some(Amount(1)));
    }
}
