//! Where voucher signatures are recovered: below the HTTP workers while
//! the node answers media, on the workers themselves otherwise.
//!
//! Recovering a voucher's signer costs about 30 us of CPU, several times
//! what answering a segment or a playlist does. On the HTTP workers, a burst
//! of vouchers (every viewer of a stream pays when a new segment appears)
//! queues the media answers of that same moment behind it. So while the
//! node answers media (a playlist, a segment, a block or a WebRTC frame in
//! the last [`MEDIA_RECENT_MS`]) the workers hand vouchers to recovery
//! threads `voucher_recovery_niceness` levels below them, which take only
//! what the media answers leave: a voucher pays ahead of the segment it
//! covers (the prepay window), so its answer can wait where a segment's
//! cannot. With no media to yield to, a voucher is recovered where its
//! request is answered, on the worker: handing it to another thread and
//! back would cost two wakes and the preemptions they bring, and
//! yielding would only slow it (to the database's own processes and
//! ffmpeg). At niceness 0 the threads run at the workers' priority and
//! take every voucher: the scheduler shares each core between them and
//! the media answers. With idle cores, nothing waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::thread;
use std::time::Instant;

use streamweave_ledger::{Amount, ChannelError, Signature65, VerifiedVoucher, VoucherSigner};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// How far below the HTTP workers vouchers are recovered while the node
/// answers media, by default (nice levels). docs/benchmarks.md measures
/// what it trades.
pub const DEFAULT_RECOVERY_NICENESS: i32 = 10;

/// How recently media must have been answered for vouchers to be
/// recovered below the workers (a player polls its playlist at least
/// every segment's duration).
pub const MEDIA_RECENT_MS: i64 = 2_000;

/// Vouchers waiting per recovery thread before new ones are refused
/// (about 0.1 s of recovery each).
pub const QUEUE_PER_THREAD: usize = 4096;

/// Vouchers a recovery thread takes from the queue at once (at most about
/// 2 ms of recovery before the first of them is answered).
pub const RECOVERY_BATCH: usize = 64;

/// Why a voucher was not checked.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Its signature is malformed or not the channel's signer's.
    #[error(transparent)]
    Voucher(#[from] ChannelError),
    /// Every recovery thread is behind by a full queue.
    #[error("signature checks are saturated")]
    Busy,
    /// The recovery threads are gone (the server is stopping).
    #[error("signature checks stopped")]
    Stopped,
}

/// When the node last answered media (a playlist, a segment, a block, a
/// WebRTC frame), in milliseconds of a monotonic clock from 1 (0: never);
/// a wall clock set back must not hold vouchers below the workers.
#[derive(Debug)]
struct MediaActivity {
    origin: Instant,
    last_ms: AtomicI64,
}

impl MediaActivity {
    fn new() -> MediaActivity {
        MediaActivity {
            origin: Instant::now(),
            last_ms: AtomicI64::new(0),
        }
    }

    /// Milliseconds since `origin`, from 1.
    fn now_ms(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(1)
    }

