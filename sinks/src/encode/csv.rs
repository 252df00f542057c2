//! TiCDC's csv: one record per row change.
//!
//! A record is: the operation (`I`, `U`, `D`), the table name, the schema name, the commit ts
//! (only with `include-commit-ts`), an `is-update` flag (only with `output-old-value`), then the
//! row's columns, joined by the delimiter and followed by the terminator. TiCDC's rules, kept
//! exactly because downstream loaders depend on them:
//!
//! - string-like values (the meta columns, text, binary as base64 or hex, DECIMAL, dates and
//!   times, JSON, ENUM and SET names) are enclosed in the quote character with inner quotes
//!   doubled; with no quote character configured they are instead escaped with a backslash
//!   (`\r`, `\n`, `\\`, and each delimiter byte);
//! - numbers (integers, BIT as an unsigned integer, FLOAT/DOUBLE in Go's `%v` form), the commit
//!   ts and the `true`/`false` flag are written bare;
//! - NULL is the null string (`\N` by default), bare;
//! - an update is one `U` record with the new values, or with `output-old-value` a `D` record of
//!   the old values followed by an `I` record of the new ones, both flagged `true`;
//! - text bytes are written as they are (csv is a byte format: invalid UTF-8 stays invalid).
//!
//! Defaults are TiCDC's: delimiter `,`, quote `"`, null `\N`, terminator CRLF, binary as base64.

use tidal_model::schema::ColumnInfo;
use tidal_model::{Datum, DdlEvent, RowChangeKind};

use crate::encode::canal_json::{encoded_columns, row_values};
use crate::encode::types::{
    base64_encode, enum_name, go_float32_v, go_float64_v, hex_encode, is_binary, is_string_type,
    set_names,
};
use crate::encode::{CRLF, Protocol, RowEncoder, encode_error};
use crate::sink::{SinkError, SinkTxn};
use tidal_model::mysql;

/// How csv writes the values of binary columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BinaryEncoding {
    /// Standard padded base64 (TiCDC's default).
    #[default]
    Base64,
    /// Lower-case hex.
    Hex,
}

impl BinaryEncoding {
    /// Parses `base64` or `hex`.
    pub fn parse(s: &str) -> Option<BinaryEncoding> {
        match s.to_ascii_lowercase().as_str() {
            "base64" => Some(BinaryEncoding::Base64),
            "hex" => Some(BinaryEncoding::Hex),
            _ => None,
        }
    }
}

/// Csv options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvConfig {
    /// Field separator: 1 to 3 bytes, no CR or LF. Default `,`.
    pub delimiter: String,
    /// Quote character, or empty for backslash escaping. Default `"`.
    pub quote: String,
    /// How NULL is written. Default `\N`.
    pub null: String,
    /// Write the commit ts as the fourth field. Default false.
    pub include_commit_ts: bool,
    /// Write updates as a `D` record of the old values plus an `I` record of the new ones, and add
    /// the `is-update` field to every record. Default false.
    pub output_old_value: bool,
    /// How binary values are written. Default base64.
    pub binary_encoding: BinaryEncoding,
    /// Record terminator. Default CRLF.
    pub terminator: String,
}

impl Default for CsvConfig {
    fn default() -> Self {
        CsvConfig {
            delimiter: ",".to_string(),
            quote: "\"".to_string(),
            null: "\\N".to_string(),
            include_commit_ts: false,
            output_old_value: false,
            binary_encoding: BinaryEncoding::Base64,
            terminator: CRLF.to_string(),
        }
    }
}

