//! Events end to end with the real binary and ffmpeg, on SQLite and on
//! PostgreSQL: tickets (limits, idempotency, a race for the last ones), the
//! ticket-only room, tips on the leaderboard, finalization paid by delivery
//! to the unit of the spec, the collectible and its metadata, the market
//! (resale cap, fee and royalty, a race for one listing), cancellation
//! refunds, bad input, and a clean audit.

mod common;

use std::time::Duration;

use common::{
    H264, Server, TestDatabase, Wallet, balances, fund, get, post, problem_type, publish,
    wait_child, wallet, wallet_of,
};
use serde_json::{Value, json};
use streamweave_ledger::SigningKey;

const FEE_BPS: u128 = 300;
const MARKET_FEE_BPS: u128 = 200;

fn rfc3339_in(seconds: i64) -> String {
    let at = chrono::Utc::now() + chrono::Duration::seconds(seconds);
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn create_event(server: &Server, creator: &Wallet, body: Value) -> Value {
    let (status, event) = post(server, "/api/v1/events", &creator.token, body).await;
    assert_eq!(status, 201, "{event}");
    event
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_from_tickets_to_the_collectible_on_sqlite() {
    let _one = common::one_at_a_time().await;
    scenario(&TestDatabase::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_from_tickets_to_the_collectible_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let _one = common::one_at_a_time().await;
    scenario(&database).await;
    database.drop_schema().await;
}

async fn scenario(database: &TestDatabase) {
    let server = Server::start(&database.args(&[
        "--dev",
        "--platform-fee-bps",
        "300",
        "--market-fee-bps",
        "200",
    ]))
    .await;
    let creator = wallet(&server, 0xc1).await;
    let alice = wallet(&server, 0xa1).await;
    let bob = wallet(&server, 0xb1).await;
    let carol = wallet(&server, 0xd1).await;
    for viewer in [&alice, &bob, &carol] {
        fund(&server, viewer, 1_000_000).await;
    }

    // Bad input moves nothing.
    let good = json!({"title": "Show", "starts_at": rfc3339_in(3600), "duration_seconds": 600,
        "ticket": {"price": "1000", "supply": 3, "per_wallet": 2, "resale_max_bps": 12000}});
    for (patch, field) in [
        (json!({"ticket": {"price": "1000", "supply": 0}}), "supply"),
        (json!({"ticket": {"price": "0", "supply": 3}}), "price"),
        (json!({"ticket": {"price": "-5", "supply": 3}}), "price"),
        (json!({"duration_seconds": 0}), "duration"),
        (json!({"starts_at": "tomorrow"}), "starts_at"),
    ] {
        let mut body = good.clone();
        for (key, value) in patch.as_object().expect("object") {
            body[key] = value.clone();
        }
        let (status, problem) = post(&server, "/api/v1/events", &creator.token, body).await;
        assert_eq!(status, 400, "{field}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{problem}"
        );
    }
    let (status, _) = post(
        &server,
        "/api/v1/events/0x00000000000000000000000000000000/tickets",
        &alice.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 404);

    // Tickets: the per-wallet limit, supply, idempotency.
    let later = create_event(&server, &creator, good.clone()).await;
    assert_eq!(later["state"], "scheduled");
    assert_eq!(later["tickets_left"], 3);
    let later_id = later["id"].as_str().expect("id").to_string();
    let tickets_path = format!("/api/v1/events/{later_id}/tickets");
    let (status, two) = post(
        &server,
        &tickets_path,
        &alice.token,
        json!({"quantity": 2, "id": "a1"}),
    )
    .await;
    assert_eq!(status, 201, "{two}");
    assert_eq!(two["tickets"].as_array().expect("tickets").len(), 2);
    let (status, again) = post(
        &server,
        &tickets_path,
        &alice.token,
        json!({"quantity": 2, "id": "a1"}),
    )
    .await;
    assert_eq!(
        (status, &again),
        (201, &two),
        "a retried purchase answers the same tickets"
    );
    let (status, reused) = post(
        &server,
        &tickets_path,
        &alice.token,
        json!({"quantity": 1, "id": "a1"}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(problem_type(&reused), "/problems/idempotency-conflict");
    let (status, limit) = post(&server, &tickets_path, &alice.token, json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(problem_type(&limit), "/problems/ticket-limit", "{limit}");
    let (status, _) = post(&server, &tickets_path, &bob.token, json!({})).await;
    assert_eq!(status, 201);
    let carol_before = balances(&server, &carol).await;
    let (status, sold_out) = post(&server, &tickets_path, &carol.token, json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(problem_type(&sold_out), "/problems/sold-out", "{sold_out}");
    assert_eq!(
        balances(&server, &carol).await,
        carol_before,
        "nothing moved"
    );
    assert_eq!(balances(&server, &alice).await.0, 1_000_000 - 2000);

    // Resale: within the cap, the fee to the platform, the rest to the seller.
    let alice_ticket = two["tickets"][0]["id"]
        .as_str()
        .expect("ticket")
        .to_string();
    let listing =
        |price: &str| json!({"item": {"kind": "ticket", "id": alice_ticket}, "price": price});
    let (status, above) = post(
        &server,
        "/api/v1/market/listings",
        &alice.token,
        listing("1201"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        problem_type(&above),
        "/problems/above-resale-cap",
        "{above}"
    );
    let (status, not_owned) = post(
        &server,
        "/api/v1/market/listings",
        &bob.token,
        listing("1000"),
    )
    .await;
    assert_eq!(status, 404, "{not_owned}");
    let (status, listed) = post(
        &server,
        "/api/v1/market/listings",
        &alice.token,
        listing("1200"),
    )
    .await;
    assert_eq!(status, 201, "{listed}");
    let listing_id = listed["id"].as_str().expect("id").to_string();
    let (status, own) = post(
        &server,
        &format!("/api/v1/market/listings/{listing_id}/buy"),
        &alice.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(problem_type(&own), "/problems/own-listing");
    // Two buyers race for it: exactly one gets it, the other moves nothing.
    let buy_path = format!("/api/v1/market/listings/{listing_id}/buy");
    let bob_before = balances(&server, &bob).await;
    let ((bob_status, bob_answer), (carol_status, carol_answer)) = tokio::join!(
        post(&server, &buy_path, &bob.token, json!({})),
        post(&server, &buy_path, &carol.token, json!({}))
    );
    let mut statuses = [bob_status, carol_status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{bob_answer} {carol_answer}");
    let (winner, loser, loser_before, sale) = if bob_status == 200 {
        (&bob, &carol, carol_before, bob_answer)
    } else {
        (&carol, &bob, bob_before, carol_answer)
    };
    assert_eq!(balances(&server, loser).await, loser_before);
    let fee = (1200 * MARKET_FEE_BPS).div_ceil(10_000);
    assert_eq!(sale["sale"]["fee"], fee.to_string());
    assert_eq!(sale["sale"]["seller"], (1200 - fee).to_string());
    assert_eq!(
        balances(&server, &alice).await.0,
        1_000_000 - 2000 + 1200 - fee
    );
    let (_, winner_tickets) = get(
        &server,
        &format!("/api/v1/accounts/{}/tickets", winner.address),
        Some(&winner.token),
    )
    .await;
    assert!(
        winner_tickets["tickets"]
            .as_array()
            .expect("tickets")
            .iter()
            .any(|t| t["id"] == alice_ticket.as_str())
    );
    let (status, _) = get(
        &server,
        &format!("/api/v1/accounts/{}/tickets", winner.address),
        Some(&alice.token),
    )
    .await;
    assert_eq!(status, 403, "tickets are their holder's to see");

    // Cancelling refunds every ticket what it paid, to its holder now.
    let before: Vec<(u128, u128)> = [
        balances(&server, &alice).await,
        balances(&server, &bob).await,
        balances(&server, &carol).await,
    ]
    .to_vec();
    let (status, cancelled) = post(
        &server,
        &format!("/api/v1/events/{later_id}/cancel"),
        &creator.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let refunds_of = |wallet: &Wallet| -> u128 {
        let mut held = 0;
        if wallet.address == alice.address {
            held += 1; // Alice kept one of her two.
        }
        if wallet.address == winner.address {
            held += 1; // The ticket bought on the market.
        }
        if wallet.address == bob.address {
            held += 1; // Bob's own.
        }
        held * 1000
    };
    for (wallet, (available_before, _)) in [&alice, &bob, &carol].into_iter().zip(before) {
        assert_eq!(
            balances(&server, wallet).await.0,
            available_before + refunds_of(wallet),
            "{}",
            wallet.address
        );
    }
    let (status, twice) = post(
        &server,
        &format!("/api/v1/events/{later_id}/cancel"),
        &creator.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{twice}");

    // The show: a room for ticket holders, paid by delivery.
    let duration_seconds: u128 = 20;
    let show = create_event(
        &server,
        &creator,
        json!({"title": "Live show", "category": "music", "starts_at": rfc3339_in(0),
            "duration_seconds": duration_seconds, "royalty_bps": 1000,
            "ticket": {"price": "10000", "supply": 10}}),
    )
    .await;
    let show_id = show["id"].as_str().expect("id").to_string();
    let stream_id = show["stream_id"].as_str().expect("stream").to_string();
    let stream_key = show["stream_key"]
        .as_str()
        .expect("creator sees the key")
        .to_string();
    let (_, public) = get(&server, &format!("/api/v1/events/{show_id}"), None).await;
    assert!(
        public["stream_key"].is_null(),
        "only the creator sees the key"
    );
    for viewer in [&alice, &bob] {
        let (status, _) = post(
            &server,
            &format!("/api/v1/events/{show_id}/tickets"),
            &viewer.token,
            json!({}),
        )
        .await;
        assert_eq!(status, 201);
    }
    let mut ffmpeg = publish(
        &format!("{}/live/{stream_key}", server.rtmp),
        "320x180",
        8,
        H264,
    );
    server
        .wait_for_state(&stream_id, "live", Duration::from_secs(30))
        .await;
    let (_, live) = get(&server, &format!("/api/v1/events/{show_id}"), None).await;
    assert_eq!(live["state"], "live");
    // Without a ticket: refused, and no post nor tip in the room.
    let session_path = format!("/api/v1/streams/{stream_id}/sessions");
    let (status, refused) = post(&server, &session_path, &carol.token, json!({})).await;
    assert_eq!(status, 403);
    assert_eq!(problem_type(&refused), "/problems/ticket-required");
    let (status, _) = post(
        &server,
        &format!("/api/v1/streams/{stream_id}/chat/messages"),
        &carol.token,
        json!({"text": "let me in"}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post(
        &server,
        &format!("/api/v1/streams/{stream_id}/tips"),
        &carol.token,
        json!({"amount": "999999"}),
    )
    .await;
    assert_eq!(status, 403);
    // With a ticket: a session that plays, where the public URL refuses.
    let (status, session) = post(&server, &session_path, &alice.token, json!({})).await;
    assert_eq!(status, 201, "{session}");
    assert!(session["ticket_id"].is_string());
    let playback = session["playback_url"].as_str().expect("url").to_string();
    let (status, master) = get(&server, &playback, None).await;
    assert_eq!(status, 200);
    let first_uri = |playlist: &Value| {
        playlist
            .as_str()
            .expect("playlist")
            .lines()
            .find(|line| !line.starts_with('#') && !line.is_empty())
            .expect("a URI")
            .to_string()
    };
    let media_uri = first_uri(&master);
    let rendition = media_uri.split('/').next().expect("rendition").to_string();
    let session_base = playback.trim_end_matches("master.m3u8").to_string();
    let segment = loop {
        let (_, media) = get(&server, &format!("{session_base}{media_uri}"), None).await;
        let text = media.as_str().unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.ends_with(".m4s")) {
            break line.to_string();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (status, _) = get(
        &server,
        &format!("{session_base}{rendition}/{segment}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "a ticket session plays every segment");
    let (status, _) = get(
        &server,
        &format!("/live/{stream_id}/{rendition}/{segment}"),
        None,
    )
    .await;
    assert_eq!(status, 402, "the room's media is not public");
    // One session per ticket: a second one ends the first.
    let (status, second) = post(&server, &session_path, &alice.token, json!({})).await;
    assert_eq!(status, 201);
    assert_eq!(get(&server, &playback, None).await.0, 404);
    assert_eq!(
        get(&server, second["playback_url"].as_str().expect("url"), None)
            .await
            .0,
        200
    );
    // Tips: Bob 700 first, Alice 500 then 200 (her 700 comes later).
    for (viewer, amount, key) in [(&bob, 700, "b1"), (&alice, 500, "a1"), (&alice, 200, "a2")] {
        let (status, tip) = post(
            &server,
            &format!("/api/v1/streams/{stream_id}/tips"),
            &viewer.token,
            json!({"amount": amount.to_string(), "id": key}),
        )
        .await;
        assert_eq!(status, 201, "{tip}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, board) = get(
        &server,
        &format!("/api/v1/events/{show_id}/leaderboard"),
        None,
    )
    .await;
    assert_eq!(board["frozen"], false);
    assert_eq!(
        board["standings"][0]["tipper"],
        bob.address.as_str(),
        "{board}"
    );
    assert_eq!(board["standings"][0]["total"], "700");
    assert_eq!(board["standings"][1]["tipper"], alice.address.as_str());
    assert_eq!(board["standings"][1]["total"], "700");
    let (status, early) = post(
        &server,
        &format!("/api/v1/events/{show_id}/finalize"),
        &creator.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "a live event does not finalize: {early}");
    assert_eq!(problem_type(&early), "/problems/event-not-over");

    assert!(wait_child(&mut ffmpeg, Duration::from_secs(60)));
    server
        .wait_for_state(&stream_id, "ended", Duration::from_secs(30))
        .await;
    let creator_before = balances(&server, &creator).await;
    let alice_before = balances(&server, &alice).await;
    let (status, stranger) = post(
        &server,
        &format!("/api/v1/events/{show_id}/finalize"),
        &alice.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 403, "{stranger}");
    let (status, finalized) = post(
        &server,
        &format!("/api/v1/events/{show_id}/finalize"),
        &creator.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{finalized}");
    assert_eq!(finalized["state"], "finalized");
    let delivered = u128::from(finalized["delivered_ms"].as_u64().expect("delivered"));
    assert!(
        (5_000..=12_000).contains(&delivered),
        "about 8 s were streamed: {delivered}"
    );
    // The spec, to the unit.
    let scheduled = duration_seconds * 1000;
    let refund = 10_000 * (scheduled - delivered) / scheduled;
    let released = 2 * (10_000 - refund);
    let platform_fee = (released * FEE_BPS).div_ceil(10_000);
    assert_eq!(finalized["released"], released.to_string());
    assert_eq!(balances(&server, &alice).await.0, alice_before.0 + refund);
    assert_eq!(
        balances(&server, &creator).await.1,
        creator_before.1 + released - platform_fee
    );
    // The collectible: to the top of the leaderboard, with its metadata.
    let collectible_id = finalized["collectible_id"]
        .as_str()
        .expect("minted")
        .to_string();
    let (_, collectible) = get(
        &server,
        &format!("/api/v1/collectibles/{collectible_id}"),
        None,
    )
    .await;
    assert_eq!(collectible["owner"], bob.address.as_str(), "{collectible}");
    assert_eq!(collectible["creator"], creator.address.as_str());
    assert!(collectible["archive_root_cid"].is_string(), "{collectible}");
    let metadata_cid = collectible["metadata_cid"].as_str().expect("cid");
    let (status, metadata) = get(&server, &format!("/ipfs/{metadata_cid}"), None).await;
    assert_eq!(status, 200, "{metadata}");
    assert_eq!(metadata["event"]["id"], show_id.as_str());
    assert_eq!(metadata["recording"], collectible["archive_root_cid"]);
    assert_eq!(metadata["leaderboard"][0]["tipper"], bob.address.as_str());
    // The prize is the recording: its holder plays the archive, others may not.
    let archive_master = format!(
        "/ipfs/{}/master.m3u8",
        collectible["archive_root_cid"].as_str().expect("root")
    );
    assert_eq!(get(&server, &archive_master, Some(&bob.token)).await.0, 200);
    assert_eq!(
        get(&server, &archive_master, Some(&carol.token)).await.0,
        402
    );
    let (_, frozen) = get(
        &server,
        &format!("/api/v1/events/{show_id}/leaderboard"),
        None,
    )
    .await;
    assert_eq!(frozen["frozen"], true);
    assert_eq!(frozen["standings"], board["standings"]);
    // Finalizing twice changes nothing.
    let creator_after = balances(&server, &creator).await;
    let (status, _) = post(
        &server,
        &format!("/api/v1/events/{show_id}/finalize"),
        &creator.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(balances(&server, &creator).await, creator_after);

    // The collectible on the market: the fee, the creator's royalty, the seller.
    let (status, listed) = post(
        &server,
        "/api/v1/market/listings",
        &bob.token,
        json!({"item": {"kind": "collectible", "id": collectible_id}, "price": "5000"}),
    )
    .await;
    assert_eq!(status, 201, "{listed}");
    let bob_before = balances(&server, &bob).await;
    let (status, sale) = post(
        &server,
        &format!(
            "/api/v1/market/listings/{}/buy",
            listed["id"].as_str().expect("id")
        ),
        &alice.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{sale}");
    let fee = (5000 * MARKET_FEE_BPS).div_ceil(10_000);
    let royalty = 5000 * 1000 / 10_000;
    assert_eq!(sale["sale"]["royalty"], royalty.to_string());
    assert_eq!(
        balances(&server, &bob).await.0,
        bob_before.0 + 5000 - fee - royalty
    );
    assert_eq!(
        balances(&server, &creator).await.1,
        creator_after.1 + royalty
    );
    let (_, collectible) = get(
        &server,
        &format!("/api/v1/collectibles/{collectible_id}"),
        None,
    )
    .await;
    assert_eq!(collectible["owner"], alice.address.as_str());
    assert_eq!(collectible["history"].as_array().expect("history").len(), 2);
    assert_eq!(collectible["history"][1]["price"], "5000");
    let (_, held) = get(
        &server,
        &format!("/api/v1/accounts/{}/collectibles", alice.address),
        None,
    )
    .await;
    assert_eq!(held["collectibles"][0]["id"], collectible_id.as_str());

    database.assert_ledger_audits(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_buyers_race_for_a_hundred_tickets_on_sqlite() {
    race(&TestDatabase::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_buyers_race_for_a_hundred_tickets_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    race(&database).await;
    database.drop_schema().await;
}

async fn race(database: &TestDatabase) {
    let server = Server::start(&database.args(&["--dev"])).await;
    let creator = wallet(&server, 0xc2).await;
    let event = create_event(
        &server,
        &creator,
        json!({"title": "Race", "starts_at": rfc3339_in(3600), "duration_seconds": 600,
            "ticket": {"price": "7", "supply": 100, "per_wallet": 1}}),
    )
    .await;
    let event_id = event["id"].as_str().expect("id").to_string();
    let mut buyers = Vec::new();
    for index in 0..200u32 {
        let mut seed = [0x5a; 32];
        seed[..4].copy_from_slice(&index.to_be_bytes());
        let buyer = wallet_of(&server, &SigningKey::from_bytes(&seed).expect("key")).await;
        fund(&server, &buyer, 100).await;
        buyers.push(buyer);
    }
    let path = format!("/api/v1/events/{event_id}/tickets");
    let attempts = buyers
        .iter()
        .map(|buyer| post(&server, &path, &buyer.token, json!({})));
    let answers = futures_util::future::join_all(attempts).await;
    let won = answers.iter().filter(|(status, _)| *status == 201).count();
    let sold_out = answers
        .iter()
        .filter(|(status, body)| *status == 409 && problem_type(body) == "/problems/sold-out")
        .count();
    assert_eq!((won, sold_out), (100, 100), "{answers:?}");
    let (_, event) = get(&server, &format!("/api/v1/events/{event_id}"), None).await;
    assert_eq!(event["tickets_sold"], 100);
    assert_eq!(event["tickets_left"], 0);
    let mut spent = 0;
    for buyer in &buyers {
        spent += 100 - balances(&server, buyer).await.0;
    }
    assert_eq!(spent, 700, "exactly the winners paid");
    database.assert_ledger_audits(&server.data_dir);
}
