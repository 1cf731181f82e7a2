//! Archives and their replicas, kept in the background.
//!
//! Every few seconds: ended streams get their complete archive built (the
//! root, its CAR size and Piece CID recorded); every complete archive gets a
//! pending replica on each configured target; due replicas are written (the
//! CAR, to a temporary file, synced, then renamed) and read back and checked
//! (every block against its CID, the root, the Piece CID). A verified replica
//! is checked again after the verify interval; one found missing or corrupt
//! is marked failed and written again, with exponential backoff on errors.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use streamweave_cas::{Blockstore, Cid, PieceCommitment, parse_cid, verify_car};
use tracing::{info, warn};

use crate::archive::{self, ArchiveSummary};
use crate::model::now_ms;
use crate::store::Store;

/// Archives built per tick, replicas handled per tick.
const ARCHIVES_PER_TICK: i64 = 4;
const REPLICAS_PER_TICK: i64 = 8;
/// First retry after a failure; doubles up to the cap.
const RETRY_BASE_MS: i64 = 10_000;
const RETRY_CAP_MS: i64 = 3_600_000;

/// One replica's record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReplicaRecord {
    pub stream_id: String,
    pub root_cid: String,
    /// `dir:/path` of the target.
    pub target: String,
    /// pending, stored, verified or failed.
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub updated_at_ms: i64,
    pub next_attempt_ms: i64,
    #[serde(skip)]
    pub piece_cid: String,
}

/// A replica's new state.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaUpdate<'a> {
    pub state: &'a str,
    pub attempts: u32,
    pub last_error: Option<&'a str>,
    pub next_attempt_ms: i64,
}

/// A place replicas go: a directory of `{root}.car` files, or an
/// S3-compatible bucket with `{prefix}/{root}.car` objects.
#[derive(Debug, Clone)]
pub enum ReplicaTarget {
    Directory(PathBuf),
    S3 {
        /// `s3://bucket/prefix`, as configured.
        url: String,
        prefix: String,
        store: Arc<dyn object_store::ObjectStore>,
        /// Where CARs are written before upload.
        staging: PathBuf,
    },
}

/// Parts of a CAR uploaded at once.
const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;

impl ReplicaTarget {
    pub fn directory(dir: PathBuf) -> Self {
        ReplicaTarget::Directory(dir)
    }

    /// An S3 bucket from `s3://bucket/prefix`; credentials and region come
    /// from the usual AWS variables, `endpoint` names an S3-compatible server.
    pub fn s3(url: &str, endpoint: Option<&str>, staging: PathBuf) -> anyhow::Result<Self> {
        let (store, prefix) = super::remote::s3_bucket(url, endpoint)?;
        Ok(ReplicaTarget::S3 {
            url: url.to_string(),
            prefix,
            store,
            staging,
        })
    }

    /// The target's name in records.
    pub fn name(&self) -> String {
        match self {
            ReplicaTarget::Directory(dir) => format!("dir:{}", dir.display()),
            ReplicaTarget::S3 { url, .. } => url.clone(),
        }
    }

    fn object(prefix: &str, root: &str) -> object_store::path::Path {
        if prefix.is_empty() {
            object_store::path::Path::from(format!("{root}.car"))
        } else {
            object_store::path::Path::from(format!("{prefix}/{root}.car"))
        }
    }

    /// Writes the CAR of `root`: a directory's file goes to a temporary
    /// name, is synced, then renamed; an object is uploaded in parts.
    pub async fn write(
        &self,
        blockstore: Arc<Blockstore>,
        root: Cid,
    ) -> anyhow::Result<ArchiveSummary> {
        let (dir, upload) = match self {
            ReplicaTarget::Directory(dir) => (dir.clone(), None),
            ReplicaTarget::S3 {
                prefix,
                store,
                staging,
                ..
            } => (
                staging.clone(),
                Some((store.clone(), Self::object(prefix, &root.to_string()))),
            ),
        };
        let (summary, file) =
            tokio::task::spawn_blocking(move || write_car_file(&blockstore, &root, &dir)).await??;
        if let Some((store, object)) = upload {
            let uploaded = upload_file(store.as_ref(), &object, &file).await;
            let _ = std::fs::remove_file(&file);
            uploaded?;
        }
        Ok(summary)
    }

