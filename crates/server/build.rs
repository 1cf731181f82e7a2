//! Embeds the built browser assets (web/dist, made by `npm run build
//! --prefix web`, which the README's commands run): generates a table of
//! (path, content type, ETag, bytes) for `http::web`.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

fn main() {
    // Read when the script runs, not when it is compiled: checkouts sharing
    // a target directory share this script's binary.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let dist = Path::new(&manifest_dir).join("../../web/dist");
    // Watched paths are relative to the package, so that checkouts sharing
    // one target directory each have their own assets looked at.
    println!("cargo:rerun-if-changed=../../web/dist");
    // `sqlx::migrate!` embeds the migrations: a file added there builds the
    // crate again.
    println!("cargo:rerun-if-changed=migrations");
    let mut found = Vec::new();
    files(&dist, &mut found);
    found.sort();
    for required in ["assets/streamweave.js", "assets/app.js", "pages/index.html"] {
        if !dist.join(required).exists() {
            panic!(
                "{} is missing: run `npm ci --prefix web && npm run build --prefix web` first (the README's commands do)",
                dist.join(required).display()
            );
        }
    }
    let mut table = String::from("pub static ASSETS: &[(&str, &str, &str, &[u8])] = &[\n");
    for path in &found {
        let bytes = std::fs::read(path).expect("reading a built asset");
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        let relative = path
            .strip_prefix(&dist)
            .expect("under dist")
            .to_string_lossy()
            .replace('\\', "/");
        println!("cargo:rerun-if-changed=../../web/dist/{relative}");
        writeln!(
            table,
            "    ({:?}, {:?}, \"\\\"{:016x}\\\"\", include_bytes!({:?})),",
            relative,
            content_type(path),
            hasher.finish(),
            path.display().to_string()
        )
        .expect("writing to a string");
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("web_assets.rs");
    std::fs::write(out, table).expect("writing web_assets.rs");
}
