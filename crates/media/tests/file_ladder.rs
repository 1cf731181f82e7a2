//! Uploaded files through the ladder with the real ffmpeg: a portrait
//! 10-bit HEVC source with 5.1 audio comes out as 8-bit H.264 renditions
//! scaled by its short side and stereo AAC, CMAF HLS cut at the same
//! instants; HDR is tone-mapped, a variable frame rate made constant, and a
//! transcode can be cancelled.

use std::path::{Path, PathBuf};
use std::process::Command;

use streamweave_media::ladder::{Rendition, TranscodeSettings, ladder_for_file};
use streamweave_media::probe::{SourceInfo, probe_file};
use streamweave_media::vod::{
    FileTranscode, TranscodeError, TranscodeProgress, rendition_files, transcode_file,
};

fn ffprobe_entry(path: &Path, entries: &str) -> String {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", entries, "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Makes `out` with ffmpeg from `args` (inputs and codecs).
fn make_source(args: &[&str], out: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(out)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "making {}", out.display());
}

/// Probes `stored` and its ladder (sources here are short).
async fn probe(stored: &Path, max_ms: u64) -> (SourceInfo, Vec<Rendition>) {
    let source = probe_file(Path::new("ffprobe"), stored, max_ms)
        .await
        .expect("probe");
    let ladder = ladder_for_file(&source);
    (source, ladder)
}

/// Transcodes `stored` into `out`, uncancelled; answers the last progress.
async fn transcode(
    stored: &Path,
    source: &SourceInfo,
    ladder: &[Rendition],
    out: &Path,
) -> TranscodeProgress {
    let (progress_tx, progress_rx) = tokio::sync::watch::channel(TranscodeProgress::default());
    let (_cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    transcode_file(
        FileTranscode {
            ffmpeg: Path::new("ffmpeg"),
            niceness: None,
            input: stored,
            source,
            renditions: ladder,
            settings: &TranscodeSettings::default(),
            out_dir: out,
        },
        &progress_tx,
        cancel_rx,
    )
    .await
    .expect("transcode");
    *progress_rx.borrow()
}

/// The init file and the first `segments` segments of `rendition` as one
/// playable file at `joined`.
fn join_rendition(out: &Path, rendition: &str, segments: usize, joined: PathBuf) -> PathBuf {
    let (init, files) = rendition_files(out, rendition).expect("files");
    let mut bytes = std::fs::read(init).expect("init");
    for segment in files.iter().take(segments) {
        bytes.extend(std::fs::read(segment).expect("segment"));
    }
    std::fs::write(&joined, bytes).expect("write");
    joined
}

#[tokio::test]
async fn a_portrait_ten_bit_file_becomes_the_ladder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = dir.path().join("stored.mkv");
    make_source(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=480x272:rate=50:duration=4",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=4",
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p10le",
            "-x265-params",
            "log-level=error",
            "-c:a",
            "aac",
            "-ac",
            "6",
            "-vf",
            "transpose=1",
        ],
        &stored,
    );
    let (source, ladder) = probe(&stored, 60_000).await;
    assert_eq!((source.width, source.height), (272, 480));
    let names: Vec<&str> = ladder.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["272p", "audio"],
        "never upscaled: one rung at the short side"
    );
    let out = dir.path().join("out");
    let done = transcode(&stored, &source, &ladder, &out).await;
    assert!(done.finished);
    assert_eq!(done.percent(), 100);
    let (init, segments) = rendition_files(&out, "272p").expect("files");
    assert!(init.exists());
    assert!(segments.len() >= 2);

    let playlist = std::fs::read_to_string(out.join("272p").join("index.m3u8")).expect("playlist");
    let media_s: f64 = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|l| l.trim_end_matches(',').parse::<f64>().ok())
        .sum();
    assert!((3.9..=4.1).contains(&media_s), "4 s of media: {playlist}");
    assert!(playlist.contains("#EXT-X-ENDLIST"));
    let video = join_rendition(&out, "272p", 1, dir.path().join("first.mp4"));
    assert_eq!(
        ffprobe_entry(&video, "stream=codec_name,width,height,pix_fmt"),
        "h264,272,480,yuv420p"
    );
    let audio = join_rendition(&out, "audio", 1, dir.path().join("audio.mp4"));
    assert_eq!(ffprobe_entry(&audio, "stream=codec_name,channels"), "aac,2");
}

