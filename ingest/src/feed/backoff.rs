//! Retry delays for region errors and broken streams.
//!
//! TiKV asks clients to back off when it is busy (`server_is_busy`, `congested`), and a store
//! that dropped its stream may be restarting. Retrying immediately would hammer it, and retrying
//! in lock-step from thousands of regions would come back as one burst; so delays grow
//! exponentially per region and carry jitter.

use std::time::Duration;

use rand::Rng;

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// First retry delay (TiCDC: 50 ms).
    pub base: Duration,
    /// Largest retry delay (TiCDC: 2 s).
    pub max: Duration,
    /// Delay before regions of a broken stream are retried (TiCDC: 1 s).
    pub reconnect: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_millis(50),
            max: Duration::from_secs(2),
            reconnect: Duration::from_secs(1),
        }
    }
}

impl BackoffConfig {
    /// The delay before retry number `attempt` (0-based), without jitter:
    /// `min(max, base · 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry number `attempt`, with "equal jitter": uniformly in
    /// `[ceiling/2, ceiling]`, and never below `server_hint` (a `backoff_ms` sent by TiKV).
    pub fn delay(&self, attempt: u32, server_hint: Duration) -> Duration {
        let ceil = self.ceiling(attempt);
        let half = ceil / 2;
        let span = u64::try_from((ceil - half).as_micros()).unwrap_or(u64::MAX);
        let jitter = if span == 0 {
            0
        } else {
            rand::rng().random_range(0..=span)
        };
        (half + Duration::from_micros(jitter)).max(server_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_and_caps() {
        let b = BackoffConfig::default();
        assert_eq!(b.ceiling(0), Duration::from_millis(50));
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(5), Duration::from_millis(1600));
        assert_eq!(b.ceiling(6), Duration::from_secs(2));
        assert_eq!(b.ceiling(200), Duration::from_secs(2));
    }

    #[test]
    fn delay_is_jittered_within_bounds_and_respects_hint() {
        let b = BackoffConfig::default();
        for attempt in 0..10 {
            let d = b.delay(attempt, Duration::ZERO);
            assert!(
                d >= b.ceiling(attempt) / 2 && d <= b.ceiling(attempt),
                "{d:?}"
            );
        }
        assert_eq!(b.delay(0, Duration::from_secs(5)), Duration::from_secs(5));
        let zero = BackoffConfig {
            base: Duration::ZERO,
            ..b
        };
        assert_eq!(zero.delay(3, Duration::ZERO), Duration::ZERO);
    }
}
