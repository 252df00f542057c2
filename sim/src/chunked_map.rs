//! An ordered map laid out for the MVCC store's write map (`mvcc::Inner::writes`).
//!
//! Why not `BTreeMap`: the write map holds one entry per key (about 90 bytes) and a feed inserts
//! keys in ascending runs (one run per table, interleaved). std's B-tree keeps at most 11 entries
//! per node, so a search walks half a dozen nodes spread over memory, and its leaves split in
//! half under ascending inserts, leaving them about 55 % full (more memory, more page faults).
//!
//! Here the entries live in *chunks*: sorted `Vec`s of at most `C` entries, each one contiguous
//! allocation. A small top-level `BTreeMap` maps each chunk's *separator* key to the chunk's slot
//! in a slab. A lookup is a search of the small top level (which stays cache-resident) and one
//! binary search inside a chunk. An insert goes in place into its chunk; a full chunk splits in
//! half, except when the key goes after the end of a chunk whose successor has no room (or
//! that has no successor) — the append pattern of a key run — where a new chunk is started
//! instead, so appended data packs chunks full.
//!
//! The store searches runs of nearby keys (a transaction's rows, in key order, first by prewrite
//! and then by commit), so the map keeps a *finger*: the chunk last searched and its successor.
//! A key between their first keys skips the top-level search, whose cost would otherwise match
//! a whole `BTreeMap` search.
//!
//! Invariants: every chunk is non-empty and sorted and holds at most `C` entries; its separator
//! is its first key. Any change to the set of chunks or to a first key drops the finger.
//!
//! Only the operations the store needs are provided.

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::ops::Bound;
use std::slice;
use std::sync::atomic::{AtomicU64, Ordering};

/// [`ChunkedMap::hint`] when there is none.
const NO_HINT: u64 = u64::MAX;
/// The "no next chunk" half of a hint.
const NO_NEXT: u64 = u32::MAX as u64;

/// An ordered map of sorted chunks of at most `C` entries (see the module docs).
pub(crate) struct ChunkedMap<K, V, const C: usize = 64> {
    /// Each chunk's separator key → its slot in `chunks`.
    top: BTreeMap<K, usize>,
    /// The chunks (a slab: slots listed in `free` hold empty, unallocated vectors).
    chunks: Vec<Vec<(K, V)>>,
    /// Unused slots of `chunks`.
    free: Vec<usize>,
    /// Number of entries.
    len: usize,
    /// The finger: the slot of the chunk last searched for (high half) and of the chunk after
    /// it ([`NO_NEXT`] if none) or [`NO_HINT`]. While the chunk structure does not change, a
    /// key between the first keys of the two chunks belongs in the first, so a run of nearby
    /// keys skips the top-level search. Atomic (relaxed: it is only a hint, validated on use,
    /// and both halves change together) so that readers sharing the map can set it.
    hint: AtomicU64,
}

impl<K, V, const C: usize> Default for ChunkedMap<K, V, C> {
    fn default() -> Self {
        const { assert!(C >= 4, "chunks must hold at least 4 entries") };
        Self {
            top: BTreeMap::new(),
            chunks: Vec::new(),
            free: Vec::new(),
            len: 0,
            hint: AtomicU64::new(NO_HINT),
        }
    }
}

