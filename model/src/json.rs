//! JSON values in TiDB's binary JSON form.
//!
//! TiDB stores a JSON column as a type code and a binary value modelled on MySQL 5.7's format
//! (wire.md §5.4): objects and arrays carry a header with their element count and total size,
//! entries that point at the elements by offset, and inline literals. Tidal keeps the binary form
//! in a [`Json`] (it is compact and exact) and converts on demand: to [`serde_json::Value`] for
//! sinks that build documents, and to text with [`fmt::Display`] printed exactly as TiDB prints
//! it (`{"a": 1, "b": [true, null]}`), so a downstream MySQL receives the same string.
//!
//! Facts checked against TiDB's `types/json_binary.go`:
//! - only literals are inlined in value entries (type 0x04, the literal byte, three zero bytes);
//! - element offsets are relative to the start of the enclosing object or array;
//! - object keys are sorted by plain byte order (not MySQL's length-first order);
//! - a TIME (0x11) value is 12 bytes: i64 nanoseconds and a u32 fsp, both little-endian;
//! - DATE/DATETIME/TIMESTAMP values are the 8-byte packed time; text output uses 6 fraction
//!   digits for them and for TIME;
//! - opaque values print as `"base64:type<N>:<base64>"`;
//! - floats print in plain notation for 1e-15 <= |f| < 1e15 (with `.0` appended to integers),
//!   otherwise in exponent notation without `+` or leading exponent zeros.
//!
//! Decoding is defensive: every offset is bounds-checked, nesting is limited to
//! [`MAX_DEPTH`], and the number of elements visited is bounded by the input length, so a crafted
//! value whose entries share offsets cannot make validation exponential.

use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codec::number::{decode_uvarint, encode_uvarint};
use crate::error::CodecError;
use crate::time::{Duration, Time, TimeKind};

/// Type code of an object.
pub const TYPE_OBJECT: u8 = 0x01;
/// Type code of an array.
pub const TYPE_ARRAY: u8 = 0x03;
/// Type code of a literal (null, true, false).
pub const TYPE_LITERAL: u8 = 0x04;
/// Type code of a signed 64-bit integer.
pub const TYPE_INT64: u8 = 0x09;
/// Type code of an unsigned 64-bit integer.
pub const TYPE_UINT64: u8 = 0x0a;
/// Type code of a double.
pub const TYPE_FLOAT64: u8 = 0x0b;
/// Type code of a string.
pub const TYPE_STRING: u8 = 0x0c;
/// Type code of an opaque value (a MySQL type byte and raw bytes).
pub const TYPE_OPAQUE: u8 = 0x0d;
/// Type code of a date.
pub const TYPE_DATE: u8 = 0x0e;
/// Type code of a datetime.
pub const TYPE_DATETIME: u8 = 0x0f;
/// Type code of a timestamp.
pub const TYPE_TIMESTAMP: u8 = 0x10;
/// Type code of a time (duration).
pub const TYPE_DURATION: u8 = 0x11;

/// Literal byte of JSON `null`.
pub const LITERAL_NULL: u8 = 0x00;
/// Literal byte of JSON `true`.
pub const LITERAL_TRUE: u8 = 0x01;
/// Literal byte of JSON `false`.
pub const LITERAL_FALSE: u8 = 0x02;

/// Deepest nesting of objects and arrays accepted (TiDB itself allows 100 levels).
pub const MAX_DEPTH: usize = 128;

const WHAT: &str = "json";
const HEADER_SIZE: usize = 8;
const KEY_ENTRY_SIZE: usize = 6;
const VALUE_ENTRY_SIZE: usize = 5;

/// A JSON value in TiDB's binary form: a type code and the encoded value.
///
/// [`Json::from_binary`] and [`Json::from_serde`] produce valid values; the fields are public for
/// construction in tests, and every reader re-validates, so an invalid value yields an error
/// rather than a panic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Json {
    /// The type code of the top-level value.
    pub type_code: u8,
    /// The encoded value, exactly [`binary_len`] bytes.
    pub value: Vec<u8>,
}

