//! The memory quota of one [`RegionFeed`](super::RegionFeed) (one changefeed).
//!
//! Timely has no backpressure of its own, so the feed provides it: rows held by the feed (prewrites
//! waiting in matchers, committed rows not yet taken by the consumer) are counted here, and once
//! the quota is used the store streams stop reading from TiKV until the consumer has taken
//! enough rows to bring usage under the low-water mark. TCP and gRPC flow control then push the
//! pause back to TiKV.
//!
//! Waiting only helps if the consumer can release something. Prewrites of a huge open transaction
//! can only be released by reading on (its commit is further down the stream), so the streams do
//! not wait while no undelivered output is held: the quota is then exceeded rather than
//! deadlocked, and the overshoot is visible in [`MemoryQuota::used`].
//!
//! The consumer may count what it holds downstream with [`MemoryQuota::acquire`] and
//! [`MemoryQuota::release`] (the dataflow counts its span buffers and its sink drivers' queues
//! this way), so that one quota bounds the rows of the whole changefeed: the streams then stop
//! reading while the consumer is behind, as long as it leaves undelivered output in the queues.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Byte counters shared by every stream and subscription of a feed.
#[derive(Debug)]
pub struct MemoryQuota {
    capacity: usize,
    low_water: usize,
    used: AtomicUsize,
    output: AtomicUsize,
    room: Notify,
}

impl MemoryQuota {
    /// A quota of `capacity` bytes; reading resumes below 80 % of it.
    pub fn new(capacity: usize) -> MemoryQuota {
        MemoryQuota {
            capacity,
            low_water: capacity / 5 * 4,
            used: AtomicUsize::new(0),
            output: AtomicUsize::new(0),
            room: Notify::new(),
        }
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes counted now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes of undelivered output counted now.
    pub fn output(&self) -> usize {
        self.output.load(Ordering::Relaxed)
    }

    /// Counts `bytes` of matcher state.
    pub fn acquire(&self, bytes: usize) {
        if bytes > 0 {
            add(&self.used, bytes);
        }
    }

    /// Releases `bytes` of matcher state.
    pub fn release(&self, bytes: usize) {
        if bytes > 0 {
            sub(&self.used, bytes);
            self.wake_if_room();
        }
    }

    /// Applies a change of matcher state from `before` to `after` bytes.
    pub fn adjust(&self, before: usize, after: usize) {
        if after > before {
            self.acquire(after - before);
        } else {
            self.release(before - after);
        }
    }

    /// Counts `bytes` of output handed to a subscription's queue.
    pub fn acquire_output(&self, bytes: usize) {
        if bytes > 0 {
            add(&self.used, bytes);
            add(&self.output, bytes);
        }
    }

    /// Releases `bytes` of output taken by the consumer (or dropped with its subscription).
    pub fn release_output(&self, bytes: usize) {
        if bytes > 0 {
            sub(&self.output, bytes);
            sub(&self.used, bytes);
            self.wake_if_room();
        }
    }

    /// True if a stream may read on: below capacity, or nothing the consumer could release.
    pub fn has_room(&self) -> bool {
        self.used() < self.capacity || self.output() == 0
    }

    fn can_resume(&self) -> bool {
        self.used() <= self.low_water || self.output() == 0
    }

    fn wake_if_room(&self) {
        if self.can_resume() {
            self.room.notify_waiters();
        }
    }

    /// Waits until a stream may read on. Returns at once when there is room; once the quota is
    /// used, waits until usage falls to the low-water mark (or no output is held).
    pub async fn wait_for_room(&self) {
        if self.has_room() {
            return;
        }
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.can_resume() {
                return;
            }
            notified.await;
        }
    }
}

fn add(counter: &AtomicUsize, bytes: usize) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(v.saturating_add(bytes))
    });
}

fn sub(counter: &AtomicUsize, bytes: usize) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(v.saturating_sub(bytes))
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn counters_add_and_saturate() {
        let q = MemoryQuota::new(100);
        q.acquire(10);
        q.acquire_output(20);
        assert_eq!((q.used(), q.output()), (30, 20));
        q.adjust(10, 4);
        assert_eq!(q.used(), 24);
        q.adjust(4, 9);
        assert_eq!(q.used(), 29);
        q.release_output(50);
        assert_eq!((q.used(), q.output()), (0, 0));
        q.release(5);
        assert_eq!(q.used(), 0);
    }

    #[test]
    fn room_rules() {
        let q = MemoryQuota::new(100);
        q.acquire(150);
        assert!(q.has_room(), "only matcher state: never block");
        q.acquire_output(10);
        assert!(!q.has_room());
        q.release(100);
        assert!(q.has_room());
    }

    #[tokio::test]
    async fn waiter_resumes_only_below_low_water() {
        let q = Arc::new(MemoryQuota::new(100));
        q.acquire_output(100);
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.wait_for_room().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.release_output(10); // 90: above the low-water mark of 80
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        q.release_output(15); // 75
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiter resumed")
            .unwrap();
    }
}
