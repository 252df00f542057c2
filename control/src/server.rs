//! `tidal server`: one node of the control plane, assembled from its parts.
//!
//! A node binds its HTTP address first (so a port conflict fails the start before anything
//! else happens), connects to PD, opens the metadata store — etcd when endpoints are given
//! (several nodes share it and elect a coordinator), otherwise the embedded store in
//! `<data-dir>/meta` (a single node) — and then runs the [`ChangefeedService`], the
//! [`GcManager`], the [`Coordinator`], the TiCDC-compatible API and the metrics updater.
//! [`Server::shutdown`] undoes it in the safe order: stop accepting work, let the coordinator
//! save each changefeed's last durable checkpoint and stop its dataflow, revoke the owner lease,
//! then close the API.
//!
//! With `hosts` and `process` (and etcd) the node is one process of a multi-process cluster:
//! every changefeed's dataflow then runs over all live processes (see
//! [`crate::coordinator::cluster`]).
//!
//! With `tls-cert`/`tls-key` the API is served over HTTPS only; with `auth-user` it requires
//! HTTP basic auth (see [`crate::api::auth`]). Both are loaded before anything else starts, so
//! a missing or invalid certificate, key or password file refuses the start with an error
//! naming the file.

mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tidal_ingest::pd::{PdClient, PdConfig, PdError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{ServerConfig, normalize_log_level, parse_duration, split_list};

use crate::api::tls::TlsListener;
use crate::api::{ApiState, Liveness, LogControl, ServerInfo, router};
use crate::coordinator::{ClusterMembership, Coordinator, CoordinatorConfig};
use crate::gc::{GcConfig, GcManager, PdApi, cluster_service_id};
use crate::meta::{EmbeddedStore, EtcdStore, KeyLayout, MetaError, MetaStore};
use crate::metrics::{Metrics, MetricsUpdater};
use crate::service::{ChangefeedService, ServiceConfig, generate_changefeed_id};

/// How long connecting to PD may take at startup.
const PD_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the HTTP server may take to finish in-flight requests at shutdown.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// PD could not be reached.
    #[error("cannot connect to PD {endpoints}: {reason}")]
    Pd {
        /// The endpoints tried.
        endpoints: String,
        /// Why.
        reason: String,
    },
    /// The metadata store could not be opened.
    #[error("metadata store: {0}")]
    Meta(#[from] MetaError),
    /// Waiting for a shutdown signal failed.
    #[error("signal handling: {0}")]
    Signal(std::io::Error),
}

impl ServerError {
    fn pd(endpoints: &[String], e: &PdError) -> Self {
        ServerError::Pd {
            endpoints: endpoints.join(","),
            reason: e.to_string(),
        }
    }
}

/// The bound API socket: plain HTTP or HTTPS only.
enum ApiListener {
    Plain(tokio::net::TcpListener),
    Tls(TlsListener),
}

/// A running node.
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    addr: SocketAddr,
    https: bool,
    capture_id: String,
    store: Arc<dyn MetaStore>,
    service: Arc<ChangefeedService>,
    coordinator: Coordinator,
    metrics: Metrics,
    api: ApiState,
    http: JoinHandle<std::io::Result<()>>,
    http_stop: Option<oneshot::Sender<()>>,
    metrics_task: JoinHandle<()>,
}

async fn open_store(cfg: &ServerConfig) -> Result<Arc<dyn MetaStore>, ServerError> {
    match &cfg.etcd {
        Some(endpoints) => {
            let mut last = None;
            for ep in endpoints {
                match EtcdStore::connect(ep).await {
                    Ok(s) => {
                        tracing::info!(endpoint = %ep, "metadata in etcd");
                        return Ok(Arc::new(s));
                    }
                    Err(e) => {
                        tracing::warn!(endpoint = %ep, error = %e, "etcd endpoint unavailable");
                        last = Some(e);
                    }
                }
            }
            Err(last
                .map(ServerError::Meta)
                .unwrap_or_else(|| ServerError::Config("etcd: no endpoints".into())))
        }
        None => {
            let dir = cfg.meta_dir();
            let store = EmbeddedStore::open(&dir).await?;
            tracing::info!(dir = %dir.display(), "metadata in the embedded store");
            Ok(Arc::new(store))
        }
    }
}

