//! DDL: each statement becomes a TiDB DDL job that walks the schema states TiDB walks, writing
//! what TiDB writes at each step.
//!
//! A job is run as
//!
//! 1. a *submission* transaction: the job row in state queueing (and `NextGlobalID`, since the
//!    job allocated ids);
//! 2. one transaction per schema state: the meta change, `SchemaVersionKey` + 1, `Diff:<v>`,
//!    and the job row rewritten in state running with the reached `schema_state`. The LAST
//!    state's transaction writes the job row in state done with its `binlog` (schema version,
//!    new DBInfo/TableInfo/MultipleTableInfos, FinishedTS) — the schema change and the done
//!    row commit atomically, which is what lets a CDC reader take the row's commit ts as the
//!    DDL's ts;
//! 3. a *finish* transaction: the job row deleted and the synced job written to the
//!    `DDLJobHistory` meta hash.
//!
//! The state sequences follow TiDB (`ddl/column.go`, `index.go`, `table.go`): adding a column or
//! an index goes none → delete-only → write-only → write-reorg → public; dropping goes public →
//! write-only → delete-only → (delete-reorg) → none; create/truncate/rename/modify (without
//! reorganisation) are one step.

use std::sync::OnceLock;

use serde_json::{Value, json};
use tidal_model::ddl::{ActionType, DdlJob, HistoryInfo, JobState};
use tidal_model::schema::{CIStr, ColumnInfo, DBInfo, IndexInfo, SchemaState, TableInfo};
use tidal_model::{Datum, meta, mysql, tablecodec};

use super::spec::{self, ColumnSpec, IndexSpec, TableSpec, qualified};
use super::types::{self, quote_ident};
use super::{
    Catalog, CommitOptions, Tidb, TidbError, delete_hash, put_hash, put_string_int, read_retry,
};
use crate::mvcc::Mutation;

/// What a finished DDL job left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlOutcome {
    /// The job id.
    pub job_id: i64,
    /// The action.
    pub action: ActionType,
    /// Commit ts of the transaction that wrote the done job row and the final schema.
    pub commit_ts: u64,
    /// Schema version after the job.
    pub schema_version: i64,
    /// Database id (the target database of a rename).
    pub schema_id: i64,
    /// Table ids after the job (new ids of created or truncated tables); empty for database DDL.
    pub table_ids: Vec<i64>,
    /// The SQL text recorded in the job.
    pub query: String,
}

/// One meta change inside a step.
#[derive(Debug, Clone)]
enum MetaOp {
    PutDb(Box<DBInfo>),
    DeleteDb { db_id: i64, table_ids: Vec<i64> },
    PutTable { db_id: i64, info: Box<TableInfo> },
    DeleteTable { db_id: i64, table_id: i64 },
}

impl MetaOp {
    fn put_table(db_id: i64, info: TableInfo) -> Self {
        MetaOp::PutTable {
            db_id,
            info: Box::new(info),
        }
    }

    fn stamp(&mut self, ts: u64) {
        if let MetaOp::PutTable { info, .. } = self {
            info.update_timestamp = ts;
        }
    }

    fn mutations(&self, out: &mut Vec<Mutation>) -> Result<(), TidbError> {
        match self {
            MetaOp::PutDb(db) => {
                out.push(put_hash(
                    meta::DBS_KEY,
                    &meta::db_key(db.id),
                    serde_json::to_vec(db)?,
                ));
            }
            MetaOp::DeleteDb { db_id, table_ids } => {
                out.push(delete_hash(meta::DBS_KEY, &meta::db_key(*db_id)));
                for t in table_ids {
                    out.push(delete_hash(&meta::db_key(*db_id), &meta::table_field(*t)));
                }
            }
            MetaOp::PutTable { db_id, info } => {
                out.push(put_hash(
                    &meta::db_key(*db_id),
                    &meta::table_field(info.id),
                    serde_json::to_vec(info)?,
                ));
            }
            MetaOp::DeleteTable { db_id, table_id } => {
                out.push(delete_hash(
                    &meta::db_key(*db_id),
                    &meta::table_field(*table_id),
                ));
            }
        }
        Ok(())
    }
}

/// How the catalog changes once the job is done.
#[derive(Debug, Clone)]
enum CatalogOp {
    PutDb(Box<DBInfo>),
    DropDb(i64),
    PutTable { db_id: i64, info: Box<TableInfo> },
    DropTable(i64),
}

impl CatalogOp {
    fn put_table(db_id: i64, info: TableInfo) -> Self {
        CatalogOp::PutTable {
            db_id,
            info: Box::new(info),
        }
    }
}

#[derive(Debug, Clone)]
struct Step {
    state: SchemaState,
    ops: Vec<MetaOp>,
    /// Write the index entries of every existing row (the write-reorg step of ADD INDEX).
    backfill: Option<(TableInfo, IndexInfo)>,
}

