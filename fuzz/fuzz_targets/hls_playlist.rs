//! Arbitrary playlist bytes (what ffmpeg writes, or a corrupted file) must
//! parse or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = streamweave_media::playlist::parse_media_playlist(data);
});
