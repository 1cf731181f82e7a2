//! A creator publishes 12 s of 720p over RTMP; the stream plays as adaptive
//! HLS, every segment's CID recomputes from the served bytes, the playlist
//! closes when the publisher stops, and a restart keeps it all.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{H264, Server, TestDatabase, publish, wait_child};

fn ffprobe_json(url: &str) -> serde_json::Value {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_streams", url])
        .output()
        .expect("run ffprobe");
    assert!(
        output.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("ffprobe json")
}

/// A data directory named relative to the server's working directory (the
/// demo's `./streamweave-demo`) goes live and ends cleanly like an absolute
/// one: ffmpeg is given its rendition sockets by absolute path.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_given_relative_goes_live() {
    let server = Server::start_relative(&[]).await;
    let (id, key) = server.create_stream("Relative data dir").await;
    let mut ffmpeg = publish(&format!("{}/live/{key}", server.rtmp), "640x360", 6, H264);
    server
        .wait_for_state(&id, "live", Duration::from_secs(20))
        .await;
    publisher_ends_cleanly(&server, &id, &mut ffmpeg).await;
    let segments = server
        .get_json(&format!("/api/v1/streams/{id}/segments"))
        .await;
    assert!(
        segments.as_array().map_or(0, Vec::len) >= 4,
        "6 s of media listed as segments: {segments}"
    );
}

/// Waits for the publisher `ffmpeg` to finish and stream `id` to end
/// without an error.
async fn publisher_ends_cleanly(server: &Server, id: &str, ffmpeg: &mut std::process::Child) {
    assert!(
        wait_child(ffmpeg, Duration::from_secs(60)),
        "publisher failed"
    );
    let ended = server
        .wait_for_state(id, "ended", Duration::from_secs(60))
        .await;
    assert!(ended["end_error"].is_null(), "ended cleanly: {ended}");
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_720p_plays_as_adaptive_hls_with_verified_cids() {
    let _alone = common::one_at_a_time().await;
    scenario(&TestDatabase::Sqlite).await;
}

/// The same with all of the node's state on PostgreSQL.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_with_all_state_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let _alone = common::one_at_a_time().await;
    scenario(&database).await;
    database.drop_schema().await;
}

