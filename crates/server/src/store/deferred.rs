//! Deferred voucher steps: where several nodes share a PostgreSQL
//! database, a voucher writes only its channel's row (the new amount and
//! signature, over the row's revision) and the row keeps the amount its
//! transfers reach; a fold later writes the waiting steps' transfers and
//! balances as one step and clears the mark, holding the rows' locks. The
//! row is the one place every node reads, so a step is seen by all of them
//! the moment it is durable and no two nodes fold it twice.

use std::collections::BTreeMap;

use sqlx::Row;
use streamweave_ledger::{AccountRef, Amount, B256, Balance, Channel, Transfer};

use super::ledger::{LedgerBatch, apply_batch, channel_row};
use super::{Statement, Store, get_parsed};

/// Which channels' waiting steps a fold takes.
#[derive(Debug, Clone, Copy)]
pub enum DeferredFold<'a> {
    /// Those whose first waiting step was accepted at or before
    /// `first_accepted_by_ms`, or before `round_start_ms` (an ended pool
    /// round), the oldest first, at most `limit`; rows another node holds
    /// are left to it.
    Waited {
        first_accepted_by_ms: i64,
        round_start_ms: i64,
        limit: usize,
    },
    /// These channels' (rows another node holds are skipped); with
    /// `begun_before_ms`, only those whose first waiting step was accepted
    /// before it (the start of the current pool round).
    Channels {
        ids: &'a [B256],
        begun_before_ms: Option<i64>,
    },
    /// Every step accepted at or before `accepted_by_ms`: the fold goes on
    /// until none is left, waiting for rows held elsewhere.
    All { accepted_by_ms: i64 },
}

/// Why a fold failed.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    /// A channel's waiting steps do not make transfers (never for states
    /// the engine wrote), or the ledger refused them: nothing was folded.
    #[error("channel {channel:#x}: {reason}")]
    Step { channel: B256, reason: String },
    #[error("the ledger refused a fold: {0}")]
    Refused(super::Refusal),
    #[error("rows with waiting steps stayed locked by other nodes")]
    Busy,
}

/// Narrows a selection of channel rows to those whose voucher steps may
/// move one of `accounts` (a superset: the caller's exact test,
/// [`Channel::step_moves`], runs on each row read). A platform account is
/// moved by every channel; a channel's own accounts by that row; a
/// recipient's revenue by the rows whose body names the recipient.
fn narrow_to_steps_moving(select: &mut Statement, accounts: &[AccountRef]) {
    if accounts
        .iter()
        .any(|account| matches!(account, AccountRef::Platform { .. }))
    {
        return;
    }
    select.push(" AND (1 = 0");
    for account in accounts {
        match account {
            AccountRef::Escrow { channel } | AccountRef::Clearing { channel } => {
                select.push(" OR id = ").bind(format!("{channel:#x}"));
            }
            AccountRef::Revenue { owner, .. } => {
                select
                    .push(" OR LOWER(body) LIKE ")
                    .bind(format!("%{owner:x}%"));
            }
            _ => {}
        }
    }
    select.push(")");
}

/// Channels one fold's transaction takes at most.
const FOLD_ROWS: usize = 256;
/// Passes of an `All` fold that find nothing to take while rows wait
/// (held by another node's write) before it gives up.
const ALL_PASSES: usize = 2_000;

