//! `--sim-only`: how fast the embedded cluster itself can apply row changes and push them
//! through its CDC service to a plain [`RegionFeed`] subscriber, with no dataflow and no sink.
//!
//! This is the ceiling every other figure sits under: a changefeed fed by the sim cannot go
//! faster than the sim produces. Subscriptions are made before the writes start, so writing
//! and feeding overlap as they do in production; the run ends when the subscriber has seen
//! every row.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidal_ingest::feed::{FeedConfig, FeedEvent, RegionFeed};
use tidal_ingest::pd::PdClient;
use tidal_model::{TableSpan, Ts};
use tidal_sim::tidb::{Table, Tidb};

use super::BenchError;
use super::workload::{Shape, WriteResult, write_rows};

/// What the sim-only run measured.
#[derive(Debug, Clone)]
pub struct SimOnlyResult {
    /// The writer's result (apply side).
    pub write: WriteResult,
    /// Rows the subscriber received.
    pub rows_received: u64,
    /// Bytes of keys and values received.
    pub bytes_received: u64,
    /// From the first write to the last row received.
    pub elapsed: Duration,
}

/// Subscribes every table from `start_ts`, writes `rows` rows, and waits until all arrived.
pub async fn run(
    pd: Arc<PdClient>,
    tidb: &Tidb,
    tables: &[Table],
    shape: &Shape,
    rows: u64,
    start_ts: Ts,
    timeout: Duration,
) -> Result<SimOnlyResult, BenchError> {
    let feed = RegionFeed::new(pd, FeedConfig::default());
    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for t in tables {
        let sub = feed
            .subscribe(TableSpan::for_table(t.id()), start_ts)
            .map_err(|e| BenchError::Feed(e.to_string()))?;
        let (received, bytes) = (Arc::clone(&received), Arc::clone(&bytes));
        consumers.push(tokio::spawn(async move {
            while let Some(ev) = sub.recv().await {
                match ev {
                    FeedEvent::Rows(rs) => {
                        let b: usize = rs.iter().map(|r| r.key.len() + r.value.len()).sum();
                        bytes.fetch_add(b as u64, Ordering::Relaxed);
                        received.fetch_add(rs.len() as u64, Ordering::Relaxed);
                    }
                    FeedEvent::Resolved(_) => {}
                    FeedEvent::Error(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        }));
    }
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (tidb, tables, shape, stop) =
            (tidb.clone(), tables.to_vec(), *shape, Arc::clone(&stop));
        std::thread::Builder::new()
            .name("bench-writer".into())
            .spawn(move || write_rows(&tidb, &tables, &shape, rows, None, None, &stop))
            .map_err(|e| BenchError::Workload(format!("spawning the writer: {e}")))?
    };
    let deadline = start + timeout;
    let mut write_result = None;
    let mut writer = Some(writer);
    loop {
        if writer.as_ref().is_some_and(|w| w.is_finished())
            && let Some(w) = writer.take()
        {
            let r = w
                .join()
                .map_err(|_| BenchError::Workload("writer panicked".into()))?
                .map_err(|e| BenchError::Workload(e.to_string()))?;
            write_result = Some(r);
        }
        if let Some(w) = &write_result
            && received.load(Ordering::Relaxed) >= w.rows
        {
            break;
        }
        if let Some(c) = consumers.iter().find(|c| c.is_finished()) {
            let _ = c;
            return Err(BenchError::Feed("a subscription ended early".into()));
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            return Err(BenchError::Timeout(format!(
                "sim-only: {} of {rows} rows received after {timeout:?}",
                received.load(Ordering::Relaxed)
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    for c in &consumers {
        c.abort();
    }
    let Some(write) = write_result else {
        return Err(BenchError::Workload("writer result missing".into()));
    };
    Ok(SimOnlyResult {
        write,
        rows_received: received.load(Ordering::Relaxed),
        bytes_received: bytes.load(Ordering::Relaxed),
        elapsed,
    })
}
