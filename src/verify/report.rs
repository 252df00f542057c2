//! The human-readable report: one line per table, then its first differences, then a verdict
//! line that scripts and people can both grep.

use std::fmt;

use super::compare::render_cell;
use super::{DiffKind, RowDiff, TableReport, VerifyReport};

impl fmt::Display for RowDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DiffKind::Missing => write!(f, "missing downstream: {}", self.key),
            DiffKind::Extra => write!(f, "extra downstream: {}", self.key),
            DiffKind::Different {
                column,
                upstream,
                downstream,
            } => write!(
                f,
                "different: {}: {column}: upstream {}, downstream {}",
                self.key,
                render_cell(upstream),
                render_cell(downstream)
            ),
        }
    }
}

impl fmt::Display for TableReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<9} {}.{}  rows {}/{}  checksum {:016x}/{:016x}",
            if self.equal { "equal" } else { "DIFFERENT" },
            self.db,
            self.table,
            self.upstream_rows,
            self.downstream_rows,
            self.upstream_checksum,
            self.downstream_checksum
        )?;
        if let Some(note) = &self.note {
            write!(f, "  ({note})")?;
        }
        for d in &self.diffs {
            write!(f, "\n    {d}")?;
        }
        let shown = self.diffs.len() as u64;
        if self.diff_count > shown {
            write!(f, "\n    ... and {} more", self.diff_count - shown)?;
        }
        Ok(())
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "verify at ts {} ({} UTC)", self.ts.0, self.ts)?;
        for t in &self.tables {
            writeln!(f, "{t}")?;
        }
        let different = self.tables.iter().filter(|t| !t.equal).count();
        if self.equal {
            write!(f, "EQUAL: {} tables compared", self.tables.len())
        } else {
            write!(
                f,
                "NOT EQUAL: {different} of {} tables differ",
                self.tables.len()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    #[test]
    fn display_lists_tables_and_diffs() {
        let report = VerifyReport {
            ts: Ts(1),
            tables: vec![
                TableReport {
                    db: "d".into(),
                    table: "a".into(),
                    upstream_rows: 2,
                    downstream_rows: 2,
                    upstream_checksum: 0xab,
                    downstream_checksum: 0xab,
                    equal: true,
                    diff_count: 0,
                    diffs: vec![],
                    note: None,
                },
                TableReport {
                    db: "d".into(),
                    table: "b".into(),
                    upstream_rows: 2,
                    downstream_rows: 1,
                    upstream_checksum: 1,
                    downstream_checksum: 2,
                    equal: false,
                    diff_count: 3,
                    diffs: vec![
                        RowDiff {
                            key: "id=1".into(),
                            kind: DiffKind::Missing,
                        },
                        RowDiff {
                            key: "id=2".into(),
                            kind: DiffKind::Different {
                                column: "v".into(),
                                upstream: Some("x".into()),
                                downstream: None,
                            },
                        },
                    ],
                    note: None,
                },
            ],
            equal: false,
        };
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert!(lines[0].starts_with("verify at ts 1 (1970-01-01"), "{text}");
        assert_eq!(
            lines[1],
            "equal     d.a  rows 2/2  checksum 00000000000000ab/00000000000000ab"
        );
        assert_eq!(
            lines[2],
            "DIFFERENT d.b  rows 2/1  checksum 0000000000000001/0000000000000002"
        );
        assert_eq!(lines[3], "    missing downstream: id=1");
        assert_eq!(
            lines[4],
            "    different: id=2: v: upstream \"x\", downstream NULL"
        );
        assert_eq!(lines[5], "    ... and 1 more");
        assert_eq!(lines[6], "NOT EQUAL: 1 of 2 tables differ");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["tables"][1]["diffs"][1]["kind"], "different");
        assert_eq!(
            json["tables"][1]["diffs"][1]["downstream"],
            serde_json::Value::Null
        );
        assert_eq!(json["ts"], 1);
        let back: VerifyReport = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(back, report);
    }
}
