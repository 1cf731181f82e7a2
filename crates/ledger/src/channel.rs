//! The channel state machine of the spec: open, top up, accept vouchers,
//! close, settle. Every operation takes `now` and returns the transfers to
//! persist; on error the channel is unchanged.

use alloy_primitives::{Address, B256};
use serde::{Deserialize, Serialize};

use crate::Amount;
use crate::book::{AccountRef, Transfer, TransferKind};
use crate::crypto::{PaymentDomain, Signature65, SignatureError};
use crate::split::RevenuePolicy;

/// Lifecycle of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ChannelState {
    /// Accepting vouchers.
    Open,
    /// Closing: vouchers still accepted until `settle_at_ms`.
    Closing {
        /// When the settle window ends.
        settle_at_ms: u64,
    },
    /// Settled: escrow returned, leftovers released.
    Closed,
}

impl ChannelState {
    /// `open`, `closing` or `closed`.
    pub fn name(&self) -> &'static str {
        match self {
            ChannelState::Open => "open",
            ChannelState::Closing { .. } => "closing",
            ChannelState::Closed => "closed",
        }
    }
}

/// A unidirectional escrowed channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// `keccak256(abi.encode(payer, payee, token, salt, signer, escrow, chainId))`.
    pub id: B256,
    /// Who pays.
    pub payer: Address,
    /// Who is paid.
    pub payee: Address,
    /// Asset (token address; zero for the embedded default asset).
    pub token: Address,
    /// Payer-chosen salt.
    pub salt: B256,
    /// The session key that signs vouchers.
    pub signer: Address,
    /// Chain and escrow the vouchers are bound to.
    pub chain_id: u64,
    /// Escrow address.
    pub escrow: Address,
    /// Total escrowed.
    pub deposit: Amount,
    /// Highest cumulative amount accepted.
    pub redeemed: Amount,
    /// Canonical bytes of the voucher signature that set `redeemed`.
    pub last_signature: Option<Vec<u8>>,
    /// Lifecycle.
    pub state: ChannelState,
    /// After this, no voucher is accepted and the channel settles.
    pub expires_at_ms: u64,
    /// The payee's policy when the channel opened.
    pub policy: RevenuePolicy,
    /// Top-ups so far (for their transfer ids).
    pub topups: u32,
    /// Names this committed state for storage's compare-and-set between
    /// nodes (a fresh value per commit; 0 before the first). The protocol
    /// ignores it.
    #[serde(default)]
    pub revision: u64,
}

/// What opening a channel needs.
#[derive(Debug, Clone)]
pub struct OpenChannel {
    /// Payer.
    pub payer: Address,
    /// Payee.
    pub payee: Address,
    /// Asset.
    pub token: Address,
    /// Salt.
    pub salt: B256,
    /// Session signer.
    pub signer: Address,
    /// Initial deposit (positive).
    pub deposit: Amount,
    /// Expiry.
    pub expires_at_ms: u64,
    /// The payee's current policy.
    pub policy: RevenuePolicy,
}

/// Why a channel operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// A bad signature.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The signature is valid but not the channel's signer's.
    #[error("voucher not signed by the channel's signer")]
    WrongSigner,
    /// Closed, or past its settle window.
    #[error("channel is not open")]
    NotOpen,
    /// Past `expires_at`.
    #[error("channel has expired")]
    Expired,
    /// Not above `redeemed` (and not the voucher that set it).
    #[error("voucher amount must exceed the channel's redeemed amount")]
    NotIncreasing,
    /// Above `deposit`.
    #[error("voucher amount exceeds the channel's deposit")]
    ExceedsDeposit,
    /// A zero deposit or top-up.
    #[error("amount must be positive")]
    ZeroAmount,
    /// Arithmetic overflow.
    #[error("amount overflows")]
    Overflow,
    /// Paying oneself.
    #[error("payer and payee must differ")]
    SelfPayment,
    /// Expiry not after now.
    #[error("expiry must be in the future")]
    BadExpiry,
    /// The payee's policy is invalid.
    #[error("invalid revenue policy: {0}")]
    Policy(#[from] crate::split::PolicyError),
}

impl ChannelError {
    /// Stable machine code for the wire (problem+json `type` suffix).
    pub fn code(&self) -> &'static str {
        match self {
            ChannelError::Signature(err) => err.code(),
            ChannelError::WrongSigner => "voucher-wrong-signer",
            ChannelError::NotOpen => "channel-not-open",
            ChannelError::Expired => "channel-expired",
            ChannelError::NotIncreasing => "voucher-not-increasing",
            ChannelError::ExceedsDeposit => "voucher-exceeds-deposit",
            ChannelError::ZeroAmount => "amount-zero",
            ChannelError::Overflow => "amount-overflow",
            ChannelError::SelfPayment => "channel-self-payment",
            ChannelError::BadExpiry => "channel-bad-expiry",
            ChannelError::Policy(_) => "revenue-policy-invalid",
        }
    }
}

