//! The payments engine: the only writer of the ledger. Every state change
//! (opens, top-ups, vouchers, closes, settlements, deposits, withdrawals)
//! goes through one task that keeps the channels in memory, applies the pure
//! core's rules, and group-commits what it can into one durable transaction.
//! A caller is answered only after its commit.
//!
//! Where the node is its database's one writer (SQLite, or PostgreSQL
//! without a cluster), a voucher's step is kept in the voucher journal
//! (one small appended row: channel, amount, signature) instead of being
//! written to its channel's row, balances and transfers at once: every such
//! write rewrites whole pages of the voucher's own channel, and these were
//! most of a commit's cost. The journal is durable before the voucher is
//! answered. A fold then writes each channel's steps since its last fold as
//! one step (the splits are path-independent: the same amounts, with the
//! ids a single voucher for the last amount would have) and deletes the
//! journal's rows below the first step still waiting, in one transaction.
//! A channel is folded once its first waiting step waited
//! [`FOLD_AFTER_MS`] (a channel paid every few seconds is written once for
//! several steps), the oldest first and at most [`FOLD_SLICE`] channels a
//! commit, so no group of vouchers waits behind a large fold; every waiting
//! step is folded before any other operation (so nothing else ever meets a
//! channel row behind its vouchers), before a transfer history is read
//! ([`Payments::fold`]), when a pool round ends, and on start for what a
//! stopped node left. Balances are read without a fold
//! ([`Payments::balances`]: the stored balance plus what the waiting steps
//! would move).
//!
//! Where several nodes share the database, a node's journal would hide
//! steps from the others, which plan on the channel rows: a voucher's step
//! is deferred in its channel's row instead (`store::deferred`), which any
//! node folds; the same rules say when.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use streamweave_ledger::{
    AccountRef, Address, Amount, B256, Balance, ChainOpen, ChainStep, Channel, ChannelError,
    ChannelState, OpenChannel, PaymentDomain, Transfer, TransferKind, VerifiedVoucher,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::fast_map::{FastHashMap, FastHashSet};
use crate::memberships::RoundClock;
use crate::model::now_ms;
use crate::store::{
    ChannelWrite, DeferredFold, DeferredStep, JournalEntry, LedgerBatch, Refusal, Store,
};

/// Commands waiting for the engine; senders wait when it is full.
pub const ENGINE_QUEUE: usize = 4096;
/// Most operations in one group commit.
const MAX_GROUP: usize = 512;
/// Whether a group lets the tasks ready to run go first before it commits
/// (on SQLite). Each commit costs the same `fsync` and rewrites the same
/// hot pages whatever its size: under load, a group that takes in the
/// vouchers whose signatures were just recovered (a recovery thread hands
/// back a batch at once) costs less per voucher. On PostgreSQL groups take
/// only what is queued (docs/benchmarks.md).
fn lets_ready_tasks_run(dialect: crate::store::Dialect) -> bool {
    matches!(dialect, crate::store::Dialect::Sqlite)
}
/// How long a channel's steps wait in the voucher journal before they are
/// folded: a channel paid every few seconds is folded once for several
/// steps instead of once a step.
pub const FOLD_AFTER_MS: u64 = 30_000;
/// Most channels one fold writes (one commit) while vouchers keep coming:
/// folds are sliced so that no group of vouchers waits behind a large one.
const FOLD_SLICE: usize = 256;
/// Slices of waiting voucher steps a node folds a second at most, where
/// several nodes share the database.
const MAX_SLICES_A_SECOND: usize = 8;
/// Steps waiting in the voucher journal past which the oldest channels are
/// folded whatever their age.
pub const FOLD_AFTER_VOUCHERS: usize = 131_072;
/// Steps the voucher journal holds at most: past it (folds failing), a
/// voucher is written where it lands, as in a cluster, or refused.
const JOURNAL_BOUND: usize = 2 * FOLD_AFTER_VOUCHERS;

/// What the engine can be asked.
#[derive(Debug, Clone)]
pub enum Operation {
    Open(OpenChannel),
    TopUp {
        channel: B256,
        payer: Address,
        amount: Amount,
    },
    Voucher(VerifiedVoucher),
    Close {
        channel: B256,
        by: Address,
    },
    /// Moves money with caller-chosen ids (deposits, withdrawals, tips).
    Transfers(Vec<Transfer>),
    /// Settles every channel due at the given time.
    Settle {
        now_ms: u64,
    },
    /// Folds the steps kept in the voucher journal into their channels'
    /// rows, balances and transfers.
    Fold,
    /// Folds the channels whose steps waited long enough (as any group
    /// does first): sent every second while steps wait, so that they are
    /// folded when no voucher comes.
    FoldWaited,
    /// A channel the escrow contract opened (a final `ChannelOpened` log).
    ChainOpen {
        open: ChainOpen,
        accept_until_ms: u64,
        position: (u64, u64),
    },
    /// A later final log of an on-chain channel.
    ChainStep {
        channel: B256,
        step: ChainStep,
        position: (u64, u64),
    },
}

impl Operation {
    /// Operations a balance check can refuse commit alone, so a refusal
    /// never leaves a later operation of the same group built on it.
    fn may_be_refused(&self) -> bool {
        matches!(
            self,
            Operation::Open(_) | Operation::TopUp { .. } | Operation::Transfers(_)
        )
    }

    /// The existing channel it acts on, if any.
    fn channel_id(&self) -> Option<B256> {
        match self {
            Operation::TopUp { channel, .. }
            | Operation::Close { channel, .. }
            | Operation::ChainStep { channel, .. } => Some(*channel),
            Operation::ChainOpen { open, .. } => Some(open.id),
            Operation::Voucher(voucher) => Some(voucher.channel),
            _ => None,
        }
    }

    /// Whether it reads or writes what the voucher journal's steps will
    /// move (channel rows; escrow, clearing, platform and revenue
    /// balances), so the steps are folded before it.
    fn meets_journal(&self) -> bool {
        match self {
            Operation::Voucher(_) | Operation::FoldWaited => false,
            Operation::Transfers(transfers) => transfers.iter().any(|t| {
                [&t.debit, &t.credit].into_iter().any(|account| {
                    matches!(
                        account,
                        AccountRef::Escrow { .. }
                            | AccountRef::Clearing { .. }
                            | AccountRef::Platform { .. }
                            | AccountRef::Revenue { .. }
                    )
                })
            }),
            _ => true,
        }
    }

    /// Whether it writes channel states (and may meet another node's).
    fn writes_channels(&self) -> bool {
        !matches!(self, Operation::Transfers(_))
    }
}

/// How often an operation is planned again after another node changed its
/// channel first.
const MAX_ATTEMPTS: u8 = 4;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("no such channel")]
    UnknownChannel,
    #[error("not a party to this channel")]
    NotParty,
    #[error("channel already exists")]
    ChannelExists,
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("the ledger is unavailable")]
    Unavailable,
}

/// The result of a successful operation.
#[derive(Debug, Clone)]
pub struct Done {
    /// The channel after the operation, if one was involved.
    pub channel: Option<Channel>,
    /// Whether anything new was recorded (false for idempotent repeats).
    pub new: bool,
    /// For vouchers: the channel's redeemed amount just before this one, so
    /// the step it moved is exact even when vouchers race.
    pub redeemed_before: Option<Amount>,
}

type Reply = oneshot::Sender<Result<Done, EngineError>>;

/// An operation's writes and answer, before the commit.
type Planned = Result<(LedgerBatch, Done), EngineError>;

struct Request {
    operation: Operation,
    reply: Reply,
    /// Plans so far (a channel changed on another node under the earlier ones).
    attempts: u8,
}

/// A handle to the engine.
#[derive(Clone)]
pub struct Payments {
    requests: mpsc::Sender<Request>,
    /// Steps in the voucher journal not folded yet.
    journaled: Arc<AtomicUsize>,
    /// The stored states of the channels whose steps wait in the journal.
    waiting: Arc<WaitingView>,
    channels: std::sync::Arc<std::sync::RwLock<FastHashMap<B256, Channel>>>,
    db: Store,
    /// Other nodes write the same channels: voucher steps wait in their
    /// channels' rows (`store::deferred`), not in a journal of this node's.
    shared_database: bool,
    rounds: RoundClock,
    pub domain: PaymentDomain,
    pub settle_window_ms: u64,
}

