//! `tidal server` end to end: a real node (PD client, metadata store, service, coordinator,
//! dataflows, HTTP API) against the embedded cluster, driven over HTTP. The downstream is a
//! `file://` storage sink read back and compared row by row with the upstream at the final
//! checkpoint. The same flow runs once with the embedded store and once with etcd.

mod support;

use support::{table_spec, upsert};

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tidal_control::meta::update_checkpoint_fenced;
use tidal_control::meta::{ChangefeedRef, KeyLayout, MetaStore, load_changefeed};
use tidal_control::server::{Server, ServerConfig};
use tidal_model::Datum;
use tidal_model::tablecodec::Handle;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::tidb::Tidb;
use tidal_sinks::encode::reader::RowOp;
use tidal_sinks::storage::consumer::read_storage_dir;
use tidal_sinks::uri::{SinkConfig, parse_sink_uri};

async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

struct Upstream {
    sim: SimCluster,
    tidb: Tidb,
}

async fn upstream() -> Upstream {
    let cfg = SimConfig::with_min_ts_interval(Duration::from_millis(50));
    let sim = within(20, "sim start", SimCluster::start(cfg))
        .await
        .expect("sim");
    let tidb = sim.tidb().expect("tidb");
    tidb.create_database("test").expect("create db");
    tidb.create_table("test", &table_spec("t1"))
        .expect("create table");
    Upstream { sim, tidb }
}

fn delete(tidb: &Tidb, id: i64) -> u64 {
    let t = tidb.table("test", "t1").expect("table");
    let mut txn = tidb.begin();
    txn.delete(&t, &Handle::Int(id)).expect("delete");
    txn.commit().expect("commit").commit_ts.expect("commit ts")
}

