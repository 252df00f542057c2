//! Column types as TiDB describes them: `FieldType` constructors with TiDB's default widths,
//! charsets and flags, the MySQL text of a type and of a literal (for the DDL query text a MySQL
//! sink executes downstream), and the comparable key form of a value (for common handles and
//! index keys).
//!
//! The constructors fill `FieldType` the way TiDB's parser does for a plain column definition, so
//! that the `TableInfo` JSON written to the meta keys looks like TiDB's and decodes with the
//! model crate exactly as a real cluster's would.

use tidal_model::codec::datum::FlaggedDatum;
use tidal_model::mysql;
use tidal_model::schema::FieldType;
use tidal_model::{CodecError, Datum};

/// The charset and collation of binary (non-text) columns.
const BINARY: &str = "binary";
/// The default charset of text columns.
pub const UTF8MB4: &str = "utf8mb4";
/// The binary collation of `utf8mb4` (TiDB's default).
pub const UTF8MB4_BIN: &str = "utf8mb4_bin";
/// The case-insensitive collation of `utf8mb4`.
pub const UTF8MB4_GENERAL_CI: &str = "utf8mb4_general_ci";

fn numeric(tp: u8, flen: i64, decimal: i64) -> FieldType {
    FieldType {
        tp,
        flag: mysql::FLAG_BINARY,
        flen,
        decimal,
        charset: BINARY.into(),
        collate: BINARY.into(),
        ..FieldType::default()
    }
}

fn text(tp: u8, flen: i64, collate: &str) -> FieldType {
    FieldType {
        tp,
        flag: 0,
        flen,
        decimal: 0,
        charset: UTF8MB4.into(),
        collate: collate.into(),
        ..FieldType::default()
    }
}

/// `TINYINT`.
pub fn tinyint() -> FieldType {
    numeric(mysql::TYPE_TINY, 4, 0)
}

/// `SMALLINT`.
pub fn smallint() -> FieldType {
    numeric(mysql::TYPE_SHORT, 6, 0)
}

/// `MEDIUMINT`.
pub fn mediumint() -> FieldType {
    numeric(mysql::TYPE_INT24, 9, 0)
}

/// `INT`.
pub fn int() -> FieldType {
    numeric(mysql::TYPE_LONG, 11, 0)
}

/// `BIGINT`.
pub fn bigint() -> FieldType {
    numeric(mysql::TYPE_LONGLONG, 20, 0)
}

/// The UNSIGNED variant of an integer type.
pub fn unsigned(mut ft: FieldType) -> FieldType {
    ft.flag |= mysql::FLAG_UNSIGNED;
    if ft.tp != mysql::TYPE_LONGLONG {
        ft.flen = ft.flen.saturating_sub(1).max(1);
    }
    ft
}

/// `VARCHAR(n)` in `utf8mb4_bin`.
pub fn varchar(n: i64) -> FieldType {
    text(mysql::TYPE_VARCHAR, n, UTF8MB4_BIN)
}

/// `VARCHAR(n)` in `utf8mb4_general_ci` (its key form is a sort key, so TiDB keeps the value in
/// the row even when it is part of a clustered key).
pub fn varchar_ci(n: i64) -> FieldType {
    text(mysql::TYPE_VARCHAR, n, UTF8MB4_GENERAL_CI)
}

/// `CHAR(n)` in `utf8mb4_bin`.
pub fn char(n: i64) -> FieldType {
    text(mysql::TYPE_STRING, n, UTF8MB4_BIN)
}

/// `TEXT` in `utf8mb4_bin`.
pub fn text_type() -> FieldType {
    let mut ft = text(mysql::TYPE_BLOB, 65535, UTF8MB4_BIN);
    ft.flag |= mysql::FLAG_BLOB;
    ft
}

/// `BLOB`.
pub fn blob() -> FieldType {
    let mut ft = numeric(mysql::TYPE_BLOB, 65535, 0);
    ft.flag |= mysql::FLAG_BLOB;
    ft
}