impl CsvConfig {
    /// Checks TiCDC's constraints: a quote of at most one byte that is not CR or LF; a delimiter
    /// of 1 to 3 bytes without CR or LF that shares no character with the quote; a non-empty
    /// terminator.
    pub fn validate(&self) -> Result<(), String> {
        if self.quote.len() > 1 {
            return Err("csv quote must be a single byte or empty".into());
        }
        if self.quote == "\r" || self.quote == "\n" {
            return Err("csv quote cannot be a line break".into());
        }
        if self.delimiter.is_empty() || self.delimiter.len() > 3 {
            return Err("csv delimiter must be 1 to 3 bytes".into());
        }
        if self.delimiter.contains(['\r', '\n']) {
            return Err("csv delimiter cannot contain a line break".into());
        }
        if !self.quote.is_empty() && self.delimiter.chars().any(|c| self.quote.contains(c)) {
            return Err("csv quote and delimiter cannot share characters".into());
        }
        if self.terminator.is_empty() {
            return Err("csv terminator cannot be empty".into());
        }
        Ok(())
    }
}

/// One csv field before layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvField {
    /// SQL NULL: the null string.
    Null,
    /// A string-like value: quoted (or escaped).
    Text(Vec<u8>),
    /// A number or flag: written bare.
    Bare(String),
}

/// The csv field of one column value.
pub fn csv_value(
    col: &ColumnInfo,
    value: &Datum,
    binary: BinaryEncoding,
) -> Result<CsvField, SinkError> {
    let ft = &col.field_type;
    Ok(match value {
        Datum::Null => CsvField::Null,
        Datum::Int(i) => CsvField::Bare(i.to_string()),
        Datum::Uint(u) => CsvField::Bare(u.to_string()),
        Datum::Float32(f) => CsvField::Bare(go_float32_v(*f)),
        Datum::Float64(f) => CsvField::Bare(if ft.tp == mysql::TYPE_FLOAT {
            go_float32_v(*f as f32)
        } else {
            go_float64_v(*f)
        }),
        Datum::Bytes(b) => {
            if is_string_type(ft.tp) && is_binary(ft) {
                CsvField::Text(
                    match binary {
                        BinaryEncoding::Base64 => base64_encode(b),
                        BinaryEncoding::Hex => hex_encode(b),
                    }
                    .into_bytes(),
                )
            } else {
                CsvField::Text(b.clone())
            }
        }
        Datum::Decimal(d) => CsvField::Text(d.to_string().into_bytes()),
        Datum::Time(t) => CsvField::Text(t.to_string().into_bytes()),
        Datum::Duration(d) => CsvField::Text(d.to_string().into_bytes()),
        Datum::Enum(i) => CsvField::Text(enum_name(ft, *i)?.into_bytes()),
        Datum::Set(m) => CsvField::Text(set_names(ft, *m)?.into_bytes()),
        Datum::Bit(b) => CsvField::Bare(b.to_string()),
        Datum::Json(j) => CsvField::Text(
            j.to_text()
                .map_err(|e| encode_error(format!("JSON column {}", col.name.O), e.to_string()))?
                .into_bytes(),
        ),
    })
}

/// Lays out csv records.
#[derive(Debug, Clone)]
pub struct CsvWriter<'a> {
    config: &'a CsvConfig,
    first: bool,
}

impl<'a> CsvWriter<'a> {
    /// A writer at the start of a record.
    pub fn new(config: &'a CsvConfig) -> CsvWriter<'a> {
        CsvWriter {
            config,
            first: true,
        }
    }

    /// Appends one field (with the delimiter before it unless it is the record's first).
    pub fn field(&mut self, field: &CsvField, out: &mut Vec<u8>) {
        if !self.first {
            out.extend_from_slice(self.config.delimiter.as_bytes());
        }
        self.first = false;
        match field {
            CsvField::Null => out.extend_from_slice(self.config.null.as_bytes()),
            CsvField::Bare(s) => out.extend_from_slice(s.as_bytes()),
            CsvField::Text(bytes) => self.text(bytes, out),
        }
    }

    fn text(&self, bytes: &[u8], out: &mut Vec<u8>) {
        let quote = self.config.quote.as_bytes();
        if let Some(&q) = quote.first() {
            out.push(q);
            for &b in bytes {
                if b == q {
                    out.push(q);
                }
                out.push(b);
            }
            out.push(q);
            return;
        }
        let delim = self.config.delimiter.as_bytes();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            let at_delim = bytes.get(i..).is_some_and(|rest| rest.starts_with(delim));
            if at_delim {
                for &d in delim {
                    out.push(b'\\');
                    out.push(d);
                }
                i += delim.len();
                continue;
            }
            match b {
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b => out.push(b),
            }
            i += 1;
        }
    }

