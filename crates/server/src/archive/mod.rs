//! A stream's recording as a UnixFS directory, the folder `ipfs add -r
//! --cid-version=1` would make of it:
//!
//! ```text
//! master.m3u8
//! {rendition}/index.m3u8   (VOD: every segment, #EXT-X-ENDLIST)
//! {rendition}/init.mp4
//! {rendition}/{sequence}.m4s
//! ```
//!
//! Every path is relative, so `/ipfs/{root}/master.m3u8` plays from any
//! gateway. Segments and init files are already in the blockstore under their
//! CIDs; the playlists and directory nodes are added beside them. The CAR of
//! the root (deterministic block order, see `streamweave_cas::write_car`) and
//! its Filecoin Piece CID come from the same walk.

pub mod export;
pub mod gc;
pub mod remote;
pub mod replication;

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use streamweave_cas::{
    Blockstore, CasError, Cid, DirEntry, PieceHasher, build_directory, dag_tsize, parse_cid,
    write_car,
};
use streamweave_media::playlist::{self, MasterEntry, MediaPlaylistSpec, PlaylistSegment};

use crate::model::RenditionRecord;
use crate::store::Store;

/// What an archive is, in numbers anyone can recompute.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// The directory's CID.
    pub root_cid: String,
    /// Bytes of the CARv1 of the root.
    pub car_size: u64,
    /// The CAR's Piece CID (v2, FRC-0069).
    pub piece_cid: String,
    /// The padded piece size (a power of two).
    pub piece_size: u64,
}

fn entry_of(blockstore: &Blockstore, name: String, cid: Cid) -> anyhow::Result<DirEntry> {
    let root = blockstore
        .get_block(&cid)?
        .ok_or(CasError::MissingBlock(cid))?;
    Ok(DirEntry {
        name,
        tsize: dag_tsize(&cid, &root)?,
        cid,
    })
}

fn add_file(
    blockstore: &Blockstore,
    name: &str,
    bytes: &[u8],
    added: &mut Vec<Cid>,
) -> anyhow::Result<DirEntry> {
    let dag = streamweave_cas::build_file_dag(bytes);
    let mut tsize = 0;
    for block in &dag.blocks {
        blockstore.put_block(&block.cid, &block.data)?;
        added.push(block.cid);
        tsize += block.data.len() as u64;
    }
    Ok(DirEntry {
        name: name.to_string(),
        cid: dag.root,
        tsize,
    })
}

/// An archive's root, and the blocks building it added beside the stored
/// media (directory nodes, playlists).
#[derive(Debug, Clone)]
pub struct BuiltArchive {
    pub root: Cid,
    pub added: Vec<Cid>,
}

/// A rendition's VOD playlist over `segments` (relative URIs, `#EXT-X-ENDLIST`).
pub fn vod_playlist(segments: &[PlaylistSegment], segment_duration_ms: u32) -> String {
    playlist::render_media_playlist(&MediaPlaylistSpec {
        init_uri: "init.mp4",
        segments,
        segment_duration_ms,
        ended: true,
        live_window_segments: segments.len(),
        parts: &[],
        part_target_ms: 0,
        preload_hint: None,
    })
}

/// The master playlist of a recording's ladder (relative URIs).
pub fn master_playlist(renditions: &[RenditionRecord]) -> String {
    let entries: Vec<MasterEntry<'_>> = renditions
        .iter()
        .map(|r| MasterEntry {
            name: &r.name,
            uri: format!("{}/index.m3u8", r.name),
            bandwidth_bps: r.bandwidth_bps,
            codecs: &r.codecs,
            resolution: r.width.zip(r.height),
        })
        .collect();
    let videos: Vec<MasterEntry<'_>> = entries
        .iter()
        .filter(|e| e.resolution.is_some())
        .cloned()
        .collect();
    let audio = entries.iter().find(|e| e.resolution.is_none());
    playlist::render_master_playlist(&videos, audio)
}

/// The archive of a stream's recording as it is now, with its segment
/// count: the one built at this many segments, else built (and recorded)
/// now. `None` while the stream has no media.
pub async fn current_archive(
    db: &Store,
    blockstore: &Arc<Blockstore>,
    stream_id: &str,
    segment_duration_ms: u32,
) -> anyhow::Result<Option<(ArchiveSummary, usize)>> {
    let segments = db.segments(stream_id).await?.len();
    if segments == 0 {
        return Ok(None);
    }
    if let Some(built) = db.archive_at(stream_id, segments).await? {
        return Ok(Some((built, segments)));
    }
    let built = build_root(db, blockstore, stream_id, segment_duration_ms).await?;
    let store = blockstore.clone();
    let root = built.root;
    let summary =
        tokio::task::spawn_blocking(move || car_of::<std::io::Sink>(&store, &root, None)).await??;
    db.insert_archive(
        stream_id,
        segments,
        &summary,
        &built.added,
        crate::model::now_ms(),
    )
    .await?;
    Ok(Some((summary, segments)))
}

