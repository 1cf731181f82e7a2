//! Viewing sessions: one viewer watching one paid stream through one channel,
//! each with its meter (streamweave_ledger::Meter). In memory and bounded; a
//! restart ends every session (players start a new one).

use std::collections::HashMap;
use std::sync::Mutex;

use streamweave_ledger::{Address, B256, GateDecision, Meter};

/// Sessions kept at once; the least recently used goes first beyond this.
pub const MAX_SESSIONS: usize = 100_000;
/// A session with no request for this long ends.
pub const SESSION_IDLE_TIMEOUT_MS: i64 = 120_000;

/// One session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub stream_id: String,
    pub channel: B256,
    pub viewer: Address,
    pub meter: Meter,
    pub last_request_ms: i64,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    by_channel: HashMap<B256, String>,
}

/// Every live session.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl Sessions {
    /// Starts a session; a session already on the channel ends (one at a time).
    pub fn start(&self, session: Session) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = inner.by_channel.insert(session.channel, session.id.clone()) {
            inner.sessions.remove(&previous);
        }
        if inner.sessions.len() >= MAX_SESSIONS {
            let oldest = inner
                .sessions
                .values()
                .min_by_key(|s| s.last_request_ms)
                .map(|s| (s.id.clone(), s.channel));
            if let Some((id, channel)) = oldest {
                inner.sessions.remove(&id);
                inner.by_channel.remove(&channel);
            }
        }
        inner.sessions.insert(session.id.clone(), session);
    }

    /// The session, if it exists and has not idled out.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let expired = inner
            .sessions
            .get(id)
            .map(|s| now_ms - s.last_request_ms > SESSION_IDLE_TIMEOUT_MS)?;
        if expired {
            if let Some(session) = inner.sessions.remove(id) {
                inner.by_channel.remove(&session.channel);
            }
            return None;
        }
        inner.sessions.get(id).cloned()
    }

    /// Runs the gate for a segment and records the outcome: the decision,
    /// and the paid media time it granted (beyond the free preview).
    pub fn decide(
        &self,
        id: &str,
        position: u64,
        duration_ms: u32,
        paid: streamweave_ledger::Amount,
        now_ms: i64,
    ) -> Option<(GateDecision, u64)> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let session = inner.sessions.get_mut(id)?;
        session.last_request_ms = now_ms;
        let meter = &mut session.meter;
        let paid_before_ms = meter.granted_ms.saturating_sub(meter.free_ms);
        let decision = meter.decide(position, duration_ms, paid);
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
    pub fn max_voucher(&self, channel: &B256) -> Option<streamweave_ledger::Amount> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = inner.by_channel.get(channel)?;
        inner.sessions.get(id).map(|s| s.meter.max_voucher())
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

    /// The stream a channel's session watches.
    pub fn stream_of_channel(&self, channel: &B256) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = inner.by_channel.get(channel)?;
        inner.sessions.get(id).map(|s| s.stream_id.clone())
    }

    /// Ends a session.
    pub fn end(&self, id: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.sessions.remove(id) {
            Some(session) => {
                inner.by_channel.remove(&session.channel);
                true
            }
            None => false,
        }
    }
}
