//! The coordinator: the one component that turns the *desired* state persisted in the metadata
//! store into running dataflows, and their progress back into persisted checkpoints.
//!
//! The HTTP API and the [`ChangefeedService`] only write intentions (create, pause, resume,
//! remove); nothing there starts a dataflow. The coordinator watches the changefeed keys and
//! reconciles, so a restart of the process — or a change of owner in a cluster — needs no
//! special path: the new coordinator reads the same keys and does the same thing.
//!
//! Ownership: with an etcd store several processes run a coordinator and elect one with a
//! lease-bound owner key (see `election`); with the embedded store the single process owns.
//! A coordinator that loses its lease stops every dataflow it runs.
//!
//! The state machine (ticdc.md §2.3–2.8), for each changefeed:
//!
//! * `normal` (created, resumed, or found at startup) and not running here: **bump the epoch
//!   first** (candidate from PD's TSO, `max(candidate, current + 1)`, compare-and-swap), then open
//!   the sink and start the dataflow from the persisted checkpoint, in safe mode up to it (rows at
//!   or below it may already be downstream). The epoch is bumped on *every* start — creation,
//!   resume, restart after an error, takeover after a process restart — so anything an earlier
//!   owner still says is dropped by the store (ticdc.md §4).
//! * running: every `checkpoint_interval` the dataflow's checkpoint is persisted with a write
//!   fenced by `epoch == mine`, only when it advanced and only while every worker's span-set
//!   checksum is MATCH (`checkpoint_persistable`); a regression is never written. A refused
//!   write means a newer owner exists: the run is stopped.
//! * `stopped` (pause): the durable checkpoint is saved one last time, then the dataflow stops.
//! * removed (keys deleted, or progress `Removing`): stop; the keys are deleted if still there.
//! * target ts reached: the final checkpoint is saved, state `finished`, stop.
//! * the dataflow or the sink fails: a permanent error (the downstream rejects the data, a row
//!   cannot be decoded, GC collected the data) → `failed`; anything else → `warning` and a
//!   restart after an exponential backoff, under a new epoch. Once a restarted run persists a
//!   new checkpoint the changefeed is back to `normal`.
//!   State changes made by the coordinator are fenced twice: by the epoch, and by the state they
//!   start from, so a user's pause is never overwritten by a late error.
//! * every `gc_tick` the PD service GC safe point is moved to `min(checkpoint) − 1`
//!   ([`ChangefeedService::gc_tick`]); changefeeds GC made unrecoverable become `failed`.
//!
//! The running changefeeds are published through a [`Registry`], which is the service's
//! [`crate::service::WatermarkSource`]: `/status`, `/synced`, `/diagnosis` and the metrics read
//! the live watermarks from it.
//!
//! Multi-process clusters ([`Coordinator::start_cluster`], `tidal server --hosts --process`):
//! the owner runs every changefeed as one timely dataflow over all live processes — see
//! [`cluster`] for the plan it publishes and how the other processes join. On top of the state
//! machine above, the owner restarts a running changefeed under a new epoch whenever the set of
//! live processes changes (one died: its capture key expired; one joined), and a member's
//! failure reaches the owner as its own dataflow's error (the broken connections make timely
//! fail the run everywhere).

pub mod cluster;
mod election;
pub mod failure;
mod registry;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use tidal_dataflow::{ChangefeedHandle, ChangefeedSpec, RunConfig, start_changefeed};
use tidal_ingest::pd::PdClient;
use tidal_ingest::schema::TableFilter;
use tidal_model::Ts;
use tidal_sinks::Sink;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use cluster::{ClusterMembership, PORT_SLOTS, parse_host_port};
pub use failure::{Backoff, Failure, RUNNING_STATES, transition_fenced};
pub use registry::{DIAGNOSIS_SPANS, Registry};

use crate::meta::{
    BumpOptions, ChangeFeedInfo, ChangefeedRef, Compare, CompareOp, FeedState, KeyLayout,
    MetaError, MetaStore, Op, ParsedKey, Progress, Txn, WatchStream, bump_epoch, delete_changefeed,
    load_changefeed, update_progress_fenced,
};
use crate::metrics::{ChecksumState as MetricsChecksum, Metrics};
use crate::service::{ChangefeedService, ErrorCode};
use cluster::{Assignment, ClusterTimeouts, Member, MemberLoop};
use election::Election;
use registry::RunningFeed;

