//! Fixed-width comparable numbers and Go-style varints.
//!
//! TiDB puts integers into keys so that a byte-wise comparison of keys orders them like the
//! numbers themselves: that is what lets TiKV split tables into ranges and what lets Tidal
//! intersect spans with regions without decoding anything. Values (not keys) use the shorter
//! varints of Go's `encoding/binary`. Both families live here, with decoders that return the
//! unread rest of the input so callers can walk concatenations.

use crate::error::CodecError;

const SIGN_MASK: u64 = 0x8000_0000_0000_0000;

/// Most bytes a LEB128 encoding of a `u64` can take.
pub const MAX_VARINT_LEN: usize = 10;

fn read_u64_be<'a>(what: &'static str, input: &'a [u8]) -> Result<(u64, &'a [u8]), CodecError> {
    match input.split_first_chunk::<8>() {
        Some((head, rest)) => Ok((u64::from_be_bytes(*head), rest)),
        None => Err(CodecError::Truncated {
            what,
            needed: 8,
            available: input.len(),
        }),
    }
}

/// Appends the comparable form of a signed integer: the sign bit flipped, 8 bytes big-endian.
pub fn encode_int(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&((v as u64) ^ SIGN_MASK).to_be_bytes());
}

/// Reads a comparable signed integer written by [`encode_int`]; returns it and the rest.
pub fn decode_int(input: &[u8]) -> Result<(i64, &[u8]), CodecError> {
    let (u, rest) = read_u64_be("comparable int", input)?;
    Ok(((u ^ SIGN_MASK) as i64, rest))
}

/// Appends the descending comparable form of a signed integer (the bitwise NOT of [`encode_int`]).
pub fn encode_int_desc(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&(!((v as u64) ^ SIGN_MASK)).to_be_bytes());
}

/// Reads a descending comparable signed integer written by [`encode_int_desc`].
pub fn decode_int_desc(input: &[u8]) -> Result<(i64, &[u8]), CodecError> {
    let (u, rest) = read_u64_be("comparable int (desc)", input)?;
    Ok(((!u ^ SIGN_MASK) as i64, rest))
}

/// Appends an unsigned integer as 8 bytes big-endian (already comparable).
pub fn encode_uint(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Reads an 8-byte big-endian unsigned integer written by [`encode_uint`].
pub fn decode_uint(input: &[u8]) -> Result<(u64, &[u8]), CodecError> {
    read_u64_be("comparable uint", input)
}

/// Appends the descending form of an unsigned integer (its bitwise NOT, big-endian).
/// TiKV appends MVCC timestamps to keys this way.
pub fn encode_uint_desc(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&(!v).to_be_bytes());
}

/// Reads a descending unsigned integer written by [`encode_uint_desc`].
pub fn decode_uint_desc(input: &[u8]) -> Result<(u64, &[u8]), CodecError> {
    let (u, rest) = read_u64_be("comparable uint (desc)", input)?;
    Ok((!u, rest))
}

/// The order-preserving `u64` image of a float, as TiDB computes it: non-negative values (and
/// `-0.0`, which compares equal to `0.0`) get the sign bit set, negative values are inverted.
fn float_to_cmp(v: f64) -> u64 {
    let u = v.to_bits();
    // Branch on the sign bit, not on `v >= 0.0`: that comparison is false for every NaN, which
    // used to turn a positive NaN into a tiny denormal on the way back. Both zeros encode as
    // `+0.0` (TiDB's normalization).
    if v == 0.0 {
        SIGN_MASK
    } else if u & SIGN_MASK == 0 {
        u | SIGN_MASK
    } else {
        !u
    }
}

fn cmp_to_float(u: u64) -> f64 {
    if u & SIGN_MASK != 0 {
        f64::from_bits(u & !SIGN_MASK)
    } else {
        f64::from_bits(!u)
    }
}

/// Appends the comparable form of a double (8 bytes). `-0.0` is written like `0.0`, so it
/// decodes as `0.0`, as in TiDB; NaN has no defined place in the order.
pub fn encode_float(buf: &mut Vec<u8>, v: f64) {
    encode_uint(buf, float_to_cmp(v));
}

/// Reads a comparable double written by [`encode_float`].
pub fn decode_float(input: &[u8]) -> Result<(f64, &[u8]), CodecError> {
    let (u, rest) = read_u64_be("comparable float", input)?;
    Ok((cmp_to_float(u), rest))
}

