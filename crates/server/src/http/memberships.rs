//! Tiers, memberships, watch history and the pool's rounds over HTTP. Member
//! sessions themselves are `http::sessions` (a stream with `access`
//! `members`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use streamweave_ledger::Amount;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::accounts::{require_admin, transfer_id};
use super::auth::{Caller, rfc3339};
use super::problem::{ApiError, ApiJson, Problem, ProblemKind};
use super::ticketing::commerce_error;
use crate::memberships::{JoinKind, MembershipError};
use crate::model::{AccessMode, StreamRecord, now_ms};
use crate::store::{MembershipRecord, Offerer, RoundRecord, TierRecord, random_id};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_platform_tier))
        .routes(routes!(create_tier, list_tiers))
        .routes(routes!(get_tier, patch_tier))
        .routes(routes!(join))
        .routes(routes!(stop_renewal))
        .routes(routes!(my_memberships))
        .routes(routes!(my_history))
        .routes(routes!(list_rounds))
        .routes(routes!(get_round))
}

/// Heights a tier may allow.
const HEIGHTS: [u32; 4] = [360, 480, 720, 1080];
/// Most tiers a members stream names.
const MAX_STREAM_TIERS: usize = 20;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTier {
    /// 1 to 100 characters.
    pub name: String,
    /// Base units per period (positive).
    pub price: String,
    /// Default 2592000 (30 days).
    pub period_seconds: Option<u64>,
    /// 360, 480, 720 or 1080: the best quality members watch.
    pub max_height: u32,
    /// Member sessions at once (at least 1).
    pub max_streams: u32,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTier {
    pub name: Option<String>,
    /// Applies from the next renewal.
    pub price: Option<String>,
    pub max_height: Option<u32>,
    pub max_streams: Option<u32>,
    pub description: Option<String>,
    /// Admins: suspend (or restore) the tier; a suspended tier is not sold
    /// nor renewed.
    pub suspended: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierView {
    pub id: String,
    /// `platform` or the creator's address.
    pub offerer: String,
    pub name: String,
    pub description: String,
    pub price: String,
    pub period_seconds: u64,
    pub max_height: u32,
    pub max_streams: u32,
    pub suspended: bool,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierList {
    pub tiers: Vec<TierView>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RoundsQuery {
    /// Only rounds that paid this creator, with only their allocation (a
    /// creator's pool earnings per round).
    pub creator: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TiersQuery {
    /// `platform` or a creator's address.
    pub offerer: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub tier_id: String,
    /// Renew at expiry from the available balance (default true).
    pub auto_renew: Option<bool>,
    /// Idempotency key.
    pub id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipView {
    pub id: String,
    pub member: String,
    pub offerer: String,
    pub tier: TierView,
    /// A downgrade waiting for the renewal.
    pub next_tier_id: Option<String>,
    pub expires_at: String,
    pub active: bool,
    pub auto_renew: bool,
    /// Why the last renewal failed, if it did.
    pub renewal_failure: Option<String>,
    pub renewal_failed_at: Option<String>,
    /// `period`, `upgrade` or `downgrade` (answers of a join).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipList {
    pub memberships: Vec<MembershipView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub stream_id: String,
    pub title: String,
    /// Where to resume.
    pub position_ms: u64,
    pub duration_ms: Option<u64>,
    pub updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryList {
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AllocationView {
    pub creator: String,
    pub amount: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoundView {
    pub round: i64,
    pub starts_at: String,
    pub ends_at: String,
    /// Sum of the members' contributions.
    pub contributions: String,
    pub view_inflow: String,
    pub carry_in: String,
    pub carry_out: String,
    /// `user-centric` or `pro-rata`.
    pub mode: String,
    /// The statement (`/ipfs/{cid}`): every input and allocation.
    pub statement_cid: String,
    pub closed_at: String,
    pub allocations: Vec<AllocationView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoundList {
    pub rounds: Vec<RoundView>,
}

pub fn tier_view(tier: &TierRecord) -> TierView {
    TierView {
        id: tier.id.clone(),
        offerer: tier.offerer.to_text(),
        name: tier.name.clone(),
        description: tier.description.clone(),
        price: tier.price.to_string(),
        period_seconds: tier.period_seconds,
        max_height: tier.max_height,
        max_streams: tier.max_streams,
        suspended: tier.suspended,
        created_at: rfc3339(tier.created_at_ms),
    }
}

fn round_view(round: RoundRecord) -> RoundView {
    RoundView {
        round: round.round,
        starts_at: rfc3339(round.starts_at_ms),
        ends_at: rfc3339(round.ends_at_ms),
        contributions: round.contributions.to_string(),
        view_inflow: round.view_inflow.to_string(),
        carry_in: round.carry_in.to_string(),
        carry_out: round.carry_out.to_string(),
        mode: round.mode,
        statement_cid: round.statement_cid,
        closed_at: rfc3339(round.closed_at_ms),
        allocations: round
            .allocations
            .into_iter()
            .map(|(creator, amount)| AllocationView {
                creator: format!("{creator:#x}"),
                amount: amount.to_string(),
            })
            .collect(),
    }
}

async fn membership_view(
    state: &AppState,
    membership: &MembershipRecord,
    change: Option<JoinKind>,
) -> Result<MembershipView, ApiError> {
    let tier = state
        .db
        .tier(&membership.tier_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such tier"))?;
    Ok(MembershipView {
        id: membership.id.clone(),
        member: format!("{:#x}", membership.member),
        offerer: membership.offerer.to_text(),
        tier: tier_view(&tier),
        next_tier_id: membership.next_tier_id.clone(),
        expires_at: rfc3339(membership.expires_at_ms),
        active: membership.expires_at_ms > now_ms(),
        auto_renew: membership.auto_renew,
        renewal_failure: membership.renewal_failure.clone(),
        renewal_failed_at: membership.renewal_failed_at_ms.map(rfc3339),
        change: change.map(|kind| match kind {
            JoinKind::Period => "period",
            JoinKind::Upgrade => "upgrade",
            JoinKind::Downgrade => "downgrade",
        }),
    })
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request("name must have 1 to 100 characters"));
    }
    Ok(name)
}

fn check_height(height: u32) -> Result<u32, ApiError> {
    if HEIGHTS.contains(&height) {
        Ok(height)
    } else {
        Err(ApiError::bad_request(
            "max_height must be 360, 480, 720 or 1080",
        ))
    }
}

fn check_streams(max_streams: u32) -> Result<u32, ApiError> {
    if (1..=100).contains(&max_streams) {
        Ok(max_streams)
    } else {
        Err(ApiError::bad_request("max_streams must be 1 to 100"))
    }
}

fn check_price(text: &str) -> Result<Amount, ApiError> {
    let price: Amount = text
        .parse()
        .map_err(|err| ApiError::bad_request(format!("price: {err}")))?;
    if price.is_zero() {
        return Err(ApiError::bad_request("price must be positive"));
    }
    Ok(price)
}

fn check_description(text: Option<&str>) -> Result<String, ApiError> {
    let text = text.unwrap_or_default().trim().to_string();
    if text.chars().count() > 2000 {
        return Err(ApiError::bad_request(
            "description must have at most 2000 characters",
        ));
    }
    Ok(text)
}

fn new_tier(offerer: Offerer, body: &CreateTier) -> Result<TierRecord, ApiError> {
    let period_seconds = body.period_seconds.unwrap_or(2_592_000);
    if !(1..=10 * 365 * 86_400).contains(&period_seconds) {
        return Err(ApiError::bad_request(
            "period_seconds must be 1 to 315360000",
        ));
    }
    Ok(TierRecord {
        id: random_id(),
        offerer,
        name: check_name(&body.name)?,
        description: check_description(body.description.as_deref())?,
        price: check_price(&body.price)?,
        period_seconds,
        max_height: check_height(body.max_height)?,
        max_streams: check_streams(body.max_streams)?,
        suspended: false,
        created_at_ms: now_ms(),
    })
}

/// Admin: a platform tier (its revenue feeds the pool).
#[utoipa::path(
    post,
    path = "/api/v1/admin/tiers",
    tag = "memberships",
    security(("bearer" = [])),
    request_body = CreateTier,
    responses((status = 201, body = TierView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"))
)]
async fn create_platform_tier(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTier>,
) -> Result<(StatusCode, Json<TierView>), ApiError> {
    require_admin(&caller)?;
    let tier = new_tier(Offerer::Platform, &body)?;
    state.db.insert_tier(&tier).await?;
    Ok((StatusCode::CREATED, Json(tier_view(&tier))))
}

/// A tier of your own channel (its revenue is split by your revenue policy).
#[utoipa::path(
    post,
    path = "/api/v1/tiers",
    tag = "memberships",
    security(("bearer" = [])),
    request_body = CreateTier,
    responses((status = 201, body = TierView), (status = 400, body = Problem, content_type = "application/problem+json"))
)]
async fn create_tier(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTier>,
) -> Result<(StatusCode, Json<TierView>), ApiError> {
    let creator = caller.account()?;
    let tier = new_tier(Offerer::Creator(creator), &body)?;
    state.db.insert_tier(&tier).await?;
    Ok((StatusCode::CREATED, Json(tier_view(&tier))))
}

/// Tiers, optionally of one offerer.
#[utoipa::path(
    get,
    path = "/api/v1/tiers",
    tag = "memberships",
    params(TiersQuery),
    responses((status = 200, body = TierList), (status = 400, body = Problem, content_type = "application/problem+json"))
)]
async fn list_tiers(
    State(state): State<AppState>,
    Query(query): Query<TiersQuery>,
) -> Result<Json<TierList>, ApiError> {
    let offerer = match query.offerer.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            Offerer::parse(&text.to_ascii_lowercase())
                .ok_or_else(|| ApiError::bad_request("offerer must be platform or an address"))?,
        ),
    };
    let tiers = state.db.tiers(offerer).await?;
    Ok(Json(TierList {
        tiers: tiers.iter().map(tier_view).collect(),
    }))
}

async fn find_tier(state: &AppState, id: &str) -> Result<TierRecord, ApiError> {
    state
        .db
        .tier(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such tier"))
}

/// One tier.
#[utoipa::path(
    get,
    path = "/api/v1/tiers/{id}",
    tag = "memberships",
    params(("id" = String, Path, description = "Tier id")),
    responses((status = 200, body = TierView), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn get_tier(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TierView>, ApiError> {
    Ok(Json(tier_view(&find_tier(&state, &id).await?)))
}

/// Change a tier (its offerer, or admins; only admins suspend). A new
/// price applies from each member's next renewal.
#[utoipa::path(
    patch,
    path = "/api/v1/tiers/{id}",
    tag = "memberships",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Tier id")),
    request_body = PatchTier,
    responses((status = 200, body = TierView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"))
)]
async fn patch_tier(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchTier>,
) -> Result<Json<TierView>, ApiError> {
    let mut tier = find_tier(&state, &id).await?;
    let offers = match tier.offerer {
        Offerer::Platform => caller.is_admin(),
        Offerer::Creator(creator) => caller.may_act_for(creator),
    };
    if !offers || (body.suspended.is_some() && !caller.is_admin()) {
        return Err(ApiError::new(
            ProblemKind::Forbidden,
            "only the tier's offerer changes it, and only admins suspend",
        ));
    }
    if let Some(name) = &body.name {
        tier.name = check_name(name)?;
    }
    if let Some(price) = &body.price {
        tier.price = check_price(price)?;
    }
    if let Some(height) = body.max_height {
        tier.max_height = check_height(height)?;
    }
    if let Some(streams) = body.max_streams {
        tier.max_streams = check_streams(streams)?;
    }
    if body.description.is_some() {
        tier.description = check_description(body.description.as_deref())?;
    }
    if let Some(suspended) = body.suspended {
        tier.suspended = suspended;
    }
    state.db.update_tier(&tier).await?;
    Ok(Json(tier_view(&tier)))
}

fn membership_error(err: MembershipError) -> ApiError {
    match err {
        MembershipError::Refused(refusal) => commerce_error(refusal),
        MembershipError::Suspended => ApiError::custom(
            StatusCode::CONFLICT,
            "offerer-suspended",
            "Offerer suspended",
            "this tier is suspended and cannot be bought",
        ),
        MembershipError::Economics(err) => ApiError::bad_request(err.to_string()),
        MembershipError::Store(err) => ApiError::from(err),
        MembershipError::Statement(err) => ApiError::from(err),
    }
}

/// Join a tier from your available balance: a new period, an upgrade (the
/// difference for the rest of the period, at once) or a downgrade (at the
/// next renewal), by the spec's rules.
#[utoipa::path(
    post,
    path = "/api/v1/memberships",
    tag = "memberships",
    security(("bearer" = [])),
    request_body = JoinRequest,
    responses(
        (status = 201, body = MembershipView),
        (status = 404, description = "No such tier", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough balance, suspended offerer", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn join(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<JoinRequest>,
) -> Result<(StatusCode, Json<MembershipView>), ApiError> {
    let member = caller.account()?;
    let tier = find_tier(&state, &body.tier_id).await?;
    if tier.offerer == Offerer::Creator(member) {
        return Err(ApiError::bad_request("you cannot join your own tier"));
    }
    let key = transfer_id("join", body.id.as_deref())?;
    let (membership, kind) = state
        .memberships
        .join(
            member,
            &tier,
            body.auto_renew.unwrap_or(true),
            &key,
            now_ms(),
        )
        .await
        .map_err(membership_error)?;
    Ok((
        StatusCode::CREATED,
        Json(membership_view(&state, &membership, Some(kind)).await?),
    ))
}

/// Stop a membership's renewal; access lasts until it expires.
#[utoipa::path(
    delete,
    path = "/api/v1/memberships/{id}",
    tag = "memberships",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Membership id")),
    responses((status = 200, body = MembershipView), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn stop_renewal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<MembershipView>, ApiError> {
    let member = caller.account()?;
    if !state.db.set_auto_renew(&id, member, false).await? {
        return Err(ApiError::not_found("no such membership of yours"));
    }
    let membership = state
        .db
        .membership(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such membership"))?;
    Ok(Json(membership_view(&state, &membership, None).await?))
}

/// Your memberships, with renewal state.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/me/memberships",
    tag = "memberships",
    security(("bearer" = [])),
    responses((status = 200, body = MembershipList))
)]
async fn my_memberships(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<MembershipList>, ApiError> {
    let member = caller.account()?;
    let mut memberships = Vec::new();
    for membership in state.db.memberships_of(member).await? {
        memberships.push(membership_view(&state, &membership, None).await?);
    }
    Ok(Json(MembershipList { memberships }))
}

/// What you watched as a member, most recent first, with where to resume.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/me/history",
    tag = "memberships",
    security(("bearer" = [])),
    responses((status = 200, body = HistoryList))
)]
async fn my_history(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<HistoryList>, ApiError> {
    let member = caller.account()?;
    let history = state.db.history(member).await?;
    Ok(Json(HistoryList {
        history: history
            .into_iter()
            .map(|entry| HistoryEntry {
                stream_id: entry.stream_id,
                title: entry.title,
                position_ms: entry.position_ms,
                duration_ms: entry.duration_ms,
                updated_at: rfc3339(entry.updated_at_ms),
            })
            .collect(),
    }))
}

/// The pool's closed rounds, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/pool/rounds",
    tag = "memberships",
    params(RoundsQuery),
    responses((status = 200, body = RoundList), (status = 400, body = Problem, content_type = "application/problem+json"))
)]
async fn list_rounds(
    State(state): State<AppState>,
    Query(query): Query<RoundsQuery>,
) -> Result<Json<RoundList>, ApiError> {
    let creator = match query.creator.as_deref() {
        None | Some("") => None,
        Some(text) => Some(super::auth::parse_address(text)?),
    };
    let mut rounds = state.db.pool_rounds(100).await?;
    if let Some(creator) = creator {
        rounds.retain_mut(|round| {
            round.allocations.retain(|(c, _)| *c == creator);
            !round.allocations.is_empty()
        });
    }
    Ok(Json(RoundList {
        rounds: rounds.into_iter().map(round_view).collect(),
    }))
}

/// One closed round: totals, the statement's CID, the allocations.
#[utoipa::path(
    get,
    path = "/api/v1/pool/rounds/{round}",
    tag = "memberships",
    params(("round" = i64, Path, description = "Round number")),
    responses((status = 200, body = RoundView), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
async fn get_round(
    State(state): State<AppState>,
    Path(round): Path<i64>,
) -> Result<Json<RoundView>, ApiError> {
    let found = state
        .db
        .pool_rounds(i64::MAX)
        .await?
        .into_iter()
        .find(|r| r.round == round)
        .ok_or_else(|| ApiError::not_found("no such closed round"))?;
    Ok(Json(round_view(found)))
}

/// Sets a stream's member tiers (`access: members`): tier ids of the
/// stream's creator or the platform, or `platform` for any platform tier.
pub async fn apply_member_tiers(
    state: &AppState,
    stream: &mut StreamRecord,
    tiers: Option<&[String]>,
) -> Result<(), ApiError> {
    if let Some(tiers) = tiers {
        if tiers.len() > MAX_STREAM_TIERS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_STREAM_TIERS} tiers"
            )));
        }
        for id in tiers {
            if id == "platform" {
                continue;
            }
            let tier = state.db.tier(id).await?.ok_or_else(|| {
                ApiError::bad_request(format!("tiers: no tier {id}")).with(json!({ "tier_id": id }))
            })?;
            let owned = match tier.offerer {
                Offerer::Platform => true,
                Offerer::Creator(creator) => {
                    stream.owner.as_deref() == Some(&format!("{creator:#x}"))
                }
            };
            if !owned {
                return Err(ApiError::bad_request(format!(
                    "tiers: {id} is another creator's tier"
                )));
            }
        }
        stream.member_tiers = tiers.to_vec();
    }
    if stream.access == AccessMode::Members && stream.member_tiers.is_empty() {
        return Err(ApiError::bad_request(
            "a members stream needs tiers (tier ids, or \"platform\")",
        ));
    }
    Ok(())
}
