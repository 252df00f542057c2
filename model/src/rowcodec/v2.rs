//! Row format v2 (`CodecVer = 128`), TiDB's current row value layout (wire.md §5.1–5.2).
//!
//! A v2 row lists its non-NULL column ids, then its NULL column ids, then end offsets into one
//! data area. [`RowV2::parse`] checks the whole frame once (flags, counts, id order, offsets) so
//! that lookups afterwards are plain binary searches over borrowed bytes; no column is decoded
//! until asked for, because most consumers want only some columns, typed by a schema that may
//! change between rows.

use crate::codec::number::{decode_float, encode_float};
use crate::datum::Datum;
use crate::decimal::Decimal;
use crate::error::CodecError;
use crate::json::Json;
use crate::mysql;
use crate::schema::FieldType;
use crate::time::{Duration, Time, TimeKind};

/// The version byte that starts every v2 row.
pub const CODEC_VER: u8 = 128;
/// Flag: ids are u32 and offsets u32 (any id > 255 or data > 65535 bytes).
pub const FLAG_LARGE: u8 = 0x01;
/// Flag: a checksum trailer follows the data.
pub const FLAG_HAS_CHECKSUM: u8 = 0x02;

const WHAT: &str = "row v2";

/// Where a column stands in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnSlot<'a> {
    /// The column's encoded bytes (decode with [`decode_column_v2`]).
    Value(&'a [u8]),
    /// The column is listed as SQL NULL.
    Null,
    /// The column is not in the row: use its origin default (wire.md §5.3).
    Absent,
}

/// The checksum trailer of a row, kept for verification by callers that want it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowChecksum {
    /// Checksum version (header bits 0–2).
    pub version: u8,
    /// The checksum.
    pub checksum: u32,
    /// The extra checksum, when header bit 3 is set.
    pub extra: Option<u32>,
}

/// A validated, borrowed view of a v2 row value.
#[derive(Debug, Clone, Copy)]
pub struct RowV2<'a> {
    large: bool,
    not_null_count: usize,
    null_count: usize,
    /// All ids: not-null ids then null ids, each 1 or 4 bytes.
    ids: &'a [u8],
    /// End offsets of the not-null columns, each 2 or 4 bytes.
    offsets: &'a [u8],
    data: &'a [u8],
    checksum: Option<RowChecksum>,
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    let n = b.len().min(4);
    a[..n].copy_from_slice(&b[..n]);
    u32::from_le_bytes(a)
}

fn take<'a>(input: &'a [u8], pos: &mut usize, len: usize) -> Result<&'a [u8], CodecError> {
    let end = pos.checked_add(len).ok_or(CodecError::Truncated {
        what: WHAT,
        needed: usize::MAX,
        available: input.len(),
    })?;
    let s = input.get(*pos..end).ok_or(CodecError::Truncated {
        what: WHAT,
        needed: end,
        available: input.len(),
    })?;
    *pos = end;
    Ok(s)
}

