//! RTMP ingest: accepts publishers (OBS, ffmpeg) on `rtmp://HOST/live/{key}`.
//!
//! Framing, handshake and the AMF0 command exchange come from `rml_rtmp`; this
//! module owns the connection lifecycle: limits, the app name, asking the
//! platform whether a key may publish, codec checks, and forwarding media as
//! [`IngestMessage`]s into a bounded channel (a slow transcoder slows the
//! publisher through TCP, it never grows a buffer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::flv::{self, AudioTagInfo, MediaTag, TagKind, VideoTagInfo};

/// The only RTMP application name we publish to: `rtmp://HOST/live/{key}`.
pub const RTMP_APP: &str = "live";

/// Bounds of the RTMP server.
#[derive(Debug, Clone)]
pub struct RtmpLimits {
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time a client has to finish the handshake and start publishing.
    pub setup_timeout: Duration,
    /// A publisher that sends nothing for this long is disconnected.
    pub idle_timeout: Duration,
}

impl Default for RtmpLimits {
    fn default() -> Self {
        RtmpLimits {
            max_connections: 256,
            setup_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

/// Source properties announced in `onMetaData`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceMetadata {
    /// Width in pixels, when announced.
    pub width: Option<u32>,
    /// Height in pixels, when announced.
    pub height: Option<u32>,
    /// The encoder's name (`obs-output module`, `Lavf59...`).
    pub encoder: Option<String>,
}

/// What a publishing connection sends to its pipeline.
#[derive(Debug, Clone)]
pub enum IngestMessage {
    /// The publisher's metadata (may come more than once).
    Metadata(SourceMetadata),
    /// An audio or video message.
    Tag(MediaTag),
    /// The publish failed for this reason (unsupported codec, protocol error);
    /// the pipeline should end with an error rather than finish normally.
    Abort(String),
}

/// The platform's answer to a publish request.
#[derive(Debug)]
pub enum PublishDecision {
    /// Publish into this channel; dropping it ends the pipeline's input.
    Accept(mpsc::Sender<IngestMessage>),
    /// Refuse with a reason sent to the client and logged.
    Refuse(String),
}

/// A client asks to publish `stream_key`; answer on `reply`.
#[derive(Debug)]
pub struct PublishRequest {
    /// The key from the RTMP URL.
    pub stream_key: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// Where the platform answers.
    pub reply: oneshot::Sender<PublishDecision>,
}

/// Accepts RTMP connections forever, sending each publish attempt to `requests`.
pub async fn serve_rtmp(
    listener: TcpListener,
    requests: mpsc::Sender<PublishRequest>,
    limits: RtmpLimits,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        // The semaphore is never closed, so acquiring only waits.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(%err, "rtmp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let requests = requests.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match handle_connection(socket, peer, requests, &limits).await {
                Ok(()) => debug!(%peer, "rtmp connection closed"),
                Err(reason) => info!(%peer, %reason, "rtmp connection ended"),
            }
        });
    }
}

/// Why a connection was closed by us.
type CloseReason = String;

async fn handle_connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    requests: mpsc::Sender<PublishRequest>,
    limits: &RtmpLimits,
) -> Result<(), CloseReason> {
    socket.set_nodelay(true).ok();
    let leftover = tokio::time::timeout(limits.setup_timeout, handshake(&mut socket))
        .await
        .map_err(|_| "handshake timed out".to_string())??;

    let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())
        .map_err(|err| format!("session setup: {err}"))?;
    let mut connection = Connection {
        peer,
        requests,
        sink: None,
        video_checked: false,
        audio_checked: false,
        closing: None,
    };
    connection
        .send_results(&mut socket, &mut session, initial)
        .await?;
    if !leftover.is_empty() {
        let results = session
            .handle_input(&leftover)
            .map_err(|err| format!("rtmp protocol error: {err}"))?;
        connection
            .send_results(&mut socket, &mut session, results)
            .await?;
    }

    let setup_deadline = tokio::time::Instant::now() + limits.setup_timeout;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let timeout = if connection.sink.is_some() {
            limits.idle_timeout
        } else {
            setup_deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        let read = tokio::time::timeout(timeout, socket.read(&mut buffer))
            .await
            .map_err(|_| {
                connection.abort("publisher idle");
                "timed out".to_string()
            })?
            .map_err(|err| format!("read: {err}"))?;
        if read == 0 {
            return Ok(());
        }
        let results = match session.handle_input(&buffer[..read]) {
            Ok(results) => results,
            Err(err) => {
                let reason = format!("rtmp protocol error: {err}");
                connection.abort(&reason);
                return Err(reason);
            }
        };
        if let Err(reason) = connection
            .send_results(&mut socket, &mut session, results)
            .await
        {
            connection.abort(&reason);
            return Err(reason);
        }
        if let Some(outcome) = connection.close_after() {
            return outcome;
        }
    }
}

