//! Puts accepted vouchers on chain. A channel is settled (its latest
//! voucher, many channels per transaction) when its unsettled amount passes
//! `--settle-threshold`, as soon as its payer asked to close, and in the
//! last minutes before its expiry; a channel past its deadline is finalized
//! (which refunds the payer). One transaction is in flight at a time. Each
//! is stored signed before it is sent: after a restart the same bytes are
//! sent again, and what it settles counts as submitted, so nothing is lost
//! or settled twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamweave_chain::{Bytes, SignedTx, TxCall, chain_policy};
use streamweave_ledger::{Amount, B256, Channel};
use tracing::{info, warn};

use super::{ChainLink, escrow_key};
use crate::model::now_ms;
use crate::money::payments::Payments;
use crate::store::{ChainTxRecord, Store};

/// Settle every channel this close to its deadline, whatever its amount.
const SETTLE_BEFORE_DEADLINE_S: u64 = 300;
/// Most channels in one `settleMany`.
const MAX_BATCH: usize = 64;
/// A transaction not mined after this long is sent again.
const REBROADCAST_AFTER_MS: i64 = 15_000;
/// A channel whose settlement failed alone waits this long to be tried again.
const FAILED_BACKOFF_MS: i64 = 300_000;
/// Recent transactions read back to know what is submitted.
const RECENT_TXS: i64 = 500;
/// A transaction without a receipt whose nonce the chain has used counts
/// as replaced once this has passed: a node may count a block's nonces
/// before it serves the block's receipts.
const REPLACED_AFTER_MS: i64 = 5_000;

/// What one transaction settles: channel and cumulative amount.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Settled {
    channel: String,
    amount: String,
}

struct Settler {
    link: Arc<ChainLink>,
    db: Store,
    payments: Payments,
    /// Channels of a failed batch, tried one per transaction.
    alone: VecDeque<B256>,
    /// Channels whose own settlement failed, until when they wait.
    backoff: HashMap<B256, i64>,
    /// When each in-flight transaction was last sent.
    sent_at: HashMap<String, i64>,
    /// In-flight transactions whose nonce the chain has used while their
    /// receipt is missing, since when.
    nonce_used_since: HashMap<String, i64>,
}

