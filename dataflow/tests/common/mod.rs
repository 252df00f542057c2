//! Shared test support: the embedded cluster with its TiDB stand-in, a recording sink that
//! implements the real `Sink` trait, and helpers to run changefeeds and check watermarks.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tidal_dataflow::{ChangefeedHandle, ChangefeedSpec, RunConfig, Watermarks, start_changefeed};
use tidal_ingest::pd::{PdClient, PdConfig};
use tidal_model::tablecodec::Handle;
use tidal_model::{Datum, DdlEvent, RowChangeKind, Ts};
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::tidb::{ColumnSpec, CommitInfo, PrimaryKey, TableSpec, Tidb, types};
use tidal_sinks::{FlushReport, Sink, SinkError, SinkTxn, TableDef, TxnBatch};

pub async fn within<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("operation hung")
}

pub struct Env {
    pub cluster: SimCluster,
    pub tidb: Tidb,
    pub pd: Arc<PdClient>,
}

pub async fn env() -> Env {
    let cfg = SimConfig::with_min_ts_interval(Duration::from_millis(50));
    let cluster = SimCluster::start(cfg).await.unwrap();
    let tidb = cluster.tidb().unwrap();
    let pd = within(10, PdClient::connect(PdConfig::new(cluster.pd_endpoints())))
        .await
        .unwrap();
    Env {
        cluster,
        tidb,
        pd: Arc::new(pd),
    }
}

impl Env {
    pub fn now(&self) -> Ts {
        Ts(self.cluster.tso().next())
    }
}

pub fn table_spec(name: &str) -> TableSpec {
    TableSpec::new(
        name,
        vec![
            ColumnSpec::new("id", types::bigint()).not_null(),
            ColumnSpec::new("v", types::varchar(64)),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()))
}

pub fn row(id: i64, v: &str) -> Vec<Datum> {
    vec![Datum::Int(id), Datum::Bytes(v.as_bytes().to_vec())]
}

/// Inserts (or overwrites) rows in one transaction; returns its commit ts.
pub fn upsert(tidb: &Tidb, db: &str, table: &str, rows: Vec<Vec<Datum>>) -> Ts {
    for _ in 0..20 {
        let t = tidb.table(db, table).unwrap();
        let mut txn = tidb.begin();
        for r in rows.clone() {
            txn.insert(&t, r).unwrap();
        }
        match txn.commit() {
            Ok(CommitInfo {
                commit_ts: Some(c), ..
            }) => return Ts(c),
            Ok(_) => panic!("rolled back"),
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("commit failed: {e}"),
        }
    }
    panic!("commit kept failing");
}

/// Deletes a row by int handle; returns the commit ts.
pub fn delete(tidb: &Tidb, db: &str, table: &str, id: i64) -> Ts {
    let t = tidb.table(db, table).unwrap();
    let mut txn = tidb.begin();
    txn.delete(&t, &Handle::Int(id)).unwrap();
    Ts(txn.commit().unwrap().commit_ts.unwrap())
}

/// What the recording sink saw, in call order.
#[derive(Debug, Clone)]
pub enum Record {
    Txn(SinkTxn),
    Ddl(Box<DdlEvent>, Option<Arc<TableDef>>),
}

/// A sink that records every call (in call order) and reports batches durable after `delay`.
#[derive(Default)]
pub struct RecordingSink {
    pub log: Mutex<Vec<Record>>,
    pub delay: Mutex<Duration>,
    pub writes: AtomicU64,
    /// Commit ts durable so far (max), for checking the checkpoint never passes undurable data.
    pub durable: Mutex<Vec<(Ts, Ts)>>,
}

impl RecordingSink {
    pub fn new() -> Arc<RecordingSink> {
        Arc::new(RecordingSink::default())
    }

    pub fn with_delay(d: Duration) -> Arc<RecordingSink> {
        let s = RecordingSink::default();
        *s.delay.lock() = d;
        Arc::new(s)
    }

    pub fn records(&self) -> Vec<Record> {
        self.log.lock().clone()
    }

    pub fn txns(&self) -> Vec<SinkTxn> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Txn(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    pub fn ddls(&self) -> Vec<DdlEvent> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Ddl(d, _) => Some(*d),
                _ => None,
            })
            .collect()
    }
}

