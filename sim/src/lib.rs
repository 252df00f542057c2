//! The embedded TiKV + PD cluster: serves the real `cdcpb`, `pdpb` and `tikvpb` gRPC services on
//! loopback over an MVCC store with regions, workloads and fault injection. Tidal's upstream in
//! tests, in `tidal demo` and in benchmarks.
#![deny(missing_docs)]
