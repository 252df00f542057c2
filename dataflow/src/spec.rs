//! What a changefeed is asked to do ([`ChangefeedSpec`]), where it runs ([`RunConfig`]) and how
//! it fails ([`ChangefeedError`]).
//!
//! The spec is process-local: every process of a timely cluster builds its own spec (same id,
//! start ts, filter and sink URI) and opens its own sink and PD client; the dataflow then makes
//! the processes agree on everything else (span ownership by hash, DDL order by the DDL stream).

use std::sync::Arc;
use std::time::Duration;

use tidal_ingest::feed::FeedConfig;
use tidal_ingest::pd::PdClient;
use tidal_ingest::schema::TableFilter;
use tidal_model::Ts;
use tidal_sinks::Sink;
use timely::dataflow::StreamVec;

use crate::messages::TxnItem;

/// A user stage: operators of the caller's own, applied on every worker to the stream of
/// decoded transactions between the table source and the sink driver.
///
/// The stage is a function from stream to stream, called once per worker while the dataflow
/// is built; it may add any timely operators (map, filter, flat-map, aggregate, …). The
/// contract it must keep so that the watermarks stay true:
///
/// - **Times stay at or below the commit ts.** An item arrives at a time `<= item.commit_ts()`;
///   emit every item (changed or not) at the time it came in at, or any later time still
///   `<= item.commit_ts()`. Emitting it above its commit ts would let the checkpoint pass a
///   change that is not durable yet.
/// - **Capabilities are not held forever.** A stage that buffers (to aggregate, to reorder)
///   must release its capabilities as its input frontier advances; a capability held for good
///   stops the checkpoint. Filtering, even filtering everything, holds nothing: the frontier
///   (and so resolved-ts and checkpoint-ts) keeps advancing as if the rows had been written.
/// - **Keep the item's identity.** `span_id`, `physical_id`, `db_id` and `txn.table` say where
///   the rows came from; the sink driver uses them for progress accounting and the DDL barrier.
///   Change the rows (`txn.rows`), drop rows or whole items, or change their values, but do not
///   point an item at another table; `bytes` feeds flow control and may be left as it is.
/// - **Order is per worker.** Items arrive in `(commit_ts, start_ts)` order per span and the
///   driver writes them in the order the stage emits them. [`TxnItem`] holds shared table
///   definitions and is not serializable, so it never leaves its worker; a stage that routes by
///   its own key exchanges a serializable record of its own (e.g. per-key aggregates) and is
///   itself responsible for the per-key order of what it routes.
///
/// The stage sees DML only: DDL travels on its own stream, is not shown to the stage, and still
/// runs exactly once, in commit order, behind the DDL barrier (which applies to what the stage
/// emits).
pub type UserStage =
    Arc<dyn for<'s> Fn(StreamVec<'s, u64, TxnItem>) -> StreamVec<'s, u64, TxnItem> + Send + Sync>;

/// Wraps a function as a [`UserStage`]. Passing a closure through this function (rather than
/// `Arc::new`) lets the compiler infer its signature for every scope lifetime.
///
/// ```
/// use tidal_dataflow::spec::{UserStage, user_stage};
/// use timely::dataflow::operators::vec::Filter;
///
/// // Drop transactions that only delete rows.
/// let stage: UserStage = user_stage(|txns| {
///     txns.filter(|item| {
///         item.txn.rows.iter().any(|r| r.kind != tidal_model::RowChangeKind::Delete)
///     })
/// });
/// # let _ = stage;
/// ```
pub fn user_stage<F>(f: F) -> UserStage
where
    F: for<'s> Fn(StreamVec<'s, u64, TxnItem>) -> StreamVec<'s, u64, TxnItem>
        + Send
        + Sync
        + 'static,
{
    Arc::new(f)
}

/// One changefeed: upstream, range of timestamps, tables, sink and limits.
#[derive(Clone)]
pub struct ChangefeedSpec {
    /// Changefeed id (for logs and metrics).
    pub id: String,
    /// The upstream PD client (shared by the feed, the snapshot reader and the schema store).
    pub pd: Arc<PdClient>,
    /// Replicate changes committed after this ts. The schema store is bootstrapped here.
    pub start_ts: Ts,
    /// Stop once everything up to this ts is durable (`None` = run until stopped).
    pub target_ts: Option<Ts>,
    /// Which tables to replicate.
    pub filter: TableFilter,
    /// The sink of this process (already open).
    pub sink: Arc<dyn Sink>,
    /// Change-feed client settings; `feed.memory_quota` bounds the rows the feed holds.
    pub feed: FeedConfig,
    /// Largest number of row changes in one sink batch (a bigger transaction is its own batch).
    pub max_batch_rows: usize,
    /// Largest approximate size of one sink batch, in bytes.
    pub max_batch_bytes: usize,
    /// Batches handed to the sink and not yet durable, per worker.
    pub max_inflight_batches: usize,
    /// Bytes handed to the sink and not yet durable, per process: above it the sources stop
    /// pulling from the feed.
    pub max_inflight_bytes: usize,
    /// Rows committed at or below this ts are written in safe mode (the downstream may already
    /// hold them). Defaults to `start_ts`: after a restart from a checkpoint, nothing above it
    /// was written.
    pub safe_mode_until: Ts,
    /// The caller's own operators between decoding and the sink driver (see [`UserStage`]);
    /// `None` sends decoded transactions straight to the sink.
    pub stage: Option<UserStage>,
    /// Where rows that do not fit in the memory quota are spilled (see [`crate::spill`]): each
    /// worker writes into `<spill_dir>/<changefeed id>/<pid>-<n>-w<worker>`, removed when the
    /// changefeed stops (directories another process left there are removed at start). `None`:
    /// a directory under the system's temp dir, unique to this process and changefeed. The
    /// server passes `<data-dir>/spill`.
    pub spill_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ChangefeedSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangefeedSpec")
            .field("id", &self.id)
            .field("start_ts", &self.start_ts)
            .field("target_ts", &self.target_ts)
            .field("filter", &self.filter.to_string())
            .field("sink", &self.sink.kind())
            .field("max_batch_rows", &self.max_batch_rows)
            .field("max_inflight_batches", &self.max_inflight_batches)
            .field("max_inflight_bytes", &self.max_inflight_bytes)
            .field("stage", &self.stage.is_some())
            .finish_non_exhaustive()
    }
}

