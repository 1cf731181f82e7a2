//! One live stream's transcode: FLV in, an ffmpeg ladder as a supervised
//! child, fMP4 segments out as [`PipelineEvent`]s.
//!
//! The pipeline waits for the source's codec headers, picks the ladder from
//! the source height, feeds ffmpeg's stdin, watches ffmpeg's HLS output
//! (inotify, with a periodic rescan as a safety net) and reports every init
//! file and finished segment in order. If ffmpeg dies or stops producing
//! segments, the pipeline kills it and finishes with the cause; it always
//! removes its work directory.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h264_reader::avcc::AvcDecoderConfigurationRecord;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::nal::{Nal, RefNal};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::flv::{self, AudioTagInfo, MediaTag, TagKind, VideoTagInfo};
use crate::ladder::{self, Rendition, TranscodeSettings};
use crate::playlist;
use crate::rtmp::{IngestMessage, SourceMetadata};

/// Settings of a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The ffmpeg executable.
    pub ffmpeg_path: PathBuf,
    /// A directory of this stream's own; created, and removed at the end.
    pub work_dir: PathBuf,
    /// Segment duration and encoder settings.
    pub transcode: TranscodeSettings,
    /// How long the source may take to send its codec headers.
    pub probe_timeout: Duration,
    /// ffmpeg is considered stalled when it produces no segment for this long
    /// while input keeps arriving.
    pub stall_timeout: Duration,
    /// Run ffmpeg under `nice -n N`, so delivery and ingest keep the CPU
    /// they need when transcoding saturates it. `None` runs it as is.
    pub niceness: Option<u8>,
    /// The ladder to produce whatever the source's height (a stream
    /// continued from a new source keeps its ladder); `None` picks it from
    /// the source, never upscaling.
    pub ladder: Option<Vec<Rendition>>,
}

impl PipelineConfig {
    /// Defaults for `work_dir`, with the stall timeout scaled to the segment duration.
    pub fn new(ffmpeg_path: PathBuf, work_dir: PathBuf, transcode: TranscodeSettings) -> Self {
        let segment = Duration::from_millis(u64::from(transcode.segment_duration_ms));
        PipelineConfig {
            ffmpeg_path,
            work_dir,
            transcode,
            probe_timeout: Duration::from_secs(10),
            stall_timeout: (segment * 5).max(Duration::from_secs(15)),
            niceness: None,
            ladder: None,
        }
    }
}

/// What a pipeline reports, in order.
#[derive(Debug, Clone)]
pub enum PipelineEvent {
    /// ffmpeg started with this ladder.
    Started {
        /// Renditions, video highest first, audio last.
        renditions: Vec<Rendition>,
        /// Source size in pixels.
        source_width: u32,
        /// Source height in pixels.
        source_height: u32,
    },
    /// A rendition's init file (before its first segment).
    Init {
        /// Rendition name.
        rendition: String,
        /// File bytes.
        bytes: Bytes,
    },
    /// Segments that finished since the last event, across renditions (so
    /// the platform can store them together), in order within each rendition.
    Segments(Vec<SegmentOutput>),
    /// The pipeline is over; `error` says why when it did not end normally.
    Finished {
        /// The cause of an abnormal end.
        error: Option<String>,
    },
}

/// A finished segment.
#[derive(Debug, Clone)]
pub struct SegmentOutput {
    /// Rendition name.
    pub rendition: String,
    /// 0-based sequence number within the rendition.
    pub sequence: u64,
    /// Duration from ffmpeg's playlist.
    pub duration_ms: u32,
    /// File bytes.
    pub bytes: Bytes,
    /// When ffmpeg listed the segment (its playlist's modification time),
    /// to measure ingest latency.
    pub listed_at: std::time::SystemTime,
}

/// Largest amount of media buffered while waiting for codec headers.
const PROBE_BUFFER_MAX_BYTES: usize = 16 * 1024 * 1024;
const PROBE_BUFFER_MAX_TAGS: usize = 4096;
/// After the video header, how many more tags to wait for an audio header.
const AUDIO_GRACE_TAGS: usize = 200;

