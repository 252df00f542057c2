//! Per-region subscription state and the translation from MVCC apply events to `cdcpb` rows.
//!
//! A *delegate* is TiKV's name for "everything CDC tracks about one region on one store": the
//! region as it was when the subscriptions were made and the list of *downstreams* (one per
//! `(stream, request_id)` that subscribed to the region). Each downstream has its own observed
//! range (the intersection of the region and the requested range), its own loop filter and its
//! own resolved-ts progress, so the same apply event can produce different rows for different
//! downstreams.
//!
//! Everything in this module is synchronous and lock-free by itself; the hub holds its state lock
//! while it calls in here. The txn_source filters mirror TiKV exactly, including the quirk that
//! *any* bit at or above bit 8 counts as "lossy DDL reorg" (TiKV tests `source >> 8 != 0`), so
//! bit 16 (lightning import) and the reserved bits are dropped as well.

use std::sync::Arc;

use tidal_model::codec::bytes::{decode_key, encode_key};
use tidal_proto::cdcpb::{self, event};
use tidal_proto::{errorpb, metapb};

use super::sink::Conn;

use crate::region::Region;

/// Rows with any of these bits set come from a CDC sink (bidirectional replication); they are
/// dropped when the downstream asked for `filter_loop`.
const CDC_WRITE_SOURCE_MASK: u64 = 0xFF;
/// Bits 0..8 are the CDC write source; TiKV treats everything above as "lossy DDL reorg".
const LOSSY_DDL_REORG_SHIFT: u32 = 8;
/// Lightning physical import marker (bit 16).
const LIGHTNING_PHYSICAL_IMPORT_BIT: u64 = 1 << 16;

/// Whether a row with this txn_source is delivered to a downstream with the given loop filter.
pub(crate) fn txn_source_passes(txn_source: u64, filter_loop: bool) -> bool {
    if txn_source & LIGHTNING_PHYSICAL_IMPORT_BIT != 0 {
        return false;
    }
    if txn_source >> LOSSY_DDL_REORG_SHIFT != 0 {
        return false;
    }
    !(filter_loop && txn_source & CDC_WRITE_SOURCE_MASK != 0)
}

/// The key range one downstream observes, kept in both forms: encoded bounds for routing (region
/// boundaries are encoded) and raw bounds for the MVCC store (whose keys are raw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObservedRange {
    /// Encoded inclusive start (empty = unbounded).
    pub enc_start: Vec<u8>,
    /// Encoded exclusive end (empty = unbounded).
    pub enc_end: Vec<u8>,
    /// Raw inclusive start (empty = unbounded).
    pub raw_start: Vec<u8>,
    /// Raw exclusive end (empty = unbounded).
    pub raw_end: Vec<u8>,
    /// Both bounds decoded (or are unbounded), so the raw bounds order raw keys exactly as the
    /// encoded ones order encoded keys (the encoding preserves order) and routing can compare
    /// raw keys without encoding them.
    pub raw_exact: bool,
}

impl ObservedRange {
    /// The intersection of the region `[region_start, region_end)` and the requested range
    /// `[req_start, req_end)`, all encoded. As TiKV does, a requested bound that does not decode
    /// as a memcomparable key makes the downstream observe the whole region. Region bounds that
    /// do not decode (they always do when produced by `encode_key`) fall back to unbounded raw
    /// bounds; routing still uses the encoded bounds, so nothing outside the region leaks.
    pub(crate) fn new(
        region_start: &[u8],
        region_end: &[u8],
        req_start: &[u8],
        req_end: &[u8],
    ) -> Self {
        let req_ok =
            decode_key(req_start).is_ok() && (req_end.is_empty() || decode_key(req_end).is_ok());
        let (mut start, mut end) = (region_start.to_vec(), region_end.to_vec());
        if req_ok {
            if req_start > region_start {
                start = req_start.to_vec();
            }
            if !req_end.is_empty() && (end.is_empty() || req_end < end.as_slice()) {
                end = req_end.to_vec();
            }
        }
        let (raw_start, raw_end, raw_exact) = match raw_bounds(&start, &end) {
            Some((s, e)) => (s, e, true),
            None => (
                decode_key(&start).unwrap_or_default(),
                decode_key(&end).unwrap_or_default(),
                false,
            ),
        };
        ObservedRange {
            enc_start: start,
            enc_end: end,
            raw_start,
            raw_end,
            raw_exact,
        }
    }

