//! `/api/v1/payments/config` and `/api/v1/channels`: escrowed channels and
//! the vouchers that spend them (shared/spec/payments.md).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use streamweave_ledger::{
    Address, Amount, B256, Channel, ChannelError, OpenChannel, Recipient, RevenuePolicy,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{Caller, alloy_hex, parse_address, rfc3339};
use super::conn::{Quick, RequestHead};
use super::problem::{ApiError, ApiJson, Problem, ProblemKind};
use super::rate_limit::RequestClass;
use super::request_fields::RequestFields;
use crate::model::now_ms;
use crate::money::payments::{EngineError, Operation};
use crate::money::verifier::VerifyError;
use crate::store::Refusal;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(payments_config))
        .routes(routes!(open_channel))
        .routes(routes!(get_channel))
        .routes(routes!(top_up))
        .routes(routes!(close_channel))
        .routes(routes!(payee_policy))
        .routes(routes!(chain_status))
}

/// Voucher submission (the playback lane's: players send one every few
/// segments).
pub fn voucher_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(submit_voucher))
}

/// The embedded ledger's asset.
pub const DEFAULT_ASSET_SYMBOL: &str = "USDC";
pub const DEFAULT_ASSET_DECIMALS: u8 = 6;
/// Longest channel lifetime a payer may ask for.
const MAX_CHANNEL_LIFETIME_S: u64 = 30 * 24 * 3600;
const DEFAULT_CHANNEL_LIFETIME_S: u64 = 24 * 3600;

