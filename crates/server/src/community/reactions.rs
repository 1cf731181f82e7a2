//! Live reactions: one emoji from a fixed set, sent by a signed-in viewer,
//! shown over every viewer's player at the media time it belongs to. A
//! viewer sends at most [`MAX_PER_WINDOW`] per [`WINDOW_MS`] in one room.
//! Time is passed in.

use std::collections::{HashMap, VecDeque};

/// The reactions a viewer can send.
pub const REACTIONS: [&str; 6] = ["👏", "❤️", "🔥", "😂", "😮", "🎉"];
/// Reactions one viewer may send in one room per window.
pub const MAX_PER_WINDOW: usize = 5;
/// The window, in milliseconds.
pub const WINDOW_MS: i64 = 10_000;
/// Viewers tracked at once before the idle ones are forgotten.
const MAX_TRACKED: usize = 10_000;

/// Why a reaction is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReactionError {
    #[error("a reaction is one of 👏 ❤️ 🔥 😂 😮 🎉")]
    Unknown,
    #[error("at most 5 reactions every 10 seconds: wait {wait_ms} ms")]
    TooFast { wait_ms: i64 },
}

/// The reaction `emoji` names, if it is one of [`REACTIONS`].
pub fn reaction(emoji: &str) -> Result<&'static str, ReactionError> {
    REACTIONS
        .iter()
        .find(|r| **r == emoji)
        .copied()
        .ok_or(ReactionError::Unknown)
}

/// Each viewer's recent reactions per room.
#[derive(Debug, Default)]
pub struct ReactionLimit {
    sent_ms: HashMap<(String, String), VecDeque<i64>>,
}

impl ReactionLimit {
    /// Records a reaction by `author` in `room` at `now_ms`, or says how
    /// long to wait.
    pub fn admit(&mut self, room: &str, author: &str, now_ms: i64) -> Result<(), ReactionError> {
        if self.sent_ms.len() >= MAX_TRACKED {
            self.sent_ms
                .retain(|_, sent| sent.back().is_some_and(|at| now_ms - at < WINDOW_MS));
        }
        let sent = self
            .sent_ms
            .entry((room.to_string(), author.to_string()))
            .or_default();
        while sent.front().is_some_and(|at| now_ms - at >= WINDOW_MS) {
            sent.pop_front();
        }
        if sent.len() >= MAX_PER_WINDOW {
            let oldest = sent.front().copied().unwrap_or(now_ms);
            return Err(ReactionError::TooFast {
                wait_ms: oldest + WINDOW_MS - now_ms,
            });
        }
        sent.push_back(now_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_fixed_set_is_a_reaction() {
        assert_eq!(reaction("🔥"), Ok("🔥"));
        assert_eq!(reaction("❤️"), Ok("❤️"));
        for other in ["", "fire", "🔥🔥", "❤", "<b>", " 🔥"] {
            assert_eq!(reaction(other), Err(ReactionError::Unknown), "{other:?}");
        }
    }

    #[test]
    fn five_per_ten_seconds_per_viewer_and_room() {
        let mut limit = ReactionLimit::default();
        for i in 0..5 {
            assert_eq!(limit.admit("s", "a", 1_000 + i * 100), Ok(()));
        }
        assert_eq!(
            limit.admit("s", "a", 2_000),
            Err(ReactionError::TooFast { wait_ms: 9_000 })
        );
        // Another viewer, another room: their own windows.
        assert_eq!(limit.admit("s", "b", 2_000), Ok(()));
        assert_eq!(limit.admit("t", "a", 2_000), Ok(()));
        // The oldest leaves the window: one more is allowed.
        assert_eq!(limit.admit("s", "a", 11_000), Ok(()));
        assert!(limit.admit("s", "a", 11_050).is_err());
    }
}