    /// Whether the raw key lies inside the range, when that can be told from raw bounds.
    pub(crate) fn contains_raw(&self, raw_key: &[u8]) -> Option<bool> {
        self.raw_exact
            .then(|| in_raw_bounds(&self.raw_start, &self.raw_end, raw_key))
    }

    /// Whether the encoded key lies inside the range.
    pub(crate) fn contains_encoded(&self, enc_key: &[u8]) -> bool {
        enc_key >= self.enc_start.as_slice()
            && (self.enc_end.is_empty() || enc_key < self.enc_end.as_slice())
    }
}

/// Whether the encoded key lies inside `[start, end)` (encoded, empty end = unbounded).
pub(crate) fn region_contains(start: &[u8], end: &[u8], enc_key: &[u8]) -> bool {
    enc_key >= start && (end.is_empty() || enc_key < end)
}

/// The raw form of encoded bounds `[start, end)` (empty = unbounded), if both decode exactly.
/// An end that is the encoding of the empty key has no raw form (an empty raw end means
/// unbounded), so such bounds stay encoded; a start that is one is the same as unbounded.
pub(crate) fn raw_bounds(start: &[u8], end: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let decode = |b: &[u8]| {
        if b.is_empty() {
            Some(Vec::new())
        } else {
            decode_key(b).ok()
        }
    };
    let raw_end = decode(end)?;
    if raw_end.is_empty() && !end.is_empty() {
        return None;
    }
    Some((decode(start)?, raw_end))
}

/// Whether the raw key lies inside raw bounds `[start, end)` (empty end = unbounded).
pub(crate) fn in_raw_bounds(start: &[u8], end: &[u8], raw_key: &[u8]) -> bool {
    raw_key >= start && (end.is_empty() || raw_key < end)
}

/// Lifecycle of a downstream, as in TiKV: it accepts change events from the moment it is attached
/// (initializing) and resolved timestamps only after its INITIALIZED row was queued (normal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DownstreamState {
    /// Attached, initial scan still being emitted.
    Initializing,
    /// Initial scan finished; resolved ts may advance.
    Normal,
}

/// One subscriber of a region: a `(stream, request_id)` pair.
#[derive(Debug)]
pub(crate) struct Downstream {
    /// Unique id (never reused), so a stale scan task cannot write into a newer subscription.
    pub id: u64,
    /// The stream the subscription lives on.
    pub conn: Arc<Conn>,
    /// Client-chosen request id.
    pub request_id: u64,
    /// What part of the region is observed.
    pub range: ObservedRange,
    /// Drop rows carrying CDC write-source bits.
    pub filter_loop: bool,
    /// Initializing or normal.
    pub state: DownstreamState,
    /// Last resolved ts computed for it (monotone).
    pub advanced_to: u64,
    /// Whether its initial scan still counts against the store's pending-scan limit.
    pub scan_pending: bool,
}

/// All subscriptions of one region.
#[derive(Debug)]
pub(crate) struct Delegate {
    /// The region as known when the subscriptions were accepted; any later change of it ends
    /// every downstream, so this never goes stale while downstreams exist.
    pub region: Region,
    /// The region's bounds decoded, when both decode (routing then compares raw keys).
    pub raw_region: Option<(Vec<u8>, Vec<u8>)>,
    /// Current subscribers.
    pub downstreams: Vec<Downstream>,
}

impl Delegate {
    /// Whether the region holds the row with raw key `raw`.
    pub(crate) fn contains(&self, raw: &[u8], key: &mut RoutingKey) -> bool {
        match &self.raw_region {
            Some((start, end)) => in_raw_bounds(start, end, raw),
            None => region_contains(&self.region.start, &self.region.end, key.encoded(raw)),
        }
    }
}

/// A row key's encoded form for routing, built only when a bound cannot be compared raw (in
/// one buffer reused across rows).
#[derive(Debug, Default)]
pub(crate) struct RoutingKey {
    encoded: Vec<u8>,
    ready: bool,
}

impl RoutingKey {
    /// Forgets the previous row's key.
    pub(crate) fn reset(&mut self) {
        self.ready = false;
    }

