//! DDL downstream, exactly once, with progress in `tidb_cdc.ddl_ts_v1`.
//!
//! A DDL must not run twice: after a restart, replication resumes from a checkpoint that may lie
//! before DDLs the downstream already applied, and re-running `ADD COLUMN` fails while re-running
//! `TRUNCATE` destroys data. Like TiCDC, the sink keeps one row per (cluster, changefeed, table
//! id) in `tidb_cdc.ddl_ts_v1` recording the commit ts of the last DDL of that table and whether
//! it finished. Database-level DDLs use table id 0. DDLs of one table arrive in commit-ts order,
//! so "a DDL at `ts` or later finished" means "this one is done".
//!
//! The row is written twice: with `finished = 0` before the DDL runs, `finished = 1` after. A
//! crash between the two leaves an unfinished row at the DDL's own ts; the replay then runs the
//! DDL again and treats the errors that say "already done" (table/database/column/index exists,
//! unknown table/database/column/index on a drop) as success.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Row};
use tidal_model::DdlEvent;
use tidal_model::ddl::ActionType;

use super::config::MySqlConfig;
use super::sql::quote_ident;
use super::writer::{ErrorClass, classify, describe, error_number};
use crate::sink::SinkError;

/// The progress table's DDL.
pub(crate) const CREATE_PROGRESS_TABLE: &str = "CREATE TABLE IF NOT EXISTS tidb_cdc.ddl_ts_v1 (
    ticdc_cluster_id VARCHAR(255) NOT NULL,
    changefeed VARCHAR(255) NOT NULL,
    ddl_ts BIGINT UNSIGNED NOT NULL,
    table_id BIGINT NOT NULL,
    finished BOOLEAN NOT NULL,
    table_name_in_ddl_job VARCHAR(1024) NOT NULL DEFAULT '',
    db_name_in_ddl_job VARCHAR(1024) NOT NULL DEFAULT '',
    is_syncpoint BOOLEAN NOT NULL DEFAULT FALSE,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (ticdc_cluster_id, changefeed, table_id)
)";

/// Errors that, on the replay of a DDL that may have run already, mean "already applied":
/// database exists (1007), database unknown (1008), table exists (1050), unknown table (1051),
/// duplicate column (1060), duplicate key name (1061), can't drop field or key (1091), unknown
/// table (1146) … on the statements that create or drop those.
const ALREADY_APPLIED: &[u16] = &[1007, 1008, 1050, 1051, 1060, 1061, 1091, 1146];

/// The progress recorded for one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    pub ddl_ts: u64,
    pub finished: bool,
}

/// True for DDLs that must run without `USE <db>` (the database may not exist).
fn is_database_level(action: ActionType) -> bool {
    matches!(
        action,
        ActionType::CREATE_SCHEMA | ActionType::DROP_SCHEMA | ActionType::RECOVER_SCHEMA
    )
}

/// Reads the progress row of `table_id`.
pub(crate) async fn read_progress(
    pool: &sqlx::MySqlPool,
    cfg: &MySqlConfig,
    table_id: i64,
) -> Result<Option<Progress>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT ddl_ts, finished FROM tidb_cdc.ddl_ts_v1 \
         WHERE ticdc_cluster_id = ? AND changefeed = ? AND table_id = ?",
    )
    .bind(cfg.cluster_id.as_str())
    .bind(cfg.changefeed_id.as_str())
    .bind(table_id)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(r) => {
            let ddl_ts: u64 = r.try_get(0)?;
            let finished: bool = r.try_get(1)?;
            Ok(Some(Progress { ddl_ts, finished }))
        }
        None => Ok(None),
    }
}

async fn write_progress(
    pool: &sqlx::MySqlPool,
    cfg: &MySqlConfig,
    table_id: i64,
    ddl: &DdlEvent,
    finished: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tidb_cdc.ddl_ts_v1 (ticdc_cluster_id, changefeed, ddl_ts, table_id, \
         finished, table_name_in_ddl_job, db_name_in_ddl_job, is_syncpoint) \
         VALUES (?, ?, ?, ?, ?, ?, ?, FALSE) \
         ON DUPLICATE KEY UPDATE ddl_ts = VALUES(ddl_ts), finished = VALUES(finished), \
         table_name_in_ddl_job = VALUES(table_name_in_ddl_job), \
         db_name_in_ddl_job = VALUES(db_name_in_ddl_job), is_syncpoint = FALSE",
    )
    .bind(cfg.cluster_id.as_str())
    .bind(cfg.changefeed_id.as_str())
    .bind(ddl.commit_ts.0)
    .bind(table_id)
    .bind(finished)
    .bind(ddl.table_name.as_str())
    .bind(ddl.schema_name.as_str())
    .execute(pool)
    .await
    .map(|_| ())
}

