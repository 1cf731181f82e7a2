//! The leaf blocks of media files answered lately, kept open for
//! `sendfile(2)` (see [`super::conn`]).
//!
//! An answer of a file from the blockstore carries a [`ServedFile`]
//! extension naming its CID and byte range. The first time a connection of
//! our HTTP/1.1 loop sees one, the file's bytes in the answer go out as
//! they are and its leaves are opened in the background (the handler read
//! the file through the blockstore, which verified it); from then on the
//! same file goes out from the page cache without entering our memory, as
//! nginx's `sendfile` and `open_file_cache` do.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::sync::{Arc, Mutex};

use streamweave_cas::{Blockstore, Cid};
use tracing::warn;

use crate::fast_map::FastHashMap;

/// Open leaf files kept at most (the listener keeps descriptors for them
/// out of its connection budget: [`super::listener::FD_RESERVE`]).
pub const MAX_OPEN_LEAF_FILES: usize = 1024;
/// Files kept at most, including those found unsendable.
const MAX_FILES: usize = 4096;
/// A file of more leaves (16 MiB) is answered from memory.
const MAX_LEAVES_PER_FILE: usize = 64;
/// Files being opened at once.
const MAX_OPENING: usize = 64;

/// The file (or the part of it) an answer's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedFile {
    pub cid: Cid,
    /// The body's first byte, in the file.
    pub start: u64,
    pub len: u64,
}

/// A file's leaf blocks, open, in order.
#[derive(Debug)]
pub struct Leaves {
    leaves: Vec<(File, u64)>,
    len: u64,
    etag_field: Vec<u8>,
}

impl Leaves {
    fn new(cid: &Cid, leaves: Vec<(File, u64)>) -> Self {
        let len = leaves.iter().map(|(_, len)| len).sum();
        Leaves {
            leaves,
            len,
            etag_field: super::ranges::etag_field(cid),
        }
    }

    /// The file's `ETag` header line, written once.
    pub fn etag_field(&self) -> &[u8] {
        &self.etag_field
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The pieces of bytes `start..start + len` of the file: each a leaf,
    /// an offset in it and a length. None when the range is not inside.
    pub fn pieces(&self, start: u64, len: u64) -> impl Iterator<Item = (&File, u64, u64)> {
        cut(
            self.leaves.iter().map(|(_, len)| *len),
            self.len,
            start,
            len,
        )
        .map(|(index, offset, len)| (&self.leaves[index].0, offset, len))
    }
}

/// The pieces of bytes `start..start + len` of a file of `total` bytes
/// made of leaves of `leaf_lens`: each a leaf's index, an offset in it and
/// a length, none empty. None when the range is not inside the file.
fn cut<I: Iterator<Item = u64>>(leaf_lens: I, total: u64, start: u64, len: u64) -> Cut<I> {
    let inside = start.checked_add(len).is_some_and(|end| end <= total);
    Cut {
        leaf_lens: leaf_lens.enumerate(),
        skip: start,
        wanted: if inside { len } else { 0 },
    }
}

/// [`cut`]'s pieces, found as they are taken (nothing allocated).
struct Cut<I> {
    leaf_lens: std::iter::Enumerate<I>,
    /// Bytes still to pass before the range.
    skip: u64,
    /// Bytes of the range still to give.
    wanted: u64,
}

impl<I: Iterator<Item = u64>> Iterator for Cut<I> {
    type Item = (usize, u64, u64);

