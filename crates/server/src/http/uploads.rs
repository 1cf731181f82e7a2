//! Resumable uploads over the tus 1.0 protocol (core, creation, termination,
//! expiration, checksum with sha256) at `/api/v1/uploads`, for signed-in
//! accounts. tus-js-client in the browser and `streamweave upload` speak it.
//! The state lives in [`crate::uploads`].

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::problem::{ApiError, Problem};
use crate::model::now_ms;
use crate::uploads::{Sha256Checksum, UploadError, UploadInfo, is_upload_id};

/// The protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// Extensions offered.
pub const TUS_EXTENSIONS: &str = "creation,termination,expiration,checksum";

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const TUS_VERSION_HEADER: HeaderName = HeaderName::from_static("tus-version");
const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
const TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");

/// Request headers a browser may send to the upload endpoints (CORS).
pub const REQUEST_HEADERS: [HeaderName; 6] = [
    TUS_RESUMABLE,
    UPLOAD_LENGTH,
    UPLOAD_OFFSET,
    UPLOAD_METADATA,
    UPLOAD_CHECKSUM,
    UPLOAD_DEFER_LENGTH,
];

/// Response headers a browser may read (CORS).
pub const RESPONSE_HEADERS: [HeaderName; 10] = [
    header::LOCATION,
    TUS_RESUMABLE,
    TUS_VERSION_HEADER,
    TUS_EXTENSION,
    TUS_MAX_SIZE,
    TUS_CHECKSUM_ALGORITHM,
    UPLOAD_LENGTH,
    UPLOAD_OFFSET,
    UPLOAD_METADATA,
    UPLOAD_EXPIRES,
];

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(options_uploads, create_upload))
        .routes(routes!(head_upload, patch_upload, delete_upload))
}

fn upload_error(err: UploadError) -> ApiError {
    let (status, slug, title) = match &err {
        UploadError::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
        UploadError::Expired => (StatusCode::GONE, "upload-expired", "Upload expired"),
        UploadError::TooLarge { .. } | UploadError::PastLength => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload-too-large",
            "Upload too large",
        ),
        UploadError::QuotaExceeded { .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload-quota-exceeded",
            "Upload quota exceeded",
        ),
        UploadError::OffsetMismatch { .. } => (
            StatusCode::CONFLICT,
            "upload-offset-mismatch",
            "Wrong offset",
        ),
        UploadError::Busy => (StatusCode::LOCKED, "upload-busy", "Upload busy"),
        UploadError::Incomplete { .. } => (
            StatusCode::CONFLICT,
            "upload-incomplete",
            "Upload incomplete",
        ),
        UploadError::ChecksumMismatch => (
            // tus: 460 Checksum Mismatch.
            StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
            "checksum-mismatch",
            "Checksum mismatch",
        ),
        UploadError::Io(io) => {
            tracing::error!(error = %io, "upload storage failed");
            return ApiError::from(anyhow::anyhow!("upload storage: {io}"));
        }
    };
    ApiError::custom(status, slug, title, err.to_string())
}

/// Adds the headers every tus answer carries.
fn tus_response(status: StatusCode, headers: Vec<(HeaderName, String)>) -> Response {
    let mut response = status.into_response();
    let map = response.headers_mut();
    map.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    map.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            map.insert(name, value);
        }
    }
    response
}

/// A 412 for clients of another protocol version; `None` for ours.
fn tus_refusal(headers: &HeaderMap) -> Option<Response> {
    match headers.get(TUS_RESUMABLE).and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => None,
        _ => {
            let mut response = ApiError::custom(
                StatusCode::PRECONDITION_FAILED,
                "tus-version",
                "Unsupported tus version",
                format!("send Tus-Resumable: {TUS_VERSION}"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(TUS_VERSION_HEADER, HeaderValue::from_static(TUS_VERSION));
            Some(response)
        }
    }
}

fn header_u64(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be a whole number"))),
    }
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs.
pub fn parse_metadata(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut metadata = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.split(' ');
        let key = parts.next().unwrap_or_default();
        let value = parts.next();
        if parts.next().is_some() || key.is_empty() || key.len() > 100 {
            return Err(format!("malformed metadata pair {pair:?}"));
        }
        let value = match value {
            None => String::new(),
            Some(encoded) => {
                let bytes = BASE64
                    .decode(encoded)
                    .map_err(|_| format!("metadata {key:?} is not base64"))?;
                String::from_utf8(bytes).map_err(|_| format!("metadata {key:?} is not UTF-8"))?
            }
        };
        if metadata.insert(key.to_string(), value).is_some() {
            return Err(format!("metadata key {key:?} given twice"));
        }
    }
    if metadata.len() > 32 {
        return Err("at most 32 metadata keys".into());
    }
    Ok(metadata)
}

