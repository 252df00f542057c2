//! Canonical text forms of column values, so that three very different sources compare equal
//! when they hold the same value: an upstream [`Datum`] decoded from TiKV, a MySQL text-protocol
//! value, and a canal-json or csv field read back from a storage sink directory.
//!
//! Each source renders values its own way (canal-json writes an ENUM as its index, csv and MySQL
//! as its name; MySQL sends BIT as big-endian bytes, the files as a number; MariaDB prints FLOAT
//! with six significant digits, TiDB with the shortest round-trip form). Rather than teach each
//! pair of sources about each other, every value is brought to one canonical form per column
//! kind, and only canonical forms are hashed and compared:
//!
//! | kind | canonical form |
//! |---|---|
//! | integers, YEAR, BIT | decimal digits |
//! | FLOAT | 6 significant digits (`1.23457e0`): what every source keeps of an f32 |
//! | DOUBLE | 15 significant digits |
//! | DECIMAL | digits without leading zeros, without trailing fraction zeros |
//! | strings | the UTF-8 text (CHAR without trailing spaces) |
//! | binary strings | `0x` + lower-case hex (BINARY without trailing zero bytes) |
//! | DATE, DATETIME, TIMESTAMP, TIME | MySQL's text form, fraction without trailing zeros |
//! | ENUM | the element name |
//! | SET | the element names in definition order, comma-separated |
//! | JSON | the document re-serialized with sorted keys and normalized numbers |
//!
//! A downstream text that does not parse as its column's kind becomes a marked form that equals
//! no canonical value, so it shows up as a difference rather than as an error.

use tidal_model::mysql;
use tidal_model::schema::{ColumnInfo, FieldType};
use tidal_model::{Datum, decode};

/// One canonical cell: `None` is SQL NULL.
pub type Cell = Option<String>;

/// How a column's values are canonicalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Signed or unsigned integers (and YEAR).
    Int,
    /// FLOAT.
    Float,
    /// DOUBLE.
    Double,
    /// DECIMAL.
    Decimal,
    /// Character strings; `pad` for CHAR (trailing spaces are not significant).
    Text { pad: bool, latin1: bool },
    /// Binary strings; `pad` for BINARY (trailing zero bytes are not significant).
    Binary { pad: bool },
    /// DATE, DATETIME, TIMESTAMP.
    Time,
    /// TIME.
    Duration,
    /// ENUM.
    Enum,
    /// SET.
    Set,
    /// BIT.
    Bit,
    /// JSON.
    Json,
}

/// Where a downstream text value came from: the sources disagree on a few kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// MySQL's text protocol (BIT as big-endian bytes, ENUM/SET as names).
    MySql,
    /// Canal-json (ENUM as index, SET as mask, BIT as a number).
    CanalJson,
    /// Csv (ENUM/SET as names, BIT as a number).
    Csv,
}

/// True for the binary flag or character set.
fn is_binary(ft: &FieldType) -> bool {
    ft.flag & mysql::FLAG_BINARY != 0 || ft.charset.eq_ignore_ascii_case("binary")
}

impl Kind {
    /// The kind of a column type.
    pub(crate) fn of(ft: &FieldType) -> Kind {
        match ft.tp {
            mysql::TYPE_TINY
            | mysql::TYPE_SHORT
            | mysql::TYPE_INT24
            | mysql::TYPE_LONG
            | mysql::TYPE_LONGLONG
            | mysql::TYPE_YEAR => Kind::Int,
            mysql::TYPE_FLOAT => Kind::Float,
            mysql::TYPE_DOUBLE => Kind::Double,
            mysql::TYPE_DECIMAL | mysql::TYPE_NEW_DECIMAL => Kind::Decimal,
            mysql::TYPE_DATE
            | mysql::TYPE_NEW_DATE
            | mysql::TYPE_DATETIME
            | mysql::TYPE_TIMESTAMP => Kind::Time,
            mysql::TYPE_DURATION => Kind::Duration,
            mysql::TYPE_ENUM => Kind::Enum,
            mysql::TYPE_SET => Kind::Set,
            mysql::TYPE_BIT => Kind::Bit,
            mysql::TYPE_JSON => Kind::Json,
            tp => {
                let pad = tp == mysql::TYPE_STRING;
                if is_binary(ft) || tp == mysql::TYPE_GEOMETRY {
                    Kind::Binary { pad }
                } else {
                    Kind::Text {
                        pad,
                        latin1: ft.charset.eq_ignore_ascii_case("latin1"),
                    }
                }
            }
        }
    }
}

