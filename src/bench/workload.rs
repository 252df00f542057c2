//! The benchmark's workload: `tables` tables `tidal_bench.t1..tN` of
//! `(id BIGINT PRIMARY KEY, k BIGINT, pad VARCHAR)`, filled by insert-only transactions of
//! `txn_size` rows that cycle through the tables, written through the sim's TiDB layer so the
//! bytes CDC sees are TiDB's.
//!
//! Rows are a pure function of their sequence number, so the decode floor and the MySQL
//! baseline can rebuild the very same rows without keeping them in memory. The writer runs on
//! its own named OS thread (`bench-writer`): the TiDB layer is synchronous, and a named thread
//! lets the CPU breakdown show what writing costs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidal_model::Datum;
use tidal_sim::tidb::{ColumnSpec, PrimaryKey, Table, TableSpec, Tidb, TidbError, types};

/// Database the benchmark writes to (upstream, and downstream for MySQL sinks).
pub const DB: &str = "tidal_bench";

/// Bytes of a row that are not the `pad` column (two integers plus row-format overhead).
const FIXED_ROW_BYTES: usize = 24;

/// The shape of the rows written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Number of tables.
    pub tables: usize,
    /// Approximate bytes per row value.
    pub row_width: usize,
    /// Rows per transaction.
    pub txn_size: usize,
}

impl Shape {
    /// Length of the `pad` column so that a row is about `row_width` bytes.
    pub fn pad_len(&self) -> usize {
        self.row_width.saturating_sub(FIXED_ROW_BYTES).max(1)
    }

    /// Name of table `i` (0-based).
    pub fn table_name(i: usize) -> String {
        format!("t{}", i + 1)
    }

    /// The table definition.
    pub fn table_spec(&self, i: usize) -> TableSpec {
        TableSpec::new(
            Self::table_name(i),
            vec![
                ColumnSpec::new("id", types::bigint()).not_null(),
                ColumnSpec::new("k", types::bigint()).not_null(),
                ColumnSpec::new("pad", types::varchar(self.pad_len() as i64)),
            ],
        )
        .primary_key(PrimaryKey::IntHandle("id".into()))
    }

    /// The table row `seq` goes to, and its primary key there.
    pub fn place(&self, seq: u64) -> (usize, i64) {
        let tables = self.tables.max(1) as u64;
        let txn = seq / self.txn_size.max(1) as u64;
        let table = (txn % tables) as usize;
        (table, (seq + 1) as i64)
    }

    /// Values of row `seq` (public-column order).
    pub fn row(&self, seq: u64) -> Vec<Datum> {
        let (_, id) = self.place(seq);
        vec![
            Datum::Int(id),
            Datum::Int(seq.wrapping_mul(2_654_435_761) as i64 & 0xFFFF_FFFF),
            Datum::Bytes(pad_bytes(seq, self.pad_len())),
        ]
    }
}

/// Deterministic printable filler for row `seq` (no tabs, newlines or backslashes, so it can go
/// into a LOAD DATA file as is).
pub fn pad_bytes(seq: u64, len: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize]
        })
        .collect()
}

/// Creates the database and its tables; returns the tables in order.
pub fn create_tables(tidb: &Tidb, shape: &Shape) -> Result<Vec<Table>, TidbError> {
    if !tidb.has_database(DB) {
        tidb.create_database(DB)?;
    }
    let mut out = Vec::with_capacity(shape.tables);
    for i in 0..shape.tables.max(1) {
        tidb.create_table(DB, &shape.table_spec(i))?;
        out.push(tidb.table(DB, &Shape::table_name(i))?);
    }
    Ok(out)
}

/// One committed transaction: its commit ts and when the commit returned.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// Commit ts.
    pub commit_ts: u64,
    /// Wall time right after the commit returned.
    pub at: Instant,
    /// Rows in it.
    pub rows: u64,
}

