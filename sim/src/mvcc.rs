//! The cluster's multi-version store: percolator-style transactions over raw keys.
//!
//! One store serves the whole cluster; regions and stores only decide who may serve which keys
//! (see `region`). The layout mirrors TiKV's column families so that the behaviour a CDC client
//! observes (event kinds, their order, old values, conflicts) follows from the same rules:
//!
//! * the **lock map** (TiKV's lock CF): at most one lock per key, written by prewrite and removed
//!   by commit or rollback. Keeping locks in their own ordered map makes "minimum lock start_ts in
//!   a range" (needed for resolved ts every second per region) cost O(locks in range), not
//!   O(keys in range).
//! * the **write map** (TiKV's write CF, values inlined): per key, the committed versions in
//!   ascending commit_ts order — Put(value), Delete, or Rollback records.
//!
//! The write path is built for feeding ≥ 1 M row changes per second per core, where memory and
//! ordered-map searches dominate:
//!
//! * Keys are stored as `Key`s (40 bytes): the first 23 bytes and a length byte held as three
//!   big-endian words, so a comparison is three integer compares (TiDB row keys are 19 bytes);
//!   longer keys (index and meta keys) keep a heap copy for ties. Bytes are rebuilt on demand.
//! * A key's history holds its first version inline and moves to a `Vec` only on the second, so
//!   an insert-only workload allocates nothing per key beyond the value (boxed, exactly sized).
//! * Per key, a 2PC write searches the large write map twice (prewrite validation, commit apply)
//!   and the small lock map three times (prewrite validation and insert; commit takes the lock
//!   out while validating, putting every taken lock back if a later key fails).
//! * The write map is a `ChunkedMap` (crate-private) rather than a `BTreeMap`: sorted chunks of
//!   contiguous entries that appended key runs pack full, with a finger that lets a
//!   transaction's run of nearby keys skip the top-level search (about 10–20 % less writer CPU
//!   on the feed benchmark).
//!
//! Values move from the lock into the write record at commit. The events handed to an
//! observer are built only when one is installed, and by reference
//! ([`ApplyObserver::on_apply_refs`]): keys, values and old values are borrowed from the
//! operation's input and the write map, so no event copies a buffer. They are handed over after
//! validation and before the write map changes, under the write lock, which is the same instant
//! to anyone else.
//!
//! Every write operation (prewrite, commit, rollback, 1PC) validates all its keys first and then
//! applies all of them, like a TiKV command whose key errors abort the whole write batch. It runs
//! under the store's write lock and reports its effects to the [`ApplyObserver`] in apply order,
//! in one call, before the lock is released. [`MvccStore::atomically`] gives a reader a view in
//! which no write can apply (CDC uses it to attach a subscriber and take its initial-scan snapshot
//! at the same instant), and [`MvccStore::exclusive`] lets region changes (splits, merges, leader
//! transfers) take their place in the same apply order, as raft admin commands do in TiKV.
//!
//! The observer runs while the write lock is held: it must not call back into the store (that
//! would deadlock), but it may read the region manager.
//!
//! GC: [`MvccStore::gc`] compacts history below a safe point exactly as TiKV's GC does (the newest
//! Put at or below the safe point survives, a newest Delete and everything older are dropped,
//! rollback records below it are dropped) and raises the *physical* safe point. Snapshot reads
//! below the physical safe point fail with [`ReadError::GcSafePoint`] rather than silently
//! returning a partial history.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::chunked_map::ChunkedMap;
use crate::region::RegionChange;

/// Kind of a data mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Write a value.
    Put,
    /// Delete the key.
    Delete,
}

/// One key's change in a transaction (raw key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    /// Raw user key.
    pub key: Vec<u8>,
    /// Put or Delete.
    pub op: Op,
    /// The new value (ignored for Delete).
    pub value: Vec<u8>,
}

impl Mutation {
    /// A Put of `value` at `key`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            op: Op::Put,
            value: value.into(),
        }
    }

    /// A Delete of `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            op: Op::Delete,
            value: Vec::new(),
        }
    }
}

/// Options for the less common prewrite shapes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrewriteOptions {
    /// Pipelined-DML flush generation (0 for a normal transaction).
    pub generation: u64,
    /// The txn_source bitmap (CDC write source, lossy DDL, lightning bits).
    pub txn_source: u64,
    /// Write or rewrite the lock without carrying the value in the event: re-prewriting a key
    /// this transaction already locked keeps the stored value and reports a PREWRITE with an
    /// empty value (TiKV's "fake prewrite" after a lock rewrite). On a key without a lock the
    /// mutation's value is stored (so the commit still has it) but the event's value is empty.
    pub lock_only: bool,
    /// Lock TTL in milliseconds (informational; 0 means 3000).
    pub ttl: u64,
    /// for_update_ts of a pessimistic transaction (0 for optimistic).
    pub for_update_ts: u64,
}

/// A lock as a reader or a conflicting writer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// The locked raw key.
    pub key: Vec<u8>,
    /// The transaction's primary key.
    pub primary: Vec<u8>,
    /// The locking transaction's start_ts.
    pub start_ts: u64,
    /// Lock TTL in milliseconds.
    pub ttl: u64,
    /// Kind of the pending mutation.
    pub op: Op,
    /// for_update_ts (0 for optimistic transactions).
    pub for_update_ts: u64,
    /// Pipelined-DML generation.
    pub generation: u64,
    /// txn_source bitmap.
    pub txn_source: u64,
}

/// Why a transactional write was refused. Nothing of the command was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// Another transaction holds a lock on the key.
    #[error("key {:?} is locked by txn {}", .0.key, .0.start_ts)]
    Locked(LockInfo),
    /// A transaction committed on the key after this one started (or this one was rolled back).
    #[error(
        "write conflict on key {key:?}: txn {start_ts} vs txn {conflict_start_ts} committed at {conflict_commit_ts}"
    )]
    WriteConflict {
        /// The conflicting key.
        key: Vec<u8>,
        /// This transaction's start_ts.
        start_ts: u64,
        /// The start_ts of the transaction that wrote the conflicting version.
        conflict_start_ts: u64,
        /// Its commit_ts.
        conflict_commit_ts: u64,
        /// This transaction's primary key.
        primary: Vec<u8>,
    },
    /// Commit of a transaction that was rolled back.
    #[error("txn {start_ts} was rolled back (key {key:?})")]
    RolledBack {
        /// The key whose rollback record was found.
        key: Vec<u8>,
        /// The transaction's start_ts.
        start_ts: u64,
    },
    /// Commit found neither the transaction's lock nor its commit record.
    #[error("txn {start_ts} not found on key {key:?}")]
    TxnNotFound {
        /// The key.
        key: Vec<u8>,
        /// The transaction's start_ts.
        start_ts: u64,
    },
    /// Rollback of a transaction that already committed.
    #[error("txn {start_ts} already committed at {commit_ts} (key {key:?})")]
    Committed {
        /// The key.
        key: Vec<u8>,
        /// The transaction's start_ts.
        start_ts: u64,
        /// Its commit_ts.
        commit_ts: u64,
    },
    /// commit_ts must be greater than start_ts.
    #[error("invalid commit_ts {commit_ts} for txn {start_ts}")]
    InvalidCommitTs {
        /// The transaction's start_ts.
        start_ts: u64,
        /// The offending commit_ts.
        commit_ts: u64,
    },
}

/// Why a snapshot read failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A lock with start_ts ≤ the read ts is in the way; resolve it and retry.
    #[error("key {:?} is locked by txn {}", .0.key, .0.start_ts)]
    Locked(LockInfo),
    /// The read ts is below the physical GC safe point: the snapshot may be gone.
    #[error("read ts {ts} is below the GC safe point {safe_point}")]
    GcSafePoint {
        /// The requested read ts.
        ts: u64,
        /// The physical GC safe point.
        safe_point: u64,
    },
}

/// One effect of a write operation, as the observer (CDC) sees it. Keys are raw. `B` holds the
/// keys and values: owned (`Vec<u8>`, the default) or borrowed ([`ApplyEventRef`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyEvent<B = Vec<u8>> {
    /// A lock was written (or rewritten).
    Prewrite {
        /// Raw key.
        key: B,
        /// Transaction start_ts.
        start_ts: u64,
        /// Put or Delete.
        op: Op,
        /// The value (empty for Delete and for lock-only rewrites).
        value: B,
        /// The newest committed value before the write (empty if none or deleted).
        old_value: B,
        /// Pipelined-DML generation.
        generation: u64,
        /// txn_source bitmap.
        txn_source: u64,
    },
    /// A 2PC commit record was written.
    Commit {
        /// Raw key.
        key: B,
        /// Transaction start_ts.
        start_ts: u64,
        /// Commit ts.
        commit_ts: u64,
        /// Put or Delete.
        op: Op,
        /// txn_source bitmap.
        txn_source: u64,
    },
    /// A rollback record was written.
    Rollback {
        /// Raw key.
        key: B,
        /// The rolled-back transaction's start_ts.
        start_ts: u64,
    },
    /// A 1PC commit (self-contained, no prewrite precedes it).
    OnePc {
        /// Raw key.
        key: B,
        /// Transaction start_ts.
        start_ts: u64,
        /// Commit ts.
        commit_ts: u64,
        /// Put or Delete.
        op: Op,
        /// The value (empty for Delete).
        value: B,
        /// The newest committed value before the write (empty if none or deleted).
        old_value: B,
        /// txn_source bitmap.
        txn_source: u64,
    },
}

/// An [`ApplyEvent`] by reference: what the store hands its observer, borrowing keys and values
/// from the write operation's input and from the store instead of copying them.
pub type ApplyEventRef<'a> = ApplyEvent<&'a [u8]>;

