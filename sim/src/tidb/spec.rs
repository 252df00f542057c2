//! The typed description of a table a caller asks for ([`TableSpec`]), how it becomes TiDB's
//! `TableInfo` (ids, offsets, flags, the clustered-key shape), and the SQL text TiDB would have
//! recorded for it.
//!
//! The SQL text matters beyond looks: a MySQL sink replays a DDL by executing the job's `query`
//! downstream, so every statement generated here must be valid MySQL (and MariaDB). Names are
//! always qualified with their database so that the text runs whatever the session's current
//! database is.

use serde_json::Value;
use tidal_model::Datum;
use tidal_model::mysql;
use tidal_model::schema::{
    CIStr, ColumnInfo, FieldType, IndexColumn, IndexInfo, SchemaState, TableInfo,
};

use super::TidbError;
use super::types::{is_lob, quote_ident, sql_literal, sql_type, value_text};

/// One column of a [`TableSpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// Column type (see [`super::types`] for constructors).
    pub ft: FieldType,
    /// True if the column accepts NULL.
    pub nullable: bool,
    /// The default value; `None` = no DEFAULT clause (NULL for a nullable column).
    pub default: Option<Datum>,
}

impl ColumnSpec {
    /// A nullable column without a default.
    pub fn new(name: impl Into<String>, ft: FieldType) -> Self {
        Self {
            name: name.into(),
            ft,
            nullable: true,
            default: None,
        }
    }

    /// The same column, NOT NULL.
    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }

    /// The same column with a DEFAULT.
    pub fn default(mut self, value: Datum) -> Self {
        self.default = Some(value);
        self
    }
}

/// The primary key of a [`TableSpec`], which decides the row key (the handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryKey {
    /// No primary key: rows are keyed by the hidden `_tidb_rowid`.
    None,
    /// A single integer column used as the int handle (`pk_is_handle`).
    IntHandle(String),
    /// A clustered primary key over these columns (`is_common_handle`): the row key holds their
    /// comparable encoding.
    Clustered(Vec<String>),
    /// A non-clustered primary key: a unique index, rows keyed by `_tidb_rowid`.
    NonClustered(Vec<String>),
}

/// A secondary index of a [`TableSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    /// Index name.
    pub name: String,
    /// Indexed columns, in index order.
    pub columns: Vec<String>,
    /// True for a UNIQUE index.
    pub unique: bool,
}

impl IndexSpec {
    /// A non-unique index.
    pub fn new(name: impl Into<String>, columns: &[&str]) -> Self {
        Self {
            name: name.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            unique: false,
        }
    }

    /// A unique index.
    pub fn unique(name: impl Into<String>, columns: &[&str]) -> Self {
        Self {
            unique: true,
            ..Self::new(name, columns)
        }
    }
}

/// What `create_table` builds: columns, a primary key and indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
    /// Columns in table order.
    pub columns: Vec<ColumnSpec>,
    /// The primary key.
    pub primary_key: PrimaryKey,
    /// Secondary indexes.
    pub indexes: Vec<IndexSpec>,
}

impl TableSpec {
    /// A table with these columns and no key or index yet.
    pub fn new(name: impl Into<String>, columns: Vec<ColumnSpec>) -> Self {
        Self {
            name: name.into(),
            columns,
            primary_key: PrimaryKey::None,
            indexes: Vec::new(),
        }
    }

    /// Sets the primary key.
    pub fn primary_key(mut self, pk: PrimaryKey) -> Self {
        self.primary_key = pk;
        self
    }

    /// Adds a secondary index.
    pub fn index(mut self, index: IndexSpec) -> Self {
        self.indexes.push(index);
        self
    }
}

fn bad(detail: impl Into<String>) -> TidbError {
    TidbError::Invalid(detail.into())
}

