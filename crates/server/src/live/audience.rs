//! Viewers of free streams, which need no session: the distinct network
//! addresses that fetched one of the stream's playlists lately (players
//! refresh a live playlist every segment). An estimate for display: viewers
//! behind one address count once. And, in a cluster, the other nodes'
//! counts as they last reported them ([`OtherNodes`]). Time is passed in.

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
        // A viewer already counted (every playlist fetch but its first):
        // its time moves, nothing is allocated, nothing grows.
        if let Some(at) = seen
            .get_mut(stream_id)
            .and_then(|addresses| addresses.get_mut(&address))
        {
            *at = now_ms;
            return;
        }
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
        match seen.get_mut(stream_id) {
            Some(addresses) => addresses.insert(address, now_ms),
            None => seen
                .entry(stream_id.to_string())
                .or_default()
                .insert(address, now_ms),
        };
    }

    /// Every stream's count within the window (streams with none left out).
    pub fn counts(&self, now_ms: i64) -> HashMap<String, usize> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, addresses| {
            addresses.retain(|_, at| now_ms - *at < WATCHING_WINDOW_MS);
            !addresses.is_empty()
        });
        seen.iter()
            .map(|(stream, addresses)| (stream.clone(), addresses.len()))
            .collect()
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

/// How long another node's report counts: it reports every few seconds.
pub const REPORT_FRESH_MS: i64 = 15_000;
/// (stream, node) reports remembered at most.
pub const MAX_REPORTS: usize = 100_000;

/// What a node tells the others of a stream's viewers on it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ViewerReport {
    pub node: String,
    pub count: usize,
}

/// Per node: its count and when it reported it.
type NodeReports = HashMap<String, (usize, i64)>;

/// Other nodes' viewer counts per stream, as they last reported them.
#[derive(Default)]
pub struct OtherNodes {
    reports: Mutex<HashMap<String, NodeReports>>,
}

impl OtherNodes {
    /// Notes a node's count of a stream's viewers (zero forgets it).
    pub fn report(&self, stream_id: &str, report: ViewerReport, now_ms: i64) {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        if report.count == 0 {
            if let Some(nodes) = reports.get_mut(stream_id) {
                nodes.remove(&report.node);
                if nodes.is_empty() {
                    reports.remove(stream_id);
                }
            }
            return;
        }
        if reports.values().map(HashMap::len).sum::<usize>() >= MAX_REPORTS {
            reports.retain(|_, nodes| {
                nodes.retain(|_, (_, at)| now_ms - *at < REPORT_FRESH_MS);
                !nodes.is_empty()
            });
            if reports.values().map(HashMap::len).sum::<usize>() >= MAX_REPORTS {
                return;
            }
        }
        reports
            .entry(stream_id.to_string())
            .or_default()
            .insert(report.node, (report.count, now_ms));
    }

    /// Streams some other node reported viewers of.
    pub fn streams(&self) -> Vec<String> {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.keys().cloned().collect()
    }

    /// The viewers other nodes reported lately for a stream.
    pub fn count(&self, stream_id: &str, now_ms: i64) -> usize {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.get(stream_id).map_or(0, |nodes| {
            nodes
                .values()
                .filter(|(_, at)| now_ms - *at < REPORT_FRESH_MS)
                .map(|(count, _)| count)
                .sum()
        })
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
    fn other_nodes_add_up_while_their_reports_are_fresh() {
        let others = OtherNodes::default();
        let report = |node: &str, count| ViewerReport {
            node: node.into(),
            count,
        };
        others.report("s", report("b", 3), 1_000);
        others.report("s", report("c", 4), 2_000);
        others.report("s", report("b", 5), 3_000);
        assert_eq!(others.count("s", 3_000), 9, "a node's latest report counts");
        assert_eq!(others.count("t", 3_000), 0);
        // C stopped reporting (died): its count goes.
        assert_eq!(others.count("s", 2_000 + REPORT_FRESH_MS), 5);
        others.report("s", report("b", 0), 4_000);
        assert_eq!(others.count("s", 4_000), 4);
        let audience = Audience::default();
        audience.saw("a", ip(1), 1_000);
        audience.saw("b", ip(1), 1_000);
        audience.saw("b", ip(2), 9_000);
        assert_eq!(
            audience.counts(1_000 + WATCHING_WINDOW_MS),
            HashMap::from([("b".to_string(), 1)])
        );
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

    #[test]
    fn a_counted_viewer_stays_counted_when_full() {
        let audience = Audience::default();
        for i in 0..MAX_TRACKED {
            audience.saw("a", IpAddr::from((i as u128).to_be_bytes()), 0);
        }
        audience.saw("a", IpAddr::from(7u128.to_be_bytes()), 10);
        assert_eq!(
            audience.count("a", WATCHING_WINDOW_MS + 5),
            1,
            "its later fetch kept it in the window"
        );
    }
}
