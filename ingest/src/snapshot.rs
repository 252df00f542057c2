//! Snapshot reads (`KvGet` / `KvScan`) against TiKV at a fixed timestamp.
//!
//! Change data capture needs a consistent picture of the cluster at one timestamp: the schema
//! store starts from the meta keys as they were at its start ts (wire.md §6.3, "Initial
//! schema"), and that picture cannot be obtained through the change feed. [`SnapshotReader`] is
//! the small transactional KV client that provides it:
//!
//! * **Routing.** Keys in `kvrpcpb` requests are RAW (wire.md §4.4); regions are looked up in PD
//!   by the memcomparable-**encoded** key. Every request carries the region id, epoch and the
//!   leader peer in its `Context`, and is sent to the leader's store.
//! * **Region errors** (`NotLeader`, `EpochNotMatch`, `RegionNotFound`, `KeyNotInRegion`, busy
//!   stores, …) update or drop the cached route in the PD client and the request is retried with
//!   a bounded, jittered backoff; transport failures drop the store connection as well.
//! * **Locks.** A key locked by a transaction that started at or below the read ts cannot be
//!   read until that transaction commits or rolls back. Resolving locks (checking the primary,
//!   rolling back expired transactions) is the job of a full transactional client and is **out
//!   of scope** here: the reader waits with backoff for a bounded number of attempts, then fails
//!   with [`SnapshotError::Locked`] naming the key, the primary and the lock's start ts. Locks of
//!   live TiDB transactions are short-lived, so waiting is enough in practice.
//! * **GC.** Versions below the **physical** GC safe point may already be deleted, and a read
//!   there would silently return a wrong (partial) picture. Every read first compares its ts with
//!   PD's `GetGCSafePoint`, and also recognises the text TiDB/client-go (and the embedded
//!   cluster) use for such a refusal ("GC life time is shorter than transaction duration"). Both
//!   yield [`SnapshotError::LostByGc`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use tidal_model::codec::bytes::{decode_key, encode_key};
use tidal_model::{CodecError, Ts, meta};
use tidal_proto::errorpb;
use tidal_proto::kvrpcpb::{self, Context, GetRequest, KeyError, ScanRequest};
use tidal_proto::metapb;
use tidal_proto::tikvpb::tikv_client::TikvClient;

use crate::pd::{PdClient, PdError, RegionInfo};

/// The text TiDB, client-go and the embedded cluster use when a snapshot is older than the GC
/// safe point.
pub const GC_TOO_EARLY_TEXT: &str = "GC life time is shorter than transaction duration";

/// Key-value pairs in key order, as a scan returns them.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// How a [`SnapshotReader`] retries and bounds its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// Bound on one `get` or one `scan` page, retries included (default 30 s).
    pub request_timeout: Duration,
    /// Bound on one RPC to a store (default 5 s).
    pub rpc_timeout: Duration,
    /// Bound on connecting to a store (default 3 s).
    pub connect_timeout: Duration,
    /// Region errors and transport failures tolerated per request before giving up (default 20).
    pub max_region_retries: u32,
    /// Times a locked key is re-read, with backoff, before [`SnapshotError::Locked`] (default 8).
    pub max_lock_retries: u32,
    /// Pairs asked for per `KvScan` (default 256).
    pub scan_batch: u32,
    /// First backoff pause (default 10 ms); doubles per retry up to `max_backoff`.
    pub base_backoff: Duration,
    /// Largest backoff pause (default 500 ms).
    pub max_backoff: Duration,
}

impl Default for SnapshotConfig {
    fn default() -> SnapshotConfig {
        SnapshotConfig {
            request_timeout: Duration::from_secs(30),
            rpc_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            max_region_retries: 20,
            max_lock_retries: 8,
            scan_batch: 256,
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
        }
    }
}

