//! The storage sink end to end, on temporary directories: the encoders' exact bytes, the layout
//! TiCDC consumers expect, rotation, restarts, and a round trip of many types through files and
//! the independent reader.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tidal_model::datum::Datum;
use tidal_model::ddl::ActionType;
use tidal_model::mysql;
use tidal_model::schema::{CIStr, ColumnInfo, FieldType, SchemaState, TableInfo};
use tidal_model::tablecodec::Handle;
use tidal_model::{DdlEvent, RowChange, RowChangeKind, Ts};
use tidal_sinks::encode::canal_json::{CanalJsonConfig, CanalJsonEncoder};
use tidal_sinks::encode::csv::{CsvConfig, CsvEncoder};
use tidal_sinks::encode::reader::{DecodedRow, RowOp};
use tidal_sinks::encode::{Protocol, RowEncoder};
use tidal_sinks::storage::consumer::read_storage_dir;
use tidal_sinks::storage::path::SchemaFile;
use tidal_sinks::storage::{StorageConfig, StorageSink};
use tidal_sinks::{Sink, SinkError, SinkTxn, TableDef, TxnBatch};

fn col(id: i64, name: &str, tp: u8, flag: u32, charset: &str) -> ColumnInfo {
    ColumnInfo {
        id,
        name: CIStr::new(name),
        offset: id - 1,
        state: SchemaState::PUBLIC,
        field_type: FieldType {
            tp,
            flag,
            flen: -1,
            decimal: -1,
            charset: charset.to_string(),
            ..FieldType::default()
        },
        ..ColumnInfo::default()
    }
}

/// `t1(id INT PK, name VARCHAR, price DECIMAL(10,2), bin VARBINARY, f DOUBLE, created DATETIME,
/// e ENUM('a','b','c'), s SET('x','y','z'), b BIT(8), j JSON, u BIGINT UNSIGNED, tm TIME,
/// fl FLOAT)`.
fn t1_info(extra_column: bool) -> TableInfo {
    let mut price = col(3, "price", mysql::TYPE_NEW_DECIMAL, 0, "binary");
    price.field_type.flen = 10;
    price.field_type.decimal = 2;
    let mut e = col(7, "e", mysql::TYPE_ENUM, 0, "utf8mb4");
    e.field_type.elems = Some(vec!["a".into(), "b".into(), "c".into()]);
    let mut s = col(8, "s", mysql::TYPE_SET, 0, "utf8mb4");
    s.field_type.elems = Some(vec!["x".into(), "y".into(), "z".into()]);
    let mut cols = vec![
        col(
            1,
            "id",
            mysql::TYPE_LONG,
            mysql::FLAG_PRI_KEY | mysql::FLAG_NOT_NULL,
            "binary",
        ),
        col(2, "name", mysql::TYPE_VARCHAR, 0, "utf8mb4"),
        price,
        col(4, "bin", mysql::TYPE_VARCHAR, mysql::FLAG_BINARY, "binary"),
        col(5, "f", mysql::TYPE_DOUBLE, 0, "binary"),
        col(6, "created", mysql::TYPE_DATETIME, 0, "binary"),
        e,
        s,
        col(9, "b", mysql::TYPE_BIT, mysql::FLAG_UNSIGNED, "binary"),
        col(10, "j", mysql::TYPE_JSON, mysql::FLAG_BINARY, "binary"),
        col(
            11,
            "u",
            mysql::TYPE_LONGLONG,
            mysql::FLAG_UNSIGNED,
            "binary",
        ),
        col(12, "tm", mysql::TYPE_DURATION, 0, "binary"),
        col(13, "fl", mysql::TYPE_FLOAT, 0, "binary"),
    ];
    if extra_column {
        cols.push(col(14, "note", mysql::TYPE_BLOB, 0, "utf8mb4"));
    }
    TableInfo {
        id: 100,
        name: CIStr::new("t1"),
        cols,
        pk_is_handle: true,
        ..TableInfo::default()
    }
}

