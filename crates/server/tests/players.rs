//! Players of paid streams beyond the SDK's own: ffmpeg as a plain HLS client
//! on a session that the SDK pays for, a crowd of paying viewers from the load
//! generator, the recording exported as plain files, and an SDK that refuses a
//! server asking more than the advertised price.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{H264, Server, publish, sign_in, wait_child};
use serde_json::{Value, json};
use streamweave_client::{Client, ClientError, PaidSession};
use streamweave_ledger::{Amount, Price, SigningKey};

async fn priced_live_stream(
    server: &Server,
    creator: &SigningKey,
    seconds: u32,
) -> (String, std::process::Child) {
    let token = sign_in(server, creator).await;
    let stream: Value = reqwest::Client::new()
        .post(server.url("/api/v1/streams"))
        .bearer_auth(&token)
        .json(&json!({"title": "paid", "access": "per_second", "price": {"amount": "1000", "period_seconds": 1}}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = stream["id"].as_str().expect("id").to_string();
    let key = stream["stream_key"].as_str().expect("key");
    let ffmpeg = publish(
        &format!("{}/live/{key}", server.rtmp),
        "640x360",
        seconds,
        H264,
    );
    server
        .wait_for_state(&id, "live", Duration::from_secs(20))
        .await;
    (id, ffmpeg)
}

/// The stream's watch statistics, as its creator sees them.
/// A signed-in viewer, funded from the faucet, with a session on the stream
/// through a channel of 1 USDC.
async fn paying_viewer(server: &Server, key_byte: u8, stream_id: &str) -> (Client, PaidSession) {
    let mut viewer = Client::new(
        &server.http,
        SigningKey::from_bytes(&[key_byte; 32]).expect("key"),
    );
    viewer.sign_in().await.expect("sign in");
    viewer.faucet(Amount(10_000_000)).await.expect("faucet");
    let session = viewer
        .open_session(stream_id, Amount(1_000_000), None)
        .await
        .expect("session");
    (viewer, session)
}

async fn stats_of(server: &Server, stream_id: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(server.url(&format!("/api/v1/streams/{stream_id}/stats")))
        .bearer_auth(token)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn ffmpeg_plays_a_paid_session_while_the_sdk_pays() {
    let server = Server::start(&["--dev"]).await;
    let creator = SigningKey::from_bytes(&[0x91; 32]).expect("key");
    let (stream_id, mut publisher) = priced_live_stream(&server, &creator, 30).await;
    // Let a few segments exist so the player has a live edge to join (on a
    // loaded machine the ladder takes longer than their duration).
    common::eventually("two 360p segments", async || {
        let segments = server
            .get_json(&format!("/api/v1/streams/{stream_id}/segments"))
            .await;
        segments
            .as_array()
            .is_some_and(|all| all.iter().filter(|s| s["rendition"] == "360p").count() >= 2)
    })
    .await;

    let (viewer, session) = paying_viewer(&server, 0x92, &stream_id).await;
    let url = server.url(&session.playback_url);
    let out = tempfile::tempdir().expect("tempdir");
    let recording = out.path().join("watched.mp4");
    let player = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "warning",
            "-live_start_index",
            "-1",
            "-i",
            &url,
        ])
        .args(["-t", "8", "-c", "copy", "-y"])
        .arg(&recording)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg player");
    let (spent, player) = tokio::join!(
        viewer.pay_ahead(&session, 2000, Duration::from_secs(14)),
        tokio::task::spawn_blocking(move || player.wait_with_output().expect("player")),
    );
    let spent = spent.expect("paying ahead");
    let player = player.expect("join");
    let log = String::from_utf8_lossy(&player.stderr);
    assert!(player.status.success(), "ffmpeg failed: {log}");
    assert!(
        !log.contains("402"),
        "the player never met the paywall (spent {spent}): {log}"
    );
    let seconds = common::media_seconds(&recording);
    assert!(seconds >= 6.0, "ffmpeg recorded {seconds} s");

    // What the SDK paid covers what the player was granted, and at most the
    // prepay window (two segments and a quarter of slack) more.
    let creator_token = sign_in(&server, &creator).await;
    let stats = stats_of(&server, &stream_id, &creator_token).await;
    let granted_ms = stats["paid_viewer_ms"].as_u64().expect("paid ms");
    let price = Price {
        amount: Amount(1000),
        period_seconds: 1,
    };
    assert!(granted_ms >= 6_000, "{stats}");
    assert!(
        spent >= price.owed(granted_ms).expect("owed"),
        "spent {spent}: {stats}"
    );
    assert!(
        spent <= price.owed(granted_ms + 4_500).expect("owed"),
        "spent {spent}: {stats}"
    );
    assert_eq!(stats["gross"], spent.to_string(), "{stats}");
    publisher.kill().ok();
    publisher.wait().ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crowd_of_paying_viewers_then_the_recording_as_files() {
    let server = Server::start(&["--dev"]).await;
    let creator = SigningKey::from_bytes(&[0x93; 32]).expect("key");
    let (stream_id, mut publisher) = priced_live_stream(&server, &creator, 14).await;
    let report = common::run_json(&[
        "bench",
        "viewers",
        "--server",
        &server.http,
        "--stream",
        &stream_id,
        "--viewers",
        "8",
        "--seconds",
        "8",
        "--deposit",
        "1000000",
    ])
    .await;
    assert_eq!(report["viewers_watching"], 8, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        report["segments"]["count"].as_u64().expect("count") >= 8,
        "{report}"
    );
    assert!(
        report["vouchers"]["count"].as_u64().expect("count") >= 8,
        "{report}"
    );
    assert!(
        report["segments"]["p99_ms"].as_f64().expect("p99") > 0.0,
        "{report}"
    );

    let creator_token = sign_in(&server, &creator).await;
    let stats = stats_of(&server, &stream_id, &creator_token).await;
    assert_eq!(stats["unique_viewers"], 8, "{stats}");
    assert!(
        stats["gross"]
            .as_str()
            .expect("gross")
            .parse::<u128>()
            .expect("n")
            > 0
    );

    assert!(wait_child(&mut publisher, Duration::from_secs(60)));
    server
        .wait_for_state(&stream_id, "ended", Duration::from_secs(30))
        .await;
    let out = tempfile::tempdir().expect("tempdir");
    let export = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .args(["export", "--data-dir"])
        .arg(&server.data_dir)
        .args(["--stream", &stream_id, "--out"])
        .arg(out.path())
        .output()
        .expect("export");
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let named: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("stream.json")).expect("stream.json"),
    )
    .expect("json");
    assert_eq!(
        named["stream_id"],
        stream_id.as_str(),
        "the folder names its stream"
    );
    let listed = server
        .get_json(&format!("/api/v1/streams/{stream_id}/segments"))
        .await;
    let listed = listed.as_array().expect("segments");
    assert!(!listed.is_empty());
    for segment in listed {
        let path = out.path().join(format!(
            "{}/{}.m4s",
            segment["rendition"].as_str().expect("rendition"),
            segment["sequence"]
        ));
        let bytes = std::fs::read(&path).expect("exported segment");
        assert_eq!(
            streamweave_cas::file_cid(&bytes).to_string(),
            segment["cid"].as_str().expect("cid"),
            "{}",
            path.display()
        );
    }
    // The export plays as a plain VOD.
    let seconds = common::media_seconds(&out.path().join("master.m3u8"));
    assert!(seconds >= 12.0, "exported {seconds} s");
    // A paid stream's archive is its creator's, not the public's.
    let (anonymous, owned) = (
        reqwest::get(server.url(&format!("/api/v1/streams/{stream_id}/archive")))
            .await
            .expect("archive"),
        reqwest::Client::new()
            .get(server.url(&format!("/api/v1/streams/{stream_id}/archive")))
            .bearer_auth(&creator_token)
            .send()
            .await
            .expect("archive"),
    );
    assert_eq!(anonymous.status(), 404);
    assert_eq!(owned.status(), 200);
    let archive: Value = owned.json().await.expect("json");
    assert_eq!(archive["complete"], true, "{archive}");
    assert_eq!(archive["segments"].as_u64(), Some(listed.len() as u64));
    let car = out.path().join("recording.car");
    let exported = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .args(["archive", "export", "--data-dir"])
        .arg(&server.data_dir)
        .args(["--stream", &stream_id, "--out"])
        .arg(&car)
        .output()
        .expect("archive export");
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let summary: Value = serde_json::from_slice(&exported.stdout).expect("summary");
    assert_eq!(summary["root_cid"], archive["root_cid"]);
    assert_eq!(summary["piece_cid"], archive["piece_cid"]);
    let verified = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .arg("verify")
        .arg(&car)
        .output()
        .expect("verify");
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    // The creator makes the archive public: anyone fetches it, live stays paid.
    let set_archive_public = async |public: bool| {
        let answer = reqwest::Client::new()
            .patch(server.url(&format!("/api/v1/streams/{stream_id}")))
            .bearer_auth(&creator_token)
            .json(&json!({"archive_public": public}))
            .send()
            .await
            .expect("patch");
        assert_eq!(answer.status(), 200);
    };
    let archived_segment = async || {
        reqwest::get(server.url(&format!(
            "/ipfs/{}/360p/0.m4s",
            archive["root_cid"].as_str().expect("root")
        )))
        .await
        .expect("segment")
        .status()
    };
    set_archive_public(true).await;
    let public = reqwest::get(server.url(&format!("/api/v1/streams/{stream_id}/archive")))
        .await
        .expect("archive");
    assert_eq!(public.status(), 200);
    assert_eq!(
        archived_segment().await,
        200,
        "a public archive's segments are public"
    );
    let live = reqwest::get(server.url(&format!("/live/{stream_id}/360p/0.m4s")))
        .await
        .expect("live");
    assert_eq!(
        live.status(),
        402,
        "playback outside the archive stays paid"
    );
    // Made private again, it is paid again at once.
    set_archive_public(false).await;
    assert_eq!(
        archived_segment().await,
        402,
        "a private archive's segments are paid"
    );
    let missing = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .args(["export", "--data-dir"])
        .arg(&server.data_dir)
        .args(["--stream", "nosuchstream", "--out"])
        .arg(out.path().join("none"))
        .output()
        .expect("export");
    assert!(!missing.status.success());
    let message = String::from_utf8_lossy(&missing.stderr);
    assert!(message.contains("no stream nosuchstream"), "{message}");
}