    /// The replica's bytes, `None` when it is not there.
    async fn fetch(&self, root: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            ReplicaTarget::Directory(dir) => {
                match tokio::fs::read(dir.join(format!("{root}.car"))).await {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(err) => Err(format!("reading the replica: {err}")),
                }
            }
            ReplicaTarget::S3 { prefix, store, .. } => {
                match store.get(&Self::object(prefix, root)).await {
                    Ok(found) => found
                        .bytes()
                        .await
                        .map(|b| Some(b.to_vec()))
                        .map_err(|e| format!("reading the replica: {e}")),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(err) => Err(format!("reading the replica: {err}")),
                }
            }
        }
    }

    /// Reads the replica back and checks it; `Err` names what is wrong.
    pub async fn check(&self, root: &str, piece_cid: &str) -> Result<(), String> {
        let bytes = self
            .fetch(root)
            .await?
            .ok_or_else(|| "the replica is missing".to_string())?;
        let (root, piece_cid) = (root.to_string(), piece_cid.to_string());
        tokio::task::spawn_blocking(move || check_car(&bytes, &root, &piece_cid))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Puts back blocks of `root` that are missing or corrupt in the store
    /// from this replica (each checked against its CID); answers how many.
    pub async fn restore_into(
        &self,
        blockstore: Arc<Blockstore>,
        root: &str,
    ) -> Result<usize, String> {
        let bytes = self
            .fetch(root)
            .await?
            .ok_or_else(|| "the replica is missing".to_string())?;
        tokio::task::spawn_blocking(move || {
            let car = streamweave_cas::read_car(&bytes).map_err(|e| format!("not a CAR: {e}"))?;
            let mut repaired = 0;
            for (cid, data) in &car.blocks {
                if blockstore
                    .repair_block(cid, data)
                    .map_err(|e| format!("repairing {cid}: {e}"))?
                {
                    repaired += 1;
                }
            }
            Ok(repaired)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Deletes a replica (its archive expired).
    pub async fn remove(&self, root: &str) {
        let outcome = match self {
            ReplicaTarget::Directory(dir) => {
                match tokio::fs::remove_file(dir.join(format!("{root}.car"))).await {
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    other => other.map_err(|e| e.to_string()),
                }
            }
            ReplicaTarget::S3 { prefix, store, .. } => {
                match store.delete(&Self::object(prefix, root)).await {
                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                    other => other.map_err(|e| e.to_string()),
                }
            }
        };
        if let Err(err) = outcome {
            warn!(%err, root, target = %self.name(), "removing an expired replica failed");
        }
    }
}

/// Writes the CAR of `root` into `dir` as `{root}.car`: temporary file,
/// sync, rename, directory sync. Answers its numbers and path.
fn write_car_file(
    blockstore: &Blockstore,
    root: &Cid,
    dir: &std::path::Path,
) -> anyhow::Result<(ArchiveSummary, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let final_path = dir.join(format!("{root}.car"));
    let partial = final_path.with_extension("car.partial");
    let written = (|| {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&partial)?);
        let summary = archive::car_of(blockstore, root, Some(&mut file))?;
        file.flush()?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&partial, &final_path)?;
        std::fs::File::open(dir)?.sync_all()?;
        anyhow::Ok(summary)
    })();
    if written.is_err() {
        // Never leave a partial CAR behind.
        let _ = std::fs::remove_file(&partial);
    }
    Ok((written?, final_path))
}

/// Uploads a file in parts.
async fn upload_file(
    store: &dyn object_store::ObjectStore,
    object: &object_store::path::Path,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let upload = store.put_multipart(object).await?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART_BYTES);
    let mut source = tokio::fs::File::open(file).await?;
    let mut buffer = vec![0u8; 1024 * 1024];
    loop {
        let read = source.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        writer.wait_for_capacity(4).await?;
        writer.write(&buffer[..read]);
    }
    writer.finish().await?;
    Ok(())
}

