//! Immutable content responses: ETag by CID, conditional GET and byte ranges.

use axum::Extension;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use streamweave_cas::Cid;

use super::disk_files::ServedFile;
use super::problem::{ApiError, ProblemKind};
use super::request_fields::RequestFields;

/// A file answer decided without awaiting anything: the whole file, as
/// most requests want it (the playback loop writes its head from fixed
/// header lines: [`super::conn::Quick::file`]), or any other answer (a
/// range, a `304`, a refusal).
pub enum FileAnswer {
    Whole {
        cid: Cid,
        content_type: &'static str,
        bytes: Bytes,
    },
    Other(Response),
}

impl FileAnswer {
    /// The answer to a request with `request_headers` for `bytes` (the
    /// file under `cid`): whole unless the request names a range or the
    /// versions it holds.
    pub fn for_request(
        request_headers: &impl RequestFields,
        cid: &Cid,
        content_type: &'static str,
        bytes: Bytes,
    ) -> Self {
        if request_headers.has(&header::RANGE) || request_headers.has(&header::IF_NONE_MATCH) {
            return FileAnswer::Other(immutable_file(request_headers, cid, content_type, bytes));
        }
        FileAnswer::Whole {
            cid: *cid,
            content_type,
            bytes,
        }
    }
}

impl IntoResponse for FileAnswer {
    fn into_response(self) -> Response {
        match self {
            FileAnswer::Whole {
                cid,
                content_type,
                bytes,
            } => immutable_file(&HeaderMap::new(), &cid, content_type, bytes),
            FileAnswer::Other(response) => response,
        }
    }
}

/// The `ETag` header line (with its CRLF) of the file under `cid`, as
/// [`immutable_file`] writes it.
pub fn etag_field(cid: &Cid) -> Vec<u8> {
    format!("etag: \"{cid}\"\r\n").into_bytes()
}

/// The header lines of a whole file's answer that do not depend on the
/// file, in the order [`immutable_file`] inserts them.
pub fn whole_file_headers(content_type: &'static str) -> [(header::HeaderName, HeaderValue); 3] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(IMMUTABLE_CACHE_CONTROL),
        ),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
    ]
}

const IMMUTABLE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// Answers `bytes` (the file under `cid`) honouring `If-None-Match` and a
/// single `Range`; several ranges get the whole file, as RFC 9110 allows.
/// The answer names the file and range it holds ([`ServedFile`]), so that
/// our HTTP/1.1 loop can send them from disk instead.
pub fn immutable_file(
    request_headers: &impl RequestFields,
    cid: &Cid,
    content_type: &'static str,
    bytes: Bytes,
) -> Response {
    let etag = format!("\"{cid}\"");
    let mut headers = HeaderMap::new();
    for (name, value) in whole_file_headers(content_type) {
        headers.insert(name, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if let Some(candidates) = request_headers.text(&header::IF_NONE_MATCH)
        && candidates
            .split(',')
            .any(|c| c.trim() == etag || c.trim() == "*")
    {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let total = bytes.len() as u64;
    if let Some(range) = request_headers.text(&header::RANGE) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &[u8] = b"a segment's bytes";

    fn cid() -> Cid {
        streamweave_cas::file_cid(FILE)
    }

    #[test]
    fn only_a_plain_request_is_answered_whole() {
        let bytes = Bytes::from_static(FILE);
        let plain = FileAnswer::for_request(&HeaderMap::new(), &cid(), "video/mp4", bytes.clone());
        assert!(matches!(plain, FileAnswer::Whole { .. }));
        let asked = [
            (header::RANGE, "bytes=0-1", StatusCode::PARTIAL_CONTENT),
            (header::IF_NONE_MATCH, "\"another\"", StatusCode::OK),
            (header::IF_NONE_MATCH, "*", StatusCode::NOT_MODIFIED),
        ];
        for (name, value, status) in asked {
            let mut headers = HeaderMap::new();
            headers.insert(name.clone(), HeaderValue::from_static(value));
            match FileAnswer::for_request(&headers, &cid(), "video/mp4", bytes.clone()) {
                FileAnswer::Other(response) => assert_eq!(response.status(), status, "{name}"),
                FileAnswer::Whole { .. } => panic!("{name}: {value} answered whole"),
            }
        }
    }

    #[test]
    fn the_fixed_lines_of_a_whole_file_are_its_header_maps() {
        let response = FileAnswer::Whole {
            cid: cid(),
            content_type: "audio/mp4",
            bytes: Bytes::from_static(FILE),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::OK);
        let mut from_map = Vec::new();
        for (name, value) in response.headers() {
            from_map.extend_from_slice(name.as_str().as_bytes());
            from_map.extend_from_slice(b": ");
            from_map.extend_from_slice(value.as_bytes());
            from_map.extend_from_slice(b"\r\n");
        }
        let mut fixed = Vec::new();
        for (name, value) in whole_file_headers("audio/mp4") {
            fixed.extend_from_slice(format!("{name}: ").as_bytes());
            fixed.extend_from_slice(value.as_bytes());
            fixed.extend_from_slice(b"\r\n");
        }
        fixed.extend_from_slice(&etag_field(&cid()));
        assert_eq!(
            String::from_utf8_lossy(&from_map),
            String::from_utf8_lossy(&fixed)
        );
    }
}
