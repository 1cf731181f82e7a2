//! What an uploaded file is, by ffprobe: a container ffprobe reads, a video
//! stream with known dimensions, a duration within bounds. Parsing
//! ffprobe's JSON is pure ([`parse_probe`]); [`probe_file`] runs ffprobe.
//! Refusals say what is wrong in words a person understands.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Why a file cannot become a video.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Not a media container at all.
    #[error("not a video file: {0}")]
    NotAVideo(String),
    /// Media, but no video stream (audio only, or images).
    #[error("the file has no video stream")]
    NoVideoStream,
    /// A video stream without a width and height.
    #[error("the video's dimensions are unknown")]
    UnknownDimensions,
    /// Longer than allowed.
    #[error("the video is {seconds} s long; at most {max_seconds} s are accepted")]
    TooLong { seconds: u64, max_seconds: u64 },
    /// The container announces no usable duration.
    #[error("the video's duration is unknown")]
    UnknownDuration,
    /// ffprobe could not run.
    #[error("ffprobe: {0}")]
    Tool(String),
}

/// What the transcoder needs to know of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    pub duration_ms: u64,
    /// Width as displayed (rotation applied).
    pub width: u32,
    /// Height as displayed (rotation applied).
    pub height: u32,
    /// The video codec's name (`h264`, `hevc`, `vp9`, ...).
    pub video_codec: String,
    /// The pixel format (`yuv420p`, `yuv420p10le`, ...).
    pub pixel_format: String,
    /// HDR transfer (PQ or HLG): needs tone mapping to SDR.
    pub hdr: bool,
    /// Average frame rate as a fraction, when known.
    pub frame_rate: Option<(u32, u32)>,
    /// Audio channels of the first audio stream; `None` without audio.
    pub audio_channels: Option<u32>,
}

impl SourceInfo {
    /// The side the ladder is chosen by: the height of a landscape video,
    /// the width of a portrait one (its short side).
    pub fn short_side(&self) -> u32 {
        self.width.min(self.height)
    }

    /// Taller than wide, as displayed.
    pub fn is_portrait(&self) -> bool {
        self.height > self.width
    }
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    streams: Vec<Stream>,
    format: Option<Format>,
}

#[derive(Deserialize)]
struct Format {
    duration: Option<String>,
    format_name: Option<String>,
}

#[derive(Deserialize)]
struct Stream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    pix_fmt: Option<String>,
    color_transfer: Option<String>,
    avg_frame_rate: Option<String>,
    channels: Option<u32>,
    duration: Option<String>,
    #[serde(default)]
    side_data_list: Vec<SideData>,
    #[serde(default)]
    tags: std::collections::HashMap<String, String>,
    #[serde(default)]
    disposition: std::collections::HashMap<String, i64>,
}

#[derive(Deserialize)]
struct SideData {
    rotation: Option<f64>,
}

fn seconds_to_ms(text: &str) -> Option<u64> {
    let seconds: f64 = text.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1000.0).round() as u64)
}

fn fraction(text: &str) -> Option<(u32, u32)> {
    let (num, den) = text.split_once('/')?;
    let (num, den): (u32, u32) = (num.parse().ok()?, den.parse().ok()?);
    (num > 0 && den > 0).then_some((num, den))
}

/// Reads `ffprobe -print_format json -show_format -show_streams` output.
pub fn parse_probe(json: &[u8], max_duration_ms: u64) -> Result<SourceInfo, ProbeError> {
    let probe: Probe = serde_json::from_slice(json)
        .map_err(|_| ProbeError::NotAVideo("ffprobe could not read it".into()))?;
    let Some(format) = probe.format else {
        return Err(ProbeError::NotAVideo("no media container found".into()));
    };
    // Cover art is a one-frame "video" stream: not a video.
    let video = probe
        .streams
        .iter()
        .find(|s| {
            s.codec_type.as_deref() == Some("video")
                && s.disposition.get("attached_pic").copied().unwrap_or(0) == 0
        })
        .ok_or(ProbeError::NoVideoStream)?;
    let (Some(width), Some(height)) = (video.width, video.height) else {
        return Err(ProbeError::UnknownDimensions);
    };
    if width == 0 || height == 0 {
        return Err(ProbeError::UnknownDimensions);
    }
    let rotation = video
        .side_data_list
        .iter()
        .find_map(|d| d.rotation)
        .or_else(|| video.tags.get("rotate").and_then(|r| r.parse().ok()))
        .unwrap_or(0.0);
    let quarter_turns = ((rotation / 90.0).round() as i64).rem_euclid(4);
    let (width, height) = if quarter_turns % 2 == 1 {
        (height, width)
    } else {
        (width, height)
    };
    let duration_ms = format
        .duration
        .as_deref()
        .and_then(seconds_to_ms)
        .or_else(|| video.duration.as_deref().and_then(seconds_to_ms))
        .filter(|ms| *ms > 0)
        .ok_or(ProbeError::UnknownDuration)?;
    if duration_ms > max_duration_ms {
        return Err(ProbeError::TooLong {
            seconds: duration_ms / 1000,
            max_seconds: max_duration_ms / 1000,
        });
    }
    let _ = format.format_name;
    let audio = probe
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("audio"));
    Ok(SourceInfo {
        duration_ms,
        width,
        height,
        video_codec: video.codec_name.clone().unwrap_or_default(),
        pixel_format: video.pix_fmt.clone().unwrap_or_default(),
        hdr: matches!(
            video.color_transfer.as_deref(),
            Some("smpte2084" | "arib-std-b67")
        ),
        frame_rate: video.avg_frame_rate.as_deref().and_then(fraction),
        audio_channels: audio.map(|a| a.channels.unwrap_or(2)),
    })
}

