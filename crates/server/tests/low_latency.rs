//! LL-HLS through the real binary and ffmpeg: a live rendition's playlist
//! lists partial segments by Apple's rules, a blocking reload waits for the
//! part it names, the hinted part is served as soon as ffmpeg writes it, a
//! segment is its parts' bytes, bad reload parameters get a clear 400, and a
//! paid session is metered by the media time of each part, the whole
//! segment then costing only what its parts did not.

mod common;

use std::time::Duration;

use common::{H264, Server, hex, publish, send, sign_in, wait_child};
use reqwest::Method;
use serde_json::json;
use streamweave_ledger::{PaymentDomain, SigningKey};

/// A listed part: (segment, index, duration in ms, independent).
type Part = (u64, u32, u32, bool);

fn parts_of(playlist: &str) -> Vec<Part> {
    playlist
        .lines()
        .filter_map(|line| line.strip_prefix("#EXT-X-PART:"))
        .map(|attributes| {
            let duration: f64 = attribute(attributes, "DURATION").parse().expect("duration");
            let (sequence, index) = part_name(attribute(attributes, "URI"));
            (
                sequence,
                index,
                (duration * 1000.0).round() as u32,
                attributes.contains("INDEPENDENT=YES"),
            )
        })
        .collect()
}

fn attribute<'a>(attributes: &'a str, name: &str) -> &'a str {
    attributes
        .split(',')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {attributes}"))
        .trim_matches('"')
}

fn part_name(uri: &str) -> (u64, u32) {
    let (sequence, index) = uri
        .strip_suffix(".m4s")
        .and_then(|name| name.split_once('.'))
        .expect("N.P.m4s");
    (sequence.parse().expect("N"), index.parse().expect("P"))
}

fn tag_value<'a>(playlist: &'a str, tag: &str) -> &'a str {
    playlist
        .lines()
        .find_map(|line| line.strip_prefix(tag))
        .unwrap_or_else(|| panic!("{tag} in\n{playlist}"))
}