/// `DECIMAL(precision, scale)`.
pub fn decimal(precision: u8, scale: u8) -> FieldType {
    numeric(
        mysql::TYPE_NEW_DECIMAL,
        i64::from(precision),
        i64::from(scale),
    )
}

fn with_fsp(base: i64, fsp: u8) -> i64 {
    if fsp == 0 {
        base
    } else {
        base + 1 + i64::from(fsp.min(6))
    }
}

/// `DATETIME(fsp)`.
pub fn datetime(fsp: u8) -> FieldType {
    numeric(
        mysql::TYPE_DATETIME,
        with_fsp(19, fsp),
        i64::from(fsp.min(6)),
    )
}

/// `TIMESTAMP(fsp)` (values are stored in UTC).
pub fn timestamp(fsp: u8) -> FieldType {
    numeric(
        mysql::TYPE_TIMESTAMP,
        with_fsp(19, fsp),
        i64::from(fsp.min(6)),
    )
}

/// `DATE`.
pub fn date() -> FieldType {
    numeric(mysql::TYPE_DATE, 10, 0)
}

/// `TIME(fsp)`.
pub fn time(fsp: u8) -> FieldType {
    numeric(
        mysql::TYPE_DURATION,
        with_fsp(10, fsp),
        i64::from(fsp.min(6)),
    )
}

/// `DOUBLE`.
pub fn double() -> FieldType {
    numeric(mysql::TYPE_DOUBLE, 22, -1)
}

/// `FLOAT`.
pub fn float() -> FieldType {
    numeric(mysql::TYPE_FLOAT, 12, -1)
}

/// `BIT(n)`.
pub fn bit(n: u8) -> FieldType {
    let mut ft = numeric(mysql::TYPE_BIT, i64::from(n.clamp(1, 64)), 0);
    ft.flag |= mysql::FLAG_UNSIGNED;
    ft
}

/// `YEAR`.
pub fn year() -> FieldType {
    let mut ft = numeric(mysql::TYPE_YEAR, 4, 0);
    ft.flag |= mysql::FLAG_UNSIGNED | mysql::FLAG_ZEROFILL;
    ft
}

/// `JSON`.
pub fn json() -> FieldType {
    numeric(mysql::TYPE_JSON, -1, 0)
}

fn elems_type(tp: u8, elems: &[&str]) -> FieldType {
    let mut ft = text(tp, 0, UTF8MB4_BIN);
    let longest = elems.iter().map(|e| e.chars().count()).max().unwrap_or(0);
    ft.flen = i64::try_from(if tp == mysql::TYPE_SET {
        elems
            .iter()
            .map(|e| e.chars().count() + 1)
            .sum::<usize>()
            .saturating_sub(1)
    } else {
        longest
    })
    .unwrap_or(i64::MAX);
    ft.elems = Some(elems.iter().map(|e| (*e).to_owned()).collect());
    ft.elems_is_binary_lit = Some(vec![false; elems.len()]);
    ft
}

/// `ENUM('a', 'b', …)`.
pub fn enum_of(elems: &[&str]) -> FieldType {
    elems_type(mysql::TYPE_ENUM, elems)
}

/// `SET('a', 'b', …)`.
pub fn set_of(elems: &[&str]) -> FieldType {
    elems_type(mysql::TYPE_SET, elems)
}

/// True for the types MySQL cannot index without a prefix length, nor give a literal default.
pub fn is_lob(ft: &FieldType) -> bool {
    matches!(
        ft.tp,
        mysql::TYPE_BLOB
            | mysql::TYPE_TINY_BLOB
            | mysql::TYPE_MEDIUM_BLOB
            | mysql::TYPE_LONG_BLOB
            | mysql::TYPE_JSON
            | mysql::TYPE_GEOMETRY
    )
}

fn is_binary_string(ft: &FieldType) -> bool {
    ft.charset == BINARY || ft.collate == BINARY
}

