//! The per-region transaction matcher: turns TiKV's PREWRITE / COMMIT / ROLLBACK / COMMITTED rows
//! into committed [`RawKvChange`]s.
//!
//! TiKV sends a 2PC transaction in two halves. The PREWRITE carries the value and old value; the
//! later COMMIT carries only the commit ts (and at most an inline short value). The client pairs
//! them on `(start_ts, key)` (wire.md §2.8). During the initial scan live rows interleave with
//! scan rows, so a COMMIT may arrive before the PREWRITE the scan emits later: commits and
//! rollbacks seen before INITIALIZED are cached and settled when INITIALIZED arrives.
//!
//! This is the hot path of ingestion (every row passes through it), so it is synchronous, does no
//! I/O, moves the decoded buffers instead of copying them, and keys its prewrite cache with a
//! cheap non-cryptographic hash. It never panics on any event sequence: protocol violations come
//! back as [`MatchError`], and the caller re-subscribes the region from its last resolved ts.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use tidal_model::Ts;
use tidal_model::change::{RawKvChange, RawOp};
use tidal_proto::cdcpb::event::row::OpType;
use tidal_proto::cdcpb::event::{LogType, Row};

/// Fixed overhead counted per cached entry, on top of its byte buffers (map slot, struct fields).
const ENTRY_OVERHEAD: usize = 64;

/// A protocol violation found while matching one region's rows. The region's subscription must be
/// restarted from its last resolved ts; nothing else is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// A COMMIT after INITIALIZED with no PREWRITE for its `(start_ts, key)`.
    #[error(
        "region {region_id}: commit without prewrite (start_ts {start_ts}, commit_ts {commit_ts})"
    )]
    UnmatchedCommit {
        /// Region of the row.
        region_id: u64,
        /// Start ts of the commit.
        start_ts: u64,
        /// Commit ts of the commit.
        commit_ts: u64,
    },
    /// A committed row at or below the region's last resolved ts: TiKV promised nothing more
    /// would commit there.
    #[error("region {region_id}: commit_ts {commit_ts} is not above the resolved ts {resolved_ts}")]
    CommitBelowResolved {
        /// Region of the row.
        region_id: u64,
        /// Commit ts of the row.
        commit_ts: u64,
        /// The region's last resolved ts.
        resolved_ts: u64,
    },
    /// A committed row whose operation is neither PUT nor DELETE.
    #[error("region {region_id}: row with unknown op type {op_type} (start_ts {start_ts})")]
    UnknownOp {
        /// Region of the row.
        region_id: u64,
        /// The op type number as received.
        op_type: i32,
        /// Start ts of the row.
        start_ts: u64,
    },
}

/// A 64-bit multiply-rotate hasher (the "Fx" scheme) with a final avalanche step.
///
/// Keys are TiKV row keys and timestamps, not attacker-chosen map keys aimed at this process, so
/// hash flooding is not a concern; speed is. The finaliser makes the low bits usable by
/// `HashMap`'s bucket selection and by [`row_fingerprint`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            for (dst, src) in word.iter_mut().zip(rest) {
                *dst = *src;
            }
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // murmur3 fmix64.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// `BuildHasher` for [`FastHasher`].
pub type FastBuildHasher = BuildHasherDefault<FastHasher>;

/// A 64-bit fingerprint of a row's identity `(key, start_ts, commit_ts)`, used to recognise a row
/// delivered twice after a re-subscription.
pub fn row_fingerprint(key: &[u8], start_ts: Ts, commit_ts: Ts) -> u64 {
    let mut h = FastHasher::default();
    h.write_u64(start_ts.0);
    h.write_u64(commit_ts.0);
    h.write_usize(key.len());
    h.write(key);
    h.finish()
}

/// The prewrite cache key: a transaction's start ts and a raw row key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TxnKey {
    start_ts: u64,
    key: Vec<u8>,
}

/// What is kept of a PREWRITE until its COMMIT arrives.
#[derive(Debug, Clone)]
struct Prewrite {
    op_type: i32,
    value: Vec<u8>,
    old_value: Vec<u8>,
    generation: u64,
}

