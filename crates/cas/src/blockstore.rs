//! Blocks on local disk, one file per block: `DIR/blocks/<last two
//! characters of the CID>/<CID>` (the flatfs layout's spirit). Writes are
//! atomic (temp file, fsync, rename; bulk writes flush once at the end,
//! and files nothing durable refers to are not flushed); reads re-hash
//! every block.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cid::Cid;
use sha2::{Digest, Sha256};

use crate::CasError;
use crate::dag::{self, DAG_PB_CODEC, RAW_CODEC, SHA2_256_CODE};
use crate::pb::{self, UnixFsType};

/// Deepest file DAG we walk (174^8 chunks is far beyond any real file).
const MAX_DAG_DEPTH: usize = 8;

/// Where blocks live beyond this disk (object storage shared by several
/// nodes): every block written here is copied there before the write
/// returns, and a block missing here is fetched from there (then kept here,
/// a cache). Implementations block the calling thread.
pub trait RemoteBlocks: Send + Sync + std::fmt::Debug {
    /// A block's bytes, `None` when the remote does not have it.
    fn fetch(&self, cid: &Cid) -> std::io::Result<Option<Vec<u8>>>;
    /// Copies a block there.
    fn store(&self, cid: &Cid, data: &[u8]) -> std::io::Result<()>;
    /// Whether the remote has the block (before a local copy is dropped).
    fn contains(&self, cid: &Cid) -> std::io::Result<bool>;
    /// Every block there: its CID, size and when it was written.
    fn list(&self) -> std::io::Result<Vec<(Cid, u64, std::time::SystemTime)>>;
    /// Deletes a block there (garbage collection); answers whether it was there.
    fn delete(&self, cid: &Cid) -> std::io::Result<bool>;
}

/// An on-disk blockstore, safe to share between threads; with a remote, the
/// disk is a cache of the remote's blocks.
#[derive(Debug)]
pub struct Blockstore {
    root: PathBuf,
    temp_counter: AtomicU64,
    remote: Option<std::sync::Arc<dyn RemoteBlocks>>,
}

