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

use std::io::Write;

use anyhow::Context;
use serde::Serialize;
use streamweave_cas::{
    Blockstore, CasError, Cid, DirEntry, PieceHasher, build_directory, dag_tsize, parse_cid,
    write_car,
};
use streamweave_media::playlist::{self, MasterEntry, MediaPlaylistSpec, PlaylistSegment};

use crate::db::Db;
use crate::model::RenditionRecord;

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

fn add_file(blockstore: &Blockstore, name: &str, bytes: &[u8]) -> anyhow::Result<DirEntry> {
    let cid = blockstore.put_file(bytes)?;
    entry_of(blockstore, name.to_string(), cid)
}

/// A rendition's VOD playlist over `segments` (relative URIs, `#EXT-X-ENDLIST`).
pub fn vod_playlist(segments: &[PlaylistSegment], segment_duration_ms: u32) -> String {
    playlist::render_media_playlist(&MediaPlaylistSpec {
        init_uri: "init.mp4",
        segments,
        segment_duration_ms,
        ended: true,
        live_window_segments: segments.len(),
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

/// Builds (and stores) the directory of a stream's recording so far; answers its root CID.
pub async fn build_root(
    db: &Db,
    blockstore: &Blockstore,
    stream_id: &str,
    segment_duration_ms: u32,
) -> anyhow::Result<Cid> {
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
            listed.push(PlaylistSegment {
                sequence: segment.sequence,
                duration_ms: segment.duration_ms,
                uri,
            });
        }
        let media = vod_playlist(&listed, segment_duration_ms);
        entries.push(add_file(blockstore, "index.m3u8", media.as_bytes())?);
        let directory =
            build_directory(entries).with_context(|| format!("rendition {}", rendition.name))?;
        blockstore.put_block(&directory.block.cid, &directory.block.data)?;
        root_entries.push(DirEntry {
            name: rendition.name.clone(),
            cid: directory.block.cid,
            tsize: directory.tsize,
        });
    }
    let master = master_playlist(&renditions);
    root_entries.push(add_file(blockstore, "master.m3u8", master.as_bytes())?);
    let root = build_directory(root_entries)?;
    blockstore.put_block(&root.block.cid, &root.block.data)?;
    Ok(root.block.cid)
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

/// Archive numbers already computed, per stream and segment count (a live
/// stream's archive changes with every segment; an ended one never). Bounded.
#[derive(Default)]
pub struct ArchiveCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (usize, ArchiveSummary)>>,
}

/// Streams whose archive numbers are kept.
const ARCHIVE_CACHE_STREAMS: usize = 1024;

impl ArchiveCache {
    /// The numbers for `stream_id` at `segments` segments, if computed.
    pub fn get(&self, stream_id: &str, segments: usize) -> Option<ArchiveSummary> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(stream_id)
            .filter(|(count, _)| *count == segments)
            .map(|(_, summary)| summary.clone())
    }

    /// Keeps the numbers for `stream_id` at `segments` segments.
    pub fn put(&self, stream_id: &str, segments: usize, summary: ArchiveSummary) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= ARCHIVE_CACHE_STREAMS && !entries.contains_key(stream_id) {
            entries.clear();
        }
        entries.insert(stream_id.to_string(), (segments, summary));
    }
}