impl<K: Ord + Clone, V, const C: usize> ChunkedMap<K, V, C> {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The slot of the chunk that holds `key` if the map does (and where it goes on insert):
    /// the one with the last separator ≤ `key`; `None` if `key` is below every separator.
    fn slot_of(&self, key: &K) -> Option<usize> {
        if let Some(slot) = self.hinted(key) {
            return Some(slot);
        }
        let slot = self
            .top
            .range::<K, _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, &slot)| slot)?;
        let next = self
            .top
            .range::<K, _>((Bound::Excluded(key), Bound::Unbounded))
            .next()
            .map_or(Some(NO_NEXT), |(_, &s)| {
                u32::try_from(s).ok().map(u64::from)
            });
        if let (Ok(this), Some(next)) = (u32::try_from(slot), next)
            && u64::from(this) != NO_NEXT
        {
            self.hint
                .store((u64::from(this) << 32) | next, Ordering::Relaxed);
        }
        Some(slot)
    }

    /// The hinted chunk if `key` lies between its first key and the next chunk's.
    fn hinted(&self, key: &K) -> Option<usize> {
        let hint = self.hint.load(Ordering::Relaxed);
        if hint == NO_HINT {
            return None;
        }
        let slot = usize::try_from(hint >> 32).ok()?;
        let first = &self.chunks.get(slot)?.first()?.0;
        if key < first {
            return None;
        }
        let next = hint & NO_NEXT;
        if next != NO_NEXT {
            let next_first = &self.chunks.get(usize::try_from(next).ok()?)?.first()?.0;
            if key >= next_first {
                return None;
            }
        }
        Some(slot)
    }

    /// Forgets the hint (the chunk structure is about to change).
    fn clear_hint(&mut self) {
        *self.hint.get_mut() = NO_HINT;
    }

    /// The value at `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        let chunk = self.chunks.get(self.slot_of(key)?)?;
        let i = chunk.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        chunk.get(i).map(|(_, v)| v)
    }

    /// The value at `key`, inserting `default()` first if there is none.
    pub(crate) fn get_or_insert_with(&mut self, key: K, default: impl FnOnce() -> V) -> &mut V {
        let slot = match self.slot_of(&key) {
            Some(slot) => slot,
            None => self.lower_first_separator(&key),
        };
        let pos = match self.chunks[slot].binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => return &mut self.chunks[slot][i].1,
            Err(pos) => pos,
        };
        self.len += 1;
        if self.chunks[slot].len() < C {
            let chunk = &mut self.chunks[slot];
            chunk.insert(pos, (key, default()));
            return &mut chunk[pos].1;
        }
        // The chunk is full.
        self.clear_hint();
        if pos == C && self.successor_is_full(&key) {
            // Appending: start a new chunk rather than leave a half-empty one behind.
            let mut chunk = Vec::with_capacity(C);
            chunk.push((key.clone(), default()));
            let new = self.alloc(chunk);
            self.top.insert(key, new);
            return &mut self.chunks[new][0].1;
        }
        let half = C / 2;
        let mut right = Vec::with_capacity(C);
        right.extend(self.chunks[slot].drain(half..));
        let separator = right[0].0.clone();
        let new = self.alloc(right);
        self.top.insert(separator, new);
        let (target, pos) = if pos <= half {
            (slot, pos)
        } else {
            (new, pos - half)
        };
        let chunk = &mut self.chunks[target];
        chunk.insert(pos, (key, default()));
        &mut chunk[pos].1
    }

    /// Makes room for `key`, which is below every separator (or the map is empty): lowers the
    /// first chunk's separator to `key` (or creates an empty first chunk) and returns its slot.
    fn lower_first_separator(&mut self, key: &K) -> usize {
        self.clear_hint();
        let slot = match self.top.pop_first() {
            Some((_, slot)) => slot,
            None => self.alloc(Vec::with_capacity(C)),
        };
        self.top.insert(key.clone(), slot);
        slot
    }

    /// Whether the chunk after the one that would hold `key` is full, or there is none.
    fn successor_is_full(&self, key: &K) -> bool {
        self.top
            .range::<K, _>((Bound::Excluded(key), Bound::Unbounded))
            .next()
            .is_none_or(|(_, &slot)| self.chunks.get(slot).is_none_or(|c| c.len() >= C))
    }

    /// Stores `chunk` in a free slot and returns the slot.
    fn alloc(&mut self, chunk: Vec<(K, V)>) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.chunks[slot] = chunk;
                slot
            }
            None => {
                self.chunks.push(chunk);
                self.chunks.len() - 1
            }
        }
    }

    /// The entries with keys within (`lo`, `hi`), in key order (reversible). An empty or
    /// inverted range yields nothing.
    pub(crate) fn range<'a>(&'a self, lo: Bound<&K>, hi: Bound<&K>) -> Range<'a, K, V> {
        let empty = Range {
            chunks: &self.chunks,
            mid: None,
            front: [].iter(),
            back: [].iter(),
        };
        let inverted = match (lo, hi) {
            (Bound::Included(a), Bound::Included(b)) => a > b,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
            | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
            _ => false,
        };
        if inverted {
            return empty;
        }
        // The chunk holding the first key ≥ lo starts at the last separator ≤ lo. Every chunk
        // after it starts above lo, and every chunk before the last one of the top-level range
        // ends below hi, so only the first and the last chunk need trimming.
        let first_sep = match lo {
            Bound::Included(k) | Bound::Excluded(k) => self
                .top
                .range::<K, _>((Bound::Unbounded, Bound::Included(k)))
                .next_back()
                .map(|(sep, _)| sep),
            Bound::Unbounded => None,
        };
        let top_lo = first_sep.map_or(Bound::Unbounded, Bound::Included);
        let mut mid = self.top.range::<K, _>((top_lo, hi));
        let chunk = |(_, &slot): (&K, &usize)| self.chunks.get(slot).map_or(&[][..], Vec::as_slice);
        let trim_lo = |c: &'a [(K, V)]| -> &'a [(K, V)] {
            let from = match lo {
                Bound::Included(k) => c.partition_point(|(x, _)| x < k),
                Bound::Excluded(k) => c.partition_point(|(x, _)| x <= k),
                Bound::Unbounded => 0,
            };
            c.get(from..).unwrap_or_default()
        };
        let trim_hi = |c: &'a [(K, V)]| -> &'a [(K, V)] {
            let to = match hi {
                Bound::Included(k) => c.partition_point(|(x, _)| x <= k),
                Bound::Excluded(k) => c.partition_point(|(x, _)| x < k),
                Bound::Unbounded => c.len(),
            };
            c.get(..to).unwrap_or_default()
        };
        let (front, back) = match (mid.next().map(chunk), mid.next_back().map(chunk)) {
            (None, _) => return empty,
            (Some(only), None) => (trim_hi(trim_lo(only)), &[][..]),
            (Some(first), Some(last)) => (trim_lo(first), trim_hi(last)),
        };
        Range {
            chunks: &self.chunks,
            mid: Some(mid),
            front: front.iter(),
            back: back.iter(),
        }
    }

    /// Keeps the entries for which `f` returns true (visited in key order); drops emptied chunks.
    pub(crate) fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        self.clear_hint();
        let mut top = Vec::with_capacity(self.top.len());
        self.len = 0;
        for (_, slot) in std::mem::take(&mut self.top) {
            let Some(chunk) = self.chunks.get_mut(slot) else {
                continue;
            };
            chunk.retain_mut(|(k, v)| f(k, v));
            self.len += chunk.len();
            // A chunk's separator is its first key, which may have gone.
            match chunk.first() {
                Some((first, _)) => top.push((first.clone(), slot)),
                None => {
                    *chunk = Vec::new();
                    self.free.push(slot);
                }
            }
        }
        // Sorted input: built in bulk.
        self.top = top.into_iter().collect();
    }
}