async fn bytes_as(server: &Server, path: &str, token: &str) -> (u16, Vec<u8>) {
    let response = reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn live_renditions_serve_parts_with_blocking_reloads_and_meter_them() {
    let _alone = common::one_at_a_time().await;
    let server = Server::start(&["--dev"]).await;
    let creator = SigningKey::from_bytes(&[0x81; 32]).expect("key");
    let viewer = SigningKey::from_bytes(&[0x82; 32]).expect("key");
    let session_key = SigningKey::from_bytes(&[0x83; 32]).expect("key");
    let creator_token = sign_in(&server, &creator).await;
    let viewer_token = sign_in(&server, &viewer).await;
    // 1000 base units a second: one unit a millisecond.
    let (status, stream) = send(Method::POST, &server, "/api/v1/streams", Some(&creator_token), Some(json!({
        "title": "low latency", "access": "per_second", "price": {"amount": "1000", "period_seconds": 1}
    }))).await;
    assert_eq!(status, 201, "{stream}");
    let id = stream["id"].as_str().expect("id").to_string();
    let key = stream["stream_key"].as_str().expect("key");
    let mut ffmpeg = publish(&format!("{}/live/{key}", server.rtmp), "640x360", 24, H264);
    server
        .wait_for_state(&id, "live", Duration::from_secs(20))
        .await;

    // Wait for two whole segments, then read the playlist by Apple's rules.
    let playlist_path = format!("/live/{id}/360p/index.m3u8");
    let mut playlist = String::new();
    for _ in 0..200 {
        let (_, body) = send(Method::GET, &server, &playlist_path, None, None).await;
        playlist = body.as_str().unwrap_or_default().to_string();
        if playlist.matches("#EXTINF").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(playlist.matches("#EXTINF").count() >= 2, "{playlist}");
    let part_target: f64 = tag_value(&playlist, "#EXT-X-PART-INF:PART-TARGET=")
        .parse()
        .expect("part target");
    let control = tag_value(&playlist, "#EXT-X-SERVER-CONTROL:");
    assert!(control.contains("CAN-BLOCK-RELOAD=YES"), "{control}");
    let hold_back: f64 = attribute(control, "PART-HOLD-BACK")
        .parse()
        .expect("hold back");
    assert!(hold_back >= 3.0 * part_target - 0.0015, "{control}");
    let parts = parts_of(&playlist);
    assert!(parts.len() >= 6, "{playlist}");
    for (sequence, index, duration_ms, independent) in &parts {
        assert!(
            f64::from(*duration_ms) / 1000.0 <= part_target + 0.0005,
            "part {sequence}.{index} is longer than PART-TARGET"
        );
        assert!(
            (250..=400).contains(duration_ms),
            "part {sequence}.{index}: {duration_ms} ms"
        );
        if *index == 0 {
            assert!(independent, "segments start with a keyframe");
        }
    }

    // The hinted part: a blocking reload for it returns once it is listed,
    // and the part itself is served as soon as ffmpeg has written it.
    let hint = part_name(attribute(
        tag_value(&playlist, "#EXT-X-PRELOAD-HINT:"),
        "URI",
    ));
    let (status, part_bytes) = bytes_as(
        &server,
        &format!("/live/{id}/360p/{}.{}.m4s", hint.0, hint.1),
        &creator_token,
    )
    .await;
    assert_eq!(status, 200, "the hinted part");
    assert_eq!(&part_bytes[4..8], b"moof");
    let (status, reloaded) = send(
        Method::GET,
        &server,
        &format!("{playlist_path}?_HLS_msn={}&_HLS_part={}", hint.0, hint.1),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let reloaded = reloaded.as_str().expect("playlist").to_string();
    assert!(
        parts_of(&reloaded)
            .iter()
            .any(|p| (p.0, p.1) == hint || (p.0 == hint.0 + 1 && p.1 == 0)),
        "the reload holds {hint:?}:\n{reloaded}"
    );
    // The next segment is not there yet: the reload waits for it.
    let next_segment = parts_of(&reloaded).last().expect("parts").0 + 1;
    let (status, later) = send(
        Method::GET,
        &server,
        &format!("{playlist_path}?_HLS_msn={next_segment}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        later
            .as_str()
            .expect("playlist")
            .contains(&format!("\n{next_segment}.m4s\n")),
        "segment {next_segment} listed:\n{later}"
    );

    // Bad reload parameters.
    for query in [
        "_HLS_msn=x",
        "_HLS_part=1",
        "_HLS_msn=1&_HLS_part=-1",
        &format!("_HLS_msn={}", next_segment + 10),
    ] {
        let (status, problem) = send(
            Method::GET,
            &server,
            &format!("{playlist_path}?{query}"),
            None,
            None,
        )
        .await;
        assert_eq!(status, 400, "{query}: {problem}");
        assert_eq!(problem["status"], 400, "problem+json for {query}");
    }
    // Part files that will never come: far past the live edge, or past the
    // last part of a finished segment.
    let (status, _) = bytes_as(
        &server,
        &format!("/live/{id}/360p/{}.0.m4s", next_segment + 10),
        &creator_token,
    )
    .await;
    assert_eq!(status, 404, "a part far past the live edge");
    let (_, now_listed) = send(Method::GET, &server, &playlist_path, None, None).await;
    let now_parts = parts_of(now_listed.as_str().expect("playlist"));
    let finished = now_parts[0].0;
    let last_index = now_parts
        .iter()
        .filter(|p| p.0 == finished)
        .map(|p| p.1)
        .max()
        .expect("parts of the first listed segment");
    let (status, _) = bytes_as(
        &server,
        &format!("/live/{id}/360p/{finished}.{}.m4s", last_index + 1),
        &creator_token,
    )
    .await;
    assert_eq!(status, 404, "a part past the last of a finished segment");
    let (status, problem) = send(
        Method::GET,
        &server,
        &format!("/live/{id}/360p/{}.{}.m4s", hint.0, hint.1),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (402, Some("/problems/session-required")),
        "parts of a paid stream need a session"
    );

    // A whole segment with all its parts still listed: its bytes are theirs.
    let (_, listing) = send(Method::GET, &server, &playlist_path, None, None).await;
    let listing = listing.as_str().expect("playlist").to_string();
    let parts = parts_of(&listing);
    let whole: Vec<u64> = listing
        .lines()
        .filter_map(|line| line.strip_suffix(".m4s"))
        .filter_map(|name| name.parse().ok())
        .filter(|sequence| parts.iter().any(|p| p.0 == *sequence && p.1 == 0))
        .collect();
    let segment = *whole.first().expect("a whole segment with its parts");
    let mut joined = Vec::new();
    for (_, index, _, _) in parts.iter().filter(|p| p.0 == segment) {
        let (status, bytes) = bytes_as(
            &server,
            &format!("/live/{id}/360p/{segment}.{index}.m4s"),
            &creator_token,
        )
        .await;
        assert_eq!(status, 200);
        joined.extend(bytes);
    }
    let (status, segment_bytes) = bytes_as(
        &server,
        &format!("/live/{id}/360p/{segment}.m4s"),
        &creator_token,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(joined, segment_bytes, "segment {segment} is its parts");

    // A paying viewer: parts charge their media time, the whole segment
    // the rest of it, another rendition's part of the same time nothing.
    let (status, _) = send(
        Method::POST,
        &server,
        "/api/v1/dev/faucet",
        None,
        Some(json!({"address": format!("{:#x}", viewer.address()), "amount": "1000000"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, channel) = send(Method::POST, &server, "/api/v1/channels", Some(&viewer_token), Some(json!({
        "payee": format!("{:#x}", creator.address()), "deposit": "100000", "signer": format!("{:#x}", session_key.address())
    }))).await;
    assert_eq!(status, 201, "{channel}");
    let channel_id = channel["id"].as_str().expect("id").to_string();
    let (status, session) = send(
        Method::POST,
        &server,
        &format!("/api/v1/streams/{id}/sessions"),
        Some(&viewer_token),
        Some(json!({"channel_id": channel_id})),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let play = session["playback_url"]
        .as_str()
        .expect("url")
        .trim_end_matches("master.m3u8")
        .to_string();
    let channel_b256 = channel_id.parse().expect("b256");
    let pay = async |amount: u64| {
        let digest = PaymentDomain::EMBEDDED.voucher_digest(channel_b256, u128::from(amount));
        let (status, body) = send(
            Method::POST,
            &server,
            &format!("/api/v1/channels/{channel_id}/vouchers"),
            None,
            Some(json!({"amount": amount.to_string(), "signature": hex(&session_key.sign_digest(digest))})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    };
    let segment_parts: Vec<Part> = parts.iter().filter(|p| p.0 == segment).copied().collect();
    let first_two = u64::from(segment_parts[0].2 + segment_parts[1].2);
    // Part 1 reaches through parts 0 and 1 of the segment.
    let part_path = format!("{play}360p/{segment}.1.m4s");
    let (status, problem) = send(Method::GET, &server, &part_path, None, None).await;
    assert_eq!(status, 402, "{problem}");
    assert_eq!(problem["required_amount"], first_two.to_string());
    assert_eq!(problem["segment"]["whole"], false);
    pay(first_two).await;
    let (status, _) = send(Method::GET, &server, &part_path, None, None).await;
    assert_eq!(status, 200);
    for free in [
        format!("{play}360p/{segment}.0.m4s"),
        format!("{play}audio/{segment}.0.m4s"),
    ] {
        let (status, problem) = send(Method::GET, &server, &free, None, None).await;
        assert_eq!(status, 200, "{free} is within what was paid: {problem}");
    }
    let segments = server
        .get_json(&format!("/api/v1/streams/{id}/segments"))
        .await;
    let duration_ms = segments
        .as_array()
        .expect("segments")
        .iter()
        .find(|s| s["rendition"] == "360p" && s["sequence"] == segment)
        .and_then(|s| s["duration_ms"].as_u64())
        .expect("the segment's duration");
    let whole_path = format!("{play}360p/{segment}.m4s");
    let (status, problem) = send(Method::GET, &server, &whole_path, None, None).await;
    assert_eq!(status, 402);
    assert_eq!(
        problem["required_amount"],
        duration_ms.to_string(),
        "the whole segment costs its duration once"
    );
    pay(duration_ms).await;
    let (status, _) = send(Method::GET, &server, &whole_path, None, None).await;
    assert_eq!(status, 200);
    let last_part = segment_parts.last().expect("parts").1;
    let (status, _) = send(
        Method::GET,
        &server,
        &format!("{play}360p/{segment}.{last_part}.m4s"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "a part of a paid segment is free");

    assert!(wait_child(&mut ffmpeg, Duration::from_secs(60)));
    let ended = server
        .wait_for_state(&id, "ended", Duration::from_secs(60))
        .await;
    assert!(ended["end_error"].is_null(), "ended cleanly: {ended}");
    let (_, closed) = send(Method::GET, &server, &playlist_path, None, None).await;
    let closed = closed.as_str().expect("playlist");
    assert!(closed.trim_end().ends_with("#EXT-X-ENDLIST"), "{closed}");
    assert!(
        !closed.contains("#EXT-X-PART"),
        "an ended playlist lists no parts"
    );
}
