//! Integration tests of the sim's `cdcpb.ChangeData` service, driven over real gRPC with the raw
//! generated client, with data written straight into the MVCC store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidal_model::codec::bytes::encode_key;
use tidal_proto::cdcpb::change_data_client::ChangeDataClient;
use tidal_proto::cdcpb::change_data_request::{Deregister, Register, Request};
use tidal_proto::cdcpb::event::{self, LogType, row::OpType};
use tidal_proto::cdcpb::{ChangeDataEvent, ChangeDataRequest, Event, Header, ResolvedTs};
use tidal_proto::metapb;
use tidal_sim::cdc::{CdcConfig, CdcHub};
use tidal_sim::mvcc::{Mutation, MvccStore, PrewriteOptions};
use tidal_sim::region::{Region, RegionConfig, RegionManager};
use tidal_sim::tso::Tso;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;

const CLUSTER_ID: u64 = 7;
const WAIT: Duration = Duration::from_secs(10);

struct Sim {
    store: MvccStore,
    regions: RegionManager,
    tso: Tso,
    hub: Arc<CdcHub>,
    addrs: HashMap<u64, String>,
}

async fn start(stores: usize, replicas: usize, split_raw: &[&[u8]], cfg: CdcConfig) -> Sim {
    let store = MvccStore::new();
    let regions = RegionManager::new(
        store.clone(),
        &RegionConfig {
            stores,
            replicas,
            split_keys: split_raw.iter().map(|k| encode_key(k)).collect(),
        },
    );
    let tso = Tso::new();
    let hub = CdcHub::new(store.clone(), regions.clone(), tso.clone(), cfg);
    let mut addrs = HashMap::new();
    for id in 1..=stores as u64 {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        addrs.insert(id, format!("http://{}", incoming.local_addr().unwrap()));
        let svc = hub.service_for_store(id).max_decoding_message_size(1 << 28);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming),
        );
    }
    Sim {
        store,
        regions,
        tso,
        hub,
        addrs,
    }
}

fn cfg() -> CdcConfig {
    CdcConfig {
        cluster_id: CLUSTER_ID,
        min_ts_interval: Duration::from_millis(50),
        ..CdcConfig::default()
    }
}

impl Sim {
    fn put(&self, key: &[u8], value: &[u8]) -> (u64, u64) {
        let start = self.lock(key, value);
        (start, self.commit(key, start))
    }

    fn lock(&self, key: &[u8], value: &[u8]) -> u64 {
        let start = self.tso.next();
        self.store
            .prewrite(&[Mutation::put(key, value)], key, start)
            .unwrap();
        start
    }

    fn commit(&self, key: &[u8], start: u64) -> u64 {
        let commit = self.tso.next();
        self.store.commit(&[key.to_vec()], start, commit).unwrap();
        commit
    }

    fn region_of(&self, raw: &[u8]) -> Region {
        self.regions.locate(&encode_key(raw))
    }

    async fn feed(&self, store: u64, features: Option<&str>) -> Feed {
        Feed::open(&self.addrs[&store], features, true)
            .await
            .unwrap()
    }
}

fn register(region: &Region, request_id: u64, checkpoint_ts: u64) -> ChangeDataRequest {
    ChangeDataRequest {
        header: Some(Header {
            cluster_id: CLUSTER_ID,
            ticdc_version: "8.5.0".into(),
        }),
        region_id: region.id,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: region.epoch.conf_ver,
            version: region.epoch.version,
        }),
        checkpoint_ts,
        start_key: region.start.clone(),
        end_key: region.end.clone(),
        request_id,
        extra_op: 1,
        request: Some(Request::Register(Register {})),
        ..Default::default()
    }
}

fn deregister(request_id: u64, region_id: u64) -> ChangeDataRequest {
    ChangeDataRequest {
        region_id,
        request_id,
        request: Some(Request::Deregister(Deregister {})),
        ..Default::default()
    }
}

struct Feed {
    tx: mpsc::Sender<ChangeDataRequest>,
    rx: tonic::Streaming<ChangeDataEvent>,
}

impl Feed {
    async fn open(addr: &str, features: Option<&str>, v2: bool) -> Result<Feed, tonic::Status> {
        let mut client = ChangeDataClient::connect(addr.to_owned())
            .await
            .unwrap()
            .max_decoding_message_size(1 << 28);
        let (tx, rx) = mpsc::channel(64);
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(f) = features {
            req.metadata_mut().insert("features", f.parse().unwrap());
        }
        let resp = if v2 {
            client.event_feed_v2(req).await?
        } else {
            client.event_feed(req).await?
        };
        Ok(Feed {
            tx,
            rx: resp.into_inner(),
        })
    }

