//! Security of the control plane end to end: a real node served over HTTPS with a certificate
//! made at test time, HTTP basic auth, and the promise that a sink password never appears in
//! any API response or any log line the process writes (a tracing subscriber captures every
//! line into a buffer for the check).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tidal_control::server::{Server, ServerConfig};
use tidal_sim::cluster::{SimCluster, SimConfig};

const SECRET: &str = "s3cr3t-pw";
const SINK: &str = "mysql://user:s3cr3t-pw@127.0.0.1:1/";
const MASKED_SINK: &str = "mysql://user:xxxxx@127.0.0.1:1/";
const API_USER: &str = "admin";
const API_PASSWORD: &str = "api-pa55word";

/// Every log line of this test process.
fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("install the log capture");
        buf
    }))
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> String {
    let buf = log_buffer();
    let b = buf.lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&b).into_owned()
}

struct TestCert {
    cert_pem: String,
    _dir: tempfile::TempDir,
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
}

fn make_cert() -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
        .expect("self-signed certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let cert_pem = ck.cert.pem();
    std::fs::write(&cert_path, &cert_pem).expect("write cert");
    std::fs::write(&key_path, ck.key_pair.serialize_pem()).expect("write key");
    TestCert {
        cert_pem,
        _dir: dir,
        cert_path,
        key_path,
    }
}

fn base_config(pd: Vec<String>, data_dir: &Path) -> ServerConfig {
    ServerConfig {
        pd,
        addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data_dir.to_path_buf(),
        workers: 1,
        checkpoint_interval: Duration::from_millis(100),
        gc_tick: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        metrics_interval: Duration::from_millis(500),
        ..ServerConfig::default()
    }
}

/// An HTTP client; `auth` adds basic credentials to every request it makes via [`Api::call`].
struct Api {
    base: String,
    http: reqwest::Client,
    auth: Option<(String, String)>,
    /// Every response body seen, for the secret check.
    bodies: Mutex<Vec<String>>,
}

impl Api {
    fn new(base: String, http: reqwest::Client, auth: Option<(&str, &str)>) -> Api {
        Api {
            base,
            http,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            bodies: Mutex::new(Vec::new()),
        }
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        auth: Option<(&str, &str)>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(20));
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(text.clone());
        (status, headers, text)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let auth = self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let (status, _, text) = self.raw(method, path, body, auth).await;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    fn all_bodies(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn https_client(cert_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("test certificate"),
        )
        .build()
        .expect("https client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_basic_auth_and_no_secret_leaks() {
    let _ = log_buffer();
    let sim = SimCluster::start(SimConfig::default()).await.expect("sim");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = make_cert();
    let mut cfg = base_config(sim.pd_endpoints(), dir.path());
    cfg.tls_cert = Some(cert.cert_path.clone());
    cfg.tls_key = Some(cert.key_path.clone());
    cfg.auth_user = Some(API_USER.into());
    cfg.auth_password = Some(tidal_control::api::auth::Secret::new(API_PASSWORD));
    // The config's Debug output (what a startup log would print) hides the API password.
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains(API_PASSWORD), "{dbg}");
    tracing::info!(config = ?cfg, "starting the test server");

    let server = Server::start(cfg).await.expect("server");
    let addr = server.local_addr();
    assert_eq!(server.base_url(), format!("https://{addr}"));
    let api = Api::new(
        server.base_url(),
        https_client(&cert.cert_pem),
        Some((API_USER, API_PASSWORD)),
    );

    // --- TLS: plain HTTP on the same port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/api/v2/health"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // A client that does not trust the certificate is refused too.
    let untrusting = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .build()
        .expect("client")
        .get(format!("https://{addr}/api/v2/health"))
        .send()
        .await;
    assert!(untrusting.is_err(), "untrusted certificate accepted");

    // --- Basic auth.
    let (s, _, body) = api.raw(Method::GET, "/api/v2/health", None, None).await;
    assert_eq!(
        (s, body.trim()),
        (StatusCode::OK, "{}"),
        "health stays open"
    );

    let (s, headers, body) = api
        .raw(Method::GET, "/api/v2/changefeeds", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        headers
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"tidal\", charset=\"UTF-8\"")
    );
    let v: Value = serde_json::from_str(&body).expect("json error");
    assert_eq!(
        v,
        json!({
            "error_msg": "[CDC:ErrCredentialNotFound]user credential not found",
            "error_code": "CDC:ErrCredentialNotFound",
        })
    );

