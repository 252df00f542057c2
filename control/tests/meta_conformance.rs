//! The metadata-store conformance suite, run against both back ends.
//!
//! Every check is written once as an async function over `&dyn MetaStore` and instantiated for
//! the embedded store (always) and for a real etcd (when `TIDAL_TEST_ETCD` is set). Each test
//! works under its own cluster prefix, so the etcd half can run in parallel with anything else;
//! because other tests bump etcd's global revision concurrently, shared checks only assert
//! ordering relations, and exact "+1 per write" arithmetic is checked on the embedded store.

mod support;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tidal_control::meta::epoch::{delete_changefeed, update_state_fenced};
use tidal_control::meta::{
    BumpOptions, ChangeFeedInfo, ChangeFeedStatus, ChangefeedRef, Compare, CompareOp,
    EmbeddedOptions, EmbeddedStore, EtcdStore, EventKind, FeedState, KeyLayout, MetaError,
    MetaStore, Op, OpResponse, Progress, Revision, RunningError, StatusChange, Txn, WatchEvent,
    WatchStream, bump_epoch, create_changefeed, load_changefeed, pause_changefeed,
    remove_changefeed, resume_changefeed, update_checkpoint_fenced, update_progress_fenced,
    write_status_fenced,
};

fn k(keys: &KeyLayout, suffix: &str) -> Vec<u8> {
    format!("{}/{suffix}", keys.cluster_prefix()).into_bytes()
}

async fn next_event(w: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event within 10s")
        .expect("watch stream ended")
        .expect("watch error")
}

// ---------------------------------------------------------------------------------------------
// The suite

async fn revisions_and_versions(store: &dyn MetaStore, keys: &KeyLayout) {
    let a = k(keys, "a");
    let r0 = store.current_revision().await.unwrap();
    let r1 = store.put(&a, b"1", None).await.unwrap();
    assert!(r1 > r0);
    let kv = store.get(&a).await.unwrap().unwrap();
    assert_eq!(kv.value, b"1");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r1, 1)
    );
    let r2 = store.put(&a, b"2", None).await.unwrap();
    assert!(r2 > r1);
    let kv = store.get(&a).await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );
    assert!(store.current_revision().await.unwrap() >= r2);

    assert!(!store.delete(&k(keys, "missing")).await.unwrap());
    assert!(store.delete(&a).await.unwrap());
    assert_eq!(store.get(&a).await.unwrap(), None);
    assert!(!store.delete(&a).await.unwrap());
    let r3 = store.put(&a, b"3", None).await.unwrap();
    let kv = store.get(&a).await.unwrap().unwrap();
    assert!(r3 > r2);
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r3, r3, 1)
    );
}

async fn prefix_reads_sorted(store: &dyn MetaStore, keys: &KeyLayout) {
    for s in ["p/c", "p/a", "p/b/x", "p/b", "p0", "q/a"] {
        store.put(&k(keys, s), s.as_bytes(), None).await.unwrap();
    }
    let got: Vec<String> = store
        .get_prefix(&k(keys, "p/"))
        .await
        .unwrap()
        .into_iter()
        .map(|kv| String::from_utf8(kv.value).unwrap())
        .collect();
    assert_eq!(got, vec!["p/a", "p/b", "p/b/x", "p/c"]);
    assert_eq!(store.delete_prefix(&k(keys, "p/")).await.unwrap(), 4);
    assert!(store.get_prefix(&k(keys, "p/")).await.unwrap().is_empty());
    assert_eq!(store.get_prefix(&k(keys, "p")).await.unwrap().len(), 1); // p0 stays
    assert_eq!(store.delete_prefix(&k(keys, "nothing/")).await.unwrap(), 0);
}

