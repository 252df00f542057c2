//! Sysbench-like OLTP: tables `sbtest1..N` (`id INT PRIMARY KEY, k INT, c CHAR(120), pad
//! CHAR(60), KEY k_1(k)`), loaded with rows, then transactions mixing index updates, non-index
//! updates, delete + re-insert of the same id (sysbench's write-only pattern), inserts of new
//! ids and plain deletes.
//!
//! The generator keeps the set of live ids per table and only changes it once a transaction
//! committed, so a retried transaction never leaves it out of step with the store.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidal_model::Datum;
use tidal_model::tablecodec::Handle;

use super::{StepSink, Workload, ensure_database, filler};
use crate::tidb::types::{char, int, varchar};
use crate::tidb::{ColumnSpec, IndexSpec, PrimaryKey, TableSpec, Tidb, TidbError};

/// Sysbench parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysbenchConfig {
    /// RNG seed.
    pub seed: u64,
    /// Database name.
    pub db: String,
    /// Number of tables `sbtest1..N`.
    pub tables: usize,
    /// Rows loaded per table at setup.
    pub rows_per_table: u64,
    /// Width of the `c` column (CHAR up to 255, VARCHAR beyond).
    pub row_width: usize,
    /// Operations per transaction.
    pub batch: usize,
    /// Relative weight of inserts of new ids.
    pub insert_weight: u32,
    /// Relative weight of updates (half on the indexed `k`, half on `c`).
    pub update_weight: u32,
    /// Relative weight of deletes (half of them re-insert the id in the same transaction).
    pub delete_weight: u32,
}

impl Default for SysbenchConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            db: "sbtest".into(),
            tables: 4,
            rows_per_table: 1000,
            row_width: 120,
            batch: 4,
            insert_weight: 1,
            update_weight: 6,
            delete_weight: 2,
        }
    }
}

/// The sysbench-like workload.
#[derive(Debug)]
pub struct Sysbench {
    cfg: SysbenchConfig,
    rng: StdRng,
    live: Vec<Vec<i64>>,
    next_id: Vec<i64>,
}

const LOAD_BATCH: u64 = 1000;

impl Sysbench {
    /// A workload with these parameters.
    pub fn new(cfg: SysbenchConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        let n = cfg.tables.max(1);
        Self {
            cfg,
            rng,
            live: vec![Vec::new(); n],
            next_id: vec![1; n],
        }
    }

    /// The table names.
    pub fn table_names(&self) -> Vec<String> {
        (1..=self.cfg.tables.max(1))
            .map(|i| format!("sbtest{i}"))
            .collect()
    }

    fn spec(&self, name: &str) -> TableSpec {
        let w = i64::try_from(self.cfg.row_width.max(1)).unwrap_or(255);
        let c_type = if w <= 255 { char(w) } else { varchar(w) };
        TableSpec::new(
            name,
            vec![
                ColumnSpec::new("id", int()).not_null(),
                ColumnSpec::new("k", int())
                    .not_null()
                    .default(Datum::Int(0)),
                ColumnSpec::new("c", c_type)
                    .not_null()
                    .default(Datum::Bytes(Vec::new())),
                ColumnSpec::new("pad", char(60))
                    .not_null()
                    .default(Datum::Bytes(Vec::new())),
            ],
        )
        .primary_key(PrimaryKey::IntHandle("id".into()))
        .index(IndexSpec::new("k_1", &["k"]))
    }

    fn row(&mut self, id: i64) -> Vec<Datum> {
        let max_k = i64::try_from(self.cfg.rows_per_table.max(1)).unwrap_or(i64::MAX);
        vec![
            Datum::Int(id),
            Datum::Int(self.rng.random_range(1..=max_k)),
            Datum::Bytes(filler(&mut self.rng, self.cfg.row_width.max(1))),
            Datum::Bytes(filler(&mut self.rng, 60)),
        ]
    }
}

