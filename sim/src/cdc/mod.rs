//! TiKV's change-data-capture service (`cdcpb.ChangeData`) over the sim's MVCC store.
//!
//! A client (Tidal's ingest, or TiCDC) opens `EventFeed`/`EventFeedV2` streams to stores and
//! subscribes regions on them. This module reproduces what TiKV's `components/cdc` does, as seen
//! on the wire: the register checks and their order, the initial delta scan, live prewrite /
//! commit / rollback / 1PC rows, resolved timestamps (batched or legacy), region errors on split,
//! merge and leader change, batching limits, and a set of faults. Code that consumes it must work
//! against a real TiKV, so the *observable* behaviour follows TiKV, not its internals.
//!
//! # Structure
//!
//! - [`CdcHub`] (this file) is the store-side "endpoint": one per cluster, it owns every
//!   subscription (per region a *delegate* with its *downstreams*), receives MVCC apply events as
//!   the store's observer, follows region changes, and runs the resolved-ts ticker.
//! - `service` is the gRPC front end ([`CdcService`], one per store): header and feature
//!   parsing, and one reader task per stream that turns requests into register / deregister.
//! - `sink` is a stream's ordered outbound queue and the task that batches it onto the wire.
//! - `delegate` holds the per-region state and the row conversions; `scan` emits the initial
//!   scan; `resolver` computes and groups resolved timestamps.
//!
//! # Ordering: scan rows, live rows and resolved ts
//!
//! Registration attaches the downstream and takes the scan snapshot in one critical section
//! (`MvccStore::atomically`, during which no write can apply). From that instant the downstream
//! is *initializing*: every later apply event in its range is queued to its stream as a live row.
//! The snapshot's rows are emitted afterwards by a separate task, chunk by chunk, into the *same*
//! FIFO queue. Hence:
//!
//! - live rows and scan rows interleave, as in TiKV, and a live COMMIT can reach the client
//!   before the PREWRITE the scan emits for the same `(start_ts, key)`; clients must buffer
//!   commits until INITIALIZED (wire.md §2.8);
//! - nothing observed before the attach is delivered, and nothing queued earlier is overtaken
//!   (TiKV needs a barrier between its two channels for this; one queue gives it for free);
//! - INITIALIZED is the last scan row, and the downstream only becomes *normal* (eligible for
//!   resolved ts) in the same critical section that queues it, so every ResolvedTs follows it;
//! - a ResolvedTs R is computed and queued while no write can apply, from `min_ts = tso.next()`
//!   and the oldest lock in the observed range; every commit applied before that point is
//!   already queued ahead of it, and any later commit of a transaction that was not locked yet
//!   gets a commit ts from the TSO after R (wire.md §2.5).
//!
//! # Region changes
//!
//! The region manager runs every split, merge and leader transfer in MVCC apply order and tells
//! the store's observer synchronously (`ApplyObserver::on_region_change`, under the MVCC write
//! lock). The hub ends the affected subscriptions right there — `epoch_not_match` with the new
//! regions on a split, with no region on a merge, `not_leader` with the new leader on a transfer
//! — so no row applied after the change is routed to them and no resolved ts is computed for
//! them afterwards. Until then a downstream receives events for its whole original range: events
//! are routed by the region each delegate was registered with, and since a change ends every
//! downstream of its region, that region is never stale while it has downstreams.
//!
//! # Deviations from TiKV (documented choices)
//!
//! - `kv_api` other than TiDB is rejected with `compatibility{"6.2.0"}`: the sim models API v1
//!   only, so RawKV (which needs API v2) is refused like TxnKV.
//! - Congestion ends only the subscriptions whose stream is over its memory quota (TiKV stops the
//!   whole region delegate); see `sink`.
//! - A `NotifyTxnStatus` request (TiKV hits `unreachable!()`) aborts the stream with
//!   `UNIMPLEMENTED` instead of crashing the store.
//! - The pending-scan limit counts scans per store, from registration until INITIALIZED is
//!   queued, like TiKV's counter; there is no separate scan-speed limiter.