/// Lower-case hex with a `0x` prefix.
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The mark of a downstream text that does not parse as its column's kind.
fn unparsed(text: &[u8]) -> String {
    format!("unparsed {:?}", String::from_utf8_lossy(text))
}

fn float_form(v: f64, digits: usize) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    format!("{:.*e}", digits.saturating_sub(1), v)
}

/// Canonical FLOAT: the value as an f32, to 6 significant digits.
fn float32_form(v: f32) -> String {
    float_form(f64::from(v), 6)
}

/// Canonical DOUBLE: 15 significant digits.
fn float64_form(v: f64) -> String {
    float_form(v, 15)
}

/// Canonical decimal text, or `None` if `s` is not a plain decimal number.
pub(crate) fn decimal_form(s: &str) -> Option<String> {
    let s = s.trim();
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, s.get(1..)?),
        Some(b'+') => (false, s.get(1..)?),
        _ => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let mut out = String::with_capacity(body.len() + 1);
    if int.is_empty() && frac.is_empty() {
        return Some("0".to_string());
    }
    if neg {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Some(out)
}

/// A time text with its fraction's trailing zeros (and a bare point) removed.
fn time_form(s: &str) -> String {
    let s = s.trim();
    match s.split_once('.') {
        Some((head, frac)) if frac.bytes().all(|b| b.is_ascii_digit()) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                head.to_string()
            } else {
                format!("{head}.{frac}")
            }
        }
        _ => s.to_string(),
    }
}

fn elems(ft: &FieldType) -> &[String] {
    ft.elems.as_deref().unwrap_or(&[])
}

/// The canonical ENUM form of a 1-based index (0 = the empty error value).
fn enum_form(ft: &FieldType, index: u64) -> String {
    if index == 0 {
        return String::new();
    }
    usize::try_from(index - 1)
        .ok()
        .and_then(|i| elems(ft).get(i))
        .cloned()
        .unwrap_or_else(|| format!("#{index}"))
}

/// The canonical SET form of a bit mask.
fn set_form(ft: &FieldType, mask: u64) -> String {
    let elems = elems(ft);
    let mut names: Vec<String> = Vec::new();
    for bit in 0..64u32 {
        if mask & (1u64 << bit) == 0 {
            continue;
        }
        match usize::try_from(bit).ok().and_then(|b| elems.get(b)) {
            Some(e) => names.push(e.clone()),
            None => names.push(format!("#{bit}")),
        }
    }
    names.join(",")
}

/// The mask of a comma-separated list of SET names (case-insensitive), if every name is known.
fn set_mask(ft: &FieldType, text: &str) -> Option<u64> {
    if text.is_empty() {
        return Some(0);
    }
    let elems = elems(ft);
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

/// A JSON value with numbers normalized: integral values within ±2^53 as integers, others as
/// doubles, so that `2`, `2.0` and `2e0` agree.
fn normalize_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                return Value::Number(n);
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                    Value::Number(serde_json::Number::from(f as i64))
                }
                _ => Value::Number(n),
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(normalize_json).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, normalize_json(v))).collect())
        }
        other => other,
    }
}

fn json_form(v: serde_json::Value) -> String {
    // Maps are sorted by key (serde_json without `preserve_order`).
    normalize_json(v).to_string()
}

fn text_form(bytes: &[u8], pad: bool, latin1: bool) -> String {
    let s = if latin1 {
        bytes.iter().map(|&b| char::from(b)).collect::<String>()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    };
    if pad {
        s.trim_end_matches(' ').to_string()
    } else {
        s
    }
}

fn binary_form(bytes: &[u8], pad: bool) -> String {
    if pad {
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        hex(bytes.get(..end).unwrap_or(bytes))
    } else {
        hex(bytes)
    }
}

