//! Per-address rate limits for unauthenticated endpoints that write
//! (sign-in challenges): a token bucket per IP address, bounded in memory.
//! Pure: time is an argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Addresses tracked at once; past it, idle buckets are dropped, and if none
/// is idle the request is refused (the table never grows without bound).
pub const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// A token bucket per address: `per_minute` requests a minute, in bursts of
/// up to `burst`.
pub struct RateLimiter {
    per_minute: u32,
    burst: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens scaled by 60,000 (one token = 60,000 units, refilled at
    /// `per_minute` units a millisecond), so refills stay integers.
    units: u64,
    at_ms: i64,
}

impl RateLimiter {
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
    pub fn allow(&self, ip: IpAddr, now_ms: i64) -> bool {
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
    pub fn retry_after_ms(&self, ip: IpAddr, now_ms: i64) -> u64 {
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
