//! The schema store against the embedded cluster and its TiDB stand-in: bootstrap from meta
//! snapshots at many timestamps, following DDL through the change feed of `mysql.tidb_ddl_job`,
//! decoding rows with the schema in effect at their commit ts, and GC. Every network await is
//! bounded by `within`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tidal_ingest::feed::{FeedConfig, FeedEvent, RegionFeed};
use tidal_ingest::pd::{PdClient, PdConfig};
use tidal_ingest::schema::{
    DdlJobDecoder, DdlPuller, DdlPullerConfig, SchemaError, SchemaStore, TableFilter,
};
use tidal_ingest::snapshot::{SnapshotError, SnapshotReader};
use tidal_model::ddl::ActionType;
use tidal_model::decode::decode_row;
use tidal_model::{Datum, TableSpan, Ts, tablecodec};
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::tidb::{ColumnSpec, CommitInfo, PrimaryKey, TableSpec, Tidb, types};

async fn within<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("operation hung")
}

struct Env {
    cluster: SimCluster,
    tidb: Tidb,
    pd: PdClient,
    reader: SnapshotReader,
}

async fn env() -> Env {
    let cluster = SimCluster::start(SimConfig::default()).await.unwrap();
    let tidb = cluster.tidb().unwrap();
    let pd = within(10, PdClient::connect(PdConfig::new(cluster.pd_endpoints())))
        .await
        .unwrap();
    let reader = SnapshotReader::new(pd.clone());
    Env {
        cluster,
        tidb,
        pd,
        reader,
    }
}

impl Env {
    fn now(&self) -> Ts {
        Ts(self.cluster.tso().next())
    }

    async fn bootstrap(&self, ts: Ts) -> SchemaStore {
        within(20, SchemaStore::bootstrap(&self.reader, ts))
            .await
            .unwrap()
    }
}

fn spec(name: &str) -> TableSpec {
    TableSpec::new(
        name,
        vec![
            ColumnSpec::new("id", types::bigint()).not_null(),
            ColumnSpec::new("name", types::varchar(32)),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()))
}

fn names(store: &SchemaStore, ts: Ts) -> Vec<(String, i64)> {
    store
        .tables_at(ts, &TableFilter::all())
        .iter()
        .map(|t| (t.qualified_name(), t.info.id))
        .collect()
}

fn row(id: i64, name: &str) -> Vec<Datum> {
    vec![Datum::Int(id), Datum::Bytes(name.as_bytes().to_vec())]
}

fn insert(tidb: &Tidb, db: &str, table: &str, rows: Vec<Vec<Datum>>) -> CommitInfo {
    let t = tidb.table(db, table).unwrap();
    let mut txn = tidb.begin();
    for r in rows {
        txn.insert(&t, r).unwrap();
    }
    txn.commit().unwrap()
}

#[tokio::test]
async fn bootstrap_sees_exactly_the_tables_of_its_ts() {
    let e = env().await;
    let t0 = e.now();
    let app = e.tidb.create_database("app").unwrap();
    let users = e.tidb.create_table("app", &spec("users")).unwrap();
    let orders = e.tidb.create_table("app", &spec("orders")).unwrap();
    let dropped = e.tidb.drop_table("app", "users").unwrap();
    let renamed = e
        .tidb
        .rename_table("app", "orders", "app", "orders2")
        .unwrap();
    let truncated = e.tidb.truncate_table("app", "orders2").unwrap();
    let users_id = users.table_ids[0];
    let orders_id = orders.table_ids[0];
    let new_id = truncated.table_ids[0];
    assert_ne!(new_id, orders_id);

    let expect: Vec<(Ts, Vec<(String, i64)>)> = vec![
        (t0, vec![]),
        (Ts(app.commit_ts), vec![]),
        (Ts(users.commit_ts), vec![("app.users".into(), users_id)]),
        (
            Ts(orders.commit_ts),
            vec![
                ("app.users".into(), users_id),
                ("app.orders".into(), orders_id),
            ],
        ),
        (
            Ts(dropped.commit_ts),
            vec![("app.orders".into(), orders_id)],
        ),
        (
            Ts(renamed.commit_ts),
            vec![("app.orders2".into(), orders_id)],
        ),
        (
            Ts(truncated.commit_ts),
            vec![("app.orders2".into(), new_id)],
        ),
    ];
    for (ts, want) in &expect {
        let store = e.bootstrap(*ts).await;
        assert_eq!(&names(&store, *ts), want, "bootstrap at {ts:?}");
        assert_eq!(store.bootstrap_ts(), *ts);
        let job_table = store
            .ddl_job_table()
            .expect("mysql.tidb_ddl_job is found by name");
        assert_eq!(job_table.id, tablecodec::DDL_JOB_TABLE_ID);
        // System tables are in the store but never listed.
        assert!(store.table_at(tablecodec::DDL_JOB_TABLE_ID, *ts).is_some());
        // Just before a DDL's commit ts the previous state is visible.
        let before = e.bootstrap(ts.prev()).await;
        let idx = expect.iter().position(|(t, _)| t == ts).unwrap();
        if idx > 0 {
            assert_eq!(
                &names(&before, ts.prev()),
                &expect[idx - 1].1,
                "bootstrap at {ts:?}-1"
            );
        }
    }
    let last = e.bootstrap(Ts(truncated.commit_ts)).await;
    assert_eq!(last.schema_version(), truncated.schema_version);
    assert!(last.table_at(orders_id, Ts(truncated.commit_ts)).is_none());
}

