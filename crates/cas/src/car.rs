//! CARv1 archives of a DAG, in one deterministic order: the header naming
//! the single root, then every block reachable from the root, depth-first,
//! links in their order, each block once (at its first visit). The same DAG
//! always gives the same bytes.

use std::collections::HashSet;
use std::io::Write;

use cid::Cid;

use crate::CasError;
use crate::dag::DAG_PB_CODEC;
use crate::pb;

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The CARv1 header (dag-cbor `{"roots": [root], "version": 1}`), length-prefixed.
pub fn car_header(root: &Cid) -> Vec<u8> {
    let cid = root.to_bytes();
    let mut cbor = Vec::with_capacity(cid.len() + 24);
    cbor.push(0xa2); // map of 2, keys in dag-cbor order (shorter first)
    cbor.push(0x65);
    cbor.extend_from_slice(b"roots");
    cbor.push(0x81); // array of 1
    cbor.extend_from_slice(&[0xd8, 0x2a]); // tag 42: a CID
    let length = cid.len() + 1; // the identity multibase prefix 0x00
    if length < 24 {
        cbor.push(0x40 | length as u8);
    } else {
        cbor.push(0x58);
        cbor.push(length as u8);
    }
    cbor.push(0x00);
    cbor.extend_from_slice(&cid);
    cbor.push(0x67);
    cbor.extend_from_slice(b"version");
    cbor.push(0x01);
    let mut out = Vec::with_capacity(cbor.len() + 2);
    varint(cbor.len() as u64, &mut out);
    out.extend_from_slice(&cbor);
    out
}

/// Writes the CAR of the DAG under `root` to `out`, reading blocks with
/// `get`, and answers the number of bytes written.
pub fn write_car<W: Write, B: AsRef<[u8]>>(
    root: &Cid,
    get: impl FnMut(&Cid) -> Result<B, CasError>,
    out: &mut W,
) -> Result<u64, CasError> {
    write_car_scoped(root, &[], root, DagScope::All, get, out)
}

/// How much of a DAG a CAR carries (the trustless gateway's `dag-scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagScope {
    /// Every block under the target.
    All,
    /// A file whole; a directory's own node only.
    Entity,
    /// The target block only.
    Block,
}

/// Writes a CAR whose header names `root`: first the blocks of `path` (the
/// nodes walked from `root` to `target`, so a client can verify the path),
/// then `target`'s DAG as far as `scope` says, each block once.
pub fn write_car_scoped<W: Write, B: AsRef<[u8]>>(
    root: &Cid,
    path: &[Cid],
    target: &Cid,
    scope: DagScope,
    mut get: impl FnMut(&Cid) -> Result<B, CasError>,
    out: &mut W,
) -> Result<u64, CasError> {
    let header = car_header(root);
    out.write_all(&header)?;
    let mut written = header.len() as u64;
    let mut seen = HashSet::new();
    let mut frame = Vec::new();
    let mut emit = |cid: &Cid, data: &[u8], out: &mut W| -> Result<u64, CasError> {
        let cid_bytes = cid.to_bytes();
        frame.clear();
        varint((cid_bytes.len() + data.len()) as u64, &mut frame);
        frame.extend_from_slice(&cid_bytes);
        out.write_all(&frame)?;
        out.write_all(data)?;
        Ok((frame.len() + data.len()) as u64)
    };
    for cid in path {
        if cid != target && seen.insert(*cid) {
            let data = get(cid)?;
            written += emit(cid, data.as_ref(), out)?;
        }
    }
    let mut stack = vec![*target];
    // Entity scope: the target and, for a HAMT directory, its sub-shards
    // (needed to list it) are the directory's own nodes; entries are not.
    let mut entity_nodes = HashSet::from([*target]);
    while let Some(cid) = stack.pop() {
        if !seen.insert(cid) {
            continue;
        }
        let data = get(&cid)?;
        let data = data.as_ref();
        let (descend, only_shards) = match scope {
            DagScope::All => (true, false),
            DagScope::Block => (false, false),
            DagScope::Entity if entity_nodes.contains(&cid) => match unixfs_kind(&cid, data) {
                Some(pb::UnixFsType::Directory) => (false, false),
                Some(pb::UnixFsType::HamtShard) => (true, true),
                _ => (true, false),
            },
            DagScope::Entity => (true, false),
        };
        if descend && cid.codec() == DAG_PB_CODEC {
            let node = pb::decode_node(data)?;
            for link in node.links.iter().rev() {
                if only_shards && !crate::hamt::is_shard_link(&link.name) {
                    continue;
                }
                let child = Cid::try_from(link.hash.as_slice())
                    .map_err(|_| CasError::Malformed("a link that is not a CID"))?;
                if only_shards {
                    entity_nodes.insert(child);
                }
                stack.push(child);
            }
        }
        written += emit(&cid, data, out)?;
    }
    Ok(written)
}

