//! Table-aware row decoding: from a row key and value to one [`Datum`] per public column.
//!
//! The row codecs ([`crate::rowcodec`]) know how a value lists columns by id; they do not know
//! which columns a table has, which of them TiDB left out of the value, or how to fill those in.
//! That is this module's job (wire.md §5.3). For each public column of the table, in order:
//!
//! 1. present in the value → decoded by its `FieldType`;
//! 2. listed as NULL → [`Datum::Null`];
//! 3. part of the handle → taken from the key: the int handle (as `Uint` for an UNSIGNED
//!    column), or the column's datum of a common handle — except for strings with a non-binary
//!    collation, whose key bytes are a sort key, not the value (TiDB keeps those in the value);
//! 4. a VIRTUAL generated column → [`Datum::Null`] (Tidal does not evaluate expressions);
//! 5. otherwise → the column's *origin default*, the value of rows written before the column was
//!    added, or NULL when it has none.
//!
//! TIMESTAMP origin defaults are read as written: TiDB stores them in UTC for column-info version
//! ≥ 1 and in the server's time zone for version 0, which Tidal cannot know.

use crate::change::{RawKvChange, RawOp, RowChange};
use crate::codec::datum::FlaggedDatum;
use crate::decimal::Decimal;
use crate::json::Json;
use crate::mysql;
use crate::schema::{ColumnInfo, FieldType, HandleKind, TableInfo};
use crate::tablecodec::{self, Handle};
use crate::time::{Duration, MAX_FSP, Time, TimeKind};
use crate::{CodecError, Datum};

const DEFAULT_WHAT: &str = "column origin default";
const HANDLE_WHAT: &str = "handle column";

/// Collations whose key bytes are the value itself (TiDB `collate.IsBinCollation`, plus the
/// `binary` collation of binary strings).
const BINARY_COLLATIONS: [&str; 7] = [
    "binary",
    "ascii_bin",
    "latin1_bin",
    "utf8_bin",
    "utf8mb4_bin",
    "gbk_bin",
    "gb18030_bin",
];

/// True if a string column's key encoding is a collation sort key rather than its bytes, so the
/// value must come from the row (TiDB `NeedRestoredData`).
pub fn need_restored_data(ft: &FieldType) -> bool {
    mysql::is_string_type(ft.tp)
        && !ft.collate.is_empty()
        && !BINARY_COLLATIONS
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&ft.collate))
}

fn fsp_of(ft: &FieldType) -> u8 {
    u8::try_from(ft.decimal.clamp(0, i64::from(MAX_FSP))).unwrap_or(0)
}

fn time_kind(tp: u8) -> TimeKind {
    match tp {
        mysql::TYPE_TIMESTAMP => TimeKind::Timestamp,
        mysql::TYPE_DATE | mysql::TYPE_NEW_DATE => TimeKind::Date,
        _ => TimeKind::Datetime,
    }
}

/// Converts a datum decoded from a common-handle key into the column's datum.
pub fn datum_from_key(flagged: FlaggedDatum, ft: &FieldType) -> Result<Datum, CodecError> {
    let mismatch = |d: &FlaggedDatum| {
        CodecError::invalid(
            HANDLE_WHAT,
            format!("key datum {d:?} does not fit column type {}", ft.tp),
        )
    };
    Ok(match (flagged, ft.tp) {
        (FlaggedDatum::Nil, _) => Datum::Null,
        (FlaggedDatum::Int(v), tp) if mysql::is_integer_type(tp) => {
            if ft.is_unsigned() {
                Datum::Uint(v as u64)
            } else {
                Datum::Int(v)
            }
        }
        (FlaggedDatum::Uint(v), tp) if mysql::is_integer_type(tp) => {
            if ft.is_unsigned() {
                Datum::Uint(v)
            } else {
                Datum::Int(v as i64)
            }
        }
        (FlaggedDatum::Uint(v), tp) if mysql::is_time_type(tp) => {
            Datum::Time(Time::from_packed(v, time_kind(tp), fsp_of(ft))?)
        }
        (FlaggedDatum::Uint(v), mysql::TYPE_ENUM) => Datum::Enum(v),
        (FlaggedDatum::Uint(v), mysql::TYPE_SET) => Datum::Set(v),
        (FlaggedDatum::Uint(v), mysql::TYPE_BIT) => Datum::Bit(v),
        (FlaggedDatum::Bytes(b), tp) if mysql::is_string_type(tp) => Datum::Bytes(b),
        (FlaggedDatum::Float(f), mysql::TYPE_FLOAT) => Datum::Float32(f as f32),
        (FlaggedDatum::Float(f), mysql::TYPE_DOUBLE) => Datum::Float64(f),
        (
            FlaggedDatum::Decimal {
                precision,
                frac,
                bin,
            },
            mysql::TYPE_NEW_DECIMAL | mysql::TYPE_DECIMAL,
        ) => Datum::Decimal(Decimal::from_bin(&bin, precision, frac)?.0),
        (FlaggedDatum::Duration(n), mysql::TYPE_DURATION) => {
            Datum::Duration(Duration::from_nanos(n, fsp_of(ft))?)
        }
        (FlaggedDatum::Int(n), mysql::TYPE_DURATION) => {
            Datum::Duration(Duration::from_nanos(n, fsp_of(ft))?)
        }
        (FlaggedDatum::Json { type_code, bin }, mysql::TYPE_JSON) => {
            Datum::Json(Json::from_binary(type_code, &bin)?)
        }
        (other, _) => return Err(mismatch(&other)),
    })
}

