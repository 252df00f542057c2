//! The coordinator's state machine against the embedded cluster: target ts → finished, sink
//! failures → warning with backoff (new epoch per restart) or failed, epoch fencing of a stale
//! run, the span-set checksum gate, the GC tick, and owner election with hand-over.

mod support;

use support::{table_spec, upsert};

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tidal_control::coordinator::{Coordinator, CoordinatorConfig};
use tidal_control::gc::{GcConfig, GcManager, PdApi};
use tidal_control::meta::{
    BumpOptions, ChangefeedRef, EmbeddedStore, EtcdStore, FeedState, KeyLayout, MetaStore,
    bump_epoch, load_changefeed, update_checkpoint_fenced,
};
use tidal_control::service::{
    ChangefeedService, CreateRequest, ServiceConfig, WatermarkSource, default_replica_config,
    replica_config_from_api,
};
use tidal_ingest::pd::{PdClient, PdConfig};
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

/// Polls `f` every 25 ms until it returns `Some`, for at most `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not reached within {secs}s: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

struct Env {
    sim: SimCluster,
    tidb: Tidb,
    pd: Arc<PdClient>,
    store: Arc<dyn MetaStore>,
    keys: KeyLayout,
    service: Arc<ChangefeedService>,
    _dir: tempfile::TempDir,
}

fn fast_config(capture: &str) -> CoordinatorConfig {
    CoordinatorConfig {
        workers: 2,
        checkpoint_interval: Duration::from_millis(50),
        resync_interval: Duration::from_millis(300),
        gc_tick: Duration::from_millis(200),
        backoff_initial: Duration::from_millis(300),
        backoff_max: Duration::from_millis(1200),
        election: false,
        session_ttl: Duration::from_secs(1),
        capture_id: capture.to_string(),
        advertise_addr: format!("{capture}:8300"),
        start_timeout: Duration::from_secs(15),
        spill_dir: None,
    }
}