/// A voucher whose signature has been checked against the channel's signer
/// (the expensive part, done outside any lock or transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedVoucher {
    /// The channel.
    pub channel: B256,
    /// Cumulative amount.
    pub amount: Amount,
    /// Canonical signature bytes.
    pub signature: Vec<u8>,
}

/// Result of accepting a voucher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherOutcome {
    /// `false` for a byte-identical resubmission (nothing moved).
    pub new: bool,
    /// Transfers to persist atomically with the channel's new state.
    pub transfers: Vec<Transfer>,
}

fn transfer(
    id: String,
    debit: AccountRef,
    credit: AccountRef,
    asset: Address,
    amount: Amount,
    kind: TransferKind,
    channel: B256,
) -> Transfer {
    Transfer {
        id,
        debit,
        credit,
        asset,
        amount,
        kind,
        channel: Some(channel),
    }
}

impl Channel {
    /// The channel's payment domain.
    pub fn domain(&self) -> PaymentDomain {
        PaymentDomain {
            chain_id: self.chain_id,
            escrow: self.escrow,
        }
    }

    /// Opens a channel: the deposit moves from the payer's available balance
    /// to escrow. The store must refuse the transfer if the payer's available
    /// balance would go negative (it holds the balances; this core does not).
    pub fn open(
        request: OpenChannel,
        domain: PaymentDomain,
        now_ms: u64,
    ) -> Result<(Channel, Vec<Transfer>), ChannelError> {
        if request.deposit.is_zero() {
            return Err(ChannelError::ZeroAmount);
        }
        if request.payer == request.payee {
            return Err(ChannelError::SelfPayment);
        }
        if request.expires_at_ms <= now_ms {
            return Err(ChannelError::BadExpiry);
        }
        request.policy.validate()?;
        let id = domain.channel_id(
            request.payer,
            request.payee,
            request.token,
            request.salt,
            request.signer,
        );
        let channel = Channel {
            id,
            payer: request.payer,
            payee: request.payee,
            token: request.token,
            salt: request.salt,
            signer: request.signer,
            chain_id: domain.chain_id,
            escrow: domain.escrow,
            deposit: request.deposit,
            redeemed: Amount::ZERO,
            last_signature: None,
            state: ChannelState::Open,
            expires_at_ms: request.expires_at_ms,
            policy: request.policy,
            topups: 0,
            revision: 0,
        };
        let open = transfer(
            format!("open:{id:#x}"),
            AccountRef::Available {
                owner: channel.payer,
                asset: channel.token,
            },
            AccountRef::Escrow { channel: id },
            channel.token,
            channel.deposit,
            TransferKind::ChannelOpen,
            id,
        );
        Ok((channel, vec![open]))
    }

    fn accepting(&self, now_ms: u64) -> Result<(), ChannelError> {
        match self.state {
            ChannelState::Closed => return Err(ChannelError::NotOpen),
            ChannelState::Closing { settle_at_ms } if now_ms >= settle_at_ms => {
                return Err(ChannelError::NotOpen);
            }
            _ => {}
        }
        if now_ms >= self.expires_at_ms {
            return Err(ChannelError::Expired);
        }
        Ok(())
    }

    /// Adds to the deposit (payer's available -> escrow).
    pub fn top_up(&mut self, amount: Amount, now_ms: u64) -> Result<Vec<Transfer>, ChannelError> {
        if amount.is_zero() {
            return Err(ChannelError::ZeroAmount);
        }
        self.accepting(now_ms)?;
        let deposit = self
            .deposit
            .checked_add(amount)
            .ok_or(ChannelError::Overflow)?;
        let topups = self.topups.checked_add(1).ok_or(ChannelError::Overflow)?;
        self.deposit = deposit;
        self.topups = topups;
        Ok(vec![transfer(
            format!("topup:{:#x}:{topups}", self.id),
            AccountRef::Available {
                owner: self.payer,
                asset: self.token,
            },
            AccountRef::Escrow { channel: self.id },
            self.token,
            amount,
            TransferKind::ChannelTopUp,
            self.id,
        )])
    }

    /// Checks a voucher's signature against the channel's signer.
    pub fn verify_voucher(
        &self,
        amount: Amount,
        signature: &[u8],
    ) -> Result<VerifiedVoucher, ChannelError> {
        let parsed = Signature65::from_bytes(signature)?;
        let digest = self.domain().voucher_digest(self.id, amount.0);
        if parsed.recover(digest)? != self.signer {
            return Err(ChannelError::WrongSigner);
        }
        Ok(VerifiedVoucher {
            channel: self.id,
            amount,
            signature: parsed.to_bytes().to_vec(),
        })
    }

