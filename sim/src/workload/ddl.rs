//! A DDL mix: tables created, dropped, truncated and renamed (within and across databases),
//! columns added, dropped and widened, indexes added and dropped — interleaved with DML on the
//! very tables being changed. It is what makes schema-versioned decoding, DDL ordering against
//! DML, new-table spans and retired table ids matter.
//!
//! The generator reads the current schema from the catalog before each DML, so its rows always
//! fit the latest columns; it only asks for DDL TiDB would accept.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidal_model::schema::{ColumnInfo, FieldType};
use tidal_model::tablecodec::Handle;
use tidal_model::{Datum, mysql};

use super::{StepSink, Workload, ensure_database, filler};
use crate::tidb::types::{bigint, int, varchar};
use crate::tidb::{ColumnSpec, IndexSpec, PrimaryKey, Table, TableSpec, Tidb, TidbError};

/// DDL-mix parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DdlMixConfig {
    /// RNG seed.
    pub seed: u64,
    /// The main database; a second one, `<db>_2`, receives cross-database renames.
    pub db: String,
    /// Tables created at setup.
    pub initial_tables: usize,
    /// At most this many tables exist at once.
    pub max_tables: usize,
    /// Fraction of steps that are DDL (the rest are DML transactions).
    pub ddl_ratio: f64,
}

impl Default for DdlMixConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            db: "ddlmix".into(),
            initial_tables: 3,
            max_tables: 8,
            ddl_ratio: 0.3,
        }
    }
}

#[derive(Debug, Clone)]
struct TableState {
    db: String,
    name: String,
    live: Vec<i64>,
    next_id: i64,
}

/// The DDL-mix workload.
#[derive(Debug)]
pub struct DdlMix {
    cfg: DdlMixConfig,
    rng: StdRng,
    tables: Vec<TableState>,
    counter: u64,
}

fn value_for(rng: &mut StdRng, col: &ColumnInfo) -> Datum {
    let ft: &FieldType = &col.field_type;
    if !col.is_not_null() && rng.random_ratio(1, 10) {
        return Datum::Null;
    }
    match ft.tp {
        tp if mysql::is_integer_type(tp) => {
            if ft.is_unsigned() {
                Datum::Uint(rng.random_range(0..100_000))
            } else {
                Datum::Int(rng.random_range(-1000..100_000))
            }
        }
        tp if mysql::is_string_type(tp) => {
            let max = usize::try_from(ft.flen.clamp(1, 24)).unwrap_or(8);
            let len = rng.random_range(1..=max);
            Datum::Bytes(filler(rng, len))
        }
        _ => Datum::Null,
    }
}

impl DdlMix {
    /// A workload with these parameters.
    pub fn new(cfg: DdlMixConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        Self {
            cfg,
            rng,
            tables: Vec::new(),
            counter: 0,
        }
    }

