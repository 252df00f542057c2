//! The change-feed client: [`RegionFeed`] subscribes table spans to TiKV's `ChangeData` service
//! and turns the region-level protocol into one ordered stream per span.
//!
//! # Why it looks like this
//!
//! TiKV publishes changes per *region*, and regions split, merge, move and fail all the time; a
//! consumer wants changes per *table span* with a single progress number. The feed hides the
//! regions:
//!
//! - a span is cut along region boundaries (in encoded key space, wire.md §4.4); each piece is
//!   registered on its leader's store with the piece's own resolved ts as checkpoint, so a
//!   re-registration after any failure resumes exactly where that piece was ([`range_ts`]);
//! - one `EventFeedV2` stream per store carries every region of every subscription of the feed
//!   (`features: stream-multiplexing`); events are dispatched by `(request_id, region_id)`;
//! - each region has a [`matcher`] that pairs prewrites with commits;
//! - region errors follow wire.md §2.7: leader hints are followed, epoch and not-found errors
//!   re-split the piece from PD, busy stores are retried with jittered backoff, and broken
//!   streams fail all their regions and retry them after a reconnect delay;
//! - a shared [`quota`] stops reading from TiKV while too many rows wait for the consumer.
//!
//! # Output contract of a [`Subscription`]
//!
//! - Every row with `commit_ts <= R` is delivered before [`FeedEvent::Resolved`]`(R)`.
//! - Resolved values strictly increase; the first one is above the subscription's start ts.
//! - No row with `commit_ts <= start_ts` is delivered, and each row `(key, start_ts,
//!   commit_ts)` is delivered once: re-registrations re-send rows above a piece's resolved ts,
//!   and those are recognised and dropped (rows at or below the last emitted resolved ts are
//!   dropped outright).
//! - Rows are not sorted: within one region they come in TiKV's apply order, across regions
//!   interleaved. Sorting by commit ts happens downstream, per span, once a resolved ts passes.
//! - Unrecoverable errors (`duplicate_request`, `compatibility`, `cluster_id_mismatch`: the
//!   client or the cluster is misconfigured) end the stream with one [`FeedEvent::Error`];
//!   everything else is retried forever and shows up in [`Subscription::diagnostics`], never as
//!   an error.
//!
//! # Request ids
//!
//! Each subscription has its own request id, used for all its regions, so TiKV groups its
//! resolved ts per subscription. When a merge makes one region serve two separate pieces of the
//! same span at once (the second piece is re-split before the first one's registration has
//! failed), the second registration gets an extra request id of the same subscription:
//! `(request_id, region_id)` must be unique per stream, and reusing a pair would also make a
//! stale error of one registration end the other.

pub mod backoff;
pub mod matcher;
pub mod quota;
pub mod range_ts;
mod stream;
mod subscription;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tidal_model::{RawKvChange, TableSpan, Ts};
use tidal_proto::metapb;
use tonic::transport::ClientTlsConfig;

use crate::pd::{PdClient, RegionInfo};

pub use backoff::BackoffConfig;
pub use quota::MemoryQuota;
pub use subscription::Subscription;

use range_ts::RangeId;
use stream::StoreConn;
use subscription::SubState;

/// Settings of a [`RegionFeed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// Cluster id sent in every request header; `None` takes PD's.
    pub cluster_id: Option<u64>,
    /// Bytes of rows the feed may hold (matcher state plus undelivered output) before it stops
    /// reading from TiKV. Default 1 GiB.
    pub memory_quota: usize,
    /// Retry delays.
    pub backoff: BackoffConfig,
    /// `Header.ticdc_version`; TiKV enables batch resolved ts and cluster-id checks from it.
    pub ticdc_version: String,
    /// Ask TiKV to drop rows written by a CDC sink (bidirectional replication loops).
    pub filter_loop: bool,
    /// Bound on connecting to a store.
    pub connect_timeout: Duration,
    /// Largest number of rows merged into one [`FeedEvent::Rows`].
    pub max_batch_rows: usize,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            cluster_id: None,
            memory_quota: 1 << 30,
            backoff: BackoffConfig::default(),
            ticdc_version: tidal_proto::features::TICDC_VERSION.to_owned(),
            filter_loop: false,
            connect_timeout: Duration::from_secs(5),
            max_batch_rows: 4096,
        }
    }
}

/// One item of a subscription's stream.
#[derive(Debug)]
pub enum FeedEvent {
    /// Committed rows, in arrival order (not sorted by commit ts).
    Rows(Vec<RawKvChange>),
    /// Every row of the span with `commit_ts <=` this ts has been delivered.
    Resolved(Ts),
    /// The subscription failed for good; nothing follows.
    Error(FeedError),
}

