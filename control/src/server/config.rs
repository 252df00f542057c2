//! `tidal server` settings: defaults, the TOML file (`--config`), validation.
//!
//! The file uses the same kebab-case names as the command-line flags, so a flag and a file key
//! are one setting: `pd = "127.0.0.1:2379"`, `addr = "0.0.0.0:8300"`, `data-dir`,
//! `etcd = ["10.0.0.1:2379"]`, `cluster-id`, `workers`, `gc-ttl = 86400` (seconds, as TiCDC),
//! `gc-tick = "1m"`, `checkpoint-interval = "200ms"`, `log-level`, ... Durations are Go-style
//! strings (`"1m30s"`, `"500ms"`) or integer seconds. Unknown keys are an error: a misspelt
//! setting silently ignored is worse than a refused start.
//!
//! Cluster keys: `hosts = ["10.0.0.1:9000", "10.0.0.2:9000"]` and `process = 0` (flags
//! `--hosts` / `--process`) make the node one process of a multi-process timely cluster: the
//! hosts are every process's timely base address (the same list, in the same order, on every
//! node), the process is this node's index in it. They require `etcd`. Without them a node runs
//! every changefeed's dataflow in its own process only.
//!
//! Security keys: `tls-cert` + `tls-key` (PEM files; both or neither) make the API HTTPS-only;
//! `auth-user` + `auth-password` (or `auth-password-file`, whose first line is the password,
//! so the secret need not sit in the config file) require HTTP basic auth on every route but
//! `/api/v2/health`; `auth-metrics = false` leaves `/metrics` open for scrapers. The password is
//! a [`Secret`]: the config's `Debug` output never shows it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ServerError;
use crate::api::auth::{BasicAuth, Secret};
use crate::gc::DEFAULT_GC_TTL;
use crate::meta::KeyLayout;

/// Settings of a `tidal server` node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// PD endpoints of the upstream cluster (`--pd`, comma-separated on the command line).
    pub pd: Vec<String>,
    /// Address the HTTP API listens on (default `127.0.0.1:8300`; port 0 picks a free port).
    pub addr: SocketAddr,
    /// Address other nodes and clients should use (default: the bound address).
    pub advertise_addr: Option<String>,
    /// Local data directory; the embedded metadata store lives in `<data-dir>/meta`.
    pub data_dir: PathBuf,
    /// etcd endpoints for cluster metadata; `None` uses the embedded store.
    pub etcd: Option<Vec<String>>,
    /// Tidal cluster id (metadata key prefix `/tidb/cdc/<cluster-id>`), default `default`.
    pub cluster_id: String,
    /// Timely worker threads per changefeed.
    pub workers: usize,
    /// TTL of the PD service GC safe point, and the longest a changefeed may hold GC (24 h).
    pub gc_ttl: Duration,
    /// How often the GC safe point is refreshed (1 min).
    pub gc_tick: Duration,
    /// How often checkpoints are persisted (200 ms).
    pub checkpoint_interval: Duration,
    /// Log level: `trace`, `debug`, `info`, `warn` or `error`.
    pub log_level: String,
    /// TTL of the coordinator's owner lease with etcd (10 s).
    pub session_ttl: Duration,
    /// First delay before a changefeed in `warning` is restarted (5 s).
    pub backoff_initial: Duration,
    /// Longest delay between such restarts (5 min).
    pub backoff_max: Duration,
    /// How often the Prometheus gauges are refreshed (5 s).
    pub metrics_interval: Duration,
    /// PEM certificate chain of the HTTPS API (`tls-cert`; set together with `tls-key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the HTTPS API (`tls-key`).
    pub tls_key: Option<PathBuf>,
    /// Basic-auth user (`auth-user`); `None` leaves the API open.
    pub auth_user: Option<String>,
    /// Basic-auth password (`auth-password`); masked in `Debug`.
    pub auth_password: Option<Secret>,
    /// File holding the basic-auth password (`auth-password-file`; first line, trimmed).
    pub auth_password_file: Option<PathBuf>,
    /// Whether `/metrics` needs credentials too when auth is on (`auth-metrics`, default true).
    pub auth_metrics: bool,
    /// Timely base address (`HOST:PORT`) of every process of a multi-process cluster
    /// (`hosts`, `--hosts`); `None`: dataflows run in this process only.
    pub hosts: Option<Vec<String>>,
    /// This node's index in `hosts` (`process`, `--process`).
    pub process: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            pd: vec!["127.0.0.1:2379".to_string()],
            addr: SocketAddr::from(([127, 0, 0, 1], 8300)),
            advertise_addr: None,
            data_dir: PathBuf::from("tidal-data"),
            etcd: None,
            cluster_id: "default".to_string(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            gc_ttl: DEFAULT_GC_TTL,
            gc_tick: Duration::from_secs(60),
            checkpoint_interval: Duration::from_millis(200),
            log_level: "info".to_string(),
            session_ttl: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            metrics_interval: Duration::from_secs(5),
            tls_cert: None,
            tls_key: None,
            auth_user: None,
            auth_password: None,
            auth_password_file: None,
            auth_metrics: true,
            hosts: None,
            process: None,
        }
    }
}

