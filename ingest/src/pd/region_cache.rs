//! The client-side region cache: which region (and which leader) holds an encoded key.
//!
//! Every change-feed subscription and snapshot read starts by mapping a key range to regions.
//! Asking PD each time would make PD the bottleneck and add a round trip to every retry, so the
//! client keeps what PD (and TiKV's error hints) told it and drops entries when TiKV reports them
//! stale (`EpochNotMatch`, `RegionNotFound`, `NotLeader`).
//!
//! # Keys
//!
//! All keys here are **memcomparable-encoded** (the form in `metapb::Region` boundaries and PD
//! requests), never raw user keys. An empty start key is −∞ and an empty end key is +∞.
//!
//! # Invariants
//!
//! 1. `by_start` and `by_id` describe the same set of regions: `by_start[k] == id` if and only if
//!    `by_id[id]` exists and its region's start key is `k`.
//! 2. Cached ranges never overlap: every insertion first removes all cached regions whose range
//!    intersects the new one (and any older entry with the same id, whose range may differ).
//! 3. An insertion never replaces newer knowledge with older: if an overlapping cached region has
//!    a strictly newer epoch (a higher `version`, or for the same region id an equal `version`
//!    and higher `conf_ver`), the new region is dropped instead. A lagging PD answer therefore
//!    cannot resurrect a pre-split range; [`RegionCache::remove`] drops an entry
//!    unconditionally when it is known to be wrong.
//! 4. A cached leader, when present, is one of the region's peers.
//!
//! Gaps are allowed: the cache only knows what it was told. A lookup that misses goes to PD.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use tidal_proto::metapb;

/// A region and its leader as last reported by PD or TiKV.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionInfo {
    /// The region: id, encoded key range, epoch and peers.
    pub region: metapb::Region,
    /// The leader peer, when known. PD sends an empty peer (id 0) for an unknown leader; it is
    /// mapped to `None`.
    pub leader: Option<metapb::Peer>,
}

impl RegionInfo {
    /// Builds a region info, dropping a leader that is unknown (id 0) or not one of the peers.
    pub fn new(region: metapb::Region, leader: Option<metapb::Peer>) -> RegionInfo {
        let leader = leader.and_then(|l| known_leader(&region, l));
        RegionInfo { region, leader }
    }

    /// The region id.
    pub fn id(&self) -> u64 {
        self.region.id
    }

    /// Whether the region's range contains the encoded key.
    pub fn contains(&self, key: &[u8]) -> bool {
        range_contains(&self.region.start_key, &self.region.end_key, key)
    }

    /// The region's epoch as `(version, conf_ver)`; a missing epoch counts as `(0, 0)`.
    pub fn epoch(&self) -> (u64, u64) {
        epoch_of(&self.region)
    }
}

/// `(version, conf_ver)` of a region.
pub(crate) fn epoch_of(region: &metapb::Region) -> (u64, u64) {
    region
        .region_epoch
        .as_ref()
        .map_or((0, 0), |e| (e.version, e.conf_ver))
}

/// Whether `[start, end)` contains `key` (empty end = +∞).
pub(crate) fn range_contains(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    start <= key && (end.is_empty() || key < end)
}

/// Whether `[a_start, a_end)` and `[b_start, b_end)` intersect (empty end = +∞).
pub(crate) fn ranges_overlap(a_start: &[u8], a_end: &[u8], b_start: &[u8], b_end: &[u8]) -> bool {
    (a_end.is_empty() || b_start < a_end) && (b_end.is_empty() || a_start < b_end)
}

/// The leader peer as the region lists it, or `None` when unknown or not a member.
fn known_leader(region: &metapb::Region, leader: metapb::Peer) -> Option<metapb::Peer> {
    if leader.id == 0 {
        return None;
    }
    region
        .peers
        .iter()
        .find(|p| p.id == leader.id && (leader.store_id == 0 || p.store_id == leader.store_id))
        .cloned()
}

/// Whether `cached` is strictly newer than `incoming` (invariant 3).
fn is_newer(cached: &metapb::Region, incoming: &metapb::Region) -> bool {
    let (cv, cc) = epoch_of(cached);
    let (iv, ic) = epoch_of(incoming);
    if cv != iv {
        return cv > iv;
    }
    cached.id == incoming.id && cc > ic
}

