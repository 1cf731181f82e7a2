//! UnixFS directories as `ipfs add -r --cid-version=1` builds them: one
//! dag-pb node per directory, links sorted by name, each link's `Tsize` the
//! cumulative size of the DAG it names, and `Data` the UnixFS directory type.

use bytes::Bytes;
use cid::Cid;

use crate::CasError;
use crate::dag::{Block, DAG_PB_CODEC, block_cid};
use crate::pb::{self, PbLink, PbNode, UnixFsData, UnixFsType};

/// Kubo shards a directory (HAMT) once the names and CIDs of its links add up
/// to more than this; a basic directory node is only right at or below it.
pub const SHARDING_THRESHOLD_BYTES: usize = 256 * 1024;

/// One entry of a directory: a name and the DAG it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (no `/`).
    pub name: String,
    /// The CID of the file or directory.
    pub cid: Cid,
    /// Cumulative size of that DAG in bytes (its blocks together).
    pub tsize: u64,
}

/// A directory node, its CID and cumulative size.
#[derive(Debug, Clone)]
pub struct Directory {
    /// The node (for a sharded directory, its root shard).
    pub block: Block,
    /// A sharded directory's other shard nodes (empty for a basic one).
    pub shards: Vec<Block>,
    /// The node's size plus every entry's `tsize`.
    pub tsize: u64,
}

/// Builds a directory from its entries: one basic node, or a HAMT of shard
/// nodes once the entries pass Kubo's threshold (see [`crate::hamt`]).
pub fn build_directory(mut entries: Vec<DirEntry>) -> Result<Directory, CasError> {
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    if entries.windows(2).any(|w| w[0].name == w[1].name) {
        return Err(CasError::Malformed("two directory entries with one name"));
    }
    if entries
        .iter()
        .any(|e| e.name.is_empty() || e.name.contains('/'))
    {
        return Err(CasError::Malformed(
            "a directory entry name is empty or has '/'",
        ));
    }
    // Kubo's size estimate: link names and CID bytes.
    let estimate: usize = entries
        .iter()
        .map(|e| e.name.len() + e.cid.encoded_len())
        .sum();
    if estimate > SHARDING_THRESHOLD_BYTES {
        return crate::hamt::build_sharded(&entries);
    }
    let node = PbNode {
        links: entries
            .iter()
            .map(|e| PbLink {
                hash: e.cid.to_bytes(),
                name: e.name.clone(),
                tsize: e.tsize,
            })
            .collect(),
        data: Some(pb::encode_unixfs(&UnixFsData {
            kind: UnixFsType::Directory,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
            hash_type: None,
            fanout: None,
        })),
    };
    let encoded = pb::encode_node(&node);
    let cid = block_cid(DAG_PB_CODEC, &encoded);
    let tsize = encoded.len() as u64 + entries.iter().map(|e| e.tsize).sum::<u64>();
    Ok(Directory {
        block: Block {
            cid,
            data: Bytes::from(encoded),
        },
        shards: Vec::new(),
        tsize,
    })
}

/// The cumulative size of a DAG from its root block: the block's length,
/// plus its links' `Tsize` when it is dag-pb.
pub fn dag_tsize(cid: &Cid, root_block: &[u8]) -> Result<u64, CasError> {
    if cid.codec() != DAG_PB_CODEC {
        return Ok(root_block.len() as u64);
    }
    let node = pb::decode_node(root_block)?;
    Ok(root_block.len() as u64 + node.links.iter().map(|l| l.tsize).sum::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::{build_file_dag, file_cid};

    #[test]
    fn an_empty_directory_is_the_well_known_one() {
        // `ipfs object new unixfs-dir` with CIDv1.
        let empty = build_directory(Vec::new()).unwrap();
        assert_eq!(
            empty.block.cid.to_string(),
            "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
        );
        assert_eq!(empty.tsize, 4);
    }

    #[test]
    fn links_sort_by_name_and_names_are_checked() {
        let a = DirEntry {
            name: "b".into(),
            cid: file_cid(b"1"),
            tsize: 1,
        };
        let b = DirEntry {
            name: "a".into(),
            cid: file_cid(b"2"),
            tsize: 1,
        };
        let one = build_directory(vec![a.clone(), b.clone()]).unwrap();
        let other = build_directory(vec![b.clone(), a.clone()]).unwrap();
        assert_eq!(one.block.cid, other.block.cid);
        let node = pb::decode_node(&one.block.data).unwrap();
        assert_eq!(node.links[0].name, "a");
        assert!(build_directory(vec![a.clone(), a.clone()]).is_err());
        let slash = DirEntry {
            name: "x/y".into(),
            ..a
        };
        assert!(build_directory(vec![slash]).is_err());
    }

    #[test]
    fn tsize_of_a_file_dag_counts_every_block() {
        let bytes: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let dag = build_file_dag(&bytes);
        let total: u64 = dag.blocks.iter().map(|b| b.data.len() as u64).sum();
        assert_eq!(dag_tsize(&dag.root, &dag.blocks[0].data).unwrap(), total);
        let small = file_cid(b"hello");
        assert_eq!(dag_tsize(&small, b"hello").unwrap(), 5);
    }
}
