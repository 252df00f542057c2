//! The versioned catalog behind [`SchemaStore`].
//!
//! Every database, every logical table and every physical table id has its own history: a list
//! of `(commit ts, value)` entries sorted by ts, where `None` means "dropped at that ts". A
//! lookup at ts T takes the last entry at or below T. Keeping histories per object (instead of a
//! full catalog copy per DDL) makes a DDL cost proportional to what it touches, which matters for
//! clusters with tens of thousands of tables. Values are `Arc`s, so readers clone pointers only.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::RwLock;
use tidal_model::ddl::{ActionType, DdlEvent, DdlJob};
use tidal_model::schema::{CIStr, DBInfo, TableInfo};
use tidal_model::{CodecError, Ts, meta};

use super::SchemaError;
use super::filter::{TableFilter, is_system_schema};
use crate::snapshot::SnapshotReader;

/// One version of a table: its database and schema, and the commit ts of the DDL that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableVersion {
    /// The database the table belongs to (as of this version).
    pub db: Arc<DBInfo>,
    /// The table schema.
    pub info: Arc<TableInfo>,
    /// Commit ts of the DDL that produced this version; for tables read at bootstrap, the
    /// bootstrap ts.
    pub version_ts: Ts,
}

impl TableVersion {
    /// `db.table`, original case, for messages.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.db.db_name.O, self.info.name.O)
    }
}

/// The meta as read at one ts: the input of [`SchemaStore::from_snapshot`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SchemaSnapshot {
    /// The snapshot ts.
    pub ts: Ts,
    /// `SchemaVersionKey` at that ts (0 if absent).
    pub schema_version: i64,
    /// Every database with its tables.
    pub dbs: Vec<(DBInfo, Vec<TableInfo>)>,
}

impl SchemaSnapshot {
    /// Reads the meta keys at `ts`: `SchemaVersionKey`, hash `DBs`, then each `DB:<id>` hash's
    /// `Table:<id>` fields (auto-id fields are skipped). Fails with
    /// [`SnapshotError::LostByGc`](crate::snapshot::SnapshotError::LostByGc) below the physical
    /// GC safe point.
    pub async fn read(reader: &SnapshotReader, ts: Ts) -> Result<SchemaSnapshot, SchemaError> {
        reader.check_gc(ts).await?;
        let schema_version = match reader.get_meta_string(meta::SCHEMA_VERSION_KEY, ts).await? {
            Some(v) => parse_decimal(&v, "SchemaVersionKey")?,
            None => 0,
        };
        let mut dbs = Vec::new();
        for (field, value) in reader.scan_meta_hash(meta::DBS_KEY, ts).await? {
            let Some(db_id) = meta::parse_db_key(&field) else {
                continue;
            };
            let db = parse_db_info(&value)
                .map_err(|e| annotate(e, format!("DBInfo of database {db_id}")))?;
            let mut tables = Vec::new();
            for (tfield, tvalue) in reader.scan_meta_hash(&meta::db_key(db_id), ts).await? {
                let Some(table_id) = meta::parse_table_field(&tfield) else {
                    continue;
                };
                let info = TableInfo::from_json(&tvalue).map_err(|e| {
                    annotate(
                        e,
                        format!("TableInfo of table {table_id} in database {db_id}"),
                    )
                })?;
                tables.push(info);
            }
            dbs.push((db, tables));
        }
        // TiKV does not refuse reads below the safe point by itself: if GC passed `ts` while the
        // meta was being read, what was read may be partial. Check again afterwards.
        reader.check_gc(ts).await?;
        Ok(SchemaSnapshot {
            ts,
            schema_version,
            dbs,
        })
    }
}

fn annotate(e: CodecError, context: String) -> CodecError {
    CodecError::invalid("schema meta", format!("{context}: {e}"))
}

fn parse_decimal(v: &[u8], what: &str) -> Result<i64, CodecError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .ok_or_else(|| {
            CodecError::invalid("schema meta", format!("{what} is not a decimal integer"))
        })
}

/// Parses a `DBInfo` JSON document.
///
/// The model crate parses `DBInfo` only as part of a job's `binlog`, and this crate does not
/// depend on a JSON library directly, so the document is wrapped into a minimal job.
pub(crate) fn parse_db_info(json: &[u8]) -> Result<DBInfo, CodecError> {
    let mut wrapped = Vec::with_capacity(json.len().saturating_add(32));
    wrapped.extend_from_slice(b"{\"binlog\":{\"DBInfo\":");
    wrapped.extend_from_slice(json);
    wrapped.extend_from_slice(b"}}");
    let job = DdlJob::from_json(&wrapped)
        .map_err(|e| CodecError::invalid("db info json", e.to_string()))?;
    job.binlog
        .and_then(|b| b.db_info)
        .ok_or_else(|| CodecError::invalid("db info json", "null"))
}

type History<T> = Vec<(Ts, Option<T>)>;

/// The value of a history at `ts`.
fn at<T>(h: &[(Ts, Option<T>)], ts: Ts) -> Option<&T> {
    let idx = h.partition_point(|(t, _)| *t <= ts);
    h.get(idx.checked_sub(1)?)?.1.as_ref()
}

/// The newest value of a history.
fn latest<T>(h: &[(Ts, Option<T>)]) -> Option<&T> {
    h.last()?.1.as_ref()
}

/// Appends `(ts, v)`; an entry at the same ts is replaced (one DDL touching an object twice).
fn push<T>(h: &mut History<T>, ts: Ts, v: Option<T>) {
    match h.last_mut() {
        Some(last) if last.0 == ts => last.1 = v,
        _ => h.push((ts, v)),
    }
}

/// Drops entries no lookup at or above `keep_from` needs. Returns true if the history is now
/// empty of information (a single "dropped" entry) and can be removed.
fn gc_history<T>(h: &mut History<T>, keep_from: Ts) -> bool {
    let idx = h.partition_point(|(t, _)| *t <= keep_from);
    if idx >= 2 {
        h.drain(..idx - 1);
    }
    matches!(h.as_slice(), [(t, None)] if *t <= keep_from)
}

