//! The PD (Placement Driver) client: cluster membership, timestamps, region routing, stores and
//! GC safe points.
//!
//! PD is the cluster's brain; Tidal asks it four kinds of questions:
//!
//! * **What time is it?** ([`PdClient::get_ts`]) — every snapshot read, resolved-ts check and lag
//!   measurement uses a PD timestamp. Requests from concurrent callers are batched over one TSO
//!   stream (see the `tso` module docs for the ordering and uniqueness guarantees).
//! * **Where does a key live?** ([`PdClient::locate_key`], [`PdClient::scan_regions`]) — answers
//!   are kept in a region cache keyed by **encoded** start key; callers feed TiKV's region errors
//!   back ([`PdClient::invalidate_region`], [`PdClient::update_leader`],
//!   [`PdClient::on_epoch_not_match`]) so stale routes are dropped.
//! * **Where is a store?** ([`PdClient::get_store`]) — the TiKV gRPC address of a region's leader.
//! * **How far back may we read?** ([`PdClient::get_gc_safe_point`],
//!   [`PdClient::update_service_gc_safe_point`]) — the physical GC safe point and the service
//!   safe point reservation that keeps GC from removing data a change feed still needs.
//!
//! Only the PD leader answers; the client discovers it with `GetMembers`, follows leader changes
//! transparently and retries with jittered backoff within [`PdConfig::request_timeout`]. All keys
//! passed to and returned from this module are memcomparable-**encoded** keys (wire.md §4.4).

mod conn;
mod error;
mod region_cache;
mod tls;
mod tso;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use tidal_model::Ts;
use tidal_proto::metapb;
use tidal_proto::pdpb::{
    ErrorType, GetAllStoresRequest, GetGcSafePointRequest, GetRegionByIdRequest, GetRegionRequest,
    GetStoreRequest, Member, ScanRegionsRequest, ScanRegionsResponse, UpdateGcSafePointRequest,
    UpdateServiceGcSafePointRequest,
};

use conn::{Backoff, Inner};

pub use error::PdError;
pub use region_cache::{RegionCache, RegionInfo};
pub use tls::TlsConfig;
pub use tso::{MAX_BATCH as MAX_TSO_BATCH, TsoBatch};

/// Regions asked for per `ScanRegions` page.
const SCAN_PAGE: usize = 1024;

/// How to reach PD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdConfig {
    /// PD endpoints, `host:port` or `http(s)://host:port`. Any member will do: the client asks it
    /// for the leader. More than one endpoint keeps the client working when one PD is down.
    pub endpoints: Vec<String>,
    /// Bound on establishing one connection (default 3 s).
    pub connect_timeout: Duration,
    /// Bound on one request including leader re-discovery and retries (default 10 s).
    pub request_timeout: Duration,
    /// TLS certificates; `None` for plaintext.
    pub tls: Option<TlsConfig>,
}

impl Default for PdConfig {
    /// PD's default client address on the local host, 3 s connect and 10 s request timeouts,
    /// no TLS.
    fn default() -> PdConfig {
        PdConfig {
            endpoints: vec!["127.0.0.1:2379".into()],
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl PdConfig {
    /// The defaults with these endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> PdConfig {
        PdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..PdConfig::default()
        }
    }
}

/// The answer to a service safe point update.
///
/// PD reports the **minimum service safe point across all services** (TiDB's `gc_worker`, every
/// TiCDC/BR/Tidal service id), not the one just written: `service_id` names the service that
/// currently holds GC back, `ttl` is its remaining time to live in seconds, and `min_safe_point`
/// its safe point. If `min_safe_point` is above the safe point you asked for, your reservation was
/// refused (PD never lowers the minimum) and data older than `min_safe_point` may be collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSafePoint {
    /// The service holding the minimum (PD sends bytes; decoded lossily as UTF-8).
    pub service_id: String,
    /// Remaining TTL of that service's reservation, in seconds.
    pub ttl: i64,
    /// The minimum service safe point.
    pub min_safe_point: u64,
}

/// A connected PD client. Cheap to clone: clones share the connection, the caches and the TSO
/// batching task, which stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct PdClient {
    inner: Arc<Inner>,
    tso_tx: mpsc::Sender<tso::Waiter>,
}

