//! TiDB's schema JSON: `DBInfo`, `TableInfo`, `ColumnInfo`, `IndexInfo`, as TiDB stores them in
//! its meta keys and in DDL job history.
//!
//! Tidal reads these documents from two places: the meta keys of an initial snapshot and the
//! `binlog` of every finished DDL job. Both are written by whatever TiDB version the cluster runs,
//! so the types here are deliberately forgiving:
//!
//! - every key that Tidal reads is a typed field with a default, so an older TiDB that lacks a
//!   newer key still parses;
//! - Go writes nil slices as `null`, so every list accepts `null` as empty;
//! - every struct keeps the keys it does not know in `extra`, so a document read from TiDB
//!   serializes back without losing anything (a sink that replays DDL, or a schema snapshot that
//!   is persisted and reloaded, must not silently drop fields a newer TiDB added);
//! - enumerations TiDB may extend (schema states) are integer newtypes, never a parse error.
//!
//! The helpers on [`TableInfo`] answer the questions the decoder and the sinks ask: which columns
//! a row holds ([`TableInfo::public_columns`]), how the row key maps to columns
//! ([`TableInfo::handle_columns`]), which key ranges hold the table's rows
//! ([`TableInfo::physical_table_ids`]), and which column sets identify a row
//! ([`TableInfo::unique_keys`]).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::mysql;

/// Column id of TiDB's hidden `_tidb_rowid` handle (`ExtraHandleID`); not a real column.
pub const EXTRA_HANDLE_ID: i64 = -1;

/// Name of TiDB's hidden row-id handle column.
pub const EXTRA_HANDLE_NAME: &str = "_tidb_rowid";

/// Deserializes a list that Go may have written as `null` (a nil slice) into an empty `Vec`.
pub(crate) fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<Vec<T>>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// Deserializes a string that Go may have written as `null` into an empty string.
pub(crate) fn null_as_empty_string<'de, D>(deserializer: D) -> Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer).map(Option::unwrap_or_default)
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// A case-insensitive identifier as TiDB stores it (`{"O": original, "L": lowercase}`).
///
/// The field names are TiDB's own so that code reading `name.O` / `name.L` in TiDB translates
/// directly.
#[allow(non_snake_case)]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct CIStr {
    /// The name as the user wrote it.
    #[serde(rename = "O", default, deserialize_with = "null_as_empty_string")]
    pub O: String,
    /// The lowercased name, used for comparisons.
    #[serde(rename = "L", default, deserialize_with = "null_as_empty_string")]
    pub L: String,
}

impl CIStr {
    /// A name with its lowercase form computed.
    pub fn new(name: impl Into<String>) -> Self {
        let original = name.into();
        let lower = original.to_lowercase();
        CIStr {
            O: original,
            L: lower,
        }
    }

    /// The name as the user wrote it.
    pub fn original(&self) -> &str {
        &self.O
    }

    /// The lowercase form.
    pub fn lower(&self) -> &str {
        &self.L
    }

    /// Case-insensitive comparison with `name` (against the lowercase form).
    pub fn matches(&self, name: &str) -> bool {
        self.L == name.to_lowercase()
    }
}

impl std::fmt::Display for CIStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.O)
    }
}

/// The state of a schema element during an online schema change (`model.SchemaState`).
///
/// An integer newtype rather than an enum: a newer TiDB may add states, and an unknown state must
/// not make a whole `TableInfo` unreadable. Only [`SchemaState::PUBLIC`] elements are visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SchemaState(pub u8);

impl SchemaState {
    /// Absent; cannot be used.
    pub const NONE: SchemaState = SchemaState(0);
    /// Only deletes are applied to it.
    pub const DELETE_ONLY: SchemaState = SchemaState(1);
    /// Writes are applied, reads do not see it.
    pub const WRITE_ONLY: SchemaState = SchemaState(2);
    /// Existing data is being reorganised after write-only.
    pub const WRITE_REORGANIZATION: SchemaState = SchemaState(3);
    /// Existing data is being reorganised after delete-only.
    pub const DELETE_REORGANIZATION: SchemaState = SchemaState(4);
    /// Fully visible.
    pub const PUBLIC: SchemaState = SchemaState(5);
    /// Waiting for TiFlash replicas.
    pub const REPLICA_ONLY: SchemaState = SchemaState(6);
    /// Only global transactions may use it.
    pub const GLOBAL_TXN_ONLY: SchemaState = SchemaState(7);

