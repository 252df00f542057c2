//! `tidal verify`: is the downstream a faithful copy of the upstream at a ts?
//!
//! A changefeed that reports a checkpoint promises that every change committed at or below it
//! is downstream. Nothing in TiCDC checks that promise; this module does, table by table:
//!
//! 1. The upstream is read as a consistent snapshot at the ts (`upstream`): schema from the
//!    meta keys at that ts, rows from TiKV's record ranges, through PD and the KV API like any
//!    production client. A ts below the GC safe point is refused ([`VerifyError::LostByGc`])
//!    rather than compared against a partial picture.
//! 2. The downstream is a MySQL/TiDB database (`mysql`) or a storage-sink directory replayed
//!    up to the ts (`storage`).
//! 3. Every value on both sides is brought to one canonical text form per column type
//!    (`canon`), and each table gets an order-independent checksum (`compare`). Only tables
//!    whose row counts or checksums differ are compared row by row, and the report names the
//!    missing, extra and different rows.
//!
//! The default ts is the storage directory's checkpoint, or PD's current ts for MySQL (the
//! downstream should then be quiescent or caught up: a live downstream keeps moving). For MySQL
//! the two passes over a differing table read it twice; the row-by-row pass holds both sides of
//! that one table in memory.

mod canon;
mod compare;
#[cfg(test)]
mod fixtures;
mod mysql;
mod report;
mod storage;
mod upstream;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tidal_ingest::schema::{FilterError, TableFilter};
use tidal_model::Ts;
use tidal_sinks::encode::Protocol;

pub use canon::Cell;

use compare::{Columns, Digest, diff_rows};

/// Where the downstream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downstream {
    /// A MySQL-compatible database: `mysql://user:password@host:port/` (or `tidb://`).
    MySql(String),
    /// A storage sink's root directory.
    Storage {
        /// The root directory (holding `metadata` and one directory per database).
        dir: PathBuf,
        /// The files' protocol. Csv's `include-commit-ts` and `output-old-value` are detected.
        protocol: Protocol,
    },
}

/// What to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// PD endpoints of the upstream cluster.
    pub pd: Vec<String>,
    /// The snapshot ts. Default: the storage directory's checkpoint, or PD's current ts for a
    /// MySQL downstream.
    pub ts: Option<Ts>,
    /// The downstream.
    pub downstream: Downstream,
    /// Table filter rules (TiCDC syntax, e.g. `db.*`, `!db.tmp*`); empty means every table.
    /// System schemas are never compared.
    pub filter: Vec<String>,
    /// At most this many row differences are listed per table (all are counted).
    pub max_row_diffs_per_table: usize,
}

impl VerifyOptions {
    /// Options for `pd` and `downstream`, every table, at the default ts, listing 10 diffs.
    pub fn new(pd: Vec<String>, downstream: Downstream) -> VerifyOptions {
        VerifyOptions {
            pd,
            ts: None,
            downstream,
            filter: Vec::new(),
            max_row_diffs_per_table: 10,
        }
    }
}

/// How a row differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DiffKind {
    /// Upstream has the row, downstream does not.
    Missing,
    /// Downstream has a row upstream does not.
    Extra,
    /// Both have the row; this column's values differ (canonical forms; `None` = NULL).
    Different {
        /// The column name.
        column: String,
        /// Upstream's value.
        upstream: Cell,
        /// Downstream's value.
        downstream: Cell,
    },
}

/// One row difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowDiff {
    /// The row's key (`id=5`, `a=1, b="x"`), or all its columns for a table without a key.
    pub key: String,
    /// What differs (flattened in JSON: `{"key": …, "kind": "different", "column": …}`).
    #[serde(flatten)]
    pub kind: DiffKind,
}

