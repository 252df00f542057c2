//! The DML pipeline behind [`super::MySqlSink::write`]: conflict detection, the worker tasks,
//! downstream transactions, retries.
//!
//! `write` runs the [`ConflictDetector`] synchronously and queues each transaction on a worker
//! as soon as the detector allows. A worker takes the transactions queued to it, packs them into
//! one downstream transaction of at most `max-txn-row` rows (an upstream transaction is never
//! split, unless it alone is larger than `max-txn-row`: then it is written in chunks of that
//! size), executes the statements in order, commits, and only then tells the detector, which
//! releases the transactions' keys. Each `write` call's future resolves when its last
//! transaction has committed.
//!
//! Failures: a retryable error (lost connection, deadlock, lock-wait timeout, timeouts) is
//! retried with exponential backoff (`retry_backoff` doubling to `retry_backoff_max`) up to
//! `retry_attempts` times, then [`SinkError::RetriesExhausted`]. A "Duplicate entry" error
//! outside safe mode rebuilds the downstream transaction in safe mode and retries it once; that
//! worker stays in safe mode for 5 s (as TiCDC does). Anything else is [`SinkError::Rejected`] at
//! once. After a failure the sink is *failed*: every pending and later write resolves with that
//! error, because a transaction that depended on the failed one must not be applied without it.
//! The caller reopens the sink and replays from its checkpoint in safe mode.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlArguments, MySqlDatabaseError};
use sqlx::{AssertSqlSafe, MySql, MySqlPool};
use tokio::sync::{Notify, mpsc, oneshot};

use super::causality::{ConflictDetector, Dispatch, TxnId};
use super::config::MySqlConfig;
use super::sql::{SqlMode, SqlValue, Stmt, build_statements};
use crate::sink::{FlushReport, SinkError, SinkTxn};

/// How long a worker stays in safe mode after a duplicate-key error.
const SAFE_MODE_AFTER_DUPLICATE: Duration = Duration::from_secs(5);

/// The outcome of a `write` call, completed by the workers.
#[derive(Debug)]
pub(crate) struct BatchState {
    remaining: AtomicUsize,
    report: FlushReport,
    done: Mutex<Option<oneshot::Sender<Result<FlushReport, SinkError>>>>,
}

impl BatchState {
    pub(crate) fn new(
        txns: usize,
        report: FlushReport,
    ) -> (
        Arc<BatchState>,
        oneshot::Receiver<Result<FlushReport, SinkError>>,
    ) {
        let (tx, rx) = oneshot::channel();
        let state = BatchState {
            remaining: AtomicUsize::new(txns),
            report,
            done: Mutex::new(Some(tx)),
        };
        (Arc::new(state), rx)
    }

    fn complete_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(tx) = lock(&self.done).take()
        {
            let _ = tx.send(Ok(self.report));
        }
    }

    fn fail(&self, err: SinkError) {
        if let Some(tx) = lock(&self.done).take() {
            let _ = tx.send(Err(err));
        }
    }
}

/// One upstream transaction on its way downstream.
#[derive(Debug)]
pub(crate) struct Job {
    pub txn: SinkTxn,
    pub batch: Arc<BatchState>,
}

type Queued = (TxnId, Job);

/// State shared by the sink handle and its workers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: MySqlConfig,
    pub pool: MySqlPool,
    detector: Mutex<ConflictDetector<Job>>,
    /// One queue per worker; emptied on close so that workers exit.
    queues: Mutex<Vec<mpsc::UnboundedSender<Queued>>>,
    /// The first error that stopped the pipeline.
    failed: Mutex<Option<SinkError>>,
    pub closed: AtomicBool,
    /// Signalled whenever the detector becomes empty.
    idle: Notify,
}

