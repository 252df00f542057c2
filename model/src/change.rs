//! Row changes, before and after decoding.
//!
//! The change-feed client turns TiKV's prewrite/commit events into [`RawKvChange`]s: one
//! committed row, still as TiKV's bytes. The decoder ([`crate::decode::decode_change`]) turns one
//! into a [`RowChange`] with the table schema in effect at its commit ts. Both derive serde
//! because they cross timely exchanges between workers.

use serde::{Deserialize, Serialize};

use crate::Datum;
use crate::tablecodec::Handle;
use crate::ts::Ts;

/// What a committed row write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RowChangeKind {
    /// A new row (PUT without an old value).
    Insert,
    /// A row replaced in place (PUT with an old value). A change of the handle is not an update:
    /// TiDB writes it as a delete of the old key and an insert of the new one.
    Update,
    /// A removed row (DELETE).
    Delete,
}

/// The write operation TiKV reports for a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RawOp {
    /// The key was written (`OpType::PUT`).
    Put,
    /// The key was deleted (`OpType::DELETE`).
    Delete,
}

/// What the change-feed client emits: one committed TiKV row, not yet decoded.
///
/// `key` is the raw (not memcomparable-encoded) key as TiKV sends it in `Event.Row.key`, with any
/// keyspace prefix already removed. `value` is the new row (empty for a delete); `old_value` the
/// row before the write (empty when there was none, or when old values are off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawKvChange {
    /// PUT or DELETE.
    pub op: RawOp,
    /// Raw row key (`t{table}_r{handle}`).
    pub key: Vec<u8>,
    /// Row value after the write; empty for a delete.
    pub value: Vec<u8>,
    /// Row value before the write; empty if none.
    pub old_value: Vec<u8>,
    /// Start ts of the writing transaction.
    pub start_ts: Ts,
    /// Commit ts of the writing transaction.
    pub commit_ts: Ts,
    /// Region the row came from.
    pub region_id: u64,
}

impl RawKvChange {
    /// Insert, update or delete, by TiKV's rules: PUT with an empty old value is an insert, PUT
    /// with an old value an update, DELETE a delete.
    ///
    /// Without old values (the changefeed does not request them) every PUT looks like an insert;
    /// sinks that write with upsert semantics are unaffected.
    pub fn kind(&self) -> RowChangeKind {
        match self.op {
            RawOp::Delete => RowChangeKind::Delete,
            RawOp::Put if self.old_value.is_empty() => RowChangeKind::Insert,
            RawOp::Put => RowChangeKind::Update,
        }
    }

    /// Bytes the change holds in memory, for memory quotas and batch sizing: its buffers plus the
    /// fixed part of the struct.
    pub fn approximate_size(&self) -> usize {
        std::mem::size_of::<Self>()
            .saturating_add(self.key.len())
            .saturating_add(self.value.len())
            .saturating_add(self.old_value.len())
    }
}

/// A decoded row change of one table.
///
/// `old` and `new` hold one [`Datum`] per column of
/// [`TableInfo::public_columns`](crate::schema::TableInfo::public_columns) **of the schema
/// version the row was decoded with** (the one in effect at `commit_ts`), in that order. A
/// consumer that needs column names or types must use that same schema version: after an `ADD
/// COLUMN` or `DROP COLUMN` the positions shift.
///
/// `new` is `None` for a delete; `old` is `None` for an insert, and for an update when old values
/// are not available.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowChange {
    /// Physical table id from the key: the partition id for a partitioned table.
    pub table_id: i64,
    /// Start ts of the writing transaction.
    pub start_ts: Ts,
    /// Commit ts of the writing transaction.
    pub commit_ts: Ts,
    /// Insert, update or delete.
    pub kind: RowChangeKind,
    /// The row's handle, from the key.
    pub handle: Handle,
    /// The row before the change.
    pub old: Option<Vec<Datum>>,
    /// The row after the change.
    pub new: Option<Vec<Datum>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(op: RawOp, value: &[u8], old: &[u8]) -> RawKvChange {
        RawKvChange {
            op,
            key: b"t_key".to_vec(),
            value: value.to_vec(),
            old_value: old.to_vec(),
            start_ts: Ts(1),
            commit_ts: Ts(2),
            region_id: 3,
        }
    }

    #[test]
    fn kind_follows_op_and_old_value() {
        assert_eq!(raw(RawOp::Put, b"v", b"").kind(), RowChangeKind::Insert);
        assert_eq!(raw(RawOp::Put, b"v", b"o").kind(), RowChangeKind::Update);
        assert_eq!(raw(RawOp::Delete, b"", b"o").kind(), RowChangeKind::Delete);
        assert_eq!(raw(RawOp::Delete, b"", b"").kind(), RowChangeKind::Delete);
    }

    #[test]
    fn approximate_size_counts_buffers() {
        let c = raw(RawOp::Put, b"1234", b"12");
        assert_eq!(
            c.approximate_size(),
            std::mem::size_of::<RawKvChange>() + 5 + 4 + 2
        );
    }
}
