//! Records the server keeps about streams and their media.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Lifecycle of a stream: created, publishing, over (and then VOD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Created; nobody has published yet.
    Idle,
    /// A publisher is live.
    Live,
    /// The broadcast is over; the recording plays as VOD.
    Ended,
}

impl StreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Idle => "idle",
            StreamState::Live => "live",
            StreamState::Ended => "ended",
        }
    }

    pub fn parse(text: &str) -> Option<StreamState> {
        match text {
            "idle" => Some(StreamState::Idle),
            "live" => Some(StreamState::Live),
            "ended" => Some(StreamState::Ended),
            _ => None,
        }
    }
}

/// Where a stream's media comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamSource {
    /// A publisher (RTMP) goes live.
    Live,
    /// An uploaded file, transcoded once (a video).
    Upload,
}

impl StreamSource {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamSource::Live => "live",
            StreamSource::Upload => "upload",
        }
    }
}

/// A stream row.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub id: String,
    pub title: String,
    pub stream_key: String,
    pub owner: Option<String>,
    pub state: StreamState,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub end_error: Option<String>,
    pub access: AccessMode,
    /// Set for `per_second` streams.
    pub price: Option<streamweave_ledger::Price>,
    /// Free seconds before a paid stream charges.
    pub preview_seconds: u32,
    /// Days the recording is kept after the stream ends (`None`: forever).
    pub retention_days: Option<u32>,
    /// When retention removed the recording.
    pub expired_at_ms: Option<i64>,
    /// Whether a paid stream's archive is public (free streams' always are).
    pub archive_public: bool,
    /// Free text shown under the player.
    pub description: String,
    /// One category, lower-case (`music`, `gaming`, ...).
    pub category: Option<String>,
    /// Lower-case tags.
    pub tags: Vec<String>,
    /// Live broadcast or uploaded video.
    pub source: StreamSource,
    /// A video's duration, once transcoded.
    pub duration_ms: Option<u64>,
    /// `members` streams: the tiers whose members watch (tier ids, or
    /// `platform` for any platform tier).
    pub member_tiers: Vec<String>,
    /// Plays started (master playlists served, public or in a session).
    pub views: u64,
}

impl StreamRecord {
    /// Whether `address` created the stream.
    pub fn owned_by(&self, address: streamweave_ledger::Address) -> bool {
        self.owner.as_deref() == Some(format!("{address:#x}").as_str())
    }
}

/// How a stream is paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// Anyone watches.
    Free,
    /// Viewers pay by the second through a session.
    PerSecond,
    /// An event's room: ticket holders watch through a session.
    Ticket,
    /// Members of the stream's tiers watch through a session.
    Members,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Free => "free",
            AccessMode::PerSecond => "per_second",
            AccessMode::Ticket => "ticket",
            AccessMode::Members => "members",
        }
    }

    /// Whether watching needs a session (anything but free).
    pub fn is_gated(self) -> bool {
        self != AccessMode::Free
    }
}

/// One rendition of a stream's ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RenditionRecord {
    /// `720p`, `480p`, ..., `audio`.
    pub name: String,
    /// Video width in pixels (absent for audio).
    pub width: Option<u32>,
    /// Video height in pixels (absent for audio).
    pub height: Option<u32>,
    /// Peak bandwidth advertised in the master playlist.
    pub bandwidth_bps: u64,
    /// RFC 6381 codecs.
    pub codecs: String,
    /// CID of the init file, once written.
    pub init_cid: Option<String>,
    /// Size of the init file in bytes.
    pub init_size: Option<u64>,
}

/// One stored segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SegmentRecord {
    /// Rendition name.
    pub rendition: String,
    /// 0-based media sequence number within the rendition.
    pub sequence: u64,
    /// Duration in milliseconds.
    pub duration_ms: u32,
    /// Size in bytes.
    pub size: u64,
    /// CIDv1 of the file, as `ipfs add --cid-version=1` gives it.
    pub cid: String,
    /// The source restarted at this segment (its publisher continued the
    /// stream on another node): the CID of the init file it and the
    /// following segments need; the playlist marks a discontinuity here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_cid: Option<String>,
}

/// Milliseconds since the Unix epoch, for records.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