/// `t2(k VARCHAR PK, v INT)`.
fn t2_info() -> TableInfo {
    TableInfo {
        id: 200,
        name: CIStr::new("t2"),
        cols: vec![
            col(
                1,
                "k",
                mysql::TYPE_VARCHAR,
                mysql::FLAG_PRI_KEY | mysql::FLAG_NOT_NULL,
                "utf8mb4",
            ),
            col(2, "v", mysql::TYPE_LONG, 0, "binary"),
        ],
        ..TableInfo::default()
    }
}

fn def(info: TableInfo, version: u64) -> Arc<TableDef> {
    Arc::new(TableDef {
        schema_name: "db".into(),
        table_name: info.name.O.clone(),
        info: Arc::new(info),
        version,
    })
}

fn t1_row(id: i64, name: Option<&str>, seed: u8) -> Vec<Datum> {
    vec![
        Datum::Int(id),
        name.map_or(Datum::Null, |n| Datum::Bytes(n.as_bytes().to_vec())),
        Datum::Decimal("12.50".parse().unwrap()),
        Datum::Bytes(vec![0, seed, 0xff, b'"', b',']),
        Datum::Float64(1234567.5),
        Datum::Time("2024-03-01 12:34:56".parse().unwrap()),
        Datum::Enum(2),
        Datum::Set(0b101),
        Datum::Bit(u64::from(seed)),
        Datum::Json(r#"{"k": [1, "x"]}"#.parse().unwrap()),
        Datum::Uint(u64::MAX),
        Datum::Duration("-01:02:03".parse().unwrap()),
        Datum::Float32(0.25),
    ]
}

fn change(
    kind: RowChangeKind,
    ts: u64,
    old: Option<Vec<Datum>>,
    new: Option<Vec<Datum>>,
) -> RowChange {
    RowChange {
        table_id: 100,
        start_ts: Ts(ts - 1),
        commit_ts: Ts(ts),
        kind,
        handle: Handle::Int(1),
        old,
        new,
    }
}

fn txn(table: &Arc<TableDef>, ts: u64, rows: Vec<RowChange>) -> SinkTxn {
    SinkTxn {
        table: table.clone(),
        start_ts: Ts(ts - 1),
        commit_ts: Ts(ts),
        rows,
        safe_mode: false,
    }
}

fn ddl_event(
    ts: u64,
    action: ActionType,
    query: &str,
    schema: &str,
    table: &str,
    info: Option<TableInfo>,
) -> DdlEvent {
    let table_id = info.as_ref().map_or(0, |i| i.id);
    DdlEvent {
        table_info: info.map(Box::new),
        ..support::ddl_event(schema, table, table_id, action, query, ts)
    }
}

// --------------------------------------------------------------------------------------------
// Encoders: exact bytes.

#[test]
fn canal_json_exact_output() {
    let t = def(t2_info(), 5);
    let ts = (1_700_000_000_000u64 << 18) | 7;
    let tx = txn(
        &t,
        ts,
        vec![
            change(
                RowChangeKind::Update,
                ts,
                Some(vec![Datum::Bytes(b"a\"<b>".to_vec()), Datum::Int(1)]),
                Some(vec![Datum::Bytes(b"a\"<b>".to_vec()), Datum::Null]),
            ),
            change(
                RowChangeKind::Delete,
                ts,
                Some(vec![Datum::Bytes(b"z\n".to_vec()), Datum::Int(-3)]),
                None,
            ),
        ],
    );
    let cfg = CanalJsonConfig {
        enable_tidb_extension: true,
        ..CanalJsonConfig::default()
    };
    let mut enc = CanalJsonEncoder::new(cfg).with_build_time(42);
    let mut out = Vec::new();
    assert_eq!(enc.encode_txn(&tx, &mut out).unwrap(), 2);
    let expected = concat!(
        r#"{"id":0,"database":"db","table":"t2","pkNames":["k"],"isDdl":false,"type":"UPDATE","es":1700000000000,"ts":42,"sql":"","sqlType":{"k":12,"v":4},"mysqlType":{"k":"varchar","v":"int"},"old":[{"k":"a\"\u003cb\u003e","v":"1"}],"data":[{"k":"a\"\u003cb\u003e","v":null}],"_tidb":{"commitTs":445644800000000007}}"#,
        "\r\n",
        r#"{"id":0,"database":"db","table":"t2","pkNames":["k"],"isDdl":false,"type":"DELETE","es":1700000000000,"ts":42,"sql":"","sqlType":{"k":12,"v":4},"mysqlType":{"k":"varchar","v":"int"},"old":null,"data":[{"k":"z\n","v":"-3"}],"_tidb":{"commitTs":445644800000000007}}"#,
        "\r\n",
    );
    assert_eq!(String::from_utf8(out).unwrap(), expected);

    // Many types, no extension.
    let t = def(t1_info(false), 5);
    let tx = txn(
        &t,
        ts,
        vec![change(
            RowChangeKind::Insert,
            ts,
            None,
            Some(t1_row(7, Some("héllo"), 1)),
        )],
    );
    let mut enc = CanalJsonEncoder::new(CanalJsonConfig::default()).with_build_time(1);
    let mut out = Vec::new();
    enc.encode_txn(&tx, &mut out).unwrap();
    let expected = concat!(
        r#"{"id":0,"database":"db","table":"t1","pkNames":["id"],"isDdl":false,"type":"INSERT","es":1700000000000,"ts":1,"sql":"","#,
        r#""sqlType":{"id":4,"name":12,"price":3,"bin":2004,"f":8,"created":93,"e":4,"s":-7,"b":-7,"j":12,"u":3,"tm":92,"fl":7},"#,
        r#""mysqlType":{"id":"int","name":"varchar","price":"decimal","bin":"varbinary","f":"double","created":"datetime","e":"enum","s":"set","b":"bit","j":"json","u":"bigint unsigned","tm":"time","fl":"float"},"#,
        r#""old":null,"data":[{"id":"7","name":"héllo","price":"12.50","bin":"\u0000\u0001ÿ\",","f":"1234567.5","created":"2024-03-01 12:34:56","e":"2","s":"5","b":"1","j":"{\"k\": [1, \"x\"]}","u":"18446744073709551615","tm":"-01:02:03","fl":"0.25"}]}"#,
        "\r\n"
    );
    assert_eq!(String::from_utf8(out).unwrap(), expected);

    // DDL message.
    let ddl = ddl_event(
        ts,
        ActionType::ADD_COLUMN,
        "ALTER TABLE t1 ADD COLUMN note TEXT",
        "db",
        "t1",
        None,
    );
    let mut out = Vec::new();
    assert!(enc.encode_ddl(&ddl, &mut out).unwrap());
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"id\":0,\"database\":\"db\",\"table\":\"t1\",\"pkNames\":null,\"isDdl\":true,\"type\":\"ALTER\",\"es\":1700000000000,\"ts\":1,\"sql\":\"ALTER TABLE t1 ADD COLUMN note TEXT\",\"sqlType\":null,\"mysqlType\":null,\"data\":null,\"old\":null}\r\n"
    );
}

