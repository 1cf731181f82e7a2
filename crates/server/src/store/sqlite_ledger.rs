//! The embedded database's hot writes: one connection of their own, on a
//! thread of its own, with statements prepared once. They are the ledger's
//! commits and the watch statistics written every second.
//!
//! Every other query of the embedded database goes through sqlx, whose
//! SQLite driver hands each statement to its connection's worker thread and
//! back, and whose `Any` layer converts every value on the way. A group
//! commit of vouchers is a few statements per row; done that way, most of
//! the engine's time went to the hand-offs and the conversions. This writer
//! takes a whole group in one message, runs it with cached prepared
//! statements in one `BEGIN IMMEDIATE` transaction (no savepoint unless a
//! batch is refused), and answers once it is durable (`synchronous = FULL`).
//! It checkpoints the WAL every 8000 pages (32 MiB at 4 KiB) rather than
//! SQLite's 1000: the same hot pages (channels, balances, the indexes'
//! newest leaves) are rewritten by many commits, and a checkpoint copies
//! each once however often it changed.
//! Its page cache is 64 MiB rather than SQLite's 2 MiB: a group of vouchers
//! on thousands of channels dirties more pages than 2 MiB holds, which
//! SQLite then spills to the WAL before the commit and reads back.
//!
//! The watch statistics go through the same thread for the same reason and
//! one more: SQLite has one writer at a time, and a second's statistics of
//! 10,000 viewers written through sqlx held the write lock for hundreds of
//! round trips, while the ledger's next commit slept in SQLite's busy
//! handler (at 10,000 paying viewers, 35-40 % of the writer's time went to
//! waiting for that lock). On one thread the two take turns without
//! waiting for each other.
//!
//! Its rules are those of [`super::ledger`]'s commit and
//! [`super::Store::add_viewer_stats`] on PostgreSQL, and the store suite
//! runs them on both.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use streamweave_ledger::{Address, Balance, Channel};
use tokio::sync::{mpsc, oneshot};

use super::decode_err;
use super::ledger::{
    LedgerBatch, Refusal, TransferRow, account_columns, last_states, merge, net_deltas,
    order_independent,
};
use crate::money::stats::ViewerDelta;

/// Jobs waiting for the writer (the engine sends one group at a time, the
/// statistics one batch a second).
const QUEUE: usize = 16;

type Outcome = Result<Vec<Result<(), Refusal>>, sqlx::Error>;

/// Watch statistics to add, per stream and viewer.
pub(super) type ViewerStats = Vec<((String, Address), ViewerDelta)>;

enum Job {
    Commit {
        batches: Vec<LedgerBatch>,
        now_ms: i64,
        reply: oneshot::Sender<Outcome>,
    },
    ViewerStats {
        rows: ViewerStats,
        reply: oneshot::Sender<Result<(), sqlx::Error>>,
    },
}

/// The handle of the writer thread; the thread ends when the last handle
/// is dropped.
#[derive(Clone)]
pub(super) struct SqliteLedger {
    jobs: mpsc::Sender<Job>,
}

fn sql(err: rusqlite::Error) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(err))
}

impl SqliteLedger {
    /// Opens the database file (already migrated) and starts the writer.
    pub(super) fn start(path: &Path) -> Result<SqliteLedger, sqlx::Error> {
        let connection = Connection::open(path).map_err(sql)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                 PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 8000; \
                 PRAGMA cache_size = -65536",
            )
            .map_err(sql)?;
        // While another connection writes, look again every quarter of a
        // millisecond (SQLite's own busy timeout sleeps up to 100 ms between
        // looks, long after the lock is free), for at most 5 s.
        connection
            .busy_handler(Some(|tries: i32| {
                std::thread::sleep(std::time::Duration::from_micros(250));
                tries < 20_000
            }))
            .map_err(sql)?;
        connection.set_prepared_statement_cache_capacity(32);
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                let mut connection = connection;
                while let Some(job) = queue.blocking_recv() {
                    match job {
                        Job::Commit {
                            batches,
                            now_ms,
                            reply,
                        } => {
                            let _ = reply.send(commit(&mut connection, &batches, now_ms));
                        }
                        Job::ViewerStats { rows, reply } => {
                            let _ = reply.send(add_viewer_stats(&mut connection, &rows));
                        }
                    }
                }
            })
            .map_err(sqlx::Error::Io)?;
        Ok(SqliteLedger { jobs })
    }

    /// Commits a group (see [`super::Store::commit`]).
    pub(super) async fn commit(&self, batches: &[LedgerBatch], now_ms: i64) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let job = Job::Commit {
            batches: batches.to_vec(),
            now_ms,
            reply,
        };
        self.jobs.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Adds watch statistics (see [`super::Store::add_viewer_stats`]).
    pub(super) async fn add_viewer_stats(&self, rows: ViewerStats) -> Result<(), sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        let job = Job::ViewerStats { rows, reply };
        self.jobs.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn gone() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other("the ledger writer stopped"))
}

