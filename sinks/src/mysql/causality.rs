//! Conflict detection: which upstream transactions may be written downstream in parallel.
//!
//! Two transactions conflict when they touch a common *key*: a hash of the values of a primary
//! key or not-null unique key, taken from the old and the new image of every row (a table without
//! such a key has a single key, its name, so its transactions serialise). Transactions that
//! conflict must reach the downstream in the order they were written to the sink; transactions
//! that do not may run on different workers at the same time. This is TiCDC's causality module,
//! with a dependency graph instead of its hash slots:
//!
//! - `last_holder` maps each key to the newest unfinished transaction that holds it. A new
//!   transaction depends on the holders of its keys (only the newest: that one already depends on
//!   the older ones), then becomes the holder of all of them.
//! - A transaction is *dispatched* to a worker once it can no longer be overtaken by what it
//!   depends on: when every dependency has finished (any worker will do: the least loaded is
//!   picked), or when every unfinished dependency is already queued on one same worker (then it
//!   goes to that worker, behind them; workers run their queue in order, so a chain of
//!   transactions on one hot key is merged into few downstream transactions instead of paying a
//!   commit round trip each).
//! - [`ConflictDetector::finish`] is called after the downstream COMMIT of a transaction; it
//!   releases its keys and dispatches dependents that became free.
//!
//! The detector is a plain data structure with no I/O or locking: the sink wraps it in a mutex
//! and must hand out the returned [`Dispatch`]es in the returned order while still holding that
//! mutex, so that two dispatches to the same worker are queued in decision order.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use tidal_model::Datum;
use tidal_model::schema::TableInfo;

use crate::sink::SinkTxn;

/// Identifies a transaction inside the detector.
pub(crate) type TxnId = u64;

/// A decision: run `payload` (transaction `id`) on `worker`.
#[derive(Debug)]
pub(crate) struct Dispatch<T> {
    /// The transaction.
    pub id: TxnId,
    /// The worker queue to append it to.
    pub worker: usize,
    /// What the caller attached to the transaction.
    pub payload: T,
}

#[derive(Debug)]
struct Node<T> {
    keys: Vec<u64>,
    /// Dependencies that have not finished yet.
    unresolved: Vec<TxnId>,
    /// Transactions that depend on this one.
    dependents: Vec<TxnId>,
    /// The worker once dispatched.
    worker: Option<usize>,
    /// Taken when dispatched.
    payload: Option<T>,
}

/// The dependency graph of unfinished transactions (see the module docs).
#[derive(Debug)]
pub(crate) struct ConflictDetector<T> {
    last_holder: HashMap<u64, TxnId>,
    nodes: HashMap<TxnId, Node<T>>,
    next_id: TxnId,
    /// Dispatched, unfinished transactions per worker.
    load: Vec<usize>,
    /// Where the next least-loaded search starts, to spread ties.
    next_worker: usize,
}

impl<T> ConflictDetector<T> {
    /// A detector for `workers` workers (at least 1).
    pub fn new(workers: usize) -> Self {
        ConflictDetector {
            last_holder: HashMap::new(),
            nodes: HashMap::new(),
            next_id: 0,
            load: vec![0; workers.max(1)],
            next_worker: 0,
        }
    }

    /// Unfinished transactions (dispatched or waiting).
    pub fn pending(&self) -> usize {
        self.nodes.len()
    }

