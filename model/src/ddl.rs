//! DDL jobs as TiDB records them (`model.Job` JSON) and the [`DdlEvent`] Tidal derives from a
//! finished job.
//!
//! TiDB writes every DDL as a job row in `mysql.tidb_ddl_job` and rewrites that row as the job
//! moves through its states; the row committed in state *done* carries the new schema in its
//! `binlog` ([`HistoryInfo`]). [`DdlJob`] is that JSON, parsed forgivingly (unknown keys are kept,
//! unknown action types and states are plain numbers). [`DdlEvent`] is the small, self-contained
//! value the dataflow and the sinks work with: what happened, at which commit ts, the schema after
//! it, the ids it replaced, and — through [`BlockScope`] — which tables' DML must be flushed
//! before it may be applied.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::CodecError;
use crate::schema::{CIStr, DBInfo, SchemaState, TableInfo, null_as_empty, null_as_empty_string};
use crate::ts::Ts;

/// The kind of a DDL (`model.ActionType`).
///
/// A number rather than an enum so that a job from a newer TiDB, with an action Tidal does not
/// know, still parses; [`ActionType::name`] gives TiDB's name for the known ones.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ActionType(pub u16);

macro_rules! action_types {
    ($($(#[$doc:meta])* $name:ident = $value:literal => $text:literal,)*) => {
        impl ActionType {
            $($(#[$doc])* pub const $name: ActionType = ActionType($value);)*

            /// TiDB's name for the action (`"create table"`, `"add column"`, …); `"none"` for
            /// action 0 and for actions this version of Tidal does not know, as TiDB prints them.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $($value => $text,)*
                    _ => "none",
                }
            }

            /// True if this version of Tidal knows the action.
            pub fn is_known(self) -> bool {
                matches!(self.0, $($value)|*)
            }
        }
    };
}

action_types! {
    /// No action.
    NONE = 0 => "none",
    /// `CREATE DATABASE`.
    CREATE_SCHEMA = 1 => "create schema",
    /// `DROP DATABASE`.
    DROP_SCHEMA = 2 => "drop schema",
    /// `CREATE TABLE`.
    CREATE_TABLE = 3 => "create table",
    /// `DROP TABLE`.
    DROP_TABLE = 4 => "drop table",
    /// `ADD COLUMN`.
    ADD_COLUMN = 5 => "add column",
    /// `DROP COLUMN`.
    DROP_COLUMN = 6 => "drop column",
    /// `ADD INDEX`.
    ADD_INDEX = 7 => "add index",
    /// `DROP INDEX`.
    DROP_INDEX = 8 => "drop index",
    /// `ADD FOREIGN KEY`.
    ADD_FOREIGN_KEY = 9 => "add foreign key",
    /// `DROP FOREIGN KEY`.
    DROP_FOREIGN_KEY = 10 => "drop foreign key",
    /// `TRUNCATE TABLE` (the table gets a new id).
    TRUNCATE_TABLE = 11 => "truncate table",
    /// `MODIFY COLUMN` / `CHANGE COLUMN`.
    MODIFY_COLUMN = 12 => "modify column",
    /// `AUTO_INCREMENT = n`.
    REBASE_AUTO_ID = 13 => "rebase auto_increment ID",
    /// `RENAME TABLE` of one table.
    RENAME_TABLE = 14 => "rename table",
    /// `ALTER COLUMN … SET DEFAULT`.
    SET_DEFAULT_VALUE = 15 => "set default value",
    /// `SHARD_ROW_ID_BITS = n`.
    SHARD_ROW_ID = 16 => "shard row ID",
    /// `COMMENT = …`.
    MODIFY_TABLE_COMMENT = 17 => "modify table comment",
    /// `RENAME INDEX`.
    RENAME_INDEX = 18 => "rename index",
    /// `ADD PARTITION`.
    ADD_TABLE_PARTITION = 19 => "add partition",
    /// `DROP PARTITION`.
    DROP_TABLE_PARTITION = 20 => "drop partition",
    /// `CREATE VIEW`.
    CREATE_VIEW = 21 => "create view",
    /// Table `CHARSET`/`COLLATE` change.
    MODIFY_TABLE_CHARSET_AND_COLLATE = 22 => "modify table charset and collate",
    /// `TRUNCATE PARTITION` (the partitions get new ids).
    TRUNCATE_TABLE_PARTITION = 23 => "truncate partition",
    /// `DROP VIEW`.
    DROP_VIEW = 24 => "drop view",
    /// `RECOVER TABLE` / `FLASHBACK TABLE`.
    RECOVER_TABLE = 25 => "recover table",
    /// Database `CHARSET`/`COLLATE` change.
    MODIFY_SCHEMA_CHARSET_AND_COLLATE = 26 => "modify schema charset and collate",
    /// `LOCK TABLES`.
    LOCK_TABLE = 27 => "lock table",
    /// `UNLOCK TABLES`.
    UNLOCK_TABLE = 28 => "unlock table",
    /// `ADMIN REPAIR TABLE`.
    REPAIR_TABLE = 29 => "repair table",
    /// `SET TIFLASH REPLICA`.
    SET_TIFLASH_REPLICA = 30 => "set tiflash replica",
    /// TiFlash replica status update.
    UPDATE_TIFLASH_REPLICA_STATUS = 31 => "update tiflash replica status",
    /// `ADD PRIMARY KEY`.
    ADD_PRIMARY_KEY = 32 => "add primary key",
    /// `DROP PRIMARY KEY`.
    DROP_PRIMARY_KEY = 33 => "drop primary key",
    /// `CREATE SEQUENCE`.
    CREATE_SEQUENCE = 34 => "create sequence",
    /// `ALTER SEQUENCE`.
    ALTER_SEQUENCE = 35 => "alter sequence",
    /// `DROP SEQUENCE`.
    DROP_SEQUENCE = 36 => "drop sequence",
    /// Several `ADD COLUMN`s (deprecated; now a multi-schema change).
    ADD_COLUMNS = 37 => "add multi-columns",
    /// Several `DROP COLUMN`s (deprecated; now a multi-schema change).
    DROP_COLUMNS = 38 => "drop multi-columns",
    /// `AUTO_ID_CACHE = n`.
    MODIFY_TABLE_AUTO_ID_CACHE = 39 => "modify auto id cache",
    /// `AUTO_RANDOM_BASE = n`.
    REBASE_AUTO_RANDOM_BASE = 40 => "rebase auto_random ID",
    /// `ALTER INDEX … VISIBLE/INVISIBLE`.
    ALTER_INDEX_VISIBILITY = 41 => "alter index visibility",
    /// `EXCHANGE PARTITION`.
    EXCHANGE_TABLE_PARTITION = 42 => "exchange partition",
    /// `ADD CONSTRAINT … CHECK`.
    ADD_CHECK_CONSTRAINT = 43 => "add check constraint",
    /// `DROP CHECK`.
    DROP_CHECK_CONSTRAINT = 44 => "drop check constraint",
    /// `ALTER CHECK`.
    ALTER_CHECK_CONSTRAINT = 45 => "alter check constraint",
    /// `RENAME TABLE a TO b, c TO d`.
    RENAME_TABLES = 47 => "rename tables",
    /// `ATTRIBUTES = …` on a table.
    ALTER_TABLE_ATTRIBUTES = 49 => "alter table attributes",
    /// `ATTRIBUTES = …` on a partition.
    ALTER_TABLE_PARTITION_ATTRIBUTES = 50 => "alter table partition attributes",
    /// `CREATE PLACEMENT POLICY`.
    CREATE_PLACEMENT_POLICY = 51 => "create placement policy",
    /// `ALTER PLACEMENT POLICY`.
    ALTER_PLACEMENT_POLICY = 52 => "alter placement policy",
    /// `DROP PLACEMENT POLICY`.
    DROP_PLACEMENT_POLICY = 53 => "drop placement policy",
    /// Placement of a partition.
    ALTER_TABLE_PARTITION_PLACEMENT = 54 => "alter table partition placement",
    /// Default placement of a database.
    MODIFY_SCHEMA_DEFAULT_PLACEMENT = 55 => "modify schema default placement",
    /// Placement of a table.
    ALTER_TABLE_PLACEMENT = 56 => "alter table placement",
    /// `ALTER TABLE … CACHE`.
    ALTER_CACHE_TABLE = 57 => "alter table cache",
    /// Statistics options.
    ALTER_TABLE_STATS_OPTIONS = 58 => "alter table statistics options",
    /// `ALTER TABLE … NOCACHE`.
    ALTER_NO_CACHE_TABLE = 59 => "alter table nocache",
    /// Several `CREATE TABLE`s in one job (batch create, BR restore).
    CREATE_TABLES = 60 => "create tables",
    /// An `ALTER TABLE` with several changes.
    MULTI_SCHEMA_CHANGE = 61 => "alter table multi-schema change",
    /// `FLASHBACK CLUSTER`.
    FLASHBACK_CLUSTER = 62 => "flashback cluster",
    /// `FLASHBACK DATABASE` / `RECOVER DATABASE`.
    RECOVER_SCHEMA = 63 => "flashback schema",
    /// `REORGANIZE PARTITION`.
    REORGANIZE_PARTITION = 64 => "alter table reorganize partition",
    /// `TTL = …`.
    ALTER_TTL_INFO = 65 => "alter table ttl",
    /// `REMOVE TTL`.
    ALTER_TTL_REMOVE = 67 => "alter table no_ttl",
    /// `CREATE RESOURCE GROUP`.
    CREATE_RESOURCE_GROUP = 68 => "create resource group",
    /// `ALTER RESOURCE GROUP`.
    ALTER_RESOURCE_GROUP = 69 => "alter resource group",
    /// `DROP RESOURCE GROUP`.
    DROP_RESOURCE_GROUP = 70 => "drop resource group",
    /// `ALTER TABLE … PARTITION BY …` (the table and partitions get new ids).
    ALTER_TABLE_PARTITIONING = 71 => "alter table partition by",
    /// `REMOVE PARTITIONING` (the table gets a new id).
    REMOVE_PARTITIONING = 72 => "alter table remove partitioning",
    /// `ADD VECTOR INDEX` / columnar index.
    ADD_COLUMNAR_INDEX = 73 => "add columnar index",
    /// Engine attribute change.
    MODIFY_ENGINE_ATTRIBUTE = 74 => "modify engine attribute",
    /// Table mode change.
    ALTER_TABLE_MODE = 75 => "alter table mode",
    /// Metadata refresh.
    REFRESH_META = 76 => "refresh meta",
    /// Database read-only flag.
    MODIFY_SCHEMA_READ_ONLY = 77 => "modify schema read only",
}

impl std::fmt::Display for ActionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_known() {
            f.write_str(self.name())
        } else {
            write!(f, "unknown action {}", self.0)
        }
    }
}

