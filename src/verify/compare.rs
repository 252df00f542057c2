//! The comparison itself: which columns are compared, the order-independent table checksum,
//! and the row-by-row diff of two row sets.
//!
//! The checksum is the wrapping sum of a 64-bit hash of every row's canonical cells. A sum (not
//! a xor) keeps duplicate rows of keyless tables from cancelling out, and it lets each side be
//! read in whatever order is cheapest for it: TiKV returns rows in handle order, MySQL in
//! collation order, a storage replay in hash-map order.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use tidal_model::schema::{ColumnInfo, TableInfo};

use super::canon::{Cell, Kind, row_hash};
use super::{DiffKind, RowDiff};

/// One compared column.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    /// Its position in the decoded upstream row (`TableInfo::public_columns` order).
    pub upstream_pos: usize,
    /// How its values are canonicalized.
    pub kind: Kind,
    /// The column.
    pub info: ColumnInfo,
}

/// The compared columns of a table and the key that identifies its rows.
#[derive(Debug, Clone)]
pub(crate) struct Columns {
    /// Public columns minus virtual generated ones (which are not stored upstream, and which
    /// sinks leave out).
    pub cols: Vec<Column>,
    /// Positions (in `cols`) of the key columns: the primary key, else the first unique key of
    /// NOT NULL columns; `None` when the table has neither (rows are then a multiset).
    pub key: Option<Vec<usize>>,
}

impl Columns {
    /// The compared columns of `info`.
    pub(crate) fn of(info: &TableInfo) -> Columns {
        let cols: Vec<Column> = info
            .public_columns()
            .into_iter()
            .enumerate()
            .filter(|(_, c)| !c.is_generated_virtual())
            .map(|(pos, c)| Column {
                upstream_pos: pos,
                kind: Kind::of(&c.field_type),
                info: c.clone(),
            })
            .collect();
        let key = info.unique_keys().into_iter().find_map(|ids| {
            ids.iter()
                .map(|id| cols.iter().position(|c| c.info.id == *id))
                .collect::<Option<Vec<usize>>>()
        });
        Columns { cols, key }
    }

    /// The identity of a row: its key cells, or the whole row for a keyless table.
    pub(crate) fn key_of(&self, row: &[Cell]) -> Vec<Cell> {
        match &self.key {
            Some(k) => k.iter().map(|&i| row.get(i).cloned().flatten()).collect(),
            None => row.to_vec(),
        }
    }

