//! Frames as WebRTC delivers them (H.264 access units in Annex B, VP8
//! frames) through `WebrtcFeed`: the Matroska it writes is what ffprobe
//! reads, frame for frame at the RTP timing, and the live pipeline ladders
//! it into segments like an RTMP publish.

use std::process::Command;

use streamweave_media::webrtc_feed::{FeedVideoCodec, WebrtcFeed};
use streamweave_media::{IngestMessage, PipelineConfig, PipelineEvent, TranscodeSettings};

const FRAMES: u64 = 90; // 3 s at 30 fps

fn ffmpeg_output(args: &[&str]) -> Vec<u8> {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-frames:v", &FRAMES.to_string()])
        .args(args)
        .arg("pipe:1")
        .output()
        .expect("ffmpeg");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// H.264 access units (Annex B, each starting at its access unit delimiter).
fn h264_frames() -> Vec<Vec<u8>> {
    let stream = ffmpeg_output(&[
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-g",
        "30",
        "-pix_fmt",
        "yuv420p",
        "-bsf:v",
        "h264_metadata=aud=insert",
        "-f",
        "h264",
    ]);
    let delimiter = [0u8, 0, 0, 1, 9];
    let starts: Vec<usize> = stream
        .windows(delimiter.len())
        .enumerate()
        .filter(|(_, w)| *w == delimiter)
        .map(|(at, _)| at)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            stream[start..starts.get(i + 1).copied().unwrap_or(stream.len())].to_vec()
        })
        .collect()
}

/// VP8 frames out of an IVF file.
fn vp8_frames() -> Vec<Vec<u8>> {
    let ivf = ffmpeg_output(&[
        "-c:v",
        "libvpx",
        "-g",
        "30",
        "-deadline",
        "realtime",
        "-f",
        "ivf",
    ]);
    let mut frames = Vec::new();
    let mut at = 32; // file header
    while at + 12 <= ivf.len() {
        let size = u32::from_le_bytes(ivf[at..at + 4].try_into().expect("4 bytes")) as usize;
        frames.push(ivf[at + 12..at + 12 + size].to_vec());
        at += 12 + size;
    }
    frames
}

/// The feed's messages for `frames` at 30 fps on a 90 kHz clock starting
/// at an arbitrary RTP time, the first frame arriving 500 ms in.
fn feed(codec: FeedVideoCodec, frames: &[Vec<u8>]) -> Vec<IngestMessage> {
    let mut feed = WebrtcFeed::new(None);
    let mut messages = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let i = i as u64;
        messages.extend(
            feed.push_video(
                codec,
                1_234_567 + i * 3000,
                90_000,
                500 + i * 33,
                true,
                frame,
            )
            .expect("a usable frame"),
        );
    }
    assert!(!feed.wants_keyframe());
    messages
}

fn matroska_bytes(messages: &[IngestMessage]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for message in messages {
        match message {
            IngestMessage::MatroskaStart(start) => {
                assert_eq!((start.width, start.height), (640, 360));
                bytes.extend_from_slice(&start.header);
            }
            IngestMessage::Matroska(more) => bytes.extend_from_slice(more),
            other => panic!("unexpected {other:?}"),
        }
    }
    bytes
}

/// (codec, width, height, packets, last packet's time in ms) as ffprobe reads them.
fn probe(bytes: &[u8]) -> (String, u32, u32, u64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("feed.mkv");
    std::fs::write(&path, bytes).expect("write");
    let stream = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-show_entries"])
        .arg("stream=codec_name,width,height,nb_read_packets")
        .args(["-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&stream.stdout).trim().to_string();
    let fields: Vec<&str> = text.split(',').collect();
    assert_eq!(fields.len(), 4, "ffprobe said {text:?}");
    let packets = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let last_ms = String::from_utf8_lossy(&packets.stdout)
        .lines()
        .filter_map(|line| line.trim().parse::<f64>().ok())
        .fold(0.0f64, f64::max)
        * 1000.0;
    (
        fields[0].to_string(),
        fields[1].parse().expect("width"),
        fields[2].parse().expect("height"),
        fields[3].parse().expect("packets"),
        last_ms.round() as u64,
    )
}

#[test]
fn h264_frames_become_matroska_ffprobe_reads_at_their_rtp_times() {
    let frames = h264_frames();
    assert_eq!(frames.len() as u64, FRAMES);
    let (codec, width, height, packets, last_ms) =
        probe(&matroska_bytes(&feed(FeedVideoCodec::H264, &frames)));
    assert_eq!((codec.as_str(), width, height), ("h264", 640, 360));
    assert_eq!(packets, FRAMES);
    // The first frame at its arrival (500 ms), then 1/30 s apart by the RTP clock.
    assert_eq!(last_ms, 500 + (FRAMES - 1) * 1000 / 30);
}

#[test]
fn vp8_frames_become_matroska_ffprobe_reads() {
    let frames = vp8_frames();
    assert_eq!(frames.len() as u64, FRAMES);
    let (codec, width, height, packets, _) =
        probe(&matroska_bytes(&feed(FeedVideoCodec::Vp8, &frames)));
    assert_eq!((codec.as_str(), width, height), ("vp8", 640, 360));
    assert_eq!(packets, FRAMES);
}

#[tokio::test]
async fn the_live_pipeline_ladders_a_matroska_feed() {
    let messages = feed(FeedVideoCodec::Vp8, &vp8_frames());
    let work = tempfile::tempdir().expect("tempdir");
    let config = PipelineConfig::new(
        "ffmpeg".into(),
        work.path().join("stream"),
        TranscodeSettings {
            segment_duration_ms: 1000,
            ..TranscodeSettings::default()
        },
    );
    let (input, input_rx) = tokio::sync::mpsc::channel(16);
    let (events_tx, mut events) = tokio::sync::mpsc::channel(64);
    tokio::spawn(streamweave_media::run_pipeline(config, input_rx, events_tx));
    tokio::spawn(async move {
        for message in messages {
            if input.send(message).await.is_err() {
                return;
            }
        }
    });
    let mut ladder = Vec::new();
    let mut segments = 0;
    loop {
        match events.recv().await.expect("events until Finished") {
            PipelineEvent::Started {
                renditions,
                source_width,
                source_height,
            } => {
                assert_eq!((source_width, source_height), (640, 360));
                ladder = renditions.into_iter().map(|r| r.name).collect();
            }
            PipelineEvent::Segments(done) => segments += done.len(),
            PipelineEvent::Finished { error } => {
                assert_eq!(error, None);
                break;
            }
            PipelineEvent::Init { .. } | PipelineEvent::Part { .. } => {}
        }
    }
    // No audio track: video renditions only, at or below the source.
    assert_eq!(ladder, ["360p"]);
    assert!(segments >= 3, "{segments} segments of 3 s at 1 s each");
}
