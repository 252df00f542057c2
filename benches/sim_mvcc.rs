//! The simulator's MVCC store (`tidal_sim::mvcc::MvccStore`): how many row changes per second
//! one core can apply, by two-phase commit (prewrite + commit) and by 1PC, with no observer
//! and with a no-op `ApplyObserver` installed (which makes the store build the CDC events it
//! hands out by reference: an old-value lookup per row, no copies).
//!
//! The workload is sysbench-like updates: transactions of `TXN_ROWS` distinct rows picked at
//! random in a sysbench table (row-format-v2 values of about 200 bytes), for each table size of
//! `TABLE_ROWS`: a small one whose keys stay in cache and a large one whose do not. Versions
//! pile up under updates, so every `GC_EVERY` transactions the store is garbage
//! collected *outside the timed region* (`iter_custom`), keeping each key's history short as a
//! GC'd TiKV would.
//!
//! Throughput is in row changes (mutations) per second per core.
//!
//! Run: `cargo bench --bench sim_mvcc -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Gen, sysbench_kvs, tables};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidal_sim::mvcc::{ApplyEvent, ApplyEventRef, ApplyObserver, Mutation, MvccStore};

/// Table sizes (existing rows the updates pick from): one that fits in cache and one that does
/// not.
const TABLE_ROWS: [usize; 2] = [1_000, 100_000];
/// Row changes per transaction.
const TXN_ROWS: usize = 8;
/// Pre-built transactions, cycled through.
const POOL: usize = 4096;
/// Transactions between two (untimed) GC passes.
const GC_EVERY: u64 = 2048;

/// An observer that looks at the events and does nothing else: the cost of event building alone.
#[derive(Debug)]
struct NoopObserver;

impl ApplyObserver for NoopObserver {
    fn on_apply(&self, events: &[ApplyEvent]) {
        black_box(events.len());
    }

    fn on_apply_refs(&self, events: &[ApplyEventRef<'_>]) {
        black_box(events.len());
    }
}

/// A loaded store, the pool of update transactions, and a timestamp counter.
struct Setup {
    store: MvccStore,
    txns: Vec<(Vec<Mutation>, Vec<Vec<u8>>)>,
    ts: u64,
}

fn setup(table_rows: usize, observe: bool) -> Setup {
    let t = tables();
    let mut g = Gen::new(29);
    let kvs = sysbench_kvs(&t.sysbench, &mut g, 1, table_rows);
    let store = MvccStore::new();
    let mut ts = 100;
    for chunk in kvs.chunks(4096) {
        let muts: Vec<Mutation> = chunk
            .iter()
            .map(|(k, v)| Mutation::put(k.clone(), v.clone()))
            .collect();
        store.one_pc(&muts, ts, ts + 1).expect("load");
        ts += 2;
    }
    assert_eq!(store.key_count(), table_rows);
    // New values for the updates: other rows' bytes, same shape.
    let values = sysbench_kvs(&t.sysbench, &mut g, 1, POOL);
    let txns = (0..POOL)
        .map(|i| {
            let mut picked: Vec<usize> = Vec::with_capacity(TXN_ROWS);
            while picked.len() < TXN_ROWS {
                let r = g.below(table_rows as u64) as usize;
                if !picked.contains(&r) {
                    picked.push(r);
                }
            }
            let muts: Vec<Mutation> = picked
                .iter()
                .enumerate()
                .map(|(j, &r)| {
                    let value = &values[(i + j) % POOL].1;
                    Mutation::put(kvs[r].0.clone(), value.clone())
                })
                .collect();
            let keys = muts.iter().map(|m| m.key.clone()).collect();
            (muts, keys)
        })
        .collect();
    if observe {
        store.set_observer(Arc::new(NoopObserver));
    }
    Setup { store, txns, ts }
}

impl Setup {
    /// Applies `iters` transactions with `apply`, timing only the writes.
    fn run(
        &mut self,
        iters: u64,
        apply: impl Fn(&MvccStore, &[Mutation], &[Vec<u8>], u64, u64),
    ) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut done = 0u64;
        while done < iters {
            let n = (iters - done).min(GC_EVERY);
            let start = Instant::now();
            for i in 0..n {
                let (muts, keys) = &self.txns[((done + i) % POOL as u64) as usize];
                apply(&self.store, muts, keys, self.ts, self.ts + 1);
                self.ts += 2;
            }
            elapsed += start.elapsed();
            done += n;
            self.store.gc(self.ts);
        }
        elapsed
    }
}

fn two_pc(store: &MvccStore, muts: &[Mutation], keys: &[Vec<u8>], start: u64, commit: u64) {
    let primary = keys.first().map(Vec::as_slice).unwrap_or_default();
    store.prewrite(muts, primary, start).expect("prewrite");
    store.commit(keys, start, commit).expect("commit");
}

fn one_pc(store: &MvccStore, muts: &[Mutation], _keys: &[Vec<u8>], start: u64, commit: u64) {
    store.one_pc(muts, start, commit).expect("1pc");
}

fn sim_mvcc(c: &mut Criterion) {
    let mut group = c.benchmark_group("mvcc_update");
    group.throughput(Throughput::Elements(TXN_ROWS as u64));
    for table_rows in TABLE_ROWS {
        for observe in [false, true] {
            let mut s = setup(table_rows, observe);
            let suffix = if observe {
                "noop_observer"
            } else {
                "no_observer"
            };
            // One untimed transaction of each kind: they must apply, and be readable.
            s.run(1, two_pc);
            s.run(1, one_pc);
            let (muts, _) = &s.txns[0];
            assert_eq!(
                s.store.get(&muts[0].key, s.ts).expect("read").as_ref(),
                Some(&muts[0].value)
            );
            group.bench_function(format!("prewrite_commit/{suffix}/{table_rows}_rows"), |b| {
                b.iter_custom(|iters| s.run(iters, two_pc))
            });
            group.bench_function(format!("one_pc/{suffix}/{table_rows}_rows"), |b| {
                b.iter_custom(|iters| s.run(iters, one_pc))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, sim_mvcc);
criterion_main!(benches);
