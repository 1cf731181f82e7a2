//! Regression tests for attacks on the real binary: a hostile RTMP message,
//! idle RTMP floods, slow HTTP clients, challenge floods, reused
//! idempotency keys, internal error text and channels nobody can spend.
//! Each names the failure it pins.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, H264, Server, publish, sign_in, wait_child};
use serde_json::{Value, json};
use streamweave_ledger::SigningKey;

/// Completes an RTMP handshake as a client (C0+C1, then C2 echoing S1).
fn rtmp_handshake(addr: &str) -> TcpStream {
    let mut socket = TcpStream::connect(addr).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0u8, 1536));
    socket.write_all(&c0c1).expect("C0+C1");
    let mut s0s1s2 = vec![0u8; 1 + 1536 + 1536];
    socket.read_exact(&mut s0s1s2).expect("S0+S1+S2");
    socket.write_all(&s0s1s2[1..1537]).expect("C2");
    socket
}

/// One AMF0 command message (type 20) on chunk stream 3, in 128-byte chunks.
fn rtmp_command_chunks(payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut out = vec![0x03, 0, 0, 0];
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(20);
    out.extend_from_slice(&[0, 0, 0, 0]);
    for (index, chunk) in payload.chunks(128).enumerate() {
        if index > 0 {
            out.push(0xC3);
        }
        out.extend_from_slice(chunk);
    }
    out
}

fn amf_string(text: &str) -> Vec<u8> {
    let mut out = vec![0x02];
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

fn amf_number(value: f64) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend_from_slice(&value.to_be_bytes());
    out
}

