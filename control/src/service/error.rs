//! The error type of the changefeed service, carrying TiCDC's RFC error codes.
//!
//! Scripts and clients written against TiCDC match on the `error_code` string of an API error
//! (`CDC:ErrChangeFeedNotExists`, `CDC:ErrStartTsBeforeGC`, ...), and the HTTP status depends on
//! which code it is. So every failure the service reports is one [`ErrorCode`] plus a message in
//! TiCDC's wording; the HTTP layer only maps codes to statuses. The same codes mark a changefeed
//! that GC made unrecoverable (`ErrSnapshotLostByGC`, `ErrGCTTLExceeded`), which is why this type
//! lives below both the service and the GC manager.

use std::fmt;

use crate::meta::MetaError;

/// TiCDC's RFC error codes used by the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `CDC:ErrAPIInvalidParam`: malformed request (bad JSON, invalid id, bad parameter).
    ApiInvalidParam,
    /// `CDC:ErrSinkURIInvalid`: the sink URI is empty or cannot be parsed.
    SinkUriInvalid,
    /// `CDC:ErrStartTsBeforeGC`: the start ts is not above PD's minimum service safe point.
    StartTsBeforeGc,
    /// `CDC:ErrSnapshotLostByGC`: GC already removed data the changefeed needs.
    SnapshotLostByGc,
    /// `CDC:ErrGCTTLExceeded`: the changefeed held GC back longer than `gc-ttl`.
    GcTtlExceeded,
    /// `CDC:ErrChangeFeedNotExists`.
    ChangeFeedNotExists,
    /// `CDC:ErrChangeFeedAlreadyExists`.
    ChangeFeedAlreadyExists,
    /// `CDC:ErrTargetTsBeforeStartTs`.
    TargetTsBeforeStartTs,
    /// `CDC:ErrChangefeedUpdateRefused`: the operation is not allowed in the current state.
    ChangefeedUpdateRefused,
    /// `CDC:ErrPDEtcdAPIError`: PD could not be asked (TSO, GC safe point).
    PdEtcdApiError,
    /// `CDC:ErrUpdateServiceSafepointFailed`: PD refused or failed a service safe point update.
    UpdateServiceSafepointFailed,
    /// `CDC:ErrMetaOpFailed`: the metadata store failed.
    MetaOpFailed,
    /// `CDC:ErrInvalidReplicaConfig`.
    InvalidReplicaConfig,
    /// `CDC:ErrClusterIsUnhealthy`.
    ClusterIsUnhealthy,
    /// `CDC:ErrInternalServerError`.
    InternalServerError,
}

impl ErrorCode {
    /// The RFC code string, e.g. `CDC:ErrChangeFeedNotExists`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ApiInvalidParam => "CDC:ErrAPIInvalidParam",
            ErrorCode::SinkUriInvalid => "CDC:ErrSinkURIInvalid",
            ErrorCode::StartTsBeforeGc => "CDC:ErrStartTsBeforeGC",
            ErrorCode::SnapshotLostByGc => "CDC:ErrSnapshotLostByGC",
            ErrorCode::GcTtlExceeded => "CDC:ErrGCTTLExceeded",
            ErrorCode::ChangeFeedNotExists => "CDC:ErrChangeFeedNotExists",
            ErrorCode::ChangeFeedAlreadyExists => "CDC:ErrChangeFeedAlreadyExists",
            ErrorCode::TargetTsBeforeStartTs => "CDC:ErrTargetTsBeforeStartTs",
            ErrorCode::ChangefeedUpdateRefused => "CDC:ErrChangefeedUpdateRefused",
            ErrorCode::PdEtcdApiError => "CDC:ErrPDEtcdAPIError",
            ErrorCode::UpdateServiceSafepointFailed => "CDC:ErrUpdateServiceSafepointFailed",
            ErrorCode::MetaOpFailed => "CDC:ErrMetaOpFailed",
            ErrorCode::InvalidReplicaConfig => "CDC:ErrInvalidReplicaConfig",
            ErrorCode::ClusterIsUnhealthy => "CDC:ErrClusterIsUnhealthy",
            ErrorCode::InternalServerError => "CDC:ErrInternalServerError",
        }
    }

    /// Whether TiCDC answers this code with HTTP 400 (the caller's fault) rather than 500: the
    /// codes of ticdc.md §2.1 that this crate produces.
    pub fn is_client_error(self) -> bool {
        matches!(
            self,
            ErrorCode::ApiInvalidParam
                | ErrorCode::SinkUriInvalid
                | ErrorCode::StartTsBeforeGc
                | ErrorCode::ChangeFeedNotExists
                | ErrorCode::ChangeFeedAlreadyExists
                | ErrorCode::TargetTsBeforeStartTs
                | ErrorCode::ChangefeedUpdateRefused
        )
    }

    /// The GC "fast-fail" codes: a changefeed failed with one of these cannot recover by
    /// retrying, goes to `failed` at once and stops holding the GC safe point.
    pub fn is_gc_failure(self) -> bool {
        matches!(
            self,
            ErrorCode::SnapshotLostByGc | ErrorCode::GcTtlExceeded | ErrorCode::StartTsBeforeGc
        )
    }

    /// Parses an RFC code string back (for errors stored on a changefeed).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ALL_CODES.iter().copied().find(|c| c.as_str() == s)
    }
}