/// Locks a mutex, ignoring poisoning (the data stays consistent: every critical section here
/// is short and does not panic on its own).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A copy of an error (SinkError is not `Clone` because of `io::Error`).
pub(crate) fn dup_error(e: &SinkError) -> SinkError {
    match e {
        SinkError::InvalidUri { uri, reason } => SinkError::InvalidUri {
            uri: uri.clone(),
            reason: reason.clone(),
        },
        SinkError::Connect { target, reason } => SinkError::Connect {
            target: target.clone(),
            reason: reason.clone(),
        },
        SinkError::Rejected { what, reason } => SinkError::Rejected {
            what: what.clone(),
            reason: reason.clone(),
        },
        SinkError::RetriesExhausted {
            what,
            attempts,
            reason,
        } => SinkError::RetriesExhausted {
            what: what.clone(),
            attempts: *attempts,
            reason: reason.clone(),
        },
        SinkError::Encode { what, reason } => SinkError::Encode {
            what: what.clone(),
            reason: reason.clone(),
        },
        SinkError::Io { path, source } => SinkError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        SinkError::Closed => SinkError::Closed,
    }
}

impl Shared {
    /// Builds the shared state and spawns `cfg.worker_count` workers on the current runtime.
    pub(crate) fn start(cfg: MySqlConfig, pool: MySqlPool) -> Arc<Shared> {
        let workers = cfg.worker_count.max(1);
        let mut senders = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let shared = Arc::new(Shared {
            cfg,
            pool,
            detector: Mutex::new(ConflictDetector::new(workers)),
            queues: Mutex::new(senders),
            failed: Mutex::new(None),
            closed: AtomicBool::new(false),
            idle: Notify::new(),
        });
        for (index, rx) in receivers.into_iter().enumerate() {
            let worker = Worker {
                shared: Arc::clone(&shared),
                rx,
                held: None,
                safe_until: None,
                index,
            };
            tokio::spawn(worker.run());
        }
        shared
    }

    /// The error the pipeline stopped with, if any.
    pub(crate) fn failure(&self) -> Option<SinkError> {
        lock(&self.failed).as_ref().map(dup_error)
    }

    fn set_failed(&self, e: &SinkError) {
        let mut f = lock(&self.failed);
        if f.is_none() {
            *f = Some(dup_error(e));
        }
    }

    /// Adds one transaction to the detector and queues what may run.
    pub(crate) fn submit(&self, keys: Vec<u64>, job: Job) {
        let mut detector = lock(&self.detector);
        let (_, ready) = detector.add(keys, job);
        self.queue(&mut detector, ready);
    }

    /// Queues dispatched transactions (called with the detector locked, so that queue order is
    /// decision order). A transaction that cannot be queued because the sink is shutting down
    /// fails with [`SinkError::Closed`] and is finished at once.
    fn queue(&self, detector: &mut ConflictDetector<Job>, ready: Vec<Dispatch<Job>>) {
        let mut work = ready;
        while !work.is_empty() {
            let mut next = Vec::new();
            let queues = lock(&self.queues);
            for d in work {
                let sent = match queues.get(d.worker) {
                    Some(q) => q.send((d.id, d.payload)).map_err(|e| e.0),
                    None => Err((d.id, d.payload)),
                };
                if let Err((id, job)) = sent {
                    job.batch.fail(SinkError::Closed);
                    next.extend(detector.finish(id));
                }
            }
            drop(queues);
            work = next;
        }
        if detector.pending() == 0 {
            self.idle.notify_waiters();
        }
    }

    fn finish(&self, ids: &[TxnId]) {
        let mut detector = lock(&self.detector);
        for id in ids {
            let ready = detector.finish(*id);
            self.queue(&mut detector, ready);
        }
    }

    /// Waits until no transaction is pending.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.detector).pending() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Drops the worker queues: workers finish what they hold, then exit.
    pub(crate) fn stop_workers(&self) {
        lock(&self.queues).clear();
    }

    /// Removes the password from a downstream message (belt and braces: servers do not echo it).
    pub(crate) fn scrub(&self, msg: String) -> String {
        let pw = &self.cfg.password;
        if pw.len() >= 3 && msg.contains(pw.as_str()) {
            msg.replace(pw.as_str(), "xxxxx")
        } else {
            msg
        }
    }
}

/// How a downstream error should be handled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// Worth retrying (connection trouble, deadlock, lock wait, server busy).
    Retryable,
    /// `Duplicate entry` (1062).
    Duplicate,
    /// The pool is closed.
    Closed,
    /// Retrying will not help.
    Permanent,
}

