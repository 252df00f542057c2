//! TiDB row value formats v1 and v2.
//!
//! TiKV hands Tidal a row's value as TiDB wrote it: format v2 for anything written by TiDB 4.0
//! and later, format v1 for older rows that were never rewritten. Both can appear in one table.
//! [`decode_row_columns`] detects the format (`value[0] == 128` is v2) and gives one way to ask
//! for a column by id — its bytes, NULL, or absent (§5.3: absent columns take their origin
//! default) — and [`decode_datum`] turns that answer into a typed [`Datum`].

pub mod v1;
pub mod v2;

use crate::codec::datum::FlaggedDatum;
use crate::datum::Datum;
use crate::error::CodecError;
use crate::schema::FieldType;

pub use v1::{datum_from_flagged_v1, decode_row_v1, encode_row_v1};
pub use v2::{
    ColumnSlot, RowV2, decode_column_v2, encode_column_v2, encode_row_v2, encode_row_v2_into,
};

/// A parsed row value of either format.
#[derive(Debug, Clone)]
pub enum RowColumns<'a> {
    /// A v2 row (borrowed view).
    V2(RowV2<'a>),
    /// A v1 row: its datums sorted by column id.
    V1(Vec<(i64, FlaggedDatum)>),
}

/// Where a column stands in a row of either format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowSlot<'r> {
    /// The column's v2 bytes.
    V2(&'r [u8]),
    /// The column's v1 datum (never `Nil`: that is [`RowSlot::Null`]).
    V1(&'r FlaggedDatum),
    /// The column is SQL NULL.
    Null,
    /// The column is not in the row.
    Absent,
}

/// Parses a row value, detecting v2 (`value[0] == 128`) or v1. An empty value is an error: it
/// means "no value" (a DELETE), not a row without columns.
pub fn decode_row_columns(value: &[u8]) -> Result<RowColumns<'_>, CodecError> {
    if value.first() == Some(&v2::CODEC_VER) {
        return Ok(RowColumns::V2(RowV2::parse(value)?));
    }
    let mut cols = decode_row_v1(value)?;
    cols.sort_by_key(|c| c.0);
    if let Some(w) = cols.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(CodecError::invalid(
            "row v1",
            format!("duplicate column id {}", w[0].0),
        ));
    }
    Ok(RowColumns::V1(cols))
}

impl RowColumns<'_> {
    /// True for a v2 row.
    pub fn is_v2(&self) -> bool {
        matches!(self, RowColumns::V2(_))
    }

    /// The slot of column `col_id`.
    pub fn slot(&self, col_id: i64) -> RowSlot<'_> {
        match self {
            RowColumns::V2(row) => match row.get(col_id) {
                ColumnSlot::Value(b) => RowSlot::V2(b),
                ColumnSlot::Null => RowSlot::Null,
                ColumnSlot::Absent => RowSlot::Absent,
            },
            RowColumns::V1(cols) => match cols.binary_search_by_key(&col_id, |c| c.0) {
                Ok(i) => match cols.get(i) {
                    Some((_, FlaggedDatum::Nil)) | None => RowSlot::Null,
                    Some((_, d)) => RowSlot::V1(d),
                },
                Err(_) => RowSlot::Absent,
            },
        }
    }

    /// The typed value of column `col_id`, or `None` when the column is absent.
    pub fn datum(&self, col_id: i64, ft: &FieldType) -> Result<Option<Datum>, CodecError> {
        decode_datum(self.slot(col_id), ft)
    }
}

/// Decodes a slot by the column's type: `None` for an absent column, `Some(Datum::Null)` for
/// NULL, otherwise the value.
pub fn decode_datum(slot: RowSlot<'_>, ft: &FieldType) -> Result<Option<Datum>, CodecError> {
    Ok(match slot {
        RowSlot::V2(bytes) => Some(decode_column_v2(bytes, ft)?),
        RowSlot::V1(d) => Some(datum_from_flagged_v1(d.clone(), ft)?),
        RowSlot::Null => Some(Datum::Null),
        RowSlot::Absent => None,
    })
}
