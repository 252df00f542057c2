//! Schema JSON: `TableInfo::from_json`, `DdlJob::from_json`, `DdlEvent::from_job`.
//!
//! Byte 0 picks the document kind; the rest is JSON (the seeds are TiDB's own documents).
//! Properties beyond "no panic":
//! * what parses serializes and re-parses to an equal value (unknown keys included), for both
//!   `TableInfo` and `DdlJob`;
//! * every query on a parsed table (handle columns, unique keys, physical ids, column lookups)
//!   answers without panicking, and lookups by id find a column with that id;
//! * an event built from a job answers its queries (`affected_table_ids`, `block_scope`, ...)
//!   and carries the commit ts it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidal_model::schema::TableInfo;
use tidal_model::{DdlEvent, DdlJob, Ts};

fn check_table(t: &TableInfo) {
    let json = serde_json::to_vec(t).expect("a parsed TableInfo serializes");
    let back = TableInfo::from_json(&json).expect("serialized TableInfo re-parses");
    assert_eq!(&back, t, "TableInfo JSON round trip");
    let _ = t.handle_columns();
    let _ = t.unique_keys();
    let _ = t.primary_index();
    let _ = t.pk_handle_column();
    let _ = t.is_view();
    let _ = t.is_sequence();
    let _ = t.is_base_table();
    let _ = t.qualified_name("db");
    for id in t.physical_table_ids() {
        assert!(t.owns_physical_id(id), "physical id {id} not owned");
    }
    for c in t.public_columns() {
        let found = t
            .column_by_id(c.id)
            .expect("a public column is found by id");
        assert_eq!(found.id, c.id);
        let _ = t.column_by_name(&c.name.O);
        let _ = tidal_model::decode::origin_default_datum(c);
        let _ = tidal_model::decode::need_restored_data(&c.field_type);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, json)) = data.split_first() else {
        return;
    };
    if sel & 1 == 0 {
        if let Ok(t) = TableInfo::from_json(json) {
            check_table(&t);
        }
        return;
    }
    let Ok(job) = DdlJob::from_json(json) else {
        return;
    };
    let enc = job.to_json().expect("a parsed job serializes");
    let back = DdlJob::from_json(&enc).expect("a serialized job re-parses");
    assert_eq!(back, job, "DdlJob JSON round trip");
    let commit_ts = u64::from(sel) << 20;
    if let Ok(ev) = DdlEvent::from_job(&job, commit_ts) {
        assert_eq!(ev.commit_ts, Ts(commit_ts));
        let _ = ev.is_database_level();
        let _ = ev.affected_table_ids();
        let _ = ev.block_scope();
        for t in ev
            .table_info
            .as_deref()
            .into_iter()
            .chain(&ev.multiple_table_infos)
        {
            check_table(t);
        }
        if let Some(t) = ev.table_info.clone() {
            let _ = ev.with_previous(&t);
        }
    }
});