impl Prewrite {
    fn bytes(&self, key_len: usize) -> usize {
        ENTRY_OVERHEAD
            .saturating_add(key_len)
            .saturating_add(self.value.len())
            .saturating_add(self.old_value.len())
    }
}

fn row_bytes(row: &Row) -> usize {
    ENTRY_OVERHEAD
        .saturating_add(row.key.len())
        .saturating_add(row.value.len())
        .saturating_add(row.old_value.len())
}

/// State of one region subscription: prewrites waiting for their commit, commits and rollbacks
/// waiting for INITIALIZED, and the region's resolved ts.
#[derive(Debug)]
pub struct Matcher {
    region_id: u64,
    /// Commits at or below this ts are stale (the data predates the registration's checkpoint,
    /// and everything up to it was delivered already) and are dropped.
    checkpoint: Ts,
    /// Last resolved ts received for the region (starts at the checkpoint).
    resolved: Ts,
    initialized: bool,
    prewrites: HashMap<TxnKey, Prewrite, FastBuildHasher>,
    cached_commits: Vec<Row>,
    cached_rollbacks: Vec<TxnKey>,
    /// Bytes held by the three caches.
    bytes: usize,
}

impl Matcher {
    /// A matcher for a region registered with `checkpoint_ts`.
    pub fn new(region_id: u64, checkpoint: Ts) -> Matcher {
        Matcher {
            region_id,
            checkpoint,
            resolved: checkpoint,
            initialized: false,
            prewrites: HashMap::default(),
            cached_commits: Vec::new(),
            cached_rollbacks: Vec::new(),
            bytes: 0,
        }
    }

    /// The region this matcher serves.
    pub fn region_id(&self) -> u64 {
        self.region_id
    }

    /// True once INITIALIZED has been seen.
    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    /// The region's last accepted resolved ts (the checkpoint until one arrives).
    pub fn resolved_ts(&self) -> Ts {
        self.resolved
    }

    /// The registration's checkpoint ts.
    pub fn checkpoint_ts(&self) -> Ts {
        self.checkpoint
    }

    /// Bytes held in the caches (prewrites, cached commits and rollbacks), for the memory quota.
    pub fn cached_bytes(&self) -> usize {
        self.bytes
    }

    /// Number of prewrites waiting for their commit.
    pub fn pending_prewrites(&self) -> usize {
        self.prewrites.len()
    }

    /// The smallest start ts among waiting prewrites: the oldest lock this region holds, which
    /// is what holds its resolved ts back. O(prewrites); for diagnostics only.
    pub fn oldest_prewrite_start_ts(&self) -> Option<Ts> {
        self.prewrites.keys().map(|k| Ts(k.start_ts)).min()
    }

    /// Accepts a resolved ts for the region. Ignored (returns false) before INITIALIZED and when
    /// it is not above the last one.
    pub fn on_resolved(&mut self, ts: Ts) -> bool {
        if !self.initialized || ts <= self.resolved {
            return false;
        }
        self.resolved = ts;
        true
    }

    /// Processes the rows of one `Event.entries`, appending committed rows to `out` in order.
    ///
    /// On error, rows before the offending one have been appended and the rest are discarded; the
    /// region must be re-subscribed.
    pub fn process_all(
        &mut self,
        rows: Vec<Row>,
        out: &mut Vec<RawKvChange>,
    ) -> Result<(), MatchError> {
        for row in rows {
            self.process(row, out)?;
        }
        Ok(())
    }

