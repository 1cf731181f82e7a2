//! Resumable uploads (the tus 1.0 protocol's state; `http::uploads` speaks
//! the protocol). Each upload is two files in `DATA/uploads`: `{id}.bin`,
//! the bytes received so far, and `{id}.json`, who uploads what
//! ([`UploadInfo`]). The offset is the data file's length, so what was
//! written before a crash counts after it. Limits: one upload's size
//! (`--max-upload-bytes`), the bytes a creator holds in uploads
//! (`--upload-quota-bytes`), and an expiry (`--upload-expiry-s`) after which
//! an upload's bytes are removed unless a video is being made of it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Characters of an upload id.
const ID_LEN: usize = 24;

/// What the server knows of one upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    pub id: String,
    /// The uploader's address (`0x...`, lower case).
    pub owner: String,
    /// Total bytes announced at creation.
    pub length: u64,
    /// Bytes received so far.
    pub offset: u64,
    /// The client's `Upload-Metadata` (decoded values).
    pub metadata: BTreeMap<String, String>,
    pub created_at_ms: i64,
    /// An unfinished upload is removed after this.
    pub expires_at_ms: i64,
}

impl UploadInfo {
    /// Every byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.offset == self.length
    }
}

/// Bounds of the upload store.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// Largest single upload.
    pub max_upload_bytes: u64,
    /// Bytes one creator may hold in uploads at once.
    pub quota_bytes: u64,
    /// Lifetime of an unfinished upload.
    pub expiry_ms: i64,
}

/// Why an upload operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    #[error("no such upload")]
    NotFound,
    #[error("the upload expired")]
    Expired,
    #[error("the upload is {length} bytes; at most {max} are accepted")]
    TooLarge { length: u64, max: u64 },
    #[error("this upload would hold {wanted} bytes of your quota of {quota}")]
    QuotaExceeded { wanted: u64, quota: u64 },
    #[error("the upload is at offset {current}, not {given}")]
    OffsetMismatch { current: u64, given: u64 },
    #[error("more bytes than the upload's length")]
    PastLength,
    #[error("the chunk's checksum does not match")]
    ChecksumMismatch,
    #[error("another request is writing this upload")]
    Busy,
    #[error("the upload has {offset} of its {length} bytes")]
    Incomplete { offset: u64, length: u64 },
    #[error("upload storage: {0}")]
    Io(#[from] std::io::Error),
}

/// The upload store of a node.
pub struct Uploads {
    dir: PathBuf,
    limits: UploadLimits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    uploads: HashMap<String, UploadInfo>,
    /// Uploads with a request writing to them now.
    busy: std::collections::HashSet<String>,
}

/// Releases an upload's write lock when the write ends, however it ends.
struct Writing<'a> {
    uploads: &'a Uploads,
    id: String,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.uploads.lock().busy.remove(&self.id);
    }
}

/// What a chunk must hash to (`Upload-Checksum: sha256 <base64>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha256Checksum(pub [u8; 32]);

