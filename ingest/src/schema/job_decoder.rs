//! Turning `mysql.tidb_ddl_job` rows into finished [`DdlJob`]s (wire.md §6.3, steps 2–3).
//!
//! TiDB rewrites a job's row at every step (queueing, running, …, done) and deletes it once the
//! schema version has synced, so the change feed of the job table carries many rows per job.
//! Only the row committed in state **done** matters: it commits in the same transaction as the
//! final schema change and carries the new schema in its `binlog`. Its commit ts becomes the
//! job's `FinishedTS` and its start ts the job's `start_ts`, exactly as TiCDC does.
//!
//! The row is decoded with the job table's own `TableInfo`, found by name in the bootstrap
//! snapshot (the column id of `job_meta` is not guaranteed, so it is looked up by name). Keys
//! starting with `m` come from the legacy meta job queues of TiDB before 6.2 and hold the job
//! JSON as the value itself.

use std::sync::Arc;

use tidal_model::change::RawOp;
use tidal_model::ddl::{DdlJob, HistoryInfo, JobState};
use tidal_model::schema::TableInfo;
use tidal_model::{CodecError, Datum, RawKvChange, decode};

use super::SchemaError;
use super::store::SchemaStore;

/// Decodes job-table rows into finished jobs.
#[derive(Debug, Clone)]
pub struct DdlJobDecoder {
    table: Arc<TableInfo>,
    /// Position of `job_meta` among the table's public columns (the decoded row's order).
    job_meta_pos: usize,
}

impl DdlJobDecoder {
    /// A decoder for rows of `job_table` (the `TableInfo` of `mysql.tidb_ddl_job`). Fails if it
    /// has no public `job_meta` column.
    pub fn new(job_table: Arc<TableInfo>) -> Result<DdlJobDecoder, SchemaError> {
        let job_meta_pos = job_table
            .public_columns()
            .iter()
            .position(|c| c.name.O.eq_ignore_ascii_case("job_meta"))
            .ok_or_else(|| SchemaError::NoJobTable {
                detail: format!(
                    "table {} (id {}) has no public column job_meta",
                    job_table.name.O, job_table.id
                ),
            })?;
        Ok(DdlJobDecoder {
            table: job_table,
            job_meta_pos,
        })
    }

    /// A decoder for the job table found in `store`'s bootstrap snapshot.
    pub fn from_store(store: &SchemaStore) -> Result<DdlJobDecoder, SchemaError> {
        let table = store
            .ddl_job_table()
            .ok_or_else(|| SchemaError::NoJobTable {
                detail:
                    "mysql.tidb_ddl_job is not in the bootstrap snapshot (TiDB older than 6.2?)"
                        .into(),
            })?;
        DdlJobDecoder::new(table)
    }

    /// The job table's schema.
    pub fn table(&self) -> &Arc<TableInfo> {
        &self.table
    }

    /// The finished job in `change`, or `None` for deletes and for jobs not (yet) done. The job's
    /// `start_ts` and `binlog.FinishedTS` are set from the row's start and commit ts.
    pub fn decode(&self, change: &RawKvChange) -> Result<Option<DdlJob>, SchemaError> {
        if change.op == RawOp::Delete {
            return Ok(None);
        }
        let mut job = if change.key.first() == Some(&b'm') {
            DdlJob::from_json(&change.value)?
        } else {
            let row = decode::decode_row(&self.table, &change.key, &change.value)?;
            match row.get(self.job_meta_pos) {
                Some(Datum::Bytes(json)) => DdlJob::from_json(json)?,
                Some(Datum::Null) | None => {
                    return Err(SchemaError::Codec(CodecError::invalid(
                        "ddl job row",
                        "job_meta is NULL",
                    )));
                }
                Some(other) => {
                    return Err(SchemaError::Codec(CodecError::invalid(
                        "ddl job row",
                        format!("job_meta decoded as {other:?}, expected bytes"),
                    )));
                }
            }
        };
        if job.state != JobState::DONE {
            return Ok(None);
        }
        job.start_ts = change.start_ts.0;
        job.binlog
            .get_or_insert_with(HistoryInfo::default)
            .finished_ts = change.commit_ts.0;
        Ok(Some(job))
    }
}
