//! TiDB schema and DDL-job JSON: parsing TiDB's field names, lossless round trips, forgiving
//! enumerations, handle mapping and DDL block scopes.

use serde_json::{Value, json};
use tidal_model::CodecError;
use tidal_model::ddl::{ActionType, BlockScope, DdlEvent, DdlJob, JobState};
use tidal_model::schema::{CIStr, DBInfo, HandleKind, SchemaState, TableInfo};

const INT_PK: &str = include_str!("fixtures/table_int_pk.json");
const COMMON: &str = include_str!("fixtures/table_common_handle.json");
const PARTITIONED: &str = include_str!("fixtures/table_partitioned.json");

fn parse(json: &str) -> TableInfo {
    TableInfo::from_json(json.as_bytes()).expect("fixture parses")
}

/// parse → serialize → parse gives the same value, and the serialized JSON equals the input
/// except for Go's `null` lists, which come back as `[]`.
fn assert_round_trip(json: &str) -> TableInfo {
    let first = parse(json);
    let text = serde_json::to_string(&first).unwrap();
    let second = parse(&text);
    assert_eq!(first, second);
    first
}

#[test]
fn int_pk_table_parses_tidb_field_names() {
    let t = assert_round_trip(INT_PK);
    assert_eq!(t.id, 112);
    assert_eq!(t.name, CIStr::new("Orders"));
    assert_eq!(t.name.L, "orders");
    assert!(t.pk_is_handle);
    assert!(!t.is_common_handle);
    assert_eq!(t.update_timestamp, 445_644_800_000_000_005);
    assert_eq!(t.version, 5);
    assert_eq!(t.revision, 3);
    assert_eq!(t.max_col_id, 6);
    assert_eq!(t.state, SchemaState::PUBLIC);
    assert!(t.partition.is_none());
    assert_eq!(t.cols.len(), 6);

    let name = t.column_by_name("NAME").unwrap();
    assert_eq!(name.id, 2);
    assert_eq!(name.field_type.collate, "utf8mb4_general_ci");
    assert_eq!(name.field_type.flen, 64);
    assert_eq!(name.comment, "customer name");

    let price = t.column_by_id(3).unwrap();
    assert_eq!(
        (
            price.field_type.tp,
            price.field_type.flen,
            price.field_type.decimal
        ),
        (246, 10, 2)
    );
    assert_eq!(price.default, Some(json!("0.00")));

    let created = t.column_by_name("created").unwrap();
    assert_eq!((created.field_type.tp, created.field_type.decimal), (12, 3));

    let status = t.column_by_name("status").unwrap();
    assert_eq!(status.field_type.tp, 247);
    assert_eq!(
        status.field_type.elems.as_deref(),
        Some(&["a".to_string(), "b".to_string(), "c".to_string()][..])
    );
    assert_eq!(status.origin_default, Some(json!("b")));

    assert_eq!(t.column_by_id(6).unwrap().field_type.tp, 245);

    assert_eq!(t.index_info.len(), 2);
    assert!(t.index_info[1].is_unique);
    assert_eq!(t.index_info[1].idx_cols[0].name.L, "name");
    assert_eq!(t.index_info[1].idx_cols[0].length, -1);
    assert!(t.primary_index().is_none());
}

#[test]
fn unknown_keys_survive_a_round_trip() {
    let t = parse(INT_PK);
    assert_eq!(
        t.extra.get("future_key"),
        Some(&json!({"nested": [1, 2, 3]}))
    );
    assert!(t.cols[5].extra.contains_key("changing_type"));
    assert_eq!(
        t.index_info[0].extra.get("vector_index"),
        Some(&Value::Null)
    );

    let out: Value = serde_json::to_value(&t).unwrap();
    assert_eq!(out["future_key"], json!({"nested": [1, 2, 3]}));
    assert_eq!(out["cols"][5]["changing_type"]["Tp"], json!(252));
    assert_eq!(out["index_info"][0]["vector_index"], Value::Null);
    assert_eq!(out["ShardRowIDBits"], json!(0));
    assert_eq!(out["Lock"], Value::Null);

    // Every key of the input is in the output with the same value, except that Go's null lists
    // come back as empty lists.
    let input: Value = serde_json::from_str(INT_PK).unwrap();
    for (k, v) in input.as_object().unwrap() {
        let got = &out[k];
        let same = got == v || (v.is_null() && got == &json!([]));
        assert!(same, "key {k}: {v} became {got}");
    }
    for (i, col) in input["cols"].as_array().unwrap().iter().enumerate() {
        for (k, v) in col.as_object().unwrap() {
            assert_eq!(&out["cols"][i][k], v, "column {i} key {k}");
        }
    }
}

