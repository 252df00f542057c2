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
    /// Buffered writes by key: (Put or Delete, value); the key is stored once.
    buf: BTreeMap<Vec<u8>, (Op, Vec<u8>)>,
    rows: Vec<RowWrite>,
    /// Row values are encoded here (reused across rows) and copied out at their exact size.
    scratch: Vec<u8>,
}

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

    /// [`encode_value`] through the layout, encoded in `scratch` (reused across rows) and
    /// returned as an exactly sized copy.
    fn encode(
        &self,
        info: &TableInfo,
        values: &[Datum],
        scratch: &mut Vec<u8>,
    ) -> Result<Vec<u8>, TidbError> {
        /// Rows of up to this many value columns list them on the stack.
        const INLINE: usize = 32;
        if values.len() != self.public.len() {
            return Err(invalid("row arity"));
        }
        // Unused slots hold a copy of the first column (never read).
        let filler = match self.value_cols.first() {
            Some(&(pos, id, _)) => (id, &values[pos], &info.cols[self.public[pos]].field_type),
            None => {
                scratch.clear();
                tidal_model::rowcodec::encode_row_v2_into(scratch, &[])?;
                return Ok(scratch.as_slice().to_vec());
            }
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
        scratch.clear();
        tidal_model::rowcodec::encode_row_v2_into(scratch, cols)?;
        Ok(scratch.as_slice().to_vec())
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
            buf: BTreeMap::new(),
            rows: Vec::new(),
            scratch: Vec::new(),
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
        match self.tables.get(&table.id()) {
            Some(info) if !Arc::ptr_eq(info, &table.info) => {
                Err(TidbError::SchemaChanged(table.name().to_owned()))
            }
            Some(_) => Ok(()),
            None => {
                self.tables.insert(table.id(), Arc::clone(&table.info));
                Ok(())
            }
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.buf.insert(key, (Op::Put, value));
    }

    fn del(&mut self, key: Vec<u8>) {
        self.buf.insert(key, (Op::Delete, Vec::new()));
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
        let value = table.layout.encode(info, values, &mut self.scratch)?;
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
        let value = match self.buf.get(&key) {
            Some((Op::Delete, _)) => return Ok(None),
            Some((_, v)) => Some(v.clone()),
            None => read_retry(|| self.tidb.store().get(&key, self.start_ts))?,
        };
        match value {
            None => Ok(None),
            Some(v) => Ok(Some(decode::decode_row(&table.info, &key, &v)?)),
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
            buf,
            rows,
            scratch: _,
        } = self;
        let cat = tidb.inner.catalog.read();
        for (id, info) in &tables {
            match cat.tables.get(id) {
                Some(e) if Arc::ptr_eq(&e.info, info) => {}
                _ => return Err(TidbError::SchemaChanged(info.name.O.clone())),
            }
        }
        let muts: Vec<Mutation> = buf
            .into_iter()
            .map(|(key, (op, value))| Mutation { key, op, value })
            .collect();
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
    use crate::tidb::{ColumnSpec, PrimaryKey, TableSpec};
    use crate::tso::Tso;

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
            let mut scratch = vec![9u8; 3];
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
                assert_eq!(
                    table.layout.encode(info, values, &mut scratch).unwrap(),
                    encode_value(info, values).unwrap(),
                    "{} {values:?}",
                    spec.name
                );
            }
        }
    }
}
