//! The gRPC front end: `cdcpb.ChangeData` with `EventFeed` and `EventFeedV2` for one store.
//!
//! Per call (TiKV `service.rs`):
//! - `EventFeedV2` reads the `features` metadata header: a comma-separated list, each item
//!   trimmed; `stream-multiplexing` is the only known feature and any other item (an empty one
//!   included) fails the call with `UNIMPLEMENTED` naming the unknown items. `EventFeed` ignores
//!   headers and never multiplexes.
//! - The first request's `header.ticdc_version` (semver without a leading "v"; missing or
//!   unparsable means 0.0.0) fixes the feature gates: ≥ 4.0.8 batch resolved ts, ≥ 5.3.0
//!   cluster-id validation.
//! - A reader task applies requests in arrival order (register, deregister). When the client
//!   half-closes or the request stream fails, the stream's subscriptions are dropped and the
//!   response ends after what is queued (TiKV deregisters the connection the same way).
//! - A sender task drains the stream's queue (see `sink`); if the client goes away the stream
//!   is dropped.
//!
//! The service is served by hand rather than through the generated `ChangeDataServer`: the
//! responses leave as pre-encoded bytes ([`FeedCodec`]), which the generated server (fixed to
//! prost-encoding `ChangeDataEvent` structs) cannot send. Paths, headers, status codes and the
//! bytes on the wire are those of `cdcpb.ChangeData`.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use futures::future::{BoxFuture, Ready, ready};
use tidal_proto::cdcpb::ChangeDataRequest;
use tidal_proto::cdcpb::change_data_server::SERVICE_NAME;
use tidal_proto::features::{EVENT_FEED_FEATURES_KEY, STREAM_MULTIPLEXING};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{Body, Context, Poll, Service, StdError, http};
use tonic::metadata::MetadataMap;
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use super::CdcHub;
use super::sink::{self, Conn, FeatureGates, SenderExit};
use super::wire::{FeedCodec, WireMessage};

/// Capacity of the channel between a stream's sender task and tonic, in messages.
const RESPONSE_CHANNEL_CAPACITY: usize = 4;

/// gRPC path of `EventFeed`.
const EVENT_FEED_PATH: &str = "/cdcpb.ChangeData/EventFeed";
/// gRPC path of `EventFeedV2`.
const EVENT_FEED_V2_PATH: &str = "/cdcpb.ChangeData/EventFeedV2";

/// The response stream of one `EventFeed`/`EventFeedV2` call.
type FeedStream = ReceiverStream<Result<WireMessage, Status>>;

/// The `ChangeData` gRPC service of one store, sharing the cluster's [`CdcHub`]; add it to a
/// tonic `Server` as it is.
#[derive(Clone)]
pub struct CdcService {
    hub: Arc<CdcHub>,
    store_id: u64,
    max_decoding_message_size: Option<usize>,
}

impl fmt::Debug for CdcService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CdcService")
            .field("store_id", &self.store_id)
            .finish_non_exhaustive()
    }
}

/// Parses the `features` header of `EventFeedV2`; `Ok(true)` when multiplexing is requested.
/// Every occurrence of the header is checked (TiKV keeps the last one).
pub(crate) fn parse_features(metadata: &MetadataMap) -> Result<bool, Status> {
    let mut multiplexing = false;
    for value in metadata.get_all(EVENT_FEED_FEATURES_KEY) {
        // Non-UTF-8 or non-ASCII values read as empty, as TiKV's `from_utf8(..).unwrap_or_default()`.
        let text = value.to_str().unwrap_or_default();
        let mut unknown = Vec::new();
        let mut found = false;
        for item in text.split(',').map(str::trim) {
            if item == STREAM_MULTIPLEXING {
                found = true;
            } else {
                unknown.push(item);
            }
        }
        if !unknown.is_empty() {
            return Err(Status::unimplemented(unknown.join(",")));
        }
        multiplexing = found;
    }
    Ok(multiplexing)
}

