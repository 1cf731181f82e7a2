//! Fragmented MP4 as ffmpeg's mp4 muxer streams it (`empty_moov`,
//! `default_base_moof`), cut into what HLS serves: the init file, partial
//! segments (one fragment each) and segments (the fragments between two
//! cuts). Pure: bytes in, items out, no I/O and no clock.
//!
//! [`Fmp4Reader`] frames the byte stream into the init file and fragments,
//! reading each fragment's decode time, duration and whether it starts with
//! a sync sample (`moof` boxes decoded by `mp4-atom`). [`Segmenter`] groups
//! one rendition's fragments into parts and segments: a video segment starts
//! at a fragment that begins with a keyframe once the open one is at least
//! half the target long (the ladder forces keyframes on the target), an
//! audio segment at the first fragment past the next multiple of the target
//! (so audio and video positions cover the same media time).

use bytes::{Buf, Bytes, BytesMut};
use mp4_atom::{Decode, Moof, Moov};

/// Why a fragmented MP4 stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fmp4Error {
    /// A box larger than the reader accepts.
    #[error("box `{kind}` of {size} bytes is over the {max} byte limit")]
    BoxTooLarge {
        /// Box type.
        kind: String,
        /// Declared size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A box header that cannot be right (size below its header, or a size
    /// running to the end of a stream that has no end).
    #[error("malformed box header")]
    BadHeader,
    /// A fragment arrived before the `moov` box.
    #[error("fragment before the init file")]
    FragmentBeforeInit,
    /// A `moof` not followed by its `mdat`.
    #[error("`moof` followed by `{0}` instead of `mdat`")]
    MissingMdat(String),
    /// A box that did not decode.
    #[error("invalid `{kind}`: {reason}")]
    Invalid {
        /// Box type.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// One fragment (`moof` + `mdat`): a partial segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// The `moof` and `mdat` boxes, as served.
    pub bytes: Bytes,
    /// Decode time of its first sample, in the track's timescale.
    pub decode_time: u64,
    /// Sum of its samples' durations, in the track's timescale.
    pub duration: u64,
    /// Its first sample is a sync sample (a keyframe; every audio sample).
    pub independent: bool,
}

/// What the reader found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fmp4Item {
    /// The init file (`ftyp` and `moov`).
    Init {
        /// Its bytes.
        bytes: Bytes,
        /// Ticks per second of the (first) track.
        timescale: u32,
    },
    /// A fragment.
    Fragment(Fragment),
}

/// Largest box accepted by default: a 1080p keyframe fragment is a few
/// hundred KiB; this leaves room for any sane bitrate.
pub const DEFAULT_MAX_BOX_BYTES: u64 = 64 * 1024 * 1024;

/// The trex defaults of the track, used where a fragment leaves them out.
#[derive(Debug, Clone, Copy, Default)]
struct TrackDefaults {
    timescale: u32,
    sample_duration: u32,
    sample_flags: u32,
}

/// `sample_is_non_sync_sample` in ISO/IEC 14496-12 sample flags.
const NON_SYNC_SAMPLE: u32 = 0x0001_0000;

/// Frames a fragmented MP4 byte stream. Feed it with [`Fmp4Reader::push`],
/// then take items with [`Fmp4Reader::next_item`] until it returns `None`.
#[derive(Debug)]
pub struct Fmp4Reader {
    buffer: BytesMut,
    max_box_bytes: u64,
    ftyp: Option<Bytes>,
    track: Option<TrackDefaults>,
}

impl Default for Fmp4Reader {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BOX_BYTES)
    }
}

