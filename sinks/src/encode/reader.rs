//! An independent decoder for canal-json and csv files: bytes back to rows.
//!
//! Tests use it to prove that files reproduce the upstream rows, and `tidal verify` will use it to
//! compare a storage sink's output with the upstream. It is written from the format rules, not
//! from the encoders (it shares only the byte codecs of [`crate::encode::types`]), so an encoder
//! bug does not cancel itself out.
//!
//! Files can end in a torn record: the storage sink appends batch by batch, and a crash in the
//! middle of an unacknowledged batch can leave a partial last record. The parsers therefore
//! consume only records that end with the terminator and report where the complete part ends
//! ([`Decoded::complete_len`]) and whether anything followed it ([`Decoded::torn_tail`]).
//! Everything else that does not follow the format is an error, never a panic.

use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use crate::encode::csv::{BinaryEncoding, CsvConfig};
use crate::encode::types::{base64_decode, hex_decode, string_to_latin1};

/// A row change's kind as a file states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowOp {
    /// `INSERT` / `I`.
    Insert,
    /// `UPDATE` / `U` (or a csv `D`+`I` pair flagged as an update).
    Update,
    /// `DELETE` / `D`.
    Delete,
}

/// A column value as text bytes (`None` = SQL NULL). Binary columns come back as their raw bytes
/// (ISO-8859-1, base64 or hex undone); other values as the bytes of their text form.
pub type Value = Option<Vec<u8>>;

/// One decoded row change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRow {
    /// The operation.
    pub op: RowOp,
    /// Database name.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// The commit ts, when the file carries it (canal-json `_tidb.commitTs`, csv
    /// `include-commit-ts`).
    pub commit_ts: Option<u64>,
    /// The row's columns in file order: the new row for an insert or update, the deleted row for
    /// a delete.
    pub data: Vec<(String, Value)>,
    /// The old row of an update when the file carries it.
    pub old: Option<Vec<(String, Value)>>,
}

impl DecodedRow {
    /// The value of column `name` in `data`, or `None` if there is no such column.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.data.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// The result of parsing a file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<T> {
    /// The complete records, in file order.
    pub items: Vec<T>,
    /// How many bytes the complete records span.
    pub complete_len: usize,
    /// True if bytes follow the last complete record (a torn or still-growing tail).
    pub torn_tail: bool,
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {format} at byte {offset}: {reason}")]
pub struct DecodeError {
    /// `canal-json` or `csv`.
    pub format: &'static str,
    /// Offset of the record that failed.
    pub offset: usize,
    /// What was wrong.
    pub reason: String,
}

fn err(format: &'static str, offset: usize, reason: impl Into<String>) -> DecodeError {
    DecodeError {
        format,
        offset,
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// canal-json

/// A JSON object read as an ordered list of entries (canal-json column order matters to
/// readers; `serde_json::Map` would sort it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Ordered<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    entries.push((k, v));
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(V2(std::marker::PhantomData))
    }
}

#[derive(Debug, Deserialize)]
struct TidbExt {
    #[serde(rename = "commitTs", default)]
    commit_ts: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct CanalMessage {
    #[serde(default)]
    database: String,
    #[serde(default)]
    table: String,
    #[serde(rename = "isDdl", default)]
    is_ddl: bool,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(rename = "mysqlType", default)]
    mysql_type: Option<Ordered<String>>,
    #[serde(default)]
    data: Option<Vec<Ordered<Option<String>>>>,
    #[serde(default)]
    old: Option<Vec<Ordered<Option<String>>>>,
    #[serde(rename = "_tidb", default)]
    tidb: Option<TidbExt>,
}

/// A canal-json message that is not a row change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanalDdl {
    /// Database name.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// The canal type (`CREATE`, `ALTER`, `QUERY`, …).
    pub kind: String,
    /// Commit ts from `_tidb`, if present.
    pub commit_ts: Option<u64>,
}

/// One canal-json message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanalRecord {
    /// A row change.
    Row(DecodedRow),
    /// A DDL (`isDdl: true`).
    Ddl(CanalDdl),
}

fn is_binary_mysql_type(t: &str) -> bool {
    t.contains("blob") || t.contains("binary")
}

