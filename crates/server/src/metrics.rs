//! Prometheus metrics (`GET /metrics`, OpenMetrics text): HTTP requests by
//! route and status with latency, bytes served, vouchers accepted and
//! refused by reason, the payments engine's commits, live streams, ingest
//! latency, media failures and transcode speed, replicas by state,
//! sockets, viewers, gross revenue, messages between nodes and the chain
//! settler's transactions. One registry per process,
//! reachable from every module ([`metrics`]); values that are cheaper to
//! read than to track (sockets, viewers) are set when scraped.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route (`/live/{id}/{rendition}/{file}`), or `unmatched`.
    pub route: Cow<'static, str>,
    pub method: Cow<'static, str>,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `accepted`, or the refusal's problem type.
    pub outcome: String,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_latency: Family<RouteLabels, Histogram>,
    pub http_response_bytes: Counter,
    pub vouchers: Family<OutcomeLabels, Counter>,
    pub engine_commit_seconds: Histogram,
    /// Where an accepted voucher's answer waited, by stage (`lookup`:
    /// its channel and prepay window; `recovery`: queued for and on a
    /// recovery thread; `engine`: grouped, committed and answered).
    pub voucher_stage_seconds: Family<StageLabels, Histogram>,
    /// The accepted outcome's counter and each stage's histogram, looked
    /// up once: every accepted voucher records them.
    accepted_vouchers: Counter,
    voucher_stages: [Histogram; 3],
    pub engine_batch_operations: Histogram,
    /// Folds of the voucher journal into channel rows, balances and transfers.
    pub engine_fold_seconds: Histogram,
    pub live_streams: Gauge,
    pub ingest_to_playlist_seconds: Histogram,
    pub open_websockets: Gauge,
    pub active_viewers: Gauge,
    /// Base units accepted through vouchers (use `rate()` for gross per minute).
    pub gross_base_units: Counter,
    pub videos_processed: Family<OutcomeLabels, Counter>,
    /// Messages to other nodes dropped because NATS could not keep up.
    pub cluster_dropped: Counter,
    /// From another node sending a message to its delivery here, by kind.
    pub cluster_message_delay_seconds: Family<KindLabels, Histogram>,
    /// Live pipelines and video jobs that ended with an error, by kind
    /// (`live`, `video`).
    pub media_failures: Family<KindLabels, Counter>,
    /// Media seconds per wall second of each finished video transcode.
    pub transcode_realtime_factor: Histogram,
    /// Archive replicas by state, as of the replication worker's last round.
    pub replicas: Family<StateLabels, Gauge>,
    /// Failed tries to read, apply or settle on the chain (retried).
    pub chain_errors: Counter,
    /// Escrow logs the ledger does not apply (a foreign policy, a
    /// withdrawal beyond the ledger's balance).
    pub chain_refused: Counter,
    /// Settler transactions by kind and end (`mined`, `failed`).
    pub chain_transactions: Family<TxLabels, Counter>,
}

/// A settler transaction's kind (`settle`, `finalize`) and end.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TxLabels {
    pub kind: String,
    pub state: &'static str,
}

/// A replica's state (`pending`, `stored`, `verified`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// The stages of an accepted voucher's answer, as labelled.
pub const VOUCHER_STAGES: [&str; 3] = ["lookup", "recovery", "engine"];

/// A stage of a voucher's acceptance.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