#[tokio::test]
async fn a_transcode_can_be_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = dir.path().join("long.mp4");
    make_source(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30:duration=120",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "40",
        ],
        &stored,
    );
    let (source, ladder) = probe(&stored, 600_000).await;
    let out = dir.path().join("out");
    let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(TranscodeProgress::default());
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    let canceller = tokio::spawn(async move {
        // Cancel once the first progress report arrives.
        let _ = progress_rx.changed().await;
        let first = *progress_rx.borrow();
        cancel_tx.send_replace(true);
        first
    });
    let outcome = transcode_file(
        FileTranscode {
            ffmpeg: Path::new("ffmpeg"),
            niceness: None,
            input: &stored,
            source: &source,
            renditions: &ladder,
            settings: &TranscodeSettings::default(),
            out_dir: &out,
        },
        &progress_tx,
        cancel_rx,
    )
    .await;
    assert!(
        matches!(outcome, Err(TranscodeError::Cancelled)),
        "{outcome:?}"
    );
    let first = canceller.await.expect("canceller");
    assert!(first.percent() < 100);
    assert_eq!(first.duration_ms, 120_000);
}

#[tokio::test]
async fn an_hdr_source_is_tone_mapped_to_sdr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = dir.path().join("hdr.mkv");
    make_source(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=24:duration=3",
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p10le",
            "-x265-params",
            "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc",
            "-color_primaries",
            "bt2020",
            "-color_trc",
            "smpte2084",
            "-colorspace",
            "bt2020nc",
        ],
        &stored,
    );
    let (source, ladder) = probe(&stored, 60_000).await;
    assert!(source.hdr, "PQ transfer is HDR");
    let out = dir.path().join("out");
    transcode(&stored, &source, &ladder, &out).await;
    let joined = join_rendition(&out, "360p", 1, dir.path().join("first.mp4"));
    let probed = ffprobe_entry(&joined, "stream=codec_name,pix_fmt,color_transfer");
    assert!(probed.starts_with("h264,yuv420p"), "{probed}");
    assert!(
        !probed.contains("smpte2084"),
        "tone-mapped to SDR: {probed}"
    );
}

/// Presentation times of a file's video packets, in order.
fn video_packet_times(path: &Path) -> Vec<f64> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v"])
        .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let mut times: Vec<f64> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|t| t.trim_end_matches(',').parse().ok())
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

fn frame_gaps(times: &[f64]) -> (f64, f64) {
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let min = gaps.iter().copied().fold(f64::MAX, f64::min);
    let max = gaps.iter().copied().fold(0.0, f64::max);
    (min, max)
}

#[tokio::test]
async fn a_variable_frame_rate_becomes_constant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = dir.path().join("vfr.mp4");
    // Keep 7 frames of every 10: gaps of 1/30 s and 4/30 s.
    make_source(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30:duration=4",
            "-vf",
            "select='lt(mod(n\\,10)\\,7)'",
            "-fps_mode",
            "vfr",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
        &stored,
    );
    let (min, max) = frame_gaps(&video_packet_times(&stored));
    assert!(max > 2.0 * min, "the source is variable: {min}..{max}");
    let (source, ladder) = probe(&stored, 60_000).await;
    let out = dir.path().join("out");
    transcode(&stored, &source, &ladder, &out).await;
    let joined = join_rendition(&out, "240p", usize::MAX, dir.path().join("joined.mp4"));
    let (min, max) = frame_gaps(&video_packet_times(&joined));
    assert!(max - min < 0.002, "constant frame rate: gaps {min}..{max}");
}
