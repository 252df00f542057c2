//! The blackhole sink: accepts everything, keeps nothing, and counts what went by.
//!
//! It exists to measure the pipeline in front of a sink without a downstream's cost (TiCDC has
//! the same thing), and to test flow control: with `delay-ms` every batch takes that long to
//! become "durable", which lets a test build back-pressure on purpose.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tidal_model::{Datum, DdlEvent, Ts};
use url::Url;

use crate::sink::{FlushReport, Sink, SinkError, TableDef, TxnBatch};
use crate::uri::{param_usize, query_params};

/// Parameters of `blackhole://`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlackholeConfig {
    /// How long each batch takes to become durable (`delay-ms`, default 0).
    pub delay: Duration,
}

const BLACKHOLE_PARAMS: &[&str] = &["delay-ms"];

impl BlackholeConfig {
    /// Reads the parameters of a `blackhole://` URI (`uri` is the original text, for errors).
    pub fn from_url(uri: &str, url: &Url) -> Result<BlackholeConfig, SinkError> {
        let mut cfg = BlackholeConfig::default();
        for (k, v) in query_params(uri, url, BLACKHOLE_PARAMS)? {
            if k == "delay-ms" {
                // Up to one hour: anything longer is a typo, not a test.
                let ms = param_usize(uri, &k, &v, 0, 3_600_000)?;
                cfg.delay = Duration::from_millis(ms as u64);
            }
        }
        Ok(cfg)
    }
}

/// An approximate encoded size of one value: 8 bytes for fixed-width numbers and times, the
/// length of byte strings and of the text form of decimals and JSON, 1 for NULL. Deterministic,
/// so tests can compare it.
pub fn datum_size(d: &Datum) -> u64 {
    match d {
        Datum::Null => 1,
        Datum::Int(_)
        | Datum::Uint(_)
        | Datum::Float64(_)
        | Datum::Enum(_)
        | Datum::Set(_)
        | Datum::Bit(_)
        | Datum::Time(_)
        | Datum::Duration(_) => 8,
        Datum::Float32(_) => 4,
        Datum::Bytes(b) => b.len() as u64,
        Datum::Decimal(d) => d.to_string().len() as u64,
        Datum::Json(j) => j.to_string().len() as u64,
    }
}

/// The approximate size of a batch: [`datum_size`] over every old and new value of every row.
pub fn batch_size(batch: &TxnBatch) -> u64 {
    batch
        .txns
        .iter()
        .flat_map(|t| t.rows.iter())
        .flat_map(|r| r.old.iter().chain(r.new.iter()))
        .flat_map(|vals| vals.iter())
        .map(datum_size)
        .fold(0u64, u64::saturating_add)
}

#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    ddls: AtomicU64,
    checkpoint: Mutex<Option<Ts>>,
    closed: AtomicBool,
}

/// A sink that discards everything and counts it.
#[derive(Debug, Clone)]
pub struct BlackholeSink {
    cfg: BlackholeConfig,
    counters: Arc<Counters>,
}

impl BlackholeSink {
    /// A blackhole with the given configuration.
    pub fn new(cfg: BlackholeConfig) -> BlackholeSink {
        BlackholeSink {
            cfg,
            counters: Arc::default(),
        }
    }

    /// Row changes made "durable" so far.
    pub fn rows(&self) -> u64 {
        self.counters.rows.load(Ordering::Acquire)
    }

