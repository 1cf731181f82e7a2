//! One WHEP viewer's session: the publisher's frames forwarded as they
//! arrive, from a keyframe on, each video frame passing the viewer's gate.
//!
//! On a paid stream the gate is the session's meter: each frame grants
//! the media time up to its end (in the ladder's segment positions, so
//! switching to HLS never charges a position twice). When the gate asks
//! for payment, forwarding pauses and the 402 problem (as the HLS gate
//! answers it) goes to the viewer over its data channel, once per pause;
//! vouchers arrive on the HTTP voucher endpoint, and the next frame the
//! gate lets through resumes the picture at a keyframe.

use std::sync::Arc;

use str0m::channel::ChannelId;
use str0m::media::{MediaKind, Mid};
use str0m::{Event, IceConnectionState, Output, Rtc};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tracing::debug;

use super::{
    CONNECT_TIMEOUT, Fanout, KEYFRAME_REQUEST_INTERVAL, SourceFrame, Transport, media_span,
};
use crate::money::sessions::MediaSpan;

/// What a viewer's gate says of the media up to a frame's end.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Forward it.
    Serve,
    /// Pause until paid; the problem document to send the viewer.
    PaymentRequired(serde_json::Value),
    /// Stop: the session ended or may not watch (the reason).
    Refused(String),
}

/// Decides, for each video frame, whether the viewer may have it.
pub type PlayGate = Arc<dyn Fn(MediaSpan) -> Admission + Send + Sync>;

/// Longest gap between video frames counted as one frame's duration.
const FRAME_MS_MAX: u64 = 200;
/// A frame's duration before the second frame says.
const FRAME_MS_DEFAULT: u32 = 33;

pub(super) struct PlaySession {
    rtc: Rtc,
    fanout: Arc<Fanout>,
    gate: PlayGate,
    segment_duration_ms: u32,
    video_mid: Option<Mid>,
    audio_mid: Option<Mid>,
    channel: Option<ChannelId>,
    /// Frames are dropped until a keyframe (joining, after lag or a pause).
    waiting_for_keyframe: bool,
    /// Forwarding paused for payment: the notice sent (again when the
    /// data channel opens after it).
    paused: Option<serde_json::Value>,
    last_video_ms: Option<u64>,
}

impl PlaySession {
    pub(super) fn new(
        rtc: Rtc,
        fanout: Arc<Fanout>,
        gate: PlayGate,
        segment_duration_ms: u32,
    ) -> Self {
        PlaySession {
            rtc,
            fanout,
            gate,
            segment_duration_ms,
            video_mid: None,
            audio_mid: None,
            channel: None,
            waiting_for_keyframe: true,
            paused: None,
            last_video_ms: None,
        }
    }

