//! Per-span ordering and decoding: from unsorted raw rows to whole, decoded transactions.
//!
//! The feed delivers a span's rows in arrival order (regions interleaved, not sorted) and
//! promises only that every row with `commit_ts <= R` arrives before `Resolved(R)`. A
//! [`SpanBuffer`] therefore keeps the rows grouped by `(commit_ts, start_ts)` — one group per
//! upstream transaction — and [`SpanBuffer::release`] hands out every group at or below a bound
//! in that order once the bound is safe. Each span has its own buffer and its own bound, so a
//! span whose resolved ts is stuck holds back only its own rows.
//!
//! [`TxnDecoder`] turns a released group into a [`TxnItem`]: it looks up the table version in
//! effect at the commit ts, decodes every row with it, and shares one [`TableDef`] per table
//! version. Errors are values (a malformed row stops the changefeed with a clear error; it never
//! panics a worker).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tidal_ingest::schema::{SchemaStore, TableFilter};
use tidal_model::change::RawOp;
use tidal_model::decode::decode_change;
use tidal_model::{RawKvChange, Ts};
use tidal_sinks::{SinkTxn, TableDef};

use crate::messages::TxnItem;
use crate::spec::ChangefeedError;

/// One upstream transaction's raw rows in one span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTxn {
    /// Commit ts.
    pub commit_ts: Ts,
    /// Start ts.
    pub start_ts: Ts,
    /// Its rows, in arrival order.
    pub rows: Vec<RawKvChange>,
}

/// Rows of one span waiting for the span's resolved ts, grouped by transaction.
#[derive(Debug, Default)]
pub struct SpanBuffer {
    groups: BTreeMap<(Ts, Ts), Vec<RawKvChange>>,
    bytes: usize,
    rows: usize,
}

impl SpanBuffer {
    /// An empty buffer.
    pub fn new() -> SpanBuffer {
        SpanBuffer::default()
    }

    /// Adds a row.
    pub fn push(&mut self, row: RawKvChange) {
        self.bytes = self.bytes.saturating_add(row.approximate_size());
        self.rows = self.rows.saturating_add(1);
        self.groups
            .entry((row.commit_ts, row.start_ts))
            .or_default()
            .push(row);
    }

    /// Removes and returns every transaction committed at or below `upto`, in
    /// `(commit_ts, start_ts)` order.
    pub fn release(&mut self, upto: Ts) -> Vec<RawTxn> {
        let rest = match upto.0.checked_add(1) {
            Some(next) => self.groups.split_off(&(Ts(next), Ts::ZERO)),
            None => BTreeMap::new(),
        };
        let done = std::mem::replace(&mut self.groups, rest);
        let mut out = Vec::with_capacity(done.len());
        for ((commit_ts, start_ts), rows) in done {
            for r in &rows {
                self.bytes = self.bytes.saturating_sub(r.approximate_size());
            }
            self.rows = self.rows.saturating_sub(rows.len());
            out.push(RawTxn {
                commit_ts,
                start_ts,
                rows,
            });
        }
        out
    }

    /// Drops everything (the span is gone).
    pub fn clear(&mut self) {
        self.groups.clear();
        self.bytes = 0;
        self.rows = 0;
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The smallest commit ts held.
    pub fn min_commit_ts(&self) -> Option<Ts> {
        self.groups.keys().next().map(|k| k.0)
    }
}

/// Decodes released transactions with the schema in effect at their commit ts.
#[derive(Debug)]
pub struct TxnDecoder {
    store: SchemaStore,
    filter: TableFilter,
    safe_mode_until: Ts,
    defs: HashMap<(i64, Ts), (Arc<TableDef>, i64, bool)>,
}

impl TxnDecoder {
    /// A decoder over `store`, keeping the tables `filter` selects; rows committed at or below
    /// `safe_mode_until` are marked for safe-mode writes.
    pub fn new(store: SchemaStore, filter: TableFilter, safe_mode_until: Ts) -> TxnDecoder {
        TxnDecoder {
            store,
            filter,
            safe_mode_until,
            defs: HashMap::new(),
        }
    }

