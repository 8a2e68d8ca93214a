//! partyflow-loadgen: drives a partyflow server with WebSocket clients and reports what they saw.
//!
//! One single-threaded Tokio runtime (one core), so the other cores are left to the server.

mod relay;
mod report;

use std::time::Duration;

use clap::{Parser, Subcommand};

/// Load generator for the partyflow server.
#[derive(Debug, Parser)]
#[command(name = "partyflow-loadgen", version)]
struct Cli {
    /// The server's base URL; WebSocket URLs are derived from it.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// How long to measure, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    duration: Duration,
    /// Load applied before measuring starts (not counted).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, global = true)]
    warmup: Duration,
    /// Write the full results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// R rooms of M members on /relay; one publisher per room at a fixed rate.
    Relay(relay::RelayArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let Scenario::Relay(args) = cli.scenario;
    let ws_base = cli.url.replacen("http", "ws", 1);
    let report = runtime.block_on(relay::run(ws_base.trim_end_matches('/').to_string(), args, cli.warmup, cli.duration))?;
    print!("{}", report.table());
    if let Some(path) = cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
    }
    if report.failed() {
        std::process::exit(1);
    }
    Ok(())
}
