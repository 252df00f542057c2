//! KV snapshot reads over gRPC, driven with the raw generated client.

use tidal_model::codec::bytes::encode_key;
use tidal_proto::kvrpcpb::{self, Context};
use tidal_proto::metapb;
use tidal_proto::tikvpb::tikv_client::TikvClient;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::kv::GC_TOO_EARLY;
use tidal_sim::mvcc::Mutation;
use tidal_sim::region::Region;
use tonic::transport::Channel;

async fn client(sim: &SimCluster, store_id: u64) -> TikvClient<Channel> {
    let addr = sim
        .store_addrs()
        .get(store_id as usize - 1)
        .copied()
        .expect("store");
    TikvClient::connect(format!("http://{addr}"))
        .await
        .expect("connect store")
}

fn ctx(r: &Region) -> Option<Context> {
    Some(Context {
        region_id: r.id,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: r.epoch.conf_ver,
            version: r.epoch.version,
        }),
        peer: r.leader_peer().map(|p| p.to_metapb()),
        ..Default::default()
    })
}

fn get(r: &Region, key: &[u8], version: u64) -> kvrpcpb::GetRequest {
    kvrpcpb::GetRequest {
        context: ctx(r),
        key: key.to_vec(),
        version,
        need_commit_ts: true,
    }
}

fn scan(r: &Region, start: &[u8], end: &[u8], limit: u32, version: u64) -> kvrpcpb::ScanRequest {
    kvrpcpb::ScanRequest {
        context: ctx(r),
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        limit,
        version,
        ..Default::default()
    }
}

/// Writes k1=a@11, k1=b@21, k2=x@13, k3 deleted@23 (after x@15), and leaves a lock on k4@30.
fn seed(sim: &SimCluster) {
    let s = sim.store();
    s.one_pc(
        &[Mutation::put("k1", "a"), Mutation::put("k2", "x")],
        10,
        11,
    )
    .unwrap();
    s.one_pc(&[Mutation::put("k3", "x")], 14, 15).unwrap();
    s.prewrite(
        &[Mutation::put("k1", "b"), Mutation::delete("k3")],
        b"k1",
        20,
    )
    .unwrap();
    s.commit(&[b"k1".to_vec(), b"k3".to_vec()], 20, 21).unwrap();
    s.prewrite(&[Mutation::put("k4", "locked")], b"k4", 30)
        .unwrap();
}

