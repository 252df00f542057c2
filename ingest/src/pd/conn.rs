//! Leader discovery, connection state and the retry loop shared by every PD request.
//!
//! Only the PD leader serves requests; a follower answers gRPC `Unavailable "not leader"`, and
//! the leader can change at any time (election, restart, network partition). So the client keeps
//! one channel to the current leader and, when a request fails in a way that suggests the leader
//! is gone, asks every PD it knows about (`GetMembers` works on any member) who the leader is now,
//! reconnects, and retries — with jittered exponential backoff, all within the request's timeout.
//!
//! Re-discovery is serialized and generation-counted: when many requests fail at once (the usual
//! case when the leader dies), the first one reconnects and the others notice the new generation
//! and simply retry, instead of stampeding PD with `GetMembers`.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rand::Rng;
use tokio::time::Instant;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use tidal_proto::features::MAX_MESSAGE_SIZE;
use tidal_proto::pdpb::pd_client::PdClient as PdGrpcClient;
use tidal_proto::pdpb::{
    ErrorType, GetAllStoresResponse, GetGcSafePointResponse, GetMembersRequest, GetMembersResponse,
    GetRegionResponse, GetStoreResponse, Member, RequestHeader, ResponseHeader,
    ScanRegionsResponse, UpdateGcSafePointResponse, UpdateServiceGcSafePointResponse,
};

use super::error::detail_of;
use super::region_cache::RegionCache;
use super::tls::error_chain;
use super::{PdConfig, PdError};

/// The generated gRPC client over a tonic channel.
pub(crate) type PdGrpc = PdGrpcClient<Channel>;

/// How often a failed re-discovery may be repeated by other callers.
const REDISCOVER_COOLDOWN: Duration = Duration::from_millis(50);

/// Jittered exponential backoff: 50 ms doubling to 1 s, each delay drawn from [d/2, d].
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Backoff {
        Backoff { next: Self::BASE }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(2);
        Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
    }
}

/// Turns a configured or advertised endpoint into the URL tonic dials.
///
/// Accepts `host:port`, `http://host:port` and `https://host:port` (a trailing `/` is ignored).
/// With TLS configured the scheme is forced to `https` (PD advertises the scheme it serves, but a
/// bare `host:port` carries none); without TLS an `https` endpoint is an error, since it could not
/// be dialed.
pub(crate) fn normalize_endpoint(raw: &str, tls: bool) -> Result<String, PdError> {
    let invalid = |detail: &str| PdError::InvalidEndpoint {
        endpoint: raw.to_string(),
        detail: detail.to_string(),
    };
    let trimmed = raw.trim().trim_end_matches('/');
    let (scheme, rest) = if let Some(rest) = trimmed.strip_prefix("http://") {
        ("http", rest)
    } else if let Some(rest) = trimmed.strip_prefix("https://") {
        ("https", rest)
    } else if trimmed.contains("://") {
        return Err(invalid("only http and https endpoints are supported"));
    } else {
        ("", trimmed)
    };
    if rest.is_empty() {
        return Err(invalid("empty address"));
    }
    if rest.contains('/') {
        return Err(invalid("an endpoint has no path; expected host:port"));
    }
    let port_ok = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(invalid("expected host:port"));
    }
    let scheme = match (scheme, tls) {
        (_, true) => "https",
        ("https", false) => {
            return Err(invalid("https endpoint but no TLS configuration"));
        }
        _ => "http",
    };
    let url = format!("{scheme}://{rest}");
    Endpoint::from_shared(url.clone()).map_err(|e| invalid(&error_chain(&e)))?;
    Ok(url)
}

/// Dials one PD endpoint, bounded by the connect timeout.
async fn connect_channel(
    url: &str,
    cfg: &PdConfig,
    tls: Option<&ClientTlsConfig>,
) -> Result<Channel, String> {
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| error_chain(&e))?
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true);
    if let Some(tls) = tls {
        ep = ep.tls_config(tls.clone()).map_err(|e| error_chain(&e))?;
    }
    match tokio::time::timeout(cfg.connect_timeout, ep.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err(format!("connect timed out after {:?}", cfg.connect_timeout)),
    }
}

