//! Shared rendering rules: MySQL type names, `java.sql.Types` codes, Go-compatible number and
//! string formatting, and the small byte codecs (base64, hex, ISO-8859-1, CRC-32) the formats use.
//!
//! TiCDC is written in Go, and consumers of its files compare strings, so every rule here follows
//! what Go's standard library prints (for example a csv float is Go's `%v`, which switches to
//! exponent form from 1e+06 on, while a canal-json float never does). The functions are pure and
//! never panic.

use tidal_model::Datum;
use tidal_model::mysql;
use tidal_model::schema::{ColumnInfo, FieldType};

use crate::encode::encode_error;
use crate::sink::SinkError;

/// `java.sql.Types` codes TiCDC's canal-json writes in `sqlType`.
pub mod java {
    /// `BIT`.
    pub const BIT: i32 = -7;
    /// `TINYINT`.
    pub const TINYINT: i32 = -6;
    /// `SMALLINT`.
    pub const SMALLINT: i32 = 5;
    /// `INTEGER`.
    pub const INTEGER: i32 = 4;
    /// `BIGINT`.
    pub const BIGINT: i32 = -5;
    /// `REAL`.
    pub const REAL: i32 = 7;
    /// `DOUBLE`.
    pub const DOUBLE: i32 = 8;
    /// `DECIMAL`.
    pub const DECIMAL: i32 = 3;
    /// `CHAR`.
    pub const CHAR: i32 = 1;
    /// `VARCHAR`.
    pub const VARCHAR: i32 = 12;
    /// `DATE`.
    pub const DATE: i32 = 91;
    /// `TIME`.
    pub const TIME: i32 = 92;
    /// `TIMESTAMP`.
    pub const TIMESTAMP: i32 = 93;
    /// `BINARY`.
    pub const BINARY: i32 = -2;
    /// `BLOB`.
    pub const BLOB: i32 = 2004;
    /// `CLOB`.
    pub const CLOB: i32 = 2005;
    /// `NULL`.
    pub const NULL: i32 = 0;
}

/// True for a column whose bytes are binary (BINARY, VARBINARY, BLOB): the binary flag or the
/// `binary` character set. Such values are rendered as ISO-8859-1 (canal-json) or base64/hex
/// (csv) rather than as text.
pub fn is_binary(ft: &FieldType) -> bool {
    ft.flag & mysql::FLAG_BINARY != 0 || ft.charset.eq_ignore_ascii_case("binary")
}

/// True for the string and blob types whose value is `Datum::Bytes`.
pub fn is_string_type(tp: u8) -> bool {
    matches!(
        tp,
        mysql::TYPE_VARCHAR
            | mysql::TYPE_VAR_STRING
            | mysql::TYPE_STRING
            | mysql::TYPE_TINY_BLOB
            | mysql::TYPE_MEDIUM_BLOB
            | mysql::TYPE_LONG_BLOB
            | mysql::TYPE_BLOB
    )
}

/// True for VIRTUAL generated columns, which TiCDC leaves out of canal-json and csv rows.
pub fn is_skipped_column(col: &ColumnInfo) -> bool {
    col.is_generated_virtual()
}

