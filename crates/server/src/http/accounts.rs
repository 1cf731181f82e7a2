//! Balances, history, revenue policies, deposits and withdrawals.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::{Deserialize, Serialize};
use streamweave_ledger::{AccountRef, Address, Amount, ChannelState, Recipient, RevenuePolicy};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{Caller, parse_address, rfc3339};
use super::payments::engine_error;
use super::problem::{ApiError, ApiJson, Problem, ProblemKind};
use crate::model::now_ms;
use crate::money::payments::{Operation, deposit, withdrawal};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(balances))
        .routes(routes!(channels))
        .routes(routes!(transfers))
        .routes(routes!(get_revenue_policy, set_revenue_policy))
        .routes(routes!(set_payout_threshold))
        .routes(routes!(withdraw))
        .routes(routes!(faucet))
        .routes(routes!(admin_deposit))
        .routes(routes!(admin_withdrawal))
}

/// Largest single faucet or admin movement, in base units (a typo guard).
const MAX_SINGLE_MOVEMENT: u128 = 1_000_000_000_000_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct BalancesView {
    #[schema(value_type = String)]
    pub address: Address,
    /// Spendable.
    #[schema(value_type = String)]
    pub available: Amount,
    /// In open or closing channels this account pays from.
    #[schema(value_type = String)]
    pub escrowed: Amount,
    /// Revenue received (creator, collaborator, pool).
    #[schema(value_type = String)]
    pub earned: Amount,
    /// On chain: revenue from channels escrowed there, in the chain's
    /// token, withdrawn from the escrow contract (`withdraw`) once settled.
    #[schema(value_type = Option<String>)]
    pub earned_on_chain: Option<Amount>,
}

fn owned(caller: &Caller, address: &str) -> Result<Address, ApiError> {
    let address = parse_address(address)?;
    if caller.may_act_for(address) {
        Ok(address)
    } else {
        Err(ApiError::new(
            ProblemKind::Forbidden,
            "only the owner and admins see this",
        ))
    }
}

fn non_negative(balance: streamweave_ledger::Balance) -> Amount {
    balance.non_negative()
}

/// An account's balances (owner and admins).
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{address}/balances",
    tag = "accounts",
    security(("bearer" = [])),
    params(("address" = String, Path, description = "Account address")),
    responses((status = 200, body = BalancesView), (status = 403, body = Problem, content_type = "application/problem+json"))
)]
async fn balances(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
) -> Result<Json<BalancesView>, ApiError> {
    let address = owned(&caller, &address)?;
    // Every voucher answered before is in the balances read (those still
    // in the voucher journal included, without folding them).
    let asset = Address::ZERO;
    let mut accounts = vec![
        AccountRef::Available {
            owner: address,
            asset,
        },
        AccountRef::Revenue {
            owner: address,
            asset,
        },
    ];
    if let Some(link) = &state.chain {
        accounts.push(AccountRef::Revenue {
            owner: address,
            asset: link.settings.token,
        });
    }
    let balances = state
        .payments
        .balances(&accounts)
        .await
        .map_err(super::payments::engine_error)?;
    let (available, earned) = (balances[0], balances[1]);
    let earned_on_chain = balances.get(2).copied().map(non_negative);
    let escrowed = state
        .payments
        .channels_of(address)
        .iter()
        .filter(|c| c.payer == address && c.state != ChannelState::Closed)
        .map(|c| c.deposit.0 - c.redeemed.0)
        .fold(0u128, u128::saturating_add);
    Ok(Json(BalancesView {
        address,
        available: non_negative(available),
        escrowed: Amount(escrowed),
        earned: non_negative(earned),
        earned_on_chain,
    }))
}