impl Fmp4Reader {
    /// A reader refusing boxes over `max_box_bytes`.
    pub fn new(max_box_bytes: u64) -> Self {
        Fmp4Reader {
            buffer: BytesMut::new(),
            max_box_bytes,
            ftyp: None,
            track: None,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes held that do not make a whole item yet.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete item, `None` until more bytes arrive. An error is
    /// final: the stream cannot be resynchronised.
    pub fn next_item(&mut self) -> Result<Option<Fmp4Item>, Fmp4Error> {
        loop {
            let Some((kind, size)) = self.peek_box(0)? else {
                return Ok(None);
            };
            match &kind {
                b"ftyp" => {
                    let ftyp = self.take(size)?;
                    self.ftyp = Some(ftyp);
                }
                b"moov" => {
                    let moov = self.take(size)?;
                    let track = track_defaults(&moov)?;
                    self.track = Some(track);
                    let mut init = BytesMut::new();
                    if let Some(ftyp) = &self.ftyp {
                        init.extend_from_slice(ftyp);
                    }
                    init.extend_from_slice(&moov);
                    return Ok(Some(Fmp4Item::Init {
                        bytes: init.freeze(),
                        timescale: track.timescale,
                    }));
                }
                b"moof" => {
                    let Some(track) = self.track else {
                        return Err(Fmp4Error::FragmentBeforeInit);
                    };
                    let Some((next_kind, next_size)) = self.peek_box(size)? else {
                        return Ok(None);
                    };
                    if &next_kind != b"mdat" {
                        return Err(Fmp4Error::MissingMdat(
                            String::from_utf8_lossy(&next_kind).into_owned(),
                        ));
                    }
                    let total = size.checked_add(next_size).ok_or(Fmp4Error::BadHeader)?;
                    let bytes = self.take(total)?;
                    let fragment = read_fragment(&bytes[..size], &track, bytes.clone())?;
                    return Ok(Some(Fmp4Item::Fragment(fragment)));
                }
                // styp, sidx, prft, free, mfra, emsg...: nothing players need here.
                _ => {
                    self.take(size)?;
                }
            }
        }
    }

    /// The type and whole size of the box starting `offset` bytes into the
    /// buffer, once its header is there (and, before `moof` handling, the
    /// whole box is known to fit the limit).
    fn peek_box(&self, offset: usize) -> Result<Option<([u8; 4], usize)>, Fmp4Error> {
        let Some(rest) = self.buffer.get(offset..) else {
            return Ok(None);
        };
        if rest.len() < 8 {
            return Ok(None);
        }
        let mut header = &rest[..8];
        let short_size = u64::from(header.get_u32());
        let mut kind = [0u8; 4];
        header.copy_to_slice(&mut kind);
        let (size, header_len) = match short_size {
            0 => return Err(Fmp4Error::BadHeader),
            1 => {
                if rest.len() < 16 {
                    return Ok(None);
                }
                (
                    u64::from_be_bytes(rest[8..16].try_into().unwrap_or([0; 8])),
                    16,
                )
            }
            size => (size, 8),
        };
        if size < header_len {
            return Err(Fmp4Error::BadHeader);
        }
        if size > self.max_box_bytes {
            return Err(Fmp4Error::BoxTooLarge {
                kind: String::from_utf8_lossy(&kind).into_owned(),
                size,
                max: self.max_box_bytes,
            });
        }
        let size = usize::try_from(size).map_err(|_| Fmp4Error::BadHeader)?;
        if rest.len() < size {
            return Ok(None);
        }
        Ok(Some((kind, size)))
    }

    fn take(&mut self, size: usize) -> Result<Bytes, Fmp4Error> {
        if self.buffer.len() < size {
            return Err(Fmp4Error::BadHeader);
        }
        Ok(self.buffer.split_to(size).freeze())
    }
}

fn invalid(kind: &'static str, reason: impl ToString) -> Fmp4Error {
    Fmp4Error::Invalid {
        kind,
        reason: reason.to_string(),
    }
}

fn track_defaults(moov_bytes: &[u8]) -> Result<TrackDefaults, Fmp4Error> {
    let moov = Moov::decode(&mut &moov_bytes[..]).map_err(|err| invalid("moov", err))?;
    let trak = moov
        .trak
        .first()
        .ok_or_else(|| invalid("moov", "no track"))?;
    let timescale = trak.mdia.mdhd.timescale;
    if timescale == 0 {
        return Err(invalid("mdhd", "zero timescale"));
    }
    let track_id = trak.tkhd.track_id;
    let trex = moov
        .mvex
        .as_ref()
        .and_then(|mvex| mvex.trex.iter().find(|t| t.track_id == track_id));
    Ok(TrackDefaults {
        timescale,
        sample_duration: trex.map_or(0, |t| t.default_sample_duration),
        sample_flags: trex.map_or(0, |t| t.default_sample_flags),
    })
}

fn read_fragment(
    moof_bytes: &[u8],
    track: &TrackDefaults,
    bytes: Bytes,
) -> Result<Fragment, Fmp4Error> {
    let moof = Moof::decode(&mut &moof_bytes[..]).map_err(|err| invalid("moof", err))?;
    let traf = moof
        .traf
        .first()
        .ok_or_else(|| invalid("moof", "no track fragment"))?;
    let decode_time = traf
        .tfdt
        .as_ref()
        .ok_or_else(|| invalid("traf", "no tfdt"))?
        .base_media_decode_time;
    let default_duration = traf
        .tfhd
        .default_sample_duration
        .unwrap_or(track.sample_duration);
    let default_flags = traf.tfhd.default_sample_flags.unwrap_or(track.sample_flags);
    let mut duration: u64 = 0;
    let mut first_flags = None;
    for trun in &traf.trun {
        for entry in trun.samples.iter() {
            if first_flags.is_none() {
                first_flags = Some(entry.flags.unwrap_or(default_flags));
            }
            duration = duration
                .checked_add(u64::from(entry.duration.unwrap_or(default_duration)))
                .ok_or_else(|| invalid("trun", "duration overflows"))?;
        }
    }
    let Some(first_flags) = first_flags else {
        return Err(invalid("trun", "no samples"));
    };
    Ok(Fragment {
        bytes,
        decode_time,
        duration,
        independent: first_flags & NON_SYNC_SAMPLE == 0,
    })
}

/// A partial segment, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartCut {
    /// The segment it belongs to (0-based media sequence).
    pub sequence: u64,
    /// Its place in the segment (0-based).
    pub index: u32,
    /// Its duration.
    pub duration_ms: u32,
    /// Where it starts in its segment.
    pub offset_ms: u32,
    /// It starts with a sync sample.
    pub independent: bool,
    /// The next part is expected to start the next segment (so the
    /// playlist hints that one rather than one that will not come).
    pub ends_segment: bool,
    /// The fragment's bytes.
    pub bytes: Bytes,
}

/// A finished segment: its parts' bytes in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCut {
    /// 0-based media sequence.
    pub sequence: u64,
    /// Its duration.
    pub duration_ms: u32,
    /// How many parts it was served as.
    pub parts: u32,
    /// The segment's bytes.
    pub bytes: Bytes,
}

