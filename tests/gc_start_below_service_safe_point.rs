//! A changefeed created from a ts below PD's minimum service safe point (but above the physical
//! GC safe point) with `check_gc_safe_point = false` must replicate correctly from there: the
//! schema store bootstraps at the changefeed's own start ts, so rows written between the start
//! ts and a later `ADD COLUMN` decode with the old schema, rows after it with the new one, and a
//! table created in between is replicated too — all of it below the service safe point another
//! service (TiDB's GC worker) holds.
//!
//! The downstream starts as the upstream was at the start ts (the table and its rows, loaded by
//! hand, as a user would with a dump); at the end `tidal verify` must find every table equal at
//! the checkpoint, including the added column's values.

mod support;

use support::{run_tag, within};

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, MySqlPool};
use tidal::verify::{Downstream, VerifyOptions, verify};
use tidal_control::server::{Server, ServerConfig};
use tidal_model::{Datum, Handle};
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::pd::GC_WORKER_SERVICE_ID;
use tidal_sim::tidb::{ColumnSpec, PrimaryKey, TableSpec, Tidb, types};

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

/// Runs `f` on a new transaction and commits it; returns the commit ts.
fn write(tidb: &Tidb, f: impl FnOnce(&mut tidal_sim::tidb::Txn)) -> u64 {
    let mut txn = tidb.begin();
    f(&mut txn);
    txn.commit()
        .expect("commit")
        .commit_ts
        .expect("committed, not rolled back")
}

fn row(id: i64, v: &str) -> Vec<Datum> {
    vec![Datum::Int(id), Datum::Bytes(v.as_bytes().to_vec())]
}

