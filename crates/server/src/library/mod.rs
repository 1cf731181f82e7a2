//! The library: uploaded videos. A finished upload becomes a video through a
//! persistent job queue: ffprobe checks it, ffmpeg transcodes the ladder
//! (`media::vod`), every init file and segment goes to the blockstore under
//! its CID with its rows, and the video ends as a recording does, so
//! playback, the paid gate, archives and replicas treat it like one. At
//! most `--transcode-jobs` run at once; a restart starts queued jobs again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use streamweave_cas::{Blockstore, Cid};
use streamweave_media::ladder::{TranscodeSettings, ladder_for_file};
use streamweave_media::playlist::parse_media_playlist;
use streamweave_media::probe::probe_file;
use streamweave_media::vod::{FileTranscode, TranscodeError, TranscodeProgress, transcode_file};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{error, info, warn};

use crate::model::{SegmentRecord, now_ms};
use crate::store::{JobEnd, Store, VideoJob};
use crate::uploads::Uploads;

/// Jobs waiting to be picked up; senders wait when it is full.
const JOB_QUEUE: usize = 1024;

/// Settings of video processing.
#[derive(Debug, Clone)]
pub struct LibrarySettings {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    pub niceness: Option<u8>,
    pub transcode: TranscodeSettings,
    /// Transcodes at once.
    pub jobs: usize,
    /// Longest video accepted.
    pub max_video_ms: u64,
    /// Where transcodes write before their files are stored.
    pub work_dir: PathBuf,
}

/// A running job's progress and the way to cancel it.
struct Running {
    progress: watch::Receiver<TranscodeProgress>,
    cancel: watch::Sender<bool>,
}

/// The processing side of the library.
pub struct Library {
    store: Store,
    events: Arc<crate::live::events::Events>,
    blockstore: Arc<Blockstore>,
    uploads: Arc<Uploads>,
    settings: LibrarySettings,
    running: Mutex<HashMap<String, Running>>,
    queue: mpsc::Sender<VideoJob>,
    slots: Arc<Semaphore>,
}

/// Where a video being processed is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Processing {
    /// Waiting for a transcode slot.
    Queued,
    /// Transcoding.
    Transcoding(TranscodeProgress),
}

impl Library {
    /// Starts the workers; jobs queued before a restart start again.
    pub async fn start(
        store: Store,
        events: Arc<crate::live::events::Events>,
        blockstore: Arc<Blockstore>,
        uploads: Arc<Uploads>,
        settings: LibrarySettings,
    ) -> anyhow::Result<Arc<Library>> {
        let (queue, mut jobs) = mpsc::channel(JOB_QUEUE);
        let library = Arc::new(Library {
            store,
            events,
            blockstore,
            uploads,
            slots: Arc::new(Semaphore::new(settings.jobs.max(1))),
            settings,
            running: Mutex::new(HashMap::new()),
            queue,
        });
        let pending = library.store.queued_video_jobs().await?;
        if !pending.is_empty() {
            info!(jobs = pending.len(), "starting queued video jobs again");
        }
        let worker = library.clone();
        tokio::spawn(async move {
            for job in pending {
                worker.clone().spawn(job).await;
            }
            while let Some(job) = jobs.recv().await {
                worker.clone().spawn(job).await;
            }
        });
        Ok(library)
    }

    /// Queues a job the store already recorded.
    pub async fn enqueue(&self, job: VideoJob) {
        if self.queue.send(job).await.is_err() {
            error!("the video queue is closed");
        }
    }

