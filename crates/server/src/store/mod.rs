//! The data layer: every table of the node, on SQLite (the embedded
//! default, `streamweave.sqlite` in the data directory) or on PostgreSQL
//! (`--database postgres://...`), through one code path per operation.
//!
//! Queries go through sqlx's `Any` driver and are written once, with `$N`
//! placeholders; where the two databases differ (locking, the ledger's
//! amount type) the difference is a named method of [`Dialect`]. Each
//! database has its own migrations (`migrations/sqlite`,
//! `migrations/postgres`) that give both the same tables, columns and
//! meanings. Every backend passes the same suite (`store::suite`).

mod accounts;
mod archives;
mod chain;
mod chat;
mod deferred;
pub mod dialect;
mod events;
mod ledger;
mod memberships;
mod sessions;
mod sqlite_ledger;
mod stats;
mod streams;
#[cfg(test)]
pub(crate) mod suite;
mod videos;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Executor, Row};

pub use chain::ChainTxRecord;
pub use chat::TipTotals;
pub use deferred::{DeferredFold, FoldError};
pub use dialect::Dialect;
pub use events::{
    CollectibleRecord, CommerceRefusal, EventRecord, EventState, EventTipRecord, Finalization,
    ItemKind, ListingFilter, ListingRecord, ListingState, Sale, TicketPurchase, TicketRecord,
    random_id,
};
pub use ledger::{ChannelWrite, DeferredStep, JournalEntry, LedgerBatch, Refusal};
pub use memberships::{
    MemberItem, MembershipPayment, MembershipRecord, MembershipWrite, Offerer, PaymentKind,
    RoundRecord, TierRecord, WatchDelta, view_pool_account,
};
pub use sessions::{Admission, AdmittedSessionRecord, PlaySessionRecord};
pub use streams::StreamFilter;
pub use videos::{JobEnd, VideoJob};

/// The file of the embedded database in a data directory.
pub const SQLITE_FILE: &str = "streamweave.sqlite";

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no StreamWeave data in {}", .0.display())]
    NoData(PathBuf),
    #[error("--database must be a postgres:// URL, not {0:?}")]
    UnsupportedUrl(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Every table of the node, on one database. Cheap to clone (a pool).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// This node's name, recorded on the streams it ingests.
    node: Arc<str>,
    /// On SQLite, the ledger's commits run on a connection and thread of
    /// their own ([`sqlite_ledger`]).
    sqlite_ledger: Option<sqlite_ledger::SqliteLedger>,
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Store {
    /// The node's store: PostgreSQL when `database` is given (then nothing
    /// is written to the data directory's SQLite), else the embedded
    /// database in `data_dir` (created if missing). Migrates either.
    pub async fn open(data_dir: &Path, database: Option<&str>) -> Result<Store, OpenError> {
        match database {
            Some(url) if is_postgres_url(url) => Store::postgres(url).await,
            Some(other) => Err(OpenError::UnsupportedUrl(other.to_string())),
            None => Store::sqlite(data_dir).await,
        }
    }

    /// Answers when the database does (readiness checks).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Opens (creating if needed) the embedded database under `data_dir`:
    /// WAL, durable commits, foreign keys, a busy timeout.
    pub async fn sqlite(data_dir: &Path) -> Result<Store, OpenError> {
        sqlx::any::install_default_drivers();
        // Absolute, so no part of a relative path is read as a URL's host.
        let path = std::path::absolute(data_dir.join(SQLITE_FILE))
            .map_err(|err| OpenError::Database(sqlx::Error::Io(err)))?;
        let url = format!("sqlite://{}?mode=rwc", url_path(&path));
        let pool = AnyPoolOptions::new()
            .max_connections(Dialect::Sqlite.max_connections())
            .after_connect(|connection, _| {
                Box::pin(async move {
                    connection
                        .execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000",
                        )
                        .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        let sqlite_ledger = Some(sqlite_ledger::SqliteLedger::start(&path)?);
        Ok(Store {
            pool,
            dialect: Dialect::Sqlite,
            node: Arc::from(""),
            sqlite_ledger,
        })
    }

    /// Connects to PostgreSQL and migrates. The URL may choose a schema
    /// (`?options=-csearch_path%3Dname`).
    pub async fn postgres(url: &str) -> Result<Store, OpenError> {
        if !is_postgres_url(url) {
            return Err(OpenError::UnsupportedUrl(url.to_string()));
        }
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(Dialect::Postgres.max_connections())
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Store {
            pool,
            dialect: Dialect::Postgres,
            node: Arc::from(""),
            sqlite_ledger: None,
        })
    }

    /// The same database as of one moment, for reads that must agree with
    /// each other while running nodes commit (the audit's): a store on one
    /// connection holding a read-only transaction until it is dropped, a
    /// `REPEATABLE READ` one on PostgreSQL and on SQLite a read transaction,
    /// whose snapshot is taken by its first read (and `query_only`, so it
    /// never takes the write lock). Writes through it fail.
    pub async fn snapshot(&self) -> Result<Store, sqlx::Error> {
        let begin = match self.dialect {
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            Dialect::Sqlite => "PRAGMA busy_timeout = 5000; PRAGMA query_only = ON; BEGIN",
        };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            // The one connection is the snapshot: never replaced.
            .idle_timeout(None)
            .max_lifetime(None)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    connection.execute(begin).await?;
                    Ok(())
                })
            })
            .connect_with((*self.pool.connect_options()).clone())
            .await?;
        Ok(Store {
            pool,
            dialect: self.dialect,
            node: self.node.clone(),
            sqlite_ledger: None,
        })
    }

    /// The store of an existing node (for offline tools): its PostgreSQL
    /// database when given, else the data directory's SQLite, where a
    /// directory without one is an error, never a new database.
    pub async fn open_existing(
        data_dir: &Path,
        database: Option<&str>,
    ) -> Result<Store, OpenError> {
        if let Some(url) = database {
            return Store::postgres(url).await;
        }
        if !data_dir.join(SQLITE_FILE).exists() {
            return Err(OpenError::NoData(data_dir.to_path_buf()));
        }
        Store::sqlite(data_dir).await
    }

    /// The same store, for the node named `node` (the streams it ingests
    /// carry its name).
    pub fn for_node(mut self, node: &str) -> Store {
        self.node = Arc::from(node);
        self
    }

    /// This node's name (empty until [`Store::for_node`]).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The pool, for tests that check what the schema itself refuses.
    #[cfg(test)]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// A path as the path part of a `sqlite://` URL.