/// Reads until the server closes the connection; answers how long it took.
fn until_closed(socket: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut sink = [0u8; 4096];
    loop {
        match socket.read(&mut sink) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

/// A TCP connection from a chosen loopback address (another "client").
async fn connect_from(
    source: [u8; 4],
    target: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(target).await
}

fn rtmp_addr(server: &Server) -> String {
    server.rtmp.trim_start_matches("rtmp://").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_amf_over_rtmp_no_longer_kills_the_server() {
    let mut server = Server::start(&[]).await;
    let addr = rtmp_addr(&server);
    // `connect`, 1, then an object nested 4,000 deep (`03 00 01 61` repeated):
    // this overflowed a worker's stack in the AMF decoder and aborted the process.
    let mut nested = amf_string("connect");
    nested.extend(amf_number(1.0));
    for _ in 0..4000 {
        nested.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
    }
    let blocking = tokio::task::spawn_blocking(move || {
        let mut socket = rtmp_handshake(&addr);
        socket
            .write_all(&rtmp_command_chunks(&nested))
            .expect("send nested");
        until_closed(&mut socket);
        // A command with two values panicked the decoder (`drain(..3)`).
        let mut short = amf_string("connect");
        short.extend(amf_number(1.0));
        let mut socket = rtmp_handshake(&addr);
        socket
            .write_all(&rtmp_command_chunks(&short))
            .expect("send short");
        until_closed(&mut socket);
    });
    blocking.await.expect("attack client");
    server.assert_alive();
    // HTTP and RTMP still serve: a real publisher goes live.
    let (id, key) = server.create_stream("after the attack").await;
    let mut publisher = publish(&format!("{}/live/{key}", server.rtmp), "320x240", 6, H264);
    server
        .wait_for_state(&id, "live", Duration::from_secs(30))
        .await;
    assert!(wait_child(&mut publisher, Duration::from_secs(60)));
    server.assert_alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_rtmp_clients_no_longer_lock_a_publisher_out() {
    let mut server = Server::start(&["--rtmp-handshake-timeout-ms", "1000"]).await;
    let target: SocketAddr = rtmp_addr(&server).parse().expect("address");
    // 400 clients on 25 addresses that connect and never send a byte, and
    // reconnect soon after they are dropped, for the whole test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused_fast = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut idlers = Vec::new();
    for n in 0..400u32 {
        let stop = stop.clone();
        let refused_fast = refused_fast.clone();
        let source = [127, 0, 1, 2 + (n % 25) as u8];
        idlers.push(tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut socket) = connect_from(source, target).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let opened = Instant::now();
                let mut byte = [0u8; 1];
                let _ = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut byte)).await;
                if opened.elapsed() < Duration::from_millis(200) {
                    refused_fast.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A real publisher with a valid key connects and goes live meanwhile.
    let (id, key) = server.create_stream("publisher under flood").await;
    let mut publisher = publish(&format!("{}/live/{key}", server.rtmp), "320x240", 6, H264);
    server
        .wait_for_state(&id, "live", Duration::from_secs(30))
        .await;
    assert!(
        wait_child(&mut publisher, Duration::from_secs(60)),
        "the publisher ran to the end"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for idler in idlers {
        idler.abort();
    }
    assert!(
        refused_fast.load(std::sync::atomic::Ordering::Relaxed) > 100,
        "connections over an address's pending limit are closed at once"
    );
    server.assert_alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_http_clients_are_cut_and_capped_per_address() {
    let mut server = Server::start(&[
        "--http-header-timeout-ms",
        "1000",
        "--max-http-connections-per-ip",
        "50",
    ])
    .await;
    let target: SocketAddr = server
        .http
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // 50 connections from one address trickle a request's headers, a byte at a time.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut socket = connect_from([127, 0, 0, 2], target).await.expect("connect");
        socket
            .write_all(b"GET /api/v1/streams HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        slow.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The 51st from that address is closed without an answer.
    let mut extra = connect_from([127, 0, 0, 2], target).await.expect("connect");
    let _ = extra
        .write_all(b"GET /api/v1/streams HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer)).await;
    assert!(
        answer.is_empty(),
        "over the per-address cap: closed, not served"
    );
    // Another address is served promptly meanwhile.
    let started = Instant::now();
    let streams = server.get_json("/api/v1/streams").await;
    assert!(streams.is_array());
    assert!(started.elapsed() < Duration::from_secs(2));
    // Trickling headers past the header timeout gets the connection closed
    // (before this, such connections were held forever).
    let started = Instant::now();
    let mut closed = 0;
    for socket in &mut slow {
        let mut buffer = [0u8; 1024];
        loop {
            if socket.write_all(b"X").await.is_err() {
                closed += 1;
                break;
            }
            match tokio::time::timeout(Duration::from_millis(300), socket.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => {}
                Err(_) => {}
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "a slow client was held past the header timeout"
            );
        }
    }
    assert_eq!(closed, 50);
    server.assert_alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_challenges_are_bounded_per_address() {
    let server = Server::start(&["--challenges-per-ip-per-minute", "10"]).await;
    let client = reqwest::Client::new();
    let body = json!({ "address": "0x00000000000000000000000000000000000000aa" });
    for _ in 0..10 {
        let response = client
            .post(server.url("/api/v1/auth/challenge"))
            .json(&body)
            .send()
            .await
            .expect("challenge");
        assert_eq!(response.status(), 200);
    }
    // Unlimited before: 5,000 rows in 6 s from one client.
    let response = client
        .post(server.url("/api/v1/auth/challenge"))
        .json(&body)
        .send()
        .await
        .expect("challenge");
    assert_eq!(response.status(), 429);
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["type"], "/problems/too-many-requests");
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

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_idempotency_key_with_another_body_is_a_conflict() {
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();
    let viewer = SigningKey::from_bytes(&[0x91; 32]).expect("key");
    let creator = SigningKey::from_bytes(&[0x92; 32]).expect("key");
    let viewer_address = format!("{:#x}", viewer.address());
    let deposits = server.url("/api/v1/admin/deposits");
    let (status, first) = post(
        &client,
        deposits.clone(),
        ADMIN_TOKEN,
        json!({"address": viewer_address, "amount": "100000", "id": "dep-1"}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    // Before: 201/200 echoing the new amount while only the first moved money.
    let (status, conflict) = post(
        &client,
        deposits.clone(),
        ADMIN_TOKEN,
        json!({"address": viewer_address, "amount": "200000", "id": "dep-1"}),
    )
    .await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["type"], "/problems/idempotency-conflict");
    // The same body again is a retry.
    let (status, _) = post(
        &client,
        deposits,
        ADMIN_TOKEN,
        json!({"address": viewer_address, "amount": "100000", "id": "dep-1"}),
    )
    .await;
    assert_eq!(status, 200);

    // A tip id reused with another amount.
    let creator_token = sign_in(&server, &creator).await;
    let viewer_token = sign_in(&server, &viewer).await;
    let (status, stream) = post(
        &client,
        server.url("/api/v1/streams"),
        &creator_token,
        json!({"title": "tipped"}),
    )
    .await;
    assert_eq!(status, 201);
    let tips = server.url(&format!(
        "/api/v1/streams/{}/tips",
        stream["id"].as_str().expect("id")
    ));
    let (status, _) = post(
        &client,
        tips.clone(),
        &viewer_token,
        json!({"amount": "100", "id": "t-1"}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, conflict) = post(
        &client,
        tips.clone(),
        &viewer_token,
        json!({"amount": "200", "id": "t-1"}),
    )
    .await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["type"], "/problems/idempotency-conflict");
    let balances = server
        .get_json_as(
            &format!("/api/v1/accounts/{viewer_address}/balances"),
            &viewer_token,
        )
        .await;
    assert_eq!(
        balances["available"], "99900",
        "one deposit and one tip moved money"
    );
    common::assert_ledger_audits(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_nobody_can_spend_are_refused() {
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();
    let viewer = SigningKey::from_bytes(&[0x93; 32]).expect("key");
    let token = sign_in(&server, &viewer).await;
    let (status, _) = post(
        &client,
        server.url("/api/v1/admin/deposits"),
        ADMIN_TOKEN,
        json!({"address": format!("{:#x}", viewer.address()), "amount": "1000000"}),
    )
    .await;
    assert_eq!(status, 200);
    let zero = "0x0000000000000000000000000000000000000000";
    let someone = "0x00000000000000000000000000000000000000bb";
    for (payee, signer) in [(zero, someone), (someone, zero)] {
        let (status, problem) = post(
            &client,
            server.url("/api/v1/channels"),
            &token,
            json!({"payee": payee, "signer": signer, "deposit": "1000"}),
        )
        .await;
        assert_eq!(status, 400, "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains("zero address")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_end_errors_are_shown_to_the_creator_only() {
    // An ffmpeg that dies mid-stream with a path in its last words.
    let dir = tempfile::tempdir().expect("tempdir");
    let wrapper = dir.path().join("ffmpeg");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\n\
         if [ \"$1\" = -version ]; then exec ffmpeg -version; fi\n\
         ffmpeg \"$@\" &\n\
         child=$!\n\
         sleep 8\n\
         kill -9 $child\n\
         echo 'internal failure at /srv/secret/work' >&2\n\
         exit 1\n",
    )
    .expect("write wrapper");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let server = Server::start(&["--ffmpeg", wrapper.to_str().expect("utf-8")]).await;
    let (id, key) = server.create_stream("dies").await;
    let mut publisher = publish(&format!("{}/live/{key}", server.rtmp), "320x240", 30, H264);
    server
        .wait_for_state(&id, "live", Duration::from_secs(30))
        .await;
    let ended = server
        .wait_for_state(&id, "ended", Duration::from_secs(60))
        .await;
    let _ = publisher.kill();
    let _ = publisher.wait();
    assert_eq!(
        ended["end_error"], "the broadcast ended unexpectedly",
        "{ended}"
    );
    let listed = server.get_json("/api/v1/streams").await;
    assert!(!listed.to_string().contains("/srv/secret"), "{listed}");
    let for_admin = server
        .get_json_as(&format!("/api/v1/streams/{id}"), ADMIN_TOKEN)
        .await;
    let cause = for_admin["end_error"].as_str().expect("cause");
    assert_ne!(cause, "the broadcast ended unexpectedly", "{for_admin}");
}