/// TiDB's `types.TypeStr`: the lower-case name of a type code.
pub fn type_str(tp: u8) -> &'static str {
    match tp {
        mysql::TYPE_DECIMAL | mysql::TYPE_NEW_DECIMAL => "decimal",
        mysql::TYPE_TINY => "tinyint",
        mysql::TYPE_SHORT => "smallint",
        mysql::TYPE_LONG => "int",
        mysql::TYPE_FLOAT => "float",
        mysql::TYPE_DOUBLE => "double",
        mysql::TYPE_NULL => "null",
        mysql::TYPE_TIMESTAMP => "timestamp",
        mysql::TYPE_LONGLONG => "bigint",
        mysql::TYPE_INT24 => "mediumint",
        mysql::TYPE_DATE | mysql::TYPE_NEW_DATE => "date",
        mysql::TYPE_DURATION => "time",
        mysql::TYPE_DATETIME => "datetime",
        mysql::TYPE_YEAR => "year",
        mysql::TYPE_VARCHAR => "varchar",
        mysql::TYPE_BIT => "bit",
        mysql::TYPE_VECTOR_FLOAT32 => "vector",
        mysql::TYPE_JSON => "json",
        mysql::TYPE_ENUM => "enum",
        mysql::TYPE_SET => "set",
        mysql::TYPE_TINY_BLOB => "tinytext",
        mysql::TYPE_MEDIUM_BLOB => "mediumtext",
        mysql::TYPE_LONG_BLOB => "longtext",
        mysql::TYPE_BLOB => "text",
        mysql::TYPE_VAR_STRING => "var_string",
        mysql::TYPE_STRING => "char",
        mysql::TYPE_GEOMETRY => "geometry",
        _ => "unspecified",
    }
}

/// TiDB's `types.TypeToStr(tp, charset)`: text types become blob types and char types binary
/// types under the `binary` character set.
pub fn type_to_str(ft: &FieldType) -> String {
    let ts = type_str(ft.tp);
    if !ft.charset.eq_ignore_ascii_case("binary") {
        return ts.to_string();
    }
    match ft.tp {
        mysql::TYPE_TINY_BLOB
        | mysql::TYPE_MEDIUM_BLOB
        | mysql::TYPE_LONG_BLOB
        | mysql::TYPE_BLOB => ts.replacen("text", "blob", 1),
        mysql::TYPE_STRING | mysql::TYPE_VARCHAR => ts.replacen("char", "binary", 1),
        mysql::TYPE_NULL => "binary".to_string(),
        _ => ts.to_string(),
    }
}

fn with_unsigned_zerofill(mut s: String, ft: &FieldType) -> String {
    if ft.flag & mysql::FLAG_UNSIGNED != 0 && s != "bit" && s != "year" {
        s.push_str(" unsigned");
    }
    if ft.flag & mysql::FLAG_ZEROFILL != 0 && !s.starts_with("year") {
        s.push_str(" zerofill");
    }
    s
}

/// The canal-json `mysqlType` of a column as TiCDC writes it by default: the short type name
/// (`int`, `varchar`, `decimal`, `blob`, …) plus ` unsigned` / ` zerofill`.
pub fn mysql_type_short(ft: &FieldType) -> String {
    with_unsigned_zerofill(type_to_str(ft), ft)
}

/// The column type with its length (`int(11)`, `decimal(10,2)`, `varchar(255)`,
/// `enum('a','b')`), which TiCDC writes in `mysqlType` with `content-compatible=true`.
///
/// An approximation of TiDB's `FieldType.CompactStr` covering the common types.
pub fn mysql_type_full(ft: &FieldType) -> String {
    let base = type_to_str(ft);
    let mut s = match ft.tp {
        mysql::TYPE_ENUM | mysql::TYPE_SET => {
            let elems: Vec<String> = ft
                .elems
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .map(|e| format!("'{}'", e.replace('\'', "''")))
                .collect();
            format!("{base}({})", elems.join(","))
        }
        mysql::TYPE_NEW_DECIMAL | mysql::TYPE_DECIMAL => {
            let (flen, dec) = (display_flen(ft), display_decimal(ft));
            format!("{base}({flen},{dec})")
        }
        mysql::TYPE_FLOAT | mysql::TYPE_DOUBLE => {
            if ft.flen > 0 && ft.decimal > 0 {
                format!("{base}({},{})", ft.flen, ft.decimal)
            } else {
                base
            }
        }
        mysql::TYPE_DATETIME | mysql::TYPE_TIMESTAMP | mysql::TYPE_DURATION => {
            if ft.decimal > 0 {
                format!("{base}({})", ft.decimal)
            } else {
                base
            }
        }
        mysql::TYPE_TINY
        | mysql::TYPE_SHORT
        | mysql::TYPE_INT24
        | mysql::TYPE_LONG
        | mysql::TYPE_LONGLONG
        | mysql::TYPE_BIT
        | mysql::TYPE_YEAR
        | mysql::TYPE_VARCHAR
        | mysql::TYPE_STRING
        | mysql::TYPE_VAR_STRING => {
            if ft.flen > 0 {
                format!("{base}({})", ft.flen)
            } else {
                base
            }
        }
        _ => base,
    };
    s = with_unsigned_zerofill(s, ft);
    s
}

