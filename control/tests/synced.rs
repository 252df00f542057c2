//! `GET /api/v2/changefeeds/{id}/synced` over HTTP with a controllable PD clock: every outcome
//! of ticdc.md §2.9, the interval defaults, and the PD failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tidal_control::api::synced::{INFO_CHECK_PD_TIKV, INFO_FINISHED, INFO_NOT_FINISHED};
use tidal_control::api::{ApiState, ServerInfo, serve_listener};
use tidal_control::gc::{GcConfig, GcManager, PdApi};
use tidal_control::meta::{EmbeddedStore, KeyLayout};
use tidal_control::metrics::Metrics;
use tidal_control::service::{ChangefeedService, ServiceConfig, WatermarkSource, Watermarks};
use tidal_ingest::pd::{PdError, ServiceSafePoint};
use tidal_model::Ts;

const LIMIT: Duration = Duration::from_secs(30);
/// 2023-11-30 15:14:11 UTC.
const T0: u64 = 1_701_357_251_000;

/// A PD whose clock the test sets.
#[derive(Debug, Default)]
struct ClockPd {
    now_ms: AtomicU64,
    down: AtomicBool,
    services: Mutex<HashMap<String, u64>>,
}

#[async_trait]
impl PdApi for ClockPd {
    fn cluster_id(&self) -> u64 {
        42
    }
    async fn get_ts(&self) -> Result<u64, PdError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PdError::Closed);
        }
        Ok(Ts::from_unix_millis(self.now_ms.load(Ordering::SeqCst)).0)
    }
    async fn get_gc_safe_point(&self) -> Result<u64, PdError> {
        Ok(0)
    }
    async fn update_service_gc_safe_point(
        &self,
        service_id: &str,
        ttl_secs: i64,
        safe_point: u64,
    ) -> Result<ServiceSafePoint, PdError> {
        let mut s = self.services.lock();
        if ttl_secs <= 0 {
            s.remove(service_id);
        } else {
            s.insert(service_id.to_string(), safe_point);
        }
        // Like a PD whose GC worker has never run: the minimum is the GC worker's 0.
        Ok(ServiceSafePoint {
            service_id: "gc_worker".into(),
            ttl: i64::MAX,
            min_safe_point: 0,
        })
    }
    async fn remove_service_gc_safe_point(
        &self,
        service_id: &str,
    ) -> Result<ServiceSafePoint, PdError> {
        self.update_service_gc_safe_point(service_id, 0, u64::MAX)
            .await
    }
}

/// Watermarks the test sets.
#[derive(Debug, Default)]
struct Marks(Mutex<Option<Watermarks>>);

impl WatermarkSource for Marks {
    fn watermarks(&self, _changefeed: &str) -> Option<Watermarks> {
        *self.0.lock()
    }
    fn diagnosis(&self, _changefeed: &str) -> Option<Value> {
        None
    }
}

