//! Workloads that drive the TiDB stand-in: sysbench-like OLTP, bank transfers with an invariant
//! total, a DDL mix, large transactions, and many tables.
//!
//! Every workload is deterministic given its seed (`StdRng::seed_from_u64`): the same seed run
//! single-threaded produces the same keys and values (commit timestamps differ, they come from
//! the clock). That is what makes a failing end-to-end run reproducible.
//!
//! A workload is a [`Workload`]: `setup` once (create tables, load data), then `step` commits
//! one transaction or one DDL. [`run`] drives it on the current thread for a number of steps or
//! a duration, optionally rate-limited; [`spawn`] runs it on tokio's blocking pool and returns a
//! [`WorkloadHandle`] that can stop it. Steps that fail with a retryable error (write conflict,
//! lock, schema changed) are counted and retried by the next step; other errors end the run.
//!
//! A [`Recorder`] (optional, bounded) keeps what was committed — commit ts, table, kind, key and
//! values — as a test oracle.

pub mod bank;
pub mod ddl;
pub mod large_txn;
pub mod many_tables;
pub mod sysbench;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tidal_model::Datum;
use tidal_model::ddl::ActionType;

use crate::tidb::{CommitInfo, DdlOutcome, RowKind, Tidb, TidbError};

pub use bank::{Bank, BankConfig};
pub use ddl::{DdlMix, DdlMixConfig};
pub use large_txn::{LargeTxn, LargeTxnConfig};
pub use many_tables::{ManyTables, ManyTablesConfig};
pub use sysbench::{Sysbench, SysbenchConfig};

/// What a record describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    /// A row write.
    Row(RowKind),
    /// A DDL job.
    Ddl(ActionType),
}

/// One committed change, as the oracle keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitRecord {
    /// Commit ts.
    pub commit_ts: u64,
    /// Database name.
    pub db: String,
    /// Table name (empty for database DDL).
    pub table: String,
    /// Physical table id (0 for database DDL).
    pub table_id: i64,
    /// What happened.
    pub kind: RecordKind,
    /// The raw row key (empty for DDL).
    pub key: Vec<u8>,
    /// The row after the write (`None` for deletes and DDL); for DDL the query is in `query`.
    pub values: Option<Vec<Datum>>,
    /// The DDL query (empty for rows).
    pub query: String,
}

#[derive(Debug)]
struct RecorderInner {
    cap: usize,
    records: VecDeque<CommitRecord>,
    dropped: u64,
}

/// A bounded log of committed changes (cheap to clone; clones share the log). When full, the
/// oldest records are dropped and counted.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<RecorderInner>>,
}

impl Recorder {
    /// A recorder keeping at most `cap` records.
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(RecorderInner {
                cap,
                records: VecDeque::new(),
                dropped: 0,
            })),
        }
    }

    fn push(&self, r: CommitRecord) {
        let mut inner = self.inner.lock();
        if inner.cap == 0 {
            inner.dropped += 1;
            return;
        }
        if inner.records.len() >= inner.cap {
            inner.records.pop_front();
            inner.dropped += 1;
        }
        inner.records.push_back(r);
    }

    /// Records the rows of a commit (nothing for a rolled-back transaction).
    pub fn record_commit(&self, info: &CommitInfo) {
        let Some(commit_ts) = info.commit_ts else {
            return;
        };
        for row in &info.rows {
            self.push(CommitRecord {
                commit_ts,
                db: row.db.to_string(),
                table: row.table.to_string(),
                table_id: row.table_id,
                kind: RecordKind::Row(row.kind),
                key: row.key.clone(),
                values: row.values.clone(),
                query: String::new(),
            });
        }
    }

    /// Records a DDL.
    pub fn record_ddl(&self, db: &str, table: &str, out: &DdlOutcome) {
        self.push(CommitRecord {
            commit_ts: out.commit_ts,
            db: db.to_owned(),
            table: table.to_owned(),
            table_id: out.table_ids.first().copied().unwrap_or(0),
            kind: RecordKind::Ddl(out.action),
            key: Vec::new(),
            values: None,
            query: out.query.clone(),
        });
    }

    /// A copy of the records kept.
    pub fn records(&self) -> Vec<CommitRecord> {
        self.inner.lock().records.iter().cloned().collect()
    }

    /// Number of records dropped for lack of room.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().dropped
    }
}

