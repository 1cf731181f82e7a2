//! Paid sessions as they started (`play_sessions`), written on clustered
//! nodes so another node picks a session up after the one that started it
//! is gone.

use sqlx::Row;

use super::{Store, decode_err};

/// A paid session's start, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaySessionRecord {
    pub id: String,
    pub stream_id: String,
    /// The viewer's address, lower-case hex.
    pub viewer: String,
    /// The paying channel's id, lower-case hex.
    pub channel: String,
    /// The meter when the session started (JSON).
    pub meter: String,
    pub created_at_ms: i64,
}

/// How long a stored session may be picked up.
pub const PLAY_SESSION_KEPT_MS: i64 = 24 * 3600 * 1000;

impl Store {
    /// Records a session's start, and forgets sessions older than a day.
    pub async fn save_play_session(&self, session: &PlaySessionRecord) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM play_sessions WHERE created_at_ms < $1")
            .bind(session.created_at_ms - PLAY_SESSION_KEPT_MS)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO play_sessions (id, stream_id, viewer, channel, meter, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&session.id)
        .bind(&session.stream_id)
        .bind(&session.viewer)
        .bind(&session.channel)
        .bind(&session.meter)
        .bind(session.created_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// A session started on some node, if it is recent enough.
    pub async fn play_session(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<PlaySessionRecord>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, stream_id, viewer, channel, meter, created_at_ms FROM play_sessions \
             WHERE id = $1 AND created_at_ms >= $2",
        )
        .bind(id)
        .bind(now_ms - PLAY_SESSION_KEPT_MS)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(PlaySessionRecord {
                id: row.try_get("id")?,
                stream_id: row.try_get("stream_id")?,
                viewer: row.try_get("viewer")?,
                channel: row.try_get("channel")?,
                meter: row.try_get("meter")?,
                created_at_ms: row.try_get("created_at_ms")?,
            })
        })
        .transpose()
    }
}

/// A session admitted without paying per segment, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedSessionRecord {
    pub id: String,
    pub stream_id: String,
    /// The viewer's address, lower-case hex.
    pub viewer: String,
    pub admission: Admission,
    pub last_seen_ms: i64,
    pub created_at_ms: i64,
}

/// What admits an [`AdmittedSessionRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Ticket { ticket_id: String },
    Host,
    Member { max_height: u32, expires_at_ms: i64 },
}

/// A member's sessions that count toward their limit: (id, stream id).
pub type ActiveMemberSessions = Vec<(String, String)>;

const ADMITTED_COLUMNS: &str = "id, stream_id, viewer, kind, ticket_id, max_height, expires_at_ms, last_seen_ms, created_at_ms";