struct Env {
    pd: Arc<ClockPd>,
    marks: Arc<Marks>,
    base: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

fn ts(ms: u64) -> u64 {
    Ts::from_unix_millis(ms).0
}

impl Env {
    async fn start() -> Env {
        let pd = Arc::new(ClockPd::default());
        pd.now_ms.store(T0, Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let pd_dyn: Arc<dyn PdApi> = pd.clone();
        let gc = Arc::new(GcManager::new(
            Arc::clone(&pd_dyn),
            GcConfig::for_cluster("default"),
            None,
        ));
        let service = Arc::new(ChangefeedService::new(
            Arc::new(store),
            KeyLayout::default(),
            pd_dyn,
            gc,
            ServiceConfig::default(),
        ));
        let marks = Arc::new(Marks::default());
        service.set_watermark_source(marks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = ApiState::new(
            service,
            ServerInfo::new("n", "default", "x"),
            Metrics::new(),
        );
        let server = tokio::spawn(serve_listener(listener, state));
        Env {
            pd,
            marks,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            server,
            _dir: dir,
        }
    }

    fn set_now(&self, ms: u64) {
        self.pd.now_ms.store(ms, Ordering::SeqCst);
    }

    fn set_marks(&self, checkpoint_ms: u64, last_synced_ms: u64, puller_ms: u64) {
        *self.marks.0.lock() = Some(Watermarks {
            checkpoint_ts: ts(checkpoint_ms),
            resolved_ts: ts(puller_ms),
            last_synced_ts: if last_synced_ms == 0 {
                0
            } else {
                ts(last_synced_ms)
            },
            puller_resolved_ts: if puller_ms == 0 { 0 } else { ts(puller_ms) },
            checksum_ok: true,
        });
    }

    async fn create(&self, id: &str, start_ms: u64, replica_config: Value) {
        let body = json!({
            "changefeed_id": id,
            "start_ts": ts(start_ms),
            "sink_uri": "blackhole://",
            "replica_config": replica_config,
        });
        let resp = self
            .http
            .post(format!("{}/api/v2/changefeeds", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}",
            resp.text().await.unwrap()
        );
    }

    async fn synced(&self, id: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}/api/v2/changefeeds/{id}/synced", self.base))
            .send()
            .await
            .unwrap();
        (resp.status(), resp.json().await.unwrap())
    }
}

#[tokio::test]
async fn synced_outcomes_over_http() {
    tokio::time::timeout(LIMIT, async {
        let e = Env::start().await;
        e.create("cf", T0 - 1_000, json!(null)).await;

        // Fresh changefeed, nothing written, checkpoint 1.4 s old → synced.
        e.set_now(T0 + 420);
        let (s, v) = e.synced("cf").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            v,
            json!({
                "synced": true,
                "sink_checkpoint_ts": "2023-11-30 15:14:10.000",
                "puller_resolved_ts": "1970-01-01 00:00:00.000",
                "last_synced_ts": "1970-01-01 00:00:00.000",
                "now_ts": "2023-11-30 15:14:11.000",
                "info": INFO_FINISHED,
            })
        );

        // Data written 10 s ago → not finished.
        e.set_marks(T0 - 1_000, T0 - 10_000, T0 - 500);
        let (_, v) = e.synced("cf").await;
        assert_eq!(v["synced"], false);
        assert_eq!(v["info"], INFO_NOT_FINISHED);
        assert_eq!(v["last_synced_ts"], "2023-11-30 15:14:01.000");
        assert_eq!(v["puller_resolved_ts"], "2023-11-30 15:14:10.500");

        // Ten minutes later, nothing written since; checkpoint stuck 10 min back, puller
        // resolved stuck just after it → check PD/TiKV.
        e.set_now(T0 + 600_000);
        let (_, v) = e.synced("cf").await;
        assert_eq!(v["synced"], false);
        assert_eq!(v["info"], INFO_CHECK_PD_TIKV);
        assert_eq!(v["now_ts"], "2023-11-30 15:24:11.000");

        // Puller far ahead of the checkpoint → the sink is behind → not finished.
        e.set_marks(T0 - 1_000, T0 - 10_000, T0 + 599_000);
        let (_, v) = e.synced("cf").await;
        assert_eq!(v["info"], INFO_NOT_FINISHED);

        // Checkpoint caught up → finished.
        e.set_marks(T0 + 598_000, T0 - 10_000, T0 + 599_000);
        let (_, v) = e.synced("cf").await;
        assert_eq!(v["synced"], true);
        assert_eq!(v["info"], INFO_FINISHED);
        assert_eq!(v["sink_checkpoint_ts"], "2023-11-30 15:24:09.000");

        // PD down → 500 ErrPDEtcdAPIError.
        e.pd.down.store(true, Ordering::SeqCst);
        let (s, v) = e.synced("cf").await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(v["error_code"], "CDC:ErrPDEtcdAPIError");
        assert!(
            v["error_msg"]
                .as_str()
                .unwrap()
                .starts_with("[CDC:ErrPDEtcdAPIError]fail to get ts from pd client"),
            "{v}"
        );
        e.pd.down.store(false, Ordering::SeqCst);

        // Unknown changefeed → 400.
        let (s, v) = e.synced("nope").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["error_code"], "CDC:ErrChangeFeedNotExists");
        e.server.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn synced_intervals_from_the_replica_config() {
    tokio::time::timeout(LIMIT, async {
        let e = Env::start().await;
        e.create(
            "custom",
            T0 - 1_000,
            json!({"synced_status": {"synced_check_interval": 10, "checkpoint_interval": 5}}),
        )
        .await;
        e.create(
            "half",
            T0 - 1_000,
            json!({"synced_status": {"synced_check_interval": 10, "checkpoint_interval": 0}}),
        )
        .await;
        // Last write 20 s ago, checkpoint 3 s ago.
        e.set_now(T0 + 30_000);
        e.set_marks(T0 + 27_000, T0 + 10_000, T0 + 29_000);
        let (_, v) = e.synced("custom").await;
        assert_eq!(v["info"], INFO_FINISHED, "S = 10 s: quiet long enough");
        let (_, v) = e.synced("half").await;
        assert_eq!(
            v["info"], INFO_NOT_FINISHED,
            "one interval 0 → both defaults (300 s): not quiet yet"
        );
        // Checkpoint 8 s old: beyond C = 5 s; puller 7 s past it (≥ 5 s) → not finished.
        e.set_marks(T0 + 22_000, T0 + 10_000, T0 + 29_000);
        let (_, v) = e.synced("custom").await;
        assert_eq!(v["info"], INFO_NOT_FINISHED);
        // Puller 4 s past it (< 5 s) → check PD/TiKV.
        e.set_marks(T0 + 22_000, T0 + 10_000, T0 + 26_000);
        let (_, v) = e.synced("custom").await;
        assert_eq!(v["info"], INFO_CHECK_PD_TIKV);
        e.server.abort();
    })
    .await
    .expect("test timed out");
}
