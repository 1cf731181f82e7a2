//! The UnixFS file DAG `ipfs add --cid-version=1` builds: 256 KiB chunks as
//! raw leaves, a balanced tree of dag-pb nodes with at most 174 links each.

use bytes::Bytes;
use cid::Cid;
use sha2::{Digest, Sha256};

use crate::pb::{self, PbLink, PbNode, UnixFsData, UnixFsType};

/// Chunk size of Kubo's default fixed-size chunker.
pub const CHUNK_SIZE_BYTES: usize = 256 * 1024;
/// Most links in one node of Kubo's balanced layout.
pub const MAX_LINKS_PER_NODE: usize = 174;
/// Multicodec of raw blocks.
pub const RAW_CODEC: u64 = 0x55;
/// Multicodec of dag-pb blocks.
pub const DAG_PB_CODEC: u64 = 0x70;
/// Multihash code of sha2-256.
pub const SHA2_256_CODE: u64 = 0x12;

/// One block: its CID and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The CID of `data`.
    pub cid: Cid,
    /// The block's bytes.
    pub data: Bytes,
}

/// A file's DAG: its root and every block, root first then depth-first left
/// to right (the order a CAR of the file lists them).
#[derive(Debug, Clone)]
pub struct FileDag {
    /// The file's CID.
    pub root: Cid,
    /// Every block of the DAG.
    pub blocks: Vec<Block>,
}

/// The CID of a block of bytes under `codec`.
pub fn block_cid(codec: u64, data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    // A 32-byte digest always fits the 64-byte multihash.
    let hash = cid::multihash::Multihash::<64>::wrap(SHA2_256_CODE, &digest)
        .expect("a sha2-256 digest fits a 64-byte multihash");
    Cid::new_v1(codec, hash)
}

/// A subtree while building: its CID, file bytes below it and cumulative size.
struct Subtree {
    cid: Cid,
    filesize: u64,
    tsize: u64,
    /// Index of this subtree's root in the block list being built.
    block_index: usize,
    /// Block indices of this subtree in depth-first order (root first).
    order: Vec<usize>,
}

/// Builds the DAG of a file.
pub fn build_file_dag(bytes: &[u8]) -> FileDag {
    build_file_dag_shared(Bytes::copy_from_slice(bytes))
}

/// Builds the DAG of a file held in a shared buffer: leaves are slices of
/// it, not copies.
pub fn build_file_dag_shared(bytes: Bytes) -> FileDag {
    let mut blocks: Vec<Block> = Vec::with_capacity(bytes.len() / CHUNK_SIZE_BYTES + 2);
    if bytes.len() <= CHUNK_SIZE_BYTES {
        let cid = block_cid(RAW_CODEC, &bytes);
        return FileDag {
            root: cid,
            blocks: vec![Block { cid, data: bytes }],
        };
    }
    let mut level: Vec<Subtree> = (0..bytes.len())
        .step_by(CHUNK_SIZE_BYTES)
        .map(|start| {
            let chunk = bytes.slice(start..(start + CHUNK_SIZE_BYTES).min(bytes.len()));
            let cid = block_cid(RAW_CODEC, &chunk);
            let size = chunk.len() as u64;
            blocks.push(Block { cid, data: chunk });
            let index = blocks.len() - 1;
            Subtree {
                cid,
                filesize: size,
                tsize: size,
                block_index: index,
                order: vec![index],
            }
        })
        .collect();
    // Group bottom-up: the balanced layout fills every subtree but the last.
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(MAX_LINKS_PER_NODE));
        let mut children = level.into_iter().peekable();
        while children.peek().is_some() {
            let group: Vec<Subtree> = children.by_ref().take(MAX_LINKS_PER_NODE).collect();
            next.push(parent_of(group, &mut blocks));
        }
        level = next;
    }
    // The loop leaves exactly one subtree: the root.
    let root = level.pop().expect("a file over one chunk has a root");
    let ordered = root.order.iter().map(|&i| blocks[i].clone()).collect();
    debug_assert_eq!(root.block_index, root.order[0]);
    FileDag {
        root: root.cid,
        blocks: ordered,
    }
}

