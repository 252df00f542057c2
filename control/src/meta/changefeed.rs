//! The persisted changefeed documents, in TiCDC's JSON shapes.
//!
//! Tidal writes the same `ChangeFeedInfo` / `ChangeFeedStatus` JSON as TiCDC under the same keys,
//! so `cdc cli`-style tooling, backups of the etcd prefix and operators' muscle memory carry
//! over. The stored (etcd) form uses kebab-case keys (`sink-uri`, `checkpoint-ts`,
//! `memory-quota`) and Go's encodings (durations as integer nanoseconds, times as RFC 3339
//! strings); the Open API uses snake_case keys and duration strings (`"10m0s"`). One Rust struct
//! carries both: serde derives the stored form, and [`ReplicaConfig::to_api_json`] /
//! [`ReplicaConfig::from_api_json`] convert to and from the API form.
//!
//! Only the fields the control plane reads are typed. Everything else — including keys a newer
//! TiCDC may add — is kept verbatim in `extra` maps (serde `flatten`), so reading and rewriting
//! a document never loses configuration.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Go duration text (kept at this path for callers of the meta module).
pub use tidal_model::duration::{format_go_duration, parse_go_duration};

/// `changefeed-id` JSON (`{"id":{"low","high"},"display":{"name","keyspace"}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangefeedIdJson {
    /// 128-bit global id.
    #[serde(default)]
    pub id: Gid,
    /// Human-readable name.
    #[serde(default)]
    pub display: DisplayName,
}

/// A 128-bit id as two halves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gid {
    /// Low 64 bits.
    #[serde(default)]
    pub low: u64,
    /// High 64 bits.
    #[serde(default)]
    pub high: u64,
}

/// Name and keyspace of a changefeed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplayName {
    /// The changefeed id users see.
    #[serde(default)]
    pub name: String,
    /// Its keyspace.
    #[serde(default)]
    pub keyspace: String,
}

/// Changefeed state as persisted (`state` field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeedState {
    /// Running.
    #[serde(rename = "normal")]
    Normal,
    /// Retrying after an error (older TiCDC); shown as `warning` by the API.
    #[serde(rename = "pending")]
    Pending,
    /// Stopped by an unrecoverable error.
    #[serde(rename = "failed")]
    Failed,
    /// Paused by the user.
    #[serde(rename = "stopped")]
    Stopped,
    /// Removed.
    #[serde(rename = "removed")]
    Removed,
    /// Reached its target ts.
    #[serde(rename = "finished")]
    Finished,
    /// Running with a retryable error.
    #[serde(rename = "warning")]
    Warning,
    /// In-memory only: not initialized yet (`""`).
    #[default]
    #[serde(rename = "")]
    Uninitialized,
}

impl FeedState {
    /// The JSON string.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedState::Normal => "normal",
            FeedState::Pending => "pending",
            FeedState::Failed => "failed",
            FeedState::Stopped => "stopped",
            FeedState::Removed => "removed",
            FeedState::Finished => "finished",
            FeedState::Warning => "warning",
            FeedState::Uninitialized => "",
        }
    }

    /// Parses the JSON string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "normal" => FeedState::Normal,
            "pending" => FeedState::Pending,
            "failed" => FeedState::Failed,
            "stopped" => FeedState::Stopped,
            "removed" => FeedState::Removed,
            "finished" => FeedState::Finished,
            "warning" => FeedState::Warning,
            "" => FeedState::Uninitialized,
            _ => return None,
        })
    }

    /// Whether `resume` is allowed (failed, stopped, finished).
    pub fn is_resumable(self) -> bool {
        matches!(
            self,
            FeedState::Failed | FeedState::Stopped | FeedState::Finished
        )
    }

    /// Whether the changefeed is running (normal or warning).
    pub fn is_running(self) -> bool {
        matches!(self, FeedState::Normal | FeedState::Warning)
    }

    /// The list filter (`?state=`): empty → normal, stopped, failed, warning, pending; `all` →
    /// everything; otherwise an exact match.
    pub fn is_needed(self, filter: &str) -> bool {
        match filter {
            "all" => true,
            "" => matches!(
                self,
                FeedState::Normal
                    | FeedState::Stopped
                    | FeedState::Failed
                    | FeedState::Warning
                    | FeedState::Pending
            ),
            other => other == self.as_str(),
        }
    }
}

impl std::fmt::Display for FeedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TiCDC's `AdminJobType` (an integer in JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AdminJobType(pub i64);

