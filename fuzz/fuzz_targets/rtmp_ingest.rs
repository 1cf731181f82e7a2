//! Arbitrary bytes from an RTMP client: handshake, chunk stream, AMF0
//! commands and FLV media bodies must never panic the ingest path. The same
//! bytes are also delivered as the body of an AMF0 command and of an AMF0
//! data message behind a valid handshake and framing, so the fuzzer reaches
//! the AMF checks (nesting, value counts) directly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamweave_media::rtmp::{client_bytes_for_message, replay_client_bytes};

fuzz_target!(|data: &[u8]| {
    let _ = replay_client_bytes(data);
    let _ = replay_client_bytes(&client_bytes_for_message(20, data));
    let _ = replay_client_bytes(&client_bytes_for_message(18, data));
});
