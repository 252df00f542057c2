//! `tidal cli` against the real HTTP API: a `ChangefeedService` over the embedded metadata store
//! and the embedded cluster's PD, served on loopback, driven the way an operator would — create
//! from a TOML file, list, query, pause, update, resume, remove, TSO — and checked both in what
//! the CLI prints and in what the server then holds.
//!
//! The CLI module is compiled into this test (`#[path]`) and run in-process with captured
//! output, so these tests do not depend on how `main.rs` dispatches; the `binary_*` tests run
//! the real `tidal` executable end to end.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use serde_json::Value;
use tidal_control::api::{ApiState, ServerInfo, serve_listener};
use tidal_control::gc::{GcConfig, GcManager, PdApi};
use tidal_control::meta::{ChangefeedRef, EmbeddedStore, FeedState, KeyLayout};
use tidal_control::metrics::Metrics;
use tidal_control::service::{ChangefeedService, ServiceConfig};
use tidal_ingest::pd::{PdClient, PdConfig};
use tidal_sim::cluster::{SimCluster, SimConfig};

#[allow(dead_code, unreachable_pub)]
#[path = "../src/commands/cli/mod.rs"]
mod cli;

use cli::{CliArgs, CliError, Io};

/// `tidal cli …` as `main.rs` parses it.
#[derive(Debug, Parser)]
#[command(name = "tidal")]
struct Top {
    #[command(subcommand)]
    command: TopCommand,
}

#[derive(Debug, Subcommand)]
enum TopCommand {
    Cli(CliArgs),
}

const SINK: &str = "mysql://root:s3cret@127.0.0.1:3306/";
const SINK_MASKED: &str = "mysql://root:xxxxx@127.0.0.1:3306/";

const CONFIG: &str = r#"
memory-quota = 536870912
case-sensitive = true
changefeed-error-stuck-duration = "45m"

[filter]
rules = ['test.*', '!test.skip']

[mounter]
worker-num = 4

[sink]
protocol = "canal-json"

[synced-status]
synced-check-interval = 120
checkpoint-interval = 10
"#;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("tidal-cli-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write file");
        p.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server side, on its own runtime so the CLI (which runs its own) can block.
struct Harness {
    rt: tokio::runtime::Runtime,
    sim: Option<SimCluster>,
    service: Arc<ChangefeedService>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    addr: String,
    dir: TempDir,
}

