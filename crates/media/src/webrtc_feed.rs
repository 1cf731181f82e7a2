//! Frames received over WebRTC (H.264 or VP8 video, Opus audio) turned into
//! the Matroska feed the ladder reads on its stdin.
//!
//! Sans-IO: the caller passes each depacketized frame with its RTP time and
//! when it arrived; the feed answers the [`IngestMessage`]s to send to the
//! pipeline. Nothing is written until the first video keyframe (its header
//! tells the codec configuration and the picture size); after a gap in the
//! video the feed drops frames until the next keyframe and says, through
//! [`WebrtcFeed::wants_keyframe`], that the publisher should be asked for
//! one (a PLI).
//!
//! Timestamps: each track is anchored at its first frame's arrival (in
//! milliseconds from the feed's start) and goes on by its RTP clock, so the
//! tracks stay in step as the publisher captured them, give or take the
//! network jitter of their first packets.

use bytes::{BufMut, Bytes, BytesMut};
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::nal::{Nal, RefNal};

use crate::mkv::{AUDIO_TRACK, MatroskaWriter, Tracks, VIDEO_TRACK, VideoCodec};
use crate::rtmp::IngestMessage;

/// The start of a Matroska feed: what the pipeline needs to choose a
/// ladder, and the bytes ffmpeg reads first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatroskaStart {
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Whether the feed has an audio track.
    pub has_audio: bool,
    /// The EBML header, segment start and tracks.
    pub header: Bytes,
}

/// The video codecs the feed takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedVideoCodec {
    /// H.264 in Annex B (start codes), as WebRTC depacketizers give it.
    H264,
    /// VP8 frames.
    Vp8,
}

/// RTP time of one track, anchored at its first frame.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    rtp_time: u64,
    clock_hz: u32,
    arrival_ms: u64,
}

impl Anchor {
    fn timestamp_ms(&self, rtp_time: u64) -> u64 {
        let since = i128::from(rtp_time) - i128::from(self.rtp_time);
        let since_ms = since * 1000 / i128::from(self.clock_hz.max(1));
        u64::try_from((i128::from(self.arrival_ms) + since_ms).max(0)).unwrap_or(u64::MAX)
    }
}

/// One publisher's feed.
#[derive(Debug)]
pub struct WebrtcFeed {
    audio_channels: Option<u8>,
    writer: MatroskaWriter,
    started: bool,
    video_anchor: Option<Anchor>,
    audio_anchor: Option<Anchor>,
    waiting_for_keyframe: bool,
    last_video_ms: u64,
    last_audio_ms: u64,
}

/// Why a frame could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// A keyframe's header could not be read.
    #[error("unreadable {0} keyframe header")]
    BadKeyframe(&'static str),
    /// A picture size the ladder does not take.
    #[error("unsupported picture size {0}x{1}")]
    UnsupportedSize(u32, u32),
}

impl WebrtcFeed {
    /// A feed with Opus audio of `audio_channels` channels, or video only.
    pub fn new(audio_channels: Option<u8>) -> Self {
        WebrtcFeed {
            audio_channels,
            writer: MatroskaWriter::default(),
            started: false,
            video_anchor: None,
            audio_anchor: None,
            waiting_for_keyframe: true,
            last_video_ms: 0,
            last_audio_ms: 0,
        }
    }

    /// Whether the publisher should be asked for a keyframe: before the
    /// first one, and after a gap until the next.
    pub fn wants_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Whether the first keyframe came (the feed has started).
    pub fn started(&self) -> bool {
        self.started
    }

    /// The timestamp (ms from the feed's start) of the last video frame
    /// written.
    pub fn last_video_ms(&self) -> u64 {
        self.last_video_ms
    }

    /// The timestamp of the last audio frame written.
    pub fn last_audio_ms(&self) -> u64 {
        self.last_audio_ms
    }