impl<B> ApplyEvent<B> {
    /// The same event with its keys and values converted by `f`.
    pub fn map<'s, C>(&'s self, mut f: impl FnMut(&'s B) -> C) -> ApplyEvent<C> {
        match self {
            ApplyEvent::Prewrite {
                key,
                start_ts,
                op,
                value,
                old_value,
                generation,
                txn_source,
            } => ApplyEvent::Prewrite {
                key: f(key),
                start_ts: *start_ts,
                op: *op,
                value: f(value),
                old_value: f(old_value),
                generation: *generation,
                txn_source: *txn_source,
            },
            ApplyEvent::Commit {
                key,
                start_ts,
                commit_ts,
                op,
                txn_source,
            } => ApplyEvent::Commit {
                key: f(key),
                start_ts: *start_ts,
                commit_ts: *commit_ts,
                op: *op,
                txn_source: *txn_source,
            },
            ApplyEvent::Rollback { key, start_ts } => ApplyEvent::Rollback {
                key: f(key),
                start_ts: *start_ts,
            },
            ApplyEvent::OnePc {
                key,
                start_ts,
                commit_ts,
                op,
                value,
                old_value,
                txn_source,
            } => ApplyEvent::OnePc {
                key: f(key),
                start_ts: *start_ts,
                commit_ts: *commit_ts,
                op: *op,
                value: f(value),
                old_value: f(old_value),
                txn_source: *txn_source,
            },
        }
    }
}

impl ApplyEvent {
    /// The event by reference.
    pub fn as_event_ref(&self) -> ApplyEventRef<'_> {
        self.map(Vec::as_slice)
    }
}

impl ApplyEventRef<'_> {
    /// An owned copy.
    pub fn to_owned_event(&self) -> ApplyEvent {
        self.map(|b| b.to_vec())
    }
}

/// Receives every applied write, synchronously and in apply order.
pub trait ApplyObserver: Send + Sync {
    /// Called once per write operation with all its effects, while the store's write lock is
    /// held. Must not call back into the store.
    fn on_apply(&self, events: &[ApplyEvent]);

    /// The same call with the events by reference; this is the method the store calls. The
    /// default copies the events and forwards to [`on_apply`](Self::on_apply); an observer
    /// that only reads the events (CDC encodes them) implements this one to avoid the copies.
    fn on_apply_refs(&self, events: &[ApplyEventRef<'_>]) {
        let owned: Vec<ApplyEvent> = events.iter().map(ApplyEventRef::to_owned_event).collect();
        self.on_apply(&owned);
    }

    /// Called when a region change takes its place in apply order (under the same lock, before
    /// it is published on the region manager's broadcast channel). The default does nothing.
    fn on_region_change(&self, _change: &RegionChange) {}
}

/// A lock found by an initial (delta) scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanLock {
    /// Raw key.
    pub key: Vec<u8>,
    /// Transaction start_ts.
    pub start_ts: u64,
    /// Put or Delete.
    pub op: Op,
    /// The locked value (empty for Delete).
    pub value: Vec<u8>,
    /// The newest committed value (empty if none or deleted).
    pub old_value: Vec<u8>,
    /// Pipelined-DML generation.
    pub generation: u64,
    /// txn_source bitmap.
    pub txn_source: u64,
}

/// A committed version found by an initial (delta) scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanCommit {
    /// Raw key.
    pub key: Vec<u8>,
    /// Transaction start_ts.
    pub start_ts: u64,
    /// Commit ts.
    pub commit_ts: u64,
    /// Put or Delete.
    pub op: Op,
    /// The value (empty for Delete).
    pub value: Vec<u8>,
    /// The previous committed value before this commit (empty if none or deleted).
    pub old_value: Vec<u8>,
    /// txn_source bitmap.
    pub txn_source: u64,
}

/// Result of [`MvccView::delta_scan`]: rows sorted by key; for one key, commits come newest
/// first (the order TiKV's delta scanner yields them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeltaScan {
    /// Every Put/Delete lock in range, whatever its start_ts.
    pub locks: Vec<ScanLock>,
    /// Every Put/Delete commit with commit_ts > after_ts in range.
    pub commits: Vec<ScanCommit>,
}

/// Lock-handling options for a snapshot read (kvrpcpb `Context.resolved_locks` /
/// `committed_locks`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions<'a> {
    /// Locks of these transactions are ignored (they rolled back or commit after the read).
    pub bypass_locks: &'a [u64],
    /// Locks of these transactions are read through: their pending value is visible.
    pub access_locks: &'a [u64],
}

/// Key/value pairs in key order.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One entry of a scan with per-key lock errors.
pub type ScanItem = Result<(Vec<u8>, Vec<u8>), LockInfo>;

/// Bytes of a key kept inline in a [`Key`] (TiDB row keys are 19 bytes).
const INLINE_KEY: usize = 23;

/// A raw key as the store's maps hold it, in 40 bytes: three words holding the first
/// [`INLINE_KEY`] bytes (zero padded) followed by one length byte, as big-endian values so that
/// integer order is byte order; and a heap copy of the whole key when it is longer.
///
/// Ordered exactly as the bytes are (lexicographically). If the heads differ, so do the keys, in
/// the same order. If the padded heads are equal and a key is short, its bytes are a prefix of the
/// other key's, so the length byte decides (a long key's is `INLINE_KEY + 1`, above any short
/// length). Only two long keys with equal heads compare their heap copies. A map search thus
/// neither follows a pointer nor converts bytes per comparison in the common case; the bytes are
/// rebuilt on demand ([`Key::to_vec`]), which only reads and events need.
#[derive(Clone, PartialEq, Eq)]
struct Key {
    head: [u64; 3],
    long: Option<Box<[u8]>>,
}

impl Key {
    fn new(k: &[u8]) -> Key {
        let mut b = [0u8; INLINE_KEY + 1];
        let n = k.len().min(INLINE_KEY);
        if let (Some(dst), Some(src)) = (b.get_mut(..n), k.get(..n)) {
            dst.copy_from_slice(src);
        }
        if let Some(last) = b.last_mut() {
            // `n` is the length of a short key, `INLINE_KEY + 1` marks a long one.
            *last = if k.len() > INLINE_KEY {
                INLINE_KEY as u8 + 1
            } else {
                n as u8
            };
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            if let Some(src) = b.get(i * 8..i * 8 + 8) {
                w.copy_from_slice(src);
            }
            u64::from_be_bytes(w)
        };
        Key {
            head: [word(0), word(1), word(2)],
            long: (k.len() > INLINE_KEY).then(|| Box::from(k)),
        }
    }