/// Runs a pipeline to its end. Always sends `Finished` last (unless the
/// receiver of `events` is gone).
pub async fn run_pipeline(
    config: PipelineConfig,
    mut input: mpsc::Receiver<IngestMessage>,
    events: mpsc::Sender<PipelineEvent>,
) {
    let outcome = run(&config, &mut input, &events).await;
    if let Err(err) = tokio::fs::remove_dir_all(&config.work_dir).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        warn!(dir = %config.work_dir.display(), %err, "could not remove work dir");
    }
    let error = outcome.err();
    if let Some(error) = &error {
        warn!(%error, "pipeline ended with an error");
    }
    let _ = events.send(PipelineEvent::Finished { error }).await;
}

/// What the source looks like, from its first tags.
struct Probe {
    tags: Vec<MediaTag>,
    metadata: SourceMetadata,
    video_size: Option<(u32, u32)>,
    has_audio: bool,
}

async fn probe_source(
    config: &PipelineConfig,
    input: &mut mpsc::Receiver<IngestMessage>,
) -> Result<Option<Probe>, String> {
    let deadline = Instant::now() + config.probe_timeout;
    let mut probe = Probe {
        tags: Vec::new(),
        metadata: SourceMetadata::default(),
        video_size: None,
        has_audio: false,
    };
    let mut buffered_bytes = 0usize;
    let mut tags_since_video = 0usize;
    loop {
        if probe.video_size.is_some() && (probe.has_audio || tags_since_video >= AUDIO_GRACE_TAGS) {
            return Ok(Some(probe));
        }
        let message = match tokio::time::timeout_at(deadline, input.recv()).await {
            Err(_) => return Err("no H.264 video header within the probe timeout".into()),
            Ok(None) => return Ok(None),
            Ok(Some(message)) => message,
        };
        match message {
            IngestMessage::Abort(reason) => return Err(reason),
            IngestMessage::Metadata(metadata) => probe.metadata = metadata,
            IngestMessage::Tag(tag) => {
                buffered_bytes += tag.body.len();
                if probe.video_size.is_some() {
                    tags_since_video += 1;
                }
                match tag.kind {
                    TagKind::Video => {
                        if flv::classify_video(&tag.body) == VideoTagInfo::AvcSequenceHeader {
                            probe.video_size = Some(source_size(&tag.body, &probe.metadata)?);
                        }
                    }
                    TagKind::Audio => {
                        if flv::classify_audio(&tag.body) == AudioTagInfo::AacSequenceHeader {
                            probe.has_audio = true;
                        }
                    }
                    TagKind::Script => {}
                }
                probe.tags.push(tag);
                if buffered_bytes > PROBE_BUFFER_MAX_BYTES
                    || probe.tags.len() > PROBE_BUFFER_MAX_TAGS
                {
                    if probe.video_size.is_some() {
                        return Ok(Some(probe));
                    }
                    return Err("no H.264 video header at the start of the stream".into());
                }
            }
        }
    }
}

/// The source size from the SPS in the AVC sequence header, falling back to
/// the announced metadata.
fn source_size(sequence_header: &[u8], metadata: &SourceMetadata) -> Result<(u32, u32), String> {
    let from_sps = sequence_header
        .get(5..)
        .and_then(|record| AvcDecoderConfigurationRecord::try_from(record).ok())
        .and_then(|record| {
            record
                .sequence_parameter_sets()
                .next()?
                .ok()
                .map(<[u8]>::to_vec)
        })
        .and_then(|sps| {
            let nal = RefNal::new(&sps, &[], true);
            SeqParameterSet::from_bits(nal.rbsp_bits()).ok()
        })
        .and_then(|sps| sps.pixel_dimensions().ok());
    match (from_sps, metadata.width, metadata.height) {
        (Some(size), _, _) => Ok(size),
        (None, Some(width), Some(height)) => Ok((width, height)),
        _ => Err("could not read the video size from the H.264 header".into()),
    }
}