impl AdminJobType {
    /// No job.
    pub const NONE: Self = Self(0);
    /// Stop.
    pub const STOP: Self = Self(1);
    /// Resume.
    pub const RESUME: Self = Self(2);
    /// Remove.
    pub const REMOVE: Self = Self(3);
    /// Finish.
    pub const FINISH: Self = Self(4);
}

/// `ChangeFeedStatus.progress` (an integer in JSON; 0 when never set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Progress(pub i64);

impl Progress {
    /// Nothing in progress.
    pub const NONE: Self = Self(1);
    /// Being removed.
    pub const REMOVING: Self = Self(2);
    /// Being stopped.
    pub const STOPPING: Self = Self(3);
}

/// An error or warning recorded on a changefeed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningError {
    /// When it happened (RFC 3339, as Go writes `time.Time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The node that reported it.
    #[serde(default)]
    pub addr: String,
    /// RFC error code, e.g. `CDC:ErrSnapshotLostByGC`.
    #[serde(default)]
    pub code: String,
    /// The message.
    #[serde(default)]
    pub message: String,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `ChangeFeedInfo`: the changefeed definition, at `…/changefeed/info/<id>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct ChangeFeedInfo {
    /// `id`: the structured changefeed id (newer TiCDC).
    #[serde(rename = "id", skip_serializing_if = "Option::is_none")]
    pub changefeed_id: Option<ChangefeedIdJson>,
    /// Upstream cluster id.
    pub upstream_id: u64,
    /// Sink URI.
    pub sink_uri: String,
    /// Creation time (RFC 3339).
    pub create_time: String,
    /// Start ts.
    pub start_ts: u64,
    /// Target ts (0 = none).
    pub target_ts: u64,
    /// Admin job type.
    pub admin_job_type: AdminJobType,
    /// Sort engine (legacy).
    pub sort_engine: String,
    /// Sort dir (deprecated).
    pub sort_dir: String,
    /// Upstream info (opaque).
    pub upstream_info: Option<Value>,
    /// Replica config.
    #[serde(deserialize_with = "null_as_default")]
    pub config: ReplicaConfig,
    /// State.
    #[serde(deserialize_with = "null_as_default")]
    pub state: FeedState,
    /// Last error.
    pub error: Option<RunningError>,
    /// Last warning.
    pub warning: Option<RunningError>,
    /// Version of the server that created it.
    pub creator_version: String,
    /// Owner epoch; changes on every (re)start of the changefeed's owner.
    pub epoch: u64,
    /// Keyspace id (0 in the classic kernel).
    pub keyspace_id: u32,
    /// Fields not modelled above, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChangeFeedInfo {
    /// Parses the stored JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
    /// The stored JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

/// `ChangeFeedStatus`: the persisted progress, at `…/changefeed/status/<id>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct ChangeFeedStatus {
    /// Everything before (and at) this ts is in the sink.
    pub checkpoint_ts: u64,
    /// The highest resolved ts persisted with a checkpoint (`resolved-ts`, as older TiCDC
    /// versions kept it). The API reports it instead of the live value, so what it says never
    /// goes backwards when a dataflow restarts from the persisted checkpoint. Left out of the
    /// JSON while 0, so a status Tidal never ran keeps TiCDC's shape.
    #[serde(skip_serializing_if = "is_zero")]
    pub resolved_ts: u64,
    /// Progress of a stop/remove.
    pub progress: Progress,
    /// Minimum table barrier ts.
    pub min_table_barrier_ts: u64,
    /// Admin job type.
    pub admin_job_type: AdminJobType,
    /// Fields not modelled above, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl ChangeFeedStatus {
    /// A status at `checkpoint_ts` with progress `None`.
    pub fn at(checkpoint_ts: u64) -> Self {
        ChangeFeedStatus {
            checkpoint_ts,
            progress: Progress::NONE,
            ..Self::default()
        }
    }
    /// Parses the stored JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
    /// The stored JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

/// Default changefeed memory quota (1 GiB).
pub const DEFAULT_MEMORY_QUOTA: u64 = 1 << 30;
const NANOS_PER_MINUTE: i64 = 60_000_000_000;

/// Replication settings of one changefeed (`config` in `ChangeFeedInfo`, `replica_config` in
/// the API). `None` means "not set" (Go's nil pointer) and is omitted on output; the accessors
/// return TiCDC's defaults for unset values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReplicaConfig {
    /// `throughput` (default) or `low-latency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance_mode: Option<String>,
    /// Memory quota in bytes (default 1 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_quota: Option<u64>,
    /// Case-sensitive filter matching (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_sensitive: Option<bool>,
    /// Replicate tables without a valid index (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_replicate: Option<bool>,
    /// Check the GC safe point at create/resume (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_gc_safe_point: Option<bool>,
    /// Write sync points (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_sync_point: Option<bool>,
    /// Sync point interval, nanoseconds (default 10 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_point_interval: Option<i64>,
    /// Sync point retention, nanoseconds (default 24 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_point_retention: Option<i64>,
    /// Ignore ineligible tables at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_ineligible_table: Option<bool>,
    /// Bidirectional replication mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bdr_mode: Option<bool>,
    /// Table filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterConfig>,
    /// Mounter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounter: Option<MounterConfig>,
    /// Sink settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkConfig>,
    /// Redo log (consistent replication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent: Option<ConsistentConfig>,
    /// How long an error may persist before the changefeed fails, nanoseconds (default 30 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changefeed_error_stuck_duration: Option<i64>,
    /// Everything else (scheduler, integrity, synced-status, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `filter` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FilterConfig {
    /// Table rules (default `["*.*"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
    /// Transactions to skip by start ts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_txn_start_ts: Option<Vec<u64>>,
    /// Other keys (event-filters, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `mounter` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MounterConfig {
    /// Decoder workers (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_num: Option<u32>,
    /// Other keys.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `sink` section (the sink-specific sub-sections stay in `extra`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SinkConfig {
    /// Encoding protocol (canal-json, open-protocol, avro, csv, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Line terminator for storage sinks (default `"\r\n"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminator: Option<String>,
    /// Date separator for storage sinks (default `day`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_separator: Option<String>,
    /// Partition separator for storage sinks (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_partition_separator: Option<bool>,
    /// Encoder concurrency (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_concurrency: Option<u32>,
    /// MySQL safe mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_mode: Option<bool>,
    /// Other keys (dispatchers, csv, kafka-config, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `consistent` (redo log) section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConsistentConfig {
    /// `none` (default) or `eventual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Max redo file size in MiB (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_size: Option<i64>,
    /// Flush interval in ms (default 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_interval: Option<i64>,
    /// Meta flush interval in ms (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_flush_interval: Option<i64>,
    /// Encoding workers (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_worker_num: Option<i64>,
    /// Flush workers (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_worker_num: Option<i64>,
    /// Redo storage URI (default empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Use the file backend (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_file_backend: Option<bool>,
    /// Compression (default empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Other keys (memory-usage, flush-concurrency, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for ReplicaConfig {
    /// TiCDC's default replica config (the modelled part).
    fn default() -> Self {
        ReplicaConfig {
            performance_mode: Some("throughput".into()),
            memory_quota: Some(DEFAULT_MEMORY_QUOTA),
            case_sensitive: Some(false),
            force_replicate: None,
            check_gc_safe_point: Some(true),
            enable_sync_point: Some(false),
            sync_point_interval: Some(10 * NANOS_PER_MINUTE),
            sync_point_retention: Some(24 * 60 * NANOS_PER_MINUTE),
            ignore_ineligible_table: None,
            bdr_mode: Some(false),
            filter: Some(FilterConfig {
                rules: Some(vec!["*.*".into()]),
                ..FilterConfig::default()
            }),
            mounter: Some(MounterConfig {
                worker_num: Some(16),
                ..MounterConfig::default()
            }),
            sink: Some(SinkConfig {
                protocol: None,
                terminator: Some("\r\n".into()),
                date_separator: Some("day".into()),
                enable_partition_separator: Some(true),
                encoder_concurrency: Some(32),
                safe_mode: None,
                extra: Map::new(),
            }),
            consistent: Some(ConsistentConfig {
                level: Some("none".into()),
                max_log_size: Some(64),
                flush_interval: Some(2000),
                meta_flush_interval: Some(200),
                encoding_worker_num: Some(16),
                flush_worker_num: Some(8),
                storage: Some(String::new()),
                use_file_backend: Some(false),
                compression: Some(String::new()),
                extra: Map::new(),
            }),
            changefeed_error_stuck_duration: Some(30 * NANOS_PER_MINUTE),
            extra: Map::new(),
        }
    }
}