    /// The key's bytes.
    fn to_vec(&self) -> Vec<u8> {
        match &self.long {
            Some(b) => b.to_vec(),
            None => {
                let mut b = [0u8; INLINE_KEY + 1];
                for (dst, w) in b.chunks_exact_mut(8).zip(self.head) {
                    dst.copy_from_slice(&w.to_be_bytes());
                }
                let len = b.last().map_or(0, |&l| usize::from(l).min(INLINE_KEY));
                b.get(..len).unwrap_or_default().to_vec()
            }
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        let [a0, a1, a2] = self.head;
        let [b0, b1, b2] = other.head;
        a0.cmp(&b0)
            .then(a1.cmp(&b1))
            .then(a2.cmp(&b2))
            // Equal heads: both short (then equal) or both long.
            .then_with(|| self.long.cmp(&other.long))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_vec())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Lock {
    start_ts: u64,
    primary: Arc<[u8]>,
    op: Op,
    value: Vec<u8>,
    ttl: u64,
    generation: u64,
    txn_source: u64,
    for_update_ts: u64,
}

impl Lock {
    fn info(&self, key: &[u8]) -> LockInfo {
        LockInfo {
            key: key.to_vec(),
            primary: self.primary.to_vec(),
            start_ts: self.start_ts,
            ttl: self.ttl,
            op: self.op,
            for_update_ts: self.for_update_ts,
            generation: self.generation,
            txn_source: self.txn_source,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteKind {
    Put,
    Delete,
    Rollback,
}

/// A write record (a version). 48 bytes: the kind is a plain tag next to the flag, and the value
/// is boxed (a version keeps its value for good; empty unless a Put, which allocates nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Write {
    start_ts: u64,
    commit_ts: u64,
    txn_source: u64,
    value: Box<[u8]>,
    kind: WriteKind,
    /// A rollback of the transaction whose start_ts equals this record's commit_ts was folded
    /// into this record (TiKV's "overlapped rollback").
    overlapped_rollback: bool,
}

impl Write {
    /// The commit record of a Put or Delete (a Delete drops `value`).
    fn data(start_ts: u64, commit_ts: u64, op: Op, value: Vec<u8>, txn_source: u64) -> Write {
        let (kind, value) = match op {
            Op::Put => (WriteKind::Put, value.into_boxed_slice()),
            Op::Delete => (WriteKind::Delete, Box::default()),
        };
        Write {
            start_ts,
            commit_ts,
            txn_source,
            value,
            kind,
            overlapped_rollback: false,
        }
    }

    /// The rollback record of the transaction `start_ts`.
    fn rollback(start_ts: u64) -> Write {
        Write {
            start_ts,
            commit_ts: start_ts,
            txn_source: 0,
            value: Box::default(),
            kind: WriteKind::Rollback,
            overlapped_rollback: false,
        }
    }

    fn op(&self) -> Option<Op> {
        match self.kind {
            WriteKind::Put => Some(Op::Put),
            WriteKind::Delete => Some(Op::Delete),
            WriteKind::Rollback => None,
        }
    }

    /// The value of a Put (empty for other kinds).
    fn value(&self) -> &[u8] {
        &self.value
    }
}

/// One key's committed versions (write records), in ascending commit_ts order (records with equal
/// commit_ts in insertion order).
///
/// Most keys are written once, so a single version is held inline; the second one moves the
/// history into a `Vec`. This saves an allocation (and its memory) per key on insert-heavy
/// workloads. An empty history is `Many` with an unallocated `Vec`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum History {
    One(Write),
    Many(Vec<Write>),
}

impl Default for History {
    fn default() -> Self {
        History::Many(Vec::new())
    }
}

impl History {
    fn as_slice(&self) -> &[Write] {
        match self {
            History::One(w) => std::slice::from_ref(w),
            History::Many(ws) => ws,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Write] {
        match self {
            History::One(w) => std::slice::from_mut(w),
            History::Many(ws) => ws,
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, History::Many(ws) if ws.is_empty())
    }

    /// Inserts a version keeping ascending commit_ts order (after records with the same
    /// commit_ts; appending in the common case).
    fn insert(&mut self, w: Write) {
        match self {
            History::Many(ws) if !ws.is_empty() => insert_sorted(ws, w),
            History::Many(_) => *self = History::One(w),
            History::One(_) => {
                let mut ws = Vec::with_capacity(2);
                if let History::One(first) = std::mem::take(self) {
                    ws.push(first);
                }
                insert_sorted(&mut ws, w);
                *self = History::Many(ws);
            }
        }
    }

    /// GC (see [`gc_versions`]); a history left with one version goes back inline.
    fn gc(&mut self, safe_point: u64) {
        match self {
            History::One(w) => {
                if w.commit_ts <= safe_point && w.kind != WriteKind::Put {
                    *self = History::default();
                }
            }
            History::Many(ws) => {
                gc_versions(ws, safe_point);
                if ws.len() == 1
                    && let Some(w) = ws.pop()
                {
                    *self = History::One(w);
                }
            }
        }
    }
}

/// Inserts `w` after every record with commit_ts ≤ its own.
fn insert_sorted(ws: &mut Vec<Write>, w: Write) {
    match ws.last() {
        Some(last) if last.commit_ts > w.commit_ts => {
            let pos = ws.partition_point(|x| x.commit_ts <= w.commit_ts);
            ws.insert(pos, w);
        }
        _ => ws.push(w),
    }
}

/// The committed value a new write replaces: the newest Put/Delete version (empty if none).
fn latest_value(writes: Option<&History>) -> Vec<u8> {
    latest_value_ref(writes).to_vec()
}

/// [`latest_value`] by reference.
fn latest_value_ref(writes: Option<&History>) -> &[u8] {
    writes
        .and_then(|ws| ws.as_slice().iter().rev().find(|w| w.op().is_some()))
        .map(|w| w.value())
        .unwrap_or_default()
}

/// Hands `events` to the observer, if there is one and there are events.
fn notify(observer: Option<&Arc<dyn ApplyObserver>>, events: &[ApplyEventRef<'_>]) {
    if let Some(obs) = observer
        && !events.is_empty()
    {
        obs.on_apply_refs(events);
    }
}

type KeyBounds = (Bound<Key>, Bound<Key>);

fn range_bounds(start: &[u8], end: &[u8]) -> Option<KeyBounds> {
    if end.is_empty() {
        Some((Bound::Included(Key::new(start)), Bound::Unbounded))
    } else if start < end {
        Some((
            Bound::Included(Key::new(start)),
            Bound::Excluded(Key::new(end)),
        ))
    } else {
        None
    }
}

#[derive(Default)]
struct Inner {
    locks: BTreeMap<Key, Lock>,
    writes: ChunkedMap<Key, History>,
    gc_safe_point: u64,
    observer: Option<Arc<dyn ApplyObserver>>,
}

/// What a prewrite does to one key after validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PrewriteAction {
    /// No lock yet: write one.
    Fresh,
    /// This transaction already holds the lock: rewrite it.
    Rewrite,
    /// This transaction already committed the key: nothing to do.
    AlreadyCommitted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RollbackAction {
    /// Remove the lock and write a rollback record.
    RemoveLock,
    /// No lock: write a protective rollback record.
    Protect,
    /// Already rolled back: nothing to do.
    Done,
}

impl Inner {
    /// Write-conflict check against a key's committed history (TiKV `check_for_newer_version`).
    fn check_history_in(
        writes: Option<&History>,
        key: &[u8],
        primary: &[u8],
        start_ts: u64,
    ) -> Result<PrewriteAction, TxnError> {
        let Some(writes) = writes else {
            return Ok(PrewriteAction::Fresh);
        };
        let mut newer: Option<&Write> = None;
        for w in writes.as_slice().iter().rev() {
            if w.commit_ts < start_ts {
                break;
            }
            let self_rolled_back = w.commit_ts == start_ts && w.overlapped_rollback;
            if w.start_ts == start_ts || self_rolled_back {
                if w.op().is_some() && !self_rolled_back {
                    return Ok(PrewriteAction::AlreadyCommitted);
                }
                return Err(conflict(key, primary, start_ts, w));
            }
            if newer.is_none() && w.commit_ts > start_ts {
                newer = Some(w);
            }
        }
        match newer {
            Some(w) => Err(conflict(key, primary, start_ts, w)),
            None => Ok(PrewriteAction::Fresh),
        }
    }

    /// Validates one key of a prewrite with one search of each map. Returns the action, the
    /// op of the transaction's existing lock on a rewrite, and the key's history (prewrites do
    /// not change the write map, so its newest value is the old value at apply time too).
    fn check_prewrite_in<'w>(
        locks: &BTreeMap<Key, Lock>,
        writes: &'w ChunkedMap<Key, History>,
        key: &Key,
        raw: &[u8],
        primary: &[u8],
        start_ts: u64,
    ) -> Result<(PrewriteAction, Option<Op>, Option<&'w History>), TxnError> {
        let history = writes.get(key);
        let (action, lock_op) = match locks.get(key) {
            Some(lock) if lock.start_ts != start_ts => {
                return Err(TxnError::Locked(lock.info(raw)));
            }
            Some(lock) => (PrewriteAction::Rewrite, Some(lock.op)),
            None => (
                Self::check_history_in(history, raw, primary, start_ts)?,
                None,
            ),
        };
        Ok((action, lock_op, history))
    }

    /// The commit record of `start_ts` on `key`, if any (rollbacks included).
    fn find_txn_write(&self, key: &Key, start_ts: u64) -> Option<&Write> {
        find_txn_write_in(&self.writes, key, start_ts)
    }

    fn check_rollback(
        &self,
        key: &Key,
        raw: &[u8],
        start_ts: u64,
    ) -> Result<RollbackAction, TxnError> {
        if self.locks.get(key).is_some_and(|l| l.start_ts == start_ts) {
            return Ok(RollbackAction::RemoveLock);
        }
        match self.find_txn_write(key, start_ts) {
            Some(w) if w.op().is_some() && w.start_ts == start_ts => Err(TxnError::Committed {
                key: raw.to_vec(),
                start_ts,
                commit_ts: w.commit_ts,
            }),
            Some(_) => Ok(RollbackAction::Done),
            None => Ok(RollbackAction::Protect),
        }
    }

    /// Writes a rollback record for `start_ts`, folding it into a commit record that happens to
    /// sit at the same timestamp.
    fn write_rollback(&mut self, key: Key, start_ts: u64) {
        let writes = self.writes.get_or_insert_with(key, History::default);
        if let Some(w) = writes
            .as_mut_slice()
            .iter_mut()
            .rev()
            .find(|w| w.commit_ts == start_ts)
        {
            w.overlapped_rollback = true;
            return;
        }
        writes.insert(Write::rollback(start_ts));
    }

    /// Reads `key` at `ts`: the newest visible Put/Delete, or the lock in the way.
    fn read(
        &self,
        key: &[u8],
        ts: u64,
        opts: &ReadOptions<'_>,
    ) -> Result<Option<(u64, Vec<u8>)>, LockInfo> {
        let k = Key::new(key);
        read_entry(self.locks.get(&k), self.writes.get(&k), ts, opts).map_err(|l| l.info(key))
    }

    fn check_safe_point(&self, ts: u64) -> Result<(), ReadError> {
        if ts < self.gc_safe_point {
            return Err(ReadError::GcSafePoint {
                ts,
                safe_point: self.gc_safe_point,
            });
        }
        Ok(())
    }

    fn notify(&self, events: &[ApplyEventRef<'_>]) {
        notify(self.observer.as_ref(), events);
    }

    fn merged(&self, start: &[u8], end: &[u8], reverse: bool) -> Merged<'_> {
        let (locks, writes): (RangeIter<'_, Lock>, RangeIter<'_, History>) =
            match range_bounds(start, end) {
                Some(b) => {
                    if reverse {
                        (
                            Box::new(
                                self.locks
                                    .range::<Key, _>((b.0.as_ref(), b.1.as_ref()))
                                    .rev(),
                            ),
                            Box::new(self.writes.range(b.0.as_ref(), b.1.as_ref()).rev()),
                        )
                    } else {
                        (
                            Box::new(self.locks.range::<Key, _>((b.0.as_ref(), b.1.as_ref()))),
                            Box::new(self.writes.range(b.0.as_ref(), b.1.as_ref())),
                        )
                    }
                }
                None => (Box::new(std::iter::empty()), Box::new(std::iter::empty())),
            };
        Merged {
            locks: locks.peekable(),
            writes: writes.peekable(),
            reverse,
        }
    }
}

/// The commit record of `start_ts` on `key`, if any (rollbacks included).
fn find_txn_write_in<'a>(
    writes: &'a ChunkedMap<Key, History>,
    key: &Key,
    start_ts: u64,
) -> Option<&'a Write> {
    writes
        .get(key)?
        .as_slice()
        .iter()
        .rev()
        .find(|w| w.start_ts == start_ts || (w.commit_ts == start_ts && w.overlapped_rollback))
}

/// Commit validation of a key that holds no lock of the transaction: fine (nothing to do) if the
/// transaction already committed it, an error otherwise.
fn check_commit_unlocked(
    writes: &ChunkedMap<Key, History>,
    key: &Key,
    raw: &[u8],
    start_ts: u64,
) -> Result<(), TxnError> {
    match find_txn_write_in(writes, key, start_ts) {
        Some(w) if w.op().is_some() && w.start_ts == start_ts => Ok(()),
        Some(_) => Err(TxnError::RolledBack {
            key: raw.to_vec(),
            start_ts,
        }),
        None => Err(TxnError::TxnNotFound {
            key: raw.to_vec(),
            start_ts,
        }),
    }
}

fn conflict(key: &[u8], primary: &[u8], start_ts: u64, w: &Write) -> TxnError {
    TxnError::WriteConflict {
        key: key.to_vec(),
        start_ts,
        conflict_start_ts: w.start_ts,
        conflict_commit_ts: w.commit_ts,
        primary: primary.to_vec(),
    }
}

/// Reads one key at `ts` from its lock and history: the newest visible Put/Delete, or the lock
/// in the way.
fn read_entry<'a>(
    lock: Option<&'a Lock>,
    writes: Option<&History>,
    ts: u64,
    opts: &ReadOptions<'_>,
) -> Result<Option<(u64, Vec<u8>)>, &'a Lock> {
    if let Some(lock) = lock
        && lock.start_ts <= ts
        && !opts.bypass_locks.contains(&lock.start_ts)
    {
        if opts.access_locks.contains(&lock.start_ts) {
            return Ok(match lock.op {
                Op::Put => Some((0, lock.value.clone())),
                Op::Delete => None,
            });
        }
        return Err(lock);
    }
    let Some(writes) = writes else {
        return Ok(None);
    };
    let writes = writes.as_slice();
    let visible = writes.partition_point(|w| w.commit_ts <= ts);
    let newest = writes
        .get(..visible)
        .and_then(|ws| ws.iter().rev().find(|w| w.op().is_some()));
    Ok(newest.and_then(|w| match w.kind {
        WriteKind::Put => Some((w.commit_ts, w.value.to_vec())),
        _ => None,
    }))
}

