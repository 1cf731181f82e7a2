//! The StreamWeave SDK: what a player does, in Rust.
//!
//! [`Client::sign_in`] proves a key's address (SIWE), [`Client::watch`] plays
//! a stream like a player would: it follows the live playlist, fetches
//! segments in order, answers each `402` by checking the requested amount
//! against the advertised price and its own cap before signing, pays one
//! segment ahead, and verifies every segment's bytes against its CID.
//! [`upload`] sends files with the tus resumable-upload protocol.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use streamweave_ledger::{
    Address, Amount, B256, Meter, PaymentDomain, Price, SigningKey, personal_sign_digest,
};

/// Errors of the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The network or the HTTP layer.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered an error (problem+json `type` and detail).
    #[error("{status} {problem_type}: {detail}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Problem type.
        problem_type: String,
        /// Detail.
        detail: String,
        /// The whole problem document (its extension members).
        problem: Value,
    },
    /// The server asked for more than the advertised price allows.
    #[error("the server asked for {asked} but the price allows {allowed}: refused")]
    GreedyServer {
        /// What the 402 asked (cumulative).
        asked: Amount,
        /// What the client computes as owed (cumulative).
        allowed: Amount,
    },
    /// Bytes that do not match their CID.
    #[error("segment {0} does not match its CID")]
    CidMismatch(String),
    /// Something the server sent that makes no sense.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The chain (a server whose channels open on chain).
    #[error(transparent)]
    Chain(#[from] streamweave_chain::ChainError),
    /// The server escrows on chain and this client has no chain connection
    /// ([`Client::with_chain`]).
    #[error("the server's channels open on chain: connect this client to the chain first")]
    NoChain,
}

type Result<T> = std::result::Result<T, ClientError>;

pub mod load;
pub mod threads;
pub mod upload;
mod viewer_http;

/// A client for one server and one wallet key.
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: SigningKey,
    token: Option<String>,
    /// The escrow on chain, sending from this client's key.
    chain: Option<streamweave_chain::Escrow>,
}

/// How long a channel opened on chain may take to reach the server's
/// ledger (its confirmations).
const CHAIN_CHANNEL_WAIT: Duration = Duration::from_secs(120);

/// A started session on a paid stream, paid from its own channel.
pub struct PaidSession {
    /// The stream watched.
    pub stream_id: String,
    /// The channel paying.
    pub channel_id: B256,
    /// `/play/{session}/master.m3u8`: any HLS client plays it while this client pays.
    pub playback_url: String,
    /// The price the session was started at.
    pub price: Price,
    /// The channel's redeemed amount at the start; amounts are cumulative from the channel's start.
    pub paid_from: Amount,
    /// The client's own meter of what it owes, started with the session.
    pub meter: Meter,
    domain: PaymentDomain,
    session_key: SigningKey,
}

impl PaidSession {
    /// A voucher for a cumulative `amount`, signed by the session key: the
    /// path to post it to and its JSON body.
    pub fn voucher(&self, amount: Amount) -> (String, Value) {
        let signature = self.session_key.sign_digest(self.voucher_digest(amount));
        self.signed_voucher(amount, &signature)
    }

    /// What a voucher for a cumulative `amount` signs (EIP-712).
    pub(crate) fn voucher_digest(&self, amount: Amount) -> B256 {
        self.domain.voucher_digest(self.channel_id, amount.0)
    }

    /// The session key (signs the channel's vouchers).
    pub(crate) fn session_key(&self) -> &SigningKey {
        &self.session_key
    }

    /// A voucher already signed: the path to post it to and its JSON body.
    pub(crate) fn signed_voucher(&self, amount: Amount, signature: &[u8; 65]) -> (String, Value) {
        let channel = self.channel_id;
        (
            format!("/api/v1/channels/{channel:#x}/vouchers"),
            json!({"amount": amount.to_string(), "signature": hex(signature)}),
        )
    }
}