/// Quotes a MySQL string literal (single quotes, backslash and quote escaped).
pub fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quotes an identifier with backquotes (doubling backquotes inside).
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// The MySQL text of a column type, e.g. `INT UNSIGNED`, `VARCHAR(64) CHARACTER SET utf8mb4
/// COLLATE utf8mb4_bin`, `DECIMAL(10,2)`, `DATETIME(3)`, `ENUM('a','b')`.
pub fn sql_type(ft: &FieldType) -> String {
    let fsp = |base: &str| {
        if ft.decimal > 0 {
            format!("{base}({})", ft.decimal)
        } else {
            base.to_owned()
        }
    };
    let elems = || {
        ft.elems
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|e| quote_str(e))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut s = match ft.tp {
        mysql::TYPE_TINY => "TINYINT".to_owned(),
        mysql::TYPE_SHORT => "SMALLINT".to_owned(),
        mysql::TYPE_INT24 => "MEDIUMINT".to_owned(),
        mysql::TYPE_LONG => "INT".to_owned(),
        mysql::TYPE_LONGLONG => "BIGINT".to_owned(),
        mysql::TYPE_FLOAT => "FLOAT".to_owned(),
        mysql::TYPE_DOUBLE => "DOUBLE".to_owned(),
        mysql::TYPE_NEW_DECIMAL | mysql::TYPE_DECIMAL => {
            format!("DECIMAL({},{})", ft.flen.max(1), ft.decimal.max(0))
        }
        mysql::TYPE_DATETIME => fsp("DATETIME"),
        mysql::TYPE_TIMESTAMP => fsp("TIMESTAMP"),
        mysql::TYPE_DURATION => fsp("TIME"),
        mysql::TYPE_DATE | mysql::TYPE_NEW_DATE => "DATE".to_owned(),
        mysql::TYPE_YEAR => "YEAR".to_owned(),
        mysql::TYPE_BIT => format!("BIT({})", ft.flen.clamp(1, 64)),
        mysql::TYPE_JSON => "JSON".to_owned(),
        mysql::TYPE_ENUM => format!("ENUM({})", elems()),
        mysql::TYPE_SET => format!("SET({})", elems()),
        mysql::TYPE_VARCHAR | mysql::TYPE_VAR_STRING if is_binary_string(ft) => {
            format!("VARBINARY({})", ft.flen.max(0))
        }
        mysql::TYPE_VARCHAR | mysql::TYPE_VAR_STRING => format!("VARCHAR({})", ft.flen.max(0)),
        mysql::TYPE_STRING if is_binary_string(ft) => format!("BINARY({})", ft.flen.max(0)),
        mysql::TYPE_STRING => format!("CHAR({})", ft.flen.max(0)),
        mysql::TYPE_TINY_BLOB => lob_name(ft, "TINY"),
        mysql::TYPE_BLOB => lob_name(ft, ""),
        mysql::TYPE_MEDIUM_BLOB => lob_name(ft, "MEDIUM"),
        mysql::TYPE_LONG_BLOB => lob_name(ft, "LONG"),
        other => format!("/* type {other} */ BLOB"),
    };
    if mysql::is_integer_type(ft.tp) && ft.is_unsigned() && ft.tp != mysql::TYPE_YEAR {
        s.push_str(" UNSIGNED");
    }
    if (mysql::is_string_type(ft.tp) || matches!(ft.tp, mysql::TYPE_ENUM | mysql::TYPE_SET))
        && !is_binary_string(ft)
        && !ft.charset.is_empty()
    {
        s.push_str(&format!(
            " CHARACTER SET {} COLLATE {}",
            ft.charset, ft.collate
        ));
    }
    s
}

fn lob_name(ft: &FieldType, size: &str) -> String {
    if is_binary_string(ft) {
        format!("{size}BLOB")
    } else {
        format!("{size}TEXT")
    }
}

fn invalid(detail: impl Into<String>) -> CodecError {
    CodecError::invalid("sim value", detail)
}

