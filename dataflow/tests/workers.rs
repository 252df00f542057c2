//! The same upstream history replicated with 1, 2 and 4 workers: identical sink output (the
//! multiset of transactions per table, per-key commit order), watermark invariants sampled
//! throughout, and the downstream state equal to the upstream snapshot at the checkpoint.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tidal_model::{Datum, Ts};
use tidal_sim::export::snapshot_tables;

/// A small deterministic workload over several tables: inserts, overwrites and deletes of a
/// few hot keys, and transactions touching two tables.
fn workload(e: &Env, tables: &[&str], rounds: i64) -> Ts {
    let mut last = Ts::ZERO;
    for r in 0..rounds {
        for (i, t) in tables.iter().enumerate() {
            let rows = (0..5)
                .map(|k| row((r * 3 + k + i as i64) % 17, &format!("{t}-{r}-{k}")))
                .collect();
            last = last.max(upsert(&e.tidb, "app", t, rows));
        }
        if r % 4 == 3 {
            last = last.max(delete(&e.tidb, "app", tables[0], r % 17));
        }
        // One transaction over two tables.
        let a = e.tidb.table("app", tables[0]).unwrap();
        let b = e.tidb.table("app", tables[1]).unwrap();
        let mut txn = e.tidb.begin();
        txn.insert(&a, row(100 + r, "multi-a")).unwrap();
        txn.insert(&b, row(100 + r, "multi-b")).unwrap();
        last = last.max(Ts(txn.commit().unwrap().commit_ts.unwrap()));
    }
    last
}

type Multiset = BTreeMap<(String, u64, u64), Vec<(String, Option<Vec<Datum>>)>>;

fn multiset(records: &[Record]) -> Multiset {
    let mut out = Multiset::new();
    for r in records {
        let Record::Txn(t) = r else { continue };
        let name = format!("{}.{}", t.table.schema_name, t.table.table_name);
        let rows = t
            .rows
            .iter()
            .map(|c| (format!("{:?}", c.handle), c.new.clone()))
            .collect();
        assert!(
            out.insert((name, t.commit_ts.0, t.start_ts.0), rows)
                .is_none(),
            "duplicate transaction"
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_two_and_four_workers_write_the_same_thing() {
    let e = env().await;
    e.tidb.create_database("app").unwrap();
    let tables = ["a", "b", "c", "d", "e"];
    for t in tables {
        e.tidb.create_table("app", &table_spec(t)).unwrap();
    }
    let start_ts = e.now();
    let target = workload(&e, &tables, 12);

    let mut outputs = Vec::new();
    for workers in [1usize, 2, 4] {
        let sink = RecordingSink::new();
        let h = start(&e, sink.clone(), start_ts, workers, |s| {
            s.target_ts = Some(target);
            s.max_batch_rows = 7;
        })
        .await;
        let samples = wait_checkpoint(&h, target, 30).await;
        assert!(!samples.is_empty());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !h.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "workers did not finish at the target ts"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(h.checkpoint_ts(), target);
        assert!(h.last_synced_ts() <= target);
        assert!(
            h.last_synced_ts() >= target.prev(),
            "last synced {:?}",
            h.last_synced_ts()
        );
        let states = h.checksum_states();
        assert_eq!(states.len(), workers);
        let records = sink.records();
        check_order(&records);
        // Downstream equals upstream at the checkpoint.
        let state = apply_txns(&records);
        let snap = snapshot_tables(e.cluster.store(), target.0, &[]).unwrap();
        assert_eq!(snap.len(), tables.len());
        for t in &snap {
            let name = format!("{}.{}", t.db, t.table);
            assert_eq!(
                state.get(&name),
                Some(&t.rows),
                "table {name} with {workers} workers"
            );
        }
        outputs.push((workers, multiset(&records)));
        h.stop();
    }
    let (_, first) = &outputs[0];
    assert!(first.len() > 12 * 5);
    for (w, o) in &outputs[1..] {
        assert_eq!(o, first, "{w} workers wrote something else than 1 worker");
    }
    e.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_hold_their_invariants_while_data_flows() {
    for workers in [1usize, 2, 4] {
        let e = env().await;
        e.tidb.create_database("app").unwrap();
        let tables = ["a", "b", "c"];
        for t in tables {
            e.tidb.create_table("app", &table_spec(t)).unwrap();
        }
        let start_ts = e.now();
        let sink = RecordingSink::with_delay(Duration::from_millis(3));
        let h = start(&e, sink.clone(), start_ts, workers, |s| {
            s.max_batch_rows = 16
        })
        .await;
        let writer = {
            let tidb = e.tidb.clone();
            std::thread::spawn(move || {
                let mut last = Ts::ZERO;
                for r in 0..40i64 {
                    for t in ["a", "b", "c"] {
                        let rows = (0..3).map(|k| row((r + k) % 11, &format!("{r}"))).collect();
                        last = last.max(upsert(&tidb, "app", t, rows));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                last
            })
        };
        // Sample while the writer runs: no regression, checkpoint <= resolved, and the sink
        // holds everything at or below every checkpoint seen.
        let mut samples = Vec::new();
        while !writer.is_finished() {
            let w = h.watermarks();
            samples.push(w);
            let txns = sink.txns();
            let c = w.checkpoint_ts;
            // Everything upstream at or below c must be in the sink: compare with export.
            if c > start_ts {
                let state = apply_txns(
                    &sink
                        .records()
                        .into_iter()
                        .filter(|r| matches!(r, Record::Txn(t) if t.commit_ts <= c))
                        .collect::<Vec<_>>(),
                );
                let snap = snapshot_tables(e.cluster.store(), c.0, &[]).unwrap();
                for t in &snap {
                    let name = format!("{}.{}", t.db, t.table);
                    let empty = BTreeMap::new();
                    assert_eq!(
                        state.get(&name).unwrap_or(&empty),
                        &t.rows,
                        "table {name} at checkpoint {} ({workers} workers)",
                        c.0
                    );
                }
            }
            drop(txns);
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        let last = writer.join().unwrap();
        samples.extend(wait_checkpoint(&h, last, 30).await);
        for w in samples.windows(2) {
            assert!(w[1].checkpoint_ts >= w[0].checkpoint_ts);
            assert!(w[1].resolved_ts >= w[0].resolved_ts);
        }
        assert!(samples.iter().all(|w| w.checkpoint_ts <= w.resolved_ts));
        check_order(&sink.records());
        h.stop();
        e.cluster.shutdown().await;
    }
}