#[tokio::test]
async fn bootstrap_after_gc() {
    let e = env().await;
    e.tidb.create_database("app").unwrap();
    let a = e.tidb.create_table("app", &spec("a")).unwrap();
    let old = e.now();
    e.tidb
        .add_column("app", "a", &ColumnSpec::new("extra", types::int()))
        .unwrap();
    let mid = e.now();
    let b = e.tidb.create_table("app", &spec("b")).unwrap();
    e.tidb.drop_table("app", "a").unwrap();

    let sp = e.cluster.faults().advance_gc_safe_point(mid.0);
    assert_eq!(sp, mid.0);
    // At the safe point and above, the snapshot is intact even though GC removed older
    // versions.
    let at_mid = e.bootstrap(mid).await;
    assert_eq!(
        names(&at_mid, mid),
        vec![("app.a".to_string(), a.table_ids[0])]
    );
    assert_eq!(
        at_mid
            .table_at(a.table_ids[0], mid)
            .unwrap()
            .info
            .cols
            .len(),
        3
    );
    let now = e.now();
    let at_now = e.bootstrap(now).await;
    assert_eq!(
        names(&at_now, now),
        vec![("app.b".to_string(), b.table_ids[0])]
    );
    // Below it: snapshot lost by GC.
    let err = within(20, SchemaStore::bootstrap(&e.reader, old))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SchemaError::Snapshot(SnapshotError::LostByGc {
            ts: old,
            safe_point: mid
        })
    );
    assert!(err.to_string().contains("snapshot lost by GC"));
}