/// A parsed semantic version: core numbers and whether it has a pre-release part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    core: (u64, u64, u64),
    pre_release: bool,
}

impl Version {
    const ZERO: Version = Version {
        core: (0, 0, 0),
        pre_release: false,
    };

    /// Strict semver parsing as TiKV's `semver` crate does: `MAJOR.MINOR.PATCH`, numbers without
    /// leading zeros, optional `-pre.release` and `+build` parts. Anything else is `None`.
    pub(crate) fn parse(text: &str) -> Option<Version> {
        let (rest, build) = match text.split_once('+') {
            Some((r, b)) => (r, Some(b)),
            None => (text, None),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let ident_ok = |s: &str, numeric_rule: bool| {
            !s.is_empty()
                && s.split('.').all(|part| {
                    !part.is_empty()
                        && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !(numeric_rule
                            && part.len() > 1
                            && part.starts_with('0')
                            && part.bytes().all(|b| b.is_ascii_digit()))
                })
        };
        if build.is_some_and(|b| !ident_ok(b, false)) {
            return None;
        }
        if pre.is_some_and(|p| !ident_ok(p, true)) {
            return None;
        }
        let mut nums = core.split('.');
        let mut num = || -> Option<u64> {
            let part = nums.next()?;
            if part.is_empty()
                || !part.bytes().all(|b| b.is_ascii_digit())
                || (part.len() > 1 && part.starts_with('0'))
            {
                return None;
            }
            part.parse().ok()
        };
        let (major, minor, patch) = (num()?, num()?, num()?);
        if nums.next().is_some() {
            return None;
        }
        Some(Version {
            core: (major, minor, patch),
            pre_release: pre.is_some(),
        })
    }

    /// `self ≥ MAJOR.MINOR.PATCH` (a pre-release is below its release).
    pub(crate) fn at_least(&self, core: (u64, u64, u64)) -> bool {
        self.core > core || (self.core == core && !self.pre_release)
    }
}

/// The feature gates a `ticdc_version` enables.
pub(crate) fn gates_for(ticdc_version: &str) -> FeatureGates {
    let v = Version::parse(ticdc_version).unwrap_or(Version::ZERO);
    FeatureGates {
        batch_resolved_ts: v.at_least((4, 0, 8)),
        validate_cluster_id: v.at_least((5, 3, 0)),
    }
}

impl CdcService {
    pub(super) fn new(hub: Arc<CdcHub>, store_id: u64) -> Self {
        CdcService {
            hub,
            store_id,
            max_decoding_message_size: None,
        }
    }

    /// Limits the size of a decoded request (tonic's default is 4 MiB).
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self
    }

