//! `/ipfs/{cid}`: stored files by CID, as an IPFS path gateway answers them.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::problem::{ApiError, Problem};
use super::ranges::{immutable_file, load_file};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_file))
}

/// A stored file's bytes (segments and init files), verified against its CID on read.
#[utoipa::path(
    get,
    path = "/ipfs/{cid}",
    tag = "content",
    params(("cid" = String, Path, description = "CIDv1 (raw or dag-pb, sha2-256)")),
    responses(
        (status = 200, description = "File bytes", content_type = "application/octet-stream"),
        (status = 206, description = "Partial content"),
        (status = 400, description = "Not a supported CID", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Media of a paid stream", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Media of a paid stream", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not stored here", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_file(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cid =
        streamweave_cas::parse_cid(&cid).map_err(|err| ApiError::bad_request(err.to_string()))?;
    // A paid stream's media is not given away by its content address.
    match state.db.cid_is_free(&cid.to_string()).await? {
        None => return Err(ApiError::not_found("no file with this CID is stored here")),
        Some(false) => {
            return Err(ApiError::custom(
                axum::http::StatusCode::PAYMENT_REQUIRED,
                "session-required",
                "Payment required",
                "this file belongs to a paid stream: watch it through a session",
            ));
        }
        Some(true) => {}
    }
    let bytes = load_file(&state, cid)
        .await?
        .ok_or_else(|| ApiError::not_found("no file with this CID is stored here"))?;
    Ok(immutable_file(
        &headers,
        &cid,
        "application/octet-stream",
        bytes,
    ))
}