impl PdClient {
    /// Connects to the cluster: asks the endpoints in turn for the members (`GetMembers`), learns
    /// the cluster id and the leader, and dials the leader. Retries for up to `request_timeout`
    /// (PD may be electing a leader); fails with [`PdError::Unreachable`] naming the endpoints.
    /// Must be called inside a Tokio runtime (it starts the TSO task).
    pub async fn connect(cfg: PdConfig) -> Result<PdClient, PdError> {
        let inner = Arc::new(Inner::connect(cfg).await?);
        let (tso_tx, tso_rx) = mpsc::channel(tso::QUEUE_DEPTH);
        tokio::spawn(tso::run(Arc::clone(&inner), tso_rx));
        Ok(PdClient { inner, tso_tx })
    }

    /// The cluster id learned at connect time; every request carries it.
    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id()
    }

    /// The URL of the PD leader the client is connected to.
    pub fn leader_url(&self) -> String {
        self.inner.leader_url()
    }

    /// The PD members as of the last `GetMembers`.
    pub fn members(&self) -> Vec<Member> {
        self.inner.members()
    }

    /// Every endpoint the client would try to find a leader: the current leader, the members'
    /// client URLs and the configured endpoints (normalized, without duplicates).
    pub fn known_endpoints(&self) -> Vec<String> {
        self.inner.known_endpoints()
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &PdConfig {
        &self.inner.cfg
    }

    // ---------------------------------------------------------------------------------------
    // TSO

    /// One fresh timestamp. Concurrent calls are batched into one `TsoRequest`.
    pub async fn get_ts(&self) -> Result<Ts, PdError> {
        let batch = self.tso_batch(1).await?;
        Ok(Ts(batch.first))
    }

    /// `n` consecutive fresh timestamps, smallest first (`n` at most [`MAX_TSO_BATCH`]).
    pub async fn get_ts_batch(&self, n: u32) -> Result<Vec<Ts>, PdError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if n > tso::MAX_BATCH {
            return Err(PdError::InvalidArgument {
                detail: format!(
                    "asked for {n} timestamps, at most {} per call",
                    tso::MAX_BATCH
                ),
            });
        }
        let batch = self.tso_batch(n).await?;
        Ok(batch.iter().map(Ts).collect())
    }

    /// How many `TsoRequest`s this client has sent (one per batch, retries included).
    pub fn tso_requests_sent(&self) -> u64 {
        self.inner.tso_requests.load(Ordering::Relaxed)
    }

    async fn tso_batch(&self, count: u32) -> Result<TsoBatch, PdError> {
        let timeout = self.inner.cfg.request_timeout;
        let (reply, rx) = oneshot::channel();
        let waiter = tso::Waiter {
            count,
            deadline: Instant::now() + timeout,
            reply,
        };
        // The task answers every waiter by its deadline; the margin only guards against a bug
        // (and bounds the wait for queue space when callers flood the queue).
        let answer = tokio::time::timeout(timeout + Duration::from_secs(1), async {
            self.tso_tx
                .send(waiter)
                .await
                .map_err(|_| PdError::Closed)?;
            rx.await.map_err(|_| PdError::Closed)?
        })
        .await;
        answer.unwrap_or_else(|_| {
            Err(self
                .inner
                .timeout_error("Tso", timeout, "the TSO task did not answer"))
        })
    }

    // ---------------------------------------------------------------------------------------
    // Regions

    /// The region containing the **encoded** key, from the cache or else from PD (`GetRegion`,
    /// then cached).
    pub async fn locate_key(&self, encoded_key: &[u8]) -> Result<RegionInfo, PdError> {
        if let Some(hit) = self.inner.regions.lock().locate(encoded_key) {
            return Ok(hit.clone());
        }
        let key = encoded_key.to_vec();
        let resp = self
            .inner
            .call("GetRegion", |mut c, header| {
                let req = GetRegionRequest {
                    header: Some(header),
                    region_key: key.clone(),
                    need_buckets: false,
                };
                async move { c.get_region(req).await }
            })
            .await
            .map_err(|e| match e {
                PdError::Pd {
                    error_type: ErrorType::RegionNotFound,
                    ..
                } => PdError::NoRegionForKey { key: key.clone() },
                e => e,
            })?;
        let Some(region) = resp.region else {
            return Err(PdError::NoRegionForKey { key });
        };
        let info = RegionInfo::new(region, resp.leader);
        if !info.contains(&key) {
            return Err(PdError::InvalidResponse {
                what: "GetRegion",
                detail: format!(
                    "region {} [{}, {}) does not contain key {}",
                    info.id(),
                    error::hex_key(&info.region.start_key),
                    error::hex_key(&info.region.end_key),
                    error::hex_key(&key)
                ),
            });
        }
        Ok(self.remember(info, Some(&key)))
    }

    /// The region with this id, from the cache or else from PD (`GetRegionByID`, then cached).
    pub async fn region_by_id(&self, region_id: u64) -> Result<RegionInfo, PdError> {
        if let Some(hit) = self.inner.regions.lock().get(region_id) {
            return Ok(hit.clone());
        }
        let resp = self
            .inner
            .call("GetRegionByID", |mut c, header| {
                let req = GetRegionByIdRequest {
                    header: Some(header),
                    region_id,
                    need_buckets: false,
                };
                async move { c.get_region_by_id(req).await }
            })
            .await
            .map_err(|e| match e {
                PdError::Pd {
                    error_type: ErrorType::RegionNotFound,
                    ..
                } => PdError::RegionNotFound { region_id },
                e => e,
            })?;
        let Some(region) = resp.region.filter(|r| r.id == region_id) else {
            return Err(PdError::RegionNotFound { region_id });
        };
        Ok(self.remember(RegionInfo::new(region, resp.leader), None))
    }

    /// Caches a region from PD. If the cache already holds strictly newer overlapping data, the
    /// cached region containing `key` (if any) is returned instead of the stale answer.
    fn remember(&self, info: RegionInfo, key: Option<&[u8]>) -> RegionInfo {
        let mut cache = self.inner.regions.lock();
        if cache.insert(info.clone()) {
            return info;
        }
        key.and_then(|k| cache.locate(k).cloned()).unwrap_or(info)
    }

    /// The regions covering the **encoded** range `[start, end)` (empty `end` = +∞), in key
    /// order, fresh from PD (`ScanRegions`, paged until the range is covered) and added to the
    /// cache. `limit` caps the number of regions returned; 0 means no limit.
    ///
    /// The result is contiguous: the first region contains `start`, each next region starts
    /// where the previous one ends, and the last one reaches `end` (or the limit was hit). When
    /// PD's answer has a hole (a region PD has not heard about yet, e.g. right after a split),
    /// the scan is retried from the hole until `request_timeout`, then fails with
    /// [`PdError::NoRegionForKey`] naming the first uncovered key.
    pub async fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<RegionInfo>, PdError> {
        let deadline = Instant::now() + self.inner.cfg.request_timeout;
        let mut backoff = Backoff::new();
        let mut out: Vec<RegionInfo> = Vec::new();
        let mut cursor = start.to_vec();
        loop {
            if !end.is_empty() && cursor.as_slice() >= end {
                break;
            }
            if limit > 0 && out.len() >= limit {
                break;
            }
            let page = if limit > 0 {
                (limit - out.len()).min(SCAN_PAGE)
            } else {
                SCAN_PAGE
            };
            let resp = self
                .inner
                .call("ScanRegions", |mut c, header| {
                    let req = ScanRegionsRequest {
                        header: Some(header),
                        start_key: cursor.clone(),
                        limit: i32::try_from(page).unwrap_or(i32::MAX),
                        end_key: end.to_vec(),
                    };
                    async move { c.scan_regions(req).await }
                })
                .await?;
            let regions = scan_response_regions(resp);
            let (usable, next) = cover_step(&cursor, end, &regions);
            if usable == 0 {
                // A hole at the cursor: PD does not know the region yet. Retry shortly.
                let pause = backoff.next_delay();
                if Instant::now() + pause >= deadline {
                    return Err(PdError::NoRegionForKey { key: cursor });
                }
                tokio::time::sleep(pause).await;
                continue;
            }
            {
                let mut cache = self.inner.regions.lock();
                for info in regions.iter().take(usable) {
                    cache.insert(info.clone());
                }
            }
            out.extend(regions.into_iter().take(usable));
            match next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        if limit > 0 {
            out.truncate(limit);
        }
        Ok(out)
    }

    /// Drops a region from the cache (after `RegionNotFound`, a store failure, or any error that
    /// makes the cached route doubtful). The next lookup asks PD.
    pub fn invalidate_region(&self, region_id: u64) {
        self.inner.regions.lock().remove(region_id);
    }

    /// Records a leader hint from TiKV (`NotLeader.leader`). Returns `false` if the region is not
    /// cached, or if the peer is not one of the cached peers — then the cached region is stale
    /// and has been dropped.
    pub fn update_leader(&self, region_id: u64, leader: metapb::Peer) -> bool {
        self.inner.regions.lock().update_leader(region_id, leader)
    }

    /// Applies TiKV's `EpochNotMatch.current_regions`: each region replaces every cached entry it
    /// overlaps (the stale pre-split or pre-merge entries), unless the cache already knows a
    /// strictly newer epoch. Leaders are unknown after this. TiKV may send an empty list; call
    /// [`PdClient::invalidate_region`] for the stale region in any case.
    pub fn on_epoch_not_match(&self, current_regions: &[metapb::Region]) {
        let mut cache = self.inner.regions.lock();
        for region in current_regions {
            let leader = cache.get(region.id).and_then(|cached| cached.leader);
            cache.insert(RegionInfo::new(region.clone(), leader));
        }
    }

    /// The cached region containing the encoded key, without asking PD.
    pub fn cached_region(&self, encoded_key: &[u8]) -> Option<RegionInfo> {
        self.inner.regions.lock().locate(encoded_key).cloned()
    }

    /// Number of regions in the cache.
    pub fn cached_region_count(&self) -> usize {
        self.inner.regions.lock().len()
    }

    // ---------------------------------------------------------------------------------------
    // Stores

    /// A store (with its TiKV gRPC `address`), from the cache or else from PD.
    pub async fn get_store(&self, store_id: u64) -> Result<metapb::Store, PdError> {
        if let Some(store) = self.inner.stores.lock().get(&store_id) {
            return Ok(store.clone());
        }
        let resp = self
            .inner
            .call("GetStore", |mut c, header| {
                let req = GetStoreRequest {
                    header: Some(header),
                    store_id,
                };
                async move { c.get_store(req).await }
            })
            .await
            .map_err(|e| match e {
                // PD reports an unknown store as UNKNOWN "invalid store ID N, not found".
                PdError::Pd { message, .. } if message.contains("not found") => {
                    PdError::StoreNotFound { store_id }
                }
                e => e,
            })?;
        let store = resp
            .store
            .filter(|s| s.id == store_id)
            .ok_or(PdError::StoreNotFound { store_id })?;
        self.inner.stores.lock().insert(store_id, store.clone());
        Ok(store)
    }

    /// Every store except tombstones, fresh from PD; refreshes the store cache.
    pub async fn get_all_stores(&self) -> Result<Vec<metapb::Store>, PdError> {
        let resp = self
            .inner
            .call("GetAllStores", |mut c, header| {
                let req = GetAllStoresRequest {
                    header: Some(header),
                    exclude_tombstone_stores: true,
                };
                async move { c.get_all_stores(req).await }
            })
            .await?;
        let mut cache = self.inner.stores.lock();
        for s in &resp.stores {
            cache.insert(s.id, s.clone());
        }
        Ok(resp.stores)
    }

    /// Drops a store from the cache (after a connection failure to its address).
    pub fn invalidate_store(&self, store_id: u64) {
        self.inner.stores.lock().remove(&store_id);
    }

    // ---------------------------------------------------------------------------------------
    // GC safe points

    /// The cluster's (physical) GC safe point: versions older than the newest version at or below
    /// it may already be deleted. This, not the minimum service safe point, decides whether a
    /// snapshot is lost.
    pub async fn get_gc_safe_point(&self) -> Result<u64, PdError> {
        let resp = self
            .inner
            .call("GetGCSafePoint", |mut c, header| {
                let req = GetGcSafePointRequest {
                    header: Some(header),
                };
                async move { c.get_gc_safe_point(req).await }
            })
            .await?;
        Ok(resp.safe_point)
    }

    /// Advances the cluster GC safe point (the GC worker's job; tools and tests only). Returns
    /// the safe point after the update — PD never moves it backwards, so it may be higher.
    pub async fn update_gc_safe_point(&self, safe_point: u64) -> Result<u64, PdError> {
        let resp = self
            .inner
            .call("UpdateGCSafePoint", |mut c, header| {
                let req = UpdateGcSafePointRequest {
                    header: Some(header),
                    safe_point,
                };
                async move { c.update_gc_safe_point(req).await }
            })
            .await?;
        Ok(resp.new_safe_point)
    }

    /// Sets or refreshes this service's GC reservation: asks GC not to pass `safe_point` for
    /// `ttl_secs` seconds on behalf of `service_id`.
    ///
    /// The answer describes the **minimum across all services** (see [`ServiceSafePoint`]), not
    /// this service's entry. PD silently refuses a `safe_point` below the current minimum; check
    /// `min_safe_point <= safe_point` to know the reservation holds. A `ttl_secs` of 0 or less
    /// removes the reservation (see [`PdClient::remove_service_gc_safe_point`]).
    pub async fn update_service_gc_safe_point(
        &self,
        service_id: &str,
        ttl_secs: i64,
        safe_point: u64,
    ) -> Result<ServiceSafePoint, PdError> {
        let id = service_id.as_bytes().to_vec();
        let resp = self
            .inner
            .call("UpdateServiceGCSafePoint", |mut c, header| {
                let req = UpdateServiceGcSafePointRequest {
                    header: Some(header),
                    service_id: id.clone(),
                    ttl: ttl_secs,
                    safe_point,
                };
                async move { c.update_service_gc_safe_point(req).await }
            })
            .await?;
        Ok(ServiceSafePoint {
            service_id: String::from_utf8_lossy(&resp.service_id).into_owned(),
            ttl: resp.ttl,
            min_safe_point: resp.min_safe_point,
        })
    }

    /// Removes this service's GC reservation. Sends TTL 0 with safe point `u64::MAX`, exactly as
    /// TiCDC does to delete one: PD removes the entry whenever TTL ≤ 0 (the safe point is then
    /// ignored; `u64::MAX` guarantees it could never lower the minimum even on a PD that did
    /// not). Returns the minimum across the remaining services.
    pub async fn remove_service_gc_safe_point(
        &self,
        service_id: &str,
    ) -> Result<ServiceSafePoint, PdError> {
        self.update_service_gc_safe_point(service_id, 0, u64::MAX)
            .await
    }
}