#[test]
fn csv_exact_output() {
    let t = def(t2_info(), 5);
    let rows = vec![
        change(
            RowChangeKind::Insert,
            9,
            None,
            Some(vec![Datum::Bytes(b"a,\"b\"\r\nc".to_vec()), Datum::Null]),
        ),
        change(
            RowChangeKind::Update,
            9,
            Some(vec![Datum::Bytes(b"k".to_vec()), Datum::Int(1)]),
            Some(vec![Datum::Bytes(b"k".to_vec()), Datum::Int(2)]),
        ),
        change(
            RowChangeKind::Delete,
            9,
            Some(vec![Datum::Bytes(b"\\N".to_vec()), Datum::Int(-1)]),
            None,
        ),
    ];
    let tx = txn(&t, 9, rows);
    let mut out = Vec::new();
    CsvEncoder::new(CsvConfig::default())
        .encode_txn(&tx, &mut out)
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "\"I\",\"t2\",\"db\",\"a,\"\"b\"\"\r\nc\",\\N\r\n\"U\",\"t2\",\"db\",\"k\",2\r\n\"D\",\"t2\",\"db\",\"\\N\",-1\r\n"
    );

    let cfg = CsvConfig {
        include_commit_ts: true,
        output_old_value: true,
        ..CsvConfig::default()
    };
    let mut out = Vec::new();
    CsvEncoder::new(cfg).encode_txn(&tx, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        concat!(
            "\"I\",\"t2\",\"db\",9,false,\"a,\"\"b\"\"\r\nc\",\\N\r\n",
            "\"D\",\"t2\",\"db\",9,true,\"k\",1\r\n",
            "\"I\",\"t2\",\"db\",9,true,\"k\",2\r\n",
            "\"D\",\"t2\",\"db\",9,false,\"\\N\",-1\r\n",
        )
    );

    // Escape mode (no quote), hex binary, many types.
    let t = def(t1_info(false), 5);
    let tx = txn(
        &t,
        9,
        vec![change(
            RowChangeKind::Insert,
            9,
            None,
            Some(t1_row(7, Some("a|b\nc\\"), 1)),
        )],
    );
    let cfg = CsvConfig {
        delimiter: "|".into(),
        quote: String::new(),
        binary_encoding: tidal_sinks::encode::csv::BinaryEncoding::Hex,
        ..CsvConfig::default()
    };
    let mut out = Vec::new();
    CsvEncoder::new(cfg).encode_txn(&tx, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "I|t1|db|7|a\\|b\\nc\\\\|12.50|0001ff222c|1.2345675e+06|2024-03-01 12:34:56|b|x,z|1|{\"k\": [1, \"x\"]}|18446744073709551615|-01:02:03|0.25\r\n"
    );
    // Default csv renders binary as base64.
    let mut out = Vec::new();
    CsvEncoder::new(CsvConfig::default())
        .encode_txn(&tx, &mut out)
        .unwrap();
    let s = String::from_utf8(out).unwrap();
    assert!(s.contains(",\"AAH/Iiw=\","), "{s}");
}