/// Builds the `ColumnInfo` of a column spec (id and offset given), validating its default.
pub(crate) fn column_info(
    spec: &ColumnSpec,
    id: i64,
    offset: usize,
) -> Result<ColumnInfo, TidbError> {
    let mut ft = spec.ft.clone();
    if !spec.nullable {
        ft.flag |= mysql::FLAG_NOT_NULL;
    }
    let default = match &spec.default {
        None => None,
        Some(d) => {
            if is_lob(&ft) || ft.tp == mysql::TYPE_BIT {
                return Err(bad(format!(
                    "column {}: this type cannot have a literal default",
                    spec.name
                )));
            }
            if d.is_null() && !spec.nullable {
                return Err(bad(format!(
                    "column {}: NOT NULL with DEFAULT NULL",
                    spec.name
                )));
            }
            // Round-trips through the encoder: a default of the wrong kind fails here.
            if !d.is_null() {
                tidal_model::rowcodec::encode_column_v2(d, &ft)?;
            }
            value_text(d, &ft)?.map(Value::String).or(Some(Value::Null))
        }
    };
    if spec.default.is_none() && !spec.nullable {
        ft.flag |= mysql::FLAG_NO_DEFAULT_VALUE;
    }
    Ok(ColumnInfo {
        id,
        name: CIStr::new(spec.name.clone()),
        offset: i64::try_from(offset).unwrap_or(i64::MAX),
        origin_default: None,
        default,
        field_type: ft,
        state: SchemaState::PUBLIC,
        version: 2,
        ..ColumnInfo::default()
    })
}

/// The column spec a `ColumnInfo` describes (for generating SQL from an existing table).
fn column_spec_of(col: &ColumnInfo) -> Result<ColumnSpec, TidbError> {
    let mut ft = col.field_type.clone();
    ft.flag &= !(mysql::FLAG_NOT_NULL
        | mysql::FLAG_PRI_KEY
        | mysql::FLAG_UNIQUE_KEY
        | mysql::FLAG_MULTIPLE_KEY
        | mysql::FLAG_NO_DEFAULT_VALUE);
    let default = match &col.default {
        None => None,
        Some(Value::Null) => Some(Datum::Null),
        Some(Value::String(_)) => {
            let probe = ColumnInfo {
                origin_default: col.default.clone(),
                ..col.clone()
            };
            Some(tidal_model::decode::origin_default_datum(&probe)?)
        }
        Some(other) => return Err(bad(format!("column {}: default {other}", col.name.O))),
    };
    Ok(ColumnSpec {
        name: col.name.O.clone(),
        ft,
        nullable: !col.is_not_null(),
        default,
    })
}

fn find_offset(cols: &[ColumnInfo], name: &str) -> Result<usize, TidbError> {
    let lower = name.to_lowercase();
    cols.iter()
        .position(|c| c.name.L == lower)
        .ok_or_else(|| bad(format!("no column {name}")))
}

/// Builds an `IndexInfo` over `columns` of `cols`.
pub(crate) fn index_info(
    cols: &mut [ColumnInfo],
    table: &str,
    id: i64,
    name: &str,
    columns: &[String],
    unique: bool,
    primary: bool,
) -> Result<IndexInfo, TidbError> {
    if columns.is_empty() {
        return Err(bad(format!("index {name} has no columns")));
    }
    let mut idx_cols = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let off = find_offset(cols, c)?;
        let col = cols.get_mut(off).ok_or_else(|| bad("column offset"))?;
        if is_lob(&col.field_type) {
            return Err(bad(format!(
                "index {name}: column {c} cannot be indexed without a prefix"
            )));
        }
        if primary {
            col.field_type.flag |= mysql::FLAG_PRI_KEY | mysql::FLAG_NOT_NULL;
        } else if i == 0 {
            col.field_type.flag |= if unique && columns.len() == 1 {
                mysql::FLAG_UNIQUE_KEY
            } else {
                mysql::FLAG_MULTIPLE_KEY
            };
        }
        idx_cols.push(IndexColumn {
            name: col.name.clone(),
            offset: i64::try_from(off).unwrap_or(i64::MAX),
            length: -1,
            ..IndexColumn::default()
        });
    }
    Ok(IndexInfo {
        id,
        idx_name: CIStr::new(if primary { "PRIMARY" } else { name }),
        tbl_name: CIStr::new(table),
        idx_cols,
        state: SchemaState::PUBLIC,
        index_type: 1, // B-tree
        is_unique: unique || primary,
        is_primary: primary,
        ..IndexInfo::default()
    })
}

