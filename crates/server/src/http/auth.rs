//! Sign-In with Ethereum and who a request is: `/api/v1/auth/*` and the
//! [`Caller`] extractor (the operator token, or a session token from login).

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use streamweave_ledger::{Address, SiweMessage};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::problem::{ApiError, ApiJson, Problem, ProblemKind};
use super::request_fields::{RequestFields, X_FORWARDED_FOR};
use super::{AppState, bearer_token, constant_time_eq};
use crate::model::now_ms;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(challenge))
        .routes(routes!(login))
        .routes(routes!(logout))
}

/// How long a challenge may be signed.
const CHALLENGE_TTL_MS: i64 = 5 * 60 * 1000;
/// How long a session token lasts.
const TOKEN_TTL_MS: i64 = 24 * 3600 * 1000;

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The operator token, or an admin account.
    Admin(Option<Address>),
    /// A signed-in account.
    User(Address),
}

impl Caller {
    /// The account, if the caller is one.
    pub fn address(&self) -> Option<Address> {
        match self {
            Caller::Admin(address) => *address,
            Caller::User(address) => Some(*address),
        }
    }

    /// Whether the caller may act for `address`.
    pub fn may_act_for(&self, address: Address) -> bool {
        matches!(self, Caller::Admin(_)) || self.address() == Some(address)
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin(_))
    }

    /// The caller's account, or 403 for the bare operator token.
    pub fn account(&self) -> Result<Address, ApiError> {
        self.address()
            .ok_or_else(|| ApiError::new(ProblemKind::Forbidden, "sign in with a wallet for this"))
    }
}

pub fn token_hash(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// `Option<Caller>`: no token is `None`; a token that does not check out is still refused.
impl axum::extract::OptionalFromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        if bearer_token(&parts.headers).is_none() {
            return Ok(None);
        }
        <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            ApiError::new(
                ProblemKind::Unauthorized,
                "send Authorization: Bearer TOKEN",
            )
        })?;
        let caller = caller_for_token(state, token).await?;
        // A wallet's API requests are limited wherever they come from
        // (playback and vouchers have their own, generous, limits).
        if let Some(address) = caller.address()
            && super::rate_limit::classify(&parts.method, parts.uri.path())
                != super::rate_limit::RequestClass::Playback
        {
            let limits = &state.request_limits;
            let ip = parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| {
                    let forwarded = parts.headers.text(&X_FORWARDED_FOR);
                    super::rate_limit::client_ip(info.0.ip(), forwarded, &limits.trusted_proxies)
                });
            if let Some(wait_ms) = limits.check_wallet(address, ip, now_ms()) {
                return Err(ApiError::too_many_requests(wait_ms, "this wallet"));
            }
        }
        Ok(caller)
    }
}