#[test]
fn encoders_reject_misaligned_rows() {
    let t = def(t2_info(), 5);
    let tx = txn(
        &t,
        9,
        vec![change(
            RowChangeKind::Insert,
            9,
            None,
            Some(vec![Datum::Int(1)]),
        )],
    );
    let mut out = Vec::new();
    assert!(matches!(
        CsvEncoder::new(CsvConfig::default()).encode_txn(&tx, &mut out),
        Err(SinkError::Encode { .. })
    ));
    assert!(matches!(
        CanalJsonEncoder::new(CanalJsonConfig::default()).encode_txn(&tx, &mut out),
        Err(SinkError::Encode { .. })
    ));
    let tx = txn(&t, 9, vec![change(RowChangeKind::Insert, 9, None, None)]);
    assert!(
        CsvEncoder::new(CsvConfig::default())
            .encode_txn(&tx, &mut out)
            .is_err()
    );
}

// --------------------------------------------------------------------------------------------
// The sink.

fn open_cfg(dir: &Path, query: &str) -> StorageConfig {
    let uri = url::Url::parse(&format!("file://{}?{query}", dir.display())).unwrap();
    StorageConfig::from_uri(&uri).unwrap()
}

/// The text a file must carry for `d` in column `c` (independent of the encoders).
fn expected_text(c: &ColumnInfo, d: &Datum, protocol: Protocol) -> Option<Vec<u8>> {
    let elems = c.field_type.elems.clone().unwrap_or_default();
    Some(match d {
        Datum::Null => return None,
        Datum::Int(i) => i.to_string().into_bytes(),
        Datum::Uint(u) => u.to_string().into_bytes(),
        Datum::Float64(f) => match protocol {
            Protocol::CanalJson => format!("{f}").into_bytes(),
            Protocol::Csv => {
                if *f == 1234567.5 {
                    b"1.2345675e+06".to_vec()
                } else {
                    format!("{f}").into_bytes()
                }
            }
        },
        Datum::Float32(f) => format!("{f}").into_bytes(),
        Datum::Bytes(b) => b.clone(),
        Datum::Decimal(x) => x.to_string().into_bytes(),
        Datum::Time(x) => x.to_string().into_bytes(),
        Datum::Duration(x) => x.to_string().into_bytes(),
        Datum::Json(j) => j.to_string().into_bytes(),
        Datum::Bit(b) => b.to_string().into_bytes(),
        Datum::Enum(i) => match protocol {
            Protocol::CanalJson => i.to_string().into_bytes(),
            Protocol::Csv => elems[*i as usize - 1].clone().into_bytes(),
        },
        Datum::Set(m) => match protocol {
            Protocol::CanalJson => m.to_string().into_bytes(),
            Protocol::Csv => (0..elems.len())
                .filter(|i| m & (1 << i) != 0)
                .map(|i| elems[i].clone())
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes(),
        },
    })
}

