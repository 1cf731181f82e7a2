//! Frames as a WebRTC publisher's packets make them (any bytes: a hostile
//! publisher controls them) go into the Matroska feed or are refused with
//! an error: never a panic. The first byte picks the codec, whether packets
//! were lost, and the frame size the rest is cut into.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamweave_media::webrtc_feed::{FeedVideoCodec, WebrtcFeed};

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let codec = if control & 1 == 0 {
        FeedVideoCodec::H264
    } else {
        FeedVideoCodec::Vp8
    };
    let frame_size = usize::from(control >> 2).max(1) * 4;
    let mut feed = WebrtcFeed::new(Some(2));
    for (i, frame) in rest.chunks(frame_size).enumerate() {
        let i = i as u64;
        // Timestamps that wrap, jump and go back.
        let rtp_time = u64::from(frame.first().copied().unwrap_or(0)) << 24 ^ i * 3000;
        if i % 3 == 2 {
            let _ = feed.push_audio(rtp_time, 48_000, i * 20, frame);
        } else if feed
            .push_video(codec, rtp_time, 90_000, i * 33, control & 2 == 0, frame)
            .is_err()
        {
            return;
        }
    }
});
