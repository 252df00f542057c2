//! Regions: how the key space is cut up, which stores hold a replica of each piece, and which
//! store leads it.
//!
//! Region boundaries are memcomparable-ENCODED keys (empty = unbounded), as PD reports them; data
//! keys elsewhere in the sim are raw, and the conversion is `tidal_model::codec::bytes`.
//!
//! Epochs follow TiKV: a split bumps `version` of both halves by one (the original region keeps
//! its id and the RIGHT half — TiKV's default `right-derive-when-split = true` — and the new id
//! gets the left half); a merge bumps the source's `version` and `conf_ver` (PrepareMerge) and
//! sets the target's `version` to `max(source, target) + 1` (CommitMerge), the target keeping
//! its id; a peer move is two conf changes and bumps `conf_ver` by two; a leader transfer bumps
//! nothing. Region ids and peer ids come from one allocator (PD's `AllocID`), after the store
//! ids.
//!
//! Every change runs inside [`MvccStore::exclusive`], i.e. between two MVCC writes, like a raft
//! admin command in apply order: the MVCC observer is told synchronously
//! ([`ApplyObserver::on_region_change`](crate::mvcc::ApplyObserver::on_region_change)), and the
//! change is then published on a broadcast channel ([`RegionManager::subscribe`]). Peer moves
//! are not published (CDC subscribes at leaders only, and leaders never move with them).
//! Lock order: MVCC store first, then the region table.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;
use rand::Rng;
use tidal_model::codec::bytes::{decode_key, encode_key};
use tidal_proto::metapb;
use tokio::sync::broadcast;

use crate::mvcc::MvccStore;

/// A region's version pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RegionEpoch {
    /// Bumped by membership changes.
    pub conf_ver: u64,
    /// Bumped by splits and merges.
    pub version: u64,
}

impl RegionEpoch {
    /// As a protobuf message.
    pub fn to_metapb(self) -> metapb::RegionEpoch {
        metapb::RegionEpoch {
            conf_ver: self.conf_ver,
            version: self.version,
        }
    }
}

/// One replica of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Peer id (unique across the cluster).
    pub id: u64,
    /// The store holding it.
    pub store_id: u64,
}

impl Peer {
    /// As a protobuf message.
    pub fn to_metapb(self) -> metapb::Peer {
        metapb::Peer {
            id: self.id,
            store_id: self.store_id,
            ..Default::default()
        }
    }
}

/// A region: [start, end) in encoded key space, its replicas and its leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Region id.
    pub id: u64,
    /// Encoded start key (empty = −∞).
    pub start: Vec<u8>,
    /// Encoded end key (empty = +∞).
    pub end: Vec<u8>,
    /// Epoch.
    pub epoch: RegionEpoch,
    /// Replicas, one per store.
    pub peers: Vec<Peer>,
    /// The store whose peer leads.
    pub leader_store: u64,
}

impl Region {
    /// As a protobuf message.
    pub fn to_metapb(&self) -> metapb::Region {
        metapb::Region {
            id: self.id,
            start_key: self.start.clone(),
            end_key: self.end.clone(),
            region_epoch: Some(self.epoch.to_metapb()),
            peers: self.peers.iter().map(|p| p.to_metapb()).collect(),
            ..Default::default()
        }
    }

    /// The leader's peer.
    pub fn leader_peer(&self) -> Option<Peer> {
        self.peer_on(self.leader_store)
    }

    /// This region's peer on `store_id`, if any.
    pub fn peer_on(&self, store_id: u64) -> Option<Peer> {
        self.peers.iter().copied().find(|p| p.store_id == store_id)
    }

    /// Whether the encoded key lies in [start, end).
    pub fn contains(&self, encoded_key: &[u8]) -> bool {
        encoded_key >= self.start.as_slice()
            && (self.end.is_empty() || encoded_key < self.end.as_slice())
    }

    /// Whether the RAW key lies in the region.
    pub fn contains_raw(&self, raw_key: &[u8]) -> bool {
        self.contains(&encode_key(raw_key))
    }

    /// The region's bounds as raw keys (empty = unbounded). Boundaries that do not decode (never
    /// produced by this manager) widen to unbounded.
    pub fn raw_range(&self) -> (Vec<u8>, Vec<u8>) {
        let dec = |k: &[u8]| {
            if k.is_empty() {
                Vec::new()
            } else {
                decode_key(k).unwrap_or_default()
            }
        };
        (dec(&self.start), dec(&self.end))
    }