    /// Marks media answered at `now_ms` (a read, and a write once a
    /// millisecond at most: every media answer calls it).
    fn answered(&self, now_ms: i64) {
        if self.last_ms.load(Ordering::Relaxed) < now_ms {
            self.last_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    /// Whether media was answered within [`MEDIA_RECENT_MS`] of `now_ms`.
    fn recent(&self, now_ms: i64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        last != 0 && now_ms.saturating_sub(last) <= MEDIA_RECENT_MS
    }
}

struct Job {
    signer: VoucherSigner,
    amount: Amount,
    signature: Signature65,
    reply: oneshot::Sender<Result<VerifiedVoucher, ChannelError>>,
}

/// A checked voucher and where its request waits for it.
type Answer = (
    oneshot::Sender<Result<VerifiedVoucher, ChannelError>>,
    Result<VerifiedVoucher, ChannelError>,
);

/// Where a voucher is recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// On the worker answering its request: no media to yield to.
    Inline,
    /// On the recovery threads (below the workers while media is
    /// answered, beside them at niceness 0).
    Threads,
}

/// Hands vouchers to the recovery threads, or recovers them in place; the
/// threads stop once every handle is dropped.
#[derive(Clone)]
pub struct Verifier {
    jobs: flume::Sender<Job>,
    /// How far below the workers the threads run; 0: beside them, taking
    /// every voucher.
    niceness: i32,
    media: Arc<MediaActivity>,
}

impl Verifier {
    /// Starts `threads` recovery threads (at least one) `niceness` nice
    /// levels below the caller (0: at its priority), on a bounded queue,
    /// and the task on `runtime` that hands their answers to the waiting
    /// requests.
    pub fn start(
        threads: usize,
        niceness: i32,
        runtime: &tokio::runtime::Handle,
    ) -> std::io::Result<Verifier> {
        let threads = threads.max(1);
        let niceness = niceness.max(0);
        let (answered, mut answers) = mpsc::channel::<Vec<Answer>>(threads * 2);
        let name = if niceness > 0 {
            "voucher-yield"
        } else {
            "voucher-recovery"
        };
        let jobs = spawn_threads(threads, niceness, name, &answered)?;
        runtime.spawn(async move {
            while let Some(batch) = answers.recv().await {
                for (reply, checked) in batch {
                    // The request may have gone meanwhile: nothing to answer.
                    let _ = reply.send(checked);
                }
            }
        });
        Ok(Verifier {
            jobs,
            niceness,
            media: Arc::new(MediaActivity::new()),
        })
    }

    /// Marks media (a playlist, a segment, a block, a WebRTC frame)
    /// answered now: vouchers submitted within [`MEDIA_RECENT_MS`] are
    /// recovered below the workers.
    pub fn media_answered(&self) {
        self.media.answered(self.media.now_ms());
    }

    /// Whether media was answered within [`MEDIA_RECENT_MS`].
    #[cfg(test)]
    pub(crate) fn media_recently_answered(&self) -> bool {
        self.media.recent(self.media.now_ms())
    }

    /// A voucher's signature checked against its channel's signer (the
    /// spec's conditions 1 and 2), in place or on a recovery thread.
    pub async fn verify(
        &self,
        signer: VoucherSigner,
        amount: Amount,
        signature: Signature65,
    ) -> Result<VerifiedVoucher, VerifyError> {
        if self.lane(self.media.now_ms()) == Lane::Inline {
            return Ok(signer.verify_parsed(amount, signature)?);
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job {
                signer,
                amount,
                signature,
                reply,
            })
            .map_err(|err| match err {
                flume::TrySendError::Full(_) => VerifyError::Busy,
                flume::TrySendError::Disconnected(_) => VerifyError::Stopped,
            })?;
        Ok(answer.await.map_err(|_| VerifyError::Stopped)??)
    }

    /// Where a voucher submitted at `now_ms` is recovered.
    fn lane(&self, now_ms: i64) -> Lane {
        if self.niceness > 0 && !self.media.recent(now_ms) {
            Lane::Inline
        } else {
            Lane::Threads
        }
    }
}

/// Starts `threads` recovery threads named `name-{index}`, `niceness`
/// levels below the caller, on one bounded queue; each batch's answers go
/// to `answered` in one message.
fn spawn_threads(
    threads: usize,
    niceness: i32,
    name: &str,
    answered: &mpsc::Sender<Vec<Answer>>,
) -> std::io::Result<flume::Sender<Job>> {
    let (jobs, queue) = flume::bounded::<Job>(threads * QUEUE_PER_THREAD);
    for index in 0..threads {
        let queue = queue.clone();
        let answered = answered.clone();
        thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || {
                lower_priority(niceness);
                let mut batch = Vec::with_capacity(RECOVERY_BATCH);
                while let Ok(first) = queue.recv() {
                    batch.push(first);
                    batch.extend(queue.try_iter().take(RECOVERY_BATCH - 1));
                    let checked: Vec<Answer> = batch
                        .drain(..)
                        .map(|job| {
                            let checked = job.signer.verify_parsed(job.amount, job.signature);
                            (job.reply, checked)
                        })
                        .collect();
                    // The whole batch in one message: one wake of a
                    // worker, which (at a higher priority) takes the
                    // core at once, where answering each voucher from
                    // here would wake one per voucher.
                    if answered.blocking_send(checked).is_err() {
                        break;
                    }
                }
            })?;
    }
    Ok(jobs)
}

