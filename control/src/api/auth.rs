//! Optional HTTP basic authentication for the API.
//!
//! The API can create changefeeds that write anywhere and can drop the cluster's GC
//! reservation, so a deployment that exposes it beyond loopback needs a gate. TiCDC's
//! `AuthenticateMiddleware` checks `Authorization: Basic` against TiDB users; Tidal checks it
//! against one configured user and password (`auth-user` + `auth-password` or
//! `auth-password-file`), which needs no upstream round trip. The failure shape is TiCDC's:
//! `401` with `{"error_msg","error_code"}`, `CDC:ErrCredentialNotFound` when no credentials
//! were sent and `CDC:ErrUnauthorized` when they are wrong, plus a `WWW-Authenticate` challenge
//! so browsers and `curl --anyauth` know what to send.
//!
//! `/api/v2/health` always stays open (load balancers and orchestrators probe it without
//! credentials); `/metrics` stays open only when configured so, for Prometheus scrapers.
//! Comparison is constant-time over both the user and the password, so response timing does
//! not reveal how much of a guess was right.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;

use super::errors::HttpError;

/// A secret string (a password): its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself; the caller is responsible for not logging it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"xxxxx\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("xxxxx")
    }
}

/// `CDC:ErrCredentialNotFound`: the request carried no (usable) basic credentials.
pub const ERR_CREDENTIAL_NOT_FOUND: &str = "CDC:ErrCredentialNotFound";
/// `CDC:ErrUnauthorized`: the credentials are wrong.
pub const ERR_UNAUTHORIZED: &str = "CDC:ErrUnauthorized";
/// The challenge sent with every 401.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"tidal\", charset=\"UTF-8\"";

/// Paths that never require credentials.
const OPEN_PATHS: &[&str] = &["/api/v2/health"];

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Basic` header, or one that does not decode to `user:password`.
    Missing,
    /// Credentials that do not match (the user name given, for the message).
    Wrong(String),
}

impl AuthFailure {
    /// The TiCDC-shaped body.
    pub fn body(&self) -> HttpError {
        match self {
            AuthFailure::Missing => HttpError {
                error_msg: format!("[{ERR_CREDENTIAL_NOT_FOUND}]user credential not found"),
                error_code: ERR_CREDENTIAL_NOT_FOUND.to_string(),
            },
            AuthFailure::Wrong(user) => HttpError {
                error_msg: format!(
                    "[{ERR_UNAUTHORIZED}]user {user} unauthorized, error: wrong user name or password"
                ),
                error_code: ERR_UNAUTHORIZED.to_string(),
            },
        }
    }
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        let body = serde_json::to_string_pretty(&self.body()).unwrap_or_default();
        (
            StatusCode::UNAUTHORIZED,
            [
                (header::CONTENT_TYPE, "application/json; charset=utf-8"),
                (header::WWW_AUTHENTICATE, WWW_AUTHENTICATE),
            ],
            body,
        )
            .into_response()
    }
}

/// The basic-auth gate: one user and password.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    user: String,
    password: Secret,
    protect_metrics: bool,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &self.password)
            .field("protect_metrics", &self.protect_metrics)
            .finish()
    }
}

impl BasicAuth {
    /// A gate for `user` / `password`; `/metrics` is protected too.
    pub fn new(user: impl Into<String>, password: Secret) -> Self {
        BasicAuth {
            user: user.into(),
            password,
            protect_metrics: true,
        }
    }

    /// Whether `/metrics` needs credentials (default `true`).
    pub fn protect_metrics(mut self, on: bool) -> Self {
        self.protect_metrics = on;
        self
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether a request to `path` needs credentials.
    pub fn requires_auth(&self, path: &str) -> bool {
        if OPEN_PATHS.contains(&path) {
            return false;
        }
        path != "/metrics" || self.protect_metrics
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, value: Option<&HeaderValue>) -> Result<(), AuthFailure> {
        let (user, password) = value
            .and_then(|v| parse_basic(v.as_bytes()))
            .ok_or(AuthFailure::Missing)?;
        let user_ok = user.as_bytes().ct_eq(self.user.as_bytes());
        let password_ok = password.as_bytes().ct_eq(self.password.expose().as_bytes());
        if bool::from(user_ok & password_ok) {
            Ok(())
        } else {
            Err(AuthFailure::Wrong(user))
        }
    }
}

/// Decodes `Basic <base64(user:password)>`; `None` for anything else.
pub fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The middleware: lets a request through when no gate is configured, the path is open, or the
/// credentials match; otherwise answers 401.
pub async fn require_auth(
    State(auth): State<Option<Arc<BasicAuth>>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(auth) = auth.as_deref()
        && auth.requires_auth(req.uri().path())
        && let Err(failure) = auth.check(req.headers().get(header::AUTHORIZATION))
    {
        tracing::debug!(path = %req.uri().path(), "API request refused: not authenticated");
        return failure.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(user: &str, pw: &str) -> HeaderValue {
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        HeaderValue::from_str(&format!("Basic {enc}")).unwrap()
    }

    #[test]
    fn checks_credentials() {
        let a = BasicAuth::new("admin", Secret::new("pa:ss"));
        assert_eq!(a.check(Some(&header("admin", "pa:ss"))), Ok(()));
        assert_eq!(
            a.check(Some(&header("admin", "pa:sx"))),
            Err(AuthFailure::Wrong("admin".into()))
        );
        assert_eq!(
            a.check(Some(&header("root", "pa:ss"))),
            Err(AuthFailure::Wrong("root".into()))
        );
        assert_eq!(a.check(None), Err(AuthFailure::Missing));
        assert_eq!(
            a.check(Some(&HeaderValue::from_static("Bearer abc"))),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            a.check(Some(&HeaderValue::from_static("Basic !!!"))),
            Err(AuthFailure::Missing)
        );
        // "basic" is case-insensitive; base64 of "admin:pa:ss".
        assert_eq!(
            a.check(Some(&HeaderValue::from_static("basic YWRtaW46cGE6c3M="))),
            Ok(())
        );
    }

    #[test]
    fn open_paths_and_metrics() {
        let a = BasicAuth::new("u", Secret::new("p"));
        assert!(!a.requires_auth("/api/v2/health"));
        assert!(a.requires_auth("/api/v2/changefeeds"));
        assert!(a.requires_auth("/metrics"));
        assert!(a.requires_auth("/status"));
        assert!(!a.clone().protect_metrics(false).requires_auth("/metrics"));
    }

    #[test]
    fn bodies_and_debug() {
        let b = AuthFailure::Missing.body();
        assert_eq!(b.error_code, "CDC:ErrCredentialNotFound");
        assert_eq!(
            b.error_msg,
            "[CDC:ErrCredentialNotFound]user credential not found"
        );
        assert_eq!(
            AuthFailure::Wrong("x".into()).body().error_code,
            "CDC:ErrUnauthorized"
        );
        let a = BasicAuth::new("u", Secret::new("hunter2"));
        let dbg = format!("{a:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("xxxxx"), "{dbg}");
        assert_eq!(Secret::new("hunter2").to_string(), "xxxxx");
    }

    proptest! {
        #[test]
        fn header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_basic(&bytes);
            let mut v = b"Basic ".to_vec();
            v.extend_from_slice(&bytes);
            let _ = parse_basic(&v);
        }
    }
}
