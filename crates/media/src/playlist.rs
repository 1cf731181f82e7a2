//! HLS playlists: reading the ones ffmpeg writes, and writing the ones we serve.

use m3u8_rs::{
    AlternativeMedia, AlternativeMediaType, Map, MasterPlaylist, MediaPlaylist, MediaPlaylistType,
    MediaSegment, Resolution, VariantStream,
};

use crate::MediaError;

/// A segment as listed by ffmpeg's own playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSegment {
    /// File name relative to the playlist.
    pub uri: String,
    /// `#EXTINF` duration, rounded to milliseconds.
    pub duration_ms: u32,
}

/// What an ffmpeg-written media playlist says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPlaylist {
    /// The `#EXT-X-MAP` init file, if any.
    pub init_uri: Option<String>,
    /// Complete segments in order.
    pub segments: Vec<ListedSegment>,
    /// Whether `#EXT-X-ENDLIST` is present.
    pub ended: bool,
}

/// Parses a media playlist written by ffmpeg's HLS muxer.
pub fn parse_media_playlist(bytes: &[u8]) -> Result<ListedPlaylist, MediaError> {
    let playlist = m3u8_rs::parse_media_playlist_res(bytes)
        .map_err(|err| MediaError::Playlist(err.to_string()))?;
    let mut init_uri = None;
    let mut segments = Vec::with_capacity(playlist.segments.len());
    for segment in &playlist.segments {
        if let Some(map) = &segment.map {
            init_uri = Some(map.uri.clone());
        }
        segments.push(ListedSegment {
            uri: segment.uri.clone(),
            duration_ms: seconds_to_ms(segment.duration),
        });
    }
    Ok(ListedPlaylist {
        init_uri,
        segments,
        ended: playlist.end_list,
    })
}

fn seconds_to_ms(seconds: f32) -> u32 {
    if seconds.is_finite() && seconds > 0.0 {
        // Durations are media time, never money; a few microseconds of rounding are fine.
        (f64::from(seconds) * 1000.0)
            .round()
            .min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// A segment as we list it for players.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistSegment {
    /// Media sequence number.
    pub sequence: u64,
    /// Duration in milliseconds.
    pub duration_ms: u32,
    /// URI, relative to the playlist or absolute.
    pub uri: String,
    /// The source restarted here (a publisher continued the stream after
    /// its ingest node was lost): a discontinuity begins with this segment,
    /// whose init file is at this URI.
    pub new_init_uri: Option<String>,
}

/// A partial segment as we list it (LL-HLS `EXT-X-PART`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistPart {
    /// Media sequence number of its segment.
    pub sequence: u64,
    /// Duration in milliseconds.
    pub duration_ms: u32,
    /// URI, relative to the playlist.
    pub uri: String,
    /// Starts with a keyframe.
    pub independent: bool,
}

/// The URI of part `index` of segment `sequence`.
pub fn part_uri(sequence: u64, index: u32) -> String {
    format!("{sequence}.{index}.m4s")
}

/// The URI of the init file that begins at segment `sequence` after a
/// discontinuity (the first one is `init.mp4`).
pub fn period_init_uri(sequence: u64) -> String {
    format!("init-{sequence}.mp4")
}

/// Inputs of a media playlist.
#[derive(Debug, Clone)]
pub struct MediaPlaylistSpec<'a> {
    /// URI of the init file.
    pub init_uri: &'a str,
    /// Every segment of the rendition so far, in order.
    pub segments: &'a [PlaylistSegment],
    /// Target duration from configuration, in milliseconds.
    pub segment_duration_ms: u32,
    /// `true` once the stream ended: every segment is listed and the playlist closes.
    pub ended: bool,
    /// While live, how many of the newest segments to list.
    pub live_window_segments: usize,
    /// While live: parts of the newest segments and of the one being
    /// written (after the last listed), in order. Empty: no LL-HLS.
    pub parts: &'a [PlaylistPart],
    /// The longest part (PART-TARGET), in milliseconds.
    pub part_target_ms: u32,
    /// While live with parts: the next part's URI, hinted for preloading.
    pub preload_hint: Option<String>,
}

fn part_tag(part: &PlaylistPart) -> String {
    format!(
        "#EXT-X-PART:DURATION={:.3},URI=\"{}\"{}",
        f64::from(part.duration_ms) / 1000.0,
        part.uri,
        if part.independent {
            ",INDEPENDENT=YES"
        } else {
            ""
        }
    )
}

