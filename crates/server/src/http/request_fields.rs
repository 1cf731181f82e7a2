//! A request's header fields read by name, whether the router's header map
//! holds them or the playback loop reads them where they arrived
//! ([`super::conn::RequestHead`]), so that one answer's code serves both.

use axum::http::{HeaderMap, HeaderName};

/// `X-Forwarded-For`, read from a trusted proxy's requests.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Header fields of a request, read by name.
pub trait RequestFields {
    /// The value of the first field named `name` when it is text (visible
    /// ASCII, spaces and tabs), as `HeaderValue::to_str` reads it; `None`
    /// when there is no such field or its value is not text.
    fn text(&self, name: &HeaderName) -> Option<&str>;

    /// Whether a field named `name` is present, whatever its value.
    fn has(&self, name: &HeaderName) -> bool;
}

impl RequestFields for HeaderMap {
    fn text(&self, name: &HeaderName) -> Option<&str> {
        self.get(name)?.to_str().ok()
    }

    fn has(&self, name: &HeaderName) -> bool {
        self.contains_key(name)
    }
}

/// A field value's bytes as text, by the rule of `HeaderValue::to_str`.
pub fn value_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn a_values_text_is_what_a_header_value_calls_text() {
        for value in [
            &b"bytes=0-99"[..],
            b"",
            b"a\tb c",
            b"caf\xc3\xa9",
            b"~!",
            b"\xff",
        ] {
            let header_value = HeaderValue::from_bytes(value).expect("a valid field value");
            assert_eq!(value_text(value), header_value.to_str().ok(), "{value:?}");
        }
    }
}