    /// Ends the record with the terminator; the writer is ready for the next record.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.config.terminator.as_bytes());
        self.first = true;
    }
}

/// The csv encoder.
#[derive(Debug)]
pub struct CsvEncoder {
    config: CsvConfig,
}

impl CsvEncoder {
    /// An encoder with `config` (assumed valid, see [`CsvConfig::validate`]).
    pub fn new(config: CsvConfig) -> CsvEncoder {
        CsvEncoder { config }
    }

    fn record(
        &self,
        meta: &RecordMeta<'_>,
        columns: &[(usize, &ColumnInfo)],
        values: &[Datum],
        out: &mut Vec<u8>,
    ) -> Result<(), SinkError> {
        let mut w = CsvWriter::new(&self.config);
        w.field(&CsvField::Text(meta.op.as_bytes().to_vec()), out);
        w.field(&CsvField::Text(meta.table.as_bytes().to_vec()), out);
        w.field(&CsvField::Text(meta.schema.as_bytes().to_vec()), out);
        if self.config.include_commit_ts {
            w.field(&CsvField::Bare(meta.commit_ts.to_string()), out);
        }
        if self.config.output_old_value {
            w.field(&CsvField::Bare(meta.is_update.to_string()), out);
        }
        for (pos, col) in columns {
            let v = values.get(*pos).unwrap_or(&Datum::Null);
            w.field(&csv_value(col, v, self.config.binary_encoding)?, out);
        }
        w.end(out);
        Ok(())
    }
}

/// The meta fields of one csv record.
struct RecordMeta<'a> {
    op: &'a str,
    is_update: bool,
    schema: &'a str,
    table: &'a str,
    commit_ts: u64,
}

impl RowEncoder for CsvEncoder {
    fn encode_txn(&mut self, txn: &SinkTxn, out: &mut Vec<u8>) -> Result<usize, SinkError> {
        let info = &txn.table.info;
        let schema = txn.table.schema_name.as_str();
        let table = info.name.O.as_str();
        let columns = encoded_columns(info);
        for row in &txn.rows {
            let meta = |op: &'static str, is_update: bool| RecordMeta {
                op,
                is_update,
                schema,
                table,
                commit_ts: row.commit_ts.0,
            };
            match row.kind {
                RowChangeKind::Insert => {
                    let v = row_values(info, row.new.as_ref(), "new")?;
                    self.record(&meta("I", false), &columns, v, out)?;
                }
                RowChangeKind::Delete => {
                    let v = row_values(info, row.old.as_ref(), "old")?;
                    self.record(&meta("D", false), &columns, v, out)?;
                }
                RowChangeKind::Update => {
                    let new = row_values(info, row.new.as_ref(), "new")?;
                    if self.config.output_old_value && row.old.is_some() {
                        let old = row_values(info, row.old.as_ref(), "old")?;
                        self.record(&meta("D", true), &columns, old, out)?;
                        self.record(&meta("I", true), &columns, new, out)?;
                    } else {
                        self.record(&meta("U", true), &columns, new, out)?;
                    }
                }
            }
        }
        Ok(txn.rows.len())
    }

    fn encode_ddl(&mut self, _ddl: &DdlEvent, _out: &mut Vec<u8>) -> Result<bool, SinkError> {
        Ok(false)
    }

    fn file_extension(&self) -> &str {
        Protocol::Csv.file_extension()
    }

    fn protocol(&self) -> Protocol {
        Protocol::Csv
    }
}