/// The UnixFS type of a dag-pb block (`None` for other codecs or no UnixFS data).
fn unixfs_kind(cid: &Cid, data: &[u8]) -> Option<pb::UnixFsType> {
    if cid.codec() != DAG_PB_CODEC {
        return None;
    }
    pb::decode_node(data)
        .ok()
        .and_then(|node| node.data)
        .and_then(|unixfs| pb::decode_unixfs(&unixfs).ok())
        .map(|unixfs| unixfs.kind)
}

/// A CAR read back: its roots, and its blocks in file order.
#[derive(Debug, Clone)]
pub struct CarFile {
    /// The header's roots.
    pub roots: Vec<Cid>,
    /// Every block, as listed.
    pub blocks: Vec<(Cid, Vec<u8>)>,
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, CasError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes
            .split_first()
            .ok_or(CasError::Malformed("truncated varint"))?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(CasError::Malformed("varint too long"))
}

/// A CBOR item head: major type and argument (definite lengths only).
fn cbor_head(bytes: &mut &[u8]) -> Result<(u8, u64), CasError> {
    let (&first, rest) = bytes
        .split_first()
        .ok_or(CasError::Malformed("truncated CAR header"))?;
    *bytes = rest;
    let major = first >> 5;
    let info = first & 0x1f;
    let width = match info {
        0..=23 => return Ok((major, u64::from(info))),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => return Err(CasError::Malformed("indefinite CBOR in CAR header")),
    };
    if bytes.len() < width {
        return Err(CasError::Malformed("truncated CAR header"));
    }
    let value = bytes[..width]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    *bytes = &bytes[width..];
    Ok((major, value))
}

fn cbor_bytes<'a>(bytes: &mut &'a [u8], major: u8) -> Result<&'a [u8], CasError> {
    let (found, length) = cbor_head(bytes)?;
    let length = usize::try_from(length).map_err(|_| CasError::Malformed("CBOR length"))?;
    if found != major || bytes.len() < length {
        return Err(CasError::Malformed("unexpected CAR header"));
    }
    let (value, rest) = bytes.split_at(length);
    *bytes = rest;
    Ok(value)
}

fn parse_header(mut cbor: &[u8]) -> Result<Vec<Cid>, CasError> {
    let (major, entries) = cbor_head(&mut cbor)?;
    if major != 5 || entries > 8 {
        return Err(CasError::Malformed("a CAR header is a map"));
    }
    let (mut roots, mut version) = (None, None);
    for _ in 0..entries {
        match cbor_bytes(&mut cbor, 3)? {
            b"version" => {
                let (major, value) = cbor_head(&mut cbor)?;
                if major != 0 {
                    return Err(CasError::Malformed("CAR version is not a number"));
                }
                version = Some(value);
            }
            b"roots" => {
                let (major, count) = cbor_head(&mut cbor)?;
                if major != 4 || count > 1024 {
                    return Err(CasError::Malformed("CAR roots are not a list"));
                }
                let mut found = Vec::new();
                for _ in 0..count {
                    if cbor_head(&mut cbor)? != (6, 42) {
                        return Err(CasError::Malformed("a CAR root is not a CID"));
                    }
                    let raw = cbor_bytes(&mut cbor, 2)?;
                    let (&prefix, cid) = raw
                        .split_first()
                        .ok_or(CasError::Malformed("empty CID in CAR header"))?;
                    if prefix != 0 {
                        return Err(CasError::Malformed(
                            "a CAR root CID without its 0x00 prefix",
                        ));
                    }
                    found.push(
                        Cid::try_from(cid).map_err(|_| CasError::Malformed("a bad root CID"))?,
                    );
                }
                roots = Some(found);
            }
            _ => return Err(CasError::Malformed("unknown key in CAR header")),
        }
    }
    if version != Some(1) {
        return Err(CasError::Malformed("only CARv1 is read"));
    }
    if !cbor.is_empty() {
        return Err(CasError::Malformed("trailing bytes in CAR header"));
    }
    roots.ok_or(CasError::Malformed("a CAR header without roots"))
}

