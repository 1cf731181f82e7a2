//! One WHIP publisher's session: frames into the Matroska feed of the
//! ladder and out to the stream's WHEP viewers.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::{Event, IceConnectionState, Output, Rtc};
use streamweave_media::IngestMessage;
use streamweave_media::webrtc_feed::{FeedVideoCodec, WebrtcFeed, is_keyframe};
use tokio::sync::{Notify, mpsc};
use tracing::debug;

use super::{CONNECT_TIMEOUT, Fanout, KEYFRAME_REQUEST_INTERVAL, SourceFrame, Transport, lock};

pub(super) struct PublishSession {
    rtc: Rtc,
    feed: WebrtcFeed,
    feed_tx: mpsc::Sender<IngestMessage>,
    fanout: Arc<Fanout>,
    video_mid: Option<Mid>,
    started_at: Instant,
}

/// What a drained event means for the loop.
enum Progress {
    Connected,
    Left,
}

impl PublishSession {
    pub(super) fn new(
        rtc: Rtc,
        opus: bool,
        feed_tx: mpsc::Sender<IngestMessage>,
        fanout: Arc<Fanout>,
    ) -> Self {
        PublishSession {
            rtc,
            feed: WebrtcFeed::new(opus.then_some(2)),
            feed_tx,
            fanout,
            video_mid: None,
            started_at: Instant::now(),
        }
    }

    /// Runs until the publisher leaves, is ended, or fails; answers why.
    /// Dropping the feed's sender at the end ends the stream.
    pub(super) async fn run(
        mut self,
        mut transport: Transport,
        end: Arc<Notify>,
    ) -> Result<&'static str, String> {
        let mut keyframe_check = tokio::time::interval(KEYFRAME_REQUEST_INTERVAL);
        keyframe_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let connect_deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let mut connected = false;
        let mut pending: Vec<IngestMessage> = Vec::new();
        let fanout = self.fanout.clone();
        let outcome = loop {
            // Drain str0m's output until it names its next deadline.
            let deadline = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(at)) => break at,
                    Ok(Output::Transmit(transmit)) => transport.send(&transmit),
                    Ok(Output::Event(event)) => match self.handle(event, &mut pending)? {
                        Some(Progress::Connected) => connected = true,
                        Some(Progress::Left) => self.rtc.disconnect(),
                        None => {}
                    },
                    Err(err) => return Err(format!("WebRTC: {err}")),
                }
            };
            if !self.rtc.is_alive() {
                break Ok("the publisher left");
            }
            // Only now, with str0m drained, wait on the pipeline.
            for message in pending.drain(..) {
                if self.feed_tx.send(message).await.is_err() {
                    return Err("the stream's pipeline stopped".into());
                }
            }
            let datagram = tokio::select! {
                datagram = transport.next() => match datagram {
                    Some(datagram) => Some(datagram),
                    None => break Err("the WebRTC sockets closed".to_string()),
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => None,
                _ = keyframe_check.tick() => {
                    if !connected && tokio::time::Instant::now() > connect_deadline {
                        break Ok("the publisher never connected");
                    }
                    if connected && self.feed.wants_keyframe() {
                        self.request_keyframe();
                    }
                    continue;
                }
                _ = fanout.keyframe_wanted.notified() => {
                    self.request_keyframe();
                    continue;
                }
                _ = end.notified() => break Ok("ended by its publisher"),
            };
            super::feed(&mut self.rtc, datagram.as_ref());
        };
        self.rtc.disconnect();
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
                let (keyframe, media_ms) = if let Some(video) = video {
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
                    let written = !messages.is_empty();
                    pending.extend(messages);
                    if self.feed.wants_keyframe() && !was_waiting {
                        self.request_keyframe();
                    }
                    if !written {
                        return Ok(None);
                    }
                    lock(&self.fanout.video_codec).get_or_insert(codec);
                    (is_keyframe(video, &data.data), self.feed.last_video_ms())
                } else if codec == Codec::Opus {
                    let Some(message) = self
                        .feed
                        .push_audio(rtp_time, clock_hz, arrival_ms, &data.data)
                    else {
                        return Ok(None);
                    };
                    pending.push(message);
                    (false, self.feed.last_audio_ms())
                } else {
                    return Ok(None);
                };
                // Viewers get what the ladder gets; none listening is fine.
                let _ = self.fanout.frames.send(Arc::new(SourceFrame {
                    video: video.is_some(),
                    keyframe,
                    params: data.params,
                    rtp_time: data.time,
                    network_time: data.network_time,
                    media_ms,
                    data: data.data.clone(),
                }));
            }
            _ => {}
        }
        Ok(None)
    }
}