impl Store {
    /// Folds waiting voucher steps (see the module): `transfers` makes the
    /// transfers of a channel's steps from the amount its transfers reach
    /// to its current state; `round_of` names the pool round of a time (a
    /// fold's transfers carry the time of its latest step, and one commit
    /// writes the steps of each round apart). Answers how many channels it
    /// folded.
    pub async fn fold_deferred<F, R>(
        &self,
        which: DeferredFold<'_>,
        transfers: F,
        round_of: R,
    ) -> Result<usize, FoldError>
    where
        F: Fn(&Channel, Amount) -> Result<Vec<Transfer>, String>,
        R: Fn(i64) -> i64,
    {
        match which {
            DeferredFold::All { accepted_by_ms } => {
                let mut folded = 0;
                let mut idle_passes = 0;
                loop {
                    let pass = self
                        .fold_pass(which, FOLD_ROWS, &transfers, &round_of)
                        .await?;
                    folded += pass;
                    if pass > 0 {
                        continue;
                    }
                    if self.waiting_steps(accepted_by_ms).await? == 0 {
                        return Ok(folded);
                    }
                    idle_passes += 1;
                    if idle_passes >= ALL_PASSES {
                        return Err(FoldError::Busy);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            DeferredFold::Waited { limit, .. } => {
                self.fold_pass(which, limit, &transfers, &round_of).await
            }
            DeferredFold::Channels {
                ids,
                begun_before_ms,
            } => {
                let mut folded = 0;
                for chunk in ids.chunks(FOLD_ROWS) {
                    folded += self
                        .fold_pass(
                            DeferredFold::Channels {
                                ids: chunk,
                                begun_before_ms,
                            },
                            chunk.len(),
                            &transfers,
                            &round_of,
                        )
                        .await?;
                }
                Ok(folded)
            }
        }
    }

    /// Channels whose first waiting step was accepted at or before `by_ms`.
    async fn waiting_steps(&self, by_ms: i64) -> Result<i64, sqlx::Error> {
        sqlx::query(
            "SELECT COUNT(*) AS waiting FROM channels \
             WHERE folded_redeemed IS NOT NULL AND unfolded_first_ms <= $1",
        )
        .bind(by_ms)
        .fetch_one(&self.pool)
        .await?
        .try_get("waiting")
    }

    /// Channels with waiting steps, as the audit reads them: each one's
    /// state as its transfers reach it (the amount they moved, the rest of
    /// its row as it is now).
    pub async fn channels_as_folded(&self) -> Result<(Vec<Channel>, usize), sqlx::Error> {
        if self.dialect != super::Dialect::Postgres {
            return Ok((self.channels().await?, 0));
        }
        let rows = sqlx::query(
            "SELECT body, revision, CAST(folded_redeemed AS TEXT) AS folded_redeemed \
             FROM channels ORDER BY created_at_ms, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut waiting = 0;
        let mut channels = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut channel = channel_row(row)?;
            if let Some(folded) = row.try_get::<Option<&str>, _>("folded_redeemed")? {
                channel.redeemed = folded.parse().map_err(super::decode_err)?;
                waiting += 1;
            }
            channels.push(channel);
        }
        Ok((channels, waiting))
    }

    /// Channels with waiting steps (each one's current state and the
    /// amount its transfers reach) and the stored balances of `accounts`,
    /// read in one snapshot, so that a fold committing meanwhile is either
    /// in both or in neither.
    pub async fn deferred_with_balances(
        &self,
        accounts: &[AccountRef],
    ) -> Result<(Vec<(Channel, Amount)>, Vec<Balance>), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut select = Statement::new(
            "SELECT body, revision, CAST(folded_redeemed AS TEXT) AS folded_redeemed \
             FROM channels WHERE folded_redeemed IS NOT NULL",
        );
        narrow_to_steps_moving(&mut select, accounts);
        let rows = select.query()?.fetch_all(&mut *tx).await?;
        let mut waiting = Vec::with_capacity(rows.len());
        for row in &rows {
            waiting.push((channel_row(row)?, get_parsed(row, "folded_redeemed")?));
        }
        let mut balances = Vec::with_capacity(accounts.len());
        for account in accounts {
            let row = sqlx::query(
                "SELECT CAST(balance AS TEXT) AS balance FROM ledger_accounts WHERE key = $1",
            )
            .bind(account.key())
            .fetch_optional(&mut *tx)
            .await?;
            balances.push(match row {
                Some(row) => get_parsed(&row, "balance")?,
                None => Balance::ZERO,
            });
        }
        tx.commit().await?;
        Ok((waiting, balances))
    }

    /// One transaction of a fold: locks up to `limit` rows with waiting
    /// steps, writes their transfers and balances, clears their marks.
    async fn fold_pass<F, R>(
        &self,
        which: DeferredFold<'_>,
        limit: usize,
        transfers: &F,
        round_of: &R,
    ) -> Result<usize, FoldError>
    where
        F: Fn(&Channel, Amount) -> Result<Vec<Transfer>, String>,
        R: Fn(i64) -> i64,
    {
        let mut select = Statement::new(
            "SELECT body, revision, CAST(folded_redeemed AS TEXT) AS folded_redeemed, \
             unfolded_last_ms FROM channels WHERE folded_redeemed IS NOT NULL AND ",
        );
        match which {
            DeferredFold::Waited {
                first_accepted_by_ms,
                round_start_ms,
                ..
            } => {
                select
                    .push("(unfolded_first_ms <= ")
                    .bind(first_accepted_by_ms)
                    .push(" OR unfolded_first_ms < ")
                    .bind(round_start_ms)
                    .push(")");
            }
            DeferredFold::All { accepted_by_ms } => {
                select.push("unfolded_first_ms <= ").bind(accepted_by_ms);
            }
            DeferredFold::Channels {
                ids,
                begun_before_ms,
            } => {
                if ids.is_empty() {
                    return Ok(0);
                }
                select.push("id IN (");
                for (index, id) in ids.iter().enumerate() {
                    if index > 0 {
                        select.push(", ");
                    }
                    select.bind(format!("{id:#x}"));
                }
                select.push(")");
                if let Some(begun_before_ms) = begun_before_ms {
                    select
                        .push(" AND unfolded_first_ms < ")
                        .bind(begun_before_ms);
                }
            }
        }
        select
            .push(" ORDER BY unfolded_first_ms, id LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .push(" FOR UPDATE SKIP LOCKED");
        let mut tx = self.pool.begin().await?;
        let rows = select.query()?.fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        // Per pool round of the latest step: its transfers, stamped then.
        let mut by_round: BTreeMap<i64, (LedgerBatch, i64)> = BTreeMap::new();
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let current = channel_row(row)?;
            let folded_redeemed: Amount = get_parsed(row, "folded_redeemed")?;
            let last_ms: i64 = row.try_get("unfolded_last_ms")?;
            let moved = transfers(&current, folded_redeemed).map_err(|reason| FoldError::Step {
                channel: current.id,
                reason,
            })?;
            let (batch, stamp_ms) = by_round.entry(round_of(last_ms)).or_default();
            batch.transfers.extend(moved);
            *stamp_ms = (*stamp_ms).max(last_ms);
            ids.push(current.id);
        }
        for (batch, stamp_ms) in by_round.values() {
            if let Err(refusal) = apply_batch(&mut tx, self.dialect, batch, *stamp_ms).await? {
                tx.rollback().await?;
                return Err(FoldError::Refused(refusal));
            }
        }
        let mut clear = Statement::new(
            "UPDATE channels SET folded_redeemed = NULL, unfolded_first_ms = NULL, \
             unfolded_last_ms = NULL WHERE id IN (",
        );
        for (index, id) in ids.iter().enumerate() {
            if index > 0 {
                clear.push(", ");
            }
            clear.bind(format!("{id:#x}"));
        }
        clear.push(")");
        clear.query()?.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(ids.len())
    }
}
