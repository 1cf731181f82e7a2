//! Two nodes on one PostgreSQL database and one NATS server, as a cluster
//! behind a balancer: a channel opened on one node is paid through both,
//! vouchers racing on the two nodes never redeem a unit twice (each node
//! plans over the channel's stored revision and plans again when the other
//! committed first), an identical voucher sent to both is new once, the
//! creator earns exactly the split of the final amount, chat posted on one
//! node reaches readers on the other, a node that starts leaves the other's
//! live streams live, a live stream one node ingests is listed and grows on
//! the other's playlist, its recording plays from the other (blocks in one
//! S3 bucket), and the audit passes.

mod common;

use std::time::Duration;

use common::{
    Server, Socket, TestDatabase, get, hex, next_event, post, publish, send, sign_in, start_s3,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use streamweave_ledger::{Address, B256, PaymentDomain, SigningKey};
use tokio_tungstenite::tungstenite::Message;

const NATS: &str = "127.0.0.1:4222";

/// NATS, or `false` after saying why (with `CI` set that fails instead).
async fn nats_reachable() -> bool {
    match tokio::net::TcpStream::connect(NATS).await {
        Ok(_) => true,
        Err(err) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "NATS at {NATS} is required in CI: {err}"
            );
            eprintln!("skipping: NATS at {NATS} unreachable ({err})");
            false
        }
    }
}

/// The next JSON event of `type` on a chat socket.
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let event = next_event(socket).await;
        if event["type"] == kind {
            return event;
        }
    }
}

/// Joins the chat at `url`, signs in with `token` and posts `text`;
/// answers the poster's socket.
async fn chat_post(url: &str, token: &str, text: &str) -> Socket {
    let (mut poster, _) = tokio_tungstenite::connect_async(url).await.expect("join");
    next_of(&mut poster, "history").await;
    for (message, answer) in [
        (json!({"type": "auth", "token": token}), Some("signed_in")),
        (json!({"type": "post", "text": text}), None),
    ] {
        poster
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("send");
        if let Some(answer) = answer {
            next_of(&mut poster, answer).await;
        }
    }
    poster
}

