//! TiDB's meta keys: the structure layer's strings, hashes and lists under `m`.
//!
//! TiDB keeps its schema in TiKV under keys that start with `m` (wire.md §6.1): the list of
//! databases, each database's tables as `TableInfo` JSON, the schema version and the DDL job
//! history. Tidal watches these keys to follow schema changes, so it must build and parse them
//! exactly as TiDB's `structure` package does.

use crate::codec::bytes::{decode_bytes, encode_bytes, encode_key};
use crate::codec::number::{decode_int, decode_uint, encode_int, encode_uint};
use crate::error::CodecError;

/// First byte of every meta key.
pub const META_PREFIX: u8 = b'm';
/// Type byte of a string key.
pub const STRING_DATA: u8 = b's';
/// Type byte of a hash field.
pub const HASH_DATA: u8 = b'h';
/// Type byte of a list item.
pub const LIST_DATA: u8 = b'l';
/// Type byte of a list's meta key (its bounds).
pub const LIST_META: u8 = b'L';

/// Hash of all databases: field `DB:<id>`, value `DBInfo` JSON.
pub const DBS_KEY: &[u8] = b"DBs";
/// String holding the global schema version (decimal ASCII).
pub const SCHEMA_VERSION_KEY: &[u8] = b"SchemaVersionKey";
/// String holding the largest allocated global id (decimal ASCII).
pub const NEXT_GLOBAL_ID_KEY: &[u8] = b"NextGlobalID";
/// Hash of finished DDL jobs: field = 8-byte big-endian job id, value = job JSON.
pub const DDL_JOB_HISTORY_KEY: &[u8] = b"DDLJobHistory";
/// Legacy DDL job queue (TiDB before concurrent DDL, < 6.2).
pub const DDL_JOB_LIST_KEY: &[u8] = b"DDLJobList";
/// Legacy add-index DDL job queue (TiDB < 6.2).
pub const DDL_JOB_ADD_IDX_LIST_KEY: &[u8] = b"DDLJobAddIdxList";

const DB_PREFIX: &[u8] = b"DB:";
const TABLE_PREFIX: &[u8] = b"Table:";
const DIFF_PREFIX: &[u8] = b"Diff:";

fn key_head(key: &[u8], type_byte: u8) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + crate::codec::bytes::encoded_bytes_len(key.len()) + 8);
    buf.push(META_PREFIX);
    encode_bytes(&mut buf, key);
    encode_uint(&mut buf, u64::from(type_byte));
    buf
}

/// The raw key of string `key`: `m` + EncodeBytes(key) + EncodeUint('s').
pub fn string_key(key: &[u8]) -> Vec<u8> {
    key_head(key, STRING_DATA)
}

/// The prefix shared by every field of hash `key`: `m` + EncodeBytes(key) + EncodeUint('h').
pub fn hash_prefix(key: &[u8]) -> Vec<u8> {
    key_head(key, HASH_DATA)
}

/// The raw key of field `field` of hash `key`: [`hash_prefix`] + EncodeBytes(field).
pub fn hash_field_key(key: &[u8], field: &[u8]) -> Vec<u8> {
    let mut buf = hash_prefix(key);
    encode_bytes(&mut buf, field);
    buf
}

/// The prefix shared by every item of list `key`: `m` + EncodeBytes(key) + EncodeUint('l').
pub fn list_prefix(key: &[u8]) -> Vec<u8> {
    key_head(key, LIST_DATA)
}

/// The raw key of item `idx` of list `key`: [`list_prefix`] + EncodeInt(idx).
pub fn list_item_key(key: &[u8], idx: i64) -> Vec<u8> {
    let mut buf = list_prefix(key);
    encode_int(&mut buf, idx);
    buf
}

/// Reads `m` + EncodeBytes(key) + EncodeUint(type) and returns the key and the rest.
fn decode_head<'a>(
    what: &'static str,
    raw: &'a [u8],
    type_byte: u8,
) -> Result<(Vec<u8>, &'a [u8]), CodecError> {
    let rest = match raw.split_first() {
        Some((&META_PREFIX, rest)) => rest,
        Some(_) => return Err(CodecError::invalid(what, "does not start with 'm'")),
        None => {
            return Err(CodecError::Truncated {
                what,
                needed: 1,
                available: 0,
            });
        }
    };
    let (key, rest) = decode_bytes(rest)?;
    let (ty, rest) = decode_uint(rest)?;
    if ty != u64::from(type_byte) {
        return Err(CodecError::invalid(
            what,
            format!("type {ty:#x}, expected {:?}", char::from(type_byte)),
        ));
    }
    Ok((key, rest))
}

