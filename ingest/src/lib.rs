//! Production clients for a TiKV/PD cluster: the PD client (members, TSO, regions, GC safe
//! points), the change-feed client (`RegionFeed`: EventFeedV2 streams, the per-region matcher,
//! resolved ts per span), snapshot reads, and the multi-version schema store.
//!
//! This crate talks to TiKV and PD over the network exactly as it would talk to a real cluster;
//! the embedded cluster in `tidal-sim` is only ever a dev-dependency.
#![deny(missing_docs)]

pub mod feed;
pub mod pd;
pub mod schema;
pub mod snapshot;
