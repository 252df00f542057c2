//! Owner epochs and the fenced metadata writes built on them.
//!
//! Every time a changefeed gets a new owner (first start, move, resume, restart after a failure)
//! its `epoch` in `ChangeFeedInfo` is raised — by compare-and-swap, *before* the new owner
//! starts. Every later write of that owner (status, checkpoint, state) is a transaction guarded
//! by "the info key has not changed since I read it with my epoch in it". An owner that was
//! replaced but does not know it yet (a paused process, a partitioned node) therefore cannot move
//! the checkpoint or change the state: its writes are refused by the store itself, not by a check
//! that could race with the takeover. The refusal is reported as `Ok(false)` (plus a warning
//! "drop stale status"), never as a write.
//!
//! Rules (TiCDC's `AdvanceChangefeedEpoch` / `MaintainerEpochMatches`):
//! * the new epoch is `candidate` (typically a fresh TSO) if it is larger than the current one,
//!   else `current + 1`; at `u64::MAX` it is an error — wrapping would make a stale owner look
//!   newest;
//! * epoch 0 means "unknown / predates epochs" and matches anything in [`epoch_matches`] (for
//!   messages from old peers). The *storage* fence is stricter: a fenced write lands only if the
//!   stored epoch equals the writer's exactly.
//!
//! All read-modify-write helpers retry a lost CAS at most 10 times, 25 ms apart, then give up
//! with [`MetaError::Conflict`].

use std::time::Duration;

use super::changefeed::{ChangeFeedInfo, ChangeFeedStatus, FeedState, Progress, RunningError};
use super::keys::{ChangefeedRef, KeyLayout};
use super::store::{Compare, CompareOp, MetaError, MetaStore, Op, Revision, Txn};

/// Maximum CAS attempts of one helper.
pub const CAS_MAX_TRIES: u32 = 10;
/// Pause between CAS attempts.
pub const CAS_RETRY_DELAY: Duration = Duration::from_millis(25);

/// The epoch a new owner must use: `candidate` if it is newer than `current`, else
/// `current + 1`. Errors instead of wrapping at `u64::MAX`.
pub fn advance_epoch(candidate: u64, current: u64) -> Result<u64, MetaError> {
    if candidate > current {
        Ok(candidate)
    } else {
        current
            .checked_add(1)
            .ok_or(MetaError::EpochOverflow { current })
    }
}

/// Whether a message carrying `reported` belongs to the owner with epoch `current`; 0 on either
/// side is the compatibility wildcard.
pub fn epoch_matches(reported: u64, current: u64) -> bool {
    reported == 0 || current == 0 || reported == current
}

/// A changefeed's two documents with the revisions they were read at.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedChangefeed {
    /// The info document.
    pub info: ChangeFeedInfo,
    /// `mod_revision` of the info key.
    pub info_revision: Revision,
    /// The status document, if the key exists.
    pub status: Option<ChangeFeedStatus>,
    /// `mod_revision` of the status key (0 if absent).
    pub status_revision: Revision,
}

/// Reads a changefeed; `None` if its info key does not exist.
pub async fn load_changefeed(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
) -> Result<Option<LoadedChangefeed>, MetaError> {
    let info_key = keys.changefeed_info(cf);
    let status_key = keys.changefeed_status(cf);
    let Some(info_kv) = store.get(info_key.as_bytes()).await? else {
        return Ok(None);
    };
    let info = ChangeFeedInfo::from_json(&info_kv.value)
        .map_err(|e| MetaError::corrupt(&info_key, e.to_string()))?;
    let (status, status_revision) = match store.get(status_key.as_bytes()).await? {
        Some(kv) => (
            Some(
                ChangeFeedStatus::from_json(&kv.value)
                    .map_err(|e| MetaError::corrupt(&status_key, e.to_string()))?,
            ),
            kv.mod_revision,
        ),
        None => (None, 0),
    };
    Ok(Some(LoadedChangefeed {
        info,
        info_revision: info_kv.mod_revision,
        status,
        status_revision,
    }))
}

fn encode<T: serde::Serialize>(key: &str, v: &T) -> Result<Vec<u8>, MetaError> {
    serde_json::to_vec(v).map_err(|e| MetaError::corrupt(key, format!("cannot encode: {e}")))
}

