//! A pipeline into a sink of its own: per-table row counts, reported once durable.
//!
//! [`CountingSink`] implements `tidal::sinks::Sink`. It does not write anywhere: a batch is
//! "durable" once its counts are folded into the totals, and the future it returns resolves
//! only then — which is what lets the changefeed move its checkpoint past the batch. DDL is
//! printed as it runs (after every earlier change to its table was reported durable).
//!
//! The example starts the embedded cluster, writes orders and users (inserts, updates, deletes,
//! and an `ADD COLUMN` in the middle), replicates them into the sink and prints the durable
//! counts per table next to the counts it wrote.
//!
//! Run with `cargo run --example custom_sink`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tidal::model::{Datum, DdlEvent, Handle, RowChangeKind, Ts};
use tidal::pipeline::Pipeline;
use tidal::sim::cluster::{SimCluster, SimConfig};
use tidal::sim::tidb::{ColumnSpec, PrimaryKey, TableSpec, Tidb, types};
use tidal::sinks::{FlushReport, Sink, SinkError, TableDef, TxnBatch};

/// Durable row changes of one table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    inserts: u64,
    updates: u64,
    deletes: u64,
    txns: u64,
}

/// A sink that keeps per-table counts of durable row changes.
#[derive(Debug, Default)]
struct CountingSink {
    totals: Mutex<BTreeMap<String, Counts>>,
    batches: Mutex<u64>,
}

impl CountingSink {
    fn totals(&self) -> BTreeMap<String, Counts> {
        self.totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Sink for CountingSink {
    fn kind(&self) -> &'static str {
        "counting"
    }

    fn write(&self, batch: TxnBatch) -> BoxFuture<'static, Result<FlushReport, SinkError>> {
        // `write` must not block: count now, report durable when the future is polled.
        let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
        for txn in &batch.txns {
            let name = format!("{}.{}", txn.table.schema_name, txn.table.table_name);
            let c = counts.entry(name).or_default();
            c.txns += 1;
            for row in &txn.rows {
                match row.kind {
                    RowChangeKind::Insert => c.inserts += 1,
                    RowChangeKind::Update => c.updates += 1,
                    RowChangeKind::Delete => c.deletes += 1,
                }
            }
        }
        let report = FlushReport {
            rows: batch.row_count() as u64,
            bytes: 0,
            max_commit_ts: batch.max_commit_ts().unwrap_or(Ts::ZERO).0,
        };
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        for (table, c) in counts {
            let t = totals.entry(table).or_default();
            t.inserts += c.inserts;
            t.updates += c.updates;
            t.deletes += c.deletes;
            t.txns += c.txns;
        }
        *self.batches.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        async move { Ok(report) }.boxed()
    }

    fn execute_ddl(
        &self,
        ddl: DdlEvent,
        _table: Option<Arc<TableDef>>,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        println!(
            "  DDL at {}: {:?} on {} ({})",
            ddl.commit_ts.0, ddl.action, ddl.table_name, ddl.query
        );
        async { Ok(()) }.boxed()
    }

    fn update_checkpoint(&self, ts: Ts) -> BoxFuture<'static, Result<(), SinkError>> {
        println!("  checkpoint {}", ts.0);
        async { Ok(()) }.boxed()
    }

    fn close(&self) -> BoxFuture<'static, Result<(), SinkError>> {
        async { Ok(()) }.boxed()
    }
}

fn table(name: &str) -> TableSpec {
    TableSpec::new(
        name,
        vec![
            ColumnSpec::new("id", types::bigint()).not_null(),
            ColumnSpec::new("v", types::varchar(64)),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()))
}

/// Writes `n` rows (ids `from..from + n`) into `shop.name`, 50 per transaction; returns the
/// last commit ts. Rows that exist already are overwritten (an update).
fn put(
    tidb: &Tidb,
    name: &str,
    from: i64,
    n: i64,
    extra: Option<Datum>,
) -> Result<Ts, Box<dyn std::error::Error>> {
    let t = tidb.table("shop", name)?;
    let mut last = Ts::ZERO;
    let mut id = from;
    while id < from + n {
        let mut txn = tidb.begin();
        for i in id..(id + 50).min(from + n) {
            let mut row = vec![
                Datum::Int(i),
                Datum::Bytes(format!("{name} {i}").into_bytes()),
            ];
            row.extend(extra.clone());
            txn.insert(&t, row)?;
        }
        id += 50;
        last = Ts(txn.commit()?.commit_ts.unwrap_or_default());
    }
    Ok(last)
}

fn delete(
    tidb: &Tidb,
    name: &str,
    ids: std::ops::Range<i64>,
) -> Result<Ts, Box<dyn std::error::Error>> {
    let t = tidb.table("shop", name)?;
    let mut txn = tidb.begin();
    for id in ids {
        txn.delete(&t, &Handle::Int(id))?;
    }
    Ok(Ts(txn.commit()?.commit_ts.unwrap_or_default()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster =
        SimCluster::start(SimConfig::with_min_ts_interval(Duration::from_millis(100))).await?;
    let tidb = cluster.tidb()?;
    tidb.create_database("shop")?;
    tidb.create_table("shop", &table("orders"))?;
    tidb.create_table("shop", &table("users"))?;

    let sink = Arc::new(CountingSink::default());
    let started = Instant::now();
    let handle = Pipeline::embedded(&cluster)
        .id("custom-sink")
        .filter(["shop.*"])
        .workers(2)
        .sink(sink.clone())
        .start()
        .await?;
    println!("pipeline started from ts {}", handle.checkpoint_ts().0);

    // orders: 5000 inserts, 500 updates, 200 deletes, with a column added half way.
    put(&tidb, "orders", 0, 3000, None)?;
    tidb.add_column(
        "shop",
        "orders",
        &ColumnSpec::new("amount", types::bigint()).default(Datum::Int(0)),
    )?;
    put(&tidb, "orders", 3000, 2000, Some(Datum::Int(42)))?;
    put(&tidb, "orders", 4500, 500, Some(Datum::Int(43)))?;
    delete(&tidb, "orders", 0..200)?;
    // users: 1000 inserts, 100 deletes.
    put(&tidb, "users", 0, 1000, None)?;
    let last = delete(&tidb, "users", 900..1000)?;

    let reached = handle
        .wait_checkpoint(last, Duration::from_secs(60))
        .await?;
    let elapsed = started.elapsed();
    if reached < last {
        return Err(format!("checkpoint stuck at {} below {}", reached.0, last.0).into());
    }
    let stats = handle.stats();
    println!(
        "durable: {} rows in {} batches within {:.2?} ({:.0} rows/s)",
        stats.rows_flushed,
        *sink.batches.lock().unwrap_or_else(|e| e.into_inner()),
        elapsed,
        stats.rows_flushed as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>6}",
        "table", "insert", "update", "delete", "txns"
    );
    for (table, c) in sink.totals() {
        println!(
            "{table:<12} {:>8} {:>8} {:>8} {:>6}",
            c.inserts, c.updates, c.deletes, c.txns
        );
    }
    println!("expected: shop.orders 5000/500/200, shop.users 1000/0/100 (insert/update/delete)");
    handle.stop();
    cluster.shutdown().await;
    Ok(())
}
