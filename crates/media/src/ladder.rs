//! The adaptive bitrate ladder: which renditions a source gets, and the
//! ffmpeg arguments that produce them.

use std::path::Path;

/// One rung of the ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// Name used in paths and playlists (`720p`, `audio`).
    pub name: String,
    /// What the rendition carries.
    pub kind: RenditionKind,
    /// Peak bandwidth in bits per second, as advertised in the master playlist.
    pub bandwidth_bps: u64,
    /// RFC 6381 codec string (`avc1.64001f`, `mp4a.40.2`).
    pub codecs: String,
}

/// Video with a size, or the audio rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenditionKind {
    /// H.264 video of this height (width follows the source's aspect ratio).
    Video {
        /// Output height in pixels.
        height: u32,
        /// Target video bitrate in kbit/s.
        video_bitrate_kbps: u32,
        /// H.264 level times ten (31 for level 3.1).
        level: u8,
    },
    /// AAC-LC stereo audio.
    Audio {
        /// Target audio bitrate in kbit/s.
        audio_bitrate_kbps: u32,
    },
}

/// The standard rungs, highest first: (height, video kbit/s, H.264 level).
const VIDEO_RUNGS: [(u32, u32, u8); 4] = [
    (1080, 5000, 41),
    (720, 2800, 31),
    (480, 1400, 31),
    (360, 800, 30),
];

/// Name of the audio rendition.
pub const AUDIO_RENDITION: &str = "audio";
const AUDIO_BITRATE_KBPS: u32 = 128;

/// The ladder for a source of `source_height` pixels: every standard rung at
/// or below it (never upscaled), plus audio. A source smaller than the lowest
/// rung gets one rung at its own (even) height.
pub fn ladder_for_source(source_height: u32) -> Vec<Rendition> {
    let mut rungs: Vec<Rendition> = VIDEO_RUNGS
        .iter()
        .filter(|(height, _, _)| *height <= source_height)
        .map(|&(height, kbps, level)| video_rendition(height, kbps, level))
        .collect();
    if rungs.is_empty() {
        let height = (source_height.max(2)) & !1;
        rungs.push(video_rendition(height, 500, 30));
    }
    rungs.push(Rendition {
        name: AUDIO_RENDITION.to_string(),
        kind: RenditionKind::Audio {
            audio_bitrate_kbps: AUDIO_BITRATE_KBPS,
        },
        bandwidth_bps: u64::from(AUDIO_BITRATE_KBPS) * 1000 * 11 / 10,
        codecs: "mp4a.40.2".to_string(),
    });
    rungs
}

/// The rendition a ladder of ours names `name` (`720p`, `audio`), as
/// [`ladder_for_source`] makes it: so a stream continued from a new source
/// keeps the ladder it started with. `None` for a name we never give.
pub fn rendition_named(name: &str) -> Option<Rendition> {
    if name == AUDIO_RENDITION {
        return ladder_for_source(0).pop();
    }
    let height: u32 = name.strip_suffix('p')?.parse().ok()?;
    if height == 0 || height % 2 == 1 || height > 8192 {
        return None;
    }
    Some(
        match VIDEO_RUNGS.iter().find(|(rung, _, _)| *rung == height) {
            Some(&(height, kbps, level)) => video_rendition(height, kbps, level),
            None => video_rendition(height, 500, 30),
        },
    )
}

fn video_rendition(height: u32, video_bitrate_kbps: u32, level: u8) -> Rendition {
    // Peak: the VBV max rate below plus audio, with a margin for container overhead.
    let peak_kbps = u64::from(video_bitrate_kbps) * 11 / 10 + u64::from(AUDIO_BITRATE_KBPS);
    Rendition {
        name: format!("{height}p"),
        kind: RenditionKind::Video {
            height,
            video_bitrate_kbps,
            level,
        },
        bandwidth_bps: peak_kbps * 1000 * 11 / 10,
        // High profile (0x64), no constraint flags, then the level in hex.
        codecs: format!("avc1.6400{level:02x}"),
    }
}

