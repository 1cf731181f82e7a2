//! Live orchestration: answers publish requests, runs one pipeline per live
//! stream, and stores what it produces (blockstore, database, media index).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use streamweave_cas::{Blockstore, Cid};
use streamweave_media::fmp4::PartCut;
use streamweave_media::{
    IngestMessage, PipelineConfig, PipelineEvent, PublishDecision, PublishRequest, Rendition,
    RenditionKind, SegmentOutput, TranscodeSettings, run_pipeline,
};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, error, info, warn};

use crate::live::media_index::{FileCache, MediaIndex, PartEntry};
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
    /// In a cluster, how long a live stream's ingest may be silent before
    /// its publisher may continue it here, and before it is ended; `None`
    /// on a single node (it ends its interrupted streams when it starts).
    pub takeover: Option<Takeover>,
    /// Streams with a publisher right now (from accept to pipeline end),
    /// each with the signal that another node took it over.
    active: Mutex<HashMap<String, Arc<Notify>>>,
}

/// When a cluster's nodes take over a silent stream's ingest.
#[derive(Debug, Clone, Copy)]
pub struct Takeover {
    /// Silence after which a publisher may continue the stream on another node.
    pub resume_after_ms: u64,
    /// Silence after which the stream is ended.
    pub end_after_ms: u64,
}

impl Takeover {
    /// How often a node tells the others its ingest is alive.
    fn heartbeat(&self) -> Duration {
        Duration::from_millis((self.resume_after_ms / 4).clamp(100, 2000))
    }
}

