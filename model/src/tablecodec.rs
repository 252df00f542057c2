//! TiDB table keys: row keys, index keys, table ranges and the keyspace prefix.
//!
//! CDC events carry raw keys and Tidal has to tell which table and which row a key belongs to,
//! and subscriptions are made per table record range. These helpers build and parse the raw
//! layouts of wire.md §4.2 (`t{table_id}_r{handle}`, `t{table_id}_i{index_id}{values}`); the
//! encoded (memcomparable) forms come from [`crate::codec::bytes`].

use serde::{Deserialize, Serialize};

use crate::codec::bytes::encode_key;
use crate::codec::datum::{FlaggedDatum, decode_flagged_all, skip_flagged};
use crate::codec::number::{decode_int, encode_int};
use crate::error::CodecError;

/// First byte of every table key.
pub const TABLE_PREFIX: u8 = b't';
/// Separator between the table id and the handle of a row key.
pub const RECORD_PREFIX_SEP: &[u8; 2] = b"_r";
/// Separator between the table id and the index id of an index key.
pub const INDEX_PREFIX_SEP: &[u8; 2] = b"_i";
/// Length of the table prefix `t` + EncodeInt(table_id).
pub const TABLE_PREFIX_LEN: usize = 9;
/// Length of the record prefix `t{id}_r`.
pub const RECORD_PREFIX_LEN: usize = 11;
/// Length of an int-handle row key (TiDB `RecordRowKeyLen`).
pub const RECORD_ROW_KEY_LEN: usize = 19;
/// Length of an index prefix `t{id}_i{index_id}`.
pub const INDEX_PREFIX_LEN: usize = 19;

/// First byte of a keyspace-prefixed (API v2) transactional key.
pub const KEYSPACE_TXN_PREFIX: u8 = b'x';
/// Length of the keyspace prefix: `x` + 3-byte big-endian keyspace id.
pub const KEYSPACE_PREFIX_LEN: usize = 4;

/// The largest id of a physical schema object (2^48 − 1); TiDB reserves ids just below it for
/// system tables.
pub const MAX_INT48: i64 = 0xFFFF_FFFF_FFFF;
/// Database id of `mysql` (recent TiDB only; older versions allocate it like any id).
pub const MYSQL_DB_ID: i64 = MAX_INT48;
/// Table id of `mysql.tidb_ddl_job` (TiDB ≥ 6.2, concurrent DDL).
pub const DDL_JOB_TABLE_ID: i64 = MAX_INT48 - 1;
/// Table id of `mysql.tidb_ddl_reorg`.
pub const DDL_REORG_TABLE_ID: i64 = MAX_INT48 - 2;
/// Table id of `mysql.tidb_ddl_history`.
pub const DDL_HISTORY_TABLE_ID: i64 = MAX_INT48 - 3;
/// Table id of `mysql.tidb_mdl_info`.
pub const MDL_INFO_TABLE_ID: i64 = MAX_INT48 - 4;

/// A row's handle: the int handle (`_tidb_rowid` or an integer clustered PK) or a common handle.
///
/// `Common` holds the comparable-encoded, flag-prefixed PK datums exactly as they follow the
/// record prefix in the key. The derived order matches key order within each kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Handle {
    /// An int handle.
    Int(i64),
    /// A clustered, non-integer primary key: its comparable datum bytes.
    Common(Vec<u8>),
}

impl Handle {
    /// The handle's bytes as they appear after the record prefix of a row key.
    pub fn encoded(&self) -> Vec<u8> {
        match self {
            Handle::Int(h) => {
                let mut buf = Vec::with_capacity(8);
                encode_int(&mut buf, *h);
                buf
            }
            Handle::Common(b) => b.clone(),
        }
    }

    /// The PK datums of a common handle; an int handle gives one [`FlaggedDatum::Int`].
    pub fn common_datums(&self) -> Result<Vec<FlaggedDatum>, CodecError> {
        match self {
            Handle::Int(h) => Ok(vec![FlaggedDatum::Int(*h)]),
            Handle::Common(b) => decode_flagged_all(b),
        }
    }
}

/// The table prefix `t` + EncodeInt(table_id).
pub fn table_prefix(table_id: i64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(RECORD_ROW_KEY_LEN);
    buf.push(TABLE_PREFIX);
    encode_int(&mut buf, table_id);
    buf
}

