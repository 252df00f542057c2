//! The storage sink's directory layout and schema files, as TiCDC lays them out.
//!
//! ```text
//! <root>/metadata                                              {"checkpoint-ts":N}
//! <root>/<schema>/meta/schema_<version>_<checksum>.json        database-level DDL
//! <root>/<schema>/<table>/meta/schema_<version>_<checksum>.json the table at <version>
//! <root>/<schema>/<table>/<version>/[<date>/]CDC<index>.<json|csv>
//! <root>/<schema>/<table>/<version>/[<date>/]meta/CDC.index    name of the newest data file
//! ```
//!
//! `<version>` is the table version: the commit ts of the DDL that produced the schema the rows
//! were written with. `<index>` is zero-padded to `file-index-width` digits. TiCDC names files
//! `CDC_<dispatcherID>_<index>` when one table is split across nodes; Tidal writes each table
//! from one place and uses the classic `CDC<index>` form, which TiCDC also writes by default and
//! its consumers read. Dates are UTC (TiCDC uses the capture's local time zone).
//!
//! Schema files hold TiCDC's table definition JSON (4-space indented, as Go's
//! `json.MarshalIndent` writes it). Their checksum is the CRC-32 (IEEE) of the same JSON with
//! the columns sorted by name and without the `Version`, `TableVersion`, `Query` and `Type`
//! values, so the same table shape always gets the same checksum.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidal_model::mysql;
use tidal_model::schema::{ColumnInfo, TableInfo};

use crate::encode::types::{
    crc32_ieee, display_decimal, display_flen, go_html_escape_json, type_to_str,
};
use crate::storage::config::DateSeparator;

/// The root file holding the checkpoint.
pub const METADATA_FILE: &str = "metadata";
/// The index file inside a data directory.
pub const INDEX_FILE: &str = "meta/CDC.index";
/// The `Version` TiCDC writes in schema files.
pub const SCHEMA_FILE_VERSION: u64 = 1;

/// One data directory: a table version and an optional date.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataDir {
    /// Database name.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Table version.
    pub version: u64,
    /// Date directory, empty without one.
    pub date: String,
}

impl DataDir {
    /// The directory, relative to the root.
    pub fn rel_path(&self) -> PathBuf {
        let mut p = PathBuf::from(&self.schema);
        p.push(&self.table);
        p.push(self.version.to_string());
        if !self.date.is_empty() {
            p.push(&self.date);
        }
        p
    }

    /// The index file, relative to the root.
    pub fn index_path(&self) -> PathBuf {
        self.rel_path().join(INDEX_FILE)
    }
}

/// `CDC<index>` zero-padded to `width` digits, plus `extension` (with its dot).
pub fn data_file_name(index: u64, width: usize, extension: &str) -> String {
    format!("CDC{index:0width$}{extension}")
}

/// The index of a data file name (`CDC000…42.json` → 42); `None` for other names, including
/// TiCDC's dispatcher form, which Tidal never writes.
pub fn parse_data_file_index(name: &str, extension: &str) -> Option<u64> {
    let digits = name.strip_prefix("CDC")?.strip_suffix(extension)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The date directory for `now` (UTC), or empty for [`DateSeparator::None`].
pub fn date_string(sep: DateSeparator, now: SystemTime) -> String {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    match sep {
        DateSeparator::None => String::new(),
        DateSeparator::Year => format!("{y:04}"),
        DateSeparator::Month => format!("{y:04}-{m:02}"),
        DateSeparator::Day => format!("{y:04}-{m:02}-{d:02}"),
    }
}

/// Gregorian (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// One column of a schema file (TiCDC's `TableCol`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableCol {
    /// Column id (TiCDC writes it only with `output-column-id`; Tidal never does).
    #[serde(rename = "ColumnId", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Column name.
    #[serde(rename = "ColumnName")]
    pub name: String,
    /// Upper-case type (`INT UNSIGNED`, `VARCHAR`, `BLOB`, `DECIMAL`, …).
    #[serde(rename = "ColumnType")]
    pub tp: String,
    /// Default value, when the column has one.
    #[serde(
        rename = "ColumnDefault",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub default: Option<Value>,
    /// Length or precision, as text.
    #[serde(
        rename = "ColumnPrecision",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub precision: String,
    /// Scale or fractional-seconds precision, as text.
    #[serde(
        rename = "ColumnScale",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub scale: String,
    /// `"false"` for NOT NULL columns, absent otherwise.
    #[serde(
        rename = "ColumnNullable",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub nullable: String,
    /// `"true"` for primary-key columns, absent otherwise.
    #[serde(
        rename = "ColumnIsPk",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub is_pk: String,
    /// ENUM / SET elements.
    #[serde(rename = "ColumnElems", default, skip_serializing_if = "Vec::is_empty")]
    pub elems: Vec<String>,
}