    /// Approximate bytes (see [`batch_size`]) made "durable" so far.
    pub fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::Acquire)
    }

    /// Batches made "durable" so far.
    pub fn batches(&self) -> u64 {
        self.counters.batches.load(Ordering::Acquire)
    }

    /// DDLs "executed" so far.
    pub fn ddls(&self) -> u64 {
        self.counters.ddls.load(Ordering::Acquire)
    }

    /// The last checkpoint passed to [`Sink::update_checkpoint`].
    pub fn last_checkpoint(&self) -> Option<Ts> {
        match self.counters.checkpoint.lock() {
            Ok(g) => *g,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

impl Sink for BlackholeSink {
    fn kind(&self) -> &'static str {
        "blackhole"
    }

    fn write(&self, batch: TxnBatch) -> BoxFuture<'static, Result<FlushReport, SinkError>> {
        if self.counters.closed.load(Ordering::Acquire) {
            return futures::future::ready(Err(SinkError::Closed)).boxed();
        }
        let report = FlushReport {
            rows: batch.row_count() as u64,
            bytes: batch_size(&batch),
            max_commit_ts: batch.max_commit_ts().map_or(0, |t| t.0),
        };
        let counters = Arc::clone(&self.counters);
        let delay = self.cfg.delay;
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            counters.rows.fetch_add(report.rows, Ordering::AcqRel);
            counters.bytes.fetch_add(report.bytes, Ordering::AcqRel);
            counters.batches.fetch_add(1, Ordering::AcqRel);
            Ok(report)
        }
        .boxed()
    }

    fn execute_ddl(
        &self,
        _ddl: DdlEvent,
        _table: Option<Arc<TableDef>>,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        if self.counters.closed.load(Ordering::Acquire) {
            return futures::future::ready(Err(SinkError::Closed)).boxed();
        }
        self.counters.ddls.fetch_add(1, Ordering::AcqRel);
        futures::future::ready(Ok(())).boxed()
    }

    fn update_checkpoint(&self, ts: Ts) -> BoxFuture<'static, Result<(), SinkError>> {
        match self.counters.checkpoint.lock() {
            Ok(mut g) => *g = Some(ts),
            Err(poisoned) => *poisoned.into_inner() = Some(ts),
        }
        futures::future::ready(Ok(())).boxed()
    }

    fn close(&self) -> BoxFuture<'static, Result<(), SinkError>> {
        self.counters.closed.store(true, Ordering::Release);
        futures::future::ready(Ok(())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkTxn;
    use tidal_model::change::{RowChange, RowChangeKind};
    use tidal_model::schema::TableInfo;
    use tidal_model::tablecodec::Handle;

    fn batch() -> TxnBatch {
        let table = Arc::new(TableDef {
            schema_name: "db".into(),
            table_name: "t".into(),
            info: Arc::new(TableInfo::default()),
            version: 1,
        });
        let row = |kind, old: Option<Vec<Datum>>, new: Option<Vec<Datum>>| RowChange {
            table_id: 1,
            start_ts: Ts(1),
            commit_ts: Ts(2),
            kind,
            handle: Handle::Int(1),
            old,
            new,
        };
        TxnBatch {
            txns: vec![
                SinkTxn {
                    table: table.clone(),
                    start_ts: Ts(1),
                    commit_ts: Ts(2),
                    rows: vec![row(
                        RowChangeKind::Insert,
                        None,
                        Some(vec![Datum::Int(1), Datum::Bytes(b"abc".to_vec())]),
                    )],
                    safe_mode: false,
                },
                SinkTxn {
                    table,
                    start_ts: Ts(3),
                    commit_ts: Ts(7),
                    rows: vec![row(
                        RowChangeKind::Update,
                        Some(vec![Datum::Int(1), Datum::Null]),
                        Some(vec![Datum::Int(1), Datum::Float32(1.0)]),
                    )],
                    safe_mode: false,
                },
            ],
        }
    }

    #[tokio::test]
    async fn counts_rows_bytes_batches() {
        let sink = BlackholeSink::new(BlackholeConfig::default());
        let report = sink.write(batch()).await.unwrap();
        // (8 + 3) + (8 + 1) + (8 + 4)
        assert_eq!(
            report,
            FlushReport {
                rows: 2,
                bytes: 32,
                max_commit_ts: 7
            }
        );
        sink.write(TxnBatch::default()).await.unwrap();
        assert_eq!((sink.rows(), sink.bytes(), sink.batches()), (2, 32, 2));
        sink.update_checkpoint(Ts(9)).await.unwrap();
        assert_eq!(sink.last_checkpoint(), Some(Ts(9)));
        sink.close().await.unwrap();
        assert!(matches!(sink.write(batch()).await, Err(SinkError::Closed)));
    }

    #[tokio::test]
    async fn delay_holds_durability_back() {
        let cfg = BlackholeConfig {
            delay: Duration::from_millis(150),
        };
        let sink = BlackholeSink::new(cfg);
        let start = std::time::Instant::now();
        let fut = sink.write(batch());
        assert_eq!(sink.rows(), 0, "not durable before the delay");
        fut.await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert_eq!(sink.rows(), 2);
    }

    #[test]
    fn parses_delay() {
        let url = Url::parse("blackhole://?delay-ms=25").unwrap();
        let cfg = BlackholeConfig::from_url("blackhole://?delay-ms=25", &url).unwrap();
        assert_eq!(cfg.delay, Duration::from_millis(25));
        let url = Url::parse("blackhole://?delay=25").unwrap();
        let err = BlackholeConfig::from_url("blackhole://?delay=25", &url)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"delay\"") && err.contains("delay-ms"),
            "{err}"
        );
        let url = Url::parse("blackhole://?delay-ms=x").unwrap();
        let err = BlackholeConfig::from_url("blackhole://?delay-ms=x", &url)
            .unwrap_err()
            .to_string();
        assert!(err.contains("delay-ms") && err.contains("\"x\""), "{err}");
    }
}
