//! DML: optimistic transactions that buffer row and index mutations and commit them through the
//! store's percolator API, encoded exactly as TiDB encodes them.
//!
//! - Row keys: `t{id}_r` + the int handle (an integer primary key, or an allocated
//!   `_tidb_rowid`), or the comparable encoding of a clustered primary key.
//! - Row values: format v2 via the model crate's encoder. Following TiDB, the integer handle
//!   column and clustered-key columns whose key bytes are the value are left out (readers take
//!   them from the key), and a NULL column whose default is NULL and that has no origin default
//!   is left out entirely.
//! - Index keys: unique indexes map their values to the handle; non-unique ones append the
//!   handle to the key. CDC ignores them, but they make the keyspace (and region splits,
//!   scans, old values) look like TiDB's.
//!
//! Like TiDB's memory buffer, a key written twice in one transaction keeps its last mutation.
//!
//! The buffer is built for the common case of a writer appending rows in ascending key order
//! (what bulk loads and the benchmarks do): such a write is a comparison with the last key and a
//! push, and the buffer *is* the sorted mutation list the commit sends. Keys written out of
//! order (index entries, random handles) go to an ordered map that is merged in at commit.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;
use tidal_model::codec::datum::{FlaggedDatum, encode_key_flagged};
use tidal_model::schema::{ColumnInfo, FieldType, IndexInfo, TableInfo};
use tidal_model::tablecodec::{self, Handle};
use tidal_model::{Datum, decode};

use super::types::{encode_key_datums, key_datum};
use super::{Table, Tidb, TidbError, read_retry};
use crate::mvcc::{Mutation, Op};

/// What a row write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowKind {
    /// A new row.
    Insert,
    /// A changed row.
    Update,
    /// A removed row.
    Delete,
}

/// One row written by a transaction (the test oracle's unit).
#[derive(Debug, Clone, PartialEq)]
pub struct RowWrite {
    /// Physical table id.
    pub table_id: i64,
    /// Database name (shared by the table's rows).
    pub db: Arc<str>,
    /// Table name (shared by the table's rows).
    pub table: Arc<str>,
    /// Insert, update or delete.
    pub kind: RowKind,
    /// The raw row key.
    pub key: Vec<u8>,
    /// The row's handle.
    pub handle: Handle,
    /// The row's values after the write (public-column order); `None` for a delete.
    pub values: Option<Vec<Datum>>,
}

/// How to finish a transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitOptions {
    /// Commit in one phase (no locks), as TiDB does for small single-region transactions.
    pub one_pc: bool,
    /// Prewrite everything, then roll back instead of committing.
    pub rollback: bool,
}

/// The result of a commit.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitInfo {
    /// The transaction's start ts.
    pub start_ts: u64,
    /// The commit ts; `None` if the transaction was rolled back.
    pub commit_ts: Option<u64>,
    /// The rows written, in statement order.
    pub rows: Vec<RowWrite>,
}

/// An optimistic transaction (start ts taken at [`Tidb::begin`]).
#[derive(Debug)]
pub struct Txn {
    tidb: Tidb,
    start_ts: u64,
    tables: HashMap<i64, Arc<TableInfo>>,
    /// The table last checked by `track` (id and schema address), to skip the map lookup for
    /// consecutive writes to one table. The address stays unique while `tables` holds the Arc.
    last_table: Option<(i64, usize)>,
    /// Buffered writes, one per key.
    buf: WriteBuffer,
    rows: Vec<RowWrite>,
    /// The size of the last encoded row value: the capacity a new value starts with, so that
    /// rows of a steady width are encoded straight into exactly sized buffers.
    value_hint: usize,
}

/// A transaction's buffered writes: at most one mutation per key (the last one written), kept
/// in key order.
///
/// Two parts with disjoint keys: `sorted`, strictly ascending, takes every key above its last
/// one by a push; `others` takes the keys first written below it. Every key of `others` is below
/// `sorted`'s last key (which only grows), so a key above it is new to both parts.
#[derive(Debug, Default)]
struct WriteBuffer {
    /// Mutations in strictly ascending key order.
    sorted: Vec<Mutation>,
    /// Mutations of keys first written out of order (not in `sorted`).
    others: BTreeMap<Vec<u8>, (Op, Vec<u8>)>,
}

impl WriteBuffer {
    fn len(&self) -> usize {
        self.sorted.len() + self.others.len()
    }

    fn is_empty(&self) -> bool {
        self.sorted.is_empty() && self.others.is_empty()
    }

    /// Records a write of `key`, replacing any earlier write of it.
    fn set(&mut self, key: Vec<u8>, op: Op, value: Vec<u8>) {
        let Some(last) = self.sorted.last_mut() else {
            // `others` is empty too: it only takes keys below `sorted`'s last.
            self.sorted.push(Mutation { key, op, value });
            return;
        };
        match key.as_slice().cmp(last.key.as_slice()) {
            Ordering::Greater => self.sorted.push(Mutation { key, op, value }),
            Ordering::Equal => {
                last.op = op;
                last.value = value;
            }
            Ordering::Less => match self.find_sorted(&key) {
                Some(i) => {
                    let m = &mut self.sorted[i];
                    m.op = op;
                    m.value = value;
                }
                None => {
                    self.others.insert(key, (op, value));
                }
            },
        }
    }

