//! [`TableSpan`]: a key range of one table, the unit Tidal subscribes to, tracks and checkpoints.
//!
//! A span is a range of **encoded** (memcomparable) keys, because that is the space PD regions
//! and CDC requests live in (wire.md §4.4): intersecting a span with a region is then a plain
//! byte comparison. Spans need a stable identity that survives restarts and upgrades (it keys
//! persisted checkpoints and routes work to workers), so [`TableSpan::span_id`] is a fixed hash of
//! a fixed encoding. [`SpanSetFingerprint`] summarises a set of spans in constant space, so two
//! processes can check cheaply that they agree on which spans exist.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::tablecodec::table_record_span_encoded;

/// A range `[start, end)` of encoded keys of one table.
///
/// An empty `start` means −∞ and an empty `end` means +∞.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableSpan {
    /// Physical table id (a partition's id for partitioned tables).
    pub table_id: i64,
    /// First encoded key of the span (inclusive); empty = −∞.
    pub start: Vec<u8>,
    /// Encoded key just past the span (exclusive); empty = +∞.
    pub end: Vec<u8>,
    /// Keyspace id (0 for a classic cluster).
    pub keyspace_id: u32,
}

/// Domain tag of version 1 of the span id encoding.
const SPAN_ID_TAG: &[u8] = b"tidal.span.v1";

impl TableSpan {
    /// The whole record range of a table, `[t{id}_r, t{id}_s)` encoded, in a classic cluster.
    pub fn for_table(table_id: i64) -> TableSpan {
        let (start, end) = table_record_span_encoded(table_id);
        TableSpan {
            table_id,
            start,
            end,
            keyspace_id: 0,
        }
    }

    /// A stable 128-bit identity of the span.
    ///
    /// It is xxh3-128 over the tag `tidal.span.v1` followed by `keyspace_id` (u32 BE),
    /// `table_id` (i64 BE), `start.len()` (u64 BE), `start`, `end.len()` (u64 BE), `end`. This
    /// encoding and hash never change across Tidal versions: ids are persisted. A new encoding
    /// would need a new tag and a migration.
    pub fn span_id(&self) -> u128 {
        let mut buf = Vec::with_capacity(
            SPAN_ID_TAG.len() + 4 + 8 + 8 + self.start.len() + 8 + self.end.len(),
        );
        buf.extend_from_slice(SPAN_ID_TAG);
        buf.extend_from_slice(&self.keyspace_id.to_be_bytes());
        buf.extend_from_slice(&self.table_id.to_be_bytes());
        buf.extend_from_slice(&(self.start.len() as u64).to_be_bytes());
        buf.extend_from_slice(&self.start);
        buf.extend_from_slice(&(self.end.len() as u64).to_be_bytes());
        buf.extend_from_slice(&self.end);
        xxhash_rust::xxh3::xxh3_128(&buf)
    }

    /// A well-mixed 64-bit hash for routing spans to workers: the two halves of
    /// [`TableSpan::span_id`] xor-ed. Stable like the id.
    pub fn hash64(&self) -> u64 {
        let id = self.span_id();
        (id as u64) ^ ((id >> 64) as u64)
    }

    /// True if the encoded key `k` lies in `[start, end)`.
    pub fn contains_encoded_key(&self, k: &[u8]) -> bool {
        self.start.as_slice() <= k && (self.end.is_empty() || k < self.end.as_slice())
    }

    /// The part of this span inside the encoded range `[start, end)` (empty start = −∞, empty
    /// end = +∞), or `None` if they do not overlap. Used to cut a span along region boundaries.
    pub fn intersect(&self, start: &[u8], end: &[u8]) -> Option<TableSpan> {
        let new_start = self.start.as_slice().max(start);
        let new_end = match (self.end.is_empty(), end.is_empty()) {
            (true, _) => end,
            (false, true) => self.end.as_slice(),
            (false, false) => self.end.as_slice().min(end),
        };
        if !new_end.is_empty() && new_start >= new_end {
            return None;
        }
        Some(TableSpan {
            table_id: self.table_id,
            start: new_start.to_vec(),
            end: new_end.to_vec(),
            keyspace_id: self.keyspace_id,
        })
    }

