//! Arbitrary bytes as a CAR file (`streamweave verify` reads CARs from
//! anywhere): reading and verifying must succeed or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(car) = streamweave_cas::read_car(data) {
        assert!(car.blocks.len() <= data.len());
    }
    let _ = streamweave_cas::verify_car(data);
});
