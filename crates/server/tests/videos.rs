//! Uploaded videos against the real binary and ffmpeg: a file uploaded with
//! the SDK becomes a ready video with its ladder and CIDs, plays like a
//! recording, and its upload is removed; a file that is not a video fails
//! with a reason a person understands.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};
use streamweave_client::Client;
use streamweave_ledger::SigningKey;

async fn upload(client: &Client, path: &std::path::Path) -> String {
    let length = std::fs::metadata(path).expect("file").len();
    let url = client
        .create_upload(length, &path.file_name().expect("name").to_string_lossy())
        .await
        .expect("create upload");
    client
        .send_upload(&url, path, 256 * 1024, |_, _| {})
        .await
        .expect("send");
    url.rsplit('/').next().expect("id").to_string()
}

/// `POST /api/v1/videos` as the bearer of `token`; answers status and body.
async fn post_video(server: &Server, token: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url("/api/v1/videos"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("create video");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn wait_for_status(server: &Server, id: &str, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let video = server
            .get_json_as(&format!("/api/v1/videos/{id}"), token)
            .await;
        if video["status"] != "processing" {
            return video;
        }
        assert!(Instant::now() < deadline, "still processing: {video}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_file_becomes_a_video_that_plays() {
    let server = Server::start(&[]).await;
    let key = SigningKey::from_bytes(&[0xb1; 32]).expect("key");
    let mut client = Client::new(&server.http, key.clone());
    client.sign_in().await.expect("sign in");
    let token = common::sign_in(&server, &key).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let film = dir.path().join("film.mp4");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30:duration=5",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=5"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"])
        .arg(&film)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let upload_id = upload(&client, &film).await;

    let (status, created) = post_video(
        &server,
        &token,
        json!({"upload_id": upload_id, "title": "A test film", "category": "film", "tags": ["demo"]}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(created["status"], "processing");
    assert_eq!(created["source"], "upload");
    let id = created["id"].as_str().expect("id").to_string();
    // Processing is pushed on the video's events WebSocket, ending in `ready`.
    let events_url = format!(
        "{}/api/v1/streams/{id}/events",
        server.http.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(events_url)
        .await
        .expect("events socket");
    let pushed = tokio::time::timeout(Duration::from_secs(120), async {
        use futures_util::StreamExt;
        let mut seen = Vec::new();
        while let Some(Ok(message)) = socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let event: Value = serde_json::from_str(&text).expect("event");
                if event["type"] == "processing" {
                    let status = event["status"].as_str().unwrap_or_default().to_string();
                    seen.push(status.clone());
                    if status != "processing" {
                        break;
                    }
                }
            }
        }
        seen
    })
    .await
    .expect("processing events");
    assert_eq!(
        pushed.last().map(String::as_str),
        Some("ready"),
        "{pushed:?}"
    );

    let ready = wait_for_status(&server, &id, &token).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let duration = ready["duration_ms"].as_u64().expect("duration");
    assert!((4900..=5100).contains(&duration), "{ready}");
    // The transcode's speed is measured.
    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains("streamweave_transcode_realtime_factor_count 1"),
        "{metrics}"
    );
    let renditions: Vec<&str> = ready["renditions"]
        .as_array()
        .expect("renditions")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(renditions, ["360p", "audio"]);

    // It plays like a recording: the playlist ends, every segment is its CID.
    let playlist = reqwest::get(server.url(&format!("/live/{id}/360p/index.m3u8")))
        .await
        .expect("playlist")
        .text()
        .await
        .expect("text");
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    let segments = server
        .get_json(&format!("/api/v1/streams/{id}/segments"))
        .await;
    let first = &segments.as_array().expect("segments")[0];
    let bytes = reqwest::get(server.url(&format!(
        "/live/{id}/{}/{}.m4s",
        first["rendition"].as_str().expect("rendition"),
        first["sequence"]
    )))
    .await
    .expect("segment")
    .bytes()
    .await
    .expect("bytes");
    assert_eq!(
        streamweave_cas::file_cid(&bytes).to_string(),
        first["cid"].as_str().expect("cid")
    );
    // The upload's bytes are gone once processed.
    assert!(
        !server
            .data_dir
            .join("uploads")
            .join(format!("{upload_id}.bin"))
            .exists()
    );
    // Listed among videos, and among streams by source.
    let videos = server.get_json("/api/v1/videos").await;
    assert!(
        videos
            .as_array()
            .expect("list")
            .iter()
            .any(|v| v["id"] == id.as_str())
    );
    let uploads = server.get_json("/api/v1/streams?source=upload").await;
    assert_eq!(uploads.as_array().expect("list").len(), 1);
    let live_only = server.get_json("/api/v1/streams?source=live").await;
    assert!(live_only.as_array().expect("list").is_empty());

    // A text file named .mp4 fails with a reason, and its bytes go too.
    let notes = dir.path().join("notes.mp4");
    std::fs::write(&notes, "these are notes, not a film\n".repeat(100)).expect("write");
    let notes_upload = upload(&client, &notes).await;
    let (status, created) = post_video(
        &server,
        &token,
        json!({"upload_id": notes_upload, "title": "Not a film"}),
    )
    .await;
    assert_eq!(status, 201);
    let failed = wait_for_status(&server, created["id"].as_str().expect("id"), &token).await;
    assert_eq!(failed["status"], "failed");
    let reason = failed["failure_reason"].as_str().expect("reason");
    assert!(reason.contains("not a video"), "{reason}");
    assert!(
        !server
            .data_dir
            .join("uploads")
            .join(format!("{notes_upload}.bin"))
            .exists()
    );

    // An unfinished upload cannot become a video; another's upload is not found.
    let partial = client
        .create_upload(1000, "partial.mp4")
        .await
        .expect("create");
    let partial_id = partial.rsplit('/').next().expect("id");
    let (status, _) = post_video(
        &server,
        &token,
        json!({"upload_id": partial_id, "title": "Half"}),
    )
    .await;
    assert_eq!(status, 409);
    let stranger =
        common::sign_in(&server, &SigningKey::from_bytes(&[0xb2; 32]).expect("key")).await;
    let (status, _) = post_video(
        &server,
        &stranger,
        json!({"upload_id": partial_id, "title": "Not mine"}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upload_command_resumes_after_being_cut_off() {
    use std::io::{BufRead, BufReader};

    let server = Server::start(&[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("creator.key");
    let keys = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .args(["keys", "new", "--out"])
        .arg(&key_file)
        .output()
        .expect("keys new");
    assert!(keys.status.success());
    // Lossless frames make a file of several MiB from a few seconds.
    let film = dir.path().join("big.mkv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30:duration=4",
        ])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-qp", "0"])
        .arg(&film)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let size = std::fs::metadata(&film).expect("film").len();
    assert!(size > 4 * 1024 * 1024, "{size} bytes");
    // The first attempt is killed once a part has arrived.
    let mut first = upload_command(&film, &server.http, &key_file)
        .spawn()
        .expect("upload");
    let stderr = first.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("progress").expect("line");
        if line.starts_with("uploading: ") && line != "uploading: 0%" {
            break;
        }
    }
    first.kill().expect("kill");
    let _ = first.wait();
    let note = dir.path().join("big.mkv.upload.json");
    assert!(note.exists(), "the upload's address is kept for resuming");

    // The second resumes, makes the video and follows it until ready.
    let mut resume = upload_command(&film, &server.http, &key_file);
    let second = tokio::task::spawn_blocking(move || resume.output().expect("upload"))
        .await
        .expect("join");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{said}");
    assert!(said.contains("resuming /api/v1/uploads/"), "{said}");
    let video: Value = serde_json::from_slice(&second.stdout).expect("video JSON");
    assert_eq!(video["status"], "ready", "{video}");
    assert_eq!(video["title"], "Resumed");
    assert!(!note.exists(), "the note goes once the video exists");
}

fn upload_command(film: &std::path::Path, server: &str, key: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamweave"));
    command
        .arg("upload")
        .arg(film)
        .args(["--server", server, "--title", "Resumed", "--chunk-mib", "1"])
        .arg("--key")
        .arg(key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn a_video_interrupted_by_a_restart_is_processed_after_it() {
    let mut server = Server::start(&[]).await;
    let key = SigningKey::from_bytes(&[0xb3; 32]).expect("key");
    let mut client = Client::new(&server.http, key.clone());
    client.sign_in().await.expect("sign in");
    let token = common::sign_in(&server, &key).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let film = dir.path().join("long.mp4");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30:duration=15",
        ])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&film)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let upload_id = upload(&client, &film).await;
    let (status, created) = post_video(
        &server,
        &token,
        json!({"upload_id": upload_id, "title": "Interrupted"}),
    )
    .await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id").to_string();
    // Killed while transcoding.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let video = server.get_json(&format!("/api/v1/videos/{id}")).await;
        if video["progress"]["percent"].as_u64().is_some() {
            break;
        }
        assert_eq!(video["status"], "processing", "{video}");
        assert!(Instant::now() < deadline, "processing never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let data_dir = server.data_dir.clone();
    server.kill();

    let restarted = Server::start_in(&data_dir, &[]).await;
    let token = common::sign_in(&restarted, &key).await;
    let again = restarted
        .get_json_as(&format!("/api/v1/videos/{id}"), &token)
        .await;
    assert_eq!(again["status"], "processing", "queued again: {again}");
    let ready = wait_for_status(&restarted, &id, &token).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let duration = ready["duration_ms"].as_u64().expect("duration");
    assert!((14_900..=15_100).contains(&duration), "{ready}");
    drop(server);
}
