//! Bank transfers: accounts spread over one or more tables, each transfer moves money between
//! two random accounts in one transaction. The total never changes, so any consistent snapshot
//! — upstream at any ts, or a downstream at its checkpoint — must sum to
//! [`Bank::expected_total`]. A torn transaction (half applied downstream) or a lost row shows
//! up as a wrong sum.
//!
//! Several `Bank` workloads over the same tables may run concurrently (the first one to run
//! `setup` creates and funds the accounts); their conflicting transfers fail with write
//! conflicts and are retried.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidal_model::Datum;
use tidal_model::tablecodec::Handle;

use super::{StepSink, Workload, ensure_database};
use crate::export::snapshot_tables;
use crate::mvcc::MvccStore;
use crate::tidb::types::{bigint, varchar};
use crate::tidb::{ColumnSpec, PrimaryKey, TableSpec, Tidb, TidbError};

/// Bank parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankConfig {
    /// RNG seed.
    pub seed: u64,
    /// Database name.
    pub db: String,
    /// Number of account tables `accounts1..N`.
    pub tables: usize,
    /// Accounts per table.
    pub accounts_per_table: i64,
    /// Initial balance of every account.
    pub initial_balance: i64,
    /// Largest amount moved by one transfer.
    pub max_transfer: i64,
}

impl Default for BankConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            db: "bank".into(),
            tables: 1,
            accounts_per_table: 100,
            initial_balance: 1000,
            max_transfer: 100,
        }
    }
}

/// The bank workload.
#[derive(Debug)]
pub struct Bank {
    cfg: BankConfig,
    rng: StdRng,
    transfers: u64,
}

impl Bank {
    /// A workload with these parameters.
    pub fn new(cfg: BankConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        Self {
            cfg,
            rng,
            transfers: 0,
        }
    }

    /// The parameters.
    pub fn config(&self) -> &BankConfig {
        &self.cfg
    }

    /// The account table names.
    pub fn table_names(&self) -> Vec<String> {
        (1..=self.cfg.tables.max(1))
            .map(|i| format!("accounts{i}"))
            .collect()
    }

    /// The sum of all balances, which no transfer changes.
    pub fn expected_total(&self) -> i64 {
        let n = i64::try_from(self.cfg.tables.max(1)).unwrap_or(i64::MAX);
        n.saturating_mul(self.cfg.accounts_per_table)
            .saturating_mul(self.cfg.initial_balance)
    }

    /// The sum of all balances in the store at `ts` (read through the snapshot export).
    pub fn total_at(&self, store: &MvccStore, ts: u64) -> Result<i64, TidbError> {
        let names = self.table_names();
        let wanted: Vec<(&str, &str)> = names
            .iter()
            .map(|n| (self.cfg.db.as_str(), n.as_str()))
            .collect();
        let mut total = 0i64;
        for snap in snapshot_tables(store, ts, &wanted)? {
            for row in snap.rows.values() {
                match row.get(1) {
                    Some(Datum::Int(b)) => total = total.wrapping_add(*b),
                    other => return Err(TidbError::Invalid(format!("balance {other:?}"))),
                }
            }
        }
        Ok(total)
    }

    fn spec(name: &str) -> TableSpec {
        TableSpec::new(
            name,
            vec![
                ColumnSpec::new("id", bigint()).not_null(),
                ColumnSpec::new("balance", bigint()).not_null(),
                ColumnSpec::new("note", varchar(32)),
            ],
        )
        .primary_key(PrimaryKey::IntHandle("id".into()))
    }
}

impl Workload for Bank {
    fn name(&self) -> &'static str {
        "bank"
    }

    fn setup(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        ensure_database(tidb, &self.cfg.db, sink)?;
        let db = self.cfg.db.clone();
        for name in self.table_names() {
            if tidb.table(&db, &name).is_ok() {
                continue;
            }
            let out = tidb.create_table(&db, &Self::spec(&name))?;
            sink.ddl(&db, &name, &out);
            let table = tidb.table(&db, &name)?;
            for chunk_start in (0..self.cfg.accounts_per_table).step_by(1000) {
                let mut txn = tidb.begin();
                for id in chunk_start..(chunk_start + 1000).min(self.cfg.accounts_per_table) {
                    txn.insert(
                        &table,
                        vec![
                            Datum::Int(id),
                            Datum::Int(self.cfg.initial_balance),
                            Datum::Null,
                        ],
                    )?;
                }
                sink.committed(&txn.commit()?);
            }
        }
        Ok(())
    }

    fn step(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        let names = self.table_names();
        let n = self.cfg.accounts_per_table.max(1);
        let from_t = self.rng.random_range(0..names.len());
        let to_t = self.rng.random_range(0..names.len());
        let from = self.rng.random_range(0..n);
        let mut to = self.rng.random_range(0..n);
        if from_t == to_t && to == from {
            to = (to + 1) % n;
        }
        let amount = self.rng.random_range(1..=self.cfg.max_transfer.max(1));
        let (Some(from_name), Some(to_name)) = (names.get(from_t), names.get(to_t)) else {
            return Ok(());
        };
        let from_table = tidb.table(&self.cfg.db, from_name)?;
        let to_table = tidb.table(&self.cfg.db, to_name)?;
        let mut txn = tidb.begin();
        let (hf, ht) = (Handle::Int(from), Handle::Int(to));
        let (Some(mut a), Some(mut b)) = (txn.get(&from_table, &hf)?, txn.get(&to_table, &ht)?)
        else {
            return Err(TidbError::Invalid("bank account missing".into()));
        };
        let (Some(Datum::Int(fa)), Some(Datum::Int(tb))) = (a.get(1).cloned(), b.get(1).cloned())
        else {
            return Err(TidbError::Invalid("bank balance is not an integer".into()));
        };
        let moved = amount.min(fa.max(0));
        self.transfers += 1;
        let note = Datum::Bytes(format!("xfer {}", self.transfers).into_bytes());
        if from_t == to_t && from == to {
            return Ok(());
        }
        a[1] = Datum::Int(fa - moved);
        a[2] = note.clone();
        b[1] = Datum::Int(tb + moved);
        b[2] = note;
        txn.update(&from_table, &hf, a)?;
        txn.update(&to_table, &ht, b)?;
        sink.committed(&txn.commit()?);
        Ok(())
    }
}
