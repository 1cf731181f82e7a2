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
    /// The escrow contract's side, for a channel opened on chain (its
    /// deposit, top-ups and close come from the escrow's logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<OnChain>,
}

/// What the ledger knows of an on-chain channel's escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnChain {
    /// The total settled on chain (confirmed `Settled` logs).
    pub settled: Amount,
    /// The escrow's deadline: its expiry, in seconds of chain time.
    pub expires_at_s: u64,
    /// The end of the settle window once the payer asked to close.
    pub closes_at_s: Option<u64>,
    /// Where the platform's fee goes on chain.
    pub fee_recipient: Address,
    /// The position (block, log index) of the last log applied: a log at
    /// or before it was applied already and changes nothing.
    pub applied: (u64, u64),
}

impl OnChain {
    /// When the escrow stops settling, in seconds of chain time.
    pub fn deadline_s(&self) -> u64 {
        self.closes_at_s
            .map_or(self.expires_at_s, |c| c.min(self.expires_at_s))
    }
}

/// A channel the escrow opened (its `ChannelOpened` log).
#[derive(Debug, Clone)]
pub struct ChainOpen {
    /// The id the escrow computed.
    pub id: B256,
    /// The rest as in [`OpenChannel`]; `deposit` as the escrow received it.
    pub channel: OpenChannel,
    /// The escrow's expiry, in seconds.
    pub expires_at_s: u64,
    /// Where the fee goes on chain.
    pub fee_recipient: Address,
}

/// A later log of an on-chain channel, in the ledger's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainStep {
    /// `amount` more escrowed.
    ToppedUp { amount: Amount },
    /// The escrow's settled total is now `cumulative`.
    Settled { cumulative: Amount },
    /// The payer asked to close; vouchers are accepted until
    /// `accept_until_ms` (a margin before `closes_at_s`, so the last one
    /// settles in time).
    CloseRequested {
        closes_at_s: u64,
        accept_until_ms: u64,
    },
    /// Closed on chain: the payer was refunded there.
    Closed { settled: Amount },
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
    /// Opened on chain: deposits and closing happen on the escrow contract.
    #[error("this channel is on chain: top it up or close it on the escrow contract")]
    OnChain,
    /// A channel id the escrow could not have computed for these parties.
    #[error("channel id does not match its parties, escrow and chain")]
    ForeignId,
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
            ChannelError::OnChain => "channel-on-chain",
            ChannelError::ForeignId => "channel-foreign-id",
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
    pub signature: [u8; 65],
}

/// What checks a channel's voucher signatures: its id, its session signer
/// (which never changes) and its domain, without the rest of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoucherSigner {
    /// The channel.
    pub channel: B256,
    /// The session key that signs its vouchers.
    pub signer: Address,
    /// Chain and escrow its vouchers are bound to.
    pub domain: PaymentDomain,
}

impl VoucherSigner {
    /// Checks a voucher's signature (the spec's conditions 1 and 2).
    pub fn verify(
        &self,
        amount: Amount,
        signature: &[u8],
    ) -> Result<VerifiedVoucher, ChannelError> {
        self.verify_parsed(amount, Signature65::from_bytes(signature)?)
    }