/// The state of a DDL job (`model.JobState`); a number so unknown states still parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobState(pub i32);

impl JobState {
    /// Not started.
    pub const NONE: JobState = JobState(0);
    /// Running.
    pub const RUNNING: JobState = JobState(1);
    /// Being rolled back.
    pub const ROLLINGBACK: JobState = JobState(2);
    /// Rolled back; the schema did not change.
    pub const ROLLBACK_DONE: JobState = JobState(3);
    /// Finished: the schema change is committed (the row state Tidal acts on).
    pub const DONE: JobState = JobState(4);
    /// Cancelled.
    pub const CANCELLED: JobState = JobState(5);
    /// Done and synced by every TiDB; the job is then moved to history.
    pub const SYNCED: JobState = JobState(6);
    /// Being cancelled.
    pub const CANCELLING: JobState = JobState(7);
    /// Queued.
    pub const QUEUEING: JobState = JobState(8);
    /// Paused.
    pub const PAUSED: JobState = JobState(9);
    /// Being paused.
    pub const PAUSING: JobState = JobState(10);

    /// True for [`JobState::DONE`].
    pub fn is_done(self) -> bool {
        self == Self::DONE
    }

    /// True for [`JobState::SYNCED`].
    pub fn is_synced(self) -> bool {
        self == Self::SYNCED
    }