const ALL_CODES: &[ErrorCode] = &[
    ErrorCode::ApiInvalidParam,
    ErrorCode::SinkUriInvalid,
    ErrorCode::StartTsBeforeGc,
    ErrorCode::SnapshotLostByGc,
    ErrorCode::GcTtlExceeded,
    ErrorCode::ChangeFeedNotExists,
    ErrorCode::ChangeFeedAlreadyExists,
    ErrorCode::TargetTsBeforeStartTs,
    ErrorCode::ChangefeedUpdateRefused,
    ErrorCode::PdEtcdApiError,
    ErrorCode::UpdateServiceSafepointFailed,
    ErrorCode::MetaOpFailed,
    ErrorCode::InvalidReplicaConfig,
    ErrorCode::ClusterIsUnhealthy,
    ErrorCode::InternalServerError,
];

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of a control-plane operation: a TiCDC error code and a message in TiCDC's words.
///
/// Displays as TiCDC's `err.Error()` does: `[CDC:ErrChangeFeedNotExists]changefeed not exists,
/// cf-1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{code}]{message}")]
pub struct ServiceError {
    /// The error code.
    pub code: ErrorCode,
    /// The message (without the code prefix).
    pub message: String,
}

impl ServiceError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError {
            code,
            message: message.into(),
        }
    }

    /// `ErrAPIInvalidParam` with a specific message.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ApiInvalidParam, message)
    }

    /// `ErrAPIInvalidParam` for an id that breaks the changefeed id rule.
    pub fn invalid_id(id: &str) -> Self {
        Self::invalid_param(format!("invalid changefeed_id: {id}"))
    }

    /// `ErrChangeFeedNotExists`.
    pub fn not_exists(id: &str) -> Self {
        Self::new(
            ErrorCode::ChangeFeedNotExists,
            format!("changefeed not exists, {id}"),
        )
    }

    /// `ErrChangeFeedAlreadyExists`.
    pub fn already_exists(id: &str) -> Self {
        Self::new(
            ErrorCode::ChangeFeedAlreadyExists,
            format!("changefeed already exists, {id}"),
        )
    }

    /// `ErrSinkURIInvalid`; `detail` must already have its password masked.
    pub fn sink_uri_invalid(detail: &str) -> Self {
        Self::new(
            ErrorCode::SinkUriInvalid,
            format!("sink uri invalid '{detail}'"),
        )
    }

    /// `ErrStartTsBeforeGC`.
    pub fn start_ts_before_gc(start_ts: u64, safe_point: u64) -> Self {
        Self::new(
            ErrorCode::StartTsBeforeGc,
            format!(
                "fail to create or maintain changefeed because start-ts {start_ts} is earlier \
                 than or equal to GC safepoint at {safe_point}"
            ),
        )
    }

    /// `ErrSnapshotLostByGC`.
    pub fn snapshot_lost(checkpoint_ts: u64, safe_point: u64) -> Self {
        Self::new(
            ErrorCode::SnapshotLostByGc,
            format!(
                "fail to create or maintain changefeed due to snapshot loss caused by GC. \
                 checkpoint-ts {checkpoint_ts} is earlier than or equal to GC safepoint at \
                 {safe_point}"
            ),
        )
    }

    /// `ErrGCTTLExceeded`.
    pub fn gc_ttl_exceeded(checkpoint_ts: u64, changefeed: &str) -> Self {
        Self::new(
            ErrorCode::GcTtlExceeded,
            format!(
                "the checkpoint-ts({checkpoint_ts}) lag of the changefeed({changefeed}) has \
                 exceeded the GC TTL and the changefeed is blocking global GC progression"
            ),
        )
    }

    /// `ErrTargetTsBeforeStartTs`.
    pub fn target_before_start(target_ts: u64, start_ts: u64) -> Self {
        Self::new(
            ErrorCode::TargetTsBeforeStartTs,
            format!(
                "fail to create changefeed because target-ts {target_ts} is earlier than \
                 start-ts {start_ts}"
            ),
        )
    }

    /// `ErrChangefeedUpdateRefused` with TiCDC's explanation.
    pub fn update_refused(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ChangefeedUpdateRefused, message)
    }

    /// `ErrPDEtcdAPIError`: `what` failed against PD.
    pub fn pd(what: &str, cause: &dyn fmt::Display) -> Self {
        Self::new(ErrorCode::PdEtcdApiError, format!("{what}: {cause}"))
    }

    /// `ErrInternalServerError`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalServerError, message)
    }
}