/// The record prefix `t{table_id}_r`, shared by all row keys of the table.
pub fn record_prefix(table_id: i64) -> Vec<u8> {
    let mut buf = table_prefix(table_id);
    buf.extend_from_slice(RECORD_PREFIX_SEP);
    buf
}

/// The raw row key of an int handle (19 bytes).
pub fn encode_row_key_int(table_id: i64, handle: i64) -> Vec<u8> {
    let mut buf = record_prefix(table_id);
    encode_int(&mut buf, handle);
    buf
}

/// The raw row key of a common handle, given its comparable datum bytes.
pub fn encode_row_key_common(table_id: i64, handle_bytes: &[u8]) -> Vec<u8> {
    let mut buf = record_prefix(table_id);
    buf.extend_from_slice(handle_bytes);
    buf
}

/// The raw row key of any handle.
pub fn encode_row_key(table_id: i64, handle: &Handle) -> Vec<u8> {
    match handle {
        Handle::Int(h) => encode_row_key_int(table_id, *h),
        Handle::Common(b) => encode_row_key_common(table_id, b),
    }
}

/// The index prefix `t{table_id}_i{index_id}`.
pub fn encode_index_prefix(table_id: i64, index_id: i64) -> Vec<u8> {
    let mut buf = table_prefix(table_id);
    buf.extend_from_slice(INDEX_PREFIX_SEP);
    encode_int(&mut buf, index_id);
    buf
}

/// An index key: the index prefix followed by the already comparable-encoded values.
pub fn encode_index_key(table_id: i64, index_id: i64, encoded_values: &[u8]) -> Vec<u8> {
    let mut buf = encode_index_prefix(table_id, index_id);
    buf.extend_from_slice(encoded_values);
    buf
}

/// The table id of any table key (`t` + EncodeInt), raw form.
pub fn decode_table_id(key: &[u8]) -> Result<i64, CodecError> {
    CodecError::ensure_len("table key", key, TABLE_PREFIX_LEN)?;
    match key.split_first() {
        Some((&TABLE_PREFIX, rest)) => decode_int(rest).map(|(id, _)| id),
        _ => Err(CodecError::invalid("table key", "does not start with 't'")),
    }
}

fn has_sep(key: &[u8], sep: &[u8; 2]) -> bool {
    key.len() > RECORD_PREFIX_LEN
        && key.first() == Some(&TABLE_PREFIX)
        && key.get(TABLE_PREFIX_LEN..RECORD_PREFIX_LEN) == Some(&sep[..])
}

/// True if `key` is a raw row key: `t{id}_r` followed by a non-empty handle.
pub fn is_record_key(key: &[u8]) -> bool {
    has_sep(key, RECORD_PREFIX_SEP)
}

/// True if `key` is a raw index key: `t{id}_i` followed by the index id and values.
pub fn is_index_key(key: &[u8]) -> bool {
    has_sep(key, INDEX_PREFIX_SEP)
}

/// Splits a raw row key into its table id and handle (TiDB `DecodeRowKey`).
///
/// A 19-byte key has an int handle; a longer one a common handle, whose datums are checked. The
/// key must not carry a keyspace prefix (see [`strip_keyspace_prefix`]).
pub fn decode_row_key(raw_key: &[u8]) -> Result<(i64, Handle), CodecError> {
    const WHAT: &str = "row key";
    let table_id = decode_table_id(raw_key)?;
    if !is_record_key(raw_key) {
        return Err(CodecError::invalid(
            WHAT,
            "not a record key (t{id}_r{handle})",
        ));
    }
    let handle = raw_key.get(RECORD_PREFIX_LEN..).unwrap_or_default();
    if raw_key.len() == RECORD_ROW_KEY_LEN {
        let (h, _) = decode_int(handle)?;
        return Ok((table_id, Handle::Int(h)));
    }
    let mut rest = handle;
    while !rest.is_empty() {
        rest = skip_flagged(rest)?;
    }
    Ok((table_id, Handle::Common(handle.to_vec())))
}

