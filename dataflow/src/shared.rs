//! State shared between a process's workers and its [`ChangefeedHandle`](crate::ChangefeedHandle).
//!
//! Workers write, the handle reads. Each worker reads its own probes (the frontiers are global:
//! every worker sees the same frontier of a stream, whoever holds the capabilities), and
//! publishes `(resolved, checkpoint)` together with the fingerprint of the spans it hosts in
//! its [`WorkerSlot`]. `Shared::aggregate` combines the slots under one lock:
//!
//! - resolved-ts = min over workers, checkpoint-ts = min over workers, both only ever raised
//!   (`fetch_max`), so neither regresses; each slot has checkpoint ≤ resolved (the checkpoint
//!   probe sits downstream of the resolved probe), so the minima keep that order;
//! - the checkpoint is raised only while every local worker's span-set fingerprint MATCHes its
//!   expected set (computed here from the schema store and the routing rule, independently of
//!   what the worker thinks it hosts): a worker that silently lost a span would otherwise let
//!   the frontier pass data nobody wrote;
//! - after an error nothing is raised any more.
//!
//! In a multi-process cluster a process only sees its own workers' slots. Every worker then
//! also sends its checksum state, with the checkpoint its process vouches for, to worker 0
//! inside the dataflow (see `run`); the process hosting worker 0 keeps them as *remote*
//! states, and `Shared::persistable_checkpoint` is the checkpoint that every worker of the
//! cluster vouches for — `None` while any of them is not MATCH or has not reported.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tidal_ingest::feed::SpanDiagnostics;
use tidal_ingest::schema::{SchemaStore, TableFilter};
use tidal_model::{SpanSetFingerprint, TableSpan, Ts};

use crate::routing;
use crate::spec::ChangefeedError;

/// A worker's span-set checksum state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumState {
    /// The worker has not reported yet.
    Uninitialized,
    /// The worker hosts a different set of spans than it should.
    Mismatch,
    /// The worker hosts exactly the spans it should.
    Match,
}

impl ChecksumState {
    /// A one-byte code, for the reports that cross processes.
    pub(crate) fn code(self) -> u8 {
        match self {
            ChecksumState::Uninitialized => 0,
            ChecksumState::Mismatch => 1,
            ChecksumState::Match => 2,
        }
    }

    /// Back from [`ChecksumState::code`]; unknown codes read as `Uninitialized`.
    pub(crate) fn from_code(code: u8) -> ChecksumState {
        match code {
            1 => ChecksumState::Mismatch,
            2 => ChecksumState::Match,
            _ => ChecksumState::Uninitialized,
        }
    }
}

/// What one worker last published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSlot {
    /// Resolved ts seen by the worker's probe.
    pub resolved: Ts,
    /// Checkpoint ts seen by the worker's probe.
    pub checkpoint: Ts,
    /// Fingerprint of the spans the worker hosts.
    pub fingerprint: SpanSetFingerprint,
    /// The schema ts the span set corresponds to (the last DDL the source applied).
    pub span_version: Ts,
    /// Has the source reported its span set yet.
    pub spans_reported: bool,
    /// Has the worker reported watermarks yet.
    pub watermarks_reported: bool,
}

/// Progress of one span, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanProgress {
    /// The span.
    pub span: TableSpan,
    /// The worker hosting it.
    pub worker: usize,
    /// Its resolved ts (from the feed).
    pub resolved_ts: Ts,
    /// Its rows up to here have been handed downstream.
    pub released_ts: Ts,
    /// Largest commit ts of its rows made durable.
    pub flushed_ts: Ts,
    /// Rows buffered, waiting for the resolved ts.
    pub buffered_rows: usize,
    /// The feed's diagnostics (slowest region and why), refreshed periodically.
    pub diagnostics: Option<SpanDiagnostics>,
}