fn canal_values(
    row: Ordered<Option<String>>,
    types: &[(String, String)],
    offset: usize,
) -> Result<Vec<(String, Value)>, DecodeError> {
    row.0
        .into_iter()
        .map(|(name, v)| {
            let binary = types
                .iter()
                .find(|(n, _)| *n == name)
                .is_some_and(|(_, t)| is_binary_mysql_type(t));
            let bytes = match v {
                None => None,
                Some(s) if binary => Some(string_to_latin1(&s).ok_or_else(|| {
                    err(
                        "canal-json",
                        offset,
                        format!("binary column {name} holds a character above U+00FF"),
                    )
                })?),
                Some(s) => Some(s.into_bytes()),
            };
            Ok((name, bytes))
        })
        .collect()
}

fn single_row(
    rows: Option<Vec<Ordered<Option<String>>>>,
    what: &str,
    offset: usize,
) -> Result<Option<Ordered<Option<String>>>, DecodeError> {
    match rows {
        None => Ok(None),
        Some(mut v) if v.len() == 1 => Ok(v.pop()),
        Some(v) => Err(err(
            "canal-json",
            offset,
            format!("`{what}` holds {} rows, expected 1", v.len()),
        )),
    }
}

fn decode_canal_message(line: &[u8], offset: usize) -> Result<CanalRecord, DecodeError> {
    let msg: CanalMessage =
        serde_json::from_slice(line).map_err(|e| err("canal-json", offset, e.to_string()))?;
    let commit_ts = msg.tidb.and_then(|t| t.commit_ts);
    if msg.is_ddl {
        return Ok(CanalRecord::Ddl(CanalDdl {
            schema: msg.database,
            table: msg.table,
            kind: msg.kind,
            commit_ts,
        }));
    }
    let op = match msg.kind.as_str() {
        "INSERT" => RowOp::Insert,
        "UPDATE" => RowOp::Update,
        "DELETE" => RowOp::Delete,
        other => {
            return Err(err(
                "canal-json",
                offset,
                format!("unknown row type {other:?}"),
            ));
        }
    };
    let types = msg.mysql_type.unwrap_or_default().0;
    let data = single_row(msg.data, "data", offset)?
        .ok_or_else(|| err("canal-json", offset, "row message without `data`"))?;
    let old = single_row(msg.old, "old", offset)?;
    if op == RowOp::Update && old.is_none() {
        return Err(err("canal-json", offset, "UPDATE without `old`"));
    }
    Ok(CanalRecord::Row(DecodedRow {
        op,
        schema: msg.database,
        table: msg.table,
        commit_ts,
        data: canal_values(data, &types, offset)?,
        old: old.map(|o| canal_values(o, &types, offset)).transpose()?,
    }))
}

/// Parses canal-json messages, each ending with `terminator` (CRLF for TiCDC's files; a bare LF
/// is accepted when the terminator is CRLF, the CR being JSON whitespace).
pub fn parse_canal_json(
    bytes: &[u8],
    terminator: &str,
) -> Result<Decoded<CanalRecord>, DecodeError> {
    let term = terminator.as_bytes();
    if term.is_empty() {
        return Err(err("canal-json", 0, "empty terminator"));
    }
    // The last byte of the terminator ends every record; JSON text never holds a raw CR or LF
    // inside strings, so splitting on it is exact for the usual terminators.
    let Some(&end_byte) = term.last() else {
        return Err(err("canal-json", 0, "empty terminator"));
    };
    let mut items = Vec::new();
    let mut pos = 0usize;
    while let Some(rel) = bytes
        .get(pos..)
        .and_then(|rest| rest.iter().position(|&b| b == end_byte))
    {
        let end = pos + rel + 1;
        let line = bytes.get(pos..end).unwrap_or(&[]);
        let body = line.strip_suffix(term).unwrap_or(line);
        if body.iter().all(u8::is_ascii_whitespace) {
            pos = end;
            continue;
        }
        items.push(decode_canal_message(body, pos)?);
        pos = end;
    }
    Ok(Decoded {
        items,
        complete_len: pos,
        torn_tail: pos < bytes.len(),
    })
}

/// Parses canal-json and keeps only the row changes.
pub fn parse_canal_json_rows(
    bytes: &[u8],
    terminator: &str,
) -> Result<Decoded<DecodedRow>, DecodeError> {
    let d = parse_canal_json(bytes, terminator)?;
    Ok(Decoded {
        items: d
            .items
            .into_iter()
            .filter_map(|r| match r {
                CanalRecord::Row(row) => Some(row),
                CanalRecord::Ddl(_) => None,
            })
            .collect(),
        complete_len: d.complete_len,
        torn_tail: d.torn_tail,
    })
}