    async fn send(&self, req: ChangeDataRequest) {
        self.tx.send(req).await.unwrap();
    }

    /// The next message; panics after `WAIT`.
    async fn next(&mut self) -> ChangeDataEvent {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("timed out")
            .unwrap()
            .expect("stream ended")
    }

    /// The next message within `d`, if any.
    async fn next_within(&mut self, d: Duration) -> Option<ChangeDataEvent> {
        tokio::time::timeout(d, self.rx.message())
            .await
            .ok()
            .and_then(|r| r.ok().flatten())
    }

    /// Reads events (skipping resolved ts) until one matches; returns everything read.
    async fn events_until(&mut self, mut done: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            let msg = self.next().await;
            for ev in msg.events {
                let stop = done(&ev);
                out.push(ev);
                if stop {
                    return out;
                }
            }
        }
    }

    /// Reads until `pred` holds for a resolved ts; returns the messages read.
    async fn until_resolved(
        &mut self,
        mut pred: impl FnMut(&ResolvedTs) -> bool,
    ) -> Vec<ChangeDataEvent> {
        let mut out = Vec::new();
        loop {
            let msg = self.next().await;
            let stop = msg.resolved_ts.as_ref().is_some_and(&mut pred);
            out.push(msg);
            if stop {
                return out;
            }
        }
    }
}

/// Reads and discards messages for `d`.
async fn drain_for(feed: &mut Feed, d: Duration) -> Vec<ChangeDataEvent> {
    let deadline = tokio::time::Instant::now() + d;
    let mut out = Vec::new();
    while let Some(m) = feed
        .next_within(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        out.push(m);
    }
    out
}

fn rows(ev: &Event) -> Vec<event::Row> {
    match &ev.event {
        Some(event::Event::Entries(e)) => e.entries.clone(),
        _ => Vec::new(),
    }
}

fn err(ev: &Event) -> Option<&tidal_proto::cdcpb::Error> {
    match &ev.event {
        Some(event::Event::Error(e)) => Some(e),
        _ => None,
    }
}

fn is_initialized(ev: &Event) -> bool {
    rows(ev)
        .iter()
        .any(|r| r.r#type == LogType::Initialized as i32)
}

/// Reads until the error event for (request_id, region_id) and returns it.
async fn error_for(feed: &mut Feed, request_id: u64, region_id: u64) -> tidal_proto::cdcpb::Error {
    let evs = feed
        .events_until(|e| {
            e.request_id == request_id && e.region_id == region_id && err(e).is_some()
        })
        .await;
    err(evs.last().unwrap()).unwrap().clone()
}

/// (type, key, commit_ts, value, old_value).
type RowShape<'a> = (i32, &'a [u8], u64, &'a [u8], &'a [u8]);

fn ty(t: LogType) -> i32 {
    t as i32
}

#[tokio::test]
async fn scan_rows_then_initialized() {
    let sim = start(1, 0, &[], cfg()).await;
    let (_, c_a) = sim.put(b"a", b"va");
    let (_, c_b1) = sim.put(b"b", b"vb1");
    let (_, c_b2) = sim.put(b"b", b"vb2");
    let s_c = sim.lock(b"c", b"vc");
    let region = sim.region_of(b"a");
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    feed.send(register(&region, 1, 0)).await;
    let mut seen = Vec::new();
    loop {
        let msg = feed.next().await;
        assert!(msg.resolved_ts.is_none(), "resolved ts before INITIALIZED");
        let evs = msg.events;
        let done = evs.iter().any(is_initialized);
        seen.extend(evs.iter().flat_map(rows));
        if done {
            break;
        }
    }
    let got: Vec<RowShape<'_>> = seen
        .iter()
        .map(|r| {
            (
                r.r#type,
                r.key.as_slice(),
                r.commit_ts,
                r.value.as_slice(),
                r.old_value.as_slice(),
            )
        })
        .collect();
    let want: Vec<RowShape<'_>> = vec![
        (ty(LogType::Committed), b"a", c_a, b"va", b""),
        (ty(LogType::Committed), b"b", c_b2, b"vb2", b"vb1"),
        (ty(LogType::Committed), b"b", c_b1, b"vb1", b""),
        (ty(LogType::Prewrite), b"c", 0, b"vc", b""),
        (ty(LogType::Initialized), b"", 0, b"", b""),
    ];
    assert_eq!(got, want);
    assert_eq!(seen[3].start_ts, s_c);
    assert_eq!(
        seen[4],
        event::Row {
            r#type: ty(LogType::Initialized),
            ..Default::default()
        }
    );

    // checkpoint_ts filters commits at or below it (the scan covers (checkpoint, ∞)).
    feed.send(register(&region, 2, c_b1)).await;
    let evs = feed
        .events_until(|e| e.request_id == 2 && is_initialized(e))
        .await;
    let keys: Vec<(Vec<u8>, u64)> = evs
        .iter()
        .filter(|e| e.request_id == 2)
        .flat_map(rows)
        .map(|r| (r.key, r.commit_ts))
        .collect();
    assert_eq!(
        keys,
        vec![(b"b".to_vec(), c_b2), (b"c".to_vec(), 0), (Vec::new(), 0)]
    );
}

