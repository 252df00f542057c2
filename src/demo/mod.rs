//! `tidal demo`: the whole system on one machine, with nothing to install.
//!
//! A first-time user should see Tidal replicate and be able to trust what they see. So the demo
//! assembles every real part — the embedded TiKV + PD cluster running a sysbench workload (and,
//! unless disabled, a DDL mix), a Tidal node with its embedded metadata store and HTTP API, and
//! one changefeed (to a local storage directory, or to MySQL/MariaDB) — shows the replication
//! live, and at the end does not merely claim success: it stops the workload, waits (bounded)
//! for the checkpoint to pass the last upstream commit, and compares the downstream with the
//! upstream snapshot at the checkpoint with [`crate::verify`]. The run counts as a success only
//! if every table is equal.

mod summary;
mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tidal_control::meta::ChangefeedRef;
use tidal_control::server::{Server, ServerConfig, ServerError};
use tidal_control::service::{CreateRequest, ServiceError, replica_config_from_api};
use tidal_model::Ts;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::tidb::Tidb;
use tidal_sim::workload::{
    self, DdlMix, DdlMixConfig, RunOptions, Sysbench, SysbenchConfig, WorkloadHandle,
};
use tidal_sinks::uri::{SinkConfig, mask_password, parse_sink_uri};

use crate::verify::{Downstream, VerifyOptions, verify};

pub use summary::{DemoSummary, Mismatch, Progress, VerifyOutcome, thousands};
pub use view::ViewMode;

use view::View;

/// The changefeed the demo creates.
pub const CHANGEFEED_ID: &str = "demo";
/// The sysbench workload's database.
const SYSBENCH_DB: &str = "sbtest";
/// The DDL mix's database (it also uses `<db>_2`).
const DDL_DB: &str = "ddlmix";
/// Refresh interval of the live view and the watermark polling.
const TICK: Duration = Duration::from_millis(250);
/// Window over which the live rates are computed.
const RATE_WINDOW: Duration = Duration::from_secs(2);
/// The API port tried first when no address is given.
const DEFAULT_API_PORT: u16 = 8300;
/// How long, after catching up, the demo waits for `/synced` to say so.
const SYNCED_WAIT: Duration = Duration::from_secs(4);
/// Bound on the final comparison.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(300);

/// Settings of a demo run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// Run the workload this long; `None` = until the stop signal (Ctrl-C).
    pub duration: Option<Duration>,
    /// Sink URI; `None` = a canal-json storage directory under the data directory.
    pub sink: Option<String>,
    /// Dataflow worker threads of the changefeed.
    pub workers: usize,
    /// Sysbench tables.
    pub tables: usize,
    /// Rows loaded per sysbench table before the run.
    pub rows_per_table: u64,
    /// Sysbench transactions per second; `None` = as fast as possible.
    pub rate: Option<u64>,
    /// Seed of the workloads.
    pub seed: u64,
    /// Directory for the metadata store and the default sink; `None` = a temporary directory,
    /// deleted at the end.
    pub data_dir: Option<PathBuf>,
    /// HTTP API address; `None` = `127.0.0.1:8300`, or any free port if that is taken.
    pub api_addr: Option<SocketAddr>,
    /// Run the DDL mix beside sysbench.
    pub ddl: bool,
    /// How long to wait, after the workload stops, for the checkpoint to pass its last commit.
    pub catch_up_timeout: Duration,
    /// How progress is shown.
    pub view: ViewMode,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            duration: None,
            sink: None,
            workers: 2,
            tables: 4,
            rows_per_table: 1000,
            rate: Some(500),
            seed: 1,
            data_dir: None,
            api_addr: None,
            ddl: true,
            catch_up_timeout: Duration::from_secs(60),
            view: ViewMode::Auto,
        }
    }
}

