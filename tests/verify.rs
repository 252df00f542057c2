//! `tidal verify` end to end: an embedded cluster upstream (rows written through its TiDB
//! layer), downstreams written by the real sinks (a storage directory always, MariaDB when
//! `TIDAL_TEST_MYSQL` is set), equal and tampered comparisons with the exact differences named,
//! storage replays with duplicates, the GC safe point, and the command's exit codes.

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, MySqlPool};
use tidal::verify::{
    DiffKind, Downstream, RowDiff, TableReport, VerifyError, VerifyOptions, VerifyReport, verify,
};
use tidal_model::json::Json;
use tidal_model::schema::FieldType;
use tidal_model::time::{Time, TimeKind};
use tidal_model::{Datum, Handle, RowChange, RowChangeKind, Ts, mysql};
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::export::snapshot_tables;
use tidal_sim::tidb::dml::{CommitInfo, RowKind};
use tidal_sim::tidb::spec::{ColumnSpec, PrimaryKey, TableSpec};
use tidal_sim::tidb::types;
use tidal_sim::tidb::{Table, Tidb};
use tidal_sinks::encode::Protocol;
use tidal_sinks::mysql::MySqlSink;
use tidal_sinks::storage::{StorageConfig, StorageSink};
use tidal_sinks::uri::{SinkConfig, parse_sink_uri};
use tidal_sinks::{Sink, SinkTxn, TableDef, TxnBatch};

async fn within<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("operation hung")
}

// ---------------------------------------------------------------------------------------------
// Upstream

struct Env {
    cluster: SimCluster,
    tidb: Tidb,
}

async fn env() -> Env {
    let cluster = SimCluster::start(SimConfig::default()).await.unwrap();
    let tidb = cluster.tidb().unwrap();
    Env { cluster, tidb }
}

/// Mirrors upstream commits as sink transactions: keeps every row's current values so that
/// updates and deletes carry their old image, as the change feed would deliver them.
#[derive(Default)]
struct Replica {
    defs: HashMap<i64, Arc<TableDef>>,
    rows: HashMap<(i64, Handle), Vec<Datum>>,
}

impl Replica {
    fn add_table(&mut self, t: &Table, version: u64) {
        self.defs.insert(
            t.id(),
            Arc::new(TableDef {
                schema_name: t.db.clone(),
                table_name: t.name().to_string(),
                info: Arc::clone(&t.info),
                version,
            }),
        );
    }

    /// The sink transactions (one per table) of a commit.
    fn txns(&mut self, c: &CommitInfo) -> Vec<SinkTxn> {
        let commit_ts = Ts(c.commit_ts.expect("committed"));
        let mut out: Vec<SinkTxn> = Vec::new();
        for w in &c.rows {
            let slot = (w.table_id, w.handle.clone());
            let (kind, old, new) = match w.kind {
                RowKind::Insert => {
                    let new = w.values.clone().unwrap();
                    self.rows.insert(slot, new.clone());
                    (RowChangeKind::Insert, None, Some(new))
                }
                RowKind::Update => {
                    let new = w.values.clone().unwrap();
                    let old = self.rows.insert(slot, new.clone());
                    (RowChangeKind::Update, old, Some(new))
                }
                RowKind::Delete => (RowChangeKind::Delete, self.rows.remove(&slot), None),
            };
            let change = RowChange {
                table_id: w.table_id,
                start_ts: Ts(c.start_ts),
                commit_ts,
                kind,
                handle: w.handle.clone(),
                old,
                new,
            };
            match out.iter_mut().find(|t| t.table.info.id == w.table_id) {
                Some(t) => t.rows.push(change),
                None => out.push(SinkTxn {
                    table: Arc::clone(&self.defs[&w.table_id]),
                    start_ts: Ts(c.start_ts),
                    commit_ts,
                    rows: vec![change],
                    safe_mode: false,
                }),
            }
        }
        out
    }
}

fn s(v: &str) -> Datum {
    Datum::Bytes(v.as_bytes().to_vec())
}

fn varbinary(n: i64) -> FieldType {
    FieldType {
        tp: mysql::TYPE_VARCHAR,
        flag: mysql::FLAG_BINARY,
        flen: n,
        decimal: 0,
        charset: "binary".into(),
        collate: "binary".into(),
        ..FieldType::default()
    }
}