/// An account's channels, as payer or payee, newest first (owner and admins).
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{address}/channels",
    tag = "accounts",
    security(("bearer" = [])),
    params(("address" = String, Path, description = "Account address")),
    responses((status = 200, body = [super::payments::ChannelView]), (status = 403, body = Problem, content_type = "application/problem+json"))
)]
async fn channels(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
) -> Result<Json<Vec<super::payments::ChannelView>>, ApiError> {
    let address = owned(&caller, &address)?;
    let mut channels = state.payments.channels_of(address);
    channels.sort_by_key(|c| std::cmp::Reverse(c.expires_at_ms));
    Ok(Json(
        channels.iter().map(super::payments::channel_view).collect(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransfersQuery {
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Page: transfers before this `seq`.
    pub before: Option<i64>,
    /// 1..=1000, default 100.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransferView {
    pub seq: i64,
    pub id: String,
    pub time: String,
    pub kind: String,
    /// `in` or `out` for this account.
    pub direction: &'static str,
    #[schema(value_type = String)]
    pub amount: Amount,
    #[schema(value_type = String)]
    pub asset: Address,
    pub from: String,
    pub to: String,
    pub channel: Option<String>,
}

/// An account's transfers, newest first (owner and admins); `?format=csv` for tax records.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{address}/transfers",
    tag = "accounts",
    security(("bearer" = [])),
    params(("address" = String, Path, description = "Account address"), TransfersQuery),
    responses((status = 200, body = [TransferView]), (status = 403, body = Problem, content_type = "application/problem+json"))
)]
async fn transfers(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
    Query(query): Query<TransfersQuery>,
) -> Result<Response, ApiError> {
    let address = owned(&caller, &address)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    // Every voucher answered before is in the history read.
    state
        .payments
        .fold()
        .await
        .map_err(super::payments::engine_error)?;
    let owner_of = |account: &AccountRef| match account {
        AccountRef::Available { owner, .. } | AccountRef::Revenue { owner, .. } => Some(*owner),
        _ => None,
    };
    let rows = state
        .ledger
        .transfers_of(address, query.before, limit)
        .await?;
    let views: Vec<TransferView> = rows
        .into_iter()
        .map(|row| {
            let t = row.transfer;
            TransferView {
                seq: row.seq,
                time: rfc3339(row.created_at_ms),
                kind: serde_json::to_value(t.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                direction: if owner_of(&t.credit) == Some(address) {
                    "in"
                } else {
                    "out"
                },
                amount: t.amount,
                asset: t.asset,
                from: t.debit.key(),
                to: t.credit.key(),
                channel: t.channel.map(|c| format!("{c:#x}")),
                id: t.id,
            }
        })
        .collect();
    match query.format.as_deref() {
        None | Some("json") => Ok(Json(views).into_response()),
        Some("csv") => {
            let mut csv = String::from("seq,time,id,kind,direction,amount,asset,from,to,channel\n");
            for v in &views {
                csv.push_str(&format!(
                    "{},{},{},{},{},{},{:#x},{},{},{}\n",
                    v.seq,
                    v.time,
                    v.id,
                    v.kind,
                    v.direction,
                    v.amount,
                    v.asset,
                    v.from,
                    v.to,
                    v.channel.as_deref().unwrap_or("")
                ));
            }
            Ok((
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/csv; charset=utf-8"),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        HeaderValue::from_static("attachment; filename=\"transfers.csv\""),
                    ),
                ],
                csv,
            )
                .into_response())
        }
        Some(_) => Err(ApiError::bad_request("format must be json or csv")),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientRequest {
    pub address: String,
    pub share: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevenuePolicyRequest {
    pub recipients: Vec<RecipientRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevenuePolicyView {
    pub platform_fee_bps: u16,
    #[schema(value_type = Vec<Object>)]
    pub recipients: Vec<Recipient>,
}

/// How your revenue splits now (you alone, when never set).
#[utoipa::path(
    get,
    path = "/api/v1/accounts/me/revenue-policy",
    tag = "accounts",
    security(("bearer" = [])),
    responses((status = 200, body = RevenuePolicyView), (status = 403, body = Problem, content_type = "application/problem+json"))
)]
async fn get_revenue_policy(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<RevenuePolicyView>, ApiError> {
    let policy = super::payments::revenue_policy(&state, caller.account()?).await?;
    Ok(Json(RevenuePolicyView {
        platform_fee_bps: policy.platform_fee_bps,
        recipients: policy.recipients,
    }))
}

/// Set how your revenue splits (applies to channels opened afterwards).
#[utoipa::path(
    put,
    path = "/api/v1/accounts/me/revenue-policy",
    tag = "accounts",
    security(("bearer" = [])),
    request_body = RevenuePolicyRequest,
    responses((status = 200, body = RevenuePolicyView), (status = 400, body = Problem, content_type = "application/problem+json"))
)]
async fn set_revenue_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RevenuePolicyRequest>,
) -> Result<Json<RevenuePolicyView>, ApiError> {
    let owner = caller.account()?;
    let recipients = body
        .recipients
        .iter()
        .map(|r| {
            Ok(Recipient {
                address: parse_address(&r.address)?,
                share: r.share,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let policy = RevenuePolicy {
        platform_fee_bps: state.settings.platform_fee_bps,
        recipients,
    };
    policy
        .validate()
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    if policy
        .recipients
        .iter()
        .any(|r| r.address == streamweave_ledger::economics::VIEW_POOL_RECIPIENT)
    {
        return Err(ApiError::bad_request(
            "the view pool's address is not a recipient to name",
        ));
    }
    // Channels add the pool as one more recipient: leave it room.
    streamweave_ledger::economics::with_view_pool(&policy, state.settings.view_pool_bps)
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    state.ledger.set_policy(owner, &policy, now_ms()).await?;
    Ok(Json(RevenuePolicyView {
        platform_fee_bps: policy.platform_fee_bps,
        recipients: policy.recipients,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawRequest {
    pub amount: String,
    /// `available` (default) or `earned`.
    pub from: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalView {
    pub id: String,
    #[schema(value_type = String)]
    pub amount: Amount,
    /// `pending` until paid out.
    pub state: &'static str,
}

/// `{prefix}:` and 20 random letters and digits.
pub(super) fn random_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..20)
        .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
        .collect();
    format!("{prefix}:{tail}")
}

/// A caller's idempotency key as a transfer id `{prefix}:{key}`, or a fresh
/// random id when there is none.
pub(super) fn transfer_id(prefix: &str, key: Option<&str>) -> Result<String, ApiError> {
    match key {
        Some(key)
            if !key.is_empty() && key.len() <= 100 && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(format!("{prefix}:{key}"))
        }
        Some(_) => Err(ApiError::bad_request(
            "id must be 1 to 100 visible ASCII characters",
        )),
        None => Ok(random_id(prefix)),
    }
}

/// A positive amount of at most 10^15 base units (a typo guard).
pub(super) fn movement_amount(text: &str) -> Result<Amount, ApiError> {
    let amount: Amount = text
        .parse()
        .map_err(|err| ApiError::bad_request(format!("amount: {err}")))?;
    if amount.is_zero() || amount.0 > MAX_SINGLE_MOVEMENT {
        return Err(ApiError::bad_request(
            "amount must be positive and at most 10^15",
        ));
    }
    Ok(amount)
}

/// A positive amount anywhere in the range (operators book outside money,
/// whose units may be far smaller than the typo guard assumes).
fn booked_amount(text: &str) -> Result<Amount, ApiError> {
    let amount: Amount = text
        .parse()
        .map_err(|err| ApiError::bad_request(format!("amount: {err}")))?;
    if amount.is_zero() {
        return Err(ApiError::bad_request("amount must be positive"));
    }
    Ok(amount)
}

/// Withdraw to outside: a pending payout record.
#[utoipa::path(
    post,
    path = "/api/v1/withdrawals",
    tag = "accounts",
    security(("bearer" = [])),
    request_body = WithdrawRequest,
    responses((status = 201, body = WithdrawalView), (status = 409, body = Problem, content_type = "application/problem+json"))
)]
async fn withdraw(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<WithdrawRequest>,
) -> Result<(StatusCode, Json<WithdrawalView>), ApiError> {
    let owner = caller.account()?;
    let amount = movement_amount(&body.amount)?;
    let asset = Address::ZERO;
    let from = match body.from.as_deref() {
        None | Some("available") => AccountRef::Available { owner, asset },
        Some("earned") => AccountRef::Revenue { owner, asset },
        Some(_) => return Err(ApiError::bad_request("from must be available or earned")),
    };
    let id = random_id("withdrawal");
    state
        .payments
        .submit(Operation::Transfers(vec![withdrawal(
            id.clone(),
            from,
            asset,
            amount,
        )]))
        .await
        .map_err(engine_error)?;
    state
        .ledger
        .record_withdrawal(&id, owner, asset, amount.0, now_ms())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WithdrawalView {
            id,
            amount,
            state: "pending",
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MovementRequest {
    pub address: String,
    pub amount: String,
    /// Idempotency key: the same id moves money once.
    pub id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MovementView {
    pub id: String,
    #[schema(value_type = String)]
    pub address: Address,
    #[schema(value_type = String)]
    pub amount: Amount,
}

async fn move_money(
    state: &AppState,
    body: MovementRequest,
    prefix: &str,
    incoming: bool,
) -> Result<Json<MovementView>, ApiError> {
    let address = parse_address(&body.address)?;
    // The dev faucet keeps the typo guard; admins book outside money, any amount.
    let amount = if prefix == "faucet" {
        movement_amount(&body.amount)?
    } else {
        booked_amount(&body.amount)?
    };
    let id = transfer_id(prefix, body.id.as_deref())?;
    let asset = Address::ZERO;
    let transfer = if incoming {
        deposit(id.clone(), address, asset, amount)
    } else {
        withdrawal(
            id.clone(),
            AccountRef::Available {
                owner: address,
                asset,
            },
            asset,
            amount,
        )
    };
    state
        .payments
        .submit(Operation::Transfers(vec![transfer]))
        .await
        .map_err(engine_error)?;
    Ok(Json(MovementView {
        id,
        address,
        amount,
    }))
}

/// Dev mode only: credit an account from nowhere.
#[utoipa::path(
    post,
    path = "/api/v1/dev/faucet",
    tag = "accounts",
    request_body = MovementRequest,
    responses((status = 200, body = MovementView), (status = 404, description = "Not in dev mode", body = Problem, content_type = "application/problem+json"))
)]
async fn faucet(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<MovementRequest>,
) -> Result<Json<MovementView>, ApiError> {
    if !state.settings.dev {
        return Err(ApiError::not_found("the faucet exists only in dev mode"));
    }
    if let Some(link) = &state.chain {
        // On chain, deposits come from the wallet: it gets test tokens
        // (and gas) there too.
        let address = parse_address(&body.address)?;
        let amount = movement_amount(&body.amount)?;
        link.dev_faucet(address, amount).await.map_err(|err| {
            ApiError::custom(
                StatusCode::BAD_GATEWAY,
                "chain-faucet",
                "The chain's faucet failed",
                format!("minting test tokens on chain: {err}"),
            )
        })?;
    }
    move_money(&state, body, "faucet", true).await
}

pub(super) fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::new(ProblemKind::Forbidden, "admins only"))
    }
}

/// Admin: credit a deposit received outside (idempotent by id).
#[utoipa::path(
    post,
    path = "/api/v1/admin/deposits",
    tag = "admin",
    security(("bearer" = [])),
    request_body = MovementRequest,
    responses((status = 200, body = MovementView), (status = 403, body = Problem, content_type = "application/problem+json"))
)]
async fn admin_deposit(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<MovementRequest>,
) -> Result<Json<MovementView>, ApiError> {
    require_admin(&caller)?;
    move_money(&state, body, "deposit", true).await
}

