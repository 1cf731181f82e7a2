//! Garbage collection of the blockstore: blocks that nothing references any
//! more (recordings removed by retention) are deleted, never one that a
//! stream or a kept archive still needs.
//!
//! Mark: every CID the database references (segments, init files, archive
//! roots and the blocks archives added), and every block below them in their
//! DAGs. Sweep: stored blocks outside the mark set that are older than the
//! grace period. A block written while the mark runs (a live stream's newest
//! segment, stored before its row commits) is younger than the grace period
//! and stays.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use streamweave_cas::{Blockstore, CasError, Cid, DAG_PB_CODEC, decode_dag_pb, parse_cid};
use tracing::warn;

/// What a collection did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GcReport {
    /// Blocks reachable from what the database references.
    pub marked: usize,
    /// Blocks removed.
    pub removed: usize,
    /// Their bytes.
    pub removed_bytes: u64,
    /// Unreferenced blocks kept because they are younger than the grace period.
    pub kept_recent: usize,
    /// Blocks removed from the shared remote (a cluster's bucket).
    pub removed_remote: usize,
    /// Their bytes.
    pub removed_remote_bytes: u64,
}

/// Collects garbage: `referenced` are the database's CIDs.
pub fn collect(
    blockstore: &Blockstore,
    referenced: &[String],
    grace: Duration,
) -> Result<GcReport, CasError> {
    let started = SystemTime::now();
    let mut marked: HashSet<Cid> = HashSet::new();
    // A reference that does not parse stops the collection: skipping it
    // would delete what it names.
    let mut stack: Vec<Cid> = referenced
        .iter()
        .map(|text| parse_cid(text))
        .collect::<Result<_, _>>()?;
    while let Some(cid) = stack.pop() {
        if !marked.insert(cid) || cid.codec() != DAG_PB_CODEC {
            continue;
        }
        match blockstore.get_block(&cid) {
            Ok(Some(block)) => {
                let node = decode_dag_pb(&block)?;
                for link in node.links {
                    if let Ok(child) = Cid::try_from(link.hash.as_slice()) {
                        stack.push(child);
                    }
                }
            }
            Ok(None) => warn!(%cid, "a referenced block is missing"),
            // A corrupt node's children cannot be known: collect nothing this time.
            Err(err) => return Err(err),
        }
    }
    let cutoff = started.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = GcReport {
        marked: marked.len(),
        ..GcReport::default()
    };
    for (cid, size, modified) in blockstore.blocks()? {
        if marked.contains(&cid) {
            continue;
        }
        if modified > cutoff {
            report.kept_recent += 1;
            continue;
        }
        if blockstore.remove_block(&cid)? {
            report.removed += 1;
            report.removed_bytes += size;
        }
    }
    // The cluster's bucket, by the same rule: every node marks from the one
    // database, so whichever node sweeps removes only what none references.
    if let Some(remote) = blockstore.remote() {
        for (cid, size, modified) in remote.list()? {
            if marked.contains(&cid) || modified > cutoff {
                continue;
            }
            if remote.delete(&cid)? {
                report.removed_remote += 1;
                report.removed_remote_bytes += size;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreferenced_old_blocks_go_and_referenced_dags_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Blockstore::open(dir.path()).unwrap();
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let kept = store.put_file(&big).unwrap();
        let dropped = store.put_file(b"no longer referenced").unwrap();
        // Nothing is old enough with a long grace period.
        let young = collect(&store, &[kept.to_string()], Duration::from_secs(3600)).unwrap();
        assert_eq!(young.removed, 0);
        assert_eq!(young.kept_recent, 1);
        let report = collect(&store, &[kept.to_string()], Duration::ZERO).unwrap();
        assert_eq!(report.removed, 1);
        assert_eq!(report.marked, 1 + 3, "the root and its three leaves");
        assert_eq!(store.get_file(&kept).unwrap().as_deref(), Some(&big[..]));
        assert_eq!(store.get_block(&dropped).unwrap(), None);
        // A reference that does not parse stops the collection before any deletion.
        let other = store.put_file(b"still here").unwrap();
        assert!(collect(&store, &["not a cid".into()], Duration::ZERO).is_err());
        assert!(store.get_block(&other).unwrap().is_some());
    }

    #[test]
    fn the_shared_remote_is_swept_by_the_same_rule() {
        let shared = tempfile::tempdir().unwrap();
        let remote = std::sync::Arc::new(Blockstore::open(shared.path()).unwrap());
        let local = tempfile::tempdir().unwrap();
        let store = Blockstore::open(local.path())
            .unwrap()
            .with_remote(remote.clone());
        let kept = store.put_file(b"referenced").unwrap();
        let dropped = store.put_file(b"not referenced").unwrap();
        // Another node's local copy is gone already: only the remote has it.
        store.remove_block(&dropped).unwrap();
        let young = collect(&store, &[kept.to_string()], Duration::from_secs(3600)).unwrap();
        assert_eq!((young.removed_remote, young.kept_recent), (0, 0));
        let report = collect(&store, &[kept.to_string()], Duration::ZERO).unwrap();
        assert_eq!((report.removed, report.removed_remote), (0, 1));
        assert_eq!(report.removed_remote_bytes, b"not referenced".len() as u64);
        assert!(remote.get_block(&dropped).unwrap().is_none());
        assert!(remote.get_block(&kept).unwrap().is_some());
        assert_eq!(
            store.get_file(&kept).unwrap().as_deref(),
            Some(&b"referenced"[..])
        );
    }
}
