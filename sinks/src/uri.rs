//! Sink URIs: one string names the downstream and tunes it, as in TiCDC
//! (`mysql://user:pass@host:3306/?worker-count=16`, `file:///data/cdc?protocol=csv`,
//! `blackhole://`).
//!
//! Parsing is strict on purpose: a misspelled parameter silently falling back to its default is
//! the kind of mistake that only shows up as a slow or wrong changefeed weeks later, so an
//! unknown parameter or a bad value is an [`SinkError::InvalidUri`] naming it and listing what
//! is allowed. Every URI that appears in an error or a log line goes through
//! [`mask_password`] first.

use std::time::Duration;

use tidal_model::duration::parse_go_std_duration;
use url::Url;

use crate::blackhole::BlackholeConfig;
use crate::mysql::MySqlConfig;
use crate::sink::SinkError;
use crate::storage::StorageConfig;

/// The downstream a sink URI names, with its parameters parsed.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// `mysql://`, `tidb://`: a MySQL-compatible database.
    MySql(MySqlConfig),
    /// `file://`: files in a directory (canal-json or csv).
    Storage(StorageConfig),
    /// `blackhole://`: discards everything (benchmarks, tests).
    Blackhole(BlackholeConfig),
}

/// Schemes Tidal implements.
pub const SUPPORTED_SCHEMES: &[&str] = &["mysql", "tidb", "file", "blackhole"];

/// Schemes TiCDC knows that Tidal does not implement yet.
const NOT_YET_SCHEMES: &[&str] = &[
    "kafka",
    "kafka+ssl",
    "pulsar",
    "pulsar+ssl",
    "pulsar+http",
    "pulsar+https",
    "s3",
    "gcs",
    "gs",
    "azblob",
    "azure",
    "noop",
];

/// Parses a sink URI into the configuration of the sink it names.
///
/// Scheme matching is case-insensitive. `mysql+ssl`/`tidb+ssl` and the message-queue and cloud
/// storage schemes are recognised but rejected as not supported yet.
pub fn parse_sink_uri(uri: &str) -> Result<SinkConfig, SinkError> {
    let url = Url::parse(uri.trim()).map_err(|e| invalid(uri, format!("not a valid URI: {e}")))?;
    let scheme = url.scheme().to_ascii_lowercase();
    match scheme.as_str() {
        "mysql" | "tidb" => MySqlConfig::from_url(uri, &url).map(SinkConfig::MySql),
        "mysql+ssl" | "tidb+ssl" => Err(invalid(
            uri,
            format!("scheme {scheme:?}: TLS is not supported yet; use mysql:// or tidb://"),
        )),
        "file" => StorageConfig::from_uri(&url).map(SinkConfig::Storage),
        "blackhole" => BlackholeConfig::from_url(uri, &url).map(SinkConfig::Blackhole),
        s if NOT_YET_SCHEMES.contains(&s) => Err(invalid(
            uri,
            format!(
                "scheme {s:?} is not supported yet (supported: {})",
                SUPPORTED_SCHEMES.join(", ")
            ),
        )),
        s => Err(invalid(
            uri,
            format!(
                "unknown scheme {s:?} (supported: {})",
                SUPPORTED_SCHEMES.join(", ")
            ),
        )),
    }
}

/// Replaces the password in a URI with `xxxxx`, as TiCDC prints sink URIs, and likewise the value
/// of every query parameter that names a secret (`password`, `sasl-password`, `secret-access-key`,
/// `access-key`, `account-key`, `sas-token`, anything with "password", "secret", "token" or
/// "credential" in its name).
///
/// Works on the text as given (it does not need the URI to parse, and keeps everything else
/// byte for byte), so it is safe to call on whatever a user typed. The user-info part ends at the
/// last `@` before the query; if a malformed URI has an `@` only after a `?` or `#`, everything
/// up to the first `@` is treated as user info, masking too much rather than too little.
pub fn mask_password(uri: &str) -> String {
    let masked = mask_userinfo(uri);
    match masked.find('?') {
        Some(q) => {
            let (head, query) = masked.split_at(q + 1);
            format!("{head}{}", mask_secret_params(query))
        }
        None => masked,
    }
}

/// Whether a query parameter's value is a secret.
fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('_', "-");
    ["password", "secret", "token", "credential"]
        .iter()
        .any(|w| n.contains(w))
        || n.ends_with("access-key")
        || n.ends_with("account-key")
}