fn parent_of(children: Vec<Subtree>, blocks: &mut Vec<Block>) -> Subtree {
    let filesize = children.iter().map(|c| c.filesize).sum();
    let unixfs = pb::encode_unixfs(&UnixFsData {
        kind: UnixFsType::File,
        data: None,
        filesize: Some(filesize),
        blocksizes: children.iter().map(|c| c.filesize).collect(),
        hash_type: None,
        fanout: None,
    });
    let node = PbNode {
        links: children
            .iter()
            .map(|c| PbLink {
                hash: c.cid.to_bytes(),
                name: String::new(),
                tsize: c.tsize,
            })
            .collect(),
        data: Some(unixfs),
    };
    let encoded = pb::encode_node(&node);
    let cid = block_cid(DAG_PB_CODEC, &encoded);
    let tsize = encoded.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
    blocks.push(Block {
        cid,
        data: Bytes::from(encoded),
    });
    let index = blocks.len() - 1;
    let mut order = vec![index];
    for child in children {
        order.extend(child.order);
    }
    Subtree {
        cid,
        filesize,
        tsize,
        block_index: index,
        order,
    }
}

/// The CID `ipfs add --cid-version=1` gives these bytes.
pub fn file_cid(bytes: &[u8]) -> Cid {
    if bytes.len() <= CHUNK_SIZE_BYTES {
        return block_cid(RAW_CODEC, bytes);
    }
    build_file_dag(bytes).root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn known_answers_match_kubo() {
        for (n, expected) in [
            (
                100,
                "bafkreif44cx7dhhvvjvhi2ndbvq5atsdo3slx5rycbjo5ht7gojfzfknki",
            ),
            (
                262_144,
                "bafkreibruh455iawsviqslif5c7uurdcfdemh22mtnytyzvnzn75kpejxy",
            ),
            (
                3_000_000,
                "bafybeicptzmh5x5nlaqtfkrh2k6lrcqygm7mdep7frcti2af2u7r5xdzw4",
            ),
            (
                0,
                "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
            ),
        ] {
            assert_eq!(file_cid(&pattern(n)).to_string(), expected, "n = {n}");
        }
    }

    #[test]
    fn multi_level_tree_is_balanced() {
        let n = 175 * CHUNK_SIZE_BYTES + 1;
        let bytes = pattern(n);
        let dag = build_file_dag(&bytes);
        assert_eq!(
            dag.blocks.len(),
            176 + 3,
            "176 leaves, two level-1 nodes, a root"
        );
        assert_eq!(dag.blocks[0].cid, dag.root);
        let root = pb::decode_node(&dag.blocks[0].data).expect("root decodes");
        assert_eq!(root.links.len(), 2);
        let root_data = pb::decode_unixfs(root.data.as_deref().expect("data")).expect("unixfs");
        assert_eq!(root_data.filesize, Some(n as u64));
        assert_eq!(root_data.blocksizes.iter().sum::<u64>(), n as u64);
        assert_eq!(
            root_data.blocksizes,
            [174 * CHUNK_SIZE_BYTES as u64, CHUNK_SIZE_BYTES as u64 + 1]
        );
        let first = pb::decode_node(&dag.blocks[1].data).expect("first child decodes");
        assert_eq!(
            dag.blocks[1].cid.to_bytes(),
            root.links[0].hash,
            "depth-first order"
        );
        assert_eq!(first.links.len(), 174);
        // Tsize = the child's own bytes plus everything under it.
        let first_total: u64 = dag.blocks[1].data.len() as u64 + 174 * CHUNK_SIZE_BYTES as u64;
        assert_eq!(root.links[0].tsize, first_total);
        let all_bytes: u64 = dag.blocks.iter().map(|b| b.data.len() as u64).sum();
        assert_eq!(
            root.links.iter().map(|l| l.tsize).sum::<u64>() + dag.blocks[0].data.len() as u64,
            all_bytes
        );
        assert_eq!(file_cid(&bytes), dag.root);
    }
}