/// The kind of a cluster message (`media`, `chat`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to about 13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    fn new() -> Metrics {
        let vouchers = Family::<OutcomeLabels, Counter>::default();
        let accepted_vouchers = vouchers
            .get_or_create(&OutcomeLabels {
                outcome: "accepted".to_string(),
            })
            .clone();
        let voucher_stage_seconds =
            Family::<StageLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let voucher_stages = VOUCHER_STAGES.map(|stage| {
            voucher_stage_seconds
                .get_or_create(&StageLabels { stage })
                .clone()
        });
        let metrics = Metrics {
            http_requests: Family::default(),
            http_latency: Family::new_with_constructor(latency_histogram),
            http_response_bytes: Counter::default(),
            vouchers,
            engine_commit_seconds: latency_histogram(),
            voucher_stage_seconds,
            accepted_vouchers,
            voucher_stages,
            engine_batch_operations: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            engine_fold_seconds: latency_histogram(),
            live_streams: Gauge::default(),
            ingest_to_playlist_seconds: latency_histogram(),
            open_websockets: Gauge::default(),
            active_viewers: Gauge::default(),
            gross_base_units: Counter::default(),
            videos_processed: Family::default(),
            cluster_dropped: Counter::default(),
            cluster_message_delay_seconds: Family::new_with_constructor(latency_histogram),
            media_failures: Family::default(),
            // 0.125x to 64x realtime.
            transcode_realtime_factor: Histogram::new(exponential_buckets(0.125, 2.0, 10)),
            replicas: Family::default(),
            chain_errors: Counter::default(),
            chain_refused: Counter::default(),
            chain_transactions: Family::default(),
            registry: Registry::with_prefix("streamweave"),
        };
        metrics.registered()
    }

    /// Registers every metric (they share their values with their clones).
    fn registered(mut self) -> Metrics {
        let registry = &mut self.registry;
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            self.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response's head, by route",
            self.http_latency.clone(),
        );
        registry.register(
            "http_response_bytes",
            "Bytes of response bodies with a known length",
            self.http_response_bytes.clone(),
        );
        registry.register(
            "vouchers",
            "Vouchers by outcome (accepted, or the refusal's problem type)",
            self.vouchers.clone(),
        );
        registry.register(
            "payments_commit_duration_seconds",
            "Durable commits of the payments engine",
            self.engine_commit_seconds.clone(),
        );
        registry.register(
            "voucher_stage_duration_seconds",
            "Where accepted vouchers' answers waited, by stage (lookup, recovery, engine)",
            self.voucher_stage_seconds.clone(),
        );
        registry.register(
            "payments_commit_operations",
            "Operations per commit of the payments engine",
            self.engine_batch_operations.clone(),
        );
        registry.register(
            "payments_journal_fold_duration_seconds",
            "Folds of the voucher journal into channel rows, balances and transfers",
            self.engine_fold_seconds.clone(),
        );
        registry.register(
            "live_streams",
            "Streams live now on this node",
            self.live_streams.clone(),
        );
        registry.register(
            "ingest_to_playlist_seconds",
            "From ffmpeg listing a segment to players seeing it",
            self.ingest_to_playlist_seconds.clone(),
        );
        registry.register(
            "open_websockets",
            "Event and chat WebSockets open now",
            self.open_websockets.clone(),
        );
        registry.register(
            "active_viewers",
            "Paid viewing sessions active now",
            self.active_viewers.clone(),
        );
        registry.register(
            "gross_base_units",
            "Base units accepted through vouchers",
            self.gross_base_units.clone(),
        );
        registry.register(
            "videos_processed",
            "Uploaded videos processed, by outcome",
            self.videos_processed.clone(),
        );
        registry.register(
            "cluster_dropped_messages",
            "Messages between nodes dropped because NATS or this node could not keep up",
            self.cluster_dropped.clone(),
        );
        registry.register(
            "cluster_message_delay_seconds",
            "From another node sending a message (a new segment, chat, an event) to its delivery here",
            self.cluster_message_delay_seconds.clone(),
        );
        registry.register(
            "media_failures",
            "Live pipelines and video jobs that ended with an error, by kind (live, video)",
            self.media_failures.clone(),
        );
        registry.register(
            "transcode_realtime_factor",
            "Media seconds per wall second of each finished video transcode",
            self.transcode_realtime_factor.clone(),
        );
        registry.register(
            "chain_errors",
            "Failed tries to read, apply or settle on the chain (retried)",
            self.chain_errors.clone(),
        );
        registry.register(
            "chain_refused",
            "Escrow logs the ledger does not apply (a foreign policy, a withdrawal beyond the ledger's balance)",
            self.chain_refused.clone(),
        );
        registry.register(
            "chain_transactions",
            "Settler transactions by kind (settle, finalize) and end (mined, failed)",
            self.chain_transactions.clone(),
        );
        registry.register(
            "replicas",
            "Archive replicas by state",
            self.replicas.clone(),
        );
        self
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::warn!("encoding metrics failed");
        }
        text
    }

    /// Counts one HTTP request.
    pub fn observe_request(
        &self,
        labels: RequestLabels,
        elapsed: Duration,
        body_bytes: Option<u64>,
    ) {
        self.http_latency
            .get_or_create(&RouteLabels {
                route: labels.route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.http_requests.get_or_create(&labels).inc();
        if let Some(bytes) = body_bytes {
            self.http_response_bytes.inc_by(bytes);
        }
    }

    /// Counts an accepted voucher with the gross it moved and the time
    /// each of its stages took, in [`VOUCHER_STAGES`] order.
    pub fn observe_accepted_voucher(&self, gross_base_units: u128, stages: [Duration; 3]) {
        self.accepted_vouchers.inc();
        if gross_base_units > 0 {
            self.gross_base_units
                .inc_by(u64::try_from(gross_base_units).unwrap_or(u64::MAX));
        }
        for (histogram, took) in self.voucher_stages.iter().zip(stages) {
            histogram.observe(took.as_secs_f64());
        }
    }

    /// Counts a refused voucher by its problem type.
    pub fn observe_refused_voucher(&self, problem_type: &str) {
        self.vouchers
            .get_or_create(&OutcomeLabels {
                outcome: problem_type.to_string(),
            })
            .inc();
    }
}

/// A request's method, as the metrics label it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestMethod {
    Get,
    Head,
    Post,
}

