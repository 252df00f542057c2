//! Memcomparable and flag-prefixed datum encodings.
//!
//! These are the primitives under every TiDB key and old-format row: comparable numbers and
//! varints ([`number`]), memcomparable and compact bytes ([`bytes`]) and flag-prefixed datums
//! ([`datum`]). They are kept byte-for-byte compatible with TiDB's `util/codec` and TiKV's
//! `codec` crates, because Tidal compares its own keys with keys those systems produced.

pub mod bytes;
pub mod datum;
pub mod number;

pub use bytes::{decode_bytes, decode_key, encode_bytes, encode_key};
pub use datum::{FlaggedDatum, decode_flagged, decode_flagged_all};
