//! Helpers of the integration tests: a real `streamweave serve` process on
//! free ports with its own data dir, and ffmpeg publishers.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use streamweave_ledger::SigningKey;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running server process, killed on drop.
pub struct Server {
    pub child: Child,
    pub http: String,
    pub rtmp: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Server {
    /// Starts a server on a fresh data dir.
    pub async fn start(extra_args: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("tempdir");
        let data_dir = temp.path().to_path_buf();
        let mut server = Server::start_in(&data_dir, extra_args).await;
        server._temp = Some(temp);
        server
    }

    /// Starts a server on a fresh data dir with extra environment variables.
    pub async fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let temp = tempfile::tempdir().expect("tempdir");
        let data_dir = temp.path().to_path_buf();
        let mut server = Server::start_in_env(&data_dir, extra_args, env).await;
        server._temp = Some(temp);
        server
    }

    /// Starts a server on a fresh data dir named relative to the server's
    /// working directory (`--data-dir data`), as the demo's is.
    pub async fn start_relative(extra_args: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut server = None;
        for _ in 0..3 {
            server =
                Server::try_start_from(Some(temp.path()), Path::new("data"), extra_args, &[]).await;
            if server.is_some() {
                break;
            }
        }
        let mut server = server.expect("the server exited at start three times");
        server.data_dir = temp.path().join("data");
        server._temp = Some(temp);
        server
    }

    /// Starts a server on an existing data dir (to test restarts).
    pub async fn start_in(data_dir: &Path, extra_args: &[&str]) -> Server {
        Server::start_in_env(data_dir, extra_args, &[]).await
    }

    /// A process serving HTTP at `http` that is not a node (a balancer in
    /// front of nodes), killed on drop like one.
    pub fn other(child: Child, http: String) -> Server {
        Server {
            child,
            http,
            rtmp: String::new(),
            data_dir: PathBuf::new(),
            _temp: None,
        }
    }

    /// Starts a server on an existing data dir with extra environment
    /// variables. A free port may be taken by another test between picking
    /// and binding it: a server that exits at once is started again on
    /// other ports.
    pub async fn start_in_env(
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        for _ in 0..3 {
            if let Some(server) = Server::try_start(data_dir, extra_args, env).await {
                return server;
            }
        }
        panic!("the server exited at start three times");
    }