/// Decodes standard base64 (with or without padding), as Go writes `[]byte` in JSON.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Big-endian bytes of a BIT value as an integer (at most 8 significant bytes).
fn bit_value(bytes: &[u8]) -> Result<u64, CodecError> {
    let significant = bytes
        .iter()
        .position(|b| *b != 0)
        .map_or(&[][..], |i| bytes.get(i..).unwrap_or_default());
    if significant.len() > 8 {
        return Err(CodecError::invalid(
            DEFAULT_WHAT,
            format!("BIT default of {} bytes exceeds 64 bits", significant.len()),
        ));
    }
    Ok(significant
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

fn default_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn bad_default(col: &ColumnInfo, text: &str) -> CodecError {
    CodecError::invalid(
        DEFAULT_WHAT,
        format!(
            "column {} (type {}): cannot read {text:?}",
            col.name.O, col.field_type.tp
        ),
    )
}

/// The value of `col` in rows written before it was added: its origin default parsed by type,
/// or NULL when it has none.
pub fn origin_default_datum(col: &ColumnInfo) -> Result<Datum, CodecError> {
    let ft = &col.field_type;
    if ft.tp == mysql::TYPE_BIT
        && let Some(serde_json::Value::String(b64)) = &col.origin_default_bit
    {
        let bytes = base64_decode(b64).ok_or_else(|| bad_default(col, b64))?;
        return Ok(Datum::Bit(bit_value(&bytes)?));
    }
    let Some(text) = col.origin_default.as_ref().and_then(default_text) else {
        return Ok(Datum::Null);
    };
    parse_default(col, &text)
}

fn parse_default(col: &ColumnInfo, text: &str) -> Result<Datum, CodecError> {
    let ft = &col.field_type;
    let bad = || bad_default(col, text);
    let trimmed = text.trim();
    Ok(match ft.tp {
        tp if mysql::is_integer_type(tp) => {
            if ft.is_unsigned() {
                Datum::Uint(trimmed.parse().map_err(|_| bad())?)
            } else {
                Datum::Int(trimmed.parse().map_err(|_| bad())?)
            }
        }
        mysql::TYPE_FLOAT => Datum::Float32(trimmed.parse().map_err(|_| bad())?),
        mysql::TYPE_DOUBLE => Datum::Float64(trimmed.parse().map_err(|_| bad())?),
        mysql::TYPE_NEW_DECIMAL | mysql::TYPE_DECIMAL => {
            let d: Decimal = trimmed.parse().map_err(|_| bad())?;
            match u8::try_from(ft.decimal) {
                Ok(frac) if frac <= 30 => Datum::Decimal(d.round(frac)),
                _ => Datum::Decimal(d),
            }
        }
        tp if mysql::is_time_type(tp) => {
            let mut t: Time = trimmed.parse().map_err(|_| bad())?;
            t.kind = time_kind(tp);
            t.fsp = fsp_of(ft);
            Datum::Time(t)
        }
        mysql::TYPE_DURATION => {
            let d: Duration = trimmed.parse().map_err(|_| bad())?;
            Datum::Duration(Duration::from_nanos(d.nanos, fsp_of(ft))?)
        }
        mysql::TYPE_ENUM => Datum::Enum(enum_index(ft, text).ok_or_else(bad)?),
        mysql::TYPE_SET => Datum::Set(set_mask(ft, text).ok_or_else(bad)?),
        // Without origin_default_bit, TiDB's text holds the value's bytes.
        mysql::TYPE_BIT => Datum::Bit(bit_value(text.as_bytes())?),
        mysql::TYPE_JSON => {
            let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
            Datum::Json(Json::from_serde(&v)?)
        }
        mysql::TYPE_VECTOR_FLOAT32 => {
            return Err(CodecError::unsupported(
                DEFAULT_WHAT,
                format!("VECTOR default of column {}", col.name.O),
            ));
        }
        _ => Datum::Bytes(text.as_bytes().to_vec()),
    })
}

/// 1-based index of `name` in an ENUM's elements (exact match first, then case-insensitive);
/// the empty string not among them is 0.
fn enum_index(ft: &FieldType, name: &str) -> Option<u64> {
    let elems = ft.elems.as_deref().unwrap_or_default();
    let pos = elems
        .iter()
        .position(|e| e == name)
        .or_else(|| elems.iter().position(|e| e.eq_ignore_ascii_case(name)));
    match pos {
        Some(i) => u64::try_from(i).ok().map(|i| i + 1),
        None if name.is_empty() => Some(0),
        None => name
            .parse::<u64>()
            .ok()
            .filter(|n| usize::try_from(*n).is_ok_and(|n| n <= elems.len())),
    }
}

/// Bit mask of a SET value `a,b,…` over the column's elements.
fn set_mask(ft: &FieldType, text: &str) -> Option<u64> {
    let elems = ft.elems.as_deref().unwrap_or_default();
    if text.is_empty() {
        return Some(0);
    }
    let mut mask = 0u64;
    for part in text.split(',') {
        let i = elems
            .iter()
            .position(|e| e == part)
            .or_else(|| elems.iter().position(|e| e.eq_ignore_ascii_case(part)))?;
        mask |= 1u64.checked_shl(u32::try_from(i).ok()?)?;
    }
    Some(mask)
}

/// Decodes one row: one [`Datum`] per column of [`TableInfo::public_columns`], in that order.
///
/// `raw_key` is the raw row key (it gives the handle); `value` the row value in format v1 or v2.
/// Fails if the key is not a row key of this table (its id must be the table's or one of its
/// partitions'), if the value is empty or malformed, or if a column's bytes do not fit its type.
pub fn decode_row(
    table: &TableInfo,
    raw_key: &[u8],
    value: &[u8],
) -> Result<Vec<Datum>, CodecError> {
    let (physical_id, handle) = tablecodec::decode_row_key(raw_key)?;
    check_table(table, physical_id)?;
    decode_row_with_handle(table, &handle, value)
}

fn check_table(table: &TableInfo, physical_id: i64) -> Result<(), CodecError> {
    if table.owns_physical_id(physical_id) {
        Ok(())
    } else {
        Err(CodecError::invalid(
            "row",
            format!(
                "key of table {physical_id} decoded with the schema of table {} ({})",
                table.id, table.name.O
            ),
        ))
    }
}

/// The handle's datums, one per handle column id, for the columns they can fill.
fn handle_datums(table: &TableInfo, handle: &Handle) -> Result<Vec<(i64, Datum)>, CodecError> {
    match (table.handle_columns(), handle) {
        (HandleKind::IntPk { col_id, unsigned }, Handle::Int(h)) => Ok(vec![(
            col_id,
            if unsigned {
                Datum::Uint(*h as u64)
            } else {
                Datum::Int(*h)
            },
        )]),
        (HandleKind::Common { col_ids }, Handle::Common(_)) => {
            let datums = handle.common_datums()?;
            if datums.len() != col_ids.len() {
                return Err(CodecError::invalid(
                    HANDLE_WHAT,
                    format!(
                        "common handle has {} datums, primary key of table {} has {} columns",
                        datums.len(),
                        table.id,
                        col_ids.len()
                    ),
                ));
            }
            let pk = table.primary_index();
            let mut out = Vec::with_capacity(col_ids.len());
            for (i, (col_id, flagged)) in col_ids.iter().zip(datums).enumerate() {
                let Some(col) = table.column_by_id(*col_id) else {
                    continue;
                };
                let prefix = pk
                    .and_then(|p| p.idx_cols.get(i))
                    .is_some_and(|ic| !ic.is_full_length());
                // A sort key or a prefix is not the value; TiDB keeps such columns in the row.
                if prefix || need_restored_data(&col.field_type) {
                    continue;
                }
                out.push((*col_id, datum_from_key(flagged, &col.field_type)?));
            }
            Ok(out)
        }
        (HandleKind::HiddenRowId, Handle::Int(_)) => Ok(Vec::new()),
        (kind, handle) => Err(CodecError::invalid(
            HANDLE_WHAT,
            format!(
                "table {} expects a {kind:?} handle, key has {}",
                table.id,
                match handle {
                    Handle::Int(_) => "an int handle",
                    Handle::Common(_) => "a common handle",
                }
            ),
        )),
    }
}

fn decode_row_with_handle(
    table: &TableInfo,
    handle: &Handle,
    value: &[u8],
) -> Result<Vec<Datum>, CodecError> {
    let row = crate::rowcodec::decode_row_columns(value)?;
    let mut from_key = handle_datums(table, handle)?;
    let columns = table.public_columns();
    let mut out = Vec::with_capacity(columns.len());
    for col in columns {
        if let Some(d) = row.datum(col.id, &col.field_type)? {
            out.push(d);
        } else if let Some(i) = from_key.iter().position(|(id, _)| *id == col.id) {
            out.push(from_key.swap_remove(i).1);
        } else if col.is_generated_virtual() {
            out.push(Datum::Null);
        } else {
            out.push(origin_default_datum(col)?);
        }
    }
    Ok(out)
}

/// Decodes a committed row change with the table schema in effect at its commit ts.
///
/// The new row comes from `value` (PUT), the old row from `old_value` when there is one. A
/// DELETE without an old value has `old == None`: only its handle is known.
pub fn decode_change(table: &TableInfo, raw: &RawKvChange) -> Result<RowChange, CodecError> {
    let (physical_id, handle) = tablecodec::decode_row_key(&raw.key)?;
    check_table(table, physical_id)?;
    let new = match raw.op {
        RawOp::Put => Some(decode_row_with_handle(table, &handle, &raw.value)?),
        RawOp::Delete => None,
    };
    let old = if raw.old_value.is_empty() {
        None
    } else {
        Some(decode_row_with_handle(table, &handle, &raw.old_value)?)
    };
    Ok(RowChange {
        table_id: physical_id,
        start_ts: raw.start_ts,
        commit_ts: raw.commit_ts,
        kind: raw.kind(),
        handle,
        old,
        new,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::RowChangeKind;
    use crate::codec::datum::encode_key_flagged;
    use crate::rowcodec::{encode_row_v1, encode_row_v2};
    use crate::tablecodec::{encode_row_key_common, encode_row_key_int};
    use crate::ts::Ts;
    use proptest::prelude::*;
    use serde_json::json;

    const INT_PK: &str = include_str!("../tests/fixtures/table_int_pk.json");
    const COMMON: &str = include_str!("../tests/fixtures/table_common_handle.json");
    const PARTITIONED: &str = include_str!("../tests/fixtures/table_partitioned.json");

    fn table(json: &str) -> TableInfo {
        TableInfo::from_json(json.as_bytes()).unwrap()
    }

    fn ft(t: &TableInfo, id: i64) -> FieldType {
        t.column_by_id(id).unwrap().field_type.clone()
    }

    fn created() -> Time {
        let mut t: Time = "2024-05-06 07:08:09.123".parse().unwrap();
        t.fsp = 3;
        t
    }

    /// A row of `orders` with `name`, a NULL `price` and `created`; `status` and `doc` absent.
    fn orders_row(t: &TableInfo, v1: bool) -> Vec<u8> {
        let name = Datum::Bytes(b"alice".to_vec());
        let created = Datum::Time(created());
        let (f2, f3, f4) = (ft(t, 2), ft(t, 3), ft(t, 4));
        let cols = [(2, &name, &f2), (3, &Datum::Null, &f3), (4, &created, &f4)];
        if v1 {
            encode_row_v1(&cols).unwrap()
        } else {
            encode_row_v2(&cols).unwrap()
        }
    }

    fn orders_expected(id: u64) -> Vec<Datum> {
        vec![
            Datum::Uint(id),
            Datum::Bytes(b"alice".to_vec()),
            Datum::Null,
            Datum::Time(created()),
            Datum::Enum(2), // origin default "b"
            Datum::Null,    // no origin default
        ]
    }

    #[test]
    fn int_handle_present_null_absent() {
        let t = table(INT_PK);
        let key = encode_row_key_int(112, -1);
        for v1 in [false, true] {
            let row = decode_row(&t, &key, &orders_row(&t, v1)).unwrap();
            // The unsigned PK reads the handle's bits as u64.
            assert_eq!(row, orders_expected(u64::MAX), "v1 = {v1}");
        }
    }

    #[test]
    fn present_value_beats_origin_default() {
        let t = table(INT_PK);
        let status = Datum::Enum(3);
        let f5 = ft(&t, 5);
        let value = encode_row_v2(&[(5, &status, &f5)]).unwrap();
        let row = decode_row(&t, &encode_row_key_int(112, 1), &value).unwrap();
        assert_eq!(row.get(4), Some(&Datum::Enum(3)));
        assert_eq!(row.get(1), Some(&Datum::Null)); // name absent, no default
    }

    fn common_key(acct: u64, tenant: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        encode_key_flagged(&mut h, &FlaggedDatum::Uint(acct));
        encode_key_flagged(&mut h, &FlaggedDatum::Bytes(tenant.to_vec()));
        encode_row_key_common(120, &h)
    }

    #[test]
    fn common_handle_columns_come_from_the_key() {
        let t = table(COMMON);
        let amount = Datum::Int(10);
        let f2 = ft(&t, 2);
        let value = encode_row_v2(&[(2, &amount, &f2)]).unwrap();
        let row = decode_row(&t, &common_key(42, b"acme"), &value).unwrap();
        assert_eq!(
            row,
            vec![
                Datum::Bytes(b"acme".to_vec()),
                Datum::Int(10),
                Datum::Uint(42),
                Datum::Null, // virtual generated
            ]
        );
    }

    #[test]
    fn collated_handle_strings_are_not_taken_from_the_key() {
        let mut t = table(COMMON);
        t.cols[0].field_type.collate = "utf8mb4_general_ci".into();
        let amount = Datum::Int(10);
        let tenant = Datum::Bytes(b"Acme".to_vec());
        let (f1, f2) = (ft(&t, 1), ft(&t, 2));
        // TiDB keeps such a column in the value: it wins over the key's sort key.
        let value = encode_row_v2(&[(1, &tenant, &f1), (2, &amount, &f2)]).unwrap();
        let row = decode_row(&t, &common_key(42, b"ACME"), &value).unwrap();
        assert_eq!(row.first(), Some(&Datum::Bytes(b"Acme".to_vec())));
        // Missing from the value, the sort key is not used.
        let value = encode_row_v2(&[(2, &amount, &f2)]).unwrap();
        let row = decode_row(&t, &common_key(42, b"ACME"), &value).unwrap();
        assert_eq!(row.first(), Some(&Datum::Null));
        assert_eq!(row.get(2), Some(&Datum::Uint(42)));
    }

    #[test]
    fn key_must_belong_to_the_table() {
        let t = table(INT_PK);
        let err = decode_row(&t, &encode_row_key_int(999, 1), &orders_row(&t, false)).unwrap_err();
        assert!(err.to_string().contains("key of table 999"), "{err}");
        // An int key for a common-handle table is a mismatch, not a panic.
        let c = table(COMMON);
        assert!(decode_row(&c, &encode_row_key_int(120, 1), &[0x80, 0, 0, 0, 0, 0]).is_err());
        // Empty value = no row.
        assert!(decode_row(&t, &encode_row_key_int(112, 1), &[]).is_err());
    }

    #[test]
    fn partitions_and_hidden_row_id() {
        let t = table(PARTITIONED);
        let ts = Datum::Int(150);
        let f1 = ft(&t, 1);
        let value = encode_row_v2(&[(1, &ts, &f1)]).unwrap();
        let row = decode_row(&t, &encode_row_key_int(132, 77), &value).unwrap();
        assert_eq!(row, vec![Datum::Int(150), Datum::Null]);
        assert!(decode_row(&t, &encode_row_key_int(134, 77), &value).is_err());
    }

    fn raw(op: RawOp, key: Vec<u8>, value: Vec<u8>, old: Vec<u8>) -> RawKvChange {
        RawKvChange {
            op,
            key,
            value,
            old_value: old,
            start_ts: Ts(5),
            commit_ts: Ts(6),
            region_id: 1,
        }
    }

    #[test]
    fn decode_change_kinds() {
        let t = table(INT_PK);
        let key = encode_row_key_int(112, 7);
        let row = orders_row(&t, false);

        let ins = decode_change(&t, &raw(RawOp::Put, key.clone(), row.clone(), vec![])).unwrap();
        assert_eq!(ins.kind, RowChangeKind::Insert);
        assert_eq!((ins.table_id, ins.handle.clone()), (112, Handle::Int(7)));
        assert_eq!((ins.start_ts, ins.commit_ts), (Ts(5), Ts(6)));
        assert_eq!(ins.new, Some(orders_expected(7)));
        assert_eq!(ins.old, None);

        let old = orders_row(&t, true);
        let upd = decode_change(&t, &raw(RawOp::Put, key.clone(), row.clone(), old)).unwrap();
        assert_eq!(upd.kind, RowChangeKind::Update);
        assert_eq!(upd.old, Some(orders_expected(7)));
        assert_eq!(upd.new, Some(orders_expected(7)));

        let del = decode_change(&t, &raw(RawOp::Delete, key.clone(), vec![], row)).unwrap();
        assert_eq!(del.kind, RowChangeKind::Delete);
        assert_eq!((del.old, del.new), (Some(orders_expected(7)), None));

        let bare = decode_change(&t, &raw(RawOp::Delete, key, vec![], vec![])).unwrap();
        assert_eq!(
            (bare.old, bare.new, bare.handle),
            (None, None, Handle::Int(7))
        );
    }

    fn col(tp: u8, flag: u32, decimal: i64, default: serde_json::Value) -> ColumnInfo {
        ColumnInfo {
            name: crate::schema::CIStr::new("c"),
            origin_default: Some(default),
            field_type: FieldType {
                tp,
                flag,
                decimal,
                elems: Some(vec!["x".into(), "y".into(), "z".into()]),
                ..FieldType::default()
            },
            ..ColumnInfo::default()
        }
    }

    #[test]
    fn origin_defaults_by_type() {
        let d = |c: ColumnInfo| origin_default_datum(&c).unwrap();
        assert_eq!(d(col(mysql::TYPE_LONG, 0, 0, json!("-5"))), Datum::Int(-5));
        assert_eq!(d(col(mysql::TYPE_LONG, 0, 0, json!(12))), Datum::Int(12));
        assert_eq!(
            d(col(
                mysql::TYPE_LONGLONG,
                mysql::FLAG_UNSIGNED,
                0,
                json!("18446744073709551615")
            )),
            Datum::Uint(u64::MAX)
        );
        assert_eq!(
            d(col(mysql::TYPE_DOUBLE, 0, -1, json!("1.5"))),
            Datum::Float64(1.5)
        );
        assert_eq!(
            d(col(mysql::TYPE_FLOAT, 0, -1, json!("0.25"))),
            Datum::Float32(0.25)
        );
        assert_eq!(
            d(col(mysql::TYPE_NEW_DECIMAL, 0, 2, json!("3.1"))),
            Datum::Decimal("3.10".parse().unwrap())
        );
        assert_eq!(
            d(col(mysql::TYPE_VARCHAR, 0, 0, json!("hi"))),
            Datum::Bytes(b"hi".to_vec())
        );
        let Datum::Time(date) = d(col(mysql::TYPE_DATE, 0, 0, json!("2024-02-29"))) else {
            panic!("not a time")
        };
        assert_eq!(
            (date.year, date.month, date.day, date.kind),
            (2024, 2, 29, TimeKind::Date)
        );
        let Datum::Time(ts) = d(col(
            mysql::TYPE_TIMESTAMP,
            0,
            3,
            json!("2024-02-29 10:11:12.5"),
        )) else {
            panic!("not a time")
        };
        assert_eq!(
            (ts.hour, ts.microsecond, ts.kind, ts.fsp),
            (10, 500_000, TimeKind::Timestamp, 3)
        );
        assert_eq!(
            d(col(mysql::TYPE_DURATION, 0, 0, json!("-01:00:00"))),
            Datum::Duration(Duration::from_nanos(-3_600_000_000_000, 0).unwrap())
        );
        assert_eq!(d(col(mysql::TYPE_ENUM, 0, 0, json!("y"))), Datum::Enum(2));
        assert_eq!(d(col(mysql::TYPE_ENUM, 0, 0, json!("Z"))), Datum::Enum(3));
        assert_eq!(d(col(mysql::TYPE_ENUM, 0, 0, json!(""))), Datum::Enum(0));
        assert_eq!(
            d(col(mysql::TYPE_SET, 0, 0, json!("x,z"))),
            Datum::Set(0b101)
        );
        assert_eq!(d(col(mysql::TYPE_SET, 0, 0, json!(""))), Datum::Set(0));
        assert_eq!(
            d(col(mysql::TYPE_JSON, 0, 0, json!("{\"a\": [1, true]}"))),
            Datum::Json(Json::from_serde(&json!({"a": [1, true]})).unwrap())
        );
        assert_eq!(
            d(col(mysql::TYPE_LONG, 0, 0, serde_json::Value::Null)),
            Datum::Null
        );
        let mut none = col(mysql::TYPE_LONG, 0, 0, json!(1));
        none.origin_default = None;
        assert_eq!(d(none), Datum::Null);

        // BIT: origin_default_bit is Go []byte, base64 in JSON.
        let mut bit = col(mysql::TYPE_BIT, 0, 0, json!("\u{5}"));
        bit.origin_default_bit = Some(json!("AQI="));
        assert_eq!(d(bit.clone()), Datum::Bit(0x0102));
        bit.origin_default_bit = None;
        assert_eq!(d(bit), Datum::Bit(5));

        for bad in [
            col(mysql::TYPE_LONG, 0, 0, json!("ten")),
            col(mysql::TYPE_ENUM, 0, 0, json!("w")),
            col(mysql::TYPE_SET, 0, 0, json!("x,w")),
            col(mysql::TYPE_DATE, 0, 0, json!("2024-13-01")),
            col(mysql::TYPE_JSON, 0, 0, json!("{")),
        ] {
            let err = origin_default_datum(&bad).unwrap_err();
            assert!(err.to_string().starts_with(DEFAULT_WHAT), "{err}");
        }
    }

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("/+8=").unwrap(), [0xff, 0xef]);
        assert!(base64_decode("a b").is_none());
    }

    #[test]
    fn need_restored_data_by_collation() {
        let mut f = FieldType {
            tp: mysql::TYPE_VARCHAR,
            collate: "utf8mb4_general_ci".into(),
            ..FieldType::default()
        };
        assert!(need_restored_data(&f));
        f.collate = "utf8mb4_bin".into();
        assert!(!need_restored_data(&f));
        f.tp = mysql::TYPE_LONG;
        f.collate = "utf8mb4_general_ci".into();
        assert!(!need_restored_data(&f));
    }

    proptest! {
        #[test]
        fn random_values_never_panic(value in proptest::collection::vec(any::<u8>(), 0..64)) {
            for (json, key) in [
                (INT_PK, encode_row_key_int(112, 3)),
                (COMMON, common_key(1, b"t")),
                (PARTITIONED, encode_row_key_int(131, 3)),
            ] {
                let t = table(json);
                let _ = decode_row(&t, &key, &value);
                let mut v2 = vec![0x80];
                v2.extend_from_slice(&value);
                let _ = decode_row(&t, &key, &v2);
            }
        }

        #[test]
        fn random_keys_never_panic(key in proptest::collection::vec(any::<u8>(), 0..48)) {
            let t = table(COMMON);
            let mut k = encode_row_key_int(120, 0);
            k.truncate(11);
            k.extend_from_slice(&key);
            let _ = decode_row(&t, &k, &[0x80, 0, 0, 0, 0, 0]);
            let _ = decode_row(&t, &key, &[0x80, 0, 0, 0, 0, 0]);
        }
    }
}
