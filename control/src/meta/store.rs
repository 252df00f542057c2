//! The [`MetaStore`] trait: the etcd v3 data model reduced to what the control plane needs.
//!
//! The model is etcd's on purpose: a single, monotonically increasing store *revision*; every key
//! remembers the revision that created it (`create_revision`), last modified it
//! (`mod_revision`) and how many times it was written since creation (`version`). Transactions
//! compare those numbers (or the value) and then apply one of two op lists atomically — this is
//! what lets the epoch code fence a stale owner out with one round trip. Both back ends must
//! behave identically down to the revision numbers, so the semantics are spelled out here:
//!
//! * A fresh store is at revision 1. Every write that changes at least one key advances the
//!   revision by exactly one; all changes of one transaction share that revision. A delete that
//!   removes nothing, a read-only or failed-without-writes transaction does not advance it.
//! * A key that does not exist compares as `create_revision == mod_revision == version == 0`; a
//!   *value* comparison against a missing key is always false (whatever the operator).
//! * Prefix reads are sorted by key (bytewise ascending).
//! * A watch from revision `r` first replays every retained event with revision `>= r`, then
//!   streams live ones, in revision order. `r == 0` means "from the next write".
//! * Keys attached to a lease are deleted (one revision, delete events) when the lease expires
//!   or is revoked.

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

/// A store revision (etcd's `int64` revision; never negative in practice).
pub type Revision = i64;

/// A lease id, as granted by the store.
pub type LeaseId = i64;

/// Errors from the metadata layer.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The store cannot be reached (or did not answer in time).
    #[error("metadata store at {endpoint} is unavailable: {reason}")]
    Unavailable {
        /// Which store (an etcd endpoint or the embedded data dir).
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// A compare-and-swap kept losing against concurrent writers.
    #[error("metadata write conflict on {what}: {detail}")]
    Conflict {
        /// What was being written.
        what: String,
        /// Details (how many tries, ...).
        detail: String,
    },
    /// Stored data could not be decoded or is inconsistent.
    #[error("corrupt metadata at {key}: {reason}")]
    Corrupt {
        /// The key or file that holds the bad data.
        key: String,
        /// Why it is considered corrupt.
        reason: String,
    },
    /// Local I/O failed (embedded store).
    #[error("metadata I/O error ({context}): {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A key that must exist does not.
    #[error("metadata key not found: {key}")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// A key that must not exist already does.
    #[error("metadata key already exists: {key}")]
    AlreadyExists {
        /// The existing key.
        key: String,
    },
    /// The lease does not exist (never granted, expired or revoked).
    #[error("lease {id:x} not found")]
    LeaseNotFound {
        /// The lease id.
        id: LeaseId,
    },
    /// A watch asked for history the store no longer keeps.
    #[error("revision {requested} has been compacted (oldest available is {compacted}+1)")]
    Compacted {
        /// The requested start revision.
        requested: Revision,
        /// The compaction revision.
        compacted: Revision,
    },
    /// The request itself is malformed (bad id, duplicate key in a transaction, ...).
    #[error("invalid metadata request: {0}")]
    InvalidArgument(String),
    /// An epoch cannot be advanced any further.
    #[error("changefeed epoch overflow: current epoch {current} is the maximum")]
    EpochOverflow {
        /// The current (maximal) epoch.
        current: u64,
    },
    /// The requested state transition is not allowed in the current state.
    #[error("changefeed {changefeed}: {detail}")]
    InvalidState {
        /// The changefeed.
        changefeed: String,
        /// Why the transition is refused.
        detail: String,
    },
    /// Any other error reported by the back end.
    #[error("metadata store error: {0}")]
    Backend(String),
}

impl MetaError {
    /// Shorthand for [`MetaError::Corrupt`].
    pub fn corrupt(key: impl Into<String>, reason: impl Into<String>) -> Self {
        MetaError::Corrupt {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`MetaError::Io`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        MetaError::Io {
            context: context.into(),
            source,
        }
    }
}

/// One stored key with its revision bookkeeping.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the write that created the key (0 for a deleted key in a delete event).
    pub create_revision: Revision,
    /// Revision of the last write (for a delete event: the deletion revision).
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after the first put; 0 in a delete event).
    pub version: i64,
    /// Attached lease, 0 if none.
    pub lease: LeaseId,
}

impl KeyValue {
    /// The key as text (lossy for non-UTF-8 keys).
    pub fn key_str(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("value", &String::from_utf8_lossy(&self.value))
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .finish()
    }
}

/// Comparison operator of a [`Compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// stored `>` given
    Greater,
    /// stored `<` given
    Less,
}

/// What a [`Compare`] looks at, with the operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value (bytewise ordering).
    Value(Vec<u8>),
    /// The key's last modification revision.
    ModRevision(Revision),
    /// The key's creation revision (0 = absent).
    CreateRevision(Revision),
    /// The key's version (0 = absent).
    Version(i64),
}

/// One guard of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: Vec<u8>,
    /// The operator (stored value on the left).
    pub op: CompareOp,
    /// The target and operand.
    pub target: CompareTarget,
}

