//! Content addressing for StreamWeave.
//!
//! [`file_cid`] gives exactly the CID `ipfs add --cid-version=1` gives a file
//! (Kubo defaults: 256 KiB chunks, raw leaves, balanced layout with at most
//! 174 links per node, sha2-256, base32 CIDv1). [`build_file_dag`] returns
//! every block of that DAG, [`Blockstore`] keeps blocks on disk and reads
//! files back verified, and [`decode_dag_pb`] walks nodes.

mod blockstore;
mod car;
mod dag;
mod dir;
mod hamt;
mod pb;
mod piece;

pub use blockstore::{Blockstore, RemoteBlocks};
pub use car::{CarFile, DagScope, car_header, read_car, write_car, write_car_scoped};
pub use cid::Cid;
pub use dag::{
    Block, CHUNK_SIZE_BYTES, DAG_PB_CODEC, FileDag, MAX_LINKS_PER_NODE, RAW_CODEC, block_cid,
    build_file_dag, build_file_dag_shared, file_cid,
};
pub use dir::{DirEntry, Directory, SHARDING_THRESHOLD_BYTES, build_directory, dag_tsize};
pub use hamt::{HAMT_FANOUT, PathError, Step, is_shard_link, lookup_step, name_hash, resolve_path};
pub use pb::{PbLink, PbNode, UnixFsData, UnixFsType, decode_unixfs};
pub use piece::{PieceCommitment, PieceHasher};