/// Checks a replica's bytes: every block, the root, the Piece CID.
fn check_car(bytes: &[u8], root: &str, piece_cid: &str) -> Result<(), String> {
    let report = verify_car(bytes).map_err(|err| format!("not a CAR: {err}"))?;
    if let Some(problem) = report.problems.first() {
        return Err(format!(
            "corrupt: {problem} ({} problems)",
            report.problems.len()
        ));
    }
    if report.root.map(|r| r.to_string()).as_deref() != Some(root) {
        return Err("the replica's root is another CID".into());
    }
    let piece = PieceCommitment::of(bytes).cid().to_string();
    if piece != piece_cid {
        return Err(format!("Piece CID {piece}, expected {piece_cid}"));
    }
    Ok(())
}

/// Whether the store still holds `root`'s whole archive, sound.
fn store_is_sound(blockstore: &Blockstore, root: &Cid, piece_cid: &str) -> bool {
    archive::car_of::<std::io::Sink>(blockstore, root, None)
        .is_ok_and(|summary| summary.piece_cid == piece_cid)
}

/// The background worker.
pub struct Replicator {
    pub db: Store,
    pub blockstore: Arc<Blockstore>,
    pub index: Arc<crate::live::media_index::MediaIndex>,
    pub targets: Vec<ReplicaTarget>,
    pub segment_duration_ms: u32,
    pub verify_interval_ms: i64,
    /// How often unreferenced blocks are collected, and their grace period.
    pub gc_interval_ms: i64,
    pub gc_grace: Duration,
    /// When garbage was last collected.
    pub last_gc_ms: std::sync::atomic::AtomicI64,
}

fn retry_after_ms(attempts: u32) -> i64 {
    RETRY_BASE_MS
        .saturating_mul(1i64 << attempts.min(20))
        .min(RETRY_CAP_MS)
}