/// TiDB's default display length and decimal per type (`mysql.GetDefaultFieldLengthAndDecimal`),
/// used when a column's own is unspecified (−1).
pub fn default_flen_decimal(tp: u8) -> (i64, i64) {
    match tp {
        mysql::TYPE_BIT => (1, 0),
        mysql::TYPE_TINY => (4, 0),
        mysql::TYPE_SHORT => (6, 0),
        mysql::TYPE_INT24 => (9, 0),
        mysql::TYPE_LONG => (11, 0),
        mysql::TYPE_LONGLONG => (20, 0),
        mysql::TYPE_DOUBLE => (22, -1),
        mysql::TYPE_FLOAT => (12, -1),
        mysql::TYPE_NEW_DECIMAL => (10, 0),
        mysql::TYPE_DURATION => (10, 0),
        mysql::TYPE_DATE => (10, 0),
        mysql::TYPE_TIMESTAMP | mysql::TYPE_DATETIME => (19, 0),
        mysql::TYPE_YEAR => (4, 0),
        mysql::TYPE_STRING => (1, 0),
        mysql::TYPE_VARCHAR | mysql::TYPE_VAR_STRING => (5, 0),
        mysql::TYPE_TINY_BLOB => (255, 0),
        mysql::TYPE_BLOB => (65535, 0),
        mysql::TYPE_MEDIUM_BLOB => (16_777_215, 0),
        mysql::TYPE_LONG_BLOB | mysql::TYPE_JSON => (4_294_967_295, 0),
        mysql::TYPE_NULL => (0, 0),
        mysql::TYPE_SET | mysql::TYPE_ENUM => (-1, 0),
        _ => (-1, -1),
    }
}

/// The column's display length, its type's default when unspecified.
pub fn display_flen(ft: &FieldType) -> i64 {
    if ft.flen == -1 {
        default_flen_decimal(ft.tp).0
    } else {
        ft.flen
    }
}

/// The column's display decimal, its type's default when unspecified.
pub fn display_decimal(ft: &FieldType) -> i64 {
    if ft.decimal == -1 {
        default_flen_decimal(ft.tp).1
    } else {
        ft.decimal
    }
}

/// The canal-json `sqlType` of a value: TiCDC's MySQL → `java.sql.Types` map, with canal's
/// promotion of unsigned integers that overflow the signed Java type.
pub fn java_sql_type(ft: &FieldType, value: &Datum) -> i32 {
    let binary = is_binary(ft);
    let base = match ft.tp {
        mysql::TYPE_BIT => java::BIT,
        mysql::TYPE_TINY_BLOB
        | mysql::TYPE_MEDIUM_BLOB
        | mysql::TYPE_LONG_BLOB
        | mysql::TYPE_BLOB => {
            if binary {
                java::BLOB
            } else {
                java::CLOB
            }
        }
        mysql::TYPE_VARCHAR | mysql::TYPE_VAR_STRING => {
            if binary {
                java::BLOB
            } else {
                java::VARCHAR
            }
        }
        mysql::TYPE_STRING => {
            if binary {
                java::BLOB
            } else {
                java::CHAR
            }
        }
        mysql::TYPE_ENUM => java::INTEGER,
        mysql::TYPE_SET => java::BIT,
        mysql::TYPE_DATE | mysql::TYPE_NEW_DATE => java::DATE,
        mysql::TYPE_DATETIME | mysql::TYPE_TIMESTAMP => java::TIMESTAMP,
        mysql::TYPE_DURATION => java::TIME,
        mysql::TYPE_JSON => java::VARCHAR,
        mysql::TYPE_NEW_DECIMAL => java::DECIMAL,
        mysql::TYPE_INT24 => java::INTEGER,
        mysql::TYPE_TINY => java::TINYINT,
        mysql::TYPE_SHORT => java::SMALLINT,
        mysql::TYPE_LONG => java::INTEGER,
        mysql::TYPE_LONGLONG => java::BIGINT,
        mysql::TYPE_FLOAT => java::REAL,
        mysql::TYPE_DOUBLE => java::DOUBLE,
        mysql::TYPE_NULL => java::NULL,
        mysql::TYPE_GEOMETRY => java::BINARY,
        _ => java::VARCHAR,
    };
    if ft.flag & mysql::FLAG_UNSIGNED == 0 {
        return base;
    }
    let n = match value {
        Datum::Uint(u) => *u,
        Datum::Int(i) => *i as u64,
        _ => return base,
    };
    match ft.tp {
        mysql::TYPE_TINY if n > i8::MAX as u64 => java::SMALLINT,
        mysql::TYPE_SHORT if n > i16::MAX as u64 => java::INTEGER,
        mysql::TYPE_LONG if n > i32::MAX as u64 => java::BIGINT,
        mysql::TYPE_LONGLONG if n > i64::MAX as u64 => java::DECIMAL,
        _ => base,
    }
}