fn invalid(detail: impl Into<String>) -> CodecError {
    CodecError::invalid(WHAT, detail)
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, CodecError> {
    let b = at
        .checked_add(4)
        .and_then(|end| bytes.get(at..end))
        .ok_or(CodecError::Truncated {
            what: WHAT,
            needed: at.saturating_add(4),
            available: bytes.len(),
        })?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u16(bytes: &[u8], at: usize) -> Result<u16, CodecError> {
    let b = at
        .checked_add(2)
        .and_then(|end| bytes.get(at..end))
        .ok_or(CodecError::Truncated {
            what: WHAT,
            needed: at.saturating_add(2),
            available: bytes.len(),
        })?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn read_u64(bytes: &[u8]) -> Result<u64, CodecError> {
    CodecError::ensure_len(WHAT, bytes, 8)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    Ok(u64::from_le_bytes(b))
}

/// Length of a uvarint-prefixed byte string at the start of `bytes`: (prefix + payload, payload
/// start).
fn prefixed_len(bytes: &[u8]) -> Result<(usize, usize), CodecError> {
    let (n, rest) = decode_uvarint(bytes)?;
    let prefix = bytes.len() - rest.len();
    let n = usize::try_from(n).map_err(|_| invalid("string length overflows"))?;
    let total = prefix
        .checked_add(n)
        .ok_or_else(|| invalid("string length overflows"))?;
    CodecError::ensure_len(WHAT, bytes, total)?;
    Ok((total, prefix))
}

/// Length of the self-delimiting binary JSON value of `type_code` at the start of `bytes`.
///
/// Object/array: the total size from its header; literal: 1; int64/uint64/float64 and the packed
/// date/datetime/timestamp: 8; time (duration): 12 (nanoseconds and fsp); string: uvarint length
/// plus the bytes; opaque: one type byte, uvarint length and the bytes. Only the framing is
/// checked here; [`Json::from_binary`] validates the contents.
pub fn binary_len(type_code: u8, bytes: &[u8]) -> Result<usize, CodecError> {
    let len = match type_code {
        TYPE_OBJECT | TYPE_ARRAY => {
            let size = read_u32(bytes, 4)? as usize;
            if size < HEADER_SIZE {
                return Err(invalid(format!("container size {size} below its header")));
            }
            size
        }
        TYPE_LITERAL => 1,
        TYPE_INT64 | TYPE_UINT64 | TYPE_FLOAT64 | TYPE_DATE | TYPE_DATETIME | TYPE_TIMESTAMP => 8,
        TYPE_DURATION => 12,
        TYPE_STRING => prefixed_len(bytes)?.0,
        TYPE_OPAQUE => {
            CodecError::ensure_len(WHAT, bytes, 1)?;
            1 + prefixed_len(&bytes[1..])?.0
        }
        other => return Err(invalid(format!("unknown type code {other:#04x}"))),
    };
    CodecError::ensure_len(WHAT, bytes, len)?;
    Ok(len)
}

/// One element of an object or array: its key (objects only), type code and the bytes from the
/// start of its value (to the end of the container; a 1-byte slice for inline literals).
struct Entry<'a> {
    key: Option<&'a [u8]>,
    type_code: u8,
    value: &'a [u8],
}

/// Parses the header and entries of a container whose bytes are exactly `doc`.
fn entries<'a>(
    type_code: u8,
    doc: &'a [u8],
    budget: &mut usize,
) -> Result<Vec<Entry<'a>>, CodecError> {
    let count = read_u32(doc, 0)? as usize;
    let is_object = type_code == TYPE_OBJECT;
    let per = if is_object {
        KEY_ENTRY_SIZE + VALUE_ENTRY_SIZE
    } else {
        VALUE_ENTRY_SIZE
    };
    let header_len = count
        .checked_mul(per)
        .and_then(|n| n.checked_add(HEADER_SIZE))
        .filter(|&n| n <= doc.len())
        .ok_or_else(|| invalid(format!("{count} entries do not fit in {} bytes", doc.len())))?;
    *budget = budget
        .checked_sub(count)
        .ok_or_else(|| invalid("elements overlap (more elements than bytes)"))?;
    let value_entries = HEADER_SIZE + if is_object { count * KEY_ENTRY_SIZE } else { 0 };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let key = if is_object {
            let at = HEADER_SIZE + i * KEY_ENTRY_SIZE;
            let off = read_u32(doc, at)? as usize;
            let len = usize::from(read_u16(doc, at + 4)?);
            if off < header_len {
                return Err(invalid(format!("key offset {off} inside the header")));
            }
            let key = off
                .checked_add(len)
                .and_then(|end| doc.get(off..end))
                .ok_or_else(|| invalid(format!("key at {off}+{len} beyond {}", doc.len())))?;
            Some(key)
        } else {
            None
        };
        let at = value_entries + i * VALUE_ENTRY_SIZE;
        let type_code = *doc
            .get(at)
            .ok_or_else(|| invalid("value entry truncated"))?;
        let value = if type_code == TYPE_LITERAL {
            doc.get(at + 1..at + 2)
                .ok_or_else(|| invalid("value entry truncated"))?
        } else {
            let off = read_u32(doc, at + 1)? as usize;
            if off < header_len || off >= doc.len() {
                return Err(invalid(format!(
                    "value offset {off} outside {header_len}..{}",
                    doc.len()
                )));
            }
            &doc[off..]
        };
        out.push(Entry {
            key,
            type_code,
            value,
        });
    }
    Ok(out)
}