#[tokio::test]
async fn live_prewrite_commit_rollback_and_one_pc() {
    let sim = start(1, 0, &[], cfg()).await;
    sim.put(b"k", b"v1");
    let region = sim.region_of(b"k");
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    feed.send(register(&region, 1, sim.tso.next())).await;
    feed.events_until(is_initialized).await;

    let s = sim.lock(b"k", b"v2");
    let c = sim.commit(b"k", s);
    let s2 = sim.lock(b"r", b"x");
    sim.store.rollback(&[b"r".to_vec()], s2).unwrap();
    let (s3, c3) = (sim.tso.next(), sim.tso.next());
    sim.store
        .one_pc(
            &[Mutation::put(b"k", b"v3"), Mutation::delete(b"k0")],
            s3,
            c3,
        )
        .unwrap();
    let evs = feed
        .events_until(|e| rows(e).iter().any(|r| r.r#type == ty(LogType::Committed)))
        .await;
    let live: Vec<event::Row> = evs.iter().flat_map(rows).collect();
    let expect = vec![
        event::Row {
            start_ts: s,
            r#type: ty(LogType::Prewrite),
            op_type: OpType::Put as i32,
            key: b"k".to_vec(),
            value: b"v2".to_vec(),
            old_value: b"v1".to_vec(),
            ..Default::default()
        },
        event::Row {
            start_ts: s,
            commit_ts: c,
            r#type: ty(LogType::Commit),
            op_type: OpType::Put as i32,
            key: b"k".to_vec(),
            ..Default::default()
        },
        event::Row {
            start_ts: s2,
            r#type: ty(LogType::Prewrite),
            op_type: OpType::Put as i32,
            key: b"r".to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        },
        event::Row {
            start_ts: s2,
            r#type: ty(LogType::Rollback),
            op_type: OpType::Unknown as i32,
            key: b"r".to_vec(),
            ..Default::default()
        },
        event::Row {
            start_ts: s3,
            commit_ts: c3,
            r#type: ty(LogType::Committed),
            op_type: OpType::Put as i32,
            key: b"k".to_vec(),
            value: b"v3".to_vec(),
            old_value: b"v2".to_vec(),
            ..Default::default()
        },
        event::Row {
            start_ts: s3,
            commit_ts: c3,
            r#type: ty(LogType::Committed),
            op_type: OpType::Delete as i32,
            key: b"k0".to_vec(),
            ..Default::default()
        },
    ];
    assert_eq!(live, expect);
    assert!(
        evs.iter()
            .all(|e| e.region_id == region.id && e.request_id == 1)
    );
}

#[tokio::test]
async fn txn_source_filters() {
    let sim = start(1, 0, &[], cfg()).await;
    let region = sim.region_of(b"a");
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    let mut req = register(&region, 1, 0);
    req.filter_loop = true;
    feed.send(req).await;
    feed.send(register(&region, 2, 0)).await;
    let mut inits = 0;
    feed.events_until(|e| {
        inits += usize::from(is_initialized(e));
        inits == 2
    })
    .await;
    for (key, source) in [
        (&b"cdc"[..], 1u64),
        (b"reorg", 1 << 8),
        (b"import", 1 << 16),
        (b"plain", 0),
    ] {
        let start = sim.tso.next();
        let opts = PrewriteOptions {
            txn_source: source,
            ..PrewriteOptions::default()
        };
        sim.store
            .prewrite_with(&[Mutation::put(key, b"v")], key, start, &opts)
            .unwrap();
    }
    // Marker: a plain write after them, seen by both requests.
    sim.lock(b"zz", b"m");
    let mut done = 0;
    let evs = feed
        .events_until(|e| {
            done += usize::from(rows(e).iter().any(|r| r.key == b"zz"));
            done == 2
        })
        .await;
    let by_req = |id: u64| -> Vec<Vec<u8>> {
        evs.iter()
            .filter(|e| e.request_id == id)
            .flat_map(rows)
            .map(|r| r.key)
            .collect()
    };
    assert_eq!(by_req(1), vec![b"plain".to_vec(), b"zz".to_vec()]);
    assert_eq!(
        by_req(2),
        vec![b"cdc".to_vec(), b"plain".to_vec(), b"zz".to_vec()]
    );
}

#[tokio::test]
async fn resolved_ts_waits_for_initialized_and_locks() {
    let sim = start(1, 0, &[], cfg()).await;
    let s = sim.lock(b"k", b"v");
    let region = sim.region_of(b"k");
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    feed.send(register(&region, 5, 0)).await;
    let msgs = feed.until_resolved(|_| true).await;
    // INITIALIZED came before the first resolved ts.
    assert!(
        msgs.iter()
            .flat_map(|m| m.events.iter())
            .any(is_initialized)
    );
    let first = msgs.last().unwrap().resolved_ts.clone().unwrap();
    assert_eq!(
        (first.regions.as_slice(), first.request_id),
        (&[region.id][..], 5)
    );
    assert!(
        first.ts <= s,
        "resolved ts {} passed the live lock {}",
        first.ts,
        s
    );
    // Stuck at the lock across more ticks.
    for _ in 0..3 {
        let m = feed.until_resolved(|_| true).await;
        assert!(m.last().unwrap().resolved_ts.as_ref().unwrap().ts <= s);
    }
    let c = sim.commit(b"k", s);
    let mut commit_seen = false;
    let msgs = feed.until_resolved(|r| r.ts > c).await;
    for m in &msgs {
        if m.events
            .iter()
            .flat_map(rows)
            .any(|r| r.r#type == ty(LogType::Commit) && r.commit_ts == c)
        {
            commit_seen = true;
        }
        if let Some(r) = &m.resolved_ts {
            assert!(
                r.ts < c || commit_seen,
                "resolved ts {} ≥ commit {} sent before the commit",
                r.ts,
                c
            );
            assert!(
                m.events.is_empty(),
                "resolved ts shares a message with events"
            );
        }
    }
    assert!(commit_seen);
}

#[tokio::test]
async fn batched_resolved_ts_grouping() {
    let sim = start(1, 0, &[b"m"], cfg()).await;
    let (left, right) = (sim.region_of(b"a"), sim.region_of(b"x"));
    assert_ne!(left.id, right.id);

    // Multiplexing: one group per request id.
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    feed.send(register(&left, 1, 0)).await;
    feed.send(register(&right, 2, 0)).await;
    let mut seen = HashMap::new();
    feed.until_resolved(|r| {
        seen.insert(r.request_id, r.regions.clone());
        seen.len() == 2
    })
    .await;
    assert_eq!(seen[&1], vec![left.id]);
    assert_eq!(seen[&2], vec![right.id]);

    // No multiplexing: request_id 0 and regions of both requests in one batch (equal ts).
    let mut feed = sim.feed(1, None).await;
    feed.send(register(&left, 1, 0)).await;
    feed.send(register(&right, 2, 0)).await;
    let msgs = feed.until_resolved(|r| r.regions.len() == 2).await;
    for m in msgs {
        if let Some(r) = m.resolved_ts {
            assert_eq!(r.request_id, 0);
        }
    }
}

#[tokio::test]
async fn legacy_resolved_ts_for_old_clients() {
    let sim = start(1, 0, &[], cfg()).await;
    let region = sim.region_of(b"a");
    let mut feed = Feed::open(&sim.addrs[&1], None, false).await.unwrap();
    let mut req = register(&region, 3, 0);
    req.header = Some(Header {
        cluster_id: 999,
        ticdc_version: "4.0.7".into(),
    });
    feed.send(req).await;
    // The wrong cluster id is not checked below 5.3.0, and resolved ts comes per region in Event.
    let evs = feed
        .events_until(|e| matches!(e.event, Some(event::Event::ResolvedTs(_))))
        .await;
    assert!(evs.iter().any(is_initialized));
    let last = evs.last().unwrap();
    assert_eq!((last.region_id, last.request_id), (region.id, 3));
    for _ in 0..3 {
        let m = feed.next().await;
        assert!(
            m.resolved_ts.is_none(),
            "batched resolved ts sent to a 4.0.7 client"
        );
    }
}

#[tokio::test]
async fn register_errors_in_order() {
    let sim = start(3, 0, &[], cfg()).await;
    let region = sim.region_of(b"a");
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;

    // 1. cluster id first (even with a bad kv_api too).
    let mut r = register(&region, 1, 0);
    r.header.as_mut().unwrap().cluster_id = 1234;
    r.kv_api = 2;
    feed.send(r).await;
    let e = error_for(&mut feed, 1, region.id).await;
    assert_eq!(
        e.cluster_id_mismatch,
        Some(tidal_proto::cdcpb::ClusterIdMismatch {
            current: CLUSTER_ID,
            request: 1234
        })
    );

    // 2. kv_api: TxnKV and RawKV.
    for (id, api) in [(2u64, 2), (3, 1)] {
        let mut r = register(&region, id, 0);
        r.kv_api = api;
        feed.send(r).await;
        let e = error_for(&mut feed, id, region.id).await;
        assert_eq!(
            e.compatibility.map(|c| c.required_version),
            Some("6.2.0".to_owned())
        );
    }

    // 3. busy.
    sim.hub.set_busy(1, true);
    feed.send(register(&region, 4, 0)).await;
    let e = error_for(&mut feed, 4, region.id).await;
    assert_eq!(
        e.server_is_busy.map(|b| b.reason),
        Some("too many pending incremental scans".to_owned())
    );
    sim.hub.set_busy(1, false);

    // 4. unknown region.
    let mut r = register(&region, 5, 0);
    r.region_id = 999_999;
    feed.send(r).await;
    let e = error_for(&mut feed, 5, 999_999).await;
    assert_eq!(e.region_not_found.map(|x| x.region_id), Some(999_999));

    // 5. duplicate.
    feed.send(register(&region, 6, 0)).await;
    feed.send(register(&region, 6, 0)).await;
    let e = error_for(&mut feed, 6, region.id).await;
    assert_eq!(e.duplicate_request.map(|d| d.region_id), Some(region.id));
    assert_eq!(sim.hub.registered_count(), 1);

    // Stale epoch.
    let mut r = register(&region, 7, 0);
    r.region_epoch.as_mut().unwrap().version -= 1;
    feed.send(r).await;
    let e = error_for(&mut feed, 7, region.id).await;
    let current = e.epoch_not_match.unwrap().current_regions;
    assert_eq!(current.len(), 1);
    assert_eq!(
        (current[0].id, current[0].region_epoch.unwrap().version),
        (region.id, region.epoch.version)
    );

    // Not leader: region leads on store 1, asked on store 2.
    let mut feed2 = sim.feed(2, Some("stream-multiplexing")).await;
    feed2.send(register(&region, 8, 0)).await;
    let e = error_for(&mut feed2, 8, region.id).await;
    let nl = e.not_leader.unwrap();
    assert_eq!(nl.region_id, region.id);
    assert_eq!(nl.leader.map(|p| p.store_id), Some(1));
}

#[tokio::test]
async fn pending_scan_limit_and_region_not_found_on_wrong_store() {
    let sim = start(
        2,
        1,
        &[b"m"],
        CdcConfig {
            scan_concurrency_limit: 0,
            ..cfg()
        },
    )
    .await;
    let region = sim.region_of(b"a");
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    feed.send(register(&region, 1, 0)).await;
    assert!(
        error_for(&mut feed, 1, region.id)
            .await
            .server_is_busy
            .is_some()
    );

    let sim = start(2, 1, &[], cfg()).await;
    let region = sim.region_of(b"a");
    assert!(region.peers.iter().all(|p| p.store_id == 1));
    let mut feed = sim.feed(2, Some("stream-multiplexing")).await;
    feed.send(register(&region, 1, 0)).await;
    let e = error_for(&mut feed, 1, region.id).await;
    assert_eq!(e.region_not_found.map(|x| x.region_id), Some(region.id));
}

#[tokio::test]
async fn split_merge_and_leader_transfer_end_subscriptions() {
    let sim = start(2, 0, &[], cfg()).await;
    let region = sim.region_of(b"a");
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    feed.send(register(&region, 1, 0)).await;
    feed.events_until(is_initialized).await;

    // Split: epoch_not_match with both halves; nothing follows for the old subscription.
    let (l, r) = sim.regions.split(&encode_key(b"m")).unwrap();
    sim.put(b"b", b"after-split");
    let e = error_for(&mut feed, 1, region.id).await;
    let halves: Vec<u64> = e
        .epoch_not_match
        .unwrap()
        .current_regions
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(halves, vec![l.id, r.id]);
    assert_eq!(sim.hub.registered_count(), 0);

    // Re-subscribe both halves, then merge: both get epoch_not_match with no regions.
    feed.send(register(&l, 2, 0)).await;
    feed.send(register(&r, 3, 0)).await;
    let mut inits = 0;
    feed.events_until(|e| {
        inits += usize::from(is_initialized(e));
        inits == 2
    })
    .await;
    sim.regions.merge(l.id, r.id).unwrap();
    let mut errs = HashMap::new();
    feed.events_until(|e| {
        if let Some(x) = err(e) {
            errs.insert(e.request_id, x.clone());
        }
        errs.len() == 2
    })
    .await;
    for id in [2, 3] {
        assert_eq!(
            errs[&id]
                .epoch_not_match
                .as_ref()
                .map(|x| x.current_regions.len()),
            Some(0)
        );
    }

    // Leader transfer: not_leader naming the new leader.
    let merged = sim.region_of(b"a");
    feed.send(register(&merged, 4, 0)).await;
    feed.events_until(is_initialized).await;
    sim.regions.transfer_leader(merged.id, 2).unwrap();
    let e = error_for(&mut feed, 4, merged.id).await;
    assert_eq!(
        e.not_leader.and_then(|n| n.leader).map(|p| p.store_id),
        Some(2)
    );
    sim.put(b"c", b"after-transfer");
    // Nothing more for request 4 (only resolved ts of nobody, i.e. silence).
    for m in drain_for(&mut feed, Duration::from_millis(300)).await {
        assert!(
            m.events.iter().all(|e| e.request_id != 4),
            "event after not_leader: {m:?}"
        );
        assert!(m.resolved_ts.is_none());
    }
}

#[tokio::test]
async fn unknown_feature_is_unimplemented() {
    let sim = start(1, 0, &[], cfg()).await;
    let err = Feed::open(&sim.addrs[&1], Some("stream-multiplexing, teleport"), true)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert_eq!(err.message(), "teleport");
    // EventFeed (v1) ignores headers.
    assert!(
        Feed::open(&sim.addrs[&1], Some("teleport"), false)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn deregister_region_and_request() {
    let sim = start(1, 0, &[b"m"], cfg()).await;
    let (left, right) = (sim.region_of(b"a"), sim.region_of(b"x"));
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    feed.send(register(&left, 1, 0)).await;
    feed.send(register(&right, 1, 0)).await;
    feed.send(register(&left, 2, 0)).await;
    let mut inits = 0;
    feed.events_until(|e| {
        inits += usize::from(is_initialized(e));
        inits == 3
    })
    .await;
    assert_eq!(sim.hub.registered_count(), 3);

    feed.send(deregister(2, left.id)).await;
    let e = error_for(&mut feed, 2, left.id).await;
    assert_eq!(e.region_not_found.map(|x| x.region_id), Some(left.id));
    assert_eq!(sim.hub.registered_count(), 2);

    feed.send(deregister(1, 0)).await;
    let mut gone = Vec::new();
    feed.events_until(|e| {
        if err(e).and_then(|x| x.region_not_found.as_ref()).is_some() {
            gone.push(e.region_id);
        }
        gone.len() == 2
    })
    .await;
    gone.sort_unstable();
    let mut want = vec![left.id, right.id];
    want.sort_unstable();
    assert_eq!(gone, want);
    assert_eq!(sim.hub.registered_count(), 0);
    sim.put(b"a", b"nobody listens");
    for m in drain_for(&mut feed, Duration::from_millis(300)).await {
        assert!(
            m.events.is_empty() && m.resolved_ts.is_none(),
            "unexpected {m:?}"
        );
    }
}

#[tokio::test]
async fn reset_store_streams_aborts_with_an_error() {
    let sim = start(1, 0, &[], cfg()).await;
    let region = sim.region_of(b"a");
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    feed.send(register(&region, 1, 0)).await;
    feed.events_until(is_initialized).await;
    sim.hub.reset_store_streams(1);
    let status = loop {
        match tokio::time::timeout(WAIT, feed.rx.message())
            .await
            .expect("timed out")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without an error"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(sim.hub.registered_count(), 0);
    assert_eq!(sim.hub.stream_count(), 0);
}

#[tokio::test]
async fn stalled_region_resolved_ts_is_frozen() {
    let sim = start(1, 0, &[b"m"], cfg()).await;
    let (left, right) = (sim.region_of(b"a"), sim.region_of(b"x"));
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    feed.send(register(&left, 1, 0)).await;
    feed.send(register(&right, 2, 0)).await;
    let mut seen = HashMap::new();
    feed.until_resolved(|r| {
        seen.insert(r.request_id, r.ts);
        seen.len() == 2
    })
    .await;
    sim.hub.stall_region(left.id, true);
    // Let in-flight messages drain, then watch.
    drain_for(&mut feed, Duration::from_millis(150)).await;
    let frozen_from = sim.tso.next();
    let mut right_max = 0;
    for m in drain_for(&mut feed, Duration::from_millis(500)).await {
        if let Some(r) = m.resolved_ts {
            assert!(!r.regions.contains(&left.id), "stalled region advanced");
            right_max = right_max.max(r.ts);
        }
    }
    assert!(right_max > frozen_from, "the other region did not advance");
    sim.hub.stall_region(left.id, false);
    feed.until_resolved(|r| r.regions.contains(&left.id) && r.ts > frozen_from)
        .await;
}

#[tokio::test]
async fn live_commit_can_overtake_the_scan_prewrite() {
    let sim = start(1, 0, &[], cfg()).await;
    // 50 MB of scan: well over what the stream's queue (4 MiB for a scan), the response
    // channel (4 messages of up to 6 MiB) and the HTTP/2 windows hold before the client reads,
    // so the scan is still running when the commit lands. (With 20 MB it could finish first.)
    let value = vec![b'x'; 10 * 1024];
    for i in 0..5000u32 {
        sim.put(format!("k{i:05}").as_bytes(), &value);
    }
    let s = sim.lock(b"zzz", b"last");
    let region = sim.region_of(b"a");
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    feed.send(register(&region, 1, 0)).await;
    let first = feed.next().await;
    let c = sim.commit(b"zzz", s);
    let mut all: Vec<event::Row> = first.events.iter().flat_map(rows).collect();
    let rest = feed.events_until(is_initialized).await;
    all.extend(rest.iter().flat_map(rows));
    let commit_at = all
        .iter()
        .position(|r| r.key == b"zzz" && r.r#type == ty(LogType::Commit))
        .unwrap();
    let prewrite_at = all
        .iter()
        .position(|r| r.key == b"zzz" && r.r#type == ty(LogType::Prewrite))
        .unwrap();
    assert!(
        commit_at < prewrite_at,
        "expected the live COMMIT before the scan PREWRITE"
    );
    // The pair matches on (start_ts, key); the prewrite carries the value, the commit none.
    assert_eq!((all[commit_at].start_ts, all[commit_at].commit_ts), (s, c));
    assert!(all[commit_at].value.is_empty());
    assert_eq!(
        (all[prewrite_at].start_ts, all[prewrite_at].value.as_slice()),
        (s, &b"last"[..])
    );
    let committed = all
        .iter()
        .filter(|r| r.r#type == ty(LogType::Committed))
        .count();
    assert_eq!(committed, 5000);
    assert_eq!(all.last().map(|r| r.r#type), Some(ty(LogType::Initialized)));
}

#[tokio::test]
async fn batching_limits() {
    let sim = start(
        1,
        0,
        &[],
        CdcConfig {
            max_entries_bytes: 1024,
            ..cfg()
        },
    )
    .await;
    for i in 0..3000u32 {
        sim.put(format!("k{i:05}").as_bytes(), &[b'v'; 100]);
    }
    let region = sim.region_of(b"a");
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    feed.send(register(&region, 1, 0)).await;
    let mut total = 0;
    let mut max_events = 0;
    loop {
        let m = feed.next().await;
        assert!(m.events.is_empty() || m.resolved_ts.is_none());
        max_events = max_events.max(m.events.len());
        for e in &m.events {
            let rs = rows(e);
            let bytes: usize = rs
                .iter()
                .map(|r| r.key.len() + r.value.len() + r.old_value.len())
                .sum();
            assert!(bytes < 1024, "entries of {bytes} bytes");
            total += rs.len();
        }
        if m.events.iter().any(is_initialized) {
            break;
        }
    }
    assert_eq!(total, 3001);
    assert_eq!(max_events, 64);
}

/// Each apply event reaches exactly the subscriptions of the region holding its key: one
/// transaction across four regions (two of them subscribed twice, on different requests, one
/// not at all), then again after a split re-registers the halves.
#[tokio::test]
async fn rows_are_routed_to_the_region_holding_the_key() {
    let sim = start(1, 0, &[b"g", b"n", b"t"], cfg()).await;
    let mut feed = sim.feed(1, Some("stream-multiplexing")).await;
    // Regions: [-inf, g) [g, n) [n, t) [t, +inf); [n, t) is left unsubscribed.
    let subs = [(b"a", 1u64), (b"g", 2), (b"t", 3), (b"a", 4), (b"t", 5)];
    for (key, request) in subs {
        feed.send(register(&sim.region_of(key), request, 0)).await;
    }
    let mut inits = 0;
    feed.events_until(|e| {
        inits += usize::from(is_initialized(e));
        inits == subs.len()
    })
    .await;

    let keys: [&[u8]; 6] = [b"", b"b", b"g", b"m", b"p", b"zz"];
    let start_ts = sim.tso.next();
    let muts: Vec<Mutation> = keys.iter().map(|k| Mutation::put(*k, b"v")).collect();
    sim.store.prewrite(&muts, keys[1], start_ts).unwrap();
    let commit_ts = sim.tso.next();
    let raw: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    sim.store.commit(&raw, start_ts, commit_ts).unwrap();

    // (request, region, key) of every COMMIT row, in arrival order per request.
    let expected = |split: bool| -> Vec<(u64, u64, Vec<u8>)> {
        let mut v = Vec::new();
        for (key, request) in subs {
            let region = sim.region_of(key);
            if split && key == b"t" {
                continue;
            }
            for k in keys {
                if region.contains(&encode_key(k)) {
                    v.push((request, region.id, k.to_vec()));
                }
            }
        }
        v.sort();
        v
    };
    let want = expected(false);
    let mut got = Vec::new();
    let collected = tokio::time::timeout(
        WAIT,
        feed.events_until(|e| {
            for r in rows(e) {
                if r.r#type == ty(LogType::Commit) {
                    got.push((e.request_id, e.region_id, r.key.clone()));
                }
            }
            got.len() >= want.len()
        }),
    )
    .await;
    got.sort();
    assert!(
        collected.is_ok(),
        "rows missing: got {got:?}, want {want:?}"
    );
    assert_eq!(got, want);

    // Split [t, +inf) at "x": requests 3 and 5 end; re-register only the upper half on 6.
    let old = sim.region_of(b"t");
    let (_, upper) = sim.regions.split(&encode_key(b"x")).unwrap();
    let mut ended = Vec::new();
    feed.events_until(|e| {
        if err(e).is_some_and(|x| x.epoch_not_match.is_some()) && e.region_id == old.id {
            ended.push(e.request_id);
        }
        ended.len() == 2
    })
    .await;
    ended.sort();
    assert_eq!(ended, vec![3, 5]);
    feed.send(register(&upper, 6, 0)).await;
    feed.events_until(is_initialized).await;
    let (_, c2) = sim.put(b"zz", b"w");
    sim.put(b"u", b"lower half, unsubscribed");
    let mut got = Vec::new();
    let collected = tokio::time::timeout(
        WAIT,
        feed.events_until(|e| {
            for r in rows(e) {
                if r.r#type == ty(LogType::Commit) {
                    got.push((e.request_id, e.region_id, r.key.clone(), r.commit_ts));
                }
            }
            !got.is_empty()
        }),
    )
    .await;
    assert!(collected.is_ok(), "no row after the split");
    assert_eq!(got, vec![(6, upper.id, b"zz".to_vec(), c2)]);
    for m in drain_for(&mut feed, Duration::from_millis(200)).await {
        for e in &m.events {
            assert!(
                rows(e).iter().all(|r| r.key != b"u"),
                "a row of the unsubscribed half was sent: {e:?}"
            );
        }
    }
}
