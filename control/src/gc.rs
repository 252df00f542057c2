//! PD GC safe points: keeping TiKV from collecting versions a changefeed still needs, and
//! noticing when that failed.
//!
//! Two different things are called "GC safe point" (ticdc.md §7.2), and this module keeps them
//! apart:
//!
//! * the **physical** GC safe point ([`PdApi::get_gc_safe_point`]) is a fact about data:
//!   versions older than it may already be gone. Loss is decided against it, and only against
//!   it.
//! * **service** safe points are reservations with a TTL, one per service id. PD answers an
//!   update with the *minimum* over all live reservations, and silently refuses one below that
//!   minimum.
//!
//! The [`GcManager`] holds one cluster-wide reservation for all changefeeds, under the service
//! id `tidal-<cluster>` (TiCDC uses `ticdc-<cluster>-<etcd cluster id>`; ours is derived from
//! the Tidal cluster id only, so two Tidal clusters against one TiDB must use different cluster
//! ids). On every [`GcManager::tick`] it sets that reservation to `min(checkpoint) − 1` over the
//! changefeeds that hold GC (TiCDC's `NeedBlockGC`: normal, stopped, pending, warning, and
//! failed for a non-GC reason), with TTL `gc-ttl` (24 h by default), deletes it when no
//! changefeed needs it, and reports changefeeds GC made unrecoverable:
//!
//! * `ErrSnapshotLostByGC` when the physical safe point is above a changefeed's checkpoint (a
//!   restarted changefeed reads its schema snapshot *at* the checkpoint, so `physical ==
//!   checkpoint` is still fine — the same rule create/resume apply to a start ts);
//! * `ErrGCTTLExceeded` when Tidal's reservation is the one holding GC back (PD's minimum is
//!   exactly ours) and the changefeed's checkpoint lags PD time by more than `gc-ttl` — paused
//!   changefeeds included, so a forgotten paused changefeed freezes GC for at most `gc-ttl`.
//!
//! Failed changefeeds are excluded from the reservation in the same tick, so GC can move on at
//! once. Changefeed creation and resumption reserve their own short-lived safe points
//! (`<service id>-creating-<keyspace>_<id>`, TTL 1 h) *before* checking; those are queued here
//! with [`GcManager::defer_remove`] and deleted by the first tick whose accepted cluster
//! reservation covers them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tidal_ingest::pd::{PdClient, PdError, ServiceSafePoint};
use tidal_model::Ts;

use crate::meta::{ChangefeedRef, FeedState};
use crate::metrics::Metrics;
use crate::service::{ErrorCode, ServiceError};

/// Default TTL of the cluster reservation (`gc-ttl`, 24 h).
pub const DEFAULT_GC_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// TTL of the temporary reservations taken while creating or resuming a changefeed (1 h).
pub const ENSURE_TTL_SECS: i64 = 3600;
/// Tag of the temporary reservation of a changefeed being created.
pub const TAG_CREATING: &str = "-creating-";
/// Tag of the temporary reservation of a changefeed being resumed.
pub const TAG_RESUMING: &str = "-resuming-";

/// The PD calls the control plane makes, as a trait so tests can stand in a fake PD with a
/// controllable clock. [`PdClient`] implements it.
#[async_trait]
pub trait PdApi: Send + Sync + std::fmt::Debug {
    /// PD's cluster id (the changefeeds' `upstream_id`).
    fn cluster_id(&self) -> u64;
    /// A fresh TSO.
    async fn get_ts(&self) -> Result<u64, PdError>;
    /// The physical GC safe point.
    async fn get_gc_safe_point(&self) -> Result<u64, PdError>;
    /// Sets/refreshes a service safe point; the answer is the minimum over all services.
    async fn update_service_gc_safe_point(
        &self,
        service_id: &str,
        ttl_secs: i64,
        safe_point: u64,
    ) -> Result<ServiceSafePoint, PdError>;
    /// Deletes a service safe point; the answer is the minimum over the remaining services.
    async fn remove_service_gc_safe_point(
        &self,
        service_id: &str,
    ) -> Result<ServiceSafePoint, PdError>;
}

