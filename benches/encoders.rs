//! The storage sink's row encoders (`tidal_sinks::encode`): canal-json and csv, as built by
//! `new_encoder` with TiCDC's defaults, on sysbench-like transactions.
//!
//! Each iteration encodes `TXNS` transactions of `TXN_ROWS` row changes into one reused output
//! buffer, as the storage sink batches a file. Throughput is row changes per second per core and
//! bytes per second of *output*.
//!
//! Run: `cargo bench --bench encoders -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::hint::black_box;
use std::sync::Arc;

use common::{Gen, sysbench_change, table_def, tables, wide_row};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidal_model::{Handle, RowChange, RowChangeKind, Ts};
use tidal_sim::tidb::Table;
use tidal_sinks::encode::{EncoderConfig, Protocol, RowEncoder, new_encoder};
use tidal_sinks::sink::{SinkTxn, TableDef};

/// Transactions per iteration.
const TXNS: usize = 128;
/// Row changes per transaction.
const TXN_ROWS: usize = 8;

fn txns(def: &Arc<TableDef>, mut change: impl FnMut(i64) -> RowChange) -> Vec<SinkTxn> {
    (0..TXNS)
        .map(|t| {
            let rows: Vec<RowChange> = (0..TXN_ROWS)
                .map(|i| change((t * TXN_ROWS + i + 1) as i64))
                .collect();
            SinkTxn {
                table: Arc::clone(def),
                start_ts: rows[0].start_ts,
                commit_ts: rows[0].commit_ts,
                rows,
                safe_mode: false,
            }
        })
        .collect()
}

fn wide_change(table: &Table, g: &mut Gen, id: i64) -> RowChange {
    RowChange {
        table_id: table.id(),
        start_ts: Ts(449_567_891_234_567_000),
        commit_ts: Ts(449_567_891_234_567_890),
        kind: RowChangeKind::Insert,
        handle: Handle::Int(id),
        old: None,
        new: Some(wide_row(g, id)),
    }
}

/// Encodes every transaction into `out` (cleared first); returns the row count.
fn encode_all(enc: &mut dyn RowEncoder, txns: &[SinkTxn], out: &mut Vec<u8>) -> usize {
    out.clear();
    txns.iter()
        .map(|t| enc.encode_txn(black_box(t), out).unwrap_or(0))
        .sum()
}

fn encoders(c: &mut Criterion) {
    let t = tables();
    let mut g = Gen::new(23);
    let sb = table_def(&t.sysbench);
    let wide = table_def(&t.wide);
    let inserts = txns(&sb, |id| sysbench_change(&t.sysbench, &mut g, id, false));
    let updates = txns(&sb, |id| sysbench_change(&t.sysbench, &mut g, id, true));
    let wide_inserts = txns(&wide, |id| wide_change(&t.wide, &mut g, id));

    let cases = [
        (Protocol::CanalJson, "sysbench_insert", &inserts),
        (Protocol::CanalJson, "sysbench_update", &updates),
        (Protocol::CanalJson, "wide_insert", &wide_inserts),
        (Protocol::Csv, "sysbench_insert", &inserts),
        (Protocol::Csv, "sysbench_update", &updates),
        (Protocol::Csv, "wide_insert", &wide_inserts),
    ];
    let rows = (TXNS * TXN_ROWS) as u64;
    let mut group = c.benchmark_group("encode_txn");
    for (protocol, name, txns) in cases {
        let mut enc = new_encoder(&EncoderConfig::new(protocol));
        let mut out = Vec::new();
        // One untimed pass: checks that every row encodes and sizes the output.
        assert_eq!(encode_all(enc.as_mut(), txns, &mut out) as u64, rows);
        let terminators = out.windows(2).filter(|w| w == b"\r\n").count() as u64;
        assert!(
            terminators >= rows,
            "{protocol}/{name}: {terminators} records"
        );
        group.throughput(Throughput::ElementsAndBytes {
            elements: rows,
            bytes: out.len() as u64,
        });
        group.bench_function(format!("{protocol}/{name}"), |b| {
            b.iter(|| black_box(encode_all(enc.as_mut(), txns, &mut out)))
        });
    }
    group.finish();
}

criterion_group!(benches, encoders);
criterion_main!(benches);
