//! Transcoding an uploaded file: one ffmpeg run of [`crate::ladder::file_ffmpeg_args`],
//! its `-progress` reports turned into [`TranscodeProgress`] (percent,
//! speed, time left), cancellable, with the reason of a failure.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;

use crate::ladder::{Rendition, TranscodeSettings, file_ffmpeg_args};
use crate::probe::SourceInfo;

/// Where a transcode is.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TranscodeProgress {
    /// Media time done, in milliseconds.
    pub done_ms: u64,
    /// Of the source's duration.
    pub duration_ms: u64,
    /// Media seconds per wall second, in thousandths (1000 = real time).
    pub speed_milli: Option<u32>,
    /// ffmpeg said it finished.
    pub finished: bool,
}

impl TranscodeProgress {
    /// Whole percent done (0 to 100).
    pub fn percent(&self) -> u8 {
        if self.finished {
            return 100;
        }
        if self.duration_ms == 0 {
            return 0;
        }
        (self.done_ms.min(self.duration_ms) * 100 / self.duration_ms) as u8
    }

    /// Wall milliseconds left at the current speed.
    pub fn eta_ms(&self) -> Option<u64> {
        let speed = u64::from(self.speed_milli?.max(1));
        Some(self.duration_ms.saturating_sub(self.done_ms) * 1000 / speed)
    }
}

/// Folds one `key=value` line of ffmpeg's `-progress` output into `progress`;
/// answers true at the end of a report block (`progress=continue|end`).
pub fn apply_progress_line(progress: &mut TranscodeProgress, line: &str) -> bool {
    let Some((key, value)) = line.trim().split_once('=') else {
        return false;
    };
    match key {
        // Despite its name, out_time_ms is in microseconds.
        "out_time_us" | "out_time_ms" => {
            if let Ok(us) = value.parse::<u64>() {
                progress.done_ms = us / 1000;
            }
        }
        "speed" => {
            progress.speed_milli = value
                .trim_end_matches('x')
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(|s| (s * 1000.0).round().min(f64::from(u32::MAX)) as u32);
        }
        "progress" => {
            progress.finished = value == "end";
            return true;
        }
        _ => {}
    }
    false
}

/// Why a transcode did not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranscodeError {
    /// Cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// ffmpeg failed; the reason names where in the media it stopped.
    #[error("{0}")]
    Failed(String),
    #[error("ffmpeg: {0}")]
    Io(#[from] std::io::Error),
}

/// One file to transcode.
#[derive(Debug, Clone, Copy)]
pub struct FileTranscode<'a> {
    /// The ffmpeg executable.
    pub ffmpeg: &'a Path,
    /// Runs ffmpeg under `nice` at this level, like live transcodes.
    pub niceness: Option<u8>,
    /// The uploaded file.
    pub input: &'a Path,
    /// What ffprobe found in it.
    pub source: &'a SourceInfo,
    /// The ladder ([`crate::ladder::ladder_for_file`]).
    pub renditions: &'a [Rendition],
    pub settings: &'a TranscodeSettings,
    /// Outputs go to `out_dir/{rendition}/`.
    pub out_dir: &'a Path,
}

/// Runs the file ladder of `job`, publishing progress on `progress`, until
/// done, failed or `cancel` turns true.
pub async fn transcode_file(
    job: FileTranscode<'_>,
    progress: &watch::Sender<TranscodeProgress>,
    mut cancel: watch::Receiver<bool>,
) -> Result<(), TranscodeError> {
    let FileTranscode {
        ffmpeg,
        niceness,
        input,
        source,
        renditions,
        settings,
        out_dir,
    } = job;
    for rendition in renditions {
        tokio::fs::create_dir_all(out_dir.join(&rendition.name)).await?;
    }
    let args = file_ffmpeg_args(input, source, renditions, settings, out_dir);
    let mut command = match niceness {
        Some(level) => {
            let mut nice = tokio::process::Command::new("nice");
            nice.arg("-n").arg(level.to_string()).arg(ffmpeg);
            nice
        }
        None => tokio::process::Command::new(ffmpeg),
    };
    let mut child = command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| TranscodeError::Failed("ffmpeg's output was not piped".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| TranscodeError::Failed("ffmpeg's errors were not piped".into()))?;
    // The last 16 KiB of what ffmpeg said, for the failure's reason.
    let said = tokio::spawn(async move {
        let mut tail = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Ok(read) = stderr.read(&mut buffer).await {
            if read == 0 {
                break;
            }
            tail.extend_from_slice(&buffer[..read]);
            if tail.len() > 16 * 1024 {
                tail.drain(..tail.len() - 16 * 1024);
            }
        }
        String::from_utf8_lossy(&tail).into_owned()
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut current = TranscodeProgress {
        duration_ms: source.duration_ms,
        ..TranscodeProgress::default()
    };
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) => {
                    if apply_progress_line(&mut current, &line) {
                        progress.send_replace(current);
                    }
                }
                None => break,
            },
            changed = cancel.changed() => {
                if changed.is_err() || *cancel.borrow() {
                    let _ = child.kill().await;
                    return Err(TranscodeError::Cancelled);
                }
            }
        }
    }
    let status = child.wait().await?;
    let said = said.await.unwrap_or_default();
    if !status.success() || !current.finished {
        let last = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no error output")
            .trim();
        return Err(TranscodeError::Failed(format!(
            "transcoding stopped near {}.{:03} s: {last}",
            current.done_ms / 1000,
            current.done_ms % 1000
        )));
    }
    Ok(())
}

/// The HLS files a finished transcode left for `rendition`, in order:
/// the init file and the segments (`seg_0.m4s`, `seg_1.m4s`, ...).
pub fn rendition_files(
    out_dir: &Path,
    rendition: &str,
) -> std::io::Result<(PathBuf, Vec<PathBuf>)> {
    let dir = out_dir.join(rendition);
    let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let number = name
                .strip_prefix("seg_")?
                .strip_suffix(".m4s")?
                .parse()
                .ok()?;
            Some((number, path))
        })
        .collect();
    segments.sort();
    Ok((
        dir.join("init.mp4"),
        segments.into_iter().map(|(_, p)| p).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_blocks_fold_into_percent_speed_and_eta() {
        let mut progress = TranscodeProgress {
            duration_ms: 10_000,
            ..TranscodeProgress::default()
        };
        let block = "frame=50\nfps=0.0\nout_time_us=2500000\nout_time_ms=2500000\nspeed=2.5x\nprogress=continue\n";
        let mut ends = 0;
        for line in block.lines() {
            if apply_progress_line(&mut progress, line) {
                ends += 1;
            }
        }
        assert_eq!(ends, 1);
        assert_eq!(progress.done_ms, 2500);
        assert_eq!(progress.percent(), 25);
        assert_eq!(progress.speed_milli, Some(2500));
        assert_eq!(progress.eta_ms(), Some(3000));
        assert!(!progress.finished);
        apply_progress_line(&mut progress, "speed=N/A");
        assert_eq!(progress.eta_ms(), None);
        apply_progress_line(&mut progress, "out_time_us=N/A");
        assert_eq!(progress.done_ms, 2500, "unknown values keep the last");
        assert!(apply_progress_line(&mut progress, "progress=end"));
        assert_eq!(progress.percent(), 100);
    }
}
