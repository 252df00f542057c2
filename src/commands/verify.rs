//! `tidal verify`: compares the upstream at a ts with a downstream and says so in its exit code
//! (0 equal, 1 different, 2 could not verify), so that scripts and CI can gate on it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args};
use tidal::verify::{Downstream, VerifyOptions, verify};
use tidal_model::Ts;
use tidal_sinks::encode::Protocol;
use tidal_sinks::uri::mask_password;

const AFTER_HELP: &str = "\
Exit status: 0 = every table is equal, 1 = differences found, 2 = verification failed (bad
arguments, upstream or downstream unreachable, ts below the GC safe point, ...).

Tables are compared first by row count and an order-independent checksum of every row's
canonical form, then row by row where those differ: the report names missing, extra and
different rows (by primary key, or by all columns for tables without a key).

Examples:
  tidal verify --pd 127.0.0.1:2379 --mysql mysql://root:secret@127.0.0.1:3306/
  tidal verify --pd 127.0.0.1:2379 --storage /data/cdc --protocol csv --filter 'app.*'";

/// Compare an upstream snapshot with a downstream, table by table.
#[derive(Debug, Args)]
#[command(
    long_about = "Reads the upstream TiDB/TiKV cluster as a consistent snapshot at one ts and \
                  compares it with a downstream MySQL/TiDB database or a storage sink directory, \
                  table by table with checksums, then row by row where they differ.",
    after_help = AFTER_HELP,
    group(ArgGroup::new("downstream").required(true).args(["mysql", "storage"]))
)]
pub struct VerifyArgs {
    /// PD endpoints of the upstream cluster (comma-separated or repeated).
    #[arg(long, required = true, value_delimiter = ',')]
    pub pd: Vec<String>,
    /// A MySQL/TiDB downstream: mysql://user:password@host:port/ (or tidb://).
    #[arg(long)]
    pub mysql: Option<String>,
    /// A storage sink downstream: the sink's root directory.
    #[arg(long)]
    pub storage: Option<PathBuf>,
    /// Protocol of the storage sink's files: canal-json or csv.
    #[arg(long, value_parser = parse_protocol, default_value = "canal-json", requires = "storage")]
    pub protocol: Protocol,
    /// Snapshot ts (a TSO). Default: the storage checkpoint, or PD's current ts for MySQL.
    #[arg(long)]
    pub ts: Option<u64>,
    /// Table filter rule, TiCDC syntax (repeatable; default: every table).
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Row differences listed per table (all are counted).
    #[arg(long, default_value_t = 10)]
    pub max_diffs: usize,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::parse(s).ok_or_else(|| format!("unknown protocol {s:?} (canal-json or csv)"))
}

/// Runs `tidal verify`.
pub fn run(args: VerifyArgs) -> ExitCode {
    let downstream = match (&args.mysql, &args.storage) {
        (Some(url), None) => Downstream::MySql(url.clone()),
        (None, Some(dir)) => Downstream::Storage {
            dir: dir.clone(),
            protocol: args.protocol,
        },
        // clap's group makes exactly one of them present.
        _ => {
            eprintln!("tidal verify: give exactly one of --mysql and --storage");
            return ExitCode::from(2);
        }
    };
    let opts = VerifyOptions {
        pd: args.pd.clone(),
        ts: args.ts.map(Ts),
        downstream,
        filter: args.filters.clone(),
        max_row_diffs_per_table: args.max_diffs,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidal verify: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(verify(opts)) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                println!("{report}");
            }
            if report.equal {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            let mut msg = e.to_string();
            if let Some(url) = &args.mysql {
                // Belt and braces: the library masks URLs, but never print a password.
                msg = msg.replace(url.as_str(), &mask_password(url));
            }
            eprintln!("tidal verify: {msg}");
            ExitCode::from(2)
        }
    }
}
