//! MySQL dates, times and durations, with TiDB's packed representation.

use serde::{Deserialize, Serialize};

/// A DATE, DATETIME or TIMESTAMP value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Time {
    /// TiDB's packed form.
    packed: u64,
}

/// A TIME value: signed nanoseconds with a fractional-seconds precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Duration {
    /// Signed nanoseconds.
    nanos: i64,
}