    /// Decodes `txn` of span `span_id` (physical table `physical_id`). `Ok(None)` if the table
    /// is not replicated at the commit ts (filtered out, e.g. after a rename). `force_safe`
    /// marks the transaction for safe mode regardless of its commit ts (replays).
    pub fn decode(
        &mut self,
        span_id: u128,
        physical_id: i64,
        mut txn: RawTxn,
        force_safe: bool,
    ) -> Result<Option<TxnItem>, ChangefeedError> {
        let commit_ts = txn.commit_ts;
        let err = |detail: String| ChangefeedError::Decode {
            table_id: physical_id,
            commit_ts: commit_ts.0,
            detail,
        };
        let version = self.store.table_at(physical_id, commit_ts).ok_or_else(|| {
            err(format!(
                "no table owns physical id {physical_id} at this ts"
            ))
        })?;
        let key = (version.info.id, version.version_ts);
        let (def, db_id, keep) = match self.defs.get(&key) {
            Some(v) => v.clone(),
            None => {
                let keep = self
                    .filter
                    .matches(&version.db.db_name.O, &version.info.name.O);
                let def = Arc::new(TableDef {
                    schema_name: version.db.db_name.O.clone(),
                    table_name: version.info.name.O.clone(),
                    info: Arc::clone(&version.info),
                    version: version.version_ts.0,
                });
                let v = (def, version.db.id, keep);
                self.defs.insert(key, v.clone());
                v
            }
        };
        if !keep {
            return Ok(None);
        }
        // Upstream key order within the transaction.
        txn.rows.sort_by(|a, b| a.key.cmp(&b.key));
        let mut bytes = 0usize;
        let mut rows = Vec::with_capacity(txn.rows.len());
        for raw in &txn.rows {
            if deletes_nothing(raw) {
                // A DELETE of a key that held no row: TiKV reports it with no old value, and
                // there is nothing to delete downstream (TiCDC's mounter drops these too).
                tracing::debug!(
                    commit_ts = commit_ts.0,
                    "skipping a delete of a missing row"
                );
                continue;
            }
            bytes = bytes.saturating_add(raw.approximate_size());
            let row = decode_change(&def.info, raw).map_err(|e| err(e.to_string()))?;
            rows.push(row);
        }
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(TxnItem {
            span_id,
            physical_id,
            db_id,
            txn: SinkTxn {
                table: def,
                start_ts: txn.start_ts,
                commit_ts,
                rows,
                safe_mode: force_safe || commit_ts <= self.safe_mode_until,
            },
            bytes,
        }))
    }

    /// Forgets cached table definitions older than `ts` (call after DDL).
    pub fn forget_before(&mut self, ts: Ts) {
        self.defs.retain(|(_, v), _| *v >= ts);
    }
}

/// True for a DELETE that removed no row: no old value to describe it.
fn deletes_nothing(raw: &RawKvChange) -> bool {
    raw.op == RawOp::Delete && raw.old_value.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(key: u8, start: u64, commit: u64) -> RawKvChange {
        RawKvChange {
            op: RawOp::Put,
            key: vec![b't', key],
            value: vec![1, 2, 3],
            old_value: Vec::new(),
            start_ts: Ts(start),
            commit_ts: Ts(commit),
            region_id: 1,
        }
    }

    #[test]
    fn a_delete_without_old_value_deletes_nothing() {
        let mut del = row(1, 5, 6);
        del.op = RawOp::Delete;
        del.value.clear();
        assert!(deletes_nothing(&del));
        del.old_value = vec![1];
        assert!(!deletes_nothing(&del));
        assert!(!deletes_nothing(&row(1, 5, 6)));
    }

    #[test]
    fn releases_whole_transactions_in_commit_then_start_order() {
        let mut b = SpanBuffer::new();
        b.push(row(1, 5, 20));
        b.push(row(2, 3, 10));
        b.push(row(3, 4, 20));
        b.push(row(4, 2, 20));
        b.push(row(5, 1, 30));
        assert_eq!(b.rows(), 5);
        let out = b.release(Ts(20));
        let keys: Vec<(u64, u64, Vec<u8>)> = out
            .iter()
            .map(|t| {
                (
                    t.commit_ts.0,
                    t.start_ts.0,
                    t.rows.iter().map(|r| r.key[1]).collect(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                (10, 3, vec![2]),
                (20, 2, vec![4]),
                (20, 4, vec![3]),
                (20, 5, vec![1]),
            ]
        );
        assert_eq!(b.rows(), 1);
        assert_eq!(b.min_commit_ts(), Some(Ts(30)));
        assert!(b.release(Ts(29)).is_empty());
        assert_eq!(b.release(Ts::MAX).len(), 1);
        assert_eq!(b.bytes(), 0);
    }

    proptest! {
        #[test]
        fn release_is_a_sorted_partition(
            rows in proptest::collection::vec((0u8..50, 1u64..40, 0u64..40), 0..200),
            cut in 0u64..80,
        ) {
            let mut b = SpanBuffer::new();
            for (k, s, d) in &rows {
                b.push(row(*k, *s, s + d));
            }
            let first = b.release(Ts(cut));
            let second = b.release(Ts::MAX);
            let n: usize = first.iter().chain(&second).map(|t| t.rows.len()).sum();
            prop_assert_eq!(n, rows.len());
            prop_assert!(first.iter().all(|t| t.commit_ts.0 <= cut));
            prop_assert!(second.iter().all(|t| t.commit_ts.0 > cut));
            let order: Vec<(Ts, Ts)> = first.iter().chain(&second).map(|t| (t.commit_ts, t.start_ts)).collect();
            let mut sorted = order.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(order, sorted);
            prop_assert_eq!(b.bytes(), 0);
        }
    }
}
