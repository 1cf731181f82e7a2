//! SIGKILL in the middle of a voucher load: after a restart every voucher
//! that was acknowledged is there, nothing unacknowledged beyond what was
//! sent appeared, and the audit passes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Server, hex, sign_in};
use serde_json::{Value, json};
use streamweave_ledger::{Address, B256, PaymentDomain, SigningKey};

const CHANNELS: u8 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_vouchers_survive_sigkill() {
    let mut server = Server::start(&["--dev"]).await;
    let payer = SigningKey::from_bytes(&[0x61; 32]).expect("key");
    let creator = Address::repeat_byte(0x62);
    let session = SigningKey::from_bytes(&[0x63; 32]).expect("key");
    let token = sign_in(&server, &payer).await;
    let client = reqwest::Client::new();
    let faucet = client
        .post(server.url("/api/v1/dev/faucet"))
        .json(&json!({"address": format!("{:#x}", payer.address()), "amount": "1000000000"}))
        .send()
        .await
        .expect("faucet");
    assert_eq!(faucet.status(), 200);
    let mut ids = Vec::new();
    for index in 0..CHANNELS {
        let salt = B256::with_last_byte(index);
        let response = client
            .post(server.url("/api/v1/channels"))
            .bearer_auth(&token)
            .json(&json!({"payee": format!("{creator:#x}"), "deposit": "100000000", "signer": format!("{:#x}", session.address()), "salt": format!("{salt:#x}")}))
            .send()
            .await
            .expect("open");
        assert_eq!(response.status(), 201);
        ids.push(PaymentDomain::EMBEDDED.channel_id(
            payer.address(),
            creator,
            Address::ZERO,
            salt,
            session.address(),
        ));
    }

    // One sequential payer per channel, all at once; remember what was acknowledged.
    let acknowledged: Arc<Vec<AtomicU64>> =
        Arc::new((0..CHANNELS).map(|_| AtomicU64::new(0)).collect());
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..CHANNELS).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for (index, id) in ids.iter().copied().enumerate() {
        let (acknowledged, sent, session, url) = (
            acknowledged.clone(),
            sent.clone(),
            session.clone(),
            server.url(&format!("/api/v1/channels/{id:#x}/vouchers")),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for amount in 1u64.. {
                let signature = session
                    .sign_digest(PaymentDomain::EMBEDDED.voucher_digest(id, u128::from(amount)));
                sent[index].store(amount, Ordering::SeqCst);
                let response = client
                    .post(&url)
                    .json(&json!({"amount": amount.to_string(), "signature": hex(&signature)}))
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status() == 200 => {
                        acknowledged[index].store(amount, Ordering::SeqCst)
                    }
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let data_dir = server.data_dir.clone();
    server.kill();
    for task in tasks {
        let _ = task.await;
    }
    let total_acknowledged: u64 = acknowledged.iter().map(|a| a.load(Ordering::SeqCst)).sum();
    assert!(
        total_acknowledged > 20,
        "the load ran: {total_acknowledged} vouchers acknowledged"
    );

    let restarted = Server::start_in(&data_dir, &["--dev"]).await;
    let token = sign_in(&restarted, &payer).await;
    for (index, id) in ids.iter().enumerate() {
        let channel: Value = client
            .get(restarted.url(&format!("/api/v1/channels/{id:#x}")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("channel")
            .json()
            .await
            .expect("json");
        let redeemed: u64 = channel["redeemed"]
            .as_str()
            .expect("redeemed")
            .parse()
            .expect("number");
        let acked = acknowledged[index].load(Ordering::SeqCst);
        let last_sent = sent[index].load(Ordering::SeqCst);
        assert!(
            (acked..=last_sent).contains(&redeemed),
            "channel {index}: redeemed {redeemed}, acknowledged {acked}, last sent {last_sent}"
        );
    }
    common::assert_ledger_audits(&data_dir);
    drop(server);
}
