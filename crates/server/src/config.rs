//! Settings of `streamweave serve`: flags win over environment variables
//! (clap reads both), which win over the config file, which wins over defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Flags of `serve` (every one also readable from a `STREAMWEAVE_*` variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file with the same settings (snake_case keys).
    #[arg(long, env = "STREAMWEAVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the database and the blockstore live (created if missing).
    #[arg(long, env = "STREAMWEAVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP address for the API, playback and the web app.
    #[arg(long, env = "STREAMWEAVE_HTTP")]
    pub http: Option<SocketAddr>,
    /// RTMP ingest address.
    #[arg(long, env = "STREAMWEAVE_RTMP")]
    pub rtmp: Option<SocketAddr>,
    /// Operator token: `Authorization: Bearer TOKEN` acts as admin.
    #[arg(long, env = "STREAMWEAVE_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Public base URL of the HTTP side, used in links we hand out.
    #[arg(long, env = "STREAMWEAVE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Public RTMP base URL handed to creators (`rtmp://host:port/live`).
    #[arg(long, env = "STREAMWEAVE_PUBLIC_RTMP_URL")]
    pub public_rtmp_url: Option<String>,
    /// Segment duration in milliseconds.
    #[arg(long, env = "STREAMWEAVE_SEGMENT_DURATION_MS")]
    pub segment_duration_ms: Option<u32>,
    /// Partial segment (LL-HLS part) duration of live streams, in milliseconds.
    #[arg(long, env = "STREAMWEAVE_PART_DURATION_MS")]
    pub part_duration_ms: Option<u32>,
    /// Segments listed in a live playlist.
    #[arg(long, env = "STREAMWEAVE_LIVE_WINDOW_SEGMENTS")]
    pub live_window_segments: Option<usize>,
    /// Streams transcoding at once; further publishes are refused.
    #[arg(long, env = "STREAMWEAVE_MAX_LIVE_STREAMS")]
    pub max_live_streams: Option<usize>,
    /// The ffmpeg executable.
    #[arg(long, env = "STREAMWEAVE_FFMPEG")]
    pub ffmpeg: Option<PathBuf>,
    /// x264 preset of the ladder.
    #[arg(long, env = "STREAMWEAVE_X264_PRESET")]
    pub x264_preset: Option<String>,
    /// Bytes of recent segments kept in memory for delivery.
    #[arg(long, env = "STREAMWEAVE_SEGMENT_CACHE_BYTES")]
    pub segment_cache_bytes: Option<u64>,
    /// `nice` level of ffmpeg (0 to 19; 0 runs it at the server's priority).
    #[arg(long, env = "STREAMWEAVE_TRANSCODE_NICENESS")]
    pub transcode_niceness: Option<u8>,
    /// PostgreSQL for all state (`postgres://user@host/db`); SQLite in the
    /// data dir when absent.
    #[arg(long, env = "STREAMWEAVE_DATABASE")]
    pub database: Option<String>,
    /// Platform fee in basis points (300 = 3%).
    #[arg(long, env = "STREAMWEAVE_PLATFORM_FEE_BPS")]
    pub platform_fee_bps: Option<u16>,
    /// Settle window of closing channels, in seconds.
    #[arg(long, env = "STREAMWEAVE_SETTLE_WINDOW_S")]
    pub settle_window_s: Option<u64>,
    /// EIP-155 chain id of vouchers (31337 for the embedded ledger; the
    /// chain's own with `--chain-rpc`).
    #[arg(long, env = "STREAMWEAVE_CHAIN_ID")]
    pub chain_id: Option<u64>,
    /// An EVM node's JSON-RPC URL: channels are escrowed on chain by the
    /// escrow contract (`--escrow`) in `--chain-token`, and vouchers are
    /// settled there in batches.
    #[arg(long, env = "STREAMWEAVE_CHAIN_RPC", requires_all = ["escrow", "chain_token"])]
    pub chain_rpc: Option<String>,
    /// The escrow contract's address (with `--chain-rpc`).
    #[arg(long, env = "STREAMWEAVE_ESCROW", requires = "chain_rpc")]
    pub escrow: Option<String>,
    /// The ERC-20 token the platform accepts on chain (with `--chain-rpc`).
    #[arg(long, env = "STREAMWEAVE_CHAIN_TOKEN", requires = "chain_rpc")]
    pub chain_token: Option<String>,
    /// Blocks on top of a log's before the ledger applies it (default 2).
    #[arg(long, env = "STREAMWEAVE_CONFIRMATIONS")]
    pub confirmations: Option<u64>,
    /// A channel's unsettled amount, in base units, above which it is
    /// settled on chain (default 1000000).
    #[arg(long, env = "STREAMWEAVE_SETTLE_THRESHOLD")]
    pub settle_threshold: Option<String>,
    /// The key (32 bytes hex) that sends settlements and finalizations;
    /// without one, this node only watches the chain.
    #[arg(long, env = "STREAMWEAVE_SETTLER_KEY", hide_env_values = true)]
    pub settler_key: Option<String>,
    /// Where the platform's fee goes on chain (default: the settler key's
    /// address). Channels must name it in their policy.
    #[arg(long, env = "STREAMWEAVE_FEE_RECIPIENT")]
    pub fee_recipient: Option<String>,
    /// The first block to read the escrow's logs from (its deployment).
    #[arg(long, env = "STREAMWEAVE_CHAIN_START_BLOCK")]
    pub chain_start_block: Option<u64>,
    /// How often the chain is read, in milliseconds (default 1000).
    #[arg(long, env = "STREAMWEAVE_CHAIN_POLL_MS")]
    pub chain_poll_ms: Option<u64>,
    /// A JSON-RPC URL of the chain for browsers (the web player opens
    /// channels through it); `--dev` servers offer `--chain-rpc`.
    #[arg(long, env = "STREAMWEAVE_CHAIN_PUBLIC_RPC")]
    pub chain_public_rpc: Option<String>,
    /// Admin accounts (comma separated addresses).
    #[arg(long, env = "STREAMWEAVE_ADMINS", value_delimiter = ',')]
    pub admins: Vec<String>,
    /// Directories that keep a replica (a CAR) of every ended stream's
    /// archive (repeatable; default `DATA_DIR/replicas`).
    #[arg(long, env = "STREAMWEAVE_REPLICA_DIRS", value_delimiter = ',')]
    pub replica_dir: Vec<PathBuf>,
    /// S3-compatible buckets that keep a replica of every ended stream's
    /// archive (`s3://bucket/prefix`, repeatable; credentials and region from
    /// the AWS variables).
    #[arg(long, env = "STREAMWEAVE_REPLICA_S3", value_delimiter = ',')]
    pub replica_s3: Vec<String>,
    /// Endpoint of an S3-compatible server (MinIO, Ceph...) for `--replica-s3`.
    #[arg(long, env = "STREAMWEAVE_REPLICA_S3_ENDPOINT")]
    pub replica_s3_endpoint: Option<String>,
    /// Blocks in object storage (`s3://bucket/prefix`), shared by the nodes
    /// of a cluster; the data directory keeps a bounded cache of them.
    /// Default: the data directory alone.
    #[arg(long, env = "STREAMWEAVE_BLOCKSTORE")]
    pub blockstore: Option<String>,
    /// Endpoint of an S3-compatible server for `--blockstore`.
    #[arg(long, env = "STREAMWEAVE_BLOCKSTORE_S3_ENDPOINT")]
    pub blockstore_s3_endpoint: Option<String>,
    /// Bytes of remote blocks kept on local disk (default 10 GiB).
    #[arg(long, env = "STREAMWEAVE_BLOCKSTORE_CACHE_BYTES")]
    pub blockstore_cache_bytes: Option<u64>,
    /// Replicas kept of each archive: the first N targets (default: every
    /// configured target). More than the targets is refused.
    #[arg(long, env = "STREAMWEAVE_REPLICATION_FACTOR")]
    pub replication_factor: Option<usize>,
    /// How often a verified replica is read back and checked, in seconds.
    #[arg(long, env = "STREAMWEAVE_REPLICA_VERIFY_INTERVAL_S")]
    pub replica_verify_interval_s: Option<u64>,
    /// How often unreferenced blocks are collected, in seconds.
    #[arg(long, env = "STREAMWEAVE_GC_INTERVAL_S")]
    pub gc_interval_s: Option<u64>,
    /// Unreferenced blocks younger than this are kept, in seconds.
    #[arg(long, env = "STREAMWEAVE_GC_GRACE_S")]
    pub gc_grace_s: Option<u64>,
    /// HTTP connections open at once (default: what the file-descriptor
    /// limit allows after a reserve for the rest of the server).
    #[arg(long, env = "STREAMWEAVE_MAX_HTTP_CONNECTIONS")]
    pub max_http_connections: Option<usize>,
    /// HTTP connections open at once from one IP address (0: no cap;
    /// default 1024, no cap with `--dev`).
    #[arg(long, env = "STREAMWEAVE_MAX_HTTP_CONNECTIONS_PER_IP")]
    pub max_http_connections_per_ip: Option<usize>,
    /// Time a request's headers may take to arrive, in milliseconds.
    #[arg(long, env = "STREAMWEAVE_HTTP_HEADER_TIMEOUT_MS")]
    pub http_header_timeout_ms: Option<u64>,
    /// Time an RTMP client has to complete the handshake, in milliseconds.
    #[arg(long, env = "STREAMWEAVE_RTMP_HANDSHAKE_TIMEOUT_MS")]
    pub rtmp_handshake_timeout_ms: Option<u64>,
    /// RTMP connections not yet publishing, from one IP address.
    #[arg(long, env = "STREAMWEAVE_MAX_RTMP_PENDING_PER_IP")]
    pub max_rtmp_pending_per_ip: Option<usize>,
    /// Address WebRTC (WHIP) media is received on, one UDP port per
    /// publisher (default: the HTTP address's; `0.0.0.0` offers the
    /// loopback and the machine's outbound address).
    #[arg(long, env = "STREAMWEAVE_WEBRTC_IP")]
    pub webrtc_ip: Option<std::net::IpAddr>,
    /// The public address to offer publishers instead, for a server behind
    /// a one-to-one NAT (same ports).
    #[arg(long, env = "STREAMWEAVE_WEBRTC_PUBLIC_IP")]
    pub webrtc_public_ip: Option<std::net::IpAddr>,
    /// A STUN or TURN server WebRTC peers should use (`stun:host:port`,
    /// `turn:host:port?transport=udp`, `turns:...`), offered to them as
    /// `Link: <...>; rel="ice-server"` on WHIP and WHEP answers (RFC 9725);
    /// repeat for several.
    #[arg(
        long = "webrtc-ice-server",
        env = "STREAMWEAVE_WEBRTC_ICE_SERVERS",
        value_delimiter = ','
    )]
    pub webrtc_ice_servers: Vec<String>,
    /// The TURN servers' username (with `--webrtc-ice-credential`).
    #[arg(long, env = "STREAMWEAVE_WEBRTC_ICE_USERNAME")]
    pub webrtc_ice_username: Option<String>,
    /// The TURN servers' password.
    #[arg(long, env = "STREAMWEAVE_WEBRTC_ICE_CREDENTIAL")]
    pub webrtc_ice_credential: Option<String>,
    /// WHEP viewers at once (each a UDP port and a forwarding task;
    /// default 1000).
    #[arg(long, env = "STREAMWEAVE_MAX_WEBRTC_VIEWERS")]
    pub max_webrtc_viewers: Option<usize>,
    /// Testing only: drop this percentage (0 to 100) of WebRTC UDP
    /// datagrams both ways, to see how publishers and viewers ride out a
    /// lossy network (100: only ICE-TCP gets through; default 0).
    #[arg(long, env = "STREAMWEAVE_WEBRTC_SIMULATED_LOSS_PERCENT")]
    pub webrtc_simulated_loss_percent: Option<u8>,
    /// Sign-in challenges one IP address may ask for in a minute (default
    /// 60, in bursts of up to 30; 100,000 with `--dev`).
    #[arg(long, env = "STREAMWEAVE_CHALLENGES_PER_IP_PER_MINUTE")]
    pub challenges_per_ip_per_minute: Option<u32>,
    /// Largest upload accepted, in bytes (default 20 GiB).
    #[arg(long, env = "STREAMWEAVE_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Bytes one creator may hold in uploads at once (default 100 GiB).
    #[arg(long, env = "STREAMWEAVE_UPLOAD_QUOTA_BYTES")]
    pub upload_quota_bytes: Option<u64>,
    /// Unfinished uploads are removed after this many seconds (default 24 h).
    #[arg(long, env = "STREAMWEAVE_UPLOAD_EXPIRY_S")]
    pub upload_expiry_s: Option<u64>,
    /// Uploaded videos transcoding at once (default 1).
    #[arg(long, env = "STREAMWEAVE_TRANSCODE_JOBS")]
    pub transcode_jobs: Option<usize>,
    /// Longest uploaded video accepted, in seconds (default 6 hours).
    #[arg(long, env = "STREAMWEAVE_MAX_VIDEO_SECONDS")]
    pub max_video_seconds: Option<u64>,
    /// The ffprobe executable (default: beside `--ffmpeg`, else on PATH).
    #[arg(long, env = "STREAMWEAVE_FFPROBE")]
    pub ffprobe: Option<PathBuf>,
    /// On SIGTERM, milliseconds to keep serving with `/readyz` at 503
    /// before closing the listener (set it to the balancer's health-check
    /// interval; default 0).
    #[arg(long, env = "STREAMWEAVE_DRAIN_GRACE_MS")]
    pub drain_grace_ms: Option<u64>,
    /// In a cluster, milliseconds a live stream's ingest may stay silent
    /// (its node died) before its publisher may continue it on another
    /// node (default 5000).
    #[arg(long, env = "STREAMWEAVE_INGEST_RESUME_AFTER_MS")]
    pub ingest_resume_after_ms: Option<u64>,
    /// In a cluster, milliseconds of silent ingest after which a live
    /// stream whose publisher did not come back is ended (default 60000).
    #[arg(long, env = "STREAMWEAVE_INGEST_END_AFTER_MS")]
    pub ingest_end_after_ms: Option<u64>,
    /// The market's fee on every sale, in basis points (default 200 = 2%).
    #[arg(long, env = "STREAMWEAVE_MARKET_FEE_BPS")]
    pub market_fee_bps: Option<u16>,
    /// Seconds after an event's stream ends before the event is finalized
    /// on its own (default 3600).
    #[arg(long, env = "STREAMWEAVE_EVENT_FINALIZE_AFTER_S")]
    pub event_finalize_after_s: Option<u64>,
    /// Length of the engagement pool's rounds: `weekly` (closing Sundays at
    /// 02:00 UTC, the default) or `daily`.
    #[arg(long, env = "STREAMWEAVE_POOL_ROUND")]
    pub pool_round: Option<String>,
    /// Rounds of this many seconds instead (tests, demos).
    #[arg(long, env = "STREAMWEAVE_POOL_ROUND_SECONDS")]
    pub pool_round_seconds: Option<u64>,
    /// Of platform-tier revenue, the part paid into the pool, in basis
    /// points (default 7000).
    #[arg(long, env = "STREAMWEAVE_POOL_BPS")]
    pub pool_bps: Option<u16>,
    /// How a round divides the pool: `user-centric` (default) or `pro-rata`.
    #[arg(long, env = "STREAMWEAVE_POOL_MODE")]
    pub pool_mode: Option<String>,
    /// Of the creator shares of every voucher step, the part paid into the
    /// pool, in basis points (default 0): channels opened from then on
    /// carry the pool as one more recipient of their policy.
    #[arg(long, env = "STREAMWEAVE_VIEW_POOL_BPS")]
    pub view_pool_bps: Option<u16>,
    /// NATS server shared by the nodes of a cluster (`nats://host:4222`):
    /// live events, chat and channel changes reach every node. Nodes of a
    /// cluster share one PostgreSQL database (`--database`).
    #[arg(long, env = "STREAMWEAVE_NATS")]
    pub nats: Option<String>,
    /// API requests per minute of one signed-in wallet, from any address
    /// (0: no limit; default 300).
    #[arg(long, env = "STREAMWEAVE_RATE_LIMIT_WALLET")]
    pub rate_limit_wallet: Option<u32>,
    /// API reads per minute from one address (0: no limit; default 100).
    #[arg(long, env = "STREAMWEAVE_RATE_LIMIT_API")]
    pub rate_limit_api: Option<u32>,
    /// API writes per minute from one address (0: no limit; default 30).
    #[arg(long, env = "STREAMWEAVE_RATE_LIMIT_WRITES")]
    pub rate_limit_writes: Option<u32>,
    /// Playback requests (media, pages, vouchers, upload chunks) per minute
    /// from one address (0: no limit; default 6000).
    #[arg(long, env = "STREAMWEAVE_RATE_LIMIT_PLAYBACK")]
    pub rate_limit_playback: Option<u32>,
    /// Limit loopback clients too on `--dev` servers (which exempt them).
    #[arg(long, env = "STREAMWEAVE_RATE_LIMIT_LOOPBACK")]
    pub rate_limit_loopback: bool,
    /// How many nice levels below the HTTP workers vouchers' signatures are
    /// recovered while the node answers media (0-19; default 10; with no
    /// media they are recovered on the workers; 0: always on threads at
    /// the workers' priority).
    #[arg(long, env = "STREAMWEAVE_VOUCHER_RECOVERY_NICENESS")]
    pub voucher_recovery_niceness: Option<i32>,
    /// Proxies whose `X-Forwarded-For` is believed (repeatable addresses).
    #[arg(long, env = "STREAMWEAVE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxy: Vec<std::net::IpAddr>,
    /// Development mode: conveniences that must never run in production.
    #[arg(long, env = "STREAMWEAVE_DEV")]
    pub dev: bool,
}