#[derive(Debug, Default)]
struct State {
    bootstrap_ts: Ts,
    oldest_ts: Ts,
    resolved_ts: Ts,
    last_applied_ts: Ts,
    schema_version: i64,
    dbs: HashMap<i64, History<Arc<DBInfo>>>,
    tables: HashMap<i64, History<Arc<TableVersion>>>,
    physical: HashMap<i64, History<i64>>,
    events: VecDeque<DdlEvent>,
    applied_jobs: HashSet<i64>,
    job_table: Option<Arc<TableInfo>>,
}

impl State {
    fn db_latest(&self, id: i64) -> Option<Arc<DBInfo>> {
        self.dbs.get(&id).and_then(|h| latest(h)).cloned()
    }

    fn table_latest(&self, id: i64) -> Option<Arc<TableVersion>> {
        self.tables.get(&id).and_then(|h| latest(h)).cloned()
    }

    fn put_db(&mut self, info: DBInfo, ts: Ts) -> Arc<DBInfo> {
        let arc = Arc::new(info);
        push(
            self.dbs.entry(arc.id).or_default(),
            ts,
            Some(Arc::clone(&arc)),
        );
        arc
    }

    /// The database `db_id`, or a stand-in named `fallback_name` when the store does not know
    /// it (a job referring to a database created before a gap in the history).
    fn db_or_standin(&self, db_id: i64, fallback_name: &str) -> Arc<DBInfo> {
        self.db_latest(db_id).unwrap_or_else(|| {
            tracing::warn!(
                db_id,
                "DDL refers to a database the schema store does not know"
            );
            Arc::new(DBInfo {
                id: db_id,
                db_name: CIStr::new(fallback_name),
                ..DBInfo::default()
            })
        })
    }

    fn put_table(&mut self, db: Arc<DBInfo>, info: TableInfo, ts: Ts) {
        let id = info.id;
        let mut new_phys = info.physical_table_ids();
        if !new_phys.contains(&id) {
            new_phys.push(id);
        }
        let old_phys = self
            .table_latest(id)
            .map(|v| {
                let mut p = v.info.physical_table_ids();
                p.push(v.info.id);
                p
            })
            .unwrap_or_default();
        let version = Arc::new(TableVersion {
            db,
            info: Arc::new(info),
            version_ts: ts,
        });
        push(self.tables.entry(id).or_default(), ts, Some(version));
        for p in old_phys {
            if !new_phys.contains(&p) {
                self.unmap_physical(p, id, ts);
            }
        }
        for p in new_phys {
            let h = self.physical.entry(p).or_default();
            if latest(h) != Some(&id) {
                push(h, ts, Some(id));
            }
        }
    }

    /// Removes the mapping `physical → logical` unless another table took the id meanwhile.
    fn unmap_physical(&mut self, physical: i64, logical: i64, ts: Ts) {
        if let Some(h) = self.physical.get_mut(&physical)
            && latest(h) == Some(&logical)
        {
            push(h, ts, None);
        }
    }

    fn drop_table(&mut self, id: i64, ts: Ts) -> Option<Arc<TableVersion>> {
        let old = self.table_latest(id)?;
        push(self.tables.entry(id).or_default(), ts, None);
        let mut phys = old.info.physical_table_ids();
        phys.push(id);
        for p in phys {
            self.unmap_physical(p, id, ts);
        }
        Some(old)
    }

    fn live_tables_of_db(&self, db_id: i64) -> Vec<Arc<TableVersion>> {
        self.tables
            .values()
            .filter_map(|h| latest(h))
            .filter(|v| v.db.id == db_id)
            .cloned()
            .collect()
    }

    fn table_at(&self, physical_id: i64, ts: Ts) -> Option<Arc<TableVersion>> {
        let logical = *at(self.physical.get(&physical_id)?, ts)?;
        let v = at(self.tables.get(&logical)?, ts)?;
        v.info.owns_physical_id(physical_id).then(|| Arc::clone(v))
    }
}

/// The multi-version schema of one cluster. Cheap to clone; clones share the store, and all
/// methods take `&self` (reads under a read lock, DDL under a write lock).
#[derive(Debug, Clone, Default)]
pub struct SchemaStore {
    state: Arc<RwLock<State>>,
}

impl SchemaStore {
    /// Reads the schema at `ts` from the cluster ([`SchemaSnapshot::read`]) and builds a store
    /// whose history starts there. Works at any ts at or above the physical GC safe point;
    /// below it fails with "snapshot lost by GC".
    pub async fn bootstrap(reader: &SnapshotReader, ts: Ts) -> Result<SchemaStore, SchemaError> {
        let snap = SchemaSnapshot::read(reader, ts).await?;
        Ok(SchemaStore::from_snapshot(snap))
    }

    /// A store whose history starts with `snapshot`. Its resolved ts is the snapshot ts.
    pub fn from_snapshot(snapshot: SchemaSnapshot) -> SchemaStore {
        let ts = snapshot.ts;
        let mut st = State {
            bootstrap_ts: ts,
            oldest_ts: ts,
            resolved_ts: ts,
            last_applied_ts: ts,
            schema_version: snapshot.schema_version,
            ..State::default()
        };
        for (db, tables) in snapshot.dbs {
            let is_mysql = db.db_name.L == "mysql" || db.db_name.O.eq_ignore_ascii_case("mysql");
            let db = st.put_db(db, ts);
            for t in tables {
                if is_mysql
                    && (t.name.L == "tidb_ddl_job" || t.name.O.eq_ignore_ascii_case("tidb_ddl_job"))
                {
                    st.job_table = Some(Arc::new(t.clone()));
                }
                st.put_table(Arc::clone(&db), t, ts);
            }
        }
        SchemaStore {
            state: Arc::new(RwLock::new(st)),
        }
    }