async fn exec(pool: &MySqlPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let resp = http.post(url).json(&body).send().await.expect("request");
    let status = resp.status().as_u16();
    let v = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unchecked_start_below_service_safe_point_replicates_rows_and_schema() {
    let Some(mysql) = support::external_service("TIDAL_TEST_MYSQL") else {
        return;
    };
    let tag = run_tag();
    let db = format!("tidal_gcstart_{tag}");

    let sim = within(
        "sim start",
        30,
        SimCluster::start(SimConfig::with_min_ts_interval(Duration::from_millis(50))),
    )
    .await
    .expect("sim");
    let tidb = sim.tidb().expect("tidb");

    // History before the physical GC safe point: created, filled, updated.
    tidb.create_database(&db).expect("create db");
    tidb.create_table(&db, &table_spec("t")).expect("create t");
    let t = tidb.table(&db, "t").expect("t");
    write(&tidb, |x| {
        for id in 1..=20 {
            x.insert(&t, row(id, &format!("a{id}"))).expect("insert");
        }
    });
    write(&tidb, |x| {
        for id in 1..=10 {
            x.update(&t, &Handle::Int(id), row(id, &format!("b{id}")))
                .expect("update");
        }
    });
    let physical = sim.tso().next();
    // More versions after the physical safe point, before the start ts.
    write(&tidb, |x| {
        for id in 11..=15 {
            x.update(&t, &Handle::Int(id), row(id, &format!("c{id}")))
                .expect("update");
        }
    });
    let start_ts = sim.tso().next();
    // What the user loads downstream: the table as it is at start_ts.
    let at_start: Vec<(i64, String)> = (1..=20)
        .map(|id| {
            let v = match id {
                1..=10 => format!("b{id}"),
                11..=15 => format!("c{id}"),
                _ => format!("a{id}"),
            };
            (id, v)
        })
        .collect();

    // Between the start ts and the service safe point: DML with the old schema, ADD COLUMN,
    // DML with the new one, and a new table.
    write(&tidb, |x| {
        for id in 1..=5 {
            x.update(&t, &Handle::Int(id), row(id, &format!("d{id}")))
                .expect("update");
        }
        assert!(x.delete(&t, &Handle::Int(6)).expect("delete"));
        for id in 21..=25 {
            x.insert(&t, row(id, &format!("e{id}"))).expect("insert");
        }
    });
    let added = tidb
        .add_column(
            &db,
            "t",
            &ColumnSpec::new("c", types::int()).default(Datum::Int(7)),
        )
        .expect("add column");
    let t = tidb.table(&db, "t").expect("t after add column");
    write(&tidb, |x| {
        x.insert(
            &t,
            vec![
                Datum::Int(26),
                Datum::Bytes(b"f26".to_vec()),
                Datum::Int(100),
            ],
        )
        .expect("insert");
        x.update(
            &t,
            &Handle::Int(1),
            vec![Datum::Int(1), Datum::Bytes(b"g1".to_vec()), Datum::Int(5)],
        )
        .expect("update");
    });
    tidb.create_table(&db, &table_spec("t2"))
        .expect("create t2");
    let t2 = tidb.table(&db, "t2").expect("t2");
    write(&tidb, |x| {
        for id in 1..=5 {
            x.insert(&t2, row(id, &format!("h{id}"))).expect("insert");
        }
    });

    // Another service holds GC above all of that; the physical safe point is below start_ts.
    let service_min = sim.tso().next();
    assert!(service_min > added.commit_ts && added.commit_ts > start_ts);
    sim.pd()
        .update_service_safe_point(GC_WORKER_SERVICE_ID, i64::MAX, service_min);
    assert_eq!(sim.faults().run_gc(physical), physical);
    assert!(physical < start_ts && start_ts < service_min);

    // The downstream as of start_ts.
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&mysql)
        .await
        .expect("connect to MariaDB");
    exec(&pool, &format!("CREATE DATABASE `{db}`")).await;
    exec(
        &pool,
        &format!("CREATE TABLE `{db}`.`t` (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(64))"),
    )
    .await;
    let values: Vec<String> = at_start
        .iter()
        .map(|(id, v)| format!("({id}, '{v}')"))
        .collect();
    exec(
        &pool,
        &format!("INSERT INTO `{db}`.`t` VALUES {}", values.join(", ")),
    )
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ServerConfig {
        pd: sim.pd_endpoints(),
        addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        workers: 2,
        checkpoint_interval: Duration::from_millis(100),
        gc_tick: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let server = within("server start", 30, Server::start(cfg))
        .await
        .expect("server starts");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let create_url = format!("{}/api/v2/changefeeds", server.base_url());
    let body = |check: bool| {
        json!({
            "changefeed_id": "below-service-min",
            "sink_uri": mysql,
            "start_ts": start_ts,
            "replica_config": {
                "check_gc_safe_point": check,
                "filter": {"rules": [format!("{db}.*")]},
            },
        })
    };
    // With the check on, TiCDC's service safe point rule refuses it.
    let (status, refused) = post(&http, &create_url, body(true)).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error_code"], "CDC:ErrStartTsBeforeGC", "{refused}");
    // With it off, anything at or above the physical safe point is accepted.
    let (status, created) = post(&http, &create_url, body(false)).await;
    assert_eq!(status, 200, "{created}");

    // Writes after the service safe point, while the changefeed runs.
    let last_commit = write(&tidb, |x| {
        for id in 27..=30 {
            x.insert(
                &t,
                vec![
                    Datum::Int(id),
                    Datum::Bytes(format!("i{id}").into_bytes()),
                    Datum::Null,
                ],
            )
            .expect("insert");
        }
        assert!(x.delete(&t2, &Handle::Int(2)).expect("delete"));
    });

    let status_url = format!(
        "{}/api/v2/changefeeds/below-service-min/status",
        server.base_url()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let checkpoint = loop {
        let s: Value = http
            .get(&status_url)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status json");
        let c = s["checkpoint_ts"].as_u64().unwrap_or(0);
        if c >= last_commit {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "checkpoint did not reach {last_commit} in 60 s; last status {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let mut opts = VerifyOptions::new(sim.pd_endpoints(), Downstream::MySql(mysql.clone()));
    opts.ts = Some(tidal_model::Ts(checkpoint));
    opts.filter = vec![format!("{db}.*")];
    let report = within("verify", 60, verify(opts)).await;
    // Spot checks of the schema downstream, read before cleaning up.
    let old_row: Option<(String, Option<i32>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT v, c FROM `{db}`.`t` WHERE id = 2"
    )))
    .fetch_optional(&pool)
    .await
    .expect("read row 2");
    let new_row: Option<(String, Option<i32>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT v, c FROM `{db}`.`t` WHERE id = 26"
    )))
    .fetch_optional(&pool)
    .await
    .expect("read row 26");
    exec(&pool, &format!("DROP DATABASE IF EXISTS `{db}`")).await;
    server.shutdown().await;
    sim.shutdown().await;

    let report = report.expect("verify runs");
    let names: Vec<String> = report
        .tables
        .iter()
        .map(|t| format!("{}.{}", t.db, t.table))
        .collect();
    assert_eq!(names, vec![format!("{db}.t"), format!("{db}.t2")]);
    assert!(report.equal, "{}", report.to_json());
    let rows: Vec<u64> = report.tables.iter().map(|t| t.upstream_rows).collect();
    // t: 20 − 1 deleted + 5 + 1 + 4; t2: 5 − 1.
    assert_eq!(rows, vec![29, 4]);
    assert_eq!(old_row, Some(("d2".to_string(), Some(7))));
    assert_eq!(new_row, Some(("f26".to_string(), Some(100))));
}