type RangeIter<'a, T> = Box<dyn Iterator<Item = (&'a Key, &'a T)> + 'a>;

/// Walks the lock map and the write map of a range together, in key order.
struct Merged<'a> {
    locks: Peekable<RangeIter<'a, Lock>>,
    writes: Peekable<RangeIter<'a, History>>,
    reverse: bool,
}

impl<'a> Iterator for Merged<'a> {
    type Item = (&'a Key, Option<&'a Lock>, Option<&'a History>);

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.locks.peek(), self.writes.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((lk, _)), Some((wk, _))) => {
                let o = lk.cmp(wk);
                if self.reverse { o.reverse() } else { o }
            }
        };
        match order {
            Ordering::Less => self.locks.next().map(|(k, l)| (k, Some(l), None)),
            Ordering::Greater => self.writes.next().map(|(k, w)| (k, None, Some(w))),
            Ordering::Equal => {
                let (k, l) = self.locks.next()?;
                let w = self.writes.next().map(|(_, w)| w);
                Some((k, Some(l), w))
            }
        }
    }
}

/// The cluster's MVCC store (cheap to clone; clones share state).
#[derive(Clone, Default)]
pub struct MvccStore {
    inner: Arc<RwLock<Inner>>,
}

impl fmt::Debug for MvccStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.read();
        f.debug_struct("MvccStore")
            .field("keys", &inner.writes.len())
            .field("locks", &inner.locks.len())
            .field("gc_safe_point", &inner.gc_safe_point)
            .finish()
    }
}

