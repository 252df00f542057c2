//! `tidal bench`: a reproducible end-to-end benchmark on the embedded cluster.
//!
//! Why it exists: throughput claims are only worth something when anyone can re-run them and
//! see the same shape of numbers next to the baselines that bound them. One run starts the
//! embedded TiKV + PD cluster, writes a workload of a given shape through the sim's TiDB layer
//! (so CDC sees TiDB's bytes), runs a real changefeed (`tidal_dataflow::start_changefeed`) into
//! a real sink, and reports
//!
//! - rows, bytes and elapsed time; rows/s, MiB/s, rows/s per worker and rows per CPU-second;
//! - commit → checkpoint latency p50/p99 (each transaction's commit wall time against the
//!   moment the polled checkpoint passed its commit ts);
//! - peak RSS (`VmHWM`) and where the CPU went, by thread kind;
//! - the same rows' baselines: the one-core decode floor and, for MySQL sinks, the
//!   downstream's own bulk load.
//!
//! Modes: `catch-up` writes everything first and measures the drain from a start ts before
//! it; `live` runs the changefeed while the workload writes (optionally at a fixed rate) and
//! is the mode whose latency means something. `sim-only` measures the sim and the feed client
//! alone ([`simonly`]).

pub mod baseline;
pub mod metrics;
pub mod scale;
pub mod simonly;
pub mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tidal_dataflow::{ChangefeedSpec, RunConfig, start_changefeed};
use tidal_ingest::pd::{PdClient, PdConfig};
use tidal_model::Ts;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::tidb::Tidb;
use tidal_sinks::uri::mask_password;

use workload::{CommitQueue, Shape, WriteResult};

/// How the workload and the changefeed overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchMode {
    /// Write every row first, then start the changefeed from before them and time the drain.
    CatchUp,
    /// Run the changefeed while the workload writes.
    Live,
    /// No changefeed: the sim's CDC feeding a plain region-feed subscriber.
    SimOnly,
}

impl BenchMode {
    fn name(self) -> &'static str {
        match self {
            BenchMode::CatchUp => "catch-up",
            BenchMode::Live => "live",
            BenchMode::SimOnly => "sim-only",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Rows to write.
    pub rows: u64,
    /// Number of tables.
    pub tables: usize,
    /// Approximate bytes per row value.
    pub row_width: usize,
    /// Rows per transaction.
    pub txn_size: usize,
    /// Timely workers of the changefeed.
    pub workers: usize,
    /// Sink URI (`blackhole://`, `file://DIR?protocol=canal-json`, `mysql://…`).
    pub sink: String,
    /// Mode.
    pub mode: BenchMode,
    /// Rows per second the workload writes (live mode; `None` = as fast as it can).
    pub rate: Option<u64>,
    /// The sim's resolved-ts interval (TiKV's `cdc.min-ts-interval`).
    pub min_ts_interval: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    /// Run the baselines (decode floor, MySQL bulk load).
    pub baselines: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            rows: 200_000,
            tables: 4,
            row_width: 128,
            txn_size: 100,
            workers: 1,
            sink: "blackhole://".into(),
            mode: BenchMode::CatchUp,
            rate: None,
            min_ts_interval: Duration::from_millis(200),
            timeout: Duration::from_secs(600),
            baselines: true,
        }
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The options are unusable.
    #[error("invalid options: {0}")]
    Options(String),
    /// The embedded cluster did not start.
    #[error("starting the embedded cluster: {0}")]
    Cluster(String),
    /// Writing the workload failed.
    #[error("workload: {0}")]
    Workload(String),
    /// The sink could not be opened.
    #[error("sink: {0}")]
    Sink(String),
    /// The changefeed failed.
    #[error("changefeed: {0}")]
    Changefeed(String),
    /// The region feed failed (sim-only).
    #[error("region feed: {0}")]
    Feed(String),
    /// The MySQL baseline or downstream preparation failed.
    #[error("mysql: {0}")]
    Mysql(String),
    /// The run did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// CPU time of one kind of thread during the measured window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuShare {
    /// Thread name (numeric suffixes dropped).
    pub thread: String,
    /// CPU seconds.
    pub cpu_s: f64,
}

