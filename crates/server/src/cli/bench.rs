//! `streamweave bench ...`: load generators and reference rates, run by the
//! scripts in `scripts/bench/` so comparisons happen side by side.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use streamweave_ledger::{
    Address, B256, PaymentDomain, Signature65, SigningKey, personal_sign_digest,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::from("0x"), |mut out, b| {
        out.push_str(&format!("{b:02x}"));
        out
    })
}

fn random_key() -> SigningKey {
    loop {
        if let Ok(key) = SigningKey::from_bytes(&rand::random::<[u8; 32]>()) {
            return key;
        }
    }
}

/// libsecp256k1 public-key recoveries per second on `threads` threads,
/// cycling through `signatures` distinct vouchers (at least one).
///
/// Distinct signatures are what a server recovers: each one reads other
/// entries of libsecp256k1's precomputed tables (1 MiB), where one
/// signature recovered again and again reads the same few
/// (docs/benchmarks.md measures both).
pub fn recover_rate(threads: usize, seconds: u64, signatures: usize) -> f64 {
    let vouchers = distinct_vouchers(&random_key(), signatures);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut count = 0u64;
                    let mut next = vouchers.iter().cycle();
                    while Instant::now() < deadline {
                        for (digest, signature) in next.by_ref().take(100) {
                            let _ = std::hint::black_box(
                                signature.recover(std::hint::black_box(*digest)),
                            );
                        }
                        count += 100;
                    }
                    count
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    counts.iter().sum::<u64>() as f64 / seconds as f64
}

/// `count` (at least one) vouchers of one channel for increasing amounts,
/// signed by `key`: their digests and signatures.
fn distinct_vouchers(key: &SigningKey, count: usize) -> Vec<(B256, Signature65)> {
    (1..=count.max(1) as u128)
        .map(|amount| {
            let digest = PaymentDomain::EMBEDDED.voucher_digest(B256::repeat_byte(7), amount);
            let signature =
                Signature65::from_bytes(&key.sign_digest(digest)).expect("own signature parses");
            (digest, signature)
        })
        .collect()
}

async fn post(
    client: &reqwest::Client,
    url: String,
    body: Value,
    token: Option<&str>,
) -> anyhow::Result<Value> {
    let mut request = client.post(&url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status} {body}");
    Ok(body)
}

/// The URL of one file of a paid stream through a new session (`/play/...`),
/// paid as the server's 402 asks and fetched once, so that fetching it again
/// in the session costs nothing: what the delivery benchmark's gated row
/// reads. The server must be `--dev` (its faucet funds the viewer).
pub async fn paid_file_url(server: &str, stream_id: &str, file: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let mut client = streamweave_client::Client::with_http(server, random_key(), http.clone());
    client.sign_in().await?;
    let deposit = streamweave_ledger::Amount(1_000_000_000);
    client.faucet(deposit).await?;
    let session = client.open_session(stream_id, deposit, None).await?;
    let base = session.playback_url.trim_end_matches("master.m3u8");
    let (_, url) = client.http(&format!("{base}{file}"));
    for _ in 0..4 {
        let response = http.get(&url).send().await?;
        let status = response.status();
        if status.is_success() {
            response.bytes().await?;
            return Ok(url);
        }
        anyhow::ensure!(status.as_u16() == 402, "{url}: {status}");
        let problem: Value = response.json().await?;
        let required: streamweave_ledger::Amount = problem["required_amount"]
            .as_str()
            .context("a 402 without required_amount")?
            .parse()
            .map_err(|err| anyhow::anyhow!("required_amount: {err}"))?;
        client.pay(&session, required).await?;
    }
    anyhow::bail!("{url}: still unpaid after paying what the server asked")
}