mod delegate;
mod resolver;
mod scan;
mod service;
mod sink;
mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tidal_proto::cdcpb::{self, ChangeDataRequest};
use tokio::sync::watch;
use tonic::Status;

pub use service::CdcService;

use crate::mvcc::{ApplyEvent, ApplyEventRef, ApplyObserver, MvccStore};
use crate::region::{Region, RegionChange, RegionManager};
use crate::tso::Tso;
use delegate::{Delegate, Downstream, DownstreamState, ObservedRange, errors};
use sink::{Conn, Offer};

/// Default per-stream memory quota for queued events (TiKV's sink memory quota is per store and
/// larger; per stream keeps one slow client from congesting the others).
const DEFAULT_SINK_MEMORY_QUOTA: usize = 64 * 1024 * 1024;
/// The initial scan waits while more than this many bytes are queued on its stream (TiKV's scan
/// channel holds 128 events of up to 32 KiB, about 4 MiB).
const SCAN_ROOM_BYTES: usize = 4 * 1024 * 1024;

/// Configuration of the CDC service (TiKV `[cdc]` settings that matter on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdcConfig {
    /// This cluster's id; checked against `Header.cluster_id` for clients ≥ 5.3.0.
    pub cluster_id: u64,
    /// How often resolved timestamps are computed and sent (`cdc.min-ts-interval`, 1 s).
    pub min_ts_interval: Duration,
    /// Registrations are refused with `server_is_busy` once this many initial scans are pending on
    /// a store (`cdc.incremental-scan-concurrency-limit`, 10000).
    pub scan_concurrency_limit: usize,
    /// At most this many `Event`s per `ChangeDataEvent` (64).
    pub max_events_per_message: usize,
    /// Rows of one `Event.entries` stay under about this many bytes (32 KiB).
    pub max_entries_bytes: usize,
    /// While a stream is busy it sends at most one message per this interval unless a full
    /// message is ready, so events queued meanwhile leave together (1 ms; zero sends every
    /// batch at once). An idle stream's first message leaves at once. TiKV batches the same
    /// way without a setting: events of one raft apply round reach the stream together and
    /// gRPC buffers writes. Without it, a busy sim pays a socket write and a client wake-up per
    /// transaction, which costs more CPU than producing the rows.
    pub send_linger: Duration,
}

impl Default for CdcConfig {
    fn default() -> Self {
        CdcConfig {
            cluster_id: 0,
            min_ts_interval: Duration::from_secs(1),
            scan_concurrency_limit: 10_000,
            max_events_per_message: 64,
            max_entries_bytes: 32 * 1024,
            send_linger: Duration::from_millis(1),
        }
    }
}

/// Everything the hub tracks under its state lock.
#[derive(Debug, Default)]
struct HubState {
    /// Region id → its subscriptions.
    delegates: HashMap<u64, Delegate>,
    /// The delegates by the (encoded) start key of their region, for routing apply events.
    /// Delegates' regions never overlap: a split, merge or leader change ends every downstream
    /// of the region it changes (removing its delegate) before the new regions can register.
    by_start: BTreeMap<Vec<u8>, Vec<u64>>,
    /// Open streams.
    conns: HashMap<u64, Arc<Conn>>,
    /// Store id → initial scans not yet finished.
    pending_scans: HashMap<u64, usize>,
    /// Stores refusing registrations (`set_busy`).
    busy: HashSet<u64>,
    /// Regions whose resolved ts is frozen (`stall_region`).
    stalled: HashSet<u64>,
    /// Next downstream id.
    next_downstream_id: u64,
}