    fn store_set(&self) -> Vec<u64> {
        let mut s: Vec<u64> = self.peers.iter().map(|p| p.store_id).collect();
        s.sort_unstable();
        s
    }
}

/// A TiKV store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    /// Store id.
    pub id: u64,
    /// gRPC address clients dial (empty until the server is bound).
    pub address: String,
}

impl StoreInfo {
    /// As a protobuf message (state Up, node state Serving).
    pub fn to_metapb(&self) -> metapb::Store {
        metapb::Store {
            id: self.id,
            address: self.address.clone(),
            state: metapb::StoreState::Up as i32,
            version: "8.5.0".to_owned(),
            node_state: metapb::NodeState::Serving as i32,
            ..Default::default()
        }
    }
}

/// A region change, published after it was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionChange {
    /// `old` was split into `new` (in key order; `old.id` survives as the right-most piece).
    Split {
        /// The region before the split.
        old: Region,
        /// The resulting regions.
        new: Vec<Region>,
    },
    /// `source` was merged into `target` (the result) and no longer exists.
    Merge {
        /// The source region as of PrepareMerge (version and conf_ver already bumped).
        source: Region,
        /// The resulting target region.
        target: Region,
    },
    /// The leader of `region` moved.
    LeaderTransfer {
        /// The region after the transfer.
        region: Region,
        /// Old leader store.
        from_store: u64,
        /// New leader store.
        to_store: u64,
    },
}

/// Why a region operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    /// No such region.
    #[error("region {0} not found")]
    NotFound(u64),
    /// No such store.
    #[error("store {0} not found")]
    StoreNotFound(u64),
    /// The split key is empty, not a valid encoded key, or a region boundary already.
    #[error("invalid split key {0:?}")]
    InvalidSplitKey(Vec<u8>),
    /// Merge of regions that are not adjacent or not on the same stores.
    #[error("regions {0} and {1} cannot be merged")]
    NotMergeable(u64, u64),
    /// The region has no peer on that store (or already has one, for a move target).
    #[error("region {region_id} has no suitable peer on store {store_id}")]
    BadPeer {
        /// Region id.
        region_id: u64,
        /// Store id.
        store_id: u64,
    },
    /// Nothing to pick for a random fault.
    #[error("no candidate for {0}")]
    NoCandidate(&'static str),
}

/// Why a request cannot be served by a store (mapped to `errorpb` by the servers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The store holds no peer of the region (or it does not exist).
    RegionNotFound(u64),
    /// The store's peer is not the leader; `leader` is where to go.
    NotLeader {
        /// Region id.
        region_id: u64,
        /// The leader peer, if known.
        leader: Option<Peer>,
    },
    /// The request's epoch is stale; `current` are the current regions.
    EpochNotMatch {
        /// Current regions for the client's cache.
        current: Vec<Region>,
    },
    /// The request carried no epoch.
    MissingEpoch,
}

/// Initial layout of the regions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionConfig {
    /// Number of stores (ids 1..=stores).
    pub stores: usize,
    /// Replicas per region (0 or ≥ stores = a peer on every store). With fewer, regions sit on
    /// stores 1..=replicas, so the other stores answer region_not_found.
    pub replicas: usize,
    /// Encoded keys at which the initial region is pre-split.
    pub split_keys: Vec<Vec<u8>>,
}