/// Why a snapshot read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The read ts is below the physical GC safe point: the versions it needs may be gone.
    #[error(
        "snapshot lost by GC: read at ts {ts} is below the GC safe point {safe_point}; \
         restart from a ts at or above the safe point"
    )]
    LostByGc {
        /// The requested read ts.
        ts: Ts,
        /// The GC safe point that makes it unreadable.
        safe_point: Ts,
    },
    /// PD failed (routing, stores, safe point).
    #[error("PD: {0}")]
    Pd(#[from] PdError),
    /// A key stayed locked by another transaction through every retry. Lock resolution is not
    /// implemented by this reader: resolve the lock (or wait for its owner) and retry.
    #[error(
        "key {} is locked by transaction {lock_ts} (primary {}, ttl {ttl_ms} ms) after {attempts} attempts",
        hex(key),
        hex(primary)
    )]
    Locked {
        /// The locked raw key.
        key: Vec<u8>,
        /// The lock's primary key.
        primary: Vec<u8>,
        /// Start ts of the locking transaction.
        lock_ts: u64,
        /// The lock's TTL in milliseconds.
        ttl_ms: u64,
        /// How many reads met the lock.
        attempts: u32,
    },
    /// The region holding a key could not be read through every retry.
    #[error(
        "cannot read raw key {} after {attempts} attempts: {last_error}",
        hex(key)
    )]
    RegionUnavailable {
        /// The raw key being read (a scan's cursor).
        key: Vec<u8>,
        /// Attempts made.
        attempts: u32,
        /// The last region error or transport failure.
        last_error: String,
    },
    /// TiKV refused the read with a key error other than a lock or a GC refusal.
    #[error("TiKV refused to read raw key {}: {detail}", hex(key))]
    KeyError {
        /// The raw key being read.
        key: Vec<u8>,
        /// The error as TiKV reported it.
        detail: String,
    },
    /// TiKV's answer makes no sense (pairs out of order or outside the range).
    #[error("invalid TiKV response: {detail}")]
    InvalidResponse {
        /// What was wrong.
        detail: String,
    },
    /// A region boundary is not a memcomparable-encoded key, so a scan cannot continue past it.
    #[error("region {region_id} has an end key that is not memcomparable-encoded: {detail}")]
    InvalidRegionBoundary {
        /// The region.
        region_id: u64,
        /// The decoding error.
        detail: String,
    },
    /// A request did not finish within [`SnapshotConfig::request_timeout`].
    #[error("{what} timed out after {elapsed:?}; last error: {last_error}")]
    Timeout {
        /// The operation.
        what: &'static str,
        /// How long it tried.
        elapsed: Duration,
        /// The last error seen.
        last_error: String,
    },
    /// A meta key or value read from the snapshot did not decode.
    #[error("malformed meta data: {0}")]
    Codec(#[from] CodecError),
}

impl SnapshotError {
    /// True for the "snapshot lost by GC" error.
    pub fn is_lost_by_gc(&self) -> bool {
        matches!(self, SnapshotError::LostByGc { .. })
    }
}

/// Lower-case hex of a key for messages, shortened when long.
pub(crate) fn hex(key: &[u8]) -> String {
    hex_shortened(key, 48)
}

/// Lower-case hex of a key for messages (this module's and the PD client's): the first `max`
/// bytes, then `...` if there were more; `(empty)` for an empty key.
pub(crate) fn hex_shortened(key: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(key.len().min(max) * 2 + 3);
    for b in key.iter().take(max) {
        out.push_str(&format!("{b:02x}"));
    }
    if key.len() > max {
        out.push_str("...");
    }
    if key.is_empty() {
        out.push_str("(empty)");
    }
    out
}

/// Parses the safe point out of a GC refusal ("…, GC safe point is 1234"), if the text is one.
fn parse_gc_refusal(text: &str) -> Option<Option<u64>> {
    if !text.contains(GC_TOO_EARLY_TEXT) {
        return None;
    }
    let sp = text.rsplit_once("safe point is").and_then(|(_, rest)| {
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<u64>().ok()
    });
    Some(sp)
}

/// The smallest key strictly after `key`.
fn next_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len().saturating_add(1));
    k.extend_from_slice(key);
    k.push(0);
    k
}

/// The first key after every key that starts with `prefix` (empty = +∞).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if let Some(next) = last.checked_add(1) {
            out.push(next);
            return out;
        }
    }
    Vec::new()
}

/// Exponential backoff with jitter.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(cfg: &SnapshotConfig) -> Backoff {
        Backoff {
            next: cfg.base_backoff,
            max: cfg.max_backoff.max(cfg.base_backoff),
        }
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        // Up to +50 % jitter so that concurrent readers do not retry in lock step.
        let jitter_ms = u64::try_from(base.as_millis() / 2).unwrap_or(0);
        let extra = if jitter_ms == 0 {
            0
        } else {
            rand::random::<u64>() % jitter_ms
        };
        base.saturating_add(Duration::from_millis(extra))
    }
}

