//! The sink driver: hands transactions to the sink in order and turns "durable" into progress.
//!
//! Inputs: the worker's decoded transactions, the DDL stream (to know which DDL are pending)
//! and the "DDL done" feedback (disconnected from the output, so it closes no progress cycle).
//! Output: the flushed stream, one [`Flushed`] record per span and durable batch.
//!
//! Every batch handed to [`Sink::write`](tidal_sinks::Sink::write) keeps a capability at or
//! below the smallest time of its transactions until the sink reports it durable; only then is
//! its flushed record sent and the capability dropped. So the frontier of the flushed stream,
//! `F`, means "every change committed below `F` is durable" and checkpoint-ts = `F − 1`.
//!
//! Before writing a transaction the driver checks two things:
//!
//! - its DDL input has passed the commit ts (every DDL at or below it is known here), and
//! - no pending DDL below the commit ts blocks its table ([`Barrier::blocker`]); a blocked
//!   transaction waits with its capability moved up to `T + 1` (see [`crate::barrier`]).
//!
//! Transactions are kept in arrival order; a transaction is written only after everything
//! before it of the same span has been written, so per-key order holds. A transaction may
//! arrive as several items (a spilled one is read back in chunks); each item is a
//! [`SinkTxn`](tidal_sinks::SinkTxn) of its own, so such a transaction can reach the sink in
//! several batches (invariant 3 allows a split past the batch size).
//!
//! # Flow control
//!
//! At most `max_inflight_batches` batches are in flight per worker. Every byte the driver
//! holds — queued (`Stats::queued_bytes`) or in flight (`Stats::inflight_bytes`) — is also
//! counted in the feed's memory quota from the moment the item arrives until its batch is
//! durable; the sources stop releasing and pulling while the drivers hold their share (see
//! [`crate::source`]), so a slow sink slows the sources and, through the quota, the reads from
//! TiKV.

use std::collections::{BTreeMap, VecDeque};
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

use tidal_model::Ts;
use tidal_sinks::{FlushReport, SinkError, TxnBatch};

use crate::barrier::{Barrier, TableKey, ddl_replicated};
use crate::messages::{DdlDone, DdlMsg, Flushed, TxnItem};
use crate::run::ProcessCtx;
use crate::spec::ChangefeedError;

struct Group {
    cap: Capability<u64>,
    items: VecDeque<TxnItem>,
}

struct InFlight {
    cap: Capability<u64>,
    flushed: Vec<Flushed>,
    bytes: u64,
}

type Completions = Arc<Mutex<Vec<(u64, Result<FlushReport, SinkError>)>>>;

