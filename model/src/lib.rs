//! Tidal's vocabulary and TiDB's encodings, with no I/O.
//!
//! Everything that crosses a crate boundary in Tidal is named here: timestamps ([`Ts`]), table
//! spans ([`TableSpan`]), decoded values ([`Datum`]), row changes ([`RowChange`]), DDL events, and
//! TiDB's schema JSON ([`schema::TableInfo`] and friends). Beside the vocabulary live the codecs
//! that turn TiKV's bytes into it: memcomparable keys ([`codec`]), table keys ([`tablecodec`]),
//! meta keys ([`meta`]) and row values in TiDB's formats v1 and v2 ([`rowcodec`]).
//!
//! Every decoder takes untrusted bytes and returns a [`CodecError`] naming what was wrong rather
//! than panicking: a malformed event from the network must never take a worker down.
#![deny(missing_docs)]

pub mod change;
pub mod codec;
pub mod crc32;
pub mod datum;
pub mod ddl;
pub mod decimal;
pub mod decode;
pub mod duration;
pub mod error;
pub mod json;
pub mod meta;
pub mod mysql;
pub mod rowcodec;
pub mod schema;
pub mod span;
pub mod tablecodec;
pub mod time;
pub mod ts;

pub use change::{RawKvChange, RowChange, RowChangeKind};
pub use datum::Datum;
pub use ddl::{DdlEvent, DdlJob};
pub use error::CodecError;
pub use span::{SpanSetFingerprint, TableSpan};
pub use tablecodec::Handle;
pub use ts::Ts;
