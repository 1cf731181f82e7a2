//! Wiring: opens storage, binds the listeners and runs every task of `serve`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use streamweave_cas::Blockstore;
use streamweave_media::{RtmpLimits, TranscodeSettings, serve_rtmp};
use tokio::sync::mpsc;
use tracing::info;

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::live::LiveHub;
use crate::live::media_index::{FileCache, MediaIndex};
use crate::model::now_ms;
use crate::money::payments::Payments;
use crate::store::Store;
use streamweave_ledger::PaymentDomain;

/// Publish requests waiting for an answer.
const PUBLISH_REQUEST_QUEUE: usize = 64;

/// A running server: its bound addresses and the state handlers share.
pub struct Running {
    pub http_addr: SocketAddr,
    pub rtmp_addr: SocketAddr,
    pub state: AppState,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Runs until the HTTP server stops (it stops on Ctrl-C or SIGTERM).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?
    }
}

/// Checks that ffmpeg runs, with a message that says how to fix it.
pub async fn check_ffmpeg(settings: &Settings) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(&settings.ffmpeg)
        .arg("-version")
        .output()
        .await;
    match output {
        Ok(output) if output.status.success() => Ok(()),
        _ => anyhow::bail!(
            "ffmpeg not found at {:?}: install it (Debian: apt-get install ffmpeg) or pass --ffmpeg PATH",
            settings.ffmpeg
        ),
    }
}

