//! The PD client against the embedded cluster of `tidal-sim` (real gRPC on loopback).
//!
//! Most tests start a `SimCluster` and use its PD state and fault handle to split and merge
//! regions, move PD leadership, run GC or inject an outage, then check what the client does.
//! One test serves the sim's PD state on endpoints it can stop itself, to kill the leader's
//! process outright. Every await that talks to the network is bounded by `within`, so a bug
//! fails the test instead of hanging it.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use tidal_ingest::pd::{PdClient, PdConfig, PdError};
use tidal_model::Ts;
use tidal_model::codec::bytes::encode_key;
use tidal_proto::pdpb::pd_server::PdServer;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::mvcc::MvccStore;
use tidal_sim::pd::{PdConfig as SimPdConfig, PdState};
use tidal_sim::region::{RegionConfig, RegionManager};
use tidal_sim::tso::Tso;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// Fails the test if `fut` does not finish within `secs`.
async fn within<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("operation hung")
}

/// A sim cluster with `pd_endpoints` PD endpoints, plus shortcuts.
struct Harness {
    cluster: SimCluster,
    urls: Vec<String>,
}

impl Harness {
    async fn start(pd_endpoints: usize) -> Harness {
        let cluster = within(
            10,
            SimCluster::start(SimConfig {
                pd: SimPdConfig {
                    endpoints: pd_endpoints,
                },
                ..SimConfig::default()
            }),
        )
        .await
        .expect("sim cluster starts");
        let urls = cluster.pd_endpoints();
        assert_eq!(urls.len(), pd_endpoints);
        Harness { cluster, urls }
    }

    fn state(&self) -> &PdState {
        self.cluster.pd()
    }

    fn regions(&self) -> &RegionManager {
        self.cluster.regions()
    }

    fn config(&self) -> PdConfig {
        PdConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            ..PdConfig::new(self.urls.clone())
        }
    }

    async fn client(&self) -> PdClient {
        within(10, PdClient::connect(self.config())).await.unwrap()
    }
}

/// The sim's PD state served on endpoints this test can stop (as if a PD process died).
struct StoppablePd {
    state: PdState,
    urls: Vec<String>,
    stops: Vec<Option<oneshot::Sender<()>>>,
}

impl StoppablePd {
    async fn start(n: usize) -> StoppablePd {
        let store = MvccStore::new();
        let regions = RegionManager::new(store.clone(), &RegionConfig::default());
        let state = PdState::new(
            42,
            Tso::new(),
            regions,
            store,
            &SimPdConfig { endpoints: n },
        );
        let mut urls = Vec::new();
        let mut stops = Vec::new();
        for i in 0..n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            urls.push(format!("http://{}", listener.local_addr().unwrap()));
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            stops.push(Some(stop_tx));
            let svc = PdServer::new(state.service(i));
            tokio::spawn(async move {
                let _ = Server::builder()
                    .add_service(svc)
                    .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        }
        state.set_urls(urls.clone());
        StoppablePd { state, urls, stops }
    }

    fn stop(&mut self, i: usize) {
        if let Some(tx) = self.stops[i].take() {
            let _ = tx.send(());
        }
    }
}

/// A loopback address with nothing listening.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn connect_learns_cluster_id_leader_and_members() {
    let h = Harness::start(2).await;
    let client = h.client().await;
    assert_eq!(client.cluster_id(), h.cluster.cluster_id());
    assert_eq!(client.leader_url(), h.urls[0]);
    let members = client.members();
    assert_eq!(members.len(), 2);
    assert_eq!(members[1].client_urls, vec![h.urls[1].clone()]);

    // Through the follower only: GetMembers works on any member and names the leader.
    let via_follower = within(
        10,
        PdClient::connect(PdConfig {
            endpoints: vec![h.urls[1].trim_start_matches("http://").to_string()],
            ..h.config()
        }),
    )
    .await
    .unwrap();
    assert_eq!(via_follower.leader_url(), h.urls[0]);
    assert_eq!(via_follower.cluster_id(), h.cluster.cluster_id());

