//! Viewing sessions: one viewer watching one gated stream, either paying
//! through a channel with its meter (streamweave_ledger::Meter) or admitted
//! by a ticket (an event's room). In memory and bounded; a restart ends
//! every session (players start a new one).

use std::collections::HashMap;
use std::sync::Mutex;

use streamweave_ledger::{Address, B256, GateDecision, Meter};

use crate::fast_map::FastHashMap;

/// Sessions kept at once; the least recently used goes first beyond this.
pub const MAX_SESSIONS: usize = 100_000;
/// A session with no request for this long ends.
pub const SESSION_IDLE_TIMEOUT_MS: i64 = 120_000;

/// What lets a session watch.
#[derive(Debug, Clone)]
pub enum Pass {
    /// Paid by the second on a channel.
    Channel { channel: B256, meter: Meter },
    /// A ticket to the stream's event (one session per ticket at a time).
    Ticket { ticket_id: String },
    /// The event's creator or an admin in the room.
    Host,
    /// A member of one of the stream's tiers.
    Member {
        /// The tier's quality limit (short side of the picture).
        max_height: u32,
        /// Member sessions last 4 hours, then the player asks again.
        expires_at_ms: i64,
        /// How far into each segment (by sequence) the member was served,
        /// in milliseconds (a whole segment counts as `u32::MAX`).
        counted: std::collections::HashMap<u64, u32>,
    },
}

/// What a media request grants: the media of the segment at `position`
/// up to `through_ms` into it; `whole` for the whole segment (a partial
/// segment ends before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaSpan {
    pub position: u64,
    pub through_ms: u32,
    pub whole: bool,
}

/// A member session ends after this long without a request.
pub const MEMBER_IDLE_TIMEOUT_MS: i64 = 60_000;
/// How long a member session's playback URL is valid.
pub const MEMBER_SESSION_MS: i64 = 4 * 3600 * 1000;

/// What a member session's media found ([`Sessions::member_watched`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberWatch {
    /// Served: `new_ms` of it not served to the session before.
    Served { new_ms: u32 },
    /// No such member session (ended, idle too long, or never one).
    Ended,
    /// The session outlived [`MEMBER_SESSION_MS`]: the player starts a new one.
    Expired,
}

/// An active member session, as the 409 of a limit lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSession {
    pub id: String,
    pub stream_id: String,
}

/// What a pass is keyed by: a new session on the same key ends the old one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PassKey {
    Channel(B256),
    Ticket(String),
}

impl Pass {
    fn key(&self) -> Option<PassKey> {
        match self {
            Pass::Channel { channel, .. } => Some(PassKey::Channel(*channel)),
            Pass::Ticket { ticket_id } => Some(PassKey::Ticket(ticket_id.clone())),
            Pass::Host | Pass::Member { .. } => None,
        }
    }

    fn idle_timeout_ms(&self) -> i64 {
        match self {
            Pass::Member { .. } => MEMBER_IDLE_TIMEOUT_MS,
            _ => SESSION_IDLE_TIMEOUT_MS,
        }
    }

    /// The channel paying, for channel sessions.
    pub fn channel(&self) -> Option<B256> {
        match self {
            Pass::Channel { channel, .. } => Some(*channel),
            _ => None,
        }
    }
}

/// One session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub stream_id: String,
    pub viewer: Address,
    pub pass: Pass,
    pub last_request_ms: i64,
}

#[derive(Default)]
struct Inner {
    sessions: FastHashMap<String, Session>,
    by_pass: FastHashMap<PassKey, String>,
}

impl Inner {
    fn insert(&mut self, session: Session) {
        let inner = self;
        if let Some(key) = session.pass.key()
            && let Some(previous) = inner.by_pass.insert(key, session.id.clone())
        {
            inner.sessions.remove(&previous);
        }
        if inner.sessions.len() >= MAX_SESSIONS {
            let oldest = inner
                .sessions
                .values()
                .min_by_key(|s| s.last_request_ms)
                .map(|s| s.id.clone());
            if let Some(id) = oldest {
                inner.remove(&id);
            }
        }
        inner.sessions.insert(session.id.clone(), session);
    }