/// Settings of one ffmpeg ladder run.
#[derive(Debug, Clone)]
pub struct TranscodeSettings {
    /// Target segment duration in milliseconds; keyframes are forced on it.
    pub segment_duration_ms: u32,
    /// x264 preset (`veryfast` by default: the ladder must run in real time).
    pub x264_preset: String,
    /// Target duration of a live stream's partial segments (LL-HLS), in
    /// milliseconds: ffmpeg cuts an fMP4 fragment this long (or at the
    /// next frame past it).
    pub part_duration_ms: u32,
}

impl Default for TranscodeSettings {
    fn default() -> Self {
        TranscodeSettings {
            segment_duration_ms: 2000,
            x264_preset: "veryfast".to_string(),
            part_duration_ms: 333,
        }
    }
}

/// Where each rendition of a live ladder is written: a Unix socket the
/// pipeline listens on, `out_dir/{name}.sock`.
pub fn live_output_socket(out_dir: &Path, rendition: &str) -> std::path::PathBuf {
    out_dir.join(format!("{rendition}.sock"))
}

/// ffmpeg arguments that read the live source on stdin and stream one fragmented MP4
/// per rendition (a fragment at every keyframe and every
/// `part_duration_ms`) to the Unix socket [`live_output_socket`] names.
pub fn ffmpeg_args(
    input: LiveInput,
    renditions: &[Rendition],
    settings: &TranscodeSettings,
    out_dir: &Path,
) -> Vec<String> {
    let format = match input {
        LiveInput::Flv => "flv",
        LiveInput::Matroska => "matroska",
    };
    let input = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-fflags",
        "+genpts",
        "-f",
        format,
        "-i",
        "pipe:0",
    ];
    ladder_args(
        input.iter().map(|s| s.to_string()).collect(),
        "",
        false,
        renditions,
        settings,
        Output::Fragments(out_dir),
    )
}

/// The container a live source reaches ffmpeg's stdin in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveInput {
    /// FLV, from an RTMP publisher.
    Flv,
    /// Matroska, from a WebRTC publisher.
    Matroska,
}

