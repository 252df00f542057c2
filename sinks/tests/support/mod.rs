//! Shared helpers for the sink integration tests: the MariaDB URL rule, per-test databases,
//! table schemas built from TiDB-style JSON, and transaction builders.
#![allow(dead_code)]

use std::sync::Arc;

use sqlx::{AssertSqlSafe, MySqlPool, Row};
use tidal_model::ddl::ActionType;
use tidal_model::schema::TableInfo;
use tidal_model::{Datum, DdlEvent, Handle, RowChange, RowChangeKind, Ts};
use tidal_sinks::{Sink, SinkTxn, TableDef};

/// The MariaDB URL from `TIDAL_TEST_MYSQL`. Unset: panics under CI (`CI=true`), otherwise prints
/// a skip note and returns `None`.
pub fn mysql_url(test: &str) -> Option<String> {
    match std::env::var("TIDAL_TEST_MYSQL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("TIDAL_TEST_MYSQL is not set but CI=true: MariaDB is required for {test}");
            }
            eprintln!("skipping {test}: TIDAL_TEST_MYSQL is not set");
            None
        }
    }
}

/// The URL with its path removed and `params` appended, as a sink URI.
pub fn sink_uri(url: &str, params: &str) -> String {
    let mut u = url::Url::parse(url).expect("TIDAL_TEST_MYSQL is a URL");
    u.set_path("/");
    u.set_query(None);
    if params.is_empty() {
        u.to_string()
    } else {
        format!("{u}?{params}")
    }
}

/// A pool for checking the downstream (no default database).
pub async fn check_pool(url: &str) -> MySqlPool {
    let mut u = url::Url::parse(url).unwrap();
    u.set_path("/");
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(4)
        .connect(u.as_str())
        .await
        .expect("connect to MariaDB")
}

/// The MariaDB URL and a checking pool, with a fresh database `db` (see [`fresh_db`]); `None`
/// (the test is skipped) as [`mysql_url`] decides.
pub async fn fresh_env(test: &str, db: &str) -> Option<(String, MySqlPool)> {
    let url = mysql_url(test)?;
    let pool = check_pool(&url).await;
    fresh_db(&pool, db).await;
    Some((url, pool))
}

/// A fresh database named after the test (dropped first, with its progress rows, if a previous
/// run left it: those rows would make its DDLs look done).
pub async fn fresh_db(pool: &MySqlPool, name: &str) {
    drop_db(pool, name).await;
    exec(pool, &format!("CREATE DATABASE `{name}`")).await;
}

/// Drops the test's database and its progress rows.
pub async fn drop_db(pool: &MySqlPool, name: &str) {
    exec(pool, &format!("DROP DATABASE IF EXISTS `{name}`")).await;
    let _ = sqlx::query("DELETE FROM tidb_cdc.ddl_ts_v1 WHERE changefeed = ?")
        .bind(name)
        .execute(pool)
        .await;
}

/// The end of a test: closes `sink` (which must succeed) and drops the test's database.
pub async fn close_and_drop<S: Sink + ?Sized>(sink: &S, pool: &MySqlPool, db: &str) {
    sink.close().await.expect("close the sink");
    drop_db(pool, db).await;
}

/// Runs one statement, panicking with the SQL on failure.
pub async fn exec(pool: &MySqlPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Every row of a query, each column read as text (NULL as `None`), in query order.
pub async fn rows_as_text(pool: &MySqlPool, sql: &str) -> Vec<Vec<Option<String>>> {
    let rows = sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    // raw_sql uses the text protocol: every value arrives as text.
                    r.try_get_unchecked::<Option<String>, _>(i)
                        .or_else(|_| {
                            r.try_get_unchecked::<Option<Vec<u8>>, _>(i)
                                .map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned()))
                        })
                        .unwrap_or_else(|e| panic!("column {i} of {sql}: {e}"))
                })
                .collect()
        })
        .collect()
}

/// One column of a TiDB `TableInfo` JSON document.
pub struct Col {
    pub name: &'static str,
    pub tp: u8,
    pub flag: u32,
    pub flen: i64,
    pub decimal: i64,
    pub elems: &'static [&'static str],
    pub charset: &'static str,
    pub collate: &'static str,
}

impl Col {
    pub fn new(name: &'static str, tp: u8, flag: u32) -> Col {
        Col {
            name,
            tp,
            flag,
            flen: -1,
            decimal: -1,
            elems: &[],
            charset: "utf8mb4",
            collate: "utf8mb4_bin",
        }
    }
}