    /// TiDB's name for the state; `"none"` for unknown values.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "running",
            2 => "rollingback",
            3 => "rollback done",
            4 => "done",
            5 => "cancelled",
            6 => "synced",
            7 => "cancelling",
            8 => "queueing",
            9 => "paused",
            10 => "pausing",
            _ => "none",
        }
    }
}

/// The schema a finished job produced (`model.HistoryInfo`, the job's `binlog` key). Go has no
/// json tags on it, so the keys are Go field names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HistoryInfo {
    /// Schema version after the job.
    #[serde(rename = "SchemaVersion", default)]
    pub schema_version: i64,
    /// The database after a database DDL.
    #[serde(rename = "DBInfo", default)]
    pub db_info: Option<DBInfo>,
    /// The table after a table DDL (for multi-table jobs, the last one).
    #[serde(rename = "TableInfo", default)]
    pub table_info: Option<TableInfo>,
    /// Commit ts of the job (TiDB fills it in history; Tidal sets it to the job row's commit ts).
    #[serde(rename = "FinishedTS", default)]
    pub finished_ts: u64,
    /// The tables after a multi-table job (`CREATE TABLES`, `RENAME TABLES`).
    #[serde(
        rename = "MultipleTableInfos",
        default,
        deserialize_with = "null_as_empty"
    )]
    pub multiple_table_infos: Vec<TableInfo>,
    /// Keys this version of Tidal does not interpret, kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A DDL job (`model.Job` JSON), as stored in `mysql.tidb_ddl_job.job_meta` and in history.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DdlJob {
    /// Job id.
    #[serde(default)]
    pub id: i64,
    /// What the job does.
    #[serde(rename = "type", default)]
    pub action_type: ActionType,
    /// Database id (for `EXCHANGE PARTITION`: the non-partitioned table's database).
    #[serde(default)]
    pub schema_id: i64,
    /// Table id before the job (for `EXCHANGE PARTITION`: the non-partitioned table).
    #[serde(default)]
    pub table_id: i64,
    /// Database name.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub schema_name: String,
    /// Table name.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub table_name: String,
    /// Job state; only done jobs change the schema.
    #[serde(default)]
    pub state: JobState,
    /// Warning, kept as JSON.
    #[serde(default)]
    pub warning: Option<Value>,
    /// Error, kept as JSON.
    #[serde(default)]
    pub err: Option<Value>,
    /// Number of errors met while running.
    #[serde(default)]
    pub err_count: i64,
    /// Rows processed by a reorganisation.
    #[serde(default)]
    pub row_count: i64,
    /// Job arguments: a JSON array (job version 1) or object (version 2).
    #[serde(default)]
    pub raw_args: Option<Value>,
    /// Schema state reached.
    #[serde(default)]
    pub schema_state: SchemaState,
    /// Snapshot version of a reorganisation.
    #[serde(default)]
    pub snapshot_ver: u64,
    /// TSO when the job really started.
    #[serde(default)]
    pub real_start_ts: u64,
    /// TSO when the job was queued; Tidal sets it to the job row's start ts.
    #[serde(default)]
    pub start_ts: u64,
    /// Job this one waits for.
    #[serde(default)]
    pub dependency_id: i64,
    /// The SQL text.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub query: String,
    /// The resulting schema (present once the job is done).
    #[serde(default)]
    pub binlog: Option<HistoryInfo>,
    /// Job format version (1, or 2 since TiDB 8.4 with typed `raw_args`).
    #[serde(default)]
    pub version: i64,
    /// Reorganisation metadata, kept as JSON.
    #[serde(default)]
    pub reorg_meta: Option<Value>,
    /// Sub-jobs of a multi-schema change (`sub_jobs`, `revertible`, `seq`), kept as JSON.
    #[serde(default)]
    pub multi_schema_info: Option<Value>,
    /// Priority.
    #[serde(default)]
    pub priority: i64,
    /// Order in which jobs were moved to history.
    #[serde(default)]
    pub seq_num: u64,
    /// Session charset when the job was created.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub charset: String,
    /// Session collation when the job was created.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub collate: String,
    /// Keys this version of Tidal does not interpret, kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl DdlJob {
    /// Parses a job from its JSON, with serde's message (line, column, what was expected) in the
    /// error.
    pub fn from_json(json: &[u8]) -> Result<DdlJob, CodecError> {
        serde_json::from_slice(json).map_err(|e| CodecError::invalid("ddl job json", e.to_string()))
    }

    /// Serializes the job back to JSON (unknown keys included).
    pub fn to_json(&self) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(self).map_err(|e| CodecError::invalid("ddl job json", e.to_string()))
    }

    /// The argument at `index` of a version-1 (array) `raw_args`.
    fn arg_v1(&self, index: usize) -> Option<&Value> {
        match &self.raw_args {
            Some(Value::Array(args)) => args.get(index),
            _ => None,
        }
    }

    /// The argument `key` of a version-2 (object) `raw_args`.
    fn arg_v2(&self, key: &str) -> Option<&Value> {
        match &self.raw_args {
            Some(Value::Object(args)) => args.get(key),
            _ => None,
        }
    }
}

