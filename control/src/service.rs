//! The changefeed service: the one place that turns "create / update / pause / resume / remove
//! this changefeed" into metadata writes and PD GC reservations, with TiCDC's rules and errors.
//!
//! The HTTP API ([`crate::api`]) is a thin JSON layer over [`ChangefeedService`]; a CLI or an
//! embedding program can call the service directly and get the same validation. The service
//! itself never runs a changefeed: it persists the desired state in the [`MetaStore`] (so a
//! coordinator — which watches the store — starts, stops and fences owners), and it reads
//! runtime progress through the [`WatermarkSource`] the dataflow layer plugs in with
//! [`ChangefeedService::set_watermark_source`]. Until one is plugged in (or for a changefeed the
//! dataflow does not run), everything falls back to the persisted checkpoint.
//!
//! GC safety follows ticdc.md §7.2: **reserve first, then verify**. Creating (or resuming) a
//! changefeed at `ts` first installs a temporary service safe point
//! `<cluster service id>-creating-<keyspace>_<id>` (TTL 1 h) at `ts`, and only then checks:
//!
//! * with `check_gc_safe_point` (the default), TiCDC's rule: fail with `ErrStartTsBeforeGC` when
//!   `ts < min service safe point + 1`;
//! * always, the fact: fail with `ErrSnapshotLostByGC` when `ts` is below the *physical* GC safe
//!   point. With `check_gc_safe_point = false` this is the only check, so a start ts below
//!   other services' reservations but above what GC actually collected is accepted. PD refuses
//!   to store a reservation below its current minimum, so such a changefeed is protected only
//!   once the minimum allows it — that is the risk the flag opts into; if GC does overtake it,
//!   the GC manager fails it with `ErrSnapshotLostByGC`.
//!
//! The temporary reservation is removed on any later failure; after success it is handed to the
//! [`GcManager`], which deletes it once the cluster-level reservation (at `min(checkpoint) − 1`)
//! covers it — the service runs a GC tick right after every create, resume and remove, so that
//! normally happens at once.

mod error;

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use serde::Serialize;
use serde_json::{Value, json};
use tidal_model::Ts;

pub use error::{ErrorCode, ServiceError};

use crate::api::synced::{SyncedConfig, SyncedInputs, SyncedStatus, decide};
use crate::gc::{
    ENSURE_TTL_SECS, GcFeed, GcManager, GcTickReport, PdApi, TAG_CREATING, TAG_RESUMING,
    ensure_service_id,
};
use crate::meta::changefeed::{ChangefeedIdJson, DisplayName, Gid};
use crate::meta::epoch::{CAS_MAX_TRIES, CAS_RETRY_DELAY};
use crate::meta::keys::DEFAULT_KEYSPACE;
use crate::meta::{
    AdminJobType, ChangeFeedInfo, ChangeFeedStatus, ChangefeedRef, Compare, CompareOp, FeedState,
    KeyLayout, MetaError, MetaStore, Op, ParsedKey, ReplicaConfig, RunningError, Txn,
    advance_epoch, create_changefeed, delete_changefeed, load_changefeed, pause_changefeed,
    remove_changefeed, resume_changefeed, update_state_fenced, validate_changefeed_id,
};

/// Runtime progress of one changefeed, as the dataflow measures it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Watermarks {
    /// Everything at or below is durably in the sink.
    pub checkpoint_ts: u64,
    /// Everything at or below has been received from upstream (frontier after the sources − 1).
    pub resolved_ts: u64,
    /// The largest commit ts written to the sink (0 if nothing yet).
    pub last_synced_ts: u64,
    /// The minimum resolved ts over the changefeed's source spans (`/synced`'s puller resolved
    /// ts; 0 if not reported yet).
    pub puller_resolved_ts: u64,
    /// Whether every worker's span-set checksum matches (if not, the checkpoint is frozen).
    pub checksum_ok: bool,
}

/// Where the service reads runtime progress. The dataflow / coordinator layer implements it;
/// `changefeed` is the changefeed id (ids are unique within the classic kernel's single
/// `default` keyspace). Both methods must be cheap and non-blocking (they are called from HTTP
/// handlers and the metrics updater); `None` means "not running here / no data yet".
pub trait WatermarkSource: Send + Sync {
    /// Current watermarks of a running changefeed.
    fn watermarks(&self, changefeed: &str) -> Option<Watermarks>;
    /// Free-form diagnosis (per-span lags, checksum states, stalled regions, ...) for
    /// `GET /api/v2/changefeeds/{id}/diagnosis`.
    fn diagnosis(&self, changefeed: &str) -> Option<Value>;
    /// Whether this node's coordinator owns the cluster's changefeeds right now (`None`: this
    /// source does not know, e.g. no coordinator runs here).
    fn is_owner(&self) -> Option<bool> {
        None
    }
}