/// Why a subscription could not be made or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The span is empty or inverted.
    #[error("invalid span: {0}")]
    InvalidSpan(String),
    /// `subscribe` was called outside a Tokio runtime.
    #[error("the change feed needs a Tokio runtime")]
    NoRuntime,
    /// TiKV saw `(request_id, region_id)` twice on one stream: the client's bookkeeping is broken.
    #[error("store {store_id}: duplicate request {request_id} for region {region_id}")]
    DuplicateRequest {
        /// Store that refused it.
        store_id: u64,
        /// The request id.
        request_id: u64,
        /// The region.
        region_id: u64,
    },
    /// TiKV refuses the request kind (its API version does not allow it).
    #[error("store {store_id} is incompatible: requires version {required_version}")]
    Compatibility {
        /// Store that refused it.
        store_id: u64,
        /// Version TiKV asks for.
        required_version: String,
    },
    /// The header's cluster id is not the store's cluster.
    #[error(
        "cluster id mismatch: store {store_id} belongs to cluster {current}, requested {request}"
    )]
    ClusterIdMismatch {
        /// Store that refused it.
        store_id: u64,
        /// The store's cluster id.
        current: u64,
        /// The cluster id we sent.
        request: u64,
    },
}

/// Why the slowest region of a span is behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StuckReason {
    /// Its initial scan has not finished.
    NotInitialized,
    /// It holds a lock (a prewritten, not yet committed transaction) with this start ts, and its
    /// resolved ts cannot pass it.
    LockHeld {
        /// Start ts of the oldest lock seen.
        start_ts: Ts,
    },
    /// It is not subscribed: waiting to retry after this error.
    ErrorBackoff {
        /// The last error.
        error: String,
    },
    /// Subscribed and initialized; TiKV is not advancing it (e.g. a lock outside what the
    /// client has seen, or a slow store).
    Unknown,
}

/// The region holding a span's resolved ts back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowRegion {
    /// The region serving (or that last served) the slowest piece; 0 if none ever did.
    pub region_id: u64,
    /// The piece's resolved ts.
    pub resolved_ts: Ts,
    /// When that ts last advanced.
    pub stuck_since: Instant,
    /// Why it is behind.
    pub reason: StuckReason,
    /// The piece's encoded key range.
    pub range: (Vec<u8>, Vec<u8>),
}

/// A snapshot of one subscription's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanDiagnostics {
    /// The subscribed span.
    pub span: TableSpan,
    /// The last resolved ts emitted (the start ts until one is).
    pub resolved_ts: Ts,
    /// The slowest piece of the span.
    pub slowest_region: Option<SlowRegion>,
    /// Number of pieces (regions) the span is cut into.
    pub regions: usize,
    /// Pieces currently without a registration.
    pub unsubscribed: usize,
    /// Region registrations ended so far by region errors or broken streams (each is retried).
    pub retries: u64,
    /// Rows dropped because they were at or below the emitted resolved ts or delivered before
    /// (re-sent after a re-registration).
    pub duplicates_dropped: u64,
}

/// The change-feed client of one changefeed: shares store streams, the PD client and the memory
/// quota among its subscriptions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RegionFeed {
    shared: Arc<Shared>,
}

/// State shared by the feed, its subscriptions, store streams and retry tasks.
pub(crate) struct Shared {
    pd: Arc<PdClient>,
    cfg: FeedConfig,
    cluster_id: u64,
    quota: Arc<MemoryQuota>,
    /// Request id → subscription (every request id of every live subscription).
    subs: RwLock<HashMap<u64, Arc<SubState>>>,
    /// Store id → its live stream.
    conns: Mutex<HashMap<u64, Arc<StoreConn>>>,
    next_id: AtomicU64,
    tls: Option<ClientTlsConfig>,
    handle: Option<tokio::runtime::Handle>,
    me: Weak<Shared>,
    /// Bounds the PD region scans in flight (see [`MAX_CONCURRENT_SCANS`]).
    scans: tokio::sync::Semaphore,
}

/// Region scans the feed sends to PD at once. Subscribing 100 000 spans starts 100 000
/// look-ups together; unbounded, each holds a request and its encode buffer in flight, PD
/// answers them all late and the client's timeouts reset streams. Queued look-ups cost only
/// their waiting task.
pub const MAX_CONCURRENT_SCANS: usize = 32;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cluster_id", &self.cluster_id)
            .field("cfg", &self.cfg)
            .field("subscriptions", &self.subs.read().len())
            .field("streams", &self.conns.lock().len())
            .finish()
    }
}

