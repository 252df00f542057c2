//! The ingestion hot path: `tidal_ingest::feed::matcher::Matcher` pairing TiKV's PREWRITE and
//! COMMIT rows into committed changes, alone and followed by `decode_change` (what one ingest
//! core does for every row change of a region).
//!
//! Inputs are the CDC rows a sysbench write workload produces on one region: transactions of
//! `TXN_ROWS` row writes, each sent as its prewrites followed by its commits, with
//! row-format-v2 values from the simulator's TiDB schema. The rows are cloned in the untimed
//! setup of each iteration (the matcher consumes them) and the output vector is dropped outside
//! the timed routine, so the figures cover matching (and decoding) only.
//!
//! Throughput is in committed row changes per second per core; one committed change costs two
//! CDC rows in the 2PC case.
//!
//! Run: `cargo bench --bench matcher -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::hint::black_box;

use common::{Gen, Kv, sysbench_kvs, sysbench_raw_changes, tables};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tidal_ingest::feed::matcher::Matcher;
use tidal_model::change::{RawKvChange, RawOp};
use tidal_model::decode::decode_change;
use tidal_model::{RowChange, RowChangeKind, Ts};
use tidal_proto::cdcpb::event::LogType;
use tidal_proto::cdcpb::event::Row;
use tidal_proto::cdcpb::event::row::OpType;

/// Committed row changes per iteration.
const ROWS: usize = 4096;
/// Row writes per upstream transaction.
const TXN_ROWS: usize = 8;
/// The matchers' checkpoint: every generated commit ts is above it.
const CHECKPOINT: u64 = 1_000;

fn row(t: LogType, start_ts: u64, commit_ts: u64, key: &[u8], value: &[u8]) -> Row {
    Row {
        start_ts,
        commit_ts,
        r#type: t as i32,
        op_type: OpType::Put as i32,
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

/// PREWRITE/COMMIT rows for `kvs`, `TXN_ROWS` per transaction: prewrites first, then commits
/// (the commit carries no value, as TiKV sends it).
fn two_pc_rows(kvs: &[Kv]) -> Vec<Row> {
    let mut rows = Vec::with_capacity(kvs.len() * 2);
    for (t, txn) in kvs.chunks(TXN_ROWS).enumerate() {
        let start_ts = CHECKPOINT + 10 + 2 * t as u64;
        for (k, v) in txn {
            rows.push(row(LogType::Prewrite, start_ts, 0, k, v));
        }
        for (k, _) in txn {
            rows.push(row(LogType::Commit, start_ts, start_ts + 1, k, &[]));
        }
    }
    rows
}

/// COMMITTED rows (initial scan output) for `kvs`.
fn committed_rows(kvs: &[Kv]) -> Vec<Row> {
    kvs.iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let start_ts = CHECKPOINT + 10 + 2 * i as u64;
            row(LogType::Committed, start_ts, start_ts + 1, k, v)
        })
        .collect()
}

/// A matcher past INITIALIZED, as during steady-state replication.
fn live_matcher() -> Matcher {
    let mut m = Matcher::new(1, Ts(CHECKPOINT));
    let mut out = Vec::new();
    m.process(row(LogType::Initialized, 0, 0, &[], &[]), &mut out)
        .expect("initialized");
    assert!(m.is_initialized() && out.is_empty());
    m
}

/// Runs `rows` through `m`, checking that every change comes out (once, before timing).
fn check(m: &mut Matcher, rows: &[Row]) {
    let mut out = Vec::new();
    m.process_all(rows.to_vec(), &mut out).expect("match");
    assert_eq!(out.len(), ROWS);
    assert_eq!(m.pending_prewrites(), 0);
    assert!(
        out.iter()
            .all(|c| c.op == RawOp::Put && !c.value.is_empty())
    );
}

fn matcher(c: &mut Criterion) {
    let t = tables();
    let mut g = Gen::new(17);
    let kvs = sysbench_kvs(&t.sysbench, &mut g, 1, ROWS);
    let value_bytes: u64 = kvs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    let two_pc = two_pc_rows(&kvs);
    let committed = committed_rows(&kvs);
    let throughput = Throughput::ElementsAndBytes {
        elements: ROWS as u64,
        bytes: value_bytes,
    };

    let mut group = c.benchmark_group("matcher");
    group.throughput(throughput.clone());
    for (name, rows) in [("prewrite_commit", &two_pc), ("committed", &committed)] {
        let mut m = live_matcher();
        check(&mut m, rows);
        group.bench_function(name, |b| {
            b.iter_batched(
                || (rows.clone(), Vec::with_capacity(ROWS)),
                |(rows, mut out): (Vec<Row>, Vec<RawKvChange>)| {
                    m.process_all(rows, &mut out).ok();
                    out
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();

    // Matching then decoding with the table's schema: the whole per-row cost of ingestion
    // before the dataflow.
    let info = &t.sysbench.info;
    let mut group = c.benchmark_group("match_and_decode");
    group.throughput(throughput);
    let mut m = live_matcher();
    check(&mut m, &two_pc);
    group.bench_function("prewrite_commit+decode_change", |b| {
        b.iter_batched(
            || {
                (
                    two_pc.clone(),
                    Vec::with_capacity(ROWS),
                    Vec::with_capacity(ROWS),
                )
            },
            |(rows, mut raw, mut decoded): (Vec<Row>, Vec<RawKvChange>, Vec<RowChange>)| {
                m.process_all(rows, &mut raw).ok();
                for r in raw.drain(..) {
                    if let Ok(d) = decode_change(info, &r) {
                        decoded.push(d);
                    }
                }
                decoded
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    // decode_change alone, for inserts and for updates carrying the old row.
    let inserts = sysbench_raw_changes(&t.sysbench, &mut g, ROWS);
    let updates: Vec<RawKvChange> = inserts
        .iter()
        .zip(sysbench_kvs(&t.sysbench, &mut g, 1, ROWS))
        .map(|(new, (_, old))| RawKvChange {
            old_value: old,
            ..new.clone()
        })
        .collect();
    let mut group = c.benchmark_group("decode_change");
    for (name, changes, kind) in [
        ("insert", &inserts, RowChangeKind::Insert),
        ("update_with_old_value", &updates, RowChangeKind::Update),
    ] {
        for ch in changes.iter() {
            let d = decode_change(info, ch).expect("decode");
            assert_eq!(d.kind, kind);
            assert_eq!(d.new.as_ref().map(Vec::len), Some(4));
        }
        let bytes: u64 = changes
            .iter()
            .map(|c| (c.key.len() + c.value.len() + c.old_value.len()) as u64)
            .sum();
        group.throughput(Throughput::ElementsAndBytes {
            elements: ROWS as u64,
            bytes,
        });
        group.bench_function(name, |b| {
            b.iter_batched(
                || Vec::with_capacity(ROWS),
                |mut out: Vec<RowChange>| {
                    for ch in changes.iter() {
                        if let Ok(d) = decode_change(info, black_box(ch)) {
                            out.push(d);
                        }
                    }
                    out
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, matcher);
criterion_main!(benches);