impl Default for RegionConfig {
    fn default() -> Self {
        Self {
            stores: 3,
            replicas: 0,
            split_keys: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct State {
    regions: HashMap<u64, Region>,
    by_start: BTreeMap<Vec<u8>, u64>,
    stores: Vec<StoreInfo>,
    next_id: u64,
}

impl State {
    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn locate(&self, key: &[u8]) -> Option<&Region> {
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        self.regions.get(id)
    }

    fn next_of(&self, r: &Region) -> Option<&Region> {
        if r.end.is_empty() {
            return None;
        }
        self.by_start
            .get(&r.end)
            .and_then(|id| self.regions.get(id))
    }

    fn insert(&mut self, r: Region) {
        self.by_start.insert(r.start.clone(), r.id);
        self.regions.insert(r.id, r);
    }

    fn split(&mut self, key: &[u8]) -> Result<(Region, Region), RegionError> {
        let invalid = || RegionError::InvalidSplitKey(key.to_vec());
        if key.is_empty() || decode_key(key).is_err() {
            return Err(invalid());
        }
        let old = self.locate(key).cloned().ok_or_else(invalid)?;
        if old.start.as_slice() == key {
            return Err(invalid());
        }
        let version = old.epoch.version + 1;
        let mut left = Region {
            id: self.alloc_id(),
            start: old.start.clone(),
            end: key.to_vec(),
            epoch: RegionEpoch {
                conf_ver: old.epoch.conf_ver,
                version,
            },
            peers: Vec::with_capacity(old.peers.len()),
            leader_store: old.leader_store,
        };
        for p in &old.peers {
            let id = self.alloc_id();
            left.peers.push(Peer {
                id,
                store_id: p.store_id,
            });
        }
        let mut right = old.clone();
        right.start = key.to_vec();
        right.epoch.version = version;
        self.by_start.remove(&old.start);
        self.insert(left.clone());
        self.insert(right.clone());
        Ok((left, right))
    }
}

/// The region table (cheap to clone; clones share state).
#[derive(Clone, Debug)]
pub struct RegionManager {
    state: Arc<RwLock<State>>,
    store: MvccStore,
    tx: broadcast::Sender<RegionChange>,
}

impl RegionManager {
    /// A table with one region covering everything (leader on store 1), pre-split at
    /// `cfg.split_keys`; region changes are ordered with `store`'s writes.
    pub fn new(store: MvccStore, cfg: &RegionConfig) -> Self {
        let stores = cfg.stores.max(1) as u64;
        let replicas = if cfg.replicas == 0 {
            stores
        } else {
            (cfg.replicas as u64).min(stores)
        };
        let mut st = State {
            regions: HashMap::new(),
            by_start: BTreeMap::new(),
            stores: (1..=stores)
                .map(|id| StoreInfo {
                    id,
                    address: String::new(),
                })
                .collect(),
            next_id: stores + 1,
        };
        let id = st.alloc_id();
        let peers = (1..=replicas)
            .map(|store_id| Peer {
                id: st.alloc_id(),
                store_id,
            })
            .collect();
        st.insert(Region {
            id,
            start: Vec::new(),
            end: Vec::new(),
            epoch: RegionEpoch {
                conf_ver: 1,
                version: 1,
            },
            peers,
            leader_store: 1,
        });
        let mut keys = cfg.split_keys.clone();
        keys.sort();
        for k in keys {
            // Invalid or duplicate pre-split keys are skipped.
            let _ = st.split(&k);
        }
        let (tx, _) = broadcast::channel(1024);
        Self {
            state: Arc::new(RwLock::new(st)),
            store,
            tx,
        }
    }

    /// Receives every region change after it was applied.
    pub fn subscribe(&self) -> broadcast::Receiver<RegionChange> {
        self.tx.subscribe()
    }

    /// The region containing the encoded key.
    pub fn locate(&self, encoded_key: &[u8]) -> Region {
        let st = self.state.read();
        // The regions always tile the key space, so a region is always found.
        st.locate(encoded_key)
            .or_else(|| st.regions.values().next())
            .cloned()
            .unwrap_or_else(|| Region {
                id: 0,
                start: Vec::new(),
                end: Vec::new(),
                epoch: RegionEpoch::default(),
                peers: Vec::new(),
                leader_store: 0,
            })
    }

    /// The region containing the RAW key.
    pub fn locate_raw(&self, raw_key: &[u8]) -> Region {
        self.locate(&encode_key(raw_key))
    }

    /// The region just before the one containing the encoded key.
    pub fn prev(&self, encoded_key: &[u8]) -> Option<Region> {
        let st = self.state.read();
        let cur = st.locate(encoded_key)?;
        if cur.start.is_empty() {
            return None;
        }
        let before = cur.start.clone();
        let (_, id) = st
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(before.as_slice())))
            .next_back()?;
        st.regions.get(id).cloned()
    }

    /// A region by id.
    pub fn get(&self, id: u64) -> Option<Region> {
        self.state.read().regions.get(&id).cloned()
    }

    /// Regions overlapping [start, end) (encoded; empty end = +∞), in key order, at most
    /// `limit` (0 = unlimited).
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<Region> {
        let st = self.state.read();
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut out = Vec::new();
        let mut cur = st.locate(start);
        while let Some(r) = cur {
            if out.len() >= limit || (!end.is_empty() && r.start.as_slice() >= end) {
                break;
            }
            out.push(r.clone());
            cur = st.next_of(r);
        }
        out
    }

    /// Every region in key order.
    pub fn all(&self) -> Vec<Region> {
        self.scan(&[], &[], 0)
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.state.read().regions.len()
    }

    /// Always false: the regions tile the key space.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The stores.
    pub fn stores(&self) -> Vec<StoreInfo> {
        self.state.read().stores.clone()
    }

    /// One store.
    pub fn store(&self, id: u64) -> Option<StoreInfo> {
        self.state
            .read()
            .stores
            .iter()
            .find(|s| s.id == id)
            .cloned()
    }

    /// Records the gRPC address of a store once its server is bound.
    pub fn set_store_address(&self, id: u64, address: String) {
        if let Some(s) = self.state.write().stores.iter_mut().find(|s| s.id == id) {
            s.address = address;
        }
    }

    /// Checks whether `store_id` may serve a request for `region_id` with `epoch` (TiKV's order:
    /// peer on this store → leader → epoch version; conf_ver is not checked for reads).
    pub fn check_route(
        &self,
        store_id: u64,
        region_id: u64,
        epoch: Option<RegionEpoch>,
    ) -> Result<Region, RouteError> {
        let st = self.state.read();
        let region = match st.regions.get(&region_id) {
            Some(r) if r.peer_on(store_id).is_some() => r,
            _ => return Err(RouteError::RegionNotFound(region_id)),
        };
        if region.leader_store != store_id {
            return Err(RouteError::NotLeader {
                region_id,
                leader: region.leader_peer(),
            });
        }
        let Some(epoch) = epoch else {
            return Err(RouteError::MissingEpoch);
        };
        if epoch.version != region.epoch.version {
            return Err(RouteError::EpochNotMatch {
                current: vec![region.clone()],
            });
        }
        Ok(region.clone())
    }

    /// Runs a change in apply order and publishes it.
    fn apply<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<(T, Option<RegionChange>), RegionError>,
    ) -> Result<T, RegionError> {
        self.store.exclusive(|observer| {
            let (out, change) = {
                let mut st = self.state.write();
                f(&mut st)?
            };
            if let Some(change) = change {
                if let Some(obs) = observer {
                    obs.on_region_change(&change);
                }
                // No subscriber is fine.
                let _ = self.tx.send(change);
            }
            Ok(out)
        })
    }