/// Validates the value of `type_code` at the start of `bytes`; returns its length.
fn validate(
    type_code: u8,
    bytes: &[u8],
    depth: usize,
    budget: &mut usize,
) -> Result<usize, CodecError> {
    let len = binary_len(type_code, bytes)?;
    let v = &bytes[..len];
    *budget = budget
        .checked_sub(1)
        .ok_or_else(|| invalid("elements overlap (more elements than bytes)"))?;
    match type_code {
        TYPE_LITERAL => literal_text(v[0]).map(|_| ())?,
        TYPE_FLOAT64 => {
            let f = f64::from_bits(read_u64(v)?);
            if !f.is_finite() {
                return Err(invalid(format!("non-finite number {f}")));
            }
        }
        TYPE_DATE | TYPE_DATETIME | TYPE_TIMESTAMP => {
            json_time(type_code, v)?;
        }
        TYPE_DURATION => {
            json_duration(v)?;
        }
        TYPE_OBJECT | TYPE_ARRAY => {
            if depth >= MAX_DEPTH {
                return Err(invalid(format!("nested deeper than {MAX_DEPTH}")));
            }
            for e in entries(type_code, v, budget)? {
                if e.type_code == TYPE_LITERAL {
                    literal_text(e.value[0])?;
                } else {
                    validate(e.type_code, e.value, depth + 1, budget)?;
                }
            }
        }
        _ => {}
    }
    Ok(len)
}

fn literal_text(b: u8) -> Result<&'static str, CodecError> {
    match b {
        LITERAL_NULL => Ok("null"),
        LITERAL_TRUE => Ok("true"),
        LITERAL_FALSE => Ok("false"),
        other => Err(invalid(format!("bad literal {other:#04x}"))),
    }
}

fn json_time(type_code: u8, v: &[u8]) -> Result<Time, CodecError> {
    let kind = match type_code {
        TYPE_DATE => TimeKind::Date,
        TYPE_DATETIME => TimeKind::Datetime,
        _ => TimeKind::Timestamp,
    };
    Time::from_packed(read_u64(v)?, kind, 6)
}

fn json_duration(v: &[u8]) -> Result<Duration, CodecError> {
    let nanos = read_u64(v)? as i64;
    let fsp = read_u32(v, 8)?;
    let fsp = u8::try_from(fsp).map_err(|_| invalid(format!("duration fsp {fsp}")))?;
    Duration::from_nanos(nanos, fsp)
}

