//! `RegionFeed` against the embedded cluster: delivery, ordering and exactly-once per span under
//! splits, merges, leader transfers, stream resets and stalled regions.
//!
//! Every test writes through the sim's MVCC store with timestamps from its TSO, records what it
//! committed, and compares that record with what the subscription delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tidal_ingest::feed::{FeedConfig, FeedEvent, RegionFeed, StuckReason, Subscription};
use tidal_ingest::pd::{PdClient, PdConfig};
use tidal_model::change::RawOp;
use tidal_model::codec::bytes::encode_key;
use tidal_model::tablecodec::encode_row_key_int;
use tidal_model::{TableSpan, Ts};
use tidal_sim::cdc::CdcConfig;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::mvcc::Mutation;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

async fn cluster(split_keys: Vec<Vec<u8>>) -> SimCluster {
    let cfg = SimConfig {
        cdc: CdcConfig {
            min_ts_interval: Duration::from_millis(50),
            ..CdcConfig::default()
        },
        split_keys,
        ..SimConfig::default()
    };
    timeout(WAIT, SimCluster::start(cfg))
        .await
        .expect("cluster starts in time")
        .expect("cluster starts")
}

async fn feed(c: &SimCluster) -> RegionFeed {
    let pd = timeout(WAIT, PdClient::connect(PdConfig::new(c.pd_endpoints())))
        .await
        .expect("pd connects in time")
        .expect("pd connects");
    let cfg = FeedConfig {
        backoff: tidal_ingest::feed::BackoffConfig {
            reconnect: Duration::from_millis(200),
            ..Default::default()
        },
        ..FeedConfig::default()
    };
    RegionFeed::new(Arc::new(pd), cfg)
}

fn key(table: i64, handle: i64) -> Vec<u8> {
    encode_row_key_int(table, handle)
}

/// What a test committed: (raw key, commit ts) → (value, start ts).
type Record = BTreeMap<(Vec<u8>, u64), (Vec<u8>, u64)>;

/// Prewrites `value` at `key` (the primary) and leaves the lock; returns its start ts.
fn lock(c: &SimCluster, key: &[u8], value: Vec<u8>) -> u64 {
    let start = c.tso().next();
    c.store()
        .prewrite(&[Mutation::put(key.to_vec(), value)], key, start)
        .expect("prewrite");
    start
}

/// Commits one 2PC transaction writing `value` to each key; records it.
fn commit(c: &SimCluster, rec: &mut Record, keys: &[Vec<u8>], value: &[u8]) -> u64 {
    let start = c.tso().next();
    let muts: Vec<Mutation> = keys
        .iter()
        .map(|k| Mutation::put(k.clone(), value.to_vec()))
        .collect();
    c.store()
        .prewrite(&muts, &keys[0], start)
        .expect("prewrite");
    let commit = c.tso().next();
    c.store().commit(keys, start, commit).expect("commit");
    for k in keys {
        rec.insert((k.clone(), commit), (value.to_vec(), start));
    }
    commit
}

/// A delivered row: value, old value, start ts, op.
type Delivered = (Vec<u8>, Vec<u8>, u64, RawOp);

/// What a subscription delivered, with the output contract checked on the way.
#[derive(Debug, Default)]
struct Seen {
    rows: BTreeMap<(Vec<u8>, u64), Delivered>,
    duplicates: usize,
    resolved: Vec<Ts>,
}

impl Seen {
    fn last_resolved(&self) -> Ts {
        self.resolved.last().copied().unwrap_or(Ts::ZERO)
    }

    fn take(&mut self, ev: FeedEvent) {
        match ev {
            FeedEvent::Rows(rows) => {
                for r in rows {
                    assert!(
                        r.commit_ts > self.last_resolved(),
                        "row at {:?} after resolved {:?}",
                        r.commit_ts,
                        self.last_resolved()
                    );
                    let prev = self.rows.insert(
                        (r.key.clone(), r.commit_ts.0),
                        (r.value, r.old_value, r.start_ts.0, r.op),
                    );
                    if prev.is_some() {
                        self.duplicates += 1;
                    }
                }
            }
            FeedEvent::Resolved(ts) => {
                assert!(ts > self.last_resolved(), "resolved not increasing: {ts:?}");
                self.resolved.push(ts);
            }
            FeedEvent::Error(e) => panic!("subscription failed: {e}"),
        }
    }

