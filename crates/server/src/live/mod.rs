//! Live: what happens between a publisher and a playlist. The hub accepts
//! publishes and stores what the pipeline produces; the media index keeps
//! every stream's segments in memory for playlists (another node's arrive
//! through arrivals, fetched before they are listed); the audience counts free
//! viewers; events carry live state and earnings to WebSockets; thumbnails
//! are frames of the latest segment; views count plays started.

pub mod arrivals;
pub mod audience;
pub mod earnings;
pub mod events;
mod hub;
pub mod media_index;
pub mod thumbnails;
pub mod views;
pub mod webrtc;

pub use hub::{LiveHub, Takeover, rendition_records};