/// Reads a CARv1 (strictly: bounded lengths, no trailing garbage). Blocks are
/// not checked against their CIDs here; see [`crate::verify_car`].
pub fn read_car(mut bytes: &[u8]) -> Result<CarFile, CasError> {
    let header_length = usize::try_from(read_varint(&mut bytes)?)
        .map_err(|_| CasError::Malformed("header length"))?;
    if header_length > bytes.len() || header_length > 1 << 20 {
        return Err(CasError::Malformed("CAR header length out of bounds"));
    }
    let (header, mut rest) = bytes.split_at(header_length);
    let roots = parse_header(header)?;
    let mut blocks = Vec::new();
    while !rest.is_empty() {
        let length = usize::try_from(read_varint(&mut rest)?)
            .map_err(|_| CasError::Malformed("frame length"))?;
        if length > rest.len() {
            return Err(CasError::Malformed("truncated CAR block"));
        }
        let (frame, after) = rest.split_at(length);
        rest = after;
        let mut cursor = std::io::Cursor::new(frame);
        let cid =
            Cid::read_bytes(&mut cursor).map_err(|_| CasError::Malformed("a bad block CID"))?;
        let data = frame[cursor.position() as usize..].to_vec();
        blocks.push((cid, data));
    }
    Ok(CarFile { roots, blocks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::build_file_dag;
    use std::collections::HashMap;

    #[test]
    fn a_car_lists_the_root_then_blocks_depth_first_once() {
        let bytes: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let dag = build_file_dag(&bytes);
        let blocks: HashMap<Cid, Vec<u8>> = dag
            .blocks
            .iter()
            .map(|b| (b.cid, b.data.to_vec()))
            .collect();
        let mut car = Vec::new();
        let size = write_car(
            &dag.root,
            |cid| blocks.get(cid).cloned().ok_or(CasError::MissingBlock(*cid)),
            &mut car,
        )
        .unwrap();
        assert_eq!(size, car.len() as u64);
        // The header, then blocks in the file DAG's own depth-first order.
        let header = car_header(&dag.root);
        assert_eq!(&car[..header.len()], &header[..]);
        let mut rest = &car[header.len()..];
        for block in &dag.blocks {
            let cid = block.cid.to_bytes();
            let frame = cid.len() + block.data.len();
            assert!(frame < 1 << 21);
            let prefix = if frame < 0x80 {
                1
            } else if frame < 0x4000 {
                2
            } else {
                3
            };
            rest = &rest[prefix..];
            assert_eq!(&rest[..cid.len()], &cid[..]);
            assert_eq!(&rest[cid.len()..frame], &block.data[..]);
            rest = &rest[frame..];
        }
        assert!(rest.is_empty());
        let read = read_car(&car).unwrap();
        assert_eq!(read.roots, vec![dag.root]);
        assert_eq!(read.blocks.len(), dag.blocks.len());
        assert_eq!(read.blocks[0].0, dag.root);
        for cut in [0, 1, 5, header.len() + 3, car.len() - 1] {
            assert!(read_car(&car[..cut]).is_err(), "cut at {cut}");
        }
        let missing = write_car(
            &dag.root,
            |cid| Err::<Vec<u8>, _>(CasError::MissingBlock(*cid)),
            &mut Vec::new(),
        );
        assert!(matches!(missing, Err(CasError::MissingBlock(_))));
    }

    #[test]
    fn the_entity_of_a_sharded_directory_is_its_shards() {
        use crate::dag::file_cid;
        use crate::dir::{DirEntry, build_directory};
        let entries: Vec<DirEntry> = (0..7000)
            .map(|i| {
                let body = format!("{i}\n");
                DirEntry {
                    name: format!("{i}.m4s"),
                    cid: file_cid(body.as_bytes()),
                    tsize: body.len() as u64,
                }
            })
            .collect();
        let dir = build_directory(entries).expect("sharded");
        assert!(!dir.shards.is_empty());
        let blocks: std::collections::HashMap<Cid, Vec<u8>> = dir
            .shards
            .iter()
            .chain(std::iter::once(&dir.block))
            .map(|b| (b.cid, b.data.to_vec()))
            .collect();
        let mut out = Vec::new();
        write_car_scoped(
            &dir.block.cid,
            &[],
            &dir.block.cid,
            DagScope::Entity,
            |cid| blocks.get(cid).cloned().ok_or(CasError::MissingBlock(*cid)),
            &mut out,
        )
        .expect("only shard blocks are asked for");
        let car = read_car(&out).expect("car");
        assert_eq!(
            car.blocks.len(),
            dir.shards.len() + 1,
            "root and every sub-shard, no entries"
        );
    }
}
