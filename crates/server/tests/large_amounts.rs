//! Amounts over the whole u128 range through the API: deposits of 2^127 and
//! 2^128-1 and channels that large work; what would overflow a balance or a
//! channel's deposit is refused with 409, never a server error.

mod common;

use common::{ADMIN_TOKEN, Server, sign_in};
use serde_json::{Value, json};
use streamweave_ledger::SigningKey;

const HALF: u128 = 1 << 127;
const MAX: u128 = u128::MAX;

async fn post(server: &Server, path: &str, token: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("text");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn available(server: &Server, address: &str, token: &str) -> String {
    server
        .get_json_as(&format!("/api/v1/accounts/{address}/balances"), token)
        .await["available"]
        .as_str()
        .expect("available")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_amount_range_and_no_overflow() {
    let server = Server::start(&[]).await;
    let alice = SigningKey::from_bytes(&[0x91; 32]).expect("key");
    let bob = SigningKey::from_bytes(&[0x92; 32]).expect("key");
    let session = SigningKey::from_bytes(&[0x93; 32]).expect("key");
    let alice_address = format!("{:#x}", alice.address());
    let bob_address = format!("{:#x}", bob.address());
    let alice_token = sign_in(&server, &alice).await;
    let bob_token = sign_in(&server, &bob).await;
    let deposit = |address: &str, amount: u128, id: &str| json!({"address": address, "amount": amount.to_string(), "id": id});

    // 2^127 in, and out again.
    let (status, body) = post(
        &server,
        "/api/v1/admin/deposits",
        ADMIN_TOKEN,
        deposit(&alice_address, HALF, "half"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        available(&server, &alice_address, &alice_token).await,
        HALF.to_string()
    );
    let (status, body) = post(
        &server,
        "/api/v1/admin/withdrawals",
        ADMIN_TOKEN,
        deposit(&alice_address, HALF, "half-out"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(available(&server, &alice_address, &alice_token).await, "0");

    // 2^128-1 in: the largest balance there is.
    let (status, body) = post(
        &server,
        "/api/v1/admin/deposits",
        ADMIN_TOKEN,
        deposit(&bob_address, MAX, "max"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        available(&server, &bob_address, &bob_token).await,
        MAX.to_string()
    );

    // One more unit anywhere would overflow a balance: 409, nothing moves.
    for (address, id) in [(&bob_address, "over-bob"), (&alice_address, "over-alice")] {
        let (status, problem) = post(
            &server,
            "/api/v1/admin/deposits",
            ADMIN_TOKEN,
            deposit(address, 1, id),
        )
        .await;
        assert_eq!(status, 409, "{problem}");
        assert_eq!(problem["type"], "/problems/balance-overflow", "{problem}");
    }
    assert_eq!(
        available(&server, &bob_address, &bob_token).await,
        MAX.to_string()
    );
    assert_eq!(available(&server, &alice_address, &alice_token).await, "0");

    // A channel of 2^127, topped up to 2^128-1; beyond that, 409.
    let (status, channel) = post(&server, "/api/v1/channels", &bob_token, json!({
        "payee": alice_address, "deposit": HALF.to_string(), "signer": format!("{:#x}", session.address())
    }))
    .await;
    assert_eq!(status, 201, "{channel}");
    let id = channel["id"].as_str().expect("id").to_string();
    let top_up = format!("/api/v1/channels/{id}/topup");
    let (status, body) = post(
        &server,
        &top_up,
        &bob_token,
        json!({"amount": (HALF - 1).to_string()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deposit"], MAX.to_string(), "{body}");
    assert_eq!(available(&server, &bob_address, &bob_token).await, "0");
    let (status, problem) = post(&server, &top_up, &bob_token, json!({"amount": "1"})).await;
    assert_eq!(status, 409, "{problem}");
    let (status, problem) = post(
        &server,
        &top_up,
        &bob_token,
        json!({"amount": MAX.to_string()}),
    )
    .await;
    assert_eq!(status, 409, "{problem}");

    common::assert_ledger_audits(&server.data_dir);
}