/// The verdict on one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableReport {
    /// Database name.
    pub db: String,
    /// Table name.
    pub table: String,
    /// Rows upstream.
    pub upstream_rows: u64,
    /// Rows downstream.
    pub downstream_rows: u64,
    /// Order-independent checksum of the upstream rows (wrapping sum of row hashes).
    pub upstream_checksum: u64,
    /// The same over the downstream rows.
    pub downstream_checksum: u64,
    /// True if both sides hold the same rows.
    pub equal: bool,
    /// How many row differences there are in all.
    pub diff_count: u64,
    /// The first differences, in key order (at most `max_row_diffs_per_table`).
    pub diffs: Vec<RowDiff>,
    /// A remark on the table as a whole (missing downstream, columns missing downstream, …).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
}

/// The verdict on the whole comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The snapshot ts compared at.
    pub ts: Ts,
    /// One entry per table, sorted by database and table name.
    pub tables: Vec<TableReport>,
    /// True if every table is equal.
    pub equal: bool,
}

impl VerifyReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Why verification could not be carried out (as opposed to finding differences).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The options are inconsistent or malformed.
    #[error("{0}")]
    InvalidOptions(String),
    /// A table filter rule does not parse.
    #[error("bad table filter: {0}")]
    Filter(#[from] FilterError),
    /// The ts is below the GC safe point: the snapshot is gone.
    #[error(
        "the upstream snapshot at ts {} is lost: it is below the GC safe point {}; \
         verify at a ts at or above the safe point",
        .ts.0, .safe_point.0
    )]
    LostByGc {
        /// The ts asked for.
        ts: Ts,
        /// The GC safe point.
        safe_point: Ts,
    },
    /// Reading the upstream failed.
    #[error("upstream: {what}: {detail}")]
    Upstream {
        /// What was being done.
        what: String,
        /// The error.
        detail: String,
    },
    /// Reading the downstream failed (URLs in messages have their password masked).
    #[error("downstream: {what}: {detail}")]
    Downstream {
        /// What was being done.
        what: String,
        /// The error.
        detail: String,
    },
}

enum Down {
    MySql(mysql::MySqlDownstream),
    Storage(storage::StorageDownstream),
}

