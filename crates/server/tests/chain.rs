//! The escrow on a real chain (anvil, from contracts/node_modules): a viewer
//! opens a channel on chain through the SDK and watches a paid stream, the
//! server settles in batches and when the payer asks to close, finalizes,
//! and the creator withdraws; a reorganization before confirmation leaves
//! the ledger untouched; a restart with a settlement in flight neither
//! loses nor repeats it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, H264, Server, free_port, publish, sign_in};
use serde_json::{Value, json};
use streamweave_chain::{Address, B256, Escrow, TxCall};
use streamweave_ledger::{Amount, SigningKey};

/// anvil's development keys 0 (deploys, mints) and 1 (the settler).
const DEPLOYER: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const SETTLER: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const WAIT: Duration = Duration::from_secs(60);

struct Chain {
    child: Child,
    rpc: String,
    escrow: Address,
    token: Address,
    /// Sends from the deployer's key.
    node: Escrow,
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// anvil mining a block a second, with the escrow (settle window
/// `settle_window_s`) and the test token deployed by `chain deploy`.
async fn start_chain(settle_window_s: u64) -> Chain {
    let anvil = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contracts/node_modules/.bin/anvil"
    );
    let port = free_port();
    let child = Command::new(anvil)
        .args(["--port", &port.to_string(), "--chain-id", "31337"])
        .args(["--block-time", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("anvil (scripts/setup installs it)");
    let rpc = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(started.elapsed() < WAIT, "anvil did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deployed = common::run_json(&[
        "chain",
        "deploy",
        "--chain-rpc",
        &rpc,
        "--settle-window-s",
        &settle_window_s.to_string(),
    ])
    .await;
    assert_eq!(deployed["chain_id"], 31337, "{deployed}");
    let escrow: Address = deployed["escrow"].as_str().unwrap().parse().unwrap();
    let token: Address = deployed["token"].as_str().unwrap().parse().unwrap();
    let node = Escrow::connect(&rpc, escrow, Some(DEPLOYER))
        .await
        .expect("connect");
    Chain {
        child,
        rpc,
        escrow,
        token,
        node,
    }
}

impl Chain {
    fn server_args<'a>(&'a self, escrow: &'a str, token: &'a str) -> Vec<&'a str> {
        vec![
            "--chain-rpc",
            &self.rpc,
            "--escrow",
            escrow,
            "--chain-token",
            token,
            "--settler-key",
            SETTLER,
            "--chain-poll-ms",
            "250",
        ]
    }

    /// Test ether for gas and `usdc` base units of the test token.
    async fn fund(&self, to: Address, usdc: u128) {
        self.node
            .raw_request(
                "anvil_setBalance",
                json!([format!("{to:#x}"), "0x56bc75e2d63100000"]),
            )
            .await
            .expect("setBalance");
        if usdc > 0 {
            self.node
                .transact(TxCall::mint(self.token, to, usdc), WAIT)
                .await
                .expect("mint");
        }
    }

    async fn mining(&self, on: bool) {
        self.node
            .raw_request("evm_setIntervalMining", json!([u64::from(on)]))
            .await
            .expect("interval mining");
    }
}