/// The decode floor of the same rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodeFloorReport {
    /// Rows decoded.
    pub rows: u64,
    /// Seconds on one core.
    pub elapsed_s: f64,
    /// Rows per second on one core.
    pub rows_per_s: f64,
}

/// The MySQL bulk-load baseline of the same rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MysqlBaselineReport {
    /// `load-data-local` or `multi-row-insert`.
    pub method: String,
    /// Rows loaded.
    pub rows: u64,
    /// Seconds.
    pub elapsed_s: f64,
    /// Rows per second.
    pub rows_per_s: f64,
    /// Why LOAD DATA LOCAL was not used, if it was not.
    pub note: Option<String>,
}

/// Every figure of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// Mode.
    pub mode: BenchMode,
    /// Sink URI (password masked); `region-feed` in sim-only mode.
    pub sink: String,
    /// Changefeed workers (1 in sim-only mode).
    pub workers: usize,
    /// Tables.
    pub tables: usize,
    /// Approximate row width, bytes.
    pub row_width: usize,
    /// Rows per transaction.
    pub txn_size: usize,
    /// Target write rate (rows/s), if any.
    pub rate: Option<u64>,
    /// The sim's resolved-ts interval, ms.
    pub min_ts_interval_ms: u64,
    /// Rows written upstream.
    pub rows_written: u64,
    /// Transactions written upstream.
    pub txns_written: u64,
    /// Seconds the writer took.
    pub write_elapsed_s: f64,
    /// Rows per second the writer (one thread, sim apply included) achieved.
    pub write_rows_per_s: f64,
    /// Rows that reached the sink (sim-only: the subscriber).
    pub rows: u64,
    /// Bytes the sink reported durable (sim-only: keys + values received).
    pub bytes: u64,
    /// Estimated upstream bytes of the same rows (encoded keys + values).
    pub raw_bytes: u64,
    /// Seconds of the measured window (see the mode).
    pub elapsed_s: f64,
    /// Rows per second.
    pub rows_per_s: f64,
    /// Sink bytes per second, MiB.
    pub mib_per_s: f64,
    /// Upstream bytes per second, MiB.
    pub raw_mib_per_s: f64,
    /// Rows per second divided by the workers.
    pub rows_per_s_per_worker: f64,
    /// CPU seconds of the whole process in the measured window.
    pub cpu_s: f64,
    /// Rows per CPU-second (rows/s per core actually busy).
    pub rows_per_cpu_s: f64,
    /// Commit → checkpoint latency p50, ms (sim-only: none).
    pub latency_p50_ms: Option<f64>,
    /// Commit → checkpoint latency p99, ms.
    pub latency_p99_ms: Option<f64>,
    /// Largest commit → checkpoint latency, ms.
    pub latency_max_ms: Option<f64>,
    /// Transactions sampled for latency.
    pub latency_samples: u64,
    /// Peak resident set size, MiB (before the baselines ran).
    pub peak_rss_mib: Option<f64>,
    /// CPU by thread kind during the measured window, largest first.
    pub cpu_breakdown: Vec<CpuShare>,
    /// Decode floor of the same rows on one core.
    pub decode_floor: Option<DecodeFloorReport>,
    /// MySQL bulk load of the same rows (MySQL sinks only).
    pub mysql_baseline: Option<MysqlBaselineReport>,
}

