//! Sinks: where replicated transactions go. MySQL/TiDB, storage files (canal-json, csv), Kafka
//! and a blackhole, behind one `Sink` trait, with encoders kept apart from transports.
#![deny(missing_docs)]