/// Admin: debit a withdrawal paid outside (idempotent by id).
#[utoipa::path(
    post,
    path = "/api/v1/admin/withdrawals",
    tag = "admin",
    security(("bearer" = [])),
    request_body = MovementRequest,
    responses((status = 200, body = MovementView), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"))
)]
async fn admin_withdrawal(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<MovementRequest>,
) -> Result<Json<MovementView>, ApiError> {
    require_admin(&caller)?;
    move_money(&state, body, "admin-withdrawal", false).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutThresholdRequest {
    /// Withdraw the whole earned balance once it reaches this (base units);
    /// `null` turns automatic payouts off.
    pub threshold: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PayoutThresholdView {
    #[schema(value_type = Option<String>)]
    pub threshold: Option<Amount>,
}

/// Set or clear your automatic payout threshold.
#[utoipa::path(
    put,
    path = "/api/v1/accounts/me/payout-threshold",
    tag = "accounts",
    security(("bearer" = [])),
    request_body = PayoutThresholdRequest,
    responses((status = 200, body = PayoutThresholdView), (status = 400, body = Problem, content_type = "application/problem+json"))
)]
async fn set_payout_threshold(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PayoutThresholdRequest>,
) -> Result<Json<PayoutThresholdView>, ApiError> {
    let owner = caller.account()?;
    let threshold = match body.threshold.as_deref() {
        None => None,
        Some(text) => {
            let amount: Amount = text
                .parse()
                .map_err(|err| ApiError::bad_request(format!("threshold: {err}")))?;
            if amount.is_zero() {
                return Err(ApiError::bad_request(
                    "threshold must be positive (null turns payouts off)",
                ));
            }
            Some(amount)
        }
    };
    state
        .ledger
        .set_payout_threshold(owner, threshold.map(|a| a.0), now_ms())
        .await?;
    Ok(Json(PayoutThresholdView { threshold }))
}
