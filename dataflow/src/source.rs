//! The two source operators: the DDL source (one owner worker) and the table source (every
//! worker, for the spans it owns).
//!
//! # Capabilities
//!
//! Each source holds **one** capability and moves it only on resolved-ts ticks; the commit ts
//! of every row travels in the data. The table source keeps its capability at
//!
//! ```text
//!     min( released ts of every owned span , DDL frontier − 1 ) + 1
//! ```
//!
//! where a span's *released ts* is `min(span resolved ts, DDL frontier − 1)`: everything of the
//! span committed at or below it has been sent. Every row it still has to send is committed
//! above that minimum, i.e. at or above the capability, so the downstream frontier `F` means
//! "every row committed below `F` has arrived" (resolved-ts = `F − 1`).
//!
//! The DDL frontier bound does two jobs. Rows are decoded with the schema at their commit ts,
//! which is complete only for ts below the DDL frontier. And a table created at `T` gets a new
//! span whose first rows commit just above `T`: because no source's capability passes the
//! frontier of the DDL stream, and the DDL owner sends each DDL under a capability at or below
//! its commit ts, every source is still at or below `T + 1` when it learns about the new span —
//! the new span starts at or below every frontier it feeds (invariant 5a). A worker without
//! spans therefore still advances: its capability follows the DDL frontier.
//!
//! # Per-span release
//!
//! Rows wait in the span's [`SpanBuffer`] until *that span's* bound passes them; then whole
//! transactions are decoded and sent in `(commit_ts, start_ts)` order. A stalled span holds the
//! capability (and so the checkpoint) back, but not the delivery of other spans' rows.
//!
//! # Flow control
//!
//! Every row between TiKV and the sink is counted in the feed's memory quota `Q`
//! (`FeedConfig::memory_quota`), in exactly one place at a time:
//!
//! | where | bounded by |
//! |---|---|
//! | feed: prewrites in matchers, rows in subscription queues | the feed stops reading while the quota is used |
//! | span buffers of one worker, in memory | `Q / 4 / local workers`; beyond it rows spill to disk |
//! | sink drivers: queued and in flight (process) | `min(max_inflight_bytes, Q / 4)` |
//!
//! Pulling from a subscription moves bytes from the feed's count to the span buffers'; a
//! released transaction moves them on to the drivers' count, which drops only once the sink
//! reports the batch durable. While the drivers hold their share and a batch is in flight the
//! drivers are *saturated*: the source neither pulls nor releases (a slow sink slows the
//! sources), the subscription queues fill, and the feed stops reading from TiKV. When the
//! drivers hold their share but nothing is in flight, what they hold waits behind a DDL
//! barrier, which only the sources can lift: the source then keeps pulling (so resolved ts keep
//! arriving) and releases only from its lowest spans, at most one share per activation.
//!
//! Span buffers spill instead of growing. A pull stops once the worker's span buffers hold
//! their share in memory (the rest stays in the feed's queues, where the quota stops the
//! feed). If what they hold cannot be released — it waits for its span's resolved ts, which
//! only pulling further can bring — the newest transactions of the largest buffers move to
//! disk ([`crate::spill`]) until half the share is left, and pulling goes on. Rows held back
//! only because the drivers are full are not spilled (the sink will take them). A spilled transaction is read back in
//! chunks of at most half the share when it is released, so a transaction larger than the
//! quota is never whole in memory again; it reaches the sink as several items (and so, past
//! the batch size, in several batches). The spill files of a worker live in a directory of
//! their own under `ChangefeedSpec::spill_dir` and are removed when read back and when the
//! source is dropped.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::{Operator, OutputBuilderSession, source};
use timely::dataflow::{ProbeHandle, Scope, StreamVec};
use timely::scheduling::{Activator, SyncActivator};

use tidal_ingest::feed::{FeedEvent, Subscription};
use tidal_ingest::schema::DdlJobDecoder;
use tidal_model::{DdlJob, SpanSetFingerprint, TableSpan, Ts};

use crate::messages::{DdlMsg, Json, TxnItem};
use crate::routing::{self, DDL_OWNER};
use crate::run::ProcessCtx;
use crate::shared::SpanProgress;
use crate::spec::ChangefeedError;
use crate::spill::{self, SpillError, Spiller};
use crate::txn::{SpanBuffer, TxnDecoder};