/// Adds each viewer's delta to its stored row, all in one transaction.
fn add_viewer_stats(connection: &mut Connection, rows: &ViewerStats) -> Result<(), sqlx::Error> {
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    {
        let mut read = tx
            .prepare_cached(
                "SELECT first_session_ms, sessions, paid_media_ms, gross, net, fee \
                 FROM stream_viewers WHERE stream_id = ?1 AND viewer = ?2",
            )
            .map_err(sql)?;
        let mut write = tx
            .prepare_cached(
                "INSERT INTO stream_viewers \
                 (stream_id, viewer, first_session_ms, sessions, paid_media_ms, gross, net, fee) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (stream_id, viewer) DO UPDATE SET first_session_ms = excluded.first_session_ms, \
                 sessions = excluded.sessions, paid_media_ms = excluded.paid_media_ms, \
                 gross = excluded.gross, net = excluded.net, fee = excluded.fee",
            )
            .map_err(sql)?;
        for ((stream_id, viewer), delta) in rows {
            let viewer = format!("{viewer:#x}");
            let stored = read
                .query_row(params![stream_id, viewer], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, String>(5)?,
                    ))
                })
                .optional()
                .map_err(sql)?;
            let stored = match stored {
                None => ViewerDelta::default(),
                Some((first_session_ms, sessions, paid_media_ms, gross, net, fee)) => ViewerDelta {
                    session_started_ms: Some(first_session_ms),
                    sessions: sessions.max(0) as u64,
                    paid_media_ms: paid_media_ms.max(0) as u64,
                    gross: gross.parse().map_err(decode_err)?,
                    net: net.parse().map_err(decode_err)?,
                    fee: fee.parse().map_err(decode_err)?,
                },
            };
            let sum = stored
                .merged(delta)
                .ok_or_else(|| sqlx::Error::Protocol("watch statistics overflow".into()))?;
            let Some(first_session_ms) = sum.session_started_ms else {
                // As on PostgreSQL: a delta without a counted session is a bug.
                tracing::warn!(stream = %stream_id, %viewer, "watch statistics without a session; skipped");
                continue;
            };
            write
                .execute(params![
                    stream_id,
                    viewer,
                    first_session_ms,
                    super::to_i64(sum.sessions),
                    super::to_i64(sum.paid_media_ms),
                    sum.gross.to_string(),
                    sum.net.to_string(),
                    sum.fee.to_string()
                ])
                .map_err(sql)?;
        }
    }
    tx.commit().map_err(sql)
}

/// One group in one transaction: all batches at once when no batch can
/// depend on another's order, else each under a savepoint so that a refused
/// one leaves the others.
fn commit(connection: &mut Connection, batches: &[LedgerBatch], now_ms: i64) -> Outcome {
    if batches.len() > 1 && order_independent(batches) {
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        if apply(&tx, &merge(batches), now_ms)?.is_ok() {
            tx.commit().map_err(sql)?;
            return Ok(vec![Ok(()); batches.len()]);
        }
        tx.rollback().map_err(sql)?;
    }
    let mut tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let mut results = Vec::with_capacity(batches.len());
    for batch in batches {
        let savepoint = tx.savepoint().map_err(sql)?;
        match apply(&savepoint, batch, now_ms)? {
            Ok(()) => {
                savepoint.commit().map_err(sql)?;
                results.push(Ok(()));
            }
            Err(refusal) => {
                savepoint.finish().map_err(sql)?;
                results.push(Err(refusal));
            }
        }
    }
    tx.commit().map_err(sql)?;
    Ok(results)
}