impl<'a> RowV2<'a> {
    /// Parses and validates a v2 row value: version byte, flags (only LARGE and HAS_CHECKSUM),
    /// counts, strictly ascending ids in each list with no id in both, monotone offsets ending
    /// exactly at the data's end, and the checksum trailer's shape. Nothing may follow.
    pub fn parse(value: &'a [u8]) -> Result<RowV2<'a>, CodecError> {
        CodecError::ensure_len(WHAT, value, 6)?;
        if value[0] != CODEC_VER {
            return Err(CodecError::invalid(
                WHAT,
                format!("version byte {} is not 128", value[0]),
            ));
        }
        let flags = value[1];
        if flags & !(FLAG_LARGE | FLAG_HAS_CHECKSUM) != 0 {
            return Err(CodecError::invalid(
                WHAT,
                format!("unknown flags {flags:#04x}"),
            ));
        }
        let large = flags & FLAG_LARGE != 0;
        let not_null_count = usize::from(u16::from_le_bytes([value[2], value[3]]));
        let null_count = usize::from(u16::from_le_bytes([value[4], value[5]]));
        let (id_size, off_size) = if large { (4, 4) } else { (1, 2) };
        let mut pos = 6;
        let ids = take(value, &mut pos, (not_null_count + null_count) * id_size)?;
        let offsets = take(value, &mut pos, not_null_count * off_size)?;
        let mut row = RowV2 {
            large,
            not_null_count,
            null_count,
            ids,
            offsets,
            data: &[],
            checksum: None,
        };
        let mut prev = 0usize;
        for i in 0..not_null_count {
            let end = row.offset(i);
            if end < prev {
                return Err(CodecError::invalid(
                    WHAT,
                    format!("offset {i} ({end}) is below the previous one ({prev})"),
                ));
            }
            prev = end;
        }
        row.data = take(value, &mut pos, prev)?;
        let rest = value.get(pos..).unwrap_or_default();
        if flags & FLAG_HAS_CHECKSUM != 0 {
            let (&header, sums) = rest.split_first().ok_or(CodecError::Truncated {
                what: "row v2 checksum",
                needed: pos + 5,
                available: value.len(),
            })?;
            if header & 0xF0 != 0 {
                return Err(CodecError::invalid(
                    "row v2 checksum",
                    format!("unknown header bits {header:#04x}"),
                ));
            }
            let has_extra = header & 0x08 != 0;
            let want = if has_extra { 8 } else { 4 };
            if sums.len() != want {
                return Err(CodecError::invalid(
                    "row v2 checksum",
                    format!("{} trailer bytes, expected {want}", sums.len()),
                ));
            }
            row.checksum = Some(RowChecksum {
                version: header & 0x07,
                checksum: le_u32(&sums[..4]),
                extra: has_extra.then(|| le_u32(&sums[4..])),
            });
        } else if !rest.is_empty() {
            return Err(CodecError::invalid(
                WHAT,
                format!("{} bytes after the data", rest.len()),
            ));
        }
        for (list, range) in [
            ("not-null", 0..not_null_count),
            ("null", not_null_count..not_null_count + null_count),
        ] {
            let mut last: Option<u32> = None;
            for i in range {
                let id = row.id(i);
                if last.is_some_and(|l| l >= id) {
                    return Err(CodecError::invalid(
                        WHAT,
                        format!("{list} ids not strictly ascending at {id}"),
                    ));
                }
                last = Some(id);
            }
        }
        for i in not_null_count..not_null_count + null_count {
            let id = row.id(i);
            if row.find(0, not_null_count, id).is_some() {
                return Err(CodecError::invalid(
                    WHAT,
                    format!("column {id} is both null and not null"),
                ));
            }
        }
        Ok(row)
    }

    /// The i-th id of the combined list (valid after the length checks in `parse`).
    fn id(&self, i: usize) -> u32 {
        if self.large {
            le_u32(self.ids.get(i * 4..i * 4 + 4).unwrap_or_default())
        } else {
            u32::from(self.ids.get(i).copied().unwrap_or(0))
        }
    }

    /// The end offset of the i-th not-null column.
    fn offset(&self, i: usize) -> usize {
        let b = if self.large {
            self.offsets.get(i * 4..i * 4 + 4)
        } else {
            self.offsets.get(i * 2..i * 2 + 2)
        };
        le_u32(b.unwrap_or_default()) as usize
    }

    /// Binary search for `id` among combined-list positions `lo..hi`.
    fn find(&self, mut lo: usize, mut hi: usize, id: u32) -> Option<usize> {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.id(mid).cmp(&id) {
                std::cmp::Ordering::Equal => return Some(mid),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// The bytes of the i-th not-null column.
    fn value_at(&self, i: usize) -> &'a [u8] {
        let start = if i == 0 { 0 } else { self.offset(i - 1) };
        self.data.get(start..self.offset(i)).unwrap_or_default()
    }

    /// Looks a column up by id (binary search in each list).
    pub fn get(&self, col_id: i64) -> ColumnSlot<'a> {
        let Ok(id) = u32::try_from(col_id) else {
            return ColumnSlot::Absent;
        };
        if let Some(i) = self.find(0, self.not_null_count, id) {
            return ColumnSlot::Value(self.value_at(i));
        }
        let total = self.not_null_count + self.null_count;
        if self.find(self.not_null_count, total, id).is_some() {
            return ColumnSlot::Null;
        }
        ColumnSlot::Absent
    }

    /// The ids of the non-NULL columns, ascending.
    pub fn not_null_ids(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.not_null_count).map(|i| i64::from(self.id(i)))
    }