impl Payments {
    /// Loads the channels and starts the engine and the settle timer.
    /// `shared_database`: other nodes write the same channels, so each
    /// group reads its channels' stored states before planning.
    pub async fn start(
        db: Store,
        domain: PaymentDomain,
        settle_window_ms: u64,
        shared_database: bool,
        rounds: RoundClock,
    ) -> anyhow::Result<Payments> {
        let next_seq = fold_left_journal(&db, rounds).await?;
        let channels: FastHashMap<B256, Channel> = db
            .channels()
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        let shared = std::sync::Arc::new(std::sync::RwLock::new(channels.clone()));
        let (tx, rx) = mpsc::channel(ENGINE_QUEUE);
        let journaled = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::new(WaitingView::default());
        // Only where this node is the database's one writer: other nodes
        // read channel rows, which would lag behind the journal.
        let journal = (!shared_database)
            .then(|| Journal::new(next_seq, journaled.clone(), waiting.clone(), rounds));
        let engine = run_engine(
            db.clone(),
            channels,
            shared.clone(),
            Incoming { requests: rx },
            domain,
            settle_window_ms,
            shared_database,
            journal,
            rounds,
        );
        let payments = Payments {
            requests: tx,
            journaled,
            waiting,
            channels: shared,
            db: db.clone(),
            shared_database,
            rounds,
            domain,
            settle_window_ms,
        };
        tokio::spawn(run_payouts(db.clone(), payments.clone()));
        let timer = payments.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now_ms = u64::try_from(now_ms()).unwrap_or(0);
                if timer.due(now_ms) && timer.submit(Operation::Settle { now_ms }).await.is_err() {
                    return;
                }
                if !timer.shared_database
                    && timer.journaled.load(Ordering::Relaxed) > 0
                    && let Err(err) = timer.submit(Operation::FoldWaited).await
                {
                    warn!(%err, "folding the voucher journal");
                }
            }
        });
        if shared_database {
            // The groups' queries and the folds of waiting steps (hundreds
            // of channels' rows a second) are work of their own: on a
            // thread of their own the kernel shares the core between them
            // and the connections, instead of answers waiting behind a
            // whole fold on the runtime's workers (docs/benchmarks.md). On
            // SQLite that work is on the writer's thread already.
            let folder = payments.clone();
            let folds = async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let now_ms = u64::try_from(now_ms()).unwrap_or(0);
                    folder.fold_waited_deferred(now_ms).await;
                }
            };
            // The thread lives as long as the runtime that started it.
            let (alive, runtime_gone) = oneshot::channel::<()>();
            tokio::spawn(async move {
                let _alive = alive;
                std::future::pending::<()>().await
            });
            std::thread::Builder::new()
                .name("payment-engine".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(err) => {
                            error!(%err, "starting the payment engine's runtime");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        tokio::spawn(folds);
                        tokio::select! {
                            () = engine => {}
                            _ = runtime_gone => {}
                        }
                    });
                })?;
        } else {
            tokio::spawn(engine);
        }
        Ok(payments)
    }

    fn due(&self, now_ms: u64) -> bool {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        channels
            .values()
            .any(|c| c.settles_at_ms().is_some_and(|at| at <= now_ms))
    }

    /// What `read` makes of a channel as last committed, read in place.
    fn read_channel<T>(&self, id: &B256, read: impl FnOnce(&Channel) -> T) -> Option<T> {
        self.channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(read)
    }

    /// A channel as last committed.
    pub fn channel(&self, id: &B256) -> Option<Channel> {
        self.read_channel(id, Channel::clone)
    }

    /// A channel's state as last committed (no copy of the channel).
    pub fn channel_state(&self, id: &B256) -> Option<ChannelState> {
        self.read_channel(id, |channel| channel.state)
    }

    /// A channel's redeemed amount as last committed (the paid gate's read,
    /// per segment: no copy of the channel).
    pub fn redeemed(&self, id: &B256) -> Option<Amount> {
        self.read_channel(id, |channel| channel.redeemed)
    }

    /// A channel as last committed, read from the database when this node
    /// has not seen it (opened through another node).
    pub async fn channel_or_load(&self, id: &B256) -> Option<Channel> {
        if let Some(channel) = self.channel(id) {
            return Some(channel);
        }
        self.refresh(id).await;
        self.channel(id)
    }

    /// What checks a channel's vouchers and its redeemed amount, as last
    /// committed, without a copy of the channel (the voucher path's read);
    /// read from the database when this node has not seen the channel.
    pub async fn voucher_signer_or_load(
        &self,
        id: &B256,
    ) -> Option<(streamweave_ledger::VoucherSigner, Amount)> {
        let known = || self.read_channel(id, |c| (c.voucher_signer(), c.redeemed));
        if let Some(found) = known() {
            return Some(found);
        }
        self.refresh(id).await;
        known()
    }

    /// Reads a channel's stored state into this node's view when it moved
    /// on there (vouchers accepted by another node); answers whether it did.
    pub async fn refresh(&self, id: &B256) -> bool {
        let stored = match self.db.channel(id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return false,
            Err(err) => {
                warn!(%err, "reading a channel");
                return false;
            }
        };
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        match channels.get(id) {
            // States only move forward: never back to an older read.
            Some(known)
                if known.revision == stored.revision
                    || (known.redeemed > stored.redeemed)
                    || (known.deposit > stored.deposit) =>
            {
                false
            }
            _ => {
                channels.insert(*id, stored);
                true
            }
        }
    }

    /// Channels a user pays from or is paid by.
    pub fn channels_of(&self, address: Address) -> Vec<Channel> {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<Channel> = channels
            .values()
            .filter(|c| c.payer == address || c.payee == address)
            .cloned()
            .collect();
        found.sort_by_key(|c| c.id);
        found
    }

    /// Channels opened on the escrow contract and not closed yet, as this
    /// node last saw them.
    pub fn open_on_chain(&self) -> Vec<Channel> {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<Channel> = channels
            .values()
            .filter(|c| c.chain.is_some() && c.state != ChannelState::Closed)
            .cloned()
            .collect();
        found.sort_by_key(|c| c.id);
        found
    }

    /// Accounts' balances with every voucher answered before: the stored
    /// balances plus what the journal's waiting steps move to or from them
    /// (exactly what a fold would write), without a fold. Read again when a
    /// fold commits meanwhile.
    pub async fn balances(&self, accounts: &[AccountRef]) -> Result<Vec<Balance>, EngineError> {
        if self.shared_database {
            return self.balances_with_deferred(accounts).await;
        }
        loop {
            let before = self.waiting.folds.load(Ordering::SeqCst);
            if before % 2 == 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            let pending = self.pending(accounts)?;
            let mut balances = Vec::with_capacity(accounts.len());
            for (account, pending) in accounts.iter().zip(pending) {
                let stored = self.db.balance(account).await.map_err(|err| {
                    warn!(%err, "reading a balance");
                    EngineError::Unavailable
                })?;
                balances.push(
                    stored
                        .checked_add(pending)
                        .ok_or_else(|| EngineError::Refused(Refusal::Overflow(account.key())))?,
                );
            }
            if self.waiting.folds.load(Ordering::SeqCst) == before {
                return Ok(balances);
            }
        }
    }

    /// [`Payments::balances`] where nodes share the database: the stored
    /// balances plus what the steps waiting in channels' rows (any node's)
    /// would move, read in one snapshot, without a fold.
    async fn balances_with_deferred(
        &self,
        accounts: &[AccountRef],
    ) -> Result<Vec<Balance>, EngineError> {
        let (waiting, mut balances) =
            self.db
                .deferred_with_balances(accounts)
                .await
                .map_err(|err| {
                    warn!(%err, "reading balances");
                    EngineError::Unavailable
                })?;
        for (current, folded_redeemed) in waiting {
            if current.redeemed <= folded_redeemed || !moves_any(&current, accounts) {
                continue;
            }
            let mut folded = current.clone();
            folded.redeemed = folded_redeemed;
            let signature = current.last_signature.unwrap_or_default();
            add_waiting_step(folded, current.redeemed, signature, accounts, &mut balances)?;
        }
        Ok(balances)
    }

    /// What the journal's waiting steps move to or from each of `accounts`.
    fn pending(&self, accounts: &[AccountRef]) -> Result<Vec<Balance>, EngineError> {
        // Only the channels whose steps can move one of the accounts: a
        // creator's balance reads its own viewers' channels, not everyone's.
        let stored: Vec<Arc<Channel>> = self
            .waiting
            .stored
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|channel| moves_any(channel, accounts))
            .cloned()
            .collect();
        let mut pending = vec![Balance::ZERO; accounts.len()];
        if stored.is_empty() {
            return Ok(pending);
        }
        // The latest amounts, read under the lock; the splits outside it.
        let latest: Vec<(Arc<Channel>, Amount, Vec<u8>)> = {
            let current = self.channels.read().unwrap_or_else(|p| p.into_inner());
            stored
                .into_iter()
                .filter_map(|stored| {
                    let now = current.get(&stored.id)?;
                    (now.redeemed > stored.redeemed).then(|| {
                        let signature = now.last_signature.clone().unwrap_or_default();
                        (stored, now.redeemed, signature)
                    })
                })
                .collect()
        };
        for (stored, redeemed, signature) in latest {
            add_waiting_step(
                Channel::clone(&stored),
                redeemed,
                signature,
                accounts,
                &mut pending,
            )?;
        }
        Ok(pending)
    }

    /// Folds the voucher journal, if it holds any step, so that balances and
    /// transfers read next include every voucher answered before.
    pub async fn fold(&self) -> Result<(), EngineError> {
        if self.shared_database {
            let now_ms = now_ms();
            return fold_deferred(
                &self.db,
                DeferredFold::All {
                    accepted_by_ms: now_ms,
                },
                self.rounds,
            )
            .await
            .map(|_| ())
            .map_err(|err| {
                warn!(%err, "folding waiting voucher steps");
                EngineError::Unavailable
            });
        }
        if self.journaled.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        self.submit(Operation::Fold).await.map(|_| ())
    }

    /// Folds the voucher steps waiting in channels' rows whose first step
    /// waited [`FOLD_AFTER_MS`] or was accepted in an ended pool round (any
    /// node's: rows another node is folding are left to it), a slice at a
    /// time while slices come back full.
    async fn fold_waited_deferred(&self, now_ms: u64) {
        let now_ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let which = DeferredFold::Waited {
            first_accepted_by_ms: now_ms
                .saturating_sub(i64::try_from(FOLD_AFTER_MS).unwrap_or(i64::MAX)),
            round_start_ms: self.rounds.bounds(self.rounds.round_at(now_ms)).0,
            limit: FOLD_SLICE,
        };
        for _ in 0..MAX_SLICES_A_SECOND {
            match fold_deferred(&self.db, which, self.rounds).await {
                Ok(folded) if folded == FOLD_SLICE => continue,
                Ok(_) => return,
                Err(err) => {
                    warn!(%err, "folding waiting voucher steps");
                    return;
                }
            }
        }
    }

    /// Submits an operation and waits for its durable outcome.
    pub async fn submit(&self, operation: Operation) -> Result<Done, EngineError> {
        let answer = self.enqueue(operation).await?;
        answer.await.map_err(|_| EngineError::Unavailable)?
    }

    async fn enqueue(
        &self,
        operation: Operation,
    ) -> Result<oneshot::Receiver<Result<Done, EngineError>>, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request {
                operation,
                reply,
                attempts: 0,
            })
            .await
            .map_err(|_| EngineError::Unavailable)?;
        Ok(answer)
    }
}

/// Whether a voucher step of `channel` can move any of `accounts`.
fn moves_any(channel: &Channel, accounts: &[AccountRef]) -> bool {
    accounts.iter().any(|account| channel.step_moves(account))
}