/// Counters of a run (shared with [`WorkloadHandle::progress`] while it runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadStats {
    /// Committed transactions (DDL jobs included).
    pub txns: u64,
    /// Rows written.
    pub rows: u64,
    /// DDL jobs run.
    pub ddls: u64,
    /// Steps that failed with a retryable error.
    pub retries: u64,
    /// The largest commit ts seen.
    pub last_commit_ts: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    txns: AtomicU64,
    rows: AtomicU64,
    ddls: AtomicU64,
    retries: AtomicU64,
    last_commit_ts: AtomicU64,
}

impl Counters {
    fn snapshot(&self, elapsed: Duration) -> WorkloadStats {
        WorkloadStats {
            txns: self.txns.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            ddls: self.ddls.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            last_commit_ts: self.last_commit_ts.load(Ordering::Relaxed),
            elapsed,
        }
    }
}

/// Where a step reports what it committed.
#[derive(Debug)]
pub struct StepSink<'a> {
    counters: &'a Counters,
    recorder: Option<&'a Recorder>,
}

impl StepSink<'_> {
    /// Reports a committed (or rolled-back) transaction.
    pub fn committed(&mut self, info: &CommitInfo) {
        if let Some(ts) = info.commit_ts {
            self.counters.txns.fetch_add(1, Ordering::Relaxed);
            self.counters
                .rows
                .fetch_add(info.rows.len() as u64, Ordering::Relaxed);
            self.counters
                .last_commit_ts
                .fetch_max(ts, Ordering::Relaxed);
        }
        if let Some(r) = self.recorder {
            r.record_commit(info);
        }
    }

    /// Reports a finished DDL on `db`.`table`.
    pub fn ddl(&mut self, db: &str, table: &str, out: &DdlOutcome) {
        self.counters.txns.fetch_add(1, Ordering::Relaxed);
        self.counters.ddls.fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_commit_ts
            .fetch_max(out.commit_ts, Ordering::Relaxed);
        if let Some(r) = self.recorder {
            r.record_ddl(db, table, out);
        }
    }
}

/// A workload: set up once, then one transaction (or DDL) per step.
pub trait Workload: Send {
    /// Short name (`sysbench`, `bank`, …).
    fn name(&self) -> &'static str;