fn no_trailing(what: &'static str, rest: &[u8]) -> Result<(), CodecError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(CodecError::invalid(
            what,
            format!("{} trailing bytes", rest.len()),
        ))
    }
}

/// Parses a raw string key back into its name.
pub fn decode_string_key(raw: &[u8]) -> Result<Vec<u8>, CodecError> {
    let (key, rest) = decode_head("meta string key", raw, STRING_DATA)?;
    no_trailing("meta string key", rest)?;
    Ok(key)
}

/// Parses a raw hash-field key into `(hash key, field)`.
pub fn decode_hash_field_key(raw: &[u8]) -> Result<(Vec<u8>, Vec<u8>), CodecError> {
    let (key, rest) = decode_head("meta hash key", raw, HASH_DATA)?;
    let (field, rest) = decode_bytes(rest)?;
    no_trailing("meta hash key", rest)?;
    Ok((key, field))
}

/// Parses a raw list-item key into `(list key, index)`.
pub fn decode_list_item_key(raw: &[u8]) -> Result<(Vec<u8>, i64), CodecError> {
    let (key, rest) = decode_head("meta list key", raw, LIST_DATA)?;
    let (idx, rest) = decode_int(rest)?;
    no_trailing("meta list key", rest)?;
    Ok((key, idx))
}

fn with_id(prefix: &[u8], id: i64) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(id.to_string().as_bytes());
    v
}

