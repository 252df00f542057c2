//! The MySQL sink against a real MariaDB (`TIDAL_TEST_MYSQL`): round trips of every kind of
//! row change and value type, replays, parallel writers against an in-memory oracle, per-key
//! ordering, DDL exactly-once, and the errors users see.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use support::*;
use tidal_model::ddl::ActionType;
use tidal_model::mysql::*;
use tidal_model::{Datum, Ts};
use tidal_sinks::mysql::{MySqlConfig, MySqlSink};
use tidal_sinks::open::open_sink;
use tidal_sinks::uri::{SinkConfig, parse_sink_uri};
use tidal_sinks::{Sink, SinkError, SinkTxn, TableDef, TxnBatch};

const PK: u32 = FLAG_PRI_KEY | FLAG_NOT_NULL;

fn config(url: &str, params: &str, changefeed: &str) -> MySqlConfig {
    match parse_sink_uri(&sink_uri(url, params)).expect("sink uri") {
        SinkConfig::MySql(mut cfg) => {
            cfg.changefeed_id = changefeed.to_string();
            cfg
        }
        other => panic!("not a mysql config: {other:?}"),
    }
}

async fn open(url: &str, params: &str, changefeed: &str) -> MySqlSink {
    MySqlSink::open(config(url, params, changefeed))
        .await
        .expect("open mysql sink")
}

async fn write(
    sink: &MySqlSink,
    txns: Vec<SinkTxn>,
) -> Result<tidal_sinks::FlushReport, SinkError> {
    sink.write(TxnBatch { txns }).await
}

fn s(v: &str) -> Datum {
    Datum::Bytes(v.as_bytes().to_vec())
}

fn text(v: &[&str]) -> Vec<Option<String>> {
    v.iter().map(|x| Some(x.to_string())).collect()
}