/// Builds the `TableInfo` of a spec with table id `id` (the caller allocated it).
pub(crate) fn table_info(spec: &TableSpec, id: i64) -> Result<TableInfo, TidbError> {
    if spec.columns.is_empty() {
        return Err(bad(format!("table {} has no columns", spec.name)));
    }
    let mut cols = Vec::with_capacity(spec.columns.len());
    for (i, c) in spec.columns.iter().enumerate() {
        let lower = c.name.to_lowercase();
        if cols.iter().any(|x: &ColumnInfo| x.name.L == lower) {
            return Err(bad(format!("duplicate column {}", c.name)));
        }
        let id = i64::try_from(i + 1).unwrap_or(i64::MAX);
        cols.push(column_info(c, id, i)?);
    }
    let mut indexes = Vec::new();
    let mut next_idx = 1i64;
    let (mut pk_is_handle, mut is_common_handle) = (false, false);
    match &spec.primary_key {
        PrimaryKey::None => {}
        PrimaryKey::IntHandle(c) => {
            let off = find_offset(&cols, c)?;
            let col = cols.get_mut(off).ok_or_else(|| bad("column offset"))?;
            if !mysql::is_integer_type(col.field_type.tp) || col.field_type.tp == mysql::TYPE_YEAR {
                return Err(bad(format!("int handle column {c} is not an integer")));
            }
            col.field_type.flag |= mysql::FLAG_PRI_KEY | mysql::FLAG_NOT_NULL;
            pk_is_handle = true;
        }
        PrimaryKey::Clustered(names) | PrimaryKey::NonClustered(names) => {
            let idx = index_info(
                &mut cols, &spec.name, next_idx, "PRIMARY", names, true, true,
            )?;
            indexes.push(idx);
            next_idx += 1;
            is_common_handle = matches!(spec.primary_key, PrimaryKey::Clustered(_));
        }
    }
    for ix in &spec.indexes {
        if indexes
            .iter()
            .any(|i: &IndexInfo| i.idx_name.L == ix.name.to_lowercase())
        {
            return Err(bad(format!("duplicate index {}", ix.name)));
        }
        indexes.push(index_info(
            &mut cols,
            &spec.name,
            next_idx,
            &ix.name,
            &ix.columns,
            ix.unique,
            false,
        )?);
        next_idx += 1;
    }
    let max_col_id = i64::try_from(cols.len()).unwrap_or(i64::MAX);
    Ok(TableInfo {
        id,
        name: CIStr::new(spec.name.clone()),
        charset: "utf8mb4".into(),
        collate: "utf8mb4_bin".into(),
        cols,
        index_info: indexes,
        state: SchemaState::PUBLIC,
        pk_is_handle,
        is_common_handle,
        common_handle_version: u16::from(is_common_handle),
        max_col_id,
        max_idx_id: next_idx - 1,
        version: 5,
        ..TableInfo::default()
    })
}

/// The column definition text: `` `c` INT NOT NULL DEFAULT 5 ``.
pub(crate) fn column_def_sql(spec: &ColumnSpec) -> Result<String, TidbError> {
    let mut s = format!("{} {}", quote_ident(&spec.name), sql_type(&spec.ft));
    s.push_str(if spec.nullable { " NULL" } else { " NOT NULL" });
    if let Some(d) = &spec.default {
        s.push_str(" DEFAULT ");
        s.push_str(&sql_literal(d, &spec.ft)?);
    }
    Ok(s)
}

fn ident_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(",")
}

/// `` `db`.`t` ``.
pub(crate) fn qualified(db: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(db), quote_ident(table))
}

/// The `CREATE TABLE` text of a spec.
pub(crate) fn create_table_sql(db: &str, spec: &TableSpec) -> Result<String, TidbError> {
    let mut parts = Vec::with_capacity(spec.columns.len() + spec.indexes.len() + 1);
    for c in &spec.columns {
        parts.push(column_def_sql(c)?);
    }
    match &spec.primary_key {
        PrimaryKey::None => {}
        PrimaryKey::IntHandle(c) => {
            parts.push(format!(
                "PRIMARY KEY ({}) /*T![clustered_index] CLUSTERED */",
                quote_ident(c)
            ));
        }
        PrimaryKey::Clustered(cs) => {
            parts.push(format!(
                "PRIMARY KEY ({}) /*T![clustered_index] CLUSTERED */",
                ident_list(cs)
            ));
        }
        PrimaryKey::NonClustered(cs) => {
            parts.push(format!(
                "PRIMARY KEY ({}) /*T![clustered_index] NONCLUSTERED */",
                ident_list(cs)
            ));
        }
    }
    for ix in &spec.indexes {
        parts.push(format!(
            "{} {} ({})",
            if ix.unique { "UNIQUE KEY" } else { "KEY" },
            quote_ident(&ix.name),
            ident_list(&ix.columns)
        ));
    }
    Ok(format!(
        "CREATE TABLE {} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        qualified(db, &spec.name),
        parts.join(", ")
    ))
}