async fn run(
    config: &PipelineConfig,
    input: &mut mpsc::Receiver<IngestMessage>,
    events: &mpsc::Sender<PipelineEvent>,
) -> Result<(), String> {
    let Some(probe) = probe_source(config, input).await? else {
        return Ok(()); // the publisher left before sending media
    };
    let (source_width, source_height) = probe.video_size.unwrap_or_default();
    if source_width == 0 || source_height == 0 || source_width > 8192 || source_height > 8192 {
        return Err(format!(
            "unsupported source size {source_width}x{source_height}"
        ));
    }
    let mut renditions = config
        .ladder
        .clone()
        .unwrap_or_else(|| ladder::ladder_for_source(source_height));
    if !probe.has_audio {
        renditions.retain(|r| r.name != ladder::AUDIO_RENDITION);
    }
    for rendition in &renditions {
        tokio::fs::create_dir_all(config.work_dir.join(&rendition.name))
            .await
            .map_err(|err| format!("create work dir: {err}"))?;
    }
    let args = ladder::ffmpeg_args(&renditions, &config.transcode, &config.work_dir);
    debug!(?args, "starting ffmpeg");
    let mut command = match config.niceness {
        Some(niceness) => {
            let mut nice = Command::new("nice");
            nice.arg("-n")
                .arg(niceness.to_string())
                .arg(&config.ffmpeg_path);
            nice
        }
        None => Command::new(&config.ffmpeg_path),
    };
    let mut child = command
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("could not start {}: {err}", config.ffmpeg_path.display()))?;
    info!(
        pid = child.id(),
        source = %format!("{source_width}x{source_height}"),
        ladder = ?renditions.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        "transcoding"
    );
    let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(collect_stderr(stderr, stderr_tail.clone()));
    }
    let Some(stdin) = child.stdin.take() else {
        return Err("ffmpeg stdin unavailable".into());
    };
    let names: Vec<String> = renditions.iter().map(|r| r.name.clone()).collect();
    if events
        .send(PipelineEvent::Started {
            renditions,
            source_width,
            source_height,
        })
        .await
        .is_err()
    {
        return Err("platform stopped listening".into());
    }

    let mut supervisor = Supervisor {
        config,
        child,
        stdin: Some(stdin),
        outputs: names.into_iter().map(OutputWatch::new).collect(),
        events,
        stderr_tail,
    };
    let result = supervisor.drive(probe.tags, input).await;
    // Whatever happened, never leave the child behind.
    let _ = supervisor.child.start_kill();
    let _ = supervisor.child.wait().await;
    result
}

const STDERR_TAIL_LINES: usize = 20;