async fn scenario(database: &TestDatabase) {
    let mut server = Server::start(&database.args(&[])).await;
    let (id, key) = server.create_stream("Go live test").await;

    let mut ffmpeg = publish(&format!("{}/live/{key}", server.rtmp), "1280x720", 12, H264);
    let live = server
        .wait_for_state(&id, "live", Duration::from_secs(20))
        .await;
    let names: Vec<&str> = live["renditions"]
        .as_array()
        .expect("renditions")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["720p", "480p", "360p", "audio"]);

    publisher_ends_cleanly(&server, &id, &mut ffmpeg).await;

    // The master playlist holds the ladder plus audio, as ffprobe sees it.
    let master_url = server.url(&format!("/live/{id}/master.m3u8"));
    let master = reqwest::get(&master_url).await.expect("master");
    assert_eq!(
        master.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    let probe = ffprobe_json(&master_url);
    let streams = probe["streams"].as_array().expect("streams");
    let mut heights: Vec<u64> = streams
        .iter()
        .filter(|s| s["codec_type"] == "video")
        .filter_map(|s| s["height"].as_u64())
        .collect();
    heights.sort_unstable();
    heights.dedup();
    assert_eq!(heights, [360, 480, 720]);
    assert!(
        streams
            .iter()
            .any(|s| s["codec_type"] == "audio" && s["codec_name"] == "aac"),
        "audio rendition: {probe}"
    );
    for stream in streams.iter().filter(|s| s["codec_type"] == "video") {
        assert_eq!(stream["codec_name"], "h264");
    }

    // Every rendition's playlist is closed and decodes end to end.
    for rendition in ["720p", "480p", "360p", "audio"] {
        let url = server.url(&format!("/live/{id}/{rendition}/index.m3u8"));
        let playlist = reqwest::get(&url)
            .await
            .expect("playlist")
            .text()
            .await
            .expect("text");
        assert!(
            playlist.trim_end().ends_with("#EXT-X-ENDLIST"),
            "{rendition} playlist not closed:\n{playlist}"
        );
        let decode = Command::new("ffmpeg")
            .args(["-v", "error", "-i", &url, "-f", "null", "-"])
            .output()
            .expect("decode");
        assert!(
            decode.status.success() && decode.stderr.is_empty(),
            "{rendition} does not decode cleanly: {}",
            String::from_utf8_lossy(&decode.stderr)
        );
    }

    // About 12 s of media in 2 s segments per rendition, each CID recomputing from served bytes.
    let segments = server
        .get_json(&format!("/api/v1/streams/{id}/segments"))
        .await;
    let segments = segments.as_array().expect("segments");
    let video_720: Vec<_> = segments
        .iter()
        .filter(|s| s["rendition"] == "720p")
        .collect();
    let total_ms: u64 = video_720
        .iter()
        .map(|s| s["duration_ms"].as_u64().expect("ms"))
        .sum();
    assert!(
        (10_000..=14_500).contains(&total_ms),
        "720p media time {total_ms} ms"
    );
    for segment in segments {
        let rendition = segment["rendition"].as_str().expect("rendition");
        let sequence = segment["sequence"].as_u64().expect("sequence");
        let cid = segment["cid"].as_str().expect("cid");
        let segment_url = server.url(&format!("/live/{id}/{rendition}/{sequence}.m4s"));
        let response = reqwest::get(&segment_url).await.expect("segment");
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["cache-control"]
                .to_str()
                .expect("ascii")
                .contains("immutable")
        );
        assert_eq!(response.headers()["etag"], format!("\"{cid}\"").as_str());
        let mut plain_headers = response.headers().clone();
        plain_headers.remove("date");
        let bytes = response.bytes().await.expect("bytes");
        assert_eq!(bytes.len() as u64, segment["size"].as_u64().expect("size"));
        assert_eq!(streamweave_cas::file_cid(&bytes).to_string(), cid);
        // A whole segment's head is written from fixed lines; one asked
        // with another version in hand is built header by header: the
        // same answer.
        let revalidated = reqwest::Client::new()
            .get(&segment_url)
            .header("if-none-match", "\"another\"")
            .send()
            .await
            .expect("segment");
        assert_eq!(revalidated.status(), 200);
        let mut revalidated_headers = revalidated.headers().clone();
        revalidated_headers.remove("date");
        assert_eq!(plain_headers, revalidated_headers, "{segment_url}");
        assert_eq!(revalidated.bytes().await.expect("bytes"), bytes);
        // The first answer by CID comes from the router (which finds the
        // CID public), the next from memory: the same answer.
        let mut answers = Vec::new();
        for _ in 0..2 {
            let response = reqwest::get(server.url(&format!("/ipfs/{cid}")))
                .await
                .expect("ipfs");
            let mut headers = response.headers().clone();
            headers.remove("date");
            let status = response.status();
            let via_ipfs = response.bytes().await.expect("bytes");
            assert_eq!(via_ipfs, bytes);
            answers.push((status, headers));
        }
        assert_eq!(answers[0], answers[1], "/ipfs/{cid}");
    }

    // A byte range of a segment.
    let first = &video_720[0];
    let ranged = reqwest::Client::new()
        .get(server.url(&format!("/live/{id}/720p/0.m4s")))
        .header("range", "bytes=0-99")
        .send()
        .await
        .expect("range");
    assert_eq!(ranged.status(), 206);
    assert_eq!(
        ranged.headers()["content-range"],
        format!("bytes 0-99/{}", first["size"]).as_str()
    );
    assert_eq!(ranged.bytes().await.expect("bytes").len(), 100);

    // After a restart, the stream is still there and still plays.
    let data_dir = server.data_dir.clone();
    server.kill();
    let restarted = Server::start_in(&data_dir, &database.args(&[])).await;
    let again = restarted.get_json(&format!("/api/v1/streams/{id}")).await;
    assert_eq!(again["state"], "ended");
    let playlist = reqwest::get(restarted.url(&format!("/live/{id}/480p/index.m3u8")))
        .await
        .expect("playlist")
        .text()
        .await
        .expect("text");
    assert!(playlist.contains("0.m4s") && playlist.contains("#EXT-X-ENDLIST"));
    let bytes = reqwest::get(restarted.url(&format!("/live/{id}/720p/0.m4s")))
        .await
        .expect("segment")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(
        streamweave_cas::file_cid(&bytes).to_string(),
        first["cid"].as_str().expect("cid")
    );
    drop(restarted);
    database.assert_ledger_audits(&data_dir);
    // The offline tools read the same store.
    let status = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .args(["archive", "status", "--data-dir"])
        .arg(&data_dir)
        .args(database.args(&[]))
        .output()
        .expect("archive status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    drop(server);
}