fn server_config(pd: Vec<String>, data_dir: &Path, etcd: Option<(String, String)>) -> ServerConfig {
    let mut cfg = ServerConfig {
        pd,
        addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data_dir.to_path_buf(),
        workers: 2,
        checkpoint_interval: Duration::from_millis(100),
        gc_tick: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        metrics_interval: Duration::from_millis(500),
        session_ttl: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    if let Some((ep, cluster)) = etcd {
        cfg.etcd = Some(vec![ep]);
        cfg.cluster_id = cluster;
    }
    cfg
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api {
            base: server.base_url(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    async fn status(&self, id: &str) -> Value {
        self.ok(
            reqwest::Method::GET,
            &format!("/api/v2/changefeeds/{id}/status"),
            None,
        )
        .await
    }

    /// Polls `/status` until `pred` holds; returns the last answer.
    async fn wait_status(&self, id: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.status(id).await;
            if pred(&s) {
                return s;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("changefeed {id}: condition not reached within {secs}s; last status {s}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn ckpt(s: &Value) -> u64 {
    s["checkpoint_ts"].as_u64().expect("checkpoint_ts")
}

/// Persisted (epoch, state, checkpoint).
async fn persisted(store: &dyn MetaStore, keys: &KeyLayout, id: &str) -> (u64, String, u64) {
    let cf = ChangefeedRef::new(id).expect("id");
    let l = load_changefeed(store, keys, &cf)
        .await
        .expect("load")
        .expect("exists");
    (
        l.info.epoch,
        l.info.state.as_str().to_string(),
        l.status.expect("status").checkpoint_ts,
    )
}

async fn wait_persisted(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    id: &str,
    secs: u64,
    pred: impl Fn(&(u64, String, u64)) -> bool,
) -> (u64, String, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let p = persisted(store, keys, id).await;
        if pred(&p) {
            return p;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("changefeed {id}: persisted state not reached within {secs}s: {p:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The downstream table replayed from the files: id → v.
fn downstream_rows(uri: &str) -> BTreeMap<i64, String> {
    let SinkConfig::Storage(cfg) = parse_sink_uri(uri).expect("uri") else {
        panic!("not a storage sink");
    };
    let content = read_storage_dir(&cfg.root, &cfg.encoder).expect("read storage dir");
    let mut rows = BTreeMap::new();
    for r in content.rows_of("test", "t1") {
        let id: i64 = String::from_utf8(r.get("id").cloned().flatten().expect("id"))
            .expect("utf8")
            .parse()
            .expect("int id");
        match r.op {
            RowOp::Insert | RowOp::Update => {
                let v = r.get("v").cloned().flatten().expect("v");
                rows.insert(id, String::from_utf8(v).expect("utf8"));
            }
            RowOp::Delete => {
                rows.remove(&id);
            }
        }
    }
    rows
}

/// The upstream table at `ts`: id → v.
fn upstream_rows(up: &Upstream, ts: u64) -> BTreeMap<i64, String> {
    let snaps =
        tidal_sim::export::snapshot_tables(up.sim.store(), ts, &[("test", "t1")]).expect("export");
    let mut rows = BTreeMap::new();
    for (handle, row) in &snaps[0].rows {
        let Handle::Int(id) = handle else {
            panic!("int handle expected")
        };
        let v = match row.get(1) {
            Some(Datum::Bytes(b)) => String::from_utf8(b.clone()).expect("utf8"),
            other => panic!("unexpected datum {other:?}"),
        };
        rows.insert(*id, v);
    }
    rows
}

/// The whole life of a changefeed through one node and a restart of it.
async fn lifecycle(etcd: Option<(String, String)>) {
    let up = upstream().await;
    let data = tempfile::tempdir().expect("data dir");
    let out = tempfile::tempdir().expect("sink dir");
    let uri = format!(
        "file://{}?protocol=canal-json&enable-tidb-extension=true&flush-interval=100ms",
        out.path().display()
    );
    let cfg = server_config(up.sim.pd_endpoints(), data.path(), etcd.clone());
    let keys = KeyLayout::new(&cfg.cluster_id).expect("keys");
    let server = within(30, "server start", Server::start(cfg.clone()))
        .await
        .expect("server starts");
    assert_ne!(server.local_addr().port(), 0);
    let api = Api::new(&server);
    let store = server.store().clone();

    // create
    let created = api
        .ok(
            reqwest::Method::POST,
            "/api/v2/changefeeds",
            Some(json!({"changefeed_id": "cf1", "sink_uri": uri})),
        )
        .await;
    assert_eq!(created["id"], json!("cf1"));
    // the service writes the new changefeed with epoch = its start ts (a fresh TSO)
    let created_epoch = created["start_ts"].as_u64().expect("start_ts");

    // rows replicate; the checkpoint passes them, in the API and in the store
    let c1 = upsert(&up.tidb, &[(1, "a"), (2, "b"), (3, "c")]);
    let c1b = upsert(&up.tidb, &[(2, "b2"), (4, "d")]);
    let s = api.wait_status("cf1", 20, |s| ckpt(s) >= c1b).await;
    assert_eq!(s["state"], json!("normal"));
    assert!(s["resolved_ts"].as_u64().expect("resolved") >= ckpt(&s));
    let (e1, state, p1) = wait_persisted(store.as_ref(), &keys, "cf1", 10, |p| p.2 >= c1b).await;
    assert_eq!(state, "normal");
    assert!(
        e1 > created_epoch,
        "the coordinator bumps the epoch before starting ({created_epoch} -> {e1})"
    );
    assert!(p1 >= c1);

    // diagnosis names the slowest span: our only table
    let table_id = up.tidb.table("test", "t1").expect("table").id();
    let diag = api
        .ok(
            reqwest::Method::GET,
            "/api/v2/changefeeds/cf1/diagnosis",
            None,
        )
        .await;
    let rt = &diag["runtime"];
    assert_eq!(rt["running"], json!(true), "{diag}");
    assert_eq!(rt["epoch"], json!(e1));
    assert_eq!(rt["checkpoint_persistable"], json!(true));
    assert_eq!(
        rt["slowest_spans"][0]["table_id"],
        json!(table_id),
        "{diag}"
    );
    assert!(rt["stuck"].is_string());

    // metrics: sink throughput and the checksum state of both workers
    let (code, text) = api.call(reqwest::Method::GET, "/metrics", None).await;
    assert_eq!(code, 200);
    let text = text.as_str().expect("metrics text").to_string();
    let dml = text
        .lines()
        .find(|l| l.starts_with("ticdc_sink_dml_event_count{") && l.contains("changefeed=\"cf1\""))
        .unwrap_or_else(|| panic!("no dml counter in {text}"));
    let count: f64 = dml
        .rsplit(' ')
        .next()
        .expect("value")
        .parse()
        .expect("number");
    assert!(count >= 5.0, "{dml}");
    for w in 0..2 {
        let line = format!("tidal_span_set_checksum_state{{changefeed=\"cf1\",worker=\"{w}\"}} 1");
        assert!(text.contains(&line), "missing {line}");
    }

    // pause: the checkpoint stops
    api.ok(reqwest::Method::POST, "/api/v2/changefeeds/cf1/pause", None)
        .await;
    api.wait_status("cf1", 5, |s| s["state"] == json!("stopped"))
        .await;
    // wait until the run is gone (no runtime watermarks), then take the frozen checkpoint
    within(10, "run stops", async {
        while !server.coordinator().registry().running().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let frozen = persisted(store.as_ref(), &keys, "cf1").await;
    assert!(frozen.2 >= c1b);
    let c2 = upsert(&up.tidb, &[(5, "e"), (1, "a2")]);
    let c2b = delete(&up.tidb, 3);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let still = persisted(store.as_ref(), &keys, "cf1").await;
    assert_eq!(still, frozen, "nothing moves while paused");
    assert!(still.2 < c2);
    // the paused run's checksum series are withdrawn, not left at their last value
    let (_, text) = api.call(reqwest::Method::GET, "/metrics", None).await;
    let text = text.as_str().expect("metrics text").to_string();
    assert!(
        !text.contains("tidal_span_set_checksum_state{changefeed=\"cf1\""),
        "checksum series of a stopped run in\n{text}"
    );
    assert_eq!(ckpt(&api.status("cf1").await), frozen.2);

    // resume: a new epoch and no loss
    api.ok(
        reqwest::Method::POST,
        "/api/v2/changefeeds/cf1/resume",
        Some(json!({})),
    )
    .await;
    let s = api
        .wait_status("cf1", 20, |s| {
            s["state"] == json!("normal") && ckpt(s) >= c2b
        })
        .await;
    assert_eq!(s["last_error"], Value::Null);
    let (e2, _, _) = wait_persisted(store.as_ref(), &keys, "cf1", 10, |p| p.2 >= c2b).await;
    assert!(e2 > e1, "resume bumps the epoch ({e1} -> {e2})");

    // a stale owner (the old epoch) cannot move the checkpoint
    let cf = ChangefeedRef::new("cf1").expect("id");
    let before = persisted(store.as_ref(), &keys, "cf1").await;
    let wrote = update_checkpoint_fenced(store.as_ref(), &keys, &cf, e1, u64::MAX / 2)
        .await
        .expect("fenced write");
    assert!(!wrote, "a write with a stale epoch must be refused");
    let after = persisted(store.as_ref(), &keys, "cf1").await;
    assert_eq!(after.0, before.0);
    assert!(after.2 < u64::MAX / 2);

    let c3 = upsert(&up.tidb, &[(6, "f"), (2, "b3")]);
    let (_, _, p3) = wait_persisted(store.as_ref(), &keys, "cf1", 20, |p| p.2 >= c3).await;
    assert_eq!(downstream_rows(&uri), upstream_rows(&up, p3));

    // restart the node on the same data dir / cluster: it resumes from the persisted checkpoint
    // under a new epoch
    within(30, "server shutdown", server.shutdown()).await;
    let saved = persisted(store.as_ref(), &keys, "cf1").await;
    assert!(saved.2 >= p3);
    drop(store);
    let c4 = upsert(&up.tidb, &[(7, "g"), (4, "d2")]);
    let server = within(30, "server restart", Server::start(cfg))
        .await
        .expect("server restarts");
    let api = Api::new(&server);
    let store = server.store().clone();
    let (e3, state, p4) = wait_persisted(store.as_ref(), &keys, "cf1", 20, |p| {
        p.2 >= c4 && p.0 > saved.0
    })
    .await;
    assert_eq!(state, "normal");
    assert!(e3 > e2, "a restart runs under a new epoch ({e2} -> {e3})");
    let diag = api
        .ok(
            reqwest::Method::GET,
            "/api/v2/changefeeds/cf1/diagnosis",
            None,
        )
        .await;
    assert_eq!(
        diag["runtime"]["start_checkpoint_ts"],
        json!(saved.2),
        "the restarted run starts at the persisted checkpoint: {diag}"
    );
    assert_eq!(diag["runtime"]["epoch"], json!(e3));
    assert_eq!(downstream_rows(&uri), upstream_rows(&up, p4));

    // remove: keys gone, run stopped
    api.ok(reqwest::Method::DELETE, "/api/v2/changefeeds/cf1", None)
        .await;
    within(10, "run stops after remove", async {
        while !server.coordinator().registry().running().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        load_changefeed(store.as_ref(), &keys, &cf)
            .await
            .expect("load")
            .is_none()
    );
    let (code, _) = api
        .call(reqwest::Method::GET, "/api/v2/changefeeds/cf1/status", None)
        .await;
    assert_eq!(code, 400);

    within(30, "server shutdown", server.shutdown()).await;
    up.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_with_the_embedded_store() {
    within(60, "lifecycle (embedded)", lifecycle(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_with_etcd() {
    let Some(ep) = support::etcd_endpoint("lifecycle_with_etcd") else {
        return;
    };
    let cluster = support::unique_cluster("srv");
    within(60, "lifecycle (etcd)", lifecycle(Some((ep, cluster)))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_cleanly() {
    // port already taken
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = tempfile::tempdir().expect("dir");
    let mut cfg = server_config(vec!["127.0.0.1:1".into()], dir.path(), None);
    cfg.addr = taken.local_addr().expect("addr");
    let err = within(10, "bind failure", Server::start(cfg.clone()))
        .await
        .expect_err("port in use");
    assert!(err.to_string().starts_with("cannot listen on"), "{err}");
    // invalid settings
    cfg.addr = "127.0.0.1:0".parse().expect("addr");
    cfg.workers = 0;
    let err = within(10, "config failure", Server::start(cfg))
        .await
        .expect_err("workers = 0");
    assert_eq!(err.to_string(), "workers must be at least 1");
}