async fn cas_on_each_compare_kind(store: &dyn MetaStore, keys: &KeyLayout) {
    let key = k(keys, "cas");
    let flag = k(keys, "flag");
    let try_txn = |c: Compare| {
        let flag = flag.clone();
        async move {
            let res = store
                .txn(
                    Txn::new()
                        .when([c])
                        .and_then([Op::put(flag, "yes")])
                        .or_else([]),
                )
                .await
                .unwrap();
            res.succeeded
        }
    };
    // absent key
    assert!(try_txn(Compare::absent(key.clone())).await);
    assert!(try_txn(Compare::version(key.clone(), CompareOp::Equal, 0)).await);
    assert!(try_txn(Compare::mod_revision(key.clone(), CompareOp::Equal, 0)).await);
    assert!(!try_txn(Compare::value(key.clone(), CompareOp::NotEqual, "x")).await);
    assert!(!try_txn(Compare::value(key.clone(), CompareOp::Equal, "")).await);

    let rev = store.put(&key, b"m", None).await.unwrap();
    store.put(&key, b"m", None).await.unwrap();
    let kv = store.get(&key).await.unwrap().unwrap();
    let (create, modr) = (kv.create_revision, kv.mod_revision);
    assert_eq!(create, rev);

    let cases: Vec<(Compare, bool)> = vec![
        (Compare::absent(key.clone()), false),
        (
            Compare::create_revision(key.clone(), CompareOp::Equal, create),
            true,
        ),
        (
            Compare::create_revision(key.clone(), CompareOp::Greater, create),
            false,
        ),
        (
            Compare::create_revision(key.clone(), CompareOp::Less, create + 1),
            true,
        ),
        (
            Compare::mod_revision(key.clone(), CompareOp::Equal, modr),
            true,
        ),
        (
            Compare::mod_revision(key.clone(), CompareOp::Equal, modr - 1),
            false,
        ),
        (
            Compare::mod_revision(key.clone(), CompareOp::Greater, modr - 1),
            true,
        ),
        (
            Compare::mod_revision(key.clone(), CompareOp::Less, modr),
            false,
        ),
        (
            Compare::mod_revision(key.clone(), CompareOp::NotEqual, modr),
            false,
        ),
        (Compare::version(key.clone(), CompareOp::Equal, 2), true),
        (Compare::version(key.clone(), CompareOp::Equal, 1), false),
        (Compare::version(key.clone(), CompareOp::Greater, 1), true),
        (Compare::version(key.clone(), CompareOp::Less, 2), false),
        (Compare::value(key.clone(), CompareOp::Equal, "m"), true),
        (Compare::value(key.clone(), CompareOp::Equal, "n"), false),
        (Compare::value(key.clone(), CompareOp::Greater, "a"), true),
        (Compare::value(key.clone(), CompareOp::Greater, "z"), false),
        (Compare::value(key.clone(), CompareOp::Less, "z"), true),
        (Compare::value(key.clone(), CompareOp::NotEqual, "m"), false),
    ];
    for (i, (c, expect)) in cases.into_iter().enumerate() {
        assert_eq!(try_txn(c.clone()).await, expect, "case {i}: {c:?}");
    }
}

async fn txn_atomicity(store: &dyn MetaStore, keys: &KeyLayout) {
    let (a, b, c) = (k(keys, "t/a"), k(keys, "t/b"), k(keys, "t/c"));
    store.put(&a, b"old", None).await.unwrap();
    let before = store.get_prefix(&k(keys, "t/")).await.unwrap();

    // failed guard: success ops do not run, failure ops do
    let res = store
        .txn(
            Txn::new()
                .when([Compare::value(a.clone(), CompareOp::Equal, "other")])
                .and_then([Op::put(a.clone(), "new"), Op::put(b.clone(), "new")])
                .or_else([Op::get(a.clone())]),
        )
        .await
        .unwrap();
    assert!(!res.succeeded);
    assert_eq!(res.responses.len(), 1);
    match &res.responses[0] {
        OpResponse::Get(Some(kv)) => assert_eq!(kv.value, b"old"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(store.get_prefix(&k(keys, "t/")).await.unwrap(), before);

    // success: all writes at one revision
    let res = store
        .txn(
            Txn::new()
                .when([Compare::value(a.clone(), CompareOp::Equal, "old")])
                .and_then([
                    Op::put(b.clone(), "B"),
                    Op::put(c.clone(), "C"),
                    Op::delete(a.clone()),
                    Op::get(b.clone()),
                ]),
        )
        .await
        .unwrap();
    assert!(res.succeeded);
    assert_eq!(res.responses[0], OpResponse::Put);
    assert_eq!(res.responses[2], OpResponse::Delete { deleted: 1 });
    match &res.responses[3] {
        OpResponse::Get(Some(kv)) => assert_eq!(kv.value, b"B"),
        other => panic!("get after put in the same txn: {other:?}"),
    }
    let kb = store.get(&b).await.unwrap().unwrap();
    let kc = store.get(&c).await.unwrap().unwrap();
    assert_eq!(kb.mod_revision, kc.mod_revision);
    assert_eq!(kb.mod_revision, res.revision);
    assert_eq!(store.get(&a).await.unwrap(), None);

    // a branch writing one key twice is refused, and nothing is written
    let err = store
        .txn(Txn::new().and_then([Op::put(c.clone(), "1"), Op::put(c.clone(), "2")]))
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::InvalidArgument(_)), "{err:?}");
    assert_eq!(store.get(&c).await.unwrap().unwrap().value, b"C");
}