/// Splits a raw index key into its table id, index id and the encoded values that follow.
pub fn decode_index_key(raw_key: &[u8]) -> Result<(i64, i64, &[u8]), CodecError> {
    let table_id = decode_table_id(raw_key)?;
    if !is_index_key(raw_key) {
        return Err(CodecError::invalid(
            "index key",
            "not an index key (t{id}_i{index})",
        ));
    }
    let (index_id, values) = decode_int(raw_key.get(RECORD_PREFIX_LEN..).unwrap_or_default())?;
    Ok((table_id, index_id, values))
}

/// The raw record range of a table, `[t{id}_r, t{id}_s)`: all its rows and none of its indexes.
pub fn table_record_range(table_id: i64) -> (Vec<u8>, Vec<u8>) {
    let start = record_prefix(table_id);
    let mut end = table_prefix(table_id);
    end.extend_from_slice(b"_s");
    (start, end)
}

/// The record range of a table in encoded (memcomparable) form, as CDC requests and TiCDC's
/// `TableSpan` use it.
pub fn table_record_span_encoded(table_id: i64) -> (Vec<u8>, Vec<u8>) {
    let (start, end) = table_record_range(table_id);
    (encode_key(&start), encode_key(&end))
}

/// The API v2 keyspace prefix of transactional keys: `x` + 3-byte big-endian keyspace id.
/// Only the low 24 bits of `keyspace_id` are used.
pub fn keyspace_prefix(keyspace_id: u32) -> [u8; KEYSPACE_PREFIX_LEN] {
    let [_, a, b, c] = keyspace_id.to_be_bytes();
    [KEYSPACE_TXN_PREFIX, a, b, c]
}

/// The keyspace id of a keyspace-prefixed raw key, or `None` for a classic key.
pub fn keyspace_id_of(key: &[u8]) -> Option<u32> {
    match key.first_chunk::<KEYSPACE_PREFIX_LEN>() {
        Some(&[KEYSPACE_TXN_PREFIX, a, b, c]) => Some(u32::from_be_bytes([0, a, b, c])),
        _ => None,
    }
}

