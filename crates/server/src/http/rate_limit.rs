//! Rate limits: a token bucket per client address and class of request,
//! and per signed-in wallet, bounded in memory. Pure: time is an argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Addresses tracked at once; past it, idle buckets are dropped, and if none
/// is idle the request is refused (the table never grows without bound).
pub const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// A token bucket per address: `per_minute` requests a minute, in bursts of
/// up to `burst`.
pub struct RateLimiter<K = IpAddr> {
    per_minute: u32,
    burst: u32,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens scaled by 60,000 (one token = 60,000 units, refilled at
    /// `per_minute` units a millisecond), so refills stay integers.
    units: u64,
    at_ms: i64,
}

impl<K: std::hash::Hash + Eq + Copy> RateLimiter<K> {
    /// `per_minute` requests a minute per address, bursts of `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_minute: per_minute.max(1),
            burst: burst.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn capacity(&self) -> u64 {
        u64::from(self.burst) * 60_000
    }

    fn refilled(&self, bucket: Bucket, now_ms: i64) -> u64 {
        let elapsed = u64::try_from(now_ms.saturating_sub(bucket.at_ms)).unwrap_or(0);
        bucket
            .units
            .saturating_add(elapsed.saturating_mul(u64::from(self.per_minute)))
            .min(self.capacity())
    }

    /// Takes one request's token for `ip` at `now_ms`; `false` when it has
    /// none left (the caller answers 429).
    pub fn allow(&self, ip: K, now_ms: i64) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&ip) && buckets.len() >= MAX_TRACKED_ADDRESSES {
            let capacity = self.capacity();
            buckets.retain(|_, bucket| self.refilled(*bucket, now_ms) < capacity);
            if buckets.len() >= MAX_TRACKED_ADDRESSES {
                return false;
            }
        }
        let capacity = self.capacity();
        let bucket = buckets.entry(ip).or_insert(Bucket {
            units: capacity,
            at_ms: now_ms,
        });
        let units = self.refilled(*bucket, now_ms);
        if units < 60_000 {
            return false;
        }
        *bucket = Bucket {
            units: units - 60_000,
            at_ms: now_ms,
        };
        true
    }

    /// Milliseconds until `ip` may try again (for `Retry-After`).
    pub fn retry_after_ms(&self, ip: K, now_ms: i64) -> u64 {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bucket) = buckets.get(&ip) else {
            return 0;
        };
        let missing = 60_000u64.saturating_sub(self.refilled(*bucket, now_ms));
        missing.div_ceil(u64::from(self.per_minute))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let limiter = RateLimiter::new(60, 5);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..5 {
            assert!(limiter.allow(ip, 0));
        }
        assert!(!limiter.allow(ip, 0), "burst spent");
        assert_eq!(limiter.retry_after_ms(ip, 0), 1000);
        assert!(limiter.allow(other, 0), "addresses are independent");
        assert!(!limiter.allow(ip, 999));
        assert!(limiter.allow(ip, 1000), "one a second at 60 a minute");
        assert!(!limiter.allow(ip, 1000));
        // Idle long enough, the burst is back, never more.
        for _ in 0..5 {
            assert!(limiter.allow(ip, 3_600_000));
        }
        assert!(!limiter.allow(ip, 3_600_000));
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = RateLimiter::new(1, 1);
        for n in 0..MAX_TRACKED_ADDRESSES as u32 {
            assert!(limiter.allow(IpAddr::from(n.to_be_bytes()), 0));
        }
        // Full of busy buckets: a new address is refused, not added.
        let newcomer: IpAddr = [255, 255, 255, 255].into();
        assert!(!limiter.allow(newcomer, 0));
        // A minute later every bucket is full again, so idle ones make room.
        assert!(limiter.allow(newcomer, 60_000));
        assert!(limiter.buckets.lock().unwrap().len() <= MAX_TRACKED_ADDRESSES);
    }
}

/// What a request is, for its rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// Media, pages, assets, vouchers and upload chunks: what a viewer
    /// paying by the second or a creator uploading does all the time.
    Playback,
    /// API reads.
    Read,
    /// API writes (POST, PUT, PATCH, DELETE).
    Write,
}

/// Sorts a request into its class by method and path.
pub fn classify(method: &axum::http::Method, path: &str) -> RequestClass {
    use axum::http::Method;
    let api = path.starts_with("/api/");
    let voucher = path.starts_with("/api/v1/channels/") && path.ends_with("/vouchers");
    let upload_chunk =
        path.starts_with("/api/v1/uploads/") && (method == Method::PATCH || method == Method::HEAD);
    if !api || voucher || upload_chunk {
        RequestClass::Playback
    } else if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        RequestClass::Read
    } else {
        RequestClass::Write
    }
}

/// The client's address: the TCP peer, or, when the peer is a trusted
/// proxy, the last address in `X-Forwarded-For` that is not one.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted_proxies: &[IpAddr]) -> IpAddr {
    if !trusted_proxies.contains(&peer) {
        return peer;
    }
    forwarded_for
        .into_iter()
        .flat_map(|header| header.rsplit(','))
        .filter_map(|part| part.trim().parse::<IpAddr>().ok())
        .find(|ip| !trusted_proxies.contains(ip))
        .unwrap_or(peer)
}

/// Per-address limits for each class of request, and per wallet.
pub struct RequestLimits {
    playback: Option<RateLimiter>,
    read: Option<RateLimiter>,
    write: Option<RateLimiter>,
    /// API requests of one signed-in wallet, from any address.
    wallet: Option<RateLimiter<streamweave_ledger::Address>>,
    /// Loopback clients are not limited (dev servers: the demo, tests, tools).
    pub exempt_loopback: bool,
    pub trusted_proxies: Vec<IpAddr>,
}

