//! The TiDB stand-in writes meta, DDL job rows and rows that decode with the model crate exactly
//! as a real cluster's would.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tidal_model::codec::bytes::encode_key;
use tidal_model::ddl::{ActionType, DdlEvent, DdlJob, JobState};
use tidal_model::decimal::Decimal;
use tidal_model::schema::{DBInfo, SchemaState, TableInfo};
use tidal_model::tablecodec::{self, Handle};
use tidal_model::time::{Duration as SqlDuration, Time, TimeKind};
use tidal_model::{Datum, decode, meta};
use tidal_sim::export::{checksum, snapshot_tables};
use tidal_sim::mvcc::{ApplyEvent, ApplyObserver, MvccStore, Op};
use tidal_sim::region::{RegionConfig, RegionManager};
use tidal_sim::tidb::types::*;
use tidal_sim::tidb::{
    ColumnSpec, CommitOptions, IndexSpec, PrimaryKey, TableSpec, Tidb, TidbError,
};
use tidal_sim::tso::Tso;

fn setup() -> (Tidb, MvccStore, RegionManager) {
    let store = MvccStore::new();
    let regions = RegionManager::new(
        store.clone(),
        &RegionConfig {
            stores: 2,
            ..RegionConfig::default()
        },
    );
    let tidb = Tidb::new(store.clone(), Tso::new(), regions.clone()).unwrap();
    (tidb, store, regions)
}

/// Records every prewritten job-row mutation (op, value) and commit of the DDL job table.
#[derive(Default)]
struct JobWatch {
    puts: Mutex<Vec<(Op, Vec<u8>, u64)>>,
    commits: Mutex<HashMap<u64, u64>>,
}

impl ApplyObserver for JobWatch {
    fn on_apply(&self, events: &[ApplyEvent]) {
        let prefix = tablecodec::record_prefix(tablecodec::DDL_JOB_TABLE_ID);
        for e in events {
            match e {
                ApplyEvent::Prewrite {
                    key,
                    op,
                    value,
                    start_ts,
                    ..
                } if key.starts_with(&prefix) => {
                    self.puts.lock().push((*op, value.clone(), *start_ts));
                }
                ApplyEvent::Commit {
                    key,
                    start_ts,
                    commit_ts,
                    ..
                } if key.starts_with(&prefix) => {
                    self.commits.lock().insert(*start_ts, *commit_ts);
                }
                _ => {}
            }
        }
    }
}

impl JobWatch {
    /// Every version of job `job_id` written to the job table (puts only), in write order.
    fn jobs(&self, job_id: i64) -> Vec<DdlJob> {
        self.puts
            .lock()
            .iter()
            .filter(|(op, _, _)| *op == Op::Put)
            .map(|(_, v, _)| job_of(v))
            .filter(|j| j.id == job_id)
            .collect()
    }

    /// The done version of job `job_id` (the one with its binlog).
    fn done_job(&self, job_id: i64) -> DdlJob {
        self.jobs(job_id)
            .into_iter()
            .find(|j| j.state == JobState::DONE)
            .expect("a done job row")
    }
}

fn job_of(value: &[u8]) -> DdlJob {
    let t = tidal_sim::tidb::ddl_job_table_info();
    let key = tablecodec::encode_row_key_int(t.id, 1);
    let row = decode::decode_row(&t, &key, value).unwrap();
    let meta_col = t
        .public_columns()
        .iter()
        .position(|c| c.name.L == "job_meta")
        .unwrap();
    match &row[meta_col] {
        Datum::Bytes(b) => DdlJob::from_json(b).unwrap(),
        other => panic!("job_meta is {other:?}"),
    }
}

