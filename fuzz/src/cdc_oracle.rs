//! The oracle for the change-feed targets (`matcher`, `cdc_event`): what TiKV's contract lets a
//! matcher emit, given what it was fed. Behind the `cdc` feature, which pulls the protocol and
//! ingest crates (and with them the gRPC stack).

use std::collections::{HashMap, HashSet};

use tidal_ingest::feed::matcher::Matcher;
use tidal_model::Ts;
use tidal_model::change::{RawKvChange, RawOp};
use tidal_proto::cdcpb::event::{LogType, Row};

/// What a matcher run has seen so far, for checking what it emits against TiKV's contract.
#[derive(Debug, Default)]
pub struct MatcherOracle {
    /// `(start_ts, key)` → values a PREWRITE (or an inline COMMIT) carried for it.
    values: HashMap<(u64, Vec<u8>), HashSet<Vec<u8>>>,
    /// `(start_ts, key)` → commit ts a COMMIT or COMMITTED row named for it.
    commits: HashMap<(u64, Vec<u8>), HashSet<u64>>,
}

impl MatcherOracle {
    /// Records a row about to be given to the matcher.
    pub fn observe(&mut self, row: &Row) {
        let id = (row.start_ts, row.key.clone());
        match LogType::try_from(row.r#type) {
            Ok(LogType::Prewrite) => {
                self.values.entry(id).or_default().insert(row.value.clone());
            }
            Ok(LogType::Commit) => {
                self.values
                    .entry(id.clone())
                    .or_default()
                    .insert(row.value.clone());
                self.commits.entry(id).or_default().insert(row.commit_ts);
            }
            Ok(LogType::Committed) => {
                self.values
                    .entry(id.clone())
                    .or_default()
                    .insert(row.value.clone());
                self.commits.entry(id).or_default().insert(row.commit_ts);
            }
            _ => {}
        }
    }

    /// Checks the rows the matcher emitted for one input row, given the matcher's state before
    /// that row (`resolved_before`) and the input row's type.
    ///
    /// The guarantees checked: every emitted row belongs to the matcher's region; its commit ts
    /// is above the checkpoint and above the resolved ts in force when it was emitted; its
    /// `(start_ts, key)`, commit ts and value were all carried by rows the matcher was given; a
    /// committed op is PUT or DELETE.
    pub fn check_emitted(&mut self, m: &Matcher, resolved_before: Ts, emitted: &[RawKvChange]) {
        for c in emitted {
            assert_eq!(c.region_id, m.region_id(), "row emitted for another region");
            assert!(
                c.commit_ts > m.checkpoint_ts(),
                "row at commit_ts {} emitted at or below the checkpoint {}",
                c.commit_ts.0,
                m.checkpoint_ts().0
            );
            assert!(
                c.commit_ts > resolved_before,
                "row at commit_ts {} emitted at or below the resolved ts {}",
                c.commit_ts.0,
                resolved_before.0
            );
            assert!(matches!(c.op, RawOp::Put | RawOp::Delete));
            let id = (c.start_ts.0, c.key.clone());
            let commits = self
                .commits
                .get(&id)
                .unwrap_or_else(|| panic!("emitted a row nobody committed: {c:?}"));
            assert!(
                commits.contains(&c.commit_ts.0),
                "emitted commit_ts {} never sent for this transaction",
                c.commit_ts.0
            );
            let values = self
                .values
                .get(&id)
                .unwrap_or_else(|| panic!("emitted a row with no source value: {c:?}"));
            assert!(
                values.contains(&c.value),
                "emitted value {:?} never sent for this transaction",
                c.value
            );
        }
    }
}

/// Checks the matcher's bookkeeping after a run: the resolved ts never fell, and once
/// initialized with no prewrite left, no bytes are accounted to its caches.
pub fn check_matcher_state(m: &Matcher, resolved_before: Ts) {
    assert!(m.resolved_ts() >= resolved_before, "resolved ts went back");
    assert!(
        m.resolved_ts() >= m.checkpoint_ts(),
        "resolved ts below checkpoint"
    );
    if m.is_initialized() && m.pending_prewrites() == 0 {
        assert_eq!(
            m.cached_bytes(),
            0,
            "cache accounting leaks bytes with nothing cached"
        );
    }
    if m.pending_prewrites() > 0 {
        assert!(
            m.cached_bytes() > 0,
            "prewrites cached but no bytes counted"
        );
        assert!(m.oldest_prewrite_start_ts().is_some());
    }
}
