//! The Open API v2 end to end: a real `ChangefeedService` over the embedded metadata store and
//! the embedded cluster's PD, served on loopback and driven with an HTTP client.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tidal_control::api::{ApiState, ServerInfo, serve_listener};
use tidal_control::gc::{GcConfig, GcManager, PdApi};
use tidal_control::meta::{EmbeddedStore, KeyLayout};
use tidal_control::metrics::{Metrics, MetricsUpdater};
use tidal_control::service::{ChangefeedService, ServiceConfig, WatermarkSource, Watermarks};
use tidal_ingest::pd::{PdClient, PdConfig};
use tidal_model::Ts;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::pd::GC_WORKER_SERVICE_ID;

const LIMIT: Duration = Duration::from_secs(60);

struct Harness {
    sim: SimCluster,
    service: Arc<ChangefeedService>,
    metrics: Metrics,
    base: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let sim = SimCluster::start(SimConfig::default()).await.expect("sim");
        let pd = PdClient::connect(PdConfig::new(sim.pd_endpoints()))
            .await
            .expect("pd client");
        let pd: Arc<dyn PdApi> = Arc::new(pd);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).await.expect("store");
        let metrics = Metrics::new();
        let gc = Arc::new(GcManager::new(
            Arc::clone(&pd),
            GcConfig::for_cluster("default"),
            Some(metrics.clone()),
        ));
        let service = Arc::new(ChangefeedService::new(
            Arc::new(store),
            KeyLayout::default(),
            pd,
            gc,
            ServiceConfig {
                creator_version: "test".into(),
                advertise_addr: "127.0.0.1:8300".into(),
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = ApiState::new(
            Arc::clone(&service),
            ServerInfo::new("node-1", "default", &addr.to_string()),
            metrics.clone(),
        );
        let server = tokio::spawn(serve_listener(listener, state));
        Harness {
            sim,
            service,
            metrics,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
            server,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    async fn now(&self) -> u64 {
        self.service.tso().await.expect("tso")
    }

    async fn shutdown(self) {
        self.server.abort();
        self.sim.shutdown().await;
    }
}

#[track_caller]
fn assert_error(resp: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(resp.0, status, "body: {}", resp.1);
    assert_eq!(resp.1["error_code"], code, "body: {}", resp.1);
    let msg = resp.1["error_msg"].as_str().unwrap_or_default();
    assert!(msg.starts_with(&format!("[{code}]")), "error_msg {msg:?}");
}

fn ms_ago(now: u64, ms: u64) -> u64 {
    Ts::from_unix_millis(Ts(now).physical_ms() - ms).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_endpoints() {
    tokio::time::timeout(LIMIT, async {
        let h = Harness::start().await;
        let (s, v) = h.get("/api/v2/status").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["id"], "node-1");
        assert_eq!(v["cluster_id"], "default");
        assert_eq!(v["is_owner"], true);
        assert_eq!(v["liveness"], 0);
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(h.get("/status").await.1, v);

        assert_eq!(h.get("/api/v2/health").await, (StatusCode::OK, json!({})));

        let (s, v) = h.get("/api/v2/captures").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["total"], 1);
        assert_eq!(v["items"][0]["id"], "node-1");
        assert_eq!(v["items"][0]["is_owner"], true);
        assert_eq!(v["items"][0]["cluster_id"], "default");

        let before = h.now().await;
        let (s, v) = h.post("/api/v2/tso", "").await;
        assert_eq!(s, StatusCode::OK);
        let ts = (v["timestamp"].as_u64().unwrap() << 18) | v["logic_time"].as_u64().unwrap();
        assert!(ts > before, "{ts} <= {before}");
        assert!(ts < h.now().await);

        assert_eq!(
            h.post("/api/v2/log", r#"{"log_level":"debug"}"#).await,
            (StatusCode::OK, json!({}))
        );
        assert_error(
            &h.post("/api/v2/log", r#"{"log_level":"loud"}"#).await,
            StatusCode::BAD_REQUEST,
            "CDC:ErrAPIInvalidParam",
        );
        assert_error(
            &h.post("/api/v2/log", "{not json").await,
            StatusCode::BAD_REQUEST,
            "CDC:ErrAPIInvalidParam",
        );

        let (s, v) = h
            .post("/api/v2/log/redact", r#"{"redact_info_log":"marker"}"#)
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v, json!({"previous_mode": "off", "current_mode": "marker"}));
        assert_error(
            &h.post("/api/v2/log/redact", r#"{"redact_info_log":"off"}"#)
                .await,
            StatusCode::BAD_REQUEST,
            "CDC:ErrAPIInvalidParam",
        );

        assert_eq!(
            h.post("/api/v2/owner/resign", "").await,
            (StatusCode::OK, json!({}))
        );
        let (s, v) = h.get("/api/v2/processors").await;
        assert_eq!((s, v), (StatusCode::OK, json!({"total": 0, "items": []})));
        h.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changefeed_lifecycle() {
    tokio::time::timeout(LIMIT, async {
        let h = Harness::start().await;
        let start = ms_ago(h.now().await, 2_000);
        let body = json!({
            "changefeed_id": "cf-1",
            "start_ts": start,
            "sink_uri": "blackhole://",
            "replica_config": {"filter": {"rules": ["test.*"]}, "memory_quota": 1048576}
        });
        let (s, v) = h
            .post("/api/v2/changefeeds?keyspace=default", &body.to_string())
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["id"], "cf-1");
        assert_eq!(v["keyspace"], "default");
        assert_eq!(v["state"], "normal");
        assert_eq!(v["start_ts"], start);
        assert_eq!(v["checkpoint_ts"], start);
        assert_eq!(v["resolved_ts"], start);
        assert_eq!(v["checkpoint_time"], Ts(start).to_string());
        assert_eq!(v["sink_uri"], "blackhole://");
        assert_eq!(v["creator_version"], "test");
        assert_eq!(v["upstream_id"], h.sim.cluster_id());
        assert_eq!(v["config"]["filter"]["rules"], json!(["test.*"]));
        assert_eq!(v["config"]["memory_quota"], 1048576);
        assert_eq!(v["config"]["check_gc_safe_point"], true);
        assert_eq!(v["config"]["sync_point_interval"], "10m0s");
        assert_eq!(
            v["config"]["synced_status"],
            json!({"synced_check_interval": 300, "checkpoint_interval": 15})
        );
        assert!(v.get("error").is_none());
        assert!(v["gid"]["low"].is_u64() && v["gid"]["high"].is_u64());
        assert!(v["create_time"].as_str().unwrap().ends_with('Z'));

        // GET returns the same document.
        let (s, got) = h.get("/api/v2/changefeeds/cf-1").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(got, v);

        // A second changefeed with a generated id and a masked password.
        let (s, v2) = h
            .post(
                "/api/v2/changefeeds",
                r#"{"sink_uri":"mysql://root:s3cret@127.0.0.1:3306/"}"#,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v2}");
        let gen_id = v2["id"].as_str().unwrap().to_string();
        assert_eq!(gen_id.len(), 36, "{gen_id}");
        assert_eq!(v2["sink_uri"], "mysql://root:xxxxx@127.0.0.1:3306/");
        assert!(!v2.to_string().contains("s3cret"));

        let (s, list) = h.get("/api/v2/changefeeds").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(list["total"], 2);
        let item = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == "cf-1")
            .unwrap()
            .clone();
        assert_eq!(
            item,
            json!({
                "upstream_id": h.sim.cluster_id(),
                "id": "cf-1",
                "keyspace": "default",
                "state": "normal",
                "checkpoint_tso": start,
                "checkpoint_time": Ts(start).to_string(),
                "error": null
            })
        );

        let (s, st) = h.get("/api/v2/changefeeds/cf-1/status").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            st,
            json!({"state": "normal", "resolved_ts": start, "checkpoint_ts": start})
        );

        // Update while running is refused.
        let r = h
            .put(
                "/api/v2/changefeeds/cf-1",
                r#"{"sink_uri":"blackhole://?x=1"}"#,
            )
            .await;
        assert_error(
            &r,
            StatusCode::BAD_REQUEST,
            "CDC:ErrChangefeedUpdateRefused",
        );
        assert!(
            r.1["error_msg"]
                .as_str()
                .unwrap()
                .contains("can only update changefeed config when it is stopped or failed")
        );
        // Resume while running is refused.
        assert_error(
            &h.post("/api/v2/changefeeds/cf-1/resume", "").await,
            StatusCode::BAD_REQUEST,
            "CDC:ErrChangefeedUpdateRefused",
        );

        // Pause.
        assert_eq!(
            h.post("/api/v2/changefeeds/cf-1/pause", "").await,
            (StatusCode::OK, json!({}))
        );
        let (_, st) = h.get("/api/v2/changefeeds/cf-1/status").await;
        assert_eq!(st["state"], "stopped");
        let (_, list) = h.get("/api/v2/changefeeds?state=stopped").await;
        assert_eq!(list["total"], 1);
        assert_eq!(list["items"][0]["id"], "cf-1");
        let (_, list) = h.get("/api/v2/changefeeds?state=normal").await;
        assert_eq!(list["total"], 1);
        assert_eq!(list["items"][0]["id"], gen_id.as_str());

        // Update while stopped: start_ts refused, bad target refused, a good one applies.
        assert_error(
            &h.put("/api/v2/changefeeds/cf-1", r#"{"start_ts": 5}"#)
                .await,
            StatusCode::BAD_REQUEST,
            "CDC:ErrAPIInvalidParam",
        );
        assert_error(
            &h.put(
                "/api/v2/changefeeds/cf-1",
                &json!({"target_ts": start}).to_string(),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "CDC:ErrChangefeedUpdateRefused",
        );
        assert_error(
            &h.put("/api/v2/changefeeds/cf-1", r#"{"sink_uri":"nope://x"}"#)
                .await,
            StatusCode::BAD_REQUEST,
            "CDC:ErrSinkURIInvalid",
        );
        assert_error(
            &h.put("/api/v2/changefeeds/cf-1", "[]").await,
            StatusCode::BAD_REQUEST,
            "CDC:ErrAPIInvalidParam",
        );
        let target = start + (10 << 18);
        let (s, v) = h
            .put(
                "/api/v2/changefeeds/cf-1",
                &json!({
                    "target_ts": target,
                    "sink_uri": "mysql://u:pw@10.0.0.1:4000/",
                    "replica_config": {"check_gc_safe_point": false}
                })
                .to_string(),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["target_ts"], target);
        assert_eq!(v["sink_uri"], "mysql://u:xxxxx@10.0.0.1:4000/");
        assert_eq!(v["state"], "stopped");
        // the whole config is replaced: the filter is back to the default
        assert_eq!(v["config"]["filter"]["rules"], json!(["*.*"]));
        assert_eq!(v["config"]["check_gc_safe_point"], false);

        // Resume, with an overwrite from the future refused first.
        let future = h.now().await + (3_600_000 << 18);
        assert_error(
            &h.post(
                "/api/v2/changefeeds/cf-1/resume",
                &json!({"overwrite_checkpoint_ts": future}).to_string(),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "CDC:ErrAPIInvalidParam",
        );
        let epoch_before = h.service.get(&cf("cf-1")).await.unwrap().info.epoch;
        let new_ckpt = start + (1 << 18);
        assert_eq!(
            h.post(
                "/api/v2/changefeeds/cf-1/resume",
                &json!({"overwrite_checkpoint_ts": new_ckpt}).to_string()
            )
            .await,
            (StatusCode::OK, json!({}))
        );
        let view = h.service.get(&cf("cf-1")).await.unwrap();
        assert!(view.info.epoch > epoch_before);
        let (_, st) = h.get("/api/v2/changefeeds/cf-1/status").await;
        assert_eq!(
            st,
            json!({"state": "normal", "resolved_ts": new_ckpt, "checkpoint_ts": new_ckpt})
        );

        // Processors list the running changefeeds.
        let (_, p) = h.get("/api/v2/processors").await;
        assert_eq!(p["total"], 2);
        let (s, p) = h.get("/api/v2/processors/cf-1/node-1").await;
        assert_eq!((s, p), (StatusCode::OK, json!({"table_ids": []})));

        // Metadata dump has both keys of cf-1.
        let (_, md) = h.get("/api/v2/unsafe/metadata").await;
        let keys: Vec<&str> = md
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| kv["key"].as_str().unwrap())
            .collect();
        assert!(
            keys.contains(&"/tidb/cdc/default/default/changefeed/info/cf-1"),
            "{keys:?}"
        );
        assert!(keys.contains(&"/tidb/cdc/default/default/changefeed/status/cf-1"));

        // Remove; removing again answers 200 null.
        assert_eq!(
            h.delete("/api/v2/changefeeds/cf-1").await,
            (StatusCode::OK, json!({}))
        );
        assert_eq!(
            h.delete("/api/v2/changefeeds/cf-1").await,
            (StatusCode::OK, Value::Null)
        );
        assert_error(
            &h.get("/api/v2/changefeeds/cf-1").await,
            StatusCode::BAD_REQUEST,
            "CDC:ErrChangeFeedNotExists",
        );
        let (_, list) = h.get("/api/v2/changefeeds?state=all").await;
        assert_eq!(list["total"], 1);
        h.shutdown().await;
    })
    .await
    .expect("test timed out");
}

fn cf(id: &str) -> tidal_control::meta::ChangefeedRef {
    tidal_control::meta::ChangefeedRef::new(id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors() {
    tokio::time::timeout(LIMIT, async {
        let h = Harness::start().await;
        let bad = StatusCode::BAD_REQUEST;
        // Bad JSON bodies.
        for body in ["{", "[1,2]", r#"{"start_ts": "soon"}"#, r#"{"start_ts": -1}"#, ""] {
            assert_error(
                &h.post("/api/v2/changefeeds", body).await,
                bad,
                "CDC:ErrAPIInvalidParam",
            );
        }
        assert_error(
            &h.post(
                "/api/v2/changefeeds",
                r#"{"changefeed_id":"a","sink_uri":"blackhole://","replica_config":{"memory_quota":"x"}}"#,
            )
            .await,
            bad,
            "CDC:ErrAPIInvalidParam",
        );
        // Invalid ids, in the body and in the path.
        for id in ["bad_id", "-x", "a--b", "中文", &"a".repeat(129)] {
            let r = h
                .post(
                    "/api/v2/changefeeds",
                    &json!({"changefeed_id": id, "sink_uri": "blackhole://"}).to_string(),
                )
                .await;
            assert_error(&r, bad, "CDC:ErrAPIInvalidParam");
            assert_eq!(
                r.1["error_msg"],
                format!("[CDC:ErrAPIInvalidParam]invalid changefeed_id: {id}")
            );
        }
        for path in [
            "/api/v2/changefeeds/bad_id",
            "/api/v2/changefeeds/bad_id/status",
            "/api/v2/changefeeds/bad_id/synced",
            "/api/v2/changefeeds/a--b/diagnosis",
        ] {
            assert_error(&h.get(path).await, bad, "CDC:ErrAPIInvalidParam");
        }
        assert_error(
            &h.post("/api/v2/changefeeds/bad_id/pause", "").await,
            bad,
            "CDC:ErrAPIInvalidParam",
        );
        assert_error(
            &h.delete("/api/v2/changefeeds/bad_id").await,
            bad,
            "CDC:ErrAPIInvalidParam",
        );
        // Unknown changefeed everywhere.
        for path in [
            "/api/v2/changefeeds/ghost",
            "/api/v2/changefeeds/ghost/status",
            "/api/v2/changefeeds/ghost/synced",
            "/api/v2/changefeeds/ghost/diagnosis",
        ] {
            let r = h.get(path).await;
            assert_error(&r, bad, "CDC:ErrChangeFeedNotExists");
            assert_eq!(
                r.1["error_msg"],
                "[CDC:ErrChangeFeedNotExists]changefeed not exists, ghost"
            );
        }
        for path in ["/api/v2/changefeeds/ghost/pause", "/api/v2/changefeeds/ghost/resume"] {
            assert_error(&h.post(path, "").await, bad, "CDC:ErrChangeFeedNotExists");
        }
        assert_error(
            &h.put("/api/v2/changefeeds/ghost", "{}").await,
            bad,
            "CDC:ErrChangeFeedNotExists",
        );
        // Sink URI problems, with the password masked.
        let r = h
            .post(
                "/api/v2/changefeeds",
                r#"{"changefeed_id":"s1","sink_uri":"mysql://root:hunter2@127.0.0.1:3306/?no-such-param=1"}"#,
            )
            .await;
        assert_error(&r, bad, "CDC:ErrSinkURIInvalid");
        assert!(!r.1.to_string().contains("hunter2"), "{}", r.1);
        assert!(r.1["error_msg"].as_str().unwrap().contains("root:xxxxx@"));
        assert_error(
            &h.post("/api/v2/changefeeds", r#"{"changefeed_id":"s2"}"#).await,
            bad,
            "CDC:ErrSinkURIInvalid",
        );
        // Start/target ts.
        let now = h.now().await;
        let r = h
            .post(
                "/api/v2/changefeeds",
                &json!({"changefeed_id":"t1","sink_uri":"blackhole://","start_ts": now, "target_ts": now}).to_string(),
            )
            .await;
        assert_error(&r, bad, "CDC:ErrTargetTsBeforeStartTs");
        assert_eq!(
            r.1["error_msg"],
            format!("[CDC:ErrTargetTsBeforeStartTs]fail to create changefeed because target-ts {now} is earlier than start-ts {now}")
        );
        let r = h
            .post(
                "/api/v2/changefeeds",
                &json!({"changefeed_id":"t2","sink_uri":"blackhole://","start_ts": now + (3_600_000u64 << 18)}).to_string(),
            )
            .await;
        assert_error(&r, bad, "CDC:ErrAPIInvalidParam");
        // Duplicate.
        let ok = h
            .post("/api/v2/changefeeds", r#"{"changefeed_id":"dup","sink_uri":"blackhole://"}"#)
            .await;
        assert_eq!(ok.0, StatusCode::OK, "{}", ok.1);
        let r = h
            .post("/api/v2/changefeeds", r#"{"changefeed_id":"dup","sink_uri":"blackhole://"}"#)
            .await;
        assert_error(&r, bad, "CDC:ErrChangeFeedAlreadyExists");
        assert_eq!(
            r.1["error_msg"],
            "[CDC:ErrChangeFeedAlreadyExists]changefeed already exists, dup"
        );
        // Invalid replica config → TiCDC's 500.
        assert_error(
            &h.post(
                "/api/v2/changefeeds",
                r#"{"changefeed_id":"rc","sink_uri":"blackhole://","replica_config":{"performance_mode":"warp"}}"#,
            )
            .await,
            StatusCode::INTERNAL_SERVER_ERROR,
            "CDC:ErrInvalidReplicaConfig",
        );
        // Nothing half-created.
        let (_, list) = h.get("/api/v2/changefeeds?state=all").await;
        assert_eq!(list["total"], 1, "{list}");
        // Resume with a bad body.
        assert_error(
            &h.post("/api/v2/changefeeds/dup/resume", "{oops").await,
            bad,
            "CDC:ErrAPIInvalidParam",
        );
        h.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// Physical GC safe point `p`, minimum service safe point `s > p` (TiDB's GC worker reserved up
/// to `s` but GC has not run that far).
async fn gc_state(h: &Harness, p: u64, s: u64) {
    assert_eq!(h.sim.faults().run_gc(p), p);
    let min = h
        .sim
        .pd()
        .update_service_safe_point(GC_WORKER_SERVICE_ID, i64::MAX, s);
    assert_eq!(min.safe_point, s);
    assert_eq!(h.sim.pd().gc_safe_point(), p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_gc_checks() {
    tokio::time::timeout(LIMIT, async {
        let h = Harness::start().await;
        let now = h.now().await;
        let p = ms_ago(now, 60_000);
        let s = ms_ago(now, 30_000);
        gc_state(&h, p, s).await;
        let between = ms_ago(now, 45_000);
        let below = ms_ago(now, 90_000);
        let create = |id: &str, start: u64, check: bool| {
            json!({
                "changefeed_id": id,
                "start_ts": start,
                "sink_uri": "blackhole://",
                "replica_config": {"check_gc_safe_point": check}
            })
            .to_string()
        };
        // check_gc_safe_point = true: below the service safe point fails.
        let r = h.post("/api/v2/changefeeds", &create("c1", between, true)).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "CDC:ErrStartTsBeforeGC");
        assert_eq!(
            r.1["error_msg"],
            format!("[CDC:ErrStartTsBeforeGC]fail to create or maintain changefeed because start-ts {between} is earlier than or equal to GC safepoint at {s}")
        );
        // exactly at the minimum also fails (start_ts < min + 1)
        assert_error(
            &h.post("/api/v2/changefeeds", &create("c1", s, true)).await,
            StatusCode::BAD_REQUEST,
            "CDC:ErrStartTsBeforeGC",
        );
        let r = h.post("/api/v2/changefeeds", &create("c1", below, true)).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "CDC:ErrStartTsBeforeGC");
        // check_gc_safe_point = false: above the physical safe point is fine ...
        let (st, v) = h.post("/api/v2/changefeeds", &create("c2", between, false)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["checkpoint_ts"], between);
        assert_eq!(v["config"]["check_gc_safe_point"], false);
        // ... exactly at it too ...
        let (st, v) = h.post("/api/v2/changefeeds", &create("c3", p, false)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        // ... below it the snapshot is lost.
        let r = h.post("/api/v2/changefeeds", &create("c4", below, false)).await;
        assert_error(&r, StatusCode::INTERNAL_SERVER_ERROR, "CDC:ErrSnapshotLostByGC");
        assert_eq!(
            r.1["error_msg"],
            format!("[CDC:ErrSnapshotLostByGC]fail to create or maintain changefeed due to snapshot loss caused by GC. checkpoint-ts {below} is earlier than or equal to GC safepoint at {p}")
        );
        // Failed creations left no temporary reservation: only gc_worker / the cluster one.
        let probe = h.sim.pd().update_service_safe_point(b"probe", 0, u64::MAX);
        assert_eq!(probe.safe_point, s, "{probe:?}");
        let (_, list) = h.get("/api/v2/changefeeds").await;
        assert_eq!(list["total"], 2);
        h.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[derive(Debug)]
struct FixedWatermarks(Watermarks);

impl WatermarkSource for FixedWatermarks {
    fn watermarks(&self, changefeed: &str) -> Option<Watermarks> {
        (changefeed == "live").then_some(self.0)
    }
    fn diagnosis(&self, changefeed: &str) -> Option<Value> {
        (changefeed == "live").then(|| json!({"spans": 3, "stalled": []}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_watermarks_diagnosis_and_metrics() {
    tokio::time::timeout(LIMIT, async {
        let h = Harness::start().await;
        let now = h.now().await;
        let start = ms_ago(now, 20_000);
        for id in ["live", "idle"] {
            let (s, v) = h
                .post(
                    "/api/v2/changefeeds",
                    &json!({"changefeed_id": id, "start_ts": start, "sink_uri": "blackhole://"})
                        .to_string(),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
        let wm = Watermarks {
            checkpoint_ts: ms_ago(now, 5_000),
            resolved_ts: ms_ago(now, 1_000),
            last_synced_ts: ms_ago(now, 6_000),
            puller_resolved_ts: ms_ago(now, 500),
            checksum_ok: true,
        };
        h.service
            .set_watermark_source(Arc::new(FixedWatermarks(wm)));
        let (_, st) = h.get("/api/v2/changefeeds/live/status").await;
        assert_eq!(
            st,
            json!({"state": "normal", "resolved_ts": wm.resolved_ts, "checkpoint_ts": wm.checkpoint_ts})
        );
        let (_, st) = h.get("/api/v2/changefeeds/idle/status").await;
        assert_eq!(st["checkpoint_ts"], start);

        let (s, d) = h.get("/api/v2/changefeeds/live/diagnosis").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(d["runtime"], json!({"spans": 3, "stalled": []}));
        assert_eq!(d["watermarks"]["checksum_ok"], true);
        assert_eq!(d["persisted_checkpoint_ts"], start);
        assert_eq!(d["checkpoint_ts"], wm.checkpoint_ts);
        let (_, d) = h.get("/api/v2/changefeeds/idle/diagnosis").await;
        assert_eq!(d["runtime"], Value::Null);
        assert_eq!(d["state"], "normal");

        // Synced: written 6 s ago (< 300 s) → not finished; idle has no data → finished.
        let (_, sy) = h.get("/api/v2/changefeeds/live/synced").await;
        assert_eq!(sy["synced"], false);
        assert_eq!(sy["info"], "The data syncing is not finished, please wait");
        assert_eq!(sy["last_synced_ts"], Ts(wm.last_synced_ts).to_string());
        let (_, sy) = h.get("/api/v2/changefeeds/idle/synced").await;
        // idle's checkpoint is 20 s old (> 15 s): quiet but lagging, puller unknown → check PD.
        assert_eq!(sy["synced"], false);
        assert!(sy["info"].as_str().unwrap().starts_with("Please check whether PD is online"));
        assert!(sy["now_ts"].as_str().unwrap().ends_with(".000"));

        // Metrics.
        let updater = MetricsUpdater::new(Arc::clone(&h.service), h.metrics.clone());
        updater.refresh().await.expect("refresh");
        h.metrics
            .record_sink_batches("default", "live", "blackhole", 1, 5, 500);
        let resp = h
            .http
            .get(format!("{}/metrics", h.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let text = resp.text().await.unwrap();
        for name in [
            "ticdc_owner_checkpoint_ts{changefeed=\"live\",namespace=\"default\"}",
            "ticdc_owner_checkpoint_ts_lag{changefeed=\"idle\",keyspace_id=\"0\",namespace=\"default\"}",
            "ticdc_owner_resolved_ts{changefeed=\"live\",namespace=\"default\"}",
            "ticdc_owner_resolved_ts_lag{",
            "ticdc_owner_status{changefeed=\"live\",keyspace_id=\"0\",namespace=\"default\"} 0",
            "ticdc_sink_batch_row_count_count{",
            "ticdc_sink_write_bytes_total{changefeed=\"live\",namespace=\"default\",type=\"blackhole\"} 500",
            "ticdc_sink_dml_event_count{changefeed=\"live\",namespace=\"default\"} 5",
            "ticdc_gc_min_service_gc_safepoint ",
            "ticdc_gc_cdc_gc_safepoint ",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        let expect_ckpt = format!(
            "ticdc_owner_checkpoint_ts{{changefeed=\"live\",namespace=\"default\"}} {}",
            Ts(wm.checkpoint_ts).physical_ms()
        );
        assert!(text.contains(&expect_ckpt), "{expect_ckpt} in\n{text}");
        let cdc_sp = format!("ticdc_gc_cdc_gc_safepoint {}", Ts(start - 1).physical_ms());
        assert!(text.contains(&cdc_sp), "{cdc_sp} in\n{text}");

        // Pausing drops the lag series; removing drops the changefeed's series.
        h.post("/api/v2/changefeeds/idle/pause", "").await;
        h.delete("/api/v2/changefeeds/live").await;
        updater.refresh().await.expect("refresh");
        let text = h.metrics.encode();
        for owner in ["ticdc_owner_checkpoint_ts{changefeed=\"live\"", "ticdc_owner_status{changefeed=\"live\"", "ticdc_owner_resolved_ts{changefeed=\"live\""] {
            assert!(!text.contains(owner), "{owner} in {text}");
        }
        assert!(!text.contains("ticdc_owner_checkpoint_ts_lag{changefeed=\"idle\""));
        assert!(text.contains(
            "ticdc_owner_status{changefeed=\"idle\",keyspace_id=\"0\",namespace=\"default\"} 3"
        ));
        h.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_delete_service_gc_safepoint_and_health() {
    tokio::time::timeout(LIMIT, async {
        let h = Harness::start().await;
        let now = h.now().await;
        let start = ms_ago(now, 10_000);
        h.post(
            "/api/v2/changefeeds",
            &json!({"changefeed_id": "g", "start_ts": start, "sink_uri": "blackhole://"})
                .to_string(),
        )
        .await;
        // The cluster reservation holds GC at start - 1.
        assert_eq!(h.sim.faults().run_gc(now), start - 1);
        assert_eq!(
            h.delete("/api/v2/unsafe/service_gc_safepoint").await,
            (StatusCode::OK, json!({}))
        );
        assert_eq!(h.sim.faults().run_gc(now), now);
        h.shutdown().await;
    })
    .await
    .expect("test timed out");
}
