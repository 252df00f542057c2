//! `GET /api/v2/changefeeds/{id}/synced` against a live node: a real server (embedded store,
//! coordinator, dataflow) replicating from the embedded cluster to a `blackhole://` sink, with
//! the `synced_status` intervals shortened to 2 s / 1 s. While a writer commits rows the answer
//! must be "not synced"; once the writer stops it must turn "synced" — but only after the check
//! interval has passed since the last commit — with watermarks that agree with each other and
//! with the last commit. `tests/synced.rs` covers every branch with a fake clock; this test
//! proves the real inputs (PD time, LastSyncedTs, checkpoint, puller resolved ts) are wired.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use tidal_control::api::synced::{INFO_FINISHED, INFO_NOT_FINISHED};
use tidal_control::server::{Server, ServerConfig};
use tidal_model::{Datum, Ts};
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::tidb::{ColumnSpec, CommitInfo, PrimaryKey, TableSpec, Tidb, types};

/// `synced_check_interval` configured on the changefeed, seconds.
const CHECK_INTERVAL_SECS: u64 = 2;
/// `checkpoint_interval` configured on the changefeed, seconds.
const CHECKPOINT_INTERVAL_SECS: u64 = 1;
/// How long the writer runs while `/synced` is polled.
const WRITE_PHASE: Duration = Duration::from_millis(3_000);
/// Slack for comparing PD's clock (TSO physical time) with the test's monotonic clock.
const CLOCK_SLACK: Duration = Duration::from_millis(100);

async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

fn table_spec() -> TableSpec {
    TableSpec::new(
        "t1",
        vec![
            ColumnSpec::new("id", types::bigint()).not_null(),
            ColumnSpec::new("v", types::varchar(64)),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()))
}

/// Inserts one row in its own transaction (retrying retryable conflicts); returns the commit ts.
fn insert(tidb: &Tidb, id: i64) -> u64 {
    for _ in 0..20 {
        let t = tidb.table("test", "t1").expect("table");
        let mut txn = tidb.begin();
        txn.insert(
            &t,
            vec![
                Datum::Int(id),
                Datum::Bytes(format!("row-{id}").into_bytes()),
            ],
        )
        .expect("insert");
        match txn.commit() {
            Ok(CommitInfo {
                commit_ts: Some(c), ..
            }) => return c,
            Ok(_) => panic!("rolled back"),
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("commit failed: {e}"),
        }
    }
    panic!("commit kept failing");
}

/// The last commit of the writer: when its transaction started (test clock, taken before the
/// commit ts was allocated, so the commit's PD time is not earlier) and its commit ts.
#[derive(Debug, Clone, Copy)]
struct LastWrite {
    started: Instant,
    commit_ts: u64,
}

/// Commits one row every ~50 ms until `stop` is set; returns the number of rows written.
fn writer(tidb: Tidb, stop: Arc<AtomicBool>, last: Arc<Mutex<Option<LastWrite>>>) -> i64 {
    let mut id = 1_000;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let commit_ts = insert(&tidb, id);
        *last.lock() = Some(LastWrite { started, commit_ts });
        id += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    id - 1_000
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    async fn synced(&self, id: &str) -> Value {
        self.ok(
            reqwest::Method::GET,
            &format!("/api/v2/changefeeds/{id}/synced"),
            None,
        )
        .await
    }

    async fn checkpoint(&self, id: &str) -> u64 {
        let s = self
            .ok(
                reqwest::Method::GET,
                &format!("/api/v2/changefeeds/{id}/status"),
                None,
            )
            .await;
        s["checkpoint_ts"].as_u64().expect("checkpoint_ts")
    }
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

/// Checks the shape every answer has: the exact key set, `now_ts` in whole seconds, and one of
/// the two outcomes a healthy upstream can produce paired with its exact `info` text.
fn check_shape(v: &Value) {
    let obj = v.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "info",
            "last_synced_ts",
            "now_ts",
            "puller_resolved_ts",
            "sink_checkpoint_ts",
            "synced"
        ],
        "{v}"
    );
    assert!(
        text(v, "now_ts").ends_with(".000"),
        "now_ts is whole seconds: {v}"
    );
    match v["synced"].as_bool().expect("synced is a bool") {
        true => assert_eq!(text(v, "info"), INFO_FINISHED, "{v}"),
        false => assert_eq!(text(v, "info"), INFO_NOT_FINISHED, "{v}"),
    }
}

