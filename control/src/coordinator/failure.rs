//! Why a changefeed stopped, whether retrying can help, and how long to wait before trying.
//!
//! TiCDC splits failures in two (ticdc.md §2.3–2.8, §7.1): errors that a restart may fix (a
//! broken TiKV stream, a downstream that is briefly away) put the changefeed in `warning` and it
//! is restarted with an exponential backoff, each time under a new epoch; errors that no retry
//! can fix (the downstream rejects the data, a row cannot be decoded, GC removed the data the
//! changefeed needs) put it in `failed` at once, where it waits for an operator. The split is
//! made here, from the dataflow's and the sinks' error types, so the state machine in
//! [`super`] only sees a [`Failure`].

use std::time::{Duration, Instant};

use tidal_dataflow::ChangefeedError;
use tidal_sinks::SinkError;

use crate::meta::epoch::{CAS_MAX_TRIES, CAS_RETRY_DELAY};
use crate::meta::{
    ChangefeedRef, Compare, CompareOp, FeedState, KeyLayout, MetaError, MetaStore, Op,
    RunningError, Txn, load_changefeed,
};
use crate::service::{ErrorCode, rfc3339_from_ms, unix_ms_now};

/// Code of an error the downstream refused for good (bad data, unknown database, a DDL).
pub const CODE_SINK_REJECTED: &str = "CDC:ErrSinkRejected";
/// Code of a sink write or connection that failed after its own retries.
pub const CODE_SINK_FAILED: &str = "CDC:ErrSinkWriteFailed";
/// Code of a change-feed (TiKV stream) failure.
pub const CODE_EVENT_FEED: &str = "CDC:ErrEventFeed";
/// Code of a schema-store failure.
pub const CODE_SCHEMA: &str = "CDC:ErrSchemaStorage";
/// Code of a row that could not be decoded.
pub const CODE_DECODE: &str = "CDC:ErrDecodeRowFailed";
/// Code of any other processing failure (timely workers, timeouts).
pub const CODE_PROCESSOR: &str = "CDC:ErrProcessorUnknown";

/// A classified changefeed failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// TiCDC-style RFC code (`CDC:Err…`).
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// True if retrying cannot help: the changefeed goes to `failed`, not `warning`.
    pub permanent: bool,
}

impl Failure {
    /// A retryable failure.
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        Failure {
            code: code.to_string(),
            message: message.into(),
            permanent: false,
        }
    }

    /// A permanent failure.
    pub fn permanent(code: &str, message: impl Into<String>) -> Self {
        Failure {
            code: code.to_string(),
            message: message.into(),
            permanent: true,
        }
    }

    /// Classifies an error reported by a running (or starting) dataflow.
    pub fn from_dataflow(e: &ChangefeedError) -> Self {
        let msg = e.to_string();
        match e {
            ChangefeedError::Config(_) => {
                Failure::permanent(ErrorCode::InvalidReplicaConfig.as_str(), msg)
            }
            ChangefeedError::Schema(detail) => {
                if is_gc_loss(detail) {
                    Failure::permanent(ErrorCode::SnapshotLostByGc.as_str(), msg)
                } else {
                    Failure::retryable(CODE_SCHEMA, msg)
                }
            }
            ChangefeedError::Feed { detail, .. } => {
                if is_gc_loss(detail) {
                    Failure::permanent(ErrorCode::SnapshotLostByGc.as_str(), msg)
                } else {
                    Failure::retryable(CODE_EVENT_FEED, msg)
                }
            }
            ChangefeedError::Decode { .. } => Failure::permanent(CODE_DECODE, msg),
            ChangefeedError::Sink(detail) => {
                // The dataflow carries sink errors as text; the sink's own wording of its
                // non-retryable variants is stable (see `SinkError`'s messages).
                let permanent = ["downstream rejected", "cannot encode", "invalid sink URI"]
                    .iter()
                    .any(|p| detail.contains(p));
                if permanent {
                    Failure::permanent(CODE_SINK_REJECTED, msg)
                } else {
                    Failure::retryable(CODE_SINK_FAILED, msg)
                }
            }
            ChangefeedError::Timely(_) => Failure::retryable(CODE_PROCESSOR, msg),
        }
    }

    /// Classifies an error from opening the sink.
    pub fn from_sink_open(e: &SinkError) -> Self {
        let msg = format!("opening the sink: {e}");
        match e {
            SinkError::InvalidUri { .. } => {
                Failure::permanent(ErrorCode::SinkUriInvalid.as_str(), msg)
            }
            SinkError::Rejected { .. } | SinkError::Encode { .. } => {
                Failure::permanent(CODE_SINK_REJECTED, msg)
            }
            _ => Failure::retryable(CODE_SINK_FAILED, msg),
        }
    }

    /// The persisted form, stamped now by `addr`.
    pub fn to_running_error(&self, addr: &str) -> RunningError {
        RunningError {
            time: Some(rfc3339_from_ms(unix_ms_now())),
            addr: addr.to_string(),
            code: self.code.clone(),
            message: self.message.clone(),
        }
    }
}

fn is_gc_loss(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("snapshot lost by gc") || d.contains("gc life time is shorter")
}

/// Exponential backoff between restarts of a changefeed in `warning`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Failures since the changefeed last made progress.
    pub attempts: u32,
    /// Earliest time of the next restart.
    pub next_at: Instant,
    /// The delay that produced `next_at`.
    pub delay: Duration,
}

impl Backoff {
    /// A backoff after the first failure at `now`: wait `initial`.
    pub fn first(initial: Duration, max: Duration, now: Instant) -> Self {
        let delay = initial.min(max);
        Backoff {
            initial,
            max,
            attempts: 1,
            next_at: now + delay,
            delay,
        }
    }