/// The config file: the same settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    http: Option<SocketAddr>,
    rtmp: Option<SocketAddr>,
    admin_token: Option<String>,
    public_url: Option<String>,
    public_rtmp_url: Option<String>,
    segment_duration_ms: Option<u32>,
    part_duration_ms: Option<u32>,
    live_window_segments: Option<usize>,
    max_live_streams: Option<usize>,
    ffmpeg: Option<PathBuf>,
    x264_preset: Option<String>,
    segment_cache_bytes: Option<u64>,
    transcode_niceness: Option<u8>,
    database: Option<String>,
    platform_fee_bps: Option<u16>,
    settle_window_s: Option<u64>,
    chain_id: Option<u64>,
    admins: Option<Vec<String>>,
    replica_dirs: Option<Vec<PathBuf>>,
    replica_s3: Option<Vec<String>>,
    replica_s3_endpoint: Option<String>,
    blockstore: Option<String>,
    blockstore_s3_endpoint: Option<String>,
    blockstore_cache_bytes: Option<u64>,
    replication_factor: Option<usize>,
    replica_verify_interval_s: Option<u64>,
    gc_interval_s: Option<u64>,
    gc_grace_s: Option<u64>,
    max_http_connections: Option<usize>,
    max_http_connections_per_ip: Option<usize>,
    http_header_timeout_ms: Option<u64>,
    rtmp_handshake_timeout_ms: Option<u64>,
    max_rtmp_pending_per_ip: Option<usize>,
    webrtc_ip: Option<std::net::IpAddr>,
    webrtc_public_ip: Option<std::net::IpAddr>,
    #[serde(default)]
    webrtc_ice_servers: Vec<String>,
    webrtc_ice_username: Option<String>,
    webrtc_ice_credential: Option<String>,
    max_webrtc_viewers: Option<usize>,
    webrtc_simulated_loss_percent: Option<u8>,
    challenges_per_ip_per_minute: Option<u32>,
    max_upload_bytes: Option<u64>,
    upload_quota_bytes: Option<u64>,
    upload_expiry_s: Option<u64>,
    transcode_jobs: Option<usize>,
    max_video_seconds: Option<u64>,
    ffprobe: Option<PathBuf>,
    drain_grace_ms: Option<u64>,
    ingest_resume_after_ms: Option<u64>,
    ingest_end_after_ms: Option<u64>,
    market_fee_bps: Option<u16>,
    event_finalize_after_s: Option<u64>,
    pool_round: Option<String>,
    pool_round_seconds: Option<u64>,
    pool_bps: Option<u16>,
    pool_mode: Option<String>,
    view_pool_bps: Option<u16>,
    nats: Option<String>,
    rate_limit_wallet: Option<u32>,
    rate_limit_api: Option<u32>,
    rate_limit_writes: Option<u32>,
    rate_limit_playback: Option<u32>,
    rate_limit_loopback: Option<bool>,
    voucher_recovery_niceness: Option<i32>,
    trusted_proxies: Option<Vec<std::net::IpAddr>>,
    dev: Option<bool>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub rtmp: SocketAddr,
    pub admin_token: Option<String>,
    pub public_url: String,
    pub public_rtmp_url: String,
    pub segment_duration_ms: u32,
    pub part_duration_ms: u32,
    pub live_window_segments: usize,
    pub max_live_streams: usize,
    pub ffmpeg: PathBuf,
    pub x264_preset: String,
    pub segment_cache_bytes: u64,
    pub transcode_niceness: u8,
    pub database: Option<String>,
    pub platform_fee_bps: u16,
    pub settle_window_s: u64,
    pub chain_id: u64,
    /// The escrow on chain, when channels are escrowed there.
    pub chain: Option<ChainSettings>,
    pub admins: Vec<streamweave_ledger::Address>,
    pub replica_dirs: Vec<PathBuf>,
    pub replica_s3: Vec<String>,
    pub replica_s3_endpoint: Option<String>,
    /// `s3://bucket/prefix` when blocks live in object storage.
    pub blockstore: Option<String>,
    pub blockstore_s3_endpoint: Option<String>,
    pub blockstore_cache_bytes: u64,
    pub replication_factor: Option<usize>,
    pub replica_verify_interval_s: u64,
    pub gc_interval_s: u64,
    pub gc_grace_s: u64,
    /// `None`: fitted to the file-descriptor limit at start.
    pub max_http_connections: Option<usize>,
    pub max_http_connections_per_ip: usize,
    pub http_header_timeout_ms: u64,
    pub rtmp_handshake_timeout_ms: u64,
    pub max_rtmp_pending_per_ip: usize,
    pub webrtc_ip: std::net::IpAddr,
    pub webrtc_public_ip: Option<std::net::IpAddr>,
    /// STUN/TURN servers offered to WebRTC peers, as `Link` header values.
    pub webrtc_ice_links: Vec<String>,
    pub max_webrtc_viewers: usize,
    pub webrtc_simulated_loss_percent: u8,
    pub challenges_per_ip_per_minute: u32,
    pub max_upload_bytes: u64,
    pub upload_quota_bytes: u64,
    pub upload_expiry_s: u64,
    pub transcode_jobs: usize,
    pub max_video_seconds: u64,
    pub ffprobe: PathBuf,
    pub drain_grace_ms: u64,
    /// Silent ingest before a publisher may continue on another node.
    pub ingest_resume_after_ms: u64,
    /// Silent ingest before a live stream is ended (at least the above).
    pub ingest_end_after_ms: u64,
    pub market_fee_bps: u16,
    pub event_finalize_after_s: u64,
    pub pool_clock: crate::memberships::RoundClock,
    pub pool_bps: u16,
    pub pool_mode: streamweave_ledger::economics::PoolMode,
    pub view_pool_bps: u16,
    /// The cluster's NATS server, when this node is one of several.
    pub nats: Option<String>,
    pub rate_limit_wallet: u32,
    pub rate_limit_api: u32,
    pub rate_limit_writes: u32,
    pub rate_limit_playback: u32,
    pub rate_limit_loopback: bool,
    /// Nice levels below the HTTP workers for voucher recovery (0-19).
    pub voucher_recovery_niceness: i32,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub dev: bool,
}

