//! ffmpeg's fragmented MP4, as the live ladder writes it, cut into parts
//! and segments: every video segment starts with a keyframe, parts are
//! about the part duration, segments are their parts' bytes, and an init
//! file followed by a segment is media ffprobe reads, every frame of it.

use std::process::Command;

use streamweave_media::fmp4::{Cut, Fmp4Item, Fmp4Reader, Segmenter};

/// ffmpeg output of `args` (inputs and codecs) as fragmented MP4 on stdout.
fn fragmented(args: &[&str], part_us: u32) -> Vec<u8> {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(args)
        .args([
            "-f",
            "mp4",
            "-movflags",
            "+frag_keyframe+empty_moov+default_base_moof",
            "-frag_duration",
            &part_us.to_string(),
            "pipe:1",
        ])
        .output()
        .expect("ffmpeg");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The init file and every cut, reading the stream in uneven pieces.
fn cut(stream: &[u8], segment_ms: u32, video: bool) -> (Vec<u8>, Vec<Cut>) {
    let mut reader = Fmp4Reader::default();
    let mut init = Vec::new();
    let mut segmenter = None;
    let mut cuts = Vec::new();
    for chunk in stream.chunks(7919) {
        reader.push(chunk);
        while let Some(item) = reader.next_item().expect("valid fMP4") {
            match item {
                Fmp4Item::Init { bytes, timescale } => {
                    init = bytes.to_vec();
                    segmenter = Some(Segmenter::new(timescale, segment_ms, video));
                }
                Fmp4Item::Fragment(fragment) => {
                    cuts.extend(segmenter.as_mut().expect("init first").push(fragment));
                }
            }
        }
    }
    cuts.extend(segmenter.expect("init").finish().map(Cut::Segment));
    (init, cuts)
}

/// Packets ffprobe reads from `bytes`.
fn packets_in(bytes: &[u8]) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("media.mp4");
    std::fs::write(&path, bytes).expect("write");
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a packet count")
}

#[test]
fn video_is_cut_at_keyframes_into_parts_of_the_part_duration() {
    let stream = fragmented(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=30",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-force_key_frames",
            "expr:gte(t,n_forced*1)",
            "-sc_threshold",
            "0",
        ],
        250_000,
    );
    let (init, cuts) = cut(&stream, 1000, true);
    assert!(init.starts_with(&[0, 0, 0]) && &init[4..8] == b"ftyp");
    let mut segments = Vec::new();
    let mut parts_of_open: Vec<u8> = Vec::new();
    let mut part_count = 0;
    for cut in &cuts {
        match cut {
            Cut::Part(part) => {
                part_count += 1;
                // A video part of 250 ms at 30 fps: 8 frames (267 ms).
                assert!(
                    (200..=300).contains(&part.duration_ms),
                    "part {}.{} lasts {} ms",
                    part.sequence,
                    part.index,
                    part.duration_ms
                );
                assert_eq!(part.independent, part.index == 0, "{part:?}");
                parts_of_open.extend_from_slice(&part.bytes);
            }
            Cut::Segment(segment) => {
                assert_eq!(segment.bytes.to_vec(), parts_of_open, "segment = its parts");
                parts_of_open.clear();
                segments.push(segment.clone());
            }
        }
    }
    assert_eq!(
        segments.iter().map(|s| s.duration_ms).collect::<Vec<_>>(),
        [1000, 1000, 1000, 1000]
    );
    assert_eq!(
        part_count,
        segments.iter().map(|s| s.parts).sum::<u32>() as usize
    );
    let playable = [init.as_slice(), &segments[2].bytes].concat();
    assert_eq!(
        packets_in(&playable),
        30,
        "init + segment: a second of frames"
    );
}

#[test]
fn audio_is_cut_on_the_time_grid() {
    let stream = fragmented(
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "6",
            "-c:a",
            "aac",
            "-ac",
            "2",
        ],
        333_000,
    );
    let (init, cuts) = cut(&stream, 2000, false);
    let segments: Vec<_> = cuts
        .iter()
        .filter_map(|c| match c {
            Cut::Segment(s) => Some(s.clone()),
            Cut::Part(_) => None,
        })
        .collect();
    assert_eq!(segments.len(), 3, "{segments:?}");
    let mut end = 0;
    for (k, segment) in segments.iter().enumerate().take(2) {
        end += segment.duration_ms;
        let boundary = (k as u32 + 1) * 2000;
        assert!(end >= boundary && end < boundary + 400, "{segments:?}");
    }
    assert!(cuts.iter().all(|c| match c {
        Cut::Part(p) => p.independent,
        Cut::Segment(_) => true,
    }));
    let playable = [init.as_slice(), &segments[1].bytes].concat();
    // AAC frames of 1024 samples at 48 kHz.
    let frames = u64::from(segments[1].duration_ms) * 48 / 1024;
    assert!(packets_in(&playable).abs_diff(frames) <= 1, "{frames}");
}
