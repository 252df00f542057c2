//! Memcomparable ("encoded") bytes and compact bytes.
//!
//! TiKV stores every TiDB key in the memcomparable form: the raw key cut into 8-byte groups, each
//! followed by a marker byte, so that byte-wise order of encoded keys equals the order of raw keys
//! and no encoded key is a prefix of another. PD region boundaries and CDC request ranges are in
//! this encoded form, while CDC row events carry raw keys (wire.md §4.4), so Tidal converts in both
//! directions. Compact bytes (a varint length and the bytes) are the shorter, non-comparable form
//! used inside values.

use crate::codec::number::{decode_varint, encode_varint};
use crate::error::CodecError;

const GROUP_SIZE: usize = 8;
const MARKER: u8 = 0xFF;
const PAD: u8 = 0x00;

/// Length of the memcomparable encoding of `data_len` raw bytes: `(len / 8 + 1) * 9`.
pub fn encoded_bytes_len(data_len: usize) -> usize {
    (data_len / GROUP_SIZE + 1) * (GROUP_SIZE + 1)
}

fn encode_groups(buf: &mut Vec<u8>, data: &[u8], desc: bool) {
    let start = buf.len();
    buf.reserve(encoded_bytes_len(data.len()));
    let mut chunks = data.chunks_exact(GROUP_SIZE);
    for chunk in &mut chunks {
        buf.extend_from_slice(chunk);
        buf.push(MARKER);
    }
    let tail = chunks.remainder();
    let pad = GROUP_SIZE - tail.len();
    buf.extend_from_slice(tail);
    buf.extend(std::iter::repeat_n(PAD, pad));
    // `pad` is in 1..=8, so the marker is in 0xF7..=0xFE.
    buf.push(MARKER - pad as u8);
    if desc {
        for b in &mut buf[start..] {
            *b = !*b;
        }
    }
}

/// Appends the memcomparable encoding of `data` (TiDB `codec.EncodeBytes`).
///
/// Every 8-byte group is followed by `0xFF`; the final group, always present, is zero-padded and
/// followed by `0xFF − pad`. `[]` becomes `00×8 F7` and `[1,2,3]` becomes `01 02 03 00×5 FA`.
pub fn encode_bytes(buf: &mut Vec<u8>, data: &[u8]) {
    encode_groups(buf, data, false);
}

/// Appends the descending memcomparable encoding of `data`: [`encode_bytes`] with every byte
/// inverted.
pub fn encode_bytes_desc(buf: &mut Vec<u8>, data: &[u8]) {
    encode_groups(buf, data, true);
}

/// Walks one memcomparable value at the start of `input`, appending the raw bytes to `out` when
/// given. Returns the number of encoded bytes consumed.
pub(crate) fn scan_bytes(
    input: &[u8],
    desc: bool,
    mut out: Option<&mut Vec<u8>>,
) -> Result<usize, CodecError> {
    let what = if desc {
        "memcomparable bytes (desc)"
    } else {
        "memcomparable bytes"
    };
    let flip = if desc { 0xFF } else { 0x00 };
    let mut offset = 0usize;
    loop {
        let group = input
            .get(offset..)
            .and_then(|rest| rest.first_chunk::<{ GROUP_SIZE + 1 }>())
            .ok_or(CodecError::Truncated {
                what,
                needed: offset.saturating_add(GROUP_SIZE + 1),
                available: input.len(),
            })?;
        let (data, marker) = group.split_at(GROUP_SIZE);
        let marker = marker.first().map_or(0, |m| m ^ flip);
        let pad = usize::from(MARKER - marker);
        if pad > GROUP_SIZE {
            return Err(CodecError::invalid(
                what,
                format!(
                    "bad group marker {marker:#04x} at offset {}",
                    offset + GROUP_SIZE
                ),
            ));
        }
        let (real, padding) = data.split_at(GROUP_SIZE - pad);
        if padding.iter().any(|&b| b ^ flip != PAD) {
            return Err(CodecError::invalid(
                what,
                format!("non-zero padding in the group at offset {offset}"),
            ));
        }
        if let Some(out) = out.as_deref_mut() {
            out.extend(real.iter().map(|b| b ^ flip));
        }
        offset += GROUP_SIZE + 1;
        if pad != 0 {
            return Ok(offset);
        }
    }
}

