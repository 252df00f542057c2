//! DDL through the dataflow: the schema store follows the DDL stream, rows are decoded with the
//! schema of their commit ts, spans come and go with CREATE/DROP/TRUNCATE, and the barrier runs
//! each DDL exactly once between the DML before and after it.

mod common;

use std::time::Duration;

use common::*;
use tidal_model::ddl::ActionType;
use tidal_model::{Datum, Ts};
use tidal_sim::export::snapshot_tables;
use tidal_sim::tidb::{ColumnSpec, types};

/// Every transaction of `tables` committed before `ddl_ts` is recorded before the DDL, every
/// one committed after it is recorded after it; the DDL is recorded exactly once.
fn assert_barrier(records: &[Record], ddl_ts: Ts, tables: &[i64]) {
    let pos: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Record::Ddl(d, _) if d.commit_ts == ddl_ts))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        pos.len(),
        1,
        "DDL at {} recorded {} times",
        ddl_ts.0,
        pos.len()
    );
    let p = pos[0];
    for (i, r) in records.iter().enumerate() {
        let Record::Txn(t) = r else { continue };
        let ids = [t.table.info.id, t.rows.first().map_or(0, |c| c.table_id)];
        if !ids.iter().any(|id| tables.contains(id)) {
            continue;
        }
        if t.commit_ts < ddl_ts {
            assert!(
                i < p,
                "txn at {} written after the DDL at {}",
                t.commit_ts.0,
                ddl_ts.0
            );
        } else {
            assert!(
                i > p,
                "txn at {} written before the DDL at {}",
                t.commit_ts.0,
                ddl_ts.0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_column_mid_stream_decodes_old_and_new_rows_with_their_schema() {
    for workers in [1usize, 2] {
        let e = env().await;
        e.tidb.create_database("app").unwrap();
        let t = e.tidb.create_table("app", &table_spec("t")).unwrap();
        let tid = t.table_ids[0];
        let start_ts = e.now();
        let sink = RecordingSink::with_delay(Duration::from_millis(5));
        let h = start(&e, sink.clone(), start_ts, workers, |_| {}).await;
        for i in 0..5 {
            upsert(&e.tidb, "app", "t", vec![row(i, "old")]);
        }
        let ddl = e
            .tidb
            .add_column(
                "app",
                "t",
                &ColumnSpec::new("c", types::bigint()).default(Datum::Int(7)),
            )
            .unwrap();
        let mut last = Ts::ZERO;
        for i in 5..10 {
            let mut r = row(i, "new");
            r.push(Datum::Int(i * 100));
            last = upsert(&e.tidb, "app", "t", vec![r]);
        }
        wait_checkpoint(&h, last, 20).await;
        let records = sink.records();
        assert_barrier(&records, Ts(ddl.commit_ts), &[tid]);
        let ddls = sink.ddls();
        assert_eq!(ddls.len(), 1);
        assert_eq!(ddls[0].action, ActionType::ADD_COLUMN);
        for t in sink.txns() {
            for c in &t.rows {
                let n = c.new.as_ref().unwrap().len();
                if t.commit_ts < Ts(ddl.commit_ts) {
                    assert_eq!(n, 2, "old row decoded with the new schema");
                    assert_eq!(t.table.info.public_columns().len(), 2);
                } else {
                    assert_eq!(n, 3, "new row decoded with the old schema");
                    assert_eq!(t.table.info.public_columns().len(), 3);
                    assert_eq!(t.table.version, ddl.commit_ts);
                }
            }
        }
        assert_eq!(sink.txns().len(), 10);
        assert_eq!(h.stats().ddl_executed, 1);
        h.stop();
        e.cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_rename_and_drop_keep_order_and_run_once() {
    for workers in [1usize, 4] {
        let e = env().await;
        e.tidb.create_database("app").unwrap();
        let t = e.tidb.create_table("app", &table_spec("t")).unwrap();
        let u = e.tidb.create_table("app", &table_spec("u")).unwrap();
        let (tid, uid) = (t.table_ids[0], u.table_ids[0]);
        let start_ts = e.now();
        let sink = RecordingSink::with_delay(Duration::from_millis(2));
        let h = start(&e, sink.clone(), start_ts, workers, |_| {}).await;
        for i in 0..6 {
            upsert(&e.tidb, "app", "t", vec![row(i, "before")]);
            upsert(&e.tidb, "app", "u", vec![row(i, "u-before")]);
        }
        let trunc = e.tidb.truncate_table("app", "t").unwrap();
        let new_tid = trunc.table_ids[0];
        assert_ne!(new_tid, tid);
        for i in 0..3 {
            upsert(&e.tidb, "app", "t", vec![row(i, "after-truncate")]);
        }
        let ren = e.tidb.rename_table("app", "u", "app", "u2").unwrap();
        for i in 0..3 {
            upsert(&e.tidb, "app", "u2", vec![row(i, "after-rename")]);
        }
        for i in 0..3 {
            upsert(&e.tidb, "app", "t", vec![row(10 + i, "before-drop")]);
        }
        let drop = e.tidb.drop_table("app", "t").unwrap();
        let last = upsert(&e.tidb, "app", "u2", vec![row(99, "last")]);
        wait_checkpoint(&h, last, 30).await;

        let records = sink.records();
        check_order(&records);
        assert_barrier(&records, Ts(trunc.commit_ts), &[tid, new_tid]);
        assert_barrier(&records, Ts(ren.commit_ts), &[uid]);
        assert_barrier(&records, Ts(drop.commit_ts), &[new_tid]);
        let actions: Vec<ActionType> = sink.ddls().iter().map(|d| d.action).collect();
        assert_eq!(
            actions,
            vec![
                ActionType::TRUNCATE_TABLE,
                ActionType::RENAME_TABLE,
                ActionType::DROP_TABLE
            ]
        );
        assert_eq!(h.stats().ddl_executed, 3);
        // Rows after the rename carry the new name, and the span was kept (same table id).
        for t in sink.txns() {
            if t.table.info.id == uid {
                let expect = if t.commit_ts > Ts(ren.commit_ts) {
                    "u2"
                } else {
                    "u"
                };
                assert_eq!(t.table.table_name, expect);
            }
        }
        let after_truncate = sink
            .txns()
            .iter()
            .filter(|t| t.table.info.id == new_tid)
            .count();
        assert_eq!(after_truncate, 6);
        // Downstream u2 equals upstream.
        let state = apply_txns(&records);
        let snap = snapshot_tables(e.cluster.store(), last.0, &[("app", "u2")]).unwrap();
        let mut expect_u = snap[0].rows.clone();
        // apply_txns keys by name at write time: merge "u" and "u2".
        let mut got = state.get("app.u").cloned().unwrap_or_default();
        got.extend(state.get("app.u2").cloned().unwrap_or_default());
        expect_u.retain(|_, _| true);
        assert_eq!(got, expect_u);
        // The dropped table's span is gone.
        assert!(h.spans().iter().all(|s| s.span.table_id != new_tid));
        h.stop();
        e.cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_created_while_running_lose_no_rows() {
    for workers in [1usize, 2, 4] {
        let e = env().await;
        e.tidb.create_database("app").unwrap();
        let start_ts = e.now();
        let sink = RecordingSink::new();
        let h = start(&e, sink.clone(), start_ts, workers, |_| {}).await;
        let mut last = Ts::ZERO;
        let mut creates = Vec::new();
        for n in 0..6 {
            let name = format!("n{n}");
            let c = e.tidb.create_table("app", &table_spec(&name)).unwrap();
            creates.push((Ts(c.commit_ts), c.table_ids[0]));
            // Insert immediately: these rows commit just above the CREATE.
            for i in 0..4 {
                last = upsert(&e.tidb, "app", &name, vec![row(i, &name)]);
            }
        }
        let samples = wait_checkpoint(&h, last, 30).await;
        assert!(samples.last().unwrap().checkpoint_ts >= last);
        let records = sink.records();
        for (ts, id) in &creates {
            assert_barrier(&records, *ts, &[*id]);
        }
        let state = apply_txns(&records);
        let snap = snapshot_tables(e.cluster.store(), last.0, &[]).unwrap();
        assert_eq!(snap.len(), 6);
        for t in &snap {
            let name = format!("{}.{}", t.db, t.table);
            assert_eq!(
                state.get(&name),
                Some(&t.rows),
                "{name} with {workers} workers"
            );
        }
        assert_eq!(h.stats().ddl_executed, 6);
        assert!(h.checkpoint_persistable(), "{:?}", h.checksum_states());
        h.stop();
        e.cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_ddl_wait_costs_a_constant_number_of_messages() {
    let workers = 4usize;
    let e = env().await;
    e.tidb.create_database("app").unwrap();
    for t in ["a", "b", "c"] {
        e.tidb.create_table("app", &table_spec(t)).unwrap();
    }
    let start_ts = e.now();
    // A slow sink: every batch takes 40 ms, one row per batch, so the DDL waits a long time.
    let sink = RecordingSink::with_delay(Duration::from_millis(40));
    let h = start(&e, sink.clone(), start_ts, workers, |s| {
        s.max_batch_rows = 1;
        s.max_inflight_batches = 1;
    })
    .await;
    for i in 0..8 {
        for t in ["a", "b", "c"] {
            upsert(&e.tidb, "app", t, vec![row(i, "x")]);
        }
    }
    let ddl = e
        .tidb
        .add_column("app", "a", &ColumnSpec::new("z", types::bigint()))
        .unwrap();
    let mut last = Ts::ZERO;
    for i in 0..4 {
        let mut r = row(i, "y");
        r.push(Datum::Null);
        last = upsert(&e.tidb, "app", "a", vec![r]);
    }
    // The checkpoint never reaches the DDL's ts before the DDL ran in the sink.
    let ddl_ts = Ts(ddl.commit_ts);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut samples = Vec::new();
    loop {
        let w = h.watermarks();
        if w.checkpoint_ts >= ddl_ts {
            assert!(
                sink.ddls().iter().any(|d| d.commit_ts == ddl_ts),
                "checkpoint {w:?} passed the DDL at {} before it ran",
                ddl_ts.0
            );
        }
        samples.push(w);
        if w.checkpoint_ts >= last {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "stuck at {w:?}");
        assert!(h.error().is_none());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let records = sink.records();
    let a_id = e.tidb.table("app", "a").unwrap().id();
    assert_barrier(&records, Ts(ddl.commit_ts), &[a_id]);
    assert!(samples.iter().any(|w| w.checkpoint_ts < Ts(ddl.commit_ts)));
    let stats = h.stats();
    assert_eq!(stats.ddl_executed, 1);
    // One DDL record and one "done" record per worker: 2 × workers, however long it waited.
    assert_eq!(stats.barrier_messages, 2 * workers as u64, "{stats:?}");
    h.stop();
    e.cluster.shutdown().await;
}
