//! Exact decimals in TiDB's (MySQL's) binary form.

use serde::{Deserialize, Serialize};

/// An exact decimal value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decimal {
    /// Canonical text form, e.g. `-12.340`.
    text: String,
}
