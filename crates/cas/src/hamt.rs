//! HAMT-sharded UnixFS directories, as Kubo (boxo) and ipfs-unixfs-importer
//! build them for directories too large for one node: 256 buckets per node,
//! chosen by successive bytes of the murmur3-x64-64 hash of the entry's name.
//! A bucket with one entry links it as `{bucket:02X}{name}`; a bucket with
//! more links a sub-shard as `{bucket:02X}`, which sorts its entries by the
//! hash's next byte. Each node's `Data` is a UnixFS `HAMTShard` with the
//! occupied buckets as a bitfield (a 256-bit big-endian integer, leading zero
//! bytes dropped), the hash function (0x22) and the fanout.

use bytes::Bytes;
use cid::Cid;

use crate::CasError;
use crate::dag::{Block, DAG_PB_CODEC, block_cid};
use crate::dir::{DirEntry, Directory};
use crate::pb::{self, PbLink, PbNode, UnixFsData, UnixFsType};

/// Buckets per shard node.
pub const HAMT_FANOUT: usize = 256;
/// Multicodec of murmur3-x64-64, the name hash.
pub const MURMUR3_X64_64: u64 = 0x22;
/// Hash bytes available: one per level.
const HASH_BYTES: usize = 8;

/// The hash that picks a name's buckets, one byte per level from the first:
/// murmur3_x64_128 (seed 0), its first half `h1` as big-endian bytes (Go's
/// `murmur3.New64().Sum`; ipfs-unixfs-importer reverses these bytes and reads
/// them from the end, which is the same order).
pub fn name_hash(name: &str) -> [u8; HASH_BYTES] {
    let mut reader = name.as_bytes();
    // Reading from a byte slice cannot fail.
    let digest = murmur3::murmur3_x64_128(&mut reader, 0).unwrap_or_default();
    (digest as u64).to_be_bytes()
}

/// Builds a sharded directory from entries with distinct, valid names.
pub(crate) fn build_sharded(entries: &[DirEntry]) -> Result<Directory, CasError> {
    let hashed: Vec<(&DirEntry, [u8; HASH_BYTES])> =
        entries.iter().map(|e| (e, name_hash(&e.name))).collect();
    let mut shards = Vec::new();
    let (root, tsize) = shard_node(&hashed, 0, &mut shards)?;
    Ok(Directory {
        block: root,
        shards,
        tsize,
    })
}

/// One shard node at `depth` (which hash byte picks the bucket); sub-shards
/// go to `shards`. Answers the node and its cumulative size.
fn shard_node(
    entries: &[(&DirEntry, [u8; HASH_BYTES])],
    depth: usize,
    shards: &mut Vec<Block>,
) -> Result<(Block, u64), CasError> {
    if depth >= HASH_BYTES {
        return Err(CasError::Malformed(
            "names whose hashes collide in all 64 bits",
        ));
    }
    let mut buckets: Vec<Vec<&(&DirEntry, [u8; HASH_BYTES])>> = vec![Vec::new(); HAMT_FANOUT];
    for entry in entries {
        buckets[usize::from(entry.1[depth])].push(entry);
    }
    let mut bitfield = [0u8; HAMT_FANOUT / 8];
    let mut links = Vec::new();
    let mut tsize_of_links = 0u64;
    for (index, bucket) in buckets.iter().enumerate() {
        match bucket.as_slice() {
            [] => continue,
            [(entry, _)] => {
                links.push(PbLink {
                    hash: entry.cid.to_bytes(),
                    name: format!("{index:02X}{}", entry.name),
                    tsize: entry.tsize,
                });
                tsize_of_links += entry.tsize;
            }
            many => {
                let owned: Vec<(&DirEntry, [u8; HASH_BYTES])> =
                    many.iter().map(|(e, h)| (*e, *h)).collect();
                let (child, child_tsize) = shard_node(&owned, depth + 1, shards)?;
                links.push(PbLink {
                    hash: child.cid.to_bytes(),
                    name: format!("{index:02X}"),
                    tsize: child_tsize,
                });
                tsize_of_links += child_tsize;
                shards.push(child);
            }
        }
        bitfield[HAMT_FANOUT / 8 - 1 - index / 8] |= 1 << (index % 8);
    }
    let first = bitfield
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bitfield.len());
    let node = PbNode {
        links,
        data: Some(pb::encode_unixfs(&UnixFsData {
            kind: UnixFsType::HamtShard,
            data: Some(bitfield[first..].to_vec()),
            filesize: None,
            blocksizes: Vec::new(),
            hash_type: Some(MURMUR3_X64_64),
            fanout: Some(HAMT_FANOUT as u64),
        })),
    };
    let encoded = pb::encode_node(&node);
    let cid = block_cid(DAG_PB_CODEC, &encoded);
    let tsize = encoded.len() as u64 + tsize_of_links;
    Ok((
        Block {
            cid,
            data: Bytes::from(encoded),
        },
        tsize,
    ))
}