#[test]
fn bootstrap_writes_meta_and_ddl_job_table() {
    let (tidb, store, regions) = setup();
    let ts = tidb.tso().next();
    let v = store
        .get(&meta::string_key(meta::SCHEMA_VERSION_KEY), ts)
        .unwrap()
        .unwrap();
    assert_eq!(v, b"1");
    let id = store
        .get(&meta::string_key(meta::NEXT_GLOBAL_ID_KEY), ts)
        .unwrap()
        .unwrap();
    assert_eq!(id, b"100");
    let db = store
        .get(
            &meta::hash_field_key(meta::DBS_KEY, &meta::db_key(tablecodec::MYSQL_DB_ID)),
            ts,
        )
        .unwrap()
        .unwrap();
    let db: DBInfo = serde_json::from_slice(&db).unwrap();
    assert_eq!(db.db_name.O, "mysql");
    let t = store
        .get(
            &meta::hash_field_key(
                &meta::db_key(tablecodec::MYSQL_DB_ID),
                &meta::table_field(tablecodec::DDL_JOB_TABLE_ID),
            ),
            ts,
        )
        .unwrap()
        .unwrap();
    let t = TableInfo::from_json(&t).unwrap();
    assert_eq!(t.name.O, "tidb_ddl_job");
    assert_eq!(t.column_by_name("job_meta").unwrap().id, 5);
    assert!(t.pk_is_handle);
    // The job table got its own region.
    let prefix = encode_key(&tablecodec::table_prefix(tablecodec::DDL_JOB_TABLE_ID));
    assert_eq!(regions.locate(&prefix).start, prefix);
    // A second TiDB over the same store loads the catalog instead of bootstrapping again.
    let again = Tidb::new(store.clone(), tidb.tso().clone(), regions).unwrap();
    assert_eq!(again.schema_version(), 1);
    assert!(again.has_database("mysql"));
}