    /// Adds a transaction with its conflict keys; returns its id and what can run now (it, and
    /// nothing else, or nothing if it has to wait).
    pub fn add(&mut self, keys: Vec<u64>, payload: T) -> (TxnId, Vec<Dispatch<T>>) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut keys = keys;
        keys.sort_unstable();
        keys.dedup();
        let mut unresolved: Vec<TxnId> = Vec::new();
        for &key in &keys {
            if let Some(holder) = self.last_holder.insert(key, id)
                && !unresolved.contains(&holder)
            {
                unresolved.push(holder);
            }
        }
        for dep in &unresolved {
            if let Some(node) = self.nodes.get_mut(dep) {
                node.dependents.push(id);
            }
        }
        self.nodes.insert(
            id,
            Node {
                keys,
                unresolved,
                dependents: Vec::new(),
                worker: None,
                payload: Some(payload),
            },
        );
        let mut out = Vec::new();
        self.dispatch_from(id, &mut out);
        (id, out)
    }

    /// Marks a dispatched transaction as committed downstream: releases its keys and returns the
    /// transactions that can run now, in the order they must be queued.
    pub fn finish(&mut self, id: TxnId) -> Vec<Dispatch<T>> {
        let mut out = Vec::new();
        let Some(node) = self.nodes.remove(&id) else {
            return out;
        };
        if let Some(w) = node.worker
            && let Some(l) = self.load.get_mut(w)
        {
            *l = l.saturating_sub(1);
        }
        for key in &node.keys {
            if self.last_holder.get(key) == Some(&id) {
                self.last_holder.remove(key);
            }
        }
        for dep in &node.dependents {
            if let Some(d) = self.nodes.get_mut(dep) {
                d.unresolved.retain(|x| *x != id);
            }
        }
        for dep in node.dependents {
            self.dispatch_from(dep, &mut out);
        }
        out
    }

    /// Dispatches `start` if it may run, then, transitively, dependents that may follow it on
    /// the same worker.
    fn dispatch_from(&mut self, start: TxnId, out: &mut Vec<Dispatch<T>>) {
        let mut work = vec![start];
        while let Some(id) = work.pop() {
            let Some(worker) = self.placement(id) else {
                continue;
            };
            let Some(node) = self.nodes.get_mut(&id) else {
                continue;
            };
            let Some(payload) = node.payload.take() else {
                continue;
            };
            node.worker = Some(worker);
            if let Some(l) = self.load.get_mut(worker) {
                *l += 1;
            }
            // Reverse so that dependents are considered in the order they were added.
            work.extend(node.dependents.iter().rev().copied());
            out.push(Dispatch {
                id,
                worker,
                payload,
            });
        }
    }

    /// Where `id` may run now, or `None` if it must wait (or was dispatched already).
    fn placement(&mut self, id: TxnId) -> Option<usize> {
        let node = self.nodes.get(&id)?;
        if node.worker.is_some() {
            return None;
        }
        if node.unresolved.is_empty() {
            return Some(self.least_loaded());
        }
        let mut same: Option<usize> = None;
        for dep in &node.unresolved {
            let w = self.nodes.get(dep).and_then(|d| d.worker)?;
            match same {
                None => same = Some(w),
                Some(s) if s == w => {}
                Some(_) => return None,
            }
        }
        same
    }

    fn least_loaded(&mut self) -> usize {
        let n = self.load.len();
        let mut best = self.next_worker % n;
        for i in 0..n {
            let w = (self.next_worker + i) % n;
            if self.load[w] < self.load[best] {
                best = w;
            }
        }
        self.next_worker = (best + 1) % n;
        best
    }
}

/// The conflict keys of one transaction: for every row, every unique key (PK or not-null UK,
/// [`TableInfo::unique_keys`]) of its old and new image; for a table with no such key, the
/// table itself.
///
/// String key values of a column with a non-binary collation are lowercased and stripped of
/// trailing spaces first, so that `'a'` and `'A '` (equal under `_ci` collations) conflict.
/// Accent and expansion equivalences of some collations (`'é' = 'e'`, `'ß' = 'ss'`) are not
/// folded.
pub(crate) fn conflict_keys(txn: &SinkTxn) -> Vec<u64> {
    let info: &TableInfo = &txn.table.info;
    let table_key = format!(
        "{}.{}",
        txn.table.schema_name.to_lowercase(),
        txn.table.table_name.to_lowercase()
    );
    let columns = info.public_columns();
    let unique: Vec<Vec<(i64, usize, bool)>> = info
        .unique_keys()
        .into_iter()
        .filter_map(|cols| {
            cols.into_iter()
                .map(|id| {
                    let pos = columns.iter().position(|c| c.id == id)?;
                    let ci = columns
                        .get(pos)
                        .is_some_and(|c| is_case_insensitive(&c.field_type.collate));
                    Some((id, pos, ci))
                })
                .collect::<Option<Vec<_>>>()
        })
        .collect();
    if unique.is_empty() {
        let mut h = DefaultHasher::new();
        ("table", &table_key).hash(&mut h);
        return vec![h.finish()];
    }
    let mut keys = Vec::new();
    for row in &txn.rows {
        for image in [&row.old, &row.new].into_iter().flatten() {
            for key in &unique {
                let mut h = DefaultHasher::new();
                ("key", &table_key).hash(&mut h);
                let mut complete = true;
                for (id, pos, ci) in key {
                    id.hash(&mut h);
                    match image.get(*pos) {
                        Some(Datum::Null) | None => {
                            complete = false;
                            break;
                        }
                        Some(d) => hash_datum(d, *ci, &mut h),
                    }
                }
                if complete {
                    keys.push(h.finish());
                }
            }
        }
    }
    if keys.is_empty() {
        // Only NULL-holding keys (cannot happen for a PK): fall back to the table.
        let mut h = DefaultHasher::new();
        ("table", &table_key).hash(&mut h);
        keys.push(h.finish());
    }
    keys
}