impl RequestLimits {
    /// Limits per minute (0: none) for each class; bursts of a fifth of a
    /// minute's allowance.
    pub fn new(
        playback_per_minute: u32,
        read_per_minute: u32,
        write_per_minute: u32,
        wallet_per_minute: u32,
        exempt_loopback: bool,
        trusted_proxies: Vec<IpAddr>,
    ) -> Self {
        let limiter = |per_minute: u32| {
            (per_minute > 0).then(|| RateLimiter::new(per_minute, (per_minute / 5).max(1)))
        };
        RequestLimits {
            playback: limiter(playback_per_minute),
            read: limiter(read_per_minute),
            write: limiter(write_per_minute),
            wallet: (wallet_per_minute > 0)
                .then(|| RateLimiter::new(wallet_per_minute, (wallet_per_minute / 5).max(1))),
            exempt_loopback,
            trusted_proxies,
        }
    }

    /// `None` when the request may go on; else the milliseconds to wait.
    pub fn check(&self, class: RequestClass, ip: IpAddr, now_ms: i64) -> Option<u64> {
        if self.exempt_loopback && ip.is_loopback() {
            return None;
        }
        let limiter = match class {
            RequestClass::Playback => self.playback.as_ref(),
            RequestClass::Read => self.read.as_ref(),
            RequestClass::Write => self.write.as_ref(),
        }?;
        if limiter.allow(ip, now_ms) {
            None
        } else {
            Some(limiter.retry_after_ms(ip, now_ms).max(1))
        }
    }
}

impl RequestLimits {
    /// `None` when the wallet's API request may go on; else the
    /// milliseconds to wait. `ip` is the client's address (loopback clients
    /// of dev servers are exempt, as from the per-address limits).
    pub fn check_wallet(
        &self,
        wallet: streamweave_ledger::Address,
        ip: Option<IpAddr>,
        now_ms: i64,
    ) -> Option<u64> {
        if self.exempt_loopback && ip.is_some_and(|ip| ip.is_loopback()) {
            return None;
        }
        let limiter = self.wallet.as_ref()?;
        if limiter.allow(wallet, now_ms) {
            None
        } else {
            Some(limiter.retry_after_ms(wallet, now_ms).max(1))
        }
    }
}

#[cfg(test)]
mod request_tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn a_wallet_is_limited_from_any_address() {
        let limits = RequestLimits::new(0, 0, 0, 60, true, Vec::new());
        let wallet = streamweave_ledger::Address::repeat_byte(7);
        let other = streamweave_ledger::Address::repeat_byte(8);
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        for n in 0..12 {
            let ip = if n % 2 == 0 { a } else { b };
            assert_eq!(limits.check_wallet(wallet, Some(ip), 0), None);
        }
        assert_eq!(
            limits.check_wallet(wallet, Some(a), 0),
            Some(1000),
            "burst spent"
        );
        assert_eq!(
            limits.check_wallet(other, Some(a), 0),
            None,
            "wallets are independent"
        );
        assert_eq!(
            limits.check_wallet(wallet, Some([127, 0, 0, 1].into()), 0),
            None,
            "loopback exempt on dev servers"
        );
    }

    #[test]
    fn requests_fall_into_classes() {
        assert_eq!(
            classify(&Method::GET, "/live/abc/360p/3.m4s"),
            RequestClass::Playback
        );
        assert_eq!(classify(&Method::GET, "/"), RequestClass::Playback);
        assert_eq!(
            classify(&Method::POST, "/api/v1/channels/0xab/vouchers"),
            RequestClass::Playback
        );
        assert_eq!(
            classify(&Method::PATCH, "/api/v1/uploads/abc"),
            RequestClass::Playback
        );
        assert_eq!(
            classify(&Method::GET, "/api/v1/streams"),
            RequestClass::Read
        );
        assert_eq!(
            classify(&Method::POST, "/api/v1/streams"),
            RequestClass::Write
        );
        assert_eq!(
            classify(&Method::DELETE, "/api/v1/videos/x"),
            RequestClass::Write
        );
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = [10, 0, 0, 1].into();
        let client: IpAddr = [203, 0, 113, 7].into();
        let header = Some("198.51.100.9, 203.0.113.7");
        // Not a trusted proxy: the header is anyone's to forge.
        assert_eq!(client_ip(client, header, &[proxy]), client);
        // Behind the proxy: the last address it did not add itself.
        assert_eq!(client_ip(proxy, header, &[proxy]), client);
        assert_eq!(client_ip(proxy, Some("garbage"), &[proxy]), proxy);
    }

    #[test]
    fn limits_by_class_with_loopback_exempt_on_dev_servers() {
        let limits = RequestLimits::new(0, 100, 50, 0, true, Vec::new());
        let remote: IpAddr = [203, 0, 113, 7].into();
        for _ in 0..10 {
            assert_eq!(limits.check(RequestClass::Write, remote, 0), None);
        }
        assert!(limits.check(RequestClass::Write, remote, 0).is_some());
        assert_eq!(
            limits.check(RequestClass::Read, remote, 0),
            None,
            "its own bucket"
        );
        assert_eq!(
            limits.check(RequestClass::Playback, remote, 0),
            None,
            "no limit"
        );
        let local: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..100 {
            assert_eq!(limits.check(RequestClass::Write, local, 0), None);
        }
    }
}