/// Settings of a [`Coordinator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Timely worker threads per changefeed dataflow.
    pub workers: usize,
    /// How often checkpoints are persisted and dataflows checked (TiCDC: 100–200 ms).
    pub checkpoint_interval: Duration,
    /// Full re-read of every changefeed even without watch events (a safety net for a broken
    /// watch).
    pub resync_interval: Duration,
    /// How often the PD service GC safe point is updated (TiCDC: 1 min).
    pub gc_tick: Duration,
    /// First delay before restarting a changefeed in `warning`.
    pub backoff_initial: Duration,
    /// Longest delay between restarts.
    pub backoff_max: Duration,
    /// Campaign for ownership with a lease (clusters sharing one etcd); `false`: this process
    /// owns unconditionally (the embedded store has a single process).
    pub election: bool,
    /// TTL of the owner lease (TiCDC's capture session TTL: 10 s).
    pub session_ttl: Duration,
    /// This node's capture id (the owner key's value).
    pub capture_id: String,
    /// This node's advertised address (recorded on the errors it persists).
    pub advertise_addr: String,
    /// Longest time opening a sink or starting a dataflow may take before it counts as a
    /// (retryable) failure.
    pub start_timeout: Duration,
    /// Where dataflows spill rows that do not fit in memory (`<data-dir>/spill` for the
    /// server); `None`: a directory under the system's temp dir.
    pub spill_dir: Option<std::path::PathBuf>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            checkpoint_interval: Duration::from_millis(200),
            resync_interval: Duration::from_secs(1),
            gc_tick: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            election: false,
            session_ttl: Duration::from_secs(10),
            capture_id: String::new(),
            advertise_addr: String::new(),
            start_timeout: Duration::from_secs(60),
            spill_dir: None,
        }
    }
}

/// The running coordinator: a background task plus the registry it publishes.
#[derive(Debug)]
pub struct Coordinator {
    registry: Arc<Registry>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    member_task: Mutex<Option<JoinHandle<()>>>,
}

impl Coordinator {
    /// Starts the coordinator over `service`'s store (its changefeeds' dataflows talk to `pd`)
    /// and plugs its [`Registry`] into the service as the watermark source. Must be called
    /// inside a Tokio runtime.
    pub fn start(
        service: Arc<ChangefeedService>,
        pd: Arc<PdClient>,
        cfg: CoordinatorConfig,
    ) -> Coordinator {
        Coordinator::start_with_metrics(service, pd, cfg, None)
    }

    /// Like [`Coordinator::start`], also publishing the running dataflows' sink throughput,
    /// span lags and span-set checksum states into `metrics`.
    pub fn start_with_metrics(
        service: Arc<ChangefeedService>,
        pd: Arc<PdClient>,
        cfg: CoordinatorConfig,
        metrics: Option<Metrics>,
    ) -> Coordinator {
        Coordinator::start_inner(service, pd, cfg, metrics, None)
    }

    /// Starts the coordinator of one process of a multi-process cluster (requires
    /// `cfg.election`, i.e. a shared etcd): the node registers its capture key with its process
    /// index, runs the members of other owners' runs that name it, and, while it owns, runs
    /// every changefeed over all live processes (see [`cluster`]).
    pub fn start_cluster(
        service: Arc<ChangefeedService>,
        pd: Arc<PdClient>,
        cfg: CoordinatorConfig,
        metrics: Option<Metrics>,
        cluster: ClusterMembership,
    ) -> Coordinator {
        Coordinator::start_inner(service, pd, cfg, metrics, Some(cluster))
    }

    fn start_inner(
        service: Arc<ChangefeedService>,
        pd: Arc<PdClient>,
        cfg: CoordinatorConfig,
        metrics: Option<Metrics>,
        cluster: Option<ClusterMembership>,
    ) -> Coordinator {
        let registry = Arc::new(Registry::new(&cfg.capture_id));
        service.set_watermark_source(Arc::clone(&registry) as _);
        let (tx, rx) = watch::channel(false);
        let election = cfg.election.then(|| {
            let mut value = serde_json::json!({
                "id": cfg.capture_id,
                "address": cfg.advertise_addr,
                "version": env!("CARGO_PKG_VERSION"),
            });
            let mut capture_key = None;
            if let Some(c) = &cluster {
                value["process"] = serde_json::json!(c.process);
                capture_key = service.keys().capture(&cfg.capture_id).ok();
            }
            Election::new(
                Arc::clone(service.store()),
                service.keys().clone(),
                cfg.session_ttl,
                value.to_string(),
                capture_key,
                cluster.is_some(),
            )
        });
        let timeouts = ClusterTimeouts {
            connect: (cfg.session_ttl * 2)
                .max(Duration::from_secs(5))
                .min(cfg.start_timeout.max(Duration::from_secs(1))),
            teardown: Duration::from_secs(10),
        };
        let member_task = cluster.as_ref().map(|_| {
            let member = MemberLoop::new(
                Arc::clone(service.store()),
                service.keys().clone(),
                Arc::clone(&pd),
                cfg.capture_id.clone(),
                cfg.checkpoint_interval,
                timeouts,
                cfg.spill_dir.clone(),
            );
            tokio::spawn(member.run(rx.clone()))
        });
        let runner = Runner {
            service,
            pd,
            cfg,
            registry: Arc::clone(&registry),
            election,
            owner: false,
            metrics,
            last_span_metrics: Instant::now(),
            checksum_series: BTreeSet::new(),
            cluster,
            timeouts,
            next_slot: 0,
            members_dirty: true,
        };
        let task = tokio::spawn(runner.run(rx));
        Coordinator {
            registry,
            shutdown: tx,
            task: Mutex::new(Some(task)),
            member_task: Mutex::new(member_task),
        }
    }

