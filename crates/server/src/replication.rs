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
use crate::db::Db;
use crate::model::now_ms;

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

/// A place replicas go: a directory of `{root}.car` files.
#[derive(Debug, Clone)]
pub struct ReplicaTarget {
    dir: PathBuf,
}

impl ReplicaTarget {
    pub fn directory(dir: PathBuf) -> Self {
        ReplicaTarget { dir }
    }

    /// The target's name in records.
    pub fn name(&self) -> String {
        format!("dir:{}", self.dir.display())
    }

    fn path(&self, root: &str) -> PathBuf {
        self.dir.join(format!("{root}.car"))
    }

    /// Writes the CAR of `root`: to a temporary file, synced, then renamed.
    pub fn write(&self, blockstore: &Blockstore, root: &Cid) -> anyhow::Result<ArchiveSummary> {
        std::fs::create_dir_all(&self.dir)?;
        let final_path = self.path(&root.to_string());
        let partial = final_path.with_extension("car.partial");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&partial)?);
        let summary = archive::car_of(blockstore, root, Some(&mut file))?;
        file.flush()?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&partial, &final_path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(summary)
    }

    /// Deletes a replica (its archive expired).
    pub fn remove(&self, root: &str) {
        match std::fs::remove_file(self.path(root)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                warn!(%err, root, target = %self.name(), "removing an expired replica failed")
            }
        }
    }

    /// Reads the replica back and checks it; `Err` names what is wrong.
    pub fn check(&self, root: &str, piece_cid: &str) -> Result<(), String> {
        let bytes = match std::fs::read(self.path(root)) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err("the replica is missing".into());
            }
            Err(err) => return Err(format!("reading the replica: {err}")),
        };
        let report = verify_car(&bytes).map_err(|err| format!("not a CAR: {err}"))?;
        if let Some(problem) = report.problems.first() {
            return Err(format!(
                "corrupt: {problem} ({} problems)",
                report.problems.len()
            ));
        }
        if report.root.map(|r| r.to_string()).as_deref() != Some(root) {
            return Err("the replica's root is another CID".into());
        }
        let piece = PieceCommitment::of(&bytes).cid().to_string();
        if piece != piece_cid {
            return Err(format!("Piece CID {piece}, expected {piece_cid}"));
        }
        Ok(())
    }
}

impl ReplicaTarget {
    /// Puts back blocks of `root` that are missing or corrupt in the store
    /// from this replica (each checked against its CID); answers how many.
    pub fn restore_into(&self, blockstore: &Blockstore, root: &str) -> Result<usize, String> {
        let bytes =
            std::fs::read(self.path(root)).map_err(|e| format!("reading the replica: {e}"))?;
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
    }
}

/// Whether the store still holds `root`'s whole archive, sound.
fn store_is_sound(blockstore: &Blockstore, root: &Cid, piece_cid: &str) -> bool {
    archive::car_of::<std::io::Sink>(blockstore, root, None)
        .is_ok_and(|summary| summary.piece_cid == piece_cid)
}

/// The background worker.
pub struct Replicator {
    pub db: Db,
    pub blockstore: Arc<Blockstore>,
    pub index: Arc<crate::media_index::MediaIndex>,
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
                    target.remove(root);
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
                crate::gc::collect(&blockstore, &referenced, grace)
            })
            .await??;
            if report.removed > 0 {
                info!(
                    removed = report.removed,
                    bytes = report.removed_bytes,
                    "collected unreferenced blocks"
                );
            }
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
        let outcome = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let root_text = root.to_string();
            if must_write {
                if !store_is_sound(&blockstore, &root, &piece_cid) {
                    // The store lost or damaged blocks: restore them from a sound replica.
                    let source = others
                        .iter()
                        .find(|t| t.check(&root_text, &piece_cid).is_ok())
                        .ok_or("the store is damaged and no sound replica is left to repair it")?;
                    let repaired = source.restore_into(&blockstore, &root_text)?;
                    warn!(root = %root_text, from = %source.name(), repaired, "repaired the blockstore from a replica");
                }
                let written = target
                    .write(&blockstore, &root)
                    .map_err(|err| format!("writing: {err:#}"))?;
                if written.piece_cid != piece_cid {
                    return Err(format!(
                        "the blockstore gives Piece CID {}, expected {piece_cid}",
                        written.piece_cid
                    ));
                }
                return target.check(&root_text, &piece_cid);
            }
            target.check(&root_text, &piece_cid)?;
            // The replica is sound: the store's copy is checked against it too.
            if !store_is_sound(&blockstore, &root, &piece_cid) {
                let repaired = target.restore_into(&blockstore, &root_text)?;
                warn!(root = %root_text, from = %target.name(), repaired, "repaired the blockstore from a replica");
            }
            Ok(())
        })
        .await?;
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
