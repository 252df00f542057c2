//! Resolved timestamps: the per-downstream computation and how they are grouped on the wire.
//!
//! Every `min_ts_interval` the hub takes `min_ts = tso.next()` and, for every *normal*
//! downstream of a region that is led by the downstream's store and not stalled, computes
//! `min(min_ts, oldest Put/Delete lock start_ts in its observed range)`; the value only moves
//! forward. The whole computation and the queuing happen while no write can apply
//! (`MvccStore::atomically`), so every commit applied before it is already queued ahead of it.
//!
//! Grouping follows TiKV's `Advance::emit_resolved_ts`:
//! - clients with batch resolved ts (ticdc_version ≥ 4.0.8) get `ChangeDataEvent.resolved_ts`
//!   messages; with stream multiplexing one group per `request_id`, otherwise one group per
//!   stream with `request_id = 0` mixing all requests' regions;
//! - in a group, regions are ordered by ts and popped in chunks of 8, then 32, 128, … (×4);
//!   each chunk is one `ResolvedTs` carrying the chunk's minimum ts, so regions sharing a ts
//!   travel together and no region is ever reported above its own resolved ts;
//! - older clients get one legacy `Event{region_id, request_id, resolved_ts}` per downstream.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Weak};

use tidal_proto::cdcpb::ResolvedTs;
use tokio::sync::watch;

use super::CdcHub;
use super::delegate::{self, DownstreamState};
use super::sink::Conn;
use super::wire;

/// First chunk size of a resolved-ts group; each next chunk is 4 times larger.
const FIRST_CHUNK: usize = 8;

/// One downstream's resolved ts, ready to be grouped.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub conn: Arc<Conn>,
    pub request_id: u64,
    pub region_id: u64,
    pub ts: u64,
}

/// Splits one group (sorted by ts) into TiKV's chunks: `(chunk min ts, regions)`.
pub(super) fn chunk_group(mut items: Vec<(u64, u64)>) -> Vec<(u64, Vec<u64>)> {
    items.sort_unstable();
    let mut out = Vec::new();
    let mut size = FIRST_CHUNK;
    let mut rest = items.as_slice();
    while !rest.is_empty() {
        let take = size.min(rest.len());
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        let ts = chunk.first().map_or(0, |(ts, _)| *ts);
        let mut seen = HashSet::new();
        let regions = chunk
            .iter()
            .map(|(_, r)| *r)
            .filter(|r| seen.insert(*r))
            .collect();
        out.push((ts, regions));
        size = size.saturating_mul(4);
    }
    out
}

impl CdcHub {
    /// One resolved-ts round.
    pub(super) fn tick(&self) {
        let delay = self.delay();
        let quota = self.sink_quota.load(std::sync::atomic::Ordering::Relaxed);
        self.store.atomically(|view| {
            let min_ts = self.tso.next();
            let mut st = self.state.lock();
            let stalled = st.stalled.clone();
            let mut resolved = Vec::new();
            for (rid, d) in st.delegates.iter_mut() {
                if stalled.contains(rid) {
                    continue;
                }
                let leader = d.region.leader_store;
                for ds in d.downstreams.iter_mut() {
                    if ds.state != DownstreamState::Normal || ds.conn.store_id != leader {
                        continue;
                    }
                    let lock = view.min_lock_start_ts(&ds.range.raw_start, &ds.range.raw_end);
                    let advanced = lock.map_or(min_ts, |l| l.min(min_ts));
                    if advanced > ds.advanced_to {
                        ds.advanced_to = advanced;
                    }
                    if ds.advanced_to == 0 {
                        continue;
                    }
                    resolved.push(Resolved {
                        conn: Arc::clone(&ds.conn),
                        request_id: ds.request_id,
                        region_id: *rid,
                        ts: ds.advanced_to,
                    });
                }
            }
            drop(st);
            emit(resolved, delay, quota);
        });
    }
}

/// A stream and its `(ts, region)` pairs for one resolved-ts group.
type Group = (Arc<Conn>, Vec<(u64, u64)>);

/// Queues resolved timestamps on their streams, grouped as TiKV does.
fn emit(resolved: Vec<Resolved>, delay: std::time::Duration, quota: usize) {
    // (conn id, request id or 0) → (conn, [(ts, region)]); BTreeMap for a stable order.
    let mut groups: BTreeMap<(u64, u64), Group> = BTreeMap::new();
    for r in resolved {
        let gates = r.conn.gates();
        if !gates.batch_resolved_ts {
            let ev = delegate::legacy_resolved_event(r.region_id, r.request_id, r.ts);
            // Over quota the legacy event is skipped like a batched one; never ends a subscription.
            let _ = r
                .conn
                .offer_live(vec![wire::event_piece(&ev)], delay, quota);
            continue;
        }
        let request_id = if r.conn.multiplexing { r.request_id } else { 0 };
        groups
            .entry((r.conn.id, request_id))
            .or_insert_with(|| (Arc::clone(&r.conn), Vec::new()))
            .1
            .push((r.ts, r.region_id));
    }
    for ((_, request_id), (conn, items)) in groups {
        for (ts, regions) in chunk_group(items) {
            conn.offer_resolved(
                ResolvedTs {
                    regions,
                    ts,
                    request_id,
                },
                delay,
                quota,
            );
        }
    }
}

/// The ticker task: one round per `min_ts_interval` until shutdown or the hub is dropped.
pub(super) async fn run_ticker(hub: Weak<CdcHub>, mut shutdown: watch::Receiver<bool>) {
    let period = match hub.upgrade() {
        Some(h) => h
            .cfg
            .min_ts_interval
            .max(std::time::Duration::from_millis(1)),
        None => return,
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
        let Some(hub) = hub.upgrade() else {
            return;
        };
        if hub.is_shut() {
            return;
        }
        hub.tick();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_grow_by_four_and_carry_the_minimum() {
        // 50 regions, region i resolved at ts 1000 + i, given in reverse order.
        let items: Vec<(u64, u64)> = (0..50u64).rev().map(|i| (1000 + i, i)).collect();
        let chunks = chunk_group(items);
        let shape: Vec<(u64, usize)> = chunks.iter().map(|(ts, r)| (*ts, r.len())).collect();
        assert_eq!(shape, vec![(1000, 8), (1008, 32), (1040, 10)]);
        assert_eq!(chunks[0].1, (0..8).collect::<Vec<u64>>());
    }

    #[test]
    fn equal_ts_regions_share_one_message() {
        let chunks = chunk_group(vec![(7, 3), (7, 1), (7, 2)]);
        assert_eq!(chunks, vec![(7, vec![1, 2, 3])]);
        assert!(chunk_group(Vec::new()).is_empty());
    }
}