/// The text of a scalar that prints as a JSON string (string, opaque, dates and times).
fn scalar_string(type_code: u8, v: &[u8]) -> Result<String, CodecError> {
    match type_code {
        TYPE_STRING => {
            let (total, start) = prefixed_len(v)?;
            Ok(String::from_utf8_lossy(&v[start..total]).into_owned())
        }
        TYPE_OPAQUE => {
            let (&mysql_type, rest) = v.split_first().ok_or_else(|| invalid("empty opaque"))?;
            let (total, start) = prefixed_len(rest)?;
            Ok(format!(
                "base64:type{mysql_type}:{}",
                base64(&rest[start..total])
            ))
        }
        TYPE_DATE | TYPE_DATETIME | TYPE_TIMESTAMP => Ok(json_time(type_code, v)?.to_string()),
        TYPE_DURATION => Ok(Duration {
            fsp: 6,
            ..json_duration(v)?
        }
        .to_string()),
        other => Err(invalid(format!("type code {other:#04x} is not a string"))),
    }
}

fn to_serde_inner(type_code: u8, v: &[u8], depth: usize) -> Result<serde_json::Value, CodecError> {
    use serde_json::Value;
    if depth > MAX_DEPTH {
        return Err(invalid(format!("nested deeper than {MAX_DEPTH}")));
    }
    Ok(match type_code {
        TYPE_LITERAL => match v.first().copied() {
            Some(LITERAL_NULL) => Value::Null,
            Some(LITERAL_TRUE) => Value::Bool(true),
            Some(LITERAL_FALSE) => Value::Bool(false),
            _ => return Err(invalid("bad literal")),
        },
        TYPE_INT64 => Value::from(read_u64(v)? as i64),
        TYPE_UINT64 => Value::from(read_u64(v)?),
        TYPE_FLOAT64 => {
            let f = f64::from_bits(read_u64(v)?);
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| invalid(format!("non-finite number {f}")))?
        }
        TYPE_ARRAY | TYPE_OBJECT => {
            let len = binary_len(type_code, v)?;
            let mut budget = len;
            let es = entries(type_code, &v[..len], &mut budget)?;
            if type_code == TYPE_ARRAY {
                let mut out = Vec::with_capacity(es.len());
                for e in es {
                    out.push(to_serde_inner(e.type_code, e.value, depth + 1)?);
                }
                Value::Array(out)
            } else {
                let mut out = serde_json::Map::new();
                for e in es {
                    let key = String::from_utf8_lossy(e.key.unwrap_or_default()).into_owned();
                    out.insert(key, to_serde_inner(e.type_code, e.value, depth + 1)?);
                }
                Value::Object(out)
            }
        }
        other => Value::String(scalar_string(other, v)?),
    })
}

/// Appends `s` as a JSON string literal, escaped as TiDB (Go's encoder) escapes it.
fn write_json_string(out: &mut String, s: &[u8]) {
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        for _ in chunk.invalid() {
            out.push_str("\\ufffd");
        }
    }
    out.push('"');
}

/// Appends a double as TiDB prints it in JSON text.
fn write_float(out: &mut String, f: f64) {
    let abs = f.abs();
    if abs != 0.0 && !(1e-15..1e15).contains(&abs) {
        let _ = write!(out, "{f:e}");
    } else {
        let start = out.len();
        let _ = write!(out, "{f}");
        if !out[start..].contains('.') {
            out.push_str(".0");
        }
    }
}

