//! Workloads: determinism, invariants under concurrent region faults, scale.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tidal_model::tablecodec;
use tidal_sim::export::snapshot_tables;
use tidal_sim::mvcc::MvccStore;
use tidal_sim::region::{RegionConfig, RegionManager};
use tidal_sim::tidb::{RowKind, Tidb};
use tidal_sim::tso::Tso;
use tidal_sim::workload::{
    self, Bank, BankConfig, DdlMix, DdlMixConfig, LargeTxn, LargeTxnConfig, ManyTables,
    ManyTablesConfig, RecordKind, Recorder, RunOptions, Sysbench, SysbenchConfig,
};

fn cluster() -> (Tidb, MvccStore, RegionManager) {
    let store = MvccStore::new();
    let regions = RegionManager::new(
        store.clone(),
        &RegionConfig {
            stores: 3,
            ..RegionConfig::default()
        },
    );
    let tidb = Tidb::new(store.clone(), Tso::new(), regions.clone()).unwrap();
    (tidb, store, regions)
}

fn sysbench_trace(seed: u64) -> Vec<(Vec<u8>, RecordKind, Option<Vec<tidal_model::Datum>>)> {
    let (tidb, _, _) = cluster();
    let rec = Recorder::new(1_000_000);
    let mut w = Sysbench::new(SysbenchConfig {
        seed,
        tables: 2,
        rows_per_table: 50,
        batch: 3,
        ..Default::default()
    });
    let stats = workload::run(&mut w, &tidb, &RunOptions::steps(100).record(rec.clone())).unwrap();
    assert_eq!(stats.retries, 0);
    assert!(stats.txns >= 100);
    rec.records()
        .into_iter()
        .map(|r| (r.key, r.kind, r.values))
        .collect()
}

#[test]
fn sysbench_is_deterministic_for_a_seed() {
    let a = sysbench_trace(7);
    let b = sysbench_trace(7);
    let c = sysbench_trace(8);
    assert!(a.len() > 100 + 100, "load + steps: {}", a.len());
    assert_eq!(a, b);
    assert_ne!(a, c);
    // The mix has all three kinds.
    for kind in [RowKind::Insert, RowKind::Update, RowKind::Delete] {
        assert!(
            a.iter().any(|(_, k, _)| *k == RecordKind::Row(kind)),
            "{kind:?} missing"
        );
    }
}

#[test]
fn sysbench_snapshot_matches_the_commit_record() {
    let (tidb, store, _) = cluster();
    let rec = Recorder::new(1_000_000);
    let mut w = Sysbench::new(SysbenchConfig {
        seed: 3,
        tables: 2,
        rows_per_table: 30,
        batch: 4,
        ..Default::default()
    });
    let stats = workload::run(&mut w, &tidb, &RunOptions::steps(60).record(rec.clone())).unwrap();
    // Replay the oracle and compare with the snapshot at the last commit ts.
    let mut model: BTreeMap<Vec<u8>, Vec<tidal_model::Datum>> = BTreeMap::new();
    for r in rec.records() {
        match (r.kind, r.values) {
            (RecordKind::Row(RowKind::Delete), _) => {
                model.remove(&r.key);
            }
            (RecordKind::Row(_), Some(v)) => {
                model.insert(r.key, v);
            }
            _ => {}
        }
    }
    let mut seen = BTreeMap::new();
    for snap in snapshot_tables(&store, stats.last_commit_ts, &[]).unwrap() {
        for (h, row) in snap.rows {
            seen.insert(tablecodec::encode_row_key(snap.table_info.id, &h), row);
        }
    }
    assert_eq!(seen, model);
}

#[test]
fn bank_total_is_invariant_under_concurrent_faults() {
    let (tidb, store, regions) = cluster();
    let cfg = BankConfig {
        tables: 3,
        accounts_per_table: 40,
        ..Default::default()
    };
    let mut setup = Bank::new(cfg.clone());
    let expected = setup.expected_total();
    workload::run(&mut setup, &tidb, &RunOptions::steps(0)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for seed in 1..=3 {
        let (tidb, cfg, stop) = (
            tidb.clone(),
            BankConfig {
                seed,
                ..cfg.clone()
            },
            stop.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let mut bank = Bank::new(cfg);
            let mut opts = RunOptions::forever();
            opts.skip_setup = true;
            let mut total = workload::WorkloadStats::default();
            while !stop.load(Ordering::Relaxed) {
                let s = workload::run(
                    &mut bank,
                    &tidb,
                    &RunOptions {
                        limit: workload::RunLimit::Steps(20),
                        ..opts.clone()
                    },
                )
                .unwrap();
                total.txns += s.txns;
                total.retries += s.retries;
            }
            total
        }));
    }
    let faults = {
        let (regions, stop) = (regions.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(9);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = regions.split_random(&mut rng);
                let _ = regions.transfer_random(&mut rng);
                let _ = regions.merge_random(&mut rng);
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };
    let bank = Bank::new(cfg);
    let mut checks = 0;
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        let ts = tidb.tso().next();
        assert_eq!(bank.total_at(&store, ts).unwrap(), expected, "at ts {ts}");
        checks += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let txns: u64 = workers.into_iter().map(|w| w.join().unwrap().txns).sum();
    let fault_rounds = faults.join().unwrap();
    assert!(checks >= 10);
    assert!(txns > 50, "only {txns} transfers");
    assert!(fault_rounds > 10);
    let end = tidb.tso().next();
    assert_eq!(bank.total_at(&store, end).unwrap(), expected);
    assert_eq!(store.lock_count(), 0);
}

