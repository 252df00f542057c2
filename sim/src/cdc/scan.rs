//! The initial (incremental) scan of a new subscription.
//!
//! The snapshot is taken at attach time (see the ordering notes in the module above); this file
//! turns it into rows and emits them asynchronously. Row shapes follow TiKV's delta scan over
//! `(checkpoint_ts, ∞)`: a PREWRITE for every Put/Delete lock whatever its start_ts, a COMMITTED
//! (with value and old value) for every Put/Delete write newer than the checkpoint, in key order
//! with a key's lock before its writes and writes newest first (the MVCC key order), then one
//! INITIALIZED row. Rows rejected by the txn_source filters are dropped.
//!
//! Emission is chunked: `Event`s of at most `max_entries_bytes` of rows, pushed
//! `max_events_per_message` at a time, each push waiting for room on the stream and yielding,
//! so live rows of the region interleave with scan rows exactly as they may with TiKV. A chunk is
//! pushed only while the subscription still exists (checked under the hub's state lock), so no
//! scan row follows an error event. Queuing the INITIALIZED row and switching the downstream to
//! *normal* happen in one critical section.

use std::sync::Arc;

use tidal_proto::cdcpb::event::{self, LogType, row::OpType};

use super::delegate::{self, DownstreamState, ObservedRange};
use super::sink::Conn;
use super::wire;
use super::{CdcHub, SCAN_ROOM_BYTES};
use crate::mvcc::{DeltaScan, Op};

/// A scan waiting to be emitted.
#[derive(Debug)]
pub(super) struct ScanTask {
    /// The subscription it belongs to.
    pub downstream_id: u64,
    /// Its region.
    pub region_id: u64,
    /// Its request id.
    pub request_id: u64,
    /// The snapshot's rows, in emission order (without INITIALIZED).
    pub rows: Vec<event::Row>,
}

/// MVCC iteration order: key, then the lock (0) before writes (1), writes newest first.
type SortKey = (Vec<u8>, u8, std::cmp::Reverse<u64>);

fn op_type(op: &Op) -> i32 {
    match op {
        Op::Put => OpType::Put as i32,
        Op::Delete => OpType::Delete as i32,
    }
}

/// Converts a delta-scan snapshot into rows for one downstream, in emission order.
pub(super) fn snapshot_rows(
    scan: DeltaScan,
    range: &ObservedRange,
    filter_loop: bool,
) -> Vec<event::Row> {
    // (key, 0 = lock / 1 = write, reversed commit_ts) gives MVCC iteration order.
    let mut keyed: Vec<(SortKey, event::Row)> =
        Vec::with_capacity(scan.locks.len().saturating_add(scan.commits.len()));
    for l in scan.locks {
        let row = event::Row {
            start_ts: l.start_ts,
            r#type: LogType::Prewrite as i32,
            op_type: op_type(&l.op),
            value: if matches!(l.op, Op::Delete) {
                Vec::new()
            } else {
                l.value
            },
            old_value: l.old_value,
            generation: l.generation,
            txn_source: l.txn_source,
            key: l.key.clone(),
            ..Default::default()
        };
        keyed.push(((l.key, 0, std::cmp::Reverse(0)), row));
    }
    for c in scan.commits {
        let row = event::Row {
            start_ts: c.start_ts,
            commit_ts: c.commit_ts,
            r#type: LogType::Committed as i32,
            op_type: op_type(&c.op),
            value: if matches!(c.op, Op::Delete) {
                Vec::new()
            } else {
                c.value
            },
            old_value: c.old_value,
            txn_source: c.txn_source,
            key: c.key.clone(),
            ..Default::default()
        };
        keyed.push(((c.key, 1, std::cmp::Reverse(c.commit_ts)), row));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed
        .into_iter()
        .map(|(_, row)| row)
        .filter(|row| delegate::txn_source_passes(row.txn_source, filter_loop))
        .filter(|row| range.contains_encoded(&delegate::enc(&row.key)))
        .collect()
}

/// Emits a scan, then INITIALIZED, unless the subscription ends first.
pub(super) async fn run_scan(hub: Arc<CdcHub>, conn: Arc<Conn>, task: ScanTask) {
    let ScanTask {
        downstream_id,
        region_id,
        request_id,
        mut rows,
    } = task;
    rows.push(delegate::initialized_row());
    let events = delegate::pack_rows(region_id, request_id, rows, hub.cfg.max_entries_bytes);
    let per_push = hub.cfg.max_events_per_message.max(1);
    let total = events.len();
    let mut events = events.into_iter();
    let mut sent = 0usize;
    while sent < total {
        let chunk: Vec<_> = events
            .by_ref()
            .take(per_push)
            .map(|ev| wire::event_piece(&ev))
            .collect();
        sent = sent.saturating_add(chunk.len());
        let last = sent >= total;
        conn.wait_for_room(SCAN_ROOM_BYTES).await;
        let delay = hub.delay();
        {
            let mut st = hub.state.lock();
            let alive = st
                .delegates
                .get(&region_id)
                .is_some_and(|d| d.downstreams.iter().any(|x| x.id == downstream_id));
            if !alive || !conn.push_forced(chunk, delay) {
                return;
            }
            if last {
                let store_id = conn.store_id;
                let mut finished = false;
                if let Some(ds) = st
                    .delegates
                    .get_mut(&region_id)
                    .and_then(|d| d.downstreams.iter_mut().find(|x| x.id == downstream_id))
                {
                    ds.state = DownstreamState::Normal;
                    finished = std::mem::take(&mut ds.scan_pending);
                }
                if finished {
                    st.finish_scan(store_id);
                }
            }
        }
        tokio::task::yield_now().await;
    }
}