/// Adds to each of `balances` what a waiting step would move to or from
/// its account: `from` (the state its transfers reach) redeemed to `to`.
fn add_waiting_step(
    mut from: Channel,
    to: Amount,
    signature: Vec<u8>,
    accounts: &[AccountRef],
    balances: &mut [Balance],
) -> Result<(), EngineError> {
    let transfers = match from.redeem_accepted(to, signature) {
        Ok(transfers) => transfers,
        // Never, for states an engine wrote; the fold refuses it too.
        Err(err) => {
            error!(%err, channel = %format!("{:#x}", from.id), "a waiting step does not fold");
            return Ok(());
        }
    };
    for transfer in &transfers {
        for (slot, account) in balances.iter_mut().zip(accounts) {
            let moved = if transfer.credit == *account {
                slot.credit(transfer.amount)
            } else if transfer.debit == *account {
                slot.debit(transfer.amount)
            } else {
                continue;
            };
            *slot = moved.ok_or_else(|| EngineError::Refused(Refusal::Overflow(account.key())))?;
        }
    }
    Ok(())
}

/// What the engine reads.
struct Incoming {
    requests: mpsc::Receiver<Request>,
}

impl Incoming {
    /// Adds to `group` what is queued, then (with `let_ready_run`) what the
    /// tasks ready to run (requests already read, vouchers just recovered,
    /// on this runtime's threads) bring once they have run; stops at an
    /// operation that must go alone (answered as carried over). An idle
    /// engine does not wait.
    async fn fill(&mut self, group: &mut Vec<Request>, let_ready_run: bool) -> Option<Request> {
        let mut yielded = false;
        while group.len() < MAX_GROUP {
            let next = match self.requests.try_recv() {
                Ok(next) => next,
                Err(_) if let_ready_run && !yielded => {
                    // Let the ready tasks run first: they may be vouchers.
                    tokio::task::yield_now().await;
                    yielded = true;
                    continue;
                }
                Err(_) => return None,
            };
            yielded = false;
            if next.operation.may_be_refused() {
                return Some(next);
            }
            group.push(next);
        }
        None
    }
}

/// A channel whose steps wait in the voucher journal.
struct Waiting {
    /// Its state as stored (the row, before its first waiting step).
    stored: Channel,
    /// The journal sequence number of its first waiting step.
    first_seq: i64,
    /// When its first and its latest waiting steps were accepted.
    first_accepted_ms: u64,
    last_accepted_ms: u64,
    /// How many of its steps wait.
    steps: usize,
}

/// The engine's view of the voucher journal: each channel whose steps wait
/// in it, oldest first.
struct Journal {
    waiting: FastHashMap<B256, Waiting>,
    /// The waiting channels in the order of their first waiting step.
    oldest_first: VecDeque<B256>,
    /// The sequence number the next journaled step gets.
    next_seq: i64,
    /// How many steps wait (read by [`Payments::fold`]).
    steps: Arc<AtomicUsize>,
    /// What readers see of the waiting channels.
    view: Arc<WaitingView>,
    /// When the latest waiting step was accepted.
    last_accepted_ms: u64,
    /// The pool's rounds: a fold never spans two, so that every step's
    /// transfers are stamped inside the round it was accepted in.
    rounds: RoundClock,
}

impl Journal {
    fn new(
        next_seq: i64,
        steps: Arc<AtomicUsize>,
        view: Arc<WaitingView>,
        rounds: RoundClock,
    ) -> Journal {
        steps.store(0, Ordering::Relaxed);
        Journal {
            waiting: FastHashMap::default(),
            oldest_first: VecDeque::new(),
            next_seq,
            steps,
            view,
            last_accepted_ms: 0,
            rounds,
        }
    }

    /// Records a committed step; `stored`: its channel's state as stored.
    fn kept(&mut self, entry: &JournalEntry, stored: &Channel) {
        let accepted_ms = u64::try_from(entry.accepted_at_ms).unwrap_or(0);
        let waiting = self.waiting.entry(entry.channel).or_insert_with(|| {
            self.oldest_first.push_back(entry.channel);
            self.view
                .stored
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(entry.channel, Arc::new(stored.clone()));
            Waiting {
                stored: stored.clone(),
                first_seq: entry.seq,
                first_accepted_ms: accepted_ms,
                last_accepted_ms: accepted_ms,
                steps: 0,
            }
        });
        waiting.steps += 1;
        waiting.last_accepted_ms = waiting.last_accepted_ms.max(accepted_ms);
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.last_accepted_ms = self.last_accepted_ms.max(accepted_ms);
    }

    /// How many of the oldest waiting channels to fold before a group
    /// accepted at `now_ms` whose operations `meet` the journal's accounts:
    /// all of them when it meets them or a pool round ended since the
    /// latest step, else a slice of at most [`FOLD_SLICE`] channels whose
    /// first step waited [`FOLD_AFTER_MS`] (all of the slice while more
    /// than [`FOLD_AFTER_VOUCHERS`] steps wait).
    fn due(&self, meet: bool, now_ms: u64) -> usize {
        let round = |at_ms: u64| {
            self.rounds
                .round_at(i64::try_from(at_ms).unwrap_or(i64::MAX))
        };
        if self.waiting.is_empty() {
            return 0;
        }
        if meet || round(self.last_accepted_ms) != round(now_ms) {
            return self.oldest_first.len();
        }
        if self.steps.load(Ordering::Relaxed) >= FOLD_AFTER_VOUCHERS {
            return self.oldest_first.len().min(FOLD_SLICE);
        }
        self.oldest_first
            .iter()
            .take(FOLD_SLICE)
            .take_while(|id| {
                self.waiting
                    .get(*id)
                    .is_some_and(|w| w.first_accepted_ms.saturating_add(FOLD_AFTER_MS) <= now_ms)
            })
            .count()
    }

    /// The fold of the `count` oldest waiting channels: each one's row over
    /// its stored revision, its steps as one, the journal's rows below the
    /// first step still waiting deleted; and the time its transfers carry
    /// (its latest step's). `channels`: the committed states. `None` when a
    /// step does not fold (never, for the engine's own states): then
    /// nothing is folded and the steps keep waiting.
    fn fold(
        &self,
        count: usize,
        channels: &FastHashMap<B256, Channel>,
    ) -> Option<(LedgerBatch, u64)> {
        let below = self
            .oldest_first
            .get(count)
            .and_then(|id| self.waiting.get(id))
            .map_or(self.next_seq, |w| w.first_seq);
        let mut batch = LedgerBatch {
            journal_folded_below: Some(below),
            ..LedgerBatch::default()
        };
        let mut stamp_ms = 0;
        for id in self.oldest_first.iter().take(count) {
            let (Some(waiting), Some(current)) = (self.waiting.get(id), channels.get(id)) else {
                continue;
            };
            stamp_ms = stamp_ms.max(waiting.last_accepted_ms);
            let mut folded = waiting.stored.clone();
            if current.redeemed > folded.redeemed {
                let signature = current.last_signature.clone().unwrap_or_default();
                match folded.redeem_accepted(current.redeemed, signature) {
                    Ok(transfers) => batch.transfers.extend(transfers),
                    Err(err) => {
                        error!(%err, channel = %format!("{id:#x}"), "a journal step does not fold");
                        return None;
                    }
                }
            }
            batch.channels.push(ChannelWrite::new(
                Some(waiting.stored.revision),
                current.clone(),
            ));
        }
        Some((batch, stamp_ms))
    }

    /// Forgets the `count` oldest waiting channels, folded.
    fn folded(&mut self, count: usize) {
        let mut view = self.view.stored.write().unwrap_or_else(|p| p.into_inner());
        for id in self
            .oldest_first
            .drain(..count.min(self.oldest_first.len()))
        {
            view.remove(&id);
            if let Some(waiting) = self.waiting.remove(&id) {
                self.steps.fetch_sub(waiting.steps, Ordering::Relaxed);
            }
        }
    }
}