impl RequestMethod {
    const ALL: [RequestMethod; 3] = [RequestMethod::Get, RequestMethod::Head, RequestMethod::Post];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestMethod::Get => "GET",
            RequestMethod::Head => "HEAD",
            RequestMethod::Post => "POST",
        }
    }
}

/// Statuses whose counters a [`RouteMetrics`] keeps at hand.
const KEPT_STATUSES: [u16; 5] = [200, 206, 304, 402, 404];

/// One route's request metrics, looked up in their families once: an
/// answer of a common status then counts itself with an atomic add and a
/// histogram observation, without hashing its labels or taking a
/// family's lock (a playback route's answers are most of a node's). The
/// series appear when first used, as the families' own do; other
/// statuses go through the family.
pub struct RouteMetrics {
    route: &'static str,
    latency: OnceLock<Histogram>,
    /// By [`RequestMethod`] and [`KEPT_STATUSES`].
    requests: [[OnceLock<Counter>; KEPT_STATUSES.len()]; RequestMethod::ALL.len()],
}

impl RouteMetrics {
    pub const fn new(route: &'static str) -> Self {
        RouteMetrics {
            route,
            latency: OnceLock::new(),
            requests: [const { [const { OnceLock::new() }; KEPT_STATUSES.len()] };
                RequestMethod::ALL.len()],
        }
    }

    /// The route's label.
    pub fn route(&self) -> &'static str {
        self.route
    }

    /// Counts one request of the route, as [`Metrics::observe_request`].
    pub fn observe(
        &self,
        method: RequestMethod,
        status: u16,
        elapsed: Duration,
        body_bytes: Option<u64>,
    ) {
        let metrics = metrics();
        let labels = || RequestLabels {
            route: Cow::Borrowed(self.route),
            method: Cow::Borrowed(method.as_str()),
            status,
        };
        let method_index = method as usize;
        match KEPT_STATUSES.iter().position(|kept| *kept == status) {
            Some(status_index) => self.requests[method_index][status_index]
                .get_or_init(|| metrics.http_requests.get_or_create(&labels()).clone())
                .inc(),
            None => metrics.http_requests.get_or_create(&labels()).inc(),
        };
        self.latency
            .get_or_init(|| {
                let route = RouteLabels {
                    route: Cow::Borrowed(self.route),
                };
                metrics.http_latency.get_or_create(&route).clone()
            })
            .observe(elapsed.as_secs_f64());
        if let Some(bytes) = body_bytes {
            metrics.http_response_bytes.inc_by(bytes);
        }
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routes_kept_counters_are_its_families_series() {
        static ROUTE: RouteMetrics = RouteMetrics::new("/test/route-metrics");
        for _ in 0..2 {
            ROUTE.observe(RequestMethod::Get, 200, Duration::from_millis(1), Some(10));
        }
        ROUTE.observe(RequestMethod::Head, 200, Duration::from_millis(1), None);
        ROUTE.observe(RequestMethod::Get, 503, Duration::from_millis(1), Some(5));
        let text = metrics().encode();
        for needle in [
            "streamweave_http_requests_total{route=\"/test/route-metrics\",method=\"GET\",status=\"200\"} 2",
            "streamweave_http_requests_total{route=\"/test/route-metrics\",method=\"HEAD\",status=\"200\"} 1",
            "streamweave_http_requests_total{route=\"/test/route-metrics\",method=\"GET\",status=\"503\"} 1",
            "streamweave_http_request_duration_seconds_count{route=\"/test/route-metrics\"} 4",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        // Only what was counted is listed.
        assert!(!text.contains("route=\"/test/route-metrics\",method=\"POST\""));
    }

    #[test]
    fn the_text_format_names_every_family() {
        let metrics = Metrics::new();
        metrics.observe_request(
            RequestLabels {
                route: "/live/{id}/master.m3u8".into(),
                method: "GET".into(),
                status: 200,
            },
            Duration::from_millis(3),
            Some(512),
        );
        metrics.observe_accepted_voucher(
            50_000,
            [
                Duration::from_micros(20),
                Duration::from_micros(300),
                Duration::from_millis(2),
            ],
        );
        metrics.observe_refused_voucher("/problems/not-increasing");
        metrics.live_streams.set(2);
        let text = metrics.encode();
        for needle in [
            "streamweave_http_requests_total{route=\"/live/{id}/master.m3u8\",method=\"GET\",status=\"200\"} 1",
            "streamweave_http_response_bytes_total 512",
            "streamweave_vouchers_total{outcome=\"accepted\"} 1",
            "streamweave_vouchers_total{outcome=\"/problems/not-increasing\"} 1",
            "streamweave_gross_base_units_total 50000",
            "streamweave_voucher_stage_duration_seconds_count{stage=\"engine\"} 1",
            "streamweave_live_streams 2",
            "streamweave_http_request_duration_seconds_bucket",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
