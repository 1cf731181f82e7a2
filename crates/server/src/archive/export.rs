//! `streamweave export`: a stream's recording as plain HLS files (master
//! playlist, per rendition an init file, segments and a VOD playlist, and
//! the file naming the stream: the archive's folder), read
//! from the blockstore and checked against their CIDs on the way out.

use std::path::Path;

use anyhow::{Context, bail};
use streamweave_cas::{Blockstore, parse_cid};
use streamweave_media::playlist::PlaylistSegment;

use crate::store::Store;

/// What an export wrote.
#[derive(Debug, serde::Serialize)]
pub struct ExportSummary {
    pub stream_id: String,
    pub renditions: usize,
    pub files: usize,
    pub bytes: u64,
}

/// Writes stream `stream_id` of the server data in `data_dir` (its rows in
/// `db`) under `out`.
pub async fn export_stream(
    db: &Store,
    data_dir: &Path,
    stream_id: &str,
    out: &Path,
    segment_duration_ms: u32,
) -> anyhow::Result<ExportSummary> {
    let blockstore = Blockstore::open(data_dir.join("blocks")).context("opening the blockstore")?;
    if db.stream(stream_id).await?.is_none() {
        bail!("no stream {stream_id}");
    }
    let renditions = db.renditions(stream_id).await?;
    if renditions.is_empty() {
        bail!("stream {stream_id} has no media yet");
    }
    let segments = db.segments(stream_id).await?;
    let mut summary = ExportSummary {
        stream_id: stream_id.to_string(),
        renditions: renditions.len(),
        files: 0,
        bytes: 0,
    };
    let mut write = |path: &Path, cid: &str| -> anyhow::Result<()> {
        let cid = parse_cid(cid)?;
        let bytes = blockstore
            .get_file(&cid)?
            .with_context(|| format!("{cid} is missing from the blockstore"))?;
        std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        summary.files += 1;
        summary.bytes += bytes.len() as u64;
        Ok(())
    };
    for rendition in &renditions {
        let dir = out.join(&rendition.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some(init) = &rendition.init_cid {
            write(&dir.join("init.mp4"), init)?;
        }
        let mut listed = Vec::new();
        for segment in segments.iter().filter(|s| s.rendition == rendition.name) {
            let uri = format!("{}.m4s", segment.sequence);
            write(&dir.join(&uri), &segment.cid)?;
            let new_init_uri = match &segment.init_cid {
                Some(init) => {
                    let name = streamweave_media::playlist::period_init_uri(segment.sequence);
                    write(&dir.join(&name), init)?;
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
        let media = crate::archive::vod_playlist(&listed, segment_duration_ms);
        std::fs::write(dir.join("index.m3u8"), media)?;
    }
    std::fs::write(
        out.join("master.m3u8"),
        crate::archive::master_playlist(&renditions),
    )?;
    std::fs::write(
        out.join(crate::archive::STREAM_FILE),
        crate::archive::stream_file(stream_id),
    )?;
    Ok(summary)
}