impl MvccStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs the observer that receives every applied write (replacing any previous one).
    pub fn set_observer(&self, observer: Arc<dyn ApplyObserver>) {
        self.inner.write().observer = Some(observer);
    }

    /// Prewrites `muts` for the transaction `start_ts` with primary key `primary`.
    pub fn prewrite(
        &self,
        muts: &[Mutation],
        primary: &[u8],
        start_ts: u64,
    ) -> Result<(), TxnError> {
        self.prewrite_with(muts, primary, start_ts, &PrewriteOptions::default())
    }

    /// Prewrite with explicit options (generation, txn_source, lock-only rewrites, TTL).
    pub fn prewrite_with(
        &self,
        muts: &[Mutation],
        primary: &[u8],
        start_ts: u64,
        opts: &PrewriteOptions,
    ) -> Result<(), TxnError> {
        self.prewrite_impl(muts, None, primary, start_ts, opts)
    }

    /// A plain prewrite that moves the values out of `muts` into the locks instead of copying
    /// them (keys are left in place for the commit). On error the values may be gone; the
    /// caller only needs the keys then (to roll back).
    pub(crate) fn prewrite_moving_values(
        &self,
        muts: &mut [Mutation],
        primary: &[u8],
        start_ts: u64,
    ) -> Result<(), TxnError> {
        let values = muts
            .iter_mut()
            .map(|m| std::mem::take(&mut m.value))
            .collect();
        self.prewrite_impl(
            muts,
            Some(values),
            primary,
            start_ts,
            &PrewriteOptions::default(),
        )
    }

    /// Prewrite; `values`, when given, holds each mutation's value (used instead of a copy).
    fn prewrite_impl(
        &self,
        muts: &[Mutation],
        values: Option<Vec<Vec<u8>>>,
        primary: &[u8],
        start_ts: u64,
        opts: &PrewriteOptions,
    ) -> Result<(), TxnError> {
        let mut guard = self.inner.write();
        let Inner {
            locks,
            writes,
            observer,
            ..
        } = &mut *guard;
        let observer = observer.as_ref();
        let mut checked = Vec::with_capacity(muts.len());
        // Old values, borrowed from the write map (which a prewrite does not change).
        let mut olds: Vec<&[u8]> =
            Vec::with_capacity(if observer.is_some() { muts.len() } else { 0 });
        for m in muts {
            let key = Key::new(&m.key);
            let (action, lock_op, history) =
                Inner::check_prewrite_in(locks, writes, &key, &m.key, primary, start_ts)?;
            if observer.is_some() {
                olds.push(match action {
                    PrewriteAction::AlreadyCommitted => &[],
                    _ => latest_value_ref(history),
                });
            }
            checked.push((key, action, lock_op));
        }
        if observer.is_some() {
            let mut events = Vec::with_capacity(muts.len());
            for (i, (m, (_, action, lock_op))) in muts.iter().zip(&checked).enumerate() {
                let value: &[u8] = match (m.op, &values) {
                    (Op::Delete, _) => &[],
                    (Op::Put, Some(vs)) => vs.get(i).map_or(&[], Vec::as_slice),
                    (Op::Put, None) => &m.value,
                };
                let (op, value) = match action {
                    PrewriteAction::AlreadyCommitted => continue,
                    // TiKV emits nothing for a new lock that carries no value (pipelined or
                    // lock-only writes); only a rewrite of an existing lock shows up, as a
                    // PREWRITE with an empty value (a "fake prewrite") and the lock's op.
                    PrewriteAction::Fresh if opts.lock_only => continue,
                    _ if opts.lock_only => (lock_op.unwrap_or(m.op), &[][..]),
                    _ => (m.op, value),
                };
                events.push(ApplyEventRef::Prewrite {
                    key: &m.key,
                    start_ts,
                    op,
                    value,
                    old_value: olds.get(i).copied().unwrap_or_default(),
                    generation: opts.generation,
                    txn_source: opts.txn_source,
                });
            }
            notify(observer, &events);
        }
        let primary: Arc<[u8]> = Arc::from(primary);
        let mut values = values.map(Vec::into_iter);
        for (m, (key, action, _)) in muts.iter().zip(checked) {
            let given = values.as_mut().and_then(Iterator::next);
            if action == PrewriteAction::AlreadyCommitted {
                continue;
            }
            let value = if m.op == Op::Delete {
                Vec::new()
            } else {
                given.unwrap_or_else(|| m.value.clone())
            };
            // Only a rewrite looks its lock up again; a fresh lock goes straight to the insert.
            let existing = match action {
                PrewriteAction::Rewrite => locks.get_mut(&key),
                _ => None,
            };
            match existing {
                Some(lock) => {
                    lock.generation = opts.generation;
                    lock.txn_source = opts.txn_source;
                    if opts.for_update_ts != 0 {
                        lock.for_update_ts = opts.for_update_ts;
                    }
                    if !opts.lock_only {
                        lock.op = m.op;
                        lock.value = value;
                    }
                }
                None => {
                    let lock = Lock {
                        start_ts,
                        primary: Arc::clone(&primary),
                        op: m.op,
                        value,
                        ttl: if opts.ttl == 0 { 3000 } else { opts.ttl },
                        generation: opts.generation,
                        txn_source: opts.txn_source,
                        for_update_ts: opts.for_update_ts,
                    };
                    locks.insert(key, lock);
                }
            }
        }
        Ok(())
    }

    /// Commits `keys` of the transaction `start_ts` at `commit_ts`. Idempotent for keys already
    /// committed by this transaction.
    pub fn commit(&self, keys: &[Vec<u8>], start_ts: u64, commit_ts: u64) -> Result<(), TxnError> {
        self.commit_impl(keys, |k| k.as_slice(), start_ts, commit_ts)
    }

    /// [`commit`](Self::commit) of the mutations' keys.
    pub(crate) fn commit_mutation_keys(
        &self,
        muts: &[Mutation],
        start_ts: u64,
        commit_ts: u64,
    ) -> Result<(), TxnError> {
        self.commit_impl(muts, |m| m.key.as_slice(), start_ts, commit_ts)
    }

    fn commit_impl<T>(
        &self,
        keys: &[T],
        key_of: impl Fn(&T) -> &[u8],
        start_ts: u64,
        commit_ts: u64,
    ) -> Result<(), TxnError> {
        if commit_ts <= start_ts {
            return Err(TxnError::InvalidCommitTs {
                start_ts,
                commit_ts,
            });
        }
        let mut guard = self.inner.write();
        let Inner {
            locks,
            writes,
            observer,
            ..
        } = &mut *guard;
        // Validation takes each lock of the transaction out as it goes (one search per key for
        // both); if a later key fails, the taken locks go back, leaving the store as it was.
        // Each taken lock keeps the position of its key in `keys` (events borrow the key there).
        let mut taken: Vec<(Key, Lock, usize)> = Vec::with_capacity(keys.len());
        for (i, raw) in keys.iter().enumerate() {
            let raw = key_of(raw);
            let checked = match locks.entry(Key::new(raw)) {
                Entry::Occupied(e) if e.get().start_ts == start_ts => {
                    let (k, lock) = e.remove_entry();
                    taken.push((k, lock, i));
                    Ok(())
                }
                Entry::Occupied(e) => check_commit_unlocked(writes, e.key(), raw, start_ts),
                Entry::Vacant(e) => check_commit_unlocked(writes, e.key(), raw, start_ts),
            };
            if let Err(err) = checked {
                // A key listed twice had its lock taken by its first occurrence: that one is
                // committed (and this one is a no-op), as if validated before any apply.
                let key = Key::new(raw);
                if taken.iter().any(|(k, _, _)| *k == key) {
                    continue;
                }
                for (k, lock, _) in taken {
                    locks.insert(k, lock);
                }
                return Err(err);
            }
        }
        let observer = observer.as_ref();
        let mut events = Vec::with_capacity(if observer.is_some() { taken.len() } else { 0 });
        for (key, lock, i) in taken {
            if observer.is_some() {
                events.push(ApplyEventRef::Commit {
                    key: keys.get(i).map(&key_of).unwrap_or_default(),
                    start_ts,
                    commit_ts,
                    op: lock.op,
                    txn_source: lock.txn_source,
                });
            }
            writes
                .get_or_insert_with(key, History::default)
                .insert(Write::data(
                    start_ts,
                    commit_ts,
                    lock.op,
                    lock.value,
                    lock.txn_source,
                ));
        }
        notify(observer, &events);
        Ok(())
    }

    /// Rolls back `keys` of the transaction `start_ts`: removes its locks and writes rollback
    /// records (also on keys it never locked, so a late prewrite fails). Fails, applying
    /// nothing, if any key was already committed by the transaction.
    pub fn rollback(&self, keys: &[Vec<u8>], start_ts: u64) -> Result<(), TxnError> {
        let mut guard = self.inner.write();
        let inner = &mut *guard;
        let mut checked = Vec::with_capacity(keys.len());
        for k in keys {
            let key = Key::new(k);
            let action = inner.check_rollback(&key, k, start_ts)?;
            checked.push((key, action));
        }
        let observe = inner.observer.is_some();
        let mut events = Vec::new();
        for (raw, (key, action)) in keys.iter().zip(checked) {
            let key = match action {
                RollbackAction::Done => continue,
                RollbackAction::RemoveLock => match inner.locks.remove_entry(&key) {
                    Some((k, _)) => k,
                    None => continue,
                },
                RollbackAction::Protect => key,
            };
            inner.write_rollback(key, start_ts);
            if observe {
                events.push(ApplyEventRef::Rollback { key: raw, start_ts });
            }
        }
        inner.notify(&events);
        Ok(())
    }

    /// Commits `muts` in one phase (no locks) at `commit_ts`.
    pub fn one_pc(&self, muts: &[Mutation], start_ts: u64, commit_ts: u64) -> Result<(), TxnError> {
        self.one_pc_with(muts, start_ts, commit_ts, 0)
    }

    /// 1PC with a txn_source bitmap.
    pub fn one_pc_with(
        &self,
        muts: &[Mutation],
        start_ts: u64,
        commit_ts: u64,
        txn_source: u64,
    ) -> Result<(), TxnError> {
        self.one_pc_allocating(muts, start_ts, txn_source, || commit_ts)
            .map(|_| ())
    }

    /// 1PC whose commit ts is allocated (by `alloc_commit_ts`, normally the TSO) while the write
    /// lock is held, and returned.
    ///
    /// This is the sim's stand-in for TiKV's concurrency manager: a 1PC transaction holds no lock
    /// a resolved-ts round could see, so if its commit ts were taken before the write lock, a
    /// round could take a later TSO, find no lock, and publish a resolved ts above a commit that
    /// is applied only afterwards. Allocating under the lock orders the two: either the commit is
    /// applied (and its event queued) before the round reads the store, or its commit ts is
    /// above the round's TSO.
    pub fn one_pc_allocating(
        &self,
        muts: &[Mutation],
        start_ts: u64,
        txn_source: u64,
        alloc_commit_ts: impl FnOnce() -> u64,
    ) -> Result<u64, TxnError> {
        self.one_pc_impl(muts, None, start_ts, txn_source, alloc_commit_ts)
    }

    /// [`one_pc_allocating`](Self::one_pc_allocating) that moves the values out of `muts` into
    /// the write records instead of copying them. On error the values may be gone.
    pub(crate) fn one_pc_moving_values(
        &self,
        muts: &mut [Mutation],
        start_ts: u64,
        alloc_commit_ts: impl FnOnce() -> u64,
    ) -> Result<u64, TxnError> {
        let values = muts
            .iter_mut()
            .map(|m| std::mem::take(&mut m.value))
            .collect();
        self.one_pc_impl(muts, Some(values), start_ts, 0, alloc_commit_ts)
    }

    fn one_pc_impl(
        &self,
        muts: &[Mutation],
        values: Option<Vec<Vec<u8>>>,
        start_ts: u64,
        txn_source: u64,
        alloc_commit_ts: impl FnOnce() -> u64,
    ) -> Result<u64, TxnError> {
        let primary = muts.first().map(|m| m.key.as_slice()).unwrap_or_default();
        let mut guard = self.inner.write();
        let Inner {
            locks,
            writes,
            observer,
            ..
        } = &mut *guard;
        let observer = observer.as_ref();
        let commit_ts = alloc_commit_ts();
        if commit_ts <= start_ts {
            return Err(TxnError::InvalidCommitTs {
                start_ts,
                commit_ts,
            });
        }
        let mut checked = Vec::with_capacity(muts.len());
        // Old values, borrowed from the write map until the events are out. (A write operation's
        // keys are distinct — TiDB's buffer makes them so — so each old value is the one before
        // the operation.)
        let mut olds: Vec<&[u8]> =
            Vec::with_capacity(if observer.is_some() { muts.len() } else { 0 });
        for m in muts {
            let key = Key::new(&m.key);
            if let Some(lock) = locks.get(&key) {
                return Err(TxnError::Locked(lock.info(&m.key)));
            }
            let history = writes.get(&key);
            let action = Inner::check_history_in(history, &m.key, primary, start_ts)?;
            if observer.is_some() {
                olds.push(latest_value_ref(history));
            }
            checked.push((key, action));
        }
        if observer.is_some() {
            let mut events = Vec::with_capacity(muts.len());
            for (i, (m, (_, action))) in muts.iter().zip(&checked).enumerate() {
                if *action == PrewriteAction::AlreadyCommitted {
                    continue;
                }
                let value: &[u8] = match (m.op, &values) {
                    (Op::Delete, _) => &[],
                    (Op::Put, Some(vs)) => vs.get(i).map_or(&[], Vec::as_slice),
                    (Op::Put, None) => &m.value,
                };
                events.push(ApplyEventRef::OnePc {
                    key: &m.key,
                    start_ts,
                    commit_ts,
                    op: m.op,
                    value,
                    old_value: olds.get(i).copied().unwrap_or_default(),
                    txn_source,
                });
            }
            notify(observer, &events);
        }
        drop(olds);
        let mut values = values.map(Vec::into_iter);
        for (m, (key, action)) in muts.iter().zip(checked) {
            let given = values.as_mut().and_then(Iterator::next);
            if action == PrewriteAction::AlreadyCommitted {
                continue;
            }
            let value = match m.op {
                Op::Put => given.unwrap_or_else(|| m.value.clone()),
                Op::Delete => Vec::new(),
            };
            writes
                .get_or_insert_with(key, History::default)
                .insert(Write::data(start_ts, commit_ts, m.op, value, txn_source));
        }
        Ok(commit_ts)
    }

    /// Reads `key` at snapshot `ts`.
    pub fn get(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self
            .get_with(key, ts, &ReadOptions::default())?
            .map(|(_, v)| v))
    }

    /// Reads `key` at `ts` with lock options; returns (commit_ts, value) — commit_ts is 0 when
    /// the value came from an accessed lock.
    pub fn get_with(
        &self,
        key: &[u8],
        ts: u64,
        opts: &ReadOptions<'_>,
    ) -> Result<Option<(u64, Vec<u8>)>, ReadError> {
        let inner = self.inner.read();
        inner.check_safe_point(ts)?;
        inner.read(key, ts, opts).map_err(ReadError::Locked)
    }

    /// Scans [start, end) (raw keys; empty end = unbounded) at `ts`, up to `limit` pairs
    /// (0 = unlimited). The first lock in the way fails the scan.
    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        ts: u64,
        limit: usize,
    ) -> Result<KvPairs, ReadError> {
        self.scan_with(start, end, ts, limit, false, &ReadOptions::default())?
            .into_iter()
            .map(|item| item.map_err(ReadError::Locked))
            .collect()
    }

    /// Scan reporting locks per key, as TiKV's KvScan does (a locked key takes one slot of the
    /// limit and the scan goes on). `reverse` walks [start, end) from the end.
    pub fn scan_with(
        &self,
        start: &[u8],
        end: &[u8],
        ts: u64,
        limit: usize,
        reverse: bool,
        opts: &ReadOptions<'_>,
    ) -> Result<Vec<ScanItem>, ReadError> {
        let inner = self.inner.read();
        inner.check_safe_point(ts)?;
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut out = Vec::new();
        for (key, lock, writes) in inner.merged(start, end, reverse) {
            if out.len() >= limit {
                break;
            }
            match read_entry(lock, writes, ts, opts) {
                Ok(Some((_, v))) => out.push(Ok((key.to_vec(), v))),
                Ok(None) => {}
                Err(l) => out.push(Err(l.info(&key.to_vec()))),
            }
        }
        Ok(out)
    }

    /// Compacts history below `safe_point` (TiKV GC rules) and raises the physical GC safe
    /// point to it (it never moves back).
    pub fn gc(&self, safe_point: u64) {
        let mut inner = self.inner.write();
        if safe_point <= inner.gc_safe_point {
            return;
        }
        inner.gc_safe_point = safe_point;
        let Inner { writes, locks, .. } = &mut *inner;
        writes.retain(|key, ws| {
            ws.gc(safe_point);
            !ws.is_empty() || locks.contains_key(key)
        });
        // Keys that only had locks never entered the write map; nothing else to do.
    }

    /// The physical GC safe point (reads below it fail).
    pub fn gc_safe_point(&self) -> u64 {
        self.inner.read().gc_safe_point
    }

    /// Runs `f` on a consistent view while no write can apply.
    pub fn atomically<R>(&self, f: impl FnOnce(&MvccView<'_>) -> R) -> R {
        let inner = self.inner.read();
        f(&MvccView { inner: &inner })
    }

    /// Runs `f` while holding the write lock, handing it the observer. Region changes use this
    /// to take their place in apply order (`region::RegionManager`). `f` must not call back into
    /// the store.
    pub fn exclusive<R>(&self, f: impl FnOnce(Option<&dyn ApplyObserver>) -> R) -> R {
        let inner = self.inner.write();
        f(inner.observer.as_deref())
    }

    /// The smallest start_ts of the Put/Delete locks in [raw_start, raw_end).
    pub fn min_lock_start_ts(&self, raw_start: &[u8], raw_end: &[u8]) -> Option<u64> {
        self.atomically(|v| v.min_lock_start_ts(raw_start, raw_end))
    }

    /// Up to `max` keys (with history or a lock) in [raw_start, raw_end), in order.
    pub fn keys_in_range(&self, raw_start: &[u8], raw_end: &[u8], max: usize) -> Vec<Vec<u8>> {
        let inner = self.inner.read();
        inner
            .merged(raw_start, raw_end, false)
            .take(max)
            .map(|(k, _, _)| k.to_vec())
            .collect()
    }

    /// Number of keys with committed history.
    pub fn key_count(&self) -> usize {
        self.inner.read().writes.len()
    }

    /// Number of outstanding locks.
    pub fn lock_count(&self) -> usize {
        self.inner.read().locks.len()
    }
}

