//! A load generator: N paying viewers of one live stream, each polling the
//! live playlist, paying for each new segment and fetching it, with every
//! request timed. A static mode makes the same requests at the same rate
//! against plain files (e.g. nginx serving the same segments) for comparison.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use m3u8_rs::MediaPlaylist;
use serde::Serialize;
use streamweave_ledger::{Amount, B256, GateDecision, SigningKey};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use crate::viewer_http::{Origin, ViewerHttp};
use crate::{Client, ClientError, lowest_video_rendition};

/// Sign-in attempts per viewer while the server answers 429.
const SIGN_IN_ATTEMPTS: u32 = 50;

/// Error samples kept in a report.
const MAX_ERROR_SAMPLES: usize = 10;

/// Paying viewers of one stream.
#[derive(Debug, Clone)]
pub struct PaidLoad {
    /// The servers (`http://127.0.0.1:8080`), in dev mode: viewers fund
    /// themselves from the faucet. Viewer `i` watches through server
    /// `i % servers.len()` (a cluster's nodes, each viewer staying on one,
    /// as a player stays on the edge it was sent to).
    pub servers: Vec<String>,
    /// The priced live stream.
    pub stream_id: String,
    /// Viewers.
    pub viewers: usize,
    /// How long their requests are measured, once all have joined.
    pub seconds: u64,
    /// Over how long viewers join, one after another (none measured yet).
    pub ramp_seconds: u64,
    /// Each viewer's channel deposit (and faucet grant).
    pub deposit: Amount,
    /// Viewers signing in and opening channels at once during setup.
    pub setup_concurrency: usize,
    /// How often each viewer polls the playlist.
    pub poll_interval_ms: u64,
    /// The servers' process ids on this machine, to report their CPU and
    /// memory together.
    pub server_pids: Vec<u32>,
}

/// Free viewers of plain files as of a live stream: `{base}/index.m3u8`
/// polled, and a new segment "appears" every `segment_duration_ms` (one of
/// `{base}/{0..segments}.m4s` in turn), which each viewer fetches at its
/// first poll after it appeared, as the paying viewers of a live stream do.
#[derive(Debug, Clone)]
pub struct StaticLoad {
    /// URL of a rendition's directory.
    pub base: String,
    /// Segments there, `0.m4s` up.
    pub segments: u64,
    /// How often a new segment appears.
    pub segment_duration_ms: u64,
    /// Viewers.
    pub viewers: usize,
    /// How long their requests are measured, once all have joined.
    pub seconds: u64,
    /// Over how long viewers join, one after another (none measured yet).
    pub ramp_seconds: u64,
    /// How often each viewer polls the playlist.
    pub poll_interval_ms: u64,
    /// The processes serving the files (nginx's workers), to report their
    /// CPU together.
    pub server_pids: Vec<u32>,
}

/// Latencies of one kind of request.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Requests that completed.
    pub count: usize,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
}