    /// Splits the region containing `encoded_key` at it. Returns (left, right); the right half
    /// keeps the original id.
    pub fn split(&self, encoded_key: &[u8]) -> Result<(Region, Region), RegionError> {
        self.apply(|st| {
            let old = st.locate(encoded_key).cloned();
            let (l, r) = st.split(encoded_key)?;
            let change = old.map(|old| RegionChange::Split {
                old,
                new: vec![l.clone(), r.clone()],
            });
            Ok(((l, r), change))
        })
    }

    /// Merges `left_id` into its right neighbour `right_id` (the right one survives).
    pub fn merge(&self, left_id: u64, right_id: u64) -> Result<Region, RegionError> {
        self.merge_into(left_id, right_id)
    }

    /// Merges `source_id` into the adjacent `target_id` (either side); the target keeps its id.
    pub fn merge_into(&self, source_id: u64, target_id: u64) -> Result<Region, RegionError> {
        self.apply(|st| {
            let source = st
                .regions
                .get(&source_id)
                .cloned()
                .ok_or(RegionError::NotFound(source_id))?;
            let mut target = st
                .regions
                .get(&target_id)
                .cloned()
                .ok_or(RegionError::NotFound(target_id))?;
            let adjacent = (!source.end.is_empty() && source.end == target.start)
                || (!target.end.is_empty() && target.end == source.start);
            if source_id == target_id || !adjacent || source.store_set() != target.store_set() {
                return Err(RegionError::NotMergeable(source_id, target_id));
            }
            let mut prepared = source.clone();
            prepared.epoch.version += 1;
            prepared.epoch.conf_ver += 1;
            st.by_start.remove(&source.start);
            st.by_start.remove(&target.start);
            st.regions.remove(&source_id);
            if source.end == target.start && !source.end.is_empty() {
                target.start = source.start.clone();
            } else {
                target.end = source.end.clone();
            }
            target.epoch.version = prepared.epoch.version.max(target.epoch.version) + 1;
            st.insert(target.clone());
            let change = RegionChange::Merge {
                source: prepared,
                target: target.clone(),
            };
            Ok((target, Some(change)))
        })
    }