#[test]
fn ddl_mix_snapshots_decode_at_every_commit() {
    let (tidb, store, _) = cluster();
    let rec = Recorder::new(1_000_000);
    let mut w = DdlMix::new(DdlMixConfig {
        seed: 5,
        ddl_ratio: 0.4,
        ..Default::default()
    });
    let stats = workload::run(&mut w, &tidb, &RunOptions::steps(250).record(rec.clone())).unwrap();
    assert!(stats.ddls > 40, "{stats:?}");
    let records = rec.records();
    let actions: BTreeSet<u16> = records
        .iter()
        .filter_map(|r| match r.kind {
            RecordKind::Ddl(a) => Some(a.0),
            _ => None,
        })
        .collect();
    for a in [3, 5, 7, 11, 14] {
        assert!(actions.contains(&a), "action {a} never ran: {actions:?}");
    }
    // Every commit ts gives a snapshot that decodes with the schema of that ts.
    let mut ts_list: Vec<u64> = records.iter().map(|r| r.commit_ts).collect();
    ts_list.dedup();
    for ts in ts_list.iter().step_by(7) {
        snapshot_tables(&store, *ts, &[]).unwrap();
    }
    // The final snapshot has exactly the rows the oracle says are live, per table id.
    let mut live: BTreeMap<i64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for r in &records {
        match r.kind {
            RecordKind::Row(RowKind::Delete) => {
                live.entry(r.table_id).or_default().remove(&r.key);
            }
            RecordKind::Row(_) => {
                live.entry(r.table_id).or_default().insert(r.key.clone());
            }
            RecordKind::Ddl(_) => {}
        }
    }
    for snap in snapshot_tables(&store, stats.last_commit_ts, &[]).unwrap() {
        let id = snap.table_info.id;
        let keys: BTreeSet<Vec<u8>> = snap
            .rows
            .keys()
            .map(|h| tablecodec::encode_row_key(id, h))
            .collect();
        assert_eq!(
            keys,
            live.get(&id).cloned().unwrap_or_default(),
            "table {}",
            snap.table
        );
    }
}

#[test]
fn large_txn_cycles_insert_update_delete() {
    let (tidb, store, _) = cluster();
    let mut w = LargeTxn::new(LargeTxnConfig {
        rows_per_txn: 20_000,
        row_width: 16,
        ..Default::default()
    });
    let mut counts = Vec::new();
    let mut opts = RunOptions::steps(1);
    for _ in 0..3 {
        let s = workload::run(&mut w, &tidb, &opts).unwrap();
        opts.skip_setup = true;
        let snap = snapshot_tables(&store, s.last_commit_ts, &[("large", "t1")]).unwrap();
        counts.push((s.rows, snap[0].rows.len()));
    }
    assert_eq!(counts, [(20_000, 20_000), (20_000, 20_000), (20_000, 0)]);
}

#[test]
fn many_tables_scale() {
    let (tidb, store, regions) = cluster();
    let before = regions.len();
    let started = Instant::now();
    let mut w = ManyTables::new(ManyTablesConfig {
        tables: 2000,
        batch: 500,
        ..Default::default()
    });
    let stats = workload::run(&mut w, &tidb, &RunOptions::steps(200)).unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert_eq!(stats.ddls, 1 + 4, "create database + 4 batches");
    assert_eq!(tidb.tables("many").unwrap().len(), 2000);
    assert_eq!(regions.len(), before, "no per-table split by default");
    let schema = tidb.schema_at(tidb.tso().next()).unwrap();
    assert!(schema.db("many").is_some());
    assert_eq!(schema.user_tables().len(), 2000);
    let rows: usize = snapshot_tables(&store, stats.last_commit_ts, &[])
        .unwrap()
        .iter()
        .map(|s| s.rows.len())
        .sum();
    assert_eq!(rows, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_workload_stops_on_request() {
    let (tidb, store, _) = cluster();
    let bank = Bank::new(BankConfig::default());
    let expected = bank.expected_total();
    let handle = workload::spawn(
        Box::new(bank),
        tidb.clone(),
        RunOptions::forever().rate(Some(500)),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!handle.is_finished());
    handle.stop();
    let stats = handle.join().await.unwrap();
    assert!(stats.txns > 20, "{stats:?}");
    // Rate-limited: 500/s for ~0.4 s, plus setup.
    assert!(stats.txns < 500, "{stats:?}");
    let check = Bank::new(BankConfig::default());
    assert_eq!(check.total_at(&store, tidb.tso().next()).unwrap(), expected);
}
