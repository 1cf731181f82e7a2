//! Arbitrary sign-in messages and signatures must parse or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamweave_ledger::SiweMessage;

fuzz_target!(|data: &[u8]| {
    let (text, signature) = data.split_at(data.len().saturating_sub(65));
    if let Ok(text) = std::str::from_utf8(text) {
        if let Ok(message) = SiweMessage::parse(text) {
            assert_eq!(SiweMessage::parse(&message.to_text()).ok(), Some(message));
        }
        let _ = SiweMessage::verify(text, signature, "localhost", 0);
    }
});