    // A dead endpoint first in the list is skipped.
    let mut cfg = h.config();
    cfg.endpoints.insert(0, dead_endpoint());
    let c = within(10, PdClient::connect(cfg)).await.unwrap();
    assert_eq!(c.leader_url(), h.urls[0]);
    let ts = within(5, c.get_ts()).await.unwrap();
    assert!(ts > Ts::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_get_ts_is_unique_increasing_and_batched() {
    let h = Harness::start(1).await;
    let client = h.client().await;
    let before = now_ms();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::with_capacity(100);
            for _ in 0..100 {
                got.push(c.get_ts().await.unwrap());
            }
            got
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        let got = within(30, t).await.unwrap();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "one caller's timestamps must strictly increase"
        );
        for ts in got {
            assert!(all.insert(ts), "duplicate timestamp {ts:?}");
        }
    }
    assert_eq!(all.len(), 6400);
    let sent = client.tso_requests_sent();
    // 64 callers queue up while one request is in flight; expect several callers per request.
    assert!(sent <= 1600, "expected batching, got {sent} TSO requests");
    assert!(sent > 0);
    // Physical parts are PD's wall clock.
    let max = all.iter().max().unwrap();
    assert!(max.physical_ms() + 5_000 >= before && max.physical_ms() <= now_ms() + 5_000);

    // A batch is consecutive and above everything handed out before.
    let batch = within(5, client.get_ts_batch(10)).await.unwrap();
    assert_eq!(batch.len(), 10);
    assert!(batch.windows(2).all(|w| w[1].0 == w[0].0 + 1), "{batch:?}");
    assert!(batch[0] > *max);
    assert!(within(5, client.get_ts_batch(0)).await.unwrap().is_empty());
    assert!(matches!(
        within(5, client.get_ts_batch(1_000_000)).await,
        Err(PdError::InvalidArgument { .. })
    ));
}

#[tokio::test]
async fn region_cache_follows_splits_merges_and_leader_moves() {
    let h = Harness::start(1).await;
    let client = h.client().await;
    let (ka, kg, km, kz) = (
        encode_key(b"a"),
        encode_key(b"g"),
        encode_key(b"m"),
        encode_key(b"z"),
    );

    let whole = within(5, client.locate_key(&ka)).await.unwrap();
    assert!(whole.region.start_key.is_empty() && whole.region.end_key.is_empty());
    assert_eq!(whole.leader.map(|p| p.store_id), Some(1));
    assert_eq!(client.cached_region_count(), 1);

    // Split at "m": the cache still answers with the old region until told otherwise.
    let (left, right) = h.cluster.faults().split_region(&km).unwrap();
    assert_eq!(right.id, whole.id(), "the sim's right half keeps the id");
    assert_eq!(
        within(5, client.locate_key(&ka)).await.unwrap().id(),
        whole.id()
    );
    client.invalidate_region(whole.id());
    assert_eq!(client.cached_region_count(), 0);
    let l = within(5, client.locate_key(&ka)).await.unwrap();
    assert_eq!(l.id(), left.id);
    assert_eq!(l.region.end_key, km);
    let r = within(5, client.locate_key(&kz)).await.unwrap();
    assert_eq!(r.id(), right.id);
    assert_eq!(r.region.start_key, km);
    assert_eq!(client.cached_region_count(), 2);

    // Split the left half at "f" and report it as TiKV would (EpochNotMatch.current_regions).
    let (ll, lr) = h.cluster.faults().split_region(&encode_key(b"f")).unwrap();
    client.on_epoch_not_match(&[ll.to_metapb(), lr.to_metapb()]);
    assert_eq!(client.cached_region(&ka).unwrap().id(), ll.id);
    assert_eq!(client.cached_region(&kg).unwrap().id(), lr.id);
    assert_eq!(
        client.cached_region(&kg).unwrap().epoch(),
        (lr.epoch.version, lr.epoch.conf_ver)
    );
    assert_eq!(client.cached_region_count(), 3);
    // A stale report (the pre-split left region) does not undo it.
    client.on_epoch_not_match(&[left.to_metapb()]);
    assert_eq!(client.cached_region(&ka).unwrap().id(), ll.id);

    // Merge the two back: one entry replaces both.
    let merged = h.cluster.faults().merge_regions(ll.id, lr.id).unwrap();
    client.on_epoch_not_match(&[merged.to_metapb()]);
    assert_eq!(client.cached_region(&ka).unwrap().id(), merged.id);
    assert_eq!(client.cached_region(&kg).unwrap().id(), merged.id);
    assert_eq!(client.cached_region_count(), 2);

    // Leader moves: a NotLeader hint updates the cached leader; an unknown peer drops the entry.
    let moved = h.cluster.faults().transfer_leader(right.id, 3).unwrap();
    let new_leader = moved.leader_peer().unwrap().to_metapb();
    assert!(client.update_leader(right.id, new_leader));
    assert_eq!(
        client
            .cached_region(&kz)
            .unwrap()
            .leader
            .map(|p| p.store_id),
        Some(3)
    );
    let bogus = tidal_proto::metapb::Peer {
        id: 999_999,
        store_id: 2,
        ..Default::default()
    };
    assert!(!client.update_leader(right.id, bogus));
    assert!(client.cached_region(&kz).is_none());
    let fresh = within(5, client.region_by_id(right.id)).await.unwrap();
    assert_eq!(fresh.leader.map(|p| p.store_id), Some(3));
    assert!(matches!(
        within(5, client.region_by_id(123_456)).await,
        Err(PdError::RegionNotFound { region_id: 123_456 })
    ));
}