async fn watch_from_revision(store: &dyn MetaStore, keys: &KeyLayout) {
    let prefix = k(keys, "w/");
    let (x, y, z) = (k(keys, "w/x"), k(keys, "w/y"), k(keys, "w/z"));
    let r1 = store.put(&x, b"1", None).await.unwrap();
    store.put(&k(keys, "other"), b"-", None).await.unwrap();
    let r2 = store.put(&y, b"2", None).await.unwrap();
    store.delete(&x).await.unwrap();
    let r3 = store.current_revision().await.unwrap();
    let tres = store
        .txn(Txn::new().and_then([Op::put(z.clone(), "3"), Op::put(y.clone(), "4")]))
        .await
        .unwrap();

    let mut w = store.watch_prefix(&prefix, r1).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key.clone(), e.kv.mod_revision),
        (EventKind::Put, x.clone(), r1)
    );
    assert_eq!((e.kv.value.as_slice(), e.kv.version), (&b"1"[..], 1));
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key.clone(), e.kv.mod_revision),
        (EventKind::Put, y.clone(), r2)
    );
    let e = next_event(&mut w).await;
    assert_eq!((e.kind, e.kv.key.clone()), (EventKind::Delete, x.clone()));
    assert_eq!(e.kv.mod_revision, r3);
    let e1 = next_event(&mut w).await;
    let e2 = next_event(&mut w).await;
    assert_eq!(
        (e1.kv.key.clone(), e1.kv.mod_revision),
        (z.clone(), tres.revision)
    );
    assert_eq!(
        (e2.kv.key.clone(), e2.kv.mod_revision),
        (y.clone(), tres.revision)
    );
    assert_eq!(e2.kv.version, 2);

    // live events after the replay, and a second watcher starting later sees only those
    let mut w2 = store
        .watch_prefix(&prefix, tres.revision + 1)
        .await
        .unwrap();
    let r5 = store.put(&x, b"5", None).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key.clone(), e.kv.mod_revision),
        (EventKind::Put, x.clone(), r5)
    );
    let e = next_event(&mut w2).await;
    assert_eq!((e.kv.key.clone(), e.kv.mod_revision), (x.clone(), r5));
}

async fn wait_gone(store: &dyn MetaStore, key: &[u8], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if store.get(key).await.unwrap().is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn lease_expiry_deletes_keys(store: &dyn MetaStore, keys: &KeyLayout) {
    let lease = store.lease_grant(1).await.unwrap();
    assert!(lease.ttl >= 1);
    let (owned, free) = (k(keys, "l/owned"), k(keys, "l/free"));
    store.put(&owned, b"me", Some(lease.id)).await.unwrap();
    store.put(&free, b"x", None).await.unwrap();
    assert_eq!(store.get(&owned).await.unwrap().unwrap().lease, lease.id);
    let mut w = store.watch_prefix(&k(keys, "l/"), 0).await.unwrap();
    assert!(
        wait_gone(store, &owned, Duration::from_secs(15)).await,
        "leased key not deleted after expiry"
    );
    assert!(store.get(&free).await.unwrap().is_some());
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key.clone()),
        (EventKind::Delete, owned.clone())
    );
    let err = store.lease_keep_alive(lease.id).await.unwrap_err();
    assert!(matches!(err, MetaError::LeaseNotFound { .. }), "{err:?}");
    let err = store
        .put(&owned, b"again", Some(lease.id))
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::LeaseNotFound { .. }), "{err:?}");
}