/// A [`WatermarkSource`] that knows nothing (the default until the dataflow plugs in).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWatermarks;

impl WatermarkSource for NoWatermarks {
    fn watermarks(&self, _changefeed: &str) -> Option<Watermarks> {
        None
    }
    fn diagnosis(&self, _changefeed: &str) -> Option<Value> {
        None
    }
}

/// Settings of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Version recorded as `creator-version` on new changefeeds.
    pub creator_version: String,
    /// This node's advertised address (recorded on errors the service sets).
    pub advertise_addr: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            creator_version: env!("CARGO_PKG_VERSION").to_string(),
            advertise_addr: String::new(),
        }
    }
}

/// A validated create request (the API layer has already merged the replica config over the
/// defaults with [`replica_config_from_api`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// Keyspace (classic kernel: `default`).
    pub keyspace: String,
    /// Changefeed id; generated when empty.
    pub id: String,
    /// Start ts; 0 = PD's current TSO.
    pub start_ts: u64,
    /// Target ts; 0 = none.
    pub target_ts: u64,
    /// Sink URI (stored as given; masked whenever shown).
    pub sink_uri: String,
    /// Replica config.
    pub replica_config: ReplicaConfig,
}

/// An update request; zero/empty/`None` fields are left unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateRequest {
    /// Must be 0: the start ts cannot be updated.
    pub start_ts: u64,
    /// New target ts (0 = keep).
    pub target_ts: u64,
    /// New sink URI (empty = keep).
    pub sink_uri: String,
    /// New replica config, replacing the stored one entirely.
    pub replica_config: Option<ReplicaConfig>,
}

/// A changefeed as the service sees it: persisted documents plus runtime watermarks.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangefeedView {
    /// Its name.
    pub changefeed: ChangefeedRef,
    /// The persisted definition.
    pub info: ChangeFeedInfo,
    /// The persisted status (a status at `start_ts` if the key is missing).
    pub status: ChangeFeedStatus,
    /// Runtime watermarks, if the dataflow reports any.
    pub watermarks: Option<Watermarks>,
}

impl ChangefeedView {
    /// The checkpoint: the persisted one, or the running coordinator's last save when that is
    /// newer than the document read. Only persisted values are reported, so the API never goes
    /// backwards when a run restarts from the persisted checkpoint.
    pub fn checkpoint_ts(&self) -> u64 {
        let persisted = self.status.checkpoint_ts;
        self.watermarks
            .map_or(persisted, |w| w.checkpoint_ts.max(persisted))
    }

    /// The resolved ts: the dataflow's real resolved ts as last persisted with the checkpoint
    /// (TiCDC's API returns the checkpoint here), never below the checkpoint.
    pub fn resolved_ts(&self) -> u64 {
        let ckpt = self.checkpoint_ts();
        let persisted = self.status.resolved_ts.max(ckpt);
        self.watermarks
            .map_or(persisted, |w| w.resolved_ts.max(persisted))
    }
}

/// The default replica config of a new changefeed: TiCDC's defaults, including
/// `synced-status` (300 s / 15 s).
pub fn default_replica_config() -> ReplicaConfig {
    let mut cfg = ReplicaConfig::default();
    cfg.extra.insert(
        "synced-status".into(),
        json!({"synced-check-interval": 300, "checkpoint-interval": 15}),
    );
    cfg
}

fn merge_json(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else if let Some(slot) = b.get_mut(&k) {
                    merge_json(slot, v);
                } else {
                    b.insert(k, v);
                }
            }
        }
        (b, p) => *b = p,
    }
}

/// Parses an API (snake_case) `replica_config` merged over [`default_replica_config`], as TiCDC
/// binds the request over its defaults: objects merge key by key, anything else (including
/// arrays such as `filter.rules`) replaces. `None`/`null` gives the defaults.
pub fn replica_config_from_api(v: Option<Value>) -> Result<ReplicaConfig, ServiceError> {
    let mut base = default_replica_config()
        .to_api_json()
        .map_err(|e| ServiceError::internal(format!("cannot encode the default config: {e}")))?;
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(obj)) => merge_json(&mut base, Value::Object(obj)),
        Some(other) => {
            return Err(ServiceError::invalid_param(format!(
                "invalid api parameter: replica_config must be an object, got {other}"
            )));
        }
    }
    let cfg = ReplicaConfig::from_api_json(base)
        .map_err(|e| ServiceError::invalid_param(format!("invalid api parameter: {e}")))?;
    validate_replica_config(&cfg)?;
    Ok(cfg)
}

