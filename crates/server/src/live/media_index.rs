//! What players read: each stream's ladder and segment list in memory (loaded
//! from the database on first use, appended to by ingest, here or, through
//! [`MediaNotice`]s, on another node of the cluster), and a bounded cache of
//! recent segment bytes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use streamweave_cas::{Blockstore, Cid};

use crate::fast_map::FastHashMap;
use crate::model::{RenditionRecord, SegmentRecord, StreamState};
use crate::store::Store;

/// A segment as players see it.
#[derive(Debug, Clone)]
pub struct SegmentEntry {
    pub duration_ms: u32,
    pub cid: Cid,
    /// The init file of a source restarted at this segment (a discontinuity).
    pub init: Option<Cid>,
}

impl SegmentEntry {
    fn of(segment: &SegmentRecord, cid: Cid) -> SegmentEntry {
        SegmentEntry {
            duration_ms: segment.duration_ms,
            cid,
            init: segment.init_cid.as_deref().and_then(|c| c.parse().ok()),
        }
    }
}

/// A partial segment of a live rendition (LL-HLS), kept in memory while
/// its segment is among the newest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartEntry {
    /// The segment it belongs to.
    pub sequence: u64,
    /// Its place in the segment.
    pub index: u32,
    pub duration_ms: u32,
    /// Where it starts in its segment.
    pub offset_ms: u32,
    /// Starts with a keyframe.
    pub independent: bool,
    /// The next part is expected to start the next segment.
    #[serde(default)]
    pub ends_segment: bool,
    #[serde(with = "cid_string")]
    pub cid: Cid,
}

mod cid_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use streamweave_cas::Cid;

    pub fn serialize<S: Serializer>(cid: &Cid, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(cid)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Cid, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Segments whose parts stay listed behind the open one (Apple: parts
/// older than three target durations leave the playlist).
pub const PART_SEGMENTS_KEPT: u64 = 3;

/// One rendition's init file and segments (index = sequence number).
#[derive(Debug, Clone)]
pub struct RenditionMedia {
    pub info: RenditionRecord,
    pub init: Option<Cid>,
    pub segments: Vec<SegmentEntry>,
    /// Parts of the newest segments and of the open one, in order.
    pub parts: VecDeque<PartEntry>,
    /// The longest part so far (the playlist's PART-TARGET).
    pub longest_part_ms: u32,
}

impl RenditionMedia {
    fn new(info: RenditionRecord, init: Option<Cid>) -> Self {
        RenditionMedia {
            info,
            init,
            segments: Vec::new(),
            parts: VecDeque::new(),
            longest_part_ms: 0,
        }
    }

    /// The part `index` of segment `sequence`, if listed.
    pub fn part(&self, sequence: u64, index: u32) -> Option<&PartEntry> {
        self.parts
            .iter()
            .find(|p| p.sequence == sequence && p.index == index)
    }

    /// Whether a playlist already holds what a blocking reload for segment
    /// `sequence` (and part `part` of it) waits for. A part past the last
    /// of a finished segment means the first part of the next.
    pub fn has(&self, sequence: u64, part: Option<u32>) -> bool {
        let complete = (self.segments.len() as u64) > sequence;
        match part {
            None => complete,
            Some(index) => {
                self.part(sequence, index).is_some()
                    || (complete
                        && (self.segments.len() as u64 > sequence + 1
                            || self.part(sequence + 1, 0).is_some()))
            }
        }
    }

    fn trim_parts(&mut self) {
        let keep_from = (self.segments.len() as u64).saturating_sub(PART_SEGMENTS_KEPT);
        while self.parts.front().is_some_and(|p| p.sequence < keep_from) {
            self.parts.pop_front();
        }
    }
}

/// A stream's media.
#[derive(Debug)]
pub struct StreamMedia {
    pub state: StreamState,
    /// Segments need a paying session (a `per_second` stream).
    pub paid: bool,
    pub renditions: Vec<RenditionMedia>,
    /// Rendered playlists by name, until the media changes.
    rendered: Mutex<FastHashMap<String, Bytes>>,
    /// Woken at every change (blocking playlist reloads wait on it).
    changes: Arc<tokio::sync::Notify>,
    /// A notice was missed (another node's segment arrived out of order):
    /// read again from the database on next use.
    stale: bool,
}

impl StreamMedia {
    /// The media time of the live edge (the end of the newest segment),
    /// counted from the stream's start.
    pub fn media_time_ms(&self) -> u64 {
        self.renditions.first().map_or(0, |r| {
            r.segments.iter().map(|s| u64::from(s.duration_ms)).sum()
        })
    }

    fn new(state: StreamState, paid: bool, renditions: Vec<RenditionMedia>) -> Self {
        StreamMedia {
            state,
            paid,
            renditions,
            rendered: Mutex::default(),
            changes: Arc::new(tokio::sync::Notify::new()),
            stale: false,
        }
    }

    /// A playlist rendered once per change of the media, then served from memory.
    pub fn playlist<E>(
        &self,
        name: &str,
        render: impl FnOnce(&StreamMedia) -> Result<String, E>,
    ) -> Result<Bytes, E> {
        if let Some(bytes) = self
            .rendered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(bytes.clone());
        }
        let bytes = Bytes::from(render(self)?);
        self.rendered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), bytes.clone());
        Ok(bytes)
    }

    fn changed(&mut self) {
        self.rendered
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.changes.notify_waiters();
    }

    /// What to wait on for the next change (take it before looking, so a
    /// change in between is not missed).
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changes.clone()
    }

    pub fn rendition(&self, name: &str) -> Option<&RenditionMedia> {
        self.renditions.iter().find(|r| r.info.name == name)
    }

    fn rendition_mut(&mut self, name: &str) -> Option<&mut RenditionMedia> {
        self.renditions.iter_mut().find(|r| r.info.name == name)
    }
}

