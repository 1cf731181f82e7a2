//! Uploaded videos: a stream row (`source = 'upload'`) and its job in the
//! persistent transcode queue (`video_jobs`). A queued job survives a
//! restart and starts again.

use sqlx::Row;

use super::streams::insert_renditions;
use super::{Store, to_i64};
use crate::model::{RenditionRecord, StreamRecord};

/// A transcode waiting or interrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoJob {
    pub stream_id: String,
    pub upload_id: String,
    /// The uploader (the upload belongs to them).
    pub owner: String,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Done,
    Failed,
    Cancelled,
}

impl JobEnd {
    fn as_str(self) -> &'static str {
        match self {
            JobEnd::Done => "done",
            JobEnd::Failed => "failed",
            JobEnd::Cancelled => "cancelled",
        }
    }
}

impl Store {
    /// Creates a video's stream and queues its transcode, in one transaction.
    pub async fn insert_video(
        &self,
        stream: &StreamRecord,
        upload_id: &str,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        self.insert_stream_in(&mut tx, stream).await?;
        sqlx::query(
            "INSERT INTO video_jobs (stream_id, upload_id, owner, state, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, 'queued', $4, $4)",
        )
        .bind(&stream.id)
        .bind(upload_id)
        .bind(stream.owner.as_deref().unwrap_or_default())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Jobs still queued (new, or interrupted by a restart), oldest first.
    pub async fn queued_video_jobs(&self) -> Result<Vec<VideoJob>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT stream_id, upload_id, owner FROM video_jobs WHERE state = 'queued' \
             ORDER BY created_at_ms, stream_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(VideoJob {
                    stream_id: row.try_get("stream_id")?,
                    upload_id: row.try_get("upload_id")?,
                    owner: row.try_get("owner")?,
                })
            })
            .collect()
    }

    /// The state of a video's job (`queued`, `done`, `failed`, `cancelled`).
    #[cfg(test)]
    pub async fn video_job_state(&self, stream_id: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT state FROM video_jobs WHERE stream_id = $1")
            .bind(stream_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// The ladder of a video being stored (before its segments).
    pub async fn set_video_renditions(
        &self,
        stream_id: &str,
        source: (u32, u32),
        renditions: &[RenditionRecord],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM segments WHERE stream_id = $1")
            .bind(stream_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM renditions WHERE stream_id = $1")
            .bind(stream_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE streams SET source_width = $1, source_height = $2 WHERE id = $3")
            .bind(i64::from(source.0))
            .bind(i64::from(source.1))
            .bind(stream_id)
            .execute(&mut *tx)
            .await?;
        insert_renditions(&mut tx, stream_id, renditions).await?;
        tx.commit().await
    }

    /// Ends a video's job: `Done` makes the video playable (ended, as a
    /// recording, with its duration); otherwise it ends with `reason`.
    pub async fn finish_video(
        &self,
        stream_id: &str,
        end: JobEnd,
        duration_ms: Option<u64>,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE streams SET state = 'ended', started_at_ms = COALESCE(started_at_ms, $1), \
             ended_at_ms = $1, end_error = $2, duration_ms = $3 WHERE id = $4 AND source = 'upload'",
        )
        .bind(now_ms)
        .bind(reason)
        .bind(duration_ms.map(to_i64))
        .bind(stream_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE video_jobs SET state = $1, updated_at_ms = $2 WHERE stream_id = $3")
            .bind(end.as_str())
            .bind(now_ms)
            .bind(stream_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Removes a video's recording soon: retention takes it (segments,
    /// archives, replicas) on its next round.
    pub async fn expire_video_now(&self, stream_id: &str, now_ms: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE streams SET retention_days = 1, ended_at_ms = $1 WHERE id = $2 AND source = 'upload'",
        )
        .bind(now_ms - 86_400_000)
        .bind(stream_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