/// Which tables' DML a DDL orders itself against: every change of these with a smaller commit ts
/// is written before the DDL, none with a larger one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockScope {
    /// These table ids, logical and physical, old and new. Empty = the DDL blocks no DML (for
    /// example placement or resource-group changes).
    Tables(Vec<i64>),
    /// Every table of this database (id).
    Database(i64),
    /// Every table of the changefeed.
    Cluster,
}

/// A finished DDL, as the dataflow and the sinks consume it.
///
/// Built by [`DdlEvent::from_job`] from the job row committed in state *done*. It carries the
/// schema after the DDL; what the schema was before (the old name of a renamed table, the old
/// partition ids of a reorganised table) is known only to whoever keeps schema history, which
/// adds it with [`DdlEvent::with_previous`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdlEvent {
    /// Commit ts of the job row that finished the DDL; the DDL takes effect at this ts.
    pub commit_ts: Ts,
    /// Start ts of that transaction.
    pub start_ts: Ts,
    /// TiDB job id.
    pub job_id: i64,
    /// What the DDL does.
    pub action: ActionType,
    /// The SQL text.
    pub query: String,
    /// Schema version after the DDL.
    pub schema_version: i64,
    /// Database id (for a cross-database rename: the new database).
    pub schema_id: i64,
    /// Database name (after the DDL).
    pub schema_name: String,
    /// Logical table id after the DDL (0 for database-level DDL).
    pub table_id: i64,
    /// Table name after the DDL (empty for database-level DDL).
    pub table_name: String,
    /// The table after the DDL; `None` for database-level DDL and after drops.
    pub table_info: Option<Box<TableInfo>>,
    /// The database after a database-level DDL.
    pub db_info: Option<Box<DBInfo>>,
    /// The tables after a multi-table DDL (`CREATE TABLES`, `RENAME TABLES`).
    pub multiple_table_infos: Vec<TableInfo>,
    /// The logical table id before the DDL when it changed (`TRUNCATE TABLE`, partitioning
    /// changes), or the other table of an `EXCHANGE PARTITION`.
    pub old_table_id: Option<i64>,
    /// The database id before a `RENAME TABLE`.
    pub old_schema_id: Option<i64>,
    /// The database name before a `RENAME TABLE`.
    pub old_schema_name: Option<String>,
    /// The table name before a `RENAME TABLE` (set by [`DdlEvent::with_previous`]).
    pub old_table_name: Option<String>,
    /// Physical ids the DDL retired or swapped out (old partitions of a truncate/partition DDL).
    pub old_physical_table_ids: Vec<i64>,
}