fn render(out: &mut String, type_code: u8, v: &[u8], depth: usize) -> Result<(), CodecError> {
    if depth > MAX_DEPTH {
        return Err(invalid(format!("nested deeper than {MAX_DEPTH}")));
    }
    match type_code {
        TYPE_LITERAL => out.push_str(literal_text(v.first().copied().unwrap_or(0xff))?),
        TYPE_INT64 => {
            let _ = write!(out, "{}", read_u64(v)? as i64);
        }
        TYPE_UINT64 => {
            let _ = write!(out, "{}", read_u64(v)?);
        }
        TYPE_FLOAT64 => write_float(out, f64::from_bits(read_u64(v)?)),
        TYPE_STRING => {
            let (total, start) = prefixed_len(v)?;
            write_json_string(out, &v[start..total]);
        }
        TYPE_ARRAY | TYPE_OBJECT => {
            let len = binary_len(type_code, v)?;
            let mut budget = len;
            let es = entries(type_code, &v[..len], &mut budget)?;
            let (open, close) = if type_code == TYPE_ARRAY {
                ('[', ']')
            } else {
                ('{', '}')
            };
            out.push(open);
            for (i, e) in es.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if let Some(key) = e.key {
                    write_json_string(out, key);
                    out.push_str(": ");
                }
                render(out, e.type_code, e.value, depth + 1)?;
            }
            out.push(close);
        }
        other => {
            let s = scalar_string(other, v)?;
            write_json_string(out, s.as_bytes());
        }
    }
    Ok(())
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn encode_value(buf: &mut Vec<u8>, v: &serde_json::Value, depth: usize) -> Result<u8, CodecError> {
    use serde_json::Value;
    if depth > MAX_DEPTH {
        return Err(invalid(format!("nested deeper than {MAX_DEPTH}")));
    }
    Ok(match v {
        Value::Null => {
            buf.push(LITERAL_NULL);
            TYPE_LITERAL
        }
        Value::Bool(b) => {
            buf.push(if *b { LITERAL_TRUE } else { LITERAL_FALSE });
            TYPE_LITERAL
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                buf.extend_from_slice(&i.to_le_bytes());
                TYPE_INT64
            } else if let Some(u) = n.as_u64() {
                buf.extend_from_slice(&u.to_le_bytes());
                TYPE_UINT64
            } else {
                let f = n
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| invalid(format!("number {n} is not representable")))?;
                buf.extend_from_slice(&f.to_bits().to_le_bytes());
                TYPE_FLOAT64
            }
        }
        Value::String(s) => {
            encode_uvarint(buf, s.len() as u64);
            buf.extend_from_slice(s.as_bytes());
            TYPE_STRING
        }
        Value::Array(items) => {
            let items: Vec<(Option<&str>, &Value)> = items.iter().map(|v| (None, v)).collect();
            encode_container(buf, false, &items, depth)?;
            TYPE_ARRAY
        }
        Value::Object(map) => {
            let mut items: Vec<(Option<&str>, &Value)> =
                map.iter().map(|(k, v)| (Some(k.as_str()), v)).collect();
            items.sort_by(|a, b| a.0.cmp(&b.0));
            encode_container(buf, true, &items, depth)?;
            TYPE_OBJECT
        }
    })
}