async fn create_table(sink: &MySqlSink, db: &str, table: &str, id: i64, sql: &str, ts: u64) {
    sink.execute_ddl(
        ddl_event(db, table, id, ActionType::CREATE_TABLE, sql, ts),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Creates `db`.`name` (`id BIGINT PRIMARY KEY, v VARCHAR(32)`) downstream through the sink at
/// `ts`, and returns its definition (rows built with [`kv`]).
async fn create_kv_table(
    sink: &MySqlSink,
    db: &str,
    name: &str,
    id: i64,
    ts: u64,
) -> Arc<TableDef> {
    create_table(
        sink,
        db,
        name,
        id,
        &format!("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(32))"),
        ts,
    )
    .await;
    table_def(
        db,
        table_info(
            id,
            name,
            &[
                Col::new("id", TYPE_LONGLONG, PK),
                Col::new("v", TYPE_VARCHAR, 0),
            ],
            &[],
            true,
        ),
    )
}

fn kv(id: i64, v: &str) -> Vec<Datum> {
    vec![Datum::Int(id), s(v)]
}

#[tokio::test]
async fn int_pk_insert_update_delete() {
    let db = "tidal_sink_intpk";
    let Some((url, pool)) = fresh_env("int_pk_insert_update_delete", db).await else {
        return;
    };
    let sink = open(&url, "worker-count=4", db).await;
    let t = create_kv_table(&sink, db, "t", 100, 10).await;
    let report = write(
        &sink,
        vec![
            txn(
                &t,
                20,
                (1..=5).map(|i| insert(kv(i, &format!("v{i}")))).collect(),
                false,
            ),
            txn(
                &t,
                21,
                vec![update(kv(2, "v2"), kv(2, "two")), delete(kv(3, "v3"))],
                false,
            ),
            txn(
                &t,
                22,
                vec![insert(kv(6, "v6")), update(kv(1, "v1"), kv(1, "one"))],
                false,
            ),
            // A key change: delete of the old key + insert of the new one.
            txn(&t, 23, vec![update(kv(4, "v4"), kv(40, "forty"))], false),
        ],
    )
    .await
    .unwrap();
    assert_eq!(report.rows, 10);
    assert_eq!(report.max_commit_ts, 23);
    let rows = rows_as_text(&pool, &format!("SELECT id, v FROM `{db}`.t ORDER BY id")).await;
    assert_eq!(
        rows,
        vec![
            text(&["1", "one"]),
            text(&["2", "two"]),
            text(&["5", "v5"]),
            text(&["6", "v6"]),
            text(&["40", "forty"]),
        ]
    );
    sink.close().await.unwrap();
    assert!(matches!(write(&sink, vec![]).await, Err(SinkError::Closed)));
    drop_db(&pool, db).await;
}

#[tokio::test]
async fn composite_pk_and_unique_key() {
    let db = "tidal_sink_composite";
    let Some((url, pool)) = fresh_env("composite_pk_and_unique_key", db).await else {
        return;
    };
    let sink = open(&url, "", db).await;
    create_table(
        &sink,
        db,
        "t",
        101,
        "CREATE TABLE t (a INT, b VARCHAR(10), u INT NOT NULL, v INT NULL, \
         PRIMARY KEY (a, b), UNIQUE KEY uk (u))",
        10,
    )
    .await;
    let info = table_info(
        101,
        "t",
        &[
            Col::new("a", TYPE_LONG, PK),
            Col::new("b", TYPE_VARCHAR, PK),
            Col::new("u", TYPE_LONG, FLAG_NOT_NULL | FLAG_UNIQUE_KEY),
            Col::new("v", TYPE_LONG, 0),
        ],
        &[
            ("PRIMARY", &["a", "b"], true, true),
            ("uk", &["u"], false, true),
        ],
        false,
    );
    assert_eq!(info.unique_keys(), vec![vec![1, 2], vec![3]]);
    let t = table_def(db, info);
    let r = |a: i64, b: &str, u: i64, v: Option<i64>| {
        vec![
            Datum::Int(a),
            s(b),
            Datum::Int(u),
            v.map_or(Datum::Null, Datum::Int),
        ]
    };
    write(
        &sink,
        vec![
            txn(
                &t,
                20,
                vec![
                    insert(r(1, "x", 5, Some(1))),
                    insert(r(1, "y", 6, None)),
                    insert(r(2, "x", 7, Some(3))),
                ],
                false,
            ),
            // In one transaction: insert a row taking u=5 (listed first, as upstream key order
            // may put it) and delete the row that held it.
            txn(
                &t,
                21,
                vec![insert(r(0, "a", 5, Some(9))), delete(r(1, "x", 5, Some(1)))],
                false,
            ),
            // Move u of (1,y) from 6 to 8, then give 6 to (2,x) in a later transaction.
            txn(
                &t,
                22,
                vec![update(r(1, "y", 6, None), r(1, "y", 8, Some(4)))],
                false,
            ),
            txn(
                &t,
                23,
                vec![update(r(2, "x", 7, Some(3)), r(2, "x", 6, Some(3)))],
                false,
            ),
        ],
    )
    .await
    .unwrap();
    let rows = rows_as_text(
        &pool,
        &format!("SELECT a, b, u, v FROM `{db}`.t ORDER BY a, b"),
    )
    .await;
    assert_eq!(
        rows,
        vec![
            text(&["0", "a", "5", "9"]),
            text(&["1", "y", "8", "4"]),
            text(&["2", "x", "6", "3"]),
        ]
    );
    close_and_drop(&sink, &pool, db).await;
}

#[tokio::test]
async fn table_without_key() {
    let db = "tidal_sink_keyless";
    let Some((url, pool)) = fresh_env("table_without_key", db).await else {
        return;
    };
    let sink = open(&url, "", db).await;
    create_table(
        &sink,
        db,
        "t",
        102,
        "CREATE TABLE t (a INT NULL, b VARCHAR(10))",
        10,
    )
    .await;
    let t = table_def(
        db,
        table_info(
            102,
            "t",
            &[Col::new("a", TYPE_LONG, 0), Col::new("b", TYPE_VARCHAR, 0)],
            &[],
            false,
        ),
    );
    let r = |a: Option<i64>, b: &str| vec![a.map_or(Datum::Null, Datum::Int), s(b)];
    write(
        &sink,
        vec![
            txn(
                &t,
                20,
                vec![
                    insert(r(Some(1), "x")),
                    insert(r(Some(1), "x")),
                    insert(r(Some(2), "y")),
                    insert(r(None, "n")),
                ],
                false,
            ),
            txn(&t, 21, vec![delete(r(Some(1), "x"))], false),
            txn(
                &t,
                22,
                vec![update(r(Some(2), "y"), r(Some(2), "z"))],
                false,
            ),
            // NULL matched with <=>.
            txn(&t, 23, vec![update(r(None, "n"), r(None, "m"))], false),
        ],
    )
    .await
    .unwrap();
    let rows = rows_as_text(&pool, &format!("SELECT a, b FROM `{db}`.t ORDER BY a, b")).await;
    assert_eq!(
        rows,
        vec![
            vec![None, Some("m".to_string())],
            text(&["1", "x"]),
            text(&["2", "z"]),
        ]
    );
    close_and_drop(&sink, &pool, db).await;
}

#[tokio::test]
async fn many_types_round_trip() {
    let db = "tidal_sink_types";
    let Some((url, pool)) = fresh_env("many_types_round_trip", db).await else {
        return;
    };
    let sink = open(&url, "", db).await;
    create_table(
        &sink,
        db,
        "t",
        103,
        "CREATE TABLE t (id BIGINT UNSIGNED PRIMARY KEY, s VARCHAR(64), d DECIMAL(10,3), \
         dt DATETIME(3), ts TIMESTAMP NULL, dte DATE, tm TIME, e ENUM('x','y','z'), \
         st SET('a','b','c'), j JSON, b BIT(10), f DOUBLE, fl FLOAT, u BIGINT UNSIGNED, \
         bin VARBINARY(8), yr YEAR)",
        10,
    )
    .await;
    let mut e = Col::new("e", TYPE_ENUM, 0);
    e.elems = &["x", "y", "z"];
    let mut st = Col::new("st", TYPE_SET, 0);
    st.elems = &["a", "b", "c"];
    let mut bin = Col::new("bin", TYPE_VARCHAR, FLAG_BINARY);
    bin.charset = "binary";
    bin.collate = "binary";
    let t = table_def(
        db,
        table_info(
            103,
            "t",
            &[
                Col::new("id", TYPE_LONGLONG, PK | FLAG_UNSIGNED),
                Col::new("s", TYPE_VARCHAR, 0),
                Col::new("d", TYPE_NEW_DECIMAL, 0),
                Col::new("dt", TYPE_DATETIME, 0),
                Col::new("ts", TYPE_TIMESTAMP, 0),
                Col::new("dte", TYPE_DATE, 0),
                Col::new("tm", TYPE_DURATION, 0),
                e,
                st,
                Col::new("j", TYPE_JSON, 0),
                Col::new("b", TYPE_BIT, FLAG_UNSIGNED),
                Col::new("f", TYPE_DOUBLE, 0),
                Col::new("fl", TYPE_FLOAT, 0),
                Col::new("u", TYPE_LONGLONG, FLAG_UNSIGNED),
                bin,
                Col::new("yr", TYPE_YEAR, FLAG_UNSIGNED),
            ],
            &[],
            true,
        ),
    );
    let json: tidal_model::json::Json = r#"{"k": [1, "x", null], "n": 2.5}"#.parse().unwrap();
    let json_text = json.to_string();
    let mut ts: tidal_model::time::Time = "2024-01-02 03:04:05".parse().unwrap();
    ts.kind = tidal_model::time::TimeKind::Timestamp;
    let row = vec![
        Datum::Uint(u64::MAX),
        s("héllo 'quoted' `tick`"),
        Datum::Decimal("-12.345".parse().unwrap()),
        Datum::Time("2024-02-29 23:59:58.123".parse().unwrap()),
        Datum::Time(ts),
        Datum::Time("1999-12-31".parse().unwrap()),
        Datum::Duration("-12:34:56".parse().unwrap()),
        Datum::Enum(2),
        Datum::Set(0b101),
        Datum::Json(json),
        Datum::Bit(0b10_0000_0101),
        Datum::Float64(-1.25e10),
        Datum::Float32(0.5),
        Datum::Uint(18_000_000_000_000_000_000),
        Datum::Bytes(vec![0xff, 0x00, 0x27]),
        Datum::Int(2024),
    ];
    let mut nulls = vec![Datum::Uint(1)];
    nulls.extend(std::iter::repeat_n(Datum::Null, row.len() - 1));
    write(
        &sink,
        vec![txn(&t, 20, vec![insert(row.clone()), insert(nulls)], false)],
    )
    .await
    .unwrap();
    let select = format!(
        "SELECT CAST(id AS CHAR), s, CAST(d AS CHAR), CAST(dt AS CHAR), CAST(ts AS CHAR), \
         CAST(dte AS CHAR), CAST(tm AS CHAR), e, CAST(st AS CHAR), CAST(j AS CHAR), \
         CAST(b + 0 AS CHAR), CAST(f AS CHAR), CAST(fl AS CHAR), CAST(u AS CHAR), HEX(bin), \
         CAST(yr AS CHAR) FROM `{db}`.t ORDER BY id"
    );
    let rows = rows_as_text(&pool, &select).await;
    let expected_first = text(&[
        "1", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "",
    ])
    .into_iter()
    .enumerate()
    .map(|(i, v)| if i == 0 { v } else { None })
    .collect::<Vec<_>>();
    assert_eq!(rows[0], expected_first, "the all-NULL row");
    assert_eq!(
        rows[1],
        text(&[
            "18446744073709551615",
            "héllo 'quoted' `tick`",
            "-12.345",
            "2024-02-29 23:59:58.123",
            "2024-01-02 03:04:05",
            "1999-12-31",
            "-12:34:56",
            "y",
            "a,c",
            &json_text,
            "517",
            "-12500000000",
            "0.5",
            "18000000000000000000",
            "FF0027",
            "2024",
        ])
    );
    // An update of every column, matched by the unsigned key.
    let mut new = row.clone();
    new[1] = s("bye");
    new[7] = Datum::Enum(3);
    new[8] = Datum::Set(0b010);
    write(&sink, vec![txn(&t, 21, vec![update(row, new)], false)])
        .await
        .unwrap();
    let rows = rows_as_text(
        &pool,
        &format!("SELECT s, e, CAST(st AS CHAR) FROM `{db}`.t WHERE id = 18446744073709551615"),
    )
    .await;
    assert_eq!(rows, vec![text(&["bye", "z", "b"])]);
    close_and_drop(&sink, &pool, db).await;
}

fn replay_sequence(t: &Arc<TableDef>, safe: bool) -> Vec<SinkTxn> {
    vec![
        txn(t, 20, (1..=4).map(|i| insert(kv(i, "a"))).collect(), safe),
        txn(
            t,
            21,
            vec![update(kv(1, "a"), kv(1, "b")), delete(kv(2, "a"))],
            safe,
        ),
        txn(
            t,
            22,
            vec![insert(kv(5, "c")), insert(kv(2, "again"))],
            safe,
        ),
        txn(t, 23, vec![update(kv(3, "a"), kv(30, "moved"))], safe),
    ]
}

#[tokio::test]
async fn replays_are_harmless() {
    let db = "tidal_sink_replay";
    let Some((url, pool)) = fresh_env("replays_are_harmless", db).await else {
        return;
    };
    let sink = open(&url, "", db).await;
    let t = create_kv_table(&sink, db, "t", 104, 10).await;
    let query = format!("SELECT id, v FROM `{db}`.t ORDER BY id");
    let state = || rows_as_text(&pool, &query);
    let expected = vec![
        text(&["1", "b"]),
        text(&["2", "again"]),
        text(&["4", "a"]),
        text(&["5", "c"]),
        text(&["30", "moved"]),
    ];
    write(&sink, replay_sequence(&t, false)).await.unwrap();
    assert_eq!(state().await, expected);
    // The same transactions again, flagged safe mode: no duplicate-key failure, same state.
    write(&sink, replay_sequence(&t, true)).await.unwrap();
    assert_eq!(state().await, expected);
    sink.close().await.unwrap();

    // Without safe mode the first insert hits "Duplicate entry"; the sink rebuilds that
    // downstream transaction in safe mode and succeeds.
    let sink = open(&url, "worker-count=1", db).await;
    write(&sink, replay_sequence(&t, false)).await.unwrap();
    assert_eq!(state().await, expected);
    sink.close().await.unwrap();

    // The sink-wide safe-mode parameter has the same effect.
    let sink = open(&url, "safe-mode=true&batch-dml-enable=false", db).await;
    write(&sink, replay_sequence(&t, false)).await.unwrap();
    assert_eq!(state().await, expected);
    close_and_drop(&sink, &pool, db).await;
}

/// A random workload over a small key space on a table with a PK and a unique key, plus the
/// state it must leave behind.
struct Workload {
    txns: Vec<Vec<tidal_model::RowChange>>,
    final_state: BTreeMap<i64, (i64, i64, String)>,
}

fn workload(seed: u64, count: usize) -> Workload {
    let mut rng = Rng(seed);
    let mut state: BTreeMap<i64, (i64, i64, String)> = BTreeMap::new();
    let row = |k: i64, r: &(i64, i64, String)| {
        vec![Datum::Int(k), Datum::Int(r.0), Datum::Int(r.1), s(&r.2)]
    };
    let mut txns = Vec::with_capacity(count);
    for n in 0..count {
        let ops = 1 + rng.below(3) as usize;
        let mut touched: Vec<i64> = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..ops {
            let k = rng.below(40) as i64;
            if touched.contains(&k) {
                continue;
            }
            let used: Vec<i64> = state.values().map(|r| r.0).collect();
            let free: Vec<i64> = (0..60).filter(|u| !used.contains(u)).collect();
            let w = format!("w{n}");
            match state.get(&k).cloned() {
                Some(old) => {
                    let pick = rng.below(4);
                    if pick == 0 {
                        rows.push(delete(row(k, &old)));
                        state.remove(&k);
                    } else {
                        let u = if pick == 1 && !free.is_empty() {
                            free[rng.below(free.len() as u64) as usize]
                        } else {
                            old.0
                        };
                        let new = (u, rng.below(1_000_000) as i64, w);
                        rows.push(update(row(k, &old), row(k, &new)));
                        state.insert(k, new);
                    }
                }
                None => {
                    if free.is_empty() {
                        continue;
                    }
                    let u = free[rng.below(free.len() as u64) as usize];
                    let new = (u, rng.below(1_000_000) as i64, w);
                    rows.push(insert(row(k, &new)));
                    state.insert(k, new);
                }
            }
            touched.push(k);
        }
        if !rows.is_empty() {
            txns.push(rows);
        }
    }
    Workload {
        txns,
        final_state: state,
    }
}

async fn apply_workload(url: &str, db: &str, table: &str, id: i64, workers: usize, w: &Workload) {
    let sink = open(url, &format!("worker-count={workers}&max-txn-row=64"), db).await;
    create_table(
        &sink,
        db,
        table,
        id,
        &format!(
            "CREATE TABLE {table} (k INT PRIMARY KEY, u INT NOT NULL, v BIGINT, w VARCHAR(20), \
             UNIQUE KEY uk (u))"
        ),
        10,
    )
    .await;
    let t = table_def(
        db,
        table_info(
            id,
            table,
            &[
                Col::new("k", TYPE_LONG, PK),
                Col::new("u", TYPE_LONG, FLAG_NOT_NULL | FLAG_UNIQUE_KEY),
                Col::new("v", TYPE_LONGLONG, 0),
                Col::new("w", TYPE_VARCHAR, 0),
            ],
            &[("uk", &["u"], false, true)],
            true,
        ),
    );
    let txns: Vec<SinkTxn> = w
        .txns
        .iter()
        .enumerate()
        .map(|(i, rows)| txn(&t, 100 + i as u64, rows.clone(), false))
        .collect();
    // All writes are issued before any is awaited, so the workers really run in parallel.
    let futures: Vec<_> = txns
        .chunks(40)
        .map(|c| sink.write(TxnBatch { txns: c.to_vec() }))
        .collect();
    for r in join_all(futures).await {
        r.expect("workload batch");
    }
    sink.close().await.unwrap();
}

#[tokio::test]
async fn parallel_writers_match_the_oracle() {
    let db = "tidal_sink_parallel";
    let Some((url, pool)) = fresh_env("parallel_writers_match_the_oracle", db).await else {
        return;
    };
    let w = workload(0x5EED_1234, 3000);
    assert!(w.txns.len() > 2500);
    let started = Instant::now();
    apply_workload(&url, db, "serial", 105, 1, &w).await;
    let serial_time = started.elapsed();
    let started = Instant::now();
    apply_workload(&url, db, "parallel", 106, 16, &w).await;
    let parallel_time = started.elapsed();
    eprintln!("1 worker: {serial_time:?}, 16 workers: {parallel_time:?}");
    let expected: Vec<Vec<Option<String>>> = w
        .final_state
        .iter()
        .map(|(k, (u, v, s))| {
            vec![
                Some(k.to_string()),
                Some(u.to_string()),
                Some(v.to_string()),
                Some(s.clone()),
            ]
        })
        .collect();
    assert!(!expected.is_empty());
    for table in ["serial", "parallel"] {
        let rows = rows_as_text(
            &pool,
            &format!("SELECT k, u, v, w FROM `{db}`.{table} ORDER BY k"),
        )
        .await;
        assert_eq!(rows, expected, "table {table} differs from the oracle");
    }
    drop_db(&pool, db).await;
}

#[tokio::test]
async fn same_key_updates_keep_their_order() {
    let db = "tidal_sink_order";
    let Some((url, pool)) = fresh_env("same_key_updates_keep_their_order", db).await else {
        return;
    };
    let sink = open(&url, "worker-count=16&max-txn-row=8", db).await;
    let t = create_kv_table(&sink, db, "c", 107, 10).await;
    // A trigger that rejects any update of the counter row that is not "previous + 1": a
    // reordering on that key would fail the write.
    let trigger = format!(
        "CREATE TRIGGER `{db}`.c_order BEFORE UPDATE ON `{db}`.c FOR EACH ROW \
         IF NEW.id = 0 AND CAST(NEW.v AS SIGNED) <> CAST(OLD.v AS SIGNED) + 1 THEN \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'counter updated out of order'; END IF"
    );
    let has_trigger = match sqlx::raw_sql(sqlx::AssertSqlSafe(trigger))
        .execute(&pool)
        .await
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("no trigger ({e}); checking the final value only");
            false
        }
    };
    let n = 1500i64;
    let mut txns = vec![txn(&t, 20, vec![insert(kv(0, "0"))], false)];
    for i in 1..=n {
        txns.push(txn(
            &t,
            20 + 2 * i as u64,
            vec![update(kv(0, &(i - 1).to_string()), kv(0, &i.to_string()))],
            false,
        ));
        // Unrelated transactions in between, free to run on other workers.
        txns.push(txn(
            &t,
            21 + 2 * i as u64,
            vec![insert(kv(1000 + i, "x"))],
            false,
        ));
    }
    let futures: Vec<_> = txns
        .chunks(50)
        .map(|c| sink.write(TxnBatch { txns: c.to_vec() }))
        .collect();
    for r in join_all(futures).await {
        r.expect("ordered batch");
    }
    let rows = rows_as_text(&pool, &format!("SELECT v FROM `{db}`.c WHERE id = 0")).await;
    assert_eq!(rows, vec![text(&[&n.to_string()])]);
    let count = rows_as_text(&pool, &format!("SELECT COUNT(*) FROM `{db}`.c")).await;
    assert_eq!(count, vec![text(&[&(n + 1).to_string()])]);
    if has_trigger {
        // The trigger works: an out-of-order update is rejected with its message.
        let err = write(
            &sink,
            vec![txn(
                &t,
                99_999,
                vec![update(kv(0, &n.to_string()), kv(0, "7"))],
                false,
            )],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, SinkError::Rejected { reason, .. } if reason.contains("out of order")),
            "{err}"
        );
    }
    close_and_drop(&sink, &pool, db).await;
}

