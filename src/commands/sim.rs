//! `tidal sim`: the embedded TiKV + PD cluster as a standalone process, with workloads and
//! fault injection, so that Tidal (or TiCDC, or any PD client) can be pointed at it.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidal_model::Datum;
use tidal_model::tablecodec::Handle;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::tidb::{ColumnSpec, PrimaryKey, TableSpec, Tidb, TidbError, types};
use tidal_sim::workload::{
    self, Bank, BankConfig, DdlMix, DdlMixConfig, LargeTxn, LargeTxnConfig, ManyTables,
    ManyTablesConfig, RunOptions, StepSink, Sysbench, SysbenchConfig, Workload, WorkloadHandle,
};

const AFTER_HELP: &str = "\
Workloads (--workload, repeatable; each runs in its own task, seeded from --seed):
  sysbench     OLTP over tables sbtest1..N (id INT PRIMARY KEY, k INT, c CHAR(120), pad CHAR(60),
               KEY k_1(k)): index and non-index updates, delete + re-insert, inserts, deletes.
               --tables = number of tables (4), --rows = rows loaded per table (1000).
  bank         Transfers between accounts in tables accounts1..N; the sum of all balances never
               changes, so every consistent snapshot must add up to the same total.
               --tables = number of account tables (1), --rows = accounts per table (100).
  ddl          A DDL mix (create/drop/truncate/rename tables, add/drop/modify columns, add/drop
               indexes, renames across databases) interleaved with DML on the same tables.
               --tables = tables created at start (3).
  large-txn    One transaction of many rows per step, cycling insert, update, delete of a batch.
               --rows = rows per transaction (10000).
--row-bytes sets the width of the wide column (sysbench's `c`, 120; large-txn's `payload`, 64,
at most 16383): wide rows make gigabytes of changes cheap to generate.
  many-tables  Creates many small tables in batched `create tables` jobs, then writes single rows
               into random ones. --tables = number of tables (10000).
  wide         Wide rows, cheap to generate: table wide.t (id BIGINT PRIMARY KEY, v BIGINT,
               payload BLOB); each step is one transaction of --rows rows (64) of --row-bytes
               bytes (16000), cycling insert, update, delete of a batch like large-txn. For
               memory and throughput tests that need gigabytes of changes.

Faults (--fault, repeatable; one is injected every --fault-every, in turn):
  split        Split a random region at a key that holds data.
  merge        Merge a random pair of adjacent regions.
  transfer     Move a random region's leader to another store.
  reset        Reset every CDC stream of a random store.
  stall        Stop a random region's resolved ts from advancing until the next stall fault.
  pd-outage    Make PD unavailable for half of --fault-every.

Durations take a unit: 500ms, 2s, 1m, 1h (a bare number means seconds).";

/// Run the embedded TiKV+PD cluster standalone, with workloads and fault injection.
#[derive(Debug, Args)]
#[command(
    long_about = "Runs an embedded TiKV + PD cluster that serves PD, TiKV KV reads and the TiKV CDC \
                  feed (ChangeData/EventFeed) on loopback, writes schema and rows exactly as TiDB \
                  does, runs workloads against it and injects faults. Runs until Ctrl-C or \
                  --duration. Prints the PD address, then a progress line every few seconds.",
    after_help = AFTER_HELP
)]
pub struct SimArgs {
    /// Address for PD to listen on (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub pd: SocketAddr,
    /// Number of TiKV stores.
    #[arg(long, default_value_t = 3)]
    pub stores: usize,
    /// Workload to run (repeatable); none = an idle cluster.
    #[arg(long = "workload", value_enum)]
    pub workloads: Vec<WorkloadKind>,
    /// Steps (transactions or DDL jobs) per second per workload; unlimited if absent.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Seed of the workloads' and faults' random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of tables (meaning depends on the workload, see below).
    #[arg(long)]
    pub tables: Option<usize>,
    /// Rows (per table, per transaction or accounts; see below).
    #[arg(long)]
    pub rows: Option<u64>,
    /// Width in bytes of the wide column of sysbench and large-txn rows (see below).
    #[arg(long)]
    pub row_bytes: Option<usize>,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How often resolved timestamps advance (TiKV's cdc.min-ts-interval).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub min_ts_interval: Duration,
    /// Fault to inject (repeatable).
    #[arg(long = "fault", value_enum)]
    pub faults: Vec<FaultKind>,
    /// Interval between injected faults.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub fault_every: Duration,
    /// Interval between progress lines.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub progress_every: Duration,
}

/// A workload of `tidal sim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadKind {
    /// Sysbench-like OLTP.
    Sysbench,
    /// Bank transfers with an invariant total.
    Bank,
    /// DDL mixed with DML.
    Ddl,
    /// Large transactions.
    LargeTxn,
    /// Many tables.
    ManyTables,
    /// Wide rows.
    Wide,
}

