//! Inputs shared by the micro-benchmarks: realistic table schemas, rows and their TiKV bytes.
//!
//! The schemas are built by the simulator's TiDB stand-in (`tidal_sim::tidb`), so the
//! `TableInfo`s, row keys and row-format-v2 values the benchmarks feed to the code under test
//! are the ones TiDB would write, not hand-written approximations. Row contents come from a
//! fixed-seed generator: every run measures the same bytes, and no `rand` dependency is needed.
//!
//! Each bench target includes this module with `mod common;` and uses only part of it.
#![allow(dead_code)]

use std::sync::Arc;

use tidal_model::change::{RawKvChange, RawOp};
use tidal_model::schema::TableInfo;
use tidal_model::{Datum, RowChange, RowChangeKind, Ts, tablecodec};
use tidal_sim::mvcc::MvccStore;
use tidal_sim::region::{RegionConfig, RegionManager};
use tidal_sim::tidb::types::{
    bigint, char, date, datetime, decimal, double, enum_of, int, json, time, tinyint, unsigned,
    varchar,
};
use tidal_sim::tidb::{ColumnSpec, IndexSpec, PrimaryKey, Table, TableSpec, Tidb};
use tidal_sim::tso::Tso;

/// A raw row key and its row value.
pub type Kv = (Vec<u8>, Vec<u8>);

/// A small deterministic generator (xorshift64*): reproducible inputs without extra crates.
#[derive(Debug, Clone)]
pub struct Gen(u64);

impl Gen {
    /// A generator with a fixed, non-zero seed.
    pub fn new(seed: u64) -> Gen {
        Gen(seed | 1)
    }

    /// The next pseudo-random 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Printable filler of `len` bytes, in the style of sysbench's `c` and `pad` columns.
    pub fn filler(&mut self, len: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz-";
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize])
            .collect()
    }
}

/// A TiDB stand-in over a fresh in-memory store, used only to build schemas.
pub fn tidb() -> Tidb {
    let store = MvccStore::new();
    let regions = RegionManager::new(store.clone(), &RegionConfig::default());
    Tidb::new(store, Tso::new(), regions).expect("bootstrap the TiDB stand-in")
}

