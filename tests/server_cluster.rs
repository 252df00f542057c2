//! Two `tidal server` processes as one multi-process timely cluster, and one of them killed
//! with SIGKILL in the middle of the load.
//!
//! The test process runs the embedded TiKV/PD cluster (its PD on a loopback port) and the
//! workloads; the two children are the real `tidal` binary, sharing the test etcd (a fresh
//! cluster id per run) and replicating into the test MariaDB (fresh database names per run):
//! A is `--process 0`, B is `--process 1`, both with the same `--hosts`. A starts first and
//! becomes the coordinator; the changefeed is created through B's API, so it runs as one
//! dataflow over both processes. Then A is killed (`kill -9`): B must take over (A's lease
//! expires), restart the changefeed alone from the persisted checkpoint, and keep the
//! checkpoint moving; A is restarted and must be taken back in (B re-plans over both). After
//! the workloads stop, the checkpoint must pass their last commit, the downstream must equal
//! the upstream at the checkpoint row by row (`tidal::verify`) with the bank's total intact,
//! and the checkpoint B's API reported, sampled through the whole run, must never go back.

mod support;

use support::{free_port, run_tag, set_up, within};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, MySqlPool};
use tidal::verify::{Downstream, VerifyOptions, verify};
use tidal_ingest::pd::{PdClient, PdConfig};
use tidal_model::Ts;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::workload::{Bank, BankConfig, Sysbench, SysbenchConfig, WorkloadStats, spawn};

/// Ports each process may use above its base (the server's port slots).
const PORT_SLOTS: u16 = 32;

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tidal-server-cluster-{tag}"));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A base port with `PORT_SLOTS` free ports above it.
fn free_port_range(avoid: &[u16]) -> u16 {
    let seed = u64::from(std::process::id())
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos().into())
            .unwrap_or(0);
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed.wrapping_mul(7919) + attempt * 997) % 30_000) as u16;
        let clash = avoid.iter().any(|a| base.abs_diff(*a) < PORT_SLOTS + 1);
        if !clash && (0..PORT_SLOTS).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free range of {PORT_SLOTS} ports");
}

/// One `tidal server` child; killed (SIGKILL) on drop.
struct Node {
    name: &'static str,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    api: String,
}