    fn second_db(&self) -> String {
        format!("{}_2", self.cfg.db)
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    fn create(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        let name = self.fresh("t");
        let spec = TableSpec::new(
            name.clone(),
            vec![
                ColumnSpec::new("id", bigint()).not_null(),
                ColumnSpec::new("v", int()),
                ColumnSpec::new("s", varchar(32)).default(Datum::Bytes(b"-".to_vec())),
            ],
        )
        .primary_key(PrimaryKey::IntHandle("id".into()));
        let db = self.cfg.db.clone();
        let out = tidb.create_table(&db, &spec)?;
        sink.ddl(&db, &name, &out);
        self.tables.push(TableState {
            db,
            name,
            live: Vec::new(),
            next_id: 1,
        });
        Ok(())
    }

    fn row(&mut self, table: &Table, id: i64) -> Vec<Datum> {
        table
            .columns()
            .into_iter()
            .map(|c| {
                if c.is_pri_key() {
                    Datum::Int(id)
                } else {
                    value_for(&mut self.rng, c)
                }
            })
            .collect()
    }

    fn dml(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>, ti: usize) -> Result<(), TidbError> {
        let Some(st) = self.tables.get(ti).cloned() else {
            return Ok(());
        };
        let table = tidb.table(&st.db, &st.name)?;
        let mut txn = tidb.begin();
        let mut live = st.live.clone();
        let mut next_id = st.next_id;
        for _ in 0..self.rng.random_range(1..=4) {
            let pick = self.rng.random_range(0..10);
            if pick < 5 || live.is_empty() {
                let row = self.row(&table, next_id);
                txn.insert(&table, row)?;
                live.push(next_id);
                next_id += 1;
            } else {
                let i = self.rng.random_range(0..live.len());
                let Some(id) = live.get(i).copied() else {
                    continue;
                };
                if pick < 8 {
                    let row = self.row(&table, id);
                    txn.update(&table, &Handle::Int(id), row)?;
                } else {
                    txn.delete(&table, &Handle::Int(id))?;
                    live.swap_remove(i);
                }
            }
        }
        sink.committed(&txn.commit()?);
        if let Some(s) = self.tables.get_mut(ti) {
            s.live = live;
            s.next_id = next_id;
        }
        Ok(())
    }

    fn ddl(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>, ti: usize) -> Result<(), TidbError> {
        if self.tables.len() < self.cfg.max_tables && self.rng.random_ratio(1, 5) {
            return self.create(tidb, sink);
        }
        let Some(st) = self.tables.get(ti).cloned() else {
            return Ok(());
        };
        let table = tidb.table(&st.db, &st.name)?;
        let extra_cols: Vec<String> = table
            .columns()
            .iter()
            .filter(|c| c.name.L.starts_with('c'))
            .map(|c| c.name.O.clone())
            .collect();
        let indexed = |name: &str| {
            table
                .info
                .index_info
                .iter()
                .any(|i| i.idx_cols.iter().any(|c| c.name.L == name))
        };
        let droppable: Vec<String> = extra_cols.iter().filter(|c| !indexed(c)).cloned().collect();
        let narrow_ints: Vec<String> = table
            .columns()
            .iter()
            .filter(|c| c.name.L.starts_with('c') && c.field_type.tp == mysql::TYPE_LONG)
            .map(|c| c.name.O.clone())
            .collect();
        let indexes: Vec<String> = table
            .info
            .index_info
            .iter()
            .map(|i| i.idx_name.O.clone())
            .collect();
        let (db, name) = (st.db.clone(), st.name.clone());
        let mut rec = (db.clone(), name.clone());
        let out = match self.rng.random_range(0..9) {
            0 if self.tables.len() > 2 => {
                let out = tidb.drop_table(&db, &name)?;
                self.tables.remove(ti);
                out
            }
            1 => {
                let out = tidb.truncate_table(&db, &name)?;
                if let Some(s) = self.tables.get_mut(ti) {
                    s.live.clear();
                }
                out
            }
            2 => {
                let new_db = if self.rng.random_bool(0.5) {
                    self.cfg.db.clone()
                } else {
                    self.second_db()
                };
                let new_name = self.fresh("t");
                let out = tidb.rename_table(&db, &name, &new_db, &new_name)?;
                rec = (new_db.clone(), new_name.clone());
                if let Some(s) = self.tables.get_mut(ti) {
                    s.db = new_db;
                    s.name = new_name;
                }
                out
            }
            3 | 4 => {
                let col = self.fresh("c");
                let spec = match self.rng.random_range(0..3) {
                    0 => ColumnSpec::new(col, int()),
                    1 => ColumnSpec::new(col, int())
                        .not_null()
                        .default(Datum::Int(self.rng.random_range(0..100))),
                    _ => ColumnSpec::new(col, varchar(16)).default(Datum::Bytes(b"dflt".to_vec())),
                };
                tidb.add_column(&db, &name, &spec)?
            }
            5 if !droppable.is_empty() => {
                let c = &droppable[self.rng.random_range(0..droppable.len())];
                tidb.drop_column(&db, &name, c)?
            }
            6 if !extra_cols.is_empty() || indexes.len() < 2 => {
                let col = if extra_cols.is_empty() || self.rng.random_bool(0.3) {
                    "v".to_owned()
                } else {
                    extra_cols[self.rng.random_range(0..extra_cols.len())].clone()
                };
                let ix = self.fresh("i");
                tidb.add_index(&db, &name, &IndexSpec::new(ix, &[col.as_str()]))?
            }
            7 if !indexes.is_empty() => {
                let ix = &indexes[self.rng.random_range(0..indexes.len())];
                tidb.drop_index(&db, &name, ix)?
            }
            8 if !narrow_ints.is_empty() => {
                let c = &narrow_ints[self.rng.random_range(0..narrow_ints.len())];
                let old = table
                    .info
                    .column_by_name(c)
                    .map(|c| !c.is_not_null())
                    .unwrap_or(true);
                let mut spec = ColumnSpec::new(c.clone(), bigint());
                spec.nullable = old;
                if !old {
                    spec.default = Some(Datum::Int(0));
                }
                tidb.modify_column(&db, &name, c, &spec)?
            }
            _ => return self.dml(tidb, sink, ti),
        };
        sink.ddl(&rec.0, &rec.1, &out);
        Ok(())
    }
}

impl Workload for DdlMix {
    fn name(&self) -> &'static str {
        "ddl"
    }

    fn setup(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        ensure_database(tidb, &self.cfg.db, sink)?;
        ensure_database(tidb, &self.second_db(), sink)?;
        // A resumed run keeps to tables of its own making: start past existing names.
        self.counter =
            u64::try_from(tidb.tables(&self.cfg.db)?.len() + tidb.tables(&self.second_db())?.len())
                .unwrap_or(0)
                * 1000;
        for _ in 0..self.cfg.initial_tables.max(1) {
            self.create(tidb, sink)?;
        }
        Ok(())
    }

    fn step(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError> {
        if self.tables.is_empty() {
            return self.create(tidb, sink);
        }
        let ti = self.rng.random_range(0..self.tables.len());
        if self.rng.random_bool(self.cfg.ddl_ratio.clamp(0.0, 1.0)) {
            self.ddl(tidb, sink, ti)
        } else {
            self.dml(tidb, sink, ti)
        }
    }
}