/// Regions keyed by encoded start key, plus an index by id. See the module docs for the
/// invariants. Not synchronized: the PD client wraps it in a mutex and never holds the lock
/// across an await.
#[derive(Debug, Default)]
pub struct RegionCache {
    by_start: BTreeMap<Vec<u8>, u64>,
    by_id: HashMap<u64, RegionInfo>,
}

impl RegionCache {
    /// An empty cache.
    pub fn new() -> RegionCache {
        RegionCache::default()
    }

    /// Number of cached regions.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The cached region containing the encoded key.
    pub fn locate(&self, key: &[u8]) -> Option<&RegionInfo> {
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let info = self.by_id.get(id)?;
        info.contains(key).then_some(info)
    }

    /// The cached region with this id.
    pub fn get(&self, region_id: u64) -> Option<&RegionInfo> {
        self.by_id.get(&region_id)
    }

    /// Cached regions intersecting `[start, end)` in key order (empty end = +∞). The result may
    /// have gaps where nothing is cached.
    pub fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<&RegionInfo> {
        let mut out = Vec::new();
        // The region containing `start` may begin before it.
        if let Some(first) = self.locate(start) {
            out.push(first);
        }
        let upper: Bound<&[u8]> = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        for (_, id) in self
            .by_start
            .range::<[u8], _>((Bound::Excluded(start), upper))
        {
            if let Some(info) = self.by_id.get(id) {
                out.push(info);
            }
        }
        out
    }

    /// Inserts a region, removing every cached entry it supersedes. Returns `false` (and changes
    /// nothing) when an overlapping cached region is strictly newer (invariant 3).
    pub fn insert(&mut self, info: RegionInfo) -> bool {
        let region = &info.region;
        if !region.end_key.is_empty() && region.end_key <= region.start_key {
            // An empty or inverted range cannot be placed; ignore it rather than corrupt the map.
            return false;
        }
        let mut stale = self.overlapping_ids(&region.start_key, &region.end_key);
        if self.by_id.contains_key(&region.id) && !stale.contains(&region.id) {
            stale.push(region.id);
        }
        if stale
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .any(|cached| is_newer(&cached.region, region))
        {
            return false;
        }
        for id in stale {
            self.remove(id);
        }
        self.by_start.insert(region.start_key.clone(), region.id);
        self.by_id.insert(region.id, info);
        true
    }

    /// Removes a region by id; returns what was cached.
    pub fn remove(&mut self, region_id: u64) -> Option<RegionInfo> {
        let info = self.by_id.remove(&region_id)?;
        if self.by_start.get(&info.region.start_key) == Some(&region_id) {
            self.by_start.remove(&info.region.start_key);
        }
        Some(info)
    }

    /// Records a new leader for a cached region. Returns `false` when the region is not cached
    /// or the peer is not one of its peers — in the latter case the cached region is stale
    /// (membership changed) and is removed.
    pub fn update_leader(&mut self, region_id: u64, leader: metapb::Peer) -> bool {
        let Some(info) = self.by_id.get_mut(&region_id) else {
            return false;
        };
        match known_leader(&info.region, leader) {
            Some(peer) => {
                info.leader = Some(peer);
                true
            }
            None => {
                self.remove(region_id);
                false
            }
        }
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.by_start.clear();
        self.by_id.clear();
    }

