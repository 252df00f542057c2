//! Row codec acceptance tests: hand-written v2 rows decoded to exact values, round trips of v1
//! and v2 rows over every column type, malformed input rejected, random input never panicking.

use proptest::prelude::*;
use tidal_model::Datum;
use tidal_model::decimal::Decimal;
use tidal_model::json::Json;
use tidal_model::mysql::*;
use tidal_model::rowcodec::v2::{ColumnSlot, RowChecksum, RowV2};
use tidal_model::rowcodec::{
    RowSlot, decode_column_v2, decode_datum, decode_row_columns, decode_row_v1, encode_column_v2,
    encode_row_v1, encode_row_v2,
};
use tidal_model::schema::FieldType;
use tidal_model::time::{Duration, Time, TimeKind};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn ft(tp: u8) -> FieldType {
    FieldType {
        tp,
        ..FieldType::default()
    }
}

fn ft_with(tp: u8, flag: u32, flen: i64, decimal: i64) -> FieldType {
    FieldType {
        tp,
        flag,
        flen,
        decimal,
        ..FieldType::default()
    }
}

#[test]
fn hand_written_small_row() {
    // not-null ids [1, 2], null ids [3]; offsets [1, 3]; data 05 'a' 'b'.
    let row = h("80 00 0200 0100 01 02 03 0100 0300 05 6162");
    let r = RowV2::parse(&row).unwrap();
    assert!(!r.is_large());
    assert_eq!(r.get(1), ColumnSlot::Value(&[5][..]));
    assert_eq!(r.get(2), ColumnSlot::Value(&b"ab"[..]));
    assert_eq!(r.get(3), ColumnSlot::Null);
    assert_eq!(r.get(4), ColumnSlot::Absent);
    assert_eq!(r.get(-1), ColumnSlot::Absent);
    assert_eq!(r.not_null_ids().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(r.null_ids().collect::<Vec<_>>(), vec![3]);
    assert_eq!(r.iter().count(), 3);
    let cols = decode_row_columns(&row).unwrap();
    assert_eq!(cols.datum(1, &ft(TYPE_LONG)).unwrap(), Some(Datum::Int(5)));
    assert_eq!(
        cols.datum(2, &ft(TYPE_VARCHAR)).unwrap(),
        Some(Datum::Bytes(b"ab".to_vec()))
    );
    assert_eq!(cols.datum(3, &ft(TYPE_LONG)).unwrap(), Some(Datum::Null));
    assert_eq!(cols.datum(4, &ft(TYPE_LONG)).unwrap(), None);
    // Our encoder produces exactly these bytes.
    let enc = encode_row_v2(&[
        (3, &Datum::Null, &ft(TYPE_LONG)),
        (2, &Datum::Bytes(b"ab".to_vec()), &ft(TYPE_VARCHAR)),
        (1, &Datum::Int(5), &ft(TYPE_LONG)),
    ])
    .unwrap();
    assert_eq!(enc, row);
}

#[test]
fn hand_written_typed_row() {
    // id 1 DECIMAL(14,4) 1234567890.1234; id 2 DATETIME(6) 2024-01-31 12:34:56.789;
    // id 3 TIME(0) 01:02:03; id 4 DOUBLE -1.5; id 5 INT UNSIGNED 65535.
    let dec = "0e04 810dfb38d204d2";
    let dt = "080a0cb8c87eb219";
    let tm = "00ae17d462030000";
    // -1.5 = 0xBFF8000000000000; negative → all bits inverted.
    let dbl = "4007ffffffffffff";
    let u = "ffff";
    let row = h(&format!(
        "80 00 0500 0000 0102030405 0900 1100 1900 2100 2300 {dec}{dt}{tm}{dbl}{u}"
    ));
    let cols = decode_row_columns(&row).unwrap();
    let dec_ft = ft_with(TYPE_NEW_DECIMAL, 0, 14, 4);
    let dt_ft = ft_with(TYPE_DATETIME, 0, 0, 6);
    let tm_ft = ft_with(TYPE_DURATION, 0, 0, 0);
    let u_ft = ft_with(TYPE_LONG, FLAG_UNSIGNED, 10, 0);
    let Some(Datum::Decimal(d)) = cols.datum(1, &dec_ft).unwrap() else {
        panic!("not a decimal")
    };
    assert_eq!(d.to_string(), "1234567890.1234");
    let Some(Datum::Time(t)) = cols.datum(2, &dt_ft).unwrap() else {
        panic!("not a time")
    };
    assert_eq!(t.to_string(), "2024-01-31 12:34:56.789000");
    assert_eq!(t.kind, TimeKind::Datetime);
    let Some(Datum::Duration(du)) = cols.datum(3, &tm_ft).unwrap() else {
        panic!("not a duration")
    };
    assert_eq!(du.to_string(), "01:02:03");
    assert_eq!(
        cols.datum(4, &ft(TYPE_DOUBLE)).unwrap(),
        Some(Datum::Float64(-1.5))
    );
    assert_eq!(cols.datum(5, &u_ft).unwrap(), Some(Datum::Uint(65535)));
    // Signed, the same two bytes are -1.
    assert_eq!(cols.datum(5, &ft(TYPE_LONG)).unwrap(), Some(Datum::Int(-1)));
}

#[test]
fn hand_written_large_and_checksum_rows() {
    // LARGE: id 300 SMALLINT 1000.
    let row = h("80 01 0100 0000 2c010000 02000000 e803");
    let r = RowV2::parse(&row).unwrap();
    assert!(r.is_large());
    assert_eq!(
        decode_datum(decode_row_columns(&row).unwrap().slot(300), &ft(TYPE_SHORT)).unwrap(),
        Some(Datum::Int(1000))
    );
    assert_eq!(
        encode_row_v2(&[(300, &Datum::Int(1000), &ft(TYPE_SHORT))]).unwrap(),
        row
    );
    // Checksum v1 without extra.
    let row = h("80 02 0100 0000 01 0100 07 01 78563412");
    let r = RowV2::parse(&row).unwrap();
    assert_eq!(
        r.checksum(),
        Some(RowChecksum {
            version: 1,
            checksum: 0x1234_5678,
            extra: None
        })
    );
    assert_eq!(r.get(1), ColumnSlot::Value(&[7][..]));
    // With the extra checksum.
    let row = h("80 02 0100 0000 01 0100 07 09 78563412 01000000");
    assert_eq!(
        RowV2::parse(&row).unwrap().checksum().unwrap().extra,
        Some(1)
    );
}

#[test]
fn malformed_rows_are_errors() {
    let bad = [
        ("truncated header", "80 00 01"),
        ("truncated ids", "80 00 0200 0000 01"),
        ("offset beyond data", "80 00 0100 0000 01 0500 aa"),
        (
            "decreasing offsets",
            "80 00 0200 0000 01 02 0300 0100 aabbcc",
        ),
        ("bad flags", "80 04 0100 0000 01 0100 aa"),
        ("ids not ascending", "80 00 0200 0000 02 01 0100 0200 aabb"),
        ("null ids not ascending", "80 00 0000 0200 02 01"),
        ("id null and not null", "80 00 0100 0100 01 01 0100 aa"),
        ("trailing bytes", "80 00 0100 0000 01 0100 aa bb"),
        ("checksum missing", "80 02 0100 0000 01 0100 aa"),
        ("checksum short", "80 02 0100 0000 01 0100 aa 01 7856"),
        (
            "checksum extra missing",
            "80 02 0100 0000 01 0100 aa 09 78563412",
        ),
        (
            "checksum header bits",
            "80 02 0100 0000 01 0100 aa 11 78563412",
        ),
    ];
    for (what, hex) in bad {
        assert!(RowV2::parse(&h(hex)).is_err(), "{what} accepted");
        assert!(decode_row_columns(&h(hex)).is_err(), "{what} accepted");
    }
    assert!(decode_row_columns(&[]).is_err());
}

#[test]
fn malformed_columns_are_errors() {
    let int = ft(TYPE_LONG);
    assert!(decode_column_v2(&[1, 2, 3], &int).is_err());
    assert!(decode_column_v2(&[], &int).is_err());
    assert!(decode_column_v2(&[1, 2, 3], &ft_with(TYPE_LONG, FLAG_UNSIGNED, 0, 0)).is_err());
    assert!(decode_column_v2(&[0; 7], &ft(TYPE_DOUBLE)).is_err());
    // Packed times with hour 24, and with year 10000 (month 13 cannot be expressed: the
    // packed field is year*13+month).
    let bad_hour = (24u64 << 36).to_le_bytes();
    assert!(decode_column_v2(&bad_hour, &ft(TYPE_DATETIME)).is_err());
    let bad_year = ((10_000u64 * 13) << 46).to_le_bytes();
    assert!(decode_column_v2(&bad_year, &ft(TYPE_DATE)).is_err());
    // Decimal precision 70 and frac > precision.
    assert!(decode_column_v2(&h("46 00 80"), &ft(TYPE_NEW_DECIMAL)).is_err());
    assert!(decode_column_v2(&h("05 06 800000"), &ft(TYPE_NEW_DECIMAL)).is_err());
    // Bad JSON: literal 7; unknown type code 2; truncated string.
    assert!(decode_column_v2(&[0x04, 0x07], &ft(TYPE_JSON)).is_err());
    assert!(decode_column_v2(&[0x02, 0x00], &ft(TYPE_JSON)).is_err());
    assert!(decode_column_v2(&[0x0c, 0x05, b'a'], &ft(TYPE_JSON)).is_err());
    // Unknown/unsupported type codes name the code.
    let err = decode_column_v2(&[0], &ft(TYPE_VECTOR_FLOAT32)).unwrap_err();
    assert!(err.to_string().contains("225"), "{err}");
    assert!(decode_column_v2(&[0], &ft(TYPE_NULL)).is_err());
    // Mismatched datum and type.
    assert!(encode_column_v2(&Datum::Bytes(vec![1]), &int).is_err());
    assert!(encode_column_v2(&Datum::Null, &int).is_err());
    assert!(encode_column_v2(&Datum::Int(-1), &ft_with(TYPE_LONG, FLAG_UNSIGNED, 0, 0)).is_err());
    assert!(encode_column_v2(&Datum::Uint(u64::MAX), &int).is_err());
    assert!(encode_column_v2(&Datum::Float64(1.0), &ft(TYPE_FLOAT)).is_err());
    assert!(encode_row_v2(&[(-1, &Datum::Int(1), &int)]).is_err());
    assert!(encode_row_v2(&[(1, &Datum::Int(1), &int), (1, &Datum::Null, &int)]).is_err());
}

#[test]
fn minimal_int_widths() {
    let int = ft(TYPE_LONGLONG);
    let uint = ft_with(TYPE_LONGLONG, FLAG_UNSIGNED, 20, 0);
    for (v, len) in [
        (0i64, 1),
        (-128, 1),
        (127, 1),
        (128, 2),
        (-32769, 4),
        (1 << 31, 8),
    ] {
        let b = encode_column_v2(&Datum::Int(v), &int).unwrap();
        assert_eq!(b.len(), len, "{v}");
        assert_eq!(decode_column_v2(&b, &int).unwrap(), Datum::Int(v));
    }
    for (v, len) in [(255u64, 1), (256, 2), (65536, 4), (1 << 32, 8)] {
        let b = encode_column_v2(&Datum::Uint(v), &uint).unwrap();
        assert_eq!(b.len(), len, "{v}");
        assert_eq!(decode_column_v2(&b, &uint).unwrap(), Datum::Uint(v));
    }
}

#[test]
fn v1_fixed_vectors() {
    // id 1 (08 02) → varint 5 (08 0a); id 2 (08 04) → compact bytes "ab" (02 04 61 62);
    // id 3 (08 06) → NULL (00).
    let row = h("0802 080a 0804 0204 6162 0806 00");
    let cols = decode_row_v1(&row).unwrap();
    assert_eq!(cols.len(), 3);
    let rc = decode_row_columns(&row).unwrap();
    assert!(!rc.is_v2());
    assert_eq!(rc.datum(1, &ft(TYPE_LONG)).unwrap(), Some(Datum::Int(5)));
    assert_eq!(
        rc.datum(2, &ft(TYPE_VARCHAR)).unwrap(),
        Some(Datum::Bytes(b"ab".to_vec()))
    );
    assert_eq!(rc.slot(3), RowSlot::Null);
    assert_eq!(rc.slot(4), RowSlot::Absent);
    assert_eq!(decode_row_v1(&[0]).unwrap(), vec![]);
    assert_eq!(encode_row_v1(&[]).unwrap(), vec![0]);
    assert!(decode_row_v1(&[]).is_err());
    // Column id with the wrong flag, value missing, duplicate id.
    assert!(decode_row_v1(&h("0902 080a")).is_err());
    assert!(decode_row_v1(&h("0802")).is_err());
    assert!(decode_row_columns(&h("0802 080a 0802 080a")).is_err());
    // Packed time in a v1 row.
    let t = Time::from_packed(0x19b2_7ec8_b80c_0a08, TimeKind::Timestamp, 3).unwrap();
    let ts_ft = ft_with(TYPE_TIMESTAMP, 0, 0, 3);
    let row = encode_row_v1(&[(7, &Datum::Time(t), &ts_ft)]).unwrap();
    assert_eq!(
        decode_row_columns(&row).unwrap().datum(7, &ts_ft).unwrap(),
        Some(Datum::Time(t))
    );
    assert_eq!(t.to_string(), "2024-01-31 12:34:56.789");
}

/// Every column type the codecs support, with a matching random datum.
fn arb_typed() -> impl Strategy<Value = (FieldType, Datum)> {
    let ints = (
        prop::sample::select(vec![
            TYPE_TINY,
            TYPE_SHORT,
            TYPE_INT24,
            TYPE_LONG,
            TYPE_LONGLONG,
        ]),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(tp, unsigned, v)| {
            if unsigned {
                (ft_with(tp, FLAG_UNSIGNED, 20, 0), Datum::Uint(v))
            } else {
                (ft_with(tp, 0, 20, 0), Datum::Int(v as i64))
            }
        });
    let year = (0i64..=2155).prop_map(|y| (ft(TYPE_YEAR), Datum::Int(y)));
    let float = any::<f32>()
        .prop_filter("nan", |f| !f.is_nan())
        .prop_map(|f| (ft(TYPE_FLOAT), Datum::Float32(f)));
    let double = any::<f64>()
        .prop_filter("nan", |f| !f.is_nan())
        .prop_map(|f| (ft(TYPE_DOUBLE), Datum::Float64(f)));
    let strings = (
        prop::sample::select(vec![
            TYPE_VARCHAR,
            TYPE_VAR_STRING,
            TYPE_STRING,
            TYPE_TINY_BLOB,
            TYPE_MEDIUM_BLOB,
            TYPE_LONG_BLOB,
            TYPE_BLOB,
        ]),
        prop_oneof![
            20 => prop::collection::vec(any::<u8>(), 0..40),
            1 => (65_536usize..70_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        ],
    )
        .prop_map(|(tp, b)| (ft(tp), Datum::Bytes(b)));
    let decimal = (1u8..=65)
        .prop_flat_map(|p| (Just(p), 0..=p.min(30)))
        .prop_flat_map(|(p, f)| {
            (
                Just(p),
                Just(f),
                any::<bool>(),
                proptest::string::string_regex(&format!("[0-9]{{1,{}}}", (p - f).max(1))).unwrap(),
                proptest::string::string_regex(&format!("[0-9]{{{f}}}")).unwrap(),
            )
        })
        .prop_map(|(p, f, neg, i, fr)| {
            let i = if p == f { "0".to_string() } else { i };
            let text = if f == 0 {
                format!("{}{i}", if neg { "-" } else { "" })
            } else {
                format!("{}{i}.{fr}", if neg { "-" } else { "" })
            };
            let d: Decimal = text.parse().unwrap();
            (
                ft_with(TYPE_NEW_DECIMAL, 0, i64::from(p), i64::from(f)),
                Datum::Decimal(d),
            )
        });
    let time = (
        prop::sample::select(vec![TYPE_DATE, TYPE_DATETIME, TYPE_TIMESTAMP]),
        0u8..=6,
        0u16..=9999,
        0u8..=12,
        0u8..=31,
        0u8..24,
        0u8..60,
        0u8..60,
        0u32..1_000_000,
    )
        .prop_map(|(tp, fsp, year, month, day, hour, minute, second, us)| {
            let fsp = if tp == TYPE_DATE { 0 } else { fsp };
            let kind = match tp {
                TYPE_DATE => TimeKind::Date,
                TYPE_DATETIME => TimeKind::Datetime,
                _ => TimeKind::Timestamp,
            };
            let t = Time {
                year,
                month,
                day,
                hour,
                minute,
                second,
                microsecond: us,
                kind,
                fsp,
            };
            (ft_with(tp, 0, 0, i64::from(fsp)), Datum::Time(t))
        });
    let duration =
        (0u8..=6, -3_020_399_999_999_999i64..=3_020_399_999_999_999).prop_map(|(fsp, nanos)| {
            (
                ft_with(TYPE_DURATION, 0, 0, i64::from(fsp)),
                Datum::Duration(Duration::from_nanos(nanos, fsp).unwrap()),
            )
        });
    let small = prop_oneof![
        any::<u64>().prop_map(|v| (ft(TYPE_ENUM), Datum::Enum(v))),
        any::<u64>().prop_map(|v| (ft(TYPE_SET), Datum::Set(v))),
        any::<u64>().prop_map(|v| (ft_with(TYPE_BIT, 0, 64, 0), Datum::Bit(v))),
    ];
    let json = prop_oneof![
        Just(r#"{"a": 1, "b": [true, null, "x"], "c": {"d": 1.5}}"#),
        Just("[]"),
        Just("18446744073709551615"),
        Just(r#""text""#),
        Just("-7"),
        Just("false"),
    ]
    .prop_map(|s| (ft(TYPE_JSON), Datum::Json(s.parse::<Json>().unwrap())));
    prop_oneof![
        ints, year, float, double, strings, decimal, time, duration, small, json
    ]
}

/// A row: distinct ids (some > 255) with typed datums, some NULL.
fn arb_row() -> impl Strategy<Value = Vec<(i64, FieldType, Datum)>> {
    prop::collection::btree_map(
        prop_oneof![4 => 1i64..=255, 1 => 256i64..100_000],
        (arb_typed(), prop::bool::weighted(0.15)),
        0..12,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(id, ((ft, d), null))| (id, ft, if null { Datum::Null } else { d }))
            .collect()
    })
}

fn refs(row: &[(i64, FieldType, Datum)]) -> Vec<(i64, &Datum, &FieldType)> {
    row.iter().map(|(id, ft, d)| (*id, d, ft)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn v2_round_trip(row in arb_row()) {
        let bytes = encode_row_v2(&refs(&row)).unwrap();
        let parsed = RowV2::parse(&bytes).unwrap();
        let mut data_len = 0;
        for (_, ft, d) in &row {
            if !d.is_null() {
                data_len += encode_column_v2(d, ft).unwrap().len();
            }
        }
        let want_large = data_len > 65_535 || row.iter().any(|(id, _, _)| *id > 255);
        prop_assert_eq!(parsed.is_large(), want_large);
        prop_assert_eq!(parsed.not_null_count() + parsed.null_count(), row.len());
        let cols = decode_row_columns(&bytes).unwrap();
        for (id, ft, d) in &row {
            prop_assert_eq!(cols.datum(*id, ft).unwrap(), Some(d.clone()));
        }
        prop_assert_eq!(cols.datum(0, &ft(TYPE_LONG)).unwrap(), None);
    }

    #[test]
    fn v1_round_trip(row in arb_row()) {
        let bytes = encode_row_v1(&refs(&row)).unwrap();
        let cols = decode_row_columns(&bytes).unwrap();
        prop_assert!(!cols.is_v2() || row.is_empty());
        for (id, ft, d) in &row {
            prop_assert_eq!(cols.datum(*id, ft).unwrap(), Some(d.clone()));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..80),
                                flag in any::<u32>(), flen in -1i64..70, dec in -1i64..40) {
        let _ = RowV2::parse(&bytes);
        let _ = decode_row_v1(&bytes);
        let mut v2 = bytes.clone();
        if let Some(b) = v2.first_mut() { *b = 0x80; }
        if let Ok(cols) = decode_row_columns(&v2) {
            for id in 0..8 { let _ = cols.datum(id, &ft(TYPE_LONG)); }
        }
        for tp in 0..=255u8 {
            let f = ft_with(tp, flag, flen, dec);
            let _ = decode_column_v2(&bytes, &f);
            if let Ok(cols) = decode_row_columns(&bytes) {
                for id in 0..4 { let _ = cols.datum(id, &f); }
            }
        }
        let _ = Json::from_binary(bytes.first().copied().unwrap_or(0), bytes.get(1..).unwrap_or_default());
        let _ = Decimal::from_bin(&bytes, (flen & 0xff) as u8, (dec & 0xff) as u8);
        if bytes.len() >= 8 {
            let p = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            let _ = Time::from_packed(p, TimeKind::Datetime, (dec & 7) as u8);
        }
    }

    #[test]
    fn mutated_rows_never_panic(row in arb_row(), pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        for bytes in [encode_row_v2(&refs(&row)).unwrap(), encode_row_v1(&refs(&row)).unwrap()] {
            if bytes.len() > 100_000 { continue; }
            let mut m = bytes.clone();
            let i = pos.index(m.len());
            m[i] = byte;
            m.truncate(cut.index(m.len() + 1).max(1));
            if let Ok(cols) = decode_row_columns(&m) {
                for (id, ft, _) in &row { let _ = cols.datum(*id, ft); }
            }
        }
    }
}