/// The many-types table `t`, the keyless `k` and the clustered-string-key `s`.
fn create_tables(e: &Env, db: &str, r: &mut Replica) -> (Table, Table, Table) {
    e.tidb.create_database(db).unwrap();
    let col = ColumnSpec::new;
    let t_spec = TableSpec::new(
        "t",
        vec![
            col("id", types::bigint()).not_null(),
            col("name", types::varchar(32)),
            col("price", types::decimal(10, 2)),
            col("f", types::float()),
            col("d", types::double()),
            col("dt", types::datetime(3)),
            col("tsc", types::timestamp(0)),
            col("dte", types::date()),
            col("tm", types::time(0)),
            col("e", types::enum_of(&["x", "y", "z"])),
            col("st", types::set_of(&["a", "b", "c"])),
            col("b", types::bit(10)),
            col("j", types::json()),
            col("u", types::unsigned(types::bigint())),
            col("bin", varbinary(8)),
            col("yr", types::year()),
            col("c", types::char(5)),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()));
    let v = e.tidb.create_table(db, &t_spec).unwrap().commit_ts;
    let t = e.tidb.table(db, "t").unwrap();
    r.add_table(&t, v);
    let k_spec = TableSpec::new(
        "k",
        vec![col("a", types::int()), col("b", types::varchar(10))],
    );
    let v = e.tidb.create_table(db, &k_spec).unwrap().commit_ts;
    let k = e.tidb.table(db, "k").unwrap();
    r.add_table(&k, v);
    let s_spec = TableSpec::new(
        "s",
        vec![
            col("code", types::varchar(10)).not_null(),
            col("v", types::int()),
        ],
    )
    .primary_key(PrimaryKey::Clustered(vec!["code".into()]));
    let v = e.tidb.create_table(db, &s_spec).unwrap().commit_ts;
    let st = e.tidb.table(db, "s").unwrap();
    r.add_table(&st, v);
    (t, k, st)
}

fn t_row(i: i64) -> Vec<Datum> {
    let mut tsv: Time = "2024-01-02 03:04:05".parse().unwrap();
    tsv.kind = TimeKind::Timestamp;
    let json: Json = r#"{"k": [1, "x", null], "n": 2.5}"#.parse().unwrap();
    vec![
        Datum::Int(i),
        s(&format!("name-{i} 'q' é")),
        Datum::Decimal(format!("{i}.50").parse().unwrap()),
        Datum::Float32(1.234_567_8 * i as f32),
        Datum::Float64(-1.25e10 / i as f64 + 0.1),
        Datum::Time("2024-02-29 23:59:58.123".parse().unwrap()),
        Datum::Time(tsv),
        Datum::Time("1999-12-31".parse().unwrap()),
        Datum::Duration("-12:34:56".parse().unwrap()),
        Datum::Enum(1 + (i as u64 % 3)),
        Datum::Set(i as u64 % 8),
        Datum::Bit(517 + i as u64),
        Datum::Json(json),
        Datum::Uint(u64::MAX - i as u64),
        Datum::Bytes(vec![0xff, 0x00, i as u8]),
        Datum::Int(2000 + i),
        s("ab"),
    ]
}

fn t_null_row(i: i64) -> Vec<Datum> {
    let mut row = vec![Datum::Int(i)];
    row.extend(std::iter::repeat_n(Datum::Null, 16));
    row
}