#[test]
fn create_table_writes_job_rows_with_done_binlog() {
    let (tidb, store, regions) = setup();
    let watch = Arc::new(JobWatch::default());
    store.set_observer(watch.clone());
    let db = tidb.create_database("shop").unwrap();
    assert_eq!(db.action, ActionType::CREATE_SCHEMA);
    let spec = TableSpec::new(
        "orders",
        vec![
            ColumnSpec::new("id", bigint()).not_null(),
            ColumnSpec::new("note", varchar(64)).default(Datum::Bytes(b"none".to_vec())),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()));
    let out = tidb.create_table("shop", &spec).unwrap();
    assert_eq!(out.schema_version, 3);
    assert_eq!(
        out.query,
        "CREATE TABLE `shop`.`orders` (`id` BIGINT NOT NULL, `note` VARCHAR(64) CHARACTER SET utf8mb4 \
         COLLATE utf8mb4_bin NULL DEFAULT 'none', PRIMARY KEY (`id`) /*T![clustered_index] CLUSTERED */) \
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    );
    let table_id = out.table_ids[0];

    // Job rows: queueing then done for each job, then a delete.
    let puts = watch.puts.lock().clone();
    let jobs: Vec<(Op, Option<DdlJob>, u64)> = puts
        .iter()
        .map(|(op, v, s)| (*op, (*op == Op::Put).then(|| job_of(v)), *s))
        .collect();
    let table_job: Vec<&(Op, Option<DdlJob>, u64)> = jobs
        .iter()
        .filter(|(_, j, _)| j.as_ref().is_none_or(|j| j.id == out.job_id))
        .collect();
    let states: Vec<Option<JobState>> = table_job
        .iter()
        .map(|(_, j, _)| j.as_ref().map(|j| j.state))
        .collect();
    // The last delete belongs to this job (the database job's delete precedes its PUTs).
    assert_eq!(
        states[states.len() - 3..],
        [Some(JobState::QUEUEING), Some(JobState::DONE), None]
    );
    let (_, done, done_start) = table_job[table_job.len() - 2];
    let done = done.clone().unwrap();
    assert_eq!(done.action_type, ActionType::CREATE_TABLE);
    assert_eq!(done.query, out.query);
    let binlog = done.binlog.clone().unwrap();
    assert_eq!(binlog.schema_version, 3);
    assert_eq!(binlog.finished_ts, *done_start);
    let info = binlog.table_info.unwrap();
    assert_eq!(info.id, table_id);
    assert_eq!(info.name.O, "orders");
    assert_eq!(info.cols.len(), 2);
    // The done row committed in the same transaction as the schema: at its commit ts the meta
    // holds the table, just before it does not.
    let commit_ts = watch.commits.lock()[done_start];
    assert_eq!(commit_ts, out.commit_ts);
    let field = meta::hash_field_key(&meta::db_key(db.schema_id), &meta::table_field(table_id));
    assert!(store.get(&field, commit_ts).unwrap().is_some());
    assert!(store.get(&field, commit_ts - 1).unwrap().is_none());
    assert_eq!(
        store
            .get(&meta::string_key(meta::SCHEMA_VERSION_KEY), commit_ts)
            .unwrap()
            .unwrap(),
        b"3"
    );
    assert!(
        store
            .get(&meta::string_key(&meta::diff_key(3)), commit_ts)
            .unwrap()
            .is_some()
    );
    // The event a CDC reader derives from it.
    let ev = DdlEvent::from_job(&done, commit_ts).unwrap();
    assert_eq!(ev.table_id, table_id);
    assert_eq!(ev.schema_name, "shop");
    // The row is gone after the finish, and the job is in history.
    let now = tidb.tso().next();
    let key = tablecodec::encode_row_key_int(tablecodec::DDL_JOB_TABLE_ID, out.job_id);
    assert!(store.get(&key, now).unwrap().is_none());
    assert!(store.get(&key, commit_ts).unwrap().is_some());
    let hist = store
        .get(
            &meta::hash_field_key(
                meta::DDL_JOB_HISTORY_KEY,
                &meta::history_job_field(out.job_id),
            ),
            now,
        )
        .unwrap()
        .unwrap();
    assert_eq!(DdlJob::from_json(&hist).unwrap().state, JobState::SYNCED);
    // split-table: the table starts its own region.
    let prefix = encode_key(&tablecodec::table_prefix(table_id));
    assert_eq!(regions.locate(&prefix).start, prefix);
}

fn all_types_spec() -> TableSpec {
    TableSpec::new(
        "types",
        vec![
            ColumnSpec::new("id", bigint()).not_null(),
            ColumnSpec::new("u", unsigned(int())),
            ColumnSpec::new("s", varchar(32)),
            ColumnSpec::new("ci", varchar_ci(32)),
            ColumnSpec::new("d", decimal(10, 2)),
            ColumnSpec::new("dt", datetime(3)),
            ColumnSpec::new("ts", timestamp(0)),
            ColumnSpec::new("da", date()),
            ColumnSpec::new("tm", time(0)),
            ColumnSpec::new("e", enum_of(&["a", "b", "c"])),
            ColumnSpec::new("st", set_of(&["x", "y", "z"])),
            ColumnSpec::new("j", json()),
            ColumnSpec::new("db", double()),
            ColumnSpec::new("f", float()),
            ColumnSpec::new("bt", bit(8)),
            ColumnSpec::new("bl", blob()),
            ColumnSpec::new("y", year()),
            ColumnSpec::new("n", int()),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()))
    .index(IndexSpec::unique("u_s", &["s"]))
    .index(IndexSpec::new("k_u", &["u", "d"]))
}

fn mk_time(kind: TimeKind, fsp: u8, ymd: (u16, u8, u8), hms: (u8, u8, u8), us: u32) -> Time {
    Time {
        year: ymd.0,
        month: ymd.1,
        day: ymd.2,
        hour: hms.0,
        minute: hms.1,
        second: hms.2,
        microsecond: us,
        kind,
        fsp,
    }
}

fn all_types_row(id: i64) -> Vec<Datum> {
    vec![
        Datum::Int(id),
        Datum::Uint(4_000_000_000),
        Datum::Bytes(format!("s{id}").into_bytes()),
        Datum::Bytes(b"MiXeD".to_vec()),
        Datum::Decimal("-1234.5".parse::<Decimal>().unwrap().round(2)),
        Datum::Time(mk_time(
            TimeKind::Datetime,
            3,
            (2024, 2, 29),
            (23, 59, 58),
            123_000,
        )),
        Datum::Time(mk_time(TimeKind::Timestamp, 0, (2020, 1, 1), (0, 0, 1), 0)),
        Datum::Time(mk_time(TimeKind::Date, 0, (1999, 12, 31), (0, 0, 0), 0)),
        Datum::Duration(SqlDuration::from_nanos(-3_723_000_000_000, 0).unwrap()),
        Datum::Enum(2),
        Datum::Set(0b101),
        Datum::Json(r#"{"a":[1,2,"x"],"b":null}"#.parse().unwrap()),
        Datum::Float64(2.5),
        Datum::Float32(-0.25),
        Datum::Bit(0xA5),
        Datum::Bytes(vec![0, 1, 2, 255]),
        Datum::Int(2024),
        Datum::Null,
    ]
}

#[test]
fn rows_round_trip_with_versions() {
    let (tidb, store, _) = setup();
    tidb.create_database("d").unwrap();
    tidb.create_table("d", &all_types_spec()).unwrap();
    let t = tidb.table("d", "types").unwrap();
    let mut txn = tidb.begin();
    let h1 = txn.insert(&t, all_types_row(1)).unwrap();
    let h2 = txn.insert(&t, all_types_row(2)).unwrap();
    assert_eq!(h1, Handle::Int(1));
    let c1 = txn.commit().unwrap();
    let ts1 = c1.commit_ts.unwrap();
    assert_eq!(c1.rows.len(), 2);

    // The stored value decodes to the inserted values, and the NULL column with no default is
    // absent from the value (TiDB's rule), not listed as null.
    let key = tablecodec::encode_row_key_int(t.id(), 1);
    let raw = store.get(&key, ts1).unwrap().unwrap();
    assert_eq!(
        decode::decode_row(&t.info, &key, &raw).unwrap(),
        all_types_row(1)
    );
    let row = tidal_model::rowcodec::decode_row_columns(&raw).unwrap();
    let n_id = t.info.column_by_name("n").unwrap().id;
    assert_eq!(row.slot(n_id), tidal_model::rowcodec::RowSlot::Absent);
    // The int handle column is not in the value either.
    assert_eq!(row.slot(1), tidal_model::rowcodec::RowSlot::Absent);
    // Unique index entry: value = handle.
    let uniq = t
        .info
        .index_info
        .iter()
        .find(|i| i.idx_name.O == "u_s")
        .unwrap();
    let mut ik = Vec::new();
    tidal_model::codec::datum::encode_key_flagged(
        &mut ik,
        &tidal_model::codec::datum::FlaggedDatum::Bytes(b"s2".to_vec()),
    );
    let ikey = tablecodec::encode_index_key(t.id(), uniq.id, &ik);
    assert_eq!(
        store.get(&ikey, ts1).unwrap().unwrap(),
        2u64.to_be_bytes().to_vec()
    );

    // Update and delete are visible later; old versions stay readable at ts1.
    let mut txn = tidb.begin();
    let mut new_row = all_types_row(1);
    new_row[2] = Datum::Bytes(b"changed".to_vec());
    new_row[17] = Datum::Int(7);
    assert!(txn.update(&t, &h1, new_row.clone()).unwrap());
    assert!(txn.delete(&t, &h2).unwrap());
    assert!(!txn.delete(&t, &Handle::Int(99)).unwrap());
    let ts2 = txn.commit().unwrap().commit_ts.unwrap();
    let snap2 = snapshot_tables(&store, ts2, &[("d", "types")]).unwrap();
    assert_eq!(snap2[0].rows.len(), 1);
    assert_eq!(snap2[0].rows[&Handle::Int(1)], new_row);
    let snap1 = snapshot_tables(&store, ts1, &[("d", "types")]).unwrap();
    assert_eq!(snap1[0].rows.len(), 2);
    assert_eq!(snap1[0].rows[&Handle::Int(2)], all_types_row(2));
    assert_ne!(checksum(&snap1[0]), checksum(&snap2[0]));
    // The old unique entry was deleted, the new one points at the row.
    assert!(store.get(&ikey, ts2).unwrap().is_none());

    // Rolled-back and 1PC transactions.
    let mut txn = tidb.begin();
    txn.insert(&t, all_types_row(3)).unwrap();
    let rb = txn
        .commit_with(CommitOptions {
            rollback: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rb.commit_ts, None);
    let mut txn = tidb.begin();
    txn.insert(&t, all_types_row(4)).unwrap();
    let ts4 = txn
        .commit_with(CommitOptions {
            one_pc: true,
            ..Default::default()
        })
        .unwrap()
        .commit_ts
        .unwrap();
    let snap = snapshot_tables(&store, ts4, &[("d", "types")]).unwrap();
    let handles: Vec<&Handle> = snap[0].rows.keys().collect();
    assert_eq!(handles, [&Handle::Int(1), &Handle::Int(4)]);
    assert_eq!(store.lock_count(), 0);
}

#[test]
fn clustered_and_rowid_tables() {
    let (tidb, store, _) = setup();
    tidb.create_database("d").unwrap();
    let clustered = TableSpec::new(
        "c",
        vec![
            ColumnSpec::new("a", varchar(16)).not_null(),
            ColumnSpec::new("b", int()).not_null(),
            ColumnSpec::new("name", varchar_ci(16)).not_null(),
            ColumnSpec::new("v", int()),
        ],
    )
    .primary_key(PrimaryKey::Clustered(vec![
        "a".into(),
        "b".into(),
        "name".into(),
    ]));
    tidb.create_table("d", &clustered).unwrap();
    let rowid = TableSpec::new(
        "r",
        vec![
            ColumnSpec::new("v", varchar(8)),
            ColumnSpec::new("w", int()),
        ],
    )
    .primary_key(PrimaryKey::NonClustered(vec!["w".into()]));
    tidb.create_table("d", &rowid).unwrap();
    let c = tidb.table("d", "c").unwrap();
    assert!(c.info.is_common_handle);
    let r = tidb.table("d", "r").unwrap();
    assert!(!r.info.is_common_handle && !r.info.pk_is_handle);

    let mut txn = tidb.begin();
    let row = vec![
        Datum::Bytes(b"k".to_vec()),
        Datum::Int(-3),
        Datum::Bytes(b"Bob".to_vec()),
        Datum::Int(1),
    ];
    let hc = txn.insert(&c, row.clone()).unwrap();
    let hr1 = txn
        .insert(&r, vec![Datum::Bytes(b"x".to_vec()), Datum::Int(10)])
        .unwrap();
    let hr2 = txn.insert(&r, vec![Datum::Null, Datum::Int(11)]).unwrap();
    let ts = txn.commit().unwrap().commit_ts.unwrap();
    assert!(matches!(hc, Handle::Common(_)));
    assert_eq!((hr1.clone(), hr2), (Handle::Int(1), Handle::Int(2)));
    let key = tablecodec::encode_row_key(c.id(), &hc);
    assert!(key.len() > 19);
    let raw = store.get(&key, ts).unwrap().unwrap();
    assert_eq!(decode::decode_row(&c.info, &key, &raw).unwrap(), row);
    // Binary-collation key columns are left out of the value; the general_ci one is kept.
    let cols = tidal_model::rowcodec::decode_row_columns(&raw).unwrap();
    assert_eq!(cols.slot(1), tidal_model::rowcodec::RowSlot::Absent);
    assert!(matches!(
        cols.slot(3),
        tidal_model::rowcodec::RowSlot::V2(b"Bob")
    ));
    let snap = snapshot_tables(&store, ts, &[]).unwrap();
    assert_eq!(snap.len(), 2);
    let rs = snap.iter().find(|s| s.table == "r").unwrap();
    assert_eq!(
        rs.rows[&hr1],
        vec![Datum::Bytes(b"x".to_vec()), Datum::Int(10)]
    );
}

#[test]
fn ddl_changes_schema_versions_and_decoding() {
    let (tidb, store, _) = setup();
    let watch = Arc::new(JobWatch::default());
    store.set_observer(watch.clone());
    tidb.create_database("d").unwrap();
    tidb.create_database("e").unwrap();
    let spec = TableSpec::new(
        "t",
        vec![
            ColumnSpec::new("id", int()).not_null(),
            ColumnSpec::new("v", varchar(10)),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()));
    tidb.create_table("d", &spec).unwrap();
    let t = tidb.table("d", "t").unwrap();
    let mut txn = tidb.begin();
    txn.insert(&t, vec![Datum::Int(1), Datum::Bytes(b"a".to_vec())])
        .unwrap();
    let ts_before = txn.commit().unwrap().commit_ts.unwrap();

    // ADD COLUMN with a default: old rows read it from the origin default.
    let v0 = tidb.schema_version();
    let add = tidb
        .add_column(
            "d",
            "t",
            &ColumnSpec::new("c", int())
                .not_null()
                .default(Datum::Int(42)),
        )
        .unwrap();
    assert_eq!(
        add.schema_version,
        v0 + 4,
        "delete-only, write-only, write-reorg, public"
    );
    assert_eq!(
        add.query,
        "ALTER TABLE `d`.`t` ADD COLUMN `c` INT NOT NULL DEFAULT 42"
    );
    let snap = snapshot_tables(&store, add.commit_ts, &[("d", "t")]).unwrap();
    assert_eq!(
        snap[0].rows[&Handle::Int(1)],
        vec![Datum::Int(1), Datum::Bytes(b"a".to_vec()), Datum::Int(42)]
    );
    // At the earlier ts, the old schema applies.
    let snap = snapshot_tables(&store, ts_before, &[("d", "t")]).unwrap();
    assert_eq!(snap[0].rows[&Handle::Int(1)].len(), 2);
    let states: Vec<JobState> = watch.jobs(add.job_id).iter().map(|j| j.state).collect();
    assert_eq!(
        states,
        [
            JobState::QUEUEING,
            JobState::RUNNING,
            JobState::RUNNING,
            JobState::RUNNING,
            JobState::DONE
        ]
    );

    // A transaction that looked the table up before a DDL fails with SchemaChanged.
    let stale = tidb.table("d", "t").unwrap();
    tidb.add_index("d", "t", &IndexSpec::new("iv", &["v"]))
        .unwrap();
    let mut txn = tidb.begin();
    txn.insert(&stale, vec![Datum::Int(2), Datum::Null, Datum::Int(0)])
        .unwrap();
    let err = txn.commit().unwrap_err();
    assert!(matches!(err, TidbError::SchemaChanged(_)), "{err}");
    assert!(err.is_retryable());
    let t = tidb.table("d", "t").unwrap();
    let ix = t
        .info
        .index_info
        .iter()
        .find(|i| i.idx_name.O == "iv")
        .unwrap();
    assert_eq!(ix.state, SchemaState::PUBLIC);
    // The backfill wrote the existing row's index entry.
    let prefix = tablecodec::encode_index_prefix(t.id(), ix.id);
    let now = tidb.tso().next();
    assert_eq!(
        store
            .scan(&prefix, &tidal_sim::tidb::prefix_next(&prefix), now, 0)
            .unwrap()
            .len(),
        1
    );

    let m = tidb
        .modify_column("d", "t", "v", &ColumnSpec::new("v", varchar(20)))
        .unwrap();
    assert_eq!(
        m.query,
        "ALTER TABLE `d`.`t` MODIFY COLUMN `v` VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL"
    );
    assert!(
        tidb.modify_column("d", "t", "v", &ColumnSpec::new("v", int()))
            .is_err()
    );
    let di = tidb.drop_index("d", "t", "iv").unwrap();
    assert_eq!(di.query, "ALTER TABLE `d`.`t` DROP INDEX `iv`");
    let dc = tidb.drop_column("d", "t", "c").unwrap();
    assert_eq!(dc.query, "ALTER TABLE `d`.`t` DROP COLUMN `c`");
    let snap = snapshot_tables(&store, dc.commit_ts, &[("d", "t")]).unwrap();
    assert_eq!(
        snap[0].rows[&Handle::Int(1)],
        vec![Datum::Int(1), Datum::Bytes(b"a".to_vec())]
    );

    // TRUNCATE gives a new id; the event reports the old one.
    let old_id = tidb.table("d", "t").unwrap().id();
    let tr = tidb.truncate_table("d", "t").unwrap();
    assert_eq!(tr.query, "TRUNCATE TABLE `d`.`t`");
    assert_ne!(tr.table_ids[0], old_id);
    let snap = snapshot_tables(&store, tr.commit_ts, &[("d", "t")]).unwrap();
    assert!(snap[0].rows.is_empty());
    assert_eq!(snap[0].table_info.id, tr.table_ids[0]);

    // RENAME across databases: the event knows the old schema.
    let rn = tidb.rename_table("d", "t", "e", "t2").unwrap();
    assert_eq!(rn.query, "RENAME TABLE `d`.`t` TO `e`.`t2`");
    let job = watch.done_job(rn.job_id);
    let ev = DdlEvent::from_job(&job, rn.commit_ts).unwrap();
    assert_eq!(ev.old_schema_name.as_deref(), Some("d"));
    assert_eq!(ev.schema_name, "e");
    assert_eq!(ev.table_name, "t2");
    assert!(tidb.table("d", "t").is_err());
    let schema = tidb.schema_at(rn.commit_ts).unwrap();
    assert!(schema.table("e", "t2").is_some());
    assert!(schema.table("d", "t").is_none());

    let dr = tidb.drop_table("e", "t2").unwrap();
    assert_eq!(dr.query, "DROP TABLE `e`.`t2`");
    assert!(
        tidb.schema_at(dr.commit_ts)
            .unwrap()
            .table("e", "t2")
            .is_none()
    );
    let dd = tidb.drop_database("d").unwrap();
    assert_eq!(dd.query, "DROP DATABASE `d`");
    assert!(tidb.schema_at(dd.commit_ts).unwrap().db("d").is_none());
    assert!(!tidb.has_database("d"));
    // Schema versions in meta match the catalog.
    let now = tidb.tso().next();
    assert_eq!(
        tidb.schema_at(now).unwrap().schema_version,
        tidb.schema_version()
    );
}

#[test]
fn create_tables_batch_job() {
    let (tidb, store, regions) = setup();
    let watch = Arc::new(JobWatch::default());
    store.set_observer(watch.clone());
    tidb.create_database("m").unwrap();
    let regions_before = regions.len();
    let specs: Vec<TableSpec> = (0..50)
        .map(|i| {
            TableSpec::new(
                format!("t{i}"),
                vec![ColumnSpec::new("id", int()).not_null()],
            )
        })
        .collect();
    let out = tidb.create_tables("m", &specs, false).unwrap();
    assert_eq!(out.table_ids.len(), 50);
    assert_eq!(regions.len(), regions_before, "no split requested");
    assert!(
        out.query
            .starts_with("CREATE TABLE `m`.`t0` (`id` INT NOT NULL) ENGINE=InnoDB")
    );
    assert_eq!(out.query.matches("CREATE TABLE").count(), 50);
    let job = watch.done_job(out.job_id);
    assert_eq!(job.action_type, ActionType::CREATE_TABLES);
    assert_eq!(job.binlog.unwrap().multiple_table_infos.len(), 50);
    assert_eq!(tidb.tables("m").unwrap().len(), 50);
}