/// The text of a value as TiDB stores it in `ColumnInfo.default` / `origin_default` (and as it
/// appears inside a SQL literal): numbers in decimal, strings as they are, times as
/// `YYYY-MM-DD hh:mm:ss[.f]`, ENUM/SET by element names. NULL gives `None`.
pub fn value_text(d: &Datum, ft: &FieldType) -> Result<Option<String>, CodecError> {
    let elems = ft.elems.as_deref().unwrap_or_default();
    Ok(Some(match d {
        Datum::Null => return Ok(None),
        Datum::Int(v) => v.to_string(),
        Datum::Uint(v) | Datum::Bit(v) => v.to_string(),
        Datum::Float32(v) => v.to_string(),
        Datum::Float64(v) => v.to_string(),
        Datum::Bytes(b) => String::from_utf8(b.clone())
            .map_err(|_| invalid("binary string values have no text form"))?,
        Datum::Decimal(v) => v.to_string(),
        Datum::Time(t) => t.to_string(),
        Datum::Duration(v) => v.to_string(),
        Datum::Enum(i) => match usize::try_from(*i).ok().and_then(|i| i.checked_sub(1)) {
            Some(i) => elems
                .get(i)
                .cloned()
                .ok_or_else(|| invalid(format!("enum index {}", i + 1)))?,
            None => String::new(),
        },
        Datum::Set(mask) => elems
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                u32::try_from(*i)
                    .ok()
                    .and_then(|i| 1u64.checked_shl(i))
                    .is_some_and(|b| mask & b != 0)
            })
            .map(|(_, e)| e.as_str())
            .collect::<Vec<_>>()
            .join(","),
        Datum::Json(j) => j.to_text()?,
    }))
}

/// The SQL literal of a value for a `DEFAULT` clause: `NULL`, a bare number, or a quoted string.
pub fn sql_literal(d: &Datum, ft: &FieldType) -> Result<String, CodecError> {
    Ok(match (d, value_text(d, ft)?) {
        (_, None) => "NULL".to_owned(),
        (
            Datum::Int(_)
            | Datum::Uint(_)
            | Datum::Float32(_)
            | Datum::Float64(_)
            | Datum::Decimal(_),
            Some(t),
        ) => t,
        (Datum::Bit(v), _) => format!("b'{v:b}'"),
        (_, Some(t)) => quote_str(&t),
    })
}

/// A stand-in for the `utf8mb4_general_ci` sort key: each character upper-cased and written as
/// a big-endian UTF-16 unit (characters outside the BMP weigh 0xFFFD), trailing spaces removed
/// (PAD SPACE). Equal strings under the collation get equal keys, which is all a key needs.
fn general_ci_key(b: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(b);
    let trimmed = s.trim_end_matches(' ');
    let mut out = Vec::with_capacity(trimmed.len() * 2);
    for c in trimmed.chars() {
        let up = c.to_uppercase().next().unwrap_or(c);
        let w = u16::try_from(u32::from(up)).unwrap_or(0xFFFD);
        out.extend_from_slice(&w.to_be_bytes());
    }
    out
}

/// The comparable datum of a value in a key (common handle or index), as TiDB flattens it:
/// integers as int/uint, strings as their bytes (or the collation's sort key), times as packed
/// uints, durations as nanoseconds, ENUM/SET/BIT as uints.
pub fn key_datum(d: &Datum, ft: &FieldType) -> Result<FlaggedDatum, CodecError> {
    Ok(match d {
        Datum::Null => FlaggedDatum::Nil,
        Datum::Int(v) => FlaggedDatum::Int(*v),
        Datum::Uint(v) => FlaggedDatum::Uint(*v),
        Datum::Float32(v) => FlaggedDatum::Float(f64::from(*v)),
        Datum::Float64(v) => FlaggedDatum::Float(*v),
        Datum::Bytes(b) => {
            if tidal_model::decode::need_restored_data(ft)
                && ft.collate.eq_ignore_ascii_case(UTF8MB4_GENERAL_CI)
            {
                FlaggedDatum::Bytes(general_ci_key(b))
            } else {
                FlaggedDatum::Bytes(b.clone())
            }
        }
        Datum::Decimal(v) => {
            let (p, f) = match (u8::try_from(ft.flen), u8::try_from(ft.decimal)) {
                (Ok(p), Ok(f)) if tidal_model::decimal::decimal_bin_size(p, f).is_ok() => (p, f),
                _ => v.precision_and_frac(),
            };
            FlaggedDatum::Decimal {
                precision: p,
                frac: f,
                bin: v.round(f).to_bin(p, f)?,
            }
        }
        Datum::Time(t) => FlaggedDatum::Uint(t.to_packed()),
        Datum::Duration(v) => FlaggedDatum::Duration(v.nanos),
        Datum::Enum(v) | Datum::Set(v) | Datum::Bit(v) => FlaggedDatum::Uint(*v),
        Datum::Json(_) => return Err(invalid("JSON values cannot be part of a key")),
    })
}