/// Reads one memcomparable value written by [`encode_bytes`]; returns the raw bytes and the
/// rest of the input. Checks every marker and that the padding is zero.
pub fn decode_bytes(input: &[u8]) -> Result<(Vec<u8>, &[u8]), CodecError> {
    let mut out = Vec::new();
    let used = scan_bytes(input, false, Some(&mut out))?;
    Ok((out, input.get(used..).unwrap_or_default()))
}

/// Reads one descending memcomparable value written by [`encode_bytes_desc`].
pub fn decode_bytes_desc(input: &[u8]) -> Result<(Vec<u8>, &[u8]), CodecError> {
    let mut out = Vec::new();
    let used = scan_bytes(input, true, Some(&mut out))?;
    Ok((out, input.get(used..).unwrap_or_default()))
}

/// Appends compact bytes: the length as a zigzag varint, then the bytes (not comparable).
pub fn encode_compact_bytes(buf: &mut Vec<u8>, data: &[u8]) {
    // A slice never holds more than `isize::MAX` bytes, so the length fits in an i64.
    encode_varint(buf, data.len() as i64);
    buf.extend_from_slice(data);
}

/// Reads compact bytes written by [`encode_compact_bytes`]; returns the bytes and the rest.
pub fn decode_compact_bytes(input: &[u8]) -> Result<(Vec<u8>, &[u8]), CodecError> {
    let (len, rest) = decode_varint(input)?;
    let len = usize::try_from(len)
        .map_err(|_| CodecError::invalid("compact bytes", format!("negative length {len}")))?;
    CodecError::ensure_len("compact bytes", rest, len)?;
    let (data, rest) = rest.split_at(len);
    Ok((data.to_vec(), rest))
}

/// Encodes a whole raw TiKV key into its memcomparable form (the form of PD region boundaries
/// and of CDC request ranges).
pub fn encode_key(raw: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(encoded_bytes_len(raw.len()));
    encode_bytes(&mut buf, raw);
    buf
}

/// Decodes a whole memcomparable key back into the raw key. Trailing bytes after the encoded
/// value (such as an MVCC timestamp) are an error: use [`decode_bytes`] to keep them.
pub fn decode_key(encoded: &[u8]) -> Result<Vec<u8>, CodecError> {
    let (raw, rest) = decode_bytes(encoded)?;
    if !rest.is_empty() {
        return Err(CodecError::invalid(
            "encoded key",
            format!("{} trailing bytes after the encoded key", rest.len()),
        ));
    }
    Ok(raw)
}

