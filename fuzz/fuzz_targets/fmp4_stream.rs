//! Arbitrary bytes on a live output socket (what ffmpeg writes, or garbage)
//! are framed, decoded and cut into parts and segments, or refused with an
//! error: never a panic, never unbounded memory. The input is fed in pieces
//! whose sizes its first byte picks, as reads from a socket arrive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamweave_media::fmp4::{Fmp4Item, Fmp4Reader, Segmenter};

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step.max(1));
    let mut reader = Fmp4Reader::new(1 << 20);
    let mut segmenter: Option<Segmenter> = None;
    for chunk in stream.chunks(step) {
        reader.push(chunk);
        loop {
            match reader.next_item() {
                Ok(Some(Fmp4Item::Init { timescale, .. })) => {
                    segmenter = Some(Segmenter::new(timescale, 2000, step % 2 == 0));
                }
                Ok(Some(Fmp4Item::Fragment(fragment))) => {
                    if let Some(segmenter) = segmenter.as_mut() {
                        segmenter.push(fragment);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    if let Some(segmenter) = segmenter.as_mut() {
        segmenter.finish();
    }
});
