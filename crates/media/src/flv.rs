//! FLV: the container RTMP media travels in, and the format we feed ffmpeg.
//!
//! RTMP audio and video messages carry exactly the body of an FLV tag, so
//! turning a publish into an FLV byte stream is framing only: a file header,
//! then per message an 11-byte tag header, the body, and the previous tag size.

use bytes::{BufMut, Bytes, BytesMut};

/// Kind of an FLV tag (the RTMP message type of its body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// Audio data (FLV tag type 8).
    Audio,
    /// Video data (FLV tag type 9).
    Video,
    /// Script data such as `onMetaData` (FLV tag type 18).
    Script,
}

impl TagKind {
    fn code(self) -> u8 {
        match self {
            TagKind::Audio => 8,
            TagKind::Video => 9,
            TagKind::Script => 18,
        }
    }
}

/// One media message of a publish, in FLV terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTag {
    /// Audio, video or script.
    pub kind: TagKind,
    /// Timestamp in milliseconds, as the publisher sent it (wraps at 2^32).
    pub timestamp_ms: u32,
    /// The tag body: exactly an RTMP audio or video message payload.
    pub body: Bytes,
}

/// The FLV file header for a stream with audio and video, followed by the
/// first "previous tag size" (0).
pub fn file_header() -> Bytes {
    Bytes::from_static(&[b'F', b'L', b'V', 1, 0b0000_0101, 0, 0, 0, 9, 0, 0, 0, 0])
}

/// Largest body an FLV tag can carry (its size field has 24 bits).
pub const MAX_TAG_BODY_BYTES: usize = (1 << 24) - 1;

/// Encodes one tag and its trailing previous-tag-size field.
///
/// Returns `None` for a body larger than [`MAX_TAG_BODY_BYTES`], which FLV
/// cannot express (RTMP messages are bounded the same way, so a well-formed
/// publish never hits it).
pub fn encode_tag(tag: &MediaTag) -> Option<Bytes> {
    let body_len = tag.body.len();
    if body_len > MAX_TAG_BODY_BYTES {
        return None;
    }
    let mut out = BytesMut::with_capacity(11 + body_len + 4);
    out.put_u8(tag.kind.code());
    put_u24(&mut out, body_len as u32);
    put_u24(&mut out, tag.timestamp_ms & 0x00ff_ffff);
    out.put_u8((tag.timestamp_ms >> 24) as u8);
    put_u24(&mut out, 0); // stream id, always 0
    out.extend_from_slice(&tag.body);
    out.put_u32(11 + body_len as u32);
    Some(out.freeze())
}

fn put_u24(out: &mut BytesMut, value: u32) {
    out.put_u8((value >> 16) as u8);
    out.put_u8((value >> 8) as u8);
    out.put_u8(value as u8);
}

/// What the first bytes of a video tag body say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoTagInfo {
    /// H.264 sequence header (AVCDecoderConfigurationRecord follows at byte 5).
    AvcSequenceHeader,
    /// H.264 coded frames; `keyframe` for IDR access units.
    AvcFrames {
        /// Whether the FLV frame type says keyframe.
        keyframe: bool,
    },
    /// H.264 end of sequence.
    AvcEndOfSequence,
    /// Any other codec (FLV codec id, or the enhanced-RTMP marker 0x80 set).
    Unsupported {
        /// The codec id nibble, or 0xff for enhanced RTMP (HEVC, AV1, VP9).
        codec_id: u8,
    },
    /// Too short to say anything.
    Empty,
}

/// Classifies a video tag body.
pub fn classify_video(body: &[u8]) -> VideoTagInfo {
    let Some(&first) = body.first() else {
        return VideoTagInfo::Empty;
    };
    if first & 0x80 != 0 {
        return VideoTagInfo::Unsupported { codec_id: 0xff };
    }
    let codec_id = first & 0x0f;
    if codec_id != 7 {
        return VideoTagInfo::Unsupported { codec_id };
    }
    let keyframe = (first >> 4) == 1;
    match body.get(1) {
        Some(0) => VideoTagInfo::AvcSequenceHeader,
        Some(1) => VideoTagInfo::AvcFrames { keyframe },
        Some(2) => VideoTagInfo::AvcEndOfSequence,
        _ => VideoTagInfo::Empty,
    }
}

/// What the first bytes of an audio tag body say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioTagInfo {
    /// AAC AudioSpecificConfig.
    AacSequenceHeader,
    /// AAC raw frames.
    AacFrames,
    /// Any other sound format (the FLV sound format nibble).
    Unsupported {
        /// FLV sound format (2 = MP3, 11 = Speex, ...).
        sound_format: u8,
    },
    /// Too short to say anything.
    Empty,
}

/// Classifies an audio tag body.
pub fn classify_audio(body: &[u8]) -> AudioTagInfo {
    let Some(&first) = body.first() else {
        return AudioTagInfo::Empty;
    };
    let sound_format = first >> 4;
    if sound_format != 10 {
        return AudioTagInfo::Unsupported { sound_format };
    }
    match body.get(1) {
        Some(0) => AudioTagInfo::AacSequenceHeader,
        Some(1) => AudioTagInfo::AacFrames,
        _ => AudioTagInfo::Empty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_layout_matches_flv_spec() {
        let tag = MediaTag {
            kind: TagKind::Video,
            timestamp_ms: 0x0102_0304,
            body: Bytes::from_static(&[0x17, 1, 0, 0, 0, 9, 9]),
        };
        let encoded = encode_tag(&tag).expect("small body");
        assert_eq!(encoded[0], 9);
        assert_eq!(&encoded[1..4], &[0, 0, 7]);
        assert_eq!(&encoded[4..7], &[0x02, 0x03, 0x04]);
        assert_eq!(encoded[7], 0x01, "extended timestamp byte");
        assert_eq!(&encoded[11..18], &tag.body[..]);
        assert_eq!(&encoded[18..], &18u32.to_be_bytes());
    }

    #[test]
    fn classifies_codecs() {
        assert_eq!(classify_video(&[0x17, 0]), VideoTagInfo::AvcSequenceHeader);
        assert_eq!(
            classify_video(&[0x27, 1]),
            VideoTagInfo::AvcFrames { keyframe: false }
        );
        assert_eq!(
            classify_video(&[0x12, 0]),
            VideoTagInfo::Unsupported { codec_id: 2 }
        );
        assert_eq!(
            classify_video(&[0x90, 0]),
            VideoTagInfo::Unsupported { codec_id: 0xff }
        );
        assert_eq!(classify_video(&[]), VideoTagInfo::Empty);
        assert_eq!(classify_audio(&[0xaf, 0]), AudioTagInfo::AacSequenceHeader);
        assert_eq!(
            classify_audio(&[0x2f, 1]),
            AudioTagInfo::Unsupported { sound_format: 2 }
        );
    }
}
