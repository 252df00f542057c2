//! Starting a changefeed: bootstrap the schema, start the timely workers, build the same
//! dataflow on every worker, and keep publishing its watermarks.
//!
//! ```text
//!  DdlSource (worker 0) ──broadcast──┬──────────────▶ TableSource ─[stage]─▶ SinkDriver ──▶ flushed
//!                                    │                (every worker)          ▲   ▲     │
//!                                    ├─────────────────────────────────┘   │            │
//!                                    └──▶ DdlExecutor ◀─── flushed frontier ┼────────────┘
//!                                          (worker 0) ──done──broadcast──▶ feedback(1)
//!  probes:  resolved   = frontier after TableSource − 1
//!           checkpoint = frontier after SinkDriver and DdlExecutor − 1
//! ```
//!
//! `[stage]` is the optional [`UserStage`](crate::spec::UserStage); the resolved probe sits
//! before it, so resolved-ts does not depend on what the stage does.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{ConnectLoop, Feedback, Probe};
use timely::dataflow::{ProbeHandle, Scope};
use timely::worker::Worker;

use tidal_ingest::feed::RegionFeed;
use tidal_ingest::schema::SchemaStore;
use tidal_ingest::snapshot::SnapshotReader;
use tidal_model::Ts;
use tidal_sinks::Sink;

use crate::driver::sink_driver;
use crate::executor::ddl_executor;
use crate::handle::ChangefeedHandle;
use crate::messages::DdlDone;
use crate::shared::Shared;
use crate::source::{ddl_source, table_source};
use crate::spec::{ChangefeedError, ChangefeedSpec, RunConfig, UserStage};

/// What every worker of a process shares.
pub(crate) struct ProcessCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) feed: RegionFeed,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) max_batch_rows: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_inflight_batches: usize,
    pub(crate) safe_mode_until: Ts,
    pub(crate) idle_park: std::time::Duration,
    pub(crate) stage: Option<UserStage>,
}

/// Starts a changefeed in this process: bootstraps the schema store at `spec.start_ts`, then
/// runs `run.workers` timely workers (of a cluster, if `run.cluster` is set) that build the
/// changefeed's dataflow. Must be called inside a Tokio runtime; sink writes and the change
/// feed run on it. Returns once the workers are running.
pub async fn start_changefeed(
    spec: ChangefeedSpec,
    run: RunConfig,
) -> Result<ChangefeedHandle, ChangefeedError> {
    if spec.max_batch_rows == 0 || spec.max_inflight_batches == 0 {
        return Err(ChangefeedError::Config(
            "batch sizes and in-flight limits must be positive".into(),
        ));
    }
    if let Some(t) = spec.target_ts
        && t < spec.start_ts
    {
        return Err(ChangefeedError::Config(format!(
            "target ts {} is below start ts {}",
            t.0, spec.start_ts.0
        )));
    }
    let runtime = tokio::runtime::Handle::current();
    let reader = SnapshotReader::new((*spec.pd).clone());
    let store = SchemaStore::bootstrap(&reader, spec.start_ts)
        .await
        .map_err(|e| ChangefeedError::Schema(e.to_string()))?;
    let feed = RegionFeed::new(Arc::clone(&spec.pd), spec.feed.clone());
    let shared = Arc::new(Shared::new(
        spec.id.clone(),
        spec.start_ts,
        spec.target_ts,
        run.peers(),
        run.local_workers().collect(),
        store,
        spec.filter.clone(),
        spec.max_inflight_bytes as u64,
    ));
    let ctx = Arc::new(ProcessCtx {
        shared: Arc::clone(&shared),
        feed,
        sink: Arc::clone(&spec.sink),
        runtime,
        max_batch_rows: spec.max_batch_rows,
        max_batch_bytes: spec.max_batch_bytes.max(1),
        max_inflight_batches: spec.max_inflight_batches,
        safe_mode_until: spec.safe_mode_until,
        idle_park: run.idle_park,
        stage: spec.stage.clone(),
    });
    let config = run.timely_config();
    let guards = tokio::task::spawn_blocking(move || {
        timely::execute(config, move |worker| run_worker(worker, Arc::clone(&ctx)))
    })
    .await
    .map_err(|e| ChangefeedError::Timely(e.to_string()))?
    .map_err(ChangefeedError::Timely)?;
    tracing::info!(changefeed = %spec.id, start_ts = spec.start_ts.0, workers = run.workers, "changefeed started");
    Ok(ChangefeedHandle::new(shared, guards))
}