// ---------------------------------------------------------------------------------------------
// csv

/// One raw csv field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawField {
    /// Enclosed in quotes (quotes undoubled).
    Quoted(Vec<u8>),
    /// Not quoted (backslash escapes undone when no quote is configured).
    Bare(Vec<u8>),
    /// The null string, unquoted and unescaped: SQL NULL.
    Null,
}

impl RawField {
    /// The field's value: `None` for NULL.
    pub fn value(&self) -> Value {
        match self {
            RawField::Quoted(b) | RawField::Bare(b) => Some(b.clone()),
            RawField::Null => None,
        }
    }

    fn text(&self) -> &[u8] {
        match self {
            RawField::Quoted(b) | RawField::Bare(b) => b,
            RawField::Null => &[],
        }
    }
}

enum FieldEnd {
    Delimiter,
    Record,
}

/// Parses csv records with `config`'s delimiter, quote and terminator.
pub fn parse_csv_records(
    bytes: &[u8],
    config: &CsvConfig,
) -> Result<Decoded<Vec<RawField>>, DecodeError> {
    let delim = config.delimiter.as_bytes();
    let term = config.terminator.as_bytes();
    if delim.is_empty() || term.is_empty() {
        return Err(err("csv", 0, "empty delimiter or terminator"));
    }
    let quote = config.quote.as_bytes().first().copied();
    let mut items = Vec::new();
    let mut record_start = 0usize;
    let mut pos = 0usize;
    let mut fields: Vec<RawField> = Vec::new();
    'records: loop {
        if pos >= bytes.len() {
            break;
        }
        // One field.
        let field;
        if quote.is_some() && bytes.get(pos).copied() == quote {
            let q = quote.unwrap_or(b'"');
            let mut text = Vec::new();
            let mut i = pos + 1;
            loop {
                match bytes.get(i) {
                    None => break 'records, // torn inside a quoted field
                    Some(&b) if b == q => {
                        if bytes.get(i + 1) == Some(&q) {
                            text.push(q);
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(&b) => {
                        text.push(b);
                        i += 1;
                    }
                }
            }
            field = RawField::Quoted(text);
            pos = i;
        } else {
            let mut text = Vec::new();
            let mut i = pos;
            loop {
                let rest = bytes.get(i..).unwrap_or(&[]);
                if rest.is_empty() || rest.starts_with(delim) || rest.starts_with(term) {
                    break;
                }
                let b = rest.first().copied().unwrap_or(0);
                if quote.is_none() && b == b'\\' {
                    match rest.get(1) {
                        None => break 'records, // torn after a backslash
                        Some(b'r') => text.push(b'\r'),
                        Some(b'n') => text.push(b'\n'),
                        Some(&other) => text.push(other),
                    }
                    i += 2;
                } else {
                    text.push(b);
                    i += 1;
                }
            }
            field = if bytes.get(pos..i) == Some(config.null.as_bytes()) {
                RawField::Null
            } else {
                RawField::Bare(text)
            };
            pos = i;
        }
        let rest = bytes.get(pos..).unwrap_or(&[]);
        let end = if rest.starts_with(delim) {
            pos += delim.len();
            FieldEnd::Delimiter
        } else if rest.starts_with(term) {
            pos += term.len();
            FieldEnd::Record
        } else if rest.is_empty() || term.starts_with(rest) || delim.starts_with(rest) {
            break; // torn before the terminator
        } else {
            return Err(err(
                "csv",
                record_start,
                format!("unexpected byte after a field at offset {pos}"),
            ));
        };
        fields.push(field);
        if let FieldEnd::Record = end {
            items.push(std::mem::take(&mut fields));
            record_start = pos;
        }
    }
    Ok(Decoded {
        items,
        complete_len: record_start,
        torn_tail: record_start < bytes.len(),
    })
}

/// A column as the csv reader needs to know it: its name, and whether its values are binary
/// (then base64 or hex encoded in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvColumn {
    /// Column name.
    pub name: String,
    /// True for BINARY/VARBINARY/BLOB columns.
    pub binary: bool,
}

