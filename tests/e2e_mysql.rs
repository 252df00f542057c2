//! The MySQL sink end to end: a simulated cluster runs sysbench, bank transfers and a DDL mix
//! concurrently; a two-worker changefeed replicates them into MariaDB (`TIDAL_TEST_MYSQL`).
//! Once the workloads stop and the checkpoint passes their last commit, every replicated table
//! downstream must equal the upstream snapshot at the checkpoint row by row (`tidal verify`),
//! the set of tables compared must be exactly the sim's tables at that ts, and the bank's total
//! must be intact on both sides. While the workloads run, the watermarks are sampled: they must
//! never regress, and the checkpoint never passes the resolved ts.
//!
//! The DDL the sim records names its database, so the downstream databases carry the upstream
//! names; every run uses fresh upstream names (a per-run tag) and drops them downstream at the
//! end, so runs sharing one MariaDB do not see each other's tables.

mod support;

use support::{run_tag, set_up, within};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, MySqlPool};
use tidal::verify::{Downstream, VerifyOptions, verify};
use tidal_dataflow::{ChangefeedHandle, ChangefeedSpec, RunConfig, Watermarks, start_changefeed};
use tidal_ingest::pd::{PdClient, PdConfig};
use tidal_ingest::schema::TableFilter;
use tidal_model::Ts;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::export::snapshot_tables;
use tidal_sim::workload::{
    Bank, BankConfig, DdlMix, DdlMixConfig, Sysbench, SysbenchConfig, WorkloadStats, spawn,
};

/// How long the workloads run.
const RUN_FOR: Duration = Duration::from_secs(12);
/// How long the changefeed may take to catch up once they stopped.
const CATCH_UP: Duration = Duration::from_secs(60);
/// The run must have committed at least this many transactions to count as "thousands".
const MIN_TXNS: u64 = 2000;