    /// The index of `key` in `sorted`.
    fn find_sorted(&self, key: &[u8]) -> Option<usize> {
        // Keys below the first one (index entries before their table's rows) skip the search.
        match self.sorted.first() {
            Some(first) if key >= first.key.as_slice() => self
                .sorted
                .binary_search_by(|m| m.key.as_slice().cmp(key))
                .ok(),
            _ => None,
        }
    }

    /// The buffered write of `key`, if any.
    fn get(&self, key: &[u8]) -> Option<(Op, &[u8])> {
        if let Some(i) = self.find_sorted(key) {
            let m = &self.sorted[i];
            return Some((m.op, &m.value));
        }
        self.others.get(key).map(|(op, v)| (*op, v.as_slice()))
    }

    /// The mutations in key order (moved, not copied).
    fn into_mutations(self) -> Vec<Mutation> {
        let WriteBuffer { sorted, others } = self;
        if others.is_empty() {
            return sorted;
        }
        let mut out = Vec::with_capacity(sorted.len() + others.len());
        let mut others = others
            .into_iter()
            .map(|(key, (op, value))| Mutation { key, op, value })
            .peekable();
        for m in sorted {
            while let Some(o) = others.next_if(|o| o.key < m.key) {
                out.push(o);
            }
            out.push(m);
        }
        out.extend(others);
        out
    }
}

/// Bytes a row value's buffer starts with beyond the last value's size, so that values a few
/// bytes longer than the last one (a wider integer) need no regrowth.
const VALUE_SLACK: usize = 16;

fn invalid(detail: impl Into<String>) -> TidbError {
    TidbError::Invalid(detail.into())
}

/// Checks a row's arity and NOT NULL columns.
fn check_values(info: &TableInfo, cols: &[&ColumnInfo], values: &[Datum]) -> Result<(), TidbError> {
    if cols.len() != values.len() {
        return Err(invalid(format!(
            "table {} has {} columns, got {} values",
            info.name.O,
            cols.len(),
            values.len()
        )));
    }
    for (c, v) in cols.iter().zip(values) {
        if v.is_null() && c.is_not_null() {
            return Err(invalid(format!(
                "column {}.{} cannot be NULL",
                info.name.O, c.name.O
            )));
        }
    }
    Ok(())
}

fn position(info: &TableInfo, name_lower: &str) -> Result<usize, TidbError> {
    position_in(info, &info.public_columns(), name_lower)
}

fn position_in(
    info: &TableInfo,
    cols: &[&ColumnInfo],
    name_lower: &str,
) -> Result<usize, TidbError> {
    cols.iter()
        .position(|c| c.name.L == name_lower)
        .ok_or_else(|| invalid(format!("no public column {name_lower} in {}", info.name.O)))
}

/// The handle the row's values determine: the integer primary key or the clustered key;
/// `None` for tables keyed by `_tidb_rowid`.
pub fn handle_of(info: &TableInfo, values: &[Datum]) -> Result<Option<Handle>, TidbError> {
    handle_of_cols(info, &info.public_columns(), values)
}

/// [`handle_of`] with the table's public columns already listed.
fn handle_of_cols(
    info: &TableInfo,
    cols: &[&ColumnInfo],
    values: &[Datum],
) -> Result<Option<Handle>, TidbError> {
    if let Some(pk) = info.pk_handle_column() {
        let pos = position_in(info, cols, &pk.name.L)?;
        return match values.get(pos) {
            Some(Datum::Int(v)) => Ok(Some(Handle::Int(*v))),
            Some(Datum::Uint(v)) => Ok(Some(Handle::Int(*v as i64))),
            other => Err(invalid(format!("integer handle value {other:?}"))),
        };
    }
    if info.is_common_handle
        && let Some(pk) = info.primary_index()
    {
        let mut datums = Vec::with_capacity(pk.idx_cols.len());
        for ic in &pk.idx_cols {
            let pos = position_in(info, cols, &ic.name.L)?;
            let (Some(col), Some(v)) = (cols.get(pos), values.get(pos)) else {
                return Err(invalid("clustered key column"));
            };
            datums.push(key_datum(v, &col.field_type)?);
        }
        let mut bytes = Vec::new();
        encode_key_datums(&mut bytes, &datums);
        return Ok(Some(Handle::Common(bytes)));
    }
    Ok(None)
}

fn is_null_json(v: &Option<Value>) -> bool {
    v.as_ref().is_none_or(Value::is_null)
}

/// Encodes a row value (format v2) the way TiDB does for this table.
pub fn encode_value(info: &TableInfo, values: &[Datum]) -> Result<Vec<u8>, TidbError> {
    encode_value_cols(info, &info.public_columns(), values)
}