/// A fault of `tidal sim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultKind {
    /// Split a random region.
    Split,
    /// Merge two adjacent regions.
    Merge,
    /// Transfer a region's leader.
    Transfer,
    /// Reset a store's CDC streams.
    Reset,
    /// Stall a region's resolved ts.
    Stall,
    /// PD outage.
    PdOutage,
}

/// Parses `500ms`, `2s`, `1.5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn build_workload(kind: WorkloadKind, args: &SimArgs, seed: u64) -> Box<dyn Workload> {
    match kind {
        WorkloadKind::Sysbench => {
            let d = SysbenchConfig::default();
            Box::new(Sysbench::new(SysbenchConfig {
                seed,
                tables: args.tables.unwrap_or(d.tables),
                rows_per_table: args.rows.unwrap_or(d.rows_per_table),
                row_width: args.row_bytes.unwrap_or(d.row_width),
                ..d
            }))
        }
        WorkloadKind::Bank => {
            let d = BankConfig::default();
            Box::new(Bank::new(BankConfig {
                seed,
                tables: args.tables.unwrap_or(d.tables),
                accounts_per_table: args.rows.map_or(d.accounts_per_table, |r| {
                    i64::try_from(r).unwrap_or(i64::MAX)
                }),
                ..d
            }))
        }
        WorkloadKind::Ddl => {
            let d = DdlMixConfig::default();
            Box::new(DdlMix::new(DdlMixConfig {
                seed,
                initial_tables: args.tables.unwrap_or(d.initial_tables),
                ..d
            }))
        }
        WorkloadKind::LargeTxn => {
            let d = LargeTxnConfig::default();
            Box::new(LargeTxn::new(LargeTxnConfig {
                seed,
                rows_per_txn: args
                    .rows
                    .map_or(d.rows_per_txn, |r| usize::try_from(r).unwrap_or(usize::MAX)),
                row_width: args.row_bytes.unwrap_or(d.row_width),
                ..d
            }))
        }
        WorkloadKind::ManyTables => {
            let d = ManyTablesConfig::default();
            Box::new(ManyTables::new(ManyTablesConfig {
                seed,
                tables: args.tables.unwrap_or(d.tables),
                ..d
            }))
        }
        WorkloadKind::Wide => Box::new(WideRows::new(
            seed,
            args.rows
                .map_or(64, |r| usize::try_from(r).unwrap_or(usize::MAX)),
            args.row_bytes.unwrap_or(16_000),
        )),
    }
}

/// The `wide` workload: transactions of wide rows whose payload costs a few instructions per
/// eight bytes to generate (the sim's other workloads draw every byte from the RNG, which
/// limits them to a few MB/s in a debug build).
#[derive(Debug)]
struct WideRows {
    rng: StdRng,
    rows: i64,
    width: usize,
    phase: u8,
    batch_start: i64,
    x: u64,
}

impl WideRows {
    const DB: &'static str = "wide";
    const TABLE: &'static str = "t";

    fn new(seed: u64, rows: usize, width: usize) -> WideRows {
        WideRows {
            rng: StdRng::seed_from_u64(seed),
            rows: i64::try_from(rows.max(1)).unwrap_or(i64::MAX),
            width: width.clamp(1, 4 << 20),
            phase: 0,
            batch_start: 1,
            x: seed | 1,
        }
    }