fn expected_row(tx: &SinkTxn, row: &RowChange, protocol: Protocol) -> DecodedRow {
    let info = &tx.table.info;
    let cols = info.public_columns();
    let render = |vals: &Vec<Datum>| -> Vec<(String, Option<Vec<u8>>)> {
        cols.iter()
            .zip(vals)
            .map(|(c, d)| (c.name.O.clone(), expected_text(c, d, protocol)))
            .collect()
    };
    let (op, data, old) = match row.kind {
        RowChangeKind::Insert => (RowOp::Insert, render(row.new.as_ref().unwrap()), None),
        RowChangeKind::Delete => (RowOp::Delete, render(row.old.as_ref().unwrap()), None),
        RowChangeKind::Update => (
            RowOp::Update,
            render(row.new.as_ref().unwrap()),
            match protocol {
                Protocol::CanalJson => Some(render(row.old.as_ref().unwrap())),
                Protocol::Csv => None,
            },
        ),
    };
    DecodedRow {
        op,
        schema: "db".into(),
        table: info.name.O.clone(),
        commit_ts: Some(row.commit_ts.0),
        data,
        old,
    }
}

struct Workload {
    before_ddl: Vec<TxnBatch>,
    ddl: DdlEvent,
    after_ddl: Vec<TxnBatch>,
}

const V1: u64 = 1000;
const V2: u64 = 5000;

fn workload() -> Workload {
    let t1 = def(t1_info(false), V1);
    let t2 = def(t2_info(), V1);
    let mut r2 = t1_row(2, None, 2);
    r2[3] = Datum::Null;
    r2[9] = Datum::Null;
    let b1 = TxnBatch {
        txns: vec![
            txn(
                &t1,
                2000,
                vec![
                    change(
                        RowChangeKind::Insert,
                        2000,
                        None,
                        Some(t1_row(1, Some("o'ne, \"two\"\r\nthree"), 1)),
                    ),
                    change(RowChangeKind::Insert, 2000, None, Some(r2)),
                ],
            ),
            txn(
                &t2,
                2000,
                vec![change(
                    RowChangeKind::Insert,
                    2000,
                    None,
                    Some(vec![Datum::Bytes(b"k1".to_vec()), Datum::Int(10)]),
                )],
            ),
        ],
    };
    let b2 = TxnBatch {
        txns: vec![
            txn(
                &t1,
                3000,
                vec![change(
                    RowChangeKind::Update,
                    3000,
                    Some(t1_row(1, Some("o'ne, \"two\"\r\nthree"), 1)),
                    Some(t1_row(1, Some("uno"), 3)),
                )],
            ),
            txn(
                &t2,
                3000,
                vec![change(
                    RowChangeKind::Delete,
                    3000,
                    Some(vec![Datum::Bytes(b"k1".to_vec()), Datum::Int(10)]),
                    None,
                )],
            ),
        ],
    };
    let new_info = t1_info(true);
    let ddl = ddl_event(
        V2,
        ActionType::ADD_COLUMN,
        "ALTER TABLE t1 ADD COLUMN note TEXT",
        "db",
        "t1",
        Some(new_info.clone()),
    );
    let t1v2 = def(new_info, V2);
    let mut with_note = t1_row(3, Some("three"), 4);
    with_note.push(Datum::Bytes(b"a note".to_vec()));
    let mut old_note = t1_row(2, None, 2);
    old_note[3] = Datum::Null;
    old_note[9] = Datum::Null;
    old_note.push(Datum::Null);
    let b3 = TxnBatch {
        txns: vec![txn(
            &t1v2,
            6000,
            vec![
                change(RowChangeKind::Insert, 6000, None, Some(with_note)),
                change(RowChangeKind::Delete, 6000, Some(old_note), None),
            ],
        )],
    };
    Workload {
        before_ddl: vec![b1, b2],
        ddl,
        after_ddl: vec![b3],
    }
}

