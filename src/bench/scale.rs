//! `tidal bench --scale-tables N`: many tables in ONE changefeed, and what an idle span costs.
//!
//! Why it exists: a changefeed's fixed cost per table (span bookkeeping, a subscription per
//! region, a resolved ts per region per interval, schema entries) is invisible with four busy
//! tables and dominant with 100 000 idle ones. This run creates `N` small tables (the shape of
//! the sim's `ManyTables` workload: `(id INT PRIMARY KEY, v INT)`, created in batches, one
//! `create tables` job per batch, optionally one region per table), starts one changefeed over
//! all of them into the blackhole sink, waits until every span is initialized and the
//! checkpoint has moved past the start, lets it idle, and reports
//!
//! - tables, regions, spans; time to create the tables; time until the checkpoint passed the
//!   creation ts;
//! - process RSS (`VmRSS`) before the changefeed and after the idle window, and the difference
//!   per idle span;
//! - checkpoint lag while idle (p50/p99 of samples) and CPU seconds per second while idle;
//! - commit → checkpoint latency of a few single-row transactions into random tables.
//!
//! The embedded cluster lives in this process. Its per-table and per-region storage exists
//! before the "before" reading (the tables are created first), but the state its CDC service
//! keeps per subscribed region is allocated by the changefeed's subscriptions and so counts in
//! "after": the per-span figure is an upper bound on the changefeed's own cost, and the report
//! says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tidal_dataflow::{ChangefeedHandle, ChangefeedSpec, RunConfig, start_changefeed};
use tidal_model::{Datum, Ts};
use tidal_sim::tidb::types::int;
use tidal_sim::tidb::{ColumnSpec, PrimaryKey, TableSpec, Tidb};

use super::{BenchError, BenchOptions, metrics, ms};

/// Database the scale run creates its tables in.
pub const DB: &str = "tidal_scale";
/// Largest `--scale-tables`.
pub const MAX_TABLES: usize = 2_000_000;

/// What a scale run does.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Tables to create (one span each).
    pub tables: usize,
    /// Tables per `create tables` job.
    pub batch: usize,
    /// Split one region per table (multiplies the regions, as TiDB's default does).
    pub split_regions: bool,
    /// Timely workers of the changefeed.
    pub workers: usize,
    /// How long the changefeed idles before the "after" reading.
    pub idle: Duration,
    /// Single-row transactions written after the idle window (latency samples).
    pub writes: usize,
    /// The sim's resolved-ts interval (TiKV's `cdc.min-ts-interval`).
    pub min_ts_interval: Duration,
    /// Give up after this long (each phase).
    pub timeout: Duration,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Default for ScaleOptions {
    fn default() -> Self {
        ScaleOptions {
            tables: 10_000,
            batch: 1_000,
            split_regions: false,
            workers: 1,
            idle: Duration::from_secs(10),
            writes: 50,
            min_ts_interval: Duration::from_millis(200),
            timeout: Duration::from_secs(1800),
            progress: false,
        }
    }
}

impl ScaleOptions {
    /// Checks the options; the error names the flag.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.tables == 0 || self.tables > MAX_TABLES {
            return Err(BenchError::Options(format!(
                "--scale-tables must be 1..={MAX_TABLES}, got {}",
                self.tables
            )));
        }
        if self.batch == 0 || self.batch > 100_000 {
            return Err(BenchError::Options(format!(
                "--scale-batch must be 1..=100000, got {}",
                self.batch
            )));
        }
        if self.workers == 0 || self.workers > 256 {
            return Err(BenchError::Options(format!(
                "--workers must be 1..=256, got {}",
                self.workers
            )));
        }
        if self.idle.is_zero() {
            return Err(BenchError::Options("--idle-secs must be positive".into()));
        }
        if self.writes > 100_000 {
            return Err(BenchError::Options(format!(
                "--scale-writes must be 0..=100000, got {}",
                self.writes
            )));
        }
        Ok(())
    }
}