/// Lowers the calling thread's priority by `niceness` levels. Where that
/// is not permitted the thread runs at the workers' priority: slower media
/// answers under load, nothing wrong.
fn lower_priority(niceness: i32) {
    if let Err(err) = streamweave_client::threads::lower_thread_priority(niceness) {
        warn!(%err, "lowering the voucher recovery threads' priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamweave_ledger::{B256, PaymentDomain, SigningKey};

    fn signer_and_key() -> (VoucherSigner, SigningKey) {
        let key = SigningKey::from_bytes(&[0x42; 32]).expect("key");
        let signer = VoucherSigner {
            channel: B256::repeat_byte(7),
            signer: key.address(),
            domain: PaymentDomain::EMBEDDED,
        };
        (signer, key)
    }

    /// `key`'s voucher for `amount` on `signer`'s channel.
    fn signed(key: &SigningKey, signer: &VoucherSigner, amount: u128) -> Signature65 {
        Signature65::from_bytes(
            &key.sign_digest(signer.domain.voucher_digest(signer.channel, amount)),
        )
        .expect("a signature of our own")
    }

    /// A thread's name and nice level from its `stat` file.
    fn name_and_nice(stat: &str) -> Option<(&str, i32)> {
        let (head, rest) = stat.rsplit_once(')')?;
        let (_, name) = head.split_once('(')?;
        // After the name: state (field 3) ... nice (field 19).
        let nice = rest.split_whitespace().nth(16)?.parse().ok()?;
        Some((name, nice))
    }

    /// The nice levels of this process's threads named `name`.
    fn nice_levels_of(name: &str) -> Vec<i32> {
        let mut levels = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
            let path = task.expect("task").path();
            // A thread that ended meanwhile has no stat to read.
            let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
                continue;
            };
            if let Some((found, nice)) = name_and_nice(&stat)
                && found == name
            {
                levels.push(nice);
            }
        }
        levels
    }

    #[test]
    fn vouchers_go_below_the_workers_only_while_media_is_answered() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let verifier = Verifier::start(1, 10, runtime.handle()).expect("threads");
        let now_ms = 60_000;
        // No media answered yet: on the worker.
        assert_eq!(verifier.lane(now_ms), Lane::Inline);
        verifier.media.answered(now_ms);
        assert_eq!(verifier.lane(now_ms + 500), Lane::Threads);
        assert_eq!(verifier.lane(now_ms + MEDIA_RECENT_MS), Lane::Threads);
        // An older answer does not move the mark back.
        verifier.media.answered(now_ms - 10_000);
        assert_eq!(verifier.lane(now_ms + MEDIA_RECENT_MS), Lane::Threads);
        assert_eq!(verifier.lane(now_ms + MEDIA_RECENT_MS + 1), Lane::Inline);
        // At niceness 0 the threads take every voucher, whatever the media.
        let level = Verifier::start(1, 0, runtime.handle()).expect("threads");
        assert_eq!(level.lane(now_ms), Lane::Threads);
        level.media.answered(now_ms);
        assert_eq!(level.lane(now_ms + 500), Lane::Threads);
    }

    #[tokio::test]
    async fn with_no_media_a_voucher_is_recovered_in_place_and_never_queued() {
        // A queue that no thread takes from: a queued voucher would wait.
        let (jobs, queue) = flume::bounded::<Job>(4);
        let verifier = Verifier {
            jobs,
            niceness: DEFAULT_RECOVERY_NICENESS,
            media: Arc::new(MediaActivity::new()),
        };
        let (signer, key) = signer_and_key();
        let signature = signed(&key, &signer, 7);
        let verified = verifier
            .verify(signer, Amount(7), signature)
            .await
            .expect("recovered in place");
        assert_eq!(verified.amount, Amount(7));
        let wrong = verifier.verify(signer, Amount(8), signature).await;
        assert!(
            matches!(wrong, Err(VerifyError::Voucher(ChannelError::WrongSigner))),
            "{wrong:?}"
        );
        assert!(queue.is_empty());
        // Once media is answered it goes to the threads' queue.
        verifier.media_answered();
        let waiting = tokio::spawn({
            let verifier = verifier.clone();
            async move { verifier.verify(signer, Amount(7), signature).await }
        });
        let job = queue.recv_async().await.expect("queued");
        assert_eq!(job.amount, Amount(7));
        drop(job);
        let stopped = waiting.await.expect("task");
        assert!(matches!(stopped, Err(VerifyError::Stopped)), "{stopped:?}");
    }

    #[tokio::test]
    async fn checks_a_voucher_on_recovery_threads_of_either_priority() {
        let verifier = Verifier::start(
            1,
            DEFAULT_RECOVERY_NICENESS,
            &tokio::runtime::Handle::current(),
        )
        .expect("threads");
        let (signer, key) = signer_and_key();
        let signature = signed(&key, &signer, 1_000);
        let verified = verifier
            .verify(signer, Amount(1_000), signature)
            .await
            .expect("the signer's voucher");
        assert_eq!(verified.amount, Amount(1_000));
        assert_eq!(verified.channel, signer.channel);
        // While media is answered: on the threads below the workers, which
        // lowered themselves before taking it (threads at the workers'
        // priority, this verifier's and any other's, never do).
        verifier.media_answered();
        let below = verifier
            .verify(signer, Amount(1_000), signature)
            .await
            .expect("the signer's voucher, below the workers");
        assert_eq!(below, verified);
        let own_stat = std::fs::read_to_string("/proc/thread-self/stat").expect("own stat");
        let (_, own) = name_and_nice(&own_stat).expect("own nice level");
        assert!(
            nice_levels_of("voucher-yield-0").contains(&(own + DEFAULT_RECOVERY_NICENESS).min(19)),
            "{:?}",
            nice_levels_of("voucher-yield-0")
        );
        // At niceness 0, threads at the workers' priority (the kernel keeps
        // 15 bytes of a thread's name).
        let level = Verifier::start(1, 0, &tokio::runtime::Handle::current()).expect("threads");
        let beside = level
            .verify(signer, Amount(1_000), signature)
            .await
            .expect("the signer's voucher, beside the workers");
        assert_eq!(beside, verified);
        let beside = nice_levels_of("voucher-recover");
        assert!(
            !beside.is_empty() && beside.iter().all(|&nice| nice == own),
            "{beside:?}"
        );
        // The same signature over another amount recovers someone else.
        let wrong = verifier.verify(signer, Amount(999), signature).await;
        assert!(
            matches!(wrong, Err(VerifyError::Voucher(ChannelError::WrongSigner))),
            "{wrong:?}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_an_unanswered_voucher_answers_stopped() {
        // A queue of one that no thread takes from.
        let (jobs, queue) = flume::bounded::<Job>(1);
        let verifier = Verifier {
            jobs,
            niceness: 0,
            media: Arc::new(MediaActivity::new()),
        };
        let (signer, _) = signer_and_key();
        let zero = Signature65::from_bytes(&[0; 65]).expect("well formed");
        let waiting = tokio::spawn({
            let verifier = verifier.clone();
            async move { verifier.verify(signer, Amount(1), zero).await }
        });
        while queue.is_empty() {
            tokio::task::yield_now().await;
        }
        let refused = verifier.verify(signer, Amount(2), zero).await;
        assert!(matches!(refused, Err(VerifyError::Busy)), "{refused:?}");
        // Taken and dropped unanswered, as when the threads stop.
        drop(queue.try_recv().expect("the first voucher queued"));
        let stopped = waiting.await.expect("task");
        assert!(matches!(stopped, Err(VerifyError::Stopped)), "{stopped:?}");
    }
}
