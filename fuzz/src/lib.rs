//! Helpers shared by Tidal's fuzz targets.
//!
//! The targets feed untrusted bytes to Tidal's decoders. A decoder may reject any input, but it
//! must never panic, and what it accepts must survive a round trip through the matching encoder.
//! The fixed schemas and the matcher's reference checks live here so that the targets that need
//! them (`row_v1`, `row_v2`, `matcher`, `cdc_event`) check the same thing the same way.
#![deny(missing_docs)]

#[cfg(feature = "cdc")]
mod cdc_oracle;
#[cfg(feature = "cdc")]
pub use cdc_oracle::{MatcherOracle, check_matcher_state};

use tidal_model::schema::{FieldType, TableInfo};
use tidal_model::{mysql, tablecodec};

/// Realistic table schemas, TiDB's own JSON: an int-PK table, a clustered (common handle) table
/// and a partitioned one.
pub const TABLE_FIXTURES: [&str; 3] = [
    include_str!("../../model/tests/fixtures/table_int_pk.json"),
    include_str!("../../model/tests/fixtures/table_common_handle.json"),
    include_str!("../../model/tests/fixtures/table_partitioned.json"),
];

/// Parses the fixture schemas (they are known good; a failure here is a broken fixture, not a
/// finding, so the target aborts loudly).
pub fn fixture_tables() -> Vec<TableInfo> {
    TABLE_FIXTURES
        .iter()
        .map(|j| TableInfo::from_json(j.as_bytes()).expect("fixture schema parses"))
        .collect()
}

/// Every type code a column can have, so a fuzzer's byte picks one of them.
pub const TYPE_CODES: [u8; 29] = [
    mysql::TYPE_DECIMAL,
    mysql::TYPE_TINY,
    mysql::TYPE_SHORT,
    mysql::TYPE_LONG,
    mysql::TYPE_FLOAT,
    mysql::TYPE_DOUBLE,
    mysql::TYPE_NULL,
    mysql::TYPE_TIMESTAMP,
    mysql::TYPE_LONGLONG,
    mysql::TYPE_INT24,
    mysql::TYPE_DATE,
    mysql::TYPE_DURATION,
    mysql::TYPE_DATETIME,
    mysql::TYPE_YEAR,
    mysql::TYPE_NEW_DATE,
    mysql::TYPE_VARCHAR,
    mysql::TYPE_BIT,
    mysql::TYPE_VECTOR_FLOAT32,
    mysql::TYPE_JSON,
    mysql::TYPE_NEW_DECIMAL,
    mysql::TYPE_ENUM,
    mysql::TYPE_SET,
    mysql::TYPE_TINY_BLOB,
    mysql::TYPE_MEDIUM_BLOB,
    mysql::TYPE_LONG_BLOB,
    mysql::TYPE_BLOB,
    mysql::TYPE_VAR_STRING,
    mysql::TYPE_STRING,
    mysql::TYPE_GEOMETRY,
];

/// A column type built from three fuzzer bytes: the type (an index into [`TYPE_CODES`], or the
/// raw byte when it is past the end), the UNSIGNED/BINARY flags, and a `Flen`/`Decimal` pair.
pub fn field_type_from(tp: u8, flags: u8, sizes: u8) -> FieldType {
    let tp = TYPE_CODES.get(usize::from(tp)).copied().unwrap_or(tp);
    let mut flag = 0;
    if flags & 1 != 0 {
        flag |= mysql::FLAG_UNSIGNED;
    }
    if flags & 2 != 0 {
        flag |= mysql::FLAG_BINARY;
    }
    FieldType {
        tp,
        flag,
        // Mostly valid precisions (1..=65) with the occasional nonsense one.
        flen: i64::from(sizes % 70),
        // -1 ("unspecified"), 0..=31.
        decimal: i64::from(sizes / 8) - 1,
        ..FieldType::default()
    }
}

/// A record key of table 112 (the int-PK fixture) for handle `h`.
pub fn small_key(h: u8) -> Vec<u8> {
    tablecodec::encode_row_key_int(112, i64::from(h))
}

/// True if a value's debug form holds a NaN float.
///
/// The targets' round-trip assertions compare datums with `==`, under which a NaN never equals
/// itself, so they skip values holding one (decoding them must still not panic). That NaN
/// itself survives the codecs is pinned in the model crate (the comparable float codec once
/// turned a positive NaN into a denormal: `regression_positive_nan_round_trips_as_nan`, found
/// by the `keys` target, input in `fuzz/regressions/keys/`).
pub fn has_nan<T: std::fmt::Debug>(v: &T) -> bool {
    format!("{v:?}").contains("NaN")
}