/// [`encode_value`] with the table's public columns already listed.
fn encode_value_cols(
    info: &TableInfo,
    public: &[&ColumnInfo],
    values: &[Datum],
) -> Result<Vec<u8>, TidbError> {
    let handle_col = info.pk_handle_column().map(|c| c.id);
    let clustered: Vec<String> = if info.is_common_handle {
        info.primary_index()
            .map(|p| p.idx_cols.iter().map(|c| c.name.L.clone()).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut cols = Vec::with_capacity(values.len());
    for (c, v) in public.iter().zip(values) {
        if Some(c.id) == handle_col {
            continue;
        }
        if clustered.contains(&c.name.L) && !decode::need_restored_data(&c.field_type) {
            continue;
        }
        if v.is_null() && is_null_json(&c.default) && is_null_json(&c.origin_default) {
            continue;
        }
        cols.push((c.id, v, &c.field_type));
    }
    Ok(tidal_model::rowcodec::encode_row_v2(&cols)?)
}

/// What DML needs of a table's columns for every row, derived once per schema version (when the
/// catalog stores the table) instead of per row.
#[derive(Debug)]
pub(crate) struct RowLayout {
    /// Indexes into `TableInfo::cols` of the public columns, in row (value) order.
    public: Vec<usize>,
    /// Public position of the integer handle column, for tables whose primary key is it.
    int_handle: Option<usize>,
    /// The columns a row value holds, by public position (the rest are in the key): the
    /// column's id and whether a NULL of it is left out of the value.
    value_cols: Vec<(usize, i64, bool)>,
}

impl RowLayout {
    /// Derives the layout the per-row functions above would compute for `info`.
    pub(crate) fn new(info: &TableInfo) -> RowLayout {
        let public: Vec<usize> = (0..info.cols.len())
            .filter(|&i| info.cols[i].is_public())
            .collect();
        let handle_col = info.pk_handle_column().map(|c| c.id);
        let clustered: Vec<&str> = if info.is_common_handle {
            info.primary_index()
                .map(|p| p.idx_cols.iter().map(|c| c.name.L.as_str()).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut int_handle = None;
        let mut value_cols = Vec::with_capacity(public.len());
        for (pos, &i) in public.iter().enumerate() {
            let c = &info.cols[i];
            if Some(c.id) == handle_col {
                int_handle = Some(pos);
                continue;
            }
            if clustered.contains(&c.name.L.as_str()) && !decode::need_restored_data(&c.field_type)
            {
                continue;
            }
            let omit_null = is_null_json(&c.default) && is_null_json(&c.origin_default);
            value_cols.push((pos, c.id, omit_null));
        }
        RowLayout {
            public,
            int_handle,
            value_cols,
        }
    }

    /// [`check_values`] through the layout.
    fn check(&self, info: &TableInfo, values: &[Datum]) -> Result<(), TidbError> {
        if self.public.len() != values.len() {
            return Err(invalid(format!(
                "table {} has {} columns, got {} values",
                info.name.O,
                self.public.len(),
                values.len()
            )));
        }
        for (&i, v) in self.public.iter().zip(values) {
            let c = &info.cols[i];
            if v.is_null() && c.is_not_null() {
                return Err(invalid(format!(
                    "column {}.{} cannot be NULL",
                    info.name.O, c.name.O
                )));
            }
        }
        Ok(())
    }

    /// [`handle_of`] through the layout (clustered keys take the general path).
    fn handle(&self, info: &TableInfo, values: &[Datum]) -> Result<Option<Handle>, TidbError> {
        match self.int_handle {
            Some(pos) => match values.get(pos) {
                Some(Datum::Int(v)) => Ok(Some(Handle::Int(*v))),
                Some(Datum::Uint(v)) => Ok(Some(Handle::Int(*v as i64))),
                other => Err(invalid(format!("integer handle value {other:?}"))),
            },
            None if info.is_common_handle => handle_of(info, values),
            None => Ok(None),
        }
    }

    /// [`encode_value`] through the layout, encoded into a buffer of `capacity` bytes (the
    /// expected size) and returned at its exact size.
    fn encode(
        &self,
        info: &TableInfo,
        values: &[Datum],
        capacity: usize,
    ) -> Result<Vec<u8>, TidbError> {
        /// Rows of up to this many value columns list them on the stack.
        const INLINE: usize = 32;
        if values.len() != self.public.len() {
            return Err(invalid("row arity"));
        }
        // Unused slots hold a copy of the first column (never read).
        let filler = match self.value_cols.first() {
            Some(&(pos, id, _)) => (id, &values[pos], &info.cols[self.public[pos]].field_type),
            None => return Ok(tidal_model::rowcodec::encode_row_v2(&[])?),
        };
        let mut inline: [(i64, &Datum, &FieldType); INLINE] = [filler; INLINE];
        let mut heap = Vec::new();
        let mut n = 0;
        for &(pos, id, omit_null) in &self.value_cols {
            let v = &values[pos];
            if omit_null && v.is_null() {
                continue;
            }
            let col = (id, v, &info.cols[self.public[pos]].field_type);
            if n < INLINE {
                inline[n] = col;
            } else {
                if heap.is_empty() {
                    heap.extend_from_slice(&inline);
                }
                heap.push(col);
            }
            n += 1;
        }
        let cols = if n <= INLINE { &inline[..n] } else { &heap[..] };
        let mut out = Vec::with_capacity(capacity);
        tidal_model::rowcodec::encode_row_v2_into(&mut out, cols)?;
        if out.capacity() != out.len() {
            out.shrink_to_fit();
        }
        Ok(out)
    }
}

/// The (key, value) of a row's entry in `index` (values in public-column order).
pub fn index_entry(
    info: &TableInfo,
    index: &IndexInfo,
    handle: &Handle,
    values: &[Datum],
) -> Result<(Vec<u8>, Vec<u8>), TidbError> {
    let cols = info.public_columns();
    let mut datums = Vec::with_capacity(index.idx_cols.len());
    let mut has_null = false;
    for ic in &index.idx_cols {
        let pos = position(info, &ic.name.L)?;
        let (Some(col), Some(v)) = (cols.get(pos), values.get(pos)) else {
            return Err(invalid("index column"));
        };
        has_null |= v.is_null();
        datums.push(key_datum(v, &col.field_type)?);
    }
    let mut encoded = Vec::new();
    encode_key_datums(&mut encoded, &datums);
    if index.is_unique && !has_null {
        let key = tablecodec::encode_index_key(info.id, index.id, &encoded);
        let value = match handle {
            Handle::Int(h) => (*h as u64).to_be_bytes().to_vec(),
            Handle::Common(b) => b.clone(),
        };
        Ok((key, value))
    } else {
        match handle {
            Handle::Int(h) => encode_key_flagged(&mut encoded, &FlaggedDatum::Int(*h)),
            Handle::Common(b) => encoded.extend_from_slice(b),
        }
        Ok((
            tablecodec::encode_index_key(info.id, index.id, &encoded),
            b"0".to_vec(),
        ))
    }
}

/// The indexes DML maintains: the public ones, except a clustered primary key (the row key is
/// that index).
fn maintained_indexes(info: &TableInfo) -> impl Iterator<Item = &IndexInfo> {
    info.index_info
        .iter()
        .filter(move |i| i.state.is_public() && !(i.is_primary && info.is_common_handle))
}

impl Txn {
    pub(crate) fn new(tidb: Tidb, start_ts: u64) -> Self {
        Txn {
            tidb,
            start_ts,
            tables: HashMap::new(),
            last_table: None,
            buf: WriteBuffer::default(),
            rows: Vec::new(),
            value_hint: 0,
        }
    }

    /// The start ts (snapshot of reads).
    pub fn start_ts(&self) -> u64 {
        self.start_ts
    }

    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Number of buffered mutations (rows and index entries).
    pub fn mutation_count(&self) -> usize {
        self.buf.len()
    }

    fn track(&mut self, table: &Table) -> Result<(), TidbError> {
        let this = (table.id(), Arc::as_ptr(&table.info) as usize);
        if self.last_table == Some(this) {
            return Ok(());
        }
        match self.tables.get(&table.id()) {
            Some(info) if !Arc::ptr_eq(info, &table.info) => {
                return Err(TidbError::SchemaChanged(table.name().to_owned()));
            }
            Some(_) => {}
            None => {
                self.tables.insert(table.id(), Arc::clone(&table.info));
            }
        }
        self.last_table = Some(this);
        Ok(())
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.buf.set(key, Op::Put, value);
    }

    fn del(&mut self, key: Vec<u8>) {
        self.buf.set(key, Op::Delete, Vec::new());
    }

    fn write_row(
        &mut self,
        table: &Table,
        handle: &Handle,
        values: &[Datum],
        old: Option<&[Datum]>,
    ) -> Result<Vec<u8>, TidbError> {
        let info = &table.info;
        let key = tablecodec::encode_row_key(info.id, handle);
        let mut new_entries = Vec::new();
        for ix in maintained_indexes(info) {
            new_entries.push(index_entry(info, ix, handle, values)?);
        }
        if let Some(old) = old {
            for ix in maintained_indexes(info) {
                let (k, _) = index_entry(info, ix, handle, old)?;
                if !new_entries.iter().any(|(nk, _)| *nk == k) {
                    self.del(k);
                }
            }
        }
        // A little slack: shrinking a buffer is cheap, growing one copies it.
        let value =
            table
                .layout
                .encode(info, values, self.value_hint.saturating_add(VALUE_SLACK))?;
        self.value_hint = value.len();
        self.put(key.clone(), value);
        for (k, v) in new_entries {
            self.put(k, v);
        }
        Ok(key)
    }

    /// Inserts a row (values in public-column order) and returns its handle (the allocated
    /// `_tidb_rowid` for tables without a clustered key). An existing row with the same key is
    /// overwritten (no duplicate check).
    pub fn insert(&mut self, table: &Table, values: Vec<Datum>) -> Result<Handle, TidbError> {
        self.track(table)?;
        table.layout.check(&table.info, &values)?;
        let handle = match table.layout.handle(&table.info, &values)? {
            Some(h) => h,
            None => Handle::Int(table.alloc_row_id()),
        };
        let key = self.write_row(table, &handle, &values, None)?;
        self.rows.push(RowWrite {
            table_id: table.id(),
            db: Arc::clone(&table.names.0),
            table: Arc::clone(&table.names.1),
            kind: RowKind::Insert,
            key,
            handle: handle.clone(),
            values: Some(values),
        });
        Ok(handle)
    }

    /// Replaces the row at `handle` with `values`. Returns false (writing nothing) if there is
    /// no such row. If the values change the clustered key, the row moves to its new key.
    pub fn update(
        &mut self,
        table: &Table,
        handle: &Handle,
        values: Vec<Datum>,
    ) -> Result<bool, TidbError> {
        self.track(table)?;
        let cols = table.info.public_columns();
        check_values(&table.info, &cols, &values)?;
        let Some(old) = self.get(table, handle)? else {
            return Ok(false);
        };
        let new_handle =
            handle_of_cols(&table.info, &cols, &values)?.unwrap_or_else(|| handle.clone());
        if new_handle != *handle {
            self.delete(table, handle)?;
            self.insert(table, values)?;
            return Ok(true);
        }
        let key = self.write_row(table, handle, &values, Some(&old))?;
        self.rows.push(RowWrite {
            table_id: table.id(),
            db: Arc::clone(&table.names.0),
            table: Arc::clone(&table.names.1),
            kind: RowKind::Update,
            key,
            handle: handle.clone(),
            values: Some(values),
        });
        Ok(true)
    }

    /// Deletes the row at `handle` (and its index entries). Returns false if there is none.
    pub fn delete(&mut self, table: &Table, handle: &Handle) -> Result<bool, TidbError> {
        self.track(table)?;
        let Some(old) = self.get(table, handle)? else {
            return Ok(false);
        };
        let info = Arc::clone(&table.info);
        for ix in maintained_indexes(&info) {
            let (k, _) = index_entry(&info, ix, handle, &old)?;
            self.del(k);
        }
        let key = tablecodec::encode_row_key(info.id, handle);
        self.del(key.clone());
        self.rows.push(RowWrite {
            table_id: table.id(),
            db: Arc::clone(&table.names.0),
            table: Arc::clone(&table.names.1),
            kind: RowKind::Delete,
            key,
            handle: handle.clone(),
            values: None,
        });
        Ok(true)
    }

    /// Reads the row at `handle`: this transaction's own write if any, else the committed row
    /// at the start ts (waiting out locks of transactions still committing).
    pub fn get(&self, table: &Table, handle: &Handle) -> Result<Option<Vec<Datum>>, TidbError> {
        let key = tablecodec::encode_row_key(table.id(), handle);
        match self.buf.get(&key) {
            Some((Op::Delete, _)) => Ok(None),
            Some((_, v)) => Ok(Some(decode::decode_row(&table.info, &key, v)?)),
            None => match read_retry(|| self.tidb.store().get(&key, self.start_ts))? {
                None => Ok(None),
                Some(v) => Ok(Some(decode::decode_row(&table.info, &key, &v)?)),
            },
        }
    }

    /// Commits (two-phase).
    pub fn commit(self) -> Result<CommitInfo, TidbError> {
        self.commit_with(CommitOptions::default())
    }

    /// Commits with options (1PC, or prewrite-then-rollback). Fails with
    /// [`TidbError::SchemaChanged`] if a DDL changed a written table since it was looked up.
    pub fn commit_with(self, opts: CommitOptions) -> Result<CommitInfo, TidbError> {
        let Txn {
            tidb,
            start_ts,
            tables,
            last_table: _,
            buf,
            rows,
            value_hint: _,
        } = self;
        let cat = tidb.inner.catalog.read();
        for (id, info) in &tables {
            match cat.tables.get(id) {
                Some(e) if Arc::ptr_eq(&e.info, info) => {}
                _ => return Err(TidbError::SchemaChanged(info.name.O.clone())),
            }
        }
        let muts = buf.into_mutations();
        let commit_ts = tidb.commit_mutations(muts, start_ts, &opts)?;
        drop(cat);
        Ok(CommitInfo {
            start_ts,
            commit_ts,
            rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::MvccStore;
    use crate::region::{RegionConfig, RegionManager};
    use crate::tidb::types;
    use crate::tidb::{ColumnSpec, IndexSpec, PrimaryKey, TableSpec};
    use crate::tso::Tso;
    use proptest::prelude::*;

    fn tidb() -> Tidb {
        let store = MvccStore::new();
        let regions = RegionManager::new(store.clone(), &RegionConfig::default());
        Tidb::new(store, Tso::new(), regions).unwrap()
    }

    /// The cached layout gives the same value bytes, handle and errors as the per-row
    /// functions, for every kind of key and NULL handling, and past the inline column list.
    #[test]
    fn layout_matches_per_row_derivation() {
        let t = tidb();
        t.create_database("d").unwrap();
        let wide: Vec<ColumnSpec> = (0..40)
            .map(|i| ColumnSpec::new(format!("c{i}"), types::bigint()))
            .collect();
        let specs = [
            TableSpec::new(
                "int_pk",
                vec![
                    ColumnSpec::new("id", types::bigint()).not_null(),
                    ColumnSpec::new("plain", types::varchar(20)),
                    ColumnSpec::new("dflt", types::bigint()).default(Datum::Int(7)),
                ],
            )
            .primary_key(PrimaryKey::IntHandle("id".into())),
            TableSpec::new(
                "clustered",
                vec![
                    ColumnSpec::new("a", types::varchar(20)).not_null(),
                    ColumnSpec::new("b", types::varchar_ci(20)).not_null(),
                    ColumnSpec::new("v", types::bigint()),
                ],
            )
            .primary_key(PrimaryKey::Clustered(vec!["a".into(), "b".into()])),
            TableSpec::new(
                "rowid",
                vec![
                    ColumnSpec::new("x", types::bigint()),
                    ColumnSpec::new("y", types::varchar(20)),
                ],
            ),
            TableSpec::new("wide", wide),
        ];
        for spec in &specs {
            t.create_table("d", spec).unwrap();
            let table = t.table("d", &spec.name).unwrap();
            let n = table.columns().len();
            let rows: Vec<Vec<Datum>> = vec![
                (0..n)
                    .map(|i| match &table.columns()[i].field_type.tp {
                        &tidal_model::mysql::TYPE_LONGLONG => Datum::Int(i as i64 * 1000 - 3),
                        _ => Datum::Bytes(format!("v{i}").into_bytes()),
                    })
                    .collect(),
                (0..n)
                    .map(|i| {
                        if table.columns()[i].is_not_null() {
                            match &table.columns()[i].field_type.tp {
                                &tidal_model::mysql::TYPE_LONGLONG => Datum::Int(5),
                                _ => Datum::Bytes(b"k".to_vec()),
                            }
                        } else {
                            Datum::Null
                        }
                    })
                    .collect(),
                vec![Datum::Null; n],
                vec![Datum::Int(1); n + 1],
            ];
            for values in &rows {
                let info = &table.info;
                let cols = info.public_columns();
                let want_check = check_values(info, &cols, values).map_err(|e| e.to_string());
                let got_check = table.layout.check(info, values).map_err(|e| e.to_string());
                assert_eq!(got_check, want_check, "{} {values:?}", spec.name);
                if want_check.is_err() {
                    continue;
                }
                assert_eq!(
                    table.layout.handle(info, values).unwrap(),
                    handle_of(info, values).unwrap(),
                    "{}",
                    spec.name
                );
                let want = encode_value(info, values).unwrap();
                for capacity in [0, 3, want.len(), 4096] {
                    let got = table.layout.encode(info, values, capacity).unwrap();
                    assert_eq!(got, want, "{} {values:?} {capacity}", spec.name);
                    assert_eq!(got.capacity(), got.len(), "exactly sized");
                }
            }
        }
    }

    /// One buffer operation: write `(key, op, value)`, or read `key`.
    #[derive(Debug, Clone)]
    enum BufStep {
        Set(Vec<u8>, bool, Vec<u8>),
        Get(Vec<u8>),
    }

    fn buf_step() -> impl Strategy<Value = BufStep> {
        // Few distinct keys of varied lengths (prefixes of each other too), so that repeats,
        // appends, inserts below the first key and in the middle all happen.
        let key = prop::collection::vec(0u8..4, 0..4);
        prop_oneof![
            3 => (key.clone(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..3))
                .prop_map(|(k, put, v)| BufStep::Set(k, put, v)),
            1 => key.prop_map(BufStep::Get),
        ]
    }

    /// Row operations on the two tables of [`dml_tidb`] (`t` picks the table, `h` the row).
    #[derive(Debug, Clone)]
    enum RowStep {
        Insert {
            t: usize,
            h: i64,
            k: i64,
            s: Option<u8>,
        },
        Update {
            t: usize,
            h: i64,
            new_h: i64,
            k: i64,
            s: Option<u8>,
        },
        Delete {
            t: usize,
            h: i64,
        },
        Get {
            t: usize,
            h: i64,
        },
    }

    fn row_step() -> impl Strategy<Value = RowStep> {
        let t = 0usize..2;
        let h = 0i64..10;
        let s = prop::option::of(0u8..3);
        prop_oneof![
            3 => (t.clone(), h.clone(), 0i64..3, s.clone())
                .prop_map(|(t, h, k, s)| RowStep::Insert { t, h, k, s }),
            // Mostly in place; sometimes moving the row to another key.
            2 => (t.clone(), h.clone(), prop::option::weighted(0.2, h.clone()), 0i64..3, s)
                .prop_map(|(t, h, nh, k, s)| RowStep::Update {
                    t, h, new_h: nh.unwrap_or(h), k, s
                }),
            1 => (t.clone(), h.clone()).prop_map(|(t, h)| RowStep::Delete { t, h }),
            2 => (t, h).prop_map(|(t, h)| RowStep::Get { t, h }),
        ]
    }

    /// A TiDB with an int-handle table (non-unique index on `k`, unique index on the nullable
    /// `s`) and a clustered-key table (index on `k`), rows 0..4 of both committed.
    fn dml_tidb() -> (Tidb, [Table; 2]) {
        let t = tidb();
        t.create_database("d").unwrap();
        let int_pk = TableSpec::new(
            "int_pk",
            vec![
                ColumnSpec::new("id", types::bigint()).not_null(),
                ColumnSpec::new("k", types::bigint()),
                ColumnSpec::new("s", types::varchar(8)),
            ],
        )
        .primary_key(PrimaryKey::IntHandle("id".into()))
        .index(IndexSpec::new("k_1", &["k"]))
        .index(IndexSpec::unique("s_1", &["s"]));
        let clustered = TableSpec::new(
            "clustered",
            vec![
                ColumnSpec::new("a", types::varchar(8)).not_null(),
                ColumnSpec::new("k", types::bigint()),
            ],
        )
        .primary_key(PrimaryKey::Clustered(vec!["a".into()]))
        .index(IndexSpec::new("k_1", &["k"]));
        t.create_table("d", &int_pk).unwrap();
        t.create_table("d", &clustered).unwrap();
        let tables = [
            t.table("d", "int_pk").unwrap(),
            t.table("d", "clustered").unwrap(),
        ];
        let mut txn = t.begin();
        for (i, table) in tables.iter().enumerate() {
            for h in 0..4 {
                txn.insert(table, row_values(i, h, h % 3, Some(h as u8)))
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        (t, tables)
    }

    fn row_values(t: usize, h: i64, k: i64, s: Option<u8>) -> Vec<Datum> {
        match t {
            0 => vec![
                Datum::Int(h),
                Datum::Int(k),
                s.map_or(Datum::Null, |s| Datum::Bytes(vec![b'a' + s])),
            ],
            _ => vec![Datum::Bytes(format!("r{h}").into_bytes()), Datum::Int(k)],
        }
    }

    /// The handle of row `h` of table `t` (as [`row_values`] builds it).
    fn row_handle(table: &Table, t: usize, h: i64) -> Handle {
        handle_of(&table.info, &row_values(t, h, 0, None))
            .unwrap()
            .unwrap()
    }

    /// The reference transaction: a plain ordered map of the buffered writes, filled through
    /// the per-row derivations (`handle_of`, `encode_value`, `index_entry`), over the committed
    /// rows it was started on.
    struct Model {
        committed: BTreeMap<Vec<u8>, Vec<u8>>,
        buf: BTreeMap<Vec<u8>, (Op, Vec<u8>)>,
        rows: Vec<ModelRow>,
    }

    /// A [`RowWrite`]'s kind, key, handle and values.
    type ModelRow = (RowKind, Vec<u8>, Handle, Option<Vec<Datum>>);

    impl Model {
        fn get(&self, table: &Table, handle: &Handle) -> Option<Vec<Datum>> {
            let key = tablecodec::encode_row_key(table.id(), handle);
            let value = match self.buf.get(&key) {
                Some((Op::Delete, _)) => return None,
                Some((_, v)) => v,
                None => self.committed.get(&key)?,
            };
            Some(decode::decode_row(&table.info, &key, value).unwrap())
        }

        fn index_keys(
            &self,
            table: &Table,
            handle: &Handle,
            values: &[Datum],
        ) -> Vec<(Vec<u8>, Vec<u8>)> {
            maintained_indexes(&table.info)
                .map(|ix| index_entry(&table.info, ix, handle, values).unwrap())
                .collect()
        }

        fn insert(&mut self, table: &Table, values: Vec<Datum>) {
            let handle = handle_of(&table.info, &values).unwrap().unwrap();
            self.put_row(table, &handle, values, None, RowKind::Insert);
        }

        fn put_row(
            &mut self,
            table: &Table,
            handle: &Handle,
            values: Vec<Datum>,
            old: Option<Vec<Datum>>,
            kind: RowKind,
        ) {
            let key = tablecodec::encode_row_key(table.id(), handle);
            if let Some(old) = old {
                for (k, _) in self.index_keys(table, handle, &old) {
                    self.buf.insert(k, (Op::Delete, Vec::new()));
                }
            }
            let value = encode_value(&table.info, &values).unwrap();
            self.buf.insert(key.clone(), (Op::Put, value));
            for (k, v) in self.index_keys(table, handle, &values) {
                self.buf.insert(k, (Op::Put, v));
            }
            self.rows.push((kind, key, handle.clone(), Some(values)));
        }

        fn update(&mut self, table: &Table, handle: &Handle, values: Vec<Datum>) -> bool {
            let Some(old) = self.get(table, handle) else {
                return false;
            };
            let new_handle = handle_of(&table.info, &values).unwrap().unwrap();
            if new_handle != *handle {
                self.delete(table, handle);
                self.insert(table, values);
            } else {
                self.put_row(table, handle, values, Some(old), RowKind::Update);
            }
            true
        }

        fn delete(&mut self, table: &Table, handle: &Handle) -> bool {
            let Some(old) = self.get(table, handle) else {
                return false;
            };
            for (k, _) in self.index_keys(table, handle, &old) {
                self.buf.insert(k, (Op::Delete, Vec::new()));
            }
            let key = tablecodec::encode_row_key(table.id(), handle);
            self.buf.insert(key.clone(), (Op::Delete, Vec::new()));
            self.rows.push((RowKind::Delete, key, handle.clone(), None));
            true
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The write buffer holds exactly the last write of every key, reads it back, and
        /// yields the mutations in key order, whatever order the keys come in.
        #[test]
        fn write_buffer_matches_ordered_map(steps in prop::collection::vec(buf_step(), 0..60)) {
            let mut buf = WriteBuffer::default();
            let mut model: BTreeMap<Vec<u8>, (Op, Vec<u8>)> = BTreeMap::new();
            for step in steps {
                match step {
                    BufStep::Set(k, put, v) => {
                        let op = if put { Op::Put } else { Op::Delete };
                        buf.set(k.clone(), op, v.clone());
                        model.insert(k, (op, v));
                    }
                    BufStep::Get(k) => {
                        let want = model.get(&k).map(|(op, v)| (*op, v.as_slice()));
                        prop_assert_eq!(buf.get(&k), want);
                    }
                }
                prop_assert_eq!(buf.len(), model.len());
                prop_assert_eq!(buf.is_empty(), model.is_empty());
            }
            let want: Vec<Mutation> = model
                .into_iter()
                .map(|(key, (op, value))| Mutation { key, op, value })
                .collect();
            prop_assert_eq!(buf.into_mutations(), want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Random inserts, updates (some moving the row), deletes and reads on a transaction,
        /// over committed rows, with repeated and out-of-order handles and secondary indexes:
        /// the same reads, row writes and mutations (keys in order, ops, values) as the
        /// reference map.
        #[test]
        fn txn_matches_reference(steps in prop::collection::vec(row_step(), 0..40)) {
            let (tidb, tables) = dml_tidb();
            let mut txn = tidb.begin();
            let mut model = Model {
                committed: BTreeMap::new(),
                buf: BTreeMap::new(),
                rows: Vec::new(),
            };
            for (i, table) in tables.iter().enumerate() {
                for h in 0..4 {
                    let values = row_values(i, h, h % 3, Some(h as u8));
                    let handle = row_handle(table, i, h);
                    model.committed.insert(
                        tablecodec::encode_row_key(table.id(), &handle),
                        encode_value(&table.info, &values).unwrap(),
                    );
                }
            }
            for step in steps {
                match step {
                    RowStep::Insert { t, h, k, s } => {
                        let values = row_values(t, h, k, s);
                        let got = txn.insert(&tables[t], values.clone()).unwrap();
                        prop_assert_eq!(got, row_handle(&tables[t], t, h));
                        model.insert(&tables[t], values);
                    }
                    RowStep::Update { t, h, new_h, k, s } => {
                        let handle = row_handle(&tables[t], t, h);
                        let values = row_values(t, new_h, k, s);
                        let got = txn.update(&tables[t], &handle, values.clone()).unwrap();
                        prop_assert_eq!(got, model.update(&tables[t], &handle, values));
                    }
                    RowStep::Delete { t, h } => {
                        let handle = row_handle(&tables[t], t, h);
                        let got = txn.delete(&tables[t], &handle).unwrap();
                        prop_assert_eq!(got, model.delete(&tables[t], &handle));
                    }
                    RowStep::Get { t, h } => {
                        let handle = row_handle(&tables[t], t, h);
                        let got = txn.get(&tables[t], &handle).unwrap();
                        prop_assert_eq!(got, model.get(&tables[t], &handle));
                    }
                }
                prop_assert_eq!(txn.mutation_count(), model.buf.len());
            }
            let rows: Vec<_> = txn
                .rows
                .iter()
                .map(|r| (r.kind, r.key.clone(), r.handle.clone(), r.values.clone()))
                .collect();
            prop_assert_eq!(rows, model.rows);
            let want: Vec<Mutation> = model
                .buf
                .into_iter()
                .map(|(key, (op, value))| Mutation { key, op, value })
                .collect();
            prop_assert_eq!(std::mem::take(&mut txn.buf).into_mutations(), want);
        }
    }
}
