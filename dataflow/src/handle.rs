//! [`ChangefeedHandle`]: the control plane's view of a running changefeed in this process.
//!
//! Stopping a single-process run joins its workers. Stopping one process of a cluster cannot
//! be allowed to hang on a peer. What timely 0.32 does when a peer goes away: a receive thread
//! that reads EOF without the peer's clean-shutdown message (the peer was killed), or a send
//! thread whose write fails, panics ("timely communication error"); the panic poisons the
//! queues it shares with the workers, so the workers panic on their next receive or send to
//! that peer. A peer that stops *cleanly* sends its shutdown message, after which the survivor
//! neither fails nor progresses (the peer's capabilities are never released), and the stopped
//! side's receive thread waits for the survivor's shutdown message for ever.
//!
//! So stopping a cluster run: ask the workers to stop, wait (bounded) for them to end, then
//! shut down the run's sockets — the survivors' next write fails, which fails their run, and
//! our own network threads end — and join everything on a separate thread that catches the
//! network threads' panics. If that is not done within the run's `teardown_timeout`, the
//! threads are abandoned (left to end on their own) and the stop returns; this is logged.

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
    /// `Some` for one process of a cluster: the longest a stop waits for the threads.
    teardown: Option<Duration>,
    /// A cluster run's peer connections (clones), shut down when the run stops.
    sockets: Mutex<Vec<std::net::TcpStream>>,
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
    pub(crate) fn new(
        shared: Arc<Shared>,
        (guards, sockets): (WorkerGuards<()>, Vec<std::net::TcpStream>),
        teardown: Option<Duration>,
    ) -> ChangefeedHandle {
        ChangefeedHandle {
            shared,
            guards: Mutex::new(Some(guards)),
            teardown,
            sockets: Mutex::new(sockets),
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

    /// Span-set checksum state of each local worker, by global worker index; on the process
    /// hosting worker 0 of a cluster, also the states the other processes' workers reported.
    pub fn checksum_states(&self) -> Vec<(usize, ChecksumState)> {
        self.shared.aggregate();
        self.shared.checksum_states()
    }

    /// True if the checkpoint may be persisted: no error and every worker of the run MATCHes
    /// (in a cluster only the process hosting worker 0 hears from every worker).
    pub fn checkpoint_persistable(&self) -> bool {
        self.persistable_checkpoint().is_some()
    }

    /// The checkpoint that may be persisted, `None` while [`Self::checkpoint_persistable`] is
    /// false. In a single process it is [`Self::checkpoint_ts`]; in a cluster it is also capped
    /// by the checkpoint each remote worker's process published while that worker MATCHed.
    pub fn persistable_checkpoint(&self) -> Option<Ts> {
        self.shared.persistable_checkpoint()
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
        let guards = self.guards.lock().take();
        if let Some(timeout) = self.teardown {
            if let Some(g) = guards {
                self.teardown_cluster(g, timeout);
            }
            return;
        }
        if let Some(g) = guards {
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

impl ChangefeedHandle {
    /// Joins a cluster run's threads on a thread of its own, waiting at most `timeout`.
    fn teardown_cluster(&self, guards: WorkerGuards<()>, timeout: Duration) {
        let id = self.shared.id.clone();
        let sockets = std::mem::take(&mut *self.sockets.lock());
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("tidal-teardown".into())
            .spawn(move || {
                // The workers see the stop flag within their park time; give them half the
                // budget, then break the connections either way.
                let deadline = Instant::now() + timeout / 2;
                while !guards.guards().iter().all(|h| h.is_finished()) && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                for s in &sockets {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
                // Joining the workers, then dropping the network threads' guard (which panics
                // if one of them panicked, e.g. on a vanished peer).
                let r =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || guards.join()));
                let _ = tx.send(r);
            });
        if let Err(e) = spawned {
            tracing::error!(changefeed = %id, error = %e, "cannot start the teardown thread; abandoning the workers");
            return;
        }
        match rx.recv_timeout(timeout) {
            Ok(Ok(results)) => {
                for r in results {
                    if let Err(e) = r {
                        tracing::warn!(changefeed = %id, error = %e, "worker ended with a panic");
                    }
                }
            }
            Ok(Err(_)) => {
                tracing::warn!(changefeed = %id, "network threads ended with a panic (a peer went away)");
            }
            Err(_) => {
                tracing::warn!(changefeed = %id, ?timeout, "cluster run did not stop in time; its threads are abandoned");
            }
        }
    }
}

impl Drop for ChangefeedHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
