//! A live Matroska writer: how media received over WebRTC reaches ffmpeg's
//! stdin as one container (H.264 or VP8 video, Opus audio), with the
//! timestamps the publisher's RTP carried.
//!
//! Only what a live feed needs is written: the EBML header, a segment and
//! clusters of unknown size (the stream has no end known in advance, and
//! nothing is seekable), the track list, and `SimpleBlock`s in millisecond
//! timestamps. Sans-IO: each call answers the bytes to write.

use bytes::{BufMut, Bytes, BytesMut};

/// A video codec a WebRTC publisher may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264, with its `AVCDecoderConfigurationRecord` (`avcC`); blocks
    /// carry length-prefixed NAL units (4-byte lengths).
    H264 {
        /// The decoder configuration (SPS and PPS).
        avcc: Bytes,
    },
    /// VP8 frames as they are.
    Vp8,
}

/// The tracks of a live feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracks {
    /// The video track's codec.
    pub video: VideoCodec,
    /// Coded width in pixels.
    pub width: u32,
    /// Coded height in pixels.
    pub height: u32,
    /// Opus audio at 48 kHz with this many channels, when there is audio.
    pub opus_channels: Option<u8>,
}

/// Track number of the video track.
pub const VIDEO_TRACK: u8 = 1;
/// Track number of the audio track.
pub const AUDIO_TRACK: u8 = 2;

/// Clusters start at a video keyframe, or when a block's timestamp would no
/// longer fit the 16-bit offset from its cluster's (well before).
const CLUSTER_SPAN_MAX_MS: u64 = 30_000;

const ID_EBML: u32 = 0x1A45_DFA3;
const ID_EBML_VERSION: u32 = 0x4286;
const ID_EBML_READ_VERSION: u32 = 0x42F7;
const ID_EBML_MAX_ID_LENGTH: u32 = 0x42F2;
const ID_EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
const ID_DOC_TYPE: u32 = 0x4282;
const ID_DOC_TYPE_VERSION: u32 = 0x4287;
const ID_DOC_TYPE_READ_VERSION: u32 = 0x4285;
const ID_SEGMENT: u32 = 0x1853_8067;
const ID_INFO: u32 = 0x1549_A966;
const ID_TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const ID_MUXING_APP: u32 = 0x4D80;
const ID_WRITING_APP: u32 = 0x5741;
const ID_TRACKS: u32 = 0x1654_AE6B;
const ID_TRACK_ENTRY: u32 = 0xAE;
const ID_TRACK_NUMBER: u32 = 0xD7;
const ID_TRACK_UID: u32 = 0x73C5;
const ID_TRACK_TYPE: u32 = 0x83;
const ID_FLAG_LACING: u32 = 0x9C;
const ID_CODEC_ID: u32 = 0x86;
const ID_CODEC_PRIVATE: u32 = 0x63A2;
const ID_CODEC_DELAY: u32 = 0x56AA;
const ID_SEEK_PRE_ROLL: u32 = 0x56BB;
const ID_VIDEO: u32 = 0xE0;
const ID_PIXEL_WIDTH: u32 = 0xB0;
const ID_PIXEL_HEIGHT: u32 = 0xBA;
const ID_AUDIO: u32 = 0xE1;
const ID_SAMPLING_FREQUENCY: u32 = 0xB5;
const ID_CHANNELS: u32 = 0x9F;
const ID_CLUSTER: u32 = 0x1F43_B675;
const ID_TIMESTAMP: u32 = 0xE7;
const ID_SIMPLE_BLOCK: u32 = 0xA3;

/// The size field meaning "unknown" (8 bytes, all value bits set).
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// Opus's pre-skip at 48 kHz, as browsers' encoders use it (6.5 ms).
const OPUS_PRE_SKIP_SAMPLES: u16 = 312;

/// Writes a live Matroska stream: [`MatroskaWriter::header`] first, then
/// [`MatroskaWriter::block`] for every frame in timestamp order.
#[derive(Debug, Default)]
pub struct MatroskaWriter {
    cluster_start_ms: Option<u64>,
}