/// Errors of content addressing and the blockstore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CasError {
    /// Bytes that are not a valid dag-pb node or UnixFS message.
    #[error("malformed block: {0}")]
    Malformed(&'static str),
    /// A CID we do not handle (version, codec or hash function).
    #[error("unsupported CID {0}: only CIDv1 raw or dag-pb with sha2-256")]
    UnsupportedCid(String),
    /// Text that is not a CID at all.
    #[error("invalid CID: {0}")]
    InvalidCid(String),
    /// A stored block whose bytes do not hash to its CID.
    #[error("block {0} is corrupt")]
    Corrupt(Cid),
    /// A block a DAG links to is not stored.
    #[error("block {0} is missing")]
    MissingBlock(Cid),
    /// A DAG that is not a UnixFS file.
    #[error("{0} is not a file")]
    NotAFile(Cid),
    /// The disk.
    #[error("blockstore I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Decodes a dag-pb node (links and data).
pub fn decode_dag_pb(bytes: &[u8]) -> Result<PbNode, CasError> {
    pb::decode_node(bytes)
}

/// Parses a CID as the gateway accepts it: CIDv1, raw or dag-pb, sha2-256.
pub fn parse_cid(text: &str) -> Result<Cid, CasError> {
    if text.len() > 128 {
        return Err(CasError::InvalidCid("too long".into()));
    }
    let cid = Cid::try_from(text).map_err(|err| CasError::InvalidCid(err.to_string()))?;
    let supported = cid.version() == cid::Version::V1
        && matches!(cid.codec(), RAW_CODEC | DAG_PB_CODEC)
        && cid.hash().code() == 0x12
        && cid.hash().size() == 32;
    if supported {
        Ok(cid)
    } else {
        Err(CasError::UnsupportedCid(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_car_names_corrupt_and_missing_blocks_by_path() {
        let file: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let dag = super::build_file_dag(&file);
        let dir = super::build_directory(vec![super::DirEntry {
            name: "seg.m4s".into(),
            cid: dag.root,
            tsize: dag.blocks.iter().map(|b| b.data.len() as u64).sum(),
        }])
        .unwrap();
        let blocks: std::collections::HashMap<_, _> = dag
            .blocks
            .iter()
            .chain(std::iter::once(&dir.block))
            .map(|b| (b.cid, b.data.to_vec()))
            .collect();
        let car = |skip: Option<super::Cid>| {
            let mut out = Vec::new();
            super::write_car(
                &dir.block.cid,
                |cid| match (skip == Some(*cid), blocks.get(cid)) {
                    (false, Some(data)) => Ok(data.clone()),
                    _ => Ok(Vec::new()),
                },
                &mut out,
            )
            .unwrap();
            out
        };
        let sound = super::verify_car(&car(None)).unwrap();
        assert_eq!(sound.root, Some(dir.block.cid));
        assert!(sound.problems.is_empty(), "{:?}", sound.problems);
        let mut corrupt = car(None);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        let found = super::verify_car(&corrupt).unwrap();
        assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
        assert!(
            found.problems[0].starts_with("/seg.m4s: block "),
            "{:?}",
            found.problems
        );
    }

    use super::*;

    #[test]
    fn parse_cid_accepts_only_what_we_store() {
        let cid = file_cid(b"hello");
        assert_eq!(parse_cid(&cid.to_string()).expect("valid"), cid);
        assert!(matches!(
            parse_cid("not-a-cid"),
            Err(CasError::InvalidCid(_))
        ));
        // CIDv0 (dag-pb, base58) is a valid CID but not one we hand out.
        assert!(matches!(
            parse_cid("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"),
            Err(CasError::UnsupportedCid(_))
        ));
        assert!(parse_cid(&"b".repeat(200)).is_err());
    }
}

/// What checking a CAR found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarVerification {
    /// The CAR's single root.
    pub root: Option<Cid>,
    /// Blocks in the CAR.
    pub blocks: usize,
    /// Every problem, as `path: what (CID)`; empty when the CAR is sound.
    pub problems: Vec<String>,
}

/// Checks a CAR: one root, every block hashes to its CID, and the DAG is
/// complete from the root (every linked block present). Problems name the
/// path from the root (directory entry names) and the CID.
pub fn verify_car(bytes: &[u8]) -> Result<CarVerification, CasError> {
    let car = read_car(bytes)?;
    let mut problems = Vec::new();
    let mut blocks = std::collections::HashMap::with_capacity(car.blocks.len());
    for (cid, data) in &car.blocks {
        blocks.insert(*cid, data);
    }
    // Where each block sits, from the walk below, to name corrupt ones by path.
    let mut paths: std::collections::HashMap<Cid, String> = std::collections::HashMap::new();
    let root = match car.roots.as_slice() {
        [root] => Some(*root),
        _ => {
            problems.push(format!("the CAR has {} roots, not one", car.roots.len()));
            None
        }
    };
    if let Some(root) = root {
        let mut stack = vec![(root, String::new())];
        let mut seen = std::collections::HashSet::new();
        while let Some((cid, path)) = stack.pop() {
            if !seen.insert(cid) {
                continue;
            }
            let shown = if path.is_empty() { "/" } else { path.as_str() };
            paths.insert(cid, shown.to_string());
            let Some(data) = blocks.get(&cid) else {
                problems.push(format!("{shown}: block {cid} is missing"));
                continue;
            };
            if cid.codec() != DAG_PB_CODEC {
                continue;
            }
            match decode_dag_pb(data) {
                Ok(node) => {
                    for link in node.links.iter().rev() {
                        match Cid::try_from(link.hash.as_slice()) {
                            Ok(child) => {
                                let child_path = if link.name.is_empty() {
                                    path.clone()
                                } else {
                                    format!("{path}/{}", link.name)
                                };
                                stack.push((child, child_path));
                            }
                            Err(_) => {
                                problems.push(format!("{shown}: a link that is not a CID ({cid})"))
                            }
                        }
                    }
                }
                Err(err) => problems.push(format!("{shown}: {err} ({cid})")),
            }
        }
    }
    for (cid, data) in &car.blocks {
        if cid.hash().code() != dag::SHA2_256_CODE || dag::block_cid(cid.codec(), data) != *cid {
            let path = paths
                .get(cid)
                .map_or("(not under the root)", String::as_str);
            problems.push(format!("{path}: block {cid} does not hash to its CID"));
        }
    }
    Ok(CarVerification {
        root,
        blocks: car.blocks.len(),
        problems,
    })
}
