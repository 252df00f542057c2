//! Flag-prefixed datums: the self-describing values of TiDB keys and of row format v1.
//!
//! A common-handle row key, an index key and an old-format (v1) row value are concatenations of
//! datums, each introduced by one flag byte that says how its payload is encoded (wire.md §5.6).
//! Keys use the comparable payloads (memcomparable bytes, sign-flipped ints) and values the short
//! ones (compact bytes, varints). [`FlaggedDatum`] is the decoded form that needs no column type:
//! turning it into a typed [`crate::Datum`] (a time from a packed `u64`, an enum from an int) is
//! the row decoder's job, once it knows the column.

use serde::{Deserialize, Serialize};

use crate::codec::bytes::{
    decode_bytes, decode_compact_bytes, encode_bytes, encode_compact_bytes, scan_bytes,
};
use crate::codec::number::{
    decode_float, decode_int, decode_uint, decode_uvarint, decode_varint, encode_float, encode_int,
    encode_uint, encode_uvarint, encode_varint,
};
use crate::decimal::decimal_bin_size;
use crate::error::CodecError;
use crate::json::binary_len;

/// Flag of SQL NULL (no payload).
pub const NIL_FLAG: u8 = 0;
/// Flag of memcomparable bytes (keys).
pub const BYTES_FLAG: u8 = 1;
/// Flag of compact bytes: varint length and bytes (values).
pub const COMPACT_BYTES_FLAG: u8 = 2;
/// Flag of a comparable 8-byte signed integer (keys; also the int handle).
pub const INT_FLAG: u8 = 3;
/// Flag of an 8-byte big-endian unsigned integer (keys; also packed times in keys).
pub const UINT_FLAG: u8 = 4;
/// Flag of a comparable 8-byte double.
pub const FLOAT_FLAG: u8 = 5;
/// Flag of a decimal: precision, frac, then MySQL binary decimal.
pub const DECIMAL_FLAG: u8 = 6;
/// Flag of a duration: comparable 8-byte signed nanoseconds.
pub const DURATION_FLAG: u8 = 7;
/// Flag of a zigzag varint (values).
pub const VARINT_FLAG: u8 = 8;
/// Flag of an unsigned LEB128 varint (values).
pub const UVARINT_FLAG: u8 = 9;
/// Flag of binary JSON: a type code, then the self-delimiting value.
pub const JSON_FLAG: u8 = 10;
/// Flag of a serialized float32 vector (not decoded by Tidal yet).
pub const VECTOR_FLOAT32_FLAG: u8 = 20;
/// Flag of the range sentinel that sorts after every value (no payload).
pub const MAX_FLAG: u8 = 250;

/// A datum as its flag and payload describe it, before any column type is applied.
///
/// Both the comparable (key) and the value payloads decode to the same variants: flag 1 and flag
/// 2 both give [`FlaggedDatum::Bytes`], flags 3 and 8 [`FlaggedDatum::Int`], flags 4 and 9
/// [`FlaggedDatum::Uint`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FlaggedDatum {
    /// SQL NULL (flag 0).
    Nil,
    /// Bytes (flag 1 or 2).
    Bytes(Vec<u8>),
    /// A signed integer (flag 3 or 8).
    Int(i64),
    /// An unsigned integer (flag 4 or 9); also a packed time, an enum, a set or a bit value.
    Uint(u64),
    /// A double (flag 5).
    Float(f64),
    /// A decimal (flag 6): its precision and frac and the MySQL binary form.
    Decimal {
        /// Total number of digits.
        precision: u8,
        /// Digits after the point.
        frac: u8,
        /// MySQL binary decimal, `decimal_bin_size(precision, frac)` bytes long.
        bin: Vec<u8>,
    },
    /// A duration in nanoseconds (flag 7).
    Duration(i64),
    /// Binary JSON (flag 10): the type code and the encoded value.
    Json {
        /// TiDB binary JSON type code.
        type_code: u8,
        /// The value, self-delimiting for its type code.
        bin: Vec<u8>,
    },
    /// The range sentinel greater than every value (flag 250).
    Max,
}

fn split_payload<'a>(
    what: &'static str,
    input: &'a [u8],
    len: usize,
) -> Result<(&'a [u8], &'a [u8]), CodecError> {
    CodecError::ensure_len(what, input, len)?;
    Ok(input.split_at(len))
}