impl Workload for Sysbench {
    fn name(&self) -> &'static str {
        "sysbench"
    }

    fn setup(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        ensure_database(tidb, &self.cfg.db, sink)?;
        let db = self.cfg.db.clone();
        for (i, name) in self.table_names().into_iter().enumerate() {
            if let Ok(existing) = tidb.table(&db, &name) {
                // Resume over an existing table: learn its ids.
                let ts = tidb.tso().next();
                let snap = crate::export::snapshot_table(
                    tidb.store(),
                    ts,
                    db.clone(),
                    (*existing.info).clone(),
                )?;
                let ids: Vec<i64> = snap
                    .rows
                    .keys()
                    .filter_map(|h| match h {
                        Handle::Int(v) => Some(*v),
                        Handle::Common(_) => None,
                    })
                    .collect();
                if let (Some(next), Some(slot)) = (ids.iter().max(), self.next_id.get_mut(i)) {
                    *slot = next + 1;
                }
                if let Some(live) = self.live.get_mut(i) {
                    *live = ids;
                }
                continue;
            }
            let out = tidb.create_table(&db, &self.spec(&name))?;
            sink.ddl(&db, &name, &out);
            let table = tidb.table(&db, &name)?;
            let mut loaded = 0;
            while loaded < self.cfg.rows_per_table {
                let n = LOAD_BATCH.min(self.cfg.rows_per_table - loaded);
                let mut txn = tidb.begin();
                let first = self.next_id.get(i).copied().unwrap_or(1);
                for id in first..first + i64::try_from(n).unwrap_or(0) {
                    let row = self.row(id);
                    txn.insert(&table, row)?;
                }
                let info = txn.commit()?;
                sink.committed(&info);
                if let (Some(next), Some(live)) = (self.next_id.get_mut(i), self.live.get_mut(i)) {
                    live.extend(first..first + i64::try_from(n).unwrap_or(0));
                    *next = first + i64::try_from(n).unwrap_or(0);
                }
                loaded += n;
            }
        }
        Ok(())
    }

    fn step(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        let names = self.table_names();
        let tables = names
            .iter()
            .map(|n| tidb.table(&self.cfg.db, n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut txn = tidb.begin();
        let mut added: Vec<(usize, i64)> = Vec::new();
        let mut removed: HashSet<(usize, i64)> = HashSet::new();
        let mut next_ids = self.next_id.clone();
        let total = self.cfg.insert_weight + self.cfg.update_weight + self.cfg.delete_weight;
        for _ in 0..self.cfg.batch.max(1) {
            let ti = self.rng.random_range(0..tables.len());
            let (Some(table), Some(live)) = (tables.get(ti), self.live.get(ti)) else {
                continue;
            };
            let pick = self.rng.random_range(0..total.max(1));
            let existing = if live.is_empty() {
                None
            } else {
                live.get(self.rng.random_range(0..live.len())).copied()
            };
            let existing = existing.filter(|id| !removed.contains(&(ti, *id)));
            if pick < self.cfg.insert_weight || existing.is_none() {
                let Some(next) = next_ids.get_mut(ti) else {
                    continue;
                };
                let id = *next;
                *next += 1;
                let row = self.row(id);
                txn.insert(table, row)?;
                added.push((ti, id));
            } else if pick < self.cfg.insert_weight + self.cfg.update_weight {
                let Some(id) = existing else { continue };
                let handle = Handle::Int(id);
                let Some(mut row) = txn.get(table, &handle)? else {
                    continue;
                };
                if self.rng.random_bool(0.5) {
                    if let Some(Datum::Int(k)) = row.get_mut(1) {
                        *k = k.wrapping_add(1);
                    }
                } else if let Some(c) = row.get_mut(2) {
                    *c = Datum::Bytes(filler(&mut self.rng, self.cfg.row_width.max(1)));
                }
                txn.update(table, &handle, row)?;
            } else {
                let Some(id) = existing else { continue };
                txn.delete(table, &Handle::Int(id))?;
                if self.rng.random_bool(0.5) {
                    let row = self.row(id);
                    txn.insert(table, row)?;
                } else {
                    removed.insert((ti, id));
                }
            }
        }
        let info = txn.commit()?;
        sink.committed(&info);
        self.next_id = next_ids;
        for (ti, id) in added {
            if let Some(live) = self.live.get_mut(ti) {
                live.push(id);
            }
        }
        if !removed.is_empty() {
            for (ti, live) in self.live.iter_mut().enumerate() {
                live.retain(|id| !removed.contains(&(ti, *id)));
            }
        }
        Ok(())
    }
}