/// Appends an unsigned LEB128 varint (Go `binary.PutUvarint`): 7 bits per byte, low first.
pub fn encode_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads an unsigned LEB128 varint. Rejects encodings longer than 10 bytes and values that do
/// not fit in a `u64`, like Go's `binary.Uvarint`.
pub fn decode_uvarint(input: &[u8]) -> Result<(u64, &[u8]), CodecError> {
    let mut v: u64 = 0;
    for (i, &b) in input.iter().enumerate() {
        if i == MAX_VARINT_LEN - 1 && b > 1 {
            return Err(CodecError::invalid("uvarint", "value overflows u64"));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            // `i < MAX_VARINT_LEN`, so `i + 1 <= input.len()`.
            let rest = input.get(i + 1..).unwrap_or_default();
            return Ok((v, rest));
        }
        if i + 1 >= MAX_VARINT_LEN {
            return Err(CodecError::invalid("uvarint", "longer than 10 bytes"));
        }
    }
    Err(CodecError::Truncated {
        what: "uvarint",
        needed: input.len() + 1,
        available: input.len(),
    })
}

/// Appends a signed zigzag varint (Go `binary.PutVarint`).
pub fn encode_varint(buf: &mut Vec<u8>, v: i64) {
    let zz = ((v as u64) << 1) ^ ((v >> 63) as u64);
    encode_uvarint(buf, zz);
}

/// Reads a signed zigzag varint written by [`encode_varint`].
pub fn decode_varint(input: &[u8]) -> Result<(i64, &[u8]), CodecError> {
    let (zz, rest) = decode_uvarint(input).map_err(|e| rename(e, "varint"))?;
    let v = ((zz >> 1) as i64) ^ -((zz & 1) as i64);
    Ok((v, rest))
}