/// Where a name leads in a directory node: to the entry, or (in a HAMT) to
/// the sub-shard to look in next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The entry's CID.
    Found(Cid),
    /// Look for the same name in this sub-shard, one level down.
    Shard(Cid),
    /// No such entry.
    Missing,
}

/// Looks `name` up in one decoded directory node: a basic directory, or the
/// HAMT shard at `depth` (0 for a sharded directory's root).
pub fn lookup_step(node: &PbNode, name: &str, depth: usize) -> Result<Step, CasError> {
    let unixfs = node
        .data
        .as_deref()
        .map(pb::decode_unixfs)
        .transpose()?
        .ok_or(CasError::Malformed("a node without UnixFS data"))?;
    let cid_of = |hash: &[u8]| {
        Cid::try_from(hash).map_err(|_| CasError::Malformed("a link that is not a CID"))
    };
    match unixfs.kind {
        UnixFsType::Directory => match node.links.iter().find(|l| l.name == name) {
            Some(link) => Ok(Step::Found(cid_of(&link.hash)?)),
            None => Ok(Step::Missing),
        },
        UnixFsType::HamtShard => {
            if unixfs.hash_type != Some(MURMUR3_X64_64) || unixfs.fanout != Some(HAMT_FANOUT as u64)
            {
                return Err(CasError::Malformed(
                    "a HAMT shard with another hash or fanout",
                ));
            }
            let hash = name_hash(name);
            let Some(byte) = hash.get(depth) else {
                return Ok(Step::Missing);
            };
            let prefix = format!("{byte:02X}");
            for link in &node.links {
                if let Some(rest) = link.name.strip_prefix(&prefix) {
                    if rest.is_empty() {
                        return Ok(Step::Shard(cid_of(&link.hash)?));
                    }
                    if rest == name {
                        return Ok(Step::Found(cid_of(&link.hash)?));
                    }
                }
            }
            Ok(Step::Missing)
        }
        _ => Err(CasError::Malformed("not a directory")),
    }
}

/// Why a path does not resolve.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// A component's parent is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(Cid),
    /// No entry of that name.
    #[error("no {name:?} in {directory}")]
    Missing { name: String, directory: Cid },
    /// Reading a block failed.
    #[error(transparent)]
    Block(CasError),
}

/// Resolves `names` from `root` through basic and HAMT directories. Answers
/// every node walked (directories and shards, in order; for a CAR that lets
/// a client verify the path) and the target.
pub fn resolve_path<B: AsRef<[u8]>>(
    root: Cid,
    names: &[&str],
    mut get: impl FnMut(&Cid) -> Result<B, CasError>,
) -> Result<(Vec<Cid>, Cid), PathError> {
    let mut walked = Vec::new();
    let mut target = root;
    for name in names {
        let directory = target;
        let mut depth = 0;
        target = loop {
            let block = get(&target).map_err(PathError::Block)?;
            let node =
                pb::decode_node(block.as_ref()).map_err(|_| PathError::NotADirectory(directory))?;
            let step =
                lookup_step(&node, name, depth).map_err(|_| PathError::NotADirectory(directory))?;
            walked.push(target);
            match step {
                Step::Found(cid) => break cid,
                Step::Shard(next) => {
                    target = next;
                    depth += 1;
                }
                Step::Missing => {
                    return Err(PathError::Missing {
                        name: (*name).to_string(),
                        directory,
                    });
                }
            }
        };
    }
    Ok((walked, target))
}

