//! An uploaded file through the ladder with the real ffmpeg: a portrait
//! 10-bit HEVC source with 5.1 audio comes out as 8-bit H.264 renditions
//! scaled by its short side, stereo AAC, CMAF HLS cut at the same instants.

use std::path::Path;
use std::process::Command;

use streamweave_media::ladder::{TranscodeSettings, file_ffmpeg_args, ladder_for_file};
use streamweave_media::probe::probe_file;

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
    for rendition in &ladder {
        std::fs::create_dir_all(out.join(&rendition.name)).expect("dir");
    }
    let args = file_ffmpeg_args(
        &stored,
        &source,
        &ladder,
        &TranscodeSettings::default(),
        &out,
    );
    let output = Command::new("ffmpeg").args(&args).output().expect("ffmpeg");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let progress = String::from_utf8_lossy(&output.stdout);
    assert!(
        progress.contains("progress=end"),
        "progress is reported: {progress}"
    );

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