impl MatroskaWriter {
    /// The EBML header, the segment's start and the track list.
    pub fn header(tracks: &Tracks) -> Bytes {
        let mut out = BytesMut::new();
        let mut ebml = BytesMut::new();
        put_uint(&mut ebml, ID_EBML_VERSION, 1);
        put_uint(&mut ebml, ID_EBML_READ_VERSION, 1);
        put_uint(&mut ebml, ID_EBML_MAX_ID_LENGTH, 4);
        put_uint(&mut ebml, ID_EBML_MAX_SIZE_LENGTH, 8);
        put_bytes(&mut ebml, ID_DOC_TYPE, b"matroska");
        put_uint(&mut ebml, ID_DOC_TYPE_VERSION, 4);
        put_uint(&mut ebml, ID_DOC_TYPE_READ_VERSION, 2);
        put_bytes(&mut out, ID_EBML, &ebml);

        put_id(&mut out, ID_SEGMENT);
        out.put_slice(&UNKNOWN_SIZE);
        let mut info = BytesMut::new();
        put_uint(&mut info, ID_TIMESTAMP_SCALE, 1_000_000); // milliseconds
        put_bytes(&mut info, ID_MUXING_APP, b"streamweave");
        put_bytes(&mut info, ID_WRITING_APP, b"streamweave");
        put_bytes(&mut out, ID_INFO, &info);

        let mut list = BytesMut::new();
        let mut video = BytesMut::new();
        put_uint(&mut video, ID_TRACK_NUMBER, u64::from(VIDEO_TRACK));
        put_uint(&mut video, ID_TRACK_UID, u64::from(VIDEO_TRACK));
        put_uint(&mut video, ID_TRACK_TYPE, 1);
        put_uint(&mut video, ID_FLAG_LACING, 0);
        match &tracks.video {
            VideoCodec::H264 { avcc } => {
                put_bytes(&mut video, ID_CODEC_ID, b"V_MPEG4/ISO/AVC");
                put_bytes(&mut video, ID_CODEC_PRIVATE, avcc);
            }
            VideoCodec::Vp8 => put_bytes(&mut video, ID_CODEC_ID, b"V_VP8"),
        }
        let mut picture = BytesMut::new();
        put_uint(&mut picture, ID_PIXEL_WIDTH, u64::from(tracks.width));
        put_uint(&mut picture, ID_PIXEL_HEIGHT, u64::from(tracks.height));
        put_bytes(&mut video, ID_VIDEO, &picture);
        put_bytes(&mut list, ID_TRACK_ENTRY, &video);
        if let Some(channels) = tracks.opus_channels {
            let mut audio = BytesMut::new();
            put_uint(&mut audio, ID_TRACK_NUMBER, u64::from(AUDIO_TRACK));
            put_uint(&mut audio, ID_TRACK_UID, u64::from(AUDIO_TRACK));
            put_uint(&mut audio, ID_TRACK_TYPE, 2);
            put_uint(&mut audio, ID_FLAG_LACING, 0);
            put_bytes(&mut audio, ID_CODEC_ID, b"A_OPUS");
            put_bytes(&mut audio, ID_CODEC_PRIVATE, &opus_head(channels));
            // In nanoseconds, whatever the timestamp scale.
            put_uint(
                &mut audio,
                ID_CODEC_DELAY,
                u64::from(OPUS_PRE_SKIP_SAMPLES) * 1_000_000_000 / 48_000,
            );
            put_uint(&mut audio, ID_SEEK_PRE_ROLL, 80_000_000);
            let mut sound = BytesMut::new();
            put_float(&mut sound, ID_SAMPLING_FREQUENCY, 48_000.0);
            put_uint(&mut sound, ID_CHANNELS, u64::from(channels));
            put_bytes(&mut audio, ID_AUDIO, &sound);
            put_bytes(&mut list, ID_TRACK_ENTRY, &audio);
        }
        put_bytes(&mut out, ID_TRACKS, &list);
        out.freeze()
    }

    /// One frame of `track` at `timestamp_ms` (from the stream's start);
    /// opens a cluster first where one is due. Timestamps must not go back
    /// by more than 30 s from the cluster's start; a frame that would is
    /// put in a new cluster.
    pub fn block(&mut self, track: u8, timestamp_ms: u64, keyframe: bool, frame: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(frame.len() + 32);
        let relative = self.cluster_start_ms.and_then(|start| {
            let offset = i64::try_from(timestamp_ms).ok()? - i64::try_from(start).ok()?;
            i16::try_from(offset).ok()
        });
        let due = match (self.cluster_start_ms, relative) {
            (None, _) | (_, None) => true,
            (Some(start), Some(_)) => {
                (track == VIDEO_TRACK && keyframe && timestamp_ms > start)
                    || timestamp_ms.saturating_sub(start) >= CLUSTER_SPAN_MAX_MS
            }
        };
        let relative = if due {
            put_id(&mut out, ID_CLUSTER);
            out.put_slice(&UNKNOWN_SIZE);
            put_uint(&mut out, ID_TIMESTAMP, timestamp_ms);
            self.cluster_start_ms = Some(timestamp_ms);
            0
        } else {
            relative.unwrap_or(0)
        };
        put_id(&mut out, ID_SIMPLE_BLOCK);
        put_size(&mut out, 4 + frame.len() as u64);
        out.put_u8(0x80 | track); // the track number as a one-byte vint
        out.put_i16(relative);
        out.put_u8(if keyframe { 0x80 } else { 0x00 });
        out.put_slice(frame);
        out.freeze()
    }
}

