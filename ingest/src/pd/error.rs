//! The PD client's error type.
//!
//! Callers need to tell apart three situations: PD could not be reached at all (configuration or
//! network: [`PdError::Unreachable`], [`PdError::Timeout`]), PD answered but refused or could not
//! find something ([`PdError::Pd`], [`PdError::RegionNotFound`], ...), and PD answered with
//! something that makes no sense ([`PdError::InvalidResponse`]). Every variant carries enough
//! context (endpoints, the last underlying error) to be actionable from a log line alone. The type
//! is `Clone` because one TSO stream failure is reported to every caller waiting on that batch.

use std::path::PathBuf;
use std::time::Duration;

use tidal_proto::pdpb::ErrorType;

/// Everything that can go wrong when talking to PD.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PdError {
    /// The configuration lists no PD endpoint.
    #[error("no PD endpoint configured")]
    NoEndpoints,

    /// An endpoint string is not a usable `host:port` or `http(s)://host:port` address.
    #[error("invalid PD endpoint {endpoint:?}: {detail}")]
    InvalidEndpoint {
        /// The endpoint as configured or as advertised by a PD member.
        endpoint: String,
        /// Why it was rejected.
        detail: String,
    },

    /// The TLS configuration could not be loaded (missing file, no certificate in it, bad key).
    #[error("PD TLS configuration error for {path:?}: {detail}")]
    Tls {
        /// The file that could not be used.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },

    /// No PD leader could be found or connected to through any known endpoint.
    #[error("could not reach a PD leader through [{}]: {last_error}", endpoints.join(", "))]
    Unreachable {
        /// Every endpoint that was tried (configured ones and members' client URLs).
        endpoints: Vec<String>,
        /// The last error seen.
        last_error: String,
    },

    /// A PD server belongs to another cluster than the one this client first connected to.
    #[error("PD cluster id mismatch: expected {expected}, got {actual} from {endpoint}")]
    ClusterIdMismatch {
        /// The cluster id learned at connect time.
        expected: u64,
        /// The cluster id the server reported.
        actual: u64,
        /// The server that reported it (or the error text when PD itself detected the mismatch).
        endpoint: String,
    },

    /// A request did not succeed within the configured request timeout, retries included.
    #[error(
        "PD request {what} timed out after {elapsed:?} (endpoints [{}]); last error: {last_error}",
        endpoints.join(", ")
    )]
    Timeout {
        /// The request that timed out (the gRPC method name).
        what: &'static str,
        /// How long the client tried.
        elapsed: Duration,
        /// Every endpoint known when the client gave up.
        endpoints: Vec<String>,
        /// The last error seen before the deadline, or "no response" when there was none.
        last_error: String,
    },

    /// PD answered with an error in the response header.
    #[error("PD error {error_type:?}: {message}")]
    Pd {
        /// PD's error category.
        error_type: ErrorType,
        /// PD's error text.
        message: String,
    },

    /// PD knows no region with this id.
    #[error("PD knows no region with id {region_id}")]
    RegionNotFound {
        /// The region id looked up.
        region_id: u64,
    },

    /// PD knows no region containing this (encoded) key.
    #[error("PD knows no region containing encoded key {}", hex_key(key))]
    NoRegionForKey {
        /// The encoded key looked up.
        key: Vec<u8>,
    },

    /// PD knows no store with this id.
    #[error("PD knows no store with id {store_id}")]
    StoreNotFound {
        /// The store id looked up.
        store_id: u64,
    },

    /// PD answered with a gRPC status that retrying cannot fix.
    #[error("PD request {what} failed: {code:?}: {message}")]
    Grpc {
        /// The request (gRPC method name).
        what: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },

    /// PD's answer is malformed or contradicts the request.
    #[error("invalid PD response to {what}: {detail}")]
    InvalidResponse {
        /// The request (gRPC method name).
        what: &'static str,
        /// What was wrong.
        detail: String,
    },

    /// The caller passed an argument the client cannot send.
    #[error("invalid argument: {detail}")]
    InvalidArgument {
        /// What was wrong.
        detail: String,
    },

    /// The client's background TSO task has stopped (the runtime is shutting down).
    #[error("the PD client is closed")]
    Closed,
}

impl PdError {
    /// Whether the same request may succeed if retried later (possibly against another PD).
    pub fn is_retryable(&self) -> bool {
        matches!(self, PdError::Unreachable { .. } | PdError::Timeout { .. })
    }
}

/// The underlying cause of an error, without the wrapping a retry loop would add again.
pub(crate) fn detail_of(e: &PdError) -> String {
    match e {
        PdError::Unreachable { last_error, .. } | PdError::Timeout { last_error, .. } => {
            last_error.clone()
        }
        other => other.to_string(),
    }
}

/// Lower-case hex for keys in messages; keys longer than 64 bytes are shortened.
pub(crate) fn hex_key(key: &[u8]) -> String {
    crate::snapshot::hex_shortened(key, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_endpoints() {
        let e = PdError::Timeout {
            what: "GetRegion",
            elapsed: Duration::from_millis(1500),
            endpoints: vec!["http://a:1".into(), "http://b:2".into()],
            last_error: "Unavailable: not leader".into(),
        };
        assert_eq!(
            e.to_string(),
            "PD request GetRegion timed out after 1.5s (endpoints [http://a:1, http://b:2]); \
             last error: Unavailable: not leader"
        );
        let e = PdError::Unreachable {
            endpoints: vec!["http://a:1".into()],
            last_error: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "could not reach a PD leader through [http://a:1]: connection refused"
        );
    }

    #[test]
    fn keys_are_hex() {
        assert_eq!(hex_key(&[0x74, 0x80, 0x00]), "748000");
        assert_eq!(hex_key(&[]), "(empty)");
        assert_eq!(hex_key(&[0xab; 70]).len(), 64 * 2 + 3);
        let e = PdError::NoRegionForKey {
            key: vec![0x01, 0xff],
        };
        assert_eq!(
            e.to_string(),
            "PD knows no region containing encoded key 01ff"
        );
    }
}