impl HubState {
    /// Removes one downstream; queues `err` for it if given. Returns whether it existed.
    fn remove_downstream(
        &mut self,
        region_id: u64,
        downstream_id: u64,
        err: Option<cdcpb::Error>,
        delay: Duration,
    ) -> bool {
        let Some(d) = self.delegates.get_mut(&region_id) else {
            return false;
        };
        let Some(pos) = d.downstreams.iter().position(|x| x.id == downstream_id) else {
            return false;
        };
        let ds = d.downstreams.swap_remove(pos);
        if d.downstreams.is_empty()
            && let Some(d) = self.delegates.remove(&region_id)
            && let Some(ids) = self.by_start.get_mut(&d.region.start)
        {
            ids.retain(|id| *id != region_id);
            if ids.is_empty() {
                self.by_start.remove(&d.region.start);
            }
        }
        if ds.scan_pending {
            self.finish_scan(ds.conn.store_id);
        }
        if let Some(err) = err {
            ds.conn.push_forced(
                vec![wire::event_piece(&delegate::error_event(
                    region_id,
                    ds.request_id,
                    err,
                ))],
                delay,
            );
        }
        true
    }

    /// Ends every downstream of a region with the same error.
    fn end_region(&mut self, region_id: u64, err: &cdcpb::Error, delay: Duration) {
        let ids: Vec<u64> = match self.delegates.get(&region_id) {
            Some(d) => d.downstreams.iter().map(|x| x.id).collect(),
            None => return,
        };
        for id in ids {
            self.remove_downstream(region_id, id, Some(err.clone()), delay);
        }
    }

    fn finish_scan(&mut self, store_id: u64) {
        if let Some(n) = self.pending_scans.get_mut(&store_id) {
            *n = n.saturating_sub(1);
        }
    }

    /// Finds the subscription `(conn, request_id, region_id)`.
    fn find(&self, conn_id: u64, request_id: u64, region_id: u64) -> Option<u64> {
        self.delegates.get(&region_id).and_then(|d| {
            d.downstreams
                .iter()
                .find(|x| x.conn.id == conn_id && x.request_id == request_id)
                .map(|x| x.id)
        })
    }
}

/// The store-side CDC endpoint shared by every store's [`CdcService`]. See the module docs.
pub struct CdcHub {
    store: MvccStore,
    regions: RegionManager,
    tso: Tso,
    cfg: CdcConfig,
    state: Mutex<HubState>,
    event_delay: Mutex<Duration>,
    sink_quota: AtomicUsize,
    next_conn_id: AtomicU64,
    shut: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
}

