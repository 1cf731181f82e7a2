//! Tiers, memberships and their payments, what members were served per
//! round, where they are in what they watch, and the pool's rounds. A
//! membership's change and its payment (with the ledger transfers) commit
//! together, guarded against a concurrent change; a round closes once.

use sqlx::Row;
use sqlx::any::AnyRow;
use streamweave_ledger::{Address, Amount, Transfer};

use super::ledger::apply_batch;
use super::{
    CommerceRefusal, LedgerBatch, Statement, Store, decode_err, get_parsed, get_u64, row_by,
    rows_by, to_i64,
};

/// Who offers a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Offerer {
    /// Its revenue feeds the pool.
    Platform,
    /// Its revenue is split by the creator's policy.
    Creator(Address),
}

impl Offerer {
    pub fn to_text(self) -> String {
        match self {
            Offerer::Platform => "platform".into(),
            Offerer::Creator(address) => format!("{address:#x}"),
        }
    }

    pub fn parse(text: &str) -> Option<Offerer> {
        if text == "platform" {
            return Some(Offerer::Platform);
        }
        text.parse().ok().map(Offerer::Creator)
    }
}

/// A tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRecord {
    pub id: String,
    pub offerer: Offerer,
    pub name: String,
    pub description: String,
    pub price: Amount,
    pub period_seconds: u64,
    pub max_height: u32,
    pub max_streams: u32,
    pub suspended: bool,
    pub created_at_ms: i64,
}

/// A member's membership with one offerer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRecord {
    pub id: String,
    pub member: Address,
    pub offerer: Offerer,
    pub tier_id: String,
    /// A downgrade, taking effect at the next renewal.
    pub next_tier_id: Option<String>,
    pub expires_at_ms: i64,
    pub auto_renew: bool,
    /// Why the last automatic renewal failed (cleared by a payment).
    pub renewal_failure: Option<String>,
    pub renewal_failed_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// Why a membership was paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentKind {
    Join,
    Renewal,
    Upgrade,
}

impl PaymentKind {
    fn as_str(self) -> &'static str {
        match self {
            PaymentKind::Join => "join",
            PaymentKind::Renewal => "renewal",
            PaymentKind::Upgrade => "upgrade",
        }
    }
}

/// A membership payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipPayment {
    /// The idempotency id (`{member}:{key}`, or the renewal's).
    pub id: String,
    pub kind: PaymentKind,
    pub tier_id: String,
    pub amount: Amount,
    /// The part paid into the pool (platform tiers).
    pub pool_amount: Amount,
    pub round: i64,
}

/// A membership's new state with what pays for it, as computed by the
/// caller from `previous` (which must still be what is stored).
#[derive(Debug, Clone)]
pub struct MembershipWrite {
    /// The stored (tier, expiry) the change was computed from.
    pub previous: Option<(String, i64)>,
    pub membership: MembershipRecord,
    pub payment: Option<MembershipPayment>,
    pub transfers: Vec<Transfer>,
    pub now_ms: i64,
}

/// Served media and the furthest position of a member on one item in a
/// round (server-measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatchDelta {
    pub served_ms: u64,
    pub furthest_ms: u64,
}

/// A member and an item (stream id) they watched.
pub type MemberItem = (Address, String);

/// One member's watching of one item in a round, with what the pool needs
/// of the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundWatch {
    pub member: Address,
    pub stream_id: String,
    pub creator: Option<Address>,
    /// Videos: their duration; `None` for live streams.
    pub video_duration_ms: Option<u64>,
    pub served_ms: u64,
    pub furthest_ms: u64,
}

/// A history entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressRecord {
    pub stream_id: String,
    pub title: String,
    pub position_ms: u64,
    pub duration_ms: Option<u64>,
    pub updated_at_ms: i64,
}

/// A closed round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRecord {
    pub round: i64,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub contributions: Amount,
    pub view_inflow: Amount,
    pub carry_in: Amount,
    pub carry_out: Amount,
    pub mode: String,
    pub statement_cid: String,
    pub closed_at_ms: i64,
    pub allocations: Vec<(Address, Amount)>,
}