#[async_trait]
impl PdApi for PdClient {
    fn cluster_id(&self) -> u64 {
        PdClient::cluster_id(self)
    }
    async fn get_ts(&self) -> Result<u64, PdError> {
        PdClient::get_ts(self).await.map(|t| t.0)
    }
    async fn get_gc_safe_point(&self) -> Result<u64, PdError> {
        PdClient::get_gc_safe_point(self).await
    }
    async fn update_service_gc_safe_point(
        &self,
        service_id: &str,
        ttl_secs: i64,
        safe_point: u64,
    ) -> Result<ServiceSafePoint, PdError> {
        PdClient::update_service_gc_safe_point(self, service_id, ttl_secs, safe_point).await
    }
    async fn remove_service_gc_safe_point(
        &self,
        service_id: &str,
    ) -> Result<ServiceSafePoint, PdError> {
        PdClient::remove_service_gc_safe_point(self, service_id).await
    }
}

/// The cluster service id of a Tidal cluster: `tidal-<cluster>`.
pub fn cluster_service_id(cluster: &str) -> String {
    format!("tidal-{cluster}")
}

/// The temporary service id of one create/resume: `<cluster service id><tag><keyspace>_<id>`.
pub fn ensure_service_id(cluster_service_id: &str, tag: &str, cf: &ChangefeedRef) -> String {
    format!("{cluster_service_id}{tag}{}_{}", cf.keyspace, cf.id)
}

/// Settings of the [`GcManager`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcConfig {
    /// The cluster reservation's service id (see [`cluster_service_id`]).
    pub service_id: String,
    /// TTL of the cluster reservation, and the longest a changefeed may hold GC back.
    pub gc_ttl: Duration,
}

impl GcConfig {
    /// The defaults for a cluster id: service id `tidal-<cluster>`, `gc-ttl` 24 h.
    pub fn for_cluster(cluster: &str) -> Self {
        GcConfig {
            service_id: cluster_service_id(cluster),
            gc_ttl: DEFAULT_GC_TTL,
        }
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.gc_ttl.as_secs())
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

/// What the GC manager needs to know about one changefeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcFeed {
    /// The changefeed.
    pub changefeed: ChangefeedRef,
    /// Its persisted state.
    pub state: FeedState,
    /// Its last saved checkpoint.
    pub checkpoint_ts: u64,
    /// The code of its recorded error, if any (decides "failed by GC").
    pub error_code: Option<String>,
}

impl GcFeed {
    /// TiCDC's `NeedBlockGC`: whether this changefeed's checkpoint must be protected from GC.
    pub fn holds_gc(&self) -> bool {
        match self.state {
            FeedState::Normal | FeedState::Stopped | FeedState::Pending | FeedState::Warning => {
                true
            }
            FeedState::Failed => !self
                .error_code
                .as_deref()
                .and_then(ErrorCode::parse)
                .is_some_and(ErrorCode::is_gc_failure),
            FeedState::Finished | FeedState::Removed | FeedState::Uninitialized => false,
        }
    }
}

/// A changefeed GC made unrecoverable; the caller marks it failed with this error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcFailure {
    /// The changefeed.
    pub changefeed: ChangefeedRef,
    /// `ErrSnapshotLostByGC` or `ErrGCTTLExceeded`, in TiCDC's words.
    pub error: ServiceError,
}