async fn lease_keep_alive_and_revoke(store: &dyn MetaStore, keys: &KeyLayout) {
    let lease = store.lease_grant(2).await.unwrap();
    let owner = format!(
        "{}{:x}",
        KeyLayout::new(keys.cluster()).unwrap().owner_prefix(),
        lease.id
    );
    store
        .put(owner.as_bytes(), b"node-1", Some(lease.id))
        .await
        .unwrap();
    // keep it alive past its TTL
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(store.lease_keep_alive(lease.id).await.unwrap() >= 1);
    }
    assert!(store.get(owner.as_bytes()).await.unwrap().is_some());
    store.lease_revoke(lease.id).await.unwrap();
    assert_eq!(store.get(owner.as_bytes()).await.unwrap(), None);
    let err = store.lease_revoke(lease.id).await.unwrap_err();
    assert!(matches!(err, MetaError::LeaseNotFound { .. }), "{err:?}");
}

fn sample_info(state: FeedState) -> ChangeFeedInfo {
    ChangeFeedInfo {
        sink_uri: "mysql://root@127.0.0.1:3306/".into(),
        start_ts: 1000,
        state,
        creator_version: "tidal-test".into(),
        ..ChangeFeedInfo::default()
    }
}

/// Creates `cf` running ([`sample_info`] in state normal) with its checkpoint at `checkpoint_ts`.
async fn create_normal(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
    checkpoint_ts: u64,
) -> Result<Revision, MetaError> {
    let info = sample_info(FeedState::Normal);
    create_changefeed(store, keys, cf, &info, &ChangeFeedStatus::at(checkpoint_ts)).await
}

async fn snapshot(store: &dyn MetaStore, keys: &KeyLayout) -> Vec<tidal_control::meta::KeyValue> {
    store
        .get_prefix(format!("{}/", keys.cluster_prefix()).as_bytes())
        .await
        .unwrap()
}

async fn fencing_two_owners(store: &dyn MetaStore, keys: &KeyLayout) {
    let cf = ChangefeedRef::new("fence-1").unwrap();
    create_normal(store, keys, &cf, 1000).await.unwrap();
    let err = create_normal(store, keys, &cf, 1).await.unwrap_err();
    assert!(matches!(err, MetaError::AlreadyExists { .. }), "{err:?}");

    let e1 = bump_epoch(store, keys, &cf, 500, BumpOptions::default())
        .await
        .unwrap();
    assert_eq!(e1, 500);
    assert!(
        update_checkpoint_fenced(store, keys, &cf, e1, 1100)
            .await
            .unwrap()
    );
    // the new owner takes over with a smaller candidate: current + 1
    let e2 = bump_epoch(store, keys, &cf, 10, BumpOptions::default())
        .await
        .unwrap();
    assert_eq!(e2, 501);

    let before = snapshot(store, keys).await;
    assert!(
        !update_checkpoint_fenced(store, keys, &cf, e1, 9999)
            .await
            .unwrap()
    );
    assert!(
        !write_status_fenced(store, keys, &cf, e1, &ChangeFeedStatus::at(9999))
            .await
            .unwrap()
    );
    assert!(
        !update_state_fenced(store, keys, &cf, e1, FeedState::Failed, None)
            .await
            .unwrap()
    );
    assert!(
        !update_checkpoint_fenced(store, keys, &cf, 0, 9999)
            .await
            .unwrap()
    );
    assert_eq!(
        snapshot(store, keys).await,
        before,
        "a stale owner changed the data"
    );

    assert!(
        update_checkpoint_fenced(store, keys, &cf, e2, 1200)
            .await
            .unwrap()
    );
    let err = RunningError {
        addr: "n1".into(),
        code: "CDC:ErrX".into(),
        message: "boom".into(),
        time: None,
    };
    assert!(
        update_state_fenced(
            store,
            keys,
            &cf,
            e2,
            FeedState::Warning,
            Some(Some(err.clone()))
        )
        .await
        .unwrap()
    );
    let loaded = load_changefeed(store, keys, &cf).await.unwrap().unwrap();
    assert_eq!(loaded.status.as_ref().unwrap().checkpoint_ts, 1200);
    assert_eq!(loaded.info.state, FeedState::Warning);
    assert_eq!(loaded.info.error, Some(err));
    assert_eq!(loaded.info.epoch, 501);

    // a bump with a status change touches both keys in one revision
    let e3 = bump_epoch(
        store,
        keys,
        &cf,
        0,
        BumpOptions {
            state: Some(FeedState::Normal),
            error: Some(None),
            status: Some(StatusChange {
                checkpoint_ts: Some(1300),
                resolved_ts: None,
                progress: Some(Progress::NONE),
            }),
        },
    )
    .await
    .unwrap();
    assert_eq!(e3, 502);
    let loaded = load_changefeed(store, keys, &cf).await.unwrap().unwrap();
    assert_eq!(loaded.info_revision, loaded.status_revision);
    assert_eq!(loaded.info.error, None);
    assert!(
        !write_status_fenced(store, keys, &cf, e2, &ChangeFeedStatus::at(1))
            .await
            .unwrap()
    );
    assert!(delete_changefeed(store, keys, &cf).await.unwrap());
    assert!(load_changefeed(store, keys, &cf).await.unwrap().is_none());
}

