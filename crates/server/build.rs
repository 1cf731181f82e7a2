//! Checks that the browser assets the binary embeds are installed.

use std::path::Path;

fn main() {
    let hls =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/node_modules/hls.js/dist/hls.min.js");
    println!("cargo:rerun-if-changed={}", hls.display());
    if !hls.exists() {
        panic!(
            "{} is missing: run `npm ci --prefix web` first (the README's commands do)",
            hls.display()
        );
    }
}
