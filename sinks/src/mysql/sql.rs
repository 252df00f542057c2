//! SQL for row changes: the statements one upstream transaction's changes to one table become.
//!
//! Values are always bound as parameters, never spliced into the text. Within one transaction and
//! table the statements run in three phases — deletes, then updates, then inserts — so that a
//! transaction that deletes a row and inserts another with the same unique value does not trip
//! over its own order (each row key appears once in an upstream transaction, so reordering rows
//! of different keys does not change the result).
//!
//! - Keyed table (PK or not-null UK), more than one row, batch DML on: multi-row
//!   `DELETE … WHERE (k1,k2) IN ((?,?),…)` and `INSERT … VALUES (…),(…)`; an update that keeps
//!   its key is a single-row `UPDATE … WHERE k = old`, one that changes it is a delete of the old
//!   key plus an insert of the new row.
//! - Otherwise one statement per row.
//! - Safe mode (the transaction's flag, the sink's `safe-mode`, or a duplicate-key retry):
//!   inserts become `REPLACE INTO`, updates a delete of the old row plus a `REPLACE` of the new
//!   one, so a replay of rows the downstream already has is harmless.
//! - Table without a key: `WHERE c1 <=> ? AND … LIMIT 1` over every column. Replays cannot be
//!   made idempotent for such tables (TiCDC calls them ineligible).
//!
//! Generated columns are never written (the downstream computes them) and never used in a
//! `WHERE`.

use tidal_model::schema::ColumnInfo;
use tidal_model::{Datum, RowChange};

use crate::sink::{SinkError, TableDef};

/// Most bound parameters in one statement (MySQL's limit is 65535).
const MAX_PARAMS: usize = 60_000;

/// A value bound to a `?`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SqlValue {
    /// NULL.
    Null,
    /// A signed integer.
    I64(i64),
    /// An unsigned integer (also BIT values).
    U64(u64),
    /// A FLOAT.
    F32(f32),
    /// A DOUBLE.
    F64(f64),
    /// Binary data (binary strings, non-UTF-8 text).
    Bytes(Vec<u8>),
    /// Text (strings, decimals, times, JSON, ENUM and SET names).
    Text(String),
}

/// One statement with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stmt {
    /// SQL text with `?` placeholders.
    pub sql: String,
    /// One value per placeholder.
    pub args: Vec<SqlValue>,
}

/// How to write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SqlMode {
    /// Idempotent writes.
    pub safe: bool,
    /// Multi-row statements allowed.
    pub batch: bool,
    /// Most rows in one multi-row statement.
    pub max_multi_row: usize,
}

/// Backquotes an identifier, doubling backquotes inside it.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `` `db`.`table` ``.
pub(crate) fn quote_table(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Converts a value of `col` to its bound form.
pub(crate) fn to_sql_value(d: &Datum, col: &ColumnInfo) -> SqlValue {
    let ft = &col.field_type;
    match d {
        Datum::Null => SqlValue::Null,
        Datum::Int(v) => SqlValue::I64(*v),
        Datum::Uint(v) => SqlValue::U64(*v),
        Datum::Float32(v) => SqlValue::F32(*v),
        Datum::Float64(v) => SqlValue::F64(*v),
        Datum::Bytes(b) => {
            if ft.charset.eq_ignore_ascii_case("binary") {
                SqlValue::Bytes(b.clone())
            } else {
                match std::str::from_utf8(b) {
                    Ok(s) => SqlValue::Text(s.to_string()),
                    Err(_) => SqlValue::Bytes(b.clone()),
                }
            }
        }
        Datum::Decimal(v) => SqlValue::Text(v.to_string()),
        Datum::Time(v) => SqlValue::Text(v.to_string()),
        Datum::Duration(v) => SqlValue::Text(v.to_string()),
        Datum::Json(v) => SqlValue::Text(v.to_string()),
        Datum::Bit(v) => SqlValue::U64(*v),
        Datum::Enum(i) => {
            let elems = ft.elems.as_deref().unwrap_or_default();
            match usize::try_from(*i)
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| elems.get(i))
            {
                Some(name) => SqlValue::Text(name.clone()),
                // The empty/invalid value (0) or an index the schema does not know: the number
                // means the same to the server.
                None => SqlValue::U64(*i),
            }
        }
        Datum::Set(mask) => {
            let elems = ft.elems.as_deref().unwrap_or_default();
            if elems.len() < 64 && *mask >> elems.len() != 0 {
                return SqlValue::U64(*mask);
            }
            let names: Vec<&str> = elems
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < 64 && mask & (1u64 << i) != 0)
                .map(|(_, n)| n.as_str())
                .collect();
            SqlValue::Text(names.join(","))
        }
    }
}