/// The ENUM element a 1-based index names; index 0 is MySQL's empty "error" value and renders
/// as the empty string.
pub fn enum_name(ft: &FieldType, index: u64) -> Result<String, SinkError> {
    if index == 0 {
        return Ok(String::new());
    }
    let elems = ft.elems.as_deref().unwrap_or(&[]);
    usize::try_from(index - 1)
        .ok()
        .and_then(|i| elems.get(i))
        .cloned()
        .ok_or_else(|| {
            encode_error(
                "enum value",
                format!("index {index} is outside the {} elements", elems.len()),
            )
        })
}

/// The comma-separated SET elements a bit mask names.
pub fn set_names(ft: &FieldType, mask: u64) -> Result<String, SinkError> {
    let elems = ft.elems.as_deref().unwrap_or(&[]);
    let mut names: Vec<&str> = Vec::new();
    for bit in 0..64u32 {
        if mask & (1u64 << bit) == 0 {
            continue;
        }
        match elems.get(bit as usize) {
            Some(e) => names.push(e),
            None => {
                return Err(encode_error(
                    "set value",
                    format!(
                        "bit {bit} of {mask:#x} is outside the {} elements",
                        elems.len()
                    ),
                ));
            }
        }
    }
    Ok(names.join(","))
}

/// Decodes bytes as ISO-8859-1: every byte becomes the code point of the same value. This is
/// how TiCDC's canal-json carries binary column values inside JSON strings.
pub fn latin1_to_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Encodes a string back to ISO-8859-1 bytes; `None` if a character is above U+00FF.
pub fn string_to_latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