fn validate_replica_config(cfg: &ReplicaConfig) -> Result<(), ServiceError> {
    let bad = |d: String| {
        ServiceError::new(
            ErrorCode::InvalidReplicaConfig,
            format!("invalid replica config, {d}"),
        )
    };
    if let Some(m) = cfg.performance_mode.as_deref()
        && !matches!(m, "" | "throughput" | "low-latency")
    {
        return Err(bad(format!(
            "performance_mode must be \"throughput\" or \"low-latency\", got {m:?}"
        )));
    }
    if let Some(level) = cfg.consistent.as_ref().and_then(|c| c.level.as_deref())
        && !matches!(level, "" | "none" | "eventual")
    {
        return Err(bad(format!(
            "consistent.level must be \"none\" or \"eventual\", got {level:?}"
        )));
    }
    if cfg.filter_rules().iter().any(|r| r.trim().is_empty()) {
        return Err(bad("filter rules must not be empty strings".into()));
    }
    Ok(())
}

/// Checks a sink URI (non-empty, parseable by a Tidal sink); errors carry the URI with its
/// password masked.
pub fn validate_sink_uri(uri: &str) -> Result<(), ServiceError> {
    if uri.trim().is_empty() {
        return Err(ServiceError::sink_uri_invalid(""));
    }
    tidal_sinks::uri::parse_sink_uri(uri)
        .map(|_| ())
        .map_err(|e| {
            ServiceError::new(
                ErrorCode::SinkUriInvalid,
                format!(
                    "sink uri invalid '{}': {e}",
                    tidal_sinks::uri::mask_password(uri)
                ),
            )
        })
}

/// Unix milliseconds of the local clock.
pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 text (UTC, millisecond precision) of Unix milliseconds, as Go's `time.Time`
/// marshals: `2023-11-30T15:14:11.015Z`. Valid for the TSO range (below 2^46 ms, year 4199).
pub(crate) fn rfc3339_from_ms(ms: u64) -> String {
    let s = Ts::from_unix_millis(ms).to_string(); // "YYYY-MM-DD HH:MM:SS.mmm"
    format!("{}Z", s.replacen(' ', "T", 1))
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses RFC 3339 (`2006-01-02T15:04:05[.frac](Z|±hh:mm)`) into Unix milliseconds; `None` if
/// malformed. Never panics on any input.
pub(crate) fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from.checked_add(len)?)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && (sep(10, b'T') || sep(10, b't') || sep(10, b' '))) {
        return None;
    }
    if !(sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if sep(i, b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = s.get(start..i)?;
        let mut ms = 0i64;
        for (k, c) in digits.bytes().take(3).enumerate() {
            ms += i64::from(c - b'0') * [100, 10, 1].get(k).copied().unwrap_or(0);
        }
        frac_ms = ms;
    }
    let offset_min = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(&c @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b':') => {
            let m = num(i + 1, 2)? * 60 + num(i + 4, 2)?;
            if c == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + frac_ms)
}

fn random_u128() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = 0u128;
    for half in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(half);
        h.write_u128(u128::from(unix_ms_now()));
        out = (out << 64) | u128::from(h.finish());
    }
    out
}