/// What one attempt decided.
enum Step<T> {
    Done(T),
    /// Retry after a region/transport problem (counts against `max_region_retries`).
    RetryRegion {
        error: String,
        pause: bool,
    },
    /// Retry after a lock (counts against `max_lock_retries`).
    RetryLock(kvrpcpb::LockInfo),
}

impl<T> Step<T> {
    /// Retry the region after a pause.
    fn retry(error: String) -> Self {
        Step::RetryRegion { error, pause: true }
    }
}

impl Step<()> {
    /// A key error's verdict as a step of any read: the retry it asks for, or (when it named
    /// nothing to wait for) a paused region retry.
    fn or_retry<T>(self) -> Step<T> {
        match self {
            Step::RetryLock(l) => Step::RetryLock(l),
            Step::RetryRegion { error, pause } => Step::RetryRegion { error, pause },
            Step::Done(()) => Step::retry("empty key error".into()),
        }
    }
}

/// A snapshot reader over a PD client and one gRPC connection per TiKV store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SnapshotReader {
    pd: PdClient,
    cfg: SnapshotConfig,
    conns: Arc<Mutex<StoreConns>>,
}

/// Store id → (URL, gRPC client).
type StoreConns = HashMap<u64, (String, TikvClient<Channel>)>;

impl SnapshotReader {
    /// A reader with the default [`SnapshotConfig`]. Store connections use the PD client's TLS
    /// settings (a secured cluster shares one CA).
    pub fn new(pd: PdClient) -> SnapshotReader {
        SnapshotReader::with_config(pd, SnapshotConfig::default())
    }

