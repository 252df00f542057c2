//! What a demo run reports: the live progress figures and the final summary, and their text.
//!
//! Formatting is kept apart from the run itself so that it is plain data in, text out — cheap to
//! unit-test, and the same figures drive the terminal view, the plain progress lines and the
//! summary.

use std::fmt::Write as _;
use std::time::Duration;

/// One snapshot of the demo's progress, as the live view shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// What the demo is doing (`replicating`, `catching up`, ...).
    pub phase: String,
    /// Time since the workload started.
    pub elapsed: Duration,
    /// Rows the workload has committed upstream.
    pub upstream_rows: u64,
    /// Upstream rows per second over the last few seconds.
    pub upstream_rate: f64,
    /// DDL jobs run upstream.
    pub upstream_ddls: u64,
    /// Rows made durable in the sink.
    pub replicated_rows: u64,
    /// Replicated rows per second over the last few seconds.
    pub replicated_rate: f64,
    /// DDLs executed by the sink.
    pub replicated_ddls: u64,
    /// How far the resolved ts is behind the wall clock (`None`: not known yet).
    pub resolved_lag: Option<Duration>,
    /// How far the checkpoint is behind the wall clock (`None`: not known yet).
    pub checkpoint_lag: Option<Duration>,
    /// The `/synced` verdict (`None`: not known yet).
    pub synced: Option<bool>,
    /// The changefeed's state (`normal`, `warning`, ...).
    pub state: String,
}

fn lag_text(l: Option<Duration>) -> String {
    l.map_or_else(|| "-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()))
}

fn synced_text(s: Option<bool>) -> &'static str {
    match s {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Progress {
    /// The multi-line text of the live terminal view.
    pub fn render_live(&self) -> String {
        format!(
            "tidal demo [{phase}] {elapsed:.0}s   changefeed: {state}\n\
             upstream    {urows:>12} rows  {urate:>9.0} rows/s  {uddl} DDLs\n\
             replicated  {rrows:>12} rows  {rrate:>9.0} rows/s  {rddl} DDLs\n\
             lag         resolved {rlag}  checkpoint {clag}  synced {synced}",
            phase = self.phase,
            elapsed = self.elapsed.as_secs_f64(),
            state = self.state,
            urows = thousands(self.upstream_rows),
            urate = self.upstream_rate,
            uddl = self.upstream_ddls,
            rrows = thousands(self.replicated_rows),
            rrate = self.replicated_rate,
            rddl = self.replicated_ddls,
            rlag = lag_text(self.resolved_lag),
            clag = lag_text(self.checkpoint_lag),
            synced = synced_text(self.synced),
        )
    }

    /// One progress line, for output that is not a terminal.
    pub fn render_plain(&self) -> String {
        format!(
            "[{:6.1}s] {}: upstream {} rows ({:.0}/s), {} DDLs | replicated {} rows ({:.0}/s), \
             {} DDLs | resolved lag {} | checkpoint lag {} | synced {} | changefeed {}",
            self.elapsed.as_secs_f64(),
            self.phase,
            self.upstream_rows,
            self.upstream_rate,
            self.upstream_ddls,
            self.replicated_rows,
            self.replicated_rate,
            self.replicated_ddls,
            lag_text(self.resolved_lag),
            lag_text(self.checkpoint_lag),
            synced_text(self.synced),
            self.state,
        )
    }
}

/// One table whose downstream copy differs from the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `db.table`.
    pub table: String,
    /// Rows upstream.
    pub upstream_rows: u64,
    /// Rows downstream.
    pub downstream_rows: u64,
    /// Row differences found.
    pub diff_count: u64,
    /// A remark on the table as a whole (e.g. missing downstream).
    pub note: Option<String>,
}

/// The outcome of the final comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOutcome {
    /// The snapshot ts compared at.
    pub ts: u64,
    /// Tables compared.
    pub tables: usize,
    /// Tables that differ.
    pub mismatches: Vec<Mismatch>,
    /// Why the comparison could not run, if it could not.
    pub error: Option<String>,
}

impl VerifyOutcome {
    /// True if the comparison ran over at least one table and found no difference.
    pub fn equal(&self) -> bool {
        self.error.is_none() && self.tables > 0 && self.mismatches.is_empty()
    }
}