/// Whether a link of a HAMT shard names a sub-shard (a bare bucket prefix).
pub fn is_shard_link(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::file_cid;
    use crate::dir::build_directory;

    fn entries(count: usize) -> Vec<DirEntry> {
        (0..count)
            .map(|i| {
                let body = format!("{i}\n");
                DirEntry {
                    name: format!("{i:05}.m4s"),
                    cid: file_cid(body.as_bytes()),
                    tsize: body.len() as u64,
                }
            })
            .collect()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn name_hash_known_answers() {
        // ipfs-unixfs-importer 17.1.1's hamtHashFn (the first 8 bytes of
        // @multiformats/murmur3's murmur3128, reversed), which its HAMT reads
        // from the last byte: our bytes are those, in reading order.
        for (name, importer_bytes) in [
            ("", "0000000000000000"),
            ("a", "897859f665555585"),
            ("00001.m4s", "1044c7062cdda95e"),
            ("01137.m4s", "e3dc7e42603e0800"),
        ] {
            let mut reading_order = name_hash(name);
            reading_order.reverse();
            assert_eq!(hex(&reading_order), importer_bytes, "{name:?}");
        }
        // "01137.m4s" sits in bucket 00, then 08 (as the importer places it).
        assert_eq!(name_hash("01137.m4s")[..2], [0x00, 0x08]);
    }

    #[test]
    fn directory_cids_match_ipfs_unixfs_importer() {
        // Root CIDs and cumulative sizes ipfs-unixfs-importer 17.1.1 gives a
        // folder `d` of files `{i:05}.m4s` holding "{i}\n" with Kubo's
        // settings (CIDv1, raw leaves, links-bytes sharding above 256 KiB):
        // 5825 entries estimate 262125 bytes (basic), 5826 estimate 262170
        // (sharded).
        for (count, cid, tsize) in [
            (
                100,
                "bafybeiegzjstwb2a3bt67ilcaey46xcp77qglbxvuon534h4tyhj7eptoi",
                5594,
            ),
            (
                5825,
                "bafybeihthbkb4ao356l2zivzxf6s25xcx6tlti3wguig755c635ttovvbe",
                336744,
            ),
            (
                5826,
                "bafybeigystuxju7skgghtojgtyjl624jk3mpcq7h5odrwvroclkt7r6d5q",
                391291,
            ),
            (
                6000,
                "bafybeicxasbzaerbs6uwzkre2szhls6m6d55kl6kfj2pvqepzpxlhxltt4",
                402988,
            ),
            (
                20000,
                "bafybeibqjev6pza6o3xpkjqjtpsq3f3n6dxrkinvx7xb22yquuxmeqbdjy",
                1434094,
            ),
        ] {
            let dir = build_directory(entries(count)).expect("directory");
            assert_eq!(dir.block.cid.to_string(), cid, "{count} entries");
            assert_eq!(dir.tsize, tsize, "{count} entries");
        }
    }

    #[test]
    fn paths_resolve_through_basic_and_sharded_directories() {
        let sharded = build_directory(entries(6000)).expect("sharded");
        let top = build_directory(vec![DirEntry {
            name: "720p".into(),
            cid: sharded.block.cid,
            tsize: sharded.tsize,
        }])
        .expect("basic");
        let blocks: std::collections::HashMap<Cid, Bytes> = sharded
            .shards
            .iter()
            .chain([&sharded.block, &top.block])
            .map(|b| (b.cid, b.data.clone()))
            .collect();
        let get = |cid: &Cid| blocks.get(cid).cloned().ok_or(CasError::MissingBlock(*cid));
        let wanted = &entries(6000)[4321];
        let (walked, target) =
            resolve_path(top.block.cid, &["720p", &wanted.name], get).expect("resolves");
        assert_eq!(target, wanted.cid);
        assert_eq!(walked[0], top.block.cid);
        assert_eq!(walked[1], sharded.block.cid);
        assert!(
            walked.len() >= 2,
            "the top folder, the root shard, any sub-shards"
        );
        assert!(
            walked[2..]
                .iter()
                .all(|c| sharded.shards.iter().any(|s| s.cid == *c))
        );
        assert!(matches!(
            resolve_path(top.block.cid, &["720p", "nope.m4s"], get),
            Err(PathError::Missing { name, directory })
                if name == "nope.m4s" && directory == sharded.block.cid
        ));
        // The file's own block is not in this map: the walk asks for it.
        assert!(matches!(
            resolve_path(top.block.cid, &["720p", &wanted.name, "deeper"], get),
            Err(PathError::Block(CasError::MissingBlock(cid))) if cid == wanted.cid
        ));
    }

    #[test]
    fn small_directories_stay_basic_and_large_ones_shard() {
        let small = build_directory(entries(100)).expect("basic");
        assert!(small.shards.is_empty());
        let large = build_directory(entries(6000)).expect("sharded");
        let root = pb::decode_node(&large.block.data).expect("node");
        let unixfs = pb::decode_unixfs(root.data.as_deref().expect("data")).expect("unixfs");
        assert_eq!(unixfs.kind, UnixFsType::HamtShard);
        assert_eq!(unixfs.fanout, Some(256));
        assert!(
            !large.shards.is_empty(),
            "6000 names in 256 buckets collide"
        );
        // Every name resolves through the shards to its entry.
        let blocks: std::collections::HashMap<Cid, Bytes> = large
            .shards
            .iter()
            .chain(std::iter::once(&large.block))
            .map(|b| (b.cid, b.data.clone()))
            .collect();
        for entry in entries(6000).iter().step_by(97) {
            let mut at = large.block.cid;
            let mut depth = 0;
            loop {
                let node = pb::decode_node(&blocks[&at]).expect("node");
                match lookup_step(&node, &entry.name, depth).expect("step") {
                    Step::Found(cid) => {
                        assert_eq!(cid, entry.cid);
                        break;
                    }
                    Step::Shard(next) => {
                        at = next;
                        depth += 1;
                    }
                    Step::Missing => panic!("{} missing", entry.name),
                }
            }
        }
        let root_node = pb::decode_node(&blocks[&large.block.cid]).expect("node");
        assert_eq!(
            lookup_step(&root_node, "nope.m4s", 0).expect("step"),
            lookup_step(&root_node, "nope.m4s", 0).expect("step")
        );
        // The cumulative size counts every shard once and every entry once.
        let expected: u64 = blocks.values().map(|b| b.len() as u64).sum::<u64>()
            + entries(6000).iter().map(|e| e.tsize).sum::<u64>();
        assert_eq!(large.tsize, expected);
    }
}