/// One batch's writes, or why it is refused (the caller rolls back).
fn apply(
    connection: &Connection,
    batch: &LedgerBatch,
    now_ms: i64,
) -> Result<Result<(), Refusal>, sqlx::Error> {
    // 0. A fold deletes the journal's rows it folds first (their steps are
    //    in this batch).
    if let Some(below) = batch.journal_folded_below {
        connection
            .prepare_cached("DELETE FROM voucher_journal WHERE seq < ?1")
            .map_err(sql)?
            .execute([below])
            .map_err(sql)?;
    }
    // 1. Channels: the last state of each, only over its base revision.
    for (base, channel, deferred) in last_states(&batch.channels)? {
        if deferred.is_some() {
            return Err(sqlx::Error::Protocol(
                "deferred voucher steps are for a database several nodes share".into(),
            ));
        }
        if !write_channel(connection, base, channel, now_ms)? {
            return Ok(Err(Refusal::ChannelChanged(channel.id)));
        }
    }
    // 2. Transfers; an id already present is a retry and moves nothing,
    //    provided it carries the same transfer.
    let mut inserted = HashSet::new();
    let mut insert = connection
        .prepare_cached(
            "INSERT INTO ledger_transfers (id, debit, credit, body, asset, amount, kind, channel, created_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
        )
        .map_err(sql)?;
    let mut stored_body = connection
        .prepare_cached("SELECT body FROM ledger_transfers WHERE id = ?1")
        .map_err(sql)?;
    for transfer in &batch.transfers {
        let row = TransferRow::new(transfer)?;
        let written = insert
            .execute(params![
                row.id,
                row.debit,
                row.credit,
                row.body,
                row.asset,
                row.amount,
                row.kind,
                row.channel,
                now_ms
            ])
            .map_err(sql)?;
        if written == 1 {
            inserted.insert(transfer.id.clone());
        } else if !inserted.contains(&transfer.id) {
            let kept: Option<String> = stored_body
                .query_row([&row.id], |r| r.get(0))
                .optional()
                .map_err(sql)?;
            if kept.is_some_and(|kept| kept != row.body) {
                return Ok(Err(Refusal::IdempotencyConflict(transfer.id.clone())));
            }
        }
    }
    // 3. Net balance change per account, checked against the stored balance.
    let deltas = match net_deltas(&batch.transfers, &inserted) {
        Ok(deltas) => deltas,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let mut read = connection
        .prepare_cached("SELECT balance FROM ledger_accounts WHERE key = ?1")
        .map_err(sql)?;
    let mut write = connection
        .prepare_cached(
            "INSERT INTO ledger_accounts (key, kind, owner, asset, balance) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (key) DO UPDATE SET balance = excluded.balance",
        )
        .map_err(sql)?;
    for (account, delta) in deltas {
        let key = account.key();
        let stored: Option<String> = read
            .query_row([&key], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        let stored = match stored {
            Some(text) => text.parse::<Balance>().map_err(decode_err)?,
            None => Balance::ZERO,
        };
        let Some(next) = stored.checked_add(delta) else {
            return Ok(Err(Refusal::Overflow(key)));
        };
        if next.is_negative() && !account.may_go_negative() {
            return Ok(Err(Refusal::Insufficient(key)));
        }
        let (kind, owner, asset) = account_columns(&account);
        write
            .execute(params![key, kind, owner, asset, next.to_string()])
            .map_err(sql)?;
    }
    // 4. Vouchers kept in the journal: one small row each, appended.
    if !batch.journal.is_empty() {
        let mut append = connection
            .prepare_cached(
                "INSERT INTO voucher_journal (seq, channel, amount, signature, accepted_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(sql)?;
        for entry in &batch.journal {
            append
                .execute(params![
                    entry.seq,
                    format!("{:#x}", entry.channel),
                    entry.amount.to_string(),
                    entry.signature,
                    entry.accepted_at_ms
                ])
                .map_err(sql)?;
        }
    }
    Ok(Ok(()))
}

/// Stores a channel's state over `base` (`None`: a new channel); false when
/// the stored row is not the one it was built on.
fn write_channel(
    connection: &Connection,
    base: Option<u64>,
    channel: &Channel,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let revision = |value: u64| i64::try_from(value).map_err(decode_err);
    let body = serde_json::to_string(channel).map_err(decode_err)?;
    let id = format!("{:#x}", channel.id);
    let written = match base {
        None => connection
            .prepare_cached(
                "INSERT INTO channels (id, payer, payee, state, body, created_at_ms, updated_at_ms, revision) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7) ON CONFLICT (id) DO NOTHING",
            )
            .map_err(sql)?
            .execute(params![
                id,
                format!("{:#x}", channel.payer),
                format!("{:#x}", channel.payee),
                channel.state.name(),
                body,
                now_ms,
                revision(channel.revision)?
            ])
            .map_err(sql)?,
        Some(base) => connection
            .prepare_cached(
                "UPDATE channels SET state = ?2, body = ?3, revision = ?4, updated_at_ms = ?5 \
                 WHERE id = ?1 AND revision = ?6",
            )
            .map_err(sql)?
            .execute(params![
                id,
                channel.state.name(),
                body,
                revision(channel.revision)?,
                now_ms,
                revision(base)?
            ])
            .map_err(sql)?,
    };
    Ok(written == 1)
}