impl TableCol {
    /// The schema-file form of a column.
    pub fn from_column(col: &ColumnInfo) -> TableCol {
        let ft = &col.field_type;
        let (_, default_dec) = crate::encode::types::default_flen_decimal(ft.tp);
        let dec_not_default = ft.decimal != default_dec && ft.decimal != 0 && ft.decimal != -1;
        let flen = display_flen(ft);
        let dec = display_decimal(ft);
        let mut tp = type_to_str(ft).to_uppercase();
        if ft.flag & mysql::FLAG_UNSIGNED != 0 {
            tp.push_str(" UNSIGNED");
        }
        let mut c = TableCol {
            id: String::new(),
            name: col.name.O.clone(),
            tp,
            default: col.default.clone().filter(|v| !v.is_null()),
            precision: String::new(),
            scale: String::new(),
            nullable: if col.is_not_null() {
                "false".into()
            } else {
                String::new()
            },
            is_pk: if col.is_pri_key() {
                "true".into()
            } else {
                String::new()
            },
            elems: Vec::new(),
        };
        match ft.tp {
            mysql::TYPE_TIMESTAMP | mysql::TYPE_DATETIME | mysql::TYPE_DURATION
                if dec_not_default =>
            {
                c.scale = dec.to_string();
            }
            mysql::TYPE_DOUBLE | mysql::TYPE_FLOAT => {
                c.precision = flen.to_string();
                if dec_not_default {
                    c.scale = dec.to_string();
                }
            }
            mysql::TYPE_NEW_DECIMAL => {
                c.precision = flen.to_string();
                c.scale = dec.to_string();
            }
            mysql::TYPE_TINY
            | mysql::TYPE_SHORT
            | mysql::TYPE_INT24
            | mysql::TYPE_LONG
            | mysql::TYPE_LONGLONG
            | mysql::TYPE_BIT
            | mysql::TYPE_VARCHAR
            | mysql::TYPE_STRING
            | mysql::TYPE_VAR_STRING
            | mysql::TYPE_BLOB
            | mysql::TYPE_TINY_BLOB
            | mysql::TYPE_MEDIUM_BLOB
            | mysql::TYPE_LONG_BLOB
            | mysql::TYPE_YEAR => c.precision = flen.to_string(),
            mysql::TYPE_ENUM | mysql::TYPE_SET => {
                c.elems = ft.elems.clone().unwrap_or_default();
            }
            _ => {}
        }
        c
    }

    /// True if the column's values are binary (a `BLOB` or `BINARY` type), which csv writes
    /// base64- or hex-encoded.
    pub fn is_binary(&self) -> bool {
        self.tp.contains("BLOB") || self.tp.contains("BINARY")
    }
}