fn encode_metadata(metadata: &BTreeMap<String, String>) -> String {
    metadata
        .iter()
        .map(|(key, value)| {
            if value.is_empty() {
                key.clone()
            } else {
                format!("{key} {}", BASE64.encode(value))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `Upload-Checksum: sha256 <base64 digest>`.
fn parse_checksum(headers: &HeaderMap) -> Result<Option<Sha256Checksum>, ApiError> {
    let Some(value) = headers.get(UPLOAD_CHECKSUM) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Upload-Checksum is not text"))?;
    let (algorithm, digest) = text
        .split_once(' ')
        .ok_or_else(|| ApiError::bad_request("Upload-Checksum is `sha256 <base64>`"))?;
    if algorithm != "sha256" {
        return Err(ApiError::bad_request(
            "the only checksum algorithm is sha256",
        ));
    }
    let digest: [u8; 32] = BASE64
        .decode(digest)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("the sha256 checksum is 32 bytes in base64"))?;
    Ok(Some(Sha256Checksum(digest)))
}

/// RFC 9110 HTTP date.
fn http_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default()
}

fn info_headers(info: &UploadInfo) -> Vec<(HeaderName, String)> {
    let mut headers = vec![
        (UPLOAD_OFFSET, info.offset.to_string()),
        (UPLOAD_LENGTH, info.length.to_string()),
    ];
    if !info.is_complete() {
        headers.push((UPLOAD_EXPIRES, http_date(info.expires_at_ms)));
    }
    headers
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    if is_upload_id(id) {
        Ok(())
    } else {
        Err(ApiError::not_found("no such upload"))
    }
}

/// What the server supports (tus discovery).
#[utoipa::path(
    options,
    path = "/api/v1/uploads",
    tag = "uploads",
    responses((status = 204, description = "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm"))
)]
async fn options_uploads(State(state): State<AppState>) -> Response {
    tus_response(
        StatusCode::NO_CONTENT,
        vec![
            (TUS_VERSION_HEADER, TUS_VERSION.to_string()),
            (TUS_EXTENSION, TUS_EXTENSIONS.to_string()),
            (
                TUS_MAX_SIZE,
                state.uploads.limits().max_upload_bytes.to_string(),
            ),
            (TUS_CHECKSUM_ALGORITHM, "sha256".to_string()),
        ],
    )
}

/// Start an upload (`Upload-Length`, optional `Upload-Metadata`).
#[utoipa::path(
    post,
    path = "/api/v1/uploads",
    tag = "uploads",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Location names the upload"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Another tus version", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over the size limit or the quota", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_upload(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(response) = tus_refusal(&headers) {
        return Ok(response);
    }
    let owner = format!("{:#x}", caller.account()?);
    if headers.contains_key(UPLOAD_DEFER_LENGTH) {
        return Err(ApiError::bad_request(
            "Upload-Defer-Length is not supported: send Upload-Length",
        ));
    }
    let length = header_u64(&headers, &UPLOAD_LENGTH)?
        .ok_or_else(|| ApiError::bad_request("Upload-Length is required"))?;
    let metadata = match headers.get(UPLOAD_METADATA) {
        None => BTreeMap::new(),
        Some(value) => value
            .to_str()
            .map_err(|_| ApiError::bad_request("Upload-Metadata is not text"))
            .and_then(|text| parse_metadata(text).map_err(ApiError::bad_request))?,
    };
    let info = state
        .uploads
        .create(&owner, length, metadata, now_ms())
        .await
        .map_err(upload_error)?;
    let mut response_headers = info_headers(&info);
    response_headers.push((header::LOCATION, format!("/api/v1/uploads/{}", info.id)));
    Ok(tus_response(StatusCode::CREATED, response_headers))
}

/// How far an upload got (resume from `Upload-Offset`).
#[utoipa::path(
    head,
    path = "/api/v1/uploads/{id}",
    tag = "uploads",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    responses(
        (status = 200, description = "Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires"),
        (status = 404, description = "No such upload"),
        (status = 410, description = "Expired"),
    )
)]
async fn head_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(response) = tus_refusal(&headers) {
        return Ok(response);
    }
    checked_id(&id)?;
    let owner = format!("{:#x}", caller.account()?);
    let info = state
        .uploads
        .get(&id, &owner, now_ms())
        .map_err(upload_error)?;
    let mut response_headers = info_headers(&info);
    if !info.metadata.is_empty() {
        response_headers.push((UPLOAD_METADATA, encode_metadata(&info.metadata)));
    }
    Ok(tus_response(StatusCode::OK, response_headers))
}

/// Send bytes from `Upload-Offset` (`application/offset+octet-stream`).
#[utoipa::path(
    patch,
    path = "/api/v1/uploads/{id}",
    tag = "uploads",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Upload-Offset is the new offset"),
        (status = 409, description = "Upload-Offset is not the upload's offset", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/offset+octet-stream", body = Problem, content_type = "application/problem+json"),
        (status = 460, description = "The chunk does not match Upload-Checksum", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn patch_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some(response) = tus_refusal(&headers) {
        return Ok(response);
    }
    checked_id(&id)?;
    let owner = format!("{:#x}", caller.account()?);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some("application/offset+octet-stream") {
        return Err(ApiError::custom(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the bytes as application/offset+octet-stream",
        ));
    }
    let offset = header_u64(&headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| ApiError::bad_request("Upload-Offset is required"))?;
    let checksum = parse_checksum(&headers)?;
    let info = state
        .uploads
        .append(
            &id,
            &owner,
            offset,
            checksum,
            body.into_data_stream(),
            now_ms(),
        )
        .await
        .map_err(upload_error)?;
    Ok(tus_response(StatusCode::NO_CONTENT, info_headers(&info)))
}

/// Abandon an upload: its bytes are removed.
#[utoipa::path(
    delete,
    path = "/api/v1/uploads/{id}",
    tag = "uploads",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 204, description = "Removed"), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn delete_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(response) = tus_refusal(&headers) {
        return Ok(response);
    }
    checked_id(&id)?;
    let owner = format!("{:#x}", caller.account()?);
    state
        .uploads
        .remove(&id, &owner)
        .await
        .map_err(upload_error)?;
    Ok(tus_response(StatusCode::NO_CONTENT, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_bad_pairs_are_refused() {
        let parsed =
            parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
                .unwrap();
        assert_eq!(parsed["filename"], "world_domination_plan.pdf");
        assert_eq!(parsed["is_confidential"], "");
        assert_eq!(parse_metadata(&encode_metadata(&parsed)).unwrap(), parsed);
        assert!(parse_metadata("a b c").is_err());
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata("a,a").is_err());
        assert!(parse_metadata("").unwrap().is_empty());
    }

    #[test]
    fn dates_are_http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
