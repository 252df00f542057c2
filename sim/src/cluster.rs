//! The assembled cluster: one MVCC store, a region table, a TSO, PD endpoints and TiKV stores,
//! each served over gRPC on its own loopback port.
//!
//! Ports are bound before anything is served, so every address is known (and published through
//! PD's members and stores) by the time [`SimCluster::start`] returns; clients can dial at once.
//! Each store's port serves the `tikvpb.Tikv` reads and the `cdcpb.ChangeData` feed with message
//! size limits raised to 256 MiB. PD endpoint 0 can be given a fixed port (the CLI's `--pd`).
//! Faults are injected through [`Faults`], a cheap handle that can be moved into tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tidal_proto::features::MAX_MESSAGE_SIZE;
use tidal_proto::pdpb::pd_server::PdServer;
use tidal_proto::tikvpb::tikv_server::TikvServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::cdc::{CdcConfig, CdcHub};
use crate::kv::KvService;
use crate::mvcc::MvccStore;
use crate::pd::{PdConfig, PdState};
use crate::region::{Region, RegionConfig, RegionError, RegionManager};
use crate::tso::Tso;

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of TiKV stores (ids 1..=stores).
    pub stores: usize,
    /// The cluster id PD reports and checks (also given to the CDC service).
    pub cluster_id: u64,
    /// CDC service settings (its `cluster_id` is overridden by the one above).
    pub cdc: CdcConfig,
    /// PD topology.
    pub pd: PdConfig,
    /// Replicas per region (0 = a peer on every store).
    pub replicas: usize,
    /// Encoded keys at which the initial region is pre-split.
    pub split_keys: Vec<Vec<u8>>,
    /// Fixed port for PD endpoint 0 (`None` = any free port).
    pub pd_port: Option<u16>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            stores: 3,
            cluster_id: 7_000_000_000_000_000_001,
            cdc: CdcConfig::default(),
            pd: PdConfig::default(),
            replicas: 0,
            split_keys: Vec::new(),
            pd_port: None,
        }
    }
}

impl SimConfig {
    /// The default cluster with regions advancing their resolved ts every `interval` (tests
    /// and demos use ~100 ms to see progress quickly).
    pub fn with_min_ts_interval(interval: Duration) -> Self {
        Self {
            cdc: CdcConfig {
                min_ts_interval: interval,
                ..CdcConfig::default()
            },
            ..Self::default()
        }
    }
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A listener could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which server.
        what: String,
        /// The address tried.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

struct Server1 {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// A running embedded cluster. Stop it with [`SimCluster::shutdown`] (dropping it also stops the
/// servers, without waiting).
pub struct SimCluster {
    cluster_id: u64,
    store: MvccStore,
    regions: RegionManager,
    tso: Tso,
    pd: PdState,
    hub: Arc<CdcHub>,
    pd_addrs: Vec<SocketAddr>,
    store_addrs: Vec<SocketAddr>,
    servers: Vec<Server1>,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("cluster_id", &self.cluster_id)
            .field("pd", &self.pd_addrs)
            .field("stores", &self.store_addrs)
            .finish_non_exhaustive()
    }
}

async fn bind(what: &str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), SimError> {
    let err = |source| SimError::Bind {
        what: what.to_owned(),
        addr: addr.to_string(),
        source,
    };
    let l = TcpListener::bind(addr).await.map_err(err)?;
    let local = l.local_addr().map_err(err)?;
    Ok((l, local))
}

fn spawn_server(router: tonic::transport::server::Router, listener: TcpListener) -> Server1 {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await
        {
            tracing::warn!(error = %e, "sim server stopped with an error");
        }
    });
    Server1 {
        stop: Some(tx),
        task,
    }
}

