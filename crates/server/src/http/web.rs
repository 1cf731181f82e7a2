//! Web pages and browser assets, embedded in the binary.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const WATCH_PAGE: &str = include_str!("../../../../web/pages/watch.html");
const HLS_JS: &[u8] = include_bytes!("../../../../web/node_modules/hls.js/dist/hls.min.js");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/watch/{id}", get(page))
        .route("/assets/hls.min.js", get(hls_js))
}

async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        WATCH_PAGE,
    )
        .into_response()
}

async fn hls_js() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        HLS_JS,
    )
        .into_response()
}