/// Creates a changefeed: info and status in one transaction, only if neither key exists.
/// Returns the revision of the write; [`MetaError::AlreadyExists`] if either key is present.
pub async fn create_changefeed(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
    info: &ChangeFeedInfo,
    status: &ChangeFeedStatus,
) -> Result<Revision, MetaError> {
    let info_key = keys.changefeed_info(cf);
    let status_key = keys.changefeed_status(cf);
    let txn = Txn::new()
        .when([
            Compare::absent(info_key.as_bytes()),
            Compare::absent(status_key.as_bytes()),
        ])
        .and_then([
            Op::put(info_key.as_bytes(), encode(&info_key, info)?),
            Op::put(status_key.as_bytes(), encode(&status_key, status)?),
        ]);
    let res = store.txn(txn).await?;
    if res.succeeded {
        Ok(res.revision)
    } else {
        Err(MetaError::AlreadyExists { key: info_key })
    }
}

/// What one CAS attempt decided.
enum Step<R> {
    /// Write these documents (guarded by the revisions they were read at), then return `R`.
    Write {
        info: Option<Box<ChangeFeedInfo>>,
        status: Option<ChangeFeedStatus>,
        result: R,
    },
    /// Nothing to write; return `R`.
    Done(R),
}

/// Read, decide, compare-and-swap; retried on a lost race.
async fn cas_loop<R>(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
    what: &str,
    mut decide: impl FnMut(&LoadedChangefeed) -> Result<Step<R>, MetaError>,
) -> Result<R, MetaError> {
    let info_key = keys.changefeed_info(cf);
    let status_key = keys.changefeed_status(cf);
    for attempt in 0..CAS_MAX_TRIES {
        if attempt > 0 {
            tokio::time::sleep(CAS_RETRY_DELAY).await;
        }
        let Some(loaded) = load_changefeed(store, keys, cf).await? else {
            return Err(MetaError::NotFound { key: info_key });
        };
        let (info, status, result) = match decide(&loaded)? {
            Step::Done(r) => return Ok(r),
            Step::Write {
                info,
                status,
                result,
            } => (info, status, result),
        };
        // The info guard is the epoch fence: any epoch change rewrites the info key.
        let mut compares = vec![Compare::mod_revision(
            info_key.as_bytes(),
            CompareOp::Equal,
            loaded.info_revision,
        )];
        let mut ops = Vec::new();
        if let Some(info) = &info {
            ops.push(Op::put(info_key.as_bytes(), encode(&info_key, info)?));
        }
        if let Some(status) = &status {
            // 0 also matches an absent key (create).
            compares.push(Compare::mod_revision(
                status_key.as_bytes(),
                CompareOp::Equal,
                loaded.status_revision,
            ));
            ops.push(Op::put(status_key.as_bytes(), encode(&status_key, status)?));
        }
        if ops.is_empty() {
            return Ok(result);
        }
        if store
            .txn(Txn::new().when(compares).and_then(ops))
            .await?
            .succeeded
        {
            return Ok(result);
        }
        tracing::debug!(changefeed = %cf, what, attempt, "metadata CAS lost, retrying");
    }
    Err(MetaError::Conflict {
        what: format!("{what} of changefeed {cf}"),
        detail: format!(
            "compare-and-swap failed {CAS_MAX_TRIES} times ({} ms apart)",
            CAS_RETRY_DELAY.as_millis()
        ),
    })
}

/// A change to the status document made together with an epoch bump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusChange {
    /// New checkpoint, if any. Moving it back (resume with `overwrite_checkpoint_ts`) moves the
    /// persisted resolved ts back with it; otherwise that never falls below the checkpoint.
    pub checkpoint_ts: Option<u64>,
    /// A resolved ts reached; the persisted one only ever rises to it.
    pub resolved_ts: Option<u64>,
    /// New progress, if any.
    pub progress: Option<Progress>,
}

/// Optional changes made in the same transaction as an epoch bump.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BumpOptions {
    /// New state.
    pub state: Option<FeedState>,
    /// New error (`Some(None)` clears it).
    pub error: Option<Option<RunningError>>,
    /// Status change (the status key is then CAS-guarded too).
    pub status: Option<StatusChange>,
}

