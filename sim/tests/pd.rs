//! The PD service over gRPC, driven with the raw generated client.

use std::time::Duration;

use tidal_model::codec::bytes::encode_key;
use tidal_proto::pdpb::{self, pd_client::PdClient};
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::pd::PdConfig;
use tonic::Code;
use tonic::transport::Channel;

async fn start(cfg: SimConfig) -> (SimCluster, PdClient<Channel>) {
    let sim = SimCluster::start(cfg).await.expect("start sim");
    let url = sim.pd_endpoints().first().cloned().expect("one endpoint");
    let client = PdClient::connect(url).await.expect("connect PD");
    (sim, client)
}

fn header(sim: &SimCluster) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: sim.cluster_id(),
        ..Default::default()
    })
}

/// Sets service `id`'s GC safe point to `safe_point` for `ttl` seconds.
async fn update_service(
    pd: &mut PdClient<Channel>,
    header: &Option<pdpb::RequestHeader>,
    id: &str,
    ttl: i64,
    safe_point: u64,
) -> pdpb::UpdateServiceGcSafePointResponse {
    pd.update_service_gc_safe_point(pdpb::UpdateServiceGcSafePointRequest {
        header: header.clone(),
        service_id: id.as_bytes().to_vec(),
        ttl,
        safe_point,
    })
    .await
    .unwrap()
    .into_inner()
}

/// The minimum service safe point a response reports: (service id, safe point).
fn minimum(r: &pdpb::UpdateServiceGcSafePointResponse) -> (&str, u64) {
    let id = std::str::from_utf8(&r.service_id).expect("service id is text");
    (id, r.min_safe_point)
}

/// A region lookup by (encoded) key.
fn region_at(header: &Option<pdpb::RequestHeader>, key: Vec<u8>) -> pdpb::GetRegionRequest {
    pdpb::GetRegionRequest {
        header: header.clone(),
        region_key: key,
        need_buckets: false,
    }
}

/// A region lookup by id.
fn region_by_id(header: &Option<pdpb::RequestHeader>, id: u64) -> pdpb::GetRegionByIdRequest {
    pdpb::GetRegionByIdRequest {
        header: header.clone(),
        region_id: id,
        need_buckets: false,
    }
}

/// A scan of every region, at most `limit` of them (0: no limit).
fn scan_all(header: &Option<pdpb::RequestHeader>, limit: i32) -> pdpb::ScanRegionsRequest {
    pdpb::ScanRegionsRequest {
        header: header.clone(),
        start_key: vec![],
        limit,
        end_key: vec![],
    }
}

/// GetAllStores (tombstones included).
fn all_stores(header: &Option<pdpb::RequestHeader>) -> pdpb::GetAllStoresRequest {
    pdpb::GetAllStoresRequest {
        header: header.clone(),
        ..Default::default()
    }
}

fn ts_of(resp: &pdpb::TsoResponse) -> u64 {
    let t = resp.timestamp.expect("timestamp");
    ((t.physical as u64) << 18) | t.logical as u64
}

