//! Live orchestration: answers publish requests, runs one pipeline per live
//! stream, and stores what it produces (blockstore, database, media index).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use streamweave_cas::{Blockstore, Cid};
use streamweave_media::{
    IngestMessage, PipelineConfig, PipelineEvent, PublishDecision, PublishRequest, Rendition,
    RenditionKind, SegmentOutput, TranscodeSettings, run_pipeline,
};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::live::media_index::{FileCache, MediaIndex};
use crate::model::{RenditionRecord, SegmentRecord, StreamState, now_ms};
use crate::store::Store;

/// Messages buffered between a publisher and its ffmpeg.
const INGEST_QUEUE_MESSAGES: usize = 512;
/// Events buffered between a pipeline and storage.
const PIPELINE_EVENT_QUEUE: usize = 64;

/// Everything live ingest needs.
pub struct LiveHub {
    pub db: Store,
    pub blockstore: Arc<Blockstore>,
    pub index: Arc<MediaIndex>,
    pub cache: Arc<FileCache>,
    pub ffmpeg: PathBuf,
    pub work_root: PathBuf,
    pub transcode: TranscodeSettings,
    pub max_live_streams: usize,
    /// `nice` level of ffmpeg processes.
    pub transcode_niceness: Option<u8>,
    /// Where live state changes are announced.
    pub events: Arc<crate::live::events::Events>,
    /// Streams with a publisher right now (from accept to pipeline end).
    active: Mutex<HashSet<String>>,
}

