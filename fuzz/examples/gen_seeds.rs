//! Writes the committed seed corpus (`fuzz/seeds/<target>/`) from Tidal's real encoders.
//!
//! Run from the `fuzz` directory: `cargo run --example gen_seeds` (optionally with an output
//! directory). Seeds are tiny valid inputs that put the fuzzer past the first format checks;
//! libFuzzer mutates from there. Regenerate them when a format changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use tidal_fuzz::fixture_tables;
use tidal_model::change::{RowChange, RowChangeKind};
use tidal_model::codec::FlaggedDatum;
use tidal_model::codec::datum::{encode_key_flagged, encode_value_flagged};
use tidal_model::codec::number::{encode_int, encode_uvarint, encode_varint};
use tidal_model::decimal::Decimal;
use tidal_model::json::Json;
use tidal_model::schema::TableInfo;
use tidal_model::time::Time;
use tidal_model::{Datum, Handle, Ts, meta, rowcodec, tablecodec};
use tidal_proto::cdcpb::event::{Entries, Event as EventKind, LogType, Row, row::OpType};
use tidal_proto::cdcpb::{ChangeDataEvent, Event, ResolvedTs};
use tidal_sinks::encode::RowEncoder;
use tidal_sinks::encode::canal_json::{CanalJsonConfig, CanalJsonEncoder};
use tidal_sinks::encode::csv::{CsvConfig, CsvEncoder};
use tidal_sinks::sink::{SinkTxn, TableDef};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("create seed dir");
    std::fs::write(d.join(name), bytes).expect("write seed");
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A full row of the int-PK fixture table (`orders`), as datums per public column.
fn orders_datums(t: &TableInfo) -> Vec<(i64, Datum)> {
    let mut created: Time = "2024-05-06 07:08:09.123".parse().expect("time");
    created.fsp = 3;
    let doc: Json = r#"{"a": [1, 2.5, "x", null, true], "b": {"c": -7}}"#
        .parse()
        .expect("json");
    let cols = t.public_columns();
    let values = [
        Datum::Uint(42),
        Datum::Bytes(b"alice".to_vec()),
        Datum::Decimal("12.34".parse().expect("decimal")),
        Datum::Time(created),
        Datum::Enum(2),
        Datum::Json(doc),
    ];
    cols.iter().zip(values).map(|(c, d)| (c.id, d)).collect()
}

