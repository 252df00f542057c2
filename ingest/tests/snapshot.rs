//! `SnapshotReader` against the embedded cluster over real gRPC: paging across regions, MVCC
//! visibility, stale routes (splits, leader moves), locks, and reads below the GC safe point.
//! Every network await is bounded by `within`.

use std::future::Future;
use std::time::Duration;

use tidal_ingest::pd::{PdClient, PdConfig};
use tidal_ingest::snapshot::{SnapshotConfig, SnapshotError, SnapshotReader};
use tidal_model::codec::bytes::encode_key;
use tidal_model::{Ts, meta, tablecodec};
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::mvcc::Mutation;

async fn within<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("operation hung")
}

const TABLE: i64 = 100;

fn row_key(h: i64) -> Vec<u8> {
    tablecodec::encode_row_key_int(TABLE, h)
}

/// Writes `kvs` (None = delete) in one committed transaction; returns the commit ts.
fn write(c: &SimCluster, kvs: &[(Vec<u8>, Option<Vec<u8>>)]) -> u64 {
    let start = c.tso().next();
    let muts: Vec<Mutation> = kvs
        .iter()
        .map(|(k, v)| match v {
            Some(v) => Mutation::put(k.clone(), v.clone()),
            None => Mutation::delete(k.clone()),
        })
        .collect();
    let primary = muts[0].key.clone();
    c.store().prewrite(&muts, &primary, start).unwrap();
    let keys: Vec<Vec<u8>> = muts.iter().map(|m| m.key.clone()).collect();
    let commit = c.tso().next();
    c.store().commit(&keys, start, commit).unwrap();
    commit
}

async fn setup(cfg: SnapshotConfig) -> (SimCluster, SnapshotReader) {
    let cluster = SimCluster::start(SimConfig::default()).await.unwrap();
    let pd = within(10, PdClient::connect(PdConfig::new(cluster.pd_endpoints())))
        .await
        .unwrap();
    (cluster, SnapshotReader::with_config(pd, cfg))
}

fn value(h: i64, version: u32) -> Vec<u8> {
    format!("v{h}-g{version}").into_bytes()
}

#[tokio::test]
async fn scan_pages_across_regions() {
    let cfg = SnapshotConfig {
        scan_batch: 7,
        ..SnapshotConfig::default()
    };
    let (c, reader) = setup(cfg).await;
    let kvs: Vec<_> = (0..300).map(|h| (row_key(h), Some(value(h, 0)))).collect();
    let ts = Ts(write(&c, &kvs));
    for h in [50, 120, 200, 201, 299] {
        c.faults().split_region(&encode_key(&row_key(h))).unwrap();
    }
    let (start, end) = tablecodec::table_record_range(TABLE);
    let all = within(20, reader.scan(&start, &end, ts, 0)).await.unwrap();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = (0..300).map(|h| (row_key(h), value(h, 0))).collect();
    assert_eq!(all, expected);

    let limited = within(20, reader.scan(&start, &end, ts, 123))
        .await
        .unwrap();
    assert_eq!(limited, expected[..123].to_vec());

    let sub = within(20, reader.scan(&row_key(40), &row_key(210), ts, 0))
        .await
        .unwrap();
    assert_eq!(sub, expected[40..210].to_vec());

    // Unbounded end: the meta keys ('m' < 't') are not in it, every row is.
    let tail = within(20, reader.scan(&row_key(295), &[], ts, 0))
        .await
        .unwrap();
    assert_eq!(tail, expected[295..].to_vec());

    // Before the write nothing is visible.
    let none = within(20, reader.scan(&start, &end, Ts(ts.0 - 1), 0))
        .await
        .unwrap();
    assert!(
        none.is_empty(),
        "{} pairs visible before the write",
        none.len()
    );
}

#[tokio::test]
async fn reads_see_their_snapshot() {
    let (c, reader) = setup(SnapshotConfig::default()).await;
    let t1 = Ts(write(
        &c,
        &(0..10)
            .map(|h| (row_key(h), Some(value(h, 1))))
            .collect::<Vec<_>>(),
    ));
    let t2 = Ts(write(
        &c,
        &(0..5)
            .map(|h| (row_key(h), Some(value(h, 2))))
            .collect::<Vec<_>>(),
    ));
    let t3 = Ts(write(&c, &[(row_key(3), None)]));

    assert_eq!(
        within(10, reader.get(&row_key(3), t1)).await.unwrap(),
        Some(value(3, 1))
    );
    assert_eq!(
        within(10, reader.get(&row_key(3), t2)).await.unwrap(),
        Some(value(3, 2))
    );
    assert_eq!(within(10, reader.get(&row_key(3), t3)).await.unwrap(), None);
    assert_eq!(
        within(10, reader.get(&row_key(7), t3)).await.unwrap(),
        Some(value(7, 1))
    );
    assert_eq!(
        within(10, reader.get(&row_key(3), Ts(t1.0 - 1)))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        within(10, reader.get(&row_key(99), t3)).await.unwrap(),
        None
    );

    let (start, end) = tablecodec::table_record_range(TABLE);
    let at_t3 = within(10, reader.scan(&start, &end, t3, 0)).await.unwrap();
    let expected: Vec<_> = (0..10)
        .filter(|h| *h != 3)
        .map(|h| (row_key(h), value(h, if h < 5 { 2 } else { 1 })))
        .collect();
    assert_eq!(at_t3, expected);
}