#[derive(Debug, Serialize, ToSchema)]
pub struct AssetView {
    pub symbol: String,
    #[schema(value_type = String)]
    pub token: Address,
    pub decimals: u8,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Eip712DomainView {
    pub name: &'static str,
    pub version: &'static str,
    #[serde(rename = "chainId")]
    pub chain_id: u64,
    #[serde(rename = "verifyingContract")]
    #[schema(value_type = String)]
    pub verifying_contract: Address,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentsConfig {
    pub chain_id: u64,
    #[schema(value_type = String)]
    pub escrow: Address,
    pub eip712_domain: Eip712DomainView,
    /// `Voucher(bytes32 channelId,uint128 cumulativeAmount)`.
    pub voucher_type: &'static str,
    pub assets: Vec<AssetView>,
    pub platform_fee_bps: u16,
    pub settle_window_s: u64,
    /// Whether `POST /api/v1/dev/faucet` credits accounts (dev mode only).
    pub faucet: bool,
    /// Whether channels are opened on the escrow contract (on chain) rather
    /// than through `POST /api/v1/channels`.
    pub on_chain: bool,
    /// On chain: a JSON-RPC URL of the chain for browsers, when offered.
    pub chain_rpc: Option<String>,
}

/// What clients need to pay: chain, escrow, EIP-712 domain, assets, fee.
#[utoipa::path(get, path = "/api/v1/payments/config", tag = "payments", responses((status = 200, body = PaymentsConfig)))]
async fn payments_config(State(state): State<AppState>) -> Json<PaymentsConfig> {
    let domain = state.payments.domain;
    let asset = match &state.chain {
        Some(link) => AssetView {
            symbol: link.token_symbol.clone(),
            token: link.settings.token,
            decimals: link.token_decimals,
        },
        None => AssetView {
            symbol: DEFAULT_ASSET_SYMBOL.into(),
            token: Address::ZERO,
            decimals: DEFAULT_ASSET_DECIMALS,
        },
    };
    Json(PaymentsConfig {
        chain_id: domain.chain_id,
        escrow: domain.escrow,
        eip712_domain: Eip712DomainView {
            name: "StreamWeave",
            version: "1",
            chain_id: domain.chain_id,
            verifying_contract: domain.escrow,
        },
        voucher_type: "Voucher(bytes32 channelId,uint128 cumulativeAmount)",
        assets: vec![asset],
        platform_fee_bps: state.settings.platform_fee_bps,
        settle_window_s: state.payments.settle_window_ms / 1000,
        faucet: state.settings.dev,
        on_chain: state.chain.is_some(),
        chain_rpc: state
            .chain
            .as_ref()
            .and_then(|link| link.settings.public_rpc_url.clone()),
    })
}

/// A channel as its parties see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    #[schema(value_type = String)]
    pub id: B256,
    #[schema(value_type = String)]
    pub payer: Address,
    #[schema(value_type = String)]
    pub payee: Address,
    #[schema(value_type = String)]
    pub token: Address,
    #[schema(value_type = String)]
    pub salt: B256,
    #[schema(value_type = String)]
    pub signer: Address,
    #[schema(value_type = String)]
    pub deposit: Amount,
    #[schema(value_type = String)]
    pub redeemed: Amount,
    /// open | closing | closed
    pub state: &'static str,
    pub settle_at: Option<String>,
    pub expires_at: String,
    pub platform_fee_bps: u16,
    #[schema(value_type = Vec<Object>)]
    pub recipients: Vec<Recipient>,
    /// On chain: the amount the escrow has settled so far (final logs).
    #[schema(value_type = Option<String>)]
    pub settled_on_chain: Option<Amount>,
}

/// The policy money to `payee` splits by now: theirs (or them alone) with
/// the platform's current fee.
pub async fn revenue_policy(state: &AppState, payee: Address) -> Result<RevenuePolicy, ApiError> {
    Ok(
        crate::money::payments::payee_policy(&state.ledger, payee, state.settings.platform_fee_bps)
            .await?,
    )
}

/// The policy a channel to `payee` carries: voucher steps feed the pool
/// through one more recipient (economics spec: the view pool's `V`); tips
/// and tiers split by the plain policy.
async fn channel_policy(state: &AppState, payee: Address) -> Result<RevenuePolicy, ApiError> {
    streamweave_ledger::economics::with_view_pool(
        &revenue_policy(state, payee).await?,
        state.settings.view_pool_bps,
    )
    .map_err(|err| {
        ApiError::custom(
            StatusCode::CONFLICT,
            "payee-policy",
            "The payee's revenue policy cannot be used",
            format!("the payee's {err}"),
        )
    })
}

pub fn channel_view(channel: &Channel) -> ChannelView {
    let ms = |v: u64| rfc3339(i64::try_from(v).unwrap_or(i64::MAX));
    ChannelView {
        id: channel.id,
        payer: channel.payer,
        payee: channel.payee,
        token: channel.token,
        salt: channel.salt,
        signer: channel.signer,
        deposit: channel.deposit,
        redeemed: channel.redeemed,
        state: channel.state.name(),
        settle_at: match channel.state {
            streamweave_ledger::ChannelState::Closing { settle_at_ms } => Some(ms(settle_at_ms)),
            _ => None,
        },
        expires_at: ms(channel.expires_at_ms),
        platform_fee_bps: channel.policy.platform_fee_bps,
        recipients: channel.policy.recipients.clone(),
        settled_on_chain: channel.chain.as_ref().map(|c| c.settled),
    }
}

/// Maps engine errors to problems with stable types.
pub fn engine_error(err: EngineError) -> ApiError {
    match err {
        EngineError::Channel(err) => channel_error(err),
        EngineError::UnknownChannel => ApiError::not_found("no such channel"),
        EngineError::NotParty => ApiError::not_found("no such channel"),
        EngineError::ChannelExists => ApiError::custom(
            StatusCode::CONFLICT,
            "channel-exists",
            "Channel exists",
            "a channel with this id exists; use another salt",
        ),
        EngineError::Refused(refusal @ Refusal::IdempotencyConflict(_)) => ApiError::custom(
            StatusCode::CONFLICT,
            "idempotency-conflict",
            "Idempotency key reused",
            format!("{refusal}; use a new id for a new request"),
        ),
        EngineError::Refused(refusal @ Refusal::Insufficient(_)) => ApiError::custom(
            StatusCode::CONFLICT,
            "insufficient-balance",
            "Insufficient balance",
            refusal.to_string(),
        ),
        EngineError::Refused(refusal @ Refusal::Overflow(_)) => ApiError::custom(
            StatusCode::CONFLICT,
            "balance-overflow",
            "Balance overflow",
            refusal.to_string(),
        ),
        EngineError::Refused(refusal @ Refusal::ChannelChanged(_)) => ApiError::custom(
            StatusCode::SERVICE_UNAVAILABLE,
            "channel-busy",
            "Channel busy",
            format!("{refusal} on other nodes too often; retry"),
        ),
        EngineError::Unavailable => {
            ApiError::new(ProblemKind::Internal, "the ledger is unavailable")
        }
    }
}

fn verify_error(err: VerifyError) -> ApiError {
    match err {
        VerifyError::Voucher(err) => channel_error(err),
        VerifyError::Busy | VerifyError::Stopped => ApiError::custom(
            StatusCode::SERVICE_UNAVAILABLE,
            "vouchers-busy",
            "Vouchers busy",
            format!("{err}; retry"),
        ),
    }
}

fn channel_error(err: ChannelError) -> ApiError {
    let status = match err {
        ChannelError::Signature(_) | ChannelError::WrongSigner => StatusCode::UNPROCESSABLE_ENTITY,
        ChannelError::NotOpen
        | ChannelError::Expired
        | ChannelError::NotIncreasing
        | ChannelError::ExceedsDeposit
        | ChannelError::OnChain
        | ChannelError::Overflow => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::custom(status, err.code(), "Payment refused", err.to_string())
}

fn parse_amount(text: &str, what: &str) -> Result<Amount, ApiError> {
    text.parse()
        .map_err(|err| ApiError::bad_request(format!("{what}: {err}")))
}

fn parse_b256(text: &str, what: &str) -> Result<B256, ApiError> {
    let bytes = alloy_hex(text).filter(|b| b.len() == 32 && text.starts_with("0x"));
    bytes
        .map(|b| B256::from_slice(&b))
        .ok_or_else(|| ApiError::bad_request(format!("{what} must be 0x and 64 hex digits")))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenChannelRequest {
    /// The creator paid.
    pub payee: String,
    /// Base units, decimal string.
    pub deposit: String,
    /// The session key's address that signs vouchers.
    pub signer: String,
    /// bytes32 hex; random when absent.
    pub salt: Option<String>,
    /// Lifetime in seconds (default 86400, at most 30 days).
    pub expires_in_s: Option<u64>,
}

/// Open an escrowed channel from the signed-in payer.
#[utoipa::path(
    post,
    path = "/api/v1/channels",
    tag = "payments",
    security(("bearer" = [])),
    request_body = OpenChannelRequest,
    responses(
        (status = 201, body = ChannelView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Insufficient balance or existing channel", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn open_channel(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<OpenChannelRequest>,
) -> Result<(StatusCode, Json<ChannelView>), ApiError> {
    let payer = caller.account()?;
    if let Some(link) = &state.chain {
        return Err(ApiError::custom(
            StatusCode::CONFLICT,
            "channel-on-chain",
            "Channels open on chain",
            format!(
                "open the channel on the escrow contract {:#x} (chain {}) with the payee's policy \
                 from GET /api/v1/payments/policies/{{payee}}; it appears here once final",
                link.escrow.address(),
                link.escrow.chain_id()
            ),
        ));
    }
    let payee = parse_address(&body.payee)?;
    let signer = parse_address(&body.signer)?;
    // Nobody holds the zero address's key: a channel to it, or signed by
    // it, could never be paid or spent.
    if payee == Address::ZERO {
        return Err(ApiError::bad_request("payee must not be the zero address"));
    }
    if signer == Address::ZERO {
        return Err(ApiError::bad_request("signer must not be the zero address"));
    }
    let deposit = parse_amount(&body.deposit, "deposit")?;
    let salt = match &body.salt {
        Some(text) => parse_b256(text, "salt")?,
        None => B256::from(rand::rng().random::<[u8; 32]>()),
    };
    let lifetime_s = body.expires_in_s.unwrap_or(DEFAULT_CHANNEL_LIFETIME_S);
    if lifetime_s == 0 || lifetime_s > MAX_CHANNEL_LIFETIME_S {
        return Err(ApiError::bad_request(
            "expires_in_s must be between 1 and 2592000",
        ));
    }
    let policy = channel_policy(&state, payee).await?;
    let now = u64::try_from(now_ms()).unwrap_or(0);
    let done = state
        .payments
        .submit(Operation::Open(OpenChannel {
            payer,
            payee,
            token: Address::ZERO,
            salt,
            signer,
            deposit,
            expires_at_ms: now + lifetime_s * 1000,
            policy,
        }))
        .await
        .map_err(engine_error)?;
    let channel = done
        .channel
        .ok_or_else(|| ApiError::new(ProblemKind::Internal, "no channel"))?;
    Ok((StatusCode::CREATED, Json(channel_view(&channel))))
}

async fn visible_channel(state: &AppState, caller: &Caller, id: &str) -> Result<Channel, ApiError> {
    let id = parse_b256(id, "channel id").map_err(|_| ApiError::not_found("no such channel"))?;
    if state.settings.clustered() {
        // Another node may have moved it since this one last looked.
        state.payments.refresh(&id).await;
    }
    let channel = state
        .payments
        .channel_or_load(&id)
        .await
        .ok_or_else(|| ApiError::not_found("no such channel"))?;
    if caller.may_act_for(channel.payer) || caller.may_act_for(channel.payee) {
        Ok(channel)
    } else {
        Err(ApiError::not_found("no such channel"))
    }
}

/// A channel (payer, payee and admins).
#[utoipa::path(
    get,
    path = "/api/v1/channels/{id}",
    tag = "payments",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id (bytes32 hex)")),
    responses((status = 200, body = ChannelView), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn get_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ChannelView>, ApiError> {
    Ok(Json(channel_view(
        &visible_channel(&state, &caller, &id).await?,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountRequest {
    /// Base units, decimal string.
    pub amount: String,
}

/// Add to a channel's deposit (payer).
#[utoipa::path(
    post,
    path = "/api/v1/channels/{id}/topup",
    tag = "payments",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id")),
    request_body = AmountRequest,
    responses((status = 200, body = ChannelView), (status = 409, body = Problem, content_type = "application/problem+json"))
)]
async fn top_up(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AmountRequest>,
) -> Result<Json<ChannelView>, ApiError> {
    let channel = visible_channel(&state, &caller, &id).await?;
    let payer = caller.account()?;
    let amount = parse_amount(&body.amount, "amount")?;
    let done = state
        .payments
        .submit(Operation::TopUp {
            channel: channel.id,
            payer,
            amount,
        })
        .await
        .map_err(engine_error)?;
    let channel = done
        .channel
        .ok_or_else(|| ApiError::new(ProblemKind::Internal, "no channel"))?;
    Ok(Json(channel_view(&channel)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoucherRequest {
    /// Cumulative amount, base units, decimal string.
    pub amount: String,
    /// 65-byte EIP-712 signature r||s||v, 0x-hex.
    pub signature: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VoucherAccepted {
    /// False when this exact voucher had already been accepted.
    pub new: bool,
    pub channel: ChannelView,
}

/// Submit a voucher. Anyone holding one may submit it; the signature decides.
#[utoipa::path(
    post,
    path = "/api/v1/channels/{id}/vouchers",
    tag = "payments",
    params(("id" = String, Path, description = "Channel id")),
    request_body = VoucherRequest,
    responses(
        (status = 200, description = "Accepted and durable", body = VoucherAccepted),
        (status = 409, description = "Not increasing, above deposit, channel not open or expired", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad or foreign signature", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Signature checks saturated (vouchers-busy) or the channel busy on other nodes; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn submit_voucher(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<VoucherRequest>,
) -> Result<Json<VoucherAccepted>, ApiError> {
    let id = parse_b256(&id, "channel id").map_err(|_| ApiError::not_found("no such channel"))?;
    let outcome = accept_voucher(&state, id, &body).await;
    if let Err(err) = &outcome {
        crate::metrics::metrics().observe_refused_voucher(err.slug());
    }
    outcome.map(Json)
}

/// The playback loop's answer of a voucher (`POST
/// /api/v1/channels/{id}/vouchers`, `Content-Type: application/json`): the
/// router's answer, with its rate limit, metrics, header lines and
/// problems, without its routing, extractors and middleware, the accepted
/// channel's JSON written into the body under header lines fixed for the
/// process (`fields`). `None`, and the router answers (and refuses) as
/// before, for anything else: a query, another content type, an id or a
/// body that is not a voucher's.
pub(super) fn voucher_quick(
    state: &AppState,
    fields: &Bytes,
    head: &RequestHead<'_>,
    body: &[u8],
    peer: SocketAddr,
) -> Option<Quick> {
    let id = head
        .path()
        .strip_prefix("/api/v1/channels/")?
        .strip_suffix("/vouchers")?;
    let id = parse_b256(id, "channel id").ok()?;
    let json = head
        .text(&header::CONTENT_TYPE)?
        .eq_ignore_ascii_case("application/json");
    if !json || head.query().is_some() {
        return None;
    }
    let voucher: VoucherRequest = serde_json::from_slice(body).ok()?;
    let started = std::time::Instant::now();
    let route = &super::ops::VOUCHERS;
    let method = &Method::POST;
    if let Some(refused) =
        super::ops::over_limit_from(state, peer.ip(), head, RequestClass::Playback)
    {
        let refused = super::ops::finish_playback(state, route, method, started, refused);
        return Some(Quick::Response(refused));
    }
    let (state, fields) = (state.clone(), fields.clone());
    Some(Quick::Later(Box::pin(async move {
        let refused = match accept_voucher(&state, id, &voucher).await {
            Ok(accepted) => {
                // About 600 bytes with one recipient.
                let mut json = Vec::with_capacity(1024);
                match serde_json::to_writer(&mut json, &accepted) {
                    Ok(()) => {
                        let len = Some(json.len() as u64);
                        super::ops::count_playback(
                            &state,
                            route,
                            method,
                            started,
                            StatusCode::OK,
                            len,
                        );
                        return Quick::ok(fields, json.into());
                    }
                    Err(err) => ApiError::new(ProblemKind::Internal, err.to_string()),
                }
            }
            Err(err) => {
                crate::metrics::metrics().observe_refused_voucher(err.slug());
                err
            }
        };
        let refused = refused.into_response();
        Quick::Response(super::ops::finish_playback(
            &state, route, method, started, refused,
        ))
    })))
}

/// Accepts a voucher and counts it (with the gross it moved, zero for a
/// repeat, and its stages' times).
async fn accept_voucher(
    state: &AppState,
    id: B256,
    body: &VoucherRequest,
) -> Result<VoucherAccepted, ApiError> {
    let started = std::time::Instant::now();
    let (signer, redeemed) = state
        .payments
        .voucher_signer_or_load(&id)
        .await
        .ok_or_else(|| ApiError::not_found("no such channel"))?;
    let amount = parse_amount(&body.amount, "amount")?;
    // Its form (length, v, low s) checked here: only a recovery is queued.
    let signature = streamweave_ledger::Signature65::from_hex(&body.signature)
        .map_err(|err| channel_error(ChannelError::Signature(err)))?;
    super::sessions::check_prepay_window(state, &signer.channel, amount).await?;
    let looked_up = std::time::Instant::now();
    // Recovery is the expensive part: done on the recovery threads, in
    // parallel (and, when configured, below the media answers' priority),
    // before the engine.
    let verified = state
        .verifier
        .verify(signer, amount, signature)
        .await
        .map_err(verify_error)?;
    let recovered = std::time::Instant::now();
    let done = state
        .payments
        .submit(Operation::Voucher(verified))
        .await
        .map_err(engine_error)?;
    let answered = std::time::Instant::now();
    if done.new
        && let (Some(after), Some(stream_id)) = (
            &done.channel,
            state.sessions.stream_of_channel(&signer.channel),
        )
    {
        // The step's split, announced to the creator as it moves. The step
        // starts where the engine found the channel, not at our earlier
        // snapshot: racing vouchers must not count the same units twice.
        let before = done.redeemed_before.unwrap_or(redeemed);
        let (before_totals, after_totals) = (
            after.policy.totals(before),
            after.policy.totals(after.redeemed),
        );
        let creator_index = after
            .policy
            .recipients
            .iter()
            .position(|r| r.address == after.payee);
        // Every total is monotone in the redeemed amount (spec "Splits").
        let creator_step = creator_index.map_or(0, |i| {
            after_totals.recipients[i]
                .0
                .saturating_sub(before_totals.recipients[i].0)
        });
        let gross = Amount(after.redeemed.0.saturating_sub(before.0));
        let fee = Amount(after_totals.fee.0.saturating_sub(before_totals.fee.0));
        state
            .stats
            .earned(&stream_id, after.payer, gross, Amount(creator_step), fee);
        state
            .earnings
            .earned(&stream_id, gross, Amount(creator_step), fee);
    }
    let channel = done
        .channel
        .ok_or_else(|| ApiError::new(ProblemKind::Internal, "no channel"))?;
    let gross = match (done.new, done.redeemed_before) {
        (true, Some(before)) => Amount(channel.redeemed.0.saturating_sub(before.0)),
        _ => Amount(0),
    };
    crate::metrics::metrics().observe_accepted_voucher(
        gross.0,
        [
            looked_up.duration_since(started),
            recovered.duration_since(looked_up),
            answered.duration_since(recovered),
        ],
    );
    Ok(VoucherAccepted {
        new: done.new,
        channel: channel_view(&channel),
    })
}

/// Start closing a channel (payer or payee): vouchers are accepted until the
/// settle window ends, then the rest of the escrow returns to the payer.
#[utoipa::path(
    post,
    path = "/api/v1/channels/{id}/close",
    tag = "payments",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, body = ChannelView), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn close_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ChannelView>, ApiError> {
    let channel = visible_channel(&state, &caller, &id).await?;
    let by = if caller.is_admin() && caller.address().is_none() {
        channel.payer
    } else {
        caller.account()?
    };
    let done = state
        .payments
        .submit(Operation::Close {
            channel: channel.id,
            by,
        })
        .await
        .map_err(engine_error)?;
    let channel = done
        .channel
        .ok_or_else(|| ApiError::new(ProblemKind::Internal, "no channel"))?;
    Ok(Json(channel_view(&channel)))
}

/// One recipient of a policy as the escrow takes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyRecipientView {
    #[schema(value_type = String)]
    pub account: Address,
    pub share: u64,
}

/// The revenue policy a channel to a payee must carry.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    pub fee_bps: u16,
    /// On chain: where the fee goes (the escrow's `Policy.feeRecipient`).
    #[schema(value_type = Option<String>)]
    pub fee_recipient: Option<Address>,
    pub recipients: Vec<PolicyRecipientView>,
    /// On chain: `keccak256(abi.encode(policy))`, what the escrow stores.
    #[schema(value_type = Option<String>)]
    pub policy_hash: Option<B256>,
}

/// The policy a channel to this payee is opened with (on chain, the
/// escrow's `Policy` tuple: pass it to `open` as it is).
#[utoipa::path(
    get,
    path = "/api/v1/payments/policies/{payee}",
    tag = "payments",
    params(("payee" = String, Path, description = "The payee's address")),
    responses((status = 200, body = PolicyView), (status = 400, body = Problem, content_type = "application/problem+json"))
)]
async fn payee_policy(
    State(state): State<AppState>,
    Path(payee): Path<String>,
) -> Result<Json<PolicyView>, ApiError> {
    let payee = parse_address(&payee)?;
    let policy = channel_policy(&state, payee).await?;
    let on_chain = state
        .chain
        .as_ref()
        .map(|link| streamweave_chain::chain_policy(&policy, link.fee_recipient));
    Ok(Json(PolicyView {
        fee_bps: policy.platform_fee_bps,
        fee_recipient: on_chain.as_ref().map(|p| p.feeRecipient),
        recipients: policy
            .recipients
            .iter()
            .map(|r| PolicyRecipientView {
                account: r.address,
                share: r.share,
            })
            .collect(),
        policy_hash: on_chain.as_ref().map(streamweave_chain::policy_hash),
    }))
}

/// A settler transaction as the chain status shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainTxView {
    pub hash: String,
    pub nonce: u64,
    /// `settle` or `finalize`.
    pub kind: String,
    /// `sent`, `mined`, `failed` or `dropped`.
    pub state: String,
    #[schema(value_type = Vec<Object>)]
    pub channels: serde_json::Value,
    pub created_at: String,
}

/// What this node sees of the chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainStatusView {
    pub chain_id: u64,
    #[schema(value_type = String)]
    pub escrow: Address,
    #[schema(value_type = String)]
    pub token: Address,
    pub confirmations: u64,
    #[schema(value_type = String)]
    pub settle_threshold: Amount,
    #[schema(value_type = Option<String>)]
    pub settler: Option<Address>,
    #[schema(value_type = String)]
    pub fee_recipient: Address,
    pub head: u64,
    pub final_block: u64,
    /// Logs waiting for their confirmations: not in the ledger yet, and
    /// gone if a reorganization drops them.
    #[schema(value_type = Vec<Object>)]
    pub provisional: Vec<crate::chain::ProvisionalLog>,
    pub error: Option<String>,
    /// The settler's latest transactions, newest first.
    pub transactions: Vec<ChainTxView>,
}

/// The chain this server settles on: blocks, logs not final yet, the
/// settler's transactions.
#[utoipa::path(
    get,
    path = "/api/v1/chain",
    tag = "payments",
    responses((status = 200, body = ChainStatusView), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn chain_status(State(state): State<AppState>) -> Result<Json<ChainStatusView>, ApiError> {
    let link = state
        .chain
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this server does not settle on a chain"))?;
    let status = link.status();
    let transactions = state
        .db
        .chain_txs(
            link.escrow.chain_id(),
            &format!("{:#x}", link.escrow.address()),
            false,
            20,
        )
        .await?
        .into_iter()
        .map(|tx| ChainTxView {
            channels: serde_json::from_str(&tx.body).unwrap_or_default(),
            hash: tx.hash,
            nonce: tx.nonce,
            kind: tx.kind,
            state: tx.state,
            created_at: rfc3339(tx.created_at_ms),
        })
        .collect();
    Ok(Json(ChainStatusView {
        chain_id: link.escrow.chain_id(),
        escrow: link.escrow.address(),
        token: link.settings.token,
        confirmations: link.settings.confirmations,
        settle_threshold: link.settings.settle_threshold,
        settler: link.escrow.sender(),
        fee_recipient: link.fee_recipient,
        head: status.head,
        final_block: status.final_block,
        provisional: status.provisional,
        error: status.error,
        transactions,
    }))
}
