//! The DDL barrier's bookkeeping, shared by the sink drivers (which hold DML back) and the DDL
//! executor (which runs DDL once its frontier allows).
//!
//! # The protocol, in frontiers
//!
//! A DDL committed at `T` that blocks tables `S` ([`BlockScope`]) must run in the sink after
//! every DML of `S` with `commit_ts < T` is durable, and before any DML of `S` with
//! `commit_ts > T` is written. With timely this needs no acknowledgements:
//!
//! 1. The DDL stream is broadcast; every sink driver registers the DDL in its [`Barrier`].
//! 2. A sink driver that is about to write a change of `S` committed after `T` while the DDL is
//!    pending keeps the change, with its capability moved up to `T + 1`
//!    ([`Barrier::blocker`]). Moving the capability *up* is what avoids the deadlock: the held
//!    change no longer holds the flushed frontier below `T`.
//! 3. The executor (one worker) watches the frontier `F` of the flushed stream. `F >= T` means
//!    every change with `commit_ts < T` is durable on every worker — nothing else could still
//!    produce a flushed record below `T`. It then runs the DDL, exactly once, and sends
//!    [`DdlDone`](crate::messages::DdlDone) around a feedback edge to every driver, which
//!    releases the held changes ([`Barrier::done`]). Until the DDL is durable the executor
//!    holds a capability at or below `T`, so the checkpoint stays below `T`.
//!
//! Each DDL costs one broadcast out and one broadcast back — O(workers) messages — and the
//! progress traffic of a few capability moves, however long the DDL waits.
//!
//! Only DDL that the sink will run take part ([`ddl_replicated`]); DDL of filtered-out tables
//! change the schema store but block nothing.

use std::collections::BTreeMap;

use tidal_ingest::schema::{TableFilter, is_system_schema};
use tidal_model::ddl::{ActionType, BlockScope};
use tidal_model::{DdlEvent, Ts};

/// What a DML change needs to know about its table for barrier checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableKey {
    /// Logical table id.
    pub logical_id: i64,
    /// Physical id (partition) the change was read from.
    pub physical_id: i64,
    /// Database id.
    pub db_id: i64,
}

/// DDL registered by a sink driver and not yet reported done.
#[derive(Debug, Default)]
pub struct Barrier {
    pending: BTreeMap<(Ts, i64), BlockScope>,
}

impl Barrier {
    /// An empty barrier.
    pub fn new() -> Barrier {
        Barrier::default()
    }

    /// Registers DDL `job_id` committed at `commit_ts`.
    pub fn add(&mut self, commit_ts: Ts, job_id: i64, scope: BlockScope) {
        self.pending.insert((commit_ts, job_id), scope);
    }

    /// The DDL ran in the sink.
    pub fn done(&mut self, commit_ts: Ts, job_id: i64) {
        self.pending.remove(&(commit_ts, job_id));
    }

    /// Number of pending DDL.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True if no DDL is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The commit ts of the earliest pending DDL that a change of `table` committed at
    /// `commit_ts` must wait for, if any.
    pub fn blocker(&self, table: TableKey, commit_ts: Ts) -> Option<Ts> {
        self.pending
            .range(..(commit_ts, i64::MIN))
            .find(|(_, scope)| scope_blocks(scope, table))
            .map(|((t, _), _)| *t)
    }
}

/// True if a DDL with `scope` orders itself against changes of `table`.
pub fn scope_blocks(scope: &BlockScope, table: TableKey) -> bool {
    match scope {
        BlockScope::Cluster => true,
        BlockScope::Database(db) => *db == table.db_id,
        BlockScope::Tables(ids) => ids
            .iter()
            .any(|id| *id == table.logical_id || *id == table.physical_id),
    }
}

/// True if the sink must run `event`: it concerns a database or table the changefeed
/// replicates. DDL of system schemas and of filtered-out tables, and DDL without tables
/// (placement policies, resource groups), only change the schema store.
pub fn ddl_replicated(event: &DdlEvent, filter: &TableFilter) -> bool {
    if is_system_schema(&event.schema_name) {
        return false;
    }
    if event.is_database_level() {
        return filter.may_match_schema(&event.schema_name);
    }
    if let BlockScope::Tables(ids) = event.block_scope()
        && ids.is_empty()
    {
        return false;
    }
    if matches!(
        event.action,
        ActionType::CREATE_TABLES | ActionType::RENAME_TABLES
    ) && event
        .multiple_table_infos
        .iter()
        .any(|t| filter.matches(&event.schema_name, &t.name.O))
    {
        return true;
    }
    if !event.table_name.is_empty() && filter.matches(&event.schema_name, &event.table_name) {
        return true;
    }
    // A rename out of the replicated set still has to reach the sink.
    match (&event.old_schema_name, &event.old_table_name) {
        (Some(db), Some(t)) => filter.matches(db, t),
        (None, Some(t)) => filter.matches(&event.schema_name, t),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TableKey = TableKey {
        logical_id: 10,
        physical_id: 10,
        db_id: 2,
    };

    #[test]
    fn blocks_only_later_changes_of_its_tables() {
        let mut b = Barrier::new();
        b.add(Ts(100), 1, BlockScope::Tables(vec![10, 11]));
        b.add(Ts(200), 2, BlockScope::Tables(vec![99]));
        assert_eq!(b.blocker(T, Ts(50)), None);
        assert_eq!(
            b.blocker(T, Ts(100)),
            None,
            "a change at T itself is before the DDL"
        );
        assert_eq!(b.blocker(T, Ts(101)), Some(Ts(100)));
        assert_eq!(b.blocker(T, Ts(300)), Some(Ts(100)));
        let other = TableKey {
            logical_id: 99,
            physical_id: 99,
            db_id: 2,
        };
        assert_eq!(b.blocker(other, Ts(150)), None);
        assert_eq!(b.blocker(other, Ts(201)), Some(Ts(200)));
        b.done(Ts(100), 1);
        assert_eq!(b.blocker(T, Ts(300)), None);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn database_and_cluster_scopes() {
        let mut b = Barrier::new();
        b.add(Ts(100), 1, BlockScope::Database(3));
        assert_eq!(b.blocker(T, Ts(150)), None);
        b.add(Ts(120), 2, BlockScope::Database(2));
        assert_eq!(b.blocker(T, Ts(150)), Some(Ts(120)));
        b.add(Ts(110), 3, BlockScope::Cluster);
        assert_eq!(b.blocker(T, Ts(150)), Some(Ts(110)));
        b.done(Ts(110), 3);
        b.done(Ts(120), 2);
        assert!(b.blocker(T, Ts(150)).is_none());
    }

    #[test]
    fn partitions_are_matched_by_physical_id() {
        let part = TableKey {
            logical_id: 10,
            physical_id: 12,
            db_id: 2,
        };
        assert!(scope_blocks(&BlockScope::Tables(vec![12]), part));
        assert!(scope_blocks(&BlockScope::Tables(vec![10]), part));
        assert!(!scope_blocks(&BlockScope::Tables(vec![11]), part));
    }
}