/// Masks the values of secret parameters in a query string (`a=1&password=x#frag`).
fn mask_secret_params(query: &str) -> String {
    let (params, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let parts: Vec<String> = params
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if is_secret_param(k) && !v.is_empty() => format!("{k}=xxxxx"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{}{fragment}", parts.join("&"))
}

/// The `user:password@` part of a URI with the password masked.
fn mask_userinfo(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_string();
    };
    let start = scheme_end + 3;
    let rest = &uri[start..];
    let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
    let at = match rest[..query_start].rfind('@') {
        Some(at) => at,
        None => match rest.find('@') {
            Some(at) => at,
            None => return uri.to_string(),
        },
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:xxxxx{}",
            &uri[..start],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => uri.to_string(),
    }
}

/// An [`SinkError::InvalidUri`] for `uri` (masked).
pub(crate) fn invalid(uri: &str, reason: impl Into<String>) -> SinkError {
    SinkError::InvalidUri {
        uri: mask_password(uri),
        reason: reason.into(),
    }
}

/// The query parameters of `url`, checked against `allowed`: an unknown or repeated parameter
/// is an error naming it and listing the allowed ones.
pub(crate) fn query_params(
    uri: &str,
    url: &Url,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, SinkError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in url.query_pairs() {
        if !allowed.contains(&k.as_ref()) {
            let list = if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(invalid(
                uri,
                format!("unknown parameter {k:?} (allowed: {list})"),
            ));
        }
        if out.iter().any(|(seen, _)| seen == k.as_ref()) {
            return Err(invalid(uri, format!("parameter {k:?} is given twice")));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

/// Parses an integer parameter within `min..=max`.
pub(crate) fn param_usize(
    uri: &str,
    name: &str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<usize, SinkError> {
    let n: usize = value.trim().parse().map_err(|_| {
        invalid(
            uri,
            format!("parameter {name}={value:?} is not a non-negative integer"),
        )
    })?;
    if n < min || n > max {
        return Err(invalid(
            uri,
            format!("parameter {name}={n} is out of range {min}..={max}"),
        ));
    }
    Ok(n)
}

/// Parses a boolean parameter (`true`/`false`, `1`/`0`, as Go's `strconv.ParseBool` accepts).
pub(crate) fn param_bool(uri: &str, name: &str, value: &str) -> Result<bool, SinkError> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(invalid(
            uri,
            format!("parameter {name}={value:?} is not a boolean (true or false)"),
        )),
    }
}

/// Parses a duration parameter in Go's notation: a sequence of `<number><unit>` with units
/// `ns`, `us`, `µs`, `ms`, `s`, `m`, `h` (`"2m"`, `"1m30s"`, `"500ms"`, `"1.5s"`).
pub(crate) fn param_duration(uri: &str, name: &str, value: &str) -> Result<Duration, SinkError> {
    parse_go_std_duration(value.trim()).ok_or_else(|| {
        invalid(
            uri,
            format!("parameter {name}={value:?} is not a duration (like 30s, 2m, 500ms)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_password() {
        assert_eq!(
            mask_password("mysql://root:secret@127.0.0.1:3306/?worker-count=4"),
            "mysql://root:xxxxx@127.0.0.1:3306/?worker-count=4"
        );
        assert_eq!(
            mask_password("mysql://root@127.0.0.1:3306/"),
            "mysql://root@127.0.0.1:3306/"
        );
        assert_eq!(mask_password("blackhole://"), "blackhole://");
        // Secrets passed as query parameters are masked too; other parameters are kept.
        assert_eq!(
            mask_password(
                "kafka://u:p@h:9092/t?sasl-user=u&sasl-password=pw&protocol=canal-json#x"
            ),
            "kafka://u:xxxxx@h:9092/t?sasl-user=u&sasl-password=xxxxx&protocol=canal-json#x"
        );
        assert_eq!(
            mask_password("s3://b/p?access-key=AK&secret-access-key=SK&Token=T&region=r"),
            "s3://b/p?access-key=xxxxx&secret-access-key=xxxxx&Token=xxxxx&region=r"
        );
        assert_eq!(
            mask_password("mysql://h:3306/?password=p&ssl-ca=/ca.pem"),
            "mysql://h:3306/?password=xxxxx&ssl-ca=/ca.pem"
        );
        assert_eq!(mask_password("not a uri"), "not a uri");
        // A password holding '@' and '/' is masked whole.
        assert_eq!(
            mask_password("mysql://u:p@s/s@h:1/db?x=a@b"),
            "mysql://u:xxxxx@h:1/db?x=a@b"
        );
        // '?' inside an unencoded password: mask up to the first '@'.
        assert_eq!(mask_password("mysql://u:pa?ss@h"), "mysql://u:xxxxx@h");
        assert_eq!(mask_password("mysql://u:@h"), "mysql://u:xxxxx@h");
    }

    #[test]
    fn bools() {
        assert!(param_bool("u", "x", "true").unwrap());
        assert!(!param_bool("u", "x", "0").unwrap());
        let err = param_bool("u", "safe-mode", "yes").unwrap_err().to_string();
        assert!(err.contains("safe-mode") && err.contains("yes"), "{err}");
    }

    #[test]
    fn unknown_and_misplaced_schemes() {
        let err = parse_sink_uri("ftp://x/").unwrap_err().to_string();
        assert!(
            err.contains("\"ftp\"") && err.contains("mysql, tidb, file, blackhole"),
            "{err}"
        );
        let err = parse_sink_uri("kafka://u:pw@k:9092/topic")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not supported yet"), "{err}");
        assert!(!err.contains("pw@"), "{err}");
        let err = parse_sink_uri("mysql+ssl://u:pw@h/")
            .unwrap_err()
            .to_string();
        assert!(err.contains("TLS"), "{err}");
        assert!(matches!(
            parse_sink_uri("::"),
            Err(SinkError::InvalidUri { .. })
        ));
    }
}