/// Why the demo could not run to its verdict (a verification that finds differences is not an
/// error: it is reported in [`DemoSummary::verify`]).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The options are unusable.
    #[error("{0}")]
    Options(String),
    /// A local directory could not be prepared.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The embedded cluster or its TiDB stand-in did not start.
    #[error("embedded cluster: {0}")]
    Cluster(String),
    /// The Tidal node did not start.
    #[error("tidal server: {0}")]
    Server(#[from] ServerError),
    /// The changefeed could not be created.
    #[error("changefeed: {0}")]
    Changefeed(#[from] ServiceError),
}

/// Runs the demo until `opts.duration` or Ctrl-C; see the module docs.
pub async fn run_demo(opts: DemoOptions) -> Result<DemoSummary, DemoError> {
    run_demo_until(opts, async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handling: rely on the duration alone.
            std::future::pending::<()>().await;
        }
    })
    .await
}

/// Like [`run_demo`], but the workload stops when `stop` completes (or at `opts.duration`).
pub async fn run_demo_until(
    opts: DemoOptions,
    stop: impl Future<Output = ()>,
) -> Result<DemoSummary, DemoError> {
    if opts.tables == 0 {
        return Err(DemoError::Options("--tables must be at least 1".into()));
    }
    if opts.workers == 0 {
        return Err(DemoError::Options("--workers must be at least 1".into()));
    }
    let mut view = View::new(opts.view);

    // Local state: a temporary directory unless one is given.
    let (_temp, data_dir) = match &opts.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|source| DemoError::Io {
                what: format!("creating {}", d.display()),
                source,
            })?;
            (None, absolute(d)?)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("tidal-demo-")
                .tempdir()
                .map_err(|source| DemoError::Io {
                    what: "creating a temporary directory".into(),
                    source,
                })?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let sink_uri = match &opts.sink {
        Some(s) => s.clone(),
        None => default_sink_uri(&data_dir.join("sink")),
    };
    let downstream = downstream_of(&sink_uri)?;

    // Upstream.
    let sim_cfg = SimConfig::with_min_ts_interval(Duration::from_millis(200));
    let cluster = SimCluster::start(sim_cfg)
        .await
        .map_err(|e| DemoError::Cluster(e.to_string()))?;
    let pd = cluster.pd_endpoints();
    let (store, tso, regions) = (
        cluster.store().clone(),
        cluster.tso().clone(),
        cluster.regions().clone(),
    );
    let tidb = tokio::task::spawn_blocking(move || Tidb::new(store, tso, regions))
        .await
        .map_err(|e| DemoError::Cluster(format!("TiDB stand-in task: {e}")))?
        .map_err(|e| DemoError::Cluster(format!("TiDB stand-in: {e}")))?;

    // The Tidal node.
    let server = start_server(&opts, pd.clone(), &data_dir).await?;
    let base = server.base_url();
    view.println(&format!(
        "tidal demo: embedded TiKV + PD at {}",
        pd.join(",")
    ));
    view.println(&format!("tidal demo: API      {base}/api/v2/changefeeds"));
    view.println(&format!("tidal demo: metrics  {base}/metrics"));
    view.println(&format!(
        "tidal demo: sink     {}",
        mask_password(&sink_uri)
    ));

    // The changefeed, filtered to the workload's databases.
    let mut rules = vec![format!("{SYSBENCH_DB}.*")];
    if opts.ddl {
        rules.push(format!("{DDL_DB}.*"));
        rules.push(format!("{DDL_DB}_2.*"));
    }
    // `/synced` turns true once nothing was written for a second (TiCDC's default is 300 s, far
    // too long to ever show up in a demo).
    let replica_config = replica_config_from_api(Some(json!({
        "filter": {"rules": rules},
        "synced_status": {"synced_check_interval": 1, "checkpoint_interval": 1},
    })))?;
    let service = Arc::clone(server.service());
    service
        .create(CreateRequest {
            keyspace: String::new(),
            id: CHANGEFEED_ID.into(),
            start_ts: 0,
            target_ts: 0,
            sink_uri: sink_uri.clone(),
            replica_config,
        })
        .await?;
    let cf = ChangefeedRef::new(CHANGEFEED_ID)
        .map_err(|e| DemoError::Options(format!("changefeed id: {e}")))?;
    view.println(&format!(
        "tidal demo: changefeed {CHANGEFEED_ID} replicating {}; stop with Ctrl-C{}",
        rules.join(", "),
        opts.duration
            .map(|d| format!(" (or after {:.0}s)", d.as_secs_f64()))
            .unwrap_or_default()
    ));

    // The workload.
    let mut handles: Vec<WorkloadHandle> = vec![workload::spawn(
        Box::new(Sysbench::new(SysbenchConfig {
            seed: opts.seed,
            db: SYSBENCH_DB.into(),
            tables: opts.tables,
            rows_per_table: opts.rows_per_table,
            ..SysbenchConfig::default()
        })),
        tidb.clone(),
        RunOptions::forever().rate(opts.rate),
    )];
    if opts.ddl {
        handles.push(workload::spawn(
            Box::new(DdlMix::new(DdlMixConfig {
                seed: opts.seed.wrapping_add(1),
                db: DDL_DB.into(),
                ..DdlMixConfig::default()
            })),
            tidb.clone(),
            RunOptions::forever().rate(Some(5)),
        ));
    }

    let mut probe = Probe::new(&server, cf.clone());
    let started = Instant::now();
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(TICK);
    tokio::pin!(stop);
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => {
                view.println("tidal demo: stopping the workload");
                break;
            }
            _ = until_deadline => break,
            _ = tick.tick() => {
                let p = probe.sample(&handles, started.elapsed(), "replicating").await;
                view.update(&p, false);
                if handles.iter().any(WorkloadHandle::is_finished) {
                    view.println("tidal demo: a workload stopped early");
                    break;
                }
            }
        }
    }
    let workload_time = started.elapsed();

    // Stop the workload and learn its last commit.
    for h in &handles {
        h.stop();
    }
    let mut upstream = workload::WorkloadStats::default();
    let mut workload_errors = Vec::new();
    for h in handles {
        let name = h.name();
        let progress = h.progress();
        match h.join().await {
            Ok(s) => add_stats(&mut upstream, &s),
            Err(e) => {
                add_stats(&mut upstream, &progress);
                workload_errors.push(format!("{name}: {e}"));
            }
        }
    }
    let last_commit_ts = upstream.last_commit_ts;

    // Wait (bounded) for the checkpoint to pass it.
    let catch_up_started = Instant::now();
    let mut caught_up = false;
    probe.sample(&[], started.elapsed(), "catching up").await;
    let catch_deadline = catch_up_started + opts.catch_up_timeout;
    loop {
        // The changefeed's checkpoint means "durably in the sink"; a storage directory's own
        // `metadata` checkpoint, when the sink writes one, only bounds the verification ts.
        if probe.checkpoint_ts >= last_commit_ts {
            caught_up = true;
            break;
        }
        if probe.state == "failed" {
            view.println("tidal demo: the changefeed failed; not waiting for it");
            break;
        }
        if Instant::now() >= catch_deadline {
            view.println(&format!(
                "tidal demo: the checkpoint did not reach the last upstream commit within {:.0}s",
                opts.catch_up_timeout.as_secs_f64()
            ));
            break;
        }
        tokio::time::sleep(TICK).await;
        let mut p = probe.sample(&[], started.elapsed(), "catching up").await;
        p.upstream_rows = upstream.rows;
        p.upstream_ddls = upstream.ddls;
        view.update(&p, false);
    }
    let catch_up_time = catch_up_started.elapsed();
    let mut last = probe.sample(&[], started.elapsed(), "verifying").await;
    // Give `/synced` (bounded) time to see the quiet upstream, so the summary shows its verdict.
    let synced_deadline = Instant::now() + SYNCED_WAIT;
    while caught_up && last.synced == Some(false) && Instant::now() < synced_deadline {
        tokio::time::sleep(TICK).await;
        last = probe.sample(&[], started.elapsed(), "verifying").await;
    }
    last.upstream_rows = upstream.rows;
    last.upstream_ddls = upstream.ddls;
    view.update(&last, true);
    view.finish();

    // Verify at the checkpoint (for a storage sink: at most its directory's checkpoint).
    let mut ts = probe.checkpoint_ts;
    if let Downstream::Storage { dir, .. } = &downstream
        && let Some(c) = storage_checkpoint(dir)
    {
        ts = ts.min(c);
    }
    let outcome = run_verify(pd.clone(), downstream, rules, ts).await;

    let summary = DemoSummary {
        workload_time,
        catch_up_time,
        caught_up,
        upstream_rows: upstream.rows,
        upstream_txns: upstream.txns,
        upstream_ddls: upstream.ddls,
        replicated_rows: last.replicated_rows,
        replicated_ddls: last.replicated_ddls,
        last_commit_ts,
        checkpoint_ts: probe.checkpoint_ts,
        resolved_lag: last.resolved_lag,
        checkpoint_lag: last.checkpoint_lag,
        synced: last.synced,
        changefeed_state: last.state.clone(),
        changefeed_error: probe.last_error.clone(),
        workload_errors,
        sink: mask_password(&sink_uri),
        verify: outcome,
    };

    drop(tidb);
    server.shutdown().await;
    cluster.shutdown().await;
    Ok(summary)
}