impl SimCluster {
    /// Builds the cluster and starts every server on 127.0.0.1.
    pub async fn start(cfg: SimConfig) -> Result<SimCluster, SimError> {
        let stores = cfg.stores.max(1);
        let store = MvccStore::new();
        let tso = Tso::new();
        let region_cfg = RegionConfig {
            stores,
            replicas: cfg.replicas,
            split_keys: cfg.split_keys.clone(),
        };
        let regions = RegionManager::new(store.clone(), &region_cfg);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));

        let mut store_listeners = Vec::with_capacity(stores);
        let mut store_addrs = Vec::with_capacity(stores);
        for id in 1..=stores as u64 {
            let (l, addr) = bind(&format!("store {id}"), loopback).await?;
            regions.set_store_address(id, addr.to_string());
            store_listeners.push((id, l));
            store_addrs.push(addr);
        }

        let pd = PdState::new(
            cfg.cluster_id,
            tso.clone(),
            regions.clone(),
            store.clone(),
            &cfg.pd,
        );
        let mut pd_listeners = Vec::new();
        let mut pd_addrs = Vec::new();
        for i in 0..pd.endpoints() {
            let port = if i == 0 { cfg.pd_port.unwrap_or(0) } else { 0 };
            let (l, addr) = bind(
                &format!("PD endpoint {i}"),
                SocketAddr::from(([127, 0, 0, 1], port)),
            )
            .await?;
            pd_listeners.push(l);
            pd_addrs.push(addr);
        }
        pd.set_urls(pd_addrs.iter().map(|a| format!("http://{a}")).collect());

        let mut cdc_cfg = cfg.cdc.clone();
        cdc_cfg.cluster_id = cfg.cluster_id;
        let hub = CdcHub::new(store.clone(), regions.clone(), tso.clone(), cdc_cfg);

        let mut servers = Vec::new();
        for (i, l) in pd_listeners.into_iter().enumerate() {
            let svc = PdServer::new(pd.service(i))
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE);
            servers.push(spawn_server(Server::builder().add_service(svc), l));
        }
        for (id, l) in store_listeners {
            let kv = TikvServer::new(KvService::new(id, store.clone(), regions.clone()))
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE);
            let cdc = hub
                .service_for_store(id)
                .max_decoding_message_size(MAX_MESSAGE_SIZE);
            servers.push(spawn_server(
                Server::builder().add_service(kv).add_service(cdc),
                l,
            ));
        }

        Ok(SimCluster {
            cluster_id: cfg.cluster_id,
            store,
            regions,
            tso,
            pd,
            hub,
            pd_addrs,
            store_addrs,
            servers,
        })
    }

    /// Address of PD endpoint 0 (`host:port`).
    pub fn pd_addr(&self) -> SocketAddr {
        self.pd_addrs
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A TiDB layer writing into this cluster (bootstraps the schema meta keys if missing).
    pub fn tidb(&self) -> Result<crate::tidb::Tidb, crate::tidb::TidbError> {
        crate::tidb::Tidb::new(self.store.clone(), self.tso.clone(), self.regions.clone())
    }

    /// Client URLs of every PD endpoint (`http://host:port`), as `GetMembers` reports them.
    pub fn pd_endpoints(&self) -> Vec<String> {
        self.pd.urls()
    }

    /// Store addresses in store-id order (store `i + 1` at index `i`).
    pub fn store_addrs(&self) -> Vec<SocketAddr> {
        self.store_addrs.clone()
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The MVCC store (write transactions here).
    pub fn store(&self) -> &MvccStore {
        &self.store
    }

    /// The region table.
    pub fn regions(&self) -> &RegionManager {
        &self.regions
    }

    /// The timestamp oracle.
    pub fn tso(&self) -> &Tso {
        &self.tso
    }

    /// PD's state (GC safe points, leadership, outages).
    pub fn pd(&self) -> &PdState {
        &self.pd
    }

    /// The CDC hub.
    pub fn cdc(&self) -> &Arc<CdcHub> {
        &self.hub
    }

    /// A fault-injection handle.
    pub fn faults(&self) -> Faults {
        Faults {
            regions: self.regions.clone(),
            pd: self.pd.clone(),
            hub: Arc::clone(&self.hub),
        }
    }

    /// Stops every server (waiting up to 2 s each for open streams to finish) and the CDC hub.
    pub async fn shutdown(mut self) {
        self.hub.shutdown();
        for s in &mut self.servers {
            if let Some(tx) = s.stop.take() {
                let _ = tx.send(());
            }
        }
        for s in self.servers.drain(..) {
            let abort = s.task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), s.task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        for s in &self.servers {
            s.task.abort();
        }
    }
}

/// Fault injection (cheap to clone).
#[derive(Clone)]
pub struct Faults {
    regions: RegionManager,
    pd: PdState,
    hub: Arc<CdcHub>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

impl Faults {
    /// Splits the region containing `encoded_key` at it; returns (left, right).
    pub fn split_region(&self, encoded_key: &[u8]) -> Result<(Region, Region), RegionError> {
        self.regions.split(encoded_key)
    }

    /// Splits a random region at a random (preferably data-holding) key.
    pub fn split_random(&self, rng: &mut impl Rng) -> Result<(Region, Region), RegionError> {
        self.regions.split_random(rng)
    }

    /// Merges a random adjacent pair of regions.
    pub fn merge_random(&self, rng: &mut impl Rng) -> Result<Region, RegionError> {
        self.regions.merge_random(rng)
    }

    /// Merges `source_id` into the adjacent `target_id`.
    pub fn merge_regions(&self, source_id: u64, target_id: u64) -> Result<Region, RegionError> {
        self.regions.merge_into(source_id, target_id)
    }

    /// Moves a region's leader to `store_id`.
    pub fn transfer_leader(&self, region_id: u64, store_id: u64) -> Result<Region, RegionError> {
        self.regions.transfer_leader(region_id, store_id)
    }

    /// Moves a random region's leader to another of its stores.
    pub fn transfer_random(&self, rng: &mut impl Rng) -> Result<Region, RegionError> {
        self.regions.transfer_random(rng)
    }

    /// Moves a follower peer between stores (bumps conf_ver).
    pub fn move_peer(
        &self,
        region_id: u64,
        from_store: u64,
        to_store: u64,
    ) -> Result<Region, RegionError> {
        self.regions.move_peer(region_id, from_store, to_store)
    }

    /// Every PD call fails with `Unavailable` for `d`.
    pub fn pd_unavailable_for(&self, d: Duration) {
        self.pd.set_unavailable_for(d);
    }

    /// Moves PD leadership to endpoint `index` (with two endpoints configured).
    pub fn pd_transfer_leader(&self, index: usize) {
        self.pd.set_leader(index);
    }

    /// Forces the GC safe point (PD's and the store's physical one) up to `ts`, ignoring service
    /// safe points — data a reader at a lower ts needs is gone. Returns the resulting safe point.
    pub fn advance_gc_safe_point(&self, ts: u64) -> u64 {
        self.pd.update_gc_safe_point(ts)
    }

    /// Runs a TiDB-style GC round towards `ts`, held back by service safe points (e.g. TiCDC's).
    /// Returns the resulting GC safe point.
    pub fn run_gc(&self, ts: u64) -> u64 {
        self.pd.run_gc(ts)
    }

    /// Drops every CDC stream of a store (clients see the stream end).
    pub fn reset_store_streams(&self, store_id: u64) {
        self.hub.reset_store_streams(store_id);
    }

    /// Stops (or resumes) a region's resolved ts.
    pub fn stall_region(&self, region_id: u64, stalled: bool) {
        self.hub.stall_region(region_id, stalled);
    }

    /// Delays every CDC event by `d`.
    pub fn set_event_delay(&self, d: Duration) {
        self.hub.set_event_delay(d);
    }

    /// Makes a store's CDC registrations fail with server_is_busy.
    pub fn set_busy(&self, store_id: u64, busy: bool) {
        self.hub.set_busy(store_id, busy);
    }
}
