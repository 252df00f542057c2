//! Large transactions: each step is ONE transaction of many rows, cycling through inserting a
//! fresh batch of ids, updating that batch, and deleting it (so a long run keeps the store's
//! size bounded). They exercise what small transactions never do: prewrites and commits sent
//! in many batches, CDC messages split across events, sinks splitting a transaction only past
//! their batch size, memory quotas.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidal_model::Datum;
use tidal_model::tablecodec::Handle;

use super::{StepSink, Workload, ensure_database, filler};
use crate::tidb::types::{bigint, varchar};
use crate::tidb::{ColumnSpec, PrimaryKey, TableSpec, Tidb, TidbError};

/// Large-transaction parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LargeTxnConfig {
    /// RNG seed.
    pub seed: u64,
    /// Database name.
    pub db: String,
    /// Table name.
    pub table: String,
    /// Rows per transaction.
    pub rows_per_txn: usize,
    /// Width of the payload column.
    pub row_width: usize,
}

impl Default for LargeTxnConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            db: "large".into(),
            table: "t1".into(),
            rows_per_txn: 10_000,
            row_width: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Insert,
    Update,
    Delete,
}

/// The large-transaction workload.
#[derive(Debug)]
pub struct LargeTxn {
    cfg: LargeTxnConfig,
    rng: StdRng,
    phase: Phase,
    batch_start: i64,
}

impl LargeTxn {
    /// A workload with these parameters.
    pub fn new(cfg: LargeTxnConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        Self {
            cfg,
            rng,
            phase: Phase::Insert,
            batch_start: 1,
        }
    }

    fn row(&mut self, id: i64) -> Vec<Datum> {
        vec![
            Datum::Int(id),
            Datum::Int(self.rng.random_range(0..1_000_000)),
            Datum::Bytes(filler(&mut self.rng, self.cfg.row_width.clamp(1, 16_383))),
        ]
    }
}

impl Workload for LargeTxn {
    fn name(&self) -> &'static str {
        "large-txn"
    }

    fn setup(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        ensure_database(tidb, &self.cfg.db, sink)?;
        if tidb.table(&self.cfg.db, &self.cfg.table).is_err() {
            let width = i64::try_from(self.cfg.row_width.clamp(1, 16_383)).unwrap_or(64);
            let spec = TableSpec::new(
                self.cfg.table.clone(),
                vec![
                    ColumnSpec::new("id", bigint()).not_null(),
                    ColumnSpec::new("v", bigint()),
                    ColumnSpec::new("payload", varchar(width)),
                ],
            )
            .primary_key(PrimaryKey::IntHandle("id".into()));
            let out = tidb.create_table(&self.cfg.db, &spec)?;
            sink.ddl(&self.cfg.db, &self.cfg.table, &out);
        } else {
            // Start past any rows an earlier run left behind.
            self.batch_start = 1_000_000_000 + i64::from(self.rng.random::<u16>()) * 1_000_000;
        }
        Ok(())
    }

    fn step(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        let table = tidb.table(&self.cfg.db, &self.cfg.table)?;
        let n = i64::try_from(self.cfg.rows_per_txn.max(1)).unwrap_or(1);
        let ids = self.batch_start..self.batch_start + n;
        let mut txn = tidb.begin();
        match self.phase {
            Phase::Insert => {
                for id in ids {
                    let row = self.row(id);
                    txn.insert(&table, row)?;
                }
            }
            Phase::Update => {
                for id in ids {
                    let row = self.row(id);
                    txn.update(&table, &Handle::Int(id), row)?;
                }
            }
            Phase::Delete => {
                for id in ids {
                    txn.delete(&table, &Handle::Int(id))?;
                }
            }
        }
        sink.committed(&txn.commit()?);
        self.phase = match self.phase {
            Phase::Insert => Phase::Update,
            Phase::Update => Phase::Delete,
            Phase::Delete => {
                self.batch_start += n;
                Phase::Insert
            }
        };
        Ok(())
    }
}
