//! An uploaded file through the ladder with the real ffmpeg: a portrait
//! 10-bit HEVC source with 5.1 audio comes out as 8-bit H.264 renditions
//! scaled by its short side, stereo AAC, CMAF HLS cut at the same instants.

use std::path::Path;
use std::process::Command;

use streamweave_media::ladder::{TranscodeSettings, ladder_for_file};
use streamweave_media::probe::probe_file;
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

#[tokio::test]
async fn a_portrait_ten_bit_file_becomes_the_ladder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = dir.path().join("stored.mkv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=480x272:rate=50:duration=4",
        ])
        .args(["-f", "lavfi", "-i", "sine=duration=4"])
        .args([
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p10le",
        ])
        .args(["-x265-params", "log-level=error", "-c:a", "aac", "-ac", "6"])
        .args(["-vf", "transpose=1"])
        .arg(&stored)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let source = probe_file(Path::new("ffprobe"), &stored, 60_000)
        .await
        .expect("probe");
    assert_eq!((source.width, source.height), (272, 480));
    let ladder = ladder_for_file(&source);
    let names: Vec<&str> = ladder.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["272p", "audio"],
        "never upscaled: one rung at the short side"
    );
    let out = dir.path().join("out");
    let (progress_tx, progress_rx) = tokio::sync::watch::channel(TranscodeProgress::default());
    let (_cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    transcode_file(
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
    .await
    .expect("transcode");
    let done = *progress_rx.borrow();
    assert!(done.finished);
    assert_eq!(done.percent(), 100);
    let (init, segments) = rendition_files(&out, "272p").expect("files");
    assert!(init.exists());
    assert!(segments.len() >= 2);

    let video = out.join("272p");
    let playlist = std::fs::read_to_string(video.join("index.m3u8")).expect("playlist");
    let media_s: f64 = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|l| l.trim_end_matches(',').parse::<f64>().ok())
        .sum();
    assert!((3.9..=4.1).contains(&media_s), "4 s of media: {playlist}");
    assert!(playlist.contains("#EXT-X-ENDLIST"));
    let first = video.join("seg_0.m4s");
    let joined = dir.path().join("first.mp4");
    let mut bytes = std::fs::read(video.join("init.mp4")).expect("init");
    bytes.extend(std::fs::read(&first).expect("segment"));
    std::fs::write(&joined, bytes).expect("write");
    assert_eq!(
        ffprobe_entry(&joined, "stream=codec_name,width,height,pix_fmt"),
        "h264,272,480,yuv420p"
    );
    let audio = out.join("audio");
    let mut bytes = std::fs::read(audio.join("init.mp4")).expect("init");
    bytes.extend(std::fs::read(audio.join("seg_0.m4s")).expect("segment"));
    let joined = dir.path().join("audio.mp4");
    std::fs::write(&joined, bytes).expect("write");
    assert_eq!(
        ffprobe_entry(&joined, "stream=codec_name,channels"),
        "aac,2"
    );
}

#[tokio::test]
async fn a_transcode_can_be_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = dir.path().join("long.mp4");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30:duration=120",
        ])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-crf", "40"])
        .arg(&stored)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let source = probe_file(Path::new("ffprobe"), &stored, 600_000)
        .await
        .expect("probe");
    let ladder = ladder_for_file(&source);
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
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=24:duration=3",
        ])
        .args([
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p10le",
        ])
        .args([
            "-x265-params",
            "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc",
        ])
        .args(["-color_primaries", "bt2020", "-color_trc", "smpte2084"])
        .args(["-colorspace", "bt2020nc"])
        .arg(&stored)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let source = probe_file(Path::new("ffprobe"), &stored, 60_000)
        .await
        .expect("probe");
    assert!(source.hdr, "PQ transfer is HDR");
    let ladder = ladder_for_file(&source);
    let out = dir.path().join("out");
    let (progress_tx, _progress_rx) = tokio::sync::watch::channel(TranscodeProgress::default());
    let (_cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    transcode_file(
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
    .await
    .expect("transcode");
    let (init, segments) = rendition_files(&out, "360p").expect("files");
    let mut bytes = std::fs::read(init).expect("init");
    bytes.extend(std::fs::read(&segments[0]).expect("segment"));
    let joined = dir.path().join("first.mp4");
    std::fs::write(&joined, bytes).expect("write");
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
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30:duration=4",
        ])
        .args(["-vf", "select='lt(mod(n\\,10)\\,7)'", "-fps_mode", "vfr"])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&stored)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let (min, max) = frame_gaps(&video_packet_times(&stored));
    assert!(max > 2.0 * min, "the source is variable: {min}..{max}");
    let source = probe_file(Path::new("ffprobe"), &stored, 60_000)
        .await
        .expect("probe");
    let ladder = ladder_for_file(&source);
    let out = dir.path().join("out");
    let (progress_tx, _progress_rx) = tokio::sync::watch::channel(TranscodeProgress::default());
    let (_cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    transcode_file(
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
    .await
    .expect("transcode");
    let (init, segments) = rendition_files(&out, "240p").expect("files");
    let mut bytes = std::fs::read(init).expect("init");
    for segment in &segments {
        bytes.extend(std::fs::read(segment).expect("segment"));
    }
    let joined = dir.path().join("joined.mp4");
    std::fs::write(&joined, bytes).expect("write");
    let (min, max) = frame_gaps(&video_packet_times(&joined));
    assert!(max - min < 0.002, "constant frame rate: gaps {min}..{max}");
}