    fn remove(&mut self, id: &str) -> Option<Session> {
        let session = self.sessions.remove(id)?;
        if let Some(key) = session.pass.key()
            && self.by_pass.get(&key).is_some_and(|current| current == id)
        {
            self.by_pass.remove(&key);
        }
        Some(session)
    }
}

/// Every live session.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl Sessions {
    /// Starts a session; a session already on the same channel or ticket
    /// ends (one at a time).
    pub fn start(&self, session: Session) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.insert(session);
    }

    /// The session, if it exists and has not idled out.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        self.peek(id, now_ms, Session::clone)
    }

    /// What `read` makes of a resident session, without a copy of it;
    /// `None` as [`Self::get`] (unknown, or idle too long: then dropped).
    pub fn peek<T>(&self, id: &str, now_ms: i64, read: impl FnOnce(&Session) -> T) -> Option<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let session = inner.sessions.get(id)?;
        if now_ms - session.last_request_ms > session.pass.idle_timeout_ms() {
            inner.remove(id);
            return None;
        }
        Some(read(session))
    }

    /// Runs the gate for a segment and records the outcome: the decision,
    /// and the paid media time it granted (beyond the free preview).
    pub fn decide(
        &self,
        id: &str,
        span: MediaSpan,
        paid: streamweave_ledger::Amount,
        now_ms: i64,
    ) -> Option<(GateDecision, u64)> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let session = inner.sessions.get_mut(id)?;
        session.last_request_ms = now_ms;
        let Pass::Channel { meter, .. } = &mut session.pass else {
            return None;
        };
        let paid_before_ms = meter.granted_ms.saturating_sub(meter.free_ms);
        let decision = meter.decide_span(span.position, span.through_ms, span.whole, paid);
        let paid_media_ms = meter
            .granted_ms
            .saturating_sub(meter.free_ms)
            .saturating_sub(paid_before_ms);
        Some((decision, paid_media_ms))
    }

    /// Touches a session (playlist requests keep it alive).
    pub fn touch(&self, id: &str, now_ms: i64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(session) = inner.sessions.get_mut(id) {
            session.last_request_ms = now_ms;
        }
    }

    /// The largest voucher acceptable now on a channel with a session.
    /// `shared_paid`: on a cluster node, the channel's redeemed amount (the
    /// session may be served by another node, which this meter does not
    /// see): then also one window past it.
    pub fn max_voucher(
        &self,
        channel: &B256,
        shared_paid: Option<streamweave_ledger::Amount>,
    ) -> Option<streamweave_ledger::Amount> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = inner.by_pass.get(&PassKey::Channel(*channel))?;
        match &inner.sessions.get(id)?.pass {
            Pass::Channel { meter, .. } => Some(match shared_paid {
                Some(paid) => meter.max_voucher().max(meter.max_voucher_past(paid)),
                None => meter.max_voucher(),
            }),
            _ => None,
        }
    }

    /// Sessions, on any stream, that requested something recently.
    pub fn active(&self, now_ms: i64) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .sessions
            .values()
            .filter(|s| now_ms - s.last_request_ms <= SESSION_IDLE_TIMEOUT_MS)
            .count()
    }

    /// Sessions on a stream that requested something recently.
    pub fn viewers(&self, stream_id: &str, now_ms: i64) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .sessions
            .values()
            .filter(|s| {
                s.stream_id == stream_id && now_ms - s.last_request_ms <= SESSION_IDLE_TIMEOUT_MS
            })
            .count()
    }

    /// Every stream's count of sessions that requested something recently
    /// (streams with none left out).
    pub fn viewer_counts(&self, now_ms: i64) -> HashMap<String, usize> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts = HashMap::new();
        for session in inner.sessions.values() {
            if now_ms - session.last_request_ms <= SESSION_IDLE_TIMEOUT_MS {
                *counts.entry(session.stream_id.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The stream a channel's session watches.
    pub fn stream_of_channel(&self, channel: &B256) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = inner.by_pass.get(&PassKey::Channel(*channel))?;
        inner.sessions.get(id).map(|s| s.stream_id.clone())
    }

    /// Starts a member session unless the member has `max_streams` active
    /// ones already (checked and started under one lock, so racing starts
    /// cannot exceed it); answers the active ones when refused.
    pub fn start_member(
        &self,
        session: Session,
        max_streams: usize,
        now_ms: i64,
    ) -> Result<(), Vec<ActiveSession>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let active: Vec<ActiveSession> = inner
            .sessions
            .values()
            .filter(|s| {
                s.viewer == session.viewer
                    && matches!(s.pass, Pass::Member { .. })
                    && now_ms - s.last_request_ms <= MEMBER_IDLE_TIMEOUT_MS
            })
            .map(|s| ActiveSession {
                id: s.id.clone(),
                stream_id: s.stream_id.clone(),
            })
            .collect();
        if active.len() >= max_streams {
            return Err(active);
        }
        inner.insert(session);
        Ok(())
    }

    /// The media time of a member session's request not served to it
    /// before (then it counts as watched), in milliseconds; touches the
    /// session. A whole segment after its parts counts what they did not.
    pub fn newly_served(&self, id: &str, span: MediaSpan, now_ms: i64) -> u32 {
        match self.member_watched(id, span, now_ms) {
            MemberWatch::Served { new_ms } => new_ms,
            MemberWatch::Ended | MemberWatch::Expired => 0,
        }
    }

    /// What a member session's media finds: its newly served time (as
    /// [`Sessions::newly_served`], touching the session), or that the
    /// session ended or outlived its [`MEMBER_SESSION_MS`].
    pub fn member_watched(&self, id: &str, span: MediaSpan, now_ms: i64) -> MemberWatch {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(session) = inner.sessions.get_mut(id) else {
            return MemberWatch::Ended;
        };
        if now_ms - session.last_request_ms > session.pass.idle_timeout_ms() {
            inner.remove(id);
            return MemberWatch::Ended;
        }
        let Pass::Member {
            counted,
            expires_at_ms,
            ..
        } = &mut session.pass
        else {
            return MemberWatch::Ended;
        };
        if now_ms >= *expires_at_ms {
            return MemberWatch::Expired;
        }
        session.last_request_ms = now_ms;
        let before = counted.get(&span.position).copied().unwrap_or(0);
        if before == u32::MAX || (counted.len() >= 1_000_000 && before == 0) {
            return MemberWatch::Served { new_ms: 0 };
        }
        let through = if span.whole {
            u32::MAX
        } else {
            span.through_ms
        };
        if through <= before {
            return MemberWatch::Served { new_ms: 0 };
        }
        counted.insert(span.position, through);
        let new_ms = if span.whole {
            span.through_ms.saturating_sub(before)
        } else {
            span.through_ms - before
        };
        MemberWatch::Served { new_ms }
    }

    /// Ends every session on a stream (an event cancelled: its tickets
    /// were refunded). Answers how many ended.
    pub fn end_stream(&self, stream_id: &str) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let ids: Vec<String> = inner
            .sessions
            .values()
            .filter(|s| s.stream_id == stream_id)
            .map(|s| s.id.clone())
            .collect();
        for id in &ids {
            inner.remove(id);
        }
        ids.len()
    }

    /// Ends the session admitted by a ticket (it changed hands).
    pub fn end_ticket(&self, ticket_id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = inner
            .by_pass
            .get(&PassKey::Ticket(ticket_id.to_string()))
            .cloned()
        {
            inner.remove(&id);
        }
    }

    /// When each session admitted without a channel and used since
    /// `since_ms` was last used (for the cluster's shared record of them).
    pub fn admitted_last_seen(&self, since_ms: i64) -> Vec<(String, i64)> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .sessions
            .values()
            .filter(|s| !matches!(s.pass, Pass::Channel { .. }) && s.last_request_ms >= since_ms)
            .map(|s| (s.id.clone(), s.last_request_ms))
            .collect()
    }

    /// Ends a session.
    pub fn end(&self, id: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.remove(id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_session(id: &str, last_request_ms: i64) -> Session {
        Session {
            id: id.to_string(),
            stream_id: "stream".to_string(),
            viewer: Address::ZERO,
            pass: Pass::Host,
            last_request_ms,
        }
    }

    #[test]
    fn peek_reads_a_resident_session_in_place_and_drops_one_idle_too_long() {
        let sessions = Sessions::default();
        sessions.start(host_session("a", 1_000));
        let at_the_limit = 1_000 + SESSION_IDLE_TIMEOUT_MS;
        assert_eq!(
            sessions.peek("a", at_the_limit, |found| found.stream_id.clone()),
            Some("stream".to_string())
        );
        assert!(sessions.peek("b", 1_000, |_| ()).is_none(), "unknown");
        assert!(
            sessions.peek("a", at_the_limit + 1, |_| ()).is_none(),
            "idle too long"
        );
        assert!(
            sessions.get("a", 1_000).is_none(),
            "dropped, not only hidden"
        );
    }

    fn member_session(id: &str, started_ms: i64) -> Session {
        Session {
            id: id.to_string(),
            stream_id: "stream".to_string(),
            viewer: Address::ZERO,
            pass: Pass::Member {
                max_height: 720,
                expires_at_ms: started_ms + MEMBER_SESSION_MS,
                counted: Default::default(),
            },
            last_request_ms: started_ms,
        }
    }

    fn frame(position: u64, through_ms: u32) -> MediaSpan {
        MediaSpan {
            position,
            through_ms,
            whole: false,
        }
    }

    #[test]
    fn a_members_frames_count_each_moment_once_until_the_session_ends_or_expires() {
        let sessions = Sessions::default();
        sessions.start(member_session("m", 0));
        let served = |span, now| sessions.member_watched("m", span, now);
        assert_eq!(served(frame(0, 33), 10), MemberWatch::Served { new_ms: 33 });
        assert_eq!(served(frame(0, 66), 20), MemberWatch::Served { new_ms: 33 });
        // The same moment again (a second viewer of the session, a resend).
        assert_eq!(served(frame(0, 66), 30), MemberWatch::Served { new_ms: 0 });
        // A whole segment over HLS after its frames: only the rest.
        let whole = MediaSpan {
            position: 0,
            through_ms: 2_000,
            whole: true,
        };
        assert_eq!(served(whole, 40), MemberWatch::Served { new_ms: 1_934 });
        assert_eq!(served(frame(1, 33), 50), MemberWatch::Served { new_ms: 33 });
        // Each frame touches the session, so it does not idle out while watched.
        let later = 50 + MEMBER_IDLE_TIMEOUT_MS;
        assert_eq!(
            served(frame(1, 66), later),
            MemberWatch::Served { new_ms: 33 }
        );
        // Watched to the end of its four hours: expired.
        let mut expiring = member_session("e", 0);
        expiring.last_request_ms = MEMBER_SESSION_MS - 1_000;
        sessions.start(expiring);
        assert_eq!(
            sessions.member_watched("e", frame(0, 33), MEMBER_SESSION_MS - 1),
            MemberWatch::Served { new_ms: 33 }
        );
        assert_eq!(
            sessions.member_watched("e", frame(0, 66), MEMBER_SESSION_MS),
            MemberWatch::Expired
        );
        assert_eq!(
            sessions.member_watched("other", frame(0, 33), 10),
            MemberWatch::Ended
        );
        // Idle too long: ended, and dropped.
        sessions.start(member_session("idle", 0));
        assert_eq!(
            sessions.member_watched("idle", frame(0, 33), MEMBER_IDLE_TIMEOUT_MS + 1),
            MemberWatch::Ended
        );
        assert!(sessions.get("idle", MEMBER_IDLE_TIMEOUT_MS + 1).is_none());
        // Not a member session.
        sessions.start(host_session("h", 0));
        assert_eq!(
            sessions.member_watched("h", frame(0, 33), 10),
            MemberWatch::Ended
        );
    }
}