    async fn try_start(
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Option<Server> {
        Server::try_start_from(None, data_dir, extra_args, env).await
    }

    /// [`Server::try_start`] in working directory `cwd` (else ours).
    async fn try_start_from(
        cwd: Option<&Path>,
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Option<Server> {
        let http_port = free_port();
        let rtmp_port = free_port();
        let http = format!("127.0.0.1:{http_port}");
        let rtmp = format!("127.0.0.1:{rtmp_port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_streamweave"));
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let child = command
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args([
                "--http",
                &http,
                "--rtmp",
                &rtmp,
                "--admin-token",
                ADMIN_TOKEN,
            ])
            .args(extra_args)
            // Tests make requests faster than any person: no request limits
            // unless a test sets them.
            .args(
                [
                    "--rate-limit-api",
                    "--rate-limit-writes",
                    "--rate-limit-playback",
                    "--rate-limit-wallet",
                ]
                .into_iter()
                .filter(|flag| !extra_args.contains(flag))
                .flat_map(|flag| [flag, "0"]),
            )
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,streamweave_media=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start streamweave");
        let server = Server {
            child,
            http: format!("http://{http}"),
            rtmp: format!("rtmp://{rtmp}"),
            data_dir: data_dir.to_path_buf(),
            _temp: None,
        };
        let mut server = server;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(server.url("/api/openapi.json")).send().await
                && response.status().is_success()
            {
                return Some(server);
            }
            if server.child.try_wait().expect("try_wait").is_some() {
                return None;
            }
            assert!(Instant::now() < deadline, "server did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// Creates a stream; answers (id, stream_key).
    pub async fn create_stream(&self, title: &str) -> (String, String) {
        let response = reqwest::Client::new()
            .post(self.url("/api/v1/streams"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "title": title }))
            .send()
            .await
            .expect("create stream");
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.expect("json");
        (
            body["id"].as_str().expect("id").to_string(),
            body["stream_key"].as_str().expect("key").to_string(),
        )
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = reqwest::get(self.url(path)).await.expect("GET");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    /// GETs JSON as the bearer of `token`, asserting success.
    pub async fn get_json_as(&self, path: &str, token: &str) -> serde_json::Value {
        let response = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    /// Waits until the stream reaches `state`.
    pub async fn wait_for_state(
        &self,
        id: &str,
        state: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let stream = self.get_json(&format!("/api/v1/streams/{id}")).await;
            if stream["state"] == state {
                return stream;
            }
            assert!(
                Instant::now() < deadline,
                "stream {id} did not become {state}: {stream}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Checks the process is still running.
    pub fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "the server exited"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An ffmpeg that publishes `seconds` of a WxH test pattern with a tone.
pub fn publish(url: &str, size: &str, seconds: u32, video_codec: &[&str]) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=30"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args(video_codec)
        .args(["-c:a", "aac", "-b:a", "96k", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg")
}

/// H.264 as OBS would send it.
pub const H264: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-g",
    "60",
    "-pix_fmt",
    "yuv420p",
];

/// Waits for a child with a deadline; returns its exit success.
pub fn wait_child(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not exit in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 0x-hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::from("0x"), |mut out, b| {
        out.push_str(&format!("{b:02x}"));
        out
    })
}

/// Signs in with SIWE as `key`; answers the bearer token. Also checks that
/// the same signed challenge cannot be used twice.
pub async fn sign_in(server: &Server, key: &streamweave_ledger::SigningKey) -> String {
    let client = reqwest::Client::new();
    let challenge: serde_json::Value = client
        .post(server.url("/api/v1/auth/challenge"))
        .json(&serde_json::json!({ "address": key.address().to_checksum(None) }))
        .send()
        .await
        .expect("challenge")
        .json()
        .await
        .expect("json");
    let message = challenge["message"].as_str().expect("message");
    let signature = key.sign_digest(streamweave_ledger::personal_sign_digest(message.as_bytes()));
    let body = serde_json::json!({ "message": message, "signature": hex(&signature) });
    let response = client
        .post(server.url("/api/v1/auth/login"))
        .json(&body)
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 200);
    let login: serde_json::Value = response.json().await.expect("json");
    assert_eq!(login["address"], format!("{:#x}", key.address()));
    let again = client
        .post(server.url("/api/v1/auth/login"))
        .json(&body)
        .send()
        .await
        .expect("login");
    assert_eq!(again.status(), 401, "a challenge is single use");
    login["token"].as_str().expect("token").to_string()
}

/// A media file's (or playlist's) duration in seconds, by ffprobe.
pub fn media_seconds(path: &Path) -> f64 {
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration"])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&probe.stdout)
        .trim()
        .parse()
        .expect("duration")
}

/// Runs `streamweave ledger audit` on a data dir and asserts it is clean.
pub fn assert_ledger_audits(data_dir: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_streamweave"))
        .args(["ledger", "audit", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("audit");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.starts_with("ledger ok:"), "{stdout}");
}

/// Runs the binary with `args` off the async runtime, asserts it succeeded,
/// and answers what it printed as JSON.
pub async fn run_json(args: &[&str]) -> serde_json::Value {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_streamweave"))
            .args(&args)
            .output()
            .expect("run streamweave")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

/// Where a test server keeps its state: the data dir's SQLite (the default),
/// or PostgreSQL (`--database`) in a schema of the test's own.
pub enum TestDatabase {
    Sqlite,
    Postgres {
        admin: sqlx::PgPool,
        schema: String,
        url: String,
    },
}

impl TestDatabase {
    /// PostgreSQL in a fresh schema (`STREAMWEAVE_TEST_POSTGRES`, default the
    /// local test database). `None` after saying why when it is unreachable;
    /// with `CI` set that fails instead.
    pub async fn postgres() -> Option<TestDatabase> {
        let base = std::env::var("STREAMWEAVE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let admin = match sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&base)
            .await
        {
            Ok(pool) => pool,
            Err(err) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "PostgreSQL at {base} is required in CI: {err}"
                );
                eprintln!("skipping: PostgreSQL at {base} unreachable ({err})");
                return None;
            }
        };
        // Named by creation time: schemas that failed runs left behind are
        // dropped by later runs once an hour old, never a running one's.
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'swt\\_%'",
        )
        .fetch_all(&admin)
        .await
        .unwrap_or_default();
        for old in stale {
            // Only names this helper makes: swt_node_<unix seconds>_<16 hex digits>.
            let created_s = old.strip_prefix("swt_node_").and_then(|rest| {
                let (time, random) = rest.split_once('_')?;
                let ours = time.len() == 10
                    && random.len() == 16
                    && random.bytes().all(|b| b.is_ascii_hexdigit());
                ours.then(|| time.parse::<u64>().ok()).flatten()
            });
            if created_s.is_some_and(|t| t + 3600 < now_s) {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {old} CASCADE")))
                    .execute(&admin)
                    .await;
            }
        }
        let schema = format!("swt_node_{now_s}_{:016x}", rand::random::<u64>());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("create schema");
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
        Some(TestDatabase::Postgres { admin, schema, url })
    }

    /// `args` plus what points the server at this database.
    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        if let TestDatabase::Postgres { url, .. } = self {
            all.extend(["--database", url.as_str()]);
        }
        all
    }

    /// `streamweave ledger audit` on this database is clean; on PostgreSQL,
    /// the node's data dir holds no SQLite database at all.
    pub fn assert_ledger_audits(&self, data_dir: &Path) {
        match self {
            TestDatabase::Sqlite => assert_ledger_audits(data_dir),
            TestDatabase::Postgres { url, .. } => {
                let output = Command::new(env!("CARGO_BIN_EXE_streamweave"))
                    .args(["ledger", "audit", "--database", url])
                    .output()
                    .expect("audit");
                let stdout = String::from_utf8_lossy(&output.stdout);
                assert!(output.status.success(), "{stdout}");
                assert!(stdout.starts_with("ledger ok:"), "{stdout}");
                let sqlite: Vec<_> = std::fs::read_dir(data_dir)
                    .expect("data dir")
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.contains("sqlite"))
                    .collect();
                assert!(sqlite.is_empty(), "state left in SQLite: {sqlite:?}");
            }
        }
    }

    /// Drops the test's schema.
    pub async fn drop_schema(self) {
        if let TestDatabase::Postgres { admin, schema, .. } = self {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&admin)
                .await
                .expect("drop schema");
        }
    }
}

/// Held by tests of one file that must not run at the same time (each runs
/// ffmpeg on the machine's few cores).
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

// ---- Requests as signed-in wallets (the events and memberships tests) ----

/// Any request, as `token` when given: (status, the body as JSON, or as a
/// JSON string when it is not JSON).
pub async fn send(
    method: reqwest::Method,
    server: &Server,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("text");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub async fn post(server: &Server, path: &str, token: &str, body: Value) -> (u16, Value) {
    send(reqwest::Method::POST, server, path, Some(token), Some(body)).await
}

pub async fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    send(reqwest::Method::GET, server, path, token, None).await
}

/// A signed-in wallet.
pub struct Wallet {
    pub address: String,
    pub token: String,
}

pub async fn wallet(server: &Server, seed: u8) -> Wallet {
    wallet_of(server, &SigningKey::from_bytes(&[seed; 32]).expect("key")).await
}

pub async fn wallet_of(server: &Server, key: &SigningKey) -> Wallet {
    Wallet {
        address: format!("{:#x}", key.address()),
        token: sign_in(server, key).await,
    }
}

pub async fn fund(server: &Server, wallet: &Wallet, amount: u128) {
    let (status, body) = post(
        server,
        "/api/v1/admin/deposits",
        ADMIN_TOKEN,
        json!({"address": wallet.address, "amount": amount.to_string(), "id": format!("fund-{}", wallet.address)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// (available, earned) of a wallet.
pub async fn balances(server: &Server, wallet: &Wallet) -> (u128, u128) {
    let (status, body) = get(
        server,
        &format!("/api/v1/accounts/{}/balances", wallet.address),
        Some(&wallet.token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let field = |name: &str| {
        body[name]
            .as_str()
            .expect(name)
            .parse::<u128>()
            .expect(name)
    };
    (field("available"), field("earned"))
}

pub fn problem_type(body: &Value) -> &str {
    body["type"].as_str().unwrap_or_default()
}

/// A node's `/metrics` text.
pub async fn metrics_text(server: &Server) -> String {
    reqwest::get(server.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Waits up to a minute for `check` to hold.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A local S3-compatible server (moto, installed by scripts/test and named
/// by STREAMWEAVE_S3_SERVER), killed on drop.
pub struct S3Server {
    child: std::process::Child,
    pub endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn start_s3(bucket: &str) -> S3Server {
    let program = std::env::var("STREAMWEAVE_S3_SERVER")
        .expect("STREAMWEAVE_S3_SERVER names an S3-compatible server (scripts/test installs moto)");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = std::process::Command::new(program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the S3 server");
    let server = S3Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    eventually("the S3 server", async || {
        client
            .put(format!("{}/{bucket}", server.endpoint))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    server
}

/// A WebSocket client connection.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text message on a socket, within 5 s.
pub async fn next_event(socket: &mut Socket) -> Value {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("an event within 5 s")
            .expect("socket open")
            .expect("message");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).expect("json event");
        }
    }
}