/// Folds the journal's `count` oldest waiting channels in one commit; on a
/// refusal or an error their steps keep waiting (folded next time).
async fn fold(
    db: &Store,
    journal: &mut Journal,
    count: usize,
    channels: &FastHashMap<B256, Channel>,
) {
    let started = std::time::Instant::now();
    let Some((batch, stamp_ms)) = journal.fold(count, channels) else {
        return;
    };
    let stamp_ms = i64::try_from(stamp_ms).unwrap_or(i64::MAX);
    // Readers of balances read again when a fold moved amounts from the
    // waiting steps to the stored balances meanwhile.
    journal.view.folds.fetch_add(1, Ordering::SeqCst);
    match db.commit(&[batch], stamp_ms).await {
        Ok(outcome) if matches!(outcome.as_slice(), [Ok(())]) => {
            journal.folded(count);
            crate::metrics::metrics()
                .engine_fold_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(outcome) => error!(?outcome, "the voucher journal's fold was refused"),
        Err(err) => error!(%err, "folding the voucher journal"),
    }
    journal.view.folds.fetch_add(1, Ordering::SeqCst);
}

/// What readers see of the voucher journal: the stored state of each
/// channel whose steps wait (its current state is the engine's), and a
/// count of folds, odd while one commits.
#[derive(Default)]
struct WaitingView {
    stored: std::sync::RwLock<FastHashMap<B256, Arc<Channel>>>,
    folds: std::sync::atomic::AtomicU64,
}

/// Folds what the voucher journal holds, on start: a node stopped since it
/// answered these vouchers. Each channel's stored row moves to its last
/// journaled amount in one step; steps already folded (rows a sliced fold
/// left above its mark) are skipped. Answers the sequence number the next
/// journaled step gets.
async fn fold_left_journal(db: &Store, rounds: RoundClock) -> anyhow::Result<i64> {
    let entries = db.voucher_journal().await?;
    let next_seq = entries.last().map_or(1, |e| e.seq.saturating_add(1));
    if entries.is_empty() {
        return Ok(next_seq);
    }
    // One fold per round the steps were accepted in, each stamped inside it.
    let mut by_round: std::collections::BTreeMap<i64, Vec<&crate::store::JournalEntry>> =
        std::collections::BTreeMap::new();
    for entry in &entries {
        by_round
            .entry(rounds.round_at(entry.accepted_at_ms))
            .or_default()
            .push(entry);
    }
    let ids: Vec<B256> = entries
        .iter()
        .map(|e| e.channel)
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    let mut channels: FastHashMap<B256, Channel> = db
        .channels_by_id(&ids)
        .await?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    let last_round = by_round.keys().next_back().copied();
    let mut folded_channels = 0;
    for (round, steps) in &by_round {
        let mut last: FastHashMap<B256, &crate::store::JournalEntry> = FastHashMap::default();
        for entry in steps {
            last.insert(entry.channel, entry);
        }
        let mut batch = LedgerBatch {
            journal_folded_below: (Some(*round) == last_round).then_some(next_seq),
            ..LedgerBatch::default()
        };
        for (id, entry) in last {
            let Some(channel) = channels.get_mut(&id) else {
                warn!(channel = %format!("{id:#x}"), "a journaled voucher names no channel");
                continue;
            };
            if entry.amount <= channel.redeemed {
                continue;
            }
            let base_revision = Some(channel.revision);
            let transfers = channel
                .redeem_accepted(entry.amount, entry.signature.to_vec())
                .map_err(|err| anyhow::anyhow!("folding the voucher journal: {err}"))?;
            channel.revision = fresh_revision();
            batch.transfers.extend(transfers);
            batch
                .channels
                .push(ChannelWrite::new(base_revision, channel.clone()));
            folded_channels += 1;
        }
        let stamp_ms = steps
            .iter()
            .map(|e| e.accepted_at_ms)
            .max()
            .unwrap_or_else(now_ms);
        match db.commit(&[batch], stamp_ms).await?.pop() {
            Some(Ok(())) => {}
            Some(Err(refusal)) => anyhow::bail!("folding the voucher journal: {refusal}"),
            None => anyhow::bail!("folding the voucher journal: no outcome"),
        }
    }
    info!(
        vouchers = entries.len(),
        channels = folded_channels,
        "folded the voucher journal left by the last run"
    );
    Ok(next_seq)
}

#[allow(clippy::too_many_arguments)]
async fn run_engine(
    db: Store,
    mut channels: FastHashMap<B256, Channel>,
    shared: std::sync::Arc<std::sync::RwLock<FastHashMap<B256, Channel>>>,
    mut incoming: Incoming,
    domain: PaymentDomain,
    settle_window_ms: u64,
    shared_database: bool,
    mut journal: Option<Journal>,
    rounds: RoundClock,
) {
    let let_ready_run = lets_ready_tasks_run(db.dialect());
    let mut carried: Option<Request> = None;
    // Operations to plan again, alone, over a channel reloaded from the
    // database (another node committed it first).
    let mut again: std::collections::VecDeque<Request> = std::collections::VecDeque::new();
    // Channels another node was seen writing (nodes sharing a database):
    // read before each plan. At most one entry per channel this node knows.
    let mut written_elsewhere: FastHashSet<B256> = FastHashSet::default();
    loop {
        let first = match again.pop_front().or_else(|| carried.take()) {
            Some(request) => request,
            None => match incoming.requests.recv().await {
                Some(request) => request,
                None => return,
            },
        };
        // Build a group: a refusable or repeated operation alone, or a run
        // of the others.
        let mut group = vec![first];
        if !group[0].operation.may_be_refused()
            && group[0].attempts == 0
            && let Some(alone) = incoming.fill(&mut group, let_ready_run).await
        {
            carried = Some(alone);
        }
        // A channel opened or changed on another node: read it first (all
        // of the group's, in one query). With other nodes, a voucher's
        // first attempt on a channel no other node was seen writing is
        // planned over the copy this node keeps: a viewer pays through the
        // node it watches through, so the row is the one this node wrote
        // last, and each write is over the revision it was planned on. A
        // row another node moved on refuses the write, and a refusal of the
        // plan itself (a deposit topped up elsewhere) may be the copy's age:
        // either is planned again, alone, over the row read anew, and from
        // then on the channel is read first (vouchers sent round robin).
        let wanted: Vec<B256> = group
            .iter()
            .filter_map(|request| {
                let id = request.operation.channel_id()?;
                let read = !channels.contains_key(&id)
                    || (shared_database
                        && (!over_kept_copy(request) || written_elsewhere.contains(&id)));
                read.then_some(id)
            })
            .collect();
        if !wanted.is_empty() {
            match db.channels_by_id(&wanted).await {
                Ok(stored) => {
                    for channel in stored {
                        if shared_database
                            && channels
                                .get(&channel.id)
                                .is_some_and(|kept| kept.revision != channel.revision)
                        {
                            written_elsewhere.insert(channel.id);
                        }
                        remember(&shared, &mut channels, channel);
                    }
                }
                Err(err) => warn!(%err, "reading channels"),
            }
        }
        let now = u64::try_from(now_ms()).unwrap_or(0);
        // The journal's steps are folded first when asked, or before any
        // other operation (which then meets up-to-date rows); otherwise the
        // oldest channels' steps, a slice at a time, once they waited long
        // enough. A group of vouchers alone keeps its steps in the journal.
        let meet = group
            .iter()
            .any(|request| request.operation.meets_journal());
        if let Some(journal) = journal.as_mut() {
            let count = journal.due(meet, now);
            if count > 0 {
                fold(&db, journal, count, &channels).await;
            }
        }
        let journaling = !meet
            && journal
                .as_ref()
                .is_some_and(|j| j.steps.load(Ordering::Relaxed) < JOURNAL_BOUND);
        // With other nodes: every waiting step (any node's) is folded before
        // any other operation; a group of vouchers alone defers its steps.
        if shared_database
            && meet
            && let Err(err) = fold_deferred(
                &db,
                DeferredFold::All {
                    accepted_by_ms: i64::try_from(now).unwrap_or(i64::MAX),
                },
                rounds,
            )
            .await
        {
            warn!(%err, "folding waiting voucher steps");
        }
        let deferring = shared_database && !meet;
        let mut next_seq = journal.as_ref().map_or(0, |j| j.next_seq);
        // Apply each operation to working copies; collect the batches.
        let mut working: FastHashMap<B256, Channel> = FastHashMap::default();
        let mut planned: Vec<(Request, Planned)> = Vec::with_capacity(group.len());
        for request in group {
            let outcome = plan(
                domain,
                request.operation.clone(),
                &channels,
                &mut working,
                now,
                settle_window_ms,
                if journaling {
                    VoucherSteps::Journal(&mut next_seq)
                } else if deferring {
                    VoucherSteps::Deferred {
                        round_start_ms: rounds
                            .bounds(rounds.round_at(i64::try_from(now).unwrap_or(i64::MAX)))
                            .0,
                    }
                } else {
                    VoucherSteps::WithTransfers
                },
            );
            planned.push((request, outcome));
        }
        if let Some(journal) = journal.as_mut() {
            journal.next_seq = next_seq;
        }
        let batches: Vec<LedgerBatch> = planned
            .iter()
            .filter_map(|(_, outcome)| outcome.as_ref().ok().map(|(batch, _)| batch.clone()))
            .collect();
        let committed = if batches
            .iter()
            .all(|b| b.transfers.is_empty() && b.channels.is_empty() && b.journal.is_empty())
        {
            Ok(vec![Ok(()); batches.len()])
        } else {
            let started = std::time::Instant::now();
            let committed = db.commit(&batches, now_ms()).await;
            let metrics = crate::metrics::metrics();
            metrics
                .engine_commit_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics
                .engine_batch_operations
                .observe(batches.len() as f64);
            committed
        };
        match committed {
            Ok(results) => {
                let mut results = results.into_iter();
                let mut answers = Vec::with_capacity(planned.len());
                let mut changed: Vec<Channel> = Vec::new();
                let mut stale: Vec<B256> = Vec::new();
                // Of those, the ones refused for another operation than a
                // voucher (which meets waiting steps only once folded).
                let mut stale_other: Vec<B256> = Vec::new();
                for (request, outcome) in planned {
                    let answer = match outcome {
                        // Planned over this node's copy: perhaps its age.
                        Err(_)
                            if shared_database
                                && over_kept_copy(&request)
                                && request
                                    .operation
                                    .channel_id()
                                    .is_some_and(|id| !wanted.contains(&id)) =>
                        {
                            again.push_back(Request {
                                attempts: request.attempts + 1,
                                ..request
                            });
                            continue;
                        }
                        Err(err) => Err(err),
                        Ok((batch, done)) => match results.next() {
                            Some(Ok(())) => {
                                if let Some(journal) = journal.as_mut() {
                                    // The row keeps the state before the
                                    // channel's first waiting step.
                                    for entry in &batch.journal {
                                        if let Some(stored) = channels.get(&entry.channel) {
                                            journal.kept(entry, stored);
                                        }
                                    }
                                }
                                changed.extend(batch.channels.into_iter().map(|w| w.channel));
                                Ok(done)
                            }
                            Some(Err(Refusal::ChannelChanged(id)))
                                if request.operation.writes_channels()
                                    && request.attempts + 1 < MAX_ATTEMPTS =>
                            {
                                stale.push(id);
                                if !matches!(request.operation, Operation::Voucher(_)) {
                                    stale_other.push(id);
                                }
                                again.push_back(Request {
                                    attempts: request.attempts + 1,
                                    ..request
                                });
                                continue;
                            }
                            Some(Err(refusal)) => Err(EngineError::Refused(refusal)),
                            None => Err(EngineError::Unavailable),
                        },
                    };
                    answers.push((request.reply, answer));
                }
                if journaling {
                    // A group of vouchers alone commits whole: its channels'
                    // last states are the working copies.
                    changed.extend(working.into_values());
                }
                // Readers see the committed state before anyone hears of it.
                for channel in changed {
                    remember(&shared, &mut channels, channel);
                }
                // A changed row's waiting steps are folded where they would
                // refuse the write again: for a voucher, when they began in
                // an ended pool round (else it is one more step over the
                // row's revision); for any other operation, always.
                if shared_database && !stale.is_empty() {
                    let round_start_ms = rounds
                        .bounds(rounds.round_at(i64::try_from(now).unwrap_or(i64::MAX)))
                        .0;
                    let stale_vouchers: Vec<B256> = stale
                        .iter()
                        .filter(|id| !stale_other.contains(id))
                        .copied()
                        .collect();
                    for which in [
                        DeferredFold::Channels {
                            ids: &stale_vouchers,
                            begun_before_ms: Some(round_start_ms),
                        },
                        DeferredFold::Channels {
                            ids: &stale_other,
                            begun_before_ms: None,
                        },
                    ] {
                        if let Err(err) = fold_deferred(&db, which, rounds).await {
                            // Planned again over the row as it is; refused
                            // again while its steps wait.
                            warn!(%err, "folding the waiting voucher steps of changed channels");
                        }
                    }
                }
                for id in stale {
                    if journal
                        .as_ref()
                        .is_some_and(|j| j.waiting.contains_key(&id))
                    {
                        // Its row is behind its journaled steps: keep ours.
                        continue;
                    }
                    match db.channel(&id).await {
                        Ok(Some(channel)) => {
                            // Refused over another node's write, not only
                            // over a pool round's end: read first from now on.
                            if channels
                                .get(&id)
                                .is_some_and(|kept| kept.revision != channel.revision)
                            {
                                written_elsewhere.insert(id);
                            }
                            remember(&shared, &mut channels, channel);
                        }
                        Ok(None) => {
                            written_elsewhere.remove(&id);
                            forget(&shared, &mut channels, &id);
                        }
                        Err(err) => warn!(%err, "reloading a channel"),
                    }
                }
                for (reply, answer) in answers {
                    let _ = reply.send(answer);
                }
            }
            Err(err) => {
                error!(%err, "ledger commit failed");
                for (request, _) in planned {
                    let _ = request.reply.send(Err(EngineError::Unavailable));
                }
            }
        }
    }
}

/// Whether a request is planned over the channel this engine keeps rather
/// than over its row read anew (nodes sharing a database): a voucher's
/// first attempt.
fn over_kept_copy(request: &Request) -> bool {
    request.attempts == 0 && matches!(request.operation, Operation::Voucher(_))
}

/// Keeps a channel's committed state in the engine's map and the readers'.
fn remember(
    shared: &std::sync::RwLock<FastHashMap<B256, Channel>>,
    channels: &mut FastHashMap<B256, Channel>,
    channel: Channel,
) {
    let mut visible = shared.write().unwrap_or_else(|p| p.into_inner());
    visible.insert(channel.id, channel.clone());
    channels.insert(channel.id, channel);
}

fn forget(
    shared: &std::sync::RwLock<FastHashMap<B256, Channel>>,
    channels: &mut FastHashMap<B256, Channel>,
    id: &B256,
) {
    shared.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    channels.remove(id);
}

/// A new state's revision: random, so no two nodes name different states
/// alike (below 2^63, as databases store it).
fn fresh_revision() -> u64 {
    (rand::random::<u64>() >> 1).max(1)
}

fn current<'a>(
    id: &B256,
    channels: &'a FastHashMap<B256, Channel>,
    working: &'a FastHashMap<B256, Channel>,
) -> Option<&'a Channel> {
    working.get(id).or_else(|| channels.get(id))
}

