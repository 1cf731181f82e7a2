//! Live reactions against the real binary: a signed-in viewer's emoji from
//! the fixed set reaches everyone in the room with the stream's media time;
//! anything else, a stream not live, a muted viewer and a sixth reaction in
//! ten seconds are refused with clear problems.

mod common;

use std::time::Duration;

use common::{H264, Server, next_event, publish, sign_in};
use serde_json::{Value, json};
use streamweave_ledger::SigningKey;

async fn react(server: &Server, stream: &str, token: Option<&str>, emoji: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(server.url(&format!("/api/v1/streams/{stream}/reactions")))
        .json(&json!({ "emoji": emoji }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn reactions_reach_the_room_with_their_media_time() {
    let _turn = common::one_at_a_time().await;
    let server = Server::start(&[]).await;
    let creator = SigningKey::from_bytes(&[0xa1; 32]).unwrap();
    let viewer = SigningKey::from_bytes(&[0xa2; 32]).unwrap();
    let creator_token = sign_in(&server, &creator).await;
    let viewer_token = sign_in(&server, &viewer).await;
    let stream: Value = reqwest::Client::new()
        .post(server.url("/api/v1/streams"))
        .bearer_auth(&creator_token)
        .json(&json!({"title": "reactions"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = stream["id"].as_str().unwrap().to_string();

    // Not live yet: refused.
    let (status, body) = react(&server, &id, Some(&viewer_token), "🔥").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(common::problem_type(&body), "/problems/stream-not-live");

    let mut ffmpeg = publish(
        &format!(
            "{}/live/{}",
            server.rtmp,
            stream["stream_key"].as_str().unwrap()
        ),
        "426x240",
        30,
        H264,
    );
    server
        .wait_for_state(&id, "live", Duration::from_secs(30))
        .await;
    // Some media first, so the live edge is past zero.
    common::eventually("a few segments", async || {
        let playlist = reqwest::get(server.url(&format!("/live/{id}/240p/index.m3u8")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        playlist.matches("#EXTINF").count() >= 2
    })
    .await;

    let ws = server.http.replacen("http", "ws", 1);
    let (mut room, _) = tokio_tungstenite::connect_async(format!("{ws}/api/v1/streams/{id}/chat"))
        .await
        .expect("join");
    assert_eq!(next_event(&mut room).await["type"], "history");

    let (status, sent) = react(&server, &id, Some(&viewer_token), "🔥").await;
    assert_eq!(status, 201, "{sent}");
    let media_time_ms = sent["media_time_ms"].as_u64().unwrap();
    assert!(media_time_ms >= 3_000, "{sent}");
    let seen = next_event(&mut room).await;
    assert_eq!(seen["type"], "reaction");
    assert_eq!(seen["emoji"], "🔥");
    assert_eq!(seen["author"], format!("{:#x}", viewer.address()));
    assert_eq!(seen["media_time_ms"], media_time_ms);

    // Outside the set, or anonymous: refused.
    for bad in ["fire", "🔥🔥", "<script>", ""] {
        let (status, body) = react(&server, &id, Some(&viewer_token), bad).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert_eq!(common::problem_type(&body), "/problems/reaction-unknown");
    }
    let (status, _) = react(&server, &id, None, "👏").await;
    assert_eq!(status, 401);

    // Five in ten seconds, then 429 with how long to wait.
    for _ in 0..4 {
        let (status, body) = react(&server, &id, Some(&viewer_token), "👏").await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = react(&server, &id, Some(&viewer_token), "👏").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(common::problem_type(&body), "/problems/reactions-too-fast");
    assert!(body["retry_after_ms"].as_i64().unwrap() > 0, "{body}");
    // Another viewer has a window of their own; a muted one is refused.
    let other = SigningKey::from_bytes(&[0xa3; 32]).unwrap();
    let other_token = sign_in(&server, &other).await;
    let (status, _) = react(&server, &id, Some(&other_token), "🎉").await;
    assert_eq!(status, 201);
    let muted = reqwest::Client::new()
        .put(server.url(&format!(
            "/api/v1/streams/{id}/chat/mutes/{:#x}",
            other.address()
        )))
        .bearer_auth(&creator_token)
        .send()
        .await
        .unwrap();
    assert!(muted.status().is_success(), "{}", muted.status());
    let (status, body) = react(&server, &id, Some(&other_token), "🎉").await;
    assert_eq!(status, 403, "{body}");
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
}