/// Decodes one flag-prefixed datum, comparable or value form; returns it and the rest.
pub fn decode_flagged(input: &[u8]) -> Result<(FlaggedDatum, &[u8]), CodecError> {
    let (&flag, rest) = input.split_first().ok_or(CodecError::Truncated {
        what: "datum flag",
        needed: 1,
        available: 0,
    })?;
    match flag {
        NIL_FLAG => Ok((FlaggedDatum::Nil, rest)),
        BYTES_FLAG => {
            let (b, rest) = decode_bytes(rest)?;
            Ok((FlaggedDatum::Bytes(b), rest))
        }
        COMPACT_BYTES_FLAG => {
            let (b, rest) = decode_compact_bytes(rest)?;
            Ok((FlaggedDatum::Bytes(b), rest))
        }
        INT_FLAG => {
            let (v, rest) = decode_int(rest)?;
            Ok((FlaggedDatum::Int(v), rest))
        }
        UINT_FLAG => {
            let (v, rest) = decode_uint(rest)?;
            Ok((FlaggedDatum::Uint(v), rest))
        }
        FLOAT_FLAG => {
            let (v, rest) = decode_float(rest)?;
            Ok((FlaggedDatum::Float(v), rest))
        }
        DECIMAL_FLAG => {
            let (&[precision, frac], rest) =
                rest.split_first_chunk::<2>().ok_or(CodecError::Truncated {
                    what: "decimal datum header",
                    needed: 2,
                    available: rest.len(),
                })?;
            let len = decimal_bin_size(precision, frac)?;
            let (bin, rest) = split_payload("decimal datum", rest, len)?;
            Ok((
                FlaggedDatum::Decimal {
                    precision,
                    frac,
                    bin: bin.to_vec(),
                },
                rest,
            ))
        }
        DURATION_FLAG => {
            let (v, rest) = decode_int(rest)?;
            Ok((FlaggedDatum::Duration(v), rest))
        }
        VARINT_FLAG => {
            let (v, rest) = decode_varint(rest)?;
            Ok((FlaggedDatum::Int(v), rest))
        }
        UVARINT_FLAG => {
            let (v, rest) = decode_uvarint(rest)?;
            Ok((FlaggedDatum::Uint(v), rest))
        }
        JSON_FLAG => {
            let (&type_code, rest) = rest.split_first().ok_or(CodecError::Truncated {
                what: "json datum type code",
                needed: 1,
                available: 0,
            })?;
            let len = binary_len(type_code, rest)?;
            let (bin, rest) = split_payload("json datum", rest, len)?;
            Ok((
                FlaggedDatum::Json {
                    type_code,
                    bin: bin.to_vec(),
                },
                rest,
            ))
        }
        VECTOR_FLOAT32_FLAG => Err(CodecError::unsupported(
            "datum",
            "vector (flag 20) datums are not decoded",
        )),
        MAX_FLAG => Ok((FlaggedDatum::Max, rest)),
        other => Err(CodecError::invalid(
            "datum",
            format!("unknown datum flag {other}"),
        )),
    }
}

/// Checks one comparable datum at the start of `input` without copying its payload and returns
/// the rest. Accepts exactly what [`decode_flagged`] accepts.
pub fn skip_flagged(input: &[u8]) -> Result<&[u8], CodecError> {
    match input.split_first() {
        Some((&BYTES_FLAG, rest)) => {
            let used = scan_bytes(rest, false, None)?;
            Ok(rest.get(used..).unwrap_or_default())
        }
        _ => decode_flagged(input).map(|(_, rest)| rest),
    }
}

/// Decodes a whole concatenation of datums (a common handle, index values, a v1 row).
pub fn decode_flagged_all(mut input: &[u8]) -> Result<Vec<FlaggedDatum>, CodecError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (d, rest) = decode_flagged(input)?;
        out.push(d);
        input = rest;
    }
    Ok(out)
}

fn encode_common(buf: &mut Vec<u8>, d: &FlaggedDatum) {
    match d {
        FlaggedDatum::Nil => buf.push(NIL_FLAG),
        FlaggedDatum::Float(v) => {
            buf.push(FLOAT_FLAG);
            encode_float(buf, *v);
        }
        FlaggedDatum::Decimal {
            precision,
            frac,
            bin,
        } => {
            buf.push(DECIMAL_FLAG);
            buf.push(*precision);
            buf.push(*frac);
            buf.extend_from_slice(bin);
        }
        FlaggedDatum::Duration(v) => {
            buf.push(DURATION_FLAG);
            encode_int(buf, *v);
        }
        FlaggedDatum::Json { type_code, bin } => {
            buf.push(JSON_FLAG);
            buf.push(*type_code);
            buf.extend_from_slice(bin);
        }
        FlaggedDatum::Max => buf.push(MAX_FLAG),
        // Handled by the callers.
        FlaggedDatum::Bytes(_) | FlaggedDatum::Int(_) | FlaggedDatum::Uint(_) => {}
    }
}

