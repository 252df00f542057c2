//! The `Pipeline` builder against the embedded cluster, with transforms and a recording sink.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tidal::dataflow::timely::dataflow::operators::vec::{Filter, Map};
use tidal::model::ddl::ActionType;
use tidal::model::{Datum, DdlEvent, Handle, RowChangeKind, Ts};
use tidal::pipeline::{ChangefeedHandle, Pipeline, PipelineError, TxnItem};
use tidal::sim::cluster::{SimCluster, SimConfig};
use tidal::sim::tidb::{ColumnSpec, CommitInfo, PrimaryKey, TableSpec, Tidb, types};
use tidal::sinks::{FlushReport, Sink, SinkError, SinkTxn, TableDef, TxnBatch};

/// What the recording sink saw, in call order.
#[derive(Debug, Clone)]
enum Record {
    Txn(SinkTxn),
    Ddl(Box<DdlEvent>),
}

/// A sink that records every call and reports batches durable at once.
#[derive(Default)]
struct RecordingSink {
    log: Mutex<Vec<Record>>,
    writes: AtomicU64,
}

impl RecordingSink {
    fn records(&self) -> Vec<Record> {
        self.log.lock().unwrap().clone()
    }

    fn txns(&self) -> Vec<SinkTxn> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Txn(t) => Some(t),
                Record::Ddl(_) => None,
            })
            .collect()
    }

    fn ddls(&self) -> Vec<DdlEvent> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Ddl(d) => Some(*d),
                Record::Txn(_) => None,
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
        let report = FlushReport {
            rows: batch.row_count() as u64,
            bytes: 0,
            max_commit_ts: batch.max_commit_ts().unwrap_or(Ts::ZERO).0,
        };
        self.log
            .lock()
            .unwrap()
            .extend(batch.txns.into_iter().map(Record::Txn));
        async move { Ok(report) }.boxed()
    }

    fn execute_ddl(
        &self,
        ddl: DdlEvent,
        _table: Option<Arc<TableDef>>,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        self.log.lock().unwrap().push(Record::Ddl(Box::new(ddl)));
        async { Ok(()) }.boxed()
    }

    fn update_checkpoint(&self, _ts: Ts) -> BoxFuture<'static, Result<(), SinkError>> {
        async { Ok(()) }.boxed()
    }

    fn close(&self) -> BoxFuture<'static, Result<(), SinkError>> {
        async { Ok(()) }.boxed()
    }
}

struct Env {
    cluster: SimCluster,
    tidb: Tidb,
}

async fn env() -> Env {
    let cfg = SimConfig::with_min_ts_interval(Duration::from_millis(50));
    let cluster = SimCluster::start(cfg).await.unwrap();
    let tidb = cluster.tidb().unwrap();
    tidb.create_database("app").unwrap();
    for t in ["t", "skip"] {
        tidb.create_table("app", &table_spec(t)).unwrap();
    }
    Env { cluster, tidb }
}

fn table_spec(name: &str) -> TableSpec {
    TableSpec::new(
        name,
        vec![
            ColumnSpec::new("id", types::bigint()).not_null(),
            ColumnSpec::new("v", types::varchar(64)),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()))
}

fn row(id: i64, v: &str) -> Vec<Datum> {
    vec![Datum::Int(id), Datum::Bytes(v.as_bytes().to_vec())]
}

