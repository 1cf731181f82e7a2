//! The HTTP side: API, playback and web pages on one axum router.

mod accounts;
pub mod auth;
mod chat;
pub mod conn;
pub mod disk_files;
mod events;
mod ipfs;
pub mod listener;
mod market;
mod memberships;
mod ops;
mod payments;
mod playback;
pub mod problem;
mod ranges;
pub mod rate_limit;
mod request_fields;
mod sessions;
mod streams;
mod thumbnails;
mod ticketing;
mod uploads;
mod videos;
mod web;
mod webrtc;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use streamweave_cas::Blockstore;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use self::ranges::FileAnswer;
use self::request_fields::RequestFields;
use crate::config::Settings;
use crate::live::media_index::{FileCache, MediaIndex};
use crate::metrics::RouteMetrics;
use crate::money::payments::Payments;
use crate::store::Store;

/// Largest JSON body the API reads.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024;
/// WebSockets (events and chat) open at once; more are refused with 503.
pub const MAX_OPEN_SOCKETS: usize = 10_000;

/// A place among the open WebSockets, held for the socket's life.
pub(crate) fn socket_permit(
    state: &AppState,
) -> Result<tokio::sync::OwnedSemaphorePermit, problem::ApiError> {
    state.sockets.clone().try_acquire_owned().map_err(|_| {
        problem::ApiError::custom(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too-many-sockets",
            "Too many connections",
            "the server holds as many WebSockets as it allows; try again later",
        )
    })
}

/// Shared state of all handlers: one pointer, cloned for every request
/// (by each extractor and middleware that takes it).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> AppState {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What the handlers share: settings, stores, the engine, live state.
pub struct Services {
    pub settings: Arc<Settings>,
    pub db: Store,
    pub blockstore: Arc<Blockstore>,
    pub index: Arc<MediaIndex>,
    pub cache: Arc<FileCache>,
    /// CIDs lately found public, served without asking the database.
    pub public_cids: Arc<ipfs::PublicCids>,
    pub ledger: Store,
    pub payments: Payments,
    /// Recovers vouchers' signers on threads of their own.
    pub verifier: crate::money::verifier::Verifier,
    pub sessions: Arc<crate::money::sessions::Sessions>,
    pub events: Arc<crate::live::events::Events>,
    pub stats: Arc<crate::money::stats::WatchStats>,
    /// Vouchers' earnings, announced per stream at most once an interval.
    pub earnings: Arc<crate::live::earnings::EarningsFeed>,
    pub chat: Arc<crate::community::chat::ChatRooms>,
    pub thumbnails: Arc<crate::live::thumbnails::Thumbnails>,
    pub audience: Arc<crate::live::audience::Audience>,
    /// In a cluster, the other nodes' viewer counts.
    pub other_viewers: Arc<crate::live::audience::OtherNodes>,
    /// Bounds the open WebSockets ([`MAX_OPEN_SOCKETS`]).
    pub sockets: Arc<tokio::sync::Semaphore>,
    /// Resumable uploads in progress.
    pub uploads: Arc<crate::uploads::Uploads>,
    /// Uploaded videos' processing.
    pub library: Arc<crate::library::Library>,
    /// Set on SIGTERM: `/readyz` answers 503 so balancers move traffic away.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Pays and shows tips.
    pub tips: crate::community::tips::Tips,
    /// Events: leaderboards and finalization.
    pub ticketing: crate::ticketing::Ticketing,
    /// Memberships, what members are served, the pool's rounds.
    pub memberships: crate::memberships::Memberships,
    /// The bucket holding every block, when blocks live in object storage.
    pub remote_blocks: Option<Arc<crate::archive::remote::S3Blocks>>,
    /// Plays started, written to the streams every few seconds.
    pub views: Arc<crate::live::views::Views>,
    /// The other nodes, when this one is part of a cluster.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Requests per client address, by class.
    pub request_limits: Arc<rate_limit::RequestLimits>,
    /// Sign-in challenges per client address.
    pub challenge_limiter: Arc<crate::http::rate_limit::RateLimiter>,
    /// The escrow on chain, when channels are escrowed there.
    pub chain: Option<Arc<crate::chain::ChainLink>>,
    /// Publishes over WebRTC (WHIP).
    pub webrtc: Arc<crate::live::webrtc::WebrtcIngest>,
}

