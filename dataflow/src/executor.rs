//! The DDL executor: runs each replicated DDL in the sink exactly once, gated by the frontier of
//! the flushed stream (see [`crate::barrier`] for the protocol).
//!
//! It lives on [`DDL_OWNER`]; the other workers' instances only
//! drain their inputs. Its flushed input uses a `Pipeline` pact — it needs the *frontier* of
//! the flushed stream, which is global (it accounts for every worker's capabilities), not the
//! records, which stay on their workers.
//!
//! For each pending DDL the executor keeps the capability the DDL arrived with (at or below
//! its commit ts) on its output, which feeds the checkpoint probe: the checkpoint stays below
//! the DDL until the sink reports it done. It then sends [`DdlDone`] under that capability,
//! drops it and moves to the next DDL, strictly in commit order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, StreamVec};
use timely::progress::frontier::Antichain;

use tidal_model::{DdlEvent, Ts};
use tidal_sinks::{SinkError, TableDef};

use crate::barrier::ddl_replicated;
use crate::messages::{DdlDone, DdlMsg, Flushed};
use crate::routing::DDL_OWNER;
use crate::run::ProcessCtx;
use crate::spec::ChangefeedError;

/// The table definition a sink gets with a DDL: the table after it, if there is one.
pub fn ddl_table_def(ev: &DdlEvent) -> Option<Arc<TableDef>> {
    ev.table_info.as_ref().map(|info| {
        Arc::new(TableDef {
            schema_name: ev.schema_name.clone(),
            table_name: ev.table_name.clone(),
            info: Arc::new((**info).clone()),
            version: ev.commit_ts.0,
        })
    })
}

/// Builds the executor; its output is the "DDL done" stream.
pub(crate) fn ddl_executor<'s>(
    ddl: StreamVec<'s, u64, DdlMsg>,
    flushed: StreamVec<'s, u64, Flushed>,
    ctx: Arc<ProcessCtx>,
) -> StreamVec<'s, u64, DdlDone> {
    let scope: Scope<'s, u64> = ddl.scope();
    let active = scope.index() == DDL_OWNER;
    let mut builder = OperatorBuilder::new("DdlExecutor".to_owned(), scope);
    let info = builder.operator_info();
    let mut ddl_in = builder.new_input(ddl, Pipeline);
    let no_outputs: Vec<(usize, Antichain<u64>)> = Vec::new();
    let mut flushed_in = builder.new_input_connection(flushed, Pipeline, no_outputs);
    let (output, done) =
        builder.new_output_connection::<Vec<DdlDone>, _>(vec![(0, Antichain::from_elem(0u64))]);
    let mut output = OutputBuilder::<u64, CapacityContainerBuilder<Vec<DdlDone>>>::from(output);
    let sync = Arc::new(scope.worker().sync_activator_for(info.address.to_vec()));

    builder.build(move |caps| {
        drop(caps);
        let mut pending: BTreeMap<(Ts, i64), (Capability<u64>, DdlEvent)> = BTreeMap::new();
        let mut running: Option<(Ts, i64)> = None;
        let result: Arc<Mutex<Option<Result<(), SinkError>>>> = Arc::new(Mutex::new(None));
        let mut failed = false;
        let shared = Arc::clone(&ctx.shared);

        move |frontiers| {
            ddl_in.for_each(|cap, data| {
                for m in data.drain(..) {
                    if !active {
                        continue;
                    }
                    let Some(ev) = m.event.0 else { continue };
                    if !ddl_replicated(&ev, &shared.filter) {
                        continue;
                    }
                    if let Some(c) = cap.retain_least(0) {
                        pending.insert((m.commit_ts, ev.job_id), (c, ev));
                    }
                }
            });
            flushed_in.for_each(|_cap, data| data.clear());
            if !active || failed {
                return;
            }
            let mut out = output.activate();
            loop {
                if let Some(key) = running {
                    let Some(r) = result.lock().take() else {
                        return;
                    };
                    running = None;
                    match r {
                        Ok(()) => {
                            if let Some((cap, ev)) = pending.remove(&key) {
                                tracing::info!(
                                    changefeed = %shared.id,
                                    job_id = ev.job_id,
                                    commit_ts = ev.commit_ts.0,
                                    query = %ev.query,
                                    "DDL executed in the sink"
                                );
                                shared.stats.ddl_executed.fetch_add(1, Ordering::Relaxed);
                                shared.note_synced(ev.commit_ts);
                                out.session(&cap).give(DdlDone {
                                    commit_ts: key.0,
                                    job_id: key.1,
                                });
                            }
                        }
                        Err(e) => {
                            // Keep the capability: the checkpoint stays below this DDL.
                            shared.fail(ChangefeedError::Sink(format!(
                                "DDL committed at {}: {e}",
                                key.0.0
                            )));
                            failed = true;
                            return;
                        }
                    }
                }
                let Some((&key, (_, ev))) = pending.iter().next() else {
                    return;
                };
                // Every change committed below the DDL is durable on every worker.
                if frontiers[1].less_than(&key.0.0) {
                    return;
                }
                let fut = ctx.sink.execute_ddl(ev.clone(), ddl_table_def(ev));
                running = Some(key);
                let result = Arc::clone(&result);
                let sync = Arc::clone(&sync);
                ctx.runtime.spawn(async move {
                    let r = fut.await;
                    *result.lock() = Some(r);
                    let _ = sync.activate();
                });
            }
        }
    });
    done
}