    /// Records one more failure at `now`: the delay doubles, up to `max`.
    pub fn fail_again(&mut self, now: Instant) {
        self.attempts = self.attempts.saturating_add(1);
        let shift = self.attempts.saturating_sub(1).min(20);
        let delay = self
            .initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max);
        self.delay = delay;
        self.next_at = now + delay;
    }

    /// Whether a restart is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }
}

/// The states a coordinator-driven transition may start from: the running ones. A transition
/// never overwrites a user's pause, a removal or a terminal state.
pub const RUNNING_STATES: &[FeedState] =
    &[FeedState::Normal, FeedState::Warning, FeedState::Pending];

/// Changes the state (and error: `Some(None)` clears it) of a changefeed, only if its stored
/// epoch is `my_epoch` and its state is one of `from`. Returns `Ok(false)` without writing
/// otherwise (a stale owner, or the user changed the state meanwhile).
pub async fn transition_fenced(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
    my_epoch: u64,
    from: &[FeedState],
    to: FeedState,
    error: Option<Option<RunningError>>,
) -> Result<bool, MetaError> {
    let info_key = keys.changefeed_info(cf);
    for attempt in 0..CAS_MAX_TRIES {
        if attempt > 0 {
            tokio::time::sleep(CAS_RETRY_DELAY).await;
        }
        let Some(loaded) = load_changefeed(store, keys, cf).await? else {
            return Ok(false);
        };
        if loaded.info.epoch != my_epoch {
            tracing::warn!(
                changefeed = %cf,
                my_epoch,
                current_epoch = loaded.info.epoch,
                to = %to,
                "drop stale state change: the changefeed has a newer owner"
            );
            return Ok(false);
        }
        if !from.contains(&loaded.info.state) {
            tracing::info!(
                changefeed = %cf,
                state = %loaded.info.state,
                to = %to,
                "state change skipped: the state changed meanwhile"
            );
            return Ok(false);
        }
        let mut info = loaded.info.clone();
        info.state = to;
        if let Some(e) = &error {
            info.error = e.clone();
        }
        if to == FeedState::Normal {
            info.warning = None;
        }
        let value = info
            .to_json()
            .map_err(|e| MetaError::corrupt(&info_key, format!("cannot encode: {e}")))?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                info_key.as_bytes(),
                CompareOp::Equal,
                loaded.info_revision,
            )])
            .and_then([Op::put(info_key.as_bytes(), value)]);
        if store.txn(txn).await?.succeeded {
            return Ok(true);
        }
    }
    Err(MetaError::Conflict {
        what: format!("state change of changefeed {cf} to {to}"),
        detail: format!("compare-and-swap failed {CAS_MAX_TRIES} times"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_errors_are_split_by_kind() {
        let rejected = ChangefeedError::Sink(
            SinkError::Rejected {
                what: "batch".into(),
                reason: "Unknown database 'x'".into(),
            }
            .to_string(),
        );
        let f = Failure::from_dataflow(&rejected);
        assert!(f.permanent);
        assert_eq!(f.code, CODE_SINK_REJECTED);
        let ddl = ChangefeedError::Sink(format!(
            "DDL committed at 5: {}",
            SinkError::Rejected {
                what: "ddl".into(),
                reason: "no".into()
            }
        ));
        assert!(Failure::from_dataflow(&ddl).permanent);
        let flaky = ChangefeedError::Sink(
            SinkError::RetriesExhausted {
                what: "write".into(),
                attempts: 3,
                reason: "timeout".into(),
            }
            .to_string(),
        );
        let f = Failure::from_dataflow(&flaky);
        assert!(!f.permanent);
        assert_eq!(f.code, CODE_SINK_FAILED);
        let f = Failure::from_sink_open(&SinkError::Connect {
            target: "db:3306".into(),
            reason: "refused".into(),
        });
        assert!(!f.permanent);
        let f = Failure::from_sink_open(&SinkError::InvalidUri {
            uri: "x://".into(),
            reason: "scheme".into(),
        });
        assert!(f.permanent);
        assert_eq!(f.code, "CDC:ErrSinkURIInvalid");
    }

    #[test]
    fn gc_loss_is_permanent_other_schema_errors_retry() {
        let lost = ChangefeedError::Schema(
            "snapshot lost by GC: read at ts 5 is below the GC safe point 9".into(),
        );
        let f = Failure::from_dataflow(&lost);
        assert!(f.permanent);
        assert_eq!(f.code, "CDC:ErrSnapshotLostByGC");
        let other = ChangefeedError::Schema("PD unavailable".into());
        assert_eq!(Failure::from_dataflow(&other).code, CODE_SCHEMA);
        assert!(!Failure::from_dataflow(&other).permanent);
        let decode = ChangefeedError::Decode {
            table_id: 1,
            commit_ts: 2,
            detail: "bad".into(),
        };
        assert!(Failure::from_dataflow(&decode).permanent);
        assert!(!Failure::from_dataflow(&ChangefeedError::Timely("x".into())).permanent);
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let t0 = Instant::now();
        let mut b = Backoff::first(Duration::from_millis(100), Duration::from_millis(700), t0);
        assert_eq!(b.delay, Duration::from_millis(100));
        assert!(!b.due(t0));
        assert!(b.due(t0 + Duration::from_millis(100)));
        let mut delays = vec![b.delay];
        for _ in 0..5 {
            b.fail_again(t0);
            delays.push(b.delay);
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 700, 700, 700]);
        assert_eq!(b.attempts, 6);
        // many failures never overflow
        for _ in 0..100 {
            b.fail_again(t0);
        }
        assert_eq!(b.delay, Duration::from_millis(700));
    }
}