fn put_u32(buf: &mut [u8], at: usize, v: usize) -> Result<(), CodecError> {
    let v = u32::try_from(v).map_err(|_| invalid("document larger than 4 GiB"))?;
    if let Some(dst) = buf.get_mut(at..at + 4) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

fn encode_container(
    buf: &mut Vec<u8>,
    is_object: bool,
    items: &[(Option<&str>, &serde_json::Value)],
    depth: usize,
) -> Result<(), CodecError> {
    let doc = buf.len();
    let count = items.len();
    buf.extend_from_slice(
        &u32::try_from(count)
            .map_err(|_| invalid("too many elements"))?
            .to_le_bytes(),
    );
    buf.extend_from_slice(&[0; 4]);
    let key_entries = buf.len();
    if is_object {
        buf.resize(buf.len() + count * KEY_ENTRY_SIZE, 0);
    }
    let value_entries = buf.len();
    buf.resize(buf.len() + count * VALUE_ENTRY_SIZE, 0);
    if is_object {
        for (i, (key, _)) in items.iter().enumerate() {
            let key = key.unwrap_or_default();
            let len = u16::try_from(key.len())
                .map_err(|_| invalid(format!("object key of {} bytes exceeds 65535", key.len())))?;
            let at = key_entries + i * KEY_ENTRY_SIZE;
            let off = buf.len() - doc;
            put_u32(buf, at, off)?;
            buf[at + 4..at + 6].copy_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(key.as_bytes());
        }
    }
    for (i, (_, value)) in items.iter().enumerate() {
        let at = value_entries + i * VALUE_ENTRY_SIZE;
        let start = buf.len();
        let type_code = encode_value(buf, value, depth + 1)?;
        buf[at] = type_code;
        if type_code == TYPE_LITERAL {
            let lit = buf.get(start).copied().unwrap_or(LITERAL_NULL);
            buf.truncate(start);
            buf[at + 1] = lit;
        } else {
            put_u32(buf, at + 1, start - doc)?;
        }
    }
    let size = buf.len() - doc;
    put_u32(buf, doc + 4, size)
}

impl Json {
    /// Validates a binary JSON value (recursively, with bounded depth) that must fill `bytes`.
    pub fn from_binary(type_code: u8, bytes: &[u8]) -> Result<Json, CodecError> {
        let mut budget = bytes.len();
        let len = validate(type_code, bytes, 0, &mut budget)?;
        if len != bytes.len() {
            return Err(invalid(format!(
                "{} trailing bytes after the value",
                bytes.len() - len
            )));
        }
        Ok(Json {
            type_code,
            value: bytes.to_vec(),
        })
    }

    /// Decodes the row-v2 / v1 column form: the type code byte, then the binary value.
    pub fn decode_column(bytes: &[u8]) -> Result<Json, CodecError> {
        let (&type_code, rest) = bytes.split_first().ok_or(CodecError::Truncated {
            what: WHAT,
            needed: 1,
            available: 0,
        })?;
        Json::from_binary(type_code, rest)
    }

    /// Encodes the column form: the type code byte, then the binary value.
    pub fn encode_column(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.value.len() + 1);
        out.push(self.type_code);
        out.extend_from_slice(&self.value);
        out
    }

    /// Encodes a `serde_json` value as TiDB would: object keys sorted by bytes, integers as
    /// int64 (uint64 above `i64::MAX`), other numbers as float64, literals inlined.
    ///
    /// Fails for object keys longer than 65535 bytes, documents over 4 GiB and nesting deeper
    /// than [`MAX_DEPTH`].
    pub fn from_serde(value: &serde_json::Value) -> Result<Json, CodecError> {
        let mut buf = Vec::new();
        let type_code = encode_value(&mut buf, value, 0)?;
        Ok(Json {
            type_code,
            value: buf,
        })
    }

    /// Converts to a `serde_json` value. Dates, times and opaque values become strings as TiDB
    /// prints them; object keys come out in stored (sorted) order.
    pub fn to_serde(&self) -> Result<serde_json::Value, CodecError> {
        Json::from_binary(self.type_code, &self.value)?;
        to_serde_inner(self.type_code, &self.value, 0)
    }

    /// The JSON text as TiDB prints it (`{"a": 1, "b": [true, null]}`), or an error for an
    /// invalid value.
    pub fn to_text(&self) -> Result<String, CodecError> {
        Json::from_binary(self.type_code, &self.value)?;
        let mut out = String::with_capacity(self.value.len() * 3 / 2);
        render(&mut out, self.type_code, &self.value, 0)?;
        Ok(out)
    }
}

impl fmt::Display for Json {
    /// TiDB's text form; an invalid value prints as `<invalid binary JSON: …>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_text() {
            Ok(s) => f.write_str(&s),
            Err(e) => write!(f, "<invalid binary JSON: {e}>"),
        }
    }
}

impl FromStr for Json {
    type Err = CodecError;