    /// Where video `id` is, while it is being processed.
    pub fn processing(&self, id: &str) -> Option<Processing> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.get(id).map(|job| {
            let progress = *job.progress.borrow();
            if progress == TranscodeProgress::default() {
                Processing::Queued
            } else {
                Processing::Transcoding(progress)
            }
        })
    }

    /// Cancels video `id`'s job if it runs or waits; `true` if it did.
    pub fn cancel(&self, id: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .get(id)
            .map(|job| job.cancel.send_replace(true))
            .is_some()
    }

    async fn spawn(self: Arc<Self>, job: VideoJob) {
        let (progress_tx, progress_rx) = watch::channel(TranscodeProgress::default());
        let (cancel_tx, cancel_rx) = watch::channel(false);
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                job.stream_id.clone(),
                Running {
                    progress: progress_rx,
                    cancel: cancel_tx,
                },
            );
        let slots = self.slots.clone();
        // Progress reaches the video's events WebSocket, at most twice a second.
        let mut reports = progress_tx.subscribe();
        let events = self.events.clone();
        let watched = job.stream_id.clone();
        tokio::spawn(async move {
            while reports.changed().await.is_ok() {
                let progress = *reports.borrow_and_update();
                events.publish(
                    &watched,
                    crate::live::events::StreamEvent::Processing {
                        status: "processing".into(),
                        percent: progress.percent(),
                        speed_milli: progress.speed_milli,
                        eta_seconds: progress.eta_ms().map(|ms| ms.div_ceil(1000)),
                    },
                );
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let id = job.stream_id.clone();
            let began = std::time::Instant::now();
            let outcome = self.process(&job, &progress_tx, cancel_rx).await;
            match &outcome {
                Ok(duration_ms) => {
                    let wall_ms = began.elapsed().as_millis().max(1) as f64;
                    crate::metrics::metrics()
                        .transcode_realtime_factor
                        .observe(*duration_ms as f64 / wall_ms);
                }
                Err(JobError::Internal(_)) | Err(JobError::Refused(_)) => {
                    crate::metrics::metrics()
                        .media_failures
                        .get_or_create(&crate::metrics::KindLabels { kind: "video" })
                        .inc();
                }
                Err(JobError::Cancelled) => {}
            }
            let (end, duration_ms, reason) = match outcome {
                Ok(duration_ms) => (JobEnd::Done, Some(duration_ms), None),
                Err(JobError::Cancelled) => {
                    (JobEnd::Cancelled, None, Some("cancelled".to_string()))
                }
                Err(JobError::Refused(reason)) => (JobEnd::Failed, None, Some(reason)),
                Err(JobError::Internal(err)) => {
                    error!(video = %id, "processing failed: {err:#}");
                    (
                        JobEnd::Failed,
                        None,
                        Some("the server could not process the video".to_string()),
                    )
                }
            };
            crate::metrics::metrics()
                .videos_processed
                .get_or_create(&crate::metrics::OutcomeLabels {
                    outcome: match end {
                        JobEnd::Done => "ready",
                        JobEnd::Failed => "failed",
                        JobEnd::Cancelled => "cancelled",
                    }
                    .to_string(),
                })
                .inc();
            if let Err(err) = self
                .store
                .finish_video(&id, end, duration_ms, reason.as_deref(), now_ms())
                .await
            {
                error!(video = %id, %err, "recording the end of a video job failed");
            }
            // Logged once recorded: `ready` is what the API answers from here on.
            match end {
                JobEnd::Done => info!(video = %id, "video ready"),
                _ => {
                    warn!(video = %id, reason = reason.as_deref().unwrap_or(""), "video not processed")
                }
            }
            self.events.publish(
                &id,
                crate::live::events::StreamEvent::Processing {
                    status: if end == JobEnd::Done {
                        "ready"
                    } else {
                        "failed"
                    }
                    .into(),
                    percent: if end == JobEnd::Done { 100 } else { 0 },
                    speed_milli: None,
                    eta_seconds: None,
                },
            );
            // The upload has served its purpose either way.
            if let Err(err) = self.uploads.remove(&job.upload_id, &job.owner).await {
                warn!(video = %id, %err, "removing a processed upload");
            }
            let _ = tokio::fs::remove_dir_all(self.settings.work_dir.join(&id)).await;
            self.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
    }

    /// Probes, transcodes and stores one video; answers its duration.
    async fn process(
        &self,
        job: &VideoJob,
        progress: &watch::Sender<TranscodeProgress>,
        cancel: watch::Receiver<bool>,
    ) -> Result<u64, JobError> {
        if *cancel.borrow() {
            return Err(JobError::Cancelled);
        }
        let input = self
            .uploads
            .complete_file(&job.upload_id, &job.owner, now_ms())
            .map_err(|err| JobError::Refused(format!("the upload is not usable: {err}")))?;
        let source = probe_file(&self.settings.ffprobe, &input, self.settings.max_video_ms)
            .await
            .map_err(|err| JobError::Refused(err.to_string()))?;
        let ladder = ladder_for_file(&source);
        let out_dir = self.settings.work_dir.join(&job.stream_id);
        let _ = tokio::fs::remove_dir_all(&out_dir).await;
        let mut records = crate::live::rendition_records(&ladder, source.width, source.height);
        if source.is_portrait() {
            // Portrait rungs are scaled by their width (the short side).
            for record in &mut records {
                if let Some(rung) = record.height {
                    let height = (u64::from(source.height) * u64::from(rung)
                        / u64::from(source.width.max(1))) as u32;
                    record.width = Some(rung);
                    record.height = Some((height + 1) & !1);
                }
            }
        }
        self.store
            .set_video_renditions(&job.stream_id, (source.width, source.height), &records)
            .await
            .map_err(|err| JobError::Internal(err.into()))?;
        let transcode = transcode_file(
            FileTranscode {
                ffmpeg: &self.settings.ffmpeg,
                niceness: self.settings.niceness,
                input: &input,
                source: &source,
                renditions: &ladder,
                settings: &self.settings.transcode,
                out_dir: &out_dir,
            },
            progress,
            cancel,
        );
        tokio::pin!(transcode);
        // Segments are stored as ffmpeg lists them, so little is left to
        // store when it finishes.
        let mut stored: HashMap<String, usize> = HashMap::new();
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        let transcoded = loop {
            tokio::select! {
                done = &mut transcode => break done,
                _ = tick.tick() => {
                    for rendition in &ladder {
                        let count = stored.entry(rendition.name.clone()).or_insert(0);
                        if let Err(err) = self
                            .store_listed(&job.stream_id, &rendition.name, &out_dir, count, false)
                            .await
                        {
                            // Retried after ffmpeg ends, when every file is complete.
                            tracing::debug!(video = %job.stream_id, %err, "storing while transcoding");
                        }
                    }
                }
            }
        };
        let outcome = match transcoded {
            Ok(()) => Ok(()),
            Err(TranscodeError::Cancelled) => Err(JobError::Cancelled),
            Err(TranscodeError::Failed(reason)) => Err(JobError::Refused(reason)),
            Err(TranscodeError::Io(err)) => Err(JobError::Internal(err.into())),
            Err(other) => Err(JobError::Internal(anyhow::anyhow!("{other}"))),
        };
        let outcome = match outcome {
            Ok(()) => {
                let mut rest = Ok(());
                for rendition in &ladder {
                    let count = stored.entry(rendition.name.clone()).or_insert(0);
                    rest = self
                        .store_listed(&job.stream_id, &rendition.name, &out_dir, count, true)
                        .await;
                    if rest.is_err() {
                        break;
                    }
                }
                if rest.is_ok() {
                    // Every block on the disk before the video is ready.
                    let blockstore = self.blockstore.clone();
                    rest = tokio::task::spawn_blocking(move || blockstore.sync())
                        .await
                        .map_err(anyhow::Error::from)
                        .and_then(|synced| synced.map_err(anyhow::Error::from));
                }
                rest.map_err(JobError::Internal)
            }
            failed => failed,
        };
        if let Err(failed) = outcome {
            // A video that did not finish lists no media.
            if let Err(err) = self
                .store
                .set_video_renditions(&job.stream_id, (source.width, source.height), &[])
                .await
            {
                warn!(video = %job.stream_id, %err, "removing an unfinished video's media rows");
            }
            return Err(failed);
        }
        Ok(source.duration_ms)
    }

    /// Stores the segments of `rendition` that its playlist lists beyond the
    /// first `stored` (and, with the first, the init file), with their rows;
    /// `finished`: ffmpeg has ended, so every listed file is complete.
    async fn store_listed(
        &self,
        stream_id: &str,
        rendition: &str,
        out_dir: &std::path::Path,
        stored: &mut usize,
        finished: bool,
    ) -> anyhow::Result<()> {
        let dir = out_dir.join(rendition);
        let playlist = match tokio::fs::read(dir.join("index.m3u8")).await {
            Ok(playlist) => playlist,
            Err(err) if !finished && err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        let listed = parse_media_playlist(&playlist)?;
        if listed.segments.len() <= *stored {
            return Ok(());
        }
        if *stored == 0 {
            let init = Bytes::from(tokio::fs::read(dir.join("init.mp4")).await?);
            let init_size = init.len() as u64;
            let init_cid = self.put_file(init).await?;
            self.store
                .set_init(stream_id, rendition, &init_cid.to_string(), init_size)
                .await?;
        }
        // Segments are read, hashed and stored in parallel.
        let mut writes = tokio::task::JoinSet::new();
        for (sequence, segment) in listed.segments.iter().enumerate().skip(*stored) {
            let path = dir.join(&segment.uri);
            let blockstore = self.blockstore.clone();
            writes.spawn_blocking(move || -> anyhow::Result<(usize, u64, Cid)> {
                let bytes = std::fs::read(&path)?;
                // Flushed once when the transcode is done (`sync` below):
                // a flush per block would stall ffmpeg's own writes.
                let cid = blockstore.put_file_unsynced(&bytes)?;
                Ok((sequence, bytes.len() as u64, cid))
            });
        }
        let mut written = HashMap::new();
        while let Some(done) = writes.join_next().await {
            let (sequence, size, cid) = done??;
            written.insert(sequence, (size, cid));
        }
        let mut records = Vec::with_capacity(written.len());
        for (sequence, segment) in listed.segments.iter().enumerate().skip(*stored) {
            let (size, cid) = written
                .remove(&sequence)
                .context("a segment write did not report")?;
            records.push(SegmentRecord {
                rendition: rendition.to_string(),
                sequence: sequence as u64,
                duration_ms: segment.duration_ms,
                size,
                cid: cid.to_string(),
                init_cid: None,
            });
        }
        self.store
            .insert_segments(stream_id, records.iter(), now_ms())
            .await?;
        *stored = listed.segments.len();
        Ok(())
    }

    async fn put_file(&self, bytes: Bytes) -> anyhow::Result<Cid> {
        let blockstore = self.blockstore.clone();
        Ok(tokio::task::spawn_blocking(move || blockstore.put_file_unsynced(&bytes)).await??)
    }
}

/// Why a job did not produce a video.
enum JobError {
    Cancelled,
    /// The file, not the server: the reason is for the uploader.
    Refused(String),
    Internal(anyhow::Error),
}
