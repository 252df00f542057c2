//! The Placement Driver: the `pdpb.PD` gRPC service over the sim's TSO, region table and GC
//! state.
//!
//! A client written against this must work against a real PD, so the observable rules are PD's:
//!
//! * Only the leader endpoint serves; another endpoint answers gRPC `Unavailable "not leader"`
//!   except for `GetMembers`, which every endpoint answers (that is how clients find the leader).
//!   With [`PdConfig::endpoints`] = 2 there are two endpoints and the leadership can be moved
//!   ([`PdState::set_leader`]) to exercise client failover.
//! * Every request except `GetMembers` must carry the cluster id: a mismatch is
//!   `FailedPrecondition "mismatch cluster id, need X but got Y"`.
//! * `Tso` answers each request of `count` N with the LARGEST timestamp of a batch of N, split
//!   into physical and logical; an error ends the stream.
//! * Service GC safe points follow PD's `SafePointManager`: TTL ≤ 0 removes the caller's entry;
//!   a safe point below the current minimum is silently not stored; otherwise it is stored with
//!   expiry now + TTL (never, if that would overflow); expired entries are dropped when the
//!   minimum is computed; the implicit `gc_worker` entry (never expiring) exists from the first
//!   call on, at 0; and the response always describes the MINIMUM entry (its id, remaining TTL
//!   and safe point), not the caller's.
//! * `UpdateGCSafePoint` only moves forward and answers the resulting safe point. The sim then
//!   compacts the MVCC store to it at once (TiKV's GC worker would do so shortly after).
//! * An injected outage ([`PdState::set_unavailable_for`]) makes every call fail with
//!   `Unavailable` until it ends.
//!
//! Methods the proto declares but the sim has no use for do not exist in this subset; anything
//! else a client calls is answered `Unimplemented` by tonic.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use parking_lot::{Mutex, RwLock};
use tidal_proto::pdpb::{self, pd_server::Pd};
use tonic::{Request, Response, Status, Streaming};

use crate::mvcc::MvccStore;
use crate::region::{Region, RegionManager};
use crate::tso::{self, Tso};

/// The service id of TiDB's GC worker in PD's service safe point table.
pub const GC_WORKER_SERVICE_ID: &[u8] = b"gc_worker";

/// PD topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdConfig {
    /// Number of PD endpoints (1 or 2); endpoint 0 leads at start.
    pub endpoints: usize,
}

impl Default for PdConfig {
    fn default() -> Self {
        Self { endpoints: 1 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ServiceSafePoint {
    safe_point: u64,
    /// Unix seconds; `i64::MAX` = never.
    expired_at: i64,
}

#[derive(Debug, Default)]
struct GcState {
    safe_point: u64,
    services: HashMap<Vec<u8>, ServiceSafePoint>,
}

/// The minimum service safe point as PD reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinServiceSafePoint {
    /// Owner of the minimum.
    pub service_id: Vec<u8>,
    /// Remaining TTL in seconds (huge for never-expiring entries).
    pub ttl: i64,
    /// The minimum safe point.
    pub safe_point: u64,
}

impl GcState {
    /// PD `LoadMinServiceGCSafePoint`: drops expired entries, makes sure `gc_worker` exists,
    /// returns the minimum (ties broken by id, for determinism).
    fn load_min(&mut self, now: i64) -> (Vec<u8>, ServiceSafePoint) {
        self.services.retain(|_, s| s.expired_at >= now);
        let min = self
            .services
            .iter()
            .min_by(|a, b| {
                a.1.safe_point
                    .cmp(&b.1.safe_point)
                    .then_with(|| a.0.cmp(b.0))
            })
            .map(|(id, s)| (id.clone(), s.clone()));
        let has_worker = self.services.contains_key(GC_WORKER_SERVICE_ID);
        match min {
            Some(m) if has_worker => m,
            other => {
                let sp = other.map(|(_, s)| s.safe_point).unwrap_or(0);
                let worker = ServiceSafePoint {
                    safe_point: sp,
                    expired_at: i64::MAX,
                };
                self.services
                    .insert(GC_WORKER_SERVICE_ID.to_vec(), worker.clone());
                (GC_WORKER_SERVICE_ID.to_vec(), worker)
            }
        }
    }

    fn update_service(
        &mut self,
        id: &[u8],
        ttl: i64,
        safe_point: u64,
        now: i64,
    ) -> MinServiceSafePoint {
        if ttl <= 0 {
            self.services.remove(id);
        }
        let mut min = self.load_min(now);
        if ttl > 0 && safe_point >= min.1.safe_point {
            let expired_at = if i64::MAX - now <= ttl {
                i64::MAX
            } else {
                now + ttl
            };
            self.services.insert(
                id.to_vec(),
                ServiceSafePoint {
                    safe_point,
                    expired_at,
                },
            );
            if id == min.0.as_slice() {
                min = self.load_min(now);
            }
        }
        MinServiceSafePoint {
            service_id: min.0,
            ttl: min.1.expired_at.saturating_sub(now),
            safe_point: min.1.safe_point,
        }
    }
}

struct PdInner {
    cluster_id: u64,
    tso: Tso,
    regions: RegionManager,
    store: MvccStore,
    gc: Mutex<GcState>,
    unavailable_until: Mutex<Option<Instant>>,
    leader: AtomicUsize,
    urls: RwLock<Vec<String>>,
    member_ids: Vec<u64>,
    clock_offset_secs: AtomicI64,
}

/// Shared PD state: one per cluster, served by one [`PdService`] per endpoint (cheap to clone).
#[derive(Clone)]
pub struct PdState {
    inner: Arc<PdInner>,
}

impl std::fmt::Debug for PdState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdState")
            .field("cluster_id", &self.inner.cluster_id)
            .field("leader", &self.leader())
            .field("urls", &*self.inner.urls.read())
            .finish_non_exhaustive()
    }
}

fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl PdState {
    /// PD state for a cluster; endpoint URLs are filled in by [`PdState::set_urls`] once bound.
    pub fn new(
        cluster_id: u64,
        tso: Tso,
        regions: RegionManager,
        store: MvccStore,
        cfg: &PdConfig,
    ) -> Self {
        let n = cfg.endpoints.clamp(1, 2);
        Self {
            inner: Arc::new(PdInner {
                cluster_id,
                tso,
                regions,
                store,
                gc: Mutex::new(GcState::default()),
                unavailable_until: Mutex::new(None),
                leader: AtomicUsize::new(0),
                urls: RwLock::new(vec![String::new(); n]),
                member_ids: (0..n as u64)
                    .map(|i| cluster_id.wrapping_add(1000 + i))
                    .collect(),
                clock_offset_secs: AtomicI64::new(0),
            }),
        }
    }

    /// The gRPC service of endpoint `index`.
    pub fn service(&self, index: usize) -> PdService {
        PdService {
            state: self.clone(),
            index,
        }
    }

    /// Number of endpoints.
    pub fn endpoints(&self) -> usize {
        self.inner.member_ids.len()
    }

    /// Records the client URLs (`http://host:port`) of the endpoints.
    pub fn set_urls(&self, urls: Vec<String>) {
        *self.inner.urls.write() = urls;
    }

    /// The endpoints' client URLs.
    pub fn urls(&self) -> Vec<String> {
        self.inner.urls.read().clone()
    }

    /// Index of the leading endpoint.
    pub fn leader(&self) -> usize {
        self.inner.leader.load(Ordering::Acquire)
    }

    /// Moves PD leadership to endpoint `index` (ignored if out of range).
    pub fn set_leader(&self, index: usize) {
        if index < self.endpoints() {
            self.inner.leader.store(index, Ordering::Release);
        }
    }

    /// Makes every PD call fail with `Unavailable` for `d` (zero ends an outage).
    pub fn set_unavailable_for(&self, d: Duration) {
        *self.inner.unavailable_until.lock() = if d.is_zero() {
            None
        } else {
            Some(Instant::now() + d)
        };
    }

    /// Moves PD's notion of "now" (for service safe point TTLs) by `secs`; a test hook.
    pub fn advance_clock(&self, secs: i64) {
        self.inner
            .clock_offset_secs
            .fetch_add(secs, Ordering::AcqRel);
    }

    fn now(&self) -> i64 {
        unix_secs().saturating_add(self.inner.clock_offset_secs.load(Ordering::Acquire))
    }

    /// The cluster GC safe point.
    pub fn gc_safe_point(&self) -> u64 {
        self.inner.gc.lock().safe_point
    }

    /// Advances the cluster GC safe point (never backwards), compacts the store to it, and
    /// returns the resulting safe point.
    pub fn update_gc_safe_point(&self, safe_point: u64) -> u64 {
        let new = {
            let mut gc = self.inner.gc.lock();
            gc.safe_point = gc.safe_point.max(safe_point);
            gc.safe_point
        };
        self.inner.store.gc(new);
        new
    }

    /// PD's `UpdateServiceGCSafePoint` (see the module docs for the rules).
    pub fn update_service_safe_point(
        &self,
        service_id: &[u8],
        ttl: i64,
        safe_point: u64,
    ) -> MinServiceSafePoint {
        let now = self.now();
        self.inner
            .gc
            .lock()
            .update_service(service_id, ttl, safe_point, now)
    }

    /// Runs a TiDB-style GC round to `target`: the `gc_worker` service safe point moves to
    /// `target`, the GC safe point becomes the minimum over all services (so a service like
    /// TiCDC holds it back), and the store is compacted. Returns the resulting GC safe point.
    pub fn run_gc(&self, target: u64) -> u64 {
        let min = self.update_service_safe_point(GC_WORKER_SERVICE_ID, i64::MAX, target);
        self.update_gc_safe_point(min.safe_point.min(target))
    }

    fn header(&self) -> Option<pdpb::ResponseHeader> {
        Some(pdpb::ResponseHeader {
            cluster_id: self.inner.cluster_id,
            error: None,
        })
    }

    fn error_header(&self, kind: pdpb::ErrorType, message: &str) -> Option<pdpb::ResponseHeader> {
        Some(pdpb::ResponseHeader {
            cluster_id: self.inner.cluster_id,
            error: Some(pdpb::Error {
                r#type: kind as i32,
                message: message.to_owned(),
            }),
        })
    }

    fn check_available(&self) -> Result<(), Status> {
        let mut until = self.inner.unavailable_until.lock();
        match *until {
            Some(t) if Instant::now() < t => Err(Status::unavailable(
                "PD server is unavailable (injected outage)",
            )),
            Some(_) => {
                *until = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// PD's `validateRequest`: leader, then cluster id.
    fn validate(&self, index: usize, header: Option<&pdpb::RequestHeader>) -> Result<(), Status> {
        self.check_available()?;
        if index != self.leader() {
            return Err(Status::unavailable("not leader"));
        }
        let got = header.map(|h| h.cluster_id).unwrap_or(0);
        if got != self.inner.cluster_id {
            return Err(Status::failed_precondition(format!(
                "mismatch cluster id, need {} but got {}",
                self.inner.cluster_id, got
            )));
        }
        Ok(())
    }

    fn member(&self, index: usize) -> pdpb::Member {
        let urls = self.inner.urls.read();
        let url = urls.get(index).cloned().unwrap_or_default();
        pdpb::Member {
            name: format!("pd-{index}"),
            member_id: self.inner.member_ids.get(index).copied().unwrap_or(0),
            peer_urls: vec![url.clone()],
            client_urls: vec![url],
            binary_version: "8.5.0".to_owned(),
            ..Default::default()
        }
    }

    fn tso_response(
        &self,
        index: usize,
        req: &pdpb::TsoRequest,
    ) -> Result<pdpb::TsoResponse, Status> {
        self.validate(index, req.header.as_ref())?;
        if req.count == 0 {
            return Err(Status::unknown("tso count should be positive"));
        }
        if req.count > tso::MAX_BATCH {
            return Err(Status::unknown(format!(
                "tso count {} exceeds {}",
                req.count,
                tso::MAX_BATCH
            )));
        }
        let ts = self.inner.tso.next_batch(req.count);
        let (physical, logical) = tso::split(ts);
        Ok(pdpb::TsoResponse {
            header: self.header(),
            count: req.count,
            timestamp: Some(pdpb::Timestamp {
                physical: i64::try_from(physical).unwrap_or(i64::MAX),
                logical: i64::try_from(logical).unwrap_or(0),
                suffix_bits: 0,
            }),
        })
    }

    fn region_response(&self, region: Option<Region>) -> pdpb::GetRegionResponse {
        match region {
            Some(r) => pdpb::GetRegionResponse {
                header: self.header(),
                leader: r.leader_peer().map(|p| p.to_metapb()),
                region: Some(r.to_metapb()),
                ..Default::default()
            },
            None => pdpb::GetRegionResponse {
                header: self.error_header(pdpb::ErrorType::RegionNotFound, "region not found"),
                ..Default::default()
            },
        }
    }
}

/// One PD endpoint's gRPC service.
#[derive(Clone, Debug)]
pub struct PdService {
    state: PdState,
    index: usize,
}

type TsoStream = Pin<Box<dyn Stream<Item = Result<pdpb::TsoResponse, Status>> + Send + 'static>>;

fn limit_of(limit: i32) -> usize {
    usize::try_from(limit).unwrap_or(0)
}

fn pd_region(r: &Region) -> pdpb::Region {
    pdpb::Region {
        region: Some(r.to_metapb()),
        leader: Some(r.leader_peer().map(|p| p.to_metapb()).unwrap_or_default()),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Pd for PdService {
    async fn get_members(
        &self,
        _request: Request<pdpb::GetMembersRequest>,
    ) -> Result<Response<pdpb::GetMembersResponse>, Status> {
        let st = &self.state;
        st.check_available()?;
        let members: Vec<pdpb::Member> = (0..st.endpoints()).map(|i| st.member(i)).collect();
        let leader = st.member(st.leader());
        Ok(Response::new(pdpb::GetMembersResponse {
            header: st.header(),
            members,
            leader: Some(leader.clone()),
            etcd_leader: Some(leader),
            ..Default::default()
        }))
    }

    type TsoStream = TsoStream;

    async fn tso(
        &self,
        request: Request<Streaming<pdpb::TsoRequest>>,
    ) -> Result<Response<TsoStream>, Status> {
        let inbound = request.into_inner();
        let state = self.state.clone();
        let index = self.index;
        let out = futures::stream::unfold(Some(inbound), move |inbound| {
            let state = state.clone();
            async move {
                let mut inbound = inbound?;
                match inbound.next().await {
                    None => None,
                    Some(Err(e)) => Some((Err(e), None)),
                    Some(Ok(req)) => match state.tso_response(index, &req) {
                        Ok(resp) => Some((Ok(resp), Some(inbound))),
                        Err(e) => Some((Err(e), None)),
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_store(
        &self,
        request: Request<pdpb::GetStoreRequest>,
    ) -> Result<Response<pdpb::GetStoreResponse>, Status> {
        let req = request.into_inner();
        self.state.validate(self.index, req.header.as_ref())?;
        let resp = match self.state.inner.regions.store(req.store_id) {
            Some(s) => pdpb::GetStoreResponse {
                header: self.state.header(),
                store: Some(s.to_metapb()),
            },
            None => pdpb::GetStoreResponse {
                header: self.state.error_header(
                    pdpb::ErrorType::Unknown,
                    &format!("invalid store ID {}, not found", req.store_id),
                ),
                store: None,
            },
        };
        Ok(Response::new(resp))
    }

    async fn get_all_stores(
        &self,
        request: Request<pdpb::GetAllStoresRequest>,
    ) -> Result<Response<pdpb::GetAllStoresResponse>, Status> {
        let req = request.into_inner();
        self.state.validate(self.index, req.header.as_ref())?;
        let stores = self
            .state
            .inner
            .regions
            .stores()
            .iter()
            .map(|s| s.to_metapb())
            .collect();
        Ok(Response::new(pdpb::GetAllStoresResponse {
            header: self.state.header(),
            stores,
        }))
    }

    async fn get_region(
        &self,
        request: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let req = request.into_inner();
        self.state.validate(self.index, req.header.as_ref())?;
        let region = self.state.inner.regions.locate(&req.region_key);
        Ok(Response::new(self.state.region_response(Some(region))))
    }

    async fn get_prev_region(
        &self,
        request: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let req = request.into_inner();
        self.state.validate(self.index, req.header.as_ref())?;
        let region = self.state.inner.regions.prev(&req.region_key);
        Ok(Response::new(self.state.region_response(region)))
    }

    async fn get_region_by_id(
        &self,
        request: Request<pdpb::GetRegionByIdRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let req = request.into_inner();
        self.state.validate(self.index, req.header.as_ref())?;
        let region = self.state.inner.regions.get(req.region_id);
        Ok(Response::new(self.state.region_response(region)))
    }

    async fn scan_regions(
        &self,
        request: Request<pdpb::ScanRegionsRequest>,
    ) -> Result<Response<pdpb::ScanRegionsResponse>, Status> {
        let req = request.into_inner();
        self.state.validate(self.index, req.header.as_ref())?;
        let regions =
            self.state
                .inner
                .regions
                .scan(&req.start_key, &req.end_key, limit_of(req.limit));
        Ok(Response::new(pdpb::ScanRegionsResponse {
            header: self.state.header(),
            region_metas: regions.iter().map(Region::to_metapb).collect(),
            leaders: regions
                .iter()
                .map(|r| r.leader_peer().map(|p| p.to_metapb()).unwrap_or_default())
                .collect(),
            regions: regions.iter().map(pd_region).collect(),
        }))
    }

    async fn batch_scan_regions(
        &self,
        request: Request<pdpb::BatchScanRegionsRequest>,
    ) -> Result<Response<pdpb::BatchScanRegionsResponse>, Status> {
        let req = request.into_inner();
        self.state.validate(self.index, req.header.as_ref())?;
        let limit = if req.limit <= 0 {
            usize::MAX
        } else {
            limit_of(req.limit)
        };
        let mut out: Vec<pdpb::Region> = Vec::new();
        let mut last_id = None;
        'ranges: for range in &req.ranges {
            for r in self
                .state
                .inner
                .regions
                .scan(&range.start_key, &range.end_key, 0)
            {
                if out.len() >= limit {
                    break 'ranges;
                }
                // Adjacent ranges may share a region; report it once.
                if last_id == Some(r.id) {
                    continue;
                }
                last_id = Some(r.id);
                out.push(pd_region(&r));
            }
        }
        Ok(Response::new(pdpb::BatchScanRegionsResponse {
            header: self.state.header(),
            regions: out,
        }))
    }

    async fn get_gc_safe_point(
        &self,
        request: Request<pdpb::GetGcSafePointRequest>,
    ) -> Result<Response<pdpb::GetGcSafePointResponse>, Status> {
        let req = request.into_inner();
        self.state.validate(self.index, req.header.as_ref())?;
        Ok(Response::new(pdpb::GetGcSafePointResponse {
            header: self.state.header(),
            safe_point: self.state.gc_safe_point(),
        }))
    }

    async fn update_gc_safe_point(
        &self,
        request: Request<pdpb::UpdateGcSafePointRequest>,
    ) -> Result<Response<pdpb::UpdateGcSafePointResponse>, Status> {
        let req = request.into_inner();
        self.state.validate(self.index, req.header.as_ref())?;
        let new_safe_point = self.state.update_gc_safe_point(req.safe_point);
        Ok(Response::new(pdpb::UpdateGcSafePointResponse {
            header: self.state.header(),
            new_safe_point,
        }))
    }

    async fn update_service_gc_safe_point(
        &self,
        request: Request<pdpb::UpdateServiceGcSafePointRequest>,
    ) -> Result<Response<pdpb::UpdateServiceGcSafePointResponse>, Status> {
        let req = request.into_inner();
        self.state.validate(self.index, req.header.as_ref())?;
        let min = self
            .state
            .update_service_safe_point(&req.service_id, req.ttl, req.safe_point);
        Ok(Response::new(pdpb::UpdateServiceGcSafePointResponse {
            header: self.state.header(),
            service_id: min.service_id,
            ttl: min.ttl,
            min_safe_point: min.safe_point,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_safe_point_rules() {
        let mut gc = GcState::default();
        let now = 1_000;
        // First call: gc_worker appears at 0 and is the minimum.
        let m = gc.update_service(b"cdc", 100, 50, now);
        assert_eq!(
            m,
            MinServiceSafePoint {
                service_id: b"gc_worker".to_vec(),
                ttl: i64::MAX - now,
                safe_point: 0
            }
        );
        // The GC worker moves up: cdc (50) becomes the minimum.
        let m = gc.update_service(b"gc_worker", i64::MAX, 80, now);
        assert_eq!(
            m,
            MinServiceSafePoint {
                service_id: b"cdc".to_vec(),
                ttl: 100,
                safe_point: 50
            }
        );
        // Below the minimum: not stored.
        let m = gc.update_service(b"br", 100, 40, now);
        assert_eq!(m.safe_point, 50);
        assert!(!gc.services.contains_key(b"br".as_slice()));
        // The minimum's owner moves up: the next minimum is reported.
        let m = gc.update_service(b"cdc", 10, 90, now);
        assert_eq!(
            m,
            MinServiceSafePoint {
                service_id: b"gc_worker".to_vec(),
                ttl: i64::MAX - now,
                safe_point: 80
            }
        );
        // Expiry: after 11 s cdc is gone.
        gc.update_service(b"cdc", 10, 85, now);
        assert!(gc.services.contains_key(b"cdc".as_slice()));
        let m = gc.update_service(b"other", 100, 100, now + 11);
        assert!(!gc.services.contains_key(b"cdc".as_slice()));
        assert_eq!(m.safe_point, 80);
        // TTL <= 0 removes.
        gc.update_service(b"other", 0, 0, now + 11);
        assert!(!gc.services.contains_key(b"other".as_slice()));
    }
}
