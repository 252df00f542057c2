//! `tidal bench --scale-tables`: the flags parse and validate with clear errors, and a small
//! scale run (a couple of hundred tables in one changefeed on the embedded cluster) produces a
//! report whose figures are consistent. It never asserts speed.

use std::time::Duration;

use clap::Parser;
use tidal::bench::scale::{ScaleOptions, ScaleReport, run_scale};

/// The command's own argument parsing, compiled into this test.
#[allow(dead_code)]
#[path = "../src/commands/bench.rs"]
mod bench_cli;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: bench_cli::BenchArgs,
}

fn parse(args: &[&str]) -> Result<bench_cli::BenchArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.args)
}

fn validation_error(args: &[&str]) -> String {
    let a = parse(args).expect("parses");
    let o = a.scale_options().expect("a scale run");
    o.validate().expect_err("invalid").to_string()
}

#[test]
fn scale_flags_map_to_options() {
    let a = parse(&[
        "--scale-tables",
        "100000",
        "--split-regions",
        "--workers",
        "2",
        "--scale-batch",
        "500",
        "--idle-secs",
        "3",
        "--scale-writes",
        "7",
        "--min-ts-interval-ms",
        "100",
        "--timeout-secs",
        "90",
    ])
    .unwrap();
    let o = a.scale_options().unwrap();
    assert_eq!(o.tables, 100_000);
    assert!(o.split_regions);
    assert_eq!(o.workers, 2);
    assert_eq!(o.batch, 500);
    assert_eq!(o.idle, Duration::from_secs(3));
    assert_eq!(o.writes, 7);
    assert_eq!(o.min_ts_interval, Duration::from_millis(100));
    assert_eq!(o.timeout, Duration::from_secs(90));
    assert!(o.validate().is_ok());

    let d = parse(&["--scale-tables", "10"])
        .unwrap()
        .scale_options()
        .unwrap();
    assert_eq!(
        (d.tables, d.batch, d.split_regions, d.workers, d.writes),
        (10, 1_000, false, 1, 50)
    );
    assert_eq!(d.idle, Duration::from_secs(10));

    // Without --scale-tables it is an ordinary bench run.
    assert!(parse(&["--rows", "10"]).unwrap().scale_options().is_none());
}

#[test]
fn bad_scale_values_give_clear_errors() {
    assert_eq!(
        validation_error(&["--scale-tables", "0"]),
        "invalid options: --scale-tables must be 1..=2000000, got 0"
    );
    assert_eq!(
        validation_error(&["--scale-tables", "3000000"]),
        "invalid options: --scale-tables must be 1..=2000000, got 3000000"
    );
    assert_eq!(
        validation_error(&["--scale-tables", "10", "--workers", "0"]),
        "invalid options: --workers must be 1..=256, got 0"
    );
    assert_eq!(
        validation_error(&["--scale-tables", "10", "--scale-batch", "0"]),
        "invalid options: --scale-batch must be 1..=100000, got 0"
    );
    assert_eq!(
        validation_error(&["--scale-tables", "10", "--idle-secs", "0"]),
        "invalid options: --idle-secs must be positive"
    );

    // Parse-level errors name the flag.
    let e = parse(&["--scale-tables", "many"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    assert!(e.to_string().contains("--scale-tables"), "{e}");
    let e = parse(&["--scale-tables=-5"]).unwrap_err();
    assert!(e.to_string().contains("--scale-tables"), "{e}");
    let e = parse(&["--split-regions"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    assert!(e.to_string().contains("--scale-tables"), "{e}");
    let e = parse(&["--scale-tables", "10", "--sim-only"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
}

fn small(tables: usize, split_regions: bool) -> ScaleOptions {
    ScaleOptions {
        tables,
        batch: 64,
        split_regions,
        workers: 2,
        idle: Duration::from_millis(600),
        writes: 4,
        min_ts_interval: Duration::from_millis(50),
        timeout: Duration::from_secs(60),
        progress: false,
    }
}

fn check(r: &ScaleReport, tables: usize) {
    assert_eq!(r.tables, tables);
    assert_eq!(r.spans, tables, "one span per table");
    assert_eq!(r.spans_initialized, tables, "every span initialized");
    assert!(r.start_ts > r.creation_ts, "{r:?}");
    assert!(
        r.ready_checkpoint_ts > r.creation_ts,
        "checkpoint passed creation: {r:?}"
    );
    assert!(r.ready_s > 0.0 && r.create_s > 0.0);
    let (before, after) = (r.rss_before_bytes.unwrap(), r.rss_after_bytes.unwrap());
    assert!(before > 1 << 20 && after > 1 << 20, "{r:?}");
    let per = r.rss_per_span_bytes.expect("RSS per span computed");
    let expected = (after as f64 - before as f64) / tables as f64;
    assert!((per - expected).abs() < 1e-6, "{per} vs {expected}");
    assert!(r.idle_lag_samples > 0);
    assert!(r.idle_lag_p50_ms.is_some() && r.idle_lag_p99_ms >= r.idle_lag_p50_ms);
    assert!(r.idle_cpu_per_s >= 0.0 && r.idle_cpu_per_s.is_finite());
    assert_eq!(r.writes, 4);
    assert_eq!(
        r.rows_flushed, 4,
        "each single-row write reached the sink once"
    );
    assert!(r.write_latency_p50_ms.is_some());
    assert!(r.write_latency_max_ms >= r.write_latency_p99_ms);
    // VmHWM is refreshed lazily by the kernel and may trail VmRSS slightly.
    assert!(r.peak_rss_bytes.is_some_and(|p| p > 1 << 20));
    let table = r.to_table();
    for needle in [
        "RSS per idle span",
        "spans initialized / hosted",
        "checkpoint lag idle",
        "CPU while idle",
        "commit→checkpoint",
    ] {
        assert!(table.contains(needle), "table lacks {needle}:\n{table}");
    }
    let json = serde_json::to_value(r).unwrap();
    for key in ["rss_per_span_bytes", "spans_initialized", "idle_lag_p99_ms"] {
        assert!(json.get(key).is_some(), "json lacks {key}: {json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_run_of_200_tables_reports_sane_figures() {
    let r = run_scale(small(200, false)).await.expect("scale run");
    check(&r, 200);
    assert!(!r.split_regions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_run_with_a_region_per_table() {
    let r = run_scale(small(120, true)).await.expect("scale run");
    check(&r, 120);
    assert!(r.split_regions);
    assert!(r.regions > 120, "a region per table: {}", r.regions);
}