/// What a fragment made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// The segment before this fragment is complete (always reported
    /// before the part that starts the next one).
    Segment(SegmentCut),
    /// A new part of the open segment.
    Part(PartCut),
}

#[derive(Debug)]
struct OpenSegment {
    sequence: u64,
    start: u64,
    end: u64,
    parts: u32,
    bytes: BytesMut,
}

/// Groups one rendition's fragments into parts and segments.
#[derive(Debug)]
pub struct Segmenter {
    timescale: u64,
    target_ms: u64,
    video: bool,
    origin: Option<u64>,
    next_sequence: u64,
    open: Option<OpenSegment>,
    longest_part: u64,
}

impl Segmenter {
    /// For a track of `timescale` ticks per second, cutting segments of
    /// about `target_ms`; `video` cuts at keyframes, audio on time.
    pub fn new(timescale: u32, target_ms: u32, video: bool) -> Self {
        Segmenter {
            timescale: u64::from(timescale.max(1)),
            target_ms: u64::from(target_ms.max(1)),
            video,
            origin: None,
            next_sequence: 0,
            open: None,
            longest_part: 0,
        }
    }

    fn ms(&self, ticks: u64) -> u64 {
        ticks
            .saturating_mul(1000)
            .saturating_add(self.timescale / 2)
            / self.timescale
    }

    fn to_ms_u32(&self, ticks: u64) -> u32 {
        u32::try_from(self.ms(ticks)).unwrap_or(u32::MAX)
    }

    fn starts_segment(&self, open: &OpenSegment, fragment: &Fragment) -> bool {
        if self.video {
            let open_ms = self.ms(open.end.saturating_sub(open.start));
            fragment.independent && open_ms * 2 >= self.target_ms
        } else {
            self.past_boundary(open, fragment.decode_time)
        }
    }

    /// Audio: a fragment starting at `at` (ticks) is at or past the end of
    /// the open segment on the grid of target durations.
    fn past_boundary(&self, open: &OpenSegment, at: u64) -> bool {
        let origin = self.origin.unwrap_or(open.start);
        let at_ms = self.ms(at.saturating_sub(origin));
        at_ms >= (open.sequence + 1).saturating_mul(self.target_ms)
    }