    /// Reads until the resolved ts reaches `target`.
    async fn until(&mut self, sub: &Subscription, target: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.last_resolved() < Ts(target) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = timeout(left, sub.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "resolved ts did not reach {target} (at {:?}); {:?}",
                        self.last_resolved(),
                        sub.diagnostics()
                    )
                })
                .expect("stream open");
            self.take(ev);
        }
    }

    /// Asserts that exactly the recorded commits above `start` were delivered, once each.
    fn assert_exactly(&self, rec: &Record, start: u64) {
        let want: BTreeSet<_> = rec.keys().filter(|(_, c)| *c > start).cloned().collect();
        let got: BTreeSet<_> = self.rows.keys().cloned().collect();
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(
            missing.is_empty(),
            "missing {} rows: {missing:?}",
            missing.len()
        );
        assert!(extra.is_empty(), "unexpected rows: {extra:?}");
        assert_eq!(self.duplicates, 0, "rows delivered twice");
        for (k, (value, _, start_ts, op)) in &self.rows {
            let (want_value, want_start) = &rec[k];
            assert_eq!(value, want_value);
            assert_eq!(start_ts, want_start);
            assert_eq!(*op, RawOp::Put);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_then_resolved_in_order_from_start_ts() {
    let c = cluster(Vec::new()).await;
    let feed = feed(&c).await;
    let mut rec = Record::new();
    // Before the start ts: not delivered.
    commit(&c, &mut rec, &[key(10, 1), key(10, 2)], b"before");
    let start = c.tso().next();
    commit(&c, &mut rec, &[key(10, 1)], b"v1");
    let sub = feed
        .subscribe(TableSpan::for_table(10), Ts(start))
        .expect("subscribe");
    let mut seen = Seen::default();
    let mut last = 0;
    for i in 0..5 {
        last = commit(
            &c,
            &mut rec,
            &[key(10, i), key(10, 100 + i)],
            format!("v{i}").as_bytes(),
        );
    }
    // Another table's writes never show up.
    commit(&c, &mut rec.clone(), &[key(11, 1)], b"other");
    seen.until(&sub, last).await;
    seen.assert_exactly(&rec, start);
    assert_eq!(seen.rows.len(), 11);
    // The update of key 1 carries the previous value as old value.
    let updates: Vec<_> = seen
        .rows
        .iter()
        .filter(|((k, _), _)| *k == key(10, 1))
        .map(|(_, (v, old, _, _))| (v.clone(), old.clone()))
        .collect();
    assert_eq!(
        updates,
        vec![
            (b"v1".to_vec(), b"before".to_vec()),
            (b"v1".to_vec(), b"v1".to_vec())
        ]
    );
    let d = sub.diagnostics();
    assert_eq!(d.regions, 1);
    assert_eq!(d.unsubscribed, 0);
    assert!(d.resolved_ts >= Ts(last));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewrite_before_subscribe_commit_after_and_rollbacks() {
    let c = cluster(Vec::new()).await;
    let feed = feed(&c).await;
    let mut rec = Record::new();
    let start = c.tso().next();
    // A transaction locked before the subscription, committed after it registers.
    let k1 = key(20, 1);
    let t1 = lock(&c, &k1, b"locked".to_vec());
    // A transaction that will be rolled back.
    let k2 = key(20, 2);
    let t2 = lock(&c, &k2, b"never".to_vec());
    let sub = feed
        .subscribe(TableSpan::for_table(20), Ts(start))
        .expect("subscribe");
    let mut seen = Seen::default();
    // Wait for the region to be up: resolved passes the start ts (held below t1 by the lock).
    timeout(WAIT, async {
        loop {
            if sub.diagnostics().unsubscribed == 0
                && sub.diagnostics().slowest_region.is_some_and(|s| {
                    matches!(
                        s.reason,
                        StuckReason::LockHeld { .. } | StuckReason::Unknown
                    )
                })
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("region initialized");
    let d = sub.diagnostics();
    assert_eq!(
        d.slowest_region.map(|s| s.reason),
        Some(StuckReason::LockHeld { start_ts: Ts(t1) })
    );
    let c1 = c.tso().next();
    c.store().commit(std::slice::from_ref(&k1), t1, c1).unwrap();
    rec.insert((k1.clone(), c1), (b"locked".to_vec(), t1));
    c.store().rollback(std::slice::from_ref(&k2), t2).unwrap();
    // 1PC.
    let t3 = c.tso().next();
    let c3 = c.tso().next();
    let k3 = key(20, 3);
    c.store()
        .one_pc(&[Mutation::put(k3.clone(), b"onepc".to_vec())], t3, c3)
        .unwrap();
    rec.insert((k3, c3), (b"onepc".to_vec(), t3));
    let last = commit(&c, &mut rec, &[key(20, 4)], b"after");
    seen.until(&sub, last).await;
    seen.assert_exactly(&rec, start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_between_scan_and_live_is_matched_once() {
    // Many locked transactions exist at registration; their commits race the initial scan.
    let c = cluster(Vec::new()).await;
    let feed = feed(&c).await;
    let mut rec = Record::new();
    let start = c.tso().next();
    let mut locked = Vec::new();
    for i in 0..200 {
        let k = key(21, i);
        let t = lock(&c, &k, vec![b'x'; 64]);
        locked.push((k, t));
    }
    let sub = feed
        .subscribe(TableSpan::for_table(21), Ts(start))
        .expect("subscribe");
    for (k, t) in locked {
        let ct = c.tso().next();
        c.store().commit(std::slice::from_ref(&k), t, ct).unwrap();
        rec.insert((k, ct), (vec![b'x'; 64], t));
    }
    let last = commit(&c, &mut rec, &[key(21, 999)], b"end");
    let mut seen = Seen::default();
    seen.until(&sub, last).await;
    seen.assert_exactly(&rec, start);
}

/// Writes `n` transactions over `keys` handles of `table`, one every `pause`.
async fn workload(c: &SimCluster, rec: &mut Record, table: i64, n: usize, pause: Duration) -> u64 {
    let mut last = 0;
    for i in 0..n {
        let h = (i * 7919 % 400) as i64;
        let keys = vec![key(table, h), key(table, h + 1000)];
        last = commit(c, rec, &keys, format!("w{i}").as_bytes());
        if i % 10 == 0 {
            tokio::time::sleep(pause).await;
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_splits_merges_and_leader_transfers() {
    let table = 30;
    let c = cluster(vec![encode_key(&key(table, 500))]).await;
    let feed = feed(&c).await;
    let mut rec = Record::new();
    workload(&c, &mut rec, table, 50, Duration::ZERO).await;
    let start = c.tso().next();
    let sub = feed
        .subscribe(TableSpan::for_table(table), Ts(start))
        .expect("subscribe");
    let faults = c.faults();
    let regions = c.regions().clone();
    let stop = Arc::new(AtomicUsize::new(0));
    let stop2 = Arc::clone(&stop);
    let chaos = tokio::spawn(async move {
        let mut n = 0u64;
        while stop2.load(Ordering::Relaxed) == 0 {
            n += 1;
            let split_at = encode_key(&key(table, ((n * 37) % 1400) as i64));
            match n % 4 {
                0 | 1 => {
                    let _ = faults.split_region(&split_at);
                }
                2 => {
                    // Merge the region holding the key into its right neighbour.
                    let r = regions.locate(&split_at);
                    if !r.end.is_empty() {
                        let right = regions.locate(&r.end);
                        let _ = faults.merge_regions(r.id, right.id);
                    }
                }
                _ => {
                    let r = regions.locate(&split_at);
                    let to = r.leader_store % 3 + 1;
                    let _ = faults.transfer_leader(r.id, to);
                }
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        n
    });
    let mut seen = Seen::default();
    let last = workload(&c, &mut rec, table, 600, Duration::from_millis(5)).await;
    stop.store(1, Ordering::Relaxed);
    let faults_injected = timeout(WAIT, chaos).await.expect("chaos stops").unwrap();
    assert!(faults_injected > 5);
    seen.until(&sub, last).await;
    seen.assert_exactly(&rec, start);
    assert!(seen.resolved.windows(2).all(|w| w[0] < w[1]));
    let d = sub.diagnostics();
    assert!(d.retries > 0, "the faults re-subscribed regions: {d:?}");
    assert!(d.regions > 1, "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reset_recovers_without_loss() {
    let table = 40;
    let c = cluster(vec![encode_key(&key(table, 200))]).await;
    let feed = feed(&c).await;
    let mut rec = Record::new();
    let start = c.tso().next();
    let sub = feed
        .subscribe(TableSpan::for_table(table), Ts(start))
        .expect("subscribe");
    let mut seen = Seen::default();
    let first = workload(&c, &mut rec, table, 100, Duration::ZERO).await;
    seen.until(&sub, first).await;
    for store in 1..=3 {
        c.faults().reset_store_streams(store);
    }
    let last = workload(&c, &mut rec, table, 200, Duration::from_millis(2)).await;
    for store in 1..=3 {
        c.faults().reset_store_streams(store);
    }
    let last2 = workload(&c, &mut rec, table, 50, Duration::ZERO).await;
    assert!(last2 > last);
    seen.until(&sub, last2).await;
    seen.assert_exactly(&rec, start);
    let d = sub.diagnostics();
    assert!(d.retries >= 2, "both resets re-subscribed regions: {d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_region_holds_back_only_its_span() {
    // Tables 50 and 51 in separate regions.
    let c = cluster(vec![
        TableSpan::for_table(50).start,
        TableSpan::for_table(51).start,
        TableSpan::for_table(52).start,
    ])
    .await;
    let feed = feed(&c).await;
    let mut rec = Record::new();
    let start = c.tso().next();
    let slow = feed
        .subscribe(TableSpan::for_table(50), Ts(start))
        .expect("subscribe");
    let fast = feed
        .subscribe(TableSpan::for_table(51), Ts(start))
        .expect("subscribe");
    let mut seen_slow = Seen::default();
    let mut seen_fast = Seen::default();
    let warm = commit(&c, &mut rec, &[key(50, 1), key(51, 1)], b"warm");
    seen_slow.until(&slow, warm).await;
    seen_fast.until(&fast, warm).await;

    let stalled = c.regions().locate(&encode_key(&key(50, 1)));
    c.faults().stall_region(stalled.id, true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = seen_slow.last_resolved();
    let mut rec50 = Record::new();
    let mut rec51 = Record::new();
    commit(&c, &mut rec50, &[key(50, 2)], b"a");
    let last = commit(&c, &mut rec51, &[key(51, 2)], b"b");
    seen_fast.until(&fast, last).await;
    // Drain what the slow span has: rows may arrive, but its resolved ts stays below them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Some(ev) = slow.try_recv() {
        seen_slow.take(ev);
    }
    assert!(
        seen_slow.last_resolved() < Ts(last),
        "stalled span advanced"
    );
    assert!(seen_slow.last_resolved() <= Ts(held.0.max(warm) + 1_000_000));
    let d = slow.diagnostics();
    let s = d.slowest_region.expect("a slowest region");
    assert_eq!(s.region_id, stalled.id);
    assert_eq!(s.reason, StuckReason::Unknown);
    assert!(s.resolved_ts < Ts(last));

    c.faults().stall_region(stalled.id, false);
    seen_slow.until(&slow, last).await;
    rec.extend(rec50);
    let rec_slow: Record = rec
        .iter()
        .filter(|((k, _), _)| k.starts_with(&key(50, 0)[..11]))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    seen_slow.assert_exactly(&rec_slow, start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_deregisters_and_busy_store_is_retried() {
    let table = 60;
    let c = cluster(Vec::new()).await;
    let feed = feed(&c).await;
    let mut rec = Record::new();
    for s in 1..=3 {
        c.faults().set_busy(s, true);
    }
    let start = c.tso().next();
    let sub = feed
        .subscribe(TableSpan::for_table(table), Ts(start))
        .expect("subscribe");
    // The region is retried with backoff; between attempts diagnostics name the busy store.
    timeout(WAIT, async {
        loop {
            let d = sub.diagnostics();
            if let Some(s) = d.slowest_region
                && let StuckReason::ErrorBackoff { error } = &s.reason
                && error.contains("busy")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("busy store shows in diagnostics");
    for s in 1..=3 {
        c.faults().set_busy(s, false);
    }
    let last = commit(&c, &mut rec, &[key(table, 1)], b"v");
    let mut seen = Seen::default();
    seen.until(&sub, last).await;
    seen.assert_exactly(&rec, start);
    assert!(c.cdc().registered_count() >= 1);
    sub.unsubscribe();
    timeout(WAIT, async {
        while c.cdc().registered_count() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("regions deregistered");
    assert_eq!(feed.quota().used(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_hook_fires_and_try_recv_does_not_block() {
    let table = 70;
    let c = cluster(Vec::new()).await;
    let feed = feed(&c).await;
    let mut rec = Record::new();
    let start = c.tso().next();
    let sub = feed
        .subscribe(TableSpan::for_table(table), Ts(start))
        .expect("subscribe");
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = Arc::clone(&calls);
    sub.set_notify(Arc::new(move || {
        calls2.fetch_add(1, Ordering::Relaxed);
    }));
    let last = commit(&c, &mut rec, &[key(table, 1)], b"v");
    let mut seen = Seen::default();
    timeout(WAIT, async {
        while seen.last_resolved() < Ts(last) {
            match sub.try_recv() {
                Some(ev) => seen.take(ev),
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .expect("resolved reached by polling");
    assert!(calls.load(Ordering::Relaxed) > 0);
    seen.assert_exactly(&rec, start);
    assert!(
        feed.subscribe(
            TableSpan {
                end: b"a".to_vec(),
                start: b"b".to_vec(),
                ..TableSpan::for_table(1)
            },
            Ts(1)
        )
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cluster_id_ends_the_stream_with_an_error() {
    let c = cluster(Vec::new()).await;
    let pd = timeout(WAIT, PdClient::connect(PdConfig::new(c.pd_endpoints())))
        .await
        .expect("pd connects in time")
        .expect("pd connects");
    let wrong = c.cluster_id().wrapping_add(1);
    let feed = RegionFeed::new(
        Arc::new(pd),
        FeedConfig {
            cluster_id: Some(wrong),
            ..FeedConfig::default()
        },
    );
    let sub = feed
        .subscribe(TableSpan::for_table(80), Ts(c.tso().next()))
        .expect("subscribe");
    let ev = timeout(WAIT, sub.recv()).await.expect("an event in time");
    match ev {
        Some(FeedEvent::Error(tidal_ingest::feed::FeedError::ClusterIdMismatch {
            current,
            request,
            ..
        })) => {
            assert_eq!((current, request), (c.cluster_id(), wrong));
        }
        other => panic!("expected a cluster id mismatch, got {other:?}"),
    }
    assert!(timeout(WAIT, sub.recv()).await.expect("ends").is_none());
    assert!(sub.is_ended());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_quota_pauses_reading_until_rows_are_taken() {
    let table = 90;
    let c = cluster(Vec::new()).await;
    let pd = timeout(WAIT, PdClient::connect(PdConfig::new(c.pd_endpoints())))
        .await
        .expect("pd connects in time")
        .expect("pd connects");
    let quota = 64 * 1024;
    let feed = RegionFeed::new(
        Arc::new(pd),
        FeedConfig {
            memory_quota: quota,
            ..FeedConfig::default()
        },
    );
    let mut rec = Record::new();
    let start = c.tso().next();
    let sub = feed
        .subscribe(TableSpan::for_table(table), Ts(start))
        .expect("subscribe");
    // About 9 MB of rows in total, far above the quota.
    let value = vec![b'v'; 1500];
    let mut last = 0;
    for i in 0..6000 {
        last = commit(&c, &mut rec, &[key(table, i)], &value);
    }
    // Nobody consumes: the feed stops reading once the quota is used. One message (up to 64
    // events of ~32 KiB) can land after the check, so allow that much on top.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = feed.quota().used();
    assert!(used >= quota, "the quota fills up: {used}");
    assert!(used < quota + 5 * 1024 * 1024 / 2, "reading paused: {used}");
    let mut seen = Seen::default();
    seen.until(&sub, last).await;
    seen.assert_exactly(&rec, start);
    assert!(feed.quota().used() < quota);
}
