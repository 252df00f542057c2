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
//!
//! A multi-process run (`RunConfig::cluster`) connects its processes itself ([`connect_peers`]:
//! a handshake carrying the run's token, and a deadline) and hands the sockets to timely's
//! network layer, instead of timely's own set-up that retries forever, prints to stdout and
//! panics on a stranger's connection. Such a run also carries a small side stream: every
//! worker sends its span-set checksum state and its process's checkpoint to worker 0, so the
//! process hosting worker 0 (the coordinator's) knows whether *every* worker MATCHes before it
//! persists a checkpoint. A worker that panics (timely's answer to a vanished peer) records
//! the panic as the changefeed's error before its thread ends.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::{Operator, source};
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
use crate::shared::{ChecksumState, Shared};
use crate::source::{ddl_source, table_source};
use crate::spec::{ChangefeedError, ChangefeedSpec, ClusterPeers, RunConfig, UserStage};

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
    /// `ChangefeedSpec::spill_dir` (see `crate::source` for the layout under it).
    pub(crate) spill_dir: Option<std::path::PathBuf>,
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
        spill_dir: spec.spill_dir.clone(),
    });
    let teardown = run.cluster.as_ref().map(|c| c.teardown_timeout);
    let guards = match run.cluster.clone() {
        None => {
            let config = run.timely_config();
            tokio::task::spawn_blocking(move || {
                timely::execute(config, move |worker| {
                    run_worker_guarded(worker, Arc::clone(&ctx))
                })
            })
            .await
            .map_err(|e| ChangefeedError::Timely(e.to_string()))?
            .map_err(ChangefeedError::Timely)
            .map(|g| (g, Vec::new()))?
        }
        Some(peers) => {
            let workers = run.workers.max(1);
            tokio::task::spawn_blocking(move || {
                let sockets = connect_peers(&peers)?;
                let clones = sockets
                    .iter()
                    .flatten()
                    .map(TcpStream::try_clone)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| io_err(e, "cloning a peer connection"))?;
                let hooks = timely::communication::Hooks::default();
                let local = ProcessBuilder::new_typed_vector(
                    workers,
                    hooks.refill.clone(),
                    hooks.spill.clone(),
                );
                let (builders, comms) = initialize_networking_from_sockets(
                    local,
                    sockets,
                    peers.process,
                    workers,
                    hooks,
                )
                .map_err(|e| format!("starting the network threads: {e}"))?;
                timely::execute::execute_from(
                    builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
                    Box::new(comms),
                    timely::WorkerConfig::default(),
                    move |worker| run_worker_guarded(worker, Arc::clone(&ctx)),
                )
                .map(|g| (g, clones))
            })
            .await
            .map_err(|e| ChangefeedError::Timely(e.to_string()))?
            .map_err(ChangefeedError::Timely)?
        }
    };
    tracing::info!(changefeed = %spec.id, start_ts = spec.start_ts.0, workers = run.workers, "changefeed started");
    Ok(ChangefeedHandle::new(shared, guards, teardown))
}

/// First bytes of a cluster connection: magic, the run's token, the connecting process.
const HANDSHAKE_MAGIC: u64 = 0x7469_6461_6c2d_7470;
/// How long one connection attempt or one handshake read may take.
const HANDSHAKE_STEP: Duration = Duration::from_secs(2);

fn io_err(e: std::io::Error, what: &str) -> String {
    format!("{what}: {e}")
}