    /// Whether the fragment after the open segment's last is expected to
    /// start a new segment: on the grid for audio; for video once the
    /// segment is within half a part of the target (the ladder forces a
    /// keyframe there).
    fn expects_cut(&self, open: &OpenSegment) -> bool {
        if self.video {
            let open_ms = self.ms(open.end.saturating_sub(open.start));
            open_ms + self.ms(self.longest_part) / 2 >= self.target_ms
        } else {
            self.past_boundary(open, open.end)
        }
    }

    /// Takes the next fragment: the segment it closes, if any, then the part it is.
    pub fn push(&mut self, fragment: Fragment) -> Vec<Cut> {
        let mut cuts = Vec::with_capacity(2);
        self.origin.get_or_insert(fragment.decode_time);
        let closes = match &self.open {
            Some(open) => self.starts_segment(open, &fragment),
            None => false,
        };
        if closes && let Some(done) = self.finish() {
            cuts.push(Cut::Segment(done));
        }
        let open = match &mut self.open {
            Some(open) => open,
            None => {
                let sequence = self.next_sequence;
                self.next_sequence += 1;
                self.open.insert(OpenSegment {
                    sequence,
                    start: fragment.decode_time,
                    end: fragment.decode_time,
                    parts: 0,
                    bytes: BytesMut::new(),
                })
            }
        };
        let offset = fragment.decode_time.saturating_sub(open.start);
        let index = open.parts;
        open.parts += 1;
        open.end = fragment.decode_time.saturating_add(fragment.duration);
        open.bytes.extend_from_slice(&fragment.bytes);
        let sequence = open.sequence;
        self.longest_part = self.longest_part.max(fragment.duration);
        let ends_segment = self
            .open
            .as_ref()
            .is_some_and(|open| self.expects_cut(open));
        cuts.push(Cut::Part(PartCut {
            sequence,
            index,
            duration_ms: self.to_ms_u32(fragment.duration),
            offset_ms: self.to_ms_u32(offset),
            independent: fragment.independent,
            ends_segment,
            bytes: fragment.bytes,
        }));
        cuts
    }

