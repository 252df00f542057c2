//! The storage-sink downstream: a directory of canal-json or csv files is replayed into the
//! table states it describes at a ts, which then compare like any other downstream.
//!
//! Replay rules, per table, in file order (table version, date, file index):
//!
//! * inserts and updates upsert the row under its key (an update whose key changed first removes
//!   the old key); deletes remove it. Keyless tables are multisets of rows.
//! * Changes committed after the verified ts (normally the `metadata` checkpoint) are ignored.
//! * Duplicates are dropped by commit ts: the sink is at-least-once, and after a restart or a
//!   failed batch it replays transactions into a **new** file (never appending to an old one,
//!   and never splitting a transaction between files). So a row whose commit ts is at or below
//!   the largest commit ts of the table's *earlier files* is a replay. Without commit ts in the
//!   files (csv without `include-commit-ts`) every row is applied; replays are then harmless for
//!   keyed tables only.
//! * A column missing from a row (written before an `ADD COLUMN`) takes the column's original
//!   default, as TiDB reads old rows.
//! * A TRUNCATE, or a CREATE that reuses a dropped table's name, empties the table: the schema
//!   file of that table version records the DDL's type, and rows committed at or before it (or
//!   in older version directories) are discarded.
//! * A RENAME moves a table: its rows before the rename sit under the old name, so a table whose
//!   latest such DDL is a RENAME starts from the old name's state at the rename's commit ts
//!   (followed through chains of renames), and what was under the new name before belonged to
//!   a dropped table of that name.
//!
//! Csv options are not recorded in the directory: `include-commit-ts` and `output-old-value`
//! are detected by trying the four combinations, most informative first.

use std::collections::BTreeMap;
use std::path::Path;

use tidal_sinks::encode::reader::{DecodedRow, RowOp, Value};
use tidal_sinks::encode::{EncoderConfig, Protocol};
use tidal_sinks::storage::consumer::{StorageContent, read_storage_dir};

use super::VerifyError;
use super::canon::{Cell, Source, default_cell, text_cell};
use super::compare::Columns;

/// A storage directory, read.
#[derive(Debug)]
pub(crate) struct StorageDownstream {
    content: StorageContent,
    source: Source,
}

fn read(dir: &Path, protocol: Protocol) -> Result<(StorageContent, Source), VerifyError> {
    let fail = |e: String| VerifyError::Downstream {
        what: format!("reading storage directory {}", dir.display()),
        detail: e,
    };
    if !dir.is_dir() {
        return Err(fail("not a directory".into()));
    }
    match protocol {
        Protocol::CanalJson => read_storage_dir(dir, &EncoderConfig::new(protocol))
            .map(|c| (c, Source::CanalJson))
            .map_err(|e| fail(e.to_string())),
        Protocol::Csv => {
            let mut first_err = None;
            for (commit_ts, old_value) in
                [(true, false), (true, true), (false, false), (false, true)]
            {
                let mut cfg = EncoderConfig::new(protocol);
                cfg.csv.include_commit_ts = commit_ts;
                cfg.csv.output_old_value = old_value;
                match read_storage_dir(dir, &cfg) {
                    Ok(c) => return Ok((c, Source::Csv)),
                    Err(e) => {
                        first_err.get_or_insert(e.to_string());
                    }
                }
            }
            Err(fail(first_err.unwrap_or_default()))
        }
    }
}

impl StorageDownstream {
    /// Reads `dir` written with `protocol`.
    pub(crate) fn open(dir: &Path, protocol: Protocol) -> Result<StorageDownstream, VerifyError> {
        let (content, source) = read(dir, protocol)?;
        Ok(StorageDownstream { content, source })
    }

    /// The checkpoint ts of the root `metadata` file, if there is one.
    pub(crate) fn checkpoint(&self) -> Option<u64> {
        self.content.checkpoint_ts
    }

