//! Reading the schema back out of the store at a timestamp, the way a TiDB starting up or a CDC
//! schema store bootstrapping does: `SchemaVersionKey`, then the `DBs` hash, then each
//! database's `DB:<id>` hash fields `Table:<id>`.
//!
//! Verification must decode rows with the schema that was in effect at the snapshot ts, not
//! with whatever the in-memory catalog says now (a table may have been altered, truncated or
//! dropped since), so the export reads the meta through here.

use tidal_model::meta;
use tidal_model::schema::{DBInfo, TableInfo};

use super::{TidbError, prefix_next, read_retry};
use crate::mvcc::MvccStore;

/// The schema as the meta keys describe it at one ts.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaSnapshot {
    /// The snapshot ts.
    pub ts: u64,
    /// `SchemaVersionKey` (0 if absent).
    pub schema_version: i64,
    /// `NextGlobalID` (0 if absent).
    pub next_global_id: i64,
    /// Every database with its tables, databases sorted by id, tables by id.
    pub dbs: Vec<(DBInfo, Vec<TableInfo>)>,
}

fn read_int(store: &MvccStore, key: &[u8], ts: u64) -> Result<i64, TidbError> {
    let raw = read_retry(|| store.get(&meta::string_key(key), ts))?;
    match raw {
        None => Ok(0),
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| TidbError::Invalid(format!("meta {key:?} holds {v:?}, not an integer"))),
    }
}

/// A (field, value) pair of a meta hash.
pub type HashField = (Vec<u8>, Vec<u8>);

/// Every field of hash `key` at `ts`: (field, value) in field order.
pub fn read_hash(store: &MvccStore, key: &[u8], ts: u64) -> Result<Vec<HashField>, TidbError> {
    let start = meta::hash_prefix(key);
    let end = prefix_next(&start);
    let pairs = read_retry(|| store.scan(&start, &end, ts, 0))?;
    pairs
        .into_iter()
        .map(|(k, v)| {
            let (_, field) = meta::decode_hash_field_key(&k)?;
            Ok((field, v))
        })
        .collect()
}

impl SchemaSnapshot {
    /// Reads the meta at `ts` (waiting out locks of DDL transactions still committing).
    pub fn read(store: &MvccStore, ts: u64) -> Result<SchemaSnapshot, TidbError> {
        let schema_version = read_int(store, meta::SCHEMA_VERSION_KEY, ts)?;
        let next_global_id = read_int(store, meta::NEXT_GLOBAL_ID_KEY, ts)?;
        let mut dbs = Vec::new();
        for (field, value) in read_hash(store, meta::DBS_KEY, ts)? {
            if meta::parse_db_key(&field).is_none() {
                continue;
            }
            let db: DBInfo = serde_json::from_slice(&value)?;
            let mut tables = Vec::new();
            for (field, value) in read_hash(store, &meta::db_key(db.id), ts)? {
                if meta::parse_table_field(&field).is_some() {
                    tables.push(TableInfo::from_json(&value)?);
                }
            }
            tables.sort_by_key(|t| t.id);
            dbs.push((db, tables));
        }
        dbs.sort_by_key(|(d, _)| d.id);
        Ok(SchemaSnapshot {
            ts,
            schema_version,
            next_global_id,
            dbs,
        })
    }

    /// A database by name (case-insensitive).
    pub fn db(&self, name: &str) -> Option<&DBInfo> {
        self.dbs
            .iter()
            .map(|(d, _)| d)
            .find(|d| d.db_name.matches(name))
    }

    /// A table by database and table name (case-insensitive).
    pub fn table(&self, db: &str, name: &str) -> Option<&TableInfo> {
        self.dbs
            .iter()
            .find(|(d, _)| d.db_name.matches(db))
            .and_then(|(_, ts)| ts.iter().find(|t| t.name.matches(name)))
    }

    /// A table by id, with its database.
    pub fn table_by_id(&self, id: i64) -> Option<(&DBInfo, &TableInfo)> {
        self.dbs
            .iter()
            .find_map(|(d, ts)| ts.iter().find(|t| t.id == id).map(|t| (d, t)))
    }

    /// Every (database, table) pair outside the `mysql` database.
    pub fn user_tables(&self) -> Vec<(&DBInfo, &TableInfo)> {
        self.dbs
            .iter()
            .filter(|(d, _)| d.db_name.L != "mysql")
            .flat_map(|(d, ts)| ts.iter().map(move |t| (d, t)))
            .collect()
    }
}