fn utf8_field(f: &RawField, what: &str, offset: usize) -> Result<String, DecodeError> {
    String::from_utf8(f.text().to_vec())
        .map_err(|_| err("csv", offset, format!("{what} is not UTF-8")))
}

/// Parses csv records into rows of a table whose columns are `columns` (csv has no column
/// names; they come from the table's schema file). With `output-old-value`, a `D`+`I` pair
/// flagged as an update becomes one [`RowOp::Update`] with `old`.
pub fn parse_csv_rows(
    bytes: &[u8],
    config: &CsvConfig,
    columns: &[CsvColumn],
) -> Result<Decoded<DecodedRow>, DecodeError> {
    let raw = parse_csv_records(bytes, config)?;
    let meta = 3 + usize::from(config.include_commit_ts) + usize::from(config.output_old_value);
    let mut rows: Vec<DecodedRow> = Vec::with_capacity(raw.items.len());
    let mut pending_old: Option<DecodedRow> = None;
    for (n, rec) in raw.items.iter().enumerate() {
        let offset = n; // record number, for messages
        if rec.len() != meta + columns.len() {
            return Err(err(
                "csv",
                offset,
                format!(
                    "record {n} has {} fields, expected {}",
                    rec.len(),
                    meta + columns.len()
                ),
            ));
        }
        let field = |i: usize| {
            rec.get(i)
                .ok_or_else(|| err("csv", offset, "missing field"))
        };
        let op = match field(0)?.text() {
            b"I" => RowOp::Insert,
            b"U" => RowOp::Update,
            b"D" => RowOp::Delete,
            other => {
                return Err(err(
                    "csv",
                    offset,
                    format!("unknown operation {:?}", String::from_utf8_lossy(other)),
                ));
            }
        };
        let table = utf8_field(field(1)?, "table name", offset)?;
        let schema = utf8_field(field(2)?, "schema name", offset)?;
        let mut idx = 3;
        let commit_ts = if config.include_commit_ts {
            let s = utf8_field(field(idx)?, "commit ts", offset)?;
            idx += 1;
            Some(
                s.parse::<u64>()
                    .map_err(|_| err("csv", offset, format!("bad commit ts {s:?}")))?,
            )
        } else {
            None
        };
        let is_update = if config.output_old_value {
            let s = utf8_field(field(idx)?, "is-update flag", offset)?;
            idx += 1;
            match s.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(err("csv", offset, format!("bad is-update flag {s:?}"))),
            }
        } else {
            false
        };
        let mut data = Vec::with_capacity(columns.len());
        for (i, col) in columns.iter().enumerate() {
            let f = field(idx + i)?;
            let v = match f.value() {
                Some(text) if col.binary => {
                    let s = String::from_utf8(text).map_err(|_| {
                        err(
                            "csv",
                            offset,
                            format!("binary column {} is not ASCII", col.name),
                        )
                    })?;
                    let decoded = match config.binary_encoding {
                        BinaryEncoding::Base64 => base64_decode(&s),
                        BinaryEncoding::Hex => hex_decode(&s),
                    };
                    Some(decoded.ok_or_else(|| {
                        err(
                            "csv",
                            offset,
                            format!("binary column {} is not encoded", col.name),
                        )
                    })?)
                }
                other => other,
            };
            data.push((col.name.clone(), v));
        }
        let row = DecodedRow {
            op,
            schema,
            table,
            commit_ts,
            data,
            old: None,
        };
        match (op, is_update, pending_old.take()) {
            (RowOp::Delete, true, None) => pending_old = Some(row),
            (RowOp::Insert, true, Some(old)) => rows.push(DecodedRow {
                op: RowOp::Update,
                old: Some(old.data),
                ..row
            }),
            (_, _, Some(_)) | (RowOp::Insert, true, None) => {
                return Err(err(
                    "csv",
                    offset,
                    "an update's old-value record is not followed by its new-value record",
                ));
            }
            (_, _, None) => rows.push(row),
        }
    }
    if pending_old.is_some() {
        return Err(err(
            "csv",
            raw.items.len(),
            "the last update's new-value record is missing",
        ));
    }
    Ok(Decoded {
        items: rows,
        complete_len: raw.complete_len,
        torn_tail: raw.torn_tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::csv::{CsvField, CsvWriter};
    use proptest::prelude::*;

    fn cfg(delim: &str, quote: &str) -> CsvConfig {
        CsvConfig {
            delimiter: delim.into(),
            quote: quote.into(),
            ..CsvConfig::default()
        }
    }

    #[test]
    fn csv_records_quoted_and_bare() {
        let c = CsvConfig::default();
        let d = parse_csv_records(b"\"I\",\"t\",\"a\"\"b,c\r\nd\",\\N,12\r\n\"U\"", &c).unwrap();
        assert_eq!(
            d.items,
            vec![vec![
                RawField::Quoted(b"I".to_vec()),
                RawField::Quoted(b"t".to_vec()),
                RawField::Quoted(b"a\"b,c\r\nd".to_vec()),
                RawField::Null,
                RawField::Bare(b"12".to_vec()),
            ]]
        );
        assert_eq!(d.complete_len, 27);
        assert!(d.torn_tail);
        assert_eq!(d.items[0][3].value(), None);
        assert!(parse_csv_records(b"\"a\"x\r\n", &c).is_err());
    }

    #[test]
    fn csv_escape_mode() {
        let c = cfg("|", "");
        let d = parse_csv_records(b"a\\|b|\\r\\n\\\\|\\N|\\\\N\r\n", &c).unwrap();
        assert_eq!(
            d.items,
            vec![vec![
                RawField::Bare(b"a|b".to_vec()),
                RawField::Bare(b"\r\n\\".to_vec()),
                RawField::Null,
                RawField::Bare(b"\\N".to_vec()),
            ]]
        );
        assert!(!d.torn_tail);
    }

    #[test]
    fn canal_json_torn_tail_and_errors() {
        let line = br#"{"id":0,"database":"d","table":"t","pkNames":null,"isDdl":false,"type":"INSERT","es":1,"ts":2,"sql":"","sqlType":{"b":2004},"mysqlType":{"b":"blob"},"old":null,"data":[{"b":"\u00ff\u0000"}]}"#;
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\n{\"id\":");
        let d = parse_canal_json_rows(&bytes, "\r\n").unwrap();
        assert_eq!(d.items.len(), 1);
        assert_eq!(d.items[0].get("b"), Some(&Some(vec![0xff, 0])));
        assert_eq!(d.complete_len, line.len() + 2);
        assert!(d.torn_tail);
        assert!(parse_canal_json(b"{\"type\":\"INSERT\"}\r\n", "\r\n").is_err());
        assert!(parse_canal_json(b"not json\r\n", "\r\n").is_err());
    }

    fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'"'),
                Just(b','),
                Just(b'|'),
                Just(b'#'),
                Just(b'\\'),
                Just(b'\r'),
                Just(b'\n'),
                Just(b'N'),
                any::<u8>(),
            ],
            0..24,
        )
    }

    proptest! {
        #[test]
        fn csv_text_round_trips(
            values in proptest::collection::vec(arb_bytes(), 1..6),
            mode in 0usize..4,
        ) {
            let c = match mode {
                0 => CsvConfig::default(),
                1 => cfg("|#", "'"),
                2 => cfg(",", ""),
                _ => cfg("|#", ""),
            };
            let mut out = Vec::new();
            let mut w = CsvWriter::new(&c);
            for v in &values {
                w.field(&CsvField::Text(v.clone()), &mut out);
            }
            w.field(&CsvField::Null, &mut out);
            w.end(&mut out);
            let d = parse_csv_records(&out, &c).unwrap();
            prop_assert!(!d.torn_tail);
            prop_assert_eq!(d.items.len(), 1);
            let got: Vec<Value> = d.items[0].iter().map(RawField::value).collect();
            let mut want: Vec<Value> = values.into_iter().map(Some).collect();
            want.push(None);
            prop_assert_eq!(got, want);
            // Every strict prefix is a torn record, never an error or a wrong record.
            for cut in 0..out.len() {
                let p = parse_csv_records(&out[..cut], &c).unwrap();
                prop_assert!(p.items.is_empty());
            }
        }

        #[test]
        fn readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_csv_records(&bytes, &CsvConfig::default());
            let _ = parse_csv_records(&bytes, &cfg("|#", ""));
            let cols = [CsvColumn { name: "a".into(), binary: true }];
            let _ = parse_csv_rows(&bytes, &CsvConfig::default(), &cols);
            let _ = parse_canal_json(&bytes, "\r\n");
        }
    }
}
