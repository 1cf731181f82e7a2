//! The escrow's logs in the ledger's terms.

use alloy_primitives::{Address, B256, LogData};
use alloy_sol_types::SolEvent;
use streamweave_ledger::RevenuePolicy;

use crate::abi::IStreamWeaveEscrow as E;
use crate::{ChainError, amount128, ledger_policy};

/// What happened to a channel or an account on the escrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EscrowEvent {
    /// A channel opened with its deposit (as received) and policy.
    Opened {
        channel: B256,
        payer: Address,
        payee: Address,
        token: Address,
        salt: B256,
        signer: Address,
        deposit: u128,
        expires_at_s: u64,
        policy: RevenuePolicy,
        fee_recipient: Address,
    },
    /// A top-up (`amount` received, `deposit` the new total).
    ToppedUp {
        channel: B256,
        amount: u128,
        deposit: u128,
    },
    /// A voucher settled: the channel's settled total is now `cumulative`.
    Settled { channel: B256, cumulative: u128 },
    /// The payer asked to close: vouchers settle until `closes_at_s`.
    CloseRequested { channel: B256, closes_at_s: u64 },
    /// Closed: `settled` stayed with the payee side, `refund` went back.
    Closed {
        channel: B256,
        settled: u128,
        refund: u128,
    },
    /// An account withdrew its credits.
    Withdrawn {
        token: Address,
        account: Address,
        amount: u128,
    },
    /// Credits and refunds: implied by the events above.
    Implied,
}

impl EscrowEvent {
    /// The channel it concerns, if any.
    pub fn channel(&self) -> Option<B256> {
        match self {
            EscrowEvent::Opened { channel, .. }
            | EscrowEvent::ToppedUp { channel, .. }
            | EscrowEvent::Settled { channel, .. }
            | EscrowEvent::CloseRequested { channel, .. }
            | EscrowEvent::Closed { channel, .. } => Some(*channel),
            EscrowEvent::Withdrawn { .. } | EscrowEvent::Implied => None,
        }
    }
}

/// A decoded log and where it sits in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedEvent {
    pub block_number: u64,
    pub block_hash: B256,
    pub tx_hash: B256,
    pub log_index: u64,
    pub event: EscrowEvent,
}

impl ObservedEvent {
    /// The log's position, increasing along the chain.
    pub fn position(&self) -> (u64, u64) {
        (self.block_number, self.log_index)
    }
}

/// Decodes one of the escrow's logs (`None` for a log it does not emit).
pub fn decode_event(data: &LogData) -> Result<Option<EscrowEvent>, ChainError> {
    let Some(topic) = data.topics().first() else {
        return Ok(None);
    };
    let bad = |err: alloy_sol_types::Error| ChainError::Decode(err.to_string());
    let event = match *topic {
        E::ChannelOpened::SIGNATURE_HASH => {
            let e = E::ChannelOpened::decode_log_data(data).map_err(bad)?;
            let (policy, fee_recipient) = ledger_policy(&e.policy);
            EscrowEvent::Opened {
                channel: e.channelId,
                payer: e.payer,
                payee: e.payee,
                token: e.token,
                salt: e.salt,
                signer: e.signer,
                deposit: e.deposit,
                expires_at_s: e.expiresAt,
                policy,
                fee_recipient,
            }
        }
        E::ToppedUp::SIGNATURE_HASH => {
            let e = E::ToppedUp::decode_log_data(data).map_err(bad)?;
            EscrowEvent::ToppedUp {
                channel: e.channelId,
                amount: e.amount,
                deposit: e.deposit,
            }
        }
        E::Settled::SIGNATURE_HASH => {
            let e = E::Settled::decode_log_data(data).map_err(bad)?;
            EscrowEvent::Settled {
                channel: e.channelId,
                cumulative: e.cumulativeAmount,
            }
        }
        E::CloseRequested::SIGNATURE_HASH => {
            let e = E::CloseRequested::decode_log_data(data).map_err(bad)?;
            EscrowEvent::CloseRequested {
                channel: e.channelId,
                closes_at_s: e.closesAt,
            }
        }
        E::Closed::SIGNATURE_HASH => {
            let e = E::Closed::decode_log_data(data).map_err(bad)?;
            EscrowEvent::Closed {
                channel: e.channelId,
                settled: e.settled,
                refund: e.refund,
            }
        }
        E::Withdrawn::SIGNATURE_HASH => {
            let e = E::Withdrawn::decode_log_data(data).map_err(bad)?;
            EscrowEvent::Withdrawn {
                token: e.token,
                account: e.account,
                amount: amount128(e.amount)?,
            }
        }
        E::Credited::SIGNATURE_HASH | E::Refunded::SIGNATURE_HASH => EscrowEvent::Implied,
        _ => return Ok(None),
    };
    Ok(Some(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{U256, address, b256};

    #[test]
    fn decodes_a_settled_log_and_ignores_foreign_ones() {
        let event = E::Settled {
            channelId: b256!("0x1111111111111111111111111111111111111111111111111111111111111111"),
            cumulativeAmount: 500,
            amount: 200,
        };
        let data = event.encode_log_data();
        assert_eq!(
            decode_event(&data).unwrap(),
            Some(EscrowEvent::Settled {
                channel: event.channelId,
                cumulative: 500
            })
        );
        let foreign = LogData::new_unchecked(vec![B256::repeat_byte(7)], Default::default());
        assert_eq!(decode_event(&foreign).unwrap(), None);
        // Same topic, truncated data: an error, not a guess.
        let truncated = LogData::new_unchecked(data.topics().to_vec(), data.data.slice(..10));
        assert!(decode_event(&truncated).is_err());
    }

    #[test]
    fn a_withdrawal_beyond_the_amount_range_is_an_error() {
        let event = E::Withdrawn {
            token: address!("0x00000000000000000000000000000000000000aa"),
            account: address!("0x00000000000000000000000000000000000000bb"),
            to: address!("0x00000000000000000000000000000000000000bb"),
            amount: U256::from(u128::MAX) + U256::from(1),
        };
        assert!(matches!(
            decode_event(&event.encode_log_data()),
            Err(ChainError::AmountRange)
        ));
    }
}
