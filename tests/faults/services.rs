//! Faults of the services around Tidal: its metadata store (a private etcd, killed and restarted
//! on the same data directory while the node runs) and its downstream (a private MariaDB,
//! killed with SIGKILL mid-load and restarted). The shared instances are never touched.

use std::time::{Duration, Instant};

use crate::harness::{Downstream1, Env, PrivateEtcd, PrivateMariaDb, have_program, recovery};
use crate::support;

/// How long the load runs before a fault.
const WARM_UP: Duration = Duration::from_secs(3);
/// The most a recovery may take before the test fails.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_restart() {
    let name = "etcd_restart";
    let Some(url) = support::external_service("TIDAL_TEST_MYSQL") else {
        return;
    };
    if !have_program("etcd") {
        return;
    }
    let mut etcd = PrivateEtcd::start().await;
    let mut env = Env::start(name, Downstream1 { url }, Some(etcd.endpoint())).await;
    let load = env.up.start_load();
    let sampler = env.sampler();
    tokio::time::sleep(WARM_UP).await;

    etcd.kill9();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    etcd.restart().await;
    eprintln!("{name}: etcd was down {:?}", down.elapsed());
    let end = env.up.now_ts();
    recovery(name, &env.api, &env.cf, end, RECOVERY_LIMIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = env.finish(load, sampler).await;
    assert!(out.load.txns >= 800, "{out:?}");
    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_restart_mid_batch() {
    let name = "mariadb_restart_mid_batch";
    for program in ["mariadb-install-db", "mariadbd", "mariadb", "mariadb-admin"] {
        if !have_program(program) {
            return;
        }
    }
    let mut db = PrivateMariaDb::start().await;
    let mut env = Env::start(name, Downstream1 { url: db.url() }, None).await;
    let load = env.up.start_load();
    let sampler = env.sampler();
    tokio::time::sleep(WARM_UP).await;

    // SIGKILL while the sink has transactions in flight (the load commits ~160 per second).
    db.kill9();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    db.restart().await;
    eprintln!(
        "{name}: MariaDB was down {:?} (restart included)",
        down.elapsed()
    );
    let end = env.up.now_ts();
    recovery(name, &env.api, &env.cf, end, RECOVERY_LIMIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = env.finish(load, sampler).await;
    assert!(out.load.txns >= 800, "{out:?}");
    drop(db);
}