/// Shared handle to one stream's media.
pub type SharedMedia = Arc<RwLock<StreamMedia>>;

/// Streams kept in memory once they are over; live streams always stay.
const MAX_RESIDENT_ENDED_STREAMS: usize = 512;

/// A change of a stream's media, as the ingesting node tells the others.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MediaNotice {
    Live {
        paid: bool,
        renditions: Vec<RenditionRecord>,
    },
    Init {
        rendition: String,
        cid: String,
        size: u64,
    },
    Segment {
        segment: SegmentRecord,
    },
    Part {
        rendition: String,
        part: PartEntry,
    },
    Paid {
        paid: bool,
    },
    Ended,
    Forget,
}

/// In-memory index of streams' media.
pub struct MediaIndex {
    db: Store,
    streams: RwLock<FastHashMap<String, SharedMedia>>,
    /// Tells the other nodes what changes here.
    relay: std::sync::OnceLock<crate::live::events::Relay<MediaNotice>>,
}

/// Reads a lock even if a writer panicked: the data is append-only, so a
/// half-done append is at worst a missing segment.
macro_rules! read_lock {
    ($lock:expr) => {
        $lock
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
}
macro_rules! write_lock {
    ($lock:expr) => {
        $lock
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
}
pub(crate) use read_lock;

impl MediaIndex {
    pub fn new(db: Store) -> Self {
        MediaIndex {
            db,
            streams: RwLock::default(),
            relay: std::sync::OnceLock::new(),
        }
    }

    /// Sends every change made here to the other nodes too (once).
    pub fn set_relay(&self, relay: crate::live::events::Relay<MediaNotice>) {
        let _ = self.relay.set(relay);
    }

    fn tell(&self, stream_id: &str, notice: MediaNotice) {
        if let Some(relay) = self.relay.get() {
            relay(stream_id, &notice);
        }
    }

    /// Applies a change another node made.
    pub fn apply(&self, stream_id: &str, notice: MediaNotice) {
        match notice {
            MediaNotice::Live { paid, renditions } => self.live_here(stream_id, paid, renditions),
            MediaNotice::Init {
                rendition,
                cid,
                size,
            } => {
                if let Ok(cid) = cid.parse() {
                    self.init_here(stream_id, &rendition, cid, size);
                }
            }
            MediaNotice::Segment { segment } => {
                if let Ok(cid) = segment.cid.parse() {
                    self.segment_here(stream_id, &segment, cid);
                }
            }
            MediaNotice::Part { rendition, part } => self.part_here(stream_id, &rendition, part),
            MediaNotice::Paid { paid } => self.with_resident(stream_id, |media| media.paid = paid),
            MediaNotice::Ended => {
                self.with_resident(stream_id, |media| media.state = StreamState::Ended)
            }
            MediaNotice::Forget => {
                write_lock!(self.streams).remove(stream_id);
            }
        }
    }

    /// The newest segment (`part` false) or part listed of a rendition of
    /// a resident stream.
    pub fn newest_file(&self, stream_id: &str, rendition: &str, part: bool) -> Option<Cid> {
        let media = read_lock!(self.streams).get(stream_id)?.clone();
        let media = read_lock!(media);
        let rendition = media.renditions.iter().find(|r| r.info.name == rendition)?;
        if part {
            rendition.parts.back().map(|part| part.cid)
        } else {
            rendition.segments.last().map(|segment| segment.cid)
        }
    }

    /// Marks a stream's resident media as behind: its next reader loads it
    /// from the database again.
    pub fn mark_stale(&self, stream_id: &str) {
        self.with_resident(stream_id, |media| media.stale = true);
    }

    /// The media of a stream when it is resident and fresh, without
    /// touching the database.
    pub fn resident(&self, stream_id: &str) -> Option<SharedMedia> {
        let media = read_lock!(self.streams).get(stream_id)?.clone();
        let fresh = !read_lock!(media).stale;
        fresh.then_some(media)
    }

    /// The media of a stream, loading it from the database when not resident.
    pub async fn get(&self, stream_id: &str) -> anyhow::Result<Option<SharedMedia>> {
        if let Some(media) = read_lock!(self.streams).get(stream_id)
            && !read_lock!(media).stale
        {
            return Ok(Some(media.clone()));
        }
        let Some(stream) = self.db.stream(stream_id).await? else {
            return Ok(None);
        };
        let renditions = self.db.renditions(stream_id).await?;
        let segments = self.db.segments(stream_id).await?;
        let mut media = StreamMedia::new(
            stream.state,
            stream.access.is_gated(),
            renditions
                .into_iter()
                .map(|info| {
                    let init = info.init_cid.as_deref().and_then(|c| c.parse().ok());
                    RenditionMedia::new(info, init)
                })
                .collect(),
        );
        for segment in segments {
            let Ok(cid) = segment.cid.parse::<Cid>() else {
                anyhow::bail!(
                    "segment {} of {stream_id} has an invalid CID",
                    segment.sequence
                );
            };
            if let Some(rendition) = media.rendition_mut(&segment.rendition) {
                // Rows come ordered by sequence, so the index is the sequence.
                if rendition.segments.len() as u64 == segment.sequence {
                    rendition.segments.push(SegmentEntry::of(&segment, cid));
                }
            }
        }
        let mut streams = write_lock!(self.streams);
        if streams.len() >= MAX_RESIDENT_ENDED_STREAMS {
            streams.retain(|_, media| read_lock!(media).state == StreamState::Live);
        }
        let shared = match streams.get(stream_id) {
            // A stale copy is replaced in place, so holders see the fresh one.
            Some(resident) if read_lock!(resident).stale => {
                *write_lock!(resident) = media;
                resident.clone()
            }
            Some(resident) => resident.clone(),
            None => {
                let shared = Arc::new(RwLock::new(media));
                streams.insert(stream_id.to_string(), shared.clone());
                shared
            }
        };
        Ok(Some(shared))
    }

    /// A stream went live with this ladder.
    pub fn set_live(&self, stream_id: &str, paid: bool, renditions: Vec<RenditionRecord>) {
        self.tell(
            stream_id,
            MediaNotice::Live {
                paid,
                renditions: renditions.clone(),
            },
        );
        self.live_here(stream_id, paid, renditions);
    }

    fn live_here(&self, stream_id: &str, paid: bool, renditions: Vec<RenditionRecord>) {
        let media = StreamMedia::new(
            StreamState::Live,
            paid,
            renditions
                .into_iter()
                .map(|info| RenditionMedia::new(info, None))
                .collect(),
        );
        write_lock!(self.streams).insert(stream_id.to_string(), Arc::new(RwLock::new(media)));
    }

    fn with_resident(&self, stream_id: &str, change: impl FnOnce(&mut StreamMedia)) {
        if let Some(media) = read_lock!(self.streams).get(stream_id) {
            let mut media = write_lock!(media);
            change(&mut media);
            media.changed();
        }
    }

    pub fn set_init(&self, stream_id: &str, rendition: &str, cid: Cid, size: u64) {
        self.tell(
            stream_id,
            MediaNotice::Init {
                rendition: rendition.to_string(),
                cid: cid.to_string(),
                size,
            },
        );
        self.init_here(stream_id, rendition, cid, size);
    }

    fn init_here(&self, stream_id: &str, rendition: &str, cid: Cid, size: u64) {
        self.with_resident(stream_id, |media| {
            if let Some(r) = media.rendition_mut(rendition) {
                r.init = Some(cid);
                r.info.init_cid = Some(cid.to_string());
                r.info.init_size = Some(size);
            }
        });
    }

    pub fn push_segment(&self, stream_id: &str, segment: &SegmentRecord, cid: Cid) {
        self.tell(
            stream_id,
            MediaNotice::Segment {
                segment: segment.clone(),
            },
        );
        self.segment_here(stream_id, segment, cid);
    }

    fn segment_here(&self, stream_id: &str, segment: &SegmentRecord, cid: Cid) {
        self.with_resident(stream_id, |media| {
            let Some(r) = media.rendition_mut(&segment.rendition) else {
                return;
            };
            let have = r.segments.len() as u64;
            if have == segment.sequence {
                r.segments.push(SegmentEntry::of(segment, cid));
                r.trim_parts();
            } else if have < segment.sequence {
                // One went missing on the way: the database has them all.
                media.stale = true;
            }
        });
    }

    /// A partial segment of a live rendition was stored.
    pub fn push_part(&self, stream_id: &str, rendition: &str, part: PartEntry) {
        self.tell(
            stream_id,
            MediaNotice::Part {
                rendition: rendition.to_string(),
                part: part.clone(),
            },
        );
        self.part_here(stream_id, rendition, part);
    }

    fn part_here(&self, stream_id: &str, rendition: &str, part: PartEntry) {
        self.with_resident(stream_id, |media| {
            let Some(r) = media.rendition_mut(rendition) else {
                return;
            };
            // Parts of the open segment only, in order (a late one is dropped).
            let open = r.segments.len() as u64;
            let next_index = match r.parts.back() {
                Some(last) if last.sequence == part.sequence => last.index + 1,
                _ => 0,
            };
            if part.sequence == open && part.index == next_index {
                r.longest_part_ms = r.longest_part_ms.max(part.duration_ms);
                r.parts.push_back(part);
            }
        });
    }

    /// A stream's access mode changed.
    pub fn set_paid(&self, stream_id: &str, paid: bool) {
        self.tell(stream_id, MediaNotice::Paid { paid });
        self.with_resident(stream_id, |media| media.paid = paid);
    }

    /// Drops a stream's resident media (its recording was removed).
    pub fn forget(&self, stream_id: &str) {
        self.tell(stream_id, MediaNotice::Forget);
        write_lock!(self.streams).remove(stream_id);
    }

    pub fn set_ended(&self, stream_id: &str) {
        self.tell(stream_id, MediaNotice::Ended);
        self.with_resident(stream_id, |media| media.state = StreamState::Ended);
    }
}

/// Recent file bytes by CID, bounded by total size, oldest out first (live
/// viewers all want the newest segments). A file not cached is loaded once
/// for every request that wants it meanwhile ([`FileCache::get_or_load`]).
/// It holds files only (segments, parts, init files, thumbnails), never a
/// directory: the gateway (`http::ipfs`) answers a CID found here as a
/// file without reading its block.
pub struct FileCache {
    max_bytes: u64,
    inner: Mutex<CacheInner>,
    loading: Mutex<FastHashMap<Cid, Load>>,
}

/// One file's load in progress, shared by the requests waiting for it: its
/// bytes (`None`: not stored) or why it failed.
type Load = Arc<tokio::sync::OnceCell<Result<Option<Bytes>, String>>>;

#[derive(Default)]
struct CacheInner {
    files: FastHashMap<Cid, Bytes>,
    order: VecDeque<Cid>,
    bytes: u64,
}

impl FileCache {
    pub fn new(max_bytes: u64) -> Self {
        FileCache {
            max_bytes,
            inner: Mutex::new(CacheInner::default()),
            loading: Mutex::default(),
        }
    }

    /// The file's bytes from the cache, or from `load`, run once for all
    /// the requests that want the file while it runs (within a second of a
    /// new live segment every viewer asks for it; on a node of a cluster
    /// each load is a fetch from object storage). Loaded bytes are cached;
    /// a failure is answered to the requests that waited for that load,
    /// and the next request loads again.
    pub async fn get_or_load<F, Fut>(&self, cid: Cid, load: F) -> Result<Option<Bytes>, String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Bytes>, String>>,
    {
        if let Some(bytes) = self.get(&cid) {
            return Ok(Some(bytes));
        }
        let shared = self
            .loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(cid)
            .or_default()
            .clone();
        let loaded = shared
            .get_or_init(|| async {
                let loaded = load().await;
                if let Ok(Some(bytes)) = &loaded {
                    self.insert(cid, bytes.clone());
                }
                loaded
            })
            .await
            .clone();
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if loading.get(&cid).is_some_and(|l| Arc::ptr_eq(l, &shared)) {
            loading.remove(&cid);
        }
        loaded
    }

    /// The file's bytes from the cache, or else read from `blockstore` (on
    /// a blocking thread: a read there may be a fetch from object storage)
    /// once for every request that wants them meanwhile.
    pub async fn get_or_read(
        &self,
        blockstore: &Arc<Blockstore>,
        cid: Cid,
    ) -> Result<Option<Bytes>, String> {
        let blockstore = blockstore.clone();
        self.get_or_load(cid, || async move {
            match tokio::task::spawn_blocking(move || blockstore.get_file(&cid)).await {
                Ok(Ok(bytes)) => Ok(bytes.map(Bytes::from)),
                Ok(Err(err)) => Err(format!("reading {cid}: {err}")),
                Err(err) => Err(format!("reading {cid}: {err}")),
            }
        })
        .await
    }

    pub fn contains(&self, cid: &Cid) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.files.contains_key(cid)
    }

    pub fn get(&self, cid: &Cid) -> Option<Bytes> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.files.get(cid).cloned()
    }

    pub fn insert(&self, cid: Cid, bytes: Bytes) {
        let size = bytes.len() as u64;
        if size > self.max_bytes / 4 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.files.contains_key(&cid) {
            return;
        }
        while inner.bytes + size > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.files.remove(&oldest) {
                inner.bytes -= evicted.len() as u64;
            }
        }
        inner.bytes += size;
        inner.order.push_back(cid);
        inner.files.insert(cid, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_waiting_for_one_file_share_its_load() {
        let cache = Arc::new(FileCache::new(1000));
        let cid = streamweave_cas::file_cid(b"segment");
        let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let mut waiting = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (cache, loads, mut released) = (cache.clone(), loads.clone(), released.clone());
            waiting.spawn(async move {
                cache
                    .get_or_load(cid, || async move {
                        loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        released.wait_for(|r| *r).await.expect("released");
                        Ok(Some(Bytes::from_static(b"bytes")))
                    })
                    .await
            });
        }
        // Every request is waiting before the one load ends.
        while cache.loading.lock().expect("lock").is_empty() {
            tokio::task::yield_now().await;
        }
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        release.send(true).expect("send");
        while let Some(answer) = waiting.join_next().await {
            assert_eq!(
                answer.expect("task"),
                Ok(Some(Bytes::from_static(b"bytes")))
            );
        }
        assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(cache.loading.lock().expect("lock").is_empty());
        assert_eq!(cache.get(&cid), Some(Bytes::from_static(b"bytes")));
    }

    #[tokio::test]
    async fn a_failed_load_is_not_kept() {
        let cache = FileCache::new(1000);
        let cid = streamweave_cas::file_cid(b"segment");
        let failed = cache
            .get_or_load(cid, || async { Err("the bucket is away".to_string()) })
            .await;
        assert_eq!(failed, Err("the bucket is away".to_string()));
        let loaded = cache
            .get_or_load(cid, || async { Ok(Some(Bytes::from_static(b"bytes"))) })
            .await;
        assert_eq!(loaded, Ok(Some(Bytes::from_static(b"bytes"))));
        // Not stored: answered, nothing cached.
        let other = streamweave_cas::file_cid(b"other");
        assert_eq!(
            cache.get_or_load(other, || async { Ok(None) }).await,
            Ok(None)
        );
        assert_eq!(cache.get(&other), None);
    }

    #[test]
    fn cache_stays_within_its_bound() {
        let cache = FileCache::new(1000);
        let cids: Vec<Cid> = (0..10u8).map(|i| streamweave_cas::file_cid(&[i])).collect();
        for cid in &cids {
            cache.insert(*cid, Bytes::from(vec![0u8; 200]));
        }
        let resident = cids.iter().filter(|c| cache.get(c).is_some()).count();
        assert_eq!(resident, 5);
        assert!(cache.get(&cids[9]).is_some(), "newest stays");
        assert!(cache.get(&cids[0]).is_none(), "oldest goes");
        cache.insert(cids[0], Bytes::from(vec![0u8; 600]));
        assert!(
            cache.get(&cids[0]).is_none(),
            "a file over a quarter of the cache is not kept"
        );
    }
}