    /// The registry of running changefeeds (also installed as the service's watermark source).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Whether this coordinator currently owns the changefeeds.
    pub fn is_owner(&self) -> bool {
        self.registry.is_owner()
    }

    /// Stops gracefully: persists each running changefeed's last durable checkpoint (while
    /// still owner), stops the dataflows, closes the sinks and revokes the owner lease.
    /// Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let task = self.task.lock().take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "coordinator task failed");
        }
        let member = self.member_task.lock().take();
        if let Some(task) = member
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "member task failed");
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        // Without an explicit shutdown the task still stops its dataflows on its own.
        let _ = self.shutdown.send(true);
    }
}

/// Outcome of one checkpoint persistence attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    /// Written, with a new checkpoint.
    Saved,
    /// Written: only the resolved ts advanced.
    SavedResolved,
    /// Nothing new to write (or the checksum gate is closed).
    Unchanged,
    /// Refused: the stored epoch is not ours.
    Stale,
    /// The changefeed's keys are gone.
    Gone,
    /// The store failed; retried next tick.
    Failed,
}

struct Runner {
    service: Arc<ChangefeedService>,
    pd: Arc<PdClient>,
    cfg: CoordinatorConfig,
    registry: Arc<Registry>,
    election: Option<Election>,
    owner: bool,
    metrics: Option<Metrics>,
    last_span_metrics: Instant,
    /// `(changefeed, worker)` checksum series exported at the last tick, so that the series of
    /// runs that ended are withdrawn rather than left at their last value.
    checksum_series: BTreeSet<(String, usize)>,
    /// This process's place in a multi-process cluster; `None`: runs stay in this process.
    cluster: Option<ClusterMembership>,
    timeouts: ClusterTimeouts,
    /// Next port slot to try for a multi-process run.
    next_slot: u16,
    /// The capture keys changed: check whether running runs cover exactly the live processes.
    members_dirty: bool,
}