impl Latency {
    /// From request durations in microseconds.
    pub fn from_micros(mut samples: Vec<u32>) -> Self {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |quantile: f64| {
            let rank = ((samples.len() as f64 * quantile).ceil() as usize).clamp(1, samples.len());
            f64::from(samples[rank - 1]) / 1000.0
        };
        Latency {
            count: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// What a load run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Viewers asked for.
    pub viewers: usize,
    /// Viewers that finished setup and watched.
    pub viewers_watching: usize,
    /// Seconds measured, after every viewer joined (the ramp) and made its
    /// first poll.
    pub seconds: u64,
    /// Seconds over which viewers joined, not measured (errors excepted).
    pub ramp_seconds: u64,
    /// Setup time (sign-in, faucet, channel, session for everyone), milliseconds.
    pub setup_ms: u64,
    /// Segment requests that were served.
    pub segments: Latency,
    /// Playlist polls.
    pub playlists: Latency,
    /// Voucher submissions accepted, from the start of signing (the
    /// viewer's wait) to the answer.
    pub vouchers: Latency,
    /// The same vouchers from being posted to the answer: the server's
    /// part, without the wait for the generator's signing thread.
    pub voucher_answers: Latency,
    /// Segment requests per second over the measured seconds.
    pub segments_per_second: f64,
    /// Bytes of segments received.
    pub segment_bytes: u64,
    /// Segments answered 402 although paid ahead (then paid and fetched again).
    pub payment_required_retries: u64,
    /// Failed requests of any kind (transport, timeout, unexpected status).
    pub errors: u64,
    /// A few of them.
    pub error_samples: Vec<String>,
    /// The server's CPU over the measured seconds, percent of one core
    /// (several servers' summed).
    pub server_cpu_percent: Option<f64>,
    /// The server's resident memory at the end, MiB (several servers' summed).
    pub server_rss_mib: Option<f64>,
    /// The server's peak resident memory, MiB (several servers' summed).
    pub server_peak_rss_mib: Option<f64>,
    /// This generator's CPU over the measured seconds, percent of one core.
    pub generator_cpu_percent: Option<f64>,
}

/// CPU time (user + system) a process has used, in clock ticks (USER_HZ, 100 a second on Linux).
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// A `/proc/{pid}/status` memory line (`VmRSS`, `VmHWM`) in MiB.
fn memory_mib(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU use of processes over an interval.
struct CpuWatch {
    started: Instant,
    ticks: Vec<Option<u64>>,
    pids: Vec<String>,
}

impl CpuWatch {
    fn start(pids: Vec<String>) -> Self {
        CpuWatch {
            started: Instant::now(),
            ticks: pids.iter().map(|p| cpu_ticks(p)).collect(),
            pids,
        }
    }

    /// Percent of one core each process used since the start.
    fn percents(&self) -> Vec<Option<f64>> {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        self.pids
            .iter()
            .zip(&self.ticks)
            .map(|(pid, before)| {
                let used = cpu_ticks(pid)?.checked_sub((*before)?)?;
                Some(used as f64 / 100.0 / seconds * 100.0)
            })
            .collect()
    }
}

/// When viewers join and when their requests count: they join one after
/// another over the ramp, and what starts before every one of them has
/// joined and polled once is not measured (a player's first request opens
/// its connection; 10,000 of them within a second measure the connection
/// storm, not the steady state). Errors count all along.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    ramp: Duration,
    measure_from: Instant,
    deadline: Instant,
}

impl Window {
    fn new(ramp_seconds: u64, seconds: u64, poll: Duration) -> Window {
        let started = Instant::now();
        let ramp = Duration::from_secs(ramp_seconds);
        let measure_from = started + ramp + poll;
        Window {
            started,
            ramp,
            measure_from,
            deadline: measure_from + Duration::from_secs(seconds),
        }
    }

    /// When viewer `index` of `viewers` joins.
    fn join_at(&self, index: usize, viewers: usize) -> Instant {
        self.started + self.ramp.mul_f64(index as f64 / viewers.max(1) as f64)
    }

    /// The live edge at `at` of a stream whose segments appear every
    /// `segment_duration_ms` from the window's start: how many have.
    fn live_edge(&self, at: Instant, segment_duration_ms: u64) -> u64 {
        let elapsed_ms = at.saturating_duration_since(self.started).as_millis();
        u64::try_from(elapsed_ms / u128::from(segment_duration_ms.max(1))).unwrap_or(u64::MAX)
    }

    /// Whether a request started at `at` is measured.
    fn measures(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.deadline
    }
}

#[derive(Default)]
struct ViewerTally {
    segments_us: Vec<u32>,
    playlists_us: Vec<u32>,
    vouchers_us: Vec<u32>,
    voucher_answers_us: Vec<u32>,
    segment_bytes: u64,
    retries: u64,
    errors: u64,
    error_samples: Vec<String>,
}

impl ViewerTally {
    /// A playlist answered, asked for at `started`.
    fn playlist(&mut self, window: &Window, started: Instant) {
        if window.measures(started) {
            self.playlists_us.push(micros(started));
        }
    }

    /// A segment of `length` bytes received, asked for at `started`.
    fn segment(&mut self, window: &Window, started: Instant, length: u64) {
        if window.measures(started) {
            self.segments_us.push(micros(started));
            self.segment_bytes += length;
        }
    }

    /// A voucher accepted, signed from `started` and posted at `posted`.
    fn voucher(&mut self, window: &Window, started: Instant, posted: Instant) {
        if window.measures(started) {
            self.vouchers_us.push(micros(started));
            self.voucher_answers_us.push(micros(posted));
        }
    }

    fn error(&mut self, what: impl std::fmt::Display) {
        self.errors += 1;
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            self.error_samples.push(what.to_string());
        }
    }
}

fn micros(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_micros()).unwrap_or(u32::MAX)
}