/// Writes the upstream history; returns the commits in order.
fn write_history(e: &Env, t: &Table, k: &Table, st: &Table) -> Vec<CommitInfo> {
    let mut commits = Vec::new();
    let mut tx = e.tidb.begin();
    for i in 1..=6 {
        tx.insert(t, t_row(i)).unwrap();
    }
    tx.insert(t, t_null_row(7)).unwrap();
    tx.insert(k, vec![Datum::Int(1), s("a")]).unwrap();
    tx.insert(k, vec![Datum::Int(1), s("a")]).unwrap();
    tx.insert(k, vec![Datum::Int(2), Datum::Null]).unwrap();
    for (code, v) in [("b", 1), ("a", 2), ("c", 3)] {
        tx.insert(st, vec![s(code), Datum::Int(v)]).unwrap();
    }
    commits.push(tx.commit().unwrap());

    let mut tx = e.tidb.begin();
    let mut renamed = t_row(2);
    renamed[1] = s("renamed");
    tx.update(t, &Handle::Int(2), renamed).unwrap();
    tx.delete(t, &Handle::Int(3)).unwrap();
    let k_handles: Vec<Handle> = commits[0]
        .rows
        .iter()
        .filter(|w| w.table_id == k.id())
        .map(|w| w.handle.clone())
        .collect();
    tx.delete(k, &k_handles[0]).unwrap();
    let a = commits[0]
        .rows
        .iter()
        .find(|w| w.table_id == st.id() && w.values.as_ref().unwrap()[0] == s("a"))
        .unwrap()
        .handle
        .clone();
    tx.update(st, &a, vec![s("a"), Datum::Int(20)]).unwrap();
    commits.push(tx.commit().unwrap());

    let mut tx = e.tidb.begin();
    tx.insert(t, t_row(8)).unwrap();
    let mut changed = t_row(1);
    changed[2] = Datum::Decimal("99.99".parse().unwrap());
    tx.update(t, &Handle::Int(1), changed).unwrap();
    commits.push(tx.commit().unwrap());
    commits
}

fn table<'a>(report: &'a VerifyReport, name: &str) -> &'a TableReport {
    report
        .tables
        .iter()
        .find(|t| t.table == name)
        .unwrap_or_else(|| panic!("no table {name} in {report}"))
}

fn opts(e: &Env, downstream: Downstream, db: &str) -> VerifyOptions {
    VerifyOptions {
        filter: vec![format!("{db}.*")],
        ..VerifyOptions::new(e.cluster.pd_endpoints(), downstream)
    }
}

/// Row counts of every table at `ts` according to the sim's own, independent export.
fn exported_counts(e: &Env, ts: u64, db: &str) -> Vec<(String, u64)> {
    let snaps = snapshot_tables(e.cluster.store(), ts, &[(db, "k"), (db, "s"), (db, "t")]).unwrap();
    snaps
        .into_iter()
        .map(|s| (s.table, s.rows.len() as u64))
        .collect()
}

fn counts(report: &VerifyReport) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = report
        .tables
        .iter()
        .map(|t| (t.table.clone(), t.upstream_rows))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// The command