/// The name of the file in an archive's root that names its stream.
pub const STREAM_FILE: &str = "stream.json";

/// The contents of [`STREAM_FILE`] for `stream_id`.
pub fn stream_file(stream_id: &str) -> String {
    format!("{}\n", serde_json::json!({ "stream_id": stream_id }))
}

/// Builds (and stores) the directory of a stream's recording so far.
pub async fn build_root(
    db: &Store,
    blockstore: &Blockstore,
    stream_id: &str,
    segment_duration_ms: u32,
) -> anyhow::Result<BuiltArchive> {
    let mut added = Vec::new();
    let renditions = db.renditions(stream_id).await?;
    anyhow::ensure!(
        !renditions.is_empty(),
        "stream {stream_id} has no media yet"
    );
    let segments = db.segments(stream_id).await?;
    let mut root_entries = Vec::with_capacity(renditions.len() + 1);
    for rendition in &renditions {
        let mut entries = Vec::new();
        if let Some(init) = &rendition.init_cid {
            entries.push(entry_of(blockstore, "init.mp4".into(), parse_cid(init)?)?);
        }
        let mut listed = Vec::new();
        for segment in segments.iter().filter(|s| s.rendition == rendition.name) {
            let uri = format!("{}.m4s", segment.sequence);
            entries.push(entry_of(blockstore, uri.clone(), parse_cid(&segment.cid)?)?);
            let new_init_uri = match &segment.init_cid {
                Some(init) => {
                    let name = playlist::period_init_uri(segment.sequence);
                    entries.push(entry_of(blockstore, name.clone(), parse_cid(init)?)?);
                    Some(name)
                }
                None => None,
            };
            listed.push(PlaylistSegment {
                sequence: segment.sequence,
                duration_ms: segment.duration_ms,
                uri,
                new_init_uri,
            });
        }
        let media = vod_playlist(&listed, segment_duration_ms);
        entries.push(add_file(
            blockstore,
            "index.m3u8",
            media.as_bytes(),
            &mut added,
        )?);
        let directory =
            build_directory(entries).with_context(|| format!("rendition {}", rendition.name))?;
        // A long recording's folder is a HAMT: its shard nodes are blocks too.
        for shard in &directory.shards {
            blockstore.put_block(&shard.cid, &shard.data)?;
            added.push(shard.cid);
        }
        blockstore.put_block(&directory.block.cid, &directory.block.data)?;
        added.push(directory.block.cid);
        root_entries.push(DirEntry {
            name: rendition.name.clone(),
            cid: directory.block.cid,
            tsize: directory.tsize,
        });
    }
    let master = master_playlist(&renditions);
    root_entries.push(add_file(
        blockstore,
        "master.m3u8",
        master.as_bytes(),
        &mut added,
    )?);
    // Which stream this is a recording of. Two streams of the same media
    // (the same file sent twice, a test pattern) share every other block;
    // this one makes each recording's root its own, so that each has its
    // archive, its replicas and its retention.
    root_entries.push(add_file(
        blockstore,
        STREAM_FILE,
        stream_file(stream_id).as_bytes(),
        &mut added,
    )?);
    let root = build_directory(root_entries)?;
    for shard in &root.shards {
        blockstore.put_block(&shard.cid, &shard.data)?;
        added.push(shard.cid);
    }
    blockstore.put_block(&root.block.cid, &root.block.data)?;
    Ok(BuiltArchive {
        root: root.block.cid,
        added,
    })
}

/// A writer that feeds the piece hasher and counts, and optionally writes on.
struct Tee<W> {
    inner: Option<W>,
    piece: PieceHasher,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Some(inner) = self.inner.as_mut() {
            inner.write_all(bytes)?;
        }
        self.piece.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.as_mut().map_or(Ok(()), Write::flush)
    }
}

/// Walks the DAG under `root` into a CAR (written to `out` when given) and
/// answers the archive's numbers.
pub fn car_of<W: Write>(
    blockstore: &Blockstore,
    root: &Cid,
    out: Option<W>,
) -> anyhow::Result<ArchiveSummary> {
    let mut tee = Tee {
        inner: out,
        piece: PieceHasher::new(),
    };
    let car_size = write_car(
        root,
        |cid| {
            blockstore
                .get_block(cid)?
                .ok_or(CasError::MissingBlock(*cid))
        },
        &mut tee,
    )?;
    tee.flush()?;
    let piece = tee.piece.finish();
    Ok(ArchiveSummary {
        root_cid: root.to_string(),
        car_size,
        piece_cid: piece.cid().to_string(),
        piece_size: piece.padded_size,
    })
}