fn report(viewers: usize, seconds: u64, setup_ms: u64, tallies: Vec<ViewerTally>) -> LoadReport {
    let mut out = LoadReport {
        viewers,
        viewers_watching: tallies.len(),
        seconds,
        setup_ms,
        ..LoadReport::default()
    };
    let (mut segments, mut playlists) = (Vec::new(), Vec::new());
    let (mut vouchers, mut voucher_answers) = (Vec::new(), Vec::new());
    for tally in tallies {
        segments.extend(tally.segments_us);
        playlists.extend(tally.playlists_us);
        vouchers.extend(tally.vouchers_us);
        voucher_answers.extend(tally.voucher_answers_us);
        out.segment_bytes += tally.segment_bytes;
        out.payment_required_retries += tally.retries;
        out.errors += tally.errors;
        for sample in tally.error_samples {
            if out.error_samples.len() < MAX_ERROR_SAMPLES {
                out.error_samples.push(sample);
            }
        }
    }
    out.segments_per_second = segments.len() as f64 / seconds.max(1) as f64;
    out.segments = Latency::from_micros(segments);
    out.playlists = Latency::from_micros(playlists);
    out.vouchers = Latency::from_micros(vouchers);
    out.voucher_answers = Latency::from_micros(voucher_answers);
    out
}

/// An HTTP client for many viewers: one pool, many connections, bounded waits.
/// An idle connection leaves the pool after 5 s, before the server's 10 s
/// (its header timeout) closes it: a request sent on a connection the
/// server is closing at that moment fails, and a POST is not sent again.
fn load_http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

