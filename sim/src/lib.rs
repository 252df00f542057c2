//! The embedded TiKV + PD cluster: serves the real `cdcpb`, `pdpb` and `tikvpb` gRPC services on
//! loopback over an MVCC store with regions, workloads and fault injection. Tidal's upstream in
//! tests, in `tidal demo` and in benchmarks.
//!
//! It is a product feature, not a test double: code that works against it must work against a
//! real cluster, so it follows TiKV's and PD's observable behaviour (wire formats, event order,
//! error kinds and their order) rather than their internals.
#![deny(missing_docs)]

pub mod cdc;
mod chunked_map;
pub mod cluster;
pub mod export;
pub mod kv;
pub mod mvcc;
pub mod pd;
pub mod region;
pub mod tidb;
pub mod tso;
pub mod workload;