impl Replicator {
    /// Runs forever, one tick every `tick`.
    pub async fn run(self: Arc<Self>, tick: Duration) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(err) = self.tick().await {
                warn!(%err, "archive and replica work failed; retrying");
            }
        }
    }

    /// One round of work.
    pub async fn tick(&self) -> anyhow::Result<()> {
        // Retention: recordings past their time go, replicas with them.
        for (stream_id, roots) in self.db.expire_streams(now_ms()).await? {
            self.index.forget(&stream_id);
            for target in &self.targets {
                for root in &roots {
                    target.remove(root).await;
                }
            }
            info!(stream = %stream_id, archives = roots.len(), "recording expired");
        }
        let now = now_ms();
        let last = self.last_gc_ms.load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) >= self.gc_interval_ms {
            self.last_gc_ms
                .store(now, std::sync::atomic::Ordering::Relaxed);
            let referenced = self.db.referenced_cids().await?;
            let (blockstore, grace) = (self.blockstore.clone(), self.gc_grace);
            let report = tokio::task::spawn_blocking(move || {
                crate::archive::gc::collect(&blockstore, &referenced, grace)
            })
            .await??;
            if report.removed > 0 || report.removed_remote > 0 {
                info!(
                    removed = report.removed,
                    bytes = report.removed_bytes,
                    removed_remote = report.removed_remote,
                    remote_bytes = report.removed_remote_bytes,
                    "collected unreferenced blocks"
                );
            }
        }
        let states = crate::metrics::metrics();
        for (state, count) in self.db.replica_counts().await? {
            states
                .replicas
                .get_or_create(&crate::metrics::StateLabels { state })
                .set(count);
        }
        for (stream_id, segments) in self.db.streams_needing_archive(ARCHIVES_PER_TICK).await? {
            let built = archive::build_root(
                &self.db,
                &self.blockstore,
                &stream_id,
                self.segment_duration_ms,
            )
            .await?;
            let blockstore = self.blockstore.clone();
            let root = built.root;
            let summary = tokio::task::spawn_blocking(move || {
                archive::car_of::<std::io::Sink>(&blockstore, &root, None)
            })
            .await??;
            self.db
                .insert_archive(&stream_id, segments, &summary, &built.added, now_ms())
                .await?;
            info!(stream = %stream_id, root = %summary.root_cid, piece = %summary.piece_cid, "archived");
        }
        for target in &self.targets {
            self.db
                .add_missing_replicas(&target.name(), now_ms())
                .await?;
        }
        for replica in self.db.due_replicas(now_ms(), REPLICAS_PER_TICK).await? {
            let Some(target) = self.targets.iter().find(|t| t.name() == replica.target) else {
                continue; // a target no longer configured
            };
            self.handle(target.clone(), replica).await?;
        }
        Ok(())
    }

    /// Writes a replica (after making sure the store is sound) and reads it
    /// back, or re-checks a stored one and the store against it.
    async fn write_or_check(
        &self,
        target: &ReplicaTarget,
        others: &[ReplicaTarget],
        blockstore: Arc<Blockstore>,
        root: Cid,
        must_write: bool,
        piece_cid: &str,
    ) -> Result<(), String> {
        let root_text = root.to_string();
        let store_sound = || {
            let (blockstore, piece_cid) = (blockstore.clone(), piece_cid.to_string());
            async move {
                tokio::task::spawn_blocking(move || store_is_sound(&blockstore, &root, &piece_cid))
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        if must_write {
            // Writing reads every block (verified) and recomputes the Piece
            // CID; the store is examined only when that fails.
            let written = match target.write(blockstore.clone(), root).await {
                Ok(written) => written,
                Err(err) if store_sound().await? => return Err(format!("writing: {err:#}")),
                Err(_) => {
                    // The store lost or damaged blocks: restore them from a sound replica.
                    let mut source = None;
                    for other in others {
                        if other.check(&root_text, piece_cid).await.is_ok() {
                            source = Some(other);
                            break;
                        }
                    }
                    let source = source
                        .ok_or("the store is damaged and no sound replica is left to repair it")?;
                    let repaired = source.restore_into(blockstore.clone(), &root_text).await?;
                    warn!(root = %root_text, from = %source.name(), repaired, "repaired the blockstore from a replica");
                    target
                        .write(blockstore, root)
                        .await
                        .map_err(|err| format!("writing: {err:#}"))?
                }
            };
            if written.piece_cid != piece_cid {
                return Err(format!(
                    "the blockstore gives Piece CID {}, expected {piece_cid}",
                    written.piece_cid
                ));
            }
            return target.check(&root_text, piece_cid).await;
        }
        target.check(&root_text, piece_cid).await?;
        // The replica is sound: the store's copy is repaired from it if need be.
        if !store_sound().await? {
            let repaired = target.restore_into(blockstore, &root_text).await?;
            warn!(root = %root_text, from = %target.name(), repaired, "repaired the blockstore from a replica");
        }
        Ok(())
    }

    async fn handle(&self, target: ReplicaTarget, replica: ReplicaRecord) -> anyhow::Result<()> {
        let root = parse_cid(&replica.root_cid)?;
        let blockstore = self.blockstore.clone();
        let must_write = matches!(replica.state.as_str(), "pending" | "failed");
        let piece_cid = replica.piece_cid.clone();
        let others: Vec<ReplicaTarget> = self
            .targets
            .iter()
            .filter(|t| t.name() != target.name())
            .cloned()
            .collect();
        let outcome = self
            .write_or_check(&target, &others, blockstore, root, must_write, &piece_cid)
            .await;
        let now = now_ms();
        match outcome {
            Ok(()) => {
                self.db
                    .set_replica(
                        &replica.root_cid,
                        &replica.target,
                        &ReplicaUpdate {
                            state: "verified",
                            attempts: 0,
                            last_error: None,
                            next_attempt_ms: now.saturating_add(self.verify_interval_ms),
                        },
                        now,
                    )
                    .await?;
                if replica.state != "verified" {
                    info!(root = %replica.root_cid, target = %replica.target, "replica verified");
                }
            }
            Err(error) => {
                // A good replica that went bad is rewritten at once; write failures back off.
                let attempts = if must_write { replica.attempts + 1 } else { 0 };
                let next = if must_write {
                    now.saturating_add(retry_after_ms(attempts))
                } else {
                    now
                };
                warn!(root = %replica.root_cid, target = %replica.target, %error, "replica failed");
                self.db
                    .set_replica(
                        &replica.root_cid,
                        &replica.target,
                        &ReplicaUpdate {
                            state: "failed",
                            attempts,
                            last_error: Some(&error),
                            next_attempt_ms: next,
                        },
                        now,
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_cap() {
        assert_eq!(retry_after_ms(0), 10_000);
        assert_eq!(retry_after_ms(1), 20_000);
        assert_eq!(retry_after_ms(3), 80_000);
        assert_eq!(retry_after_ms(30), RETRY_CAP_MS);
    }
}
