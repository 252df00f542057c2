//! Snapshot reads: the `tikvpb.Tikv` service's `KvGet`, `KvScan` and `KvBatchGet` on one store.
//!
//! Each request is routed like TiKV routes it, in TiKV's order, and a failure is reported as
//! `region_error` (an `errorpb.Error`): the store holds no peer of `context.region_id` →
//! `region_not_found`; the store's peer is not the leader → `not_leader` with the leader peer;
//! no epoch → message-only "missing epoch!"; `context.region_epoch.version` differs →
//! `epoch_not_match` with the current region; a key (a scan's start key) outside the region →
//! `key_not_in_region`. A scan is clamped to the region. Keys in these requests are RAW.
//!
//! Locks: a Put/Delete lock with start_ts ≤ `version` blocks a key unless its transaction is in
//! `context.resolved_locks` (ignored) or `context.committed_locks` (read through). `KvGet`
//! reports it as `error.locked`; `KvScan` and `KvBatchGet` report it per pair, as TiKV does.
//!
//! GC: TiKV itself does not check safe points on reads (the data is simply gone); TiDB and
//! client-go refuse a snapshot below the GC safe point with "GC life time is shorter than
//! transaction duration, transaction starts at …, GC safe point is …". The sim checks on the
//! server so a client can tell "snapshot lost by GC" apart from "no data": a read with
//! `version` below the physical GC safe point fails with `KeyError.abort` set to
//! `"GC life time is shorter than transaction duration, transaction starts at <version>, GC safe
//! point is <safe point>"` (both as TSO numbers), and nothing else.

use tidal_proto::errorpb;
use tidal_proto::kvrpcpb::{self, Context};
use tidal_proto::tikvpb::tikv_server::Tikv;
use tonic::{Request, Response, Status};

use crate::mvcc::{self, MvccStore, Op, ReadError, ReadOptions};
use crate::region::{Region, RegionEpoch, RegionManager, RouteError};

/// The text prefix of a read below the GC safe point (in `KeyError.abort`).
pub const GC_TOO_EARLY: &str = "GC life time is shorter than transaction duration";

/// The KV read service of one store.
#[derive(Clone, Debug)]
pub struct KvService {
    store_id: u64,
    store: MvccStore,
    regions: RegionManager,
}

fn region_error(message: String) -> errorpb::Error {
    errorpb::Error {
        message,
        ..Default::default()
    }
}

/// Maps a routing failure to TiKV's `errorpb.Error`.
pub fn route_error(e: RouteError) -> errorpb::Error {
    match e {
        RouteError::RegionNotFound(region_id) => errorpb::Error {
            region_not_found: Some(errorpb::RegionNotFound { region_id }),
            ..region_error(format!("region {region_id} is missing"))
        },
        RouteError::NotLeader { region_id, leader } => errorpb::Error {
            not_leader: Some(errorpb::NotLeader {
                region_id,
                leader: leader.map(|p| p.to_metapb()),
            }),
            ..region_error(format!(
                "peer is not leader for region {region_id}, leader may be {leader:?}"
            ))
        },
        RouteError::EpochNotMatch { current } => errorpb::Error {
            epoch_not_match: Some(errorpb::EpochNotMatch {
                current_regions: current.iter().map(Region::to_metapb).collect(),
            }),
            ..region_error("epoch not match".to_owned())
        },
        RouteError::MissingEpoch => region_error("missing epoch!".to_owned()),
    }
}

fn key_not_in_region(raw_key: &[u8], region: &Region) -> errorpb::Error {
    errorpb::Error {
        key_not_in_region: Some(errorpb::KeyNotInRegion {
            key: raw_key.to_vec(),
            region_id: region.id,
            start_key: region.start.clone(),
            end_key: region.end.clone(),
        }),
        ..region_error(format!("key {raw_key:?} is not in region {}", region.id))
    }
}

