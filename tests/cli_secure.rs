//! `tidal cli` against a server that requires HTTPS and basic auth: with `--ca` and the
//! credentials it works; without the CA the TLS handshake is refused, without or with wrong
//! credentials the server's 401 error comes through — and the password never shows in what the
//! CLI prints.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("write password");
    // The real binary, secured by flags alone.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidal"))
        .args(["server", "--pd", &sim.pd_endpoints().join(",")])
        .args([
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--log-level",
            "warn",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["--auth-user", USER])
        .arg("--auth-password-file")
        .arg(&password_file)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tidal server");
    let stdout = child.stdout.take().expect("stdout");
    let https = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(60), https)
        .await
        .expect("server start hung")
        .expect("join")
        .expect("read stdout");
    let mut server = KillOnDrop(Some(child));
    let https = line
        .trim()
        .strip_prefix("tidal server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
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

    // --log-level warn: no INFO lines; not a terminal: no colour codes.
    let mut child = server.0.take().expect("server running");
    sigterm(&child);
    let out = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        err
    })
    .await
    .expect("join");
    assert!(!out.contains(" INFO "), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "colour codes in a non-terminal log: {out:?}"
    );
    assert!(!out.contains(PASSWORD));
    sim.shutdown().await;
}

/// Kills the server if the test fails before stopping it.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Asks the server to stop gracefully (SIGTERM through the `kill` program).
fn sigterm(child: &std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}