fn add_stats(total: &mut workload::WorkloadStats, s: &workload::WorkloadStats) {
    total.txns = total.txns.saturating_add(s.txns);
    total.rows = total.rows.saturating_add(s.rows);
    total.ddls = total.ddls.saturating_add(s.ddls);
    total.retries = total.retries.saturating_add(s.retries);
    total.last_commit_ts = total.last_commit_ts.max(s.last_commit_ts);
}

fn absolute(p: &Path) -> Result<PathBuf, DemoError> {
    std::path::absolute(p).map_err(|source| DemoError::Io {
        what: format!("resolving {}", p.display()),
        source,
    })
}

/// The default sink: canal-json files (with TiDB's extension, so commit ts are kept) under `dir`.
pub fn default_sink_uri(dir: &Path) -> String {
    format!(
        "file://{}?protocol=canal-json&enable-tidb-extension=true&flush-interval=200ms",
        dir.display()
    )
}

/// What [`crate::verify`] compares against for a sink URI.
pub fn downstream_of(sink_uri: &str) -> Result<Downstream, DemoError> {
    let cfg = parse_sink_uri(sink_uri)
        .map_err(|e| DemoError::Options(format!("--sink {}: {e}", mask_password(sink_uri))))?;
    match cfg {
        SinkConfig::MySql(_) => Ok(Downstream::MySql(sink_uri.to_string())),
        SinkConfig::Storage(s) => Ok(Downstream::Storage {
            dir: s.root,
            protocol: s.encoder.protocol,
        }),
        SinkConfig::Blackhole(_) => Err(DemoError::Options(
            "--sink blackhole:// keeps nothing to verify; use file:// or mysql://".into(),
        )),
    }
}