/// Every figure of one scale run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaleReport {
    /// Tables created.
    pub tables: usize,
    /// Regions in the cluster after the tables were created.
    pub regions: usize,
    /// Whether a region was split per table.
    pub split_regions: bool,
    /// Changefeed workers.
    pub workers: usize,
    /// The sim's resolved-ts interval, ms.
    pub min_ts_interval_ms: u64,
    /// Seconds to create the tables.
    pub create_s: f64,
    /// Spans the changefeed hosts (one per table).
    pub spans: usize,
    /// Spans whose resolved ts moved past the changefeed's start ts.
    pub spans_initialized: usize,
    /// Commit ts of the last `create tables` job.
    pub creation_ts: u64,
    /// The changefeed's start ts (after the creation ts).
    pub start_ts: u64,
    /// Checkpoint when the changefeed was ready.
    pub ready_checkpoint_ts: u64,
    /// Seconds from starting the changefeed until every span was initialized and the
    /// checkpoint passed the start ts (so the creation ts).
    pub ready_s: f64,
    /// Process RSS before the changefeed (tables already created), bytes.
    pub rss_before_bytes: Option<u64>,
    /// Process RSS after the idle window, bytes.
    pub rss_after_bytes: Option<u64>,
    /// `(after − before) / spans`, bytes; includes the sim's CDC state per subscription.
    pub rss_per_span_bytes: Option<f64>,
    /// Seconds of the idle window.
    pub idle_s: f64,
    /// Checkpoint lag samples taken while idle.
    pub idle_lag_samples: usize,
    /// Checkpoint lag while idle, p50, ms (TSO physical time minus the checkpoint's).
    pub idle_lag_p50_ms: Option<f64>,
    /// Checkpoint lag while idle, p99, ms.
    pub idle_lag_p99_ms: Option<f64>,
    /// Process CPU seconds per wall second while idle (sim included).
    pub idle_cpu_per_s: f64,
    /// Single-row transactions written after the idle window.
    pub writes: usize,
    /// Their commit → checkpoint latency p50, ms.
    pub write_latency_p50_ms: Option<f64>,
    /// p99, ms.
    pub write_latency_p99_ms: Option<f64>,
    /// Largest, ms.
    pub write_latency_max_ms: Option<f64>,
    /// Rows the sink received (must equal `writes`).
    pub rows_flushed: u64,
    /// Peak RSS of the run (`VmHWM`), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// What the RSS figures include.
    pub note: String,
}

/// Current resident set size of this process (`VmRSS` of `/proc/self/status`), in bytes.
pub fn current_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// Extracts `VmRSS` (in kB in the file) from the text of `/proc/<pid>/status`, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// `(after − before) / spans`, `None` without both readings or spans. Negative when the
/// process returned memory in between.
pub fn per_span(before: Option<u64>, after: Option<u64>, spans: usize) -> Option<f64> {
    let (b, a) = (before?, after?);
    if spans == 0 {
        return None;
    }
    Some((a as f64 - b as f64) / spans as f64)
}

fn table_spec(i: usize) -> TableSpec {
    TableSpec::new(
        format!("t{i}"),
        vec![
            ColumnSpec::new("id", int()).not_null(),
            ColumnSpec::new("v", int()),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()))
}

