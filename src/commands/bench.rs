//! `tidal bench`: the command-line front of [`tidal::bench`]: parse the shape of the run, run it
//! on a fresh multi-threaded runtime, print a table (or JSON for machines).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tidal::bench::scale::{ScaleOptions, run_scale};
use tidal::bench::{BenchMode, BenchOptions, run_bench};

const AFTER_HELP: &str = "\
Modes:
  catch-up   write --rows rows first, then start the changefeed from before them and time the
             drain (elapsed = changefeed start to checkpoint past the last commit).
  live       start the changefeed, then write --rows rows at --rate rows/s (unlimited if
             absent); commit -> checkpoint latency is meaningful here.
  --sim-only no changefeed: the sim applies rows and its CDC feeds a plain region-feed
             subscriber; measures the sim itself.
  --scale-tables N
             create N small tables, start ONE changefeed over all of them (blackhole sink),
             wait until every span is initialized, idle --idle-secs, and report RSS per idle
             span, idle checkpoint lag and CPU, then --scale-writes single-row transactions'
             commit -> checkpoint latency. --split-regions gives every table its own region.

Baselines of the same rows: the one-core decode floor, and for mysql:// sinks a bulk load
(LOAD DATA LOCAL INFILE via the mariadb/mysql client if allowed, else multi-row INSERT).
A mysql:// sink's database `tidal_bench` (and `tidal_bench_baseline`) is dropped first.

Examples:
  tidal bench --rows 500000 --workers 2
  tidal bench --mode live --rows 100000 --rate 20000
  tidal bench --sink 'file:///tmp/out?protocol=canal-json'
  tidal bench --sim-only --rows 500000
  tidal bench --scale-tables 100000 --split-regions";

/// Run a reproducible end-to-end benchmark and print its figures.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Rows to write.
    #[arg(long, default_value_t = 200_000)]
    pub rows: u64,
    /// Number of tables.
    #[arg(long, default_value_t = 4)]
    pub tables: usize,
    /// Approximate bytes per row.
    #[arg(long, default_value_t = 128)]
    pub row_width: usize,
    /// Rows per transaction.
    #[arg(long, default_value_t = 100)]
    pub txn_size: usize,
    /// Changefeed worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Sink URI.
    #[arg(long, default_value = "blackhole://")]
    pub sink: String,
    /// catch-up or live.
    #[arg(long, value_enum, default_value = "catch-up")]
    pub mode: ModeArg,
    /// Rows per second the workload writes in live mode (unlimited if absent).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Measure the sim alone (CDC to a plain region-feed subscriber, no changefeed).
    #[arg(long)]
    pub sim_only: bool,
    /// The sim's resolved-ts interval in milliseconds (TiKV's cdc.min-ts-interval).
    #[arg(long, default_value_t = 200)]
    pub min_ts_interval_ms: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Skip the baselines.
    #[arg(long)]
    pub no_baselines: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Scale run: create this many tables and replicate them all in one changefeed.
    #[arg(long, conflicts_with = "sim_only")]
    pub scale_tables: Option<usize>,
    /// Scale run: split one region per table.
    #[arg(long, requires = "scale_tables")]
    pub split_regions: bool,
    /// Scale run: tables per `create tables` job.
    #[arg(long, default_value_t = 1_000, requires = "scale_tables")]
    pub scale_batch: usize,
    /// Scale run: seconds the changefeed idles before the memory reading.
    #[arg(long, default_value_t = 10, requires = "scale_tables")]
    pub idle_secs: u64,
    /// Scale run: single-row transactions written after the idle window (latency samples).
    #[arg(long, default_value_t = 50, requires = "scale_tables")]
    pub scale_writes: usize,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Write first, then drain.
    CatchUp,
    /// Replicate while writing.
    Live,
}

impl BenchArgs {
    /// The library options these arguments describe.
    pub fn options(&self) -> BenchOptions {
        BenchOptions {
            rows: self.rows,
            tables: self.tables,
            row_width: self.row_width,
            txn_size: self.txn_size,
            workers: self.workers,
            sink: self.sink.clone(),
            mode: if self.sim_only {
                BenchMode::SimOnly
            } else {
                match self.mode {
                    ModeArg::CatchUp => BenchMode::CatchUp,
                    ModeArg::Live => BenchMode::Live,
                }
            },
            rate: self.rate,
            min_ts_interval: Duration::from_millis(self.min_ts_interval_ms.max(1)),
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            baselines: !self.no_baselines,
        }
    }
}

impl BenchArgs {
    /// The scale run these arguments describe, `None` without `--scale-tables`. Values are
    /// checked by [`ScaleOptions::validate`] when the run starts.
    pub fn scale_options(&self) -> Option<ScaleOptions> {
        let tables = self.scale_tables?;
        Some(ScaleOptions {
            tables,
            batch: self.scale_batch,
            split_regions: self.split_regions,
            workers: self.workers,
            idle: Duration::from_secs(self.idle_secs),
            writes: self.scale_writes,
            min_ts_interval: Duration::from_millis(self.min_ts_interval_ms.max(1)),
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            progress: !self.json,
        })
    }
}

fn print_json<T: serde::Serialize>(r: &T) -> ExitCode {
    match serde_json::to_string_pretty(r) {
        Ok(j) => {
            println!("{j}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tidal bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `tidal bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tidal bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(opts) = args.scale_options() {
        if let Err(e) = opts.validate() {
            eprintln!("tidal bench: {e}");
            return ExitCode::FAILURE;
        }
        return match runtime.block_on(run_scale(opts)) {
            Ok(r) if args.json => print_json(&r),
            Ok(r) => {
                print!("{}", r.to_table());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tidal bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let report = runtime.block_on(run_bench(args.options()));
    match report {
        Ok(r) => {
            if args.json {
                match serde_json::to_string_pretty(&r) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("tidal bench: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", r.to_table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tidal bench: {e}");
            ExitCode::FAILURE
        }
    }
}
