//! Row format v2: `RowV2::parse`, `decode_row_columns`, `decode_column_v2` for every type code,
//! and `decode_row` against realistic schemas.
//!
//! Input layout: byte 0 picks a schema / column type, bytes 1..3 complete the column type, the
//! rest is the row value (forced to start with the v2 codec byte 128 half of the time, so the
//! fuzzer spends its time inside the v2 parser).
//!
//! Properties beyond "no panic":
//! * a parsed row's not-null and null ids are strictly increasing and disjoint, and `get`
//!   answers exactly what `iter` lists;
//! * a column value that decodes re-encodes (`encode_column_v2`) to bytes that decode to the
//!   same value and re-encode to the same bytes (the encoder is the decoder's inverse on its
//!   own output);
//! * a row that decodes re-encodes (`encode_row_v2`) to a row that is a fixed point of
//!   decode + encode (the first pass may round a decimal to its column's scale).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tidal_fuzz::{field_type_from, fixture_tables, has_nan};
use tidal_model::rowcodec::{
    ColumnSlot, RowColumns, RowV2, decode_column_v2, decode_row_columns, encode_column_v2,
    encode_row_v2,
};
use tidal_model::schema::{FieldType, TableInfo};
use tidal_model::{decode, tablecodec};

fn tables() -> &'static [TableInfo] {
    static T: OnceLock<Vec<TableInfo>> = OnceLock::new();
    T.get_or_init(fixture_tables)
}

fn check_column(bytes: &[u8], ft: &FieldType) {
    let Ok(d) = decode_column_v2(bytes, ft) else {
        return;
    };
    if has_nan(&d) {
        return;
    }
    // Some decodable values have no encoding (e.g. a datum the column type cannot hold); that
    // is an error, never a panic.
    let Ok(enc) = encode_column_v2(&d, ft) else {
        return;
    };
    let d2 = decode_column_v2(&enc, ft).expect("encoder output must decode");
    let enc2 = encode_column_v2(&d2, ft).expect("re-encoding a decoded value");
    assert_eq!(enc, enc2, "v2 column round trip is not stable for {d:?}");
}

fn check_row(row: &RowV2<'_>) {
    let nn: Vec<i64> = row.not_null_ids().collect();
    let nl: Vec<i64> = row.null_ids().collect();
    assert_eq!(nn.len(), row.not_null_count());
    assert_eq!(nl.len(), row.null_count());
    assert!(
        nn.windows(2).all(|w| w[0] < w[1]),
        "not-null ids unsorted: {nn:?}"
    );
    assert!(
        nl.windows(2).all(|w| w[0] < w[1]),
        "null ids unsorted: {nl:?}"
    );
    for (id, slot) in row.iter() {
        assert_eq!(row.get(id), slot, "get({id}) disagrees with iter");
        match slot {
            ColumnSlot::Value(_) => assert!(nn.contains(&id)),
            ColumnSlot::Null => assert!(nl.contains(&id)),
            ColumnSlot::Absent => panic!("iter listed absent column {id}"),
        }
    }
    for id in &nn {
        assert!(!nl.contains(id), "column {id} both null and not null");
    }
}

fuzz_target!(|data: &[u8]| {
    let [sel, b1, b2, rest @ ..] = data else {
        return;
    };
    let mut value = rest.to_vec();
    if sel & 0x80 != 0 {
        value.insert(0, tidal_model::rowcodec::v2::CODEC_VER);
    }

    // One column of an arbitrary type.
    let ft = field_type_from(*sel & 0x1f, *b1, *b2);
    check_column(rest, &ft);

    // The row as a whole.
    if let Ok(row) = RowV2::parse(&value) {
        check_row(&row);
        let _ = row.checksum();
        let _ = row.is_large();
        // Every column's bytes through the column decoder with the chosen type.
        for (_, slot) in row.iter() {
            if let ColumnSlot::Value(b) = slot {
                check_column(b, &ft);
            }
        }
    }
    let _ = decode_row_columns(&value).map(|r| r.is_v2());

    // Against a real schema: the key is built for the table, so decoding reaches the columns.
    let tables = tables();
    let table = &tables[usize::from(*b1) % tables.len()];
    let key = match table.handle_columns() {
        tidal_model::schema::HandleKind::Common { .. } => {
            tablecodec::encode_row_key_common(table.id, &value)
        }
        _ => tablecodec::encode_row_key_int(table.id, i64::from(*b2)),
    };
    if let Ok(datums) = decode::decode_row(table, &key, &value) {
        let cols = table.public_columns();
        assert_eq!(datums.len(), cols.len(), "one datum per public column");
        // Re-encode the present columns and decode again: same datums.
        if let Ok(RowColumns::V2(_)) = decode_row_columns(&value) {
            let triples: Vec<(i64, &tidal_model::Datum, &FieldType)> = cols
                .iter()
                .zip(&datums)
                .map(|(c, d)| (c.id, d, &c.field_type))
                .collect();
            if !has_nan(&datums)
                && let Ok(enc) = encode_row_v2(&triples)
            {
                // The first encoding may normalize (a decimal rounded to the column's scale);
                // from then on the row must be a fixed point.
                let again = decode::decode_row(table, &key, &enc)
                    .expect("a re-encoded decoded row must decode");
                let triples: Vec<(i64, &tidal_model::Datum, &FieldType)> = cols
                    .iter()
                    .zip(&again)
                    .map(|(c, d)| (c.id, d, &c.field_type))
                    .collect();
                let enc2 = encode_row_v2(&triples).expect("a normalized row re-encodes");
                let third = decode::decode_row(table, &key, &enc2).expect("and decodes");
                assert_eq!(
                    format!("{third:?}"),
                    format!("{again:?}"),
                    "row v2 round trip is not stable"
                );
            }
        }
    }
});