async fn run_workload(sink: &StorageSink, w: &Workload) {
    for b in &w.before_ddl {
        let report = sink.write(b.clone()).await.unwrap();
        assert_eq!(report.rows, b.row_count() as u64);
        assert_eq!(report.max_commit_ts, b.max_commit_ts().unwrap().0);
        assert!(report.bytes > 0);
    }
    sink.update_checkpoint(Ts(3000)).await.unwrap();
    sink.execute_ddl(w.ddl.clone(), None).await.unwrap();
    for b in &w.after_ddl {
        sink.write(b.clone()).await.unwrap();
    }
    sink.update_checkpoint(Ts(6000)).await.unwrap();
    sink.update_checkpoint(Ts(5500)).await.unwrap(); // a regression is ignored
}

fn schema_path(schema: &SchemaFile) -> PathBuf {
    schema.rel_path()
}

async fn round_trip(protocol: Protocol, query: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = open_cfg(dir.path(), query);
    assert_eq!(cfg.protocol(), protocol);
    let sink = StorageSink::open(cfg.clone()).await.unwrap();
    assert_eq!(sink.kind(), "file");
    let w = workload();
    run_workload(&sink, &w).await;
    sink.close().await.unwrap();
    assert!(matches!(
        sink.write(TxnBatch::default()).await,
        Err(SinkError::Closed)
    ));

    let content = read_storage_dir(dir.path(), &cfg.encoder).unwrap();
    assert_eq!(content.checkpoint_ts, Some(6000));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("metadata")).unwrap(),
        "{\"checkpoint-ts\":6000}"
    );

    // Layout: exact relative paths.
    let ext = protocol.file_extension();
    let f = |i: u64| format!("CDC{i:020}{ext}");
    let t1v1 = SchemaFile::for_table("db", &t1_info(false), V1);
    let t2v1 = SchemaFile::for_table("db", &t2_info(), V1);
    let mut t1v2 = SchemaFile::for_table("db", &t1_info(true), V2);
    t1v2.query = w.ddl.query.clone();
    t1v2.action = 5;
    let mut expected: Vec<PathBuf> = vec![
        schema_path(&t1v1),
        schema_path(&t2v1),
        schema_path(&t1v2),
        PathBuf::from(format!("db/t1/{V1}/{}", f(1))),
        PathBuf::from(format!("db/t1/{V1}/meta/CDC.index")),
        PathBuf::from(format!("db/t1/{V2}/{}", f(1))),
        PathBuf::from(format!("db/t1/{V2}/meta/CDC.index")),
        PathBuf::from(format!("db/t2/{V1}/{}", f(1))),
        PathBuf::from(format!("db/t2/{V1}/meta/CDC.index")),
        PathBuf::from("metadata"),
    ];
    expected.sort();
    assert_eq!(content.all_paths(), expected);
    assert!(t1v1.rel_path().starts_with("db/t1/meta"));
    let found = content
        .schema_files
        .iter()
        .find(|s| s.file.table_version == V2)
        .unwrap();
    assert_eq!(found.file, t1v2);
    assert_eq!(found.file.total_columns, 14);
    for (_, name) in &content.index_files {
        assert_eq!(name, &f(1));
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join(format!("db/t2/{V1}/meta/CDC.index"))).unwrap(),
        format!("{}\n", f(1))
    );

    // Rows: exactly the upstream rows, in commit order per table.
    let mut want_t1 = Vec::new();
    let mut want_t2 = Vec::new();
    for b in w.before_ddl.iter().chain(&w.after_ddl) {
        for tx in &b.txns {
            for r in &tx.rows {
                let e = expected_row(tx, r, protocol);
                if tx.table.info.name.O == "t1" {
                    want_t1.push(e);
                } else {
                    want_t2.push(e);
                }
            }
        }
    }
    let got_t1: Vec<DecodedRow> = content.rows_of("db", "t1").into_iter().cloned().collect();
    let got_t2: Vec<DecodedRow> = content.rows_of("db", "t2").into_iter().cloned().collect();
    assert_eq!(got_t1, want_t1);
    assert_eq!(got_t2, want_t2);
    assert!(content.data_files.iter().all(|d| !d.torn_tail));
}

