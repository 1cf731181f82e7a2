//! `streamweave upload FILE`: sends a file with the resumable upload
//! protocol, showing progress, then makes a video of it and follows its
//! processing. An interrupted upload resumes when the same command runs
//! again: the upload's address is kept beside the file (`FILE.upload.json`)
//! until the video is created.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use streamweave_client::Client;

/// What is remembered of an upload in progress, beside the file.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Resume {
    server: String,
    url: String,
    length: u64,
    modified_ms: u128,
}

fn resume_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".upload.json");
    PathBuf::from(name)
}

fn modified_ms(file: &Path) -> anyhow::Result<u128> {
    Ok(std::fs::metadata(file)?
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0))
}

/// A progress line on stderr: redrawn in place on a terminal, every 10%
/// otherwise.
struct ProgressLine {
    terminal: bool,
    last_tenth: Option<u64>,
}

impl ProgressLine {
    fn show(&mut self, what: &str, done: u64, total: u64) {
        let percent = (done.saturating_mul(100)).checked_div(total).unwrap_or(100);
        if self.terminal {
            let width = 30usize;
            let filled = (percent as usize * width) / 100;
            eprint!(
                "\r{what} [{}{}] {percent:>3}%  {:.1} / {:.1} MiB",
                "#".repeat(filled),
                " ".repeat(width - filled),
                done as f64 / 1_048_576.0,
                total as f64 / 1_048_576.0
            );
            let _ = std::io::stderr().flush();
        } else if self.last_tenth != Some(percent / 10) {
            self.last_tenth = Some(percent / 10);
            eprintln!("{what}: {percent}%");
        }
    }

    fn done(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// Uploads `file`, resuming a previous attempt of the same file to the same
/// server; answers the finished upload's id.
pub async fn upload_file(
    client: &Client,
    server: &str,
    file: &Path,
    chunk_bytes: usize,
) -> anyhow::Result<String> {
    let length = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let modified = modified_ms(file)?;
    let sidecar = resume_path(file);
    let previous: Option<Resume> = std::fs::read(&sidecar)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(|r: &Resume| r.server == server && r.length == length && r.modified_ms == modified);
    let url = match previous {
        Some(resume) if client.upload_offset(&resume.url).await.is_ok() => {
            eprintln!("resuming {}", resume.url);
            resume.url
        }
        _ => {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "upload".into());
            let url = client.create_upload(length, &name).await?;
            let resume = Resume {
                server: server.to_string(),
                url: url.clone(),
                length,
                modified_ms: modified,
            };
            std::fs::write(&sidecar, serde_json::to_vec(&resume)?)
                .with_context(|| format!("writing {}", sidecar.display()))?;
            url
        }
    };
    let mut line = ProgressLine {
        terminal: std::io::stderr().is_terminal(),
        last_tenth: None,
    };
    client
        .send_upload(&url, file, chunk_bytes, |done, total| {
            line.show("uploading", done, total)
        })
        .await?;
    line.done();
    let id = url
        .rsplit('/')
        .next()
        .filter(|id| !id.is_empty())
        .context("the server's upload address has no id")?
        .to_string();
    Ok(id)
}

/// Follows a video's processing until it is ready or failed; answers it.
pub async fn follow_processing(client: &Client, id: &str) -> anyhow::Result<serde_json::Value> {
    let mut line = ProgressLine {
        terminal: std::io::stderr().is_terminal(),
        last_tenth: None,
    };
    loop {
        let video = client.video(id).await?;
        match video["status"].as_str() {
            Some("processing") => {
                let percent = video["progress"]["percent"].as_u64().unwrap_or(0);
                line.show("processing", percent, 100);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => {
                line.done();
                return Ok(video);
            }
        }
    }
}

/// Removes the resume note once the upload became a video.
pub fn forget_resume(file: &Path) {
    let _ = std::fs::remove_file(resume_path(file));
}