impl Blockstore {
    /// Opens the blockstore at `dir`, creating it when missing.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CasError> {
        let root = dir.as_ref().join("blocks");
        fs::create_dir_all(&root)?;
        Ok(Blockstore {
            root,
            temp_counter: AtomicU64::new(0),
            remote: None,
        })
    }

    /// The same blockstore over `remote`: writes go to both, reads of a
    /// block this disk lacks come from the remote.
    pub fn with_remote(mut self, remote: std::sync::Arc<dyn RemoteBlocks>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Drops this disk's copy of a block the remote has (cache eviction);
    /// answers whether it was dropped. Without a remote, nothing is.
    pub fn evict_block(&self, cid: &Cid) -> Result<bool, CasError> {
        match &self.remote {
            Some(remote) if remote.contains(cid)? => self.remove_block(cid),
            _ => Ok(false),
        }
    }

    /// The remote under this disk, if any (garbage collection sweeps it too).
    pub fn remote(&self) -> Option<&dyn RemoteBlocks> {
        self.remote.as_deref()
    }

    fn path_of(&self, cid: &Cid) -> PathBuf {
        let name = cid.to_string();
        let shard = &name[name.len().saturating_sub(2)..];
        self.root.join(shard).join(name)
    }

    /// Whether a block is stored.
    pub fn has_block(&self, cid: &Cid) -> Result<bool, CasError> {
        Ok(self.path_of(cid).try_exists()?)
    }

    /// Stores one block after checking that `data` hashes to `cid`.
    pub fn put_block(&self, cid: &Cid, data: &[u8]) -> Result<(), CasError> {
        verify(cid, data)?;
        self.write_block(cid, data)
    }

    /// Every stored block: its CID, size and modification time.
    pub fn blocks(&self) -> Result<Vec<(Cid, u64, std::time::SystemTime)>, CasError> {
        let mut found = Vec::new();
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name();
                // Temporary files of writes in progress are not blocks.
                let Some(cid) = name.to_str().and_then(|n| Cid::try_from(n).ok()) else {
                    continue;
                };
                let meta = entry.metadata()?;
                found.push((cid, meta.len(), meta.modified()?));
            }
        }
        Ok(found)
    }

    /// Removes a block; answers whether it was there.
    pub fn remove_block(&self, cid: &Cid) -> Result<bool, CasError> {
        match fs::remove_file(self.path_of(cid)) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Puts back a block that is missing or corrupt from a good copy
    /// (`data` is checked against `cid`); answers whether it was needed.
    pub fn repair_block(&self, cid: &Cid, data: &[u8]) -> Result<bool, CasError> {
        verify(cid, data)?;
        match self.get_block(cid) {
            Ok(Some(_)) => Ok(false),
            Ok(None) | Err(CasError::Corrupt(_)) => {
                self.replace_block(cid, data)?;
                Ok(true)
            }
            Err(other) => Err(other),
        }
    }

    /// Writes a block durably: one already here is kept if it holds
    /// `data` (flushed, as it may have been written without a flush by
    /// [`Blockstore::put_file_unsynced`]), else replaced.
    fn write_block(&self, cid: &Cid, data: &[u8]) -> Result<(), CasError> {
        match fs::File::open(self.path_of(cid)) {
            Ok(file) => {
                let mut found = Vec::with_capacity(data.len());
                (&file)
                    .take(data.len() as u64 + 1)
                    .read_to_end(&mut found)?;
                if found == data {
                    file.sync_all()?;
                    return Ok(());
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
        if let Some(remote) = &self.remote {
            remote.store(cid, data)?;
        }
        self.replace_block(cid, data)
    }

    /// Writes a block's file atomically (temporary file, sync, rename).
    fn replace_block(&self, cid: &Cid, data: &[u8]) -> Result<(), CasError> {
        self.write_block_file(cid, data, true)
    }

    /// Writes a block's file by temporary file and rename; `sync`: flushed
    /// to the disk before the rename.
    fn write_block_file(&self, cid: &Cid, data: &[u8], sync: bool) -> Result<(), CasError> {
        let path = self.path_of(cid);
        // `path_of` always has a parent: the shard directory.
        let dir = path.parent().expect("block paths have a shard directory");
        fs::create_dir_all(dir)?;
        let temp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = fs::File::create(&temp)?;
            file.write_all(data)?;
            if sync {
                file.sync_all()?;
            }
            fs::rename(&temp, &path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        Ok(result?)
    }

    /// Stores every block of a file's DAG like [`Blockstore::put_file`]
    /// but without flushing each block to the disk: for bulk writes (a
    /// video's transcode) that call [`Blockstore::sync`] before anything
    /// they wrote is acknowledged, and for files nothing durable refers to
    /// (a live segment's parts). A block already here is kept only if it
    /// verifies (an earlier unsynced write may not have survived a crash);
    /// a later durable write of the same block flushes it.
    pub fn put_file_unsynced(&self, bytes: &[u8]) -> Result<Cid, CasError> {
        let dag = dag::build_file_dag(bytes);
        for block in &dag.blocks {
            let here = match fs::read(self.path_of(&block.cid)) {
                Ok(found) => verify(&block.cid, &found).is_ok(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
                Err(err) => return Err(err.into()),
            };
            if here {
                continue;
            }
            if let Some(remote) = &self.remote {
                remote.store(&block.cid, &block.data)?;
            }
            self.write_block_file(&block.cid, &block.data, false)?;
        }
        Ok(dag.root)
    }

    /// Flushes everything written to the blockstore's filesystem to the disk
    /// (`syncfs`): one flush for a bulk of unsynced writes.
    pub fn sync(&self) -> Result<(), CasError> {
        let root = fs::File::open(&self.root)?;
        rustix::fs::syncfs(&root).map_err(std::io::Error::from)?;
        Ok(())
    }

    /// Stores every block of a file's DAG and answers its CID. Idempotent.
    /// A file of several blocks writes them on threads of their own, so the
    /// filesystem commits their flushes together instead of one after
    /// another (a live segment is listed that much sooner).
    pub fn put_file(&self, bytes: &[u8]) -> Result<Cid, CasError> {
        let dag = dag::build_file_dag(bytes);
        if let [block] = dag.blocks.as_slice() {
            self.write_block(&block.cid, &block.data)?;
            return Ok(dag.root);
        }
        std::thread::scope(|scope| {
            let writes: Vec<_> = dag
                .blocks
                .iter()
                .map(|block| scope.spawn(move || self.write_block(&block.cid, &block.data)))
                .collect();
            writes.into_iter().try_for_each(|write| {
                write
                    .join()
                    .map_err(|_| std::io::Error::other("a block write panicked"))?
            })
        })?;
        Ok(dag.root)
    }

    /// One block's bytes, verified against its CID; `None` when not stored.
    pub fn get_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, CasError> {
        match fs::read(self.path_of(cid)) {
            Ok(data) => {
                verify(cid, &data)?;
                Ok(Some(data))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let Some(remote) = &self.remote else {
                    return Ok(None);
                };
                let Some(data) = remote.fetch(cid)? else {
                    return Ok(None);
                };
                // What the remote answers is checked like the disk.
                verify(cid, &data)?;
                self.replace_block(cid, &data)?;
                Ok(Some(data))
            }
            Err(err) => Err(err.into()),
        }
    }

    fn require_block(&self, cid: &Cid) -> Result<Vec<u8>, CasError> {
        self.get_block(cid)?.ok_or(CasError::MissingBlock(*cid))
    }

    /// A whole file, reassembled from its DAG; `None` when its root is not
    /// stored. A missing or corrupt block below the root is an error.
    pub fn get_file(&self, cid: &Cid) -> Result<Option<Vec<u8>>, CasError> {
        let Some(root) = self.get_block(cid)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        self.append_file(cid, root, 0, &mut out)?;
        Ok(Some(out))
    }

    fn append_file(
        &self,
        cid: &Cid,
        block: Vec<u8>,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), CasError> {
        match cid.codec() {
            RAW_CODEC => {
                out.extend_from_slice(&block);
                Ok(())
            }
            DAG_PB_CODEC => {
                if depth > MAX_DAG_DEPTH {
                    return Err(CasError::Malformed("file DAG too deep"));
                }
                let (node, data) = decode_file_node(&block)?;
                if !matches!(data.kind, UnixFsType::File | UnixFsType::Raw) {
                    return Err(CasError::NotAFile(*cid));
                }
                if depth == 0
                    && let Some(size) = data.filesize
                {
                    out.reserve(usize::try_from(size).unwrap_or(0).min(1 << 30));
                }
                if let Some(inline) = &data.data {
                    out.extend_from_slice(inline);
                }
                for link in &node.links {
                    let child = Cid::try_from(link.hash.as_slice())
                        .map_err(|_| CasError::Malformed("bad CID in link"))?;
                    let child_block = self.require_block(&child)?;
                    self.append_file(&child, child_block, depth + 1, out)?;
                }
                Ok(())
            }
            _ => Err(CasError::UnsupportedCid(cid.to_string())),
        }
    }

    /// A file's leaf blocks opened for reading, in order, each with its
    /// length: for sending a file straight from disk (`sendfile`) without
    /// reading it into memory. The root and inner nodes are read and
    /// verified; the leaves are opened, not re-hashed (the caller vouches
    /// for them, having read the file through [`Blockstore::get_file`]),
    /// and a leaf whose length is not the one its parent records is an
    /// error. `None` when the root is not stored, a leaf is stored neither
    /// here nor in the remote, the file has data inline in a node, or it
    /// has more than `max_leaves` leaves.
    pub fn open_file_leaves(
        &self,
        cid: &Cid,
        max_leaves: usize,
    ) -> Result<Option<Vec<(fs::File, u64)>>, CasError> {
        let mut leaves = Vec::new();
        let complete = self.open_leaves(cid, None, 0, max_leaves, &mut leaves)?;
        Ok(complete.then_some(leaves))
    }

    /// Appends the leaves below `cid` (of `expected_len` bytes, when its
    /// parent says); answers whether the whole subtree could be opened.
    fn open_leaves(
        &self,
        cid: &Cid,
        expected_len: Option<u64>,
        depth: usize,
        max_leaves: usize,
        leaves: &mut Vec<(fs::File, u64)>,
    ) -> Result<bool, CasError> {
        match cid.codec() {
            RAW_CODEC => {
                if leaves.len() >= max_leaves {
                    return Ok(false);
                }
                let file = match fs::File::open(self.path_of(cid)) {
                    Ok(file) => file,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                        // Fetched from the remote (and verified) into this disk.
                        if self.get_block(cid)?.is_none() {
                            return Ok(false);
                        }
                        fs::File::open(self.path_of(cid))?
                    }
                    Err(err) => return Err(err.into()),
                };
                let len = file.metadata()?.len();
                if expected_len.is_some_and(|expected| expected != len) {
                    return Err(CasError::Corrupt(*cid));
                }
                leaves.push((file, len));
                Ok(true)
            }
            DAG_PB_CODEC => {
                if depth > MAX_DAG_DEPTH {
                    return Err(CasError::Malformed("file DAG too deep"));
                }
                let Some(block) = self.get_block(cid)? else {
                    return Ok(false);
                };
                let (node, data) = decode_file_node(&block)?;
                if !matches!(data.kind, UnixFsType::File | UnixFsType::Raw) {
                    return Err(CasError::NotAFile(*cid));
                }
                if data.data.as_ref().is_some_and(|inline| !inline.is_empty()) {
                    return Ok(false);
                }
                for (index, link) in node.links.iter().enumerate() {
                    let child = Cid::try_from(link.hash.as_slice())
                        .map_err(|_| CasError::Malformed("bad CID in link"))?;
                    let child_len = data.blocksizes.get(index).copied();
                    if !self.open_leaves(&child, child_len, depth + 1, max_leaves, leaves)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            _ => Err(CasError::UnsupportedCid(cid.to_string())),
        }
    }

    /// A file's size from its root block alone; `None` when not stored.
    pub fn file_size(&self, cid: &Cid) -> Result<Option<u64>, CasError> {
        let Some(block) = self.get_block(cid)? else {
            return Ok(None);
        };
        match cid.codec() {
            RAW_CODEC => Ok(Some(block.len() as u64)),
            DAG_PB_CODEC => {
                let (_, data) = decode_file_node(&block)?;
                Ok(Some(
                    data.filesize
                        .unwrap_or_else(|| data.blocksizes.iter().sum()),
                ))
            }
            _ => Err(CasError::UnsupportedCid(cid.to_string())),
        }
    }
}

/// Checks that `data` hashes to `cid` (sha2-256 only).
/// A dag-pb block's node and the UnixFS data it carries.
fn decode_file_node(block: &[u8]) -> Result<(pb::PbNode, pb::UnixFsData), CasError> {
    let node = pb::decode_node(block)?;
    let data = pb::decode_unixfs(
        node.data
            .as_deref()
            .ok_or(CasError::Malformed("dag-pb node without UnixFS data"))?,
    )?;
    Ok((node, data))
}

fn verify(cid: &Cid, data: &[u8]) -> Result<(), CasError> {
    let hash = cid.hash();
    if hash.code() != SHA2_256_CODE {
        return Err(CasError::UnsupportedCid(cid.to_string()));
    }
    if hash.digest() != &Sha256::digest(data)[..] {
        return Err(CasError::Corrupt(*cid));
    }
    Ok(())
}

/// A blockstore is itself a remote for others (a directory every node
/// mounts): what one node writes, the others read.
impl RemoteBlocks for Blockstore {
    fn fetch(&self, cid: &Cid) -> std::io::Result<Option<Vec<u8>>> {
        self.get_block(cid).map_err(std::io::Error::other)
    }

    fn store(&self, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
        self.write_block(cid, data).map_err(std::io::Error::other)
    }

    fn contains(&self, cid: &Cid) -> std::io::Result<bool> {
        self.path_of(cid).try_exists()
    }

    fn list(&self) -> std::io::Result<Vec<(Cid, u64, std::time::SystemTime)>> {
        self.blocks().map_err(std::io::Error::other)
    }

    fn delete(&self, cid: &Cid) -> std::io::Result<bool> {
        self.remove_block(cid).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_are_the_same_blocks_and_a_bad_copy_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Blockstore::open(dir.path()).expect("open");
        let bytes: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        let cid = store.put_file_unsynced(&bytes).expect("put");
        assert_eq!(cid, store.put_file(&bytes).expect("put synced"), "same DAG");
        store.sync().expect("sync");
        assert_eq!(
            store.get_file(&cid).expect("get").as_deref(),
            Some(&bytes[..])
        );
        // A block that did not survive (a crash before the flush) is written again.
        let small = store.put_file_unsynced(b"small").expect("put");
        fs::write(store.path_of(&small), b"").expect("truncate");
        assert!(store.get_block(&small).is_err(), "a bad copy is an error");
        assert_eq!(store.put_file_unsynced(b"small").expect("put again"), small);
        assert_eq!(
            store.get_file(&small).expect("get").as_deref(),
            Some(&b"small"[..])
        );
    }

    #[test]
    fn a_durable_write_keeps_a_good_copy_and_replaces_a_bad_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Blockstore::open(dir.path()).expect("open");
        // Written without a flush (a live part), then the same bytes
        // durably (its segment): the copy is kept.
        let cid = store.put_file_unsynced(b"a part").expect("put");
        let path = store.path_of(&cid);
        let inode = |path: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap());
        let before = inode(&path);
        assert_eq!(store.put_file(b"a part").expect("put durably"), cid);
        assert_eq!(inode(&path), before, "a good copy is kept, not rewritten");
        // A copy cut short (a crash before the flush), or one longer than
        // the block, is written again.
        for bad in [&b"a pa"[..], &b"a part and more"[..]] {
            fs::write(&path, bad).expect("damage");
            assert_eq!(store.put_file(b"a part").expect("put durably"), cid);
            assert_eq!(
                store.get_file(&cid).expect("get").as_deref(),
                Some(&b"a part"[..])
            );
        }
    }

    fn read_leaves(leaves: Vec<(fs::File, u64)>) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        for (mut file, len) in leaves {
            let before = out.len();
            file.read_to_end(&mut out).expect("read leaf");
            assert_eq!((out.len() - before) as u64, len, "leaf length");
        }
        out
    }

    #[test]
    fn a_files_leaves_open_in_order_and_only_when_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Blockstore::open(dir.path()).expect("open");
        let bytes: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let cid = store.put_file(&bytes).expect("put");
        let leaves = store
            .open_file_leaves(&cid, 16)
            .expect("open")
            .expect("stored");
        assert_eq!(leaves.len(), 3, "700,000 bytes are three 256 KiB chunks");
        assert_eq!(read_leaves(leaves), bytes);
        // A file of one block is its own leaf.
        let small = store.put_file(b"small").expect("put");
        let leaves = store
            .open_file_leaves(&small, 1)
            .expect("open")
            .expect("stored");
        assert_eq!(read_leaves(leaves), b"small");
        // Too many leaves, or one missing: none.
        assert!(store.open_file_leaves(&cid, 2).expect("open").is_none());
        let absent = dag::file_cid(b"absent");
        assert!(store.open_file_leaves(&absent, 16).expect("open").is_none());
        let dag = dag::build_file_dag(&bytes);
        let leaf = dag.blocks.last().expect("a leaf").cid;
        assert!(store.remove_block(&leaf).expect("remove"));
        assert!(store.open_file_leaves(&cid, 16).expect("open").is_none());
        // A leaf of the wrong length is an error, not a short answer.
        fs::write(store.path_of(&leaf), b"short").expect("tamper");
        assert!(matches!(
            store.open_file_leaves(&cid, 16),
            Err(CasError::Corrupt(bad)) if bad == leaf
        ));
    }

    #[test]
    fn nodes_share_blocks_through_a_remote_and_keep_a_cache() {
        let shared = tempfile::tempdir().expect("tempdir");
        let remote = std::sync::Arc::new(Blockstore::open(shared.path()).expect("open"));
        let (a_dir, b_dir) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let a = Blockstore::open(a_dir.path())
            .expect("open")
            .with_remote(remote.clone());
        let b = Blockstore::open(b_dir.path())
            .expect("open")
            .with_remote(remote.clone());
        let bytes: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
        let cid = a.put_file(&bytes).expect("put on A");
        assert!(remote.has_block(&cid).expect("has"), "written through");
        // B reads what A wrote, and keeps a copy.
        assert!(!b.has_block(&cid).expect("has"));
        assert_eq!(b.get_file(&cid).expect("get on B").as_ref(), Some(&bytes));
        assert!(b.has_block(&cid).expect("cached"));
        // Evicted from B's disk, read again from the remote.
        assert!(b.evict_block(&cid).expect("evict"));
        assert!(!b.has_block(&cid).expect("has"));
        assert_eq!(b.get_file(&cid).expect("get again").as_ref(), Some(&bytes));
        // A block the remote lacks is never evicted, nor is anything without one.
        let local_dir = tempfile::tempdir().expect("tempdir");
        let local_only = Blockstore::open(local_dir.path()).expect("open");
        let kept = local_only.put_file(b"mine").expect("put");
        assert!(!local_only.evict_block(&kept).expect("evict"));
        // The remote's bytes are checked: a corrupt copy is an error, not data.
        let other = dag::file_cid(b"other");
        fs::create_dir_all(remote.path_of(&other).parent().expect("shard")).expect("mkdir");
        fs::write(remote.path_of(&other), b"not it").expect("tamper");
        assert!(matches!(
            b.get_block(&other),
            Err(CasError::Io(_)) | Err(CasError::Corrupt(_))
        ));
    }

    #[test]
    fn files_round_trip_and_corruption_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Blockstore::open(dir.path()).expect("open");
        let small: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let large: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        for bytes in [&small, &large] {
            let cid = store.put_file(bytes).expect("put");
            assert_eq!(cid, dag::file_cid(bytes));
            assert_eq!(store.put_file(bytes).expect("idempotent"), cid);
            assert_eq!(store.get_file(&cid).expect("get").as_ref(), Some(bytes));
            assert_eq!(
                store.file_size(&cid).expect("size"),
                Some(bytes.len() as u64)
            );
        }
        let absent = dag::file_cid(b"never stored");
        assert_eq!(store.get_file(&absent).expect("get"), None);

        // Corrupt a leaf of the large file: reading it is an error naming the block.
        let dag = dag::build_file_dag(&large);
        let leaf = &dag.blocks[1];
        fs::write(store.path_of(&leaf.cid), b"tampered").expect("tamper");
        assert!(matches!(store.get_file(&dag.root), Err(CasError::Corrupt(c)) if c == leaf.cid));
        // A good copy repairs it; repairing a sound block is a no-op; a bad copy is refused.
        assert!(store.repair_block(&leaf.cid, b"wrong").is_err());
        assert!(store.repair_block(&leaf.cid, &leaf.data).expect("repair"));
        assert_eq!(
            store.get_file(&dag.root).expect("get").as_deref(),
            Some(&large[..])
        );
        assert!(!store.repair_block(&leaf.cid, &leaf.data).expect("repair"));
        fs::write(store.path_of(&leaf.cid), b"tampered").expect("tamper");
        // A missing leaf is an error too, not a short file.
        fs::remove_file(store.path_of(&leaf.cid)).expect("remove");
        assert!(
            matches!(store.get_file(&dag.root), Err(CasError::MissingBlock(c)) if c == leaf.cid)
        );
        // put_block refuses bytes that do not match.
        assert!(store.put_block(&leaf.cid, b"wrong").is_err());
        store.put_block(&leaf.cid, &leaf.data).expect("repair");
        assert_eq!(store.get_file(&dag.root).expect("get"), Some(large));
    }
}
