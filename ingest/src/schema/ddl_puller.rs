//! Following DDL from the change feed of `mysql.tidb_ddl_job` (wire.md §6.3, TiCDC's
//! `ddl_job_fetcher`).
//!
//! The puller subscribes the job table's record span from the store's resolved ts, decodes the
//! rows of finished jobs ([`DdlJobDecoder`]) and **buffers** them: rows of one span arrive in no
//! particular commit order, so a job can only be applied once the span's resolved ts has passed
//! its commit ts — then no earlier job can still arrive. Jobs are applied in commit-ts order, the
//! store's resolved ts is raised to the span's, and the resulting [`DdlEvent`]s are published.
//!
//! The buffering logic lives in [`PullerCore`], which is driven by plain feed events so it can
//! be tested without a cluster; [`DdlPuller`] runs it on a Tokio task.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tidal_model::ddl::{DdlEvent, DdlJob};
use tidal_model::{RawKvChange, TableSpan, Ts, tablecodec};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::SchemaError;
use super::job_decoder::DdlJobDecoder;
use super::store::SchemaStore;
use crate::feed::{FeedEvent, RegionFeed, Subscription};

/// Settings of a [`DdlPuller`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DdlPullerConfig {
    /// Subscribe from this ts instead of the store's resolved ts (must not be above it, or DDL
    /// in between would be missed; a lower ts only re-reads jobs the store ignores).
    pub start_ts: Option<Ts>,
}

/// The puller's buffering and ordering, independent of the feed.
#[derive(Debug)]
pub(crate) struct PullerCore {
    store: SchemaStore,
    decoder: DdlJobDecoder,
    /// Done jobs waiting for the resolved ts, by `(commit ts, job id)`.
    pending: BTreeMap<(Ts, i64), DdlJob>,
}

impl PullerCore {
    pub(crate) fn new(store: SchemaStore, decoder: DdlJobDecoder) -> PullerCore {
        PullerCore {
            store,
            decoder,
            pending: BTreeMap::new(),
        }
    }

    /// Decodes rows and buffers the finished jobs among them.
    pub(crate) fn on_rows(&mut self, rows: &[RawKvChange]) -> Result<(), SchemaError> {
        let applied_up_to = self.store.resolved_ts();
        for row in rows {
            if row.commit_ts <= applied_up_to {
                continue;
            }
            if let Some(job) = self.decoder.decode(row)? {
                self.pending.insert((row.commit_ts, job.id), job);
            }
        }
        Ok(())
    }

    /// Applies the buffered jobs committed at or below `resolved`, in commit order, then marks
    /// the store complete up to `resolved`. Returns the events of the applied jobs.
    pub(crate) fn on_resolved(&mut self, resolved: Ts) -> Result<Vec<DdlEvent>, SchemaError> {
        let mut events = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            let (commit_ts, _) = *entry.key();
            if commit_ts > resolved {
                break;
            }
            let job = entry.remove();
            if let Some(ev) = self.store.apply_job(&job, commit_ts)? {
                tracing::info!(
                    job_id = job.id,
                    action = %job.action_type,
                    commit_ts = commit_ts.0,
                    query = %job.query,
                    "schema store applied DDL"
                );
                events.push(ev);
            }
        }
        self.store.advance_resolved_ts(resolved);
        Ok(events)
    }

    /// Number of jobs waiting for the resolved ts.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// Follows DDL into a [`SchemaStore`] from the change feed of `mysql.tidb_ddl_job`.
///
/// Dropping the puller stops it (and its subscription).
#[derive(Debug)]
pub struct DdlPuller {
    store: SchemaStore,
    resolved: watch::Receiver<Ts>,
    events: Mutex<Option<mpsc::UnboundedReceiver<DdlEvent>>>,
    error: Arc<Mutex<Option<SchemaError>>>,
    task: JoinHandle<()>,
}