impl Step {
    fn new(state: SchemaState, ops: Vec<MetaOp>) -> Self {
        Self {
            state,
            ops,
            backfill: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Plan {
    job_id: i64,
    action: ActionType,
    schema_id: i64,
    schema_name: String,
    table_id: i64,
    table_name: String,
    query: String,
    raw_args: Value,
    row_schema_ids: Vec<i64>,
    row_table_ids: Vec<i64>,
    reorg: bool,
    steps: Vec<Step>,
    binlog_db: Option<DBInfo>,
    binlog_table: Option<TableInfo>,
    multiple: Vec<TableInfo>,
    old_table_id: i64,
    old_schema_id: i64,
    split: Vec<i64>,
    catalog: Vec<CatalogOp>,
    new_table_ids: Vec<i64>,
}

impl Plan {
    fn new(
        job_id: i64,
        action: ActionType,
        schema: (i64, &str),
        table: (i64, &str),
        query: String,
    ) -> Self {
        Plan {
            job_id,
            action,
            schema_id: schema.0,
            schema_name: schema.1.to_owned(),
            table_id: table.0,
            table_name: table.1.to_owned(),
            query,
            raw_args: Value::Array(Vec::new()),
            row_schema_ids: vec![schema.0],
            row_table_ids: if table.0 == 0 {
                Vec::new()
            } else {
                vec![table.0]
            },
            reorg: false,
            steps: Vec::new(),
            binlog_db: None,
            binlog_table: None,
            multiple: Vec::new(),
            old_table_id: 0,
            old_schema_id: 0,
            split: Vec::new(),
            catalog: Vec::new(),
            new_table_ids: Vec::new(),
        }
    }

    /// A job on the existing table `info` of database `schema` (id, name).
    fn for_table(
        job_id: i64,
        action: ActionType,
        schema: (i64, &str),
        info: &TableInfo,
        query: String,
    ) -> Self {
        Self::new(job_id, action, schema, (info.id, &info.name.O), query)
    }

    /// Adds a step whose one meta change writes `info` into database `db_id`.
    fn put_table_step(&mut self, state: SchemaState, db_id: i64, info: TableInfo) {
        self.steps
            .push(Step::new(state, vec![MetaOp::put_table(db_id, info)]));
    }

    /// Adds the last step, writing `done`, which is also the job's binlog table and the table
    /// the catalog holds once the job is finished.
    fn finish_with_table(&mut self, state: SchemaState, db_id: i64, done: TableInfo) {
        self.put_table_step(state, db_id, done.clone());
        self.binlog_table = Some(done.clone());
        self.catalog.push(CatalogOp::put_table(db_id, done));
    }

    fn job(&self, state: JobState, schema_state: SchemaState, start_ts: u64) -> DdlJob {
        DdlJob {
            id: self.job_id,
            action_type: self.action,
            schema_id: self.schema_id,
            table_id: self.table_id,
            schema_name: self.schema_name.clone(),
            table_name: self.table_name.clone(),
            state,
            raw_args: Some(self.raw_args.clone()),
            schema_state,
            start_ts,
            query: self.query.clone(),
            binlog: Some(HistoryInfo::default()),
            version: 1,
            charset: "utf8mb4".into(),
            collate: "utf8mb4_bin".into(),
            ..DdlJob::default()
        }
    }
}

fn ddl_job_table() -> &'static TableInfo {
    static T: OnceLock<TableInfo> = OnceLock::new();
    T.get_or_init(super::ddl_job_table_info)
}

fn ids_text(ids: &[i64]) -> Vec<u8> {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

/// The Put of a job's row in `mysql.tidb_ddl_job`.
fn job_row(plan: &Plan, job: &DdlJob, processing: bool) -> Result<Mutation, TidbError> {
    let t = ddl_job_table();
    let values = [
        Datum::Int(i64::from(plan.reorg)),
        Datum::Bytes(ids_text(&plan.row_schema_ids)),
        Datum::Bytes(ids_text(&plan.row_table_ids)),
        Datum::Bytes(job.to_json()?),
        Datum::Int(i64::from(plan.action.0)),
        Datum::Int(i64::from(processing)),
    ];
    let mut cols = Vec::with_capacity(values.len());
    for (v, id) in values.iter().zip(2i64..) {
        let col = t
            .column_by_id(id)
            .ok_or_else(|| TidbError::Invalid("tidb_ddl_job column".into()))?;
        cols.push((id, v, &col.field_type));
    }
    let value = tidal_model::rowcodec::encode_row_v2(&cols)?;
    Ok(Mutation::put(
        tablecodec::encode_row_key_int(t.id, plan.job_id),
        value,
    ))
}

fn diff_json(plan: &Plan, version: i64) -> Result<Vec<u8>, TidbError> {
    let affected: Value = if plan.action == ActionType::CREATE_TABLES {
        plan.multiple
            .iter()
            .map(|t| json!({"schema_id": plan.schema_id, "table_id": t.id, "old_table_id": 0, "old_schema_id": 0}))
            .collect()
    } else {
        Value::Null
    };
    Ok(serde_json::to_vec(&json!({
        "version": version,
        "type": plan.action.0,
        "schema_id": plan.schema_id,
        "table_id": plan.table_id,
        "old_table_id": plan.old_table_id,
        "old_schema_id": plan.old_schema_id,
        "regenerate_schema_map": false,
        "affected_options": affected,
    }))?)
}

/// A copy of column `column` of `info`; [`TidbError::Invalid`] if there is none.
fn column_named(info: &TableInfo, column: &str) -> Result<ColumnInfo, TidbError> {
    info.column_by_name(column)
        .cloned()
        .ok_or_else(|| TidbError::Invalid(format!("no column {column}")))
}

fn cistr(name: &str) -> Value {
    serde_json::to_value(CIStr::new(name)).unwrap_or(Value::Null)
}

fn with_state(info: &TableInfo, state: SchemaState) -> TableInfo {
    TableInfo {
        state,
        ..info.clone()
    }
}

/// Recomputes column offsets (and index column offsets) after columns were removed.
fn renumber(info: &mut TableInfo) {
    for (i, c) in info.cols.iter_mut().enumerate() {
        c.offset = i64::try_from(i).unwrap_or(i64::MAX);
    }
    let cols = info.cols.clone();
    for ix in &mut info.index_info {
        for ic in &mut ix.idx_cols {
            if let Some(pos) = cols.iter().position(|c| c.name.L == ic.name.L) {
                ic.offset = i64::try_from(pos).unwrap_or(i64::MAX);
            }
        }
    }
}

fn int_rank(tp: u8) -> Option<u8> {
    match tp {
        mysql::TYPE_TINY => Some(1),
        mysql::TYPE_SHORT => Some(2),
        mysql::TYPE_INT24 => Some(3),
        mysql::TYPE_LONG => Some(4),
        mysql::TYPE_LONGLONG => Some(5),
        _ => None,
    }
}

/// True if changing `old` to `new` needs no data reorganisation (TiDB then only rewrites the
/// column's metadata): integer widening with the same signedness, longer strings of the same
/// kind and collation, ENUM/SET with elements appended, or the same type.
fn lossless_change(
    old: &tidal_model::schema::FieldType,
    new: &tidal_model::schema::FieldType,
) -> bool {
    if let (Some(a), Some(b)) = (int_rank(old.tp), int_rank(new.tp)) {
        return b >= a && old.is_unsigned() == new.is_unsigned();
    }
    if old.tp != new.tp {
        return false;
    }
    match old.tp {
        mysql::TYPE_VARCHAR | mysql::TYPE_STRING | mysql::TYPE_VAR_STRING => {
            new.flen >= old.flen && old.charset == new.charset && old.collate == new.collate
        }
        mysql::TYPE_ENUM | mysql::TYPE_SET => {
            let (o, n) = (
                old.elems.as_deref().unwrap_or_default(),
                new.elems.as_deref().unwrap_or_default(),
            );
            n.len() >= o.len() && n.get(..o.len()) == Some(o) && old.collate == new.collate
        }
        _ => {
            old.flen == new.flen
                && old.decimal == new.decimal
                && old.charset == new.charset
                && old.collate == new.collate
        }
    }
}

impl Tidb {
    /// Runs a planned job: submission, one transaction per step (the last one done), catalog
    /// update, finish.
    fn run_job(&self, cat: &mut Catalog, mut plan: Plan) -> Result<DdlOutcome, TidbError> {
        let submit_ts = self.inner.tso.next();
        let queued = plan.job(JobState::QUEUEING, SchemaState::NONE, submit_ts);
        let muts = vec![
            job_row(&plan, &queued, false)?,
            put_string_int(meta::NEXT_GLOBAL_ID_KEY, cat.next_global_id),
        ];
        self.commit_mutations(muts, submit_ts, &CommitOptions::default())?;

        let steps = std::mem::take(&mut plan.steps);
        let n = steps.len();
        let mut commit_ts = submit_ts;
        let mut real_start = 0;
        let mut job = queued;
        for (i, mut step) in steps.into_iter().enumerate() {
            let last = i + 1 == n;
            if last && self.inner.cfg.split_tables {
                for id in &plan.split {
                    self.split_table(*id);
                }
            }
            let start_ts = self.inner.tso.next();
            if real_start == 0 {
                real_start = start_ts;
            }
            let version = cat.schema_version + 1;
            let mut muts = Vec::new();
            for op in &mut step.ops {
                op.stamp(start_ts);
                op.mutations(&mut muts)?;
            }
            if let Some((info, index)) = &step.backfill {
                muts.extend(self.backfill_index(info, index, start_ts)?);
            }
            muts.push(put_string_int(meta::SCHEMA_VERSION_KEY, version));
            muts.push(Mutation::put(
                meta::string_key(&meta::diff_key(version)),
                diff_json(&plan, version)?,
            ));
            job.state = if last {
                JobState::DONE
            } else {
                JobState::RUNNING
            };
            job.schema_state = step.state;
            job.real_start_ts = real_start;
            if last {
                for t in plan.binlog_table.iter_mut().chain(plan.multiple.iter_mut()) {
                    t.update_timestamp = start_ts;
                }
                for op in &mut plan.catalog {
                    if let CatalogOp::PutTable { info, .. } = op {
                        info.update_timestamp = start_ts;
                    }
                }
                job.binlog = Some(HistoryInfo {
                    schema_version: version,
                    db_info: plan.binlog_db.clone(),
                    table_info: plan.binlog_table.clone(),
                    finished_ts: start_ts,
                    multiple_table_infos: plan.multiple.clone(),
                    ..HistoryInfo::default()
                });
            }
            muts.push(job_row(&plan, &job, true)?);
            commit_ts = self
                .commit_mutations(muts, start_ts, &CommitOptions::default())?
                .unwrap_or(start_ts);
            cat.schema_version = version;
        }

        for op in std::mem::take(&mut plan.catalog) {
            match op {
                CatalogOp::PutDb(db) => cat.put_db(*db),
                CatalogOp::DropDb(id) => cat.drop_db(id),
                CatalogOp::PutTable { db_id, info } => cat.put_table(db_id, *info, 1),
                CatalogOp::DropTable(id) => cat.drop_table(id),
            }
        }

        if self.inner.cfg.delete_finished_jobs {
            let ts = self.inner.tso.next();
            job.state = JobState::SYNCED;
            let muts = vec![
                Mutation::delete(tablecodec::encode_row_key_int(
                    tablecodec::DDL_JOB_TABLE_ID,
                    plan.job_id,
                )),
                put_hash(
                    meta::DDL_JOB_HISTORY_KEY,
                    &meta::history_job_field(plan.job_id),
                    job.to_json()?,
                ),
            ];
            self.commit_mutations(muts, ts, &CommitOptions::default())?;
        }
        Ok(DdlOutcome {
            job_id: plan.job_id,
            action: plan.action,
            commit_ts,
            schema_version: cat.schema_version,
            schema_id: plan.schema_id,
            table_ids: plan.new_table_ids,
            query: plan.query,
        })
    }

    /// The index entries of every row of `info` at `ts`.
    fn backfill_index(
        &self,
        info: &TableInfo,
        index: &IndexInfo,
        ts: u64,
    ) -> Result<Vec<Mutation>, TidbError> {
        let mut out = Vec::new();
        for id in info.physical_table_ids() {
            let (start, end) = tablecodec::table_record_range(id);
            let rows = read_retry(|| self.inner.store.scan(&start, &end, ts, 0))?;
            for (key, value) in rows {
                let (_, handle) = tablecodec::decode_row_key(&key)?;
                let values = tidal_model::decode::decode_row(info, &key, &value)?;
                let (k, v) = super::dml::index_entry(info, index, &handle, &values)?;
                out.push(Mutation::put(k, v));
            }
        }
        Ok(out)
    }

    fn with_ddl<T>(
        &self,
        f: impl FnOnce(&mut Catalog) -> Result<T, TidbError>,
    ) -> Result<T, TidbError> {
        let _serial = self.inner.ddl.lock();
        let mut cat = self.inner.catalog.write();
        f(&mut cat)
    }

    /// `CREATE DATABASE name`.
    pub fn create_database(&self, name: &str) -> Result<DdlOutcome, TidbError> {
        self.with_ddl(|cat| {
            if cat.db_id(name).is_ok() {
                return Err(TidbError::Exists(format!("database {name}")));
            }
            let job_id = cat.alloc_ids(1);
            let id = cat.alloc_ids(1);
            let db = DBInfo {
                id,
                db_name: CIStr::new(name),
                charset: "utf8mb4".into(),
                collate: "utf8mb4_bin".into(),
                state: SchemaState::PUBLIC,
                ..DBInfo::default()
            };
            let query = format!("CREATE DATABASE {}", quote_ident(name));
            let mut plan = Plan::new(
                job_id,
                ActionType::CREATE_SCHEMA,
                (id, name),
                (0, ""),
                query,
            );
            plan.raw_args = json!([db]);
            plan.steps.push(Step::new(
                SchemaState::PUBLIC,
                vec![MetaOp::PutDb(Box::new(db.clone()))],
            ));
            plan.binlog_db = Some(db.clone());
            plan.catalog.push(CatalogOp::PutDb(Box::new(db)));
            self.run_job(cat, plan)
        })
    }

    /// `DROP DATABASE name` (its tables' meta goes with it; their rows stay until GC, as in
    /// TiDB).
    pub fn drop_database(&self, name: &str) -> Result<DdlOutcome, TidbError> {
        self.with_ddl(|cat| {
            let id = cat.db_id(name)?;
            let db = cat
                .dbs
                .get(&id)
                .cloned()
                .ok_or_else(|| TidbError::UnknownDatabase(name.into()))?;
            let mut table_ids: Vec<i64> = cat
                .tables
                .iter()
                .filter(|(_, e)| e.db_id == id)
                .map(|(t, _)| *t)
                .collect();
            table_ids.sort_unstable();
            let job_id = cat.alloc_ids(1);
            let query = format!("DROP DATABASE {}", quote_ident(&db.db_name.O));
            let mut plan = Plan::new(
                job_id,
                ActionType::DROP_SCHEMA,
                (id, &db.db_name.O),
                (0, ""),
                query,
            );
            plan.raw_args = json!([false, table_ids]);
            plan.row_table_ids = table_ids.clone();
            let state_db = |s: SchemaState| DBInfo {
                state: s,
                ..db.clone()
            };
            plan.steps.push(Step::new(
                SchemaState::WRITE_ONLY,
                vec![MetaOp::PutDb(Box::new(state_db(SchemaState::WRITE_ONLY)))],
            ));
            plan.steps.push(Step::new(
                SchemaState::DELETE_ONLY,
                vec![MetaOp::PutDb(Box::new(state_db(SchemaState::DELETE_ONLY)))],
            ));
            plan.steps.push(Step::new(
                SchemaState::NONE,
                vec![MetaOp::DeleteDb {
                    db_id: id,
                    table_ids,
                }],
            ));
            plan.binlog_db = Some(state_db(SchemaState::NONE));
            plan.catalog.push(CatalogOp::DropDb(id));
            self.run_job(cat, plan)
        })
    }

    /// `CREATE TABLE db.spec` (a region split at the table's prefix if configured).
    pub fn create_table(&self, db: &str, spec: &TableSpec) -> Result<DdlOutcome, TidbError> {
        self.with_ddl(|cat| {
            let db_id = cat.db_id(db)?;
            if cat
                .table_ids
                .contains_key(&(db_id, spec.name.to_lowercase()))
            {
                return Err(TidbError::Exists(format!("table {db}.{}", spec.name)));
            }
            let query = spec::create_table_sql(&cat.db_name(db_id), spec)?;
            let job_id = cat.alloc_ids(1);
            let id = cat.alloc_ids(1);
            let info = spec::table_info(spec, id)?;
            let db_name = cat.db_name(db_id);
            let mut plan = Plan::new(
                job_id,
                ActionType::CREATE_TABLE,
                (db_id, &db_name),
                (id, &spec.name),
                query,
            );
            plan.raw_args = json!([info, false]);
            plan.split.push(id);
            plan.new_table_ids.push(id);
            plan.finish_with_table(SchemaState::PUBLIC, db_id, info);
            self.run_job(cat, plan)
        })
    }

    /// Several `CREATE TABLE`s as ONE job (TiDB's batch create, action `create tables`): one
    /// schema version, the tables in `binlog.MultipleTableInfos`, the statements joined by `;`
    /// in the query. `split` decides whether each table gets its own region.
    pub fn create_tables(
        &self,
        db: &str,
        specs: &[TableSpec],
        split: bool,
    ) -> Result<DdlOutcome, TidbError> {
        self.with_ddl(|cat| {
            let db_id = cat.db_id(db)?;
            let db_name = cat.db_name(db_id);
            let mut seen = std::collections::HashSet::new();
            for s in specs {
                let l = s.name.to_lowercase();
                if cat.table_ids.contains_key(&(db_id, l.clone())) || !seen.insert(l) {
                    return Err(TidbError::Exists(format!("table {db}.{}", s.name)));
                }
            }
            let Some(first) = specs.first() else {
                return Err(TidbError::Invalid("create_tables with no tables".into()));
            };
            let query = specs
                .iter()
                .map(|s| spec::create_table_sql(&db_name, s).map(|q| q + ";"))
                .collect::<Result<Vec<_>, _>>()?
                .join(" ");
            let job_id = cat.alloc_ids(1);
            let n = i64::try_from(specs.len()).unwrap_or(i64::MAX);
            let first_id = cat.alloc_ids(n);
            let infos = specs
                .iter()
                .zip(first_id..)
                .map(|(s, id)| spec::table_info(s, id))
                .collect::<Result<Vec<_>, _>>()?;
            let mut plan = Plan::new(
                job_id,
                ActionType::CREATE_TABLES,
                (db_id, &db_name),
                (first_id, &first.name),
                query,
            );
            plan.raw_args = json!([infos, false]);
            plan.row_table_ids = infos.iter().map(|t| t.id).collect();
            plan.steps.push(Step::new(
                SchemaState::PUBLIC,
                infos
                    .iter()
                    .map(|i| MetaOp::put_table(db_id, i.clone()))
                    .collect(),
            ));
            plan.binlog_table = infos.last().cloned();
            plan.multiple = infos.clone();
            if split {
                plan.split = infos.iter().map(|t| t.id).collect();
            }
            plan.new_table_ids = infos.iter().map(|t| t.id).collect();
            plan.catalog = infos
                .into_iter()
                .map(|info| CatalogOp::put_table(db_id, info))
                .collect();
            let split_cfg = self.inner.cfg.split_tables;
            if !split_cfg && split {
                // Honour an explicit request even when splitting is off by default.
                let ids = plan.split.clone();
                let out = self.run_job(cat, plan)?;
                for id in ids {
                    self.split_table(id);
                }
                return Ok(out);
            }
            self.run_job(cat, plan)
        })
    }

    fn lookup(cat: &Catalog, db: &str, table: &str) -> Result<(i64, TableInfo, String), TidbError> {
        let (db_id, id) = cat.table_id(db, table)?;
        let info = (*cat.entry(id)?.info).clone();
        Ok((db_id, info, cat.db_name(db_id)))
    }

    /// `DROP TABLE db.table` (rows stay until GC, as in TiDB).
    pub fn drop_table(&self, db: &str, table: &str) -> Result<DdlOutcome, TidbError> {
        self.with_ddl(|cat| {
            let (db_id, info, db_name) = Self::lookup(cat, db, table)?;
            if db_id == tablecodec::MYSQL_DB_ID {
                return Err(TidbError::Invalid("system tables cannot be dropped".into()));
            }
            let job_id = cat.alloc_ids(1);
            let query = format!("DROP TABLE {}", qualified(&db_name, &info.name.O));
            let mut plan = Plan::for_table(
                job_id,
                ActionType::DROP_TABLE,
                (db_id, &db_name),
                &info,
                query,
            );
            let start_key = tablecodec::table_prefix(info.id);
            plan.raw_args = json!([start_key, Value::Array(Vec::new())]);
            for s in [SchemaState::WRITE_ONLY, SchemaState::DELETE_ONLY] {
                plan.put_table_step(s, db_id, with_state(&info, s));
            }
            plan.steps.push(Step::new(
                SchemaState::NONE,
                vec![MetaOp::DeleteTable {
                    db_id,
                    table_id: info.id,
                }],
            ));
            plan.binlog_table = Some(with_state(&info, SchemaState::NONE));
            plan.catalog.push(CatalogOp::DropTable(info.id));
            self.run_job(cat, plan)
        })
    }

    /// `TRUNCATE TABLE db.table`: the table gets a new id (and region); the old rows stay under
    /// the old id until GC.
    pub fn truncate_table(&self, db: &str, table: &str) -> Result<DdlOutcome, TidbError> {
        self.with_ddl(|cat| {
            let (db_id, info, db_name) = Self::lookup(cat, db, table)?;
            let job_id = cat.alloc_ids(1);
            let new_id = cat.alloc_ids(1);
            let query = format!("TRUNCATE TABLE {}", qualified(&db_name, &info.name.O));
            let mut plan = Plan::for_table(
                job_id,
                ActionType::TRUNCATE_TABLE,
                (db_id, &db_name),
                &info,
                query,
            );
            plan.raw_args = json!([new_id, Value::Null, Value::Null]);
            plan.row_table_ids = vec![info.id, new_id];
            let new_info = TableInfo {
                id: new_id,
                ..info.clone()
            };
            plan.steps.push(Step::new(
                SchemaState::PUBLIC,
                vec![
                    MetaOp::DeleteTable {
                        db_id,
                        table_id: info.id,
                    },
                    MetaOp::put_table(db_id, new_info.clone()),
                ],
            ));
            plan.binlog_table = Some(new_info.clone());
            plan.old_table_id = info.id;
            plan.split.push(new_id);
            plan.new_table_ids.push(new_id);
            plan.catalog.push(CatalogOp::DropTable(info.id));
            plan.catalog.push(CatalogOp::put_table(db_id, new_info));
            self.run_job(cat, plan)
        })
    }

    /// `RENAME TABLE db.table TO new_db.new_name` (same id; `new_db` may be another database).
    pub fn rename_table(
        &self,
        db: &str,
        table: &str,
        new_db: &str,
        new_name: &str,
    ) -> Result<DdlOutcome, TidbError> {
        self.with_ddl(|cat| {
            let (db_id, info, db_name) = Self::lookup(cat, db, table)?;
            let new_db_id = cat.db_id(new_db)?;
            let new_db_name = cat.db_name(new_db_id);
            if cat
                .table_ids
                .contains_key(&(new_db_id, new_name.to_lowercase()))
            {
                return Err(TidbError::Exists(format!("table {new_db}.{new_name}")));
            }
            let job_id = cat.alloc_ids(1);
            let query = format!(
                "RENAME TABLE {} TO {}",
                qualified(&db_name, &info.name.O),
                qualified(&new_db_name, new_name)
            );
            let mut plan = Plan::new(
                job_id,
                ActionType::RENAME_TABLE,
                (new_db_id, &new_db_name),
                (info.id, new_name),
                query,
            );
            plan.raw_args = json!([db_id, cistr(new_name), cistr(&db_name)]);
            plan.row_schema_ids = if db_id == new_db_id {
                vec![db_id]
            } else {
                vec![db_id, new_db_id]
            };
            let mut new_info = info.clone();
            new_info.name = CIStr::new(new_name);
            for ix in &mut new_info.index_info {
                ix.tbl_name = CIStr::new(new_name);
            }
            if db_id != new_db_id {
                new_info.old_schema_id = db_id;
            }
            let mut ops = Vec::new();
            if db_id != new_db_id {
                ops.push(MetaOp::DeleteTable {
                    db_id,
                    table_id: info.id,
                });
            }
            ops.push(MetaOp::put_table(new_db_id, new_info.clone()));
            plan.steps.push(Step::new(SchemaState::PUBLIC, ops));
            plan.binlog_table = Some(new_info.clone());
            plan.old_schema_id = db_id;
            plan.catalog.push(CatalogOp::put_table(new_db_id, new_info));
            self.run_job(cat, plan)
        })
    }

    /// `ALTER TABLE db.table ADD COLUMN col` (appended last). Rows written before keep their
    /// bytes; readers fill the column from its origin default. A NOT NULL column needs a
    /// default.
    pub fn add_column(
        &self,
        db: &str,
        table: &str,
        col: &ColumnSpec,
    ) -> Result<DdlOutcome, TidbError> {
        self.with_ddl(|cat| {
            let (db_id, info, db_name) = Self::lookup(cat, db, table)?;
            if info.column_by_name(&col.name).is_some() {
                return Err(TidbError::Exists(format!("column {}", col.name)));
            }
            if !col.nullable && col.default.is_none() {
                return Err(TidbError::Invalid(format!(
                    "NOT NULL column {} needs a default",
                    col.name
                )));
            }
            let job_id = cat.alloc_ids(1);
            let mut new_col = spec::column_info(col, info.max_col_id + 1, info.cols.len())?;
            new_col.origin_default = new_col.default.clone().filter(|v| !v.is_null());
            let query = format!(
                "ALTER TABLE {} ADD COLUMN {}",
                qualified(&db_name, &info.name.O),
                spec::column_def_sql(col)?
            );
            let mut plan = Plan::for_table(
                job_id,
                ActionType::ADD_COLUMN,
                (db_id, &db_name),
                &info,
                query,
            );
            plan.raw_args = json!([new_col, {"Tp": 0, "RelativeColumn": null}, 0, false]);
            let version_of = |s: SchemaState| {
                let mut t = info.clone();
                t.max_col_id = new_col.id;
                let mut c = new_col.clone();
                c.state = s;
                t.cols.push(c);
                t
            };
            for s in [
                SchemaState::DELETE_ONLY,
                SchemaState::WRITE_ONLY,
                SchemaState::WRITE_REORGANIZATION,
            ] {
                plan.put_table_step(s, db_id, version_of(s));
            }
            let done = version_of(SchemaState::PUBLIC);
            plan.finish_with_table(SchemaState::PUBLIC, db_id, done);
            self.run_job(cat, plan)
        })
    }

    /// `ALTER TABLE db.table DROP COLUMN name` (not a key or indexed column).
    pub fn drop_column(
        &self,
        db: &str,
        table: &str,
        column: &str,
    ) -> Result<DdlOutcome, TidbError> {
        self.with_ddl(|cat| {
            let (db_id, info, db_name) = Self::lookup(cat, db, table)?;
            let col = column_named(&info, column)?;
            if col.is_pri_key()
                || info
                    .index_info
                    .iter()
                    .any(|i| i.idx_cols.iter().any(|c| c.name.L == col.name.L))
            {
                return Err(TidbError::Invalid(format!(
                    "column {column} is part of a key or index"
                )));
            }
            if info.public_columns().len() <= 1 {
                return Err(TidbError::Invalid("cannot drop the only column".into()));
            }
            let job_id = cat.alloc_ids(1);
            let query = format!(
                "ALTER TABLE {} DROP COLUMN {}",
                qualified(&db_name, &info.name.O),
                quote_ident(&col.name.O)
            );
            let mut plan = Plan::for_table(
                job_id,
                ActionType::DROP_COLUMN,
                (db_id, &db_name),
                &info,
                query,
            );
            plan.raw_args = json!([cistr(&col.name.O), false]);
            let version_of = |s: SchemaState| {
                let mut t = info.clone();
                // TiDB moves a column being dropped to the end of `cols`.
                t.cols.retain(|c| c.id != col.id);
                let mut c = col.clone();
                c.state = s;
                t.cols.push(c);
                renumber(&mut t);
                t
            };
            for s in [
                SchemaState::WRITE_ONLY,
                SchemaState::DELETE_ONLY,
                SchemaState::DELETE_REORGANIZATION,
            ] {
                plan.put_table_step(s, db_id, version_of(s));
            }
            let mut done = info.clone();
            done.cols.retain(|c| c.id != col.id);
            renumber(&mut done);
            plan.finish_with_table(SchemaState::NONE, db_id, done);
            self.run_job(cat, plan)
        })
    }

    /// `ALTER TABLE db.table ADD [UNIQUE] INDEX` — the existing rows' index entries are written
    /// in the write-reorg step. Uniqueness of existing data is not checked.
    pub fn add_index(
        &self,
        db: &str,
        table: &str,
        index: &IndexSpec,
    ) -> Result<DdlOutcome, TidbError> {
        self.with_ddl(|cat| {
            let (db_id, info, db_name) = Self::lookup(cat, db, table)?;
            if info
                .index_info
                .iter()
                .any(|i| i.idx_name.L == index.name.to_lowercase())
            {
                return Err(TidbError::Exists(format!("index {}", index.name)));
            }
            let mut done = info.clone();
            let ix = spec::index_info(
                &mut done.cols,
                &info.name.O,
                info.max_idx_id + 1,
                &index.name,
                &index.columns,
                index.unique,
                false,
            )?;
            done.max_idx_id = ix.id;
            let job_id = cat.alloc_ids(1);
            let query = format!(
                "ALTER TABLE {} ADD {}INDEX {} ({})",
                qualified(&db_name, &info.name.O),
                if index.unique { "UNIQUE " } else { "" },
                quote_ident(&index.name),
                index
                    .columns
                    .iter()
                    .map(|c| quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let mut plan = Plan::for_table(
                job_id,
                ActionType::ADD_INDEX,
                (db_id, &db_name),
                &info,
                query,
            );
            plan.reorg = true;
            let index_part = json!({"name": cistr(&index.columns.join(",")), "length": -1});
            plan.raw_args = json!([index.unique, cistr(&index.name), [index_part], null, false]);
            let version_of = |s: SchemaState| {
                let mut t = done.clone();
                let mut i = ix.clone();
                i.state = s;
                t.index_info.push(i);
                t
            };
            for s in [SchemaState::DELETE_ONLY, SchemaState::WRITE_ONLY] {
                plan.put_table_step(s, db_id, version_of(s));
            }
            let reorg = SchemaState::WRITE_REORGANIZATION;
            plan.steps.push(Step {
                state: reorg,
                ops: vec![MetaOp::put_table(db_id, version_of(reorg))],
                backfill: Some((info.clone(), ix.clone())),
            });
            plan.finish_with_table(SchemaState::PUBLIC, db_id, version_of(SchemaState::PUBLIC));
            self.run_job(cat, plan)
        })
    }

    /// `ALTER TABLE db.table DROP INDEX name` (its entries stay until GC, as in TiDB).
    pub fn drop_index(&self, db: &str, table: &str, index: &str) -> Result<DdlOutcome, TidbError> {
        self.with_ddl(|cat| {
            let (db_id, info, db_name) = Self::lookup(cat, db, table)?;
            let ix = info
                .index_info
                .iter()
                .find(|i| i.idx_name.L == index.to_lowercase() && !i.is_primary)
                .cloned()
                .ok_or_else(|| TidbError::Invalid(format!("no index {index}")))?;
            let job_id = cat.alloc_ids(1);
            let query = format!(
                "ALTER TABLE {} DROP INDEX {}",
                qualified(&db_name, &info.name.O),
                quote_ident(&ix.idx_name.O)
            );
            let mut plan = Plan::for_table(
                job_id,
                ActionType::DROP_INDEX,
                (db_id, &db_name),
                &info,
                query,
            );
            plan.raw_args = json!([cistr(&ix.idx_name.O), false]);
            let version_of = |s: SchemaState| {
                let mut t = info.clone();
                for i in &mut t.index_info {
                    if i.id == ix.id {
                        i.state = s;
                    }
                }
                t
            };
            for s in [
                SchemaState::WRITE_ONLY,
                SchemaState::DELETE_ONLY,
                SchemaState::DELETE_REORGANIZATION,
            ] {
                plan.put_table_step(s, db_id, version_of(s));
            }
            let mut done = info.clone();
            done.index_info.retain(|i| i.id != ix.id);
            if let Some(first) = ix.idx_cols.first() {
                let still = done
                    .index_info
                    .iter()
                    .any(|i| i.idx_cols.first().is_some_and(|c| c.name.L == first.name.L));
                if !still && let Some(c) = done.cols.iter_mut().find(|c| c.name.L == first.name.L) {
                    c.field_type.flag &= !(mysql::FLAG_UNIQUE_KEY | mysql::FLAG_MULTIPLE_KEY);
                }
            }
            plan.finish_with_table(SchemaState::NONE, db_id, done);
            self.run_job(cat, plan)
        })
    }

    /// `ALTER TABLE db.table MODIFY COLUMN` (or `CHANGE COLUMN` when `new.name` differs).
    /// Only changes TiDB applies without rewriting rows are supported (integer widening,
    /// longer strings, appended ENUM/SET elements, default or nullability relaxation); others
    /// are refused with [`TidbError::Invalid`].
    pub fn modify_column(
        &self,
        db: &str,
        table: &str,
        column: &str,
        new: &ColumnSpec,
    ) -> Result<DdlOutcome, TidbError> {
        self.with_ddl(|cat| {
            let (db_id, info, db_name) = Self::lookup(cat, db, table)?;
            let old = column_named(&info, column)?;
            if new.name.to_lowercase() != old.name.L && info.column_by_name(&new.name).is_some() {
                return Err(TidbError::Exists(format!("column {}", new.name)));
            }
            if !lossless_change(&old.field_type, &new.ft) {
                return Err(TidbError::Invalid(format!(
                    "modify column {column}: {} -> {} needs a data reorganisation",
                    types::sql_type(&old.field_type),
                    types::sql_type(&new.ft)
                )));
            }
            let keyed = old.field_type.flag
                & (mysql::FLAG_PRI_KEY | mysql::FLAG_UNIQUE_KEY | mysql::FLAG_MULTIPLE_KEY);
            let def_spec = ColumnSpec {
                nullable: new.nullable && !old.is_pri_key(),
                ..new.clone()
            };
            if !def_spec.nullable && !old.is_not_null() {
                return Err(TidbError::Invalid(format!(
                    "modify column {column}: cannot make it NOT NULL"
                )));
            }
            let mut col =
                spec::column_info(&def_spec, old.id, usize::try_from(old.offset).unwrap_or(0))?;
            col.field_type.flag |= keyed;
            col.origin_default = old.origin_default.clone();
            col.state = old.state;
            let mut done = info.clone();
            if let Some(c) = done.cols.iter_mut().find(|c| c.id == old.id) {
                *c = col.clone();
            }
            for ix in &mut done.index_info {
                for ic in &mut ix.idx_cols {
                    if ic.name.L == old.name.L {
                        ic.name = col.name.clone();
                    }
                }
            }
            let job_id = cat.alloc_ids(1);
            let query = if new.name.to_lowercase() == old.name.L {
                format!(
                    "ALTER TABLE {} MODIFY COLUMN {}",
                    qualified(&db_name, &info.name.O),
                    spec::column_def_sql(&def_spec)?
                )
            } else {
                format!(
                    "ALTER TABLE {} CHANGE COLUMN {} {}",
                    qualified(&db_name, &info.name.O),
                    quote_ident(&old.name.O),
                    spec::column_def_sql(&def_spec)?
                )
            };
            let mut plan = Plan::for_table(
                job_id,
                ActionType::MODIFY_COLUMN,
                (db_id, &db_name),
                &info,
                query,
            );
            plan.raw_args =
                json!([col, cistr(&old.name.O), {"Tp": 0, "RelativeColumn": null}, 0, 0]);
            plan.finish_with_table(SchemaState::PUBLIC, db_id, done);
            self.run_job(cat, plan)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tidb::types::*;

    #[test]
    fn lossless_changes() {
        assert!(lossless_change(&int(), &bigint()));
        assert!(!lossless_change(&bigint(), &int()));
        assert!(!lossless_change(&int(), &unsigned(bigint())));
        assert!(lossless_change(&varchar(10), &varchar(20)));
        assert!(!lossless_change(&varchar(20), &varchar(10)));
        assert!(!lossless_change(&varchar(20), &varchar_ci(30)));
        assert!(!lossless_change(&int(), &varchar(20)));
        assert!(lossless_change(&enum_of(&["a"]), &enum_of(&["a", "b"])));
        assert!(!lossless_change(
            &enum_of(&["a", "b"]),
            &enum_of(&["b", "a"])
        ));
        assert!(!lossless_change(&decimal(10, 2), &decimal(12, 2)));
    }
}