#[tokio::test]
async fn scan_regions_pages_and_fills_the_cache() {
    let h = Harness::start(1).await;
    let client = h.client().await;
    // More regions than one ScanRegions page (1024).
    for i in 0..1100u32 {
        h.cluster
            .faults()
            .split_region(&encode_key(format!("k{i:05}").as_bytes()))
            .unwrap();
    }
    let expected: Vec<(u64, Vec<u8>, Vec<u8>)> = h
        .regions()
        .all()
        .into_iter()
        .map(|r| (r.id, r.start, r.end))
        .collect();
    assert_eq!(expected.len(), 1101);

    let all = within(20, client.scan_regions(b"", b"", 0)).await.unwrap();
    let got: Vec<(u64, Vec<u8>, Vec<u8>)> = all
        .iter()
        .map(|i| (i.id(), i.region.start_key.clone(), i.region.end_key.clone()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(client.cached_region_count(), 1101);
    assert!(all.iter().all(|i| i.leader.map(|p| p.store_id) == Some(1)));

    // A sub-range: from the region containing the start to the one containing end - 1.
    let start = encode_key(b"k00010x");
    let end = encode_key(b"k00013");
    let part = within(5, client.scan_regions(&start, &end, 0))
        .await
        .unwrap();
    let ids: Vec<u64> = part.iter().map(|i| i.id()).collect();
    let want: Vec<u64> = h
        .regions()
        .scan(&start, &end, 0)
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, want);
    assert_eq!(
        part.len(),
        3,
        "[k00010, k00011), [k00011, k00012), [k00012, k00013)"
    );
    assert!(part[0].contains(&start));

    // Limit.
    let two = within(5, client.scan_regions(b"", b"", 2)).await.unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].id(), expected[0].0);
    assert_eq!(two[1].id(), expected[1].0);
    // Empty range.
    assert!(
        within(5, client.scan_regions(&end, &start, 0))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn stores_are_listed_and_cached() {
    let h = Harness::start(1).await;
    let client = h.client().await;
    let mut stores = within(5, client.get_all_stores()).await.unwrap();
    stores.sort_by_key(|s| s.id);
    let got: Vec<(u64, String)> = stores.iter().map(|s| (s.id, s.address.clone())).collect();
    let want: Vec<(u64, String)> = h
        .cluster
        .store_addrs()
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.to_string()))
        .collect();
    assert_eq!(want.len(), 3);
    assert_eq!(got, want);
    let s2 = within(5, client.get_store(2)).await.unwrap();
    assert_eq!(s2.address, want[1].1);
    // Cached: a PD outage does not affect a cached store.
    h.state().set_unavailable_for(Duration::from_secs(30));
    assert_eq!(within(5, client.get_store(2)).await.unwrap(), s2);
    h.state().set_unavailable_for(Duration::ZERO);
    assert_eq!(
        within(5, client.get_store(42)).await,
        Err(PdError::StoreNotFound { store_id: 42 })
    );
}

