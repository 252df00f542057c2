//! Many tables: creates a large number of small tables (100 000 and more for benchmarks), then
//! writes single rows into random ones. It stresses what scales with the table count — schema
//! storage, span bookkeeping, one region (or not) per table.
//!
//! Tables are created in batches, each batch one `create tables` job (as TiDB's batch create
//! does), so setup costs a few transactions per thousand tables rather than four per table.
//! Splitting a region per table is optional because it multiplies the region count.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidal_model::Datum;

use super::{StepSink, Workload, ensure_database};
use crate::tidb::types::int;
use crate::tidb::{ColumnSpec, PrimaryKey, TableSpec, Tidb, TidbError};

/// Many-tables parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManyTablesConfig {
    /// RNG seed.
    pub seed: u64,
    /// Database name.
    pub db: String,
    /// Number of tables `t1..N`.
    pub tables: usize,
    /// Tables per `create tables` job.
    pub batch: usize,
    /// Split a region at each table (TiDB's default; costly with 100k tables).
    pub split_regions: bool,
}

impl Default for ManyTablesConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            db: "many".into(),
            tables: 10_000,
            batch: 1000,
            split_regions: false,
        }
    }
}

/// The many-tables workload.
#[derive(Debug)]
pub struct ManyTables {
    cfg: ManyTablesConfig,
    rng: StdRng,
    next_id: Vec<i64>,
}

impl ManyTables {
    /// A workload with these parameters.
    pub fn new(cfg: ManyTablesConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        let n = cfg.tables.max(1);
        Self {
            cfg,
            rng,
            next_id: vec![1; n],
        }
    }

    fn spec(i: usize) -> TableSpec {
        TableSpec::new(
            format!("t{i}"),
            vec![
                ColumnSpec::new("id", int()).not_null(),
                ColumnSpec::new("v", int()),
            ],
        )
        .primary_key(PrimaryKey::IntHandle("id".into()))
    }
}

impl Workload for ManyTables {
    fn name(&self) -> &'static str {
        "many-tables"
    }

    fn setup(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        ensure_database(tidb, &self.cfg.db, sink)?;
        let existing = tidb.tables(&self.cfg.db)?.len();
        let total = self.cfg.tables.max(1);
        let mut i = existing + 1;
        while i <= total {
            let end = (i + self.cfg.batch.max(1)).min(total + 1);
            let specs: Vec<TableSpec> = (i..end).map(Self::spec).collect();
            let out = tidb.create_tables(&self.cfg.db, &specs, self.cfg.split_regions)?;
            sink.ddl(&self.cfg.db, "", &out);
            i = end;
        }
        Ok(())
    }

    fn step(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        let i = self.rng.random_range(0..self.next_id.len());
        let table = tidb.table(&self.cfg.db, &format!("t{}", i + 1))?;
        let Some(next) = self.next_id.get(i).copied() else {
            return Ok(());
        };
        let mut txn = tidb.begin();
        txn.insert(
            &table,
            vec![Datum::Int(next), Datum::Int(self.rng.random_range(0..1000))],
        )?;
        sink.committed(&txn.commit()?);
        if let Some(slot) = self.next_id.get_mut(i) {
            *slot = next + 1;
        }
        Ok(())
    }
}