/// Runs `config.viewers` paying viewers and reports what they measured.
pub async fn run_paid(config: PaidLoad) -> Result<LoadReport, ClientError> {
    let http = load_http();
    if config.servers.is_empty() {
        return Err(ClientError::Protocol("no server to watch through".into()));
    }
    let origins = config
        .servers
        .iter()
        .map(|server| Origin::parse(server))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ClientError::Protocol)?;
    let setup_started = Instant::now();
    let gate = Arc::new(Semaphore::new(config.setup_concurrency.max(1)));
    let mut setups = JoinSet::new();
    for viewer in 0..config.viewers {
        let (http, config, gate) = (http.clone(), config.clone(), gate.clone());
        let node = viewer % config.servers.len();
        setups.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let key = loop {
                if let Ok(key) = SigningKey::from_bytes(&rand::random::<[u8; 32]>()) {
                    break key;
                }
            };
            let mut client = Client::with_http(&config.servers[node], key, http);
            // A server bounds sign-in challenges per address (all of the
            // generator's viewers share one): on its 429, wait a moment and
            // ask again.
            let mut attempts = 0;
            loop {
                match client.sign_in().await {
                    Err(ClientError::Api { status: 429, .. }) if attempts < SIGN_IN_ATTEMPTS => {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    outcome => break outcome.map(drop)?,
                }
            }
            client.faucet(config.deposit).await?;
            let session = client
                .open_session(&config.stream_id, config.deposit, None)
                .await?;
            let (http, url) = client.http(&session.playback_url);
            let master = http.get(url).send().await?.bytes().await?;
            let rendition = lowest_video_rendition(&master)
                .ok_or_else(|| ClientError::Protocol("no video rendition".into()))?;
            Ok::<_, ClientError>((node, session, rendition))
        });
    }
    let mut ready = Vec::with_capacity(config.viewers);
    let mut setup_errors = ViewerTally::default();
    while let Some(joined) = setups.join_next().await {
        match joined {
            Ok(Ok(viewer)) => ready.push(viewer),
            Ok(Err(err)) => setup_errors.error(format!("setup: {err}")),
            Err(err) => setup_errors.error(format!("setup task: {err}")),
        }
    }
    if ready.is_empty() {
        return Err(ClientError::Protocol(format!(
            "no viewer could start: {}",
            setup_errors
                .error_samples
                .first()
                .cloned()
                .unwrap_or_default()
        )));
    }
    let setup_ms = setup_started.elapsed().as_millis() as u64;

    let poll = Duration::from_millis(config.poll_interval_ms.max(100));
    let window = Window::new(config.ramp_seconds, config.seconds, poll);
    let shared = Shared {
        signing: VoucherSigning::start()
            .map_err(|err| ClientError::Protocol(format!("starting the signing thread: {err}")))?,
        playlists: Arc::default(),
    };
    let mut watchers = JoinSet::new();
    let joining = ready.len();
    for (index, (node, session, rendition)) in ready.into_iter().enumerate() {
        let connection = ViewerHttp::new(origins[node].clone());
        let join_at = window.join_at(index, joining);
        watchers.spawn(watch_paying(
            connection,
            shared.clone(),
            session,
            rendition,
            window,
            join_at,
            poll,
        ));
    }
    let watching = watchers.len();
    tokio::time::sleep_until(window.measure_from.into()).await;
    // A profiler started by hand (or by `scripts/bench/viewers.sh`) waits
    // for this line to cover the measured seconds only.
    tracing::info!(
        watching,
        seconds = config.seconds,
        "all viewers joined; measuring"
    );
    let cpu = CpuWatch::start(
        ["self".to_string()]
            .into_iter()
            .chain(config.server_pids.iter().map(u32::to_string))
            .collect(),
    );
    let mut tallies = Vec::with_capacity(watching + 1);
    while let Some(joined) = watchers.join_next().await {
        match joined {
            Ok(tally) => tallies.push(tally),
            Err(err) => setup_errors.error(format!("viewer task: {err}")),
        }
    }
    tallies.push(setup_errors);
    let percents = cpu.percents();
    let mut out = report(config.viewers, config.seconds, setup_ms, tallies);
    out.viewers_watching = watching;
    out.ramp_seconds = config.ramp_seconds;
    out.generator_cpu_percent = percents.first().copied().flatten();
    if !config.server_pids.is_empty() {
        // All of them, or nothing (a server that went away is not 0 %).
        out.server_cpu_percent = percents[1..].iter().copied().sum();
        let memory = |field| {
            config
                .server_pids
                .iter()
                .map(|pid| memory_mib(&pid.to_string(), field))
                .sum::<Option<f64>>()
        };
        out.server_rss_mib = memory("VmRSS:");
        out.server_peak_rss_mib = memory("VmHWM:");
    }
    Ok(out)
}

/// How far below the thread reading the viewers' media the signing thread
/// runs (nice levels).
const SIGNING_NICENESS: i32 = 10;

/// Vouchers waiting to be signed before a viewer signs its own inline.
const SIGNING_QUEUE: usize = 65_536;

struct SignJob {
    key: SigningKey,
    digest: B256,
    reply: oneshot::Sender<[u8; 65]>,
}

/// Signs the simulated viewers' vouchers on a thread of its own, below the
/// priority of the thread reading their media. Each real player signs on
/// its own device; here thousands share one core, and a burst of
/// signatures (half the viewers pay when a new segment appears) must not
/// hold up reading the other viewers' segments, whose latency is measured.
#[derive(Clone)]
struct VoucherSigning {
    jobs: mpsc::SyncSender<SignJob>,
}

impl VoucherSigning {
    fn start() -> std::io::Result<VoucherSigning> {
        let (jobs, queue) = mpsc::sync_channel::<SignJob>(SIGNING_QUEUE);
        std::thread::Builder::new()
            .name("voucher-signing".into())
            .spawn(move || {
                if let Err(err) = crate::threads::lower_thread_priority(SIGNING_NICENESS) {
                    tracing::warn!(%err, "lowering the signing thread's priority");
                }
                for job in queue {
                    let _ = job.reply.send(job.key.sign_digest(job.digest));
                }
            })?;
        Ok(VoucherSigning { jobs })
    }