#[tokio::test]
async fn gc_and_service_safe_points_round_trip() {
    let h = Harness::start(1).await;
    let client = h.client().await;
    assert_eq!(within(5, client.get_gc_safe_point()).await.unwrap(), 0);
    assert_eq!(
        within(5, client.update_gc_safe_point(100)).await.unwrap(),
        100
    );
    assert_eq!(
        within(5, client.update_gc_safe_point(50)).await.unwrap(),
        100,
        "never backwards"
    );
    assert_eq!(within(5, client.get_gc_safe_point()).await.unwrap(), 100);

    // The answer describes the minimum across services: at first TiDB's gc_worker at 0.
    let sp = within(5, client.update_service_gc_safe_point("tidal-a", 3600, 500))
        .await
        .unwrap();
    assert_eq!(sp.service_id, "gc_worker");
    assert_eq!(sp.min_safe_point, 0);

    // A GC round to 1000 is held back by tidal-a at 500.
    assert_eq!(h.state().run_gc(1000), 500);
    assert_eq!(within(5, client.get_gc_safe_point()).await.unwrap(), 500);

    // Below the minimum: refused, and the answer names the holder.
    let sp = within(5, client.update_service_gc_safe_point("tidal-b", 3600, 450))
        .await
        .unwrap();
    assert_eq!(sp.service_id, "tidal-a");
    assert_eq!(sp.min_safe_point, 500);
    assert!(sp.ttl > 3500 && sp.ttl <= 3600, "{}", sp.ttl);

    let sp = within(5, client.update_service_gc_safe_point("tidal-b", 60, 700))
        .await
        .unwrap();
    assert_eq!(
        (sp.service_id.as_str(), sp.min_safe_point),
        ("tidal-a", 500)
    );

    // Removing tidal-a makes tidal-b (700) the minimum (gc_worker is at 1000).
    let sp = within(5, client.remove_service_gc_safe_point("tidal-a"))
        .await
        .unwrap();
    assert_eq!(
        (sp.service_id.as_str(), sp.min_safe_point),
        ("tidal-b", 700)
    );
    assert!(sp.ttl > 0 && sp.ttl <= 60);
}

#[tokio::test]
async fn follows_leader_to_the_second_endpoint() {
    let h = Harness::start(2).await;
    // Only the first endpoint is configured: the second is learned from GetMembers.
    let client = within(
        10,
        PdClient::connect(PdConfig {
            endpoints: vec![h.urls[0].clone()],
            ..h.config()
        }),
    )
    .await
    .unwrap();
    assert_eq!(client.leader_url(), h.urls[0]);
    let t1 = within(5, client.get_ts()).await.unwrap();
    let r = within(5, client.locate_key(b"")).await.unwrap();

    // Leadership moves: endpoint 0 now answers "not leader" to everything but GetMembers.
    h.cluster.faults().pd_transfer_leader(1);
    let t2 = within(10, client.get_ts()).await.unwrap();
    assert!(t2 > t1);
    assert_eq!(client.leader_url(), h.urls[1]);
    assert_eq!(within(10, client.get_gc_safe_point()).await.unwrap(), 0);

    // And back; a region lookup (unary) follows too.
    h.cluster.faults().pd_transfer_leader(0);
    client.invalidate_region(r.id());
    let again = within(10, client.locate_key(b"")).await.unwrap();
    assert_eq!(again.id(), r.id());
    assert_eq!(client.leader_url(), h.urls[0]);
    let t3 = within(10, client.get_ts()).await.unwrap();
    assert!(t3 > t2);
}