/// A store lock as `kvrpcpb.LockInfo`.
pub fn lock_info(l: &mvcc::LockInfo) -> kvrpcpb::LockInfo {
    kvrpcpb::LockInfo {
        primary_lock: l.primary.clone(),
        lock_version: l.start_ts,
        key: l.key.clone(),
        lock_ttl: l.ttl,
        txn_size: 1,
        lock_type: match l.op {
            Op::Put => kvrpcpb::Op::Put,
            Op::Delete => kvrpcpb::Op::Del,
        } as i32,
        lock_for_update_ts: l.for_update_ts,
        ..Default::default()
    }
}

/// A read failure as `kvrpcpb.KeyError`.
pub fn key_error(e: &ReadError) -> kvrpcpb::KeyError {
    match e {
        ReadError::Locked(l) => kvrpcpb::KeyError {
            locked: Some(lock_info(l)),
            ..Default::default()
        },
        ReadError::GcSafePoint { ts, safe_point } => kvrpcpb::KeyError {
            abort: format!(
                "{GC_TOO_EARLY}, transaction starts at {ts}, GC safe point is {safe_point}"
            ),
            ..Default::default()
        },
    }
}

fn read_options(ctx: Option<&Context>) -> ReadOptions<'_> {
    match ctx {
        Some(c) => ReadOptions {
            bypass_locks: &c.resolved_locks,
            access_locks: &c.committed_locks,
        },
        None => ReadOptions::default(),
    }
}

fn max_bound<'a>(a: &'a [u8], b: &'a [u8]) -> &'a [u8] {
    if a >= b { a } else { b }
}

/// The smaller of two exclusive end bounds where empty means +∞.
fn min_end<'a>(a: &'a [u8], b: &'a [u8]) -> &'a [u8] {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b,
        (_, true) => a,
        _ => {
            if a <= b {
                a
            } else {
                b
            }
        }
    }
}

impl KvService {
    /// The service of store `store_id`.
    pub fn new(store_id: u64, store: MvccStore, regions: RegionManager) -> Self {
        Self {
            store_id,
            store,
            regions,
        }
    }

    fn route(&self, ctx: Option<&Context>) -> Result<Region, Box<errorpb::Error>> {
        let ctx = ctx.cloned().unwrap_or_default();
        let epoch = ctx.region_epoch.map(|e| RegionEpoch {
            conf_ver: e.conf_ver,
            version: e.version,
        });
        self.regions
            .check_route(self.store_id, ctx.region_id, epoch)
            .map_err(|e| Box::new(route_error(e)))
    }

