//! StreamWeave's escrow on an EVM chain (`contracts/src/StreamWeaveEscrow.sol`):
//! its calls, its events decoded into the ledger's terms, signed
//! transactions a caller can store before sending, and deployment of the
//! escrow and a test token on development chains.
//!
//! The JSON-RPC side is alloy's provider; everything a caller decides (what
//! to settle, when, what a log means for the ledger) stays with the caller.

pub mod abi;
mod client;
mod events;

pub use alloy_primitives::{Address, B256, Bytes, U256};
pub use client::{Deployment, Escrow, OnChainChannel, SignedTx, TxCall, TxOutcome, deploy};
pub use events::{EscrowEvent, ObservedEvent, decode_event};

use alloy_sol_types::SolValue;
use streamweave_ledger::{Recipient, RevenuePolicy};

/// Why a chain operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The node answered with an error, or could not be reached.
    #[error("chain rpc: {0}")]
    Rpc(String),
    /// A private key that is not 32 bytes of hex.
    #[error("private key must be 32 bytes of hex")]
    BadKey,
    /// A transaction needs a key and none was given.
    #[error("no private key configured to send transactions")]
    NoKey,
    /// A log or a return value the ABI does not describe.
    #[error("undecodable data from the chain: {0}")]
    Decode(String),
    /// A transaction was mined and reverted.
    #[error("transaction {0:#x} reverted")]
    Reverted(B256),
    /// An amount beyond the ledger's range (2^128 - 1).
    #[error("amount beyond 2^128-1 base units")]
    AmountRange,
    /// A transaction not mined in time.
    #[error("transaction {0:#x} not mined in time")]
    Timeout(B256),
}

/// The escrow's form of a ledger policy: the fee goes to `fee_recipient`.
pub fn chain_policy(policy: &RevenuePolicy, fee_recipient: Address) -> abi::Policy {
    abi::Policy {
        feeBps: policy.platform_fee_bps,
        feeRecipient: fee_recipient,
        recipients: policy
            .recipients
            .iter()
            .map(|r| abi::Recipient {
                account: r.address,
                share: r.share,
            })
            .collect(),
    }
}

/// The ledger's form of an escrow policy, and its fee's recipient.
pub fn ledger_policy(policy: &abi::Policy) -> (RevenuePolicy, Address) {
    (
        RevenuePolicy {
            platform_fee_bps: policy.feeBps,
            recipients: policy
                .recipients
                .iter()
                .map(|r| Recipient {
                    address: r.account,
                    share: r.share,
                })
                .collect(),
        },
        policy.feeRecipient,
    )
}

/// `keccak256(abi.encode(policy))`, what the escrow stores per channel.
pub fn policy_hash(policy: &abi::Policy) -> B256 {
    alloy_primitives::keccak256(policy.abi_encode())
}

fn amount128(value: U256) -> Result<u128, ChainError> {
    u128::try_from(value).map_err(|_| ChainError::AmountRange)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::address;

    #[test]
    fn policy_round_trips_and_hashes_as_abi_encode_of_one_tuple() {
        let ledger = RevenuePolicy {
            platform_fee_bps: 300,
            recipients: vec![
                Recipient {
                    address: address!("0x00000000000000000000000000000000000000c1"),
                    share: 3,
                },
                Recipient {
                    address: address!("0x00000000000000000000000000000000000000c2"),
                    share: 1,
                },
            ],
        };
        let fee = address!("0x00000000000000000000000000000000000000fe");
        let onchain = chain_policy(&ledger, fee);
        assert_eq!(ledger_policy(&onchain), (ledger, fee));
        // abi.encode of a dynamic struct starts with its offset (0x20).
        let encoded = onchain.abi_encode();
        assert_eq!(U256::from_be_slice(&encoded[..32]), U256::from(32));
        assert_eq!(policy_hash(&onchain), alloy_primitives::keccak256(&encoded));
    }
}