fn apply_status_change(loaded: &LoadedChangefeed, change: StatusChange) -> ChangeFeedStatus {
    let mut status = loaded
        .status
        .clone()
        .unwrap_or_else(|| ChangeFeedStatus::at(loaded.info.start_ts));
    if let Some(ts) = change.checkpoint_ts {
        status.resolved_ts = if ts < status.checkpoint_ts {
            ts
        } else {
            status.resolved_ts.max(ts)
        };
        status.checkpoint_ts = ts;
    }
    if let Some(ts) = change.resolved_ts {
        status.resolved_ts = status.resolved_ts.max(ts);
    }
    if let Some(p) = change.progress {
        status.progress = p;
    }
    status
}

/// Raises the changefeed's epoch (see [`advance_epoch`]) and applies `opts`, all in one
/// transaction guarded by the revisions read. Returns the new epoch.
pub async fn bump_epoch(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
    candidate: u64,
    opts: BumpOptions,
) -> Result<u64, MetaError> {
    cas_loop(store, keys, cf, "bump epoch", |loaded| {
        let mut info = loaded.info.clone();
        info.epoch = advance_epoch(candidate, info.epoch)?;
        if let Some(state) = opts.state {
            info.state = state;
        }
        if let Some(error) = &opts.error {
            info.error = error.clone();
        }
        let status = opts.status.map(|c| apply_status_change(loaded, c));
        Ok(Step::Write {
            result: info.epoch,
            info: Some(Box::new(info)),
            status,
        })
    })
    .await
}

fn stale(cf: &ChangefeedRef, mine: u64, current: u64, what: &str) -> bool {
    if mine != current {
        tracing::warn!(
            changefeed = %cf,
            my_epoch = mine,
            current_epoch = current,
            what,
            "drop stale status: the changefeed has a newer owner"
        );
        return true;
    }
    false
}

/// Writes the whole status document if the stored epoch is `my_epoch`; `Ok(false)` (and no
/// write) if it is not.
pub async fn write_status_fenced(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
    my_epoch: u64,
    status: &ChangeFeedStatus,
) -> Result<bool, MetaError> {
    cas_loop(store, keys, cf, "write status", |loaded| {
        if stale(cf, my_epoch, loaded.info.epoch, "status") {
            return Ok(Step::Done(false));
        }
        Ok(Step::Write {
            info: None,
            status: Some(status.clone()),
            result: true,
        })
    })
    .await
}

/// Sets the checkpoint if the stored epoch is `my_epoch`; `Ok(false)` (and no write) if not.
pub async fn update_checkpoint_fenced(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
    my_epoch: u64,
    checkpoint_ts: u64,
) -> Result<bool, MetaError> {
    update_progress_fenced(store, keys, cf, my_epoch, checkpoint_ts, checkpoint_ts).await
}

/// Sets the checkpoint and raises the persisted resolved ts to `resolved_ts` (never below the
/// checkpoint) if the stored epoch is `my_epoch`; `Ok(false)` (and no write) if not.
pub async fn update_progress_fenced(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
    my_epoch: u64,
    checkpoint_ts: u64,
    resolved_ts: u64,
) -> Result<bool, MetaError> {
    cas_loop(store, keys, cf, "update checkpoint", |loaded| {
        if stale(cf, my_epoch, loaded.info.epoch, "checkpoint") {
            return Ok(Step::Done(false));
        }
        let status = apply_status_change(
            loaded,
            StatusChange {
                checkpoint_ts: Some(checkpoint_ts),
                resolved_ts: Some(resolved_ts),
                progress: None,
            },
        );
        Ok(Step::Write {
            info: None,
            status: Some(status),
            result: true,
        })
    })
    .await
}

/// Changes state (and error; `Some(None)` clears it) if the stored epoch is `my_epoch`;
/// `Ok(false)` (and no write) if not.
pub async fn update_state_fenced(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
    my_epoch: u64,
    state: FeedState,
    error: Option<Option<RunningError>>,
) -> Result<bool, MetaError> {
    cas_loop(store, keys, cf, "update state", |loaded| {
        if stale(cf, my_epoch, loaded.info.epoch, "state") {
            return Ok(Step::Done(false));
        }
        let mut info = loaded.info.clone();
        info.state = state;
        if let Some(e) = &error {
            info.error = e.clone();
        }
        Ok(Step::Write {
            info: Some(Box::new(info)),
            status: None,
            result: true,
        })
    })
    .await
}