    /// Serves a `GetRequest`.
    pub fn get(&self, req: &kvrpcpb::GetRequest) -> kvrpcpb::GetResponse {
        let region = match self.route(req.context.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                return kvrpcpb::GetResponse {
                    region_error: Some(*e),
                    ..Default::default()
                };
            }
        };
        if !region.contains_raw(&req.key) {
            return kvrpcpb::GetResponse {
                region_error: Some(key_not_in_region(&req.key, &region)),
                ..Default::default()
            };
        }
        match self
            .store
            .get_with(&req.key, req.version, &read_options(req.context.as_ref()))
        {
            Ok(Some((commit_ts, value))) => kvrpcpb::GetResponse {
                value,
                commit_ts: if req.need_commit_ts { commit_ts } else { 0 },
                ..Default::default()
            },
            Ok(None) => kvrpcpb::GetResponse {
                not_found: true,
                ..Default::default()
            },
            Err(e) => kvrpcpb::GetResponse {
                error: Some(key_error(&e)),
                ..Default::default()
            },
        }
    }

    /// Serves a `ScanRequest`.
    pub fn scan(&self, req: &kvrpcpb::ScanRequest) -> kvrpcpb::ScanResponse {
        let region = match self.route(req.context.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                return kvrpcpb::ScanResponse {
                    region_error: Some(*e),
                    ..Default::default()
                };
            }
        };
        let (region_start, region_end) = region.raw_range();
        // Forward: [start_key, end_key); reverse: [end_key, start_key) walked downwards.
        let (lower, upper) = if req.reverse {
            (req.end_key.as_slice(), req.start_key.as_slice())
        } else {
            if !region.contains_raw(&req.start_key) {
                return kvrpcpb::ScanResponse {
                    region_error: Some(key_not_in_region(&req.start_key, &region)),
                    ..Default::default()
                };
            }
            (req.start_key.as_slice(), req.end_key.as_slice())
        };
        if req.limit == 0 {
            return kvrpcpb::ScanResponse::default();
        }
        let lower = max_bound(lower, &region_start);
        let upper = min_end(upper, &region_end);
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        let opts = read_options(req.context.as_ref());
        match self
            .store
            .scan_with(lower, upper, req.version, limit, req.reverse, &opts)
        {
            Ok(items) => kvrpcpb::ScanResponse {
                pairs: items
                    .into_iter()
                    .map(|item| match item {
                        Ok((key, value)) => kvrpcpb::KvPair {
                            key,
                            value: if req.key_only { Vec::new() } else { value },
                            ..Default::default()
                        },
                        Err(l) => kvrpcpb::KvPair {
                            error: Some(key_error(&ReadError::Locked(l))),
                            ..Default::default()
                        },
                    })
                    .collect(),
                ..Default::default()
            },
            Err(e) => kvrpcpb::ScanResponse {
                error: Some(key_error(&e)),
                ..Default::default()
            },
        }
    }

    /// Serves a `BatchGetRequest`.
    pub fn batch_get(&self, req: &kvrpcpb::BatchGetRequest) -> kvrpcpb::BatchGetResponse {
        let region = match self.route(req.context.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                return kvrpcpb::BatchGetResponse {
                    region_error: Some(*e),
                    ..Default::default()
                };
            }
        };
        if let Some(k) = req.keys.iter().find(|k| !region.contains_raw(k)) {
            return kvrpcpb::BatchGetResponse {
                region_error: Some(key_not_in_region(k, &region)),
                ..Default::default()
            };
        }
        let opts = read_options(req.context.as_ref());
        let mut pairs = Vec::with_capacity(req.keys.len());
        for key in &req.keys {
            match self.store.get_with(key, req.version, &opts) {
                Ok(Some((commit_ts, value))) => pairs.push(kvrpcpb::KvPair {
                    key: key.clone(),
                    value,
                    commit_ts: if req.need_commit_ts { commit_ts } else { 0 },
                    ..Default::default()
                }),
                Ok(None) => {}
                Err(e @ ReadError::Locked(_)) => pairs.push(kvrpcpb::KvPair {
                    error: Some(key_error(&e)),
                    key: key.clone(),
                    ..Default::default()
                }),
                Err(e @ ReadError::GcSafePoint { .. }) => {
                    return kvrpcpb::BatchGetResponse {
                        error: Some(key_error(&e)),
                        ..Default::default()
                    };
                }
            }
        }
        kvrpcpb::BatchGetResponse {
            pairs,
            ..Default::default()
        }
    }
}

#[tonic::async_trait]
impl Tikv for KvService {
    async fn kv_get(
        &self,
        request: Request<kvrpcpb::GetRequest>,
    ) -> Result<Response<kvrpcpb::GetResponse>, Status> {
        Ok(Response::new(self.get(request.get_ref())))
    }

    async fn kv_scan(
        &self,
        request: Request<kvrpcpb::ScanRequest>,
    ) -> Result<Response<kvrpcpb::ScanResponse>, Status> {
        Ok(Response::new(self.scan(request.get_ref())))
    }

    async fn kv_batch_get(
        &self,
        request: Request<kvrpcpb::BatchGetRequest>,
    ) -> Result<Response<kvrpcpb::BatchGetResponse>, Status> {
        Ok(Response::new(self.batch_get(request.get_ref())))
    }
}
