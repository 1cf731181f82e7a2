//! Operations: `/metrics` (Prometheus), `/healthz` (the process answers),
//! `/readyz` (the database answers and the node is not draining), and the
//! middleware that counts every request.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::request_fields::{RequestFields, X_FORWARDED_FOR};
use super::{AppState, MAX_OPEN_SOCKETS};
use crate::metrics::{RequestLabels, RequestMethod, RouteMetrics, metrics};
use crate::model::now_ms;

/// In a cluster every answer names the node that gave it
/// (`x-streamweave-node`): operators and balancer checks see where a
/// request went.
pub async fn name_node(State(state): State<AppState>, mut response: Response) -> Response {
    if state.settings.clustered()
        && let Ok(node) = HeaderValue::from_str(state.db.node())
    {
        response.headers_mut().insert("x-streamweave-node", node);
    }
    response
}

/// Counts a request by its route (not its path: ids would explode the
/// label set), method and status, with its latency and body size.
pub async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(Cow::Borrowed("unmatched"), |p| {
            Cow::Owned(p.as_str().to_string())
        });
    let method = Cow::Owned(request.method().as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    metrics().observe_request(
        RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        },
        started.elapsed(),
        bytes,
    );
    response
}

/// Prometheus metrics in the OpenMetrics text format.
pub async fn metrics_text(State(state): State<AppState>) -> Response {
    let metrics = metrics();
    let open = MAX_OPEN_SOCKETS.saturating_sub(state.sockets.available_permits());
    metrics.open_websockets.set(open as i64);
    metrics
        .active_viewers
        .set(state.sessions.active(now_ms()) as i64);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        metrics.encode(),
    )
        .into_response()
}

/// The process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready for traffic: the database answers and the node is not draining.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if state.cluster.as_ref().is_some_and(|c| !c.connected()) {
        return (StatusCode::SERVICE_UNAVAILABLE, "NATS unreachable\n").into_response();
    }
    if let Some(remote) = &state.remote_blocks {
        match tokio::time::timeout(std::time::Duration::from_secs(2), remote.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(%err, "readiness: the blockstore's bucket does not answer");
                return (StatusCode::SERVICE_UNAVAILABLE, "blockstore unavailable\n")
                    .into_response();
            }
            Err(_) => {
                return (StatusCode::SERVICE_UNAVAILABLE, "blockstore too slow\n").into_response();
            }
        }
    }
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.db.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(err)) => {
            tracing::warn!(%err, "readiness: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database too slow\n").into_response(),
    }
}

/// Request ids (`x-request-id`) for requests that come without one: a
/// per-process random prefix and a counter, cheap and unique enough to find
/// a request's lines in the logs.
#[derive(Clone)]
pub struct RequestIds {
    prefix: std::sync::Arc<str>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        use rand::Rng;
        let prefix: String = (0..8)
            .map(|_| rand::rng().sample(rand::distr::Alphanumeric) as char)
            .collect();
        RequestIds {
            prefix: prefix.into(),
            next: Default::default(),
        }
    }
}

impl tower_http::request_id::MakeRequestId for RequestIds {
    fn make_request_id<B>(
        &mut self,
        _request: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// The span of an API request: method, path and its id, so every line it
/// logs carries them. Playback (media, pages, vouchers) gets none: it logs
/// little, and a span per segment or playlist is measurable work.
pub fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let class = super::rate_limit::classify(request.method(), request.uri().path());
    if class == super::rate_limit::RequestClass::Playback {
        return tracing::Span::none();
    }
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        id = %id
    )
}

/// Refuses a request over its address's limit for its class with 429 and
/// `Retry-After`.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let class = super::rate_limit::classify(request.method(), request.uri().path());
    if let Some(refused) = over_limit(&state, &request, class) {
        return refused;
    }
    next.run(request).await
}

/// The 429 answer of a request over its address's limit for `class`.
fn over_limit(
    state: &AppState,
    request: &Request,
    class: super::rate_limit::RequestClass,
) -> Option<Response> {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?
        .0
        .ip();
    over_limit_from(state, peer, request.headers(), class)
}

/// The 429 answer of a request from `peer` with `headers` over its
/// address's limit for `class`.
pub(super) fn over_limit_from(
    state: &AppState,
    peer: std::net::IpAddr,
    headers: &impl RequestFields,
    class: super::rate_limit::RequestClass,
) -> Option<Response> {
    let limits = &state.request_limits;
    if limits.exempt_loopback && peer.is_loopback() {
        return None;
    }
    let forwarded = headers.text(&X_FORWARDED_FOR);
    let ip = super::rate_limit::client_ip(peer, forwarded, &limits.trusted_proxies);
    let wait_ms = limits.check(class, ip, now_ms())?;
    Some(super::problem::ApiError::too_many_requests(wait_ms, "your address").into_response())
}