    /// Runs until the viewer leaves, the stream ends, or the gate refuses.
    pub(super) async fn run(
        mut self,
        mut transport: Transport,
        end: Arc<Notify>,
    ) -> Result<&'static str, String> {
        let mut frames = self.fanout.frames.subscribe();
        let mut keyframe_check = tokio::time::interval(KEYFRAME_REQUEST_INTERVAL);
        keyframe_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let connect_deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let mut connected = false;
        let outcome = loop {
            let deadline = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(at)) => break at,
                    Ok(Output::Transmit(transmit)) => transport.send(&transmit),
                    Ok(Output::Event(event)) => match event {
                        Event::Connected => {
                            connected = true;
                            self.fanout.keyframe_wanted.notify_one();
                        }
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            self.rtc.disconnect();
                        }
                        Event::MediaAdded(added) => match added.kind {
                            MediaKind::Video => {
                                self.video_mid.get_or_insert(added.mid);
                            }
                            MediaKind::Audio => {
                                self.audio_mid.get_or_insert(added.mid);
                            }
                        },
                        // The viewer's decoder lost its picture: only the
                        // publisher can send a new keyframe.
                        Event::KeyframeRequest(_) => self.fanout.keyframe_wanted.notify_one(),
                        Event::ChannelOpen(id, _) => {
                            self.channel.get_or_insert(id);
                            if let Some(notice) = self.paused.clone() {
                                self.notify(&notice);
                            }
                        }
                        _ => {}
                    },
                    Err(err) => return Err(format!("WebRTC: {err}")),
                }
            };
            if !self.rtc.is_alive() {
                break Ok("the viewer left");
            }
            let datagram = tokio::select! {
                datagram = transport.next() => match datagram {
                    Some(datagram) => Some(datagram),
                    None => break Err("the WebRTC sockets closed".to_string()),
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => None,
                frame = frames.recv(), if connected => {
                    match frame {
                        Ok(frame) => {
                            if let Err(reason) = self.forward(&frame) {
                                self.notify(&serde_json::json!({ "notice": "ended", "detail": reason }));
                                break Ok("refused by its gate");
                            }
                        }
                        Err(RecvError::Lagged(_)) => {
                            self.waiting_for_keyframe = true;
                            self.fanout.keyframe_wanted.notify_one();
                        }
                        Err(RecvError::Closed) => break Ok("the stream ended"),
                    }
                    continue;
                }
                _ = keyframe_check.tick() => {
                    if !connected && tokio::time::Instant::now() > connect_deadline {
                        break Ok("the viewer never connected");
                    }
                    if connected && self.waiting_for_keyframe && self.paused.is_none() {
                        self.fanout.keyframe_wanted.notify_one();
                    }
                    continue;
                }
                _ = end.notified() => break Ok("ended by the viewer"),
            };
            super::feed(&mut self.rtc, datagram.as_ref());
        };
        self.rtc.disconnect();
        outcome
    }

    /// Forwards a frame if the viewer may have it; `Err` when the gate
    /// refuses for good.
    fn forward(&mut self, frame: &SourceFrame) -> Result<(), String> {
        if frame.video {
            // A frame that will not be shown is not charged (joining, or
            // after falling behind); while paused every frame asks the
            // gate, which is how payment is noticed.
            if self.paused.is_none() && self.waiting_for_keyframe && !frame.keyframe {
                return Ok(());
            }
            let frame_ms = match self.last_video_ms {
                Some(last) if frame.media_ms > last => {
                    u32::try_from((frame.media_ms - last).min(FRAME_MS_MAX)).unwrap_or(0)
                }
                _ => FRAME_MS_DEFAULT,
            };
            self.last_video_ms = Some(frame.media_ms);
            let span = media_span(frame.media_ms, frame_ms, self.segment_duration_ms);
            match (self.gate)(span) {
                Admission::Serve => {
                    if self.paused.take().is_some() {
                        self.waiting_for_keyframe = true;
                        self.notify(&serde_json::json!({ "notice": "resumed" }));
                    }
                }
                Admission::PaymentRequired(problem) => {
                    if self.paused.is_none() {
                        let notice =
                            serde_json::json!({ "notice": "payment-required", "problem": problem });
                        self.notify(&notice);
                        self.paused = Some(notice);
                    }
                    return Ok(());
                }
                Admission::Refused(reason) => return Err(reason),
            }
            if self.waiting_for_keyframe {
                if !frame.keyframe {
                    return Ok(());
                }
                self.waiting_for_keyframe = false;
            }
        } else if self.paused.is_some() || self.waiting_for_keyframe {
            // Sound waits for the picture.
            return Ok(());
        }
        let mid = if frame.video {
            self.video_mid
        } else {
            self.audio_mid
        };
        let Some(writer) = mid.and_then(|mid| self.rtc.writer(mid)) else {
            return Ok(());
        };
        let Some(pt) = writer.match_params(frame.params) else {
            return Ok(());
        };
        if let Err(err) = writer.write(pt, frame.network_time, frame.rtp_time, frame.data.clone()) {
            debug!(%err, "forwarding a frame");
        }
        Ok(())
    }

    /// A JSON notice on the viewer's data channel, when it opened one.
    fn notify(&mut self, notice: &serde_json::Value) {
        if let Some(id) = self.channel
            && let Some(mut channel) = self.rtc.channel(id)
        {
            let _ = channel.write(false, notice.to_string().as_bytes());
        }
    }
}
