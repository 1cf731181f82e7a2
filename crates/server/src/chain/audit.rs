//! `streamweave ledger audit --chain-rpc`: the ledger's on-chain channels
//! against their escrow.

use std::collections::BTreeMap;

use streamweave_chain::Escrow;
use streamweave_ledger::{Address, Channel, ChannelState};

/// Per channel: the escrow's deposit equals the ledger's, what it settled
/// is at most what the ledger redeemed, a channel closed in the ledger is
/// closed on chain; per escrow and token: its balance covers what it owes.
/// Answers the violations.
pub async fn reconcile(rpc_url: &str, channels: &[Channel]) -> anyhow::Result<Vec<String>> {
    let mut violations = Vec::new();
    let mut escrows: BTreeMap<Address, Vec<&Channel>> = BTreeMap::new();
    for channel in channels.iter().filter(|c| c.chain.is_some()) {
        escrows.entry(channel.escrow).or_default().push(channel);
    }
    for (address, channels) in escrows {
        let escrow = Escrow::connect(rpc_url, address, None).await?;
        let mut tokens = std::collections::BTreeSet::new();
        for channel in channels {
            if channel.chain_id != escrow.chain_id() {
                violations.push(format!(
                    "channel {:#x}: of chain {}, the node is chain {}",
                    channel.id,
                    channel.chain_id,
                    escrow.chain_id()
                ));
                continue;
            }
            tokens.insert(channel.token);
            let on_chain = escrow.channel(channel.id).await?;
            let id = channel.id;
            if on_chain.state == 0 {
                violations.push(format!(
                    "channel {id:#x}: unknown to the escrow {address:#x}"
                ));
                continue;
            }
            if on_chain.deposit != channel.deposit.0 {
                violations.push(format!(
                    "channel {id:#x}: deposit {} on chain, {} in the ledger",
                    on_chain.deposit, channel.deposit
                ));
            }
            if on_chain.settled > channel.redeemed.0 {
                violations.push(format!(
                    "channel {id:#x}: settled {} on chain, more than the {} the ledger redeemed",
                    on_chain.settled, channel.redeemed
                ));
            }
            if channel.state == ChannelState::Closed && on_chain.state != 3 {
                violations.push(format!(
                    "channel {id:#x}: closed in the ledger, open on chain"
                ));
            }
            if channel.state == ChannelState::Closed && on_chain.settled < channel.redeemed.0 {
                violations.push(format!(
                    "channel {id:#x}: closed with {} settled of {} redeemed: the payee side \
                     lost the difference",
                    on_chain.settled, channel.redeemed
                ));
            }
        }
        for token in tokens {
            let owed = escrow.owed(token).await?;
            let balance = escrow.token_balance(token, address).await?;
            if balance < owed {
                violations.push(format!(
                    "escrow {address:#x}: holds {balance} of token {token:#x} but owes {owed}"
                ));
            }
        }
    }
    Ok(violations)
}
