//! WebRTC ingest (WHIP, RFC 9725): a browser or OBS publishes over WebRTC
//! and its media joins the same ladder as an RTMP publish.
//!
//! Each publisher gets its own UDP port per offered address (host
//! candidates; the server is ICE-lite, the publisher checks). str0m runs
//! the WebRTC session sans-IO; this module moves its packets and timers,
//! and hands every depacketized frame to [`WebrtcFeed`], whose Matroska
//! feed goes to the pipeline exactly like RTMP's FLV tags do: the hub
//! decides the publish by the stream's key, and dropping the feed's sender
//! ends the stream (archived like any other). Keyframes are asked for with
//! a PLI until the first arrives and after any gap in the video.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use str0m::change::SdpOffer;
use str0m::crypto::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use streamweave_media::webrtc_feed::{FeedVideoCodec, WebrtcFeed};
use streamweave_media::{IngestMessage, PublishDecision, PublishRequest};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};

/// How long a publisher has to connect after its answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a keyframe is asked for while the feed waits for one.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// Datagrams queued between a socket and its session.
const DATAGRAM_QUEUE: usize = 512;
/// Largest datagram read.
const DATAGRAM_MAX_BYTES: usize = 2048;

/// Where and how WebRTC publishers connect.
#[derive(Debug, Clone)]
pub struct WebrtcSettings {
    /// The address sockets bind to; unspecified offers the loopback and
    /// the machine's outbound address.
    pub bind_ip: IpAddr,
    /// Offered instead of the bound address (one-to-one NAT, same ports).
    pub public_ip: Option<IpAddr>,
    /// Publishes at once (the hub has its own live-stream limit).
    pub max_sessions: usize,
}

/// Why a WHIP offer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    /// The offer is not SDP str0m can read.
    #[error("unreadable SDP offer: {0}")]
    BadOffer(String),
    /// No video in a codec the ladder takes.
    #[error("the offer has no video in H.264 or VP8 (audio, when sent, must be Opus)")]
    NoUsableCodec,
    /// The hub refused the publish.
    #[error("{0}")]
    Refused(String),
    /// As many publishers as allowed are connected.
    #[error("the server takes no more WebRTC publishers now")]
    Busy,
    /// Sockets could not be opened.
    #[error("could not open a WebRTC port: {0}")]
    Io(#[from] std::io::Error),
}

/// A publish the server answered.
#[derive(Debug)]
pub struct WhipAnswer {
    /// Names the session resource (for `DELETE`).
    pub session_id: String,
    /// The SDP answer.
    pub sdp: String,
}

struct SessionHandle {
    stream_id: String,
    end: Arc<Notify>,
}

/// The WHIP side of the server: publishes in progress.
pub struct WebrtcIngest {
    settings: WebrtcSettings,
    publish: mpsc::Sender<PublishRequest>,
    crypto: Arc<CryptoProvider>,
    sessions: Mutex<HashMap<String, SessionHandle>>,
}

