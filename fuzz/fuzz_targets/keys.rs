//! Memcomparable keys: `codec::bytes`, `codec::number`, `codec::datum`, `tablecodec` row and
//! index keys and `meta` keys.
//!
//! Byte 0 picks the decoder; the rest is its input. Every decoder must return an error rather
//! than panic, and what decodes must round-trip:
//! * canonical encodings (memcomparable bytes, fixed-width numbers, row/index/meta keys) must
//!   re-encode to exactly the bytes that were consumed;
//! * varints (which Go also accepts in non-minimal form) must re-decode to the same value;
//! * flagged datums must decode to the same datum from both their key and their value form
//!   (after the one normalization the codec documents: -0.0 is written as 0.0).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidal_fuzz::has_nan;
use tidal_model::codec::bytes::{
    decode_bytes, decode_bytes_desc, decode_compact_bytes, decode_key, encode_bytes,
    encode_bytes_desc, encode_compact_bytes, encode_key,
};
use tidal_model::codec::datum::{
    decode_flagged, decode_flagged_all, encode_key_flagged, encode_value_flagged, skip_flagged,
};
use tidal_model::codec::number::*;
use tidal_model::{meta, tablecodec};

fn consumed<'a>(input: &'a [u8], rest: &[u8]) -> &'a [u8] {
    &input[..input.len() - rest.len()]
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    match sel % 12 {
        0 => {
            if let Ok((raw, rest)) = decode_bytes(input) {
                let mut enc = Vec::new();
                encode_bytes(&mut enc, &raw);
                assert_eq!(
                    enc,
                    consumed(input, rest),
                    "memcomparable bytes not canonical"
                );
            }
            if let Ok((raw, rest)) = decode_bytes_desc(input) {
                let mut enc = Vec::new();
                encode_bytes_desc(&mut enc, &raw);
                assert_eq!(enc, consumed(input, rest), "desc bytes not canonical");
            }
        }
        1 => {
            if let Ok(raw) = decode_key(input) {
                assert_eq!(encode_key(&raw), input, "decode_key/encode_key round trip");
            }
            if let Ok((raw, rest)) = decode_compact_bytes(input) {
                let mut enc = Vec::new();
                encode_compact_bytes(&mut enc, &raw);
                let (again, rest2) = decode_compact_bytes(&enc).expect("compact bytes re-decode");
                assert_eq!(again, raw);
                assert!(rest2.is_empty());
                assert!(input.len() - rest.len() >= raw.len());
            }
        }
        2 => {
            if let Ok((v, rest)) = decode_int(input) {
                let mut enc = Vec::new();
                encode_int(&mut enc, v);
                assert_eq!(enc, consumed(input, rest));
            }
            if let Ok((v, rest)) = decode_int_desc(input) {
                let mut enc = Vec::new();
                encode_int_desc(&mut enc, v);
                assert_eq!(enc, consumed(input, rest));
            }
            if let Ok((v, rest)) = decode_uint(input) {
                let mut enc = Vec::new();
                encode_uint(&mut enc, v);
                assert_eq!(enc, consumed(input, rest));
            }
            if let Ok((v, rest)) = decode_uint_desc(input) {
                let mut enc = Vec::new();
                encode_uint_desc(&mut enc, v);
                assert_eq!(enc, consumed(input, rest));
            }
            if let Ok((v, rest)) = decode_float(input)
                && !v.is_nan()
                && v.to_bits() != (-0.0f64).to_bits()
            {
                let mut enc = Vec::new();
                encode_float(&mut enc, v);
                assert_eq!(enc, consumed(input, rest), "float {v:?} not bit-exact");
            }
        }
        3 => {
            if let Ok((v, rest)) = decode_uvarint(input) {
                let used = input.len() - rest.len();
                assert!(used <= MAX_VARINT_LEN);
                let mut enc = Vec::new();
                encode_uvarint(&mut enc, v);
                assert!(enc.len() <= used, "minimal uvarint longer than the input's");
                assert_eq!(decode_uvarint(&enc).map(|(v, r)| (v, r.len())), Ok((v, 0)));
            }
            if let Ok((v, rest)) = decode_varint(input) {
                let used = input.len() - rest.len();
                assert!(used <= MAX_VARINT_LEN);
                let mut enc = Vec::new();
                encode_varint(&mut enc, v);
                assert!(enc.len() <= used, "minimal varint longer than the input's");
                assert_eq!(decode_varint(&enc).map(|(v, r)| (v, r.len())), Ok((v, 0)));
            }
        }
        4 | 5 => {
            let skipped = skip_flagged(input).map(|r| r.len());
            let decoded = decode_flagged(input).map(|(_, r)| r.len());
            // skip_flagged accepts exactly what decode_flagged accepts, and skips as far.
            assert_eq!(
                skipped.ok(),
                decoded.ok(),
                "skip_flagged disagrees with decode_flagged"
            );
            if let Ok(all) = decode_flagged_all(input)
                && !has_nan(&all)
            {
                let mut key = Vec::new();
                let mut value = Vec::new();
                for d in &all {
                    encode_key_flagged(&mut key, d);
                    encode_value_flagged(&mut value, d);
                }
                let from_key = decode_flagged_all(&key).expect("key form re-decodes");
                let from_value = decode_flagged_all(&value).expect("value form re-decodes");
                // -0.0 is written as 0.0 (as TiDB does): compare with the normalized form.
                let want = format!("{from_key:?}");
                assert_eq!(format!("{from_key:?}"), want, "key form round trip");
                assert_eq!(format!("{from_value:?}"), want, "value form round trip");
            }
        }
        6 | 7 => {
            // Give most inputs a real record prefix so the handle decoder is reached.
            let mut key = input.to_vec();
            if sel & 0x10 == 0 {
                let id = i64::from(input.first().copied().unwrap_or(0));
                let mut k = tablecodec::record_prefix(id);
                k.extend_from_slice(input.get(1..).unwrap_or_default());
                key = k;
            }
            if let Ok((tid, handle)) = tablecodec::decode_row_key(&key) {
                assert_eq!(tablecodec::decode_table_id(&key), Ok(tid));
                assert!(tablecodec::is_record_key(&key));
                assert_eq!(
                    tablecodec::encode_row_key(tid, &handle),
                    key,
                    "row key round trip"
                );
                let _ = handle.common_datums();
            }
            if let Ok((tid, idx, values)) = tablecodec::decode_index_key(input) {
                assert_eq!(tablecodec::encode_index_key(tid, idx, values), input);
            }
            let _ = tablecodec::keyspace_id_of(input);
            let _ = tablecodec::strip_keyspace_prefix(input);
        }
        8 | 9 => {
            if let Ok((k, f)) = meta::decode_hash_field_key(input) {
                assert_eq!(
                    meta::hash_field_key(&k, &f),
                    input,
                    "meta hash key round trip"
                );
                let _ = meta::parse_db_key(&k);
                let _ = meta::parse_table_field(&f);
                let _ = meta::parse_history_job_field(&f);
            }
            if let Ok(k) = meta::decode_string_key(input) {
                assert_eq!(meta::string_key(&k), input, "meta string key round trip");
                let _ = meta::parse_diff_key(&k);
            }
            if let Ok((k, i)) = meta::decode_list_item_key(input) {
                assert_eq!(
                    meta::list_item_key(&k, i),
                    input,
                    "meta list key round trip"
                );
            }
        }
        _ => {
            // Meta keys with a real head, so the field part is what gets fuzzed.
            let split = usize::from(sel >> 4).min(input.len());
            let (k, f) = input.split_at(split);
            let mut raw = meta::hash_prefix(k);
            raw.extend_from_slice(f);
            if let Ok((k2, f2)) = meta::decode_hash_field_key(&raw) {
                assert_eq!(k2, k);
                assert_eq!(meta::hash_field_key(&k2, &f2), raw);
            }
        }
    }
});