#[tokio::test]
async fn ddl_runs_exactly_once() {
    let Some(url) = mysql_url("ddl_runs_exactly_once") else {
        return;
    };
    let db = "tidal_sink_ddl";
    let pool = check_pool(&url).await;
    drop_db(&pool, db).await;
    let sink = open(&url, "", db).await;
    let create_db = ddl_event(
        db,
        "",
        0,
        ActionType::CREATE_SCHEMA,
        &format!("CREATE DATABASE `{db}`"),
        5,
    );
    sink.execute_ddl(create_db.clone(), None).await.unwrap();
    let create = ddl_event(
        db,
        "t",
        108,
        ActionType::CREATE_TABLE,
        "CREATE TABLE t (id INT PRIMARY KEY)",
        10,
    );
    let add = ddl_event(
        db,
        "t",
        108,
        ActionType::ADD_COLUMN,
        "ALTER TABLE t ADD COLUMN c INT",
        20,
    );
    sink.execute_ddl(create.clone(), None).await.unwrap();
    sink.execute_ddl(add.clone(), None).await.unwrap();
    // A restart replays from an earlier checkpoint: every DDL again, in order.
    sink.close().await.unwrap();
    let sink = open(&url, "", db).await;
    sink.execute_ddl(create_db, None).await.unwrap();
    sink.execute_ddl(create, None).await.unwrap();
    sink.execute_ddl(add.clone(), None).await.unwrap();
    let cols = rows_as_text(
        &pool,
        &format!(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = '{db}' \
             AND table_name = 't' ORDER BY ordinal_position"
        ),
    )
    .await;
    assert_eq!(cols, vec![text(&["id"]), text(&["c"])]);
    let progress = rows_as_text(
        &pool,
        &format!(
            "SELECT ticdc_cluster_id, CAST(table_id AS CHAR), CAST(ddl_ts AS CHAR), \
             CAST(finished AS CHAR), db_name_in_ddl_job, table_name_in_ddl_job \
             FROM tidb_cdc.ddl_ts_v1 WHERE changefeed = '{db}' ORDER BY table_id"
        ),
    )
    .await;
    assert_eq!(
        progress,
        vec![
            text(&["default", "0", "5", "1", db, ""]),
            text(&["default", "108", "20", "1", db, "t"]),
        ]
    );
    // A crash between running a DDL and marking it finished leaves `finished = 0`: the replay
    // runs it again and takes "Duplicate column" as "already applied".
    exec(
        &pool,
        &format!(
            "UPDATE tidb_cdc.ddl_ts_v1 SET finished = 0 WHERE changefeed = '{db}' AND table_id = 108"
        ),
    )
    .await;
    sink.execute_ddl(add.clone(), None).await.unwrap();
    let finished = rows_as_text(
        &pool,
        &format!(
            "SELECT CAST(finished AS CHAR) FROM tidb_cdc.ddl_ts_v1 WHERE changefeed = '{db}' \
             AND table_id = 108"
        ),
    )
    .await;
    assert_eq!(finished, vec![text(&["1"])]);
    // A later DDL of the same table runs.
    let drop_col = ddl_event(
        db,
        "t",
        108,
        ActionType::DROP_COLUMN,
        "ALTER TABLE t DROP COLUMN c",
        30,
    );
    sink.execute_ddl(drop_col, None).await.unwrap();
    let cols = rows_as_text(
        &pool,
        &format!(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = '{db}' \
             AND table_name = 't'"
        ),
    )
    .await;
    assert_eq!(cols, vec![text(&["id"])]);
    close_and_drop(&sink, &pool, db).await;
}

