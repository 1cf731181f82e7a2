//! Another node's new media, listed here once its bytes are here.
//!
//! On a node of a cluster, a live segment stored by another node is in
//! object storage, and its notice ([`MediaNotice`]) lists it in this node's
//! playlists. Listed at once, every viewer here who polls in the next
//! moments asks for it while the one fetch from object storage runs, and
//! all of them wait on it. So a notice of a file (a segment, a part, an
//! init file) of a rendition watched here starts fetching it into the
//! node's cache as it arrives, and the notice is applied when the fetch
//! ends: viewers see the file listed once it can be answered from memory.
//! Notices are applied in the order they arrived (a stream's segments, its
//! parts and its end stay in order), each waiting for its own fetch at
//! most [`MAX_FETCH_WAIT`]; one that fails or takes longer lists the file
//! anyway, and a request for it reads it as before.
//!
//! A segment is fetched when the rendition's newest listed segment is in
//! this node's cache (some viewer here reads its segments), a part when
//! its newest listed part is (LL-HLS players read parts, others whole
//! segments). Renditions nobody here watches cost no fetch.

use std::sync::Arc;
use std::time::Duration;

use streamweave_cas::{Blockstore, Cid};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::media_index::{FileCache, MediaIndex, MediaNotice};

/// Longest a notice waits for its file before it is applied anyway.
pub const MAX_FETCH_WAIT: Duration = Duration::from_secs(1);
/// Notices waiting to be applied at most; past that a stream's notice is
/// dropped and the stream read again from the database on next use.
const MAX_WAITING: usize = 1024;

struct Arrival {
    stream_id: String,
    notice: MediaNotice,
    fetched: Option<JoinHandle<()>>,
    deadline: Instant,
}

/// Applies other nodes' media notices to this node's index, each once its
/// file is fetched.
pub struct Arrivals {
    index: Arc<MediaIndex>,
    cache: Arc<FileCache>,
    blockstore: Arc<Blockstore>,
    waiting: mpsc::Sender<Arrival>,
}

impl Arrivals {
    /// Starts the task that applies notices to `index`; files are read
    /// from `blockstore` into `cache`.
    pub fn start(
        index: Arc<MediaIndex>,
        cache: Arc<FileCache>,
        blockstore: Arc<Blockstore>,
    ) -> Arc<Self> {
        let (waiting, mut arrivals) = mpsc::channel::<Arrival>(MAX_WAITING);
        let applying = index.clone();
        tokio::spawn(async move {
            while let Some(arrival) = arrivals.recv().await {
                if let Some(fetched) = arrival.fetched {
                    let _ = tokio::time::timeout_at(arrival.deadline, fetched).await;
                }
                applying.apply(&arrival.stream_id, arrival.notice);
            }
        });
        Arc::new(Arrivals {
            index,
            cache,
            blockstore,
            waiting,
        })
    }

    /// Takes a notice from another node.
    pub fn arrived(&self, stream_id: &str, notice: MediaNotice) {
        let fetched = self.file_to_fetch(stream_id, &notice).map(|cid| {
            let (cache, blockstore) = (self.cache.clone(), self.blockstore.clone());
            tokio::spawn(async move {
                let _ = cache.get_or_read(&blockstore, cid).await;
            })
        });
        let arrival = Arrival {
            stream_id: stream_id.to_string(),
            notice,
            fetched,
            deadline: Instant::now() + MAX_FETCH_WAIT,
        };
        if self.waiting.try_send(arrival).is_err() {
            // The notice is lost: what it said is in the database.
            crate::metrics::metrics().cluster_dropped.inc();
            self.index.mark_stale(stream_id);
        }
    }