impl Node {
    fn start(name: &'static str, config: PathBuf, log: PathBuf, api: String) -> Node {
        let mut n = Node {
            name,
            child: None,
            config,
            log,
            api,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tidal"))
            .arg("server")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env_remove("TIDAL_SERVER")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start tidal server");
        self.child = Some(child);
    }

    /// SIGKILL, as `kill -9`.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The log lines about runs, ownership and members (for the test's output).
    fn events(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let keys = [
            "coordinator",
            "published a multi-process run",
            "member run",
            "live processes changed",
            "changefeed failed",
            "abandoned",
        ];
        text.lines()
            .filter(|l| keys.iter().any(|k| l.contains(k)))
            .map(|l| format!("  {}: {l}", self.name))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!(
            "--- {} log (last lines) ---\n{}",
            self.name,
            lines[from..].join("\n")
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn node_config(
    dir: &Path,
    pd: &[String],
    etcd: &str,
    cluster_id: &str,
    api: &str,
    hosts: &[String],
    process: usize,
) -> PathBuf {
    let data = dir.join(format!("data-{process}"));
    let quote = |v: &[String]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        r#"pd = [{pd}]
addr = "{api}"
data-dir = "{data}"
etcd = ["{etcd}"]
cluster-id = "{cluster_id}"
workers = 1
session-ttl = "3s"
checkpoint-interval = "200ms"
backoff-initial = "500ms"
backoff-max = "2s"
metrics-interval = "1s"
log-level = "info"
hosts = [{hosts}]
process = {process}
"#,
        pd = quote(pd),
        data = data.display(),
        hosts = quote(hosts),
    );
    let path = dir.join(format!("node-{process}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

struct Api {
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut req = self.http.request(method, format!("http://{base}{path}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let text = resp.text().await.ok()?;
        Some((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn wait_healthy(&self, node: &Node, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some((200, _)) = self
                .call(&node.api, reqwest::Method::GET, "/api/v2/health", None)
                .await
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became healthy\n{}",
                node.name,
                node.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The persisted (or live) checkpoint of `id`, from `node`'s API.
    async fn checkpoint(&self, node: &str, id: &str) -> Option<u64> {
        let (status, v) = self
            .call(
                node,
                reqwest::Method::GET,
                &format!("/api/v2/changefeeds/{id}/status"),
                None,
            )
            .await?;
        (status == 200)
            .then(|| v["checkpoint_ts"].as_u64())
            .flatten()
    }
}

/// Samples B's reported checkpoint until told to stop: (samples, regressions).
async fn sample(
    api: Arc<Api>,
    node: String,
    id: String,
    stop: Arc<AtomicBool>,
) -> (Vec<u64>, Vec<String>) {
    let mut samples: Vec<u64> = Vec::new();
    let mut problems = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(c) = api.checkpoint(&node, &id).await {
            if let Some(prev) = samples.last()
                && c < *prev
            {
                problems.push(format!("checkpoint regressed: {prev} -> {c}"));
            }
            samples.push(c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (samples, problems)
}

/// Waits until `node` reports a checkpoint at or above `ts`; returns it (or the last one).
async fn wait_checkpoint(api: &Api, node: &Node, id: &str, ts: u64, secs: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = 0;
    while Instant::now() < deadline {
        if let Some(c) = api.checkpoint(&node.api, id).await {
            last = c;
            if c >= ts {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// `is_owner` of a node's `/api/v2/status` (`None` if it does not answer).
async fn owner_flag(api: &Api, node: &Node) -> Option<bool> {
    let (_, v) = api
        .call(&node.api, reqwest::Method::GET, "/api/v2/status", None)
        .await?;
    v["is_owner"].as_bool()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_replaced_and_rejoins() {
    let Some(etcd) = support::external_service("TIDAL_TEST_ETCD") else {
        return;
    };
    let Some(url) = support::external_service("TIDAL_TEST_MYSQL") else {
        return;
    };
    let t0 = Instant::now();
    let tag = run_tag();
    let dir = TempDir::new(&tag);
    let cfg = SimConfig::with_min_ts_interval(Duration::from_millis(100));
    let cluster = within("sim start", 30, SimCluster::start(cfg))
        .await
        .expect("sim");
    let tidb = cluster.tidb().expect("tidb layer");
    let pd_endpoints = cluster.pd_endpoints();
    let pd = within(
        "PD connect",
        10,
        PdClient::connect(PdConfig::new(pd_endpoints.clone())),
    )
    .await
    .expect("PD client");

    let base_a = free_port_range(&[]);
    let base_b = free_port_range(&[base_a]);
    let hosts = vec![format!("127.0.0.1:{base_a}"), format!("127.0.0.1:{base_b}")];
    let cluster_id = format!("srvcl-{tag}");
    let (api_a, api_b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let cfg_a = node_config(&dir.0, &pd_endpoints, &etcd, &cluster_id, &api_a, &hosts, 0);
    let cfg_b = node_config(&dir.0, &pd_endpoints, &etcd, &cluster_id, &api_b, &hosts, 1);
    let api = Arc::new(Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
    });
    // A first, so that it is the coordinator when the changefeed starts.
    let mut a = Node::start("A", cfg_a, dir.0.join("a.log"), api_a);
    api.wait_healthy(&a, 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = Node::start("B", cfg_b, dir.0.join("b.log"), api_b.clone());
    api.wait_healthy(&b, 60).await;

    let sb_db = format!("tidal_srvcl_sb_{tag}");
    let bank_db = format!("tidal_srvcl_bank_{tag}");
    let rules = vec![format!("{sb_db}.*"), format!("{bank_db}.*")];
    let start_ts = within("ts", 10, pd.get_ts()).await.expect("ts");
    let bank_cfg = BankConfig {
        seed: 5,
        db: bank_db.clone(),
        tables: 2,
        accounts_per_table: 40,
        initial_balance: 1000,
        max_transfer: 100,
    };
    let expected_total = Bank::new(bank_cfg.clone()).expected_total();
    assert_eq!(expected_total, 80_000);
    let mut sysbench = Sysbench::new(SysbenchConfig {
        seed: 3,
        db: sb_db.clone(),
        tables: 2,
        rows_per_table: 100,
        row_width: 80,
        batch: 4,
        ..SysbenchConfig::default()
    });
    let mut bank = Bank::new(bank_cfg.clone());
    let sb_opts = set_up(&mut sysbench, &tidb, 60);
    let bank_opts = set_up(&mut bank, &tidb, 40);

    // The changefeed is created through B.
    let id = format!("srvcl-{tag}");
    let created = api
        .call(
            &api_b,
            reqwest::Method::POST,
            "/api/v2/changefeeds",
            Some(json!({
                "changefeed_id": id,
                "sink_uri": url,
                "start_ts": start_ts.0,
                "replica_config": {"filter": {"rules": rules}},
            })),
        )
        .await;
    assert_eq!(created.as_ref().map(|c| c.0), Some(200), "{created:?}");

    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(
        Arc::clone(&api),
        api_b.clone(),
        id.clone(),
        Arc::clone(&stop_sampling),
    ));
    let running = vec![
        spawn(Box::new(sysbench), tidb.clone(), sb_opts),
        spawn(Box::new(bank), tidb.clone(), bank_opts),
    ];

    // Phase 1: both processes replicate.
    let ts1 = within("ts", 10, pd.get_ts()).await.expect("ts").0;
    let c1 = wait_checkpoint(&api, &b, &id, ts1, 40).await;
    let two_processes = api
        .call(
            &a.api,
            reqwest::Method::GET,
            &format!("/api/v2/changefeeds/{id}/diagnosis"),
            None,
        )
        .await
        .map(|(_, v)| v["runtime"]["processes"].as_array().map_or(0, Vec::len));
    eprintln!(
        "phase 1 after {:?}: checkpoint {c1} (wanted {ts1}), processes {two_processes:?}",
        t0.elapsed()
    );

    let owners_1 = (owner_flag(&api, &a).await, owner_flag(&api, &b).await);

    // Phase 2: A dies; B must carry on alone.
    a.kill();
    let killed_at = Instant::now();
    let ts2 = within("ts", 10, pd.get_ts()).await.expect("ts").0;
    let c2 = wait_checkpoint(&api, &b, &id, ts2, 40).await;
    eprintln!(
        "phase 2: checkpoint {c2} (wanted {ts2}) {:?} after the kill",
        killed_at.elapsed()
    );
    let owner_2 = owner_flag(&api, &b).await;

    // Phase 3: A comes back and is taken in again.
    a.spawn();
    api.wait_healthy(&a, 60).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rejoined = 0;
    while Instant::now() < deadline {
        rejoined = api
            .call(
                &b.api,
                reqwest::Method::GET,
                &format!("/api/v2/changefeeds/{id}/diagnosis"),
                None,
            )
            .await
            .map_or(0, |(_, v)| {
                v["runtime"]["processes"].as_array().map_or(0, Vec::len)
            });
        if rejoined == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ts3 = within("ts", 10, pd.get_ts()).await.expect("ts").0;
    let c3 = wait_checkpoint(&api, &b, &id, ts3, 40).await;
    eprintln!(
        "phase 3: {rejoined} processes, checkpoint {c3} (wanted {ts3}) at {:?}",
        t0.elapsed()
    );
    let owners_3 = (owner_flag(&api, &a).await, owner_flag(&api, &b).await);

    // Stop the load; catch up.
    for w in &running {
        w.stop();
    }
    let mut stats: Vec<(&'static str, WorkloadStats)> = Vec::new();
    for w in running {
        let name = w.name();
        let s = within("workload stop", 30, w.join())
            .await
            .unwrap_or_else(|e| panic!("workload {name} failed: {e}"));
        stats.push((name, s));
    }
    let last_commit = stats
        .iter()
        .map(|(_, s)| s.last_commit_ts)
        .max()
        .unwrap_or(0);
    let checkpoint = wait_checkpoint(&api, &b, &id, last_commit, 60).await;
    stop_sampling.store(true, Ordering::Relaxed);
    let (samples, problems) = sampler.await.expect("sampler");
    eprintln!(
        "caught up at {:?}: checkpoint {checkpoint}, last commit {last_commit}, {stats:?}",
        t0.elapsed()
    );

    let report = if checkpoint >= last_commit {
        let mut opts = VerifyOptions::new(pd_endpoints.clone(), Downstream::MySql(url.clone()));
        opts.ts = Some(Ts(checkpoint));
        opts.filter = rules.clone();
        Some(
            within("verify", 60, verify(opts))
                .await
                .expect("verify runs"),
        )
    } else {
        None
    };
    let pool: MySqlPool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("connect to MariaDB");
    let mut downstream_bank: Result<(i64, i64), String> = Ok((0, 0));
    for table in Bank::new(bank_cfg.clone()).table_names() {
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(balance), 0) AS SIGNED), COUNT(*) FROM `{bank_db}`.`{table}`"
        );
        let read: Result<(i64, i64), _> = sqlx::query_as(AssertSqlSafe(sql.clone()))
            .fetch_one(&pool)
            .await;
        downstream_bank = match (downstream_bank, read) {
            (Ok((t, n)), Ok((sum, count))) => Ok((t + sum, n + count)),
            (Err(e), _) => Err(e),
            (_, Err(e)) => Err(format!("{sql}: {e}")),
        };
    }
    let upstream_total = Bank::new(bank_cfg.clone()).total_at(cluster.store(), checkpoint);
    let logs = format!("{}\n{}", a.log_tail(), b.log_tail());
    eprintln!("events:\n{}\n{}", a.events(), b.events());
    drop(a);
    drop(b);
    for db in [&sb_db, &bank_db] {
        let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{db}`")))
            .execute(&pool)
            .await;
    }
    pool.close().await;
    cluster.shutdown().await;

    assert_eq!(
        two_processes,
        Some(2),
        "the run did not span both processes\n{logs}"
    );
    assert!(
        c1 >= ts1,
        "no progress with both processes: {c1} < {ts1}\n{logs}"
    );
    assert!(
        c2 >= ts2,
        "B did not carry on after A was killed: {c2} < {ts2}\n{logs}"
    );
    assert_eq!(rejoined, 2, "the restarted A was not taken back in\n{logs}");
    // `/api/v2/status` and `/captures` say who coordinates: A first, B once A is gone, and
    // still B after A is back.
    assert_eq!(owners_1, (Some(true), Some(false)), "owners with both up");
    assert_eq!(owner_2, Some(true), "B after A was killed");
    assert_eq!(
        owners_3,
        (Some(false), Some(true)),
        "owners after A rejoined"
    );
    assert!(
        c3 >= ts3,
        "no progress after A rejoined: {c3} < {ts3}\n{logs}"
    );
    assert!(
        checkpoint >= last_commit,
        "the checkpoint {checkpoint} never passed the last commit {last_commit}\n{logs}"
    );
    assert!(problems.is_empty(), "checkpoint problems: {problems:?}");
    assert!(samples.len() > 20, "only {} samples", samples.len());
    let txns: u64 = stats.iter().map(|(_, s)| s.txns).sum();
    assert!(txns >= 300, "only {txns} transactions: {stats:?}");
    let report = report.expect("verified");
    assert!(
        report.equal,
        "downstream differs at the checkpoint:\n{report}"
    );
    assert_eq!(report.ts, Ts(checkpoint));
    assert_eq!(report.tables.len(), 4, "{report}");
    assert_eq!(upstream_total.expect("upstream total"), expected_total);
    assert_eq!(
        downstream_bank.unwrap_or_else(|e| panic!("downstream bank: {e}")),
        (expected_total, 80)
    );
    eprintln!("whole test took {:?}", t0.elapsed());
}