    /// True for [`SchemaState::PUBLIC`].
    pub fn is_public(self) -> bool {
        self == Self::PUBLIC
    }

    /// TiDB's name for the state (`"public"`, `"write only"`, …); `"none"` for unknown values.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "delete only",
            2 => "write only",
            3 => "write reorganization",
            4 => "delete reorganization",
            5 => "public",
            6 => "replica only",
            7 => "global txn only",
            _ => "none",
        }
    }
}

/// A database (`model.DBInfo`), stored under the meta hash `DBs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DBInfo {
    /// Database id.
    #[serde(default)]
    pub id: i64,
    /// Database name.
    #[serde(default)]
    pub db_name: CIStr,
    /// Default character set.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub charset: String,
    /// Default collation.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub collate: String,
    /// Schema state of the database.
    #[serde(default)]
    pub state: SchemaState,
    /// Placement policy reference, kept as JSON.
    #[serde(default)]
    pub policy_ref_info: Option<Value>,
    /// Keys this version of Tidal does not interpret, kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A column (`model.ColumnInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ColumnInfo {
    /// Column id: the id used in encoded rows. Never reused within a table.
    #[serde(default)]
    pub id: i64,
    /// Column name.
    #[serde(default)]
    pub name: CIStr,
    /// Position in the table's `cols`.
    #[serde(default)]
    pub offset: i64,
    /// The default in effect when the column was added: the value of rows written before the
    /// `ADD COLUMN` (usually a JSON string parsed by type; `null` = no default).
    #[serde(default)]
    pub origin_default: Option<Value>,
    /// For BIT columns, the origin default's bytes (Go `[]byte`, so base64 text in JSON).
    #[serde(default)]
    pub origin_default_bit: Option<Value>,
    /// The current default value.
    #[serde(default)]
    pub default: Option<Value>,
    /// For BIT columns, the current default's bytes (base64 text in JSON).
    #[serde(default)]
    pub default_bit: Option<Value>,
    /// True if `default` is an expression rather than a literal.
    #[serde(default)]
    pub default_is_expr: bool,
    /// Generation expression; empty for ordinary columns.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub generated_expr_string: String,
    /// True for a STORED generated column (it is in the row); false for VIRTUAL.
    #[serde(default)]
    pub generated_stored: bool,
    /// Columns a generated column depends on (Go `map[string]struct{}`), kept as JSON.
    #[serde(default)]
    pub dependences: Option<Value>,
    /// The column's type.
    #[serde(rename = "type", default)]
    pub field_type: FieldType,
    /// Schema state; only public columns are visible.
    #[serde(default)]
    pub state: SchemaState,
    /// Column comment.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub comment: String,
    /// True for hidden columns (expression indexes).
    #[serde(default)]
    pub hidden: bool,
    /// State of a column being modified, kept as JSON.
    #[serde(default)]
    pub change_state_info: Option<Value>,
    /// Column-info version (affects how TIMESTAMP defaults are read: 0 = server time zone,
    /// ≥ 1 = UTC).
    #[serde(default)]
    pub version: u64,
    /// Keys this version of Tidal does not interpret, kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ColumnInfo {
    /// The column's type.
    pub fn field_type(&self) -> &FieldType {
        &self.field_type
    }

    /// True for generated columns (stored or virtual).
    pub fn is_generated(&self) -> bool {
        !self.generated_expr_string.is_empty()
    }

    /// True for VIRTUAL generated columns, which are never present in an encoded row.
    pub fn is_generated_virtual(&self) -> bool {
        self.is_generated() && !self.generated_stored
    }

    /// True if the column is in the public state.
    pub fn is_public(&self) -> bool {
        self.state.is_public()
    }

    /// True if the column has the PRIMARY KEY flag.
    pub fn is_pri_key(&self) -> bool {
        self.field_type.flag & mysql::FLAG_PRI_KEY != 0
    }

    /// True if the column has the NOT NULL flag.
    pub fn is_not_null(&self) -> bool {
        self.field_type.flag & mysql::FLAG_NOT_NULL != 0
    }
}

