//! The Open API v2 JSON models, field for field as TiCDC's `api/v2/model.go`.
//!
//! Field names, which fields are omitted when empty, and the time formats are part of the
//! contract: existing scripts parse these documents. `JSONTime` fields are strings
//! `"2006-01-02 15:04:05.000"` (UTC here), `time.Time` fields RFC 3339.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::synced::json_time_ts;
use crate::meta::{FeedState, RunningError};
use crate::service::{ChangefeedView, ServiceError, parse_rfc3339_ms};

/// `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyResponse {}

/// `{"total": N, "items": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse<T> {
    /// Number of items.
    pub total: usize,
    /// The items.
    pub items: Vec<T>,
}

impl<T> ListResponse<T> {
    /// A list of these items.
    pub fn new(items: Vec<T>) -> Self {
        ListResponse {
            total: items.len(),
            items,
        }
    }
}

/// Go's zero `time.Time` in RFC 3339.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A changefeed error in the API (`{time, addr, code, message}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningErrorModel {
    /// When (RFC 3339).
    pub time: String,
    /// Reporting node.
    pub addr: String,
    /// RFC code.
    pub code: String,
    /// Message.
    pub message: String,
}

impl From<&RunningError> for RunningErrorModel {
    fn from(e: &RunningError) -> Self {
        RunningErrorModel {
            time: e.time.clone().unwrap_or_else(|| GO_ZERO_TIME.to_string()),
            addr: e.addr.clone(),
            code: e.code.clone(),
            message: e.message.clone(),
        }
    }
}

/// `{"low","high"}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GidModel {
    /// Low 64 bits.
    pub low: u64,
    /// High 64 bits.
    pub high: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// `GET /api/v2/changefeeds/{id}` (TiCDC's `ChangeFeedInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeFeedInfoModel {
    /// Upstream (PD cluster) id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub upstream_id: u64,
    /// Changefeed id.
    pub id: String,
    /// Keyspace.
    pub keyspace: String,
    /// Sink URI, password masked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sink_uri: String,
    /// Creation time (RFC 3339).
    pub create_time: String,
    /// Start ts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_ts: u64,
    /// Target ts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub target_ts: u64,
    /// Admin job type.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub admin_job_type: i64,
    /// Replica config (API form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// State.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Error (or warning), only for failed/warning/pending changefeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunningErrorModel>,
    /// Creator version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub creator_version: String,
    /// Resolved ts.
    pub resolved_ts: u64,
    /// Checkpoint ts.
    pub checkpoint_ts: u64,
    /// Checkpoint as a JSON time.
    pub checkpoint_time: String,
    /// Global id.
    pub gid: GidModel,
    /// Owner's address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub maintainer_addr: String,
}

fn shown_error(view: &ChangefeedView) -> Option<RunningErrorModel> {
    view.info
        .error
        .as_ref()
        .or(view.info.warning.as_ref())
        .map(RunningErrorModel::from)
}

impl ChangeFeedInfoModel {
    /// Builds the model; `maintainer_addr` is the node running the changefeed, if known.
    pub fn from_view(view: &ChangefeedView, maintainer_addr: &str) -> Result<Self, ServiceError> {
        let config = view.info.config.to_api_json().map_err(|e| {
            ServiceError::internal(format!("cannot encode the replica config: {e}"))
        })?;
        let error = match view.info.state {
            FeedState::Normal | FeedState::Stopped | FeedState::Finished | FeedState::Removed => {
                None
            }
            _ => shown_error(view),
        };
        let gid = view
            .info
            .changefeed_id
            .as_ref()
            .map(|c| GidModel {
                low: c.id.low,
                high: c.id.high,
            })
            .unwrap_or_default();
        let checkpoint = view.checkpoint_ts();
        Ok(ChangeFeedInfoModel {
            upstream_id: view.info.upstream_id,
            id: view.changefeed.id.clone(),
            keyspace: view.changefeed.keyspace.clone(),
            sink_uri: tidal_sinks::uri::mask_password(&view.info.sink_uri),
            create_time: if view.info.create_time.is_empty() {
                GO_ZERO_TIME.to_string()
            } else {
                view.info.create_time.clone()
            },
            start_ts: view.info.start_ts,
            target_ts: view.info.target_ts,
            admin_job_type: view.info.admin_job_type.0,
            config: Some(config),
            state: view.info.state.as_str().to_string(),
            error,
            creator_version: view.info.creator_version.clone(),
            resolved_ts: view.resolved_ts(),
            checkpoint_ts: checkpoint,
            checkpoint_time: json_time_ts(checkpoint),
            gid,
            maintainer_addr: if view.info.state.is_running() {
                maintainer_addr.to_string()
            } else {
                String::new()
            },
        })
    }
}

/// One item of `GET /api/v2/changefeeds` (TiCDC's `ChangefeedCommonInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangefeedCommonInfo {
    /// Upstream id.
    pub upstream_id: u64,
    /// Changefeed id.
    pub id: String,
    /// Keyspace.
    pub keyspace: String,
    /// State (uninitialized shown as `normal`, pending as `warning`).
    pub state: String,
    /// Checkpoint.
    pub checkpoint_tso: u64,
    /// Checkpoint as a JSON time.
    pub checkpoint_time: String,
    /// The error if set, else the warning, else null.
    pub error: Option<RunningErrorModel>,
}

