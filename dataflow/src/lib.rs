//! Changefeeds as timely dataflows: sources fed by region feeds, per-span ordering, the DDL
//! barrier, the sink driver, and the frontier-native watermarks (resolved-ts, checkpoint-ts,
//! LastSyncedTs).
#![deny(missing_docs)]