fn main() {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("seeds"));
    let tables = fixture_tables();
    let orders = &tables[0];
    let datums = orders_datums(orders);
    let fts: Vec<_> = datums
        .iter()
        .map(|(id, _)| orders.column_by_id(*id).expect("column").field_type.clone())
        .collect();
    let triples: Vec<_> = datums
        .iter()
        .zip(&fts)
        .map(|((id, d), ft)| (*id, d, ft))
        .collect();
    let with_null: Vec<_> = triples
        .iter()
        .map(|&(id, d, ft)| {
            if id == 3 {
                (id, &Datum::Null, ft)
            } else {
                (id, d, ft)
            }
        })
        .collect();

    // row_v2 / row_v1: selector 0x00 (type index 0), table 0, handle 1, then the row.
    let v2 = rowcodec::encode_row_v2(&triples).expect("v2 row");
    let v2n = rowcodec::encode_row_v2(&with_null).expect("v2 row");
    let v1 = rowcodec::encode_row_v1(&triples).expect("v1 row");
    let v1n = rowcodec::encode_row_v1(&with_null).expect("v1 row");
    write(&dir, "row_v2", "orders", &cat(&[&[0x13, 0, 1], &v2]));
    write(&dir, "row_v2", "orders_null", &cat(&[&[0x12, 0, 1], &v2n]));
    write(
        &dir,
        "row_v2",
        "json_col",
        &cat(&[&[0x12, 3, 0], &triples[5].1.clone().json_col()]),
    );
    write(&dir, "row_v1", "orders", &cat(&[&[0x08, 0, 1], &v1]));
    write(&dir, "row_v1", "orders_null", &cat(&[&[0x02, 0, 1], &v1n]));

    // keys: one seed per decoder family.
    let mut mem = Vec::new();
    tidal_model::codec::encode_bytes(&mut mem, b"hello, tidal");
    write(&dir, "keys", "bytes", &cat(&[&[0], &mem]));
    write(
        &dir,
        "keys",
        "key",
        &cat(&[
            &[1],
            &tidal_model::codec::encode_key(b"t\x80\0\0\0\0\0\0\x70_r"),
        ]),
    );
    let mut n = Vec::new();
    encode_int(&mut n, -12345);
    write(&dir, "keys", "int", &cat(&[&[2], &n]));
    let mut vi = Vec::new();
    encode_varint(&mut vi, -300);
    encode_uvarint(&mut vi, 300);
    write(&dir, "keys", "varint", &cat(&[&[3], &vi]));
    let mut fl = Vec::new();
    let mut fv = Vec::new();
    for d in [
        FlaggedDatum::Int(-5),
        FlaggedDatum::Uint(7),
        FlaggedDatum::Bytes(b"abc".to_vec()),
        FlaggedDatum::Float(1.5),
        FlaggedDatum::Duration(1_000_000_000),
        FlaggedDatum::Nil,
    ] {
        encode_key_flagged(&mut fl, &d);
        encode_value_flagged(&mut fv, &d);
    }
    write(&dir, "keys", "flagged_key", &cat(&[&[4], &fl]));
    write(&dir, "keys", "flagged_value", &cat(&[&[5], &fv]));
    let mut handle = Vec::new();
    encode_key_flagged(&mut handle, &FlaggedDatum::Uint(42));
    encode_key_flagged(&mut handle, &FlaggedDatum::Bytes(b"acme".to_vec()));
    let common = tablecodec::encode_row_key(120, &Handle::Common(handle));
    write(
        &dir,
        "keys",
        "row_key_int",
        &cat(&[&[0x16], &tablecodec::encode_row_key_int(112, 9)]),
    );
    write(&dir, "keys", "row_key_common", &cat(&[&[0x17], &common]));
    write(
        &dir,
        "keys",
        "index_key",
        &cat(&[&[0x16], &tablecodec::encode_index_key(112, 1, &fl)]),
    );
    write(
        &dir,
        "keys",
        "meta_hash",
        &cat(&[
            &[8],
            &meta::hash_field_key(&meta::db_key(2), &meta::table_field(112)),
        ]),
    );
    write(
        &dir,
        "keys",
        "meta_string",
        &cat(&[&[9], &meta::string_key(b"SchemaVersionKey")]),
    );
    write(
        &dir,
        "keys",
        "meta_list",
        &cat(&[&[9], &meta::list_item_key(b"DDLJobList", 3)]),
    );

    // json_binary: type code + value.
    for (name, text) in [
        (
            "object",
            r#"{"k": [1, -2, 3.25, "s", false, null], "z": {"n": 18446744073709551615}}"#,
        ),
        ("array", r#"[[], {}, "x", 1e300]"#),
        ("string", r#""hello""#),
        ("int", "-9007199254740993"),
    ] {
        let j: Json = text.parse().expect("json");
        write(&dir, "json_binary", name, &j.encode_column());
    }

    // decimal: precision, frac, binary form.
    for (name, text, p, f) in [
        ("pos", "1234567890.0123456789", 30u8, 10u8),
        ("neg", "-0.5", 5, 2),
        ("int", "99999", 5, 0),
    ] {
        let d: Decimal = text.parse().expect("decimal");
        write(
            &dir,
            "decimal",
            name,
            &cat(&[&[p, f], &d.to_bin(p, f).expect("bin")]),
        );
    }

    // time: packed u64 little-endian + kind/fsp byte, and text forms.
    let t: Time = "2024-01-31 12:34:56.789000".parse().expect("time");
    write(
        &dir,
        "time",
        "datetime",
        &cat(&[&t.to_packed().to_le_bytes(), &[1 | (6 << 2)]]),
    );
    write(&dir, "time", "text_datetime", b"2024-01-31 12:34:56.789");
    write(&dir, "time", "text_duration", b"-838:59:59.000000");

    // schema_json: the fixture tables, and a finished CREATE TABLE job carrying one.
    for (i, json) in tidal_fuzz::TABLE_FIXTURES.iter().enumerate() {
        write(
            &dir,
            "schema_json",
            &format!("table{i}"),
            &cat(&[&[0], json.as_bytes()]),
        );
    }
    let job = serde_json::json!({
        "id": 130, "type": 3, "schema_id": 2, "table_id": 112, "schema_name": "shop",
        "table_name": "orders", "state": 6, "query": "CREATE TABLE orders (id BIGINT)",
        "start_ts": 449_000_000_000_000_000u64, "version": 1, "raw_args": null,
        "binlog": {"SchemaVersion": 55, "DBInfo": null, "FinishedTS": 449_000_000_000_000_001u64,
                   "TableInfo": serde_json::from_str::<serde_json::Value>(tidal_fuzz::TABLE_FIXTURES[0]).expect("fixture")}
    });
    write(
        &dir,
        "schema_json",
        "create_table_job",
        &cat(&[&[1], job.to_string().as_bytes()]),
    );

    // cdc_event: a region's initial scan, a live transaction and a resolved ts.
    let key = tablecodec::encode_row_key_int(112, 1);
    let row = |t: LogType, op: OpType, start: u64, commit: u64, value: &[u8]| Row {
        start_ts: start,
        commit_ts: commit,
        r#type: t as i32,
        op_type: op as i32,
        key: key.clone(),
        value: value.to_vec(),
        ..Default::default()
    };
    let entries = |rows: Vec<Row>| Event {
        region_id: 9,
        event: Some(EventKind::Entries(Entries { entries: rows })),
        ..Default::default()
    };
    let msg = ChangeDataEvent {
        events: vec![
            entries(vec![
                row(LogType::Committed, OpType::Put, 10, 11, &v2),
                row(LogType::Initialized, OpType::Unknown, 0, 0, b""),
                row(LogType::Prewrite, OpType::Put, 20, 0, &v2n),
                row(LogType::Commit, OpType::Unknown, 20, 21, b""),
            ]),
            Event {
                region_id: 9,
                event: Some(EventKind::ResolvedTs(30)),
                ..Default::default()
            },
        ],
        resolved_ts: Some(ResolvedTs {
            regions: vec![9],
            ts: 40,
            request_id: 0,
        }),
    };
    write(&dir, "cdc_event", "scan_and_live", &msg.encode_to_vec());

    // matcher: arbitrary-structured bytes; a few shapes are enough to start from.
    write(
        &dir,
        "matcher",
        "a",
        &[5, 1, 0, 1, 2, 3, 1, 1, 4, 1, 0, 3, 1, 4, 1, 1, 2, 5, 9],
    );
    write(
        &dir,
        "matcher",
        "b",
        &[
            0, 4, 1, 2, 3, 4, 5, 0, 1, 1, 2, 2, 5, 1, 3, 3, 3, 1, 2, 2, 9, 1, 1,
        ],
    );

    // canal_json_reader / csv_reader: files written by the sink's encoders.
    let table = Arc::new(TableDef {
        schema_name: "shop".into(),
        table_name: "orders".into(),
        info: Arc::new(orders.clone()),
        version: 1,
    });
    let new: Vec<Datum> = datums.iter().map(|(_, d)| d.clone()).collect();
    let mut old = new.clone();
    old[1] = Datum::Bytes(b"bob".to_vec());
    old[2] = Datum::Null;
    let change = |kind, old: Option<Vec<Datum>>, new: Option<Vec<Datum>>| RowChange {
        table_id: 112,
        start_ts: Ts(100),
        commit_ts: Ts(101),
        kind,
        handle: Handle::Int(42),
        old,
        new,
    };
    let txn = SinkTxn {
        table,
        start_ts: Ts(100),
        commit_ts: Ts(101),
        rows: vec![
            change(RowChangeKind::Insert, None, Some(new.clone())),
            change(RowChangeKind::Update, Some(old.clone()), Some(new.clone())),
            change(RowChangeKind::Delete, Some(old), None),
        ],
        safe_mode: false,
    };
    let mut canal = CanalJsonEncoder::new(CanalJsonConfig {
        enable_tidb_extension: true,
        ..CanalJsonConfig::default()
    });
    let mut out = Vec::new();
    canal
        .encode_txn(&txn, &mut out)
        .expect("canal-json encodes");
    write(
        &dir,
        "canal_json_reader",
        "orders_crlf",
        &cat(&[&[0], &out]),
    );
    let mut csv = CsvEncoder::new(CsvConfig {
        include_commit_ts: true,
        output_old_value: true,
        ..CsvConfig::default()
    });
    let mut out = Vec::new();
    csv.encode_txn(&txn, &mut out).expect("csv encodes");
    // Raw half (even selector), default config chosen by the next byte (odd bool = true).
    write(&dir, "csv_reader", "orders_default", &cat(&[&[0, 1], &out]));

    // api_json: a create-changefeed body, a replica config and synced inputs.
    let body = serde_json::json!({
        "changefeed_id": "feed-1", "start_ts": 449_000_000_000_000_000u64,
        "sink_uri": "blackhole://",
        "replica_config": {"memory_quota": 1_073_741_824u64, "case_sensitive": false,
            "filter": {"rules": ["shop.*"]}, "sync_point_interval": "10m0s",
            "synced_status": {"synced_check_interval": 300, "checkpoint_interval": 15}}
    });
    write(
        &dir,
        "api_json",
        "create",
        &cat(&[&[0], body.to_string().as_bytes()]),
    );
    write(
        &dir,
        "api_json",
        "resume",
        &cat(&[&[1], br#"{"overwrite_checkpoint_ts": 449000000000000000}"#]),
    );
    write(
        &dir,
        "api_json",
        "replica",
        &cat(&[&[3], body["replica_config"].to_string().as_bytes()]),
    );
    write(
        &dir,
        "api_json",
        "synced",
        &[
            5, 0, 0, 0, 0, 0, 0, 0x40, 6, 0, 0, 0, 0, 0, 0, 0x40, 6, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0,
            0, 0, 0, 0, 0, 0,
        ],
    );
    println!("seeds written to {}", dir.display());
}

/// The v2 column bytes of a JSON datum.
trait JsonCol {
    fn json_col(self) -> Vec<u8>;
}

impl JsonCol for Datum {
    fn json_col(self) -> Vec<u8> {
        match self {
            Datum::Json(j) => j.encode_column(),
            _ => Vec::new(),
        }
    }
}
