//! Resumable uploads (tus 1.0) against the real binary: a connection cut in
//! the middle of a chunk keeps what arrived, the SDK resumes from the
//! server's offset, and the limits (size, quota, checksum, protocol version,
//! ownership, termination) answer as the protocol says.

mod common;

use std::io::Write;
use std::time::Duration;

use common::Server;
use streamweave_client::Client;
use streamweave_ledger::SigningKey;

fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_upload_resumes_where_the_server_got_to() {
    let server = Server::start(&[
        "--max-upload-bytes",
        "4000000",
        "--upload-quota-bytes",
        "6000000",
    ])
    .await;
    let key = SigningKey::from_bytes(&[0xa1; 32]).expect("key");
    let mut client = Client::new(&server.http, key);
    client.sign_in().await.expect("sign in");
    let token = common::sign_in(&server, &SigningKey::from_bytes(&[0xa1; 32]).expect("key")).await;

    let source = pseudo_random_bytes(3 * 1024 * 1024 + 17);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("film.mp4");
    std::fs::write(&path, &source).expect("write");
    let url = client
        .create_upload(source.len() as u64, "film.mp4")
        .await
        .expect("create");
    assert_eq!(
        client.upload_offset(&url).await.expect("head"),
        (0, source.len() as u64)
    );

    // A PATCH announcing 2 MiB whose connection dies after 1 MiB.
    let addr = server.http.trim_start_matches("http://").to_string();
    let head = format!(
        "PATCH {url} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    let half = source[..1024 * 1024].to_vec();
    tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(addr).expect("connect");
        socket.write_all(head.as_bytes()).expect("head");
        socket.write_all(&half).expect("body");
        socket.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(300));
        // Dropped: the connection ends in the middle of the body.
    })
    .await
    .expect("cut");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let kept = loop {
        let (offset, _) = client.upload_offset(&url).await.expect("head");
        if offset > 0 || std::time::Instant::now() > deadline {
            break offset;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(kept, 1024 * 1024, "what arrived before the cut is kept");

    // The SDK goes on from there, in 1 MiB chunks with checksums.
    let mut reports = Vec::new();
    client
        .send_upload(&url, &path, 1024 * 1024, |sent, total| {
            reports.push((sent, total))
        })
        .await
        .expect("resume");
    assert_eq!(reports.first(), Some(&(1024 * 1024, source.len() as u64)));
    assert_eq!(
        reports.last(),
        Some(&(source.len() as u64, source.len() as u64))
    );
    let id = url.rsplit('/').next().expect("id");
    let stored =
        std::fs::read(server.data_dir.join("uploads").join(format!("{id}.bin"))).expect("stored");
    assert!(stored == source, "the server holds exactly the file");

    // Over the size limit, and over the quota (3 MiB are held already).
    let http = reqwest::Client::new();
    let create = |length: u64| {
        http.post(server.url("/api/v1/uploads"))
            .bearer_auth(&token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", length.to_string())
            .send()
    };
    assert_eq!(create(4_000_001).await.expect("create").status(), 413);
    let over_quota = create(3_000_000).await.expect("create");
    assert_eq!(over_quota.status(), 413);
    let problem: serde_json::Value = over_quota.json().await.expect("problem");
    assert_eq!(problem["type"], "/problems/upload-quota-exceeded");
    // Another protocol version.
    let old = http
        .post(server.url("/api/v1/uploads"))
        .bearer_auth(&token)
        .header("Upload-Length", "10")
        .send()
        .await
        .expect("create");
    assert_eq!(old.status(), 412);
    assert_eq!(old.headers()["tus-version"], "1.0.0");
    // Discovery.
    let options = http
        .request(reqwest::Method::OPTIONS, server.url("/api/v1/uploads"))
        .send()
        .await
        .expect("options");
    assert_eq!(
        options.headers()["tus-extension"],
        "creation,termination,expiration,checksum"
    );
    assert_eq!(options.headers()["tus-max-size"], "4000000");

    // A chunk whose checksum does not match is discarded (460).
    let small = client.create_upload(4, "small.bin").await.expect("create");
    let bad = http
        .patch(server.url(&small))
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header(
            "Upload-Checksum",
            "sha256 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        )
        .body(vec![1u8, 2, 3, 4])
        .send()
        .await
        .expect("patch");
    assert_eq!(bad.status().as_u16(), 460);
    assert_eq!(client.upload_offset(&small).await.expect("head").0, 0);

    // Someone else cannot see or touch it; its owner can remove it.
    let stranger =
        common::sign_in(&server, &SigningKey::from_bytes(&[0xa2; 32]).expect("key")).await;
    let peek = http
        .head(server.url(&small))
        .bearer_auth(&stranger)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("head");
    assert_eq!(peek.status(), 404);
    let removed = http
        .delete(server.url(&small))
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("delete");
    assert_eq!(removed.status(), 204);
    assert!(client.upload_offset(&small).await.is_err());
}
