//! The two small protobuf messages of UnixFS: the dag-pb node (`PBNode`,
//! `PBLink`) and the UnixFS `Data` inside it. Encoding follows Kubo byte for
//! byte (links before data, every field in number order, empty link names
//! written); decoding is strict about bounds and never panics.

use crate::CasError;

/// A link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// The child's CID, as bytes.
    pub hash: Vec<u8>,
    /// The link name (empty inside files).
    pub name: String,
    /// Cumulative size of the child's DAG in bytes.
    pub tsize: u64,
}

/// A decoded dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    /// Links, in order.
    pub links: Vec<PbLink>,
    /// The `Data` field (UnixFS for UnixFS nodes).
    pub data: Option<Vec<u8>>,
}

/// UnixFS `Data.DataType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixFsType {
    /// 0
    Raw,
    /// 1
    Directory,
    /// 2
    File,
    /// 3
    Metadata,
    /// 4
    Symlink,
    /// 5
    HamtShard,
}

/// The UnixFS `Data` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixFsData {
    /// Node type.
    pub kind: UnixFsType,
    /// Inline bytes (absent in nodes whose leaves are raw blocks).
    pub data: Option<Vec<u8>>,
    /// Total file size below this node.
    pub filesize: Option<u64>,
    /// File size below each link, in link order.
    pub blocksizes: Vec<u64>,
    /// HAMT shards: the hash function's multicodec (0x22, murmur3-x64-64).
    pub hash_type: Option<u64>,
    /// HAMT shards: buckets per node.
    pub fanout: Option<u64>,
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_uint(out: &mut Vec<u8>, field: u8, value: u64) {
    out.push(field << 3);
    put_varint(out, value);
}

/// Encodes a UnixFS `Data` message.
pub fn encode_unixfs(data: &UnixFsData) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.blocksizes.len() * 4);
    let kind = match data.kind {
        UnixFsType::Raw => 0,
        UnixFsType::Directory => 1,
        UnixFsType::File => 2,
        UnixFsType::Metadata => 3,
        UnixFsType::Symlink => 4,
        UnixFsType::HamtShard => 5,
    };
    put_uint(&mut out, 1, kind);
    if let Some(inline) = &data.data {
        put_bytes(&mut out, 2, inline);
    }
    if let Some(filesize) = data.filesize {
        put_uint(&mut out, 3, filesize);
    }
    for size in &data.blocksizes {
        put_uint(&mut out, 4, *size);
    }
    if let Some(hash_type) = data.hash_type {
        put_uint(&mut out, 5, hash_type);
    }
    if let Some(fanout) = data.fanout {
        put_uint(&mut out, 6, fanout);
    }
    out
}

/// Encodes a dag-pb node: links first, then data, as the dag-pb spec requires.
pub fn encode_node(node: &PbNode) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(node.links.len() * 48 + node.data.as_ref().map_or(0, Vec::len) + 8);
    for link in &node.links {
        let mut encoded = Vec::with_capacity(link.hash.len() + link.name.len() + 16);
        put_bytes(&mut encoded, 1, &link.hash);
        put_bytes(&mut encoded, 2, link.name.as_bytes());
        put_uint(&mut encoded, 3, link.tsize);
        put_bytes(&mut out, 2, &encoded);
    }
    if let Some(data) = &node.data {
        put_bytes(&mut out, 1, data);
    }
    out
}

/// A bounds-checked protobuf reader.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, position: 0 }
    }

    fn varint(&mut self) -> Result<u64, CasError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.position)
                .ok_or(CasError::Malformed("truncated varint"))?;
            self.position += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CasError::Malformed("varint too long"))
    }

    /// The next field, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, CasError> {
        if self.position >= self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            2 => {
                let length = usize::try_from(self.varint()?)
                    .map_err(|_| CasError::Malformed("length overflow"))?;
                let end = self
                    .position
                    .checked_add(length)
                    .filter(|end| *end <= self.bytes.len())
                    .ok_or(CasError::Malformed("truncated field"))?;
                let slice = &self.bytes[self.position..end];
                self.position = end;
                Value::Bytes(slice)
            }
            1 => {
                self.skip(8)?;
                Value::Varint(0)
            }
            5 => {
                self.skip(4)?;
                Value::Varint(0)
            }
            _ => return Err(CasError::Malformed("unsupported wire type")),
        };
        Ok(Some((number, value)))
    }

    fn skip(&mut self, count: usize) -> Result<(), CasError> {
        self.position = self
            .position
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(CasError::Malformed("truncated field"))?;
        Ok(())
    }
}