    /// Processes one row, appending a committed row to `out` if it completes one.
    pub fn process(&mut self, row: Row, out: &mut Vec<RawKvChange>) -> Result<(), MatchError> {
        match LogType::try_from(row.r#type) {
            Ok(LogType::Prewrite) => {
                self.on_prewrite(row);
                Ok(())
            }
            Ok(LogType::Commit) => self.on_commit(row, out),
            Ok(LogType::Committed) => self.on_committed(row, out),
            Ok(LogType::Rollback) => {
                self.on_rollback(row);
                Ok(())
            }
            Ok(LogType::Initialized) => self.on_initialized(out),
            Ok(LogType::Unknown) | Err(_) => {
                // A row type this client does not know carries nothing it could deliver; a newer
                // TiKV may add informational types, so it is skipped rather than treated as a
                // broken stream (which would re-subscribe the region forever).
                tracing::warn!(
                    region_id = self.region_id,
                    log_type = row.r#type,
                    "skipping cdc row of unknown type"
                );
                Ok(())
            }
        }
    }

    fn on_prewrite(&mut self, row: Row) {
        let key = TxnKey {
            start_ts: row.start_ts,
            key: row.key,
        };
        let new = Prewrite {
            op_type: row.op_type,
            value: row.value,
            old_value: row.old_value,
            generation: row.generation,
        };
        let key_len = key.key.len();
        match self.prewrites.get_mut(&key) {
            Some(old) => {
                // A fake prewrite (lock rewritten without value) or an older pipelined-DML
                // generation never replaces what we have.
                if new.value.is_empty() || new.generation < old.generation {
                    return;
                }
                self.bytes = self.bytes.saturating_sub(old.bytes(key_len));
                self.bytes = self.bytes.saturating_add(new.bytes(key_len));
                *old = new;
            }
            None => {
                self.bytes = self.bytes.saturating_add(new.bytes(key_len));
                self.prewrites.insert(key, new);
            }
        }
    }

    fn on_rollback(&mut self, row: Row) {
        let key = TxnKey {
            start_ts: row.start_ts,
            key: row.key,
        };
        if self.initialized {
            self.remove_prewrite(&key);
        } else {
            self.bytes = self
                .bytes
                .saturating_add(ENTRY_OVERHEAD.saturating_add(key.key.len()));
            self.cached_rollbacks.push(key);
        }
    }

    fn remove_prewrite(&mut self, key: &TxnKey) -> Option<Prewrite> {
        let p = self.prewrites.remove(key)?;
        self.bytes = self.bytes.saturating_sub(p.bytes(key.key.len()));
        Some(p)
    }