/// The regions of a `ScanRegions` answer in either form: `regions` (current PD), or the parallel
/// `region_metas` + `leaders` arrays (older PD). An unknown leader (id 0) becomes `None`.
fn scan_response_regions(resp: ScanRegionsResponse) -> Vec<RegionInfo> {
    if !resp.regions.is_empty() {
        return resp
            .regions
            .into_iter()
            .filter_map(|r| r.region.map(|region| RegionInfo::new(region, r.leader)))
            .collect();
    }
    let mut leaders = resp.leaders.into_iter();
    resp.region_metas
        .into_iter()
        .map(|region| RegionInfo::new(region, leaders.next()))
        .collect()
}

/// How much of a scan page continues the covered range at `cursor`: returns the number of
/// leading regions that form a contiguous run starting at a region containing `cursor`, and the
/// next cursor (`None` when the run reaches `end` or +∞).
fn cover_step(cursor: &[u8], end: &[u8], regions: &[RegionInfo]) -> (usize, Option<Vec<u8>>) {
    let mut expect: &[u8] = cursor;
    let mut usable = 0;
    for (i, info) in regions.iter().enumerate() {
        let r = &info.region;
        let continues = if i == 0 {
            info.contains(cursor)
        } else {
            r.start_key.as_slice() == expect
        };
        if !continues {
            break;
        }
        usable = i + 1;
        if r.end_key.is_empty() || (!end.is_empty() && r.end_key.as_slice() >= end) {
            return (usable, None);
        }
        expect = &r.end_key;
    }
    if usable == 0 {
        (0, Some(cursor.to_vec()))
    } else {
        (usable, Some(expect.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_proto::pdpb;

    fn region(id: u64, start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![metapb::Peer {
                id: id * 10,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn infos(v: &[(u64, &[u8], &[u8])]) -> Vec<RegionInfo> {
        v.iter()
            .map(|(id, s, e)| RegionInfo::new(region(*id, s, e), None))
            .collect()
    }

    #[test]
    fn cover_step_accepts_contiguous_prefix() {
        let rs = infos(&[(1, b"a", b"c"), (2, b"c", b"f"), (3, b"f", b"k")]);
        assert_eq!(cover_step(b"b", b"", &rs), (3, Some(b"k".to_vec())));
        assert_eq!(
            cover_step(b"b", b"e", &rs),
            (2, None),
            "second region reaches end"
        );
        assert_eq!(cover_step(b"b", b"f", &rs), (2, None));
        assert_eq!(cover_step(b"b", b"f\x00", &rs), (3, None));
    }

    #[test]
    fn cover_step_stops_at_holes() {
        let rs = infos(&[(1, b"a", b"c"), (3, b"d", b"k")]);
        assert_eq!(cover_step(b"a", b"", &rs), (1, Some(b"c".to_vec())));
        // The first region does not contain the cursor.
        let rs = infos(&[(3, b"d", b"k")]);
        assert_eq!(cover_step(b"c", b"", &rs), (0, Some(b"c".to_vec())));
        assert_eq!(cover_step(b"c", b"", &[]), (0, Some(b"c".to_vec())));
        // Unbounded last region.
        let rs = infos(&[(1, b"", b"m"), (2, b"m", b"")]);
        assert_eq!(cover_step(b"", b"", &rs), (2, None));
    }

    #[test]
    fn both_scan_response_forms_are_read() {
        let leader = metapb::Peer {
            id: 10,
            store_id: 1,
            ..Default::default()
        };
        let old_form = ScanRegionsResponse {
            region_metas: vec![region(1, b"", b"m"), region(2, b"m", b"")],
            leaders: vec![leader, metapb::Peer::default()],
            ..Default::default()
        };
        let got = scan_response_regions(old_form);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].leader, Some(leader));
        assert_eq!(got[1].leader, None, "id 0 = unknown");

        let new_form = ScanRegionsResponse {
            region_metas: vec![region(9, b"", b"")],
            regions: vec![
                pdpb::Region {
                    region: Some(region(1, b"", b"m")),
                    leader: Some(leader),
                    ..Default::default()
                },
                pdpb::Region {
                    region: Some(region(2, b"m", b"")),
                    leader: None,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let got = scan_response_regions(new_form);
        assert_eq!(got.iter().map(|i| i.id()).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(got[0].leader, Some(leader));
        assert_eq!(got[1].leader, None);

        // Fewer leaders than regions in the old form.
        let short = ScanRegionsResponse {
            region_metas: vec![region(1, b"", b"m"), region(2, b"m", b"")],
            leaders: vec![],
            ..Default::default()
        };
        assert_eq!(scan_response_regions(short).len(), 2);
    }

    #[test]
    fn config_defaults() {
        let c = PdConfig::new(["pd-0:2379", "pd-1:2379"]);
        assert_eq!(c.endpoints, vec!["pd-0:2379", "pd-1:2379"]);
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.tls, None);
    }

    #[tokio::test]
    async fn connect_errors_are_clear() {
        assert_eq!(
            PdClient::connect(PdConfig::new(Vec::<String>::new()))
                .await
                .unwrap_err(),
            PdError::NoEndpoints
        );
        let err = PdClient::connect(PdConfig::new(["nohostport"]))
            .await
            .unwrap_err();
        assert!(matches!(err, PdError::InvalidEndpoint { .. }), "{err:?}");

        let cfg = PdConfig {
            tls: Some(TlsConfig::with_ca("/nonexistent/ca.pem")),
            ..PdConfig::new(["127.0.0.1:1"])
        };
        let err = PdClient::connect(cfg).await.unwrap_err();
        assert!(
            matches!(&err, PdError::Tls { path, .. } if path.ends_with("ca.pem")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn unreachable_names_endpoints() {
        // Bind and drop a listener to get a local port with nothing listening.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = PdConfig {
            connect_timeout: Duration::from_millis(200),
            request_timeout: Duration::from_millis(400),
            ..PdConfig::new([format!("127.0.0.1:{port}")])
        };
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), PdClient::connect(cfg))
            .await
            .expect("connect must give up by itself")
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        match err {
            PdError::Unreachable {
                endpoints,
                last_error,
            } => {
                assert_eq!(endpoints, vec![format!("http://127.0.0.1:{port}")]);
                assert!(
                    last_error.starts_with(&format!("http://127.0.0.1:{port}: ")),
                    "{last_error}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