    /// The (database, table) names that have data files, sorted.
    pub(crate) fn tables(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .content
            .data_files
            .iter()
            .map(|f| (f.schema.clone(), f.table.clone()))
            .collect();
        v.dedup();
        v
    }

    /// The state of `db`.`table` at `ts`, replayed from its files (see the module docs).
    pub(crate) fn rows(&self, db: &str, table: &str, cols: &Columns, ts: u64) -> Vec<Vec<Cell>> {
        let mut keyed: BTreeMap<Vec<Cell>, Vec<Cell>> = BTreeMap::new();
        let mut keyless: BTreeMap<Vec<Cell>, usize> = BTreeMap::new();
        self.replay(db, table, cols, ts, 0, &mut keyed, &mut keyless);
        if cols.key.is_some() {
            keyed.into_values().collect()
        } else {
            keyless
                .into_iter()
                .flat_map(|(row, n)| std::iter::repeat_n(row, n))
                .collect()
        }
    }

    /// Replays `db`.`table` up to `ts` into the maps, starting from the table it was renamed
    /// from when its latest reset is a RENAME (`depth` bounds a chain of renames).
    #[allow(clippy::too_many_arguments)]
    fn replay(
        &self,
        db: &str,
        table: &str,
        cols: &Columns,
        ts: u64,
        depth: usize,
        keyed: &mut BTreeMap<Vec<Cell>, Vec<Cell>>,
        keyless: &mut BTreeMap<Vec<Cell>, usize>,
    ) {
        const MAX_RENAME_CHAIN: usize = 64;
        let reset = self.last_reset(db, table, ts);
        if let Some(r) = &reset
            && depth < MAX_RENAME_CHAIN
            && let Some((old_db, old_table)) = r.renamed_from(db, table)
        {
            self.replay(
                &old_db,
                &old_table,
                cols,
                r.version,
                depth + 1,
                keyed,
                keyless,
            );
        }
        let reset = reset.map(|r| r.version);
        let mut earlier_files_max: Option<u64> = None;
        for file in self
            .content
            .data_files
            .iter()
            .filter(|f| f.schema == db && f.table == table)
        {
            if reset.is_some_and(|r| file.version < r) {
                // Written before the table was truncated, re-created or renamed into this
                // name: gone upstream (or replayed from the old name above).
                continue;
            }
            let mut this_file_max: Option<u64> = None;
            for r in &file.rows {
                if let Some(cts) = r.commit_ts {
                    if cts > ts
                        || earlier_files_max.is_some_and(|m| cts <= m)
                        || reset.is_some_and(|reset| cts <= reset)
                    {
                        continue;
                    }
                    this_file_max = this_file_max.max(Some(cts));
                }
                self.apply(r, cols, keyed, keyless);
            }
            earlier_files_max = earlier_files_max.max(this_file_max);
        }
    }

    /// The latest DDL at or below `ts` that started `db`.`table` afresh (TRUNCATE, CREATE of a
    /// table whose name was used before, RENAME into this name), from the schema files the sink
    /// wrote.
    fn last_reset(&self, db: &str, table: &str, ts: u64) -> Option<Reset> {
        const CREATE_TABLE: u8 = 3;
        const TRUNCATE_TABLE: u8 = 11;
        const RENAME_TABLE: u8 = 14;
        const RENAME_TABLES: u8 = 56;
        self.content
            .schema_files
            .iter()
            .map(|f| &f.file)
            .filter(|f| f.schema == db && f.table == table && f.table_version <= ts)
            .filter(|f| {
                matches!(
                    f.action,
                    CREATE_TABLE | TRUNCATE_TABLE | RENAME_TABLE | RENAME_TABLES
                )
            })
            .max_by_key(|f| f.table_version)
            .map(|f| Reset {
                version: f.table_version,
                rename: matches!(f.action, RENAME_TABLE | RENAME_TABLES).then(|| f.query.clone()),
            })
    }

