//! The resolved-ts map of one subscribed span: which region serves each sub-range, and how far
//! each sub-range is resolved.
//!
//! A span is cut along region boundaries; every piece has a resolved ts and, while subscribed, an
//! owner (the registration serving it). The span's resolved ts is the minimum over pieces. Pieces
//! change when regions split, merge or fail, and a failed piece keeps its ts (frozen) so that the
//! span's resolved ts never goes backwards and the piece is re-subscribed from exactly that ts.
//!
//! With thousands of regions and a resolved-ts batch every second per store, recomputing the
//! minimum by a scan would be quadratic in practice; an ordered set of `(ts, piece id)` gives
//! the minimum in O(log n) and every update in O(log n).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::time::Instant;

use tidal_model::Ts;

/// Identity of one sub-range; stable until the range is split.
pub type RangeId = u64;

/// Who serves a range: a registration `(request_id, region_id)`.
pub type Owner = (u64, u64);

/// One sub-range of the span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeEntry {
    /// First encoded key (inclusive); empty = −∞.
    pub start: Vec<u8>,
    /// Encoded end key (exclusive); empty = +∞.
    pub end: Vec<u8>,
    /// The registration serving the range, if any.
    pub owner: Option<Owner>,
    /// The range's resolved ts: every change in it with `commit_ts <= ts` has been received.
    pub ts: Ts,
    /// True once the owner's initial scan finished.
    pub initialized: bool,
    /// Why the range is not served (set while it has no owner), for diagnostics.
    pub failure: Option<String>,
    /// When `ts` last advanced (or the range was created).
    pub since: Instant,
    /// Region id of the last owner (0 if it never had one), for diagnostics.
    pub last_region: u64,
}

/// The sub-ranges of a span and their resolved ts.
#[derive(Debug, Clone)]
pub struct RangeTs {
    by_start: BTreeMap<Vec<u8>, RangeId>,
    entries: HashMap<RangeId, RangeEntry>,
    order: BTreeSet<(Ts, RangeId)>,
    next_id: RangeId,
}

impl RangeTs {
    /// A span `[start, end)` as one unowned range at `ts`.
    pub fn new(start: Vec<u8>, end: Vec<u8>, ts: Ts) -> RangeTs {
        let mut r = RangeTs {
            by_start: BTreeMap::new(),
            entries: HashMap::new(),
            order: BTreeSet::new(),
            next_id: 0,
        };
        r.insert(RangeEntry {
            start,
            end,
            owner: None,
            ts,
            initialized: false,
            failure: Some("not yet subscribed".to_owned()),
            since: Instant::now(),
            last_region: 0,
        });
        r
    }

    fn insert(&mut self, e: RangeEntry) -> RangeId {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.by_start.insert(e.start.clone(), id);
        self.order.insert((e.ts, id));
        self.entries.insert(id, e);
        id
    }

    /// The span's resolved ts: the minimum over its ranges.
    pub fn resolved(&self) -> Ts {
        self.order.first().map(|(ts, _)| *ts).unwrap_or(Ts::MAX)
    }

    /// The range with the smallest ts.
    pub fn slowest(&self) -> Option<(RangeId, &RangeEntry)> {
        let (_, id) = self.order.first()?;
        self.entries.get(id).map(|e| (*id, e))
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are no ranges (never, for a span built with [`RangeTs::new`]).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One range.
    pub fn get(&self, id: RangeId) -> Option<&RangeEntry> {
        self.entries.get(&id)
    }

    /// All ranges in key order.
    pub fn iter(&self) -> impl Iterator<Item = (RangeId, &RangeEntry)> + '_ {
        self.by_start
            .values()
            .filter_map(|id| self.entries.get(id).map(|e| (*id, e)))
    }

    /// Raises a range's ts; lower or equal values are ignored. Returns true if it advanced.
    pub fn update(&mut self, id: RangeId, ts: Ts) -> bool {
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        if ts <= e.ts {
            return false;
        }
        self.order.remove(&(e.ts, id));
        self.order.insert((ts, id));
        e.ts = ts;
        e.since = Instant::now();
        true
    }

    /// Gives a range to a registration; it is not initialized yet. False if there is no such
    /// range.
    pub fn assign(&mut self, id: RangeId, owner: Owner) -> bool {
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        e.owner = Some(owner);
        e.last_region = owner.1;
        e.initialized = false;
        e.failure = None;
        true
    }