/// Inserts (or overwrites) rows in one transaction; returns its commit ts.
fn upsert(tidb: &Tidb, table: &str, rows: Vec<Vec<Datum>>) -> Ts {
    for _ in 0..20 {
        let t = tidb.table("app", table).unwrap();
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

fn delete(tidb: &Tidb, table: &str, id: i64) -> Ts {
    let t = tidb.table("app", table).unwrap();
    let mut txn = tidb.begin();
    txn.delete(&t, &Handle::Int(id)).unwrap();
    Ts(txn.commit().unwrap().commit_ts.unwrap())
}

async fn start(p: Pipeline) -> ChangefeedHandle {
    tokio::time::timeout(Duration::from_secs(30), p.start())
        .await
        .expect("pipeline start hung")
        .expect("pipeline starts")
}

async fn reach(h: &ChangefeedHandle, ts: Ts) {
    let c = h
        .wait_checkpoint(ts, Duration::from_secs(30))
        .await
        .expect("changefeed healthy");
    assert!(
        c >= ts,
        "checkpoint {c:?} did not reach {ts:?}: {:?}",
        h.watermarks()
    );
    let w = h.watermarks();
    assert!(w.checkpoint_ts <= w.resolved_ts, "{w:?}");
}

/// Upper-cases the `v` column (index 1) of every row image.
fn upper_v(mut item: TxnItem) -> TxnItem {
    for r in &mut item.txn.rows {
        for image in [&mut r.old, &mut r.new].into_iter().flatten() {
            if let Some(Datum::Bytes(b)) = image.get_mut(1) {
                b.make_ascii_uppercase();
            }
        }
    }
    item
}

/// `(table, id, kind, new v)` of every row change the sink saw, in call order.
fn seen(txns: &[SinkTxn]) -> Vec<(String, i64, RowChangeKind, Option<String>)> {
    let mut out = Vec::new();
    for t in txns {
        for r in &t.rows {
            let Handle::Int(id) = r.handle else {
                panic!("unexpected handle {:?}", r.handle)
            };
            let v = r.new.as_ref().map(|n| match n.get(1) {
                Some(Datum::Bytes(b)) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("unexpected v {other:?}"),
            });
            out.push((t.table.table_name.clone(), id, r.kind, v));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_drops_a_table_and_rewrites_values() {
    let e = env().await;
    let sink = Arc::new(RecordingSink::default());
    let h = start(
        Pipeline::embedded(&e.cluster)
            .id("drop-and-rewrite")
            .filter(["app.*"])
            .workers(2)
            .sink(sink.clone())
            .transform(|txns| txns.filter(|item| item.txn.table.table_name != "skip"))
            .transform(|txns| txns.map(upper_v)),
    )
    .await;
    upsert(&e.tidb, "t", vec![row(1, "a1"), row(2, "a2")]);
    upsert(&e.tidb, "skip", vec![row(1, "s1"), row(2, "s2")]);
    upsert(&e.tidb, "t", vec![row(3, "a3")]);
    upsert(&e.tidb, "t", vec![row(2, "b2")]);
    upsert(&e.tidb, "skip", vec![row(3, "s3")]);
    let last = delete(&e.tidb, "t", 1);
    reach(&h, last).await;

    let txns = sink.txns();
    assert!(txns.iter().all(|t| t.table.schema_name == "app"));
    let s = |v: &str| Some(v.to_string());
    let t = || "t".to_string();
    assert_eq!(
        seen(&txns),
        vec![
            (t(), 1, RowChangeKind::Insert, s("A1")),
            (t(), 2, RowChangeKind::Insert, s("A2")),
            (t(), 3, RowChangeKind::Insert, s("A3")),
            (t(), 2, RowChangeKind::Update, s("B2")),
            (t(), 1, RowChangeKind::Delete, None),
        ]
    );
    // Commit order is kept, and whole transactions are kept together.
    let commits: Vec<Ts> = txns.iter().map(|t| t.commit_ts).collect();
    assert_eq!(commits.len(), 4);
    assert!(commits.windows(2).all(|w| w[0] < w[1]), "{commits:?}");
    assert_eq!(*commits.last().unwrap(), last);
    assert_eq!(txns[0].rows.len(), 2);
    h.stop();
    e.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_dropping_everything_still_advances_the_checkpoint_and_runs_ddl() {
    let e = env().await;
    let sink = Arc::new(RecordingSink::default());
    let start_ts = Ts(e.cluster.tso().next());
    let h = start(
        Pipeline::embedded(&e.cluster)
            .start_ts(start_ts)
            .workers(2)
            .sink(sink.clone())
            .transform(|txns| txns.filter(|_| false)),
    )
    .await;
    for i in 0..5 {
        upsert(&e.tidb, "t", vec![row(i, "x")]);
        upsert(&e.tidb, "skip", vec![row(i, "y")]);
    }
    let ddl = e
        .tidb
        .add_column("app", "t", &ColumnSpec::new("c", types::bigint()))
        .unwrap();
    let last = upsert(
        &e.tidb,
        "t",
        vec![vec![
            Datum::Int(9),
            Datum::Bytes(b"z".to_vec()),
            Datum::Int(1),
        ]],
    );
    assert!(Ts(ddl.commit_ts) < last);
    reach(&h, last).await;
    let w = h.watermarks();
    assert!(w.checkpoint_ts >= last, "{w:?}");
    assert!(sink.txns().is_empty(), "{:?}", sink.txns());
    assert_eq!(sink.writes.load(Ordering::Relaxed), 0);
    let ddls = sink.ddls();
    assert_eq!(ddls.len(), 1, "{ddls:?}");
    assert_eq!(ddls[0].action, ActionType::ADD_COLUMN);
    assert_eq!(ddls[0].commit_ts, Ts(ddl.commit_ts));
    assert_eq!(h.stats().ddl_executed, 1);
    h.stop();
    e.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_runs_once_and_in_order_with_a_transform_in_place() {
    let e = env().await;
    let sink = Arc::new(RecordingSink::default());
    let h = start(
        Pipeline::embedded(&e.cluster)
            .filter(["app.t"])
            .workers(2)
            .sink(sink.clone())
            .transform(|txns| txns.map(upper_v)),
    )
    .await;
    upsert(&e.tidb, "t", vec![row(1, "before")]);
    upsert(&e.tidb, "skip", vec![row(1, "ignored")]);
    let ddl = e
        .tidb
        .add_column(
            "app",
            "t",
            &ColumnSpec::new("c", types::bigint()).default(Datum::Int(7)),
        )
        .unwrap();
    let last = upsert(
        &e.tidb,
        "t",
        vec![vec![
            Datum::Int(2),
            Datum::Bytes(b"after".to_vec()),
            Datum::Int(5),
        ]],
    );
    reach(&h, last).await;

    let records = sink.records();
    let shape: Vec<String> = records
        .iter()
        .map(|r| match r {
            Record::Txn(t) => format!(
                "{}:{}:{}",
                t.table.table_name,
                t.rows.len(),
                t.table.info.public_columns().len()
            ),
            Record::Ddl(d) => format!("ddl:{:?}", d.action),
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            "t:1:2".to_string(),
            format!("ddl:{:?}", ActionType::ADD_COLUMN),
            "t:1:3".to_string()
        ]
    );
    let txns = sink.txns();
    assert_eq!(
        txns[1].rows[0].new,
        Some(vec![
            Datum::Int(2),
            Datum::Bytes(b"AFTER".to_vec()),
            Datum::Int(5)
        ])
    );
    assert_eq!(sink.ddls()[0].commit_ts, Ts(ddl.commit_ts));
    assert_eq!(h.stats().ddl_executed, 1);
    h.stop();
    e.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_reports_missing_sink_and_bad_target() {
    let e = env().await;
    let err = Pipeline::embedded(&e.cluster).start().await.unwrap_err();
    assert!(matches!(err, PipelineError::NoSink), "{err:?}");
    let err = Pipeline::embedded(&e.cluster)
        .start_ts(Ts(100))
        .target_ts(Ts(50))
        .sink(Arc::new(RecordingSink::default()))
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, PipelineError::Changefeed(ref c) if c.to_string().contains("target ts 50 is below start ts 100")),
        "{err:?}"
    );
    e.cluster.shutdown().await;
}
