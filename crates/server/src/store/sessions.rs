//! Paid sessions as they started (`play_sessions`), written on clustered
//! nodes so another node picks a session up after the one that started it
//! is gone.

use sqlx::Row;

use super::Store;

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