/// Feed events taken from one subscription per activation before yielding.
const EVENTS_PER_ACTIVATION: usize = 256;
/// How often span diagnostics are copied to the handle (at least; see [`diagnostics_every`]).
const DIAGNOSTICS_EVERY: Duration = Duration::from_millis(250);
/// A step that only moved resolved timestamps (no rows pulled or sent) and took longer than
/// this is followed by a pause (see [`TableSource::step`]).
const BOOKKEEPING_STEP: Duration = Duration::from_micros(200);
/// The pause after such a step is this many times the step's duration...
const BOOKKEEPING_PAUSE_FACTOR: u32 = 4;
/// ... and at most this long.
const BOOKKEEPING_PAUSE_MAX: Duration = Duration::from_millis(50);
/// Smallest in-memory share of a worker's span buffers and smallest read-back chunk.
const MIN_SHARE: usize = 64 << 10;
/// Numbers the spill directories of this process, so that two changefeeds (or two runs of
/// one) never share one.
static SPILL_RUNS: AtomicU64 = AtomicU64::new(0);

type TxnOutput<'a> = OutputBuilderSession<'a, u64, CapacityContainerBuilder<Vec<TxnItem>>>;
type DdlOutput<'a> = OutputBuilderSession<'a, u64, CapacityContainerBuilder<Vec<DdlMsg>>>;

fn notifier(sync: SyncActivator) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || {
        let _ = sync.activate();
    })
}

/// A notifier shared by many subscriptions: only the first notification after the operator
/// cleared `pending` activates it, so a burst of resolved ts over many spans costs one
/// cross-thread activation (and one worker unpark), not one per span.
fn coalescing_notifier(
    sync: SyncActivator,
    pending: Arc<AtomicBool>,
) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || {
        if !pending.swap(true, Ordering::AcqRel) {
            let _ = sync.activate();
        }
    })
}

/// How often the diagnostics of `spans` spans are refreshed: every [`DIAGNOSTICS_EVERY`], and
/// no more often than every 10 µs × spans (1 s for 100 000 spans), so that many idle spans do
/// not spend their worker's time on a report read by humans.
fn diagnostics_every(spans: usize) -> Duration {
    let per_span =
        Duration::from_micros(10).saturating_mul(u32::try_from(spans).unwrap_or(u32::MAX));
    DIAGNOSTICS_EVERY.max(per_span)
}

// ---------------------------------------------------------------------------------------------
// DDL source
// ---------------------------------------------------------------------------------------------

/// The DDL stream: finished DDL jobs in commit order, each sent under a capability at or below
/// its commit ts (the previous DDL resolved ts + 1). Only [`DDL_OWNER`] produces anything.
pub(crate) fn ddl_source<'s>(
    scope: Scope<'s, u64>,
    ctx: Arc<ProcessCtx>,
) -> StreamVec<'s, u64, DdlMsg> {
    source::<u64, CapacityContainerBuilder<Vec<DdlMsg>>, _, _>(
        scope,
        "DdlSource",
        move |cap, info| {
            let mut state = if scope.index() == DDL_OWNER {
                let sync = scope.worker().sync_activator_for(info.address.to_vec());
                let activator = scope.activator_for(info.address.clone());
                Some(DdlSource::start(ctx, cap, sync, activator))
            } else {
                drop(cap);
                None
            };
            move |output| {
                if let Some(s) = state.as_mut() {
                    s.step(output);
                }
            }
        },
    )
}

struct DdlSource {
    ctx: Arc<ProcessCtx>,
    cap: Option<Capability<u64>>,
    sub: Option<Subscription>,
    decoder: Option<DdlJobDecoder>,
    pending: BTreeMap<(Ts, i64), DdlJob>,
    resolved: Ts,
    activator: Activator,
    failed: bool,
}

impl DdlSource {
    fn start(
        ctx: Arc<ProcessCtx>,
        mut cap: Capability<u64>,
        sync: SyncActivator,
        activator: Activator,
    ) -> DdlSource {
        let start = ctx.shared.start_ts;
        cap.downgrade(&start.0.saturating_add(1));
        let mut s = DdlSource {
            ctx,
            cap: Some(cap),
            sub: None,
            decoder: None,
            pending: BTreeMap::new(),
            resolved: start,
            activator,
            failed: false,
        };
        match DdlJobDecoder::from_store(&s.ctx.shared.store) {
            Ok(d) => s.decoder = Some(d),
            Err(e) => {
                s.ctx.shared.fail(ChangefeedError::Schema(e.to_string()));
                s.failed = true;
                return s;
            }
        }
        match s.ctx.feed.subscribe(routing::ddl_span(), start) {
            Ok(sub) => {
                sub.set_notify(notifier(sync));
                s.sub = Some(sub);
            }
            Err(e) => {
                s.ctx.shared.fail(ChangefeedError::Feed {
                    table_id: tidal_model::tablecodec::DDL_JOB_TABLE_ID,
                    detail: e.to_string(),
                });
                s.failed = true;
            }
        }
        s
    }

    fn fail(&mut self, e: ChangefeedError) {
        self.ctx.shared.fail(e);
        self.failed = true;
    }