impl LiveHub {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Store,
        blockstore: Arc<Blockstore>,
        index: Arc<MediaIndex>,
        cache: Arc<FileCache>,
        ffmpeg: PathBuf,
        work_root: PathBuf,
        transcode: TranscodeSettings,
        max_live_streams: usize,
    ) -> Self {
        LiveHub {
            db,
            blockstore,
            index,
            cache,
            ffmpeg,
            work_root,
            transcode,
            max_live_streams,
            transcode_niceness: None,
            events: Arc::default(),
            active: Mutex::new(HashSet::new()),
        }
    }

    /// Answers publish requests until the RTMP server stops.
    pub async fn run(self: Arc<Self>, mut requests: mpsc::Receiver<PublishRequest>) {
        while let Some(request) = requests.recv().await {
            let decision = self.clone().decide(&request.stream_key).await;
            match &decision {
                PublishDecision::Accept(_) => info!(peer = %request.peer, "publish accepted"),
                PublishDecision::Refuse(reason) => {
                    warn!(peer = %request.peer, %reason, "publish refused")
                }
            }
            // The connection may have gone meanwhile; then the pipeline's input just closes.
            let _ = request.reply.send(decision);
        }
    }

    async fn decide(self: Arc<Self>, stream_key: &str) -> PublishDecision {
        let stream = match self.db.stream_by_key(stream_key).await {
            Ok(Some(stream)) => stream,
            Ok(None) => return PublishDecision::Refuse("unknown stream key".into()),
            Err(err) => {
                error!(%err, "database error on publish");
                return PublishDecision::Refuse("temporarily unavailable".into());
            }
        };
        if stream.source == crate::model::StreamSource::Upload {
            return PublishDecision::Refuse("this key belongs to an uploaded video".into());
        }
        match stream.state {
            StreamState::Idle => {}
            StreamState::Live => {
                return PublishDecision::Refuse("the stream is already live".into());
            }
            StreamState::Ended => {
                return PublishDecision::Refuse("the stream has ended; create a new one".into());
            }
        }
        {
            let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
            if active.contains(&stream.id) {
                return PublishDecision::Refuse("the stream is already live".into());
            }
            if active.len() >= self.max_live_streams {
                return PublishDecision::Refuse("the server is at its live stream limit".into());
            }
            active.insert(stream.id.clone());
            crate::metrics::metrics()
                .live_streams
                .set(active.len() as i64);
        }
        let (input_tx, input_rx) = mpsc::channel::<IngestMessage>(INGEST_QUEUE_MESSAGES);
        let (events_tx, events_rx) = mpsc::channel(PIPELINE_EVENT_QUEUE);
        let mut config = PipelineConfig::new(
            self.ffmpeg.clone(),
            self.work_root.join(&stream.id),
            self.transcode.clone(),
        );
        config.niceness = self.transcode_niceness;
        tokio::spawn(run_pipeline(config, input_rx, events_tx));
        let paid = stream.access.is_gated();
        tokio::spawn(self.clone().store_events(stream.id, paid, events_rx));
        PublishDecision::Accept(input_tx)
    }

    /// Stores what a pipeline produces, in order.
    async fn store_events(
        self: Arc<Self>,
        stream_id: String,
        paid: bool,
        mut events: mpsc::Receiver<PipelineEvent>,
    ) {
        let mut live = false;
        let mut failure: Option<String> = None;
        while let Some(event) = events.recv().await {
            let result = match event {
                PipelineEvent::Started {
                    renditions,
                    source_width,
                    source_height,
                } => {
                    let records = rendition_records(&renditions, source_width, source_height);
                    match self
                        .db
                        .start_stream(
                            &stream_id,
                            now_ms(),
                            (source_width, source_height),
                            &records,
                        )
                        .await
                    {
                        Ok(true) => {
                            live = true;
                            self.index.set_live(&stream_id, paid, records);
                            self.events.publish(
                                &stream_id,
                                crate::live::events::StreamEvent::State {
                                    state: "live".into(),
                                },
                            );
                            info!(stream = %stream_id, "live");
                            Ok(())
                        }
                        Ok(false) => Err(anyhow::anyhow!("stream was not idle")),
                        Err(err) => Err(err.into()),
                    }
                }
                PipelineEvent::Init { rendition, bytes } => {
                    self.store_init(&stream_id, &rendition, bytes).await
                }
                PipelineEvent::Segments(segments) => {
                    self.store_segments(&stream_id, segments).await
                }
                PipelineEvent::Finished { error } => {
                    if failure.is_none() {
                        failure = error;
                    }
                    break;
                }
            };
            if let Err(err) = result {
                error!(stream = %stream_id, "storing media failed: {err:#}");
                failure = Some(format!("storing media failed: {err}"));
                // Dropping the receiver stops the pipeline, which kills ffmpeg.
                break;
            }
        }
        drop(events);
        if live {
            if let Err(err) = self
                .db
                .end_stream(&stream_id, now_ms(), failure.as_deref())
                .await
            {
                error!(stream = %stream_id, %err, "could not mark the stream ended");
            }
            self.index.set_ended(&stream_id);
            self.events.publish(
                &stream_id,
                crate::live::events::StreamEvent::State {
                    state: "ended".into(),
                },
            );
            match &failure {
                None => info!(stream = %stream_id, "ended"),
                Some(cause) => warn!(stream = %stream_id, %cause, "ended with an error"),
            }
        } else if let Some(cause) = &failure {
            warn!(stream = %stream_id, %cause, "publish failed before going live");
        }
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.remove(&stream_id);
        crate::metrics::metrics()
            .live_streams
            .set(active.len() as i64);
    }

    async fn put_file(&self, bytes: Bytes) -> anyhow::Result<Cid> {
        let blockstore = self.blockstore.clone();
        let stored = bytes.clone();
        let cid = tokio::task::spawn_blocking(move || blockstore.put_file(&stored)).await??;
        self.cache.insert(cid, bytes);
        Ok(cid)
    }

    async fn store_init(
        &self,
        stream_id: &str,
        rendition: &str,
        bytes: Bytes,
    ) -> anyhow::Result<()> {
        let size = bytes.len() as u64;
        let cid = self.put_file(bytes).await?;
        self.db
            .set_init(stream_id, rendition, &cid.to_string(), size)
            .await?;
        self.index.set_init(stream_id, rendition, cid, size);
        Ok(())
    }

    /// Stores a batch of segments: blocks written in parallel, one database
    /// commit for the batch, then listed for players.
    async fn store_segments(
        &self,
        stream_id: &str,
        segments: Vec<SegmentOutput>,
    ) -> anyhow::Result<()> {
        let mut writes = tokio::task::JoinSet::new();
        for (index, segment) in segments.iter().enumerate() {
            let blockstore = self.blockstore.clone();
            let bytes = segment.bytes.clone();
            writes.spawn_blocking(move || blockstore.put_file(&bytes).map(|cid| (index, cid)));
        }
        let mut cids = vec![None; segments.len()];
        while let Some(written) = writes.join_next().await {
            let (index, cid) = written??;
            cids[index] = Some(cid);
        }
        let mut records = Vec::with_capacity(segments.len());
        for (segment, cid) in segments.iter().zip(&cids) {
            let cid = cid.ok_or_else(|| anyhow::anyhow!("a segment write did not report"))?;
            self.cache.insert(cid, segment.bytes.clone());
            records.push((
                SegmentRecord {
                    rendition: segment.rendition.clone(),
                    sequence: segment.sequence,
                    duration_ms: segment.duration_ms,
                    size: segment.bytes.len() as u64,
                    cid: cid.to_string(),
                },
                cid,
            ));
        }
        self.db
            .insert_segments(stream_id, records.iter().map(|(r, _)| r), now_ms())
            .await?;
        for ((record, cid), segment) in records.iter().zip(&segments) {
            self.index.push_segment(stream_id, record, *cid);
            if let Ok(latency) = segment.listed_at.elapsed() {
                crate::metrics::metrics()
                    .ingest_to_playlist_seconds
                    .observe(latency.as_secs_f64());
                debug!(
                    target: "streamweave::ingest_latency",
                    stream = %stream_id,
                    rendition = %record.rendition,
                    sequence = record.sequence,
                    latency_us = latency.as_micros() as u64,
                    "segment listed"
                );
            }
        }
        Ok(())
    }
}

pub fn rendition_records(
    renditions: &[Rendition],
    source_width: u32,
    source_height: u32,
) -> Vec<RenditionRecord> {
    renditions
        .iter()
        .map(|rendition| {
            let (width, height) = match rendition.kind {
                RenditionKind::Video { height, .. } => {
                    // Same aspect ratio as the source, rounded to even as ffmpeg's `scale=-2:h` does.
                    let width = (u64::from(source_width) * u64::from(height)
                        / u64::from(source_height.max(1))) as u32;
                    let width = (width + 1) & !1;
                    (Some(width), Some(height))
                }
                RenditionKind::Audio { .. } => (None, None),
            };
            RenditionRecord {
                name: rendition.name.clone(),
                width,
                height,
                bandwidth_bps: rendition.bandwidth_bps,
                codecs: rendition.codecs.clone(),
                init_cid: None,
                init_size: None,
            }
        })
        .collect()
}