    /// `digest` signed by `key`: on the signing thread, or here when its
    /// queue is full or gone.
    async fn sign(&self, key: &SigningKey, digest: B256) -> [u8; 65] {
        let (reply, answer) = oneshot::channel();
        let job = SignJob {
            key: key.clone(),
            digest,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => match answer.await {
                Ok(signature) => signature,
                Err(_) => key.sign_digest(digest),
            },
            Err(_) => key.sign_digest(digest),
        }
    }
}

/// Media playlists parsed once for every viewer: the viewers of a stream
/// fetch the same bytes, and each new segment had them parse those bytes
/// 10,000 times within one second.
#[derive(Default)]
struct ParsedPlaylists {
    recent: Mutex<VecDeque<(Bytes, Arc<MediaPlaylist>)>>,
}

impl ParsedPlaylists {
    /// Distinct playlists kept (a live playlist changes with each part).
    const KEPT: usize = 8;

    fn parse(&self, bytes: &[u8]) -> Option<Arc<MediaPlaylist>> {
        {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, parsed)) = recent.iter().find(|(kept, _)| kept[..] == *bytes) {
                return Some(parsed.clone());
            }
        }
        let parsed = Arc::new(m3u8_rs::parse_media_playlist_res(bytes).ok()?);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.push_front((Bytes::copy_from_slice(bytes), parsed.clone()));
        recent.truncate(Self::KEPT);
        Some(parsed)
    }
}

/// What the viewers of one run share.
#[derive(Clone)]
struct Shared {
    signing: VoucherSigning,
    playlists: Arc<ParsedPlaylists>,
}

/// Posts a voucher for a cumulative `amount` on the viewer's connection,
/// as a player sends it beside its media requests; answers when it was
/// posted (signed).
async fn pay(
    connection: &mut ViewerHttp,
    session: &crate::PaidSession,
    signing: &VoucherSigning,
    amount: Amount,
) -> Result<Instant, String> {
    let signature = signing
        .sign(session.session_key(), session.voucher_digest(amount))
        .await;
    let (path, voucher) = session.signed_voucher(amount, &signature);
    let posted = Instant::now();
    let (status, answer) = connection
        .post_json(&path, Bytes::from(voucher.to_string()))
        .await?;
    if status.is_success() {
        Ok(posted)
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&answer)))
    }
}

