//! Multi-process runs (two timely processes in one test binary, talking TCP) and flow control.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tidal_dataflow::{ChangefeedSpec, ChecksumState, ClusterPeers, RunConfig, start_changefeed};
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

fn cluster_run(process: usize, addresses: &[String], token: u64) -> RunConfig {
    let mut peers = ClusterPeers::new(process, addresses.to_vec());
    peers.token = token;
    peers.connect_timeout = Duration::from_secs(30);
    peers.teardown_timeout = Duration::from_secs(5);
    RunConfig {
        workers: 2,
        cluster: Some(peers),
        idle_park: Duration::from_millis(20),
    }
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
        let run = cluster_run(p, &addresses, 7);
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
    }
    // Worker 0's process hears every worker's span-set checksum (the side stream); the other
    // process knows only its own workers, so only process 0 may persist a checkpoint.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while handles.0[0]
        .persistable_checkpoint()
        .is_none_or(|c| c < last)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            handles.0[0].checksum_states()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        handles.0[0].checksum_states(),
        (0..4)
            .map(|w| (w, ChecksumState::Match))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        handles.0[1].checksum_states(),
        vec![(2, ChecksumState::Match), (3, ChecksumState::Match)]
    );
    assert!(handles.0[0].checkpoint_persistable());
    assert!(!handles.0[1].checkpoint_persistable());
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

/// Processes of different runs (different tokens) never form a cluster: the start fails once
/// the connect timeout passes, and a stray connection does not crash the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_of_different_runs_do_not_connect() {
    let e = env().await;
    let start_ts = e.now();
    let addresses = vec![
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let mut starts = Vec::new();
    for (p, token) in [(0usize, 1u64), (1, 2)] {
        let spec = ChangefeedSpec::new("cf", Arc::clone(&e.pd), start_ts, RecordingSink::new());
        let mut run = cluster_run(p, &addresses, token);
        if let Some(c) = run.cluster.as_mut() {
            c.connect_timeout = Duration::from_secs(3);
        }
        starts.push(tokio::spawn(start_changefeed(spec, run)));
    }
    // A stranger connects to process 0 and sends garbage.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Ok(mut s) = std::net::TcpStream::connect(&addresses[0]) {
        use std::io::Write;
        let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxx");
    }
    for s in starts {
        match within(30, s).await.unwrap() {
            Ok(h) => {
                h.request_stop();
                panic!("a process of another run was accepted");
            }
            Err(err) => {
                let msg = err.to_string();
                assert!(msg.starts_with("starting the workers: "), "{msg}");
                assert!(msg.contains("in time"), "{msg}");
            }
        }
    }
    e.cluster.shutdown().await;
}

/// When one process of a running cluster goes away, the survivor reports an error (timely
/// panics on the broken connection) or stalls, and stopping it returns within its teardown
/// timeout instead of hanging or crashing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vanished_peer_never_hangs_the_survivor() {
    let e = env().await;
    e.tidb.create_database("app").unwrap();
    e.tidb.create_table("app", &table_spec("t")).unwrap();
    let start_ts = e.now();
    let addresses = vec![
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let mut starts = Vec::new();
    for p in 0..2 {
        let spec = ChangefeedSpec::new("cf", Arc::clone(&e.pd), start_ts, RecordingSink::new());
        starts.push(tokio::spawn(start_changefeed(
            spec,
            cluster_run(p, &addresses, 9),
        )));
    }
    let mut handles = Vec::new();
    for s in starts {
        handles.push(within(60, s).await.unwrap().expect("process starts"));
    }
    let last = upsert(&e.tidb, "app", "t", vec![row(1, "x")]);
    wait_checkpoint(&handles[0], last, 60).await;
    let survivor = handles.remove(0);
    let gone = handles.remove(0);
    // Process 1 goes away on its own (its threads end; its sockets close).
    tokio::task::spawn_blocking(move || gone.stop())
        .await
        .unwrap();
    let mut error = None;
    for i in 0..50 {
        upsert(&e.tidb, "app", "t", vec![row(10 + i, "y")]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        error = survivor.error();
        if error.is_some() {
            break;
        }
    }
    // Timely panics the survivor's workers once the connection breaks; the panic is recorded
    // as the changefeed's error instead of going unnoticed.
    let error = error
        .expect("the survivor noticed the vanished peer")
        .to_string();
    assert!(
        error.starts_with("starting the workers: worker "),
        "{error}"
    );
    assert!(
        error.contains("timely communication error") || error.contains("poisoned"),
        "{error}"
    );
    let started = std::time::Instant::now();
    tokio::task::spawn_blocking(move || survivor.stop())
        .await
        .unwrap();
    // The teardown timeout is 5 s; leave room for a busy machine.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    e.cluster.shutdown().await;
}
