//! Per-span ordering and decoding: from unsorted raw rows to whole, decoded transactions.
//!
//! The feed delivers a span's rows in arrival order (regions interleaved, not sorted) and
//! promises only that every row with `commit_ts <= R` arrives before `Resolved(R)`. A
//! [`SpanBuffer`] therefore keeps the rows grouped by `(commit_ts, start_ts)` — one group per
//! upstream transaction — and [`SpanBuffer::next_ready`] hands out the groups at or below a
//! bound in that order once the bound is safe. Each span has its own buffer and its own bound,
//! so a span whose resolved ts is stuck holds back only its own rows.
//!
//! A buffer's rows may be moved to disk ([`SpanBuffer::spill`], see [`crate::spill`]): when a
//! transaction is larger than the memory quota allows, or a stuck span keeps receiving rows.
//! A group that was spilled is read back in chunks of bounded size, so
//! [`SpanBuffer::next_ready`] may return one transaction as several [`RawTxn`]s with the same
//! `(commit_ts, start_ts)` (`last == false` on all but the final one).
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
use crate::spill::{Extent, SpillError, SpillReader, Spiller};

/// One upstream transaction's raw rows in one span (or one chunk of them, for a transaction
/// that was spilled to disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTxn {
    /// Commit ts.
    pub commit_ts: Ts,
    /// Start ts.
    pub start_ts: Ts,
    /// Its rows, in arrival order.
    pub rows: Vec<RawKvChange>,
    /// False if more rows of the same transaction follow (a spilled transaction read back in
    /// chunks).
    pub last: bool,
}

/// The rows of one transaction: on disk first (in spill order), then in memory.
#[derive(Debug, Default)]
struct Group {
    extents: Vec<Extent>,
    spilled_rows: usize,
    spilled_bytes: usize,
    reader: Option<SpillReader>,
    mem: Vec<RawKvChange>,
    mem_bytes: usize,
}

/// Rows of one span waiting for the span's resolved ts, grouped by transaction.
#[derive(Debug, Default)]
pub struct SpanBuffer {
    groups: BTreeMap<(Ts, Ts), Group>,
    mem_bytes: usize,
    spilled_bytes: usize,
    rows: usize,
}

impl SpanBuffer {
    /// An empty buffer.
    pub fn new() -> SpanBuffer {
        SpanBuffer::default()
    }

    /// Adds a row (in memory).
    pub fn push(&mut self, row: RawKvChange) {
        let size = row.approximate_size();
        self.mem_bytes = self.mem_bytes.saturating_add(size);
        self.rows = self.rows.saturating_add(1);
        let g = self
            .groups
            .entry((row.commit_ts, row.start_ts))
            .or_default();
        g.mem_bytes = g.mem_bytes.saturating_add(size);
        g.mem.push(row);
    }

    /// Moves rows held in memory to disk, newest transactions first, until at most `keep`
    /// bytes remain in memory. A transaction being read back is not touched. Returns the
    /// bytes moved.
    pub fn spill(&mut self, spiller: &mut Spiller, keep: usize) -> Result<usize, SpillError> {
        let mut moved = 0usize;
        for g in self.groups.values_mut().rev() {
            if self.mem_bytes <= keep {
                break;
            }
            if g.mem.is_empty() || g.reader.is_some() {
                continue;
            }
            spiller.write(&g.mem, &mut g.extents)?;
            g.spilled_rows = g.spilled_rows.saturating_add(g.mem.len());
            g.spilled_bytes = g.spilled_bytes.saturating_add(g.mem_bytes);
            self.spilled_bytes = self.spilled_bytes.saturating_add(g.mem_bytes);
            self.mem_bytes = self.mem_bytes.saturating_sub(g.mem_bytes);
            moved = moved.saturating_add(g.mem_bytes);
            g.mem = Vec::new();
            g.mem_bytes = 0;
        }
        Ok(moved)
    }