/// The outcome of one [`GcManager::tick`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcTickReport {
    /// The cluster reservation set in this tick (`min(checkpoint) − 1`); `None` if it was
    /// deleted because no changefeed holds GC.
    pub service_safe_point: Option<u64>,
    /// PD's minimum service safe point as returned by the last update/delete.
    pub min_service_safe_point: u64,
    /// The physical GC safe point read in this tick.
    pub physical_safe_point: u64,
    /// Whether Tidal's reservation is the minimum (Tidal is what holds GC back).
    pub is_blocker: bool,
    /// Changefeeds to mark failed.
    pub failures: Vec<GcFailure>,
    /// Temporary create/resume reservations deleted in this tick.
    pub removed_temporary: Vec<String>,
}

#[derive(Debug, Clone)]
struct Pending {
    service_id: String,
    ts: u64,
    queued: Instant,
}

/// Keeps the cluster's PD service safe point at `min(checkpoint) − 1` (see the module docs).
#[derive(Debug)]
pub struct GcManager {
    pd: Arc<dyn PdApi>,
    cfg: GcConfig,
    metrics: Option<Metrics>,
    pending: Mutex<Vec<Pending>>,
    last: Mutex<GcTickReport>,
}

fn pd_err(what: &str, e: &PdError) -> ServiceError {
    ServiceError::new(
        ErrorCode::UpdateServiceSafepointFailed,
        format!("updating service safepoint failed: {what}: {e}"),
    )
}