impl DdlPuller {
    /// Starts following DDL into `store` (which must have been bootstrapped, so that it knows
    /// the job table). Must be called inside a Tokio runtime.
    pub fn start(
        feed: &RegionFeed,
        store: SchemaStore,
        cfg: DdlPullerConfig,
    ) -> Result<DdlPuller, SchemaError> {
        let decoder = DdlJobDecoder::from_store(&store)?;
        let start_ts = cfg
            .start_ts
            .unwrap_or_else(|| store.resolved_ts())
            .min(store.resolved_ts());
        let span = TableSpan::for_table(tablecodec::DDL_JOB_TABLE_ID);
        let sub = feed
            .subscribe(span, start_ts)
            .map_err(|e| SchemaError::Feed {
                detail: format!("cannot subscribe the DDL job table: {e}"),
            })?;
        let (resolved_tx, resolved) = watch::channel(store.resolved_ts());
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let error = Arc::new(Mutex::new(None));
        let core = PullerCore::new(store.clone(), decoder);
        let task = tokio::spawn(run(sub, core, resolved_tx, events_tx, Arc::clone(&error)));
        Ok(DdlPuller {
            store,
            resolved,
            events: Mutex::new(Some(events_rx)),
            error,
            task,
        })
    }

    /// The store the puller feeds.
    pub fn store(&self) -> &SchemaStore {
        &self.store
    }

    /// The schema is complete up to this ts.
    pub fn resolved_ts(&self) -> Ts {
        *self.resolved.borrow()
    }

    /// Waits until the schema is complete up to at least `ts` and returns the resolved ts; fails
    /// with the puller's error if it stopped first. Bound it with a timeout.
    pub async fn wait_resolved(&self, ts: Ts) -> Result<Ts, SchemaError> {
        let mut rx = self.resolved.clone();
        loop {
            let now = *rx.borrow_and_update();
            if now >= ts {
                return Ok(now);
            }
            if rx.changed().await.is_err() {
                return Err(self.error().unwrap_or_else(|| SchemaError::Feed {
                    detail: "the DDL puller stopped".into(),
                }));
            }
        }
    }

    /// The stream of applied DDL events, in commit order. Can be taken once; `None` afterwards.
    /// The stream ends when the puller stops (see [`DdlPuller::error`]).
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<DdlEvent>> {
        self.events.lock().take()
    }

    /// Why the puller stopped, if it did.
    pub fn error(&self) -> Option<SchemaError> {
        self.error.lock().clone()
    }

