//! Community: chat rooms (rules, mutes, bounded fan-out) and tips, which
//! move money through the payments engine and appear as chat messages.

pub mod chat;
pub mod tips;