/// One column of an index (`model.IndexColumn`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IndexColumn {
    /// Column name.
    #[serde(default)]
    pub name: CIStr,
    /// Position of the column in the table's `cols`.
    #[serde(default)]
    pub offset: i64,
    /// Prefix length, or −1 for the full column.
    #[serde(default = "minus_one")]
    pub length: i64,
    /// Keys this version of Tidal does not interpret, kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn minus_one() -> i64 {
    -1
}

impl IndexColumn {
    /// True if the index stores the whole column (no prefix length).
    pub fn is_full_length(&self) -> bool {
        self.length < 0
    }
}

/// An index (`model.IndexInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IndexInfo {
    /// Index id.
    #[serde(default)]
    pub id: i64,
    /// Index name.
    #[serde(default)]
    pub idx_name: CIStr,
    /// Table name.
    #[serde(default)]
    pub tbl_name: CIStr,
    /// The indexed columns, in index order.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub idx_cols: Vec<IndexColumn>,
    /// Schema state; only public indexes are enforced.
    #[serde(default)]
    pub state: SchemaState,
    /// Backfill state of an index being added.
    #[serde(default)]
    pub backfill_state: i64,
    /// Index comment.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub comment: String,
    /// Index type (B-tree, hash, …).
    #[serde(default)]
    pub index_type: i64,
    /// True for UNIQUE indexes (the primary index included).
    #[serde(default)]
    pub is_unique: bool,
    /// True for the PRIMARY KEY index.
    #[serde(default)]
    pub is_primary: bool,
    /// True for invisible indexes.
    #[serde(default)]
    pub is_invisible: bool,
    /// True for global indexes of partitioned tables.
    #[serde(default)]
    pub is_global: bool,
    /// True for multi-valued indexes.
    #[serde(default)]
    pub mv_index: bool,
    /// Keys this version of Tidal does not interpret, kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl IndexInfo {
    /// True for a partial index (one with a `WHERE` condition, newer TiDB only), which does not
    /// constrain every row.
    pub fn is_partial(&self) -> bool {
        ["condition_expr_string", "partial_condition_expr_string"]
            .iter()
            .any(|k| matches!(self.extra.get(*k), Some(Value::String(s)) if !s.is_empty()))
    }
}