/// The canonical form of an upstream datum in a column of kind `kind` and type `ft`.
pub(crate) fn datum_cell(kind: Kind, ft: &FieldType, d: &Datum) -> Cell {
    Some(match (kind, d) {
        (_, Datum::Null) => return None,
        (Kind::Float, Datum::Float32(f)) => float32_form(*f),
        (Kind::Float, Datum::Float64(f)) => float32_form(*f as f32),
        (Kind::Double, Datum::Float64(f)) => float64_form(*f),
        (Kind::Double, Datum::Float32(f)) => float64_form(f64::from(*f)),
        (Kind::Enum, Datum::Enum(i)) => enum_form(ft, *i),
        (Kind::Set, Datum::Set(m)) => set_form(ft, *m),
        (Kind::Json, Datum::Json(j)) => match j.to_serde() {
            Ok(v) => json_form(v),
            Err(e) => format!("invalid JSON: {e}"),
        },
        (Kind::Binary { pad }, Datum::Bytes(b)) => binary_form(b, pad),
        (Kind::Text { pad, latin1 }, Datum::Bytes(b)) => text_form(b, pad, latin1),
        (Kind::Decimal, Datum::Decimal(v)) => {
            let s = v.to_string();
            decimal_form(&s).unwrap_or(s)
        }
        (_, Datum::Int(i)) => i.to_string(),
        (_, Datum::Uint(u)) | (_, Datum::Bit(u)) => u.to_string(),
        (_, Datum::Float32(f)) => float32_form(*f),
        (_, Datum::Float64(f)) => float64_form(*f),
        (_, Datum::Decimal(v)) => v.to_string(),
        (_, Datum::Time(t)) => time_form(&t.to_string()),
        (_, Datum::Duration(t)) => time_form(&t.to_string()),
        (_, Datum::Enum(i)) => i.to_string(),
        (_, Datum::Set(m)) => m.to_string(),
        (_, Datum::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        (_, Datum::Json(j)) => j.to_string(),
    })
}

/// The canonical form of a downstream value (`None` = NULL) of a column of kind `kind`.
pub(crate) fn text_cell(kind: Kind, ft: &FieldType, source: Source, value: Option<&[u8]>) -> Cell {
    let bytes = value?;
    let text = || std::str::from_utf8(bytes).ok().map(str::trim);
    let out = match kind {
        Kind::Int => text()
            .and_then(|s| s.parse::<i128>().ok())
            .map(|v| v.to_string()),
        Kind::Float => text().and_then(|s| s.parse::<f32>().ok()).map(float32_form),
        Kind::Double => text().and_then(|s| s.parse::<f64>().ok()).map(float64_form),
        Kind::Decimal => text().and_then(decimal_form),
        Kind::Text { pad, latin1: _ } => Some(text_form(bytes, pad, false)),
        Kind::Binary { pad } => Some(binary_form(bytes, pad)),
        Kind::Time | Kind::Duration => text().map(time_form),
        Kind::Enum => match source {
            Source::CanalJson => text()
                .and_then(|s| s.parse::<u64>().ok())
                .map(|i| enum_form(ft, i)),
            Source::MySql | Source::Csv => Some(String::from_utf8_lossy(bytes).into_owned()),
        },
        Kind::Set => match source {
            Source::CanalJson => text()
                .and_then(|s| s.parse::<u64>().ok())
                .map(|m| set_form(ft, m)),
            Source::MySql | Source::Csv => text()
                .and_then(|s| set_mask(ft, s))
                .map(|m| set_form(ft, m)),
        },
        Kind::Bit => match source {
            Source::MySql => {
                if bytes.len() <= 8 {
                    Some(
                        bytes
                            .iter()
                            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
                            .to_string(),
                    )
                } else {
                    None
                }
            }
            Source::CanalJson | Source::Csv => text()
                .and_then(|s| s.parse::<u64>().ok())
                .map(|v| v.to_string()),
        },
        Kind::Json => serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .map(json_form),
    };
    Some(out.unwrap_or_else(|| unparsed(bytes)))
}

/// The canonical default of a column absent from a downstream row (a row written before the
/// column was added): its original default, as TiDB fills it in for old rows.
pub(crate) fn default_cell(kind: Kind, col: &ColumnInfo) -> Cell {
    match decode::origin_default_datum(col) {
        Ok(d) => datum_cell(kind, &col.field_type, &d),
        Err(_) => Some("unknown default".to_string()),
    }
}

/// A 64-bit hash of a row's canonical cells (NULL distinct from every string).
pub(crate) fn row_hash(row: &[Cell]) -> u64 {
    let mut buf: Vec<u8> = Vec::with_capacity(64);
    for cell in row {
        match cell {
            None => buf.push(0),
            Some(s) => {
                buf.push(1);
                buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
                buf.extend_from_slice(s.as_bytes());
            }
        }
    }
    xxhash_rust::xxh3::xxh3_64(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ft(tp: u8) -> FieldType {
        FieldType {
            tp,
            flen: -1,
            decimal: -1,
            ..FieldType::default()
        }
    }

    fn elems_ft(tp: u8, e: &[&str]) -> FieldType {
        FieldType {
            elems: Some(e.iter().map(|s| s.to_string()).collect()),
            ..ft(tp)
        }
    }

    fn text(kind: Kind, ft: &FieldType, source: Source, s: &str) -> Cell {
        text_cell(kind, ft, source, Some(s.as_bytes()))
    }

    #[test]
    fn floats_agree_at_their_precision() {
        let f = ft(mysql::TYPE_FLOAT);
        let up = datum_cell(Kind::Float, &f, &Datum::Float32(1.234_567_8));
        assert_eq!(up.as_deref(), Some("1.23457e0"));
        // MariaDB's six digits, TiDB's shortest form, a widened double.
        for s in ["1.23457", "1.2345678", "1.2345677614212036"] {
            assert_eq!(text(Kind::Float, &f, Source::MySql, s), up, "{s}");
        }
        assert_ne!(text(Kind::Float, &f, Source::MySql, "1.23458"), up);
        let d = ft(mysql::TYPE_DOUBLE);
        assert_eq!(
            datum_cell(Kind::Double, &d, &Datum::Float64(-1.25e10)),
            text(Kind::Double, &d, Source::MySql, "-12500000000")
        );
        assert_eq!(
            datum_cell(Kind::Double, &d, &Datum::Float64(-0.0)).as_deref(),
            Some("0")
        );
    }

    #[test]
    fn decimals_ignore_insignificant_zeros() {
        assert_eq!(decimal_form("-012.3400").as_deref(), Some("-12.34"));
        assert_eq!(decimal_form("-0.000").as_deref(), Some("0"));
        assert_eq!(decimal_form("5.").as_deref(), Some("5"));
        assert_eq!(decimal_form(".5").as_deref(), Some("0.5"));
        assert_eq!(decimal_form("1e5"), None);
        assert_eq!(decimal_form("-"), None);
        let f = ft(mysql::TYPE_NEW_DECIMAL);
        let up = datum_cell(Kind::Decimal, &f, &Datum::Decimal("-1.50".parse().unwrap()));
        assert_eq!(up.as_deref(), Some("-1.5"));
        assert_eq!(text(Kind::Decimal, &f, Source::Csv, "-1.50"), up);
    }

    #[test]
    fn enums_and_sets_by_name_from_every_source() {
        let e = elems_ft(mysql::TYPE_ENUM, &["x", "y", "z"]);
        let up = datum_cell(Kind::Enum, &e, &Datum::Enum(2));
        assert_eq!(up.as_deref(), Some("y"));
        assert_eq!(text(Kind::Enum, &e, Source::MySql, "y"), up);
        assert_eq!(text(Kind::Enum, &e, Source::Csv, "y"), up);
        assert_eq!(text(Kind::Enum, &e, Source::CanalJson, "2"), up);
        assert_eq!(
            datum_cell(Kind::Enum, &e, &Datum::Enum(0)).as_deref(),
            Some("")
        );
        let s = elems_ft(mysql::TYPE_SET, &["a", "b", "c"]);
        let up = datum_cell(Kind::Set, &s, &Datum::Set(0b101));
        assert_eq!(up.as_deref(), Some("a,c"));
        assert_eq!(text(Kind::Set, &s, Source::MySql, "c,a"), up);
        assert_eq!(text(Kind::Set, &s, Source::CanalJson, "5"), up);
        assert_eq!(
            text(Kind::Set, &s, Source::Csv, "a,q").as_deref(),
            Some("unparsed \"a,q\"")
        );
    }

    #[test]
    fn bits_times_json_and_bytes() {
        let b = ft(mysql::TYPE_BIT);
        let up = datum_cell(Kind::Bit, &b, &Datum::Bit(517));
        assert_eq!(up.as_deref(), Some("517"));
        assert_eq!(
            text_cell(Kind::Bit, &b, Source::MySql, Some(&[0x02, 0x05])),
            up
        );
        assert_eq!(text(Kind::Bit, &b, Source::CanalJson, "517"), up);
        let t = ft(mysql::TYPE_DATETIME);
        let up = datum_cell(
            Kind::Time,
            &t,
            &Datum::Time("2024-02-29 23:59:58.120".parse().unwrap()),
        );
        assert_eq!(up.as_deref(), Some("2024-02-29 23:59:58.12"));
        assert_eq!(
            text(Kind::Time, &t, Source::MySql, "2024-02-29 23:59:58.120000"),
            up
        );
        let j = ft(mysql::TYPE_JSON);
        let json: tidal_model::json::Json = r#"{"n": 2.0, "k": [1, "x", null]}"#.parse().unwrap();
        let up = datum_cell(Kind::Json, &j, &Datum::Json(json));
        assert_eq!(up.as_deref(), Some(r#"{"k":[1,"x",null],"n":2}"#));
        assert_eq!(
            text(
                Kind::Json,
                &j,
                Source::MySql,
                r#"{"k": [1, "x", null], "n": 2}"#
            ),
            up
        );
        let bin = FieldType {
            charset: "binary".into(),
            ..ft(mysql::TYPE_STRING)
        };
        let k = Kind::of(&bin);
        assert_eq!(k, Kind::Binary { pad: true });
        assert_eq!(
            datum_cell(k, &bin, &Datum::Bytes(vec![0xff, 0, 0])).as_deref(),
            Some("0xff")
        );
        let ch = FieldType {
            charset: "utf8mb4".into(),
            ..ft(mysql::TYPE_STRING)
        };
        let k = Kind::of(&ch);
        assert_eq!(
            datum_cell(k, &ch, &Datum::Bytes(b"ab  ".to_vec())).as_deref(),
            Some("ab")
        );
        assert_eq!(
            text(Kind::Int, &ft(mysql::TYPE_LONG), Source::MySql, "x"),
            Some("unparsed \"x\"".into())
        );
        assert_eq!(
            text_cell(Kind::Int, &ft(mysql::TYPE_LONG), Source::MySql, None),
            None
        );
    }

    #[test]
    fn row_hash_separates_null_from_empty_and_shifted_cells() {
        let a = row_hash(&[None, Some(String::new())]);
        let b = row_hash(&[Some(String::new()), None]);
        let c = row_hash(&[Some("ab".into()), Some("c".into())]);
        let d = row_hash(&[Some("a".into()), Some("bc".into())]);
        assert_ne!(a, b);
        assert_ne!(c, d);
        assert_eq!(c, row_hash(&[Some("ab".into()), Some("c".into())]));
    }

    /// Arbitrary downstream bytes never panic, whatever the kind and source (a fixed-seed
    /// generator stands in for proptest, which the root package does not depend on).
    #[test]
    fn downstream_text_never_panics() {
        let s = elems_ft(mysql::TYPE_SET, &["a", "b"]);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"0123456789.-+eE,ab {}[]\":\xff\x00 ";
        for n in 0..3000usize {
            let len = n % 24;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if n % 3 == 0 {
                        x as u8
                    } else {
                        alphabet[(x % alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            for kind in [
                Kind::Int,
                Kind::Float,
                Kind::Double,
                Kind::Decimal,
                Kind::Time,
                Kind::Duration,
                Kind::Enum,
                Kind::Set,
                Kind::Bit,
                Kind::Json,
                Kind::Binary { pad: true },
                Kind::Text {
                    pad: true,
                    latin1: false,
                },
            ] {
                for src in [Source::MySql, Source::CanalJson, Source::Csv] {
                    assert!(text_cell(kind, &s, src, Some(&bytes)).is_some());
                }
            }
        }
    }
}