impl AppState {
    /// A stream's viewers on every node: this node's (sessions, or for a
    /// free stream the addresses fetching its playlists) and what the other
    /// nodes reported lately.
    pub fn viewers(&self, stream_id: &str, free: bool, now_ms: i64) -> usize {
        let here = if free {
            self.audience.count(stream_id, now_ms)
        } else {
            self.sessions.viewers(stream_id, now_ms)
        };
        here + self.other_viewers.count(stream_id, now_ms)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "StreamWeave API",
        description = "Live and on-demand video paid by the second. Errors are RFC 9457 problem+json with a stable `type`."
    ),
    modifiers(&BearerAuth),
    components(schemas(problem::Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every documented route: the router and the OpenAPI document come from here.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(streams::routes())
        .merge(playback::routes())
        .merge(ipfs::routes())
        .merge(auth::routes())
        .merge(payments::routes())
        .merge(payments::voucher_routes())
        .merge(accounts::routes())
        .merge(sessions::routes())
        .merge(sessions::play_routes())
        .merge(chat::routes())
        .merge(thumbnails::routes())
        .merge(uploads::routes())
        .merge(videos::routes())
        .merge(ticketing::routes())
        .merge(market::routes())
        .merge(memberships::routes())
        .merge(webrtc::routes())
}

/// The whole router, and the OpenAPI document generated from the same routes.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api_routes().split_for_parts();
    let openapi_json = Arc::new(openapi.to_pretty_json().unwrap_or_default());
    let app = api
        .route(
            "/api/openapi.json",
            get(move || {
                let body = openapi_json.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        (*body).clone(),
                    )
                }
            }),
        )
        .route("/api/v1/streams/{id}/events", get(events::stream_events))
        .route("/api/v1/accounts/me/events", get(events::account_events))
        .route("/metrics", get(ops::metrics_text))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/api/v1/streams/{id}/chat", get(chat::chat_socket))
        .merge(web::routes())
        .fallback(problem::not_found_fallback)
        .method_not_allowed_fallback(problem::method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::limit,
        ))
        .layer(axum::middleware::from_fn(ops::observe))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            ops::name_node,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(ops::request_span))
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
            ops::RequestIds::default(),
        ))
        .with_state(state.clone());
    // Other sites embed the player (`<sw-player server=...>`): the API and
    // playback answer any origin. Authorization is a bearer token, never a
    // cookie, so no credentials ride along.
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods(tower_http::cors::Any)
        .allow_headers(
            [
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                axum::http::header::RANGE,
            ]
            .into_iter()
            .chain(uploads::REQUEST_HEADERS)
            .collect::<Vec<_>>(),
        )
        .expose_headers(
            [
                axum::http::header::CONTENT_LENGTH,
                axum::http::header::CONTENT_RANGE,
            ]
            .into_iter()
            .chain(uploads::RESPONSE_HEADERS)
            .collect::<Vec<_>>(),
        );
    // The CORS layer answers every OPTIONS itself; an OPTIONS that is not a
    // browser's preflight (tus discovery) goes to the routes instead.
    // Reading media (GET and HEAD of `/live/`, `/ipfs/`, `/play/`) and
    // submitting vouchers take the playback lane: the same handlers with
    // only the work they need.
    let with_cors = app.clone().layer(cors);
    let lane = playback_lane(state);
    Router::new().fallback_service(tower::service_fn(move |request: axum::extract::Request| {
        if in_playback_lane(request.method(), request.uri().path()) {
            return tower::ServiceExt::oneshot(lane.clone(), request);
        }
        let use_cors = request.method() != axum::http::Method::OPTIONS
            || request
                .headers()
                .contains_key(axum::http::header::ACCESS_CONTROL_REQUEST_METHOD);
        let service = if use_cors {
            with_cors.clone()
        } else {
            app.clone()
        };
        tower::ServiceExt::oneshot(service, request)
    }))
}

