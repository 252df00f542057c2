//! A pipeline with a transform of its own: drop deletes and mask e-mail addresses before the
//! sink sees them.
//!
//! Starts the embedded cluster, writes users (and deletes some of them), then replicates
//! everything from before the first write with a transform that
//!
//! 1. removes delete changes (a downstream that keeps history, not state), and
//! 2. masks the `email` column (`alice@example.com` → `a****@example.com`),
//!
//! and prints the catch-up rate and a few of the rows as the sink received them.
//!
//! Run with `cargo run --example custom_transform`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidal::dataflow::timely::dataflow::operators::Inspect;
use tidal::dataflow::timely::dataflow::operators::vec::{Filter, Map};
use tidal::model::{Datum, Handle, RowChangeKind, Ts};
use tidal::pipeline::{Pipeline, TxnItem};
use tidal::sim::cluster::{SimCluster, SimConfig};
use tidal::sim::tidb::{ColumnSpec, PrimaryKey, TableSpec, Tidb, types};

const USERS: i64 = 20_000;
const PER_TXN: i64 = 100;
const DELETED: i64 = 2_000;

/// `alice@example.com` → `a****@example.com`; anything without an `@` is blanked.
fn mask_email(email: &[u8]) -> Vec<u8> {
    match email.iter().position(|&b| b == b'@') {
        Some(at) => {
            let mut out = email.get(..1.min(at)).unwrap_or_default().to_vec();
            out.extend_from_slice(b"****");
            out.extend_from_slice(email.get(at..).unwrap_or_default());
            out
        }
        None => b"****".to_vec(),
    }
}

/// Masks the `email` column of every row image of `item`, wherever the column is in this
/// table version.
fn mask(mut item: TxnItem) -> TxnItem {
    let position = item
        .txn
        .table
        .info
        .public_columns()
        .iter()
        .position(|c| c.name.L == "email");
    if let Some(i) = position {
        for row in &mut item.txn.rows {
            for image in [&mut row.old, &mut row.new].into_iter().flatten() {
                if let Some(Datum::Bytes(v)) = image.get_mut(i) {
                    *v = mask_email(v);
                }
            }
        }
    }
    item
}

/// A row image as `(1, "user 1", "u****@example.com")`.
fn show(image: Option<&[Datum]>) -> String {
    let Some(values) = image else {
        return "-".to_string();
    };
    let parts: Vec<String> = values
        .iter()
        .map(|d| match d {
            Datum::Int(i) => i.to_string(),
            Datum::Bytes(b) => format!("{:?}", String::from_utf8_lossy(b)),
            other => format!("{other:?}"),
        })
        .collect();
    format!("({})", parts.join(", "))
}

fn users_table() -> TableSpec {
    TableSpec::new(
        "users",
        vec![
            ColumnSpec::new("id", types::bigint()).not_null(),
            ColumnSpec::new("name", types::varchar(64)),
            ColumnSpec::new("email", types::varchar(128)),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()))
}

fn write_users(tidb: &Tidb) -> Result<Ts, Box<dyn std::error::Error>> {
    let users = tidb.table("shop", "users")?;
    let mut last = Ts::ZERO;
    for chunk in 0..USERS / PER_TXN {
        let mut txn = tidb.begin();
        for id in chunk * PER_TXN..(chunk + 1) * PER_TXN {
            txn.insert(
                &users,
                vec![
                    Datum::Int(id),
                    Datum::Bytes(format!("user {id}").into_bytes()),
                    Datum::Bytes(format!("user{id}@example.com").into_bytes()),
                ],
            )?;
        }
        last = Ts(txn.commit()?.commit_ts.unwrap_or_default());
    }
    for chunk in 0..DELETED / PER_TXN {
        let mut txn = tidb.begin();
        for id in chunk * PER_TXN..(chunk + 1) * PER_TXN {
            txn.delete(&users, &Handle::Int(id))?;
        }
        last = Ts(txn.commit()?.commit_ts.unwrap_or_default());
    }
    Ok(last)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster =
        SimCluster::start(SimConfig::with_min_ts_interval(Duration::from_millis(100))).await?;
    let tidb = cluster.tidb()?;
    tidb.create_database("shop")?;
    tidb.create_table("shop", &users_table())?;

    let start_ts = Ts(cluster.tso().next());
    let written = Instant::now();
    let last = write_users(&tidb)?;
    println!(
        "wrote {USERS} users and deleted {DELETED} in {:.2?}",
        written.elapsed()
    );

    let deletes_dropped = Arc::new(AtomicU64::new(0));
    let samples: Arc<Mutex<Vec<String>>> = Arc::default();
    let (dropped, seen) = (Arc::clone(&deletes_dropped), Arc::clone(&samples));
    let started = Instant::now();
    let handle = Pipeline::embedded(&cluster)
        .id("custom-transform")
        .filter(["shop.*"])
        .start_ts(start_ts)
        .target_ts(last)
        .workers(2)
        .sink_uri("blackhole://")
        // 1. Drop deletes; a transaction left without rows is dropped whole.
        .transform(move |txns| {
            let dropped = Arc::clone(&dropped);
            txns.map(move |mut item: TxnItem| {
                let before = item.txn.rows.len();
                item.txn.rows.retain(|r| r.kind != RowChangeKind::Delete);
                let gone = (before - item.txn.rows.len()) as u64;
                dropped.fetch_add(gone, Ordering::Relaxed);
                item
            })
            .filter(|item| !item.txn.rows.is_empty())
        })
        // 2. Mask e-mail addresses, and keep a few rows to show.
        .transform(move |txns| {
            let seen = Arc::clone(&seen);
            txns.map(mask).inspect(move |item: &TxnItem| {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                for row in item.txn.rows.iter().take(3 - seen.len().min(3)) {
                    seen.push(format!("{:?} {}", row.kind, show(row.new.as_deref())));
                }
            })
        })
        .start()
        .await?;

    while !handle.is_finished() && handle.error().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    if let Some(e) = handle.error() {
        return Err(e.into());
    }
    let stats = handle.stats();
    println!(
        "replicated {} rows in {:.2?}: {:.0} rows/s (checkpoint {})",
        stats.rows_flushed,
        elapsed,
        stats.rows_flushed as f64 / elapsed.as_secs_f64().max(1e-9),
        handle.checkpoint_ts().0
    );
    println!(
        "decoded {} row changes, dropped {} deletes",
        stats.rows_emitted,
        deletes_dropped.load(Ordering::Relaxed)
    );
    println!("first rows as the sink saw them:");
    for s in samples.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("  {s}");
    }
    handle.stop();
    cluster.shutdown().await;
    Ok(())
}