    /// Moves the leader of `region_id` to its peer on `store_id` (a no-op if it leads already).
    pub fn transfer_leader(&self, region_id: u64, store_id: u64) -> Result<Region, RegionError> {
        self.apply(|st| {
            let r = st
                .regions
                .get_mut(&region_id)
                .ok_or(RegionError::NotFound(region_id))?;
            if r.peer_on(store_id).is_none() {
                return Err(RegionError::BadPeer {
                    region_id,
                    store_id,
                });
            }
            let from = r.leader_store;
            if from == store_id {
                return Ok((r.clone(), None));
            }
            r.leader_store = store_id;
            let region = r.clone();
            let change = RegionChange::LeaderTransfer {
                region: region.clone(),
                from_store: from,
                to_store: store_id,
            };
            Ok((region, Some(change)))
        })
    }

    /// Moves a follower peer of `region_id` from `from_store` to `to_store` (two conf changes:
    /// conf_ver + 2; the new peer gets a fresh id). Not published on the broadcast channel.
    pub fn move_peer(
        &self,
        region_id: u64,
        from_store: u64,
        to_store: u64,
    ) -> Result<Region, RegionError> {
        self.apply(|st| {
            if !st.stores.iter().any(|s| s.id == to_store) {
                return Err(RegionError::StoreNotFound(to_store));
            }
            let new_id = st.alloc_id();
            let r = st
                .regions
                .get_mut(&region_id)
                .ok_or(RegionError::NotFound(region_id))?;
            if r.leader_store == from_store || r.peer_on(to_store).is_some() {
                return Err(RegionError::BadPeer {
                    region_id,
                    store_id: to_store,
                });
            }
            let p = r
                .peers
                .iter_mut()
                .find(|p| p.store_id == from_store)
                .ok_or(RegionError::BadPeer {
                    region_id,
                    store_id: from_store,
                })?;
            *p = Peer {
                id: new_id,
                store_id: to_store,
            };
            r.epoch.conf_ver += 2;
            Ok((r.clone(), None))
        })
    }

    /// Splits a random region at a random key inside it, preferring keys that hold data.
    pub fn split_random(&self, rng: &mut impl Rng) -> Result<(Region, Region), RegionError> {
        let regions = self.all();
        let region = regions
            .get(rng.random_range(0..regions.len().max(1)))
            .ok_or(RegionError::NoCandidate("split"))?;
        let (raw_start, raw_end) = region.raw_range();
        let mut probe = raw_start.clone();
        probe.extend((0..4).map(|_| rng.random::<u8>()));
        let mut candidates = self.store.keys_in_range(&probe, &raw_end, 64);
        if candidates.is_empty() {
            candidates = self.store.keys_in_range(&raw_start, &raw_end, 64);
        }
        candidates.retain(|k| k.as_slice() > raw_start.as_slice());
        if candidates.is_empty() && region.contains_raw(&probe) && probe != raw_start {
            candidates.push(probe);
        }
        let key = candidates
            .get(rng.random_range(0..candidates.len().max(1)))
            .ok_or(RegionError::NoCandidate("split"))?;
        self.split(&encode_key(key))
    }

    /// Merges a random pair of adjacent regions on the same stores (random direction).
    pub fn merge_random(&self, rng: &mut impl Rng) -> Result<Region, RegionError> {
        let regions = self.all();
        let pairs: Vec<(u64, u64)> = regions
            .windows(2)
            .filter_map(|w| match w {
                [a, b] if a.store_set() == b.store_set() => Some((a.id, b.id)),
                _ => None,
            })
            .collect();
        let &(a, b) = pairs
            .get(rng.random_range(0..pairs.len().max(1)))
            .ok_or(RegionError::NoCandidate("merge"))?;
        if rng.random_bool(0.5) {
            self.merge_into(a, b)
        } else {
            self.merge_into(b, a)
        }
    }

