//! A TiDB stand-in: writes schema, DDL jobs and rows into the sim's MVCC store exactly as TiDB
//! lays them out, so that everything reading the store — CDC, snapshot readers, Tidal's schema
//! store — sees what it would see on a real cluster.
//!
//! Why a typed API and not SQL: the point is the bytes TiDB writes, not the SQL front end. The
//! caller says *create this table*, *insert these values*; this module produces
//!
//! - the meta keys (`NextGlobalID`, `SchemaVersionKey`, `Diff:<v>`, hashes `DBs` and `DB:<id>`)
//!   holding TiDB's DBInfo/TableInfo JSON, bumped through the same schema states TiDB walks
//!   (an added column goes delete-only → write-only → write-reorg → public, one schema version
//!   each);
//! - the job rows of `mysql.tidb_ddl_job` (queueing, running…, done — the done row committed in
//!   the same transaction as the final schema change and carrying the new schema in its
//!   `binlog` — and finally the row's deletion), with the SQL text a MySQL sink replays;
//! - the row keys and row-format-v2 values of DML, plus index keys, committed by two-phase
//!   commit (prewrite with a primary, then commit at a fresh TSO) or 1PC;
//! - a region split at every new table's prefix, as TiDB's `split-table` does.
//!
//! An in-memory catalog mirrors the meta for fast DML. DDL holds the catalog's write lock for
//! its whole run and DML holds the read lock from its schema check to its commit, so no DML
//! transaction commits rows encoded with a schema that a DDL replaced meanwhile (TiDB gets the
//! same guarantee from schema leases and metadata locks; a stale transaction fails with
//! [`TidbError::SchemaChanged`] and is retried).

pub mod ddl;
pub mod dml;
pub mod schema;
pub mod spec;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tidal_model::codec::bytes::encode_key;
use tidal_model::schema::{CIStr, ColumnInfo, DBInfo, FieldType, SchemaState, TableInfo};
use tidal_model::{CodecError, meta, mysql, tablecodec};

use crate::mvcc::{Mutation, MvccStore, ReadError, TxnError};
use crate::region::RegionManager;
use crate::tso::Tso;

pub use ddl::DdlOutcome;
pub use dml::{CommitInfo, CommitOptions, RowKind, RowWrite, Txn};
pub use schema::SchemaSnapshot;
pub use spec::{ColumnSpec, IndexSpec, PrimaryKey, TableSpec};

/// The first id handed to user objects (TiDB reserves the low ids for its bootstrap tables).
pub const FIRST_USER_ID: i64 = 100;

/// Mutations per prewrite/commit request: a large transaction is sent in batches, primary
/// first, as TiDB's committer does.
const TXN_BATCH: usize = 4096;

/// How long a snapshot read waits for a lock in its way before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Why a TiDB operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TidbError {
    /// A transactional write was refused (lock or write conflict); nothing was applied.
    #[error("transaction failed: {0}")]
    Txn(#[from] TxnError),
    /// A snapshot read failed.
    #[error("read failed: {0}")]
    Read(#[from] ReadError),
    /// A value did not fit its column, or stored bytes did not decode.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// JSON (de)serialization of schema or job documents failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// No such database.
    #[error("unknown database {0}")]
    UnknownDatabase(String),
    /// No such table.
    #[error("unknown table {0}.{1}")]
    UnknownTable(String, String),
    /// A database or table of that name exists already.
    #[error("{0} already exists")]
    Exists(String),
    /// A table this transaction wrote was changed by a DDL before the commit (TiDB's
    /// "information schema is changed"); retry the transaction.
    #[error("schema of table {0} changed during the transaction")]
    SchemaChanged(String),
    /// The request itself is invalid (bad spec, NOT NULL violated, unsupported change).
    #[error("invalid: {0}")]
    Invalid(String),
}

impl TidbError {
    /// True for errors a retry of the whole transaction may cure (locks, write conflicts,
    /// schema changes).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TidbError::Txn(TxnError::Locked(_) | TxnError::WriteConflict { .. })
                | TidbError::Read(ReadError::Locked(_))
                | TidbError::SchemaChanged(_)
        )
    }
}

/// How the stand-in behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TidbConfig {
    /// Split a region at every new table's prefix (TiDB's `split-table`, on by default).
    pub split_tables: bool,
    /// Delete a job's row from `tidb_ddl_job` once it is done (and write it to the
    /// `DDLJobHistory` meta hash), as TiDB does after the schema version is synced.
    pub delete_finished_jobs: bool,
}