async fn resume_is_atomic(store: &dyn MetaStore, keys: &KeyLayout) {
    let cf = ChangefeedRef::new("resume-1").unwrap();
    let mut info = sample_info(FeedState::Failed);
    info.epoch = 40;
    info.error = Some(RunningError {
        addr: "n1".into(),
        code: "CDC:ErrSinkURIInvalid".into(),
        message: "bad".into(),
        time: Some("2024-01-01T00:00:00Z".into()),
    });
    let mut status = ChangeFeedStatus::at(1500);
    status.progress = Progress::STOPPING;
    create_changefeed(store, keys, &cf, &info, &status)
        .await
        .unwrap();

    let epoch = resume_changefeed(store, keys, &cf, 7, Some(2000))
        .await
        .unwrap();
    assert_eq!(epoch, 41);
    let l = load_changefeed(store, keys, &cf).await.unwrap().unwrap();
    assert_eq!(
        l.info_revision, l.status_revision,
        "info and status not written together"
    );
    assert_eq!(l.info.state, FeedState::Normal);
    assert_eq!(l.info.error, None);
    assert_eq!(l.info.epoch, 41);
    let st = l.status.unwrap();
    assert_eq!((st.checkpoint_ts, st.progress), (2000, Progress::NONE));

    // running changefeeds cannot be resumed, and nothing is written
    let before = snapshot(store, keys).await;
    let err = resume_changefeed(store, keys, &cf, 100, None)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::InvalidState { .. }), "{err:?}");
    assert_eq!(snapshot(store, keys).await, before);

    pause_changefeed(store, keys, &cf).await.unwrap();
    let l = load_changefeed(store, keys, &cf).await.unwrap().unwrap();
    assert_eq!(l.info.state, FeedState::Stopped);
    assert_eq!(l.status.as_ref().unwrap().progress, Progress::STOPPING);
    assert_eq!(l.info_revision, l.status_revision);
    // resume without overwrite keeps the checkpoint
    let epoch = resume_changefeed(store, keys, &cf, 1000, None)
        .await
        .unwrap();
    assert_eq!(epoch, 1000);
    let l = load_changefeed(store, keys, &cf).await.unwrap().unwrap();
    assert_eq!(l.status.unwrap().checkpoint_ts, 2000);

    assert!(remove_changefeed(store, keys, &cf).await.unwrap());
    let l = load_changefeed(store, keys, &cf).await.unwrap().unwrap();
    assert_eq!(l.status.unwrap().progress, Progress::REMOVING);
    let missing = ChangefeedRef::new("nope").unwrap();
    assert!(!remove_changefeed(store, keys, &missing).await.unwrap());
    let err = bump_epoch(store, keys, &missing, 1, BumpOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::NotFound { .. }), "{err:?}");
}