/// Test helper shared by the model's codec tests: the bytes of a hex string written with spaces
/// between bytes (`"6d 44 42"`), as the reference examples print them.
#[cfg(test)]
pub(crate) fn spaced_hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("test hex")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use spaced_hex as h;

    #[test]
    fn wire_examples() {
        assert_eq!(encode_key(&[]), h("00 00 00 00 00 00 00 00 f7"));
        assert_eq!(encode_key(&[1, 2, 3]), h("01 02 03 00 00 00 00 00 fa"));
        assert_eq!(
            encode_key(b"12345678"),
            h("31 32 33 34 35 36 37 38 ff 00 00 00 00 00 00 00 00 f7")
        );
        assert_eq!(
            encode_key(b"123456789"),
            h("31 32 33 34 35 36 37 38 ff 39 00 00 00 00 00 00 00 f8")
        );
        assert_eq!(encoded_bytes_len(0), 9);
        assert_eq!(encoded_bytes_len(7), 9);
        assert_eq!(encoded_bytes_len(8), 18);
        let mut d = Vec::new();
        encode_bytes_desc(&mut d, &[1, 2, 3]);
        assert_eq!(d, h("fe fd fc ff ff ff ff ff 05"));
        assert_eq!(decode_bytes_desc(&d).unwrap(), (vec![1, 2, 3], &[][..]));
    }

    #[test]
    fn compact_bytes_vector() {
        let mut b = Vec::new();
        encode_compact_bytes(&mut b, b"abc");
        assert_eq!(b, h("06 61 62 63"));
        b.push(0x99);
        assert_eq!(
            decode_compact_bytes(&b).unwrap(),
            (b"abc".to_vec(), &[0x99u8][..])
        );
    }

    #[test]
    fn malformed() {
        // Truncated.
        assert!(matches!(
            decode_bytes(&[]),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            decode_bytes(&h("01 02 03 00 00 00 00 00")),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            decode_bytes(&h("31 32 33 34 35 36 37 38 ff")),
            Err(CodecError::Truncated { .. })
        ));
        // Marker below 0xF7.
        assert!(matches!(
            decode_bytes(&h("00 00 00 00 00 00 00 00 f6")),
            Err(CodecError::Invalid { .. })
        ));
        // Non-zero padding.
        assert!(matches!(
            decode_bytes(&h("01 02 03 00 00 00 01 00 fa")),
            Err(CodecError::Invalid { .. })
        ));
        // decode_key rejects trailing bytes.
        assert!(decode_key(&h("01 02 03 00 00 00 00 00 fa 00")).is_err());
        assert_eq!(
            decode_key(&h("01 02 03 00 00 00 00 00 fa")).unwrap(),
            vec![1, 2, 3]
        );
        // Compact bytes: negative length, length beyond the input.
        assert!(matches!(
            decode_compact_bytes(&[0x01]),
            Err(CodecError::Invalid { .. })
        ));
        assert!(matches!(
            decode_compact_bytes(&[0x08, 1, 2]),
            Err(CodecError::Truncated {
                needed: 4,
                available: 2,
                ..
            })
        ));
        assert!(decode_compact_bytes(&[]).is_err());
    }

    proptest! {
        #[test]
        fn bytes_round_trip_and_order(a in proptest::collection::vec(any::<u8>(), 0..40),
                                      b in proptest::collection::vec(any::<u8>(), 0..40),
                                      tail in proptest::collection::vec(any::<u8>(), 0..5)) {
            let ea = encode_key(&a);
            let eb = encode_key(&b);
            prop_assert_eq!(ea.len(), encoded_bytes_len(a.len()));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
            prop_assert_eq!(decode_key(&ea).unwrap(), a.clone());
            let mut with_tail = ea.clone();
            with_tail.extend_from_slice(&tail);
            let (d, rest) = decode_bytes(&with_tail).unwrap();
            prop_assert_eq!(&d, &a);
            prop_assert_eq!(rest, &tail[..]);

            let mut da = Vec::new();
            encode_bytes_desc(&mut da, &a);
            let mut db = Vec::new();
            encode_bytes_desc(&mut db, &b);
            prop_assert_eq!(a.cmp(&b), db.cmp(&da));
            prop_assert_eq!(decode_bytes_desc(&da).unwrap(), (a.clone(), &[][..]));

            let mut c = Vec::new();
            encode_compact_bytes(&mut c, &a);
            c.extend_from_slice(&tail);
            let (d, rest) = decode_compact_bytes(&c).unwrap();
            prop_assert_eq!(d, a);
            prop_assert_eq!(rest, &tail[..]);
        }

        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_bytes(&input);
            let _ = decode_bytes_desc(&input);
            let _ = decode_compact_bytes(&input);
            let _ = decode_key(&input);
        }
    }
}