/// A list given either as an array or as one comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringList {
    One(String),
    Many(Vec<String>),
}

impl StringList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StringList::One(s) => split_list(&s),
            StringList::Many(v) => v.iter().flat_map(|s| split_list(s)).collect(),
        }
    }
}

/// A duration given as integer seconds or as a Go-style string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Secs(u64),
    Text(String),
}

impl DurationValue {
    fn get(&self, key: &str) -> Result<Duration, ServerError> {
        match self {
            DurationValue::Secs(s) => Ok(Duration::from_secs(*s)),
            DurationValue::Text(t) => {
                parse_duration(t).map_err(|e| ServerError::Config(format!("{key}: {e}")))
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    pd: Option<StringList>,
    addr: Option<String>,
    advertise_addr: Option<String>,
    data_dir: Option<PathBuf>,
    etcd: Option<StringList>,
    cluster_id: Option<String>,
    workers: Option<usize>,
    gc_ttl: Option<DurationValue>,
    gc_tick: Option<DurationValue>,
    checkpoint_interval: Option<DurationValue>,
    log_level: Option<String>,
    session_ttl: Option<DurationValue>,
    backoff_initial: Option<DurationValue>,
    backoff_max: Option<DurationValue>,
    metrics_interval: Option<DurationValue>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    auth_user: Option<String>,
    auth_password: Option<String>,
    auth_password_file: Option<PathBuf>,
    auth_metrics: Option<bool>,
    hosts: Option<StringList>,
    process: Option<usize>,
}

/// Splits a comma-separated list, trimming blanks and dropping empty items.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses a Go-style duration (`300ms`, `1.5s`, `1m30s`, `2h`, units `ns us µs ms s m h`) or a
/// bare integer number of seconds. Never panics; overflow is an error.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".to_string());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| format!("invalid duration {t:?}: {e}"));
    }
    let bad = || format!("invalid duration {t:?} (use e.g. \"500ms\", \"10s\", \"1m30s\")");
    let mut total_ns: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num.matches('.').count() > 1 || num == "." {
            return Err(bad());
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut part = int.checked_mul(unit_ns).ok_or_else(bad)?;
        let mut scale = unit_ns;
        for d in frac_part.bytes().take(18) {
            scale /= 10;
            part = part
                .checked_add(u128::from(d - b'0') * scale)
                .ok_or_else(bad)?;
        }
        total_ns = total_ns.checked_add(part).ok_or_else(bad)?;
        rest = next;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| bad())?;
    let nanos = u32::try_from(total_ns % 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, nanos))
}

/// Normalizes a log level name; `None` if unknown.
pub fn normalize_log_level(level: &str) -> Option<&'static str> {
    Some(match level.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => return None,
    })
}

impl ServerConfig {
    /// The defaults overridden by the keys of a TOML document.
    pub fn from_toml_str(text: &str) -> Result<ServerConfig, ServerError> {
        let mut cfg = ServerConfig::default();
        cfg.merge_toml_str(text)?;
        Ok(cfg)
    }