    /// Pseudo-random printable bytes (xorshift, eight bytes per step).
    fn payload(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.width + 8);
        while out.len() < self.width {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            out.extend_from_slice(
                &(self.x & 0x3F3F_3F3F_3F3F_3F3F | 0x4040_4040_4040_4040).to_le_bytes(),
            );
        }
        out.truncate(self.width);
        out
    }

    fn row(&mut self, id: i64) -> Vec<Datum> {
        vec![
            Datum::Int(id),
            Datum::Int(self.rng.random_range(0..1_000_000)),
            Datum::Bytes(self.payload()),
        ]
    }
}

impl Workload for WideRows {
    fn name(&self) -> &'static str {
        "wide"
    }

    fn setup(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        if !tidb.has_database(Self::DB) {
            let out = tidb.create_database(Self::DB)?;
            sink.ddl(Self::DB, "", &out);
        }
        if tidb.table(Self::DB, Self::TABLE).is_err() {
            let spec = TableSpec::new(
                Self::TABLE,
                vec![
                    ColumnSpec::new("id", types::bigint()).not_null(),
                    ColumnSpec::new("v", types::bigint()),
                    ColumnSpec::new("payload", types::blob()),
                ],
            )
            .primary_key(PrimaryKey::IntHandle("id".into()));
            let out = tidb.create_table(Self::DB, &spec)?;
            sink.ddl(Self::DB, Self::TABLE, &out);
        } else {
            // Start past any rows an earlier run left behind.
            self.batch_start = 1_000_000_000 + i64::from(self.rng.random::<u16>()) * 1_000_000;
        }
        Ok(())
    }

    fn step(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        let table = tidb.table(Self::DB, Self::TABLE)?;
        let ids = self.batch_start..self.batch_start.saturating_add(self.rows);
        let mut txn = tidb.begin();
        for id in ids {
            match self.phase {
                0 => {
                    let row = self.row(id);
                    txn.insert(&table, row)?;
                }
                1 => {
                    let row = self.row(id);
                    txn.update(&table, &Handle::Int(id), row)?;
                }
                _ => {
                    txn.delete(&table, &Handle::Int(id))?;
                }
            }
        }
        sink.committed(&txn.commit()?);
        self.phase = (self.phase + 1) % 3;
        if self.phase == 0 {
            self.batch_start = self.batch_start.saturating_add(self.rows);
        }
        Ok(())
    }
}

/// Injects one fault; returns a description for the log.
fn inject(
    cluster: &SimCluster,
    kind: FaultKind,
    rng: &mut StdRng,
    every: Duration,
    stalled: &mut Option<u64>,
) -> String {
    let faults = cluster.faults();
    match kind {
        FaultKind::Split => match faults.split_random(rng) {
            Ok((l, r)) => format!("split region {} into {} and {}", r.id, l.id, r.id),
            Err(e) => format!("split skipped: {e}"),
        },
        FaultKind::Merge => match faults.merge_random(rng) {
            Ok(r) => format!("merged into region {}", r.id),
            Err(e) => format!("merge skipped: {e}"),
        },
        FaultKind::Transfer => match faults.transfer_random(rng) {
            Ok(r) => format!("region {} leader now on store {}", r.id, r.leader_store),
            Err(e) => format!("transfer skipped: {e}"),
        },
        FaultKind::Reset => {
            let stores = cluster.regions().stores();
            match stores.get(rng.random_range(0..stores.len().max(1))) {
                Some(s) => {
                    faults.reset_store_streams(s.id);
                    format!("reset CDC streams of store {}", s.id)
                }
                None => "reset skipped: no store".to_owned(),
            }
        }
        FaultKind::Stall => {
            if let Some(id) = stalled.take() {
                faults.stall_region(id, false);
            }
            let regions = cluster.regions().all();
            match regions.get(rng.random_range(0..regions.len().max(1))) {
                Some(r) => {
                    faults.stall_region(r.id, true);
                    *stalled = Some(r.id);
                    format!("stalled resolved ts of region {}", r.id)
                }
                None => "stall skipped: no region".to_owned(),
            }
        }
        FaultKind::PdOutage => {
            faults.pd_unavailable_for(every / 2);
            format!("PD unavailable for {:?}", every / 2)
        }
    }
}