    fn on_commit(&mut self, row: Row, out: &mut Vec<RawKvChange>) -> Result<(), MatchError> {
        let start_ts = row.start_ts;
        let commit_ts = row.commit_ts;
        let key = TxnKey {
            start_ts,
            key: row.key,
        };
        let usable = match self.prewrites.get(&key) {
            None => false,
            // Before INITIALIZED the scan may still deliver the real (or a newer) prewrite.
            Some(p) => self.initialized || (!p.value.is_empty() && p.generation == 0),
        };
        if !usable {
            if self.initialized {
                return Err(MatchError::UnmatchedCommit {
                    region_id: self.region_id,
                    start_ts,
                    commit_ts,
                });
            }
            let row = Row {
                key: key.key,
                ..row
            };
            self.bytes = self.bytes.saturating_add(row_bytes(&row));
            self.cached_commits.push(row);
            return Ok(());
        }
        let Some(p) = self.remove_prewrite(&key) else {
            // Checked just above; unreachable, but never panic on the hot path.
            return Ok(());
        };
        self.emit_matched(key.key, start_ts, commit_ts, row.op_type, row.value, p, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_matched(
        &mut self,
        key: Vec<u8>,
        start_ts: u64,
        commit_ts: u64,
        commit_op: i32,
        commit_value: Vec<u8>,
        p: Prewrite,
        out: &mut Vec<RawKvChange>,
    ) -> Result<(), MatchError> {
        let op_type = if commit_op == OpType::Unknown as i32 {
            p.op_type
        } else {
            commit_op
        };
        let value = if p.value.is_empty() {
            commit_value
        } else {
            p.value
        };
        self.emit(key, value, p.old_value, op_type, start_ts, commit_ts, out)
    }

    fn on_committed(&mut self, row: Row, out: &mut Vec<RawKvChange>) -> Result<(), MatchError> {
        self.emit(
            row.key,
            row.value,
            row.old_value,
            row.op_type,
            row.start_ts,
            row.commit_ts,
            out,
        )
    }

    /// The checks every committed row passes, then the row itself.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        old_value: Vec<u8>,
        op_type: i32,
        start_ts: u64,
        commit_ts: u64,
        out: &mut Vec<RawKvChange>,
    ) -> Result<(), MatchError> {
        if commit_ts <= self.checkpoint.0 {
            // Applied after observation began, but at or below the checkpoint: delivered before
            // (or predating the subscription). Stale, not an error.
            return Ok(());
        }
        if commit_ts <= self.resolved.0 {
            return Err(MatchError::CommitBelowResolved {
                region_id: self.region_id,
                commit_ts,
                resolved_ts: self.resolved.0,
            });
        }
        let op = match OpType::try_from(op_type) {
            Ok(OpType::Put) => RawOp::Put,
            Ok(OpType::Delete) => RawOp::Delete,
            Ok(OpType::Unknown) | Err(_) => {
                return Err(MatchError::UnknownOp {
                    region_id: self.region_id,
                    op_type,
                    start_ts,
                });
            }
        };
        out.push(RawKvChange {
            op,
            key,
            value,
            old_value,
            start_ts: Ts(start_ts),
            commit_ts: Ts(commit_ts),
            region_id: self.region_id,
        });
        Ok(())
    }

    fn on_initialized(&mut self, out: &mut Vec<RawKvChange>) -> Result<(), MatchError> {
        if self.initialized {
            return Ok(());
        }
        self.initialized = true;
        let commits = std::mem::take(&mut self.cached_commits);
        let rollbacks = std::mem::take(&mut self.cached_rollbacks);
        for row in &commits {
            self.bytes = self.bytes.saturating_sub(row_bytes(row));
        }
        for rb in &rollbacks {
            self.bytes = self
                .bytes
                .saturating_sub(ENTRY_OVERHEAD.saturating_add(rb.key.len()));
        }
        let mut result = Ok(());
        for row in commits {
            let key = TxnKey {
                start_ts: row.start_ts,
                key: row.key,
            };
            // No prewrite: the scan already delivered this commit as COMMITTED.
            if let Some(p) = self.remove_prewrite(&key) {
                let r = self.emit_matched(
                    key.key,
                    row.start_ts,
                    row.commit_ts,
                    row.op_type,
                    row.value,
                    p,
                    out,
                );
                if r.is_err() {
                    result = r;
                    break;
                }
            }
        }
        for rb in &rollbacks {
            self.remove_prewrite(rb);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: LogType, op: OpType, start: u64, commit: u64, key: &[u8], value: &[u8]) -> Row {
        Row {
            start_ts: start,
            commit_ts: commit,
            r#type: t as i32,
            op_type: op as i32,
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        }
    }
    fn prewrite(start: u64, key: &[u8], value: &[u8], old: &[u8]) -> Row {
        Row {
            old_value: old.to_vec(),
            ..row(LogType::Prewrite, OpType::Put, start, 0, key, value)
        }
    }
    fn commit(start: u64, commit: u64, key: &[u8]) -> Row {
        row(LogType::Commit, OpType::Put, start, commit, key, b"")
    }
    fn committed(start: u64, commit: u64, key: &[u8], value: &[u8]) -> Row {
        row(LogType::Committed, OpType::Put, start, commit, key, value)
    }
    fn rollback(start: u64, key: &[u8]) -> Row {
        row(LogType::Rollback, OpType::Unknown, start, 0, key, b"")
    }
    fn init() -> Row {
        row(LogType::Initialized, OpType::Unknown, 0, 0, b"", b"")
    }
    fn change(key: &[u8], value: &[u8], old: &[u8], start: u64, commit: u64) -> RawKvChange {
        RawKvChange {
            op: RawOp::Put,
            key: key.to_vec(),
            value: value.to_vec(),
            old_value: old.to_vec(),
            start_ts: Ts(start),
            commit_ts: Ts(commit),
            region_id: 7,
        }
    }
    fn run(m: &mut Matcher, rows: Vec<Row>) -> (Vec<RawKvChange>, Result<(), MatchError>) {
        let mut out = Vec::new();
        let r = m.process_all(rows, &mut out);
        (out, r)
    }

    /// [`run`], which must succeed.
    fn run_ok(m: &mut Matcher, rows: Vec<Row>) -> Vec<RawKvChange> {
        let (out, r) = run(m, rows);
        r.unwrap();
        out
    }

    fn initialized() -> Matcher {
        let mut m = Matcher::new(7, Ts(10));
        assert!(run_ok(&mut m, vec![init()]).is_empty());
        m
    }

    #[test]
    fn prewrite_then_commit_after_init_emits_prewrite_values() {
        let mut m = initialized();
        let out = run_ok(
            &mut m,
            vec![prewrite(20, b"k", b"v", b"old"), commit(20, 21, b"k")],
        );
        assert_eq!(out, vec![change(b"k", b"v", b"old", 20, 21)]);
        assert_eq!(m.pending_prewrites(), 0);
        assert_eq!(m.cached_bytes(), 0);
    }

    #[test]
    fn delete_op_comes_through() {
        let mut m = initialized();
        let mut p = prewrite(20, b"k", b"", b"old");
        p.op_type = OpType::Delete as i32;
        let mut c = commit(20, 21, b"k");
        c.op_type = OpType::Delete as i32;
        let out = run_ok(&mut m, vec![p, c]);
        let mut want = change(b"k", b"", b"old", 20, 21);
        want.op = RawOp::Delete;
        assert_eq!(out, vec![want]);
    }

    #[test]
    fn commit_with_unknown_op_takes_prewrite_op() {
        let mut m = initialized();
        let mut p = prewrite(20, b"k", b"", b"old");
        p.op_type = OpType::Delete as i32;
        let mut c = commit(20, 21, b"k");
        c.op_type = OpType::Unknown as i32;
        let out = run_ok(&mut m, vec![p, c]);
        assert_eq!(out[0].op, RawOp::Delete);
    }

    #[test]
    fn unknown_op_on_both_is_an_error() {
        let mut m = initialized();
        let mut p = prewrite(20, b"k", b"v", b"");
        p.op_type = 0;
        let mut c = commit(20, 21, b"k");
        c.op_type = 9;
        let (out, r) = run(&mut m, vec![p, c]);
        assert!(out.is_empty());
        assert_eq!(
            r,
            Err(MatchError::UnknownOp {
                region_id: 7,
                op_type: 9,
                start_ts: 20
            })
        );
    }

    #[test]
    fn fake_prewrite_does_not_overwrite() {
        let mut m = initialized();
        let out = run_ok(
            &mut m,
            vec![
                prewrite(20, b"k", b"v", b"o"),
                prewrite(20, b"k", b"", b""),
                commit(20, 21, b"k"),
            ],
        );
        assert_eq!(out, vec![change(b"k", b"v", b"o", 20, 21)]);
    }

    #[test]
    fn newer_prewrite_overwrites_and_lower_generation_does_not() {
        let mut m = initialized();
        let mut g2 = prewrite(20, b"k", b"v2", b"");
        g2.generation = 2;
        let mut g1 = prewrite(20, b"k", b"v1", b"");
        g1.generation = 1;
        let mut g3 = prewrite(20, b"k", b"v3", b"");
        g3.generation = 3;
        let out = run_ok(&mut m, vec![g2.clone(), g1, commit(20, 21, b"k")]);
        assert_eq!(out, vec![change(b"k", b"v2", b"", 20, 21)]);
        let out = run_ok(&mut m, vec![g2, g3, commit(20, 22, b"k")]);
        assert_eq!(out, vec![change(b"k", b"v3", b"", 20, 22)]);
        // Same generation with a value replaces too.
        let out = run_ok(
            &mut m,
            vec![
                prewrite(30, b"k", b"a", b""),
                prewrite(30, b"k", b"b", b""),
                commit(30, 31, b"k"),
            ],
        );
        assert_eq!(out, vec![change(b"k", b"b", b"", 30, 31)]);
    }

    #[test]
    fn commit_carries_inline_value_when_prewrite_has_none() {
        let mut m = initialized();
        let mut c = commit(20, 21, b"k");
        c.value = b"inline".to_vec();
        let out = run_ok(&mut m, vec![prewrite(20, b"k", b"", b"o"), c]);
        assert_eq!(out, vec![change(b"k", b"inline", b"o", 20, 21)]);
    }

    #[test]
    fn unmatched_commit_after_init_is_an_error() {
        let mut m = initialized();
        let (out, r) = run(&mut m, vec![commit(20, 21, b"k")]);
        assert!(out.is_empty());
        assert_eq!(
            r,
            Err(MatchError::UnmatchedCommit {
                region_id: 7,
                start_ts: 20,
                commit_ts: 21
            })
        );
    }

    #[test]
    fn commit_before_prewrite_before_init_is_cached_and_matched_at_init() {
        let mut m = Matcher::new(7, Ts(10));
        let out = run_ok(
            &mut m,
            vec![commit(20, 21, b"k"), prewrite(20, b"k", b"v", b"o")],
        );
        assert!(out.is_empty());
        assert!(m.cached_bytes() > 0);
        let out = run_ok(&mut m, vec![init()]);
        assert_eq!(out, vec![change(b"k", b"v", b"o", 20, 21)]);
        assert_eq!(m.cached_bytes(), 0);
        assert!(m.is_initialized());
    }

    #[test]
    fn commit_matching_before_init_is_emitted_immediately() {
        let mut m = Matcher::new(7, Ts(10));
        let out = run_ok(
            &mut m,
            vec![prewrite(20, b"k", b"v", b"o"), commit(20, 21, b"k")],
        );
        assert_eq!(out, vec![change(b"k", b"v", b"o", 20, 21)]);
    }

    #[test]
    fn before_init_match_refused_for_fake_or_pipelined_prewrite() {
        let mut m = Matcher::new(7, Ts(10));
        let mut g = prewrite(30, b"g", b"vg", b"");
        g.generation = 1;
        let out = run_ok(
            &mut m,
            vec![
                prewrite(20, b"k", b"", b""),
                commit(20, 21, b"k"),
                g,
                commit(30, 31, b"g"),
            ],
        );
        assert!(out.is_empty());
        // The scan later brings the real prewrite, then INITIALIZED settles both commits.
        let out = run_ok(&mut m, vec![prewrite(20, b"k", b"v", b"o"), init()]);
        assert_eq!(
            out,
            vec![
                change(b"k", b"v", b"o", 20, 21),
                change(b"g", b"vg", b"", 30, 31)
            ]
        );
    }

    #[test]
    fn unmatched_cached_commit_is_dropped_at_init() {
        let mut m = Matcher::new(7, Ts(10));
        let out = run_ok(
            &mut m,
            vec![commit(20, 21, b"k"), committed(20, 21, b"k", b"v"), init()],
        );
        assert_eq!(out, vec![change(b"k", b"v", b"", 20, 21)]);
        assert_eq!(m.cached_bytes(), 0);
    }

    #[test]
    fn rollback_before_init_applies_after_commits_at_init() {
        let mut m = Matcher::new(7, Ts(10));
        let out = run_ok(
            &mut m,
            vec![
                rollback(20, b"k"),
                prewrite(20, b"k", b"v", b""),
                prewrite(25, b"j", b"w", b""),
                init(),
            ],
        );
        assert!(out.is_empty());
        assert_eq!(m.pending_prewrites(), 1);
        assert_eq!(m.oldest_prewrite_start_ts(), Some(Ts(25)));
        // The rolled-back prewrite is gone: its commit would be a protocol error.
        let (_, r) = run(&mut m, vec![commit(20, 30, b"k")]);
        assert!(matches!(r, Err(MatchError::UnmatchedCommit { .. })));
    }

    #[test]
    fn rollback_after_init_removes_prewrite() {
        let mut m = initialized();
        let out = run_ok(
            &mut m,
            vec![prewrite(20, b"k", b"v", b""), rollback(20, b"k")],
        );
        assert!(out.is_empty());
        assert_eq!(m.pending_prewrites(), 0);
        assert_eq!(m.cached_bytes(), 0);
        // Rolling back something unknown is harmless.
        run_ok(&mut m, vec![rollback(99, b"zz")]);
    }

    #[test]
    fn committed_is_emitted_as_is() {
        let mut m = Matcher::new(7, Ts(10));
        let mut c = committed(15, 16, b"k", b"v");
        c.old_value = b"o".to_vec();
        let out = run_ok(&mut m, vec![c]);
        assert_eq!(out, vec![change(b"k", b"v", b"o", 15, 16)]);
    }

    #[test]
    fn commits_at_or_below_checkpoint_are_dropped() {
        let mut m = Matcher::new(7, Ts(10));
        let out = run_ok(
            &mut m,
            vec![
                committed(5, 10, b"a", b"v"),
                prewrite(8, b"b", b"v", b""),
                commit(8, 9, b"b"),
                init(),
                prewrite(8, b"c", b"v", b""),
                commit(8, 10, b"c"),
            ],
        );
        assert!(out.is_empty());
        assert_eq!(m.pending_prewrites(), 0);
    }

    #[test]
    fn commit_at_or_below_resolved_is_an_error() {
        let mut m = initialized();
        assert!(m.on_resolved(Ts(50)));
        let (_, r) = run(&mut m, vec![committed(40, 50, b"k", b"v")]);
        assert_eq!(
            r,
            Err(MatchError::CommitBelowResolved {
                region_id: 7,
                commit_ts: 50,
                resolved_ts: 50
            })
        );
        let (_, r) = run(
            &mut m,
            vec![prewrite(40, b"k", b"v", b""), commit(40, 45, b"k")],
        );
        assert!(matches!(r, Err(MatchError::CommitBelowResolved { .. })));
        let out = run_ok(&mut m, vec![committed(40, 51, b"k", b"v")]);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn resolved_ignored_before_init_and_when_lower() {
        let mut m = Matcher::new(7, Ts(10));
        assert!(!m.on_resolved(Ts(20)));
        assert_eq!(m.resolved_ts(), Ts(10));
        run_ok(&mut m, vec![init()]);
        assert!(m.on_resolved(Ts(20)));
        assert!(!m.on_resolved(Ts(15)));
        assert!(!m.on_resolved(Ts(20)));
        assert_eq!(m.resolved_ts(), Ts(20));
    }

    #[test]
    fn second_initialized_is_a_no_op() {
        let mut m = initialized();
        let out = run_ok(&mut m, vec![init()]);
        assert!(out.is_empty());
    }

    #[test]
    fn unknown_log_type_is_skipped() {
        let mut m = initialized();
        let mut r0 = prewrite(20, b"k", b"v", b"");
        r0.r#type = 42;
        let out = run_ok(&mut m, vec![r0]);
        assert!(out.is_empty());
        assert_eq!(m.pending_prewrites(), 0);
    }

    #[test]
    fn error_in_cached_commit_at_init_is_reported() {
        let mut m = Matcher::new(7, Ts(10));
        let mut c = commit(20, 21, b"k");
        c.op_type = 0;
        let mut p = prewrite(20, b"k", b"", b"");
        p.op_type = 0;
        let (_, r) = run(&mut m, vec![c, p, init()]);
        assert!(matches!(r, Err(MatchError::UnknownOp { .. })));
        assert_eq!(m.cached_bytes(), 0);
    }

    #[test]
    fn bytes_track_cache_contents() {
        let mut m = Matcher::new(7, Ts(10));
        run_ok(&mut m, vec![prewrite(20, b"key", b"value", b"old")]);
        assert_eq!(m.cached_bytes(), ENTRY_OVERHEAD + 3 + 5 + 3);
        run_ok(&mut m, vec![prewrite(20, b"key", b"v", b"")]);
        assert_eq!(m.cached_bytes(), ENTRY_OVERHEAD + 3 + 1);
        run_ok(&mut m, vec![rollback(30, b"ab")]);
        assert_eq!(m.cached_bytes(), 2 * ENTRY_OVERHEAD + 3 + 1 + 2);
        run_ok(&mut m, vec![init()]);
        assert_eq!(m.cached_bytes(), ENTRY_OVERHEAD + 3 + 1);
    }

    #[test]
    fn hasher_and_fingerprint_are_stable_and_discriminating() {
        let a = row_fingerprint(b"key", Ts(1), Ts(2));
        assert_eq!(a, row_fingerprint(b"key", Ts(1), Ts(2)));
        assert_ne!(a, row_fingerprint(b"key", Ts(1), Ts(3)));
        assert_ne!(a, row_fingerprint(b"kez", Ts(1), Ts(2)));
        assert_ne!(
            row_fingerprint(b"12345678", Ts(1), Ts(2)),
            row_fingerprint(b"12345678\0", Ts(1), Ts(2))
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn any_row() -> impl Strategy<Value = Row> {
            (
                0i32..7,
                0i32..4,
                0u64..6,
                0u64..12,
                prop::sample::select(vec![b"a".to_vec(), b"b".to_vec(), Vec::new()]),
                prop::sample::select(vec![Vec::new(), b"v".to_vec()]),
                0u64..3,
            )
                .prop_map(|(t, op, s, c, key, value, generation)| Row {
                    start_ts: s,
                    commit_ts: c,
                    r#type: t,
                    op_type: op,
                    key,
                    value,
                    generation,
                    ..Default::default()
                })
        }

        proptest! {
            #[test]
            fn arbitrary_sequences_never_panic(
                rows in prop::collection::vec(any_row(), 0..64),
                resolved in prop::collection::vec(0u64..12, 0..4),
            ) {
                let mut m = Matcher::new(3, Ts(2));
                let mut out = Vec::new();
                let mut res = resolved.into_iter();
                for row in rows {
                    let _ = m.process(row, &mut out);
                    if let Some(ts) = res.next() {
                        m.on_resolved(Ts(ts));
                    }
                }
                for r in &out {
                    prop_assert!(r.commit_ts > Ts(2));
                }
            }

            #[test]
            fn well_formed_transactions_come_out_once_each(
                txns in prop::collection::vec((0u8..8, any::<bool>(), any::<bool>()), 1..20),
            ) {
                // Each txn i writes key k_i at start 100+2i, commit 101+2i; the scan half may
                // deliver the prewrite before or after the live commit (before INITIALIZED).
                let mut m = Matcher::new(1, Ts(10));
                let mut out = Vec::new();
                let mut rows = Vec::new();
                let mut late = Vec::new();
                for (i, (k, commit_first, rolled_back)) in txns.iter().enumerate() {
                    let s = 100 + 2 * i as u64;
                    let key = vec![*k, i as u8];
                    let p = prewrite(s, &key, b"v", b"");
                    if *rolled_back {
                        rows.push(p);
                        rows.push(rollback(s, &key));
                    } else if *commit_first {
                        rows.push(commit(s, s + 1, &key));
                        late.push(p);
                    } else {
                        rows.push(p);
                        rows.push(commit(s, s + 1, &key));
                    }
                }
                rows.extend(late);
                rows.push(init());
                m.process_all(rows, &mut out).unwrap();
                let want = txns.iter().filter(|t| !t.2).count();
                prop_assert_eq!(out.len(), want);
                prop_assert_eq!(m.pending_prewrites(), 0);
                prop_assert_eq!(m.cached_bytes(), 0);
            }
        }
    }
}