#[test]
fn common_handle_table() {
    let t = assert_round_trip(COMMON);
    assert!(t.is_common_handle);
    assert_eq!(
        t.handle_columns(),
        HandleKind::Common {
            col_ids: vec![3, 1]
        }
    );
    assert_eq!(t.primary_index().unwrap().idx_name.L, "primary");
    assert!(t.column_by_id(4).unwrap().is_generated_virtual());
    assert!(!t.column_by_id(2).unwrap().is_generated_virtual());
    assert_eq!(
        t.column_by_id(4).unwrap().dependences,
        Some(json!({"amount": {}}))
    );
    assert_eq!(t.unique_keys(), vec![vec![3, 1]]);
    assert_eq!(t.physical_table_ids(), vec![120]);
    assert_eq!(t.qualified_name("bank"), "`bank`.`accounts`");
}

#[test]
fn partitioned_table() {
    let t = assert_round_trip(PARTITIONED);
    let p = t.partition.as_ref().unwrap();
    assert!(p.enable);
    assert_eq!(p.partition_type, 1);
    assert_eq!(p.definitions[2].less_than, vec!["MAXVALUE".to_string()]);
    assert_eq!(
        p.definitions[2].extra.get("comment"),
        Some(&json!("catch-all"))
    );
    assert!(p.extra.contains_key("NewPartitionIDs"));
    assert_eq!(t.physical_table_ids(), vec![131, 132, 133]);
    assert!(t.owns_physical_id(132));
    assert!(!t.owns_physical_id(134));
    assert_eq!(t.shard_row_id_bits, 4);
    assert!(t.index_info.is_empty());
    assert_eq!(t.handle_columns(), HandleKind::HiddenRowId);
    assert!(t.unique_keys().is_empty());
}

#[test]
fn handle_kinds_and_keys() {
    let t = parse(INT_PK);
    assert_eq!(
        t.handle_columns(),
        HandleKind::IntPk {
            col_id: 1,
            unsigned: true
        }
    );
    assert_eq!(t.unique_keys(), vec![vec![1], vec![2]]);
    let names: Vec<&str> = t
        .public_columns()
        .iter()
        .map(|c| c.name.O.as_str())
        .collect();
    assert_eq!(names, ["id", "Name", "price", "created", "status", "doc"]);
    assert!(t.is_base_table());
    assert_eq!(t.qualified_name("sh`op"), "`sh``op`.`Orders`");
}

#[test]
fn non_public_columns_are_hidden_and_unknown_states_parse() {
    let mut v: Value = serde_json::from_str(INT_PK).unwrap();
    v["cols"][2]["state"] = json!(2);
    v["cols"][3]["state"] = json!(42);
    let t: TableInfo = serde_json::from_value(v).unwrap();
    let ids: Vec<i64> = t.public_columns().iter().map(|c| c.id).collect();
    assert_eq!(ids, [1, 2, 5, 6]);
    assert_eq!(t.cols[3].state, SchemaState(42));
    assert_eq!(t.cols[3].state.name(), "none");
    assert_eq!(SchemaState::WRITE_ONLY.name(), "write only");
}

#[test]
fn old_table_info_without_newer_keys_parses() {
    let t = TableInfo::from_json(
        br#"{"id": 7, "name": {"O": "t", "L": "t"}, "cols": null, "index_info": null,
             "pk_is_handle": false, "state": 5}"#,
    )
    .unwrap();
    assert_eq!(t.id, 7);
    assert!(t.cols.is_empty());
    assert_eq!(t.version, 0);
    assert_eq!(t.physical_table_ids(), vec![7]);
    assert_eq!(t.handle_columns(), HandleKind::HiddenRowId);
}

