//! Changefeeds as timely dataflows: sources fed by region feeds, per-span ordering, the DDL
//! barrier, the sink driver, and the frontier-native watermarks (resolved-ts, checkpoint-ts,
//! LastSyncedTs).
//!
//! # The frontier design
//!
//! The timely timestamp is the TiDB TSO (`u64`). Nothing in the dataflow mints a capability
//! per commit ts: every source holds one capability and moves it only when resolved timestamps
//! move, and every row carries its exact `commit_ts` as data. The invariant that makes the
//! frontiers mean something is simple:
//!
//! > **a row committed at `c` is only ever sent, or held, at a timely time `<= c`.**
//!
//! Then the frontier `F` of any stream says "every row committed below `F` has passed here",
//! and the watermarks are just probes:
//!
//! - **resolved-ts** = frontier after the sources − 1 ([`source`]): a source holds its
//!   capability at `min(released ts of its spans, DDL frontier − 1) + 1`;
//! - **checkpoint-ts** = frontier after the sink drivers and the DDL executor − 1
//!   ([`driver`], [`executor`]): a driver keeps a capability per batch until the sink reports
//!   it durable, and the executor keeps one per DDL until the DDL ran;
//! - **LastSyncedTs** = running max of the flushed stream's commit ts (and DDL run).
//!
//! The DDL job table is one more span, owned by worker 0; its finished jobs form the DDL
//! stream, broadcast to every worker. Bounding each source by the DDL frontier makes rows
//! decodable (the schema at their commit ts is complete) and lets spans of tables created at
//! `T` start at or below every frontier they feed. The DDL barrier is frontier-gated too
//! ([`barrier`]): DML after a pending DDL waits with its capability moved past the DDL, the
//! executor runs the DDL once the flushed frontier passes it, and a feedback edge tells the
//! drivers it is done — O(workers) messages per DDL, however long it waits.
//!
//! Span ownership is `hash64(span) % workers` ([`routing`]); each worker reports the
//! fingerprint of the spans it hosts, and the [`ChangefeedHandle`] freezes the checkpoint while
//! any worker's fingerprint does not match the set it should host ([`shared`]).
//!
//! Row data stays on its worker end to end (typed `Pipeline` channels, no serialization); only
//! DDL, flushed and "done" records cross workers and processes.
//!
//! # User stages
//!
//! A program that composes its own pipeline can put operators of its own between decoding and
//! the sink driver: [`ChangefeedSpec::stage`] takes a [`UserStage`], a function from the stream
//! of decoded transactions ([`messages::TxnItem`], one per upstream transaction and table) to a
//! stream of the same type, applied on every worker while the dataflow is built. It may map,
//! filter, flat-map or aggregate, and drop items; the sink driver writes what it emits. The
//! contract (documented on [`UserStage`]) is what keeps the frontier design above true: an item
//! is emitted at a time at or below its commit ts, capabilities are released as the input
//! frontier advances, and an item keeps its span and table. Under that contract a stage that
//! drops everything still lets the checkpoint advance (it holds no capability), and DDL — which
//! never passes through the stage — still runs once, in order, behind the barrier. Items are
//! not serializable and stay on their worker; a stage that routes by a key of its own
//! exchanges its own serializable records and owns the per-key order of what it routes.
//! [`timely`] is re-exported so that such programs use the same version.
//!
//! # Flow control and memory
//!
//! Timely has no backpressure, so the changefeed makes its own: every row between TiKV and the
//! sink is counted in the feed's memory quota `Q` (`FeedConfig::memory_quota`) in exactly one
//! place — the feed (matchers and subscription queues), a worker's span buffers (at most
//! `Q / 4 / local workers` in memory), or the sink drivers (queued and in flight, at most
//! `min(max_inflight_bytes, Q / 4)`). While the drivers hold their share with a batch in
//! flight, the sources neither pull nor release; the subscription queues fill and the feed
//! stops reading from TiKV, so a slow sink slows the sources and no queue grows with the
//! upstream. Rows waiting for their resolved ts beyond a worker's share (a transaction larger
//! than the quota, a stuck span) are spilled to disk ([`spill`]) and read back in bounded
//! chunks when released: a spilled transaction reaches the sink as several items of the same
//! transaction, in several batches once past the batch size. Details in [`source`] and
//! [`driver`].
//!
//! What the quota does not count is a bounded constant: the gRPC message being decoded and
//! the one the feed reads past a full quota (up to 6 MiB each), per-row headers of decoded
//! rows, spill I/O buffers (about 1.5 MiB per worker) and allocator retention. The root
//! package's `tests/memory_slow_sink.rs` pins it at 64 MiB: with 1 GiB of changes upstream
//! and a sink that crawls, the process's RSS grows by at most `Q + 64 MiB` (measured:
//! `Q + 8–30 MiB`).
//!
//! # Known limitations
//!
//! - The prewrites of an upstream transaction that has not committed yet are held by the
//!   feed's matcher (TiKV sends values with the prewrites), which reads past its quota rather
//!   than deadlock; a transaction larger than the quota is therefore in memory once, as
//!   prewrites, before its committed rows are spilled.
//! - DML that waits in a sink driver behind a pending DDL still counts against the drivers'
//!   share; while nothing is in flight the sources keep pulling and release only from their
//!   lowest spans (at most one share per activation), so that the DDL can run.
//! - A process's handle sees its own workers' spans and statistics only. The frontiers are
//!   global, and worker 0's process also receives every worker's span-set checksum state (and
//!   the checkpoint each process vouches for) through the dataflow, so the coordinator, which
//!   hosts worker 0, gates the persisted checkpoint on all of them.
#![deny(missing_docs)]

pub mod barrier;
pub mod driver;
pub mod executor;
pub mod handle;
pub mod messages;
pub mod routing;
mod run;
pub mod shared;
pub mod source;
pub mod spec;
pub mod spill;
pub mod txn;

pub use handle::{ChangefeedHandle, Watermarks};
pub use run::start_changefeed;
pub use shared::{ChecksumState, SpanProgress, StatsSnapshot};
pub use spec::{ChangefeedError, ChangefeedSpec, ClusterPeers, RunConfig, UserStage, user_stage};
pub use timely;