/// A priced stream (600000 per minute: 10000 a second) by `creator`, live.
async fn live_priced_stream(server: &Server, creator: &SigningKey) -> (String, Child) {
    let token = sign_in(server, creator).await;
    let stream: Value = reqwest::Client::new()
        .post(server.url("/api/v1/streams"))
        .bearer_auth(&token)
        .json(&json!({"title": "paid on chain", "access": "per_second", "price": {"amount": "600000", "period_seconds": 60}}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = stream["id"].as_str().expect("id").to_string();
    let ffmpeg = publish(
        &format!(
            "{}/live/{}",
            server.rtmp,
            stream["stream_key"].as_str().expect("key")
        ),
        "426x240",
        45,
        H264,
    );
    server
        .wait_for_state(&id, "live", Duration::from_secs(30))
        .await;
    (id, ffmpeg)
}

async fn channel(server: &Server, id: &str) -> Value {
    server
        .get_json_as(&format!("/api/v1/channels/{id}"), ADMIN_TOKEN)
        .await
}

fn amount(value: &Value) -> u128 {
    value.as_str().expect("an amount").parse().expect("digits")
}

async fn until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_pays_on_chain_and_the_server_settles_closes_and_pays_out() {
    let _turn = common::one_at_a_time().await;
    let chain = start_chain(20).await;
    let (escrow, token) = (
        format!("{:#x}", chain.escrow),
        format!("{:#x}", chain.token),
    );
    let mut args = chain.server_args(&escrow, &token);
    args.extend(["--settle-threshold", "50000"]);
    let server = Server::start(&args).await;

    // The server's terms name the chain, the escrow and the token.
    let config = server.get_json("/api/v1/payments/config").await;
    assert_eq!(config["on_chain"], true);
    assert_eq!(config["chain_id"], 31337);
    assert_eq!(config["escrow"], escrow);
    assert_eq!(config["assets"][0]["token"], token);
    assert_eq!(config["assets"][0]["decimals"], 6);
    // Opening through the API is refused: channels open on chain.
    let creator = SigningKey::from_bytes(&[0xc1; 32]).unwrap();
    let viewer = SigningKey::from_bytes(&[0xd1; 32]).unwrap();
    let viewer_token = sign_in(&server, &viewer).await;
    let (status, body) = common::post(
        &server,
        "/api/v1/channels",
        &viewer_token,
        json!({"payee": format!("{:#x}", creator.address()), "deposit": "1000", "signer": format!("{:#x}", viewer.address())}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(common::problem_type(&body), "/problems/channel-on-chain");

    let (stream, mut ffmpeg) = live_priced_stream(&server, &creator).await;
    chain.fund(viewer.address(), 10_000_000).await;
    chain.fund(creator.address(), 0).await;

    let mut client = streamweave_client::Client::new(&server.http, viewer.clone());
    client.sign_in().await.expect("sign in");
    let client = client.with_chain(&chain.rpc).await.expect("chain");
    let summary = client
        .watch(&stream, 14, Amount(1_000_000), None)
        .await
        .expect("watch");
    assert!(summary.media_ms >= 14_000, "{summary:?}");
    assert_eq!(summary.cids_verified, summary.segments);
    let id = summary.channel_id.clone();
    let channel_id: B256 = id.parse().unwrap();

    // Past the threshold: settled on chain while the channel is open.
    let opened = channel(&server, &id).await;
    assert_eq!(amount(&opened["deposit"]), 1_000_000);
    until("a settlement past the threshold", async || {
        (amount(&channel(&server, &id).await["settled_on_chain"]) > 0).then_some(())
    })
    .await;
    let on_chain = chain.node.channel(channel_id).await.unwrap();
    assert_eq!(on_chain.deposit, 1_000_000);
    assert!(on_chain.settled > 0);

    // The payer asks to close on chain: the server settles the rest before
    // the window ends, then finalizes, which refunds the payer.
    let payer = chain
        .node
        .with_key(&common::hex(&viewer.to_bytes()))
        .unwrap();
    payer
        .transact(TxCall::request_close(chain.escrow, channel_id), WAIT)
        .await
        .expect("requestClose");
    let redeemed = until("the ledger to see the close request", async || {
        let view = channel(&server, &id).await;
        (view["state"] == "closing").then(|| amount(&view["redeemed"]))
    })
    .await;
    // (A settle after the window reverts: reaching `redeemed` means in time.)
    until("the rest settled", async || {
        (chain.node.channel(channel_id).await.unwrap().settled == redeemed).then_some(())
    })
    .await;
    let closed = until("finalized and closed in the ledger", async || {
        let view = channel(&server, &id).await;
        (view["state"] == "closed").then_some(view)
    })
    .await;
    assert_eq!(amount(&closed["settled_on_chain"]), redeemed);
    assert_eq!(chain.node.channel(channel_id).await.unwrap().state, 3);
    assert_eq!(
        chain
            .node
            .token_balance(chain.token, viewer.address())
            .await
            .unwrap(),
        10_000_000 - redeemed,
        "the payer got back everything it did not spend"
    );
    assert!(redeemed >= 140_000, "{redeemed}");

    // The creator's credits on chain equal its earnings in the ledger; it
    // withdraws them, and the ledger follows.
    let creator_token = sign_in(&server, &creator).await;
    let balances_path = format!("/api/v1/accounts/{:#x}/balances", creator.address());
    let earned =
        amount(&server.get_json_as(&balances_path, &creator_token).await["earned_on_chain"]);
    let credits = chain
        .node
        .credits(chain.token, creator.address())
        .await
        .unwrap();
    assert_eq!(credits, earned);
    let creator_chain = chain
        .node
        .with_key(&common::hex(&creator.to_bytes()))
        .unwrap();
    creator_chain
        .transact(
            TxCall::withdraw(chain.escrow, chain.token, creator.address()),
            WAIT,
        )
        .await
        .expect("withdraw");
    until("the withdrawal in the ledger", async || {
        let view = server.get_json_as(&balances_path, &creator_token).await;
        (amount(&view["earned_on_chain"]) == 0).then_some(())
    })
    .await;
    assert_eq!(
        chain
            .node
            .token_balance(chain.token, creator.address())
            .await
            .unwrap(),
        earned
    );
    let status = server.get_json("/api/v1/chain").await;
    assert!(
        status["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|tx| tx["state"] == "mined"),
        "{status}"
    );

    let audit = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .args(["ledger", "audit", "--chain-rpc", &chain.rpc, "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .expect("audit");
    let printed = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{printed}");
    assert!(printed.starts_with("ledger ok:"), "{printed}");
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reorganization_before_confirmation_leaves_the_ledger_untouched() {
    let _turn = common::one_at_a_time().await;
    let chain = start_chain(600).await;
    let (escrow, token) = (
        format!("{:#x}", chain.escrow),
        format!("{:#x}", chain.token),
    );
    let mut args = chain.server_args(&escrow, &token);
    args.extend(["--confirmations", "6"]);
    let server = Server::start(&args).await;
    let payer = SigningKey::from_bytes(&[0xd2; 32]).unwrap();
    let payee = SigningKey::from_bytes(&[0xc2; 32]).unwrap();
    chain.fund(payer.address(), 5_000_000).await;
    let policy_view = server
        .get_json(&format!("/api/v1/payments/policies/{:#x}", payee.address()))
        .await;
    let fee_recipient: Address = policy_view["fee_recipient"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let policy = streamweave_chain::abi::Policy {
        feeBps: 300,
        feeRecipient: fee_recipient,
        recipients: vec![streamweave_chain::abi::Recipient {
            account: payee.address(),
            share: 1,
        }],
    };
    assert_eq!(
        policy_view["policy_hash"],
        format!("{:#x}", streamweave_chain::policy_hash(&policy))
    );
    let wallet = chain
        .node
        .with_key(&common::hex(&payer.to_bytes()))
        .unwrap();
    wallet
        .transact(TxCall::approve(chain.token, chain.escrow, 1_000_000), WAIT)
        .await
        .unwrap();
    let salt = B256::repeat_byte(7);
    let opened = wallet
        .transact(
            TxCall::open(
                chain.escrow,
                payee.address(),
                chain.token,
                1_000_000,
                salt,
                payer.address(),
                4_000_000_000,
                policy,
            ),
            WAIT,
        )
        .await
        .unwrap();
    let id = streamweave_ledger::PaymentDomain {
        chain_id: 31337,
        escrow: chain.escrow,
    }
    .channel_id(
        payer.address(),
        payee.address(),
        chain.token,
        salt,
        payer.address(),
    );
    let id_text = format!("{id:#x}");
    // Seen, not final: shown as provisional, not in the ledger.
    until("the provisional log", async || {
        let status = server.get_json("/api/v1/chain").await;
        status["provisional"]
            .as_array()
            .unwrap()
            .iter()
            .any(|log| log["kind"] == "opened" && log["channel"] == id_text.as_str())
            .then_some(())
    })
    .await;
    let (status, _) = common::get(
        &server,
        &format!("/api/v1/channels/{id_text}"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 404);
    // The block that opened it is replaced (and the open with it).
    let head = chain.node.head().await.unwrap();
    let depth = head - opened.block_number + 1;
    chain
        .node
        .raw_request("anvil_reorg", json!([depth, []]))
        .await
        .expect("anvil_reorg");
    assert_eq!(
        chain.node.channel(id).await.unwrap().state,
        0,
        "the open is gone"
    );
    // Long past the confirmations: still nothing, and nothing provisional.
    let final_after = chain.node.head().await.unwrap() + 8;
    until("the chain to move on past the confirmations", async || {
        let status = server.get_json("/api/v1/chain").await;
        (status["final_block"].as_u64().unwrap() >= final_after).then_some(status)
    })
    .await;
    let status = server.get_json("/api/v1/chain").await;
    assert!(status["error"].is_null(), "{status}");
    assert!(
        !status["provisional"]
            .as_array()
            .unwrap()
            .iter()
            .any(|log| log["channel"] == id_text.as_str()),
        "{status}"
    );
    let (status, _) = common::get(
        &server,
        &format!("/api/v1/channels/{id_text}"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 404);
    common::assert_ledger_audits(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_a_settlement_in_flight_neither_loses_nor_repeats_it() {
    let _turn = common::one_at_a_time().await;
    let chain = start_chain(600).await;
    let (escrow, token) = (
        format!("{:#x}", chain.escrow),
        format!("{:#x}", chain.token),
    );
    let mut args = chain.server_args(&escrow, &token);
    args.extend(["--settle-threshold", "100000"]);
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &args).await;
    let creator = SigningKey::from_bytes(&[0xc3; 32]).unwrap();
    let viewer = SigningKey::from_bytes(&[0xd3; 32]).unwrap();
    let (stream, mut ffmpeg) = live_priced_stream(&server, &creator).await;
    chain.fund(viewer.address(), 5_000_000).await;

    // Mining stops once the channel is in the ledger: the settlement the
    // viewing triggers stays in the node's pool.
    let watcher = {
        let node = chain.node.clone();
        let server_url = server.http.clone();
        let payer = viewer.address();
        tokio::spawn(async move {
            loop {
                let head = node.head().await.unwrap();
                let opened = node.events(0, head).await.unwrap().into_iter().find(|e| {
                    matches!(&e.event, streamweave_chain::EscrowEvent::Opened { payer: p, .. } if *p == payer)
                });
                let status: Value = reqwest::get(format!("{server_url}/api/v1/chain"))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if let Some(opened) = opened
                    && status["final_block"].as_u64().unwrap() >= opened.block_number
                {
                    node.raw_request("evm_setIntervalMining", json!([0]))
                        .await
                        .unwrap();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut client = streamweave_client::Client::new(&server.http, viewer.clone());
    client.sign_in().await.expect("sign in");
    let client = client.with_chain(&chain.rpc).await.expect("chain");
    let summary = client
        .watch(&stream, 14, Amount(1_000_000), None)
        .await
        .expect("watch");
    watcher.await.unwrap();
    let id = summary.channel_id.clone();
    let sent = until("a settlement sent", async || {
        let status = server.get_json("/api/v1/chain").await;
        status["transactions"]
            .as_array()
            .unwrap()
            .first()
            .filter(|tx| tx["state"] == "sent")
            .cloned()
    })
    .await;
    assert_eq!(sent["kind"], "settle");
    let settling = amount(&sent["channels"][0]["amount"]);
    assert!(settling >= 100_000, "{sent}");

    server.kill();
    // The node forgets it too: only the restarted server's resend can mine it.
    chain
        .node
        .raw_request("anvil_dropTransaction", json!([sent["hash"]]))
        .await
        .expect("anvil_dropTransaction");
    let server = Server::start_in(data.path(), &args).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    chain.mining(true).await;
    until("the settlement mined", async || {
        (chain
            .node
            .channel(id.parse().unwrap())
            .await
            .unwrap()
            .settled
            == settling)
            .then_some(())
    })
    .await;
    until("the ledger to see it", async || {
        (amount(&channel(&server, &id).await["settled_on_chain"]) == settling).then_some(())
    })
    .await;
    // One transaction from the settler's key, recorded once.
    let settler = Escrow::connect(&chain.rpc, chain.escrow, Some(SETTLER))
        .await
        .unwrap();
    assert_eq!(settler.mined_nonce().await.unwrap(), 1);
    let status = server.get_json("/api/v1/chain").await;
    let transactions = status["transactions"].as_array().unwrap();
    assert_eq!(transactions.len(), 1, "{status}");
    assert_eq!(transactions[0]["hash"], sent["hash"]);
    assert_eq!(transactions[0]["state"], "mined");
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    drop(server);
    common::assert_ledger_audits(data.path());
}
