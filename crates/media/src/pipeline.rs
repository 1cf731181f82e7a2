//! One live stream's transcode: FLV in, an ffmpeg ladder as a supervised
//! child, fMP4 segments out as [`PipelineEvent`]s.
//!
//! The pipeline waits for the source's codec headers, picks the ladder from
//! the source height, feeds ffmpeg's stdin, reads each rendition's
//! fragmented MP4 from a Unix socket as ffmpeg writes it, and reports every
//! init file, partial segment (about a third of a second, for LL-HLS) and
//! finished segment in order ([`crate::fmp4`] cuts them). If ffmpeg dies
//! or stops producing media, the pipeline kills it and finishes with the
//! cause; it always removes its work directory.

use std::collections::VecDeque;
use std::path::PathBuf;
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
use crate::fmp4::{Cut, Fmp4Item, Fmp4Reader, PartCut, Segmenter};
use crate::ladder::{self, Rendition, TranscodeSettings};
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
    /// A partial segment of a rendition's open segment (LL-HLS), reported
    /// as soon as ffmpeg wrote it; the segment follows once complete.
    Part {
        /// Rendition name.
        rendition: String,
        /// The part.
        part: PartCut,
    },
    /// Segments that finished, in order within each rendition (a segment
    /// is reported before the first part of the next).
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
    /// Duration, from the samples' durations.
    pub duration_ms: u32,
    /// How many parts it was served as while live.
    pub parts: u32,
    /// File bytes (its parts' bytes in order).
    pub bytes: Bytes,
    /// When ffmpeg finished writing it, to measure ingest latency.
    pub listed_at: std::time::SystemTime,
}

/// Output events queued between the socket readers and the supervisor.
const OUTPUT_EVENTS_MAX: usize = 64;

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

/// What the source looks like, from its first tags (or its feed's start).
struct Probe {
    /// What ffmpeg reads first.
    prelude: Prelude,
    metadata: SourceMetadata,
    video_size: Option<(u32, u32)>,
    has_audio: bool,
}

/// The start of the source, held while probing.
enum Prelude {
    /// The FLV tags read so far.
    Flv(Vec<MediaTag>),
    /// A Matroska feed's header.
    Matroska(Bytes),
}

impl Prelude {
    fn input(&self) -> ladder::LiveInput {
        match self {
            Prelude::Flv(_) => ladder::LiveInput::Flv,
            Prelude::Matroska(_) => ladder::LiveInput::Matroska,
        }
    }
}