fn json_i64(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_i64)
}

fn json_ids(v: Option<&Value>) -> Vec<i64> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_i64).collect(),
        _ => Vec::new(),
    }
}

fn json_cistr(v: Option<&Value>) -> Option<String> {
    v.and_then(|v| serde_json::from_value::<CIStr>(v.clone()).ok())
        .map(|c| c.O)
        .filter(|s| !s.is_empty())
}

impl DdlEvent {
    /// Builds the event of a finished job committed at `commit_ts`.
    ///
    /// Fails unless the job is done or synced: a running, cancelled or rolled-back job changed
    /// nothing and must not reach a sink. Arguments TiDB records for renames and truncations are
    /// read on a best-effort basis (job versions 1 and 2); a job whose arguments do not parse
    /// still yields an event.
    pub fn from_job(job: &DdlJob, commit_ts: impl Into<Ts>) -> Result<DdlEvent, CodecError> {
        if !job.state.is_done() && !job.state.is_synced() {
            return Err(CodecError::invalid(
                "ddl job",
                format!(
                    "job {} ({}) is in state {} ({}), not done",
                    job.id,
                    job.action_type,
                    job.state.0,
                    job.state.name()
                ),
            ));
        }
        let binlog = job.binlog.clone().unwrap_or_default();
        let table_info = binlog.table_info.map(Box::new);
        let db_info = binlog.db_info.map(Box::new);
        let action = job.action_type;

        let schema_name = if !job.schema_name.is_empty() {
            job.schema_name.clone()
        } else {
            db_info
                .as_ref()
                .map(|d| d.db_name.O.clone())
                .unwrap_or_default()
        };
        let (table_id, table_name) = match &table_info {
            Some(t) => (t.id, t.name.O.clone()),
            None => (job.table_id, job.table_name.clone()),
        };

        let multi_table = matches!(
            action,
            ActionType::CREATE_TABLES | ActionType::RENAME_TABLES
        );
        let old_table_id = match &table_info {
            Some(t) if !multi_table && job.table_id != 0 && job.table_id != t.id => {
                Some(job.table_id)
            }
            _ => None,
        };

        let (mut old_schema_id, mut old_schema_name) = (None, None);
        if action == ActionType::RENAME_TABLE {
            old_schema_id =
                json_i64(job.arg_v1(0)).or_else(|| json_i64(job.arg_v2("old_schema_id")));
            old_schema_name =
                json_cistr(job.arg_v1(2)).or_else(|| json_cistr(job.arg_v2("old_schema_name")));
        }

        let mut old_physical_table_ids = Vec::new();
        if action == ActionType::TRUNCATE_TABLE {
            // v1 finished args: [start_key, old_partition_ids]; v2: an object.
            old_physical_table_ids = json_ids(job.arg_v1(1));
            old_physical_table_ids.extend(json_ids(job.arg_v2("old_partition_ids")));
        }

        Ok(DdlEvent {
            commit_ts: commit_ts.into(),
            start_ts: Ts(job.start_ts),
            job_id: job.id,
            action,
            query: job.query.clone(),
            schema_version: binlog.schema_version,
            schema_id: job.schema_id,
            schema_name,
            table_id,
            table_name,
            table_info,
            db_info,
            multiple_table_infos: binlog.multiple_table_infos,
            old_table_id,
            old_schema_id,
            old_schema_name,
            old_table_name: None,
            old_physical_table_ids,
        })
    }