/// The generated client with raised message size limits.
fn grpc(ch: Channel) -> PdGrpc {
    PdGrpcClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// What one successful discovery round learned.
pub(crate) struct Discovered {
    pub(crate) cluster_id: u64,
    pub(crate) members: Vec<Member>,
    pub(crate) leader_url: String,
    pub(crate) client: PdGrpc,
}

/// One discovery round: `GetMembers` on each candidate in turn until one names a leader that can
/// be dialed. `expected_cluster` is `None` only at first connect. Returns the last error text.
pub(crate) async fn discover_once(
    candidates: &[String],
    expected_cluster: Option<u64>,
    cfg: &PdConfig,
    tls: Option<&ClientTlsConfig>,
) -> Result<Discovered, String> {
    let mut last_error = String::from("no endpoint tried");
    for url in candidates {
        let ch = match connect_channel(url, cfg, tls).await {
            Ok(ch) => ch,
            Err(e) => {
                last_error = format!("{url}: {e}");
                continue;
            }
        };
        let req = GetMembersRequest {
            header: Some(RequestHeader {
                cluster_id: expected_cluster.unwrap_or(0),
                ..Default::default()
            }),
        };
        let per_call = cfg.connect_timeout.max(Duration::from_millis(100));
        let resp = match tokio::time::timeout(per_call, grpc(ch.clone()).get_members(req)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                last_error = format!(
                    "{url}: GetMembers: {:?}: {}",
                    status.code(),
                    status.message()
                );
                continue;
            }
            Err(_) => {
                last_error = format!("{url}: GetMembers timed out after {per_call:?}");
                continue;
            }
        };
        match leader_of(url, &resp, expected_cluster, tls.is_some()) {
            Ok((cluster_id, leader_urls)) => {
                for leader_url in leader_urls {
                    let channel = if &leader_url == url {
                        Ok(ch.clone())
                    } else {
                        connect_channel(&leader_url, cfg, tls).await
                    };
                    match channel {
                        Ok(ch) => {
                            return Ok(Discovered {
                                cluster_id,
                                members: resp.members.clone(),
                                leader_url,
                                client: grpc(ch),
                            });
                        }
                        Err(e) => last_error = format!("leader {leader_url}: {e}"),
                    }
                }
            }
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// Checks a `GetMembers` answer and extracts `(cluster_id, leader client URLs)`.
pub(crate) fn leader_of(
    url: &str,
    resp: &GetMembersResponse,
    expected_cluster: Option<u64>,
    tls: bool,
) -> Result<(u64, Vec<String>), String> {
    let header = resp.header.clone().unwrap_or_default();
    if let Some(err) = header
        .error
        .as_ref()
        .filter(|e| e.r#type != ErrorType::Ok as i32)
    {
        return Err(format!("{url}: GetMembers error: {}", err.message));
    }
    if header.cluster_id == 0 {
        return Err(format!("{url}: GetMembers answer without a cluster id"));
    }
    if let Some(expected) = expected_cluster
        && header.cluster_id != expected
    {
        return Err(PdError::ClusterIdMismatch {
            expected,
            actual: header.cluster_id,
            endpoint: url.to_string(),
        }
        .to_string());
    }
    let leader_urls: Vec<String> = resp
        .leader
        .as_ref()
        .map(|l| {
            l.client_urls
                .iter()
                .filter_map(|u| normalize_endpoint(u, tls).ok())
                .collect()
        })
        .unwrap_or_default();
    if leader_urls.is_empty() {
        return Err(format!(
            "{url}: no PD leader with a usable client URL (election in progress?)"
        ));
    }
    Ok((header.cluster_id, leader_urls))
}

/// The connection to the current leader.
struct ConnState {
    client: PdGrpc,
    leader_url: String,
    members: Vec<Member>,
    generation: u64,
}

/// State shared by the client handles and the TSO task.
pub(crate) struct Inner {
    pub(crate) cfg: PdConfig,
    /// Configured endpoints, normalized.
    configured: Vec<String>,
    tls: Option<ClientTlsConfig>,
    cluster_id: u64,
    state: RwLock<ConnState>,
    /// Serializes re-discovery.
    reconnect: tokio::sync::Mutex<Option<(Instant, PdError)>>,
    /// `TsoRequest`s sent (one per batch), for tests and metrics.
    pub(crate) tso_requests: AtomicU64,
    pub(crate) regions: Mutex<RegionCache>,
    pub(crate) stores: Mutex<std::collections::HashMap<u64, tidal_proto::metapb::Store>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdClient")
            .field("cluster_id", &self.cluster_id)
            .field("leader_url", &self.leader_url())
            .field("endpoints", &self.configured)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Connects: discovery rounds with backoff until one succeeds or `request_timeout` passes.
    pub(crate) async fn connect(cfg: PdConfig) -> Result<Inner, PdError> {
        if cfg.endpoints.is_empty() {
            return Err(PdError::NoEndpoints);
        }
        let tls = cfg.tls.as_ref().map(|t| t.load()).transpose()?;
        let configured = dedup(
            cfg.endpoints
                .iter()
                .map(|e| normalize_endpoint(e, tls.is_some()))
                .collect::<Result<Vec<_>, _>>()?,
        );
        let deadline = Instant::now() + cfg.request_timeout;
        let mut backoff = Backoff::new();
        let found = loop {
            match discover_once(&configured, None, &cfg, tls.as_ref()).await {
                Ok(found) => break found,
                Err(last_error) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(PdError::Unreachable {
                            endpoints: configured,
                            last_error,
                        });
                    }
                    tracing::debug!(%last_error, "PD discovery failed; retrying");
                    tokio::time::sleep(backoff.next_delay().min(deadline - now)).await;
                }
            }
        };
        tracing::info!(
            cluster_id = found.cluster_id,
            leader = %found.leader_url,
            "connected to PD"
        );
        Ok(Inner {
            cfg,
            configured,
            tls,
            cluster_id: found.cluster_id,
            state: RwLock::new(ConnState {
                client: found.client,
                leader_url: found.leader_url,
                members: found.members,
                generation: 0,
            }),
            reconnect: tokio::sync::Mutex::new(None),
            tso_requests: AtomicU64::new(0),
            regions: Mutex::new(RegionCache::new()),
            stores: Mutex::new(Default::default()),
        })
    }

    pub(crate) fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub(crate) fn header(&self) -> RequestHeader {
        RequestHeader {
            cluster_id: self.cluster_id,
            caller_component: "tidal".into(),
            ..Default::default()
        }
    }

    pub(crate) fn client(&self) -> PdGrpc {
        self.state.read().client.clone()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.state.read().generation
    }

    pub(crate) fn leader_url(&self) -> String {
        self.state.read().leader_url.clone()
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        self.state.read().members.clone()
    }

    /// Every endpoint worth asking who the leader is: the members' client URLs from the last
    /// `GetMembers`, then the configured endpoints, without duplicates.
    pub(crate) fn known_endpoints(&self) -> Vec<String> {
        let tls = self.tls.is_some();
        let state = self.state.read();
        let advertised = state
            .members
            .iter()
            .flat_map(|m| m.client_urls.iter())
            .filter_map(|u| normalize_endpoint(u, tls).ok());
        dedup(
            std::iter::once(state.leader_url.clone())
                .chain(advertised)
                .chain(self.configured.iter().cloned())
                .collect(),
        )
    }

    /// Finds the leader again unless someone already did since `seen_generation`.
    pub(crate) async fn rediscover(&self, seen_generation: u64) -> Result<(), PdError> {
        let mut last_failure = self.reconnect.lock().await;
        if self.generation() != seen_generation {
            return Ok(());
        }
        if let Some((at, err)) = last_failure.as_ref()
            && at.elapsed() < REDISCOVER_COOLDOWN
        {
            return Err(err.clone());
        }
        let candidates = self.known_endpoints();
        match discover_once(
            &candidates,
            Some(self.cluster_id),
            &self.cfg,
            self.tls.as_ref(),
        )
        .await
        {
            Ok(found) => {
                let mut state = self.state.write();
                if state.leader_url != found.leader_url {
                    tracing::info!(
                        old = %state.leader_url,
                        new = %found.leader_url,
                        "PD leader changed"
                    );
                }
                state.client = found.client;
                state.leader_url = found.leader_url;
                state.members = found.members;
                state.generation += 1;
                *last_failure = None;
                Ok(())
            }
            Err(last_error) => {
                let err = PdError::Unreachable {
                    endpoints: candidates,
                    last_error,
                };
                *last_failure = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }

    pub(crate) fn timeout_error(
        &self,
        what: &'static str,
        elapsed: Duration,
        last_error: &str,
    ) -> PdError {
        PdError::Timeout {
            what,
            elapsed,
            endpoints: self.known_endpoints(),
            last_error: last_error.to_string(),
        }
    }

    /// Runs a unary request against the leader, re-discovering and retrying on leader or
    /// connection errors until `request_timeout` has passed.
    pub(crate) async fn call<Resp, F, Fut>(
        &self,
        what: &'static str,
        mut f: F,
    ) -> Result<Resp, PdError>
    where
        Resp: HasHeader,
        F: FnMut(PdGrpc, RequestHeader) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let started = Instant::now();
        let deadline = started + self.cfg.request_timeout;
        let mut backoff = Backoff::new();
        let mut last_error = String::from("no response before the deadline");
        loop {
            let (client, generation) = {
                let s = self.state.read();
                (s.client.clone(), s.generation)
            };
            let err = match tokio::time::timeout_at(deadline, f(client, self.header())).await {
                Err(_) => return Err(self.timeout_error(what, started.elapsed(), &last_error)),
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    match check_header(what, resp.header(), self) {
                        Ok(()) => return Ok(resp),
                        Err(e) => e,
                    }
                }
                Ok(Err(status)) => classify_status(what, &status, self),
            };
            if !matches!(err, PdError::Unreachable { .. }) {
                return Err(err);
            }
            last_error = detail_of(&err);
            tracing::debug!(what, error = %last_error, "PD request failed; re-discovering leader");
            // Back off (never past the deadline), find the leader again, and retry. The last
            // attempt runs at the deadline, so a request gives up only after request_timeout.
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timeout_error(what, started.elapsed(), &last_error));
            }
            tokio::time::sleep(backoff.next_delay().min(deadline - now)).await;
            match tokio::time::timeout_at(deadline, self.rediscover(generation)).await {
                Err(_) => return Err(self.timeout_error(what, started.elapsed(), &last_error)),
                Ok(Err(e)) => last_error = detail_of(&e),
                Ok(Ok(())) => {}
            }
        }
    }
}

