//! [`ChangefeedHandle`]: the control plane's view of a running changefeed in this process.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tidal_model::Ts;
use timely::communication::WorkerGuards;

use crate::shared::{ChecksumState, Shared, SpanProgress, StatsSnapshot};
use crate::spec::ChangefeedError;

/// The three watermarks of a changefeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// Every change with `commit_ts <=` this has been received.
    pub resolved_ts: Ts,
    /// Every change with `commit_ts <=` this is durable in the sink.
    pub checkpoint_ts: Ts,
    /// The largest commit ts made durable (0 before anything was).
    pub last_synced_ts: Ts,
}

/// A running changefeed. Dropping it stops the workers and waits for them.
pub struct ChangefeedHandle {
    shared: Arc<Shared>,
    guards: Mutex<Option<WorkerGuards<()>>>,
}

impl std::fmt::Debug for ChangefeedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangefeedHandle")
            .field("id", &self.shared.id)
            .field("watermarks", &self.watermarks())
            .finish_non_exhaustive()
    }
}

impl ChangefeedHandle {
    pub(crate) fn new(shared: Arc<Shared>, guards: WorkerGuards<()>) -> ChangefeedHandle {
        ChangefeedHandle {
            shared,
            guards: Mutex::new(Some(guards)),
        }
    }

    /// The changefeed id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Resolved ts: every change committed at or below it has been received.
    pub fn resolved_ts(&self) -> Ts {
        Ts(self.shared.resolved.load(Ordering::Acquire))
    }

    /// Checkpoint ts: every change committed at or below it is durable in the sink. Never
    /// above [`ChangefeedHandle::resolved_ts`], never decreasing, and frozen while a worker's
    /// span set does not match what it should host.
    pub fn checkpoint_ts(&self) -> Ts {
        Ts(self.shared.checkpoint.load(Ordering::Acquire))
    }

    /// The largest commit ts made durable (rows and DDL).
    pub fn last_synced_ts(&self) -> Ts {
        Ts(self.shared.last_synced.load(Ordering::Acquire))
    }

    /// All three watermarks. The checkpoint is read first, so `checkpoint <= resolved` holds
    /// for the returned values too.
    pub fn watermarks(&self) -> Watermarks {
        let checkpoint_ts = self.checkpoint_ts();
        let resolved_ts = self.resolved_ts();
        Watermarks {
            resolved_ts,
            checkpoint_ts,
            last_synced_ts: self.last_synced_ts(),
        }
    }

    /// The error that stopped the changefeed's watermarks, if one did.
    pub fn error(&self) -> Option<ChangefeedError> {
        self.shared.error()
    }

    /// Span-set checksum state of each local worker, by global worker index.
    pub fn checksum_states(&self) -> Vec<(usize, ChecksumState)> {
        self.shared.aggregate();
        self.shared.checksum_states()
    }

    /// True if the checkpoint may be persisted: no error and every local worker MATCHes.
    pub fn checkpoint_persistable(&self) -> bool {
        self.error().is_none()
            && self
                .checksum_states()
                .iter()
                .all(|(_, s)| *s == ChecksumState::Match)
    }

    /// The `n` spans with the smallest resolved ts (ties: smallest released ts), with the
    /// feed's diagnostics naming the slowest region and why it is behind.
    pub fn slowest_spans(&self, n: usize) -> Vec<SpanProgress> {
        let mut all: Vec<SpanProgress> = self.shared.spans.lock().values().cloned().collect();
        all.sort_by_key(|p| (p.resolved_ts, p.released_ts, p.span.table_id));
        all.truncate(n);
        all
    }

    /// Progress of every hosted span.
    pub fn spans(&self) -> Vec<SpanProgress> {
        let mut all: Vec<SpanProgress> = self.shared.spans.lock().values().cloned().collect();
        all.sort_by_key(|p| p.span.table_id);
        all
    }

    /// Counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// True once every local worker has finished (the target ts was reached, or stopped).
    pub fn is_finished(&self) -> bool {
        self.shared.finished.load(Ordering::Acquire) as usize >= self.shared.local_workers.len()
    }

    /// Waits (polling) until the checkpoint reaches `ts`, an error is reported, or `timeout`
    /// passes; returns the checkpoint or the error.
    pub async fn wait_checkpoint(&self, ts: Ts, timeout: Duration) -> Result<Ts, ChangefeedError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.error() {
                return Err(e);
            }
            let c = self.checkpoint_ts();
            if c >= ts || Instant::now() >= deadline {
                return Ok(c);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Test hook: the worker hosting table `physical_table_id`'s span silently drops it (stops
    /// reading it and no longer counts it). The span-set checksum of that worker turns
    /// MISMATCH and the checkpoint freezes.
    pub fn debug_drop_span(&self, physical_table_id: i64) {
        self.shared
            .sabotage
            .lock()
            .dropped
            .insert(physical_table_id);
    }

    /// Test hook: undoes [`ChangefeedHandle::debug_drop_span`]. The worker re-reads the span
    /// from the frozen checkpoint and counts it again once the replay is durable.
    pub fn debug_restore_span(&self, physical_table_id: i64) {
        self.shared
            .sabotage
            .lock()
            .dropped
            .remove(&physical_table_id);
    }

    /// Asks the workers to stop without waiting for them. In a multi-process cluster every
    /// process must be asked before any waits: a process's workers only finish once their
    /// peers have torn the dataflow down too.
    pub fn request_stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
    }

    /// Stops the workers and waits for them.
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(g) = self.guards.lock().take() {
            // Workers park for at most `idle_park`, then see the flag.
            let results = g.join();
            for r in results {
                if let Err(e) = r {
                    tracing::error!(changefeed = %self.shared.id, error = %e, "worker panicked");
                }
            }
        }
    }
}

impl Drop for ChangefeedHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