/// What the writer did.
#[derive(Debug, Clone)]
pub struct WriteResult {
    /// Rows committed.
    pub rows: u64,
    /// Transactions committed.
    pub txns: u64,
    /// Largest commit ts.
    pub last_commit_ts: u64,
    /// Wall time of the whole write.
    pub elapsed: Duration,
    /// Transactions retried after a conflict.
    pub retries: u64,
    /// CPU time of the writer thread (sim apply and TiDB encoding), if measurable.
    pub cpu: Option<Duration>,
}

/// Where the writer publishes commits as they happen (for the latency sampler).
pub type CommitQueue = Arc<Mutex<VecDeque<Committed>>>;

/// Writes `rows` rows in transactions of `shape.txn_size`, at most `rate` rows per second
/// (unlimited if `None`), pushing each commit to `queue` if given. Stops early if `stop` is
/// set. Blocking: run it on its own thread.
pub fn write_rows(
    tidb: &Tidb,
    tables: &[Table],
    shape: &Shape,
    rows: u64,
    rate: Option<u64>,
    queue: Option<&CommitQueue>,
    stop: &AtomicBool,
) -> Result<WriteResult, TidbError> {
    let start = Instant::now();
    let txn_size = shape.txn_size.max(1) as u64;
    let mut seq = 0u64;
    let mut res = WriteResult {
        rows: 0,
        txns: 0,
        last_commit_ts: 0,
        elapsed: Duration::ZERO,
        retries: 0,
        cpu: None,
    };
    let cpu0 = super::metrics::thread_cpu();
    while seq < rows && !stop.load(Ordering::Relaxed) {
        let n = txn_size.min(rows - seq);
        if let Some(r) = rate.filter(|r| *r > 0) {
            // Pace by the schedule (not by sleeping a fixed gap) so slow commits do not lower
            // the rate.
            let due = start + Duration::from_secs_f64(seq as f64 / r as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let (table_idx, _) = shape.place(seq);
        let Some(table) = tables.get(table_idx) else {
            return Err(TidbError::Invalid(format!("no table {table_idx}")));
        };
        let mut attempt = 0;
        let commit_ts = loop {
            let mut txn = tidb.begin();
            for s in seq..seq + n {
                txn.insert(table, shape.row(s))?;
            }
            match txn.commit() {
                Ok(info) => match info.commit_ts {
                    Some(c) => break c,
                    None => return Err(TidbError::Invalid("transaction rolled back".into())),
                },
                Err(e) if e.is_retryable() && attempt < 20 => {
                    attempt += 1;
                    res.retries += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let at = Instant::now();
        if let Some(q) = queue
            && let Ok(mut q) = q.lock()
        {
            q.push_back(Committed {
                commit_ts,
                at,
                rows: n,
            });
        }
        seq += n;
        res.rows += n;
        res.txns += 1;
        res.last_commit_ts = res.last_commit_ts.max(commit_ts);
    }
    res.elapsed = start.elapsed();
    res.cpu = match (cpu0, super::metrics::thread_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cycle_tables_per_transaction() {
        let s = Shape {
            tables: 3,
            row_width: 100,
            txn_size: 2,
        };
        assert_eq!(s.place(0), (0, 1));
        assert_eq!(s.place(1), (0, 2));
        assert_eq!(s.place(2), (1, 3));
        assert_eq!(s.place(5), (2, 6));
        assert_eq!(s.place(6), (0, 7));
        assert_eq!(s.pad_len(), 76);
        let r = s.row(4);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], Datum::Int(5));
        assert_eq!(s.row(4), r, "rows are deterministic");
    }

    #[test]
    fn pad_is_printable_and_sized() {
        let p = pad_bytes(7, 50);
        assert_eq!(p.len(), 50);
        assert!(p.iter().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(pad_bytes(7, 50), pad_bytes(8, 50));
        let tiny = Shape {
            tables: 1,
            row_width: 1,
            txn_size: 1,
        };
        assert_eq!(tiny.pad_len(), 1);
    }
}