/// One paying viewer: polls, pays each new segment ahead of fetching it, fetches it.
async fn watch_paying(
    mut connection: ViewerHttp,
    shared: Shared,
    session: crate::PaidSession,
    rendition: String,
    window: Window,
    join_at: Instant,
    poll: Duration,
) -> ViewerTally {
    let deadline = window.deadline;
    let mut tally = ViewerTally::default();
    let mut meter = session.meter.clone();
    let mut paid = session.paid_from;
    let play_base = session
        .playback_url
        .trim_end_matches("master.m3u8")
        .to_string();
    let playlist_path = format!("{play_base}{rendition}/index.m3u8");
    let mut next_sequence: Option<u64> = None;
    let mut newest_seen: Option<Vec<u8>> = None;
    // Join in turn, at a random phase of the poll interval, as real players do.
    tokio::time::sleep_until((join_at + poll.mul_f64(rand::random::<f64>())).into()).await;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < deadline {
        tick.tick().await;
        let started = Instant::now();
        let listed = match connection.get(&playlist_path).await {
            Ok((status, bytes)) if status.is_success() => {
                tally.playlist(&window, started);
                // Its newest segment already seen: nothing new is listed
                // (only the parts moved on), so it is not parsed again.
                // Parsing every poll was a fifth of the generator's CPU.
                let newest = newest_segment_uri(&bytes);
                if newest.is_some() && newest == newest_seen.as_deref() {
                    continue;
                }
                newest_seen = newest.map(<[u8]>::to_vec);
                shared.playlists.parse(&bytes)
            }
            Ok((status, _)) => {
                tally.error(format!("playlist: {status}"));
                None
            }
            Err(err) => {
                tally.error(format!("playlist: {err}"));
                None
            }
        };
        let Some(listed) = listed else { continue };
        let first = listed.media_sequence;
        let last = first + listed.segments.len() as u64;
        // Start at the live edge: the newest listed segment.
        let from = *next_sequence.get_or_insert(last.saturating_sub(1));
        for sequence in from.max(first)..last {
            if Instant::now() >= deadline {
                break;
            }
            let segment = &listed.segments[(sequence - first) as usize];
            let duration_ms = (f64::from(segment.duration) * 1000.0).round() as u32;
            // Pay ahead: the voucher goes before the request it pays for,
            // and covers the next segment too (of the same duration), which
            // the server's prepay window of two segments accepts: one
            // voucher every other segment.
            let mut probe = meter.clone();
            match probe.decide(sequence, duration_ms, paid) {
                GateDecision::PaymentRequired { required } => {
                    let mut ahead = meter.clone();
                    let _ = ahead.decide(sequence, duration_ms, Amount(u128::MAX));
                    let through_next = match ahead.decide(sequence + 1, duration_ms, Amount(0)) {
                        GateDecision::PaymentRequired { required } => required,
                        _ => required,
                    };
                    let started = Instant::now();
                    let mut result = pay(&mut connection, &session, &shared.signing, through_next)
                        .await
                        .map(|posted| (through_next, posted));
                    if result.is_err() {
                        // The window was narrower (or the voucher failed): this segment alone.
                        result = pay(&mut connection, &session, &shared.signing, required)
                            .await
                            .map(|posted| (required, posted));
                    }
                    match result {
                        Ok((amount, posted)) => {
                            tally.voucher(&window, started, posted);
                            paid = amount;
                        }
                        Err(err) => tally.error(format!("voucher: {err}")),
                    }
                }
                GateDecision::CapReached { .. } => return tally,
                GateDecision::Serve { .. } => {}
            }
            let path = format!("{play_base}{rendition}/{sequence}.m4s");
            let mut attempts = 0;
            loop {
                attempts += 1;
                let started = Instant::now();
                match connection.get_counted(&path).await {
                    Ok((status, length)) if status.is_success() => {
                        tally.segment(&window, started, length);
                        let _ = meter.decide(sequence, duration_ms, Amount(u128::MAX));
                        break;
                    }
                    Ok((status, _)) if status.as_u16() == 402 && attempts == 1 => {
                        // Not yet covered (a voucher failed): pay what the meter says and retry.
                        tally.retries += 1;
                        let mut probe = meter.clone();
                        if let GateDecision::PaymentRequired { required } =
                            probe.decide(sequence, duration_ms, Amount(0))
                            && pay(&mut connection, &session, &shared.signing, required)
                                .await
                                .is_ok()
                        {
                            paid = paid.max(required);
                        }
                    }
                    Ok((status, _)) => {
                        tally.error(format!("segment: {status}"));
                        break;
                    }
                    Err(err) => {
                        tally.error(format!("segment: {err}"));
                        break;
                    }
                }
            }
            next_sequence = Some(sequence + 1);
        }
    }
    tally
}