    let (s, headers, body) = api
        .raw(
            Method::GET,
            "/api/v2/changefeeds",
            None,
            Some((API_USER, "guess-Zq9")),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(headers.contains_key(reqwest::header::WWW_AUTHENTICATE));
    let v: Value = serde_json::from_str(&body).expect("json error");
    assert_eq!(v["error_code"], "CDC:ErrUnauthorized");
    assert!(
        !body.contains("guess-Zq9"),
        "the guessed password is echoed: {body}"
    );

    let (s, _, _) = api
        .raw(
            Method::GET,
            "/api/v2/status",
            None,
            Some(("root", API_PASSWORD)),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "wrong user");
    let (s, _, _) = api.raw(Method::GET, "/metrics", None, None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "/metrics is protected by default"
    );
    let (s, _, _) = api.raw(Method::POST, "/api/v2/tso", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, v) = api.call(Method::GET, "/api/v2/changefeeds", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"total": 0, "items": []}));
    let (s, _) = api.call(Method::GET, "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);

    // --- Secrets: a changefeed whose sink has a password.
    let (s, v) = api
        .call(
            Method::POST,
            "/api/v2/changefeeds",
            Some(json!({"changefeed_id": "leaky", "sink_uri": SINK})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "create: {v}");
    assert_eq!(v["sink_uri"], MASKED_SINK);

    // Errors that quote the URI.
    let (s, v) = api
        .call(
            Method::POST,
            "/api/v2/changefeeds",
            Some(json!({"changefeed_id": "leaky", "sink_uri": SINK})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "duplicate: {v}");
    let (s, v) = api
        .call(
            Method::POST,
            "/api/v2/changefeeds",
            Some(json!({"changefeed_id": "bad", "sink_uri": format!("{SINK}?bogus-param=1")})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "invalid sink: {v}");
    assert_eq!(v["error_code"], "CDC:ErrSinkURIInvalid");
    let (s, v) = api
        .call(
            Method::POST,
            "/api/v2/changefeeds",
            Some(json!({"changefeed_id": "bad", "sink_uri": format!("nosuch://user:{SECRET}@h/")})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown scheme: {v}");
    let (s, v) = api
        .call(
            Method::PUT,
            "/api/v2/changefeeds/leaky",
            Some(json!({"sink_uri": format!("{SINK}?bogus-param=1")})),
        )
        .await;
    assert!(s.is_client_error(), "update with a bad sink: {v}");

    // Let the coordinator try (and fail) to reach the sink, so its errors are recorded and
    // logged, then read everything back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = api
            .call(Method::GET, "/api/v2/changefeeds/leaky", None)
            .await;
        assert_eq!(s, StatusCode::OK, "get: {v}");
        assert_eq!(v["sink_uri"], MASKED_SINK);
        if v.get("error").is_some_and(|e| !e.is_null()) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("the changefeed never reported the sink failure: {v}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for path in [
        "/api/v2/changefeeds",
        "/api/v2/changefeeds/leaky/status",
        "/api/v2/changefeeds/leaky/diagnosis",
        "/api/v2/changefeeds/leaky/synced",
        "/api/v2/processors",
        "/api/v2/unsafe/metadata",
    ] {
        let (s, v) = api.call(Method::GET, path, None).await;
        assert!(
            s == StatusCode::OK || s.is_client_error() || s.is_server_error(),
            "{path}: {v}"
        );
    }
    // The metadata dump really contains the changefeed (so the masking there is exercised).
    let (_, meta) = api.call(Method::GET, "/api/v2/unsafe/metadata", None).await;
    let meta_text = meta.to_string();
    assert!(
        meta_text.contains("mysql://user:xxxxx@127.0.0.1:1/"),
        "{meta_text}"
    );
    let (s, _) = api
        .call(Method::POST, "/api/v2/changefeeds/leaky/pause", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api
        .call(Method::DELETE, "/api/v2/changefeeds/leaky", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    server.shutdown().await;

    let bodies = api.all_bodies();
    assert!(
        bodies.len() > 15,
        "too few responses checked: {}",
        bodies.len()
    );
    for b in &bodies {
        assert!(
            !b.contains(SECRET),
            "a response leaks the sink password: {b}"
        );
        assert!(
            !b.contains(API_PASSWORD),
            "a response leaks the API password: {b}"
        );
    }
    let logs = captured_logs();
    if std::env::var_os("TIDAL_TEST_DUMP_LOGS").is_some() {
        eprintln!("{logs}");
    }
    assert!(
        logs.contains("changefeed created"),
        "the log capture saw nothing: {logs}"
    );
    for line in logs.lines() {
        assert!(
            !line.contains(SECRET),
            "a log line leaks the sink password: {line}"
        );
        assert!(
            !line.contains(API_PASSWORD),
            "a log line leaks the API password: {line}"
        );
    }
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_with_auth_and_open_metrics() {
    let _ = log_buffer();
    let sim = SimCluster::start(SimConfig::default()).await.expect("sim");
    let dir = tempfile::tempdir().expect("tempdir");
    let pw_file = dir.path().join("api-password");
    std::fs::write(&pw_file, format!("{API_PASSWORD}\n")).expect("password file");
    let mut cfg = base_config(sim.pd_endpoints(), dir.path());
    cfg.auth_user = Some(API_USER.into());
    cfg.auth_password_file = Some(pw_file);
    cfg.auth_metrics = false;
    let server = Server::start(cfg).await.expect("server");
    assert!(server.base_url().starts_with("http://"));
    let api = Api::new(server.base_url(), reqwest::Client::new(), None);

    let (s, _, body) = api.raw(Method::GET, "/metrics", None, None).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "/metrics is open with auth-metrics = false"
    );
    assert!(body.contains("# TYPE"), "{body}");
    let (s, _, _) = api.raw(Method::GET, "/api/v2/captures", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = api
        .raw(
            Method::GET,
            "/api/v2/captures",
            None,
            Some((API_USER, API_PASSWORD)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "password read from the file");
    server.shutdown().await;
    drop(sim);
}

#[tokio::test]
async fn bad_tls_files_refuse_the_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = make_cert();
    let start = |cert_path: std::path::PathBuf, key_path: std::path::PathBuf| {
        let mut cfg = base_config(vec!["127.0.0.1:1".into()], dir.path());
        cfg.tls_cert = Some(cert_path);
        cfg.tls_key = Some(key_path);
        Server::start(cfg)
    };
    let missing = dir.path().join("missing.pem");
    let e = start(missing.clone(), cert.key_path.clone())
        .await
        .expect_err("missing cert");
    assert!(
        e.to_string()
            .starts_with(&format!("tls-cert {}: cannot read", missing.display())),
        "{e}"
    );
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not pem at all").expect("write");
    let e = start(cert.cert_path.clone(), garbage.clone())
        .await
        .expect_err("garbage key");
    assert_eq!(
        e.to_string(),
        format!("tls-key {}: no PRIVATE KEY block found", garbage.display())
    );
    // A key that does not belong to the certificate.
    let other = make_cert();
    let e = start(cert.cert_path.clone(), other.key_path.clone())
        .await
        .expect_err("mismatched key");
    assert!(e.to_string().starts_with("tls-cert "), "{e}");
}
