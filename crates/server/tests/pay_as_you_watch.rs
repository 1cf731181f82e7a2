//! A priced stream through the real binary and ffmpeg: the gate answers 402
//! with the exact cumulative amount, a voucher for it opens the segment,
//! refetches are free, vouchers beyond the prepay window and sessions on
//! someone else's channel are refused, the cap stops a session, and the
//! creator's earnings are the split of what was paid, to the unit.

mod common;

use std::time::Duration;

use common::{H264, Server, TestDatabase, hex, publish, sign_in, wait_child};
use serde_json::{Value, json};
use streamweave_ledger::{Amount, PaymentDomain, Price, RevenuePolicy, SigningKey};

async fn send(
    method: reqwest::Method,
    server: &Server,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_pays_exactly_for_what_it_watches() {
    let _alone = common::one_at_a_time().await;
    scenario(&TestDatabase::Sqlite).await;
}

/// The same with all of the node's state on PostgreSQL.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_with_all_state_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let _alone = common::one_at_a_time().await;
    scenario(&database).await;
    database.drop_schema().await;
}

async fn scenario(database: &TestDatabase) {
    use reqwest::Method;
    let server = Server::start(&database.args(&["--dev"])).await;
    let creator = SigningKey::from_bytes(&[0x71; 32]).expect("key");
    let viewer = SigningKey::from_bytes(&[0x72; 32]).expect("key");
    let other = SigningKey::from_bytes(&[0x73; 32]).expect("key");
    let session_key = SigningKey::from_bytes(&[0x74; 32]).expect("key");
    let creator_token = sign_in(&server, &creator).await;
    let viewer_token = sign_in(&server, &viewer).await;
    let other_token = sign_in(&server, &other).await;

    // 1000 base units a second, first 2 s free.
    let (status, stream) = send(Method::POST, &server, "/api/v1/streams", Some(&creator_token), Some(json!({
        "title": "paid", "access": "per_second", "price": {"amount": "1000", "period_seconds": 1}, "preview_seconds": 2
    }))).await;
    assert_eq!(status, 201, "{stream}");
    let stream_id = stream["id"].as_str().expect("id").to_string();
    let key = stream["stream_key"].as_str().expect("key");
    let mut ffmpeg = publish(&format!("{}/live/{key}", server.rtmp), "640x360", 10, H264);
    assert!(wait_child(&mut ffmpeg, Duration::from_secs(60)));
    server
        .wait_for_state(&stream_id, "ended", Duration::from_secs(60))
        .await;

    // Without a session, segments of a paid stream answer 402.
    let (status, problem) = send(
        Method::GET,
        &server,
        &format!("/live/{stream_id}/360p/0.m4s"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (402, Some("/problems/session-required"))
    );
    let listed = server
        .get_json(&format!("/api/v1/streams/{stream_id}/segments"))
        .await;
    let first_cid = listed[0]["cid"].as_str().expect("cid");
    let (status, problem) = send(
        Method::GET,
        &server,
        &format!("/ipfs/{first_cid}"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (402, Some("/problems/session-required")),
        "a paid segment is not free by its CID either"
    );

    for key in [&viewer, &other] {
        let (status, _) = send(
            Method::POST,
            &server,
            "/api/v1/dev/faucet",
            None,
            Some(json!({"address": format!("{:#x}", key.address()), "amount": "1000000"})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, channel) = send(Method::POST, &server, "/api/v1/channels", Some(&viewer_token), Some(json!({
        "payee": format!("{:#x}", creator.address()), "deposit": "100000", "signer": format!("{:#x}", session_key.address())
    }))).await;
    assert_eq!(status, 201);
    let channel_id = channel["id"].as_str().expect("id").to_string();

    // Someone else cannot watch on this viewer's channel.
    let (status, _) = send(
        Method::POST,
        &server,
        &format!("/api/v1/streams/{stream_id}/sessions"),
        Some(&other_token),
        Some(json!({"channel_id": channel_id})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, session) = send(
        Method::POST,
        &server,
        &format!("/api/v1/streams/{stream_id}/sessions"),
        Some(&viewer_token),
        Some(json!({"channel_id": channel_id})),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    // Live feedback: anyone sees viewers; only the creator sees earnings.
    let ws_base = server.http.replace("http://", "ws://");
    let (mut creator_ws, _) = tokio_tungstenite::connect_async(format!(
        "{ws_base}/api/v1/streams/{stream_id}/events?token={creator_token}"
    ))
    .await
    .expect("creator websocket");
    let (mut public_ws, _) =
        tokio_tungstenite::connect_async(format!("{ws_base}/api/v1/streams/{stream_id}/events"))
            .await
            .expect("public websocket");
    let play = session["playback_url"]
        .as_str()
        .expect("url")
        .trim_end_matches("master.m3u8")
        .to_string();
    let (status, _) = send(
        Method::GET,
        &server,
        &format!("{play}master.m3u8"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "playlists are free");

    let segments = server
        .get_json(&format!("/api/v1/streams/{stream_id}/segments"))
        .await;
    let durations: Vec<u64> = segments
        .as_array()
        .expect("segments")
        .iter()
        .filter(|s| s["rendition"] == "360p")
        .map(|s| s["duration_ms"].as_u64().expect("ms"))
        .collect();
    assert!(durations.len() >= 4);
    let price = Price {
        amount: Amount(1000),
        period_seconds: 1,
    };
    let domain = PaymentDomain::EMBEDDED;
    let channel_b256 = channel_id.parse().expect("b256");
    let voucher = |amount: u128| json!({"amount": amount.to_string(), "signature": hex(&session_key.sign_digest(domain.voucher_digest(channel_b256, amount)))});
    let mut granted_ms = 0u64;
    let mut paid = 0u128;
    for (sequence, duration) in durations.iter().enumerate() {
        let path = format!("{play}360p/{sequence}.m4s");
        granted_ms += duration;
        let owed = price.owed(granted_ms.saturating_sub(2000)).expect("owed").0;
        let (status, problem) = send(Method::GET, &server, &path, None, None).await;
        if owed == paid {
            assert_eq!(status, 200, "segment {sequence} is inside the free preview");
            continue;
        }
        assert_eq!(status, 402, "segment {sequence}: {problem}");
        assert_eq!(problem["type"], "/problems/payment-required");
        assert_eq!(problem["channel_id"], channel_id);
        assert_eq!(
            problem["required_amount"],
            owed.to_string(),
            "segment {sequence}"
        );
        if sequence == 2 {
            // Far ahead of playback is refused.
            let (status, body) = send(
                Method::POST,
                &server,
                &format!("/api/v1/channels/{channel_id}/vouchers"),
                None,
                Some(voucher(owed + 50_000)),
            )
            .await;
            assert_eq!(
                (status, body["type"].as_str()),
                (409, Some("/problems/voucher-beyond-prepay-window"))
            );
        }
        let (status, body) = send(
            Method::POST,
            &server,
            &format!("/api/v1/channels/{channel_id}/vouchers"),
            None,
            Some(voucher(owed)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        paid = owed;
        let response = reqwest::get(server.url(&path)).await.expect("segment");
        assert_eq!(response.status(), 200);
        // Another rendition of the same moment, and a refetch, cost nothing.
        let (status, _) = send(
            Method::GET,
            &server,
            &format!("{play}audio/{sequence}.m4s"),
            None,
            None,
        )
        .await;
        assert_eq!(status, 200);
        let again = reqwest::get(server.url(&path)).await.expect("segment");
        assert_eq!(again.status(), 200);
        // The refetch is answered from memory (the bytes are cached now):
        // the same answer.
        let without_date = |response: &reqwest::Response| {
            let mut headers = response.headers().clone();
            headers.remove("date");
            headers
        };
        assert_eq!(without_date(&again), without_date(&response), "{path}");
    }

    let creator_events = read_events(&mut creator_ws).await;
    assert!(
        creator_events
            .iter()
            .any(|e| e["type"] == "viewers" && e["count"] == 1),
        "{creator_events:?}"
    );
    let earned_steps: u128 = creator_events
        .iter()
        .filter(|e| e["type"] == "earnings")
        .map(|e| {
            e["creator"]
                .as_str()
                .expect("creator")
                .parse::<u128>()
                .expect("number")
        })
        .sum();
    let public_events = read_events(&mut public_ws).await;
    assert!(
        public_events.iter().all(|e| e["type"] != "earnings"),
        "earnings are the creator's only"
    );
    assert!(
        public_events
            .iter()
            .any(|e| e["type"] == "state" && e["state"] == "ended")
    );

    // The ledger moved exactly the split of what was paid.
    let (_, channel) = send(
        Method::GET,
        &server,
        &format!("/api/v1/channels/{channel_id}"),
        Some(&viewer_token),
        None,
    )
    .await;
    assert_eq!(channel["redeemed"], paid.to_string());
    let split = RevenuePolicy::sole(creator.address(), 300).totals(Amount(paid));
    let (_, earned) = send(
        Method::GET,
        &server,
        &format!("/api/v1/accounts/{:#x}/balances", creator.address()),
        Some(&creator_token),
        None,
    )
    .await;
    assert_eq!(earned["earned"], split.recipients[0].to_string());
    assert_eq!(
        earned_steps, split.recipients[0].0,
        "the live feed adds up to the ledger"
    );
    assert_eq!(split.fee.0 + split.recipients[0].0, paid);

    // Watch statistics agree with the ledger, for the creator only.
    let (status, stats) = send(
        Method::GET,
        &server,
        &format!("/api/v1/streams/{stream_id}/stats"),
        Some(&creator_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["unique_viewers"], 1, "{stats}");
    assert_eq!(stats["sessions"], 1, "{stats}");
    assert_eq!(stats["viewers_now"], 1, "{stats}");
    assert_eq!(
        stats["paid_viewer_ms"].as_u64(),
        Some(granted_ms - 2000),
        "{stats}"
    );
    assert_eq!(stats["gross"], paid.to_string(), "{stats}");
    assert_eq!(stats["net"], split.recipients[0].to_string(), "{stats}");
    assert_eq!(stats["platform_fee"], split.fee.to_string(), "{stats}");
    let (status, _) = send(
        Method::GET,
        &server,
        &format!("/api/v1/streams/{stream_id}/stats"),
        Some(&viewer_token),
        None,
    )
    .await;
    assert_eq!(
        status, 404,
        "a viewer does not see the creator's statistics"
    );

    // A capped session stops at its cap with a distinct problem.
    let (status, capped) = send(
        Method::POST,
        &server,
        &format!("/api/v1/streams/{stream_id}/sessions"),
        Some(&viewer_token),
        Some(json!({"channel_id": channel_id, "max_spend": "1000"})),
    )
    .await;
    assert_eq!(status, 201);
    let capped_play = capped["playback_url"]
        .as_str()
        .expect("url")
        .trim_end_matches("master.m3u8")
        .to_string();
    let mut saw_cap = false;
    for sequence in 0..durations.len() {
        let (status, problem) = send(
            Method::GET,
            &server,
            &format!("{capped_play}360p/{sequence}.m4s"),
            None,
            None,
        )
        .await;
        if status == 402 && problem["type"] == "/problems/spending-cap-reached" {
            saw_cap = true;
            break;
        }
        if status == 402 {
            let required: u128 = problem["required_amount"]
                .as_str()
                .expect("amount")
                .parse()
                .expect("number");
            let (status, _) = send(
                Method::POST,
                &server,
                &format!("/api/v1/channels/{channel_id}/vouchers"),
                None,
                Some(voucher(required)),
            )
            .await;
            assert_eq!(status, 200);
        }
    }
    assert!(saw_cap, "the cap stopped the session");
    // The first session ended when the second started on the same channel.
    let (status, _) = send(
        Method::GET,
        &server,
        &format!("{play}master.m3u8"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);

    database.assert_ledger_audits(&server.data_dir);
}

/// Everything a stream's WebSocket has sent so far (waits briefly for stragglers).
async fn read_events(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Vec<Value> {
    use futures_util::StreamExt;
    let mut events = Vec::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(500), socket.next()).await
    {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            events.push(serde_json::from_str(&text).expect("event json"));
        }
    }
    events
}