/// A media playlist's newest full segment: its last URI line (parts and
/// hints are tags, so their URIs are not lines of their own).
fn newest_segment_uri(playlist: &[u8]) -> Option<&[u8]> {
    playlist
        .split(|byte| *byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .rev()
        .find(|line| !line.is_empty() && !line.starts_with(b"#"))
}

/// Runs `config.viewers` free viewers of plain files at the paid run's request rate.
pub async fn run_static(config: StaticLoad) -> Result<LoadReport, ClientError> {
    let origin = Origin::parse(&config.base).map_err(ClientError::Protocol)?;
    let poll = Duration::from_millis(config.poll_interval_ms.max(100));
    let window = Window::new(config.ramp_seconds, config.seconds, poll);
    // The base's path (`/360p`), for the requests' origin form.
    let base = reqwest::Url::parse(&config.base)
        .map_err(|err| ClientError::Protocol(err.to_string()))?
        .path()
        .trim_end_matches('/')
        .to_string();
    let mut watchers = JoinSet::new();
    for viewer in 0..config.viewers {
        let (config, base) = (config.clone(), base.clone());
        let mut connection = ViewerHttp::new(origin.clone());
        let join_at = window.join_at(viewer, config.viewers);
        watchers.spawn(async move {
            let mut tally = ViewerTally::default();
            tokio::time::sleep_until((join_at + poll.mul_f64(rand::random::<f64>())).into()).await;
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut fetched: Option<u64> = None;
            while Instant::now() < window.deadline {
                tick.tick().await;
                let started = Instant::now();
                match connection.get(&format!("{base}/index.m3u8")).await {
                    Ok((status, _)) if status.is_success() => tally.playlist(&window, started),
                    Ok((status, _)) => tally.error(format!("playlist: {status}")),
                    Err(err) => tally.error(format!("playlist: {err}")),
                }
                // The newest segment, once: every viewer polling in the
                // second after it appeared asks for it then.
                let newest = window.live_edge(Instant::now(), config.segment_duration_ms);
                if fetched != Some(newest) {
                    fetched = Some(newest);
                    let sequence = newest % config.segments.max(1);
                    let started = Instant::now();
                    match connection
                        .get_counted(&format!("{base}/{sequence}.m4s"))
                        .await
                    {
                        Ok((status, length)) if status.is_success() => {
                            tally.segment(&window, started, length)
                        }
                        Ok((status, _)) => tally.error(format!("segment: {status}")),
                        Err(err) => tally.error(format!("segment: {err}")),
                    }
                }
            }
            tally
        });
    }
    tokio::time::sleep_until(window.measure_from.into()).await;
    let cpu = CpuWatch::start(
        ["self".to_string()]
            .into_iter()
            .chain(config.server_pids.iter().map(u32::to_string))
            .collect(),
    );
    let mut tallies = Vec::with_capacity(config.viewers);
    let mut failed = ViewerTally::default();
    while let Some(joined) = watchers.join_next().await {
        match joined {
            Ok(tally) => tallies.push(tally),
            Err(err) => failed.error(format!("viewer task: {err}")),
        }
    }
    let watching = tallies.len();
    tallies.push(failed);
    let mut out = report(config.viewers, config.seconds, 0, tallies);
    out.viewers_watching = watching;
    out.ramp_seconds = config.ramp_seconds;
    let percents = cpu.percents();
    out.generator_cpu_percent = percents.first().copied().flatten();
    if !config.server_pids.is_empty() {
        // All of them, or nothing (a worker that went away is not 0 %).
        out.server_cpu_percent = percents[1..].iter().copied().sum();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_segment_is_the_last_uri_line_not_a_part() {
        let playlist = b"#EXTM3U\r\n#EXT-X-MEDIA-SEQUENCE:7\r\n#EXTINF:2,\r\n7.m4s\r\n\
#EXTINF:2,\r\n8.m4s\r\n#EXT-X-PART:DURATION=0.333,URI=\"9.0.m4s\"\r\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"9.1.m4s\"\r\n";
        assert_eq!(newest_segment_uri(playlist), Some(&b"8.m4s"[..]));
        assert_eq!(
            newest_segment_uri(b"#EXTM3U\n#EXTINF:2,\n3.m4s\n"),
            Some(&b"3.m4s"[..])
        );
        // Nothing listed yet: no newest segment, so the playlist is parsed.
        assert_eq!(
            newest_segment_uri(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n"),
            None
        );
    }

    #[test]
    fn equal_playlists_are_parsed_once_and_changed_ones_again() {
        let playlists = ParsedPlaylists::default();
        let first =
            b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2,\n7.m4s\n";
        let next = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2,\n7.m4s\n#EXTINF:2,\n8.m4s\n";
        let parsed = playlists.parse(first).expect("a media playlist");
        assert_eq!((parsed.media_sequence, parsed.segments.len()), (7, 1));
        // Equal bytes fetched anew (another viewer's response).
        let fetched_again = Bytes::copy_from_slice(first);
        let again = playlists.parse(&fetched_again).expect("kept");
        assert!(Arc::ptr_eq(&parsed, &again));
        let moved = playlists.parse(next).expect("a media playlist");
        assert!(!Arc::ptr_eq(&parsed, &moved));
        assert_eq!(moved.segments.len(), 2);
        assert!(playlists.parse(b"not a playlist").is_none());
        // Only the last few distinct playlists are kept.
        for sequence in 0..ParsedPlaylists::KEPT + 1 {
            let other =
                format!("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:{sequence}\n#EXTINF:2,\n{sequence}.m4s\n");
            playlists.parse(other.as_bytes()).expect("a media playlist");
        }
        let kept = playlists.recent.lock().expect("lock").len();
        assert_eq!(kept, ParsedPlaylists::KEPT);
        assert!(!Arc::ptr_eq(
            &parsed,
            &playlists.parse(first).expect("parsed anew")
        ));
    }

    #[tokio::test]
    async fn vouchers_signed_on_the_signing_thread_are_the_keys_signatures() {
        let signing = VoucherSigning::start().expect("thread");
        let key = SigningKey::from_bytes(&[9; 32]).expect("key");
        let digest = B256::repeat_byte(3);
        // Deterministic (RFC 6979): the same bytes as signing here.
        assert_eq!(signing.sign(&key, digest).await, key.sign_digest(digest));
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        // Burn a little CPU so the counter has something to show.
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i ^ (x >> 3));
        }
        assert!(x != 1);
        assert!(cpu_ticks("self").is_some_and(|t| t > 0));
        assert!(memory_mib("self", "VmRSS:").is_some_and(|m| m > 0.0));
        assert_eq!(cpu_ticks("not-a-pid"), None);
    }

    #[test]
    fn viewers_join_over_the_ramp_and_only_what_follows_is_measured() {
        let poll = Duration::from_secs(1);
        let window = Window::new(10, 30, poll);
        assert_eq!(window.join_at(0, 4), window.started);
        assert_eq!(
            window.join_at(2, 4),
            window.started + Duration::from_secs(5)
        );
        assert!(window.join_at(3, 4) < window.started + Duration::from_secs(10));
        // The last viewer joins before the ramp ends and polls within the
        // next interval: measuring starts after both.
        assert_eq!(
            window.measure_from,
            window.started + Duration::from_secs(11)
        );
        assert!(!window.measures(window.started + Duration::from_secs(10)));
        assert!(window.measures(window.measure_from));
        assert!(window.measures(window.started + Duration::from_secs(40)));
        assert!(!window.measures(window.deadline));
        let mut tally = ViewerTally::default();
        tally.segment(&window, window.started, 100);
        tally.playlist(&window, window.started);
        assert_eq!((tally.segments_us.len(), tally.segment_bytes), (0, 0));
        assert!(tally.playlists_us.is_empty());
    }

    #[test]
    fn a_static_live_edge_moves_one_segment_a_period() {
        let window = Window::new(10, 30, Duration::from_secs(1));
        let at = |ms| window.started + Duration::from_millis(ms);
        assert_eq!(window.live_edge(at(0), 2000), 0);
        assert_eq!(window.live_edge(at(1999), 2000), 0);
        assert_eq!(window.live_edge(at(2000), 2000), 1);
        assert_eq!(window.live_edge(at(9_000), 2000), 4);
        // Before the start (never asked) and a zero period do not panic.
        assert_eq!(window.live_edge(window.started, 0), 0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let latency = Latency::from_micros((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!(latency.count, 100);
        assert_eq!(latency.p50_ms, 50.0);
        assert_eq!(latency.p99_ms, 99.0);
        assert_eq!(latency.max_ms, 100.0);
        assert_eq!(Latency::from_micros(vec![]), Latency::default());
        let one = Latency::from_micros(vec![1500]);
        assert_eq!((one.p50_ms, one.p99_ms), (1.5, 1.5));
    }
}
