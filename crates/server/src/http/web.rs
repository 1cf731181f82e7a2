//! Web pages and browser assets, built by `npm run build --prefix web` and
//! embedded in the binary: `/` (discovery), `/watch/{id}`, `/library`,
//! `/events`, `/events/{id}`, `/market`, `/membership`, `/studio`, `/account`, and `/assets/*` (`streamweave.js` is the web components
//! module other sites embed).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::problem::ApiError;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|headers: HeaderMap| page("index", headers)))
        .route(
            "/watch/{id}",
            get(|headers: HeaderMap| page("watch", headers)),
        )
        .route(
            "/library",
            get(|headers: HeaderMap| page("library", headers)),
        )
        .route(
            "/creators/{address}",
            get(|headers: HeaderMap| page("creator", headers)),
        )
        .route("/events", get(|headers: HeaderMap| page("events", headers)))
        .route(
            "/events/{id}",
            get(|headers: HeaderMap| page("event", headers)),
        )
        .route("/market", get(|headers: HeaderMap| page("market", headers)))
        .route(
            "/membership",
            get(|headers: HeaderMap| page("membership", headers)),
        )
        .route("/studio", get(|headers: HeaderMap| page("studio", headers)))
        .route(
            "/account",
            get(|headers: HeaderMap| page("account", headers)),
        )
        .route("/assets/{file}", get(asset))
}

fn find(path: &str) -> Option<&'static (&'static str, &'static str, &'static str, &'static [u8])> {
    assets::ASSETS.iter().find(|(p, ..)| *p == path)
}

/// Serves an embedded file; revalidated by ETag, so a new binary's assets
/// are picked up at once while unchanged ones cost a 304.
fn serve(path: &str, headers: &HeaderMap) -> Option<Response> {
    let (_, content_type, etag, bytes) = find(path)?;
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, HeaderValue::from_static(etag)),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return Some((StatusCode::NOT_MODIFIED, common).into_response());
    }
    Some(
        (
            common,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            *bytes,
        )
            .into_response(),
    )
}

async fn page(name: &'static str, headers: HeaderMap) -> Response {
    serve(&format!("pages/{name}.html"), &headers)
        .unwrap_or_else(|| ApiError::not_found("no such page").into_response())
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let mut response = serve(&format!("assets/{file}"), &headers)
        .unwrap_or_else(|| ApiError::not_found("no such asset").into_response());
    // The components module is for other sites too.
    if file == "streamweave.js" {
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_page_and_module_is_embedded() {
        for path in [
            "pages/index.html",
            "pages/watch.html",
            "pages/library.html",
            "pages/creator.html",
            "pages/events.html",
            "pages/event.html",
            "pages/market.html",
            "pages/membership.html",
            "pages/studio.html",
            "pages/account.html",
            "assets/streamweave.js",
            "assets/app.js",
            "assets/app.css",
        ] {
            let (_, _, etag, bytes) = super::find(path).unwrap_or_else(|| panic!("{path} missing"));
            assert!(!bytes.is_empty() && etag.len() == 18, "{path}");
        }
    }
}
