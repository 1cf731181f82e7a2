//! The few places where SQLite and PostgreSQL differ, each named once.
//! Everything else is written once with `$N` placeholders, which both
//! accept, and with SQL both understand (`ON CONFLICT` upserts, `RETURNING`,
//! `CAST(x AS TEXT)`).

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded default: one file in the data directory, one writer.
    Sqlite,
    /// A server (`--database postgres://...`): several nodes may write.
    Postgres,
}

impl Dialect {
    /// Starts a transaction that reads rows and then writes them. SQLite
    /// takes the write lock first (`BEGIN IMMEDIATE`), or a deferred
    /// transaction could fail to upgrade after another connection's commit;
    /// PostgreSQL locks the rows it reads instead (`lock_rows`).
    pub fn begin_read_then_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// Appended to a `SELECT` whose rows the transaction then updates.
    /// (SQLite's transaction already holds the database's write lock.)
    pub fn lock_rows(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// The type a ledger amount parameter is cast to: ledger amounts are
    /// decimal text on SQLite and exact `NUMERIC(40, 0)` on PostgreSQL,
    /// which checks their range and sign itself. (Amounts are always read
    /// back as `CAST(column AS TEXT)`, the same on both.)
    pub fn ledger_amount_type(self) -> &'static str {
        match self {
            Dialect::Sqlite => "TEXT",
            Dialect::Postgres => "NUMERIC",
        }
    }

    /// Connections the pool keeps: SQLite has one writer at a time anyway.
    pub fn max_connections(self) -> u32 {
        match self {
            Dialect::Sqlite => 8,
            Dialect::Postgres => 16,
        }
    }
}