pub(super) async fn run(link: Arc<ChainLink>, db: Store, payments: Payments) {
    let mut settler = Settler {
        link,
        db,
        payments,
        alone: VecDeque::new(),
        backoff: HashMap::new(),
        sent_at: HashMap::new(),
        nonce_used_since: HashMap::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(settler.link.settings.poll_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(err) = settler.step().await {
            warn!(err = format!("{err:#}"), "settling on chain");
            crate::metrics::metrics().chain_errors.inc();
        }
    }
}

fn parse_b256(text: &str) -> Option<B256> {
    text.parse().ok()
}

impl Settler {
    async fn step(&mut self) -> anyhow::Result<()> {
        let chain_id = self.link.escrow.chain_id();
        let escrow = escrow_key(&self.link);
        let recent = self
            .db
            .chain_txs(chain_id, &escrow, false, RECENT_TXS)
            .await?;
        if self.track_in_flight(&recent).await? {
            return Ok(());
        }
        // What mined or in-flight transactions already settle (their logs
        // may not be final yet).
        let mut submitted: HashMap<B256, Amount> = HashMap::new();
        let mut finalizing: HashSet<B256> = HashSet::new();
        for tx in recent
            .iter()
            .filter(|tx| tx.state == "sent" || tx.state == "mined")
        {
            let Ok(items) = serde_json::from_str::<Vec<Settled>>(&tx.body) else {
                continue;
            };
            for item in items {
                let (Some(id), Ok(amount)) = (parse_b256(&item.channel), item.amount.parse())
                else {
                    continue;
                };
                if tx.kind == "finalize" {
                    finalizing.insert(id);
                }
                let known = submitted.entry(id).or_insert(Amount::ZERO);
                *known = (*known).max(amount);
            }
        }
        let head = self.link.escrow.head().await?;
        let (_, chain_now_s) = self.link.escrow.block(head).await?.unwrap_or_default();
        let now = now_ms();
        self.backoff.retain(|_, until| *until > now);
        let channels = self.payments.open_on_chain();
        let due = |c: &Channel| -> Option<Amount> {
            let chain = c.chain.as_ref()?;
            let settled = chain
                .settled
                .max(submitted.get(&c.id).copied().unwrap_or_default());
            let unsettled = c.redeemed.checked_sub(settled)?;
            if unsettled.is_zero()
                || c.last_signature.is_none()
                || chain_now_s >= chain.deadline_s()
                || self.backoff.contains_key(&c.id)
            {
                return None;
            }
            let urgent = chain.closes_at_s.is_some()
                || chain.deadline_s() <= chain_now_s.saturating_add(SETTLE_BEFORE_DEADLINE_S);
            (urgent || unsettled >= self.link.settings.settle_threshold).then_some(c.redeemed)
        };
        let mut batch: Vec<&Channel> = Vec::new();
        while let Some(id) = self.alone.pop_front() {
            if let Some(channel) = channels.iter().find(|c| c.id == id && due(c).is_some()) {
                batch.push(channel);
                break;
            }
        }
        if batch.is_empty() {
            batch = channels
                .iter()
                .filter(|c| due(c).is_some())
                .take(MAX_BATCH)
                .collect();
        }
        if !batch.is_empty() {
            return self.settle(batch).await;
        }
        // Past the deadline: finalize (the payer's refund), one at a time.
        for channel in &channels {
            let Some(chain) = channel.chain.as_ref() else {
                continue;
            };
            if chain_now_s < chain.deadline_s()
                || finalizing.contains(&channel.id)
                || self.backoff.contains_key(&channel.id)
            {
                continue;
            }
            // Closed on chain, its log not final yet.
            if self.link.escrow.channel(channel.id).await?.state == 3 {
                continue;
            }
            return self.finalize(channel).await;
        }
        Ok(())
    }

    /// Follows in-flight transactions; answers whether one still is.
    async fn track_in_flight(&mut self, recent: &[ChainTxRecord]) -> anyhow::Result<bool> {
        let mut waiting = false;
        let now = now_ms();
        for tx in recent.iter().rev().filter(|tx| tx.state == "sent") {
            let hash: B256 = tx.hash.parse()?;
            let mut outcome = self.link.escrow.outcome(hash).await?;
            let mut nonce_used = false;
            if outcome.is_none() && self.link.escrow.mined_nonce().await? > tx.nonce {
                // Mined between the two questions, or by another transaction.
                outcome = self.link.escrow.outcome(hash).await?;
                nonce_used = outcome.is_none();
            }
            let replaced = if nonce_used {
                let since = *self.nonce_used_since.entry(tx.hash.clone()).or_insert(now);
                now - since >= REPLACED_AFTER_MS
            } else {
                self.nonce_used_since.remove(&tx.hash);
                false
            };
            match outcome {
                Some(outcome) => {
                    let state = if outcome.success { "mined" } else { "failed" };
                    self.db.end_chain_tx(&tx.hash, state, now).await?;
                    self.sent_at.remove(&tx.hash);
                    crate::metrics::metrics()
                        .chain_transactions
                        .get_or_create(&crate::metrics::TxLabels {
                            kind: tx.kind.clone(),
                            state,
                        })
                        .inc();
                    if outcome.success {
                        info!(hash = %tx.hash, kind = %tx.kind, block = outcome.block_number, "mined");
                    } else {
                        warn!(hash = %tx.hash, kind = %tx.kind, "reverted");
                        self.failed(&tx.body);
                    }
                }
                None if replaced => {
                    // Its nonce was used by another transaction of this key.
                    warn!(hash = %tx.hash, "replaced before it was mined");
                    self.db.end_chain_tx(&tx.hash, "dropped", now).await?;
                    self.sent_at.remove(&tx.hash);
                    self.nonce_used_since.remove(&tx.hash);
                }
                // Give the node time to serve the receipt.
                None if nonce_used => waiting = true,
                None => {
                    waiting = true;
                    // First sight since start, or not mined for a while: send again.
                    let last = self.sent_at.get(&tx.hash).copied();
                    if last.is_none_or(|at| now - at >= REBROADCAST_AFTER_MS) {
                        let signed = SignedTx::from_stored(hash, tx.nonce, &tx.raw)?;
                        self.link.escrow.broadcast(&signed).await?;
                        self.sent_at.insert(tx.hash.clone(), now);
                    }
                }
            }
        }
        Ok(waiting)
    }

    /// A reverted transaction: a batch's channels are tried alone, a lone
    /// channel waits.
    fn failed(&mut self, body: &str) {
        let Ok(items) = serde_json::from_str::<Vec<Settled>>(body) else {
            return;
        };
        let ids: Vec<B256> = items
            .iter()
            .filter_map(|i| parse_b256(&i.channel))
            .collect();
        if ids.len() > 1 {
            self.alone.extend(ids);
        } else {
            for id in ids {
                self.backoff.insert(id, now_ms() + FAILED_BACKOFF_MS);
            }
        }
    }

    async fn settle(&mut self, batch: Vec<&Channel>) -> anyhow::Result<()> {
        let mut items = Vec::with_capacity(batch.len());
        let mut body = Vec::with_capacity(batch.len());
        for channel in &batch {
            let (Some(chain), Some(signature)) = (&channel.chain, &channel.last_signature) else {
                continue;
            };
            items.push((
                channel.id,
                channel.redeemed.0,
                Bytes::from(signature.clone()),
                chain_policy(&channel.policy, chain.fee_recipient),
            ));
            body.push(Settled {
                channel: format!("{:#x}", channel.id),
                amount: channel.redeemed.to_string(),
            });
        }
        let call = TxCall::settle_many(self.link.escrow.address(), items);
        let ids: Vec<B256> = batch.iter().map(|c| c.id).collect();
        self.send("settle", call, &body, &ids).await
    }

    async fn finalize(&mut self, channel: &Channel) -> anyhow::Result<()> {
        let Some(chain) = &channel.chain else {
            return Ok(());
        };
        let call = TxCall::finalize(
            self.link.escrow.address(),
            channel.id,
            chain_policy(&channel.policy, chain.fee_recipient),
        );
        let body = [Settled {
            channel: format!("{:#x}", channel.id),
            amount: channel.redeemed.to_string(),
        }];
        self.send("finalize", call, &body, &[channel.id]).await
    }

    /// Signs, stores, then sends. A call the node refuses to estimate
    /// (it would revert) counts as failed.
    async fn send(
        &mut self,
        kind: &str,
        call: TxCall,
        body: &[Settled],
        ids: &[B256],
    ) -> anyhow::Result<()> {
        let link = self.link.clone();
        let _sending = link.sending.lock().await;
        let signed = match self.link.escrow.sign(call, None).await {
            Ok(signed) => signed,
            Err(err) => {
                warn!(%err, kind, channels = ids.len(), "a transaction that would fail");
                self.failed(&serde_json::to_string(body)?);
                return Ok(());
            }
        };
        let now = now_ms();
        let record = ChainTxRecord {
            hash: format!("{:#x}", signed.hash),
            chain_id: self.link.escrow.chain_id(),
            escrow: escrow_key(&self.link),
            sender: format!("{:#x}", self.link.escrow.sender().unwrap_or_default()),
            nonce: signed.nonce,
            raw: signed.raw_hex(),
            kind: kind.into(),
            body: serde_json::to_string(body)?,
            state: "sent".into(),
            created_at_ms: now,
        };
        self.db.save_chain_tx(&record).await?;
        info!(hash = %record.hash, kind, channels = ids.len(), "sending");
        self.sent_at.insert(record.hash.clone(), now);
        self.link.escrow.broadcast(&signed).await?;
        Ok(())
    }
}