fn go_special_float(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("+Inf")
    } else if v == f64::NEG_INFINITY {
        Some("-Inf")
    } else {
        None
    }
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`: the shortest digits that read back as `v`, never
/// in exponent form. Canal-json renders DOUBLE this way.
pub fn go_float64_f(v: f64) -> String {
    match go_special_float(v) {
        Some(s) => s.to_string(),
        None => format!("{v}"),
    }
}

/// Go's `strconv.FormatFloat(float64(v), 'f', -1, 32)`. Canal-json renders FLOAT this way.
pub fn go_float32_f(v: f32) -> String {
    match go_special_float(f64::from(v)) {
        Some(s) => s.to_string(),
        None => format!("{v}"),
    }
}

/// Go's `%v` of a float64 (`'g'` with the shortest digits): exponent form when the decimal
/// exponent is below −4 or at least 6 (`1e+06`, `1.5e-05`). Csv renders DOUBLE this way.
pub fn go_float64_v(v: f64) -> String {
    match go_special_float(v) {
        Some(s) => s.to_string(),
        None => go_g_shortest(&format!("{v:e}"), &format!("{v}")),
    }
}

/// Go's `%v` of a float32. Csv renders FLOAT this way.
pub fn go_float32_v(v: f32) -> String {
    match go_special_float(f64::from(v)) {
        Some(s) => s.to_string(),
        None => go_g_shortest(&format!("{v:e}"), &format!("{v}")),
    }
}

/// Applies Go's `'g'` layout to Rust's shortest digits: `sci` is Rust's `{:e}` form
/// (`-1.2345e6`), `plain` its `{}` form.
fn go_g_shortest(sci: &str, plain: &str) -> String {
    let (neg, body) = match sci.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, sci),
    };
    let Some((mantissa, exp)) = body.split_once('e') else {
        return plain.to_string();
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return plain.to_string();
    };
    if !(-4..6).contains(&exp) {
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        let mut out = String::with_capacity(digits.len() + 8);
        if neg {
            out.push('-');
        }
        let mut chars = digits.chars();
        out.push(chars.next().unwrap_or('0'));
        let rest: String = chars.collect();
        if !rest.is_empty() {
            out.push('.');
            out.push_str(&rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let abs = exp.unsigned_abs();
        if abs < 10 {
            out.push('0');
        }
        out.push_str(&abs.to_string());
        out
    } else {
        plain.to_string()
    }
}

/// Appends `s` as a JSON string literal the way Go's JSON writers do: `"` and `\` escaped,
/// `\n` `\r` `\t` short, other control characters as `\u00XX`, and `<` `>` `&` U+2028 U+2029 as
/// `\uXXXX` (Go's HTML-safe default).
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Hot path of the canal-json encoder: copy runs of bytes that need no escape in one go and
    // only stop at the few that do. Working on bytes is safe for UTF-8 because every byte we
    // escape is ASCII, except U+2028/U+2029, which are matched as their whole 3-byte sequence.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            b'<' => Some(b"\\u003c"),
            b'>' => Some(b"\\u003e"),
            b'&' => Some(b"\\u0026"),
            0xE2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA8) => {
                Some(b"\\u2028")
            }
            0xE2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA9) => {
                Some(b"\\u2029")
            }
            _ => None,
        };
        if let Some(esc) = escape {
            out.extend_from_slice(&bytes[run_start..i]);
            out.extend_from_slice(esc);
            i += if b == 0xE2 { 3 } else { 1 };
            run_start = i;
        } else if b < 0x20 {
            out.extend_from_slice(&bytes[run_start..i]);
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xF)]);
            i += 1;
            run_start = i;
        } else {
            i += 1;
        }
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

/// Rewrites the characters Go's `encoding/json` escapes by default but `serde_json` does not
/// (`<`, `>`, `&`, U+2028, U+2029) into `\uXXXX` escapes. Safe on a whole JSON document: those
/// characters can only occur inside string literals.
pub fn go_html_escape_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (Go's `base64.StdEncoding`).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let idx = |shift: u32| char::from(B64[((n >> shift) & 63) as usize]);
        out.push(idx(18));
        out.push(idx(12));
        out.push(if chunk.len() > 1 { idx(6) } else { '=' });
        out.push(if chunk.len() > 2 { idx(0) } else { '=' });
    }
    out
}

/// Decodes standard padded base64; `None` for anything else.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i + 1 == chunks;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for (j, &c) in chunk.iter().enumerate() {
            let v = if j >= 4 - pad { 0 } else { val(c)? };
            n = (n << 6) | v;
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

/// Lower-case hex (Go's `hex.EncodeToString`).
pub fn hex_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// Decodes hex (either case); `None` for odd lengths or other characters.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    bytes
        .chunks(2)
        .map(|p| Some((nibble(*p.first()?)? << 4) | nibble(*p.get(1)?)?))
        .collect()
}

