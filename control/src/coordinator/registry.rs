//! The changefeeds this coordinator runs, shared between its control loop (which starts, stops
//! and checkpoints them) and the HTTP API / metrics (which read their watermarks through the
//! [`WatermarkSource`] trait).
//!
//! Readers only take the lock long enough to read a few atomics; nothing they do can block the
//! control loop or a dataflow worker. The diagnosis document answers "why is the checkpoint
//! stuck": a frozen span-set checksum, the slowest span and the region holding it back (with the
//! feed's reason), or a sink that has not made the received data durable yet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tidal_dataflow::{ChangefeedHandle, ChecksumState, SpanProgress};
use tidal_ingest::feed::StuckReason;
use tidal_model::Ts;
use tidal_sinks::Sink;

use super::failure::{Backoff, Failure};
use crate::meta::ChangefeedRef;
use crate::service::{WatermarkSource, Watermarks, rfc3339_from_ms, unix_ms_now};

/// How many of the slowest spans the diagnosis lists.
pub const DIAGNOSIS_SPANS: usize = 5;

/// One running dataflow and what the coordinator knows about it.
pub(crate) struct RunningFeed {
    pub(crate) cf: ChangefeedRef,
    /// The epoch this run was started under (bumped before it started).
    pub(crate) epoch: u64,
    pub(crate) handle: ChangefeedHandle,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) started: Instant,
    /// The checkpoint it started from.
    pub(crate) start_checkpoint: u64,
    /// Target ts (0 = none).
    pub(crate) target_ts: u64,
    /// The last checkpoint persisted by this run (starts at `start_checkpoint`).
    pub(crate) last_saved: AtomicU64,
    /// The last resolved ts persisted with it (starts at the persisted one).
    pub(crate) last_saved_resolved: AtomicU64,
    /// Rows / bytes already published to the sink metrics.
    pub(crate) published_rows: AtomicU64,
    pub(crate) published_bytes: AtomicU64,
    pub(crate) published_batches: AtomicU64,
    /// For a multi-process run: its processes (this one first).
    pub(crate) members: Option<Vec<super::cluster::Member>>,
    /// For a multi-process run: the assignment as published.
    pub(crate) assignment: Option<Vec<u8>>,
}

impl std::fmt::Debug for RunningFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningFeed")
            .field("cf", &self.cf)
            .field("epoch", &self.epoch)
            .field("start_checkpoint", &self.start_checkpoint)
            .field("last_saved", &self.last_saved.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What the coordinator remembers about one changefeed between runs.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) running: Option<Arc<RunningFeed>>,
    /// Set while the changefeed is in `warning`, waiting for its next restart.
    pub(crate) backoff: Option<Backoff>,
    /// The epoch of the run whose failure armed `backoff`.
    pub(crate) backoff_epoch: u64,
    pub(crate) last_failure: Option<Failure>,
    /// Dataflow starts so far (by this coordinator).
    pub(crate) starts: u64,
}

/// The running-changefeed registry; implements [`WatermarkSource`] for the service.
#[derive(Debug, Default)]
pub struct Registry {
    slots: Mutex<BTreeMap<ChangefeedRef, Slot>>,
    owner: AtomicBool,
    capture_id: Mutex<String>,
}

impl Registry {
    pub(crate) fn new(capture_id: &str) -> Self {
        Registry {
            slots: Mutex::new(BTreeMap::new()),
            owner: AtomicBool::new(false),
            capture_id: Mutex::new(capture_id.to_string()),
        }
    }

    pub(crate) fn set_owner(&self, owner: bool) {
        self.owner.store(owner, Ordering::Release);
    }

    /// Whether this coordinator currently owns the cluster's changefeeds.
    pub fn is_owner(&self) -> bool {
        self.owner.load(Ordering::Acquire)
    }

    /// The changefeeds running here, with the epoch of each run.
    pub fn running(&self) -> Vec<(ChangefeedRef, u64)> {
        self.slots
            .lock()
            .iter()
            .filter_map(|(cf, s)| s.running.as_ref().map(|r| (cf.clone(), r.epoch)))
            .collect()
    }

    /// How many times this coordinator started `cf`'s dataflow.
    pub fn starts(&self, cf: &ChangefeedRef) -> u64 {
        self.slots.lock().get(cf).map_or(0, |s| s.starts)
    }

