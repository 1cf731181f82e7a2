//! Archives of recordings (roots, the blocks they add), their replicas,
//! retention, and the CIDs the blockstore's garbage collection must keep.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::streams::{stream_columns, stream_from_row};
use super::{Store, get_u64, to_i64};
use crate::archive::ArchiveSummary;
use crate::archive::replication::{ReplicaRecord, ReplicaUpdate};
use crate::model::StreamRecord;

fn replica_from_row(row: &AnyRow) -> Result<ReplicaRecord, sqlx::Error> {
    Ok(ReplicaRecord {
        root_cid: row.try_get("root_cid")?,
        target: row.try_get("target")?,
        state: row.try_get("state")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        last_error: row.try_get("last_error")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        next_attempt_ms: row.try_get("next_attempt_ms")?,
        piece_cid: row.try_get("piece_cid")?,
        stream_id: row.try_get("stream_id")?,
    })
}

impl Store {
    /// Records an archive root built for a stream and the blocks it added,
    /// in one transaction (idempotent). It is complete when the stream has
    /// ended and the archive holds every segment.
    pub async fn insert_archive(
        &self,
        stream_id: &str,
        segments: usize,
        summary: &ArchiveSummary,
        added: &[streamweave_cas::Cid],
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO archives \
             (root_cid, stream_id, segments, car_size, piece_cid, piece_size, built_at_ms, complete) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, \
             (SELECT CASE WHEN s.state = 'ended' \
              AND $3 = (SELECT COUNT(*) FROM segments g WHERE g.stream_id = s.id) THEN 1 ELSE 0 END \
              FROM streams s WHERE s.id = $2)) \
             ON CONFLICT (root_cid) DO UPDATE SET complete = \
             CASE WHEN archives.complete = 1 THEN 1 ELSE excluded.complete END",
        )
        .bind(&summary.root_cid)
        .bind(stream_id)
        .bind(to_i64(segments))
        .bind(to_i64(summary.car_size))
        .bind(&summary.piece_cid)
        .bind(to_i64(summary.piece_size))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        for cid in added {
            sqlx::query(
                "INSERT INTO archive_blocks (cid, root_cid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(cid.to_string())
            .bind(&summary.root_cid)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// The archive of a stream at `segments` segments, if built.
    pub async fn archive_at(
        &self,
        stream_id: &str,
        segments: usize,
    ) -> Result<Option<ArchiveSummary>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT root_cid, car_size, piece_cid, piece_size FROM archives \
             WHERE stream_id = $1 AND segments = $2 ORDER BY built_at_ms DESC LIMIT 1",
        )
        .bind(stream_id)
        .bind(to_i64(segments))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ArchiveSummary {
                root_cid: row.try_get("root_cid")?,
                car_size: get_u64(&row, "car_size")?,
                piece_cid: row.try_get("piece_cid")?,
                piece_size: get_u64(&row, "piece_size")?,
            })
        })
        .transpose()
    }

    /// The stream an archive root, or a block an archive added, belongs to.
    pub async fn archive_stream(&self, cid: &str) -> Result<Option<StreamRecord>, sqlx::Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE id = (SELECT stream_id FROM archives WHERE root_cid = $1 \
             UNION SELECT a.stream_id FROM archive_blocks b JOIN archives a ON a.root_cid = b.root_cid \
             WHERE b.cid = $1 LIMIT 1)"
        ))
        .bind(cid)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(stream_from_row).transpose()
    }

    /// Ended streams whose complete archive is not built yet: (id, segments).
    pub async fn streams_needing_archive(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, usize)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT s.id, (SELECT COUNT(*) FROM segments g WHERE g.stream_id = s.id) AS n \
             FROM streams s WHERE s.state = 'ended' \
             AND EXISTS (SELECT 1 FROM segments g WHERE g.stream_id = s.id) \
             AND NOT EXISTS (SELECT 1 FROM archives a WHERE a.stream_id = s.id AND a.complete = 1) \
             ORDER BY s.ended_at_ms LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("id")?,
                    usize::try_from(get_u64(row, "n")?).unwrap_or(usize::MAX),
                ))
            })
            .collect()
    }

    /// Adds a pending replica on `target` for every complete archive of an
    /// ended stream that has none there; answers how many.
    pub async fn add_missing_replicas(
        &self,
        target: &str,
        now_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        sqlx::query(
            "INSERT INTO archive_replicas \
             (root_cid, target, state, attempts, updated_at_ms, next_attempt_ms) \
             SELECT a.root_cid, $1, 'pending', 0, $2, $2 FROM archives a WHERE a.complete = 1 \
             AND NOT EXISTS (SELECT 1 FROM archive_replicas r WHERE r.root_cid = a.root_cid AND r.target = $1) \
             ON CONFLICT DO NOTHING",
        )
        .bind(target)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected())
    }

    /// Replicas due for a write or a check.
    pub async fn due_replicas(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<ReplicaRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT r.root_cid, r.target, r.state, r.attempts, r.last_error, r.updated_at_ms, \
             r.next_attempt_ms, a.piece_cid, a.stream_id FROM archive_replicas r \
             JOIN archives a ON a.root_cid = r.root_cid WHERE r.next_attempt_ms <= $1 \
             ORDER BY r.next_attempt_ms LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(replica_from_row).collect()
    }

    /// Every replica, by stream and root (for status views).
    pub async fn replicas(
        &self,
        root_cid: Option<&str>,
    ) -> Result<Vec<ReplicaRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT r.root_cid, r.target, r.state, r.attempts, r.last_error, r.updated_at_ms, \
             r.next_attempt_ms, a.piece_cid, a.stream_id FROM archive_replicas r \
             JOIN archives a ON a.root_cid = r.root_cid WHERE $1 IS NULL OR r.root_cid = $1 \
             ORDER BY a.stream_id, r.root_cid, r.target",
        )
        .bind(root_cid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(replica_from_row).collect()
    }

    /// How many replicas are in each state (`pending`, `stored`, `verified`, `failed`).
    pub async fn replica_counts(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM archive_replicas GROUP BY state ORDER BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("state")?, row.try_get("n")?)))
            .collect()
    }

    /// Records a replica's new state.
    pub async fn set_replica(
        &self,
        root_cid: &str,
        target: &str,
        update: &ReplicaUpdate<'_>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let ReplicaUpdate {
            state,
            attempts,
            last_error,
            next_attempt_ms,
        } = *update;
        sqlx::query(
            "UPDATE archive_replicas SET state = $1, attempts = $2, last_error = $3, \
             updated_at_ms = $4, next_attempt_ms = $5 WHERE root_cid = $6 AND target = $7",
        )
        .bind(state)
        .bind(i64::from(attempts))
        .bind(last_error)
        .bind(now_ms)
        .bind(next_attempt_ms)
        .bind(root_cid)
        .bind(target)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Removes the recordings of ended streams past their retention, in one
    /// transaction each: segments, init references, archives and their
    /// records. Answers each expired stream with the archive roots it had.
    pub async fn expire_streams(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, Vec<String>)>, sqlx::Error> {
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM streams WHERE state = 'ended' AND expired_at_ms IS NULL \
             AND retention_days IS NOT NULL AND ended_at_ms + retention_days * 86400000 <= $1 LIMIT 16",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut expired = Vec::with_capacity(due.len());
        for id in due {
            let mut tx = self
                .pool
                .begin_with(self.dialect.begin_read_then_write())
                .await?;
            let roots: Vec<String> =
                sqlx::query_scalar("SELECT root_cid FROM archives WHERE stream_id = $1")
                    .bind(&id)
                    .fetch_all(&mut *tx)
                    .await?;
            for statement in [
                "DELETE FROM archive_replicas WHERE root_cid IN (SELECT root_cid FROM archives WHERE stream_id = $1)",
                "DELETE FROM archive_blocks WHERE root_cid IN (SELECT root_cid FROM archives WHERE stream_id = $1)",
                "DELETE FROM archives WHERE stream_id = $1",
                "DELETE FROM segments WHERE stream_id = $1",
                "UPDATE renditions SET init_cid = NULL, init_size = NULL WHERE stream_id = $1",
            ] {
                sqlx::query(statement).bind(&id).execute(&mut *tx).await?;
            }
            sqlx::query("UPDATE streams SET expired_at_ms = $1 WHERE id = $2")
                .bind(now_ms)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            expired.push((id, roots));
        }
        Ok(expired)
    }

    /// Every CID the database still references: segments, init files,
    /// archive roots and the blocks archives added. (Their DAGs' inner
    /// blocks are found by walking from these.)
    pub async fn referenced_cids(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT cid FROM segments UNION SELECT init_cid FROM segments WHERE init_cid IS NOT NULL \
             UNION SELECT init_cid FROM renditions WHERE init_cid IS NOT NULL \
             UNION SELECT root_cid FROM archives UNION SELECT cid FROM archive_blocks \
             UNION SELECT metadata_cid FROM collectibles UNION SELECT statement_cid FROM pool_rounds",
        )
        .fetch_all(&self.pool)
        .await
    }
}
