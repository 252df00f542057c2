//! Spilling to disk: transactions several times larger than a small feed memory quota
//! replicate exactly, their rows went through spill files, and the files are gone afterwards.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use tidal_model::tablecodec::Handle;
use tidal_model::{Datum, Ts};
use tidal_sim::export::snapshot_tables;
use tidal_sim::tidb::{ColumnSpec, PrimaryKey, Table, TableSpec, TidbError, Txn, types};

const ROWS: i64 = 1500;
const WIDTH: usize = 3000;
const QUOTA: usize = 1 << 20;

fn wide_spec(name: &str) -> TableSpec {
    TableSpec::new(
        name,
        vec![
            ColumnSpec::new("id", types::bigint()).not_null(),
            ColumnSpec::new("v", types::bigint()),
            ColumnSpec::new("payload", types::varchar(WIDTH as i64)),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()))
}

/// Deterministic pseudo-random letters (xorshift), so rows do not compress to nothing.
fn payloads(seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    (0..ROWS)
        .map(|_| {
            (0..WIDTH)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b'a' + (x % 26) as u8
                })
                .collect()
        })
        .collect()
}

/// Runs one large transaction of `f` over ids `1..=ROWS`; returns its commit ts.
fn large_txn(e: &Env, f: impl Fn(&mut Txn, &Table, i64) -> Result<(), TidbError>) -> Ts {
    let t = e.tidb.table("big", "t").unwrap();
    let mut txn = e.tidb.begin();
    for id in 1..=ROWS {
        f(&mut txn, &t, id).unwrap();
    }
    Ts(txn.commit().unwrap().commit_ts.unwrap())
}

fn spill_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_larger_than_the_quota_spill_and_replicate_exactly() {
    let e = env().await;
    e.tidb.create_database("big").unwrap();
    e.tidb.create_table("big", &wide_spec("t")).unwrap();
    e.tidb.create_table("big", &table_spec("small")).unwrap();
    let start_ts = e.now();
    let spill_root = tempfile::tempdir().unwrap();
    let sink = RecordingSink::new();
    let h = start(&e, sink.clone(), start_ts, 2, |s| {
        s.feed.memory_quota = QUOTA;
        s.spill_dir = Some(spill_root.path().to_path_buf());
    })
    .await;

    // ~4.5 MB of row values per transaction (the update carries old values too: ~9 MB),
    // against a 1 MiB quota.
    let payloads = payloads(7);
    let c1 = large_txn(&e, |txn, t, id| {
        txn.insert(
            t,
            vec![
                Datum::Int(id),
                Datum::Int(id),
                Datum::Bytes(payloads[(id - 1) as usize].clone()),
            ],
        )
        .map(drop)
    });
    let small1 = upsert(&e.tidb, "big", "small", vec![row(1, "between")]);
    let c2 = large_txn(&e, |txn, t, id| {
        let p = &payloads[(ROWS - id) as usize];
        txn.update(
            t,
            &Handle::Int(id),
            vec![Datum::Int(id), Datum::Int(-id), Datum::Bytes(p.clone())],
        )
        .map(drop)
    });
    let c3 = large_txn(&e, |txn, t, id| {
        if id % 3 == 0 {
            txn.delete(t, &Handle::Int(id)).map(drop)
        } else {
            Ok(())
        }
    });
    let last = upsert(&e.tidb, "big", "small", vec![row(2, "after")]);
    assert!(c1 < small1 && small1 < c2 && c2 < c3 && c3 < last);

    wait_checkpoint(&h, last, 60).await;
    let stats = h.stats();
    assert!(
        stats.spilled_bytes > 3 * QUOTA as u64,
        "the large transactions did not go through spill files: {stats:?}"
    );
    assert!(stats.spill_files >= 1, "{stats:?}");
    assert_eq!(
        stats.rows_flushed,
        (ROWS + ROWS + ROWS / 3 + 2) as u64,
        "{stats:?}"
    );

    // Exactly the upstream.
    let records = sink.records();
    let state = apply_txns(&records);
    let snap = snapshot_tables(e.cluster.store(), last.0, &[]).unwrap();
    assert_eq!(snap.len(), 2);
    for t in &snap {
        let name = format!("{}.{}", t.db, t.table);
        assert_eq!(state.get(&name), Some(&t.rows), "{name}");
    }
    assert_eq!(snap.iter().map(|t| t.rows.len()).sum::<usize>(), 1000 + 2);

    // Order: per key, commit order; a transaction's pieces are contiguous per table and
    // together hold each of its rows once; nothing of a later transaction of the same
    // table comes between them.
    let mut per_key: BTreeMap<(i64, Handle), Vec<Ts>> = BTreeMap::new();
    let mut pieces: BTreeMap<Ts, (usize, usize)> = BTreeMap::new();
    let mut last_big: Option<Ts> = None;
    for t in sink.txns() {
        for c in &t.rows {
            assert_eq!(c.commit_ts, t.commit_ts);
            let v = per_key.entry((c.table_id, c.handle.clone())).or_default();
            assert!(v.last().is_none_or(|l| *l < c.commit_ts), "{v:?}");
            v.push(c.commit_ts);
        }
        if t.table.table_name == "t" {
            assert!(last_big.is_none_or(|l| l <= t.commit_ts), "interleaved");
            last_big = Some(t.commit_ts);
            let p = pieces.entry(t.commit_ts).or_default();
            p.0 += 1;
            p.1 += t.rows.len();
        }
    }
    assert_eq!(
        pieces.values().map(|p| p.1).collect::<Vec<_>>(),
        vec![ROWS as usize, ROWS as usize, (ROWS / 3) as usize]
    );
    assert!(
        pieces.values().all(|p| p.0 > 1),
        "spilled transactions are read back in chunks: {pieces:?}"
    );

    // Read back, the files are gone; stopping removes the directories too.
    assert_eq!(spill_files(spill_root.path()), 0, "spill files left behind");
    h.stop();
    let left: Vec<_> = std::fs::read_dir(spill_root.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left after stop: {left:?}");
    e.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_with_spilled_rows_removes_the_files() {
    let e = env().await;
    e.tidb.create_database("big").unwrap();
    e.tidb.create_table("big", &wide_spec("t")).unwrap();
    let start_ts = e.now();
    let spill_root = tempfile::tempdir().unwrap();
    // A sink that takes forever: released rows pile up in the driver, the rest stays spilled.
    let sink = RecordingSink::with_delay(Duration::from_secs(600));
    let h = start(&e, sink.clone(), start_ts, 1, |s| {
        s.feed.memory_quota = QUOTA;
        s.spill_dir = Some(spill_root.path().to_path_buf());
    })
    .await;
    let payloads = payloads(9);
    large_txn(&e, |txn, t, id| {
        txn.insert(
            t,
            vec![
                Datum::Int(id),
                Datum::Int(id),
                Datum::Bytes(payloads[(id - 1) as usize].clone()),
            ],
        )
        .map(drop)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while h.stats().spilled_bytes < 2 * QUOTA as u64 || spill_files(spill_root.path()) == 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", h.stats());
        assert!(h.error().is_none(), "{:?}", h.error());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The slow sink holds the source back: the transaction is not all read back.
    let stats = h.stats();
    assert!(
        stats.queued_bytes + stats.inflight_bytes < 4 * QUOTA as u64,
        "{stats:?}"
    );
    h.stop();
    assert_eq!(spill_files(spill_root.path()), 0);
    assert_eq!(std::fs::read_dir(spill_root.path()).unwrap().count(), 0);
    e.cluster.shutdown().await;
}