    /// Reads a TOML file over the defaults.
    pub fn load(path: impl AsRef<Path>) -> Result<ServerConfig, ServerError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ServerError::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        ServerConfig::from_toml_str(&text)
            .map_err(|e| ServerError::Config(format!("config file {}: {e}", path.display())))
    }

    /// Overrides the settings the TOML document names (others are left as they are), then
    /// validates.
    pub fn merge_toml_str(&mut self, text: &str) -> Result<(), ServerError> {
        let f: FileConfig = toml::from_str(text)
            .map_err(|e| ServerError::Config(format!("invalid server config: {e}")))?;
        if let Some(pd) = f.pd {
            self.pd = pd.into_vec();
        }
        if let Some(a) = f.addr {
            self.addr = a
                .trim()
                .parse()
                .map_err(|e| ServerError::Config(format!("addr {a:?}: {e}")))?;
        }
        if let Some(a) = f.advertise_addr {
            self.advertise_addr = Some(a);
        }
        if let Some(d) = f.data_dir {
            self.data_dir = d;
        }
        if let Some(e) = f.etcd {
            let v = e.into_vec();
            self.etcd = (!v.is_empty()).then_some(v);
        }
        if let Some(c) = f.cluster_id {
            self.cluster_id = c;
        }
        if let Some(w) = f.workers {
            self.workers = w;
        }
        let durations: [(&str, &Option<DurationValue>, &mut Duration); 7] = [
            ("gc-ttl", &f.gc_ttl, &mut self.gc_ttl),
            ("gc-tick", &f.gc_tick, &mut self.gc_tick),
            (
                "checkpoint-interval",
                &f.checkpoint_interval,
                &mut self.checkpoint_interval,
            ),
            ("session-ttl", &f.session_ttl, &mut self.session_ttl),
            (
                "backoff-initial",
                &f.backoff_initial,
                &mut self.backoff_initial,
            ),
            ("backoff-max", &f.backoff_max, &mut self.backoff_max),
            (
                "metrics-interval",
                &f.metrics_interval,
                &mut self.metrics_interval,
            ),
        ];
        for (key, value, slot) in durations {
            if let Some(v) = value {
                *slot = v.get(key)?;
            }
        }
        if let Some(l) = f.log_level {
            self.log_level = l;
        }
        if let Some(p) = f.tls_cert {
            self.tls_cert = Some(p);
        }
        if let Some(p) = f.tls_key {
            self.tls_key = Some(p);
        }
        if let Some(u) = f.auth_user {
            self.auth_user = Some(u);
        }
        if let Some(p) = f.auth_password {
            self.auth_password = Some(Secret::new(p));
        }
        if let Some(p) = f.auth_password_file {
            self.auth_password_file = Some(p);
        }
        if let Some(m) = f.auth_metrics {
            self.auth_metrics = m;
        }
        if let Some(h) = f.hosts {
            let v = h.into_vec();
            self.hosts = (!v.is_empty()).then_some(v);
        }
        if let Some(p) = f.process {
            self.process = Some(p);
        }
        self.validate()
    }

    /// Checks the settings; normalizes the log level.
    pub fn validate(&mut self) -> Result<(), ServerError> {
        let bad = |m: String| Err(ServerError::Config(m));
        if self.pd.is_empty() {
            return bad("pd: at least one PD endpoint is required".into());
        }
        if self.workers == 0 {
            return bad("workers must be at least 1".into());
        }
        if let Err(e) = KeyLayout::new(&self.cluster_id) {
            return bad(format!("cluster-id {:?}: {e}", self.cluster_id));
        }
        if matches!(&self.etcd, Some(v) if v.is_empty()) {
            self.etcd = None;
        }
        let positive: [(&str, Duration); 7] = [
            ("gc-ttl", self.gc_ttl),
            ("gc-tick", self.gc_tick),
            ("checkpoint-interval", self.checkpoint_interval),
            ("session-ttl", self.session_ttl),
            ("backoff-initial", self.backoff_initial),
            ("backoff-max", self.backoff_max),
            ("metrics-interval", self.metrics_interval),
        ];
        for (key, d) in positive {
            if d.is_zero() {
                return bad(format!("{key} must be positive"));
            }
        }
        if self.session_ttl < Duration::from_secs(1) {
            return bad("session-ttl must be at least 1s".into());
        }
        self.validate_security()?;
        self.validate_cluster()?;
        match normalize_log_level(&self.log_level) {
            Some(l) => self.log_level = l.to_string(),
            None => {
                return bad(format!(
                    "log-level {:?}: expected trace, debug, info, warn or error",
                    self.log_level
                ));
            }
        }
        Ok(())
    }

    fn validate_cluster(&mut self) -> Result<(), ServerError> {
        let bad = |m: String| Err(ServerError::Config(m));
        if matches!(&self.hosts, Some(v) if v.is_empty()) {
            self.hosts = None;
        }
        let Some(hosts) = &self.hosts else {
            if let Some(p) = self.process {
                return bad(format!(
                    "process {p} is set but hosts is not: set both or neither"
                ));
            }
            return Ok(());
        };
        let Some(process) = self.process else {
            return bad("hosts is set but process is not: give this node's index in hosts".into());
        };
        if process >= hosts.len() {
            return bad(format!(
                "process {process} is out of range: hosts has {} entries (0..{})",
                hosts.len(),
                hosts.len()
            ));
        }
        if self.etcd.is_none() {
            return bad(
                "hosts requires etcd: the processes of a cluster coordinate through it".into(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in hosts {
            let (host, port) = crate::coordinator::parse_host_port(h)
                .map_err(|e| ServerError::Config(format!("hosts: {e}")))?;
            if !seen.insert((host.to_ascii_lowercase(), port)) {
                return bad(format!("hosts: {h:?} is listed twice"));
            }
        }
        Ok(())
    }

    fn validate_security(&self) -> Result<(), ServerError> {
        let bad = |m: &str| Err(ServerError::Config(m.to_string()));
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return bad("tls-cert is set but tls-key is not: set both or neither");
            }
            (None, Some(_)) => {
                return bad("tls-key is set but tls-cert is not: set both or neither");
            }
            _ => {}
        }
        let has_password = self.auth_password.is_some() || self.auth_password_file.is_some();
        if self.auth_password.is_some() && self.auth_password_file.is_some() {
            return bad("auth-password and auth-password-file are both set: use one");
        }
        match &self.auth_user {
            Some(u) if u.is_empty() || u.contains(':') => {
                return bad("auth-user must be non-empty and must not contain ':'");
            }
            Some(_) if !has_password => {
                return bad("auth-user is set but neither auth-password nor auth-password-file");
            }
            None if has_password => {
                return bad("auth-password is set but auth-user is not");
            }
            _ => {}
        }
        if matches!(&self.auth_password, Some(p) if p.is_empty()) {
            return bad("auth-password must not be empty");
        }
        Ok(())
    }

    /// The basic-auth gate these settings ask for (reading `auth-password-file`), or `None`.
    pub fn basic_auth(&self) -> Result<Option<BasicAuth>, ServerError> {
        let Some(user) = &self.auth_user else {
            return Ok(None);
        };
        let password = match (&self.auth_password, &self.auth_password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ServerError::Config(format!(
                        "auth-password-file {}: cannot read: {e}",
                        path.display()
                    ))
                })?;
                let line = text.lines().next().unwrap_or("").trim();
                if line.is_empty() {
                    return Err(ServerError::Config(format!(
                        "auth-password-file {}: the file is empty",
                        path.display()
                    )));
                }
                Secret::new(line)
            }
            (None, None) => {
                return Err(ServerError::Config(
                    "auth-user is set but neither auth-password nor auth-password-file".into(),
                ));
            }
        };
        Ok(Some(
            BasicAuth::new(user.clone(), password).protect_metrics(self.auth_metrics),
        ))
    }

    /// The rustls configuration of the HTTPS API (reading `tls-cert` and `tls-key`), or `None`
    /// for plain HTTP. Errors name the file at fault.
    pub fn tls_server_config(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, ServerError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => crate::api::tls::load_server_config(cert, key)
                .map(Some)
                .map_err(|e| ServerError::Config(e.to_string())),
            (None, None) => Ok(None),
            _ => Err(ServerError::Config(
                "tls-cert and tls-key must be set together".into(),
            )),
        }
    }

    /// Where the embedded metadata store keeps its files.
    pub fn meta_dir(&self) -> PathBuf {
        self.data_dir.join("meta")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_parse_like_go() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("10s"), Ok(10_000));
        assert_eq!(ms("1m30s"), Ok(90_000));
        assert_eq!(ms("1.5s"), Ok(1_500));
        assert_eq!(ms("2h"), Ok(7_200_000));
        assert_eq!(ms("86400"), Ok(86_400_000));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        for bad in ["", "s", "1x", "1..5s", "ms5", "-1s", "1 s", ".s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("99999999999999999999999h").is_err());
    }

    #[test]
    fn toml_keys_are_the_flag_names() {
        let cfg = ServerConfig::from_toml_str(
            r#"
            pd = "10.0.0.1:2379, 10.0.0.2:2379"
            addr = "0.0.0.0:8301"
            data-dir = "/var/lib/tidal"
            etcd = ["10.0.0.9:2379"]
            cluster-id = "c1"
            workers = 3
            gc-ttl = 3600
            gc-tick = "30s"
            checkpoint-interval = "100ms"
            log-level = "WARN"
            session-ttl = "5s"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.pd, vec!["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(cfg.addr, "0.0.0.0:8301".parse().unwrap());
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/tidal"));
        assert_eq!(cfg.meta_dir(), PathBuf::from("/var/lib/tidal/meta"));
        assert_eq!(cfg.etcd, Some(vec!["10.0.0.9:2379".to_string()]));
        assert_eq!(cfg.cluster_id, "c1");
        assert_eq!(cfg.workers, 3);
        assert_eq!(cfg.gc_ttl, Duration::from_secs(3600));
        assert_eq!(cfg.gc_tick, Duration::from_secs(30));
        assert_eq!(cfg.checkpoint_interval, Duration::from_millis(100));
        assert_eq!(cfg.log_level, "warn");
        assert_eq!(cfg.session_ttl, Duration::from_secs(5));
        // untouched keys keep their defaults
        assert_eq!(cfg.backoff_max, Duration::from_secs(300));
    }

    #[test]
    fn defaults_and_rejections() {
        let d = ServerConfig::from_toml_str("").unwrap();
        assert_eq!(d, {
            let mut x = ServerConfig::default();
            x.validate().unwrap();
            x
        });
        assert_eq!(d.addr, "127.0.0.1:8300".parse().unwrap());
        assert_eq!(d.cluster_id, "default");
        assert_eq!(d.gc_ttl, Duration::from_secs(86_400));
        let err = |t: &str| ServerConfig::from_toml_str(t).unwrap_err().to_string();
        assert!(
            err("bogus = 1").contains("unknown field"),
            "{}",
            err("bogus = 1")
        );
        assert!(err("workers = 0").contains("workers"));
        assert!(err("gc-tick = \"soon\"").contains("gc-tick"));
        assert!(err("log-level = \"loud\"").contains("log-level"));
        assert!(err("addr = \"nowhere\"").contains("addr"));
        assert!(err("pd = \"\"").contains("pd"));
        assert!(err("cluster-id = \"a/b\"").contains("cluster-id"));
        assert!(err("workers = [").contains("invalid server config"));
    }

    #[test]
    fn cluster_keys() {
        let cfg = ServerConfig::from_toml_str(
            r#"
            etcd = "127.0.0.1:2379"
            hosts = ["10.0.0.1:9000", "node-b:9000"]
            process = 1
            "#,
        )
        .unwrap();
        assert_eq!(
            cfg.hosts,
            Some(vec!["10.0.0.1:9000".to_string(), "node-b:9000".to_string()])
        );
        assert_eq!(cfg.process, Some(1));
        let d = ServerConfig::from_toml_str("").unwrap();
        assert_eq!((d.hosts, d.process), (None, None));
        let err = |t: &str| ServerConfig::from_toml_str(t).unwrap_err().to_string();
        let etcd = "etcd = \"127.0.0.1:2379\"\n";
        assert_eq!(
            err(&format!("{etcd}hosts = \"a:1,b:2\"\nprocess = 2")),
            "process 2 is out of range: hosts has 2 entries (0..2)"
        );
        assert_eq!(
            err(&format!("{etcd}hosts = \"a:1,b:2\"")),
            "hosts is set but process is not: give this node's index in hosts"
        );
        assert_eq!(
            err(&format!("{etcd}process = 0")),
            "process 0 is set but hosts is not: set both or neither"
        );
        assert_eq!(
            err("hosts = \"a:1\"\nprocess = 0"),
            "hosts requires etcd: the processes of a cluster coordinate through it"
        );
        assert!(
            err(&format!("{etcd}hosts = \"a:1,nope\"\nprocess = 0")).starts_with("hosts: "),
            "{}",
            err(&format!("{etcd}hosts = \"a:1,nope\"\nprocess = 0"))
        );
        assert!(err(&format!("{etcd}hosts = \"a:0\"\nprocess = 0")).starts_with("hosts: "));
        assert!(err(&format!("{etcd}hosts = \"a:65530\"\nprocess = 0")).starts_with("hosts: "));
        assert_eq!(
            err(&format!("{etcd}hosts = \"a:1,A:1\"\nprocess = 0")),
            "hosts: \"A:1\" is listed twice"
        );
    }

    #[test]
    fn security_keys() {
        let cfg = ServerConfig::from_toml_str(
            r#"
            tls-cert = "/etc/tidal/cert.pem"
            tls-key = "/etc/tidal/key.pem"
            auth-user = "admin"
            auth-password = "hunter2-secret"
            auth-metrics = false
            "#,
        )
        .unwrap();
        assert_eq!(cfg.tls_cert, Some(PathBuf::from("/etc/tidal/cert.pem")));
        assert_eq!(cfg.tls_key, Some(PathBuf::from("/etc/tidal/key.pem")));
        assert_eq!(cfg.auth_user.as_deref(), Some("admin"));
        assert_eq!(
            cfg.auth_password.as_ref().map(Secret::expose),
            Some("hunter2-secret")
        );
        assert!(!cfg.auth_metrics);
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2-secret"), "{dbg}");
        assert!(dbg.contains("auth_password: Some(\"xxxxx\")"), "{dbg}");
        let auth = cfg.basic_auth().unwrap().unwrap();
        assert_eq!(auth.user(), "admin");
        assert!(!auth.requires_auth("/metrics"));
        assert!(!format!("{auth:?}").contains("hunter2-secret"));
        // Unreadable files are named in the error.
        let e = cfg.tls_server_config().unwrap_err().to_string();
        assert!(
            e.starts_with("tls-cert /etc/tidal/cert.pem: cannot read"),
            "{e}"
        );

        let d = ServerConfig::from_toml_str("").unwrap();
        assert!(d.basic_auth().unwrap().is_none());
        assert!(d.tls_server_config().unwrap().is_none());
        assert!(d.auth_metrics);

        let err = |t: &str| ServerConfig::from_toml_str(t).unwrap_err().to_string();
        assert!(err("tls-cert = \"c.pem\"").contains("tls-key is not"));
        assert!(err("tls-key = \"k.pem\"").contains("tls-cert is not"));
        assert!(err("auth-user = \"a\"").contains("neither auth-password"));
        assert!(err("auth-password = \"p\"").contains("auth-user is not"));
        assert!(
            err("auth-user = \"a\"\nauth-password = \"p\"\nauth-password-file = \"f\"")
                .contains("both set")
        );
        assert!(err("auth-user = \"a:b\"\nauth-password = \"p\"").contains("':'"));
        // A bad password is never echoed in a config error.
        let e = err("auth-user = \"a\"\nauth-password = 5");
        assert!(e.contains("invalid server config"), "{e}");
    }

    #[test]
    fn password_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "  file-secret \nignored\n").unwrap();
        let mut cfg = ServerConfig {
            auth_user: Some("u".into()),
            auth_password_file: Some(path.clone()),
            ..ServerConfig::default()
        };
        cfg.validate().unwrap();
        let auth = cfg.basic_auth().unwrap().unwrap();
        assert_eq!(
            auth,
            BasicAuth::new("u", Secret::new("file-secret")).protect_metrics(true)
        );
        cfg.auth_password_file = Some(dir.path().join("missing"));
        let e = cfg.basic_auth().unwrap_err().to_string();
        assert!(
            e.starts_with("auth-password-file ") && e.contains("missing: cannot read"),
            "{e}"
        );
        std::fs::write(&path, "\n").unwrap();
        cfg.auth_password_file = Some(path);
        assert!(cfg.basic_auth().unwrap_err().to_string().contains("empty"));
    }

    proptest! {
        #[test]
        fn duration_parser_never_panics(s in ".{0,24}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn millis_round_trip(ms in 0u64..10_000_000_000) {
            prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
        }
    }
}