/// Compares the upstream snapshot with the downstream; see the module documentation.
///
/// `Ok` means the comparison ran: look at [`VerifyReport::equal`]. `Err` means it could not.
pub async fn verify(opts: VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let pd: Vec<String> = opts
        .pd
        .iter()
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if pd.is_empty() {
        return Err(VerifyError::InvalidOptions(
            "no PD endpoint given (--pd host:port)".into(),
        ));
    }
    let filter = if opts.filter.is_empty() {
        TableFilter::all()
    } else {
        TableFilter::new(&opts.filter)?
    };
    let max = opts.max_row_diffs_per_table;

    let mut down = match &opts.downstream {
        Downstream::MySql(url) => Down::MySql(mysql::MySqlDownstream::connect(url).await?),
        Downstream::Storage { dir, protocol } => {
            Down::Storage(storage::StorageDownstream::open(dir, *protocol)?)
        }
    };
    let up = upstream::Upstream::connect(&pd).await?;
    let ts = match (opts.ts, &down) {
        (Some(ts), Down::Storage(s)) => {
            if let Some(cp) = s.checkpoint()
                && ts.0 > cp
            {
                return Err(VerifyError::InvalidOptions(format!(
                    "--ts {} is above the storage directory's checkpoint {cp}: the files may \
                     not hold every change up to it",
                    ts.0
                )));
            }
            ts
        }
        (Some(ts), Down::MySql(_)) => ts,
        (None, Down::Storage(s)) => Ts(s.checkpoint().ok_or_else(|| {
            VerifyError::InvalidOptions(
                "the storage directory has no metadata file with a checkpoint-ts; pass --ts".into(),
            )
        })?),
        (None, Down::MySql(_)) => up.now().await?,
    };

    let tables = up.tables(ts, &filter).await?;
    let mut reports: Vec<TableReport> = Vec::with_capacity(tables.len());
    for tv in &tables {
        let db = tv.db.db_name.O.clone();
        let name = tv.info.name.O.clone();
        let cols = Columns::of(&tv.info);
        let mut up_digest = Digest::default();
        up.rows(tv, &cols, ts, |r| up_digest.add(&r)).await?;
        let mut note = None;
        let mut down_digest = Digest::default();
        let mut storage_rows = None;
        let mut present = vec![true; cols.cols.len()];
        match &mut down {
            Down::MySql(m) => match m.columns(&db, &name).await? {
                None => note = Some("table does not exist downstream".to_string()),
                Some(have) => {
                    let mut missing = Vec::new();
                    for (i, c) in cols.cols.iter().enumerate() {
                        if !have.iter().any(|h| h.eq_ignore_ascii_case(&c.info.name.O)) {
                            if let Some(p) = present.get_mut(i) {
                                *p = false;
                            }
                            missing.push(c.info.name.O.clone());
                        }
                    }
                    if !missing.is_empty() {
                        note = Some(format!(
                            "columns missing downstream: {}",
                            missing.join(", ")
                        ));
                    }
                    m.rows(&db, &name, &cols, &present, |r| down_digest.add(&r))
                        .await?;
                }
            },
            Down::Storage(s) => {
                let rows = s.rows(&db, &name, &cols, ts.0);
                down_digest = Digest::of(&rows);
                storage_rows = Some(rows);
            }
        }
        let mut report = TableReport {
            db: db.clone(),
            table: name.clone(),
            upstream_rows: up_digest.rows,
            downstream_rows: down_digest.rows,
            upstream_checksum: up_digest.checksum,
            downstream_checksum: down_digest.checksum,
            equal: up_digest == down_digest && note.is_none(),
            diff_count: 0,
            diffs: Vec::new(),
            note,
        };
        if up_digest != down_digest {
            let mut up_rows = Vec::new();
            up.rows(tv, &cols, ts, |r| up_rows.push(r)).await?;
            let down_rows = match (&mut down, storage_rows) {
                (_, Some(rows)) => rows,
                (Down::MySql(m), None) => {
                    let mut v = Vec::new();
                    if report.note.as_deref() != Some("table does not exist downstream") {
                        m.rows(&db, &name, &cols, &present, |r| v.push(r)).await?;
                    }
                    v
                }
                (Down::Storage(_), None) => Vec::new(),
            };
            // A live side can move between the passes: the row pass has the last word, and
            // the figures reported are the ones it saw.
            let (u, d) = (Digest::of(&up_rows), Digest::of(&down_rows));
            report.upstream_rows = u.rows;
            report.upstream_checksum = u.checksum;
            report.downstream_rows = d.rows;
            report.downstream_checksum = d.checksum;
            let (diffs, total) = diff_rows(&cols, up_rows, down_rows, max);
            report.diffs = diffs;
            report.diff_count = total;
            report.equal = total == 0 && report.note.is_none();
        }
        reports.push(report);
    }

    // Storage tables that the filter selects but that do not exist upstream at the ts: a table
    // dropped or renamed upstream keeps its files (storage sinks never delete data, as in
    // TiCDC), so these are listed for the reader but do not make the comparison fail — the
    // same as extra tables in a MySQL downstream, which are not compared either.
    if let Down::Storage(s) = &down {
        for (db, table) in s.tables() {
            let known = tables
                .iter()
                .any(|t| t.db.db_name.O == db && t.info.name.O == table);
            if known || !filter.matches(&db, &table) || tidal_ingest::schema::is_system_schema(&db)
            {
                continue;
            }
            reports.push(TableReport {
                db,
                table,
                upstream_rows: 0,
                downstream_rows: 0,
                upstream_checksum: 0,
                downstream_checksum: 0,
                equal: true,
                diff_count: 0,
                diffs: Vec::new(),
                note: Some(
                    "not compared: table has files downstream but does not exist upstream \
                     (dropped or renamed)"
                        .into(),
                ),
            });
        }
    }
    if let Down::MySql(m) = down {
        m.close().await;
    }
    reports.sort_by(|a, b| (&a.db, &a.table).cmp(&(&b.db, &b.table)));
    let equal = reports.iter().all(|t| t.equal);
    Ok(VerifyReport {
        ts,
        tables: reports,
        equal,
    })
}
