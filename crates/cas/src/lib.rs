//! Content addressing for StreamWeave.
//!
//! [`file_cid`] gives exactly the CID `ipfs add --cid-version=1` gives a file
//! (Kubo defaults: 256 KiB chunks, raw leaves, balanced layout with at most
//! 174 links per node, sha2-256, base32 CIDv1). [`build_file_dag`] returns
//! every block of that DAG, [`Blockstore`] keeps blocks on disk and reads
//! files back verified, and [`decode_dag_pb`] walks nodes.

mod blockstore;
mod dag;
mod pb;

pub use blockstore::Blockstore;
pub use cid::Cid;
pub use dag::{
    Block, CHUNK_SIZE_BYTES, DAG_PB_CODEC, FileDag, MAX_LINKS_PER_NODE, RAW_CODEC, block_cid,
    build_file_dag, file_cid,
};
pub use pb::{PbLink, PbNode, UnixFsData, UnixFsType, decode_unixfs};

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