/// One partition (`model.PartitionDefinition`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PartitionDefinition {
    /// Physical table id: the id in the keys of this partition's rows.
    #[serde(default)]
    pub id: i64,
    /// Partition name.
    #[serde(default)]
    pub name: CIStr,
    /// Upper bounds of a RANGE partition.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub less_than: Vec<String>,
    /// Value lists of a LIST partition.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub in_values: Vec<Vec<String>>,
    /// Placement policy reference, kept as JSON.
    #[serde(default)]
    pub policy_ref_info: Option<Value>,
    /// Keys this version of Tidal does not interpret (`comment`, …), kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A table's partitioning (`model.PartitionInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Partition type: 1 range, 2 hash, 3 list, 4 key, 5 system time.
    #[serde(rename = "type", default)]
    pub partition_type: i64,
    /// Partitioning expression.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub expr: String,
    /// Partitioning columns (RANGE/LIST COLUMNS, KEY).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub columns: Vec<CIStr>,
    /// True when partitioning is in effect (rows are keyed by partition ids).
    #[serde(default)]
    pub enable: bool,
    /// True for `PARTITION BY KEY()` with no columns.
    #[serde(default)]
    pub is_empty_columns: bool,
    /// The partitions.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub definitions: Vec<PartitionDefinition>,
    /// Partitions being added (mid-DDL).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub adding_definitions: Vec<PartitionDefinition>,
    /// Partitions being dropped or truncated (mid-DDL).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub dropping_definitions: Vec<PartitionDefinition>,
    /// Per-partition states, kept as JSON.
    #[serde(default)]
    pub states: Option<Value>,
    /// Number of partitions.
    #[serde(default)]
    pub num: u64,
    /// State of a partition reorganisation.
    #[serde(default)]
    pub ddl_state: SchemaState,
    /// New table id during `ALTER TABLE … PARTITION BY` / `REMOVE PARTITIONING`.
    #[serde(default)]
    pub new_table_id: i64,
    /// Keys this version of Tidal does not interpret (`NewPartitionIDs`, `ddl_type`, …), kept for
    /// round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A table, view or sequence (`model.TableInfo`), stored in the meta hash `DB:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TableInfo {
    /// Logical table id. For a non-partitioned table also the physical id in row keys.
    #[serde(default)]
    pub id: i64,
    /// Table name.
    #[serde(default)]
    pub name: CIStr,
    /// Default character set.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub charset: String,
    /// Default collation.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub collate: String,
    /// All columns, including non-public ones, in table order.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub cols: Vec<ColumnInfo>,
    /// All indexes, including non-public ones.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub index_info: Vec<IndexInfo>,
    /// CHECK constraints, kept as JSON.
    #[serde(default)]
    pub constraint_info: Option<Value>,
    /// Foreign keys, kept as JSON.
    #[serde(default)]
    pub fk_info: Option<Value>,
    /// Schema state of the table.
    #[serde(default)]
    pub state: SchemaState,
    /// True when the primary key is a single integer column used as the row handle.
    #[serde(default)]
    pub pk_is_handle: bool,
    /// True for a clustered non-integer primary key (common handle).
    #[serde(default)]
    pub is_common_handle: bool,
    /// Clustered-index version.
    #[serde(default)]
    pub common_handle_version: u16,
    /// Table comment.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub comment: String,
    /// Auto-increment base.
    #[serde(default)]
    pub auto_inc_id: i64,
    /// AUTO_ID_CACHE.
    #[serde(default)]
    pub auto_id_cache: i64,
    /// Auto-random base.
    #[serde(default)]
    pub auto_rand_id: i64,
    /// Largest column id ever allocated.
    #[serde(default)]
    pub max_col_id: i64,
    /// Largest index id ever allocated.
    #[serde(default)]
    pub max_idx_id: i64,
    /// Largest foreign-key id ever allocated.
    #[serde(default)]
    pub max_fk_id: i64,
    /// Largest constraint id ever allocated.
    #[serde(default)]
    pub max_cst_id: i64,
    /// TSO of the last schema change of this table.
    #[serde(default)]
    pub update_timestamp: u64,
    /// Schema id the auto-id allocator belongs to after a cross-database rename (omitted if 0).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub old_schema_id: i64,
    /// SHARD_ROW_ID_BITS (Go field without a json tag, hence the Go name).
    #[serde(rename = "ShardRowIDBits", default)]
    pub shard_row_id_bits: u64,
    /// Largest SHARD_ROW_ID_BITS used so far.
    #[serde(default)]
    pub max_shard_row_id_bits: u64,
    /// AUTO_RANDOM shard bits.
    #[serde(default)]
    pub auto_random_bits: u64,
    /// AUTO_RANDOM range bits.
    #[serde(default)]
    pub auto_random_range_bits: u64,
    /// PRE_SPLIT_REGIONS.
    #[serde(default)]
    pub pre_split_regions: u64,
    /// Partitioning, or `None` for a non-partitioned table.
    #[serde(default)]
    pub partition: Option<PartitionInfo>,
    /// Compression.
    #[serde(default, deserialize_with = "null_as_empty_string")]
    pub compression: String,
    /// Non-null for a view (which has no rows).
    #[serde(default)]
    pub view: Option<Value>,
    /// Non-null for a sequence.
    #[serde(default)]
    pub sequence: Option<Value>,
    /// Table lock info (Go key `Lock`), kept as JSON.
    #[serde(rename = "Lock", default)]
    pub lock: Option<Value>,
    /// Table-info version (currently 5).
    #[serde(default)]
    pub version: u16,
    /// TiFlash replica info, kept as JSON.
    #[serde(default)]
    pub tiflash_replica: Option<Value>,
    /// True for a TiFlash-only (columnar) table.
    #[serde(default)]
    pub is_columnar: bool,
    /// Temporary table type: 0 none, 1 global, 2 local.
    #[serde(default)]
    pub temp_table_type: u8,
    /// Cached-table status: 0 disabled, 1 enabled, 2 switching.
    #[serde(default)]
    pub cache_table_status: i64,
    /// Placement policy reference, kept as JSON.
    #[serde(default)]
    pub policy_ref_info: Option<Value>,
    /// Statistics options, kept as JSON.
    #[serde(default)]
    pub stats_options: Option<Value>,
    /// Exchange-partition info, kept as JSON.
    #[serde(default)]
    pub exchange_partition_info: Option<Value>,
    /// TTL info, kept as JSON.
    #[serde(default)]
    pub ttl_info: Option<Value>,
    /// Per-table schema revision.
    #[serde(default)]
    pub revision: u64,
    /// Keys this version of Tidal does not interpret, kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How a table's row key (its handle) maps to columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandleKind {
    /// `pk_is_handle`: the key holds the value of a single integer primary-key column.
    IntPk {
        /// The primary-key column's id.
        col_id: i64,
        /// True if that column is UNSIGNED (the key's i64 is then read as u64).
        unsigned: bool,
    },
    /// `is_common_handle`: the key holds the clustered primary key's values, one per column, in
    /// primary-index order.
    Common {
        /// The primary-index columns' ids, in index order.
        col_ids: Vec<i64>,
    },
    /// No clustered key: the key holds the hidden `_tidb_rowid`, which is not a column.
    HiddenRowId,
}

