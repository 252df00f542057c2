//! Shared helpers for the control-plane integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The etcd endpoint for tests (env `TIDAL_TEST_ETCD`, like `127.0.0.1:23790`).
///
/// Unset: under CI (`CI=true`) this panics, because a CI run that silently skips the etcd half
/// of the suite proves nothing; elsewhere it prints a skip note and returns `None`.
pub fn etcd_endpoint(test: &str) -> Option<String> {
    match std::env::var("TIDAL_TEST_ETCD") {
        Ok(ep) if !ep.trim().is_empty() => Some(ep.trim().to_string()),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "{test}: TIDAL_TEST_ETCD is not set but CI=true; start etcd \
                     (scripts/services.sh) and export its endpoint"
                );
            }
            eprintln!("skipping {test}: TIDAL_TEST_ETCD is not set (no etcd to test against)");
            None
        }
    }
}

/// A cluster id no other test (or test run) uses, so tests can share one etcd in parallel.
pub fn unique_cluster(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t-{tag}-{}-{nanos}-{n}", std::process::id())
}

/// `test.<name>`: `id BIGINT NOT NULL` int handle and `v VARCHAR(64)`.
pub fn table_spec(name: &str) -> tidal_sim::tidb::TableSpec {
    use tidal_sim::tidb::{ColumnSpec, PrimaryKey, TableSpec, types};
    TableSpec::new(
        name,
        vec![
            ColumnSpec::new("id", types::bigint()).not_null(),
            ColumnSpec::new("v", types::varchar(64)),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()))
}

/// Upserts `(id, v)` rows into `test.t1` in one transaction (retrying conflicts); returns the
/// commit ts.
pub fn upsert(tidb: &tidal_sim::tidb::Tidb, rows: &[(i64, &str)]) -> u64 {
    use tidal_model::Datum;
    use tidal_sim::tidb::CommitInfo;
    for _ in 0..20 {
        let t = tidb.table("test", "t1").expect("table");
        let mut txn = tidb.begin();
        for (id, v) in rows {
            txn.insert(
                &t,
                vec![Datum::Int(*id), Datum::Bytes(v.as_bytes().to_vec())],
            )
            .expect("insert");
        }
        match txn.commit() {
            Ok(CommitInfo {
                commit_ts: Some(c), ..
            }) => return c,
            Ok(_) => panic!("rolled back"),
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("commit failed: {e}"),
        }
    }
    panic!("commit kept failing");
}