impl Server {
    /// Starts a node (see the module docs).
    pub async fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
        Server::start_with(cfg, None).await
    }

    /// Starts a node whose `POST /api/v2/log` changes the log level through `log`.
    pub async fn start_with(
        mut cfg: ServerConfig,
        log: Option<Arc<dyn LogControl>>,
    ) -> Result<Server, ServerError> {
        cfg.validate()?;
        let tls = cfg.tls_server_config()?;
        let basic_auth = cfg.basic_auth()?;
        let keys = KeyLayout::new(&cfg.cluster_id)?;
        let listener = tokio::net::TcpListener::bind(cfg.addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: cfg.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: cfg.addr,
            source,
        })?;
        let https = tls.is_some();
        let listener = match tls {
            Some(tls) => ApiListener::Tls(TlsListener::new(listener, tls).map_err(|source| {
                ServerError::Bind {
                    addr: cfg.addr,
                    source,
                }
            })?),
            None => ApiListener::Plain(listener),
        };
        let advertise = cfg
            .advertise_addr
            .clone()
            .unwrap_or_else(|| addr.to_string());

        let pd = tokio::time::timeout(
            PD_CONNECT_TIMEOUT,
            PdClient::connect(PdConfig::new(cfg.pd.clone())),
        )
        .await
        .map_err(|_| ServerError::Pd {
            endpoints: cfg.pd.join(","),
            reason: format!("no answer within {PD_CONNECT_TIMEOUT:?}"),
        })?
        .map_err(|e| ServerError::pd(&cfg.pd, &e))?;
        let pd = Arc::new(pd);
        let pd_api: Arc<dyn PdApi> = Arc::clone(&pd) as _;

        let store = open_store(&cfg).await?;
        let metrics = Metrics::new();
        let gc = Arc::new(GcManager::new(
            Arc::clone(&pd_api),
            GcConfig {
                service_id: cluster_service_id(&cfg.cluster_id),
                gc_ttl: cfg.gc_ttl,
            },
            Some(metrics.clone()),
        ));
        let service = Arc::new(ChangefeedService::new(
            Arc::clone(&store),
            keys,
            pd_api,
            gc,
            ServiceConfig {
                creator_version: env!("CARGO_PKG_VERSION").to_string(),
                advertise_addr: advertise.clone(),
            },
        ));
        let capture_id = generate_changefeed_id();
        let coordinator_cfg = CoordinatorConfig {
            workers: cfg.workers,
            checkpoint_interval: cfg.checkpoint_interval,
            resync_interval: Duration::from_secs(1),
            gc_tick: cfg.gc_tick,
            backoff_initial: cfg.backoff_initial,
            backoff_max: cfg.backoff_max,
            election: cfg.etcd.is_some(),
            session_ttl: cfg.session_ttl,
            capture_id: capture_id.clone(),
            advertise_addr: advertise.clone(),
            start_timeout: Duration::from_secs(60),
            spill_dir: Some(cfg.data_dir.join("spill")),
        };
        let coordinator = match (&cfg.hosts, cfg.process) {
            (Some(hosts), Some(process)) => {
                tracing::info!(process, ?hosts, "one process of a multi-process cluster");
                Coordinator::start_cluster(
                    Arc::clone(&service),
                    Arc::clone(&pd),
                    coordinator_cfg,
                    Some(metrics.clone()),
                    ClusterMembership {
                        process,
                        hosts: hosts.clone(),
                    },
                )
            }
            _ => Coordinator::start_with_metrics(
                Arc::clone(&service),
                Arc::clone(&pd),
                coordinator_cfg,
                Some(metrics.clone()),
            ),
        };

        let mut api = ApiState::new(
            Arc::clone(&service),
            ServerInfo::new(&capture_id, &cfg.cluster_id, &advertise),
            metrics.clone(),
        );
        if let Some(log) = log {
            api = api.with_log_control(log);
        }
        if let Some(auth) = basic_auth {
            api = api.with_basic_auth(auth);
        }
        let (http_stop, stop_rx) = oneshot::channel::<()>();
        let app = router(api.clone());
        let stopped = async move {
            let _ = stop_rx.await;
        };
        let http = match listener {
            ApiListener::Tls(listener) => tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }),
            ApiListener::Plain(listener) => tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }),
        };
        let metrics_task = Arc::new(MetricsUpdater::new(Arc::clone(&service), metrics.clone()))
            .spawn(cfg.metrics_interval);
        tracing::info!(%addr, https, cluster = %cfg.cluster_id, capture = %capture_id, "tidal server started");
        Ok(Server {
            cfg,
            addr,
            https,
            capture_id,
            store,
            service,
            coordinator,
            metrics,
            api,
            http,
            http_stop: Some(http_stop),
            metrics_task,
        })
    }

    /// The address the API is bound to (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<bound address>`, or `https://` when the API is served over TLS.
    pub fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// This node's capture id.
    pub fn capture_id(&self) -> &str {
        &self.capture_id
    }

    /// The settings it runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// The metadata store.
    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// The changefeed service.
    pub fn service(&self) -> &Arc<ChangefeedService> {
        &self.service
    }

    /// The coordinator.
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stops gracefully: `/status` reports stopping, the coordinator saves the last durable
    /// checkpoints, stops the dataflows and revokes its lease, then the API drains and closes.
    pub async fn shutdown(mut self) {
        tracing::info!(addr = %self.addr, "tidal server shutting down");
        self.api.set_liveness(Liveness::Stopping);
        self.coordinator.shutdown().await;
        self.metrics_task.abort();
        let _ = (&mut self.metrics_task).await;
        if let Some(stop) = self.http_stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(HTTP_DRAIN_TIMEOUT, &mut self.http).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Err(_) => {
                self.http.abort();
                let _ = (&mut self.http).await;
            }
        }
        tracing::info!("tidal server stopped");
    }
}

/// Runs a node until Ctrl-C (or SIGTERM on Unix), then shuts it down gracefully.
pub async fn run_until_ctrl_c(cfg: ServerConfig) -> Result<(), ServerError> {
    run_until_ctrl_c_with(cfg, None).await
}

/// [`run_until_ctrl_c`] with a log control for `POST /api/v2/log`.
pub async fn run_until_ctrl_c_with(
    cfg: ServerConfig,
    log: Option<Arc<dyn LogControl>>,
) -> Result<(), ServerError> {
    let server = Server::start_with(cfg, log).await?;
    println!("tidal server listening on {}", server.base_url());
    wait_for_signal().await?;
    server.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> Result<(), ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signal)?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(ServerError::Signal),
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> Result<(), ServerError> {
    tokio::signal::ctrl_c().await.map_err(ServerError::Signal)
}