/// A schema file (TiCDC's `SchemaFile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaFile {
    /// Table name (empty for a database-level file).
    #[serde(rename = "Table")]
    pub table: String,
    /// Database name.
    #[serde(rename = "Schema")]
    pub schema: String,
    /// Format version (1).
    #[serde(rename = "Version")]
    pub version: u64,
    /// The table version the file describes (the DDL's commit ts).
    #[serde(rename = "TableVersion")]
    pub table_version: u64,
    /// The DDL's SQL, empty when the file only records the table's shape.
    #[serde(rename = "Query")]
    pub query: String,
    /// The DDL's action type, 0 when there is none.
    #[serde(rename = "Type")]
    pub action: u8,
    /// The columns (`null` for a database-level file).
    #[serde(rename = "TableColumns")]
    pub columns: Option<Vec<TableCol>>,
    /// Number of columns.
    #[serde(rename = "TableColumnsTotal")]
    pub total_columns: usize,
}

#[derive(Serialize)]
struct ChecksumPayload<'a> {
    #[serde(rename = "Table")]
    table: &'a str,
    #[serde(rename = "Schema")]
    schema: &'a str,
    #[serde(rename = "Version")]
    version: u64,
    #[serde(rename = "TableColumns")]
    columns: Option<Vec<&'a TableCol>>,
    #[serde(rename = "TableColumnsTotal")]
    total_columns: usize,
}

fn go_indent_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing plain structs of strings and numbers into a Vec cannot fail.
    if value.serialize(&mut ser).is_err() {
        return b"{}".to_vec();
    }
    go_html_escape_json(&String::from_utf8_lossy(&out)).into_bytes()
}

impl SchemaFile {
    /// The file for `info` (its public columns) in `schema` at `table_version`.
    pub fn for_table(schema: &str, info: &TableInfo, table_version: u64) -> SchemaFile {
        let columns: Vec<TableCol> = info
            .public_columns()
            .into_iter()
            .map(TableCol::from_column)
            .collect();
        SchemaFile {
            table: info.name.O.clone(),
            schema: schema.to_string(),
            version: SCHEMA_FILE_VERSION,
            table_version,
            query: String::new(),
            action: 0,
            total_columns: columns.len(),
            columns: if columns.is_empty() {
                None
            } else {
                Some(columns)
            },
        }
    }

    /// A file without columns: a database-level DDL (`table` empty) or a DDL that left no table.
    pub fn without_columns(schema: &str, table: &str, table_version: u64) -> SchemaFile {
        SchemaFile {
            table: table.to_string(),
            schema: schema.to_string(),
            version: SCHEMA_FILE_VERSION,
            table_version,
            query: String::new(),
            action: 0,
            columns: None,
            total_columns: 0,
        }
    }

    /// The file's bytes.
    pub fn to_json(&self) -> Vec<u8> {
        go_indent_json(self)
    }

