//! Shared machinery of the fault suite: the upstream (an embedded TiKV+PD cluster running a bank
//! and a sysbench workload), Tidal nodes (in process or as a child `tidal server`), the HTTP API
//! client, the watermark sampler, private etcd and MariaDB instances that a test may kill, and
//! the common ending of every test: stop the load, wait for the checkpoint to pass the last
//! upstream commit, compare the downstream with the upstream at the checkpoint row by row, check
//! the bank total and the sampled watermarks.
//!
//! Every child process is owned by a guard that kills it (SIGKILL) and reaps it on drop, so a
//! failing test leaves nothing running. Every test uses fresh upstream database names (which are
//! also the downstream names) and a fresh changefeed / cluster id, so tests sharing the CI's
//! etcd and MariaDB never see each other's data.

use crate::support::set_up;
pub use crate::support::{free_port, run_tag, within};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, MySqlPool};
use tidal::verify::{Downstream, VerifyOptions, VerifyReport, verify};
use tidal_control::server::{Server, ServerConfig};
use tidal_model::Ts;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::tidb::Tidb;
use tidal_sim::workload::{
    Bank, BankConfig, RunOptions, Sysbench, SysbenchConfig, WorkloadHandle, spawn,
};

/// How long the changefeed may take to pass the last upstream commit once the load stopped.
pub const CATCH_UP: Duration = Duration::from_secs(40);
/// How long the sampler waits between two reads of the changefeed.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Whether a program is on the PATH. In CI a missing program is a failure (the services script
/// installs it); elsewhere the test is skipped with a note.
pub fn have_program(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{name} is not installed: CI must install it (scripts/services.sh install)");
        }
        eprintln!("skipping: {name} is not installed (scripts/services.sh install)");
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Upstream

/// The embedded cluster, its TiDB layer, and the two workloads' tables (created, loaded).
pub struct Upstream {
    /// The cluster.
    pub cluster: SimCluster,
    /// Its TiDB layer.
    pub tidb: Tidb,
    /// The bank's parameters.
    pub bank: BankConfig,
    /// The sysbench parameters.
    pub sysbench: SysbenchConfig,
    /// A ts taken before any of the test's tables existed: the changefeed starts here and
    /// replicates their creation.
    pub start_ts: u64,
    bank_opts: Option<(Bank, RunOptions)>,
    sysbench_opts: Option<(Sysbench, RunOptions)>,
}

/// Rate of bank transfers while the load runs, per second.
pub const BANK_RATE: u64 = 80;
/// Rate of sysbench transactions while the load runs, per second.
pub const SYSBENCH_RATE: u64 = 80;

impl Upstream {
    /// Starts a 3-store cluster that advances resolved ts every 100 ms, and creates the bank
    /// (2 tables × 50 accounts) and sysbench (2 tables × 200 rows) tables in databases named
    /// after `tag`.
    pub async fn start(tag: &str) -> Upstream {
        let cfg = SimConfig::with_min_ts_interval(Duration::from_millis(100));
        let cluster = within("sim start", 30, SimCluster::start(cfg))
            .await
            .expect("sim cluster starts");
        let tidb = cluster.tidb().expect("tidb layer");
        let start_ts = cluster.tso().next();
        let bank = BankConfig {
            seed: 7,
            db: format!("fault_bank_{tag}"),
            tables: 2,
            accounts_per_table: 50,
            initial_balance: 1000,
            max_transfer: 100,
        };
        let sysbench = SysbenchConfig {
            seed: 11,
            db: format!("fault_sb_{tag}"),
            tables: 2,
            rows_per_table: 200,
            row_width: 120,
            batch: 4,
            ..SysbenchConfig::default()
        };
        let mut b = Bank::new(bank.clone());
        let mut s = Sysbench::new(sysbench.clone());
        let bank_opts = set_up(&mut b, &tidb, BANK_RATE);
        let sb_opts = set_up(&mut s, &tidb, SYSBENCH_RATE);
        Upstream {
            cluster,
            tidb,
            bank,
            sysbench,
            start_ts,
            bank_opts: Some((b, bank_opts)),
            sysbench_opts: Some((s, sb_opts)),
        }
    }

    /// The databases the test replicates.
    pub fn dbs(&self) -> Vec<String> {
        vec![self.bank.db.clone(), self.sysbench.db.clone()]
    }