impl Harness {
    fn start(tag: &str) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = TempDir::new(tag);
        let store_dir = dir.0.join("meta");
        let (sim, service, server, addr) = rt.block_on(async {
            let sim = SimCluster::start(SimConfig::default()).await.expect("sim");
            let pd = PdClient::connect(PdConfig::new(sim.pd_endpoints()))
                .await
                .expect("pd client");
            let pd: Arc<dyn PdApi> = Arc::new(pd);
            let store = EmbeddedStore::open(&store_dir).await.expect("store");
            let metrics = Metrics::new();
            let gc = Arc::new(GcManager::new(
                Arc::clone(&pd),
                GcConfig::for_cluster("default"),
                Some(metrics.clone()),
            ));
            let service = Arc::new(ChangefeedService::new(
                Arc::new(store),
                KeyLayout::default(),
                pd,
                gc,
                ServiceConfig {
                    creator_version: "test".into(),
                    advertise_addr: "127.0.0.1:8300".into(),
                },
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            let state = ApiState::new(
                Arc::clone(&service),
                ServerInfo::new("node-1", "default", &addr),
                metrics,
            );
            let server = tokio::spawn(serve_listener(listener, state));
            (sim, service, server, addr)
        });
        Harness {
            rt,
            sim: Some(sim),
            service,
            server,
            addr,
            dir,
        }
    }

    /// Runs `tidal cli --server <this> <args>` in-process with `stdin`; returns the result and
    /// what it printed.
    fn cli(&self, args: &[&str], stdin: &str) -> (Result<(), CliError>, String) {
        run_cli(&self.addr, args, stdin)
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let (r, out) = self.cli(args, "");
        if let Err(e) = r {
            panic!("tidal cli {args:?} failed: {e}\noutput:\n{out}");
        }
        out
    }

    fn cli_err(&self, args: &[&str]) -> (CliError, String) {
        let (r, out) = self.cli(args, "");
        match r {
            Ok(()) => panic!("tidal cli {args:?} succeeded:\n{out}"),
            Err(e) => (e, out),
        }
    }

    fn view(&self, id: &str) -> Option<tidal_control::service::ChangefeedView> {
        let cf = ChangefeedRef::in_keyspace("default", id).expect("ref");
        self.rt.block_on(self.service.get(&cf)).ok()
    }

    fn tso(&self) -> u64 {
        self.rt.block_on(self.service.tso()).expect("tso")
    }

    fn shutdown(mut self) {
        self.server.abort();
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}

fn run_cli(server: &str, args: &[&str], stdin: &str) -> (Result<(), CliError>, String) {
    let mut argv = vec!["tidal", "cli", "--server", server, "--timeout", "20"];
    argv.extend_from_slice(args);
    let top = Top::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let TopCommand::Cli(cli_args) = top.command;
    let mut out = Vec::new();
    let mut input = stdin.as_bytes();
    let r = cli::run_with(
        cli_args,
        &mut Io {
            out: &mut out,
            input: &mut input,
        },
    );
    (r, String::from_utf8(out).expect("utf-8 output"))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The JSON after `Info: ` in a create/update answer.
fn info_json(out: &str) -> Value {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("Info: "))
        .unwrap_or_else(|| panic!("no Info line in:\n{out}"));
    json(line)
}

#[track_caller]
fn assert_json_time(s: &Value) {
    let s = s.as_str().expect("a string");
    let b = s.as_bytes();
    assert!(
        b.len() == 23 && b[4] == b'-' && b[10] == b' ' && b[13] == b':' && b[19] == b'.',
        "not a JSONTime: {s:?}"
    );
}

#[test]
fn changefeed_lifecycle() {
    let h = Harness::start("lifecycle");
    let cfg = h.dir.write("cf.toml", CONFIG);

    // create with a config file
    let before = h.tso();
    let out = h.cli_ok(&[
        "changefeed",
        "create",
        "--changefeed-id",
        "cf-1",
        "--sink-uri",
        SINK,
        "--config",
        &cfg,
    ]);
    assert!(
        out.starts_with("Create changefeed successfully!\nID: cf-1\nInfo: {"),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "password leaked:\n{out}");
    let info = info_json(&out);
    assert_eq!(info["id"], "cf-1");
    assert_eq!(info["sink_uri"], SINK_MASKED);
    assert_eq!(info["state"], "normal");
    assert_eq!(info["config"]["memory_quota"], 536_870_912);
    assert_eq!(info["config"]["filter"]["rules"][1], "!test.skip");
    let start_ts = info["start_ts"].as_u64().expect("start_ts");
    assert!(
        start_ts > before && start_ts < h.tso(),
        "start ts {start_ts}"
    );
    // what the server stored: the file over the defaults
    let v = h.view("cf-1").expect("created");
    assert_eq!(v.info.sink_uri, SINK);
    assert_eq!(v.info.config.memory_quota, Some(536_870_912));
    assert_eq!(v.info.config.case_sensitive, Some(true));
    assert_eq!(
        v.info.config.changefeed_error_stuck_duration,
        Some(45 * 60 * 1_000_000_000)
    );
    assert_eq!(
        v.info.config.mounter.as_ref().and_then(|m| m.worker_num),
        Some(4)
    );
    assert_eq!(
        v.info.config.sink.as_ref().and_then(|s| s.protocol.clone()),
        Some("canal-json".to_string())
    );
    assert_eq!(
        v.info.config.extra["synced-status"],
        serde_json::json!({"synced-check-interval": 120, "checkpoint-interval": 10})
    );
    assert_eq!(v.info.config.check_gc_safe_point, Some(true));

    // creating it again is the server's error, passed through
    let (e, _) = h.cli_err(&[
        "changefeed",
        "create",
        "-c",
        "cf-1",
        "--sink-uri",
        SINK,
        "--no-confirm",
    ]);
    assert_eq!(e.code, "CDC:ErrChangeFeedAlreadyExists");
    assert_eq!(
        e.to_string(),
        "[CDC:ErrChangeFeedAlreadyExists]changefeed already exists, cf-1"
    );

    // list
    let list = json(&h.cli_ok(&["changefeed", "list"]));
    assert_eq!(
        list,
        serde_json::json!([{
            "id": "cf-1",
            "keyspace": "default",
            "summary": {
                "state": "normal",
                "tso": start_ts,
                "checkpoint": list[0]["summary"]["checkpoint"].clone(),
                "error": null,
            }
        }])
    );
    assert_json_time(&list[0]["summary"]["checkpoint"]);

    // query --simple: the list item of the API
    let simple = json(&h.cli_ok(&["changefeed", "query", "-s", "-c", "cf-1"]));
    assert_eq!(simple["id"], "cf-1");
    assert_eq!(simple["state"], "normal");
    assert_eq!(simple["checkpoint_tso"], start_ts);
    assert_eq!(simple["error"], Value::Null);

    // query (full): cdc cli's cfMeta
    let full_text = h.cli_ok(&["changefeed", "query", "--changefeed-id", "cf-1"]);
    assert!(
        full_text.starts_with("{\n  \"upstream_id\": "),
        "{full_text}"
    );
    let full = json(&full_text);
    assert_eq!(full["id"], "cf-1");
    assert_eq!(full["keyspace"], "default");
    assert_eq!(full["sink_uri"], SINK_MASKED);
    assert_eq!(full["start_ts"], start_ts);
    assert_eq!(full["checkpoint_tso"], start_ts);
    assert_eq!(full["target_ts"], 0);
    assert_eq!(full["state"], "normal");
    assert_eq!(full["creator_version"], "test");
    assert_eq!(full["config"]["mounter"]["worker_num"], 4);
    assert_eq!(full["config"]["sync_point_interval"], "10m0s");
    assert_json_time(&full["create_time"]);
    assert_json_time(&full["checkpoint_time"]);
    assert!(full.get("error").is_none());

    // update while running: the diff is shown, then the server refuses
    let target = h.tso() + (1 << 30);
    let target_s = target.to_string();
    let (e, out) = h.cli_err(&[
        "changefeed",
        "update",
        "-c",
        "cf-1",
        "--target-ts",
        &target_s,
        "--no-confirm",
    ]);
    assert_eq!(
        e.to_string(),
        "[CDC:ErrChangefeedUpdateRefused]can only update changefeed config when it is stopped \
         or failed"
    );
    assert_eq!(
        out,
        format!(
            "Diff of changefeed config:\n{{Type:update Path:[target_ts] From:0 To:{target}}}\n"
        )
    );
    assert_eq!(h.view("cf-1").expect("still there").info.target_ts, 0);

    // resume while running: refused before anything is sent
    let (e, _) = h.cli_err(&["changefeed", "resume", "-c", "cf-1"]);
    assert_eq!(
        e.to_string(),
        "[CDC:ErrChangefeedUpdateRefused]can only resume changefeed when it is stopped, failed, \
         or finished, but current state is normal"
    );

    // pause
    assert_eq!(h.cli_ok(&["changefeed", "pause", "-c", "cf-1"]), "");
    assert_eq!(
        h.view("cf-1").expect("paused").info.state,
        FeedState::Stopped
    );
    let list = json(&h.cli_ok(&["changefeed", "list"]));
    assert_eq!(list[0]["summary"]["state"], "stopped");

    // update while paused, declining at the prompt: nothing changes
    let (r, out) = h.cli(
        &[
            "changefeed",
            "update",
            "-c",
            "cf-1",
            "--target-ts",
            &target_s,
        ],
        "n\n",
    );
    r.expect("declined update is not an error");
    assert!(
        out.ends_with(
            "Could you agree to apply changes above to changefeed [Y/N]\nNo update to changefeed.\n"
        ),
        "{out}"
    );
    assert_eq!(h.view("cf-1").expect("cf").info.target_ts, 0);

    // nothing to change
    assert_eq!(
        h.cli_ok(&["changefeed", "update", "-c", "cf-1"]),
        "changefeed config is the same with the old one, do nothing\n"
    );

    // update while paused, confirming: target ts, sink URI and a new config file
    let cfg2 = h.dir.write(
        "cf2.toml",
        "memory-quota = 268435456\n[filter]\nrules = ['other.*']\n",
    );
    let new_sink = "mysql://app:n3w-pass@10.0.0.9:4000/";
    let (r, out) = h.cli(
        &[
            "changefeed",
            "update",
            "-c",
            "cf-1",
            "--target-ts",
            &target_s,
            "--sink-uri",
            new_sink,
            "--config",
            &cfg2,
        ],
        "y\n",
    );
    r.unwrap_or_else(|e| panic!("update failed: {e}\n{out}"));
    assert!(!out.contains("n3w-pass"), "password leaked:\n{out}");
    for line in [
        "Diff of changefeed config:",
        "{Type:update Path:[config memory_quota] From:536870912 To:268435456}",
        "{Type:update Path:[config filter rules] From:[\"test.*\",\"!test.skip\"] To:[\"other.*\"]}",
        "{Type:update Path:[config mounter worker_num] From:4 To:16}",
        "{Type:update Path:[sink_uri] From:mysql://root:xxxxx@127.0.0.1:3306/ To:mysql://app:xxxxx@10.0.0.9:4000/}",
        &format!("{{Type:update Path:[target_ts] From:0 To:{target}}}"),
        "Could you agree to apply changes above to changefeed [Y/N]",
        "Update changefeed config successfully! ",
        "ID: cf-1",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
    let info = info_json(&out);
    assert_eq!(info["target_ts"], target);
    assert_eq!(info["sink_uri"], "mysql://app:xxxxx@10.0.0.9:4000/");
    assert_eq!(info["config"]["memory_quota"], 268_435_456);
    let v = h.view("cf-1").expect("updated");
    assert_eq!(v.info.target_ts, target);
    assert_eq!(v.info.sink_uri, new_sink);
    assert_eq!(v.info.config.memory_quota, Some(268_435_456));
    assert_eq!(v.info.config.filter_rules(), vec!["other.*".to_string()]);
    // the file replaced the whole config: unset keys are back to the defaults
    assert_eq!(v.info.config.case_sensitive, Some(false));
    assert_eq!(v.info.state, FeedState::Stopped);

    // resume with a bad overwrite ts: refused locally
    let (e, _) = h.cli_err(&[
        "changefeed",
        "resume",
        "-c",
        "cf-1",
        "--overwrite-checkpoint-ts",
        "soon",
    ]);
    assert_eq!(e.code, "CDC:ErrCliInvalidCheckpointTs");
    let future = (h.tso() + (1 << 40)).to_string();
    let (e, _) = h.cli_err(&[
        "changefeed",
        "resume",
        "-c",
        "cf-1",
        "--overwrite-checkpoint-ts",
        &future,
    ]);
    assert_eq!(e.code, "CDC:ErrCliCheckpointTsIsInFuture");
    // declining the overwrite prompt aborts
    let (r, out) = h.cli(
        &[
            "changefeed",
            "resume",
            "-c",
            "cf-1",
            "--overwrite-checkpoint-ts",
            "now",
        ],
        "n\n",
    );
    assert_eq!(
        r.unwrap_err().to_string(),
        "[CDC:ErrCliAborted]command 'cli changefeed resume' is aborted by user"
    );
    assert!(out.ends_with("Abort changefeed resume.\n"), "{out}");
    assert_eq!(h.view("cf-1").expect("cf").info.state, FeedState::Stopped);

    // resume (recent checkpoint: no question asked)
    assert_eq!(
        h.cli_ok(&["changefeed", "resume", "-c", "cf-1"]),
        "Resume changefeed successfully! \nID: cf-1\n"
    );
    assert_eq!(h.view("cf-1").expect("cf").info.state, FeedState::Normal);

    // pause, then resume from a new checkpoint, confirming
    h.cli_ok(&["changefeed", "pause", "-c", "cf-1"]);
    let (r, out) = h.cli(
        &[
            "changefeed",
            "resume",
            "-c",
            "cf-1",
            "--overwrite-checkpoint-ts",
            "now",
        ],
        "y\n",
    );
    r.unwrap_or_else(|e| panic!("resume failed: {e}\n{out}"));
    assert!(
        out.starts_with("You are overwriting the checkpoint of changefeed(cf-1) to "),
        "{out}"
    );
    assert!(
        out.ends_with("Resume changefeed successfully! \nID: cf-1\n"),
        "{out}"
    );
    let v = h.view("cf-1").expect("cf");
    assert_eq!(v.info.state, FeedState::Normal);
    assert!(v.status.checkpoint_ts > start_ts);
    let checkpoint = v.status.checkpoint_ts;

    // remove
    assert_eq!(
        h.cli_ok(&["changefeed", "remove", "-c", "cf-1"]),
        format!(
            "Changefeed remove successfully.\nID: cf-1\nCheckpointTs: {checkpoint}\nSinkURI: \
             mysql://app:xxxxx@10.0.0.9:4000/\n"
        )
    );
    assert!(h.view("cf-1").is_none());
    assert_eq!(
        h.cli_ok(&["changefeed", "remove", "-c", "cf-1"]),
        "Changefeed not found.\nID: cf-1\n"
    );
    assert_eq!(h.cli_ok(&["changefeed", "list", "--all"]), "[]\n");

    // unknown changefeeds
    let (e, _) = h.cli_err(&["changefeed", "query", "-c", "cf-1"]);
    assert_eq!(
        e.to_string(),
        "[CDC:ErrChangeFeedNotExists]changefeed not exists, cf-1"
    );
    let (e, _) = h.cli_err(&["changefeed", "query", "-s", "-c", "cf-1"]);
    assert_eq!(
        e.to_string(),
        "[CDC:ErrChangeFeedNotExists]changefeed not exists, cf-1"
    );
    let (e, _) = h.cli_err(&["changefeed", "pause", "-c", "cf-1"]);
    assert_eq!(e.code, "CDC:ErrChangeFeedNotExists");

    h.shutdown();
}

#[test]
fn create_validation_and_tso() {
    let h = Harness::start("validation");

    // a config file with an unknown key: refused before anything is sent
    let bad = h
        .dir
        .write("bad.toml", "memory-quota = 1\nno-such-option = true\n");
    let (e, _) = h.cli_err(&[
        "changefeed",
        "create",
        "-c",
        "cf-bad",
        "--sink-uri",
        "blackhole://",
        "--config",
        &bad,
    ]);
    assert_eq!(e.code, "CDC:ErrInvalidReplicaConfig");
    assert!(
        e.message
            .ends_with("contained unknown configuration options: no-such-option"),
        "{e}"
    );
    // an invalid value is refused with the server's own validation
    let bad = h
        .dir
        .write("bad2.toml", "[consistent]\nlevel = \"strong\"\n");
    let (e, _) = h.cli_err(&[
        "changefeed",
        "create",
        "-c",
        "cf-bad",
        "--sink-uri",
        "blackhole://",
        "--config",
        &bad,
    ]);
    assert_eq!(e.code, "CDC:ErrInvalidReplicaConfig");
    assert!(h.view("cf-bad").is_none());

    // the server's checks come back as they are
    let (e, _) = h.cli_err(&["changefeed", "create", "-c", "cf-x", "--no-confirm"]);
    assert_eq!(e.code, "CDC:ErrSinkURIInvalid");
    let (e, _) = h.cli_err(&[
        "changefeed",
        "create",
        "-c",
        "bad_id!",
        "--sink-uri",
        "blackhole://",
        "--no-confirm",
    ]);
    assert_eq!(e.code, "CDC:ErrAPIInvalidParam");

    // flags without a file; no id: the server generates one
    let out = h.cli_ok(&[
        "changefeed",
        "create",
        "--sink-uri",
        "blackhole://",
        "--disable-gc-check",
        "--no-confirm",
    ]);
    let info = info_json(&out);
    let id = info["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 36, "generated id {id}");
    assert_eq!(info["config"]["check_gc_safe_point"], false);
    assert_eq!(info["config"]["ignore_ineligible_table"], true);
    let v = h.view(&id).expect("created");
    assert_eq!(v.info.config.check_gc_safe_point, Some(false));
    assert_eq!(v.info.config.memory_quota, Some(1 << 30));

    // tso query: one integer, PD's time
    let before = h.tso();
    let out = h.cli_ok(&["tso", "query"]);
    let after = h.tso();
    let ts: u64 = out
        .trim_end()
        .parse()
        .unwrap_or_else(|e| panic!("{out:?}: {e}"));
    assert!(
        out.ends_with('\n') && before < ts && ts < after,
        "{before} {ts} {after}"
    );

    h.shutdown();
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn unreachable_server_is_named() {
    let port = closed_port();
    let server = format!("127.0.0.1:{port}");
    for args in [
        &["tso", "query"][..],
        &["changefeed", "list"][..],
        &["changefeed", "query", "-c", "cf-1"][..],
    ] {
        let (r, out) = run_cli(&server, args, "");
        let e = r.expect_err("must fail");
        assert_eq!(e.code, "CDC:ErrCliServerUnreachable", "{e}");
        assert!(
            e.message.starts_with(&format!(
                "cannot connect to the Tidal server at http://127.0.0.1:{port}: "
            )),
            "{e}"
        );
        assert_eq!(out, "");
    }
}

#[test]
fn bad_server_addresses_are_refused() {
    let (r, _) = run_cli("ftp://127.0.0.1:8300", &["tso", "query"], "");
    assert_eq!(
        r.unwrap_err().to_string(),
        "[CDC:ErrAPIInvalidParam]server ftp://127.0.0.1:8300: the address must be host:port, \
         http://host:port or https://host:port"
    );
}

fn tidal() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidal"));
    c.env_remove("TIDAL_SERVER");
    c
}

#[test]
fn binary_unreachable_server() {
    let port = closed_port();
    let out = tidal()
        .args(["cli", "changefeed", "list", "--server"])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .expect("run tidal");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "Error: [CDC:ErrCliServerUnreachable]cannot connect to the Tidal server at \
             http://127.0.0.1:{port}: "
        )),
        "{err}"
    );
}

#[test]
fn binary_end_to_end() {
    let h = Harness::start("binary");
    let cfg = h.dir.write("cf.toml", CONFIG);
    let run = |args: &[&str]| {
        let out = tidal()
            .arg("cli")
            .args(args)
            .env("TIDAL_SERVER", &h.addr)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run tidal");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "changefeed",
        "create",
        "-c",
        "cf-bin",
        "--sink-uri",
        SINK,
        "--config",
        &cfg,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with("Create changefeed successfully!\nID: cf-bin\n"),
        "{out}"
    );
    let (code, out, _) = run(&["changefeed", "query", "-c", "cf-bin"]);
    assert_eq!(code, Some(0));
    assert_eq!(json(&out)["sink_uri"], SINK_MASKED);
    let (code, _, err) = run(&[
        "changefeed",
        "update",
        "-c",
        "cf-bin",
        "--target-ts",
        "18446744073709551615",
        "--no-confirm",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("Error: [CDC:ErrChangefeedUpdateRefused]can only update changefeed config"),
        "{err}"
    );
    let (code, out, _) = run(&["tso", "query"]);
    assert_eq!(code, Some(0));
    assert!(out.trim_end().parse::<u64>().is_ok(), "{out}");
    h.shutdown();
}
