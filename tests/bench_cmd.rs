//! Smoke test of `tidal bench`'s library part: tiny workloads through the embedded cluster, a
//! real changefeed and real sinks. It checks that every figure of the report is present and
//! consistent with the workload (exact row and transaction counts); it never asserts speed.

use std::time::Duration;

use clap::Parser;
use tidal::bench::{BenchMode, BenchOptions, BenchReport, run_bench};

/// The command's own argument parsing and printing, compiled into this test.
#[allow(dead_code)]
#[path = "../src/commands/bench.rs"]
mod bench_cli;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: bench_cli::BenchArgs,
}

fn tiny(mode: BenchMode, sink: &str) -> BenchOptions {
    BenchOptions {
        rows: 2_000,
        tables: 2,
        row_width: 64,
        txn_size: 50,
        workers: 2,
        sink: sink.to_string(),
        mode,
        rate: None,
        min_ts_interval: Duration::from_millis(50),
        timeout: Duration::from_secs(120),
        baselines: true,
    }
}

fn check_common(r: &BenchReport) {
    assert_eq!(r.rows_written, 2_000);
    assert_eq!(r.txns_written, 40);
    assert_eq!(r.rows, 2_000, "every row reaches the sink exactly once");
    assert!(r.bytes > 0);
    assert!(r.elapsed_s > 0.0);
    assert!(r.rows_per_s > 0.0 && r.rows_per_s.is_finite());
    assert!(r.mib_per_s > 0.0);
    assert!(r.write_rows_per_s > 0.0);
    assert!(r.peak_rss_mib.is_some_and(|m| m > 1.0));
    let d = r.decode_floor.as_ref().expect("decode floor");
    assert_eq!(d.rows, 2_000);
    assert!(d.rows_per_s > 0.0);
    assert!(r.raw_bytes > 2_000 * 40, "about 64 bytes per row upstream");
    assert!(r.mysql_baseline.is_none());
    let table = r.to_table();
    for needle in [
        "throughput",
        "commit→checkpoint",
        "peak RSS",
        "decode floor",
    ] {
        assert!(table.contains(needle), "table lacks {needle}:\n{table}");
    }
    let json = serde_json::to_value(r).unwrap();
    for key in [
        "rows",
        "bytes",
        "elapsed_s",
        "rows_per_s",
        "mib_per_s",
        "rows_per_s_per_worker",
        "latency_p50_ms",
        "latency_p99_ms",
        "peak_rss_mib",
        "decode_floor",
    ] {
        assert!(json.get(key).is_some(), "json lacks {key}: {json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_blackhole_reports_every_figure() {
    let r = run_bench(tiny(BenchMode::CatchUp, "blackhole://"))
        .await
        .unwrap();
    check_common(&r);
    assert_eq!(r.mode, BenchMode::CatchUp);
    assert_eq!(r.workers, 2);
    assert!((r.rows_per_s_per_worker * 2.0 - r.rows_per_s).abs() < 1e-6);
    assert_eq!(r.latency_samples, 40);
    let (p50, p99) = (r.latency_p50_ms.unwrap(), r.latency_p99_ms.unwrap());
    assert!(p50 > 0.0 && p50 <= p99);
    assert!(r.latency_max_ms.unwrap() >= p99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_file_sink_measures_latency() {
    let dir = std::env::temp_dir().join(format!("tidal-bench-test-{}", std::process::id()));
    let sink = format!("file://{}?protocol=canal-json", dir.display());
    let mut o = tiny(BenchMode::Live, &sink);
    o.rate = Some(20_000);
    o.workers = 1;
    let r = run_bench(o).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    check_common(&r);
    assert_eq!(r.rate, Some(20_000));
    assert_eq!(r.latency_samples, 40);
    assert!(r.latency_p50_ms.unwrap() <= r.latency_p99_ms.unwrap());
    // At 20k rows/s, 2000 rows take at least ~0.1 s to write.
    assert!(
        r.write_elapsed_s >= 0.09,
        "rate not applied: {}",
        r.write_elapsed_s
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_only_counts_every_row() {
    let r = run_bench(tiny(BenchMode::SimOnly, "blackhole://"))
        .await
        .unwrap();
    assert_eq!(r.mode, BenchMode::SimOnly);
    assert_eq!(r.rows_written, 2_000);
    assert_eq!(r.rows, 2_000);
    assert!(r.bytes > 0 && r.rows_per_s > 0.0);
    assert!(r.latency_p50_ms.is_none());
    assert!(r.decode_floor.is_some());
}

#[tokio::test]
async fn bad_options_are_refused() {
    let mut o = tiny(BenchMode::CatchUp, "blackhole://");
    o.txn_size = 0;
    let e = run_bench(o).await.unwrap_err();
    assert!(e.to_string().contains("--txn-size"), "{e}");
    let mut o = tiny(BenchMode::CatchUp, "ftp://x");
    o.rows = 10;
    assert!(run_bench(o).await.is_err());
}

#[test]
fn flags_map_to_options() {
    let cli = Cli::try_parse_from([
        "bench",
        "--rows",
        "123",
        "--tables",
        "3",
        "--row-width",
        "256",
        "--txn-size",
        "7",
        "--workers",
        "2",
        "--sink",
        "blackhole://",
        "--mode",
        "live",
        "--rate",
        "900",
        "--json",
    ])
    .unwrap();
    let o = cli.args.options();
    assert_eq!(
        (o.rows, o.tables, o.row_width, o.txn_size, o.workers),
        (123, 3, 256, 7, 2)
    );
    assert_eq!(o.mode, BenchMode::Live);
    assert_eq!(o.rate, Some(900));
    assert!(cli.args.json);
    let sim = Cli::try_parse_from(["bench", "--sim-only"]).unwrap();
    assert_eq!(sim.args.options().mode, BenchMode::SimOnly);
    assert_eq!(sim.args.options().rows, 200_000);
    assert!(Cli::try_parse_from(["bench", "--mode", "sideways"]).is_err());
}
