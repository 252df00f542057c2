//! TiCDC's canal-json: one JSON object per row change, followed by the terminator (CRLF by
//! default, as TiCDC's storage sink writes it).
//!
//! Why field-compatible with TiCDC rather than a format of our own: Flink, canal adapters and
//! TiCDC's own storage consumer already read these files. The rules that matter to them:
//!
//! - keys in TiCDC's order: `id` (always 0), `database`, `table`, `pkNames` (PRIMARY KEY columns
//!   or `null`), `isDdl`, `type` (`INSERT`/`UPDATE`/`DELETE`, or a canal DDL type), `es` (commit
//!   ts physical milliseconds), `ts` (encode time, milliseconds), `sql` (empty for rows),
//!   `sqlType` (`java.sql.Types` per column), `mysqlType`, `old`, `data`, then `_tidb`
//!   (`{"commitTs":N}`) when the TiDB extension is enabled;
//! - `data` is a one-element array holding column → string-or-null; a delete carries the old
//!   row in `data`; `old` is the old row for an update and `null` otherwise;
//! - every value is a string: integers in decimal, FLOAT/DOUBLE as Go's `'f'` shortest form,
//!   DECIMAL/DATE/TIME/JSON in MySQL's text form, ENUM as its 1-based index, SET as its bit
//!   mask, BIT as an unsigned integer, binary strings as ISO-8859-1 (each byte one code point),
//!   text as UTF-8 (invalid sequences replaced by U+FFFD, as Go's JSON writer does);
//! - virtual generated columns are left out.
//!
//! `sqlType` and `mysqlType` are written in column order (TiCDC iterates a Go map for
//! `mysqlType`, so its order is random there; JSON readers do not care).

use tidal_model::ddl::ActionType;
use tidal_model::mysql;
use tidal_model::schema::{ColumnInfo, TableInfo};
use tidal_model::{Datum, DdlEvent, RowChange, RowChangeKind};

use crate::encode::types::{
    go_float32_f, go_float64_f, is_binary, is_skipped_column, is_string_type, java_sql_type,
    latin1_to_string, mysql_type_full, mysql_type_short, push_json_string,
};
use crate::encode::{CRLF, Protocol, RowEncoder, encode_error};
use crate::sink::{SinkError, SinkTxn};

/// Canal-json options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanalJsonConfig {
    /// Add TiCDC's `_tidb` object (`{"commitTs":N}`), which lets consumers order and dedupe by
    /// commit ts. Default false, as in TiCDC.
    pub enable_tidb_extension: bool,
    /// Write full column types in `mysqlType` (`decimal(10,2)`) instead of short names
    /// (`decimal`). TiCDC's `content-compatible`; default false.
    pub content_compatible: bool,
    /// Written after every message. Default CRLF.
    pub terminator: String,
}

impl Default for CanalJsonConfig {
    fn default() -> Self {
        CanalJsonConfig {
            enable_tidb_extension: false,
            content_compatible: false,
            terminator: CRLF.to_string(),
        }
    }
}

/// The canal-json encoder.
#[derive(Debug)]
pub struct CanalJsonEncoder {
    config: CanalJsonConfig,
    /// A fixed `ts` for reproducible output (tests); `None` uses the wall clock.
    build_time_ms: Option<i64>,
}

/// Converts a TiDB timestamp to canal's `es`: its physical part in milliseconds.
pub fn canal_ts(commit_ts: u64) -> i64 {
    (commit_ts >> 18) as i64
}

/// The canal event type of a DDL action (canal's DruidDdlParser categories, as TiCDC maps
/// them): `CREATE`, `RENAME`, `CINDEX`, `DINDEX`, `ALTER`, `ERASE`, `TRUNCATE` or `QUERY`.
pub fn canal_ddl_type(action: ActionType) -> &'static str {
    type A = ActionType;
    match action {
        A::CREATE_TABLE => "CREATE",
        A::RENAME_TABLE | A::RENAME_TABLES => "RENAME",
        A::ADD_INDEX | A::ADD_FOREIGN_KEY | A::ADD_PRIMARY_KEY => "CINDEX",
        A::DROP_INDEX | A::DROP_FOREIGN_KEY | A::DROP_PRIMARY_KEY => "DINDEX",
        A::ADD_COLUMN
        | A::DROP_COLUMN
        | A::MODIFY_COLUMN
        | A::REBASE_AUTO_ID
        | A::SET_DEFAULT_VALUE
        | A::MODIFY_TABLE_COMMENT
        | A::RENAME_INDEX
        | A::ADD_TABLE_PARTITION
        | A::DROP_TABLE_PARTITION
        | A::MODIFY_TABLE_CHARSET_AND_COLLATE
        | A::TRUNCATE_TABLE_PARTITION
        | A::ALTER_INDEX_VISIBILITY
        | A::MULTI_SCHEMA_CHANGE
        | A::REORGANIZE_PARTITION
        | A::ALTER_TABLE_PARTITIONING
        | A::REMOVE_PARTITIONING
        | A::ADD_COLUMNS
        | A::DROP_COLUMNS => "ALTER",
        A::DROP_TABLE => "ERASE",
        A::TRUNCATE_TABLE => "TRUNCATE",
        _ => "QUERY",
    }
}