async fn handshake(socket: &mut TcpStream) -> Result<Vec<u8>, CloseReason> {
    let mut handshake = Handshake::new(PeerType::Server);
    let mut buffer = [0u8; 4096];
    // C0+C1+C2 are 3073 bytes; anything that takes more reads than this is not RTMP.
    for _ in 0..64 {
        let read = socket
            .read(&mut buffer)
            .await
            .map_err(|err| format!("read: {err}"))?;
        if read == 0 {
            return Err("closed during handshake".into());
        }
        match handshake.process_bytes(&buffer[..read]) {
            Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                write_all(socket, &response_bytes).await?;
            }
            Ok(HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            }) => {
                write_all(socket, &response_bytes).await?;
                return Ok(remaining_bytes);
            }
            Err(err) => return Err(format!("bad handshake: {err}")),
        }
    }
    Err("handshake too long".into())
}

async fn write_all(socket: &mut TcpStream, bytes: &[u8]) -> Result<(), CloseReason> {
    if bytes.is_empty() {
        return Ok(());
    }
    socket
        .write_all(bytes)
        .await
        .map_err(|err| format!("write: {err}"))
}

struct Connection {
    peer: SocketAddr,
    requests: mpsc::Sender<PublishRequest>,
    sink: Option<mpsc::Sender<IngestMessage>>,
    video_checked: bool,
    audio_checked: bool,
    closing: Option<Result<(), CloseReason>>,
}

impl Connection {
    /// `Some` once the connection should close after the pending writes:
    /// `Ok` for a publish that finished, `Err` with the reason for a refusal.
    fn close_after(&mut self) -> Option<Result<(), CloseReason>> {
        self.closing.take()
    }

    fn abort(&mut self, reason: &str) {
        if let Some(sink) = self.sink.take() {
            // Best effort: a full or closed pipeline is ending anyway.
            let _ = sink.try_send(IngestMessage::Abort(reason.to_string()));
        }
    }

    async fn send_results(
        &mut self,
        socket: &mut TcpStream,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
    ) -> Result<(), CloseReason> {
        // Results may raise events whose answers produce more results; keep order.
        let mut queue = std::collections::VecDeque::from(results);
        while let Some(result) = queue.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    write_all(socket, &packet.bytes).await?;
                }
                ServerSessionResult::RaisedEvent(event) => {
                    let more = self.on_event(session, event).await?;
                    for (index, item) in more.into_iter().enumerate() {
                        queue.insert(index, item);
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    async fn on_event(
        &mut self,
        session: &mut ServerSession,
        event: ServerSessionEvent,
    ) -> Result<Vec<ServerSessionResult>, CloseReason> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.trim_end_matches('/') != RTMP_APP {
                    return Err(format!("unknown app name {app_name:?}"));
                }
                session
                    .accept_request(request_id)
                    .map_err(|err| format!("accept connect: {err}"))
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => {
                if self.sink.is_some() {
                    return Err("a second publish on one connection".into());
                }
                let key = stream_key.split('?').next().unwrap_or_default().to_string();
                let (reply, answer) = oneshot::channel();
                let request = PublishRequest {
                    stream_key: key,
                    peer: self.peer,
                    reply,
                };
                self.requests
                    .send(request)
                    .await
                    .map_err(|_| "server shutting down".to_string())?;
                match answer.await {
                    Ok(PublishDecision::Accept(sink)) => {
                        self.sink = Some(sink);
                        session
                            .accept_request(request_id)
                            .map_err(|err| format!("accept publish: {err}"))
                    }
                    Ok(PublishDecision::Refuse(reason)) => {
                        // Tell the client why, then close.
                        self.closing = Some(Err(format!("publish refused: {reason}")));
                        session
                            .reject_request(request_id, "NetStream.Publish.BadName", &reason)
                            .map_err(|err| format!("reject publish: {err}"))
                    }
                    Err(_) => Err("server dropped the publish request".into()),
                }
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                self.forward(IngestMessage::Metadata(SourceMetadata {
                    width: metadata.video_width,
                    height: metadata.video_height,
                    encoder: metadata.encoder,
                }))
                .await?;
                Ok(Vec::new())
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                if !self.video_checked {
                    match flv::classify_video(&data) {
                        VideoTagInfo::Unsupported { codec_id } => {
                            let reason = format!(
                                "unsupported video codec (FLV codec id {codec_id}); publish H.264"
                            );
                            self.abort(&reason);
                            return Err(reason);
                        }
                        VideoTagInfo::Empty => return Ok(Vec::new()),
                        _ => self.video_checked = true,
                    }
                }
                self.forward(IngestMessage::Tag(MediaTag {
                    kind: TagKind::Video,
                    timestamp_ms: timestamp.value,
                    body: data,
                }))
                .await?;
                Ok(Vec::new())
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                if !self.audio_checked {
                    match flv::classify_audio(&data) {
                        AudioTagInfo::Unsupported { sound_format } => {
                            let reason = format!(
                                "unsupported audio codec (FLV sound format {sound_format}); publish AAC"
                            );
                            self.abort(&reason);
                            return Err(reason);
                        }
                        AudioTagInfo::Empty => return Ok(Vec::new()),
                        _ => self.audio_checked = true,
                    }
                }
                self.forward(IngestMessage::Tag(MediaTag {
                    kind: TagKind::Audio,
                    timestamp_ms: timestamp.value,
                    body: data,
                }))
                .await?;
                Ok(Vec::new())
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                // Dropping the sink ends the pipeline's input normally.
                self.sink = None;
                self.closing = Some(Ok(()));
                Ok(Vec::new())
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                self.closing = Some(Err("rtmp playback is not offered".into()));
                session
                    .reject_request(request_id, "NetStream.Play.Failed", "playback is over HLS")
                    .map_err(|err| format!("reject play: {err}"))
            }
            _ => Ok(Vec::new()),
        }
    }