/// What watching produced.
#[derive(Debug, Clone, Serialize)]
pub struct WatchSummary {
    /// Media seconds received (in milliseconds).
    pub media_ms: u64,
    /// Segments received.
    pub segments: usize,
    /// Amount spent in this session (base units).
    pub spent: Amount,
    /// Segments whose CID was recomputed and matched.
    pub cids_verified: usize,
    /// Why watching stopped.
    pub stopped: String,
    /// The channel paid from.
    pub channel_id: String,
}

impl Client {
    /// A client for `server` (e.g. `http://127.0.0.1:8080`) acting with `key`.
    pub fn new(server: &str, key: SigningKey) -> Self {
        Self::with_http(server, key, reqwest::Client::new())
    }

    /// The same, sharing an HTTP client (and its connection pool) with others.
    pub fn with_http(server: &str, key: SigningKey, http: reqwest::Client) -> Self {
        Client {
            http,
            base: server.trim_end_matches('/').to_string(),
            key,
            token: None,
            chain: None,
        }
    }

    /// Connects to the chain of a server whose channels open on chain
    /// (`GET /api/v1/payments/config` says `on_chain`): channels are opened
    /// on its escrow from this client's key, which pays their deposits.
    pub async fn with_chain(mut self, rpc_url: &str) -> Result<Self> {
        let config = self.get("/api/v1/payments/config").await?;
        let escrow: Address = config["escrow"]
            .as_str()
            .and_then(|e| e.parse().ok())
            .ok_or_else(|| ClientError::Protocol("no escrow".into()))?;
        let key = hex(&self.key.to_bytes());
        self.chain = Some(streamweave_chain::Escrow::connect(rpc_url, escrow, Some(&key)).await?);
        Ok(self)
    }

    /// The escrow on chain, when connected ([`Client::with_chain`]).
    pub fn chain(&self) -> Option<&streamweave_chain::Escrow> {
        self.chain.as_ref()
    }

    /// Opens a channel to `payee` on the escrow contract, from this
    /// client's key: approves the deposit, opens with the payee's policy as
    /// the server publishes it, and waits until the server's ledger has it
    /// (once final). Answers its id.
    pub async fn open_channel_on_chain(
        &self,
        payee: Address,
        deposit: Amount,
        signer: Address,
        lifetime_s: u64,
    ) -> Result<B256> {
        let chain = self.chain.as_ref().ok_or(ClientError::NoChain)?;
        let config = self.get("/api/v1/payments/config").await?;
        let token: Address = config["assets"][0]["token"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| ClientError::Protocol("no token".into()))?;
        let view = self
            .get(&format!("/api/v1/payments/policies/{payee:#x}"))
            .await?;
        let policy =
            policy_of(&view).ok_or_else(|| ClientError::Protocol("an unreadable policy".into()))?;
        let salt = B256::from(rand::random::<[u8; 32]>());
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let wait = Duration::from_secs(120);
        chain
            .transact(
                streamweave_chain::TxCall::approve(token, chain.address(), deposit.0),
                wait,
            )
            .await?;
        chain
            .transact(
                streamweave_chain::TxCall::open(
                    chain.address(),
                    payee,
                    token,
                    deposit.0,
                    salt,
                    signer,
                    now_s + lifetime_s,
                    policy,
                ),
                wait,
            )
            .await?;
        let domain = PaymentDomain {
            chain_id: chain.chain_id(),
            escrow: chain.address(),
        };
        let id = domain.channel_id(self.address(), payee, token, salt, signer);
        self.wait_for_channel(id, CHAIN_CHANNEL_WAIT).await?;
        Ok(id)
    }