    /// Moves the leader of a random region to another of its stores.
    pub fn transfer_random(&self, rng: &mut impl Rng) -> Result<Region, RegionError> {
        let regions: Vec<Region> = self
            .all()
            .into_iter()
            .filter(|r| r.peers.len() > 1)
            .collect();
        let r = regions
            .get(rng.random_range(0..regions.len().max(1)))
            .ok_or(RegionError::NoCandidate("transfer"))?;
        let others: Vec<u64> = r
            .peers
            .iter()
            .map(|p| p.store_id)
            .filter(|&s| s != r.leader_store)
            .collect();
        let to = *others
            .get(rng.random_range(0..others.len().max(1)))
            .ok_or(RegionError::NoCandidate("transfer"))?;
        self.transfer_leader(r.id, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{ApplyEvent, ApplyObserver};
    use parking_lot::Mutex;
    use rand::SeedableRng;

    fn mgr(stores: usize, replicas: usize) -> RegionManager {
        RegionManager::new(
            MvccStore::new(),
            &RegionConfig {
                stores,
                replicas,
                split_keys: vec![],
            },
        )
    }

    #[test]
    fn initial_layout_and_ids() {
        let m = mgr(3, 0);
        let all = m.all();
        assert_eq!(all.len(), 1);
        let r = all.first().unwrap();
        assert_eq!(r.id, 4);
        assert_eq!(
            r.peers,
            vec![
                Peer { id: 5, store_id: 1 },
                Peer { id: 6, store_id: 2 },
                Peer { id: 7, store_id: 3 }
            ]
        );
        assert_eq!(r.leader_store, 1);
        assert_eq!(
            r.epoch,
            RegionEpoch {
                conf_ver: 1,
                version: 1
            }
        );
        assert_eq!(m.locate(b"anything").id, 4);
    }

    #[test]
    fn split_keeps_id_on_the_right_and_bumps_versions() {
        let m = mgr(3, 0);
        let mut rx = m.subscribe();
        let key = encode_key(b"m");
        let (l, r) = m.split(&key).unwrap();
        assert_eq!((l.id, r.id), (8, 4));
        assert_eq!(
            (l.start.as_slice(), l.end.as_slice()),
            (&b""[..], key.as_slice())
        );
        assert_eq!(
            (r.start.as_slice(), r.end.as_slice()),
            (key.as_slice(), &b""[..])
        );
        assert_eq!(l.epoch.version, 2);
        assert_eq!(r.epoch.version, 2);
        assert_eq!(
            l.peers.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![9, 10, 11]
        );
        assert_eq!(m.locate_raw(b"a").id, 8);
        assert_eq!(m.locate_raw(b"z").id, 4);
        assert_eq!(m.prev(&encode_key(b"z")).unwrap().id, 8);
        assert!(m.prev(&encode_key(b"a")).is_none());
        match rx.try_recv().unwrap() {
            RegionChange::Split { old, new } => {
                assert_eq!(old.epoch.version, 1);
                assert_eq!(new, vec![l, r]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            m.split(&key),
            Err(RegionError::InvalidSplitKey(key.clone()))
        );
        assert!(m.split(b"not-encoded").is_err());
    }

    #[test]
    fn merge_and_scan() {
        let m = mgr(3, 0);
        let (a, b) = m.split(&encode_key(b"g")).unwrap();
        let (c, d) = m.split(&encode_key(b"p")).unwrap();
        assert_eq!(b.id, d.id);
        assert_eq!(
            m.scan(&encode_key(b"h"), &[], 0)
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            vec![c.id, d.id]
        );
        assert_eq!(m.scan(&[], &encode_key(b"p"), 0).len(), 2);
        assert_eq!(m.scan(&[], &[], 2).len(), 2);
        assert_eq!(
            m.merge(a.id, d.id),
            Err(RegionError::NotMergeable(a.id, d.id))
        );
        let mut rx = m.subscribe();
        let merged = m.merge(c.id, d.id).unwrap();
        assert_eq!(merged.id, d.id);
        assert_eq!(merged.start, encode_key(b"g"));
        assert!(merged.end.is_empty());
        // c and d: version 3 after the second split; c → 4 at PrepareMerge; d → max(4,3)+1 = 5.
        assert_eq!(merged.epoch.version, 5);
        assert!(m.get(c.id).is_none());
        match rx.try_recv().unwrap() {
            RegionChange::Merge { source, target } => {
                assert_eq!(source.id, c.id);
                assert_eq!(
                    source.epoch,
                    RegionEpoch {
                        conf_ver: 2,
                        version: 4
                    }
                );
                assert_eq!(target, merged);
            }
            other => panic!("unexpected {other:?}"),
        }
        // Merge to the left: the left target grows to the right.
        let merged2 = m.merge_into(d.id, a.id).unwrap();
        assert_eq!(
            (merged2.id, merged2.start.len(), merged2.end.len()),
            (a.id, 0, 0)
        );
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn routing_checks() {
        let m = mgr(3, 2);
        let r = m.all().into_iter().next().unwrap();
        let ep = Some(r.epoch);
        assert_eq!(m.check_route(1, r.id, ep).unwrap().id, r.id);
        assert_eq!(
            m.check_route(2, r.id, ep),
            Err(RouteError::NotLeader {
                region_id: r.id,
                leader: r.leader_peer()
            })
        );
        assert_eq!(
            m.check_route(3, r.id, ep),
            Err(RouteError::RegionNotFound(r.id))
        );
        assert_eq!(
            m.check_route(1, 999, ep),
            Err(RouteError::RegionNotFound(999))
        );
        assert_eq!(m.check_route(1, r.id, None), Err(RouteError::MissingEpoch));
        let (_, right) = m.split(&encode_key(b"k")).unwrap();
        assert_eq!(
            m.check_route(1, r.id, ep),
            Err(RouteError::EpochNotMatch {
                current: vec![right.clone()]
            })
        );
        // conf_ver is not checked for reads.
        let moved = m.move_peer(r.id, 2, 3).unwrap();
        assert_eq!(moved.epoch.conf_ver, right.epoch.conf_ver + 2);
        assert!(m.check_route(1, r.id, Some(right.epoch)).is_ok());
        assert_eq!(
            m.check_route(2, r.id, ep),
            Err(RouteError::RegionNotFound(r.id))
        );
        let t = m.transfer_leader(r.id, 3).unwrap();
        assert_eq!(t.leader_store, 3);
        assert_eq!(t.epoch, moved.epoch);
        assert_eq!(
            m.transfer_leader(r.id, 2),
            Err(RegionError::BadPeer {
                region_id: r.id,
                store_id: 2
            })
        );
    }

    #[derive(Default)]
    struct Order(Mutex<Vec<String>>);

    impl ApplyObserver for Order {
        fn on_apply(&self, events: &[ApplyEvent]) {
            self.0.lock().push(format!("apply {}", events.len()));
        }
        fn on_region_change(&self, change: &RegionChange) {
            let kind = match change {
                RegionChange::Split { .. } => "split",
                RegionChange::Merge { .. } => "merge",
                RegionChange::LeaderTransfer { .. } => "transfer",
            };
            self.0.lock().push(kind.to_owned());
        }
    }

    #[test]
    fn region_changes_interleave_with_applies() {
        let store = MvccStore::new();
        let obs = Arc::new(Order::default());
        store.set_observer(obs.clone());
        let m = RegionManager::new(store.clone(), &RegionConfig::default());
        store
            .one_pc(&[crate::mvcc::Mutation::put("a", "1")], 1, 2)
            .unwrap();
        let (l, r) = m.split(&encode_key(b"b")).unwrap();
        store
            .one_pc(&[crate::mvcc::Mutation::put("c", "1")], 3, 4)
            .unwrap();
        m.transfer_leader(l.id, 2).unwrap();
        m.transfer_leader(l.id, 1).unwrap();
        m.merge(l.id, r.id).unwrap();
        assert_eq!(
            *obs.0.lock(),
            vec![
                "apply 1", "split", "apply 1", "transfer", "transfer", "merge"
            ]
        );
    }

    #[test]
    fn random_faults() {
        let store = MvccStore::new();
        for i in 0..200u32 {
            let key = format!("t{i:05}");
            store
                .one_pc(&[crate::mvcc::Mutation::put(key.as_bytes(), "v")], 10, 11)
                .unwrap();
        }
        let m = RegionManager::new(store, &RegionConfig::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20 {
            m.split_random(&mut rng).unwrap();
        }
        assert_eq!(m.len(), 21);
        for _ in 0..10 {
            m.transfer_random(&mut rng).unwrap();
            m.merge_random(&mut rng).unwrap_or_else(|e| panic!("{e}"));
        }
        // The regions still tile the key space.
        let all = m.all();
        assert_eq!(all.len(), m.len());
        assert!(all.first().unwrap().start.is_empty());
        assert!(all.last().unwrap().end.is_empty());
        for w in all.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
    }
}