    /// The ts the store was bootstrapped at; jobs at or below it are already in the snapshot.
    pub fn bootstrap_ts(&self) -> Ts {
        self.state.read().bootstrap_ts
    }

    /// The oldest ts the store answers for (the bootstrap ts, raised by [`SchemaStore::gc`]).
    pub fn oldest_ts(&self) -> Ts {
        self.state.read().oldest_ts
    }

    /// The schema is complete up to this ts: every DDL committed at or below it has been
    /// applied. Raised by [`SchemaStore::advance_resolved_ts`] (the [`DdlPuller`](super::DdlPuller)
    /// does it as the job table's resolved ts advances).
    pub fn resolved_ts(&self) -> Ts {
        self.state.read().resolved_ts
    }

    /// Declares the schema complete up to `ts` (never lowers it): the caller guarantees that
    /// every DDL committed at or below `ts` has been applied.
    pub fn advance_resolved_ts(&self, ts: Ts) {
        let mut st = self.state.write();
        if ts > st.resolved_ts {
            st.resolved_ts = ts;
        }
    }

    /// The schema version of the newest applied job (or of the bootstrap snapshot).
    pub fn schema_version(&self) -> i64 {
        self.state.read().schema_version
    }

    /// Commit ts of the last applied job (the bootstrap ts before any).
    pub fn last_applied_ts(&self) -> Ts {
        self.state.read().last_applied_ts
    }

    /// The `mysql.tidb_ddl_job` table as found (by name) in the bootstrap snapshot.
    pub fn ddl_job_table(&self) -> Option<Arc<TableInfo>> {
        self.state.read().job_table.clone()
    }

    /// The version of the table owning physical id `physical_table_id` (a table id, or a
    /// partition id of a partitioned table) in effect at `ts`; `None` if no table owned it then.
    ///
    /// The answer is only meaningful for `oldest_ts() <= ts <= resolved_ts()`; see
    /// [`SchemaStore::table_at_checked`] for a lookup that enforces it.
    pub fn table_at(&self, physical_table_id: i64, ts: Ts) -> Option<Arc<TableVersion>> {
        self.state.read().table_at(physical_table_id, ts)
    }

    /// [`SchemaStore::table_at`], failing with [`SchemaError::TooOld`] below `oldest_ts()`.
    /// (Above the resolved ts the answer may still change; callers that decode rows wait for
    /// the resolved ts to pass the row's commit ts.)
    pub fn table_at_checked(
        &self,
        physical_table_id: i64,
        ts: Ts,
    ) -> Result<Option<Arc<TableVersion>>, SchemaError> {
        let st = self.state.read();
        if ts < st.oldest_ts {
            return Err(SchemaError::TooOld {
                ts,
                oldest: st.oldest_ts,
            });
        }
        Ok(st.table_at(physical_table_id, ts))
    }

    /// The database with id `db_id` at `ts`.
    pub fn database_at(&self, db_id: i64, ts: Ts) -> Option<Arc<DBInfo>> {
        let st = self.state.read();
        at(st.dbs.get(&db_id)?, ts).cloned()
    }

    /// Every database alive at `ts`, by id.
    pub fn databases_at(&self, ts: Ts) -> Vec<Arc<DBInfo>> {
        let st = self.state.read();
        let mut out: Vec<Arc<DBInfo>> =
            st.dbs.values().filter_map(|h| at(h, ts)).cloned().collect();
        out.sort_by_key(|d| d.id);
        out
    }

    /// The base tables (no views, no sequences) alive at `ts` that `filter` selects, outside the
    /// system schemas, sorted by table id.
    pub fn tables_at(&self, ts: Ts, filter: &TableFilter) -> Vec<Arc<TableVersion>> {
        let st = self.state.read();
        let mut out: Vec<Arc<TableVersion>> = st
            .tables
            .values()
            .filter_map(|h| at(h, ts))
            .filter(|v| {
                v.info.is_base_table()
                    && !is_system_schema(&v.db.db_name.O)
                    && filter.matches(&v.db.db_name.O, &v.info.name.O)
            })
            .cloned()
            .collect();
        out.sort_by_key(|v| v.info.id);
        out
    }

    /// The table named `db`.`table` (case-insensitive) at `ts`.
    pub fn table_by_name_at(&self, db: &str, table: &str, ts: Ts) -> Option<Arc<TableVersion>> {
        let (db, table) = (db.to_lowercase(), table.to_lowercase());
        let st = self.state.read();
        st.tables
            .values()
            .filter_map(|h| at(h, ts))
            .find(|v| v.db.db_name.O.to_lowercase() == db && v.info.name.O.to_lowercase() == table)
            .cloned()
    }

    /// The DDL events with `from < commit_ts <= to`, in commit order.
    pub fn ddl_events_between(&self, from: Ts, to: Ts) -> Vec<DdlEvent> {
        let st = self.state.read();
        st.events
            .iter()
            .filter(|e| e.commit_ts > from && e.commit_ts <= to)
            .cloned()
            .collect()
    }

    /// Forgets versions no reader at or above `keep_from` can need: in every history, the
    /// newest entry at or below `keep_from` is kept and older ones dropped; DDL events at or
    /// below `keep_from` are dropped. Lookups below `keep_from` afterwards fail
    /// ([`SchemaStore::table_at_checked`]) or answer as of `keep_from`.
    pub fn gc(&self, keep_from: Ts) {
        let mut st = self.state.write();
        if keep_from <= st.oldest_ts {
            return;
        }
        st.oldest_ts = keep_from;
        st.dbs.retain(|_, h| !gc_history(h, keep_from));
        st.tables.retain(|_, h| !gc_history(h, keep_from));
        st.physical.retain(|_, h| !gc_history(h, keep_from));
        while st.events.front().is_some_and(|e| e.commit_ts <= keep_from) {
            st.events.pop_front();
        }
    }