    /// Runs `f` on the live dataflow handle of changefeed `id`, if it runs here (for embedding
    /// programs and tests: per-span progress, counters, the dataflow's test hooks).
    pub fn with_handle<R>(&self, id: &str, f: impl FnOnce(&ChangefeedHandle) -> R) -> Option<R> {
        let feed = self.find(id, |_, s| s.running.clone()).flatten()?;
        Some(f(&feed.handle))
    }

    pub(crate) fn running_feed(&self, cf: &ChangefeedRef) -> Option<Arc<RunningFeed>> {
        self.slots.lock().get(cf).and_then(|s| s.running.clone())
    }

    pub(crate) fn all_running(&self) -> Vec<Arc<RunningFeed>> {
        self.slots
            .lock()
            .values()
            .filter_map(|s| s.running.clone())
            .collect()
    }

    pub(crate) fn known(&self) -> Vec<ChangefeedRef> {
        self.slots.lock().keys().cloned().collect()
    }

    pub(crate) fn with_slot<R>(&self, cf: &ChangefeedRef, f: impl FnOnce(&mut Slot) -> R) -> R {
        let mut slots = self.slots.lock();
        f(slots.entry(cf.clone()).or_default())
    }

    pub(crate) fn take_running(&self, cf: &ChangefeedRef) -> Option<Arc<RunningFeed>> {
        self.slots.lock().get_mut(cf).and_then(|s| s.running.take())
    }

    pub(crate) fn forget(&self, cf: &ChangefeedRef) -> Option<Arc<RunningFeed>> {
        self.slots.lock().remove(cf).and_then(|s| s.running)
    }

    fn find<R>(&self, id: &str, f: impl FnOnce(&ChangefeedRef, &Slot) -> R) -> Option<R> {
        let slots = self.slots.lock();
        slots
            .iter()
            .find(|(cf, _)| cf.id == id)
            .map(|(cf, s)| f(cf, s))
    }
}

