//! `tidal demo`: the command-line face of [`tidal::demo`] — flags in, summary and exit code out.
//!
//! The exit code is the verdict: 0 only if the downstream was verified equal to the upstream,
//! 1 if it was not (or the demo could not run), 2 for unusable flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tidal::demo::{DemoError, DemoOptions, ViewMode, run_demo};

use super::sim::parse_duration;

/// Run the embedded cluster with a workload, a changefeed and a live view, then verify.
#[derive(Debug, Args)]
#[command(
    long_about = "Starts the embedded TiKV + PD cluster with a sysbench workload (and a DDL mix), \
                  a Tidal node with its embedded metadata store and HTTP API, and a changefeed to \
                  a local storage directory (or --sink mysql://...). Shows replication live; on \
                  Ctrl-C or after --duration it stops the workload, waits for the checkpoint to \
                  pass the last upstream commit, verifies the downstream against the upstream at \
                  the checkpoint and prints a summary. Exits 0 only if every table is equal.",
    after_help = "Examples:\n  tidal demo\n  tidal demo --duration 30s\n  \
                  tidal demo --sink mysql://root@127.0.0.1:3306/ --rate 1000"
)]
pub struct DemoArgs {
    /// Stop after this long (default: run until Ctrl-C). Units: ms, s, m, h.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Sink URI (default: canal-json files under the data directory).
    #[arg(long, value_name = "URI")]
    pub sink: Option<String>,
    /// Dataflow worker threads of the changefeed.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Sysbench tables.
    #[arg(long, default_value_t = 4)]
    pub tables: usize,
    /// Rows loaded per sysbench table at the start.
    #[arg(long, default_value_t = 1000)]
    pub rows: u64,
    /// Sysbench transactions per second (0 = as fast as possible).
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Seed of the workloads.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory for the metadata store and the default sink (default: a temporary directory,
    /// deleted at exit).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API (default: 127.0.0.1:8300, or a free port if taken).
    #[arg(long, value_name = "HOST:PORT")]
    pub api_addr: Option<SocketAddr>,
    /// Run sysbench only, without the DDL mix.
    #[arg(long)]
    pub no_ddl: bool,
    /// Longest wait for the checkpoint to pass the last upstream commit.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub catch_up_timeout: Duration,
    /// Print plain progress lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
}

impl DemoArgs {
    /// The library options these flags ask for.
    pub fn options(&self) -> DemoOptions {
        DemoOptions {
            duration: self.duration,
            sink: self.sink.clone(),
            workers: self.workers,
            tables: self.tables,
            rows_per_table: self.rows,
            rate: (self.rate > 0).then_some(self.rate),
            seed: self.seed,
            data_dir: self.data_dir.clone(),
            api_addr: self.api_addr,
            ddl: !self.no_ddl,
            catch_up_timeout: self.catch_up_timeout,
            view: if self.plain {
                ViewMode::Plain
            } else {
                ViewMode::Auto
            },
        }
    }
}

/// Runs `tidal demo` to completion; exit 0 only if the downstream verified equal.
pub fn run(args: DemoArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidal demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_demo(args.options())) {
        Ok(summary) => {
            print!("{}", summary.render());
            if summary.verified() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(DemoError::Options(e)) => {
            eprintln!("tidal demo: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("tidal demo: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    #[test]
    fn flags_map_to_options() {
        let cli = Cli::try_parse_from([
            "demo",
            "--duration",
            "8s",
            "--tables",
            "2",
            "--rate",
            "0",
            "--no-ddl",
            "--api-addr",
            "127.0.0.1:0",
            "--sink",
            "mysql://root@127.0.0.1:3306/",
        ])
        .expect("parse");
        let o = cli.demo.options();
        assert_eq!(o.duration, Some(Duration::from_secs(8)));
        assert_eq!(o.tables, 2);
        assert_eq!(o.rate, None);
        assert!(!o.ddl);
        assert_eq!(o.api_addr, Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert_eq!(o.sink.as_deref(), Some("mysql://root@127.0.0.1:3306/"));
        assert_eq!(o.workers, 2);
        assert_eq!(o.catch_up_timeout, Duration::from_secs(60));

        let o = Cli::try_parse_from(["demo"]).expect("parse").demo.options();
        assert_eq!(o.duration, None);
        assert_eq!(o.rate, Some(500));
        assert!(o.ddl);
        assert_eq!(o.view, ViewMode::Auto);
        assert!(Cli::try_parse_from(["demo", "--duration", "soon"]).is_err());
    }
}

#[cfg(test)]
mod end_to_end {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }
}