/// Opens storage, binds both listeners and starts serving.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    check_ffmpeg(&settings).await?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    let mut local_blocks =
        Blockstore::open(settings.data_dir.join("blocks")).context("opening the blockstore")?;
    let mut remote_blocks = None;
    if let Some(url) = &settings.blockstore {
        let remote = Arc::new(crate::archive::remote::S3Blocks::new(
            url,
            settings.blockstore_s3_endpoint.as_deref(),
            tokio::runtime::Handle::current(),
        )?);
        remote.check().await?;
        info!(%url, cache_bytes = settings.blockstore_cache_bytes, "blocks in object storage");
        local_blocks = local_blocks.with_remote(remote.clone());
        remote_blocks = Some(remote);
    }
    let blockstore = Arc::new(local_blocks);
    if settings.blockstore.is_some() {
        tokio::spawn(crate::archive::remote::bound_cache(
            blockstore.clone(),
            settings.blockstore_cache_bytes,
            std::time::Duration::from_secs(60),
        ));
    }
    // All state on one store: PostgreSQL when `--database` names one (then
    // no SQLite file is created), else the data directory's SQLite.
    let db = Store::open(&settings.data_dir, settings.database.as_deref())
        .await
        .context("opening the database")?
        .for_node(&node_name(&settings.data_dir)?);
    // A single node ends what it was ingesting when it stopped; in a
    // cluster the publisher may continue it here or on another node, and
    // it ends once its ingest has been silent for `--ingest-end-after-ms`.
    if !settings.clustered() {
        let interrupted = db.end_interrupted_streams(now_ms()).await?;
        if interrupted > 0 {
            info!(
                interrupted,
                "marked streams that were live at the last stop as ended"
            );
        }
    }
    // Work files of pipelines that were running when the server stopped are orphans.
    let work_root = settings.data_dir.join("work");
    match std::fs::remove_dir_all(&work_root) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).context("clearing the work dir"),
    }
    std::fs::create_dir_all(&work_root)?;

    let http_listener = crate::listen::bind(settings.http)
        .with_context(|| format!("binding HTTP on {}", settings.http))?;
    let rtmp_listener = crate::listen::bind(settings.rtmp)
        .with_context(|| format!("binding RTMP on {}", settings.rtmp))?;
    let http_addr = http_listener.local_addr()?;
    let rtmp_addr = rtmp_listener.local_addr()?;

    let settings = Arc::new(settings);
    let index = Arc::new(MediaIndex::new(db.clone()));
    let cache = Arc::new(FileCache::new(settings.segment_cache_bytes));
    let mut hub = LiveHub::new(
        db.clone(),
        blockstore.clone(),
        index.clone(),
        cache.clone(),
        settings.ffmpeg.clone(),
        work_root,
        TranscodeSettings {
            segment_duration_ms: settings.segment_duration_ms,
            x264_preset: settings.x264_preset.clone(),
            part_duration_ms: settings.part_duration_ms,
        },
        settings.max_live_streams,
    );
    // `nice` is part of every Linux userland; without it ffmpeg runs unreniced.
    if settings.transcode_niceness > 0
        && std::process::Command::new("nice")
            .arg("true")
            .status()
            .is_ok_and(|s| s.success())
    {
        hub.transcode_niceness = Some(settings.transcode_niceness);
    }
    if settings.clustered() {
        hub.takeover = Some(crate::live::Takeover {
            resume_after_ms: settings.ingest_resume_after_ms,
            end_after_ms: settings.ingest_end_after_ms,
        });
    }
    let events = Arc::new(crate::live::events::Events::default());
    hub.events = events.clone();
    let transcode_niceness = hub.transcode_niceness;
    let hub = Arc::new(hub);
    let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_REQUEST_QUEUE);
    tokio::spawn(hub.clone().watch_ingest());
    tokio::spawn(hub.run(publish_rx));
    let rtmp_limits = RtmpLimits {
        max_publishers: settings.max_live_streams.saturating_mul(2).max(16),
        max_pending_per_ip: settings.max_rtmp_pending_per_ip,
        handshake_timeout: std::time::Duration::from_millis(settings.rtmp_handshake_timeout_ms),
        ..RtmpLimits::default()
    };
    let webrtc = Arc::new(crate::live::webrtc::WebrtcIngest::new(
        crate::live::webrtc::WebrtcSettings {
            bind_ip: settings.webrtc_ip,
            public_ip: settings.webrtc_public_ip,
            max_publishers: settings.max_live_streams.saturating_mul(2).max(16),
            max_viewers: settings.max_webrtc_viewers,
            segment_duration_ms: settings.segment_duration_ms,
            simulated_loss_percent: settings.webrtc_simulated_loss_percent,
        },
        publish_tx.clone(),
    ));
    tokio::spawn(serve_rtmp(rtmp_listener, publish_tx, rtmp_limits));

    let ledger = db.clone();
    let chain = match &settings.chain {
        Some(chain) => Some(Arc::new(crate::chain::ChainLink::connect(chain).await?)),
        None => None,
    };
    let (domain, settle_window_ms) = match &chain {
        Some(link) => (link.domain(), link.settle_window_s.saturating_mul(1000)),
        None => (
            PaymentDomain {
                chain_id: settings.chain_id,
                escrow: streamweave_ledger::Address::ZERO,
            },
            settings.settle_window_s * 1000,
        ),
    };
    let payments = Payments::start(
        ledger.clone(),
        domain,
        settle_window_ms,
        settings.clustered(),
        settings.pool_clock,
    )
    .await
    .context("starting the payments engine")?;
    if let Some(link) = &chain {
        link.start(db.clone(), payments.clone(), settings.platform_fee_bps);
        info!(
            chain_id = domain.chain_id,
            escrow = %format!("{:#x}", domain.escrow),
            settler = ?link.escrow.sender().map(|a| format!("{a:#x}")),
            "following the escrow on chain"
        );
    }
    let mut targets: Vec<crate::archive::replication::ReplicaTarget> = settings
        .replica_dirs
        .iter()
        .cloned()
        .map(crate::archive::replication::ReplicaTarget::directory)
        .collect();
    for url in &settings.replica_s3 {
        targets.push(
            crate::archive::replication::ReplicaTarget::s3(
                url,
                settings.replica_s3_endpoint.as_deref(),
                settings.data_dir.join("staging"),
            )
            .with_context(|| format!("replica target {url}"))?,
        );
    }
    if let Some(factor) = settings.replication_factor {
        anyhow::ensure!(
            (1..=targets.len()).contains(&factor),
            "--replication-factor {factor} needs as many replica targets; {} are configured \
             (--replica-dir, --replica-s3)",
            targets.len()
        );
        targets.truncate(factor);
    }
    let replicator = Arc::new(crate::archive::replication::Replicator {
        db: db.clone(),
        blockstore: blockstore.clone(),
        targets,
        segment_duration_ms: settings.segment_duration_ms,
        verify_interval_ms: i64::try_from(settings.replica_verify_interval_s)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000),
        index: index.clone(),
        gc_interval_ms: i64::try_from(settings.gc_interval_s)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000),
        gc_grace: std::time::Duration::from_secs(settings.gc_grace_s),
        // The first collection waits one interval after start.
        last_gc_ms: std::sync::atomic::AtomicI64::new(now_ms()),
    });
    tokio::spawn(replicator.run(std::time::Duration::from_secs(2)));
    let stats = Arc::new(crate::money::stats::WatchStats::new(db.clone()));
    tokio::spawn(stats.clone().run());
    let earnings = Arc::new(crate::live::earnings::EarningsFeed::new(events.clone()));
    tokio::spawn(earnings.clone().run());
    let uploads = Arc::new(
        crate::uploads::Uploads::open(
            &settings.data_dir.join("uploads"),
            crate::uploads::UploadLimits {
                max_upload_bytes: settings.max_upload_bytes,
                quota_bytes: settings.upload_quota_bytes,
                expiry_ms: i64::try_from(settings.upload_expiry_s)
                    .unwrap_or(i64::MAX / 1000)
                    .saturating_mul(1000),
            },
        )
        .context("opening the upload store")?,
    );
    tokio::spawn(crate::uploads::expire_forever(uploads.clone()));
    let library = crate::library::Library::start(
        db.clone(),
        events.clone(),
        blockstore.clone(),
        uploads.clone(),
        crate::library::LibrarySettings {
            ffmpeg: settings.ffmpeg.clone(),
            ffprobe: settings.ffprobe.clone(),
            niceness: transcode_niceness,
            transcode: TranscodeSettings {
                segment_duration_ms: settings.segment_duration_ms,
                x264_preset: settings.x264_preset.clone(),
                ..TranscodeSettings::default()
            },
            jobs: settings.transcode_jobs,
            max_video_ms: settings.max_video_seconds.saturating_mul(1000),
            work_dir: settings.data_dir.join("work").join("videos"),
        },
    )
    .await
    .context("starting video processing")?;
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chat = Arc::new(crate::community::chat::ChatRooms::default());
    let ticketing = crate::ticketing::Ticketing {
        store: db.clone(),
        blockstore: blockstore.clone(),
        events: events.clone(),
        settings: crate::ticketing::TicketingSettings {
            platform_fee_bps: settings.platform_fee_bps,
            segment_duration_ms: settings.segment_duration_ms,
            finalize_after_ms: i64::try_from(settings.event_finalize_after_s)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
        },
    };
    tokio::spawn(ticketing.clone().run_finalizer());
    let memberships = crate::memberships::Memberships::new(
        db.clone(),
        blockstore.clone(),
        crate::memberships::MembershipSettings {
            platform_fee_bps: settings.platform_fee_bps,
            pool_bps: settings.pool_bps,
            mode: settings.pool_mode,
            clock: settings.pool_clock,
        },
        Arc::new(crate::live::events::AccountEvents::default()),
    );
    // Renewals, served media and round closes: a few times a round, at
    // least every 5 s.
    let period_ms = (settings.pool_clock.length_ms / 4).clamp(250, 5000);
    tokio::spawn(
        memberships
            .clone()
            .run(std::time::Duration::from_millis(period_ms.unsigned_abs())),
    );
    let tips = crate::community::tips::Tips {
        store: db.clone(),
        payments: payments.clone(),
        chat: chat.clone(),
        events: events.clone(),
        ticketing: ticketing.clone(),
    };
    // Other nodes: live events, chat and account events reach every node's
    // listeners (viewer counts stay per node).
    let other_viewers = Arc::new(crate::live::audience::OtherNodes::default());
    let viewer_relay: Arc<
        std::sync::OnceLock<crate::live::events::Relay<crate::live::audience::ViewerReport>>,
    > = Arc::default();
    let cluster = match &settings.nats {
        Some(url) => {
            let cluster = crate::cluster::Cluster::connect(url).await?;
            // Each node's viewer counts, reported every few seconds.
            let (others, slot) = (other_viewers.clone(), viewer_relay.clone());
            cluster
                .relay(
                    "viewers",
                    |relay| {
                        let _ = slot.set(relay);
                    },
                    move |stream_id, report| others.report(stream_id, report, now_ms()),
                    |_| true,
                )
                .await?;
            cluster
                .bridge("stream-events", events.clone(), |event| {
                    !matches!(event, crate::live::events::StreamEvent::Viewers { .. })
                })
                .await?;
            cluster.bridge("chat", chat.rooms.clone(), |_| true).await?;
            // New segments and ladders: another node's live streams play here.
            let arrivals = crate::live::arrivals::Arrivals::start(
                index.clone(),
                cache.clone(),
                blockstore.clone(),
            );
            cluster
                .relay(
                    "media",
                    |relay| index.set_relay(relay),
                    move |stream_id, notice| arrivals.arrived(stream_id, notice),
                    |_| true,
                )
                .await?;
            cluster
                .bridge("account-events", memberships.account_events.clone(), |_| {
                    true
                })
                .await?;
            Some(cluster)
        }
        None => None,
    };
    let views = Arc::new(crate::live::views::Views::default());
    {
        let (views, db) = (views.clone(), db.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                let counts = views.take();
                if counts.is_empty() {
                    continue;
                }
                if let Err(err) = db.add_views(&counts).await {
                    tracing::warn!(%err, "writing plays");
                    views.restore(counts);
                }
            }
        });
    }
    // One recovery thread per core this process may run on.
    let verifier = crate::money::verifier::Verifier::start(
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        settings.voucher_recovery_niceness,
        &tokio::runtime::Handle::current(),
    )
    .context("starting the voucher recovery threads")?;
    let state = AppState::new(crate::http::Services {
        remote_blocks,
        views,
        cluster,
        memberships,
        ticketing,
        tips,
        draining: draining.clone(),
        uploads,
        library,
        settings: settings.clone(),
        db,
        blockstore,
        index,
        cache,
        public_cids: Arc::default(),
        ledger,
        payments,
        verifier,
        sessions: Arc::new(crate::money::sessions::Sessions::default()),
        events,
        stats: stats.clone(),
        earnings: earnings.clone(),
        chat,
        thumbnails: Arc::new(crate::live::thumbnails::Thumbnails::default()),
        audience: Arc::new(crate::live::audience::Audience::default()),
        other_viewers,
        sockets: Arc::new(tokio::sync::Semaphore::new(http::MAX_OPEN_SOCKETS)),
        request_limits: Arc::new(crate::http::rate_limit::RequestLimits::new(
            settings.rate_limit_playback,
            settings.rate_limit_api,
            settings.rate_limit_writes,
            settings.rate_limit_wallet,
            settings.dev && !settings.rate_limit_loopback,
            settings.trusted_proxies.clone(),
        )),
        challenge_limiter: Arc::new(crate::http::rate_limit::RateLimiter::new(
            settings.challenges_per_ip_per_minute,
            settings.challenges_per_ip_per_minute.min(30),
        )),
        chain,
        webrtc,
    });
    if let Some(cluster) = &state.cluster {
        tokio::spawn(share_viewer_counts(
            state.clone(),
            cluster.node.clone(),
            viewer_relay,
        ));
    }
    if settings.clustered() {
        tokio::spawn(share_admitted_sessions(
            state.sessions.clone(),
            state.db.clone(),
        ));
    }
    let router = http::router(state.clone());
    info!(
        http = %http_addr,
        rtmp = %rtmp_addr,
        data_dir = %settings.data_dir.display(),
        dev = settings.dev,
        "serving"
    );
    let limits = http::listener::ConnectionLimits {
        max_connections: http::listener::ConnectionLimits::fit_to_fd_limit(
            settings.max_http_connections,
        ),
        max_connections_per_ip: settings.max_http_connections_per_ip,
        header_read_timeout: std::time::Duration::from_millis(settings.http_header_timeout_ms),
    };
    info!(
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        "HTTP connection limits"
    );
    let connections = http::conn::Connections::new(
        router,
        Some(http::playback_shortcut(state.clone())),
        limits.header_read_timeout,
        http::disk_files::DiskFiles::new(
            state.blockstore.clone(),
            http::disk_files::MAX_OPEN_LEAF_FILES,
        ),
    );
    let drain_grace_ms = settings.drain_grace_ms;
    let task = tokio::spawn(async move {
        http::listener::serve(
            http_listener,
            connections,
            limits,
            drain(draining, Duration::from_millis(drain_grace_ms)),
            std::time::Duration::from_secs(10),
        )
        .await;
        earnings.announce();
        if let Err(err) = stats.flush().await {
            tracing::warn!(%err, "writing watch statistics at shutdown failed");
        }
        Ok(())
    });
    Ok(Running {
        http_addr,
        rtmp_addr,
        state,
        task,
    })
}