impl Uploads {
    /// Opens (creating) the store in `dir`, reading the uploads it holds;
    /// data files without their description are removed.
    pub fn open(dir: &Path, limits: UploadLimits) -> std::io::Result<Uploads> {
        std::fs::create_dir_all(dir)?;
        let mut uploads = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let parsed = std::fs::read(&path)
                    .ok()
                    .and_then(|text| serde_json::from_slice::<UploadInfo>(&text).ok());
                match parsed {
                    Some(mut info) if is_upload_id(&info.id) => {
                        // The data file is the truth about what arrived.
                        let data = dir.join(format!("{}.bin", info.id));
                        info.offset = std::fs::metadata(&data)
                            .map(|m| m.len().min(info.length))
                            .unwrap_or(0);
                        uploads.insert(info.id.clone(), info);
                    }
                    _ => {
                        tracing::warn!(path = %path.display(), "removing an unreadable upload description");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let orphan = path.extension().is_some_and(|e| e == "bin")
                && path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .is_none_or(|id| !uploads.contains_key(id));
            if orphan {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(Uploads {
            dir: dir.to_path_buf(),
            limits,
            state: Mutex::new(State {
                uploads,
                busy: Default::default(),
            }),
        })
    }

    pub fn limits(&self) -> &UploadLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn data_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.bin"))
    }

    fn info_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Bytes `owner` holds in uploads (announced lengths).
    fn held_by(state: &State, owner: &str) -> u64 {
        state
            .uploads
            .values()
            .filter(|u| u.owner == owner)
            .map(|u| u.length)
            .fold(0u64, u64::saturating_add)
    }

    /// Starts an upload of `length` bytes for `owner`.
    pub async fn create(
        &self,
        owner: &str,
        length: u64,
        metadata: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<UploadInfo, UploadError> {
        if length > self.limits.max_upload_bytes {
            return Err(UploadError::TooLarge {
                length,
                max: self.limits.max_upload_bytes,
            });
        }
        let info = {
            let mut state = self.lock();
            let wanted = Self::held_by(&state, owner).saturating_add(length);
            if wanted > self.limits.quota_bytes {
                return Err(UploadError::QuotaExceeded {
                    wanted,
                    quota: self.limits.quota_bytes,
                });
            }
            let info = UploadInfo {
                id: new_upload_id(),
                owner: owner.to_string(),
                length,
                offset: 0,
                metadata,
                created_at_ms: now_ms,
                expires_at_ms: now_ms.saturating_add(self.limits.expiry_ms),
            };
            // Reserved now so that racing creations count against the quota.
            state.uploads.insert(info.id.clone(), info.clone());
            state.busy.insert(info.id.clone());
            info
        };
        let _writing = Writing {
            uploads: self,
            id: info.id.clone(),
        };
        let written = async {
            tokio::fs::File::create(self.data_path(&info.id)).await?;
            self.save(&info).await
        }
        .await;
        if let Err(err) = written {
            self.lock().uploads.remove(&info.id);
            let _ = tokio::fs::remove_file(self.data_path(&info.id)).await;
            return Err(err.into());
        }
        Ok(info)
    }

    async fn save(&self, info: &UploadInfo) -> std::io::Result<()> {
        let path = self.info_path(&info.id);
        let temp = path.with_extension("json.tmp");
        let text = serde_json::to_vec(info).map_err(std::io::Error::other)?;
        tokio::fs::write(&temp, text).await?;
        tokio::fs::rename(&temp, &path).await
    }

    /// The upload `id` as `owner` sees it (another owner's is not found).
    pub fn get(&self, id: &str, owner: &str, now_ms: i64) -> Result<UploadInfo, UploadError> {
        let state = self.lock();
        let info = state
            .uploads
            .get(id)
            .filter(|u| u.owner == owner)
            .ok_or(UploadError::NotFound)?;
        if info.expires_at_ms <= now_ms {
            return Err(UploadError::Expired);
        }
        Ok(info.clone())
    }

    /// Appends a chunk at `offset`. The chunk is checked against `checksum`
    /// when given (a mismatch discards it all); without one, what arrives
    /// before the connection drops is kept, as the protocol asks.
    pub async fn append<S, E>(
        &self,
        id: &str,
        owner: &str,
        offset: u64,
        checksum: Option<Sha256Checksum>,
        mut body: S,
        now_ms: i64,
    ) -> Result<UploadInfo, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut info = self.get(id, owner, now_ms)?;
        {
            let mut state = self.lock();
            if !state.busy.insert(id.to_string()) {
                return Err(UploadError::Busy);
            }
        }
        let _writing = Writing {
            uploads: self,
            id: id.to_string(),
        };
        // Re-read under the write lock: another request may have just ended.
        info.offset = self.get(id, owner, now_ms)?.offset;
        if offset != info.offset {
            return Err(UploadError::OffsetMismatch {
                current: info.offset,
                given: offset,
            });
        }
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(self.data_path(id))
            .await?;
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut outcome: Result<(), UploadError> = Ok(());
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(err) => {
                    tracing::debug!(upload = %id, %err, "upload body ended early");
                    break;
                }
            };
            let room = info.length - info.offset - written;
            if chunk.len() as u64 > room {
                outcome = Err(UploadError::PastLength);
                break;
            }
            hasher.update(&chunk);
            if let Err(err) = file.write_all(&chunk).await {
                outcome = Err(err.into());
                break;
            }
            written += chunk.len() as u64;
        }
        let digest: [u8; 32] = hasher.finalize().into();
        let mismatch = checksum.is_some_and(|want| digest != want.0);
        if outcome.is_err() || mismatch {
            // Nothing of a refused chunk stays.
            file.set_len(info.offset).await?;
            file.sync_all().await?;
            outcome?;
            return Err(UploadError::ChecksumMismatch);
        }
        file.sync_all().await?;
        info.offset += written;
        self.save(&info).await?;
        if let Some(stored) = self.lock().uploads.get_mut(id) {
            stored.offset = info.offset;
        }
        Ok(info)
    }

