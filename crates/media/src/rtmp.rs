//! RTMP ingest: accepts publishers (OBS, ffmpeg) on `rtmp://HOST/live/{key}`.
//!
//! Framing, handshake and the AMF0 command exchange come from `rml_rtmp`; this
//! module owns the connection lifecycle: limits, the app name, asking the
//! platform whether a key may publish, codec checks, and forwarding media as
//! [`IngestMessage`]s into a bounded channel (a slow transcoder slows the
//! publisher through TCP, it never grows a buffer).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::flv::{self, AudioTagInfo, MediaTag, TagKind, VideoTagInfo};
use crate::rtmp_guard::MessageGuard;

/// The only RTMP application name we publish to: `rtmp://HOST/live/{key}`.
pub const RTMP_APP: &str = "live";

/// Bounds of the RTMP server.
///
/// Connections are counted in two pools: *pending* ones (handshake, connect,
/// waiting to publish) and *publishing* ones (a key the platform accepted).
/// Pending connections cannot take a publisher's place: a flood of idle or
/// slow clients fills the pending pool only, where each connection lives at
/// most `setup_timeout`, an address holds at most `max_pending_per_ip`, and a
/// full pool makes room by dropping its oldest connection.
#[derive(Debug, Clone)]
pub struct RtmpLimits {
    /// Publishing connections at once; a publish beyond it is refused.
    pub max_publishers: usize,
    /// Connections not yet publishing, from all addresses.
    pub max_pending: usize,
    /// Connections not yet publishing, from one IP address.
    pub max_pending_per_ip: usize,
    /// Time a client has to complete the handshake.
    pub handshake_timeout: Duration,
    /// Time a client has from connecting to being accepted as a publisher.
    pub setup_timeout: Duration,
    /// A publisher that sends nothing for this long is disconnected.
    pub idle_timeout: Duration,
    /// Bytes a client may send before its publish is accepted (commands only).
    pub max_setup_bytes: usize,
}

impl Default for RtmpLimits {
    fn default() -> Self {
        RtmpLimits {
            max_publishers: 256,
            max_pending: 256,
            max_pending_per_ip: 8,
            handshake_timeout: Duration::from_secs(2),
            setup_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            max_setup_bytes: 64 * 1024,
        }
    }
}

/// Which connections hold a place, in the two pools of [`RtmpLimits`].
struct Admission {
    limits: RtmpLimits,
    table: Mutex<AdmissionTable>,
}

#[derive(Default)]
struct AdmissionTable {
    next_id: u64,
    /// Pending connections by age: their address and the way to drop them.
    pending: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    pending_per_ip: HashMap<IpAddr, usize>,
    publishing: usize,
}

impl AdmissionTable {
    /// Removes a pending connection; answers its eviction signal.
    fn forget_pending(&mut self, id: u64) -> Option<oneshot::Sender<()>> {
        let (ip, evict) = self.pending.remove(&id)?;
        if let Some(count) = self.pending_per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.pending_per_ip.remove(&ip);
            }
        }
        Some(evict)
    }
}

/// A connection's place; dropping it frees the place.
struct Slot {
    admission: Arc<Admission>,
    id: u64,
    publishing: bool,
}

impl Admission {
    /// A place in the pending pool for a client at `ip`, and the signal that
    /// fires if the pool later drops it; `None` when its address has too many.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<(Slot, oneshot::Receiver<()>)> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = table.pending_per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.limits.max_pending_per_ip.max(1) {
            return None;
        }
        if table.pending.len() >= self.limits.max_pending.max(1)
            && let Some(oldest) = table.pending.keys().next().copied()
            && let Some(evict) = table.forget_pending(oldest)
        {
            // The oldest pending connection makes room; the receiver may be gone.
            let _ = evict.send(());
        }
        let id = table.next_id;
        table.next_id += 1;
        let (evict, evicted) = oneshot::channel();
        table.pending.insert(id, (ip, evict));
        *table.pending_per_ip.entry(ip).or_insert(0) += 1;
        Some((
            Slot {
                admission: self.clone(),
                id,
                publishing: false,
            },
            evicted,
        ))
    }
}

