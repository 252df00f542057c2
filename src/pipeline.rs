//! Composing changefeeds in Rust: the [`Pipeline`] builder.
//!
//! The `tidal` binary covers the usual shapes (one upstream, one table filter, one sink URI).
//! A program that needs something else — masking a column, dropping deletes, routing rows by a
//! key of its own, writing into a sink of its own — composes the same dataflow here: pick the
//! upstream, the tables, the starting point and the sink, and optionally hand in a *transform*:
//! a function that receives the timely stream of decoded transactions on every worker and
//! returns the stream the sink driver should write. Everything the changefeed guarantees
//! (whole transactions, per-key order, DDL run once and in order, checkpoint-ts only covering
//! durable data) keeps holding as long as the transform keeps the contract documented on
//! [`UserStage`]; in short, emit each item at a time at or below its commit ts, and do not hold
//! capabilities forever. Filtering — even filtering everything — is always safe: the
//! checkpoint still advances.
//!
//! ```no_run
//! use tidal::pipeline::{Pipeline, TxnItem};
//! use tidal::dataflow::timely::dataflow::operators::vec::{Filter, Map};
//! use tidal::model::RowChangeKind;
//!
//! # async fn run() -> Result<(), tidal::pipeline::PipelineError> {
//! let handle = Pipeline::from_pd(["127.0.0.1:2379"])
//!     .filter(["shop.*"])
//!     .workers(4)
//!     .sink_uri("file:///tmp/shop-changes?protocol=canal-json")
//!     .transform(|txns| {
//!         txns.map(|mut item: TxnItem| {
//!             // Deletes are not replicated.
//!             item.txn.rows.retain(|r| r.kind != RowChangeKind::Delete);
//!             item
//!         })
//!         .filter(|item| !item.txn.rows.is_empty())
//!     })
//!     .start()
//!     .await?;
//! println!("checkpoint: {:?}", handle.checkpoint_ts());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use tidal_dataflow::{ChangefeedError, ChangefeedSpec, RunConfig, start_changefeed};
use tidal_ingest::pd::{PdClient, PdConfig, PdError};
use tidal_ingest::schema::{FilterError, TableFilter};
use tidal_model::Ts;
use tidal_sim::cluster::SimCluster;
use tidal_sinks::{Sink, SinkError};

pub use tidal_dataflow::messages::TxnItem;
pub use tidal_dataflow::timely::dataflow::StreamVec;
pub use tidal_dataflow::{ChangefeedHandle, UserStage, user_stage};