    /// Removes an upload and its bytes.
    pub async fn remove(&self, id: &str, owner: &str) -> Result<(), UploadError> {
        {
            let mut state = self.lock();
            let owned = state.uploads.get(id).is_some_and(|u| u.owner == owner);
            if !owned {
                return Err(UploadError::NotFound);
            }
            if state.busy.contains(id) {
                return Err(UploadError::Busy);
            }
            state.uploads.remove(id);
        }
        self.delete_files(id).await;
        Ok(())
    }

    async fn delete_files(&self, id: &str) {
        for path in [self.data_path(id), self.info_path(id)] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => tracing::warn!(path = %path.display(), %err, "removing upload file"),
            }
        }
    }

    /// Keeps a complete upload until it is removed: a video is being made of
    /// it (its job removes it when done).
    pub async fn claim(&self, id: &str, owner: &str, now_ms: i64) -> Result<(), UploadError> {
        let mut info = self.get(id, owner, now_ms)?;
        if !info.is_complete() {
            return Err(UploadError::Incomplete {
                offset: info.offset,
                length: info.length,
            });
        }
        info.expires_at_ms = i64::MAX;
        self.save(&info).await?;
        if let Some(stored) = self.lock().uploads.get_mut(id) {
            stored.expires_at_ms = i64::MAX;
        }
        Ok(())
    }

    /// Removes uploads past their expiry (unfinished, or finished but never
    /// made into a video); answers how many.
    pub async fn expire(&self, now_ms: i64) -> usize {
        let expired: Vec<String> = {
            let mut state = self.lock();
            let expired: Vec<String> = state
                .uploads
                .values()
                .filter(|u| u.expires_at_ms <= now_ms)
                .filter(|u| !state.busy.contains(&u.id))
                .map(|u| u.id.clone())
                .collect();
            for id in &expired {
                state.uploads.remove(id);
            }
            expired
        };
        for id in &expired {
            self.delete_files(id).await;
        }
        expired.len()
    }
}

impl Uploads {
    /// The data file of a complete upload, for processing.
    pub fn complete_file(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
    ) -> Result<PathBuf, UploadError> {
        let info = self.get(id, owner, now_ms)?;
        if !info.is_complete() {
            return Err(UploadError::Incomplete {
                offset: info.offset,
                length: info.length,
            });
        }
        Ok(self.data_path(id))
    }
}