async fn next_event(
    watch: &mut Option<WatchStream>,
) -> Option<Result<crate::meta::WatchEvent, MetaError>> {
    match watch.as_mut() {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

impl Runner {
    fn store(&self) -> &dyn MetaStore {
        self.service.store().as_ref()
    }

    fn keys(&self) -> &KeyLayout {
        self.service.keys()
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick =
            tokio::time::interval(self.cfg.checkpoint_interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch: Option<WatchStream> = None;
        let mut dirty = true;
        let mut last_reconcile: Option<Instant> = None;
        let mut last_gc = Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                _ = tick.tick() => {}
                ev = next_event(&mut watch) => match ev {
                    Some(Ok(ev)) => {
                        let key = ev.kv.key_str();
                        match self.keys().parse(&key) {
                            Some(ParsedKey::ChangefeedInfo(_)) => dirty = true,
                            Some(ParsedKey::Capture { .. }) if self.cluster.is_some() => {
                                self.members_dirty = true;
                            }
                            _ => continue,
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "metadata watch failed; re-opening");
                        watch = None;
                    }
                    None => watch = None,
                },
            }

            let owner = match &mut self.election {
                Some(e) => e.step().await,
                None => true,
            };
            if owner != self.owner {
                self.owner = owner;
                self.registry.set_owner(owner);
                if owner {
                    tracing::info!(capture = %self.cfg.capture_id, "this node is the coordinator");
                    dirty = true;
                } else {
                    tracing::warn!("ownership lost: stopping every changefeed run here");
                    self.stop_all(false).await;
                }
            }
            if !owner {
                continue;
            }
            if watch.is_none() {
                let prefix = format!("{}/", self.keys().cluster_prefix());
                match self.store().watch_prefix(prefix.as_bytes(), 0).await {
                    Ok(w) => watch = Some(w),
                    Err(e) => tracing::warn!(error = %e, "cannot watch the changefeed keys"),
                }
                dirty = true;
            }
            if self.progress().await {
                dirty = true;
            }
            let resync_due = last_reconcile.is_none_or(|t| t.elapsed() >= self.cfg.resync_interval);
            if self.cluster.is_some() && (self.members_dirty || resync_due) {
                self.members_dirty = false;
                if let Err(e) = self.replan().await {
                    tracing::warn!(error = %e, "cannot check the live processes");
                    self.members_dirty = true;
                }
            }
            if dirty || resync_due {
                match self.reconcile().await {
                    Ok(()) => {
                        dirty = false;
                        last_reconcile = Some(Instant::now());
                    }
                    Err(e) => tracing::warn!(error = %e, "reconciling changefeeds failed"),
                }
            }
            if last_gc.elapsed() >= self.cfg.gc_tick {
                last_gc = Instant::now();
                match self.service.gc_tick().await {
                    Ok(report) => {
                        if !report.failures.is_empty() {
                            dirty = true;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "GC tick failed"),
                }
            }
        }
        let owner = self.owner;
        self.stop_all(owner).await;
        if let Some(e) = &mut self.election {
            e.resign().await;
        }
        self.registry.set_owner(false);
        tracing::info!("coordinator stopped");
    }

    /// Checks every running dataflow: errors, completion, checkpoint persistence. Returns true
    /// if a changefeed changed state (a reconcile should follow).
    async fn progress(&mut self) -> bool {
        let mut changed = false;
        self.publish_metrics();
        for feed in self.registry.all_running() {
            let cf = feed.cf.clone();
            if let Some(err) = feed.handle.error() {
                let failure = Failure::from_dataflow(&err);
                self.stop_feed(&cf).await;
                self.record_failure(&cf, feed.epoch, failure).await;
                changed = true;
                continue;
            }
            if feed.target_ts > 0 && feed.handle.is_finished() {
                self.persist(&feed).await;
                match transition_fenced(
                    self.store(),
                    self.keys(),
                    &cf,
                    feed.epoch,
                    RUNNING_STATES,
                    FeedState::Finished,
                    Some(None),
                )
                .await
                {
                    Ok(true) => {
                        tracing::info!(changefeed = %cf, target_ts = feed.target_ts, "changefeed finished")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(changefeed = %cf, error = %e, "cannot mark the changefeed finished")
                    }
                }
                self.stop_feed(&cf).await;
                self.registry.with_slot(&cf, |s| s.backoff = None);
                changed = true;
                continue;
            }
            match self.persist(&feed).await {
                Persist::Stale | Persist::Gone => {
                    self.stop_feed(&cf).await;
                    changed = true;
                }
                Persist::Saved => {
                    let recovering = self.registry.with_slot(&cf, |s| s.backoff.is_some());
                    if recovering {
                        match transition_fenced(
                            self.store(),
                            self.keys(),
                            &cf,
                            feed.epoch,
                            &[FeedState::Warning, FeedState::Pending],
                            FeedState::Normal,
                            Some(None),
                        )
                        .await
                        {
                            Ok(_) => {
                                tracing::info!(changefeed = %cf, "changefeed recovered from warning");
                                self.registry.with_slot(&cf, |s| s.backoff = None);
                            }
                            Err(e) => {
                                tracing::warn!(changefeed = %cf, error = %e, "cannot clear the warning")
                            }
                        }
                    }
                }
                Persist::SavedResolved | Persist::Unchanged | Persist::Failed => {}
            }
        }
        changed
    }

    /// Publishes the running dataflows' counters, checksum states and (at most once a second)
    /// per-span lags.
    fn publish_metrics(&mut self) {
        let Some(m) = &self.metrics else {
            return;
        };
        let spans_due = self.last_span_metrics.elapsed() >= Duration::from_secs(1);
        if spans_due {
            self.last_span_metrics = Instant::now();
        }
        let now_ms = crate::service::unix_ms_now();
        let mut series = BTreeSet::new();
        for feed in self.registry.all_running() {
            let (ks, id) = (feed.cf.keyspace.as_str(), feed.cf.id.as_str());
            let stats = feed.handle.stats();
            let rows = stats.rows_flushed.saturating_sub(
                feed.published_rows
                    .swap(stats.rows_flushed, Ordering::AcqRel),
            );
            let bytes = stats.bytes_flushed.saturating_sub(
                feed.published_bytes
                    .swap(stats.bytes_flushed, Ordering::AcqRel),
            );
            let batches = stats.batches_flushed.saturating_sub(
                feed.published_batches
                    .swap(stats.batches_flushed, Ordering::AcqRel),
            );
            m.record_sink_batches(ks, id, feed.sink.kind(), batches, rows, bytes);
            for (worker, state) in feed.handle.checksum_states() {
                let state = match state {
                    tidal_dataflow::ChecksumState::Uninitialized => MetricsChecksum::Uninitialized,
                    tidal_dataflow::ChecksumState::Mismatch => MetricsChecksum::Mismatch,
                    tidal_dataflow::ChecksumState::Match => MetricsChecksum::Match,
                };
                m.set_checksum_state(id, worker, state);
                series.insert((id.to_string(), worker));
            }
            if spans_due {
                let lag = |ts: Ts| (now_ms as f64 - ts.physical_ms() as f64) / 1000.0;
                let checkpoint = feed.handle.checkpoint_ts();
                for span in feed.handle.spans() {
                    m.observe_span_lags(ks, id, lag(span.resolved_ts), lag(checkpoint));
                }
            }
        }
        for (id, worker) in self.checksum_series.difference(&series) {
            m.remove_checksum_state(id, *worker);
        }
        self.checksum_series = series;
    }

    /// Persists the run's checkpoint and resolved ts if either advanced and the checksum gate
    /// is open.
    async fn persist(&self, feed: &RunningFeed) -> Persist {
        // In a multi-process run this is capped by what every remote worker vouches for.
        let Some(ckpt) = feed.handle.persistable_checkpoint() else {
            return Persist::Unchanged;
        };
        let last = feed.last_saved.load(Ordering::Acquire);
        let mut ckpt = ckpt.0.max(last);
        if feed.target_ts > 0 {
            ckpt = ckpt.min(feed.target_ts);
        }
        // The resolved ts is the global frontier (timely's progress tracking spans every
        // process), gated like the checkpoint: a worker that lost a span would make it too high.
        let resolved = feed.handle.resolved_ts().0.max(ckpt);
        let last_resolved = feed.last_saved_resolved.load(Ordering::Acquire);
        if ckpt <= last && resolved <= last_resolved {
            return Persist::Unchanged;
        }
        match update_progress_fenced(
            self.store(),
            self.keys(),
            &feed.cf,
            feed.epoch,
            ckpt,
            resolved,
        )
        .await
        {
            Ok(true) => {
                feed.last_saved.fetch_max(ckpt, Ordering::AcqRel);
                feed.last_saved_resolved
                    .fetch_max(resolved, Ordering::AcqRel);
                if ckpt > last {
                    Persist::Saved
                } else {
                    Persist::SavedResolved
                }
            }
            Ok(false) => {
                tracing::warn!(changefeed = %feed.cf, epoch = feed.epoch, "checkpoint refused: a newer owner exists; stopping this run");
                Persist::Stale
            }
            Err(MetaError::NotFound { .. }) => Persist::Gone,
            Err(e) => {
                tracing::warn!(changefeed = %feed.cf, error = %e, "cannot persist the checkpoint");
                Persist::Failed
            }
        }
    }

    /// Persists (fenced) the failure as `failed` or `warning` and arms the backoff.
    async fn record_failure(&self, cf: &ChangefeedRef, epoch: u64, failure: Failure) {
        let to = if failure.permanent {
            FeedState::Failed
        } else {
            FeedState::Warning
        };
        tracing::warn!(
            changefeed = %cf,
            epoch,
            code = %failure.code,
            error = %failure.message,
            state = %to,
            "changefeed failed"
        );
        if let Some(m) = &self.metrics
            && [failure::CODE_SINK_FAILED, failure::CODE_SINK_REJECTED]
                .contains(&failure.code.as_str())
        {
            // The sinks name a DDL they failed on as `DDL "…"`; anything else is row data.
            let event = if failure.message.contains("DDL ") {
                "ddl"
            } else {
                "dml"
            };
            m.record_sink_error(&cf.keyspace, &cf.id, event);
        }
        let err = failure.to_running_error(&self.cfg.advertise_addr);
        if let Err(e) = transition_fenced(
            self.store(),
            self.keys(),
            cf,
            epoch,
            RUNNING_STATES,
            to,
            Some(Some(err)),
        )
        .await
        {
            tracing::warn!(changefeed = %cf, error = %e, "cannot persist the changefeed failure");
        }
        let now = Instant::now();
        let (initial, max) = (self.cfg.backoff_initial, self.cfg.backoff_max);
        self.registry.with_slot(cf, |s| {
            if failure.permanent {
                s.backoff = None;
            } else {
                match &mut s.backoff {
                    Some(b) => b.fail_again(now),
                    None => s.backoff = Some(Backoff::first(initial, max, now)),
                }
                s.backoff_epoch = epoch;
            }
            s.last_failure = Some(failure);
        });
    }

    /// Brings the running set in line with the persisted changefeeds.
    async fn reconcile(&mut self) -> Result<(), crate::service::ServiceError> {
        let views = self.service.list_all().await?;
        let mut seen = BTreeSet::new();
        let now = Instant::now();
        for v in views {
            let cf = v.changefeed.clone();
            seen.insert(cf.clone());
            let state = v.info.state;
            let running = self.registry.running_feed(&cf);
            if v.status.progress == Progress::REMOVING {
                if running.is_some() {
                    self.stop_feed(&cf).await;
                }
                if let Err(e) = delete_changefeed(self.store(), self.keys(), &cf).await {
                    tracing::warn!(changefeed = %cf, error = %e, "cannot finish removing");
                }
                self.registry.forget(&cf);
                continue;
            }
            let wants_run = RUNNING_STATES.contains(&state);
            match running {
                Some(feed) if wants_run && feed.epoch == v.info.epoch => {}
                Some(feed) if wants_run => {
                    tracing::warn!(
                        changefeed = %cf,
                        my_epoch = feed.epoch,
                        current_epoch = v.info.epoch,
                        "the epoch changed under a running changefeed; restarting it"
                    );
                    drop(feed);
                    self.stop_feed(&cf).await;
                    if self.start_due(&cf, state, v.info.epoch, now) {
                        self.start_feed(&cf).await;
                    }
                }
                Some(feed) => {
                    if feed.epoch == v.info.epoch {
                        self.persist(&feed).await;
                    }
                    tracing::info!(changefeed = %cf, state = %state, "stopping the changefeed");
                    drop(feed);
                    self.stop_feed(&cf).await;
                }
                None if wants_run && self.start_due(&cf, state, v.info.epoch, now) => {
                    self.start_feed(&cf).await;
                }
                None => {}
            }
        }
        for cf in self.registry.known() {
            if !seen.contains(&cf)
                && let Some(feed) = self.registry.forget(&cf)
            {
                tracing::info!(changefeed = %cf, "changefeed removed; stopping it");
                drop_feed(feed).await;
            }
        }
        Ok(())
    }

    /// Whether a changefeed that should run but does not may start now: always in `normal`
    /// unless it is this coordinator's own failed run waiting out its backoff; in `warning`
    /// when the backoff expired.
    fn start_due(&self, cf: &ChangefeedRef, state: FeedState, epoch: u64, now: Instant) -> bool {
        self.registry.with_slot(cf, |s| match &s.backoff {
            None => true,
            Some(b) => {
                if state == FeedState::Normal && s.backoff_epoch != epoch {
                    // Someone else (a resume) restarted it: a fresh start.
                    s.backoff = None;
                    true
                } else {
                    b.due(now)
                }
            }
        })
    }

    /// Bumps the epoch, then opens the sink and starts the dataflow from the checkpoint.
    async fn start_feed(&mut self, cf: &ChangefeedRef) {
        self.registry.with_slot(cf, |s| s.starts += 1);
        let candidate = match self.service.tso().await {
            Ok(ts) => ts,
            Err(e) => {
                tracing::warn!(changefeed = %cf, error = %e, "no TSO for a new epoch; will retry");
                return;
            }
        };
        let epoch = match bump_epoch(
            self.store(),
            self.keys(),
            cf,
            candidate,
            BumpOptions::default(),
        )
        .await
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(changefeed = %cf, error = %e, "cannot bump the epoch; will retry");
                return;
            }
        };
        let loaded = match load_changefeed(self.store(), self.keys(), cf).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(changefeed = %cf, error = %e, "cannot read the changefeed");
                return;
            }
        };
        let info = loaded.info;
        let progress = loaded.status.as_ref().map(|s| s.progress);
        if info.epoch != epoch
            || !RUNNING_STATES.contains(&info.state)
            || progress == Some(Progress::REMOVING)
        {
            tracing::info!(changefeed = %cf, "changefeed changed while starting; not starting");
            return;
        }
        let checkpoint = loaded
            .status
            .as_ref()
            .map_or(info.start_ts, |s| s.checkpoint_ts);
        let saved_resolved = loaded
            .status
            .as_ref()
            .map_or(checkpoint, |s| s.resolved_ts.max(checkpoint));
        if info.target_ts > 0 && checkpoint >= info.target_ts {
            if let Err(e) = transition_fenced(
                self.store(),
                self.keys(),
                cf,
                epoch,
                RUNNING_STATES,
                FeedState::Finished,
                Some(None),
            )
            .await
            {
                tracing::warn!(changefeed = %cf, error = %e, "cannot mark the changefeed finished");
            }
            return;
        }
        let timeout = self.cfg.start_timeout;
        let sink = match tokio::time::timeout(
            timeout,
            tidal_sinks::open::open_sink(&info.sink_uri, &cf.id),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.record_failure(cf, epoch, Failure::from_sink_open(&e))
                    .await;
                return;
            }
            Err(_) => {
                let f = Failure::retryable(
                    failure::CODE_SINK_FAILED,
                    format!("opening the sink timed out after {timeout:?}"),
                );
                self.record_failure(cf, epoch, f).await;
                return;
            }
        };
        let spill_dir = self.cfg.spill_dir.as_deref();
        let spec = match build_spec(
            &self.pd,
            cf,
            &info,
            checkpoint,
            Arc::clone(&sink),
            spill_dir,
        ) {
            Ok(s) => s,
            Err(f) => {
                close_sink(sink).await;
                self.record_failure(cf, epoch, f).await;
                return;
            }
        };
        let (run, members, assignment) = match self.cluster.clone() {
            None => (RunConfig::process(self.cfg.workers), None, None),
            Some(c) => match self.publish_run(cf, epoch, checkpoint, &c).await {
                Ok((a, bytes)) => {
                    let run = cluster::run_config(&a, 0, self.timeouts);
                    (run, Some(a.members), Some(bytes))
                }
                Err(e) => {
                    close_sink(sink).await;
                    tracing::warn!(changefeed = %cf, error = %e, "cannot plan the multi-process run; will retry");
                    return;
                }
            },
        };
        // The start runs in its own task: if it takes too long we stop waiting, but a handle it
        // produces later is still stopped properly (dropping the future could leak workers).
        let mut start = tokio::spawn(start_changefeed(spec, run));
        let handle = match tokio::time::timeout(timeout, &mut start).await {
            Ok(Ok(Ok(h))) => h,
            Ok(Ok(Err(e))) => {
                close_sink(sink).await;
                self.record_failure(cf, epoch, Failure::from_dataflow(&e))
                    .await;
                return;
            }
            Ok(Err(join)) => {
                close_sink(sink).await;
                let f = Failure::retryable(
                    failure::CODE_PROCESSOR,
                    format!("starting the dataflow panicked: {join}"),
                );
                self.record_failure(cf, epoch, f).await;
                return;
            }
            Err(_) => {
                tokio::spawn(async move {
                    if let Ok(Ok(h)) = start.await {
                        stop_handle(h).await;
                    }
                });
                close_sink(sink).await;
                let f = Failure::retryable(
                    failure::CODE_PROCESSOR,
                    format!("starting the dataflow timed out after {timeout:?}"),
                );
                self.record_failure(cf, epoch, f).await;
                return;
            }
        };
        tracing::info!(changefeed = %cf, epoch, checkpoint, target_ts = info.target_ts, "changefeed running");
        let feed = Arc::new(RunningFeed {
            cf: cf.clone(),
            epoch,
            handle,
            sink,
            started: Instant::now(),
            start_checkpoint: checkpoint,
            target_ts: info.target_ts,
            last_saved: AtomicU64::new(checkpoint),
            last_saved_resolved: AtomicU64::new(saved_resolved),
            published_rows: AtomicU64::new(0),
            published_bytes: AtomicU64::new(0),
            published_batches: AtomicU64::new(0),
            members,
            assignment,
        });
        let old = self.registry.with_slot(cf, |s| s.running.replace(feed));
        if let Some(old) = old {
            drop_feed(old).await;
        }
    }

    async fn stop_feed(&self, cf: &ChangefeedRef) {
        if let Some(feed) = self.registry.take_running(cf) {
            self.withdraw_assignment(&feed).await;
            drop_feed(feed).await;
        }
    }

    /// Deletes the run's published assignment if it is still this run's (the members stop).
    async fn withdraw_assignment(&self, feed: &RunningFeed) {
        let Some(bytes) = &feed.assignment else {
            return;
        };
        let key = self.keys().assignment(&feed.cf);
        let txn = Txn::new()
            .when([Compare::value(
                key.as_bytes(),
                CompareOp::Equal,
                bytes.clone(),
            )])
            .and_then([Op::Delete {
                key: key.into_bytes(),
            }]);
        if let Err(e) = self.store().txn(txn).await {
            tracing::warn!(changefeed = %feed.cf, error = %e, "cannot withdraw the run assignment");
        }
    }

    /// Plans and publishes a multi-process run of `cf` under `epoch` over the live processes,
    /// this one first. Returns the assignment and its published bytes.
    async fn publish_run(
        &mut self,
        cf: &ChangefeedRef,
        epoch: u64,
        checkpoint: u64,
        c: &ClusterMembership,
    ) -> Result<(Assignment, Vec<u8>), String> {
        let members = self.live_members(c).await.map_err(|e| e.to_string())?;
        if members.first().map(|m| m.capture_id.as_str()) != Some(self.cfg.capture_id.as_str()) {
            return Err("this node's capture key is not registered yet".into());
        }
        let mut next = self.next_slot;
        let slot = cluster::pick_slot(self.store(), self.keys(), &mut next, cf)
            .await
            .map_err(|e| e.to_string())?;
        self.next_slot = next;
        let addresses = cluster::member_addresses(&c.hosts, &members, slot)?;
        let a = Assignment {
            keyspace: cf.keyspace.clone(),
            id: cf.id.clone(),
            epoch,
            checkpoint,
            slot,
            workers: self.cfg.workers.max(1),
            owner: self.cfg.capture_id.clone(),
            members,
            addresses,
        };
        let bytes = serde_json::to_vec(&a).map_err(|e| e.to_string())?;
        self.store()
            .put(self.keys().assignment(cf).as_bytes(), &bytes, None)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            changefeed = %cf,
            epoch,
            checkpoint,
            slot,
            members = ?a.members.iter().map(|m| m.process).collect::<Vec<_>>(),
            "published a multi-process run"
        );
        Ok((a, bytes))
    }

    async fn live_members(&self, c: &ClusterMembership) -> Result<Vec<Member>, MetaError> {
        cluster::live_members(
            self.store(),
            self.keys(),
            &self.cfg.capture_id,
            c.hosts.len(),
        )
        .await
    }

    /// Restarts (under a new epoch) every multi-process run whose members are no longer
    /// exactly the live processes: one died, or one (re)joined.
    async fn replan(&mut self) -> Result<(), MetaError> {
        let Some(c) = self.cluster.clone() else {
            return Ok(());
        };
        let mut live: Option<Vec<Member>> = None;
        for feed in self.registry.all_running() {
            let Some(members) = &feed.members else {
                continue;
            };
            if live.is_none() {
                live = Some(self.live_members(&c).await?);
            }
            let now = live.as_deref().unwrap_or_default();
            if members.as_slice() == now {
                continue;
            }
            tracing::info!(
                changefeed = %feed.cf,
                running_on = ?members.iter().map(|m| m.process).collect::<Vec<_>>(),
                live = ?now.iter().map(|m| m.process).collect::<Vec<_>>(),
                "the live processes changed; restarting the run over them"
            );
            let cf = feed.cf.clone();
            self.persist(&feed).await;
            drop(feed);
            self.stop_feed(&cf).await;
            self.start_feed(&cf).await;
        }
        Ok(())
    }

    /// Stops every run; with `persist`, saves each one's durable checkpoint first.
    async fn stop_all(&self, persist: bool) {
        for feed in self.registry.all_running() {
            if persist {
                self.persist(&feed).await;
            }
            self.stop_feed(&feed.cf).await;
        }
    }
}

