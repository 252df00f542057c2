//! One subscribed span: its pieces and their registrations, the per-region matchers, the span's
//! resolved ts, and the ordered output queue the consumer reads.
//!
//! All state of a subscription sits behind one lock, and every event for it (from any store
//! stream) is processed under that lock and appended to the output queue before the lock is
//! released. A region's rows therefore always enter the queue before the resolved ts that covers
//! them, whatever the interleaving of stores, which is the whole output contract.
//!
//! The output queue is not a channel: its bound is the feed's memory quota (in bytes, shared by
//! all spans), consecutive row batches are merged and consecutive resolved ts collapse into the
//! latest, so a consumer that polls rarely costs one batch per poll, not one item per message.
//! The consumer polls with [`Subscription::try_recv`] and is told about new items through a
//! callback ([`Subscription::set_notify`]), which the dataflow wires to its activator; async
//! code can use [`Subscription::recv`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tidal_model::{RawKvChange, TableSpan, Ts};
use tidal_proto::cdcpb::change_data_request::{Deregister, KvApi, Register, Request};
use tidal_proto::cdcpb::{self, ChangeDataRequest, Header, ResolvedTs, event};
use tidal_proto::kvrpcpb::ExtraOp;
use tidal_proto::metapb;
use tokio::sync::Notify;

use super::matcher::{FastBuildHasher, Matcher, row_fingerprint};
use super::range_ts::{RangeId, RangeTs};
use super::stream::StoreConn;
use super::{FeedError, FeedEvent, Retry, Shared, SlowRegion, SpanDiagnostics, StuckReason};
use crate::pd::RegionInfo;

/// A registration: `(request_id, region_id)`.
pub(crate) type SlotKey = (u64, u64);

/// A consumer's wake-up hook.
type NotifyFn = Arc<dyn Fn() + Send + Sync>;

/// A live registration of one region for one piece.
#[derive(Debug)]
struct Slot {
    range: RangeId,
    region: metapb::Region,
    conn: Arc<StoreConn>,
    matcher: Matcher,
    /// Consecutive failures of this piece without reaching INITIALIZED.
    attempts: u32,
}

#[derive(Debug)]
struct Inner {
    ranges: RangeTs,
    slots: HashMap<SlotKey, Slot, FastBuildHasher>,
    /// The subscription's request ids; the first is its own, the rest extra ids for regions
    /// serving two pieces at once.
    request_ids: Vec<u64>,
    /// Last resolved ts pushed to the queue (the start ts before that).
    emitted: Ts,
    /// `(commit_ts, fingerprint)` of rows delivered above `emitted`, to drop re-deliveries.
    delivered: BTreeSet<(u64, u64)>,
    /// Closed or failed: events are ignored.
    finished: bool,
    /// Registrations ended by an error or a broken stream.
    retries: u64,
    /// Re-delivered rows dropped.
    duplicates: u64,
}

#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<FeedEvent>,
    /// Output bytes held (counted in the quota).
    bytes: usize,
    /// No more events will be pushed.
    ended: bool,
}

