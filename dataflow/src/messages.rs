//! The records that flow along the dataflow's edges.
//!
//! Row data ([`TxnItem`]) never leaves its worker: a span's rows are pulled, decoded and written
//! by the worker that owns the span, so the hot path moves typed values through `Pipeline`
//! channels and never serializes. Only small control records cross workers and processes — the
//! DDL stream ([`DdlMsg`], broadcast), the flushed stream ([`Flushed`]) and the "DDL done"
//! feedback ([`DdlDone`], broadcast) — and those derive serde (timely encodes them with
//! bincode). DDL jobs and events hold free-form JSON (`serde_json::Value`), which bincode
//! cannot decode, so they travel as JSON text inside [`Json`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tidal_model::{DdlEvent, DdlJob, Ts};
use tidal_sinks::SinkTxn;

/// A value that crosses process boundaries as JSON text (for types bincode cannot carry).
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_vec(&self.0).map_err(serde::ser::Error::custom)?;
        text.serialize(s)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Vec::<u8>::deserialize(d)?;
        serde_json::from_slice(&text)
            .map(Json)
            .map_err(serde::de::Error::custom)
    }
}

/// A finished DDL job on the DDL stream, in commit order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DdlMsg {
    /// Commit ts of the job's done row: the DDL takes effect here.
    pub commit_ts: Ts,
    /// The job, for every process's schema store.
    pub job: Json<DdlJob>,
    /// The event the DDL owner derived from its schema store (with the previous schema), or
    /// `None` when the job was already in the bootstrap snapshot.
    pub event: Json<Option<DdlEvent>>,
}

/// A batch made durable by a sink driver: one record per span of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flushed {
    /// The span's id.
    pub span_id: u128,
    /// The span's physical table id.
    pub table_id: i64,
    /// Largest commit ts of the span's rows in the batch.
    pub max_commit_ts: Ts,
    /// Row changes of the span in the batch.
    pub rows: u64,
    /// Approximate bytes of those changes.
    pub bytes: u64,
}

/// The DDL executor ran this DDL in the sink (sent back to every sink driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdlDone {
    /// The DDL's commit ts.
    pub commit_ts: Ts,
    /// Its job id.
    pub job_id: i64,
}

/// One upstream transaction's changes to one table, decoded, on its way to the sink driver.
#[derive(Debug, Clone)]
pub struct TxnItem {
    /// The span the rows came from.
    pub span_id: u128,
    /// Physical table id of the span.
    pub physical_id: i64,
    /// Database id of the table at the commit ts (for database-wide DDL barriers).
    pub db_id: i64,
    /// The transaction, as the sink takes it.
    pub txn: SinkTxn,
    /// Approximate size (raw key and value bytes).
    pub bytes: usize,
}

impl TxnItem {
    /// The table's logical id.
    pub fn logical_id(&self) -> i64 {
        self.txn.table.info.id
    }

    /// The commit ts.
    pub fn commit_ts(&self) -> Ts {
        self.txn.commit_ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_wrapper_round_trips_through_bincode_like_formats() {
        // serde_json itself is a self-describing format; check the wrapper with a
        // non-self-describing encoding of Vec<u8> by hand: the bytes are the JSON text.
        let job = DdlJob {
            id: 7,
            query: "create table t (a int)".into(),
            ..DdlJob::default()
        };
        let msg = DdlMsg {
            commit_ts: Ts(42),
            job: Json(job.clone()),
            event: Json(None),
        };
        let text = serde_json::to_vec(&msg).unwrap();
        let back: DdlMsg = serde_json::from_slice(&text).unwrap();
        assert_eq!(back.commit_ts, Ts(42));
        assert_eq!(back.job.0, job);
        assert!(back.event.0.is_none());
    }

    #[test]
    fn json_wrapper_rejects_garbage() {
        let bad = serde_json::to_vec(&b"{not json".to_vec()).unwrap();
        assert!(serde_json::from_slice::<Json<DdlJob>>(&bad).is_err());
    }
}
