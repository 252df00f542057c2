//! Multi-process runs (two timely processes in one test binary, talking TCP) and flow control.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tidal_dataflow::{ChangefeedSpec, ClusterPeers, RunConfig, start_changefeed};
use tidal_model::Ts;
use tidal_sim::export::snapshot_tables;
use tidal_sim::tidb::{ColumnSpec, types};

/// Asks every process to stop before any of them waits (also when a test assertion fails).
struct StopAll(Vec<tidal_dataflow::ChangefeedHandle>);

impl Drop for StopAll {
    fn drop(&mut self) {
        for h in &self.0 {
            h.request_stop();
        }
        self.0.clear();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_replicate_like_one() {
    let e = env().await;
    e.tidb.create_database("app").unwrap();
    let tables = ["a", "b", "c", "d"];
    for t in tables {
        e.tidb.create_table("app", &table_spec(t)).unwrap();
    }
    let start_ts = e.now();
    let addresses = vec![
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let sinks = [RecordingSink::new(), RecordingSink::new()];
    let mut starts = Vec::new();
    for (p, sink) in sinks.iter().enumerate() {
        let spec = ChangefeedSpec::new("cluster-cf", Arc::clone(&e.pd), start_ts, sink.clone());
        let run = RunConfig {
            workers: 2,
            cluster: Some(ClusterPeers {
                process: p,
                addresses: addresses.clone(),
            }),
            idle_park: Duration::from_millis(20),
        };
        starts.push(tokio::spawn(start_changefeed(spec, run)));
    }
    let mut handles = StopAll(Vec::new());
    for s in starts {
        handles
            .0
            .push(within(60, s).await.unwrap().expect("process starts"));
    }
    // DML, then a DDL that must cross processes (bincode) and run once, then more DML.
    let mut last = Ts::ZERO;
    for i in 0..6 {
        for t in tables {
            last = upsert(&e.tidb, "app", t, vec![row(i, t)]);
        }
    }
    let ddl = e
        .tidb
        .add_column("app", "a", &ColumnSpec::new("z", types::bigint()))
        .unwrap();
    let created = e.tidb.create_table("app", &table_spec("late")).unwrap();
    for i in 0..4 {
        upsert(&e.tidb, "app", "late", vec![row(i, "late")]);
        last = upsert(&e.tidb, "app", "b", vec![row(50 + i, "b")]);
    }
    for h in &handles.0 {
        wait_checkpoint(h, last, 60).await;
        assert_eq!(h.checksum_states().len(), 2);
        assert!(h.checkpoint_persistable());
    }
    // The DDL ran once, on the process hosting worker 0.
    let ddl_runs: usize = sinks
        .iter()
        .map(|s| {
            s.ddls()
                .iter()
                .filter(|d| d.commit_ts.0 == ddl.commit_ts || d.commit_ts.0 == created.commit_ts)
                .count()
        })
        .sum();
    assert_eq!(ddl_runs, 2);
    assert_eq!(handles.0[0].stats().ddl_executed, 2);
    assert_eq!(handles.0[1].stats().ddl_executed, 0);
    // Together the two sinks hold exactly the upstream.
    let mut all = sinks[0].records();
    all.extend(sinks[1].records());
    let state = apply_txns(&all);
    let snap = snapshot_tables(e.cluster.store(), last.0, &[]).unwrap();
    assert_eq!(snap.len(), 5);
    for t in &snap {
        let name = format!("{}.{}", t.db, t.table);
        let mut rows = t.rows.clone();
        if t.table == "a" {
            // The rows predate ADD COLUMN: the export fills the new column, the sink has the
            // rows as written.
            for r in rows.values_mut() {
                r.truncate(2);
            }
        }
        assert_eq!(state.get(&name), Some(&rows), "{name}");
    }
    for s in &sinks {
        check_order(&s.records());
    }
    // Both processes did some of the work.
    assert!(sinks.iter().all(|s| !s.txns().is_empty()));
    drop(handles);
    e.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_throttles_the_sources() {
    let e = env().await;
    e.tidb.create_database("app").unwrap();
    e.tidb.create_table("app", &table_spec("t")).unwrap();
    let start_ts = e.now();
    let sink = RecordingSink::with_delay(Duration::from_millis(30));
    let max_inflight = 2_000usize;
    let h = start(&e, sink.clone(), start_ts, 2, |s| {
        s.max_inflight_bytes = max_inflight;
        s.max_batch_rows = 10;
        s.max_inflight_batches = 2;
    })
    .await;
    let mut last = Ts::ZERO;
    for i in 0..30 {
        let rows = (0..10).map(|j| row(i * 10 + j, "payload")).collect();
        last = upsert(&e.tidb, "app", "t", rows);
    }
    let mut peak = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while h.checkpoint_ts() < last {
        peak = peak.max(h.stats().inflight_bytes);
        assert!(std::time::Instant::now() < deadline, "{:?}", h.stats());
        assert!(h.error().is_none());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stats = h.stats();
    assert!(
        stats.throttled > 0,
        "the sources never waited for the sink: {stats:?}"
    );
    // In flight: at most the bound plus what one worker had already released (2 batches of
    // 10 rows of ~100 bytes, per worker).
    assert!(
        peak <= (max_inflight + 2 * 2 * 10 * 200) as u64,
        "peak {peak}"
    );
    assert_eq!(stats.rows_flushed, 300);
    assert_eq!(sink.txns().len(), 30);
    h.stop();
    e.cluster.shutdown().await;
}