impl Compare {
    /// Compare the value.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Value(value.into()),
        }
    }
    /// Compare the modification revision.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, rev: Revision) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::ModRevision(rev),
        }
    }
    /// Compare the creation revision.
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, rev: Revision) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::CreateRevision(rev),
        }
    }
    /// Compare the version.
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Version(version),
        }
    }
    /// "The key does not exist" (`create_revision == 0`).
    pub fn absent(key: impl Into<Vec<u8>>) -> Self {
        Self::create_revision(key, CompareOp::Equal, 0)
    }

    /// Evaluates this guard against the current state of its key (`None` = absent), with etcd's
    /// rules: an absent key has all revisions 0, and a value comparison on it is false.
    pub fn evaluate(&self, current: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let ord: Ordering = match (&self.target, current) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(kv)) => kv.value.as_slice().cmp(v.as_slice()),
            (CompareTarget::ModRevision(r), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
            (CompareTarget::CreateRevision(r), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
            (CompareTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
        };
        match self.op {
            CompareOp::Equal => ord == Ordering::Equal,
            CompareOp::NotEqual => ord != Ordering::Equal,
            CompareOp::Greater => ord == Ordering::Greater,
            CompareOp::Less => ord == Ordering::Less,
        }
    }
}

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write a key (optionally attached to a lease).
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// The lease to attach, if any.
        lease: Option<LeaseId>,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Read one key (sees earlier writes of the same transaction).
    Get {
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    /// A put without lease.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }
    /// A put attached to `lease`.
    pub fn put_with_lease(
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }
    /// A delete.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Op::Delete { key: key.into() }
    }
    /// A read.
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        Op::Get { key: key.into() }
    }
}

/// The result of one [`Op`], in op order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResponse {
    /// A put was applied.
    Put,
    /// A delete was applied; how many keys it removed (0 or 1).
    Delete {
        /// Number of keys removed.
        deleted: u64,
    },
    /// A read; the key if present.
    Get(Option<KeyValue>),
}

/// A compare-and-swap transaction: if every compare holds, apply `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Guards (all must hold).
    pub compares: Vec<Compare>,
    /// Ops applied when all guards hold.
    pub success: Vec<Op>,
    /// Ops applied otherwise.
    pub failure: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds guards.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }
    /// Adds success ops.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.success.extend(ops);
        self
    }
    /// Adds failure ops.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// The outcome of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the guards held (so `success` ran).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
    /// One response per executed op.
    pub responses: Vec<OpResponse>,
}

/// Kind of a [`WatchEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was written.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// For a put, the new key-value; for a delete, the key with `mod_revision` = the deletion
    /// revision and everything else zero/empty (as etcd reports it).
    pub kv: KeyValue,
}

/// A stream of watch events; errors end the stream.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, MetaError>> + Send>>;

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: LeaseId,
    /// The TTL the store granted, in seconds (may be larger than requested).
    pub ttl: i64,
}

/// A revisioned key-value store with compare-and-swap transactions, watches and leases.
///
/// See the module documentation for the exact semantics both implementations share.
#[async_trait]
pub trait MetaStore: Send + Sync + fmt::Debug {
    /// Reads one key.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, MetaError>;
    /// Reads every key starting with `prefix`, sorted by key.
    async fn get_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, MetaError>;
    /// Writes a key, optionally attached to a lease; returns the new store revision.
    async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Revision, MetaError>;
    /// Deletes a key; returns whether it existed.
    async fn delete(&self, key: &[u8]) -> Result<bool, MetaError>;
    /// Deletes every key starting with `prefix` (one revision); returns how many were removed.
    async fn delete_prefix(&self, prefix: &[u8]) -> Result<u64, MetaError>;
    /// Runs a compare-and-swap transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResult, MetaError>;
    /// The current store revision.
    async fn current_revision(&self) -> Result<Revision, MetaError>;
    /// Watches every key starting with `prefix`, from `from_revision` (0 = from the next write).
    async fn watch_prefix(
        &self,
        prefix: &[u8],
        from_revision: Revision,
    ) -> Result<WatchStream, MetaError>;
    /// Grants a lease of about `ttl_secs` seconds.
    async fn lease_grant(&self, ttl_secs: i64) -> Result<Lease, MetaError>;
    /// Refreshes a lease once; returns its new TTL. [`MetaError::LeaseNotFound`] if it expired.
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64, MetaError>;
    /// Revokes a lease, deleting its keys.
    async fn lease_revoke(&self, id: LeaseId) -> Result<(), MetaError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: &[u8], create: i64, m: i64, version: i64) -> KeyValue {
        KeyValue {
            key: b"k".to_vec(),
            value: value.to_vec(),
            create_revision: create,
            mod_revision: m,
            version,
            lease: 0,
        }
    }

    #[test]
    fn compare_rules_for_absent_key() {
        assert!(Compare::absent("k").evaluate(None));
        assert!(!Compare::absent("k").evaluate(Some(&kv(b"v", 3, 3, 1))));
        // value comparisons against a missing key are always false
        assert!(!Compare::value("k", CompareOp::NotEqual, "x").evaluate(None));
        assert!(!Compare::value("k", CompareOp::Equal, "").evaluate(None));
        assert!(Compare::version("k", CompareOp::Less, 1).evaluate(None));
    }

    #[test]
    fn compare_ops() {
        let cur = kv(b"m", 2, 5, 3);
        assert!(Compare::value("k", CompareOp::Greater, "a").evaluate(Some(&cur)));
        assert!(Compare::value("k", CompareOp::Less, "z").evaluate(Some(&cur)));
        assert!(Compare::mod_revision("k", CompareOp::Equal, 5).evaluate(Some(&cur)));
        assert!(!Compare::mod_revision("k", CompareOp::Equal, 4).evaluate(Some(&cur)));
        assert!(Compare::create_revision("k", CompareOp::Less, 3).evaluate(Some(&cur)));
        assert!(Compare::version("k", CompareOp::NotEqual, 2).evaluate(Some(&cur)));
    }
}