/// Appends the comparable (key) form of a datum: bytes as flag 1 memcomparable, ints as flag 3,
/// uints as flag 4. Decimal and JSON payloads are written as given; they must already have the
/// length their header implies.
pub fn encode_key_flagged(buf: &mut Vec<u8>, d: &FlaggedDatum) {
    match d {
        FlaggedDatum::Bytes(b) => {
            buf.push(BYTES_FLAG);
            encode_bytes(buf, b);
        }
        FlaggedDatum::Int(v) => {
            buf.push(INT_FLAG);
            encode_int(buf, *v);
        }
        FlaggedDatum::Uint(v) => {
            buf.push(UINT_FLAG);
            encode_uint(buf, *v);
        }
        other => encode_common(buf, other),
    }
}

/// Appends the value form of a datum (row format v1): bytes as flag 2 compact bytes, ints as
/// flag 8 varint, uints as flag 9 uvarint; the other kinds as in keys.
pub fn encode_value_flagged(buf: &mut Vec<u8>, d: &FlaggedDatum) {
    match d {
        FlaggedDatum::Bytes(b) => {
            buf.push(COMPACT_BYTES_FLAG);
            encode_compact_bytes(buf, b);
        }
        FlaggedDatum::Int(v) => {
            buf.push(VARINT_FLAG);
            encode_varint(buf, *v);
        }
        FlaggedDatum::Uint(v) => {
            buf.push(UVARINT_FLAG);
            encode_uvarint(buf, *v);
        }
        other => encode_common(buf, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn key(d: &FlaggedDatum) -> Vec<u8> {
        let mut b = Vec::new();
        encode_key_flagged(&mut b, d);
        b
    }

    fn value(d: &FlaggedDatum) -> Vec<u8> {
        let mut b = Vec::new();
        encode_value_flagged(&mut b, d);
        b
    }

    #[test]
    fn fixed_vectors() {
        assert_eq!(key(&FlaggedDatum::Int(1)), h("03 80 00 00 00 00 00 00 01"));
        assert_eq!(key(&FlaggedDatum::Uint(2)), h("04 00 00 00 00 00 00 00 02"));
        assert_eq!(
            key(&FlaggedDatum::Bytes(b"ab".to_vec())),
            h("01 61 62 00 00 00 00 00 00 f9")
        );
        assert_eq!(
            key(&FlaggedDatum::Duration(-1)),
            h("07 7f ff ff ff ff ff ff ff")
        );
        assert_eq!(key(&FlaggedDatum::Nil), h("00"));
        assert_eq!(key(&FlaggedDatum::Max), h("fa"));
        assert_eq!(value(&FlaggedDatum::Int(-2)), h("08 03"));
        assert_eq!(value(&FlaggedDatum::Uint(300)), h("09 ac 02"));
        assert_eq!(
            value(&FlaggedDatum::Bytes(b"ab".to_vec())),
            h("02 04 61 62")
        );
        assert_eq!(
            value(&FlaggedDatum::Float(1.0)),
            h("05 bf f0 00 00 00 00 00 00")
        );
        // DECIMAL(5,2) 123.45: 3 integer digits (2 bytes) and 2 fraction digits (1 byte).
        let dec = FlaggedDatum::Decimal {
            precision: 5,
            frac: 2,
            bin: h("80 7b 2d"),
        };
        assert_eq!(key(&dec), h("06 05 02 80 7b 2d"));
        assert_eq!(
            decode_flagged(&h("06 05 02 80 7b 2d 00")).unwrap(),
            (dec, &[0u8][..])
        );
    }

    #[test]
    fn json_datums() {
        // Literal `true` (type 0x04, one byte) and the string "abc" (type 0x0c, uvarint length).
        let all = h("0a 04 01 0a 0c 03 61 62 63");
        let want = vec![
            FlaggedDatum::Json {
                type_code: 0x04,
                bin: vec![0x01],
            },
            FlaggedDatum::Json {
                type_code: 0x0c,
                bin: h("03 61 62 63"),
            },
        ];
        assert_eq!(decode_flagged_all(&all).unwrap(), want);
        let mut k = Vec::new();
        let mut v = Vec::new();
        for d in &want {
            encode_key_flagged(&mut k, d);
            encode_value_flagged(&mut v, d);
        }
        assert_eq!((k.clone(), v), (all.clone(), all));
        assert!(decode_flagged(&h("0a 0c 05 61 62")).is_err());
    }

    #[test]
    fn concatenation() {
        let all = h("03 80 00 00 00 00 00 00 05 01 61 00 00 00 00 00 00 00 f8 00 fa");
        assert_eq!(
            decode_flagged_all(&all).unwrap(),
            vec![
                FlaggedDatum::Int(5),
                FlaggedDatum::Bytes(b"a".to_vec()),
                FlaggedDatum::Nil,
                FlaggedDatum::Max
            ]
        );
        assert!(decode_flagged_all(&[]).unwrap().is_empty());
        // One byte short at the end.
        assert!(decode_flagged_all(&all[..all.len() - 3]).is_err());
    }

    #[test]
    fn malformed() {
        assert!(matches!(
            decode_flagged(&[]),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            decode_flagged(&[11]),
            Err(CodecError::Invalid { .. })
        ));
        assert!(matches!(
            decode_flagged(&[0xff]),
            Err(CodecError::Invalid { .. })
        ));
        assert!(matches!(
            decode_flagged(&[20, 0, 0]),
            Err(CodecError::Unsupported { .. })
        ));
        assert!(matches!(
            decode_flagged(&h("03 80 00")),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            decode_flagged(&h("06 05")),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            decode_flagged(&h("06 05 02 80 7b")),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            decode_flagged(&h("06 02 05 00")),
            Err(CodecError::Invalid { .. })
        ));
        assert!(matches!(
            decode_flagged(&h("0a")),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            decode_flagged(&h("01 61 00 00 00 00 00 00 00 f0")),
            Err(CodecError::Invalid { .. })
        ));
        assert!(skip_flagged(&h("01 61 00 00 00 00 00 00 01 f8")).is_err());
        assert_eq!(
            skip_flagged(&h("01 61 00 00 00 00 00 00 00 f8 07")).unwrap(),
            &[7u8][..]
        );
    }

    fn datum() -> impl Strategy<Value = FlaggedDatum> {
        prop_oneof![
            Just(FlaggedDatum::Nil),
            Just(FlaggedDatum::Max),
            proptest::collection::vec(any::<u8>(), 0..30).prop_map(FlaggedDatum::Bytes),
            any::<i64>().prop_map(FlaggedDatum::Int),
            any::<u64>().prop_map(FlaggedDatum::Uint),
            any::<f64>()
                .prop_filter("nan or -0", |f| !f.is_nan()
                    && f.to_bits() != (-0.0f64).to_bits())
                .prop_map(FlaggedDatum::Float),
            any::<i64>().prop_map(FlaggedDatum::Duration),
            (1u8..=65, 0u8..=30)
                .prop_filter("frac <= precision", |(p, f)| f <= p)
                .prop_flat_map(|(p, f)| {
                    let n = decimal_bin_size(p, f).unwrap();
                    proptest::collection::vec(any::<u8>(), n..=n).prop_map(move |bin| {
                        FlaggedDatum::Decimal {
                            precision: p,
                            frac: f,
                            bin,
                        }
                    })
                }),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(ds in proptest::collection::vec(datum(), 0..6)) {
            let mut k = Vec::new();
            let mut v = Vec::new();
            for d in &ds {
                encode_key_flagged(&mut k, d);
                encode_value_flagged(&mut v, d);
            }
            prop_assert_eq!(&decode_flagged_all(&k).unwrap(), &ds);
            prop_assert_eq!(&decode_flagged_all(&v).unwrap(), &ds);
            let mut rest = &k[..];
            for _ in &ds {
                rest = skip_flagged(rest).unwrap();
            }
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn key_form_preserves_order(a: i64, b: i64, x in proptest::collection::vec(any::<u8>(), 0..20),
                                    y in proptest::collection::vec(any::<u8>(), 0..20)) {
            let (ka, kb) = (key(&FlaggedDatum::Int(a)), key(&FlaggedDatum::Int(b)));
            prop_assert_eq!(a.cmp(&b), ka.cmp(&kb));
            let (kx, ky) = (key(&FlaggedDatum::Bytes(x.clone())), key(&FlaggedDatum::Bytes(y.clone())));
            prop_assert_eq!(x.cmp(&y), kx.cmp(&ky));
        }

        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_flagged(&input);
            let _ = decode_flagged_all(&input);
            let _ = skip_flagged(&input);
        }

        #[test]
        fn flag_then_random_never_panics(flag in prop_oneof![0u8..=10, Just(20u8), Just(250u8)],
                                         input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = vec![flag];
            b.extend_from_slice(&input);
            let _ = decode_flagged(&b);
            let _ = decode_flagged_all(&b);
            let _ = skip_flagged(&b);
        }
    }
}
