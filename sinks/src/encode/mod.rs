//! Row encoders: the byte formats a sink writes, kept apart from the transports that carry them.
//!
//! The storage sink writes these bytes into files today; a message-queue sink will put the same
//! bytes into messages later. Keeping the formats here, behind [`RowEncoder`], means both share
//! one implementation of TiCDC's canal-json and csv rules (value rendering, quoting, type names),
//! and that [`reader`] can check the files against the same rules from the other side.
//!
//! Formats (field-compatible with TiCDC's storage sink output):
//! - [`canal_json`]: one canal-json object per row, each followed by the terminator.
//! - [`csv`]: one csv record per row (two for an update with `output-old-value`), each
//!   followed by the terminator.
//!
//! [`reader`] is the independent decoder used by tests and by verification tools.

pub mod canal_json;
pub mod csv;
pub mod reader;
pub mod types;

use std::fmt;

use tidal_model::DdlEvent;

use crate::sink::{SinkError, SinkTxn};

/// The line terminator TiCDC writes by default after every canal-json message and csv record.
pub const CRLF: &str = "\r\n";

/// Which encoding a sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Canal-JSON, with TiCDC's optional `_tidb` extension.
    CanalJson,
    /// TiCDC's CSV.
    Csv,
}

impl Protocol {
    /// Parses a `protocol=` value (`canal-json` or `csv`, case-insensitive).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "canal-json" => Some(Protocol::CanalJson),
            "csv" => Some(Protocol::Csv),
            _ => None,
        }
    }

    /// The name used in URIs.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::CanalJson => "canal-json",
            Protocol::Csv => "csv",
        }
    }

    /// The data file extension, with its dot (`.json` or `.csv`), as TiCDC names files.
    pub fn file_extension(self) -> &'static str {
        match self {
            Protocol::CanalJson => ".json",
            Protocol::Csv => ".csv",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Encodes transactions (and, where the format has one, DDL) into bytes.
///
/// An encoder appends to a caller-owned buffer so that a transport can batch many transactions
/// into one file write or one message without copying. Every encoded row ends with the
/// encoder's terminator, so concatenated outputs stay parseable. An encoder may keep small
/// scratch state between calls (hence `&mut self`) but never holds on to rows: each call's output
/// is complete.
pub trait RowEncoder: Send {
    /// Appends the encoding of every row change of `txn` to `out`, in order, and returns how many
    /// row changes were encoded. On error `out` may hold a partial encoding of the transaction;
    /// the caller discards it.
    fn encode_txn(&mut self, txn: &SinkTxn, out: &mut Vec<u8>) -> Result<usize, SinkError>;

    /// Appends the encoding of a DDL event to `out` and returns true, or returns false without
    /// writing anything if the format has no DDL message (csv). Storage sinks record DDL as schema
    /// files instead; message-queue sinks use this.
    fn encode_ddl(&mut self, ddl: &DdlEvent, out: &mut Vec<u8>) -> Result<bool, SinkError>;

    /// The data file extension with its dot (`.json`, `.csv`).
    fn file_extension(&self) -> &str;

    /// The protocol this encoder writes.
    fn protocol(&self) -> Protocol;
}

/// Everything an encoder needs to know, for either protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// The protocol to write.
    pub protocol: Protocol,
    /// Canal-json options.
    pub canal_json: canal_json::CanalJsonConfig,
    /// Csv options.
    pub csv: csv::CsvConfig,
}

impl EncoderConfig {
    /// Defaults (TiCDC's) for `protocol`.
    pub fn new(protocol: Protocol) -> EncoderConfig {
        EncoderConfig {
            protocol,
            canal_json: canal_json::CanalJsonConfig::default(),
            csv: csv::CsvConfig::default(),
        }
    }
}

/// Builds the encoder `config` asks for.
pub fn new_encoder(config: &EncoderConfig) -> Box<dyn RowEncoder> {
    match config.protocol {
        Protocol::CanalJson => {
            Box::new(canal_json::CanalJsonEncoder::new(config.canal_json.clone()))
        }
        Protocol::Csv => Box::new(csv::CsvEncoder::new(config.csv.clone())),
    }
}

/// The error for a value that cannot be encoded.
pub(crate) fn encode_error(what: impl Into<String>, reason: impl Into<String>) -> SinkError {
    SinkError::Encode {
        what: what.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_round_trip() {
        assert_eq!(Protocol::parse("canal-json"), Some(Protocol::CanalJson));
        assert_eq!(Protocol::parse("CSV"), Some(Protocol::Csv));
        assert_eq!(Protocol::parse("canal"), None);
        assert_eq!(Protocol::parse(""), None);
        assert_eq!(Protocol::CanalJson.file_extension(), ".json");
        assert_eq!(Protocol::Csv.file_extension(), ".csv");
        assert_eq!(Protocol::Csv.to_string(), "csv");
    }
}