    /// Number of versions held (databases, tables and id mappings), for metrics and tests.
    pub fn version_count(&self) -> usize {
        let st = self.state.read();
        st.dbs.values().map(Vec::len).sum::<usize>()
            + st.tables.values().map(Vec::len).sum::<usize>()
            + st.physical.values().map(Vec::len).sum::<usize>()
    }

    /// Applies a finished DDL job committed at `commit_ts` and returns its event, or `None` if
    /// the job was ignored: committed at or below the bootstrap ts (already in the snapshot) or
    /// already applied (same job id).
    ///
    /// Jobs must arrive in commit-ts order. The new version is built from the job's `binlog`:
    ///
    /// - create/drop/alter/recover database → `binlog.DBInfo` (a drop also drops its tables; a
    ///   recovered database gets back only the tables listed in `binlog.MultipleTableInfos`);
    /// - create table/view/sequence, recover table → `binlog.TableInfo` added;
    /// - `CREATE TABLES`, `RENAME TABLES` → `binlog.MultipleTableInfos`;
    /// - drop table/view/sequence → the table (and its partitions) dropped;
    /// - truncate table, and any job whose `TableInfo` has a new id (partitioning changes) → the
    ///   old id dropped, the new table added;
    /// - rename table → the new `TableInfo` in the job's (new) database;
    /// - exchange partition → the partitioned table replaced, the plain table given the
    ///   swapped-out partition's id;
    /// - everything else that carries a `TableInfo` (columns, indexes, partitions, options,
    ///   multi-schema changes, …) → the table's version replaced;
    /// - jobs without schema (placement policies, resource groups) → no change, event only;
    /// - `FLASHBACK CLUSTER` → [`SchemaError::NeedsReload`].
    pub fn apply_job(&self, job: &DdlJob, commit_ts: Ts) -> Result<Option<DdlEvent>, SchemaError> {
        let mut st = self.state.write();
        if commit_ts <= st.bootstrap_ts || st.applied_jobs.contains(&job.id) {
            return Ok(None);
        }
        if !job.state.is_done() && !job.state.is_synced() {
            return Err(SchemaError::JobNotDone {
                job_id: job.id,
                action: job.action_type,
                state: job.state.name(),
            });
        }
        if commit_ts < st.last_applied_ts {
            return Err(SchemaError::OutOfOrder {
                job_id: job.id,
                commit_ts,
                last_applied: st.last_applied_ts,
            });
        }
        if job.action_type == ActionType::FLASHBACK_CLUSTER {
            return Err(SchemaError::NeedsReload {
                job_id: job.id,
                action: job.action_type,
                commit_ts,
            });
        }
        let mut event = DdlEvent::from_job(job, commit_ts)?;
        let previous = st.table_latest(job.table_id);
        if let Some(prev) = &previous {
            event = event.with_previous(&prev.info);
            if event.action == ActionType::RENAME_TABLE {
                if event.old_schema_id.is_none() {
                    event.old_schema_id = Some(prev.db.id);
                }
                if event.old_schema_name.is_none() {
                    event.old_schema_name = Some(prev.db.db_name.O.clone());
                }
            }
        }
        apply_to_state(&mut st, job, commit_ts, previous)?;
        if event.schema_name.is_empty()
            && let Some(db) = st.db_latest(event.schema_id)
        {
            event.schema_name = db.db_name.O.clone();
        }
        st.applied_jobs.insert(job.id);
        st.last_applied_ts = commit_ts;
        if let Some(b) = &job.binlog
            && b.schema_version > st.schema_version
        {
            st.schema_version = b.schema_version;
        }
        st.events.push_back(event.clone());
        Ok(Some(event))
    }
}

fn missing(job: &DdlJob, what: &'static str) -> SchemaError {
    SchemaError::MissingSchema {
        job_id: job.id,
        action: job.action_type,
        what,
    }
}

