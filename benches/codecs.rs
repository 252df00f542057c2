//! Key and row codecs of `tidal_model`: the per-row work every change pays before it reaches
//! the dataflow (memcomparable keys for region routing, row-key decoding for the handle, and
//! row format v2 for the values).
//!
//! Each benchmark processes a batch of distinct inputs per iteration (so caches and branch
//! predictors see realistic variety) and reports elements/s and bytes/s of the input side.
//!
//! Run: `cargo bench --bench codecs -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::hint::black_box;

use common::{Gen, Kv, row_kv, sysbench_row, tables, value_columns, wide_row};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidal_model::Datum;
use tidal_model::codec::bytes::{decode_key, encode_key};
use tidal_model::decode::decode_row;
use tidal_model::rowcodec::encode_row_v2;
use tidal_model::tablecodec::{decode_row_key, encode_index_key, encode_row_key_int};
use tidal_sim::tidb::Table;

/// Inputs per iteration.
const BATCH: usize = 1024;

fn total_len<T: AsRef<[u8]>>(items: &[T]) -> u64 {
    items.iter().map(|i| i.as_ref().len() as u64).sum()
}

/// Raw row keys of one table with scattered handles (19 bytes each).
fn row_keys(g: &mut Gen) -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|_| encode_row_key_int(112, g.below(100_000_000) as i64))
        .collect()
}

/// Raw index keys with a 40-byte string column: longer keys, several 8-byte groups each.
fn index_keys(g: &mut Gen) -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|_| {
            let mut values = Vec::new();
            tidal_model::codec::bytes::encode_bytes(&mut values, &g.filler(40));
            encode_index_key(112, 2, &values)
        })
        .collect()
}

fn memcomparable(c: &mut Criterion) {
    let mut g = Gen::new(7);
    let mut group = c.benchmark_group("memcomparable");
    for (name, raw) in [
        ("row_key_19B", row_keys(&mut g)),
        ("index_key_68B", index_keys(&mut g)),
    ] {
        let encoded: Vec<Vec<u8>> = raw.iter().map(|k| encode_key(k)).collect();
        for (k, e) in raw.iter().zip(&encoded) {
            assert_eq!(&decode_key(e).expect("decode"), k);
        }
        group.throughput(Throughput::ElementsAndBytes {
            elements: BATCH as u64,
            bytes: total_len(&raw),
        });
        group.bench_function(format!("encode_key/{name}"), |b| {
            b.iter(|| {
                for k in &raw {
                    black_box(encode_key(black_box(k)));
                }
            })
        });
        group.bench_function(format!("decode_key/{name}"), |b| {
            b.iter(|| {
                for e in &encoded {
                    black_box(decode_key(black_box(e)).ok());
                }
            })
        });
    }
    group.finish();
}

fn row_key(c: &mut Criterion) {
    let mut g = Gen::new(11);
    let keys = row_keys(&mut g);
    let mut group = c.benchmark_group("row_key");
    group.throughput(Throughput::ElementsAndBytes {
        elements: BATCH as u64,
        bytes: total_len(&keys),
    });
    group.bench_function("decode_row_key", |b| {
        b.iter(|| {
            for k in &keys {
                black_box(decode_row_key(black_box(k)).ok());
            }
        })
    });
    group.finish();
}

/// `BATCH` rows of `table` built by `make`, with their key/value bytes.
fn rows_of(
    table: &Table,
    g: &mut Gen,
    make: fn(&mut Gen, i64) -> Vec<Datum>,
) -> (Vec<Vec<Datum>>, Vec<Kv>) {
    let rows: Vec<Vec<Datum>> = (0..BATCH as i64).map(|id| make(g, id + 1)).collect();
    let kvs = rows.iter().map(|r| row_kv(table, r)).collect();
    (rows, kvs)
}

fn row_v2(c: &mut Criterion) {
    let t = tables();
    let mut g = Gen::new(13);
    let cases = [
        (
            "sysbench",
            &t.sysbench,
            rows_of(&t.sysbench, &mut g, sysbench_row),
        ),
        ("wide", &t.wide, rows_of(&t.wide, &mut g, wide_row)),
    ];
    for (name, table, (rows, kvs)) in &cases {
        // The decoder must give back exactly what was encoded, or the figures mean nothing.
        for (row, (k, v)) in rows.iter().zip(kvs) {
            assert_eq!(
                &decode_row(&table.info, k, v).expect("decode row"),
                row,
                "{name}"
            );
        }
        let value_bytes: u64 = kvs.iter().map(|(_, v)| v.len() as u64).sum();
        let cols: Vec<_> = rows.iter().map(|r| value_columns(&table.info, r)).collect();

        let mut group = c.benchmark_group(format!("row_v2/{name}"));
        // Bytes are the encoded row values (what TiKV stores and sends).
        group.throughput(Throughput::ElementsAndBytes {
            elements: BATCH as u64,
            bytes: value_bytes,
        });
        group.bench_function("encode_row_v2", |b| {
            b.iter(|| {
                for c in &cols {
                    black_box(encode_row_v2(black_box(c)).ok());
                }
            })
        });
        group.bench_function("decode_row", |b| {
            b.iter(|| {
                for (k, v) in kvs {
                    black_box(decode_row(&table.info, black_box(k), black_box(v)).ok());
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, memcomparable, row_key, row_v2);
criterion_main!(benches);
