//! Faults of the upstream cluster: region splits, merges and leader moves; CDC stream resets;
//! a region whose resolved ts stalls; PD unavailable. Tidal runs in process with the embedded
//! metadata store and writes into the shared MariaDB.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::AssertSqlSafe;
use tidal_model::codec::bytes::encode_key;
use tidal_model::tablecodec::record_prefix;
use tidal_model::{Datum, Ts};
use tidal_sim::tidb::CommitInfo;

use crate::harness::{Downstream1, Env, recovery, within};
use crate::support;

/// How long the load runs before a fault.
const WARM_UP: Duration = Duration::from_secs(2);
/// How long the load runs after the fault ended (and recovery was measured).
const COOL_DOWN: Duration = Duration::from_secs(1);
/// The most a recovery may take before the test fails.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

async fn env(name: &'static str) -> Option<Env> {
    let url = support::external_service("TIDAL_TEST_MYSQL")?;
    Some(Env::start(name, Downstream1 { url }, None).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_merge_leader_storm_under_load() {
    let name = "split_merge_leader_storm_under_load";
    let Some(mut env) = env(name).await else {
        return;
    };
    let load = env.up.start_load();
    let sampler = env.sampler();
    tokio::time::sleep(WARM_UP).await;

    // 8 s of random splits, merges and leader transfers, one every 40 ms.
    let faults = env.up.cluster.faults();
    let mut rng = StdRng::seed_from_u64(42);
    let (mut splits, mut merges, mut transfers, mut refused) = (0u32, 0u32, 0u32, 0u32);
    let storm = Instant::now();
    while storm.elapsed() < Duration::from_secs(8) {
        let pick = rng.random_range(0..10);
        let ok = match pick {
            0..=3 => faults.split_random(&mut rng).map(|_| splits += 1).is_ok(),
            4..=6 => faults.merge_random(&mut rng).map(|_| merges += 1).is_ok(),
            _ => faults
                .transfer_random(&mut rng)
                .map(|_| transfers += 1)
                .is_ok(),
        };
        if !ok {
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let regions = env.up.cluster.regions().len();
    eprintln!(
        "{name}: {splits} splits, {merges} merges, {transfers} leader transfers, \
         {refused} refused; {regions} regions now"
    );
    let end = env.up.now_ts();
    recovery(name, &env.api, &env.cf, end, RECOVERY_LIMIT).await;
    tokio::time::sleep(COOL_DOWN).await;
    let out = env.finish(load, sampler).await;
    assert!(
        splits >= 20 && merges >= 10 && transfers >= 20,
        "the storm was too weak: {splits} splits, {merges} merges, {transfers} transfers"
    );
    assert!(out.load.txns >= 1000, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tikv_stream_resets() {
    let name = "tikv_stream_resets";
    let Some(mut env) = env(name).await else {
        return;
    };
    let load = env.up.start_load();
    let sampler = env.sampler();
    tokio::time::sleep(WARM_UP).await;

    // Every store's CDC streams are dropped, one store every 250 ms, for 6 s.
    let faults = env.up.cluster.faults();
    let stores = env.up.cluster.store_addrs().len() as u64;
    let mut resets = 0u64;
    let storm = Instant::now();
    while storm.elapsed() < Duration::from_secs(6) {
        faults.reset_store_streams(resets % stores + 1);
        resets += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("{name}: {resets} stream resets over {stores} stores");
    let end = env.up.now_ts();
    recovery(name, &env.api, &env.cf, end, RECOVERY_LIMIT).await;
    tokio::time::sleep(COOL_DOWN).await;
    let out = env.finish(load, sampler).await;
    assert!(out.load.txns >= 1000, "{out:?}");
}

/// Inserts one sysbench row with a marker id (retrying write conflicts); returns its commit ts.
fn insert_marker(env: &Env, id: i64) -> u64 {
    let table = env
        .up
        .tidb
        .table(&env.up.sysbench.db, "sbtest1")
        .expect("sbtest1");
    for _ in 0..50 {
        let mut txn = env.up.tidb.begin();
        txn.insert(
            &table,
            vec![
                Datum::Int(id),
                Datum::Int(1),
                Datum::Bytes(b"marker".to_vec()),
                Datum::Bytes(b"marker".to_vec()),
            ],
        )
        .expect("insert marker");
        match txn.commit() {
            Ok(CommitInfo {
                commit_ts: Some(c), ..
            }) => return c,
            Ok(_) => panic!("marker rolled back"),
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("marker commit: {e}"),
        }
    }
    panic!("the marker insert kept conflicting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_region_holds_only_its_span() {
    let name = "stalled_region_holds_only_its_span";
    let Some(mut env) = env(name).await else {
        return;
    };
    // accounts1 gets a region of its own.
    let table_id = env.up.bank_table_id("accounts1");
    let start = record_prefix(table_id);
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last += 1; // t{id}_r -> t{id}_s
    }
    let faults = env.up.cluster.faults();
    faults
        .split_region(&encode_key(&start))
        .expect("split at the table's start");
    faults
        .split_region(&encode_key(&end))
        .expect("split at the table's end");
    let region = env.up.cluster.regions().locate(&encode_key(&start));
    assert_eq!(region.start, encode_key(&start), "{region:?}");
    assert_eq!(region.end, encode_key(&end), "{region:?}");

    let load = env.up.start_load();
    let sampler = env.sampler();
    tokio::time::sleep(WARM_UP).await;

    faults.stall_region(region.id, true);
    let stalled_at = env.up.now_ts();
    let stall = Instant::now();
    // Another span keeps flowing: a row written now reaches MariaDB while the stall holds.
    let marker_id = 9_000_000;
    let marker_ts = insert_marker(&env, marker_id);
    let pool = env.down.pool().await;
    let sql = format!(
        "SELECT COUNT(*) FROM `{}`.`sbtest1` WHERE id = {marker_id}",
        env.up.sysbench.db
    );
    let mut marker_seen = None;
    while stall.elapsed() < Duration::from_secs(6) {
        if marker_seen.is_none() {
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql.clone()))
                .fetch_one(&pool)
                .await
                .expect("count marker");
            if n == 1 {
                marker_seen = Some(stall.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
    let held = within("read checkpoint", 10, env.api.sample(&env.cf))
        .await
        .expect("changefeed readable");
    // The diagnosis names the stalled table and region, not the sink.
    let stuck = within("diagnosis", 10, env.api.stuck_verdict(&env.cf)).await;
    faults.stall_region(region.id, false);
    let end_ts = env.up.now_ts();
    eprintln!(
        "{name}: stalled {:?}; checkpoint held at {:?} (stall at {:?}); marker seen after {marker_seen:?}",
        stall.elapsed(),
        Ts(held.0),
        Ts(stalled_at)
    );
    let rec = recovery(name, &env.api, &env.cf, end_ts, RECOVERY_LIMIT).await;
    tokio::time::sleep(COOL_DOWN).await;
    let out = env.finish(load, sampler).await;

    assert!(
        held.0 < stalled_at,
        "the checkpoint {:?} passed the stalled region's resolved ts {:?}",
        Ts(held.0),
        Ts(stalled_at)
    );
    assert!(
        marker_seen.is_some(),
        "a row of another span (commit {:?}) did not reach the sink during a 6 s stall",
        Ts(marker_ts)
    );
    assert!(out.checkpoint >= marker_ts && rec < RECOVERY_LIMIT);
    let expected = format!("the resolved ts is held by table {table_id} ");
    assert!(
        stuck.starts_with(&expected) && stuck.contains(&format!("slowest region {}", region.id)),
        "diagnosis during the stall: {stuck:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pd_unavailable_for_10s() {
    let name = "pd_unavailable_for_10s";
    let Some(mut env) = env(name).await else {
        return;
    };
    let load = env.up.start_load();
    let sampler = env.sampler();
    tokio::time::sleep(WARM_UP).await;

    let outage = Duration::from_secs(10);
    env.up.cluster.faults().pd_unavailable_for(outage);
    let began = Instant::now();
    // Regions move during the outage: the client must relearn them from PD afterwards.
    let faults = env.up.cluster.faults();
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..5 {
        let _ = faults.split_random(&mut rng);
        let _ = faults.transfer_random(&mut rng);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(outage.saturating_sub(began.elapsed())).await;
    let end = env.up.now_ts();
    recovery(name, &env.api, &env.cf, end, RECOVERY_LIMIT).await;
    tokio::time::sleep(COOL_DOWN).await;
    let out = env.finish(load, sampler).await;
    assert!(out.load.txns >= 1000, "{out:?}");
}