/// The resolved ts persisted with the checkpoint only rises (a stale owner cannot move it, a
/// lower value is ignored, it never sits below the checkpoint), except that a resume that
/// rewinds the checkpoint rewinds it too.
async fn persisted_resolved_ts_only_rises(store: &dyn MetaStore, keys: &KeyLayout) {
    let cf = ChangefeedRef::new("resolved-1").unwrap();
    create_normal(store, keys, &cf, 1000).await.unwrap();
    let e1 = bump_epoch(store, keys, &cf, 50, BumpOptions::default())
        .await
        .unwrap();
    let status = |l: tidal_control::meta::LoadedChangefeed| {
        let s = l.status.unwrap();
        (s.checkpoint_ts, s.resolved_ts)
    };
    assert!(
        update_progress_fenced(store, keys, &cf, e1, 1100, 1500)
            .await
            .unwrap()
    );
    let l = load_changefeed(store, keys, &cf).await.unwrap().unwrap();
    assert_eq!(status(l), (1100, 1500));
    // a lower resolved ts (a restarted run's first frontier) does not lower it
    assert!(
        update_progress_fenced(store, keys, &cf, e1, 1200, 1300)
            .await
            .unwrap()
    );
    let l = load_changefeed(store, keys, &cf).await.unwrap().unwrap();
    assert_eq!(status(l), (1200, 1500));
    // a checkpoint past it lifts it
    assert!(
        update_checkpoint_fenced(store, keys, &cf, e1, 1600)
            .await
            .unwrap()
    );
    let l = load_changefeed(store, keys, &cf).await.unwrap().unwrap();
    assert_eq!(status(l), (1600, 1600));
    // a stale owner moves nothing
    let e2 = bump_epoch(store, keys, &cf, 10, BumpOptions::default())
        .await
        .unwrap();
    assert!(
        !update_progress_fenced(store, keys, &cf, e1, 1700, 9000)
            .await
            .unwrap()
    );
    let l = load_changefeed(store, keys, &cf).await.unwrap().unwrap();
    assert_eq!(status(l), (1600, 1600));
    assert!(
        update_progress_fenced(store, keys, &cf, e2, 1600, 1800)
            .await
            .unwrap()
    );
    // a resume that overwrites the checkpoint backwards takes the resolved ts with it
    pause_changefeed(store, keys, &cf).await.unwrap();
    resume_changefeed(store, keys, &cf, 20, Some(1100))
        .await
        .unwrap();
    let l = load_changefeed(store, keys, &cf).await.unwrap().unwrap();
    assert_eq!(status(l), (1100, 1100));
}

async fn concurrent_bumps_all_distinct(store: &dyn MetaStore, keys: &KeyLayout) {
    let cf = ChangefeedRef::new("race-1").unwrap();
    create_normal(store, keys, &cf, 1).await.unwrap();
    let futs = (0..4).map(|_| bump_epoch(store, keys, &cf, 0, BumpOptions::default()));
    let mut epochs: Vec<u64> = futures::future::join_all(futs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    epochs.sort_unstable();
    assert_eq!(epochs, vec![1, 2, 3, 4]);
}

// ---------------------------------------------------------------------------------------------
// Instantiation for both stores

async fn run_on_embedded<F>(tag: &str, body: F)
where
    F: for<'a> AsyncFnOnce(&'a dyn MetaStore, &'a KeyLayout),
{
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let keys = KeyLayout::new(&support::unique_cluster(tag)).unwrap();
    body(&store, &keys).await;
}

async fn run_on_etcd<F>(tag: &str, body: F)
where
    F: for<'a> AsyncFnOnce(&'a dyn MetaStore, &'a KeyLayout),
{
    let Some(ep) = support::etcd_endpoint(tag) else {
        return;
    };
    let store = EtcdStore::connect(&ep).await.unwrap();
    let keys = KeyLayout::new(&support::unique_cluster(tag)).unwrap();
    let outcome = AssertUnwindSafe(body(&store, &keys)).catch_unwind().await;
    let prefix = format!("{}/", keys.cluster_prefix());
    store.delete_prefix(prefix.as_bytes()).await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded_suite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run_on_embedded(stringify!($name), super::$name).await;
                }
            )*
        }
        mod etcd_suite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run_on_etcd(stringify!($name), super::$name).await;
                }
            )*
        }
    };
}

