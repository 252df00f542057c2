//! Faults: a stalled region delays only its own span, and a worker that silently loses a span
//! freezes the checkpoint through the span-set checksum until the span is back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tidal_dataflow::ChecksumState;
use tidal_model::{TableSpan, Ts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_span_delays_only_itself() {
    let e = env().await;
    e.tidb.create_database("app").unwrap();
    let a = e
        .tidb
        .create_table("app", &table_spec("a"))
        .unwrap()
        .table_ids[0];
    e.tidb.create_table("app", &table_spec("b")).unwrap();
    let start_ts = e.now();
    let sink = RecordingSink::new();
    let h = start(&e, sink.clone(), start_ts, 2, |_| {}).await;
    upsert(&e.tidb, "app", "a", vec![row(1, "a1")]);
    let base = upsert(&e.tidb, "app", "b", vec![row(1, "b1")]);
    wait_checkpoint(&h, base, 20).await;

    let region = e.cluster.regions().locate(&TableSpan::for_table(a).start);
    e.cluster.faults().stall_region(region.id, true);
    // Let the stall take hold before writing (resolved ts already in flight may still pass).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ta = upsert(&e.tidb, "app", "a", vec![row(2, "a2")]);
    let sent = Instant::now();
    let tb = upsert(&e.tidb, "app", "b", vec![row(2, "b2")]);
    // The other table's row reaches the sink within a second.
    loop {
        if sink.txns().iter().any(|t| t.commit_ts == tb) {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "b's row was held back by a's stall"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w = h.watermarks();
    assert!(
        w.checkpoint_ts < ta,
        "checkpoint {w:?} passed the stalled row at {}",
        ta.0
    );
    assert!(w.resolved_ts < ta);
    assert!(!sink.txns().iter().any(|t| t.commit_ts == ta));
    // Diagnostics name the stalled span and its region.
    let slow = h.slowest_spans(1);
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0].span.table_id, a);
    let diag = slow[0].diagnostics.as_ref().expect("diagnostics");
    let sr = diag.slowest_region.as_ref().expect("slowest region");
    assert_eq!(sr.region_id, region.id);
    assert!(slow[0].resolved_ts < ta);

    e.cluster.faults().stall_region(region.id, false);
    wait_checkpoint(&h, tb.max(ta), 20).await;
    assert!(sink.txns().iter().any(|t| t.commit_ts == ta));
    check_order(&sink.records());
    h.stop();
    e.cluster.shutdown().await;
}

async fn wait_state(h: &tidal_dataflow::ChangefeedHandle, want: ChecksumState, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let states = h.checksum_states();
        let ok = match want {
            ChecksumState::Match => states.iter().all(|(_, s)| *s == want),
            _ => states.iter().any(|(_, s)| *s == want),
        };
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "checksum states {states:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_span_freezes_the_checkpoint_until_restored() {
    let e = env().await;
    e.tidb.create_database("app").unwrap();
    let a = e
        .tidb
        .create_table("app", &table_spec("a"))
        .unwrap()
        .table_ids[0];
    e.tidb.create_table("app", &table_spec("b")).unwrap();
    let start_ts = e.now();
    let sink = RecordingSink::new();
    let h = start(&e, sink.clone(), start_ts, 2, |_| {}).await;
    let base = upsert(&e.tidb, "app", "b", vec![row(1, "b1")]);
    wait_checkpoint(&h, base, 20).await;
    wait_state(&h, ChecksumState::Match, 5).await;
    assert!(h.checkpoint_persistable());

    h.debug_drop_span(a);
    wait_state(&h, ChecksumState::Mismatch, 5).await;
    assert!(!h.checkpoint_persistable());
    let frozen = h.checkpoint_ts();
    let ta = upsert(&e.tidb, "app", "a", vec![row(7, "written while lost")]);
    let tb = upsert(&e.tidb, "app", "b", vec![row(2, "b2")]);
    // The frontier moves on (b is replicated), but the checkpoint does not.
    let deadline = Instant::now() + Duration::from_millis(800);
    while Instant::now() < deadline {
        assert_eq!(
            h.checkpoint_ts(),
            frozen,
            "checkpoint moved while a span was missing"
        );
        assert!(!h.checkpoint_persistable());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.resolved_ts() >= tb, "resolved {:?}", h.resolved_ts());
    assert!(frozen < ta);

    h.debug_restore_span(a);
    let samples = wait_checkpoint(&h, tb.max(ta), 20).await;
    assert!(samples.iter().all(|w| w.checkpoint_ts >= frozen));
    wait_state(&h, ChecksumState::Match, 5).await;
    assert!(h.checkpoint_persistable());
    // The row written while the span was lost was replayed (in safe mode) before MATCH.
    let replayed: Vec<_> = sink
        .txns()
        .into_iter()
        .filter(|t| t.commit_ts == ta)
        .collect();
    assert_eq!(replayed.len(), 1);
    assert!(replayed[0].safe_mode);
    assert!(h.checkpoint_ts() >= Ts(ta.0));
    h.stop();
    e.cluster.shutdown().await;
}
