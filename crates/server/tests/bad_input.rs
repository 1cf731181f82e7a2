//! Bad input never panics the server, never disturbs other streams, and
//! always gets a clear answer.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{ADMIN_TOKEN, H264, Server, publish, wait_child};

async fn problem(response: reqwest::Response, status: u16, problem_type: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.expect("problem json");
    assert_eq!(body["type"], problem_type, "{body}");
    assert_eq!(body["status"], status);
}

fn raw_http(addr: &str, request: &str) -> String {
    let mut socket = TcpStream::connect(addr.trim_start_matches("http://")).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    let _ = socket.read_to_string(&mut response);
    response
}

#[tokio::test(flavor = "multi_thread")]
async fn api_errors_are_problem_json() {
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();

    let no_token = client
        .post(server.url("/api/v1/streams"))
        .json(&serde_json::json!({"title": "x"}))
        .send()
        .await
        .expect("post");
    problem(no_token, 401, "/problems/unauthorized").await;

    let wrong_token = client
        .post(server.url("/api/v1/streams"))
        .bearer_auth("not-the-token")
        .json(&serde_json::json!({"title": "x"}))
        .send()
        .await
        .expect("post");
    // An unknown token authenticates nobody.
    problem(wrong_token, 401, "/problems/unauthorized").await;

    let too_large = client
        .post(server.url("/api/v1/streams"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(format!("{{\"title\": \"{}\"}}", "a".repeat(100_000)))
        .send()
        .await
        .expect("post");
    problem(too_large, 413, "/problems/payload-too-large").await;

    let not_json = client
        .post(server.url("/api/v1/streams"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .expect("post");
    problem(not_json, 400, "/problems/bad-request").await;

    let empty_title = client
        .post(server.url("/api/v1/streams"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"title": "   "}))
        .send()
        .await
        .expect("post");
    problem(empty_title, 400, "/problems/bad-request").await;

    let (id, _) = server.create_stream("exists").await;
    problem(
        reqwest::get(server.url("/api/v1/streams/nosuchstream"))
            .await
            .expect("get"),
        404,
        "/problems/not-found",
    )
    .await;
    problem(
        reqwest::get(server.url(&format!("/live/{id}/1440p/index.m3u8")))
            .await
            .expect("get"),
        404,
        "/problems/not-found",
    )
    .await;
    problem(
        reqwest::get(server.url(&format!("/live/{id}/master.m3u8")))
            .await
            .expect("get"),
        404,
        "/problems/not-found",
    )
    .await;
    problem(
        reqwest::get(server.url("/ipfs/QmNotACidv1"))
            .await
            .expect("get"),
        400,
        "/problems/bad-request",
    )
    .await;
    problem(
        reqwest::get(server.url("/api/v1/streams?state=sideways"))
            .await
            .expect("get"),
        400,
        "/problems/bad-request",
    )
    .await;
    problem(
        client
            .delete(server.url("/api/v1/streams"))
            .send()
            .await
            .expect("delete"),
        405,
        "/problems/method-not-allowed",
    )
    .await;

    // Paths that try to climb out, sent raw so no client normalizes them.
    for path in [
        format!("/live/{id}/../../../etc/passwd"),
        format!("/live/{id}/%2e%2e/index.m3u8"),
        format!("/live/{id}/720p/..%2f..%2fstreamweave.sqlite"),
        "/ipfs/../streamweave.sqlite".to_string(),
    ] {
        let response = raw_http(
            &server.http,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        let status_line = response.lines().next().unwrap_or_default().to_string();
        assert!(
            status_line.contains(" 404 ") || status_line.contains(" 400 "),
            "{path}: {status_line}"
        );
        assert!(!response.contains("SQLite format"), "{path} leaked a file");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_publishers_are_refused_without_disturbing_a_live_stream() {
    let mut server = Server::start(&[]).await;
    let (id, key) = server.create_stream("the live one").await;
    let mut good = publish(&format!("{}/live/{key}", server.rtmp), "640x360", 16, H264);
    server
        .wait_for_state(&id, "live", Duration::from_secs(20))
        .await;

    // A second publisher on the live key is refused.
    let mut second = publish(&format!("{}/live/{key}", server.rtmp), "640x360", 5, H264);
    assert!(
        !wait_child(&mut second, Duration::from_secs(20)),
        "second publisher refused"
    );

    // An unknown key and a wrong app name are refused.
    let mut unknown = publish(&format!("{}/live/sk_nope", server.rtmp), "320x240", 3, H264);
    assert!(!wait_child(&mut unknown, Duration::from_secs(20)));
    let mut wrong_app = publish(&format!("{}/other/{key}", server.rtmp), "320x240", 3, H264);
    assert!(!wait_child(&mut wrong_app, Duration::from_secs(20)));

    // A source that is not H.264 is refused, and its stream stays idle.
    let (other_id, other_key) = server.create_stream("wrong codec").await;
    let mut flv1 = publish(
        &format!("{}/live/{other_key}", server.rtmp),
        "320x240",
        3,
        &["-c:v", "flv1"],
    );
    assert!(!wait_child(&mut flv1, Duration::from_secs(20)));
    let other = server
        .get_json(&format!("/api/v1/streams/{other_id}"))
        .await;
    assert_eq!(other["state"], "idle");

    // Garbage instead of an RTMP handshake, and a valid C0 followed by junk chunks.
    let rtmp_addr = server.rtmp.trim_start_matches("rtmp://").to_string();
    for garbage in [vec![0x47u8; 5000], {
        let mut bytes = vec![3u8];
        bytes.extend(std::iter::repeat_n(0u8, 1536));
        bytes.extend(std::iter::repeat_n(0xffu8, 4000));
        bytes
    }] {
        let mut socket = TcpStream::connect(&rtmp_addr).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let _ = socket.write_all(&garbage);
        let mut sink = Vec::new();
        // The server closes the connection (read returns) rather than hanging or crashing.
        let _ = socket.read_to_end(&mut sink);
    }

    // The first stream was never disturbed: it finished normally with all its media.
    assert!(
        wait_child(&mut good, Duration::from_secs(60)),
        "first publisher ran to the end"
    );
    let ended = server
        .wait_for_state(&id, "ended", Duration::from_secs(60))
        .await;
    assert!(ended["end_error"].is_null(), "{ended}");
    let segments = server
        .get_json(&format!("/api/v1/streams/{id}/segments"))
        .await;
    let total_ms: u64 = segments
        .as_array()
        .expect("segments")
        .iter()
        .filter(|s| s["rendition"] == "360p")
        .map(|s| s["duration_ms"].as_u64().expect("ms"))
        .sum();
    assert!(total_ms >= 14_000, "360p media time {total_ms} ms");
    server.assert_alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_live_when_the_server_dies_is_ended_and_still_plays() {
    let mut server = Server::start(&[]).await;
    let (id, key) = server.create_stream("interrupted").await;
    let mut publisher = publish(&format!("{}/live/{key}", server.rtmp), "640x360", 30, H264);
    server
        .wait_for_state(&id, "live", Duration::from_secs(20))
        .await;
    // Wait for a few segments, then kill the server mid-stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let segments = server
            .get_json(&format!("/api/v1/streams/{id}/segments"))
            .await;
        if segments
            .as_array()
            .expect("array")
            .iter()
            .filter(|s| s["rendition"] == "360p")
            .count()
            >= 2
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no segments");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let data_dir = server.data_dir.clone();
    server.kill();
    let _ = publisher.kill();
    let _ = publisher.wait();

    let restarted = Server::start_in(&data_dir, &[]).await;
    let stream = restarted.get_json(&format!("/api/v1/streams/{id}")).await;
    assert_eq!(stream["state"], "ended");
    assert_eq!(stream["end_error"], "the broadcast ended unexpectedly");
    // The cause itself is for the creator and admins.
    let stream = restarted
        .get_json_as(&format!("/api/v1/streams/{id}"), ADMIN_TOKEN)
        .await;
    assert!(
        stream["end_error"]
            .as_str()
            .is_some_and(|e| e.contains("stopped"))
    );
    let playlist = reqwest::get(restarted.url(&format!("/live/{id}/360p/index.m3u8")))
        .await
        .expect("playlist")
        .text()
        .await
        .expect("text");
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    assert!(
        !data_dir.join("work").join(&id).exists(),
        "orphaned work files were cleaned up"
    );
    drop(server);
}