#[tokio::test]
async fn ddl_puller_follows_ddl_and_rows_decode_at_every_commit_ts() {
    let e = env().await;
    e.tidb.create_database("app").unwrap();
    e.tidb.create_database("archive").unwrap();
    let created = e.tidb.create_table("app", &spec("t")).unwrap();
    let t_id = created.table_ids[0];
    let boot_ts = e.now();
    let store = e.bootstrap(boot_ts).await;
    let feed = RegionFeed::new(Arc::new(e.pd.clone()), FeedConfig::default());
    let puller = DdlPuller::start(&feed, store.clone(), DdlPullerConfig::default()).unwrap();
    let mut events = puller.take_events().unwrap();
    assert!(puller.take_events().is_none());

    // Rows and DDL interleaved.
    let mut commits: Vec<CommitInfo> = Vec::new();
    commits.push(insert(&e.tidb, "app", "t", vec![row(1, "a"), row(2, "b")]));
    let add = e
        .tidb
        .add_column(
            "app",
            "t",
            &ColumnSpec::new("age", types::int()).default(Datum::Int(7)),
        )
        .unwrap();
    let mut r3 = row(3, "c");
    r3.push(Datum::Int(30));
    commits.push(insert(&e.tidb, "app", "t", vec![r3]));
    let rename = e.tidb.rename_table("app", "t", "archive", "t2").unwrap();
    let mut r4 = row(4, "d");
    r4.push(Datum::Null);
    commits.push(insert(&e.tidb, "archive", "t2", vec![r4]));
    let truncate = e.tidb.truncate_table("archive", "t2").unwrap();
    let new_id = truncate.table_ids[0];
    let mut r5 = row(5, "e");
    r5.push(Datum::Int(50));
    commits.push(insert(&e.tidb, "archive", "t2", vec![r5]));
    let drop = e.tidb.drop_table("archive", "t2").unwrap();
    let ddl = [&add, &rename, &truncate, &drop];

    let resolved = within(30, puller.wait_resolved(Ts(drop.commit_ts)))
        .await
        .unwrap();
    assert!(resolved >= Ts(drop.commit_ts));
    assert!(puller.resolved_ts() >= Ts(drop.commit_ts));
    assert!(store.resolved_ts() >= Ts(drop.commit_ts));
    assert!(puller.error().is_none());

    // Events: one per job, in commit order, with the previous names.
    let mut got = Vec::new();
    while got.len() < ddl.len() {
        got.push(within(10, events.recv()).await.expect("event stream ended"));
    }
    assert_eq!(
        got.iter()
            .map(|ev| (ev.job_id, ev.commit_ts))
            .collect::<Vec<_>>(),
        ddl.iter()
            .map(|o| (o.job_id, Ts(o.commit_ts)))
            .collect::<Vec<_>>()
    );
    assert_eq!(got[0].action, ActionType::ADD_COLUMN);
    assert_eq!(got[1].old_table_name.as_deref(), Some("t"));
    assert_eq!(got[1].old_schema_name.as_deref(), Some("app"));
    assert_eq!(
        (got[1].schema_name.as_str(), got[1].table_name.as_str()),
        ("archive", "t2")
    );
    assert_eq!(got[2].old_table_id, Some(t_id));
    assert_eq!(store.ddl_events_between(boot_ts, Ts(drop.commit_ts)), got);

    // Versions at each DDL boundary.
    let at = |id: i64, ts: u64| store.table_at(id, Ts(ts));
    assert_eq!(
        at(t_id, add.commit_ts - 1)
            .unwrap()
            .info
            .public_columns()
            .len(),
        2
    );
    let v = at(t_id, add.commit_ts).unwrap();
    assert_eq!(
        (v.info.public_columns().len(), v.version_ts),
        (3, Ts(add.commit_ts))
    );
    assert_eq!(
        at(t_id, rename.commit_ts - 1).unwrap().qualified_name(),
        "app.t"
    );
    assert_eq!(
        at(t_id, rename.commit_ts).unwrap().qualified_name(),
        "archive.t2"
    );
    assert!(at(t_id, truncate.commit_ts).is_none());
    assert!(at(new_id, truncate.commit_ts - 1).is_none());
    assert_eq!(
        at(new_id, truncate.commit_ts).unwrap().qualified_name(),
        "archive.t2"
    );
    assert!(at(new_id, drop.commit_ts).is_none());

    // Every row decodes with the schema in effect at its commit ts, and rows written before
    // the ADD COLUMN decode with the later schema too (the new column from its default).
    for c in &commits {
        let commit_ts = Ts(c.commit_ts.unwrap());
        for w in &c.rows {
            let value = within(10, e.reader.get(&w.key, commit_ts))
                .await
                .unwrap()
                .expect("row exists at its commit ts");
            let version = store
                .table_at(w.table_id, commit_ts)
                .expect("schema at commit ts");
            let decoded = decode_row(&version.info, &w.key, &value).unwrap();
            assert_eq!(
                Some(&decoded),
                w.values.as_ref(),
                "row {:?} at {commit_ts:?}",
                w.handle
            );
            let later = store.table_at(t_id, Ts(rename.commit_ts - 1));
            if w.table_id == t_id && commit_ts < Ts(add.commit_ts) {
                let later = later.unwrap();
                let mut want = w.values.clone().unwrap();
                want.push(Datum::Int(7));
                assert_eq!(decode_row(&later.info, &w.key, &value).unwrap(), want);
            }
        }
    }
}

#[tokio::test]
async fn job_rows_decode_to_done_jobs_only() {
    let e = env().await;
    let start = e.now();
    let store = e.bootstrap(start).await;
    let decoder = DdlJobDecoder::from_store(&store).unwrap();
    let feed = RegionFeed::new(Arc::new(e.pd.clone()), FeedConfig::default());
    let sub = feed
        .subscribe(TableSpan::for_table(tablecodec::DDL_JOB_TABLE_ID), start)
        .unwrap();
    let outcomes = [
        e.tidb.create_database("app").unwrap(),
        e.tidb.create_table("app", &spec("t")).unwrap(),
        e.tidb
            .add_column("app", "t", &ColumnSpec::new("x", types::int()))
            .unwrap(),
    ];
    let last = Ts(outcomes.last().unwrap().commit_ts);
    let mut rows = Vec::new();
    within(30, async {
        loop {
            match sub.recv().await.expect("subscription ended") {
                FeedEvent::Rows(r) => rows.extend(r),
                FeedEvent::Resolved(ts) if ts >= last => break,
                FeedEvent::Resolved(_) => {}
                FeedEvent::Error(err) => panic!("feed error {err}"),
            }
        }
    })
    .await;
    let mut done = Vec::new();
    let mut puts = 0;
    for r in &rows {
        if r.op == tidal_model::change::RawOp::Put {
            puts += 1;
        }
        if let Some(job) = decoder.decode(r).unwrap() {
            assert_eq!(job.start_ts, r.start_ts.0);
            assert_eq!(job.binlog.as_ref().unwrap().finished_ts, r.commit_ts.0);
            done.push((job.id, r.commit_ts));
        }
    }
    done.sort();
    let mut want: Vec<(i64, Ts)> = outcomes
        .iter()
        .map(|o| (o.job_id, Ts(o.commit_ts)))
        .collect();
    want.sort();
    assert_eq!(done, want);
    assert!(
        puts > done.len(),
        "the job rows also pass through non-done states ({puts} puts)"
    );
}