fn dedup(urls: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(urls.len());
    for u in urls {
        if !out.contains(&u) {
            out.push(u);
        }
    }
    out
}

/// Maps a gRPC status to an error. Leader and connection problems become
/// [`PdError::Unreachable`] (retried after re-discovery); everything else is final.
pub(crate) fn classify_status(
    what: &'static str,
    status: &tonic::Status,
    inner: &Inner,
) -> PdError {
    use tonic::Code;
    let message = status.message();
    let lower = message.to_ascii_lowercase();
    let connection_trouble = [
        "not leader",
        "transport",
        "connection",
        "not ready",
        "broken pipe",
        "reset",
        "closed",
    ]
    .iter()
    .any(|needle| lower.contains(needle));
    let retry = match status.code() {
        Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => true,
        Code::Unknown | Code::Internal => connection_trouble,
        _ => lower.contains("not leader"),
    };
    if retry {
        let leader = inner.leader_url();
        PdError::Unreachable {
            last_error: format!("{leader}: {what}: {:?}: {message}", status.code()),
            endpoints: vec![leader],
        }
    } else {
        PdError::Grpc {
            what,
            code: status.code(),
            message: message.to_string(),
        }
    }
}

/// Checks a response header: PD errors, "not leader" in the header, and the cluster id.
pub(crate) fn check_header(
    what: &'static str,
    header: Option<&ResponseHeader>,
    inner: &Inner,
) -> Result<(), PdError> {
    let Some(header) = header else {
        return Ok(());
    };
    if let Some(err) = header
        .error
        .as_ref()
        .filter(|e| e.r#type != ErrorType::Ok as i32)
    {
        if err.message.to_ascii_lowercase().contains("not leader") {
            let leader = inner.leader_url();
            return Err(PdError::Unreachable {
                last_error: format!("{leader}: {what}: {}", err.message),
                endpoints: vec![leader],
            });
        }
        return Err(PdError::Pd {
            error_type: ErrorType::try_from(err.r#type).unwrap_or(ErrorType::Unknown),
            message: err.message.clone(),
        });
    }
    if header.cluster_id != 0 && header.cluster_id != inner.cluster_id() {
        return Err(PdError::ClusterIdMismatch {
            expected: inner.cluster_id(),
            actual: header.cluster_id,
            endpoint: inner.leader_url(),
        });
    }
    Ok(())
}

/// PD responses that carry a `ResponseHeader`.
pub(crate) trait HasHeader {
    fn header(&self) -> Option<&ResponseHeader>;
}

macro_rules! has_header {
    ($($t:ty),* $(,)?) => {
        $(impl HasHeader for $t {
            fn header(&self) -> Option<&ResponseHeader> {
                self.header.as_ref()
            }
        })*
    };
}

has_header!(
    GetMembersResponse,
    GetRegionResponse,
    ScanRegionsResponse,
    GetStoreResponse,
    GetAllStoresResponse,
    GetGcSafePointResponse,
    UpdateGcSafePointResponse,
    UpdateServiceGcSafePointResponse,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379", false).unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            normalize_endpoint("http://pd-0:2379/", false).unwrap(),
            "http://pd-0:2379"
        );
        assert_eq!(
            normalize_endpoint(" pd-0:2379 ", true).unwrap(),
            "https://pd-0:2379"
        );
        assert_eq!(
            normalize_endpoint("http://pd-0:2379", true).unwrap(),
            "https://pd-0:2379"
        );
        assert_eq!(
            normalize_endpoint("[::1]:2379", false).unwrap(),
            "http://[::1]:2379"
        );
        for bad in [
            "",
            "pd-0",
            "pd-0:",
            ":2379",
            "pd-0:99999",
            "grpc://pd:1",
            "http://pd:1/x",
        ] {
            assert!(
                matches!(
                    normalize_endpoint(bad, false),
                    Err(PdError::InvalidEndpoint { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            normalize_endpoint("https://pd:1", false),
            Err(PdError::InvalidEndpoint {
                endpoint: "https://pd:1".into(),
                detail: "https endpoint but no TLS configuration".into()
            })
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new();
        let d1 = b.next_delay();
        assert!(
            d1 >= Duration::from_millis(25) && d1 <= Duration::from_millis(50),
            "{d1:?}"
        );
        let d2 = b.next_delay();
        assert!(
            d2 >= Duration::from_millis(50) && d2 <= Duration::from_millis(100),
            "{d2:?}"
        );
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(1));
        }
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(500), "{d:?}");
    }

    fn members_response(cluster_id: u64, leader_urls: &[&str]) -> GetMembersResponse {
        let leader = Member {
            name: "pd-1".into(),
            client_urls: leader_urls.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        GetMembersResponse {
            header: Some(ResponseHeader {
                cluster_id,
                error: None,
            }),
            members: vec![leader.clone()],
            leader: Some(leader),
            ..Default::default()
        }
    }

    #[test]
    fn leader_is_read_from_members() {
        let r = members_response(42, &["http://10.0.0.1:2379", "garbage"]);
        assert_eq!(
            leader_of("http://x:1", &r, None, false).unwrap(),
            (42, vec!["http://10.0.0.1:2379".to_string()])
        );
        assert_eq!(
            leader_of("http://x:1", &r, Some(42), true).unwrap(),
            (42, vec!["https://10.0.0.1:2379".to_string()])
        );
        let e = leader_of("http://x:1", &r, Some(7), false).unwrap_err();
        assert_eq!(
            e,
            "PD cluster id mismatch: expected 7, got 42 from http://x:1"
        );
        let none = members_response(42, &[]);
        assert!(
            leader_of("http://x:1", &none, None, false)
                .unwrap_err()
                .contains("no PD leader")
        );
        let no_id = members_response(0, &["http://a:1"]);
        assert!(
            leader_of("http://x:1", &no_id, None, false)
                .unwrap_err()
                .contains("cluster id")
        );
    }
}