/// Signs `payer` in on `node`, funds them from the dev faucet and opens a
/// channel of `deposit` to `payee` signed by `signer`: (token, channel id).
async fn funded_channel(
    node: &Server,
    payer: &SigningKey,
    payee: &SigningKey,
    signer: &SigningKey,
    salt: B256,
    deposit: u128,
) -> (String, B256) {
    let token = sign_in(node, payer).await;
    let (status, _) = send(
        reqwest::Method::POST,
        node,
        "/api/v1/dev/faucet",
        None,
        Some(json!({"address": format!("{:#x}", payer.address()), "amount": "1000000"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, channel) = post(
        node,
        "/api/v1/channels",
        &token,
        json!({"payee": format!("{:#x}", payee.address()), "deposit": deposit.to_string(),
               "signer": format!("{:#x}", signer.address()), "salt": format!("{salt:#x}")}),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    let id = PaymentDomain::EMBEDDED.channel_id(
        payer.address(),
        payee.address(),
        Address::ZERO,
        salt,
        signer.address(),
    );
    (token, id)
}

/// Starts a session on `stream_id` paid through `channel`: answers its
/// playback base (`/play/{id}/`).
async fn paid_session(node: &Server, stream_id: &str, token: &str, channel: B256) -> String {
    let (status, session) = post(
        node,
        &format!("/api/v1/streams/{stream_id}/sessions"),
        token,
        json!({"channel_id": format!("{channel:#x}")}),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    session["playback_url"]
        .as_str()
        .expect("url")
        .trim_end_matches("master.m3u8")
        .to_string()
}

/// A voucher's body: `amount` on `channel`, signed by `signer`.
fn voucher_body(signer: &SigningKey, channel: B256, amount: u128) -> Value {
    let signature = signer.sign_digest(PaymentDomain::EMBEDDED.voucher_digest(channel, amount));
    json!({"amount": amount.to_string(), "signature": hex(&signature)})
}

/// PostgreSQL, NATS and an S3 bucket for a test cluster (`None` after
/// saying why when one is unreachable outside CI).
async fn services() -> Option<(TestDatabase, String, common::S3Server)> {
    let database = TestDatabase::postgres().await?;
    if !nats_reachable().await {
        return None;
    }
    Some((database, format!("nats://{NATS}"), start_s3("blocks").await))
}

/// A stream created by `token` on `node` with `body`, published there
/// (320x180 for `seconds`) and live: (id, the publisher).
async fn live_on(
    node: &Server,
    token: &str,
    body: Value,
    seconds: u32,
) -> (String, std::process::Child) {
    let (status, stream) = post(node, "/api/v1/streams", token, body).await;
    assert_eq!(status, 201, "{stream}");
    let id = stream["id"].as_str().expect("id").to_string();
    let key = stream["stream_key"].as_str().expect("key");
    let ffmpeg = publish(
        &format!("{}/live/{key}", node.rtmp),
        "320x180",
        seconds,
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    node.wait_for_state(&id, "live", Duration::from_secs(30))
        .await;
    (id, ffmpeg)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_payments_and_chat() {
    let Some((database, nats, s3)) = services().await else {
        return;
    };
    // Blocks in one bucket: what one node stores, any node serves.
    let args = node_args(&database, &nats, &s3.endpoint);
    let a = Server::start_with_env(&args, &AWS).await;
    // A live stream on node A goes on while node B starts (a starting node
    // ends only the streams it was ingesting itself).
    let creator = SigningKey::from_bytes(&[0x62; 32]).expect("key");
    let creator_token = sign_in(&a, &creator).await;
    let (live_id, mut ffmpeg) =
        live_on(&a, &creator_token, json!({"title": "on node A"}), 30).await;
    let b = Server::start_with_env(&args, &AWS).await;
    let (_, seen) = get(&b, &format!("/api/v1/streams/{live_id}"), None).await;
    assert_eq!(
        seen["state"], "live",
        "still live after node B started: {seen}"
    );
    // Node B serves the live playlist too, and it grows as node A ingests.
    let mut variant = None;
    for _ in 0..40 {
        let response = reqwest::get(format!("{}/live/{live_id}/master.m3u8", b.http))
            .await
            .expect("master");
        if response.status() == 200 {
            let text = response.text().await.expect("text");
            variant = text
                .lines()
                .find(|l| l.ends_with(".m3u8"))
                .map(str::to_string);
            if variant.is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let variant = variant.expect("B serves A's live master playlist");
    let segments = |node: &Server| {
        let url = format!("{}/live/{live_id}/{variant}", node.http);
        async move {
            let response = reqwest::get(&url).await.expect("playlist");
            assert_eq!(response.status(), 200, "{url}");
            let text = response.text().await.expect("text");
            text.lines().filter(|l| l.starts_with("#EXTINF")).count()
        }
    };
    let mut on_b = 0;
    for _ in 0..40 {
        on_b = segments(&b).await;
        if on_b > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(on_b > 0, "B lists A's segments");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (later_on_b, on_a) = (segments(&b).await, segments(&a).await);
    assert!(
        later_on_b > on_b,
        "B's playlist grew while live: {on_b} then {later_on_b}"
    );
    assert!(on_a - later_on_b <= 1, "A {on_a}, B {later_on_b}");
    // B measured how long A's notices took.
    let metrics = common::metrics_text(&b).await;
    assert!(
        metrics.contains("streamweave_cluster_message_delay_seconds_count{kind=\"media\"}"),
        "{metrics}"
    );
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    // The recording, ingested and stored by node A, plays from node B.
    a.wait_for_state(&live_id, "ended", Duration::from_secs(30))
        .await;
    let fetch = |path: String| {
        let url = format!("{}{path}", b.http);
        async move {
            let response = reqwest::get(&url).await.expect("fetch from B");
            let status = response.status().as_u16();
            (status, response.bytes().await.expect("body"))
        }
    };
    let (status, master) = fetch(format!("/live/{live_id}/master.m3u8")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&master));
    let master = String::from_utf8_lossy(&master).to_string();
    let variant = master
        .lines()
        .find(|l| l.ends_with(".m3u8"))
        .expect("a rendition")
        .to_string();
    let (status, playlist) = fetch(format!("/live/{live_id}/{variant}")).await;
    assert_eq!(status, 200);
    let playlist = String::from_utf8_lossy(&playlist).to_string();
    let rendition = variant.trim_end_matches("/index.m3u8");
    let segment = playlist
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .expect("a segment")
        .to_string();
    let (status, bytes) = fetch(format!("/live/{live_id}/{rendition}/{segment}")).await;
    assert_eq!(status, 200, "segment {segment} from B");
    assert!(bytes.len() > 1000, "{} bytes", bytes.len());
    for node in [&a, &b] {
        let (status, _) = get(node, "/readyz", None).await;
        assert_eq!(status, 200, "ready with the database and NATS");
    }
    let payer = SigningKey::from_bytes(&[0x61; 32]).expect("key");
    let session = SigningKey::from_bytes(&[0x63; 32]).expect("key");
    // Opened on node A, paid through node B (which reads it from the database).
    let (payer_token, id) = funded_channel(
        &a,
        &payer,
        &creator,
        &session,
        B256::repeat_byte(7),
        100_000,
    )
    .await;
    let path = format!("/api/v1/channels/{id:#x}/vouchers");
    let voucher = |amount: u128| voucher_body(&session, id, amount);
    let (a, b) = (&a, &b);
    let nodes = [a, b];
    let pay = |node: usize, amount: u128| {
        send(
            reqwest::Method::POST,
            nodes[node],
            &path,
            None,
            Some(voucher(amount)),
        )
    };
    let (status, paid) = pay(1, 1000).await;
    assert_eq!((status, paid["new"].as_bool()), (200, Some(true)), "{paid}");
    // Node A last saw the channel as opened: it plans again over B's step.
    let (status, paid) = pay(0, 2000).await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["channel"]["redeemed"], "2000");

    // Racing vouchers on both nodes: every answer is an acceptance or a
    // refusal as not increasing, and the highest one wins.
    let racing = futures_util::future::join_all(
        (3000u128..3020).map(|amount| pay(usize::from(amount % 2 == 1), amount)),
    )
    .await;
    for (status, body) in &racing {
        assert!(
            *status == 200 || body["type"] == "/problems/voucher-not-increasing",
            "{status} {body}"
        );
    }
    // The same voucher on both at once: new exactly once.
    let (on_a, on_b) = tokio::join!(pay(0, 5000), pay(1, 5000));
    assert_eq!((on_a.0, on_b.0), (200, 200), "{on_a:?} {on_b:?}");
    let new: Vec<bool> = [&on_a.1, &on_b.1]
        .iter()
        .map(|body| body["new"].as_bool().expect("new"))
        .collect();
    assert_eq!(
        new.iter().filter(|n| **n).count(),
        1,
        "one new, one repeat: {new:?}"
    );
    for node in [a, b] {
        let (status, seen) = get(
            node,
            &format!("/api/v1/channels/{id:#x}"),
            Some(&payer_token),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(seen["redeemed"], "5000", "{seen}");
    }
    // The creator earned the split of 5000 exactly once: 5000 - ceil(3%).
    let (status, balances) = get(
        b,
        &format!("/api/v1/accounts/{:#x}/balances", creator.address()),
        Some(&creator_token),
    )
    .await;
    assert_eq!(status, 200, "{balances}");
    assert_eq!(balances["earned"], "4850", "{balances}");

    // Chat: posted on node A, read on node B.
    let (status, stream) = post(
        a,
        "/api/v1/streams",
        &creator_token,
        json!({"title": "one room, two nodes"}),
    )
    .await;
    assert_eq!(status, 201, "{stream}");
    let stream_id = stream["id"].as_str().expect("id");
    let chat = |node: &Server| {
        format!(
            "{}/api/v1/streams/{stream_id}/chat",
            node.http.replacen("http", "ws", 1)
        )
    };
    let (mut reader, _) = tokio_tungstenite::connect_async(chat(b))
        .await
        .expect("join on B");
    next_of(&mut reader, "history").await;
    let mut poster = chat_post(&chat(a), &payer_token, "hello from A").await;
    let seen = next_of(&mut reader, "message").await;
    assert_eq!(seen["message"]["text"], "hello from A");
    assert_eq!(
        seen["message"]["author"],
        format!("{:#x}", payer.address()).as_str()
    );
    // Once, not echoed back to A's readers twice.
    let mine = next_of(&mut poster, "message").await;
    assert_eq!(mine["message"]["id"], seen["message"]["id"]);
    let again = tokio::time::timeout(Duration::from_millis(500), poster.next()).await;
    assert!(again.is_err(), "a message arrives once: {again:?}");

    database.assert_ledger_audits(&a.data_dir);
}

/// The flags and environment of a node of a test cluster.
fn node_args<'a>(database: &'a TestDatabase, nats: &'a str, s3: &'a str) -> Vec<&'a str> {
    database.args(&[
        "--dev",
        "--nats",
        nats,
        "--blockstore",
        "s3://blocks/cluster",
        "--blockstore-s3-endpoint",
        s3,
    ])
}

const AWS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "streamweave-test"),
    ("AWS_SECRET_ACCESS_KEY", "streamweave-test"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
];

/// A segment's status through a session, with the 402's required amount.
async fn segment_status(node: &Server, path: &str) -> (u16, Option<u128>) {
    let (status, body) = send(reqwest::Method::GET, node, path, None, None).await;
    let required = body["required_amount"]
        .as_str()
        .and_then(|a| a.parse().ok());
    (status, required)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paid_session_goes_on_after_its_node_is_killed() {
    let Some((database, nats, s3)) = services().await else {
        return;
    };
    let args = node_args(&database, &nats, &s3.endpoint);
    let a = Server::start_with_env(&args, &AWS).await;
    let c = Server::start_with_env(&args, &AWS).await;

    // A paid stream ingested by node A: 1000 base units a second.
    let creator = SigningKey::from_bytes(&[0x72; 32]).expect("key");
    let creator_token = sign_in(&a, &creator).await;
    let (stream_id, mut ffmpeg) = live_on(
        &a,
        &creator_token,
        json!({"title": "paid on A", "access": "per_second",
               "price": {"amount": "60000", "period_seconds": 60}}),
        40,
    )
    .await;

    // The viewer starts a session on node C and pays two segments there.
    let payer = SigningKey::from_bytes(&[0x73; 32]).expect("key");
    let signer = SigningKey::from_bytes(&[0x74; 32]).expect("key");
    let (payer_token, channel_id) =
        funded_channel(&c, &payer, &creator, &signer, B256::repeat_byte(3), 500_000).await;
    let vouchers = format!("/api/v1/channels/{channel_id:#x}/vouchers");
    let voucher = |amount: u128| Some(voucher_body(&signer, channel_id, amount));
    let base = paid_session(&c, &stream_id, &payer_token, channel_id).await;
    // Wait for a few segments on node C's view of the stream.
    let mut listed: Vec<String> = Vec::new();
    let mut rendition = String::new();
    for _ in 0..80 {
        let response = reqwest::get(format!("{}{base}master.m3u8", c.http))
            .await
            .expect("master");
        if response.status() == 200 {
            let text = response.text().await.expect("text");
            if let Some(variant) = text.lines().find(|l| l.ends_with(".m3u8")) {
                rendition = variant.trim_end_matches("/index.m3u8").to_string();
                let playlist = reqwest::get(format!("{}{base}{variant}", c.http))
                    .await
                    .expect("playlist")
                    .text()
                    .await
                    .expect("text");
                listed = playlist
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .map(str::to_string)
                    .collect();
                if listed.len() >= 4 {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(listed.len() >= 4, "segments listed on C: {listed:?}");
    let mut paid = 0u128;
    for segment in &listed[..2] {
        let path = format!("{base}{rendition}/{segment}");
        let (status, required) = segment_status(&c, &path).await;
        assert_eq!(status, 402, "{path}");
        let required = required.expect("required amount");
        let (status, body) = send(
            reqwest::Method::POST,
            &c,
            &vouchers,
            None,
            voucher(required),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        paid = required;
        assert_eq!(segment_status(&c, &path).await.0, 200, "{path} once paid");
    }
    // A counts C's viewer (C reports its counts every few seconds).
    common::eventually("A counts the viewer watching on C", async || {
        let (_, seen) = get(&a, &format!("/api/v1/streams/{stream_id}"), None).await;
        seen["viewers"] == 1
    })
    .await;
    // Node C is killed; the player goes on through node A.
    drop(c);
    let path = format!("{base}{rendition}/{}", listed[2]);
    let (status, required) = segment_status(&a, &path).await;
    let segment_price = 2_000 + 500; // a 2 s segment at 1000 a second, with slack
    match status {
        200 => {}
        402 => {
            let required = required.expect("required amount");
            assert!(
                required > paid && required - paid <= segment_price,
                "asks only for the next segment: paid {paid}, required {required}"
            );
            let (status, body) = send(
                reqwest::Method::POST,
                &a,
                &vouchers,
                None,
                voucher(required),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            paid = required;
            assert_eq!(
                segment_status(&a, &path).await.0,
                200,
                "{path} once paid on A"
            );
        }
        other => panic!("{path} on A: {other}"),
    }
    let (_, seen) = get(
        &a,
        &format!("/api/v1/channels/{channel_id:#x}"),
        Some(&payer_token),
    )
    .await;
    assert_eq!(seen["redeemed"], paid.to_string().as_str(), "{seen}");
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    database.assert_ledger_audits(&a.data_dir);
}

/// nginx in front of `nodes`, its files in `dir`: a playback session's
/// requests (`/play/{id}/...`) stay on one node (its meter lives there) and
/// move to the next when that node is gone; each client's other requests
/// stay on one node too; a request that finds its node dead is retried on
/// the next.
/// Listens on `port` (the nodes' `--public-url`).
async fn balancer(nodes: &[&Server], dir: &std::path::Path, port: u16) -> Server {
    let upstreams: String = nodes
        .iter()
        .map(|node| {
            format!(
                "    server {} max_fails=1 fail_timeout=30s;\n",
                node.http.trim_start_matches("http://")
            )
        })
        .collect();
    let dir_text = dir.display();
    let conf = format!(
        r#"worker_processes 1;
pid {dir_text}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir_text}/body;
  proxy_temp_path {dir_text}/proxy;
  fastcgi_temp_path {dir_text}/fastcgi;
  uwsgi_temp_path {dir_text}/uwsgi;
  scgi_temp_path {dir_text}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  map $uri $affinity {{ ~^/play/(?<session>[^/]+)/ $session; default $remote_addr; }}
  upstream streamweave {{
    hash $affinity consistent;
{upstreams}  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://streamweave;
      proxy_http_version 1.1;
      proxy_set_header Host $host:$server_port;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_connect_timeout 1s;
      proxy_read_timeout 1h;
      proxy_next_upstream error timeout http_502 http_503 non_idempotent;
    }}
  }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
    let child = std::process::Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        // One process, so that killing it (on drop) leaves no worker
        // behind holding the port and the test's output.
        .args(["-g", "daemon off; master_process off;"])
        .spawn()
        .expect("start nginx");
    let balancer = Server::other(child, format!("http://127.0.0.1:{port}"));
    common::eventually("nginx answers", async || {
        reqwest::get(balancer.url("/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    balancer
}

/// Whether nginx is here (with `CI` set it must be).
fn nginx_installed() -> bool {
    let found = std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "nginx is required in CI"
    );
    if !found {
        eprintln!("skipping: nginx is not installed");
    }
    found
}

/// A request through the balancer, tried again once when it fails on the
/// way (a node died under it): (status, body, the node that answered).
async fn through(
    balancer: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, bytes::Bytes, String) {
    let client = reqwest::Client::new();
    let mut tries = 0;
    loop {
        let mut request = client.request(method.clone(), balancer.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) if !matches!(response.status().as_u16(), 502..=504) => {
                let status = response.status().as_u16();
                let node = response
                    .headers()
                    .get("x-streamweave-node")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                return (status, response.bytes().await.expect("body"), node);
            }
            failed => {
                tries += 1;
                assert!(tries <= 1, "{path}: failed again after a retry: {failed:?}");
            }
        }
    }
}

/// A paying viewer of one session.
struct Viewer {
    token: String,
    signer: SigningKey,
    channel: B256,
    /// `/play/{session}/`
    base: String,
    rendition: String,
    /// The node the balancer keeps the session on.
    node: String,
    paid: u128,
    seen: std::collections::HashSet<String>,
}

/// What one segment of the test streams costs at most (2 s at 1000 a
/// second, with slack for a long segment).
const SEGMENT_PRICE: u128 = 2_600;

impl Viewer {
    /// The rendition's segments as listed now through the balancer.
    async fn listed(&self, balancer: &Server) -> Vec<String> {
        let path = format!("{}{}/index.m3u8", self.base, self.rendition);
        let (status, playlist, _) = through(balancer, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}");
        String::from_utf8_lossy(&playlist)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Plays the newest segment not played yet, paying what it asks: only
    /// ever the next segment's price, never one already paid.
    async fn play_next(&mut self, balancer: &Server) -> String {
        let mut segment = None;
        for _ in 0..60 {
            segment = self
                .listed(balancer)
                .await
                .into_iter()
                .rev()
                .find(|s| !self.seen.contains(s));
            if segment.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let segment = segment.expect("a new segment is listed");
        let path = format!("{}{}/{segment}", self.base, self.rendition);
        let (status, body, _) = through(balancer, reqwest::Method::GET, &path, None).await;
        match status {
            200 => {}
            402 => {
                let problem: Value = serde_json::from_slice(&body).expect("problem");
                let required: u128 = problem["required_amount"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .expect("required amount");
                assert!(
                    required > self.paid && required - self.paid <= SEGMENT_PRICE,
                    "{path}: paid {}, asked for {required}",
                    self.paid
                );
                let voucher = voucher_body(&self.signer, self.channel, required);
                let vouchers = format!("/api/v1/channels/{:#x}/vouchers", self.channel);
                let (status, body, _) =
                    through(balancer, reqwest::Method::POST, &vouchers, Some(&voucher)).await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                self.paid = required;
                let (status, _, _) = through(balancer, reqwest::Method::GET, &path, None).await;
                assert_eq!(status, 200, "{path} once paid");
            }
            other => panic!("{path}: {other} {}", String::from_utf8_lossy(&body)),
        }
        self.seen.insert(segment.clone());
        segment
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_behind_nginx_lose_a_node_and_the_publishers_node() {
    let Some((database, nats, s3)) = services().await else {
        return;
    };
    if !nginx_installed() {
        return;
    }
    let files = tempfile::tempdir().expect("tempdir");
    // Every node answers for the balancer's address (sign-in names it).
    let port = common::free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let mut args = node_args(&database, &nats, &s3.endpoint);
    args.extend([
        "--ingest-resume-after-ms",
        "1500",
        "--public-url",
        &public_url,
    ]);
    let first_dir = files.path().join("node-1");
    std::fs::create_dir_all(&first_dir).expect("node dir");
    let mut first = Server::start_in_env(&first_dir, &args, &AWS).await;
    let mut second = Server::start_with_env(&args, &AWS).await;
    let third = Server::start_with_env(&args, &AWS).await;
    let nginx_dir = files.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).expect("nginx dir");
    let lb = balancer(&[&first, &second, &third], &nginx_dir, port).await;
    let name = async |node: &Server| {
        let response = reqwest::get(node.url("/healthz")).await.expect("healthz");
        response.headers()["x-streamweave-node"]
            .to_str()
            .expect("name")
            .to_string()
    };
    let names = [name(&first).await, name(&second).await, name(&third).await];

    // A paid stream published to node 1: 1000 base units a second.
    let creator = SigningKey::from_bytes(&[0x82; 32]).expect("key");
    let creator_token = sign_in(&lb, &creator).await;
    let (status, stream) = post(
        &lb,
        "/api/v1/streams",
        &creator_token,
        json!({"title": "three nodes", "access": "per_second",
               "price": {"amount": "60000", "period_seconds": 60}}),
    )
    .await;
    assert_eq!(status, 201, "{stream}");
    let stream_id = stream["id"].as_str().expect("id").to_string();
    let key = stream["stream_key"].as_str().expect("key").to_string();
    let mut publisher = publish(
        &format!("{}/live/{key}", first.rtmp),
        "320x180",
        120,
        common::H264,
    );
    lb.wait_for_state(&stream_id, "live", Duration::from_secs(30))
        .await;

    // Viewers through the balancer until one plays on each node.
    let mut viewers: Vec<Option<Viewer>> = vec![None, None, None];
    for attempt in 0u8..40 {
        if viewers.iter().all(Option::is_some) {
            break;
        }
        let payer = SigningKey::from_bytes(&[0x90 + attempt; 32]).expect("key");
        let signer = SigningKey::from_bytes(&[0x40 + attempt; 32]).expect("key");
        let (token, channel) = funded_channel(
            &lb,
            &payer,
            &creator,
            &signer,
            B256::repeat_byte(attempt),
            1_000_000,
        )
        .await;
        let base = paid_session(&lb, &stream_id, &token, channel).await;
        let mut variant = None;
        let mut node = String::new();
        for _ in 0..80 {
            let (status, master, served_by) = through(
                &lb,
                reqwest::Method::GET,
                &format!("{base}master.m3u8"),
                None,
            )
            .await;
            node = served_by;
            variant = (status == 200)
                .then(|| {
                    String::from_utf8_lossy(&master)
                        .lines()
                        .find(|l| l.ends_with(".m3u8"))
                        .map(|l| l.trim_end_matches("/index.m3u8").to_string())
                })
                .flatten();
            if variant.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let index = names.iter().position(|n| *n == node).expect("a known node");
        if viewers[index].is_none() {
            viewers[index] = Some(Viewer {
                token,
                signer,
                channel,
                base,
                rendition: variant.expect("a rendition"),
                node,
                paid: 0,
                seen: Default::default(),
            });
        }
    }
    let mut viewers: Vec<Viewer> = viewers
        .into_iter()
        .map(|v| v.expect("a session on every node"))
        .collect();
    for viewer in &mut viewers {
        viewer.play_next(&lb).await;
        viewer.play_next(&lb).await;
    }

    // Chat readers on nodes 1 and 3.
    let chat = |http: &str| {
        format!(
            "{}/api/v1/streams/{stream_id}/chat",
            http.replacen("http", "ws", 1)
        )
    };
    let mut readers = Vec::new();
    for node in [&first, &third] {
        let (mut reader, _) = tokio_tungstenite::connect_async(chat(&node.http))
            .await
            .expect("join");
        next_of(&mut reader, "history").await;
        readers.push(reader);
    }

    // Node 2 dies. Every viewer goes on, the one it served on another node.
    second.kill();
    for viewer in &mut viewers {
        viewer.play_next(&lb).await;
        viewer.play_next(&lb).await;
    }
    let (_, _, moved) = through(
        &lb,
        reqwest::Method::GET,
        &format!("{}master.m3u8", viewers[1].base),
        None,
    )
    .await;
    assert_ne!(moved, viewers[1].node, "node 2's session moved");
    // Chat posted through the balancer reaches both remaining nodes.
    let _poster = chat_post(&chat(&lb.http), &creator_token, "still here").await;
    for reader in &mut readers {
        let seen = next_of(reader, "message").await;
        assert_eq!(seen["message"]["text"], "still here");
    }

    // Node 1, the publisher's, dies; the publisher reconnects to node 3
    // and the stream goes on after a discontinuity.
    first.kill();
    let _ = common::wait_child(&mut publisher, Duration::from_secs(20));
    let mut continued = None;
    for _ in 0..30 {
        let mut attempt = publish(
            &format!("{}/live/{key}", third.rtmp),
            "320x180",
            120,
            common::H264,
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        if attempt.try_wait().expect("try_wait").is_none() {
            continued = Some(attempt);
            break;
        }
    }
    let mut publisher = continued.expect("node 3 takes the publisher");
    let public = format!("/live/{stream_id}/{}/index.m3u8", viewers[2].rendition);
    let mut after_restart = None;
    for _ in 0..80 {
        let (status, playlist, _) = through(&lb, reqwest::Method::GET, &public, None).await;
        assert_eq!(status, 200);
        let playlist = String::from_utf8_lossy(&playlist).to_string();
        if let Some(at) = playlist.find("#EXT-X-DISCONTINUITY\n")
            && playlist[at..].contains(".m4s")
        {
            after_restart = Some(playlist);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after_restart = after_restart.expect("the playlist marks the restart");
    let init = after_restart
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\"init-"))
        .map(|l| format!("init-{}", l.trim_end_matches('"')))
        .unwrap_or_else(|| panic!("the restart's init file: {after_restart}"));
    let (status, init_bytes, _) = through(
        &lb,
        reqwest::Method::GET,
        &format!("/live/{stream_id}/{}/{init}", viewers[2].rendition),
        None,
    )
    .await;
    assert_eq!(status, 200, "{init}");
    assert_eq!(&init_bytes[4..8], b"ftyp", "{init} is an init file");
    // Viewers pay on past the restart, nothing twice.
    for viewer in viewers.iter_mut().skip(1) {
        viewer.play_next(&lb).await;
    }
    // Node 1 comes back: the stream is node 3's now and stays live.
    let first = Server::start_in_env(&first_dir, &args, &AWS).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, seen) = get(&lb, &format!("/api/v1/streams/{stream_id}"), None).await;
    assert_eq!(seen["state"], "live", "{seen}");
    viewers[2].play_next(&lb).await;

    // The publisher stops: the stream ends; the recording lists the restart once.
    let _ = publisher.kill();
    let _ = publisher.wait();
    lb.wait_for_state(&stream_id, "ended", Duration::from_secs(30))
        .await;
    let (status, recording, _) = through(&lb, reqwest::Method::GET, &public, None).await;
    assert_eq!(status, 200);
    let recording = String::from_utf8_lossy(&recording).to_string();
    assert_eq!(
        recording.matches("#EXT-X-DISCONTINUITY\n").count(),
        1,
        "{recording}"
    );
    assert!(recording.trim_end().ends_with("#EXT-X-ENDLIST"));
    // Every viewer's channel redeemed exactly what it last paid.
    for viewer in &viewers {
        let (status, seen) = get(
            &first,
            &format!("/api/v1/channels/{:#x}", viewer.channel),
            Some(&viewer.token),
        )
        .await;
        assert_eq!(status, 200, "{seen}");
        assert_eq!(seen["redeemed"], viewer.paid.to_string().as_str(), "{seen}");
    }
    database.assert_ledger_audits(&third.data_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_members_sessions_are_counted_across_nodes() {
    let Some((database, nats, s3)) = services().await else {
        return;
    };
    let args = node_args(&database, &nats, &s3.endpoint);
    let a = Server::start_with_env(&args, &AWS).await;
    let b = Server::start_with_env(&args, &AWS).await;
    let creator = SigningKey::from_bytes(&[0xa2; 32]).expect("key");
    let creator_token = sign_in(&a, &creator).await;
    let member = common::wallet(&b, 0xa3).await;
    common::fund(&b, &member, 1_000_000).await;
    // One stream at a time, up to 360p.
    let (status, tier) = post(
        &a,
        "/api/v1/admin/tiers",
        common::ADMIN_TOKEN,
        json!({"name": "One", "price": "1000", "period_seconds": 3600,
               "max_height": 360, "max_streams": 1}),
    )
    .await;
    assert_eq!(status, 201, "{tier}");
    let (status, joined) = post(
        &b,
        "/api/v1/memberships",
        &member.token,
        json!({"tier_id": tier["id"]}),
    )
    .await;
    assert_eq!(status, 201, "{joined}");
    let members = json!({"title": "members", "access": "members", "tiers": ["platform"]});
    let (first_id, mut ffmpeg) = live_on(&a, &creator_token, members.clone(), 30).await;
    let (status, second) = post(&a, "/api/v1/streams", &creator_token, members).await;
    assert_eq!(status, 201, "{second}");
    let second_id = second["id"].as_str().expect("id");
    let start = |node: &Server, stream: &str| {
        let path = format!("/api/v1/streams/{stream}/sessions");
        let token = member.token.clone();
        let url = node.url(&path);
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .expect("start");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };

    // Started on A, the limit holds on B, which lists A's session.
    let (status, session) = start(&a, &first_id).await;
    assert_eq!(status, 201, "{session}");
    let (status, refused) = start(&b, second_id).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["type"], "/problems/too-many-streams");
    assert_eq!(refused["active_sessions"][0]["id"], session["id"]);
    // B serves A's session within the tier's quality.
    let playback = session["playback_url"].as_str().expect("url");
    let mut master = String::new();
    for _ in 0..80 {
        let response = reqwest::get(b.url(playback)).await.expect("master");
        if response.status() == 200 {
            master = response.text().await.expect("text");
            if master.contains(".m3u8") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(master.contains("180p/index.m3u8"), "{master}");
    // Ended on B: room for one more, and only one of racing starts on
    // both nodes gets it.
    let (status, body) = send(
        reqwest::Method::DELETE,
        &b,
        &format!("/api/v1/sessions/{}", session["id"].as_str().expect("id")),
        Some(&member.token),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let racing = futures_util::future::join_all(
        (0..6).map(|i| start(if i % 2 == 0 { &a } else { &b }, second_id)),
    )
    .await;
    let statuses: Vec<u16> = racing.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{racing:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{racing:?}"
    );
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    database.assert_ledger_audits(&a.data_dir);
}

/// `streamweave_vouchers_total{outcome="accepted"}` on `node`.
async fn vouchers_accepted(node: &Server) -> u64 {
    common::metrics_text(node)
        .await
        .lines()
        .find_map(|line| line.strip_prefix("streamweave_vouchers_total{outcome=\"accepted\"} "))
        .map_or(0, |count| count.trim().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crowd_of_paying_viewers_spread_over_two_nodes() {
    let Some((database, nats, s3)) = services().await else {
        return;
    };
    let args = node_args(&database, &nats, &s3.endpoint);
    let a = Server::start_with_env(&args, &AWS).await;
    let b = Server::start_with_env(&args, &AWS).await;
    let creator = SigningKey::from_bytes(&[0x71; 32]).expect("key");
    let token = sign_in(&a, &creator).await;
    let priced = json!({
        "title": "paid, on two nodes",
        "access": "per_second",
        "price": {"amount": "1000", "period_seconds": 1},
    });
    let (stream_id, mut ffmpeg) = live_on(&a, &token, priced, 30).await;
    // Viewers 0, 2, 4 watch through A (where the stream is ingested), 1,
    // 3, 5 through B (which learns its segments over NATS and reads their
    // blocks from the bucket); each pays the node it watches through.
    let servers = format!("{},{}", a.http, b.http);
    let report = common::run_json(&[
        "bench",
        "viewers",
        "--server",
        &servers,
        "--stream",
        &stream_id,
        "--viewers",
        "6",
        "--seconds",
        "8",
        "--ramp-seconds",
        "2",
        "--deposit",
        "1000000",
    ])
    .await;
    assert_eq!(report["viewers_watching"], 6, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        report["segments"]["count"].as_u64().expect("count") >= 6,
        "{report}"
    );
    let (on_a, on_b) = (vouchers_accepted(&a).await, vouchers_accepted(&b).await);
    assert!(on_a >= 3 && on_b >= 3, "vouchers on A {on_a}, on B {on_b}");
    // Every accepted voucher's wait is timed in each of its stages.
    let metrics = common::metrics_text(&a).await;
    for stage in ["lookup", "recovery", "engine"] {
        let counted = metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(&format!(
                    "streamweave_voucher_stage_duration_seconds_count{{stage=\"{stage}\"}} "
                ))
            })
            .map(|count| count.trim().parse::<u64>().expect("a count"));
        assert_eq!(counted, Some(on_a), "{stage} on A");
    }
    ffmpeg.kill().ok();
    ffmpeg.wait().ok();
    database.assert_ledger_audits(&a.data_dir);
}