fn rename(e: CodecError, what: &'static str) -> CodecError {
    match e {
        CodecError::Truncated {
            needed, available, ..
        } => CodecError::Truncated {
            what,
            needed,
            available,
        },
        CodecError::Invalid { detail, .. } => CodecError::Invalid { what, detail },
        CodecError::Unsupported { detail, .. } => CodecError::Unsupported { what, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc<T: Copy>(f: fn(&mut Vec<u8>, T), v: T) -> Vec<u8> {
        let mut b = Vec::new();
        f(&mut b, v);
        b
    }

    #[test]
    fn fixed_vectors() {
        assert_eq!(enc(encode_int, 0), hex::decode("8000000000000000").unwrap());
        assert_eq!(enc(encode_int, 1), hex::decode("8000000000000001").unwrap());
        assert_eq!(
            enc(encode_int, -1),
            hex::decode("7fffffffffffffff").unwrap()
        );
        assert_eq!(enc(encode_int, i64::MIN), vec![0; 8]);
        assert_eq!(
            enc(encode_int_desc, 1),
            hex::decode("7ffffffffffffffe").unwrap()
        );
        assert_eq!(
            enc(encode_uint, 0x73),
            hex::decode("0000000000000073").unwrap()
        );
        assert_eq!(enc(encode_uint_desc, 0), vec![0xff; 8]);
        assert_eq!(
            enc(encode_float, 0.0),
            hex::decode("8000000000000000").unwrap()
        );
        assert_eq!(
            enc(encode_float, -0.0),
            hex::decode("8000000000000000").unwrap()
        );
        assert_eq!(
            enc(encode_float, 1.0),
            hex::decode("bff0000000000000").unwrap()
        );
        assert_eq!(
            enc(encode_float, -1.0),
            hex::decode("400fffffffffffff").unwrap()
        );
        assert_eq!(enc(encode_uvarint, 300), vec![0xac, 0x02]);
        assert_eq!(enc(encode_uvarint, u64::MAX), {
            let mut v = vec![0xff; 9];
            v.push(0x01);
            v
        });
        assert_eq!(enc(encode_varint, -1), vec![0x01]);
        assert_eq!(enc(encode_varint, 1), vec![0x02]);
        assert_eq!(enc(encode_varint, -64), vec![0x7f]);
        assert_eq!(enc(encode_varint, 64), vec![0x80, 0x01]);
        assert_eq!(enc(encode_varint, i64::MIN), {
            let mut v = vec![0xff; 9];
            v.push(0x01);
            v
        });
    }

    #[test]
    fn decoders_return_rest() {
        let mut b = enc(encode_int, -5);
        b.extend_from_slice(&[1, 2]);
        assert_eq!(decode_int(&b).unwrap(), (-5, &[1u8, 2][..]));
        assert_eq!(decode_uvarint(&[0xac, 0x02, 9]).unwrap(), (300, &[9u8][..]));
    }

    #[test]
    fn malformed() {
        assert!(matches!(
            decode_int(&[0; 7]),
            Err(CodecError::Truncated {
                needed: 8,
                available: 7,
                ..
            })
        ));
        assert!(decode_uint(&[]).is_err());
        assert!(decode_float(&[1, 2, 3]).is_err());
        assert!(decode_int_desc(&[0; 3]).is_err());
        assert!(decode_uint_desc(&[0; 3]).is_err());
        assert!(matches!(
            decode_uvarint(&[]),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            decode_uvarint(&[0x80, 0x80]),
            Err(CodecError::Truncated { .. })
        ));
        // 10th byte > 1 overflows.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert!(matches!(
            decode_uvarint(&over),
            Err(CodecError::Invalid { .. })
        ));
        // 11 bytes.
        let mut long = vec![0x80; 10];
        long.push(0x00);
        assert!(matches!(
            decode_uvarint(&long),
            Err(CodecError::Invalid { .. })
        ));
        assert!(matches!(
            decode_varint(&[0x80]),
            Err(CodecError::Truncated { what: "varint", .. })
        ));
    }

    proptest! {
        #[test]
        fn int_round_trip_and_order(a: i64, b: i64) {
            let (ea, eb) = (enc(encode_int, a), enc(encode_int, b));
            prop_assert_eq!(decode_int(&ea).unwrap(), (a, &[][..]));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
            let (da, db) = (enc(encode_int_desc, a), enc(encode_int_desc, b));
            prop_assert_eq!(decode_int_desc(&da).unwrap(), (a, &[][..]));
            prop_assert_eq!(a.cmp(&b), db.cmp(&da));
        }

        #[test]
        fn uint_round_trip_and_order(a: u64, b: u64) {
            let (ea, eb) = (enc(encode_uint, a), enc(encode_uint, b));
            prop_assert_eq!(decode_uint(&ea).unwrap(), (a, &[][..]));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
            let (da, db) = (enc(encode_uint_desc, a), enc(encode_uint_desc, b));
            prop_assert_eq!(decode_uint_desc(&da).unwrap(), (a, &[][..]));
            prop_assert_eq!(a.cmp(&b), db.cmp(&da));
        }

        #[test]
        fn float_round_trip_and_order(a in any::<f64>().prop_filter("nan", |f| !f.is_nan()),
                                      b in any::<f64>().prop_filter("nan", |f| !f.is_nan())) {
            let (ea, eb) = (enc(encode_float, a), enc(encode_float, b));
            let (d, rest) = decode_float(&ea).unwrap();
            prop_assert!(rest.is_empty());
            let want = if a == 0.0 { 0.0f64.to_bits() } else { a.to_bits() };
            prop_assert_eq!(d.to_bits(), want);
            prop_assert_eq!(a.partial_cmp(&b), Some(ea.cmp(&eb)));
        }

        #[test]
        fn varint_round_trip(a: i64, u: u64) {
            let e = enc(encode_varint, a);
            prop_assert!(e.len() <= MAX_VARINT_LEN);
            prop_assert_eq!(decode_varint(&e).unwrap(), (a, &[][..]));
            let e = enc(encode_uvarint, u);
            prop_assert!(e.len() <= MAX_VARINT_LEN);
            prop_assert_eq!(decode_uvarint(&e).unwrap(), (u, &[][..]));
        }

        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_int(&input);
            let _ = decode_int_desc(&input);
            let _ = decode_uint(&input);
            let _ = decode_uint_desc(&input);
            let _ = decode_float(&input);
            let _ = decode_varint(&input);
            let _ = decode_uvarint(&input);
        }
    }

    /// Regression (found by the `keys` fuzz target): a positive NaN was encoded as if negative
    /// and decoded as the denormal 1.1e-308 instead of NaN.
    #[test]
    fn regression_positive_nan_round_trips_as_nan() {
        for nan in [f64::NAN, -f64::NAN, f64::from_bits(0x7ff8_0000_0000_0001)] {
            let mut buf = Vec::new();
            encode_float(&mut buf, nan);
            let (back, rest) = decode_float(&buf).unwrap();
            assert!(rest.is_empty());
            assert_eq!(
                back.to_bits(),
                nan.to_bits(),
                "{nan:?} came back as {back:?}"
            );
        }
        let mut zero = Vec::new();
        encode_float(&mut zero, -0.0);
        assert_eq!(decode_float(&zero).unwrap().0.to_bits(), 0.0f64.to_bits());
    }
}