#[test]
fn views_and_sequences() {
    let mut v: Value = serde_json::from_str(PARTITIONED).unwrap();
    v["view"] = json!({"view_select": "SELECT 1", "view_algorithm": 0});
    let t: TableInfo = serde_json::from_value(v.clone()).unwrap();
    assert!(t.is_view() && !t.is_sequence() && !t.is_base_table());
    v["view"] = Value::Null;
    v["sequence"] = json!({"sequence_start": 1});
    let t: TableInfo = serde_json::from_value(v).unwrap();
    assert!(t.is_sequence() && !t.is_view());
}

#[test]
fn malformed_table_json_names_the_problem() {
    let err = TableInfo::from_json(br#"{"id": "seven"}"#).unwrap_err();
    match err {
        CodecError::Invalid { what, detail } => {
            assert_eq!(what, "table info json");
            assert!(detail.contains("invalid type"), "{detail}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn db_info_parses_and_round_trips() {
    let json = r#"{"id": 2, "db_name": {"O": "Shop", "L": "shop"}, "charset": "utf8mb4",
                   "collate": "utf8mb4_bin", "state": 5, "policy_ref_info": null,
                   "deprecated_tables": null, "table_name_to_id": null}"#;
    let db: DBInfo = serde_json::from_str(json).unwrap();
    assert_eq!(db.id, 2);
    assert_eq!(db.db_name, CIStr::new("Shop"));
    assert_eq!(db.state, SchemaState::PUBLIC);
    assert!(db.extra.contains_key("deprecated_tables"));
    let again: DBInfo = serde_json::from_str(&serde_json::to_string(&db).unwrap()).unwrap();
    assert_eq!(db, again);
}

fn create_table_job() -> String {
    format!(
        r#"{{"id": 140, "type": 3, "schema_id": 2, "table_id": 112, "schema_name": "shop",
            "table_name": "Orders", "state": 4, "warning": null, "err": null, "err_count": 0,
            "row_count": 0, "raw_args": [null, false], "schema_state": 5, "snapshot_ver": 0,
            "real_start_ts": 445644800000000001, "start_ts": 445644800000000000,
            "dependency_id": 0, "query": "CREATE TABLE Orders (id BIGINT UNSIGNED PRIMARY KEY)",
            "binlog": {{"SchemaVersion": 57, "DBInfo": null, "TableInfo": {INT_PK},
                        "FinishedTS": 445644800000000009, "MultipleTableInfos": null}},
            "version": 1, "reorg_meta": null, "multi_schema_info": null, "priority": 0,
            "seq_num": 12, "charset": "utf8mb4", "collate": "utf8mb4_bin",
            "admin_operator": 0, "trace_info": null, "bdr_role": "", "cdc_write_source": 0,
            "local_mode": false, "sql_mode": 1436549152}}"#
    )
}

#[test]
fn create_table_job_parses() {
    let job = DdlJob::from_json(create_table_job().as_bytes()).unwrap();
    assert_eq!(job.id, 140);
    assert_eq!(job.action_type, ActionType::CREATE_TABLE);
    assert_eq!(job.action_type.name(), "create table");
    assert_eq!(job.state, JobState::DONE);
    assert!(job.state.is_done() && !job.state.is_synced());
    assert_eq!(job.start_ts, 445_644_800_000_000_000);
    let binlog = job.binlog.as_ref().unwrap();
    assert_eq!(binlog.schema_version, 57);
    assert_eq!(binlog.finished_ts, 445_644_800_000_000_009);
    assert_eq!(binlog.table_info.as_ref().unwrap().id, 112);
    assert!(binlog.multiple_table_infos.is_empty());
    assert_eq!(job.extra.get("sql_mode"), Some(&json!(1_436_549_152)));
    let again = DdlJob::from_json(&job.to_json().unwrap()).unwrap();
    assert_eq!(job, again);

    let ev = DdlEvent::from_job(&job, 445_644_800_000_000_009).unwrap();
    assert_eq!(ev.commit_ts, tidal_model::ts::Ts(445_644_800_000_000_009));
    assert_eq!(ev.start_ts.0, 445_644_800_000_000_000);
    assert_eq!(ev.schema_version, 57);
    assert_eq!(
        (ev.schema_name.as_str(), ev.table_name.as_str()),
        ("shop", "Orders")
    );
    assert_eq!(ev.table_id, 112);
    assert_eq!(ev.old_table_id, None);
    assert_eq!(ev.block_scope(), BlockScope::Tables(vec![112]));
}

#[test]
fn rename_tables_job_parses() {
    let a = parse(INT_PK);
    let b = parse(COMMON);
    let job = json!({
        "id": 150, "type": 47, "schema_id": 2, "table_id": 112, "schema_name": "shop",
        "table_name": "Orders", "state": 6, "raw_args": null, "query": "RENAME TABLE a TO b, c TO d",
        "start_ts": 10, "version": 2,
        "binlog": {"SchemaVersion": 60, "DBInfo": null, "TableInfo": b.clone(),
                   "FinishedTS": 0, "MultipleTableInfos": [a, b]}
    });
    let job = DdlJob::from_json(job.to_string().as_bytes()).unwrap();
    assert_eq!(job.action_type, ActionType::RENAME_TABLES);
    assert!(job.state.is_synced());
    let binlog = job.binlog.as_ref().unwrap();
    assert_eq!(binlog.multiple_table_infos.len(), 2);
    assert_eq!(binlog.multiple_table_infos[1].name.L, "accounts");

    let ev = DdlEvent::from_job(&job, 99).unwrap();
    assert_eq!(ev.old_table_id, None);
    assert_eq!(ev.affected_table_ids(), vec![112, 120]);
    assert_eq!(ev.block_scope(), BlockScope::Tables(vec![112, 120]));
}

#[test]
fn unknown_action_and_state_numbers_parse() {
    let job = DdlJob::from_json(br#"{"id": 1, "type": 250, "state": 99, "future": true}"#).unwrap();
    assert_eq!(job.action_type, ActionType(250));
    assert_eq!(job.action_type.name(), "none");
    assert!(!job.action_type.is_known());
    assert_eq!(job.action_type.to_string(), "unknown action 250");
    assert_eq!(job.state, JobState(99));
    assert_eq!(job.state.name(), "none");
    assert_eq!(job.extra.get("future"), Some(&json!(true)));
    assert_eq!(
        ActionType::REORGANIZE_PARTITION.name(),
        "alter table reorganize partition"
    );
    assert_eq!(ActionType(14).to_string(), "rename table");
}

#[test]
fn malformed_job_json_is_a_codec_error() {
    let err = DdlJob::from_json(br#"{"id": 1, "type": "create table"}"#).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("ddl job json: invalid type: string"),
        "{text}"
    );
    assert!(text.contains("line 1"), "{text}");
    let err = DdlJob::from_json(b"{\"id\": 1,").unwrap_err();
    assert!(matches!(
        err,
        CodecError::Invalid {
            what: "ddl job json",
            ..
        }
    ));
}

#[test]
fn unfinished_jobs_are_not_events() {
    let mut job = DdlJob::from_json(create_table_job().as_bytes()).unwrap();
    job.state = JobState::RUNNING;
    let err = DdlEvent::from_job(&job, 1).unwrap_err();
    assert!(err.to_string().contains("state 1 (running)"), "{err}");
    job.state = JobState::ROLLBACK_DONE;
    assert!(DdlEvent::from_job(&job, 1).is_err());
}

fn job_with(
    action: ActionType,
    table: Option<&TableInfo>,
    table_id: i64,
    raw_args: Value,
) -> DdlJob {
    let job = json!({
        "id": 9, "type": action.0, "schema_id": 2, "table_id": table_id, "schema_name": "shop",
        "state": 4, "raw_args": raw_args, "query": "",
        "binlog": {"SchemaVersion": 3, "TableInfo": table, "DBInfo":
                   if table.is_none() { json!({"id": 2, "db_name": {"O": "shop", "L": "shop"}}) } else { Value::Null }}
    });
    DdlJob::from_json(job.to_string().as_bytes()).unwrap()
}

#[test]
fn block_scopes() {
    let db = |a| DdlEvent::from_job(&job_with(a, None, 0, Value::Null), 5).unwrap();
    assert_eq!(
        db(ActionType::DROP_SCHEMA).block_scope(),
        BlockScope::Database(2)
    );
    assert_eq!(
        db(ActionType::CREATE_SCHEMA).block_scope(),
        BlockScope::Database(2)
    );
    assert_eq!(db(ActionType::CREATE_SCHEMA).schema_name, "shop");
    assert_eq!(
        db(ActionType::FLASHBACK_CLUSTER).block_scope(),
        BlockScope::Cluster
    );
    assert_eq!(
        db(ActionType::CREATE_PLACEMENT_POLICY).block_scope(),
        BlockScope::Tables(vec![])
    );

    // TRUNCATE TABLE: job.table_id is the old id, the binlog table the new one.
    let mut truncated = parse(PARTITIONED);
    truncated.id = 140;
    for (i, d) in truncated
        .partition
        .as_mut()
        .unwrap()
        .definitions
        .iter_mut()
        .enumerate()
    {
        d.id = 141 + i as i64;
    }
    let job = job_with(
        ActionType::TRUNCATE_TABLE,
        Some(&truncated),
        130,
        json!(["dGFibGU=", [131, 132, 133]]),
    );
    let ev = DdlEvent::from_job(&job, 5).unwrap();
    assert_eq!(ev.old_table_id, Some(130));
    assert_eq!(ev.old_physical_table_ids, vec![131, 132, 133]);
    assert_eq!(
        ev.block_scope(),
        BlockScope::Tables(vec![130, 131, 132, 133, 140, 141, 142, 143])
    );

    // TRUNCATE PARTITION: old partition ids come from the previous schema.
    let mut after = parse(PARTITIONED);
    after.partition.as_mut().unwrap().definitions[0].id = 134;
    let job = job_with(
        ActionType::TRUNCATE_TABLE_PARTITION,
        Some(&after),
        130,
        Value::Null,
    );
    let ev = DdlEvent::from_job(&job, 5)
        .unwrap()
        .with_previous(&parse(PARTITIONED));
    assert_eq!(ev.old_table_id, None);
    assert_eq!(
        ev.block_scope(),
        BlockScope::Tables(vec![130, 131, 132, 133, 134])
    );

    // RENAME TABLE across databases: old schema from the v1 args, old name from history.
    let mut renamed = parse(INT_PK);
    renamed.name = CIStr::new("orders_2024");
    let job = job_with(
        ActionType::RENAME_TABLE,
        Some(&renamed),
        112,
        json!([5, {"O": "orders_2024", "L": "orders_2024"}, {"O": "Old", "L": "old"}]),
    );
    let ev = DdlEvent::from_job(&job, 5)
        .unwrap()
        .with_previous(&parse(INT_PK));
    assert_eq!(ev.old_schema_id, Some(5));
    assert_eq!(ev.old_schema_name.as_deref(), Some("Old"));
    assert_eq!(ev.old_table_name.as_deref(), Some("Orders"));
    assert_eq!(ev.table_name, "orders_2024");
    assert_eq!(ev.block_scope(), BlockScope::Tables(vec![112]));

    // Version-2 rename args are an object.
    let job = job_with(
        ActionType::RENAME_TABLE,
        Some(&renamed),
        112,
        json!({"old_schema_id": 6, "old_schema_name": {"O": "Prev", "L": "prev"}}),
    );
    let ev = DdlEvent::from_job(&job, 5).unwrap();
    assert_eq!(
        (ev.old_schema_id, ev.old_schema_name.as_deref()),
        (Some(6), Some("Prev"))
    );

    // CREATE VIEW blocks everything; ADD COLUMN only its table.
    let view = job_with(
        ActionType::CREATE_VIEW,
        Some(&parse(INT_PK)),
        112,
        Value::Null,
    );
    assert_eq!(
        DdlEvent::from_job(&view, 5).unwrap().block_scope(),
        BlockScope::Cluster
    );
    let add = job_with(
        ActionType::ADD_COLUMN,
        Some(&parse(COMMON)),
        120,
        Value::Null,
    );
    assert_eq!(
        DdlEvent::from_job(&add, 5).unwrap().block_scope(),
        BlockScope::Tables(vec![120])
    );
}

#[test]
fn ddl_event_serde_round_trip() {
    let job = DdlJob::from_json(create_table_job().as_bytes()).unwrap();
    let ev = DdlEvent::from_job(&job, 7).unwrap();
    let again: DdlEvent = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
    assert_eq!(ev, again);
}