    /// Table filter rules covering exactly those databases.
    pub fn filter_rules(&self) -> Vec<String> {
        self.dbs().iter().map(|db| format!("{db}.*")).collect()
    }

    /// The bank total every consistent snapshot must show.
    pub fn expected_total(&self) -> i64 {
        Bank::new(self.bank.clone()).expected_total()
    }

    /// A fresh ts from the cluster's oracle.
    pub fn now_ts(&self) -> u64 {
        self.cluster.tso().next()
    }

    /// Starts both workloads (once).
    pub fn start_load(&mut self) -> Load {
        let (b, bo) = self.bank_opts.take().expect("load started once");
        let (s, so) = self.sysbench_opts.take().expect("load started once");
        Load {
            handles: vec![
                spawn(Box::new(b), self.tidb.clone(), bo),
                spawn(Box::new(s), self.tidb.clone(), so),
            ],
        }
    }

    /// The table id of a bank table.
    pub fn bank_table_id(&self, name: &str) -> i64 {
        self.tidb
            .table(&self.bank.db, name)
            .expect("bank table")
            .id()
    }
}

/// The running workloads.
pub struct Load {
    handles: Vec<WorkloadHandle>,
}

/// What the load did.
#[derive(Debug, Clone, Copy)]
pub struct LoadStats {
    /// Committed transactions of both workloads.
    pub txns: u64,
    /// Retried steps.
    pub retries: u64,
    /// The largest commit ts of either.
    pub last_commit_ts: u64,
}