fn admitted_from_row(row: &sqlx::any::AnyRow) -> Result<AdmittedSessionRecord, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let id: String = row.try_get("id")?;
    let missing = |column: &str| decode_err(format!("{kind} session {id} has no {column}"));
    let admission = match kind.as_str() {
        "ticket" => Admission::Ticket {
            ticket_id: row
                .try_get::<Option<String>, _>("ticket_id")?
                .ok_or_else(|| missing("ticket_id"))?,
        },
        "member" => Admission::Member {
            max_height: row
                .try_get::<Option<i64>, _>("max_height")?
                .and_then(|h| u32::try_from(h).ok())
                .ok_or_else(|| missing("max_height"))?,
            expires_at_ms: row
                .try_get::<Option<i64>, _>("expires_at_ms")?
                .ok_or_else(|| missing("expires_at_ms"))?,
        },
        "host" => Admission::Host,
        other => return Err(decode_err(format!("unknown session kind {other}"))),
    };
    Ok(AdmittedSessionRecord {
        id,
        stream_id: row.try_get("stream_id")?,
        viewer: row.try_get("viewer")?,
        admission,
        last_seen_ms: row.try_get("last_seen_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

async fn insert_admitted(
    tx: &mut sqlx::AnyConnection,
    session: &AdmittedSessionRecord,
) -> Result<(), sqlx::Error> {
    let (kind, ticket_id, max_height, expires_at_ms) = match &session.admission {
        Admission::Ticket { ticket_id } => ("ticket", Some(ticket_id.as_str()), None, None),
        Admission::Host => ("host", None, None, None),
        Admission::Member {
            max_height,
            expires_at_ms,
        } => (
            "member",
            None,
            Some(i64::from(*max_height)),
            Some(*expires_at_ms),
        ),
    };
    sqlx::query(
        "INSERT INTO admitted_sessions (id, stream_id, viewer, kind, ticket_id, max_height, \
         expires_at_ms, last_seen_ms, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&session.id)
    .bind(&session.stream_id)
    .bind(&session.viewer)
    .bind(kind)
    .bind(ticket_id)
    .bind(max_height)
    .bind(expires_at_ms)
    .bind(session.last_seen_ms)
    .bind(session.created_at_ms)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl Store {
    /// Records an admitted session; a ticket's earlier sessions end with it
    /// (one at a time per ticket), and sessions older than a day go.
    pub async fn save_admitted_session(
        &self,
        session: &AdmittedSessionRecord,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM admitted_sessions WHERE created_at_ms < $1")
            .bind(session.created_at_ms - PLAY_SESSION_KEPT_MS)
            .execute(&mut *tx)
            .await?;
        if let Admission::Ticket { ticket_id } = &session.admission {
            sqlx::query(
                "UPDATE admitted_sessions SET ended = 1 WHERE ticket_id = $1 AND ended = 0",
            )
            .bind(ticket_id)
            .execute(&mut *tx)
            .await?;
        }
        insert_admitted(&mut tx, session).await?;
        tx.commit().await
    }

    /// Records a member session unless the member has `max_streams`
    /// sessions seen since `active_since_ms` and not expired at
    /// `session.created_at_ms`: then answers those. Racing starts, on any
    /// node, are serialized on the member's membership rows.
    pub async fn start_member_session(
        &self,
        session: &AdmittedSessionRecord,
        max_streams: usize,
        active_since_ms: i64,
    ) -> Result<Result<(), ActiveMemberSessions>, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin_read_then_write())
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM memberships WHERE member = $1{}",
            self.dialect.lock_rows()
        )))
        .bind(&session.viewer)
        .fetch_all(&mut *tx)
        .await?;
        let active: ActiveMemberSessions = sqlx::query(
            "SELECT id, stream_id FROM admitted_sessions WHERE viewer = $1 AND kind = 'member' \
             AND ended = 0 AND last_seen_ms >= $2 AND expires_at_ms > $3 ORDER BY created_at_ms",
        )
        .bind(&session.viewer)
        .bind(active_since_ms)
        .bind(session.created_at_ms)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("stream_id")?)))
        .collect::<Result<_, sqlx::Error>>()?;
        if active.len() >= max_streams {
            return Ok(Err(active));
        }
        insert_admitted(&mut tx, session).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// An admitted session started on some node, unless it ended or is
    /// older than a day.
    pub async fn admitted_session(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<AdmittedSessionRecord>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ADMITTED_COLUMNS} FROM admitted_sessions \
             WHERE id = $1 AND ended = 0 AND created_at_ms >= $2"
        )))
        .bind(id)
        .bind(now_ms - PLAY_SESSION_KEPT_MS)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(admitted_from_row).transpose()
    }

    /// When sessions served here were last used. Answers those that ended
    /// meanwhile (on another node, or as a ticket moved on).
    pub async fn touch_admitted_sessions(
        &self,
        seen: &[(String, i64)],
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut ended = Vec::new();
        for (id, last_seen_ms) in seen {
            let done = sqlx::query(
                "UPDATE admitted_sessions SET last_seen_ms = \
                 CASE WHEN last_seen_ms < $1 THEN $1 ELSE last_seen_ms END \
                 WHERE id = $2 AND ended = 0",
            )
            .bind(*last_seen_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 0 {
                ended.push(id.clone());
            }
        }
        Ok(ended)
    }

    /// Ends an admitted session everywhere; `false` if it was not running.
    pub async fn end_admitted_session(&self, id: &str) -> Result<bool, sqlx::Error> {
        let done =
            sqlx::query("UPDATE admitted_sessions SET ended = 1 WHERE id = $1 AND ended = 0")
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends every admitted session of a stream (its event was cancelled).
    pub async fn end_admitted_sessions_of_stream(
        &self,
        stream_id: &str,
    ) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE admitted_sessions SET ended = 1 WHERE stream_id = $1 AND ended = 0",
        )
        .bind(stream_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Ends the admitted sessions of a ticket (it changed hands).
    pub async fn end_admitted_sessions_of_ticket(
        &self,
        ticket_id: &str,
    ) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE admitted_sessions SET ended = 1 WHERE ticket_id = $1 AND ended = 0",
        )
        .bind(ticket_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
