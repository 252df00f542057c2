//! Row format v1, the legacy layout still found in rows written before TiDB 4.0 (wire.md §5.6).
//!
//! A v1 row is `colID, value, colID, value, …`, every element a flag-prefixed datum. Values were
//! "flattened" before encoding (a time became its packed `u64`, a TIME its nanoseconds, an enum
//! its index), so the bytes alone do not say what a value means: [`datum_from_flagged_v1`] puts
//! the column's type back.

use crate::codec::datum::{FlaggedDatum, VARINT_FLAG, decode_flagged, encode_value_flagged};
use crate::datum::Datum;
use crate::decimal::Decimal;
use crate::error::CodecError;
use crate::json::Json;
use crate::mysql;
use crate::rowcodec::v2::{column_fsp, decimal_prec_frac, time_kind};
use crate::schema::FieldType;
use crate::time::{Duration, Time};

const WHAT: &str = "row v1";

/// Decodes a v1 row into `(column id, datum)` pairs in stored order.
///
/// The single byte `0x00` is a row with no columns; an empty slice is an error (it means "no
/// value", e.g. a DELETE). Every column id must be a varint datum (flag 8).
pub fn decode_row_v1(value: &[u8]) -> Result<Vec<(i64, FlaggedDatum)>, CodecError> {
    if value.is_empty() {
        return Err(CodecError::invalid(WHAT, "empty value"));
    }
    if value == [0] {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(&flag) = rest.first() {
        if flag != VARINT_FLAG {
            return Err(CodecError::invalid(
                WHAT,
                format!("column id has flag {flag}, expected 8"),
            ));
        }
        let (id, after_id) = decode_flagged(rest)?;
        let FlaggedDatum::Int(id) = id else {
            return Err(CodecError::invalid(WHAT, "column id is not an integer"));
        };
        if after_id.is_empty() {
            return Err(CodecError::Truncated {
                what: WHAT,
                needed: value.len() + 1,
                available: value.len(),
            });
        }
        let (datum, after_value) = decode_flagged(after_id)?;
        if datum == FlaggedDatum::Max {
            return Err(CodecError::invalid(WHAT, "max sentinel used as a value"));
        }
        out.push((id, datum));
        rest = after_value;
    }
    Ok(out)
}

fn mismatch(d: &FlaggedDatum, ft: &FieldType) -> CodecError {
    CodecError::invalid(
        WHAT,
        format!("datum {d:?} does not fit column type {}", ft.tp),
    )
}

/// Puts a column's type back onto a v1 datum ("unflattening"): packed `u64` → [`Time`],
/// nanoseconds → [`Duration`], `u64` → ENUM/SET/BIT, decimal and JSON payloads decoded and
/// checked, integers signed or unsigned by the column's flag (an `Int` in an UNSIGNED column is
/// reinterpreted as TiDB does), doubles narrowed for FLOAT.
pub fn datum_from_flagged_v1(d: FlaggedDatum, ft: &FieldType) -> Result<Datum, CodecError> {
    let tp = ft.tp;
    let bad = |d: &FlaggedDatum| mismatch(d, ft);
    let as_u64 = |d: &FlaggedDatum| match *d {
        FlaggedDatum::Uint(u) => Ok(u),
        FlaggedDatum::Int(i) => u64::try_from(i).map_err(|_| bad(d)),
        _ => Err(bad(d)),
    };
    if d == FlaggedDatum::Nil {
        return Ok(Datum::Null);
    }
    Ok(match tp {
        mysql::TYPE_YEAR => match d {
            FlaggedDatum::Int(i) => Datum::Int(i),
            FlaggedDatum::Uint(u) => Datum::Int(i64::try_from(u).map_err(|_| bad(&d))?),
            _ => return Err(bad(&d)),
        },
        _ if mysql::is_integer_type(tp) => match (d, ft.is_unsigned()) {
            (FlaggedDatum::Uint(u), true) => Datum::Uint(u),
            (FlaggedDatum::Int(i), true) => Datum::Uint(i as u64),
            (FlaggedDatum::Int(i), false) => Datum::Int(i),
            (d @ FlaggedDatum::Uint(u), false) => {
                Datum::Int(i64::try_from(u).map_err(|_| bad(&d))?)
            }
            (d, _) => return Err(bad(&d)),
        },
        mysql::TYPE_FLOAT => match d {
            FlaggedDatum::Float(f) => Datum::Float32(f as f32),
            _ => return Err(bad(&d)),
        },
        mysql::TYPE_DOUBLE => match d {
            FlaggedDatum::Float(f) => Datum::Float64(f),
            _ => return Err(bad(&d)),
        },
        _ if mysql::is_string_type(tp) => match d {
            FlaggedDatum::Bytes(b) => Datum::Bytes(b),
            _ => return Err(bad(&d)),
        },
        mysql::TYPE_NEW_DECIMAL | mysql::TYPE_DECIMAL => match d {
            FlaggedDatum::Decimal {
                precision,
                frac,
                ref bin,
            } => {
                let (v, used) = Decimal::from_bin(bin, precision, frac)?;
                if used != bin.len() {
                    return Err(CodecError::invalid(
                        WHAT,
                        "decimal payload has trailing bytes",
                    ));
                }
                Datum::Decimal(v)
            }
            _ => return Err(bad(&d)),
        },
        _ if mysql::is_time_type(tp) => match d {
            FlaggedDatum::Uint(u) => {
                Datum::Time(Time::from_packed(u, time_kind(tp), column_fsp(ft))?)
            }
            _ => return Err(bad(&d)),
        },
        mysql::TYPE_DURATION => match d {
            FlaggedDatum::Int(n) | FlaggedDatum::Duration(n) => {
                Datum::Duration(Duration::from_nanos(n, column_fsp(ft))?)
            }
            _ => return Err(bad(&d)),
        },
        mysql::TYPE_ENUM => Datum::Enum(as_u64(&d)?),
        mysql::TYPE_SET => Datum::Set(as_u64(&d)?),
        mysql::TYPE_BIT => Datum::Bit(as_u64(&d)?),
        mysql::TYPE_JSON => match d {
            FlaggedDatum::Json { type_code, ref bin } => {
                Datum::Json(Json::from_binary(type_code, bin)?)
            }
            _ => return Err(bad(&d)),
        },
        other => {
            return Err(CodecError::unsupported(
                WHAT,
                format!("column type code {other} ({other:#04x})"),
            ));
        }
    })
}

/// Flattens a datum the way TiDB's v1 encoder did.
fn flatten(d: &Datum, ft: &FieldType) -> Result<FlaggedDatum, CodecError> {
    Ok(match d {
        Datum::Null => FlaggedDatum::Nil,
        Datum::Int(v) => FlaggedDatum::Int(*v),
        Datum::Uint(v) | Datum::Enum(v) | Datum::Set(v) | Datum::Bit(v) => FlaggedDatum::Uint(*v),
        Datum::Float32(v) => FlaggedDatum::Float(f64::from(*v)),
        Datum::Float64(v) => FlaggedDatum::Float(*v),
        Datum::Bytes(b) => FlaggedDatum::Bytes(b.clone()),
        Datum::Decimal(v) => {
            let (precision, frac) = decimal_prec_frac(v, ft);
            FlaggedDatum::Decimal {
                precision,
                frac,
                bin: v.to_bin(precision, frac)?,
            }
        }
        Datum::Time(t) => FlaggedDatum::Uint(t.to_packed()),
        Datum::Duration(v) => FlaggedDatum::Int(v.nanos),
        Datum::Json(j) => FlaggedDatum::Json {
            type_code: j.type_code,
            bin: j.value.clone(),
        },
    })
}

/// Encodes a v1 row from `(column id, datum, type)` triples, in the given order (for tests and
/// the simulator's legacy rows). No columns gives the single byte `0x00`.
pub fn encode_row_v1(cols: &[(i64, &Datum, &FieldType)]) -> Result<Vec<u8>, CodecError> {
    if cols.is_empty() {
        return Ok(vec![0]);
    }
    let mut out = Vec::new();
    for &(id, d, ft) in cols {
        encode_value_flagged(&mut out, &FlaggedDatum::Int(id));
        encode_value_flagged(&mut out, &flatten(d, ft)?);
    }
    Ok(out)
}
