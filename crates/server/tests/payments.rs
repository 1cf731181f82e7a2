//! The payment protocol through the real binary: sign-in, faucet, revenue
//! policy, a channel spent by EIP-712 vouchers (valid, replayed, lower, above
//! deposit, foreign, malleable, malformed), close and settle, who may see
//! what, and the audit afterwards.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, hex, metrics_text, send, sign_in};
use serde_json::{Value, json};
use streamweave_ledger::{Address, B256, PaymentDomain, SigningKey, personal_sign_digest};

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_pays_exactly_and_the_audit_agrees() {
    scenario(None).await;
}

/// The same scenario with the ledger on PostgreSQL (in a schema of its own).
#[tokio::test(flavor = "multi_thread")]
async fn the_same_on_postgres() {
    let url = std::env::var("STREAMWEAVE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let admin = match sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
    {
        Ok(pool) => pool,
        Err(err) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL at {url} is required in CI: {err}"
            );
            eprintln!("skipping: PostgreSQL at {url} unreachable ({err})");
            return;
        }
    };
    let schema = format!("sw_it_{}", rand::random::<u32>());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("create schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    scenario(Some(format!(
        "{url}{separator}options=-c%20search_path%3D{schema}"
    )))
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .expect("drop schema");
}

async fn scenario(database: Option<String>) {
    use reqwest::Method;
    let mut args = vec!["--dev", "--settle-window-s", "1"];
    if let Some(url) = &database {
        args.extend(["--database", url.as_str()]);
    }
    let server = Server::start(&args).await;
    let payer = SigningKey::from_bytes(&[0x11; 32]).expect("key");
    let creator = SigningKey::from_bytes(&[0x22; 32]).expect("key");
    let collaborator = Address::repeat_byte(0x33);
    let session = SigningKey::from_bytes(&[0x44; 32]).expect("key");
    let stranger = SigningKey::from_bytes(&[0x55; 32]).expect("key");
    let payer_token = sign_in(&server, &payer).await;
    let creator_token = sign_in(&server, &creator).await;
    let stranger_token = sign_in(&server, &stranger).await;

    // A tampered sign-in is refused, and uses the challenge up: its own
    // message, signed, no longer signs in.
    let issued = challenge(&server, &payer).await;
    let tampered = issued.replace("Sign in", "Sign on");
    let (status, _) = login(&server, signed_login(&payer, &tampered)).await;
    assert_eq!(status, 401);
    let (status, refused) = login(&server, signed_login(&payer, &issued)).await;
    assert_eq!(status, 401);
    assert_eq!(refused["detail"], "unknown or already used nonce");
    // A good answer signs in once; sent again, it is refused.
    let issued = challenge(&server, &payer).await;
    let (status, signed_in) = login(&server, signed_login(&payer, &issued)).await;
    assert_eq!(status, 200, "{signed_in}");
    let (status, me) = send(
        Method::GET,
        &server,
        "/api/v1/accounts/me/revenue-policy",
        signed_in["token"].as_str(),
        None,
    )
    .await;
    assert_eq!(status, 200, "the token works: {me}");
    let (status, _) = login(&server, signed_login(&payer, &issued)).await;
    assert_eq!(status, 401, "a challenge signs in once");

    let (status, config) = send(Method::GET, &server, "/api/v1/payments/config", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(config["chain_id"], 31337);
    assert_eq!(config["platform_fee_bps"], 300);

    let (status, _) = send(
        Method::POST,
        &server,
        "/api/v1/dev/faucet",
        None,
        Some(json!({"address": format!("{:#x}", payer.address()), "amount": "10000000"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        Method::PUT,
        &server,
        "/api/v1/accounts/me/revenue-policy",
        Some(&creator_token),
        Some(json!({"recipients": [{"address": format!("{:#x}", creator.address()), "share": 2}, {"address": format!("{collaborator:#x}"), "share": 1}]})),
    )
    .await;
    assert_eq!(status, 200);

    let salt = B256::repeat_byte(9);
    let (status, channel) = send(
        Method::POST,
        &server,
        "/api/v1/channels",
        Some(&payer_token),
        Some(json!({"payee": format!("{:#x}", creator.address()), "deposit": "1000000", "signer": format!("{:#x}", session.address()), "salt": format!("{salt:#x}")})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    let id = channel["id"].as_str().expect("id").to_string();
    let expected_id = PaymentDomain::EMBEDDED.channel_id(
        payer.address(),
        creator.address(),
        Address::ZERO,
        salt,
        session.address(),
    );
    assert_eq!(
        id,
        format!("{expected_id:#x}"),
        "channel id as the spec derives it"
    );

    let voucher = |amount: u128, key: &SigningKey| {
        let signature =
            key.sign_digest(PaymentDomain::EMBEDDED.voucher_digest(expected_id, amount));
        json!({"amount": amount.to_string(), "signature": hex(&signature)})
    };
    let path = format!("/api/v1/channels/{id}/vouchers");
    let (status, body) = send(
        Method::POST,
        &server,
        &path,
        None,
        Some(voucher(1000, &session)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["new"], true);
    let (status, body) = send(
        Method::POST,
        &server,
        &path,
        None,
        Some(voucher(2501, &session)),
    )
    .await;
    assert_eq!(
        (status, body["channel"]["redeemed"].as_str()),
        (200, Some("2501"))
    );
    let (status, body) = send(
        Method::POST,
        &server,
        &path,
        None,
        Some(voucher(2501, &session)),
    )
    .await;
    assert_eq!(
        (status, body["new"].as_bool()),
        (200, Some(false)),
        "identical resubmission is idempotent"
    );
    // The playback loop answers a voucher sent as `application/json`
    // itself, and leaves another JSON type to the router: both answer the
    // same, in body and header lines.
    let answers = async |content_type: &str| {
        let response = reqwest::Client::new()
            .post(server.url(&path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(voucher(2501, &session).to_string())
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        let mut headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter(|(name, _)| *name != reqwest::header::DATE)
            .map(|(name, value)| (name.to_string(), format!("{value:?}")))
            .collect();
        headers.sort();
        let body = response.bytes().await.expect("body");
        (status, headers, body)
    };
    let looped = answers("application/json").await;
    let routed = answers("application/json; charset=utf-8").await;
    assert_eq!(looped, routed);
    assert!(
        looped
            .1
            .iter()
            .any(|(name, value)| name == "access-control-allow-origin" && value == "\"*\""),
        "{:?}",
        looped.1
    );
    // Counted alike: five vouchers accepted so far, either way.
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains("streamweave_http_requests_total{route=\"/api/v1/channels/{id}/vouchers\",method=\"POST\",status=\"200\"} 5"),
        "{metrics}"
    );
    for (amount, key, expected_status, problem) in [
        (2000u128, &session, 409, "/problems/voucher-not-increasing"),
        (
            2_000_000,
            &session,
            409,
            "/problems/voucher-exceeds-deposit",
        ),
        (3000, &stranger, 422, "/problems/voucher-wrong-signer"),
    ] {
        let (status, body) = send(
            Method::POST,
            &server,
            &path,
            None,
            Some(voucher(amount, key)),
        )
        .await;
        assert_eq!(
            (status, body["type"].as_str()),
            (expected_status, Some(problem)),
            "{amount}"
        );
    }
    let (status, body) = send(
        Method::POST,
        &server,
        &path,
        None,
        Some(json!({"amount": "3000", "signature": "0x1234"})),
    )
    .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (422, Some("/problems/signature-malformed"))
    );
    // Well-formed hex that no chain would take: a high s (EIP-2), a v
    // other than 0, 1, 27 or 28.
    let high_s = format!("0x{}{}1b", "11".repeat(32), "ff".repeat(32));
    let bad_v = format!("0x{}{}1d", "11".repeat(32), "22".repeat(32));
    for (signature, problem) in [
        (high_s, "/problems/signature-high-s"),
        (bad_v, "/problems/signature-bad-v"),
    ] {
        let (status, body) = send(
            Method::POST,
            &server,
            &path,
            None,
            Some(json!({"amount": "3000", "signature": signature})),
        )
        .await;
        assert_eq!((status, body["type"].as_str()), (422, Some(problem)));
    }
    let (status, _) = send(
        Method::POST,
        &server,
        &path,
        None,
        Some(json!({"amount": "-5", "signature": "0x"})),
    )
    .await;
    assert_eq!(status, 400);

    // Balances: 2501 gross; fee ceil(2501*0.03)=76; rest 2425 -> creator floor(2425*2/3)=1616, collaborator 808, 1 waiting.
    let (status, balances) = send(
        Method::GET,
        &server,
        &format!("/api/v1/accounts/{:#x}/balances", payer.address()),
        Some(&payer_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(balances["available"], "9000000");
    assert_eq!(balances["escrowed"], (1_000_000 - 2501).to_string());
    let (_, earned) = send(
        Method::GET,
        &server,
        &format!("/api/v1/accounts/{:#x}/balances", creator.address()),
        Some(&creator_token),
        None,
    )
    .await;
    assert_eq!(earned["earned"], "1616");

    // Who may see what.
    let (status, _) = send(
        Method::GET,
        &server,
        &format!("/api/v1/channels/{id}"),
        Some(&stranger_token),
        None,
    )
    .await;
    assert_eq!(status, 404, "another account's channel is invisible");
    let (status, _) = send(
        Method::GET,
        &server,
        &format!("/api/v1/accounts/{:#x}/balances", payer.address()),
        Some(&stranger_token),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        Method::POST,
        &server,
        "/api/v1/admin/deposits",
        Some(&stranger_token),
        Some(json!({"address": format!("{:#x}", stranger.address()), "amount": "5"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        Method::POST,
        &server,
        &format!("/api/v1/channels/{id}/topup"),
        Some(&stranger_token),
        Some(json!({"amount": "5"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(
        Method::POST,
        &server,
        &format!("/api/v1/channels/{id}/close"),
        Some(&stranger_token),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(
        Method::GET,
        &server,
        &format!("/api/v1/channels/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);

    // A creator's stream and its key belong to the creator alone.
    let (status, stream) = send(
        Method::POST,
        &server,
        "/api/v1/streams",
        Some(&creator_token),
        Some(json!({"title": "mine"})),
    )
    .await;
    assert_eq!(status, 201);
    let stream_id = stream["id"].as_str().expect("id");
    let (status, _) = send(
        Method::GET,
        &server,
        &format!("/api/v1/streams/{stream_id}/key"),
        Some(&stranger_token),
        None,
    )
    .await;
    assert_eq!(status, 404, "another creator's key is invisible");
    let (status, _) = send(
        Method::POST,
        &server,
        &format!("/api/v1/streams/{stream_id}/key/rotate"),
        Some(&stranger_token),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, key) = send(
        Method::GET,
        &server,
        &format!("/api/v1/streams/{stream_id}/key"),
        Some(&creator_token),
        None,
    )
    .await;
    assert_eq!(
        (status, key["stream_key"].as_str()),
        (200, stream["stream_key"].as_str())
    );
    let (status, rotated) = send(
        Method::POST,
        &server,
        &format!("/api/v1/streams/{stream_id}/key/rotate"),
        Some(&creator_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_ne!(rotated["stream_key"], key["stream_key"]);

    // Prices: a paid stream pays its owner, shows its price to anyone, and only its owner changes it.
    let paid = json!({"title": "paid", "access": "per_second", "price": {"amount": "50000", "period_seconds": 60}, "preview_seconds": 10});
    let (status, body) = send(
        Method::POST,
        &server,
        "/api/v1/streams",
        Some(common::ADMIN_TOKEN),
        Some(paid.clone()),
    )
    .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (400, Some("/problems/bad-request")),
        "the operator token has no wallet to be paid"
    );
    let (status, created) = send(
        Method::POST,
        &server,
        "/api/v1/streams",
        Some(&creator_token),
        Some(paid),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let paid_id = created["id"].as_str().expect("id");
    let (_, public) = send(
        Method::GET,
        &server,
        &format!("/api/v1/streams/{paid_id}"),
        None,
        None,
    )
    .await;
    assert_eq!(public["access"], "per_second");
    assert_eq!(
        public["price"],
        json!({"amount": "50000", "period_seconds": 60})
    );
    assert_eq!(public["preview_seconds"], 10);
    assert_eq!(public["owner"], format!("{:#x}", creator.address()));
    assert!(public.get("stream_key").is_none(), "the key is not public");
    let (status, _) = send(
        Method::PATCH,
        &server,
        &format!("/api/v1/streams/{paid_id}"),
        Some(&stranger_token),
        Some(json!({"title": "mine now"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = send(
        Method::PATCH,
        &server,
        &format!("/api/v1/streams/{paid_id}"),
        Some(&creator_token),
        Some(json!({"price": {"amount": "0", "period_seconds": 60}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(
        Method::PATCH,
        &server,
        &format!("/api/v1/streams/{paid_id}"),
        Some(&creator_token),
        Some(json!({"price": {"amount": "1", "period_seconds": 1}})),
    )
    .await;
    assert_eq!(
        (status, &body["price"]),
        (200, &json!({"amount": "1", "period_seconds": 1}))
    );

    // Close, let the settle window pass: the rest returns, leftover units are released.
    let (status, closing) = send(
        Method::POST,
        &server,
        &format!("/api/v1/channels/{id}/close"),
        Some(&payer_token),
        None,
    )
    .await;
    assert_eq!((status, closing["state"].as_str()), (200, Some("closing")));
    let mut closed = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        closed = send(
            Method::GET,
            &server,
            &format!("/api/v1/channels/{id}"),
            Some(&payer_token),
            None,
        )
        .await
        .1;
        if closed["state"] == "closed" {
            break;
        }
    }
    assert_eq!(closed["state"], "closed", "{closed}");
    let (_, balances) = send(
        Method::GET,
        &server,
        &format!("/api/v1/accounts/{:#x}/balances", payer.address()),
        Some(&payer_token),
        None,
    )
    .await;
    assert_eq!(balances["available"], (10_000_000 - 2501).to_string());
    assert_eq!(balances["escrowed"], "0");
    let (_, earned) = send(
        Method::GET,
        &server,
        &format!("/api/v1/accounts/{:#x}/balances", creator.address()),
        Some(&creator_token),
        None,
    )
    .await;
    assert_eq!(
        earned["earned"], "1617",
        "the leftover unit goes to the first recipient at close"
    );

    // History as CSV.
    let csv = reqwest::Client::new()
        .get(server.url(&format!(
            "/api/v1/accounts/{:#x}/transfers?format=csv",
            payer.address()
        )))
        .bearer_auth(&payer_token)
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("text");
    assert!(csv.starts_with("seq,time,id,kind,direction,amount"));
    assert!(csv.contains("channel_open,out,1000000"));
    assert!(csv.contains("close_refund,in,997499"));

    let (status, _) = send(
        Method::GET,
        &server,
        &format!("/api/v1/accounts/{:#x}/transfers", payer.address()),
        Some(&stranger_token),
        None,
    )
    .await;
    assert_eq!(status, 403, "another account's history is private");
    let (status, _) = send(
        Method::POST,
        &server,
        "/api/v1/withdrawals",
        None,
        Some(json!({"amount": "1"})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = send(
        Method::POST,
        &server,
        "/api/v1/withdrawals",
        Some(&stranger_token),
        Some(json!({"amount": "1"})),
    )
    .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (409, Some("/problems/insufficient-balance"))
    );

    // An automatic payout empties the earned balance once it reaches the threshold.
    let (status, _) = send(
        Method::PUT,
        &server,
        "/api/v1/accounts/me/payout-threshold",
        Some(&creator_token),
        Some(json!({"threshold": "1000"})),
    )
    .await;
    assert_eq!(status, 200);
    let mut paid_out = false;
    for _ in 0..60 {
        let (_, earned) = send(
            Method::GET,
            &server,
            &format!("/api/v1/accounts/{:#x}/balances", creator.address()),
            Some(&creator_token),
            None,
        )
        .await;
        if earned["earned"] == "0" {
            paid_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(paid_out, "the creator's 1617 earned were paid out");

    // The audit re-derives everything.
    let mut audit = Command::new(env!("CARGO_BIN_EXE_streamweave"));
    audit.args(["ledger", "audit"]);
    match &database {
        Some(url) => audit.args(["--database", url]),
        None => audit.arg("--data-dir").arg(&server.data_dir),
    };
    let output = audit.output().expect("audit");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.starts_with("ledger ok:"), "{stdout}");
}

/// The sign-in message the server issues to `key`'s address.
async fn challenge(server: &Server, key: &SigningKey) -> String {
    let (status, challenge) = send(
        reqwest::Method::POST,
        server,
        "/api/v1/auth/challenge",
        None,
        Some(json!({"address": format!("{:#x}", key.address())})),
    )
    .await;
    assert_eq!(status, 200, "{challenge}");
    challenge["message"].as_str().expect("message").to_string()
}

/// A login body: `message` signed by `key` (EIP-191).
fn signed_login(key: &SigningKey, message: &str) -> Value {
    let signature = key.sign_digest(personal_sign_digest(message.as_bytes()));
    json!({"message": message, "signature": hex(&signature)})
}

async fn login(server: &Server, body: Value) -> (u16, Value) {
    send(
        reqwest::Method::POST,
        server,
        "/api/v1/auth/login",
        None,
        Some(body),
    )
    .await
}