/// Iterator over a key range of a [`ChunkedMap`], in key order or reversed.
pub(crate) struct Range<'a, K, V> {
    chunks: &'a [Vec<(K, V)>],
    /// The chunks between `front` and `back` not yet visited.
    mid: Option<btree_map::Range<'a, K, usize>>,
    front: slice::Iter<'a, (K, V)>,
    back: slice::Iter<'a, (K, V)>,
}

impl<'a, K, V> Range<'a, K, V> {
    fn next_chunk(&mut self, from_back: bool) -> Option<slice::Iter<'a, (K, V)>> {
        let mid = self.mid.as_mut()?;
        let (_, &slot) = if from_back {
            mid.next_back()
        } else {
            mid.next()
        }?;
        Some(self.chunks.get(slot).map_or(&[][..], Vec::as_slice).iter())
    }
}

impl<'a, K, V> Iterator for Range<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.front.next() {
                return Some((k, v));
            }
            match self.next_chunk(false) {
                Some(chunk) => self.front = chunk,
                None => return self.back.next().map(|(k, v)| (k, v)),
            }
        }
    }
}

impl<K, V> DoubleEndedIterator for Range<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.back.next_back() {
                return Some((k, v));
            }
            match self.next_chunk(true) {
                Some(chunk) => self.back = chunk,
                None => return self.front.next_back().map(|(k, v)| (k, v)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Small chunks, so splits, appends and chunk removals happen after a few operations.
    type Small = ChunkedMap<u16, u32, 4>;

    #[derive(Clone, Debug)]
    enum Op {
        /// get_or_insert_with at each key of the run `start, start + step, …` (`n` keys).
        Insert {
            start: u16,
            step: i8,
            n: u8,
            v: u32,
        },
        Get(u16),
        Range {
            lo: Bound<u16>,
            hi: Bound<u16>,
            reverse: bool,
        },
        /// Keep entries with (key + value) % m != r, bumping the kept values.
        Retain {
            m: u16,
            r: u16,
        },
    }

    const KEYS: u16 = 300;

    fn bound() -> impl Strategy<Value = Bound<u16>> {
        prop_oneof![
            Just(Bound::Unbounded),
            (0..KEYS).prop_map(Bound::Included),
            (0..KEYS).prop_map(Bound::Excluded),
        ]
    }

    /// Ascending and descending runs (step ±1, as the feed and a reverse load write) and
    /// scattered keys.
    fn step() -> impl Strategy<Value = i8> {
        prop_oneof![Just(1i8), Just(-1), Just(3), -20i8..20]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..KEYS, step(), 1..40u8, any::<u32>())
                .prop_map(|(start, step, n, v)| Op::Insert { start, step, n, v }),
            2 => (0..KEYS).prop_map(Op::Get),
            3 => (bound(), bound(), any::<bool>())
                .prop_map(|(lo, hi, reverse)| Op::Range { lo, hi, reverse }),
            1 => (2..6u16, 0..6u16).prop_map(|(m, r)| Op::Retain { m, r }),
        ]
    }

    fn check_invariants(map: &Small) -> Result<(), TestCaseError> {
        let mut prev_last: Option<u16> = None;
        let mut len = 0;
        let mut used = Vec::new();
        for (&sep, &slot) in &map.top {
            let chunk = &map.chunks[slot];
            used.push(slot);
            prop_assert!(
                !chunk.is_empty() && chunk.len() <= 4,
                "chunk size {}",
                chunk.len()
            );
            prop_assert!(chunk.windows(2).all(|w| w[0].0 < w[1].0), "unsorted chunk");
            prop_assert_eq!(sep, chunk[0].0, "separator is not the first key");
            if let Some(p) = prev_last {
                prop_assert!(p < sep, "separator not above the previous chunk");
            }
            prev_last = chunk.last().map(|e| e.0);
            len += chunk.len();
        }
        prop_assert_eq!(len, map.len());
        // A finger names a chunk and its true successor.
        let hint = map.hint.load(Ordering::Relaxed);
        if hint != NO_HINT {
            let at = used.iter().position(|&s| s as u64 == hint >> 32);
            prop_assert!(at.is_some(), "finger to a dead chunk");
            let next = at
                .and_then(|i| used.get(i + 1))
                .map_or(NO_NEXT, |&s| s as u64);
            prop_assert_eq!(next, hint & NO_NEXT, "finger with a wrong successor");
        }
        used.extend(map.free.iter().copied());
        used.sort_unstable();
        prop_assert_eq!(used, (0..map.chunks.len()).collect::<Vec<_>>());
        prop_assert!(map.free.iter().all(|&s| map.chunks[s].is_empty()));
        Ok(())
    }

    fn std_range_is_valid(lo: Bound<u16>, hi: Bound<u16>) -> bool {
        match (lo, hi) {
            (Bound::Included(a), Bound::Included(b)) => a <= b,
            (Bound::Excluded(a), Bound::Excluded(b)) => a < b,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                a <= b
            }
            _ => true,
        }
    }

    fn run(ops: &[Op]) -> Result<(), TestCaseError> {
        let mut map = Small::default();
        let mut model: BTreeMap<u16, u32> = BTreeMap::new();
        for op in ops {
            match op {
                &Op::Insert { start, step, n, v } => {
                    let mut k = i32::from(start);
                    for i in 0..u32::from(n) {
                        let Ok(key) = u16::try_from(k) else { break };
                        let got = map.get_or_insert_with(key, || v.wrapping_add(i));
                        let want = model.entry(key).or_insert(v.wrapping_add(i));
                        prop_assert_eq!(*got, *want);
                        *got = got.wrapping_add(1);
                        *want = want.wrapping_add(1);
                        k += i32::from(step);
                    }
                }
                Op::Get(k) => prop_assert_eq!(map.get(k), model.get(k)),
                &Op::Range { lo, hi, reverse } => {
                    let ours = map.range(lo.as_ref(), hi.as_ref());
                    let ours: Vec<(u16, u32)> = if reverse {
                        ours.rev().map(|(k, v)| (*k, *v)).collect()
                    } else {
                        ours.map(|(k, v)| (*k, *v)).collect()
                    };
                    let want: Vec<(u16, u32)> = if !std_range_is_valid(lo, hi) {
                        Vec::new()
                    } else if reverse {
                        model.range((lo, hi)).rev().map(|(k, v)| (*k, *v)).collect()
                    } else {
                        model.range((lo, hi)).map(|(k, v)| (*k, *v)).collect()
                    };
                    prop_assert_eq!(ours, want);
                }
                &Op::Retain { m, r } => {
                    let keep = |k: &u16, v: &mut u32| {
                        let kept = (u32::from(*k) + *v) % u32::from(m) != u32::from(r);
                        *v = v.wrapping_add(7);
                        kept
                    };
                    let before: Vec<u16> = model.keys().copied().collect();
                    let mut seen = Vec::new();
                    map.retain(|k, v| {
                        seen.push(*k);
                        keep(k, v)
                    });
                    model.retain(keep);
                    prop_assert_eq!(seen, before);
                }
            }
            prop_assert_eq!(map.len(), model.len());
            check_invariants(&map)?;
        }
        // Whole contents, both directions, and mixed ends meeting in the middle.
        let all: Vec<_> = map
            .range(Bound::Unbounded, Bound::Unbounded)
            .map(|(k, v)| (*k, *v))
            .collect();
        prop_assert_eq!(all, model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
        let mut it = map.range(Bound::Unbounded, Bound::Unbounded);
        let mut want = model.iter();
        loop {
            let (a, b) = (it.next(), want.next());
            prop_assert_eq!(a, b);
            let (c, d) = (it.next_back(), want.next_back());
            prop_assert_eq!(c, d);
            if a.is_none() && c.is_none() {
                break;
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_a_btree_map(ops in prop::collection::vec(op(), 1..60)) {
            run(&ops)?;
        }
    }

    #[test]
    fn ascending_runs_pack_chunks_full() {
        // Four interleaved ascending runs, as the feed writes four tables.
        let mut map = ChunkedMap::<u32, u32, 8>::default();
        for i in 0..80u32 {
            for table in 0..4u32 {
                *map.get_or_insert_with(table * 1000 + i, || 0) += 1;
            }
        }
        assert_eq!(map.len(), 320);
        let sizes: Vec<usize> = map.top.values().map(|&s| map.chunks[s].len()).collect();
        // Early splits leave half-full chunks, but each half then fills up before its run moves
        // on to a new chunk: every chunk ends up full.
        assert_eq!(sizes, vec![8; 40]);
        let keys: Vec<u32> = map
            .range(Bound::Unbounded, Bound::Unbounded)
            .map(|(k, _)| *k)
            .collect();
        let want: Vec<u32> = (0..4)
            .flat_map(|t| (0..80).map(move |i| t * 1000 + i))
            .collect();
        assert_eq!(keys, want);
    }
}
