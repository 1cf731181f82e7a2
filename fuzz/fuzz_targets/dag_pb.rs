//! Arbitrary bytes as a dag-pb node and as UnixFS data (blocks fetched from
//! elsewhere, or corrupted on disk) must decode or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(node) = streamweave_cas::decode_dag_pb(data)
        && let Some(inner) = node.data
    {
        let _ = streamweave_cas::decode_unixfs(&inner);
    }
    let _ = streamweave_cas::parse_cid(&String::from_utf8_lossy(data));
});