impl WebrtcIngest {
    /// Asks `publish` (the hub) to decide each publish, like RTMP does.
    pub fn new(settings: WebrtcSettings, publish: mpsc::Sender<PublishRequest>) -> Self {
        WebrtcIngest {
            settings,
            publish,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes in progress.
    pub fn sessions(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Answers a publisher's offer for the stream whose key is
    /// `stream_key`, and runs the session until it ends.
    pub async fn publish(
        self: &Arc<Self>,
        stream_id: &str,
        stream_key: &str,
        offer_sdp: &str,
        peer: SocketAddr,
    ) -> Result<WhipAnswer, WhipError> {
        if self.sessions() >= self.settings.max_sessions {
            return Err(WhipError::Busy);
        }
        let offered = OfferedMedia::read(offer_sdp);
        if !offered.video {
            return Err(WhipError::NoUsableCodec);
        }
        let offer = SdpOffer::from_sdp_string(offer_sdp)
            .map_err(|err| WhipError::BadOffer(err.to_string()))?;
        let mut sockets = Vec::new();
        for (bind, offered_ip) in self.candidate_addresses() {
            let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).await?;
            let port = socket.local_addr()?.port();
            sockets.push((socket, SocketAddr::new(offered_ip, port)));
        }
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(self.crypto.clone())
            .set_ice_lite(true)
            .clear_codecs()
            .enable_h264(true)
            .enable_vp8(true)
            .enable_opus(true, false)
            .build(Instant::now());
        for (_, offered_addr) in &sockets {
            let candidate = Candidate::host(*offered_addr, "udp")
                .map_err(|err| WhipError::BadOffer(err.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|err| WhipError::BadOffer(err.to_string()))?;
        // The hub decides by the key, as for RTMP (live already, limits).
        let (reply, decision) = oneshot::channel();
        self.publish
            .send(PublishRequest {
                stream_key: stream_key.to_string(),
                peer,
                reply,
            })
            .await
            .map_err(|_| WhipError::Refused("the server is stopping".into()))?;
        let feed_tx = match decision.await {
            Ok(PublishDecision::Accept(feed_tx)) => feed_tx,
            Ok(PublishDecision::Refuse(reason)) => return Err(WhipError::Refused(reason)),
            Err(_) => return Err(WhipError::Refused("the server is stopping".into())),
        };
        let session_id = random_id();
        let end = Arc::new(Notify::new());
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                session_id.clone(),
                SessionHandle {
                    stream_id: stream_id.to_string(),
                    end: end.clone(),
                },
            );
        info!(stream = stream_id, %peer, session = %session_id, "WebRTC publish accepted");
        let session = Session {
            rtc,
            feed: WebrtcFeed::new(offered.opus.then_some(2)),
            feed_tx,
            video_mid: None,
            started_at: Instant::now(),
        };
        let this = self.clone();
        let (stream, id) = (stream_id.to_string(), session_id.clone());
        tokio::spawn(async move {
            let outcome = session.run(sockets, end).await;
            match outcome {
                Ok(reason) => {
                    info!(stream = %stream, session = %id, reason, "WebRTC publish ended")
                }
                Err(err) => warn!(stream = %stream, session = %id, %err, "WebRTC publish failed"),
            }
            this.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
        Ok(WhipAnswer {
            session_id,
            sdp: answer.to_sdp_string(),
        })
    }

    /// Ends a publish (`DELETE` on its session); false when there is none
    /// of that stream by that id.
    pub fn end(&self, stream_id: &str, session_id: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(session_id) {
            Some(handle) if handle.stream_id == stream_id => {
                handle.end.notify_one();
                true
            }
            _ => false,
        }
    }

    /// (address to bind, address to offer) for each host candidate.
    fn candidate_addresses(&self) -> Vec<(IpAddr, IpAddr)> {
        let bind = self.settings.bind_ip;
        let local = if bind.is_unspecified() {
            let mut found = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
            found.extend(outbound_ip());
            found
        } else {
            vec![bind]
        };
        local
            .into_iter()
            .map(|ip| match self.settings.public_ip {
                // The public address stands for the one behind the NAT.
                Some(public) if !bind.is_unspecified() || !ip.is_loopback() => (ip, public),
                _ => (ip, ip),
            })
            .collect()
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

fn random_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an offer carries, read from its `m=` sections and `a=rtpmap`s.
#[derive(Debug, Default, PartialEq, Eq)]
struct OfferedMedia {
    /// Video in H.264 or VP8.
    video: bool,
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
                    "video"
                        if codec.eq_ignore_ascii_case("H264")
                            || codec.eq_ignore_ascii_case("VP8") =>
                    {
                        offered.video = true
                    }
                    "audio" if codec.eq_ignore_ascii_case("opus") => offered.opus = true,
                    _ => {}
                }
            }
        }
        offered
    }
}

/// A datagram off one of the session's sockets.
struct Datagram {
    bytes: Vec<u8>,
    source: SocketAddr,
    /// The candidate address it came to.
    destination: SocketAddr,
}

/// One publisher's WebRTC session.
struct Session {
    rtc: Rtc,
    feed: WebrtcFeed,
    feed_tx: mpsc::Sender<IngestMessage>,
    video_mid: Option<Mid>,
    started_at: Instant,
}

impl Session {
    /// Runs until the publisher leaves, is ended, or fails; answers why.
    async fn run(
        mut self,
        sockets: Vec<(UdpSocket, SocketAddr)>,
        end: Arc<Notify>,
    ) -> Result<&'static str, String> {
        let (datagram_tx, mut datagrams) = mpsc::channel(DATAGRAM_QUEUE);
        let mut senders = Vec::new();
        let mut readers = tokio::task::JoinSet::new();
        for (socket, offered) in sockets {
            let socket = Arc::new(socket);
            senders.push((socket.clone(), offered));
            readers.spawn(read_datagrams(socket, offered, datagram_tx.clone()));
        }
        drop(datagram_tx);
        let mut keyframe_check = tokio::time::interval(KEYFRAME_REQUEST_INTERVAL);
        keyframe_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let connect_deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let mut connected = false;
        let mut pending: Vec<IngestMessage> = Vec::new();
        let outcome = loop {
            // Drain str0m's output until it names its next deadline.
            let deadline = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(at)) => break at,
                    Ok(Output::Transmit(transmit)) => {
                        let socket = senders
                            .iter()
                            .find(|(_, offered)| *offered == transmit.source)
                            .or(senders.first());
                        if let Some((socket, _)) = socket {
                            // A lost datagram is WebRTC's to recover from.
                            let _ = socket.try_send_to(&transmit.contents, transmit.destination);
                        }
                    }
                    Ok(Output::Event(event)) => match self.handle(event, &mut pending) {
                        Ok(Some(Progress::Connected)) => connected = true,
                        Ok(Some(Progress::Left)) => {
                            self.rtc.disconnect();
                        }
                        Ok(None) => {}
                        Err(err) => return Err(err),
                    },
                    Err(err) => return Err(format!("WebRTC: {err}")),
                }
            };
            if !self.rtc.is_alive() {
                break Ok("the publisher left");
            }
            for message in pending.drain(..) {
                if self.feed_tx.send(message).await.is_err() {
                    return Err("the stream's pipeline stopped".into());
                }
            }
            let deadline = tokio::time::Instant::from_std(deadline);
            let wake = tokio::select! {
                datagram = datagrams.recv() => match datagram {
                    Some(datagram) => Wake::Datagram(datagram),
                    None => break Err("the WebRTC sockets closed".to_string()),
                },
                _ = tokio::time::sleep_until(deadline) => Wake::Timeout,
                _ = keyframe_check.tick() => {
                    if !connected && tokio::time::Instant::now() > connect_deadline {
                        break Ok("the publisher never connected");
                    }
                    if connected && self.feed.wants_keyframe() {
                        self.request_keyframe();
                    }
                    continue;
                }
                _ = end.notified() => break Ok("ended by its publisher"),
            };
            let input = match &wake {
                Wake::Timeout => Input::Timeout(Instant::now()),
                Wake::Datagram(datagram) => match datagram.bytes.as_slice().try_into() {
                    Ok(contents) => Input::Receive(
                        Instant::now(),
                        Receive {
                            proto: Protocol::Udp,
                            source: datagram.source,
                            destination: datagram.destination,
                            contents,
                        },
                    ),
                    Err(_) => continue, // not STUN, DTLS or RTP
                },
            };
            if let Err(err) = self.rtc.handle_input(input) {
                // A malformed packet from the network is not the end.
                debug!(%err, "WebRTC input refused");
            }
        };
        self.rtc.disconnect();
        readers.abort_all();
        outcome
    }

    fn request_keyframe(&mut self) {
        if let Some(mid) = self.video_mid
            && let Some(mut writer) = self.rtc.writer(mid)
        {
            // Fails only before the stream is known; the next tick asks again.
            let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
        }
    }

    fn handle(
        &mut self,
        event: Event,
        pending: &mut Vec<IngestMessage>,
    ) -> Result<Option<Progress>, String> {
        match event {
            Event::Connected => {
                debug!("WebRTC publisher connected");
                return Ok(Some(Progress::Connected));
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                return Ok(Some(Progress::Left));
            }
            Event::MediaAdded(added) if added.kind == MediaKind::Video => {
                self.video_mid.get_or_insert(added.mid);
            }
            Event::MediaData(data) => {
                let arrival_ms = data
                    .network_time
                    .saturating_duration_since(self.started_at)
                    .as_millis() as u64;
                let (rtp_time, clock_hz) = (data.time.numer(), data.time.denom());
                let codec = data.params.spec().codec;
                let video = match codec {
                    Codec::H264 => Some(FeedVideoCodec::H264),
                    Codec::Vp8 => Some(FeedVideoCodec::Vp8),
                    _ => None,
                };
                if let Some(video) = video {
                    let was_waiting = self.feed.wants_keyframe();
                    let messages = self
                        .feed
                        .push_video(
                            video,
                            rtp_time,
                            clock_hz,
                            arrival_ms,
                            data.contiguous,
                            &data.data,
                        )
                        .map_err(|err| err.to_string())?;
                    pending.extend(messages);
                    if self.feed.wants_keyframe() && !was_waiting {
                        self.request_keyframe();
                    }
                } else if codec == Codec::Opus
                    && let Some(message) = self
                        .feed
                        .push_audio(rtp_time, clock_hz, arrival_ms, &data.data)
                {
                    pending.push(message);
                }
            }
            _ => {}
        }
        Ok(None)
    }
}

enum Progress {
    Connected,
    Left,
}

/// What woke a session's loop.
enum Wake {
    Datagram(Datagram),
    Timeout,
}

async fn read_datagrams(
    socket: Arc<UdpSocket>,
    offered: SocketAddr,
    datagrams: mpsc::Sender<Datagram>,
) {
    let mut buffer = vec![0u8; DATAGRAM_MAX_BYTES];
    loop {
        let (read, source) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            // ICMP errors of earlier sends show up here; keep reading.
            Err(_) => continue,
        };
        let datagram = Datagram {
            bytes: buffer[..read].to_vec(),
            source,
            destination: offered,
        };
        match datagrams.try_send(datagram) {
            Ok(()) => {}
            // The session is behind: drop, as the network would.
            Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
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
                video: true,
                opus: true
            }
        );
        let av1_only = "m=video 9 UDP/TLS/RTP/SAVPF 45\r\na=rtpmap:45 AV1/90000\r\n\
                        m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n";
        assert_eq!(OfferedMedia::read(av1_only), OfferedMedia::default());
        // A codec name under the wrong kind does not count.
        let misplaced = "m=audio 9 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(!OfferedMedia::read(misplaced).video);
    }
}
