//! Immutable content responses: ETag by CID, conditional GET and byte ranges.

use axum::Extension;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use streamweave_cas::Cid;

use super::disk_files::ServedFile;
use super::problem::{ApiError, ProblemKind};

/// Answers `bytes` (the file under `cid`) honouring `If-None-Match` and a
/// single `Range`; several ranges get the whole file, as RFC 9110 allows.
/// The answer names the file and range it holds ([`ServedFile`]), so that
/// our HTTP/1.1 loop can send them from disk instead.
pub fn immutable_file(
    request_headers: &HeaderMap,
    cid: &Cid,
    content_type: &'static str,
    bytes: Bytes,
) -> Response {
    let etag = format!("\"{cid}\"");
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if let Some(candidates) = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && candidates
            .split(',')
            .any(|c| c.trim() == etag || c.trim() == "*")
    {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let total = bytes.len() as u64;
    let range = request_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    if let Some(range) = range {
        match http_range_header::parse_range_header(range).and_then(|r| r.validate(total)) {
            Ok(ranges) if ranges.len() == 1 => {
                let (start, end) = (*ranges[0].start(), *ranges[0].end());
                if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
                // validate() guarantees start <= end < total.
                let part = bytes.slice(start as usize..=end as usize);
                let served = ServedFile {
                    cid: *cid,
                    start,
                    len: end - start + 1,
                };
                return (
                    StatusCode::PARTIAL_CONTENT,
                    headers,
                    Extension(served),
                    Body::from(part),
                )
                    .into_response();
            }
            Ok(_) => {}
            Err(_) => {
                let mut response = ApiError::new(
                    ProblemKind::RangeNotSatisfiable,
                    format!("file has {total} bytes"),
                )
                .into_response();
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                return response;
            }
        }
    }
    let served = ServedFile {
        cid: *cid,
        start: 0,
        len: total,
    };
    (
        StatusCode::OK,
        headers,
        Extension(served),
        Body::from(bytes),
    )
        .into_response()
}

/// Reads a file through the cache, then the blockstore (one read for all
/// the requests that want it meanwhile).
pub async fn load_file(state: &super::AppState, cid: Cid) -> Result<Option<Bytes>, ApiError> {
    let loaded = state.cache.get_or_read(&state.blockstore, cid).await;
    Ok(loaded.map_err(anyhow::Error::msg)?)
}