/// Builds the sink driver of one worker.
pub(crate) fn sink_driver<'s>(
    txns: StreamVec<'s, u64, TxnItem>,
    ddl: StreamVec<'s, u64, DdlMsg>,
    done: StreamVec<'s, u64, DdlDone>,
    ctx: Arc<ProcessCtx>,
) -> StreamVec<'s, u64, Flushed> {
    let scope: Scope<'s, u64> = txns.scope();
    let mut builder = OperatorBuilder::new("SinkDriver".to_owned(), scope);
    let info = builder.operator_info();
    let mut txn_in = builder.new_input(txns, Pipeline);
    let mut ddl_in = builder.new_input(ddl, Pipeline);
    let no_outputs: Vec<(usize, Antichain<u64>)> = Vec::new();
    let mut done_in = builder.new_input_connection(done, Pipeline, no_outputs);
    let (output, flushed) = builder.new_output_connection::<Vec<Flushed>, _>(vec![
        (0, Antichain::from_elem(0u64)),
        (1, Antichain::from_elem(0u64)),
    ]);
    let mut output = OutputBuilder::<u64, CapacityContainerBuilder<Vec<Flushed>>>::from(output);
    let sync = scope.worker().sync_activator_for(info.address.to_vec());
    let sync = Arc::new(sync);

    builder.build(move |caps| {
        drop(caps);
        let completions: Completions = Arc::new(Mutex::new(Vec::new()));
        let mut groups: VecDeque<Group> = VecDeque::new();
        let mut inflight: BTreeMap<u64, InFlight> = BTreeMap::new();
        let mut next_batch = 0u64;
        let mut barrier = Barrier::new();
        let mut failed = false;
        let shared = Arc::clone(&ctx.shared);

        move |frontiers| {
            let mut out = output.activate();

            // 1. Completed batches: flushed records out, capabilities dropped.
            let done_batches: Vec<_> = std::mem::take(&mut *completions.lock());
            for (id, result) in done_batches {
                match result {
                    Ok(_report) => {
                        if let Some(b) = inflight.remove(&id) {
                            shared
                                .stats
                                .inflight_bytes
                                .fetch_sub(b.bytes, Ordering::Relaxed);
                            ctx.feed.quota().release(b.bytes as usize);
                            let mut rows = 0;
                            let mut max = Ts::ZERO;
                            {
                                let mut spans = shared.spans.lock();
                                for f in &b.flushed {
                                    rows += f.rows;
                                    max = max.max(f.max_commit_ts);
                                    if let Some(p) = spans.get_mut(&f.span_id) {
                                        p.flushed_ts = p.flushed_ts.max(f.max_commit_ts);
                                    }
                                }
                            }
                            shared.stats.rows_flushed.fetch_add(rows, Ordering::Relaxed);
                            shared
                                .stats
                                .bytes_flushed
                                .fetch_add(b.bytes, Ordering::Relaxed);
                            shared.stats.batches_flushed.fetch_add(1, Ordering::Relaxed);
                            shared.note_synced(max);
                            let mut session = out.session(&b.cap);
                            for f in b.flushed {
                                session.give(f);
                            }
                        }
                    }
                    Err(e) => {
                        // Keep the batch's capability: the checkpoint stops below it.
                        shared.fail(ChangefeedError::Sink(e.to_string()));
                        failed = true;
                    }
                }
            }

            // 2. DDL registrations and completions.
            ddl_in.for_each(|_cap, data| {
                for m in data.drain(..) {
                    shared
                        .stats
                        .barrier_messages
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(ev) = &m.event.0
                        && ddl_replicated(ev, &shared.filter)
                    {
                        barrier.add(m.commit_ts, ev.job_id, ev.block_scope());
                    }
                }
            });
            done_in.for_each(|_cap, data| {
                for d in data.drain(..) {
                    shared
                        .stats
                        .barrier_messages
                        .fetch_add(1, Ordering::Relaxed);
                    barrier.done(d.commit_ts, d.job_id);
                }
            });

            // 3. New transactions, one group per input message.
            txn_in.for_each(|cap, data| {
                if data.is_empty() {
                    return;
                }
                if let Some(cap) = cap.retain_least(0) {
                    let bytes: usize = data.iter().map(|i| i.bytes).sum();
                    // Held here until durable: counted in the feed's quota and in the
                    // queued bytes the sources throttle on.
                    shared
                        .stats
                        .queued_bytes
                        .fetch_add(bytes as u64, Ordering::Relaxed);
                    ctx.feed.quota().acquire(bytes);
                    groups.push_back(Group {
                        cap,
                        items: data.drain(..).collect(),
                    });
                }
            });
            if failed || shared.has_failed() {
                return;
            }

            // 4. Write what may be written, in order, into batches.
            let ddl_known_below = frontiers[1]
                .frontier()
                .iter()
                .next()
                .copied()
                .unwrap_or(u64::MAX);
            let mut batch = TxnBatch::default();
            let mut batch_cap: Option<Capability<u64>> = None;
            let mut batch_flushed: BTreeMap<u128, Flushed> = BTreeMap::new();
            let mut batch_bytes = 0u64;
            let mut batch_rows = 0usize;
            let mut stalled = false;
            let limit_batches = ctx.max_inflight_batches.max(1);
            let send = |batch: &mut TxnBatch,
                        batch_cap: &mut Option<Capability<u64>>,
                        batch_flushed: &mut BTreeMap<u128, Flushed>,
                        batch_bytes: &mut u64,
                        inflight: &mut BTreeMap<u64, InFlight>,
                        next_batch: &mut u64| {
                let Some(cap) = batch_cap.take() else { return };
                let b = std::mem::take(batch);
                let id = *next_batch;
                *next_batch += 1;
                let fut = ctx.sink.write(b);
                let completions = Arc::clone(&completions);
                let sync = Arc::clone(&sync);
                ctx.runtime.spawn(async move {
                    let r = fut.await;
                    completions.lock().push((id, r));
                    let _ = sync.activate();
                });
                shared
                    .stats
                    .inflight_bytes
                    .fetch_add(*batch_bytes, Ordering::Relaxed);
                shared
                    .stats
                    .queued_bytes
                    .fetch_sub(*batch_bytes, Ordering::Relaxed);
                inflight.insert(
                    id,
                    InFlight {
                        cap,
                        flushed: std::mem::take(batch_flushed).into_values().collect(),
                        bytes: std::mem::take(batch_bytes),
                    },
                );
            };
            for group in groups.iter_mut() {
                if stalled {
                    break;
                }
                let mut kept: VecDeque<TxnItem> = VecDeque::new();
                let mut kept_min_time: Option<u64> = None;
                while let Some(item) = group.items.pop_front() {
                    let commit = item.commit_ts();
                    if stalled || commit.0 >= ddl_known_below {
                        // A DDL at or below this commit ts may still be on its way.
                        stalled = true;
                        kept_min_time = Some(*group.cap.time());
                        kept.push_back(item);
                        continue;
                    }
                    let key = TableKey {
                        logical_id: item.logical_id(),
                        physical_id: item.physical_id,
                        db_id: item.db_id,
                    };
                    if let Some(t) = barrier.blocker(key, commit) {
                        let need = t.0.saturating_add(1).max(*group.cap.time());
                        kept_min_time = Some(kept_min_time.map_or(need, |m| m.min(need)));
                        kept.push_back(item);
                        continue;
                    }
                    let full = !batch.txns.is_empty()
                        && (batch_rows + item.txn.rows.len() > ctx.max_batch_rows
                            || batch_bytes as usize + item.bytes > ctx.max_batch_bytes);
                    if full {
                        batch_rows = 0;
                        send(
                            &mut batch,
                            &mut batch_cap,
                            &mut batch_flushed,
                            &mut batch_bytes,
                            &mut inflight,
                            &mut next_batch,
                        );
                    }
                    if batch.txns.is_empty() && inflight.len() >= limit_batches {
                        stalled = true;
                        kept_min_time = Some(*group.cap.time());
                        kept.push_back(item);
                        continue;
                    }
                    match &batch_cap {
                        Some(c) if c.time() <= group.cap.time() => {}
                        _ => batch_cap = Some(group.cap.clone()),
                    }
                    let f = batch_flushed.entry(item.span_id).or_insert(Flushed {
                        span_id: item.span_id,
                        table_id: item.physical_id,
                        max_commit_ts: commit,
                        rows: 0,
                        bytes: 0,
                    });
                    f.max_commit_ts = f.max_commit_ts.max(commit);
                    f.rows += item.txn.rows.len() as u64;
                    f.bytes += item.bytes as u64;
                    batch_bytes += item.bytes as u64;
                    batch_rows += item.txn.rows.len();
                    batch.txns.push(item.txn);
                }
                group.items = kept;
                if let Some(t) = kept_min_time
                    && t > *group.cap.time()
                {
                    group.cap.downgrade(&t);
                }
            }
            send(
                &mut batch,
                &mut batch_cap,
                &mut batch_flushed,
                &mut batch_bytes,
                &mut inflight,
                &mut next_batch,
            );
            groups.retain(|g| !g.items.is_empty());
        }
    });
    flushed
}