    fn step(&mut self, output: &mut DdlOutput<'_>) {
        if self.failed || self.cap.is_none() || self.ctx.shared.has_failed() {
            // Keep the capability: the frontier (and every watermark) stops here.
            return;
        }
        let (Some(sub), Some(decoder)) = (self.sub.as_ref(), self.decoder.as_ref()) else {
            return;
        };
        let mut taken = 0;
        let mut error = None;
        while taken < EVENTS_PER_ACTIVATION * 4 {
            let Some(ev) = sub.try_recv() else { break };
            taken += 1;
            match ev {
                FeedEvent::Rows(rows) => {
                    for r in rows {
                        if r.commit_ts <= self.resolved {
                            continue;
                        }
                        match decoder.decode(&r) {
                            Ok(Some(job)) => {
                                self.pending.insert((r.commit_ts, job.id), job);
                            }
                            Ok(None) => {}
                            Err(e) => {
                                error = Some(ChangefeedError::Schema(format!(
                                    "DDL job row committed at {}: {e}",
                                    r.commit_ts.0
                                )));
                                break;
                            }
                        }
                    }
                }
                FeedEvent::Resolved(ts) => self.resolved = self.resolved.max(ts),
                FeedEvent::Error(e) => {
                    error = Some(ChangefeedError::Feed {
                        table_id: tidal_model::tablecodec::DDL_JOB_TABLE_ID,
                        detail: e.to_string(),
                    });
                }
            }
            if error.is_some() {
                break;
            }
        }
        if let Some(e) = error {
            self.fail(e);
            return;
        }
        if taken >= EVENTS_PER_ACTIVATION * 4 {
            self.activator.activate();
        }
        let Some(cap) = self.cap.as_mut() else { return };
        let mut upto = self.resolved;
        if let Some(t) = self.ctx.shared.target_ts {
            upto = upto.min(t);
        }
        if upto.0 < *cap.time() {
            return;
        }
        let store = &self.ctx.shared.store;
        let mut session = output.session(&*cap);
        while let Some(entry) = self.pending.first_entry() {
            let (commit_ts, _) = *entry.key();
            if commit_ts > upto {
                break;
            }
            let job = entry.remove();
            let event = match store.apply_job(&job, commit_ts) {
                Ok(ev) => ev,
                Err(e) => {
                    drop(session);
                    self.fail(ChangefeedError::Schema(e.to_string()));
                    return;
                }
            };
            tracing::info!(
                changefeed = %self.ctx.shared.id,
                job_id = job.id,
                commit_ts = commit_ts.0,
                query = %job.query,
                "DDL on the DDL stream"
            );
            session.give(DdlMsg {
                commit_ts,
                job: Json(job),
                event: Json(event),
            });
        }
        drop(session);
        store.advance_resolved_ts(upto);
        if self.ctx.shared.target_ts.is_some_and(|t| upto >= t) {
            self.cap = None;
            self.sub = None;
            return;
        }
        cap.downgrade(&upto.0.saturating_add(1));
    }
}

// ---------------------------------------------------------------------------------------------
// Table source
// ---------------------------------------------------------------------------------------------

/// Catch-up state of a span restored after a (test-hook) loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restore {
    /// Re-reading from the old checkpoint; rows go out under the current capability.
    CatchingUp,
    /// Caught up; waiting for everything sent at or below this time to be durable.
    Flushing(u64),
}

struct SpanSlot {
    span: TableSpan,
    id: u128,
    sub: Option<Subscription>,
    resolved: Ts,
    released: Ts,
    buffer: SpanBuffer,
    /// Dropped by a DDL at this ts: release rows up to it, then forget the span.
    end_ts: Option<Ts>,
    /// Silently dropped by the test hook.
    lost: bool,
    restore: Option<Restore>,
    /// Rows at or below this ts are written in safe mode (replayed after a restore).
    safe_until: Ts,
}

impl SpanSlot {
    fn hosted(&self) -> bool {
        !self.lost && self.end_ts.is_none() && self.restore.is_none()
    }
}

/// The table source of one worker. Its input is the (broadcast) DDL stream.
pub(crate) fn table_source<'s>(
    ddl: StreamVec<'s, u64, DdlMsg>,
    ctx: Arc<ProcessCtx>,
    checkpoint_probe: ProbeHandle<u64>,
) -> StreamVec<'s, u64, TxnItem> {
    let scope = ddl.scope();
    ddl.unary_frontier::<CapacityContainerBuilder<Vec<TxnItem>>, _, _, _>(
        Pipeline,
        "TableSource",
        move |cap, info| {
            let sync = scope.worker().sync_activator_for(info.address.to_vec());
            let activator = scope.activator_for(info.address.clone());
            let pending = Arc::new(AtomicBool::new(false));
            let mut src = TableSource::new(
                ctx,
                scope.index(),
                scope.peers(),
                cap,
                coalescing_notifier(sync, Arc::clone(&pending)),
                activator,
                checkpoint_probe,
            );
            src.notify_pending = pending;
            let mut msgs: Vec<DdlMsg> = Vec::new();
            move |(input, frontier), output| {
                input.for_each(|_cap, data| msgs.append(data));
                let ddl_frontier = frontier.frontier().iter().next().copied();
                src.step(&mut msgs, ddl_frontier, output);
            }
        },
    )
}