#[tokio::test]
async fn canal_json_round_trip_and_layout() {
    round_trip(
        Protocol::CanalJson,
        "protocol=canal-json&enable-tidb-extension=true&date-separator=none",
    )
    .await;
}

#[tokio::test]
async fn csv_round_trip_and_layout() {
    round_trip(
        Protocol::Csv,
        "protocol=csv&include-commit-ts=true&date-separator=none",
    )
    .await;
}

#[tokio::test]
async fn date_directory_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = open_cfg(dir.path(), "protocol=csv");
    let sink = StorageSink::open(cfg.clone()).await.unwrap();
    let w = workload();
    sink.write(w.before_ddl[0].clone()).await.unwrap();
    sink.close().await.unwrap();
    let content = read_storage_dir(dir.path(), &cfg.encoder).unwrap();
    let file = &content.data_files[0];
    assert_eq!(file.date.len(), 10);
    assert_eq!(
        file.rel_path,
        PathBuf::from(format!("db/t1/{V1}/{}/CDC{:020}.csv", file.date, 1))
    );
    assert_eq!(content.rows_of("db", "t1").len(), 2);
}

fn many_small_txns(t: &Arc<TableDef>, from: i64, n: i64) -> TxnBatch {
    TxnBatch {
        txns: (from..from + n)
            .map(|i| {
                let ts = 10_000 + i as u64;
                txn(
                    t,
                    ts,
                    vec![change(
                        RowChangeKind::Insert,
                        ts,
                        None,
                        Some(vec![
                            Datum::Bytes(format!("key-{i:04}").into_bytes()),
                            Datum::Int(i),
                        ]),
                    )],
                )
            })
            .collect(),
    }
}