/// The routes of the playback lane, each with its metrics at hand.
static LIVE_MASTER: RouteMetrics = RouteMetrics::new("/live/{id}/master.m3u8");
pub(super) static LIVE_FILE: RouteMetrics = RouteMetrics::new("/live/{id}/{rendition}/{file}");
static PLAY_MASTER: RouteMetrics = RouteMetrics::new("/play/{session}/master.m3u8");
pub(super) static PLAY_FILE: RouteMetrics = RouteMetrics::new("/play/{session}/{rendition}/{file}");
pub(super) static IPFS_FILE: RouteMetrics = RouteMetrics::new("/ipfs/{cid}");
static IPFS_PATH: RouteMetrics = RouteMetrics::new("/ipfs/{cid}/{*path}");
pub(super) static VOUCHERS: RouteMetrics = RouteMetrics::new("/api/v1/channels/{id}/vouchers");
/// A request of the lane no route matched.
static UNMATCHED: RouteMetrics = RouteMetrics::new("unmatched");
static PLAYBACK_ROUTES: [&RouteMetrics; 7] = [
    &LIVE_MASTER,
    &LIVE_FILE,
    &PLAY_MASTER,
    &PLAY_FILE,
    &IPFS_FILE,
    &IPFS_PATH,
    &VOUCHERS,
];

/// Response headers of every playback answer: any origin may read it, and
/// `Content-Range` (a range's answer) too; nothing more. The answers do
/// not vary by origin (it is `*` for all), so there is no `Vary`, and the
/// API's own exposed headers (tus's) mean nothing here: every byte of a
/// playlist's head is paid for by every viewer every few seconds.
fn playback_cors_headers() -> &'static [(header::HeaderName, HeaderValue)] {
    static HEADERS: std::sync::OnceLock<Vec<(header::HeaderName, HeaderValue)>> =
        std::sync::OnceLock::new();
    HEADERS.get_or_init(|| {
        vec![
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
            (
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("content-length,content-range"),
            ),
        ]
    })
}

/// The playback lane's one middleware (media reads and vouchers): the
/// per-address limit, the count by route (static labels, nothing
/// allocated), the node's name in a cluster, the CORS headers.
pub async fn playback(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route: &'static RouteMetrics = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|matched| {
            PLAYBACK_ROUTES
                .iter()
                .find(|route| route.route() == matched.as_str())
        })
        .copied()
        .unwrap_or(&UNMATCHED);
    let method = request.method().clone();
    let started = Instant::now();
    // A refusal is counted and carries the CORS headers too (a browser
    // player reads its wait).
    let response = match over_limit(&state, &request, super::rate_limit::RequestClass::Playback) {
        Some(refused) => refused,
        None => next.run(request).await,
    };
    finish_playback(&state, route, &method, started, response)
}

/// What every playback answer gets, from the lane's middleware or from
/// the playback loop's shortcut: its metrics (by `route`) and the fixed
/// CORS headers (and the node's name in a cluster).
pub(super) fn finish_playback(
    state: &AppState,
    route: &'static RouteMetrics,
    method: &axum::http::Method,
    started: Instant,
    mut response: Response,
) -> Response {
    let bytes = axum::body::HttpBody::size_hint(response.body()).exact();
    count_playback(state, route, method, started, response.status(), bytes);
    let headers = response.headers_mut();
    for (name, value) in playback_cors_headers() {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(node) = node_header(state) {
        headers.insert("x-streamweave-node", node);
    }
    response
}

/// Counts a playback answer of `status` with a body of `bytes`: its
/// metrics, and media answered (not refused, not a voucher) for the
/// vouchers recovered meanwhile to yield to.
pub(super) fn count_playback(
    state: &AppState,
    route: &'static RouteMetrics,
    method: &axum::http::Method,
    started: Instant,
    status: StatusCode,
    bytes: Option<u64>,
) {
    let method = match *method {
        axum::http::Method::HEAD => RequestMethod::Head,
        axum::http::Method::POST => RequestMethod::Post,
        _ => RequestMethod::Get,
    };
    if method != RequestMethod::Post && (status.is_success() || status == StatusCode::NOT_MODIFIED)
    {
        state.verifier.media_answered();
    }
    route.observe(method, status.as_u16(), started.elapsed(), bytes);
}

/// The node's name in a cluster, for `x-streamweave-node`.
fn node_header(state: &AppState) -> Option<HeaderValue> {
    if !state.settings.clustered() {
        return None;
    }
    HeaderValue::from_str(state.db.node()).ok()
}

/// The header lines of a playback answer with `leading` first, as the
/// playback loop writes them (each ending in CRLF): `leading`, then what
/// [`finish_playback`] adds. Built once, for answers written without a
/// header map.
pub(super) fn playback_fields(
    state: &AppState,
    leading: &[(header::HeaderName, HeaderValue)],
) -> bytes::Bytes {
    let node = node_header(state)
        .map(|node| (header::HeaderName::from_static("x-streamweave-node"), node));
    let mut fields = Vec::new();
    for (name, value) in leading
        .iter()
        .chain(playback_cors_headers())
        .chain(node.as_ref())
    {
        fields.extend_from_slice(name.as_str().as_bytes());
        fields.extend_from_slice(b": ");
        fields.extend_from_slice(value.as_bytes());
        fields.extend_from_slice(b"\r\n");
    }
    fields.into()
}
