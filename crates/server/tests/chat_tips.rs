//! Discovery filters, chat rooms and tips against the real binary: search by
//! title, category and tag; a chat room over WebSocket (history for late
//! joiners, one message a second, mutes and deletions by the creator only);
//! tips split exactly by the creator's policy and shown in the room.

mod common;

use std::time::Duration;

use common::{Server, Socket, TestDatabase, next_event, sign_in};
use futures_util::SinkExt;
use serde_json::{Value, json};
use streamweave_ledger::{RevenuePolicy, SigningKey};
use tokio_tungstenite::tungstenite::Message;

async fn send(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .expect("send");
}

async fn post(client: &reqwest::Client, url: String, token: &str, body: Value) -> (u16, Value) {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn discovery_chat_and_tips() {
    scenario(&TestDatabase::Sqlite).await;
}

/// The same with all of the node's state on PostgreSQL.
#[tokio::test]
async fn the_same_with_all_state_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    scenario(&database).await;
    database.drop_schema().await;
}

async fn scenario(database: &TestDatabase) {
    let server = Server::start(&database.args(&["--dev"])).await;
    let client = reqwest::Client::new();
    let creator = SigningKey::from_bytes(&[0x81; 32]).expect("key");
    let viewer = SigningKey::from_bytes(&[0x82; 32]).expect("key");
    let collaborator = SigningKey::from_bytes(&[0x83; 32]).expect("key");
    let creator_token = sign_in(&server, &creator).await;
    let viewer_token = sign_in(&server, &viewer).await;
    let creator_address = format!("{:#x}", creator.address());
    let viewer_address = format!("{:#x}", viewer.address());

    // Streams with details; discovery narrows by search, category and tag.
    let (status, music) = post(
        &client,
        server.url("/api/v1/streams"),
        &creator_token,
        json!({"title": "Late Night Jazz", "description": "Standards.\nLive.", "category": "Music",
               "tags": ["jazz", "Piano", "jazz"], "access": "per_second",
               "price": {"amount": "60000", "period_seconds": 60}}),
    )
    .await;
    assert_eq!(status, 201, "{music}");
    assert_eq!(music["category"], "music");
    assert_eq!(music["tags"], json!(["jazz", "piano"]));
    assert_eq!(music["description"], "Standards.\nLive.");
    let (status, _) = post(
        &client,
        server.url("/api/v1/streams"),
        &creator_token,
        json!({"title": "Speedrun", "category": "gaming", "tags": ["retro"]}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, bad) = post(
        &client,
        server.url("/api/v1/streams"),
        &creator_token,
        json!({"title": "x", "tags": ["no spaces allowed"]}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    let titles = |list: Value| -> Vec<String> {
        list.as_array()
            .expect("list")
            .iter()
            .map(|s| s["title"].as_str().expect("title").to_string())
            .collect()
    };
    assert_eq!(
        titles(server.get_json("/api/v1/streams?q=JAZZ").await),
        ["Late Night Jazz"]
    );
    assert_eq!(
        titles(server.get_json("/api/v1/streams?category=gaming").await),
        ["Speedrun"]
    );
    assert_eq!(
        titles(server.get_json("/api/v1/streams?tag=piano").await),
        ["Late Night Jazz"]
    );
    assert!(
        titles(server.get_json("/api/v1/streams?tag=pian").await).is_empty(),
        "a tag matches whole"
    );
    assert_eq!(
        titles(
            server
                .get_json(&format!("/api/v1/streams?owner={creator_address}"))
                .await
        )
        .len(),
        2
    );
    assert_eq!(
        titles(
            server
                .get_json(&format!("/api/v1/streams?q={creator_address}"))
                .await
        )
        .len(),
        2,
        "search by creator address"
    );
    assert_eq!(
        titles(server.get_json("/api/v1/streams?access=per_second").await),
        ["Late Night Jazz"]
    );
    assert!(
        titles(server.get_json("/api/v1/streams?duration=short").await).is_empty(),
        "nothing has a length before it is played"
    );
    let listed = server.get_json("/api/v1/streams?sort=most_watched").await;
    assert_eq!(listed[0]["views"], 0, "{listed}");
    for bad in ["sort=loudest", "access=everyone", "duration=epic"] {
        let response = client
            .get(server.url(&format!("/api/v1/streams?{bad}")))
            .send()
            .await
            .expect("list");
        assert_eq!(response.status(), 400, "{bad}");
    }
    let stream_id = music["id"].as_str().expect("id").to_string();

    // Chat: a reader joins, a signed-in account posts over the socket.
    let ws_base = server.http.replacen("http", "ws", 1);
    let chat_url = format!("{ws_base}/api/v1/streams/{stream_id}/chat");
    let (mut reader, _) = tokio_tungstenite::connect_async(&chat_url)
        .await
        .expect("join");
    assert_eq!(
        next_event(&mut reader).await,
        json!({"type": "history", "messages": []})
    );
    let (mut poster, _) = tokio_tungstenite::connect_async(&chat_url)
        .await
        .expect("join");
    next_event(&mut poster).await;
    send(&mut poster, json!({"type": "post", "text": "hi"})).await;
    assert_eq!(next_event(&mut poster).await["detail"], "sign in to post");
    send(&mut poster, json!({"type": "auth", "token": viewer_token})).await;
    assert_eq!(
        next_event(&mut poster).await,
        json!({"type": "signed_in", "address": viewer_address})
    );
    send(&mut poster, json!({"type": "post", "text": "<b>hello</b>"})).await;
    let seen = next_event(&mut reader).await;
    assert_eq!(seen["type"], "message");
    assert_eq!(seen["message"]["text"], "<b>hello</b>", "kept as text");
    assert_eq!(seen["message"]["author"], viewer_address);
    let first_id = seen["message"]["id"].as_str().expect("id").to_string();
    // One message a second.
    let (status, refused) = post(
        &client,
        server.url(&format!("/api/v1/streams/{stream_id}/chat/messages")),
        &viewer_token,
        json!({"text": "again"}),
    )
    .await;
    assert_eq!(status, 429, "{refused}");
    assert!(refused["retry_after_ms"].as_i64().expect("wait") > 0);
    let (status, _) = post(
        &client,
        server.url(&format!("/api/v1/streams/{stream_id}/chat/messages")),
        &viewer_token,
        json!({"text": "x".repeat(501)}),
    )
    .await;
    assert_eq!(status, 400, "over 500 characters");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, second) = post(
        &client,
        server.url(&format!("/api/v1/streams/{stream_id}/chat/messages")),
        &viewer_token,
        json!({"text": "second"}),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(next_event(&mut reader).await["message"]["text"], "second");

    // A late joiner gets the history, oldest first.
    let (mut late, _) = tokio_tungstenite::connect_async(&chat_url)
        .await
        .expect("join");
    let history = next_event(&mut late).await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, ["<b>hello</b>", "second"]);

    // Only the creator moderates.
    let delete_url = server.url(&format!(
        "/api/v1/streams/{stream_id}/chat/messages/{first_id}"
    ));
    let status = client
        .delete(&delete_url)
        .bearer_auth(&viewer_token)
        .send()
        .await
        .expect("delete")
        .status();
    assert_eq!(status, 403);
    let status = client
        .delete(&delete_url)
        .bearer_auth(&creator_token)
        .send()
        .await
        .expect("delete")
        .status();
    assert_eq!(status, 204);
    assert_eq!(
        next_event(&mut reader).await,
        json!({"type": "deleted", "id": first_id})
    );

    // Tips: split by the creator's policy, fee included, and shown in the room.
    let status = client
        .put(server.url("/api/v1/accounts/me/revenue-policy"))
        .bearer_auth(&creator_token)
        .json(&json!({"recipients": [
            {"address": creator_address, "share": 2},
            {"address": format!("{:#x}", collaborator.address()), "share": 1}]}))
        .send()
        .await
        .expect("policy")
        .status();
    assert_eq!(status, 200);
    let tip_url = server.url(&format!("/api/v1/streams/{stream_id}/tips"));
    let (status, poor) = post(
        &client,
        tip_url.clone(),
        &viewer_token,
        json!({"amount": "1000"}),
    )
    .await;
    assert_eq!(status, 409, "no balance yet: {poor}");
    let (status, _) = post(
        &client,
        server.url("/api/v1/dev/faucet"),
        &viewer_token,
        json!({"address": viewer_address, "amount": "5000000"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, tip) = post(
        &client,
        tip_url.clone(),
        &viewer_token,
        json!({"amount": "1000", "message": "great set", "id": "tip-1"}),
    )
    .await;
    assert_eq!(status, 201, "{tip}");
    assert_eq!(tip["fee"], "30");
    assert_eq!(tip["recipients"], json!(["646", "323"]));
    let shown = next_event(&mut reader).await;
    assert_eq!(shown["message"]["tip"], "1000");
    assert_eq!(shown["message"]["text"], "great set");
    // The same id pays once.
    let (status, repeat) = post(
        &client,
        tip_url.clone(),
        &viewer_token,
        json!({"amount": "1000", "id": "tip-1"}),
    )
    .await;
    assert_eq!(status, 201);
    assert!(repeat["message"].is_null());
    let policy = RevenuePolicy::sole(creator.address(), 300);
    assert_eq!(policy.fee(streamweave_ledger::Amount(1000)).0, 30);
    // 970 after the fee: floor(970*2/3) = 646 and floor(970/3) = 323, and the
    // leftover unit goes to the first recipient.
    assert_eq!(
        server
            .get_json_as(
                &format!("/api/v1/accounts/{creator_address}/balances"),
                &creator_token
            )
            .await["earned"],
        "647"
    );
    assert_eq!(
        server
            .get_json_as(
                &format!("/api/v1/accounts/{viewer_address}/balances"),
                &viewer_token
            )
            .await["available"],
        "4999000"
    );
    let (status, _) = post(
        &client,
        tip_url.clone(),
        &creator_token,
        json!({"amount": "1"}),
    )
    .await;
    assert_eq!(status, 400, "no tipping yourself");
    let stats = server
        .get_json_as(
            &format!("/api/v1/streams/{stream_id}/stats"),
            &creator_token,
        )
        .await;
    assert_eq!(stats["tips"], 1, "the repeated tip counts once");
    assert_eq!(stats["tips_gross"], "1000");
    assert_eq!(
        stats["tips_net"], "647",
        "the creator's share with the leftover unit"
    );

    // Muting: the account's messages go, and it cannot post.
    let status = client
        .put(server.url(&format!(
            "/api/v1/streams/{stream_id}/chat/mutes/{viewer_address}"
        )))
        .bearer_auth(&creator_token)
        .send()
        .await
        .expect("mute")
        .status();
    assert_eq!(status, 204);
    assert_eq!(
        next_event(&mut reader).await,
        json!({"type": "muted", "address": viewer_address})
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(&mut poster, json!({"type": "post", "text": "still here?"})).await;
    loop {
        let event = next_event(&mut poster).await;
        if event["type"] == "error" {
            assert_eq!(event["detail"], "the creator muted you in this room");
            break;
        }
    }
    let (mut after, _) = tokio_tungstenite::connect_async(&chat_url)
        .await
        .expect("join");
    assert_eq!(
        next_event(&mut after).await,
        json!({"type": "history", "messages": []}),
        "the muted account's messages are gone, its tip included"
    );

    // The ledger stays balanced through all of it.
    database.assert_ledger_audits(&server.data_dir);
}