/// The spec of an existing table's public columns, key and public indexes (the inverse of
/// building a `TableInfo`; `SHOW CREATE TABLE`-like).
pub fn spec_of(info: &TableInfo) -> Result<TableSpec, TidbError> {
    let cols = info
        .cols
        .iter()
        .filter(|c| c.is_public())
        .map(column_spec_of)
        .collect::<Result<Vec<_>, _>>()?;
    let names = |ix: &IndexInfo| {
        ix.idx_cols
            .iter()
            .map(|c| c.name.O.clone())
            .collect::<Vec<_>>()
    };
    let pk = if let Some(c) = info.pk_handle_column() {
        PrimaryKey::IntHandle(c.name.O.clone())
    } else if let Some(p) = info.primary_index() {
        if info.is_common_handle {
            PrimaryKey::Clustered(names(p))
        } else {
            PrimaryKey::NonClustered(names(p))
        }
    } else {
        PrimaryKey::None
    };
    let indexes = info
        .index_info
        .iter()
        .filter(|i| !i.is_primary && i.state.is_public())
        .map(|i| IndexSpec {
            name: i.idx_name.O.clone(),
            columns: names(i),
            unique: i.is_unique,
        })
        .collect();
    Ok(TableSpec {
        name: info.name.O.clone(),
        columns: cols,
        primary_key: pk,
        indexes,
    })
}

#[cfg(test)]
mod tests {
    use super::super::types::*;
    use super::*;

    fn spec() -> TableSpec {
        TableSpec::new(
            "t1",
            vec![
                ColumnSpec::new("id", bigint()).not_null(),
                ColumnSpec::new("name", varchar(32)).default(Datum::Bytes(b"x".to_vec())),
                ColumnSpec::new("k", int())
                    .not_null()
                    .default(Datum::Int(0)),
            ],
        )
        .primary_key(PrimaryKey::IntHandle("id".into()))
        .index(IndexSpec::new("k_1", &["k"]))
    }

    #[test]
    fn table_info_shape() {
        let ti = table_info(&spec(), 77).unwrap();
        assert_eq!(ti.id, 77);
        assert!(ti.pk_is_handle);
        assert!(!ti.is_common_handle);
        assert_eq!(ti.cols.len(), 3);
        assert_eq!(ti.cols[0].id, 1);
        assert_eq!(ti.cols[2].offset, 2);
        assert_eq!(
            ti.cols[0].field_type.flag & (mysql::FLAG_PRI_KEY | mysql::FLAG_NOT_NULL),
            mysql::FLAG_PRI_KEY | mysql::FLAG_NOT_NULL
        );
        assert_eq!(ti.cols[1].default, Some(Value::String("x".into())));
        assert_eq!(ti.index_info.len(), 1);
        assert_eq!(ti.index_info[0].idx_cols[0].offset, 2);
        assert_eq!(ti.max_col_id, 3);
        assert_eq!(ti.max_idx_id, 1);
        // Round trip through spec_of gives the same SQL.
        let again = spec_of(&ti).unwrap();
        assert_eq!(
            create_table_sql("d", &again).unwrap(),
            create_table_sql("d", &spec()).unwrap()
        );
    }

    #[test]
    fn create_sql() {
        assert_eq!(
            create_table_sql("db", &spec()).unwrap(),
            "CREATE TABLE `db`.`t1` (`id` BIGINT NOT NULL, `name` VARCHAR(32) CHARACTER SET utf8mb4 \
             COLLATE utf8mb4_bin NULL DEFAULT 'x', `k` INT NOT NULL DEFAULT 0, PRIMARY KEY (`id`) \
             /*T![clustered_index] CLUSTERED */, KEY `k_1` (`k`)) ENGINE=InnoDB DEFAULT \
             CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        );
    }

    #[test]
    fn rejects_bad_specs() {
        let mut s = spec();
        s.primary_key = PrimaryKey::IntHandle("name".into());
        assert!(table_info(&s, 1).is_err());
        let mut s = spec();
        s.indexes.push(IndexSpec::new("bad", &["nope"]));
        assert!(table_info(&s, 1).is_err());
        let s = TableSpec::new("b", vec![ColumnSpec::new("j", json()).default(Datum::Null)]);
        assert!(table_info(&s, 1).is_err());
    }
}