    /// Applies a verified voucher: the spec's conditions 3 and 4, the
    /// idempotent resubmission rule, and the split of the difference.
    pub fn apply_voucher(
        &mut self,
        voucher: &VerifiedVoucher,
        now_ms: u64,
    ) -> Result<VoucherOutcome, ChannelError> {
        if voucher.channel != self.id {
            return Err(ChannelError::WrongSigner);
        }
        if voucher.amount == self.redeemed
            && self.last_signature.as_deref() == Some(voucher.signature.as_slice())
        {
            return Ok(VoucherOutcome {
                new: false,
                transfers: Vec::new(),
            });
        }
        self.accepting(now_ms)?;
        if voucher.amount <= self.redeemed {
            return Err(ChannelError::NotIncreasing);
        }
        if voucher.amount > self.deposit {
            return Err(ChannelError::ExceedsDeposit);
        }
        let before = self.policy.totals(self.redeemed);
        let after = self.policy.totals(voucher.amount);
        let step = format!("voucher:{:#x}:{}", self.id, voucher.amount);
        let escrow = AccountRef::Escrow { channel: self.id };
        let mut transfers = Vec::with_capacity(after.recipients.len() + 2);
        // Monotone formulas (spec): every difference is non-negative.
        let fee = Amount(after.fee.0 - before.fee.0);
        if !fee.is_zero() {
            transfers.push(transfer(
                format!("{step}:fee"),
                escrow,
                AccountRef::Platform { asset: self.token },
                self.token,
                fee,
                TransferKind::VoucherFee,
                self.id,
            ));
        }
        for (index, recipient) in self.policy.recipients.iter().enumerate() {
            let share = Amount(after.recipients[index].0 - before.recipients[index].0);
            if !share.is_zero() {
                transfers.push(transfer(
                    format!("{step}:r{index}"),
                    escrow,
                    AccountRef::Revenue {
                        owner: recipient.address,
                        asset: self.token,
                    },
                    self.token,
                    share,
                    TransferKind::VoucherShare,
                    self.id,
                ));
            }
        }
        if after.leftover > before.leftover {
            transfers.push(transfer(
                format!("{step}:clearing"),
                escrow,
                AccountRef::Clearing { channel: self.id },
                self.token,
                Amount(after.leftover.0 - before.leftover.0),
                TransferKind::VoucherLeftover,
                self.id,
            ));
        } else if after.leftover < before.leftover {
            // Leftover shrinks only when the floors catch up; those units are
            // already inside the recipients' differences, so they come back
            // from clearing rather than from escrow.
            let back = Amount(before.leftover.0 - after.leftover.0);
            transfers.push(transfer(
                format!("{step}:unclear"),
                AccountRef::Clearing { channel: self.id },
                escrow,
                self.token,
                back,
                TransferKind::VoucherLeftover,
                self.id,
            ));
        }
        self.redeemed = voucher.amount;
        self.last_signature = Some(voucher.signature.clone());
        Ok(VoucherOutcome {
            new: true,
            transfers,
        })
    }

    /// Starts the settle window (payer or payee). Closing twice keeps the
    /// first window.
    pub fn close(&mut self, now_ms: u64, settle_window_ms: u64) -> Result<(), ChannelError> {
        match self.state {
            ChannelState::Open => {
                self.state = ChannelState::Closing {
                    settle_at_ms: now_ms
                        .saturating_add(settle_window_ms)
                        .min(self.expires_at_ms.max(now_ms)),
                };
                Ok(())
            }
            ChannelState::Closing { .. } => Ok(()),
            ChannelState::Closed => Err(ChannelError::NotOpen),
        }
    }

    /// When the channel should settle, if it is not closed yet.
    pub fn settles_at_ms(&self) -> Option<u64> {
        match self.state {
            ChannelState::Open => Some(self.expires_at_ms),
            ChannelState::Closing { settle_at_ms } => Some(settle_at_ms.min(self.expires_at_ms)),
            ChannelState::Closed => None,
        }
    }

    /// Settles a channel whose settle window or expiry has passed: escrow
    /// minus redeemed back to the payer, leftover units one each to the
    /// recipients in order. `None` when it is not time yet (or already closed).
    pub fn settle(&mut self, now_ms: u64) -> Option<Vec<Transfer>> {
        if now_ms < self.settles_at_ms()? {
            return None;
        }
        let mut transfers = Vec::new();
        let refund = Amount(self.deposit.0 - self.redeemed.0);
        if !refund.is_zero() {
            transfers.push(transfer(
                format!("close:{:#x}:refund", self.id),
                AccountRef::Escrow { channel: self.id },
                AccountRef::Available {
                    owner: self.payer,
                    asset: self.token,
                },
                self.token,
                refund,
                TransferKind::CloseRefund,
                self.id,
            ));
        }
        let leftover = self.policy.totals(self.redeemed).leftover.0;
        for (index, recipient) in self
            .policy
            .recipients
            .iter()
            .enumerate()
            .take(leftover as usize)
        {
            transfers.push(transfer(
                format!("close:{:#x}:leftover:{index}", self.id),
                AccountRef::Clearing { channel: self.id },
                AccountRef::Revenue {
                    owner: recipient.address,
                    asset: self.token,
                },
                self.token,
                Amount(1),
                TransferKind::CloseLeftover,
                self.id,
            ));
        }
        self.state = ChannelState::Closed;
        Some(transfers)
    }
}