/// Where a planned voucher's step goes.
enum VoucherSteps<'a> {
    /// Its transfers and its channel's row, at once.
    WithTransfers,
    /// This node's voucher journal, under the next sequence number.
    Journal(&'a mut i64),
    /// Its channel's row alone, its transfers deferred (`store::deferred`);
    /// `round_start_ms`: where the current pool round began.
    Deferred { round_start_ms: i64 },
}

/// Folds voucher steps waiting in channels' rows (`store::deferred`): each
/// channel's steps as one, from the amount its transfers reach.
async fn fold_deferred(
    db: &Store,
    which: DeferredFold<'_>,
    rounds: RoundClock,
) -> Result<usize, crate::store::FoldError> {
    let started = std::time::Instant::now();
    let folded = db
        .fold_deferred(which, deferred_transfers, |at_ms| rounds.round_at(at_ms))
        .await?;
    if folded > 0 {
        crate::metrics::metrics()
            .engine_fold_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(folded)
}

/// The transfers of a channel's waiting steps: from the amount its
/// transfers reach to its current state, as one step (the ids a single
/// voucher for the current amount would give).
fn deferred_transfers(current: &Channel, folded_redeemed: Amount) -> Result<Vec<Transfer>, String> {
    if current.redeemed <= folded_redeemed {
        return Ok(Vec::new());
    }
    let mut folded = current.clone();
    folded.redeemed = folded_redeemed;
    let signature = current.last_signature.clone().unwrap_or_default();
    folded
        .redeem_accepted(current.redeemed, signature)
        .map_err(|err| err.to_string())
}

/// A voucher whose step is deferred (`VoucherSteps::Deferred`): its
/// channel's new state over the revision it was planned on, and the step.
fn plan_deferred_voucher(
    voucher: &VerifiedVoucher,
    round_start_ms: i64,
    channels: &FastHashMap<B256, Channel>,
    working: &mut FastHashMap<B256, Channel>,
    now_ms: u64,
) -> Planned {
    let mut state = current(&voucher.channel, channels, working)
        .cloned()
        .ok_or(EngineError::UnknownChannel)?;
    let base_revision = state.revision;
    let redeemed_before = state.redeemed;
    let new = state.accept_voucher(voucher, now_ms)?;
    let mut batch = LedgerBatch::default();
    if new {
        state.revision = fresh_revision();
        working.insert(state.id, state.clone());
        batch.channels.push(ChannelWrite {
            base_revision: Some(base_revision),
            channel: state.clone(),
            deferred: Some(DeferredStep {
                base_redeemed: redeemed_before,
                accepted_at_ms: i64::try_from(now_ms).unwrap_or(i64::MAX),
                round_start_ms,
            }),
        });
    }
    Ok((
        batch,
        Done {
            channel: Some(state),
            new,
            redeemed_before: Some(redeemed_before),
        },
    ))
}

fn plan(
    domain: PaymentDomain,
    operation: Operation,
    channels: &FastHashMap<B256, Channel>,
    working: &mut FastHashMap<B256, Channel>,
    now_ms: u64,
    settle_window_ms: u64,
    voucher_steps: VoucherSteps<'_>,
) -> Planned {
    let with_channel = |mut channel: Channel,
                        transfers: Vec<Transfer>,
                        new: bool,
                        working: &mut FastHashMap<B256, Channel>| {
        let base_revision = current(&channel.id, channels, working).map(|c| c.revision);
        channel.revision = fresh_revision();
        working.insert(channel.id, channel.clone());
        Ok((
            LedgerBatch {
                transfers,
                channels: vec![ChannelWrite::new(base_revision, channel.clone())],
                ..LedgerBatch::default()
            },
            Done {
                channel: Some(channel),
                new,
                redeemed_before: None,
            },
        ))
    };
    if let (Operation::Voucher(voucher), VoucherSteps::Deferred { round_start_ms }) =
        (&operation, &voucher_steps)
    {
        return plan_deferred_voucher(voucher, *round_start_ms, channels, working, now_ms);
    }
    match operation {
        Operation::Open(request) => {
            let (channel, transfers) = Channel::open(request, domain, now_ms)?;
            if current(&channel.id, channels, working).is_some() {
                return Err(EngineError::ChannelExists);
            }
            with_channel(channel, transfers, true, working)
        }
        Operation::TopUp {
            channel,
            payer,
            amount,
        } => {
            let mut state = current(&channel, channels, working)
                .cloned()
                .ok_or(EngineError::UnknownChannel)?;
            if state.payer != payer {
                return Err(EngineError::NotParty);
            }
            let transfers = state.top_up(amount, now_ms)?;
            with_channel(state, transfers, true, working)
        }
        Operation::Voucher(voucher) if matches!(voucher_steps, VoucherSteps::Journal(_)) => {
            let mut state = current(&voucher.channel, channels, working)
                .cloned()
                .ok_or(EngineError::UnknownChannel)?;
            let redeemed_before = state.redeemed;
            let new = state.accept_voucher(&voucher, now_ms)?;
            let mut batch = LedgerBatch::default();
            if new {
                state.revision = fresh_revision();
                working.insert(state.id, state.clone());
                let mut seq = 0;
                if let VoucherSteps::Journal(next) = voucher_steps {
                    seq = *next;
                    *next += 1;
                }
                batch.journal.push(JournalEntry {
                    seq,
                    channel: voucher.channel,
                    amount: voucher.amount,
                    signature: voucher.signature,
                    accepted_at_ms: i64::try_from(now_ms).unwrap_or(i64::MAX),
                });
            }
            Ok((
                batch,
                Done {
                    channel: Some(state),
                    new,
                    redeemed_before: Some(redeemed_before),
                },
            ))
        }
        Operation::Voucher(voucher) => {
            let mut state = current(&voucher.channel, channels, working)
                .cloned()
                .ok_or(EngineError::UnknownChannel)?;
            let redeemed_before = state.redeemed;
            let outcome = state.apply_voucher(&voucher, now_ms)?;
            if !outcome.new {
                return Ok((
                    LedgerBatch::default(),
                    Done {
                        channel: Some(state),
                        new: false,
                        redeemed_before: Some(redeemed_before),
                    },
                ));
            }
            with_channel(state, outcome.transfers, true, working).map(|(batch, done)| {
                (
                    batch,
                    Done {
                        redeemed_before: Some(redeemed_before),
                        ..done
                    },
                )
            })
        }
        Operation::Close { channel, by } => {
            let mut state = current(&channel, channels, working)
                .cloned()
                .ok_or(EngineError::UnknownChannel)?;
            if state.payer != by && state.payee != by {
                return Err(EngineError::NotParty);
            }
            state.close(now_ms, settle_window_ms)?;
            with_channel(state, Vec::new(), true, working)
        }
        Operation::ChainOpen {
            open,
            accept_until_ms,
            position,
        } => {
            if let Some(known) = current(&open.id, channels, working) {
                // Applied before (a restart, or another node).
                return Ok((
                    LedgerBatch::default(),
                    Done {
                        channel: Some(known.clone()),
                        new: false,
                        redeemed_before: None,
                    },
                ));
            }
            let (channel, transfers) =
                Channel::open_on_chain(open, domain, accept_until_ms, position)?;
            with_channel(channel, transfers, true, working)
        }
        Operation::ChainStep {
            channel,
            step,
            position,
        } => {
            let mut state = current(&channel, channels, working)
                .cloned()
                .ok_or(EngineError::UnknownChannel)?;
            match state.apply_chain(position, step)? {
                Some(transfers) => with_channel(state, transfers, true, working),
                None => Ok((
                    LedgerBatch::default(),
                    Done {
                        channel: Some(state),
                        new: false,
                        redeemed_before: None,
                    },
                )),
            }
        }
        Operation::Fold | Operation::FoldWaited => Ok((
            LedgerBatch::default(),
            Done {
                channel: None,
                new: false,
                redeemed_before: None,
            },
        )),
        Operation::Transfers(transfers) => Ok((
            LedgerBatch {
                transfers,
                channels: Vec::new(),
                ..LedgerBatch::default()
            },
            Done {
                channel: None,
                new: true,
                redeemed_before: None,
            },
        )),
        Operation::Settle { now_ms: at } => {
            let mut batch = LedgerBatch::default();
            let due: Vec<B256> = channels
                .keys()
                .chain(working.keys())
                .filter(|id| {
                    current(id, channels, working)
                        .and_then(Channel::settles_at_ms)
                        .is_some_and(|t| t <= at)
                })
                .copied()
                .collect();
            for id in due {
                let Some(mut state) = current(&id, channels, working).cloned() else {
                    continue;
                };
                let base_revision = Some(state.revision);
                if let Some(transfers) = state.settle(at) {
                    info!(channel = %format!("{id:#x}"), "channel settled");
                    state.revision = fresh_revision();
                    batch.transfers.extend(transfers);
                    working.insert(id, state.clone());
                    batch.channels.push(ChannelWrite::new(base_revision, state));
                }
            }
            Ok((
                batch,
                Done {
                    channel: None,
                    new: true,
                    redeemed_before: None,
                },
            ))
        }
    }
}

/// The policy money to `payee` splits by now: theirs (or them alone) with
/// the platform's current fee.
pub async fn payee_policy(
    db: &Store,
    payee: Address,
    platform_fee_bps: u16,
) -> Result<streamweave_ledger::RevenuePolicy, sqlx::Error> {
    Ok(db
        .policy(payee)
        .await?
        .map(|mut p| {
            p.platform_fee_bps = platform_fee_bps;
            p
        })
        .unwrap_or_else(|| streamweave_ledger::RevenuePolicy::sole(payee, platform_fee_bps)))
}

/// A deposit from outside (faucet, admin, chain watcher), idempotent by `id`.
pub fn deposit(id: String, owner: Address, asset: Address, amount: Amount) -> Transfer {
    Transfer {
        id,
        debit: AccountRef::World { asset },
        credit: AccountRef::Available { owner, asset },
        asset,
        amount,
        kind: TransferKind::Deposit,
        channel: None,
    }
}

/// A withdrawal to outside, from available or earned balance.
pub fn withdrawal(id: String, from: AccountRef, asset: Address, amount: Amount) -> Transfer {
    Transfer {
        id,
        debit: from,
        credit: AccountRef::World { asset },
        asset,
        amount,
        kind: TransferKind::Withdrawal,
        channel: None,
    }
}

/// How often automatic payouts are checked.
const PAYOUT_INTERVAL: Duration = Duration::from_secs(5);

/// Withdraws an account's whole earned balance once it reaches the account's
/// threshold. Off the voucher path; a payout refused because the balance fell
/// meanwhile is simply tried again next round.
async fn run_payouts(db: Store, payments: Payments) {
    let mut tick = tokio::time::interval(PAYOUT_INTERVAL);
    loop {
        tick.tick().await;
        let thresholds = match db.payout_thresholds().await {
            Ok(thresholds) => thresholds,
            Err(err) => {
                error!(%err, "reading payout thresholds");
                continue;
            }
        };
        for (owner, threshold) in thresholds {
            let asset = Address::ZERO;
            // With the voucher journal's waiting steps: the withdrawal
            // meets them, so they are folded before it is applied.
            let earned = match payments
                .balances(&[AccountRef::Revenue { owner, asset }])
                .await
            {
                Ok(earned) => earned.first().map_or(0, |b| b.non_negative().0),
                Err(err) => {
                    error!(%err, "reading an earned balance");
                    continue;
                }
            };
            if earned == 0 || earned < threshold {
                continue;
            }
            let id = format!("payout:{owner:#x}:{}", now_ms());
            let transfer = withdrawal(
                id.clone(),
                AccountRef::Revenue { owner, asset },
                asset,
                Amount(earned),
            );
            if payments
                .submit(Operation::Transfers(vec![transfer]))
                .await
                .is_ok()
            {
                if let Err(err) = db
                    .record_withdrawal(&id, owner, asset, earned, now_ms())
                    .await
                {
                    error!(%err, "recording a payout");
                }
                info!(owner = %format!("{owner:#x}"), amount = %earned, "automatic payout");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(operation: Operation) -> Request {
        Request {
            operation,
            reply: oneshot::channel().0,
            attempts: 0,
        }
    }

    fn settle() -> Request {
        request(Operation::Settle { now_ms: 0 })
    }

    fn incoming() -> (mpsc::Sender<Request>, Incoming) {
        let (tx, rx) = mpsc::channel(64);
        (tx, Incoming { requests: rx })
    }

    /// A test's bound on anything that should not wait.
    const SOON: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_group_takes_what_is_queued_and_stops_at_what_goes_alone() {
        let (tx, mut incoming) = incoming();
        for _ in 0..3 {
            tx.send(settle()).await.unwrap();
        }
        tx.send(request(Operation::Transfers(Vec::new())))
            .await
            .unwrap();
        tx.send(settle()).await.unwrap();
        let mut group = vec![settle()];
        let alone = incoming.fill(&mut group, true).await;
        assert_eq!(group.len(), 4);
        assert!(alone.is_some_and(|r| r.operation.may_be_refused()));
    }

    #[tokio::test]
    async fn a_group_takes_in_what_ready_tasks_send_once_they_ran() {
        let (tx, mut incoming) = incoming();
        // Ready to run on this (current-thread) runtime, not yet run.
        let ready = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(settle()).await.unwrap() }
        });
        let mut group = vec![settle()];
        tokio::time::timeout(SOON, incoming.fill(&mut group, true))
            .await
            .expect("no wait beyond one turn");
        assert_eq!(group.len(), 2, "the ready task's operation joined");
        ready.await.unwrap();
        // Without letting them run, only what is queued.
        let late = tokio::spawn(async move { tx.send(settle()).await.unwrap() });
        let mut group = vec![settle()];
        incoming.fill(&mut group, false).await;
        assert_eq!(group.len(), 1);
        late.await.unwrap();
        // An idle engine does not wait.
        let mut group = vec![settle()];
        tokio::time::timeout(SOON, incoming.fill(&mut group, true))
            .await
            .expect("nothing ready: no wait");
        assert_eq!(group.len(), 2, "the late one, queued meanwhile");
    }

    mod journal {
        use super::*;
        use streamweave_ledger::{RevenuePolicy, SigningKey};

        const WEEK_MS: i64 = 7 * 24 * 3_600_000;

        fn rounds(length_ms: i64) -> RoundClock {
            RoundClock {
                anchor_ms: 0,
                length_ms,
            }
        }

        fn revenue(owner: Address) -> AccountRef {
            AccountRef::Revenue {
                owner,
                asset: Address::ZERO,
            }
        }

        const PLATFORM: AccountRef = AccountRef::Platform {
            asset: Address::ZERO,
        };

        fn opening(payer: Address, payee: Address, signer: Address) -> OpenChannel {
            OpenChannel {
                payer,
                payee,
                token: Address::ZERO,
                salt: B256::repeat_byte(1),
                signer,
                deposit: Amount(100_000),
                expires_at_ms: u64::try_from(now_ms()).unwrap_or(0) + 3_600_000,
                policy: RevenuePolicy::sole(payee, 300),
            }
        }

        /// A deposit for `payer`, then a channel from it to `payee`.
        async fn funded_channel(
            payments: &Payments,
            payer: Address,
            payee: Address,
            key: &SigningKey,
        ) -> Channel {
            payments
                .submit(Operation::Transfers(vec![deposit(
                    "d".into(),
                    payer,
                    Address::ZERO,
                    Amount(1_000_000),
                )]))
                .await
                .expect("deposit");
            payments
                .submit(Operation::Open(opening(payer, payee, key.address())))
                .await
                .expect("opens")
                .channel
                .expect("channel")
        }

        /// The channel's row as stored.
        async fn row_of(db: &Store, channel: &Channel) -> Channel {
            db.channel(&channel.id).await.expect("read").expect("row")
        }

        async fn assert_audited(db: &Store) {
            let transfers = db.all_transfers().await.expect("transfers");
            let channels = db.channels().await.expect("channels");
            assert!(streamweave_ledger::audit(&transfers, &channels).is_clean());
        }

        fn signed(key: &SigningKey, channel: &Channel, amount: u128) -> VerifiedVoucher {
            let signature =
                key.sign_digest(PaymentDomain::EMBEDDED.voucher_digest(channel.id, amount));
            channel
                .verify_voucher(Amount(amount), &signature)
                .expect("verifies")
        }

        #[tokio::test]
        async fn answered_vouchers_wait_in_the_journal_until_a_fold_moves_them_as_one() {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = Store::sqlite(dir.path()).await.expect("store");
            vouchers_wait_in_the_journal(db).await;
        }

        #[tokio::test]
        async fn a_single_node_on_postgres_keeps_the_journal_too() {
            let Some(schema) = crate::store::suite::PostgresSchema::create().await else {
                return;
            };
            let db = Store::postgres(&schema.url).await.expect("store");
            vouchers_wait_in_the_journal(db.clone()).await;
            db.pool().close().await;
            schema.drop_schema().await;
        }

        async fn vouchers_wait_in_the_journal(db: Store) {
            let payments = Payments::start(
                db.clone(),
                PaymentDomain::EMBEDDED,
                60_000,
                false,
                rounds(WEEK_MS),
            )
            .await
            .expect("engine");
            let (payer, payee) = (Address::repeat_byte(0xa1), Address::repeat_byte(0xb0));
            let key = SigningKey::from_bytes(&[5; 32]).expect("key");
            let channel = funded_channel(&payments, payer, payee, &key).await;
            for amount in [1_000, 2_500, 7_001] {
                let done = payments
                    .submit(Operation::Voucher(signed(&key, &channel, amount)))
                    .await
                    .expect("accepted");
                assert!(done.new);
            }
            // The same voucher again: answered, nothing new kept.
            let again = payments
                .submit(Operation::Voucher(signed(&key, &channel, 7_001)))
                .await
                .expect("idempotent");
            assert!(!again.new);
            // Durable in the journal; the row and balances wait for a fold.
            let journal = db.voucher_journal().await.expect("journal");
            assert_eq!(
                journal.iter().map(|e| e.amount.0).collect::<Vec<_>>(),
                vec![1_000, 2_500, 7_001]
            );
            assert_eq!(row_of(&db, &channel).await.redeemed, Amount(0));
            assert_eq!(payments.redeemed(&channel.id), Some(Amount(7_001)));
            // Balances read meanwhile count the waiting steps, without a fold.
            let read = payments
                .balances(&[revenue(payee), PLATFORM])
                .await
                .expect("balances");
            assert_eq!(
                read,
                vec![Balance::from(Amount(6_790)), Balance::from(Amount(211))]
            );
            // Someone else's revenue: no waiting step of this channel moves it.
            let read = payments
                .balances(&[revenue(Address::repeat_byte(0xc1)), revenue(payee)])
                .await
                .expect("balances");
            assert_eq!(read, vec![Balance::ZERO, Balance::from(Amount(6_790))]);
            assert_eq!(db.voucher_journal().await.expect("journal").len(), 3);
            payments.fold().await.expect("fold");
            assert_eq!(db.voucher_journal().await.expect("journal"), vec![]);
            let row = row_of(&db, &channel).await;
            assert_eq!(row.redeemed, Amount(7_001));
            assert_eq!(row, payments.channel(&channel.id).expect("known"));
            // What one voucher for 7,001 moves: a fee of ceil(7001 * 3 %) = 211, the rest to the payee.
            assert_eq!(db.balance(&revenue(payee)).await.expect("balance"), 6_790);
            assert_eq!(db.balance(&PLATFORM).await.expect("balance"), 211);
            // A refused voucher is refused without the journal.
            let lower = payments
                .submit(Operation::Voucher(signed(&key, &channel, 7_000)))
                .await;
            assert!(matches!(
                lower,
                Err(EngineError::Channel(ChannelError::NotIncreasing))
            ));
            // Another operation on the channel folds its waiting steps first.
            payments
                .submit(Operation::Voucher(signed(&key, &channel, 9_000)))
                .await
                .expect("accepted");
            payments
                .submit(Operation::Close {
                    channel: channel.id,
                    by: payer,
                })
                .await
                .expect("closes");
            assert_eq!(db.voucher_journal().await.expect("journal"), vec![]);
            let row = row_of(&db, &channel).await;
            assert_eq!(row.redeemed, Amount(9_000));
            assert_eq!(
                db.balance(&revenue(payee)).await.expect("balance"),
                9_000 - 270
            );
            assert_audited(&db).await;
        }

        /// The channels as far as their transfers reach, audited.
        async fn assert_audited_as_folded(db: &Store) -> usize {
            let transfers = db.all_transfers().await.expect("transfers");
            let (channels, waiting) = db.channels_as_folded().await.expect("channels");
            let report = streamweave_ledger::audit(&transfers, &channels);
            assert!(report.is_clean(), "{:?}", report.violations);
            waiting
        }

        /// Two nodes' stores and engines on one fresh PostgreSQL schema
        /// (`None` without PostgreSQL).
        async fn two_nodes() -> Option<(
            crate::store::suite::PostgresSchema,
            [Store; 2],
            [Payments; 2],
        )> {
            let schema = crate::store::suite::PostgresSchema::create().await?;
            let first_db = Store::postgres(&schema.url).await.expect("store");
            let second_db = Store::postgres(&schema.url).await.expect("store");
            let start = |db: Store| {
                Payments::start(db, PaymentDomain::EMBEDDED, 60_000, true, rounds(WEEK_MS))
            };
            let first = start(first_db.clone()).await.expect("engine");
            let second = start(second_db.clone()).await.expect("engine");
            Some((schema, [first_db, second_db], [first, second]))
        }

        #[tokio::test]
        async fn nodes_sharing_postgres_defer_voucher_steps_in_the_channel_rows() {
            let Some((schema, [first_db, second_db], [first, second])) = two_nodes().await else {
                return;
            };
            let (payer, payee) = (Address::repeat_byte(0xa2), Address::repeat_byte(0xb2));
            let key = SigningKey::from_bytes(&[6; 32]).expect("key");
            let channel = funded_channel(&first, payer, payee, &key).await;
            // Through either node, each over the row the other wrote.
            for (node, amount) in [(&first, 1_000), (&second, 2_500), (&first, 7_001)] {
                let done = node
                    .submit(Operation::Voucher(signed(&key, &channel, amount)))
                    .await
                    .expect("accepted");
                assert!(done.new);
            }
            // An older voucher through the node that saw it last is refused.
            let replayed = second
                .submit(Operation::Voucher(signed(&key, &channel, 2_600)))
                .await;
            assert!(
                matches!(
                    replayed,
                    Err(EngineError::Channel(ChannelError::NotIncreasing))
                ),
                "{replayed:?}"
            );
            // The row holds the step at once; its transfers wait.
            assert_eq!(row_of(&second_db, &channel).await.redeemed, Amount(7_001));
            assert_eq!(first_db.balance(&revenue(payee)).await.expect("balance"), 0);
            assert_eq!(assert_audited_as_folded(&first_db).await, 1);
            // Balances through either node count the waiting steps, without a fold.
            let read = second
                .balances(&[revenue(payee), PLATFORM])
                .await
                .expect("balances");
            assert_eq!(
                read,
                vec![Balance::from(Amount(6_790)), Balance::from(Amount(211))]
            );
            // Without the platform's account, only the rows whose steps can
            // move the accounts read are: the payee's, its channel's escrow;
            // nothing for someone else's revenue.
            let stranger = revenue(Address::repeat_byte(0xc2));
            let escrow = AccountRef::Escrow {
                channel: channel.id,
            };
            let read = first
                .balances(&[stranger, revenue(payee), escrow])
                .await
                .expect("balances");
            let escrowed = first_db.balance(&escrow).await.expect("balance");
            assert_eq!(
                read,
                vec![
                    Balance::ZERO,
                    Balance::from(Amount(6_790)),
                    escrowed
                        .checked_add(-Balance::from(Amount(7_001)))
                        .expect("escrow")
                ]
            );
            assert_eq!(assert_audited_as_folded(&first_db).await, 1);
            // A transfer history folds first: one step's transfers.
            second.fold().await.expect("fold");
            assert_eq!(assert_audited_as_folded(&first_db).await, 0);
            assert_eq!(
                first_db.balance(&revenue(payee)).await.expect("balance"),
                6_790
            );
            let moved = first_db.all_transfers().await.expect("transfers");
            let steps: Vec<&Transfer> = moved
                .iter()
                .filter(|t| t.channel == Some(channel.id) && t.kind != TransferKind::ChannelOpen)
                .collect();
            assert_eq!(steps.len(), 2, "{steps:?}");
            assert!(steps.iter().all(|t| t.id.contains(":7001")), "{steps:?}");
            // Vouchers racing through both nodes: each answered step counted
            // once (their sum is the channel's amount), refused ones nowhere.
            let racing: Vec<_> = (0..24u128)
                .map(|index| {
                    let node = if index % 2 == 0 {
                        first.clone()
                    } else {
                        second.clone()
                    };
                    let voucher = signed(&key, &channel, 8_000 + index * 500);
                    tokio::spawn(async move { node.submit(Operation::Voucher(voucher)).await })
                })
                .collect();
            let mut stepped = 7_001u128;
            let mut highest = 7_001u128;
            for (index, handle) in racing.into_iter().enumerate() {
                match handle.await.expect("task") {
                    Ok(done) => {
                        let amount = 8_000 + index as u128 * 500;
                        let before = done.redeemed_before.expect("before").0;
                        assert!(before < amount);
                        stepped += amount - before;
                        highest = highest.max(amount);
                    }
                    // Planned on a row the other node kept changing, or
                    // below an amount it took: the player sends it again.
                    Err(EngineError::Channel(ChannelError::NotIncreasing))
                    | Err(EngineError::Refused(Refusal::ChannelChanged(_))) => {}
                    Err(err) => panic!("{err}"),
                }
            }
            assert_eq!(stepped, highest);
            assert_eq!(row_of(&first_db, &channel).await.redeemed, Amount(highest));
            // Closing through the other node folds the waiting steps first.
            second
                .submit(Operation::Close {
                    channel: channel.id,
                    by: payer,
                })
                .await
                .expect("closes");
            assert_eq!(assert_audited_as_folded(&first_db).await, 0);
            let fee = (highest * 3).div_ceil(100);
            assert_eq!(
                first_db.balance(&revenue(payee)).await.expect("balance"),
                i128::try_from(highest - fee).expect("small")
            );
            assert_eq!(
                first_db.balance(&PLATFORM).await.expect("balance"),
                i128::try_from(fee).expect("small")
            );
            first_db.pool().close().await;
            second_db.pool().close().await;
            schema.drop_schema().await;
        }

        #[tokio::test]
        async fn a_voucher_over_the_kept_copy_meets_what_another_node_changed() {
            let Some((schema, [first_db, second_db], [first, second])) = two_nodes().await else {
                return;
            };
            let (payer, payee) = (Address::repeat_byte(0xa4), Address::repeat_byte(0xb4));
            let key = SigningKey::from_bytes(&[8; 32]).expect("key");
            let channel = funded_channel(&first, payer, payee, &key).await;
            let voucher = |amount| Operation::Voucher(signed(&key, &channel, amount));
            first.submit(voucher(1_000)).await.expect("accepted");
            // The other node tops the deposit up: the first node's copy
            // still holds 100,000, and a voucher over it is accepted once
            // planned over the row.
            second
                .submit(Operation::TopUp {
                    channel: channel.id,
                    payer,
                    amount: Amount(50_000),
                })
                .await
                .expect("topped up");
            let done = first.submit(voucher(120_000)).await.expect("accepted");
            assert!(done.new);
            assert_eq!(done.redeemed_before, Some(Amount(1_000)));
            // The other node takes a voucher; an older one through the first
            // node (whose copy says 120,000) is refused over the row.
            second.submit(voucher(130_000)).await.expect("accepted");
            let replayed = first.submit(voucher(125_000)).await;
            assert!(
                matches!(
                    replayed,
                    Err(EngineError::Channel(ChannelError::NotIncreasing))
                ),
                "{replayed:?}"
            );
            // Beyond the deposit, even over the row: refused.
            let over = first.submit(voucher(150_001)).await;
            assert!(
                matches!(
                    over,
                    Err(EngineError::Channel(ChannelError::ExceedsDeposit))
                ),
                "{over:?}"
            );
            let row = row_of(&second_db, &channel).await;
            assert_eq!(
                (row.redeemed, row.deposit),
                (Amount(130_000), Amount(150_000))
            );
            second.fold().await.expect("fold");
            assert_eq!(assert_audited_as_folded(&first_db).await, 0);
            first_db.pool().close().await;
            second_db.pool().close().await;
            schema.drop_schema().await;
        }

        #[tokio::test]
        async fn a_deferred_step_never_spans_two_pool_rounds() {
            let Some(schema) = crate::store::suite::PostgresSchema::create().await else {
                return;
            };
            let db = Store::postgres(&schema.url).await.expect("store");
            // Rounds of two seconds; folds only for an ended round (the
            // waiting time is far longer than the test).
            let clock = rounds(2_000);
            let payments =
                Payments::start(db.clone(), PaymentDomain::EMBEDDED, 60_000, true, clock)
                    .await
                    .expect("engine");
            let (payer, payee) = (Address::repeat_byte(0xa3), Address::repeat_byte(0xb3));
            let key = SigningKey::from_bytes(&[7; 32]).expect("key");
            let channel = funded_channel(&payments, payer, payee, &key).await;
            // Early in a round, so both steps of it land in it.
            while now_ms() % 2_000 > 500 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let first_round = clock.round_at(now_ms());
            for amount in [1_000, 2_000] {
                payments
                    .submit(Operation::Voucher(signed(&key, &channel, amount)))
                    .await
                    .expect("accepted");
            }
            while clock.round_at(now_ms()) == first_round {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            payments
                .submit(Operation::Voucher(signed(&key, &channel, 3_000)))
                .await
                .expect("accepted in the next round");
            payments.fold().await.expect("fold");
            let stamped = db.transfers_of(payee, None, 100).await.expect("transfers");
            let round_of = |id: &str| {
                stamped
                    .iter()
                    .filter(|t| t.transfer.id.contains(id))
                    .map(|t| clock.round_at(t.created_at_ms))
                    .collect::<Vec<_>>()
            };
            // The first round's steps as one, stamped in it; the next one's in the next.
            assert_eq!(round_of(":2000"), vec![first_round]);
            assert_eq!(round_of(":3000"), vec![first_round + 1]);
            assert!(round_of(":1000").is_empty());
            assert_eq!(assert_audited_as_folded(&db).await, 0);
            db.pool().close().await;
            schema.drop_schema().await;
        }

        #[tokio::test]
        async fn a_journal_left_by_a_stopped_node_is_folded_on_start_round_by_round() {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = Store::sqlite(dir.path()).await.expect("store");
            let (payer, payee) = (Address::repeat_byte(0xa1), Address::repeat_byte(0xb0));
            let key = SigningKey::from_bytes(&[6; 32]).expect("key");
            let funded = LedgerBatch {
                transfers: vec![deposit("d".into(), payer, Address::ZERO, Amount(1_000_000))],
                ..LedgerBatch::default()
            };
            db.commit(&[funded], 1).await.expect("deposit");
            let (mut channel, opened) = Channel::open(
                opening(payer, payee, key.address()),
                PaymentDomain::EMBEDDED,
                1,
            )
            .expect("opens");
            channel.revision = 3;
            let open = LedgerBatch {
                transfers: opened,
                channels: vec![ChannelWrite::new(None, channel.clone())],
                ..LedgerBatch::default()
            };
            db.commit(&[open], 1).await.expect("open");
            // Steps accepted in rounds 1 and 2 of one-second rounds.
            let step = |seq: i64, amount: u128, accepted_at_ms: i64| JournalEntry {
                seq,
                channel: channel.id,
                amount: Amount(amount),
                signature: signed(&key, &channel, amount).signature,
                accepted_at_ms,
            };
            let journaled = LedgerBatch {
                journal: vec![
                    step(1, 100, 1_200),
                    step(2, 400, 1_900),
                    step(3, 1_000, 2_100),
                ],
                ..LedgerBatch::default()
            };
            db.commit(&[journaled], 2_100).await.expect("journal");
            assert_eq!(
                fold_left_journal(&db, rounds(1_000)).await.expect("folds"),
                4,
                "the next step's sequence number"
            );
            assert_eq!(db.voucher_journal().await.expect("journal"), vec![]);
            let row = row_of(&db, &channel).await;
            assert_eq!(row.redeemed, Amount(1_000));
            assert_eq!(
                row.last_signature,
                Some(step(3, 1_000, 0).signature.to_vec())
            );
            // Each round's transfers are stamped inside it, with the ids of its last step.
            let mut moved: Vec<(String, i64)> = db
                .transfers_of(payee, None, 100)
                .await
                .expect("transfers")
                .into_iter()
                .map(|t| (t.transfer.id, t.created_at_ms))
                .collect();
            moved.sort();
            let id = |amount: u128| format!("voucher:{:#x}:{amount}:r0", channel.id);
            assert_eq!(moved, vec![(id(1_000), 2_100), (id(400), 1_900)]);
            assert_eq!(
                db.balance(&revenue(payee)).await.expect("balance"),
                1_000 - 30
            );
            // Folding again finds nothing; a step already folded (a row a
            // sliced fold left above its mark) is skipped.
            assert_eq!(
                fold_left_journal(&db, rounds(1_000))
                    .await
                    .expect("nothing to fold"),
                1
            );
            let stale = LedgerBatch {
                journal: vec![step(7, 400, 1_900)],
                ..LedgerBatch::default()
            };
            db.commit(&[stale], 3_000).await.expect("journal");
            fold_left_journal(&db, rounds(1_000)).await.expect("folds");
            assert_eq!(row_of(&db, &channel).await.redeemed, Amount(1_000));
            assert_eq!(db.voucher_journal().await.expect("journal"), vec![]);
            assert_audited(&db).await;
        }

        #[test]
        fn folds_take_the_oldest_channels_in_slices_once_they_waited() {
            let (payer, payee) = (Address::repeat_byte(0xa1), Address::repeat_byte(0xb0));
            let mut journal = Journal::new(
                1,
                Arc::new(AtomicUsize::new(0)),
                Arc::new(WaitingView::default()),
                rounds(3_600_000),
            );
            assert_eq!(journal.due(true, 1_600), 0, "nothing waits");
            // Channels whose first steps were accepted 1 ms apart from t = 1,000,
            // each then paid again.
            let opened: Vec<Channel> = (0..FOLD_SLICE as u64 + 4)
                .map(|n| {
                    let mut salt = [0u8; 32];
                    salt[..8].copy_from_slice(&n.to_be_bytes());
                    let mut request = opening(payer, payee, payer);
                    request.salt = B256::from(salt);
                    Channel::open(request, PaymentDomain::EMBEDDED, 1)
                        .expect("opens")
                        .0
                })
                .collect();
            let step = |seq: i64, channel: &Channel, at_ms: i64| JournalEntry {
                seq,
                channel: channel.id,
                amount: Amount(1),
                signature: [0; 65],
                accepted_at_ms: at_ms,
            };
            let mut seq = 1;
            for (n, channel) in opened.iter().enumerate() {
                journal.kept(&step(seq, channel, 1_000 + n as i64), channel);
                seq += 1;
            }
            for channel in &opened {
                journal.kept(&step(seq, channel, 5_000), channel);
                seq += 1;
            }
            journal.next_seq = seq;
            let waited = |n: usize| 1_000 + n as u64 + FOLD_AFTER_MS;
            assert_eq!(journal.steps.load(Ordering::Relaxed), 2 * opened.len());
            assert_eq!(
                journal.due(false, waited(0) - 1),
                0,
                "none waited long enough"
            );
            assert_eq!(journal.due(false, waited(2)), 3, "the three oldest did");
            assert_eq!(
                journal.due(false, waited(opened.len())),
                FOLD_SLICE,
                "a slice at most"
            );
            assert_eq!(
                journal.due(true, 1_600),
                opened.len(),
                "all before another operation"
            );
            // A new round folds all, at once.
            assert_eq!(journal.due(false, 3_600_000), opened.len());
            // Many waiting steps fold the oldest whatever their age.
            journal.steps.store(FOLD_AFTER_VOUCHERS, Ordering::Relaxed);
            assert_eq!(journal.due(false, 1_600), FOLD_SLICE);
            journal.steps.store(2 * opened.len(), Ordering::Relaxed);
            // A slice deletes the rows below the first step still waiting
            // (the next channel's first), and forgets its channels.
            let channels: FastHashMap<B256, Channel> =
                opened.iter().map(|c| (c.id, c.clone())).collect();
            let (batch, stamp_ms) = journal.fold(3, &channels).expect("folds");
            assert_eq!(batch.journal_folded_below, Some(4));
            assert_eq!(batch.channels.len(), 3);
            assert_eq!(stamp_ms, 5_000, "its latest step's time");
            journal.folded(3);
            assert_eq!(journal.steps.load(Ordering::Relaxed), 2 * opened.len() - 6);
            assert_eq!(journal.oldest_first.front(), Some(&opened[3].id));
            // The last slice deletes every row.
            let rest = journal.oldest_first.len();
            let (batch, _) = journal.fold(rest, &channels).expect("folds");
            assert_eq!(batch.journal_folded_below, Some(seq));
            journal.folded(rest);
            assert_eq!(journal.steps.load(Ordering::Relaxed), 0);
            assert_eq!(journal.due(true, 1_600), 0);
        }
    }
}