impl GcManager {
    /// A manager for `cfg.service_id`, reporting to `metrics` if given.
    pub fn new(pd: Arc<dyn PdApi>, cfg: GcConfig, metrics: Option<Metrics>) -> Self {
        GcManager {
            pd,
            cfg,
            metrics,
            pending: Mutex::new(Vec::new()),
            last: Mutex::new(GcTickReport::default()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GcConfig {
        &self.cfg
    }

    /// The report of the last tick (default before the first).
    pub fn last_report(&self) -> GcTickReport {
        self.last.lock().clone()
    }

    /// Queues a temporary create/resume reservation at `ts` for deletion once a tick's accepted
    /// cluster reservation is at or below `ts` (or no changefeed holds GC any more).
    pub fn defer_remove(&self, service_id: String, ts: u64) {
        let mut pending = self.pending.lock();
        pending.retain(|p| p.service_id != service_id);
        pending.push(Pending {
            service_id,
            ts,
            queued: Instant::now(),
        });
    }

    /// Service ids still queued by [`GcManager::defer_remove`].
    pub fn pending_temporary(&self) -> Vec<String> {
        self.pending
            .lock()
            .iter()
            .map(|p| p.service_id.clone())
            .collect()
    }

    /// Deletes the cluster reservation (`DELETE /api/v2/unsafe/service_gc_safepoint`).
    pub async fn remove_cluster_safe_point(&self) -> Result<ServiceSafePoint, ServiceError> {
        self.pd
            .remove_service_gc_safe_point(&self.cfg.service_id)
            .await
            .map_err(|e| pd_err("delete the cluster service safe point", &e))
    }

    /// One round: update (or delete) the cluster reservation from `feeds` and report the
    /// changefeeds GC made unrecoverable. `pd_now` is a PD timestamp of "now".
    pub async fn tick(&self, feeds: &[GcFeed], pd_now: u64) -> Result<GcTickReport, ServiceError> {
        let physical = self
            .pd
            .get_gc_safe_point()
            .await
            .map_err(|e| ServiceError::pd("fail to get the GC safe point from pd", &e))?;
        let mut report = GcTickReport {
            physical_safe_point: physical,
            ..GcTickReport::default()
        };
        // Loss first: it depends only on the physical safe point.
        let mut holders: Vec<&GcFeed> = Vec::new();
        for f in feeds.iter().filter(|f| f.holds_gc()) {
            if physical > f.checkpoint_ts {
                report.failures.push(GcFailure {
                    changefeed: f.changefeed.clone(),
                    error: ServiceError::snapshot_lost(f.checkpoint_ts, physical),
                });
            } else {
                holders.push(f);
            }
        }
        self.reserve(&holders, &mut report).await?;
        if report.is_blocker {
            let ttl_ms = u64::try_from(self.cfg.gc_ttl.as_millis()).unwrap_or(u64::MAX);
            let now_ms = Ts(pd_now).physical_ms();
            let before = holders.len();
            holders.retain(|f| {
                let upper = Ts(f.checkpoint_ts.saturating_sub(1)).physical_ms();
                if now_ms.saturating_sub(upper) > ttl_ms {
                    report.failures.push(GcFailure {
                        changefeed: f.changefeed.clone(),
                        error: ServiceError::gc_ttl_exceeded(f.checkpoint_ts, &f.changefeed.id),
                    });
                    false
                } else {
                    true
                }
            });
            if holders.len() != before {
                // Release what the failed changefeeds held, now.
                self.reserve(&holders, &mut report).await?;
            }
        }
        self.clean_temporary(&mut report).await;
        if let Some(m) = &self.metrics {
            m.set_gc_safe_points(
                Ts(report.min_service_safe_point).physical_ms(),
                report.service_safe_point.map_or(0, |s| Ts(s).physical_ms()),
            );
        }
        for f in &report.failures {
            tracing::warn!(changefeed = %f.changefeed, error = %f.error, "changefeed lost to GC");
        }
        *self.last.lock() = report.clone();
        Ok(report)
    }

    async fn reserve(
        &self,
        holders: &[&GcFeed],
        report: &mut GcTickReport,
    ) -> Result<(), ServiceError> {
        match holders.iter().map(|f| f.checkpoint_ts).min() {
            None => {
                let min = self
                    .pd
                    .remove_service_gc_safe_point(&self.cfg.service_id)
                    .await
                    .map_err(|e| pd_err("delete the cluster service safe point", &e))?;
                report.service_safe_point = None;
                report.min_service_safe_point = min.min_safe_point;
                report.is_blocker = false;
            }
            Some(min_ckpt) => {
                // A restarting changefeed may read at `checkpoint - 1`: reserve that.
                let target = min_ckpt.saturating_sub(1);
                let min = self
                    .pd
                    .update_service_gc_safe_point(&self.cfg.service_id, self.cfg.ttl_secs(), target)
                    .await
                    .map_err(|e| pd_err("update the cluster service safe point", &e))?;
                report.service_safe_point = Some(target);
                report.min_service_safe_point = min.min_safe_point;
                report.is_blocker = min.min_safe_point == target;
                if min.min_safe_point > target {
                    tracing::warn!(
                        service = %self.cfg.service_id,
                        wanted = target,
                        min = min.min_safe_point,
                        "PD refused the GC reservation: the minimum service safe point is already \
                         above the oldest checkpoint"
                    );
                }
            }
        }
        Ok(())
    }

    async fn clean_temporary(&self, report: &mut GcTickReport) {
        let covered_at = match report.service_safe_point {
            // Accepted (PD's minimum is not above it): it protects everything at or above it.
            Some(sp) if report.min_service_safe_point <= sp => Some(sp),
            Some(_) => None,
            None => Some(0),
        };
        let ttl = Duration::from_secs(ENSURE_TTL_SECS.unsigned_abs());
        let due: Vec<Pending> = {
            let mut pending = self.pending.lock();
            let (due, keep): (Vec<Pending>, Vec<Pending>) = pending
                .drain(..)
                .partition(|p| covered_at.is_some_and(|c| c <= p.ts) || p.queued.elapsed() > ttl);
            *pending = keep;
            due
        };
        for p in due {
            match self.pd.remove_service_gc_safe_point(&p.service_id).await {
                Ok(_) => report.removed_temporary.push(p.service_id),
                Err(e) => {
                    tracing::warn!(service = %p.service_id, error = %e,
                        "cannot delete a temporary GC reservation; will retry");
                    self.pending.lock().push(p);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(id: &str, state: FeedState, ckpt: u64, code: Option<&str>) -> GcFeed {
        GcFeed {
            changefeed: ChangefeedRef::new(id).unwrap(),
            state,
            checkpoint_ts: ckpt,
            error_code: code.map(str::to_string),
        }
    }

    #[test]
    fn need_block_gc() {
        for s in [
            FeedState::Normal,
            FeedState::Stopped,
            FeedState::Pending,
            FeedState::Warning,
        ] {
            assert!(feed("a", s, 1, None).holds_gc(), "{s}");
        }
        for s in [
            FeedState::Finished,
            FeedState::Removed,
            FeedState::Uninitialized,
        ] {
            assert!(!feed("a", s, 1, None).holds_gc(), "{s}");
        }
        assert!(feed("a", FeedState::Failed, 1, None).holds_gc());
        assert!(feed("a", FeedState::Failed, 1, Some("CDC:ErrSinkURIInvalid")).holds_gc());
        assert!(!feed("a", FeedState::Failed, 1, Some("CDC:ErrSnapshotLostByGC")).holds_gc());
        assert!(!feed("a", FeedState::Failed, 1, Some("CDC:ErrGCTTLExceeded")).holds_gc());
        assert!(!feed("a", FeedState::Failed, 1, Some("CDC:ErrStartTsBeforeGC")).holds_gc());
    }

    /// PD's service safe point rules in miniature (no TTL expiry), plus a physical safe point.
    #[derive(Debug, Default)]
    struct FakePd {
        services: Mutex<std::collections::BTreeMap<String, u64>>,
        physical: std::sync::atomic::AtomicU64,
    }

    impl FakePd {
        fn min(&self) -> ServiceSafePoint {
            let s = self.services.lock();
            let (id, sp) = s
                .iter()
                .min_by_key(|(_, v)| **v)
                .map(|(k, v)| (k.clone(), *v))
                .unwrap_or(("gc_worker".into(), 0));
            ServiceSafePoint {
                service_id: id,
                ttl: 100,
                min_safe_point: sp,
            }
        }
    }

    #[async_trait]
    impl PdApi for FakePd {
        fn cluster_id(&self) -> u64 {
            1
        }
        async fn get_ts(&self) -> Result<u64, PdError> {
            Ok(0)
        }
        async fn get_gc_safe_point(&self) -> Result<u64, PdError> {
            Ok(self.physical.load(std::sync::atomic::Ordering::SeqCst))
        }
        async fn update_service_gc_safe_point(
            &self,
            service_id: &str,
            ttl_secs: i64,
            safe_point: u64,
        ) -> Result<ServiceSafePoint, PdError> {
            if ttl_secs <= 0 {
                self.services.lock().remove(service_id);
            } else if safe_point >= self.min().min_safe_point || self.services.lock().is_empty() {
                self.services
                    .lock()
                    .insert(service_id.to_string(), safe_point);
            }
            Ok(self.min())
        }
        async fn remove_service_gc_safe_point(
            &self,
            service_id: &str,
        ) -> Result<ServiceSafePoint, PdError> {
            self.update_service_gc_safe_point(service_id, 0, u64::MAX)
                .await
        }
    }

    fn ts_s(secs: u64) -> u64 {
        Ts::from_unix_millis(secs * 1000).0
    }

    #[tokio::test]
    async fn tick_min_over_holders_blocker_and_temporary_cleanup() {
        let pd = Arc::new(FakePd::default());
        let metrics = Metrics::new();
        let gc = GcManager::new(
            pd.clone(),
            GcConfig {
                service_id: "tidal-t".into(),
                gc_ttl: Duration::from_secs(100),
            },
            Some(metrics.clone()),
        );
        gc.defer_remove("tidal-t-creating-default_a".into(), ts_s(1_000));
        gc.defer_remove("tidal-t-creating-default_z".into(), ts_s(10));
        pd.services.lock().insert("gc_worker".into(), ts_s(800));
        pd.services
            .lock()
            .insert("tidal-t-creating-default_a".into(), ts_s(1_000));
        let feeds = vec![
            feed("a", FeedState::Normal, ts_s(1_000), None),
            feed(
                "f",
                FeedState::Failed,
                ts_s(900),
                Some("CDC:ErrSinkURIInvalid"),
            ),
            feed(
                "g",
                FeedState::Failed,
                ts_s(10),
                Some("CDC:ErrGCTTLExceeded"),
            ),
            feed("d", FeedState::Finished, ts_s(20), None),
        ];
        let r = gc.tick(&feeds, ts_s(950)).await.unwrap();
        // min over a and f (g failed by GC, d finished)
        assert_eq!(r.service_safe_point, Some(ts_s(900) - 1));
        assert_eq!(r.min_service_safe_point, ts_s(800));
        assert!(!r.is_blocker);
        assert!(r.failures.is_empty());
        // a's temporary reservation is covered, z's (at 10 s) is not.
        assert_eq!(
            r.removed_temporary,
            vec!["tidal-t-creating-default_a".to_string()]
        );
        assert_eq!(
            gc.pending_temporary(),
            vec!["tidal-t-creating-default_z".to_string()]
        );
        assert!(
            !pd.services
                .lock()
                .contains_key("tidal-t-creating-default_a")
        );
        assert!(
            metrics
                .encode()
                .contains(&format!("ticdc_gc_cdc_gc_safepoint {}", 900_000 - 1))
        );

        // Not the blocker: a lag beyond gc-ttl fails nobody.
        let r = gc.tick(&feeds, ts_s(1_090)).await.unwrap();
        assert!(r.failures.is_empty());
        // TiDB's GC worker moves past us: now we block GC, and f's checkpoint (900 s) lags
        // PD time (1090 s) by 190 s > gc-ttl 100 s (a: 90 s, fine).
        pd.services.lock().insert("gc_worker".into(), ts_s(2_000));
        let r = gc.tick(&feeds, ts_s(1_090)).await.unwrap();
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].changefeed.id, "f");
        assert_eq!(r.failures[0].error.code, ErrorCode::GcTtlExceeded);
        // released at once, down to a
        assert_eq!(r.service_safe_point, Some(ts_s(1_000) - 1));
        assert_eq!(r.min_service_safe_point, ts_s(1_000) - 1);

        // Physical safe point above a's checkpoint: lost; nothing left holds GC → deleted.
        pd.physical
            .store(ts_s(1_001), std::sync::atomic::Ordering::SeqCst);
        let only_a = vec![feed("a", FeedState::Normal, ts_s(1_000), None)];
        let r = gc.tick(&only_a, ts_s(1_002)).await.unwrap();
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].error.code, ErrorCode::SnapshotLostByGc);
        assert_eq!(r.service_safe_point, None);
        assert!(!pd.services.lock().contains_key("tidal-t"));
        // with no holder, every queued temporary reservation goes too
        assert!(gc.pending_temporary().is_empty());
        // physical == checkpoint is still intact
        let at = vec![feed("b", FeedState::Stopped, ts_s(1_001), None)];
        let r = gc.tick(&at, ts_s(1_002)).await.unwrap();
        assert!(r.failures.is_empty());
        assert_eq!(r.service_safe_point, Some(ts_s(1_001) - 1));
        // (PD refused it: the GC worker's 2000 s is the minimum; only physical loss counts)
        assert_eq!(r.min_service_safe_point, ts_s(2_000));
        assert!(!r.is_blocker);
    }

    #[test]
    fn service_ids() {
        assert_eq!(cluster_service_id("default"), "tidal-default");
        let cf = ChangefeedRef::new("cf-1").unwrap();
        assert_eq!(
            ensure_service_id("tidal-default", TAG_CREATING, &cf),
            "tidal-default-creating-default_cf-1"
        );
        assert_eq!(GcConfig::for_cluster("c").ttl_secs(), 86_400);
    }
}