impl Load {
    /// Stops both workloads and returns what they did (a workload error fails the test).
    pub async fn stop(self) -> LoadStats {
        for h in &self.handles {
            h.stop();
        }
        let mut stats = LoadStats {
            txns: 0,
            retries: 0,
            last_commit_ts: 0,
        };
        for h in self.handles {
            let name = h.name();
            let s = within("workload stop", 30, h.join())
                .await
                .unwrap_or_else(|e| panic!("workload {name} failed: {e}"));
            stats.txns += s.txns;
            stats.retries += s.retries;
            stats.last_commit_ts = stats.last_commit_ts.max(s.last_commit_ts);
        }
        stats
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process killed (SIGKILL) and reaped on drop.
pub struct ChildGuard {
    what: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed.
    pub fn spawn(what: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        ChildGuard {
            what: what.to_owned(),
            child: Some(child),
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Fails the test if the process already exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("{} exited early: {status}", self.what);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("log file")
}

/// The last lines of a log file, for failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A private etcd on free ports with its own data directory, which the test may kill and
/// restart on the same data.
pub struct PrivateEtcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    proc: Option<ChildGuard>,
}

impl PrivateEtcd {
    /// Starts it and waits until it is healthy.
    pub async fn start() -> PrivateEtcd {
        let mut e = PrivateEtcd {
            dir: tempfile::tempdir().expect("etcd dir"),
            client_port: free_port(),
            peer_port: free_port(),
            proc: None,
        };
        e.launch().await;
        e
    }

    /// `127.0.0.1:port` of the client URL.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    async fn launch(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = log_file(self.dir.path(), "etcd.log");
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "fault"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("fault={peer}")])
            .args(["--logger=zap", "--log-outputs=stderr", "--log-level=warn"])
            .stdout(Stdio::null())
            .stderr(log);
        self.proc = Some(ChildGuard::spawn("etcd", &mut cmd));
        let endpoint = self.endpoint();
        let log_path = self.dir.path().join("etcd.log");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !etcd_healthy(&endpoint) {
            if let Some(p) = self.proc.as_mut() {
                p.assert_running();
            }
            assert!(
                Instant::now() < deadline,
                "private etcd not healthy in 20 s:\n{}",
                tail(&log_path, 20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills it with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Starts it again on the same data directory and waits until it is healthy.
    pub async fn restart(&mut self) {
        self.kill9();
        self.launch().await;
    }
}

fn etcd_healthy(endpoint: &str) -> bool {
    let Ok(addr) = endpoint.parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.contains("\"health\":\"true\"")
}

/// A private MariaDB (own data directory, socket and free TCP port) that the test may kill -9
/// and restart; Tidal reaches it over TCP as a user with a password.
pub struct PrivateMariaDb {
    dir: tempfile::TempDir,
    port: u16,
    proc: Option<ChildGuard>,
}

/// The private MariaDB's user (its password is [`MARIADB_PASSWORD`]).
pub const MARIADB_USER: &str = "faults";
/// The private MariaDB user's password.
pub const MARIADB_PASSWORD: &str = "f4ult-pw";

impl PrivateMariaDb {
    /// Installs the system tables, starts the server, creates the user.
    pub async fn start() -> PrivateMariaDb {
        let dir = tempfile::tempdir().expect("mariadb dir");
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root"])
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
            .stdin(Stdio::null())
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut m = PrivateMariaDb {
            dir,
            port: free_port(),
            proc: None,
        };
        m.launch().await;
        m.root_sql(&format!(
            "CREATE USER '{MARIADB_USER}'@'127.0.0.1' IDENTIFIED BY '{MARIADB_PASSWORD}'; \
             GRANT ALL ON *.* TO '{MARIADB_USER}'@'127.0.0.1'; FLUSH PRIVILEGES;"
        ));
        m
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysql.sock")
    }

    /// `mysql://user:password@127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!(
            "mysql://{MARIADB_USER}:{MARIADB_PASSWORD}@127.0.0.1:{}/",
            self.port
        )
    }

    fn root_sql(&self, sql: &str) {
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run mariadb");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ping(&self) -> bool {
        Command::new("mariadb-admin")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "--connect-timeout=1", "ping"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    async fn launch(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new("mariadbd");
        cmd.args(["--no-defaults", "--user=root"])
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", d.join("mariadbd.err").display()))
            .args([
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                // Every COMMIT reaches the log before it is acknowledged: a crash of the
                // process loses nothing that was acknowledged.
                "--innodb-flush-log-at-trx-commit=1",
                "--max-connections=200",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.proc = Some(ChildGuard::spawn("mariadbd", &mut cmd));
        let deadline = Instant::now() + Duration::from_secs(40);
        while !self.ping() {
            if let Some(p) = self.proc.as_mut() {
                p.assert_running();
            }
            assert!(
                Instant::now() < deadline,
                "private MariaDB did not answer in 40 s:\n{}",
                tail(&d.join("mariadbd.err"), 20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the server with SIGKILL (no shutdown, no flush beyond what committed).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Starts it again on the same data directory (InnoDB crash recovery) and waits for it.
    pub async fn restart(&mut self) {
        self.kill9();
        self.launch().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tidal nodes and the API

/// Settings for an in-process node: short intervals so that faults resolve within a test.
pub fn server_config(pd: Vec<String>, data_dir: &Path, etcd: Option<String>) -> ServerConfig {
    ServerConfig {
        pd,
        addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data_dir.to_path_buf(),
        etcd: etcd.map(|e| vec![e]),
        cluster_id: format!("faults-{}", run_tag()),
        workers: 2,
        checkpoint_interval: Duration::from_millis(100),
        gc_tick: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(300),
        backoff_max: Duration::from_secs(2),
        metrics_interval: Duration::from_millis(500),
        session_ttl: Duration::from_secs(3),
        ..ServerConfig::default()
    }
}

/// Starts an in-process node.
pub async fn start_server(cfg: ServerConfig) -> Server {
    within("server start", 40, Server::start(cfg))
        .await
        .expect("server starts")
}

/// The TOML settings of a child `tidal server` (the same short intervals).
pub const CHILD_CONFIG: &str = "checkpoint-interval = \"100ms\"\n\
    gc-tick = \"500ms\"\n\
    backoff-initial = \"300ms\"\n\
    backoff-max = \"2s\"\n\
    metrics-interval = \"500ms\"\n\
    session-ttl = \"3s\"\n";

/// A `tidal server` child process.
pub struct ChildServer {
    /// Its process.
    pub proc: ChildGuard,
    /// `http://127.0.0.1:port`.
    pub base: String,
}

impl ChildServer {
    /// Starts `tidal server` with `args` (after `server`) on `port`, logging to `<dir>/<name>`,
    /// and waits until its API answers.
    pub async fn start(dir: &Path, name: &str, port: u16, args: &[String]) -> ChildServer {
        let log_path = dir.join(name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidal"));
        cmd.arg("server")
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(log_file(dir, name))
            .stderr(log_file(dir, name));
        let mut proc = ChildGuard::spawn("tidal server", &mut cmd);
        let base = format!("http://127.0.0.1:{port}");
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            proc.assert_running();
            if let Ok(r) = http.get(format!("{base}/api/v2/health")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tidal server did not answer in 40 s:\n{}",
                tail(&log_path, 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ChildServer { proc, base }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// The changefeed's watermarks as `GET /api/v2/changefeeds/{id}` reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When, since the sampler started.
    pub at: Duration,
    /// `checkpoint_ts`.
    pub checkpoint: u64,
    /// `resolved_ts`.
    pub resolved: u64,
    /// `state`.
    pub state: String,
}

/// A client of one node's HTTP API.
#[derive(Clone)]
pub struct Api {
    base: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl Api {
    /// A client of the API at `base` (`http://host:port`).
    pub fn new(base: &str) -> Api {
        Api {
            base: Arc::new(Mutex::new(base.to_owned())),
            http: client(),
        }
    }

    /// Points this client (and its clones) at another node.
    pub fn set_base(&self, base: &str) {
        *self.base.lock().expect("api base") = base.to_owned();
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let base = self.base.lock().expect("api base").clone();
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Creates a changefeed replicating `rules` into `sink_uri` from `start_ts`.
    pub async fn create_changefeed(
        &self,
        id: &str,
        sink_uri: &str,
        start_ts: u64,
        rules: &[String],
    ) {
        let body = json!({
            "changefeed_id": id,
            "sink_uri": sink_uri,
            "start_ts": start_ts,
            "replica_config": {"filter": {"rules": rules}},
        });
        let (status, v) = self
            .call(reqwest::Method::POST, "/api/v2/changefeeds", Some(body))
            .await
            .expect("create changefeed");
        assert_eq!(status, 200, "create changefeed: {v}");
        assert_eq!(v["id"], json!(id), "{v}");
    }

    /// Removes the changefeed (cleanup of metadata in a shared etcd).
    pub async fn remove_changefeed(&self, id: &str) {
        match self
            .call(
                reqwest::Method::DELETE,
                &format!("/api/v2/changefeeds/{id}"),
                None,
            )
            .await
        {
            Ok((200, _)) => {}
            other => eprintln!("removing changefeed {id}: {other:?}"),
        }
    }

    /// One read of the changefeed's watermarks.
    pub async fn sample(&self, id: &str) -> Result<(u64, u64, String), String> {
        let (status, v) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v2/changefeeds/{id}"),
                None,
            )
            .await?;
        if status != 200 {
            return Err(format!("status {status}: {v}"));
        }
        let ckpt = v["checkpoint_ts"].as_u64().ok_or("no checkpoint_ts")?;
        let resolved = v["resolved_ts"].as_u64().ok_or("no resolved_ts")?;
        Ok((ckpt, resolved, v["state"].as_str().unwrap_or("").to_owned()))
    }

    /// The `runtime.stuck` verdict of `/diagnosis` ("" if there is none).
    pub async fn stuck_verdict(&self, id: &str) -> String {
        match self
            .call(
                reqwest::Method::GET,
                &format!("/api/v2/changefeeds/{id}/diagnosis"),
                None,
            )
            .await
        {
            Ok((200, v)) => v["runtime"]["stuck"].as_str().unwrap_or("").to_owned(),
            _ => String::new(),
        }
    }

    /// The changefeed's checkpoint (0 while the API does not answer).
    pub async fn checkpoint(&self, id: &str) -> u64 {
        self.sample(id).await.map_or(0, |(c, _, _)| c)
    }

    /// Waits until the checkpoint passes `ts` (at or above it); returns how long that took, or
    /// `None` if it did not within `limit`.
    pub async fn wait_checkpoint(&self, id: &str, ts: u64, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.checkpoint(id).await >= ts {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// Reads the changefeed's watermarks every [`SAMPLE_EVERY`] in the background and keeps every
/// answer (and counts the reads that failed, e.g. while a node is down).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<Sample>, u64)>,
}

/// What the sampler saw.
#[derive(Debug)]
pub struct Samples {
    /// Every successful read, in order.
    pub samples: Vec<Sample>,
    /// Reads that failed.
    pub failed_reads: u64,
}

impl Sampler {
    /// Starts sampling changefeed `id` through `api`.
    pub fn spawn(api: Api, id: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let id = id.to_owned();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut samples = Vec::new();
            let mut failed = 0;
            while !s.load(Ordering::Relaxed) {
                match api.sample(&id).await {
                    Ok((checkpoint, resolved, state)) => samples.push(Sample {
                        at: started.elapsed(),
                        checkpoint,
                        resolved,
                        state,
                    }),
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            (samples, failed)
        });
        Sampler { stop, task }
    }

    /// Stops sampling and returns what was seen.
    pub async fn finish(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, failed_reads) = within("sampler stop", 20, self.task)
            .await
            .expect("sampler task");
        Samples {
            samples,
            failed_reads,
        }
    }
}

impl Samples {
    /// The longest time the sampled checkpoint stood still (counting failed reads as standing
    /// still).
    pub fn longest_stall(&self) -> Duration {
        let mut longest = Duration::ZERO;
        let mut since: Option<(Duration, u64)> = None;
        for s in &self.samples {
            match since {
                Some((at, c)) if s.checkpoint <= c => longest = longest.max(s.at - at),
                _ => since = Some((s.at, s.checkpoint)),
            }
        }
        longest
    }

    /// The distinct changefeed states seen, in order of first appearance.
    pub fn states(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.samples {
            if !out.contains(&s.state) {
                out.push(s.state.clone());
            }
        }
        out
    }

    /// Every episode where a watermark went backwards (a sample below the highest value seen
    /// before it; consecutive such samples are one episode, reported with the deepest drop and
    /// its length), or where the checkpoint passed the resolved ts.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let (mut max_ckpt, mut max_res) = (0u64, 0u64);
        let mut episode: [Option<(Duration, Duration, u64, u64)>; 2] = [None, None];
        let mut close = |which: usize, ep: &mut Option<(Duration, Duration, u64, u64)>| {
            if let Some((from, to, high, low)) = ep.take() {
                out.push(format!(
                    "{} went backwards from {high} to {low} ({} ms of TSO time) between {from:?} \
                     and {to:?} of sampling",
                    ["checkpoint", "resolved ts"][which],
                    Ts(high).physical_ms().saturating_sub(Ts(low).physical_ms())
                ));
            }
        };
        let mut above = Vec::new();
        for s in &self.samples {
            for (which, (v, max)) in [(s.checkpoint, max_ckpt), (s.resolved, max_res)]
                .into_iter()
                .enumerate()
            {
                if v < max {
                    let ep = &mut episode[which];
                    match ep {
                        Some((_, to, _, low)) => {
                            *to = s.at;
                            *low = (*low).min(v);
                        }
                        None => *ep = Some((s.at, s.at, max, v)),
                    }
                } else {
                    close(which, &mut episode[which]);
                }
            }
            if s.checkpoint > s.resolved {
                above.push(format!("checkpoint above resolved at {:?}: {s:?}", s.at));
            }
            max_ckpt = max_ckpt.max(s.checkpoint);
            max_res = max_res.max(s.resolved);
        }
        for (which, ep) in episode.iter_mut().enumerate() {
            close(which, ep);
        }
        out.extend(above);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Downstream

/// A shared or private MariaDB as the sink target.
pub struct Downstream1 {
    /// The URL verify and the test's own queries use.
    pub url: String,
}

impl Downstream1 {
    /// The sink URI for this downstream: at most 4 writers (the machine is small).
    pub fn sink_uri(&self) -> String {
        let base = self.url.split('?').next().unwrap_or(&self.url);
        let root = match base.rfind('/') {
            Some(i) if i > "mysql://".len() => &base[..i],
            _ => base,
        };
        format!("{root}/?worker-count=4")
    }

    /// A one-connection pool.
    pub async fn pool(&self) -> MySqlPool {
        within(
            "connect MariaDB",
            20,
            sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(1)
                .connect(&self.url),
        )
        .await
        .expect("connect to MariaDB")
    }

    /// Drops the test's databases downstream.
    pub async fn drop_dbs(&self, dbs: &[String]) {
        let pool = self.pool().await;
        for db in dbs {
            let sql = format!("DROP DATABASE IF EXISTS `{db}`");
            if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                .execute(&pool)
                .await
            {
                eprintln!("{sql}: {e}");
            }
        }
        pool.close().await;
    }

    /// (sum of balances, number of accounts) of the bank downstream.
    pub async fn bank(&self, up: &Upstream) -> Result<(i64, i64), String> {
        let pool = self.pool().await;
        let (mut total, mut accounts) = (0, 0);
        for table in Bank::new(up.bank.clone()).table_names() {
            let sql = format!(
                "SELECT CAST(COALESCE(SUM(balance), 0) AS SIGNED), COUNT(*) FROM `{}`.`{table}`",
                up.bank.db
            );
            let (s, c): (i64, i64) = sqlx::query_as(AssertSqlSafe(sql.clone()))
                .fetch_one(&pool)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            total += s;
            accounts += c;
        }
        pool.close().await;
        Ok((total, accounts))
    }
}

// ---------------------------------------------------------------------------------------------
// The common ending

/// What a test measured, printed at its end.
#[derive(Debug)]
pub struct Outcome {
    /// Load statistics.
    pub load: LoadStats,
    /// The checkpoint the downstream was verified at.
    pub checkpoint: u64,
    /// Tables compared and their rows upstream.
    pub tables: usize,
    /// Rows compared.
    pub rows: u64,
    /// Samples taken.
    pub samples: usize,
    /// Reads that failed.
    pub failed_reads: u64,
    /// Catch-up time after the load stopped.
    pub catch_up: Duration,
    /// The longest time the checkpoint stood still.
    pub longest_stall: Duration,
    /// The changefeed states seen.
    pub states: Vec<String>,
}

/// Stops the load, waits for the checkpoint to pass its last commit, stops the sampler, and
/// checks every invariant: the downstream equals the upstream at the checkpoint (`verify`),
/// the bank total downstream is the expected one, and no sampled watermark regressed. The
/// downstream databases are dropped whatever the outcome.
pub async fn finish(
    name: &str,
    up: &Upstream,
    load: Load,
    api: &Api,
    cf: &str,
    sampler: Sampler,
    down: &Downstream1,
) -> Outcome {
    let load = load.stop().await;
    let waited = api.wait_checkpoint(cf, load.last_commit_ts, CATCH_UP).await;
    let seen = api.sample(cf).await;
    let samples = sampler.finish().await;
    let checkpoint = seen.as_ref().map_or(0, |s| s.0);

    let report: Option<Result<VerifyReport, String>> = if waited.is_some() {
        let mut opts = VerifyOptions::new(
            up.cluster.pd_endpoints(),
            Downstream::MySql(down.url.clone()),
        );
        opts.ts = Some(Ts(checkpoint));
        opts.filter = up.filter_rules();
        Some(
            within("verify", 60, verify(opts))
                .await
                .map_err(|e| e.to_string()),
        )
    } else {
        None
    };
    let bank = if waited.is_some() {
        Some(down.bank(up).await)
    } else {
        None
    };
    let upstream_total = Bank::new(up.bank.clone()).total_at(up.cluster.store(), checkpoint);
    down.drop_dbs(&up.dbs()).await;

    let Some(catch_up) = waited else {
        panic!(
            "{name}: the checkpoint did not pass the last commit {} within {CATCH_UP:?} \
             (last answer {seen:?}; load {load:?})",
            load.last_commit_ts
        );
    };
    let report = report
        .expect("verified")
        .unwrap_or_else(|e| panic!("{name}: verify failed to run: {e}"));
    assert!(
        report.equal,
        "{name}: downstream differs from upstream at the checkpoint:\n{report}"
    );
    assert_eq!(report.ts, Ts(checkpoint));
    // bank (2 tables) and sysbench (2 tables), nothing else
    assert_eq!(report.tables.len(), 4, "{name}: tables compared: {report}");
    for t in &report.tables {
        assert_eq!(t.downstream_rows, t.upstream_rows, "{name}: {t:?}");
    }
    let expected = up.expected_total();
    assert_eq!(
        upstream_total.expect("upstream bank total"),
        expected,
        "{name}: upstream bank total"
    );
    let (total, accounts) = bank
        .expect("bank read")
        .unwrap_or_else(|e| panic!("{name}: reading the bank downstream: {e}"));
    assert_eq!(accounts, 100, "{name}: downstream accounts");
    assert_eq!(total, expected, "{name}: downstream bank total");
    let problems = samples.problems();
    assert!(
        problems.is_empty(),
        "{name}: watermark problems over {} samples: {problems:#?}",
        samples.samples.len()
    );
    assert!(
        samples.samples.len() >= 20,
        "{name}: only {} samples",
        samples.samples.len()
    );
    let outcome = Outcome {
        load,
        checkpoint,
        tables: report.tables.len(),
        rows: report.tables.iter().map(|t| t.upstream_rows).sum(),
        samples: samples.samples.len(),
        failed_reads: samples.failed_reads,
        catch_up,
        longest_stall: samples.longest_stall(),
        states: samples.states(),
    };
    eprintln!(
        "{name}: {} txns ({} retried), verified {} tables / {} rows equal at checkpoint {} \
         ({:?} of catch-up); {} samples, {} failed reads; checkpoint stood still at most {:?}; \
         states {:?}",
        outcome.load.txns,
        outcome.load.retries,
        outcome.tables,
        outcome.rows,
        outcome.checkpoint,
        outcome.catch_up,
        outcome.samples,
        outcome.failed_reads,
        outcome.longest_stall,
        outcome.states
    );
    outcome
}

/// Waits until the checkpoint passes `ts` (a ts taken when a fault ended) and returns how long
/// that took: the recovery time. Fails the test after `limit`.
pub async fn recovery(name: &str, api: &Api, cf: &str, ts: u64, limit: Duration) -> Duration {
    let took = api
        .wait_checkpoint(cf, ts, limit)
        .await
        .unwrap_or_else(|| panic!("{name}: no recovery within {limit:?} of the fault's end"));
    eprintln!("{name}: RECOVERY {} ms", took.as_millis());
    took
}

/// Waits until the changefeed's checkpoint passes the upstream's current ts (it replicates).
pub async fn wait_replicating(name: &str, up: &Upstream, api: &Api, cf: &str) {
    let ts = up.now_ts();
    if api
        .wait_checkpoint(cf, ts, Duration::from_secs(40))
        .await
        .is_none()
    {
        panic!(
            "{name}: the changefeed did not start replicating in 40 s: {:?}",
            api.sample(cf).await
        );
    }
}

/// The common setup: the upstream with its tables, one in-process node (embedded store, or
/// `etcd` when given), a changefeed into `down` that already replicates.
pub struct Env {
    /// The test's name (for messages).
    pub name: &'static str,
    /// The upstream.
    pub up: Upstream,
    /// The downstream.
    pub down: Downstream1,
    /// The API client.
    pub api: Api,
    /// The changefeed id.
    pub cf: String,
    /// The node.
    pub server: Option<Server>,
    /// The node's data directory (removed on drop).
    _data: tempfile::TempDir,
}

impl Env {
    /// Sets everything up (see the type docs).
    pub async fn start(name: &'static str, down: Downstream1, etcd: Option<String>) -> Env {
        let tag = run_tag();
        let up = Upstream::start(&tag).await;
        let data = tempfile::tempdir().expect("data dir");
        let server =
            start_server(server_config(up.cluster.pd_endpoints(), data.path(), etcd)).await;
        let api = Api::new(&server.base_url());
        let cf = format!("{}-{tag}", name.replace('_', "-"));
        api.create_changefeed(&cf, &down.sink_uri(), up.start_ts, &up.filter_rules())
            .await;
        wait_replicating(name, &up, &api, &cf).await;
        Env {
            name,
            up,
            down,
            api,
            cf,
            server: Some(server),
            _data: data,
        }
    }

    /// A sampler of this changefeed.
    pub fn sampler(&self) -> Sampler {
        Sampler::spawn(self.api.clone(), &self.cf)
    }

    /// [`finish`], then a graceful shutdown of the node and the cluster.
    pub async fn finish(mut self, load: Load, sampler: Sampler) -> Outcome {
        let out = finish(
            self.name, &self.up, load, &self.api, &self.cf, sampler, &self.down,
        )
        .await;
        if let Some(s) = self.server.take() {
            within("server shutdown", 30, s.shutdown()).await;
        }
        self.up.cluster.shutdown().await;
        out
    }
}