/// Resumes a failed, stopped or finished changefeed: new epoch, state `normal`, error and
/// warning cleared, checkpoint overwritten (if given) and progress `None` — one transaction.
/// Returns the new epoch; [`MetaError::InvalidState`] in any other state.
pub async fn resume_changefeed(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
    candidate: u64,
    overwrite_checkpoint_ts: Option<u64>,
) -> Result<u64, MetaError> {
    cas_loop(store, keys, cf, "resume", |loaded| {
        let mut info = loaded.info.clone();
        if !info.state.is_resumable() {
            return Err(MetaError::InvalidState {
                changefeed: cf.to_string(),
                detail: format!(
                    "can only resume changefeed when it is stopped, failed, or finished, but current state is {}",
                    info.state
                ),
            });
        }
        info.epoch = advance_epoch(candidate, info.epoch)?;
        info.state = FeedState::Normal;
        info.error = None;
        info.warning = None;
        let status = apply_status_change(
            loaded,
            StatusChange {
                checkpoint_ts: overwrite_checkpoint_ts,
                resolved_ts: None,
                progress: Some(Progress::NONE),
            },
        );
        Ok(Step::Write {
            result: info.epoch,
            info: Some(Box::new(info)),
            status: Some(status),
        })
    })
    .await
}

/// Pauses a changefeed: state `stopped` and progress `Stopping`, one transaction.
pub async fn pause_changefeed(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
) -> Result<(), MetaError> {
    cas_loop(store, keys, cf, "pause", |loaded| {
        let mut info = loaded.info.clone();
        info.state = FeedState::Stopped;
        let status = apply_status_change(
            loaded,
            StatusChange {
                checkpoint_ts: None,
                resolved_ts: None,
                progress: Some(Progress::STOPPING),
            },
        );
        Ok(Step::Write {
            info: Some(Box::new(info)),
            status: Some(status),
            result: (),
        })
    })
    .await
}

/// Marks a changefeed for removal (progress `Removing`). Returns `false` if it does not exist
/// (removing a missing changefeed is not an error for the API).
pub async fn remove_changefeed(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
) -> Result<bool, MetaError> {
    let res = cas_loop(store, keys, cf, "remove", |loaded| {
        let status = apply_status_change(
            loaded,
            StatusChange {
                checkpoint_ts: None,
                resolved_ts: None,
                progress: Some(Progress::REMOVING),
            },
        );
        Ok(Step::Write {
            info: None,
            status: Some(status),
            result: true,
        })
    })
    .await;
    match res {
        Err(MetaError::NotFound { .. }) => Ok(false),
        other => other,
    }
}

/// Deletes both keys of a changefeed in one transaction (after its owner stopped). Returns
/// whether the info key existed.
pub async fn delete_changefeed(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    cf: &ChangefeedRef,
) -> Result<bool, MetaError> {
    let info_key = keys.changefeed_info(cf);
    let status_key = keys.changefeed_status(cf);
    let res = store
        .txn(Txn::new().and_then([
            Op::delete(info_key.as_bytes()),
            Op::delete(status_key.as_bytes()),
        ]))
        .await?;
    Ok(res.responses.first() == Some(&super::store::OpResponse::Delete { deleted: 1 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_rules() {
        assert_eq!(advance_epoch(10, 5).unwrap(), 10);
        assert_eq!(advance_epoch(5, 5).unwrap(), 6);
        assert_eq!(advance_epoch(3, 5).unwrap(), 6);
        assert_eq!(advance_epoch(0, 0).unwrap(), 1);
        assert_eq!(advance_epoch(u64::MAX, 5).unwrap(), u64::MAX);
        assert_eq!(advance_epoch(u64::MAX - 1, u64::MAX - 1).unwrap(), u64::MAX);
        assert!(matches!(
            advance_epoch(u64::MAX, u64::MAX),
            Err(MetaError::EpochOverflow { current: u64::MAX })
        ));
        assert!(matches!(
            advance_epoch(0, u64::MAX),
            Err(MetaError::EpochOverflow { .. })
        ));
    }

    #[test]
    fn match_rules() {
        assert!(epoch_matches(0, 7));
        assert!(epoch_matches(7, 0));
        assert!(epoch_matches(7, 7));
        assert!(!epoch_matches(6, 7));
        assert!(!epoch_matches(8, 7));
    }
}
