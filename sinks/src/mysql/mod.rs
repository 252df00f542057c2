//! The MySQL/TiDB sink: replicated transactions become SQL transactions downstream.
//!
//! The design follows TiCDC's MySQL sink (reference notes §8.5): a conflict detector
//! (`causality`) lets transactions that touch different rows run on `worker-count` parallel
//! writers while keeping every row's changes in commit order; each writer packs whole upstream
//! transactions into downstream transactions of at most `max-txn-row` rows (`writer`); SQL is
//! generated with bound parameters, multi-row where the table has a key, idempotent in safe
//! mode (`sql`); DDLs run exactly once, tracked in `tidb_cdc.ddl_ts_v1` (`ddl`).
//!
//! Durability is per downstream COMMIT, so [`Sink::update_checkpoint`] has nothing to record:
//! the changefeed checkpoint lives with the changefeed, and a replay after a restart is made
//! harmless by safe mode and the DDL progress table.

mod causality;
pub mod config;
mod ddl;
mod sql;
mod writer;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions, MySqlSslMode};
use sqlx::{Connection, Executor, MySqlConnection};
use tidal_model::{DdlEvent, Ts};

pub use config::MySqlConfig;

use crate::blackhole::batch_size;
use crate::sink::{FlushReport, Sink, SinkError, TableDef, TxnBatch};
use writer::{BatchState, ErrorClass, Job, Shared, classify, describe};

/// A MySQL/TiDB sink (see the module docs).
#[derive(Debug)]
pub struct MySqlSink {
    shared: Arc<Shared>,
    ddl_lock: Arc<tokio::sync::Mutex<()>>,
}