    /// The checksum in the file name.
    pub fn checksum(&self) -> u32 {
        let mut cols: Option<Vec<&TableCol>> = self.columns.as_ref().map(|c| c.iter().collect());
        if let Some(c) = cols.as_mut() {
            c.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let payload = ChecksumPayload {
            table: &self.table,
            schema: &self.schema,
            version: 0,
            columns: cols,
            total_columns: self.total_columns,
        };
        crc32_ieee(&go_indent_json(&payload))
    }

    /// The file's path relative to the root: `<schema>/meta/…` without a table,
    /// `<schema>/<table>/meta/…` with one.
    pub fn rel_path(&self) -> PathBuf {
        let name = format!("schema_{}_{:010}.json", self.table_version, self.checksum());
        let mut p = PathBuf::from(&self.schema);
        if !self.table.is_empty() {
            p.push(&self.table);
        }
        p.push("meta");
        p.push(name);
        p
    }
}

/// Parses a schema file name (`schema_<version>_<checksum>.json`) into (version, checksum).
pub fn parse_schema_file_name(name: &str) -> Option<(u64, u32)> {
    let body = name.strip_prefix("schema_")?.strip_suffix(".json")?;
    let (version, checksum) = body.split_once('_')?;
    if checksum.len() != 10 {
        return None;
    }
    Some((version.parse().ok()?, checksum.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tidal_model::schema::{CIStr, FieldType, SchemaState};

    fn col(name: &str, tp: u8, flag: u32, flen: i64, dec: i64) -> ColumnInfo {
        ColumnInfo {
            name: CIStr::new(name),
            state: SchemaState::PUBLIC,
            field_type: FieldType {
                tp,
                flag,
                flen,
                decimal: dec,
                charset: "utf8mb4".into(),
                ..FieldType::default()
            },
            ..ColumnInfo::default()
        }
    }

    #[test]
    fn names_and_dates() {
        assert_eq!(data_file_name(7, 6, ".json"), "CDC000007.json");
        assert_eq!(data_file_name(7, 20, ".csv"), "CDC00000000000000000007.csv");
        assert_eq!(parse_data_file_index("CDC000007.json", ".json"), Some(7));
        assert_eq!(parse_data_file_index("CDC000007.csv", ".json"), None);
        assert_eq!(parse_data_file_index("CDC_abc_000007.json", ".json"), None);
        assert_eq!(parse_data_file_index("CDC.json", ".json"), None);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_251_200); // 2024-03-01
        assert_eq!(date_string(DateSeparator::Day, t), "2024-03-01");
        assert_eq!(date_string(DateSeparator::Month, t), "2024-03");
        assert_eq!(date_string(DateSeparator::Year, t), "2024");
        assert_eq!(date_string(DateSeparator::None, t), "");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(date_string(DateSeparator::Day, leap), "2000-02-29");
        let d = DataDir {
            schema: "db".into(),
            table: "t".into(),
            version: 42,
            date: "2024-03-01".into(),
        };
        assert_eq!(
            d.index_path(),
            PathBuf::from("db/t/42/2024-03-01/meta/CDC.index")
        );
        assert_eq!(
            parse_schema_file_name("schema_42_0123456789.json"),
            Some((42, 123_456_789))
        );
        assert_eq!(parse_schema_file_name("schema_42_12.json"), None);
    }

    #[test]
    fn schema_file_json_and_checksum() {
        let info = TableInfo {
            name: CIStr::new("t"),
            cols: vec![
                col(
                    "id",
                    mysql::TYPE_LONG,
                    mysql::FLAG_PRI_KEY | mysql::FLAG_NOT_NULL,
                    11,
                    0,
                ),
                col("d", mysql::TYPE_NEW_DECIMAL, 0, 10, 2),
            ],
            ..TableInfo::default()
        };
        let f = SchemaFile::for_table("db", &info, 100);
        let json = String::from_utf8(f.to_json()).unwrap();
        let expected = r#"{
    "Table": "t",
    "Schema": "db",
    "Version": 1,
    "TableVersion": 100,
    "Query": "",
    "Type": 0,
    "TableColumns": [
        {
            "ColumnName": "id",
            "ColumnType": "INT",
            "ColumnPrecision": "11",
            "ColumnNullable": "false",
            "ColumnIsPk": "true"
        },
        {
            "ColumnName": "d",
            "ColumnType": "DECIMAL",
            "ColumnPrecision": "10",
            "ColumnScale": "2"
        }
    ],
    "TableColumnsTotal": 2
}"#;
        assert_eq!(json, expected);
        // The checksum ignores the version, the query and the column order.
        let mut g = f.clone();
        g.table_version = 200;
        g.query = "ALTER TABLE t COMMENT 'x'".into();
        if let Some(c) = g.columns.as_mut() {
            c.reverse();
        }
        assert_eq!(f.checksum(), g.checksum());
        let name = f.rel_path();
        assert_eq!(
            name,
            PathBuf::from(format!("db/t/meta/schema_100_{:010}.json", f.checksum()))
        );
        let back: SchemaFile = serde_json::from_slice(&f.to_json()).unwrap();
        assert_eq!(back, f);
        let db = SchemaFile::without_columns("db", "", 5);
        assert_eq!(
            db.rel_path(),
            PathBuf::from(format!("db/meta/schema_5_{:010}.json", db.checksum()))
        );
        assert!(
            String::from_utf8(db.to_json())
                .unwrap()
                .contains("\"TableColumns\": null")
        );
    }
}
