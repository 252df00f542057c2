//! The changefeed config file (`--config FILE.toml`) in TiCDC's format, turned into the API's
//! `replica_config`.
//!
//! TiCDC's file uses the kebab-case keys of the stored document (`memory-quota`,
//! `[synced-status]`, durations as Go strings such as `"10m"`), while the API speaks snake_case
//! with duration strings. Rather than keep a second copy of that mapping, the file is read into
//! the control plane's own [`ReplicaConfig`] (whose serde form *is* the kebab-case document) and
//! converted with its API helpers; the result is merged over the server's defaults and validated
//! with the same [`replica_config_from_api`] the server runs, so a bad file fails here, before
//! anything is sent, with the server's error.

use serde_json::Value;
use tidal_control::meta::ReplicaConfig;
use tidal_control::service::replica_config_from_api;
use tidal_model::duration::parse_go_duration;

use super::{CliError, codes};

/// Top-level keys of TiCDC's replica config file. Like `cdc cli` (which decodes the file
/// strictly), anything else is refused instead of being silently ignored.
const KNOWN_KEYS: &[&str] = &[
    "performance-mode",
    "memory-quota",
    "case-sensitive",
    "force-replicate",
    "check-gc-safe-point",
    "enable-sync-point",
    "enable-table-monitor",
    "ignore-ineligible-table",
    "bdr-mode",
    "sync-point-interval",
    "sync-point-retention",
    "filter",
    "mounter",
    "sink",
    "consistent",
    "scheduler",
    "integrity",
    "changefeed-error-stuck-duration",
    "synced-status",
    "enable-active-active",
    "active-active-progress-interval",
    "active-active-sync-stats-interval",
    "event-collector-batch-count",
    "event-collector-batch-bytes",
    "sql-mode",
];

/// Top-level keys holding a Go `time.Duration`: a string (`"10m"`) or integer nanoseconds.
const DURATION_KEYS: &[&str] = &[
    "sync-point-interval",
    "sync-point-retention",
    "changefeed-error-stuck-duration",
    "active-active-progress-interval",
    "active-active-sync-stats-interval",
];

fn invalid(path: &str, detail: impl std::fmt::Display) -> CliError {
    CliError::new(
        codes::INVALID_CONFIG,
        format!("invalid replica config, config file {path}: {detail}"),
    )
}

/// Parses the text of a TiCDC changefeed config file into a [`ReplicaConfig`] holding only
/// what the file sets (`path` is for messages).
pub(crate) fn parse_toml(path: &str, text: &str) -> Result<ReplicaConfig, CliError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| invalid(path, e))?;
    let mut unknown: Vec<&str> = table
        .keys()
        .map(String::as_str)
        .filter(|k| !KNOWN_KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(invalid(
            path,
            format!(
                "contained unknown configuration options: {}",
                unknown.join(", ")
            ),
        ));
    }
    let mut doc = serde_json::to_value(&table).map_err(|e| invalid(path, e))?;
    if let Value::Object(map) = &mut doc {
        for key in DURATION_KEYS {
            let Some(slot) = map.get_mut(*key) else {
                continue;
            };
            match slot {
                Value::String(s) => {
                    let ns = parse_go_duration(s.trim())
                        .ok_or_else(|| invalid(path, format!("{key}: invalid duration {s:?}")))?;
                    *slot = Value::from(ns);
                }
                Value::Number(n) if n.is_i64() => {}
                other => {
                    return Err(invalid(
                        path,
                        format!("{key}: expected a duration such as \"10m\", got {other}"),
                    ));
                }
            }
        }
    }
    serde_json::from_value(doc).map_err(|e| invalid(path, e))
}

/// The full API `replica_config` for a file's settings: the file merged over the defaults and
/// validated as the server does (`None`: the defaults).
pub(crate) fn api_replica_config(file: Option<&ReplicaConfig>) -> Result<Value, CliError> {
    let patch = file
        .map(ReplicaConfig::to_api_json)
        .transpose()
        .map_err(|e| {
            CliError::new(
                codes::INVALID_CONFIG,
                format!("invalid replica config, {e}"),
            )
        })?;
    let merged =
        replica_config_from_api(patch).map_err(|e| CliError::new(e.code.as_str(), e.message))?;
    merged.to_api_json().map_err(|e| {
        CliError::new(
            codes::INVALID_CONFIG,
            format!("invalid replica config, {e}"),
        )
    })
}

/// A config that sets nothing (every field unset), to be merged over the defaults.
pub(crate) fn unset() -> Result<ReplicaConfig, CliError> {
    serde_json::from_value(Value::Object(serde_json::Map::new())).map_err(|e| {
        CliError::new(
            codes::INVALID_CONFIG,
            format!("invalid replica config, {e}"),
        )
    })
}

