//! Which worker hosts which span, and what every worker is expected to host.
//!
//! Ownership is a pure function of the span and the worker count, `hash64(span) % peers`, so
//! every process computes the same assignment without talking to the others, and the control
//! plane can compute each worker's expected span set (and its fingerprint) independently of
//! what the workers say they host. `hash64` is a well-mixed hash, so consecutive table ids
//! spread evenly even for power-of-two worker counts. The `mysql.tidb_ddl_job` span is always
//! owned by [`DDL_OWNER`].

use tidal_ingest::schema::{SchemaStore, TableFilter};
use tidal_model::tablecodec::DDL_JOB_TABLE_ID;
use tidal_model::{SpanSetFingerprint, TableSpan, Ts};

/// The worker that pulls the DDL job table and runs DDL in the sink.
pub const DDL_OWNER: usize = 0;

/// The worker (global index) that hosts `span` among `peers` workers.
pub fn owner_of(span: &TableSpan, peers: usize) -> usize {
    let peers = peers.max(1) as u64;
    (span.hash64() % peers) as usize
}

/// The span of the DDL job table.
pub fn ddl_span() -> TableSpan {
    TableSpan::for_table(DDL_JOB_TABLE_ID)
}

/// The data spans of the changefeed at `ts`: one per physical table (partition) of every base
/// table `filter` selects, sorted by table id.
pub fn data_spans_at(store: &SchemaStore, filter: &TableFilter, ts: Ts) -> Vec<TableSpan> {
    let mut ids: Vec<i64> = store
        .tables_at(ts, filter)
        .iter()
        .flat_map(|v| v.info.physical_table_ids())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().map(TableSpan::for_table).collect()
}

/// The fingerprint of the spans `worker` must host: its share of `spans`, plus the DDL span
/// for [`DDL_OWNER`].
pub fn expected_fingerprint(
    spans: &[TableSpan],
    worker: usize,
    peers: usize,
) -> SpanSetFingerprint {
    let mut fp = SpanSetFingerprint::from_ids(
        spans
            .iter()
            .filter(|s| owner_of(s, peers) == worker)
            .map(TableSpan::span_id),
    );
    if worker == DDL_OWNER {
        fp.insert(ddl_span().span_id());
    }
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_span_has_exactly_one_owner() {
        let spans: Vec<TableSpan> = (100..400).map(TableSpan::for_table).collect();
        for peers in [1usize, 2, 3, 4, 8] {
            let mut total = 0u64;
            let mut per_worker = Vec::new();
            for w in 0..peers {
                let fp = expected_fingerprint(&spans, w, peers);
                total += fp.count;
                per_worker.push(spans.iter().filter(|s| owner_of(s, peers) == w).count());
            }
            // One DDL span plus every data span, each counted once.
            assert_eq!(total, spans.len() as u64 + 1, "peers={peers}");
            // Well mixed: no worker gets less than half its fair share of 300 spans.
            for n in per_worker {
                assert!(n * peers * 2 >= spans.len(), "peers={peers} n={n}");
            }
        }
    }

    #[test]
    fn ownership_is_stable() {
        let s = TableSpan::for_table(4242);
        assert_eq!(owner_of(&s, 4), owner_of(&s.clone(), 4));
        assert_eq!(owner_of(&s, 1), 0);
        assert_eq!(owner_of(&s, 0), 0);
    }
}
