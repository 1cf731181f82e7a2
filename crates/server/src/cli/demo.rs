//! `streamweave demo`: the platform on embedded defaults with a live test
//! stream published through ffmpeg over RTMP; with `--chain`, channels are
//! escrowed on a local anvil chain.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;
use tracing::{info, warn};

use crate::app;
use crate::config::{ServeArgs, Settings};
use crate::model::{StreamRecord, StreamState, now_ms};

/// Runs the demo until Ctrl-C.
pub async fn run(mut args: ServeArgs, chain: bool) -> anyhow::Result<()> {
    args.dev = true;
    if args.data_dir.is_none() {
        args.data_dir = Some(
            if chain {
                "streamweave-demo-chain"
            } else {
                "streamweave-demo"
            }
            .into(),
        );
    }
    // The chain lives as long as the demo (the node is dropped with it).
    let anvil = if chain {
        Some(start_demo_chain(&mut args).await?)
    } else {
        None
    };
    let settings = Settings::resolve(args)?;
    let ffmpeg = settings.ffmpeg.clone();
    let running = app::start(settings).await?;
    let state = running.state.clone();

    let record = StreamRecord {
        id: random_id(),
        title: "Demo: test pattern with tone".into(),
        stream_key: format!("sk_{}", random_id()),
        owner: None,
        state: StreamState::Idle,
        created_at_ms: now_ms(),
        started_at_ms: None,
        ended_at_ms: None,
        end_error: None,
        access: crate::model::AccessMode::Free,
        price: None,
        preview_seconds: 0,
        retention_days: None,
        expired_at_ms: None,
        archive_public: false,
        description: "A 720p test pattern with a 1 kHz tone, free to watch.".into(),
        category: Some("demo".into()),
        tags: vec!["test-pattern".into(), "free".into()],
        source: crate::model::StreamSource::Live,
        duration_ms: None,
        member_tiers: Vec::new(),
        views: 0,
    };
    state
        .db
        .insert_stream(&record)
        .await
        .context("creating the demo stream")?;
    let publish_url = format!("rtmp://{}/live/{}", running.rtmp_addr, record.stream_key);

    // A paid stream with a creator, and a funded viewer to watch it paying.
    let data_dir = state.settings.data_dir.clone();
    let creator = demo_key(&data_dir.join("demo-creator.key"))?;
    let viewer_key_file = data_dir.join("demo-viewer.key");
    let viewer = demo_key(&viewer_key_file)?;
    let funding = crate::money::payments::deposit(
        format!("demo-faucet:{:#x}", viewer.address()),
        viewer.address(),
        streamweave_ledger::Address::ZERO,
        streamweave_ledger::Amount(100_000_000),
    );
    state
        .payments
        .submit(crate::money::payments::Operation::Transfers(vec![funding]))
        .await
        .map_err(|err| anyhow::anyhow!("funding the demo viewer: {err}"))?;
    let chain_flag = match (&anvil, &state.settings.chain) {
        (Some(_), Some(chain)) => {
            fund_on_chain(chain, viewer.address())
                .await
                .context("funding the demo viewer on chain")?;
            format!(" --chain-rpc {}", chain.rpc_url)
        }
        _ => String::new(),
    };
    let paid = StreamRecord {
        id: random_id(),
        title: "Demo: paid by the second".into(),
        stream_key: format!("sk_{}", random_id()),
        owner: Some(format!("{:#x}", creator.address())),
        state: StreamState::Idle,
        created_at_ms: now_ms(),
        started_at_ms: None,
        ended_at_ms: None,
        end_error: None,
        access: crate::model::AccessMode::PerSecond,
        price: Some(streamweave_ledger::Price {
            amount: streamweave_ledger::Amount(50_000),
            period_seconds: 60,
        }),
        preview_seconds: 0,
        retention_days: None,
        expired_at_ms: None,
        archive_public: false,
        description: "A test pattern priced at 0.05 USDC a minute: sign in with a demo wallet and pay by the second.".into(),
        category: Some("demo".into()),
        tags: vec!["test-pattern".into(), "paid".into()],
        source: crate::model::StreamSource::Live,
        duration_ms: None,
        member_tiers: Vec::new(),
        views: 0,
    };
    state
        .db
        .insert_stream(&paid)
        .await
        .context("creating the paid demo stream")?;
    let mut paid_publisher = Command::new(&ffmpeg)
        .args(test_pattern_args(
            &format!("rtmp://{}/live/{}", running.rtmp_addr, paid.stream_key),
            "426x240",
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the paid demo publisher")?;
    let mut publisher = Command::new(&ffmpeg)
        .args(test_pattern_args(&publish_url, "1280x720"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the ffmpeg test publisher")?;
    info!(http = %running.http_addr, "demo server up");
    let base = &state.settings.public_url;
    let creator_key = std::fs::read_to_string(data_dir.join("demo-creator.key"))
        .context("reading the demo creator's key")?;
    println!();
    println!("StreamWeave demo is live. Open: {base}/");
    println!(
        "  Watch and pay: {base}/watch/{} (\"Use a demo wallet\", then \"Start watching\")",
        paid.id
    );
    println!(
        "  The creator's studio, earnings moving as you watch: {base}/studio?stream={}#demo-key=0x{}",
        paid.id,
        creator_key.trim().trim_start_matches("0x")
    );
    println!("  A free stream: {base}/watch/{}", record.id);
    println!("  The library (a demo film appears once processed): {base}/library");
    println!("  Events with tickets (a demo event is scheduled): {base}/events");
    println!("  Memberships (a platform tier and the demo creator's): {base}/membership");
    println!(
        "(HLS: {}/live/{}/master.m3u8; Ctrl-C stops)",
        state.settings.public_url, record.id
    );
    println!();
    println!(
        "A paid stream (0.05 USDC a minute) by creator {:#x}; watch it paying as the funded demo viewer:",
        creator.address()
    );
    println!(
        "  streamweave watch --server {} --key {} --stream {} --seconds 30{chain_flag}",
        state.settings.public_url,
        viewer_key_file.display(),
        paid.id
    );
    if let Some(chain) = &state.settings.chain {
        println!(
            "  On chain (anvil at {}): escrow {:#x}, test USDC {:#x}; the viewer holds 100 USDC \
             there, the server settles as it earns (GET /api/v1/chain).",
            chain.rpc_url, chain.escrow, chain.token
        );
    }
    println!("  (from a checkout: cargo run --release -p streamweave-server -- watch ...)");
    println!();
    info!(stream = %record.id, "demo publisher started");
    // A film in the library, uploaded and processed like any creator's.
    tokio::spawn(upload_demo_film(
        ffmpeg.clone(),
        data_dir.to_path_buf(),
        state.settings.public_url.clone(),
        creator.clone(),
    ));
    // Memberships: a platform tier (feeding the pool) and the demo
    // creator's own tier, once per data directory.
    offer_demo_tiers(&state.db, creator.address())
        .await
        .context("offering the demo tiers")?;
    // An event with tickets on sale, as its creator schedules one.
    tokio::spawn(schedule_demo_event(
        state.settings.public_url.clone(),
        creator.clone(),
    ));
    tokio::select! {
        result = running.wait() => result,
        status = paid_publisher.wait() => {
            warn!(?status, "the paid demo publisher stopped");
            Ok(())
        }
        status = publisher.wait() => {
            warn!(?status, "the demo publisher stopped");
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        }
    }
}

/// Starts anvil (a block a second, so logs reach their confirmations),
/// deploys the test USDC and the escrow, and points `args` at them.
async fn start_demo_chain(args: &mut ServeArgs) -> anyhow::Result<tokio::process::Child> {
    let anvil = std::env::var_os("STREAMWEAVE_ANVIL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "contracts/node_modules/.bin/anvil".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(&anvil)
        .args([
            "--port",
            &port.to_string(),
            "--chain-id",
            "31337",
            "--block-time",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (scripts/setup installs it; STREAMWEAVE_ANVIL names another)",
                anvil.display()
            )
        })?;
    let rpc_url = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "anvil did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deployment = streamweave_chain::deploy(&rpc_url, crate::ANVIL_DEV_KEY, 600)
        .await
        .context("deploying the escrow on anvil")?;
    info!(%rpc_url, escrow = %format!("{:#x}", deployment.escrow), "demo chain up");
    args.chain_rpc = Some(rpc_url);
    args.escrow = Some(format!("{:#x}", deployment.escrow));
    args.chain_token = Some(format!("{:#x}", deployment.token));
    args.settler_key = Some(crate::ANVIL_DEV_KEY.into());
    Ok(child)
}

/// Gives a demo wallet test ether (anvil's `anvil_setBalance`) and 100 test USDC.
async fn fund_on_chain(
    chain: &crate::config::ChainSettings,
    to: streamweave_ledger::Address,
) -> anyhow::Result<()> {
    let node =
        streamweave_chain::Escrow::connect(&chain.rpc_url, chain.token, Some(crate::ANVIL_DEV_KEY))
            .await?;
    node.raw_request(
        "anvil_setBalance",
        serde_json::json!([format!("{to:#x}"), "0x56bc75e2d63100000"]),
    )
    .await?;
    node.transact(
        streamweave_chain::TxCall::mint(chain.token, to, 100_000_000),
        Duration::from_secs(60),
    )
    .await?;
    Ok(())
}

/// Makes a 20-second test film and uploads it as the demo creator's video,
/// once per data directory; logs instead of failing the demo.
async fn upload_demo_film(
    ffmpeg: std::path::PathBuf,
    data_dir: std::path::PathBuf,
    server: String,
    creator: streamweave_ledger::SigningKey,
) {
    let outcome: anyhow::Result<Option<String>> = async {
        let mut client = streamweave_client::Client::new(&server, creator.clone());
        client.sign_in().await?;
        let owner = format!("{:#x}", creator.address());
        let (http, url) = client.http(&format!("/api/v1/videos?owner={owner}"));
        let existing: serde_json::Value = http.get(url).send().await?.json().await?;
        if existing.as_array().is_some_and(|videos| !videos.is_empty()) {
            return Ok(None);
        }
        let film = data_dir.join("demo-film.mp4");
        let made = Command::new(&ffmpeg)
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args([
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=30:duration=20",
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=330:sample_rate=48000:duration=20",
            ])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            ])
            .args(["-c:a", "aac"])
            .arg(&film)
            .status()
            .await?;
        anyhow::ensure!(made.success(), "ffmpeg could not make the demo film");
        let upload = crate::cli::upload::upload_file(&client, &server, &film, 8 << 20).await?;
        let video = client.create_video(&upload, "A demo film", None).await?;
        crate::cli::upload::forget_resume(&film);
        let _ = tokio::fs::remove_file(&film).await;
        Ok(video["id"].as_str().map(str::to_string))
    }
    .await;
    match outcome {
        Ok(Some(id)) => {
            info!(video = %id, "demo film uploaded; it appears in the library once processed")
        }
        Ok(None) => {}
        Err(err) => warn!("the demo film could not be uploaded: {err:#}"),
    }
}

/// A platform tier and a tier of the demo creator's, unless offered already.
async fn offer_demo_tiers(
    db: &crate::store::Store,
    creator: streamweave_ledger::Address,
) -> anyhow::Result<()> {
    use crate::store::{Offerer, TierRecord};
    let tier = |offerer, name: &str, price: u128, max_height, max_streams| TierRecord {
        id: crate::store::random_id(),
        offerer,
        name: name.into(),
        description: String::new(),
        price: streamweave_ledger::Amount(price),
        period_seconds: 2_592_000,
        max_height,
        max_streams,
        suspended: false,
        created_at_ms: now_ms(),
    };
    if db.tiers(Some(Offerer::Platform)).await?.is_empty() {
        let mut standard = tier(Offerer::Platform, "Standard", 5_000_000, 720, 2);
        standard.description =
            "The whole catalog up to 720p on two screens; 70% feeds the creators' pool.".into();
        db.insert_tier(&standard).await?;
    }
    if db.tiers(Some(Offerer::Creator(creator))).await?.is_empty() {
        let mut fan = tier(Offerer::Creator(creator), "Fan club", 2_000_000, 1080, 1);
        fan.description = "The demo creator's members-only streams in full HD.".into();
        db.insert_tier(&fan).await?;
    }
    Ok(())
}

/// Schedules the demo creator's event (starting in 15 minutes, an hour
/// long, 100 tickets at 1 USDC) unless one is already scheduled; logs
/// instead of failing the demo.
async fn schedule_demo_event(server: String, creator: streamweave_ledger::SigningKey) {
    let outcome: anyhow::Result<Option<String>> = async {
        let mut client = streamweave_client::Client::new(&server, creator.clone());
        client.sign_in().await?;
        let owner = format!("{:#x}", creator.address());
        let (http, url) = client.http("/api/v1/events?state=scheduled");
        let listed: serde_json::Value = http.get(url).send().await?.json().await?;
        let scheduled = listed["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["creator"] == owner.as_str()));
        if scheduled {
            return Ok(None);
        }
        let starts_at = chrono::Utc::now() + chrono::Duration::minutes(15);
        let event = client
            .create_event(serde_json::json!({
                "title": "Demo: a live show with tickets",
                "description": "Buy a ticket with the demo wallet, then watch in the room when it goes live; the top tipper gets the show's collectible.",
                "category": "demo",
                "starts_at": starts_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "duration_seconds": 3600,
                "royalty_bps": 500,
                "ticket": {"price": "1000000", "supply": 100},
            }))
            .await?;
        Ok(event["id"].as_str().map(str::to_string))
    }
    .await;
    match outcome {
        Ok(Some(id)) => info!(event = %id, "demo event scheduled"),
        Ok(None) => {}
        Err(err) => warn!("the demo event could not be scheduled: {err:#}"),
    }
}

/// ffmpeg arguments that publish an endless 30 fps test pattern with a tone.
pub fn test_pattern_args(publish_url: &str, size: &str) -> Vec<String> {
    let source = format!("testsrc2=size={size}:rate=30");
    [
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        source.as_str(),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "60",
        "-b:v",
        "2500k",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-f",
        "flv",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(std::iter::once(publish_url.to_string()))
    .collect()
}

fn random_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The demo's key at `path`, made on first use.
fn demo_key(path: &std::path::Path) -> anyhow::Result<streamweave_ledger::SigningKey> {
    if path.exists() {
        return crate::cli::keys::read_key(path);
    }
    let key = crate::cli::keys::new_key();
    crate::cli::keys::write_key(path, &key)?;
    Ok(key)
}