/// The `checkpoint-ts` of a storage sink's root `metadata` file, if written yet.
fn storage_checkpoint(dir: &Path) -> Option<u64> {
    let text = std::fs::read(dir.join("metadata")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v.get("checkpoint-ts")?.as_u64()
}

async fn start_server(
    opts: &DemoOptions,
    pd: Vec<String>,
    data_dir: &Path,
) -> Result<Server, DemoError> {
    let cfg = |addr: SocketAddr| ServerConfig {
        pd: pd.clone(),
        addr,
        data_dir: data_dir.to_path_buf(),
        workers: opts.workers,
        checkpoint_interval: Duration::from_millis(200),
        gc_tick: Duration::from_secs(10),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(10),
        metrics_interval: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    match opts.api_addr {
        Some(addr) => Ok(Server::start(cfg(addr)).await?),
        None => {
            let preferred = SocketAddr::from(([127, 0, 0, 1], DEFAULT_API_PORT));
            match Server::start(cfg(preferred)).await {
                Ok(s) => Ok(s),
                Err(ServerError::Bind { .. }) => {
                    Ok(Server::start(cfg(SocketAddr::from(([127, 0, 0, 1], 0)))).await?)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

async fn run_verify(
    pd: Vec<String>,
    downstream: Downstream,
    filter: Vec<String>,
    ts: u64,
) -> VerifyOutcome {
    let opts = VerifyOptions {
        pd,
        ts: Some(Ts(ts)),
        downstream,
        filter,
        max_row_diffs_per_table: 5,
    };
    match tokio::time::timeout(VERIFY_TIMEOUT, verify(opts)).await {
        Err(_) => VerifyOutcome {
            ts,
            error: Some(format!(
                "no answer within {:.0}s",
                VERIFY_TIMEOUT.as_secs_f64()
            )),
            ..VerifyOutcome::default()
        },
        Ok(Err(e)) => VerifyOutcome {
            ts,
            error: Some(e.to_string()),
            ..VerifyOutcome::default()
        },
        Ok(Ok(report)) => VerifyOutcome {
            ts: report.ts.0,
            tables: report.tables.len(),
            mismatches: report
                .tables
                .iter()
                .filter(|t| !t.equal)
                .map(|t| Mismatch {
                    table: format!("{}.{}", t.db, t.table),
                    upstream_rows: t.upstream_rows,
                    downstream_rows: t.downstream_rows,
                    diff_count: t.diff_count,
                    note: t.note.clone(),
                })
                .collect(),
            error: None,
        },
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How far `ts` is behind the wall clock (`None` for 0: nothing known yet).
fn lag_of(ts: u64, now_ms: u64) -> Option<Duration> {
    (ts != 0).then(|| Duration::from_millis(now_ms.saturating_sub(Ts(ts).physical_ms())))
}

/// Reads the changefeed's progress and keeps the recent history the rates are computed from.
struct Probe<'a> {
    server: &'a Server,
    cf: ChangefeedRef,
    /// (when, upstream rows, replicated rows), oldest first, covering about [`RATE_WINDOW`].
    history: std::collections::VecDeque<(Instant, u64, u64)>,
    /// Rows flushed by earlier runs of the dataflow (its counters restart with each run).
    flushed_base: u64,
    ddl_base: u64,
    last_flushed: u64,
    last_ddl: u64,
    /// The highest checkpoint seen.
    checkpoint_ts: u64,
    /// The changefeed's last reported error or warning.
    last_error: Option<String>,
    /// The changefeed's last known state.
    state: String,
}

impl<'a> Probe<'a> {
    fn new(server: &'a Server, cf: ChangefeedRef) -> Self {
        Probe {
            server,
            cf,
            history: std::collections::VecDeque::new(),
            flushed_base: 0,
            ddl_base: 0,
            last_flushed: 0,
            last_ddl: 0,
            checkpoint_ts: 0,
            last_error: None,
            state: "unknown".into(),
        }
    }

    async fn sample(
        &mut self,
        handles: &[WorkloadHandle],
        elapsed: Duration,
        phase: &str,
    ) -> Progress {
        let (mut up_rows, mut up_ddls) = (0u64, 0u64);
        for h in handles {
            let p = h.progress();
            up_rows = up_rows.saturating_add(p.rows);
            up_ddls = up_ddls.saturating_add(p.ddls);
        }
        if let Some(stats) = self
            .server
            .coordinator()
            .registry()
            .with_handle(&self.cf.id, |h| h.stats())
        {
            if stats.rows_flushed < self.last_flushed || stats.ddl_executed < self.last_ddl {
                // A new run of the dataflow: its counters started again from zero.
                self.flushed_base = self.flushed_base.saturating_add(self.last_flushed);
                self.ddl_base = self.ddl_base.saturating_add(self.last_ddl);
            }
            self.last_flushed = stats.rows_flushed;
            self.last_ddl = stats.ddl_executed;
        }
        let replicated = self.flushed_base.saturating_add(self.last_flushed);
        let service = self.server.service();
        let mut resolved = 0u64;
        if let Ok(v) = service.get(&self.cf).await {
            self.state = v.info.state.as_str().to_string();
            if let Some(e) = v.info.error.as_ref().or(v.info.warning.as_ref()) {
                self.last_error = Some(format!("{}: {}", e.code, e.message));
            }
            self.checkpoint_ts = self.checkpoint_ts.max(v.checkpoint_ts());
            resolved = v.resolved_ts();
        }
        let synced = service.synced(&self.cf).await.ok().map(|s| s.synced);
        let now = Instant::now();
        self.history.push_back((now, up_rows, replicated));
        while self
            .history
            .get(1)
            .is_some_and(|(t, _, _)| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.history.pop_front();
        }
        let (upstream_rate, replicated_rate) = match self.history.front() {
            Some((t, u, r)) if now.duration_since(*t) > Duration::from_millis(100) => {
                let secs = now.duration_since(*t).as_secs_f64();
                (
                    up_rows.saturating_sub(*u) as f64 / secs,
                    replicated.saturating_sub(*r) as f64 / secs,
                )
            }
            _ => (0.0, 0.0),
        };
        let now_ms = now_ms();
        Progress {
            phase: phase.to_string(),
            elapsed,
            upstream_rows: up_rows,
            upstream_rate,
            upstream_ddls: up_ddls,
            replicated_rows: replicated,
            replicated_rate,
            replicated_ddls: self.ddl_base.saturating_add(self.last_ddl),
            resolved_lag: lag_of(resolved, now_ms),
            checkpoint_lag: lag_of(self.checkpoint_ts, now_ms),
            synced,
            state: self.state.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_sinks::encode::Protocol;

    #[test]
    fn sink_uris_map_to_downstreams() {
        let uri = default_sink_uri(Path::new("/tmp/x/sink"));
        assert_eq!(
            uri,
            "file:///tmp/x/sink?protocol=canal-json&enable-tidb-extension=true&flush-interval=200ms"
        );
        assert_eq!(
            downstream_of(&uri).expect("storage"),
            Downstream::Storage {
                dir: PathBuf::from("/tmp/x/sink"),
                protocol: Protocol::CanalJson
            }
        );
        let my = "mysql://root:pw@127.0.0.1:3306/";
        assert_eq!(
            downstream_of(my).expect("mysql"),
            Downstream::MySql(my.to_string())
        );
        assert!(matches!(
            downstream_of("blackhole://"),
            Err(DemoError::Options(_))
        ));
        assert!(matches!(
            downstream_of("kafka://x/topic"),
            Err(DemoError::Options(_))
        ));
    }

    #[test]
    fn lags() {
        let ts = Ts::from_unix_millis(10_000).0;
        assert_eq!(lag_of(ts, 10_250), Some(Duration::from_millis(250)));
        assert_eq!(lag_of(ts, 9_000), Some(Duration::ZERO));
        assert_eq!(lag_of(0, 9_000), None);
    }

    #[test]
    fn storage_checkpoint_reads_metadata() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(storage_checkpoint(dir.path()), None);
        std::fs::write(dir.path().join("metadata"), br#"{"checkpoint-ts":4242}"#).expect("write");
        assert_eq!(storage_checkpoint(dir.path()), Some(4242));
        std::fs::write(dir.path().join("metadata"), b"garbage").expect("write");
        assert_eq!(storage_checkpoint(dir.path()), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zero_tables_is_refused() {
        let r = run_demo_until(
            DemoOptions {
                tables: 0,
                ..DemoOptions::default()
            },
            async {},
        )
        .await;
        assert!(matches!(r, Err(DemoError::Options(m)) if m.contains("--tables")));
    }
}
