//! Chat rooms, one per stream: the rules a message must pass (length, rate,
//! mutes) and the bounded broadcast that carries messages to readers. Time is
//! passed in; storage is the caller's (`Db`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

/// Longest message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// Shortest time between two messages of one account in one room.
pub const MIN_POST_INTERVAL_MS: i64 = 1000;
/// Messages a late joiner receives.
pub const HISTORY_LEN: i64 = 100;
/// Events buffered per room before a slow reader is dropped.
pub const CHAT_BUFFER: usize = 256;

/// One message as readers see it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub id: String,
    /// Author's address, lower-case.
    pub author: String,
    /// Plain text: clients render it as text, never as HTML.
    pub text: String,
    /// Base units, for a tip.
    pub tip: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
}

/// What a room's readers receive.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// The last messages, oldest first (sent once, on joining).
    History {
        messages: Vec<ChatMessage>,
    },
    Message {
        message: ChatMessage,
    },
    /// The creator removed a message.
    Deleted {
        id: String,
    },
    /// The creator muted an account: its messages are gone from the room.
    Muted {
        address: String,
    },
    /// Only to the one reader whose post was refused.
    Error {
        detail: String,
    },
    /// Only to the one reader who authenticated.
    SignedIn {
        address: String,
    },
    /// A viewer's live reaction, at the stream's media time when it was
    /// sent (players show it over the picture as that moment plays).
    Reaction {
        emoji: String,
        author: String,
        media_time_ms: u64,
        time_ms: i64,
    },
}

/// Why a message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("the message is empty")]
    Empty,
    #[error("a message has at most 500 characters")]
    TooLong,
    #[error("a message must not contain control characters")]
    ControlCharacters,
    #[error("one message a second: wait {wait_ms} ms")]
    TooFast { wait_ms: i64 },
}

/// The text a message carries, trimmed; refused when empty, too long or
/// holding control characters (new lines become spaces).
pub fn message_text(text: &str) -> Result<String, ChatError> {
    let text: String = text
        .trim()
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if text.is_empty() {
        return Err(ChatError::Empty);
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ChatError::TooLong);
    }
    if text.chars().any(char::is_control) {
        return Err(ChatError::ControlCharacters);
    }
    Ok(text)
}

/// Accounts' last post per room, to hold each to one message a second.
#[derive(Debug, Default)]
pub struct RateLimit {
    last_post_ms: HashMap<(String, String), i64>,
}

impl RateLimit {
    /// Records a post by `author` in `room` at `now_ms`, or says how long to wait.
    pub fn admit(&mut self, room: &str, author: &str, now_ms: i64) -> Result<(), ChatError> {
        // Entries older than the interval no longer matter: drop them when the
        // map grows, so it stays bounded by the accounts posting right now.
        if self.last_post_ms.len() >= 10_000 {
            self.last_post_ms
                .retain(|_, at| now_ms - *at < MIN_POST_INTERVAL_MS);
        }
        let key = (room.to_string(), author.to_string());
        if let Some(at) = self.last_post_ms.get(&key) {
            let wait_ms = at + MIN_POST_INTERVAL_MS - now_ms;
            if wait_ms > 0 {
                return Err(ChatError::TooFast { wait_ms });
            }
        }
        self.last_post_ms.insert(key, now_ms);
        Ok(())
    }
}

/// The rooms' broadcast channels (relayed between nodes) and rate limits.
pub struct ChatRooms {
    pub rooms: Arc<crate::live::events::Topics<ChatEvent>>,
    rate: Mutex<RateLimit>,
    reactions: Mutex<crate::community::reactions::ReactionLimit>,
}

impl Default for ChatRooms {
    fn default() -> Self {
        ChatRooms {
            rooms: Arc::new(crate::live::events::Topics::with_capacity(CHAT_BUFFER)),
            rate: Mutex::default(),
            reactions: Mutex::default(),
        }
    }
}

impl ChatRooms {
    /// Sends to everyone in the room, on every node (nobody is fine).
    pub fn publish(&self, stream_id: &str, event: ChatEvent) {
        self.rooms.publish(stream_id, event);
    }

    /// Joins a room.
    pub fn subscribe(&self, stream_id: &str) -> broadcast::Receiver<ChatEvent> {
        self.rooms.subscribe(stream_id)
    }

    /// Applies the reactions' rate rule.
    pub fn admit_reaction(
        &self,
        stream_id: &str,
        author: &str,
        now_ms: i64,
    ) -> Result<(), crate::community::reactions::ReactionError> {
        self.reactions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(stream_id, author, now_ms)
    }

    /// Applies the one-a-second rule.
    pub fn admit(&self, stream_id: &str, author: &str, now_ms: i64) -> Result<(), ChatError> {
        self.rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(stream_id, author, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_rules() {
        assert_eq!(
            message_text("  hello \n world "),
            Ok("hello   world".into())
        );
        assert_eq!(message_text(" \n "), Err(ChatError::Empty));
        assert_eq!(
            message_text(&"é".repeat(500)).map(|t| t.chars().count()),
            Ok(500)
        );
        assert_eq!(message_text(&"é".repeat(501)), Err(ChatError::TooLong));
        assert_eq!(message_text("bell\u{7}"), Err(ChatError::ControlCharacters));
        // Markup is kept as text; readers render it as text.
        assert_eq!(message_text("<b>hi</b>"), Ok("<b>hi</b>".into()));
    }

    #[test]
    fn one_message_a_second_per_account_and_room() {
        let mut rate = RateLimit::default();
        assert_eq!(rate.admit("room", "a", 10_000), Ok(()));
        assert_eq!(
            rate.admit("room", "a", 10_400),
            Err(ChatError::TooFast { wait_ms: 600 })
        );
        assert_eq!(rate.admit("room", "b", 10_400), Ok(()), "another account");
        assert_eq!(rate.admit("other", "a", 10_400), Ok(()), "another room");
        assert_eq!(rate.admit("room", "a", 11_000), Ok(()));
    }

    #[test]
    fn the_rate_map_stays_bounded() {
        let mut rate = RateLimit::default();
        for i in 0..10_000 {
            rate.admit("room", &i.to_string(), 0).unwrap();
        }
        rate.admit("room", "late", 5_000).unwrap();
        assert_eq!(rate.last_post_ms.len(), 1);
    }
}
