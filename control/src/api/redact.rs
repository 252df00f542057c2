//! Last line of defence against leaking sink credentials through the API.
//!
//! Structured fields (`sink_uri` of a changefeed) are masked where they are built, with
//! [`tidal_sinks::uri::mask_password`]. But a password can also travel inside free text: an
//! error message that quotes a URI, a driver error, the raw metadata dump of
//! `/api/v2/unsafe/metadata`, a diagnosis string. Rather than trusting every such path, the
//! router passes every response body through [`mask_uri_passwords`], which finds anything that
//! looks like `scheme://user:password@...` in arbitrary text and masks the password, and also
//! masks the values of credential-carrying query parameters (`sasl-password=`, ...). Masking too
//! much is acceptable; masking too little is not.

use std::borrow::Cow;

use axum::body::{Body, to_bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Query parameters of sink URIs whose values are secrets (TiCDC masks the same family).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "sasl-password",
    "sasl_password",
    "access-key",
    "access_key",
    "secret-access-key",
    "secret_access_key",
    "account-key",
    "account_key",
    "sas-token",
    "sas_token",
    "client-secret",
    "client_secret",
    "token",
    "sasl-oauth-client-secret",
];

/// The replacement for a masked secret (TiCDC's wording).
pub const MASK: &str = "xxxxx";

/// Largest response body the scrubber buffers; bigger bodies are replaced by an error (the API
/// never produces one: the biggest is the metadata dump of a cluster).
const MAX_SCRUB_BODY: usize = 256 * 1024 * 1024;

fn is_scheme_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

/// Characters that end a URI embedded in text (JSON string quotes and escapes, whitespace, the
/// usual quoting characters).
fn ends_token(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '\\' | '`')
}

/// Masks the passwords of every `scheme://user:password@host` in `text`, and the values of
/// secret query parameters (`sasl-password=...`) of those URIs. Borrowed when nothing changed.
/// Never panics, whatever the input.
pub fn mask_uri_passwords(text: &str) -> Cow<'_, str> {
    if !text.contains("://") && !contains_secret_param(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        // Copy delimiters verbatim, then handle one token.
        let tok_start = rest.find(|c: char| !ends_token(c)).unwrap_or(rest.len());
        out.push_str(&rest[..tok_start]);
        rest = &rest[tok_start..];
        let tok_end = rest.find(ends_token).unwrap_or(rest.len());
        let (token, tail) = rest.split_at(tok_end);
        mask_token(token, &mut out);
        rest = tail;
    }
    if out == text {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(out)
    }
}

fn contains_secret_param(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    SECRET_PARAMS
        .iter()
        .any(|p| lower.contains(&format!("{p}=")))
}

/// Masks one whitespace/quote-free token that may hold one or more URIs.
fn mask_token(token: &str, out: &mut String) {
    // Split the token at the start of each URI scheme, so `a=mysql://..,kafka://..` masks both.
    let bytes = token.as_bytes();
    let mut starts = Vec::new();
    let mut search = 0;
    while let Some(pos) = token.get(search..).and_then(|s| s.find("://")) {
        let sep = search + pos;
        let mut s = sep;
        while s > 0 && bytes.get(s - 1).is_some_and(|b| is_scheme_char(*b)) {
            s -= 1;
        }
        if s < sep && starts.last().is_none_or(|&last| s > last) {
            starts.push(s);
        }
        search = sep + 3;
    }
    let first = starts.first().copied().unwrap_or(token.len());
    out.push_str(&mask_params(token.get(..first).unwrap_or("")));
    for (i, &s) in starts.iter().enumerate() {
        let e = starts.get(i + 1).copied().unwrap_or(token.len());
        let uri = token.get(s..e).unwrap_or("");
        out.push_str(&mask_params(&tidal_sinks::uri::mask_password(uri)));
    }
}

/// Masks the values of secret `key=value` pairs (separated by `?`, `&`, `;` or `,`).
fn mask_params(s: &str) -> Cow<'_, str> {
    if !contains_secret_param(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            break;
        };
        let (before, after) = rest.split_at(eq);
        let key_start = before.rfind(['?', '&', ';', ',']).map_or(0, |p| p + 1);
        let key = before.get(key_start..).unwrap_or("");
        out.push_str(before);
        out.push('=');
        let after = after.get(1..).unwrap_or("");
        let val_end = after.find(['&', ';', ',', '#']).unwrap_or(after.len());
        if SECRET_PARAMS.iter().any(|p| key.eq_ignore_ascii_case(p)) {
            if val_end > 0 {
                out.push_str(MASK);
            }
        } else {
            out.push_str(after.get(..val_end).unwrap_or(""));
        }
        rest = after.get(val_end..).unwrap_or("");
    }
    Cow::Owned(out)
}

/// Response middleware: masks URI passwords in every response body (see the module docs).
pub async fn scrub_response(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = match to_bytes(body, MAX_SCRUB_BODY).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot buffer a response for scrubbing");
            return (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "response could not be produced",
            )
                .into_response();
        }
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    match mask_uri_passwords(text) {
        Cow::Borrowed(_) => Response::from_parts(parts, Body::from(bytes)),
        Cow::Owned(masked) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(masked))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn masks_uris_in_text() {
        let m = |s: &str| mask_uri_passwords(s).into_owned();
        assert_eq!(
            m("failed to open mysql://root:s3cr3t@10.0.0.1:3306/?a=1 now"),
            "failed to open mysql://root:xxxxx@10.0.0.1:3306/?a=1 now"
        );
        assert_eq!(
            m(r#"{"sink_uri":"mysql://u:p@h:1/","x":"kafka://a:b@k/t"}"#),
            r#"{"sink_uri":"mysql://u:xxxxx@h:1/","x":"kafka://a:xxxxx@k/t"}"#
        );
        assert_eq!(
            m("a=mysql://u:p@h,kafka://c:d@k"),
            "a=mysql://u:xxxxx@h,kafka://c:xxxxx@k"
        );
        assert_eq!(
            m("kafka://k:9092/t?protocol=canal-json&sasl-password=hunter2&x=1"),
            "kafka://k:9092/t?protocol=canal-json&sasl-password=xxxxx&x=1"
        );
        assert_eq!(m("Password=abc def"), "Password=xxxxx def");
        assert_eq!(m("no uri here"), "no uri here");
        assert_eq!(m("mysql://root@h:3306/"), "mysql://root@h:3306/");
        assert_eq!(m("://x:y@z"), "://x:y@z"); // no scheme: not a URI
        assert!(matches!(mask_uri_passwords("plain"), Cow::Borrowed(_)));
        assert!(matches!(
            mask_uri_passwords("blackhole://"),
            Cow::Borrowed(_)
        ));
    }

    proptest! {
        #[test]
        fn never_panics_and_never_leaks(
            prefix in ".{0,16}",
            user in "[a-z]{1,8}",
            pw in "[A-Za-z0-9]{6,16}",
            suffix in "[a-z0-9:/.?=&]{0,16}",
        ) {
            let text = format!("{prefix} mysql://{user}:{pw}@host:3306/{suffix}");
            let masked = mask_uri_passwords(&text);
            let expected = format!("mysql://{user}:xxxxx@host");
            prop_assert!(masked.contains(&expected), "{}", masked);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,64}") {
            let _ = mask_uri_passwords(&s);
        }
    }
}
