//! `tidal server`: one long-running Tidal node (control plane, HTTP API, dataflow workers).
//!
//! Settings come from defaults, then the TOML file given with `--config` (kebab-case keys, the
//! same names as the flags), then the flags: a flag always wins over the file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tidal_control::server::{ServerConfig, parse_duration, run_until_ctrl_c_with, split_list};

/// Arguments of `tidal server`.
#[derive(Debug, Args)]
#[command(
    about = "Run a Tidal node: control plane, HTTP API and dataflow workers",
    after_help = "Without --etcd the node keeps its metadata in an embedded store under \
                  --data-dir (single node). With --etcd, several nodes form a cluster and elect \
                  a coordinator. With --hosts and --process (and --etcd) the nodes form one \
                  multi-process timely cluster: every changefeed runs over all live processes; \
                  process i needs the ports HOST:PORT .. PORT+31 of its hosts entry free.\n\nExample:\n  tidal server --pd 127.0.0.1:2379 \
                  --addr 127.0.0.1:8300 --data-dir /var/lib/tidal"
)]
pub struct ServerArgs {
    /// PD endpoints of the upstream cluster, comma-separated.
    #[arg(long, value_name = "ADDR[,ADDR]")]
    pd: Option<String>,
    /// Address the HTTP API listens on.
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,
    /// Address other nodes and clients use to reach this one (defaults to --addr).
    #[arg(long, value_name = "HOST:PORT")]
    advertise_addr: Option<String>,
    /// Directory for local state (the embedded metadata store, sink spill files).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// etcd endpoints for cluster metadata; omit to use the embedded store.
    #[arg(long, value_name = "ADDR[,ADDR]")]
    etcd: Option<String>,
    /// TOML file with the same keys as these flags (kebab-case).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Cluster id: the namespace of this cluster's metadata keys.
    #[arg(long)]
    cluster_id: Option<String>,
    /// Timely worker threads per changefeed in this process.
    #[arg(long)]
    workers: Option<usize>,
    /// How long the PD service GC safe point is held for a stalled changefeed (e.g. 24h).
    #[arg(long, value_name = "DURATION")]
    gc_ttl: Option<String>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long)]
    log_level: Option<String>,
    /// Timely base address of every process of a multi-process cluster, comma-separated, the
    /// same list in the same order on every node (requires --etcd and --process).
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT]")]
    hosts: Option<String>,
    /// This node's index in --hosts (0-based).
    #[arg(long, value_name = "I")]
    process: Option<usize>,
    /// PEM certificate chain: the API serves HTTPS only (needs --tls-key).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Require HTTP basic auth on the API (all routes but /api/v2/health) for this user.
    #[arg(long, value_name = "USER")]
    auth_user: Option<String>,
    /// File whose first line is --auth-user's password (kept off the command line).
    #[arg(long, value_name = "FILE")]
    auth_password_file: Option<PathBuf>,
}

impl ServerArgs {
    /// The node's configuration: defaults, then the file, then the flags.
    fn config(&self) -> Result<ServerConfig, String> {
        let mut cfg = match &self.config {
            Some(path) => ServerConfig::load(path).map_err(|e| e.to_string())?,
            None => ServerConfig::default(),
        };
        if let Some(pd) = &self.pd {
            cfg.pd = split_list(pd);
        }
        if let Some(addr) = &self.addr {
            cfg.addr = addr.parse().map_err(|e| format!("--addr {addr:?}: {e}"))?;
        }
        if let Some(a) = &self.advertise_addr {
            cfg.advertise_addr = Some(a.clone());
        }
        if let Some(dir) = &self.data_dir {
            cfg.data_dir = dir.clone();
        }
        if let Some(etcd) = &self.etcd {
            cfg.etcd = Some(split_list(etcd));
        }
        if let Some(id) = &self.cluster_id {
            cfg.cluster_id = id.clone();
        }
        if let Some(w) = self.workers {
            cfg.workers = w;
        }
        if let Some(ttl) = &self.gc_ttl {
            cfg.gc_ttl = parse_duration(ttl).map_err(|e| format!("--gc-ttl: {e}"))?;
        }
        if let Some(level) = &self.log_level {
            cfg.log_level = level.clone();
        }
        if let Some(hosts) = &self.hosts {
            let v = split_list(hosts);
            cfg.hosts = (!v.is_empty()).then_some(v);
        }
        if let Some(p) = self.process {
            cfg.process = Some(p);
        }
        if let Some(f) = &self.tls_cert {
            cfg.tls_cert = Some(f.clone());
        }
        if let Some(f) = &self.tls_key {
            cfg.tls_key = Some(f.clone());
        }
        if let Some(u) = &self.auth_user {
            cfg.auth_user = Some(u.clone());
        }
        if let Some(f) = &self.auth_password_file {
            cfg.auth_password_file = Some(f.clone());
        }
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }
}

/// Runs the node until Ctrl-C or SIGTERM, then shuts down gracefully.
pub fn run(args: ServerArgs) -> ExitCode {
    let cfg = match args.config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("tidal server: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidal server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log = super::logging::init(&cfg.log_level);
    match runtime.block_on(run_until_ctrl_c_with(cfg, Some(log))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidal server: {e}");
            ExitCode::FAILURE
        }
    }
}
