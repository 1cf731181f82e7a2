//! Community: chat rooms (rules, mutes, bounded fan-out), live reactions,
//! and tips, which move money through the payments engine and appear as
//! chat messages.

pub mod chat;
pub mod reactions;
pub mod tips;