/// Parses `prefix` followed by a decimal id: digits only, optionally one leading `-`, fitting an
/// i64.
fn parse_id(prefix: &[u8], s: &[u8]) -> Option<i64> {
    let digits = s.strip_prefix(prefix)?;
    let unsigned = digits.strip_prefix(b"-").unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The key (and the `DBs` field) of a database: `DB:<id>`.
pub fn db_key(db_id: i64) -> Vec<u8> {
    with_id(DB_PREFIX, db_id)
}

/// The field of a table inside its database's hash: `Table:<id>`.
pub fn table_field(table_id: i64) -> Vec<u8> {
    with_id(TABLE_PREFIX, table_id)
}

/// The string key of the schema diff of `version`: `Diff:<version>`.
pub fn diff_key(version: i64) -> Vec<u8> {
    with_id(DIFF_PREFIX, version)
}

/// The database id of a `DB:<id>` key, or `None` if it is not one.
pub fn parse_db_key(key: &[u8]) -> Option<i64> {
    parse_id(DB_PREFIX, key)
}

/// The table id of a `Table:<id>` field, or `None` if it is not one (auto-id fields such as
/// `TID:<id>` give `None`).
pub fn parse_table_field(field: &[u8]) -> Option<i64> {
    parse_id(TABLE_PREFIX, field)
}

/// The schema version of a `Diff:<version>` key, or `None`.
pub fn parse_diff_key(key: &[u8]) -> Option<i64> {
    parse_id(DIFF_PREFIX, key)
}

/// The field of a job in [`DDL_JOB_HISTORY_KEY`]: its id as 8 bytes big-endian.
pub fn history_job_field(job_id: i64) -> [u8; 8] {
    job_id.to_be_bytes()
}

/// The job id of a [`DDL_JOB_HISTORY_KEY`] field, or `None` if it is not 8 bytes.
pub fn parse_history_job_field(field: &[u8]) -> Option<i64> {
    field.try_into().ok().map(i64::from_be_bytes)
}

/// The raw range of all meta keys, `[m, n)`.
pub fn meta_span() -> (Vec<u8>, Vec<u8>) {
    (vec![META_PREFIX], vec![META_PREFIX + 1])
}

/// The range of all meta keys in encoded (memcomparable) form.
pub fn meta_span_encoded() -> (Vec<u8>, Vec<u8>) {
    let (start, end) = meta_span();
    (encode_key(&start), encode_key(&end))
}

/// The raw ranges holding the items of the legacy DDL job lists ([`DDL_JOB_LIST_KEY`] and
/// [`DDL_JOB_ADD_IDX_LIST_KEY`]), each `[list prefix, list prefix with 'l' + 1)`.
pub fn ddl_job_list_spans() -> Vec<(Vec<u8>, Vec<u8>)> {
    [DDL_JOB_LIST_KEY, DDL_JOB_ADD_IDX_LIST_KEY]
        .iter()
        .map(|key| (list_prefix(key), key_head(key, LIST_DATA + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::codec::bytes::spaced_hex as h;

    #[test]
    fn wire_examples() {
        let k = hash_field_key(&db_key(2), &table_field(5));
        assert_eq!(
            k,
            h("6d 44 42 3a 32 00 00 00 00 fb 00 00 00 00 00 00 00 68 54 61 62 6c 65 3a 35 00 fe")
        );
        let (key, field) = decode_hash_field_key(&k).unwrap();
        assert_eq!(parse_db_key(&key), Some(2));
        assert_eq!(parse_table_field(&field), Some(5));

        let s = string_key(SCHEMA_VERSION_KEY);
        assert_eq!(
            s,
            h(
                "6d 53 63 68 65 6d 61 56 65 ff 72 73 69 6f 6e 4b 65 79 ff 00 00 00 00 00 00 00 00 f7 00 00 00 00 00 00 00 73"
            )
        );
        assert_eq!(decode_string_key(&s).unwrap(), SCHEMA_VERSION_KEY);
        assert!(decode_hash_field_key(&s).is_err());
        assert!(decode_string_key(&k).is_err());
    }

    #[test]
    fn lists_and_spans() {
        let k = list_item_key(DDL_JOB_LIST_KEY, 3);
        assert_eq!(
            decode_list_item_key(&k).unwrap(),
            (DDL_JOB_LIST_KEY.to_vec(), 3)
        );
        let spans = ddl_job_list_spans();
        assert_eq!(spans.len(), 2);
        assert!(spans[0].0 <= k && k < spans[0].1);
        assert!(!(spans[1].0 <= k && k < spans[1].1));
        assert_eq!(meta_span(), (b"m".to_vec(), b"n".to_vec()));
        assert_eq!(meta_span_encoded().0, h("6d 00 00 00 00 00 00 00 f8"));
        assert_eq!(meta_span_encoded().1, h("6e 00 00 00 00 00 00 00 f8"));
    }

    #[test]
    fn id_parsing() {
        assert_eq!(db_key(12), b"DB:12");
        assert_eq!(table_field(-1), b"Table:-1");
        assert_eq!(parse_table_field(b"Table:-1"), Some(-1));
        assert_eq!(parse_db_key(b"DB:"), None);
        assert_eq!(parse_db_key(b"DB:+1"), None);
        assert_eq!(parse_db_key(b"DB:1x"), None);
        assert_eq!(parse_db_key(b"DB:99999999999999999999"), None);
        assert_eq!(parse_table_field(b"TID:5"), None);
        assert_eq!(parse_diff_key(&diff_key(42)), Some(42));
        assert_eq!(parse_history_job_field(&history_job_field(77)), Some(77));
        assert_eq!(parse_history_job_field(b"abc"), None);
    }

    #[test]
    fn malformed() {
        assert!(decode_string_key(&[]).is_err());
        assert!(decode_string_key(b"t").is_err());
        let mut s = string_key(b"x");
        s.push(0);
        assert!(decode_string_key(&s).is_err());
        let s = string_key(b"x");
        assert!(decode_string_key(&s[..s.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn meta_keys_round_trip(key in proptest::collection::vec(any::<u8>(), 0..20),
                                field in proptest::collection::vec(any::<u8>(), 0..20),
                                idx: i64, id: i64) {
            prop_assert_eq!(decode_string_key(&string_key(&key)).unwrap(), key.clone());
            let hk = hash_field_key(&key, &field);
            prop_assert!(hk.starts_with(&hash_prefix(&key)));
            prop_assert_eq!(decode_hash_field_key(&hk).unwrap(), (key.clone(), field));
            prop_assert_eq!(decode_list_item_key(&list_item_key(&key, idx)).unwrap(), (key, idx));
            prop_assert_eq!(parse_db_key(&db_key(id)), Some(id));
            prop_assert_eq!(parse_table_field(&table_field(id)), Some(id));
        }

        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_string_key(&input);
            let _ = decode_hash_field_key(&input);
            let _ = decode_list_item_key(&input);
            let _ = parse_db_key(&input);
            let _ = parse_table_field(&input);
            let _ = parse_diff_key(&input);
            let _ = parse_history_job_field(&input);
        }
    }
}