    fn cells(&self, cols: &Columns, data: &[(String, Value)]) -> Vec<Cell> {
        cols.cols
            .iter()
            .map(|c| {
                let name = &c.info.name.O;
                let found = data
                    .iter()
                    .find(|(n, _)| n == name)
                    .or_else(|| data.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)));
                match found {
                    Some((_, v)) => {
                        text_cell(c.kind, &c.info.field_type, self.source, v.as_deref())
                    }
                    None => default_cell(c.kind, &c.info),
                }
            })
            .collect()
    }

    fn apply(
        &self,
        r: &DecodedRow,
        cols: &Columns,
        keyed: &mut BTreeMap<Vec<Cell>, Vec<Cell>>,
        keyless: &mut BTreeMap<Vec<Cell>, usize>,
    ) {
        let row = self.cells(cols, &r.data);
        // The old image of an update, completed with the new values for columns it leaves out
        // (canal-json may carry only the changed ones).
        let old = r.old.as_ref().map(|old| {
            let mut merged: Vec<(String, Value)> = old.clone();
            for (n, v) in &r.data {
                if !merged.iter().any(|(m, _)| m == n) {
                    merged.push((n.clone(), v.clone()));
                }
            }
            self.cells(cols, &merged)
        });
        if cols.key.is_some() {
            let key = cols.key_of(&row);
            match r.op {
                RowOp::Delete => {
                    keyed.remove(&key);
                }
                RowOp::Insert | RowOp::Update => {
                    if let Some(old) = &old {
                        let old_key = cols.key_of(old);
                        if old_key != key {
                            keyed.remove(&old_key);
                        }
                    }
                    keyed.insert(key, row);
                }
            }
        } else {
            let remove = |keyless: &mut BTreeMap<Vec<Cell>, usize>, row: &Vec<Cell>| {
                if let Some(n) = keyless.get_mut(row) {
                    *n -= 1;
                    if *n == 0 {
                        keyless.remove(row);
                    }
                }
            };
            match r.op {
                RowOp::Delete => remove(keyless, &row),
                RowOp::Insert => *keyless.entry(row).or_insert(0) += 1,
                RowOp::Update => {
                    if let Some(old) = &old {
                        remove(keyless, old);
                    }
                    *keyless.entry(row).or_insert(0) += 1;
                }
            }
        }
    }
}

/// A DDL that started a table afresh.
#[derive(Debug)]
struct Reset {
    /// Its commit ts (the schema file's table version).
    version: u64,
    /// The query, if it was a RENAME.
    rename: Option<String>,
}

impl Reset {
    /// For a RENAME whose query names `db`.`table` as a target: the old name.
    fn renamed_from(&self, db: &str, table: &str) -> Option<(String, String)> {
        let query = self.rename.as_deref()?;
        rename_pairs(query)
            .into_iter()
            .find(|(_, to)| to.0 == db && to.1 == table)
            .map(|(from, _)| from)
    }
}

