//! The HTTP side of `tidal cli`: one request per call, each with a bounded timeout.
//!
//! A CLI that hangs on an unreachable or stuck server is worse than one that fails, so every
//! request has a connect timeout and an overall timeout, and a failure names the server and
//! says what went wrong (refused, timed out, not the API's JSON). Server errors come back in
//! TiCDC's `{"error_msg","error_code"}` shape and are passed through unchanged.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{CliError, codes};

/// Upper bound on establishing a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of one server's Open API v2.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    base: String,
    timeout: Duration,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

/// TiCDC's error body.
#[derive(Debug, Deserialize)]
struct HttpErrorBody {
    error_msg: String,
    #[serde(default)]
    error_code: String,
}

/// How the client proves who it is and whom it trusts: `--ca` for an HTTPS server whose
/// certificate is not signed by a public authority, `--user`/`--password` for a server with
/// basic auth. The password never appears in `Debug` output.
#[derive(Clone, Default)]
pub(crate) struct ClientSecurity {
    /// PEM certificates (a CA, or the server's self-signed certificate) to trust for HTTPS.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// Basic-auth user and password.
    pub(crate) auth: Option<(String, String)>,
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .field("user", &self.auth.as_ref().map(|(u, _)| u.as_str()))
            .finish_non_exhaustive()
    }
}

/// Normalizes `--server`: `host:port` gets `http://`, trailing slashes go; `https://` is kept.
pub(crate) fn normalize_server(server: &str) -> Result<String, CliError> {
    let s = server.trim();
    if s.is_empty() {
        return Err(CliError::new(
            codes::INVALID_PARAM,
            "empty --server address",
        ));
    }
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let lower = with_scheme.to_ascii_lowercase();
    let scheme_len = if lower.starts_with("https://") {
        "https://".len()
    } else if lower.starts_with("http://") {
        "http://".len()
    } else {
        return Err(CliError::new(
            codes::INVALID_PARAM,
            format!(
                "server {with_scheme}: the address must be host:port, http://host:port or \
                 https://host:port"
            ),
        ));
    };
    let trimmed = with_scheme.trim_end_matches('/');
    if trimmed.len() <= scheme_len {
        return Err(CliError::new(
            codes::INVALID_PARAM,
            format!("server {with_scheme}: missing host"),
        ));
    }
    Ok(trimmed.to_string())
}