    /// The encoded form of `raw` (the key since the last reset).
    pub(crate) fn encoded(&mut self, raw: &[u8]) -> &[u8] {
        if !self.ready {
            self.encoded.clear();
            tidal_model::codec::bytes::encode_bytes(&mut self.encoded, raw);
            self.ready = true;
        }
        &self.encoded
    }
}

impl Downstream {
    /// Whether the downstream observes the row with raw key `raw`.
    pub(crate) fn observes(&self, raw: &[u8], key: &mut RoutingKey) -> bool {
        self.range
            .contains_raw(raw)
            .unwrap_or_else(|| self.range.contains_encoded(key.encoded(raw)))
    }
}

/// The INITIALIZED marker row: every field but the type is zero or empty.
pub(crate) fn initialized_row() -> event::Row {
    event::Row {
        r#type: event::LogType::Initialized as i32,
        ..Default::default()
    }
}

/// Approximate payload size of a row, as TiKV measures it for the 32 KiB Entries limit.
pub(crate) fn row_size(row: &event::Row) -> usize {
    row.key
        .len()
        .saturating_add(row.value.len())
        .saturating_add(row.old_value.len())
}

/// Packs rows into `Event`s whose Entries stay under `max_bytes` (a new Event is started when
/// adding a row would reach the limit; a single oversized row still gets its own Event).
pub(crate) fn pack_rows(
    region_id: u64,
    request_id: u64,
    rows: Vec<event::Row>,
    max_bytes: usize,
) -> Vec<cdcpb::Event> {
    let total = rows
        .iter()
        .fold(0usize, |acc, r| acc.saturating_add(row_size(r)));
    if total < max_bytes || rows.len() < 2 {
        // The common case: everything fits one Event, so the rows move over as they are.
        return if rows.is_empty() {
            Vec::new()
        } else {
            vec![entries_event(region_id, request_id, rows)]
        };
    }
    let mut out = Vec::new();
    let mut cur: Vec<event::Row> = Vec::new();
    let mut cur_bytes = 0usize;
    for row in rows {
        let size = row_size(&row);
        if !cur.is_empty() && cur_bytes.saturating_add(size) >= max_bytes {
            out.push(entries_event(
                region_id,
                request_id,
                std::mem::take(&mut cur),
            ));
            cur_bytes = 0;
        }
        cur_bytes = cur_bytes.saturating_add(size);
        cur.push(row);
    }
    if !cur.is_empty() {
        out.push(entries_event(region_id, request_id, cur));
    }
    out
}

fn entries_event(region_id: u64, request_id: u64, rows: Vec<event::Row>) -> cdcpb::Event {
    cdcpb::Event {
        region_id,
        request_id,
        event: Some(event::Event::Entries(event::Entries { entries: rows })),
        ..Default::default()
    }
}

/// An error event for `(request_id, region_id)`.
pub(crate) fn error_event(region_id: u64, request_id: u64, error: cdcpb::Error) -> cdcpb::Event {
    cdcpb::Event {
        region_id,
        request_id,
        event: Some(event::Event::Error(error)),
        ..Default::default()
    }
}

/// The legacy per-region resolved ts event (clients without batch resolved ts).
pub(crate) fn legacy_resolved_event(region_id: u64, request_id: u64, ts: u64) -> cdcpb::Event {
    cdcpb::Event {
        region_id,
        request_id,
        event: Some(event::Event::ResolvedTs(ts)),
        ..Default::default()
    }
}

