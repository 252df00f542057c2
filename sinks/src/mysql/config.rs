//! [`MySqlConfig`]: what a `mysql://` / `tidb://` sink URI says, with TiCDC's parameter names
//! and defaults so that a TiCDC sink URI works unchanged (within the parameters implemented).
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `worker-count` | 16 | parallel DML writers, 1..=1024 |
//! | `max-txn-row` | 256 | rows per downstream transaction, 1..=2048 |
//! | `max-multi-update-row` | 40 | rows per multi-row statement, 1..=2048 |
//! | `safe-mode` | false | always write idempotently (REPLACE, UPDATE as DELETE + REPLACE) |
//! | `batch-dml-enable` | true | multi-row INSERT/DELETE statements for keyed tables |
//! | `read-timeout` | 2m | bound on a query that reads (Go duration syntax) |
//! | `write-timeout` | 2m | bound on one downstream transaction |
//! | `timeout` | 5s | bound on one connection attempt |
//! | `time-zone` | UTC | only `UTC` / `+00:00` accepted: TIMESTAMP values are UTC |
//!
//! The URI path (a database name) is ignored, as in TiCDC: rows go to the upstream's database
//! and table names. TLS (`mysql+ssl`) is not supported yet.

use std::fmt;
use std::time::Duration;

use url::Url;

use crate::sink::SinkError;
use crate::uri::{invalid, param_bool, param_duration, param_usize, query_params};

/// Default `worker-count`.
pub const DEFAULT_WORKER_COUNT: usize = 16;
/// Largest `worker-count`.
pub const MAX_WORKER_COUNT: usize = 1024;
/// Default `max-txn-row`.
pub const DEFAULT_MAX_TXN_ROW: usize = 256;
/// Largest `max-txn-row`.
pub const MAX_MAX_TXN_ROW: usize = 2048;
/// Default `max-multi-update-row`.
pub const DEFAULT_MAX_MULTI_ROW: usize = 40;

const MYSQL_PARAMS: &[&str] = &[
    "worker-count",
    "max-txn-row",
    "max-multi-update-row",
    "safe-mode",
    "batch-dml-enable",
    "read-timeout",
    "write-timeout",
    "timeout",
    "time-zone",
];

/// Configuration of a MySQL/TiDB sink.
///
/// `Debug` masks the password.
#[derive(Clone, PartialEq, Eq)]
pub struct MySqlConfig {
    /// Downstream host.
    pub host: String,
    /// Downstream port (default 3306).
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password (never printed).
    pub password: String,
    /// True for `tidb://` (the downstream is TiDB).
    pub is_tidb: bool,
    /// Parallel DML writers (`worker-count`).
    pub worker_count: usize,
    /// Most rows per downstream transaction (`max-txn-row`).
    pub max_txn_row: usize,
    /// Most rows per multi-row statement (`max-multi-update-row`).
    pub max_multi_row: usize,
    /// Write everything idempotently (`safe-mode`).
    pub safe_mode: bool,
    /// Use multi-row statements for keyed tables (`batch-dml-enable`).
    pub batch_dml: bool,
    /// Bound on a reading query (`read-timeout`).
    pub read_timeout: Duration,
    /// Bound on one downstream transaction (`write-timeout`).
    pub write_timeout: Duration,
    /// Bound on one connection attempt (`timeout`).
    pub dial_timeout: Duration,
    /// Connection attempts when opening the sink before giving up with
    /// [`SinkError::Connect`] (not a URI parameter; default 3).
    pub connect_attempts: u32,
    /// Attempts for a downstream transaction that fails with a retryable error before
    /// [`SinkError::RetriesExhausted`] (not a URI parameter; default 8).
    pub retry_attempts: u32,
    /// First retry backoff (doubles up to [`MySqlConfig::retry_backoff_max`]; default 100 ms).
    pub retry_backoff: Duration,
    /// Largest retry backoff (default 5 s).
    pub retry_backoff_max: Duration,
    /// Changefeed id recorded in `tidb_cdc.ddl_ts_v1` (set by the caller; default `default`).
    pub changefeed_id: String,
    /// Cluster id recorded in `tidb_cdc.ddl_ts_v1` (set by the caller; default `default`).
    pub cluster_id: String,
}