    /// Splits the span at an encoded key strictly inside it into `[start, key)` and `[key, end)`;
    /// `None` if the key is not strictly inside (a split would leave an empty half).
    pub fn split_at(&self, encoded_key: &[u8]) -> Option<(TableSpan, TableSpan)> {
        if encoded_key <= self.start.as_slice() || !self.contains_encoded_key(encoded_key) {
            return None;
        }
        let left = TableSpan {
            end: encoded_key.to_vec(),
            ..self.clone()
        };
        let right = TableSpan {
            start: encoded_key.to_vec(),
            ..self.clone()
        };
        Some((left, right))
    }
}

struct HexKey<'a>(&'a [u8], &'static str);

impl fmt::Debug for HexKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(self.1);
        }
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TableSpan {
    /// Shows the keys in hex (`-inf`/`+inf` when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableSpan")
            .field("table_id", &self.table_id)
            .field("start", &HexKey(&self.start, "-inf"))
            .field("end", &HexKey(&self.end, "+inf"))
            .field("keyspace_id", &self.keyspace_id)
            .finish()
    }
}

/// An order-independent summary of a set of span ids: how many, their xor and their wrapping sum.
///
/// Two sets with equal fingerprints are, with overwhelming probability, equal. Inserting and
/// removing are O(1) and inverse to each other, so a fingerprint can be maintained incrementally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SpanSetFingerprint {
    /// Number of ids in the set.
    pub count: u64,
    /// Xor of all ids.
    pub xor: u128,
    /// Wrapping sum of all ids.
    pub sum: u128,
}

impl SpanSetFingerprint {
    /// Adds one span id.
    pub fn insert(&mut self, span_id: u128) {
        self.count = self.count.wrapping_add(1);
        self.xor ^= span_id;
        self.sum = self.sum.wrapping_add(span_id);
    }

    /// Removes one span id previously inserted.
    pub fn remove(&mut self, span_id: u128) {
        self.count = self.count.wrapping_sub(1);
        self.xor ^= span_id;
        self.sum = self.sum.wrapping_sub(span_id);
    }

    /// The fingerprint of a collection of span ids.
    pub fn from_ids(ids: impl IntoIterator<Item = u128>) -> Self {
        let mut fp = Self::default();
        for id in ids {
            fp.insert(id);
        }
        fp
    }

    /// True for the fingerprint of the empty set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::bytes::encode_key;
    use crate::tablecodec::encode_row_key_int;
    use proptest::prelude::*;

    #[test]
    fn for_table_and_debug() {
        let s = TableSpan::for_table(100);
        assert_eq!(
            hex::encode(&s.start),
            "7480000000000000ff645f720000000000fa"
        );
        assert_eq!(hex::encode(&s.end), "7480000000000000ff645f730000000000fa");
        assert_eq!(
            format!("{s:?}"),
            "TableSpan { table_id: 100, start: 7480000000000000ff645f720000000000fa, \
             end: 7480000000000000ff645f730000000000fa, keyspace_id: 0 }"
        );
        let unbounded = TableSpan {
            table_id: 1,
            start: vec![],
            end: vec![],
            keyspace_id: 0,
        };
        assert_eq!(
            format!("{unbounded:?}"),
            "TableSpan { table_id: 1, start: -inf, end: +inf, keyspace_id: 0 }"
        );
        assert!(s.contains_encoded_key(&encode_key(&encode_row_key_int(100, 1))));
        assert!(!s.contains_encoded_key(&encode_key(&encode_row_key_int(101, 1))));
        assert!(!s.contains_encoded_key(&s.end));
        assert!(s.contains_encoded_key(&s.start));
    }

    #[test]
    fn span_id_is_pinned() {
        // These values must never change: span ids are persisted.
        let s = TableSpan::for_table(100);
        assert_eq!(s.span_id(), PINNED_ID_100);
        assert_eq!(
            s.hash64(),
            (PINNED_ID_100 as u64) ^ ((PINNED_ID_100 >> 64) as u64)
        );
        let other = TableSpan {
            keyspace_id: 1,
            ..s.clone()
        };
        assert_ne!(other.span_id(), s.span_id());
        // Length prefixes keep the boundary between start and end unambiguous.
        let a = TableSpan {
            table_id: 1,
            start: b"ab".to_vec(),
            end: b"c".to_vec(),
            keyspace_id: 0,
        };
        let b = TableSpan {
            table_id: 1,
            start: b"a".to_vec(),
            end: b"bc".to_vec(),
            keyspace_id: 0,
        };
        assert_ne!(a.span_id(), b.span_id());
    }