/// Runs ffprobe on `path` (at most 30 s) and checks what it found.
pub async fn probe_file(
    ffprobe: &Path,
    path: &Path,
    max_duration_ms: u64,
) -> Result<SourceInfo, ProbeError> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(ffprobe)
            .args([
                "-v",
                "error",
                "-print_format",
                "json",
                "-show_format",
                "-show_streams",
            ])
            .arg(path)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| ProbeError::Tool("took over 30 s".into()))?
    .map_err(|err| ProbeError::Tool(format!("{}: {err}", ffprobe.display())))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        let reason = if said.contains("moov atom not found") {
            "the file is truncated (its index is missing)".to_string()
        } else if said.contains("Invalid data found") {
            "the file is not a format ffmpeg reads".to_string()
        } else {
            said.lines()
                .last()
                .unwrap_or("unreadable")
                .trim()
                .to_string()
        };
        return Err(ProbeError::NotAVideo(reason));
    }
    parse_probe(&output.stdout, max_duration_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIX_HOURS_MS: u64 = 6 * 3600 * 1000;

    #[test]
    fn a_portrait_phone_video_turns_by_its_rotation() {
        let json = br#"{"streams":[{"codec_type":"video","codec_name":"h264","width":1920,"height":1080,
            "pix_fmt":"yuv420p","avg_frame_rate":"30000/1001","side_data_list":[{"rotation":-90}]},
            {"codec_type":"audio","codec_name":"aac","channels":2}],"format":{"duration":"12.5","format_name":"mov,mp4"}}"#;
        let info = parse_probe(json, SIX_HOURS_MS).unwrap();
        assert_eq!((info.width, info.height), (1080, 1920));
        assert!(info.is_portrait());
        assert_eq!(info.short_side(), 1080);
        assert_eq!(info.duration_ms, 12_500);
        assert_eq!(info.frame_rate, Some((30000, 1001)));
        assert_eq!(info.audio_channels, Some(2));
    }

    #[test]
    fn ten_bit_hdr_without_audio() {
        let json =
            br#"{"streams":[{"codec_type":"video","codec_name":"hevc","width":3840,"height":2160,
            "pix_fmt":"yuv420p10le","color_transfer":"smpte2084","avg_frame_rate":"24/1"}],
            "format":{"duration":"3.0"}}"#;
        let info = parse_probe(json, SIX_HOURS_MS).unwrap();
        assert!(info.hdr);
        assert_eq!(info.audio_channels, None);
        assert_eq!(info.short_side(), 2160);
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let audio_only =
            br#"{"streams":[{"codec_type":"audio","channels":6}],"format":{"duration":"9"}}"#;
        assert_eq!(
            parse_probe(audio_only, SIX_HOURS_MS),
            Err(ProbeError::NoVideoStream)
        );
        let cover_art = br#"{"streams":[{"codec_type":"video","width":500,"height":500,"disposition":{"attached_pic":1}},
            {"codec_type":"audio"}],"format":{"duration":"9"}}"#;
        assert_eq!(
            parse_probe(cover_art, SIX_HOURS_MS),
            Err(ProbeError::NoVideoStream)
        );
        let no_size = br#"{"streams":[{"codec_type":"video"}],"format":{"duration":"9"}}"#;
        assert_eq!(
            parse_probe(no_size, SIX_HOURS_MS),
            Err(ProbeError::UnknownDimensions)
        );
        let long = br#"{"streams":[{"codec_type":"video","width":2,"height":2}],"format":{"duration":"21600.5"}}"#;
        assert_eq!(
            parse_probe(long, SIX_HOURS_MS),
            Err(ProbeError::TooLong {
                seconds: 21600,
                max_seconds: 21600
            })
        );
        assert!(matches!(
            parse_probe(b"not json", SIX_HOURS_MS),
            Err(ProbeError::NotAVideo(_))
        ));
        assert!(matches!(
            parse_probe(br#"{"streams":[]}"#, SIX_HOURS_MS),
            Err(ProbeError::NotAVideo(_))
        ));
        let no_duration =
            br#"{"streams":[{"codec_type":"video","width":2,"height":2}],"format":{}}"#;
        assert_eq!(
            parse_probe(no_duration, SIX_HOURS_MS),
            Err(ProbeError::UnknownDuration)
        );
    }
}
