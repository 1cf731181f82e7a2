//! Arbitrary bytes as a dag-pb node and as UnixFS data (blocks fetched from
//! elsewhere, or corrupted on disk) must decode or fail cleanly, and so must
//! looking a name up in it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(node) = streamweave_cas::decode_dag_pb(data) {
        // Path resolution through a (possibly HAMT) directory node.
        let _ = streamweave_cas::lookup_step(&node, "0.m4s", 0);
        let _ = streamweave_cas::lookup_step(&node, "index.m3u8", 7);
        if let Some(inner) = node.data {
            let _ = streamweave_cas::decode_unixfs(&inner);
        }
    }
    let _ = streamweave_cas::parse_cid(&String::from_utf8_lossy(data));
});
