//! Tidal: change data capture for TiDB/TiKV on timely dataflow.
//!
//! This facade re-exports the workspace crates so that a program can depend on `tidal` alone and
//! compose its own pipelines.
#![deny(missing_docs)]

pub mod bench;
pub mod demo;
pub mod pipeline;
pub mod verify;

pub use tidal_control as control;
pub use tidal_dataflow as dataflow;
pub use tidal_ingest as ingest;
pub use tidal_model as model;
pub use tidal_proto as proto;
pub use tidal_sim as sim;
pub use tidal_sinks as sinks;