/// The `metapb.Region` for a sim region.
pub(crate) fn region_pb(region: &Region) -> metapb::Region {
    metapb::Region {
        id: region.id,
        start_key: region.start.clone(),
        end_key: region.end.clone(),
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: region.epoch.conf_ver,
            version: region.epoch.version,
        }),
        peers: region
            .peers
            .iter()
            .map(|p| metapb::Peer {
                id: p.id,
                store_id: p.store_id,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The leader peer of a region, if its leader store holds a peer.
pub(crate) fn leader_pb(region: &Region) -> Option<metapb::Peer> {
    region
        .peers
        .iter()
        .find(|p| p.store_id == region.leader_store)
        .map(|p| metapb::Peer {
            id: p.id,
            store_id: p.store_id,
            ..Default::default()
        })
}

/// Builders for every `cdcpb.Error` variant the sim emits.
pub(crate) mod errors {
    use super::*;

    /// `cluster_id_mismatch{current, request}`.
    pub(crate) fn cluster_id_mismatch(current: u64, request: u64) -> cdcpb::Error {
        cdcpb::Error {
            cluster_id_mismatch: Some(cdcpb::ClusterIdMismatch { current, request }),
            ..Default::default()
        }
    }

    /// `compatibility{required_version: "6.2.0"}` (unsupported kv_api).
    pub(crate) fn compatibility() -> cdcpb::Error {
        cdcpb::Error {
            compatibility: Some(cdcpb::Compatibility {
                required_version: "6.2.0".to_owned(),
            }),
            ..Default::default()
        }
    }

    /// `server_is_busy` for too many pending incremental scans.
    pub(crate) fn server_is_busy() -> cdcpb::Error {
        cdcpb::Error {
            server_is_busy: Some(errorpb::ServerIsBusy {
                reason: "too many pending incremental scans".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `region_not_found{region_id}`.
    pub(crate) fn region_not_found(region_id: u64) -> cdcpb::Error {
        cdcpb::Error {
            region_not_found: Some(errorpb::RegionNotFound { region_id }),
            ..Default::default()
        }
    }

    /// `duplicate_request{region_id}`.
    pub(crate) fn duplicate_request(region_id: u64) -> cdcpb::Error {
        cdcpb::Error {
            duplicate_request: Some(cdcpb::DuplicateRequest { region_id }),
            ..Default::default()
        }
    }

    /// `not_leader{region_id, leader}`.
    pub(crate) fn not_leader(region_id: u64, leader: Option<metapb::Peer>) -> cdcpb::Error {
        cdcpb::Error {
            not_leader: Some(errorpb::NotLeader { region_id, leader }),
            ..Default::default()
        }
    }

    /// `epoch_not_match{current_regions}`.
    pub(crate) fn epoch_not_match(current_regions: Vec<metapb::Region>) -> cdcpb::Error {
        cdcpb::Error {
            epoch_not_match: Some(errorpb::EpochNotMatch { current_regions }),
            ..Default::default()
        }
    }

    /// `congested{region_id}`.
    pub(crate) fn congested(region_id: u64) -> cdcpb::Error {
        cdcpb::Error {
            congested: Some(cdcpb::Congested { region_id }),
            ..Default::default()
        }
    }
}

/// The encoded form of a raw key, for routing.
pub(crate) fn enc(raw: &[u8]) -> Vec<u8> {
    encode_key(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Routing by raw keys against decoded bounds decides exactly as routing by encoded
        /// keys against the encoded bounds, for ranges whose bounds decode; ranges whose bounds
        /// do not decode fall back to the encoded comparison.
        #[test]
        fn raw_routing_matches_encoded_routing(
            a in prop::collection::vec(0u8..4, 0..12),
            b in prop::collection::vec(0u8..4, 0..12),
            k in prop::collection::vec(0u8..4, 0..12),
            unbounded_end in any::<bool>(),
            garbage_end in any::<bool>(),
        ) {
            let start = encode_key(&a);
            let end = if unbounded_end {
                Vec::new()
            } else if garbage_end {
                // Not a memcomparable encoding: the 9th byte is not a valid marker.
                let mut e = encode_key(&b);
                e.truncate(5);
                e
            } else {
                encode_key(&b)
            };
            let range = ObservedRange::new(&start, &end, &[], &[]);
            let end_is_empty_key = !unbounded_end && !garbage_end && b.is_empty();
            prop_assert_eq!(
                range.raw_exact,
                unbounded_end || !(garbage_end || end_is_empty_key)
            );
            let enc_k = encode_key(&k);
            let by_encoding = range.contains_encoded(&enc_k);
            let mut key = RoutingKey::default();
            let ds_like = range
                .contains_raw(&k)
                .unwrap_or_else(|| range.contains_encoded(key.encoded(&k)));
            prop_assert_eq!(ds_like, by_encoding);
            if let Some((rs, re)) = raw_bounds(&start, &end) {
                prop_assert_eq!(
                    in_raw_bounds(&rs, &re, &k),
                    region_contains(&start, &end, &enc_k)
                );
            }
        }
    }

    #[test]
    fn txn_source_filters_match_tikv() {
        assert!(txn_source_passes(0, true));
        assert!(txn_source_passes(0, false));
        // CDC write source: dropped only with filter_loop.
        assert!(txn_source_passes(1, false));
        assert!(!txn_source_passes(1, true));
        assert!(!txn_source_passes(0xFF, true));
        // Lossy DDL reorg (bits 8..16): always dropped.
        assert!(!txn_source_passes(1 << 8, false));
        assert!(!txn_source_passes(0xFF00, false));
        // Lightning import (bit 16): always dropped.
        assert!(!txn_source_passes(1 << 16, false));
        // Reserved high bits count as "reorg" in TiKV's check.
        assert!(!txn_source_passes(1 << 40, false));
    }

    #[test]
    fn observed_range_intersects_in_encoded_space() {
        let (rs, re) = (encode_key(b"b"), encode_key(b"m"));
        // Request wider than the region: the region wins.
        let r = ObservedRange::new(&rs, &re, &encode_key(b"a"), &[]);
        assert_eq!(
            (r.raw_start.as_slice(), r.raw_end.as_slice()),
            (&b"b"[..], &b"m"[..])
        );
        // Request inside the region.
        let r = ObservedRange::new(&rs, &re, &encode_key(b"c"), &encode_key(b"d"));
        assert_eq!(
            (r.raw_start.as_slice(), r.raw_end.as_slice()),
            (&b"c"[..], &b"d"[..])
        );
        assert!(r.contains_encoded(&encode_key(b"c")));
        assert!(r.contains_encoded(&encode_key(b"c\xff")));
        assert!(!r.contains_encoded(&encode_key(b"d")));
        assert!(!r.contains_encoded(&encode_key(b"b")));
        // Unbounded region, bounded request.
        let r = ObservedRange::new(&[], &[], &encode_key(b"x"), &[]);
        assert_eq!(r.enc_start, encode_key(b"x"));
        assert!(r.enc_end.is_empty() && r.raw_end.is_empty());
    }

    #[test]
    fn undecodable_request_observes_whole_region() {
        let (rs, re) = (encode_key(b"b"), encode_key(b"m"));
        // Raw keys are not valid memcomparable encodings.
        let r = ObservedRange::new(&rs, &re, b"c", b"d");
        assert_eq!(r.enc_start, rs);
        assert_eq!(r.enc_end, re);
        assert_eq!(r.raw_start, b"b".to_vec());
        assert_eq!(r.raw_end, b"m".to_vec());
    }

    #[test]
    fn rows_are_packed_under_the_byte_limit() {
        let rows: Vec<event::Row> = (0..10u8)
            .map(|i| event::Row {
                key: vec![i],
                value: vec![0; 99],
                ..Default::default()
            })
            .collect();
        // Each row is 100 bytes; a limit of 350 gives 3 rows per event (300 + 100 reaches 400 > 350).
        let events = pack_rows(7, 9, rows, 350);
        let sizes: Vec<usize> = events
            .iter()
            .map(|e| match &e.event {
                Some(event::Event::Entries(en)) => en.entries.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, vec![3, 3, 3, 1]);
        assert!(events.iter().all(|e| e.region_id == 7 && e.request_id == 9));
        // An oversized single row still goes out, alone.
        let big = vec![
            event::Row {
                value: vec![0; 1000],
                ..Default::default()
            },
            event::Row::default(),
        ];
        assert_eq!(pack_rows(1, 1, big, 350).len(), 2);
        assert!(pack_rows(1, 1, Vec::new(), 350).is_empty());
        // Rows that fit together stay in one Event, in order.
        let fit: Vec<event::Row> = (0..3u8)
            .map(|i| event::Row {
                key: vec![i],
                value: vec![0; 99],
                ..Default::default()
            })
            .collect();
        let one = pack_rows(2, 3, fit.clone(), 301);
        assert_eq!(one.len(), 1);
        assert_eq!(
            one[0].event,
            Some(event::Event::Entries(event::Entries {
                entries: fit.clone()
            }))
        );
        // At exactly the limit the last row starts a new Event.
        assert_eq!(pack_rows(2, 3, fit, 300).len(), 2);
    }

    #[test]
    fn initialized_row_is_bare() {
        let init = initialized_row();
        assert_eq!(init.r#type, event::LogType::Initialized as i32);
        assert!(init.key.is_empty() && init.start_ts == 0 && init.commit_ts == 0);
    }
}