    /// The ids of the NULL columns, ascending.
    pub fn null_ids(&self) -> impl Iterator<Item = i64> + '_ {
        (self.not_null_count..self.not_null_count + self.null_count).map(|i| i64::from(self.id(i)))
    }

    /// Every listed column: the non-NULL ones with their bytes, then the NULL ones.
    pub fn iter(&self) -> impl Iterator<Item = (i64, ColumnSlot<'a>)> + '_ {
        let values = (0..self.not_null_count)
            .map(|i| (i64::from(self.id(i)), ColumnSlot::Value(self.value_at(i))));
        values.chain(self.null_ids().map(|id| (id, ColumnSlot::Null)))
    }

    /// True if the row uses the LARGE layout.
    pub fn is_large(&self) -> bool {
        self.large
    }

    /// Number of non-NULL columns.
    pub fn not_null_count(&self) -> usize {
        self.not_null_count
    }

    /// Number of NULL columns.
    pub fn null_count(&self) -> usize {
        self.null_count
    }

    /// The checksum trailer, if the row has one.
    pub fn checksum(&self) -> Option<RowChecksum> {
        self.checksum
    }
}

/// Encodes a signed integer little-endian in the fewest of 1, 2, 4 or 8 bytes.
pub fn encode_int_v2(v: i64) -> Vec<u8> {
    if let Ok(x) = i8::try_from(v) {
        x.to_le_bytes().to_vec()
    } else if let Ok(x) = i16::try_from(v) {
        x.to_le_bytes().to_vec()
    } else if let Ok(x) = i32::try_from(v) {
        x.to_le_bytes().to_vec()
    } else {
        v.to_le_bytes().to_vec()
    }
}

/// Encodes an unsigned integer little-endian in the fewest of 1, 2, 4 or 8 bytes.
pub fn encode_uint_v2(v: u64) -> Vec<u8> {
    if let Ok(x) = u8::try_from(v) {
        vec![x]
    } else if let Ok(x) = u16::try_from(v) {
        x.to_le_bytes().to_vec()
    } else if let Ok(x) = u32::try_from(v) {
        x.to_le_bytes().to_vec()
    } else {
        v.to_le_bytes().to_vec()
    }
}