    /// A reader with an explicit configuration.
    pub fn with_config(pd: PdClient, cfg: SnapshotConfig) -> SnapshotReader {
        SnapshotReader {
            pd,
            cfg,
            conns: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The PD client.
    pub fn pd(&self) -> &PdClient {
        &self.pd
    }

    /// The configuration.
    pub fn config(&self) -> &SnapshotConfig {
        &self.cfg
    }

    /// Fails with [`SnapshotError::LostByGc`] if `ts` is below PD's physical GC safe point.
    pub async fn check_gc(&self, ts: Ts) -> Result<(), SnapshotError> {
        let safe_point = self.pd.get_gc_safe_point().await?;
        if ts.0 < safe_point {
            return Err(SnapshotError::LostByGc {
                ts,
                safe_point: Ts(safe_point),
            });
        }
        Ok(())
    }

    /// The value of raw key `raw_key` in the snapshot at `ts`, or `None` if it has none.
    pub async fn get(&self, raw_key: &[u8], ts: Ts) -> Result<Option<Vec<u8>>, SnapshotError> {
        self.check_gc(ts).await?;
        let encoded = encode_key(raw_key);
        let key = raw_key.to_vec();
        self.with_retries(
            "KvGet",
            raw_key,
            |region, ctx, mut client| {
                let req = GetRequest {
                    context: Some(ctx),
                    key: key.clone(),
                    version: ts.0,
                    need_commit_ts: false,
                };
                let region_id = region.id();
                let this = self.clone();
                let key = key.clone();
                async move {
                    let resp = match this.rpc(client.kv_get(req)).await {
                        Ok(r) => r,
                        Err(e) => {
                            return Ok(Step::retry(e));
                        }
                    };
                    if let Some(err) = resp.region_error {
                        return this.on_region_error(region_id, &err, ts);
                    }
                    if let Some(err) = resp.error {
                        return this.on_key_error(&err, &key, ts);
                    }
                    if resp.not_found {
                        Ok(Step::Done(None))
                    } else {
                        Ok(Step::Done(Some(resp.value)))
                    }
                }
            },
            &encoded,
        )
        .await
    }

    /// The pairs with raw keys in `[raw_start, raw_end)` (empty `raw_end` = +∞) in the snapshot
    /// at `ts`, in key order, at most `limit` of them (0 = no limit). Pages through
    /// [`SnapshotConfig::scan_batch`] pairs at a time and across region boundaries.
    pub async fn scan(
        &self,
        raw_start: &[u8],
        raw_end: &[u8],
        ts: Ts,
        limit: usize,
    ) -> Result<KvPairs, SnapshotError> {
        self.check_gc(ts).await?;
        let mut out: KvPairs = Vec::new();
        let mut cursor = raw_start.to_vec();
        loop {
            if !raw_end.is_empty() && cursor.as_slice() >= raw_end {
                break;
            }
            if limit > 0 && out.len() >= limit {
                break;
            }
            let want = if limit > 0 {
                u32::try_from(limit.saturating_sub(out.len()))
                    .unwrap_or(u32::MAX)
                    .min(self.cfg.scan_batch.max(1))
            } else {
                self.cfg.scan_batch.max(1)
            };
            let (pairs, region_end) = self.scan_page(&cursor, raw_end, ts, want).await?;
            let got = pairs.len();
            let mut last: Option<Vec<u8>> = None;
            for (k, v) in pairs {
                if k.as_slice() < cursor.as_slice()
                    || (!raw_end.is_empty() && k.as_slice() >= raw_end)
                    || last.as_deref().is_some_and(|l| k.as_slice() <= l)
                {
                    return Err(SnapshotError::InvalidResponse {
                        detail: format!(
                            "KvScan from {} returned key {} out of order or out of range",
                            hex(&cursor),
                            hex(&k)
                        ),
                    });
                }
                last = Some(k.clone());
                out.push((k, v));
            }
            match last {
                Some(l) if got >= want as usize => cursor = next_key(&l),
                _ => {
                    // The region is exhausted: continue in the next one.
                    match region_end {
                        None => break,
                        Some(end) => {
                            if end <= cursor {
                                return Err(SnapshotError::InvalidResponse {
                                    detail: format!(
                                        "region end {} does not advance the scan past {}",
                                        hex(&end),
                                        hex(&cursor)
                                    ),
                                });
                            }
                            cursor = end;
                        }
                    }
                }
            }
        }
        if limit > 0 {
            out.truncate(limit);
        }
        Ok(out)
    }

    /// One `KvScan` page from `cursor` inside the region containing it. Returns the pairs and
    /// the region's raw end (`None` = +∞).
    async fn scan_page(
        &self,
        cursor: &[u8],
        raw_end: &[u8],
        ts: Ts,
        want: u32,
    ) -> Result<(KvPairs, Option<Vec<u8>>), SnapshotError> {
        let encoded = encode_key(cursor);
        let start = cursor.to_vec();
        let end = raw_end.to_vec();
        self.with_retries(
            "KvScan",
            cursor,
            |region, ctx, mut client| {
                let this = self.clone();
                let start = start.clone();
                let end = end.clone();
                async move {
                    let region_end = if region.region.end_key.is_empty() {
                        None
                    } else {
                        Some(decode_key(&region.region.end_key).map_err(|e| {
                            SnapshotError::InvalidRegionBoundary {
                                region_id: region.id(),
                                detail: e.to_string(),
                            }
                        })?)
                    };
                    // Clamp the request to the region, as client-go does.
                    let req_end = match (&region_end, end.is_empty()) {
                        (Some(r), true) => r.clone(),
                        (Some(r), false) if *r < end => r.clone(),
                        _ => end.clone(),
                    };
                    let req = ScanRequest {
                        context: Some(ctx),
                        start_key: start.clone(),
                        limit: want,
                        version: ts.0,
                        key_only: false,
                        reverse: false,
                        end_key: req_end,
                        sample_step: 0,
                    };
                    let resp = match this.rpc(client.kv_scan(req)).await {
                        Ok(r) => r,
                        Err(e) => {
                            return Ok(Step::retry(e));
                        }
                    };
                    if let Some(err) = resp.region_error {
                        return this.on_region_error(region.id(), &err, ts);
                    }
                    if let Some(err) = resp.error {
                        return Ok(this.on_key_error(&err, &start, ts)?.or_retry());
                    }
                    let mut pairs = Vec::with_capacity(resp.pairs.len());
                    for p in resp.pairs {
                        if let Some(err) = p.error {
                            let key = if p.key.is_empty() {
                                start.clone()
                            } else {
                                p.key
                            };
                            return Ok(this.on_key_error(&err, &key, ts)?.or_retry());
                        }
                        pairs.push((p.key, p.value));
                    }
                    Ok(Step::Done((pairs, region_end)))
                }
            },
            &encoded,
        )
        .await
    }

    /// The fields and values of meta hash `key` (e.g. [`meta::DBS_KEY`]) at `ts`, fields in key
    /// order.
    pub async fn scan_meta_hash(&self, key: &[u8], ts: Ts) -> Result<KvPairs, SnapshotError> {
        let prefix = meta::hash_prefix(key);
        let end = prefix_end(&prefix);
        let pairs = self.scan(&prefix, &end, ts, 0).await?;
        let mut out = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let (hash, field) = meta::decode_hash_field_key(&k)?;
            if hash != key {
                return Err(SnapshotError::Codec(CodecError::invalid(
                    "meta hash key",
                    format!("key {} in the range of hash {}", hex(&k), hex(key)),
                )));
            }
            out.push((field, v));
        }
        Ok(out)
    }

    /// The value of meta string `key` (e.g. [`meta::SCHEMA_VERSION_KEY`]) at `ts`.
    pub async fn get_meta_string(
        &self,
        key: &[u8],
        ts: Ts,
    ) -> Result<Option<Vec<u8>>, SnapshotError> {
        self.get(&meta::string_key(key), ts).await
    }

    async fn rpc<T>(
        &self,
        fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.cfg.rpc_timeout, fut).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => Err(format!("no answer within {:?}", self.cfg.rpc_timeout)),
        }
    }

    /// Updates the route after a region error and says how to retry.
    fn on_region_error<T>(
        &self,
        region_id: u64,
        err: &errorpb::Error,
        ts: Ts,
    ) -> Result<Step<T>, SnapshotError> {
        if let Some(sp) = parse_gc_refusal(&err.message) {
            return Err(SnapshotError::LostByGc {
                ts,
                safe_point: Ts(sp.unwrap_or(0)),
            });
        }
        Ok(self.region_retry(region_id, err))
    }

    fn region_retry<T>(&self, region_id: u64, err: &errorpb::Error) -> Step<T> {
        let text = region_error_text(err);
        if let Some(not_leader) = &err.not_leader {
            match &not_leader.leader {
                Some(leader) if leader.store_id != 0 => {
                    if !self.pd.update_leader(region_id, *leader) {
                        self.pd.invalidate_region(region_id);
                    }
                    return Step::RetryRegion {
                        error: text,
                        pause: false,
                    };
                }
                _ => {
                    // No leader known (an election): ask PD again after a pause.
                    self.pd.invalidate_region(region_id);
                    return Step::retry(text);
                }
            }
        }
        if let Some(e) = &err.epoch_not_match {
            self.pd.invalidate_region(region_id);
            self.pd.on_epoch_not_match(&e.current_regions);
            return Step::RetryRegion {
                error: text,
                pause: false,
            };
        }
        if err.server_is_busy.is_some() {
            return Step::retry(text);
        }
        self.pd.invalidate_region(region_id);
        Step::retry(text)
    }

    /// Classifies a key error: a lock is retried, a GC refusal and anything else fail.
    fn on_key_error<T>(
        &self,
        err: &KeyError,
        key: &[u8],
        ts: Ts,
    ) -> Result<Step<T>, SnapshotError> {
        if let Some(lock) = &err.locked {
            return Ok(Step::RetryLock(lock.clone()));
        }
        for text in [&err.abort, &err.retryable] {
            if let Some(sp) = parse_gc_refusal(text) {
                return Err(SnapshotError::LostByGc {
                    ts,
                    safe_point: Ts(sp.unwrap_or(0)),
                });
            }
        }
        if !err.retryable.is_empty() {
            return Ok(Step::retry(format!("retryable: {}", err.retryable)));
        }
        Err(SnapshotError::KeyError {
            key: key.to_vec(),
            detail: key_error_text(err),
        })
    }

    /// The gRPC client of a store, connecting on first use.
    async fn client(&self, store_id: u64) -> Result<TikvClient<Channel>, String> {
        if let Some((_, c)) = self.conns.lock().get(&store_id) {
            return Ok(c.clone());
        }
        let store: metapb::Store = self
            .pd
            .get_store(store_id)
            .await
            .map_err(|e| e.to_string())?;
        if store.address.is_empty() {
            return Err(format!("store {store_id} has no address"));
        }
        let tls = match &self.pd.config().tls {
            Some(t) => Some(t.load().map_err(|e| e.to_string())?),
            None => None,
        };
        let url = if store.address.contains("://") {
            store.address.clone()
        } else if tls.is_some() {
            format!("https://{}", store.address)
        } else {
            format!("http://{}", store.address)
        };
        let mut ep = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("bad store address {url}: {e}"))?
            .connect_timeout(self.cfg.connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            ep = ep.tls_config(tls).map_err(|e| e.to_string())?;
        }
        let channel = tokio::time::timeout(self.cfg.connect_timeout, ep.connect())
            .await
            .map_err(|_| format!("connecting to store {store_id} at {url} timed out"))?
            .map_err(|e| format!("connecting to store {store_id} at {url}: {e}"))?;
        let client = TikvClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        self.conns.lock().insert(store_id, (url, client.clone()));
        Ok(client)
    }

    fn drop_store(&self, store_id: u64) {
        self.conns.lock().remove(&store_id);
        self.pd.invalidate_store(store_id);
    }

    /// Runs `attempt` against the leader of the region containing `encoded`, retrying region
    /// errors, transport failures and locks within the configured bounds.
    async fn with_retries<T, F, Fut>(
        &self,
        what: &'static str,
        raw_key: &[u8],
        mut attempt: F,
        encoded: &[u8],
    ) -> Result<T, SnapshotError>
    where
        F: FnMut(RegionInfo, Context, TikvClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Step<T>, SnapshotError>>,
    {
        let started = Instant::now();
        let deadline = started + self.cfg.request_timeout;
        let mut backoff = Backoff::new(&self.cfg);
        let mut lock_backoff = Backoff::new(&self.cfg);
        let mut region_attempts = 0u32;
        let mut lock_attempts = 0u32;
        let mut last_error = String::from("no attempt made");
        loop {
            if Instant::now() >= deadline {
                return Err(SnapshotError::Timeout {
                    what,
                    elapsed: started.elapsed(),
                    last_error,
                });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let step =
                match tokio::time::timeout(remaining, self.attempt_once(encoded, &mut attempt))
                    .await
                {
                    Ok(step) => step?,
                    Err(_) => {
                        return Err(SnapshotError::Timeout {
                            what,
                            elapsed: started.elapsed(),
                            last_error,
                        });
                    }
                };
            match step {
                Step::Done(v) => return Ok(v),
                Step::RetryRegion { error, pause } => {
                    region_attempts = region_attempts.saturating_add(1);
                    tracing::debug!(what, key = %hex(raw_key), error = %error, "snapshot read retry");
                    last_error = error;
                    if region_attempts > self.cfg.max_region_retries {
                        return Err(SnapshotError::RegionUnavailable {
                            key: raw_key.to_vec(),
                            attempts: region_attempts,
                            last_error,
                        });
                    }
                    if pause {
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                Step::RetryLock(lock) => {
                    lock_attempts = lock_attempts.saturating_add(1);
                    if lock_attempts > self.cfg.max_lock_retries {
                        return Err(SnapshotError::Locked {
                            key: if lock.key.is_empty() {
                                raw_key.to_vec()
                            } else {
                                lock.key
                            },
                            primary: lock.primary_lock,
                            lock_ts: lock.lock_version,
                            ttl_ms: lock.lock_ttl,
                            attempts: lock_attempts,
                        });
                    }
                    last_error = format!(
                        "locked by transaction {} (primary {})",
                        lock.lock_version,
                        hex(&lock.primary_lock)
                    );
                    tokio::time::sleep(lock_backoff.next_delay()).await;
                }
            }
        }
    }

    /// Locates the region and its leader, connects, and runs one attempt. Routing and
    /// connection failures become region retries.
    async fn attempt_once<T, F, Fut>(
        &self,
        encoded: &[u8],
        attempt: &mut F,
    ) -> Result<Step<T>, SnapshotError>
    where
        F: FnMut(RegionInfo, Context, TikvClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Step<T>, SnapshotError>>,
    {
        let region = match self.pd.locate_key(encoded).await {
            Ok(r) => r,
            Err(e) if e.is_retryable() || matches!(e, PdError::NoRegionForKey { .. }) => {
                return Ok(Step::retry(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let peer = match region
            .leader
            .filter(|p| p.store_id != 0)
            .or_else(|| region.region.peers.first().cloned())
        {
            Some(p) => p,
            None => {
                self.pd.invalidate_region(region.id());
                return Ok(Step::retry(format!("region {} has no peer", region.id())));
            }
        };
        let client = match self.client(peer.store_id).await {
            Ok(c) => c,
            Err(e) => {
                self.drop_store(peer.store_id);
                self.pd.invalidate_region(region.id());
                return Ok(Step::retry(e));
            }
        };
        let ctx = Context {
            region_id: region.id(),
            region_epoch: region.region.region_epoch,
            peer: Some(peer),
            ..Context::default()
        };
        let region_id = region.id();
        let step = attempt(region, ctx, client).await?;
        if let Step::RetryRegion { error, .. } = &step
            && is_transport_error(error)
        {
            self.drop_store(peer.store_id);
            self.pd.invalidate_region(region_id);
        }
        Ok(step)
    }
}

/// True for errors of the gRPC layer itself (as formatted by `rpc`), after which the connection
/// is not trusted.
fn is_transport_error(error: &str) -> bool {
    error.starts_with("Unavailable")
        || error.starts_with("Unknown")
        || error.starts_with("Internal")
        || error.starts_with("Cancelled")
        || error.starts_with("no answer within")
}

fn region_error_text(err: &errorpb::Error) -> String {
    let kind = if err.not_leader.is_some() {
        "not leader"
    } else if err.epoch_not_match.is_some() {
        "epoch not match"
    } else if err.region_not_found.is_some() {
        "region not found"
    } else if err.key_not_in_region.is_some() {
        "key not in region"
    } else if err.server_is_busy.is_some() {
        "server is busy"
    } else if err.stale_command.is_some() {
        "stale command"
    } else if err.store_not_match.is_some() {
        "store not match"
    } else {
        "region error"
    };
    if err.message.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {}", err.message)
    }
}

fn key_error_text(err: &KeyError) -> String {
    if !err.abort.is_empty() {
        return format!("abort: {}", err.abort);
    }
    if err.conflict.is_some() {
        return "write conflict".into();
    }
    if err.txn_not_found.is_some() {
        return "transaction not found".into();
    }
    if err.commit_ts_expired.is_some() {
        return "commit ts expired".into();
    }
    if err.deadlock.is_some() {
        return "deadlock".into();
    }
    format!("{err:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_refusal_text() {
        assert_eq!(
            parse_gc_refusal(
                "GC life time is shorter than transaction duration, transaction starts at 100, \
                 GC safe point is 4567"
            ),
            Some(Some(4567))
        );
        assert_eq!(
            parse_gc_refusal("GC life time is shorter than transaction duration"),
            Some(None)
        );
        assert_eq!(parse_gc_refusal("write conflict"), None);
        assert_eq!(
            parse_gc_refusal(
                "GC life time is shorter than transaction duration, GC safe point is 99999999999999999999999"
            ),
            Some(None)
        );
    }

    #[test]
    fn key_helpers() {
        assert_eq!(next_key(b"ab"), b"ab\0".to_vec());
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
        assert_eq!(prefix_end(&[0xff, 0xff]), Vec::<u8>::new());
        assert_eq!(hex(&[0x6d, 0x00]), "6d00");
        assert_eq!(hex(&[]), "(empty)");
        assert_eq!(hex(&[0u8; 100]), format!("{}...", "00".repeat(48)));
    }

    #[test]
    fn lost_by_gc_message() {
        let e = SnapshotError::LostByGc {
            ts: Ts(10),
            safe_point: Ts(20),
        };
        assert!(e.to_string().starts_with("snapshot lost by GC: read at ts"));
        assert!(e.is_lost_by_gc());
    }

    #[test]
    fn backoff_is_bounded() {
        let cfg = SnapshotConfig {
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            ..SnapshotConfig::default()
        };
        let mut b = Backoff::new(&cfg);
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_millis(60));
        }
    }

    #[test]
    fn region_error_texts() {
        let e = errorpb::Error {
            message: "x".into(),
            epoch_not_match: Some(errorpb::EpochNotMatch::default()),
            ..Default::default()
        };
        assert_eq!(region_error_text(&e), "epoch not match: x");
        assert_eq!(
            region_error_text(&errorpb::Error::default()),
            "region error"
        );
    }
}