struct TableSource {
    ctx: Arc<ProcessCtx>,
    index: usize,
    peers: usize,
    cap: Option<Capability<u64>>,
    spans: BTreeMap<u128, SpanSlot>,
    ddls: BTreeMap<(Ts, i64), DdlMsg>,
    span_version: Ts,
    decoder: TxnDecoder,
    notify: Arc<dyn Fn() + Send + Sync>,
    activator: Activator,
    checkpoint_probe: ProbeHandle<u64>,
    failed: bool,
    spans_dirty: bool,
    last_diag: Instant,
    lost_tables: HashSet<i64>,
    flow: Flow,
    /// Where the next pull starts (rotates over the spans).
    pull_from: usize,
    /// Set by the subscriptions' notifier, cleared when a step starts pulling.
    notify_pending: Arc<AtomicBool>,
    /// Rows pulled from the subscriptions during the current step.
    pulled_rows: usize,
    /// Bookkeeping-only steps do not run again before this instant.
    pause_until: Option<Instant>,
}

/// The source's flow-control state (see the module docs).
struct Flow {
    spiller: Spiller,
    /// Bytes of this worker's span buffers in memory (`Q / 4 / local workers`) above which
    /// rows spill.
    buffer_share: usize,
    /// Bytes the process's sink drivers may hold before the sources wait (`min(max in-flight
    /// bytes, Q / 4)`).
    driver_share: usize,
    /// Largest chunk read back from a spilled transaction.
    chunk_bytes: usize,
    /// Span-buffer bytes currently counted in the feed's quota by this worker.
    counted: usize,
    /// Spill counters already added to the shared stats.
    published_bytes: u64,
    published_files: u64,
}

impl Flow {
    fn new(ctx: &ProcessCtx, index: usize) -> Flow {
        let quota = ctx.feed.quota().capacity().max(1);
        let workers = ctx.shared.local_workers.len().max(1);
        let buffer_share = (quota / 4 / workers).max(MIN_SHARE);
        let driver_share = (ctx.shared.max_inflight_bytes as usize)
            .min(quota / 4)
            .max(1);
        let chunk_bytes = (buffer_share / 2).min(ctx.max_batch_bytes).max(MIN_SHARE);
        let (dir, parents) = spill_location(ctx, index);
        Flow {
            spiller: Spiller::new(dir, parents),
            buffer_share,
            driver_share,
            chunk_bytes,
            counted: 0,
            published_bytes: 0,
            published_files: 0,
        }
    }
}