async fn probe_source(
    config: &PipelineConfig,
    input: &mut mpsc::Receiver<IngestMessage>,
) -> Result<Option<Probe>, String> {
    let deadline = Instant::now() + config.probe_timeout;
    let mut tags = Vec::new();
    let mut probe = Probe {
        prelude: Prelude::Flv(Vec::new()),
        metadata: SourceMetadata::default(),
        video_size: None,
        has_audio: false,
    };
    let mut buffered_bytes = 0usize;
    let mut tags_since_video = 0usize;
    loop {
        if probe.video_size.is_some() && (probe.has_audio || tags_since_video >= AUDIO_GRACE_TAGS) {
            probe.prelude = Prelude::Flv(tags);
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
            IngestMessage::MatroskaStart(start) if tags.is_empty() => {
                probe.video_size = Some((start.width, start.height));
                probe.has_audio = start.has_audio;
                probe.prelude = Prelude::Matroska(start.header);
                return Ok(Some(probe));
            }
            IngestMessage::MatroskaStart(_) | IngestMessage::Matroska(_) => {
                return Err("the source mixed FLV and Matroska".into());
            }
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
                tags.push(tag);
                if buffered_bytes > PROBE_BUFFER_MAX_BYTES || tags.len() > PROBE_BUFFER_MAX_TAGS {
                    if probe.video_size.is_some() {
                        probe.prelude = Prelude::Flv(tags);
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
    tokio::fs::create_dir_all(&config.work_dir)
        .await
        .map_err(|err| format!("create work dir: {err}"))?;
    // ffmpeg reads `unix://{path}` as an absolute path whatever it is
    // given (`unix://work/x.sock` names `//work/x.sock`): a data directory
    // given relative to ours (the demo's `./streamweave-demo`) is made
    // absolute here.
    let work_dir = std::path::absolute(&config.work_dir)
        .map_err(|err| format!("resolve the work dir: {err}"))?;
    // One socket per rendition, listening before ffmpeg starts and connects.
    let (output_tx, output_rx) = mpsc::channel(OUTPUT_EVENTS_MAX);
    let mut readers = tokio::task::JoinSet::new();
    for rendition in &renditions {
        let path = ladder::live_output_socket(&work_dir, &rendition.name);
        let listener = tokio::net::UnixListener::bind(&path)
            .map_err(|err| format!("listen on {}: {err}", path.display()))?;
        readers.spawn(read_output(
            listener,
            rendition.name.clone(),
            matches!(rendition.kind, ladder::RenditionKind::Video { .. }),
            config.transcode.segment_duration_ms,
            output_tx.clone(),
        ));
    }
    drop(output_tx);
    let args = ladder::ffmpeg_args(
        probe.prelude.input(),
        &renditions,
        &config.transcode,
        &work_dir,
    );
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
    let open_outputs = renditions.len();
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
        outputs: output_rx,
        open_outputs,
        _readers: readers,
        events,
        stderr_tail,
    };
    let result = supervisor.drive(probe.prelude, input).await;
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

/// What one rendition's reader reports to the supervisor.
enum OutputEvent {
    Init {
        rendition: String,
        bytes: Bytes,
    },
    Part {
        rendition: String,
        part: PartCut,
    },
    Segment(SegmentOutput),
    /// ffmpeg closed the output (after its last segment).
    Ended,
    /// The output could not be read.
    Failed(String),
}

/// Bytes read from an output socket at a time.
const OUTPUT_READ_BYTES: usize = 256 * 1024;

/// Accepts ffmpeg's connection to one rendition's socket and turns its
/// fragmented MP4 into init, parts and segments.
async fn read_output(
    listener: tokio::net::UnixListener,
    rendition: String,
    video: bool,
    segment_duration_ms: u32,
    events: mpsc::Sender<OutputEvent>,
) {
    let outcome =
        read_output_stream(listener, &rendition, video, segment_duration_ms, &events).await;
    let last = match outcome {
        Ok(()) => OutputEvent::Ended,
        Err(reason) => OutputEvent::Failed(format!("{rendition}: {reason}")),
    };
    let _ = events.send(last).await;
}

async fn read_output_stream(
    listener: tokio::net::UnixListener,
    rendition: &str,
    video: bool,
    segment_duration_ms: u32,
    events: &mpsc::Sender<OutputEvent>,
) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let (mut stream, _) = listener
        .accept()
        .await
        .map_err(|err| format!("accept ffmpeg's output: {err}"))?;
    drop(listener);
    let mut reader = Fmp4Reader::default();
    let mut segmenter: Option<Segmenter> = None;
    let mut buffer = vec![0u8; OUTPUT_READ_BYTES];
    let send = |event: OutputEvent| async move {
        events
            .send(event)
            .await
            .map_err(|_| "platform stopped listening".to_string())
    };
    loop {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|err| format!("read ffmpeg's output: {err}"))?;
        if read == 0 {
            break;
        }
        reader.push(&buffer[..read]);
        while let Some(item) = reader.next_item().map_err(|err| err.to_string())? {
            match item {
                Fmp4Item::Init { bytes, timescale } => {
                    if segmenter.is_some() {
                        return Err("ffmpeg wrote a second init file".into());
                    }
                    segmenter = Some(Segmenter::new(timescale, segment_duration_ms, video));
                    send(OutputEvent::Init {
                        rendition: rendition.to_string(),
                        bytes,
                    })
                    .await?;
                }
                Fmp4Item::Fragment(fragment) => {
                    let Some(segmenter) = segmenter.as_mut() else {
                        return Err("fragment before the init file".into());
                    };
                    for cut in segmenter.push(fragment) {
                        send(output_event(rendition, cut)).await?;
                    }
                }
            }
        }
    }
    if reader.buffered_bytes() > 0 {
        warn!(
            rendition,
            bytes = reader.buffered_bytes(),
            "ffmpeg's output ended inside a box"
        );
    }
    if let Some(last) = segmenter.as_mut().and_then(Segmenter::finish) {
        send(output_event(rendition, Cut::Segment(last))).await?;
    }
    Ok(())
}

fn output_event(rendition: &str, cut: Cut) -> OutputEvent {
    match cut {
        Cut::Part(part) => OutputEvent::Part {
            rendition: rendition.to_string(),
            part,
        },
        Cut::Segment(segment) => OutputEvent::Segment(SegmentOutput {
            rendition: rendition.to_string(),
            sequence: segment.sequence,
            duration_ms: segment.duration_ms,
            parts: segment.parts,
            bytes: segment.bytes,
            listed_at: std::time::SystemTime::now(),
        }),
    }
}

struct Supervisor<'a> {
    config: &'a PipelineConfig,
    child: Child,
    stdin: Option<ChildStdin>,
    outputs: mpsc::Receiver<OutputEvent>,
    /// Outputs not ended yet.
    open_outputs: usize,
    /// The readers (aborted when the supervisor goes).
    _readers: tokio::task::JoinSet<()>,
    events: &'a mpsc::Sender<PipelineEvent>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// How long ffmpeg's outputs may take to close once it exited.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

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
        prelude: Prelude,
        input: &mut mpsc::Receiver<IngestMessage>,
    ) -> Result<(), String> {
        match prelude {
            Prelude::Flv(tags) => {
                self.write_stdin(&flv::file_header()).await?;
                for tag in &tags {
                    self.write_tag(tag).await?;
                }
            }
            Prelude::Matroska(header) => self.write_stdin(&header).await?,
        }
        let mut stall_check = tokio::time::interval(Duration::from_millis(250));
        stall_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_progress = Instant::now();
        let mut input_open = true;
        loop {
            tokio::select! {
                message = input.recv(), if input_open => match message {
                    Some(IngestMessage::Tag(tag)) => self.write_tag(&tag).await?,
                    Some(IngestMessage::Matroska(bytes)) => self.write_stdin(&bytes).await?,
                    Some(IngestMessage::Metadata(_)) => {}
                    Some(IngestMessage::MatroskaStart(_)) => {
                        return Err("the source started a second Matroska feed".into());
                    }
                    Some(IngestMessage::Abort(reason)) => return Err(reason),
                    None => {
                        // Publisher finished: close stdin so ffmpeg flushes the last segments.
                        input_open = false;
                        self.stdin = None;
                    }
                },
                status = self.child.wait() => {
                    let status = status.map_err(|err| format!("waiting for ffmpeg: {err}"))?;
                    // What ffmpeg wrote before it exited is still reported.
                    let drained = tokio::time::timeout(OUTPUT_DRAIN, async {
                        while self.open_outputs > 0 {
                            match self.outputs.recv().await {
                                Some(event) => {
                                    self.report(event).await?;
                                }
                                None => break,
                            }
                        }
                        Ok::<(), String>(())
                    })
                    .await;
                    let drained = match drained {
                        Ok(result) => result,
                        Err(_) => Err("ffmpeg's outputs did not close".to_string()),
                    };
                    if !input_open && status.success() {
                        return drained;
                    }
                    return Err(format!("ffmpeg exited ({status}) while live: {}", self.ffmpeg_said()));
                }
                event = self.outputs.recv(), if self.open_outputs > 0 => {
                    let Some(event) = event else {
                        return Err("ffmpeg's output readers stopped".into());
                    };
                    if self.report(event).await? {
                        last_progress = Instant::now();
                    }
                }
                _ = stall_check.tick() => {
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

    /// Passes one output's event on; `true` when it carried media.
    async fn report(&mut self, event: OutputEvent) -> Result<bool, String> {
        let event = match event {
            OutputEvent::Init { rendition, bytes } => PipelineEvent::Init { rendition, bytes },
            OutputEvent::Part { rendition, part } => PipelineEvent::Part { rendition, part },
            OutputEvent::Segment(segment) => PipelineEvent::Segments(vec![segment]),
            OutputEvent::Ended => {
                self.open_outputs = self.open_outputs.saturating_sub(1);
                return Ok(false);
            }
            OutputEvent::Failed(reason) => {
                return Err(format!("{reason} ({})", self.ffmpeg_said()));
            }
        };
        send(self.events, event).await?;
        Ok(true)
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
}

async fn send(events: &mpsc::Sender<PipelineEvent>, event: PipelineEvent) -> Result<(), String> {
    events
        .send(event)
        .await
        .map_err(|_| "platform stopped listening".to_string())
}