/// Decodes a dag-pb node.
pub fn decode_node(bytes: &[u8]) -> Result<PbNode, CasError> {
    let mut reader = Reader::new(bytes);
    let mut node = PbNode::default();
    while let Some((number, value)) = reader.field()? {
        match (number, value) {
            (1, Value::Bytes(data)) => node.data = Some(data.to_vec()),
            (2, Value::Bytes(link)) => node.links.push(decode_link(link)?),
            (1 | 2, Value::Varint(_)) => {
                return Err(CasError::Malformed("wrong wire type in PBNode"));
            }
            _ => return Err(CasError::Malformed("unknown field in PBNode")),
        }
    }
    Ok(node)
}

fn decode_link(bytes: &[u8]) -> Result<PbLink, CasError> {
    let mut reader = Reader::new(bytes);
    let mut hash = None;
    let mut link = PbLink {
        hash: Vec::new(),
        name: String::new(),
        tsize: 0,
    };
    while let Some((number, value)) = reader.field()? {
        match (number, value) {
            (1, Value::Bytes(cid)) => hash = Some(cid.to_vec()),
            (2, Value::Bytes(name)) => {
                link.name = String::from_utf8(name.to_vec())
                    .map_err(|_| CasError::Malformed("link name is not UTF-8"))?;
            }
            (3, Value::Varint(tsize)) => link.tsize = tsize,
            _ => return Err(CasError::Malformed("unexpected field in PBLink")),
        }
    }
    link.hash = hash.ok_or(CasError::Malformed("link without a hash"))?;
    Ok(link)
}

/// Decodes a UnixFS `Data` message (unknown optional fields are skipped).
pub fn decode_unixfs(bytes: &[u8]) -> Result<UnixFsData, CasError> {
    let mut reader = Reader::new(bytes);
    let mut kind = None;
    let mut data = UnixFsData {
        kind: UnixFsType::Raw,
        data: None,
        filesize: None,
        blocksizes: Vec::new(),
        hash_type: None,
        fanout: None,
    };
    while let Some((number, value)) = reader.field()? {
        match (number, value) {
            (1, Value::Varint(code)) => {
                kind = Some(match code {
                    0 => UnixFsType::Raw,
                    1 => UnixFsType::Directory,
                    2 => UnixFsType::File,
                    3 => UnixFsType::Metadata,
                    4 => UnixFsType::Symlink,
                    5 => UnixFsType::HamtShard,
                    _ => return Err(CasError::Malformed("unknown UnixFS type")),
                });
            }
            (2, Value::Bytes(inline)) => data.data = Some(inline.to_vec()),
            (3, Value::Varint(size)) => data.filesize = Some(size),
            (4, Value::Varint(size)) => data.blocksizes.push(size),
            (5, Value::Varint(hash_type)) => data.hash_type = Some(hash_type),
            (6, Value::Varint(fanout)) => data.fanout = Some(fanout),
            (4, Value::Bytes(packed)) => {
                let mut packed = Reader::new(packed);
                while packed.position < packed.bytes.len() {
                    data.blocksizes.push(packed.varint()?);
                }
            }
            _ => {}
        }
    }
    data.kind = kind.ok_or(CasError::Malformed("UnixFS data without a type"))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_round_trips() {
        let node = PbNode {
            links: vec![PbLink {
                hash: vec![1, 85, 18, 32, 7],
                name: String::new(),
                tsize: 262_144,
            }],
            data: Some(encode_unixfs(&UnixFsData {
                kind: UnixFsType::File,
                data: None,
                filesize: Some(262_144),
                blocksizes: vec![262_144],
                hash_type: None,
                fanout: None,
            })),
        };
        let encoded = encode_node(&node);
        assert_eq!(encoded[0], 0x12, "links come first");
        let decoded = decode_node(&encoded).expect("valid");
        assert_eq!(decoded, node);
        let unixfs = decode_unixfs(decoded.data.as_deref().expect("data")).expect("valid");
        assert_eq!(unixfs.filesize, Some(262_144));
        assert_eq!(unixfs.blocksizes, [262_144]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bytes in [
            &[0x12][..],
            &[0x12, 0x05, 0x0a],
            &[
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            &[0xff; 12],
            &[0x0b],
            &[0x12, 0x02, 0x10, 0x00],
        ] {
            assert!(decode_node(bytes).is_err(), "{bytes:?}");
        }
        assert!(decode_unixfs(&[0x08, 0x09]).is_err());
        assert!(decode_unixfs(&[0x18, 0x01]).is_err(), "type is required");
    }
}