/// What to do with a piece that lost its registration.
#[derive(Debug, Clone)]
pub(crate) enum Retry {
    /// Ask PD for the regions covering the piece and register each.
    Resplit,
    /// Register the same region again on this store.
    Region {
        region: metapb::Region,
        store_id: u64,
    },
}

impl RegionFeed {
    /// A feed over the cluster behind `pd`. Store streams are opened on first use.
    pub fn new(pd: Arc<PdClient>, cfg: FeedConfig) -> RegionFeed {
        let cluster_id = cfg.cluster_id.unwrap_or_else(|| pd.cluster_id());
        // TiKV is secured with the same CA and client certificate as PD in a TLS cluster.
        let tls = match pd.config().tls.as_ref().map(|t| t.load()) {
            Some(Ok(tls)) => Some(tls),
            Some(Err(e)) => {
                tracing::error!(error = %e, "TLS settings for TiKV could not be loaded");
                None
            }
            None => None,
        };
        let quota = Arc::new(MemoryQuota::new(cfg.memory_quota));
        let shared = Arc::new_cyclic(|me| Shared {
            pd,
            cluster_id,
            quota,
            subs: RwLock::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            tls,
            handle: tokio::runtime::Handle::try_current().ok(),
            me: me.clone(),
            scans: tokio::sync::Semaphore::new(MAX_CONCURRENT_SCANS),
            cfg,
        });
        RegionFeed { shared }
    }

    /// Subscribes `span` from `start_ts`: rows committed after `start_ts` are delivered, and
    /// resolved ts above it. Regions are looked up and registered in the background; failures
    /// are retried (see the module docs for what ends a subscription).
    pub fn subscribe(&self, span: TableSpan, start_ts: Ts) -> Result<Subscription, FeedError> {
        if !span.end.is_empty() && span.start >= span.end {
            return Err(FeedError::InvalidSpan(format!("{span:?} is empty")));
        }
        let handle = match &self.shared.handle {
            Some(h) => h.clone(),
            None => tokio::runtime::Handle::try_current().map_err(|_| FeedError::NoRuntime)?,
        };
        let id = self.shared.alloc_id();
        let (state, root) = SubState::new(id, span, start_ts);
        self.shared.subs.write().insert(id, Arc::clone(&state));
        let shared = Arc::clone(&self.shared);
        let sub = Arc::clone(&state);
        handle.spawn(async move {
            run_retry(shared, sub, root, Retry::Resplit, 0, Duration::ZERO).await;
        });
        Ok(Subscription::new(state, Arc::clone(&self.shared)))
    }

    /// The memory quota shared by the feed's subscriptions.
    pub fn quota(&self) -> &MemoryQuota {
        &self.shared.quota
    }

    /// Number of open store streams.
    pub fn stream_count(&self) -> usize {
        self.shared.conns.lock().len()
    }

    /// The cluster id the feed sends.
    pub fn cluster_id(&self) -> u64 {
        self.shared.cluster_id
    }
}

impl Shared {
    pub(crate) fn alloc_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn quota(&self) -> &MemoryQuota {
        &self.quota
    }

    pub(crate) fn cfg(&self) -> &FeedConfig {
        &self.cfg
    }

    pub(crate) fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub(crate) fn pd(&self) -> &PdClient {
        &self.pd
    }

    pub(crate) fn lookup(&self, request_id: u64) -> Option<Arc<SubState>> {
        self.subs.read().get(&request_id).cloned()
    }

    pub(crate) fn add_alias(&self, request_id: u64, sub: Arc<SubState>) {
        self.subs.write().insert(request_id, sub);
    }

    pub(crate) fn remove_ids(&self, ids: &[u64]) {
        let mut subs = self.subs.write();
        for id in ids {
            subs.remove(id);
        }
    }

    /// Forgets a failed stream, unless a newer one for the store replaced it already.
    pub(crate) fn remove_conn(&self, store_id: u64, conn_id: u64) {
        let mut conns = self.conns.lock();
        if conns.get(&store_id).is_some_and(|c| c.id() == conn_id) {
            conns.remove(&store_id);
        }
    }

    /// Records why piece `range` of `sub` failed and schedules a fresh region lookup for it
    /// after `delay` (the next attempt after `attempts`).
    fn resplit_later(
        &self,
        sub: &Arc<SubState>,
        range: RangeId,
        why: String,
        attempts: u32,
        delay: Duration,
    ) {
        sub.note_failure(range, why);
        self.schedule(
            sub,
            range,
            Retry::Resplit,
            attempts.saturating_add(1),
            delay,
        );
    }