/// GC of one key's versions: keep everything above the safe point, and at or below it only the
/// newest version if it is a Put.
fn gc_versions(ws: &mut Vec<Write>, safe_point: u64) {
    let below = ws.partition_point(|w| w.commit_ts <= safe_point);
    if below == 0 {
        return;
    }
    let keep = ws
        .get(..below)
        .and_then(|old| old.iter().rposition(|w| w.op().is_some()))
        .filter(|&i| matches!(ws.get(i).map(|w| &w.kind), Some(WriteKind::Put)));
    let mut idx = 0;
    ws.retain(|_| {
        let i = idx;
        idx += 1;
        i >= below || Some(i) == keep
    });
}

/// A consistent, read-only view of the store (see [`MvccStore::atomically`]).
pub struct MvccView<'a> {
    inner: &'a Inner,
}

impl fmt::Debug for MvccView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MvccView").finish_non_exhaustive()
    }
}

impl MvccView<'_> {
    /// The initial-scan rows of [raw_start, raw_end) (empty end = unbounded): every Put/Delete
    /// lock, and every Put/Delete commit with commit_ts > `after_ts`, each with its old value.
    pub fn delta_scan(&self, raw_start: &[u8], raw_end: &[u8], after_ts: u64) -> DeltaScan {
        let mut out = DeltaScan::default();
        for (key, lock, writes) in self.inner.merged(raw_start, raw_end, false) {
            let key = key.to_vec();
            if let Some(l) = lock {
                out.locks.push(ScanLock {
                    key: key.clone(),
                    start_ts: l.start_ts,
                    op: l.op,
                    value: l.value.clone(),
                    old_value: latest_value(writes),
                    generation: l.generation,
                    txn_source: l.txn_source,
                });
            }
            let Some(ws) = writes else { continue };
            let first_new = out.commits.len();
            let mut prev: &[u8] = &[];
            for w in ws.as_slice() {
                let Some(op) = w.op() else { continue };
                if w.commit_ts > after_ts {
                    out.commits.push(ScanCommit {
                        key: key.clone(),
                        start_ts: w.start_ts,
                        commit_ts: w.commit_ts,
                        op,
                        value: w.value().to_vec(),
                        old_value: prev.to_vec(),
                        txn_source: w.txn_source,
                    });
                }
                prev = w.value();
            }
            if let Some(new) = out.commits.get_mut(first_new..) {
                new.reverse();
            }
        }
        out
    }

    /// The smallest start_ts of the Put/Delete locks in [raw_start, raw_end).
    pub fn min_lock_start_ts(&self, raw_start: &[u8], raw_end: &[u8]) -> Option<u64> {
        let bounds = range_bounds(raw_start, raw_end)?;
        self.inner
            .locks
            .range::<Key, _>(bounds)
            .map(|(_, l)| l.start_ts)
            .min()
    }

    /// Reads `key` at `ts` inside the view (no GC safe-point check).
    pub fn get(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>, LockInfo> {
        Ok(self
            .inner
            .read(key, ts, &ReadOptions::default())?
            .map(|(_, v)| v))
    }

    /// The physical GC safe point at the time of the view.
    pub fn gc_safe_point(&self) -> u64 {
        self.inner.gc_safe_point
    }
}

#[cfg(test)]
mod key_order_tests {
    use super::*;
    use proptest::prelude::*;

    fn byte() -> impl Strategy<Value = u8> {
        // A short alphabet makes shared prefixes and zero bytes likely.
        prop_oneof![Just(0u8), Just(1u8), Just(0xFFu8), any::<u8>()]
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(byte(), 0..40)
    }