async fn env_with(store: Option<(Arc<dyn MetaStore>, KeyLayout)>) -> Env {
    let cfg = SimConfig::with_min_ts_interval(Duration::from_millis(50));
    let sim = within(20, "sim", SimCluster::start(cfg))
        .await
        .expect("sim");
    let tidb = sim.tidb().expect("tidb");
    tidb.create_database("test").expect("db");
    tidb.create_table("test", &table_spec("t1")).expect("t1");
    let pd = within(
        10,
        "pd",
        PdClient::connect(PdConfig::new(sim.pd_endpoints())),
    )
    .await
    .expect("pd");
    let pd = Arc::new(pd);
    let dir = tempfile::tempdir().expect("dir");
    let (store, keys) = match store {
        Some(s) => s,
        None => (
            Arc::new(EmbeddedStore::open(dir.path()).await.expect("store")) as Arc<dyn MetaStore>,
            KeyLayout::default(),
        ),
    };
    let pd_api: Arc<dyn PdApi> = Arc::clone(&pd) as _;
    let gc = Arc::new(GcManager::new(
        Arc::clone(&pd_api),
        GcConfig::for_cluster(keys.cluster()),
        None,
    ));
    let service = Arc::new(ChangefeedService::new(
        Arc::clone(&store),
        keys.clone(),
        pd_api,
        gc,
        ServiceConfig {
            creator_version: "test".into(),
            advertise_addr: "test:8300".into(),
        },
    ));
    Env {
        sim,
        tidb,
        pd,
        store,
        keys,
        service,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with(None).await
}

impl Env {
    fn start(&self, cfg: CoordinatorConfig) -> Coordinator {
        Coordinator::start(Arc::clone(&self.service), Arc::clone(&self.pd), cfg)
    }

    async fn create(&self, id: &str, sink_uri: &str, start_ts: u64, target_ts: u64) {
        self.create_with(id, sink_uri, start_ts, target_ts, default_replica_config())
            .await;
    }

    async fn create_with(
        &self,
        id: &str,
        sink_uri: &str,
        start_ts: u64,
        target_ts: u64,
        replica_config: tidal_control::meta::ReplicaConfig,
    ) {
        within(
            10,
            "create",
            self.service.create(CreateRequest {
                keyspace: String::new(),
                id: id.to_string(),
                start_ts,
                target_ts,
                sink_uri: sink_uri.to_string(),
                replica_config,
            }),
        )
        .await
        .expect("create");
    }

    /// (epoch, state, checkpoint, error code)
    async fn persisted(&self, id: &str) -> (u64, FeedState, u64, Option<String>) {
        let cf = ChangefeedRef::new(id).expect("id");
        let l = load_changefeed(self.store.as_ref(), &self.keys, &cf)
            .await
            .expect("load")
            .expect("exists");
        (
            l.info.epoch,
            l.info.state,
            l.status.expect("status").checkpoint_ts,
            l.info.error.map(|e| e.code),
        )
    }

    async fn wait_persisted(
        &self,
        id: &str,
        secs: u64,
        what: &str,
        pred: impl Fn(&(u64, FeedState, u64, Option<String>)) -> bool,
    ) -> (u64, FeedState, u64, Option<String>) {
        eventually(secs, what, || async {
            let p = self.persisted(id).await;
            pred(&p).then_some(p)
        })
        .await
    }
}

fn file_uri(dir: &std::path::Path) -> String {
    format!(
        "file://{}?protocol=canal-json&enable-tidb-extension=true&flush-interval=100ms",
        dir.display()
    )
}

fn downstream_rows(uri: &str) -> BTreeMap<i64, String> {
    let SinkConfig::Storage(cfg) = parse_sink_uri(uri).expect("uri") else {
        panic!("not a storage sink");
    };
    let content = read_storage_dir(&cfg.root, &cfg.encoder).expect("read");
    let mut rows = BTreeMap::new();
    for r in content.rows_of("test", "t1") {
        let id: i64 = String::from_utf8(r.get("id").cloned().flatten().expect("id"))
            .expect("utf8")
            .parse()
            .expect("int");
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

fn upstream_rows(sim: &SimCluster, ts: u64) -> BTreeMap<i64, String> {
    let snaps =
        tidal_sim::export::snapshot_tables(sim.store(), ts, &[("test", "t1")]).expect("export");
    snaps[0]
        .rows
        .iter()
        .map(|(h, row)| {
            let Handle::Int(id) = h else {
                panic!("int handle")
            };
            let Some(Datum::Bytes(v)) = row.get(1) else {
                panic!("bytes")
            };
            (*id, String::from_utf8(v.clone()).expect("utf8"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn target_ts_finishes_with_exactly_the_rows_up_to_it() {
    within(30, "test", async {
        let e = env().await;
        let out = tempfile::tempdir().expect("out");
        let uri = file_uri(out.path());
        let start = e.sim.tso().next();
        upsert(&e.tidb, &[(1, "a"), (2, "b")]);
        let target = upsert(&e.tidb, &[(2, "b2"), (3, "c")]);
        let after = upsert(&e.tidb, &[(4, "late"), (1, "late")]);
        assert!(after > target);
        e.create("fin", &uri, start, target).await;
        let c = e.start(fast_config("n1"));
        let (_, state, ckpt, err) = e
            .wait_persisted("fin", 20, "finished", |p| p.1 == FeedState::Finished)
            .await;
        assert_eq!(state, FeedState::Finished);
        assert_eq!(
            ckpt, target,
            "a finished changefeed's checkpoint is its target ts"
        );
        assert_eq!(err, None);
        eventually(5, "run stops", || async {
            c.registry().running().is_empty().then_some(())
        })
        .await;
        assert_eq!(downstream_rows(&uri), upstream_rows(&e.sim, target));
        // it stays finished (no restart)
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(e.persisted("fin").await.1, FeedState::Finished);
        assert!(c.registry().running().is_empty());
        assert_eq!(
            c.registry().starts(&ChangefeedRef::new("fin").expect("id")),
            1
        );
        c.shutdown().await;
        e.sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_sink_goes_to_warning_and_restarts_with_backoff_under_new_epochs() {
    within(30, "test", async {
        let e = env().await;
        // nothing listens on port 1: every open fails with a (retryable) connection error
        e.create("bad", "mysql://root@127.0.0.1:1/", 0, 0).await;
        let c = e.start(fast_config("n1"));
        let cf = ChangefeedRef::new("bad").expect("id");
        let (e1, state, _, code) = e
            .wait_persisted("bad", 10, "warning", |p| p.1 == FeedState::Warning)
            .await;
        assert_eq!(state, FeedState::Warning);
        assert_eq!(code.as_deref(), Some("CDC:ErrSinkWriteFailed"));
        // restarted after the backoff, each time under a newer epoch
        let (e2, ..) = e.wait_persisted("bad", 10, "a restart", |p| p.0 > e1).await;
        assert!(e2 > e1);
        let starts = eventually(10, "three starts", || async {
            let n = c.registry().starts(&cf);
            (n >= 3).then_some(n)
        })
        .await;
        assert!(starts >= 3);
        let diag = c.registry().diagnosis("bad").expect("diagnosis");
        assert_eq!(diag["running"], json!(false));
        assert!(
            diag["retry"]["attempts"].as_u64().expect("attempts") >= 2,
            "{diag}"
        );
        assert_eq!(diag["last_failure"]["permanent"], json!(false));
        // the status API shows it as a warning
        assert!(c.registry().watermarks("bad").is_none());

        // pause wins over the warning, and no more restarts happen
        e.service.pause(&cf).await.expect("pause");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let paused = e.persisted("bad").await;
        assert_eq!(paused.1, FeedState::Stopped);
        let starts = c.registry().starts(&cf);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            c.registry().starts(&cf),
            starts,
            "a paused changefeed is not restarted"
        );
        let still = e.persisted("bad").await;
        assert_eq!((still.0, still.1), (paused.0, FeedState::Stopped));
        c.shutdown().await;
        e.sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permanent_error_fails_the_changefeed() {
    within(30, "test", async {
        let e = env().await;
        // the service accepts the rule; the table filter refuses it when the run starts
        let rc =
            replica_config_from_api(Some(json!({"filter": {"rules": ["nodot"]}}))).expect("config");
        e.create_with("perm", "blackhole://", 0, 0, rc).await;
        let c = e.start(fast_config("n1"));
        let (_, state, _, code) = e
            .wait_persisted("perm", 10, "failed", |p| p.1 == FeedState::Failed)
            .await;
        assert_eq!(state, FeedState::Failed);
        assert_eq!(code.as_deref(), Some("CDC:ErrInvalidReplicaConfig"));
        let cf = ChangefeedRef::new("perm").expect("id");
        let starts = c.registry().starts(&cf);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            c.registry().starts(&cf),
            starts,
            "failed changefeeds are not retried"
        );
        assert!(c.registry().running().is_empty());
        c.shutdown().await;
        e.sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_run_is_fenced_and_replaced_under_a_newer_epoch() {
    within(30, "test", async {
        let e = env().await;
        let out = tempfile::tempdir().expect("out");
        let uri = file_uri(out.path());
        e.create("cf", &uri, 0, 0).await;
        let c = e.start(fast_config("n1"));
        let cf = ChangefeedRef::new("cf").expect("id");
        let c1 = upsert(&e.tidb, &[(1, "a")]);
        let (e1, ..) = e
            .wait_persisted("cf", 15, "first checkpoint", |p| p.2 >= c1)
            .await;
        assert_eq!(c.registry().running(), vec![(cf.clone(), e1)]);

        // another owner takes over: it bumps the epoch in the store
        let e_other = bump_epoch(e.store.as_ref(), &e.keys, &cf, 0, BumpOptions::default())
            .await
            .expect("bump");
        assert_eq!(e_other, e1 + 1);
        // the old epoch can no longer write
        let before = e.persisted("cf").await;
        assert!(
            !update_checkpoint_fenced(e.store.as_ref(), &e.keys, &cf, e1, before.2 + 1000)
                .await
                .expect("write")
        );
        assert_eq!(e.persisted("cf").await.2, before.2);
        // the coordinator notices, stops its stale run and restarts under an epoch newer than
        // the usurper's; the checkpoint never goes back
        let last_ckpt = std::cell::Cell::new(before.2);
        let c2 = upsert(&e.tidb, &[(2, "b"), (1, "a2")]);
        let (e3, state, ckpt, _) = eventually(15, "a newer run", || async {
            let p = e.persisted("cf").await;
            assert!(
                p.2 >= last_ckpt.get(),
                "checkpoint regressed: {} -> {}",
                last_ckpt.get(),
                p.2
            );
            last_ckpt.set(p.2);
            (p.0 > e_other && p.2 >= c2).then_some(p)
        })
        .await;
        assert_eq!(state, FeedState::Normal);
        assert!(ckpt >= c2);
        assert_eq!(c.registry().running(), vec![(cf.clone(), e3)]);
        assert_eq!(downstream_rows(&uri), upstream_rows(&e.sim, ckpt));
        c.shutdown().await;
        e.sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoint_is_not_persisted_while_a_checksum_mismatches() {
    within(30, "test", async {
        let e = env().await;
        e.create("ck", "blackhole://", 0, 0).await;
        let c = e.start(fast_config("n1"));
        let c1 = upsert(&e.tidb, &[(1, "a")]);
        e.wait_persisted("ck", 15, "first checkpoint", |p| p.2 >= c1)
            .await;
        let table_id = e.tidb.table("test", "t1").expect("t1").id();
        c.registry()
            .with_handle("ck", |h| h.debug_drop_span(table_id))
            .expect("running");
        // wait for the gate to close, then check that the persisted checkpoint stays put
        eventually(10, "checksum mismatch", || async {
            let w = c.registry().watermarks("ck")?;
            (!w.checksum_ok).then_some(())
        })
        .await;
        let frozen = e.persisted("ck").await.2;
        upsert(&e.tidb, &[(2, "b")]);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            e.persisted("ck").await.2,
            frozen,
            "checkpoint persisted past a MISMATCH"
        );
        let diag = c.registry().diagnosis("ck").expect("diag");
        assert_eq!(diag["checkpoint_persistable"], json!(false));
        let stuck = diag["stuck"].as_str().expect("stuck").to_string();
        assert!(stuck.contains("span-set checksum not MATCH"), "{stuck}");
        // restoring the span reopens the gate
        c.registry()
            .with_handle("ck", |h| h.debug_restore_span(table_id))
            .expect("running");
        let c3 = upsert(&e.tidb, &[(3, "c")]);
        e.wait_persisted("ck", 15, "checkpoint moves again", |p| p.2 >= c3)
            .await;
        c.shutdown().await;
        e.sim.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_tick_reserves_the_min_checkpoint_and_fails_changefeeds_gc_overtook() {
    within(30, "test", async {
        let e = env().await;
        e.create("g", "blackhole://", 0, 0).await;
        let c = e.start(fast_config("n1"));
        let cf = ChangefeedRef::new("g").expect("id");
        let c1 = upsert(&e.tidb, &[(1, "a")]);
        e.wait_persisted("g", 15, "checkpoint", |p| p.2 >= c1).await;
        e.service.pause(&cf).await.expect("pause");
        eventually(5, "run stops", || async {
            c.registry().running().is_empty().then_some(())
        })
        .await;
        let (_, _, paused_ckpt, _) = e.persisted("g").await;
        // the periodic tick keeps GC at the paused checkpoint - 1
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = e.sim.tso().next();
        assert_eq!(
            e.sim.faults().run_gc(now),
            paused_ckpt - 1,
            "GC is held at checkpoint - 1"
        );
        // force GC past it: the next tick fails the changefeed
        e.sim.faults().advance_gc_safe_point(paused_ckpt + 10);
        let (_, state, _, code) = e
            .wait_persisted("g", 10, "failed by GC", |p| p.1 == FeedState::Failed)
            .await;
        assert_eq!(state, FeedState::Failed);
        assert_eq!(code.as_deref(), Some("CDC:ErrSnapshotLostByGC"));
        c.shutdown().await;
        e.sim.shutdown().await;
    })
    .await;
}

async fn election_hand_over(store: Arc<dyn MetaStore>, keys: KeyLayout) {
    let e = env_with(Some((store, keys.clone()))).await;
    e.create("el", "blackhole://", 0, 0).await;
    let mut cfg_a = fast_config("node-a");
    cfg_a.election = true;
    let a = e.start(cfg_a);
    // let A win first
    eventually(10, "A owns", || async { a.is_owner().then_some(()) }).await;
    let mut cfg_b = fast_config("node-b");
    cfg_b.election = true;
    let b = e.start(cfg_b);
    let cf = ChangefeedRef::new("el").expect("id");
    let c1 = upsert(&e.tidb, &[(1, "a")]);
    let (ea, ..) = e
        .wait_persisted("el", 15, "A replicates", |p| p.2 >= c1)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.is_owner());
    assert!(!b.is_owner(), "two owners");
    assert_eq!(a.registry().running(), vec![(cf.clone(), ea)]);
    assert!(b.registry().running().is_empty());
    let owners = e
        .store
        .get_prefix(keys.owner_prefix().as_bytes())
        .await
        .expect("owners");
    assert_eq!(owners.len(), 2, "both candidates hold an owner key");

    // A leaves (graceful: lease revoked); B takes over under a newer epoch
    a.shutdown().await;
    assert!(!a.is_owner());
    eventually(10, "B owns", || async { b.is_owner().then_some(()) }).await;
    let c2 = upsert(&e.tidb, &[(2, "b")]);
    let (eb, ..) = e
        .wait_persisted("el", 15, "B replicates", |p| p.0 > ea && p.2 >= c2)
        .await;
    assert_eq!(b.registry().running(), vec![(cf, eb)]);
    let owners = e
        .store
        .get_prefix(keys.owner_prefix().as_bytes())
        .await
        .expect("owners");
    assert_eq!(owners.len(), 1);
    b.shutdown().await;
    let owners = e
        .store
        .get_prefix(keys.owner_prefix().as_bytes())
        .await
        .expect("owners");
    assert!(owners.is_empty(), "shutdown revokes the owner lease");
    e.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn election_hands_over_with_the_embedded_store() {
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::open(dir.path()).await.expect("store"));
    within(
        30,
        "election (embedded)",
        election_hand_over(store, KeyLayout::default()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn election_hands_over_with_etcd() {
    let Some(ep) = support::etcd_endpoint("election_hands_over_with_etcd") else {
        return;
    };
    let store: Arc<dyn MetaStore> = Arc::new(EtcdStore::connect(&ep).await.expect("etcd"));
    let keys = KeyLayout::new(&support::unique_cluster("coord")).expect("keys");
    within(30, "election (etcd)", election_hand_over(store, keys)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_lease_stops_the_runs_until_ownership_is_won_again() {
    within(30, "test", async {
        let e = env().await;
        e.create("ls", "blackhole://", 0, 0).await;
        let mut cfg = fast_config("node-a");
        cfg.election = true;
        let a = e.start(cfg);
        let cf = ChangefeedRef::new("ls").expect("id");
        let c1 = upsert(&e.tidb, &[(1, "a")]);
        let (e1, ..) = e
            .wait_persisted("ls", 15, "replicates", |p| p.2 >= c1)
            .await;
        assert_eq!(a.registry().starts(&cf), 1);
        // the lease disappears under the owner (as if it expired during a long pause)
        let owners = e
            .store
            .get_prefix(e.keys.owner_prefix().as_bytes())
            .await
            .expect("owners");
        assert_eq!(owners.len(), 1);
        e.store.lease_revoke(owners[0].lease).await.expect("revoke");
        // it stops its run, campaigns again, wins (sole candidate) and restarts under a newer
        // epoch
        let c2 = upsert(&e.tidb, &[(2, "b")]);
        let (e2, ..) = e
            .wait_persisted("ls", 15, "restarted", |p| p.0 > e1 && p.2 >= c2)
            .await;
        assert_eq!(
            a.registry().starts(&cf),
            2,
            "stopped once and started again"
        );
        assert_eq!(a.registry().running(), vec![(cf, e2)]);
        assert!(a.is_owner());
        a.shutdown().await;
        e.sim.shutdown().await;
    })
    .await;
}
