//! End-to-end checks of the key codecs through the public API: the worked examples of the wire
//! fact sheet, the raw/encoded round trip a CDC client performs, and one "random bytes never
//! panic" sweep over every decoder.

use proptest::prelude::*;
use tidal_model::codec::bytes::{
    decode_bytes, decode_bytes_desc, decode_compact_bytes, decode_key, encode_key,
};
use tidal_model::codec::datum::{decode_flagged, decode_flagged_all, skip_flagged};
use tidal_model::codec::number::*;
use tidal_model::meta;
use tidal_model::span::TableSpan;
use tidal_model::tablecodec::{self, Handle};
use tidal_model::ts::Ts;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

#[test]
fn row_event_key_to_span() {
    // A CDC row carries a raw key; the span and regions are encoded.
    let raw = tablecodec::encode_row_key_int(100, 1);
    assert_eq!(
        raw,
        h("74 80 00 00 00 00 00 00 64 5f 72 80 00 00 00 00 00 00 01")
    );
    let span = TableSpan::for_table(100);
    let encoded = encode_key(&raw);
    assert!(span.contains_encoded_key(&encoded));
    assert_eq!(decode_key(&encoded).unwrap(), raw);
    assert_eq!(
        tablecodec::decode_row_key(&raw).unwrap(),
        (100, Handle::Int(1))
    );

    // With a keyspace prefix, the raw key is stripped before decoding.
    let mut prefixed = tablecodec::keyspace_prefix(7).to_vec();
    prefixed.extend_from_slice(&raw);
    assert_eq!(
        tablecodec::decode_row_key(tablecodec::strip_keyspace_prefix(&prefixed)).unwrap(),
        (100, Handle::Int(1))
    );
}

#[test]
fn meta_examples_and_encoded_form() {
    let k = meta::hash_field_key(&meta::db_key(2), &meta::table_field(5));
    assert_eq!(
        k,
        h("6d 44 42 3a 32 00 00 00 00 fb 00 00 00 00 00 00 00 68 54 61 62 6c 65 3a 35 00 fe")
    );
    let (lo, hi) = meta::meta_span_encoded();
    let enc = encode_key(&k);
    assert!(lo <= enc && enc < hi);
    assert_eq!(
        meta::string_key(meta::SCHEMA_VERSION_KEY),
        h(
            "6d 53 63 68 65 6d 61 56 65 ff 72 73 69 6f 6e 4b 65 79 ff 00 00 00 00 00 00 00 00 f7 00 00 00 00 00 00 00 73"
        )
    );
}

#[test]
fn tso_example() {
    let ts = Ts::compose(1_700_000_000_000, 5);
    assert_eq!(ts.0, 445_644_800_000_000_005);
    assert_eq!(ts.to_string(), "2023-11-14 22:13:20.000");
}

proptest! {
    #[test]
    fn every_decoder_survives_random_bytes(input in proptest::collection::vec(any::<u8>(), 0..64)) {
        let i = &input[..];
        let _ = decode_int(i);
        let _ = decode_int_desc(i);
        let _ = decode_uint(i);
        let _ = decode_uint_desc(i);
        let _ = decode_float(i);
        let _ = decode_varint(i);
        let _ = decode_uvarint(i);
        let _ = decode_bytes(i);
        let _ = decode_bytes_desc(i);
        let _ = decode_compact_bytes(i);
        let _ = decode_key(i);
        let _ = decode_flagged(i);
        let _ = decode_flagged_all(i);
        let _ = skip_flagged(i);
        let _ = tablecodec::decode_row_key(i);
        let _ = tablecodec::decode_index_key(i);
        let _ = tablecodec::decode_table_id(i);
        let _ = tablecodec::strip_keyspace_prefix(i);
        let _ = meta::decode_string_key(i);
        let _ = meta::decode_hash_field_key(i);
        let _ = meta::decode_list_item_key(i);
        let _ = meta::parse_db_key(i);
        let _ = meta::parse_table_field(i);
        let _ = Handle::Common(input.clone()).common_datums();
        let span = TableSpan::for_table(1);
        let _ = span.intersect(i, i);
        let _ = span.split_at(i);
    }
}