    /// Marks a range's owner initialized.
    pub fn set_initialized(&mut self, id: RangeId) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.initialized = true;
        }
    }

    /// Takes a range from its owner: its ts is kept (frozen) until it is re-subscribed.
    pub fn fail(&mut self, id: RangeId, why: String) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.owner = None;
            e.initialized = false;
            e.failure = Some(why);
        }
    }

    /// Records why an unowned range is still unowned (diagnostics only).
    pub fn set_failure(&mut self, id: RangeId, why: String) {
        if let Some(e) = self.entries.get_mut(&id)
            && e.owner.is_none()
        {
            e.failure = Some(why);
        }
    }

    /// Splits range `id` at `key` (strictly inside it). Both halves keep its ts, owner and
    /// state; the left half keeps `id`. Returns the right half's id, or `None` if `key` is not
    /// strictly inside.
    pub fn split(&mut self, id: RangeId, key: &[u8]) -> Option<RangeId> {
        let e = self.entries.get(&id)?;
        let inside = key > e.start.as_slice() && (e.end.is_empty() || key < e.end.as_slice());
        if !inside {
            return None;
        }
        let mut right = e.clone();
        right.start = key.to_vec();
        let right_id = self.insert(right);
        if let Some(left) = self.entries.get_mut(&id) {
            left.end = key.to_vec();
        }
        Some(right_id)
    }

    /// Carves `[start, end)` (clipped to range `id`) out of range `id`, splitting as needed, and
    /// returns the id of the piece that is exactly the clipped interval, or `None` if they do
    /// not overlap.
    pub fn carve(&mut self, id: RangeId, start: &[u8], end: &[u8]) -> Option<RangeId> {
        let e = self.entries.get(&id)?;
        let lo = e.start.as_slice().max(start).to_vec();
        let hi: Vec<u8> = match (e.end.is_empty(), end.is_empty()) {
            (true, _) => end.to_vec(),
            (false, true) => e.end.clone(),
            (false, false) => e.end.as_slice().min(end).to_vec(),
        };
        if !hi.is_empty() && lo >= hi {
            return None;
        }
        let mid = self.split(id, &lo).unwrap_or(id);
        if !hi.is_empty() {
            self.split(mid, &hi);
        }
        Some(mid)
    }

    /// The range containing the encoded key `key`.
    pub fn find(&self, key: &[u8]) -> Option<RangeId> {
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let e = self.entries.get(id)?;
        (e.end.is_empty() || key < e.end.as_slice()).then_some(*id)
    }

    /// The ids of the ranges that start inside `[start, end)` (empty end = +∞), in key order.
    pub fn ids_within(&self, start: &[u8], end: &[u8]) -> Vec<RangeId> {
        self.by_start
            .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
            .take_while(|(k, _)| end.is_empty() || k.as_slice() < end)
            .map(|(_, id)| *id)
            .collect()
    }

    /// The ids of all ranges that have no owner.
    pub fn unowned(&self) -> Vec<RangeId> {
        self.iter()
            .filter(|(_, e)| e.owner.is_none())
            .map(|(id, _)| id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(r: &RangeTs) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
        r.iter()
            .map(|(_, e)| (e.start.clone(), e.end.clone(), e.ts.0))
            .collect()
    }

    #[test]
    fn new_span_is_one_unowned_range() {
        let r = RangeTs::new(b"a".to_vec(), b"z".to_vec(), Ts(5));
        assert_eq!(r.len(), 1);
        assert_eq!(r.resolved(), Ts(5));
        assert_eq!(r.unowned().len(), 1);
        assert_eq!(keys(&r), vec![(b"a".to_vec(), b"z".to_vec(), 5)]);
    }

    #[test]
    fn carve_and_update_gives_min() {
        let mut r = RangeTs::new(b"a".to_vec(), b"z".to_vec(), Ts(5));
        let root = r.iter().next().unwrap().0;
        let m = r.carve(root, b"c", b"m").unwrap();
        assert_eq!(
            keys(&r),
            vec![
                (b"a".to_vec(), b"c".to_vec(), 5),
                (b"c".to_vec(), b"m".to_vec(), 5),
                (b"m".to_vec(), b"z".to_vec(), 5)
            ]
        );
        assert!(r.update(m, Ts(9)));
        assert_eq!(r.resolved(), Ts(5));
        for id in r.iter().map(|(id, _)| id).collect::<Vec<_>>() {
            r.update(id, Ts(7));
        }
        assert_eq!(r.resolved(), Ts(7));
        assert_eq!(r.get(m).unwrap().ts, Ts(9));
        assert!(!r.update(m, Ts(8)), "lower ts is ignored");
        assert_eq!(r.get(m).unwrap().ts, Ts(9));
    }

    #[test]
    fn carve_clips_and_handles_unbounded() {
        let mut r = RangeTs::new(Vec::new(), Vec::new(), Ts(1));
        let root = r.iter().next().unwrap().0;
        // Whole range: no split.
        assert_eq!(r.carve(root, b"", b""), Some(root));
        assert_eq!(r.len(), 1);
        let right = r.carve(root, b"k", b"").unwrap();
        assert_eq!(
            keys(&r),
            vec![
                (Vec::new(), b"k".to_vec(), 1),
                (b"k".to_vec(), Vec::new(), 1)
            ]
        );
        assert_eq!(r.carve(right, b"a", b"c"), None);
        assert_eq!(r.carve(right, b"a", b"k"), None);
        assert_eq!(r.carve(right, b"a", b"m"), Some(right));
        assert_eq!(r.get(right).unwrap().end, b"m".to_vec());
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn find_and_ids_within() {
        let mut r = RangeTs::new(b"b".to_vec(), Vec::new(), Ts(1));
        let root = r.iter().next().unwrap().0;
        let mid = r.split(root, b"d").unwrap();
        let right = r.split(mid, b"f").unwrap();
        assert_eq!(r.find(b"a"), None);
        assert_eq!(r.find(b"b"), Some(root));
        assert_eq!(r.find(b"c\xff"), Some(root));
        assert_eq!(r.find(b"d"), Some(mid));
        assert_eq!(r.find(b"zzz"), Some(right));
        assert_eq!(r.ids_within(b"b", b""), vec![root, mid, right]);
        assert_eq!(r.ids_within(b"c", b"f"), vec![mid]);
        assert_eq!(r.ids_within(b"d", b"g"), vec![mid, right]);
        let bounded = RangeTs::new(b"b".to_vec(), b"d".to_vec(), Ts(1));
        assert_eq!(bounded.find(b"d"), None);
    }

    #[test]
    fn split_outside_is_refused() {
        let mut r = RangeTs::new(b"b".to_vec(), b"d".to_vec(), Ts(1));
        let root = r.iter().next().unwrap().0;
        assert_eq!(r.split(root, b"b"), None);
        assert_eq!(r.split(root, b"d"), None);
        assert_eq!(r.split(root, b"a"), None);
        assert_eq!(r.split(99, b"c"), None);
        assert!(r.split(root, b"c").is_some());
    }

    #[test]
    fn fail_keeps_ts_and_assign_resets_initialized() {
        let mut r = RangeTs::new(b"a".to_vec(), b"z".to_vec(), Ts(5));
        let id = r.iter().next().unwrap().0;
        assert!(r.assign(id, (1, 2)));
        r.set_initialized(id);
        r.update(id, Ts(8));
        r.fail(id, "epoch".into());
        let e = r.get(id).unwrap();
        assert_eq!(
            (e.owner, e.ts, e.initialized, e.failure.as_deref()),
            (None, Ts(8), false, Some("epoch"))
        );
        assert_eq!(r.resolved(), Ts(8));
        assert!(r.assign(id, (1, 3)));
        let e = r.get(id).unwrap();
        assert_eq!(
            (e.owner, e.initialized, e.failure.clone()),
            (Some((1, 3)), false, None)
        );
        r.set_failure(id, "ignored while owned".into());
        assert_eq!(r.get(id).unwrap().failure, None);
        assert!(!r.assign(42, (1, 1)));
    }

    #[test]
    fn slowest_names_the_min_range() {
        let mut r = RangeTs::new(b"a".to_vec(), b"z".to_vec(), Ts(5));
        let root = r.iter().next().unwrap().0;
        let right = r.split(root, b"m").unwrap();
        r.update(root, Ts(10));
        assert_eq!(r.slowest().unwrap().0, right);
        r.update(right, Ts(11));
        assert_eq!(r.slowest().unwrap().0, root);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Update(usize, u64),
            Split(usize, u8),
            Fail(usize),
            Assign(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0usize..16, 0u64..100).prop_map(|(i, t)| Op::Update(i, t)),
                (0usize..16, any::<u8>()).prop_map(|(i, k)| Op::Split(i, k)),
                (0usize..16).prop_map(Op::Fail),
                (0usize..16).prop_map(Op::Assign),
            ]
        }

        proptest! {
            #[test]
            fn matches_naive_model(ops in prop::collection::vec(op(), 0..80)) {
                let mut r = RangeTs::new(Vec::new(), Vec::new(), Ts(10));
                // Naive model: (start, end, ts) sorted by start.
                let mut model: Vec<(Vec<u8>, Vec<u8>, u64)> = vec![(Vec::new(), Vec::new(), 10)];
                let mut last_resolved = Ts(10);
                for op in ops {
                    let ids: Vec<RangeId> = r.iter().map(|(id, _)| id).collect();
                    match op {
                        Op::Update(i, t) => {
                            let i = i % ids.len();
                            r.update(ids[i], Ts(t));
                            model[i].2 = model[i].2.max(t);
                        }
                        Op::Split(i, k) => {
                            let i = i % ids.len();
                            let key = vec![k];
                            let (s, e, ts) = model[i].clone();
                            let inside = key > s && (e.is_empty() || key < e);
                            let got = r.split(ids[i], &key);
                            prop_assert_eq!(got.is_some(), inside);
                            if inside {
                                model[i].1 = key.clone();
                                model.insert(i + 1, (key, e, ts));
                            }
                        }
                        Op::Fail(i) => {
                            let i = i % ids.len();
                            r.fail(ids[i], "x".into());
                        }
                        Op::Assign(i) => {
                            let i = i % ids.len();
                            r.assign(ids[i], (1, i as u64));
                        }
                    }
                    prop_assert_eq!(keys(&r), model.clone());
                    let min = model.iter().map(|m| m.2).min().unwrap();
                    prop_assert_eq!(r.resolved(), Ts(min));
                    prop_assert!(r.resolved() >= last_resolved);
                    last_resolved = r.resolved();
                    // Ranges tile the key space.
                    for w in model.windows(2) {
                        prop_assert_eq!(&w[0].1, &w[1].0);
                    }
                }
            }
        }
    }
}
