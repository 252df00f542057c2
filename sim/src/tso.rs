//! The cluster's timestamp oracle, shared by the PD service, the MVCC workloads and the CDC
//! resolved-ts ticker.
//!
//! PD hands out hybrid timestamps `physical_ms << 18 | logical` that are strictly increasing
//! across the whole cluster. One allocator (an atomic word) gives the same guarantee here: every
//! allocation is a compare-and-swap from the last value to a strictly larger one, whose physical
//! part follows the wall clock when the clock moves ahead, and otherwise just counts up (a burst
//! of more than 2^18 timestamps in one millisecond carries into the physical part, so the oracle
//! briefly runs ahead of the clock instead of repeating itself, as PD does).
//!
//! Batches (`next_batch`) never straddle a physical millisecond, because PD clients rebuild the
//! first timestamp of a batch as `logical - (count - 1)` from the largest one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Number of logical bits in a timestamp.
pub const LOGICAL_BITS: u32 = 18;
/// The largest batch one call can allocate (every logical value of one millisecond).
pub const MAX_BATCH: u32 = 1 << LOGICAL_BITS;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// Composes a timestamp from its physical (Unix ms) and logical parts.
pub fn compose(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << LOGICAL_BITS) | (logical & LOGICAL_MASK)
}

/// Splits a timestamp into (physical Unix ms, logical).
pub fn split(ts: u64) -> (u64, u64) {
    (ts >> LOGICAL_BITS, ts & LOGICAL_MASK)
}

/// A strictly increasing hybrid-timestamp allocator (cheap to clone; clones share state).
#[derive(Clone, Debug)]
pub struct Tso {
    last: Arc<AtomicU64>,
}

impl Default for Tso {
    fn default() -> Self {
        Self::new()
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX >> LOGICAL_BITS))
        .unwrap_or(0)
}

impl Tso {
    /// A fresh oracle; the first timestamp follows the wall clock.
    pub fn new() -> Self {
        Self {
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Allocates one timestamp, strictly larger than every one allocated before.
    pub fn next(&self) -> u64 {
        self.next_batch(1)
    }

    /// Allocates `count` consecutive timestamps (clamped to `1..=MAX_BATCH`) within one physical
    /// millisecond and returns the LARGEST, as PD's TSO stream does.
    pub fn next_batch(&self, count: u32) -> u64 {
        let count = u64::from(count.clamp(1, MAX_BATCH));
        let mut cur = self.last.load(Ordering::Acquire);
        loop {
            let now = compose(wall_clock_ms(), 0);
            let mut first = now.max(cur.saturating_add(1));
            if (first & LOGICAL_MASK) + count > LOGICAL_MASK + 1 {
                // The batch would cross into the next millisecond: start it there.
                first = (first | LOGICAL_MASK).saturating_add(1);
            }
            let last = first.saturating_add(count - 1);
            match self
                .last
                .compare_exchange_weak(cur, last, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return last,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The last allocated timestamp (0 before the first allocation); allocates nothing.
    pub fn current(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_and_near_wall_clock() {
        let tso = Tso::new();
        assert_eq!(tso.current(), 0);
        let a = tso.next();
        let b = tso.next();
        assert!(b > a);
        assert_eq!(tso.current(), b);
        let (phys, _) = split(b);
        let now = wall_clock_ms();
        assert!(phys <= now + 1 && phys + 1000 >= now, "{phys} vs {now}");
    }

    #[test]
    fn batch_returns_largest_and_fits_one_millisecond() {
        let tso = Tso::new();
        let before = tso.next();
        let last = tso.next_batch(10);
        let (_, logical) = split(last);
        assert!(logical >= 9, "first of batch would underflow: {logical}");
        assert!(last - 9 > before);
        assert_eq!(tso.current(), last);
        // A batch that cannot fit in the rest of the millisecond moves to the next one.
        let full = tso.next_batch(MAX_BATCH);
        assert_eq!(split(full).1, LOGICAL_MASK);
        assert!(full > last);
        // count 0 behaves as 1.
        assert_eq!(tso.next_batch(0), tso.current());
    }

    #[test]
    fn concurrent_allocations_are_unique() {
        let tso = Tso::new();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let t = tso.clone();
                std::thread::spawn(move || (0..5000).map(|_| t.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn compose_split_round_trip() {
        assert_eq!(compose(1_700_000_000_000, 5), 445_644_800_000_000_005);
        assert_eq!(split(445_644_800_000_000_005), (1_700_000_000_000, 5));
    }
}
