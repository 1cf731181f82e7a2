//! `streamweave`: the platform binary.

mod app;
mod archive;
mod chain;
mod cli;
mod cluster;
mod community;
mod config;
mod fast_map;
mod http;
mod library;
mod listen;
mod live;
mod memberships;
mod metrics;
mod model;
mod money;
mod runtime;
mod store;
mod ticketing;
mod uploads;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "streamweave",
    version,
    about = "Live and on-demand video, paid by the second"
)]
struct Cli {
    /// Log lines as `text` (default) or `json` (one object a line, with
    /// each request's id in its span).
    #[arg(
        long,
        global = true,
        env = "STREAMWEAVE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Re-derive every balance from the transfers and check the invariants;
    /// exits 1 naming every violation.
    Audit {
        /// The server's data directory (SQLite).
        #[arg(long, required_unless_present = "database")]
        data_dir: Option<PathBuf>,
        /// A node's PostgreSQL database instead (`postgres://...`).
        #[arg(long)]
        database: Option<String>,
        /// Also reconcile the on-chain channels with their escrow on this
        /// node: deposits equal, settled at most redeemed, the escrow's
        /// token balance covering what it owes.
        #[arg(long)]
        chain_rpc: Option<String>,
    },
}

/// anvil's first development key: its account holds test ether on every
/// anvil node. For development chains only.
pub const ANVIL_DEV_KEY: &str =
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

