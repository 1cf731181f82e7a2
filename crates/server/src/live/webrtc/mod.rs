//! WebRTC: publishing over WHIP (RFC 9725), where a browser or OBS sends
//! media that joins the same ladder as an RTMP publish, and playing over
//! WHEP, where a viewer receives the publisher's own media forwarded, the
//! lowest-latency way to watch.
//!
//! Every session gets its own UDP port per offered address (host
//! candidates; the server is ICE-lite, the peer checks). str0m runs each
//! session sans-IO; this module moves its packets and timers
//! ([`Transport`]). A publish ([`publish`]) hands every depacketized frame
//! to a `WebrtcFeed`, whose Matroska goes to the pipeline exactly like
//! RTMP's FLV tags, and to the stream's [`Fanout`], from which each
//! viewer's session ([`play`]) forwards frames, starting at a keyframe
//! and metered by media time on paid streams.

mod play;
mod publish;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use str0m::change::SdpOffer;
use str0m::crypto::CryptoProvider;
use str0m::format::{Codec, PayloadParams};
use str0m::media::MediaTime;
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::{Candidate, Input, Rtc, RtcConfig};
use streamweave_media::{PublishDecision, PublishRequest};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tracing::{info, warn};

pub use play::{Admission, PlayGate};

use crate::money::sessions::MediaSpan;

/// How long a peer has to connect after its answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a keyframe is asked for while one is awaited.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// Datagrams queued between a socket and its session.
const DATAGRAM_QUEUE: usize = 512;
/// Largest datagram read.
const DATAGRAM_MAX_BYTES: usize = 2048;
/// Frames a viewer may fall behind the publisher before it skips to the
/// next keyframe (about four seconds of video and audio).
const FANOUT_FRAMES: usize = 512;

/// Where and how WebRTC peers connect.
#[derive(Debug, Clone)]
pub struct WebrtcSettings {
    /// The address sockets bind to; unspecified offers the loopback and
    /// the machine's outbound address.
    pub bind_ip: IpAddr,
    /// Offered instead of the bound address (one-to-one NAT, same ports).
    pub public_ip: Option<IpAddr>,
    /// Publishers at once (the hub has its own live-stream limit).
    pub max_publishers: usize,
    /// WHEP viewers at once.
    pub max_viewers: usize,
    /// Segment duration: WHEP media time is metered in the same positions
    /// as the ladder's segments.
    pub segment_duration_ms: u32,
    /// UDP datagrams dropped on purpose, in percent of those sent and
    /// received (0 in production): how a lossy network is simulated
    /// where the kernel has no netem (100 leaves only ICE-TCP).
    pub simulated_loss_percent: u8,
}