fn is_case_insensitive(collate: &str) -> bool {
    let c = collate.to_ascii_lowercase();
    !(c.is_empty() || c == "binary" || c.ends_with("_bin"))
}

fn hash_datum(d: &Datum, ci: bool, h: &mut DefaultHasher) {
    match d {
        Datum::Null => 0u8.hash(h),
        Datum::Int(v) => (1u8, *v).hash(h),
        Datum::Uint(v) => (2u8, *v).hash(h),
        Datum::Float32(v) => (3u8, normalize_float(f64::from(*v))).hash(h),
        Datum::Float64(v) => (3u8, normalize_float(*v)).hash(h),
        Datum::Bytes(b) if ci => match std::str::from_utf8(b) {
            Ok(s) => (4u8, s.trim_end_matches(' ').to_lowercase()).hash(h),
            Err(_) => (5u8, b).hash(h),
        },
        Datum::Bytes(b) => (5u8, b).hash(h),
        Datum::Decimal(v) => (6u8, v.to_string()).hash(h),
        Datum::Time(v) => (7u8, v.to_string()).hash(h),
        Datum::Duration(v) => (8u8, v.to_string()).hash(h),
        Datum::Enum(v) => (9u8, *v).hash(h),
        Datum::Set(v) => (10u8, *v).hash(h),
        Datum::Bit(v) => (11u8, *v).hash(h),
        Datum::Json(v) => (12u8, v.to_string()).hash(h),
    }
}

