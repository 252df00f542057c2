//! The storage sink's configuration, parsed from a `file://` URI.
//!
//! `file:///abs/dir?protocol=canal-json|csv&…`. The parameter names are TiCDC's (its storage sink
//! reads some from the URI and the rest from the changefeed config file; Tidal takes all of them
//! from the URI). Out-of-range sizes and intervals are clamped to TiCDC's limits with a warning,
//! as TiCDC does; malformed values, unknown parameters and a missing or unknown protocol are
//! errors that name the parameter.

use std::path::PathBuf;
use std::time::Duration;

use tidal_model::duration::parse_go_std_duration;

use crate::encode::canal_json::CanalJsonConfig;
use crate::encode::csv::{BinaryEncoding, CsvConfig};
use crate::encode::{EncoderConfig, Protocol};
use crate::sink::SinkError;

/// Default `flush-interval` (TiCDC: 5 s).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Smallest `flush-interval` (TiCDC: 100 ms); smaller values are raised to it.
pub const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Largest `flush-interval` (TiCDC: 10 min); larger values are lowered to it.
pub const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(600);
/// Default `file-size` (TiCDC: 64 MiB).
pub const DEFAULT_FILE_SIZE: u64 = 64 * 1024 * 1024;
/// Smallest `file-size` (TiCDC: 1 KiB).
pub const MIN_FILE_SIZE: u64 = 1024;
/// Largest `file-size` (TiCDC: 512 MiB).
pub const MAX_FILE_SIZE: u64 = 512 * 1024 * 1024;
/// Default `file-index-width` (TiCDC: 20, enough for any u64).
pub const DEFAULT_FILE_INDEX_WIDTH: usize = 20;
/// Smallest `file-index-width` (TiCDC: 6); values outside 6..=20 fall back to the default.
pub const MIN_FILE_INDEX_WIDTH: usize = 6;

/// How data files are grouped by the date they were written (`date-separator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DateSeparator {
    /// No date directory.
    None,
    /// `YYYY`.
    Year,
    /// `YYYY-MM`.
    Month,
    /// `YYYY-MM-DD` (TiCDC's default).
    #[default]
    Day,
}

impl DateSeparator {
    /// Parses `none`, `year`, `month` or `day` (case-insensitive).
    pub fn parse(s: &str) -> Option<DateSeparator> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Some(DateSeparator::None),
            "year" => Some(DateSeparator::Year),
            "month" => Some(DateSeparator::Month),
            "day" => Some(DateSeparator::Day),
            _ => None,
        }
    }
}

/// Everything the storage sink needs.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// The root directory (absolute).
    pub root: PathBuf,
    /// The data file protocol and its options.
    pub encoder: EncoderConfig,
    /// A data file older than this is closed and the next write starts a new one.
    pub flush_interval: Duration,
    /// A data file that would grow past this many bytes is closed first (a single transaction
    /// larger than this still goes into one file).
    pub file_size: u64,
    /// Date directories.
    pub date_separator: DateSeparator,
    /// Digits of the zero-padded file index.
    pub file_index_width: usize,
}

impl StorageConfig {
    /// A configuration with TiCDC's defaults for `protocol` under `root`.
    pub fn new(root: impl Into<PathBuf>, protocol: Protocol) -> StorageConfig {
        StorageConfig {
            root: root.into(),
            encoder: EncoderConfig::new(protocol),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            file_size: DEFAULT_FILE_SIZE,
            date_separator: DateSeparator::Day,
            file_index_width: DEFAULT_FILE_INDEX_WIDTH,
        }
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.encoder.protocol
    }

