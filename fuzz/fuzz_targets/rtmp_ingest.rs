//! Arbitrary bytes from an RTMP client: handshake, chunk stream, AMF0
//! commands and FLV media bodies must never panic the ingest path.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = streamweave_media::rtmp::replay_client_bytes(data);
});