/// Decodes a 1, 2, 4 or 8 byte little-endian signed integer (sign-extended).
pub fn decode_int_v2(b: &[u8]) -> Result<i64, CodecError> {
    Ok(match *b {
        [a] => i64::from(a as i8),
        [a, b] => i64::from(i16::from_le_bytes([a, b])),
        [a, b, c, d] => i64::from(i32::from_le_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => i64::from_le_bytes([a, b, c, d, e, f, g, h]),
        _ => {
            return Err(CodecError::invalid(
                "row v2 int",
                format!("width {} is not 1, 2, 4 or 8", b.len()),
            ));
        }
    })
}

/// Decodes a 1, 2, 4 or 8 byte little-endian unsigned integer.
pub fn decode_uint_v2(b: &[u8]) -> Result<u64, CodecError> {
    Ok(match *b {
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_le_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
        _ => {
            return Err(CodecError::invalid(
                "row v2 uint",
                format!("width {} is not 1, 2, 4 or 8", b.len()),
            ));
        }
    })
}

fn decode_f64(b: &[u8]) -> Result<f64, CodecError> {
    if b.len() != 8 {
        return Err(CodecError::invalid(
            "row v2 float",
            format!("width {} is not 8", b.len()),
        ));
    }
    Ok(decode_float(b)?.0)
}

/// The fractional-seconds precision of a time column: its `Decimal`, clamped to 0..=6.
pub(crate) fn column_fsp(ft: &FieldType) -> u8 {
    ft.decimal.clamp(0, 6) as u8
}

/// The [`TimeKind`] of a DATE/DATETIME/TIMESTAMP column type.
pub(crate) fn time_kind(tp: u8) -> TimeKind {
    match tp {
        mysql::TYPE_DATETIME => TimeKind::Datetime,
        mysql::TYPE_TIMESTAMP => TimeKind::Timestamp,
        _ => TimeKind::Date,
    }
}

/// The (precision, frac) a decimal is written with: the column's when valid, else the value's.
pub(crate) fn decimal_prec_frac(d: &Decimal, ft: &FieldType) -> (u8, u8) {
    match (u8::try_from(ft.flen), u8::try_from(ft.decimal)) {
        (Ok(p), Ok(f)) if crate::decimal::decimal_bin_size(p, f).is_ok() => (p, f),
        _ => d.precision_and_frac(),
    }
}

fn is_decimal_type(tp: u8) -> bool {
    tp == mysql::TYPE_NEW_DECIMAL || tp == mysql::TYPE_DECIMAL
}

/// Decodes one column's v2 bytes by its type (wire.md §5.2).
pub fn decode_column_v2(bytes: &[u8], ft: &FieldType) -> Result<Datum, CodecError> {
    let tp = ft.tp;
    Ok(match tp {
        mysql::TYPE_YEAR => Datum::Int(decode_int_v2(bytes)?),
        _ if mysql::is_integer_type(tp) => {
            if ft.is_unsigned() {
                Datum::Uint(decode_uint_v2(bytes)?)
            } else {
                Datum::Int(decode_int_v2(bytes)?)
            }
        }
        mysql::TYPE_FLOAT => Datum::Float32(decode_f64(bytes)? as f32),
        mysql::TYPE_DOUBLE => Datum::Float64(decode_f64(bytes)?),
        _ if mysql::is_string_type(tp) => Datum::Bytes(bytes.to_vec()),
        _ if is_decimal_type(tp) => Datum::Decimal(Decimal::decode_column(bytes)?.0),
        _ if mysql::is_time_type(tp) => Datum::Time(Time::from_packed(
            decode_uint_v2(bytes)?,
            time_kind(tp),
            column_fsp(ft),
        )?),
        mysql::TYPE_DURATION => {
            Datum::Duration(Duration::from_nanos(decode_int_v2(bytes)?, column_fsp(ft))?)
        }
        mysql::TYPE_ENUM => Datum::Enum(decode_uint_v2(bytes)?),
        mysql::TYPE_SET => Datum::Set(decode_uint_v2(bytes)?),
        mysql::TYPE_BIT => Datum::Bit(decode_uint_v2(bytes)?),
        mysql::TYPE_JSON => Datum::Json(Json::decode_column(bytes)?),
        other => {
            return Err(CodecError::unsupported(
                WHAT,
                format!("column type code {other} ({other:#04x})"),
            ));
        }
    })
}

fn mismatch(datum: &Datum, ft: &FieldType) -> CodecError {
    CodecError::invalid(
        "row v2 encode",
        format!("datum {datum:?} does not fit column type {}", ft.tp),
    )
}

/// Encodes one non-NULL datum as the v2 bytes of a column of type `ft` (the inverse of
/// [`decode_column_v2`]). A datum of the wrong kind for the type, or NULL, is an error.
pub fn encode_column_v2(datum: &Datum, ft: &FieldType) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    push_column_v2(&mut out, datum, ft)?;
    Ok(out)
}

