//! Row format v1: `decode_row_v1`, `datum_from_flagged_v1` with a type built from the input,
//! `decode_row_columns` and `decode_row` against realistic schemas.
//!
//! Input layout: bytes 0..3 choose a column type and a schema, the rest is the row value.
//!
//! Properties beyond "no panic":
//! * a v1 row that decodes re-encodes (`encode_row_v1`, after typing each datum with the
//!   column type) to bytes whose decode + encode is a fixed point (the first pass may round a
//!   decimal to the column's scale or write -0.0 as 0.0);
//! * `decode_row_columns` agrees with `decode_row_v1` on which columns are present (when the
//!   value is not v2 and has no duplicate ids);
//! * a whole row decoded with a schema re-encodes to a row that is such a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tidal_fuzz::{field_type_from, fixture_tables, has_nan};
use tidal_model::Datum;
use tidal_model::rowcodec::{
    RowColumns, RowSlot, datum_from_flagged_v1, decode_row_columns, decode_row_v1, encode_row_v1,
};
use tidal_model::schema::{FieldType, HandleKind, TableInfo};
use tidal_model::{decode, tablecodec};

fn tables() -> &'static [TableInfo] {
    static T: OnceLock<Vec<TableInfo>> = OnceLock::new();
    T.get_or_init(fixture_tables)
}

fuzz_target!(|data: &[u8]| {
    let [sel, b1, b2, value @ ..] = data else {
        return;
    };
    let ft = field_type_from(*sel & 0x1f, *b1, *b2);

    if let Ok(cols) = decode_row_v1(value) {
        // Type every datum with the chosen column type; round trip those that type.
        let typed: Vec<(i64, Datum)> = cols
            .iter()
            .filter_map(|(id, d)| Some((*id, datum_from_flagged_v1(d.clone(), &ft).ok()?)))
            .collect();
        let triples: Vec<(i64, &Datum, &FieldType)> =
            typed.iter().map(|(id, d)| (*id, d, &ft)).collect();
        if !has_nan(&typed)
            && let Ok(enc) = encode_row_v1(&triples)
        {
            // The first encoding may normalize (a decimal rounded to the column's scale, -0.0
            // written as 0.0); from then on decode + encode must be a fixed point.
            let retype = |bytes: &[u8]| -> Vec<(i64, Datum)> {
                decode_row_v1(bytes)
                    .expect("encode_row_v1 output must decode")
                    .into_iter()
                    .map(|(id, f)| {
                        (
                            id,
                            datum_from_flagged_v1(f, &ft).expect("re-encoded datum must type"),
                        )
                    })
                    .collect()
            };
            let once = retype(&enc);
            assert_eq!(once.len(), typed.len(), "v1 round trip lost columns");
            let triples: Vec<(i64, &Datum, &FieldType)> =
                once.iter().map(|(id, d)| (*id, d, &ft)).collect();
            let enc2 = encode_row_v1(&triples).expect("a normalized row re-encodes");
            let twice = retype(&enc2);
            assert_eq!(
                format!("{twice:?}"),
                format!("{once:?}"),
                "v1 round trip is not stable"
            );
        }

        if value.first() != Some(&tidal_model::rowcodec::v2::CODEC_VER) {
            match decode_row_columns(value) {
                Ok(RowColumns::V1(sorted)) => {
                    assert_eq!(sorted.len(), cols.len());
                    let rc = RowColumns::V1(sorted);
                    for (id, d) in &cols {
                        let slot = rc.slot(*id);
                        match d {
                            tidal_model::codec::FlaggedDatum::Nil => {
                                assert_eq!(slot, RowSlot::Null)
                            }
                            // Debug form: NaN != NaN under PartialEq.
                            other => {
                                assert_eq!(format!("{slot:?}"), format!("{:?}", RowSlot::V1(other)))
                            }
                        }
                    }
                }
                Ok(RowColumns::V2(_)) => panic!("a v1 value parsed as v2"),
                // Duplicate column ids are refused by the combined parser only.
                Err(_) => {
                    let mut ids: Vec<i64> = cols.iter().map(|c| c.0).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    assert!(
                        ids.len() < cols.len(),
                        "decode_row_columns refused a good v1 row"
                    );
                }
            }
        }
    }

    let tables = tables();
    let table = &tables[usize::from(*b1) % tables.len()];
    let key = match table.handle_columns() {
        HandleKind::Common { .. } => tablecodec::encode_row_key_common(table.id, value),
        _ => tablecodec::encode_row_key_int(table.id, i64::from(*b2)),
    };
    if let Ok(datums) = decode::decode_row(table, &key, value) {
        let cols = table.public_columns();
        assert_eq!(datums.len(), cols.len(), "one datum per public column");
        let triples: Vec<(i64, &Datum, &FieldType)> = cols
            .iter()
            .zip(&datums)
            .map(|(c, d)| (c.id, d, &c.field_type))
            .collect();
        if !has_nan(&datums)
            && let Ok(enc) = encode_row_v1(&triples)
        {
            let again = decode::decode_row(table, &key, &enc)
                .expect("a re-encoded decoded row must decode");
            let triples: Vec<(i64, &Datum, &FieldType)> = cols
                .iter()
                .zip(&again)
                .map(|(c, d)| (c.id, d, &c.field_type))
                .collect();
            let enc2 = encode_row_v1(&triples).expect("a normalized row re-encodes");
            let third = decode::decode_row(table, &key, &enc2).expect("and decodes");
            assert_eq!(
                format!("{third:?}"),
                format!("{again:?}"),
                "row v1 round trip is not stable"
            );
        }
    }
});