fn url_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            ' ' => out.push_str("%20"),
            c => out.push(c),
        }
    }
    out
}

/// A stored value that does not decode (bad JSON, a malformed number).
pub(crate) fn decode_err(err: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(err.to_string().into())
}

/// A non-negative integer column (counts, sizes, positions).
pub(crate) fn get_u64(row: &sqlx::any::AnyRow, column: &str) -> Result<u64, sqlx::Error> {
    Ok(row.try_get::<i64, _>(column)?.max(0) as u64)
}

/// An integer for a column: values beyond `i64` are stored as `i64::MAX`.
pub(crate) fn to_i64(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// A decimal text column parsed into `T` (amounts, addresses).
pub(crate) fn get_parsed<T>(row: &sqlx::any::AnyRow, column: &str) -> Result<T, sqlx::Error>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    row.try_get::<&str, _>(column)?.parse().map_err(decode_err)
}

/// The row `sql` finds by its one parameter `key`, read by `read`.
pub(crate) async fn row_by<'c, T>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Any>,
    sql: String,
    key: &str,
    read: fn(&sqlx::any::AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Option<T>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key.to_owned())
        .fetch_optional(executor)
        .await?
        .as_ref()
        .map(read)
        .transpose()
}

/// Every row `sql` finds by its one parameter `key`, read by `read`.
pub(crate) async fn rows_by<'c, T>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Any>,
    sql: String,
    key: &str,
    read: fn(&sqlx::any::AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key.to_owned())
        .fetch_all(executor)
        .await?
        .iter()
        .map(read)
        .collect()
}

/// A statement assembled at run time (multi-row inserts, `IN` lists, the
/// dialect's fragments), numbering its placeholders `$1, $2, ...`, which
/// both databases accept.
pub(crate) struct Statement {
    sql: String,
    arguments: sqlx::any::AnyArguments,
    count: usize,
    error: Option<sqlx::error::BoxDynError>,
}

impl Statement {
    pub fn new(sql: &str) -> Self {
        Statement {
            sql: sql.to_string(),
            arguments: sqlx::any::AnyArguments::default(),
            count: 0,
            error: None,
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind<'t, T>(&mut self, value: T) -> &mut Self
    where
        T: sqlx::Encode<'t, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        use sqlx::Arguments;
        if let Err(err) = self.arguments.add(value) {
            self.error.get_or_insert(err);
        }
        self.count += 1;
        self.sql.push('$');
        self.sql.push_str(&self.count.to_string());
        self
    }

    /// Appends `value` as a ledger amount (the dialect's amount type).
    pub fn bind_ledger_amount(&mut self, value: String, dialect: Dialect) -> &mut Self {
        self.push("CAST(").bind(value).push(" AS ");
        self.push(dialect.ledger_amount_type()).push(")")
    }

    /// The statement, ready to run; a value that could not be encoded is an error.
    pub fn query(
        self,
    ) -> Result<sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>, sqlx::Error> {
        match self.error {
            Some(err) => Err(sqlx::Error::Encode(err)),
            None => Ok(sqlx::query_with(
                sqlx::AssertSqlSafe(self.sql),
                self.arguments,
            )),
        }
    }
}