    async fn forward(&mut self, message: IngestMessage) -> Result<(), CloseReason> {
        let Some(sink) = &self.sink else {
            // Media before a publish was accepted: ignore, as other servers do.
            return Ok(());
        };
        if sink.send(message).await.is_err() {
            self.sink = None;
            return Err("the stream's pipeline ended".into());
        }
        Ok(())
    }
}

/// Feeds raw client bytes through the handshake and the RTMP session the way
/// a connection does (accepting the `live` app and any publish), and returns
/// the media messages a pipeline would receive, or why the connection would
/// close. No I/O: this is the entry point of the fuzz target and of tests
/// that throw arbitrary bytes at ingest.
pub fn replay_client_bytes(bytes: &[u8]) -> Result<Vec<IngestMessage>, String> {
    let mut handshake = Handshake::new(PeerType::Server);
    let leftover = match handshake.process_bytes(bytes) {
        Ok(HandshakeProcessResult::Completed {
            remaining_bytes, ..
        }) => remaining_bytes,
        Ok(HandshakeProcessResult::InProgress { .. }) => return Ok(Vec::new()),
        Err(err) => return Err(format!("bad handshake: {err}")),
    };
    let (mut session, _) =
        ServerSession::new(ServerSessionConfig::new()).map_err(|err| err.to_string())?;
    let mut forwarded = Vec::new();
    let mut publishing = false;
    let mut pending = std::collections::VecDeque::from(
        session
            .handle_input(&leftover)
            .map_err(|err| format!("rtmp protocol error: {err}"))?,
    );
    // Each accepted request yields a bounded number of results; bound the loop anyway.
    let mut budget = 100_000usize;
    while let Some(result) = pending.pop_front() {
        budget = budget.checked_sub(1).ok_or("too many results")?;
        let ServerSessionResult::RaisedEvent(event) = result else {
            continue;
        };
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.trim_end_matches('/') != RTMP_APP {
                    return Err(format!("unknown app name {app_name:?}"));
                }
                pending.extend(
                    session
                        .accept_request(request_id)
                        .map_err(|e| e.to_string())?,
                );
            }
            ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                publishing = true;
                pending.extend(
                    session
                        .accept_request(request_id)
                        .map_err(|e| e.to_string())?,
                );
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } if publishing => {
                if let VideoTagInfo::Unsupported { codec_id } = flv::classify_video(&data) {
                    return Err(format!("unsupported video codec {codec_id}"));
                }
                let tag = MediaTag {
                    kind: TagKind::Video,
                    timestamp_ms: timestamp.value,
                    body: data,
                };
                flv::encode_tag(&tag).ok_or("oversized tag")?;
                forwarded.push(IngestMessage::Tag(tag));
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } if publishing => {
                if let AudioTagInfo::Unsupported { sound_format } = flv::classify_audio(&data) {
                    return Err(format!("unsupported audio codec {sound_format}"));
                }
                let tag = MediaTag {
                    kind: TagKind::Audio,
                    timestamp_ms: timestamp.value,
                    body: data,
                };
                flv::encode_tag(&tag).ok_or("oversized tag")?;
                forwarded.push(IngestMessage::Tag(tag));
            }
            _ => {}
        }
    }
    Ok(forwarded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random byte source (xorshift), so failures reproduce.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        for seed in 0..500u64 {
            let len = (seed as usize * 37) % 6000;
            let mut bytes = noise(seed, len);
            // Half the cases start with a valid C0 + C1 so the session parser is reached.
            if seed % 2 == 0 && bytes.len() > 1537 {
                bytes[0] = 3;
                bytes[5..9].fill(0);
            }
            let _ = replay_client_bytes(&bytes);
        }
    }

    #[test]
    fn garbage_handshake_is_refused() {
        assert!(replay_client_bytes(&[0x47; 3073]).is_err());
    }
}