/// Bits of a float with `-0.0` folded into `0.0` (they are equal in SQL).
fn normalize_float(v: f64) -> u64 {
    if v == 0.0 { 0 } else { v.to_bits() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids<T>(d: &[Dispatch<T>]) -> Vec<(TxnId, usize)> {
        d.iter().map(|d| (d.id, d.worker)).collect()
    }

    #[test]
    fn independent_transactions_spread_over_workers() {
        let mut cd = ConflictDetector::new(3);
        let (_, a) = cd.add(vec![1], "a");
        let (_, b) = cd.add(vec![2], "b");
        let (_, c) = cd.add(vec![3], "c");
        let (_, d) = cd.add(vec![4], "d");
        assert_eq!(ids(&a), vec![(0, 0)]);
        assert_eq!(ids(&b), vec![(1, 1)]);
        assert_eq!(ids(&c), vec![(2, 2)]);
        // All loaded equally: round robin continues.
        assert_eq!(ids(&d), vec![(3, 0)]);
        assert_eq!(d[0].payload, "d");
    }

    #[test]
    fn a_chain_on_one_key_follows_its_head_on_one_worker() {
        let mut cd = ConflictDetector::new(4);
        let (_, a) = cd.add(vec![7], 'a');
        let (_, b) = cd.add(vec![7], 'b');
        let (_, c) = cd.add(vec![7, 8], 'c');
        assert_eq!(ids(&a), vec![(0, 0)]);
        assert_eq!(ids(&b), vec![(1, 0)], "queued behind its dependency");
        assert_eq!(ids(&c), vec![(2, 0)]);
        assert_eq!(cd.pending(), 3);
        assert!(cd.finish(0).is_empty());
        assert!(cd.finish(1).is_empty());
        assert!(cd.finish(2).is_empty());
        assert_eq!(cd.pending(), 0);
        // Keys released: a new transaction on key 7 runs at once, on the least loaded worker.
        let (_, d) = cd.add(vec![7], 'd');
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn dependencies_on_two_workers_wait_for_both() {
        let mut cd = ConflictDetector::new(4);
        let (a, da) = cd.add(vec![1], "a");
        let (b, db) = cd.add(vec![2], "b");
        assert_ne!(da[0].worker, db[0].worker);
        let (c, dc) = cd.add(vec![1, 2], "c");
        assert!(dc.is_empty(), "depends on two workers: must wait");
        // Unrelated work still flows.
        let (_, dx) = cd.add(vec![99], "x");
        assert_eq!(dx.len(), 1);
        // A follower of c waits too, and must not overtake it.
        let (d, dd) = cd.add(vec![2], "d");
        assert!(dd.is_empty());
        // Finishing a leaves c waiting only on b's worker: c joins b's queue, then d follows c.
        let out = cd.finish(a);
        assert_eq!(ids(&out), vec![(c, db[0].worker), (d, db[0].worker)]);
        assert!(cd.finish(b).is_empty());
        assert!(cd.finish(c).is_empty());
        assert!(cd.finish(d).is_empty());
    }

    #[test]
    fn released_keys_wake_waiters_in_order() {
        let mut cd = ConflictDetector::new(2);
        let (a, da) = cd.add(vec![1], 1);
        let (b, _) = cd.add(vec![2], 2);
        let (_, dc) = cd.add(vec![1, 2], 3);
        assert!(dc.is_empty());
        let (_, de) = cd.add(vec![1], 4);
        assert!(de.is_empty(), "waits behind c");
        // Finishing b leaves c waiting only on a's worker: c joins it, e follows c.
        let out = cd.finish(b);
        assert_eq!(
            out.iter().map(|d| d.payload).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert!(out.iter().all(|d| d.worker == da[0].worker));
        assert!(cd.finish(a).is_empty());
    }

    /// Simulates workers that run their queues in order with random interleaving, and checks
    /// that transactions sharing a key complete in the order they were added.
    #[test]
    fn random_schedules_keep_per_key_order() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config::with_cases(64));
        let strategy = (
            1usize..6,
            prop::collection::vec(prop::collection::vec(0u64..8, 1..4), 1..60),
            prop::collection::vec(0usize..1000, 200),
        );
        runner
            .run(&strategy, |(workers, txns, picks)| {
                let mut cd = ConflictDetector::new(workers);
                let mut queues: Vec<std::collections::VecDeque<TxnId>> =
                    vec![Default::default(); workers];
                let mut order: Vec<TxnId> = Vec::new();
                let mut keys_of: HashMap<TxnId, Vec<u64>> = HashMap::new();
                let mut picks = picks.into_iter().cycle();
                let mut next = txns.into_iter();
                loop {
                    let add = picks.next().unwrap_or(0) % 3 == 0;
                    let busy: Vec<usize> =
                        (0..workers).filter(|w| !queues[*w].is_empty()).collect();
                    if add || busy.is_empty() {
                        match next.next() {
                            Some(keys) => {
                                let (id, out) = cd.add(keys.clone(), ());
                                keys_of.insert(id, keys);
                                for d in out {
                                    queues[d.worker].push_back(d.id);
                                }
                                continue;
                            }
                            None if busy.is_empty() => break,
                            None => {}
                        }
                    }
                    let w = busy[picks.next().unwrap_or(0) % busy.len()];
                    let id = queues[w].pop_front().unwrap();
                    order.push(id);
                    for d in cd.finish(id) {
                        queues[d.worker].push_back(d.id);
                    }
                }
                prop_assert_eq!(order.len(), keys_of.len(), "every transaction ran");
                prop_assert_eq!(cd.pending(), 0);
                // For each key, completion order must equal add order.
                let mut per_key: HashMap<u64, Vec<TxnId>> = HashMap::new();
                for id in &order {
                    for k in &keys_of[id] {
                        per_key.entry(*k).or_default().push(*id);
                    }
                }
                for (k, ids) in per_key {
                    let mut sorted = ids.clone();
                    sorted.sort_unstable();
                    prop_assert_eq!(ids, sorted, "key {} out of order", k);
                }
                Ok(())
            })
            .unwrap();
    }
}