    /// One video frame. `contiguous` is false when packets before it were
    /// lost. Answers what to send to the pipeline (nothing while waiting
    /// for a keyframe).
    pub fn push_video(
        &mut self,
        codec: FeedVideoCodec,
        rtp_time: u64,
        clock_hz: u32,
        arrival_ms: u64,
        contiguous: bool,
        frame: &[u8],
    ) -> Result<Vec<IngestMessage>, FeedError> {
        let keyframe = is_keyframe(codec, frame);
        if !contiguous && !keyframe {
            self.waiting_for_keyframe = true;
        }
        if self.waiting_for_keyframe && !keyframe {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let payload = match codec {
            FeedVideoCodec::H264 => annex_b_to_length_prefixed(frame),
            FeedVideoCodec::Vp8 => Bytes::copy_from_slice(frame),
        };
        if !self.started {
            let (video, width, height) = match codec {
                FeedVideoCodec::H264 => {
                    let (avcc, width, height) = h264_config(frame)?;
                    (VideoCodec::H264 { avcc }, width, height)
                }
                FeedVideoCodec::Vp8 => {
                    let (width, height) = vp8_size(frame).ok_or(FeedError::BadKeyframe("VP8"))?;
                    (VideoCodec::Vp8, width, height)
                }
            };
            if width == 0 || height == 0 || width > 8192 || height > 8192 {
                return Err(FeedError::UnsupportedSize(width, height));
            }
            let tracks = Tracks {
                video,
                width,
                height,
                opus_channels: self.audio_channels,
            };
            out.push(IngestMessage::MatroskaStart(MatroskaStart {
                width,
                height,
                has_audio: self.audio_channels.is_some(),
                header: MatroskaWriter::header(&tracks),
            }));
            self.started = true;
        }
        self.waiting_for_keyframe = false;
        let anchor = *self.video_anchor.get_or_insert(Anchor {
            rtp_time,
            clock_hz,
            arrival_ms,
        });
        // Never back in time within a track (a reordered frame keeps its place).
        let timestamp_ms = anchor.timestamp_ms(rtp_time).max(self.last_video_ms);
        self.last_video_ms = timestamp_ms;
        out.push(IngestMessage::Matroska(self.writer.block(
            VIDEO_TRACK,
            timestamp_ms,
            keyframe,
            &payload,
        )));
        Ok(out)
    }

    /// One Opus frame; dropped until the video has started, or when the
    /// feed has no audio track.
    pub fn push_audio(
        &mut self,
        rtp_time: u64,
        clock_hz: u32,
        arrival_ms: u64,
        frame: &[u8],
    ) -> Option<IngestMessage> {
        if self.audio_channels.is_none() || frame.is_empty() {
            return None;
        }
        // Anchored from the first frame, even before the video starts, so
        // both tracks count from the same moment.
        let anchor = *self.audio_anchor.get_or_insert(Anchor {
            rtp_time,
            clock_hz,
            arrival_ms,
        });
        if !self.started {
            return None;
        }
        let timestamp_ms = anchor.timestamp_ms(rtp_time).max(self.last_audio_ms);
        self.last_audio_ms = timestamp_ms;
        Some(IngestMessage::Matroska(self.writer.block(
            AUDIO_TRACK,
            timestamp_ms,
            true,
            frame,
        )))
    }
}

/// Whether a frame is a keyframe (an H.264 IDR access unit, a VP8 key frame).
pub fn is_keyframe(codec: FeedVideoCodec, frame: &[u8]) -> bool {
    match codec {
        FeedVideoCodec::H264 => h264_keyframe(frame),
        FeedVideoCodec::Vp8 => vp8_keyframe(frame),
    }
}

/// The NAL units of an Annex B byte stream (without their start codes).
fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = stream;
    std::iter::from_fn(move || {
        loop {
            let start = find_start_code(rest)?;
            rest = &rest[start.end..];
            let end = find_start_code(rest).map_or(rest.len(), |next| next.start);
            let nal = &rest[..end];
            rest = &rest[end..];
            // Trailing zero bytes belong to the next start code.
            let trimmed = match nal.iter().rposition(|&b| b != 0) {
                Some(last) => &nal[..=last],
                None => &[][..],
            };
            if !trimmed.is_empty() {
                return Some(trimmed);
            }
        }
    })
}

/// Where the next `00 00 01` start code is (its range).
fn find_start_code(bytes: &[u8]) -> Option<std::ops::Range<usize>> {
    bytes
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|at| at..at + 3)
}

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