impl fmt::Debug for MySqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"xxxxx")
            .field("is_tidb", &self.is_tidb)
            .field("worker_count", &self.worker_count)
            .field("max_txn_row", &self.max_txn_row)
            .field("max_multi_row", &self.max_multi_row)
            .field("safe_mode", &self.safe_mode)
            .field("batch_dml", &self.batch_dml)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("dial_timeout", &self.dial_timeout)
            .field("connect_attempts", &self.connect_attempts)
            .field("retry_attempts", &self.retry_attempts)
            .field("changefeed_id", &self.changefeed_id)
            .field("cluster_id", &self.cluster_id)
            .finish()
    }
}

impl MySqlConfig {
    /// A configuration with every default, for `user:password@host:port`.
    pub fn new(host: &str, port: u16, user: &str, password: &str) -> MySqlConfig {
        MySqlConfig {
            host: host.to_string(),
            port,
            user: user.to_string(),
            password: password.to_string(),
            is_tidb: false,
            worker_count: DEFAULT_WORKER_COUNT,
            max_txn_row: DEFAULT_MAX_TXN_ROW,
            max_multi_row: DEFAULT_MAX_MULTI_ROW,
            safe_mode: false,
            batch_dml: true,
            read_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(120),
            dial_timeout: Duration::from_secs(5),
            connect_attempts: 3,
            retry_attempts: 8,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(5),
            changefeed_id: "default".to_string(),
            cluster_id: "default".to_string(),
        }
    }

    /// `host:port`, for errors and logs (never holds credentials).
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Reads a `mysql://` or `tidb://` URI (`uri` is the original text, used masked in errors).
    pub fn from_url(uri: &str, url: &Url) -> Result<MySqlConfig, SinkError> {
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']'),
            _ => {
                return Err(invalid(
                    uri,
                    "missing host (mysql://user:password@host:port/)",
                ));
            }
        };
        let user = percent_decode(url.username())
            .ok_or_else(|| invalid(uri, "user name is not valid percent-encoded UTF-8"))?;
        let password = percent_decode(url.password().unwrap_or(""))
            .ok_or_else(|| invalid(uri, "password is not valid percent-encoded UTF-8"))?;
        let mut cfg = MySqlConfig::new(host, url.port().unwrap_or(3306), &user, &password);
        cfg.is_tidb = url.scheme().eq_ignore_ascii_case("tidb");
        for (k, v) in query_params(uri, url, MYSQL_PARAMS)? {
            match k.as_str() {
                "worker-count" => {
                    cfg.worker_count = param_usize(uri, &k, &v, 1, MAX_WORKER_COUNT)?;
                }
                "max-txn-row" => cfg.max_txn_row = param_usize(uri, &k, &v, 1, MAX_MAX_TXN_ROW)?,
                "max-multi-update-row" => {
                    cfg.max_multi_row = param_usize(uri, &k, &v, 1, MAX_MAX_TXN_ROW)?;
                }
                "safe-mode" => cfg.safe_mode = param_bool(uri, &k, &v)?,
                "batch-dml-enable" => cfg.batch_dml = param_bool(uri, &k, &v)?,
                "read-timeout" => cfg.read_timeout = positive(uri, &k, &v)?,
                "write-timeout" => cfg.write_timeout = positive(uri, &k, &v)?,
                "timeout" => cfg.dial_timeout = positive(uri, &k, &v)?,
                "time-zone" => match v.trim() {
                    "" | "UTC" | "utc" | "+00:00" | "Etc/UTC" => {}
                    other => {
                        return Err(invalid(
                            uri,
                            format!(
                                "parameter time-zone={other:?} is not supported: Tidal writes \
                                 TIMESTAMP values in UTC (use UTC or +00:00)"
                            ),
                        ));
                    }
                },
                _ => {}
            }
        }
        Ok(cfg)
    }
}

