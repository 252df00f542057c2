//! The control plane beside the dataflows: metadata store (etcd or embedded), epoch fencing,
//! GC safe points, the coordinator, the TiCDC-compatible HTTP API and metrics.
#![deny(missing_docs)]

pub mod api;
pub mod coordinator;
pub mod gc;
pub mod meta;
pub mod metrics;
pub mod server;
pub mod service;