/// Who a bearer token (operator token or session token) stands for.
pub async fn caller_for_token(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if let Some(admin) = state.settings.admin_token.as_deref()
        && constant_time_eq(token.as_bytes(), admin.as_bytes())
    {
        return Ok(Caller::Admin(None));
    }
    let address = state
        .ledger
        .token_address(&token_hash(token), now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ProblemKind::Unauthorized,
                "unknown, expired or revoked token",
            )
        })?;
    if state.settings.admins.contains(&address) {
        Ok(Caller::Admin(Some(address)))
    } else {
        Ok(Caller::User(address))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The account that will sign in (0x + 40 hex).
    #[schema(value_type = String)]
    pub address: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChallengeResponse {
    /// The EIP-4361 message to sign with `personal_sign`, exactly as given.
    pub message: String,
    pub nonce: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// Parses an address, accepting lower-case or a valid EIP-55 checksum.
pub fn parse_address(text: &str) -> Result<Address, ApiError> {
    let hex = text
        .strip_prefix("0x")
        .ok_or_else(|| ApiError::bad_request("addresses start with 0x"))?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request("an address is 0x and 40 hex digits"));
    }
    let address: Address = text
        .parse()
        .map_err(|_| ApiError::bad_request("invalid address"))?;
    let mixed =
        hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    if mixed && address.to_checksum(None) != text {
        return Err(ApiError::bad_request(
            "address checksum (EIP-55) does not match",
        ));
    }
    Ok(address)
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn site(state: &AppState) -> (String, String) {
    let uri = state.settings.public_url.clone();
    let domain = uri
        .split_once("://")
        .map_or(uri.as_str(), |(_, rest)| rest)
        .to_string();
    (domain, uri)
}

/// Ask for a sign-in message.
#[utoipa::path(
    post,
    path = "/api/v1/auth/challenge",
    tag = "auth",
    request_body = ChallengeRequest,
    responses(
        (status = 200, body = ChallengeResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many challenges from this address", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn challenge(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ApiJson(body): ApiJson<ChallengeRequest>,
) -> Result<Json<ChallengeResponse>, ApiError> {
    let address = parse_address(&body.address)?;
    // Each challenge is a row: bounded per client address.
    if let Some(axum::Extension(axum::extract::ConnectInfo(peer))) = peer {
        let now = now_ms();
        if !state.challenge_limiter.allow(peer.ip(), now) {
            let wait_s = state
                .challenge_limiter
                .retry_after_ms(peer.ip(), now)
                .div_ceil(1000)
                .max(1);
            return Err(ApiError::custom(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
                format!("too many sign-in challenges from your address; try again in {wait_s} s"),
            ));
        }
    }
    let nonce: String = {
        let mut rng = rand::rng();
        (0..16)
            .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
            .collect()
    };
    let now = now_ms();
    let expires_at_ms = now + CHALLENGE_TTL_MS;
    let (domain, uri) = site(&state);
    let message = SiweMessage {
        domain,
        address,
        statement: Some("Sign in to StreamWeave.".into()),
        uri,
        chain_id: state.payments.domain.chain_id,
        nonce: nonce.clone(),
        issued_at_ms: u64::try_from(now).unwrap_or(0),
        expires_at_ms: Some(u64::try_from(expires_at_ms).unwrap_or(0)),
    }
    .to_text();
    state
        .ledger
        .insert_challenge(&nonce, address, &message, expires_at_ms)
        .await?;
    Ok(Json(ChallengeResponse {
        message,
        nonce,
        expires_at: rfc3339(expires_at_ms),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub message: String,
    /// 65-byte `personal_sign` signature, 0x-hex.
    pub signature: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer TOKEN`.
    pub token: String,
    #[schema(value_type = String)]
    pub address: Address,
    pub expires_at: String,
}

/// Sign in with a signed challenge.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 401, description = "Reused, expired, foreign or tampered message, or a bad signature", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let refuse = |detail: &str| ApiError::new(ProblemKind::Unauthorized, detail.to_string());
    let parsed = SiweMessage::parse(&body.message).map_err(|err| refuse(&err.to_string()))?;
    let unknown = || refuse("unknown or already used nonce");
    let (issued, expires_at_ms) = state
        .ledger
        .challenge(&parsed.nonce)
        .await?
        .ok_or_else(unknown)?;
    let now = now_ms();
    let answer = answering_address(&state, &body, &issued, expires_at_ms, now);
    let token = answer.is_ok().then(new_token);
    let expires = now + TOKEN_TTL_MS;
    let stored = match (&answer, &token) {
        (Ok(address), Some(token)) => Some((token_hash(token), *address)),
        _ => None,
    };
    // Single use: the challenge is consumed whatever the answer, in the
    // same commit as the token a good answer earns.
    let consumed = state
        .ledger
        .consume_challenge(
            &parsed.nonce,
            stored
                .as_ref()
                .map(|(hash, address)| (hash.as_str(), *address, expires)),
        )
        .await?;
    let address = answer.map_err(|detail| refuse(&detail))?;
    let (true, Some(token)) = (consumed, token) else {
        return Err(unknown());
    };
    tracing::info!(address = %format!("{address:#x}"), "signed in");
    Ok(Json(LoginResponse {
        token,
        address,
        expires_at: rfc3339(expires),
    }))
}

/// The address that signed `body`'s message, if it answers the challenge
/// issued (`issued`, valid until `expires_at_ms`); else why not.
fn answering_address(
    state: &AppState,
    body: &LoginRequest,
    issued: &str,
    expires_at_ms: i64,
    now_ms: i64,
) -> Result<Address, String> {
    if issued != body.message {
        return Err("the message differs from the one issued".into());
    }
    if now_ms >= expires_at_ms {
        return Err("the challenge has expired".into());
    }
    let signature = alloy_hex(&body.signature).ok_or("signature must be 0x-hex")?;
    let (domain, _) = site(state);
    SiweMessage::verify(
        &body.message,
        &signature,
        &domain,
        u64::try_from(now_ms).unwrap_or(0),
    )
    .map(|message| message.address)
    .map_err(|err| err.to_string())
}

/// A new session token: 43 random alphanumerics (about 256 bits).
fn new_token() -> String {
    let mut rng = rand::rng();
    (0..43)
        .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
        .collect()
}

/// Decodes 0x-hex.
pub fn alloy_hex(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    if hex.len() > 1024 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

/// Revoke the token of this request.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    responses((status = 204, description = "Revoked"), (status = 401, body = Problem, content_type = "application/problem+json"))
)]
async fn logout(
    State(state): State<AppState>,
    _caller: Caller,
    parts: axum::http::HeaderMap,
) -> Result<StatusCode, ApiError> {
    if let Some(token) = parts
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' ').map(|(_, t)| t.trim()))
    {
        state.ledger.revoke_token(&token_hash(token)).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
