//! Follows the escrow's logs: each final log is applied to the ledger once
//! (its position is stored with the channel; a cursor marks the blocks
//! read), logs not final yet are only shown, and a reorganization below
//! the final block stops the watcher instead of applying a forked history.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use streamweave_chain::{EscrowEvent, ObservedEvent, chain_policy, policy_hash};
use streamweave_ledger::{AccountRef, Amount, ChainOpen, ChainStep, OpenChannel};
use tracing::{info, warn};

use super::{ChainLink, EXPIRY_MARGIN_MS, ProvisionalLog, escrow_key};
use crate::money::payments::{self, EngineError, Operation, Payments};
use crate::store::{Refusal, Store};

/// Most blocks asked for in one `eth_getLogs`.
const MAX_BLOCKS_PER_QUERY: u64 = 1000;

pub(super) async fn run(link: Arc<ChainLink>, db: Store, payments: Payments, fee_bps: u16) {
    let mut tick = tokio::time::interval(Duration::from_millis(link.settings.poll_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match watch_once(&link, &db, &payments, fee_bps).await {
            Ok(()) => link.set_status(|s| s.error = None),
            Err(err) => {
                warn!(err = format!("{err:#}"), "following the chain");
                crate::metrics::metrics().chain_errors.inc();
                link.set_status(|s| s.error = Some(format!("{err:#}")));
            }
        }
    }
}

async fn watch_once(
    link: &ChainLink,
    db: &Store,
    payments: &Payments,
    fee_bps: u16,
) -> anyhow::Result<()> {
    let chain_id = link.escrow.chain_id();
    let escrow = escrow_key(link);
    let head = link.escrow.head().await?;
    let final_block = head.saturating_sub(link.settings.confirmations);
    let (mut next, last_hash) = db
        .chain_cursor(chain_id, &escrow)
        .await?
        .unwrap_or((link.settings.start_block, None));
    if let (Some(expected), Some(last)) = (last_hash, next.checked_sub(1)) {
        let (actual, _) = link
            .escrow
            .block(last)
            .await?
            .with_context(|| format!("block {last} is gone"))?;
        anyhow::ensure!(
            format!("{actual:#x}") == expected,
            "the chain reorganized below block {last}, which had {} confirmations when its logs \
             were applied: not applying more until an operator looks (audit with --chain-rpc)",
            link.settings.confirmations
        );
    }
    while next <= final_block {
        let end = final_block.min(next.saturating_add(MAX_BLOCKS_PER_QUERY - 1));
        for event in link.escrow.events(next, end).await? {
            apply(link, db, payments, fee_bps, &event).await?;
        }
        let (hash, _) = link
            .escrow
            .block(end)
            .await?
            .with_context(|| format!("block {end} is gone"))?;
        db.advance_chain_cursor(chain_id, &escrow, end + 1, &format!("{hash:#x}"))
            .await?;
        next = end + 1;
    }
    let provisional = if head >= next {
        link.escrow.events(next, head).await?
    } else {
        Vec::new()
    };
    link.set_status(|s| {
        s.head = head;
        s.final_block = final_block;
        s.provisional = provisional.iter().filter_map(ProvisionalLog::of).collect();
    });
    Ok(())
}

/// Applies one final log. Errors are retried (every step is idempotent);
/// a log the ledger refuses for good is logged and passed.
async fn apply(
    link: &ChainLink,
    db: &Store,
    payments: &Payments,
    fee_bps: u16,
    observed: &ObservedEvent,
) -> anyhow::Result<()> {
    let position = observed.position();
    let tx = format!("{:#x}", observed.tx_hash);
    let operation = match &observed.event {
        EscrowEvent::Opened {
            channel,
            payer,
            payee,
            token,
            salt,
            signer,
            deposit,
            expires_at_s,
            policy,
            fee_recipient,
        } => {
            if *token != link.settings.token {
                info!(channel = %format!("{channel:#x}"), "a channel in another token: not ours");
                return Ok(());
            }
            // A payer names the policy at open: only the payee's own (as the
            // server would split it) is served.
            let expected = payments::payee_policy(db, *payee, fee_bps).await?;
            if policy_hash(&chain_policy(policy, *fee_recipient))
                != policy_hash(&chain_policy(&expected, link.fee_recipient))
            {
                warn!(channel = %format!("{channel:#x}"), %tx,
                    "a channel opened with a policy other than its payee's: not served");
                crate::metrics::metrics().chain_refused.inc();
                return Ok(());
            }
            Operation::ChainOpen {
                open: ChainOpen {
                    id: *channel,
                    channel: OpenChannel {
                        payer: *payer,
                        payee: *payee,
                        token: *token,
                        salt: *salt,
                        signer: *signer,
                        deposit: Amount(*deposit),
                        expires_at_ms: expires_at_s.saturating_mul(1000),
                        policy: policy.clone(),
                    },
                    expires_at_s: *expires_at_s,
                    fee_recipient: *fee_recipient,
                },
                accept_until_ms: expires_at_s
                    .saturating_mul(1000)
                    .saturating_sub(EXPIRY_MARGIN_MS),
                position,
            }
        }
        EscrowEvent::ToppedUp {
            channel, amount, ..
        } => Operation::ChainStep {
            channel: *channel,
            step: ChainStep::ToppedUp {
                amount: Amount(*amount),
            },
            position,
        },
        EscrowEvent::Settled {
            channel,
            cumulative,
        } => Operation::ChainStep {
            channel: *channel,
            step: ChainStep::Settled {
                cumulative: Amount(*cumulative),
            },
            position,
        },
        EscrowEvent::CloseRequested {
            channel,
            closes_at_s,
        } => Operation::ChainStep {
            channel: *channel,
            step: ChainStep::CloseRequested {
                closes_at_s: *closes_at_s,
                accept_until_ms: link.accept_until_close_ms(*closes_at_s),
            },
            position,
        },
        EscrowEvent::Closed {
            channel, settled, ..
        } => Operation::ChainStep {
            channel: *channel,
            step: ChainStep::Closed {
                settled: Amount(*settled),
            },
            position,
        },
        EscrowEvent::Withdrawn {
            token,
            account,
            amount,
        } => {
            if *token != link.settings.token {
                return Ok(());
            }
            // Credits withdrawn on chain leave the ledger: the fee
            // recipient's from the platform's account, anyone else's from
            // their revenue.
            let from = if *account == link.fee_recipient {
                AccountRef::Platform { asset: *token }
            } else {
                AccountRef::Revenue {
                    owner: *account,
                    asset: *token,
                }
            };
            Operation::Transfers(vec![payments::withdrawal(
                format!(
                    "chain:{}:{tx}:{}",
                    link.escrow.chain_id(),
                    observed.log_index
                ),
                from,
                *token,
                Amount(*amount),
            )])
        }
        EscrowEvent::Implied => return Ok(()),
    };
    match payments.submit(operation).await {
        Ok(_) => Ok(()),
        // A channel this server refused (another token, a foreign policy).
        Err(EngineError::UnknownChannel) => Ok(()),
        Err(err @ (EngineError::Channel(_) | EngineError::Refused(Refusal::Insufficient(_)))) => {
            warn!(%tx, log_index = observed.log_index, %err, "an escrow log the ledger cannot apply");
            crate::metrics::metrics().chain_refused.inc();
            Ok(())
        }
        Err(err) => Err(err).context("applying an escrow log"),
    }
}