async fn exec(pool: &MySqlPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The databases of one run: sysbench, bank, and the DDL mix's two.
struct Dbs {
    sysbench: String,
    bank: String,
    ddl: String,
    ddl_2: String,
}

impl Dbs {
    fn new(tag: &str) -> Dbs {
        let ddl = format!("tidal_e2e_ddl_{tag}");
        Dbs {
            sysbench: format!("tidal_e2e_sb_{tag}"),
            bank: format!("tidal_e2e_bank_{tag}"),
            // DdlMix renames tables across into `<db>_2`.
            ddl_2: format!("{ddl}_2"),
            ddl,
        }
    }

    fn all(&self) -> [&str; 4] {
        [&self.sysbench, &self.bank, &self.ddl, &self.ddl_2]
    }

    fn filter_rules(&self) -> Vec<String> {
        self.all().iter().map(|db| format!("{db}.*")).collect()
    }
}

/// Samples the watermarks until told to stop; returns every sample and the problems seen.
async fn sample_watermarks(
    handle: Arc<ChangefeedHandle>,
    stop: Arc<AtomicBool>,
) -> (Vec<Watermarks>, Vec<String>) {
    let mut samples: Vec<Watermarks> = Vec::new();
    let mut problems = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let w = handle.watermarks();
        if w.checkpoint_ts > w.resolved_ts {
            problems.push(format!("checkpoint above resolved: {w:?}"));
        }
        if let Some(prev) = samples.last() {
            if w.checkpoint_ts < prev.checkpoint_ts {
                problems.push(format!("checkpoint regressed: {prev:?} -> {w:?}"));
            }
            if w.resolved_ts < prev.resolved_ts {
                problems.push(format!("resolved regressed: {prev:?} -> {w:?}"));
            }
        }
        if let Some(e) = handle.error() {
            problems.push(format!("changefeed error: {e}"));
            break;
        }
        samples.push(w);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (samples, problems)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_replicate_to_mariadb_equal_at_checkpoint() {
    let Some(url) = support::external_service("TIDAL_TEST_MYSQL") else {
        return;
    };
    let t0 = Instant::now();
    let cfg = SimConfig::with_min_ts_interval(Duration::from_millis(100));
    let cluster = within("sim start", 30, SimCluster::start(cfg))
        .await
        .expect("sim cluster starts");
    let tidb = cluster.tidb().expect("tidb layer");
    let pd = Arc::new(
        within(
            "PD connect",
            10,
            PdClient::connect(PdConfig::new(cluster.pd_endpoints())),
        )
        .await
        .expect("PD client"),
    );
    let tag = run_tag();
    let dbs = Dbs::new(&tag);

    // The changefeed starts before any of the workloads' databases exist: it has to follow
    // their creation through DDL.
    let start_ts = within("get ts", 10, pd.get_ts()).await.expect("start ts");

    let bank_cfg = BankConfig {
        seed: 7,
        db: dbs.bank.clone(),
        tables: 2,
        accounts_per_table: 50,
        initial_balance: 1000,
        max_transfer: 100,
    };
    let expected_total = Bank::new(bank_cfg.clone()).expected_total();
    assert_eq!(expected_total, 100_000);
    let mut sysbench = Sysbench::new(SysbenchConfig {
        seed: 11,
        db: dbs.sysbench.clone(),
        tables: 2,
        rows_per_table: 200,
        row_width: 120,
        batch: 4,
        ..SysbenchConfig::default()
    });
    let mut bank = Bank::new(bank_cfg.clone());
    let mut ddl = DdlMix::new(DdlMixConfig {
        seed: 13,
        db: dbs.ddl.clone(),
        initial_tables: 3,
        max_tables: 6,
        ddl_ratio: 0.25,
    });
    let sb_opts = set_up(&mut sysbench, &tidb, 250);
    let bank_opts = set_up(&mut bank, &tidb, 150);
    let ddl_opts = set_up(&mut ddl, &tidb, 30);

    let sink = within(
        "open sink",
        30,
        tidal_sinks::open::open_sink(&url, &format!("e2e-mysql-{tag}")),
    )
    .await
    .expect("open the MySQL sink");
    let mut spec = ChangefeedSpec::new(format!("e2e-mysql-{tag}"), Arc::clone(&pd), start_ts, sink);
    spec.filter = TableFilter::new(dbs.filter_rules().as_slice()).expect("filter parses");
    let handle = Arc::new(
        within(
            "changefeed start",
            30,
            start_changefeed(spec, RunConfig::process(2)),
        )
        .await
        .expect("changefeed starts"),
    );

    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_watermarks(
        Arc::clone(&handle),
        Arc::clone(&stop_sampling),
    ));

    let running = vec![
        spawn(Box::new(sysbench), tidb.clone(), sb_opts),
        spawn(Box::new(bank), tidb.clone(), bank_opts),
        spawn(Box::new(ddl), tidb.clone(), ddl_opts),
    ];
    tokio::time::sleep(RUN_FOR).await;
    for w in &running {
        w.stop();
    }
    let mut stats: Vec<(&'static str, WorkloadStats)> = Vec::new();
    for w in running {
        let name = w.name();
        let s = within("workload stop", 30, w.join())
            .await
            .unwrap_or_else(|e| panic!("workload {name} failed: {e}"));
        stats.push((name, s));
    }
    let total_txns: u64 = stats.iter().map(|(_, s)| s.txns).sum();
    let ddls: u64 = stats.iter().map(|(_, s)| s.ddls).sum();
    let last_commit = Ts(stats
        .iter()
        .map(|(_, s)| s.last_commit_ts)
        .max()
        .unwrap_or(0));
    eprintln!(
        "workloads after {:?}: {stats:?}; {total_txns} txns, {ddls} DDL, last commit {last_commit:?}",
        t0.elapsed()
    );

    // Catch up: the checkpoint must pass the last upstream commit.
    let caught_up = Instant::now();
    let waited = handle.wait_checkpoint(last_commit, CATCH_UP).await;
    let checkpoint = handle.checkpoint_ts();
    eprintln!(
        "checkpoint {checkpoint:?} after {:?} of catch-up ({:?})",
        caught_up.elapsed(),
        handle.watermarks()
    );
    stop_sampling.store(true, Ordering::Relaxed);
    let (samples, problems) = sampler.await.expect("sampler task");

    // Compare at the checkpoint, and read the downstream bank total, before asserting anything,
    // so that the downstream databases are dropped whatever the outcome.
    let report = if checkpoint >= last_commit {
        let mut opts = VerifyOptions::new(cluster.pd_endpoints(), Downstream::MySql(url.clone()));
        opts.ts = Some(checkpoint);
        opts.filter = dbs.filter_rules();
        Some(
            within("verify", 60, verify(opts))
                .await
                .expect("verify runs"),
        )
    } else {
        None
    };
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("connect to MariaDB");
    // (total balance, number of accounts) downstream.
    let mut downstream_bank: Result<(i64, i64), String> = Ok((0, 0));
    for table in Bank::new(bank_cfg.clone()).table_names() {
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(balance), 0) AS SIGNED), COUNT(*) FROM `{}`.`{table}`",
            dbs.bank
        );
        let read: Result<(i64, i64), _> = sqlx::query_as(AssertSqlSafe(sql.clone()))
            .fetch_one(&pool)
            .await;
        downstream_bank = match (downstream_bank, read) {
            (Ok((total, accounts)), Ok((sum, count))) => Ok((total + sum, accounts + count)),
            (Err(e), _) => Err(e),
            (_, Err(e)) => Err(format!("{sql}: {e}")),
        };
    }
    let upstream_total = Bank::new(bank_cfg.clone()).total_at(cluster.store(), checkpoint.0);
    let upstream_tables = snapshot_tables(cluster.store(), checkpoint.0, &[]);
    drop(handle);
    for db in dbs.all() {
        exec(&pool, &format!("DROP DATABASE IF EXISTS `{db}`")).await;
    }
    pool.close().await;
    cluster.shutdown().await;

    if let Err(e) = waited {
        panic!("the changefeed failed (checkpoint {checkpoint:?}): {e}");
    }
    // The run was big enough to mean something.
    assert!(
        total_txns >= MIN_TXNS,
        "only {total_txns} transactions committed: {stats:?}"
    );
    assert!(ddls > 0, "the DDL mix ran no DDL: {stats:?}");
    assert!(
        checkpoint >= last_commit,
        "checkpoint {checkpoint:?} did not reach the last commit {last_commit:?} in {CATCH_UP:?}"
    );

    // The watermarks moved, never backwards, checkpoint <= resolved.
    assert!(problems.is_empty(), "watermark problems: {problems:#?}");
    assert!(samples.len() > 10, "only {} samples", samples.len());
    let first = samples.first().expect("samples");
    let last = samples.last().expect("samples");
    assert!(
        last.checkpoint_ts > first.checkpoint_ts,
        "the checkpoint never moved during the run: {first:?} .. {last:?}"
    );

    // Every table downstream equals the upstream at the checkpoint, row by row.
    let report = report.expect("verified");
    let upstream_tables = upstream_tables.expect("sim snapshot at the checkpoint");
    assert!(
        report.equal,
        "downstream differs at the checkpoint:\n{report}"
    );
    assert_eq!(report.ts, checkpoint);
    // ... and the comparison covered exactly the sim's tables at that ts, with their row counts.
    let ours: Vec<&str> = dbs.all().to_vec();
    let mut expected: Vec<(String, String, u64)> = upstream_tables
        .iter()
        .filter(|t| ours.contains(&t.db.as_str()))
        .map(|t| (t.db.clone(), t.table.clone(), t.rows.len() as u64))
        .collect();
    expected.sort();
    let mut compared: Vec<(String, String, u64)> = report
        .tables
        .iter()
        .map(|t| (t.db.clone(), t.table.clone(), t.upstream_rows))
        .collect();
    compared.sort();
    assert_eq!(
        compared, expected,
        "verify compared other tables than the sim holds"
    );
    for t in &report.tables {
        assert_eq!(
            t.downstream_rows, t.upstream_rows,
            "{}.{}: {t:?}",
            t.db, t.table
        );
    }
    // Sysbench (2), bank (2) and the DDL mix's tables all took part.
    assert!(
        expected.len() >= 2 + 2 + 2,
        "too few tables compared: {expected:?}"
    );
    let rows: u64 = expected.iter().map(|(_, _, n)| n).sum();
    assert!(rows >= 400 + 100, "too few rows compared: {rows}");

    // The bank's invariant holds on both sides.
    let upstream_total = upstream_total.expect("upstream bank total");
    assert_eq!(upstream_total, expected_total, "upstream bank total");
    let (downstream_total, downstream_accounts) =
        downstream_bank.unwrap_or_else(|e| panic!("reading the bank downstream: {e}"));
    assert_eq!(downstream_accounts, 100, "downstream accounts");
    assert_eq!(downstream_total, expected_total, "downstream bank total");
    eprintln!("whole test took {:?}", t0.elapsed());
}
