//! Operating a node: health and readiness, Prometheus metrics counting real
//! requests and vouchers, request ids, and a SIGTERM drain during which
//! `/readyz` says 503 while requests are still served.

mod common;

use std::time::{Duration, Instant};

use common::Server;

#[tokio::test(flavor = "multi_thread")]
async fn health_metrics_request_ids_and_a_drain() {
    let mut server = Server::start(&["--drain-grace-ms", "2000"]).await;
    let client = reqwest::Client::new();
    let health = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    // Every answer carries a request id; a caller's own is kept.
    let answer = client
        .get(server.url("/api/v1/streams"))
        .send()
        .await
        .expect("streams");
    let id = answer.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    assert!(!id.is_empty());
    let mine = client
        .get(server.url("/api/v1/streams"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("streams");
    assert_eq!(mine.headers()["x-request-id"], "trace-me-42");
    let _ = client
        .get(server.url("/no/such/route"))
        .send()
        .await
        .expect("404");

    let text = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "streamweave_http_requests_total{route=\"/api/v1/streams\",method=\"GET\",status=\"200\"} 2",
        "streamweave_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "streamweave_http_request_duration_seconds_count{route=\"/healthz\"} 1",
        "streamweave_live_streams 0",
        "streamweave_open_websockets 0",
        "# EOF",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }

    // SIGTERM: not ready at once, still serving during the grace, then gone.
    let pid = server.child.id().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(signalled.success());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let ready = client
            .get(server.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        if ready.status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200, "still serving while draining");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_over_an_address_limit_answer_429_with_retry_after() {
    let server = Server::start(&["--rate-limit-api", "6", "--rate-limit-writes", "3"]).await;
    let client = reqwest::Client::new();
    // Bursts of a fifth of a minute's allowance: the one read was the start-up
    // check (`/api/openapi.json`); the next within ten seconds is refused.
    let second = client
        .get(server.url("/api/v1/streams"))
        .send()
        .await
        .expect("read");
    assert_eq!(second.status(), 429);
    let wait: u64 = second.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=10).contains(&wait), "{wait}");
    let problem: serde_json::Value = second.json().await.expect("problem");
    assert_eq!(problem["type"], "/problems/too-many-requests");
    // Playback and health are another class, not limited here.
    for _ in 0..20 {
        let health = client
            .get(server.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(health.status(), 200);
    }
    // Writes have their own allowance.
    let write = client
        .post(server.url("/api/v1/auth/challenge"))
        .json(&serde_json::json!({"address": "0x00000000000000000000000000000000000000aa"}))
        .send()
        .await
        .expect("write");
    assert_eq!(write.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wallet_over_its_limit_answers_429_from_any_address() {
    // No per-address API limits here: the wallet's own (10 a minute, bursts
    // of 2) is what refuses.
    let server = Server::start(&[
        "--rate-limit-api",
        "0",
        "--rate-limit-writes",
        "0",
        "--rate-limit-wallet",
        "10",
    ])
    .await;
    let key = streamweave_ledger::SigningKey::from_bytes(&[0x5a; 32]).expect("key");
    let token = common::sign_in(&server, &key).await;
    let other = common::sign_in(
        &server,
        &streamweave_ledger::SigningKey::from_bytes(&[0x5b; 32]).expect("key"),
    )
    .await;
    let client = reqwest::Client::new();
    let me = |token: &str| {
        client
            .get(server.url("/api/v1/accounts/me/memberships"))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(me(&token).await.expect("read").status(), 200);
    }
    let refused = me(&token).await.expect("read");
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: serde_json::Value = refused.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("this wallet")),
        "{problem}"
    );
    // Another wallet from the same address is not affected.
    assert_eq!(me(&other).await.expect("read").status(), 200);
}