    /// Parses `file:///abs/dir?protocol=…&…`.
    ///
    /// Parameters: `protocol` (required: `canal-json` or `csv`), `flush-interval` (Go duration
    /// such as `5s`, `500ms`, `1m30s`), `file-size` (bytes), `date-separator`
    /// (`none|year|month|day`), `file-index-width`, `enable-tidb-extension`,
    /// `content-compatible`, and for csv `delimiter`, `quote`, `null`, `include-commit-ts`,
    /// `output-old-value`, `binary-encoding-method` (`base64|hex`).
    pub fn from_uri(uri: &url::Url) -> Result<StorageConfig, SinkError> {
        let bad = |reason: String| SinkError::InvalidUri {
            uri: crate::uri::mask_password(uri.as_str()),
            reason,
        };
        if uri.scheme() != "file" {
            return Err(bad(format!(
                "the storage sink takes file:// URIs, not {}://",
                uri.scheme()
            )));
        }
        if let Some(host) = uri.host_str()
            && !host.is_empty()
            && host != "localhost"
        {
            return Err(bad(format!(
                "a file:// URI names a local directory; host {host:?} is not allowed"
            )));
        }
        let root = uri
            .to_file_path()
            .map_err(|()| bad("the path must be an absolute directory".to_string()))?;
        if root.as_os_str().is_empty() || root == std::path::Path::new("/") {
            return Err(bad("the root directory cannot be / or empty".to_string()));
        }

        let mut seen: Vec<String> = Vec::new();
        let mut protocol: Option<Protocol> = None;
        let mut cfg = StorageConfig::new(root, Protocol::CanalJson);
        let mut canal = CanalJsonConfig::default();
        let mut csv = CsvConfig::default();
        let mut csv_only: Vec<String> = Vec::new();

        for (key, value) in uri.query_pairs() {
            let key = key.into_owned();
            let value = value.into_owned();
            if seen.contains(&key) {
                return Err(bad(format!("parameter {key} is given twice")));
            }
            seen.push(key.clone());
            let flag = |v: &str| {
                parse_bool(v).ok_or_else(|| bad(format!("{key} must be true or false, not {v:?}")))
            };
            match key.as_str() {
                "protocol" => {
                    protocol = Some(Protocol::parse(&value).ok_or_else(|| {
                        bad(format!(
                            "protocol {value:?} is not supported by the storage sink (use canal-json or csv)"
                        ))
                    })?);
                }
                "flush-interval" => {
                    let d = parse_go_std_duration(value.trim()).ok_or_else(|| {
                        bad(format!(
                            "flush-interval {value:?} is not a duration like 5s or 500ms"
                        ))
                    })?;
                    cfg.flush_interval = clamp_duration(d);
                }
                "file-size" => {
                    let n: u64 = value.parse().map_err(|_| {
                        bad(format!("file-size {value:?} is not a number of bytes"))
                    })?;
                    cfg.file_size = clamp_size(n);
                }
                "date-separator" => {
                    cfg.date_separator = DateSeparator::parse(&value).ok_or_else(|| {
                        bad(format!(
                            "date-separator {value:?} is not one of none, year, month, day"
                        ))
                    })?;
                }
                "file-index-width" => {
                    let n: usize = value
                        .parse()
                        .map_err(|_| bad(format!("file-index-width {value:?} is not a number")))?;
                    cfg.file_index_width =
                        if (MIN_FILE_INDEX_WIDTH..=DEFAULT_FILE_INDEX_WIDTH).contains(&n) {
                            n
                        } else {
                            tracing::warn!(width = n, "file-index-width outside 6..=20; using 20");
                            DEFAULT_FILE_INDEX_WIDTH
                        };
                }
                "enable-tidb-extension" => canal.enable_tidb_extension = flag(&value)?,
                "content-compatible" => canal.content_compatible = flag(&value)?,
                "delimiter" => {
                    csv.delimiter = value;
                    csv_only.push(key);
                }
                "quote" => {
                    csv.quote = value;
                    csv_only.push(key);
                }
                "null" => {
                    csv.null = value;
                    csv_only.push(key);
                }
                "include-commit-ts" => {
                    csv.include_commit_ts = flag(&value)?;
                    csv_only.push(key);
                }
                "output-old-value" => {
                    csv.output_old_value = flag(&value)?;
                    csv_only.push(key);
                }
                "binary-encoding-method" => {
                    csv.binary_encoding = BinaryEncoding::parse(&value).ok_or_else(|| {
                        bad(format!(
                            "binary-encoding-method {value:?} is not base64 or hex"
                        ))
                    })?;
                    csv_only.push(key);
                }
                other => {
                    return Err(bad(format!(
                        "unknown parameter {other:?} for the storage sink"
                    )));
                }
            }
        }
        let protocol = protocol
            .ok_or_else(|| bad("missing protocol=canal-json or protocol=csv".to_string()))?;
        if protocol != Protocol::Csv
            && let Some(k) = csv_only.first()
        {
            return Err(bad(format!("parameter {k} applies to protocol=csv only")));
        }
        csv.validate().map_err(bad)?;
        cfg.encoder = EncoderConfig {
            protocol,
            canal_json: canal,
            csv,
        };
        Ok(cfg)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn clamp_duration(d: Duration) -> Duration {
    if d < MIN_FLUSH_INTERVAL {
        tracing::warn!(?d, "flush-interval too small; using 100ms");
        MIN_FLUSH_INTERVAL
    } else if d > MAX_FLUSH_INTERVAL {
        tracing::warn!(?d, "flush-interval too large; using 10m");
        MAX_FLUSH_INTERVAL
    } else {
        d
    }
}

fn clamp_size(n: u64) -> u64 {
    if n < MIN_FILE_SIZE {
        tracing::warn!(n, "file-size too small; using 1024 bytes");
        MIN_FILE_SIZE
    } else if n > MAX_FILE_SIZE {
        tracing::warn!(n, "file-size too large; using 512 MiB");
        MAX_FILE_SIZE
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StorageConfig, SinkError> {
        StorageConfig::from_uri(&url::Url::parse(s).unwrap())
    }

    fn reason(s: &str) -> String {
        match parse(s) {
            Err(SinkError::InvalidUri { reason, .. }) => reason,
            other => panic!("expected InvalidUri for {s}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_params() {
        let c = parse("file:///tmp/out?protocol=csv").unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/out"));
        assert_eq!(c.protocol(), Protocol::Csv);
        assert_eq!(c.flush_interval, Duration::from_secs(5));
        assert_eq!(c.file_size, 64 * 1024 * 1024);
        assert_eq!(c.date_separator, DateSeparator::Day);
        assert_eq!(c.file_index_width, 20);
        assert_eq!(c.encoder.csv, CsvConfig::default());

        let c = parse(
            "file:///tmp/a%20b?protocol=canal-json&flush-interval=1m30s&file-size=4096\
             &date-separator=none&file-index-width=6&enable-tidb-extension=true",
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/a b"));
        assert_eq!(c.flush_interval, Duration::from_secs(90));
        assert_eq!(c.file_size, 4096);
        assert_eq!(c.date_separator, DateSeparator::None);
        assert_eq!(c.file_index_width, 6);
        assert!(c.encoder.canal_json.enable_tidb_extension);

        let c = parse(
            "file:///tmp/x?protocol=csv&delimiter=%7C&quote=&null=NULL&include-commit-ts=true\
             &output-old-value=1&binary-encoding-method=hex&file-size=1&flush-interval=1ms",
        )
        .unwrap();
        assert_eq!(c.encoder.csv.delimiter, "|");
        assert_eq!(c.encoder.csv.quote, "");
        assert_eq!(c.encoder.csv.null, "NULL");
        assert!(c.encoder.csv.include_commit_ts);
        assert!(c.encoder.csv.output_old_value);
        assert_eq!(c.encoder.csv.binary_encoding, BinaryEncoding::Hex);
        assert_eq!(c.file_size, MIN_FILE_SIZE);
        assert_eq!(c.flush_interval, MIN_FLUSH_INTERVAL);
    }

    #[test]
    fn bad_uris_name_the_problem() {
        assert!(reason("file:///tmp/x").contains("missing protocol"));
        assert!(reason("file:///tmp/x?protocol=avro").contains("\"avro\""));
        assert!(reason("file:///tmp/x?protocol=csv&bogus=1").contains("\"bogus\""));
        assert!(reason("file:///tmp/x?protocol=csv&file-size=10MB").contains("file-size"));
        assert!(reason("file:///tmp/x?protocol=csv&flush-interval=5").contains("flush-interval"));
        assert!(
            reason("file:///tmp/x?protocol=csv&date-separator=week").contains("date-separator")
        );
        assert!(reason("file:///tmp/x?protocol=csv&protocol=csv").contains("twice"));
        assert!(reason("file:///tmp/x?protocol=canal-json&delimiter=%7C").contains("csv only"));
        assert!(reason("file:///tmp/x?protocol=csv&quote=%22%22").contains("quote"));
        assert!(reason("file:///tmp/x?protocol=csv&delimiter=%22").contains("share"));
        assert!(
            reason("file:///tmp/x?protocol=csv&enable-tidb-extension=yes")
                .contains("true or false")
        );
        assert!(reason("file://remote/tmp/x?protocol=csv").contains("host"));
        assert!(reason("s3://bucket/x?protocol=csv").contains("file://"));
        assert!(reason("file:///?protocol=csv").contains("root"));
    }
}