fn tidal(args: &[String]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tidal"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Runs the binary without blocking the runtime that serves the embedded cluster.
async fn tidal_async(args: Vec<String>) -> Output {
    within(120, tokio::task::spawn_blocking(move || tidal(&args)))
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Storage downstream

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidal-verify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn storage_config(dir: &Path, protocol: Protocol) -> StorageConfig {
    let mut cfg = StorageConfig::new(dir, protocol);
    cfg.encoder.canal_json.enable_tidb_extension = true;
    cfg.encoder.csv.include_commit_ts = true;
    cfg
}

async fn write_storage(
    dir: &Path,
    protocol: Protocol,
    runs: &[Vec<Vec<SinkTxn>>],
    checkpoint: u64,
) {
    for run in runs {
        // Each run is one sink process: a restart continues in new files.
        let sink = StorageSink::open(storage_config(dir, protocol))
            .await
            .unwrap();
        for txns in run {
            sink.write(TxnBatch { txns: txns.clone() }).await.unwrap();
        }
        sink.update_checkpoint(Ts(checkpoint)).await.unwrap();
        sink.close().await.unwrap();
    }
}

/// Storage directories of the same upstream history: replayed with duplicates (equal), and
/// with one transaction lost (different, with exactly its rows named).
async fn storage_round_trip(protocol: Protocol) {
    let e = env().await;
    let db = "vfy_st";
    let mut r = Replica::default();
    let (t, k, st) = create_tables(&e, db, &mut r);
    let commits = write_history(&e, &t, &k, &st);
    let txns: Vec<Vec<SinkTxn>> = commits.iter().map(|c| r.txns(c)).collect();
    let checkpoint = commits[2].commit_ts.unwrap();

    // A change after the checkpoint: upstream has it, and so do the files, but the verify ts
    // (the checkpoint) excludes it on both sides.
    let mut late_r = r;
    let mut tx = e.tidb.begin();
    tx.delete(&t, &Handle::Int(5)).unwrap();
    let late = tx.commit().unwrap();
    let late_txns = late_r.txns(&late);

    // Run 1 writes everything, crashes before its checkpoint; run 2 replays from the start,
    // then writes the late change; the checkpoint names commit 3.
    let good = temp_dir(&format!("good-{protocol}"));
    let mut run2 = txns.clone();
    run2.push(late_txns);
    write_storage(&good, protocol, &[txns.clone(), run2], checkpoint).await;

    let report = within(
        60,
        verify(opts(
            &e,
            Downstream::Storage {
                dir: good.clone(),
                protocol,
            },
            db,
        )),
    )
    .await
    .unwrap();
    assert_eq!(report.ts, Ts(checkpoint));
    assert!(report.equal, "{report}");
    assert_eq!(counts(&report), exported_counts(&e, checkpoint, db));
    assert_eq!(
        counts(&report),
        vec![("k".into(), 2), ("s".into(), 3), ("t".into(), 7)]
    );
    for tr in &report.tables {
        assert_eq!(tr.upstream_rows, tr.downstream_rows, "{tr}");
        assert_eq!(tr.upstream_checksum, tr.downstream_checksum, "{tr}");
        assert!(tr.diffs.is_empty());
    }

    // Commit 2 lost: t's id=2 keeps its old name, id=3 is still there; k keeps the deleted
    // duplicate; s keeps a's old value.
    let lost = temp_dir(&format!("lost-{protocol}"));
    write_storage(
        &lost,
        protocol,
        &[vec![txns[0].clone(), txns[2].clone()]],
        checkpoint,
    )
    .await;
    let report = within(
        60,
        verify(opts(
            &e,
            Downstream::Storage {
                dir: lost.clone(),
                protocol,
            },
            db,
        )),
    )
    .await
    .unwrap();
    assert!(!report.equal, "{report}");
    let tt = table(&report, "t");
    assert_eq!((tt.upstream_rows, tt.downstream_rows), (7, 8));
    assert_eq!(
        tt.diffs,
        vec![
            RowDiff {
                key: "id=2".into(),
                kind: DiffKind::Different {
                    column: "name".into(),
                    upstream: Some("renamed".into()),
                    downstream: Some("name-2 'q' é".into()),
                },
            },
            RowDiff {
                key: "id=3".into(),
                kind: DiffKind::Extra,
            },
        ]
    );
    let kt = table(&report, "k");
    assert_eq!(kt.diff_count, 1);
    assert_eq!(
        kt.diffs,
        vec![RowDiff {
            key: "a=1, b=\"a\"".into(),
            kind: DiffKind::Extra,
        }]
    );
    let stt = table(&report, "s");
    assert_eq!(
        stt.diffs,
        vec![RowDiff {
            key: "code=\"a\"".into(),
            kind: DiffKind::Different {
                column: "v".into(),
                upstream: Some("20".into()),
                downstream: Some("2".into()),
            },
        }]
    );

    // The limit on listed diffs, and a filter that leaves the different tables out.
    let mut o = opts(
        &e,
        Downstream::Storage {
            dir: lost.clone(),
            protocol,
        },
        db,
    );
    o.max_row_diffs_per_table = 1;
    let report = within(60, verify(o)).await.unwrap();
    let tt = table(&report, "t");
    assert_eq!((tt.diffs.len(), tt.diff_count), (1, 2));
    let mut o = opts(
        &e,
        Downstream::Storage {
            dir: lost.clone(),
            protocol,
        },
        db,
    );
    o.filter = vec![
        "*.*".into(),
        format!("!{db}.k"),
        format!("!{db}.s"),
        format!("!{db}.t"),
    ];
    let report = within(60, verify(o)).await.unwrap();
    assert!(report.equal && report.tables.is_empty(), "{report}");

    // The command: exit codes and both output forms.
    let pd = e.cluster.pd_endpoints().join(",");
    let base = |dir: &Path| {
        vec![
            "verify".to_string(),
            "--pd".into(),
            pd.clone(),
            "--storage".into(),
            dir.display().to_string(),
            "--protocol".into(),
            protocol.name().into(),
            "--filter".into(),
            format!("{db}.*"),
        ]
    };
    let out = tidal_async(base(&good)).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("equal     {db}.t  rows 7/7")),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("EQUAL: 3 tables compared"),
        "{stdout}"
    );

    let out = tidal_async(base(&lost)).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("DIFFERENT {db}.t  rows 7/8")),
        "{stdout}"
    );
    assert!(stdout.contains("    extra downstream: id=3"), "{stdout}");
    assert!(
        stdout.contains("NOT EQUAL: 3 of 3 tables differ"),
        "{stdout}"
    );

    let mut args = base(&lost);
    args.extend(["--json".to_string(), "--max-diffs".into(), "1".into()]);
    let out = tidal_async(args).await;
    assert_eq!(out.status.code(), Some(1));
    let json: VerifyReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.ts, Ts(checkpoint));
    assert_eq!(table(&json, "t").diff_count, 2);
    assert_eq!(table(&json, "t").diffs.len(), 1);

    // Below the GC safe point: a clear error, exit code 2.
    e.cluster
        .faults()
        .advance_gc_safe_point(late.commit_ts.unwrap());
    let mut o = opts(
        &e,
        Downstream::Storage {
            dir: good.clone(),
            protocol,
        },
        db,
    );
    o.ts = Some(Ts(checkpoint));
    match within(60, verify(o)).await {
        Err(VerifyError::LostByGc { ts, safe_point }) => {
            assert_eq!(ts, Ts(checkpoint));
            assert!(safe_point >= Ts(late.commit_ts.unwrap()));
        }
        other => panic!("expected LostByGc, got {other:?}"),
    }
    let out = tidal_async(base(&good)).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("below the GC safe point"), "{stderr}");

    let _ = std::fs::remove_dir_all(&good);
    let _ = std::fs::remove_dir_all(&lost);
    e.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_canal_json_replay_equal_tampered_and_gc() {
    storage_round_trip(Protocol::CanalJson).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_csv_replay_equal_tampered_and_gc() {
    storage_round_trip(Protocol::Csv).await;
}

/// A directory that is not a storage sink's, and a missing checkpoint, fail clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_errors_are_clear() {
    let e = env().await;
    let missing = std::env::temp_dir().join("tidal-verify-no-such-dir");
    let err = verify(opts(
        &e,
        Downstream::Storage {
            dir: missing.clone(),
            protocol: Protocol::CanalJson,
        },
        "x",
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    let empty = temp_dir("empty");
    let err = within(
        30,
        verify(opts(
            &e,
            Downstream::Storage {
                dir: empty.clone(),
                protocol: Protocol::CanalJson,
            },
            "x",
        )),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("checkpoint-ts; pass --ts"),
        "{err}"
    );
    // With a ts, an empty directory compares (no tables selected upstream: equal).
    let mut o = opts(
        &e,
        Downstream::Storage {
            dir: empty.clone(),
            protocol: Protocol::CanalJson,
        },
        "x",
    );
    o.ts = Some(Ts(e.cluster.tso().next()));
    let report = within(30, verify(o)).await.unwrap();
    assert!(report.equal && report.tables.is_empty());
    let _ = std::fs::remove_dir_all(&empty);
    e.cluster.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// MySQL downstream

/// `url` with its password replaced (`mysql://user:pw@host:port/...`).
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let user = userinfo.split(':').next().unwrap();
    format!("{scheme}://{user}:{password}@{host}")
}

async fn exec(pool: &MySqlPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_equal_then_tampered() {
    let Some(url) = support::external_service("TIDAL_TEST_MYSQL") else {
        return;
    };
    let e = env().await;
    let db = "tidal_verify_mysql";
    let mut r = Replica::default();
    let (t, k, st) = create_tables(&e, db, &mut r);
    let commits = write_history(&e, &t, &k, &st);
    let txns: Vec<Vec<SinkTxn>> = commits.iter().map(|c| r.txns(c)).collect();

    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("connect to MariaDB");
    exec(&pool, &format!("DROP DATABASE IF EXISTS `{db}`")).await;
    exec(&pool, &format!("CREATE DATABASE `{db}`")).await;
    exec(
        &pool,
        &format!(
            "CREATE TABLE `{db}`.t (id BIGINT PRIMARY KEY, name VARCHAR(32), price DECIMAL(10,2), \
             f FLOAT, d DOUBLE, dt DATETIME(3), tsc TIMESTAMP NULL, dte DATE, tm TIME, \
             e ENUM('x','y','z'), st SET('a','b','c'), b BIT(10), j JSON, u BIGINT UNSIGNED, \
             bin VARBINARY(8), yr YEAR, c CHAR(5))"
        ),
    )
    .await;
    exec(
        &pool,
        &format!("CREATE TABLE `{db}`.k (a INT, b VARCHAR(10))"),
    )
    .await;
    exec(
        &pool,
        &format!("CREATE TABLE `{db}`.s (code VARCHAR(10) PRIMARY KEY, v INT)"),
    )
    .await;

    // Replicate the history through the real MySQL sink.
    let cfg = match parse_sink_uri(&url).unwrap() {
        SinkConfig::MySql(cfg) => cfg,
        other => panic!("{other:?}"),
    };
    let sink = MySqlSink::open(cfg).await.unwrap();
    for batch in &txns {
        sink.write(TxnBatch {
            txns: batch.clone(),
        })
        .await
        .unwrap();
    }
    sink.close().await.unwrap();

    let report = within(60, verify(opts(&e, Downstream::MySql(url.clone()), db)))
        .await
        .unwrap();
    assert!(report.equal, "{report}");
    assert_eq!(counts(&report), exported_counts(&e, report.ts.0, db));
    assert_eq!(
        counts(&report),
        vec![("k".into(), 2), ("s".into(), 3), ("t".into(), 7)]
    );
    let pd = e.cluster.pd_endpoints().join(",");
    let args = vec![
        "verify".to_string(),
        "--pd".into(),
        pd.clone(),
        "--mysql".into(),
        url.clone(),
        "--filter".into(),
        format!("{db}.*"),
    ];
    let out = tidal_async(args.clone()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // Tamper: a row deleted, a value changed, a row added; a duplicate in the keyless table.
    exec(&pool, &format!("DELETE FROM `{db}`.t WHERE id = 4")).await;
    exec(&pool, &format!("UPDATE `{db}`.t SET f = 2.5 WHERE id = 6")).await;
    exec(
        &pool,
        &format!("INSERT INTO `{db}`.t (id, name) VALUES (100, 'intruder')"),
    )
    .await;
    exec(&pool, &format!("INSERT INTO `{db}`.k VALUES (2, NULL)")).await;
    let report = within(60, verify(opts(&e, Downstream::MySql(url.clone()), db)))
        .await
        .unwrap();
    assert!(!report.equal, "{report}");
    let tt = table(&report, "t");
    assert_eq!((tt.upstream_rows, tt.downstream_rows), (7, 7));
    assert_eq!(
        tt.diffs,
        vec![
            RowDiff {
                key: "id=4".into(),
                kind: DiffKind::Missing,
            },
            RowDiff {
                key: "id=6".into(),
                kind: DiffKind::Different {
                    column: "f".into(),
                    upstream: Some("7.40741e0".into()),
                    downstream: Some("2.50000e0".into()),
                },
            },
            RowDiff {
                key: "id=100".into(),
                kind: DiffKind::Extra,
            },
        ]
    );
    let kt = table(&report, "k");
    assert_eq!(
        kt.diffs,
        vec![RowDiff {
            key: "a=2, b=NULL".into(),
            kind: DiffKind::Extra,
        }]
    );
    assert!(table(&report, "s").equal);

    let out = tidal_async(args).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("    missing downstream: id=4"), "{stdout}");

    // A downstream table that does not exist is a difference, not an error.
    exec(&pool, &format!("DROP TABLE `{db}`.s")).await;
    let report = within(60, verify(opts(&e, Downstream::MySql(url.clone()), db)))
        .await
        .unwrap();
    let stt = table(&report, "s");
    assert_eq!(stt.note.as_deref(), Some("table does not exist downstream"));
    assert_eq!(stt.diff_count, 3);

    // A wrong password: exit 2, the password never printed.
    let bad = with_password(&url, "wrong-secret");
    let out = tidal_async(vec![
        "verify".to_string(),
        "--pd".into(),
        pd,
        "--mysql".into(),
        bad,
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("wrong-secret"), "{stderr}");
    assert!(stderr.contains("xxxxx"), "{stderr}");

    exec(&pool, &format!("DROP DATABASE IF EXISTS `{db}`")).await;
    e.cluster.shutdown().await;
}
