//! `streamweave keys new` and `streamweave watch` against a live priced
//! stream: the SDK pays as it plays, verifies every CID, and what it spent is
//! what the creator and the platform received, to the unit.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{H264, Server, publish, sign_in, wait_child};
use serde_json::{Value, json};
use streamweave_ledger::{Amount, Price, RevenuePolicy, SigningKey};

#[tokio::test(flavor = "multi_thread")]
async fn watch_pays_for_a_live_stream_and_verifies_it() {
    let server = Server::start(&["--dev"]).await;
    let creator = SigningKey::from_bytes(&[0x81; 32]).expect("key");
    let creator_token = sign_in(&server, &creator).await;
    let client = reqwest::Client::new();
    let stream: Value = client
        .post(server.url("/api/v1/streams"))
        .bearer_auth(&creator_token)
        .json(&json!({"title": "live and paid", "access": "per_second", "price": {"amount": "50000", "period_seconds": 60}}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = stream["id"].as_str().expect("id").to_string();
    let mut ffmpeg = publish(
        &format!(
            "{}/live/{}",
            server.rtmp,
            stream["stream_key"].as_str().expect("key")
        ),
        "640x360",
        30,
        H264,
    );
    server
        .wait_for_state(&id, "live", Duration::from_secs(20))
        .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("viewer.key");
    let keys = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .args(["keys", "new", "--out"])
        .arg(&key_file)
        .output()
        .expect("keys new");
    assert!(keys.status.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file)
                .expect("key file")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let again = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .args(["keys", "new", "--out"])
        .arg(&key_file)
        .output()
        .expect("keys new");
    assert!(
        !again.status.success(),
        "an existing key file is never overwritten"
    );

    let key = key_file.to_str().expect("a UTF-8 temporary path");
    let summary = common::run_json(&[
        "watch",
        "--server",
        &server.http,
        "--key",
        key,
        "--stream",
        &id,
        "--seconds",
        "20",
        "--faucet",
        "10000000",
        "--deposit",
        "1000000",
    ])
    .await;
    let media_ms = summary["media_ms"].as_u64().expect("media_ms");
    assert!(media_ms >= 20_000, "{summary}");
    assert_eq!(summary["cids_verified"], summary["segments"]);
    let spent: u128 = summary["spent"]
        .as_str()
        .expect("spent")
        .parse()
        .expect("number");
    let price = Price {
        amount: Amount(50_000),
        period_seconds: 60,
    };
    let owed = price.owed(media_ms).expect("owed").0;
    // Paid for what it received, plus at most the one segment it paid ahead.
    assert!(
        spent >= owed && spent <= price.owed(media_ms + 2_100).expect("owed").0,
        "spent {spent}, owed {owed}"
    );

    let balances = server
        .get_json_as(
            &format!("/api/v1/accounts/{:#x}/balances", creator.address()),
            &creator_token,
        )
        .await;
    let split = RevenuePolicy::sole(creator.address(), 300).totals(Amount(spent));
    assert_eq!(balances["earned"], split.recipients[0].to_string());

    assert!(wait_child(&mut ffmpeg, Duration::from_secs(60)));
    common::assert_ledger_audits(&server.data_dir);
}