/// Removes the API v2 keyspace prefix from a raw key, if it has one (TiCDC
/// `RemoveKeyspacePrefix`). Classic keys are returned unchanged.
pub fn strip_keyspace_prefix(key: &[u8]) -> &[u8] {
    if keyspace_id_of(key).is_some() {
        key.get(KEYSPACE_PREFIX_LEN..).unwrap_or_default()
    } else {
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::datum::encode_key_flagged;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn wire_example_table_100() {
        let (start, end) = table_record_range(100);
        assert_eq!(start, h("74 80 00 00 00 00 00 00 64 5f 72"));
        assert_eq!(end, h("74 80 00 00 00 00 00 00 64 5f 73"));
        let (es, ee) = table_record_span_encoded(100);
        assert_eq!(
            es,
            h("74 80 00 00 00 00 00 00 ff 64 5f 72 00 00 00 00 00 fa")
        );
        assert_eq!(
            ee,
            h("74 80 00 00 00 00 00 00 ff 64 5f 73 00 00 00 00 00 fa")
        );
        let row = encode_row_key_int(100, 1);
        assert_eq!(
            row,
            h("74 80 00 00 00 00 00 00 64 5f 72 80 00 00 00 00 00 00 01")
        );
        assert_eq!(row.len(), RECORD_ROW_KEY_LEN);
        assert_eq!(decode_row_key(&row).unwrap(), (100, Handle::Int(1)));
        assert_eq!(decode_table_id(&row).unwrap(), 100);
        assert!(is_record_key(&row));
        assert!(!is_index_key(&row));
    }

    #[test]
    fn index_and_ids() {
        let k = encode_index_key(100, 2, &h("03 80 00 00 00 00 00 00 07"));
        assert_eq!(
            k,
            h(
                "74 80 00 00 00 00 00 00 64 5f 69 80 00 00 00 00 00 00 02 03 80 00 00 00 00 00 00 07"
            )
        );
        assert!(is_index_key(&k));
        assert!(!is_record_key(&k));
        let (t, i, v) = decode_index_key(&k).unwrap();
        assert_eq!((t, i, v), (100, 2, &h("03 80 00 00 00 00 00 00 07")[..]));
        assert!(decode_row_key(&k).is_err());
        assert_eq!(DDL_JOB_TABLE_ID, 281_474_976_710_654);
        assert_eq!(MDL_INFO_TABLE_ID, 281_474_976_710_651);
    }

    #[test]
    fn common_handle() {
        let mut hb = Vec::new();
        encode_key_flagged(&mut hb, &FlaggedDatum::Bytes(b"abc".to_vec()));
        encode_key_flagged(&mut hb, &FlaggedDatum::Int(-3));
        let key = encode_row_key_common(7, &hb);
        let (t, handle) = decode_row_key(&key).unwrap();
        assert_eq!(t, 7);
        assert_eq!(handle, Handle::Common(hb.clone()));
        assert_eq!(handle.encoded(), hb);
        assert_eq!(
            handle.common_datums().unwrap(),
            vec![FlaggedDatum::Bytes(b"abc".to_vec()), FlaggedDatum::Int(-3)]
        );
        assert_eq!(encode_row_key(7, &handle), key);
    }

    #[test]
    fn malformed_keys() {
        assert!(decode_table_id(b"t123").is_err());
        assert!(decode_table_id(b"m12345678").is_err());
        // Record prefix only: no handle.
        assert!(decode_row_key(&record_prefix(5)).is_err());
        // Wrong separator.
        let mut k = encode_row_key_int(5, 1);
        k[10] = b'x';
        assert!(decode_row_key(&k).is_err());
        // Common handle with a bad datum.
        let mut k = record_prefix(5);
        k.extend_from_slice(&[0x03, 0x80]);
        assert!(decode_row_key(&k).is_err());
        let mut k = record_prefix(5);
        k.push(99);
        assert!(decode_row_key(&k).is_err());
        assert!(decode_index_key(&encode_index_prefix(1, 2)[..15]).is_err());
    }

    #[test]
    fn keyspace() {
        let mut k = keyspace_prefix(0x01_02_03).to_vec();
        assert_eq!(k, b"x\x01\x02\x03");
        k.extend_from_slice(&encode_row_key_int(9, 9));
        assert_eq!(keyspace_id_of(&k), Some(0x01_02_03));
        assert_eq!(strip_keyspace_prefix(&k), &encode_row_key_int(9, 9)[..]);
        let classic = encode_row_key_int(9, 9);
        assert_eq!(strip_keyspace_prefix(&classic), &classic[..]);
        assert_eq!(strip_keyspace_prefix(b"x"), b"x");
    }

    proptest! {
        #[test]
        fn row_keys_round_trip(t: i64, a: i64, b: i64) {
            let (ka, kb) = (encode_row_key_int(t, a), encode_row_key_int(t, b));
            prop_assert_eq!(decode_row_key(&ka).unwrap(), (t, Handle::Int(a)));
            prop_assert_eq!(a.cmp(&b), ka.cmp(&kb));
            let (start, end) = table_record_range(t);
            prop_assert!(start <= ka && ka < end);
            prop_assert_eq!(Handle::Int(a).encoded(), ka[RECORD_PREFIX_LEN..].to_vec());
        }

        #[test]
        fn common_keys_round_trip(t: i64, s in proptest::collection::vec(any::<u8>(), 0..20), n: u64) {
            let datums = vec![FlaggedDatum::Bytes(s), FlaggedDatum::Uint(n)];
            let mut hb = Vec::new();
            for d in &datums {
                encode_key_flagged(&mut hb, d);
            }
            let key = encode_row_key_common(t, &hb);
            let (tt, handle) = decode_row_key(&key).unwrap();
            prop_assert_eq!(tt, t);
            prop_assert_eq!(handle.common_datums().unwrap(), datums);
        }

        #[test]
        fn index_keys_round_trip(t: i64, i: i64, v in proptest::collection::vec(any::<u8>(), 0..20)) {
            let k = encode_index_key(t, i, &v);
            let (tt, ii, vv) = decode_index_key(&k).unwrap();
            prop_assert_eq!((tt, ii, vv), (t, i, &v[..]));
        }

        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_row_key(&input);
            let _ = decode_index_key(&input);
            let _ = decode_table_id(&input);
            let _ = is_record_key(&input);
            let _ = is_index_key(&input);
            let _ = strip_keyspace_prefix(&input);
            let _ = keyspace_id_of(&input);
            let mut k = record_prefix(1);
            k.extend_from_slice(&input);
            let _ = decode_row_key(&k);
        }
    }
}