/// A server that lists one 2 s segment at 1000 a second but asks 5000 for it.
async fn greedy_server(vouchers: Arc<AtomicUsize>) -> String {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    let owner = format!(
        "{:#x}",
        SigningKey::from_bytes(&[0x95; 32]).expect("key").address()
    );
    let price = json!({"amount": "1000", "period_seconds": 1});
    let app = Router::new()
        .route("/api/v1/streams/s", get({
            let price = price.clone();
            move || async move { axum::Json(json!({"id": "s", "price": price, "owner": owner, "preview_seconds": 0})) }
        }))
        .route("/api/v1/payments/config", get(|| async {
            axum::Json(json!({"chain_id": 31337, "escrow": "0x0000000000000000000000000000000000000000"}))
        }))
        .route("/api/v1/channels", post(|| async {
            (StatusCode::CREATED, axum::Json(json!({"id": format!("0x{}", "ab".repeat(32))})))
        }))
        .route("/api/v1/streams/s/sessions", post(|| async {
            (StatusCode::CREATED, axum::Json(json!({"id": "x", "playback_url": "/play/x/master.m3u8", "paid_from": "0"})))
        }))
        .route("/play/x/master.m3u8", get(|| async {
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n360p/index.m3u8\n"
        }))
        .route("/play/x/360p/index.m3u8", get(|| async {
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.000,\n0.m4s\n"
        }))
        .route("/play/x/360p/0.m4s", get(move || {
            let price = price.clone();
            async move {
                (StatusCode::PAYMENT_REQUIRED, axum::Json(json!({
                    "type": "/problems/payment-required",
                    "channel_id": format!("0x{}", "ab".repeat(32)),
                    "required_amount": "5000",
                    "price": price,
                })))
            }
        }))
        .route("/api/v1/channels/{id}/vouchers", post(move || {
            vouchers.fetch_add(1, Ordering::SeqCst);
            async { axum::Json(json!({"new": true})) }
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_refuses_a_server_asking_more_than_the_price() {
    let vouchers = Arc::new(AtomicUsize::new(0));
    let base = greedy_server(vouchers.clone()).await;
    let client = Client::new(&base, SigningKey::from_bytes(&[0x96; 32]).expect("key"));
    match client.watch("s", 10, Amount(1_000_000), None).await {
        Err(ClientError::GreedyServer { asked, allowed }) => {
            assert_eq!(asked, Amount(5000));
            assert_eq!(allowed, Amount(2000), "2 s at 1000 a second");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        vouchers.load(Ordering::SeqCst),
        0,
        "nothing was signed for the greedy ask"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_vouchers_are_counted_once() {
    let server = Server::start(&["--dev"]).await;
    let creator = SigningKey::from_bytes(&[0x97; 32]).expect("key");
    let (stream_id, mut publisher) = priced_live_stream(&server, &creator, 20).await;
    let (viewer, session) = paying_viewer(&server, 0x98, &stream_id).await;
    // Pairs of vouchers sent at once, within the prepay window (4500 here):
    // whichever lands second moves only what the first did not.
    let mut last = 0u128;
    for pair in 0..20u128 {
        let (low, high) = (Amount(pair * 200 + 100), Amount(pair * 200 + 200));
        let (a, b) = tokio::join!(viewer.pay(&session, low), viewer.pay(&session, high));
        assert!(b.is_ok(), "{b:?}");
        // The lower one is either accepted first or refused as stale.
        let _ = a;
        last = high.0;
    }
    let creator_token = sign_in(&server, &creator).await;
    let stats = stats_of(&server, &stream_id, &creator_token).await;
    assert_eq!(stats["gross"], last.to_string(), "{stats}");
    let split =
        streamweave_ledger::RevenuePolicy::sole(creator.address(), 300).totals(Amount(last));
    assert_eq!(stats["net"], split.recipients[0].to_string(), "{stats}");
    assert_eq!(stats["platform_fee"], split.fee.to_string(), "{stats}");
    publisher.kill().ok();
    publisher.wait().ok();
}