/// Runs `sql` with the sink's retry policy for reads and progress writes; permanent errors
/// become [`SinkError::Rejected`] about `what`.
async fn with_retries<T, F, Fut>(
    cfg: &MySqlConfig,
    what: &str,
    timeout: Duration,
    scrub: &(dyn Fn(String) -> String + Sync),
    mut op: F,
) -> Result<T, SinkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut backoff = cfg.retry_backoff;
    let attempts = cfg.retry_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (class, reason) = match tokio::time::timeout(timeout, op()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => (classify(&e), scrub(describe(&e))),
            Err(_) => (
                ErrorClass::Retryable,
                format!("timed out after {timeout:?}"),
            ),
        };
        match class {
            ErrorClass::Retryable if attempt < attempts => {
                tracing::warn!(%what, %reason, attempt, "mysql sink: retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.retry_backoff_max);
            }
            ErrorClass::Retryable => {
                return Err(SinkError::RetriesExhausted {
                    what: what.to_string(),
                    attempts: attempt,
                    reason,
                });
            }
            ErrorClass::Closed => return Err(SinkError::Closed),
            ErrorClass::Duplicate | ErrorClass::Permanent => {
                return Err(SinkError::Rejected {
                    what: what.to_string(),
                    reason,
                });
            }
        }
    }
}

/// What `execute_ddl` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DdlOutcome {
    /// The DDL ran.
    Executed,
    /// The progress table says it ran before.
    Skipped,
}

/// Runs `ddl` downstream unless it ran already (see the module docs).
pub(crate) async fn execute_ddl(
    pool: &sqlx::MySqlPool,
    cfg: &MySqlConfig,
    ddl: &DdlEvent,
    scrub: &(dyn Fn(String) -> String + Sync),
) -> Result<DdlOutcome, SinkError> {
    let table_id = if is_database_level(ddl.action) {
        0
    } else {
        ddl.table_id
    };
    let short: String = ddl.query.chars().take(200).collect();
    let what = format!("DDL {short:?} (commit ts {})", ddl.commit_ts);
    let progress = with_retries(cfg, &what, cfg.read_timeout, scrub, || {
        read_progress(pool, cfg, table_id)
    })
    .await?;
    let replaying = match progress {
        Some(p) if p.ddl_ts > ddl.commit_ts.0 || (p.ddl_ts == ddl.commit_ts.0 && p.finished) => {
            tracing::info!(%what, "mysql sink: DDL already executed, skipping");
            return Ok(DdlOutcome::Skipped);
        }
        Some(p) => p.ddl_ts == ddl.commit_ts.0,
        None => false,
    };
    if ddl.query.trim().is_empty() {
        return Err(SinkError::Rejected {
            what,
            reason: "the DDL event has no query text".to_string(),
        });
    }
    with_retries(cfg, &what, cfg.write_timeout, scrub, || {
        write_progress(pool, cfg, table_id, ddl, false)
    })
    .await?;

    let use_db = (!is_database_level(ddl.action) && !ddl.schema_name.is_empty())
        .then(|| format!("USE {}", quote_ident(&ddl.schema_name)));
    let use_db = &use_db;
    let result = with_retries(cfg, &what, cfg.write_timeout, scrub, move || async move {
        let mut conn = pool.acquire().await?;
        if let Some(use_db) = &use_db {
            sqlx::raw_sql(AssertSqlSafe(use_db.clone()))
                .execute(&mut *conn)
                .await?;
        }
        match sqlx::raw_sql(AssertSqlSafe(ddl.query.clone()))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if replaying && error_number(&e).is_some_and(|n| ALREADY_APPLIED.contains(&n)) =>
            {
                tracing::info!(
                    error = %describe(&e),
                    "mysql sink: replayed DDL was already applied"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    })
    .await;
    result?;
    with_retries(cfg, &what, cfg.write_timeout, scrub, || {
        write_progress(pool, cfg, table_id, ddl, true)
    })
    .await?;
    Ok(DdlOutcome::Executed)
}