    /// Two keys sharing a prefix that ends near the inline boundary, with short tails: lengths
    /// 16..=31, so short/short, short/long and long/long pairs with equal heads all occur.
    fn boundary_pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        (
            prop::collection::vec(byte(), 16..28),
            prop::collection::vec(byte(), 0..4),
            prop::collection::vec(byte(), 0..4),
        )
            .prop_map(|(prefix, x, y)| {
                let mut a = prefix.clone();
                a.extend(x);
                let mut b = prefix;
                b.extend(y);
                (a, b)
            })
    }

    fn check(a: &[u8], b: &[u8]) -> Result<(), TestCaseError> {
        let (ka, kb) = (Key::new(a), Key::new(b));
        prop_assert_eq!(ka.cmp(&kb), a.cmp(b), "{:?} vs {:?}", a, b);
        prop_assert_eq!(ka == kb, a == b);
        prop_assert_eq!(ka.to_vec(), a.to_vec());
        prop_assert_eq!(kb.to_vec(), b.to_vec());
        Ok(())
    }

    proptest! {
        #[test]
        fn key_order_is_byte_order(a in bytes(), b in bytes()) {
            check(&a, &b)?;
        }

        #[test]
        fn key_order_is_byte_order_at_the_inline_boundary((a, b) in boundary_pair()) {
            check(&a, &b)?;
        }
    }

    #[test]
    fn key_order_edges() {
        let cases: [&[u8]; 12] = [
            b"",
            b"\0",
            b"ab",
            b"ab\0",
            b"abcdefghijklmnopqrstuv",
            b"abcdefghijklmnopqrstuv\0",
            b"abcdefghijklmnopqrstuvw",
            b"abcdefghijklmnopqrstuvw\0",
            b"abcdefghijklmnopqrstuvw\x18",
            b"abcdefghijklmnopqrstuvwx",
            b"abcdefghijklmnopqrstuvwx\0",
            b"abcdefghijklmnopqrstuvwxy",
        ];
        for a in cases {
            assert_eq!(Key::new(a).to_vec(), a.to_vec());
            for b in cases {
                assert_eq!(Key::new(a).cmp(&Key::new(b)), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(Key::new(a) == Key::new(b), a == b, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn map_entries_stay_small() {
        // The write map holds a Key and a History per key; a single version stays inline.
        assert!(std::mem::size_of::<Key>() <= 40);
        assert!(std::mem::size_of::<Write>() <= 48);
        assert_eq!(std::mem::size_of::<History>(), std::mem::size_of::<Write>());
    }
}

#[cfg(test)]
mod history_tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum HistOp {
        /// A Put/Delete commit record (start_ts = commit_ts - 1).
        Data(u64, bool),
        /// A rollback record of the given start_ts (folded into a record at that ts, as the
        /// store does).
        Rollback(u64),
        Gc(u64),
    }

    fn hist_op() -> impl Strategy<Value = HistOp> {
        prop_oneof![
            4 => (1u64..40, any::<bool>()).prop_map(|(ts, put)| HistOp::Data(ts, put)),
            1 => (1u64..40).prop_map(HistOp::Rollback),
            1 => (0u64..40).prop_map(HistOp::Gc),
        ]
    }

    /// The previous representation: a plain Vec kept in commit_ts order, appending after equal
    /// commit_ts.
    fn reference_insert(ws: &mut Vec<Write>, w: Write) {
        let pos = ws.partition_point(|x| x.commit_ts <= w.commit_ts);
        ws.insert(pos, w);
    }

    fn assert_same_reads(h: &History, reference: &[Write]) -> Result<(), TestCaseError> {
        prop_assert_eq!(h.as_slice(), reference);
        prop_assert_eq!(h.is_empty(), reference.is_empty());
        let old = History::Many(reference.to_vec());
        prop_assert_eq!(latest_value(Some(h)), latest_value(Some(&old)));
        for ts in 0..42 {
            let opts = ReadOptions::default();
            prop_assert_eq!(
                read_entry(None, Some(h), ts, &opts),
                read_entry(None, Some(&old), ts, &opts)
            );
            prop_assert_eq!(
                Inner::check_history_in(Some(h), b"k", b"k", ts).ok(),
                Inner::check_history_in(Some(&old), b"k", b"k", ts).ok()
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn history_matches_a_plain_vec(ops in prop::collection::vec(hist_op(), 1..12)) {
            let mut h = History::default();
            let mut reference: Vec<Write> = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                match *op {
                    HistOp::Data(ts, put) => {
                        let (op, value) = if put {
                            (Op::Put, vec![i as u8; i % 3 + 1])
                        } else {
                            (Op::Delete, Vec::new())
                        };
                        let w = Write::data(ts - 1, ts, op, value, i as u64);
                        h.insert(w.clone());
                        reference_insert(&mut reference, w);
                    }
                    HistOp::Rollback(ts) => {
                        match h.as_mut_slice().iter_mut().rev().find(|w| w.commit_ts == ts) {
                            Some(w) => w.overlapped_rollback = true,
                            None => h.insert(Write::rollback(ts)),
                        }
                        match reference.iter_mut().rev().find(|w| w.commit_ts == ts) {
                            Some(w) => w.overlapped_rollback = true,
                            None => reference_insert(&mut reference, Write::rollback(ts)),
                        }
                    }
                    HistOp::Gc(sp) => {
                        h.gc(sp);
                        gc_versions(&mut reference, sp);
                    }
                }
                assert_same_reads(&h, &reference)?;
            }
        }
    }

    #[test]
    fn one_two_and_many_versions_out_of_order() {
        let put = |c: u64, v: &[u8]| Write::data(c - 1, c, Op::Put, v.to_vec(), 0);
        let mut h = History::default();
        assert!(h.is_empty());
        h.insert(put(20, b"b"));
        assert!(matches!(h, History::One(_)));
        // An older version arriving later goes first.
        h.insert(put(10, b"a"));
        h.insert(put(30, b"c"));
        h.insert(put(15, b"x"));
        let order: Vec<u64> = h.as_slice().iter().map(|w| w.commit_ts).collect();
        assert_eq!(order, vec![10, 15, 20, 30]);
        let read = |ts| {
            read_entry(None, Some(&h), ts, &ReadOptions::default())
                .ok()
                .flatten()
        };
        assert_eq!(read(9), None);
        assert_eq!(read(16), Some((15, b"x".to_vec())));
        assert_eq!(read(29), Some((20, b"b".to_vec())));
        assert_eq!(read(99), Some((30, b"c".to_vec())));
        assert_eq!(latest_value(Some(&h)), b"c".to_vec());
        // GC down to one version goes back inline; a lone non-Put below the point goes away.
        h.gc(30);
        assert!(matches!(&h, History::One(w) if w.commit_ts == 30));
        let mut d = History::default();
        d.insert(Write::data(4, 5, Op::Delete, b"ignored".to_vec(), 0));
        assert_eq!(d.as_slice().first().map(Write::value), Some(&b""[..]));
        d.gc(5);
        assert!(d.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<Vec<ApplyEvent>>>,
    }

    impl ApplyObserver for Recorder {
        fn on_apply(&self, events: &[ApplyEvent]) {
            self.calls.lock().push(events.to_vec());
        }
    }

    fn store_with_recorder() -> (MvccStore, Arc<Recorder>) {
        let s = MvccStore::new();
        let r = Arc::new(Recorder::default());
        s.set_observer(r.clone());
        (s, r)
    }

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn commit_put(s: &MvccStore, key: &str, val: &str, start: u64, commit: u64) {
        s.prewrite(&[Mutation::put(key, val)], key.as_bytes(), start)
            .unwrap();
        s.commit(&[k(key)], start, commit).unwrap();
    }

    #[test]
    fn two_phase_commit_and_events() {
        let (s, rec) = store_with_recorder();
        s.prewrite(&[Mutation::put("a", "1"), Mutation::delete("b")], b"a", 10)
            .unwrap();
        assert_eq!(s.lock_count(), 2);
        s.commit(&[k("a"), k("b")], 10, 11).unwrap();
        assert_eq!(s.lock_count(), 0);
        assert_eq!(s.get(b"a", 11).unwrap(), Some(k("1")));
        assert_eq!(s.get(b"a", 10).unwrap(), None);
        assert_eq!(s.get(b"b", 11).unwrap(), None);
        let calls = rec.calls.lock().clone();
        assert_eq!(
            calls,
            vec![
                vec![
                    ApplyEvent::Prewrite {
                        key: k("a"),
                        start_ts: 10,
                        op: Op::Put,
                        value: k("1"),
                        old_value: vec![],
                        generation: 0,
                        txn_source: 0
                    },
                    ApplyEvent::Prewrite {
                        key: k("b"),
                        start_ts: 10,
                        op: Op::Delete,
                        value: vec![],
                        old_value: vec![],
                        generation: 0,
                        txn_source: 0
                    },
                ],
                vec![
                    ApplyEvent::Commit {
                        key: k("a"),
                        start_ts: 10,
                        commit_ts: 11,
                        op: Op::Put,
                        txn_source: 0
                    },
                    ApplyEvent::Commit {
                        key: k("b"),
                        start_ts: 10,
                        commit_ts: 11,
                        op: Op::Delete,
                        txn_source: 0
                    },
                ],
            ]
        );
        // Idempotent re-commit: Ok, no event.
        s.commit(&[k("a")], 10, 11).unwrap();
        assert_eq!(rec.calls.lock().len(), 2);
    }

    #[test]
    fn failed_commit_leaves_every_lock_in_place() {
        let (s, rec) = store_with_recorder();
        s.prewrite(
            &[Mutation::put("a", "1"), Mutation::put("b", "2")],
            b"a",
            10,
        )
        .unwrap();
        // "a" validates (and is taken out) before "x" fails: it must be back afterwards.
        assert_eq!(
            s.commit(&[k("a"), k("b"), k("x")], 10, 11).unwrap_err(),
            TxnError::TxnNotFound {
                key: k("x"),
                start_ts: 10
            }
        );
        s.prewrite(&[Mutation::put("c", "3")], b"c", 12).unwrap();
        assert!(matches!(
            s.commit(&[k("a"), k("c")], 10, 13),
            Err(TxnError::TxnNotFound { .. })
        ));
        assert_eq!(s.lock_count(), 3);
        assert_eq!(s.key_count(), 0);
        assert_eq!(rec.calls.lock().len(), 2, "no events from failed commits");
        assert!(matches!(s.get(b"a", 20), Err(ReadError::Locked(ref l)) if l.start_ts == 10));
        // A key listed twice commits once.
        s.commit(&[k("b"), k("a"), k("b")], 10, 14).unwrap();
        assert_eq!(s.lock_count(), 1);
        assert_eq!(s.get(b"a", 14).unwrap(), Some(k("1")));
        assert_eq!(s.get(b"b", 14).unwrap(), Some(k("2")));
        let keys: Vec<Vec<u8>> = rec
            .calls
            .lock()
            .last()
            .unwrap()
            .iter()
            .map(|e| match e {
                ApplyEvent::Commit { key, .. } => key.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(keys, vec![k("b"), k("a")]);
        // Re-committing (also with a duplicate) is idempotent; a missing key still fails.
        s.commit(&[k("a"), k("a")], 10, 14).unwrap();
        assert!(matches!(
            s.commit(&[k("a"), k("c"), k("a")], 10, 14),
            Err(TxnError::TxnNotFound { .. })
        ));
        assert_eq!(s.lock_count(), 1);
        assert_eq!(rec.calls.lock().len(), 3, "idempotent commits emit nothing");
    }

    #[test]
    fn long_keys_round_trip_through_scans() {
        let (s, rec) = store_with_recorder();
        let long_a = b"index-key-longer-than-inline-a".to_vec();
        let long_b = b"index-key-longer-than-inline-b".to_vec();
        let short = b"index-key".to_vec();
        s.one_pc(
            &[
                Mutation::put(long_b.clone(), "b"),
                Mutation::put(short.clone(), "s"),
                Mutation::put(long_a.clone(), "a"),
            ],
            10,
            11,
        )
        .unwrap();
        assert_eq!(
            s.scan(b"", b"", 11, 0).unwrap(),
            vec![
                (short.clone(), k("s")),
                (long_a.clone(), k("a")),
                (long_b.clone(), k("b"))
            ]
        );
        assert_eq!(
            s.keys_in_range(b"index-key-", b"", 10),
            vec![long_a.clone(), long_b.clone()]
        );
        s.prewrite(&[Mutation::delete(long_a.clone())], &long_a, 20)
            .unwrap();
        s.commit(std::slice::from_ref(&long_a), 20, 21).unwrap();
        assert_eq!(s.get(&long_a, 21).unwrap(), None);
        assert_eq!(s.get(&long_a, 20).unwrap(), Some(k("a")));
        let calls = rec.calls.lock();
        assert!(matches!(
            calls.last().unwrap().first().unwrap(),
            ApplyEvent::Commit { key, .. } if *key == long_a
        ));
    }

    #[test]
    fn old_values_follow_history() {
        let (s, rec) = store_with_recorder();
        commit_put(&s, "k", "v1", 10, 11);
        commit_put(&s, "k", "v2", 20, 21);
        s.prewrite(&[Mutation::delete("k")], b"k", 30).unwrap();
        s.commit(&[k("k")], 30, 31).unwrap();
        s.one_pc(&[Mutation::put("k", "v3")], 40, 41).unwrap();
        s.one_pc(&[Mutation::put("k", "v4")], 50, 51).unwrap();
        let olds: Vec<(u64, Vec<u8>)> = rec
            .calls
            .lock()
            .iter()
            .flatten()
            .filter_map(|e| match e {
                ApplyEvent::Prewrite {
                    start_ts,
                    old_value,
                    ..
                } => Some((*start_ts, old_value.clone())),
                ApplyEvent::OnePc {
                    start_ts,
                    old_value,
                    ..
                } => Some((*start_ts, old_value.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            olds,
            vec![
                (10, k("")),
                (20, k("v1")),
                (30, k("v2")),
                (40, k("")),
                (50, k("v3"))
            ]
        );
        assert_eq!(s.get(b"k", 35).unwrap(), None);
        assert_eq!(s.get(b"k", 45).unwrap(), Some(k("v3")));
        assert_eq!(s.get(b"k", 25).unwrap(), Some(k("v2")));
    }

    #[test]
    fn write_conflict_and_locked() {
        let s = MvccStore::new();
        commit_put(&s, "k", "v", 10, 20);
        let err = s
            .prewrite(&[Mutation::put("k", "x")], b"k", 15)
            .unwrap_err();
        assert_eq!(
            err,
            TxnError::WriteConflict {
                key: k("k"),
                start_ts: 15,
                conflict_start_ts: 10,
                conflict_commit_ts: 20,
                primary: k("k")
            }
        );
        s.prewrite(&[Mutation::put("k", "y")], b"p", 25).unwrap();
        let err = s
            .prewrite(
                &[Mutation::put("z", "1"), Mutation::put("k", "x")],
                b"z",
                30,
            )
            .unwrap_err();
        match err {
            TxnError::Locked(info) => {
                assert_eq!(
                    (info.key, info.primary, info.start_ts),
                    (k("k"), k("p"), 25)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // All-or-nothing: "z" was not locked.
        assert_eq!(s.lock_count(), 1);
        assert_eq!(s.min_lock_start_ts(b"", b""), Some(25));
    }

    #[test]
    fn new_lock_only_prewrite_emits_no_event() {
        let (s, rec) = store_with_recorder();
        let opts = PrewriteOptions {
            lock_only: true,
            ..Default::default()
        };
        s.prewrite_with(&[Mutation::put("k", "")], b"k", 10, &opts)
            .unwrap();
        assert_eq!(s.lock_count(), 1, "the lock itself is written");
        assert!(
            rec.calls.lock().is_empty(),
            "a new lock without a value must not reach CDC as a PREWRITE"
        );
    }

    #[test]
    fn one_pc_allocates_commit_ts_under_the_write_lock() {
        let s = MvccStore::new();
        let store = s.clone();
        let ts = s
            .one_pc_allocating(&[Mutation::put("k", "v")], 5, 0, || {
                // While the allocator runs, no reader can take the lock: a resolved-ts round
                // would block here rather than see a store without this commit.
                assert!(store.inner.try_read().is_none());
                9
            })
            .unwrap();
        assert_eq!(ts, 9);
        assert_eq!(s.get(b"k", 9).unwrap(), Some(k("v")));
        assert!(matches!(
            s.one_pc_allocating(&[Mutation::put("j", "v")], 20, 0, || 20),
            Err(TxnError::InvalidCommitTs { .. })
        ));
    }

    #[test]
    fn lock_rewrite_emits_fake_prewrite_and_keeps_value() {
        let (s, rec) = store_with_recorder();
        s.prewrite(&[Mutation::put("k", "v")], b"k", 10).unwrap();
        let opts = PrewriteOptions {
            lock_only: true,
            generation: 2,
            ..Default::default()
        };
        s.prewrite_with(&[Mutation::put("k", "")], b"k", 10, &opts)
            .unwrap();
        s.commit(&[k("k")], 10, 11).unwrap();
        assert_eq!(s.get(b"k", 11).unwrap(), Some(k("v")));
        let calls = rec.calls.lock();
        assert_eq!(
            calls.get(1).unwrap(),
            &vec![ApplyEvent::Prewrite {
                key: k("k"),
                start_ts: 10,
                op: Op::Put,
                value: vec![],
                old_value: vec![],
                generation: 2,
                txn_source: 0
            }]
        );
    }

    #[test]
    fn commit_errors() {
        let s = MvccStore::new();
        assert_eq!(
            s.commit(&[k("k")], 10, 11).unwrap_err(),
            TxnError::TxnNotFound {
                key: k("k"),
                start_ts: 10
            }
        );
        s.prewrite(&[Mutation::put("k", "v")], b"k", 10).unwrap();
        assert_eq!(
            s.commit(&[k("k")], 10, 10).unwrap_err(),
            TxnError::InvalidCommitTs {
                start_ts: 10,
                commit_ts: 10
            }
        );
        s.rollback(&[k("k")], 10).unwrap();
        assert_eq!(
            s.commit(&[k("k")], 10, 11).unwrap_err(),
            TxnError::RolledBack {
                key: k("k"),
                start_ts: 10
            }
        );
        commit_put(&s, "c", "v", 20, 21);
        assert_eq!(
            s.rollback(&[k("c")], 20).unwrap_err(),
            TxnError::Committed {
                key: k("c"),
                start_ts: 20,
                commit_ts: 21
            }
        );
    }

    #[test]
    fn rollback_removes_lock_and_blocks_late_prewrite() {
        let (s, rec) = store_with_recorder();
        s.prewrite(&[Mutation::put("k", "v")], b"k", 10).unwrap();
        s.rollback(&[k("k"), k("never")], 10).unwrap();
        assert_eq!(s.lock_count(), 0);
        assert_eq!(s.get(b"k", 100).unwrap(), None);
        // A late prewrite of the rolled back txn (on either key) conflicts.
        assert!(matches!(
            s.prewrite(&[Mutation::put("never", "v")], b"k", 10),
            Err(TxnError::WriteConflict { .. })
        ));
        // A repeated rollback is a no-op without events.
        s.rollback(&[k("k")], 10).unwrap();
        let calls = rec.calls.lock();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls.get(1).unwrap(),
            &vec![
                ApplyEvent::Rollback {
                    key: k("k"),
                    start_ts: 10
                },
                ApplyEvent::Rollback {
                    key: k("never"),
                    start_ts: 10
                }
            ]
        );
    }

    #[test]
    fn one_pc_writes_directly_and_checks_locks() {
        let (s, rec) = store_with_recorder();
        s.one_pc(&[Mutation::put("a", "1"), Mutation::put("b", "2")], 10, 11)
            .unwrap();
        assert_eq!(s.lock_count(), 0);
        assert_eq!(
            s.scan(b"", b"", 11, 0).unwrap(),
            vec![(k("a"), k("1")), (k("b"), k("2"))]
        );
        s.prewrite(&[Mutation::put("b", "3")], b"b", 20).unwrap();
        assert!(matches!(
            s.one_pc(&[Mutation::put("b", "4")], 21, 22),
            Err(TxnError::Locked(_))
        ));
        assert!(matches!(
            s.one_pc(&[Mutation::put("a", "4")], 5, 22),
            Err(TxnError::WriteConflict { .. })
        ));
        let calls = rec.calls.lock();
        assert_eq!(
            calls.first().unwrap().first().unwrap(),
            &ApplyEvent::OnePc {
                key: k("a"),
                start_ts: 10,
                commit_ts: 11,
                op: Op::Put,
                value: k("1"),
                old_value: vec![],
                txn_source: 0
            }
        );
    }

    #[test]
    fn reads_see_locks_and_options() {
        let s = MvccStore::new();
        commit_put(&s, "k", "v1", 10, 11);
        s.prewrite(&[Mutation::put("k", "v2")], b"k", 20).unwrap();
        // A lock newer than the read ts is not in the way.
        assert_eq!(s.get(b"k", 19).unwrap(), Some(k("v1")));
        let err = s.get(b"k", 25).unwrap_err();
        assert!(matches!(err, ReadError::Locked(ref l) if l.start_ts == 20 && l.key == k("k")));
        let bypass = ReadOptions {
            bypass_locks: &[20],
            access_locks: &[],
        };
        assert_eq!(s.get_with(b"k", 25, &bypass).unwrap(), Some((11, k("v1"))));
        let access = ReadOptions {
            bypass_locks: &[],
            access_locks: &[20],
        };
        assert_eq!(s.get_with(b"k", 25, &access).unwrap(), Some((0, k("v2"))));
        // Scans report the lock per key and continue.
        commit_put(&s, "m", "x", 12, 13);
        let items = s
            .scan_with(b"", b"", 25, 0, false, &ReadOptions::default())
            .unwrap();
        assert_eq!(items.len(), 2);
        assert!(items.first().unwrap().is_err());
        assert_eq!(items.get(1).unwrap(), &Ok((k("m"), k("x"))));
        assert!(matches!(s.scan(b"", b"", 25, 0), Err(ReadError::Locked(_))));
    }

    #[test]
    fn scan_bounds_limit_and_reverse() {
        let s = MvccStore::new();
        for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
            let ts = 10 + 2 * i as u64;
            commit_put(&s, key, key, ts, ts + 1);
        }
        let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(s.scan(b"b", b"d", 100, 0).unwrap()),
            vec![k("b"), k("c")]
        );
        assert_eq!(
            keys(s.scan(b"a", b"", 100, 3).unwrap()),
            vec![k("a"), k("b"), k("c")]
        );
        assert_eq!(
            keys(s.scan(b"c", b"a", 100, 0).unwrap()),
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(keys(s.scan(b"", b"", 12, 0).unwrap()), vec![k("a")]);
        let rev = s
            .scan_with(b"a", b"d", 100, 2, true, &ReadOptions::default())
            .unwrap();
        let rev: Vec<Vec<u8>> = rev.into_iter().map(|r| r.unwrap().0).collect();
        assert_eq!(rev, vec![k("c"), k("b")]);
    }

    #[test]
    fn gc_compacts_and_fences_reads() {
        let s = MvccStore::new();
        commit_put(&s, "k", "v1", 10, 11);
        commit_put(&s, "k", "v2", 20, 21);
        commit_put(&s, "k", "v3", 30, 31);
        commit_put(&s, "d", "x", 12, 13);
        s.prewrite(&[Mutation::delete("d")], b"d", 14).unwrap();
        s.commit(&[k("d")], 14, 15).unwrap();
        s.prewrite(&[Mutation::put("r", "x")], b"r", 16).unwrap();
        s.rollback(&[k("r")], 16).unwrap();
        s.gc(25);
        assert_eq!(s.gc_safe_point(), 25);
        assert_eq!(
            s.get(b"k", 10),
            Err(ReadError::GcSafePoint {
                ts: 10,
                safe_point: 25
            })
        );
        assert_eq!(s.get(b"k", 25).unwrap(), Some(k("v2")));
        assert_eq!(s.get(b"k", 40).unwrap(), Some(k("v3")));
        // "d" (deleted) and "r" (rolled back) are gone entirely.
        assert_eq!(s.key_count(), 1);
        let scan = s.atomically(|v| v.delta_scan(b"", b"", 0));
        let versions: Vec<u64> = scan.commits.iter().map(|c| c.commit_ts).collect();
        assert_eq!(versions, vec![31, 21]);
        // The safe point never moves back.
        s.gc(5);
        assert_eq!(s.gc_safe_point(), 25);
    }

    #[test]
    fn delta_scan_rows_and_old_values() {
        let s = MvccStore::new();
        commit_put(&s, "a", "1", 10, 11);
        commit_put(&s, "a", "2", 20, 21);
        s.prewrite(&[Mutation::delete("a")], b"a", 22).unwrap();
        s.commit(&[k("a")], 22, 23).unwrap();
        s.prewrite(&[Mutation::put("a", "3")], b"a", 30).unwrap();
        commit_put(&s, "b", "x", 5, 6);
        s.prewrite(&[Mutation::put("c", "y")], b"c", 40).unwrap();
        let scan = s.atomically(|v| {
            assert_eq!(v.min_lock_start_ts(b"", b""), Some(30));
            assert_eq!(v.min_lock_start_ts(b"b", b""), Some(40));
            assert_eq!(v.min_lock_start_ts(b"b", b"c"), None);
            v.delta_scan(b"", b"c", 11)
        });
        assert_eq!(
            scan.locks,
            vec![ScanLock {
                key: k("a"),
                start_ts: 30,
                op: Op::Put,
                value: k("3"),
                old_value: vec![],
                generation: 0,
                txn_source: 0
            }]
        );
        assert_eq!(
            scan.commits,
            vec![
                ScanCommit {
                    key: k("a"),
                    start_ts: 22,
                    commit_ts: 23,
                    op: Op::Delete,
                    value: vec![],
                    old_value: k("2"),
                    txn_source: 0
                },
                ScanCommit {
                    key: k("a"),
                    start_ts: 20,
                    commit_ts: 21,
                    op: Op::Put,
                    value: k("2"),
                    old_value: k("1"),
                    txn_source: 0
                },
            ]
        );
    }

    #[test]
    fn already_committed_prewrite_is_noop() {
        let (s, rec) = store_with_recorder();
        commit_put(&s, "k", "v", 10, 11);
        s.prewrite(&[Mutation::put("k", "v")], b"k", 10).unwrap();
        assert_eq!(s.lock_count(), 0);
        assert_eq!(rec.calls.lock().len(), 2);
    }

    #[test]
    fn txn_source_and_generation_travel() {
        let (s, rec) = store_with_recorder();
        let opts = PrewriteOptions {
            txn_source: 1 << 16,
            generation: 3,
            ..Default::default()
        };
        s.prewrite_with(&[Mutation::put("k", "v")], b"k", 10, &opts)
            .unwrap();
        s.commit(&[k("k")], 10, 11).unwrap();
        let scan = s.atomically(|v| v.delta_scan(b"", b"", 0));
        assert_eq!(scan.commits.first().unwrap().txn_source, 1 << 16);
        let calls = rec.calls.lock();
        assert!(matches!(
            calls.get(1).unwrap().first().unwrap(),
            ApplyEvent::Commit {
                txn_source: 65536,
                ..
            }
        ));
    }
}
