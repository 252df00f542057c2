//! `tidal cli` against a server that requires HTTPS and basic auth: with `--ca` and the
//! credentials it works; without the CA the TLS handshake is refused, without or with wrong
//! credentials the server's 401 error comes through — and the password never shows in what the
//! CLI prints.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use tidal_control::api::auth::Secret;
use tidal_control::server::{Server, ServerConfig};
use tidal_sim::cluster::{SimCluster, SimConfig};

const USER: &str = "ops";
const PASSWORD: &str = "pw-9f3k-never-print";

/// Runs the real binary off the async runtime's threads.
async fn cli(args: Vec<String>, password: Option<&'static str>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidal"));
        cmd.arg("cli").args(&args).env_remove("TIDAL_PASSWORD");
        cmd.env_remove("TIDAL_USER").env_remove("TIDAL_SERVER");
        if let Some(p) = password {
            cmd.env("TIDAL_PASSWORD", p);
        }
        cmd.output().expect("run tidal cli")
    })
    .await
    .expect("join")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_talks_https_with_basic_auth() {
    let sim = SimCluster::start(SimConfig::default()).await.expect("sim");
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
        .expect("self-signed certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key");
    let cfg = ServerConfig {
        pd: sim.pd_endpoints(),
        addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("data"),
        workers: 1,
        tls_cert: Some(cert.clone()),
        tls_key: Some(key),
        auth_user: Some(USER.into()),
        auth_password: Some(Secret::new(PASSWORD)),
        ..ServerConfig::default()
    };
    let server = tokio::time::timeout(Duration::from_secs(30), Server::start(cfg))
        .await
        .expect("server start hung")
        .expect("server starts");
    let https = server.base_url();
    assert!(https.starts_with("https://"), "{https}");
    let ca = cert.display().to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["--server".to_string(), https.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(["--timeout".to_string(), "10".to_string()]);
        v
    };

    // Trusted, authenticated: a TSO (a positive integer) and an empty changefeed list.
    let out = cli(
        args(&["--ca", &ca, "--user", USER, "tso", "query"]),
        Some(PASSWORD),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let ts: u64 = stdout
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{stdout:?}: {e}"));
    assert!(ts > 0);
    let out = cli(
        args(&["--ca", &ca, "--user", USER, "changefeed", "list"]),
        Some(PASSWORD),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "[]");

    // No credentials: the server's 401 error, as TiCDC shows it.
    let out = cli(args(&["--ca", &ca, "tso", "query"]), None).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr.trim(),
        "Error: [CDC:ErrCredentialNotFound]user credential not found"
    );

    // Wrong password.
    let out = cli(
        args(&["--ca", &ca, "--user", USER, "tso", "query"]),
        Some("not-the-password"),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.starts_with("Error: [CDC:ErrUnauthorized]"),
        "{stderr}"
    );

    // The certificate is not trusted without --ca.
    let out = cli(args(&["--user", USER, "tso", "query"]), Some(PASSWORD)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.starts_with("Error: [CDC:ErrCliServerUnreachable]"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD) && !stdout.contains(PASSWORD));

    // A user without a password is a usage error caught before any request.
    let out = cli(args(&["--ca", &ca, "--user", USER, "tso", "query"]), None).await;
    let (_, stderr) = text(&out);
    assert_eq!(
        stderr.trim(),
        "Error: [CDC:ErrAPIInvalidParam]--user needs a password (--password or TIDAL_PASSWORD)"
    );

    server.shutdown().await;
    sim.shutdown().await;
}
