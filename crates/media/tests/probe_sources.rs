//! ffprobe on unusual sources made by ffmpeg here: each is either accepted
//! with what the transcoder needs to know, or refused with a reason a person
//! understands.

use std::path::{Path, PathBuf};
use std::process::Command;

use streamweave_media::probe::{ProbeError, SourceInfo, probe_file};

const MAX_MS: u64 = 6 * 3600 * 1000;

fn make(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(&path)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "making {name}");
    path
}

async fn probe(path: &Path) -> Result<SourceInfo, ProbeError> {
    probe_file(Path::new("ffprobe"), path, MAX_MS).await
}

const PATTERN: [&str; 2] = ["-f", "lavfi"];

#[tokio::test]
async fn unusual_sources_are_read_or_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // A phone's portrait video: stored landscape, turned by its rotation.
    let landscape = make(
        d,
        "landscape.mp4",
        &[
            PATTERN[0],
            PATTERN[1],
            "-i",
            "testsrc2=size=640x360:rate=30:duration=1",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
        ],
    );
    let landscape = landscape.to_str().expect("utf-8");
    let portrait = make(
        d,
        "portrait.mp4",
        &[
            "-i",
            landscape,
            "-c",
            "copy",
            "-metadata:s:v:0",
            "rotate=90",
        ],
    );
    let info = probe(&portrait).await.expect("portrait");
    assert_eq!((info.width, info.height), (360, 640));
    assert!(info.is_portrait());
    assert_eq!(info.short_side(), 360);

    // VP9 and Opus in WebM.
    let webm = make(
        d,
        "clip.webm",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=1",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=1",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-c:a",
            "libopus",
        ],
    );
    let info = probe(&webm).await.expect("webm");
    assert_eq!(info.video_codec, "vp9");
    assert_eq!(info.audio_channels, Some(1));

    // 10-bit HEVC in Matroska, 5.1 audio.
    let hevc = make(
        d,
        "tenbit.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=24:duration=1",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=1",
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
        ],
    );
    let info = probe(&hevc).await.expect("hevc");
    assert_eq!(info.video_codec, "hevc");
    assert_eq!(info.pixel_format, "yuv420p10le");
    assert_eq!(info.audio_channels, Some(6));

    // No audio.
    let silent = make(
        d,
        "silent.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30:duration=1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    assert_eq!(probe(&silent).await.expect("silent").audio_channels, None);

    // Audio only.
    let song = make(
        d,
        "song.m4a",
        &["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac"],
    );
    assert_eq!(probe(&song).await, Err(ProbeError::NoVideoStream));

    // A truncated MP4 (the index at the end is cut off).
    let whole = make(
        d,
        "whole.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30:duration=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let bytes = std::fs::read(&whole).expect("read");
    let truncated = d.join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    match probe(&truncated).await {
        Err(ProbeError::NotAVideo(reason)) => assert!(reason.contains("truncated"), "{reason}"),
        other => panic!("truncated file: {other:?}"),
    }

    // A text file named .mp4.
    let text = d.join("notes.mp4");
    std::fs::write(&text, "these are my notes, not a film\n".repeat(50)).expect("write");
    assert!(matches!(probe(&text).await, Err(ProbeError::NotAVideo(_))));

    // Too long for the limit.
    assert!(matches!(
        probe_file(Path::new("ffprobe"), &silent, 500).await,
        Err(ProbeError::TooLong { .. })
    ));
}
