//! The simplest end-to-end path: one table, inserts, a recording sink, 1 worker.

mod common;

use common::*;
use tidal_model::Ts;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_reach_the_sink_and_the_checkpoint_passes_them() {
    let e = env().await;
    e.tidb.create_database("app").unwrap();
    e.tidb.create_table("app", &table_spec("t")).unwrap();
    let start_ts = e.now();
    let sink = RecordingSink::new();
    let h = start(&e, sink.clone(), start_ts, 1, |_| {}).await;
    let mut last = Ts::ZERO;
    for i in 0..10 {
        let rows = (0..10).map(|j| row(i * 10 + j, &format!("v{i}"))).collect();
        last = upsert(&e.tidb, "app", "t", rows);
    }
    let samples = wait_checkpoint(&h, last, 20).await;
    assert!(samples.len() > 1);
    let txns = sink.txns();
    assert_eq!(txns.len(), 10, "one sink txn per upstream txn");
    assert_eq!(txns.iter().map(|t| t.rows.len()).sum::<usize>(), 100);
    assert!(txns.windows(2).all(|w| w[0].commit_ts < w[1].commit_ts));
    assert_eq!(txns.last().unwrap().commit_ts, last);
    assert!(
        txns.iter()
            .all(|t| t.table.table_name == "t" && !t.safe_mode)
    );
    assert!(h.last_synced_ts() >= last);
    let state = apply_txns(&sink.records());
    assert_eq!(state["app.t"].len(), 100);
    check_order(&sink.records());
    assert!(h.error().is_none());
    assert!(h.checkpoint_persistable(), "{:?}", h.checksum_states());
    h.stop();
    e.cluster.shutdown().await;
}
