//! The [`Sink`] trait and the batch types that cross it.

use std::sync::Arc;

use futures::future::BoxFuture;
use tidal_model::schema::TableInfo;
use tidal_model::{DdlEvent, RowChange, Ts};

/// One table at one schema version, as a sink sees it: the names to write to and the columns
/// that [`RowChange`] values are aligned with.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    /// Database (schema) name upstream.
    pub schema_name: String,
    /// Table name upstream.
    pub table_name: String,
    /// The table's schema at this version. Each [`RowChange`]'s `old`/`new` values are aligned
    /// with `info.public_columns()`.
    pub info: Arc<TableInfo>,
    /// The table version: the commit ts of the DDL that produced this schema (storage sinks name
    /// their directories after it).
    pub version: u64,
}

/// The changes of one upstream transaction to one table.
///
/// An upstream transaction that touched several tables reaches the sink as one `SinkTxn` per
/// table (as in TiCDC); within a table it is never split unless it exceeds the sink's batch size.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkTxn {
    /// The table written.
    pub table: Arc<TableDef>,
    /// Upstream start ts.
    pub start_ts: Ts,
    /// Upstream commit ts.
    pub commit_ts: Ts,
    /// The row changes, in upstream key order.
    pub rows: Vec<RowChange>,
    /// Write idempotently (REPLACE instead of INSERT, UPDATE as DELETE + REPLACE): set for rows
    /// at or below the point replication (re)started from, where the downstream may already hold
    /// them.
    pub safe_mode: bool,
}

impl SinkTxn {
    /// Number of row changes.
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }
}

/// A batch of transactions handed to [`Sink::write`] in one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TxnBatch {
    /// Transactions in commit order per table.
    pub txns: Vec<SinkTxn>,
}

impl TxnBatch {
    /// Total number of row changes in the batch.
    pub fn row_count(&self) -> usize {
        self.txns.iter().map(SinkTxn::row_count).sum()
    }

    /// The largest commit ts in the batch, if it holds any transaction.
    pub fn max_commit_ts(&self) -> Option<Ts> {
        self.txns.iter().map(|t| t.commit_ts).max()
    }
}

/// What a sink reports once a batch is durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Row changes made durable.
    pub rows: u64,
    /// Bytes written downstream (encoded size, as the sink counts it).
    pub bytes: u64,
    /// The largest commit ts made durable (0 for an empty batch).
    pub max_commit_ts: u64,
}

/// Why a sink could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink URI or one of its parameters is invalid. `uri` has its password masked.
    #[error("invalid sink URI {uri}: {reason}")]
    InvalidUri {
        /// The URI with credentials masked.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The downstream could not be reached or refused the connection.
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// The downstream address, without credentials.
        target: String,
        /// Why.
        reason: String,
    },
    /// The downstream rejected the work in a way that retrying will not fix (bad credentials,
    /// unknown database, a DDL it refuses).
    #[error("downstream rejected {what}: {reason}")]
    Rejected {
        /// What was rejected (a DDL, a batch, a login).
        what: String,
        /// The downstream's reason.
        reason: String,
    },
    /// A retryable failure persisted through every retry.
    #[error("{what} failed after {attempts} attempts: {reason}")]
    RetriesExhausted {
        /// What was being done.
        what: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// A value could not be encoded for this sink.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A local I/O error (storage sinks).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The sink was closed.
    #[error("sink is closed")]
    Closed,
}

/// A destination for replicated transactions.
///
/// Contract:
/// - The order of [`Sink::write`] calls is the order of the data: for any key, a transaction
///   written in an earlier call must reach the downstream before one written in a later call.
///   Transactions that share no key may be written in parallel.
/// - `write` only enqueues (it must not block); the returned future resolves once every
///   transaction of the batch is durable downstream, or with the error that stopped it. The
///   future is `'static` so the caller can poll it from anywhere.
/// - A batch whose future resolved with an error may have been written in part; the caller
///   replays from its checkpoint, with `safe_mode` set, so sinks must make replays harmless.
/// - [`Sink::execute_ddl`] is called only after every earlier batch touching the DDL's tables has
///   been reported durable, and before any later batch touching them is written.
pub trait Sink: Send + Sync + 'static {
    /// A short name for metrics and logs (`mysql`, `file`, `blackhole`, …).
    fn kind(&self) -> &'static str;

    /// Enqueues a batch; the future resolves when it is durable.
    fn write(&self, batch: TxnBatch) -> BoxFuture<'static, Result<FlushReport, SinkError>>;

    /// Runs a DDL downstream (exactly once; the sink records its progress so that a replay after
    /// a restart does not run it twice).
    fn execute_ddl(
        &self,
        ddl: DdlEvent,
        table: Option<Arc<TableDef>>,
    ) -> BoxFuture<'static, Result<(), SinkError>>;

    /// Tells the sink the changefeed checkpoint: everything at or below `ts` is durable.
    /// Storage sinks record it in their `metadata` file; others may ignore it.
    fn update_checkpoint(&self, ts: Ts) -> BoxFuture<'static, Result<(), SinkError>>;

    /// Flushes what is pending and releases connections and files.
    fn close(&self) -> BoxFuture<'static, Result<(), SinkError>>;
}