    /// `a=1, b='x'` for a key (or a whole row).
    pub(crate) fn render_key(&self, key: &[Cell]) -> String {
        let positions: Vec<usize> = match &self.key {
            Some(k) => k.clone(),
            None => (0..self.cols.len()).collect(),
        };
        positions
            .iter()
            .zip(key)
            .map(|(&i, cell)| {
                let name = self.cols.get(i).map_or("?", |c| c.info.name.O.as_str());
                format!("{name}={}", render_cell(cell))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A cell for messages: NULL, a quoted string, or a bare number/hex literal.
pub(crate) fn render_cell(cell: &Cell) -> String {
    match cell {
        None => "NULL".to_string(),
        Some(s) if s.starts_with("0x") || s.parse::<f64>().is_ok() => s.clone(),
        Some(s) => format!("{s:?}"),
    }
}

/// Row count and checksum of one side of a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Digest {
    /// Rows seen.
    pub rows: u64,
    /// Wrapping sum of the rows' hashes.
    pub checksum: u64,
}

impl Digest {
    /// Adds a row.
    pub(crate) fn add(&mut self, row: &[Cell]) {
        self.rows = self.rows.saturating_add(1);
        self.checksum = self.checksum.wrapping_add(row_hash(row));
    }

    /// The digest of a row set.
    pub(crate) fn of<'a>(rows: impl IntoIterator<Item = &'a Vec<Cell>>) -> Digest {
        let mut d = Digest::default();
        for r in rows {
            d.add(r);
        }
        d
    }
}

/// Rows grouped by identity (a key normally holds one row; a keyless table's identical rows,
/// or a downstream without the key constraint, can hold several).
type Grouped = BTreeMap<Vec<Cell>, Vec<Vec<Cell>>>;

fn group(cols: &Columns, rows: Vec<Vec<Cell>>) -> Grouped {
    let mut out: Grouped = BTreeMap::new();
    for r in rows {
        out.entry(cols.key_of(&r)).or_default().push(r);
    }
    out
}

/// Orders keys for the report: cell by cell, NULL first, integers numerically, the rest as
/// text (canonical forms of other kinds sort sensibly as text, or at least deterministically).
fn key_order(a: &[Cell], b: &[Cell]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => match (x.parse::<i128>(), y.parse::<i128>()) {
                (Ok(i), Ok(j)) => i.cmp(&j),
                _ => x.cmp(y),
            },
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// The differences between the upstream and the downstream rows of a table, in key order:
/// at most `max` of them, and how many there are in all.
pub(crate) fn diff_rows(
    cols: &Columns,
    upstream: Vec<Vec<Cell>>,
    downstream: Vec<Vec<Cell>>,
    max: usize,
) -> (Vec<RowDiff>, u64) {
    let mut up = group(cols, upstream);
    let mut down = group(cols, downstream);
    let mut keys: Vec<Vec<Cell>> = up.keys().chain(down.keys()).cloned().collect();
    keys.sort_by(|a, b| key_order(a, b));
    keys.dedup();
    let mut out = Vec::new();
    let mut total: u64 = 0;
    let mut push = |d: RowDiff, out: &mut Vec<RowDiff>| {
        total = total.saturating_add(1);
        if out.len() < max {
            out.push(d);
        }
    };
    for key in keys {
        let mut u = up.remove(&key).unwrap_or_default();
        let mut d = down.remove(&key).unwrap_or_default();
        // Identical rows on both sides cancel out.
        u.retain(|row| match d.iter().position(|x| x == row) {
            Some(i) => {
                d.swap_remove(i);
                false
            }
            None => true,
        });
        let rendered = cols.render_key(&key);
        let paired = u.len().min(d.len());
        for (ur, dr) in u.iter().zip(d.iter()) {
            for (i, c) in cols.cols.iter().enumerate() {
                let (a, b) = (ur.get(i).cloned().flatten(), dr.get(i).cloned().flatten());
                if a != b {
                    push(
                        RowDiff {
                            key: rendered.clone(),
                            kind: DiffKind::Different {
                                column: c.info.name.O.clone(),
                                upstream: a,
                                downstream: b,
                            },
                        },
                        &mut out,
                    );
                }
            }
        }
        for _ in u.iter().skip(paired) {
            push(
                RowDiff {
                    key: rendered.clone(),
                    kind: DiffKind::Missing,
                },
                &mut out,
            );
        }
        for _ in d.iter().skip(paired) {
            push(
                RowDiff {
                    key: rendered.clone(),
                    kind: DiffKind::Extra,
                },
                &mut out,
            );
        }
    }
    (out, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::fixtures::table;

    fn row(id: i64, v: Option<&str>) -> Vec<Cell> {
        vec![Some(id.to_string()), v.map(str::to_string)]
    }

    #[test]
    fn keyed_diffs_name_missing_extra_and_changed_columns() {
        let cols = Columns::of(&table(true));
        assert_eq!(cols.key, Some(vec![0]));
        let up = vec![row(1, Some("a")), row(2, Some("b")), row(3, None)];
        let down = vec![row(3, Some("c")), row(1, Some("a")), row(10, Some("d"))];
        let (diffs, total) = diff_rows(&cols, up, down, 10);
        assert_eq!(total, 3);
        assert_eq!(
            diffs,
            vec![
                RowDiff {
                    key: "id=2".into(),
                    kind: DiffKind::Missing
                },
                RowDiff {
                    key: "id=3".into(),
                    kind: DiffKind::Different {
                        column: "v".into(),
                        upstream: None,
                        downstream: Some("c".into())
                    }
                },
                RowDiff {
                    key: "id=10".into(),
                    kind: DiffKind::Extra
                },
            ]
        );
        let (capped, total) = diff_rows(
            &cols,
            vec![row(1, Some("a")), row(2, Some("b"))],
            Vec::new(),
            1,
        );
        assert_eq!((capped.len(), total), (1, 2));
    }

    #[test]
    fn keyless_tables_compare_as_multisets() {
        let cols = Columns::of(&table(false));
        assert_eq!(cols.key, None);
        let up = vec![row(1, Some("a")), row(1, Some("a")), row(2, None)];
        let down = vec![row(1, Some("a")), row(2, None), row(2, None)];
        assert_ne!(Digest::of(&up), Digest::of(&down));
        let (diffs, total) = diff_rows(&cols, up.clone(), down, 10);
        assert_eq!(total, 2);
        assert_eq!(diffs[0].key, "id=1, v=\"a\"");
        assert_eq!(diffs[0].kind, DiffKind::Missing);
        assert_eq!(diffs[1].key, "id=2, v=NULL");
        assert_eq!(diffs[1].kind, DiffKind::Extra);
        let mut shuffled = up.clone();
        shuffled.reverse();
        assert_eq!(Digest::of(&up), Digest::of(&shuffled));
        assert_eq!(diff_rows(&cols, up, shuffled, 10).1, 0);
    }
}