    /// Adds what the schema said before the DDL about the table it changed: its old name and
    /// the physical ids it had, so the block scope covers the retired partitions of a truncate,
    /// drop, reorganise or exchange. Call it with the table as it was just before `commit_ts`.
    pub fn with_previous(mut self, previous: &TableInfo) -> DdlEvent {
        if self.action == ActionType::RENAME_TABLE || self.table_name.is_empty() {
            self.old_table_name = Some(previous.name.O.clone());
        }
        let mut ids = previous.physical_table_ids();
        ids.push(previous.id);
        for id in ids {
            if !self.old_physical_table_ids.contains(&id) {
                self.old_physical_table_ids.push(id);
            }
        }
        self
    }

    /// True for DDL on a database rather than on tables.
    pub fn is_database_level(&self) -> bool {
        matches!(
            self.action,
            ActionType::CREATE_SCHEMA
                | ActionType::DROP_SCHEMA
                | ActionType::MODIFY_SCHEMA_CHARSET_AND_COLLATE
                | ActionType::MODIFY_SCHEMA_DEFAULT_PLACEMENT
                | ActionType::RECOVER_SCHEMA
                | ActionType::MODIFY_SCHEMA_READ_ONLY
        )
    }

    /// Every table id the DDL touches, logical and physical, before and after, sorted and
    /// without duplicates or zeros.
    pub fn affected_table_ids(&self) -> Vec<i64> {
        let mut ids = Vec::new();
        ids.push(self.table_id);
        if let Some(t) = &self.table_info {
            ids.push(t.id);
            ids.extend(t.physical_table_ids());
        }
        for t in &self.multiple_table_infos {
            ids.push(t.id);
            ids.extend(t.physical_table_ids());
        }
        ids.extend(self.old_table_id);
        ids.extend(self.old_physical_table_ids.iter().copied());
        ids.retain(|id| *id != 0);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Which DML the DDL must be ordered against.
    ///
    /// - Database DDL (create/drop/alter/recover database) → [`BlockScope::Database`]: a drop
    ///   removes every table of the database.
    /// - `FLASHBACK CLUSTER` → [`BlockScope::Cluster`]: it rewrites every table.
    /// - `CREATE VIEW` → [`BlockScope::Cluster`]: the view may select from any table, so every
    ///   earlier change must be downstream before the view is created there.
    /// - Placement, resource-group and similar actions with no table → `Tables([])`.
    /// - Every other DDL → [`BlockScope::Tables`] with [`DdlEvent::affected_table_ids`]: old and
    ///   new ids of a truncate or a partition change, every table of a multi-table rename or
    ///   create. A rename across databases only moves the table, so it blocks that table alone.
    pub fn block_scope(&self) -> BlockScope {
        if self.is_database_level() {
            return BlockScope::Database(self.schema_id);
        }
        match self.action {
            ActionType::FLASHBACK_CLUSTER | ActionType::CREATE_VIEW => BlockScope::Cluster,
            ActionType::CREATE_PLACEMENT_POLICY
            | ActionType::ALTER_PLACEMENT_POLICY
            | ActionType::DROP_PLACEMENT_POLICY
            | ActionType::CREATE_RESOURCE_GROUP
            | ActionType::ALTER_RESOURCE_GROUP
            | ActionType::DROP_RESOURCE_GROUP => BlockScope::Tables(Vec::new()),
            _ => BlockScope::Tables(self.affected_table_ids()),
        }
    }
}