fn positive(uri: &str, name: &str, value: &str) -> Result<Duration, SinkError> {
    let d = param_duration(uri, name, value)?;
    if d.is_zero() {
        return Err(invalid(
            uri,
            format!("parameter {name}={value:?} must be positive"),
        ));
    }
    Ok(d)
}

/// Decodes `%XX` escapes; `None` for a bad escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(uri: &str) -> Result<MySqlConfig, SinkError> {
        let url = Url::parse(uri).unwrap();
        MySqlConfig::from_url(uri, &url)
    }

    #[test]
    fn defaults_and_credentials() {
        let cfg = parse("mysql://root:p%40ss@db.example:4000/ignored").unwrap();
        assert_eq!(cfg.host, "db.example");
        assert_eq!(cfg.port, 4000);
        assert_eq!(cfg.user, "root");
        assert_eq!(cfg.password, "p@ss");
        assert_eq!(cfg.worker_count, 16);
        assert_eq!(cfg.max_txn_row, 256);
        assert!(!cfg.safe_mode);
        assert!(cfg.batch_dml);
        assert!(!cfg.is_tidb);
        assert_eq!(cfg.target(), "db.example:4000");
        assert!(!format!("{cfg:?}").contains("p@ss"));
        let cfg = parse("tidb://u@h").unwrap();
        assert_eq!(
            (cfg.port, cfg.is_tidb, cfg.password.as_str()),
            (3306, true, "")
        );
    }

    #[test]
    fn parameters() {
        let cfg = parse(
            "mysql://u@h/?worker-count=4&max-txn-row=10&safe-mode=true&batch-dml-enable=false\
             &read-timeout=30s&write-timeout=1m&timeout=2s&max-multi-update-row=7&time-zone=UTC",
        )
        .unwrap();
        assert_eq!(cfg.worker_count, 4);
        assert_eq!(cfg.max_txn_row, 10);
        assert_eq!(cfg.max_multi_row, 7);
        assert!(cfg.safe_mode);
        assert!(!cfg.batch_dml);
        assert_eq!(cfg.read_timeout, Duration::from_secs(30));
        assert_eq!(cfg.write_timeout, Duration::from_secs(60));
        assert_eq!(cfg.dial_timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_parameters_are_named() {
        let cases = [
            ("mysql://u:pw@h/?worker-count=abc", "worker-count", "abc"),
            ("mysql://u:pw@h/?worker-count=0", "worker-count", "0"),
            ("mysql://u:pw@h/?worker-count=1025", "worker-count", "1025"),
            ("mysql://u:pw@h/?max-txn-row=0", "max-txn-row", "0"),
            ("mysql://u:pw@h/?max-txn-row=2049", "max-txn-row", "2049"),
            ("mysql://u:pw@h/?safe-mode=maybe", "safe-mode", "maybe"),
            ("mysql://u:pw@h/?read-timeout=10", "read-timeout", "10"),
            (
                "mysql://u:pw@h/?time-zone=Asia/Shanghai",
                "time-zone",
                "Asia/Shanghai",
            ),
            (
                "mysql://u:pw@h/?wroker-count=3",
                "wroker-count",
                "worker-count",
            ),
        ];
        for (uri, name, value) in cases {
            let err = parse(uri).unwrap_err();
            assert!(
                matches!(err, SinkError::InvalidUri { .. }),
                "{uri}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains(value), "{uri}: {msg}");
            assert!(!msg.contains("pw@"), "{uri}: password leaked in {msg}");
            assert!(msg.contains("u:xxxxx@h"), "{uri}: {msg}");
        }
    }

    #[test]
    fn missing_host() {
        let err = parse("mysql:///x").unwrap_err().to_string();
        assert!(err.contains("missing host"), "{err}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%3a").as_deref(), Some("a/b:"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
