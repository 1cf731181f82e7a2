//! Memberships end to end with the real binary and ffmpeg, on SQLite and on
//! PostgreSQL: tiers and bad input, joining, upgrading and downgrading by
//! the spec, member sessions limited to the tier's quality and streams at
//! once (racing starts included), progress and history, then two members
//! and three creators through short pool rounds: every allocation checked
//! against the published statement (re-derived with the spec's arithmetic)
//! and the ledger, a paid stream's channel feeding the pool its view part, a creator nobody watched paid nothing, the pool holding
//! exactly the carry, and a clean audit.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    ADMIN_TOKEN, Server, TestDatabase, Wallet, balances, fund, get, post, problem_type, publish,
    send, wallet, wallet_of,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use streamweave_client::Client;
use streamweave_ledger::economics::{PoolMode, RoundInputs, VIEW_POOL_RECIPIENT, close_round};
use streamweave_ledger::{Address, Amount, SigningKey};

const ROUND_SECONDS: u64 = 15;

const SMALL: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-g",
    "30",
    "-pix_fmt",
    "yuv420p",
];

#[tokio::test(flavor = "multi_thread")]
async fn members_watch_and_the_pool_pays_by_round_on_sqlite() {
    let _one = common::one_at_a_time().await;
    scenario(&TestDatabase::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn members_watch_and_the_pool_pays_by_round_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let _one = common::one_at_a_time().await;
    scenario(&database).await;
    database.drop_schema().await;
}

async fn create_tier(server: &Server, path: &str, token: &str, body: Value) -> Value {
    let (status, tier) = post(server, path, token, body).await;
    assert_eq!(status, 201, "{tier}");
    tier
}

/// A members stream of `creator`'s, live from ffmpeg at `size`.
async fn members_stream(
    server: &Server,
    creator: &Wallet,
    tiers: Value,
    size: &str,
) -> (String, std::process::Child) {
    let (status, stream) = post(
        server,
        "/api/v1/streams",
        &creator.token,
        json!({"title": "members only", "access": "members", "tiers": tiers}),
    )
    .await;
    assert_eq!(status, 201, "{stream}");
    let id = stream["id"].as_str().expect("id").to_string();
    let key = stream["stream_key"].as_str().expect("key");
    let ffmpeg = publish(&format!("{}/live/{key}", server.rtmp), size, 45, SMALL);
    (id, ffmpeg)
}

/// Plays a session like a player: the master, a media playlist, every
/// segment listed. Answers (master text, segments fetched).
async fn play(server: &Server, playback_url: &str) -> (String, usize) {
    let (status, master) = get(server, playback_url, None).await;
    assert_eq!(status, 200, "{master}");
    let master = master.as_str().expect("playlist").to_string();
    let media_uri = master
        .lines()
        .find(|l| l.ends_with("index.m3u8") && !l.starts_with("audio"))
        .expect("a video rendition")
        .to_string();
    let base = playback_url.trim_end_matches("master.m3u8");
    let rendition = media_uri.split('/').next().expect("rendition");
    let (_, media) = get(server, &format!("{base}{media_uri}"), None).await;
    let mut fetched = 0;
    for segment in media
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(".m4s"))
    {
        let (status, _) = get(server, &format!("{base}{rendition}/{segment}"), None).await;
        assert_eq!(status, 200);
        fetched += 1;
    }
    (master, fetched)
}

async fn start_session(server: &Server, stream: &str, member: &Wallet) -> (u16, Value) {
    post(
        server,
        &format!("/api/v1/streams/{stream}/sessions"),
        &member.token,
        json!({}),
    )
    .await
}