/// Writes the media playlist of one rendition: a sliding window while live,
/// the whole recording with `#EXT-X-ENDLIST` once ended.
pub fn render_media_playlist(spec: &MediaPlaylistSpec<'_>) -> String {
    let window = if spec.ended {
        spec.segments
    } else {
        let start = spec
            .segments
            .len()
            .saturating_sub(spec.live_window_segments.max(1));
        &spec.segments[start..]
    };
    let longest_ms = window
        .iter()
        .map(|s| s.duration_ms)
        .max()
        .unwrap_or(0)
        .max(spec.segment_duration_ms);
    // What came before the window: how many discontinuities, and which
    // init file its first segment needs.
    let before = &spec.segments[..spec.segments.len() - window.len()];
    let discontinuity_sequence = before.iter().filter(|s| s.new_init_uri.is_some()).count() as u64;
    let first_init = before
        .iter()
        .rev()
        .find_map(|s| s.new_init_uri.as_deref())
        .unwrap_or(spec.init_uri);
    let low_latency = !spec.ended && !spec.parts.is_empty() && spec.part_target_ms > 0;
    let mut segments = Vec::with_capacity(window.len());
    for (index, segment) in window.iter().enumerate() {
        let map_uri = match (&segment.new_init_uri, index) {
            (Some(uri), _) => Some(uri.as_str()),
            (None, 0) => Some(first_init),
            (None, _) => None,
        };
        let unknown_tags = if low_latency {
            spec.parts
                .iter()
                .filter(|p| p.sequence == segment.sequence)
                .map(|p| m3u8_rs::ExtTag {
                    // Written as `#EXT-` + tag, before the segment's EXTINF.
                    tag: part_tag(p)["#EXT-".len()..].to_string(),
                    rest: None,
                })
                .collect()
        } else {
            Vec::new()
        };
        segments.push(MediaSegment {
            uri: segment.uri.clone(),
            duration: segment.duration_ms as f32 / 1000.0,
            unknown_tags,
            discontinuity: segment.new_init_uri.is_some(),
            map: map_uri.map(|uri| Map {
                uri: uri.to_string(),
                ..Map::default()
            }),
            ..MediaSegment::default()
        });
    }
    let playlist = MediaPlaylist {
        version: Some(7),
        target_duration: u64::from(longest_ms.div_ceil(1000)),
        media_sequence: window.first().map_or(0, |s| s.sequence),
        discontinuity_sequence,
        segments,
        end_list: spec.ended,
        playlist_type: spec.ended.then_some(MediaPlaylistType::Vod),
        independent_segments: true,
        ..MediaPlaylist::default()
    };
    let text = write(|out| playlist.write_to(out));
    if !low_latency {
        return text;
    }
    low_latency_playlist(text, spec, window.last().map(|s| s.sequence), first_init)
}

/// Adds LL-HLS to a live playlist m3u8-rs wrote: the server control and
/// part target after the target duration, then the parts of the segment
/// being written and the hint of the next part at the end.
fn low_latency_playlist(
    text: String,
    spec: &MediaPlaylistSpec<'_>,
    last_listed: Option<u64>,
    first_init: &str,
) -> String {
    // Apple's rules: PART-TARGET is the longest part, and players hold back
    // at least three of them from the live edge.
    let part_target_s = f64::from(spec.part_target_ms) / 1000.0;
    let header = format!(
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n#EXT-X-PART-INF:PART-TARGET={:.3}\n",
        part_target_s * 3.0,
        part_target_s
    );
    let mut out = String::with_capacity(text.len() + header.len() + 512);
    let mut inserted = false;
    for line in text.split_inclusive('\n') {
        out.push_str(line);
        if !inserted && line.starts_with("#EXT-X-TARGETDURATION:") {
            out.push_str(&header);
            inserted = true;
        }
    }
    let open: Vec<&PlaylistPart> = spec
        .parts
        .iter()
        .filter(|p| last_listed.is_none_or(|last| p.sequence > last))
        .collect();
    if last_listed.is_none() && !open.is_empty() {
        // No whole segment yet: the parts need the init file.
        out.push_str(&format!("#EXT-X-MAP:URI=\"{first_init}\"\n"));
    }
    for part in open {
        out.push_str(&part_tag(part));
        out.push('\n');
    }
    if let Some(hint) = &spec.preload_hint {
        out.push_str(&format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"\n"));
    }
    out
}

/// One entry of a master playlist.
#[derive(Debug, Clone)]
pub struct MasterEntry<'a> {
    /// Rendition name.
    pub name: &'a str,
    /// Its media playlist's URI.
    pub uri: String,
    /// Peak bits per second (for video variants: including the audio).
    pub bandwidth_bps: u64,
    /// Codec strings, comma separated.
    pub codecs: &'a str,
    /// Width and height for video.
    pub resolution: Option<(u32, u32)>,
}