    const PINNED_ID_100: u128 = 137_196_641_349_890_102_628_525_718_755_180_760_170;

    #[test]
    fn intersect_and_split() {
        let s = TableSpan::for_table(100);
        let mid = encode_key(&encode_row_key_int(100, 50));
        // Region covering everything.
        assert_eq!(s.intersect(&[], &[]), Some(s.clone()));
        // Region ending inside.
        let left = s.intersect(&[], &mid).unwrap();
        assert_eq!(
            (left.start.clone(), left.end.clone()),
            (s.start.clone(), mid.clone())
        );
        // Region starting inside and unbounded above.
        let right = s.intersect(&mid, &[]).unwrap();
        assert_eq!(
            (right.start.clone(), right.end.clone()),
            (mid.clone(), s.end.clone())
        );
        // Disjoint regions, touching boundaries.
        assert_eq!(s.intersect(&s.end, &[]), None);
        assert_eq!(s.intersect(&[], &s.start), None);
        assert_eq!(s.split_at(&mid), Some((left, right)));
        assert_eq!(s.split_at(&s.start), None);
        assert_eq!(s.split_at(&s.end), None);
        // Unbounded span.
        let all = TableSpan {
            table_id: 0,
            start: vec![],
            end: vec![],
            keyspace_id: 0,
        };
        assert_eq!(
            all.intersect(b"a", b"b").map(|x| (x.start, x.end)),
            Some((b"a".to_vec(), b"b".to_vec()))
        );
        assert!(all.split_at(b"").is_none());
        assert!(all.split_at(b"k").is_some());
    }

    #[test]
    fn serde_round_trip() {
        let s = TableSpan::for_table(7);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<TableSpan>(&json).unwrap(), s);
        let fp = SpanSetFingerprint::from_ids([u128::MAX, 1]);
        assert_eq!(fp.sum, 0);
        assert_eq!(fp.xor, u128::MAX - 1);
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(
            json,
            format!("{{\"count\":2,\"xor\":{},\"sum\":0}}", u128::MAX - 1)
        );
        assert_eq!(
            serde_json::from_str::<SpanSetFingerprint>(&json).unwrap(),
            fp
        );
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..4, 0..4)
    }

    proptest! {
        #[test]
        fn intersect_matches_membership(s in key(), e in key(), rs in key(), re in key(), k in key()) {
            let span = TableSpan { table_id: 1, start: s, end: e, keyspace_id: 0 };
            let in_region = rs.as_slice() <= k.as_slice() && (re.is_empty() || k < re);
            let expected = span.contains_encoded_key(&k) && in_region;
            let got = span.intersect(&rs, &re).is_some_and(|x| x.contains_encoded_key(&k));
            prop_assert_eq!(expected, got);
        }

        #[test]
        fn fingerprint_is_order_independent(ids in proptest::collection::vec(any::<u128>(), 0..20),
                                            extra: u128, seed: u64) {
            let fp = SpanSetFingerprint::from_ids(ids.iter().copied());
            let mut shuffled = ids.clone();
            // Deterministic permutation from the seed.
            let n = shuffled.len();
            if n > 1 {
                let mut x = seed;
                for i in (1..n).rev() {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    shuffled.swap(i, (x >> 33) as usize % (i + 1));
                }
            }
            prop_assert_eq!(SpanSetFingerprint::from_ids(shuffled.iter().rev().copied()), fp);
            prop_assert_eq!(fp.count, ids.len() as u64);
            let mut g = fp;
            g.insert(extra);
            prop_assert_ne!(g, fp);
            g.remove(extra);
            prop_assert_eq!(g, fp);
            for id in &ids {
                g.remove(*id);
            }
            prop_assert!(g.is_empty());
        }
    }
}
