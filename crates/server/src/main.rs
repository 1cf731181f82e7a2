//! `streamweave`: the platform binary.

mod app;
mod config;
mod db;
mod demo;
mod http;
mod live;
mod media_index;
mod model;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform.
    Serve(config::ServeArgs),
    /// Run the platform in dev mode with a live test stream.
    Demo(config::ServeArgs),
    /// Print the CID `ipfs add --cid-version=1` gives a file.
    Cid {
        /// The file.
        file: PathBuf,
    },
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Print, one per line, the ffmpeg arguments of the ladder for a source
    /// (FLV on stdin); the transcode benchmark runs exactly these.
    LadderArgs {
        /// Source height in pixels.
        #[arg(long)]
        source_height: u32,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Cid { file } => {
            let bytes = std::fs::read(&file)
                .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", file.display()))?;
            println!("{}", streamweave_cas::file_cid(&bytes));
            Ok(())
        }
        Command::Openapi => {
            println!("{}", http::openapi_document().to_pretty_json()?);
            Ok(())
        }
        Command::LadderArgs {
            source_height,
            out_dir,
            segment_duration_ms,
            x264_preset,
        } => {
            let ladder = streamweave_media::ladder_for_source(source_height);
            let settings = streamweave_media::TranscodeSettings {
                segment_duration_ms,
                x264_preset,
            };
            for arg in streamweave_media::ladder::ffmpeg_args(&ladder, &settings, &out_dir) {
                println!("{arg}");
            }
            Ok(())
        }
        Command::Serve(args) => runtime()?.block_on(async {
            let settings = config::Settings::resolve(args)?;
            app::start(settings).await?.wait().await
        }),
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