    /// Parses JSON text and encodes it with [`Json::from_serde`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| invalid(format!("bad JSON text: {e}")))?;
        Json::from_serde(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn j(s: &str) -> Json {
        s.parse().unwrap()
    }

    #[test]
    fn object_layout_matches_tidb() {
        let v = j(r#"{"b": [true, null], "a": 1}"#);
        assert_eq!(v.type_code, TYPE_OBJECT);
        // count 2, size; key entries (a at 30, b at 31); value entries: int64 at 32, array at 40;
        // keys "ab"; int 1; array: count 2, size 18, two inline literals.
        let expected = concat!(
            "02000000",
            "3a000000",
            "1e000000",
            "0100",
            "1f000000",
            "0100",
            "09",
            "20000000",
            "03",
            "28000000",
            "6162",
            "0100000000000000",
            "02000000",
            "12000000",
            "0401000000",
            "0400000000"
        );
        assert_eq!(hex::encode(&v.value), expected);
        assert_eq!(binary_len(TYPE_OBJECT, &v.value).unwrap(), 0x3a);
        assert_eq!(v.to_string(), r#"{"a": 1, "b": [true, null]}"#);
        assert_eq!(v.to_serde().unwrap(), json!({"a": 1, "b": [true, null]}));
        assert_eq!(Json::from_binary(TYPE_OBJECT, &v.value).unwrap(), v);
    }

    #[test]
    fn keys_sorted_by_bytes() {
        let v = j(r#"{"bb": 1, "a": 2, "B": 3}"#);
        assert_eq!(v.to_string(), r#"{"B": 3, "a": 2, "bb": 1}"#);
    }

    #[test]
    fn scalars_and_text() {
        assert_eq!(j("1.5").to_string(), "1.5");
        assert_eq!(j("2.0").to_string(), "2.0");
        assert_eq!(j("1e20").to_string(), "1e20");
        assert_eq!(j("1.5e-16").to_string(), "1.5e-16");
        assert_eq!(j("-3").to_string(), "-3");
        assert_eq!(j("18446744073709551615").type_code, TYPE_UINT64);
        assert_eq!(
            j("18446744073709551615").to_string(),
            "18446744073709551615"
        );
        assert_eq!(j(r#""a\"b\n\u0001é""#).to_string(), r#""a\"b\n\u0001é""#);
        assert_eq!(j("null").value, vec![0]);
        assert_eq!(j(r#""hi""#).value, vec![2, b'h', b'i']);
        assert_eq!(binary_len(TYPE_STRING, &[2, b'h', b'i', 9]).unwrap(), 3);
        assert_eq!(binary_len(TYPE_OPAQUE, &[0xfc, 1, 7, 9]).unwrap(), 3);
        let op = Json::from_binary(TYPE_OPAQUE, &[0xfc, 3, b'a', b'b', b'c']).unwrap();
        assert_eq!(op.to_string(), r#""base64:type252:YWJj""#);
        let date = Json::from_binary(TYPE_DATE, &0x19b2_7e00_0000_0000u64.to_le_bytes()).unwrap();
        assert_eq!(date.to_string(), r#""2024-01-31""#);
        let dt = Json::from_binary(TYPE_DATETIME, &0x19b2_7e00_0000_0000u64.to_le_bytes()).unwrap();
        assert_eq!(dt.to_string(), r#""2024-01-31 00:00:00.000000""#);
        let mut dur = 3_723_000_000_000i64.to_le_bytes().to_vec();
        dur.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(binary_len(TYPE_DURATION, &dur).unwrap(), 12);
        let dur = Json::from_binary(TYPE_DURATION, &dur).unwrap();
        assert_eq!(dur.to_string(), r#""01:02:03.000000""#);
        assert_eq!(dur.to_serde().unwrap(), json!("01:02:03.000000"));
        let col = j("[1]").encode_column();
        assert_eq!(col[0], TYPE_ARRAY);
        assert_eq!(Json::decode_column(&col).unwrap(), j("[1]"));
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn malformed() {
        assert!(Json::from_binary(0x02, &[0]).is_err());
        assert!(Json::from_binary(TYPE_LITERAL, &[3]).is_err());
        assert!(Json::from_binary(TYPE_LITERAL, &[0, 0]).is_err());
        assert!(Json::from_binary(TYPE_STRING, &[5, b'a']).is_err());
        assert!(Json::from_binary(TYPE_FLOAT64, &f64::NAN.to_bits().to_le_bytes()).is_err());
        // Array claiming 1 element with 8-byte size: entry does not fit.
        assert!(Json::from_binary(TYPE_ARRAY, &[1, 0, 0, 0, 8, 0, 0, 0]).is_err());
        // Array whose element offset points into its header.
        let bad = [1, 0, 0, 0, 14, 0, 0, 0, TYPE_INT64, 0, 0, 0, 0, 0];
        assert!(Json::from_binary(TYPE_ARRAY, &bad).is_err());
        // Size beyond the input.
        assert!(Json::from_binary(TYPE_ARRAY, &[0, 0, 0, 0, 9, 0, 0, 0]).is_err());
        // Empty array is fine.
        assert_eq!(
            Json::from_binary(TYPE_ARRAY, &[0, 0, 0, 0, 8, 0, 0, 0])
                .unwrap()
                .to_string(),
            "[]"
        );
        let invalid = Json {
            type_code: TYPE_LITERAL,
            value: vec![9],
        };
        assert!(invalid.to_serde().is_err());
        assert!(invalid.to_string().starts_with("<invalid binary JSON"));
    }

    #[test]
    fn shared_offsets_are_bounded() {
        // Each level: an array of 2 entries pointing at the same child array.
        let mut child = vec![0u8, 0, 0, 0, 8, 0, 0, 0];
        let mut tc = TYPE_ARRAY;
        for _ in 0..60 {
            let mut doc = vec![2, 0, 0, 0, 0, 0, 0, 0];
            doc.extend_from_slice(&[tc, 18, 0, 0, 0, tc, 18, 0, 0, 0]);
            doc.extend_from_slice(&child);
            let size = doc.len() as u32;
            doc[4..8].copy_from_slice(&size.to_le_bytes());
            child = doc;
            tc = TYPE_ARRAY;
        }
        assert!(Json::from_binary(TYPE_ARRAY, &child).is_err());
    }

    #[test]
    fn depth_limit() {
        let mut v = json!(1);
        for _ in 0..MAX_DEPTH + 2 {
            v = json!([v]);
        }
        assert!(Json::from_serde(&v).is_err());
    }

    fn approx_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (a, b) {
            (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                x == y || ((x - y).abs() <= x.abs().max(y.abs()) * 1e-15)
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| approx_eq(a, b))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((ka, a), (kb, b))| ka == kb && approx_eq(a, b))
            }
            _ => a == b,
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            (-1e300f64..1e300).prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn serde_round_trip(v in arb_json()) {
            let enc = Json::from_serde(&v).unwrap();
            let back = Json::from_binary(enc.type_code, &enc.value).unwrap();
            prop_assert_eq!(back.to_serde().unwrap(), v.clone());
            // Text output is valid JSON with the same value (serde_json's own float parser may
            // be an ulp off, so floats compare approximately).
            let reparsed: serde_json::Value = serde_json::from_str(&back.to_string()).unwrap();
            prop_assert!(approx_eq(&reparsed, &v), "{} vs {}", reparsed, v);
        }

        #[test]
        fn random_bytes_never_panic(tc in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = binary_len(tc, &bytes);
            if let Ok(v) = Json::from_binary(tc, &bytes) {
                v.to_serde().unwrap();
                let _ = v.to_string();
            }
            let _ = Json::decode_column(&bytes);
            let _ = Json { type_code: tc, value: bytes.clone() }.to_string();
        }
    }

    /// Regression (found by the `json_binary` fuzz target): JSON text with a float did not read
    /// back bit-exact (serde_json parsed it one ULP off without `float_roundtrip`).
    #[test]
    fn regression_float_text_reads_back_bit_exact() {
        let text = "-6.827906203439687e304";
        let json: Json = text.parse().unwrap();
        let again: Json = json.to_text().unwrap().parse().unwrap();
        assert_eq!(json, again);
        assert_eq!(json.to_text().unwrap(), again.to_text().unwrap());
    }
}
