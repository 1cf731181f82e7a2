//! The escrow on chain: the ledger follows the escrow contract's final logs
//! (channels opened, topped up, closing, closed; credits withdrawn) and the
//! settler puts the vouchers the ledger accepted on chain in batches.
//!
//! Vouchers are accepted off chain exactly as without a chain (the fast
//! path); the chain is where deposits come from and where earnings are
//! paid. See docs/ARCHITECTURE.md, "On-chain escrow".

pub mod audit;
mod settle;
mod watch;

use std::sync::{Arc, RwLock};

use anyhow::Context;
use serde::Serialize;
use streamweave_chain::{Escrow, ObservedEvent};
use streamweave_ledger::{Address, PaymentDomain};

use crate::config::ChainSettings;
use crate::money::payments::Payments;
use crate::store::Store;

/// Test ether a dev faucet gives for gas (100 ETH), in wei.
const DEV_GAS_WEI: &str = "0x56bc75e2d63100000";

/// Margin before the escrow's expiry after which the ledger accepts no
/// voucher, so the last one accepted is settled in time.
const EXPIRY_MARGIN_MS: u64 = 60_000;
/// The same before the end of a settle window, at most.
const CLOSE_MARGIN_MAX_MS: u64 = 30_000;

/// The escrow, this node's view of the chain, and its settings.
pub struct ChainLink {
    pub escrow: Escrow,
    pub settings: ChainSettings,
    /// Where the platform's fee goes on chain; channels must name it.
    pub fee_recipient: Address,
    /// The escrow's settle window (its constructor's).
    pub settle_window_s: u64,
    pub token_symbol: String,
    pub token_decimals: u8,
    status: RwLock<ChainStatus>,
    /// Held while a transaction from the settler key is signed and sent,
    /// so no two take the same nonce.
    sending: tokio::sync::Mutex<()>,
}

/// What the watcher saw last.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChainStatus {
    /// The newest block.
    pub head: u64,
    /// The newest block whose logs the ledger applies.
    pub final_block: u64,
    /// Logs not final yet: shown, never applied (a reorg drops them).
    pub provisional: Vec<ProvisionalLog>,
    /// The last error reading or applying the chain, if the last try failed.
    pub error: Option<String>,
}

/// A log waiting for its confirmations.
#[derive(Debug, Clone, Serialize)]
pub struct ProvisionalLog {
    pub block_number: u64,
    pub tx_hash: String,
    pub log_index: u64,
    /// `opened`, `topped_up`, `settled`, `close_requested`, `closed`, `withdrawn`.
    pub kind: &'static str,
    pub channel: Option<String>,
}

impl ProvisionalLog {
    fn of(event: &ObservedEvent) -> Option<ProvisionalLog> {
        use streamweave_chain::EscrowEvent as E;
        let kind = match event.event {
            E::Opened { .. } => "opened",
            E::ToppedUp { .. } => "topped_up",
            E::Settled { .. } => "settled",
            E::CloseRequested { .. } => "close_requested",
            E::Closed { .. } => "closed",
            E::Withdrawn { .. } => "withdrawn",
            E::Implied => return None,
        };
        Some(ProvisionalLog {
            block_number: event.block_number,
            tx_hash: format!("{:#x}", event.tx_hash),
            log_index: event.log_index,
            kind,
            channel: event.event.channel().map(|c| format!("{c:#x}")),
        })
    }
}

impl ChainLink {
    /// Connects to the node and reads the escrow's settle window and the
    /// token's symbol and decimals.
    pub async fn connect(settings: &ChainSettings) -> anyhow::Result<ChainLink> {
        let escrow = Escrow::connect(
            &settings.rpc_url,
            settings.escrow,
            settings.settler_key.as_deref(),
        )
        .await
        .with_context(|| format!("connecting to the chain at {}", settings.rpc_url))?;
        let settle_window_s = escrow
            .settle_window_s()
            .await
            .with_context(|| format!("reading the escrow at {:#x}", settings.escrow))?;
        let (token_symbol, token_decimals) = escrow
            .token_info(settings.token)
            .await
            .with_context(|| format!("reading the token at {:#x}", settings.token))?;
        let fee_recipient = settings
            .fee_recipient
            .or(escrow.sender())
            .context("no fee recipient")?;
        Ok(ChainLink {
            escrow,
            settings: settings.clone(),
            fee_recipient,
            settle_window_s,
            token_symbol,
            token_decimals,
            status: RwLock::new(ChainStatus::default()),
            sending: tokio::sync::Mutex::new(()),
        })
    }

    /// The vouchers' domain: the chain's id and the escrow's address.
    pub fn domain(&self) -> PaymentDomain {
        PaymentDomain {
            chain_id: self.escrow.chain_id(),
            escrow: self.escrow.address(),
        }
    }

    /// What the watcher saw last.
    pub fn status(&self) -> ChainStatus {
        self.status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_status(&self, update: impl FnOnce(&mut ChainStatus)) {
        update(&mut self.status.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// Until when the ledger accepts vouchers of a channel whose settle
    /// window ends at `closes_at_s`.
    fn accept_until_close_ms(&self, closes_at_s: u64) -> u64 {
        let margin = (self.settle_window_s.saturating_mul(1000) / 4).min(CLOSE_MARGIN_MAX_MS);
        closes_at_s.saturating_mul(1000).saturating_sub(margin)
    }

    /// Dev mode: gives `to` test ether for gas (on anvil) and mints it
    /// `amount` of the test token (whose `mint` is open to anyone).
    pub async fn dev_faucet(
        &self,
        to: Address,
        amount: streamweave_ledger::Amount,
    ) -> Result<(), streamweave_chain::ChainError> {
        self.escrow
            .raw_request(
                "anvil_setBalance",
                serde_json::json!([format!("{to:#x}"), DEV_GAS_WEI]),
            )
            .await?;
        let _sending = self.sending.lock().await;
        self.escrow
            .transact(
                streamweave_chain::TxCall::mint(self.settings.token, to, amount.0),
                std::time::Duration::from_secs(60),
            )
            .await?;
        Ok(())
    }

    /// Starts following the chain (and settling, with a settler key).
    pub fn start(self: &Arc<Self>, db: Store, payments: Payments, platform_fee_bps: u16) {
        tokio::spawn(watch::run(
            self.clone(),
            db.clone(),
            payments.clone(),
            platform_fee_bps,
        ));
        if self.escrow.sender().is_some() {
            tokio::spawn(settle::run(self.clone(), db, payments));
        }
    }
}

fn escrow_key(link: &ChainLink) -> String {
    format!("{:#x}", link.escrow.address())
}