    /// Ids of cached regions intersecting `[start, end)`.
    fn overlapping_ids(&self, start: &[u8], end: &[u8]) -> Vec<u64> {
        let upper: Bound<&[u8]> = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let mut ids = Vec::new();
        // Walk backwards from the end: entries are disjoint and sorted, so once one ends at or
        // before `start`, every earlier one does too.
        for (_, id) in self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, upper))
            .rev()
        {
            let Some(info) = self.by_id.get(id) else {
                continue;
            };
            let r = &info.region;
            if ranges_overlap(&r.start_key, &r.end_key, start, end) {
                ids.push(*id);
            } else {
                break;
            }
        }
        ids
    }

    /// Checks invariants 1, 2 and 4; used by tests.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        assert_eq!(self.by_start.len(), self.by_id.len());
        let mut prev_end: Option<Vec<u8>> = None;
        for (start, id) in &self.by_start {
            let info = &self.by_id[id];
            assert_eq!(&info.region.start_key, start);
            if let Some(end) = &prev_end {
                assert!(!end.is_empty(), "region after an unbounded one");
                assert!(end <= start, "overlap");
            }
            if let Some(l) = &info.leader {
                assert!(info.region.peers.iter().any(|p| p.id == l.id));
            }
            prev_end = Some(info.region.end_key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(id: u64, store: u64) -> metapb::Peer {
        metapb::Peer {
            id,
            store_id: store,
            ..Default::default()
        }
    }

    fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version,
            }),
            peers: vec![peer(id * 10 + 1, 1), peer(id * 10 + 2, 2)],
            ..Default::default()
        }
    }

    fn info(id: u64, start: &[u8], end: &[u8], version: u64) -> RegionInfo {
        RegionInfo::new(region(id, start, end, version), Some(peer(id * 10 + 1, 1)))
    }

    fn ids(v: &[&RegionInfo]) -> Vec<u64> {
        v.iter().map(|i| i.id()).collect()
    }

    #[test]
    fn locate_respects_half_open_ranges() {
        let mut c = RegionCache::new();
        assert!(c.insert(info(1, b"", b"b", 1)));
        assert!(c.insert(info(2, b"b", b"d", 1)));
        assert!(c.insert(info(3, b"f", b"", 1)));
        c.check_invariants();
        assert_eq!(c.locate(b"").map(|i| i.id()), Some(1));
        assert_eq!(c.locate(b"a\xff").map(|i| i.id()), Some(1));
        assert_eq!(c.locate(b"b").map(|i| i.id()), Some(2));
        assert_eq!(c.locate(b"c").map(|i| i.id()), Some(2));
        assert_eq!(c.locate(b"d").map(|i| i.id()), None, "gap [d, f)");
        assert_eq!(c.locate(b"e").map(|i| i.id()), None);
        assert_eq!(c.locate(b"f").map(|i| i.id()), Some(3));
        assert_eq!(c.locate(b"\xff\xff\xff").map(|i| i.id()), Some(3));
        assert_eq!(ids(&c.overlapping(b"a", b"f")), vec![1, 2]);
        assert_eq!(ids(&c.overlapping(b"a", b"f\x00")), vec![1, 2, 3]);
        assert_eq!(ids(&c.overlapping(b"c", b"")), vec![2, 3]);
    }

    #[test]
    fn split_replaces_parent_and_stale_parent_is_refused() {
        let mut c = RegionCache::new();
        assert!(c.insert(info(1, b"", b"", 1)));
        // Split: region 1 keeps [m, +inf), new region 2 gets [-inf, m); both version 2.
        assert!(c.insert(info(2, b"", b"m", 2)));
        c.check_invariants();
        assert_eq!(c.len(), 1, "parent removed because it overlapped");
        assert!(c.get(1).is_none());
        assert!(c.insert(info(1, b"m", b"", 2)));
        assert_eq!(c.len(), 2);
        // A lagging answer with the pre-split region must not come back.
        assert!(!c.insert(info(1, b"", b"", 1)));
        assert_eq!(c.locate(b"a").map(|i| i.id()), Some(2));
        assert_eq!(c.locate(b"z").map(|i| i.id()), Some(1));
        c.check_invariants();
    }

    #[test]
    fn merge_replaces_both_children() {
        let mut c = RegionCache::new();
        c.insert(info(1, b"a", b"c", 3));
        c.insert(info(2, b"c", b"e", 3));
        c.insert(info(3, b"e", b"g", 3));
        // 2 merged into 1: [a, e) with a higher version.
        assert!(c.insert(info(1, b"a", b"e", 4)));
        c.check_invariants();
        assert_eq!(c.len(), 2);
        assert!(c.get(2).is_none());
        assert_eq!(c.locate(b"d").map(|i| i.id()), Some(1));
        assert_eq!(c.locate(b"f").map(|i| i.id()), Some(3));
    }

    #[test]
    fn same_id_with_moved_range_drops_old_start() {
        let mut c = RegionCache::new();
        c.insert(info(5, b"a", b"z", 1));
        c.insert(info(5, b"m", b"z", 2));
        c.check_invariants();
        assert_eq!(c.len(), 1);
        assert_eq!(c.locate(b"b"), None);
    }

    #[test]
    fn conf_ver_decides_within_same_version() {
        let mut c = RegionCache::new();
        let mut newer = region(7, b"a", b"b", 3);
        newer.region_epoch = Some(metapb::RegionEpoch {
            conf_ver: 5,
            version: 3,
        });
        assert!(c.insert(RegionInfo::new(newer, None)));
        assert!(!c.insert(info(7, b"a", b"b", 3)), "conf_ver 1 < 5");
        let mut same = region(7, b"a", b"b", 3);
        same.region_epoch = Some(metapb::RegionEpoch {
            conf_ver: 5,
            version: 3,
        });
        assert!(
            c.insert(RegionInfo::new(same, Some(peer(72, 2)))),
            "equal epoch refreshes"
        );
        assert_eq!(c.get(7).unwrap().leader, Some(peer(72, 2)));
    }

    #[test]
    fn leader_updates() {
        let mut c = RegionCache::new();
        c.insert(info(1, b"", b"", 1));
        assert_eq!(c.get(1).unwrap().leader, Some(peer(11, 1)));
        assert!(c.update_leader(1, peer(12, 2)));
        assert_eq!(c.get(1).unwrap().leader, Some(peer(12, 2)));
        // Store id 0 in a hint means "unknown store": matched by peer id.
        assert!(c.update_leader(1, peer(11, 0)));
        assert_eq!(c.get(1).unwrap().leader, Some(peer(11, 1)));
        assert!(!c.update_leader(9, peer(11, 1)), "not cached");
        // A leader that is not a known peer means the cached membership is stale.
        assert!(!c.update_leader(1, peer(99, 3)));
        assert!(c.get(1).is_none());
        c.check_invariants();
    }

    #[test]
    fn unknown_leader_is_none() {
        let i = RegionInfo::new(region(1, b"", b"", 1), Some(metapb::Peer::default()));
        assert_eq!(i.leader, None);
        let i = RegionInfo::new(region(1, b"", b"", 1), Some(peer(77, 1)));
        assert_eq!(i.leader, None, "not a member");
    }

    #[test]
    fn inverted_range_is_ignored() {
        let mut c = RegionCache::new();
        assert!(!c.insert(info(1, b"b", b"a", 1)));
        assert!(!c.insert(info(1, b"b", b"b", 1)));
        assert!(c.is_empty());
    }

    #[test]
    fn remove_and_clear() {
        let mut c = RegionCache::new();
        c.insert(info(1, b"", b"k", 1));
        c.insert(info(2, b"k", b"", 1));
        assert_eq!(c.remove(1).map(|i| i.id()), Some(1));
        assert_eq!(c.remove(1), None);
        assert_eq!(c.locate(b"a"), None);
        c.clear();
        assert!(c.is_empty());
        c.check_invariants();
    }

    proptest! {
        /// Random splits/merges as a sequence of insertions with increasing versions: the cache
        /// stays disjoint and every key maps to the most recently inserted region covering it.
        #[test]
        fn random_insertions_keep_invariants(
            ops in proptest::collection::vec((0u16..16, 1u16..8, 1u64..6), 1..60)
        ) {
            let mut c = RegionCache::new();
            // Reference model: the owner of each single-byte key.
            let mut model: Vec<Option<u64>> = vec![None; 256];
            for (version, (start, len, id)) in (1u64..).zip(ops) {
                let s = usize::from(start * 16);
                let e = usize::from((start + len) * 16);
                let start_key = if s == 0 { Vec::new() } else { vec![s as u8] };
                let end_key = if e >= 256 { Vec::new() } else { vec![e as u8] };
                let inserted = c.insert(info(id, &start_key, &end_key, version));
                prop_assert!(inserted, "versions increase, so insertion always wins");
                // Whole regions overlapping the new one disappear, as does the old entry for id.
                let mut gone: Vec<u64> = model[s..e.min(256)].iter().flatten().copied().collect();
                gone.push(id);
                for slot in model.iter_mut() {
                    if slot.is_some_and(|owner| gone.contains(&owner)) {
                        *slot = None;
                    }
                }
                for slot in &mut model[s..e.min(256)] {
                    *slot = Some(id);
                }
                c.check_invariants();
            }
            for (k, owner) in model.iter().enumerate() {
                let key = [k as u8];
                prop_assert_eq!(c.locate(&key).map(|i| i.id()), *owner, "key {}", k);
            }
        }
    }
}