impl fmt::Debug for CdcHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CdcHub")
            .field("cfg", &self.cfg)
            .field("registered", &self.registered_count())
            .field("shut", &self.shut.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The hub's MVCC observer; weak so the store does not keep the hub alive.
struct HubObserver(Weak<CdcHub>);

impl ApplyObserver for HubObserver {
    fn on_apply(&self, events: &[ApplyEvent]) {
        let refs: Vec<ApplyEventRef<'_>> = events.iter().map(ApplyEvent::as_event_ref).collect();
        self.on_apply_refs(&refs);
    }

    fn on_apply_refs(&self, events: &[ApplyEventRef<'_>]) {
        if let Some(hub) = self.0.upgrade() {
            hub.on_apply(events);
        }
    }

    fn on_region_change(&self, change: &RegionChange) {
        if let Some(hub) = self.0.upgrade() {
            hub.on_region_change(change);
        }
    }
}

impl CdcHub {
    /// Creates the hub and registers it as the store's apply observer (which also delivers region
    /// changes in apply order); when called inside a tokio runtime, starts the resolved-ts ticker
    /// on it (without a runtime no resolved ts is ever sent).
    pub fn new(store: MvccStore, regions: RegionManager, tso: Tso, cfg: CdcConfig) -> Arc<CdcHub> {
        let hub = Arc::new(CdcHub {
            store,
            regions,
            tso,
            cfg,
            state: Mutex::new(HubState::default()),
            event_delay: Mutex::new(Duration::ZERO),
            sink_quota: AtomicUsize::new(DEFAULT_SINK_MEMORY_QUOTA),
            next_conn_id: AtomicU64::new(1),
            shut: AtomicBool::new(false),
            shutdown_tx: watch::channel(false).0,
        });
        hub.store
            .set_observer(Arc::new(HubObserver(Arc::downgrade(&hub))));
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(resolver::run_ticker(
                    Arc::downgrade(&hub),
                    hub.shutdown_tx.subscribe(),
                ));
            }
            Err(_) => tracing::warn!(
                "CdcHub created outside a tokio runtime: no resolved ts will be sent"
            ),
        }
        hub
    }

    /// The `ChangeData` gRPC service of one store.
    pub fn service_for_store(self: &Arc<Self>, store_id: u64) -> CdcService {
        CdcService::new(Arc::clone(self), store_id)
    }

    /// The configuration the hub runs with.
    pub fn config(&self) -> &CdcConfig {
        &self.cfg
    }

    /// Fault: aborts every open stream of `store_id` with a gRPC `UNAVAILABLE` error, dropping
    /// what was queued and all their subscriptions (as if the store's gRPC server restarted).
    pub fn reset_store_streams(&self, store_id: u64) {
        let conns: Vec<u64> = {
            let st = self.state.lock();
            st.conns
                .values()
                .filter(|c| c.store_id == store_id)
                .map(|c| c.id)
                .collect()
        };
        for id in conns {
            self.close_conn(
                id,
                Some(Status::unavailable("cdc stream reset (fault injection)")),
            );
        }
    }

    /// Fault: while `stalled`, the region's resolved ts stops advancing (no ResolvedTs is sent
    /// for it, as for a region whose leadership cannot be confirmed). Rows still flow.
    pub fn stall_region(&self, region_id: u64, stalled: bool) {
        let mut st = self.state.lock();
        if stalled {
            st.stalled.insert(region_id);
        } else {
            st.stalled.remove(&region_id);
        }
    }

    /// Fault: delays the delivery of everything queued from now on by `delay` (order is kept).
    pub fn set_event_delay(&self, delay: Duration) {
        *self.event_delay.lock() = delay;
    }

    /// Fault: while `busy`, registrations on `store_id` get `server_is_busy`.
    pub fn set_busy(&self, store_id: u64, busy: bool) {
        let mut st = self.state.lock();
        if busy {
            st.busy.insert(store_id);
        } else {
            st.busy.remove(&store_id);
        }
    }

    /// Sets the per-stream memory quota: when more than this many bytes are queued on a stream,
    /// new live rows for it end their subscription with `congested` (default 64 MiB).
    pub fn set_sink_memory_quota(&self, bytes: usize) {
        self.sink_quota.store(bytes, Ordering::Relaxed);
    }

    /// Number of live subscriptions (downstreams) over all stores.
    pub fn registered_count(&self) -> usize {
        self.state
            .lock()
            .delegates
            .values()
            .map(|d| d.downstreams.len())
            .sum()
    }

    /// Number of open streams over all stores.
    pub fn stream_count(&self) -> usize {
        self.state.lock().conns.len()
    }

    /// Stops the ticker and aborts every stream with `UNAVAILABLE`; later calls are refused.
    pub fn shutdown(&self) {
        self.shut.store(true, Ordering::SeqCst);
        self.shutdown_tx.send_replace(true);
        let conns: Vec<u64> = self.state.lock().conns.keys().copied().collect();
        for id in conns {
            self.close_conn(id, Some(Status::unavailable("cdc service shut down")));
        }
    }

    fn is_shut(&self) -> bool {
        self.shut.load(Ordering::SeqCst)
    }

    fn delay(&self) -> Duration {
        *self.event_delay.lock()
    }

    // ----- streams -------------------------------------------------------------------------

    /// Registers a new stream; `None` after shutdown.
    fn open_conn(&self, store_id: u64, multiplexing: bool) -> Option<Arc<Conn>> {
        if self.is_shut() {
            return None;
        }
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let limits = sink::SendLimits {
            max_events: self.cfg.max_events_per_message,
            linger: self.cfg.send_linger,
        };
        let conn = Arc::new(Conn::new(id, store_id, multiplexing, limits));
        self.state.lock().conns.insert(id, Arc::clone(&conn));
        Some(conn)
    }

    /// Drops a stream and all its subscriptions (no error events, as TiKV's connection
    /// deregistration). `status` aborts the response with that error; `None` flushes and ends it.
    fn close_conn(&self, conn_id: u64, status: Option<Status>) {
        let delay = self.delay();
        let conn = {
            let mut st = self.state.lock();
            let mut doomed = Vec::new();
            for (rid, d) in &st.delegates {
                doomed.extend(
                    d.downstreams
                        .iter()
                        .filter(|x| x.conn.id == conn_id)
                        .map(|x| (*rid, x.id)),
                );
            }
            for (rid, id) in doomed {
                st.remove_downstream(rid, id, None, delay);
            }
            st.conns.remove(&conn_id)
        };
        if let Some(conn) = conn {
            match status {
                Some(s) => conn.abort(s),
                None => conn.close_graceful(),
            }
        }
    }

    // ----- region changes ------------------------------------------------------------------

    /// Ends the subscriptions a region change invalidates. Called by the MVCC store under its
    /// write lock, in apply order, before the change is published.
    fn on_region_change(&self, change: &RegionChange) {
        let delay = self.delay();
        let mut st = self.state.lock();
        match change {
            RegionChange::Split { old, new } => {
                let err = errors::epoch_not_match(new.iter().map(delegate::region_pb).collect());
                st.end_region(old.id, &err, delay);
            }
            RegionChange::Merge { source, target } => {
                let err = errors::epoch_not_match(Vec::new());
                st.end_region(source.id, &err, delay);
                st.end_region(target.id, &err, delay);
            }
            RegionChange::LeaderTransfer {
                region,
                from_store,
                to_store,
            } => {
                if from_store != to_store {
                    let err = errors::not_leader(region.id, delegate::leader_pb(region));
                    let ids: Vec<u64> = st
                        .delegates
                        .get(&region.id)
                        .map(|d| {
                            d.downstreams
                                .iter()
                                .filter(|x| x.conn.store_id != *to_store)
                                .map(|x| x.id)
                                .collect()
                        })
                        .unwrap_or_default();
                    for id in ids {
                        st.remove_downstream(region.id, id, Some(err.clone()), delay);
                    }
                }
            }
        }
    }

    // ----- live events ---------------------------------------------------------------------

    /// The MVCC observer: routes each event to the delegates whose region contains the key and
    /// to the downstreams observing it, in apply order, one `Event` (or several, by size) per
    /// downstream per write operation.
    ///
    /// Rows are encoded straight into protobuf bytes here, on the writer (see `wire`): a row
    /// that goes to one downstream is written into that downstream's `Event` body directly, one
    /// that goes to several is encoded once and copied. Routing compares raw keys with decoded
    /// bounds; a key is encoded (into one reused buffer) only for a bound that does not decode
    /// and for the lookup by region start.
    fn on_apply(&self, events: &[ApplyEventRef<'_>]) {
        let mut st = self.state.lock();
        if st.delegates.is_empty() {
            return;
        }
        let delay = self.delay();
        let quota = self.sink_quota.load(Ordering::Relaxed);
        // Per downstream (in order of first row): downstream id and its encoded rows.
        let mut out: Vec<(u64, wire::EntriesWriter)> = Vec::new();
        let mut targets: Vec<usize> = Vec::new();
        let mut key = delegate::RoutingKey::default();
        let mut scratch = Vec::new();
        let n_events = events.len();
        // The delegate the previous row went to: consecutive rows of a write are mostly in one
        // region, and a region that contains the key is the only candidate.
        let mut last: Option<(u64, &Delegate)> = None;
        for (i, ev) in events.iter().enumerate() {
            let row = wire::RowRef::of(ev);
            let raw = row.key();
            key.reset();
            let (txn_source, commit_ts) = (row.txn_source(), row.commit_ts());
            targets.clear();
            let hit = match last {
                Some((rid, d)) if d.contains(raw, &mut key) => Some((rid, d)),
                // The delegate whose region starts last at or before the key is the only one
                // that can contain it (regions do not overlap).
                _ => {
                    let ek = key.encoded(raw);
                    st.by_start
                        .range::<[u8], _>((Bound::Unbounded, Bound::Included(ek)))
                        .next_back()
                        .into_iter()
                        .flat_map(|(_, ids)| ids.iter())
                        .filter_map(|rid| st.delegates.get(rid).map(|d| (*rid, d)))
                        .find(|(_, d)| {
                            delegate::region_contains(&d.region.start, &d.region.end, ek)
                        })
                }
            };
            last = hit.or(last);
            if let Some((rid, d)) = hit {
                for ds in &d.downstreams {
                    if !ds.observes(raw, &mut key) {
                        continue;
                    }
                    if !delegate::txn_source_passes(txn_source, ds.filter_loop) {
                        continue;
                    }
                    let slot = match out.iter().position(|(id, _)| *id == ds.id) {
                        Some(i) => i,
                        None => {
                            // One write operation has one commit ts: checked once per stream.
                            if commit_ts != 0 && commit_ts <= ds.advanced_to {
                                tracing::error!(
                                    region_id = rid,
                                    commit_ts,
                                    resolved_ts = ds.advanced_to,
                                    "commit at or below an already sent resolved ts: the writer broke the TSO order"
                                );
                            }
                            // Room for every remaining row the size of this one plus some
                            // slack (values vary a little): most batches go to one stream
                            // and their rows are alike.
                            let hint = (row.entry_len() + row.entry_len() / 8 + 8)
                                .saturating_mul(n_events - i);
                            out.push((
                                ds.id,
                                wire::EntriesWriter::new(
                                    rid,
                                    ds.request_id,
                                    self.cfg.max_entries_bytes,
                                    hint,
                                ),
                            ));
                            out.len() - 1
                        }
                    };
                    targets.push(slot);
                }
            }
            match targets.as_slice() {
                [] => {}
                [only] => {
                    if let Some((_, w)) = out.get_mut(*only) {
                        w.push(&row);
                    }
                }
                many => {
                    scratch.clear();
                    row.put_entry(&mut scratch);
                    for &slot in many {
                        if let Some((_, w)) = out.get_mut(slot) {
                            w.push_encoded(&scratch, row.payload());
                        }
                    }
                }
            }
        }
        let mut congested = Vec::new();
        for (ds_id, writer) in out {
            let rid = writer.region_id();
            let Some(ds) = st
                .delegates
                .get(&rid)
                .and_then(|d| d.downstreams.iter().find(|x| x.id == ds_id))
            else {
                continue;
            };
            if ds.conn.offer_live(writer.finish(), delay, quota) == Offer::Congested {
                congested.push((rid, ds_id));
            }
        }
        for (rid, ds_id) in congested {
            st.remove_downstream(rid, ds_id, Some(errors::congested(rid)), delay);
        }
    }

    // ----- requests ------------------------------------------------------------------------

    /// Handles one request of a stream (TiKV `handle_request`).
    fn handle_request(self: &Arc<Self>, conn: &Arc<Conn>, req: ChangeDataRequest) {
        use cdcpb::change_data_request::Request;
        match req.request {
            None | Some(Request::Register(_)) => self.register(conn, req),
            Some(Request::Deregister(_)) => self.deregister(conn, req.request_id, req.region_id),
            Some(Request::NotifyTxnStatus(_)) => {
                self.close_conn(
                    conn.id,
                    Some(Status::unimplemented("NotifyTxnStatus is not supported")),
                );
            }
        }
    }

    /// Deregisters `(request_id, region_id)`, or every region of `request_id` when `region_id`
    /// is 0. Each removed subscription gets a `region_not_found` error, as TiKV sends.
    fn deregister(&self, conn: &Conn, request_id: u64, region_id: u64) {
        let delay = self.delay();
        let mut st = self.state.lock();
        let targets: Vec<(u64, u64)> = if region_id != 0 {
            st.find(conn.id, request_id, region_id)
                .map(|id| (region_id, id))
                .into_iter()
                .collect()
        } else {
            let mut v = Vec::new();
            for (rid, d) in &st.delegates {
                v.extend(
                    d.downstreams
                        .iter()
                        .filter(|x| x.conn.id == conn.id && x.request_id == request_id)
                        .map(|x| (*rid, x.id)),
                );
            }
            v
        };
        for (rid, id) in targets {
            st.remove_downstream(rid, id, Some(errors::region_not_found(rid)), delay);
        }
    }

    /// Registers one region subscription: the checks in TiKV's order, then attach + snapshot in
    /// one critical section, then the asynchronous initial scan.
    fn register(self: &Arc<Self>, conn: &Arc<Conn>, req: ChangeDataRequest) {
        let region_id = req.region_id;
        let request_id = req.request_id;
        let delay = self.delay();
        let task = self.store.atomically(|view| {
            // Lock order is MVCC store, then region table: reading the region here is safe and
            // consistent with the snapshot (region changes also run under the MVCC lock).
            let region = self.regions.get(region_id);
            let mut st = self.state.lock();
            if let Some(err) = self.register_error(&st, conn, &req, region.as_ref()) {
                conn.push_forced(
                    vec![wire::event_piece(&delegate::error_event(
                        region_id, request_id, err,
                    ))],
                    delay,
                );
                return None;
            }
            let region = region?;
            let range =
                ObservedRange::new(&region.start, &region.end, &req.start_key, &req.end_key);
            let snapshot = view.delta_scan(&range.raw_start, &range.raw_end, req.checkpoint_ts);
            let rows = scan::snapshot_rows(snapshot, &range, req.filter_loop);
            st.next_downstream_id = st.next_downstream_id.saturating_add(1);
            let id = st.next_downstream_id;
            *st.pending_scans.entry(conn.store_id).or_default() += 1;
            let st = &mut *st;
            let delegate = st.delegates.entry(region_id).or_insert_with(|| {
                st.by_start
                    .entry(region.start.clone())
                    .or_default()
                    .push(region_id);
                Delegate {
                    raw_region: delegate::raw_bounds(&region.start, &region.end),
                    region: region.clone(),
                    downstreams: Vec::new(),
                }
            });
            delegate.downstreams.push(Downstream {
                id,
                conn: Arc::clone(conn),
                request_id,
                range,
                filter_loop: req.filter_loop,
                state: DownstreamState::Initializing,
                advanced_to: 0,
                scan_pending: true,
            });
            Some(scan::ScanTask {
                downstream_id: id,
                region_id,
                request_id,
                rows,
            })
        });
        if let Some(task) = task {
            tokio::spawn(scan::run_scan(Arc::clone(self), Arc::clone(conn), task));
        }
    }

    /// TiKV's register checks, in order; the first failure is the error to send.
    fn register_error(
        &self,
        st: &HubState,
        conn: &Conn,
        req: &ChangeDataRequest,
        region: Option<&Region>,
    ) -> Option<cdcpb::Error> {
        let region_id = req.region_id;
        let gates = conn.gates();
        if gates.validate_cluster_id {
            let requested = req.header.as_ref().map_or(0, |h| h.cluster_id);
            if requested != self.cfg.cluster_id {
                return Some(errors::cluster_id_mismatch(self.cfg.cluster_id, requested));
            }
        }
        // Only TiDB (kv_api 0) is served: TxnKV is never supported and RawKV needs API v2.
        if req.kv_api != 0 {
            return Some(errors::compatibility());
        }
        let pending = st.pending_scans.get(&conn.store_id).copied().unwrap_or(0);
        if st.busy.contains(&conn.store_id) || pending >= self.cfg.scan_concurrency_limit {
            return Some(errors::server_is_busy());
        }
        let region = match region {
            Some(r) if r.peers.iter().any(|p| p.store_id == conn.store_id) => r,
            _ => return Some(errors::region_not_found(region_id)),
        };
        if st.find(conn.id, req.request_id, region_id).is_some() {
            return Some(errors::duplicate_request(region_id));
        }
        // Raftstore-side checks of the change-capture snapshot: leadership, then epoch version.
        if region.leader_store != conn.store_id {
            return Some(errors::not_leader(region_id, delegate::leader_pb(region)));
        }
        let requested_version = req.region_epoch.as_ref().map_or(0, |e| e.version);
        if requested_version != region.epoch.version {
            return Some(errors::epoch_not_match(vec![delegate::region_pb(region)]));
        }
        None
    }
}