fn progress_line(started: Instant, handles: &[WorkloadHandle], cluster: &SimCluster) -> String {
    let secs = started.elapsed().as_secs_f64();
    let mut parts = Vec::new();
    for h in handles {
        let p = h.progress();
        let rate = if secs > 0.0 {
            p.txns as f64 / secs
        } else {
            0.0
        };
        parts.push(format!(
            "{}: txns={} ({rate:.0}/s) rows={} ddls={} retries={}",
            h.name(),
            p.txns,
            p.rows,
            p.ddls,
            p.retries
        ));
    }
    format!(
        "[{secs:7.1}s] regions={} cdc_registrations={} tso={} {}",
        cluster.regions().len(),
        cluster.cdc().registered_count(),
        cluster.tso().current(),
        parts.join(" | ")
    )
}

async fn run_async(args: SimArgs) -> anyhow::Result<()> {
    if !args.pd.ip().is_loopback() {
        bail!(
            "--pd must be a loopback address (the sim serves on 127.0.0.1 only), got {}",
            args.pd
        );
    }
    if args.stores == 0 {
        bail!("--stores must be at least 1");
    }
    let mut cfg = SimConfig {
        stores: args.stores,
        ..SimConfig::default()
    };
    cfg.pd_port = (args.pd.port() != 0).then_some(args.pd.port());
    cfg.cdc.min_ts_interval = args.min_ts_interval;
    let cluster = SimCluster::start(cfg)
        .await
        .context("starting the embedded cluster")?;
    // TiDB's schema (including `mysql.tidb_ddl_job`) is bootstrapped before the cluster is
    // announced: a client that connects on the announcement and takes a start ts at once must
    // find the schema in its snapshot (a changefeed started below the bootstrap cannot decode
    // DDL jobs).
    let (store, tso, regions) = (
        cluster.store().clone(),
        cluster.tso().clone(),
        cluster.regions().clone(),
    );
    let tidb = tokio::task::spawn_blocking(move || Tidb::new(store, tso, regions))
        .await
        .context("bootstrapping the TiDB stand-in")??;
    println!("tidal sim: PD listening on {}", cluster.pd_addr());
    println!(
        "tidal sim: stores {}",
        cluster
            .store_addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = std::io::stdout().flush();

    let handles: Vec<WorkloadHandle> = args
        .workloads
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let w = build_workload(*kind, &args, args.seed.wrapping_add(i as u64));
            workload::spawn(w, tidb.clone(), RunOptions::forever().rate(args.rate))
        })
        .collect();

    let started = Instant::now();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut progress = tokio::time::interval(args.progress_every.max(Duration::from_millis(100)));
    progress.tick().await;
    let mut fault_tick = tokio::time::interval(args.fault_every.max(Duration::from_millis(10)));
    fault_tick.tick().await;
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5EED_FA17);
    let mut next_fault = 0usize;
    let mut stalled = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut failed = None;
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut ctrl_c => {
                println!("tidal sim: interrupted");
                break;
            }
            _ = until_deadline => break,
            _ = progress.tick() => {
                println!("{}", progress_line(started, &handles, &cluster));
                if let Some(h) = handles.iter().find(|h| h.is_finished()) {
                    failed = Some(h.name());
                    break;
                }
            }
            _ = fault_tick.tick(), if !args.faults.is_empty() => {
                let kind = args.faults[next_fault % args.faults.len()];
                next_fault += 1;
                let what = inject(&cluster, kind, &mut rng, args.fault_every, &mut stalled);
                println!("tidal sim: fault: {what}");
            }
        }
    }
    for h in &handles {
        h.stop();
    }
    let mut errors = Vec::new();
    for h in handles {
        let name = h.name();
        match h.join().await {
            Ok(stats) => println!(
                "tidal sim: {name}: {} txns, {} rows, {} ddls, {} retries in {:.1}s",
                stats.txns,
                stats.rows,
                stats.ddls,
                stats.retries,
                stats.elapsed.as_secs_f64()
            ),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    cluster.shutdown().await;
    if let Some(name) = failed.filter(|_| !errors.is_empty()) {
        bail!("workload {name} stopped: {}", errors.join("; "));
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// Runs `tidal sim` to completion.
pub fn run(args: SimArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidal sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidal sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