impl Settings {
    /// Whether other nodes share this node's database (and NATS).
    pub fn clustered(&self) -> bool {
        self.nats.is_some()
    }

    /// Merges flags/env over the config file over defaults, and validates.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let chain = ChainSettings::from_args(&args)?;
        let http = args
            .http
            .or(file.http)
            .unwrap_or(([127, 0, 0, 1], 8080).into());
        let rtmp = args
            .rtmp
            .or(file.rtmp)
            .unwrap_or(([127, 0, 0, 1], 1935).into());
        let public_url = args
            .public_url
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{http}"));
        let public_rtmp_url = args
            .public_rtmp_url
            .or(file.public_rtmp_url)
            .unwrap_or_else(|| format!("rtmp://{rtmp}/{}", streamweave_media::rtmp::RTMP_APP));
        let segment_duration_ms = args
            .segment_duration_ms
            .or(file.segment_duration_ms)
            .unwrap_or(2000);
        anyhow::ensure!(
            (500..=30_000).contains(&segment_duration_ms),
            "segment duration must be between 500 and 30000 ms, not {segment_duration_ms}"
        );
        let part_duration_ms = args
            .part_duration_ms
            .or(file.part_duration_ms)
            .unwrap_or(333);
        anyhow::ensure!(
            (100..=segment_duration_ms / 2).contains(&part_duration_ms),
            "part duration must be between 100 ms and half the segment duration, not {part_duration_ms}"
        );
        let live_window_segments = args
            .live_window_segments
            .or(file.live_window_segments)
            .unwrap_or(10);
        anyhow::ensure!(
            (3..=1000).contains(&live_window_segments),
            "live window must hold 3 to 1000 segments"
        );
        let platform_fee_bps = args
            .platform_fee_bps
            .or(file.platform_fee_bps)
            .unwrap_or(300);
        anyhow::ensure!(
            platform_fee_bps <= 10_000,
            "the platform fee is at most 10000 bps"
        );
        let market_fee_bps = args.market_fee_bps.or(file.market_fee_bps).unwrap_or(200);
        // Heartbeats go out several times within it; below a second a slow
        // database commit would look like a dead node.
        let ingest_resume_after_ms = args
            .ingest_resume_after_ms
            .or(file.ingest_resume_after_ms)
            .unwrap_or(5000)
            .max(1000);
        anyhow::ensure!(
            market_fee_bps <= 10_000,
            "the market fee is at most 10000 bps"
        );
        let pool_clock = match (
            args.pool_round_seconds.or(file.pool_round_seconds),
            args.pool_round.or(file.pool_round).as_deref(),
        ) {
            (Some(0), _) => anyhow::bail!("--pool-round-seconds must be at least 1"),
            (Some(seconds), _) => crate::memberships::RoundClock::every(seconds),
            (None, None | Some("weekly")) => crate::memberships::RoundClock::weekly(),
            (None, Some("daily")) => crate::memberships::RoundClock::daily(),
            (None, Some(other)) => {
                anyhow::bail!("--pool-round must be weekly or daily, not {other:?}")
            }
        };
        let pool_bps = args.pool_bps.or(file.pool_bps).unwrap_or(7000);
        anyhow::ensure!(pool_bps <= 10_000, "the pool's part is at most 10000 bps");
        let view_pool_bps = args.view_pool_bps.or(file.view_pool_bps).unwrap_or(0);
        anyhow::ensure!(
            view_pool_bps < 10_000,
            "--view-pool-bps is below 10000 (creators keep a part)"
        );
        anyhow::ensure!(
            chain.is_none() || view_pool_bps == 0,
            "--view-pool-bps is not available with --chain-rpc: the pool's account holds no key \
             on chain"
        );
        let pool_mode = match args.pool_mode.or(file.pool_mode).as_deref() {
            None | Some("user-centric") => streamweave_ledger::economics::PoolMode::UserCentric,
            Some("pro-rata") => streamweave_ledger::economics::PoolMode::ProRata,
            Some(other) => {
                anyhow::bail!("--pool-mode must be user-centric or pro-rata, not {other:?}")
            }
        };
        let admin_texts = if args.admins.is_empty() {
            file.admins.unwrap_or_default()
        } else {
            args.admins
        };
        let admins = admin_texts
            .iter()
            .map(|a| {
                a.trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("admin {a:?} is not an address"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let admin_token = args.admin_token.or(file.admin_token);
        if let Some(token) = &admin_token {
            anyhow::ensure!(
                token.len() >= 8,
                "the admin token must be at least 8 characters"
            );
        }
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("streamweave-data"));
        let replica_dirs = match (args.replica_dir.is_empty(), &file.replica_dirs) {
            (false, _) => args.replica_dir.clone(),
            (true, Some(dirs)) if !dirs.is_empty() => dirs.clone(),
            _ => vec![data_dir.join("replicas")],
        };
        let dev = args.dev || file.dev.unwrap_or(false);
        let ffmpeg = args
            .ffmpeg
            .clone()
            .or(file.ffmpeg.clone())
            .unwrap_or_else(|| PathBuf::from("ffmpeg"));
        // ffprobe ships with ffmpeg: beside an ffmpeg given by path.
        let ffprobe = args
            .ffprobe
            .clone()
            .or(file.ffprobe.clone())
            .unwrap_or_else(
                || match ffmpeg.parent().filter(|p| !p.as_os_str().is_empty()) {
                    Some(dir) if dir.join("ffprobe").exists() => dir.join("ffprobe"),
                    _ => PathBuf::from("ffprobe"),
                },
            );
        Ok(Settings {
            data_dir,
            http,
            rtmp,
            admin_token,
            public_url: public_url.trim_end_matches('/').to_string(),
            public_rtmp_url: public_rtmp_url.trim_end_matches('/').to_string(),
            segment_duration_ms,
            part_duration_ms,
            live_window_segments,
            max_live_streams: args.max_live_streams.or(file.max_live_streams).unwrap_or(8),
            ffmpeg,
            x264_preset: args
                .x264_preset
                .or(file.x264_preset)
                .unwrap_or_else(|| "veryfast".into()),
            segment_cache_bytes: args
                .segment_cache_bytes
                .or(file.segment_cache_bytes)
                .unwrap_or(256 * 1024 * 1024),
            transcode_niceness: args
                .transcode_niceness
                .or(file.transcode_niceness)
                .unwrap_or(10)
                .min(19),
            database: args.database.or(file.database),
            platform_fee_bps,
            settle_window_s: args.settle_window_s.or(file.settle_window_s).unwrap_or(600),
            chain_id: args.chain_id.or(file.chain_id).unwrap_or(31337),
            chain,
            admins,
            replica_dirs,
            replica_s3: if args.replica_s3.is_empty() {
                file.replica_s3.unwrap_or_default()
            } else {
                args.replica_s3
            },
            replica_s3_endpoint: args.replica_s3_endpoint.or(file.replica_s3_endpoint),
            blockstore: args.blockstore.or(file.blockstore),
            blockstore_s3_endpoint: args.blockstore_s3_endpoint.or(file.blockstore_s3_endpoint),
            blockstore_cache_bytes: args
                .blockstore_cache_bytes
                .or(file.blockstore_cache_bytes)
                .unwrap_or(10 << 30),
            replication_factor: args.replication_factor.or(file.replication_factor),
            replica_verify_interval_s: args
                .replica_verify_interval_s
                .or(file.replica_verify_interval_s)
                .unwrap_or(3600)
                .max(1),
            gc_interval_s: args
                .gc_interval_s
                .or(file.gc_interval_s)
                .unwrap_or(3600)
                .max(1),
            gc_grace_s: args.gc_grace_s.or(file.gc_grace_s).unwrap_or(3600),
            max_http_connections: args.max_http_connections.or(file.max_http_connections),
            // Dev servers host load generators: one address, many viewers.
            max_http_connections_per_ip: args
                .max_http_connections_per_ip
                .or(file.max_http_connections_per_ip)
                .unwrap_or(if dev { 0 } else { 1024 }),
            http_header_timeout_ms: args
                .http_header_timeout_ms
                .or(file.http_header_timeout_ms)
                .unwrap_or(10_000)
                .max(100),
            rtmp_handshake_timeout_ms: args
                .rtmp_handshake_timeout_ms
                .or(file.rtmp_handshake_timeout_ms)
                .unwrap_or(2_000)
                .max(100),
            max_rtmp_pending_per_ip: args
                .max_rtmp_pending_per_ip
                .or(file.max_rtmp_pending_per_ip)
                .unwrap_or(8)
                .max(1),
            webrtc_ip: args.webrtc_ip.or(file.webrtc_ip).unwrap_or(http.ip()),
            webrtc_public_ip: args.webrtc_public_ip.or(file.webrtc_public_ip),
            webrtc_ice_links: {
                let servers = if args.webrtc_ice_servers.is_empty() {
                    file.webrtc_ice_servers
                } else {
                    args.webrtc_ice_servers
                };
                ice_server_links(
                    &servers,
                    args.webrtc_ice_username
                        .or(file.webrtc_ice_username)
                        .as_deref(),
                    args.webrtc_ice_credential
                        .or(file.webrtc_ice_credential)
                        .as_deref(),
                )?
            },
            max_webrtc_viewers: args
                .max_webrtc_viewers
                .or(file.max_webrtc_viewers)
                .unwrap_or(1000),
            webrtc_simulated_loss_percent: {
                let loss = args
                    .webrtc_simulated_loss_percent
                    .or(file.webrtc_simulated_loss_percent)
                    .unwrap_or(0);
                anyhow::ensure!(
                    loss <= 100,
                    "--webrtc-simulated-loss-percent must be 0 to 100"
                );
                loss
            },
            // Dev servers sign in load generators' thousands of viewers.
            challenges_per_ip_per_minute: args
                .challenges_per_ip_per_minute
                .or(file.challenges_per_ip_per_minute)
                .unwrap_or(if dev { 100_000 } else { 60 })
                .max(1),
            max_upload_bytes: args
                .max_upload_bytes
                .or(file.max_upload_bytes)
                .unwrap_or(20 << 30),
            upload_quota_bytes: args
                .upload_quota_bytes
                .or(file.upload_quota_bytes)
                .unwrap_or(100 << 30),
            upload_expiry_s: args
                .upload_expiry_s
                .or(file.upload_expiry_s)
                .unwrap_or(86_400)
                .max(1),
            transcode_jobs: args
                .transcode_jobs
                .or(file.transcode_jobs)
                .unwrap_or(1)
                .clamp(1, 64),
            max_video_seconds: args
                .max_video_seconds
                .or(file.max_video_seconds)
                .unwrap_or(6 * 3600)
                .max(1),
            ffprobe,
            drain_grace_ms: args.drain_grace_ms.or(file.drain_grace_ms).unwrap_or(0),
            ingest_resume_after_ms,
            ingest_end_after_ms: args
                .ingest_end_after_ms
                .or(file.ingest_end_after_ms)
                .unwrap_or(60_000)
                .max(ingest_resume_after_ms),
            market_fee_bps,
            pool_clock,
            pool_bps,
            pool_mode,
            view_pool_bps,
            nats: args.nats.or(file.nats),
            event_finalize_after_s: args
                .event_finalize_after_s
                .or(file.event_finalize_after_s)
                .unwrap_or(3600),
            rate_limit_wallet: args
                .rate_limit_wallet
                .or(file.rate_limit_wallet)
                .unwrap_or(300),
            rate_limit_api: args.rate_limit_api.or(file.rate_limit_api).unwrap_or(100),
            rate_limit_writes: args
                .rate_limit_writes
                .or(file.rate_limit_writes)
                .unwrap_or(30),
            rate_limit_playback: args
                .rate_limit_playback
                .or(file.rate_limit_playback)
                .unwrap_or(6000),
            rate_limit_loopback: args.rate_limit_loopback
                || file.rate_limit_loopback.unwrap_or(false),
            voucher_recovery_niceness: match args
                .voucher_recovery_niceness
                .or(file.voucher_recovery_niceness)
            {
                None => crate::money::verifier::DEFAULT_RECOVERY_NICENESS,
                Some(niceness @ 0..=19) => niceness,
                Some(other) => {
                    anyhow::bail!("--voucher-recovery-niceness must be 0 to 19, not {other}")
                }
            },
            trusted_proxies: if args.trusted_proxy.is_empty() {
                file.trusted_proxies.unwrap_or_default()
            } else {
                args.trusted_proxy
            },
            dev,
        })
    }
}

/// `Link` header values offering STUN/TURN servers to WebRTC peers (RFC
/// 9725, section 4.6): TURN servers carry the username and credential.
fn ice_server_links(
    servers: &[String],
    username: Option<&str>,
    credential: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let quoted = |value: &str| -> anyhow::Result<String> {
        anyhow::ensure!(
            !value.contains(['"', '\\', '\r', '\n']),
            "ICE server usernames and credentials cannot hold quotes, backslashes or line breaks"
        );
        Ok(format!("\"{value}\""))
    };
    servers
        .iter()
        .map(|url| {
            anyhow::ensure!(
                ["stun:", "stuns:", "turn:", "turns:"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
                    && !url.contains(['<', '>', ' ', ',']),
                "--webrtc-ice-server {url:?}: give a stun:, stuns:, turn: or turns: URL"
            );
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if url.starts_with("turn") {
                let (Some(username), Some(credential)) = (username, credential) else {
                    anyhow::bail!(
                        "--webrtc-ice-server {url}: a TURN server needs --webrtc-ice-username and --webrtc-ice-credential"
                    );
                };
                link.push_str(&format!(
                    "; username={}; credential={}; credential-type=\"password\"",
                    quoted(username)?,
                    quoted(credential)?
                ));
            }
            Ok(link)
        })
        .collect()
}

/// The escrow on chain and how this node follows and settles it.
#[derive(Debug, Clone)]
pub struct ChainSettings {
    pub rpc_url: String,
    pub escrow: streamweave_ledger::Address,
    pub token: streamweave_ledger::Address,
    pub confirmations: u64,
    pub settle_threshold: streamweave_ledger::Amount,
    pub settler_key: Option<String>,
    /// `None`: the settler key's address.
    pub fee_recipient: Option<streamweave_ledger::Address>,
    pub start_block: u64,
    pub poll_ms: u64,
    /// For browsers, when offered.
    pub public_rpc_url: Option<String>,
}

impl ChainSettings {
    fn from_args(args: &ServeArgs) -> anyhow::Result<Option<ChainSettings>> {
        let Some(rpc_url) = args.chain_rpc.clone() else {
            return Ok(None);
        };
        let address = |text: &Option<String>, flag: &str| -> anyhow::Result<_> {
            let text = text
                .as_deref()
                .with_context(|| format!("{flag} is needed with --chain-rpc"))?;
            text.parse::<streamweave_ledger::Address>()
                .ok()
                .filter(|_| text.len() == 42 && text.starts_with("0x"))
                .with_context(|| format!("{flag} must be an address (0x and 40 hex digits)"))
        };
        let escrow = address(&args.escrow, "--escrow")?;
        let token = address(&args.chain_token, "--chain-token")?;
        let fee_recipient = match &args.fee_recipient {
            Some(_) => Some(address(&args.fee_recipient, "--fee-recipient")?),
            None => None,
        };
        anyhow::ensure!(
            fee_recipient.is_some() || args.settler_key.is_some(),
            "--chain-rpc needs --settler-key or --fee-recipient (where the platform's fee goes)"
        );
        let settle_threshold = match &args.settle_threshold {
            Some(text) => text
                .parse()
                .map_err(|err| anyhow::anyhow!("--settle-threshold: {err}"))?,
            None => streamweave_ledger::Amount(1_000_000),
        };
        Ok(Some(ChainSettings {
            escrow,
            token,
            confirmations: args.confirmations.unwrap_or(2),
            settle_threshold,
            settler_key: args.settler_key.clone(),
            fee_recipient,
            start_block: args.chain_start_block.unwrap_or(0),
            poll_ms: args.chain_poll_ms.unwrap_or(1000).max(50),
            public_rpc_url: args
                .chain_public_rpc
                .clone()
                .or_else(|| args.dev.then_some(rpc_url.clone())),
            rpc_url,
        }))
    }
}

fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_become_link_values() {
        let links = ice_server_links(
            &[
                "stun:stun.example:3478".to_string(),
                "turn:turn.example:3478?transport=udp".to_string(),
            ],
            Some("alice"),
            Some("s3cret"),
        )
        .expect("valid");
        assert_eq!(
            links,
            [
                r#"<stun:stun.example:3478>; rel="ice-server""#,
                r#"<turn:turn.example:3478?transport=udp>; rel="ice-server"; username="alice"; credential="s3cret"; credential-type="password""#,
            ]
        );
        let turn = ["turn:turn.example".to_string()];
        assert!(
            ice_server_links(&turn, None, None).is_err(),
            "TURN needs credentials"
        );
        assert!(ice_server_links(&turn, Some("a\"b"), Some("c")).is_err());
        assert!(ice_server_links(&["http://x".to_string()], None, None).is_err());
    }

    #[test]
    fn voucher_recovery_niceness_defaults_to_ten_and_stays_a_nice_level() {
        let resolve = |niceness| {
            Settings::resolve(ServeArgs {
                voucher_recovery_niceness: niceness,
                ..ServeArgs::default()
            })
        };
        let default = resolve(None).expect("valid");
        assert_eq!(default.voucher_recovery_niceness, 10);
        assert_eq!(
            resolve(Some(0)).expect("valid").voucher_recovery_niceness,
            0
        );
        for refused in [-1, 20] {
            let err = resolve(Some(refused)).expect_err("outside 0-19");
            assert!(format!("{err:#}").contains("0 to 19"), "{err:#}");
        }
    }

    #[test]
    fn flags_win_over_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sw.toml");
        std::fs::write(
            &path,
            "segment_duration_ms = 4000\nlive_window_segments = 5\n",
        )
        .expect("write");
        let settings = Settings::resolve(ServeArgs {
            config: Some(path.clone()),
            live_window_segments: Some(7),
            ..ServeArgs::default()
        })
        .expect("valid");
        assert_eq!(settings.segment_duration_ms, 4000);
        assert_eq!(settings.live_window_segments, 7);
        assert_eq!(settings.http.port(), 8080);
        assert_eq!(settings.public_rtmp_url, "rtmp://127.0.0.1:1935/live");

        std::fs::write(&path, "segment_duraton_ms = 4000\n").expect("write");
        let err = Settings::resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .expect_err("typo is refused");
        assert!(format!("{err:#}").contains("unknown field"));
    }
}