#[derive(Debug, Subcommand)]
enum ChainCommand {
    /// Deploy a test USDC (6 decimals, `mint` open to anyone) and the escrow
    /// on a development chain; prints `{"chain_id","escrow","token"}`.
    Deploy {
        /// The node's JSON-RPC URL.
        #[arg(long)]
        chain_rpc: String,
        /// The deployer's key (default: anvil's first development key).
        #[arg(long, env = "STREAMWEAVE_DEPLOY_KEY", hide_env_values = true, default_value = ANVIL_DEV_KEY)]
        private_key: String,
        /// The escrow's settle window: how long vouchers still settle after
        /// a payer asks to close.
        #[arg(long, default_value_t = 600)]
        settle_window_s: u64,
    },
    /// Mint test USDC (the test token only) to an address.
    Mint {
        #[arg(long)]
        chain_rpc: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        to: String,
        /// Base units.
        #[arg(long)]
        amount: String,
        #[arg(long, env = "STREAMWEAVE_DEPLOY_KEY", hide_env_values = true, default_value = ANVIL_DEV_KEY)]
        private_key: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Write a new secp256k1 key (hex) readable by its owner only, and print its address.
    New {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BlocksCommand {
    /// Delete blocks nothing references any more (recordings removed by
    /// retention); blocks younger than the grace period stay.
    Gc {
        /// The server's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The node's PostgreSQL database, when it keeps its state there.
        #[arg(long)]
        database: Option<String>,
        #[arg(long, default_value_t = 3600)]
        grace_s: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// Every archive and its replicas, at a glance.
    Status {
        /// The server's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The node's PostgreSQL database, when it keeps its state there.
        #[arg(long)]
        database: Option<String>,
    },
    /// Write a stream's recording as a CARv1 with one root (deterministic
    /// bytes, `--out` is the CAR file) and print its root CID, size and Piece CID.
    Export(RecordingArgs),
}

/// A stream's recording in a data directory, and where to write it.
#[derive(Debug, clap::Args)]
struct RecordingArgs {
    /// The server's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// The node's PostgreSQL database, when it keeps its state there.
    #[arg(long)]
    database: Option<String>,
    /// The stream.
    #[arg(long)]
    stream: String,
    /// Where to write.
    #[arg(long)]
    out: PathBuf,
    /// The target segment duration the server used.
    #[arg(long, default_value_t = 2000)]
    segment_duration_ms: u32,
}

#[derive(Debug, Subcommand)]
enum StreamsCommand {
    /// Create a stream owned by a wallet and print it (JSON, with its stream key).
    Create {
        /// The server (`http://127.0.0.1:8080`).
        #[arg(long)]
        server: String,
        /// The creator's wallet key file.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        title: String,
        /// Price per period in base units; free when absent.
        #[arg(long)]
        price: Option<String>,
        /// The price's period.
        #[arg(long, default_value_t = 60)]
        period_seconds: u32,
        /// Free seconds before a priced stream charges.
        #[arg(long, default_value_t = 0)]
        preview_seconds: u32,
    },
}

/// Distinct vouchers `bench recover` cycles through by default: more than
/// a cache holds of libsecp256k1's table entries, as a server's vouchers are.
const DEFAULT_RECOVER_SIGNATURES: usize = 4096;

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// libsecp256k1 recoveries per second (the bound of voucher acceptance).
    Recover {
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Distinct vouchers recovered in turn (1: the same one every time).
        #[arg(long, default_value_t = DEFAULT_RECOVER_SIGNATURES)]
        signatures: usize,
    },
    /// Paying viewers of one live stream (a `--dev` server funds them), or
    /// with `--static-base`, free viewers of plain files at the same rate.
    Viewers {
        /// The server, for paying viewers; several (comma-separated or
        /// repeated), a cluster's nodes: viewer i watches through the
        /// (i mod n)th.
        #[arg(long, value_delimiter = ',', required_unless_present = "static_base")]
        server: Vec<String>,
        /// The priced live stream they watch.
        #[arg(long, required_unless_present = "static_base")]
        stream: Option<String>,
        #[arg(long, default_value_t = 100)]
        viewers: usize,
        /// Seconds measured, once every viewer has joined.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Seconds over which viewers join one after another (not measured).
        #[arg(long, default_value_t = 10)]
        ramp_seconds: u64,
        /// Each viewer's deposit, base units.
        #[arg(long, default_value = "100000000")]
        deposit: String,
        /// Viewers setting up at once.
        #[arg(long, default_value_t = 64)]
        setup_concurrency: usize,
        /// Playlist polling period per viewer.
        #[arg(long, default_value_t = 1000)]
        poll_interval_ms: u64,
        /// A rendition directory of plain files (`index.m3u8`, `0.m4s`...).
        #[arg(long, conflicts_with_all = ["server", "stream"])]
        static_base: Option<String>,
        /// Segments in that directory.
        #[arg(long, default_value_t = 10)]
        static_segments: u64,
        /// Period of segment requests per static viewer.
        #[arg(long, default_value_t = 2000)]
        segment_duration_ms: u64,
        /// The serving processes' ids, comma-separated, to report their CPU
        /// (and, for paying viewers, memory) summed: the servers, or with
        /// --static-base the file server's (nginx's workers).
        #[arg(long, value_delimiter = ',')]
        server_pid: Vec<u32>,
    },
    /// Archive throughput on one core (DAG, CAR, Piece CID) next to raw sha256.
    Archive {
        /// Minutes of a synthetic 3-rendition recording.
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
    /// Prints the URL of a paid stream's file through a new session, paid
    /// and fetched once (a `--dev` server funds the viewer).
    PaidUrl {
        #[arg(long)]
        server: String,
        #[arg(long)]
        stream: String,
        /// The file, e.g. `360p/1.m4s`.
        #[arg(long)]
        file: String,
    },
    /// Durable voucher acceptance over HTTP against a `--dev` server.
    Vouchers {
        #[arg(long)]
        server: String,
        #[arg(long, default_value_t = 64)]
        channels: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform.
    Serve(config::ServeArgs),
    /// Run the platform in dev mode with a live test stream.
    Demo {
        #[command(flatten)]
        args: config::ServeArgs,
        /// Escrow on chain: start anvil (from contracts/node_modules),
        /// deploy the test USDC and the escrow, and settle there.
        #[arg(long, conflicts_with = "chain_rpc")]
        chain: bool,
    },
    /// The escrow on an EVM chain.
    #[command(subcommand)]
    Chain(ChainCommand),
    /// Print the CID `ipfs add --cid-version=1` gives a file, or `ipfs add
    /// -r --cid-version=1` a folder (large folders as HAMT shards, as Kubo).
    Cid {
        /// The file or folder.
        file: PathBuf,
    },
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Write a stream's recording as plain HLS files (master playlist, and per
    /// rendition its init file, segments and a VOD playlist) in `--out`.
    Export(RecordingArgs),
    /// Ledger tools.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Load generators and reference rates for the benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Wallet keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Streams, as their creator.
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// Upload a video file (resumable: run again to resume), make a video of
    /// it and follow its processing; prints the video (JSON).
    Upload {
        /// The file.
        file: PathBuf,
        /// The server (`http://127.0.0.1:8080`).
        #[arg(long)]
        server: String,
        /// The creator's wallet key file.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        title: String,
        /// Price per period in base units; free when absent.
        #[arg(long)]
        price: Option<String>,
        /// The price's period.
        #[arg(long, default_value_t = 60)]
        period_seconds: u32,
        /// MiB sent per request.
        #[arg(long, default_value_t = 8)]
        chunk_mib: usize,
        /// Print the video as soon as it is created, without following its processing.
        #[arg(long)]
        no_wait: bool,
    },
    /// Recordings as IPFS folders and CAR files.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// The blockstore.
    #[command(subcommand)]
    Blocks(BlocksCommand),
    /// Check a CAR: every block against its CID, the DAG complete from its
    /// root, and its Piece CID. Exits 1 naming each problem by path and CID.
    Verify {
        /// The CAR file.
        #[arg(required_unless_present = "cid")]
        car: Option<PathBuf>,
        /// Fetch the CAR of this root through a gateway instead (`--server`).
        #[arg(long, requires = "server", conflicts_with = "car")]
        cid: Option<String>,
        /// The gateway (`http://127.0.0.1:8080`).
        #[arg(long)]
        server: Option<String>,
        /// A bearer token for the gateway (a paid stream's owner or an admin).
        #[arg(long, env = "STREAMWEAVE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Watch a paid stream like a player: pay by the second, verify every
    /// segment's CID, print a JSON summary.
    Watch {
        /// The server (`http://127.0.0.1:8080`).
        #[arg(long)]
        server: String,
        /// The wallet key file (`streamweave keys new`).
        #[arg(long)]
        key: PathBuf,
        /// Stream id.
        #[arg(long)]
        stream: String,
        /// Media seconds to watch.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Most to spend in this session (base units).
        #[arg(long)]
        max_spend: Option<String>,
        /// Channel deposit (base units).
        #[arg(long, default_value = "1000000")]
        deposit: String,
        /// Dev servers: take this much from the faucet first.
        #[arg(long)]
        faucet: Option<String>,
        /// A server whose channels open on chain: the node to open them on
        /// (the key pays the deposit in the server's token).
        #[arg(long)]
        chain_rpc: Option<String>,
    },
    /// Print, one per line, the ffmpeg arguments of the ladder for a source
    /// (FLV on stdin); the transcode benchmark runs exactly these.
    LadderArgs {
        /// Source height in pixels (a live source: FLV on stdin).
        #[arg(long, required_unless_present = "file")]
        source_height: Option<u32>,
        /// An uploaded file instead: the arguments a video's transcode runs
        /// for it (probed with ffprobe).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Output directory.
        #[arg(long)]
        out_dir: PathBuf,
        /// Segment duration in milliseconds.
        #[arg(long, default_value_t = 2000)]
        segment_duration_ms: u32,
        /// x264 preset.
        #[arg(long, default_value = "veryfast")]
        x264_preset: String,
    },
}

/// mimalloc keeps freed memory in per-thread pages for reuse, where the
/// system allocator spent a large share of a busy process's CPU in `malloc`,
/// `free` and clearing fresh pages (docs/benchmarks.md, "Paying viewers").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,sqlx=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The CID and cumulative size of a file or folder, as `ipfs add -r
/// --cid-version=1` (hidden files included, symlinks refused).
fn path_cid(path: &std::path::Path) -> anyhow::Result<(streamweave_cas::Cid, u64)> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
    if meta.file_type().is_symlink() {
        anyhow::bail!(
            "{} is a symbolic link, which is not supported",
            path.display()
        );
    }
    if meta.is_file() {
        let bytes = std::fs::read(path)
            .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
        let dag = streamweave_cas::build_file_dag(&bytes);
        let tsize = dag.blocks.iter().map(|b| b.data.len() as u64).sum();
        return Ok((dag.root, tsize));
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path)
        .map_err(|err| anyhow::anyhow!("cannot list {}: {err}", path.display()))?
    {
        let entry = entry?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| anyhow::anyhow!("a name in {} is not UTF-8", path.display()))?;
        let (cid, tsize) = path_cid(&entry.path())?;
        entries.push(streamweave_cas::DirEntry { name, cid, tsize });
    }
    let directory = streamweave_cas::build_directory(entries)
        .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    Ok((directory.block.cid, directory.tsize))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Cid { file } => {
            let (cid, _) = path_cid(&file)?;
            println!("{cid}");
            Ok(())
        }
        Command::Openapi => {
            println!("{}", http::openapi_document().to_pretty_json()?);
            Ok(())
        }
        Command::LadderArgs {
            source_height,
            file,
            out_dir,
            segment_duration_ms,
            x264_preset,
        } => {
            let settings = streamweave_media::TranscodeSettings {
                segment_duration_ms,
                x264_preset,
                ..streamweave_media::TranscodeSettings::default()
            };
            let args = match (file, source_height) {
                (Some(file), _) => {
                    let source =
                        runtime::build()?.block_on(streamweave_media::probe::probe_file(
                            std::path::Path::new("ffprobe"),
                            &file,
                            u64::MAX,
                        ))?;
                    let ladder = streamweave_media::ladder::ladder_for_file(&source);
                    streamweave_media::ladder::file_ffmpeg_args(
                        &file, &source, &ladder, &settings, &out_dir,
                    )
                }
                (None, Some(height)) => {
                    let ladder = streamweave_media::ladder_for_source(height);
                    streamweave_media::ladder::ffmpeg_args(
                        streamweave_media::ladder::LiveInput::Flv,
                        &ladder,
                        &settings,
                        &out_dir,
                    )
                }
                (None, None) => anyhow::bail!("give --source-height or --file"),
            };
            for arg in args {
                println!("{arg}");
            }
            Ok(())
        }
        Command::Export(RecordingArgs {
            data_dir,
            database,
            stream,
            out,
            segment_duration_ms,
        }) => runtime::build()?.block_on(async move {
            let store = store::Store::open_existing(&data_dir, database.as_deref()).await?;
            let summary = archive::export::export_stream(
                &store,
                &data_dir,
                &stream,
                &out,
                segment_duration_ms,
            )
            .await?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }),
        Command::Ledger(LedgerCommand::Audit {
            data_dir,
            database,
            chain_rpc,
        }) => runtime::build()?.block_on(audit(data_dir, database, chain_rpc)),
        Command::Bench(BenchCommand::Recover {
            threads,
            seconds,
            signatures,
        }) => {
            let rate = cli::bench::recover_rate(threads.max(1), seconds.max(1), signatures);
            println!(
                "{}",
                serde_json::json!({ "threads": threads, "signatures": signatures.max(1), "recoveries_per_second": rate })
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Viewers {
            server,
            stream,
            viewers,
            seconds,
            ramp_seconds,
            deposit,
            setup_concurrency,
            poll_interval_ms,
            static_base,
            static_segments,
            segment_duration_ms,
            server_pid,
        }) => runtime::build()?.block_on(async move {
            use streamweave_client::load;
            let report = match (static_base, server, stream) {
                (Some(base), _, _) => load::run_static(load::StaticLoad {
                    base,
                    segments: static_segments,
                    segment_duration_ms,
                    viewers,
                    seconds,
                    ramp_seconds,
                    poll_interval_ms,
                    server_pids: server_pid,
                })
                .await
                .map_err(|err| anyhow::anyhow!("{err}"))?,
                (None, servers, Some(stream_id)) if !servers.is_empty() => {
                    load::run_paid(load::PaidLoad {
                        servers,
                        stream_id,
                        viewers,
                        seconds,
                        ramp_seconds,
                        deposit: deposit
                            .parse()
                            .map_err(|err| anyhow::anyhow!("--deposit: {err}"))?,
                        setup_concurrency,
                        poll_interval_ms,
                        server_pids: server_pid,
                    })
                    .await
                    .map_err(|err| anyhow::anyhow!("{err}"))?
                }
                _ => anyhow::bail!("give --server and --stream, or --static-base"),
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }),
        Command::Bench(BenchCommand::Archive { minutes }) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&cli::bench::archive_throughput(minutes.max(1)))?
            );
            Ok(())
        }
        Command::Bench(BenchCommand::PaidUrl {
            server,
            stream,
            file,
        }) => runtime::build()?.block_on(async move {
            println!(
                "{}",
                cli::bench::paid_file_url(&server, &stream, &file).await?
            );
            Ok(())
        }),
        Command::Bench(BenchCommand::Vouchers {
            server,
            channels,
            seconds,
        }) => runtime::build()?.block_on(cli::bench::vouchers(
            &server,
            channels.max(1),
            seconds.max(1),
        )),
        Command::Keys(KeysCommand::New { out }) => {
            let key = cli::keys::new_key();
            cli::keys::write_key(&out, &key)?;
            println!("{:#x}", key.address());
            Ok(())
        }
        Command::Watch {
            server,
            key,
            stream,
            seconds,
            max_spend,
            deposit,
            faucet,
            chain_rpc,
        } => {
            let key = cli::keys::read_key(&key)?;
            let parse = |text: &str, what: &str| {
                text.parse::<streamweave_ledger::Amount>()
                    .map_err(|err| anyhow::anyhow!("{what}: {err}"))
            };
            let deposit = parse(&deposit, "--deposit")?;
            let max_spend = max_spend
                .as_deref()
                .map(|m| parse(m, "--max-spend"))
                .transpose()?;
            let faucet = faucet
                .as_deref()
                .map(|f| parse(f, "--faucet"))
                .transpose()?;
            runtime::build()?.block_on(async move {
                let mut client = streamweave_client::Client::new(&server, key);
                client.sign_in().await?;
                if let Some(rpc_url) = chain_rpc {
                    client = client.with_chain(&rpc_url).await?;
                }
                if let Some(amount) = faucet {
                    client.faucet(amount).await?;
                }
                let summary = client.watch(&stream, seconds, deposit, max_spend).await?;
                println!("{}", serde_json::to_string_pretty(&summary)?);
                Ok(())
            })
        }
        Command::Blocks(BlocksCommand::Gc {
            data_dir,
            database,
            grace_s,
        }) => runtime::build()?.block_on(async move {
            let db = store::Store::open_existing(&data_dir, database.as_deref()).await?;
            let blockstore = streamweave_cas::Blockstore::open(data_dir.join("blocks"))?;
            let referenced = db.referenced_cids().await?;
            let report = archive::gc::collect(
                &blockstore,
                &referenced,
                std::time::Duration::from_secs(grace_s),
            )?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }),
        Command::Archive(ArchiveCommand::Status { data_dir, database }) => runtime::build()?
            .block_on(async move {
                let db = store::Store::open_existing(&data_dir, database.as_deref()).await?;
                let replicas = db.replicas(None).await?;
                if replicas.is_empty() {
                    println!("no archive replicas yet (archives are made when streams end)");
                }
                println!(
                    "{:<14} {:<62} {:<9} {:>8}  target",
                    "stream", "root", "state", "attempts"
                );
                for replica in replicas {
                    println!(
                        "{:<14} {:<62} {:<9} {:>8}  {}{}",
                        replica.stream_id,
                        replica.root_cid,
                        replica.state,
                        replica.attempts,
                        replica.target,
                        replica
                            .last_error
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    );
                }
                Ok(())
            }),
        Command::Archive(ArchiveCommand::Export(RecordingArgs {
            data_dir,
            database,
            stream,
            out,
            segment_duration_ms,
        })) => runtime::build()?.block_on(async move {
            let db = store::Store::open_existing(&data_dir, database.as_deref()).await?;
            if db.stream(&stream).await?.is_none() {
                anyhow::bail!("no stream {stream}");
            }
            let blockstore = streamweave_cas::Blockstore::open(data_dir.join("blocks"))?;
            let built = archive::build_root(&db, &blockstore, &stream, segment_duration_ms).await?;
            let segments = db.segments(&stream).await?.len();
            // Written beside the target, then renamed: never a partial CAR.
            let partial = out.with_extension("car.partial");
            let written = (|| {
                let file = std::io::BufWriter::new(
                    std::fs::File::create(&partial)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", partial.display()))?,
                );
                let summary = archive::car_of(&blockstore, &built.root, Some(file))?;
                std::fs::rename(&partial, &out)?;
                anyhow::Ok(summary)
            })();
            if written.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            let summary = written?;
            db.insert_archive(&stream, segments, &summary, &built.added, model::now_ms())
                .await?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }),
        Command::Verify {
            car,
            cid,
            server,
            token,
        } => {
            let (bytes, source) = match (car, cid.as_deref(), server) {
                (Some(car), _, _) => (
                    std::fs::read(&car).map_err(|e| anyhow::anyhow!("{}: {e}", car.display()))?,
                    car.display().to_string(),
                ),
                (None, Some(cid), Some(server)) => {
                    let url = format!("{}/ipfs/{cid}", server.trim_end_matches('/'));
                    let bytes = runtime::build()?.block_on(async {
                        let mut request = reqwest::Client::new()
                            .get(&url)
                            .header("accept", "application/vnd.ipld.car");
                        if let Some(token) = &token {
                            request = request.bearer_auth(token);
                        }
                        let response = request.send().await?;
                        let status = response.status();
                        let body = response.bytes().await?;
                        if !status.is_success() {
                            anyhow::bail!(
                                "{url}: {status}: {}",
                                String::from_utf8_lossy(&body)
                                    .chars()
                                    .take(300)
                                    .collect::<String>()
                            );
                        }
                        Ok(body.to_vec())
                    })?;
                    (bytes, url)
                }
                _ => anyhow::bail!("give a CAR file, or --cid with --server"),
            };
            let report = streamweave_cas::verify_car(&bytes)
                .map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
            let piece = streamweave_cas::PieceCommitment::of(&bytes);
            println!(
                "{}",
                serde_json::json!({
                    "root_cid": report.root.map(|r| r.to_string()),
                    "blocks": report.blocks,
                    "car_size": bytes.len(),
                    "piece_cid": piece.cid().to_string(),
                    "piece_size": piece.padded_size,
                    "problems": report.problems,
                })
            );
            let mut problems = report.problems.clone();
            if let Some(expected) = &cid
                && report.root.map(|r| r.to_string()).as_deref() != Some(expected.as_str())
            {
                problems.push(format!("the CAR's root is not {expected}"));
            }
            if problems.is_empty() {
                Ok(())
            } else {
                for problem in &problems {
                    eprintln!("corrupt: {problem}");
                }
                std::process::exit(1)
            }
        }
        Command::Streams(StreamsCommand::Create {
            server,
            key,
            title,
            price,
            period_seconds,
            preview_seconds,
        }) => {
            let key = cli::keys::read_key(&key)?;
            let price = price_flags(price.as_deref(), period_seconds)?;
            runtime::build()?.block_on(async move {
                let mut client = streamweave_client::Client::new(&server, key);
                client.sign_in().await?;
                let stream = client.create_stream(&title, price, preview_seconds).await?;
                println!("{}", serde_json::to_string_pretty(&stream)?);
                Ok(())
            })
        }
        Command::Upload {
            file,
            server,
            key,
            title,
            price,
            period_seconds,
            chunk_mib,
            no_wait,
        } => {
            let key = cli::keys::read_key(&key)?;
            let price = price_flags(price.as_deref(), period_seconds)?;
            runtime::build()?.block_on(async move {
                let mut client = streamweave_client::Client::new(&server, key);
                client.sign_in().await?;
                let chunk_bytes = chunk_mib.clamp(1, 1024) * 1024 * 1024;
                let upload = cli::upload::upload_file(&client, &server, &file, chunk_bytes).await?;
                let video = client.create_video(&upload, &title, price).await?;
                cli::upload::forget_resume(&file);
                let video = match video["id"].as_str() {
                    Some(id) if !no_wait => cli::upload::follow_processing(&client, id).await?,
                    _ => video,
                };
                println!("{}", serde_json::to_string_pretty(&video)?);
                if video["status"] == "failed" {
                    anyhow::bail!(
                        "the video failed: {}",
                        video["failure_reason"]
                            .as_str()
                            .unwrap_or("no reason given")
                    );
                }
                Ok(())
            })
        }
        Command::Serve(args) => runtime::build()?.block_on(async {
            let settings = config::Settings::resolve(args)?;
            app::start(settings).await?.wait().await
        }),
        Command::Demo { args, chain } => runtime::build()?.block_on(cli::demo::run(args, chain)),
        Command::Chain(ChainCommand::Deploy {
            chain_rpc,
            private_key,
            settle_window_s,
        }) => runtime::build()?.block_on(async move {
            let deployment =
                streamweave_chain::deploy(&chain_rpc, &private_key, settle_window_s).await?;
            println!("{}", serde_json::to_string(&deployment)?);
            Ok(())
        }),
        Command::Chain(ChainCommand::Mint {
            chain_rpc,
            token,
            to,
            amount,
            private_key,
        }) => runtime::build()?.block_on(async move {
            let token: streamweave_ledger::Address = token
                .parse()
                .map_err(|_| anyhow::anyhow!("--token must be an address"))?;
            let to: streamweave_ledger::Address = to
                .parse()
                .map_err(|_| anyhow::anyhow!("--to must be an address"))?;
            let amount: streamweave_ledger::Amount = amount
                .parse()
                .map_err(|err| anyhow::anyhow!("--amount: {err}"))?;
            let chain =
                streamweave_chain::Escrow::connect(&chain_rpc, token, Some(&private_key)).await?;
            chain
                .transact(
                    streamweave_chain::TxCall::mint(token, to, amount.0),
                    std::time::Duration::from_secs(120),
                )
                .await?;
            Ok(())
        }),
    }
}

/// `--price AMOUNT --period-seconds S` as a price; none without `--price`.
fn price_flags(
    amount: Option<&str>,
    period_seconds: u32,
) -> anyhow::Result<Option<streamweave_ledger::Price>> {
    amount
        .map(|amount| {
            Ok(streamweave_ledger::Price {
                amount: amount
                    .parse()
                    .map_err(|err| anyhow::anyhow!("--price: {err}"))?,
                period_seconds,
            })
        })
        .transpose()
}

/// The audit's reads and checks: the report, the channels and how many
/// journaled vouchers wait to be folded.
async fn audit_once(
    ledger: &store::Store,
) -> anyhow::Result<(
    streamweave_ledger::AuditReport,
    Vec<streamweave_ledger::Channel>,
    usize,
)> {
    let transfers = ledger.all_transfers().await?;
    // Channels whose voucher steps wait in their rows (several nodes) are
    // checked as far as their transfers reach; the steps count as waiting.
    let (channels, deferred) = ledger.channels_as_folded().await?;
    let mut report = streamweave_ledger::audit(&transfers, &channels);
    // The cached balances must equal the re-derived ones.
    let (derived, _) = streamweave_ledger::Balances::from_transfers(&transfers);
    let derived: std::collections::HashMap<String, streamweave_ledger::Balance> =
        derived.iter().map(|(a, b)| (a.key(), *b)).collect();
    for (key, stored) in ledger.stored_balances().await? {
        let expected = derived.get(&key).copied().unwrap_or_default();
        if stored != expected {
            report.violations.push(format!(
                "{key}: stored balance {stored}, transfers give {expected}"
            ));
        }
    }
    // Events: each account holds sold - refunded - released; each
    // collectible has exactly one owner.
    report.violations.extend(ledger.audit_events().await?);
    // The pool holds the last round's carry plus what open rounds took in.
    report.violations.extend(ledger.audit_pool().await?);
    // Vouchers answered and kept in the journal: each within its channel's
    // deposit; those above the channel's stored amount wait to be folded
    // (the others were folded, their rows left above a fold's mark).
    let journal = ledger.voucher_journal().await?;
    let by_id: std::collections::HashMap<_, _> = channels.iter().map(|c| (c.id, c)).collect();
    let mut waiting = deferred;
    for entry in &journal {
        match by_id.get(&entry.channel) {
            None => report.violations.push(format!(
                "journaled voucher for {:#x}: no such channel",
                entry.channel
            )),
            Some(channel) if entry.amount > channel.deposit => report.violations.push(format!(
                "journaled voucher for {:#x}: {} exceeds the deposit {}",
                entry.channel, entry.amount, channel.deposit
            )),
            Some(channel) => waiting += usize::from(entry.amount > channel.redeemed),
        }
    }
    Ok((report, channels, waiting))
}

async fn audit(
    data_dir: Option<PathBuf>,
    database: Option<String>,
    chain_rpc: Option<String>,
) -> anyhow::Result<()> {
    let ledger = match (database, data_dir) {
        (Some(url), _) => store::Store::postgres(&url).await?,
        (None, Some(data_dir)) => {
            if !data_dir.join(store::SQLITE_FILE).exists() {
                anyhow::bail!("no database in {}", data_dir.display());
            }
            store::Store::sqlite(&data_dir).await?
        }
        (None, None) => anyhow::bail!("give --data-dir or --database"),
    };
    // Running nodes may commit between the reads (a fold of waiting voucher
    // steps, say): every read sees the database as of one moment.
    let (mut report, channels, journal) = audit_once(&ledger.snapshot().await?).await?;
    if let Some(rpc_url) = chain_rpc {
        report
            .violations
            .extend(chain::audit::reconcile(&rpc_url, &channels).await?);
    }
    if report.is_clean() {
        println!(
            "ledger ok: {} transfers, {} channels, {} accounts; debits = credits; events balanced; {} voucher steps journaled or waiting in their channels, not folded yet",
            report.transfers, report.channels, report.accounts, journal
        );
        Ok(())
    } else {
        for violation in &report.violations {
            println!("violation: {violation}");
        }
        eprintln!("error: {} ledger violations", report.violations.len());
        std::process::exit(1);
    }
}