    /// The store this service belongs to.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    fn open(
        &self,
        request: Request<Streaming<ChangeDataRequest>>,
        v2: bool,
    ) -> Result<Response<FeedStream>, Status> {
        let multiplexing = if v2 {
            parse_features(request.metadata())?
        } else {
            false
        };
        let Some(conn) = self.hub.open_conn(self.store_id, multiplexing) else {
            return Err(Status::unavailable("cdc service shut down"));
        };
        let (tx, rx) = mpsc::channel(RESPONSE_CHANNEL_CAPACITY);
        let requests = request.into_inner();
        tokio::spawn(run_reader(
            Arc::clone(&self.hub),
            Arc::clone(&conn),
            requests,
        ));
        let hub = Arc::clone(&self.hub);
        tokio::spawn(async move {
            if sink::run_sender(&conn, tx).await == SenderExit::ClientGone {
                hub.close_conn(conn.id, None);
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Applies a stream's requests in order until it ends or the server closes the stream.
async fn run_reader(hub: Arc<CdcHub>, conn: Arc<Conn>, mut requests: Streaming<ChangeDataRequest>) {
    let mut cancelled = conn.cancelled();
    let mut first = true;
    loop {
        let next = tokio::select! {
            r = requests.message() => r,
            _ = cancelled.wait_for(|v| *v) => return,
        };
        match next {
            Ok(Some(req)) => {
                if first {
                    first = false;
                    let version = req
                        .header
                        .as_ref()
                        .map(|h| h.ticdc_version.as_str())
                        .unwrap_or_default();
                    conn.set_gates(gates_for(version));
                }
                if !conn.is_open() {
                    return;
                }
                hub.handle_request(&conn, req);
            }
            Ok(None) => {
                hub.close_conn(conn.id, None);
                return;
            }
            Err(status) => {
                tracing::debug!(conn = conn.id, %status, "cdc request stream failed");
                hub.close_conn(conn.id, None);
                return;
            }
        }
    }
}

/// One method of the service, as tonic's streaming handler sees it.
struct FeedMethod {
    service: CdcService,
    v2: bool,
}

impl StreamingService<ChangeDataRequest> for FeedMethod {
    type Response = WireMessage;
    type ResponseStream = FeedStream;
    type Future = Ready<Result<Response<FeedStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<ChangeDataRequest>>) -> Self::Future {
        ready(self.service.open(request, self.v2))
    }
}

impl<B> Service<http::Request<B>> for CdcService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let v2 = match req.uri().path() {
            EVENT_FEED_PATH => false,
            EVENT_FEED_V2_PATH => true,
            _ => return Box::pin(ready(Ok(Status::unimplemented("").into_http()))),
        };
        let method = FeedMethod {
            service: self.clone(),
            v2,
        };
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(FeedCodec).apply_max_message_size_config(limit, None);
            Ok(grpc.streaming(method, req).await)
        })
    }
}

impl NamedService for CdcService {
    const NAME: &'static str = SERVICE_NAME;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn md(values: &[&'static str]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for v in values {
            m.append(EVENT_FEED_FEATURES_KEY, MetadataValue::from_static(v));
        }
        m
    }

    #[test]
    fn features_header() {
        assert_eq!(parse_features(&md(&[])).ok(), Some(false));
        assert_eq!(
            parse_features(&md(&["stream-multiplexing"])).ok(),
            Some(true)
        );
        assert_eq!(
            parse_features(&md(&[" stream-multiplexing , stream-multiplexing"])).ok(),
            Some(true)
        );
        let err = parse_features(&md(&["stream-multiplexing, foo,bar"])).err();
        let err = err.map(|s| (s.code(), s.message().to_owned()));
        assert_eq!(
            err,
            Some((tonic::Code::Unimplemented, "foo,bar".to_owned()))
        );
        // An empty value is one empty (unknown) item, as in TiKV.
        assert_eq!(
            parse_features(&md(&[""])).err().map(|s| s.code()),
            Some(tonic::Code::Unimplemented)
        );
    }

    #[test]
    fn version_parsing_is_strict_semver() {
        let v = |s| Version::parse(s).map(|v| (v.core, v.pre_release));
        assert_eq!(v("8.5.0"), Some(((8, 5, 0), false)));
        assert_eq!(v("5.3.0-alpha.1+git.abc"), Some(((5, 3, 0), true)));
        assert_eq!(v("v8.5.0"), None);
        assert_eq!(v("8.5"), None);
        assert_eq!(v("8.5.0.1"), None);
        assert_eq!(v("08.5.0"), None);
        assert_eq!(v(""), None);
        assert_eq!(v("1.2.3-01"), None);
        assert_eq!(v("99999999999999999999.0.0"), None);
    }

    #[test]
    fn gates_follow_version_thresholds() {
        let g = |s| {
            let g = gates_for(s);
            (g.batch_resolved_ts, g.validate_cluster_id)
        };
        assert_eq!(g(""), (false, false));
        assert_eq!(g("v8.5.0"), (false, false));
        assert_eq!(g("4.0.7"), (false, false));
        assert_eq!(g("4.0.8"), (true, false));
        assert_eq!(g("5.2.99"), (true, false));
        assert_eq!(g("5.3.0-rc"), (true, false));
        assert_eq!(g("5.3.0"), (true, true));
        assert_eq!(g("8.5.0"), (true, true));
    }
}
