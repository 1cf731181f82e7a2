//! RFC 9457 problem details: every error the API answers, with a stable `type`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A problem+json body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of error (`/problems/not-found`).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the kind.
    pub title: &'static str,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Members specific to the kind (a 402 names the amount to pay).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The kinds of errors, each with its status and stable type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    NotFound,
    BadRequest,
    Unauthorized,
    Forbidden,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    RangeNotSatisfiable,
    Internal,
    /// A domain error with its own stable slug.
    Custom {
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
    },
}

impl ProblemKind {
    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ProblemKind::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ProblemKind::BadRequest => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            ProblemKind::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
            ),
            ProblemKind::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Not allowed"),
            ProblemKind::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ProblemKind::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            ProblemKind::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ProblemKind::RangeNotSatisfiable => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                "Range not satisfiable",
            ),
            ProblemKind::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
            ProblemKind::Custom {
                status,
                slug,
                title,
            } => (status, slug, title),
        }
    }
}

/// An error answered as problem+json.
#[derive(Debug)]
pub struct ApiError {
    pub kind: ProblemKind,
    pub detail: Option<String>,
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        ApiError {
            kind,
            detail: Some(detail.into()),
            extensions: None,
        }
    }

    /// The problem's stable slug (`not-found`, `insufficient-balance`, ...).
    pub fn slug(&self) -> &'static str {
        self.kind.parts().1
    }

    /// The human-readable explanation.
    pub fn detail(&self) -> &str {
        self.detail.as_deref().unwrap_or("the request failed")
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::NotFound, detail)
    }

    /// 429 with `Retry-After` (and `retry_after_s` in the body).
    pub fn too_many_requests(wait_ms: u64, from: &str) -> Self {
        let wait_s = wait_ms.div_ceil(1000).max(1);
        Self::custom(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-requests",
            "Too many requests",
            format!("too many requests from {from}; try again in {wait_s} s"),
        )
        .with(serde_json::json!({ "retry_after_s": wait_s }))
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.kind.parts().0
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::BadRequest, detail)
    }

    /// Adds problem members (`{"required_amount": ...}`).
    pub fn with(mut self, extensions: serde_json::Value) -> Self {
        if let serde_json::Value::Object(map) = extensions {
            self.extensions = Some(map);
        }
        self
    }

    /// A domain error: `type` is `/problems/{slug}`.
    pub fn custom(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(
            ProblemKind::Custom {
                status,
                slug,
                title,
            },
            detail,
        )
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        tracing::error!("internal error: {err:#}");
        ApiError {
            kind: ProblemKind::Internal,
            detail: None,
            extensions: None,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        anyhow::Error::from(err).into()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let kind = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemKind::UnsupportedMediaType,
            _ => ProblemKind::BadRequest,
        };
        ApiError::new(kind, rejection.body_text())
    }
}

impl ApiError {
    fn into_problem(self) -> (StatusCode, Problem) {
        let (status, slug, title) = self.kind.parts();
        let body = Problem {
            problem_type: format!("/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail: self.detail,
            extensions: self.extensions,
        };
        (status, body)
    }

    /// The problem document, as the HTTP answer's body would be.
    pub fn problem_json(self) -> serde_json::Value {
        serde_json::to_value(self.into_problem().1).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.into_problem();
        let retry_after_s = (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| {
                body.extensions
                    .as_ref()
                    .and_then(|e| e.get("retry_after_s"))
                    .and_then(serde_json::Value::as_u64)
            })
            .flatten();
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after_s
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// A JSON body whose rejections answer problem+json.
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Answer for routes that do not exist.
pub async fn not_found_fallback() -> ApiError {
    ApiError::not_found("no such route")
}

/// Answer for a known route with the wrong method.
pub async fn method_not_allowed_fallback() -> ApiError {
    ApiError::new(
        ProblemKind::MethodNotAllowed,
        "method not allowed on this route",
    )
}
