//! Shared helpers for the integration tests.
#![allow(dead_code)]

/// The address of an external service the tests need (etcd, MariaDB), from the environment
/// variable `var` that `scripts/services.sh start` prints.
///
/// In CI (`CI=true`) a missing service is a failure, never a silent skip: the tests that need it
/// would otherwise pass without having run. Outside CI the test is skipped with a note on how to
/// start the services.
pub fn external_service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{var} is not set: CI must start the services (scripts/services.sh start)")
        }
        _ => {
            eprintln!(
                "skipping: {var} is not set (run scripts/test.sh, or scripts/services.sh start)"
            );
            None
        }
    }
}

/// Runs `fut`, failing the test if it takes longer than `secs`.
pub async fn within<T>(what: &str, secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {secs} s"))
}

/// A tag unique to this run (process id and clock), for database, changefeed and cluster names,
/// so runs sharing one MariaDB or etcd never see each other's objects.
pub fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos & 0xff_ffff_ffff)
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Creates a workload's tables and initial data now (so they exist before a changefeed
/// starts), and returns the options that run it afterwards — rate-limited, until stopped —
/// without setting up again.
pub fn set_up(
    w: &mut dyn tidal_sim::workload::Workload,
    tidb: &tidal_sim::tidb::Tidb,
    rate: u64,
) -> tidal_sim::workload::RunOptions {
    use tidal_sim::workload::{RunOptions, run};
    run(w, tidb, &RunOptions::steps(0)).unwrap_or_else(|e| panic!("setting up {}: {e}", w.name()));
    let mut opts = RunOptions::forever().rate(Some(rate));
    opts.skip_setup = true;
    opts
}