/// Appends the comparable encoding of `datums` (the key bytes of a common handle or an index).
pub fn encode_key_datums(buf: &mut Vec<u8>, datums: &[FlaggedDatum]) {
    for d in datums {
        tidal_model::codec::datum::encode_key_flagged(buf, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_model::time::{Time, TimeKind};

    #[test]
    fn sql_type_text() {
        assert_eq!(sql_type(&int()), "INT");
        assert_eq!(sql_type(&unsigned(bigint())), "BIGINT UNSIGNED");
        assert_eq!(
            sql_type(&varchar(64)),
            "VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        );
        assert_eq!(sql_type(&decimal(10, 2)), "DECIMAL(10,2)");
        assert_eq!(sql_type(&datetime(3)), "DATETIME(3)");
        assert_eq!(sql_type(&datetime(0)), "DATETIME");
        assert_eq!(sql_type(&time(6)), "TIME(6)");
        assert_eq!(sql_type(&blob()), "BLOB");
        assert_eq!(
            sql_type(&text_type()),
            "TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        );
        assert_eq!(sql_type(&bit(8)), "BIT(8)");
        assert_eq!(sql_type(&year()), "YEAR");
        assert_eq!(
            sql_type(&enum_of(&["a", "b'c"])),
            "ENUM('a','b''c') CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        );
    }

    #[test]
    fn literals() {
        assert_eq!(sql_literal(&Datum::Int(-5), &int()).unwrap(), "-5");
        assert_eq!(sql_literal(&Datum::Null, &int()).unwrap(), "NULL");
        assert_eq!(
            sql_literal(&Datum::Bytes(b"it's".to_vec()), &varchar(9)).unwrap(),
            "'it''s'"
        );
        let t = Time {
            year: 2024,
            month: 2,
            day: 29,
            hour: 1,
            minute: 2,
            second: 3,
            microsecond: 0,
            kind: TimeKind::Datetime,
            fsp: 0,
        };
        assert_eq!(
            sql_literal(&Datum::Time(t), &datetime(0)).unwrap(),
            "'2024-02-29 01:02:03'"
        );
        let e = enum_of(&["x", "y"]);
        assert_eq!(
            value_text(&Datum::Enum(2), &e).unwrap().as_deref(),
            Some("y")
        );
        let s = set_of(&["x", "y", "z"]);
        assert_eq!(
            value_text(&Datum::Set(0b101), &s).unwrap().as_deref(),
            Some("x,z")
        );
    }

    #[test]
    fn key_datums() {
        assert_eq!(
            key_datum(&Datum::Int(3), &int()).unwrap(),
            FlaggedDatum::Int(3)
        );
        assert_eq!(
            key_datum(&Datum::Bytes(b"ab ".to_vec()), &varchar_ci(5)).unwrap(),
            FlaggedDatum::Bytes(vec![0, b'A', 0, b'B'])
        );
        assert_eq!(
            key_datum(&Datum::Bytes(b"ab".to_vec()), &varchar(5)).unwrap(),
            FlaggedDatum::Bytes(b"ab".to_vec())
        );
        assert!(key_datum(&Datum::Json("1".parse().unwrap()), &json()).is_err());
    }
}