    /// The file a notice lists, when files of its kind (segments or parts)
    /// of its rendition are read here and the file is not here yet.
    fn file_to_fetch(&self, stream_id: &str, notice: &MediaNotice) -> Option<Cid> {
        let (rendition, cid, is_part) = match notice {
            MediaNotice::Segment { segment } => {
                (&segment.rendition, segment.cid.parse().ok()?, false)
            }
            MediaNotice::Part { rendition, part } => (rendition, part.cid, true),
            // An init file is fetched by whoever asks first; it changes
            // only when a source restarts.
            _ => return None,
        };
        let watched = self
            .index
            .newest_file(stream_id, rendition, is_part)
            .is_some_and(|newest| self.cache.contains(&newest));
        (watched && !self.cache.contains(&cid)).then_some(cid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::media_index::{PartEntry, read_lock};
    use crate::model::{RenditionRecord, SegmentRecord};

    struct Node {
        index: Arc<MediaIndex>,
        cache: Arc<FileCache>,
        blockstore: Arc<Blockstore>,
        arrivals: Arc<Arrivals>,
        _dir: tempfile::TempDir,
    }

    /// A node whose index holds a live stream `s` of one rendition `360p`.
    async fn node() -> Node {
        let dir = tempfile::tempdir().expect("dir");
        let db = crate::store::Store::open(dir.path(), None)
            .await
            .expect("store");
        let blockstore = Arc::new(Blockstore::open(dir.path().join("blocks")).expect("blocks"));
        let index = Arc::new(MediaIndex::new(db));
        let cache = Arc::new(FileCache::new(1 << 20));
        let arrivals = Arrivals::start(index.clone(), cache.clone(), blockstore.clone());
        arrivals.arrived(
            "s",
            MediaNotice::Live {
                paid: false,
                renditions: vec![RenditionRecord {
                    name: "360p".into(),
                    width: Some(640),
                    height: Some(360),
                    bandwidth_bps: 800_000,
                    codecs: "avc1.64001e".into(),
                    init_cid: None,
                    init_size: None,
                }],
            },
        );
        Node {
            index,
            cache,
            blockstore,
            arrivals,
            _dir: dir,
        }
    }

    /// Stores a segment's bytes (as the node that made it did) and sends
    /// its notice to `node`.
    fn segment_arrives(node: &Node, sequence: u64) -> Cid {
        let bytes = format!("segment {sequence}").repeat(100);
        let cid = node.blockstore.put_file(bytes.as_bytes()).expect("put");
        node.arrivals.arrived(
            "s",
            MediaNotice::Segment {
                segment: SegmentRecord {
                    rendition: "360p".into(),
                    sequence,
                    duration_ms: 2000,
                    size: bytes.len() as u64,
                    cid: cid.to_string(),
                    init_cid: None,
                },
            },
        );
        cid
    }

    /// Stores a part's bytes and sends its notice to `node`.
    fn part_arrives(node: &Node, sequence: u64, index: u32) -> Cid {
        let bytes = format!("part {index} of segment {sequence}");
        let cid = node.blockstore.put_file(bytes.as_bytes()).expect("put");
        node.arrivals.arrived(
            "s",
            MediaNotice::Part {
                rendition: "360p".into(),
                part: PartEntry {
                    sequence,
                    index,
                    duration_ms: 500,
                    offset_ms: 500 * index,
                    independent: index == 0,
                    ends_segment: false,
                    cid,
                },
            },
        );
        cid
    }

    /// A node on which a viewer read the stream's first segment.
    async fn watched_node() -> Node {
        let node = node().await;
        let first = segment_arrives(&node, 0);
        listed(&node, first).await;
        node.cache
            .get_or_read(&node.blockstore, first)
            .await
            .expect("read")
            .expect("stored");
        node
    }

    async fn listed(node: &Node, cid: Cid) {
        let wait = async {
            while node.index.newest_file("s", "360p", false) != Some(cid)
                && node.index.newest_file("s", "360p", true) != Some(cid)
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the segment is listed");
    }

    #[tokio::test]
    async fn a_watched_renditions_segment_is_in_the_cache_when_it_is_listed() {
        let node = node().await;
        let first = segment_arrives(&node, 0);
        listed(&node, first).await;
        // Nobody here has asked for the rendition yet: nothing fetched.
        assert!(!node.cache.contains(&first));
        // A viewer here reads the first segment.
        node.cache
            .get_or_read(&node.blockstore, first)
            .await
            .expect("read")
            .expect("stored");
        let second = segment_arrives(&node, 1);
        listed(&node, second).await;
        assert!(
            node.cache.contains(&second),
            "listed before its bytes were fetched"
        );
    }

    #[tokio::test]
    async fn segments_are_fetched_for_their_readers_while_parts_are_listed_too() {
        let node = watched_node().await;
        // The open segment's parts are listed; nobody here reads parts.
        let part = part_arrives(&node, 1, 0);
        listed(&node, part).await;
        assert!(!node.cache.contains(&part), "a part nobody reads fetched");
        // The viewer here reads segments: the next one is fetched first.
        let second = segment_arrives(&node, 1);
        listed(&node, second).await;
        assert!(
            node.cache.contains(&second),
            "listed before its bytes were fetched"
        );
    }

    #[tokio::test]
    async fn notices_are_applied_in_the_order_they_arrived() {
        let node = watched_node().await;
        // The segment waits for its fetch; the first part of the next
        // segment, right behind it, waits for the segment (applied first,
        // it would be dropped as a part of a segment not yet open).
        let second = segment_arrives(&node, 1);
        let part_cid = part_arrives(&node, 2, 0);
        listed(&node, part_cid).await;
        let media = node.index.resident("s").expect("resident");
        let media = read_lock!(media);
        let rendition = &media.renditions[0];
        assert_eq!(rendition.segments.len(), 2);
        assert_eq!(rendition.segments[1].cid, second);
        assert_eq!(rendition.parts.len(), 1);
    }

    #[tokio::test]
    async fn a_segment_that_cannot_be_fetched_is_listed_anyway() {
        let node = watched_node().await;
        // A notice of a file this node's blockstore does not hold.
        let absent = streamweave_cas::file_cid(b"stored elsewhere");
        node.arrivals.arrived(
            "s",
            MediaNotice::Segment {
                segment: SegmentRecord {
                    rendition: "360p".into(),
                    sequence: 1,
                    duration_ms: 2000,
                    size: 16,
                    cid: absent.to_string(),
                    init_cid: None,
                },
            },
        );
        listed(&node, absent).await;
        assert!(!node.cache.contains(&absent));
    }
}