/// Reads and converts `--config FILE`.
pub(crate) fn load_file(path: &str) -> Result<ReplicaConfig, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e))?;
    parse_toml(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = r#"
memory-quota = 536870912
case-sensitive = true
enable-sync-point = true
sync-point-interval = "5m"
changefeed-error-stuck-duration = "1h"

[filter]
rules = ['test.*', '!test.skip']
ignore-txn-start-ts = [42]

[mounter]
worker-num = 8

[sink]
protocol = "canal-json"
[[sink.dispatchers]]
matcher = ['test.*']
partition = "table"
target-schema = "s2"

[consistent]
level = "eventual"
flush-interval = 1000

[scheduler]
enable-table-across-nodes = true
region-threshold = 500

[synced-status]
synced-check-interval = 120
checkpoint-interval = 10
"#;

    #[test]
    fn toml_to_api_json() {
        let cfg = parse_toml("cf.toml", FILE).unwrap();
        assert_eq!(cfg.memory_quota, Some(536_870_912));
        assert_eq!(cfg.sync_point_interval, Some(300_000_000_000));
        let api = api_replica_config(Some(&cfg)).unwrap();
        assert_eq!(api["memory_quota"], json!(536_870_912));
        assert_eq!(api["case_sensitive"], json!(true));
        assert_eq!(api["enable_sync_point"], json!(true));
        assert_eq!(api["sync_point_interval"], json!("5m0s"));
        assert_eq!(api["changefeed_error_stuck_duration"], json!("1h0m0s"));
        // untouched defaults are filled in
        assert_eq!(api["sync_point_retention"], json!("24h0m0s"));
        assert_eq!(api["check_gc_safe_point"], json!(true));
        assert_eq!(api["filter"]["rules"], json!(["test.*", "!test.skip"]));
        assert_eq!(api["filter"]["ignore_txn_start_ts"], json!([42]));
        assert_eq!(api["mounter"]["worker_num"], json!(8));
        assert_eq!(api["sink"]["protocol"], json!("canal-json"));
        assert_eq!(api["sink"]["encoder_concurrency"], json!(32));
        assert_eq!(
            api["sink"]["dispatchers"],
            json!([{"matcher": ["test.*"], "partition": "table", "target-schema": "s2"}])
        );
        assert_eq!(api["consistent"]["level"], json!("eventual"));
        assert_eq!(api["consistent"]["flush_interval"], json!(1000));
        assert_eq!(api["consistent"]["max_log_size"], json!(64));
        assert_eq!(api["scheduler"]["enable_table_across_nodes"], json!(true));
        assert_eq!(api["scheduler"]["region_threshold"], json!(500));
        assert_eq!(api["synced_status"]["synced_check_interval"], json!(120));
        assert_eq!(api["synced_status"]["checkpoint_interval"], json!(10));
        assert!(api.get("memory-quota").is_none());
    }

    #[test]
    fn defaults_without_a_file() {
        let api = api_replica_config(None).unwrap();
        assert_eq!(api["memory_quota"], json!(1u64 << 30));
        assert_eq!(api["filter"]["rules"], json!(["*.*"]));
        assert_eq!(api["synced_status"]["synced_check_interval"], json!(300));
    }

    #[test]
    fn bad_files_are_refused() {
        let e = parse_toml("cf.toml", "memory-quota = \n").unwrap_err();
        assert_eq!(e.code, codes::INVALID_CONFIG);
        assert!(
            e.message
                .starts_with("invalid replica config, config file cf.toml: ")
        );

        let e = parse_toml("cf.toml", "bogus = 1\nalso-bogus = 2\n").unwrap_err();
        assert_eq!(
            e.message,
            "invalid replica config, config file cf.toml: contained unknown configuration \
             options: also-bogus, bogus"
        );

        let e = parse_toml("cf.toml", "sync-point-interval = \"5 minutes\"\n").unwrap_err();
        assert_eq!(
            e.message,
            "invalid replica config, config file cf.toml: sync-point-interval: invalid \
             duration \"5 minutes\""
        );

        let e = parse_toml("cf.toml", "memory-quota = \"lots\"\n").unwrap_err();
        assert_eq!(e.code, codes::INVALID_CONFIG);

        // validated like the server does
        let cfg = parse_toml("cf.toml", "[consistent]\nlevel = \"strong\"\n").unwrap();
        let e = api_replica_config(Some(&cfg)).unwrap_err();
        assert_eq!(e.code, "CDC:ErrInvalidReplicaConfig");
        assert!(e.message.contains("consistent.level"), "{e}");
    }

    #[test]
    fn integer_durations_are_nanoseconds() {
        let cfg = parse_toml("cf.toml", "sync-point-interval = 60000000000\n").unwrap();
        assert_eq!(cfg.sync_point_interval, Some(60_000_000_000));
        let api = api_replica_config(Some(&cfg)).unwrap();
        assert_eq!(api["sync_point_interval"], json!("1m0s"));
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = load_file("/nonexistent/dir/cf.toml").unwrap_err();
        assert_eq!(e.code, codes::INVALID_CONFIG);
        assert!(e.message.contains("/nonexistent/dir/cf.toml"), "{e}");
    }
}