fn bar(total: u64, progress: bool, what: &str) -> ProgressBar {
    let pb = if progress {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} ({elapsed}, eta {eta})")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Creates `n` tables in batches; returns their ids and the last job's commit ts.
fn create_tables(tidb: &Tidb, opts: &ScaleOptions) -> Result<(Vec<i64>, u64), BenchError> {
    let werr = |e: tidal_sim::tidb::TidbError| BenchError::Workload(e.to_string());
    if !tidb.has_database(DB) {
        tidb.create_database(DB).map_err(werr)?;
    }
    let pb = bar(opts.tables as u64, opts.progress, "create tables");
    let mut ids = Vec::with_capacity(opts.tables);
    let mut last_ts = 0;
    let mut i = 1;
    while i <= opts.tables {
        let end = (i + opts.batch).min(opts.tables + 1);
        let specs: Vec<TableSpec> = (i..end).map(table_spec).collect();
        let out = tidb
            .create_tables(DB, &specs, opts.split_regions)
            .map_err(werr)?;
        ids.extend_from_slice(&out.table_ids);
        last_ts = out.commit_ts;
        pb.inc((end - i) as u64);
        i = end;
    }
    pb.finish_and_clear();
    Ok((ids, last_ts))
}

/// The physical (millisecond) part of a TSO timestamp.
fn physical_ms(ts: u64) -> u64 {
    ts >> 18
}

fn changefeed_failed(handle: &ChangefeedHandle) -> Result<(), BenchError> {
    match handle.error() {
        Some(e) => Err(BenchError::Changefeed(e.to_string())),
        None => Ok(()),
    }
}

/// Waits until every span's resolved ts passed `start` and the checkpoint did too.
async fn wait_ready(
    handle: &ChangefeedHandle,
    tables: usize,
    start: Ts,
    opts: &ScaleOptions,
) -> Result<(usize, usize, Ts), BenchError> {
    let pb = bar(tables as u64, opts.progress, "init spans");
    let deadline = Instant::now() + opts.timeout;
    loop {
        changefeed_failed(handle)?;
        let spans = handle.spans();
        let init = spans.iter().filter(|s| s.resolved_ts > start).count();
        pb.set_position(init as u64);
        let cp = handle.checkpoint_ts();
        if spans.len() >= tables && init == spans.len() && cp > start {
            pb.finish_and_clear();
            return Ok((spans.len(), init, cp));
        }
        if Instant::now() > deadline {
            pb.finish_and_clear();
            return Err(BenchError::Timeout(format!(
                "{init} of {} spans ({tables} tables) initialized, checkpoint {cp} vs start \
                 {start}, after {:?}",
                spans.len(),
                opts.timeout
            )));
        }
        // Reading every span's progress clones it: poll less often with many spans.
        let pause =
            Duration::from_micros(10).saturating_mul(u32::try_from(tables).unwrap_or(u32::MAX));
        tokio::time::sleep(pause.max(Duration::from_millis(100))).await;
    }
}

/// Runs the scale benchmark. `base` supplies nothing but defaults shared with the other modes
/// (currently unused beyond validation of the common flags).
pub async fn run_scale(opts: ScaleOptions) -> Result<ScaleReport, BenchError> {
    opts.validate()?;
    let up = super::upstream(&BenchOptions {
        min_ts_interval: opts.min_ts_interval,
        ..BenchOptions::default()
    })
    .await?;

    // Tables first: the sim's storage of them belongs to the baseline.
    let t_create = Instant::now();
    let tidb = up.tidb.clone();
    let o = opts.clone();
    let (ids, creation_ts) = tokio::task::spawn_blocking(move || create_tables(&tidb, &o))
        .await
        .map_err(|e| BenchError::Workload(e.to_string()))??;
    let create = t_create.elapsed();
    let regions = up.cluster.regions().len();
    tracing::info!(
        tables = ids.len(),
        regions,
        ?create,
        "scale: tables created"
    );

    let start_ts = Ts(up.cluster.tso().next());
    let sink = tidal_sinks::open::open_sink("blackhole://", "tidal-bench-scale")
        .await
        .map_err(|e| BenchError::Sink(e.to_string()))?;
    let rss_before = current_rss_bytes();

    let t_start = Instant::now();
    let spec = ChangefeedSpec::new(
        "tidal-bench-scale",
        Arc::clone(&up.pd),
        start_ts,
        Arc::clone(&sink),
    );
    let handle = tokio::time::timeout(
        opts.timeout,
        start_changefeed(spec, RunConfig::process(opts.workers)),
    )
    .await
    .map_err(|_| BenchError::Changefeed("start timed out".into()))?
    .map_err(|e| BenchError::Changefeed(e.to_string()))?;
    let outcome = measure(&up, &handle, &opts, &ids, start_ts, t_start).await;
    let rows_flushed = handle.stats().rows_flushed;
    let _ = tokio::task::spawn_blocking(move || handle.stop()).await;
    let _ = sink.close().await;
    let m = outcome?;
    let spans = m.spans;
    Ok(ScaleReport {
        tables: ids.len(),
        regions,
        split_regions: opts.split_regions,
        workers: opts.workers,
        min_ts_interval_ms: opts.min_ts_interval.as_millis() as u64,
        create_s: create.as_secs_f64(),
        spans,
        spans_initialized: m.spans_initialized,
        creation_ts,
        start_ts: start_ts.0,
        ready_checkpoint_ts: m.ready_checkpoint.0,
        ready_s: m.ready.as_secs_f64(),
        rss_before_bytes: rss_before,
        rss_after_bytes: m.rss_after,
        rss_per_span_bytes: per_span(rss_before, m.rss_after, spans),
        idle_s: m.idle.as_secs_f64(),
        idle_lag_samples: m.lags.len(),
        idle_lag_p50_ms: metrics::quantile(&m.lags, 0.5).map(ms),
        idle_lag_p99_ms: metrics::quantile(&m.lags, 0.99).map(ms),
        idle_cpu_per_s: m.idle_cpu.as_secs_f64() / m.idle.as_secs_f64().max(1e-9),
        writes: m.latencies.len(),
        write_latency_p50_ms: metrics::quantile(&m.latencies, 0.5).map(ms),
        write_latency_p99_ms: metrics::quantile(&m.latencies, 0.99).map(ms),
        write_latency_max_ms: m.latencies.last().copied().map(ms),
        rows_flushed,
        peak_rss_bytes: metrics::peak_rss_bytes(),
        note: "the embedded cluster runs in this process: its table and region storage is in \
               the 'before' baseline, but its CDC state per subscribed region is allocated by \
               the changefeed's subscriptions and counts in 'after' (the per-span figure is an \
               upper bound on the changefeed's own cost)"
            .into(),
    })
}

struct Measured {
    spans: usize,
    spans_initialized: usize,
    ready_checkpoint: Ts,
    ready: Duration,
    rss_after: Option<u64>,
    idle: Duration,
    lags: Vec<Duration>,
    idle_cpu: Duration,
    latencies: Vec<Duration>,
}

async fn measure(
    up: &super::Upstream,
    handle: &ChangefeedHandle,
    opts: &ScaleOptions,
    ids: &[i64],
    start_ts: Ts,
    t_start: Instant,
) -> Result<Measured, BenchError> {
    let (spans, spans_initialized, ready_checkpoint) =
        wait_ready(handle, ids.len(), start_ts, opts).await?;
    let ready = t_start.elapsed();
    tracing::info!(spans, ?ready, "scale: changefeed ready");

    // Idle: sample the checkpoint lag against the TSO's physical clock.
    let cpu0 = metrics::process_cpu();
    let t_idle = Instant::now();
    let mut lags = Vec::new();
    while t_idle.elapsed() < opts.idle {
        changefeed_failed(handle)?;
        let now = physical_ms(up.cluster.tso().next());
        let cp = physical_ms(handle.checkpoint_ts().0);
        lags.push(Duration::from_millis(now.saturating_sub(cp)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle = t_idle.elapsed();
    let cpu1 = metrics::process_cpu();
    let rss_after = current_rss_bytes();
    lags.sort();
    let idle_cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };

    // Single-row transactions into random tables, one at a time.
    let mut rng = StdRng::seed_from_u64(7);
    let mut latencies = Vec::with_capacity(opts.writes);
    let werr = |e: tidal_sim::tidb::TidbError| BenchError::Workload(e.to_string());
    for n in 0..opts.writes {
        let Some(&id) = ids.get(rng.random_range(0..ids.len())) else {
            break;
        };
        let table = up.tidb.table_by_id(id).map_err(werr)?;
        let mut txn = up.tidb.begin();
        txn.insert(&table, vec![Datum::Int(n as i64 + 1), Datum::Int(n as i64)])
            .map_err(werr)?;
        let info = txn.commit().map_err(werr)?;
        let at = Instant::now();
        let commit_ts = info
            .commit_ts
            .ok_or_else(|| BenchError::Workload("a write rolled back".into()))?;
        let deadline = at + opts.timeout;
        loop {
            changefeed_failed(handle)?;
            if handle.checkpoint_ts().0 >= commit_ts {
                latencies.push(at.elapsed());
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!(
                    "write {n} (commit ts {commit_ts}) not checkpointed after {:?}",
                    opts.timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    latencies.sort();
    // The sink flushes a batch before the checkpoint passes it; give the counter a moment.
    Ok(Measured {
        spans,
        spans_initialized,
        ready_checkpoint,
        ready,
        rss_after,
        idle,
        lags,
        idle_cpu,
        latencies,
    })
}

const MIB: f64 = 1024.0 * 1024.0;

impl ScaleReport {
    /// The report as a human-readable table.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.1} {unit}"),
            None => "n/a".to_string(),
        };
        let mib = |v: Option<u64>| opt(v.map(|b| b as f64 / MIB), "MiB");
        let _ = writeln!(
            s,
            "tidal bench --scale-tables {} — one changefeed, blackhole sink",
            self.tables
        );
        let _ = writeln!(
            s,
            "  shape: {} tables, {} regions{}, {} worker(s), resolved-ts interval {} ms",
            self.tables,
            self.regions,
            if self.split_regions {
                " (one per table)"
            } else {
                ""
            },
            self.workers,
            self.min_ts_interval_ms
        );
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "  {k:<36} {v}");
        };
        row("create tables", format!("{:.2} s", self.create_s));
        row(
            "spans initialized / hosted",
            format!("{} / {}", self.spans_initialized, self.spans),
        );
        row(
            "checkpoint passed creation after",
            format!("{:.2} s", self.ready_s),
        );
        row(
            "RSS before / after changefeed",
            format!(
                "{} / {}",
                mib(self.rss_before_bytes),
                mib(self.rss_after_bytes)
            ),
        );
        row("RSS per idle span", opt(self.rss_per_span_bytes, "bytes"));
        row(
            "checkpoint lag idle p50 / p99",
            format!(
                "{} / {} ({} samples over {:.1} s)",
                opt(self.idle_lag_p50_ms, "ms"),
                opt(self.idle_lag_p99_ms, "ms"),
                self.idle_lag_samples,
                self.idle_s
            ),
        );
        row(
            "CPU while idle",
            format!("{:.3} CPU-s per s", self.idle_cpu_per_s),
        );
        row(
            "1-row txn commit→checkpoint p50/p99/max",
            format!(
                "{} / {} / {} ({} txns)",
                opt(self.write_latency_p50_ms, "ms"),
                opt(self.write_latency_p99_ms, "ms"),
                opt(self.write_latency_max_ms, "ms"),
                self.writes
            ),
        );
        row("peak RSS", mib(self.peak_rss_bytes));
        let _ = writeln!(s, "  note: {}", self.note);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_parsed_in_bytes() {
        let status = "Name:\ttidal\nVmHWM:\t  2048 kB\nVmRSS:\t  1536 kB\nThreads: 4\n";
        assert_eq!(parse_vm_rss(status), Some(1536 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: lots kB\n"), None);
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn per_span_divides_the_difference() {
        assert_eq!(per_span(Some(1000), Some(3000), 4), Some(500.0));
        assert_eq!(per_span(Some(3000), Some(1000), 4), Some(-500.0));
        assert_eq!(per_span(None, Some(1), 1), None);
        assert_eq!(per_span(Some(1), Some(2), 0), None);
    }

    #[test]
    fn validation_names_the_flag() {
        let ok = ScaleOptions::default();
        assert!(ok.validate().is_ok());
        let bad = |o: ScaleOptions| o.validate().unwrap_err().to_string();
        assert_eq!(
            bad(ScaleOptions {
                tables: 0,
                ..ok.clone()
            }),
            "invalid options: --scale-tables must be 1..=2000000, got 0"
        );
        assert_eq!(
            bad(ScaleOptions {
                workers: 0,
                ..ok.clone()
            }),
            "invalid options: --workers must be 1..=256, got 0"
        );
        assert_eq!(
            bad(ScaleOptions {
                batch: 0,
                ..ok.clone()
            }),
            "invalid options: --scale-batch must be 1..=100000, got 0"
        );
        assert_eq!(
            bad(ScaleOptions {
                idle: Duration::ZERO,
                ..ok
            }),
            "invalid options: --idle-secs must be positive"
        );
    }
}