/// What a finished demo reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DemoSummary {
    /// How long the workload ran.
    pub workload_time: Duration,
    /// How long waiting for the checkpoint to pass the last upstream commit took.
    pub catch_up_time: Duration,
    /// True if the checkpoint reached the last upstream commit within the bound.
    pub caught_up: bool,
    /// Rows committed upstream.
    pub upstream_rows: u64,
    /// Transactions committed upstream (DDL jobs included).
    pub upstream_txns: u64,
    /// DDL jobs run upstream.
    pub upstream_ddls: u64,
    /// Rows made durable in the sink.
    pub replicated_rows: u64,
    /// DDLs executed by the sink.
    pub replicated_ddls: u64,
    /// The largest upstream commit ts.
    pub last_commit_ts: u64,
    /// The changefeed's final checkpoint ts.
    pub checkpoint_ts: u64,
    /// Final resolved lag.
    pub resolved_lag: Option<Duration>,
    /// Final checkpoint lag.
    pub checkpoint_lag: Option<Duration>,
    /// Final `/synced` verdict.
    pub synced: Option<bool>,
    /// The changefeed's final state.
    pub changefeed_state: String,
    /// The changefeed's last error or warning, if it reported one.
    pub changefeed_error: Option<String>,
    /// Errors that ended a workload early.
    pub workload_errors: Vec<String>,
    /// The sink URI (password masked).
    pub sink: String,
    /// The final comparison.
    pub verify: VerifyOutcome,
}

impl DemoSummary {
    /// True if the checkpoint passed the last upstream commit and the downstream was verified
    /// equal to the upstream there: only then has everything the workload wrote been checked.
    pub fn verified(&self) -> bool {
        self.caught_up && self.verify.equal()
    }

    /// Replicated rows per second over the workload and catch-up time.
    pub fn throughput(&self) -> f64 {
        let secs = (self.workload_time + self.catch_up_time).as_secs_f64();
        if secs > 0.0 {
            self.replicated_rows as f64 / secs
        } else {
            0.0
        }
    }

