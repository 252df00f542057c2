//! The TiCDC-compatible HTTP API (Open API v2) and `/metrics`.
//!
//! Existing TiCDC scripts and clients must work against Tidal unchanged, so paths, JSON field
//! names, error codes and status codes follow ticdc.md §2 (see [`models`], [`errors`] and the
//! exact `/synced` logic in [`synced`]). Handlers are thin: they parse (every extractor failure
//! and every malformed body becomes `400 CDC:ErrAPIInvalidParam`, never a panic or a plain-text
//! rejection), call the [`ChangefeedService`], and render.
//!
//! Routes (all under `/api/v2` unless noted):
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/status` (also `/status` at the root) | this node |
//! | POST | `/log` | `{"log_level"}` |
//! | POST | `/log/redact` | `{"redact_info_log"}`, only to stricter modes |
//! | GET | `/health` | `{}` or 500 `ErrClusterIsUnhealthy` |
//! | GET | `/captures` | this node (single-coordinator view) |
//! | POST | `/tso` | `{"timestamp","logic_time"}` |
//! | GET/POST | `/changefeeds` | list (`?state=`) / create |
//! | GET/PUT/DELETE | `/changefeeds/{id}` | get / update / remove |
//! | POST | `/changefeeds/{id}/pause`, `/changefeeds/{id}/resume` | |
//! | GET | `/changefeeds/{id}/status`, `/changefeeds/{id}/synced` | |
//! | GET | `/changefeeds/{id}/diagnosis` | Tidal: watermarks + dataflow diagnosis |
//! | GET | `/processors`, `/processors/{id}/{capture}` | compatibility |
//! | POST | `/owner/resign` | no-op `{}` (one coordinator per process) |
//! | GET | `/unsafe/metadata` | every key of the cluster |
//! | DELETE | `/unsafe/service_gc_safepoint` | drops the cluster GC reservation |
//! | ANY | `/metrics` (root) | Prometheus text |
//!
//! Security ([`auth`], [`tls`], [`redact`]): with a certificate the API is served over HTTPS
//! only ([`serve_tls_listener`]); with a configured user every route but `/api/v2/health` (and
//! `/metrics` if so configured) needs HTTP basic auth; every response body is scrubbed of sink
//! URI passwords, whatever produced it.
//!
//! Not served: TiCDC's internal/test table-move endpoints, `verify_table`, `get_all_tables` and
//! `unsafe/resolve_lock` (they need the schema store / TiKV access of a running node), and the
//! TOML rendering of `GET /changefeeds/{id}`. `?keyspace=` is accepted everywhere and, as in
//! TiCDC's classic kernel, forced to `default`.

pub mod auth;
pub mod errors;
pub mod models;
pub mod redact;
pub mod synced;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tidal_model::Ts;

use crate::meta::keys::DEFAULT_KEYSPACE;
use crate::metrics::Metrics;
use crate::service::{
    ChangefeedService, CreateRequest, ErrorCode, ServiceError, UpdateRequest,
    replica_config_from_api,
};
use errors::ApiError;
use models::{
    Capture, ChangeFeedInfoModel, ChangefeedCommonInfo, ChangefeedConfig, ChangefeedStatusModel,
    EmptyResponse, ListResponse, LogLevelReq, MetadataKv, ProcessorCommonInfo, ProcessorDetail,
    RedactModeReq, RedactModeResp, ResumeChangefeedConfig, ServerStatus, TsoModel,
};

/// Changes the process's log level (the binary wires this to its tracing subscriber).
pub trait LogControl: Send + Sync {
    /// Sets the level; `level` is already validated and normalized (`debug`, `info`, `warn`,
    /// `error`).
    fn set_level(&self, level: &str) -> Result<(), String>;
}

/// Facts about this node for `/status` and `/captures`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Tidal version.
    pub version: String,
    /// Git hash of the build (may be empty).
    pub git_hash: String,
    /// This node's id (capture id).
    pub id: String,
    /// The Tidal cluster id.
    pub cluster_id: String,
    /// The advertised HTTP address.
    pub address: String,
    /// Process id.
    pub pid: u32,
    /// Whether this node is the coordinator.
    pub is_owner: bool,
}

impl ServerInfo {
    /// A coordinator node with this id, cluster and address; version from the crate, pid from
    /// the process.
    pub fn new(id: &str, cluster_id: &str, address: &str) -> Self {
        ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_hash: String::new(),
            id: id.to_string(),
            cluster_id: cluster_id.to_string(),
            address: address.to_string(),
            pid: std::process::id(),
            is_owner: true,
        }
    }
}

/// Node liveness as TiCDC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Serving (0).
    Alive,
    /// Draining before shutdown (1).
    Draining,
    /// Stopping (2).
    Stopping,
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    service: Arc<ChangefeedService>,
    server: Arc<ServerInfo>,
    metrics: Metrics,
    log: Option<Arc<dyn LogControl>>,
    liveness: Arc<AtomicI32>,
    redact: Arc<Mutex<&'static str>>,
    auth: Option<Arc<auth::BasicAuth>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("server", &self.server)
            .field("liveness", &self.liveness)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// State for a node serving `service`, exposing `metrics` on `/metrics`.
    pub fn new(service: Arc<ChangefeedService>, server: ServerInfo, metrics: Metrics) -> Self {
        ApiState {
            service,
            server: Arc::new(server),
            metrics,
            log: None,
            liveness: Arc::new(AtomicI32::new(0)),
            redact: Arc::new(Mutex::new("off")),
            auth: None,
        }
    }

    /// Requires HTTP basic auth on every route but `/api/v2/health` (see [`auth`]).
    pub fn with_basic_auth(mut self, auth: auth::BasicAuth) -> Self {
        self.auth = Some(Arc::new(auth));
        self
    }

    /// Installs the log level hook used by `POST /api/v2/log`.
    pub fn with_log_control(mut self, log: Arc<dyn LogControl>) -> Self {
        self.log = Some(log);
        self
    }

    /// The service.
    pub fn service(&self) -> &Arc<ChangefeedService> {
        &self.service
    }

    /// Sets the liveness reported by `/status` and checked by `/health`.
    pub fn set_liveness(&self, l: Liveness) {
        let v = match l {
            Liveness::Alive => 0,
            Liveness::Draining => 1,
            Liveness::Stopping => 2,
        };
        self.liveness.store(v, Ordering::Release);
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn ok_json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => ApiError(ServiceError::internal(format!(
            "cannot encode response: {e}"
        )))
        .into_response(),
    }
}

fn parse_body<T: DeserializeOwned + Default>(body: &Bytes, allow_empty: bool) -> ApiResult<T> {
    if allow_empty && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // Go refuses to bind anything but an object to a struct; serde would accept an array.
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_json(&e))?;
    if !v.is_object() {
        return Err(ApiError::bad_json(&format!(
            "expected a JSON object, got {}",
            json_kind(&v)
        )));
    }
    serde_json::from_value(v).map_err(|e| ApiError::bad_json(&e))
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn path_id(p: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    p.map(|Path(id)| id).map_err(|e| ApiError::bad_json(&e))
}

fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<HashMap<String, String>> {
    q.map(|Query(m)| m).map_err(|e| ApiError::bad_json(&e))
}

/// The keyspace of a request: the classic kernel serves only `default`, whatever `?keyspace=`
/// says (TiCDC's `GetKeyspaceValueWithDefault`).
fn keyspace(_q: &HashMap<String, String>) -> &'static str {
    DEFAULT_KEYSPACE
}

/// Builds the router with every route of the module docs, behind the basic-auth gate (when the
/// state has one) and the response scrubber.
pub fn router(state: ApiState) -> Router {
    let gate = state.auth.clone();
    Router::new()
        .route("/status", get(server_status))
        .route("/metrics", any(metrics_text))
        .route("/api/v2/status", get(server_status))
        .route("/api/v2/log", post(set_log_level))
        .route("/api/v2/log/redact", post(set_redact))
        .route("/api/v2/health", get(health))
        .route("/api/v2/captures", get(captures))
        .route("/api/v2/tso", post(tso))
        .route(
            "/api/v2/changefeeds",
            get(list_changefeeds).post(create_changefeed),
        )
        .route(
            "/api/v2/changefeeds/{id}",
            get(get_changefeed)
                .put(update_changefeed)
                .delete(delete_changefeed),
        )
        .route("/api/v2/changefeeds/{id}/pause", post(pause_changefeed))
        .route("/api/v2/changefeeds/{id}/resume", post(resume_changefeed))
        .route("/api/v2/changefeeds/{id}/status", get(changefeed_status))
        .route("/api/v2/changefeeds/{id}/synced", get(changefeed_synced))
        .route(
            "/api/v2/changefeeds/{id}/diagnosis",
            get(changefeed_diagnosis),
        )
        .route("/api/v2/processors", get(list_processors))
        .route("/api/v2/processors/{id}/{capture}", get(get_processor))
        .route("/api/v2/owner/resign", post(resign_owner))
        .route("/api/v2/unsafe/metadata", get(unsafe_metadata))
        .route(
            "/api/v2/unsafe/service_gc_safepoint",
            axum::routing::delete(unsafe_delete_service_gc_safepoint),
        )
        .with_state(state)
        .layer(axum::middleware::map_response(redact::scrub_response))
        .layer(axum::middleware::from_fn_with_state(
            gate,
            auth::require_auth,
        ))
}

/// Serves the API on `addr` until the task is dropped or the listener fails.
pub async fn serve(addr: SocketAddr, state: ApiState) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_listener(listener, state).await
}

/// Serves the API on an already bound listener (bind `127.0.0.1:0` to learn the port first).
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    state: ApiState,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "HTTP API listening");
    axum::serve(listener, router(state)).await
}

/// Serves the API over HTTPS only on an already bound listener (see [`tls`]).
pub async fn serve_tls_listener(
    listener: tokio::net::TcpListener,
    state: ApiState,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    let listener = tls::TlsListener::new(listener, config)?;
    tracing::info!(addr = %axum::serve::Listener::local_addr(&listener)?, "HTTPS API listening");
    axum::serve(listener, router(state)).await
}

/// Whether this node owns the cluster now: the coordinator's election state when one runs here,
/// else what the node was started as.
fn is_owner(st: &ApiState) -> bool {
    st.service
        .watermark_source()
        .is_owner()
        .unwrap_or(st.server.is_owner)
}

async fn server_status(State(st): State<ApiState>) -> Response {
    let s = &st.server;
    ok_json(&ServerStatus {
        version: s.version.clone(),
        git_hash: s.git_hash.clone(),
        id: s.id.clone(),
        cluster_id: s.cluster_id.clone(),
        pid: s.pid,
        is_owner: is_owner(&st),
        liveness: st.liveness.load(Ordering::Acquire),
    })
}

async fn metrics_text(State(st): State<ApiState>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.encode(),
    )
        .into_response()
}

fn normalize_level(level: &str) -> Option<&'static str> {
    Some(match level.trim().to_ascii_lowercase().as_str() {
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "dpanic" | "panic" | "fatal" => "error",
        _ => return None,
    })
}

async fn set_log_level(State(st): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let req: LogLevelReq = parse_body(&body, false)?;
    let level = normalize_level(&req.log_level).ok_or_else(|| {
        ApiError(ServiceError::invalid_param(format!(
            "fail to change log level: {}",
            req.log_level
        )))
    })?;
    match &st.log {
        Some(log) => log.set_level(level).map_err(|e| {
            ApiError(ServiceError::invalid_param(format!(
                "fail to change log level: {e}"
            )))
        })?,
        None => tracing::warn!(
            level,
            "log level change requested but no log control is installed"
        ),
    }
    tracing::info!(level, "log level changed");
    Ok(ok_json(&EmptyResponse {}))
}

fn redact_rank(mode: &str) -> Option<(u8, &'static str)> {
    Some(match mode.trim().to_ascii_lowercase().as_str() {
        "off" | "false" => (0, "off"),
        "marker" => (1, "marker"),
        "on" | "true" => (2, "on"),
        _ => return None,
    })
}

async fn set_redact(State(st): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let req: RedactModeReq = parse_body(&body, false)?;
    let (rank, mode) = redact_rank(&req.redact_info_log).ok_or_else(|| {
        ApiError(ServiceError::invalid_param(format!(
            "invalid redact mode {:?}: must be one of off, marker, on",
            req.redact_info_log
        )))
    })?;
    let mut cur = st.redact.lock();
    let previous = *cur;
    let prev_rank = redact_rank(previous).map_or(0, |(r, _)| r);
    if rank < prev_rank {
        return Err(ApiError(ServiceError::invalid_param(format!(
            "cannot relax redact mode from {previous} to {mode}: only stricter modes are allowed"
        ))));
    }
    *cur = mode;
    Ok(ok_json(&RedactModeResp {
        previous_mode: previous.to_string(),
        current_mode: mode.to_string(),
    }))
}

async fn health(State(st): State<ApiState>) -> ApiResult<Response> {
    let unhealthy = |why: String| {
        ApiError(ServiceError::new(
            ErrorCode::ClusterIsUnhealthy,
            format!("TiCDC cluster is unhealthy: {why}"),
        ))
    };
    if st.liveness.load(Ordering::Acquire) != 0 {
        return Err(unhealthy("the coordinator is not alive".into()));
    }
    st.service
        .store()
        .current_revision()
        .await
        .map_err(|e| unhealthy(e.to_string()))?;
    Ok(ok_json(&EmptyResponse {}))
}

async fn captures(State(st): State<ApiState>) -> Response {
    let s = &st.server;
    ok_json(&ListResponse::new(vec![Capture {
        id: s.id.clone(),
        is_owner: is_owner(&st),
        address: s.address.clone(),
        cluster_id: s.cluster_id.clone(),
    }]))
}

async fn tso(State(st): State<ApiState>) -> ApiResult<Response> {
    let ts = Ts(st.service.tso().await?);
    Ok(ok_json(&TsoModel {
        timestamp: i64::try_from(ts.physical_ms()).unwrap_or(i64::MAX),
        logic_time: i64::try_from(ts.logical()).unwrap_or(0),
    }))
}

async fn list_changefeeds(
    State(st): State<ApiState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let state = q
        .get("state")
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let views = st.service.list(keyspace(&q), &state).await?;
    let items: Vec<ChangefeedCommonInfo> =
        views.iter().map(ChangefeedCommonInfo::from_view).collect();
    Ok(ok_json(&ListResponse::new(items)))
}

async fn create_changefeed(
    State(st): State<ApiState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> ApiResult<Response> {
    let q = query(q)?;
    let cfg: ChangefeedConfig = parse_body(&body, false)?;
    let replica_config = replica_config_from_api(cfg.replica_config)?;
    let view = st
        .service
        .create(CreateRequest {
            keyspace: keyspace(&q).to_string(),
            id: cfg.changefeed_id,
            start_ts: cfg.start_ts,
            target_ts: cfg.target_ts,
            sink_uri: cfg.sink_uri,
            replica_config,
        })
        .await?;
    info_response(&st, &view)
}

/// The changefeed detail body that create, get and update all answer with.
fn info_response(st: &ApiState, view: &crate::service::ChangefeedView) -> ApiResult<Response> {
    Ok(ok_json(&ChangeFeedInfoModel::from_view(
        view,
        &st.server.address,
    )?))
}

fn cf_ref(
    p: Result<Path<String>, PathRejection>,
    q: &HashMap<String, String>,
) -> ApiResult<crate::meta::ChangefeedRef> {
    let id = path_id(p)?;
    Ok(ChangefeedService::changefeed_ref(keyspace(q), &id)?)
}

async fn get_changefeed(
    State(st): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let cf = cf_ref(p, &query(q)?)?;
    let view = st.service.get(&cf).await?;
    info_response(&st, &view)
}

async fn update_changefeed(
    State(st): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> ApiResult<Response> {
    let cf = cf_ref(p, &query(q)?)?;
    let cfg: ChangefeedConfig = parse_body(&body, false)?;
    let replica_config = match cfg.replica_config {
        None | Some(serde_json::Value::Null) => None,
        some => Some(replica_config_from_api(some)?),
    };
    let view = st
        .service
        .update(
            &cf,
            UpdateRequest {
                start_ts: cfg.start_ts,
                target_ts: cfg.target_ts,
                sink_uri: cfg.sink_uri,
                replica_config,
            },
        )
        .await?;
    info_response(&st, &view)
}

async fn delete_changefeed(
    State(st): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let cf = cf_ref(p, &query(q)?)?;
    if st.service.remove(&cf).await? {
        Ok(ok_json(&EmptyResponse {}))
    } else {
        // TiCDC answers 200 with `null` for a changefeed that does not exist.
        Ok(ok_json(&serde_json::Value::Null))
    }
}

async fn pause_changefeed(
    State(st): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let cf = cf_ref(p, &query(q)?)?;
    st.service.pause(&cf).await?;
    Ok(ok_json(&EmptyResponse {}))
}

async fn resume_changefeed(
    State(st): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> ApiResult<Response> {
    let cf = cf_ref(p, &query(q)?)?;
    let cfg: ResumeChangefeedConfig = parse_body(&body, true)?;
    let overwrite = (cfg.overwrite_checkpoint_ts != 0).then_some(cfg.overwrite_checkpoint_ts);
    st.service.resume(&cf, overwrite).await?;
    Ok(ok_json(&EmptyResponse {}))
}

async fn changefeed_status(
    State(st): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let cf = cf_ref(p, &query(q)?)?;
    let view = st.service.get(&cf).await?;
    Ok(ok_json(&ChangefeedStatusModel::from_view(&view)))
}

async fn changefeed_synced(
    State(st): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let cf = cf_ref(p, &query(q)?)?;
    Ok(ok_json(&st.service.synced(&cf).await?))
}

async fn changefeed_diagnosis(
    State(st): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let cf = cf_ref(p, &query(q)?)?;
    Ok(ok_json(&st.service.diagnosis(&cf).await?))
}

async fn list_processors(State(st): State<ApiState>) -> ApiResult<Response> {
    let views = st.service.list_all().await?;
    let items: Vec<ProcessorCommonInfo> = views
        .iter()
        .filter(|v| v.info.state.is_running())
        .map(|v| ProcessorCommonInfo {
            keyspace: v.changefeed.keyspace.clone(),
            changefeed_id: v.changefeed.id.clone(),
            capture_id: st.server.id.clone(),
        })
        .collect();
    Ok(ok_json(&ListResponse::new(items)))
}

async fn get_processor(
    State(st): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let (id, capture) = p.map(|Path(v)| v).map_err(|e| ApiError::bad_json(&e))?;
    let cf = ChangefeedService::changefeed_ref(keyspace(&q), &id)?;
    st.service.get(&cf).await?;
    if capture != st.server.id {
        return Err(ApiError(ServiceError::invalid_param(format!(
            "capture not exists, {capture}"
        ))));
    }
    Ok(ok_json(&ProcessorDetail {
        table_ids: Vec::new(),
    }))
}

async fn resign_owner() -> Response {
    ok_json(&EmptyResponse {})
}

async fn unsafe_metadata(State(st): State<ApiState>) -> ApiResult<Response> {
    let prefix = st.service.keys().cluster_prefix().to_string();
    let kvs = st
        .service
        .store()
        .get_prefix(prefix.as_bytes())
        .await
        .map_err(ServiceError::from)?;
    let items: Vec<MetadataKv> = kvs
        .into_iter()
        .map(|kv| MetadataKv {
            key: kv.key_str(),
            value: redact::mask_uri_passwords(&String::from_utf8_lossy(&kv.value)).into_owned(),
        })
        .collect();
    Ok(ok_json(&items))
}

async fn unsafe_delete_service_gc_safepoint(State(st): State<ApiState>) -> ApiResult<Response> {
    st.service.gc().remove_cluster_safe_point().await?;
    Ok(ok_json(&EmptyResponse {}))
}
