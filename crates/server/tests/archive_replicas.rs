//! Archives and replicas with the real binary: an ended stream is archived
//! and replicated to two directories, each replica read back and verified; a
//! corrupted replica is found and rewritten, and a corrupted block in the
//! blockstore is found and repaired from a replica.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{H264, Server, eventually, publish, start_s3, wait_child};
use serde_json::Value;

async fn archive_of(server: &Server, stream_id: &str) -> Value {
    server
        .get_json(&format!("/api/v1/streams/{stream_id}/archive"))
        .await
}

fn verify_file(path: &std::path::Path) -> bool {
    Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .arg("verify")
        .arg(path)
        .output()
        .expect("verify")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread")]
async fn ended_streams_are_replicated_verified_and_repaired() {
    let replicas = tempfile::tempdir().expect("tempdir");
    let (first, second) = (replicas.path().join("a"), replicas.path().join("b"));
    let server = Server::start(&[
        "--replica-dir",
        first.to_str().expect("path"),
        "--replica-dir",
        second.to_str().expect("path"),
        "--replica-verify-interval-s",
        "1",
    ])
    .await;
    let (stream_id, key) = server.create_stream("replicated").await;
    let mut ffmpeg = publish(&format!("{}/live/{key}", server.rtmp), "640x360", 6, H264);
    assert!(wait_child(&mut ffmpeg, Duration::from_secs(60)));
    server
        .wait_for_state(&stream_id, "ended", Duration::from_secs(30))
        .await;

    eventually("two verified replicas", async || {
        let archive = archive_of(&server, &stream_id).await;
        let replicas = archive["replicas"].as_array().cloned().unwrap_or_default();
        replicas.len() == 2 && replicas.iter().all(|r| r["state"] == "verified")
    })
    .await;
    let archive = archive_of(&server, &stream_id).await;
    let root = archive["root_cid"].as_str().expect("root").to_string();
    let first_car = first.join(format!("{root}.car"));
    assert!(verify_file(&first_car));
    assert!(verify_file(&second.join(format!("{root}.car"))));

    // A corrupted replica is found at its next check and written again.
    let mut bytes = std::fs::read(&first_car).expect("replica");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&first_car, &bytes).expect("corrupt");
    assert!(!verify_file(&first_car));
    eventually("the replica rewritten", async || verify_file(&first_car)).await;

    // A corrupted segment block in the store is repaired from a replica.
    let segments = server
        .get_json(&format!("/api/v1/streams/{stream_id}/segments"))
        .await;
    let cid = segments[0]["cid"].as_str().expect("cid").to_string();
    let block = server
        .data_dir
        .join("blocks/blocks")
        .join(&cid[cid.len() - 2..])
        .join(&cid);
    let good = std::fs::read(&block).expect("block");
    std::fs::write(&block, b"bit rot").expect("corrupt block");
    eventually("the block repaired", async || {
        std::fs::read(&block).is_ok_and(|now| now == good)
    })
    .await;
    let served = reqwest::get(server.url(&format!("/ipfs/{cid}")))
        .await
        .expect("ipfs");
    assert_eq!(served.status(), 200);
    let served = served.bytes().await.expect("bytes");
    assert_eq!(streamweave_cas::file_cid(&served).to_string(), cid);

    let status = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .args(["archive", "status", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .expect("status");
    assert!(status.status.success());
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(text.matches(&root).count(), 2, "{text}");
    assert!(text.contains("verified"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_recordings_go_and_only_their_blocks_are_collected() {
    let replicas = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&["--replica-dir", replicas.path().to_str().expect("path")]).await;
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    // Different sources, so the two recordings share no segment (identical
    // bytes would be one block, kept for the stream that keeps it).
    for (title, size) in [("kept", "640x360"), ("expiring", "854x480")] {
        let (id, key) = server.create_stream(title).await;
        let mut ffmpeg = publish(&format!("{}/live/{key}", server.rtmp), size, 4, H264);
        assert!(wait_child(&mut ffmpeg, Duration::from_secs(60)));
        server
            .wait_for_state(&id, "ended", Duration::from_secs(30))
            .await;
        streams.push(id);
    }
    let (kept, expiring) = (streams[0].clone(), streams[1].clone());
    let patched = client
        .patch(server.url(&format!("/api/v1/streams/{expiring}")))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&serde_json::json!({"retention_days": 1}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.expect("json");
    assert_eq!(patched["retention_days"], 1);
    let too_long = client
        .patch(server.url(&format!("/api/v1/streams/{kept}")))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&serde_json::json!({"retention_days": 100000}))
        .send()
        .await
        .expect("patch");
    assert_eq!(too_long.status(), 400);
    for id in [&kept, &expiring] {
        eventually("a verified replica", async || {
            let archive = archive_of(&server, id).await;
            archive["replicas"][0]["state"] == "verified"
        })
        .await;
    }
    let expiring_root = archive_of(&server, &expiring).await["root_cid"]
        .as_str()
        .expect("root")
        .to_string();
    let first_cid = |segments: &Value| segments[0]["cid"].as_str().expect("cid").to_string();
    let expiring_cid = first_cid(
        &server
            .get_json(&format!("/api/v1/streams/{expiring}/segments"))
            .await,
    );
    let kept_cid = first_cid(
        &server
            .get_json(&format!("/api/v1/streams/{kept}/segments"))
            .await,
    );
    let block_path = |cid: &str| {
        server
            .data_dir
            .join("blocks/blocks")
            .join(&cid[cid.len() - 2..])
            .join(cid)
    };
    assert!(block_path(&expiring_cid).exists());

    // Two days after it ended, the expiring recording goes.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        server.data_dir.join("streamweave.sqlite").display()
    ))
    .await
    .expect("database");
    sqlx::query("UPDATE streams SET ended_at_ms = ended_at_ms - 172800000 WHERE id = ?")
        .bind(&expiring)
        .execute(&pool)
        .await
        .expect("age the stream");
    eventually("the recording expired", async || {
        server
            .get_json(&format!("/api/v1/streams/{expiring}"))
            .await["expired_at"]
            .is_string()
    })
    .await;
    let segments = server
        .get_json(&format!("/api/v1/streams/{expiring}/segments"))
        .await;
    assert_eq!(segments.as_array().map(Vec::len), Some(0));
    assert!(
        !replicas
            .path()
            .join(format!("{expiring_root}.car"))
            .exists()
    );

    let gc = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .args(["blocks", "gc", "--grace-s", "0", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .expect("gc");
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let report: Value = serde_json::from_slice(&gc.stdout).expect("report");
    assert!(report["removed"].as_u64().expect("removed") > 0, "{report}");
    assert!(
        !block_path(&expiring_cid).exists(),
        "the expired segment's block is gone"
    );
    assert!(
        block_path(&kept_cid).exists(),
        "the kept stream's block stays"
    );
    let served = reqwest::get(server.url(&format!("/ipfs/{kept_cid}")))
        .await
        .expect("ipfs");
    assert_eq!(served.status(), 200);
    let kept_archive = archive_of(&server, &kept).await;
    let kept_master = reqwest::get(server.url(&format!(
        "/ipfs/{}/master.m3u8",
        kept_archive["root_cid"].as_str().expect("root")
    )))
    .await
    .expect("master");
    assert_eq!(kept_master.status(), 200, "the kept archive still resolves");
}

#[tokio::test(flavor = "multi_thread")]
async fn archives_replicate_to_an_s3_bucket() {
    let s3 = start_s3("replicas").await;
    let server = Server::start_with_env(
        &[
            "--replica-s3",
            "s3://replicas/archives",
            "--replica-s3-endpoint",
            &s3.endpoint,
            "--replica-verify-interval-s",
            "1",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "streamweave-test"),
            ("AWS_SECRET_ACCESS_KEY", "streamweave-test"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ],
    )
    .await;
    let (stream_id, key) = server.create_stream("to s3").await;
    let mut ffmpeg = publish(&format!("{}/live/{key}", server.rtmp), "640x360", 4, H264);
    assert!(wait_child(&mut ffmpeg, Duration::from_secs(60)));
    server
        .wait_for_state(&stream_id, "ended", Duration::from_secs(30))
        .await;
    eventually(
        "a verified S3 replica beside the directory one",
        async || {
            let archive = archive_of(&server, &stream_id).await;
            let replicas = archive["replicas"].as_array().cloned().unwrap_or_default();
            replicas.len() == 2
                && replicas.iter().all(|r| r["state"] == "verified")
                && replicas
                    .iter()
                    .any(|r| r["target"] == "s3://replicas/archives")
        },
    )
    .await;
    let root = archive_of(&server, &stream_id).await["root_cid"]
        .as_str()
        .expect("root")
        .to_string();
    let object = format!("{}/replicas/archives/{root}.car", s3.endpoint);
    let client = reqwest::Client::new();
    let fetch_and_verify = async || {
        let Ok(response) = client.get(&object).send().await else {
            return false;
        };
        let Ok(bytes) = response.bytes().await else {
            return false;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("replica.car");
        std::fs::write(&path, &bytes).expect("write");
        verify_file(&path)
    };
    assert!(fetch_and_verify().await, "the object is the archive's CAR");

    // Overwritten with garbage in the bucket: found and uploaded again.
    let overwritten = client
        .put(&object)
        .body("not a CAR")
        .send()
        .await
        .expect("overwrite");
    assert!(overwritten.status().is_success());
    assert!(!fetch_and_verify().await);
    eventually("the S3 replica rewritten", fetch_and_verify).await;
}

#[test]
fn a_replication_factor_above_the_targets_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0"])
        .args(["--replication-factor", "2"])
        .output()
        .expect("serve");
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("--replication-factor 2 needs as many replica targets; 1 are configured"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recordings_of_the_same_media_each_have_an_archive_of_their_own() {
    let replicas = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&["--replica-dir", replicas.path().to_str().expect("path")]).await;
    // The same source twice, encoded the same way: the recordings' media
    // are the same blocks. Each must still be archived and replicated once,
    // under a root of its own (a shared root left the second stream
    // unarchived, and rebuilt on every round of the archiver).
    let mut streams = Vec::new();
    for title in ["first showing", "second showing"] {
        let (id, key) = server.create_stream(title).await;
        let mut ffmpeg = publish(&format!("{}/live/{key}", server.rtmp), "640x360", 4, H264);
        assert!(wait_child(&mut ffmpeg, Duration::from_secs(60)));
        server
            .wait_for_state(&id, "ended", Duration::from_secs(30))
            .await;
        streams.push(id);
    }
    let mut roots = Vec::new();
    for id in &streams {
        eventually("a verified replica", async || {
            let archive = archive_of(&server, id).await;
            archive["replicas"][0]["state"] == "verified"
        })
        .await;
        let archive = archive_of(&server, id).await;
        assert_eq!(archive["replicas"].as_array().map(Vec::len), Some(1));
        roots.push(archive["root_cid"].as_str().expect("root").to_string());
    }
    assert_ne!(roots[0], roots[1], "each recording has a root of its own");
    // Each root names its stream.
    for (root, id) in roots.iter().zip(&streams) {
        let named: Value = reqwest::get(server.url(&format!("/ipfs/{root}/stream.json")))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(named["stream_id"], id.as_str());
    }
}