#[tokio::test]
async fn rotation_by_size_and_restart_continue_with_next_index() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = open_cfg(
        dir.path(),
        "protocol=canal-json&enable-tidb-extension=true&date-separator=none&file-size=1024&file-index-width=6",
    );
    let t = def(t2_info(), V1);
    let sink = StorageSink::open(cfg.clone()).await.unwrap();
    sink.write(many_small_txns(&t, 0, 30)).await.unwrap();
    sink.write(many_small_txns(&t, 30, 10)).await.unwrap();
    sink.close().await.unwrap();

    let content = read_storage_dir(dir.path(), &cfg.encoder).unwrap();
    let n_files = content.data_files.len();
    assert!(n_files >= 4, "expected several files, got {n_files}");
    for (i, f) in content.data_files.iter().enumerate() {
        assert_eq!(f.index, i as u64 + 1);
        assert_eq!(
            f.rel_path,
            PathBuf::from(format!("db/t2/{V1}/CDC{:06}.json", i + 1))
        );
        let size = std::fs::metadata(dir.path().join(&f.rel_path))
            .unwrap()
            .len();
        assert!(size <= 1024, "{} has {size} bytes", f.rel_path.display());
        assert!(!f.rows.is_empty());
    }
    let keys: Vec<i64> = content
        .rows_of("db", "t2")
        .iter()
        .map(|r| {
            String::from_utf8(r.get("v").unwrap().clone().unwrap())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(keys, (0..40).collect::<Vec<_>>());
    assert_eq!(content.index_files.len(), 1);
    assert_eq!(content.index_files[0].1, format!("CDC{n_files:06}.json"));

    // A second sink on the same directory never appends to an existing file.
    let last = dir.path().join(&content.data_files[n_files - 1].rel_path);
    let last_before = std::fs::read(&last).unwrap();
    let sink = StorageSink::open(cfg.clone()).await.unwrap();
    sink.write(many_small_txns(&t, 35, 5)).await.unwrap(); // a replay: duplicates
    sink.close().await.unwrap();
    assert_eq!(std::fs::read(&last).unwrap(), last_before);
    let content = read_storage_dir(dir.path(), &cfg.encoder).unwrap();
    let newest = content.data_files.last().unwrap();
    let new_files: Vec<u64> = content
        .data_files
        .iter()
        .filter(|f| f.index > n_files as u64)
        .map(|f| f.index)
        .collect();
    assert!(!new_files.is_empty());
    assert_eq!(new_files[0], n_files as u64 + 1);
    assert_eq!(
        new_files,
        (n_files as u64 + 1..=newest.index).collect::<Vec<_>>()
    );
    let replayed: usize = content
        .data_files
        .iter()
        .filter(|f| f.index > n_files as u64)
        .map(|f| f.rows.len())
        .sum();
    assert_eq!(replayed, 5);
    assert_eq!(
        content.index_files[0].1,
        format!("CDC{:06}.json", newest.index)
    );
    // The replayed rows are duplicates a consumer drops by commit ts.
    let mut seen = std::collections::BTreeSet::new();
    let mut dups = 0;
    for r in content.rows_of("db", "t2") {
        if !seen.insert(r.commit_ts.unwrap()) {
            dups += 1;
        }
    }
    assert_eq!(dups, 5);
    assert_eq!(seen.len(), 40);

    // A torn tail left by a crash is skipped by the reader, and a restart starts a new file.
    let newest_rows = newest.rows.clone();
    let mut torn = std::fs::read(dir.path().join(&newest.rel_path)).unwrap();
    torn.extend_from_slice(b"{\"id\":0,\"datab");
    std::fs::write(dir.path().join(&newest.rel_path), &torn).unwrap();
    let content = read_storage_dir(dir.path(), &cfg.encoder).unwrap();
    assert!(content.data_files.last().unwrap().torn_tail);
    assert_eq!(content.data_files.last().unwrap().rows, newest_rows);
}

#[tokio::test]
async fn database_level_ddl_writes_db_schema_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = open_cfg(dir.path(), "protocol=csv&date-separator=none");
    let sink = StorageSink::open(cfg.clone()).await.unwrap();
    let ddl = ddl_event(
        777,
        ActionType::CREATE_SCHEMA,
        "CREATE DATABASE db2",
        "db2",
        "",
        None,
    );
    sink.execute_ddl(ddl, None).await.unwrap();
    sink.close().await.unwrap();
    let mut expected = SchemaFile::without_columns("db2", "", 777);
    expected.query = "CREATE DATABASE db2".into();
    expected.action = 1;
    let content = read_storage_dir(dir.path(), &cfg.encoder).unwrap();
    assert_eq!(content.schema_files.len(), 1);
    assert_eq!(
        content.schema_files[0].rel_path,
        PathBuf::from(format!(
            "db2/meta/schema_777_{:010}.json",
            expected.checksum()
        ))
    );
    assert_eq!(content.schema_files[0].file, expected);
}

#[test]
fn bad_uris_are_clear_errors() {
    let cases = [
        ("file:///tmp/tidal-x", "missing protocol"),
        ("file:///tmp/tidal-x?protocol=maxwell", "maxwell"),
        ("file:///tmp/tidal-x?protocol=csv&speed=fast", "speed"),
        (
            "file:///tmp/tidal-x?protocol=csv&file-size=big",
            "file-size",
        ),
        ("file:///tmp/tidal-x?protocol=csv&file-size=-1", "file-size"),
    ];
    for (uri, needle) in cases {
        match StorageConfig::from_uri(&url::Url::parse(uri).unwrap()) {
            Err(SinkError::InvalidUri { reason, .. }) => {
                assert!(reason.contains(needle), "{uri}: {reason}")
            }
            other => panic!("{uri}: expected InvalidUri, got {other:?}"),
        }
    }
}