/// Why a [`Pipeline`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Neither [`Pipeline::sink`] nor [`Pipeline::sink_uri`] was called.
    #[error("the pipeline has no sink: call `sink` or `sink_uri`")]
    NoSink,
    /// A table filter rule is malformed.
    #[error("table filter: {0}")]
    Filter(#[from] FilterError),
    /// PD could not be reached, or did not hand out a start timestamp.
    #[error("PD: {0}")]
    Pd(#[from] PdError),
    /// The sink URI is invalid or its sink could not be opened.
    #[error("sink: {0}")]
    Sink(#[from] SinkError),
    /// The changefeed itself refused to start (configuration, schema bootstrap, workers).
    #[error(transparent)]
    Changefeed(#[from] ChangefeedError),
}

/// Where the pipeline reads from.
#[derive(Clone)]
enum Upstream {
    Endpoints(Vec<String>),
    Client(Arc<PdClient>),
}

/// Where the pipeline writes to.
#[derive(Clone)]
enum SinkChoice {
    None,
    Uri(String),
    Sink(Arc<dyn Sink>),
}

type Tweak = Arc<dyn Fn(&mut ChangefeedSpec) + Send + Sync>;

/// A changefeed under construction: upstream, tables, timestamps, workers, transform and sink.
///
/// Every setter takes and returns the builder; [`Pipeline::start`] connects to PD, opens the
/// sink, bootstraps the schema and starts the workers. Defaults: every (non-system) table,
/// start at PD's current timestamp, run until stopped, one worker, no transform.
///
/// ```no_run
/// use std::sync::Arc;
/// use tidal::pipeline::Pipeline;
/// use tidal::sinks::blackhole::BlackholeSink;
///
/// # async fn run(cluster: &tidal::sim::cluster::SimCluster) -> Result<(), Box<dyn std::error::Error>> {
/// let handle = Pipeline::embedded(cluster)
///     .id("orders-audit")
///     .filter(["shop.orders"])
///     .workers(2)
///     .sink_uri("blackhole://")
///     .start()
///     .await?;
/// // ... write upstream, watch `handle.watermarks()` ...
/// handle.stop();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Pipeline {
    id: String,
    upstream: Upstream,
    filter: Option<Vec<String>>,
    table_filter: Option<TableFilter>,
    start_ts: Option<Ts>,
    target_ts: Option<Ts>,
    workers: usize,
    sink: SinkChoice,
    stages: Vec<UserStage>,
    tweaks: Vec<Tweak>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let upstream = match &self.upstream {
            Upstream::Endpoints(e) => e.join(","),
            Upstream::Client(c) => c.known_endpoints().join(","),
        };
        let sink = match &self.sink {
            SinkChoice::None => "none".to_string(),
            SinkChoice::Uri(u) => tidal_sinks::uri::mask_password(u),
            SinkChoice::Sink(s) => s.kind().to_string(),
        };
        f.debug_struct("Pipeline")
            .field("id", &self.id)
            .field("upstream", &upstream)
            .field("filter", &self.filter)
            .field("start_ts", &self.start_ts)
            .field("target_ts", &self.target_ts)
            .field("workers", &self.workers)
            .field("sink", &sink)
            .field("transforms", &self.stages.len())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    fn with_upstream(upstream: Upstream) -> Pipeline {
        Pipeline {
            id: "pipeline".to_string(),
            upstream,
            filter: None,
            table_filter: None,
            start_ts: None,
            target_ts: None,
            workers: 1,
            sink: SinkChoice::None,
            stages: Vec::new(),
            tweaks: Vec::new(),
        }
    }

    /// A pipeline reading the TiDB cluster whose PD answers at `endpoints` (`host:port` or
    /// URLs, as the `--pd` flag takes them).
    pub fn from_pd<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Pipeline {
        Pipeline::with_upstream(Upstream::Endpoints(
            endpoints.into_iter().map(Into::into).collect(),
        ))
    }

    /// A pipeline reading an already connected PD client (shared with the caller).
    pub fn from_client(pd: Arc<PdClient>) -> Pipeline {
        Pipeline::with_upstream(Upstream::Client(pd))
    }

    /// A pipeline reading the embedded (simulated) cluster, through its PD endpoints — the same
    /// network path as a real cluster.
    pub fn embedded(cluster: &SimCluster) -> Pipeline {
        Pipeline::from_pd(cluster.pd_endpoints())
    }

    /// The changefeed id (logs, metrics, and the progress some sinks keep downstream).
    /// Default `pipeline`.
    pub fn id(mut self, id: impl Into<String>) -> Pipeline {
        self.id = id.into();
        self
    }

    /// Replicate only the tables these rules select (`db.table` patterns, `!` to exclude, as in
    /// the `--filter` flag). Rules are checked by [`Pipeline::start`]. Replaces earlier rules.
    pub fn filter<S: AsRef<str>>(mut self, rules: impl IntoIterator<Item = S>) -> Pipeline {
        self.filter = Some(rules.into_iter().map(|r| r.as_ref().to_string()).collect());
        self.table_filter = None;
        self
    }

    /// Replicate only the tables a ready-made filter selects. Replaces earlier rules.
    pub fn table_filter(mut self, filter: TableFilter) -> Pipeline {
        self.table_filter = Some(filter);
        self.filter = None;
        self
    }

    /// Replicate changes committed after `ts`. Default: PD's current timestamp at
    /// [`Pipeline::start`].
    pub fn start_ts(mut self, ts: Ts) -> Pipeline {
        self.start_ts = Some(ts);
        self
    }

    /// Stop once everything committed at or below `ts` is durable (the handle then reports
    /// [`ChangefeedHandle::is_finished`]). Default: run until stopped.
    pub fn target_ts(mut self, ts: Ts) -> Pipeline {
        self.target_ts = Some(ts);
        self
    }

    /// Number of timely worker threads (at least one). Each worker owns a share of the table
    /// spans, and runs its own copy of the transform over its share.
    pub fn workers(mut self, n: usize) -> Pipeline {
        self.workers = n.max(1);
        self
    }

    /// Write into the sink a URI names (`mysql://…`, `tidb://…`, `file://…`, `blackhole://`);
    /// opened by [`Pipeline::start`]. Replaces an earlier sink.
    pub fn sink_uri(mut self, uri: impl Into<String>) -> Pipeline {
        self.sink = SinkChoice::Uri(uri.into());
        self
    }

    /// Write into a sink of the caller's (any implementation of [`Sink`]). Replaces an earlier
    /// sink.
    pub fn sink(mut self, sink: Arc<dyn Sink>) -> Pipeline {
        self.sink = SinkChoice::Sink(sink);
        self
    }

    /// Adds a transform: timely operators of the caller's own between decoding and the sink.
    ///
    /// `stage` is called once per worker while the dataflow is built, with that worker's stream
    /// of decoded transactions ([`TxnItem`], one per upstream transaction and table, in commit
    /// order per table span); what it returns is what the sink receives. Transforms added
    /// earlier run first. The stage sees DML only; DDL still reaches the sink exactly once and
    /// in order. See [`UserStage`] for the contract (times at or below commit ts, no capability
    /// held forever, keep each item's span and table).
    ///
    /// ```
    /// use tidal::pipeline::{Pipeline, TxnItem};
    /// use tidal::dataflow::timely::dataflow::operators::vec::{Filter, Map};
    /// use tidal::model::Datum;
    ///
    /// let pipeline = Pipeline::from_pd(["127.0.0.1:2379"])
    ///     // Drop the audit table's changes entirely.
    ///     .transform(|txns| txns.filter(|item| item.txn.table.table_name != "audit"))
    ///     // Blank the second column of every row.
    ///     .transform(|txns| {
    ///         txns.map(|mut item: TxnItem| {
    ///             for row in &mut item.txn.rows {
    ///                 for image in [&mut row.old, &mut row.new].into_iter().flatten() {
    ///                     if let Some(v) = image.get_mut(1) {
    ///                         *v = Datum::Null;
    ///                     }
    ///                 }
    ///             }
    ///             item
    ///         })
    ///     });
    /// assert_eq!(format!("{pipeline:?}").contains("transforms: 2"), true);
    /// ```
    pub fn transform<F>(mut self, stage: F) -> Pipeline
    where
        F: for<'s> Fn(StreamVec<'s, u64, TxnItem>) -> StreamVec<'s, u64, TxnItem>
            + Send
            + Sync
            + 'static,
    {
        self.stages.push(user_stage(stage));
        self
    }

    /// Adds a ready-made [`UserStage`] (see [`Pipeline::transform`]).
    pub fn stage(mut self, stage: UserStage) -> Pipeline {
        self.stages.push(stage);
        self
    }

    /// Adjusts the changefeed spec just before it starts (batch sizes, in-flight limits, feed
    /// settings). Runs after every other setting is applied; calls accumulate in order.
    pub fn configure(
        mut self,
        tweak: impl Fn(&mut ChangefeedSpec) + Send + Sync + 'static,
    ) -> Pipeline {
        self.tweaks.push(Arc::new(tweak));
        self
    }

    /// The transforms, composed into one stage (`None` without any).
    fn composed_stage(&self) -> Option<UserStage> {
        match self.stages.as_slice() {
            [] => None,
            [one] => Some(Arc::clone(one)),
            many => {
                let stages: Vec<UserStage> = many.to_vec();
                Some(user_stage(move |txns| {
                    stages.iter().fold(txns, |s, stage| stage(s))
                }))
            }
        }
    }

    /// Starts the changefeed: checks the filter, connects to PD, takes the start timestamp if
    /// none was given, opens the sink, bootstraps the schema and starts the workers. Must be
    /// called inside a multi-threaded Tokio runtime; returns once the workers run. Dropping the
    /// handle stops them.
    pub async fn start(self) -> Result<ChangefeedHandle, PipelineError> {
        let filter = match (&self.table_filter, &self.filter) {
            (Some(f), _) => f.clone(),
            (None, Some(rules)) => TableFilter::new(rules.as_slice())?,
            (None, None) => TableFilter::all(),
        };
        if matches!(self.sink, SinkChoice::None) {
            return Err(PipelineError::NoSink);
        }
        let pd = match &self.upstream {
            Upstream::Client(c) => Arc::clone(c),
            Upstream::Endpoints(e) => Arc::new(PdClient::connect(PdConfig::new(e.clone())).await?),
        };
        let start_ts = match self.start_ts {
            Some(ts) => ts,
            None => pd.get_ts().await?,
        };
        let sink = match &self.sink {
            SinkChoice::None => return Err(PipelineError::NoSink),
            SinkChoice::Sink(s) => Arc::clone(s),
            SinkChoice::Uri(uri) => tidal_sinks::open::open_sink(uri, &self.id).await?,
        };
        let mut spec = ChangefeedSpec::new(self.id.clone(), pd, start_ts, sink);
        spec.filter = filter;
        spec.target_ts = self.target_ts;
        spec.stage = self.composed_stage();
        for tweak in &self.tweaks {
            tweak(&mut spec);
        }
        let handle = start_changefeed(spec, RunConfig::process(self.workers)).await?;
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn start_without_a_sink_fails_before_touching_pd() {
        // No PD listens here; the missing sink must be reported first.
        let err = Pipeline::from_pd(["127.0.0.1:1"])
            .start()
            .await
            .unwrap_err();
        assert!(matches!(err, PipelineError::NoSink), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the pipeline has no sink: call `sink` or `sink_uri`"
        );
    }

    #[tokio::test]
    async fn a_bad_filter_rule_is_reported_before_connecting() {
        let err = Pipeline::from_pd(["127.0.0.1:1"])
            .filter(["not a rule ["])
            .sink_uri("blackhole://")
            .start()
            .await
            .unwrap_err();
        assert!(matches!(err, PipelineError::Filter(_)), "{err:?}");
    }

    #[test]
    fn builder_records_settings() {
        let p = Pipeline::from_pd(["a:1", "b:2"])
            .id("x")
            .workers(0)
            .start_ts(Ts(5))
            .target_ts(Ts(9))
            .sink_uri("mysql://root:secret@db:3306/")
            .transform(|s| s)
            .transform(|s| s);
        assert_eq!(p.workers, 1);
        assert_eq!(p.start_ts, Some(Ts(5)));
        assert_eq!(p.target_ts, Some(Ts(9)));
        assert!(p.composed_stage().is_some());
        let shown = format!("{p:?}");
        assert!(shown.contains("a:1,b:2"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("transforms: 2"), "{shown}");
        assert!(Pipeline::from_pd(["a:1"]).composed_stage().is_none());
    }
}
