//! Listening sockets for HTTP and RTMP, with room for a crowd's
//! connections that arrive at once.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Connections the kernel completes and holds for `accept` (the kernel
/// caps it at `net.core.somaxconn`, 4096 by default). The standard
/// library's and tokio's `bind` ask for 128: when a thousand viewers
/// connect at once (a stream going live, a load generator starting) the
/// rest of their handshakes are dropped and each one retried only after
/// a second.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with a queue of [`LISTEN_BACKLOG`]
/// connections (`SO_REUSEADDR` set, as `TcpListener::bind` sets it).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_crowd_connecting_at_once_is_held_until_accepted() {
        // More than the 128 the standard `bind` asks for: with that queue
        // the 130th handshake is dropped and its connect times out.
        const CROWD: usize = 300;
        let listener = bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let addr = listener.local_addr().expect("address");
        let connected = tokio::task::spawn_blocking(move || {
            (0..CROWD)
                .map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)))
                .collect::<io::Result<Vec<_>>>()
        })
        .await
        .expect("join")
        .expect("every connection completes before any is accepted");
        for _ in 0..CROWD {
            tokio::time::timeout(Duration::from_secs(5), listener.accept())
                .await
                .expect("queued")
                .expect("accepted");
        }
        drop(connected);
    }
}