/// Why an offer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum WebrtcError {
    /// The offer is not SDP str0m can read.
    #[error("unreadable SDP offer: {0}")]
    BadOffer(String),
    /// No video in a codec the ladder takes.
    #[error("the offer has no video in H.264 or VP8 (audio, when sent, must be Opus)")]
    NoUsableCodec,
    /// A viewer's offer cannot receive the publisher's video codec.
    #[error("the stream's video is {0}, which the offer does not receive")]
    NoCommonCodec(&'static str),
    /// The hub refused the publish.
    #[error("{0}")]
    Refused(String),
    /// WHEP plays only what a WebRTC publisher sends to this server.
    #[error("the stream is not being published over WebRTC to this server: watch it over HLS")]
    NoSource,
    /// As many sessions as allowed are connected.
    #[error("the server takes no more WebRTC sessions now")]
    Busy,
    /// Sockets could not be opened.
    #[error("could not open a WebRTC port: {0}")]
    Io(#[from] std::io::Error),
}

/// A session the server answered.
#[derive(Debug)]
pub struct Answer {
    /// Names the session resource (for `DELETE`).
    pub session_id: String,
    /// The SDP answer.
    pub sdp: String,
}

/// A session in progress: its stream and how to end it.
struct SessionHandle {
    stream_id: String,
    end: Arc<Notify>,
}

/// One frame of a publisher, as viewers get it.
#[derive(Debug, Clone)]
struct SourceFrame {
    video: bool,
    keyframe: bool,
    params: PayloadParams,
    /// The publisher's RTP time, passed on as is.
    rtp_time: MediaTime,
    network_time: Instant,
    /// Where in the stream (from the first keyframe), for metering.
    media_ms: u64,
    data: Arc<[u8]>,
}

/// A WebRTC publish's frames, for its viewers.
struct Fanout {
    frames: broadcast::Sender<Arc<SourceFrame>>,
    /// A viewer needs a keyframe (it joined, or fell behind).
    keyframe_wanted: Notify,
    /// The video codec once known (`None` before the first video frame).
    video_codec: Mutex<Option<Codec>>,
}

/// The WebRTC side of the server: publishes and viewers in progress.
pub struct WebrtcIngest {
    settings: WebrtcSettings,
    publish: mpsc::Sender<PublishRequest>,
    crypto: Arc<CryptoProvider>,
    /// (address to bind, address to offer) for each host candidate.
    candidates: Vec<(IpAddr, IpAddr)>,
    publishers: Mutex<HashMap<String, SessionHandle>>,
    viewers: Mutex<HashMap<String, SessionHandle>>,
    /// By stream id, the frames of its WebRTC publisher.
    sources: Mutex<HashMap<String, Arc<Fanout>>>,
}

impl WebrtcIngest {
    /// Asks `publish` (the hub) to decide each publish, like RTMP does.
    pub fn new(settings: WebrtcSettings, publish: mpsc::Sender<PublishRequest>) -> Self {
        WebrtcIngest {
            candidates: candidate_addresses(settings.bind_ip, settings.public_ip),
            settings,
            publish,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            publishers: Mutex::new(HashMap::new()),
            viewers: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes in progress.
    pub fn publishers(&self) -> usize {
        lock(&self.publishers).len()
    }

    /// WHEP viewers connected or connecting.
    pub fn viewers(&self) -> usize {
        lock(&self.viewers).len()
    }

    /// Answers a publisher's offer for the stream whose key is
    /// `stream_key`, and runs the session until it ends.
    pub async fn publish(
        self: &Arc<Self>,
        stream_id: &str,
        stream_key: &str,
        offer_sdp: &str,
        peer: SocketAddr,
    ) -> Result<Answer, WebrtcError> {
        if self.publishers() >= self.settings.max_publishers {
            return Err(WebrtcError::Busy);
        }
        let offered = OfferedMedia::read(offer_sdp);
        if !offered.video() {
            return Err(WebrtcError::NoUsableCodec);
        }
        let (transport, rtc, answer) = self.open(offer_sdp).await?;
        // The hub decides by the key, as for RTMP (live already, limits).
        let (reply, decision) = oneshot::channel();
        self.publish
            .send(PublishRequest {
                stream_key: stream_key.to_string(),
                peer,
                reply,
            })
            .await
            .map_err(|_| WebrtcError::Refused("the server is stopping".into()))?;
        let feed_tx = match decision.await {
            Ok(PublishDecision::Accept(feed_tx)) => feed_tx,
            Ok(PublishDecision::Refuse(reason)) => return Err(WebrtcError::Refused(reason)),
            Err(_) => return Err(WebrtcError::Refused("the server is stopping".into())),
        };
        let fanout = Arc::new(Fanout {
            frames: broadcast::channel(FANOUT_FRAMES).0,
            keyframe_wanted: Notify::new(),
            video_codec: Mutex::new(None),
        });
        lock(&self.sources).insert(stream_id.to_string(), fanout.clone());
        let (session_id, end) = self.register(&self.publishers, stream_id);
        info!(stream = stream_id, %peer, session = %session_id, "WebRTC publish accepted");
        let session = publish::PublishSession::new(rtc, offered.opus, feed_tx, fanout.clone());
        let this = self.clone();
        let (stream, id) = (stream_id.to_string(), session_id.clone());
        tokio::spawn(async move {
            match session.run(transport, end).await {
                Ok(reason) => {
                    info!(stream = %stream, session = %id, reason, "WebRTC publish ended")
                }
                Err(err) => warn!(stream = %stream, session = %id, %err, "WebRTC publish failed"),
            }
            lock(&this.publishers).remove(&id);
            let mut sources = lock(&this.sources);
            if sources
                .get(&stream)
                .is_some_and(|f| Arc::ptr_eq(f, &fanout))
            {
                // Dropping the last sender ends the viewers' sessions.
                sources.remove(&stream);
            }
        });
        Ok(Answer {
            session_id,
            sdp: answer,
        })
    }

    /// Answers a viewer's offer for a stream published over WebRTC here,
    /// and forwards the publisher's media until the viewer leaves, the
    /// stream ends or `gate` refuses.
    pub async fn play(
        self: &Arc<Self>,
        stream_id: &str,
        offer_sdp: &str,
        gate: PlayGate,
        peer: SocketAddr,
    ) -> Result<Answer, WebrtcError> {
        if self.viewers() >= self.settings.max_viewers {
            return Err(WebrtcError::Busy);
        }
        let fanout = lock(&self.sources)
            .get(stream_id)
            .cloned()
            .ok_or(WebrtcError::NoSource)?;
        let offered = OfferedMedia::read(offer_sdp);
        let source_codec = *lock(&fanout.video_codec);
        match source_codec {
            Some(Codec::H264) if !offered.h264 => return Err(WebrtcError::NoCommonCodec("H.264")),
            Some(Codec::Vp8) if !offered.vp8 => return Err(WebrtcError::NoCommonCodec("VP8")),
            None if !offered.video() => return Err(WebrtcError::NoUsableCodec),
            _ => {}
        }
        let (transport, rtc, answer) = self.open(offer_sdp).await?;
        let (session_id, end) = self.register(&self.viewers, stream_id);
        info!(stream = stream_id, %peer, session = %session_id, "WHEP viewer");
        let session = play::PlaySession::new(rtc, fanout, gate, self.settings.segment_duration_ms);
        let this = self.clone();
        let (stream, id) = (stream_id.to_string(), session_id.clone());
        tokio::spawn(async move {
            match session.run(transport, end).await {
                Ok(reason) => info!(stream = %stream, session = %id, reason, "WHEP viewer left"),
                Err(err) => warn!(stream = %stream, session = %id, %err, "WHEP session failed"),
            }
            lock(&this.viewers).remove(&id);
        });
        Ok(Answer {
            session_id,
            sdp: answer,
        })
    }

    /// Whether `stream_id` is being published over WebRTC to this server.
    pub fn has_source(&self, stream_id: &str) -> bool {
        lock(&self.sources).contains_key(stream_id)
    }

    /// Ends a publish (`DELETE` on its session); false when there is none
    /// of that stream by that id.
    pub fn end_publish(&self, stream_id: &str, session_id: &str) -> bool {
        end_session(&self.publishers, stream_id, session_id)
    }

    /// Ends a viewer's session (`DELETE` on it).
    pub fn end_play(&self, stream_id: &str, session_id: &str) -> bool {
        end_session(&self.viewers, stream_id, session_id)
    }

    fn register(
        &self,
        sessions: &Mutex<HashMap<String, SessionHandle>>,
        stream_id: &str,
    ) -> (String, Arc<Notify>) {
        let session_id = crate::store::random_id();
        let end = Arc::new(Notify::new());
        lock(sessions).insert(
            session_id.clone(),
            SessionHandle {
                stream_id: stream_id.to_string(),
                end: end.clone(),
            },
        );
        (session_id, end)
    }

    /// Opens the session's sockets and answers the offer: the transport,
    /// the session's Rtc and the answer's SDP.
    async fn open(&self, offer_sdp: &str) -> Result<(Transport, Rtc, String), WebrtcError> {
        let offer = SdpOffer::from_sdp_string(offer_sdp)
            .map_err(|err| WebrtcError::BadOffer(err.to_string()))?;
        let transport =
            Transport::open(&self.candidates, self.settings.simulated_loss_percent).await?;
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(self.crypto.clone())
            .set_ice_lite(true)
            .clear_codecs()
            .enable_h264(true)
            .enable_vp8(true)
            .enable_opus(true, false)
            .build(Instant::now());
        for offered in transport.offered() {
            let candidate = Candidate::host(offered, "udp")
                .map_err(|err| WebrtcError::BadOffer(err.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        // ICE-TCP, for peers whose network lets no UDP through.
        for offered in transport.offered_tcp() {
            let candidate = Candidate::builder()
                .tcp()
                .host(offered)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|err| WebrtcError::BadOffer(err.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|err| WebrtcError::BadOffer(err.to_string()))?;
        Ok((transport, rtc, answer.to_sdp_string()))
    }
}

/// (address to bind, address to offer) for each host candidate: `bind`,
/// or when it is unspecified the loopback and the outbound address; the
/// public address, if any, offered for the one behind the NAT.
fn candidate_addresses(bind: IpAddr, public_ip: Option<IpAddr>) -> Vec<(IpAddr, IpAddr)> {
    let local = if bind.is_unspecified() {
        let mut found = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        found.extend(outbound_ip());
        found
    } else {
        vec![bind]
    };
    local
        .into_iter()
        .map(|ip| match public_ip {
            Some(public) if !bind.is_unspecified() || !ip.is_loopback() => (ip, public),
            _ => (ip, ip),
        })
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn end_session(
    sessions: &Mutex<HashMap<String, SessionHandle>>,
    stream_id: &str,
    session_id: &str,
) -> bool {
    let mut sessions = lock(sessions);
    match sessions.get(session_id) {
        Some(handle) if handle.stream_id == stream_id => {
            handle.end.notify_one();
            // Gone at once: a second DELETE finds nothing.
            sessions.remove(session_id);
            true
        }
        _ => false,
    }
}

/// The address this machine sends from towards the internet (no packet
/// is sent: connecting a UDP socket only picks the route).
fn outbound_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// What an offer carries, read from its `m=` sections and `a=rtpmap`s.
#[derive(Debug, Default, PartialEq, Eq)]
struct OfferedMedia {
    /// Video in H.264.
    h264: bool,
    /// Video in VP8.
    vp8: bool,
    /// Audio in Opus.
    opus: bool,
}

impl OfferedMedia {
    fn read(sdp: &str) -> Self {
        let mut offered = OfferedMedia::default();
        let mut kind = "";
        for line in sdp.lines() {
            if let Some(media) = line.strip_prefix("m=") {
                kind = media.split(' ').next().unwrap_or("");
            } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
                let codec = map
                    .split_once(' ')
                    .map(|(_, codec)| codec.split('/').next().unwrap_or(""))
                    .unwrap_or("");
                match kind {
                    "video" if codec.eq_ignore_ascii_case("H264") => offered.h264 = true,
                    "video" if codec.eq_ignore_ascii_case("VP8") => offered.vp8 = true,
                    "audio" if codec.eq_ignore_ascii_case("opus") => offered.opus = true,
                    _ => {}
                }
            }
        }
        offered
    }

    fn video(&self) -> bool {
        self.h264 || self.vp8
    }
}

/// A datagram off one of the session's sockets.
struct Datagram {
    bytes: Vec<u8>,
    source: SocketAddr,
    /// The candidate address it came to.
    destination: SocketAddr,
    /// UDP, or a frame of an ICE-TCP connection (RFC 4571).
    proto: Protocol,
}

impl Datagram {
    /// The datagram as str0m's input, unless it is not STUN, DTLS or RTP.
    fn input(&self) -> Option<Input<'_>> {
        let contents = self.bytes.as_slice().try_into().ok()?;
        Some(Input::Receive(
            Instant::now(),
            Receive {
                proto: self.proto,
                source: self.source,
                destination: self.destination,
                contents,
            },
        ))
    }
}

/// Feeds str0m what woke a session's loop: a datagram (skipped when it is
/// not STUN, DTLS or RTP), or else its timeout.
fn feed(rtc: &mut Rtc, datagram: Option<&Datagram>) {
    let input = match datagram {
        Some(datagram) => match datagram.input() {
            Some(input) => input,
            None => return,
        },
        None => Input::Timeout(Instant::now()),
    };
    if let Err(err) = rtc.handle_input(input) {
        // A malformed packet from the network is not the end.
        tracing::debug!(%err, "WebRTC input refused");
    }
}

/// A session's sockets: one per offered address, each read by a task into
/// one bounded queue (a datagram that does not fit is dropped, as the
/// network would).
struct Transport {
    senders: Vec<(Arc<UdpSocket>, SocketAddr)>,
    /// The offered ICE-TCP addresses.
    tcp_offered: Vec<SocketAddr>,
    /// By peer address, the frames to write on its ICE-TCP connection.
    tcp_writers: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
    datagrams: mpsc::Receiver<Datagram>,
    readers: tokio::task::JoinSet<()>,
    loss_percent: u8,
}

/// ICE-TCP connections one session accepts (a peer tries a few at most).
const TCP_CONNECTIONS_MAX: usize = 4;
/// Frames queued for one ICE-TCP connection before more are dropped.
const TCP_WRITE_QUEUE: usize = 256;

/// Whether a datagram is lost to the simulated network.
fn lost(loss_percent: u8) -> bool {
    loss_percent > 0 && rand::rng().random_range(0..100u8) < loss_percent
}

impl Transport {
    async fn open(addresses: &[(IpAddr, IpAddr)], loss_percent: u8) -> std::io::Result<Transport> {
        let (datagram_tx, datagrams) = mpsc::channel(DATAGRAM_QUEUE);
        let mut senders = Vec::new();
        let mut readers = tokio::task::JoinSet::new();
        for &(bind, offered_ip) in addresses {
            let socket = Arc::new(UdpSocket::bind(SocketAddr::new(bind, 0)).await?);
            let offered = SocketAddr::new(offered_ip, socket.local_addr()?.port());
            senders.push((socket.clone(), offered));
            readers.spawn(read_datagrams(
                socket,
                offered,
                datagram_tx.clone(),
                loss_percent,
            ));
        }
        let tcp_writers: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>> = Arc::default();
        let mut tcp_offered = Vec::new();
        for &(bind, offered_ip) in addresses {
            let listener = tokio::net::TcpListener::bind(SocketAddr::new(bind, 0)).await?;
            let offered = SocketAddr::new(offered_ip, listener.local_addr()?.port());
            tcp_offered.push(offered);
            readers.spawn(accept_tcp(
                listener,
                offered,
                datagram_tx.clone(),
                tcp_writers.clone(),
            ));
        }
        Ok(Transport {
            senders,
            tcp_offered,
            tcp_writers,
            datagrams,
            readers,
            loss_percent,
        })
    }

    fn offered(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.senders.iter().map(|(_, offered)| *offered)
    }

    fn offered_tcp(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.tcp_offered.iter().copied()
    }

    /// Sends from the socket of the candidate str0m chose.
    fn send(&self, transmit: &Transmit) {
        if transmit.proto != Protocol::Udp {
            let writer = lock(&self.tcp_writers).get(&transmit.destination).cloned();
            if let Some(writer) = writer {
                // A full queue drops, as a congested network would.
                let _ = writer.try_send(transmit.contents.to_vec());
            }
            return;
        }
        if lost(self.loss_percent) {
            return;
        }
        let socket = self
            .senders
            .iter()
            .find(|(_, offered)| *offered == transmit.source)
            .or(self.senders.first());
        if let Some((socket, _)) = socket {
            // A lost datagram is WebRTC's to recover from.
            let _ = socket.try_send_to(&transmit.contents, transmit.destination);
        }
    }

    async fn next(&mut self) -> Option<Datagram> {
        self.datagrams.recv().await
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.readers.abort_all();
    }
}

async fn read_datagrams(
    socket: Arc<UdpSocket>,
    offered: SocketAddr,
    datagrams: mpsc::Sender<Datagram>,
    loss_percent: u8,
) {
    let mut buffer = vec![0u8; DATAGRAM_MAX_BYTES];
    loop {
        let (read, source) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            // ICMP errors of earlier sends show up here; keep reading.
            Err(_) => continue,
        };
        if lost(loss_percent) {
            continue;
        }
        let datagram = Datagram {
            bytes: buffer[..read].to_vec(),
            source,
            destination: offered,
            proto: Protocol::Udp,
        };
        match datagrams.try_send(datagram) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// Accepts a session's ICE-TCP connections (at most
/// [`TCP_CONNECTIONS_MAX`]) and reads their RFC 4571 frames (a 16-bit
/// length, then the packet) as datagrams.
async fn accept_tcp(
    listener: tokio::net::TcpListener,
    offered: SocketAddr,
    datagrams: mpsc::Sender<Datagram>,
    writers: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= TCP_CONNECTIONS_MAX {
            continue; // dropped: closes the connection
        }
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let (frames_tx, mut frames) = mpsc::channel::<Vec<u8>>(TCP_WRITE_QUEUE);
        lock(&writers).insert(peer, frames_tx);
        connections.spawn(async move {
            while let Some(frame) = frames.recv().await {
                let Ok(length) = u16::try_from(frame.len()) else {
                    continue;
                };
                if writer.write_all(&length.to_be_bytes()).await.is_err()
                    || writer.write_all(&frame).await.is_err()
                {
                    return;
                }
            }
        });
        let (datagrams, writers) = (datagrams.clone(), writers.clone());
        connections.spawn(async move {
            let mut buffer = vec![0u8; usize::from(u16::MAX)];
            while let Ok(length) = reader.read_u16().await {
                let packet = &mut buffer[..usize::from(length)];
                if reader.read_exact(packet).await.is_err() {
                    break;
                }
                let datagram = Datagram {
                    bytes: packet.to_vec(),
                    source: peer,
                    destination: offered,
                    proto: Protocol::Tcp,
                };
                // A full queue: the session is behind; the peer resends.
                if let Err(mpsc::error::TrySendError::Closed(_)) = datagrams.try_send(datagram) {
                    break;
                }
            }
            lock(&writers).remove(&peer);
        });
    }
}

/// Where a frame at `media_ms` falls in the ladder's positions: the span
/// a viewer is granted up to the end of the frame (`frame_ms` long).
fn media_span(media_ms: u64, frame_ms: u32, segment_duration_ms: u32) -> MediaSpan {
    let segment = u64::from(segment_duration_ms.max(1));
    let into = u32::try_from(media_ms % segment).unwrap_or(0);
    MediaSpan {
        position: media_ms / segment,
        through_ms: into.saturating_add(frame_ms).min(segment_duration_ms),
        whole: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_codecs_an_offer_carries() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n";
        assert_eq!(
            OfferedMedia::read(offer),
            OfferedMedia {
                h264: true,
                vp8: true,
                opus: true
            }
        );
        let av1_only = "m=video 9 UDP/TLS/RTP/SAVPF 45\r\na=rtpmap:45 AV1/90000\r\n\
                        m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n";
        assert_eq!(OfferedMedia::read(av1_only), OfferedMedia::default());
        // A codec name under the wrong kind does not count.
        let misplaced = "m=audio 9 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(!OfferedMedia::read(misplaced).video());
    }

    #[test]
    fn frames_map_onto_segment_positions() {
        assert_eq!(
            media_span(0, 33, 2000),
            MediaSpan {
                position: 0,
                through_ms: 33,
                whole: false
            }
        );
        assert_eq!(media_span(4_990, 33, 2000).position, 2);
        // A frame crossing a boundary grants up to the segment's end only.
        assert_eq!(media_span(1_990, 33, 2000).through_ms, 2000);
    }
}
