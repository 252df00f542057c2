//! The user stage: what it drops never reaches the sink, what it changes does, and the
//! watermarks keep their meaning either way.

mod common;

use std::time::Duration;

use common::*;
use tidal_dataflow::user_stage;
use tidal_model::{Datum, Ts};
use timely::dataflow::operators::vec::{Filter, Map};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_that_drops_everything_lets_the_checkpoint_advance() {
    for workers in [1usize, 3] {
        let e = env().await;
        e.tidb.create_database("app").unwrap();
        e.tidb.create_table("app", &table_spec("t")).unwrap();
        let start_ts = e.now();
        let sink = RecordingSink::new();
        let h = start(&e, sink.clone(), start_ts, workers, |spec| {
            spec.stage = Some(user_stage(|txns| txns.filter(|_| false)));
        })
        .await;
        let mut last = Ts::ZERO;
        for i in 0..10 {
            last = upsert(&e.tidb, "app", "t", vec![row(i, "x")]);
        }
        let samples = wait_checkpoint(&h, last, 20).await;
        assert!(samples.last().unwrap().checkpoint_ts >= last);
        assert!(sink.txns().is_empty());
        assert_eq!(h.stats().rows_flushed, 0);
        // Decoded, then dropped by the stage.
        assert_eq!(h.stats().rows_emitted, 10);
        h.stop();
        e.cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_rewrites_rows_and_keeps_order() {
    let e = env().await;
    e.tidb.create_database("app").unwrap();
    e.tidb.create_table("app", &table_spec("t")).unwrap();
    let start_ts = e.now();
    let sink = RecordingSink::with_delay(Duration::from_millis(2));
    let h = start(&e, sink.clone(), start_ts, 2, |spec| {
        spec.stage = Some(user_stage(|txns| {
            txns.map(|mut item| {
                for r in &mut item.txn.rows {
                    if let Some(n) = r.new.as_mut() {
                        n[1] = Datum::Bytes(b"masked".to_vec());
                    }
                }
                item
            })
        }));
    })
    .await;
    let mut last = Ts::ZERO;
    for i in 0..20 {
        last = upsert(&e.tidb, "app", "t", vec![row(i % 5, &format!("v{i}"))]);
    }
    wait_checkpoint(&h, last, 20).await;
    let records = sink.records();
    check_order(&records);
    let state = apply_txns(&records);
    let t = &state["app.t"];
    assert_eq!(t.len(), 5);
    assert!(t.values().all(|v| v[1] == Datum::Bytes(b"masked".to_vec())));
    assert_eq!(h.stats().rows_flushed, 20);
    h.stop();
    e.cluster.shutdown().await;
}
