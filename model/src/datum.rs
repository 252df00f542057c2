//! [`Datum`]: one decoded column value.

use serde::{Deserialize, Serialize};

use crate::decimal::Decimal;
use crate::json::Json;
use crate::time::{Duration, Time};

/// One column value, decoded from a key or a row and typed by its column's `FieldType`.
///
/// The variants follow TiDB's datum kinds. Strings and blobs are kept as bytes: their character
/// set is the column's business, and a sink that needs text converts with the column's charset.
/// ENUM, SET and BIT keep their stored integer; the column's `Elems` give ENUM and SET their names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// A signed integer (TINYINT..BIGINT, YEAR).
    Int(i64),
    /// An unsigned integer (the UNSIGNED integer types).
    Uint(u64),
    /// A FLOAT.
    Float32(f32),
    /// A DOUBLE.
    Float64(f64),
    /// CHAR, VARCHAR, TEXT, BINARY, VARBINARY, BLOB: the stored bytes.
    Bytes(Vec<u8>),
    /// DECIMAL.
    Decimal(Decimal),
    /// DATE, DATETIME or TIMESTAMP (TIMESTAMP in UTC).
    Time(Time),
    /// TIME.
    Duration(Duration),
    /// ENUM: the 1-based index into the column's elements (0 = the empty/invalid value).
    Enum(u64),
    /// SET: a bit mask over the column's elements.
    Set(u64),
    /// BIT: the value as an unsigned integer.
    Bit(u64),
    /// JSON, in TiDB's binary form.
    Json(Json),
}

impl Datum {
    /// True for SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }
}