/// On Ctrl-C or SIGTERM: `/readyz` turns 503 first, and the node keeps
/// serving for `grace` so that balancers stop sending it new requests; then
/// the listener stops and in-flight requests finish.
async fn drain(draining: Arc<std::sync::atomic::AtomicBool>, grace: Duration) {
    shutdown_signal().await;
    draining.store(true, std::sync::atomic::Ordering::Relaxed);
    if !grace.is_zero() {
        info!(
            grace_ms = grace.as_millis() as u64,
            "draining: not ready, still serving"
        );
        tokio::time::sleep(grace).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    info!("shutting down");
}

/// This node's name, kept in its data directory (`node-name`), so that a
/// restarted node knows which live streams were its own.
/// How often a clustered node reports its viewer counts to the others.
const VIEWER_REPORTS: Duration = Duration::from_secs(5);

/// Tells the other nodes how many viewers each stream has here, and pushes
/// the cluster's totals to this node's event sockets when they change.
async fn share_viewer_counts(
    state: http::AppState,
    node: String,
    relay: Arc<
        std::sync::OnceLock<crate::live::events::Relay<crate::live::audience::ViewerReport>>,
    >,
) {
    use std::collections::HashMap;
    let mut tick = tokio::time::interval(VIEWER_REPORTS);
    let mut reported: HashMap<String, usize> = HashMap::new();
    let mut shown: HashMap<String, usize> = HashMap::new();
    loop {
        tick.tick().await;
        let now = now_ms();
        let mut here = state.sessions.viewer_counts(now);
        for (stream, count) in state.audience.counts(now) {
            *here.entry(stream).or_insert(0) += count;
        }
        if let Some(send) = relay.get() {
            for (stream, count) in &here {
                send(
                    stream,
                    &crate::live::audience::ViewerReport {
                        node: node.clone(),
                        count: *count,
                    },
                );
            }
            // Streams that had viewers here and have none now.
            for stream in reported.keys().filter(|s| !here.contains_key(*s)) {
                send(
                    stream,
                    &crate::live::audience::ViewerReport {
                        node: node.clone(),
                        count: 0,
                    },
                );
            }
        }
        let mut streams: Vec<String> = here.keys().cloned().collect();
        streams.extend(state.other_viewers.streams());
        streams.extend(shown.keys().cloned());
        streams.sort();
        streams.dedup();
        for stream in streams {
            let total =
                here.get(&stream).copied().unwrap_or(0) + state.other_viewers.count(&stream, now);
            if shown.get(&stream).copied().unwrap_or(0) != total {
                state.events.publish(
                    &stream,
                    crate::live::events::StreamEvent::Viewers { count: total },
                );
            }
            if total == 0 {
                shown.remove(&stream);
            } else {
                shown.insert(stream, total);
            }
        }
        reported = here;
    }
}

/// How often a clustered node writes when its admitted sessions were last
/// used (a member's idle sessions stop counting this much later).
const ADMITTED_SESSIONS_FLUSH: Duration = Duration::from_secs(10);

/// Writes when this node's admitted sessions were last used, so the other
/// nodes count a member's sessions, and drops those ended elsewhere.
async fn share_admitted_sessions(sessions: Arc<crate::money::sessions::Sessions>, db: Store) {
    let mut tick = tokio::time::interval(ADMITTED_SESSIONS_FLUSH);
    let mut since_ms = 0;
    loop {
        tick.tick().await;
        let now = now_ms();
        let seen = sessions.admitted_last_seen(since_ms);
        if seen.is_empty() {
            since_ms = now;
            continue;
        }
        match db.touch_admitted_sessions(&seen).await {
            Ok(ended) => {
                since_ms = now;
                for id in ended {
                    sessions.end(&id);
                }
            }
            Err(err) => tracing::warn!(%err, "writing sessions' last use"),
        }
    }
}

fn node_name(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-name");
    match std::fs::read_to_string(&path) {
        Ok(name) if !name.trim().is_empty() => Ok(name.trim().to_string()),
        Ok(_) => write_node_name(&path),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => write_node_name(&path),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_node_name(path: &std::path::Path) -> anyhow::Result<String> {
    let name = format!("node-{:016x}", rand::random::<u64>());
    std::fs::write(path, format!("{name}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(name)
}