#[tokio::test]
async fn reads_at_versions_and_locks() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    seed(&sim);
    let r = sim.regions().locate_raw(b"k1");
    let mut kv = client(&sim, r.leader_store).await;

    let at = |v| get(&r, b"k1", v);
    let resp = kv.kv_get(at(15)).await.unwrap().into_inner();
    assert_eq!(
        (resp.value.as_slice(), resp.commit_ts, resp.not_found),
        (&b"a"[..], 11, false)
    );
    let resp = kv.kv_get(at(21)).await.unwrap().into_inner();
    assert_eq!((resp.value.as_slice(), resp.commit_ts), (&b"b"[..], 21));
    let resp = kv.kv_get(at(5)).await.unwrap().into_inner();
    assert!(resp.not_found && resp.error.is_none() && resp.region_error.is_none());

    // A lock at or below the read ts is a KeyError.locked.
    let resp = kv.kv_get(get(&r, b"k4", 35)).await.unwrap().into_inner();
    let lock = resp.error.unwrap().locked.unwrap();
    assert_eq!(
        (
            lock.key.as_slice(),
            lock.primary_lock.as_slice(),
            lock.lock_version
        ),
        (&b"k4"[..], &b"k4"[..], 30)
    );
    assert_eq!(lock.lock_type, kvrpcpb::Op::Put as i32);
    // Below the lock: not found; with the lock resolved as committed: its value.
    assert!(
        kv.kv_get(get(&r, b"k4", 25))
            .await
            .unwrap()
            .into_inner()
            .not_found
    );
    let mut req = get(&r, b"k4", 35);
    req.context.as_mut().unwrap().committed_locks = vec![30];
    assert_eq!(kv.kv_get(req).await.unwrap().into_inner().value, b"locked");

    // Scan: k1, k2 at 22 (k3 deleted); the lock on k4 is a per-pair error.
    let resp = kv
        .kv_scan(scan(&r, b"k", b"", 10, 40))
        .await
        .unwrap()
        .into_inner();
    let pairs: Vec<(Vec<u8>, Vec<u8>, bool)> = resp
        .pairs
        .iter()
        .map(|p| (p.key.clone(), p.value.clone(), p.error.is_some()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (b"k1".to_vec(), b"b".to_vec(), false),
            (b"k2".to_vec(), b"x".to_vec(), false),
            (vec![], vec![], true)
        ]
    );
    let resp = kv
        .kv_scan(scan(&r, b"k", b"", 10, 16))
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<&[u8]> = resp.pairs.iter().map(|p| p.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"k1"[..], b"k2", b"k3"]);
    let resp = kv
        .kv_scan(scan(&r, b"k2", b"k4", 1, 16))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.pairs.len(), 1);
    assert_eq!(resp.pairs.first().unwrap().key, b"k2");
    let mut rev = scan(&r, b"k4", b"k1", 10, 16);
    rev.reverse = true;
    rev.key_only = true;
    let resp = kv.kv_scan(rev).await.unwrap().into_inner();
    let pairs: Vec<(&[u8], &[u8])> = resp
        .pairs
        .iter()
        .map(|p| (p.key.as_slice(), p.value.as_slice()))
        .collect();
    assert_eq!(
        pairs,
        vec![(&b"k3"[..], &b""[..]), (b"k2", b""), (b"k1", b"")]
    );

    // BatchGet: missing keys are absent, locks are per pair.
    let resp = kv
        .kv_batch_get(kvrpcpb::BatchGetRequest {
            context: ctx(&r),
            keys: vec![
                b"k1".to_vec(),
                b"k3".to_vec(),
                b"k4".to_vec(),
                b"nope".to_vec(),
            ],
            version: 40,
            need_commit_ts: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.pairs.len(), 2);
    assert_eq!(resp.pairs.first().unwrap().value, b"b");
    let locked = resp.pairs.get(1).unwrap();
    assert_eq!(locked.key, b"k4");
    assert_eq!(
        locked
            .error
            .as_ref()
            .unwrap()
            .locked
            .as_ref()
            .unwrap()
            .lock_version,
        30
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn reads_below_gc_safe_point_fail_clearly() {
    let sim = SimCluster::start(SimConfig::default()).await.unwrap();
    seed(&sim);
    assert_eq!(sim.faults().advance_gc_safe_point(18), 18);
    let r = sim.regions().locate_raw(b"k1");
    let mut kv = client(&sim, 1).await;
    let resp = kv.kv_get(get(&r, b"k1", 15)).await.unwrap().into_inner();
    let abort = resp.error.unwrap().abort;
    assert!(abort.starts_with(GC_TOO_EARLY), "{abort}");
    assert!(
        abort.contains("transaction starts at 15") && abort.contains("GC safe point is 18"),
        "{abort}"
    );
    let resp = kv
        .kv_scan(scan(&r, b"", b"", 10, 17))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.pairs.is_empty());
    assert!(resp.error.unwrap().abort.starts_with(GC_TOO_EARLY));
    let resp = kv
        .kv_batch_get(kvrpcpb::BatchGetRequest {
            context: ctx(&r),
            keys: vec![b"k1".to_vec()],
            version: 1,
            need_commit_ts: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.error.unwrap().abort.starts_with(GC_TOO_EARLY));
    // At the safe point the snapshot is intact.
    let resp = kv.kv_get(get(&r, b"k1", 18)).await.unwrap().into_inner();
    assert_eq!(resp.value, b"a");
    sim.shutdown().await;
}

#[tokio::test]
async fn region_errors() {
    let cfg = SimConfig {
        replicas: 2,
        ..Default::default()
    };
    let sim = SimCluster::start(cfg).await.unwrap();
    seed(&sim);
    let old = sim.regions().locate_raw(b"k1");
    let mut s1 = client(&sim, 1).await;
    let mut s2 = client(&sim, 2).await;
    let mut s3 = client(&sim, 3).await;

    // Store 2 holds a follower: not_leader pointing at store 1.
    let resp = s2.kv_get(get(&old, b"k1", 30)).await.unwrap().into_inner();
    let nl = resp.region_error.unwrap().not_leader.unwrap();
    assert_eq!((nl.region_id, nl.leader.unwrap().store_id), (old.id, 1));
    // Store 3 holds no peer: region_not_found.
    let resp = s3.kv_get(get(&old, b"k1", 30)).await.unwrap().into_inner();
    assert_eq!(
        resp.region_error
            .unwrap()
            .region_not_found
            .unwrap()
            .region_id,
        old.id
    );

    // After a split the old epoch is stale.
    let (left, right) = sim.faults().split_region(&encode_key(b"k2")).unwrap();
    let resp = s1.kv_get(get(&old, b"k3", 30)).await.unwrap().into_inner();
    let enm = resp.region_error.unwrap().epoch_not_match.unwrap();
    assert_eq!(
        enm.current_regions
            .first()
            .unwrap()
            .region_epoch
            .unwrap()
            .version,
        right.epoch.version
    );
    // With the fresh epoch: k3 is in the right half; k1 is not.
    let resp = s1
        .kv_get(get(&right, b"k1", 30))
        .await
        .unwrap()
        .into_inner();
    let kn = resp.region_error.unwrap().key_not_in_region.unwrap();
    assert_eq!((kn.key.as_slice(), kn.region_id), (&b"k1"[..], right.id));
    let resp = s1.kv_get(get(&left, b"k1", 30)).await.unwrap().into_inner();
    assert_eq!(resp.value, b"b");
    // A scan is clamped to its region.
    let resp = s1
        .kv_scan(scan(&left, b"", b"", 0x100, 30))
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<&[u8]> = resp.pairs.iter().map(|p| p.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"k1"[..]]);
    let resp = s1
        .kv_scan(scan(&left, b"k3", b"", 10, 30))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.unwrap().key_not_in_region.is_some());

    // Leader transfer: store 1 now answers not_leader, store 2 serves.
    sim.faults().transfer_leader(left.id, 2).unwrap();
    let resp = s1.kv_get(get(&left, b"k1", 30)).await.unwrap().into_inner();
    assert_eq!(
        resp.region_error
            .unwrap()
            .not_leader
            .unwrap()
            .leader
            .unwrap()
            .store_id,
        2
    );
    let resp = s2.kv_get(get(&left, b"k1", 30)).await.unwrap().into_inner();
    assert_eq!(resp.value, b"b");
    // Unknown region.
    let mut req = get(&left, b"k1", 30);
    req.context.as_mut().unwrap().region_id = 424242;
    let resp = s2.kv_get(req).await.unwrap().into_inner();
    assert!(resp.region_error.unwrap().region_not_found.is_some());
    sim.shutdown().await;
}