    /// [`Self::verify`] of a signature already parsed (its form checked:
    /// what remains is the recovery).
    pub fn verify_parsed(
        &self,
        amount: Amount,
        parsed: Signature65,
    ) -> Result<VerifiedVoucher, ChannelError> {
        let digest = self.domain.voucher_digest(self.channel, amount.0);
        if parsed.recover(digest)? != self.signer {
            return Err(ChannelError::WrongSigner);
        }
        Ok(VerifiedVoucher {
            channel: self.channel,
            amount,
            signature: parsed.to_bytes(),
        })
    }
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

/// A new channel's id, once its terms pass the checks: a positive deposit,
/// two parties, an expiry after `now_ms` (when given), a valid policy.
fn checked_id(
    request: &OpenChannel,
    domain: PaymentDomain,
    now_ms: Option<u64>,
) -> Result<B256, ChannelError> {
    if request.deposit.is_zero() {
        return Err(ChannelError::ZeroAmount);
    }
    if request.payer == request.payee {
        return Err(ChannelError::SelfPayment);
    }
    if now_ms.is_some_and(|now| request.expires_at_ms <= now) {
        return Err(ChannelError::BadExpiry);
    }
    request.policy.validate()?;
    Ok(domain.channel_id(
        request.payer,
        request.payee,
        request.token,
        request.salt,
        request.signer,
    ))
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
        let id = checked_id(&request, domain, Some(now_ms))?;
        let expires_at_ms = request.expires_at_ms;
        let channel = Channel::fresh(id, request, domain, expires_at_ms, None);
        let payer = AccountRef::Available {
            owner: channel.payer,
            asset: channel.token,
        };
        let open = channel.funding(payer);
        Ok((channel, vec![open]))
    }

    /// A channel just opened, before any voucher.
    fn fresh(
        id: B256,
        request: OpenChannel,
        domain: PaymentDomain,
        expires_at_ms: u64,
        chain: Option<OnChain>,
    ) -> Channel {
        Channel {
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
            expires_at_ms,
            policy: request.policy,
            topups: 0,
            revision: 0,
            chain,
        }
    }

