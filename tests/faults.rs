//! The reliability fault suite: one test per fault, each over a live embedded TiKV+PD cluster
//! running a bank workload (whose total never changes) and sysbench, replicated by a Tidal node
//! through its HTTP API into MariaDB.
//!
//! Each test injects its fault under load, measures the recovery time (from the fault's end to
//! the checkpoint passing a ts taken at that moment, printed as `RECOVERY <ms>`), stops the load,
//! waits for the checkpoint to pass the last upstream commit and then fails if:
//! - a row is missing, extra or different downstream at the checkpoint (`tidal::verify`), which
//!   also catches duplicates beyond what safe-mode replay makes harmless;
//! - the bank total downstream differs from the expected total (a torn or lost transfer);
//! - a sampled checkpoint or resolved ts (read from `GET /api/v2/changefeeds/{id}` every
//!   100 ms throughout) ever went backwards, or the checkpoint passed the resolved ts.
//!
//! Faults that kill a service use a private instance started by the test (own ports and data
//! directory); the shared etcd and MariaDB are never restarted. docs/RELIABILITY.md lists the
//! faults, what Tidal does about each and the measured recovery times.

mod support;

#[path = "faults/harness.rs"]
mod harness;

#[path = "faults/upstream.rs"]
mod upstream;

#[path = "faults/services.rs"]
mod services;

#[path = "faults/process.rs"]
mod process;

#[path = "faults/sink.rs"]
mod sink;
