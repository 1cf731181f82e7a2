//! Filecoin piece commitments: the Piece CID (v2, FRC-0069) of a payload such
//! as a CAR. The payload is zero-padded, expanded by fr32 (two zero bits after
//! every 254), and hashed as a binary tree of 32-byte nodes with
//! sha256-trunc254 (sha256 with the top two bits of the last byte cleared).

use cid::Cid;
use sha2::{Digest, Sha256};

use crate::dag::RAW_CODEC;

/// Multihash code of `fr32-sha256-trunc254-padbintree`.
pub const FR32_SHA256_TRUNC254_PADBINTREE: u64 = 0x1011;
/// Smallest padded piece.
pub const MIN_PADDED_PIECE_BYTES: u64 = 128;

/// A payload's piece commitment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceCommitment {
    /// The tree's root (CommP).
    pub root: [u8; 32],
    /// The padded piece size (a power of two, at least 128).
    pub padded_size: u64,
    /// The payload's size in bytes.
    pub payload_size: u64,
}

fn trunc254(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(left);
    hasher.update(right);
    let mut out: [u8; 32] = hasher.finalize().into();
    out[31] &= 0x3f;
    out
}

/// Expands 127 bytes into 128 by fr32: two zero bits after every 254 bits.
fn fr32_expand(input: &[u8; 127]) -> [u8; 128] {
    let mut out = [0u8; 128];
    out[..32].copy_from_slice(&input[..32]);
    out[31] &= 0x3f;
    // Each following quarter is shifted two more bits.
    for i in 32..64 {
        out[i] = (input[i - 1] >> 6) | (input[i] << 2);
    }
    out[63] &= 0x3f;
    for i in 64..96 {
        out[i] = (input[i - 1] >> 4) | (input[i] << 4);
    }
    out[95] &= 0x3f;
    for i in 96..127 {
        out[i] = (input[i - 1] >> 2) | (input[i] << 6);
    }
    out[127] = input[126] >> 2;
    out
}

/// Computes a piece commitment as bytes stream in.
#[derive(Debug, Clone, Default)]
pub struct PieceHasher {
    pending: Vec<u8>,
    payload_size: u64,
    /// One subtree root per level at most, like the digits of a binary counter.
    levels: Vec<Option<[u8; 32]>>,
}

impl PieceHasher {
    /// A hasher with nothing in it.
    pub fn new() -> Self {
        PieceHasher {
            pending: Vec::with_capacity(127),
            ..Default::default()
        }
    }

    fn push_leaf(&mut self, leaf: [u8; 32]) {
        let mut node = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(None);
            }
            match self.levels[level].take() {
                Some(left) => {
                    node = trunc254(&left, &node);
                    level += 1;
                }
                None => {
                    self.levels[level] = Some(node);
                    return;
                }
            }
        }
    }

    fn push_chunk(&mut self, chunk: &[u8; 127]) {
        let expanded = fr32_expand(chunk);
        for leaf in expanded.chunks_exact(32) {
            let mut node = [0u8; 32];
            node.copy_from_slice(leaf);
            self.push_leaf(node);
        }
    }

    /// Adds payload bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.payload_size += bytes.len() as u64;
        if !self.pending.is_empty() {
            let take = (127 - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == 127 {
                let mut chunk = [0u8; 127];
                chunk.copy_from_slice(&self.pending);
                self.pending.clear();
                self.push_chunk(&chunk);
            }
        }
        let mut chunks = bytes.chunks_exact(127);
        for chunk in chunks.by_ref() {
            let mut full = [0u8; 127];
            full.copy_from_slice(chunk);
            self.push_chunk(&full);
        }
        self.pending.extend_from_slice(chunks.remainder());
    }

    /// The commitment of everything added, zero-padded to the piece size.
    pub fn finish(mut self) -> PieceCommitment {
        let payload_size = self.payload_size;
        let expanded = payload_size.div_ceil(127) * 128;
        let padded_size = expanded.max(MIN_PADDED_PIECE_BYTES).next_power_of_two();
        if !self.pending.is_empty() {
            let mut chunk = [0u8; 127];
            chunk[..self.pending.len()].copy_from_slice(&self.pending);
            self.pending.clear();
            self.push_chunk(&chunk);
        }
        let height = (padded_size / 32).trailing_zeros() as usize;
        // Complete the tree with all-zero subtrees to the right of the data.
        let mut zero = [0u8; 32];
        let mut carry: Option<[u8; 32]> = None;
        self.levels.resize(height.max(self.levels.len()), None);
        for level in 0..height {
            carry = match (self.levels[level].take(), carry) {
                (Some(left), Some(right)) => Some(trunc254(&left, &right)),
                (Some(left), None) => Some(trunc254(&left, &zero)),
                (None, Some(left)) => Some(trunc254(&left, &zero)),
                (None, None) => None,
            };
            zero = trunc254(&zero, &zero);
        }
        let root = match (carry, self.levels.get(height).copied().flatten()) {
            (Some(root), _) => root,
            (None, Some(root)) => root,
            // Nothing at all: the root of an all-zero piece.
            (None, None) => zero,
        };
        PieceCommitment {
            root,
            padded_size,
            payload_size,
        }
    }
}

