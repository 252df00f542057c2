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