async fn collect_stderr(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        debug!(target: "ffmpeg", "{line}");
        // A poisoned lock only means another task panicked mid-push; the tail is still usable.
        let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// Tracks what of one rendition's output has been reported.
struct OutputWatch {
    name: String,
    init_sent: bool,
    segments_sent: usize,
}

impl OutputWatch {
    fn new(name: String) -> Self {
        OutputWatch {
            name,
            init_sent: false,
            segments_sent: 0,
        }
    }
}

struct Supervisor<'a> {
    config: &'a PipelineConfig,
    child: Child,
    stdin: Option<ChildStdin>,
    outputs: Vec<OutputWatch>,
    events: &'a mpsc::Sender<PipelineEvent>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Supervisor<'_> {
    fn ffmpeg_said(&self) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tail.iter()
            .rev()
            .take(3)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ")
    }

    async fn drive(
        &mut self,
        first_tags: Vec<MediaTag>,
        input: &mut mpsc::Receiver<IngestMessage>,
    ) -> Result<(), String> {
        self.write_stdin(&flv::file_header()).await?;
        for tag in &first_tags {
            self.write_tag(tag).await?;
        }
        let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
        let _watcher = watch_dir(&self.config.work_dir, wake_tx);
        let mut rescan = tokio::time::interval(Duration::from_millis(250));
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_progress = Instant::now();
        let mut input_open = true;
        loop {
            tokio::select! {
                message = input.recv(), if input_open => match message {
                    Some(IngestMessage::Tag(tag)) => self.write_tag(&tag).await?,
                    Some(IngestMessage::Metadata(_)) => {}
                    Some(IngestMessage::Abort(reason)) => {
                        self.scan().await?;
                        return Err(reason);
                    }
                    None => {
                        // Publisher finished: close stdin so ffmpeg flushes the last segments.
                        input_open = false;
                        self.stdin = None;
                    }
                },
                status = self.child.wait() => {
                    let status = status.map_err(|err| format!("waiting for ffmpeg: {err}"))?;
                    self.scan().await?;
                    if !input_open && status.success() {
                        return Ok(());
                    }
                    return Err(format!("ffmpeg exited ({status}) while live: {}", self.ffmpeg_said()));
                }
                _ = wake_rx.recv() => {
                    if self.scan().await? { last_progress = Instant::now(); }
                }
                _ = rescan.tick() => {
                    if self.scan().await? { last_progress = Instant::now(); }
                    let limit = if input_open { self.config.stall_timeout } else { self.config.stall_timeout * 2 };
                    if last_progress.elapsed() > limit {
                        return Err(format!(
                            "ffmpeg stalled: no segment for {} s ({})",
                            last_progress.elapsed().as_secs(),
                            self.ffmpeg_said()
                        ));
                    }
                }
            }
        }
    }

    async fn write_tag(&mut self, tag: &MediaTag) -> Result<(), String> {
        let Some(bytes) = flv::encode_tag(tag) else {
            return Err("media message larger than FLV allows".into());
        };
        self.write_stdin(&bytes).await
    }

    async fn write_stdin(&mut self, bytes: &[u8]) -> Result<(), String> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Ok(());
        };
        match tokio::time::timeout(self.config.stall_timeout, stdin.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(format!(
                "ffmpeg stopped reading its input ({err}): {}",
                self.ffmpeg_said()
            )),
            Err(_) => Err(format!(
                "ffmpeg stalled: input blocked for {} s",
                self.config.stall_timeout.as_secs()
            )),
        }
    }

    /// Reports new init files and segments; `true` when something new was found.
    async fn scan(&mut self) -> Result<bool, String> {
        let mut batch = Vec::new();
        let mut done_files = Vec::new();
        for index in 0..self.outputs.len() {
            let dir = self.config.work_dir.join(&self.outputs[index].name);
            let playlist_path = dir.join("index.m3u8");
            let listed = match tokio::fs::read(&playlist_path).await {
                Ok(bytes) => playlist::parse_media_playlist(&bytes)
                    .map_err(|err| format!("ffmpeg wrote an unreadable playlist: {err}"))?,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(format!("read playlist: {err}")),
            };
            let listed_at = tokio::fs::metadata(&playlist_path)
                .await
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| std::time::SystemTime::now());
            let output = &mut self.outputs[index];
            if !output.init_sent
                && let Some(init) = &listed.init_uri
            {
                let bytes = read_output(&dir, init).await?;
                output.init_sent = true;
                send(
                    self.events,
                    PipelineEvent::Init {
                        rendition: output.name.clone(),
                        bytes,
                    },
                )
                .await?;
            }
            for segment in listed.segments.iter().skip(output.segments_sent) {
                let bytes = read_output(&dir, &segment.uri).await?;
                let sequence = output.segments_sent as u64;
                output.segments_sent += 1;
                batch.push(SegmentOutput {
                    rendition: output.name.clone(),
                    sequence,
                    duration_ms: segment.duration_ms,
                    bytes,
                    listed_at,
                });
                done_files.push(dir.join(&segment.uri));
            }
        }
        if batch.is_empty() {
            return Ok(false);
        }
        send(self.events, PipelineEvent::Segments(batch)).await?;
        // Handed to the platform; the work copies are no longer needed.
        for path in done_files {
            let _ = tokio::fs::remove_file(path).await;
        }
        Ok(true)
    }
}

async fn send(events: &mpsc::Sender<PipelineEvent>, event: PipelineEvent) -> Result<(), String> {
    events
        .send(event)
        .await
        .map_err(|_| "platform stopped listening".to_string())
}

/// Reads a file ffmpeg named in its playlist, refusing names that leave the directory.
async fn read_output(dir: &Path, name: &str) -> Result<Bytes, String> {
    if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return Err(format!("unexpected file name in ffmpeg playlist: {name:?}"));
    }
    tokio::fs::read(dir.join(name))
        .await
        .map(Bytes::from)
        .map_err(|err| format!("read {name}: {err}"))
}

/// Wakes the supervisor when ffmpeg writes into the work dir. Returns the
/// watcher (dropping it stops watching), or `None` when inotify is not
/// available; the periodic rescan covers that case.
fn watch_dir(dir: &Path, wake: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event
                .paths
                .iter()
                .any(|path| path.extension().is_some_and(|ext| ext == "m3u8"))
        {
            // A full channel already holds a wake-up; coalescing is the point.
            let _ = wake.try_send(());
        }
    })
    .ok()?;
    watcher.watch(dir, RecursiveMode::Recursive).ok()?;
    Some(watcher)
}