/// Top-level keys whose values are durations (nanoseconds stored, Go strings in the API).
const DURATION_KEYS: &[&str] = &[
    "sync-point-interval",
    "sync-point-retention",
    "changefeed-error-stuck-duration",
    "active-active-progress-interval",
    "active-active-sync-stats-interval",
];
/// Keys that keep their dashes in the API form (inside `sink.dispatchers[]`).
const API_KEEPS_DASHES: &[&str] = &["target-schema", "target-table"];

fn rename_keys(v: Value, to_api: bool) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let k = if API_KEEPS_DASHES.contains(&k.as_str()) {
                        k
                    } else if to_api {
                        k.replace('-', "_")
                    } else {
                        k.replace('_', "-")
                    };
                    (k, rename_keys(v, to_api))
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|i| rename_keys(i, to_api)).collect())
        }
        other => other,
    }
}

impl ReplicaConfig {
    /// Memory quota, default 1 GiB.
    pub fn memory_quota(&self) -> u64 {
        self.memory_quota
            .filter(|q| *q > 0)
            .unwrap_or(DEFAULT_MEMORY_QUOTA)
    }
    /// Whether the GC safe point is checked (default true).
    pub fn check_gc_safe_point(&self) -> bool {
        self.check_gc_safe_point.unwrap_or(true)
    }
    /// Whether sync points are enabled (default false).
    pub fn enable_sync_point(&self) -> bool {
        self.enable_sync_point.unwrap_or(false)
    }
    /// Filter rules (default `*.*`).
    pub fn filter_rules(&self) -> Vec<String> {
        self.filter
            .as_ref()
            .and_then(|f| f.rules.clone())
            .unwrap_or_else(|| vec!["*.*".into()])
    }