impl Default for TidbConfig {
    fn default() -> Self {
        Self {
            split_tables: true,
            delete_finished_jobs: true,
        }
    }
}

/// A table as DML sees it: its database, its schema at the time it was looked up, and its
/// `_tidb_rowid` allocator.
#[derive(Debug, Clone)]
pub struct Table {
    /// Database name.
    pub db: String,
    /// Database id.
    pub db_id: i64,
    /// The schema.
    pub info: Arc<TableInfo>,
    row_id: Arc<AtomicI64>,
    /// The row layout DML derives from `info`.
    layout: Arc<dml::RowLayout>,
    /// Database and table name, shared by every [`RowWrite`](dml::RowWrite) of the table.
    names: (Arc<str>, Arc<str>),
}

impl Table {
    /// Table id.
    pub fn id(&self) -> i64 {
        self.info.id
    }

    /// Table name.
    pub fn name(&self) -> &str {
        &self.info.name.O
    }

    /// The public columns, in row order (values passed to DML follow this order).
    pub fn columns(&self) -> Vec<&ColumnInfo> {
        self.info.public_columns()
    }

    fn alloc_row_id(&self) -> i64 {
        self.row_id.fetch_add(1, Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
struct TableEntry {
    db_id: i64,
    info: Arc<TableInfo>,
    row_id: Arc<AtomicI64>,
    layout: Arc<dml::RowLayout>,
}

/// The in-memory mirror of the meta keys.
#[derive(Debug, Default)]
struct Catalog {
    dbs: HashMap<i64, DBInfo>,
    db_ids: HashMap<String, i64>,
    tables: HashMap<i64, TableEntry>,
    table_ids: HashMap<(i64, String), i64>,
    next_global_id: i64,
    schema_version: i64,
}

impl Catalog {
    fn alloc_ids(&mut self, n: i64) -> i64 {
        let first = self.next_global_id + 1;
        self.next_global_id += n;
        first
    }

    fn db_id(&self, name: &str) -> Result<i64, TidbError> {
        self.db_ids
            .get(&name.to_lowercase())
            .copied()
            .ok_or_else(|| TidbError::UnknownDatabase(name.to_owned()))
    }

    fn db_name(&self, id: i64) -> String {
        self.dbs
            .get(&id)
            .map(|d| d.db_name.O.clone())
            .unwrap_or_default()
    }

    fn table_id(&self, db: &str, name: &str) -> Result<(i64, i64), TidbError> {
        let db_id = self.db_id(db)?;
        let id = self
            .table_ids
            .get(&(db_id, name.to_lowercase()))
            .copied()
            .ok_or_else(|| TidbError::UnknownTable(db.to_owned(), name.to_owned()))?;
        Ok((db_id, id))
    }

    fn entry(&self, id: i64) -> Result<&TableEntry, TidbError> {
        self.tables
            .get(&id)
            .ok_or_else(|| TidbError::UnknownTable(String::new(), id.to_string()))
    }

    fn table(&self, id: i64) -> Result<Table, TidbError> {
        let e = self.entry(id)?;
        let db = self.db_name(e.db_id);
        Ok(Table {
            names: (Arc::from(db.as_str()), Arc::from(e.info.name.O.as_str())),
            db,
            db_id: e.db_id,
            info: Arc::clone(&e.info),
            row_id: Arc::clone(&e.row_id),
            layout: Arc::clone(&e.layout),
        })
    }

    fn put_db(&mut self, info: DBInfo) {
        if let Some(old) = self.dbs.get(&info.id) {
            self.db_ids.remove(&old.db_name.L);
        }
        self.db_ids.insert(info.db_name.L.clone(), info.id);
        self.dbs.insert(info.id, info);
    }

    fn drop_db(&mut self, id: i64) {
        if let Some(old) = self.dbs.remove(&id) {
            self.db_ids.remove(&old.db_name.L);
        }
        let ids: Vec<i64> = self
            .tables
            .iter()
            .filter(|(_, e)| e.db_id == id)
            .map(|(t, _)| *t)
            .collect();
        for t in ids {
            self.drop_table(t);
        }
    }

    fn put_table(&mut self, db_id: i64, info: TableInfo, first_row_id: i64) {
        let row_id = match self.tables.get(&info.id) {
            Some(old) => {
                self.table_ids.remove(&(old.db_id, old.info.name.L.clone()));
                Arc::clone(&old.row_id)
            }
            None => Arc::new(AtomicI64::new(first_row_id)),
        };
        self.table_ids.insert((db_id, info.name.L.clone()), info.id);
        self.tables.insert(
            info.id,
            TableEntry {
                db_id,
                layout: Arc::new(dml::RowLayout::new(&info)),
                info: Arc::new(info),
                row_id,
            },
        );
    }

    fn drop_table(&mut self, id: i64) {
        if let Some(old) = self.tables.remove(&id) {
            self.table_ids.remove(&(old.db_id, old.info.name.L.clone()));
        }
    }
}

struct Inner {
    store: MvccStore,
    tso: Tso,
    regions: RegionManager,
    cfg: TidbConfig,
    catalog: RwLock<Catalog>,
    /// Serializes DDL jobs (TiDB's DDL owner runs one job per table at a time; one at a time
    /// overall keeps the schema versions strictly sequential here).
    ddl: Mutex<()>,
}

/// The TiDB stand-in (cheap to clone; clones share state).
#[derive(Clone)]
pub struct Tidb {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tidb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cat = self.inner.catalog.read();
        f.debug_struct("Tidb")
            .field("schema_version", &cat.schema_version)
            .field("databases", &cat.dbs.len())
            .field("tables", &cat.tables.len())
            .finish()
    }
}

/// The `mysql` database.
fn mysql_db_info() -> DBInfo {
    DBInfo {
        id: tablecodec::MYSQL_DB_ID,
        db_name: CIStr::new("mysql"),
        charset: "utf8mb4".into(),
        collate: "utf8mb4_bin".into(),
        state: SchemaState::PUBLIC,
        ..DBInfo::default()
    }
}

fn ddl_job_column(id: i64, name: &str, mut ft: FieldType, not_null: bool) -> ColumnInfo {
    if not_null {
        ft.flag |= mysql::FLAG_NOT_NULL;
    }
    ColumnInfo {
        id,
        name: CIStr::new(name),
        offset: id - 1,
        field_type: ft,
        state: SchemaState::PUBLIC,
        version: 2,
        ..ColumnInfo::default()
    }
}

/// The TableInfo of `mysql.tidb_ddl_job` (wire.md §6.3): `job_id bigint not null primary key,
/// reorg int, schema_ids text, table_ids text, job_meta longblob, type int, processing int`.
pub fn ddl_job_table_info() -> TableInfo {
    let mut job_id = types::bigint();
    job_id.flag |= mysql::FLAG_PRI_KEY;
    let mut longblob = types::blob();
    longblob.tp = mysql::TYPE_LONG_BLOB;
    longblob.flen = 4_294_967_295;
    let cols = vec![
        ddl_job_column(1, "job_id", job_id, true),
        ddl_job_column(2, "reorg", types::int(), false),
        ddl_job_column(3, "schema_ids", types::text_type(), false),
        ddl_job_column(4, "table_ids", types::text_type(), false),
        ddl_job_column(5, "job_meta", longblob, false),
        ddl_job_column(6, "type", types::int(), false),
        ddl_job_column(7, "processing", types::int(), false),
    ];
    TableInfo {
        id: tablecodec::DDL_JOB_TABLE_ID,
        name: CIStr::new("tidb_ddl_job"),
        charset: "utf8mb4".into(),
        collate: "utf8mb4_bin".into(),
        cols,
        state: SchemaState::PUBLIC,
        pk_is_handle: true,
        max_col_id: 7,
        version: 5,
        ..TableInfo::default()
    }
}

/// A Put of string key `key` holding a decimal integer.
pub(crate) fn put_string_int(key: &[u8], v: i64) -> Mutation {
    Mutation::put(meta::string_key(key), v.to_string().into_bytes())
}

/// A Put of a hash field.
pub(crate) fn put_hash(key: &[u8], field: &[u8], value: Vec<u8>) -> Mutation {
    Mutation::put(meta::hash_field_key(key, field), value)
}

/// A Delete of a hash field.
pub(crate) fn delete_hash(key: &[u8], field: &[u8]) -> Mutation {
    Mutation::delete(meta::hash_field_key(key, field))
}

/// Runs a snapshot read, waiting out locks of transactions that are still committing.
pub(crate) fn read_retry<T>(mut f: impl FnMut() -> Result<T, ReadError>) -> Result<T, ReadError> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_micros(200);
    loop {
        match f() {
            Err(ReadError::Locked(l)) if Instant::now() < deadline => {
                let _ = l;
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The first key after every key starting with `prefix`.
pub fn prefix_next(prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xFF {
            out.push(last + 1);
            return out;
        }
    }
    Vec::new()
}

impl Tidb {
    /// A TiDB over `store`: bootstraps the meta (or loads it if the store already has one) with
    /// the default configuration.
    pub fn new(store: MvccStore, tso: Tso, regions: RegionManager) -> Result<Tidb, TidbError> {
        Self::with_config(store, tso, regions, TidbConfig::default())
    }

    /// [`Tidb::new`] with an explicit configuration.
    pub fn with_config(
        store: MvccStore,
        tso: Tso,
        regions: RegionManager,
        cfg: TidbConfig,
    ) -> Result<Tidb, TidbError> {
        let tidb = Tidb {
            inner: Arc::new(Inner {
                store,
                tso,
                regions,
                cfg,
                catalog: RwLock::new(Catalog::default()),
                ddl: Mutex::new(()),
            }),
        };
        let ts = tidb.inner.tso.next();
        let existing = read_retry(|| {
            tidb.inner
                .store
                .get(&meta::string_key(meta::SCHEMA_VERSION_KEY), ts)
        })?;
        if existing.is_some() {
            tidb.load(ts)?;
        } else {
            tidb.bootstrap()?;
        }
        Ok(tidb)
    }

    /// Writes the initial meta: the id allocator, schema version 1, and `mysql.tidb_ddl_job`.
    fn bootstrap(&self) -> Result<(), TidbError> {
        let mut cat = self.inner.catalog.write();
        let db = mysql_db_info();
        let job_table = ddl_job_table_info();
        let version = 1;
        let muts = vec![
            put_string_int(meta::NEXT_GLOBAL_ID_KEY, FIRST_USER_ID),
            put_string_int(meta::SCHEMA_VERSION_KEY, version),
            put_hash(
                meta::DBS_KEY,
                &meta::db_key(db.id),
                serde_json::to_vec(&db)?,
            ),
            put_hash(
                &meta::db_key(db.id),
                &meta::table_field(job_table.id),
                serde_json::to_vec(&job_table)?,
            ),
        ];
        let start_ts = self.inner.tso.next();
        self.commit_mutations(muts, start_ts, &CommitOptions::default())?;
        if self.inner.cfg.split_tables {
            self.split_table(job_table.id);
        }
        cat.next_global_id = FIRST_USER_ID;
        cat.schema_version = version;
        cat.put_db(db);
        cat.put_table(tablecodec::MYSQL_DB_ID, job_table, 1);
        Ok(())
    }

    /// Rebuilds the catalog from the meta at `ts`.
    fn load(&self, ts: u64) -> Result<(), TidbError> {
        let snap = SchemaSnapshot::read(&self.inner.store, ts)?;
        let mut cat = self.inner.catalog.write();
        cat.next_global_id = snap.next_global_id;
        cat.schema_version = snap.schema_version;
        for (db, tables) in snap.dbs {
            let db_id = db.id;
            cat.put_db(db);
            for t in tables {
                let next = self.last_row_handle(t.id, ts)?.saturating_add(1);
                cat.put_table(db_id, t, next.max(1));
            }
        }
        Ok(())
    }

    /// The largest int handle of a table at `ts` (0 if none), to resume `_tidb_rowid`.
    fn last_row_handle(&self, table_id: i64, ts: u64) -> Result<i64, TidbError> {
        let (start, end) = tablecodec::table_record_range(table_id);
        let items = read_retry(|| {
            self.inner
                .store
                .scan_with(&start, &end, ts, 1, true, &Default::default())
        })?;
        Ok(match items.first() {
            Some(Ok((key, _))) => match tablecodec::decode_row_key(key) {
                Ok((_, tablecodec::Handle::Int(h))) => h,
                _ => 0,
            },
            _ => 0,
        })
    }

    /// Splits the region containing the table's prefix there (ignored if it is a boundary).
    fn split_table(&self, table_id: i64) {
        let key = encode_key(&tablecodec::table_prefix(table_id));
        let _ = self.inner.regions.split(&key);
    }

    /// Prewrites and commits `muts` (the first is the primary) in batches, or one-phase
    /// commits them, or prewrites and rolls back. Returns the commit ts (`None` if rolled back).
    pub(crate) fn commit_mutations(
        &self,
        muts: Vec<Mutation>,
        start_ts: u64,
        opts: &CommitOptions,
    ) -> Result<Option<u64>, TidbError> {
        let store = &self.inner.store;
        if muts.is_empty() {
            return Ok(Some(start_ts));
        }
        if opts.one_pc && !opts.rollback {
            let tso = &self.inner.tso;
            let mut muts = muts;
            let commit_ts = store.one_pc_moving_values(&mut muts, start_ts, || tso.next())?;
            return Ok(Some(commit_ts));
        }
        let mut muts = muts;
        let primary = muts.first().map(|m| m.key.clone()).unwrap_or_default();
        let mut done = 0usize;
        for chunk in muts.chunks_mut(TXN_BATCH) {
            // The values move into the locks; the keys stay for the commit.
            if let Err(e) = store.prewrite_moving_values(chunk, &primary, start_ts) {
                if done > 0 {
                    let keys: Vec<Vec<u8>> = muts
                        .get(..done)
                        .unwrap_or_default()
                        .iter()
                        .map(|m| m.key.clone())
                        .collect();
                    let _ = store.rollback(&keys, start_ts);
                }
                return Err(e.into());
            }
            done += chunk.len();
        }
        if opts.rollback {
            let keys: Vec<Vec<u8>> = muts.into_iter().map(|m| m.key).collect();
            store.rollback(&keys, start_ts)?;
            return Ok(None);
        }
        let commit_ts = self.inner.tso.next();
        // The primary commits first: from then on the transaction is committed.
        store.commit(std::slice::from_ref(&primary), start_ts, commit_ts)?;
        if let Some(rest) = muts.get(1..) {
            for chunk in rest.chunks(TXN_BATCH) {
                store.commit_mutation_keys(chunk, start_ts, commit_ts)?;
            }
        }
        Ok(Some(commit_ts))
    }

    /// The MVCC store.
    pub fn store(&self) -> &MvccStore {
        &self.inner.store
    }

    /// The timestamp oracle.
    pub fn tso(&self) -> &Tso {
        &self.inner.tso
    }

    /// The region manager.
    pub fn regions(&self) -> &RegionManager {
        &self.inner.regions
    }

    /// The configuration.
    pub fn config(&self) -> &TidbConfig {
        &self.inner.cfg
    }

    /// The current schema version.
    pub fn schema_version(&self) -> i64 {
        self.inner.catalog.read().schema_version
    }

    /// A table by database and table name (case-insensitive).
    pub fn table(&self, db: &str, name: &str) -> Result<Table, TidbError> {
        let cat = self.inner.catalog.read();
        let (_, id) = cat.table_id(db, name)?;
        cat.table(id)
    }

    /// A table by id.
    pub fn table_by_id(&self, id: i64) -> Result<Table, TidbError> {
        self.inner.catalog.read().table(id)
    }

    /// The tables of a database, sorted by name.
    pub fn tables(&self, db: &str) -> Result<Vec<Table>, TidbError> {
        let cat = self.inner.catalog.read();
        let db_id = cat.db_id(db)?;
        let mut out = cat
            .tables
            .iter()
            .filter(|(_, e)| e.db_id == db_id)
            .map(|(id, _)| cat.table(*id))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.info.name.L.cmp(&b.info.name.L));
        Ok(out)
    }

    /// The databases, sorted by name (including `mysql`).
    pub fn databases(&self) -> Vec<DBInfo> {
        let cat = self.inner.catalog.read();
        let mut out: Vec<DBInfo> = cat.dbs.values().cloned().collect();
        out.sort_by(|a, b| a.db_name.L.cmp(&b.db_name.L));
        out
    }

    /// True if the database exists.
    pub fn has_database(&self, name: &str) -> bool {
        self.inner.catalog.read().db_id(name).is_ok()
    }

    /// Number of tables in the catalog (system tables included).
    pub fn table_count(&self) -> usize {
        self.inner.catalog.read().tables.len()
    }

    /// Starts a transaction at a fresh start ts.
    pub fn begin(&self) -> Txn {
        Txn::new(self.clone(), self.inner.tso.next())
    }

    /// Reads the schema (meta keys) at `ts` from the store.
    pub fn schema_at(&self, ts: u64) -> Result<SchemaSnapshot, TidbError> {
        SchemaSnapshot::read(&self.inner.store, ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_next_carries() {
        assert_eq!(prefix_next(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_next(&[1, 0xFF]), vec![2]);
        assert_eq!(prefix_next(&[0xFF, 0xFF]), Vec::<u8>::new());
    }

    #[test]
    fn ddl_job_table_shape() {
        let t = ddl_job_table_info();
        assert_eq!(t.id, 281_474_976_710_654);
        assert_eq!(t.column_by_name("job_meta").map(|c| c.id), Some(5));
        assert_eq!(
            t.pk_handle_column().map(|c| c.name.O.as_str()),
            Some("job_id")
        );
    }
}
