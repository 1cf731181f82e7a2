//! The HTTP accept loop: budgets for slow and idle clients.
//!
//! axum's own `serve` reads headers without a deadline and accepts without a
//! limit, so clients that trickle headers (slowloris) could hold connections
//! until the file descriptors run out. This loop serves the same router
//! (over [`super::conn`]: our HTTP/1.1 loop for playback, hyper for the
//! rest) with:
//! - a header read timeout (a request's head must arrive within it),
//! - a cap on connections per IP address and in total, the total kept below
//!   the process's file-descriptor limit with a reserve for everything else
//!   the server opens (blocks, ffmpeg's pipes, the database, RTMP),
//! - back-off when `accept` fails (EMFILE) instead of spinning,
//! - graceful shutdown: in-flight requests finish, then connections close.
//!
//! Its socket is bound by [`crate::listen::bind`], with room for a crowd's
//! connections that arrive at once.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use super::conn::Connections;

/// File descriptors kept free for everything but HTTP connections.
pub const FD_RESERVE: u64 = 2048 + super::disk_files::MAX_OPEN_LEAF_FILES as u64;

/// How many HTTP connections the loop holds and for how long it waits.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Open connections at once; more are closed on accept.
    pub max_connections: usize,
    /// Open connections from one IP address (0: no per-address cap).
    pub max_connections_per_ip: usize,
    /// Time a request's head (request line and headers) may take to arrive.
    pub header_read_timeout: Duration,
}

impl ConnectionLimits {
    /// The total cap for this process: `requested`, or what the
    /// file-descriptor limit leaves after [`FD_RESERVE`], whichever is lower.
    /// Raises the soft limit to the hard one first.
    pub fn fit_to_fd_limit(requested: Option<usize>) -> usize {
        let soft = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => limit,
            Err(err) => {
                warn!(%err, "reading the file descriptor limit failed; assuming 1024");
                1024
            }
        };
        let available = usize::try_from(soft.saturating_sub(FD_RESERVE))
            .unwrap_or(usize::MAX)
            .max(64);
        requested.map_or(available, |wanted| wanted.min(available))
    }
}

/// Counts open connections, per address and in total.
#[derive(Default)]
struct OpenConnections {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A connection's place, released on drop.
struct Place {
    open: Arc<Mutex<OpenConnections>>,
    ip: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if let Some(count) = open.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

fn take_place(
    open: &Arc<Mutex<OpenConnections>>,
    ip: IpAddr,
    limits: &ConnectionLimits,
) -> Option<Place> {
    let mut table = open.lock().unwrap_or_else(|p| p.into_inner());
    if table.total >= limits.max_connections {
        return None;
    }
    let from_ip = table.per_ip.get(&ip).copied().unwrap_or(0);
    if limits.max_connections_per_ip > 0 && from_ip >= limits.max_connections_per_ip {
        return None;
    }
    table.total += 1;
    *table.per_ip.entry(ip).or_insert(0) += 1;
    Some(Place {
        open: open.clone(),
        ip,
    })
}

/// Serves `connections` on `listener` until `shutdown` completes, then
/// lets in-flight requests finish (for at most `drain`).
pub async fn serve(
    listener: TcpListener,
    connections: Arc<Connections>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let tracker = tokio_util::task::TaskTracker::new();
    let open = Arc::new(Mutex::new(OpenConnections::default()));
    let mut accept_failures = 0u32;
    let mut refused = 0u64;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => {
                accept_failures = 0;
                accepted
            }
            Err(err) => {
                // EMFILE and friends: wait for connections to close, doubling
                // the wait up to a second, rather than spinning on accept.
                accept_failures = accept_failures.saturating_add(1);
                let backoff_ms = (5u64 << accept_failures.min(8)).min(1000);
                warn!(%err, backoff_ms, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                continue;
            }
        };
        let Some(place) = take_place(&open, peer.ip(), &limits) else {
            refused += 1;
            if refused.is_power_of_two() {
                info!(%peer, refused, "HTTP connection refused: over the connection limits");
            }
            drop(socket);
            continue;
        };
        socket.set_nodelay(true).ok();
        let connections = connections.clone();
        let stopping = stopping.clone();
        tracker.spawn(async move {
            let _place = place;
            super::conn::serve(connections, socket, peer, stopping).await;
        });
    }
    drop(listener);
    stop.send_replace(true);
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        info!("closing HTTP connections still open after the drain period");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            header_read_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn places_are_capped_per_address_and_in_total_and_released() {
        let open = Arc::new(Mutex::new(OpenConnections::default()));
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let limits = limits(3, 2);
        let first = take_place(&open, a, &limits).expect("first");
        let _second = take_place(&open, a, &limits).expect("second");
        assert!(take_place(&open, a, &limits).is_none(), "per-address cap");
        let _third = take_place(&open, b, &limits).expect("other address");
        assert!(take_place(&open, b, &limits).is_none(), "total cap");
        drop(first);
        assert!(take_place(&open, a, &limits).is_some(), "released on drop");
        let open_now = open.lock().unwrap();
        assert_eq!(open_now.total, 2, "the temporary place was released too");
    }

    #[test]
    fn zero_per_address_means_no_per_address_cap() {
        let open = Arc::new(Mutex::new(OpenConnections::default()));
        let a: IpAddr = [127, 0, 0, 2].into();
        let held: Vec<Place> = (0..5)
            .map(|_| take_place(&open, a, &limits(5, 0)).expect("place"))
            .collect();
        assert_eq!(held.len(), 5);
        assert!(take_place(&open, a, &limits(5, 0)).is_none());
    }

    #[test]
    fn the_total_stays_below_the_descriptor_limit() {
        let fitted = ConnectionLimits::fit_to_fd_limit(Some(usize::MAX));
        let soft = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .expect("limit")
            .0;
        assert!((fitted as u64) + FD_RESERVE <= soft.max(64 + FD_RESERVE));
        assert_eq!(ConnectionLimits::fit_to_fd_limit(Some(10)), 10);
    }
}