fn h264_keyframe(frame: &[u8]) -> bool {
    nal_units(frame).any(|nal| nal[0] & 0x1F == NAL_IDR)
}

fn annex_b_to_length_prefixed(frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(frame.len() + 16);
    for nal in nal_units(frame) {
        out.put_u32(nal.len() as u32);
        out.put_slice(nal);
    }
    out.freeze()
}

/// The `avcC` record and picture size from a keyframe's SPS and PPS.
fn h264_config(frame: &[u8]) -> Result<(Bytes, u32, u32), FeedError> {
    let bad = FeedError::BadKeyframe("H.264");
    let sps = nal_units(frame)
        .find(|nal| nal[0] & 0x1F == NAL_SPS)
        .ok_or(bad.clone())?;
    let pps = nal_units(frame)
        .find(|nal| nal[0] & 0x1F == NAL_PPS)
        .ok_or(bad.clone())?;
    if sps.len() < 4 || sps.len() > usize::from(u16::MAX) || pps.len() > usize::from(u16::MAX) {
        return Err(bad);
    }
    let parsed = SeqParameterSet::from_bits(RefNal::new(sps, &[], true).rbsp_bits())
        .map_err(|_| bad.clone())?;
    let (width, height) = parsed.pixel_dimensions().map_err(|_| bad)?;
    let mut avcc = BytesMut::with_capacity(11 + sps.len() + pps.len());
    avcc.put_u8(1); // configuration version
    avcc.put_slice(&sps[1..4]); // profile, compatibility, level
    avcc.put_u8(0xFF); // 4-byte NAL lengths
    avcc.put_u8(0xE1); // one SPS
    avcc.put_u16(sps.len() as u16);
    avcc.put_slice(sps);
    avcc.put_u8(1); // one PPS
    avcc.put_u16(pps.len() as u16);
    avcc.put_slice(pps);
    Ok((avcc.freeze(), width, height))
}

/// A VP8 frame is a keyframe when the frame tag's lowest bit is clear (RFC 6386, 9.1).
fn vp8_keyframe(frame: &[u8]) -> bool {
    frame.len() >= 10 && frame[0] & 1 == 0 && frame[3..6] == [0x9D, 0x01, 0x2A]
}

