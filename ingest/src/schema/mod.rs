//! The multi-version schema store: which table schema was in effect at every commit ts.
//!
//! A row read from TiKV is only bytes; decoding it needs the table's `TableInfo` **as it was when
//! the row was committed** (wire.md §6.3 step 5): a row written before an `ADD COLUMN` lacks the
//! column, a row written after a `TRUNCATE TABLE` carries a new table id. The schema store keeps
//! that history:
//!
//! 1. [`SchemaStore::bootstrap`] reads the meta keys (`SchemaVersionKey`, hash `DBs`, each
//!    `DB:<id>` hash) at a snapshot ts through a [`SnapshotReader`](crate::snapshot::SnapshotReader).
//! 2. Finished DDL jobs ([`DdlJob`](tidal_model::DdlJob)s in state *done*, from the
//!    `mysql.tidb_ddl_job` rows decoded by [`DdlJobDecoder`]) are applied in commit-ts order with
//!    [`SchemaStore::apply_job`]; each builds the next version from the schema carried in the
//!    job's `binlog`.
//! 3. [`DdlPuller`] drives step 2 from the change feed: it buffers jobs until the job table's
//!    resolved ts passes their commit ts, so the store is complete up to its
//!    [`resolved_ts`](SchemaStore::resolved_ts).
//!
//! Readers ask [`SchemaStore::table_at`] for the version of a physical table id at a ts and get
//! cheap `Arc` clones; [`SchemaStore::gc`] forgets versions nobody can ask for any more.

mod ddl_puller;
pub mod filter;
mod job_decoder;
mod store;

pub use ddl_puller::{DdlPuller, DdlPullerConfig};
pub use filter::{FilterError, TableFilter, is_system_schema};
pub use job_decoder::DdlJobDecoder;
pub use store::{SchemaSnapshot, SchemaStore, TableVersion};

use tidal_model::ddl::ActionType;
use tidal_model::{CodecError, Ts};

use crate::snapshot::SnapshotError;

/// Why the schema store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Reading the meta snapshot failed (including "snapshot lost by GC").
    #[error("schema snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    /// A meta value or a job row did not decode.
    #[error("schema data: {0}")]
    Codec(#[from] CodecError),
    /// A job that is not done was offered to [`SchemaStore::apply_job`].
    #[error("DDL job {job_id} ({action}) is in state {state}, only done jobs change the schema")]
    JobNotDone {
        /// The job id.
        job_id: i64,
        /// Its action.
        action: ActionType,
        /// Its state's name.
        state: &'static str,
    },
    /// Jobs must be applied in commit-ts order.
    #[error(
        "DDL job {job_id} committed at {commit_ts} arrived after a job committed at {last_applied}; \
         jobs must be applied in commit-ts order"
    )]
    OutOfOrder {
        /// The job id.
        job_id: i64,
        /// Its commit ts.
        commit_ts: Ts,
        /// The commit ts of the last applied job.
        last_applied: Ts,
    },
    /// A done job lacks the schema it should carry in its `binlog`.
    #[error("DDL job {job_id} ({action}) carries no {what} in its binlog")]
    MissingSchema {
        /// The job id.
        job_id: i64,
        /// Its action.
        action: ActionType,
        /// What is missing (`DBInfo`, `TableInfo`, ...).
        what: &'static str,
    },
    /// The job changes the schema in a way that cannot be derived from the job alone
    /// (`FLASHBACK CLUSTER`): bootstrap a new store at the job's commit ts.
    #[error(
        "DDL job {job_id} ({action}) at {commit_ts} cannot be followed incrementally; \
         bootstrap the schema again at that ts"
    )]
    NeedsReload {
        /// The job id.
        job_id: i64,
        /// Its action.
        action: ActionType,
        /// Its commit ts.
        commit_ts: Ts,
    },
    /// The schema at `ts` is no longer (or was never) kept by this store.
    #[error("schema at {ts} is not available: the store keeps versions from {oldest} on")]
    TooOld {
        /// The ts asked for.
        ts: Ts,
        /// The oldest ts the store answers for.
        oldest: Ts,
    },
    /// The `mysql.tidb_ddl_job` table (or its `job_meta` column) is not in the schema.
    #[error("cannot decode DDL jobs: {detail}")]
    NoJobTable {
        /// What was missing.
        detail: String,
    },
    /// The DDL puller's change-feed subscription failed or ended.
    #[error("DDL puller: {detail}")]
    Feed {
        /// What happened.
        detail: String,
    },
}