/// Connects this process to every other process of the run: it dials every lower-indexed
/// process and accepts every higher-indexed one, each connection confirmed by a handshake
/// carrying `peers.token` (a connection of another run, or of anything else, is dropped and
/// does not count). Returns one stream per process, `None` at this process's own index, in
/// the shape timely's network layer expects; fails once `peers.connect_timeout` has passed.
pub(crate) fn connect_peers(peers: &ClusterPeers) -> Result<Vec<Option<TcpStream>>, String> {
    let n = peers.addresses.len();
    let me = peers.process;
    if me >= n {
        return Err(format!("process index {me} is outside the {n} addresses"));
    }
    let deadline = Instant::now() + peers.connect_timeout;
    let listener = if me + 1 < n {
        Some(bind_until(&peers.addresses[me], deadline)?)
    } else {
        None
    };
    let lower = peers.addresses[..me].to_vec();
    let token = peers.token;
    let dialer = std::thread::Builder::new()
        .name("tidal-connect".into())
        .spawn(move || dial_lower(&lower, me, token, deadline))
        .map_err(|e| io_err(e, "starting the connect thread"))?;
    let higher = match &listener {
        Some(l) => accept_higher(l, me, n, token, deadline),
        None => Ok(Vec::new()),
    };
    drop(listener);
    let lower = dialer
        .join()
        .map_err(|_| "the connect thread panicked".to_string())?;
    let (lower, higher) = (lower?, higher?);
    let mut out: Vec<Option<TcpStream>> = lower.into_iter().map(Some).collect();
    out.push(None);
    out.extend(higher.into_iter().map(Some));
    for s in out.iter().flatten() {
        s.set_read_timeout(None)
            .and_then(|()| s.set_write_timeout(None))
            .and_then(|()| s.set_nodelay(true))
            .map_err(|e| io_err(e, "configuring a peer connection"))?;
    }
    Ok(out)
}

/// Binds `addr`, retrying while it is in use (an abandoned earlier run may still hold it).
fn bind_until(addr: &str, deadline: Instant) -> Result<TcpListener, String> {
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => {
                l.set_nonblocking(true)
                    .map_err(|e| io_err(e, "configuring the listener"))?;
                return Ok(l);
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(%addr, error = %e, "cannot listen yet; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(io_err(e, &format!("listening on {addr}"))),
        }
    }
}

fn read_u64s<const N: usize>(s: &mut TcpStream) -> std::io::Result<[u64; N]> {
    let mut out = [0u64; N];
    for v in out.iter_mut() {
        let mut b = [0u8; 8];
        s.read_exact(&mut b)?;
        *v = u64::from_le_bytes(b);
    }
    Ok(out)
}