fn vp8_size(frame: &[u8]) -> Option<(u32, u32)> {
    if !vp8_keyframe(frame) {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3FFF;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3FFF;
    Some((u32::from(width), u32::from(height)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A 64x64 baseline SPS and a PPS, as x264 writes them.
    const SPS: &[u8] = &[
        0x67, 0x42, 0xC0, 0x0A, 0xD9, 0x04, 0x26, 0xC0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00,
        0x00, 0x03, 0x00, 0xF0, 0x3C, 0x48, 0x99, 0x20,
    ];
    const PPS: &[u8] = &[0x68, 0xCB, 0x83, 0xCB, 0x20];

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
        out
    }

    fn vp8_key(width: u16, height: u16) -> Vec<u8> {
        let mut frame = vec![0x50, 0x42, 0x00, 0x9D, 0x01, 0x2A];
        frame.extend_from_slice(&width.to_le_bytes());
        frame.extend_from_slice(&height.to_le_bytes());
        frame.extend_from_slice(&[0; 8]);
        frame
    }

    #[test]
    fn splits_annex_b_with_either_start_code() {
        let stream = [
            0, 0, 0, 1, 9, 0x10, 0, 0, 1, 0x65, 1, 2, 0, 0, 0, 1, 0x41, 7,
        ];
        let nals: Vec<&[u8]> = nal_units(&stream).collect();
        assert_eq!(nals, [&[9u8, 0x10][..], &[0x65, 1, 2], &[0x41, 7]]);
        let prefixed = annex_b_to_length_prefixed(&stream);
        assert_eq!(&prefixed[..6], &[0, 0, 0, 2, 9, 0x10]);
        assert_eq!(prefixed.len(), 4 * 3 + 2 + 3 + 2);
    }

    #[test]
    fn h264_starts_at_the_first_idr_with_its_configuration() {
        let mut feed = WebrtcFeed::new(Some(2));
        let delta = annex_b(&[&[0x41, 0x9A, 0x00]]);
        assert!(
            feed.push_video(FeedVideoCodec::H264, 90_000, 90_000, 5, true, &delta)
                .unwrap()
                .is_empty()
        );
        assert!(feed.wants_keyframe());
        // Audio before the video started is held back.
        assert!(feed.push_audio(48_000, 48_000, 0, b"opus").is_none());
        let key = annex_b(&[SPS, PPS, &[0x65, 0x88, 0x84]]);
        let out = feed
            .push_video(FeedVideoCodec::H264, 93_000, 90_000, 40, true, &key)
            .unwrap();
        let IngestMessage::MatroskaStart(start) = &out[0] else {
            panic!("no start: {out:?}");
        };
        assert_eq!((start.width, start.height, start.has_audio), (64, 64, true));
        let header = &start.header;
        let avcc_at = header
            .windows(2)
            .position(|w| w == [0x63, 0xA2])
            .expect("codec private");
        // id, one-byte size, then the record: version 1 and the SPS's profile.
        assert_eq!(&header[avcc_at + 3..avcc_at + 7], &[1, 0x42, 0xC0, 0x0A]);
        assert!(matches!(out[1], IngestMessage::Matroska(_)));
        assert!(!feed.wants_keyframe());
        // Audio counts from its own first arrival: 48_000 ticks later = 1 s after 0 ms.
        let Some(IngestMessage::Matroska(block)) = feed.push_audio(96_000, 48_000, 900, b"opus")
        else {
            panic!("audio dropped");
        };
        // Cluster at 40 ms (the keyframe); audio at 1000 ms is +960.
        assert_eq!(
            &block[block.len() - 7..block.len() - 5],
            &960i16.to_be_bytes()
        );
    }

    #[test]
    fn a_gap_waits_for_the_next_keyframe() {
        let mut feed = WebrtcFeed::new(None);
        let key = vp8_key(640, 360);
        let out = feed
            .push_video(FeedVideoCodec::Vp8, 0, 90_000, 0, true, &key)
            .unwrap();
        assert!(
            matches!(&out[0], IngestMessage::MatroskaStart(s) if s.width == 640 && s.height == 360 && !s.has_audio)
        );
        let delta = [0x51, 0, 0, 0];
        assert_eq!(
            feed.push_video(FeedVideoCodec::Vp8, 3000, 90_000, 33, true, &delta)
                .unwrap()
                .len(),
            1
        );
        assert!(
            feed.push_video(FeedVideoCodec::Vp8, 9000, 90_000, 100, false, &delta)
                .unwrap()
                .is_empty()
        );
        assert!(feed.wants_keyframe());
        assert_eq!(
            feed.push_video(FeedVideoCodec::Vp8, 12_000, 90_000, 133, true, &key)
                .unwrap()
                .len(),
            1
        );
        assert!(!feed.wants_keyframe());
        // No audio track: audio frames go nowhere.
        assert!(feed.push_audio(0, 48_000, 0, b"x").is_none());
    }

    #[test]
    fn bad_keyframes_are_errors_not_panics() {
        let mut feed = WebrtcFeed::new(None);
        let idr_without_sps = annex_b(&[&[0x65, 0x88]]);
        assert_eq!(
            feed.push_video(FeedVideoCodec::H264, 0, 90_000, 0, true, &idr_without_sps),
            Err(FeedError::BadKeyframe("H.264"))
        );
        let zero = vp8_key(0, 360);
        assert_eq!(
            feed.push_video(FeedVideoCodec::Vp8, 0, 90_000, 0, true, &zero),
            Err(FeedError::UnsupportedSize(0, 360))
        );
    }

    #[test]
    fn timestamps_follow_the_rtp_clock_from_the_anchor() {
        let anchor = Anchor {
            rtp_time: 1_000_000,
            clock_hz: 90_000,
            arrival_ms: 250,
        };
        assert_eq!(anchor.timestamp_ms(1_000_000), 250);
        assert_eq!(anchor.timestamp_ms(1_090_000), 1250);
        // A reordered frame from before the anchor, not below zero.
        assert_eq!(anchor.timestamp_ms(0), 0);
    }
}