/// A fresh random upload id (lower-case letters and digits).
fn new_upload_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..ID_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Whether `text` has the shape of an upload id (also guards file paths).
pub fn is_upload_id(text: &str) -> bool {
    text.len() == ID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Runs [`Uploads::expire`] every minute.
pub async fn expire_forever(uploads: std::sync::Arc<Uploads>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let removed = uploads.expire(crate::model::now_ms()).await;
        if removed > 0 {
            tracing::info!(removed, "expired unfinished uploads");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> UploadLimits {
        UploadLimits {
            max_upload_bytes: 1000,
            quota_bytes: 1500,
            expiry_ms: 60_000,
        }
    }

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn an_upload_resumes_at_its_offset_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(dir.path(), limits()).unwrap();
        let info = uploads.create("0xa", 10, BTreeMap::new(), 0).await.unwrap();
        let after = uploads
            .append(&info.id, "0xa", 0, None, body(&[b"hello"]), 1)
            .await
            .unwrap();
        assert_eq!(after.offset, 5);
        assert!(matches!(
            uploads
                .append(&info.id, "0xa", 0, None, body(&[b"x"]), 2)
                .await,
            Err(UploadError::OffsetMismatch {
                current: 5,
                given: 0
            })
        ));
        // Another owner sees nothing.
        assert!(matches!(
            uploads.get(&info.id, "0xb", 2),
            Err(UploadError::NotFound)
        ));
        drop(uploads);
        let uploads = Uploads::open(dir.path(), limits()).unwrap();
        assert_eq!(uploads.get(&info.id, "0xa", 3).unwrap().offset, 5);
        let done = uploads
            .append(&info.id, "0xa", 5, None, body(&[b"wor", b"ld"]), 4)
            .await
            .unwrap();
        assert!(done.is_complete());
        let path = dir.path().join(format!("{}.bin", info.id));
        assert_eq!(std::fs::read(path).unwrap(), b"helloworld");
    }

    #[tokio::test]
    async fn refused_chunks_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(dir.path(), limits()).unwrap();
        let info = uploads.create("0xa", 4, BTreeMap::new(), 0).await.unwrap();
        assert!(matches!(
            uploads
                .append(&info.id, "0xa", 0, None, body(&[b"abc", b"de"]), 1)
                .await,
            Err(UploadError::PastLength)
        ));
        let wrong = Sha256Checksum([0; 32]);
        assert!(matches!(
            uploads
                .append(&info.id, "0xa", 0, Some(wrong), body(&[b"ab"]), 1)
                .await,
            Err(UploadError::ChecksumMismatch)
        ));
        assert_eq!(uploads.get(&info.id, "0xa", 1).unwrap().offset, 0);
        assert_eq!(
            std::fs::metadata(dir.path().join(format!("{}.bin", info.id)))
                .unwrap()
                .len(),
            0
        );
        let right = Sha256Checksum(Sha256::digest(b"ab").into());
        let after = uploads
            .append(&info.id, "0xa", 0, Some(right), body(&[b"a", b"b"]), 1)
            .await
            .unwrap();
        assert_eq!(after.offset, 2);
    }

    #[tokio::test]
    async fn limits_quota_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(dir.path(), limits()).unwrap();
        assert!(matches!(
            uploads.create("0xa", 1001, BTreeMap::new(), 0).await,
            Err(UploadError::TooLarge { .. })
        ));
        let first = uploads
            .create("0xa", 1000, BTreeMap::new(), 0)
            .await
            .unwrap();
        assert!(matches!(
            uploads.create("0xa", 501, BTreeMap::new(), 0).await,
            Err(UploadError::QuotaExceeded {
                wanted: 1501,
                quota: 1500
            })
        ));
        // Another creator has a quota of their own.
        uploads
            .create("0xb", 1000, BTreeMap::new(), 0)
            .await
            .unwrap();
        // Unfinished and past its expiry: removed with its bytes.
        assert!(matches!(
            uploads.get(&first.id, "0xa", 60_000),
            Err(UploadError::Expired)
        ));
        assert_eq!(uploads.expire(60_000).await, 2);
        assert!(!dir.path().join(format!("{}.bin", first.id)).exists());
        // The quota is free again.
        uploads
            .create("0xa", 1000, BTreeMap::new(), 60_000)
            .await
            .unwrap();
        // A finished upload not made into a video expires too; a claimed one stays.
        let kept = uploads.create("0xd", 1, BTreeMap::new(), 0).await.unwrap();
        uploads
            .append(&kept.id, "0xd", 0, None, body(&[b"k"]), 0)
            .await
            .unwrap();
        let unused = uploads.create("0xd", 1, BTreeMap::new(), 0).await.unwrap();
        uploads
            .append(&unused.id, "0xd", 0, None, body(&[b"u"]), 0)
            .await
            .unwrap();
        uploads.claim(&kept.id, "0xd", 1).await.unwrap();
        uploads.expire(120_000).await;
        assert!(uploads.get(&kept.id, "0xd", 120_000).is_ok());
        assert!(matches!(
            uploads.get(&unused.id, "0xd", 120_000),
            Err(UploadError::NotFound)
        ));
        // Termination.
        let gone = uploads.create("0xc", 1, BTreeMap::new(), 0).await.unwrap();
        uploads.remove(&gone.id, "0xc").await.unwrap();
        assert!(matches!(
            uploads.get(&gone.id, "0xc", 0),
            Err(UploadError::NotFound)
        ));
    }

    #[test]
    fn ids_guard_paths() {
        assert!(is_upload_id(&new_upload_id()));
        assert!(!is_upload_id("../../etc/passwd"));
        assert!(!is_upload_id("ABCDEFGHIJKLMNOPQRSTUVWX"));
    }
}