impl PieceCommitment {
    /// The commitment of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hasher = PieceHasher::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// Zero bytes added to the payload before fr32 expansion.
    pub fn padding(&self) -> u64 {
        self.padded_size / 128 * 127 - self.payload_size
    }

    /// The tree's height: log2 of the padded size in 32-byte nodes.
    pub fn height(&self) -> u8 {
        (self.padded_size / 32).trailing_zeros() as u8
    }

    /// The Piece CID v2 (FRC-0069): raw codec, multihash
    /// `fr32-sha256-trunc254-padbintree` of `uvarint(padding) || height || root`.
    pub fn cid(&self) -> Cid {
        let mut digest = Vec::with_capacity(44);
        let mut padding = self.padding();
        while padding >= 0x80 {
            digest.push((padding as u8) | 0x80);
            padding >>= 7;
        }
        digest.push(padding as u8);
        digest.push(self.height());
        digest.extend_from_slice(&self.root);
        let hash = cid::multihash::Multihash::<64>::wrap(FR32_SHA256_TRUNC254_PADBINTREE, &digest)
            .expect("a piece digest fits a 64-byte multihash");
        Cid::new_v1(RAW_CODEC, hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fr32_keeps_every_bit_in_order() {
        let mut input = [0u8; 127];
        for (i, b) in input.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        let out = fr32_expand(&input);
        // Reading the output's bits, skipping bits 254-255 of every 256, gives the input.
        let bit = |bytes: &[u8], n: usize| (bytes[n / 8] >> (n % 8)) & 1;
        let mut read = 0;
        for n in 0..1024 {
            if n % 256 >= 254 {
                assert_eq!(bit(&out, n), 0, "padding bit {n}");
                continue;
            }
            assert_eq!(bit(&out, n), bit(&input, read), "bit {n}");
            read += 1;
        }
        assert_eq!(read, 1016);
    }

    #[test]
    fn streaming_equals_one_shot_and_sizes_are_right() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let whole = PieceCommitment::of(&bytes);
        let mut hasher = PieceHasher::new();
        for part in bytes.chunks(1000) {
            hasher.update(part);
        }
        assert_eq!(hasher.finish(), whole);
        assert_eq!(whole.padded_size, 131_072);
        assert_eq!(whole.padding(), 131_072 / 128 * 127 - 100_000);
        assert_eq!(whole.height(), 12);
        assert!(whole.cid().to_string().starts_with("bafkzcib"));
    }

    #[test]
    fn an_all_zero_piece_is_the_zero_tree() {
        // 127 zero bytes expand to 128 zero bytes: four zero leaves.
        let zeros = PieceCommitment::of(&[0u8; 127]);
        let leaf = [0u8; 32];
        let level1 = trunc254(&leaf, &leaf);
        assert_eq!(zeros.root, trunc254(&level1, &level1));
        assert_eq!(zeros.padded_size, 128);
        assert_eq!(zeros.padding(), 0);
    }
}