/// Percent-encodes a path segment (changefeed ids are `[A-Za-z0-9-]`, but a mistyped one must
/// not be able to change the path).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The deepest cause of an error, which is where reqwest keeps "Connection refused".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl ApiClient {
    /// A client of `server` whose requests give up after `timeout`.
    pub(crate) fn new(
        server: &str,
        timeout: Duration,
        security: &ClientSecurity,
    ) -> Result<Self, CliError> {
        let base = normalize_server(server)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .use_rustls_tls();
        if let Some(pem) = &security.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                CliError::new(
                    codes::INVALID_PARAM,
                    format!("--ca: not a PEM certificate file: {e}"),
                )
            })?;
            if certs.is_empty() {
                return Err(CliError::new(
                    codes::INVALID_PARAM,
                    "--ca: the file holds no PEM certificate",
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| {
            CliError::new(
                "CDC:ErrInternalServerError",
                format!("cannot build the HTTP client: {e}"),
            )
        })?;
        Ok(ApiClient {
            base,
            timeout,
            http,
            auth: security.auth.clone(),
        })
    }

    /// The server's base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn transport_error(&self, url: &str, e: &reqwest::Error) -> CliError {
        if e.is_timeout() {
            CliError::new(
                codes::REQUEST_TIMEOUT,
                format!(
                    "request to the Tidal server at {} timed out after {}s ({url})",
                    self.base,
                    self.timeout.as_secs()
                ),
            )
        } else if e.is_connect() {
            CliError::new(
                codes::SERVER_UNREACHABLE,
                format!(
                    "cannot connect to the Tidal server at {}: {}; is `tidal server` running \
                     there? (set --server or TIDAL_SERVER)",
                    self.base,
                    root_cause(e)
                ),
            )
        } else {
            CliError::new(
                codes::SERVER_UNREACHABLE,
                format!(
                    "request to the Tidal server at {} failed: {}",
                    self.base,
                    root_cause(e)
                ),
            )
        }
    }

    /// Sends one request and returns the JSON body of a 2xx answer (`null` for an empty body).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        tracing::debug!(%method, %url, "calling the Tidal API");
        let mut req = self.http.request(method.clone(), &url);
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password));
        }
        if let Some(b) = body {
            let bytes = serde_json::to_vec(b).map_err(|e| {
                CliError::new(
                    codes::INVALID_PARAM,
                    format!("cannot encode the request: {e}"),
                )
            })?;
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(&url, &e))?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.transport_error(&url, &e))?;
        tracing::debug!(%status, len = bytes.len(), "API answered");
        if !status.is_success() {
            if let Ok(err) = serde_json::from_slice::<HttpErrorBody>(&bytes) {
                return Err(CliError::from_server(&err.error_code, &err.error_msg));
            }
            return Err(CliError::new(
                codes::BAD_RESPONSE,
                format!(
                    "call cdc api failed, url={url}, code={}, contentType={content_type}, \
                     response={}",
                    status.as_u16(),
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(512)
                        .collect::<String>()
                ),
            ));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            CliError::new(
                codes::BAD_RESPONSE,
                format!(
                    "the server at {} answered {method} {path} with invalid JSON: {e}",
                    self.base
                ),
            )
        })
    }

    /// `call` and decode into `T`.
    pub(crate) async fn call_as<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, CliError> {
        let v = self.call(method.clone(), path, body).await?;
        serde_json::from_value(v).map_err(|e| {
            CliError::new(
                codes::BAD_RESPONSE,
                format!(
                    "the server at {} answered {method} {path} with an unexpected document: {e}",
                    self.base
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(
            normalize_server("127.0.0.1:8300").unwrap(),
            "http://127.0.0.1:8300"
        );
        assert_eq!(
            normalize_server(" http://cdc:8300/ ").unwrap(),
            "http://cdc:8300"
        );
        assert_eq!(
            normalize_server("HTTP://cdc:8300").unwrap(),
            "HTTP://cdc:8300"
        );
        assert_eq!(
            normalize_server("https://cdc:8300/").unwrap(),
            "https://cdc:8300"
        );
        assert!(normalize_server("").is_err());
        assert!(normalize_server("http://").is_err());
        assert!(normalize_server("https://").is_err());
        assert!(normalize_server("ftp://x").is_err());
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused() {
        let bad = ClientSecurity {
            ca_pem: Some(b"not a certificate".to_vec()),
            auth: None,
        };
        let err = ApiClient::new("https://cdc:8300", Duration::from_secs(1), &bad).unwrap_err();
        assert_eq!(err.code, codes::INVALID_PARAM);
        assert_eq!(err.message, "--ca: the file holds no PEM certificate");
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let s = ClientSecurity {
            ca_pem: None,
            auth: Some(("admin".into(), "hunter2-secret".into())),
        };
        let dbg = format!("{s:?}");
        assert!(dbg.contains("admin") && !dbg.contains("hunter2"), "{dbg}");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("cf-1"), "cf-1");
        assert_eq!(encode_segment("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[tokio::test]
    async fn stuck_server_times_out() {
        // The kernel completes the handshake, but nobody ever answers.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = ApiClient::new(
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(1),
            &ClientSecurity::default(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = c
            .call(Method::GET, "/api/v2/changefeeds", None)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(e.code, codes::REQUEST_TIMEOUT, "{e}");
        assert_eq!(
            e.message,
            format!(
                "request to the Tidal server at http://127.0.0.1:{port} timed out after 1s \
                 (http://127.0.0.1:{port}/api/v2/changefeeds)"
            )
        );
        drop(l);
    }

    #[tokio::test]
    async fn unreachable_server_is_named() {
        // Bind then drop a listener: the port is (almost certainly) closed afterwards.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = ApiClient::new(
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(5),
            &ClientSecurity::default(),
        )
        .unwrap();
        let e = c.call(Method::POST, "/api/v2/tso", None).await.unwrap_err();
        assert_eq!(e.code, codes::SERVER_UNREACHABLE);
        assert!(
            e.message.starts_with(&format!(
                "cannot connect to the Tidal server at http://127.0.0.1:{port}"
            )),
            "{e}"
        );
    }
}