fn apply_to_state(
    st: &mut State,
    job: &DdlJob,
    ts: Ts,
    previous: Option<Arc<TableVersion>>,
) -> Result<(), SchemaError> {
    let binlog = job.binlog.clone().unwrap_or_default();
    let action = job.action_type;
    match action {
        ActionType::CREATE_SCHEMA
        | ActionType::MODIFY_SCHEMA_CHARSET_AND_COLLATE
        | ActionType::MODIFY_SCHEMA_DEFAULT_PLACEMENT
        | ActionType::MODIFY_SCHEMA_READ_ONLY
        | ActionType::RECOVER_SCHEMA => {
            let db = binlog.db_info.ok_or_else(|| missing(job, "DBInfo"))?;
            let db = st.put_db(db, ts);
            // Tables keep pointing at their database's newest version.
            for v in st.live_tables_of_db(db.id) {
                st.put_table(Arc::clone(&db), (*v.info).clone(), ts);
            }
            for t in binlog.multiple_table_infos {
                st.put_table(Arc::clone(&db), t, ts);
            }
        }
        ActionType::DROP_SCHEMA => {
            let db_id = binlog.db_info.as_ref().map_or(job.schema_id, |d| d.id);
            for v in st.live_tables_of_db(db_id) {
                st.drop_table(v.info.id, ts);
            }
            push(st.dbs.entry(db_id).or_default(), ts, None);
        }
        ActionType::CREATE_TABLES => {
            let db = st.db_or_standin(job.schema_id, &job.schema_name);
            let mut tables = binlog.multiple_table_infos;
            if tables.is_empty() {
                tables.extend(binlog.table_info);
            }
            if tables.is_empty() {
                return Err(missing(job, "MultipleTableInfos"));
            }
            for t in tables {
                st.put_table(Arc::clone(&db), t, ts);
            }
        }
        ActionType::DROP_TABLE | ActionType::DROP_VIEW | ActionType::DROP_SEQUENCE => {
            if st.drop_table(job.table_id, ts).is_none() {
                tracing::warn!(
                    job_id = job.id,
                    table_id = job.table_id,
                    "drop of an unknown table"
                );
            }
        }
        ActionType::RENAME_TABLES => {
            let tables = binlog.multiple_table_infos;
            if tables.is_empty() {
                return Err(missing(job, "MultipleTableInfos"));
            }
            let new_schemas = rename_tables_new_schemas(job);
            for t in tables {
                let db_id = new_schemas
                    .iter()
                    .find(|(tid, _)| *tid == t.id)
                    .map(|(_, sid)| *sid)
                    .or_else(|| st.table_latest(t.id).map(|v| v.db.id))
                    .unwrap_or(job.schema_id);
                let db = st.db_or_standin(db_id, &job.schema_name);
                st.put_table(db, t, ts);
            }
        }
        ActionType::EXCHANGE_TABLE_PARTITION => {
            let pt = binlog.table_info.ok_or_else(|| missing(job, "TableInfo"))?;
            exchange_partition(st, job, pt, ts, previous);
        }
        _ => match binlog.table_info {
            Some(info) => {
                // The table's database: the job's schema for creates and renames (the new
                // database), else where the table lives now.
                let db_id = match action {
                    ActionType::CREATE_TABLE
                    | ActionType::CREATE_VIEW
                    | ActionType::CREATE_SEQUENCE
                    | ActionType::RECOVER_TABLE
                    | ActionType::RENAME_TABLE => job.schema_id,
                    _ => previous
                        .as_ref()
                        .map(|v| v.db.id)
                        .or_else(|| st.table_latest(info.id).map(|v| v.db.id))
                        .unwrap_or(job.schema_id),
                };
                let db = st.db_or_standin(db_id, &job.schema_name);
                // A new id (truncate, partitioning changes) retires the old one.
                if job.table_id != 0 && job.table_id != info.id {
                    st.drop_table(job.table_id, ts);
                }
                st.put_table(db, info, ts);
            }
            None => {
                if matches!(
                    action,
                    ActionType::CREATE_TABLE
                        | ActionType::CREATE_VIEW
                        | ActionType::CREATE_SEQUENCE
                        | ActionType::RECOVER_TABLE
                        | ActionType::TRUNCATE_TABLE
                        | ActionType::RENAME_TABLE
                ) {
                    return Err(missing(job, "TableInfo"));
                }
                if action == ActionType::CREATE_SCHEMA {
                    return Err(missing(job, "DBInfo"));
                }
            }
        },
    }
    Ok(())
}