#[tokio::test]
async fn stale_routes_are_followed() {
    let (c, reader) = setup(SnapshotConfig::default()).await;
    let kvs: Vec<_> = (0..40).map(|h| (row_key(h), Some(value(h, 0)))).collect();
    let ts = Ts(write(&c, &kvs));
    // Fill the route cache, then move leaders and split behind the reader's back.
    assert_eq!(
        within(10, reader.get(&row_key(10), ts)).await.unwrap(),
        Some(value(10, 0))
    );
    let region = c.regions().locate(&encode_key(&row_key(10)));
    let leader_store = region.leader_peer().map(|p| p.store_id).unwrap();
    let other = region
        .peers
        .iter()
        .map(|p| p.store_id)
        .find(|s| *s != leader_store)
        .unwrap();
    c.faults().transfer_leader(region.id, other).unwrap();
    assert_eq!(
        within(10, reader.get(&row_key(10), ts)).await.unwrap(),
        Some(value(10, 0))
    );
    c.faults().split_region(&encode_key(&row_key(20))).unwrap();
    c.faults().split_region(&encode_key(&row_key(5))).unwrap();
    assert_eq!(
        within(10, reader.get(&row_key(30), ts)).await.unwrap(),
        Some(value(30, 0))
    );
    let (start, end) = tablecodec::table_record_range(TABLE);
    let all = within(20, reader.scan(&start, &end, ts, 0)).await.unwrap();
    assert_eq!(all.len(), 40);
    assert_eq!(all[39], (row_key(39), value(39, 0)));
}

#[tokio::test]
async fn locks_block_then_fail_with_the_lock() {
    let cfg = SnapshotConfig {
        max_lock_retries: 2,
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
        ..SnapshotConfig::default()
    };
    let (c, reader) = setup(cfg).await;
    let before = Ts(write(&c, &[(row_key(1), Some(value(1, 0)))]));
    let start = c.tso().next();
    c.store()
        .prewrite(
            &[Mutation::put(row_key(1), value(1, 1))],
            &row_key(1),
            start,
        )
        .unwrap();
    // A snapshot older than the lock is not blocked by it.
    assert_eq!(
        within(10, reader.get(&row_key(1), before)).await.unwrap(),
        Some(value(1, 0))
    );
    let after = Ts(c.tso().next());
    match within(10, reader.get(&row_key(1), after)).await {
        Err(SnapshotError::Locked {
            key,
            primary,
            lock_ts,
            attempts,
            ..
        }) => {
            assert_eq!(key, row_key(1));
            assert_eq!(primary, row_key(1));
            assert_eq!(lock_ts, start);
            assert_eq!(attempts, 3);
        }
        other => panic!("expected a lock error, got {other:?}"),
    }
    let (s, e) = tablecodec::table_record_range(TABLE);
    assert!(matches!(
        within(10, reader.scan(&s, &e, after, 0)).await,
        Err(SnapshotError::Locked { lock_ts, .. }) if lock_ts == start
    ));
    let commit = c.tso().next();
    c.store().commit(&[row_key(1)], start, commit).unwrap();
    // Committed after `after`: that snapshot keeps the old value, a newer one sees the new.
    assert_eq!(
        within(10, reader.get(&row_key(1), after)).await.unwrap(),
        Some(value(1, 0))
    );
    let fresh = Ts(c.tso().next());
    assert_eq!(
        within(10, reader.get(&row_key(1), fresh)).await.unwrap(),
        Some(value(1, 1))
    );
}

#[tokio::test]
async fn reads_below_the_gc_safe_point_are_lost() {
    let (c, reader) = setup(SnapshotConfig::default()).await;
    let t1 = Ts(write(&c, &[(row_key(1), Some(value(1, 0)))]));
    let t2 = Ts(write(&c, &[(row_key(1), Some(value(1, 1)))]));
    let sp = c.faults().advance_gc_safe_point(t2.0);
    assert_eq!(sp, t2.0);
    let err = within(10, reader.get(&row_key(1), t1)).await.unwrap_err();
    assert_eq!(
        err,
        SnapshotError::LostByGc {
            ts: t1,
            safe_point: t2
        }
    );
    assert!(err.to_string().starts_with("snapshot lost by GC"));
    let (s, e) = tablecodec::table_record_range(TABLE);
    assert!(
        within(10, reader.scan(&s, &e, t1, 0))
            .await
            .unwrap_err()
            .is_lost_by_gc()
    );
    // At the safe point itself the snapshot is intact.
    assert_eq!(
        within(10, reader.get(&row_key(1), t2)).await.unwrap(),
        Some(value(1, 1))
    );
}

#[tokio::test]
async fn meta_hashes_and_strings() {
    let (c, reader) = setup(SnapshotConfig::default()).await;
    let ts = Ts(write(
        &c,
        &[
            (meta::string_key(b"Answer"), Some(b"42".to_vec())),
            (
                meta::hash_field_key(b"DB:7", b"Table:9"),
                Some(b"nine".to_vec()),
            ),
            (meta::hash_field_key(b"DB:7", b"TID:9"), Some(b"3".to_vec())),
            (
                meta::hash_field_key(b"DB:70", b"Table:1"),
                Some(b"other".to_vec()),
            ),
            (
                meta::hash_field_key(b"DB:7", b"Table:10"),
                Some(b"ten".to_vec()),
            ),
        ],
    ));
    let fields = within(10, reader.scan_meta_hash(b"DB:7", ts))
        .await
        .unwrap();
    assert_eq!(
        fields,
        vec![
            (b"TID:9".to_vec(), b"3".to_vec()),
            (b"Table:10".to_vec(), b"ten".to_vec()),
            (b"Table:9".to_vec(), b"nine".to_vec()),
        ]
    );
    assert_eq!(
        within(10, reader.get_meta_string(b"Answer", ts))
            .await
            .unwrap(),
        Some(b"42".to_vec())
    );
    assert_eq!(
        within(10, reader.get_meta_string(b"Nope", ts))
            .await
            .unwrap(),
        None
    );
}