#[tokio::test]
async fn survives_the_death_of_the_leader_process() {
    let mut pd = StoppablePd::start(2).await;
    // A dead address first, then both endpoints.
    let mut endpoints = vec![dead_endpoint()];
    endpoints.extend(pd.urls.iter().cloned());
    let client = within(
        10,
        PdClient::connect(PdConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            ..PdConfig::new(endpoints)
        }),
    )
    .await
    .unwrap();
    assert_eq!(client.cluster_id(), 42);
    assert_eq!(client.leader_url(), pd.urls[0]);
    let t1 = within(5, client.get_ts()).await.unwrap();
    within(5, client.get_all_stores()).await.unwrap();

    // Endpoint 0 stops listening and endpoint 1 takes over.
    pd.stop(0);
    pd.state.set_leader(1);
    let stores = within(10, client.get_all_stores()).await.unwrap();
    assert_eq!(stores.len(), 3);
    assert_eq!(client.leader_url(), pd.urls[1]);
    let t2 = within(10, client.get_ts()).await.unwrap();
    assert!(t2 > t1);
    let batch = within(10, client.get_ts_batch(5)).await.unwrap();
    assert!(batch[0] > t2);
    let r = within(10, client.locate_key(b"")).await.unwrap();
    assert!(r.region.start_key.is_empty() && r.region.end_key.is_empty());
}

#[tokio::test]
async fn short_outage_is_ridden_out() {
    let h = Harness::start(1).await;
    let client = h.client().await;
    let t1 = within(5, client.get_ts()).await.unwrap();

    h.state().set_unavailable_for(Duration::from_millis(700));
    let started = Instant::now();
    let (ts, sp) = within(10, async {
        tokio::join!(client.get_ts(), client.get_gc_safe_point())
    })
    .await;
    let waited = started.elapsed();
    assert!(ts.unwrap() > t1);
    assert_eq!(sp.unwrap(), 0);
    assert!(waited >= Duration::from_millis(600), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn long_outage_times_out_naming_the_endpoints() {
    let h = Harness::start(1).await;
    let client = within(
        10,
        PdClient::connect(PdConfig {
            request_timeout: Duration::from_millis(800),
            ..h.config()
        }),
    )
    .await
    .unwrap();
    let t1 = within(5, client.get_ts()).await.unwrap();

    h.state().set_unavailable_for(Duration::from_secs(30));
    let started = Instant::now();
    let err = within(10, client.get_gc_safe_point()).await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    match &err {
        PdError::Timeout {
            what,
            endpoints,
            last_error,
            ..
        } => {
            assert_eq!(*what, "GetGCSafePoint");
            assert!(endpoints.contains(&h.urls[0]), "{endpoints:?}");
            assert!(last_error.contains("injected outage"), "{last_error}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.to_string().contains(&h.urls[0]));

    let err = within(10, client.get_ts()).await.unwrap_err();
    assert!(
        matches!(&err, PdError::Timeout { what: "Tso", endpoints, .. } if endpoints.contains(&h.urls[0])),
        "{err:?}"
    );

    // After the outage the same client works again.
    h.state().set_unavailable_for(Duration::ZERO);
    let t2 = within(5, client.get_ts()).await.unwrap();
    assert!(t2 > t1);
    assert_eq!(within(5, client.get_gc_safe_point()).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tso_stays_unique_and_ordered_across_leader_changes() {
    let h = Harness::start(2).await;
    let client = h.client().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::with_capacity(300);
            for _ in 0..300 {
                got.push(c.get_ts().await.unwrap());
            }
            got
        }));
    }
    // Flip leadership a few times while the callers run.
    let faults = h.cluster.faults();
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        faults.pd_transfer_leader((i + 1) % 2);
    }
    let mut all = HashSet::new();
    for t in tasks {
        let got = within(30, t).await.unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        for ts in got {
            assert!(all.insert(ts), "duplicate timestamp {ts:?}");
        }
    }
    assert_eq!(all.len(), 16 * 300);
}
