//! TiDB's schema JSON: `DBInfo`, `TableInfo`, `ColumnInfo`, `IndexInfo`, as TiDB stores them in
//! its meta keys and in DDL job history.

use serde::{Deserialize, Serialize};

/// A column's type as TiDB serializes it (`types.FieldType`, capitalised JSON keys).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FieldType {
    /// MySQL type code (see [`crate::mysql`]).
    #[serde(rename = "Tp")]
    pub tp: u8,
    /// Column flags (see [`crate::mysql`]'s `FLAG_*`).
    #[serde(rename = "Flag", default)]
    pub flag: u32,
    /// Display width or length.
    #[serde(rename = "Flen", default)]
    pub flen: i64,
    /// Scale for DECIMAL, fractional-seconds precision for time types; -1 when unspecified.
    #[serde(rename = "Decimal", default)]
    pub decimal: i64,
    /// Character set name.
    #[serde(rename = "Charset", default)]
    pub charset: String,
    /// Collation name.
    #[serde(rename = "Collate", default)]
    pub collate: String,
    /// ENUM and SET elements.
    #[serde(rename = "Elems", default)]
    pub elems: Option<Vec<String>>,
    /// Which elements were written as binary literals.
    #[serde(rename = "ElemsIsBinaryLit", default)]
    pub elems_is_binary_lit: Option<Vec<bool>>,
    /// True for array types (multi-valued indexes).
    #[serde(rename = "Array", default)]
    pub array: bool,
}

impl FieldType {
    /// True if the UNSIGNED flag is set.
    pub fn is_unsigned(&self) -> bool {
        self.flag & crate::mysql::FLAG_UNSIGNED != 0
    }
}