/// MySQL/TiDB error numbers worth retrying: too many connections (1040), server shutdown
/// (1053), network read/write errors (1158–1161), lock wait timeout (1205), deadlock (1213),
/// query interrupted (1317), server gone / lost (2006, 2013), and TiDB's write conflicts and
/// busy/timeout errors (8002, 8022, 8027, 8028, 9001–9007).
const RETRYABLE_CODES: &[u16] = &[
    1040, 1053, 1158, 1159, 1160, 1161, 1205, 1213, 1317, 2006, 2013, 8002, 8022, 8027, 8028, 9001,
    9002, 9003, 9004, 9005, 9006, 9007,
];

/// The server's error number, if the error came from the server.
pub(crate) fn error_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()
        .and_then(|d| d.try_downcast_ref::<MySqlDatabaseError>())
        .map(MySqlDatabaseError::number)
}

/// Classifies a driver error.
pub(crate) fn classify(e: &sqlx::Error) -> ErrorClass {
    match e {
        sqlx::Error::Database(_) => match error_number(e) {
            Some(1062) => ErrorClass::Duplicate,
            Some(n) if RETRYABLE_CODES.contains(&n) => ErrorClass::Retryable,
            _ => ErrorClass::Permanent,
        },
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => ErrorClass::Retryable,
        sqlx::Error::PoolClosed => ErrorClass::Closed,
        _ => ErrorClass::Permanent,
    }
}

/// A driver error as text, with the server's error number when there is one.
pub(crate) fn describe(e: &sqlx::Error) -> String {
    match (e.as_database_error(), error_number(e)) {
        (Some(d), Some(n)) => format!("error {n}: {}", d.message()),
        _ => e.to_string(),
    }
}

/// Binds one value.
fn bind<'q>(
    q: sqlx::query::Query<'q, MySql, MySqlArguments>,
    v: &SqlValue,
) -> sqlx::query::Query<'q, MySql, MySqlArguments> {
    match v {
        SqlValue::Null => q.bind(None::<String>),
        SqlValue::I64(x) => q.bind(*x),
        SqlValue::U64(x) => q.bind(*x),
        SqlValue::F32(x) => q.bind(*x),
        SqlValue::F64(x) => q.bind(*x),
        SqlValue::Bytes(b) => q.bind(b.clone()),
        SqlValue::Text(s) => q.bind(s.clone()),
    }
}