    /// Schedules a retry of piece `range` of `sub` after `delay`.
    pub(crate) fn schedule(
        &self,
        sub: &Arc<SubState>,
        range: RangeId,
        retry: Retry,
        attempts: u32,
        delay: Duration,
    ) {
        let Some(shared) = self.me.upgrade() else {
            return;
        };
        let sub = Arc::clone(sub);
        let fut = run_retry(shared, sub, range, retry, attempts, delay);
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(fut);
            }
            Err(_) => {
                if let Some(h) = &self.handle {
                    h.spawn(fut);
                } else {
                    tracing::error!("no Tokio runtime to retry a region subscription on");
                }
            }
        }
    }

    /// The live stream to a store, opening one if needed.
    async fn conn_for(&self, store_id: u64) -> Result<Arc<StoreConn>, String> {
        if let Some(c) = self.conns.lock().get(&store_id)
            && c.is_alive()
        {
            return Ok(Arc::clone(c));
        }
        let store = self
            .pd
            .get_store(store_id)
            .await
            .map_err(|e| format!("store {store_id}: {e}"))?;
        if store.address.is_empty() {
            self.pd.invalidate_store(store_id);
            return Err(format!("store {store_id} has no address"));
        }
        let mut conns = self.conns.lock();
        if let Some(c) = conns.get(&store_id)
            && c.is_alive()
        {
            return Ok(Arc::clone(c));
        }
        let conn = StoreConn::open(self.me.clone(), store_id, store.address, self.tls.clone());
        conns.insert(store_id, Arc::clone(&conn));
        Ok(conn)
    }
}

/// Waits `delay`, then re-subscribes piece `range` of `sub`.
async fn run_retry(
    shared: Arc<Shared>,
    sub: Arc<SubState>,
    range: RangeId,
    retry: Retry,
    attempts: u32,
    delay: Duration,
) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if sub.is_closed() {
        return;
    }
    match retry {
        Retry::Region { region, store_id } => {
            register(&shared, &sub, range, region, store_id, attempts).await;
        }
        Retry::Resplit => resplit(&shared, &sub, range, attempts).await,
    }
}

/// Looks up the regions covering the (unowned) piece and registers each part.
async fn resplit(shared: &Arc<Shared>, sub: &Arc<SubState>, range: RangeId, attempts: u32) {
    let Some((start, end)) = sub.unowned_bounds(range) else {
        return;
    };
    let next_delay = shared.cfg.backoff.delay(attempts, Duration::ZERO);
    let scanned = {
        // Never closed, so the permit is always granted.
        let _permit = shared.scans.acquire().await.ok();
        shared.pd.scan_regions(&start, &end, 0).await
    };
    let regions = match scanned {
        Ok(r) => r,
        Err(e) => {
            shared.resplit_later(
                sub,
                range,
                format!("scanning regions: {e}"),
                attempts,
                next_delay,
            );
            return;
        }
    };
    let (pieces, holes) = sub.carve(range, &regions);
    for (piece, info) in pieces {
        let RegionInfo { region, leader } = info;
        match leader.filter(|l| l.store_id != 0) {
            Some(leader) => {
                register(shared, sub, piece, region, leader.store_id, attempts).await;
            }
            None => {
                shared.pd.invalidate_region(region.id);
                shared.resplit_later(
                    sub,
                    piece,
                    format!("region {} has no known leader", region.id),
                    attempts,
                    next_delay,
                );
            }
        }
    }
    // Whatever PD did not cover (a hole) is still unowned: try again later.
    for piece in holes {
        shared.resplit_later(
            sub,
            piece,
            "no region covers this range yet".into(),
            attempts,
            next_delay,
        );
    }
}

/// Registers `region` for piece `range` on `store_id`'s stream.
async fn register(
    shared: &Arc<Shared>,
    sub: &Arc<SubState>,
    range: RangeId,
    region: metapb::Region,
    store_id: u64,
    attempts: u32,
) {
    let conn = match shared.conn_for(store_id).await {
        Ok(c) => c,
        Err(e) => {
            shared.pd.invalidate_region(region.id);
            let delay = shared.cfg.backoff.delay(attempts, Duration::ZERO);
            shared.resplit_later(sub, range, e, attempts, delay);
            return;
        }
    };
    if let Err(why) = sub.register(shared, range, region, &conn, attempts) {
        shared.resplit_later(
            sub,
            range,
            why,
            attempts,
            shared.cfg.backoff.delay(attempts, Duration::ZERO),
        );
    }
}