/// CRC-32 (IEEE 802.3, the polynomial of Go's `crc32.ChecksumIEEE`), bitwise: schema files are
/// small and rare, so a table buys nothing.
pub fn crc32_ieee(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ft(tp: u8, flag: u32, charset: &str) -> FieldType {
        FieldType {
            tp,
            flag,
            flen: -1,
            decimal: -1,
            charset: charset.to_string(),
            ..FieldType::default()
        }
    }

    #[test]
    fn go_float_forms() {
        assert_eq!(go_float64_v(1e6), "1e+06");
        assert_eq!(go_float64_v(999999.0), "999999");
        assert_eq!(go_float64_v(1234567.0), "1.234567e+06");
        assert_eq!(go_float64_v(0.0001), "0.0001");
        assert_eq!(go_float64_v(0.00001), "1e-05");
        assert_eq!(go_float64_v(-2.5e-7), "-2.5e-07");
        assert_eq!(go_float64_v(3.25), "3.25");
        assert_eq!(go_float64_v(1e100), "1e+100");
        assert_eq!(go_float64_v(0.0), "0");
        assert_eq!(go_float32_v(0.1), "0.1");
        assert_eq!(go_float64_f(1e21), "1000000000000000000000");
        assert_eq!(go_float64_f(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(go_float32_f(0.1), "0.1");
        assert_eq!(go_float64_f(f64::NAN), "NaN");
        assert_eq!(go_float64_v(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn type_names_follow_tidb() {
        assert_eq!(mysql_type_short(&ft(mysql::TYPE_LONG, 0, "")), "int");
        assert_eq!(
            mysql_type_short(&ft(mysql::TYPE_LONG, mysql::FLAG_UNSIGNED, "")),
            "int unsigned"
        );
        assert_eq!(
            mysql_type_short(&ft(mysql::TYPE_BLOB, 0, "utf8mb4")),
            "text"
        );
        assert_eq!(mysql_type_short(&ft(mysql::TYPE_BLOB, 0, "binary")), "blob");
        assert_eq!(
            mysql_type_short(&ft(mysql::TYPE_VARCHAR, 0, "binary")),
            "varbinary"
        );
        assert_eq!(
            mysql_type_short(&ft(mysql::TYPE_STRING, 0, "binary")),
            "binary"
        );
        assert_eq!(
            mysql_type_short(&ft(mysql::TYPE_YEAR, mysql::FLAG_UNSIGNED, "")),
            "year"
        );
        let mut dec = ft(mysql::TYPE_NEW_DECIMAL, 0, "");
        dec.flen = 10;
        dec.decimal = 2;
        assert_eq!(mysql_type_short(&dec), "decimal");
        assert_eq!(mysql_type_full(&dec), "decimal(10,2)");
        let mut en = ft(mysql::TYPE_ENUM, 0, "utf8mb4");
        en.elems = Some(vec!["a".into(), "b'c".into()]);
        assert_eq!(mysql_type_full(&en), "enum('a','b''c')");
    }

    #[test]
    fn java_types_promote_unsigned() {
        let t = ft(mysql::TYPE_TINY, mysql::FLAG_UNSIGNED, "");
        assert_eq!(java_sql_type(&t, &Datum::Uint(127)), java::TINYINT);
        assert_eq!(java_sql_type(&t, &Datum::Uint(128)), java::SMALLINT);
        let b = ft(mysql::TYPE_LONGLONG, mysql::FLAG_UNSIGNED, "");
        assert_eq!(java_sql_type(&b, &Datum::Uint(u64::MAX)), java::DECIMAL);
        assert_eq!(java_sql_type(&b, &Datum::Null), java::BIGINT);
        assert_eq!(
            java_sql_type(
                &ft(mysql::TYPE_BLOB, mysql::FLAG_BINARY, "binary"),
                &Datum::Null
            ),
            java::BLOB
        );
        assert_eq!(
            java_sql_type(&ft(mysql::TYPE_BLOB, 0, "utf8mb4"), &Datum::Null),
            java::CLOB
        );
        assert_eq!(
            java_sql_type(&ft(mysql::TYPE_ENUM, 0, ""), &Datum::Enum(1)),
            4
        );
        assert_eq!(
            java_sql_type(&ft(mysql::TYPE_YEAR, 0, ""), &Datum::Int(2020)),
            12
        );
    }

    #[test]
    fn enum_and_set_names() {
        let mut t = ft(mysql::TYPE_SET, 0, "");
        t.elems = Some(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(set_names(&t, 0b101).unwrap(), "a,c");
        assert_eq!(set_names(&t, 0).unwrap(), "");
        assert!(set_names(&t, 0b1000).is_err());
        assert_eq!(enum_name(&t, 2).unwrap(), "b");
        assert_eq!(enum_name(&t, 0).unwrap(), "");
        assert!(enum_name(&t, 4).is_err());
        assert!(enum_name(&t, u64::MAX).is_err());
    }

    #[test]
    fn byte_codecs() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zg=="), Some(b"f".to_vec()));
        assert_eq!(base64_decode("Zg="), None);
        assert_eq!(base64_decode("Z==="), None);
        assert_eq!(hex_encode(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(hex_decode("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(hex_decode("0"), None);
        assert_eq!(crc32_ieee(b"123456789"), 0xCBF4_3926);
        assert_eq!(latin1_to_string(&[0x41, 0xe9, 0xff]), "Aéÿ");
        assert_eq!(string_to_latin1("Aéÿ"), Some(vec![0x41, 0xe9, 0xff]));
        assert_eq!(string_to_latin1("€"), None);
    }

    #[test]
    fn json_strings_are_go_escaped() {
        let mut out = Vec::new();
        push_json_string(&mut out, "a\"b\\c\n\r\t\u{1}<>&\u{2028}é");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""a\"b\\c\n\r\t\u0001\u003c\u003e\u0026\u2028é""#
        );
        assert_eq!(
            go_html_escape_json(r#"{"a":"<&>"}"#),
            r#"{"a":"\u003c\u0026\u003e"}"#
        );
    }

    proptest! {
        #[test]
        fn base64_and_hex_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(base64_decode(&base64_encode(&bytes)), Some(bytes.clone()));
            prop_assert_eq!(hex_decode(&hex_encode(&bytes)), Some(bytes.clone()));
            prop_assert_eq!(string_to_latin1(&latin1_to_string(&bytes)), Some(bytes));
        }

        #[test]
        fn decoders_never_panic(s in ".{0,40}") {
            let _ = base64_decode(&s);
            let _ = hex_decode(&s);
            let _ = string_to_latin1(&s);
        }

        #[test]
        fn json_string_escape_parses_back(s in any::<String>()) {
            let mut out = Vec::new();
            push_json_string(&mut out, &s);
            let back: String = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(back, s);
        }

        /// The byte-run escaper must produce exactly what a plain per-character escaper of Go's
        /// rules produces (the form TiCDC writes), for any text.
        #[test]
        fn json_string_escape_matches_per_char_reference(
            s in "([\"\\\\<>&\n\r\t\u{0}-\u{1f}\u{2028}\u{2029}é€a-z]|.){0,40}"
        ) {
            let mut reference = vec![b'"'];
            for c in s.chars() {
                match c {
                    '"' => reference.extend_from_slice(b"\\\""),
                    '\\' => reference.extend_from_slice(b"\\\\"),
                    '\n' => reference.extend_from_slice(b"\\n"),
                    '\r' => reference.extend_from_slice(b"\\r"),
                    '\t' => reference.extend_from_slice(b"\\t"),
                    '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => reference
                        .extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes()),
                    c if u32::from(c) < 0x20 => reference
                        .extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes()),
                    c => reference.extend_from_slice(c.to_string().as_bytes()),
                }
            }
            reference.push(b'"');
            let mut out = Vec::new();
            push_json_string(&mut out, &s);
            prop_assert_eq!(out, reference);
        }

        #[test]
        fn go_v_floats_parse_back(v in any::<f64>()) {
            prop_assume!(v.is_finite());
            let s = go_float64_v(v);
            prop_assert_eq!(s.parse::<f64>().unwrap(), v);
        }
    }
}