/// The `(from, to)` pairs of `RENAME TABLE a.b TO c.d[, e.f TO g.h ...]`, names unquoted.
/// Anything it cannot read yields no pair (the table is then replayed from its own files).
fn rename_pairs(query: &str) -> Vec<((String, String), (String, String))> {
    let mut idents = Vec::new();
    let mut words = Vec::new();
    let mut chars = query.trim().trim_end_matches(';').chars().peekable();
    let mut cur = String::new();
    let flush = |cur: &mut String, words: &mut Vec<String>| {
        if !cur.is_empty() {
            words.push(std::mem::take(cur));
        }
    };
    // Tokens: quoted or bare identifiers, '.', ','; keywords are bare words.
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                let mut q = String::new();
                loop {
                    match chars.next() {
                        Some('`') if chars.peek() == Some(&'`') => {
                            chars.next();
                            q.push('`');
                        }
                        Some('`') | None => break,
                        Some(x) => q.push(x),
                    }
                }
                flush(&mut cur, &mut words);
                words.push(format!("`{q}"));
            }
            '.' | ',' => {
                flush(&mut cur, &mut words);
                words.push(c.to_string());
            }
            c if c.is_whitespace() => flush(&mut cur, &mut words),
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut words);
    let name = |w: &String| w.strip_prefix('`').unwrap_or(w).to_string();
    // Expect: RENAME TABLE (db . t TO db . t) (, db . t TO db . t)*
    let mut it = words.iter();
    let (Some(r), Some(t)) = (it.next(), it.next()) else {
        return Vec::new();
    };
    if !r.eq_ignore_ascii_case("rename") || !t.eq_ignore_ascii_case("table") {
        return Vec::new();
    }
    let rest: Vec<&String> = it.collect();
    for pair in rest.split(|w| w.as_str() == ",") {
        match pair {
            [d1, dot1, t1, to, d2, dot2, t2]
                if dot1.as_str() == "."
                    && dot2.as_str() == "."
                    && to.eq_ignore_ascii_case("to") =>
            {
                idents.push(((name(d1), name(t1)), (name(d2), name(t2))));
            }
            _ => return Vec::new(),
        }
    }
    idents
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tidal_sinks::storage::consumer::{DataFile, FoundSchemaFile};

    use crate::verify::fixtures::table as info;

    use super::*;

    fn r(op: RowOp, ts: u64, id: &str, v: &str, old: Option<(&str, &str)>) -> DecodedRow {
        let pair = |id: &str, v: &str| {
            vec![
                ("id".to_string(), Some(id.as_bytes().to_vec())),
                ("v".to_string(), Some(v.as_bytes().to_vec())),
            ]
        };
        DecodedRow {
            op,
            schema: "d".into(),
            table: "t".into(),
            commit_ts: Some(ts),
            data: pair(id, v),
            old: old.map(|(i, v)| pair(i, v)),
        }
    }

    fn file(index: u64, rows: Vec<DecodedRow>) -> DataFile {
        DataFile {
            rel_path: PathBuf::from(format!("d/t/1/CDC{index}.json")),
            schema: "d".into(),
            table: "t".into(),
            version: 1,
            date: String::new(),
            index,
            rows,
            torn_tail: false,
        }
    }

    fn cells(rows: &[(&str, &str)]) -> Vec<Vec<Cell>> {
        rows.iter()
            .map(|(i, v)| vec![Some(i.to_string()), Some(v.to_string())])
            .collect()
    }

    #[test]
    fn replay_applies_changes_drops_replays_and_later_commits() {
        let first = vec![
            r(RowOp::Insert, 10, "1", "a", None),
            r(RowOp::Insert, 10, "2", "b", None),
            r(RowOp::Update, 20, "3", "b", Some(("2", "b"))),
            r(RowOp::Insert, 30, "4", "d", None),
        ];
        // A restart replays from ts 20, then goes on; ts 50 is past the verified ts.
        let second = vec![
            r(RowOp::Update, 20, "3", "b", Some(("2", "b"))),
            r(RowOp::Insert, 30, "4", "d", None),
            r(RowOp::Delete, 40, "1", "a", None),
            r(RowOp::Insert, 50, "5", "e", None),
        ];
        let down = StorageDownstream {
            content: StorageContent {
                checkpoint_ts: Some(40),
                data_files: vec![file(1, first.clone()), file(2, second.clone())],
                ..StorageContent::default()
            },
            source: Source::CanalJson,
        };
        let cols = Columns::of(&info(true));
        assert_eq!(
            down.rows("d", "t", &cols, 40),
            cells(&[("3", "b"), ("4", "d")])
        );
        assert_eq!(
            down.rows("d", "t", &cols, 20),
            cells(&[("1", "a"), ("3", "b")])
        );
        assert!(down.rows("d", "other", &cols, 40).is_empty());

        // Keyless: the replayed insert at ts 30 would otherwise count twice.
        let cols = Columns::of(&info(false));
        let mut rows = down.rows("d", "t", &cols, 40);
        rows.sort();
        assert_eq!(rows, cells(&[("3", "b"), ("4", "d")]));
    }

    fn at(db: &str, table: &str, version: u64, index: u64, rows: Vec<DecodedRow>) -> DataFile {
        DataFile {
            rel_path: PathBuf::from(format!("{db}/{table}/{version}/CDC{index}.json")),
            schema: db.into(),
            table: table.into(),
            version,
            ..file(index, rows)
        }
    }

    fn schema_file(
        db: &str,
        table: &str,
        version: u64,
        action: u8,
        query: &str,
    ) -> FoundSchemaFile {
        let mut f = tidal_sinks::storage::path::SchemaFile::without_columns(db, table, version);
        f.action = action;
        f.query = query.into();
        FoundSchemaFile {
            rel_path: PathBuf::from(format!("{db}/{table}/meta/schema_{version}_0.json")),
            file: f,
        }
    }

    #[test]
    fn rename_pairs_are_read_from_quoted_and_bare_names() {
        assert_eq!(
            rename_pairs("RENAME TABLE `d`.`t` TO `d_2`.`x.y`"),
            vec![(("d".into(), "t".into()), ("d_2".into(), "x.y".into()))]
        );
        assert_eq!(
            rename_pairs("rename table a.b to c.d, `e``f`.g TO h.i;"),
            vec![
                (("a".into(), "b".into()), ("c".into(), "d".into())),
                (("e`f".into(), "g".into()), ("h".into(), "i".into())),
            ]
        );
        assert!(rename_pairs("RENAME TABLE t TO u").is_empty());
        assert!(rename_pairs("TRUNCATE TABLE `d`.`t`").is_empty());
        assert!(rename_pairs("").is_empty());
    }

    /// Regression (seen in `tidal demo`): a table renamed across databases kept its rows from
    /// before the rename under the old name, and verify reported them missing under the new one.
    #[test]
    fn a_renamed_table_starts_from_the_old_names_state_at_the_rename() {
        let before = vec![
            r(RowOp::Insert, 10, "1", "a", None),
            r(RowOp::Insert, 10, "2", "b", None),
        ];
        // The old name is re-created after the rename: not part of the renamed table.
        let recreated = vec![r(RowOp::Insert, 40, "9", "z", None)];
        let after = vec![
            r(RowOp::Update, 30, "2", "c", Some(("2", "b"))),
            r(RowOp::Insert, 30, "3", "d", None),
        ];
        // A dropped table that used the new name before: gone.
        let stale = vec![r(RowOp::Insert, 5, "7", "x", None)];
        let down = StorageDownstream {
            content: StorageContent {
                checkpoint_ts: Some(40),
                schema_files: vec![
                    schema_file("d", "t", 35, 3, "CREATE TABLE `d`.`t` (id INT)"),
                    schema_file("d_2", "u", 3, 3, "CREATE TABLE `d_2`.`u` (id INT)"),
                    schema_file("d_2", "u", 20, 14, "RENAME TABLE `d`.`t` TO `d_2`.`u`"),
                ],
                data_files: vec![
                    at("d", "t", 1, 1, before),
                    at("d", "t", 35, 1, recreated),
                    at("d_2", "u", 3, 1, stale),
                    at("d_2", "u", 20, 1, after),
                ],
                ..StorageContent::default()
            },
            source: Source::CanalJson,
        };
        let cols = Columns::of(&info(true));
        assert_eq!(
            down.rows("d_2", "u", &cols, 40),
            cells(&[("1", "a"), ("2", "c"), ("3", "d")])
        );
        // Before the rename the new name held the dropped table's row only.
        assert_eq!(down.rows("d_2", "u", &cols, 10), cells(&[("7", "x")]));
        // The re-created old name holds only its own row.
        assert_eq!(down.rows("d", "t", &cols, 40), cells(&[("9", "z")]));
    }
}