conformance!(
    revisions_and_versions,
    prefix_reads_sorted,
    cas_on_each_compare_kind,
    txn_atomicity,
    watch_from_revision,
    lease_expiry_deletes_keys,
    lease_keep_alive_and_revoke,
    fencing_two_owners,
    resume_is_atomic,
    persisted_resolved_ts_only_rises,
    concurrent_bumps_all_distinct,
);

// ---------------------------------------------------------------------------------------------
// etcd-only

#[tokio::test]
async fn etcd_unreachable_names_endpoint() {
    let err = EtcdStore::connect_with_timeout("127.0.0.1:1", Duration::from_millis(500))
        .await
        .unwrap_err();
    match &err {
        MetaError::Unavailable { endpoint, .. } => assert_eq!(endpoint, "127.0.0.1:1"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Embedded-only: exact revisions, durability, recovery

async fn open(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(dir).await.unwrap()
}

#[tokio::test]
async fn embedded_exact_revision_arithmetic() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    assert_eq!(s.current_revision().await.unwrap(), 1);
    assert_eq!(s.put(b"a", b"1", None).await.unwrap(), 2);
    assert_eq!(s.put(b"a", b"2", None).await.unwrap(), 3);
    assert!(!s.delete(b"zz").await.unwrap());
    assert_eq!(
        s.current_revision().await.unwrap(),
        3,
        "no-op delete bumped the revision"
    );
    let res = s
        .txn(
            Txn::new()
                .when([Compare::absent("a")])
                .and_then([Op::put("b", "x")]),
        )
        .await
        .unwrap();
    assert!(!res.succeeded);
    assert_eq!(res.revision, 3, "failed txn bumped the revision");
    let res = s
        .txn(Txn::new().and_then([Op::put("b", "x"), Op::put("c", "y"), Op::delete("a")]))
        .await
        .unwrap();
    assert_eq!(res.revision, 4);
    assert!(s.delete(b"b").await.unwrap());
    assert_eq!(s.current_revision().await.unwrap(), 5);
    // lease grant alone does not bump the revision
    s.lease_grant(30).await.unwrap();
    assert_eq!(s.current_revision().await.unwrap(), 5);
}

#[tokio::test]
async fn embedded_second_open_of_a_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path()).await;
    first.put(b"/x/a", b"1", None).await.unwrap();
    let err = EmbeddedStore::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, MetaError::Unavailable { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "metadata store at {} is unavailable: another process (or store) already uses this \
             data dir",
            dir.path().display()
        )
    );
    // The first store is untouched, and once it is gone the dir opens again.
    assert_eq!(first.current_revision().await.unwrap(), 2);
    drop(first);
    let again = open(dir.path()).await;
    assert_eq!(again.current_revision().await.unwrap(), 2);
}

#[tokio::test]
async fn embedded_restart_recovers_data_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let (before, rev, lease_id) = {
        let s = open(dir.path()).await;
        let lease = s.lease_grant(60).await.unwrap();
        s.put(b"/x/a", b"1", None).await.unwrap();
        s.put(b"/x/b", b"2", Some(lease.id)).await.unwrap();
        s.put(b"/x/a", b"3", None).await.unwrap();
        s.delete(b"/x/b").await.unwrap();
        s.put(b"/x/b", b"4", Some(lease.id)).await.unwrap();
        (
            s.get_prefix(b"/x/").await.unwrap(),
            s.current_revision().await.unwrap(),
            lease.id,
        )
    };
    let s = open(dir.path()).await;
    assert_eq!(s.get_prefix(b"/x/").await.unwrap(), before);
    assert_eq!(s.current_revision().await.unwrap(), rev);
    assert_eq!(rev, 6);
    // the watch history was rebuilt from the log
    let mut w = s.watch_prefix(b"/x/", 2).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!((e.kv.key.as_slice(), e.kv.mod_revision), (&b"/x/a"[..], 2));
    // the lease survived and still owns its key
    s.lease_revoke(lease_id).await.unwrap();
    assert_eq!(s.get(b"/x/b").await.unwrap(), None);
    assert_eq!(s.current_revision().await.unwrap(), 7);
    // new lease ids do not collide with the old one
    assert_ne!(s.lease_grant(5).await.unwrap().id, lease_id);
}