/// Writes a master playlist: one variant per video rendition, all sharing the
/// audio rendition as an `EXT-X-MEDIA` group, plus an audio-only variant.
pub fn render_master_playlist(
    videos: &[MasterEntry<'_>],
    audio: Option<&MasterEntry<'_>>,
) -> String {
    const GROUP: &str = "audio";
    let mut master = MasterPlaylist {
        version: Some(7),
        independent_segments: true,
        ..MasterPlaylist::default()
    };
    if let Some(audio) = audio {
        master.alternatives.push(AlternativeMedia {
            media_type: AlternativeMediaType::Audio,
            uri: Some(audio.uri.clone()),
            group_id: GROUP.to_string(),
            name: audio.name.to_string(),
            default: true,
            autoselect: true,
            channels: Some("2".to_string()),
            ..AlternativeMedia::default()
        });
    }
    for video in videos {
        let codecs = match audio {
            Some(audio) => format!("{},{}", video.codecs, audio.codecs),
            None => video.codecs.to_string(),
        };
        master.variants.push(VariantStream {
            uri: video.uri.clone(),
            bandwidth: video.bandwidth_bps,
            codecs: Some(codecs),
            resolution: video.resolution.map(|(width, height)| Resolution {
                width: u64::from(width),
                height: u64::from(height),
            }),
            audio: audio.map(|_| GROUP.to_string()),
            ..VariantStream::default()
        });
    }
    if let Some(audio) = audio {
        master.variants.push(VariantStream {
            uri: audio.uri.clone(),
            bandwidth: audio.bandwidth_bps,
            codecs: Some(audio.codecs.to_string()),
            audio: Some(GROUP.to_string()),
            ..VariantStream::default()
        });
    }
    write(|out| master.write_to(out))
}

fn write(render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut out = Vec::with_capacity(1024);
    // Writing into a Vec cannot fail, and m3u8-rs writes only UTF-8 from our strings.
    render(&mut out).expect("writing to a Vec never fails");
    String::from_utf8(out).expect("playlists are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFMPEG_PLAYLIST: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.000000,\nseg_0.m4s\n#EXTINF:2.005333,\nseg_1.m4s\n#EXT-X-ENDLIST\n";

    #[test]
    fn reads_ffmpeg_playlists() {
        let listed = parse_media_playlist(FFMPEG_PLAYLIST.as_bytes()).expect("valid");
        assert_eq!(listed.init_uri.as_deref(), Some("init.mp4"));
        assert_eq!(
            listed.segments,
            [
                ListedSegment {
                    uri: "seg_0.m4s".into(),
                    duration_ms: 2000
                },
                ListedSegment {
                    uri: "seg_1.m4s".into(),
                    duration_ms: 2005
                },
            ]
        );
        assert!(listed.ended);
        assert!(parse_media_playlist(b"not a playlist").is_err());
    }

    fn segments(count: u64) -> Vec<PlaylistSegment> {
        (0..count)
            .map(|sequence| PlaylistSegment {
                sequence,
                duration_ms: 2000,
                uri: format!("{sequence}.m4s"),
                new_init_uri: None,
            })
            .collect()
    }

    #[test]
    fn a_restarted_source_starts_a_discontinuity_with_its_init() {
        let mut all = segments(10);
        all[6].new_init_uri = Some(period_init_uri(6));
        let mut spec = MediaPlaylistSpec {
            init_uri: "init.mp4",
            segments: &all,
            segment_duration_ms: 2000,
            ended: true,
            live_window_segments: 3,
            parts: &[],
            part_target_ms: 0,
            preload_hint: None,
        };
        let vod = render_media_playlist(&spec);
        let lines: Vec<&str> = vod.lines().collect();
        let at = lines.iter().position(|l| *l == "6.m4s").expect("listed");
        assert!(
            lines[..at].contains(&"#EXT-X-DISCONTINUITY")
                && lines[..at].contains(&"#EXT-X-MAP:URI=\"init-6.mp4\""),
            "{vod}"
        );
        assert_eq!(vod.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{vod}");
        assert!(vod.starts_with("#EXTM3U") && vod.contains("#EXT-X-MAP:URI=\"init.mp4\""));
        // Live, with the window past the restart: its init, and the count of
        // discontinuities before the window.
        spec.ended = false;
        let live = render_media_playlist(&spec);
        assert!(live.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1"), "{live}");
        assert!(live.contains("#EXT-X-MAP:URI=\"init-6.mp4\""), "{live}");
        assert!(!live.contains("#EXT-X-MAP:URI=\"init.mp4\""), "{live}");
        // The window straddling it: the first init, then the restart.
        spec.live_window_segments = 5;
        let live = render_media_playlist(&spec);
        assert!(!live.contains("#EXT-X-DISCONTINUITY-SEQUENCE"), "{live}");
        assert!(
            live.contains("#EXT-X-MAP:URI=\"init.mp4\"") && live.contains("#EXT-X-DISCONTINUITY\n")
        );
        let reparsed = m3u8_rs::parse_media_playlist_res(live.as_bytes()).expect("valid");
        assert!(reparsed.segments[1].discontinuity);
    }

    #[test]
    fn live_window_slides_and_vod_lists_everything() {
        let all = segments(10);
        let mut spec = MediaPlaylistSpec {
            init_uri: "init.mp4",
            segments: &all,
            segment_duration_ms: 2000,
            ended: false,
            live_window_segments: 3,
            parts: &[],
            part_target_ms: 0,
            preload_hint: None,
        };
        let live = render_media_playlist(&spec);
        assert!(live.contains("#EXT-X-MEDIA-SEQUENCE:7"));
        assert!(!live.contains("6.m4s") && live.contains("9.m4s"));
        assert!(!live.contains("#EXT-X-ENDLIST"));
        assert!(live.contains("#EXT-X-MAP:URI=\"init.mp4\""));
        spec.ended = true;
        let vod = render_media_playlist(&spec);
        // Sequence 0 is the default and m3u8-rs leaves the tag out.
        assert!(!vod.contains("#EXT-X-MEDIA-SEQUENCE:"));
        assert!(vod.contains("0.m4s") && vod.trim_end().ends_with("#EXT-X-ENDLIST"));
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
        let reparsed = parse_media_playlist(vod.as_bytes()).expect("we write valid playlists");
        assert_eq!(reparsed.segments.len(), 10);
    }

    #[test]
    fn master_groups_audio() {
        let video = MasterEntry {
            name: "720p",
            uri: "720p/index.m3u8".into(),
            bandwidth_bps: 3_000_000,
            codecs: "avc1.64001f",
            resolution: Some((1280, 720)),
        };
        let audio = MasterEntry {
            name: "audio",
            uri: "audio/index.m3u8".into(),
            bandwidth_bps: 140_000,
            codecs: "mp4a.40.2",
            resolution: None,
        };
        let master = render_master_playlist(&[video], Some(&audio));
        assert!(master.contains("TYPE=AUDIO"));
        assert!(master.contains("GROUP-ID=\"audio\""));
        assert!(master.contains("RESOLUTION=1280x720"));
        assert!(master.contains("CODECS=\"avc1.64001f,mp4a.40.2\""));
        let parsed = m3u8_rs::parse_master_playlist_res(master.as_bytes()).expect("valid");
        assert_eq!(parsed.variants.len(), 2);
    }

    #[test]
    fn live_playlists_list_parts_and_hint_the_next() {
        let segments: Vec<PlaylistSegment> = (0..4u64)
            .map(|sequence| PlaylistSegment {
                sequence,
                duration_ms: 2000,
                uri: format!("{sequence}.m4s"),
                new_init_uri: None,
            })
            .collect();
        let part = |sequence: u64, index: u32| PlaylistPart {
            sequence,
            duration_ms: if index == 5 { 334 } else { 333 },
            uri: part_uri(sequence, index),
            independent: index == 0,
        };
        let mut parts: Vec<PlaylistPart> = (0..6).map(|i| part(3, i)).collect();
        parts.extend((0..2).map(|i| part(4, i)));
        let text = render_media_playlist(&MediaPlaylistSpec {
            init_uri: "init.mp4",
            segments: &segments,
            segment_duration_ms: 2000,
            ended: false,
            live_window_segments: 3,
            parts: &parts,
            part_target_ms: 334,
            preload_hint: Some(part_uri(4, 2)),
        });
        assert!(
            text.contains("#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002\n#EXT-X-PART-INF:PART-TARGET=0.334\n"),
            "{text}"
        );
        assert!(
            text.contains("#EXT-X-PART:DURATION=0.334,URI=\"3.5.m4s\"\n#EXTINF:"),
            "{text}"
        );
        assert!(
            text.ends_with("3.m4s\n#EXT-X-PART:DURATION=0.333,URI=\"4.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.333,URI=\"4.1.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"4.2.m4s\"\n"),
            "{text}"
        );
        assert_eq!(text.matches("#EXT-X-PART:").count(), 8);
        // The result is a playlist m3u8-rs reads back, with its segments.
        let parsed = parse_media_playlist(text.as_bytes()).expect("parses");
        assert_eq!(parsed.segments.len(), 3);
    }
}
