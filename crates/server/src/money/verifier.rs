//! Voucher signatures recovered on threads of their own, beside (or below
//! the priority of) the HTTP workers.
//!
//! Recovering a voucher's signer costs about 30 us of CPU, several times
//! what answering a segment or a playlist does. On the HTTP workers, a burst
//! of vouchers (every viewer of a stream pays when a new segment appears)
//! queues the media answers of that same moment behind it. Here the
//! workers hand the recovery over and go on answering while the scheduler
//! shares the core between them and the recovery threads; at a lower priority
//! (`voucher_recovery_niceness`) the recoveries take only what the workers
//! leave. A voucher pays ahead of the segment it covers (the prepay
//! window), so its answer can wait where a segment's cannot. With idle
//! cores, nothing waits.

use std::thread;

use streamweave_ledger::{Amount, ChannelError, VerifiedVoucher, VoucherSigner};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// How far below the HTTP workers the recovery threads run by default (nice
/// levels). Threads of their own already let a core's scheduler share it
/// between media answers and recoveries instead of answering them in
/// arrival order; lower priority trades the vouchers' own rate for media
/// latency (docs/benchmarks.md measures 0, 5 and 10), and also yields to
/// everything else on the machine (ffmpeg, a local PostgreSQL).
pub const DEFAULT_RECOVERY_NICENESS: i32 = 0;

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

struct Job {
    signer: VoucherSigner,
    amount: Amount,
    signature: Vec<u8>,
    reply: oneshot::Sender<Result<VerifiedVoucher, ChannelError>>,
}

/// A checked voucher and where its request waits for it.
type Answer = (
    oneshot::Sender<Result<VerifiedVoucher, ChannelError>>,
    Result<VerifiedVoucher, ChannelError>,
);

/// Hands vouchers to the recovery threads; they stop once every handle is
/// dropped.
#[derive(Clone)]
pub struct Verifier {
    jobs: flume::Sender<Job>,
}

impl Verifier {
    /// Starts `threads` recovery threads (at least one) with a bounded
    /// queue, `niceness` nice levels below the caller, and the task on
    /// `runtime` that hands their answers to the waiting requests.
    pub fn start(
        threads: usize,
        niceness: i32,
        runtime: &tokio::runtime::Handle,
    ) -> std::io::Result<Verifier> {
        let threads = threads.max(1);
        let (jobs, queue) = flume::bounded::<Job>(threads * QUEUE_PER_THREAD);
        let (answered, mut answers) = mpsc::channel::<Vec<Answer>>(threads * 2);
        for index in 0..threads {
            let queue = queue.clone();
            let answered = answered.clone();
            thread::Builder::new()
                .name(format!("voucher-recovery-{index}"))
                .spawn(move || {
                    lower_priority(niceness);
                    let mut batch = Vec::with_capacity(RECOVERY_BATCH);
                    while let Ok(first) = queue.recv() {
                        batch.push(first);
                        batch.extend(queue.try_iter().take(RECOVERY_BATCH - 1));
                        let checked: Vec<Answer> = batch
                            .drain(..)
                            .map(|job| {
                                let checked = job.signer.verify(job.amount, &job.signature);
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
        runtime.spawn(async move {
            while let Some(batch) = answers.recv().await {
                for (reply, checked) in batch {
                    // The request may have gone meanwhile: nothing to answer.
                    let _ = reply.send(checked);
                }
            }
        });
        Ok(Verifier { jobs })
    }

    /// A voucher's signature checked against its channel's signer (the
    /// spec's conditions 1 and 2), on a recovery thread.
    pub async fn verify(
        &self,
        signer: VoucherSigner,
        amount: Amount,
        signature: Vec<u8>,
    ) -> Result<VerifiedVoucher, VerifyError> {
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

    #[tokio::test]
    async fn checks_a_voucher_on_a_recovery_thread() {
        let verifier = Verifier::start(
            2,
            DEFAULT_RECOVERY_NICENESS,
            &tokio::runtime::Handle::current(),
        )
        .expect("threads");
        let (signer, key) = signer_and_key();
        let signature = key
            .sign_digest(signer.domain.voucher_digest(signer.channel, 1_000))
            .to_vec();
        let verified = verifier
            .verify(signer, Amount(1_000), signature.clone())
            .await
            .expect("the signer's voucher");
        assert_eq!(verified.amount, Amount(1_000));
        assert_eq!(verified.channel, signer.channel);
        // The same signature over another amount recovers someone else.
        let wrong = verifier.verify(signer, Amount(999), signature).await;
        assert!(
            matches!(wrong, Err(VerifyError::Voucher(ChannelError::WrongSigner))),
            "{wrong:?}"
        );
        let malformed = verifier.verify(signer, Amount(1), vec![1, 2, 3]).await;
        assert!(
            matches!(
                malformed,
                Err(VerifyError::Voucher(ChannelError::Signature(_)))
            ),
            "{malformed:?}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_an_unanswered_voucher_answers_stopped() {
        // A queue of one that no thread takes from.
        let (jobs, queue) = flume::bounded::<Job>(1);
        let verifier = Verifier { jobs };
        let (signer, _) = signer_and_key();
        let waiting = tokio::spawn({
            let verifier = verifier.clone();
            async move { verifier.verify(signer, Amount(1), vec![0; 65]).await }
        });
        while queue.is_empty() {
            tokio::task::yield_now().await;
        }
        let refused = verifier.verify(signer, Amount(2), vec![0; 65]).await;
        assert!(matches!(refused, Err(VerifyError::Busy)), "{refused:?}");
        // Taken and dropped unanswered, as when the threads stop.
        drop(queue.try_recv().expect("the first voucher queued"));
        let stopped = waiting.await.expect("task");
        assert!(matches!(stopped, Err(VerifyError::Stopped)), "{stopped:?}");
    }
}
