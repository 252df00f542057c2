//! A slow sink: another connection holds `LOCK TABLES ... WRITE` on a bank table downstream for
//! a few seconds, so every transaction touching it waits. The checkpoint must stall below the
//! first blocked transaction, nothing may be lost, and it must catch up once the lock goes.

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, MySqlConnection};
use tidal_model::{Datum, Handle, Ts};
use tidal_sim::tidb::CommitInfo;

use crate::harness::{Downstream1, Env, recovery, within};
use crate::support;

/// Rewrites the note of bank account 0 in `accounts1` (balances untouched), retrying write
/// conflicts; returns the commit ts.
fn touch_account(env: &Env) -> u64 {
    let table = env
        .up
        .tidb
        .table(&env.up.bank.db, "accounts1")
        .expect("accounts1");
    for _ in 0..50 {
        let mut txn = env.up.tidb.begin();
        let h = Handle::Int(0);
        let mut row = txn.get(&table, &h).expect("read").expect("account 0");
        if let Some(note) = row.get_mut(2) {
            *note = Datum::Bytes(b"slow-sink".to_vec());
        }
        txn.update(&table, &h, row).expect("update");
        match txn.commit() {
            Ok(CommitInfo {
                commit_ts: Some(c), ..
            }) => return c,
            Ok(_) => panic!("rolled back"),
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("commit: {e}"),
        }
    }
    panic!("the update kept conflicting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_sink() {
    let name = "slow_sink";
    let Some(url) = support::external_service("TIDAL_TEST_MYSQL") else {
        return;
    };
    let mut env = Env::start(name, Downstream1 { url: url.clone() }, None).await;
    let load = env.up.start_load();
    let sampler = env.sampler();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut lock = within("connect", 20, MySqlConnection::connect(&url))
        .await
        .expect("lock connection");
    let sql = format!("LOCK TABLES `{}`.`accounts1` WRITE", env.up.bank.db);
    sqlx::raw_sql(AssertSqlSafe(sql.clone()))
        .execute(&mut lock)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let locked = Instant::now();
    // A transaction committed after the lock must wait for it downstream.
    let blocked_ts = touch_account(&env);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held = env.api.sample(&env.cf).await.expect("changefeed readable");
    // The diagnosis names the sink as what holds the checkpoint.
    let stuck = env.api.stuck_verdict(&env.cf).await;
    sqlx::raw_sql(AssertSqlSafe("UNLOCK TABLES".to_string()))
        .execute(&mut lock)
        .await
        .expect("unlock");
    let end = env.up.now_ts();
    eprintln!(
        "{name}: locked {:?}; checkpoint held at {:?}, blocked txn at {:?}",
        locked.elapsed(),
        Ts(held.0),
        Ts(blocked_ts)
    );
    let _ = lock.close().await;
    let rec = recovery(name, &env.api, &env.cf, end, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = env.finish(load, sampler).await;
    assert!(
        held.0 < blocked_ts,
        "the checkpoint {:?} passed a transaction {:?} that could not be written",
        Ts(held.0),
        Ts(blocked_ts)
    );
    assert!(out.checkpoint > blocked_ts && rec > Duration::ZERO);
    assert!(
        stuck.starts_with("the sink is behind: "),
        "diagnosis while the sink was locked: {stuck:?}"
    );
}