#[tokio::test]
async fn get_members_reports_cluster_id_and_leader() {
    let (sim, mut pd) = start(SimConfig::default()).await;
    let resp = pd
        .get_members(pdpb::GetMembersRequest { header: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.header.unwrap().cluster_id, sim.cluster_id());
    assert_eq!(resp.members.len(), 1);
    let url = format!("http://{}", sim.pd_addr());
    assert_eq!(resp.leader.unwrap().client_urls, vec![url]);
    sim.shutdown().await;
}

#[tokio::test]
async fn tso_stream_batches_and_checks_cluster_id() {
    let (sim, mut pd) = start(SimConfig::default()).await;
    let req = |count, cluster_id| pdpb::TsoRequest {
        header: Some(pdpb::RequestHeader {
            cluster_id,
            ..Default::default()
        }),
        count,
        dc_location: "global".into(),
    };
    let id = sim.cluster_id();
    let reqs = vec![req(10, id), req(10, id), req(1, id)];
    let mut stream = pd.tso(tokio_stream::iter(reqs)).await.unwrap().into_inner();
    let a = stream.message().await.unwrap().unwrap();
    let b = stream.message().await.unwrap().unwrap();
    let c = stream.message().await.unwrap().unwrap();
    assert_eq!((a.count, b.count, c.count), (10, 10, 1));
    assert_eq!(a.header.as_ref().unwrap().cluster_id, id);
    let (ta, tb, tc) = (ts_of(&a), ts_of(&b), ts_of(&c));
    // The largest of each batch: the first of a batch is ts - 9 and must not reuse earlier ones.
    assert!(a.timestamp.unwrap().logical >= 9);
    assert!(tb - 9 > ta, "{ta} {tb}");
    assert!(tc > tb);
    // The stream advanced the cluster's oracle (the CDC resolved-ts ticker may have taken a
    // timestamp since, hence at least).
    assert!(sim.tso().current() >= tc);
    assert!(stream.message().await.unwrap().is_none());

    let mut bad = pd
        .tso(tokio_stream::iter(vec![req(1, id + 1)]))
        .await
        .unwrap()
        .into_inner();
    let err = bad.message().await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("mismatch cluster id"),
        "{}",
        err.message()
    );

    // Unary calls check the cluster id too (GetMembers does not).
    let err = pd
        .get_all_stores(pdpb::GetAllStoresRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    sim.shutdown().await;
}

#[tokio::test]
async fn regions_reflect_splits_and_merges() {
    let (sim, mut pd) = start(SimConfig::default()).await;
    let h = header(&sim);
    let initial = pd
        .get_region(region_at(&h, encode_key(b"t1")))
        .await
        .unwrap()
        .into_inner();
    let r0 = initial.region.clone().unwrap();
    assert!(r0.start_key.is_empty() && r0.end_key.is_empty());
    assert_eq!(initial.leader.unwrap().store_id, 1);
    assert_eq!(r0.peers.len(), 3);

    let split_at = encode_key(b"m");
    let (left, right) = sim.faults().split_region(&split_at).unwrap();
    assert_eq!(right.id, r0.id);

    let scan = pd.scan_regions(scan_all(&h, 0)).await.unwrap().into_inner();
    assert_eq!(scan.region_metas.len(), 2);
    assert_eq!(scan.regions.len(), 2);
    assert_eq!(scan.leaders.len(), 2);
    let ids: Vec<u64> = scan.region_metas.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![left.id, right.id]);
    let first = scan.region_metas.first().unwrap();
    assert_eq!(first.end_key, split_at);
    assert_eq!(
        first.region_epoch.unwrap().version,
        r0.region_epoch.unwrap().version + 1
    );
    assert_eq!(
        scan.regions
            .get(1)
            .unwrap()
            .region
            .as_ref()
            .unwrap()
            .start_key,
        split_at
    );
    let limited = pd.scan_regions(scan_all(&h, 1)).await.unwrap().into_inner();
    assert_eq!(limited.region_metas.len(), 1);

    let by_key = pd
        .get_region(region_at(&h, encode_key(b"z")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_key.region.unwrap().id, right.id);
    let prev = pd
        .get_prev_region(region_at(&h, encode_key(b"z")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(prev.region.unwrap().id, left.id);

    let merged = sim.faults().merge_regions(left.id, right.id).unwrap();
    let by_id = pd
        .get_region_by_id(region_by_id(&h, right.id))
        .await
        .unwrap()
        .into_inner();
    let got = by_id.region.unwrap();
    assert!(got.start_key.is_empty() && got.end_key.is_empty());
    assert_eq!(got.region_epoch.unwrap().version, merged.epoch.version);
    assert!(merged.epoch.version > right.epoch.version);
    let gone = pd
        .get_region_by_id(region_by_id(&h, left.id))
        .await
        .unwrap()
        .into_inner();
    assert!(gone.region.is_none());
    assert_eq!(
        gone.header.unwrap().error.unwrap().r#type,
        pdpb::ErrorType::RegionNotFound as i32
    );

    // A leader transfer shows up as the reported leader.
    sim.faults().transfer_leader(right.id, 3).unwrap();
    let moved = pd
        .get_region(region_at(&h, vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.leader.unwrap().store_id, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn stores_have_addresses() {
    let (sim, mut pd) = start(SimConfig::default()).await;
    let h = header(&sim);
    let all = pd
        .get_all_stores(pdpb::GetAllStoresRequest {
            header: h.clone(),
            exclude_tombstone_stores: true,
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(u64, String)> = all
        .stores
        .iter()
        .map(|s| (s.id, s.address.clone()))
        .collect();
    let want: Vec<(u64, String)> = sim
        .store_addrs()
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.to_string()))
        .collect();
    assert_eq!(got, want);
    let one = pd
        .get_store(pdpb::GetStoreRequest {
            header: h.clone(),
            store_id: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        one.store.unwrap().address,
        sim.store_addrs().get(1).unwrap().to_string()
    );
    let none = pd
        .get_store(pdpb::GetStoreRequest {
            header: h,
            store_id: 99,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.store.is_none());
    assert!(none.header.unwrap().error.is_some());
    sim.shutdown().await;
}

#[tokio::test]
async fn gc_safe_points_follow_pd_rules() {
    let (sim, mut pd) = start(SimConfig::default()).await;
    let h = header(&sim);
    // First call: the implicit gc_worker entry (0) is the minimum.
    let r = update_service(&mut pd, &h, "ticdc", 60, 100).await;
    assert_eq!(minimum(&r), ("gc_worker", 0));
    // GC worker moves up to 500: ticdc (100) is the minimum now, with its remaining TTL.
    let r = update_service(&mut pd, &h, "gc_worker", i64::MAX, 500).await;
    assert_eq!(minimum(&r), ("ticdc", 100));
    assert!(r.ttl > 55 && r.ttl <= 60, "ttl {}", r.ttl);
    // A second service cannot go below the minimum: not stored.
    let r = update_service(&mut pd, &h, "br", 60, 50).await;
    assert_eq!(minimum(&r), ("ticdc", 100));
    // At or above the minimum it is stored; the response still describes the minimum.
    let r = update_service(&mut pd, &h, "br", 10, 150).await;
    assert_eq!(minimum(&r), ("ticdc", 100));
    // ticdc moves to 300: br (150) becomes the minimum.
    let r = update_service(&mut pd, &h, "ticdc", 60, 300).await;
    assert_eq!(minimum(&r), ("br", 150));
    // br expires after its 10 s TTL: ticdc is the minimum again.
    sim.pd().advance_clock(12);
    let r = update_service(&mut pd, &h, "other", 600, 400).await;
    assert_eq!(minimum(&r), ("ticdc", 300));
    // TTL <= 0 removes ticdc: the minimum is the GC worker's 500... unless "other" (400) is lower.
    let r = update_service(&mut pd, &h, "ticdc", 0, 0).await;
    assert_eq!(minimum(&r), ("other", 400));

    // A GC round is held back by the minimum service safe point.
    assert_eq!(sim.faults().run_gc(1000), 400);
    let g = pd
        .get_gc_safe_point(pdpb::GetGcSafePointRequest { header: h.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.safe_point, 400);
    assert_eq!(sim.store().gc_safe_point(), 400);
    // UpdateGCSafePoint only moves forward.
    let u = pd
        .update_gc_safe_point(pdpb::UpdateGcSafePointRequest {
            header: h.clone(),
            safe_point: 300,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.new_safe_point, 400);
    let u = pd
        .update_gc_safe_point(pdpb::UpdateGcSafePointRequest {
            header: h.clone(),
            safe_point: 700,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.new_safe_point, 700);
    assert_eq!(sim.store().gc_safe_point(), 700);
    sim.shutdown().await;
}

#[tokio::test]
async fn outage_then_recovery() {
    let (sim, mut pd) = start(SimConfig::default()).await;
    let h = header(&sim);
    sim.faults().pd_unavailable_for(Duration::from_millis(300));
    let err = pd
        .get_gc_safe_point(pdpb::GetGcSafePointRequest { header: h.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let err = pd
        .get_members(pdpb::GetMembersRequest { header: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ok = pd
        .get_gc_safe_point(pdpb::GetGcSafePointRequest { header: h })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.safe_point, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn second_endpoint_is_a_follower_until_leadership_moves() {
    let cfg = SimConfig {
        pd: PdConfig { endpoints: 2 },
        ..Default::default()
    };
    let (sim, mut pd0) = start(cfg).await;
    let urls = sim.pd_endpoints();
    assert_eq!(urls.len(), 2);
    let mut pd1 = PdClient::connect(urls.get(1).unwrap().clone())
        .await
        .unwrap();
    let h = header(&sim);
    let members = pd1
        .get_members(pdpb::GetMembersRequest { header: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.members.len(), 2);
    assert_eq!(
        members.leader.unwrap().client_urls,
        vec![urls.first().unwrap().clone()]
    );
    let err = pd1.get_all_stores(all_stores(&h)).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "not leader")
    );
    assert!(pd0.get_all_stores(all_stores(&h)).await.is_ok());

    sim.faults().pd_transfer_leader(1);
    let members = pd0
        .get_members(pdpb::GetMembersRequest { header: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        members.leader.unwrap().client_urls,
        vec![urls.get(1).unwrap().clone()]
    );
    let err = pd0.get_all_stores(all_stores(&h)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(pd1.get_all_stores(all_stores(&h)).await.is_ok());
    sim.shutdown().await;
}