/// Counters of one changefeed in one process.
#[derive(Debug, Default)]
pub struct Stats {
    /// Transactions handed downstream by the sources.
    pub txns_emitted: AtomicU64,
    /// Row changes handed downstream by the sources.
    pub rows_emitted: AtomicU64,
    /// Row changes made durable.
    pub rows_flushed: AtomicU64,
    /// Bytes made durable.
    pub bytes_flushed: AtomicU64,
    /// Batches made durable.
    pub batches_flushed: AtomicU64,
    /// DDL run in the sink.
    pub ddl_executed: AtomicU64,
    /// DDL barrier messages: DDL records received by sink drivers plus "done" records received.
    pub barrier_messages: AtomicU64,
    /// Bytes handed to the sink and not yet durable.
    pub inflight_bytes: AtomicU64,
    /// Times a source skipped pulling because the sink was behind.
    pub throttled: AtomicU64,
    /// Bytes of decoded transactions waiting in the sink drivers (not yet handed to the sink).
    pub queued_bytes: AtomicU64,
    /// Row bytes written to spill files.
    pub spilled_bytes: AtomicU64,
    /// Spill files created.
    pub spill_files: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Transactions handed downstream by the sources.
    pub txns_emitted: u64,
    /// Row changes handed downstream by the sources.
    pub rows_emitted: u64,
    /// Row changes made durable.
    pub rows_flushed: u64,
    /// Bytes made durable.
    pub bytes_flushed: u64,
    /// Batches made durable.
    pub batches_flushed: u64,
    /// DDL run in the sink.
    pub ddl_executed: u64,
    /// DDL barrier messages so far.
    pub barrier_messages: u64,
    /// Bytes in flight to the sink now.
    pub inflight_bytes: u64,
    /// Times a source held back because the sink was behind.
    pub throttled: u64,
    /// Bytes waiting in the sink drivers now.
    pub queued_bytes: u64,
    /// Row bytes written to spill files so far.
    pub spilled_bytes: u64,
    /// Spill files created so far.
    pub spill_files: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            txns_emitted: l(&self.txns_emitted),
            rows_emitted: l(&self.rows_emitted),
            rows_flushed: l(&self.rows_flushed),
            bytes_flushed: l(&self.bytes_flushed),
            batches_flushed: l(&self.batches_flushed),
            ddl_executed: l(&self.ddl_executed),
            barrier_messages: l(&self.barrier_messages),
            inflight_bytes: l(&self.inflight_bytes),
            throttled: l(&self.throttled),
            queued_bytes: l(&self.queued_bytes),
            spilled_bytes: l(&self.spilled_bytes),
            spill_files: l(&self.spill_files),
        }
    }
}

/// A test hook's request to a source.
#[derive(Debug, Default)]
pub(crate) struct Sabotage {
    /// Physical table ids whose spans the hosting worker must silently drop.
    pub(crate) dropped: HashSet<i64>,
}