/// What the playback loop answers without the router: a rendition's
/// files (`GET` or `HEAD` of `/live/{id}/{rendition}/{file}` or
/// `/play/{session}/{rendition}/{file}`, without a query: a blocking
/// reload waits, so it takes the router) and a public file by CID
/// (`/ipfs/{cid}`), when everything they need is in memory: the playlist
/// rendered, the file's bytes cached, a session's channel covering the
/// segment. The same answer the router gives, with the same rate limit,
/// metrics and headers, without its routing, extractors and middleware:
/// players ask for playlists and segments more than for anything else.
pub fn playback_shortcut(state: AppState) -> conn::Shortcut {
    // A playlist's header lines, written as they are by every poll.
    let playlist_fields = ops::playback_fields(&state, &playback::playlist_headers());
    // A whole file's, by its type.
    let file_fields = WholeFileFields::new(&state);
    fn finish(
        state: &AppState,
        route: &'static RouteMetrics,
        method: &Method,
        started: std::time::Instant,
        response: axum::response::Response,
    ) -> Option<conn::Quick> {
        Some(conn::Quick::Response(ops::finish_playback(
            state, route, method, started, response,
        )))
    }
    // A voucher's accepted answer's header lines.
    let json_type = (
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    let voucher_fields = ops::playback_fields(&state, &[json_type]);
    Box::new(move |head, body, peer| {
        let method = head.method();
        if method == Method::POST {
            return payments::voucher_quick(&state, &voucher_fields, head, body, peer);
        }
        if head.query().is_some() || !(method == Method::GET || method == Method::HEAD) {
            return None;
        }
        let started = std::time::Instant::now();
        // `/live` and `/ipfs` know their callers (a creator previews a
        // paid stream; a bad token is refused): a request with a token
        // takes the router.
        let anonymous = bearer_token(head).is_none();
        if let Some(cid) = head.path().strip_prefix("/ipfs/")
            && anonymous
            && !cid.contains('/')
        {
            let answer = ipfs::resident_file(&state, cid, head)?;
            let answer =
                ops::over_limit_from(&state, peer.ip(), head, rate_limit::RequestClass::Playback)
                    .map_or(answer, FileAnswer::Other);
            return file_quick(
                &state,
                &file_fields,
                &ops::IPFS_FILE,
                method,
                started,
                answer,
            );
        }
        let now_ms = crate::model::now_ms();
        let (kind, id, rendition, file) = rendition_file_path(head.path())?;
        if kind == "live" && !anonymous {
            return None;
        }
        let route = match kind {
            "live" => &ops::LIVE_FILE,
            _ => &ops::PLAY_FILE,
        };
        // Known to be ours only once everything the answer needs is found,
        // so that a request the router answers is counted against the
        // limit once (by the lane's middleware); refused, it changes
        // nothing, as there. A file is counted before its gate, which
        // grants the span.
        let over_limit =
            || ops::over_limit_from(&state, peer.ip(), head, rate_limit::RequestClass::Playback);
        if file == "index.m3u8" {
            let (playlist, free_live) = match kind {
                "live" => playback::resident_playlist(&state, id, rendition)?,
                _ => (
                    sessions::resident_playlist(&state, id, rendition, now_ms)?,
                    false,
                ),
            };
            if let Some(refused) = over_limit() {
                return finish(&state, route, method, started, refused);
            }
            if kind == "live" {
                if free_live {
                    state.audience.saw(id, peer.ip(), now_ms);
                }
            } else {
                state.sessions.touch(id, now_ms);
            }
            let bytes = Some(playlist.len() as u64);
            ops::count_playback(&state, route, method, started, StatusCode::OK, bytes);
            return Some(conn::Quick::ok(playlist_fields.clone(), playlist));
        }
        let request = (rendition, file);
        let answer = match kind {
            "live" => playback::resident_file(&state, id, request, head, over_limit, None)?,
            _ => sessions::resident_file(&state, id, request, head, now_ms, over_limit)?,
        };
        file_quick(&state, &file_fields, route, method, started, answer)
    })
}

/// The fixed header lines of a whole file's answer, for each type of
/// file the shortcut answers.
struct WholeFileFields([(&'static str, Bytes); 3]);

impl WholeFileFields {
    fn new(state: &AppState) -> Self {
        WholeFileFields(
            [
                playback::VIDEO_CONTENT_TYPE,
                playback::AUDIO_CONTENT_TYPE,
                ipfs::FILE_CONTENT_TYPE,
            ]
            .map(|content_type| {
                let headers = ranges::whole_file_headers(content_type);
                (content_type, ops::playback_fields(state, &headers))
            }),
        )
    }

    fn of(&self, content_type: &str) -> Option<&Bytes> {
        self.0
            .iter()
            .find(|(known, _)| *known == content_type)
            .map(|(_, fields)| fields)
    }
}

/// The playback loop's answer of a file: a whole file from its fixed
/// header lines; any other answer (a range, a `304`, a refusal) as the
/// router's are.
fn file_quick(
    state: &AppState,
    file_fields: &WholeFileFields,
    route: &'static RouteMetrics,
    method: &Method,
    started: std::time::Instant,
    answer: FileAnswer,
) -> Option<conn::Quick> {
    let fields = match &answer {
        FileAnswer::Whole { content_type, .. } => file_fields.of(content_type),
        FileAnswer::Other(_) => None,
    };
    match (answer, fields) {
        (FileAnswer::Whole { cid, bytes, .. }, Some(fields)) => {
            let len = Some(bytes.len() as u64);
            ops::count_playback(state, route, method, started, StatusCode::OK, len);
            Some(conn::Quick::file(fields.clone(), cid, bytes))
        }
        (answer, _) => Some(conn::Quick::Response(ops::finish_playback(
            state,
            route,
            method,
            started,
            answer.into_response(),
        ))),
    }
}

/// `("live" or "play", id, rendition, file)` of a rendition file's path.
fn rendition_file_path(path: &str) -> Option<(&str, &str, &str, &str)> {
    let rest = path.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (Some(kind @ ("live" | "play")), Some(id), Some(rendition), Some(file), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    (!id.is_empty() && !rendition.is_empty() && !file.is_empty())
        .then_some((kind, id, rendition, file))
}

/// Whether a request is for the playback lane: reading a stream's
/// playlists and media, a session's, or a block by CID, and submitting a
/// voucher.
fn in_playback_lane(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    if method == Method::POST {
        return path.starts_with("/api/v1/channels/") && path.ends_with("/vouchers");
    }
    (method == Method::GET || method == Method::HEAD)
        && (path.starts_with("/live/") || path.starts_with("/play/") || path.starts_with("/ipfs/"))
}

/// The playback routes (the same handlers the full router documents)
/// under one lean middleware ([`ops::playback`]): no request id, no
/// tracing span, CORS answered with fixed headers, metrics by static
/// labels.
fn playback_lane(state: AppState) -> Router {
    let (routes, _) = OpenApiRouter::<AppState>::new()
        .merge(playback::routes())
        .merge(ipfs::routes())
        .merge(sessions::play_routes())
        .merge(payments::voucher_routes())
        .split_for_parts();
    routes
        .fallback(problem::not_found_fallback)
        .method_not_allowed_fallback(problem::method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::playback,
        ))
        .with_state(state)
}

/// The OpenAPI document, for tools and tests.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

pub(crate) fn bearer_token(headers: &impl RequestFields) -> Option<&str> {
    let value = headers.text(&axum::http::header::AUTHORIZATION)?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares secrets without an early exit that would leak the matching prefix length.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shortcut_takes_only_rendition_file_paths() {
        use super::rendition_file_path as path;
        assert_eq!(
            path("/live/abc/720p/index.m3u8"),
            Some(("live", "abc", "720p", "index.m3u8"))
        );
        assert_eq!(
            path("/play/f00d/audio/12.m4s"),
            Some(("play", "f00d", "audio", "12.m4s"))
        );
        for other in [
            "/live/abc/master.m3u8",
            "/live/abc/720p/x/index.m3u8",
            "/live//720p/index.m3u8",
            "/live/abc//index.m3u8",
            "/live/abc/720p/",
            "/ipfs/abc/720p/index.m3u8",
            "/live/abc/720p/index.m3u8/",
            "live/abc/720p/index.m3u8",
        ] {
            assert_eq!(path(other), None, "{other}");
        }
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(super::constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!super::constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!super::constant_time_eq(b"secret", b"secret-token"));
    }

    #[test]
    fn openapi_lists_the_routes() {
        let doc = super::openapi_document();
        for path in [
            "/api/v1/streams",
            "/api/v1/streams/{id}",
            "/api/v1/streams/{id}/segments",
            "/live/{id}/master.m3u8",
            "/ipfs/{cid}",
            "/api/v1/auth/challenge",
            "/api/v1/channels/{id}/vouchers",
            "/api/v1/accounts/{address}/transfers",
            "/api/v1/streams/{id}/sessions",
            "/play/{session}/{rendition}/{file}",
            "/api/v1/streams/{id}/tips",
            "/api/v1/streams/{id}/chat/messages",
            "/api/v1/streams/{id}/chat/mutes/{address}",
            "/api/v1/streams/{id}/thumbnail.jpg",
            "/api/v1/accounts/{address}/channels",
            "/api/v1/accounts/me/revenue-policy",
        ] {
            assert!(
                doc.paths.paths.contains_key(path),
                "{path} missing from OpenAPI"
            );
        }
    }
}