impl ChangefeedCommonInfo {
    /// Builds the list item.
    pub fn from_view(view: &ChangefeedView) -> Self {
        let state = match view.info.state {
            FeedState::Uninitialized => FeedState::Normal,
            FeedState::Pending => FeedState::Warning,
            s => s,
        };
        let checkpoint = view.checkpoint_ts();
        ChangefeedCommonInfo {
            upstream_id: view.info.upstream_id,
            id: view.changefeed.id.clone(),
            keyspace: view.changefeed.keyspace.clone(),
            state: state.as_str().to_string(),
            checkpoint_tso: checkpoint,
            checkpoint_time: json_time_ts(checkpoint),
            error: shown_error(view),
        }
    }
}

/// `GET /api/v2/changefeeds/{id}/status` (TiCDC's `ChangefeedStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangefeedStatusModel {
    /// State.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Resolved ts.
    pub resolved_ts: u64,
    /// Checkpoint ts.
    pub checkpoint_ts: u64,
    /// The error of a failed changefeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<RunningErrorModel>,
    /// The warning of a changefeed in `warning`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_warning: Option<RunningErrorModel>,
}

impl ChangefeedStatusModel {
    /// Builds the status. An error is shown only if it happened after the checkpoint's wall
    /// time (an older one no longer describes the changefeed) — or if its time is unknown.
    pub fn from_view(view: &ChangefeedView) -> Self {
        let checkpoint = view.checkpoint_ts();
        let ckpt_ms = i64::try_from(tidal_model::Ts(checkpoint).physical_ms()).unwrap_or(i64::MAX);
        let recent = |e: &RunningError| {
            e.time
                .as_deref()
                .and_then(parse_rfc3339_ms)
                .is_none_or(|t| t > ckpt_ms)
        };
        let err = view
            .info
            .error
            .as_ref()
            .or(view.info.warning.as_ref())
            .filter(|e| recent(e))
            .map(RunningErrorModel::from);
        let (last_error, last_warning) = match view.info.state {
            FeedState::Failed => (err, None),
            FeedState::Warning | FeedState::Pending => (None, err),
            _ => (None, None),
        };
        ChangefeedStatusModel {
            state: view.info.state.as_str().to_string(),
            resolved_ts: view.resolved_ts(),
            checkpoint_ts: checkpoint,
            last_error,
            last_warning,
        }
    }
}

/// `POST /api/v2/changefeeds` and `PUT /api/v2/changefeeds/{id}` body (`ChangefeedConfig`).
/// PD connection fields (`pd_addrs`, `ca_path`, ...) are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChangefeedConfig {
    /// Ignored: the `?keyspace=` query wins.
    pub keyspace: String,
    /// Changefeed id (generated if empty).
    pub changefeed_id: String,
    /// Start ts (0 = now).
    pub start_ts: u64,
    /// Target ts (0 = none).
    pub target_ts: u64,
    /// Sink URI.
    pub sink_uri: String,
    /// Replica config (API form), merged over the defaults.
    pub replica_config: Option<Value>,
}

/// `POST …/resume` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResumeChangefeedConfig {
    /// Resume from this ts instead of the checkpoint (0 = no overwrite).
    pub overwrite_checkpoint_ts: u64,
}

/// `POST /api/v2/log` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogLevelReq {
    /// The level (`debug`, `info`, `warn`, `error`, ...).
    pub log_level: String,
}

/// `POST /api/v2/log/redact` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedactModeReq {
    /// `off`, `marker` or `on`.
    pub redact_info_log: String,
}

/// `POST /api/v2/log/redact` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactModeResp {
    /// Mode before.
    pub previous_mode: String,
    /// Mode after.
    pub current_mode: String,
}

/// `POST /api/v2/tso` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TsoModel {
    /// Physical milliseconds.
    pub timestamp: i64,
    /// Logical counter.
    pub logic_time: i64,
}

/// `GET /api/v2/status` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// Version.
    pub version: String,
    /// Git hash.
    pub git_hash: String,
    /// Node (capture) id.
    pub id: String,
    /// Cluster id.
    pub cluster_id: String,
    /// Process id.
    pub pid: u32,
    /// Whether this node is the coordinator.
    pub is_owner: bool,
    /// 0 alive, 1 draining, 2 stopping.
    pub liveness: i32,
}

/// One item of `GET /api/v2/captures`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// Node id.
    pub id: String,
    /// Whether it is the coordinator.
    pub is_owner: bool,
    /// Advertised address.
    pub address: String,
    /// Cluster id.
    pub cluster_id: String,
}

/// One item of `GET /api/v2/processors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorCommonInfo {
    /// Keyspace.
    pub keyspace: String,
    /// Changefeed id.
    pub changefeed_id: String,
    /// Node id.
    pub capture_id: String,
}

/// `GET /api/v2/processors/{changefeed}/{capture}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorDetail {
    /// Table ids replicated there.
    pub table_ids: Vec<i64>,
}

/// One item of `GET /api/v2/unsafe/metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataKv {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}
