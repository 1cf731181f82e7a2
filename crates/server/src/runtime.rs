//! The process's tokio runtime, set for a crowd of connections that are
//! ready at once.
//!
//! tokio's workers look at the I/O driver every 61 polls by default. One
//! look can wake up to 1,024 connections (a thousand viewers' playlist
//! polls), more than a worker's local queue holds (256): the rest
//! overflow into the runtime's global queue, which a busy worker takes
//! from one task at a time every few dozen polls. Meanwhile every look at
//! the driver refills the local queue with the connections just answered,
//! so those in the global queue wait many turns: at 1,000 connections on
//! one core the p99 of a playlist poll was 146-151 ms against nginx's
//! 22-28 ms, at a p50 of 4-8 ms (docs/benchmarks.md, "Fair turns for a
//! crowd"). With the driver
//! looked at once per [`EVENT_INTERVAL`] polls, a worker answers all the
//! connections one look woke before the next look, as nginx answers all
//! that one `epoll_wait` returned: each connection waits at most one
//! round.

use std::io;

/// Polls a worker runs between two looks at the I/O driver and the
/// timers, when it is never idle in between: as many as one look can
/// wake (tokio's `max_io_events_per_tick`, 1,024 by default).
pub const EVENT_INTERVAL: u32 = 1024;

/// The multi-threaded runtime the server runs on (tokio's worker count:
/// one per core, or `TOKIO_WORKER_THREADS`).
pub fn build() -> io::Result<tokio::runtime::Runtime> {
    builder().build()
}

fn builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().event_interval(EVENT_INTERVAL);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    /// Echoes one byte at a time on `connections` socket pairs, the
    /// server ends on one worker of `server` and the clients on a
    /// runtime of their own (first in, first out), until the clients have
    /// had `rounds` answers each on average; returns the 1st and 99th
    /// percentile of the answers clients had by then. Fails if the clients do
    /// not get that far.
    fn answers_per_client(
        mut server: tokio::runtime::Builder,
        connections: usize,
        rounds: u64,
    ) -> (u64, u64) {
        let server = server.worker_threads(1).build().expect("server runtime");
        let clients = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        let answered: Arc<Vec<AtomicU64>> =
            Arc::new((0..connections).map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let mut client_ends = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socket pair");
            ours.set_nonblocking(true).expect("nonblocking");
            theirs.set_nonblocking(true).expect("nonblocking");
            client_ends.push(theirs);
            server.spawn(async move {
                let mut socket = UnixStream::from_std(ours).expect("registered");
                let mut byte = [0u8; 1];
                while socket.read_exact(&mut byte).await.is_ok() {
                    if socket.write_all(&byte).await.is_err() {
                        return;
                    }
                }
            });
        }
        let client_thread = {
            let answered = answered.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                clients.block_on(async move {
                    let mut tasks = Vec::with_capacity(client_ends.len());
                    for (index, end) in client_ends.into_iter().enumerate() {
                        let answered = answered.clone();
                        let stop = stop.clone();
                        tasks.push(tokio::spawn(async move {
                            let mut socket = UnixStream::from_std(end).expect("registered");
                            let mut byte = [1u8; 1];
                            while !stop.load(Ordering::Relaxed) {
                                if socket.write_all(&byte).await.is_err()
                                    || socket.read_exact(&mut byte).await.is_err()
                                {
                                    return;
                                }
                                answered[index].fetch_add(1, Ordering::Relaxed);
                            }
                        }));
                    }
                    for task in tasks {
                        let _ = task.await;
                    }
                })
            })
        };
        let wanted = rounds * connections as u64;
        // A bound on a broken run, not a measure: the rounds take well
        // under a second on a quiet machine.
        let give_up = Instant::now() + Duration::from_secs(120);
        let counts = loop {
            std::thread::sleep(Duration::from_millis(2));
            let counts: Vec<u64> = answered.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            if counts.iter().sum::<u64>() >= wanted || Instant::now() > give_up {
                break counts;
            }
        };
        stop.store(true, Ordering::Relaxed);
        // Dropping the server's runtime closes its ends, which ends the
        // clients waiting for an answer.
        drop(server);
        client_thread.join().expect("client thread");
        assert!(
            counts.iter().sum::<u64>() >= wanted,
            "the clients had {} answers in all within the bound, {wanted} wanted",
            counts.iter().sum::<u64>()
        );
        // The 1st and the 99th percentile: a starved crowd is hundreds of
        // connections, while a machine busy with other work can hold up a
        // few of them for a moment whatever the runtime does.
        let mut sorted = counts;
        sorted.sort_unstable();
        let at = |share: usize| sorted[(sorted.len() - 1) * share / 100];
        (at(1), at(99))
    }

    #[test]
    fn a_crowd_ready_at_once_is_answered_in_turns() {
        // Two descriptors a connection.
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        let (fewest, most) = answers_per_client(builder(), 1000, 30);
        assert!(
            fewest * 2 >= most,
            "answers per client ranged from {fewest} (1st percentile) to {most} (99th)"
        );
    }
}