    /// Removes and returns the next transaction committed at or below `upto`, in
    /// `(commit_ts, start_ts)` order. A transaction held in memory comes out whole; one that
    /// was spilled comes back in chunks of about `chunk_bytes`, the last one with
    /// `last == true`. `None` when nothing at or below `upto` is left.
    pub fn next_ready(
        &mut self,
        upto: Ts,
        chunk_bytes: usize,
        mut spiller: Option<&mut Spiller>,
    ) -> Result<Option<RawTxn>, SpillError> {
        let Some(mut entry) = self.groups.first_entry() else {
            return Ok(None);
        };
        let (commit_ts, start_ts) = *entry.key();
        if commit_ts > upto {
            return Ok(None);
        }
        let g = entry.get_mut();
        if g.spilled_rows > 0 {
            let spiller = spiller.as_deref_mut().ok_or_else(|| SpillError::Io {
                path: Default::default(),
                source: std::io::Error::other("spilled rows but no spiller"),
            })?;
            if g.reader.is_none() {
                spiller.flush()?;
                g.reader = Some(SpillReader::new(std::mem::take(&mut g.extents)));
            }
            let reader = g.reader.as_mut().ok_or_else(|| SpillError::Io {
                path: Default::default(),
                source: std::io::Error::other("no spill reader"),
            })?;
            let rows = reader.next_chunk(chunk_bytes)?;
            if !rows.is_empty() {
                let bytes = rows
                    .iter()
                    .map(RawKvChange::approximate_size)
                    .sum::<usize>();
                g.spilled_rows = g.spilled_rows.saturating_sub(rows.len());
                g.spilled_bytes = g.spilled_bytes.saturating_sub(bytes);
                self.spilled_bytes = self.spilled_bytes.saturating_sub(bytes);
                self.rows = self.rows.saturating_sub(rows.len());
                let done = reader.is_done() && g.mem.is_empty();
                if done {
                    self.spilled_bytes = self.spilled_bytes.saturating_sub(g.spilled_bytes);
                    entry.remove();
                    spiller.collect();
                }
                return Ok(Some(RawTxn {
                    commit_ts,
                    start_ts,
                    rows,
                    last: done,
                }));
            }
            if g.spilled_rows != 0 {
                return Err(SpillError::Corrupt {
                    path: spiller.dir().to_path_buf(),
                    offset: 0,
                    detail: format!(
                        "{} spilled rows of the transaction committed at {} are missing",
                        g.spilled_rows, commit_ts.0
                    ),
                });
            }
        }
        // Whatever is in memory (the whole transaction, or the rows that came after a spill).
        let g = entry.remove();
        self.spilled_bytes = self.spilled_bytes.saturating_sub(g.spilled_bytes);
        self.mem_bytes = self.mem_bytes.saturating_sub(g.mem_bytes);
        self.rows = self.rows.saturating_sub(g.mem.len());
        if let Some(s) = spiller {
            s.collect();
        }
        Ok(Some(RawTxn {
            commit_ts,
            start_ts,
            rows: g.mem,
            last: true,
        }))
    }

    /// Drops everything (the span is gone).
    pub fn clear(&mut self) {
        self.groups.clear();
        self.mem_bytes = 0;
        self.spilled_bytes = 0;
        self.rows = 0;
    }

    /// Approximate bytes held in memory.
    pub fn bytes(&self) -> usize {
        self.mem_bytes
    }

    /// Approximate bytes of rows held on disk.
    pub fn spilled_bytes(&self) -> usize {
        self.spilled_bytes
    }

    /// Rows held (in memory and on disk).
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