    /// The API (snake_case) JSON form: keys `_`-separated, durations as Go strings.
    pub fn to_api_json(&self) -> Result<Value, serde_json::Error> {
        let mut v = serde_json::to_value(self)?;
        if let Value::Object(map) = &mut v {
            for key in DURATION_KEYS {
                if let Some(slot) = map.get_mut(*key)
                    && let Some(ns) = slot.as_i64()
                {
                    *slot = Value::String(format_go_duration(ns));
                }
            }
        }
        Ok(rename_keys(v, true))
    }

    /// Parses the API (snake_case) JSON form.
    pub fn from_api_json(v: Value) -> Result<Self, serde_json::Error> {
        use serde::de::Error;
        let mut v = rename_keys(v, false);
        if let Value::Object(map) = &mut v {
            for key in DURATION_KEYS {
                if let Some(slot) = map.get_mut(*key)
                    && let Some(s) = slot.as_str()
                {
                    let ns = parse_go_duration(s).ok_or_else(|| {
                        serde_json::Error::custom(format!("invalid duration for {key}: {s:?}"))
                    })?;
                    *slot = Value::from(ns);
                }
            }
        }
        serde_json::from_value(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A `ChangeFeedInfo` as TiCDC writes it to etcd.
    const TICDC_INFO: &str = r#"{
      "id": {"id": {"low": 1311768467294899695, "high": 81985529216486895},
             "display": {"name": "test-1", "keyspace": "default"}},
      "upstream-id": 7285031183537950999,
      "sink-uri": "mysql://root@127.0.0.1:3306/",
      "create-time": "2024-05-20T10:11:12.123456789+08:00",
      "start-ts": 449843373428998145,
      "target-ts": 0,
      "admin-job-type": 0,
      "sort-engine": "unified",
      "sort-dir": "",
      "upstream-info": null,
      "config": {
        "performance-mode": "throughput",
        "memory-quota": 1073741824,
        "case-sensitive": false,
        "check-gc-safe-point": true,
        "enable-sync-point": false,
        "enable-table-monitor": false,
        "bdr-mode": false,
        "sync-point-interval": 600000000000,
        "sync-point-retention": 86400000000000,
        "filter": {"rules": ["test.*"], "ignore-txn-start-ts": [42], "event-filters": null},
        "mounter": {"worker-num": 16},
        "sink": {"protocol": "canal-json", "csv": {"delimiter": ",", "quote": "\"", "null": "\\N",
                 "include-commit-ts": false, "binary-encoding-method": "base64"},
                 "dispatchers": [{"matcher": ["test.*"], "partition": "table",
                                  "target-schema": "s2"}],
                 "encoder-concurrency": 32, "terminator": "\r\n", "date-separator": "day",
                 "enable-partition-separator": true, "advance-timeout": 150},
        "consistent": {"level": "none", "max-log-size": 64, "flush-interval": 2000,
                       "meta-flush-interval": 200, "encoding-worker-num": 16,
                       "flush-worker-num": 8, "storage": "", "use-file-backend": false,
                       "compression": "", "memory-usage": {"memory-quota-percentage": 50}},
        "scheduler": {"enable-table-across-nodes": false, "region-threshold": 10000},
        "integrity": {"integrity-check-level": "none", "corruption-handle-level": "warn"},
        "changefeed-error-stuck-duration": 1800000000000,
        "synced-status": {"synced-check-interval": 300, "checkpoint-interval": 15},
        "sql-mode": ""
      },
      "state": "failed",
      "error": {"time": "2024-05-20T10:20:00.5+08:00", "addr": "127.0.0.1:8300",
                "code": "CDC:ErrSnapshotLostByGC", "message": "fail to create or maintain changefeed"},
      "warning": null,
      "creator-version": "v8.5.0",
      "epoch": 449843373428998146,
      "keyspace-id": 0
    }"#;

    #[test]
    fn ticdc_info_parses_and_round_trips() {
        let info = ChangeFeedInfo::from_json(TICDC_INFO.as_bytes()).unwrap();
        assert_eq!(info.sink_uri, "mysql://root@127.0.0.1:3306/");
        assert_eq!(info.start_ts, 449_843_373_428_998_145);
        assert_eq!(info.upstream_id, 7_285_031_183_537_950_999);
        assert_eq!(info.state, FeedState::Failed);
        assert_eq!(info.epoch, 449_843_373_428_998_146);
        let id = info.changefeed_id.as_ref().unwrap();
        assert_eq!(id.display.name, "test-1");
        assert_eq!(id.id.low, 1_311_768_467_294_899_695);
        assert_eq!(info.error.as_ref().unwrap().code, "CDC:ErrSnapshotLostByGC");
        assert_eq!(info.config.memory_quota(), 1 << 30);
        assert_eq!(info.config.filter_rules(), vec!["test.*".to_string()]);
        let f = info.config.filter.as_ref().unwrap();
        assert_eq!(f.ignore_txn_start_ts, Some(vec![42]));
        assert_eq!(
            info.config.sink.as_ref().unwrap().protocol.as_deref(),
            Some("canal-json")
        );
        assert_eq!(info.config.sync_point_interval, Some(600_000_000_000));
        assert!(info.config.extra.contains_key("scheduler"));
        assert!(info.config.extra.contains_key("sql-mode"));
        assert!(info.config.extra.contains_key("enable-table-monitor"));
        // re-serialising gives the same JSON document (unknown keys included)
        let back: Value = serde_json::from_slice(&info.to_json().unwrap()).unwrap();
        let orig: Value = serde_json::from_str(TICDC_INFO).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn api_form_round_trip_and_shape() {
        let info = ChangeFeedInfo::from_json(TICDC_INFO.as_bytes()).unwrap();
        let api = info.config.to_api_json().unwrap();
        assert_eq!(api["memory_quota"], Value::from(1u64 << 30));
        assert_eq!(api["sync_point_interval"], Value::from("10m0s"));
        assert_eq!(api["sync_point_retention"], Value::from("24h0m0s"));
        assert_eq!(api["changefeed_error_stuck_duration"], Value::from("30m0s"));
        assert_eq!(
            api["filter"]["ignore_txn_start_ts"],
            serde_json::json!([42])
        );
        assert_eq!(api["mounter"]["worker_num"], Value::from(16));
        assert_eq!(
            api["consistent"]["memory_usage"]["memory_quota_percentage"],
            Value::from(50)
        );
        assert_eq!(
            api["sink"]["dispatchers"][0]["target-schema"],
            Value::from("s2")
        );
        assert_eq!(
            api["synced_status"]["synced_check_interval"],
            Value::from(300)
        );
        assert!(api.get("memory-quota").is_none());
        let back = ReplicaConfig::from_api_json(api).unwrap();
        assert_eq!(back, info.config);
    }

    #[test]
    fn api_form_parses_user_input() {
        let v = serde_json::json!({
            "memory_quota": 512,
            "enable_sync_point": true,
            "sync_point_interval": "5m",
            "filter": {"rules": ["a.*"]},
            "sink": {"protocol": "open-protocol"},
            "some_future_knob": 3
        });
        let c = ReplicaConfig::from_api_json(v).unwrap();
        assert_eq!(c.memory_quota, Some(512));
        assert_eq!(c.enable_sync_point, Some(true));
        assert_eq!(c.sync_point_interval, Some(5 * NANOS_PER_MINUTE));
        assert_eq!(c.filter_rules(), vec!["a.*".to_string()]);
        assert_eq!(c.extra.get("some-future-knob"), Some(&Value::from(3)));
        assert!(
            ReplicaConfig::from_api_json(serde_json::json!({"sync_point_interval": "5x"})).is_err()
        );
    }

    #[test]
    fn defaults_match_ticdc() {
        let d = ReplicaConfig::default();
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["memory-quota"], Value::from(1_073_741_824u64));
        assert_eq!(v["check-gc-safe-point"], Value::from(true));
        assert_eq!(v["case-sensitive"], Value::from(false));
        assert_eq!(v["sync-point-interval"], Value::from(600_000_000_000i64));
        assert_eq!(v["filter"]["rules"], serde_json::json!(["*.*"]));
        assert_eq!(v["mounter"]["worker-num"], Value::from(16));
        assert_eq!(v["consistent"]["level"], Value::from("none"));
        assert_eq!(v["consistent"]["flush-interval"], Value::from(2000));
        assert_eq!(
            v["changefeed-error-stuck-duration"],
            Value::from(1_800_000_000_000i64)
        );
        let back: ReplicaConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn status_json_shape() {
        let s = ChangeFeedStatus {
            checkpoint_ts: 449_843_373_428_998_145,
            resolved_ts: 0,
            progress: Progress::STOPPING,
            min_table_barrier_ts: 449_843_373_428_998_000,
            admin_job_type: AdminJobType::STOP,
            extra: Map::new(),
        };
        assert_eq!(
            String::from_utf8(s.to_json().unwrap()).unwrap(),
            r#"{"checkpoint-ts":449843373428998145,"progress":3,"min-table-barrier-ts":449843373428998000,"admin-job-type":1}"#
        );
        assert_eq!(
            ChangeFeedStatus::from_json(&s.to_json().unwrap()).unwrap(),
            s
        );
        let with_resolved = ChangeFeedStatus {
            resolved_ts: 449_843_373_428_998_200,
            ..s.clone()
        };
        assert_eq!(
            String::from_utf8(with_resolved.to_json().unwrap()).unwrap(),
            r#"{"checkpoint-ts":449843373428998145,"resolved-ts":449843373428998200,"progress":3,"min-table-barrier-ts":449843373428998000,"admin-job-type":1}"#
        );
        assert_eq!(
            ChangeFeedStatus::from_json(&with_resolved.to_json().unwrap()).unwrap(),
            with_resolved
        );
        let minimal = ChangeFeedStatus::from_json(br#"{"checkpoint-ts":5}"#).unwrap();
        assert_eq!(minimal.checkpoint_ts, 5);
        assert_eq!(minimal.progress, Progress(0));
    }

    #[test]
    fn states() {
        for s in [
            FeedState::Normal,
            FeedState::Pending,
            FeedState::Failed,
            FeedState::Stopped,
            FeedState::Removed,
            FeedState::Finished,
            FeedState::Warning,
            FeedState::Uninitialized,
        ] {
            let j = serde_json::to_string(&s).unwrap();
            assert_eq!(j, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<FeedState>(&j).unwrap(), s);
            assert_eq!(FeedState::parse(s.as_str()), Some(s));
        }
        assert!(serde_json::from_str::<FeedState>("\"bogus\"").is_err());
        assert!(FeedState::Stopped.is_resumable());
        assert!(!FeedState::Normal.is_resumable());
        assert!(FeedState::Pending.is_needed(""));
        assert!(!FeedState::Finished.is_needed(""));
        assert!(FeedState::Finished.is_needed("all"));
        assert!(FeedState::Finished.is_needed("finished"));
        // null config and state are tolerated
        let info = ChangeFeedInfo::from_json(br#"{"config":null,"state":null}"#).unwrap();
        assert_eq!(info.state, FeedState::Uninitialized);
        assert_eq!(info.config, ReplicaConfig::default());
    }

    proptest! {
        #[test]
        fn info_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = ChangeFeedInfo::from_json(&bytes);
            let _ = ChangeFeedStatus::from_json(&bytes);
        }
    }
}
