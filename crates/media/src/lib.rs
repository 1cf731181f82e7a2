//! Media for StreamWeave: RTMP ingest, the ffmpeg ladder and HLS playlists.
//!
//! Data path: [`rtmp::serve_rtmp`] accepts a publisher and, once the platform
//! accepts its key, forwards its media as [`IngestMessage`]s to
//! [`run_pipeline`], which supervises one ffmpeg per stream and reports init
//! files and segments as [`PipelineEvent`]s. [`playlist`] writes the playlists
//! players read.

pub mod flv;
pub mod fmp4;
pub mod ladder;
pub mod mkv;
mod pipeline;
pub mod playlist;
pub mod probe;
pub mod rtmp;
pub mod rtmp_guard;
pub mod vod;
pub mod webrtc_feed;

pub use ladder::{Rendition, RenditionKind, TranscodeSettings, ladder_for_source};
pub use pipeline::{PipelineConfig, PipelineEvent, SegmentOutput, run_pipeline};
pub use rtmp::{IngestMessage, PublishDecision, PublishRequest, RtmpLimits, serve_rtmp};

/// Errors of this crate's parsers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// A playlist could not be parsed.
    #[error("invalid playlist: {0}")]
    Playlist(String),
}