/// Where a continued stream's media goes on: per rendition, the next
/// sequence number, and the init file its first new segment needs.
#[derive(Default)]
struct Continuation {
    next_sequence: HashMap<String, u64>,
    pending_init: HashMap<String, Cid>,
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
            takeover: None,
            active: Mutex::new(HashMap::new()),
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
        let resuming = match stream.state {
            StreamState::Idle => false,
            StreamState::Live => {
                if self.is_active(&stream.id) {
                    return PublishDecision::Refuse("the stream is already live".into());
                }
                let Some(takeover) = self.takeover else {
                    return PublishDecision::Refuse("the stream is already live".into());
                };
                // A node that could not take the publisher must not claim
                // the stream (its silence would start over).
                if self.active.lock().unwrap_or_else(|p| p.into_inner()).len()
                    >= self.max_live_streams
                {
                    return PublishDecision::Refuse(
                        "the server is at its live stream limit".into(),
                    );
                }
                let now = now_ms();
                match self
                    .db
                    .claim_silent_stream(&stream.id, now, now - takeover.resume_after_ms as i64)
                    .await
                {
                    Ok(true) => true,
                    Ok(false) => {
                        return PublishDecision::Refuse(
                            "the stream is already live (if its server just stopped, try again in a few seconds)"
                                .into(),
                        );
                    }
                    Err(err) => {
                        error!(%err, "database error on publish");
                        return PublishDecision::Refuse("temporarily unavailable".into());
                    }
                }
            }
            StreamState::Ended => {
                return PublishDecision::Refuse("the stream has ended; create a new one".into());
            }
        };
        let lost = Arc::new(Notify::new());
        {
            let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
            if active.contains_key(&stream.id) {
                return PublishDecision::Refuse("the stream is already live".into());
            }
            if active.len() >= self.max_live_streams {
                return PublishDecision::Refuse("the server is at its live stream limit".into());
            }
            active.insert(stream.id.clone(), lost.clone());
            crate::metrics::metrics()
                .live_streams
                .set(active.len() as i64);
        }
        // A continued stream keeps its ladder and numbering.
        let continuation = if resuming {
            match self.continuation(&stream.id).await {
                Ok(found) => Some(found),
                Err(err) => {
                    error!(stream = %stream.id, "reading a stream to continue: {err:#}");
                    self.release(&stream.id);
                    return PublishDecision::Refuse("temporarily unavailable".into());
                }
            }
        } else {
            None
        };
        let (input_tx, input_rx) = mpsc::channel::<IngestMessage>(INGEST_QUEUE_MESSAGES);
        let (events_tx, events_rx) = mpsc::channel(PIPELINE_EVENT_QUEUE);
        let mut config = PipelineConfig::new(
            self.ffmpeg.clone(),
            self.work_root.join(&stream.id),
            self.transcode.clone(),
        );
        config.niceness = self.transcode_niceness;
        if let Some((ladder, _)) = &continuation {
            config.ladder = Some(ladder.clone());
            info!(stream = %stream.id, "continuing a live stream whose ingest node went silent");
        }
        tokio::spawn(run_pipeline(config, input_rx, events_tx));
        let paid = stream.access.is_gated();
        tokio::spawn(self.clone().store_events(
            stream.id,
            paid,
            events_rx,
            continuation.map(|(_, continuation)| continuation),
            lost,
        ));
        PublishDecision::Accept(input_tx)
    }

    fn is_active(&self, stream_id: &str) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(stream_id)
    }

    fn release(&self, stream_id: &str) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.remove(stream_id);
        crate::metrics::metrics()
            .live_streams
            .set(active.len() as i64);
    }

    /// The ladder a stream started with and where its renditions go on.
    async fn continuation(
        &self,
        stream_id: &str,
    ) -> anyhow::Result<(Vec<Rendition>, Continuation)> {
        let ladder: Vec<Rendition> = self
            .db
            .renditions(stream_id)
            .await?
            .iter()
            .filter_map(|r| streamweave_media::ladder::rendition_named(&r.name))
            .collect();
        anyhow::ensure!(!ladder.is_empty(), "the stream has no ladder");
        let next_sequence = self
            .db
            .next_sequences(stream_id)
            .await?
            .into_iter()
            .collect();
        Ok((
            ladder,
            Continuation {
                next_sequence,
                pending_init: HashMap::new(),
            },
        ))
    }

    /// In a cluster: tells the other nodes this node's ingest is alive,
    /// stops pipelines another node took over, and ends live streams whose
    /// ingest stayed silent (their node died and the publisher did not
    /// come back). Runs until the process ends.
    pub async fn watch_ingest(self: Arc<Self>) {
        let Some(takeover) = self.takeover else {
            return;
        };
        let mut beat = tokio::time::interval(takeover.heartbeat());
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sweep_every = Duration::from_millis((takeover.end_after_ms / 4).clamp(500, 15_000));
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            beat.tick().await;
            let ids: Vec<String> = self
                .active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned()
                .collect();
            if !ids.is_empty() {
                match self.db.heartbeat_ingest(&ids, now_ms()).await {
                    Ok(lost) => {
                        for id in lost {
                            let signal = self
                                .active
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get(&id)
                                .cloned();
                            if let Some(signal) = signal {
                                warn!(stream = %id, "another node continues this stream: stopping here");
                                signal.notify_one();
                            }
                        }
                    }
                    Err(err) => warn!(%err, "ingest heartbeat"),
                }
            }
            if last_sweep.elapsed() >= sweep_every {
                last_sweep = tokio::time::Instant::now();
                self.end_silent_streams(takeover.end_after_ms).await;
            }
        }
    }

    async fn end_silent_streams(&self, end_after_ms: u64) {
        let silent_since = now_ms() - end_after_ms as i64;
        let silent = match self.db.silent_streams(silent_since).await {
            Ok(silent) => silent,
            Err(err) => {
                warn!(%err, "looking for silent live streams");
                return;
            }
        };
        for id in silent {
            if self.is_active(&id) {
                continue;
            }
            match self.db.end_silent_stream(&id, now_ms(), silent_since).await {
                Ok(true) => {
                    warn!(stream = %id, "ended: its ingest stayed silent");
                    self.index.set_ended(&id);
                    self.events.publish(
                        &id,
                        crate::live::events::StreamEvent::State {
                            state: "ended".into(),
                        },
                    );
                }
                Ok(false) => {}
                Err(err) => warn!(stream = %id, %err, "ending a silent stream"),
            }
        }
    }

    /// Stores what a pipeline produces, in order.
    async fn store_events(
        self: Arc<Self>,
        stream_id: String,
        paid: bool,
        mut events: mpsc::Receiver<PipelineEvent>,
        mut continuation: Option<Continuation>,
        lost: Arc<Notify>,
    ) {
        let mut live = false;
        let mut taken_over = false;
        let mut failure: Option<String> = None;
        loop {
            let event = tokio::select! {
                event = events.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
                () = lost.notified() => {
                    taken_over = true;
                    break;
                }
            };
            let result = match event {
                PipelineEvent::Started { .. } if continuation.is_some() => {
                    // Already live, with its ladder: the media goes on.
                    live = true;
                    Ok(())
                }
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
                PipelineEvent::Init { rendition, bytes } => match continuation.as_mut() {
                    Some(continued) if continued.next_sequence.contains_key(&rendition) => {
                        match self.put_file(bytes).await {
                            Ok(cid) => {
                                continued.pending_init.insert(rendition, cid);
                                Ok(())
                            }
                            Err(err) => Err(err),
                        }
                    }
                    _ => self.store_init(&stream_id, &rendition, bytes).await,
                },
                PipelineEvent::Part { rendition, part } => {
                    self.store_part(&stream_id, &rendition, part, continuation.as_ref())
                        .await
                }
                PipelineEvent::Segments(mut segments) => {
                    let mut starts = HashMap::new();
                    if let Some(continued) = continuation.as_mut() {
                        for segment in &mut segments {
                            let next = continued
                                .next_sequence
                                .get(&segment.rendition)
                                .copied()
                                .unwrap_or(0);
                            segment.sequence += next;
                            if let Some(init) = continued.pending_init.remove(&segment.rendition) {
                                starts.insert(segment.rendition.clone(), init);
                            }
                        }
                    }
                    self.store_segments(&stream_id, segments, starts).await
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
        if taken_over {
            // Another node ingests it now: the stream goes on there.
            info!(stream = %stream_id, "handed over to another node");
        } else if live {
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
            if failure.is_some() {
                crate::metrics::metrics()
                    .media_failures
                    .get_or_create(&crate::metrics::KindLabels { kind: "live" })
                    .inc();
            }
            match &failure {
                None => info!(stream = %stream_id, "ended"),
                Some(cause) => warn!(stream = %stream_id, %cause, "ended with an error"),
            }
        } else if let Some(cause) = &failure {
            warn!(stream = %stream_id, %cause, "publish failed before going live");
        }
        self.release(&stream_id);
    }

    async fn put_file(&self, bytes: Bytes) -> anyhow::Result<Cid> {
        let blockstore = self.blockstore.clone();
        let stored = bytes.clone();
        let cid = tokio::task::spawn_blocking(move || blockstore.put_file(&stored)).await??;
        self.cache.insert(cid, bytes);
        Ok(cid)
    }

    /// Stores a partial segment and lists it for LL-HLS players (a
    /// continued stream's first new segment is listed only once complete:
    /// it starts a new period). Its blocks are not flushed to the disk: a
    /// part is listed only until its segment is (whose blocks are flushed,
    /// a part's among them if they coincide), no row refers to it, and a
    /// node that restarts lists none of the parts it had. Each rendition
    /// cuts several parts a segment: flushing each one put that many
    /// flushes ahead of every segment.
    async fn store_part(
        &self,
        stream_id: &str,
        rendition: &str,
        mut part: PartCut,
        continuation: Option<&Continuation>,
    ) -> anyhow::Result<()> {
        if let Some(continued) = continuation {
            if continued.pending_init.contains_key(rendition) {
                return Ok(());
            }
            part.sequence += continued.next_sequence.get(rendition).copied().unwrap_or(0);
        }
        let blockstore = self.blockstore.clone();
        let stored = part.bytes.clone();
        let cid =
            tokio::task::spawn_blocking(move || blockstore.put_file_unsynced(&stored)).await??;
        self.cache.insert(cid, part.bytes);
        self.index.push_part(
            stream_id,
            rendition,
            PartEntry {
                sequence: part.sequence,
                index: part.index,
                duration_ms: part.duration_ms,
                offset_ms: part.offset_ms,
                independent: part.independent,
                ends_segment: part.ends_segment,
                cid,
            },
        );
        Ok(())
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
    /// `starts`: renditions whose source restarted with the first of their
    /// segments here, with the init file it needs.
    async fn store_segments(
        &self,
        stream_id: &str,
        segments: Vec<SegmentOutput>,
        mut starts: HashMap<String, Cid>,
    ) -> anyhow::Result<()> {
        let started = std::time::SystemTime::now();
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
                    init_cid: starts.remove(&segment.rendition).map(|c| c.to_string()),
                },
                cid,
            ));
        }
        let written = std::time::SystemTime::now();
        self.db
            .insert_segments(stream_id, records.iter().map(|(r, _)| r), now_ms())
            .await?;
        let committed = std::time::SystemTime::now();
        let between = |from: std::time::SystemTime, to: std::time::SystemTime| {
            to.duration_since(from).unwrap_or_default().as_micros() as u64
        };
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
                    waited_us = between(segment.listed_at, started),
                    blocks_us = between(started, written),
                    commit_us = between(written, committed),
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