impl From<MetaError> for ServiceError {
    fn from(e: MetaError) -> Self {
        match &e {
            MetaError::InvalidState { detail, .. } => Self::update_refused(detail.clone()),
            MetaError::InvalidArgument(msg) => Self::invalid_param(msg.clone()),
            _ => Self::new(
                ErrorCode::MetaOpFailed,
                format!("unexpected meta operation failure: {e}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_ticdc_shaped() {
        assert_eq!(
            ServiceError::not_exists("cf-1").to_string(),
            "[CDC:ErrChangeFeedNotExists]changefeed not exists, cf-1"
        );
        assert_eq!(
            ServiceError::start_ts_before_gc(5, 9).to_string(),
            "[CDC:ErrStartTsBeforeGC]fail to create or maintain changefeed because start-ts 5 \
             is earlier than or equal to GC safepoint at 9"
        );
        assert_eq!(
            ServiceError::sink_uri_invalid("mysql://root:xxxxx@h/").message,
            "sink uri invalid 'mysql://root:xxxxx@h/'"
        );
    }

    #[test]
    fn codes_round_trip_and_classify() {
        for c in ALL_CODES {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
        }
        assert_eq!(ErrorCode::parse("CDC:ErrNope"), None);
        assert!(ErrorCode::ChangeFeedNotExists.is_client_error());
        assert!(ErrorCode::StartTsBeforeGc.is_client_error());
        assert!(!ErrorCode::SnapshotLostByGc.is_client_error());
        assert!(!ErrorCode::PdEtcdApiError.is_client_error());
        assert!(ErrorCode::GcTtlExceeded.is_gc_failure());
        assert!(!ErrorCode::ApiInvalidParam.is_gc_failure());
    }

    #[test]
    fn meta_errors_map() {
        let e: ServiceError = MetaError::InvalidState {
            changefeed: "default/a".into(),
            detail: "can only resume".into(),
        }
        .into();
        assert_eq!(e.code, ErrorCode::ChangefeedUpdateRefused);
        assert_eq!(e.message, "can only resume");
        let e: ServiceError = MetaError::Backend("boom".into()).into();
        assert_eq!(e.code, ErrorCode::MetaOpFailed);
    }
}