const TIER_COLUMNS: &str = "id, offerer, name, description, price, period_seconds, max_height, \
    max_streams, suspended, created_at_ms";
const MEMBERSHIP_COLUMNS: &str = "id, member, offerer, tier_id, next_tier_id, expires_at_ms, \
    auto_renew, renewal_failure, renewal_failed_at_ms, created_at_ms";

fn offerer_of(row: &AnyRow) -> Result<Offerer, sqlx::Error> {
    let text: &str = row.try_get("offerer")?;
    Offerer::parse(text).ok_or_else(|| decode_err(format!("bad offerer {text}")))
}

fn tier_row(row: &AnyRow) -> Result<TierRecord, sqlx::Error> {
    Ok(TierRecord {
        id: row.try_get("id")?,
        offerer: offerer_of(row)?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price: get_parsed(row, "price")?,
        period_seconds: get_u64(row, "period_seconds")?,
        max_height: u32::try_from(get_u64(row, "max_height")?).map_err(decode_err)?,
        max_streams: u32::try_from(get_u64(row, "max_streams")?).map_err(decode_err)?,
        suspended: row.try_get::<i64, _>("suspended")? != 0,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn membership_row(row: &AnyRow) -> Result<MembershipRecord, sqlx::Error> {
    Ok(MembershipRecord {
        id: row.try_get("id")?,
        member: get_parsed(row, "member")?,
        offerer: offerer_of(row)?,
        tier_id: row.try_get("tier_id")?,
        next_tier_id: row.try_get("next_tier_id")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        auto_renew: row.try_get::<i64, _>("auto_renew")? != 0,
        renewal_failure: row.try_get("renewal_failure")?,
        renewal_failed_at_ms: row.try_get("renewal_failed_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

/// Where voucher steps credit the pool's part before a round takes it.
pub fn view_pool_account() -> streamweave_ledger::AccountRef {
    streamweave_ledger::AccountRef::Revenue {
        owner: streamweave_ledger::economics::VIEW_POOL_RECIPIENT,
        asset: Address::ZERO,
    }
}

fn sum(amounts: impl IntoIterator<Item = Amount>) -> Result<Amount, sqlx::Error> {
    amounts.into_iter().try_fold(Amount(0), |total, amount| {
        total
            .checked_add(amount)
            .ok_or_else(|| decode_err("amounts overflow"))
    })
}

impl Store {
    pub async fn insert_tier(&self, tier: &TierRecord) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO tiers (id, offerer, name, description, price, period_seconds, max_height, \
             max_streams, suspended, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&tier.id)
        .bind(tier.offerer.to_text())
        .bind(&tier.name)
        .bind(&tier.description)
        .bind(tier.price.to_string())
        .bind(to_i64(tier.period_seconds))
        .bind(i64::from(tier.max_height))
        .bind(i64::from(tier.max_streams))
        .bind(i64::from(tier.suspended))
        .bind(tier.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Saves a tier's changes (a new price applies from the next renewal).
    pub async fn update_tier(&self, tier: &TierRecord) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE tiers SET name = $1, description = $2, price = $3, max_height = $4, \
             max_streams = $5, suspended = $6 WHERE id = $7",
        )
        .bind(&tier.name)
        .bind(&tier.description)
        .bind(tier.price.to_string())
        .bind(i64::from(tier.max_height))
        .bind(i64::from(tier.max_streams))
        .bind(i64::from(tier.suspended))
        .bind(&tier.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn tier(&self, id: &str) -> Result<Option<TierRecord>, sqlx::Error> {
        let sql = format!("SELECT {TIER_COLUMNS} FROM tiers WHERE id = $1");
        row_by(&self.pool, sql, id, tier_row).await
    }

    /// Tiers by price, optionally of one offerer.
    pub async fn tiers(&self, offerer: Option<Offerer>) -> Result<Vec<TierRecord>, sqlx::Error> {
        let mut select = Statement::new(&format!("SELECT {TIER_COLUMNS} FROM tiers"));
        if let Some(offerer) = offerer {
            select.push(" WHERE offerer = ").bind(offerer.to_text());
        }
        select.push(" ORDER BY created_at_ms, id LIMIT 1000");
        select
            .query()?
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(tier_row)
            .collect()
    }

    pub async fn membership(&self, id: &str) -> Result<Option<MembershipRecord>, sqlx::Error> {
        let sql = format!("SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE id = $1");
        row_by(&self.pool, sql, id, membership_row).await
    }

    pub async fn membership_with(
        &self,
        member: Address,
        offerer: Offerer,
    ) -> Result<Option<MembershipRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE member = $1 AND offerer = $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(format!("{member:#x}"))
            .bind(offerer.to_text())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(membership_row)
            .transpose()
    }

    pub async fn memberships_of(
        &self,
        member: Address,
    ) -> Result<Vec<MembershipRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE member = $1 ORDER BY created_at_ms, id"
        );
        rows_by(&self.pool, sql, &format!("{member:#x}"), membership_row).await
    }

    /// Memberships to renew now: auto-renewing, expired, and not failed in
    /// the last `retry_after_ms`.
    pub async fn memberships_due(
        &self,
        now_ms: i64,
        retry_after_ms: i64,
    ) -> Result<Vec<MembershipRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE auto_renew = 1 AND expires_at_ms <= $1 \
             AND (renewal_failed_at_ms IS NULL OR renewal_failed_at_ms <= $2) \
             ORDER BY expires_at_ms LIMIT 500"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms)
            .bind(now_ms.saturating_sub(retry_after_ms))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(membership_row)
            .collect()
    }

    /// Writes a membership's new state and its payment with the payment's
    /// transfers, all or nothing. A payment id already recorded answers the
    /// membership as it is (a retry); a membership changed since `previous`
    /// is `Changed`.
    pub async fn write_membership(
        &self,
        write: &MembershipWrite,
    ) -> Result<Result<MembershipRecord, CommerceRefusal>, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin_read_then_write())
            .await?;
        let m = &write.membership;
        if let Some(payment) = &write.payment {
            let earlier =
                sqlx::query("SELECT membership_id, tier_id FROM membership_payments WHERE id = $1")
                    .bind(&payment.id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(row) = earlier {
                // A retry is computed again from the state the first try
                // made (a renewal, say, where it was a join): the tier says
                // whether it is the same request.
                if row.try_get::<String, _>("tier_id")? != payment.tier_id {
                    return Ok(Err(CommerceRefusal::KeyReused));
                }
                let id: String = row.try_get("membership_id")?;
                let sql = format!("SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE id = $1");
                let stored = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                return Ok(Ok(membership_row(&stored)?));
            }
        }
        let sql = format!(
            "SELECT tier_id, expires_at_ms FROM memberships WHERE member = $1 AND offerer = $2{}",
            self.dialect.lock_rows()
        );
        let stored = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(format!("{:#x}", m.member))
            .bind(m.offerer.to_text())
            .fetch_optional(&mut *tx)
            .await?;
        let stored = match stored {
            Some(row) => Some((
                row.try_get::<String, _>("tier_id")?,
                row.try_get::<i64, _>("expires_at_ms")?,
            )),
            None => None,
        };
        if stored != write.previous {
            return Ok(Err(CommerceRefusal::Changed));
        }
        sqlx::query(
            "INSERT INTO memberships (id, member, offerer, tier_id, next_tier_id, expires_at_ms, \
             auto_renew, renewal_failure, renewal_failed_at_ms, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, $8) \
             ON CONFLICT (member, offerer) DO UPDATE SET tier_id = excluded.tier_id, \
             next_tier_id = excluded.next_tier_id, expires_at_ms = excluded.expires_at_ms, \
             auto_renew = excluded.auto_renew, renewal_failure = NULL, renewal_failed_at_ms = NULL",
        )
        .bind(&m.id)
        .bind(format!("{:#x}", m.member))
        .bind(m.offerer.to_text())
        .bind(&m.tier_id)
        .bind(&m.next_tier_id)
        .bind(m.expires_at_ms)
        .bind(i64::from(m.auto_renew))
        .bind(m.created_at_ms)
        .execute(&mut *tx)
        .await?;
        if let Some(payment) = &write.payment {
            sqlx::query(
                "INSERT INTO membership_payments (id, membership_id, member, tier_id, kind, amount, \
                 pool_amount, round, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&payment.id)
            .bind(&m.id)
            .bind(format!("{:#x}", m.member))
            .bind(&payment.tier_id)
            .bind(payment.kind.as_str())
            .bind(payment.amount.to_string())
            .bind(payment.pool_amount.to_string())
            .bind(payment.round)
            .bind(write.now_ms)
            .execute(&mut *tx)
            .await?;
        }
        let batch = LedgerBatch {
            transfers: write.transfers.clone(),
            channels: Vec::new(),
            ..Default::default()
        };
        if let Err(refusal) = apply_batch(&mut tx, self.dialect, &batch, write.now_ms).await? {
            return Ok(Err(refusal.into()));
        }
        tx.commit().await?;
        Ok(Ok(m.clone()))
    }

    /// Stops (or restarts) a membership's renewal; `false` if not the member's.
    pub async fn set_auto_renew(
        &self,
        id: &str,
        member: Address,
        auto_renew: bool,
    ) -> Result<bool, sqlx::Error> {
        let done =
            sqlx::query("UPDATE memberships SET auto_renew = $1 WHERE id = $2 AND member = $3")
                .bind(i64::from(auto_renew))
                .bind(id)
                .bind(format!("{member:#x}"))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records why a renewal failed (shown to the member; retried later).
    pub async fn record_renewal_failure(
        &self,
        id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE memberships SET renewal_failure = $1, renewal_failed_at_ms = $2 WHERE id = $3",
        )
        .bind(reason)
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds what members were served in a round (one transaction).
    pub async fn add_member_watch(
        &self,
        round: i64,
        deltas: &[(MemberItem, WatchDelta)],
    ) -> Result<(), sqlx::Error> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for ((member, stream_id), delta) in deltas {
            sqlx::query(
                "INSERT INTO member_watch (round, member, stream_id, served_ms, furthest_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (round, member, stream_id) DO UPDATE SET \
                 served_ms = member_watch.served_ms + excluded.served_ms, \
                 furthest_ms = CASE WHEN excluded.furthest_ms > member_watch.furthest_ms \
                 THEN excluded.furthest_ms ELSE member_watch.furthest_ms END",
            )
            .bind(round)
            .bind(format!("{member:#x}"))
            .bind(stream_id)
            .bind(to_i64(delta.served_ms))
            .bind(to_i64(delta.furthest_ms))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// What members were served in a round, with each item's creator and
    /// (videos) duration.
    pub async fn round_watch(&self, round: i64) -> Result<Vec<RoundWatch>, sqlx::Error> {
        sqlx::query(
            "SELECT w.member, w.stream_id, w.served_ms, w.furthest_ms, s.owner, s.source, s.duration_ms \
             FROM member_watch w JOIN streams s ON s.id = w.stream_id WHERE w.round = $1 \
             ORDER BY w.member, w.stream_id",
        )
        .bind(round)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            let upload = row.try_get::<&str, _>("source")? == "upload";
            Ok(RoundWatch {
                member: get_parsed(row, "member")?,
                stream_id: row.try_get("stream_id")?,
                creator: match row.try_get::<Option<&str>, _>("owner")? {
                    Some(text) => text.parse().ok(),
                    None => None,
                },
                video_duration_ms: if upload {
                    row.try_get::<Option<i64>, _>("duration_ms")?
                        .map(|ms| ms.max(0) as u64)
                } else {
                    None
                },
                served_ms: get_u64(row, "served_ms")?,
                furthest_ms: get_u64(row, "furthest_ms")?,
            })
        })
        .collect()
    }

    /// `C[m]` of a round: each member's pool part of platform-tier payments.
    pub async fn round_contributions(
        &self,
        round: i64,
    ) -> Result<Vec<(Address, Amount)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT member, pool_amount FROM membership_payments WHERE round = $1 AND pool_amount <> '0' \
             ORDER BY member",
        )
        .bind(round)
        .fetch_all(&self.pool)
        .await?;
        let mut by_member: std::collections::BTreeMap<Address, Amount> = Default::default();
        for row in &rows {
            let member: Address = get_parsed(row, "member")?;
            let amount: Amount = get_parsed(row, "pool_amount")?;
            let entry = by_member.entry(member).or_insert(Amount(0));
            *entry = sum([*entry, amount])?;
        }
        Ok(by_member.into_iter().collect())
    }

    /// `V`: what voucher steps credited to the view pool's recipient from
    /// `since_ms` (all of it when `None`) up to `until_ms`.
    pub async fn view_pool_inflow(
        &self,
        since_ms: Option<i64>,
        until_ms: i64,
    ) -> Result<Amount, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT CAST(amount AS TEXT) AS amount FROM ledger_transfers \
             WHERE credit = $1 AND created_at_ms >= $2 AND created_at_ms < $3",
        )
        .bind(view_pool_account().key())
        .bind(since_ms.unwrap_or(i64::MIN))
        .bind(until_ms)
        .fetch_all(&self.pool)
        .await?;
        sum(rows
            .iter()
            .map(|row| get_parsed::<Amount>(row, "amount"))
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Rounds after `after` and before `before` with pool money or
    /// members' watching in them, oldest first.
    pub async fn rounds_with_activity(
        &self,
        after: i64,
        before: i64,
    ) -> Result<Vec<i64>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT round FROM membership_payments WHERE round > $1 AND round < $2 AND pool_amount <> '0' \
             UNION SELECT round FROM member_watch WHERE round > $1 AND round < $2 ORDER BY round",
        )
        .bind(after)
        .bind(before)
        .fetch_all(&self.pool)
        .await
    }

    /// Records a member's position in an item (resume).
    pub async fn set_progress(
        &self,
        member: Address,
        stream_id: &str,
        position_ms: u64,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO watch_progress (member, stream_id, position_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (member, stream_id) DO UPDATE SET \
             position_ms = excluded.position_ms, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(format!("{member:#x}"))
        .bind(stream_id)
        .bind(to_i64(position_ms))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What a member watched, most recent first.
    pub async fn history(&self, member: Address) -> Result<Vec<ProgressRecord>, sqlx::Error> {
        sqlx::query(
            "SELECT p.stream_id, s.title, p.position_ms, s.duration_ms, p.updated_at_ms \
             FROM watch_progress p JOIN streams s ON s.id = p.stream_id WHERE p.member = $1 \
             ORDER BY p.updated_at_ms DESC LIMIT 200",
        )
        .bind(format!("{member:#x}"))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(ProgressRecord {
                stream_id: row.try_get("stream_id")?,
                title: row.try_get("title")?,
                position_ms: get_u64(row, "position_ms")?,
                duration_ms: row
                    .try_get::<Option<i64>, _>("duration_ms")?
                    .map(|ms| ms.max(0) as u64),
                updated_at_ms: row.try_get("updated_at_ms")?,
            })
        })
        .collect()
    }

    /// Closes a round: its record, its allocations and the transfers out of
    /// the pool in one transaction. `false` when it was closed already.
    pub async fn close_pool_round(
        &self,
        round: &RoundRecord,
        transfers: &[Transfer],
    ) -> Result<Result<bool, CommerceRefusal>, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin_read_then_write())
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO pool_rounds (round, starts_at_ms, ends_at_ms, contributions, view_inflow, \
             carry_in, carry_out, mode, statement_cid, closed_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (round) DO NOTHING",
        )
        .bind(round.round)
        .bind(round.starts_at_ms)
        .bind(round.ends_at_ms)
        .bind(round.contributions.to_string())
        .bind(round.view_inflow.to_string())
        .bind(round.carry_in.to_string())
        .bind(round.carry_out.to_string())
        .bind(&round.mode)
        .bind(&round.statement_cid)
        .bind(round.closed_at_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            return Ok(Ok(false));
        }
        for (creator, amount) in &round.allocations {
            sqlx::query(
                "INSERT INTO pool_allocations (round, creator, amount) VALUES ($1, $2, $3)",
            )
            .bind(round.round)
            .bind(format!("{creator:#x}"))
            .bind(amount.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let batch = LedgerBatch {
            transfers: transfers.to_vec(),
            channels: Vec::new(),
            ..Default::default()
        };
        if let Err(refusal) = apply_batch(&mut tx, self.dialect, &batch, round.closed_at_ms).await?
        {
            return Ok(Err(refusal.into()));
        }
        tx.commit().await?;
        Ok(Ok(true))
    }

    /// Closed rounds, newest first (with their allocations).
    pub async fn pool_rounds(&self, limit: i64) -> Result<Vec<RoundRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT round, starts_at_ms, ends_at_ms, contributions, view_inflow, carry_in, carry_out, \
             mode, statement_cid, closed_at_ms FROM pool_rounds ORDER BY round DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut rounds = Vec::with_capacity(rows.len());
        for row in &rows {
            let number: i64 = row.try_get("round")?;
            let allocations = sqlx::query(
                "SELECT creator, amount FROM pool_allocations WHERE round = $1 ORDER BY creator",
            )
            .bind(number)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok((get_parsed(row, "creator")?, get_parsed(row, "amount")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            rounds.push(RoundRecord {
                round: number,
                starts_at_ms: row.try_get("starts_at_ms")?,
                ends_at_ms: row.try_get("ends_at_ms")?,
                contributions: get_parsed(row, "contributions")?,
                view_inflow: get_parsed(row, "view_inflow")?,
                carry_in: get_parsed(row, "carry_in")?,
                carry_out: get_parsed(row, "carry_out")?,
                mode: row.try_get("mode")?,
                statement_cid: row.try_get("statement_cid")?,
                closed_at_ms: row.try_get("closed_at_ms")?,
                allocations,
            });
        }
        Ok(rounds)
    }

    /// What the audit checks of the pool: it holds the last closed round's
    /// carry plus the pool parts paid in rounds not closed yet.
    pub async fn audit_pool(&self) -> Result<Vec<String>, sqlx::Error> {
        let last = self.pool_rounds(1).await?.into_iter().next();
        let (after, carry) = last
            .as_ref()
            .map_or((i64::MIN, Amount(0)), |r| (r.round, r.carry_out));
        let rows = sqlx::query("SELECT pool_amount FROM membership_payments WHERE round > $1")
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        let open = sum(rows
            .iter()
            .map(|row| get_parsed::<Amount>(row, "pool_amount"))
            .collect::<Result<Vec<_>, _>>()?)?;
        let expected = sum([carry, open])?;
        let held = self
            .balance(&streamweave_ledger::AccountRef::Pool {
                asset: Address::ZERO,
            })
            .await?;
        let mut violations = Vec::new();
        if held != streamweave_ledger::Balance::from(expected) {
            violations.push(format!(
                "the pool holds {held} but the last carry plus open rounds' contributions is {expected}"
            ));
        }
        // The view pool's recipient holds what voucher steps credited it
        // since the last round took its `V`.
        let since = last.map(|r| r.ends_at_ms);
        let waiting = self.view_pool_inflow(since, i64::MAX).await?;
        let held = self.balance(&view_pool_account()).await?;
        if held != streamweave_ledger::Balance::from(waiting) {
            violations.push(format!(
                "the view pool's recipient holds {held} but voucher steps credited it {waiting} since the last round"
            ));
        }
        Ok(violations)
    }
}