#[tokio::test]
async fn rejected_ddl_reports_the_server_message() {
    let db = "tidal_sink_badddl";
    let Some((url, pool)) = fresh_env("rejected_ddl_reports_the_server_message", db).await else {
        return;
    };
    let sink = open(&url, "", db).await;
    let bad = ddl_event(
        db,
        "t",
        109,
        ActionType::CREATE_TABLE,
        "CREATE TABLE t (id INT PRIMARY KEY, id INT)",
        10,
    );
    let err = sink.execute_ddl(bad, None).await.unwrap_err();
    match &err {
        SinkError::Rejected { what, reason } => {
            assert!(what.contains("CREATE TABLE t"), "{what}");
            assert!(
                reason.contains("1060") && reason.contains("Duplicate column"),
                "{reason}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // A DDL on a database that does not exist downstream.
    let missing = ddl_event(
        "tidal_no_such_db",
        "t",
        110,
        ActionType::CREATE_TABLE,
        "CREATE TABLE t (id INT)",
        11,
    );
    let err = sink.execute_ddl(missing, None).await.unwrap_err();
    assert!(
        matches!(&err, SinkError::Rejected { reason, .. } if reason.contains("1049")),
        "{err}"
    );
    // DML is unaffected by a rejected DDL.
    let t = create_kv_table(&sink, db, "t", 109, 12).await;
    write(&sink, vec![txn(&t, 20, vec![insert(kv(1, "ok"))], false)])
        .await
        .unwrap();
    // A DML the downstream rejects (the table is gone) fails the sink with Rejected.
    exec(&pool, &format!("DROP TABLE `{db}`.t")).await;
    let err = write(&sink, vec![txn(&t, 21, vec![insert(kv(2, "x"))], false)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SinkError::Rejected { reason, .. } if reason.contains("1146")),
        "{err}"
    );
    // Later writes report the failure too: the caller must reopen and replay.
    let err = write(&sink, vec![txn(&t, 22, vec![insert(kv(3, "x"))], false)])
        .await
        .unwrap_err();
    assert!(matches!(&err, SinkError::Rejected { .. }), "{err}");
    close_and_drop(&sink, &pool, db).await;
}

fn assert_no_password(err: &SinkError, password: &str) {
    let text = format!("{err} {err:?}");
    assert!(!text.contains(password), "password leaked: {text}");
}

#[tokio::test]
async fn wrong_password_is_rejected_quickly() {
    let Some(url) = mysql_url("wrong_password_is_rejected_quickly") else {
        return;
    };
    let mut u = url::Url::parse(&sink_uri(&url, "")).unwrap();
    let password = "Wr0ng-Secret-Pa55";
    u.set_password(Some(password)).unwrap();
    let started = Instant::now();
    let err = match open_sink(u.as_str(), "pw").await {
        Ok(_) => panic!("opened with a wrong password"),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    match &err {
        SinkError::Rejected { what, reason } => {
            assert_eq!(what, "login");
            assert!(
                reason.contains("1045") && reason.contains("Access denied"),
                "{reason}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_no_password(&err, password);
}

#[tokio::test]
async fn unreachable_server_fails_with_connect() {
    // A port that was free a moment ago: nothing listens on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let password = "Unreachable-Secret-77";
    let uri = format!("mysql://root:{password}@127.0.0.1:{port}/?timeout=1s");
    let started = Instant::now();
    let err = match open_sink(&uri, "x").await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => e,
    };
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    match &err {
        SinkError::Connect { target, reason } => {
            assert_eq!(target, &format!("127.0.0.1:{port}"));
            assert!(reason.contains("3 attempts"), "{reason}");
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert_no_password(&err, password);
}

#[tokio::test]
async fn uri_path_is_ignored_and_changefeed_id_recorded() {
    let db = "tidal_sink_open";
    let Some((url, pool)) = fresh_env("uri_path_is_ignored_and_changefeed_id_recorded", db).await
    else {
        return;
    };
    // Like TiCDC, the path (a database name, even one that does not exist) is not used.
    let mut u = url::Url::parse(&sink_uri(&url, "worker-count=2")).unwrap();
    u.set_path("/tidal_no_such_database");
    let sink = open_sink(u.as_str(), db)
        .await
        .expect("open through open_sink");
    assert_eq!(sink.kind(), "mysql");
    sink.execute_ddl(
        ddl_event(
            db,
            "t",
            111,
            ActionType::CREATE_TABLE,
            "CREATE TABLE t (id INT PRIMARY KEY)",
            10,
        ),
        None,
    )
    .await
    .unwrap();
    let rows = rows_as_text(
        &pool,
        &format!("SELECT changefeed FROM tidb_cdc.ddl_ts_v1 WHERE changefeed = '{db}'"),
    )
    .await;
    assert_eq!(rows, vec![text(&[db])]);
    sink.update_checkpoint(Ts(42)).await.unwrap();
    close_and_drop(&*sink, &pool, db).await;
}

#[tokio::test]
async fn oversize_transaction_is_split() {
    let db = "tidal_sink_big";
    let Some((url, pool)) = fresh_env("oversize_transaction_is_split", db).await else {
        return;
    };
    let sink = open(&url, "max-txn-row=16&max-multi-update-row=5", db).await;
    let t = create_kv_table(&sink, db, "t", 112, 10).await;
    let rows: Vec<_> = (0..100).map(|i| insert(kv(i, "big"))).collect();
    let report = write(&sink, vec![txn(&t, 20, rows, false)]).await.unwrap();
    assert_eq!(report.rows, 100);
    let count = rows_as_text(&pool, &format!("SELECT COUNT(*), SUM(id) FROM `{db}`.t")).await;
    assert_eq!(count, vec![text(&["100", "4950"])]);
    close_and_drop(&sink, &pool, db).await;
}