impl Slot {
    /// Moves the connection to the publishing pool; `false` when it is full.
    fn promote(&mut self) -> bool {
        if self.publishing {
            return true;
        }
        let mut table = self
            .admission
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if table.publishing >= self.admission.limits.max_publishers.max(1) {
            return false;
        }
        table.forget_pending(self.id);
        table.publishing += 1;
        self.publishing = true;
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self
            .admission
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.publishing {
            table.publishing -= 1;
        } else {
            table.forget_pending(self.id);
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

/// What a publishing connection sends to its pipeline: FLV tags from an
/// RTMP publisher, or a Matroska feed (from a WebRTC publisher, see
/// [`crate::webrtc_feed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestMessage {
    /// The publisher's metadata (may come more than once).
    Metadata(SourceMetadata),
    /// An audio or video message.
    Tag(MediaTag),
    /// The first message of a Matroska feed: the picture size, whether
    /// there is audio, and the container's header.
    MatroskaStart(crate::webrtc_feed::MatroskaStart),
    /// More of a Matroska feed (clusters and blocks).
    Matroska(bytes::Bytes),
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
///
/// The accept loop never waits for a place: a connection over its address's
/// pending limit is closed at once, so the kernel's listen queue keeps moving
/// and a publisher with a valid key is never stuck behind idle clients.
pub async fn serve_rtmp(
    listener: TcpListener,
    requests: mpsc::Sender<PublishRequest>,
    limits: RtmpLimits,
) {
    let admission = Arc::new(Admission {
        limits: limits.clone(),
        table: Mutex::new(AdmissionTable::default()),
    });
    let mut accept_failures = 0u32;
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => {
                accept_failures = 0;
                accepted
            }
            Err(err) => {
                // Out of file descriptors (or another transient failure): back
                // off, doubling up to a second, instead of spinning.
                accept_failures = accept_failures.saturating_add(1);
                let backoff_ms = 10u64 << accept_failures.min(7);
                warn!(%err, backoff_ms, "rtmp accept failed");
                tokio::time::sleep(Duration::from_millis(backoff_ms.min(1000))).await;
                continue;
            }
        };
        let Some((slot, evicted)) = admission.admit(peer.ip()) else {
            debug!(%peer, "rtmp: too many pending connections from this address");
            drop(socket);
            continue;
        };
        let requests = requests.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let served = handle_connection(socket, peer, requests, &limits, slot);
            let outcome = tokio::select! {
                outcome = served => outcome,
                Ok(()) = evicted => Err("dropped to make room for new connections".to_string()),
            };
            match outcome {
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
    slot: Slot,
) -> Result<(), CloseReason> {
    socket.set_nodelay(true).ok();
    let setup_deadline = tokio::time::Instant::now() + limits.setup_timeout;
    let handshake_timeout = limits.handshake_timeout.min(limits.setup_timeout);
    let leftover = tokio::time::timeout(handshake_timeout, handshake(&mut socket))
        .await
        .map_err(|_| "handshake timed out".to_string())??;

    let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())
        .map_err(|err| format!("session setup: {err}"))?;
    let mut guard = MessageGuard::new();
    let mut connection = Connection {
        peer,
        requests,
        sink: None,
        slot,
        video_checked: false,
        audio_checked: false,
        closing: None,
    };
    connection
        .send_results(&mut socket, &mut session, initial)
        .await?;
    let mut setup_bytes = leftover.len();
    if !leftover.is_empty() {
        guard
            .inspect(&leftover)
            .map_err(|err| format!("rtmp protocol error: {err}"))?;
        let results = session
            .handle_input(&leftover)
            .map_err(|err| format!("rtmp protocol error: {err}"))?;
        connection
            .send_results(&mut socket, &mut session, results)
            .await?;
    }

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
        let input = &buffer[..read];
        if connection.sink.is_none() {
            setup_bytes += read;
            if setup_bytes > limits.max_setup_bytes {
                return Err(format!(
                    "more than {} bytes before publishing",
                    limits.max_setup_bytes
                ));
            }
        }
        let decoded = guard
            .inspect(input)
            .map_err(|err| err.to_string())
            .and_then(|()| session.handle_input(input).map_err(|err| err.to_string()));
        let results = match decoded {
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
    /// This connection's place among pending or publishing connections.
    slot: Slot,
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
                // A place among publishers first: a refused publish closes
                // the connection, which frees it again.
                if !self.slot.promote() {
                    return Err("too many publishing connections".into());
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
    MessageGuard::new()
        .inspect(&leftover)
        .map_err(|err| format!("rtmp protocol error: {err}"))?;
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

/// The bytes a client sends to deliver one message: a handshake (C0, C1
/// and C2, all zeros but the version), then `payload` as a message of
/// `type_id` on chunk stream 3 in 128-byte chunks. For the fuzz target and
/// tests, so that arbitrary AMF reaches the decoder behind a valid framing.
pub fn client_bytes_for_message(type_id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![3u8];
    out.extend(std::iter::repeat_n(0u8, 1536 * 2));
    let length = u32::try_from(payload.len().min(0x00FF_FFFF)).unwrap_or(0x00FF_FFFF);
    let payload = &payload[..length as usize];
    out.push(0x03);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&[0, 0, 0, 0]);
    for (index, chunk) in payload.chunks(128).enumerate() {
        if index > 0 {
            out.push(0xC3);
        }
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp_guard::{amf_number, amf_string, nested_connect};

    #[test]
    fn nested_amf_is_refused_before_the_decoder_sees_it() {
        // 4,000 levels overflowed a worker's stack in rml_amf0 and aborted
        // the process; now the guard refuses them without recursion.
        let bytes = client_bytes_for_message(20, &nested_connect(4000));
        let err = replay_client_bytes(&bytes).expect_err("refused");
        assert!(err.contains("nested deeper"), "{err}");
        for type_id in [15, 17, 18] {
            assert!(
                replay_client_bytes(&client_bytes_for_message(type_id, &nested_connect(4000)))
                    .is_err()
            );
        }
    }

    #[test]
    fn short_commands_are_refused_instead_of_panicking() {
        let mut short = amf_string("connect");
        short.extend(amf_number(1.0));
        let err = replay_client_bytes(&client_bytes_for_message(20, &short)).expect_err("refused");
        assert!(err.contains("3 or more"), "{err}");
        let mut frame = amf_string("@setDataFrame");
        frame.extend(amf_string("onMetaData"));
        assert!(replay_client_bytes(&client_bytes_for_message(18, &frame)).is_err());
    }

    #[test]
    fn a_real_connect_still_passes() {
        let connect = [
            amf_string("connect"),
            amf_number(1.0),
            vec![0x03, 0, 3, b'a', b'p', b'p'],
            amf_string("live"),
            vec![0, 0, 0x09],
        ]
        .concat();
        assert!(replay_client_bytes(&client_bytes_for_message(20, &connect)).is_ok());
    }

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
