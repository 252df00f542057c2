//! The `tidal` command: a thin shell over the workspace crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

/// mimalloc instead of the system allocator: the embedded cluster (`tidal sim`, `demo`,
/// `bench`) allocates and frees small buffers per row change across threads, where glibc's
/// malloc spent about half the simulator's CPU (docs/BENCHMARKS.md, simulator feed).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Change data capture for TiDB/TiKV on timely dataflow.
#[derive(Debug, Parser)]
#[command(name = "tidal", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the embedded TiKV+PD cluster with a workload, a changefeed and live progress.
    Demo(Box<commands::demo::DemoArgs>),
    /// Run a long-lived Tidal node: control plane, HTTP API and dataflow workers.
    Server(Box<commands::server::ServerArgs>),
    /// Run the embedded TiKV+PD cluster standalone, with workloads and fault injection.
    Sim(Box<commands::sim::SimArgs>),
    /// Talk to a Tidal server's HTTP API (changefeeds, TSO), like `cdc cli`.
    Cli(Box<commands::cli::CliArgs>),
    /// Run a reproducible end-to-end benchmark and print its figures.
    Bench(Box<commands::bench::BenchArgs>),
    /// Compare an upstream snapshot with a downstream, table by table.
    Verify(Box<commands::verify::VerifyArgs>),
}

impl Command {
    /// The log level used when `RUST_LOG` is not set: the demo draws a live view on the
    /// terminal, so it only shows warnings; the others log progress.
    fn default_log_level(&self) -> &'static str {
        match self {
            Command::Demo(_) | Command::Cli(_) => "warn",
            _ => "info",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server sets up logging itself, once its configuration (and `log-level`) is known.
    if !matches!(cli.command, Command::Server(_)) {
        commands::logging::init(cli.command.default_log_level());
    }
    match cli.command {
        Command::Demo(args) => commands::demo::run(*args),
        Command::Server(args) => commands::server::run(*args),
        Command::Sim(args) => commands::sim::run(*args),
        Command::Cli(args) => commands::cli::run(*args),
        Command::Bench(args) => commands::bench::run(*args),
        Command::Verify(args) => commands::verify::run(*args),
    }
}