    fn next(&mut self) -> Option<Self::Item> {
        while self.wanted > 0 {
            let (index, leaf_len) = self.leaf_lens.next()?;
            if self.skip >= leaf_len {
                self.skip -= leaf_len;
                continue;
            }
            let (offset, take) = (self.skip, (leaf_len - self.skip).min(self.wanted));
            self.wanted -= take;
            self.skip = 0;
            return Some((index, offset, take));
        }
        None
    }
}

/// Open leaves by CID, bounded by open files and by files.
pub struct DiskFiles {
    blockstore: Arc<Blockstore>,
    max_open_files: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// `None`: the file cannot be sent from disk (too many leaves, data
    /// inline, blocks elsewhere).
    files: FastHashMap<Cid, Option<Arc<Leaves>>>,
    order: VecDeque<Cid>,
    open_files: usize,
    opening: HashSet<Cid>,
}

impl DiskFiles {
    pub fn new(blockstore: Arc<Blockstore>, max_open_files: usize) -> Arc<Self> {
        Arc::new(DiskFiles {
            blockstore,
            max_open_files,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// The leaves to send `served` from, when they are open; otherwise
    /// starts opening them for the next answer (on a blocking thread) and
    /// answers `None`.
    pub fn sendable(self: &Arc<Self>, served: &ServedFile) -> Option<Arc<Leaves>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = inner.files.get(&served.cid) {
            return known
                .as_ref()
                .filter(|leaves| {
                    served
                        .start
                        .checked_add(served.len)
                        .is_some_and(|end| end <= leaves.len())
                })
                .cloned();
        }
        if inner.opening.len() >= MAX_OPENING || !inner.opening.insert(served.cid) {
            return None;
        }
        drop(inner);
        let files = self.clone();
        let cid = served.cid;
        tokio::task::spawn_blocking(move || files.open(cid));
        None
    }

    fn open(&self, cid: Cid) {
        // A file of more leaves than may be open at once is never sendable.
        let max_leaves = MAX_LEAVES_PER_FILE.min(self.max_open_files);
        let opened = match self.blockstore.open_file_leaves(&cid, max_leaves) {
            Ok(opened) => opened.map(|leaves| Arc::new(Leaves::new(&cid, leaves))),
            Err(err) => {
                warn!(%cid, %err, "opening a file's blocks for sendfile failed");
                None
            }
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.opening.remove(&cid);
        let count = opened.as_ref().map_or(0, |leaves| leaves.leaves.len());
        while inner.open_files + count > self.max_open_files || inner.files.len() >= MAX_FILES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(Some(evicted)) = inner.files.remove(&oldest) {
                inner.open_files -= evicted.leaves.len();
            }
        }
        inner.open_files += count;
        inner.files.insert(cid, opened);
        inner.order.push_back(cid);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom};

    use super::*;

    fn read_pieces(leaves: &Leaves, start: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for (mut file, offset, len) in leaves.pieces(start, len) {
            file.seek(SeekFrom::Start(offset)).expect("seek");
            let before = out.len();
            file.take(len).read_to_end(&mut out).expect("read");
            assert_eq!((out.len() - before) as u64, len);
        }
        out
    }

    async fn wait_sendable(files: &Arc<DiskFiles>, served: &ServedFile) -> Arc<Leaves> {
        for _ in 0..500 {
            if let Some(leaves) = files.sendable(served) {
                return leaves;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the leaves of {} never opened", served.cid);
    }

    #[tokio::test]
    async fn a_file_is_sendable_after_its_first_answer_and_ranges_cut_its_leaves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blockstore = Arc::new(Blockstore::open(dir.path()).expect("open"));
        let bytes: Vec<u8> = (0..600_000u32).map(|i| (i % 249) as u8).collect();
        let cid = blockstore.put_file(&bytes).expect("put");
        let files = DiskFiles::new(blockstore, 16);
        let whole = ServedFile {
            cid,
            start: 0,
            len: bytes.len() as u64,
        };
        assert!(files.sendable(&whole).is_none(), "unknown at first");
        let leaves = wait_sendable(&files, &whole).await;
        assert_eq!(leaves.len(), bytes.len() as u64);
        assert_eq!(read_pieces(&leaves, 0, bytes.len() as u64), bytes);
        // A range across the first leaf's end, and one inside the last leaf.
        let chunk = 256 * 1024;
        assert_eq!(
            read_pieces(&leaves, chunk - 10, 20),
            &bytes[chunk as usize - 10..chunk as usize + 10]
        );
        assert_eq!(leaves.pieces(chunk - 10, 20).count(), 2);
        assert_eq!(read_pieces(&leaves, 599_990, 10), &bytes[599_990..]);
        assert_eq!(leaves.pieces(599_990, 11).count(), 0, "past the end");
        assert_eq!(leaves.pieces(u64::MAX, 2).count(), 0, "overflow");
        let past = ServedFile {
            start: 599_990,
            len: 11,
            ..whole
        };
        assert!(files.sendable(&past).is_none(), "a range past the end");
    }

    proptest::proptest! {
        #[test]
        fn cut_pieces_cover_exactly_the_range(
            leaf_lens in proptest::collection::vec(1u64..1000, 1..10),
            start_per_mille in 0u64..=1000,
            len_per_mille in 0u64..=1000,
        ) {
            let total: u64 = leaf_lens.iter().sum();
            let start = total * start_per_mille / 1000;
            let len = (total - start) * len_per_mille / 1000;
            let pieces: Vec<_> = cut(leaf_lens.iter().copied(), total, start, len).collect();
            // Where each leaf begins in the file.
            let leaf_starts: Vec<u64> = leaf_lens
                .iter()
                .scan(0, |at, len| { let here = *at; *at += len; Some(here) })
                .collect();
            let mut next = start;
            for &(index, offset, piece_len) in &pieces {
                proptest::prop_assert!(piece_len > 0, "no empty piece");
                proptest::prop_assert!(offset + piece_len <= leaf_lens[index], "inside its leaf");
                proptest::prop_assert_eq!(leaf_starts[index] + offset, next, "contiguous");
                next += piece_len;
            }
            proptest::prop_assert_eq!(next, start + len, "the whole range");
            // Past the end, nothing.
            proptest::prop_assert_eq!(cut(leaf_lens.iter().copied(), total, start, total - start + 1).count(), 0);
        }
    }

    #[tokio::test]
    async fn open_files_stay_within_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blockstore = Arc::new(Blockstore::open(dir.path()).expect("open"));
        // Three files of three leaves each; room for five open leaves.
        let files = DiskFiles::new(blockstore.clone(), 5);
        let mut served = Vec::new();
        for seed in 0..3u32 {
            let bytes: Vec<u8> = (0..600_000u32).map(|i| ((i + seed) % 247) as u8).collect();
            let cid = blockstore.put_file(&bytes).expect("put");
            let file = ServedFile {
                cid,
                start: 0,
                len: bytes.len() as u64,
            };
            files.sendable(&file);
            wait_sendable(&files, &file).await;
            served.push(file);
        }
        let inner = files.inner.lock().expect("lock");
        assert_eq!(inner.open_files, 3, "the older files were closed");
        assert_eq!(inner.files.len(), 1);
        assert!(inner.files.contains_key(&served[2].cid));
    }
}