    /// Closes the open segment (the stream ended): it is complete as it is.
    pub fn finish(&mut self) -> Option<SegmentCut> {
        let open = self.open.take()?;
        Some(SegmentCut {
            sequence: open.sequence,
            duration_ms: self.to_ms_u32(open.end.saturating_sub(open.start)),
            parts: open.parts,
            bytes: open.bytes.freeze(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(decode_time: u64, duration: u64, independent: bool) -> Fragment {
        Fragment {
            bytes: Bytes::from(decode_time.to_be_bytes().to_vec()),
            decode_time,
            duration,
            independent,
        }
    }

    fn summary(cuts: &[Cut]) -> Vec<String> {
        cuts.iter()
            .map(|cut| match cut {
                Cut::Segment(s) => format!("S{}:{}ms/{}", s.sequence, s.duration_ms, s.parts),
                Cut::Part(p) => format!(
                    "P{}.{}@{}+{}{}{}",
                    p.sequence,
                    p.index,
                    p.offset_ms,
                    p.duration_ms,
                    if p.independent { "i" } else { "" },
                    if p.ends_segment { "|" } else { "" }
                ),
            })
            .collect()
    }

    #[test]
    fn video_segments_start_at_keyframes_on_the_target() {
        // 30 fps in a 15360 timescale: 512 ticks a frame, 10 frames a part.
        let mut segmenter = Segmenter::new(15360, 2000, true);
        let mut cuts = Vec::new();
        for n in 0..13u64 {
            cuts.extend(segmenter.push(fragment(n * 5120, 5120, n % 6 == 0)));
        }
        cuts.extend(segmenter.finish().map(Cut::Segment));
        let listed = summary(&cuts);
        assert_eq!(
            &listed[..6],
            [
                "P0.0@0+333i",
                "P0.1@333+333",
                "P0.2@667+333",
                "P0.3@1000+333",
                "P0.4@1333+333",
                "P0.5@1667+333|"
            ]
        );
        assert_eq!(listed[6], "S0:2000ms/6");
        assert_eq!(listed[7], "P1.0@0+333i");
        assert_eq!(listed[12], "P1.5@1667+333|");
        assert_eq!(listed[13], "S1:2000ms/6");
        assert_eq!(listed[14], "P2.0@0+333i");
        assert_eq!(listed[15], "S2:333ms/1");
        // A segment's bytes are its parts' bytes in order.
        let Cut::Segment(first) = &cuts[6] else {
            panic!()
        };
        let parts: Vec<u8> = cuts[..6]
            .iter()
            .flat_map(|c| match c {
                Cut::Part(p) => p.bytes.to_vec(),
                Cut::Segment(_) => Vec::new(),
            })
            .collect();
        assert_eq!(first.bytes.to_vec(), parts);
    }

    #[test]
    fn a_part_ends_its_segment_within_half_a_part_of_the_target() {
        // A part short of the target by more than half a part does not end it.
        let mut segmenter = Segmenter::new(1000, 2000, true);
        let mut cuts = Vec::new();
        for n in 0..5 {
            cuts.extend(segmenter.push(fragment(n * 400, 400, n == 0)));
        }
        assert_eq!(
            summary(&cuts),
            [
                "P0.0@0+400i",
                "P0.1@400+400",
                "P0.2@800+400",
                "P0.3@1200+400",
                "P0.4@1600+400|"
            ]
        );
    }

    #[test]
    fn an_early_keyframe_does_not_make_a_tiny_segment() {
        let mut segmenter = Segmenter::new(1000, 2000, true);
        let mut cuts = Vec::new();
        cuts.extend(segmenter.push(fragment(0, 300, true)));
        cuts.extend(segmenter.push(fragment(300, 300, true)));
        cuts.extend(segmenter.push(fragment(600, 400, false)));
        cuts.extend(segmenter.push(fragment(1000, 300, true)));
        assert_eq!(
            summary(&cuts),
            [
                "P0.0@0+300i",
                "P0.1@300+300i",
                "P0.2@600+400",
                "S0:1000ms/3",
                "P1.0@0+300i"
            ]
        );
    }

    #[test]
    fn audio_segments_follow_the_time_grid() {
        // AAC at 48 kHz, 16 frames of 1024 samples a part (341.33 ms).
        let mut segmenter = Segmenter::new(48000, 2000, false);
        let mut segments = Vec::new();
        let mut previous: Option<PartCut> = None;
        for n in 0..60u64 {
            for cut in segmenter.push(fragment(1000 + n * 16384, 16384, true)) {
                match cut {
                    Cut::Segment(s) => segments.push(s.duration_ms),
                    Cut::Part(part) => {
                        if let Some(previous) = &previous {
                            // Expected to end its segment exactly when the next part starts one.
                            assert_eq!(previous.ends_segment, part.index == 0, "{part:?}");
                        }
                        previous = Some(part);
                    }
                }
            }
        }
        // Each segment ends at the first part boundary past k * 2 s, so the
        // positions stay aligned with video: the sum never drifts by more
        // than one part.
        let mut end = 0u32;
        for (k, duration) in segments.iter().enumerate() {
            end += duration;
            let boundary = (k as u32 + 1) * 2000;
            assert!(end >= boundary && end < boundary + 342, "{segments:?}");
        }
        assert!(segments.len() >= 9);
    }

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn malformed_framing_is_an_error_never_a_panic() {
        let mut reader = Fmp4Reader::new(1024);
        reader.push(&boxed(b"moof", &[0; 16]));
        reader.push(&boxed(b"mdat", &[0; 4]));
        assert_eq!(reader.next_item(), Err(Fmp4Error::FragmentBeforeInit));

        let mut reader = Fmp4Reader::new(1024);
        reader.push(&[0, 0, 0, 4, b'f', b'r', b'e', b'e']);
        assert_eq!(reader.next_item(), Err(Fmp4Error::BadHeader));

        let mut reader = Fmp4Reader::new(1024);
        reader.push(&[0, 0, 8, 0, b'm', b'd', b'a', b't']);
        assert!(matches!(
            reader.next_item(),
            Err(Fmp4Error::BoxTooLarge { size: 2048, .. })
        ));

        let mut reader = Fmp4Reader::new(1024);
        reader.push(&boxed(b"moov", &[0; 8]));
        assert!(matches!(
            reader.next_item(),
            Err(Fmp4Error::Invalid { kind: "moov", .. })
        ));
    }

    #[test]
    fn skipped_boxes_and_split_reads_are_handled() {
        let mut reader = Fmp4Reader::default();
        let stream = [boxed(b"free", b"abc"), boxed(b"styp", b"msdh")].concat();
        for byte in &stream {
            reader.push(&[*byte]);
            assert_eq!(reader.next_item(), Ok(None));
        }
        assert_eq!(reader.buffered_bytes(), 0);
    }
}