/// Builds the dataflow spec of a start of `cf` from `checkpoint`: filter, target, safe mode up
/// to the checkpoint, memory quota.
pub(crate) fn build_spec(
    pd: &Arc<PdClient>,
    cf: &ChangefeedRef,
    info: &ChangeFeedInfo,
    checkpoint: u64,
    sink: Arc<dyn Sink>,
    spill_dir: Option<&std::path::Path>,
) -> Result<ChangefeedSpec, Failure> {
    let rules = info.config.filter_rules();
    let filter =
        TableFilter::with_case_sensitivity(&rules, info.config.case_sensitive.unwrap_or(false))
            .map_err(|e| {
                Failure::permanent(
                    ErrorCode::InvalidReplicaConfig.as_str(),
                    format!("invalid filter rules: {e}"),
                )
            })?;
    let mut spec = ChangefeedSpec::new(cf.id.clone(), Arc::clone(pd), Ts(checkpoint), sink);
    spec.target_ts = (info.target_ts > 0).then_some(Ts(info.target_ts));
    spec.filter = filter;
    spec.safe_mode_until = Ts(checkpoint);
    spec.spill_dir = spill_dir.map(std::path::Path::to_path_buf);
    if let Some(q) = info.config.memory_quota {
        spec.feed.memory_quota = usize::try_from(q).unwrap_or(usize::MAX);
    }
    Ok(spec)
}

/// Stops a handle off the async threads (joining timely workers blocks).
async fn stop_handle(h: ChangefeedHandle) {
    if let Err(e) = tokio::task::spawn_blocking(move || h.stop()).await {
        tracing::error!(error = %e, "stopping a dataflow failed");
    }
}

async fn close_sink(sink: Arc<dyn Sink>) {
    match tokio::time::timeout(Duration::from_secs(10), sink.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "closing the sink failed"),
        Err(_) => tracing::warn!("closing the sink timed out"),
    }
}

/// Stops a run's dataflow and closes its sink.
async fn drop_feed(feed: Arc<RunningFeed>) {
    let cf = feed.cf.clone();
    let sink = Arc::clone(&feed.sink);
    // The last reference drops the handle, which joins the workers: do it on a blocking thread.
    if let Err(e) = tokio::task::spawn_blocking(move || drop(feed)).await {
        tracing::error!(changefeed = %cf, error = %e, "stopping a dataflow failed");
    }
    close_sink(sink).await;
    tracing::info!(changefeed = %cf, "changefeed run stopped");
}