    /// The summary as printed at the end of `tidal demo`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "tidal demo summary");
        let _ = writeln!(s, "  sink          {}", self.sink);
        let _ = writeln!(
            s,
            "  upstream      {} rows in {} transactions, {} DDLs, over {:.1}s",
            thousands(self.upstream_rows),
            thousands(self.upstream_txns),
            self.upstream_ddls,
            self.workload_time.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "  replicated    {} rows, {} DDLs ({:.0} rows/s)",
            thousands(self.replicated_rows),
            self.replicated_ddls,
            self.throughput()
        );
        let _ = writeln!(
            s,
            "  final lags    resolved {}, checkpoint {}, synced {}",
            lag_text(self.resolved_lag),
            lag_text(self.checkpoint_lag),
            synced_text(self.synced)
        );
        let _ = writeln!(
            s,
            "  checkpoint    {} {} last upstream commit {} ({}, after {:.1}s; changefeed {})",
            self.checkpoint_ts,
            if self.checkpoint_ts >= self.last_commit_ts {
                ">="
            } else {
                "<"
            },
            self.last_commit_ts,
            if self.caught_up {
                "caught up"
            } else {
                "NOT caught up"
            },
            self.catch_up_time.as_secs_f64(),
            self.changefeed_state
        );
        if let Some(e) = &self.changefeed_error {
            let _ = writeln!(s, "  changefeed    last error: {e}");
        }
        for e in &self.workload_errors {
            let _ = writeln!(s, "  workload      stopped early: {e}");
        }
        let v = &self.verify;
        match &v.error {
            Some(e) => {
                let _ = writeln!(s, "  verify        could not run: {e}");
            }
            None => {
                let _ = writeln!(
                    s,
                    "  verify        at ts {}: {} tables equal, {} mismatches",
                    v.ts,
                    v.tables.saturating_sub(v.mismatches.len()),
                    v.mismatches.len()
                );
                for m in &v.mismatches {
                    let _ = write!(
                        s,
                        "    {}: {} rows upstream, {} downstream, {} row differences",
                        m.table, m.upstream_rows, m.downstream_rows, m.diff_count
                    );
                    if let Some(n) = &m.note {
                        let _ = write!(s, " ({n})");
                    }
                    s.push('\n');
                }
            }
        }
        let verdict = if self.verified() {
            "VERIFIED: the downstream equals the upstream at the checkpoint"
        } else if v.error.is_none() && v.tables == 0 {
            "NOT VERIFIED: no table was compared"
        } else if v.equal() {
            "NOT VERIFIED: equal at the checkpoint, but it did not reach the last upstream commit"
        } else {
            "NOT VERIFIED"
        };
        let _ = writeln!(s, "  result        {verdict}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> DemoSummary {
        DemoSummary {
            workload_time: Duration::from_secs(8),
            catch_up_time: Duration::from_secs(2),
            caught_up: true,
            upstream_rows: 12_345,
            upstream_txns: 3_210,
            upstream_ddls: 7,
            replicated_rows: 12_340,
            replicated_ddls: 7,
            last_commit_ts: 100,
            checkpoint_ts: 105,
            resolved_lag: Some(Duration::from_millis(250)),
            checkpoint_lag: Some(Duration::from_millis(1_040)),
            synced: Some(true),
            changefeed_state: "normal".into(),
            changefeed_error: None,
            workload_errors: Vec::new(),
            sink: "file:///x".into(),
            verify: VerifyOutcome {
                ts: 105,
                tables: 4,
                mismatches: Vec::new(),
                error: None,
            },
        }
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn verified_summary_text() {
        let s = summary();
        assert!(s.verified());
        assert_eq!(s.throughput(), 1234.0);
        assert_eq!(
            s.render(),
            "tidal demo summary\n\
             \x20 sink          file:///x\n\
             \x20 upstream      12,345 rows in 3,210 transactions, 7 DDLs, over 8.0s\n\
             \x20 replicated    12,340 rows, 7 DDLs (1234 rows/s)\n\
             \x20 final lags    resolved 0.2s, checkpoint 1.0s, synced yes\n\
             \x20 checkpoint    105 >= last upstream commit 100 (caught up, after 2.0s; changefeed normal)\n\
             \x20 verify        at ts 105: 4 tables equal, 0 mismatches\n\
             \x20 result        VERIFIED: the downstream equals the upstream at the checkpoint\n"
        );
    }

    #[test]
    fn mismatches_and_errors_are_not_verified() {
        let mut s = summary();
        s.caught_up = false;
        s.checkpoint_ts = 90;
        s.verify.mismatches.push(Mismatch {
            table: "sbtest.sbtest1".into(),
            upstream_rows: 10,
            downstream_rows: 8,
            diff_count: 2,
            note: None,
        });
        s.verify.mismatches.push(Mismatch {
            table: "ddlmix.t3".into(),
            upstream_rows: 4,
            downstream_rows: 0,
            diff_count: 4,
            note: Some("table does not exist downstream".into()),
        });
        assert!(!s.verified());
        let text = s.render();
        assert!(
            text.contains("90 < last upstream commit 100 (NOT caught up"),
            "{text}"
        );
        assert!(
            text.contains("at ts 105: 2 tables equal, 2 mismatches\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "    sbtest.sbtest1: 10 rows upstream, 8 downstream, 2 row differences\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("    ddlmix.t3: 4 rows upstream, 0 downstream, 4 row differences (table does not exist downstream)\n"),
            "{text}"
        );
        assert!(text.ends_with("  result        NOT VERIFIED\n"), "{text}");

        let mut s = summary();
        s.verify.error = Some("downstream: boom".into());
        assert!(!s.verified());
        assert!(
            s.render()
                .contains("  verify        could not run: downstream: boom\n")
        );

        let mut s = summary();
        s.caught_up = false;
        s.changefeed_error = Some("CDC:ErrSinkFailed: disk full".into());
        assert!(!s.verified());
        let text = s.render();
        assert!(
            text.contains("  changefeed    last error: CDC:ErrSinkFailed: disk full\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "  result        NOT VERIFIED: equal at the checkpoint, but it did not reach the \
                 last upstream commit\n"
            ),
            "{text}"
        );

        let mut s = summary();
        s.verify.tables = 0;
        assert!(!s.verified());
        assert!(s.render().contains("NOT VERIFIED: no table was compared"));
    }

    #[test]
    fn progress_text() {
        let p = Progress {
            phase: "replicating".into(),
            elapsed: Duration::from_secs(3),
            upstream_rows: 1_500,
            upstream_rate: 500.4,
            upstream_ddls: 2,
            replicated_rows: 1_200,
            replicated_rate: 400.0,
            replicated_ddls: 1,
            resolved_lag: Some(Duration::from_millis(300)),
            checkpoint_lag: None,
            synced: Some(false),
            state: "normal".into(),
        };
        assert_eq!(
            p.render_plain(),
            "[   3.0s] replicating: upstream 1500 rows (500/s), 2 DDLs | replicated 1200 rows \
             (400/s), 1 DDLs | resolved lag 0.3s | checkpoint lag - | synced no | changefeed normal"
        );
        let live = p.render_live();
        assert_eq!(live.lines().count(), 4, "{live}");
        assert_eq!(
            live.lines().nth(1),
            Some("upstream           1,500 rows        500 rows/s  2 DDLs")
        );
        assert!(
            live.contains("resolved 0.3s  checkpoint -  synced no"),
            "{live}"
        );
    }
}