impl Sink for RecordingSink {
    fn kind(&self) -> &'static str {
        "recording"
    }

    fn write(&self, batch: TxnBatch) -> BoxFuture<'static, Result<FlushReport, SinkError>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let rows = batch.row_count() as u64;
        let max = batch.max_commit_ts().unwrap_or(Ts::ZERO);
        {
            let mut log = self.log.lock();
            for t in batch.txns {
                log.push(Record::Txn(t));
            }
        }
        let delay = *self.delay.lock();
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(FlushReport {
                rows,
                bytes: 0,
                max_commit_ts: max.0,
            })
        }
        .boxed()
    }

    fn execute_ddl(
        &self,
        ddl: DdlEvent,
        table: Option<Arc<TableDef>>,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        self.log.lock().push(Record::Ddl(Box::new(ddl), table));
        async { Ok(()) }.boxed()
    }

    fn update_checkpoint(&self, _ts: Ts) -> BoxFuture<'static, Result<(), SinkError>> {
        async { Ok(()) }.boxed()
    }

    fn close(&self) -> BoxFuture<'static, Result<(), SinkError>> {
        async { Ok(()) }.boxed()
    }
}

pub async fn start(
    env: &Env,
    sink: Arc<RecordingSink>,
    start_ts: Ts,
    workers: usize,
    tweak: impl FnOnce(&mut ChangefeedSpec),
) -> ChangefeedHandle {
    let mut spec = ChangefeedSpec::new("test-cf", Arc::clone(&env.pd), start_ts, sink);
    tweak(&mut spec);
    within(30, start_changefeed(spec, RunConfig::process(workers)))
        .await
        .expect("changefeed starts")
}

/// Samples the watermarks until `checkpoint >= ts`, checking on every sample that neither
/// watermark regresses and that checkpoint <= resolved. Returns the samples.
pub async fn wait_checkpoint(h: &ChangefeedHandle, ts: Ts, secs: u64) -> Vec<Watermarks> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut samples: Vec<Watermarks> = Vec::new();
    loop {
        let w = h.watermarks();
        if let Some(prev) = samples.last() {
            assert!(
                w.resolved_ts >= prev.resolved_ts,
                "resolved regressed: {prev:?} -> {w:?}"
            );
            assert!(
                w.checkpoint_ts >= prev.checkpoint_ts,
                "checkpoint regressed: {prev:?} -> {w:?}"
            );
            assert!(
                w.last_synced_ts >= prev.last_synced_ts,
                "last synced regressed"
            );
        }
        assert!(
            w.checkpoint_ts <= w.resolved_ts,
            "checkpoint above resolved: {w:?}"
        );
        samples.push(w);
        if let Some(e) = h.error() {
            panic!("changefeed failed: {e}");
        }
        if w.checkpoint_ts >= ts {
            return samples;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "checkpoint did not reach {} within {secs}s: {w:?}, states {:?}, slowest {:?}, stats {:?}",
                ts.0,
                h.checksum_states(),
                h.slowest_spans(3),
                h.stats()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Applies recorded transactions (ignoring DDL) to per-table row maps keyed by
/// `db.table` name of the table definition, by handle.
pub fn apply_txns(records: &[Record]) -> BTreeMap<String, BTreeMap<Handle, Vec<Datum>>> {
    let mut out: BTreeMap<String, BTreeMap<Handle, Vec<Datum>>> = BTreeMap::new();
    for r in records {
        let Record::Txn(t) = r else { continue };
        let name = format!("{}.{}", t.table.schema_name, t.table.table_name);
        let m = out.entry(name).or_default();
        for c in &t.rows {
            match c.kind {
                RowChangeKind::Delete => {
                    m.remove(&c.handle);
                }
                _ => {
                    m.insert(c.handle.clone(), c.new.clone().unwrap_or_default());
                }
            }
        }
    }
    out
}

/// Checks per-key commit order and that no transaction was split: returns, per table and
/// handle, the sequence of commit ts seen.
pub fn check_order(records: &[Record]) -> BTreeMap<(i64, Handle), Vec<Ts>> {
    let mut seen: BTreeMap<(i64, Handle), Vec<Ts>> = BTreeMap::new();
    let mut txn_keys: BTreeMap<(i64, Ts, Ts), usize> = BTreeMap::new();
    for r in records {
        let Record::Txn(t) = r else { continue };
        let n = txn_keys
            .entry((t.table.info.id, t.start_ts, t.commit_ts))
            .or_insert(0);
        *n += 1;
        assert_eq!(
            *n, 1,
            "transaction {t:?} reached the sink in more than one piece"
        );
        for c in &t.rows {
            assert_eq!(c.commit_ts, t.commit_ts);
            let v = seen.entry((c.table_id, c.handle.clone())).or_default();
            if let Some(last) = v.last() {
                assert!(
                    *last < c.commit_ts,
                    "key {:?} out of commit order: {v:?} then {:?}",
                    c.handle,
                    c.commit_ts
                );
            }
            v.push(c.commit_ts);
        }
    }
    seen
}