impl TableInfo {
    /// Parses a `TableInfo` JSON document.
    pub fn from_json(json: &[u8]) -> Result<TableInfo, crate::CodecError> {
        serde_json::from_slice(json)
            .map_err(|e| crate::CodecError::invalid("table info json", e.to_string()))
    }

    /// The visible (state public) columns, in `cols` order.
    ///
    /// Decoded rows are positionally aligned with this list (see [`crate::change::RowChange`]).
    /// TiDB keeps `cols` in `offset` order, so this is also the `SELECT *` order.
    pub fn public_columns(&self) -> Vec<&ColumnInfo> {
        self.cols.iter().filter(|c| c.is_public()).collect()
    }

    /// The column (in any state) with id `id`.
    pub fn column_by_id(&self, id: i64) -> Option<&ColumnInfo> {
        self.cols.iter().find(|c| c.id == id)
    }

    /// The column (in any state) named `name`, compared case-insensitively.
    pub fn column_by_name(&self, name: &str) -> Option<&ColumnInfo> {
        let lower = name.to_lowercase();
        self.cols.iter().find(|c| c.name.L == lower)
    }

    /// The column (in any state) at `offset` of `cols`, as an index column refers to it.
    pub fn column_by_offset(&self, offset: i64) -> Option<&ColumnInfo> {
        usize::try_from(offset).ok().and_then(|o| self.cols.get(o))
    }

    /// The PRIMARY KEY index, if the table has one as an index. A `pk_is_handle` table has no
    /// primary index entry: its key is the integer handle.
    pub fn primary_index(&self) -> Option<&IndexInfo> {
        self.index_info.iter().find(|i| i.is_primary)
    }

    /// The integer primary-key column of a `pk_is_handle` table.
    pub fn pk_handle_column(&self) -> Option<&ColumnInfo> {
        if !self.pk_is_handle {
            return None;
        }
        self.cols.iter().find(|c| c.is_pri_key())
    }

    /// Resolves an index column to its table column: by name (robust against stale offsets),
    /// else by offset.
    fn index_column(&self, ic: &IndexColumn) -> Option<&ColumnInfo> {
        self.cols
            .iter()
            .find(|c| c.name.L == ic.name.L && !ic.name.L.is_empty())
            .or_else(|| self.column_by_offset(ic.offset))
    }

    /// How the row handle maps to columns.
    ///
    /// `pk_is_handle` → the column with the PRIMARY KEY flag; `is_common_handle` → the primary
    /// index's columns in index order; otherwise the hidden `_tidb_rowid`. A table whose flags
    /// promise a key that its metadata does not describe falls back to
    /// [`HandleKind::HiddenRowId`] (its handle is then reported, not mapped to a column).
    pub fn handle_columns(&self) -> HandleKind {
        if self.pk_is_handle {
            if let Some(col) = self.pk_handle_column() {
                return HandleKind::IntPk {
                    col_id: col.id,
                    unsigned: col.field_type.is_unsigned(),
                };
            }
        } else if self.is_common_handle
            && let Some(pk) = self.primary_index()
        {
            let col_ids: Option<Vec<i64>> = pk
                .idx_cols
                .iter()
                .map(|ic| self.index_column(ic).map(|c| c.id))
                .collect();
            if let Some(col_ids) = col_ids {
                return HandleKind::Common { col_ids };
            }
        }
        HandleKind::HiddenRowId
    }

