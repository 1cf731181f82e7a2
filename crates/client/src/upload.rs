//! Resumable uploads with the tus 1.0 protocol: create an upload, send the
//! file in chunks (each with its sha256 in `Upload-Checksum`), and on a
//! broken connection ask the server where it got to (`HEAD`) and go on from
//! there. A later process resumes the same upload from its URL.

use std::io::SeekFrom;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{Client, ClientError, Result};

/// Bytes sent per `PATCH`.
pub const DEFAULT_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// Attempts per chunk before giving up.
const ATTEMPTS: u32 = 5;

impl Client {
    fn tus(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request.header("Tus-Resumable", "1.0.0");
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn tus_error(response: reqwest::Response) -> ClientError {
        match Self::answer(response).await {
            Err(err) => err,
            Ok(_) => ClientError::Protocol("unexpected success".into()),
        }
    }

    /// Starts an upload of `length` bytes; answers its URL path
    /// (`/api/v1/uploads/{id}`).
    pub async fn create_upload(&self, length: u64, filename: &str) -> Result<String> {
        let metadata = format!("filename {}", BASE64.encode(filename));
        let response = self
            .tus(self.http.post(self.url("/api/v1/uploads")))
            .header("Upload-Length", length.to_string())
            .header("Upload-Metadata", metadata)
            .send()
            .await?;
        if response.status().as_u16() != 201 {
            return Err(Self::tus_error(response).await);
        }
        response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| ClientError::Protocol("no Location for the new upload".into()))
    }

    /// Where the upload at `url` got to: (offset, length).
    pub async fn upload_offset(&self, url: &str) -> Result<(u64, u64)> {
        let response = self.tus(self.http.head(self.url(url))).send().await?;
        if !response.status().is_success() {
            // HEAD answers have no body: the status says it.
            return Err(ClientError::Api {
                status: response.status().as_u16(),
                problem_type: String::new(),
                detail: format!("upload {url}"),
                problem: serde_json::Value::Null,
            });
        }
        let number = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ClientError::Protocol(format!("no {name} in the answer")))
        };
        Ok((number("upload-offset")?, number("upload-length")?))
    }

    /// Sends the file at `path` to the upload at `url` from wherever the
    /// server says it is, in chunks of `chunk_bytes`, retrying a failed
    /// chunk (after asking for the offset again) a few times. `progress`
    /// hears (bytes on the server, total) after each chunk.
    pub async fn send_upload(
        &self,
        url: &str,
        path: &Path,
        chunk_bytes: usize,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<()> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|err| ClientError::Protocol(format!("{}: {err}", path.display())))?;
        let (mut offset, length) = self.upload_offset(url).await?;
        let file_length = file
            .metadata()
            .await
            .map_err(|err| ClientError::Protocol(err.to_string()))?
            .len();
        if file_length != length {
            return Err(ClientError::Protocol(format!(
                "the upload is for {length} bytes, the file has {file_length}"
            )));
        }
        progress(offset, length);
        let mut failures = 0u32;
        let mut buffer = vec![0u8; chunk_bytes.max(1)];
        while offset < length {
            let size = usize::try_from(length - offset)
                .unwrap_or(usize::MAX)
                .min(buffer.len());
            file.seek(SeekFrom::Start(offset))
                .await
                .and(file.read_exact(&mut buffer[..size]).await.map(|_| ()))
                .map_err(|err| ClientError::Protocol(format!("{}: {err}", path.display())))?;
            let chunk = buffer[..size].to_vec();
            let checksum = format!("sha256 {}", BASE64.encode(Sha256::digest(&chunk)));
            let sent = self
                .tus(self.http.patch(self.url(url)))
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", offset.to_string())
                .header("Upload-Checksum", checksum)
                .body(chunk)
                .send()
                .await;
            match sent {
                Ok(response) if response.status().as_u16() == 204 => {
                    offset = response
                        .headers()
                        .get("upload-offset")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| ClientError::Protocol("no Upload-Offset".into()))?;
                    failures = 0;
                    progress(offset, length);
                }
                // Refusals that another try will not change.
                Ok(response)
                    if matches!(
                        response.status().as_u16(),
                        400..=403 | 404 | 410 | 412 | 413 | 415
                    ) =>
                {
                    return Err(Self::tus_error(response).await);
                }
                other => {
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(match other {
                            Ok(response) => Self::tus_error(response).await,
                            Err(err) => err.into(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200 << failures)).await;
                    offset = self.upload_offset(url).await?.0;
                }
            }
        }
        Ok(())
    }

    /// Makes a video of a finished upload (`price`: paid per second).
    pub async fn create_video(
        &self,
        upload_id: &str,
        title: &str,
        price: Option<streamweave_ledger::Price>,
    ) -> Result<serde_json::Value> {
        let mut body = serde_json::json!({ "upload_id": upload_id, "title": title });
        if let Some(price) = price {
            body["access"] = serde_json::json!("per_second");
            body["price"] = serde_json::json!({
                "amount": price.amount.to_string(),
                "period_seconds": price.period_seconds
            });
        }
        self.post("/api/v1/videos", body).await
    }

    /// A video, with its processing status and progress.
    pub async fn video(&self, id: &str) -> Result<serde_json::Value> {
        self.get(&format!("/api/v1/videos/{id}")).await
    }
}