/// Runs `stmts` in one downstream transaction.
pub(crate) async fn exec_txn(pool: &MySqlPool, stmts: &[Stmt]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for s in stmts {
        let mut q = sqlx::query(AssertSqlSafe(s.sql.clone()));
        for a in &s.args {
            q = bind(q, a);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await
}

struct Worker {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Queued>,
    /// A transaction taken from the queue that did not fit into the previous flush.
    held: Option<Queued>,
    /// Safe mode forced until then (after a duplicate-key error).
    safe_until: Option<Instant>,
    index: usize,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let first = match self.held.take() {
                Some(q) => q,
                None => match self.rx.recv().await {
                    Some(q) => q,
                    None => return,
                },
            };
            let max = self.shared.cfg.max_txn_row.max(1);
            let mut rows = first.1.txn.rows.len();
            let mut jobs = vec![first];
            while rows < max {
                match self.rx.try_recv() {
                    Ok(q) => {
                        let n = q.1.txn.rows.len();
                        if rows + n > max {
                            self.held = Some(q);
                            break;
                        }
                        rows += n;
                        jobs.push(q);
                    }
                    Err(_) => break,
                }
            }
            let result = match self.shared.failure() {
                Some(e) => Err(e),
                None => self.flush(&jobs).await,
            };
            if let Err(e) = &result {
                self.shared.set_failed(e);
                tracing::warn!(worker = self.index, error = %e, "mysql sink: flush failed");
            }
            let ids: Vec<TxnId> = jobs.iter().map(|(id, _)| *id).collect();
            for (_, job) in &jobs {
                match &result {
                    Ok(()) => job.batch.complete_one(),
                    Err(e) => job.batch.fail(dup_error(e)),
                }
            }
            self.shared.finish(&ids);
        }
    }

    /// Writes `jobs` downstream: one transaction, or chunks of one oversize transaction.
    async fn flush(&mut self, jobs: &[Queued]) -> Result<(), SinkError> {
        let max = self.shared.cfg.max_txn_row.max(1);
        match jobs {
            [(_, only)] if only.txn.rows.len() > max => {
                for start in (0..only.txn.rows.len()).step_by(max) {
                    let end = (start + max).min(only.txn.rows.len());
                    self.flush_unit(&[(&only.txn, start..end)]).await?;
                }
                Ok(())
            }
            _ => {
                let unit: Vec<(&SinkTxn, std::ops::Range<usize>)> = jobs
                    .iter()
                    .map(|(_, j)| (&j.txn, 0..j.txn.rows.len()))
                    .collect();
                self.flush_unit(&unit).await
            }
        }
    }

    fn build(
        &self,
        unit: &[(&SinkTxn, std::ops::Range<usize>)],
        force_safe: bool,
    ) -> Result<Vec<Stmt>, SinkError> {
        let cfg = &self.shared.cfg;
        let mut stmts = Vec::new();
        for (txn, range) in unit {
            let rows = txn.rows.get(range.clone()).unwrap_or_default();
            let mode = SqlMode {
                safe: force_safe || cfg.safe_mode || txn.safe_mode,
                batch: cfg.batch_dml,
                max_multi_row: cfg.max_multi_row,
            };
            stmts.extend(build_statements(&txn.table, rows, mode)?);
        }
        Ok(stmts)
    }

    /// One downstream transaction, with retries.
    async fn flush_unit(
        &mut self,
        unit: &[(&SinkTxn, std::ops::Range<usize>)],
    ) -> Result<(), SinkError> {
        let cfg = self.shared.cfg.clone();
        let what = describe_unit(unit);
        let mut force_safe = self.safe_until.is_some_and(|t| Instant::now() < t);
        let mut stmts = self.build(unit, force_safe)?;
        let mut attempt: u32 = 0;
        let mut backoff = cfg.retry_backoff;
        loop {
            attempt += 1;
            let outcome =
                tokio::time::timeout(cfg.write_timeout, exec_txn(&self.shared.pool, &stmts)).await;
            let err = match outcome {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => {
                    let reason = format!("write timeout ({:?}) exceeded", cfg.write_timeout);
                    if attempt >= cfg.retry_attempts.max(1) {
                        return Err(SinkError::RetriesExhausted {
                            what,
                            attempts: attempt,
                            reason,
                        });
                    }
                    tracing::warn!(worker = self.index, %reason, attempt, "mysql sink: retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(cfg.retry_backoff_max);
                    continue;
                }
            };
            let reason = self.shared.scrub(describe(&err));
            match classify(&err) {
                ErrorClass::Duplicate if !force_safe => {
                    tracing::warn!(
                        worker = self.index,
                        %reason,
                        "mysql sink: duplicate entry, retrying the transaction in safe mode"
                    );
                    force_safe = true;
                    self.safe_until = Some(Instant::now() + SAFE_MODE_AFTER_DUPLICATE);
                    stmts = self.build(unit, true)?;
                    // The safe-mode rebuild does not count as an attempt.
                    attempt = attempt.saturating_sub(1);
                }
                ErrorClass::Retryable if attempt < cfg.retry_attempts.max(1) => {
                    tracing::warn!(worker = self.index, %reason, attempt, "mysql sink: retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(cfg.retry_backoff_max);
                }
                ErrorClass::Retryable => {
                    return Err(SinkError::RetriesExhausted {
                        what,
                        attempts: attempt,
                        reason,
                    });
                }
                ErrorClass::Closed => return Err(SinkError::Closed),
                ErrorClass::Duplicate | ErrorClass::Permanent => {
                    return Err(SinkError::Rejected { what, reason });
                }
            }
        }
    }
}

/// "N rows of `db`.`t`, …" for error messages.
fn describe_unit(unit: &[(&SinkTxn, std::ops::Range<usize>)]) -> String {
    let mut tables: Vec<String> = Vec::new();
    let mut rows = 0usize;
    for (txn, range) in unit {
        rows += range.len();
        let name = super::sql::quote_table(&txn.table.schema_name, &txn.table.table_name);
        if !tables.contains(&name) {
            tables.push(name);
        }
    }
    let shown: Vec<&str> = tables.iter().take(3).map(String::as_str).collect();
    let more = if tables.len() > 3 { ", …" } else { "" };
    format!(
        "a transaction of {rows} row changes to {}{more}",
        shown.join(", ")
    )
}
