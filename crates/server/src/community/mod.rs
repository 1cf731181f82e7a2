//! Community: chat rooms (rules, mutes, bounded fan-out). Tips move money
//! through the payments engine and appear here as chat messages.

pub mod chat;