fn watermarks_of(feed: &RunningFeed) -> Watermarks {
    let mut w = feed.handle.watermarks();
    // The API reports what was persisted, not the live frontiers: a restart (of this process,
    // or of the run after an error or a membership change) resumes from the persisted
    // checkpoint, and the live values of the new run start there — reporting the old run's
    // live values would make the API's watermarks go backwards. In a multi-process run the
    // live frontier may also be ahead of what every process vouches for. The cost is up to one
    // `checkpoint_interval` of extra lag in what the API shows.
    let saved = feed.last_saved.load(Ordering::Acquire);
    w.checkpoint_ts = Ts(saved);
    w.resolved_ts = Ts(feed.last_saved_resolved.load(Ordering::Acquire).max(saved));
    let puller = feed
        .handle
        .slowest_spans(1)
        .first()
        .map_or(w.resolved_ts.0, |s| s.resolved_ts.0);
    Watermarks {
        checkpoint_ts: w.checkpoint_ts.0,
        resolved_ts: w.resolved_ts.0,
        last_synced_ts: w.last_synced_ts.0,
        // The slowest span's resolved ts is a diagnostics sample refreshed every few hundred ms;
        // the dataflow's own resolved ts is live and never below the checkpoint. The puller has
        // received at least that much, so never report less.
        puller_resolved_ts: puller.max(w.resolved_ts.0),
        checksum_ok: feed.handle.checkpoint_persistable(),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn checksum_name(s: ChecksumState) -> &'static str {
    match s {
        ChecksumState::Uninitialized => "UNINITIALIZED",
        ChecksumState::Mismatch => "MISMATCH",
        ChecksumState::Match => "MATCH",
    }
}

/// (short code, explanation) of why a region holds its span back.
fn stuck_reason(r: &StuckReason) -> (&'static str, String) {
    match r {
        StuckReason::NotInitialized => (
            "not_initialized",
            "its initial scan has not finished".to_string(),
        ),
        StuckReason::LockHeld { start_ts } => (
            "lock_held",
            format!(
                "it holds a lock of the uncommitted transaction with start ts {}",
                start_ts.0
            ),
        ),
        StuckReason::ErrorBackoff { error } => (
            "error_backoff",
            format!("it is not subscribed; retrying after: {error}"),
        ),
        StuckReason::Unknown => (
            "unknown",
            "subscribed and initialized, but TiKV does not advance its resolved ts".to_string(),
        ),
    }
}

fn span_json(p: &SpanProgress, now: Instant, now_ms: u64) -> Value {
    let mut v = json!({
        "table_id": p.span.table_id,
        "span": {"start": hex(&p.span.start), "end": hex(&p.span.end)},
        "worker": p.worker,
        "resolved_ts": p.resolved_ts.0,
        "released_ts": p.released_ts.0,
        "flushed_ts": p.flushed_ts.0,
        "buffered_rows": p.buffered_rows,
        "region_id": Value::Null,
        "region_resolved_ts": Value::Null,
        "stuck_since": Value::Null,
        "stuck_for_ms": Value::Null,
        "reason": Value::Null,
        "reason_detail": Value::Null,
    });
    if let Some(d) = &p.diagnostics {
        v["regions"] = json!(d.regions);
        v["unsubscribed_regions"] = json!(d.unsubscribed);
        v["region_retries"] = json!(d.retries);
        if let Some(r) = &d.slowest_region {
            let stuck_for = now.saturating_duration_since(r.stuck_since);
            let stuck_ms = u64::try_from(stuck_for.as_millis()).unwrap_or(u64::MAX);
            let (code, detail) = stuck_reason(&r.reason);
            v["region_id"] = json!(r.region_id);
            v["region_resolved_ts"] = json!(r.resolved_ts.0);
            v["stuck_since"] = json!(rfc3339_from_ms(now_ms.saturating_sub(stuck_ms)));
            v["stuck_for_ms"] = json!(stuck_ms);
            v["reason"] = json!(code);
            v["reason_detail"] = json!(detail);
        }
    }
    v
}

/// How far (in physical time) the live checkpoint may trail the live resolved ts before the
/// diagnosis blames the sink: below this, data is simply in flight (a batch being written takes
/// a few hundred ms), and what holds the checkpoint is whatever holds the resolved ts.
const SINK_BEHIND_MS: u64 = 1_000;

/// The one-line answer to "why is the checkpoint where it is", from the live watermarks.
fn verdict(feed: &RunningFeed, w: &tidal_dataflow::Watermarks, slowest: &[SpanProgress]) -> String {
    if let Some(e) = feed.handle.error() {
        return format!("the dataflow stopped with an error: {e}");
    }
    let bad: Vec<String> = feed
        .handle
        .checksum_states()
        .into_iter()
        .filter(|(_, s)| *s != ChecksumState::Match)
        .map(|(worker, s)| format!("worker {worker} {}", checksum_name(s)))
        .collect();
    if !bad.is_empty() {
        return format!(
            "the checkpoint is frozen: span-set checksum not MATCH ({}); it stays frozen until \
             every worker hosts exactly the spans it should",
            bad.join(", ")
        );
    }
    let gap_ms = w
        .resolved_ts
        .physical_ms()
        .saturating_sub(w.checkpoint_ts.physical_ms());
    if gap_ms > SINK_BEHIND_MS {
        return format!(
            "the sink is behind: data up to resolved ts {} was received, durable up to {} \
             ({gap_ms} ms behind)",
            w.resolved_ts.0, w.checkpoint_ts.0
        );
    }
    match slowest.first() {
        Some(p) => match p
            .diagnostics
            .as_ref()
            .and_then(|d| d.slowest_region.as_ref())
        {
            Some(r) => format!(
                "the resolved ts is held by table {} (span resolved ts {}), slowest region {} at \
                 {}: {}",
                p.span.table_id,
                p.resolved_ts.0,
                r.region_id,
                r.resolved_ts.0,
                stuck_reason(&r.reason).1
            ),
            None => format!(
                "the resolved ts is held by table {} at {}",
                p.span.table_id, p.resolved_ts.0
            ),
        },
        None => "no table spans are hosted; the checkpoint follows the DDL stream".to_string(),
    }
}

fn running_diagnosis(feed: &RunningFeed) -> Value {
    let now = Instant::now();
    let now_ms = unix_ms_now();
    let w = watermarks_of(feed);
    let live = feed.handle.watermarks();
    let slowest = feed.handle.slowest_spans(DIAGNOSIS_SPANS);
    let stats = feed.handle.stats();
    json!({
        "running": true,
        "epoch": feed.epoch,
        "running_for_ms": u64::try_from(now.saturating_duration_since(feed.started).as_millis())
            .unwrap_or(u64::MAX),
        "start_checkpoint_ts": feed.start_checkpoint,
        "processes": feed.members.as_ref().map(|m| {
            m.iter().map(|m| json!({"capture_id": m.capture_id, "process": m.process})).collect::<Vec<_>>()
        }),
        "target_ts": feed.target_ts,
        "saved_checkpoint_ts": feed.last_saved.load(Ordering::Acquire),
        "watermarks": w,
        "live_watermarks": {
            "checkpoint_ts": live.checkpoint_ts.0,
            "resolved_ts": live.resolved_ts.0,
            "last_synced_ts": live.last_synced_ts.0,
        },
        "checkpoint_persistable": w.checksum_ok,
        "checksum": feed.handle.checksum_states().into_iter().map(|(worker, s)| {
            json!({"worker": worker, "state": checksum_name(s)})
        }).collect::<Vec<_>>(),
        "slowest_spans": slowest.iter().map(|p| span_json(p, now, now_ms)).collect::<Vec<_>>(),
        "stuck": verdict(feed, &live, &slowest),
        "stats": {
            "txns_emitted": stats.txns_emitted,
            "rows_emitted": stats.rows_emitted,
            "rows_flushed": stats.rows_flushed,
            "bytes_flushed": stats.bytes_flushed,
            "batches_flushed": stats.batches_flushed,
            "ddl_executed": stats.ddl_executed,
            "inflight_bytes": stats.inflight_bytes,
            "throttled": stats.throttled,
        },
    })
}

impl WatermarkSource for Registry {
    fn is_owner(&self) -> Option<bool> {
        Some(Registry::is_owner(self))
    }

    fn watermarks(&self, changefeed: &str) -> Option<Watermarks> {
        let feed = self.find(changefeed, |_, s| s.running.clone()).flatten()?;
        Some(watermarks_of(&feed))
    }

    fn diagnosis(&self, changefeed: &str) -> Option<Value> {
        let (running, backoff, failure, starts) = self.find(changefeed, |_, s| {
            (
                s.running.clone(),
                s.backoff.clone(),
                s.last_failure.clone(),
                s.starts,
            )
        })?;
        let mut v = match &running {
            Some(feed) => running_diagnosis(feed),
            None => json!({"running": false}),
        };
        v["coordinator"] = json!({
            "capture_id": self.capture_id.lock().clone(),
            "is_owner": self.is_owner(),
        });
        v["starts"] = json!(starts);
        if let Some(f) = failure {
            v["last_failure"] =
                json!({"code": f.code, "message": f.message, "permanent": f.permanent});
        }
        if let Some(b) = backoff {
            let now = Instant::now();
            v["retry"] = json!({
                "attempts": b.attempts,
                "backoff_ms": u64::try_from(b.delay.as_millis()).unwrap_or(u64::MAX),
                "next_retry_in_ms": u64::try_from(b.next_at.saturating_duration_since(now).as_millis())
                    .unwrap_or(u64::MAX),
            });
            if running.is_none() {
                v["stuck"] = json!("the changefeed is in warning, waiting to restart");
            }
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_pairs() {
        assert_eq!(hex(&[0x74, 0x80, 0, 0xff]), "748000ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn unknown_changefeed_has_no_watermarks() {
        let r = Registry::new("c1");
        assert_eq!(r.watermarks("nope"), None);
        assert_eq!(r.diagnosis("nope"), None);
        let cf = ChangefeedRef::new("cf").unwrap();
        r.with_slot(&cf, |s| {
            s.last_failure = Some(Failure::retryable("CDC:X", "boom"));
            s.starts = 2;
        });
        let d = r.diagnosis("cf").unwrap();
        assert_eq!(d["running"], json!(false));
        assert_eq!(d["starts"], json!(2));
        assert_eq!(d["last_failure"]["code"], json!("CDC:X"));
        assert_eq!(d["coordinator"]["capture_id"], json!("c1"));
        assert_eq!(r.watermarks("cf"), None);
    }
}
