//! Sinks: where replicated transactions go. MySQL/TiDB, storage files (canal-json, csv), Kafka
//! and a blackhole, behind one [`Sink`] trait, with encoders kept apart from transports so that a
//! message-queue sink reuses the file sink's canal-json.
//!
//! The dataflow's sink driver is the only caller. It hands over whole upstream transactions in
//! commit order per table, keeps a timely capability for every batch until the sink reports the
//! batch durable, and only then lets the checkpoint pass it. A sink therefore never needs to know
//! about watermarks: it only has to make each batch durable, in an order that keeps every key's
//! changes in commit order, and say when it is done.
#![deny(missing_docs)]

pub mod blackhole;
pub mod encode;
pub mod mysql;
pub mod open;
pub mod sink;
pub mod storage;
pub mod uri;

pub use sink::{FlushReport, Sink, SinkError, SinkTxn, TableDef, TxnBatch};