/// `sbtest1 (id INT PRIMARY KEY, k INT, c CHAR(120), pad CHAR(60), KEY k_1 (k))`, as sysbench
/// creates it.
pub fn sysbench_spec() -> TableSpec {
    TableSpec::new(
        "sbtest1",
        vec![
            ColumnSpec::new("id", int()).not_null(),
            ColumnSpec::new("k", int())
                .not_null()
                .default(Datum::Int(0)),
            ColumnSpec::new("c", char(120))
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

/// A wide table mixing the types that cost the most to decode and render: DECIMAL, DATETIME(6),
/// DATE, TIME(3), JSON, VARCHAR, DOUBLE, ENUM, unsigned BIGINT, TINYINT and a nullable column.
pub fn wide_spec() -> TableSpec {
    TableSpec::new(
        "orders_wide",
        vec![
            ColumnSpec::new("id", bigint()).not_null(),
            ColumnSpec::new("amount", decimal(20, 6)).not_null(),
            ColumnSpec::new("created_at", datetime(6)).not_null(),
            ColumnSpec::new("ship_date", date()),
            ColumnSpec::new("window", time(3)),
            ColumnSpec::new("attrs", json()),
            ColumnSpec::new("customer", varchar(64)).not_null(),
            ColumnSpec::new("note", varchar(255)),
            ColumnSpec::new("score", double()),
            ColumnSpec::new("status", enum_of(&["new", "paid", "shipped", "returned"])),
            ColumnSpec::new("quantity", unsigned(bigint())),
            ColumnSpec::new("flag", tinyint()),
            ColumnSpec::new("coupon", varchar(32)),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()))
}

/// The two benchmark tables, created in database `bench` of a fresh stand-in.
pub struct Tables {
    /// The stand-in that owns the schemas.
    pub tidb: Tidb,
    /// `bench.sbtest1`.
    pub sysbench: Table,
    /// `bench.orders_wide`.
    pub wide: Table,
}

/// Creates [`sysbench_spec`] and [`wide_spec`] in a fresh stand-in.
pub fn tables() -> Tables {
    let tidb = tidb();
    tidb.create_database("bench").expect("create database");
    tidb.create_table("bench", &sysbench_spec())
        .expect("create sbtest1");
    tidb.create_table("bench", &wide_spec())
        .expect("create orders_wide");
    let sysbench = tidb.table("bench", "sbtest1").expect("sbtest1");
    let wide = tidb.table("bench", "orders_wide").expect("orders_wide");
    Tables {
        tidb,
        sysbench,
        wide,
    }
}

/// One sysbench row: `id`, a random `k`, 120 bytes of `c` and 60 of `pad`.
pub fn sysbench_row(g: &mut Gen, id: i64) -> Vec<Datum> {
    vec![
        Datum::Int(id),
        Datum::Int(1 + g.below(1_000_000) as i64),
        Datum::Bytes(g.filler(120)),
        Datum::Bytes(g.filler(60)),
    ]
}

/// One row of [`wide_spec`], with every column set except `coupon` (NULL).
pub fn wide_row(g: &mut Gen, id: i64) -> Vec<Datum> {
    let cents = g.below(100_000_000);
    let amount = format!("{}.{:06}", cents / 100, g.below(1_000_000));
    let created = format!(
        "2024-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        1 + g.below(12),
        1 + g.below(28),
        g.below(24),
        g.below(60),
        g.below(60),
        g.below(1_000_000)
    );
    let ship = format!("2024-{:02}-{:02}", 1 + g.below(12), 1 + g.below(28));
    let window = format!(
        "{:02}:{:02}:{:02}.{:03}",
        g.below(24),
        g.below(60),
        g.below(60),
        g.below(1000)
    );
    let attrs = format!(
        r#"{{"channel":"web","items":[{},{},{}],"gift":{},"ref":"{}"}}"#,
        g.below(1000),
        g.below(1000),
        g.below(1000),
        g.below(2) == 1,
        String::from_utf8_lossy(&g.filler(12))
    );
    let mut customer = b"customer-".to_vec();
    customer.extend(g.filler(16));
    vec![
        Datum::Int(id),
        Datum::Decimal(amount.parse().expect("decimal literal")),
        Datum::Time(created.parse().expect("datetime literal")),
        Datum::Time(ship.parse().expect("date literal")),
        Datum::Duration(window.parse().expect("time literal")),
        Datum::Json(attrs.parse().expect("json literal")),
        Datum::Bytes(customer),
        Datum::Bytes(g.filler(80)),
        Datum::Float64(g.below(1_000_000) as f64 / 7.0),
        Datum::Enum(1 + g.below(4)),
        Datum::Uint(g.below(500)),
        Datum::Int(g.below(2) as i64),
        Datum::Null,
    ]
}

/// The `(column id, datum, type)` triples TiDB puts in a row value: every public column except
/// the int handle (which lives in the key).
pub fn value_columns<'a>(
    info: &'a TableInfo,
    row: &'a [Datum],
) -> Vec<(i64, &'a Datum, &'a tidal_model::schema::FieldType)> {
    let handle = info.pk_handle_column().map(|c| c.id);
    info.public_columns()
        .into_iter()
        .zip(row)
        .filter(|(c, _)| Some(c.id) != handle)
        .map(|(c, d)| (c.id, d, &c.field_type))
        .collect()
}

/// The raw row key and row-format-v2 value of `row` (its first column is the int handle).
pub fn row_kv(table: &Table, row: &[Datum]) -> Kv {
    let Some(Datum::Int(id)) = row.first() else {
        panic!("benchmark rows start with an int handle");
    };
    let key = tablecodec::encode_row_key_int(table.id(), *id);
    let value =
        tidal_model::rowcodec::encode_row_v2(&value_columns(&table.info, row)).expect("encode row");
    (key, value)
}

/// `n` sysbench rows with ids `first..first + n`, as (key, value) bytes.
pub fn sysbench_kvs(table: &Table, g: &mut Gen, first: i64, n: usize) -> Vec<Kv> {
    (0..n as i64)
        .map(|i| row_kv(table, &sysbench_row(g, first + i)))
        .collect()
}

/// Raw committed inserts, as the matcher emits them, for `n` sysbench rows.
pub fn sysbench_raw_changes(table: &Table, g: &mut Gen, n: usize) -> Vec<RawKvChange> {
    sysbench_kvs(table, g, 1, n)
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| RawKvChange {
            op: RawOp::Put,
            key,
            value,
            old_value: Vec::new(),
            start_ts: Ts(1000 + 2 * i as u64),
            commit_ts: Ts(1001 + 2 * i as u64),
            region_id: 1,
        })
        .collect()
}

/// A decoded sysbench row change (`Update` with both images when `update`, else `Insert`).
pub fn sysbench_change(table: &Table, g: &mut Gen, id: i64, update: bool) -> RowChange {
    let new = sysbench_row(g, id);
    let old = update.then(|| sysbench_row(g, id));
    RowChange {
        table_id: table.id(),
        start_ts: Ts(449_567_891_234_567_000),
        commit_ts: Ts(449_567_891_234_567_890),
        kind: if update {
            RowChangeKind::Update
        } else {
            RowChangeKind::Insert
        },
        handle: tidal_model::Handle::Int(id),
        old,
        new: Some(new),
    }
}

/// The schema handle sinks take.
pub fn table_def(table: &Table) -> Arc<tidal_sinks::sink::TableDef> {
    Arc::new(tidal_sinks::sink::TableDef {
        schema_name: table.db.clone(),
        table_name: table.name().to_owned(),
        info: Arc::clone(&table.info),
        version: 449_567_800_000_000_000,
    })
}