/// The shared state of one subscription.
pub(crate) struct SubState {
    id: u64,
    span: TableSpan,
    start_ts: Ts,
    inner: Mutex<Inner>,
    queue: Mutex<Queue>,
    ready: Notify,
    notify: RwLock<Option<NotifyFn>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for SubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubState")
            .field("id", &self.id)
            .field("span", &self.span)
            .field("start_ts", &self.start_ts)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

fn rows_bytes(rows: &[RawKvChange]) -> usize {
    rows.iter()
        .fold(0usize, |acc, r| acc.saturating_add(r.approximate_size()))
}

impl SubState {
    pub(crate) fn new(id: u64, span: TableSpan, start_ts: Ts) -> (Arc<SubState>, RangeId) {
        let ranges = RangeTs::new(span.start.clone(), span.end.clone(), start_ts);
        let root = ranges.iter().next().map(|(id, _)| id).unwrap_or_default();
        let state = Arc::new(SubState {
            id,
            span,
            start_ts,
            inner: Mutex::new(Inner {
                ranges,
                slots: HashMap::default(),
                request_ids: vec![id],
                emitted: start_ts,
                delivered: BTreeSet::new(),
                finished: false,
                retries: 0,
                duplicates: 0,
            }),
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            notify: RwLock::new(None),
            closed: AtomicBool::new(false),
        });
        (state, root)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    // ------------------------------------------------------------------------------------
    // Registration (called by retry tasks)

    /// Bounds of piece `range` if it exists and has no owner.
    pub(crate) fn unowned_bounds(&self, range: RangeId) -> Option<(Vec<u8>, Vec<u8>)> {
        let g = self.inner.lock();
        if g.finished {
            return None;
        }
        let e = g.ranges.get(range)?;
        e.owner.is_none().then(|| (e.start.clone(), e.end.clone()))
    }

    pub(crate) fn note_failure(&self, range: RangeId, why: String) {
        self.inner.lock().ranges.set_failure(range, why);
    }

    /// Cuts unowned piece `range` along the regions (sorted by start key, as PD returns them).
    /// Returns the parts to register with their region, and the parts no region covered.
    pub(crate) fn carve(
        &self,
        range: RangeId,
        regions: &[RegionInfo],
    ) -> (Vec<(RangeId, RegionInfo)>, Vec<RangeId>) {
        let mut g = self.inner.lock();
        let Some(e) = g.ranges.get(range) else {
            return (Vec::new(), Vec::new());
        };
        if g.finished || e.owner.is_some() {
            return (Vec::new(), Vec::new());
        }
        let (start, end) = (e.start.clone(), e.end.clone());
        let mut pieces = Vec::new();
        for info in regions {
            let rs = info.region.start_key.as_slice();
            let re = info.region.end_key.as_slice();
            let lo = rs.max(start.as_slice());
            if !end.is_empty() && lo >= end.as_slice() {
                continue;
            }
            let Some(id) = g.ranges.find(lo) else {
                continue;
            };
            if g.ranges.get(id).is_none_or(|e| e.owner.is_some()) {
                continue;
            }
            if pieces.iter().any(|(p, _)| *p == id) {
                // Overlapping regions in one answer: never register two regions for a piece.
                continue;
            }
            if let Some(piece) = g.ranges.carve(id, rs, re) {
                pieces.push((piece, info.clone()));
            }
        }
        let holes = g
            .ranges
            .ids_within(&start, &end)
            .into_iter()
            .filter(|id| {
                g.ranges.get(*id).is_some_and(|e| e.owner.is_none())
                    && !pieces.iter().any(|(p, _)| p == id)
            })
            .collect();
        (pieces, holes)
    }

    /// Registers `region` for unowned piece `range` on `conn`. `Err` means the stream is gone
    /// and the caller should retry.
    pub(crate) fn register(
        self: &Arc<Self>,
        shared: &Shared,
        range: RangeId,
        region: metapb::Region,
        conn: &Arc<StoreConn>,
        attempts: u32,
    ) -> Result<(), String> {
        let mut guard = self.inner.lock();
        let g = &mut *guard;
        if g.finished {
            return Ok(());
        }
        let Some(e) = g.ranges.get(range) else {
            return Ok(());
        };
        if e.owner.is_some() {
            return Ok(());
        }
        let (start, end, ts) = (e.start.clone(), e.end.clone(), e.ts);
        let region_id = region.id;
        let free = g
            .request_ids
            .iter()
            .copied()
            .find(|id| !g.slots.contains_key(&(*id, region_id)));
        let request_id = match free {
            Some(id) => id,
            None => {
                let id = shared.alloc_id();
                shared.add_alias(id, Arc::clone(self));
                g.request_ids.push(id);
                id
            }
        };
        let key = (request_id, region_id);
        if !conn.track(key) {
            return Err(format!("stream to store {} closed", conn.store_id()));
        }
        let cfg = shared.cfg();
        let req = ChangeDataRequest {
            header: Some(Header {
                cluster_id: shared.cluster_id(),
                ticdc_version: cfg.ticdc_version.clone(),
            }),
            region_id,
            region_epoch: region.region_epoch,
            checkpoint_ts: ts.0,
            start_key: start,
            end_key: end,
            request_id,
            extra_op: ExtraOp::ReadOldValue as i32,
            request: Some(Request::Register(Register {})),
            kv_api: KvApi::TiDb as i32,
            filter_loop: cfg.filter_loop,
            scan_priority: 0,
        };
        if !conn.send(req) {
            conn.untrack(key);
            return Err(format!("stream to store {} closed", conn.store_id()));
        }
        g.ranges.assign(range, key);
        g.slots.insert(
            key,
            Slot {
                range,
                region,
                conn: Arc::clone(conn),
                matcher: Matcher::new(region_id, ts),
                attempts,
            },
        );
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // Events (called by store stream tasks)

    /// Processes one event; true if something was queued for the consumer.
    pub(crate) fn on_event(
        self: &Arc<Self>,
        shared: &Shared,
        conn_id: u64,
        store_id: u64,
        ev: cdcpb::Event,
    ) -> bool {
        let key = (ev.request_id, ev.region_id);
        let mut guard = self.inner.lock();
        let g = &mut *guard;
        if g.finished {
            return false;
        }
        match ev.event {
            Some(event::Event::Entries(entries)) => {
                let Some(slot) = g.slots.get_mut(&key).filter(|s| s.conn.id() == conn_id) else {
                    return false;
                };
                let before = slot.matcher.cached_bytes();
                let was_initialized = slot.matcher.is_initialized();
                let mut rows = Vec::with_capacity(entries.entries.len());
                let result = slot.matcher.process_all(entries.entries, &mut rows);
                shared.quota().adjust(before, slot.matcher.cached_bytes());
                if !was_initialized && slot.matcher.is_initialized() {
                    slot.attempts = 0;
                    g.ranges.set_initialized(slot.range);
                }
                let pushed = self.deliver(g, shared, rows);
                if let Err(e) = result {
                    tracing::warn!(subscription = self.id, error = %e, "cdc protocol violation; re-subscribing the region");
                    let delay = shared.cfg().backoff.delay(0, Duration::ZERO);
                    self.end_slot(g, shared, key, e.to_string(), Retry::Resplit, delay);
                }
                pushed
            }
            Some(event::Event::Error(err)) => {
                self.on_region_error(g, shared, key, conn_id, store_id, err)
            }
            Some(event::Event::ResolvedTs(ts)) => {
                Self::apply_resolved(g, key, conn_id, Ts(ts));
                self.emit_resolved(g)
            }
            Some(event::Event::Admin(_)) | Some(event::Event::LongTxn(_)) | None => false,
        }
    }

    /// Applies a resolved-ts batch; true if a resolved ts was queued.
    pub(crate) fn on_resolved_batch(
        &self,
        _shared: &Shared,
        conn_id: u64,
        rts: &ResolvedTs,
    ) -> bool {
        let mut guard = self.inner.lock();
        let g = &mut *guard;
        if g.finished {
            return false;
        }
        for region_id in &rts.regions {
            Self::apply_resolved(g, (rts.request_id, *region_id), conn_id, Ts(rts.ts));
        }
        self.emit_resolved(g)
    }

    fn apply_resolved(g: &mut Inner, key: SlotKey, conn_id: u64, ts: Ts) {
        if let Some(slot) = g.slots.get_mut(&key).filter(|s| s.conn.id() == conn_id)
            && slot.matcher.on_resolved(ts)
        {
            g.ranges.update(slot.range, ts);
        }
    }

    /// Queues the span's resolved ts if it advanced.
    fn emit_resolved(&self, g: &mut Inner) -> bool {
        let r = g.ranges.resolved();
        if r <= g.emitted || r == Ts::MAX {
            return false;
        }
        g.emitted = r;
        g.delivered = g.delivered.split_off(&(r.0.saturating_add(1), 0));
        let mut q = self.queue.lock();
        if q.ended {
            return false;
        }
        match q.events.back_mut() {
            Some(FeedEvent::Resolved(last)) => *last = r,
            _ => q.events.push_back(FeedEvent::Resolved(r)),
        }
        true
    }

    /// Queues committed rows, dropping those already covered by an emitted resolved ts and
    /// those delivered before (re-sent after a re-registration).
    fn deliver(&self, g: &mut Inner, shared: &Shared, mut rows: Vec<RawKvChange>) -> bool {
        let emitted = g.emitted;
        let delivered = &mut g.delivered;
        let before = rows.len();
        rows.retain(|r| {
            r.commit_ts > emitted
                && delivered.insert((
                    r.commit_ts.0,
                    row_fingerprint(&r.key, r.start_ts, r.commit_ts),
                ))
        });
        g.duplicates = g.duplicates.saturating_add((before - rows.len()) as u64);
        if rows.is_empty() {
            return false;
        }
        let bytes = rows_bytes(&rows);
        let max = shared.cfg().max_batch_rows.max(1);
        let mut q = self.queue.lock();
        if q.ended {
            return false;
        }
        shared.quota().acquire_output(bytes);
        q.bytes = q.bytes.saturating_add(bytes);
        match q.events.back_mut() {
            Some(FeedEvent::Rows(tail)) if tail.len().saturating_add(rows.len()) <= max => {
                tail.append(&mut rows);
            }
            _ => q.events.push_back(FeedEvent::Rows(rows)),
        }
        true
    }

    fn on_region_error(
        self: &Arc<Self>,
        g: &mut Inner,
        shared: &Shared,
        key: SlotKey,
        conn_id: u64,
        store_id: u64,
        err: cdcpb::Error,
    ) -> bool {
        let Some(slot) = g.slots.get(&key).filter(|s| s.conn.id() == conn_id) else {
            return false;
        };
        if let Some(d) = &err.duplicate_request {
            return self.fail(
                g,
                shared,
                FeedError::DuplicateRequest {
                    store_id,
                    request_id: key.0,
                    region_id: if d.region_id != 0 { d.region_id } else { key.1 },
                },
            );
        }
        if let Some(c) = &err.compatibility {
            return self.fail(
                g,
                shared,
                FeedError::Compatibility {
                    store_id,
                    required_version: c.required_version.clone(),
                },
            );
        }
        if let Some(m) = &err.cluster_id_mismatch {
            return self.fail(
                g,
                shared,
                FeedError::ClusterIdMismatch {
                    store_id,
                    current: m.current,
                    request: m.request,
                },
            );
        }
        let backoff = shared.cfg().backoff;
        let attempts = slot.attempts;
        let region = slot.region.clone();
        let region_id = key.1;
        let pd = shared.pd();
        let base = backoff.delay(attempts, Duration::ZERO);
        // The first retry after a split or a leader change is immediate: they are routine.
        let quick = if attempts == 0 { Duration::ZERO } else { base };
        let (why, retry, delay) = if let Some(nl) = &err.not_leader {
            match nl.leader.filter(|l| l.id != 0 && l.store_id != 0) {
                Some(leader) => {
                    let to = leader.store_id;
                    pd.update_leader(region_id, leader);
                    (
                        format!("not leader on store {store_id}; leader is on store {to}"),
                        Retry::Region {
                            region,
                            store_id: to,
                        },
                        quick,
                    )
                }
                None => {
                    pd.invalidate_region(region_id);
                    (
                        format!("not leader on store {store_id}; leader unknown"),
                        Retry::Resplit,
                        base,
                    )
                }
            }
        } else if let Some(en) = &err.epoch_not_match {
            pd.on_epoch_not_match(&en.current_regions);
            pd.invalidate_region(region_id);
            ("epoch not match".to_owned(), Retry::Resplit, quick)
        } else if err.region_not_found.is_some() {
            pd.invalidate_region(region_id);
            (
                format!("region not found on store {store_id}"),
                Retry::Resplit,
                base,
            )
        } else if let Some(busy) = &err.server_is_busy {
            (
                format!("store {store_id} is busy: {}", busy.reason),
                Retry::Region { region, store_id },
                backoff.delay(attempts, Duration::from_millis(busy.backoff_ms)),
            )
        } else if err.congested.is_some() {
            (
                format!("store {store_id} is congested"),
                Retry::Region { region, store_id },
                base,
            )
        } else {
            pd.invalidate_region(region_id);
            (
                format!("unknown region error from store {store_id}"),
                Retry::Resplit,
                base,
            )
        };
        tracing::debug!(subscription = self.id, region_id, reason = %why, "region subscription ended");
        self.end_slot(g, shared, key, why, retry, delay);
        false
    }

    /// Ends a registration: frees its matcher, freezes its piece and schedules the retry.
    fn end_slot(
        self: &Arc<Self>,
        g: &mut Inner,
        shared: &Shared,
        key: SlotKey,
        why: String,
        retry: Retry,
        delay: Duration,
    ) {
        let Some(slot) = g.slots.remove(&key) else {
            return;
        };
        shared.quota().release(slot.matcher.cached_bytes());
        slot.conn.untrack(key);
        g.retries = g.retries.saturating_add(1);
        g.ranges.fail(slot.range, why);
        shared.schedule(
            self,
            slot.range,
            retry,
            slot.attempts.saturating_add(1),
            delay,
        );
    }

    /// A stream carrying registration `key` broke.
    pub(crate) fn on_stream_failure(
        self: &Arc<Self>,
        shared: &Shared,
        key: SlotKey,
        conn_id: u64,
        why: &str,
    ) {
        let mut guard = self.inner.lock();
        let g = &mut *guard;
        if g.finished {
            return;
        }
        let Some(slot) = g.slots.get(&key).filter(|s| s.conn.id() == conn_id) else {
            return;
        };
        shared.pd().invalidate_region(key.1);
        let backoff = shared.cfg().backoff;
        let delay = backoff
            .reconnect
            .max(backoff.delay(slot.attempts, Duration::ZERO));
        self.end_slot(g, shared, key, why.to_owned(), Retry::Resplit, delay);
    }

    /// Fails the subscription for good; returns true (an event was queued).
    fn fail(&self, g: &mut Inner, shared: &Shared, err: FeedError) -> bool {
        tracing::error!(subscription = self.id, error = %err, "change feed subscription failed");
        self.closed.store(true, Ordering::Release);
        self.shutdown(g, shared);
        let mut q = self.queue.lock();
        if !q.ended {
            q.events.push_back(FeedEvent::Error(err));
            q.ended = true;
        }
        true
    }

    /// Deregisters every region and forgets the request ids.
    fn shutdown(&self, g: &mut Inner, shared: &Shared) {
        g.finished = true;
        let mut by_conn: BTreeMap<u64, (Arc<StoreConn>, BTreeSet<u64>)> = BTreeMap::new();
        for (key, slot) in g.slots.drain() {
            shared.quota().release(slot.matcher.cached_bytes());
            slot.conn.untrack(key);
            by_conn
                .entry(slot.conn.id())
                .or_insert_with(|| (Arc::clone(&slot.conn), BTreeSet::new()))
                .1
                .insert(key.0);
        }
        for (conn, ids) in by_conn.into_values() {
            for request_id in ids {
                conn.send(ChangeDataRequest {
                    header: Some(Header {
                        cluster_id: shared.cluster_id(),
                        ticdc_version: shared.cfg().ticdc_version.clone(),
                    }),
                    request_id,
                    region_id: 0,
                    request: Some(Request::Deregister(Deregister {})),
                    ..Default::default()
                });
            }
        }
        shared.remove_ids(&g.request_ids);
        g.delivered.clear();
    }

    /// Unsubscribes: deregisters, drops undelivered output, ends the queue.
    pub(crate) fn close(&self, shared: &Shared) {
        self.closed.store(true, Ordering::Release);
        {
            let mut g = self.inner.lock();
            if !g.finished {
                self.shutdown(&mut g, shared);
            }
        }
        let mut q = self.queue.lock();
        shared.quota().release_output(q.bytes);
        q.bytes = 0;
        q.events.clear();
        q.ended = true;
        drop(q);
        self.wake();
    }

    /// Tells the consumer that items are waiting.
    pub(crate) fn wake(&self) {
        self.ready.notify_waiters();
        let cb = self.notify.read().clone();
        if let Some(cb) = cb {
            cb();
        }
    }

    // ------------------------------------------------------------------------------------
    // Consumer side

    fn try_recv(&self, shared: &Shared) -> Option<FeedEvent> {
        let mut q = self.queue.lock();
        let ev = q.events.pop_front()?;
        if let FeedEvent::Rows(rows) = &ev {
            let bytes = rows_bytes(rows);
            q.bytes = q.bytes.saturating_sub(bytes);
            drop(q);
            shared.quota().release_output(bytes);
        }
        Some(ev)
    }

    fn is_drained(&self) -> bool {
        let q = self.queue.lock();
        q.ended && q.events.is_empty()
    }

    fn diagnostics(&self) -> SpanDiagnostics {
        let g = self.inner.lock();
        let slowest_region = g.ranges.slowest().map(|(_, e)| {
            let (region_id, reason) = match e.owner.and_then(|k| g.slots.get(&k).map(|s| (k, s))) {
                None => (
                    e.last_region,
                    StuckReason::ErrorBackoff {
                        error: e
                            .failure
                            .clone()
                            .unwrap_or_else(|| "not subscribed".to_owned()),
                    },
                ),
                Some((k, s)) => {
                    let reason = if !s.matcher.is_initialized() {
                        StuckReason::NotInitialized
                    } else {
                        match s.matcher.oldest_prewrite_start_ts() {
                            Some(start_ts) if e.ts <= start_ts => {
                                StuckReason::LockHeld { start_ts }
                            }
                            _ => StuckReason::Unknown,
                        }
                    };
                    (k.1, reason)
                }
            };
            SlowRegion {
                region_id,
                resolved_ts: e.ts,
                stuck_since: e.since,
                reason,
                range: (e.start.clone(), e.end.clone()),
            }
        });
        SpanDiagnostics {
            span: self.span.clone(),
            resolved_ts: g.emitted,
            slowest_region,
            regions: g.ranges.len(),
            unsubscribed: g.ranges.unowned().len(),
            retries: g.retries,
            duplicates_dropped: g.duplicates,
        }
    }
}

/// A subscribed span: the receiving end of its ordered event stream.
///
/// Dropping it (or [`Subscription::unsubscribe`]) deregisters its regions from TiKV and frees its
/// undelivered rows.
pub struct Subscription {
    state: Arc<SubState>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.state.id)
            .field("span", &self.state.span)
            .field("start_ts", &self.state.start_ts)
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(state: Arc<SubState>, shared: Arc<Shared>) -> Subscription {
        Subscription { state, shared }
    }

    /// The subscription's (primary) request id.
    pub fn id(&self) -> u64 {
        self.state.id
    }

    /// The subscribed span.
    pub fn span(&self) -> &TableSpan {
        &self.state.span
    }

    /// The start ts it was subscribed from.
    pub fn start_ts(&self) -> Ts {
        self.state.start_ts
    }

    /// The next item, if one is waiting; never blocks. `None` also after the stream ended (see
    /// [`Subscription::is_ended`]).
    pub fn try_recv(&self) -> Option<FeedEvent> {
        self.state.try_recv(&self.shared)
    }

    /// The next item, waiting for one; `None` once the stream has ended (after a
    /// [`FeedEvent::Error`], or after unsubscribing).
    pub async fn recv(&self) -> Option<FeedEvent> {
        loop {
            let notified = self.state.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(ev) = self.try_recv() {
                return Some(ev);
            }
            if self.state.is_drained() {
                return None;
            }
            notified.await;
        }
    }

    /// Installs a callback run (on a feed thread, so it must be cheap and must not block)
    /// whenever new items are queued. It runs once right away if items are already waiting.
    pub fn set_notify(&self, notify: Arc<dyn Fn() + Send + Sync>) {
        *self.state.notify.write() = Some(Arc::clone(&notify));
        if !self.state.queue.lock().events.is_empty() {
            notify();
        }
    }

    /// True once the stream ended and every item was taken.
    pub fn is_ended(&self) -> bool {
        self.state.is_drained()
    }

    /// The last resolved ts queued (the start ts before the first one).
    pub fn resolved_ts(&self) -> Ts {
        self.state.inner.lock().emitted
    }

    /// Progress and the slowest region of the span.
    pub fn diagnostics(&self) -> SpanDiagnostics {
        self.state.diagnostics()
    }

    /// Stops the subscription (same as dropping it).
    pub fn unsubscribe(self) {
        drop(self);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.state.close(&self.shared);
    }
}