    /// True once the puller's task has ended (after an error).
    pub fn is_stopped(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for DdlPuller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    sub: Subscription,
    mut core: PullerCore,
    resolved_tx: watch::Sender<Ts>,
    events_tx: mpsc::UnboundedSender<DdlEvent>,
    error: Arc<Mutex<Option<SchemaError>>>,
) {
    let fail = |e: SchemaError| {
        tracing::error!(error = %e, "DDL puller stopped");
        *error.lock() = Some(e);
    };
    loop {
        match sub.recv().await {
            Some(FeedEvent::Rows(rows)) => {
                if let Err(e) = core.on_rows(&rows) {
                    return fail(e);
                }
            }
            Some(FeedEvent::Resolved(ts)) => match core.on_resolved(ts) {
                Ok(events) => {
                    for ev in events {
                        // A consumer that dropped the receiver only loses the stream; the store
                        // keeps the events.
                        let _ = events_tx.send(ev);
                    }
                    resolved_tx.send_replace(ts);
                }
                Err(e) => return fail(e),
            },
            Some(FeedEvent::Error(e)) => {
                return fail(SchemaError::Feed {
                    detail: format!("subscription of the DDL job table failed: {e}"),
                });
            }
            None => {
                return fail(SchemaError::Feed {
                    detail: format!(
                        "subscription of the DDL job table ended ({} jobs pending)",
                        core.pending()
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::store::SchemaSnapshot;
    use tidal_model::change::RawOp;
    use tidal_model::ddl::{ActionType, HistoryInfo, JobState};
    use tidal_model::schema::{CIStr, DBInfo, SchemaState, TableInfo};
    use tidal_model::{Datum, meta};

    fn table(id: i64, name: &str) -> TableInfo {
        TableInfo {
            id,
            name: CIStr::new(name),
            state: SchemaState::PUBLIC,
            ..TableInfo::default()
        }
    }

    fn store() -> SchemaStore {
        let job_table = tidal_sim::tidb::ddl_job_table_info();
        SchemaStore::from_snapshot(SchemaSnapshot {
            ts: Ts(100),
            schema_version: 1,
            dbs: vec![
                (
                    DBInfo {
                        id: tablecodec::MYSQL_DB_ID,
                        db_name: CIStr::new("mysql"),
                        ..DBInfo::default()
                    },
                    vec![job_table],
                ),
                (
                    DBInfo {
                        id: 1,
                        db_name: CIStr::new("app"),
                        ..DBInfo::default()
                    },
                    vec![],
                ),
            ],
        })
    }

    fn job(id: i64, action: ActionType, state: JobState, info: TableInfo) -> DdlJob {
        DdlJob {
            id,
            action_type: action,
            schema_id: 1,
            table_id: info.id,
            state,
            binlog: Some(HistoryInfo {
                schema_version: id,
                table_info: Some(info),
                ..HistoryInfo::default()
            }),
            ..DdlJob::default()
        }
    }

    fn job_row(job: &DdlJob, start: u64, commit: u64) -> RawKvChange {
        let info = tidal_sim::tidb::ddl_job_table_info();
        let values = vec![
            Datum::Int(job.id),
            Datum::Int(0),
            Datum::Bytes(b"1".to_vec()),
            Datum::Bytes(job.table_id.to_string().into_bytes()),
            Datum::Bytes(job.to_json().unwrap()),
            Datum::Int(i64::from(job.action_type.0)),
            Datum::Int(0),
        ];
        RawKvChange {
            op: RawOp::Put,
            key: tablecodec::encode_row_key_int(tablecodec::DDL_JOB_TABLE_ID, job.id),
            value: tidal_sim::tidb::dml::encode_value(&info, &values).unwrap(),
            old_value: Vec::new(),
            start_ts: Ts(start),
            commit_ts: Ts(commit),
            region_id: 1,
        }
    }

    #[test]
    fn decoder_keeps_done_jobs_only() {
        let s = store();
        let d = DdlJobDecoder::from_store(&s).unwrap();
        let create = job(20, ActionType::CREATE_TABLE, JobState::DONE, table(30, "t"));
        let got = d.decode(&job_row(&create, 110, 120)).unwrap().unwrap();
        assert_eq!(got.id, 20);
        assert_eq!(got.start_ts, 110);
        assert_eq!(got.binlog.as_ref().unwrap().finished_ts, 120);
        for state in [
            JobState::QUEUEING,
            JobState::RUNNING,
            JobState::SYNCED,
            JobState::CANCELLED,
            JobState::ROLLBACK_DONE,
        ] {
            let j = job(20, ActionType::CREATE_TABLE, state, table(30, "t"));
            assert_eq!(d.decode(&job_row(&j, 110, 115)).unwrap(), None, "{state:?}");
        }
        let mut del = job_row(&create, 110, 130);
        del.op = RawOp::Delete;
        del.value.clear();
        assert_eq!(d.decode(&del).unwrap(), None);
        // Legacy queue items hold the job JSON directly.
        let legacy = RawKvChange {
            key: meta::list_item_key(meta::DDL_JOB_LIST_KEY, 0),
            value: create.to_json().unwrap(),
            ..job_row(&create, 110, 120)
        };
        assert_eq!(d.decode(&legacy).unwrap().map(|j| j.id), Some(20));
        // Garbage is an error, not a panic or a silent skip.
        let mut bad = job_row(&create, 110, 120);
        bad.value = vec![0x80, 0, 1];
        assert!(d.decode(&bad).is_err());
        let mut bad_json = job_row(&create, 110, 120);
        bad_json.key = meta::list_item_key(meta::DDL_JOB_LIST_KEY, 1);
        bad_json.value = b"{not json".to_vec();
        assert!(d.decode(&bad_json).is_err());
        // A job table without job_meta cannot be used.
        assert!(matches!(
            DdlJobDecoder::new(Arc::new(table(5, "tidb_ddl_job"))),
            Err(SchemaError::NoJobTable { .. })
        ));
    }

    #[test]
    fn jobs_wait_for_the_resolved_ts_and_apply_in_commit_order() {
        let s = store();
        let mut core = PullerCore::new(s.clone(), DdlJobDecoder::from_store(&s).unwrap());
        let create = job(20, ActionType::CREATE_TABLE, JobState::DONE, table(30, "t"));
        let running = job(
            20,
            ActionType::CREATE_TABLE,
            JobState::RUNNING,
            table(30, "t"),
        );
        let mut t2 = table(30, "t");
        t2.comment = "v2".into();
        let alter = job(21, ActionType::MODIFY_TABLE_COMMENT, JobState::DONE, t2);
        // The later job arrives first; a job at or below the bootstrap ts is dropped.
        let old = job(
            19,
            ActionType::CREATE_TABLE,
            JobState::DONE,
            table(29, "old"),
        );
        core.on_rows(&[
            job_row(&alter, 125, 130),
            job_row(&old, 90, 95),
            job_row(&running, 110, 115),
            job_row(&create, 110, 120),
        ])
        .unwrap();
        assert_eq!(core.pending(), 2);
        assert!(core.on_resolved(Ts(119)).unwrap().is_empty());
        assert_eq!(s.resolved_ts(), Ts(119));
        assert!(s.table_at(30, Ts(119)).is_none());
        let evs = core.on_resolved(Ts(125)).unwrap();
        assert_eq!(evs.iter().map(|e| e.job_id).collect::<Vec<_>>(), vec![20]);
        assert_eq!(s.table_at(30, Ts(125)).unwrap().info.comment, "");
        // A re-sent done row below the resolved ts is ignored.
        core.on_rows(&[job_row(&create, 110, 120)]).unwrap();
        assert_eq!(core.pending(), 1);
        let evs = core.on_resolved(Ts(140)).unwrap();
        assert_eq!(evs.iter().map(|e| e.job_id).collect::<Vec<_>>(), vec![21]);
        assert_eq!(s.table_at(30, Ts(130)).unwrap().info.comment, "v2");
        assert_eq!(s.table_at(30, Ts(129)).unwrap().info.comment, "");
        assert_eq!(s.resolved_ts(), Ts(140));
        assert_eq!(core.pending(), 0);
        assert!(s.table_at(29, Ts(140)).is_none());
    }

    proptest::proptest! {
        #[test]
        fn random_job_rows_never_panic(
            handle in proptest::prelude::any::<i64>(),
            legacy in proptest::prelude::any::<bool>(),
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
        ) {
            let s = store();
            let d = DdlJobDecoder::from_store(&s).unwrap();
            let key = if legacy {
                meta::list_item_key(meta::DDL_JOB_LIST_KEY, handle)
            } else {
                tablecodec::encode_row_key_int(tablecodec::DDL_JOB_TABLE_ID, handle)
            };
            let row = RawKvChange {
                op: RawOp::Put,
                key,
                value: value.clone(),
                old_value: Vec::new(),
                start_ts: Ts(1),
                commit_ts: Ts(2),
                region_id: 1,
            };
            let _ = d.decode(&row);
            let _ = crate::schema::store::parse_db_info(&value);
        }
    }
}