/// Where a ladder writes.
#[derive(Clone, Copy)]
enum Output<'a> {
    /// ffmpeg's HLS muxer into `dir/{name}/` (files).
    Hls(&'a Path),
    /// Fragmented MP4 into `dir/{name}.sock` (live).
    Fragments(&'a Path),
}

/// The ladder for an uploaded file: the rungs at or below its short side
/// (a portrait video is laddered by its width), audio only when it has
/// audio.
pub fn ladder_for_file(source: &crate::probe::SourceInfo) -> Vec<Rendition> {
    let mut ladder = ladder_for_source(source.short_side());
    if source.audio_channels.is_none() {
        ladder.retain(|r| matches!(r.kind, RenditionKind::Video { .. }));
    }
    ladder
}

/// Frame rates above this are halved until they fit.
const MAX_FRAME_RATE: u32 = 60;

/// ffmpeg arguments that transcode the file at `input` into the same HLS
/// outputs as [`ffmpeg_args`], with its progress written to stdout
/// (`-progress pipe:1`). The file's rotation is applied (ffmpeg turns the
/// frames), 10-bit and HDR become 8-bit SDR (tone-mapped), a variable frame
/// rate becomes the constant average one, and any number of audio channels
/// becomes stereo AAC.
pub fn file_ffmpeg_args(
    input: &Path,
    source: &crate::probe::SourceInfo,
    renditions: &[Rendition],
    settings: &TranscodeSettings,
    out_dir: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-progress",
        "pipe:1",
        "-nostats",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(input.to_string_lossy().into_owned());
    let mut filters = Vec::new();
    if source.hdr {
        filters.push(
            "zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=hable:desat=0,\
             zscale=t=bt709:m=bt709:r=tv"
                .to_string(),
        );
    }
    let (mut num, mut den) = source.frame_rate.unwrap_or((30, 1));
    while num > MAX_FRAME_RATE.saturating_mul(den) {
        den = den.saturating_mul(2);
    }
    if num == 0 || den == 0 {
        (num, den) = (30, 1);
    }
    filters.push(format!("fps={num}/{den}"));
    let mut pre_filter = filters.join(",");
    pre_filter.push(',');
    ladder_args(
        args,
        &pre_filter,
        source.is_portrait(),
        renditions,
        settings,
        Output::Hls(out_dir),
    )
}

/// The shared part: `input` arguments, the video graph (`pre_filter` before
/// the split, each rung scaled by its height, or by its width when
/// `portrait`), and one HLS output per rendition with aligned keyframes.
fn ladder_args(
    mut args: Vec<String>,
    pre_filter: &str,
    portrait: bool,
    renditions: &[Rendition],
    settings: &TranscodeSettings,
    output: Output<'_>,
) -> Vec<String> {
    let seconds = format!(
        "{}.{:03}",
        settings.segment_duration_ms / 1000,
        settings.segment_duration_ms % 1000
    );
    let videos: Vec<(&Rendition, u32, u32, u8)> = renditions
        .iter()
        .filter_map(|r| match r.kind {
            RenditionKind::Video {
                height,
                video_bitrate_kbps,
                level,
            } => Some((r, height, video_bitrate_kbps, level)),
            RenditionKind::Audio { .. } => None,
        })
        .collect();
    if !videos.is_empty() {
        let mut graph = format!("[0:v]{pre_filter}split={}", videos.len());
        for index in 0..videos.len() {
            graph.push_str(&format!("[split{index}]"));
        }
        for (index, (_, height, _, _)) in videos.iter().enumerate() {
            let scale = if portrait {
                format!("{height}:-2")
            } else {
                format!("-2:{height}")
            };
            graph.push_str(&format!(
                ";[split{index}]scale={scale}:flags=bicubic,format=yuv420p[out{index}]"
            ));
        }
        args.push("-filter_complex".into());
        args.push(graph);
    }

    let part_us = (u64::from(settings.part_duration_ms.max(1)) * 1000).to_string();
    let hls_output = |args: &mut Vec<String>, name: &str| {
        let out_dir = match output {
            Output::Hls(dir) => dir,
            Output::Fragments(dir) => {
                for part in [
                    "-f",
                    "mp4",
                    "-movflags",
                    "+frag_keyframe+empty_moov+default_base_moof",
                    "-frag_duration",
                    &part_us,
                ] {
                    args.push(part.to_string());
                }
                let socket = live_output_socket(dir, name);
                args.push(format!("unix://{}", socket.to_string_lossy()));
                return;
            }
        };
        let dir = out_dir.join(name);
        for part in [
            "-f",
            "hls",
            "-hls_time",
            &seconds,
            "-hls_list_size",
            "0",
            "-hls_segment_type",
            "fmp4",
            "-hls_flags",
            "temp_file+independent_segments",
            "-hls_fmp4_init_filename",
            "init.mp4",
        ] {
            args.push(part.to_string());
        }
        args.push("-hls_segment_filename".into());
        args.push(dir.join("seg_%d.m4s").to_string_lossy().into_owned());
        args.push(dir.join("index.m3u8").to_string_lossy().into_owned());
    };

    for (index, (rendition, _, kbps, level)) in videos.iter().enumerate() {
        let keyframes = format!("expr:gte(t,n_forced*{seconds})");
        for part in [
            "-map".to_string(),
            format!("[out{index}]"),
            "-an".into(),
            "-c:v".into(),
            "libx264".into(),
            "-preset".into(),
            settings.x264_preset.clone(),
            "-profile:v".into(),
            "high".into(),
            "-level:v".into(),
            format!("{}.{}", level / 10, level % 10),
            "-b:v".into(),
            format!("{kbps}k"),
            "-maxrate:v".into(),
            format!("{}k", kbps * 11 / 10),
            "-bufsize:v".into(),
            format!("{}k", kbps * 2),
            "-force_key_frames".into(),
            keyframes,
            "-sc_threshold".into(),
            "0".into(),
        ] {
            args.push(part);
        }
        if let Output::Fragments(_) = output {
            // The source's own frame timing: a constant-rate output would
            // repeat the last frame at the end, a one-frame segment.
            args.extend(["-fps_mode:v".to_string(), "passthrough".to_string()]);
            // Live: no lookahead, no B-frames, sliced threads, so a frame
            // leaves the encoder as it enters (frame-threaded lookahead
            // held about a second).
            args.extend(["-tune:v".to_string(), "zerolatency".to_string()]);
        }
        hls_output(&mut args, &rendition.name);
    }
    for rendition in renditions {
        if let RenditionKind::Audio { audio_bitrate_kbps } = rendition.kind {
            for part in [
                "-map".to_string(),
                "0:a:0".into(),
                "-vn".into(),
                "-c:a".into(),
                "aac".into(),
                "-b:a".into(),
                format!("{audio_bitrate_kbps}k"),
                "-ac".into(),
                "2".into(),
                "-ar".into(),
                "48000".into(),
            ] {
                args.push(part);
            }
            hls_output(&mut args, &rendition.name);
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ladder: &[Rendition]) -> Vec<&str> {
        ladder.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn never_upscales() {
        assert_eq!(
            names(&ladder_for_source(720)),
            ["720p", "480p", "360p", "audio"]
        );
        assert_eq!(
            names(&ladder_for_source(1080)),
            ["1080p", "720p", "480p", "360p", "audio"]
        );
        assert_eq!(
            names(&ladder_for_source(2160)),
            ["1080p", "720p", "480p", "360p", "audio"]
        );
        assert_eq!(names(&ladder_for_source(719)), ["480p", "360p", "audio"]);
        assert_eq!(names(&ladder_for_source(241)), ["240p", "audio"]);
    }

    #[test]
    fn names_give_back_the_renditions_of_a_ladder() {
        for source_height in [180, 241, 720, 1080] {
            for rendition in ladder_for_source(source_height) {
                assert_eq!(rendition_named(&rendition.name), Some(rendition));
            }
        }
        for bad in ["", "p", "0p", "181p", "720", "x720p", "99999p", "video"] {
            assert_eq!(rendition_named(bad), None, "{bad}");
        }
    }

    #[test]
    fn codec_strings_follow_levels() {
        let ladder = ladder_for_source(1080);
        assert_eq!(ladder[0].codecs, "avc1.640029");
        assert_eq!(ladder[1].codecs, "avc1.64001f");
        assert_eq!(ladder[4].codecs, "mp4a.40.2");
    }

    #[test]
    fn files_are_laddered_by_their_short_side_and_audio_only_when_present() {
        let source = crate::probe::SourceInfo {
            duration_ms: 1000,
            width: 720,
            height: 1280,
            video_codec: "hevc".into(),
            pixel_format: "yuv420p10le".into(),
            hdr: true,
            frame_rate: Some((120, 1)),
            audio_channels: None,
        };
        let ladder = ladder_for_file(&source);
        assert_eq!(names(&ladder), ["720p", "480p", "360p"]);
        let args = file_ffmpeg_args(
            Path::new("/in.mkv"),
            &source,
            &ladder,
            &TranscodeSettings::default(),
            Path::new("/w"),
        );
        let graph = &args[args.iter().position(|a| a == "-filter_complex").unwrap() + 1];
        assert!(graph.starts_with("[0:v]zscale=t=linear"), "{graph}");
        assert!(graph.contains("fps=120/2,split=3"), "{graph}");
        assert!(
            graph.contains("scale=480:-2"),
            "portrait rungs scale the width: {graph}"
        );
        assert!(!args.iter().any(|a| a == "0:a:0"), "no audio output");
        assert!(
            args.windows(2)
                .any(|w| w[0] == "-progress" && w[1] == "pipe:1")
        );
    }

    #[test]
    fn args_have_one_output_per_rendition_with_aligned_keyframes() {
        let ladder = ladder_for_source(720);
        let args = ffmpeg_args(
            LiveInput::Flv,
            &ladder,
            &TranscodeSettings::default(),
            Path::new("/w"),
        );
        let outputs: Vec<&String> = args.iter().filter(|a| a.starts_with("unix://")).collect();
        assert_eq!(
            outputs,
            [
                "unix:///w/720p.sock",
                "unix:///w/480p.sock",
                "unix:///w/360p.sock",
                "unix:///w/audio.sock"
            ]
        );
        assert_eq!(
            args.iter().filter(|a| *a == "333000").count(),
            4,
            "every output fragments on the part duration"
        );
        assert_eq!(
            args.iter()
                .filter(|a| *a == "expr:gte(t,n_forced*2.000)")
                .count(),
            3
        );
    }
}