/// The columns of a table as the SQL builder sees them.
struct Shape<'a> {
    table: String,
    /// Written columns: (position in the row, column), generated columns excluded.
    write: Vec<(usize, &'a ColumnInfo)>,
    /// The key that identifies a row, as (position, column); `None` for a keyless table.
    key: Option<Vec<(usize, &'a ColumnInfo)>>,
}

impl<'a> Shape<'a> {
    fn new(def: &'a TableDef) -> Shape<'a> {
        let columns = def.info.public_columns();
        let write: Vec<(usize, &ColumnInfo)> = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_generated())
            .map(|(i, c)| (i, *c))
            .collect();
        let key = def.info.unique_keys().into_iter().find_map(|ids| {
            ids.iter()
                .map(|id| {
                    columns
                        .iter()
                        .enumerate()
                        .find(|(_, c)| c.id == *id && !c.is_generated_virtual())
                        .map(|(i, c)| (i, *c))
                })
                .collect::<Option<Vec<_>>>()
        });
        Shape {
            table: quote_table(&def.schema_name, &def.table_name),
            write,
            key,
        }
    }

    fn value(image: &[Datum], pos: usize, col: &ColumnInfo) -> SqlValue {
        image
            .get(pos)
            .map_or(SqlValue::Null, |d| to_sql_value(d, col))
    }

    fn key_values(&self, image: &[Datum]) -> Option<Vec<SqlValue>> {
        self.key.as_ref().map(|key| {
            key.iter()
                .map(|(pos, col)| Self::value(image, *pos, col))
                .collect()
        })
    }

    fn key_changed(&self, old: &[Datum], new: &[Datum]) -> bool {
        match &self.key {
            Some(key) => key.iter().any(|(pos, _)| old.get(*pos) != new.get(*pos)),
            None => false,
        }
    }

    /// `WHERE …` identifying `image`, with its arguments.
    fn where_clause(&self, image: &[Datum], args: &mut Vec<SqlValue>) -> String {
        match &self.key {
            Some(key) => {
                let parts: Vec<String> = key
                    .iter()
                    .map(|(pos, col)| {
                        args.push(Self::value(image, *pos, col));
                        format!("{} = ?", quote_ident(&col.name.O))
                    })
                    .collect();
                parts.join(" AND ")
            }
            None => {
                let parts: Vec<String> = self
                    .write
                    .iter()
                    .map(|(pos, col)| {
                        args.push(Self::value(image, *pos, col));
                        format!("{} <=> ?", quote_ident(&col.name.O))
                    })
                    .collect();
                format!("{} LIMIT 1", parts.join(" AND "))
            }
        }
    }

    fn column_list(&self) -> String {
        self.write
            .iter()
            .map(|(_, c)| quote_ident(&c.name.O))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn row_values(&self, image: &[Datum]) -> Vec<SqlValue> {
        self.write
            .iter()
            .map(|(pos, col)| Self::value(image, *pos, col))
            .collect()
    }

    fn delete_one(&self, old: &[Datum]) -> Stmt {
        let mut args = Vec::new();
        let w = self.where_clause(old, &mut args);
        Stmt {
            sql: format!("DELETE FROM {} WHERE {}", self.table, w),
            args,
        }
    }

    fn update_one(&self, old: &[Datum], new: &[Datum]) -> Stmt {
        let set: Vec<String> = self
            .write
            .iter()
            .map(|(_, c)| format!("{} = ?", quote_ident(&c.name.O)))
            .collect();
        let mut args = self.row_values(new);
        let w = self.where_clause(old, &mut args);
        Stmt {
            sql: format!("UPDATE {} SET {} WHERE {}", self.table, set.join(", "), w),
            args,
        }
    }

    fn delete_many(&self, keys: Vec<Vec<SqlValue>>, per_stmt: usize, out: &mut Vec<Stmt>) {
        let Some(key) = &self.key else {
            return;
        };
        let width = key.len().max(1);
        let per_stmt = per_stmt.min(MAX_PARAMS / width).max(1);
        let names: Vec<String> = key.iter().map(|(_, c)| quote_ident(&c.name.O)).collect();
        let (lhs, tuple) = if width == 1 {
            (names.join(""), "?".to_string())
        } else {
            (
                format!("({})", names.join(", ")),
                format!("({})", vec!["?"; width].join(", ")),
            )
        };
        for chunk in keys.chunks(per_stmt) {
            let tuples = vec![tuple.as_str(); chunk.len()].join(", ");
            out.push(Stmt {
                sql: format!("DELETE FROM {} WHERE {} IN ({})", self.table, lhs, tuples),
                args: chunk.iter().flatten().cloned().collect(),
            });
        }
    }

    fn insert_many(
        &self,
        verb: &str,
        rows: Vec<Vec<SqlValue>>,
        per_stmt: usize,
        out: &mut Vec<Stmt>,
    ) {
        let width = self.write.len().max(1);
        let per_stmt = per_stmt.min(MAX_PARAMS / width).max(1);
        let tuple = format!("({})", vec!["?"; self.write.len()].join(", "));
        for chunk in rows.chunks(per_stmt) {
            let tuples = vec![tuple.as_str(); chunk.len()].join(", ");
            out.push(Stmt {
                sql: format!(
                    "{} INTO {} ({}) VALUES {}",
                    verb,
                    self.table,
                    self.column_list(),
                    tuples
                ),
                args: chunk.iter().flatten().cloned().collect(),
            });
        }
    }
}

/// The statements for `rows` (changes of one upstream transaction to `def`'s table).
pub(crate) fn build_statements(
    def: &TableDef,
    rows: &[RowChange],
    mode: SqlMode,
) -> Result<Vec<Stmt>, SinkError> {
    let shape = Shape::new(def);
    if shape.write.is_empty() {
        return Err(SinkError::Encode {
            what: format!("rows of {}", shape.table),
            reason: "the table has no writable column".to_string(),
        });
    }
    let batch = mode.batch && shape.key.is_some() && rows.len() > 1;
    let per_stmt = if batch { mode.max_multi_row.max(1) } else { 1 };

    // Old images to delete, (old, new) updates in place, new images to insert.
    let mut deletes: Vec<&[Datum]> = Vec::new();
    let mut updates: Vec<(&[Datum], &[Datum])> = Vec::new();
    let mut inserts: Vec<&[Datum]> = Vec::new();
    for row in rows {
        match (row.old.as_deref(), row.new.as_deref()) {
            (Some(old), None) => deletes.push(old),
            (None, Some(new)) => inserts.push(new),
            (Some(old), Some(new)) => {
                if mode.safe || shape.key_changed(old, new) {
                    deletes.push(old);
                    inserts.push(new);
                } else {
                    updates.push((old, new));
                }
            }
            (None, None) => {
                return Err(SinkError::Encode {
                    what: format!("a row change of {}", shape.table),
                    reason: "it has neither an old nor a new image".to_string(),
                });
            }
        }
    }

    let mut out = Vec::new();
    if batch {
        let keys: Vec<Vec<SqlValue>> = deletes
            .iter()
            .filter_map(|old| shape.key_values(old))
            .collect();
        shape.delete_many(keys, per_stmt, &mut out);
    } else {
        out.extend(deletes.iter().map(|old| shape.delete_one(old)));
    }
    out.extend(updates.iter().map(|(old, new)| shape.update_one(old, new)));
    let verb = if mode.safe { "REPLACE" } else { "INSERT" };
    let values: Vec<Vec<SqlValue>> = inserts.iter().map(|new| shape.row_values(new)).collect();
    shape.insert_many(verb, values, per_stmt, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tidal_model::Ts;
    use tidal_model::change::RowChangeKind;
    use tidal_model::mysql;
    use tidal_model::schema::TableInfo;
    use tidal_model::tablecodec::Handle;

    fn table(json: &str) -> TableDef {
        TableDef {
            schema_name: "db".into(),
            table_name: "t`x".into(),
            info: Arc::new(TableInfo::from_json(json.as_bytes()).unwrap()),
            version: 1,
        }
    }

    fn col(id: i64, name: &str, tp: u8, flag: u32) -> String {
        format!(
            r#"{{"id":{id},"name":{{"O":"{name}","L":"{name}"}},"offset":{},"state":5,
                "type":{{"Tp":{tp},"Flag":{flag},"Flen":11,"Decimal":0,"Charset":"utf8mb4",
                "Collate":"utf8mb4_bin","Elems":["a","b","c"]}}}}"#,
            id - 1
        )
    }

    fn pk_table() -> TableDef {
        let cols = [
            col(
                1,
                "id",
                mysql::TYPE_LONGLONG,
                mysql::FLAG_PRI_KEY | mysql::FLAG_NOT_NULL,
            ),
            col(2, "v", mysql::TYPE_VARCHAR, 0),
        ]
        .join(",");
        table(&format!(
            r#"{{"id":10,"name":{{"O":"t","L":"t"}},"state":5,"pk_is_handle":true,"cols":[{cols}]}}"#
        ))
    }

    fn keyless_table() -> TableDef {
        let cols = [
            col(1, "a", mysql::TYPE_LONGLONG, 0),
            col(2, "b", mysql::TYPE_ENUM, 0),
        ]
        .join(",");
        table(&format!(
            r#"{{"id":11,"name":{{"O":"t","L":"t"}},"state":5,"cols":[{cols}]}}"#
        ))
    }

    fn change(old: Option<Vec<Datum>>, new: Option<Vec<Datum>>) -> RowChange {
        let kind = match (&old, &new) {
            (Some(_), Some(_)) => RowChangeKind::Update,
            (None, _) => RowChangeKind::Insert,
            _ => RowChangeKind::Delete,
        };
        RowChange {
            table_id: 10,
            start_ts: Ts(1),
            commit_ts: Ts(2),
            kind,
            handle: Handle::Int(0),
            old,
            new,
        }
    }

    fn row(id: i64, v: &str) -> Vec<Datum> {
        vec![Datum::Int(id), Datum::Bytes(v.as_bytes().to_vec())]
    }

    const NORMAL: SqlMode = SqlMode {
        safe: false,
        batch: true,
        max_multi_row: 40,
    };

    #[test]
    fn batched_statements_in_three_phases() {
        let rows = vec![
            change(None, Some(row(3, "c"))),
            change(Some(row(1, "a")), None),
            change(Some(row(2, "b")), Some(row(2, "B"))),
            change(Some(row(4, "d")), Some(row(5, "d"))),
            change(Some(row(6, "x")), None),
        ];
        let stmts = build_statements(&pk_table(), &rows, NORMAL).unwrap();
        let t = "`db`.`t``x`";
        assert_eq!(
            stmts,
            vec![
                Stmt {
                    sql: format!("DELETE FROM {t} WHERE `id` IN (?, ?, ?)"),
                    args: vec![SqlValue::I64(1), SqlValue::I64(4), SqlValue::I64(6)],
                },
                Stmt {
                    sql: format!("UPDATE {t} SET `id` = ?, `v` = ? WHERE `id` = ?"),
                    args: vec![
                        SqlValue::I64(2),
                        SqlValue::Text("B".into()),
                        SqlValue::I64(2)
                    ],
                },
                Stmt {
                    sql: format!("INSERT INTO {t} (`id`, `v`) VALUES (?, ?), (?, ?)"),
                    args: vec![
                        SqlValue::I64(3),
                        SqlValue::Text("c".into()),
                        SqlValue::I64(5),
                        SqlValue::Text("d".into())
                    ],
                },
            ]
        );
    }

    #[test]
    fn safe_mode_replaces() {
        let rows = vec![
            change(None, Some(row(3, "c"))),
            change(Some(row(2, "b")), Some(row(2, "B"))),
        ];
        let mode = SqlMode {
            safe: true,
            ..NORMAL
        };
        let stmts = build_statements(&pk_table(), &rows, mode).unwrap();
        let sql: Vec<&str> = stmts.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sql,
            vec![
                "DELETE FROM `db`.`t``x` WHERE `id` IN (?)",
                "REPLACE INTO `db`.`t``x` (`id`, `v`) VALUES (?, ?), (?, ?)"
            ]
        );
        // One row: single-row statements.
        let stmts = build_statements(&pk_table(), &rows[1..], mode).unwrap();
        let sql: Vec<&str> = stmts.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sql,
            vec![
                "DELETE FROM `db`.`t``x` WHERE `id` = ?",
                "REPLACE INTO `db`.`t``x` (`id`, `v`) VALUES (?, ?)"
            ]
        );
    }

    #[test]
    fn multi_row_statements_are_chunked() {
        let rows: Vec<RowChange> = (0..5).map(|i| change(None, Some(row(i, "v")))).collect();
        let mode = SqlMode {
            max_multi_row: 2,
            ..NORMAL
        };
        let stmts = build_statements(&pk_table(), &rows, mode).unwrap();
        assert_eq!(stmts.len(), 3);
        assert_eq!(
            stmts[2].args,
            vec![SqlValue::I64(4), SqlValue::Text("v".into())]
        );
        let no_batch = SqlMode {
            batch: false,
            ..NORMAL
        };
        assert_eq!(
            build_statements(&pk_table(), &rows, no_batch)
                .unwrap()
                .len(),
            5
        );
    }

    #[test]
    fn keyless_tables_match_every_column() {
        let rows = vec![
            change(
                Some(vec![Datum::Int(1), Datum::Enum(2)]),
                Some(vec![Datum::Null, Datum::Enum(3)]),
            ),
            change(Some(vec![Datum::Int(1), Datum::Enum(0)]), None),
        ];
        let stmts = build_statements(&keyless_table(), &rows, NORMAL).unwrap();
        assert_eq!(
            stmts,
            vec![
                Stmt {
                    sql: "DELETE FROM `db`.`t``x` WHERE `a` <=> ? AND `b` <=> ? LIMIT 1".into(),
                    args: vec![SqlValue::I64(1), SqlValue::U64(0)],
                },
                Stmt {
                    sql: "UPDATE `db`.`t``x` SET `a` = ?, `b` = ? WHERE `a` <=> ? AND `b` <=> ? \
                          LIMIT 1"
                        .into(),
                    args: vec![
                        SqlValue::Null,
                        SqlValue::Text("c".into()),
                        SqlValue::I64(1),
                        SqlValue::Text("b".into())
                    ],
                },
            ]
        );
    }

    #[test]
    fn value_conversion() {
        let mut c: ColumnInfo = serde_json::from_str(&col(1, "s", mysql::TYPE_SET, 0)).unwrap();
        assert_eq!(
            to_sql_value(&Datum::Set(0b101), &c),
            SqlValue::Text("a,c".into())
        );
        assert_eq!(
            to_sql_value(&Datum::Set(0), &c),
            SqlValue::Text(String::new())
        );
        assert_eq!(to_sql_value(&Datum::Set(0b1000), &c), SqlValue::U64(8));
        assert_eq!(
            to_sql_value(&Datum::Enum(1), &c),
            SqlValue::Text("a".into())
        );
        assert_eq!(to_sql_value(&Datum::Enum(4), &c), SqlValue::U64(4));
        assert_eq!(to_sql_value(&Datum::Bit(5), &c), SqlValue::U64(5));
        assert_eq!(
            to_sql_value(&Datum::Bytes(vec![0xff, 0]), &c),
            SqlValue::Bytes(vec![0xff, 0])
        );
        c.field_type.charset = "binary".into();
        assert_eq!(
            to_sql_value(&Datum::Bytes(b"ab".to_vec()), &c),
            SqlValue::Bytes(b"ab".to_vec())
        );
        assert_eq!(
            to_sql_value(&Datum::Decimal("-1.50".parse().unwrap()), &c),
            SqlValue::Text("-1.50".into())
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_table("d", "t"), "`d`.`t`");
    }
}