    /// The opening deposit's move from `from` into escrow.
    fn funding(&self, from: AccountRef) -> Transfer {
        transfer(
            format!("open:{:#x}", self.id),
            from,
            AccountRef::Escrow { channel: self.id },
            self.token,
            self.deposit,
            TransferKind::ChannelOpen,
            self.id,
        )
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
        if self.chain.is_some() {
            return Err(ChannelError::OnChain);
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
        self.voucher_signer().verify(amount, signature)
    }

    /// What checks this channel's vouchers (a copy of three fields).
    pub fn voucher_signer(&self) -> VoucherSigner {
        VoucherSigner {
            channel: self.id,
            signer: self.signer,
            domain: self.domain(),
        }
    }

    /// Applies a verified voucher: the spec's conditions 3 and 4, the
    /// idempotent resubmission rule, and the split of the difference.
    pub fn apply_voucher(
        &mut self,
        voucher: &VerifiedVoucher,
        now_ms: u64,
    ) -> Result<VoucherOutcome, ChannelError> {
        if !self.admits(voucher, now_ms)? {
            return Ok(VoucherOutcome {
                new: false,
                transfers: Vec::new(),
            });
        }
        let transfers = self.redeem_accepted(voucher.amount, voucher.signature.to_vec())?;
        Ok(VoucherOutcome {
            new: true,
            transfers,
        })
    }

    /// [`Channel::apply_voucher`] without its transfers, for a step kept in
    /// a journal: the transfers of many such steps are made later, at once,
    /// by [`Channel::redeem_accepted`] on the state before them. Answers
    /// whether the voucher is new (false for a byte-identical resubmission).
    pub fn accept_voucher(
        &mut self,
        voucher: &VerifiedVoucher,
        now_ms: u64,
    ) -> Result<bool, ChannelError> {
        if !self.admits(voucher, now_ms)? {
            return Ok(false);
        }
        self.check_step(voucher.amount)?;
        self.redeemed = voucher.amount;
        self.last_signature = Some(voucher.signature.to_vec());
        Ok(true)
    }

    /// The voucher's channel and time (condition 3); `false` for the
    /// byte-identical resubmission of the voucher that set `redeemed`.
    fn admits(&self, voucher: &VerifiedVoucher, now_ms: u64) -> Result<bool, ChannelError> {
        if voucher.channel != self.id {
            return Err(ChannelError::WrongSigner);
        }
        if voucher.amount == self.redeemed
            && self.last_signature.as_deref() == Some(&voucher.signature[..])
        {
            return Ok(false);
        }
        self.accepting(now_ms)?;
        Ok(true)
    }

    /// Condition 4: above `redeemed`, within the deposit.
    fn check_step(&self, amount: Amount) -> Result<(), ChannelError> {
        if amount <= self.redeemed {
            return Err(ChannelError::NotIncreasing);
        }
        if amount > self.deposit {
            return Err(ChannelError::ExceedsDeposit);
        }
        Ok(())
    }

    /// Raises `redeemed` to `amount`, set by a voucher with `signature`
    /// whose signature and time were checked when it was accepted (the
    /// spec's condition 4 is checked again): the transfers of the step from
    /// the current `redeemed`. The splits are path-independent, so one step
    /// over several accepted vouchers moves exactly what they moved one by
    /// one, with the ids a single voucher for `amount` would have.
    pub fn redeem_accepted(
        &mut self,
        amount: Amount,
        signature: Vec<u8>,
    ) -> Result<Vec<Transfer>, ChannelError> {
        self.check_step(amount)?;
        let before = self.policy.totals(self.redeemed);
        let after = self.policy.totals(amount);
        let step = format!("voucher:{:#x}:{}", self.id, amount);
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
        self.redeemed = amount;
        self.last_signature = Some(signature);
        Ok(transfers)
    }

    /// Whether a voucher step of this channel can move `account` (the
    /// accounts [`Channel::redeem_accepted`]'s transfers debit or credit):
    /// its escrow and clearing, the platform's fee account and its
    /// recipients' revenue, in its token.
    pub fn step_moves(&self, account: &AccountRef) -> bool {
        match *account {
            AccountRef::Escrow { channel } | AccountRef::Clearing { channel } => channel == self.id,
            AccountRef::Platform { asset } => asset == self.token,
            AccountRef::Revenue { owner, asset } => {
                asset == self.token && self.policy.recipients.iter().any(|r| r.address == owner)
            }
            AccountRef::Available { .. }
            | AccountRef::Event { .. }
            | AccountRef::Pool { .. }
            | AccountRef::World { .. } => false,
        }
    }

    /// Starts the settle window (payer or payee). Closing twice keeps the
    /// first window.
    pub fn close(&mut self, now_ms: u64, settle_window_ms: u64) -> Result<(), ChannelError> {
        if self.chain.is_some() {
            return Err(ChannelError::OnChain);
        }
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

    /// When the channel should settle, if it is not closed yet (never for
    /// an on-chain channel: the escrow closes it).
    pub fn settles_at_ms(&self) -> Option<u64> {
        if self.chain.is_some() {
            return None;
        }
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
        let payer = AccountRef::Available {
            owner: self.payer,
            asset: self.token,
        };
        Some(self.finish(payer))
    }

    /// Closes: escrow minus redeemed to `refund_to`, the held units to the
    /// recipients.
    fn finish(&mut self, refund_to: AccountRef) -> Vec<Transfer> {
        let mut transfers = Vec::new();
        let refund = Amount(self.deposit.0 - self.redeemed.0);
        if !refund.is_zero() {
            transfers.push(transfer(
                format!("close:{:#x}:refund", self.id),
                AccountRef::Escrow { channel: self.id },
                refund_to,
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
        transfers
    }

    /// A channel the escrow opened: its deposit arrives from outside (the
    /// chain) into escrow. The ledger stops accepting vouchers at
    /// `accept_until_ms`, a margin before the escrow's expiry.
    pub fn open_on_chain(
        open: ChainOpen,
        domain: PaymentDomain,
        accept_until_ms: u64,
        position: (u64, u64),
    ) -> Result<(Channel, Vec<Transfer>), ChannelError> {
        // The escrow's own expiry rules apply (a log may be old).
        let id = checked_id(&open.channel, domain, None)?;
        if id != open.id || open.channel.token == Address::ZERO {
            return Err(ChannelError::ForeignId);
        }
        let chain = OnChain {
            settled: Amount::ZERO,
            expires_at_s: open.expires_at_s,
            closes_at_s: None,
            fee_recipient: open.fee_recipient,
            applied: position,
        };
        let channel = Channel::fresh(id, open.channel, domain, accept_until_ms, Some(chain));
        let deposit = channel.funding(AccountRef::World {
            asset: channel.token,
        });
        Ok((channel, vec![deposit]))
    }

    /// Applies a later escrow log at `position`. `None`: applied before
    /// (at or behind the last applied position), nothing changes.
    pub fn apply_chain(
        &mut self,
        position: (u64, u64),
        step: ChainStep,
    ) -> Result<Option<Vec<Transfer>>, ChannelError> {
        let Some(chain) = self.chain.as_mut() else {
            return Err(ChannelError::ForeignId);
        };
        if position <= chain.applied {
            return Ok(None);
        }
        chain.applied = position;
        let transfers = match step {
            ChainStep::ToppedUp { amount } => {
                let deposit = self
                    .deposit
                    .checked_add(amount)
                    .ok_or(ChannelError::Overflow)?;
                let topups = self.topups.checked_add(1).ok_or(ChannelError::Overflow)?;
                self.deposit = deposit;
                self.topups = topups;
                vec![transfer(
                    format!("topup:{:#x}:{topups}", self.id),
                    AccountRef::World { asset: self.token },
                    AccountRef::Escrow { channel: self.id },
                    self.token,
                    amount,
                    TransferKind::ChannelTopUp,
                    self.id,
                )]
            }
            ChainStep::Settled { cumulative } => {
                chain.settled = chain.settled.max(cumulative);
                Vec::new()
            }
            ChainStep::CloseRequested {
                closes_at_s,
                accept_until_ms,
            } => {
                chain.closes_at_s = Some(closes_at_s);
                if self.state == ChannelState::Open {
                    self.state = ChannelState::Closing {
                        settle_at_ms: accept_until_ms,
                    };
                }
                Vec::new()
            }
            ChainStep::Closed { settled } => {
                chain.settled = chain.settled.max(settled);
                if self.state == ChannelState::Closed {
                    Vec::new()
                } else {
                    // The payer's refund was paid (or credited) on chain.
                    let world = AccountRef::World { asset: self.token };
                    self.finish(world)
                }
            }
        };
        Ok(Some(transfers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::Recipient;

    fn domain() -> PaymentDomain {
        PaymentDomain {
            chain_id: 31337,
            escrow: Address::repeat_byte(0xee),
        }
    }

    fn opened(deposit: u128) -> ChainOpen {
        let channel = OpenChannel {
            payer: Address::repeat_byte(1),
            payee: Address::repeat_byte(2),
            token: Address::repeat_byte(0x70),
            salt: B256::repeat_byte(9),
            signer: Address::repeat_byte(3),
            deposit: Amount(deposit),
            expires_at_ms: 0,
            policy: RevenuePolicy {
                platform_fee_bps: 300,
                recipients: vec![
                    Recipient {
                        address: Address::repeat_byte(2),
                        share: 2,
                    },
                    Recipient {
                        address: Address::repeat_byte(4),
                        share: 1,
                    },
                ],
            },
        };
        ChainOpen {
            id: domain().channel_id(
                channel.payer,
                channel.payee,
                channel.token,
                channel.salt,
                channel.signer,
            ),
            channel,
            expires_at_s: 2_000,
            fee_recipient: Address::repeat_byte(0xfe),
        }
    }

    fn net(transfers: &[Transfer], account: AccountRef) -> i128 {
        transfers
            .iter()
            .map(|t| {
                let amount = i128::try_from(t.amount.0).unwrap();
                (if t.credit == account { amount } else { 0 })
                    - (if t.debit == account { amount } else { 0 })
            })
            .sum()
    }

    #[test]
    fn an_on_chain_channel_is_funded_from_outside_and_refunds_outside() {
        let (mut channel, open) =
            Channel::open_on_chain(opened(1_000), domain(), 1_900_000, (5, 0)).unwrap();
        let world = AccountRef::World {
            asset: channel.token,
        };
        let escrow = AccountRef::Escrow {
            channel: channel.id,
        };
        assert_eq!(net(&open, world), -1_000);
        assert_eq!(net(&open, escrow), 1_000);
        // Top-ups and closes happen on the escrow, not through the ledger.
        assert_eq!(channel.top_up(Amount(5), 0), Err(ChannelError::OnChain));
        assert_eq!(channel.close(0, 1_000), Err(ChannelError::OnChain));
        assert_eq!(channel.settles_at_ms(), None);

        let topped = channel
            .apply_chain(
                (6, 1),
                ChainStep::ToppedUp {
                    amount: Amount(500),
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(net(&topped, escrow), 500);
        assert_eq!(channel.deposit, Amount(1_500));
        // The same log again (a restart, another node): nothing changes.
        assert_eq!(
            channel.apply_chain(
                (6, 1),
                ChainStep::ToppedUp {
                    amount: Amount(500)
                }
            ),
            Ok(None)
        );
        assert_eq!(channel.deposit, Amount(1_500));

        channel.redeemed = Amount(1_001);
        channel
            .apply_chain(
                (7, 0),
                ChainStep::CloseRequested {
                    closes_at_s: 1_500,
                    accept_until_ms: 1_480_000,
                },
            )
            .unwrap();
        assert_eq!(
            channel.state,
            ChannelState::Closing {
                settle_at_ms: 1_480_000
            }
        );
        assert_eq!(channel.chain.as_ref().unwrap().deadline_s(), 1_500);
        let closed = channel
            .apply_chain(
                (9, 2),
                ChainStep::Closed {
                    settled: Amount(1_001),
                },
            )
            .unwrap()
            .unwrap();
        // 1001 redeemed: fee 31, rest 970 split 2:1 = 646 + 323, 1 held
        // and released to the first recipient; 499 refunded outside.
        assert_eq!(net(&closed, world), 499);
        assert_eq!(
            net(
                &closed,
                AccountRef::Revenue {
                    owner: Address::repeat_byte(2),
                    asset: channel.token
                }
            ),
            1
        );
        assert_eq!(channel.state, ChannelState::Closed);
        assert_eq!(channel.chain.as_ref().unwrap().settled, Amount(1_001));
    }

    #[test]
    fn an_id_the_escrow_could_not_have_computed_is_refused() {
        let mut open = opened(1_000);
        open.id = B256::repeat_byte(0x55);
        assert_eq!(
            Channel::open_on_chain(open, domain(), 1, (1, 0)).unwrap_err(),
            ChannelError::ForeignId
        );
        let mut other_escrow = domain();
        other_escrow.escrow = Address::repeat_byte(0xef);
        assert_eq!(
            Channel::open_on_chain(opened(1_000), other_escrow, 1, (1, 0)).unwrap_err(),
            ChannelError::ForeignId
        );
    }

    mod folding {
        use super::*;
        use proptest::prelude::*;

        fn voucher(channel: &Channel, amount: u128, tag: u8) -> VerifiedVoucher {
            VerifiedVoucher {
                channel: channel.id,
                amount: Amount(amount),
                signature: [tag; 65],
            }
        }

        fn accounts(channel: &Channel) -> Vec<AccountRef> {
            let mut accounts = vec![
                AccountRef::Escrow {
                    channel: channel.id,
                },
                AccountRef::Clearing {
                    channel: channel.id,
                },
                AccountRef::Platform {
                    asset: channel.token,
                },
            ];
            accounts.extend(
                channel
                    .policy
                    .recipients
                    .iter()
                    .map(|r| AccountRef::Revenue {
                        owner: r.address,
                        asset: channel.token,
                    }),
            );
            accounts
        }

        proptest! {
            /// Steps kept in a journal and folded at once move exactly what
            /// they move one by one, to every account, and leave the same state.
            #[test]
            fn a_fold_of_accepted_steps_moves_what_they_move_one_by_one(
                deposit in 1u128..10_000_000,
                steps in proptest::collection::vec(1u128..50_000, 1..40),
                fold_every in 1usize..8,
            ) {
                let (open, _) = Channel::open_on_chain(opened(deposit), domain(), 1_900_000, (5, 0)).unwrap();
                let mut one_by_one = open.clone();
                let mut each = Vec::new();
                let mut journaled = open.clone();
                let mut stored = open.clone();
                let mut folded = Vec::new();
                let mut amount = 0u128;
                for (index, step) in steps.iter().enumerate() {
                    amount = (amount + step).min(deposit);
                    if amount <= one_by_one.redeemed.0 {
                        break;
                    }
                    let tag = index as u8;
                    each.extend(one_by_one.apply_voucher(&voucher(&open, amount, tag), 0).unwrap().transfers);
                    prop_assert!(journaled.accept_voucher(&voucher(&open, amount, tag), 0).unwrap());
                    if index % fold_every == fold_every - 1 {
                        folded.extend(stored.redeem_accepted(journaled.redeemed, journaled.last_signature.clone().unwrap()).unwrap());
                        prop_assert_eq!(&stored, &journaled);
                    }
                }
                if journaled.redeemed > stored.redeemed {
                    folded.extend(stored.redeem_accepted(journaled.redeemed, journaled.last_signature.clone().unwrap()).unwrap());
                }
                prop_assert_eq!(&stored, &one_by_one);
                for account in accounts(&open) {
                    prop_assert_eq!(net(&folded, account), net(&each, account));
                }
                // Balance reads skip the channels whose steps cannot move
                // an account: every account a step moved is one it can.
                for transfer in folded.iter().chain(&each) {
                    prop_assert!(open.step_moves(&transfer.debit), "{:?}", transfer.debit);
                    prop_assert!(open.step_moves(&transfer.credit), "{:?}", transfer.credit);
                }
            }
        }

        #[test]
        fn a_step_moves_no_account_outside_its_channel_and_recipients() {
            let (channel, _) =
                Channel::open_on_chain(opened(1_000), domain(), 1_900_000, (5, 0)).unwrap();
            for account in accounts(&channel) {
                assert!(channel.step_moves(&account), "{account:?}");
            }
            let other_token = Address::repeat_byte(0x71);
            for account in [
                AccountRef::Available {
                    owner: channel.payer,
                    asset: channel.token,
                },
                AccountRef::Revenue {
                    owner: Address::repeat_byte(5),
                    asset: channel.token,
                },
                AccountRef::Revenue {
                    owner: Address::repeat_byte(4),
                    asset: other_token,
                },
                AccountRef::Platform { asset: other_token },
                AccountRef::Escrow {
                    channel: B256::repeat_byte(0x11),
                },
                AccountRef::World {
                    asset: channel.token,
                },
            ] {
                assert!(!channel.step_moves(&account), "{account:?}");
            }
        }

        #[test]
        fn a_journaled_voucher_is_checked_like_any_other() {
            let (mut channel, _) =
                Channel::open_on_chain(opened(1_000), domain(), 1_900_000, (5, 0)).unwrap();
            let first = voucher(&channel, 400, 1);
            assert_eq!(channel.accept_voucher(&first, 0), Ok(true));
            // The same bytes again: nothing new; a lower or equal amount otherwise: refused.
            assert_eq!(channel.accept_voucher(&first, 0), Ok(false));
            assert_eq!(
                channel.accept_voucher(&voucher(&channel, 400, 2), 0),
                Err(ChannelError::NotIncreasing)
            );
            assert_eq!(
                channel.accept_voucher(&voucher(&channel, 1_001, 3), 0),
                Err(ChannelError::ExceedsDeposit)
            );
            assert_eq!(
                channel.accept_voucher(&voucher(&channel, 500, 4), 2_000_000),
                Err(ChannelError::Expired)
            );
            assert_eq!(channel.redeemed, Amount(400));
            // A fold refuses to go back.
            let mut stored = channel.clone();
            assert_eq!(
                stored.redeem_accepted(Amount(300), vec![5; 65]),
                Err(ChannelError::NotIncreasing)
            );
        }
    }
}