/// Renders one value as canal-json's string, or `None` for NULL.
pub fn canal_value(col: &ColumnInfo, value: &Datum) -> Result<Option<String>, SinkError> {
    let ft = &col.field_type;
    let s = match value {
        Datum::Null => return Ok(None),
        Datum::Int(i) => i.to_string(),
        Datum::Uint(u) => u.to_string(),
        Datum::Float32(f) => go_float32_f(*f),
        Datum::Float64(f) => {
            if ft.tp == mysql::TYPE_FLOAT {
                go_float32_f(*f as f32)
            } else {
                go_float64_f(*f)
            }
        }
        Datum::Bytes(b) => {
            if is_string_type(ft.tp) && is_binary(ft) {
                latin1_to_string(b)
            } else {
                String::from_utf8_lossy(b).into_owned()
            }
        }
        Datum::Decimal(d) => d.to_string(),
        Datum::Time(t) => t.to_string(),
        Datum::Duration(d) => d.to_string(),
        Datum::Enum(i) => i.to_string(),
        Datum::Set(m) => m.to_string(),
        Datum::Bit(b) => b.to_string(),
        Datum::Json(j) => j
            .to_text()
            .map_err(|e| encode_error(format!("JSON column {}", col.name.O), e.to_string()))?,
    };
    Ok(Some(s))
}

/// The columns a row of `info` carries in canal-json and csv: the public columns without virtual
/// generated ones, each with its position in `RowChange` values.
pub(crate) fn encoded_columns(info: &TableInfo) -> Vec<(usize, &ColumnInfo)> {
    info.public_columns()
        .into_iter()
        .enumerate()
        .filter(|(_, c)| !is_skipped_column(c))
        .collect()
}

/// Picks a row's values, checking they line up with the table's public columns.
pub(crate) fn row_values<'a>(
    info: &TableInfo,
    values: Option<&'a Vec<Datum>>,
    which: &str,
) -> Result<&'a [Datum], SinkError> {
    let values = values.ok_or_else(|| {
        encode_error(
            format!("row of {}", info.name.O),
            format!("the {which} values are missing"),
        )
    })?;
    let expected = info.cols.iter().filter(|c| c.is_public()).count();
    if values.len() != expected {
        return Err(encode_error(
            format!("row of {}", info.name.O),
            format!(
                "{} {which} values for {expected} public columns",
                values.len()
            ),
        ));
    }
    Ok(values)
}

impl CanalJsonEncoder {
    /// An encoder with `config`.
    pub fn new(config: CanalJsonConfig) -> CanalJsonEncoder {
        CanalJsonEncoder {
            config,
            build_time_ms: None,
        }
    }

    /// Pins the `ts` field (encode time) to `ms`, for reproducible output.
    pub fn with_build_time(mut self, ms: i64) -> CanalJsonEncoder {
        self.build_time_ms = Some(ms);
        self
    }