/// The `OpusHead` identification header (RFC 7845), mapping family 0.
fn opus_head(channels: u8) -> [u8; 19] {
    let mut head = [0u8; 19];
    head[..8].copy_from_slice(b"OpusHead");
    head[8] = 1; // version
    head[9] = channels;
    head[10..12].copy_from_slice(&OPUS_PRE_SKIP_SAMPLES.to_le_bytes());
    head[12..16].copy_from_slice(&48_000u32.to_le_bytes());
    // Output gain 0, channel mapping family 0.
    head
}

fn put_id(out: &mut BytesMut, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    out.put_slice(&bytes[skip..]);
}

/// An EBML variable-size integer in the fewest bytes.
fn put_size(out: &mut BytesMut, size: u64) {
    let mut length = 1u32;
    // A length of n bytes holds values below 2^(7n) - 1 (all ones is "unknown").
    while length < 8 && size >= (1u64 << (7 * length)) - 1 {
        length += 1;
    }
    let marked = size | (1u64 << (7 * length));
    out.put_slice(&marked.to_be_bytes()[(8 - length as usize)..]);
}

fn put_bytes(out: &mut BytesMut, id: u32, body: &[u8]) {
    put_id(out, id);
    put_size(out, body.len() as u64);
    out.put_slice(body);
}

fn put_uint(out: &mut BytesMut, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    put_bytes(out, id, &bytes[skip..]);
}

fn put_float(out: &mut BytesMut, id: u32, value: f64) {
    put_bytes(out, id, &value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shortest_vints() {
        let encode = |size| {
            let mut out = BytesMut::new();
            put_size(&mut out, size);
            out.to_vec()
        };
        assert_eq!(encode(0), [0x80]);
        assert_eq!(encode(126), [0xFE]);
        // 127 in one byte would read as "unknown".
        assert_eq!(encode(127), [0x40, 0x7F]);
        assert_eq!(encode(16_382), [0x7F, 0xFE]);
        assert_eq!(encode(16_383), [0x20, 0x3F, 0xFF]);
    }

    #[test]
    fn ids_keep_their_marker_bits() {
        let mut out = BytesMut::new();
        put_id(&mut out, ID_SIMPLE_BLOCK);
        put_id(&mut out, ID_CODEC_PRIVATE);
        put_id(&mut out, ID_SEGMENT);
        assert_eq!(out.to_vec(), [0xA3, 0x63, 0xA2, 0x18, 0x53, 0x80, 0x67]);
    }

    #[test]
    fn blocks_open_clusters_at_keyframes_and_count_from_them() {
        let mut writer = MatroskaWriter::default();
        let first = writer.block(VIDEO_TRACK, 1_000, true, b"key");
        assert_eq!(&first[..4], &ID_CLUSTER.to_be_bytes());
        let audio = writer.block(AUDIO_TRACK, 1_020, false, b"opus");
        // A block alone: id, size (4 + 4), track 2, +20 ms, no flags, data.
        assert_eq!(
            audio.to_vec(),
            [0xA3, 0x88, 0x82, 0x00, 0x14, 0x00, b'o', b'p', b'u', b's']
        );
        let delta = writer.block(VIDEO_TRACK, 1_033, false, b"d");
        assert_eq!(delta[0], 0xA3);
        let key = writer.block(VIDEO_TRACK, 3_000, true, b"k");
        assert_eq!(&key[..4], &ID_CLUSTER.to_be_bytes());
        // Audio earlier than its cluster's start (allowed: -20 ms).
        let late = writer.block(AUDIO_TRACK, 2_980, false, b"a");
        assert_eq!(&late[3..5], &(-20i16).to_be_bytes());
        // Far from the cluster's start: a new cluster.
        let far = writer.block(AUDIO_TRACK, 40_000, false, b"a");
        assert_eq!(&far[..4], &ID_CLUSTER.to_be_bytes());
    }

    #[test]
    fn opus_head_is_rfc_7845() {
        let head = opus_head(2);
        assert_eq!(&head[..8], b"OpusHead");
        assert_eq!(head[9], 2);
        assert_eq!(u16::from_le_bytes([head[10], head[11]]), 312);
        assert_eq!(
            u32::from_le_bytes([head[12], head[13], head[14], head[15]]),
            48_000
        );
    }
}