/// A fresh changefeed id in UUID v4 form (what TiCDC generates when none is given).
pub fn generate_changefeed_id() -> String {
    let mut v = random_u128();
    v = (v & !(0xf << 76)) | (0x4 << 76); // version 4
    v = (v & !(0x3 << 62)) | (0x2 << 62); // variant
    let hex = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The changefeed service (see the module docs).
pub struct ChangefeedService {
    store: Arc<dyn MetaStore>,
    keys: KeyLayout,
    pd: Arc<dyn PdApi>,
    gc: Arc<GcManager>,
    watermarks: RwLock<Arc<dyn WatermarkSource>>,
    cfg: ServiceConfig,
}

impl fmt::Debug for ChangefeedService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangefeedService")
            .field("store", &self.store)
            .field("keys", &self.keys)
            .field("pd", &self.pd)
            .field("gc", &self.gc)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl ChangefeedService {
    /// A service over `store` (keys of `keys`' cluster), PD and the GC manager.
    pub fn new(
        store: Arc<dyn MetaStore>,
        keys: KeyLayout,
        pd: Arc<dyn PdApi>,
        gc: Arc<GcManager>,
        cfg: ServiceConfig,
    ) -> Self {
        ChangefeedService {
            store,
            keys,
            pd,
            gc,
            watermarks: RwLock::new(Arc::new(NoWatermarks)),
            cfg,
        }
    }

    /// Plugs in the runtime progress source (the dataflow layer calls this once it runs).
    pub fn set_watermark_source(&self, src: Arc<dyn WatermarkSource>) {
        *self.watermarks.write() = src;
    }

    /// The current runtime progress source.
    pub fn watermark_source(&self) -> Arc<dyn WatermarkSource> {
        Arc::clone(&self.watermarks.read())
    }

    /// The metadata store.
    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// The key layout (cluster id).
    pub fn keys(&self) -> &KeyLayout {
        &self.keys
    }

    /// PD.
    pub fn pd(&self) -> &Arc<dyn PdApi> {
        &self.pd
    }

    /// The GC manager.
    pub fn gc(&self) -> &Arc<GcManager> {
        &self.gc
    }

    /// The settings.
    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
    }

    /// A fresh TSO; `ErrPDEtcdAPIError` if PD cannot be asked.
    pub async fn tso(&self) -> Result<u64, ServiceError> {
        self.pd
            .get_ts()
            .await
            .map_err(|e| ServiceError::pd("fail to get ts from pd client", &e))
    }

    /// Validates a changefeed name: `ErrAPIInvalidParam "invalid changefeed_id: …"` if the id
    /// breaks TiCDC's rule.
    pub fn changefeed_ref(keyspace: &str, id: &str) -> Result<ChangefeedRef, ServiceError> {
        validate_changefeed_id(id).map_err(|_| ServiceError::invalid_id(id))?;
        ChangefeedRef::in_keyspace(keyspace, id)
            .map_err(|e| ServiceError::invalid_param(format!("invalid keyspace: {e}")))
    }

    fn view(
        &self,
        changefeed: ChangefeedRef,
        info: ChangeFeedInfo,
        status: Option<ChangeFeedStatus>,
        src: &dyn WatermarkSource,
    ) -> ChangefeedView {
        let status = status.unwrap_or_else(|| ChangeFeedStatus::at(info.start_ts));
        let watermarks = src.watermarks(&changefeed.id);
        ChangefeedView {
            changefeed,
            info,
            status,
            watermarks,
        }
    }

    /// One changefeed; `ErrChangeFeedNotExists` if unknown.
    pub async fn get(&self, cf: &ChangefeedRef) -> Result<ChangefeedView, ServiceError> {
        let loaded = load_changefeed(self.store.as_ref(), &self.keys, cf)
            .await?
            .ok_or_else(|| ServiceError::not_exists(&cf.id))?;
        let src = self.watermark_source();
        Ok(self.view(cf.clone(), loaded.info, loaded.status, src.as_ref()))
    }

    async fn scan(&self, keyspace: Option<&str>) -> Result<Vec<ChangefeedView>, ServiceError> {
        let prefix = match keyspace {
            Some(ks) => format!("{}/{ks}/changefeed/", self.keys.cluster_prefix()),
            None => format!("{}/", self.keys.cluster_prefix()),
        };
        let kvs = self.store.get_prefix(prefix.as_bytes()).await?;
        let mut infos: BTreeMap<ChangefeedRef, ChangeFeedInfo> = BTreeMap::new();
        let mut statuses: BTreeMap<ChangefeedRef, ChangeFeedStatus> = BTreeMap::new();
        for kv in kvs {
            let key = kv.key_str();
            match self.keys.parse(&key) {
                Some(ParsedKey::ChangefeedInfo(cf)) => match ChangeFeedInfo::from_json(&kv.value) {
                    Ok(info) => {
                        infos.insert(cf, info);
                    }
                    Err(e) => tracing::warn!(%key, error = %e, "skipping corrupt changefeed info"),
                },
                Some(ParsedKey::ChangefeedStatus(cf)) => {
                    match ChangeFeedStatus::from_json(&kv.value) {
                        Ok(st) => {
                            statuses.insert(cf, st);
                        }
                        Err(e) => {
                            tracing::warn!(%key, error = %e, "skipping corrupt changefeed status");
                        }
                    }
                }
                _ => {}
            }
        }
        let src = self.watermark_source();
        Ok(infos
            .into_iter()
            .map(|(cf, info)| {
                let status = statuses.remove(&cf);
                self.view(cf, info, status, src.as_ref())
            })
            .collect())
    }

    /// The changefeeds of `keyspace` whose state passes the `?state=` filter (empty: normal,
    /// stopped, failed, warning, pending; `all`: everything), sorted by id.
    pub async fn list(
        &self,
        keyspace: &str,
        state_filter: &str,
    ) -> Result<Vec<ChangefeedView>, ServiceError> {
        Ok(self
            .scan(Some(keyspace))
            .await?
            .into_iter()
            .filter(|v| v.info.state.is_needed(state_filter))
            .collect())
    }

    /// Every changefeed of the cluster, in every keyspace.
    pub async fn list_all(&self) -> Result<Vec<ChangefeedView>, ServiceError> {
        self.scan(None).await
    }

    /// Reserve first, then verify (see the module docs). Returns the temporary service id.
    async fn ensure_start_ts_safety(
        &self,
        cf: &ChangefeedRef,
        tag: &str,
        ts: u64,
        check_gc_safe_point: bool,
    ) -> Result<String, ServiceError> {
        let sid = ensure_service_id(&self.gc.config().service_id, tag, cf);
        let min = self
            .pd
            .update_service_gc_safe_point(&sid, ENSURE_TTL_SECS, ts)
            .await
            .map_err(|e| {
                ServiceError::new(
                    ErrorCode::UpdateServiceSafepointFailed,
                    format!("updating service safepoint failed: {e}"),
                )
            })?;
        let verdict = async {
            if check_gc_safe_point && ts < min.min_safe_point.saturating_add(1) {
                return Err(ServiceError::start_ts_before_gc(ts, min.min_safe_point));
            }
            let physical = self
                .pd
                .get_gc_safe_point()
                .await
                .map_err(|e| ServiceError::pd("fail to get the GC safe point from pd", &e))?;
            if ts < physical {
                return Err(ServiceError::snapshot_lost(ts, physical));
            }
            Ok(())
        }
        .await;
        match verdict {
            Ok(()) => Ok(sid),
            Err(e) => {
                self.undo_ensure(&sid).await;
                Err(e)
            }
        }
    }

    async fn undo_ensure(&self, sid: &str) {
        if let Err(e) = self.pd.remove_service_gc_safe_point(sid).await {
            tracing::warn!(service = sid, error = %e, "cannot delete a temporary GC reservation");
        }
    }

    async fn tick_best_effort(&self) {
        if let Err(e) = self.gc_tick().await {
            tracing::warn!(error = %e, "GC safe point update failed");
        }
    }

    /// Creates a changefeed (TiCDC's order of checks: id, existence, sink URI, TSO and start/
    /// target ts, replica config, GC reservation, then one transaction writing info + status
    /// with a fresh epoch). Returns the new changefeed.
    pub async fn create(&self, req: CreateRequest) -> Result<ChangefeedView, ServiceError> {
        let id = if req.id.is_empty() {
            generate_changefeed_id()
        } else {
            req.id.clone()
        };
        let keyspace = if req.keyspace.is_empty() {
            DEFAULT_KEYSPACE
        } else {
            req.keyspace.as_str()
        };
        let cf = Self::changefeed_ref(keyspace, &id)?;
        if load_changefeed(self.store.as_ref(), &self.keys, &cf)
            .await?
            .is_some()
        {
            return Err(ServiceError::already_exists(&id));
        }
        validate_sink_uri(&req.sink_uri)?;
        let now = self.tso().await?;
        let start_ts = if req.start_ts == 0 { now } else { req.start_ts };
        if start_ts > now {
            return Err(ServiceError::invalid_param(format!(
                "invalid start-ts {start_ts}, larger than current tso {now}"
            )));
        }
        if req.target_ts > 0 && req.target_ts <= start_ts {
            return Err(ServiceError::target_before_start(req.target_ts, start_ts));
        }
        validate_replica_config(&req.replica_config)?;
        let check = req.replica_config.check_gc_safe_point();
        let sid = self
            .ensure_start_ts_safety(&cf, TAG_CREATING, start_ts, check)
            .await?;

        let gid = random_u128();
        let info = ChangeFeedInfo {
            changefeed_id: Some(ChangefeedIdJson {
                id: Gid {
                    low: gid as u64,
                    high: (gid >> 64) as u64,
                },
                display: DisplayName {
                    name: id.clone(),
                    keyspace: cf.keyspace.clone(),
                },
            }),
            upstream_id: self.pd.cluster_id(),
            sink_uri: req.sink_uri.clone(),
            create_time: rfc3339_from_ms(unix_ms_now()),
            start_ts,
            target_ts: req.target_ts,
            admin_job_type: AdminJobType::NONE,
            config: req.replica_config.clone(),
            state: FeedState::Normal,
            creator_version: self.cfg.creator_version.clone(),
            epoch: advance_epoch(now, 0)?,
            ..ChangeFeedInfo::default()
        };
        let status = ChangeFeedStatus::at(start_ts);
        match create_changefeed(self.store.as_ref(), &self.keys, &cf, &info, &status).await {
            Ok(_) => {}
            Err(e) => {
                self.undo_ensure(&sid).await;
                return Err(match e {
                    MetaError::AlreadyExists { .. } => ServiceError::already_exists(&id),
                    other => other.into(),
                });
            }
        }
        tracing::info!(changefeed = %cf, start_ts, "changefeed created");
        self.gc.defer_remove(sid, start_ts);
        self.tick_best_effort().await;
        self.get(&cf).await
    }

    /// Updates a stopped or failed changefeed (`ErrChangefeedUpdateRefused` otherwise).
    pub async fn update(
        &self,
        cf: &ChangefeedRef,
        req: UpdateRequest,
    ) -> Result<ChangefeedView, ServiceError> {
        if let Some(rc) = &req.replica_config {
            validate_replica_config(rc)?;
        }
        for attempt in 0..CAS_MAX_TRIES {
            if attempt > 0 {
                tokio::time::sleep(CAS_RETRY_DELAY).await;
            }
            let loaded = load_changefeed(self.store.as_ref(), &self.keys, cf)
                .await?
                .ok_or_else(|| ServiceError::not_exists(&cf.id))?;
            if !matches!(loaded.info.state, FeedState::Stopped | FeedState::Failed) {
                return Err(ServiceError::update_refused(
                    "can only update changefeed config when it is stopped or failed",
                ));
            }
            if req.start_ts != 0 {
                return Err(ServiceError::invalid_param("start_ts can not be updated"));
            }
            let mut info = loaded.info.clone();
            if req.target_ts != 0 {
                if req.target_ts <= info.start_ts {
                    return Err(ServiceError::update_refused(format!(
                        "can not update target_ts:{} less than start_ts:{}",
                        req.target_ts, info.start_ts
                    )));
                }
                info.target_ts = req.target_ts;
            }
            if let Some(rc) = &req.replica_config {
                info.config = rc.clone();
            }
            if !req.sink_uri.is_empty() {
                validate_sink_uri(&req.sink_uri)?;
                info.sink_uri = req.sink_uri.clone();
            }
            let info_key = self.keys.changefeed_info(cf);
            let value = info
                .to_json()
                .map_err(|e| ServiceError::internal(format!("cannot encode changefeed: {e}")))?;
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    info_key.as_bytes(),
                    CompareOp::Equal,
                    loaded.info_revision,
                )])
                .and_then([Op::put(info_key.as_bytes(), value)]);
            if self.store.txn(txn).await?.succeeded {
                tracing::info!(changefeed = %cf, "changefeed updated");
                return self.get(cf).await;
            }
        }
        Err(ServiceError::new(
            ErrorCode::MetaOpFailed,
            format!(
                "changefeed update failed due to unexpected etcd transaction failure: {} \
                 concurrent modifications",
                CAS_MAX_TRIES
            ),
        ))
    }

    /// Pauses a changefeed (state `stopped`, progress `Stopping`). The coordinator stops its
    /// dataflow when it sees the change.
    pub async fn pause(&self, cf: &ChangefeedRef) -> Result<(), ServiceError> {
        match pause_changefeed(self.store.as_ref(), &self.keys, cf).await {
            Ok(()) => {
                tracing::info!(changefeed = %cf, "changefeed paused");
                Ok(())
            }
            Err(MetaError::NotFound { .. }) => Err(ServiceError::not_exists(&cf.id)),
            Err(e) => Err(e.into()),
        }
    }

    /// Resumes a stopped, failed or finished changefeed, optionally from
    /// `overwrite_checkpoint_ts`. The resume point is GC-checked like a create (temporary
    /// `-resuming-` reservation, then the checks of the module docs) — also without an
    /// overwrite, unlike TiCDC, so a changefeed whose data GC already collected is refused here
    /// rather than failing right after it starts. Then epoch bump, state `normal`, error cleared
    /// and checkpoint written in one transaction. Returns the new epoch.
    pub async fn resume(
        &self,
        cf: &ChangefeedRef,
        overwrite_checkpoint_ts: Option<u64>,
    ) -> Result<u64, ServiceError> {
        let loaded = load_changefeed(self.store.as_ref(), &self.keys, cf)
            .await?
            .ok_or_else(|| ServiceError::not_exists(&cf.id))?;
        if !loaded.info.state.is_resumable() {
            return Err(ServiceError::update_refused(format!(
                "can only resume changefeed when it is stopped, failed, or finished, but current \
                 state is {}",
                loaded.info.state
            )));
        }
        let now = self.tso().await?;
        if let Some(o) = overwrite_checkpoint_ts
            && o > now
        {
            return Err(ServiceError::invalid_param(format!(
                "invalid checkpoint-ts {o}, larger than current tso {now}"
            )));
        }
        let resume_ts = overwrite_checkpoint_ts.unwrap_or_else(|| {
            loaded
                .status
                .as_ref()
                .map_or(loaded.info.start_ts, |s| s.checkpoint_ts)
        });
        let check = loaded.info.config.check_gc_safe_point();
        let sid = self
            .ensure_start_ts_safety(cf, TAG_RESUMING, resume_ts, check)
            .await?;
        match resume_changefeed(
            self.store.as_ref(),
            &self.keys,
            cf,
            now,
            overwrite_checkpoint_ts,
        )
        .await
        {
            Ok(epoch) => {
                tracing::info!(changefeed = %cf, epoch, resume_ts, "changefeed resumed");
                self.gc.defer_remove(sid, resume_ts);
                self.tick_best_effort().await;
                Ok(epoch)
            }
            Err(e) => {
                self.undo_ensure(&sid).await;
                Err(match e {
                    MetaError::NotFound { .. } => ServiceError::not_exists(&cf.id),
                    other => other.into(),
                })
            }
        }
    }

    /// Removes a changefeed: marks it `Removing`, then deletes its keys, then updates the GC
    /// reservation (deleting it if this was the last changefeed holding GC). Returns `false`
    /// if it did not exist (not an error: TiCDC answers 200).
    pub async fn remove(&self, cf: &ChangefeedRef) -> Result<bool, ServiceError> {
        if !remove_changefeed(self.store.as_ref(), &self.keys, cf).await? {
            return Ok(false);
        }
        delete_changefeed(self.store.as_ref(), &self.keys, cf).await?;
        tracing::info!(changefeed = %cf, "changefeed removed");
        self.tick_best_effort().await;
        Ok(true)
    }

    /// `/synced` for one changefeed at PD's current time (ticdc.md §2.9).
    pub async fn synced(&self, cf: &ChangefeedRef) -> Result<SyncedStatus, ServiceError> {
        let view = self.get(cf).await?;
        let now = self.tso().await?;
        let inputs = SyncedInputs {
            checkpoint_ts: view.checkpoint_ts(),
            last_synced_ts: view.watermarks.map_or(0, |w| w.last_synced_ts),
            puller_resolved_ts: view.watermarks.map_or(0, |w| w.puller_resolved_ts),
        };
        let now_ms = i64::try_from(Ts(now).physical_ms()).unwrap_or(i64::MAX);
        Ok(decide(
            &inputs,
            now_ms,
            SyncedConfig::from_replica_config(&view.info.config),
        ))
    }

    /// Tidal's diagnosis document for one changefeed: persisted state and epoch, runtime
    /// watermarks, and whatever the dataflow reports.
    pub async fn diagnosis(&self, cf: &ChangefeedRef) -> Result<Value, ServiceError> {
        let view = self.get(cf).await?;
        let runtime = self.watermark_source().diagnosis(&cf.id);
        Ok(json!({
            "id": cf.id,
            "keyspace": cf.keyspace,
            "state": view.info.state.as_str(),
            "epoch": view.info.epoch,
            "persisted_checkpoint_ts": view.status.checkpoint_ts,
            "checkpoint_ts": view.checkpoint_ts(),
            "resolved_ts": view.resolved_ts(),
            "watermarks": view.watermarks,
            "gc": {
                "service_id": self.gc.config().service_id,
                "pending_temporary": self.gc.pending_temporary(),
            },
            "runtime": runtime,
        }))
    }

    /// One GC round over every changefeed of the cluster (see [`GcManager::tick`]); the
    /// changefeeds GC made unrecoverable are marked `failed` with the GC error (fenced by the
    /// epoch read, so a concurrent owner change wins).
    pub async fn gc_tick(&self) -> Result<GcTickReport, ServiceError> {
        let views = self.list_all().await?;
        let now = self.tso().await?;
        let feeds: Vec<GcFeed> = views
            .iter()
            .map(|v| GcFeed {
                changefeed: v.changefeed.clone(),
                state: v.info.state,
                checkpoint_ts: v.status.checkpoint_ts,
                error_code: v.info.error.as_ref().map(|e| e.code.clone()),
            })
            .collect();
        let report = self.gc.tick(&feeds, now).await?;
        for f in &report.failures {
            let Some(v) = views.iter().find(|v| v.changefeed == f.changefeed) else {
                continue;
            };
            let err = RunningError {
                time: Some(rfc3339_from_ms(unix_ms_now())),
                addr: self.cfg.advertise_addr.clone(),
                code: f.error.code.as_str().to_string(),
                message: f.error.to_string(),
            };
            match update_state_fenced(
                self.store.as_ref(),
                &self.keys,
                &f.changefeed,
                v.info.epoch,
                FeedState::Failed,
                Some(Some(err)),
            )
            .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(changefeed = %f.changefeed, "GC failure not recorded: owner changed")
                }
                Err(e) => {
                    tracing::warn!(changefeed = %f.changefeed, error = %e, "cannot record GC failure")
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc3339_round_trip() {
        let ms = 1_701_357_251_015u64;
        let s = rfc3339_from_ms(ms);
        assert_eq!(s, "2023-11-30T15:14:11.015Z");
        assert_eq!(parse_rfc3339_ms(&s), Some(ms as i64));
        assert_eq!(
            parse_rfc3339_ms("2023-11-30T23:14:11.015123+08:00"),
            Some(ms as i64)
        );
        assert_eq!(
            parse_rfc3339_ms("2023-11-30T15:14:11Z"),
            Some(1_701_357_251_000)
        );
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("0001-01-01T00:00:00Z"),
            Some(-62_135_596_800_000)
        );
        for bad in [
            "",
            "2023-11-30",
            "2023-13-30T15:14:11Z",
            "2023-11-30T15:14:11",
            "x".repeat(40).as_str(),
            "2023-11-30T15:14:11.Z",
            "2023-11-30T15:14:11+0800",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = generate_changefeed_id();
        let b = generate_changefeed_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert!(validate_changefeed_id(&a).is_ok(), "{a}");
        assert_eq!(a.as_bytes()[14], b'4');
    }

    #[test]
    fn replica_config_merges_over_defaults() {
        let cfg = replica_config_from_api(Some(json!({
            "check_gc_safe_point": false,
            "filter": {"rules": ["test.*"]},
            "sync_point_interval": "5m",
            "synced_status": {"synced_check_interval": 60}
        })))
        .unwrap();
        assert_eq!(cfg.check_gc_safe_point, Some(false));
        assert_eq!(cfg.filter_rules(), vec!["test.*".to_string()]);
        assert_eq!(cfg.sync_point_interval, Some(300_000_000_000));
        // untouched defaults stay
        assert_eq!(cfg.memory_quota, Some(1 << 30));
        assert_eq!(
            cfg.extra.get("synced-status"),
            Some(&json!({"synced-check-interval": 60, "checkpoint-interval": 15}))
        );
        assert_eq!(
            replica_config_from_api(None).unwrap(),
            default_replica_config()
        );
        let e = replica_config_from_api(Some(json!({"memory_quota": "lots"}))).unwrap_err();
        assert_eq!(e.code, ErrorCode::ApiInvalidParam);
        let e = replica_config_from_api(Some(json!([1]))).unwrap_err();
        assert_eq!(e.code, ErrorCode::ApiInvalidParam);
        let e = replica_config_from_api(Some(json!({"performance_mode": "fast"}))).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidReplicaConfig);
    }

    #[test]
    fn sink_uri_errors_mask_password() {
        let e = validate_sink_uri("mysql://root:s3cret@127.0.0.1:3306/?bogus=1").unwrap_err();
        assert_eq!(e.code, ErrorCode::SinkUriInvalid);
        assert!(!e.message.contains("s3cret"), "{}", e.message);
        assert!(
            e.message
                .starts_with("sink uri invalid 'mysql://root:xxxxx@127.0.0.1:3306/")
        );
        assert_eq!(
            validate_sink_uri("").unwrap_err().message,
            "sink uri invalid ''"
        );
        assert!(validate_sink_uri("blackhole://").is_ok());
    }

    proptest! {
        #[test]
        fn rfc3339_parser_never_panics(s in ".{0,40}") {
            let _ = parse_rfc3339_ms(&s);
        }

        #[test]
        fn rfc3339_round_trips(ms in 0u64..(1u64 << 46)) {
            prop_assert_eq!(parse_rfc3339_ms(&rfc3339_from_ms(ms)), Some(ms as i64));
        }
    }
}