    /// The ids that appear in this table's row keys: the partition ids for a partitioned table,
    /// otherwise the table's own id.
    pub fn physical_table_ids(&self) -> Vec<i64> {
        match &self.partition {
            Some(p) if !p.definitions.is_empty() => p.definitions.iter().map(|d| d.id).collect(),
            _ => vec![self.id],
        }
    }

    /// True if `physical_id` keys rows of this table (the table id or one of its partitions).
    pub fn owns_physical_id(&self, physical_id: i64) -> bool {
        physical_id == self.id
            || self
                .partition
                .as_ref()
                .is_some_and(|p| p.definitions.iter().any(|d| d.id == physical_id))
    }

    /// True for a view (no rows).
    pub fn is_view(&self) -> bool {
        self.view.as_ref().is_some_and(|v| !v.is_null())
    }

    /// True for a sequence.
    pub fn is_sequence(&self) -> bool {
        self.sequence.as_ref().is_some_and(|v| !v.is_null())
    }

    /// True for an ordinary table (neither a view nor a sequence).
    pub fn is_base_table(&self) -> bool {
        !self.is_view() && !self.is_sequence()
    }

    /// The column-id sets that identify a row, for sinks that detect conflicts or build
    /// `WHERE` clauses: the primary key first (the integer handle column of a `pk_is_handle`
    /// table, or the primary index), then every public, non-partial unique index whose columns
    /// are all NOT NULL and public. Prefix-indexed columns are included as whole columns (equal
    /// rows still conflict). Empty when no such key exists.
    pub fn unique_keys(&self) -> Vec<Vec<i64>> {
        let mut keys: Vec<Vec<i64>> = Vec::new();
        if let Some(col) = self.pk_handle_column() {
            keys.push(vec![col.id]);
        }
        let mut indexes: Vec<&IndexInfo> = self
            .index_info
            .iter()
            .filter(|i| i.state.is_public() && (i.is_primary || i.is_unique) && !i.is_partial())
            .collect();
        // Primary first, then by index id, so the choice of "the" key is stable.
        indexes.sort_by_key(|i| (!i.is_primary, i.id));
        for idx in indexes {
            let cols: Option<Vec<i64>> = idx
                .idx_cols
                .iter()
                .map(|ic| {
                    self.index_column(ic)
                        .filter(|c| c.is_public() && (idx.is_primary || c.is_not_null()))
                        .map(|c| c.id)
                })
                .collect();
            if let Some(cols) = cols
                && !cols.is_empty()
                && !keys.contains(&cols)
            {
                keys.push(cols);
            }
        }
        keys
    }

    /// `` `db`.`table` `` with backquotes doubled inside names, for logs and SQL.
    pub fn qualified_name(&self, db: &str) -> String {
        format!(
            "`{}`.`{}`",
            db.replace('`', "``"),
            self.name.O.replace('`', "``")
        )
    }
}

/// A column's type as TiDB serializes it (`types.FieldType`, capitalised JSON keys).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FieldType {
    /// MySQL type code (see [`crate::mysql`]).
    #[serde(rename = "Tp")]
    pub tp: u8,
    /// Column flags (see [`crate::mysql`]'s `FLAG_*`).
    #[serde(rename = "Flag", default)]
    pub flag: u32,
    /// Display width or length.
    #[serde(rename = "Flen", default)]
    pub flen: i64,
    /// Scale for DECIMAL, fractional-seconds precision for time types; -1 when unspecified.
    #[serde(rename = "Decimal", default)]
    pub decimal: i64,
    /// Character set name.
    #[serde(rename = "Charset", default)]
    pub charset: String,
    /// Collation name.
    #[serde(rename = "Collate", default)]
    pub collate: String,
    /// ENUM and SET elements.
    #[serde(rename = "Elems", default)]
    pub elems: Option<Vec<String>>,
    /// Which elements were written as binary literals.
    #[serde(rename = "ElemsIsBinaryLit", default)]
    pub elems_is_binary_lit: Option<Vec<bool>>,
    /// True for array types (multi-valued indexes).
    #[serde(rename = "Array", default)]
    pub array: bool,
}

impl FieldType {
    /// True if the UNSIGNED flag is set.
    pub fn is_unsigned(&self) -> bool {
        self.flag & crate::mysql::FLAG_UNSIGNED != 0
    }
}
