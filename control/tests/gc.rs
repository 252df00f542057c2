//! GC safe point handling against the embedded cluster's PD: the cluster reservation follows
//! `min(checkpoint) − 1`, paused changefeeds hold it, the last removal deletes it, and
//! changefeeds GC made unrecoverable are failed and released.

use std::sync::Arc;
use std::time::Duration;

use tidal_control::gc::{GcConfig, GcManager, PdApi};
use tidal_control::meta::{ChangefeedRef, EmbeddedStore, FeedState, KeyLayout};
use tidal_control::service::{
    ChangefeedService, CreateRequest, ErrorCode, ServiceConfig, replica_config_from_api,
};
use tidal_ingest::pd::{PdClient, PdConfig};
use tidal_model::Ts;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::pd::GC_WORKER_SERVICE_ID;

const LIMIT: Duration = Duration::from_secs(60);
const SERVICE: &str = "tidal-default";

struct Env {
    sim: SimCluster,
    service: Arc<ChangefeedService>,
    _dir: tempfile::TempDir,
}

async fn env(gc_ttl: Duration) -> Env {
    let sim = SimCluster::start(SimConfig::default()).await.expect("sim");
    let pd: Arc<dyn PdApi> = Arc::new(
        PdClient::connect(PdConfig::new(sim.pd_endpoints()))
            .await
            .expect("pd"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).await.expect("store");
    let gc = Arc::new(GcManager::new(
        Arc::clone(&pd),
        GcConfig {
            service_id: SERVICE.into(),
            gc_ttl,
        },
        None,
    ));
    let service = Arc::new(ChangefeedService::new(
        Arc::new(store),
        KeyLayout::default(),
        pd,
        gc,
        ServiceConfig::default(),
    ));
    Env {
        sim,
        service,
        _dir: dir,
    }
}

impl Env {
    async fn now(&self) -> u64 {
        self.service.tso().await.expect("tso")
    }

    async fn create(&self, id: &str, start_ts: u64, check: bool) -> Result<(), ErrorCode> {
        self.service
            .create(CreateRequest {
                keyspace: "default".into(),
                id: id.into(),
                start_ts,
                target_ts: 0,
                sink_uri: "blackhole://".into(),
                replica_config: replica_config_from_api(Some(
                    serde_json::json!({"check_gc_safe_point": check}),
                ))
                .unwrap(),
            })
            .await
            .map(|_| ())
            .map_err(|e| e.code)
    }

    /// Who holds PD's minimum service safe point, and where.
    fn min_service(&self) -> (String, u64) {
        let m = self
            .sim
            .pd()
            .update_service_safe_point(b"probe", 0, u64::MAX);
        (
            String::from_utf8_lossy(&m.service_id).into_owned(),
            m.safe_point,
        )
    }

    async fn state(&self, id: &str) -> FeedState {
        self.service.get(&cf(id)).await.unwrap().info.state
    }
}

fn cf(id: &str) -> ChangefeedRef {
    ChangefeedRef::new(id).unwrap()
}

fn ms_ago(now: u64, ms: u64) -> u64 {
    Ts::from_unix_millis(Ts(now).physical_ms() - ms).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_changefeed_holds_gc_and_last_removal_deletes_it() {
    tokio::time::timeout(LIMIT, async {
        let e = env(Duration::from_secs(24 * 3600)).await;
        let now = e.now().await;
        let a = ms_ago(now, 60_000);
        let b = ms_ago(now, 30_000);
        e.create("a", a, true).await.unwrap();
        e.create("b", b, true).await.unwrap();
        // The temporary -creating- reservations were dropped once the cluster one covered them.
        assert!(e.service.gc().pending_temporary().is_empty());
        let report = e.service.gc().last_report();
        assert_eq!(report.service_safe_point, Some(a - 1));

        // GC is held at min(checkpoint) − 1.
        assert_eq!(e.sim.faults().run_gc(now), a - 1);
        assert_eq!(e.min_service(), (SERVICE.to_string(), a - 1));

        // Pause a, remove b: the paused one still holds GC.
        e.service.pause(&cf("a")).await.unwrap();
        assert!(e.service.remove(&cf("b")).await.unwrap());
        let report = e.service.gc_tick().await.unwrap();
        assert_eq!(report.service_safe_point, Some(a - 1));
        assert!(report.is_blocker);
        assert!(report.failures.is_empty());
        assert_eq!(e.state("a").await, FeedState::Stopped);
        let later = e.now().await;
        assert_eq!(e.sim.faults().run_gc(later), a - 1);

        // Removing the last changefeed deletes the reservation: GC moves on.
        assert!(e.service.remove(&cf("a")).await.unwrap());
        let report = e.service.gc().last_report();
        assert_eq!(report.service_safe_point, None);
        assert!(!report.is_blocker);
        assert_eq!(e.sim.faults().run_gc(later), later);
        let (holder, _) = e.min_service();
        assert_eq!(holder.as_bytes(), GC_WORKER_SERVICE_ID);
        e.sim.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_loss_fails_the_changefeed_and_releases_it() {
    tokio::time::timeout(LIMIT, async {
        let e = env(Duration::from_secs(24 * 3600)).await;
        let now = e.now().await;
        let a = ms_ago(now, 60_000);
        let b = ms_ago(now, 30_000);
        e.create("a", a, true).await.unwrap();
        e.create("b", b, true).await.unwrap();
        // GC forced past a's checkpoint (ignoring reservations).
        let physical = ms_ago(now, 45_000);
        e.sim.faults().advance_gc_safe_point(physical);

        let report = e.service.gc_tick().await.unwrap();
        assert_eq!(report.physical_safe_point, physical);
        assert_eq!(report.failures.len(), 1);
        assert_eq!(report.failures[0].changefeed, cf("a"));
        assert_eq!(report.failures[0].error.code, ErrorCode::SnapshotLostByGc);
        // a no longer holds GC; b does.
        assert_eq!(report.service_safe_point, Some(b - 1));

        let view = e.service.get(&cf("a")).await.unwrap();
        assert_eq!(view.info.state, FeedState::Failed);
        let err = view.info.error.expect("error recorded");
        assert_eq!(err.code, "CDC:ErrSnapshotLostByGC");
        assert_eq!(
            err.message,
            format!(
                "[CDC:ErrSnapshotLostByGC]fail to create or maintain changefeed due to snapshot \
                 loss caused by GC. checkpoint-ts {a} is earlier than or equal to GC safepoint at \
                 {physical}"
            )
        );
        assert!(err.time.is_some());
        // The next tick does not report it again (failed by GC no longer holds).
        let report = e.service.gc_tick().await.unwrap();
        assert!(report.failures.is_empty());

        // Resuming from the lost checkpoint is refused; from a ts GC has not passed, it works.
        let r = e.service.resume(&cf("a"), None).await.unwrap_err();
        assert_eq!(r.code, ErrorCode::SnapshotLostByGc, "{r}");
        assert_eq!(e.state("a").await, FeedState::Failed);
        let from = ms_ago(now, 10_000);
        e.service.resume(&cf("a"), Some(from)).await.unwrap();
        let view = e.service.get(&cf("a")).await.unwrap();
        assert_eq!(view.info.state, FeedState::Normal);
        assert_eq!(view.info.error, None);
        assert_eq!(view.status.checkpoint_ts, from);
        assert!(e.service.gc().pending_temporary().is_empty());
        assert_eq!(e.service.gc().last_report().service_safe_point, Some(b - 1));
        e.sim.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_ttl_exceeded_only_when_we_block_gc() {
    tokio::time::timeout(LIMIT, async {
        let e = env(Duration::from_secs(30)).await;
        let now = e.now().await;
        let old = ms_ago(now, 120_000);
        let fresh = ms_ago(now, 5_000);
        e.create("old", old, true).await.unwrap();
        e.create("fresh", fresh, true).await.unwrap();
        // TiDB's GC worker is still at 0: Tidal is not the blocker, nothing fails.
        let report = e.service.gc_tick().await.unwrap();
        assert!(!report.is_blocker);
        assert!(report.failures.is_empty());
        assert_eq!(report.service_safe_point, Some(old - 1));

        // A GC round: Tidal's reservation is now what holds GC back, 120 s > gc-ttl 30 s.
        assert_eq!(e.sim.faults().run_gc(now), old - 1);
        let report = e.service.gc_tick().await.unwrap();
        assert_eq!(report.failures.len(), 1, "{report:?}");
        assert_eq!(report.failures[0].changefeed, cf("old"));
        assert_eq!(report.failures[0].error.code, ErrorCode::GcTtlExceeded);
        // Released at once, down to the remaining changefeed.
        assert_eq!(report.service_safe_point, Some(fresh - 1));
        let view = e.service.get(&cf("old")).await.unwrap();
        assert_eq!(view.info.state, FeedState::Failed);
        assert_eq!(view.info.error.unwrap().code, "CDC:ErrGCTTLExceeded");
        assert_eq!(e.sim.faults().run_gc(now), fresh - 1);
        assert_eq!(e.state("fresh").await, FeedState::Normal);
        e.sim.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchecked_create_below_service_min_keeps_its_temporary_reservation_queued() {
    tokio::time::timeout(LIMIT, async {
        let e = env(Duration::from_secs(24 * 3600)).await;
        let now = e.now().await;
        let p = ms_ago(now, 60_000);
        let s = ms_ago(now, 30_000);
        assert_eq!(e.sim.faults().run_gc(p), p);
        e.sim
            .pd()
            .update_service_safe_point(GC_WORKER_SERVICE_ID, i64::MAX, s);
        let start = ms_ago(now, 45_000);
        assert_eq!(
            e.create("x", start, true).await,
            Err(ErrorCode::StartTsBeforeGc)
        );
        e.create("x", start, false).await.unwrap();
        // PD refused the cluster reservation below its minimum, so it does not cover the
        // temporary one (which PD refused as well); it stays queued until its TTL.
        let report = e.service.gc().last_report();
        assert_eq!(report.service_safe_point, Some(start - 1));
        assert_eq!(report.min_service_safe_point, s);
        assert_eq!(
            e.service.gc().pending_temporary(),
            vec!["tidal-default-creating-default_x".to_string()]
        );
        // Nothing was lost yet: the changefeed keeps running.
        let report = e.service.gc_tick().await.unwrap();
        assert!(report.failures.is_empty());
        // Once the last changefeed is gone, everything is cleaned up.
        e.service.remove(&cf("x")).await.unwrap();
        assert!(e.service.gc().pending_temporary().is_empty());
        e.sim.shutdown().await;
    })
    .await
    .expect("test timed out");
}