impl MySqlSink {
    /// Connects, checks the login, creates `tidb_cdc.ddl_ts_v1` and starts the writers (on the
    /// current tokio runtime).
    ///
    /// Bad credentials or a server that refuses the user fail at once with
    /// [`SinkError::Rejected`] (`what` = `login`). An unreachable server is retried
    /// `connect_attempts` times (each bounded by `timeout`) and then fails with
    /// [`SinkError::Connect`].
    pub async fn open(cfg: MySqlConfig) -> Result<MySqlSink, SinkError> {
        let opts = MySqlConnectOptions::new()
            .host(&cfg.host)
            .port(cfg.port)
            .username(&cfg.user)
            .password(&cfg.password)
            .ssl_mode(MySqlSslMode::Disabled)
            // `||` must stay OR: replayed DDL text is the user's.
            .pipes_as_concat(false)
            .timezone(Some("+00:00".to_string()))
            .charset("utf8mb4");
        check_login(&cfg, &opts).await?;

        let pool = MySqlPoolOptions::new()
            .max_connections(u32::try_from(cfg.worker_count + 2).unwrap_or(u32::MAX))
            .min_connections(0)
            .acquire_timeout(cfg.dial_timeout.max(std::time::Duration::from_secs(1)))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // Read committed avoids gap locks between parallel writers (as TiCDC);
                    // a server that refuses it keeps its default.
                    if let Err(e) = conn
                        .execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .await
                    {
                        tracing::debug!(error = %e, "mysql sink: cannot use READ COMMITTED");
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(opts);

        let setup = [
            "CREATE DATABASE IF NOT EXISTS tidb_cdc",
            ddl::CREATE_PROGRESS_TABLE,
        ];
        for stmt in setup {
            if let Err(e) = pool.execute(stmt).await {
                pool.close().await;
                let reason = scrub(&cfg, describe(&e));
                return Err(match classify(&e) {
                    ErrorClass::Retryable | ErrorClass::Closed => SinkError::Connect {
                        target: cfg.target(),
                        reason,
                    },
                    _ => SinkError::Rejected {
                        what: "creating tidb_cdc.ddl_ts_v1".to_string(),
                        reason,
                    },
                });
            }
        }
        tracing::info!(
            target = %cfg.target(),
            workers = cfg.worker_count,
            max_txn_row = cfg.max_txn_row,
            "mysql sink: opened"
        );
        Ok(MySqlSink {
            shared: Shared::start(cfg, pool),
            ddl_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The configuration the sink runs with.
    pub fn config(&self) -> &MySqlConfig {
        &self.shared.cfg
    }
}

fn scrub(cfg: &MySqlConfig, msg: String) -> String {
    if cfg.password.len() >= 3 && msg.contains(cfg.password.as_str()) {
        msg.replace(cfg.password.as_str(), "xxxxx")
    } else {
        msg
    }
}

/// Opens and closes one connection: rejects bad credentials at once, retries unreachable
/// servers a few times.
async fn check_login(cfg: &MySqlConfig, opts: &MySqlConnectOptions) -> Result<(), SinkError> {
    let attempts = cfg.connect_attempts.max(1);
    let mut backoff = std::time::Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 1..=attempts {
        match tokio::time::timeout(cfg.dial_timeout, MySqlConnection::connect_with(opts)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Ok(Err(e)) => {
                last = scrub(cfg, describe(&e));
                if matches!(e, sqlx::Error::Database(_)) && classify(&e) != ErrorClass::Retryable {
                    return Err(SinkError::Rejected {
                        what: "login".to_string(),
                        reason: last,
                    });
                }
            }
            Err(_) => last = format!("connection attempt timed out after {:?}", cfg.dial_timeout),
        }
        tracing::warn!(target = %cfg.target(), attempt, reason = %last, "mysql sink: cannot connect");
        if attempt < attempts {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    Err(SinkError::Connect {
        target: cfg.target(),
        reason: format!("{last} (after {attempts} attempts)"),
    })
}

impl Drop for MySqlSink {
    fn drop(&mut self) {
        // Let the workers exit once their queues are drained.
        self.shared.stop_workers();
    }
}

impl Sink for MySqlSink {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn write(&self, batch: TxnBatch) -> BoxFuture<'static, Result<FlushReport, SinkError>> {
        if self.shared.closed.load(Ordering::Acquire) {
            return futures::future::ready(Err(SinkError::Closed)).boxed();
        }
        if let Some(e) = self.shared.failure() {
            return futures::future::ready(Err(e)).boxed();
        }
        let report = FlushReport {
            rows: batch.row_count() as u64,
            bytes: batch_size(&batch),
            max_commit_ts: batch.max_commit_ts().map_or(0, |t| t.0),
        };
        let txns: Vec<_> = batch
            .txns
            .into_iter()
            .filter(|t| !t.rows.is_empty())
            .collect();
        if txns.is_empty() {
            return futures::future::ready(Ok(report)).boxed();
        }
        let (state, rx) = BatchState::new(txns.len(), report);
        for txn in txns {
            let keys = causality::conflict_keys(&txn);
            self.shared.submit(
                keys,
                Job {
                    txn,
                    batch: Arc::clone(&state),
                },
            );
        }
        async move { rx.await.unwrap_or(Err(SinkError::Closed)) }.boxed()
    }

    fn execute_ddl(
        &self,
        ddl: DdlEvent,
        _table: Option<Arc<TableDef>>,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        let shared = Arc::clone(&self.shared);
        let lock = Arc::clone(&self.ddl_lock);
        async move {
            let _guard = lock.lock().await;
            if shared.closed.load(Ordering::Acquire) {
                return Err(SinkError::Closed);
            }
            let scrub = |m: String| shared.scrub(m);
            ddl::execute_ddl(&shared.pool, &shared.cfg, &ddl, &scrub)
                .await
                .map(|_| ())
        }
        .boxed()
    }

    /// Nothing to do: every batch is durable once its downstream COMMIT returned, and the
    /// checkpoint is kept by the changefeed, not in the downstream.
    fn update_checkpoint(&self, _ts: Ts) -> BoxFuture<'static, Result<(), SinkError>> {
        futures::future::ready(Ok(())).boxed()
    }

    fn close(&self) -> BoxFuture<'static, Result<(), SinkError>> {
        let shared = Arc::clone(&self.shared);
        let lock = Arc::clone(&self.ddl_lock);
        async move {
            shared.closed.store(true, Ordering::Release);
            shared.wait_idle().await;
            let _guard = lock.lock().await;
            shared.stop_workers();
            shared.pool.close().await;
            Ok(())
        }
        .boxed()
    }
}