    /// Waits until the server shows a channel (opened on chain: once its
    /// log is final), answering it.
    pub async fn wait_for_channel(&self, id: B256, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.get(&format!("/api/v1/channels/{id:#x}")).await {
                Ok(channel) => return Ok(channel),
                Err(ClientError::Api { status: 404, .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The wallet's address.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn answer(response: reqwest::Response) -> Result<Value> {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            Err(ClientError::Api {
                status: status.as_u16(),
                problem_type: body["type"].as_str().unwrap_or_default().to_string(),
                detail: body["detail"].as_str().unwrap_or_default().to_string(),
                problem: body,
            })
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Self::answer(request.send().await?).await
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Self::answer(request.send().await?).await
    }

    /// Signs in with Sign-In with Ethereum.
    pub async fn sign_in(&mut self) -> Result<Address> {
        let challenge = self
            .post(
                "/api/v1/auth/challenge",
                json!({ "address": self.address().to_checksum(None) }),
            )
            .await?;
        let message = challenge["message"]
            .as_str()
            .ok_or_else(|| ClientError::Protocol("no message".into()))?;
        let signature = self
            .key
            .sign_digest(personal_sign_digest(message.as_bytes()));
        let login = self
            .post(
                "/api/v1/auth/login",
                json!({ "message": message, "signature": hex(&signature) }),
            )
            .await?;
        self.token = login["token"].as_str().map(str::to_string);
        Ok(self.address())
    }

    /// Creates a stream owned by this wallet (signed in): free without a
    /// price, else priced per second with an optional free preview. Answers
    /// the server's view of it, with `id`, `stream_key` and `rtmp_url`.
    pub async fn create_stream(
        &self,
        title: &str,
        price: Option<Price>,
        preview_seconds: u32,
    ) -> Result<Value> {
        let mut body = json!({ "title": title });
        if let Some(price) = price {
            body["access"] = json!("per_second");
            body["price"] =
                json!({"amount": price.amount.to_string(), "period_seconds": price.period_seconds});
            body["preview_seconds"] = json!(preview_seconds);
        }
        self.post("/api/v1/streams", body).await
    }

    /// Schedules an event created by this wallet (signed in): `event` is
    /// the body of `POST /api/v1/events` (title, starts_at, duration_seconds,
    /// ticket terms). Answers the event, with its `id` and `stream_key`.
    pub async fn create_event(&self, event: Value) -> Result<Value> {
        self.post("/api/v1/events", event).await
    }

    /// Dev mode: funds this wallet from the faucet.
    pub async fn faucet(&self, amount: Amount) -> Result<()> {
        self.post(
            "/api/v1/dev/faucet",
            json!({"address": format!("{:#x}", self.address()), "amount": amount.to_string()}),
        )
        .await
        .map(|_| ())
    }

    /// Watches `stream_id` for `seconds` of media (or until it ends), paying
    /// from a new channel of `deposit` with a fresh session key.
    pub async fn watch(
        &self,
        stream_id: &str,
        seconds: u64,
        deposit: Amount,
        max_spend: Option<Amount>,
    ) -> Result<WatchSummary> {
        let opened = self.open_session(stream_id, deposit, max_spend).await?;
        let PaidSession {
            channel_id,
            price,
            paid_from,
            ref playback_url,
            ..
        } = opened;
        let play = playback_url.as_str();
        let play_base = play.trim_end_matches("master.m3u8").to_string();
        // The client's own meter: what it will agree to pay.
        let mut meter = opened.meter.clone();
        let mut paid = paid_from;

        let master = self.http.get(self.url(play)).send().await?.bytes().await?;
        let rendition = lowest_video_rendition(&master)
            .ok_or_else(|| ClientError::Protocol("no rendition".into()))?;
        let mut cids: HashMap<u64, String> = HashMap::new();
        let mut next_sequence = 0u64;
        let mut summary = WatchSummary {
            media_ms: 0,
            segments: 0,
            spent: Amount::ZERO,
            cids_verified: 0,
            stopped: "watched the requested time".into(),
            channel_id: format!("{channel_id:#x}"),
        };
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds.saturating_mul(3).max(30));
        while summary.media_ms < seconds * 1000 {
            if Instant::now() > deadline {
                summary.stopped = "timed out waiting for media".into();
                break;
            }
            let playlist_bytes = self
                .http
                .get(self.url(&format!("{play_base}{rendition}/index.m3u8")))
                .send()
                .await?
                .bytes()
                .await?;
            let listed = m3u8_rs::parse_media_playlist_res(&playlist_bytes)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            let first = listed.media_sequence;
            let ended = listed.end_list;
            let mut progressed = false;
            for (offset, segment) in listed.segments.iter().enumerate() {
                let sequence = first + offset as u64;
                if sequence < next_sequence {
                    continue;
                }
                let duration_ms = (f64::from(segment.duration) * 1000.0).round() as u32;
                let path = format!("{play_base}{rendition}/{sequence}.m4s");
                let bytes = loop {
                    let response = self.http.get(self.url(&path)).send().await?;
                    if response.status().is_success() {
                        break response.bytes().await?;
                    }
                    let status = response.status().as_u16();
                    let problem: Value = response.json().await.unwrap_or(Value::Null);
                    if status != 402 || problem["type"] != "/problems/payment-required" {
                        summary.stopped =
                            format!("{status} {}", problem["type"].as_str().unwrap_or_default());
                        summary.spent = Amount(paid.0 - paid_from.0);
                        return Ok(summary);
                    }
                    let asked: Amount = problem["required_amount"]
                        .as_str()
                        .and_then(|a| a.parse().ok())
                        .ok_or_else(|| {
                            ClientError::Protocol("402 without required_amount".into())
                        })?;
                    if parse_price(&problem["price"]) != Some(price) {
                        return Err(ClientError::Protocol("the 402 names another price".into()));
                    }
                    // What this client owes for the segment by its own meter.
                    let mut probe = meter.clone();
                    let allowed = match probe.decide(sequence, duration_ms, Amount(0)) {
                        streamweave_ledger::GateDecision::PaymentRequired { required } => required,
                        streamweave_ledger::GateDecision::CapReached { .. } => {
                            summary.stopped = "spending cap reached".into();
                            summary.spent = Amount(paid.0 - paid_from.0);
                            return Ok(summary);
                        }
                        streamweave_ledger::GateDecision::Serve { .. } => paid,
                    };
                    if asked > allowed {
                        return Err(ClientError::GreedyServer { asked, allowed });
                    }
                    self.pay(&opened, asked).await?;
                    paid = paid.max(asked);
                };
                let _ = meter.decide(sequence, duration_ms, Amount(u128::MAX));
                // Verify the bytes against the CID the server lists for them.
                let expected = match cids.get(&sequence) {
                    Some(cid) => Some(cid.clone()),
                    None => {
                        cids = self.segment_cids(stream_id, &rendition).await?;
                        cids.get(&sequence).cloned()
                    }
                };
                let actual = streamweave_cas::file_cid(&bytes).to_string();
                if expected.as_deref() != Some(actual.as_str()) {
                    return Err(ClientError::CidMismatch(path));
                }
                summary.cids_verified += 1;
                summary.segments += 1;
                summary.media_ms += u64::from(duration_ms);
                next_sequence = sequence + 1;
                progressed = true;
                // Pay one segment ahead so the next request is not held up.
                if let Some(next) = listed.segments.get(offset + 1) {
                    let next_ms = (f64::from(next.duration) * 1000.0).round() as u32;
                    let mut probe = meter.clone();
                    if let streamweave_ledger::GateDecision::PaymentRequired { required } =
                        probe.decide(sequence + 1, next_ms, paid)
                        && self.pay(&opened, required).await.is_ok()
                    {
                        paid = required;
                    }
                }
                if summary.media_ms >= seconds * 1000 {
                    break;
                }
            }
            if !progressed {
                if ended {
                    summary.stopped = "the stream ended".into();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        summary.spent = Amount(paid.0 - paid_from.0);
        Ok(summary)
    }

    /// Opens a channel of `deposit` to the stream's creator with a fresh
    /// session key, and starts a session on it (optionally capped).
    pub async fn open_session(
        &self,
        stream_id: &str,
        deposit: Amount,
        max_spend: Option<Amount>,
    ) -> Result<PaidSession> {
        let stream = self.get(&format!("/api/v1/streams/{stream_id}")).await?;
        let price = parse_price(&stream["price"])
            .ok_or_else(|| ClientError::Protocol("the stream has no price".into()))?;
        let preview_ms = stream["preview_seconds"].as_u64().unwrap_or(0) * 1000;
        let owner = stream["owner"]
            .as_str()
            .ok_or_else(|| ClientError::Protocol("the stream has no owner".into()))?;
        let config = self.get("/api/v1/payments/config").await?;
        let domain = PaymentDomain {
            chain_id: config["chain_id"]
                .as_u64()
                .ok_or_else(|| ClientError::Protocol("no chain id".into()))?,
            escrow: config["escrow"]
                .as_str()
                .and_then(|e| e.parse().ok())
                .ok_or_else(|| ClientError::Protocol("no escrow".into()))?,
        };
        let session_key = loop {
            if let Ok(key) = SigningKey::from_bytes(&rand::random::<[u8; 32]>()) {
                break key;
            }
        };
        let channel_id: B256 = if config["on_chain"] == true {
            let payee: Address = owner
                .parse()
                .map_err(|_| ClientError::Protocol("the stream's owner is no address".into()))?;
            self.open_channel_on_chain(payee, deposit, session_key.address(), 24 * 3600)
                .await?
        } else {
            let channel = self
                .post("/api/v1/channels", json!({"payee": owner, "deposit": deposit.to_string(), "signer": format!("{:#x}", session_key.address())}))
                .await?;
            channel["id"]
                .as_str()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| ClientError::Protocol("no channel id".into()))?
        };
        let mut body = json!({"channel_id": format!("{channel_id:#x}")});
        if let Some(cap) = max_spend {
            body["max_spend"] = json!(cap.to_string());
        }
        let session = self
            .post(&format!("/api/v1/streams/{stream_id}/sessions"), body)
            .await?;
        let playback_url = session["playback_url"]
            .as_str()
            .ok_or_else(|| ClientError::Protocol("no playback_url".into()))?
            .to_string();
        let paid_from: Amount = session["paid_from"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_default();
        Ok(PaidSession {
            stream_id: stream_id.to_string(),
            channel_id,
            playback_url,
            price,
            paid_from,
            meter: Meter::new(price, paid_from, max_spend, 0).with_preview(preview_ms),
            domain,
            session_key,
        })
    }

    /// Signs a voucher for the cumulative `amount` on the session's channel and submits it.
    pub async fn pay(&self, session: &PaidSession, amount: Amount) -> Result<()> {
        let (path, voucher) = session.voucher(amount);
        self.post(&path, voucher).await.map(|_| ())
    }

    /// Keeps `session` paid ahead for `duration` while another component
    /// (any HLS player) plays its `playback_url`: pays up to the server's
    /// prepay window as the player is granted media, but never beyond what
    /// real time allows (media time elapsed since the start plus a live
    /// window's burst of `segment_duration_ms` segments) nor the session's
    /// cap. Returns what it spent.
    pub async fn pay_ahead(
        &self,
        session: &PaidSession,
        segment_duration_ms: u64,
        duration: Duration,
    ) -> Result<Amount> {
        /// Segments a player may fetch at once when it joins (a live window).
        const BURST_SEGMENTS: u64 = 6;
        let started = Instant::now();
        let mut paid = session.paid_from;
        while started.elapsed() < duration {
            let limit_ms =
                started.elapsed().as_millis() as u64 + BURST_SEGMENTS * segment_duration_ms.max(1);
            let mut owed = session
                .price
                .owed(limit_ms)
                .ok_or_else(|| ClientError::Protocol("price overflow".into()))?;
            if let Some(cap) = session.meter.max_spend {
                owed = owed.min(cap);
            }
            let limit = session
                .paid_from
                .checked_add(owed)
                .ok_or_else(|| ClientError::Protocol("amount overflow".into()))?;
            if limit <= paid {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            match self.pay(session, limit).await {
                Ok(()) => paid = limit,
                // Past the window: pay what it accepts now, if that moves.
                Err(ClientError::Api {
                    status: 409,
                    problem,
                    ..
                }) => {
                    let accepted = problem["max_amount"]
                        .as_str()
                        .and_then(|a| a.parse::<Amount>().ok())
                        .filter(|&max| max > paid && max < limit);
                    match accepted {
                        Some(max) => match self.pay(session, max).await {
                            Ok(()) => paid = max,
                            Err(ClientError::Api { status: 409, .. }) => {}
                            Err(err) => return Err(err),
                        },
                        None => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(Amount(paid.0 - session.paid_from.0))
    }

    /// The shared HTTP client and the absolute URL of a server path.
    pub fn http(&self, path: &str) -> (&reqwest::Client, String) {
        (&self.http, self.url(path))
    }

    async fn segment_cids(&self, stream_id: &str, rendition: &str) -> Result<HashMap<u64, String>> {
        let listed = self
            .get(&format!("/api/v1/streams/{stream_id}/segments"))
            .await?;
        Ok(listed
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["rendition"] == rendition)
            .filter_map(|s| Some((s["sequence"].as_u64()?, s["cid"].as_str()?.to_string())))
            .collect())
    }
}

fn parse_price(value: &Value) -> Option<Price> {
    Some(Price {
        amount: value["amount"].as_str()?.parse().ok()?,
        period_seconds: u32::try_from(value["period_seconds"].as_u64()?).ok()?,
    })
}

fn lowest_video_rendition(master: &[u8]) -> Option<String> {
    let master = m3u8_rs::parse_master_playlist_res(master).ok()?;
    master
        .variants
        .iter()
        .filter(|v| v.resolution.is_some())
        .min_by_key(|v| v.bandwidth)
        .and_then(|v| v.uri.split('/').next().map(str::to_string))
}

/// 0x-hex.
/// The escrow's policy tuple from `GET /api/v1/payments/policies/{payee}`.
fn policy_of(view: &Value) -> Option<streamweave_chain::abi::Policy> {
    let recipients = view["recipients"]
        .as_array()?
        .iter()
        .map(|r| {
            Some(streamweave_chain::abi::Recipient {
                account: r["account"].as_str()?.parse().ok()?,
                share: r["share"].as_u64()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(streamweave_chain::abi::Policy {
        feeBps: u16::try_from(view["fee_bps"].as_u64()?).ok()?,
        feeRecipient: view["fee_recipient"].as_str()?.parse().ok()?,
        recipients,
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::from("0x"), |mut out, b| {
        out.push_str(&format!("{b:02x}"));
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_lowest_video_rendition() {
        let master = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=3000000,RESOLUTION=1280x720\n720p/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=1000000,RESOLUTION=640x360\n360p/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=140000,CODECS=\"mp4a.40.2\"\naudio/index.m3u8\n";
        assert_eq!(lowest_video_rendition(master).as_deref(), Some("360p"));
    }

    #[test]
    fn prices_parse_from_json() {
        assert_eq!(
            parse_price(&json!({"amount": "50000", "period_seconds": 60})),
            Some(Price {
                amount: Amount(50_000),
                period_seconds: 60
            })
        );
        assert_eq!(
            parse_price(&json!({"amount": 5, "period_seconds": 60})),
            None,
            "amounts are strings"
        );
    }
}