async fn scenario() {
    // upstream: resolved ts every 100 ms, one table
    let sim = within(
        20,
        "sim start",
        SimCluster::start(SimConfig::with_min_ts_interval(Duration::from_millis(100))),
    )
    .await
    .expect("sim");
    let tidb = sim.tidb().expect("tidb");
    tidb.create_database("test").expect("create db");
    tidb.create_table("test", &table_spec())
        .expect("create table");

    // one node with the embedded store
    let data = tempfile::tempdir().expect("data dir");
    let cfg = ServerConfig {
        pd: sim.pd_endpoints(),
        addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data.path().to_path_buf(),
        workers: 2,
        checkpoint_interval: Duration::from_millis(100),
        gc_tick: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        metrics_interval: Duration::from_millis(500),
        session_ttl: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let server = within(30, "server start", Server::start(cfg))
        .await
        .expect("server starts");
    let api = Api {
        base: server.base_url(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
    };

    // a changefeed with short synced intervals
    let created = api
        .ok(
            reqwest::Method::POST,
            "/api/v2/changefeeds",
            Some(json!({
                "changefeed_id": "live",
                "sink_uri": "blackhole://",
                "replica_config": {"synced_status": {
                    "synced_check_interval": CHECK_INTERVAL_SECS,
                    "checkpoint_interval": CHECKPOINT_INTERVAL_SECS,
                }},
            })),
        )
        .await;
    assert_eq!(created["id"], json!("live"));
    let (code, cfg) = api
        .call(
            reqwest::Method::GET,
            "/api/v2/changefeeds/live?keyspace=default",
            None,
        )
        .await;
    assert_eq!(code, 200, "{cfg}");
    assert_eq!(
        cfg["config"]["synced_status"],
        json!({"synced_check_interval": 2, "checkpoint_interval": 1}),
        "the intervals are stored: {cfg}"
    );

    // wait until it replicates: a first row passes the checkpoint
    let first = insert(&tidb, 1);
    within(20, "first row replicated", async {
        while api.checkpoint("live").await < first {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // write continuously; /synced must say "not synced" the whole time
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(Mutex::new(None));
    let writing = std::thread::spawn({
        let (tidb, stop, last) = (tidb.clone(), stop.clone(), last.clone());
        move || writer(tidb, stop, last)
    });
    let phase_start = Instant::now();
    let mut polls = 0;
    let mut seen_last_synced = std::collections::BTreeSet::new();
    while phase_start.elapsed() < WRITE_PHASE {
        let v = api.synced("live").await;
        check_shape(&v);
        assert_eq!(v["synced"], json!(false), "not synced while writing: {v}");
        assert_eq!(text(&v, "info"), INFO_NOT_FINISHED, "{v}");
        assert_ne!(
            text(&v, "last_synced_ts"),
            "1970-01-01 00:00:00.000",
            "rows reached the sink: {v}"
        );
        seen_last_synced.insert(text(&v, "last_synced_ts").to_string());
        polls += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(polls >= 5, "only {polls} polls while writing");
    assert!(
        seen_last_synced.len() >= 3,
        "last_synced_ts advances while the writer runs: {seen_last_synced:?}"
    );

    // stop the writer; /synced must turn true, and only once the check interval has passed
    stop.store(true, Ordering::SeqCst);
    let rows = tokio::task::spawn_blocking(move || writing.join().expect("writer"))
        .await
        .expect("join");
    assert!(rows >= 10, "the writer wrote only {rows} rows");
    let last = (*last.lock()).expect("the writer committed");
    let interval = Duration::from_secs(CHECK_INTERVAL_SECS);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut not_yet = 0;
    let (synced, after) = loop {
        let v = api.synced("live").await;
        // taken after the response: PD's "now" of this answer is not later than this
        let elapsed = last.started.elapsed();
        check_shape(&v);
        if v["synced"] == json!(true) {
            break (v, elapsed);
        }
        not_yet += 1;
        assert!(
            Instant::now() < deadline,
            "not synced 20 s after the last write: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        after + CLOCK_SLACK > interval,
        "synced {after:?} after the last write, before the {interval:?} check interval: {synced}"
    );
    assert!(
        not_yet >= 1,
        "the first answer after the writer stopped was already synced ({after:?}): {synced}"
    );
    assert_eq!(text(&synced, "info"), INFO_FINISHED);

    // the watermarks agree with each other and with the last commit
    let last_synced = text(&synced, "last_synced_ts");
    let checkpoint = text(&synced, "sink_checkpoint_ts");
    let puller = text(&synced, "puller_resolved_ts");
    assert_eq!(
        last_synced,
        Ts(last.commit_ts).to_string(),
        "last_synced_ts is the last commit's time: {synced}"
    );
    // same fixed-width format, so text order is time order
    assert!(
        last_synced <= checkpoint,
        "the last write is below the checkpoint: {synced}"
    );
    assert!(
        last_synced <= puller,
        "the puller received the last write: {synced}"
    );
    assert!(text(&synced, "now_ts") > last_synced, "{synced}");
    // Everything at or below the sink checkpoint came through the puller, so the puller's
    // resolved ts can never trail it.
    assert!(
        checkpoint <= puller,
        "puller_resolved_ts trails sink_checkpoint_ts: {synced}"
    );

    within(30, "server shutdown", server.shutdown()).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synced_turns_true_after_the_writer_stops() {
    within(60, "synced live scenario", scenario()).await;
}
