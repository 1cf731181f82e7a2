//! Viewers of free streams, which need no session: the distinct network
//! addresses that fetched one of the stream's playlists lately (players
//! refresh a live playlist every segment). An estimate for display: viewers
//! behind one address count once. Time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// How recently a playlist fetch counts as watching.
pub const WATCHING_WINDOW_MS: i64 = 15_000;
/// Addresses remembered across all streams; past this, stale ones are dropped
/// and, if still full, new ones are not counted.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
pub struct Audience {
    seen: Mutex<HashMap<String, HashMap<IpAddr, i64>>>,
}

impl Audience {
    /// Notes that `address` fetched a playlist of `stream_id` at `now_ms`.
    pub fn saw(&self, stream_id: &str, address: IpAddr, now_ms: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let tracked: usize = seen.values().map(HashMap::len).sum();
        if tracked >= MAX_TRACKED {
            for addresses in seen.values_mut() {
                addresses.retain(|_, at| now_ms - *at < WATCHING_WINDOW_MS);
            }
            seen.retain(|_, addresses| !addresses.is_empty());
            if seen.values().map(HashMap::len).sum::<usize>() >= MAX_TRACKED {
                return;
            }
        }
        seen.entry(stream_id.to_string())
            .or_default()
            .insert(address, now_ms);
    }

    /// Distinct addresses that fetched a playlist of `stream_id` within the window.
    pub fn count(&self, stream_id: &str, now_ms: i64) -> usize {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let Some(addresses) = seen.get_mut(stream_id) else {
            return 0;
        };
        addresses.retain(|_, at| now_ms - *at < WATCHING_WINDOW_MS);
        addresses.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn counts_distinct_recent_addresses_per_stream() {
        let audience = Audience::default();
        audience.saw("a", ip(1), 1_000);
        audience.saw("a", ip(1), 2_000);
        audience.saw("a", ip(2), 3_000);
        audience.saw("b", ip(1), 3_000);
        assert_eq!(audience.count("a", 3_000), 2);
        assert_eq!(audience.count("b", 3_000), 1);
        assert_eq!(audience.count("c", 3_000), 0);
        // ip(1) last fetched at 2 s: gone from "a" once 15 s have passed.
        assert_eq!(audience.count("a", 2_000 + WATCHING_WINDOW_MS), 1);
        assert_eq!(audience.count("a", 3_000 + WATCHING_WINDOW_MS), 0);
    }

    #[test]
    fn stays_bounded() {
        let audience = Audience::default();
        for i in 0..MAX_TRACKED {
            let address = IpAddr::from((i as u128).to_be_bytes());
            audience.saw("a", address, 0);
        }
        audience.saw("a", ip(1), 1);
        assert_eq!(
            audience.count("a", 1),
            MAX_TRACKED,
            "full: the newcomer is not counted"
        );
        audience.saw("a", ip(1), WATCHING_WINDOW_MS);
        assert_eq!(
            audience.count("a", WATCHING_WINDOW_MS),
            1,
            "stale entries make room"
        );
    }
}