    fn build_time(&self) -> i64 {
        self.build_time_ms.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        })
    }

    /// Appends one row change's message (without terminator).
    fn encode_row(
        &self,
        schema: &str,
        info: &TableInfo,
        row: &RowChange,
        out: &mut Vec<u8>,
    ) -> Result<(), SinkError> {
        let columns = encoded_columns(info);
        if columns.is_empty() {
            return Err(encode_error(
                format!("row of {}", info.name.O),
                "the table has no columns to encode",
            ));
        }
        let (kind, main, old) = match row.kind {
            RowChangeKind::Insert => ("INSERT", row_values(info, row.new.as_ref(), "new")?, None),
            RowChangeKind::Delete => ("DELETE", row_values(info, row.old.as_ref(), "old")?, None),
            RowChangeKind::Update => {
                let new = row_values(info, row.new.as_ref(), "new")?;
                match row.old.as_ref() {
                    Some(_) => (
                        "UPDATE",
                        new,
                        Some(row_values(info, row.old.as_ref(), "old")?),
                    ),
                    // TiCDC calls a change without old values an insert.
                    None => ("INSERT", new, None),
                }
            }
        };
        out.extend_from_slice(b"{\"id\":0,\"database\":");
        push_json_string(out, schema);
        out.extend_from_slice(b",\"table\":");
        push_json_string(out, &info.name.O);
        out.extend_from_slice(b",\"pkNames\":");
        let pks: Vec<&str> = columns
            .iter()
            .filter(|(_, c)| c.is_pri_key())
            .map(|(_, c)| c.name.O.as_str())
            .collect();
        if pks.is_empty() {
            out.extend_from_slice(b"null");
        } else {
            out.push(b'[');
            for (i, pk) in pks.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_string(out, pk);
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"isDdl\":false,\"type\":");
        push_json_string(out, kind);
        out.extend_from_slice(
            format!(
                ",\"es\":{},\"ts\":{},\"sql\":\"\",\"sqlType\":{{",
                canal_ts(row.commit_ts.0),
                self.build_time()
            )
            .as_bytes(),
        );
        for (n, (pos, col)) in columns.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            push_json_string(out, &col.name.O);
            let v = main.get(*pos).unwrap_or(&Datum::Null);
            out.extend_from_slice(format!(":{}", java_sql_type(&col.field_type, v)).as_bytes());
        }
        out.extend_from_slice(b"},\"mysqlType\":{");
        for (n, (_, col)) in columns.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            push_json_string(out, &col.name.O);
            out.push(b':');
            let t = if self.config.content_compatible {
                mysql_type_full(&col.field_type)
            } else {
                mysql_type_short(&col.field_type)
            };
            push_json_string(out, &t);
        }
        out.extend_from_slice(b"},\"old\":");
        match old {
            Some(old) => push_values(&columns, old, out)?,
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"data\":");
        push_values(&columns, main, out)?;
        if self.config.enable_tidb_extension {
            out.extend_from_slice(
                format!(",\"_tidb\":{{\"commitTs\":{}}}", row.commit_ts.0).as_bytes(),
            );
        }
        out.push(b'}');
        Ok(())
    }
}

fn push_values(
    columns: &[(usize, &ColumnInfo)],
    values: &[Datum],
    out: &mut Vec<u8>,
) -> Result<(), SinkError> {
    out.extend_from_slice(b"[{");
    for (n, (pos, col)) in columns.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        push_json_string(out, &col.name.O);
        out.push(b':');
        match canal_value(col, values.get(*pos).unwrap_or(&Datum::Null))? {
            Some(s) => push_json_string(out, &s),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"}]");
    Ok(())
}

impl RowEncoder for CanalJsonEncoder {
    fn encode_txn(&mut self, txn: &SinkTxn, out: &mut Vec<u8>) -> Result<usize, SinkError> {
        let info = &txn.table.info;
        for row in &txn.rows {
            self.encode_row(&txn.table.schema_name, info, row, out)?;
            out.extend_from_slice(self.config.terminator.as_bytes());
        }
        Ok(txn.rows.len())
    }

    fn encode_ddl(&mut self, ddl: &DdlEvent, out: &mut Vec<u8>) -> Result<bool, SinkError> {
        out.extend_from_slice(b"{\"id\":0,\"database\":");
        push_json_string(out, &ddl.schema_name);
        out.extend_from_slice(b",\"table\":");
        push_json_string(out, &ddl.table_name);
        out.extend_from_slice(b",\"pkNames\":null,\"isDdl\":true,\"type\":");
        push_json_string(out, canal_ddl_type(ddl.action));
        out.extend_from_slice(
            format!(
                ",\"es\":{},\"ts\":{},\"sql\":",
                canal_ts(ddl.commit_ts.0),
                self.build_time()
            )
            .as_bytes(),
        );
        push_json_string(out, &ddl.query);
        out.extend_from_slice(b",\"sqlType\":null,\"mysqlType\":null,\"data\":null,\"old\":null");
        if self.config.enable_tidb_extension {
            out.extend_from_slice(
                format!(",\"_tidb\":{{\"commitTs\":{}}}", ddl.commit_ts.0).as_bytes(),
            );
        }
        out.push(b'}');
        out.extend_from_slice(self.config.terminator.as_bytes());
        Ok(true)
    }

    fn file_extension(&self) -> &str {
        Protocol::CanalJson.file_extension()
    }

    fn protocol(&self) -> Protocol {
        Protocol::CanalJson
    }
}