fn per_s(n: f64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { n / s } else { 0.0 }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const MIB: f64 = 1024.0 * 1024.0;

/// The cluster, TiDB and PD client of one run.
struct Upstream {
    cluster: SimCluster,
    tidb: Tidb,
    pd: Arc<PdClient>,
}

async fn upstream(opts: &BenchOptions) -> Result<Upstream, BenchError> {
    let cfg = SimConfig::with_min_ts_interval(opts.min_ts_interval);
    let cluster = SimCluster::start(cfg)
        .await
        .map_err(|e| BenchError::Cluster(e.to_string()))?;
    let tidb = cluster
        .tidb()
        .map_err(|e| BenchError::Cluster(e.to_string()))?;
    let pd = tokio::time::timeout(
        Duration::from_secs(10),
        PdClient::connect(PdConfig::new(cluster.pd_endpoints())),
    )
    .await
    .map_err(|_| BenchError::Cluster("PD client timed out".into()))?
    .map_err(|e| BenchError::Cluster(e.to_string()))?;
    Ok(Upstream {
        cluster,
        tidb,
        pd: Arc::new(pd),
    })
}

fn validate(opts: &BenchOptions) -> Result<(), BenchError> {
    if opts.rows == 0 {
        return Err(BenchError::Options("--rows must be positive".into()));
    }
    if opts.tables == 0 || opts.tables > 10_000 {
        return Err(BenchError::Options("--tables must be 1..=10000".into()));
    }
    if opts.txn_size == 0 {
        return Err(BenchError::Options("--txn-size must be positive".into()));
    }
    if opts.workers == 0 || opts.workers > 256 {
        return Err(BenchError::Options("--workers must be 1..=256".into()));
    }
    if opts.row_width == 0 || opts.row_width > 1 << 20 {
        return Err(BenchError::Options(
            "--row-width must be 1..=1048576".into(),
        ));
    }
    Ok(())
}

/// Runs one benchmark and returns its figures.
pub async fn run_bench(opts: BenchOptions) -> Result<BenchReport, BenchError> {
    validate(&opts)?;
    let shape = Shape {
        tables: opts.tables,
        row_width: opts.row_width,
        txn_size: opts.txn_size,
    };
    let up = upstream(&opts).await?;
    let result = match opts.mode {
        BenchMode::SimOnly => run_sim_only(&opts, &shape, &up).await,
        BenchMode::CatchUp | BenchMode::Live => run_changefeed(&opts, &shape, &up).await,
    };
    up.cluster.shutdown().await;
    result
}

fn spawn_writer(
    up: &Upstream,
    tables: &[tidal_sim::tidb::Table],
    shape: &Shape,
    rows: u64,
    rate: Option<u64>,
    queue: &CommitQueue,
    stop: &Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<WriteResult, String>>, BenchError> {
    let (tidb, tables, shape, queue, stop) = (
        up.tidb.clone(),
        tables.to_vec(),
        *shape,
        Arc::clone(queue),
        Arc::clone(stop),
    );
    std::thread::Builder::new()
        .name("bench-writer".into())
        .spawn(move || {
            workload::write_rows(&tidb, &tables, &shape, rows, rate, Some(&queue), &stop)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| BenchError::Workload(format!("spawning the writer: {e}")))
}

fn join_writer(
    w: std::thread::JoinHandle<Result<WriteResult, String>>,
) -> Result<WriteResult, BenchError> {
    w.join()
        .map_err(|_| BenchError::Workload("writer panicked".into()))?
        .map_err(BenchError::Workload)
}

async fn prepare_downstream(sink: &str) -> Result<(), BenchError> {
    let scheme = sink.split("://").next().unwrap_or("").to_ascii_lowercase();
    if scheme != "mysql" && scheme != "tidb" {
        return Ok(());
    }
    baseline::drop_downstream_db(sink, workload::DB).await
}

async fn run_changefeed(
    opts: &BenchOptions,
    shape: &Shape,
    up: &Upstream,
) -> Result<BenchReport, BenchError> {
    prepare_downstream(&opts.sink).await?;
    // Start below the DDL so that every sink (MySQL too) creates the tables itself.
    let start_ts = Ts(up.cluster.tso().next());
    let tables = workload::create_tables(&up.tidb, shape)
        .map_err(|e| BenchError::Workload(e.to_string()))?;
    let sink = tidal_sinks::open::open_sink(&opts.sink, "tidal-bench")
        .await
        .map_err(|e| BenchError::Sink(e.to_string()))?;
    let queue: CommitQueue = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut write_result = None;
    let mut writer = None;
    if opts.mode == BenchMode::CatchUp {
        let w = spawn_writer(up, &tables, shape, opts.rows, None, &queue, &stop)?;
        let r = tokio::task::spawn_blocking(move || join_writer(w))
            .await
            .map_err(|e| BenchError::Workload(e.to_string()))??;
        write_result = Some(r);
    }

    let cpu0 = metrics::process_cpu();
    let threads0 = metrics::cpu_by_thread();
    let t0 = Instant::now();
    let spec = ChangefeedSpec::new(
        "tidal-bench",
        Arc::clone(&up.pd),
        start_ts,
        Arc::clone(&sink),
    );
    let handle = tokio::time::timeout(
        Duration::from_secs(60),
        start_changefeed(spec, RunConfig::process(opts.workers)),
    )
    .await
    .map_err(|_| BenchError::Changefeed("start timed out".into()))?
    .map_err(|e| BenchError::Changefeed(e.to_string()))?;
    let live_start = Instant::now();
    if opts.mode == BenchMode::Live {
        writer = Some(spawn_writer(
            up, &tables, shape, opts.rows, opts.rate, &queue, &stop,
        )?);
    }

    // Poll the checkpoint; every queued commit it passes yields one latency sample.
    let deadline = t0 + opts.timeout;
    let mut latencies: Vec<Duration> = Vec::new();
    let mut threads_mid = None;
    let outcome: Result<(), BenchError> = loop {
        if let Some(e) = handle.error() {
            break Err(BenchError::Changefeed(e.to_string()));
        }
        let cp = handle.checkpoint_ts().0;
        let now = Instant::now();
        if let Ok(mut q) = queue.lock() {
            while let Some(c) = q.front().copied() {
                if c.commit_ts > cp {
                    break;
                }
                q.pop_front();
                latencies.push(now.saturating_duration_since(c.at));
            }
        }
        if writer.as_ref().is_some_and(|w| w.is_finished())
            && let Some(w) = writer.take()
        {
            // Read the writer's CPU while its thread still exists.
            threads_mid = Some(metrics::cpu_by_thread());
            match join_writer(w) {
                Ok(r) => write_result = Some(r),
                Err(e) => break Err(e),
            }
        }
        if let Some(r) = &write_result
            && cp >= r.last_commit_ts
            && queue.lock().map(|q| q.is_empty()).unwrap_or(true)
        {
            break Ok(());
        }
        if now > deadline {
            break Err(BenchError::Timeout(format!(
                "checkpoint {cp} after {:?}; stats {:?}",
                opts.timeout,
                handle.stats()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let elapsed = match opts.mode {
        BenchMode::Live => live_start.elapsed(),
        _ => t0.elapsed(),
    };
    let cpu1 = metrics::process_cpu();
    let mut threads1 = metrics::cpu_by_thread();
    if let Some(mid) = threads_mid {
        // The writer thread is gone by now; keep its reading.
        for (k, v) in mid {
            if k.starts_with("bench-writer") {
                threads1.insert(k, v);
            }
        }
    }
    let stats = handle.stats();
    stop.store(true, Ordering::Relaxed);
    if let Some(w) = writer.take() {
        let _ = tokio::task::spawn_blocking(move || join_writer(w)).await;
    }
    let _ = tokio::task::spawn_blocking(move || handle.stop()).await;
    let _ = sink.close().await;
    outcome?;
    let peak_rss = metrics::peak_rss_bytes();
    let write = write_result.ok_or_else(|| BenchError::Workload("no write result".into()))?;

    latencies.sort();
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    let (decode_floor, raw_row_bytes) = if opts.baselines {
        let (s, t, n) = (*shape, tables.clone(), write.rows);
        let f = tokio::task::spawn_blocking(move || baseline::decode_floor(&s, &t, n))
            .await
            .map_err(|e| BenchError::Workload(e.to_string()))??;
        (
            Some(DecodeFloorReport {
                rows: f.rows,
                elapsed_s: f.elapsed.as_secs_f64(),
                rows_per_s: per_s(f.rows as f64, f.elapsed),
            }),
            f.avg_raw_row_bytes,
        )
    } else {
        (None, 0.0)
    };
    let mysql_baseline = if opts.baselines && prepare_is_mysql(&opts.sink) {
        let b = baseline::mysql_baseline(&opts.sink, shape, write.rows).await?;
        Some(MysqlBaselineReport {
            method: b.method,
            rows: b.rows,
            elapsed_s: b.elapsed.as_secs_f64(),
            rows_per_s: per_s(b.rows as f64, b.elapsed),
            note: b.note,
        })
    } else {
        None
    };
    let raw_bytes = (raw_row_bytes * write.rows as f64) as u64;
    let rows = stats.rows_flushed;
    Ok(BenchReport {
        mode: opts.mode,
        sink: mask_password(&opts.sink),
        workers: opts.workers,
        tables: opts.tables,
        row_width: opts.row_width,
        txn_size: opts.txn_size,
        rate: opts.rate,
        min_ts_interval_ms: opts.min_ts_interval.as_millis() as u64,
        rows_written: write.rows,
        txns_written: write.txns,
        write_elapsed_s: write.elapsed.as_secs_f64(),
        write_rows_per_s: per_s(write.rows as f64, write.elapsed),
        rows,
        bytes: stats.bytes_flushed,
        raw_bytes,
        elapsed_s: elapsed.as_secs_f64(),
        rows_per_s: per_s(rows as f64, elapsed),
        mib_per_s: per_s(stats.bytes_flushed as f64 / MIB, elapsed),
        raw_mib_per_s: per_s(raw_bytes as f64 / MIB, elapsed),
        rows_per_s_per_worker: per_s(rows as f64, elapsed) / opts.workers as f64,
        cpu_s: cpu.as_secs_f64(),
        rows_per_cpu_s: per_s(rows as f64, cpu),
        latency_p50_ms: metrics::quantile(&latencies, 0.5).map(ms),
        latency_p99_ms: metrics::quantile(&latencies, 0.99).map(ms),
        latency_max_ms: latencies.last().copied().map(ms),
        latency_samples: latencies.len() as u64,
        peak_rss_mib: peak_rss.map(|b| b as f64 / MIB),
        cpu_breakdown: breakdown(&threads0, &threads1),
        decode_floor,
        mysql_baseline,
    })
}

fn prepare_is_mysql(sink: &str) -> bool {
    let scheme = sink.split("://").next().unwrap_or("").to_ascii_lowercase();
    scheme == "mysql" || scheme == "tidb"
}

fn breakdown(
    before: &std::collections::BTreeMap<String, Duration>,
    after: &std::collections::BTreeMap<String, Duration>,
) -> Vec<CpuShare> {
    metrics::cpu_delta(before, after)
        .into_iter()
        .map(|(thread, d)| CpuShare {
            thread,
            cpu_s: d.as_secs_f64(),
        })
        .collect()
}

/// Adds the writer thread's own CPU reading when the thread was gone before the breakdown was
/// taken.
fn with_writer(mut shares: Vec<CpuShare>, write: &WriteResult) -> Vec<CpuShare> {
    if let Some(cpu) = write.cpu
        && !shares.iter().any(|c| c.thread == "bench-writer")
    {
        shares.push(CpuShare {
            thread: "bench-writer".into(),
            cpu_s: cpu.as_secs_f64(),
        });
        shares.sort_by(|a, b| b.cpu_s.total_cmp(&a.cpu_s));
    }
    shares
}

async fn run_sim_only(
    opts: &BenchOptions,
    shape: &Shape,
    up: &Upstream,
) -> Result<BenchReport, BenchError> {
    let tables = workload::create_tables(&up.tidb, shape)
        .map_err(|e| BenchError::Workload(e.to_string()))?;
    let start_ts = Ts(up.cluster.tso().next());
    let cpu0 = metrics::process_cpu();
    let threads0 = metrics::cpu_by_thread();
    let r = simonly::run(
        Arc::clone(&up.pd),
        &up.tidb,
        &tables,
        shape,
        opts.rows,
        start_ts,
        opts.timeout,
    )
    .await?;
    let cpu1 = metrics::process_cpu();
    let threads1 = metrics::cpu_by_thread();
    let peak_rss = metrics::peak_rss_bytes();
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    let decode_floor = if opts.baselines {
        let (s, t, n) = (*shape, tables.clone(), r.write.rows);
        let f = tokio::task::spawn_blocking(move || baseline::decode_floor(&s, &t, n))
            .await
            .map_err(|e| BenchError::Workload(e.to_string()))??;
        Some(DecodeFloorReport {
            rows: f.rows,
            elapsed_s: f.elapsed.as_secs_f64(),
            rows_per_s: per_s(f.rows as f64, f.elapsed),
        })
    } else {
        None
    };
    Ok(BenchReport {
        mode: BenchMode::SimOnly,
        sink: "region-feed".into(),
        workers: 1,
        tables: opts.tables,
        row_width: opts.row_width,
        txn_size: opts.txn_size,
        rate: None,
        min_ts_interval_ms: opts.min_ts_interval.as_millis() as u64,
        rows_written: r.write.rows,
        txns_written: r.write.txns,
        write_elapsed_s: r.write.elapsed.as_secs_f64(),
        write_rows_per_s: per_s(r.write.rows as f64, r.write.elapsed),
        rows: r.rows_received,
        bytes: r.bytes_received,
        raw_bytes: r.bytes_received,
        elapsed_s: r.elapsed.as_secs_f64(),
        rows_per_s: per_s(r.rows_received as f64, r.elapsed),
        mib_per_s: per_s(r.bytes_received as f64 / MIB, r.elapsed),
        raw_mib_per_s: per_s(r.bytes_received as f64 / MIB, r.elapsed),
        rows_per_s_per_worker: per_s(r.rows_received as f64, r.elapsed),
        cpu_s: cpu.as_secs_f64(),
        rows_per_cpu_s: per_s(r.rows_received as f64, cpu),
        latency_p50_ms: None,
        latency_p99_ms: None,
        latency_max_ms: None,
        latency_samples: 0,
        peak_rss_mib: peak_rss.map(|b| b as f64 / MIB),
        cpu_breakdown: with_writer(breakdown(&threads0, &threads1), &r.write),
        decode_floor,
        mysql_baseline: None,
    })
}

impl BenchReport {
    /// The report as a human-readable table.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.1} {unit}"),
            None => "n/a".to_string(),
        };
        let rate = self
            .rate
            .map_or("unlimited".to_string(), |r| format!("{r} rows/s"));
        let _ = writeln!(
            s,
            "tidal bench — mode {}, sink {}",
            self.mode.name(),
            self.sink
        );
        let _ = writeln!(
            s,
            "  shape: {} tables, ~{} B/row, {} rows/txn, write rate {rate}, {} worker(s), \
             resolved-ts interval {} ms",
            self.tables, self.row_width, self.txn_size, self.workers, self.min_ts_interval_ms
        );
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "  {k:<34} {v}");
        };
        row(
            "rows written / txns",
            format!("{} / {}", self.rows_written, self.txns_written),
        );
        row(
            "writer (sim apply, 1 thread)",
            format!(
                "{:.3} s, {:.0} rows/s",
                self.write_elapsed_s, self.write_rows_per_s
            ),
        );
        row("rows delivered", self.rows.to_string());
        row(
            "bytes delivered / upstream (est.)",
            format!(
                "{:.1} MiB / {:.1} MiB",
                self.bytes as f64 / MIB,
                self.raw_bytes as f64 / MIB
            ),
        );
        row("elapsed", format!("{:.3} s", self.elapsed_s));
        row("throughput", format!("{:.0} rows/s", self.rows_per_s));
        row(
            "bandwidth (sink / upstream)",
            format!("{:.2} / {:.2} MiB/s", self.mib_per_s, self.raw_mib_per_s),
        );
        row(
            "rows/s per worker",
            format!("{:.0}", self.rows_per_s_per_worker),
        );
        row(
            "CPU in window / rows per CPU-s",
            format!("{:.2} s / {:.0}", self.cpu_s, self.rows_per_cpu_s),
        );
        row(
            "commit→checkpoint p50 / p99 / max",
            format!(
                "{} / {} / {} ({} txns)",
                opt(self.latency_p50_ms, "ms"),
                opt(self.latency_p99_ms, "ms"),
                opt(self.latency_max_ms, "ms"),
                self.latency_samples
            ),
        );
        row("peak RSS", opt(self.peak_rss_mib, "MiB"));
        if let Some(d) = &self.decode_floor {
            row(
                "baseline: decode floor (1 core)",
                format!(
                    "{:.3} s for {} rows, {:.0} rows/s",
                    d.elapsed_s, d.rows, d.rows_per_s
                ),
            );
        }
        if let Some(m) = &self.mysql_baseline {
            row(
                &format!("baseline: mysql {}", m.method),
                format!(
                    "{:.3} s for {} rows, {:.0} rows/s",
                    m.elapsed_s, m.rows, m.rows_per_s
                ),
            );
            if let Some(n) = &m.note {
                row("  (why not LOAD DATA LOCAL)", n.clone());
            }
        }
        if !self.cpu_breakdown.is_empty() {
            let parts: Vec<String> = self
                .cpu_breakdown
                .iter()
                .take(6)
                .map(|c| format!("{} {:.2}s", c.thread, c.cpu_s))
                .collect();
            row("CPU by thread", parts.join(", "));
        }
        s
    }
}