/// A `TableInfo` parsed from a JSON document built from `cols` and `indexes` (name, column
/// names, primary?, unique?).
pub fn table_info(
    id: i64,
    name: &str,
    cols: &[Col],
    indexes: &[(&str, &[&str], bool, bool)],
    pk_is_handle: bool,
) -> TableInfo {
    let cols_json: Vec<serde_json::Value> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({
                "id": i as i64 + 1,
                "name": {"O": c.name, "L": c.name.to_lowercase()},
                "offset": i,
                "state": 5,
                "type": {
                    "Tp": c.tp, "Flag": c.flag, "Flen": c.flen, "Decimal": c.decimal,
                    "Charset": c.charset, "Collate": c.collate,
                    "Elems": if c.elems.is_empty() { serde_json::Value::Null }
                             else { serde_json::json!(c.elems) },
                },
            })
        })
        .collect();
    let idx_json: Vec<serde_json::Value> = indexes
        .iter()
        .enumerate()
        .map(|(i, (iname, icols, primary, unique))| {
            let icols: Vec<serde_json::Value> = icols
                .iter()
                .map(|c| {
                    let offset = cols.iter().position(|x| x.name == *c).expect("index column");
                    serde_json::json!({"name": {"O": c, "L": c.to_lowercase()}, "offset": offset, "length": -1})
                })
                .collect();
            serde_json::json!({
                "id": i as i64 + 1,
                "idx_name": {"O": iname, "L": iname.to_lowercase()},
                "idx_cols": icols,
                "state": 5,
                "is_unique": *unique || *primary,
                "is_primary": *primary,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "id": id,
        "name": {"O": name, "L": name.to_lowercase()},
        "state": 5,
        "pk_is_handle": pk_is_handle,
        "is_common_handle": !pk_is_handle && indexes.iter().any(|i| i.2),
        "cols": cols_json,
        "index_info": idx_json,
    });
    TableInfo::from_json(doc.to_string().as_bytes()).expect("table info json")
}

/// A table definition for `db`.`name`.
pub fn table_def(db: &str, info: TableInfo) -> Arc<TableDef> {
    Arc::new(TableDef {
        schema_name: db.to_string(),
        table_name: info.name.O.clone(),
        info: Arc::new(info),
        version: 1,
    })
}

pub fn insert(new: Vec<Datum>) -> RowChange {
    change(RowChangeKind::Insert, None, Some(new))
}

pub fn update(old: Vec<Datum>, new: Vec<Datum>) -> RowChange {
    change(RowChangeKind::Update, Some(old), Some(new))
}

pub fn delete(old: Vec<Datum>) -> RowChange {
    change(RowChangeKind::Delete, Some(old), None)
}

fn change(kind: RowChangeKind, old: Option<Vec<Datum>>, new: Option<Vec<Datum>>) -> RowChange {
    RowChange {
        table_id: 0,
        start_ts: Ts(0),
        commit_ts: Ts(0),
        kind,
        handle: Handle::Int(0),
        old,
        new,
    }
}

/// One transaction of `rows` on `table` committed at `ts`.
pub fn txn(table: &Arc<TableDef>, ts: u64, rows: Vec<RowChange>, safe_mode: bool) -> SinkTxn {
    let rows = rows
        .into_iter()
        .map(|mut r| {
            r.table_id = table.info.id;
            r.start_ts = Ts(ts.saturating_sub(1));
            r.commit_ts = Ts(ts);
            r
        })
        .collect();
    SinkTxn {
        table: Arc::clone(table),
        start_ts: Ts(ts.saturating_sub(1)),
        commit_ts: Ts(ts),
        rows,
        safe_mode,
    }
}

/// A DDL event for tests.
pub fn ddl_event(
    db: &str,
    table: &str,
    table_id: i64,
    action: ActionType,
    query: &str,
    commit_ts: u64,
) -> DdlEvent {
    DdlEvent {
        commit_ts: Ts(commit_ts),
        start_ts: Ts(commit_ts.saturating_sub(1)),
        job_id: 1,
        action,
        query: query.to_string(),
        schema_version: 1,
        schema_id: 1,
        schema_name: db.to_string(),
        table_id,
        table_name: table.to_string(),
        table_info: None,
        db_info: None,
        multiple_table_infos: Vec::new(),
        old_table_id: None,
        old_schema_id: None,
        old_schema_name: None,
        old_table_name: None,
        old_physical_table_ids: Vec::new(),
    }
}

/// A small deterministic PRNG (xorshift64*), so workloads are reproducible from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