/// Everything a process's workers and its handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: String,
    pub(crate) start_ts: Ts,
    pub(crate) target_ts: Option<Ts>,
    pub(crate) peers: usize,
    pub(crate) local_workers: Vec<usize>,
    pub(crate) store: SchemaStore,
    pub(crate) filter: TableFilter,
    pub(crate) resolved: AtomicU64,
    pub(crate) checkpoint: AtomicU64,
    pub(crate) last_synced: AtomicU64,
    pub(crate) stop: AtomicBool,
    pub(crate) finished: AtomicU64,
    pub(crate) stats: Stats,
    pub(crate) max_inflight_bytes: u64,
    slots: Mutex<BTreeMap<usize, WorkerSlot>>,
    expected: Mutex<HashMap<(usize, Ts), SpanSetFingerprint>>,
    states: Mutex<BTreeMap<usize, ChecksumState>>,
    /// Checksum states other processes' workers reported (on worker 0's process), with the
    /// checkpoint their process published at the time.
    remote: Mutex<BTreeMap<usize, (ChecksumState, Ts)>>,
    error: Mutex<Option<ChangefeedError>>,
    pub(crate) spans: Mutex<HashMap<u128, SpanProgress>>,
    pub(crate) sabotage: Mutex<Sabotage>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: String,
        start_ts: Ts,
        target_ts: Option<Ts>,
        peers: usize,
        local_workers: Vec<usize>,
        store: SchemaStore,
        filter: TableFilter,
        max_inflight_bytes: u64,
    ) -> Shared {
        let slots = local_workers
            .iter()
            .map(|w| {
                (
                    *w,
                    WorkerSlot {
                        resolved: start_ts,
                        checkpoint: start_ts,
                        fingerprint: SpanSetFingerprint::default(),
                        span_version: start_ts,
                        spans_reported: false,
                        watermarks_reported: false,
                    },
                )
            })
            .collect();
        let states = local_workers
            .iter()
            .map(|w| (*w, ChecksumState::Uninitialized))
            .collect();
        Shared {
            id,
            start_ts,
            target_ts,
            peers,
            local_workers,
            store,
            filter,
            resolved: AtomicU64::new(start_ts.0),
            checkpoint: AtomicU64::new(start_ts.0),
            last_synced: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            finished: AtomicU64::new(0),
            stats: Stats::default(),
            max_inflight_bytes,
            slots: Mutex::new(slots),
            expected: Mutex::new(HashMap::new()),
            states: Mutex::new(states),
            remote: Mutex::new(BTreeMap::new()),
            error: Mutex::new(None),
            spans: Mutex::new(HashMap::new()),
            sabotage: Mutex::new(Sabotage::default()),
        }
    }

    /// Records the first error; later ones are logged only.
    pub(crate) fn fail(&self, e: ChangefeedError) {
        let mut slot = self.error.lock();
        if slot.is_none() {
            tracing::error!(changefeed = %self.id, error = %e, "changefeed failed");
            *slot = Some(e);
        } else {
            tracing::warn!(changefeed = %self.id, error = %e, "further changefeed error");
        }
    }

    pub(crate) fn error(&self) -> Option<ChangefeedError> {
        self.error.lock().clone()
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.error.lock().is_some()
    }

    /// A source reports the spans it hosts.
    pub(crate) fn report_spans(&self, worker: usize, fp: SpanSetFingerprint, version: Ts) {
        let mut slots = self.slots.lock();
        if let Some(s) = slots.get_mut(&worker) {
            s.fingerprint = fp;
            s.span_version = version;
            s.spans_reported = true;
        }
    }

    /// A worker reports what its probes see.
    pub(crate) fn report_watermarks(&self, worker: usize, resolved: Ts, checkpoint: Ts) {
        {
            let mut slots = self.slots.lock();
            if let Some(s) = slots.get_mut(&worker) {
                // Frontiers never regress; keep the slot monotone even if a reading is stale.
                s.resolved = s.resolved.max(resolved);
                s.checkpoint = s.checkpoint.max(checkpoint.min(s.resolved));
                s.watermarks_reported = true;
            }
        }
        self.aggregate();
    }

    fn expected_fingerprint(&self, worker: usize, version: Ts) -> SpanSetFingerprint {
        if let Some(fp) = self.expected.lock().get(&(worker, version)) {
            return *fp;
        }
        let spans = routing::data_spans_at(&self.store, &self.filter, version);
        let fp = routing::expected_fingerprint(&spans, worker, self.peers);
        let mut cache = self.expected.lock();
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert((worker, version), fp);
        fp
    }

    /// Recomputes checksum states and raises the published watermarks where allowed.
    pub(crate) fn aggregate(&self) {
        let slots: Vec<(usize, WorkerSlot)> =
            self.slots.lock().iter().map(|(w, s)| (*w, *s)).collect();
        let mut states = BTreeMap::new();
        for (w, s) in &slots {
            let st = if !s.spans_reported {
                ChecksumState::Uninitialized
            } else if self.expected_fingerprint(*w, s.span_version) == s.fingerprint {
                ChecksumState::Match
            } else {
                ChecksumState::Mismatch
            };
            states.insert(*w, st);
        }
        *self.states.lock() = states.clone();
        if self.has_failed() {
            return;
        }
        if slots.is_empty() || slots.iter().any(|(_, s)| !s.watermarks_reported) {
            return;
        }
        let resolved = slots
            .iter()
            .map(|(_, s)| s.resolved)
            .min()
            .unwrap_or(self.start_ts);
        let checkpoint = slots
            .iter()
            .map(|(_, s)| s.checkpoint)
            .min()
            .unwrap_or(self.start_ts);
        self.resolved.fetch_max(resolved.0, Ordering::AcqRel);
        if states.values().all(|s| *s == ChecksumState::Match) {
            self.checkpoint
                .fetch_max(checkpoint.min(resolved).0, Ordering::AcqRel);
        }
    }

    /// Local workers' states, plus (on worker 0's process of a cluster) the states the other
    /// processes' workers reported.
    pub(crate) fn checksum_states(&self) -> Vec<(usize, ChecksumState)> {
        let mut all: BTreeMap<usize, ChecksumState> = self
            .remote
            .lock()
            .iter()
            .map(|(w, (s, _))| (*w, *s))
            .collect();
        all.extend(self.states.lock().iter().map(|(w, s)| (*w, *s)));
        all.into_iter().collect()
    }

    /// The last computed state of local worker `worker`.
    pub(crate) fn local_state(&self, worker: usize) -> ChecksumState {
        self.states
            .lock()
            .get(&worker)
            .copied()
            .unwrap_or(ChecksumState::Uninitialized)
    }

    /// Records a report of another process's worker. Reports about local workers, or about
    /// workers that do not exist, are ignored.
    pub(crate) fn note_remote(&self, worker: usize, state: ChecksumState, checkpoint: Ts) {
        if worker >= self.peers || self.local_workers.contains(&worker) {
            return;
        }
        self.remote.lock().insert(worker, (state, checkpoint));
    }

    /// The checkpoint every worker of the cluster vouches for: this process's checkpoint,
    /// capped by what each remote worker's process published while that worker MATCHed.
    /// `None` after an error, or while any worker (local or remote) is not MATCH or has not
    /// reported. In a single process: the checkpoint, while every worker MATCHes.
    pub(crate) fn persistable_checkpoint(&self) -> Option<Ts> {
        if self.has_failed() {
            return None;
        }
        self.aggregate();
        if self
            .states
            .lock()
            .values()
            .any(|s| *s != ChecksumState::Match)
        {
            return None;
        }
        let mut ckpt = Ts(self.checkpoint.load(Ordering::Acquire));
        let remote = self.remote.lock();
        for w in (0..self.peers).filter(|w| !self.local_workers.contains(w)) {
            match remote.get(&w) {
                Some((ChecksumState::Match, c)) => ckpt = ckpt.min(*c),
                _ => return None,
            }
        }
        Some(ckpt)
    }

    pub(crate) fn note_synced(&self, ts: Ts) {
        self.last_synced.fetch_max(ts.0, Ordering::AcqRel);
    }
}