/// `(table id, new schema id)` pairs of a `RENAME TABLES` job: job version 1 keeps
/// `[old_schema_ids, new_schema_ids, new_names, table_ids, old_schema_names, old_names]`,
/// version 2 an object with `rename_table_infos: [{table_id, new_schema_id, …}]`.
fn rename_tables_new_schemas(job: &DdlJob) -> Vec<(i64, i64)> {
    let Some(args) = &job.raw_args else {
        return Vec::new();
    };
    if let Some(a) = args.as_array() {
        let ids = |i: usize| -> Vec<i64> {
            a.get(i)
                .and_then(|v| v.as_array())
                .map(|v| v.iter().filter_map(|x| x.as_i64()).collect())
                .unwrap_or_default()
        };
        return ids(3).into_iter().zip(ids(1)).collect();
    }
    args.get("rename_table_infos")
        .and_then(|v| v.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|it| {
                    let t = it.get("table_id")?.as_i64()?;
                    let s = it.get("new_schema_id")?.as_i64()?;
                    Some((t, s))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `EXCHANGE PARTITION p WITH TABLE nt`: the binlog carries the partitioned table after the
/// swap (partition `p` now has nt's old id); the plain table takes over p's old id.
fn exchange_partition(
    st: &mut State,
    job: &DdlJob,
    pt: TableInfo,
    ts: Ts,
    previous_nt: Option<Arc<TableVersion>>,
) {
    let prev_pt = st.table_latest(pt.id);
    let new_parts = pt.physical_table_ids();
    let old_parts = prev_pt
        .as_ref()
        .map(|v| v.info.physical_table_ids())
        .unwrap_or_default();
    let swapped_out: Vec<i64> = old_parts
        .iter()
        .copied()
        .filter(|p| !new_parts.contains(p))
        .collect();
    let pt_db = prev_pt
        .as_ref()
        .map(|v| Arc::clone(&v.db))
        .unwrap_or_else(|| st.db_or_standin(job.schema_id, &job.schema_name));
    st.put_table(pt_db, pt, ts);
    let nt_id = job.table_id;
    let nt_prev = previous_nt.or_else(|| st.table_latest(nt_id));
    st.drop_table(nt_id, ts);
    match (nt_prev, swapped_out.as_slice()) {
        (Some(nt), [p]) => {
            let mut info = (*nt.info).clone();
            info.id = *p;
            st.put_table(Arc::clone(&nt.db), info, ts);
        }
        _ => tracing::warn!(
            job_id = job.id,
            "exchange partition: cannot tell which partition id the plain table received"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_model::ddl::{HistoryInfo, JobState};
    use tidal_model::schema::{ColumnInfo, PartitionDefinition, PartitionInfo, SchemaState};

    fn db(id: i64, name: &str) -> DBInfo {
        DBInfo {
            id,
            db_name: CIStr::new(name),
            state: SchemaState::PUBLIC,
            ..DBInfo::default()
        }
    }

    fn col(id: i64, name: &str) -> ColumnInfo {
        ColumnInfo {
            id,
            name: CIStr::new(name),
            offset: id - 1,
            state: SchemaState::PUBLIC,
            ..ColumnInfo::default()
        }
    }

    fn table(id: i64, name: &str, ncols: i64) -> TableInfo {
        TableInfo {
            id,
            name: CIStr::new(name),
            cols: (1..=ncols).map(|i| col(i, &format!("c{i}"))).collect(),
            state: SchemaState::PUBLIC,
            max_col_id: ncols,
            ..TableInfo::default()
        }
    }

    fn partitioned(id: i64, name: &str, parts: &[i64]) -> TableInfo {
        let mut t = table(id, name, 1);
        t.partition = Some(PartitionInfo {
            partition_type: 1,
            enable: true,
            definitions: parts
                .iter()
                .map(|p| PartitionDefinition {
                    id: *p,
                    name: CIStr::new(format!("p{p}")),
                    ..PartitionDefinition::default()
                })
                .collect(),
            ..PartitionInfo::default()
        });
        t
    }

    fn job(id: i64, action: ActionType, schema_id: i64, table_id: i64) -> DdlJob {
        DdlJob {
            id,
            action_type: action,
            schema_id,
            table_id,
            state: JobState::DONE,
            binlog: Some(HistoryInfo {
                schema_version: id,
                ..HistoryInfo::default()
            }),
            ..DdlJob::default()
        }
    }

    fn with_table(mut j: DdlJob, t: TableInfo) -> DdlJob {
        j.binlog.get_or_insert_with(HistoryInfo::default).table_info = Some(t);
        j
    }

    fn with_db(mut j: DdlJob, d: DBInfo) -> DdlJob {
        j.binlog.get_or_insert_with(HistoryInfo::default).db_info = Some(d);
        j
    }

    fn base_store() -> SchemaStore {
        let view = view(12, "v");
        SchemaStore::from_snapshot(SchemaSnapshot {
            ts: Ts(100),
            schema_version: 7,
            dbs: vec![
                (
                    db(1, "app"),
                    vec![table(10, "users", 2), table(11, "orders", 3), view],
                ),
                (db(2, "mysql"), vec![table(5, "tidb_ddl_job", 7)]),
                (db(3, "other"), vec![]),
            ],
        })
    }

    fn view(id: i64, name: &str) -> TableInfo {
        let mut v = table(id, name, 1);
        v.view = TableInfo::from_json(br#"{"view":{"view_select":"select 1"}}"#)
            .unwrap()
            .view;
        assert!(v.is_view());
        v
    }

    fn names(v: &[Arc<TableVersion>]) -> Vec<String> {
        v.iter().map(|t| t.qualified_name()).collect()
    }

    #[test]
    fn snapshot_lookups() {
        let s = base_store();
        assert_eq!(s.bootstrap_ts(), Ts(100));
        assert_eq!(s.resolved_ts(), Ts(100));
        assert_eq!(s.schema_version(), 7);
        let t = s.table_at(10, Ts(100)).unwrap();
        assert_eq!(t.qualified_name(), "app.users");
        assert_eq!(t.version_ts, Ts(100));
        assert_eq!(t.info.cols.len(), 2);
        assert!(s.table_at(10, Ts(99)).is_none());
        assert!(s.table_at(999, Ts(100)).is_none());
        assert_eq!(s.ddl_job_table().map(|t| t.id), Some(5));
        // Views and system schemas are not replicated tables.
        let all = s.tables_at(Ts(200), &TableFilter::all());
        assert_eq!(names(&all), vec!["app.users", "app.orders"]);
        let only = s.tables_at(Ts(200), &TableFilter::new(&["*.*", "!app.users"]).unwrap());
        assert_eq!(names(&only), vec!["app.orders"]);
        assert_eq!(s.databases_at(Ts(100)).len(), 3);
        assert_eq!(
            s.table_by_name_at("APP", "Orders", Ts(100))
                .map(|t| t.info.id),
            Some(11)
        );
        assert_eq!(
            s.table_at_checked(10, Ts(50)),
            Err(SchemaError::TooOld {
                ts: Ts(50),
                oldest: Ts(100)
            })
        );
    }

    #[test]
    fn table_lifecycle() {
        let s = base_store();
        // create at 110
        let ev = s
            .apply_job(
                &with_table(job(20, ActionType::CREATE_TABLE, 1, 20), table(20, "t", 1)),
                Ts(110),
            )
            .unwrap()
            .unwrap();
        assert_eq!(ev.table_name, "t");
        assert_eq!(ev.schema_name, "app");
        // add column at 120
        s.apply_job(
            &with_table(job(21, ActionType::ADD_COLUMN, 1, 20), table(20, "t", 2)),
            Ts(120),
        )
        .unwrap();
        // truncate at 130: new id 30
        let ev = s
            .apply_job(
                &with_table(
                    job(22, ActionType::TRUNCATE_TABLE, 1, 20),
                    table(30, "t", 2),
                ),
                Ts(130),
            )
            .unwrap()
            .unwrap();
        assert_eq!(ev.old_table_id, Some(20));
        assert!(ev.old_physical_table_ids.contains(&20));
        // rename to other.t2 at 140
        let ev = s
            .apply_job(
                &with_table(job(23, ActionType::RENAME_TABLE, 3, 30), table(30, "t2", 2)),
                Ts(140),
            )
            .unwrap()
            .unwrap();
        assert_eq!(ev.old_table_name.as_deref(), Some("t"));
        assert_eq!(ev.old_schema_name.as_deref(), Some("app"));
        assert_eq!(ev.old_schema_id, Some(1));
        assert_eq!(ev.schema_name, "other");
        // drop at 150
        s.apply_job(&job(24, ActionType::DROP_TABLE, 3, 30), Ts(150))
            .unwrap();

        assert!(s.table_at(20, Ts(109)).is_none());
        assert_eq!(s.table_at(20, Ts(110)).unwrap().info.cols.len(), 1);
        assert_eq!(s.table_at(20, Ts(119)).unwrap().info.cols.len(), 1);
        let v = s.table_at(20, Ts(125)).unwrap();
        assert_eq!((v.info.cols.len(), v.version_ts), (2, Ts(120)));
        assert!(s.table_at(20, Ts(130)).is_none());
        assert!(s.table_at(30, Ts(129)).is_none());
        assert_eq!(s.table_at(30, Ts(135)).unwrap().qualified_name(), "app.t");
        assert_eq!(
            s.table_at(30, Ts(145)).unwrap().qualified_name(),
            "other.t2"
        );
        assert!(s.table_at(30, Ts(150)).is_none());
        assert_eq!(
            names(&s.tables_at(Ts(145), &TableFilter::all())),
            vec!["app.users", "app.orders", "other.t2"]
        );
        let evs = s.ddl_events_between(Ts(110), Ts(140));
        assert_eq!(
            evs.iter().map(|e| e.job_id).collect::<Vec<_>>(),
            vec![21, 22, 23]
        );
        assert_eq!(s.last_applied_ts(), Ts(150));
        assert_eq!(s.schema_version(), 24);
    }

    #[test]
    fn ignored_and_rejected_jobs() {
        let s = base_store();
        let create = with_table(job(20, ActionType::CREATE_TABLE, 1, 20), table(20, "t", 1));
        // At or below the bootstrap ts: already in the snapshot.
        assert_eq!(s.apply_job(&create, Ts(100)).unwrap(), None);
        assert!(s.table_at(20, Ts(200)).is_none());
        assert!(s.apply_job(&create, Ts(110)).unwrap().is_some());
        // Duplicate job id.
        assert_eq!(s.apply_job(&create, Ts(120)).unwrap(), None);
        // Out of order.
        let late = job(21, ActionType::DROP_TABLE, 1, 20);
        assert!(matches!(
            s.apply_job(&late, Ts(105)),
            Err(SchemaError::OutOfOrder { job_id: 21, .. })
        ));
        // Not done.
        let mut running = job(22, ActionType::DROP_TABLE, 1, 20);
        running.state = JobState::RUNNING;
        assert!(matches!(
            s.apply_job(&running, Ts(130)),
            Err(SchemaError::JobNotDone { job_id: 22, .. })
        ));
        // Missing schema.
        assert!(matches!(
            s.apply_job(&job(23, ActionType::CREATE_TABLE, 1, 40), Ts(130)),
            Err(SchemaError::MissingSchema {
                job_id: 23,
                what: "TableInfo",
                ..
            })
        ));
        assert!(matches!(
            s.apply_job(&job(24, ActionType::FLASHBACK_CLUSTER, 0, 0), Ts(130)),
            Err(SchemaError::NeedsReload { job_id: 24, .. })
        ));
        // A job without schema (placement policy) changes nothing but is an event.
        let ev = s
            .apply_job(&job(25, ActionType::CREATE_PLACEMENT_POLICY, 0, 0), Ts(140))
            .unwrap();
        assert!(ev.is_some());
        assert!(s.table_at(20, Ts(140)).is_some());
    }

    #[test]
    fn databases() {
        let s = base_store();
        s.apply_job(
            &with_db(job(20, ActionType::CREATE_SCHEMA, 40, 0), db(40, "new")),
            Ts(110),
        )
        .unwrap();
        s.apply_job(
            &with_table(job(21, ActionType::CREATE_TABLE, 40, 41), table(41, "a", 1)),
            Ts(120),
        )
        .unwrap();
        let mut renamed = db(40, "new");
        renamed.charset = "latin1".into();
        s.apply_job(
            &with_db(
                job(22, ActionType::MODIFY_SCHEMA_CHARSET_AND_COLLATE, 40, 0),
                renamed,
            ),
            Ts(130),
        )
        .unwrap();
        assert_eq!(s.table_at(41, Ts(125)).unwrap().db.charset, "");
        assert_eq!(s.table_at(41, Ts(135)).unwrap().db.charset, "latin1");
        let ev = s
            .apply_job(&job(23, ActionType::DROP_SCHEMA, 40, 0), Ts(140))
            .unwrap()
            .unwrap();
        assert!(ev.is_database_level());
        assert!(s.table_at(41, Ts(140)).is_none());
        assert!(s.database_at(40, Ts(140)).is_none());
        assert_eq!(s.database_at(40, Ts(115)).unwrap().db_name.O, "new");
        assert!(matches!(
            s.apply_job(&job(24, ActionType::CREATE_SCHEMA, 50, 0), Ts(150)),
            Err(SchemaError::MissingSchema { what: "DBInfo", .. })
        ));
        // CREATE TABLES
        let mut ct = job(25, ActionType::CREATE_TABLES, 1, 0);
        ct.binlog.as_mut().unwrap().multiple_table_infos =
            vec![table(60, "x", 1), table(61, "y", 1)];
        s.apply_job(&ct, Ts(160)).unwrap();
        assert_eq!(s.table_at(61, Ts(160)).unwrap().qualified_name(), "app.y");
    }

    #[test]
    fn partitions() {
        let s = base_store();
        s.apply_job(
            &with_table(
                job(20, ActionType::CREATE_TABLE, 1, 70),
                partitioned(70, "p", &[71, 72]),
            ),
            Ts(110),
        )
        .unwrap();
        assert_eq!(s.table_at(71, Ts(110)).unwrap().info.id, 70);
        assert_eq!(s.table_at(72, Ts(110)).unwrap().info.id, 70);
        // add partition 73
        s.apply_job(
            &with_table(
                job(21, ActionType::ADD_TABLE_PARTITION, 1, 70),
                partitioned(70, "p", &[71, 72, 73]),
            ),
            Ts(120),
        )
        .unwrap();
        assert!(s.table_at(73, Ts(115)).is_none());
        assert_eq!(s.table_at(73, Ts(120)).unwrap().info.id, 70);
        // truncate partition 71 → 74
        let ev = s
            .apply_job(
                &with_table(
                    job(22, ActionType::TRUNCATE_TABLE_PARTITION, 1, 70),
                    partitioned(70, "p", &[74, 72, 73]),
                ),
                Ts(130),
            )
            .unwrap()
            .unwrap();
        assert!(ev.old_physical_table_ids.contains(&71));
        assert!(s.table_at(71, Ts(130)).is_none());
        assert_eq!(s.table_at(71, Ts(129)).unwrap().info.id, 70);
        assert_eq!(s.table_at(74, Ts(130)).unwrap().info.id, 70);
        // exchange partition 72 with plain table 11 (app.orders): p gets 11, orders gets 72.
        let ex = with_table(
            job(23, ActionType::EXCHANGE_TABLE_PARTITION, 1, 11),
            partitioned(70, "p", &[74, 11, 73]),
        );
        s.apply_job(&ex, Ts(140)).unwrap();
        assert_eq!(s.table_at(11, Ts(140)).unwrap().info.id, 70);
        let orders = s.table_at(72, Ts(140)).unwrap();
        assert_eq!(
            (orders.info.id, orders.info.name.O.as_str()),
            (72, "orders")
        );
        assert_eq!(s.table_at(11, Ts(139)).unwrap().info.name.O, "orders");
        assert_eq!(s.table_at(72, Ts(139)).unwrap().info.id, 70);
        // drop the partitioned table: every partition goes.
        s.apply_job(&job(24, ActionType::DROP_TABLE, 1, 70), Ts(150))
            .unwrap();
        for p in [74, 11, 73] {
            assert!(s.table_at(p, Ts(150)).is_none(), "{p}");
        }
        assert_eq!(s.table_at(72, Ts(150)).unwrap().info.name.O, "orders");
    }

    #[test]
    fn rename_tables_moves_between_databases() {
        let s = base_store();
        let mut j = job(20, ActionType::RENAME_TABLES, 1, 0);
        j.raw_args = DdlJob::from_json(br#"{"raw_args":[[1,1],[3,1],[],[10,11]]}"#)
            .unwrap()
            .raw_args;
        j.binlog.as_mut().unwrap().multiple_table_infos =
            vec![table(10, "u2", 2), table(11, "o2", 3)];
        s.apply_job(&j, Ts(110)).unwrap();
        assert_eq!(
            s.table_at(10, Ts(110)).unwrap().qualified_name(),
            "other.u2"
        );
        assert_eq!(s.table_at(11, Ts(110)).unwrap().qualified_name(), "app.o2");
        // Version 2 arguments.
        let mut j = job(21, ActionType::RENAME_TABLES, 1, 0);
        j.raw_args = DdlJob::from_json(
            br#"{"raw_args":{"rename_table_infos":[{"table_id":10,"new_schema_id":1}]}}"#,
        )
        .unwrap()
        .raw_args;
        j.binlog.as_mut().unwrap().multiple_table_infos = vec![table(10, "u3", 2)];
        s.apply_job(&j, Ts(120)).unwrap();
        assert_eq!(s.table_at(10, Ts(120)).unwrap().qualified_name(), "app.u3");
    }

    #[test]
    fn gc_keeps_what_readers_need() {
        let s = base_store();
        for (i, ts) in [110u64, 120, 130, 140].iter().enumerate() {
            let n = i64::try_from(i).unwrap() + 2;
            s.apply_job(
                &with_table(
                    job(20 + n, ActionType::ADD_COLUMN, 1, 10),
                    table(10, "users", n + 1),
                ),
                Ts(*ts),
            )
            .unwrap();
        }
        s.apply_job(&job(40, ActionType::DROP_TABLE, 1, 11), Ts(150))
            .unwrap();
        let before = s.version_count();
        s.gc(Ts(135));
        assert!(s.version_count() < before);
        assert_eq!(s.oldest_ts(), Ts(135));
        // The newest version at or below 135 (made at 130) survives.
        assert_eq!(s.table_at(10, Ts(135)).unwrap().version_ts, Ts(130));
        assert_eq!(s.table_at(10, Ts(145)).unwrap().version_ts, Ts(140));
        assert_eq!(s.table_at(11, Ts(140)).unwrap().info.name.O, "orders");
        assert!(s.table_at_checked(10, Ts(120)).is_err());
        assert_eq!(s.ddl_events_between(Ts(0), Ts(200)).len(), 2);
        // Dropped tables disappear entirely once GC passes the drop.
        s.gc(Ts(160));
        assert!(s.table_at(11, Ts(160)).is_none());
        assert_eq!(s.table_at(10, Ts(160)).unwrap().version_ts, Ts(140));
        let st = s.state.read();
        assert!(!st.tables.contains_key(&11));
        assert_eq!(st.tables.get(&10).map(Vec::len), Some(1));
    }

    #[test]
    fn db_info_json() {
        let d = parse_db_info(
            br#"{"id":2,"db_name":{"O":"Shop","L":"shop"},"charset":"utf8mb4","state":5}"#,
        )
        .unwrap();
        assert_eq!(
            (d.id, d.db_name.O.as_str(), d.charset.as_str()),
            (2, "Shop", "utf8mb4")
        );
        assert!(parse_db_info(b"null").is_err());
        assert!(parse_db_info(b"{\"id\":").is_err());
        assert!(parse_db_info(b"}}{\"x\":{").is_err());
        assert_eq!(parse_decimal(b"42", "v").unwrap(), 42);
        assert!(parse_decimal(b"4x", "v").is_err());
    }

    #[test]
    fn concurrent_readers() {
        let s = base_store();
        let reader = s.clone();
        let handle = std::thread::spawn(move || {
            let mut seen = 0;
            for _ in 0..2000 {
                if reader.table_at(10, Ts(1000)).is_some() {
                    seen += 1;
                }
            }
            seen
        });
        for i in 0..50i64 {
            s.apply_job(
                &with_table(
                    job(100 + i, ActionType::ADD_COLUMN, 1, 10),
                    table(10, "users", 3 + i),
                ),
                Ts(200 + u64::try_from(i).unwrap()),
            )
            .unwrap();
        }
        assert_eq!(handle.join().unwrap(), 2000);
        assert_eq!(s.table_at(10, Ts(1000)).unwrap().info.cols.len(), 52);
    }
}