#[tokio::test]
async fn embedded_compaction_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        compact_wal_bytes: 512,
        ..EmbeddedOptions::default()
    };
    let expected = {
        let s = EmbeddedStore::open_with(dir.path(), opts.clone())
            .await
            .unwrap();
        for i in 0..50u32 {
            s.put(
                format!("/c/{:02}", i % 7).as_bytes(),
                &i.to_le_bytes(),
                None,
            )
            .await
            .unwrap();
        }
        assert!(
            s.wal_len() <= 512 + 64,
            "log was not compacted: {}",
            s.wal_len()
        );
        assert!(dir.path().join("snapshot").exists());
        (
            s.get_prefix(b"/c/").await.unwrap(),
            s.current_revision().await.unwrap(),
        )
    };
    let s = EmbeddedStore::open_with(dir.path(), opts).await.unwrap();
    assert_eq!(
        (
            s.get_prefix(b"/c/").await.unwrap(),
            s.current_revision().await.unwrap()
        ),
        expected
    );
    assert_eq!(expected.1, 51);
    // history before the snapshot is gone: watching from there says so
    let err = s.watch_prefix(b"/c/", 2).await.err().expect("compacted");
    assert!(matches!(err, MetaError::Compacted { .. }), "{err:?}");
}

#[tokio::test]
async fn embedded_torn_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path()).await;
        s.put(b"k1", b"v1", None).await.unwrap();
        s.put(b"k2", b"v2", None).await.unwrap();
    }
    let wal = dir.path().join("wal");
    let full = std::fs::read(&wal).unwrap();
    // a third record, cut in the middle of its payload
    {
        let s = open(dir.path()).await;
        s.put(b"k3", b"v3-long-value", None).await.unwrap();
    }
    let three = std::fs::read(&wal).unwrap();
    std::fs::write(&wal, &three[..three.len() - 5]).unwrap();
    let s = open(dir.path()).await;
    assert_eq!(s.get(b"k3").await.unwrap(), None);
    assert_eq!(s.get(b"k2").await.unwrap().unwrap().value, b"v2");
    assert_eq!(s.current_revision().await.unwrap(), 3);
    assert_eq!(std::fs::read(&wal).unwrap(), full, "torn tail not cut back");
    // and the store keeps working after the repair
    assert_eq!(s.put(b"k3", b"again", None).await.unwrap(), 4);
    drop(s);
    let s = open(dir.path()).await;
    assert_eq!(s.get(b"k3").await.unwrap().unwrap().value, b"again");

    // garbage (zeros) appended at the end is a torn tail too
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes.extend_from_slice(&[0u8; 7]);
    std::fs::write(&wal, &bytes).unwrap();
    drop(s);
    let s = open(dir.path()).await;
    assert_eq!(s.current_revision().await.unwrap(), 4);
}

#[tokio::test]
async fn embedded_corruption_in_the_middle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path()).await;
        for i in 0..5u8 {
            s.put(&[b'k', i], b"value-value", None).await.unwrap();
        }
    }
    let wal = dir.path().join("wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    let one = bytes.len() / 5;
    bytes[one + 20] ^= 0x40; // inside the second record's payload
    std::fs::write(&wal, &bytes).unwrap();
    let err = EmbeddedStore::open(dir.path()).await.unwrap_err();
    match &err {
        MetaError::Corrupt { key, reason } => {
            assert!(key.ends_with("wal"), "{key}");
            assert!(reason.contains("followed by intact records"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // the log was not modified by the failed open
    assert_eq!(std::fs::read(&wal).unwrap(), bytes);

    // a damaged snapshot is also refused
    let dir2 = tempfile::tempdir().unwrap();
    {
        let s = open(dir2.path()).await;
        s.put(b"a", b"b", None).await.unwrap();
        s.compact_now().unwrap();
    }
    let snap = dir2.path().join("snapshot");
    let mut sb = std::fs::read(&snap).unwrap();
    let last = sb.len() - 1;
    sb[last] ^= 1;
    std::fs::write(&snap, &sb).unwrap();
    let err = EmbeddedStore::open(dir2.path()).await.unwrap_err();
    assert!(matches!(err, MetaError::Corrupt { .. }), "{err:?}");
}