/// Value of a probe's frontier minus one, or `None` if the frontier is empty.
fn probe_minus_one(p: &ProbeHandle<u64>) -> Option<Ts> {
    p.with_frontier(|f| f.iter().next().map(|t| Ts(t.saturating_sub(1))))
}

fn run_worker(worker: &mut Worker, ctx: Arc<ProcessCtx>) {
    let index = worker.index();
    let resolved_probe: ProbeHandle<u64> = ProbeHandle::new();
    let checkpoint_probe: ProbeHandle<u64> = ProbeHandle::new();
    {
        let ctx = Arc::clone(&ctx);
        let (rp, cp) = (resolved_probe.clone(), checkpoint_probe.clone());
        worker.dataflow::<u64, _, _>(move |scope: Scope<'_, u64>| {
            let ddl = ddl_source(scope, Arc::clone(&ctx)).broadcast();
            let txns = table_source(ddl.clone(), Arc::clone(&ctx), cp.clone()).probe_with(&rp);
            let txns = match &ctx.stage {
                Some(stage) => stage(txns),
                None => txns,
            };
            let (done_handle, done_loop) = scope.feedback::<Vec<DdlDone>>(1);
            let flushed =
                sink_driver(txns, ddl.clone(), done_loop, Arc::clone(&ctx)).probe_with(&cp);
            let done = ddl_executor(ddl, flushed, Arc::clone(&ctx)).probe_with(&cp);
            done.broadcast().connect_loop(done_handle);
        });
    }
    let shared = &ctx.shared;
    let target = shared.target_ts;
    // The first local worker tells this process's sink the changefeed checkpoint (storage sinks
    // record it in their `metadata` file). One call at a time, so it can never go backwards.
    let mut checkpoint_notifier = (shared.local_workers.first() == Some(&index))
        .then(|| CheckpointNotifier::new(Ts(shared.checkpoint.load(Ordering::Acquire))));
    loop {
        if shared.stop.load(Ordering::Acquire) {
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
            break;
        }
        let active = worker.step_or_park(Some(ctx.idle_park));
        let resolved = probe_minus_one(&resolved_probe);
        let checkpoint = probe_minus_one(&checkpoint_probe);
        let fallback = target.unwrap_or(Ts(shared.resolved.load(Ordering::Acquire)));
        let resolved = resolved.unwrap_or(fallback);
        let checkpoint = checkpoint.unwrap_or(if target.is_some() {
            fallback
        } else {
            Ts(shared.checkpoint.load(Ordering::Acquire))
        });
        shared.report_watermarks(index, resolved, checkpoint.min(resolved));
        if let Some(notifier) = checkpoint_notifier.as_mut() {
            notifier.notify(&ctx, Ts(shared.checkpoint.load(Ordering::Acquire)));
        }
        if !active || checkpoint_probe.done() {
            break;
        }
    }
    shared.finished.fetch_add(1, Ordering::AcqRel);
}

/// Passes checkpoint advances to the sink's [`Sink::update_checkpoint`], at most every
/// [`CheckpointNotifier::INTERVAL`] and never with two calls in flight.
struct CheckpointNotifier {
    notified: Ts,
    last_call: std::time::Instant,
    in_flight: Arc<std::sync::atomic::AtomicBool>,
}

impl CheckpointNotifier {
    const INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

    fn new(start: Ts) -> Self {
        CheckpointNotifier {
            notified: start,
            last_call: std::time::Instant::now(),
            in_flight: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    fn notify(&mut self, ctx: &ProcessCtx, checkpoint: Ts) {
        if checkpoint <= self.notified
            || self.last_call.elapsed() < Self::INTERVAL
            || self.in_flight.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.notified = checkpoint;
        self.last_call = std::time::Instant::now();
        let call = ctx.sink.update_checkpoint(checkpoint);
        let in_flight = Arc::clone(&self.in_flight);
        let changefeed = ctx.shared.id.clone();
        ctx.runtime.spawn(async move {
            if let Err(e) = call.await {
                tracing::warn!(%changefeed, checkpoint = checkpoint.0, error = %e, "sink could not record the checkpoint");
            }
            in_flight.store(false, Ordering::Release);
        });
    }
}
