//! Thumbnails: a frame of a live stream's latest segment, or of a
//! recording's or video's segment a tenth of the way in (smallest video
//! rendition), made by ffmpeg and cached per stream until a newer segment is
//! at least [`REFRESH_MS`] younger. At most [`MAX_RUNNING`] ffmpeg processes
//! run at once (a stream with a cached frame gets that frame instead of
//! waiting for one); the cache holds at most [`MAX_CACHED`] streams.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, SemaphorePermit};

/// How often a live stream's thumbnail is remade, at most.
pub const REFRESH_MS: i64 = 10_000;
/// ffmpeg processes making thumbnails at once.
pub const MAX_RUNNING: usize = 2;
/// Streams whose thumbnail is kept.
pub const MAX_CACHED: usize = 1000;
/// Thumbnail width in pixels (height follows the aspect ratio).
pub const WIDTH_PX: u32 = 320;

struct Cached {
    sequence: usize,
    made_at_ms: i64,
    jpeg: Bytes,
}

/// Thumbnails made so far, and the bound on ffmpeg processes.
pub struct Thumbnails {
    cache: Mutex<HashMap<String, Cached>>,
    running: Semaphore,
}

impl Default for Thumbnails {
    fn default() -> Self {
        Thumbnails {
            cache: Mutex::new(HashMap::new()),
            running: Semaphore::new(MAX_RUNNING),
        }
    }
}

/// What to do for a thumbnail request.
pub enum Lookup<'a> {
    /// Serve this frame.
    Serve(Bytes),
    /// Make a new frame while holding this ffmpeg slot, then [`Thumbnails::store`] it.
    Make(SemaphorePermit<'a>),
}

impl Thumbnails {
    /// The cached frame of `stream` if it is of segment `sequence` or young
    /// enough; else a slot to make one (or, with both slots busy, the older
    /// frame rather than a wait). `None` only while shutting down.
    pub async fn lookup(&self, stream: &str, sequence: usize, now_ms: i64) -> Option<Lookup<'_>> {
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(stream)
                .map(|c| (c.sequence, c.made_at_ms, c.jpeg.clone()))
        };
        if let Some((made_of, made_at_ms, jpeg)) = &cached
            && (*made_of == sequence || now_ms - made_at_ms < REFRESH_MS)
        {
            return Some(Lookup::Serve(jpeg.clone()));
        }
        // Both ffmpeg slots busy: an older frame now beats a newer one later.
        match (self.running.try_acquire(), cached) {
            (Ok(permit), _) => Some(Lookup::Make(permit)),
            (Err(_), Some((_, _, jpeg))) => Some(Lookup::Serve(jpeg)),
            (Err(_), None) => self.running.acquire().await.ok().map(Lookup::Make),
        }
    }

    /// Keeps a new frame of `stream`'s segment `sequence`, dropping the
    /// least recently made one when the cache is full.
    pub fn store(&self, stream: &str, sequence: usize, now_ms: i64, jpeg: Bytes) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED && !cache.contains_key(stream) {
            // Drop the oldest: streams nobody looked at lately.
            if let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, c)| c.made_at_ms)
                .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            stream.to_string(),
            Cached {
                sequence,
                made_at_ms: now_ms,
                jpeg,
            },
        );
    }
}

/// The first frame of an fMP4 segment (init + media), as a JPEG.
pub async fn frame(
    ffmpeg: &std::path::Path,
    init: &[u8],
    segment: &[u8],
) -> std::io::Result<Bytes> {
    let mut child = tokio::process::Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "mp4",
            "-i",
            "pipe:0",
            "-frames:v",
            "1",
        ])
        .args([
            "-vf",
            &format!("scale={WIDTH_PX}:-2"),
            "-q:v",
            "5",
            "-f",
            "image2",
            "-c:v",
            "mjpeg",
            "pipe:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("ffmpeg's stdin was not piped"))?;
    let input = [init, segment].concat();
    let writer = tokio::spawn(async move {
        // ffmpeg may stop reading once it has its frame: a broken pipe is fine.
        let _ = stdin.write_all(&input).await;
    });
    let output = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| std::io::Error::other("ffmpeg took over 10 s"))??;
    let _ = writer.await;
    if !output.status.success() || output.stdout.len() < 4 || output.stdout[..2] != [0xff, 0xd8] {
        return Err(std::io::Error::other(format!(
            "ffmpeg exited with {}",
            output.status
        )));
    }
    Ok(Bytes::from(output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_reused_until_a_newer_segment_is_old_enough() {
        let thumbnails = Thumbnails::default();
        let Some(Lookup::Make(permit)) = thumbnails.lookup("s", 3, 0).await else {
            panic!("nothing cached: make one");
        };
        drop(permit);
        thumbnails.store("s", 3, 0, Bytes::from_static(b"a"));
        assert!(
            matches!(thumbnails.lookup("s", 3, 60_000).await, Some(Lookup::Serve(j)) if j == "a")
        );
        assert!(matches!(
            thumbnails.lookup("s", 4, REFRESH_MS - 1).await,
            Some(Lookup::Serve(_))
        ));
        assert!(matches!(
            thumbnails.lookup("s", 4, REFRESH_MS).await,
            Some(Lookup::Make(_))
        ));
        // Both slots busy: the old frame is served rather than waited for.
        let _one = thumbnails.running.try_acquire().unwrap();
        let _two = thumbnails.running.try_acquire().unwrap();
        assert!(matches!(
            thumbnails.lookup("s", 9, 99_999).await,
            Some(Lookup::Serve(_))
        ));
    }
}