/// Appends the smallest little-endian form (1, 2, 4 or 8 bytes) of a signed integer.
fn push_int_v2(out: &mut Vec<u8>, v: i64) {
    if let Ok(x) = i8::try_from(v) {
        out.extend_from_slice(&x.to_le_bytes());
    } else if let Ok(x) = i16::try_from(v) {
        out.extend_from_slice(&x.to_le_bytes());
    } else if let Ok(x) = i32::try_from(v) {
        out.extend_from_slice(&x.to_le_bytes());
    } else {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Appends the smallest little-endian form (1, 2, 4 or 8 bytes) of an unsigned integer.
fn push_uint_v2(out: &mut Vec<u8>, v: u64) {
    if let Ok(x) = u8::try_from(v) {
        out.push(x);
    } else if let Ok(x) = u16::try_from(v) {
        out.extend_from_slice(&x.to_le_bytes());
    } else if let Ok(x) = u32::try_from(v) {
        out.extend_from_slice(&x.to_le_bytes());
    } else {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// [`encode_column_v2`] appending to `out` (left as it was on error).
fn push_column_v2(out: &mut Vec<u8>, datum: &Datum, ft: &FieldType) -> Result<(), CodecError> {
    let tp = ft.tp;
    let bad = || mismatch(datum, ft);
    match (tp, datum) {
        (mysql::TYPE_YEAR, Datum::Int(v)) => push_int_v2(out, *v),
        (_, Datum::Int(v)) if mysql::is_integer_type(tp) => {
            if ft.is_unsigned() {
                push_uint_v2(out, u64::try_from(*v).map_err(|_| bad())?)
            } else {
                push_int_v2(out, *v)
            }
        }
        (_, Datum::Uint(v)) if mysql::is_integer_type(tp) => {
            if ft.is_unsigned() {
                push_uint_v2(out, *v)
            } else {
                push_int_v2(out, i64::try_from(*v).map_err(|_| bad())?)
            }
        }
        (mysql::TYPE_FLOAT, Datum::Float32(v)) => encode_float(out, f64::from(*v)),
        (mysql::TYPE_DOUBLE, Datum::Float64(v)) => encode_float(out, *v),
        (_, Datum::Bytes(b)) if mysql::is_string_type(tp) => out.extend_from_slice(b),
        (_, Datum::Decimal(d)) if is_decimal_type(tp) => {
            let (p, f) = decimal_prec_frac(d, ft);
            out.extend_from_slice(&d.encode_column(p, f)?);
        }
        (_, Datum::Time(t)) if mysql::is_time_type(tp) => push_uint_v2(out, t.to_packed()),
        (mysql::TYPE_DURATION, Datum::Duration(d)) => push_int_v2(out, d.nanos),
        (mysql::TYPE_ENUM, Datum::Enum(v))
        | (mysql::TYPE_SET, Datum::Set(v))
        | (mysql::TYPE_BIT, Datum::Bit(v)) => push_uint_v2(out, *v),
        (mysql::TYPE_JSON, Datum::Json(j)) => out.extend_from_slice(&j.encode_column()),
        _ => return Err(bad()),
    }
    Ok(())
}

/// Encodes a v2 row from `(column id, datum, type)` triples in any order: ids are sorted, NULLs
/// go to the null list, and the LARGE layout is used when an id exceeds 255 or the data exceeds
/// 65535 bytes. No checksum is written. Fails on negative, oversized or duplicate ids, more than
/// 65535 columns in a list, and datums that do not fit their types.
pub fn encode_row_v2(cols: &[(i64, &Datum, &FieldType)]) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_row_v2_into(&mut out, cols)?;
    Ok(out)
}

/// Rows with at most this many columns sort their column order on the stack.
const INLINE_COLS: usize = 32;

/// [`encode_row_v2`] appending to `out`, for callers that encode many rows through one reused
/// buffer: the bytes appended are exactly the ones [`encode_row_v2`] returns, and the encoder
/// itself allocates nothing for rows of up to 32 columns (the column values are written
/// straight into `out`). On error `out` is left as it was.
pub fn encode_row_v2_into(
    out: &mut Vec<u8>,
    cols: &[(i64, &Datum, &FieldType)],
) -> Result<(), CodecError> {
    let start = out.len();
    let mut inline = [(0u32, 0usize); INLINE_COLS];
    let mut heap = Vec::new();
    let order: &mut [(u32, usize)] = if cols.len() <= INLINE_COLS {
        &mut inline[..cols.len()]
    } else {
        heap.resize(cols.len(), (0u32, 0usize));
        &mut heap
    };
    for (i, &(id, _, _)) in cols.iter().enumerate() {
        let id = u32::try_from(id)
            .map_err(|_| CodecError::invalid("row v2 encode", format!("column id {id}")))?;
        order[i] = (id, i);
    }
    order.sort_unstable_by_key(|c| c.0);
    if let Some(w) = order.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(CodecError::invalid(
            "row v2 encode",
            format!("duplicate column id {}", w[0].0),
        ));
    }
    let large_ids = order.last().is_some_and(|c| c.0 > 255);
    let mut r = encode_layout(out, cols, order, large_ids);
    if matches!(r, Ok(false)) {
        // The data outgrew the small layout's 16-bit offsets: start over with the large one.
        out.truncate(start);
        r = encode_layout(out, cols, order, true);
    }
    if r.is_err() {
        out.truncate(start);
    }
    r.map(|_| ())
}

/// Appends the row in the small (`large == false`) or large layout, with the columns in
/// `order` (sorted ids with their index in `cols`). Returns `Ok(false)`, having stopped early,
/// if the small layout cannot hold the data.
fn encode_layout(
    out: &mut Vec<u8>,
    cols: &[(i64, &Datum, &FieldType)],
    order: &[(u32, usize)],
    large: bool,
) -> Result<bool, CodecError> {
    let not_null = order.iter().filter(|c| !cols[c.1].1.is_null()).count();
    let nulls = order.len() - not_null;
    let (id_w, off_w) = if large { (4, 4) } else { (1, 2) };
    out.reserve(6 + order.len() * id_w + not_null * off_w);
    out.push(CODEC_VER);
    out.push(if large { FLAG_LARGE } else { 0 });
    // Counts are checked after the data (as the column errors come first); write them
    // truncated for now.
    out.extend_from_slice(&(not_null as u16).to_le_bytes());
    out.extend_from_slice(&(nulls as u16).to_le_bytes());
    let null_pass = order.iter().filter(|c| cols[c.1].1.is_null());
    for &(id, _) in order
        .iter()
        .filter(|c| !cols[c.1].1.is_null())
        .chain(null_pass)
    {
        if large {
            out.extend_from_slice(&id.to_le_bytes());
        } else {
            out.push(id as u8);
        }
    }
    let mut slot = out.len();
    out.resize(slot + not_null * off_w, 0);
    let data_start = out.len();
    let mut too_big = false;
    for &(_, i) in order {
        let (_, d, ft) = cols[i];
        if d.is_null() {
            continue;
        }
        push_column_v2(out, d, ft)?;
        let end = out.len() - data_start;
        if large {
            too_big |= u32::try_from(end).is_err();
            out[slot..slot + 4].copy_from_slice(&(end as u32).to_le_bytes());
        } else {
            let Ok(end) = u16::try_from(end) else {
                return Ok(false);
            };
            out[slot..slot + 2].copy_from_slice(&end.to_le_bytes());
        }
        slot += off_w;
    }
    for n in [not_null, nulls] {
        if u16::try_from(n).is_err() {
            return Err(CodecError::invalid(
                "row v2 encode",
                format!("{n} columns in one list"),
            ));
        }
    }
    if too_big {
        return Err(CodecError::invalid(
            "row v2 encode",
            "data larger than 4 GiB",
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The encoder as first written (separate id lists, data and offsets assembled at the
    /// end), kept as the reference [`encode_row_v2_into`] must match byte for byte.
    fn reference(cols: &[(i64, &Datum, &FieldType)]) -> Result<Vec<u8>, CodecError> {
        let mut sorted = Vec::new();
        for &(id, d, ft) in cols {
            let id = u32::try_from(id)
                .map_err(|_| CodecError::invalid("row v2 encode", format!("column id {id}")))?;
            sorted.push((id, d, ft));
        }
        sorted.sort_by_key(|c| c.0);
        if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(CodecError::invalid(
                "row v2 encode",
                format!("duplicate column id {}", w[0].0),
            ));
        }
        let (mut not_null, mut nulls, mut data, mut ends) = (vec![], vec![], vec![], vec![]);
        for (id, d, ft) in sorted {
            if d.is_null() {
                nulls.push(id);
            } else {
                data.extend(encode_column_v2(d, ft)?);
                ends.push(data.len());
                not_null.push(id);
            }
        }
        let large = data.len() > 0xFFFF || not_null.iter().chain(&nulls).any(|&id| id > 255);
        let mut out = vec![CODEC_VER, if large { FLAG_LARGE } else { 0 }];
        out.extend_from_slice(&(not_null.len() as u16).to_le_bytes());
        out.extend_from_slice(&(nulls.len() as u16).to_le_bytes());
        for &id in not_null.iter().chain(&nulls) {
            if large {
                out.extend_from_slice(&id.to_le_bytes());
            } else {
                out.push(id as u8);
            }
        }
        for &end in &ends {
            if large {
                out.extend_from_slice(&(end as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&(end as u16).to_le_bytes());
            }
        }
        out.extend(data);
        Ok(out)
    }

    fn ft(tp: u8, flag: u32) -> FieldType {
        FieldType {
            tp,
            flag,
            ..FieldType::default()
        }
    }

    fn arb_col() -> impl Strategy<Value = (i64, FieldType, Datum)> {
        let id = prop_oneof![4 => 0i64..40, 1 => 0i64..600, 1 => -3i64..3];
        let typed = prop_oneof![
            any::<i64>().prop_map(|v| (ft(mysql::TYPE_LONGLONG, 0), Datum::Int(v))),
            any::<u64>().prop_map(|v| (
                ft(mysql::TYPE_LONGLONG, mysql::FLAG_UNSIGNED),
                Datum::Uint(v)
            )),
            any::<f64>().prop_map(|v| (ft(mysql::TYPE_DOUBLE, 0), Datum::Float64(v))),
            (0usize..40, 0usize..3).prop_map(|(n, big)| {
                // Now and then a value long enough to push the row into the large layout.
                let len = if big == 0 { 30_000 + n } else { n };
                (ft(mysql::TYPE_VARCHAR, 0), Datum::Bytes(vec![b'x'; len]))
            }),
            Just((ft(mysql::TYPE_LONGLONG, 0), Datum::Null)),
            // A datum that does not fit its column type.
            Just((ft(mysql::TYPE_LONGLONG, 0), Datum::Float64(1.5))),
        ];
        (id, typed).prop_map(|(id, (ft, d))| (id, ft, d))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Same bytes (or the same error) as the reference, appended after what the buffer
        /// held, which an error leaves untouched.
        #[test]
        fn into_matches_reference(
            row in prop::collection::vec(arb_col(), 0..12),
            prefix in prop::collection::vec(any::<u8>(), 0..4),
        ) {
            let cols: Vec<(i64, &Datum, &FieldType)> =
                row.iter().map(|(id, ft, d)| (*id, d, ft)).collect();
            let mut buf = prefix.clone();
            let got = encode_row_v2_into(&mut buf, &cols);
            match reference(&cols) {
                Ok(want) => {
                    prop_assert!(got.is_ok());
                    prop_assert_eq!(&buf[..prefix.len()], &prefix[..]);
                    prop_assert_eq!(&buf[prefix.len()..], &want[..]);
                    prop_assert_eq!(encode_row_v2(&cols).ok(), Some(want));
                }
                Err(e) => {
                    prop_assert_eq!(got.err().map(|g| g.to_string()), Some(e.to_string()));
                    prop_assert_eq!(&buf, &prefix);
                }
            }
        }
    }

    #[test]
    fn many_columns_sort_on_the_heap_and_switch_layout() {
        let big = Datum::Bytes(vec![b'y'; 70_000]);
        let int = Datum::Int(-7);
        let t_int = ft(mysql::TYPE_LONGLONG, 0);
        let t_str = ft(mysql::TYPE_VARCHAR, 0);
        // 40 columns (past the inline sort), ids in reverse, one value over 65535 bytes.
        let mut cols: Vec<(i64, &Datum, &FieldType)> =
            (0..40).rev().map(|id| (id, &int, &t_int)).collect();
        cols.push((100, &big, &t_str));
        let mut buf = Vec::new();
        encode_row_v2_into(&mut buf, &cols).unwrap();
        assert_eq!(buf, reference(&cols).unwrap());
        assert_eq!(buf[1], FLAG_LARGE);
        assert_eq!(&buf[2..6], &[41, 0, 0, 0]);
        assert_eq!(buf.len(), 6 + 41 * 4 + 41 * 4 + 40 + 70_000);
    }
}