/// Durable voucher acceptance over HTTP: `channels` payers, each submitting
/// pre-signed increasing vouchers one after another, for `seconds`.
pub async fn vouchers(server: &str, channels: usize, seconds: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(channels)
        .build()?;
    let base = server.trim_end_matches('/');
    let payer = random_key();
    let challenge = post(
        &client,
        format!("{base}/api/v1/auth/challenge"),
        json!({"address": format!("{:#x}", payer.address())}),
        None,
    )
    .await?;
    let message = challenge["message"].as_str().context("challenge message")?;
    let signature = payer.sign_digest(personal_sign_digest(message.as_bytes()));
    let login = post(
        &client,
        format!("{base}/api/v1/auth/login"),
        json!({"message": message, "signature": hex(&signature)}),
        None,
    )
    .await?;
    let token = login["token"].as_str().context("token")?.to_string();
    post(
        &client,
        format!("{base}/api/v1/dev/faucet"),
        json!({"address": format!("{:#x}", payer.address()), "amount": "1000000000000000"}),
        None,
    )
    .await
    .context("the faucet (run the server with --dev)")?;
    let config: Value = client
        .get(format!("{base}/api/v1/payments/config"))
        .send()
        .await?
        .json()
        .await?;
    let domain = PaymentDomain {
        chain_id: config["chain_id"].as_u64().context("chain id")?,
        escrow: config["escrow"].as_str().context("escrow")?.parse()?,
    };
    let creator = Address::repeat_byte(0xc0);
    let session = random_key();
    let mut channel_urls = Vec::with_capacity(channels);
    for _ in 0..channels {
        let salt = B256::from(rand::random::<[u8; 32]>());
        let opened = post(
            &client,
            format!("{base}/api/v1/channels"),
            json!({"payee": format!("{creator:#x}"), "deposit": "1000000000", "signer": format!("{:#x}", session.address()), "salt": format!("{salt:#x}")}),
            Some(&token),
        )
        .await?;
        let id: B256 = opened["id"].as_str().context("channel id")?.parse()?;
        channel_urls.push((id, format!("{base}/api/v1/channels/{id:#x}/vouchers")));
    }
    // Enough pre-signed vouchers per channel for 30,000 a second (signing
    // is not measured), as ready request bodies, signed on every core.
    let per_channel = (30_000 * seconds as usize) / channels.max(1) + 200;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bodies: Vec<Vec<bytes::Bytes>> = std::thread::scope(|scope| {
        let chunks: Vec<_> = channel_urls
            .chunks(channel_urls.len().div_ceil(threads))
            .map(|chunk| {
                let session = &session;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|(id, _)| {
                            (1..=per_channel as u128)
                                .map(|amount| {
                                    let signature =
                                        hex(&session
                                            .sign_digest(domain.voucher_digest(*id, amount)));
                                    bytes::Bytes::from(format!(
                                        r#"{{"amount":"{amount}","signature":"{signature}"}}"#
                                    ))
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks
            .into_iter()
            .flat_map(|handle| handle.join().unwrap_or_default())
            .collect()
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for ((_, url), signed) in channel_urls.into_iter().zip(bodies) {
        let client = client.clone();
        tasks.spawn(async move {
            let mut latencies_us = Vec::new();
            let mut errors = 0u64;
            let mut exhausted = true;
            for body in signed {
                if Instant::now() >= deadline {
                    exhausted = false;
                    break;
                }
                let sent = Instant::now();
                match client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(response) if response.status().is_success() => {
                        // Read the answer whole, as a payer does.
                        if response.bytes().await.is_ok() {
                            latencies_us.push(sent.elapsed().as_micros() as u64)
                        } else {
                            errors += 1;
                        }
                    }
                    _ => errors += 1,
                }
            }
            (latencies_us, errors, exhausted)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut exhausted = false;
    while let Some(result) = tasks.join_next().await {
        let (l, e, ran_out) = result?;
        latencies.extend(l);
        errors += e;
        exhausted |= ran_out;
    }
    anyhow::ensure!(
        !exhausted,
        "a channel used every pre-signed voucher before the end: the rate is above what was signed"
    );
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "{}",
        json!({
            "channels": channels,
            "accepted": latencies.len(),
            "errors": errors,
            "seconds": elapsed,
            "vouchers_per_second": latencies.len() as f64 / elapsed,
            "p50_ms": pct(50),
            "p99_ms": pct(99),
        })
    );
    Ok(())
}

/// Archive throughput on one core: a synthetic recording of `minutes` with
/// 2 s segments in three renditions (3000, 1400 and 800 kbit/s, the 720p,
/// 480p and 360p rungs), measured as MB/s of media for (1) raw sha256 over
/// the same bytes, the bound, (2) building every file DAG and the
/// directories, (3) writing the CAR, and (4) its Piece CID.
pub fn archive_throughput(minutes: u64) -> Value {
    use std::collections::HashMap;
    use streamweave_cas::{
        DirEntry, PieceHasher, build_directory, build_file_dag_shared, write_car,
    };
    const RUNGS: [(&str, u64); 3] = [("720p", 3_000_000), ("480p", 1_400_000), ("360p", 800_000)];
    let segments_per_rung = (minutes * 60 / 2).max(1);
    // Deterministic incompressible-looking bytes (xorshift), made before timing.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut files: Vec<(usize, u64, bytes::Bytes)> = Vec::new();
    for (rung, (_, bits_per_second)) in RUNGS.iter().enumerate() {
        let size = (bits_per_second * 2 / 8) as usize;
        for sequence in 0..segments_per_rung {
            let mut bytes = vec![0u8; size];
            for chunk in bytes.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            files.push((rung, sequence, bytes::Bytes::from(bytes)));
        }
    }
    let media_bytes: u64 = files.iter().map(|(_, _, b)| b.len() as u64).sum();
    let mb = media_bytes as f64 / 1e6;

    let started = Instant::now();
    let mut sink = 0u8;
    for (_, _, bytes) in &files {
        use sha2::Digest;
        sink ^= sha2::Sha256::digest(bytes)[0];
    }
    let sha256_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut blocks: HashMap<streamweave_cas::Cid, bytes::Bytes> = HashMap::new();
    let mut rung_entries: Vec<Vec<DirEntry>> = vec![Vec::new(); RUNGS.len()];
    for (rung, sequence, bytes) in &files {
        // Segments arrive as shared buffers; their DAG's leaves are slices.
        let dag = build_file_dag_shared(bytes.clone());
        let tsize = dag.blocks.iter().map(|b| b.data.len() as u64).sum();
        rung_entries[*rung].push(DirEntry {
            name: format!("{sequence}.m4s"),
            cid: dag.root,
            tsize,
        });
        for block in dag.blocks {
            blocks.insert(block.cid, block.data);
        }
    }
    let mut root_entries = Vec::new();
    for ((name, _), entries) in RUNGS.iter().zip(rung_entries) {
        let directory = build_directory(entries).expect("a rendition directory");
        root_entries.push(DirEntry {
            name: (*name).to_string(),
            cid: directory.block.cid,
            tsize: directory.tsize,
        });
        for shard in directory.shards {
            blocks.insert(shard.cid, shard.data);
        }
        blocks.insert(directory.block.cid, directory.block.data);
    }
    let root = build_directory(root_entries).expect("the root directory");
    blocks.insert(root.block.cid, root.block.data.clone());
    let dag_s = started.elapsed().as_secs_f64();

    // The CAR as it is streamed to a file or socket: framing and writing.
    let get = |cid: &streamweave_cas::Cid| {
        blocks
            .get(cid)
            .cloned()
            .ok_or(streamweave_cas::CasError::MissingBlock(*cid))
    };
    let started = Instant::now();
    let car_size =
        write_car(&root.block.cid, get, &mut std::io::sink()).expect("writing to a sink");
    let car_s = started.elapsed().as_secs_f64();

    let mut car = Vec::with_capacity(car_size as usize);
    write_car(&root.block.cid, get, &mut car).expect("writing to memory");
    let started = Instant::now();
    let mut piece = PieceHasher::new();
    piece.update(&car);
    let piece = piece.finish();
    let piece_s = started.elapsed().as_secs_f64();
    let rate = |seconds: f64| (mb / seconds.max(1e-9) * 10.0).round() / 10.0;
    json!({
        "minutes": minutes,
        "renditions": RUNGS.len(),
        "segments": files.len(),
        "media_mb": (mb * 10.0).round() / 10.0,
        "car_bytes": car_size,
        "sha256_mb_s": rate(sha256_s),
        "dag_mb_s": rate(dag_s),
        "car_mb_s": rate(car_s),
        "dag_and_car_mb_s": rate(dag_s + car_s),
        "dag_and_car_vs_sha256": ((sha256_s / (dag_s + car_s)) * 100.0).round() / 100.0,
        "piece_cid_mb_s": rate(piece_s),
        "piece_cid": piece.cid().to_string(),
        "checksum": sink,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_rate_recovers_distinct_vouchers_of_one_signer() {
        let key = random_key();
        let vouchers = distinct_vouchers(&key, 8);
        assert_eq!(vouchers.len(), 8);
        let digests: std::collections::HashSet<B256> = vouchers.iter().map(|v| v.0).collect();
        assert_eq!(digests.len(), 8, "every voucher has a digest of its own");
        for (digest, signature) in &vouchers {
            assert_eq!(signature.recover(*digest).expect("recovers"), key.address());
        }
        assert_eq!(distinct_vouchers(&key, 0).len(), 1, "at least one");
    }
}