impl ChangefeedSpec {
    /// A spec with default limits: every table, no target ts, 1 GiB feed quota, batches of up
    /// to 1024 rows / 8 MiB, 4 batches and 256 MiB in flight, no user stage.
    pub fn new(
        id: impl Into<String>,
        pd: Arc<PdClient>,
        start_ts: Ts,
        sink: Arc<dyn Sink>,
    ) -> Self {
        ChangefeedSpec {
            id: id.into(),
            pd,
            start_ts,
            target_ts: None,
            filter: TableFilter::all(),
            sink,
            feed: FeedConfig::default(),
            max_batch_rows: 1024,
            max_batch_bytes: 8 << 20,
            max_inflight_batches: 4,
            max_inflight_bytes: 256 << 20,
            safe_mode_until: start_ts,
            stage: None,
            spill_dir: None,
        }
    }
}

/// The process's part of a timely cluster, for multi-process runs.
///
/// The processes connect to each other themselves (not through timely's own connection
/// set-up, which retries forever and trusts whatever connects): each process listens on its
/// address, connects to every lower-indexed one, and both sides check a handshake carrying
/// `token`, so a connection left over from another run (another generation of the same
/// changefeed on a reused port) is refused instead of joining this one. If the cluster is not
/// complete within `connect_timeout` the start fails with [`ChangefeedError::Timely`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPeers {
    /// This process's index in `addresses`.
    pub process: usize,
    /// `host:port` of every process, in process order (the same list everywhere).
    pub addresses: Vec<String>,
    /// Identifies this run: every process of the run must use the same value, and processes
    /// of different runs never connect (the server uses the changefeed's epoch).
    pub token: u64,
    /// Longest time to wait for every peer to connect.
    pub connect_timeout: Duration,
    /// Longest time stopping the run waits for its worker and network threads; after that
    /// they are abandoned (left to finish on their own) and the stop returns. A peer that
    /// vanished or hangs must never hang the process that stops.
    pub teardown_timeout: Duration,
}

impl ClusterPeers {
    /// Process `process` of a cluster at `addresses`, token 0, 60 s to connect, 10 s to stop.
    pub fn new(process: usize, addresses: Vec<String>) -> ClusterPeers {
        ClusterPeers {
            process,
            addresses,
            token: 0,
            connect_timeout: Duration::from_secs(60),
            teardown_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the changefeed's workers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// Worker threads in this process.
    pub workers: usize,
    /// `None`: a single process. `Some`: one process of a cluster; every process must be
    /// started with the same worker count and address list.
    pub cluster: Option<ClusterPeers>,
    /// Longest time an idle worker parks before re-publishing its watermarks.
    pub idle_park: Duration,
}

impl RunConfig {
    /// `workers` threads in one process.
    pub fn process(workers: usize) -> RunConfig {
        RunConfig {
            workers: workers.max(1),
            cluster: None,
            idle_park: Duration::from_millis(20),
        }
    }

    /// The timely configuration for this run.
    pub fn timely_config(&self) -> timely::Config {
        let workers = self.workers.max(1);
        match &self.cluster {
            None => timely::Config::process(workers),
            Some(c) => timely::Config {
                communication: timely::CommunicationConfig::Cluster {
                    threads: workers,
                    process: c.process,
                    addresses: c.addresses.clone(),
                    report: false,
                    zerocopy: false,
                },
                worker: timely::WorkerConfig::default(),
            },
        }
    }

    /// Global indices of this process's workers.
    pub fn local_workers(&self) -> std::ops::Range<usize> {
        let w = self.workers.max(1);
        let p = self.cluster.as_ref().map_or(0, |c| c.process);
        let first = p.saturating_mul(w);
        first..first.saturating_add(w)
    }

    /// Total number of workers of the cluster.
    pub fn peers(&self) -> usize {
        let w = self.workers.max(1);
        let n = self
            .cluster
            .as_ref()
            .map_or(1, |c| c.addresses.len().max(1));
        w.saturating_mul(n)
    }
}

/// Why a changefeed stopped making progress. Once one is reported its watermarks stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangefeedError {
    /// The configuration is unusable.
    #[error("invalid changefeed configuration: {0}")]
    Config(String),
    /// The schema store could not be built or could not follow a DDL.
    #[error("schema: {0}")]
    Schema(String),
    /// A span's change feed failed for good.
    #[error("change feed of table {table_id}: {detail}")]
    Feed {
        /// Physical table id of the span.
        table_id: i64,
        /// What happened.
        detail: String,
    },
    /// A row could not be decoded (malformed bytes or a missing schema).
    #[error("decoding a change of table {table_id} committed at {commit_ts}: {detail}")]
    Decode {
        /// Physical table id.
        table_id: i64,
        /// Commit ts of the transaction.
        commit_ts: u64,
        /// What was wrong.
        detail: String,
    },
    /// The sink failed a batch or a DDL.
    #[error("sink: {0}")]
    Sink(String),
    /// Timely could not start the workers.
    #[error("starting the workers: {0}")]
    Timely(String),
}
