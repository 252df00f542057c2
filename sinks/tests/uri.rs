//! Sink URI parsing through the public API: schemes, parameters, errors, password masking.

use std::time::Duration;

use tidal_sinks::SinkError;
use tidal_sinks::open::open_sink;
use tidal_sinks::uri::{SinkConfig, mask_password, parse_sink_uri};

const SECRET: &str = "S3cr3t-Pass";

fn err(uri: &str) -> String {
    match parse_sink_uri(uri) {
        Ok(cfg) => panic!("{uri} parsed: {cfg:?}"),
        Err(e) => {
            assert!(matches!(e, SinkError::InvalidUri { .. }), "{uri}: {e:?}");
            let text = format!("{e} {e:?}");
            assert!(!text.contains(SECRET), "password leaked: {text}");
            e.to_string()
        }
    }
}

#[test]
fn mysql_and_tidb_uris() {
    let uri = format!("mysql://root:{SECRET}@10.0.0.1:4000/?worker-count=8&safe-mode=true");
    let SinkConfig::MySql(cfg) = parse_sink_uri(&uri).unwrap() else {
        panic!("not mysql");
    };
    assert_eq!(
        (cfg.host.as_str(), cfg.port, cfg.user.as_str()),
        ("10.0.0.1", 4000, "root")
    );
    assert_eq!(cfg.password, SECRET);
    assert_eq!(cfg.worker_count, 8);
    assert!(cfg.safe_mode);
    assert!(!format!("{cfg:?}").contains(SECRET));
    let SinkConfig::MySql(cfg) = parse_sink_uri("TiDB://u@h").unwrap() else {
        panic!("not mysql");
    };
    assert!(cfg.is_tidb);
    assert_eq!(cfg.port, 3306);
}

#[test]
fn blackhole_uri() {
    let SinkConfig::Blackhole(cfg) = parse_sink_uri("blackhole://?delay-ms=7").unwrap() else {
        panic!("not blackhole");
    };
    assert_eq!(cfg.delay, Duration::from_millis(7));
    let SinkConfig::Blackhole(cfg) = parse_sink_uri("blackhole://").unwrap() else {
        panic!("not blackhole");
    };
    assert_eq!(cfg.delay, Duration::ZERO);
}

#[test]
fn file_uri_goes_to_the_storage_sink() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file://{}?protocol=canal-json", dir.path().display());
    assert!(
        matches!(parse_sink_uri(&uri), Ok(SinkConfig::Storage(_))),
        "{uri}"
    );
}

#[test]
fn bad_uris_name_the_problem() {
    let e = err(&format!("ftp://u:{SECRET}@h/"));
    assert!(
        e.contains("\"ftp\"") && e.contains("mysql, tidb, file, blackhole"),
        "{e}"
    );
    for scheme in ["kafka", "pulsar", "s3"] {
        let e = err(&format!("{scheme}://u:{SECRET}@h/topic"));
        assert!(e.contains("not supported yet") && e.contains(scheme), "{e}");
    }
    let e = err(&format!("mysql+ssl://u:{SECRET}@h/"));
    assert!(e.contains("TLS"), "{e}");
    let e = err(&format!("mysql://u:{SECRET}@h/?worker-count=lots"));
    assert!(e.contains("worker-count") && e.contains("lots"), "{e}");
    assert!(e.contains("u:xxxxx@h"), "{e}");
    let e = err(&format!("mysql://u:{SECRET}@h/?worker-count=0"));
    assert!(e.contains("worker-count=0"), "{e}");
    let e = err(&format!("mysql://u:{SECRET}@h/?max-txn-row=5000"));
    assert!(e.contains("max-txn-row=5000"), "{e}");
    let e = err(&format!("mysql://u:{SECRET}@h/?batch-dml-enable=si"));
    assert!(e.contains("batch-dml-enable") && e.contains("si"), "{e}");
    let e = err(&format!("mysql://u:{SECRET}@h/?enable-batch-dml=true"));
    assert!(
        e.contains("enable-batch-dml") && e.contains("batch-dml-enable"),
        "{e}"
    );
    let e = err("blackhole://?delay-ms=-1");
    assert!(e.contains("delay-ms"), "{e}");
    let e = err("no scheme at all");
    assert!(e.contains("not a valid URI"), "{e}");
}

#[test]
fn masking() {
    assert_eq!(
        mask_password(&format!("mysql://root:{SECRET}@h:3306/?safe-mode=true")),
        "mysql://root:xxxxx@h:3306/?safe-mode=true"
    );
    assert_eq!(
        mask_password("mysql://root@h:3306/"),
        "mysql://root@h:3306/"
    );
}

#[tokio::test]
async fn open_sink_dispatches_on_the_scheme() {
    let sink = open_sink("blackhole://", "cf").await.unwrap();
    assert_eq!(sink.kind(), "blackhole");
    let dir = tempfile::tempdir().unwrap();
    let sink = open_sink(
        &format!("file://{}?protocol=csv", dir.path().display()),
        "cf",
    )
    .await
    .unwrap();
    assert_eq!(sink.kind(), "file");
    sink.close().await.unwrap();
    match open_sink(&format!("kafka://u:{SECRET}@k/t"), "cf").await {
        Err(SinkError::InvalidUri { uri, .. }) => assert_eq!(uri, "kafka://u:xxxxx@k/t"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("kafka opened"),
    }
}
