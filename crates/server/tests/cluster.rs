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
    let (mut poster, _) = tokio_tungstenite::connect_async(chat(a))
        .await
        .expect("join on A");
    next_of(&mut poster, "history").await;
    poster
        .send(Message::Text(
            json!({"type": "auth", "token": payer_token})
                .to_string()
                .into(),
        ))
        .await
        .expect("send");
    next_of(&mut poster, "signed_in").await;
    poster
        .send(Message::Text(
            json!({"type": "post", "text": "hello from A"})
                .to_string()
                .into(),
        ))
        .await
        .expect("send");
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
    let (status, session) = post(
        &c,
        &format!("/api/v1/streams/{stream_id}/sessions"),
        &payer_token,
        json!({"channel_id": format!("{channel_id:#x}")}),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let base = session["playback_url"]
        .as_str()
        .expect("url")
        .trim_end_matches("master.m3u8")
        .to_string();
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