async fn end_session(server: &Server, id: &str, member: &Wallet) {
    let (status, body) = send(
        reqwest::Method::DELETE,
        server,
        &format!("/api/v1/sessions/{id}"),
        Some(&member.token),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
}

fn amount(value: &Value) -> u128 {
    value.as_str().expect("amount").parse().expect("amount")
}

fn address(text: &str) -> Address {
    text.parse().expect("address")
}

async fn scenario(database: &TestDatabase) {
    let round_seconds = ROUND_SECONDS.to_string();
    let server = Server::start(&database.args(&[
        "--dev",
        "--platform-fee-bps",
        "300",
        "--pool-bps",
        "7000",
        "--pool-round-seconds",
        &round_seconds,
        "--view-pool-bps",
        "1000",
    ]))
    .await;
    let creators = [
        wallet(&server, 0x31).await,
        wallet(&server, 0x32).await,
        wallet(&server, 0x33).await,
    ];
    let unwatched = wallet(&server, 0x34).await;
    let alice = wallet(&server, 0x41).await;
    let bob = wallet(&server, 0x42).await;
    for member in [&alice, &bob] {
        fund(&server, member, 1_000_000).await;
    }

    // Tiers, and what is refused.
    let tier = |price: &str, height: u32, streams: u32| json!({"name": "Tier", "price": price, "period_seconds": 3600, "max_height": height, "max_streams": streams});
    for (body, field) in [
        (tier("1000", 360, 0), "max_streams"),
        (tier("1000", 500, 1), "max_height"),
        (tier("0", 360, 1), "price"),
        (
            json!({"name": "T", "price": "5", "period_seconds": 0, "max_height": 360, "max_streams": 1}),
            "period_seconds",
        ),
    ] {
        let (status, problem) = post(&server, "/api/v1/admin/tiers", ADMIN_TOKEN, body).await;
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
        "/api/v1/admin/tiers",
        &alice.token,
        tier("1000", 360, 1),
    )
    .await;
    assert_eq!(status, 403, "only admins make platform tiers");
    let basic = create_tier(
        &server,
        "/api/v1/admin/tiers",
        ADMIN_TOKEN,
        tier("10000", 360, 1),
    )
    .await;
    let basic_id = basic["id"].as_str().expect("id").to_string();
    assert_eq!(basic["offerer"], "platform");
    let premium = create_tier(
        &server,
        "/api/v1/admin/tiers",
        ADMIN_TOKEN,
        tier("40000", 720, 2),
    )
    .await;
    let premium_id = premium["id"].as_str().expect("id").to_string();
    let fan_club = create_tier(
        &server,
        "/api/v1/tiers",
        &creators[0].token,
        tier("5000", 1080, 1),
    )
    .await;
    assert_eq!(fan_club["offerer"], creators[0].address.as_str());
    let (status, _) = post(
        &server,
        "/api/v1/memberships",
        &alice.token,
        json!({"tier_id": "nope"}),
    )
    .await;
    assert_eq!(status, 404);
    // A suspended tier is not sold.
    let suspended = create_tier(
        &server,
        "/api/v1/admin/tiers",
        ADMIN_TOKEN,
        tier("7", 360, 1),
    )
    .await;
    let suspended_id = suspended["id"].as_str().expect("id");
    let (status, _) = send(
        reqwest::Method::PATCH,
        &server,
        &format!("/api/v1/tiers/{suspended_id}"),
        Some(ADMIN_TOKEN),
        Some(json!({"suspended": true})),
    )
    .await;
    assert_eq!(status, 200);
    let alice_before = balances(&server, &alice).await;
    let (status, refused) = post(
        &server,
        "/api/v1/memberships",
        &alice.token,
        json!({"tier_id": suspended_id}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(problem_type(&refused), "/problems/offerer-suspended");
    assert_eq!(
        balances(&server, &alice).await,
        alice_before,
        "nothing moved"
    );

    // Three creators live for members; a fourth's stream nobody watches.
    let (stream_a, mut ffmpeg_a) =
        members_stream(&server, &creators[0], json!(["platform"]), "854x480").await;
    let (stream_b, mut ffmpeg_b) =
        members_stream(&server, &creators[1], json!(["platform"]), "640x360").await;
    let (stream_c, mut ffmpeg_c) =
        members_stream(&server, &creators[2], json!(["platform"]), "640x360").await;
    let (status, _) = post(
        &server,
        "/api/v1/streams",
        &unwatched.token,
        json!({"title": "nobody", "access": "members", "tiers": ["platform"]}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, needs_tiers) = post(
        &server,
        "/api/v1/streams",
        &unwatched.token,
        json!({"title": "x", "access": "members"}),
    )
    .await;
    assert_eq!(status, 400, "{needs_tiers}");
    // A paid stream too: a tenth of its creator shares feeds the pool (V).
    let seller = wallet(&server, 0x35).await;
    let (status, paid_stream) = post(
        &server,
        "/api/v1/streams",
        &seller.token,
        json!({"title": "pay per second", "access": "per_second",
               "price": {"amount": "60000", "period_seconds": 60}}),
    )
    .await;
    assert_eq!(status, 201, "{paid_stream}");
    let paid_id = paid_stream["id"].as_str().expect("id").to_string();
    let mut ffmpeg_paid = publish(
        &format!(
            "{}/live/{}",
            server.rtmp,
            paid_stream["stream_key"].as_str().expect("key")
        ),
        "320x180",
        45,
        SMALL,
    );
    for stream in [&stream_a, &stream_b, &stream_c, &paid_id] {
        server
            .wait_for_state(stream, "live", Duration::from_secs(30))
            .await;
    }
    // A viewer pays per second; the channel's policy carries the pool.
    let viewer_key = SigningKey::from_bytes(&[0x46; 32]).expect("key");
    let mut viewer = Client::new(&server.http, viewer_key.clone());
    viewer.sign_in().await.expect("sign in");
    let viewer_wallet = wallet_of(&server, &viewer_key).await;
    fund(&server, &viewer_wallet, 1_000_000).await;
    let watched = viewer
        .watch(&paid_id, 6, Amount(500_000), None)
        .await
        .expect("watch the paid stream");
    assert!(watched.segments > 0, "{watched:?}");
    let (status, channel) = get(
        &server,
        &format!("/api/v1/channels/{}", watched.channel_id),
        Some(&viewer_wallet.token),
    )
    .await;
    assert_eq!(status, 200, "{channel}");
    let recipients: Vec<(Address, u64)> = channel["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| {
            (
                address(r["address"].as_str().expect("address")),
                r["share"].as_u64().expect("share"),
            )
        })
        .collect();
    assert_eq!(
        recipients,
        [(address(&seller.address), 9), (VIEW_POOL_RECIPIENT, 1)],
        "{channel}"
    );
    let redeemed = amount(&channel["redeemed"]);
    assert!(redeemed > 0, "{channel}");
    let rest = redeemed - (redeemed * 300).div_ceil(10_000);
    let view_pooled = rest / 10;

    tokio::time::sleep(Duration::from_secs(3)).await;
    // Paying and watching in one round, so that each member's money follows
    // their own watching (rounds split elsewhere are checked all the same).
    let round_ms = i64::try_from(ROUND_SECONDS).expect("seconds") * 1000;
    let now_ms = chrono::Utc::now().timestamp_millis();
    if round_ms - now_ms % round_ms < 11_000 {
        let next = round_ms - now_ms % round_ms + 200;
        tokio::time::sleep(Duration::from_millis(u64::try_from(next).expect("ms"))).await;
    }
    // Joining, an upgrade charged for the rest of the period, a downgrade later.
    let (status, joined) = post(
        &server,
        "/api/v1/memberships",
        &alice.token,
        json!({"tier_id": basic_id, "id": "join-1"}),
    )
    .await;
    assert_eq!(status, 201, "{joined}");
    assert_eq!(joined["change"], "period");
    let (status, again) = post(
        &server,
        "/api/v1/memberships",
        &alice.token,
        json!({"tier_id": basic_id, "id": "join-1"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        again["expires_at"], joined["expires_at"],
        "a retry pays once"
    );
    assert_eq!(balances(&server, &alice).await.0, 1_000_000 - 10_000);
    let (status, upgraded) = post(
        &server,
        "/api/v1/memberships",
        &bob.token,
        json!({"tier_id": premium_id}),
    )
    .await;
    assert_eq!(status, 201, "{upgraded}");
    let (status, down) = post(
        &server,
        "/api/v1/memberships",
        &bob.token,
        json!({"tier_id": basic_id}),
    )
    .await;
    assert_eq!(status, 201, "{down}");
    assert_eq!(down["change"], "downgrade");
    assert_eq!(
        down["tier"]["id"],
        premium_id.as_str(),
        "premium until renewal"
    );
    assert_eq!(down["next_tier_id"], basic_id.as_str());
    assert_eq!(
        balances(&server, &bob).await.0,
        1_000_000 - 40_000,
        "a downgrade charges nothing"
    );
    let (status, up) = post(
        &server,
        "/api/v1/memberships",
        &alice.token,
        json!({"tier_id": premium_id}),
    )
    .await;
    assert_eq!(status, 201, "{up}");
    assert_eq!(up["change"], "upgrade");
    assert_eq!(up["expires_at"], joined["expires_at"], "expiry unchanged");
    let charged = 1_000_000 - 10_000 - balances(&server, &alice).await.0;
    // ceil(30000 * remaining / 3600000) with remaining just under an hour.
    assert!(
        (29_900..=30_000).contains(&charged),
        "upgrade charge {charged}"
    );

    // Bob (premium until renewal: 720, two at once) sees 480p; a visitor
    // without a membership is refused.
    let stranger = wallet(&server, 0x43).await;
    let (status, refused) = start_session(&server, &stream_a, &stranger).await;
    assert_eq!(status, 403);
    assert_eq!(problem_type(&refused), "/problems/membership-required");
    // Racing starts cannot exceed the tier's two.
    let starts =
        futures_util::future::join_all((0..4).map(|_| start_session(&server, &stream_a, &bob)))
            .await;
    let started: Vec<&Value> = starts
        .iter()
        .filter(|(status, _)| *status == 201)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(started.len(), 2, "{starts:?}");
    let limited = starts
        .iter()
        .find(|(status, _)| *status == 409)
        .expect("a 409");
    assert_eq!(problem_type(&limited.1), "/problems/too-many-streams");
    assert_eq!(
        limited.1["active_sessions"]
            .as_array()
            .expect("listed")
            .len(),
        2
    );
    let bob_url = started[0]["playback_url"]
        .as_str()
        .expect("url")
        .to_string();
    let (master, fetched) = play(&server, &bob_url).await;
    assert!(master.contains("480p/index.m3u8"), "{master}");
    assert!(fetched > 0);
    end_session(&server, started[1]["id"].as_str().expect("id"), &bob).await;
    let (status, on_c) = start_session(&server, &stream_c, &bob).await;
    assert_eq!(status, 201, "{on_c}");
    play(&server, on_c["playback_url"].as_str().expect("url")).await;

    // Alice, premium too now; then a basic member: 360p only, 480p refused.
    let carol = wallet(&server, 0x44).await;
    fund(&server, &carol, 100_000).await;
    let (status, _) = post(
        &server,
        "/api/v1/memberships",
        &carol.token,
        json!({"tier_id": basic_id}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, carol_session) = start_session(&server, &stream_a, &carol).await;
    assert_eq!(status, 201, "{carol_session}");
    assert_eq!(carol_session["max_height"], 360);
    let carol_url = carol_session["playback_url"]
        .as_str()
        .expect("url")
        .to_string();
    let (master, _) = play(&server, &carol_url).await;
    assert!(master.contains("360p/index.m3u8"), "{master}");
    assert!(
        !master.contains("480p"),
        "the tier's quality only: {master}"
    );
    let base = carol_url.trim_end_matches("master.m3u8");
    let (status, quality) = get(&server, &format!("{base}480p/index.m3u8"), None).await;
    assert_eq!(status, 403);
    assert_eq!(problem_type(&quality), "/problems/tier-quality");
    let (status, second) = start_session(&server, &stream_b, &carol).await;
    assert_eq!(status, 409, "basic allows one at a time: {second}");

    // Alice watches two creators, with progress for resume.
    let (status, on_a) = start_session(&server, &stream_a, &alice).await;
    assert_eq!(status, 201, "{on_a}");
    play(&server, on_a["playback_url"].as_str().expect("url")).await;
    let (status, on_b) = start_session(&server, &stream_b, &alice).await;
    assert_eq!(status, 201, "{on_b}");
    play(&server, on_b["playback_url"].as_str().expect("url")).await;
    let (status, _) = post(
        &server,
        &format!(
            "/api/v1/sessions/{}/progress",
            on_b["id"].as_str().expect("id")
        ),
        &alice.token,
        json!({"position_ms": 4000}),
    )
    .await;
    assert_eq!(status, 204);
    let (_, history) = get(&server, "/api/v1/accounts/me/history", Some(&alice.token)).await;
    assert_eq!(history["history"][0]["stream_id"], stream_b.as_str());
    assert_eq!(history["history"][0]["position_ms"], 4000);

    // Renewal at expiry from the balance; when it cannot pay, the reason
    // is recorded for the member, never silently dropped.
    let flash = create_tier(
        &server,
        "/api/v1/tiers",
        &creators[1].token,
        json!({"name": "Flash", "price": "40000", "period_seconds": 2, "max_height": 360, "max_streams": 1}),
    )
    .await;
    let ws_base = server.http.replacen("http", "ws", 1);
    let refused =
        tokio_tungstenite::connect_async(format!("{ws_base}/api/v1/accounts/me/events?token=nope"))
            .await;
    assert!(refused.is_err(), "an account's events need its token");
    let (mut carol_events, _) = tokio_tungstenite::connect_async(format!(
        "{ws_base}/api/v1/accounts/me/events?token={}",
        carol.token
    ))
    .await
    .expect("carol's events");
    let (status, flash_membership) = post(
        &server,
        "/api/v1/memberships",
        &carol.token,
        json!({"tier_id": flash["id"]}),
    )
    .await;
    assert_eq!(status, 201, "{flash_membership}");
    // Pushed to the member: one renewal paid, then the one that could not be.
    let mut pushed = Vec::new();
    while pushed.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(20), carol_events.next())
            .await
            .expect("an account event within 20 s")
            .expect("socket open")
            .expect("message");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            pushed.push(serde_json::from_str::<Value>(&text).expect("json"));
        }
    }
    assert_eq!(pushed[0]["type"], "membership_renewed", "{pushed:?}");
    assert_eq!(pushed[1]["type"], "membership_renewal_failed", "{pushed:?}");
    assert_eq!(pushed[1]["membership_id"], flash_membership["id"]);
    assert!(
        pushed[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not enough")),
        "{pushed:?}"
    );
    let mut failure = Value::Null;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, mine) = get(
            &server,
            "/api/v1/accounts/me/memberships",
            Some(&carol.token),
        )
        .await;
        let found = mine["memberships"]
            .as_array()
            .expect("memberships")
            .iter()
            .find(|m| m["tier"]["id"] == flash["id"])
            .cloned()
            .expect("the flash membership");
        if !found["renewal_failure"].is_null() {
            failure = found;
            break;
        }
    }
    assert!(
        failure["renewal_failure"]
            .as_str()
            .is_some_and(|r| r.contains("not enough")),
        "{failure}"
    );
    // 100000 - 10000 (basic) - 40000 (join) - 40000 (one renewal) left 10000.
    assert_eq!(balances(&server, &carol).await.0, 10_000);
    let flash_revenue = 2 * (40_000 - (40_000u128 * 300).div_ceil(10_000));

    // The shows end.
    for ffmpeg in [
        &mut ffmpeg_a,
        &mut ffmpeg_b,
        &mut ffmpeg_c,
        &mut ffmpeg_paid,
    ] {
        let _ = ffmpeg.kill();
        let _ = ffmpeg.wait();
    }

    // The rounds close: every allocation as the statement says, re-derived.
    let last_activity_ms = chrono::Utc::now().timestamp_millis();
    let closes_at_ms = (last_activity_ms / round_ms + 1) * round_ms + 8000;
    let wait_ms = closes_at_ms - chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0))).await;
    let (_, listed) = get(&server, "/api/v1/pool/rounds", None).await;
    let rounds = listed["rounds"].as_array().cloned().unwrap_or_default();
    let pool_part = |paid: u128| paid * 7000 / 10_000;
    let pooled = pool_part(10_000) + pool_part(charged) + pool_part(40_000) + pool_part(10_000);
    let contributed: u128 = rounds.iter().map(|r| amount(&r["contributions"])).sum();
    assert_eq!(
        contributed, pooled,
        "every pool part is in a closed round: {listed}"
    );
    assert!(!rounds.is_empty(), "rounds closed");
    let view_inflow: u128 = rounds.iter().map(|r| amount(&r["view_inflow"])).sum();
    assert_eq!(
        view_inflow, view_pooled,
        "V is the channel's pool part: {listed}"
    );
    assert_eq!(
        balances(&server, &seller).await.1,
        rest * 9 / 10,
        "the seller keeps nine tenths of the rest"
    );
    let mut paid: BTreeMap<String, u128> = BTreeMap::new();
    for round in &rounds {
        let cid = round["statement_cid"].as_str().expect("cid");
        let (status, statement) = get(&server, &format!("/ipfs/{cid}"), None).await;
        assert_eq!(status, 200, "{statement}");
        assert_eq!(statement["round"], round["round"]);
        let mut inputs = RoundInputs {
            carry: Amount(amount(&statement["carry_in"])),
            view_inflow: Amount(amount(&statement["view_inflow"])),
            ..RoundInputs::default()
        };
        for (member, value) in statement["contributions"].as_object().expect("C") {
            inputs
                .contributions
                .insert(address(member), Amount(amount(value)));
        }
        for (member, per_creator) in statement["engagement"].as_object().expect("E") {
            let entry = inputs.engagement.entry(address(member)).or_default();
            for (creator, e) in per_creator.as_object().expect("per creator") {
                entry.insert(address(creator), amount(e));
            }
        }
        let derived = close_round(&inputs, PoolMode::UserCentric).expect("round");
        let published: BTreeMap<Address, Amount> = round["allocations"]
            .as_array()
            .expect("allocations")
            .iter()
            .map(|a| {
                (
                    address(a["creator"].as_str().expect("c")),
                    Amount(amount(&a["amount"])),
                )
            })
            .collect();
        let derived_paid: BTreeMap<Address, Amount> = derived
            .allocations
            .into_iter()
            .filter(|(_, a)| !a.is_zero())
            .collect();
        assert_eq!(published, derived_paid, "round {}", round["round"]);
        assert_eq!(amount(&round["carry_out"]), derived.carry.0);
        assert_eq!(statement["carry_out"], round["carry_out"]);
        // User-centric: a member's money goes only to creators they watched.
        for (member, c) in &inputs.contributions {
            if let Some(watched) = inputs.engagement.get(member)
                && !c.is_zero()
            {
                assert!(!watched.is_empty());
            }
        }
        for (creator, a) in &published {
            *paid.entry(format!("{creator:#x}")).or_default() += a.0;
        }
    }
    assert!(
        !paid.contains_key(&unwatched.address),
        "nobody watched them: {paid:?}"
    );
    assert!(
        paid.contains_key(&creators[0].address) && paid.contains_key(&creators[2].address),
        "{paid:?}"
    );
    // Each creator's earned balance is their pool allocations (sole policy,
    // no second fee) and nothing else.
    for (index, creator) in creators.iter().enumerate() {
        let tiers = if index == 1 { flash_revenue } else { 0 };
        assert_eq!(
            balances(&server, creator).await.1,
            paid.get(&creator.address).copied().unwrap_or(0) + tiers,
            "{}",
            creator.address
        );
    }
    // A creator's pool earnings per round.
    let (_, mine) = get(
        &server,
        &format!("/api/v1/pool/rounds?creator={}", creators[0].address),
        None,
    )
    .await;
    let earned: u128 = mine["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .flat_map(|r| r["allocations"].as_array().expect("allocations").clone())
        .map(|a| {
            assert_eq!(a["creator"], creators[0].address.as_str());
            amount(&a["amount"])
        })
        .sum();
    assert_eq!(earned, paid[&creators[0].address]);
    let (_, none) = get(
        &server,
        &format!("/api/v1/pool/rounds?creator={}", unwatched.address),
        None,
    )
    .await;
    assert_eq!(none["rounds"], json!([]));
    database.assert_ledger_audits(&server.data_dir);
}