    /// Everything at or below `upto`, chunks of one transaction merged back together.
    fn release(b: &mut SpanBuffer, upto: Ts, mut sp: Option<&mut Spiller>) -> Vec<RawTxn> {
        let mut out: Vec<RawTxn> = Vec::new();
        let mut open = false;
        while let Some(t) = b.next_ready(upto, 300, sp.as_deref_mut()).unwrap() {
            match out.last_mut() {
                Some(prev) if open => {
                    assert_eq!((prev.commit_ts, prev.start_ts), (t.commit_ts, t.start_ts));
                    prev.rows.extend(t.rows);
                    prev.last = t.last;
                }
                _ => out.push(t),
            }
            open = !out.last().is_some_and(|t| t.last);
        }
        assert!(!open, "a transaction was left half released");
        out
    }

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
        let out = release(&mut b, Ts(20), None);
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
        assert!(release(&mut b, Ts(29), None).is_empty());
        assert_eq!(release(&mut b, Ts::MAX, None).len(), 1);
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn a_spilled_transaction_comes_back_in_chunks_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let mut sp = Spiller::new(tmp.path().join("w0"), 0);
        let mut b = SpanBuffer::new();
        for k in 0..40u8 {
            b.push(row(k, 5, 10));
        }
        b.push(row(100, 6, 12));
        let before = b.bytes();
        assert_eq!(b.spill(&mut sp, 0).unwrap(), before);
        assert_eq!((b.bytes(), b.spilled_bytes(), b.rows()), (0, before, 41));
        // Rows arriving after the spill stay in memory and come after the spilled ones.
        b.push(row(40, 5, 10));
        let mut chunks = Vec::new();
        while let Some(t) = b.next_ready(Ts(11), 300, Some(&mut sp)).unwrap() {
            chunks.push(t);
        }
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        assert!(
            chunks
                .iter()
                .all(|t| (t.commit_ts, t.start_ts) == (Ts(10), Ts(5)))
        );
        assert!(chunks[..chunks.len() - 1].iter().all(|t| !t.last));
        assert!(chunks.last().unwrap().last);
        let keys: Vec<u8> = chunks
            .iter()
            .flat_map(|t| t.rows.iter().map(|r| r.key[1]))
            .collect();
        assert_eq!(keys, (0..=40).collect::<Vec<u8>>());
        // The second transaction is still on disk; its file is still needed.
        assert_eq!(b.rows(), 1);
        assert_eq!(std::fs::read_dir(sp.dir()).unwrap().count(), 1);
        let rest = release(&mut b, Ts::MAX, Some(&mut sp));
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].rows, vec![row(100, 6, 12)]);
        assert_eq!((b.bytes(), b.spilled_bytes(), b.rows()), (0, 0, 0));
        assert_eq!(
            std::fs::read_dir(sp.dir()).unwrap().count(),
            0,
            "spill file removed"
        );
    }

    proptest! {
        #[test]
        fn release_is_a_sorted_partition(
            rows in proptest::collection::vec((0u8..50, 1u64..40, 0u64..40), 0..200),
            cut in 0u64..80,
            spill_every in proptest::option::of(1usize..60),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let mut sp = Spiller::new(tmp.path().join("w"), 0);
            let mut b = SpanBuffer::new();
            for (i, (k, s, d)) in rows.iter().enumerate() {
                b.push(row(*k, *s, s + d));
                if spill_every.is_some_and(|n| i % n == 0) {
                    b.spill(&mut sp, 100).unwrap();
                }
            }
            let first = release(&mut b, Ts(cut), Some(&mut sp));
            let second = release(&mut b, Ts::MAX, Some(&mut sp));
            let n: usize = first.iter().chain(&second).map(|t| t.rows.len()).sum();
            prop_assert_eq!(n, rows.len());
            prop_assert!(first.iter().all(|t| t.commit_ts.0 <= cut));
            prop_assert!(second.iter().all(|t| t.commit_ts.0 > cut));
            let order: Vec<(Ts, Ts)> = first.iter().chain(&second).map(|t| (t.commit_ts, t.start_ts)).collect();
            let mut sorted = order.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(order, sorted);
            // Within a transaction, rows keep their arrival order.
            for t in first.iter().chain(&second) {
                let expect: Vec<u8> = rows
                    .iter()
                    .filter(|(_, s, d)| (Ts(s + d), Ts(*s)) == (t.commit_ts, t.start_ts))
                    .map(|(k, _, _)| *k)
                    .collect();
                let got: Vec<u8> = t.rows.iter().map(|r| r.key[1]).collect();
                prop_assert_eq!(got, expect);
            }
            prop_assert_eq!((b.bytes(), b.spilled_bytes(), b.rows()), (0, 0, 0));
            if sp.files_created() > 0 {
                prop_assert_eq!(std::fs::read_dir(sp.dir()).unwrap().count(), 0);
            }
        }
    }
}