    /// Creates the schema and loads initial data.
    fn setup(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError>;

    /// Commits one transaction or runs one DDL.
    fn step(&mut self, tidb: &Tidb, sink: &mut StepSink<'_>) -> Result<(), TidbError>;
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunLimit {
    /// After this many steps (successful or retried).
    Steps(u64),
    /// After this much time.
    Duration(Duration),
    /// When stopped.
    Forever,
}

/// How to run a workload.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Steps per second; `None` = as fast as possible.
    pub rate: Option<u64>,
    /// When to stop.
    pub limit: RunLimit,
    /// Where to record commits, if anywhere.
    pub recorder: Option<Recorder>,
    /// Skip `setup` (the schema exists already).
    pub skip_setup: bool,
}

impl RunOptions {
    /// Run `n` steps flat out.
    pub fn steps(n: u64) -> Self {
        Self {
            rate: None,
            limit: RunLimit::Steps(n),
            recorder: None,
            skip_setup: false,
        }
    }

    /// Run for `d` flat out.
    pub fn duration(d: Duration) -> Self {
        Self {
            limit: RunLimit::Duration(d),
            ..Self::steps(0)
        }
    }

    /// Run until stopped.
    pub fn forever() -> Self {
        Self {
            limit: RunLimit::Forever,
            ..Self::steps(0)
        }
    }

    /// With a rate limit.
    pub fn rate(mut self, per_sec: Option<u64>) -> Self {
        self.rate = per_sec.filter(|r| *r > 0);
        self
    }

    /// With a recorder.
    pub fn record(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }
}

fn run_inner(
    workload: &mut dyn Workload,
    tidb: &Tidb,
    opts: &RunOptions,
    counters: &Counters,
    stop: &AtomicBool,
) -> Result<WorkloadStats, TidbError> {
    let started = Instant::now();
    let mut sink = StepSink {
        counters,
        recorder: opts.recorder.as_ref(),
    };
    if !opts.skip_setup {
        workload.setup(tidb, &mut sink)?;
    }
    let begun = Instant::now();
    let mut steps = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match opts.limit {
            RunLimit::Steps(n) if steps >= n => break,
            RunLimit::Duration(d) if begun.elapsed() >= d => break,
            _ => {}
        }
        if let Some(rate) = opts.rate {
            let due = begun + Duration::from_secs_f64(steps as f64 / rate as f64);
            while Instant::now() < due {
                if stop.load(Ordering::Relaxed) {
                    return Ok(counters.snapshot(started.elapsed()));
                }
                std::thread::sleep((due - Instant::now()).min(Duration::from_millis(50)));
            }
        }
        match workload.step(tidb, &mut sink) {
            Ok(()) => {}
            Err(e) if e.is_retryable() => {
                counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
        steps += 1;
    }
    Ok(counters.snapshot(started.elapsed()))
}

/// Runs a workload on the current thread (setup, then steps until the limit).
pub fn run(
    workload: &mut dyn Workload,
    tidb: &Tidb,
    opts: &RunOptions,
) -> Result<WorkloadStats, TidbError> {
    run_inner(
        workload,
        tidb,
        opts,
        &Counters::default(),
        &AtomicBool::new(false),
    )
}

/// A workload running on tokio's blocking pool.
#[derive(Debug)]
pub struct WorkloadHandle {
    name: &'static str,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    started: Instant,
    task: tokio::task::JoinHandle<Result<WorkloadStats, TidbError>>,
}

impl WorkloadHandle {
    /// The workload's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Asks the workload to stop after its current step.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The counters so far.
    pub fn progress(&self) -> WorkloadStats {
        self.counters.snapshot(self.started.elapsed())
    }

    /// True once the run ended (limit reached, stopped, or failed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the run to end and returns its stats.
    pub async fn join(self) -> Result<WorkloadStats, TidbError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(TidbError::Invalid(format!(
                "workload {} task failed: {e}",
                self.name
            ))),
        }
    }
}

/// Runs a workload on tokio's blocking pool (needs a tokio runtime).
pub fn spawn(mut workload: Box<dyn Workload>, tidb: Tidb, opts: RunOptions) -> WorkloadHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let name = workload.name();
    let (s, c) = (Arc::clone(&stop), Arc::clone(&counters));
    let task =
        tokio::task::spawn_blocking(move || run_inner(workload.as_mut(), &tidb, &opts, &c, &s));
    WorkloadHandle {
        name,
        stop,
        counters,
        started: Instant::now(),
        task,
    }
}

/// Random printable ASCII of `len` bytes (sysbench's `c`/`pad` style filler).
///
/// The RNG fills the buffer in bulk and each byte is mapped onto the alphabet (a slight bias
/// toward its first characters is harmless here): a per-byte `random_range` made the filler a
/// visible share of the workloads' cost. Deterministic for a given RNG state.
pub(crate) fn filler(rng: &mut impl rand::Rng, len: usize) -> Vec<u8> {
    const ALPHABET: &[u8; 37] = b"0123456789abcdefghijklmnopqrstuvwxyz-";
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    for b in &mut out {
        *b = ALPHABET[usize::from(*b) % ALPHABET.len()];
    }
    out
}

/// Creates a database unless it exists.
pub(crate) fn ensure_database(
    tidb: &Tidb,
    db: &str,
    sink: &mut StepSink<'_>,
) -> Result<(), TidbError> {
    if !tidb.has_database(db) {
        let out = tidb.create_database(db)?;
        sink.ddl(db, "", &out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_is_bounded() {
        let r = Recorder::new(2);
        let info = CommitInfo {
            start_ts: 1,
            commit_ts: Some(2),
            rows: (0..3)
                .map(|i| crate::tidb::RowWrite {
                    table_id: 1,
                    db: "d".into(),
                    table: "t".into(),
                    kind: RowKind::Insert,
                    key: vec![i],
                    handle: tidal_model::tablecodec::Handle::Int(i64::from(i)),
                    values: None,
                })
                .collect(),
        };
        r.record_commit(&info);
        assert_eq!(
            r.records()
                .iter()
                .map(|x| x.key.clone())
                .collect::<Vec<_>>(),
            [vec![1], vec![2]]
        );
        assert_eq!(r.dropped(), 1);
        // Rolled back: nothing.
        r.record_commit(&CommitInfo {
            commit_ts: None,
            ..info
        });
        assert_eq!(r.dropped(), 1);
    }
}