/// The spill directory of worker `index` and how many of its ancestors to remove with it:
/// `<spill_dir>/<changefeed>/<pid>-<run>-w<index>` (directories of other processes found
/// there are left over from a crash and removed), or
/// `<temp>/tidal-spill/<pid>-<changefeed>-<run>-w<index>` by default.
fn spill_location(ctx: &ProcessCtx, index: usize) -> (PathBuf, usize) {
    let pid = std::process::id();
    let run = SPILL_RUNS.fetch_add(1, Ordering::Relaxed);
    let name = spill::dir_name(&ctx.shared.id);
    match &ctx.spill_dir {
        Some(base) => {
            let parent = base.join(&name);
            let mine = format!("{pid}-");
            if let Ok(entries) = std::fs::read_dir(&parent) {
                for e in entries.flatten() {
                    if !e.file_name().to_string_lossy().starts_with(&mine) {
                        tracing::info!(dir = %e.path().display(), "removing a stale spill directory");
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
            (parent.join(format!("{pid}-{run}-w{index}")), 1)
        }
        None => (
            std::env::temp_dir()
                .join("tidal-spill")
                .join(format!("{pid}-{name}-{run}-w{index}")),
            1,
        ),
    }
}

impl Drop for TableSource {
    fn drop(&mut self) {
        // The buffers go with the source: give their bytes back to the feed's quota (the
        // spiller removes the worker's spill directory when it drops).
        self.ctx.feed.quota().release(self.flow.counted);
        self.flow.counted = 0;
    }
}

impl TableSource {
    fn new(
        ctx: Arc<ProcessCtx>,
        index: usize,
        peers: usize,
        mut cap: Capability<u64>,
        notify: Arc<dyn Fn() + Send + Sync>,
        activator: Activator,
        checkpoint_probe: ProbeHandle<u64>,
    ) -> TableSource {
        let start = ctx.shared.start_ts;
        cap.downgrade(&start.0.saturating_add(1));
        let decoder = TxnDecoder::new(
            ctx.shared.store.clone(),
            ctx.shared.filter.clone(),
            ctx.safe_mode_until,
        );
        let flow = Flow::new(&ctx, index);
        let mut s = TableSource {
            ctx,
            index,
            peers,
            cap: Some(cap),
            spans: BTreeMap::new(),
            ddls: BTreeMap::new(),
            span_version: start,
            decoder,
            notify,
            activator,
            checkpoint_probe,
            failed: false,
            spans_dirty: true,
            last_diag: Instant::now() - DIAGNOSTICS_EVERY,
            lost_tables: HashSet::new(),
            flow,
            pull_from: 0,
            notify_pending: Arc::new(AtomicBool::new(false)),
            pulled_rows: 0,
            pause_until: None,
        };
        s.reconcile(start);
        s.publish_spans();
        s
    }

    fn fail(&mut self, e: ChangefeedError) {
        self.ctx.shared.fail(e);
        self.failed = true;
    }

    fn subscribe(&mut self, span: &TableSpan, from: Ts) -> Option<Subscription> {
        match self.ctx.feed.subscribe(span.clone(), from) {
            Ok(sub) => {
                sub.set_notify(Arc::clone(&self.notify));
                Some(sub)
            }
            Err(e) => {
                self.fail(ChangefeedError::Feed {
                    table_id: span.table_id,
                    detail: e.to_string(),
                });
                None
            }
        }
    }

    /// Makes the owned span set the one of the schema at `ts`: new spans start at `ts`, spans
    /// of tables gone at `ts` drain up to `ts` and leave.
    fn reconcile(&mut self, ts: Ts) {
        let desired: BTreeMap<u128, TableSpan> =
            routing::data_spans_at(&self.ctx.shared.store, &self.ctx.shared.filter, ts)
                .into_iter()
                .filter(|s| routing::owner_of(s, self.peers) == self.index)
                .map(|s| (s.span_id(), s))
                .collect();
        for (id, span) in &desired {
            if let Some(slot) = self.spans.get_mut(id) {
                slot.end_ts = None;
                continue;
            }
            let sub = self.subscribe(span, ts);
            self.spans.insert(
                *id,
                SpanSlot {
                    span: span.clone(),
                    id: *id,
                    sub,
                    resolved: ts,
                    released: ts,
                    buffer: SpanBuffer::new(),
                    end_ts: None,
                    lost: false,
                    restore: None,
                    safe_until: Ts::ZERO,
                },
            );
        }
        for (id, slot) in self.spans.iter_mut() {
            if !desired.contains_key(id) && slot.end_ts.is_none() {
                slot.end_ts = Some(ts);
            }
        }
        self.span_version = ts;
        self.spans_dirty = true;
    }

    fn apply_ddls(&mut self, ddl_bound: Ts) {
        while let Some(entry) = self.ddls.first_entry() {
            let (commit_ts, _) = *entry.key();
            if commit_ts > ddl_bound {
                break;
            }
            let msg = entry.remove();
            if let Err(e) = self.ctx.shared.store.apply_job(&msg.job.0, commit_ts) {
                self.fail(ChangefeedError::Schema(e.to_string()));
                return;
            }
            self.reconcile(commit_ts);
        }
    }

    /// The test hook: silently drop (or restore) spans of the tables named in the handle.
    fn check_sabotage(&mut self) {
        let dropped: HashSet<i64> = self.ctx.shared.sabotage.lock().dropped.clone();
        if dropped.is_empty() && self.lost_tables.is_empty() {
            return;
        }
        let cap_time = self.cap.as_ref().map_or(0, |c| *c.time());
        let ids: Vec<u128> = self.spans.keys().copied().collect();
        for id in ids {
            let (table_id, lost) = match self.spans.get(&id) {
                Some(s) => (s.span.table_id, s.lost),
                None => continue,
            };
            if dropped.contains(&table_id) && !lost {
                if let Some(slot) = self.spans.get_mut(&id) {
                    slot.lost = true;
                    slot.sub = None;
                    slot.buffer.clear();
                    slot.restore = None;
                }
                self.lost_tables.insert(table_id);
                self.spans_dirty = true;
            } else if lost && !dropped.contains(&table_id) {
                // Re-read from the last published checkpoint (frozen while the span was
                // missing); rows between it and the capability are replays in safe mode.
                let from = Ts(self.ctx.shared.checkpoint.load(Ordering::Acquire));
                let span = match self.spans.get(&id) {
                    Some(s) => s.span.clone(),
                    None => continue,
                };
                let sub = self.subscribe(&span, from);
                if let Some(slot) = self.spans.get_mut(&id) {
                    slot.lost = false;
                    slot.sub = sub;
                    slot.resolved = from;
                    slot.released = from;
                    slot.safe_until = Ts(cap_time);
                    slot.restore = Some(Restore::CatchingUp);
                }
                self.lost_tables.remove(&table_id);
                self.spans_dirty = true;
            }
        }
    }

    /// Takes feed events; true if some subscription has more waiting.
    /// Takes feed events until this worker's span buffers hold more than `limit` bytes in
    /// memory; true if some subscription has more waiting (or the limit stopped the pull).
    /// Starts with a different span every time, so that no span's events wait behind another's.
    fn pull(&mut self, limit: usize) -> bool {
        let mut more = false;
        let mut error = None;
        let mut mem: usize = self.spans.values().map(|s| s.buffer.bytes()).sum();
        let n = self.spans.len();
        if n == 0 {
            return false;
        }
        let first = self.pull_from % n;
        self.pull_from = self.pull_from.wrapping_add(1);
        let (head, tail): (Vec<_>, Vec<_>) = self
            .spans
            .values_mut()
            .enumerate()
            .partition(|(i, _)| *i >= first);
        'spans: for (_, slot) in head.into_iter().chain(tail) {
            let Some(sub) = slot.sub.as_ref() else {
                continue;
            };
            let mut taken = 0;
            while taken < EVENTS_PER_ACTIVATION {
                if mem > limit {
                    more = true;
                    break 'spans;
                }
                let Some(ev) = sub.try_recv() else { break };
                taken += 1;
                match ev {
                    FeedEvent::Rows(rows) => {
                        self.pulled_rows = self.pulled_rows.saturating_add(rows.len());
                        let before = slot.buffer.bytes();
                        for r in rows {
                            if r.commit_ts > slot.released {
                                slot.buffer.push(r);
                            }
                        }
                        mem = mem.saturating_add(slot.buffer.bytes().saturating_sub(before));
                    }
                    FeedEvent::Resolved(ts) => slot.resolved = slot.resolved.max(ts),
                    FeedEvent::Error(e) => {
                        error = Some(ChangefeedError::Feed {
                            table_id: slot.span.table_id,
                            detail: e.to_string(),
                        });
                        break 'spans;
                    }
                }
            }
            if taken >= EVENTS_PER_ACTIVATION {
                more = true;
            }
        }
        if let Some(e) = error {
            self.fail(e);
        }
        more
    }

    /// One activation. Most of a step's work is proportional to the spans the worker hosts,
    /// while what wakes it is usually one subscription's resolved ts. With many spans (100 000
    /// idle tables) the worker would spend a core re-scanning every span for each wake-up; so
    /// a step that moved only resolved timestamps (no row pulled or sent, no DDL) and took
    /// longer than [`BOOKKEEPING_STEP`] is followed by a pause of a few times its duration
    /// (at most [`BOOKKEEPING_PAUSE_MAX`]) in which wake-ups only schedule the next step. Rows
    /// wait at most that pause; small changefeeds never pause.
    fn step(
        &mut self,
        msgs: &mut Vec<DdlMsg>,
        ddl_frontier: Option<u64>,
        output: &mut TxnOutput<'_>,
    ) {
        let had_ddl = !msgs.is_empty();
        for m in msgs.drain(..) {
            self.ddls.insert((m.commit_ts, m.job.0.id), m);
        }
        if self.cap.is_none() || self.failed || self.ctx.shared.has_failed() {
            return;
        }
        let began = Instant::now();
        if let Some(until) = self.pause_until {
            if began < until && !had_ddl {
                self.activator.activate_after(until - began);
                return;
            }
            self.pause_until = None;
        }
        self.notify_pending.store(false, Ordering::Release);
        self.pulled_rows = 0;
        let emitted_before = self.ctx.shared.stats.rows_emitted.load(Ordering::Relaxed);
        self.step_inner(ddl_frontier, output);
        let took = began.elapsed();
        let emitted = self.ctx.shared.stats.rows_emitted.load(Ordering::Relaxed) != emitted_before;
        if took > BOOKKEEPING_STEP && self.pulled_rows == 0 && !emitted && !had_ddl {
            let pause = took
                .saturating_mul(BOOKKEEPING_PAUSE_FACTOR)
                .min(BOOKKEEPING_PAUSE_MAX);
            self.pause_until = Some(Instant::now() + pause);
        }
    }

    fn step_inner(&mut self, ddl_frontier: Option<u64>, output: &mut TxnOutput<'_>) {
        // The schema is complete for every ts below the DDL frontier.
        let ddl_bound = match ddl_frontier {
            Some(f) => Ts(f.saturating_sub(1)),
            None => Ts::MAX,
        };
        self.apply_ddls(ddl_bound);
        self.check_sabotage();
        let shared = Arc::clone(&self.ctx.shared);
        // What the sink drivers of the process hold, and whether they are saturated: holding
        // their share with a batch in flight (the sink will make room).
        let inflight = shared.stats.inflight_bytes.load(Ordering::Relaxed) as usize;
        let held =
            inflight.saturating_add(shared.stats.queued_bytes.load(Ordering::Relaxed) as usize);
        let saturated = held >= self.flow.driver_share && inflight > 0;
        let mut more = if saturated {
            shared.stats.throttled.fetch_add(1, Ordering::Relaxed);
            self.activator.activate_after(Duration::from_millis(5));
            false
        } else {
            self.pull(self.flow.buffer_share)
        };
        if self.failed {
            return;
        }
        let target = shared.target_ts;

        // Release every span's rows up to its own bound, while the drivers have room.
        {
            let Some(cap) = self.cap.as_ref() else { return };
            let mut session = output.session(cap);
            let mut error = None;
            let (mut txns, mut rows) = (0u64, 0u64);
            // The spans holding the capability back: the only ones released from while the
            // drivers are full of DML waiting behind a DDL.
            let lowest = self
                .spans
                .values()
                .filter(|s| !s.lost && s.sub.is_some())
                .map(|s| s.released)
                .min();
            let mut emitted = 0usize;
            let mut gated = false;
            let share = self.flow.driver_share;
            let chunk = self.flow.chunk_bytes;
            'spans: for slot in self.spans.values_mut() {
                if slot.lost || slot.sub.is_none() {
                    continue;
                }
                let mut bound = slot.resolved.min(ddl_bound);
                if let Some(e) = slot.end_ts {
                    bound = bound.min(e);
                }
                if let Some(t) = target {
                    bound = bound.min(t);
                }
                if bound <= slot.released {
                    continue;
                }
                let mut done = false;
                loop {
                    let full = held.saturating_add(emitted) >= share;
                    let escape = inflight == 0 && Some(slot.released) == lowest && emitted < share;
                    if full && !escape {
                        gated = true;
                        break;
                    }
                    let raw =
                        match slot
                            .buffer
                            .next_ready(bound, chunk, Some(&mut self.flow.spiller))
                        {
                            Ok(Some(raw)) => raw,
                            Ok(None) => {
                                done = true;
                                break;
                            }
                            Err(e) => {
                                error = Some(spill_error(slot.span.table_id, e));
                                break 'spans;
                            }
                        };
                    let safe = raw.commit_ts <= slot.safe_until;
                    match self.decoder.decode(slot.id, slot.span.table_id, raw, safe) {
                        Ok(Some(item)) => {
                            txns += 1;
                            rows += item.txn.rows.len() as u64;
                            emitted = emitted.saturating_add(item.bytes);
                            session.give(item);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            error = Some(e);
                            break 'spans;
                        }
                    }
                }
                if done {
                    slot.released = bound;
                } else {
                    // Everything below the first transaction still held has been sent (a
                    // transaction read back in chunks stays held until its last chunk).
                    let below = slot
                        .buffer
                        .min_commit_ts()
                        .map_or(bound, |c| Ts(c.0.saturating_sub(1)));
                    slot.released = slot.released.max(bound.min(below));
                }
            }
            drop(session);
            shared.stats.txns_emitted.fetch_add(txns, Ordering::Relaxed);
            shared.stats.rows_emitted.fetch_add(rows, Ordering::Relaxed);
            if let Some(e) = error {
                self.fail(e);
                return;
            }
            if gated && !saturated {
                // Room will come from the drivers' next batches; look again soon.
                self.activator.activate_after(Duration::from_millis(1));
            }
            // Rows still in memory past the share wait for their resolved ts (or, when the
            // drivers are full, for the sink: those are not spilled unless far past it).
            let mem: usize = self.spans.values().map(|s| s.buffer.bytes()).sum();
            let share = self.flow.buffer_share;
            if mem > share && (!gated || mem > share.saturating_mul(2)) {
                if let Err(e) = self.spill_over_share() {
                    self.fail(e);
                    return;
                }
                more = true;
            }
        }
        self.sync_quota();

        // Spans of dropped tables leave once their rows up to the drop are out.
        let before = self.spans.len();
        self.spans.retain(|_, s| match s.end_ts {
            Some(e) => s.resolved < e && !s.lost,
            None => true,
        });
        if self.spans.len() != before {
            self.spans_dirty = true;
        }

        // Move the capability.
        let Some(cap) = self.cap.as_mut() else { return };
        let mut low = ddl_bound;
        if let Some(t) = target {
            low = low.min(t);
        }
        for slot in self.spans.values() {
            if !slot.lost {
                low = low.min(slot.released);
            }
        }
        let cap_time = *cap.time();
        // Restored spans: caught up once they reach the capability; hosted again once what
        // they replayed is durable.
        let checkpoint_probe = &self.checkpoint_probe;
        for slot in self.spans.values_mut() {
            match slot.restore {
                Some(Restore::CatchingUp) if slot.released.0 >= cap_time.saturating_sub(1) => {
                    slot.restore = Some(Restore::Flushing(cap_time));
                }
                Some(Restore::Flushing(t)) if !checkpoint_probe.less_equal(&t) => {
                    slot.restore = None;
                    self.spans_dirty = true;
                }
                _ => {}
            }
        }
        if target.is_some_and(|t| low >= t) {
            // Done: stop reading, but keep reporting the span set the worker was hosting (the
            // final checkpoint is still checked against it).
            self.cap = None;
            for slot in self.spans.values_mut() {
                slot.sub = None;
                slot.buffer.clear();
            }
        } else {
            let new = low.0.saturating_add(1);
            if new > cap_time {
                cap.downgrade(&new);
            }
        }
        if self
            .spans
            .values()
            .any(|s| matches!(s.restore, Some(Restore::Flushing(_))))
        {
            self.activator.activate_after(Duration::from_millis(10));
        }
        if more {
            self.activator.activate();
        }
        // Buffers of spans that left, or were cleared, no longer hold memory or files.
        self.flow.spiller.collect();
        self.sync_quota();
        self.publish_spans();
    }

    /// Spills the newest transactions of the largest span buffers while this worker's
    /// buffers hold more than their share in memory, down to half the share.
    fn spill_over_share(&mut self) -> Result<(), ChangefeedError> {
        let share = self.flow.buffer_share;
        let mut mem: usize = self.spans.values().map(|s| s.buffer.bytes()).sum();
        if mem <= share {
            return Ok(());
        }
        let target = share / 2;
        let mut order: Vec<(usize, u128)> = self
            .spans
            .iter()
            .map(|(id, s)| (s.buffer.bytes(), *id))
            .filter(|(b, _)| *b > 0)
            .collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        for (bytes, id) in order {
            if mem <= target {
                break;
            }
            let Some(slot) = self.spans.get_mut(&id) else {
                continue;
            };
            let keep = bytes.saturating_sub(mem - target);
            let moved = slot
                .buffer
                .spill(&mut self.flow.spiller, keep)
                .map_err(|e| spill_error(slot.span.table_id, e))?;
            mem = mem.saturating_sub(moved);
        }
        let stats = &self.ctx.shared.stats;
        let (bytes, files) = (
            self.flow.spiller.bytes_written(),
            self.flow.spiller.files_created(),
        );
        stats
            .spilled_bytes
            .fetch_add(bytes - self.flow.published_bytes, Ordering::Relaxed);
        stats
            .spill_files
            .fetch_add(files - self.flow.published_files, Ordering::Relaxed);
        self.flow.published_bytes = bytes;
        self.flow.published_files = files;
        self.sync_quota();
        Ok(())
    }

    /// Makes the bytes this worker counts in the feed's quota those its span buffers hold in
    /// memory.
    fn sync_quota(&mut self) {
        let mem: usize = self.spans.values().map(|s| s.buffer.bytes()).sum();
        self.ctx.feed.quota().adjust(self.flow.counted, mem);
        self.flow.counted = mem;
    }

    fn publish_spans(&mut self) {
        let shared = &self.ctx.shared;
        if self.spans_dirty {
            let mut fp = SpanSetFingerprint::from_ids(
                self.spans.values().filter(|s| s.hosted()).map(|s| s.id),
            );
            if self.index == DDL_OWNER {
                fp.insert(routing::ddl_span().span_id());
            }
            shared.report_spans(self.index, fp, self.span_version);
            self.spans_dirty = false;
            let mut map = shared.spans.lock();
            map.retain(|id, p| p.worker != self.index || self.spans.contains_key(id));
        }
        if self.last_diag.elapsed() < diagnostics_every(self.spans.len()) {
            return;
        }
        self.last_diag = Instant::now();
        let mut map = shared.spans.lock();
        for slot in self.spans.values() {
            let diagnostics = slot.sub.as_ref().map(Subscription::diagnostics);
            let e = map.entry(slot.id).or_insert_with(|| SpanProgress {
                span: slot.span.clone(),
                worker: self.index,
                resolved_ts: slot.resolved,
                released_ts: slot.released,
                flushed_ts: Ts::ZERO,
                buffered_rows: 0,
                diagnostics: None,
            });
            e.resolved_ts = slot.resolved;
            e.released_ts = slot.released;
            e.buffered_rows = slot.buffer.rows();
            e.diagnostics = diagnostics;
        }
    }
}

fn spill_error(table_id: i64, e: SpillError) -> ChangefeedError {
    ChangefeedError::Feed {
        table_id,
        detail: format!("spilling rows to disk: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_refresh_slows_down_with_many_spans() {
        assert_eq!(diagnostics_every(0), DIAGNOSTICS_EVERY);
        assert_eq!(diagnostics_every(10_000), DIAGNOSTICS_EVERY);
        assert_eq!(diagnostics_every(25_000), Duration::from_millis(250));
        assert_eq!(diagnostics_every(100_000), Duration::from_secs(1));
    }
}