fn dial_lower(
    addresses: &[String],
    me: usize,
    token: u64,
    deadline: Instant,
) -> Result<Vec<TcpStream>, String> {
    let mut out = Vec::with_capacity(addresses.len());
    for (index, addr) in addresses.iter().enumerate() {
        let mut last_error = String::from("no attempt");
        let stream = loop {
            if Instant::now() >= deadline {
                return Err(format!(
                    "process {index} at {addr} did not accept this run's connection in time ({last_error})"
                ));
            }
            match dial_once(addr, me, token) {
                Ok(s) => break s,
                Err(e) => {
                    last_error = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        out.push(stream);
    }
    Ok(out)
}

fn dial_once(addr: &str, me: usize, token: u64) -> Result<TcpStream, String> {
    let target = addr
        .to_socket_addrs()
        .map_err(|e| io_err(e, addr))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&target, HANDSHAKE_STEP).map_err(|e| io_err(e, addr))?;
    s.set_read_timeout(Some(HANDSHAKE_STEP))
        .and_then(|()| s.set_write_timeout(Some(HANDSHAKE_STEP)))
        .map_err(|e| io_err(e, addr))?;
    let mut hello = Vec::with_capacity(24);
    for v in [HANDSHAKE_MAGIC, token, me as u64] {
        hello.extend_from_slice(&v.to_le_bytes());
    }
    s.write_all(&hello).map_err(|e| io_err(e, addr))?;
    let [ack] = read_u64s::<1>(&mut s).map_err(|e| io_err(e, addr))?;
    if ack != HANDSHAKE_MAGIC ^ token {
        return Err(format!("{addr} answered for another run"));
    }
    Ok(s)
}

fn accept_higher(
    listener: &TcpListener,
    me: usize,
    n: usize,
    token: u64,
    deadline: Instant,
) -> Result<Vec<TcpStream>, String> {
    let mut slots: Vec<Option<TcpStream>> = (me + 1..n).map(|_| None).collect();
    while slots.iter().any(Option::is_none) {
        if Instant::now() >= deadline {
            let missing: Vec<usize> = slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_none())
                .map(|(i, _)| me + 1 + i)
                .collect();
            return Err(format!("processes {missing:?} did not connect in time"));
        }
        match listener.accept() {
            Ok((mut s, from)) => {
                let checked = s
                    .set_nonblocking(false)
                    .and_then(|()| s.set_read_timeout(Some(HANDSHAKE_STEP)))
                    .and_then(|()| s.set_write_timeout(Some(HANDSHAKE_STEP)))
                    .and_then(|()| read_u64s::<3>(&mut s));
                match checked {
                    Ok([magic, t, p])
                        if magic == HANDSHAKE_MAGIC
                            && t == token
                            && usize::try_from(p).is_ok_and(|p| p > me && p < n) =>
                    {
                        let slot = usize::try_from(p).unwrap_or(n) - me - 1;
                        if s.write_all(&(HANDSHAKE_MAGIC ^ token).to_le_bytes())
                            .is_ok()
                        {
                            slots[slot] = Some(s);
                        }
                    }
                    Ok(_) => tracing::debug!(%from, "refused a connection of another run"),
                    Err(e) => {
                        tracing::debug!(%from, error = %e, "a peer connection failed its handshake")
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed; retrying");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

/// Runs a worker; if it panics (timely panics on a broken peer connection), records the panic
/// as the changefeed's error, then lets the panic end the thread.
fn run_worker_guarded(worker: &mut Worker, ctx: Arc<ProcessCtx>) {
    let shared = Arc::clone(&ctx.shared);
    let index = worker.index();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_worker(worker, ctx)));
    if let Err(payload) = r {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "unknown panic".to_string());
        shared.fail(ChangefeedError::Timely(format!(
            "worker {index} stopped: {msg}"
        )));
        std::panic::resume_unwind(payload);
    }
}

/// The checksum side stream of a cluster run: each worker reports `(worker, state, its
/// process's checkpoint)` to worker 0 when it changes (and at least every second); worker 0's
/// process records the reports of the other processes' workers. Its capability is never
/// connected to the probes, and is dropped once the run completes or stops.
fn checksum_reports(scope: Scope<'_, u64>, ctx: Arc<ProcessCtx>, done: ProbeHandle<u64>) {
    const EVERY: Duration = Duration::from_millis(100);
    const HEARTBEAT: Duration = Duration::from_secs(1);
    let index = scope.index();
    let shared = Arc::clone(&ctx.shared);
    source::<u64, CapacityContainerBuilder<Vec<(u64, u8, u64)>>, _, _>(
        scope,
        "ChecksumReports",
        move |cap, info| {
            let activator = scope.activator_for(info.address.clone());
            let mut cap = Some(cap);
            let mut last: Option<(u64, u8, u64)> = None;
            let mut last_sent = Instant::now();
            move |output| {
                if done.done() || ctx.shared.stop.load(Ordering::Acquire) {
                    cap = None;
                    return;
                }
                if let Some(c) = cap.as_ref() {
                    let report = (
                        index as u64,
                        ctx.shared.local_state(index).code(),
                        ctx.shared.checkpoint.load(Ordering::Acquire),
                    );
                    if last != Some(report) || last_sent.elapsed() >= HEARTBEAT {
                        output.session(c).give(report);
                        last = Some(report);
                        last_sent = Instant::now();
                    }
                }
                activator.activate_after(EVERY);
            }
        },
    )
    .sink(
        Exchange::new(|_: &(u64, u8, u64)| 0u64),
        "ChecksumCollect",
        move |(input, _frontier)| {
            input.for_each(|_cap, data| {
                for (w, state, ckpt) in data.drain(..) {
                    if let Ok(w) = usize::try_from(w) {
                        shared.note_remote(w, ChecksumState::from_code(state), Ts(ckpt));
                    }
                }
            });
        },
    );
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
            if ctx.shared.peers > ctx.shared.local_workers.len() {
                checksum_reports(scope, Arc::clone(&ctx), cp.clone());
            }
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
