//! End-to-end check of the generated tonic clients and servers.
//!
//! One in-process server on 127.0.0.1:0 hosts `cdcpb.ChangeData`, `pdpb.PD`
//! and `tikvpb.Tikv`; the generated clients call it over real HTTP/2. This
//! proves the service path strings (`/cdcpb.ChangeData/EventFeedV2`,
//! `/pdpb.PD/Tso`, `/tikvpb.Tikv/KvGet`, ...) and the streaming shapes agree
//! between both halves, and that the `features` metadata header reaches the
//! server. Methods the test does not exercise answer `Unimplemented`.

use std::net::SocketAddr;
use std::pin::Pin;

use tidal_proto::cdcpb::change_data_client::ChangeDataClient;
use tidal_proto::cdcpb::change_data_server::{ChangeData, ChangeDataServer};
use tidal_proto::cdcpb::{self, ChangeDataEvent, ChangeDataRequest};
use tidal_proto::features::{
    EVENT_FEED_FEATURES_KEY, MAX_MESSAGE_SIZE, PHYSICAL_SHIFT_BITS, STREAM_MULTIPLEXING,
    TICDC_VERSION,
};
use tidal_proto::kvrpcpb;
use tidal_proto::metapb;
use tidal_proto::pdpb::{self, pd_client::PdClient, pd_server::Pd, pd_server::PdServer};
use tidal_proto::tikvpb::tikv_client::TikvClient;
use tidal_proto::tikvpb::tikv_server::{Tikv, TikvServer};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[derive(Debug, Default)]
struct FakeTikv;

#[tonic::async_trait]
impl ChangeData for FakeTikv {
    type EventFeedStream = BoxStream<ChangeDataEvent>;
    type EventFeedV2Stream = BoxStream<ChangeDataEvent>;

    async fn event_feed(
        &self,
        _request: Request<Streaming<ChangeDataRequest>>,
    ) -> Result<Response<Self::EventFeedStream>, Status> {
        Err(Status::unimplemented("v1 not served"))
    }

    async fn event_feed_v2(
        &self,
        request: Request<Streaming<ChangeDataRequest>>,
    ) -> Result<Response<Self::EventFeedV2Stream>, Status> {
        let features = request
            .metadata()
            .get(EVENT_FEED_FEATURES_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if features != STREAM_MULTIPLEXING {
            return Err(Status::unimplemented(format!("features {features:?}")));
        }
        // Answer each registration with a resolved ts at its checkpoint.
        let out = request.into_inner().map(|req| {
            req.map(|req| ChangeDataEvent {
                events: vec![],
                resolved_ts: Some(cdcpb::ResolvedTs {
                    regions: vec![req.region_id],
                    ts: req.checkpoint_ts,
                    request_id: req.request_id,
                }),
            })
        });
        Ok(Response::new(Box::pin(out)))
    }
}

#[tonic::async_trait]
impl Tikv for FakeTikv {
    async fn kv_get(
        &self,
        request: Request<kvrpcpb::GetRequest>,
    ) -> Result<Response<kvrpcpb::GetResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(kvrpcpb::GetResponse {
            value: [req.key.as_slice(), b"@", req.version.to_string().as_bytes()].concat(),
            ..Default::default()
        }))
    }

    async fn kv_scan(
        &self,
        request: Request<kvrpcpb::ScanRequest>,
    ) -> Result<Response<kvrpcpb::ScanResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(kvrpcpb::ScanResponse {
            pairs: vec![kvrpcpb::KvPair {
                key: req.start_key,
                value: req.end_key,
                ..Default::default()
            }],
            ..Default::default()
        }))
    }

    async fn kv_batch_get(
        &self,
        request: Request<kvrpcpb::BatchGetRequest>,
    ) -> Result<Response<kvrpcpb::BatchGetResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(kvrpcpb::BatchGetResponse {
            pairs: req
                .keys
                .into_iter()
                .map(|key| kvrpcpb::KvPair {
                    value: key.clone(),
                    key,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }))
    }
}

#[derive(Debug, Default)]
struct FakePd;

const CLUSTER_ID: u64 = 6_842_843_948_209_934_212;

fn resp_header() -> Option<pdpb::ResponseHeader> {
    Some(pdpb::ResponseHeader {
        cluster_id: CLUSTER_ID,
        error: None,
    })
}

#[tonic::async_trait]
impl Pd for FakePd {
    type TsoStream = BoxStream<pdpb::TsoResponse>;

    async fn get_members(
        &self,
        _request: Request<pdpb::GetMembersRequest>,
    ) -> Result<Response<pdpb::GetMembersResponse>, Status> {
        let leader = pdpb::Member {
            name: "pd-0".to_owned(),
            member_id: 1,
            client_urls: vec!["http://pd-0:2379".to_owned()],
            ..Default::default()
        };
        Ok(Response::new(pdpb::GetMembersResponse {
            header: resp_header(),
            members: vec![leader.clone()],
            leader: Some(leader),
            ..Default::default()
        }))
    }

    async fn tso(
        &self,
        request: Request<Streaming<pdpb::TsoRequest>>,
    ) -> Result<Response<Self::TsoStream>, Status> {
        let out = request.into_inner().map(|req| {
            req.map(|req| pdpb::TsoResponse {
                header: resp_header(),
                count: req.count,
                timestamp: Some(pdpb::Timestamp {
                    physical: 1_700_000_000_000,
                    logical: i64::from(req.count),
                    suffix_bits: 0,
                }),
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_store(
        &self,
        _request: Request<pdpb::GetStoreRequest>,
    ) -> Result<Response<pdpb::GetStoreResponse>, Status> {
        Err(Status::unimplemented("GetStore"))
    }

    async fn get_all_stores(
        &self,
        _request: Request<pdpb::GetAllStoresRequest>,
    ) -> Result<Response<pdpb::GetAllStoresResponse>, Status> {
        Err(Status::unimplemented("GetAllStores"))
    }

    async fn get_region(
        &self,
        _request: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        Err(Status::unimplemented("GetRegion"))
    }

    async fn get_prev_region(
        &self,
        _request: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        Err(Status::unimplemented("GetPrevRegion"))
    }

    async fn get_region_by_id(
        &self,
        _request: Request<pdpb::GetRegionByIdRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        Err(Status::unimplemented("GetRegionByID"))
    }

    async fn scan_regions(
        &self,
        request: Request<pdpb::ScanRegionsRequest>,
    ) -> Result<Response<pdpb::ScanRegionsResponse>, Status> {
        let req = request.into_inner();
        let region = metapb::Region {
            id: 10,
            start_key: req.start_key,
            end_key: req.end_key,
            ..Default::default()
        };
        let leader = metapb::Peer {
            id: 11,
            store_id: 1,
            ..Default::default()
        };
        Ok(Response::new(pdpb::ScanRegionsResponse {
            header: resp_header(),
            region_metas: vec![region.clone()],
            leaders: vec![leader],
            regions: vec![pdpb::Region {
                region: Some(region),
                leader: Some(leader),
                ..Default::default()
            }],
        }))
    }

    async fn batch_scan_regions(
        &self,
        _request: Request<pdpb::BatchScanRegionsRequest>,
    ) -> Result<Response<pdpb::BatchScanRegionsResponse>, Status> {
        Err(Status::unimplemented("BatchScanRegions"))
    }

    async fn get_gc_safe_point(
        &self,
        _request: Request<pdpb::GetGcSafePointRequest>,
    ) -> Result<Response<pdpb::GetGcSafePointResponse>, Status> {
        Err(Status::unimplemented("GetGCSafePoint"))
    }

    async fn update_gc_safe_point(
        &self,
        _request: Request<pdpb::UpdateGcSafePointRequest>,
    ) -> Result<Response<pdpb::UpdateGcSafePointResponse>, Status> {
        Err(Status::unimplemented("UpdateGCSafePoint"))
    }

    async fn update_service_gc_safe_point(
        &self,
        request: Request<pdpb::UpdateServiceGcSafePointRequest>,
    ) -> Result<Response<pdpb::UpdateServiceGcSafePointResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(pdpb::UpdateServiceGcSafePointResponse {
            header: resp_header(),
            service_id: req.service_id,
            ttl: req.ttl,
            min_safe_point: req.safe_point,
        }))
    }
}

/// Starts the three services on an ephemeral port and returns its address.
async fn start_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let incoming = TcpIncoming::from(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ChangeDataServer::new(FakeTikv))
            .add_service(TikvServer::new(FakeTikv))
            .add_service(PdServer::new(FakePd))
            .serve_with_incoming(incoming)
            .await
            .expect("test server runs");
    });
    addr
}

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connect to test server")
}

#[tokio::test]
async fn change_data_event_feed_v2_round_trip() {
    let chan = channel(start_server().await).await;
    let mut client = ChangeDataClient::new(chan)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);

    let requests: Vec<ChangeDataRequest> = [(2_u64, 7_u64), (3, 8)]
        .into_iter()
        .map(|(region_id, request_id)| ChangeDataRequest {
            header: Some(cdcpb::Header {
                cluster_id: CLUSTER_ID,
                ticdc_version: TICDC_VERSION.to_owned(),
            }),
            region_id,
            checkpoint_ts: (1_700_000_000_000_u64 << PHYSICAL_SHIFT_BITS) | region_id,
            request_id,
            request: Some(cdcpb::change_data_request::Request::Register(
                cdcpb::change_data_request::Register {},
            )),
            ..Default::default()
        })
        .collect();
    let mut request = Request::new(tokio_stream::iter(requests));
    request.metadata_mut().insert(
        EVENT_FEED_FEATURES_KEY,
        STREAM_MULTIPLEXING.parse().expect("ascii metadata"),
    );
    let mut events = client
        .event_feed_v2(request)
        .await
        .expect("EventFeedV2 accepted")
        .into_inner();

    let mut got = Vec::new();
    while let Some(event) = events.next().await {
        got.push(
            event
                .expect("stream item")
                .resolved_ts
                .expect("resolved ts"),
        );
    }
    assert_eq!(
        got,
        vec![
            cdcpb::ResolvedTs {
                regions: vec![2],
                ts: 445_644_800_000_000_002,
                request_id: 7,
            },
            cdcpb::ResolvedTs {
                regions: vec![3],
                ts: 445_644_800_000_000_003,
                request_id: 8,
            },
        ]
    );

    // EventFeed (v1) reaches its own handler, proving the second path is distinct.
    let status = client
        .event_feed(tokio_stream::iter(Vec::<ChangeDataRequest>::new()))
        .await
        .expect_err("v1 is unimplemented in the fake");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(status.message(), "v1 not served");

    // Without the features header the fake rejects the stream.
    let status = client
        .event_feed_v2(tokio_stream::iter(Vec::<ChangeDataRequest>::new()))
        .await
        .expect_err("features header required");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn pd_methods_round_trip() {
    let mut pd = PdClient::new(channel(start_server().await).await);
    let header = Some(pdpb::RequestHeader {
        cluster_id: CLUSTER_ID,
        ..Default::default()
    });

    let members = pd
        .get_members(pdpb::GetMembersRequest { header: None })
        .await
        .expect("GetMembers")
        .into_inner();
    assert_eq!(members.header.map(|h| h.cluster_id), Some(CLUSTER_ID));
    assert_eq!(
        members.leader.map(|l| l.client_urls),
        Some(vec!["http://pd-0:2379".to_owned()])
    );

    let tso_req = pdpb::TsoRequest {
        header: header.clone(),
        count: 10,
        dc_location: "global".to_owned(),
    };
    let mut tso = pd
        .tso(tokio_stream::iter(vec![tso_req]))
        .await
        .expect("Tso")
        .into_inner();
    let resp = tso.next().await.expect("one response").expect("ok");
    let ts = resp.timestamp.expect("timestamp");
    assert_eq!(
        (resp.count, ts.physical, ts.logical),
        (10, 1_700_000_000_000, 10)
    );
    assert!(tso.next().await.is_none());

    let scan = pd
        .scan_regions(pdpb::ScanRegionsRequest {
            header: header.clone(),
            start_key: b"a".to_vec(),
            limit: 0,
            end_key: b"z".to_vec(),
        })
        .await
        .expect("ScanRegions")
        .into_inner();
    assert_eq!(scan.regions.len(), 1);
    let region = scan.region_metas.first().expect("one region");
    assert_eq!((region.id, region.start_key.as_slice()), (10, &b"a"[..]));
    assert_eq!(scan.leaders.first().map(|p| p.store_id), Some(1));

    let gc = pd
        .update_service_gc_safe_point(pdpb::UpdateServiceGcSafePointRequest {
            header: header.clone(),
            service_id: b"tidal".to_vec(),
            ttl: 86_400,
            safe_point: 445_644_799_999_999_999,
        })
        .await
        .expect("UpdateServiceGCSafePoint")
        .into_inner();
    assert_eq!(gc.service_id, b"tidal");
    assert_eq!(gc.ttl, 86_400);
    assert_eq!(gc.min_safe_point, 445_644_799_999_999_999);

    let status = pd
        .get_store(pdpb::GetStoreRequest {
            header,
            store_id: 1,
        })
        .await
        .expect_err("GetStore is unimplemented in the fake");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(status.message(), "GetStore");
}

#[tokio::test]
async fn tikv_reads_round_trip() {
    let mut kv = TikvClient::new(channel(start_server().await).await);

    let get = kv
        .kv_get(kvrpcpb::GetRequest {
            key: b"k".to_vec(),
            version: 42,
            ..Default::default()
        })
        .await
        .expect("KvGet")
        .into_inner();
    assert_eq!(get.value, b"k@42");

    let scan = kv
        .kv_scan(kvrpcpb::ScanRequest {
            start_key: b"a".to_vec(),
            end_key: b"b".to_vec(),
            ..Default::default()
        })
        .await
        .expect("KvScan")
        .into_inner();
    assert_eq!(scan.pairs.len(), 1);
    assert_eq!(
        scan.pairs.first().map(|p| (&p.key[..], &p.value[..])),
        Some((&b"a"[..], &b"b"[..]))
    );

    let batch = kv
        .kv_batch_get(kvrpcpb::BatchGetRequest {
            keys: vec![b"x".to_vec(), b"y".to_vec()],
            ..Default::default()
        })
        .await
        .expect("KvBatchGet")
        .into_inner();
    let keys: Vec<&[u8]> = batch.pairs.iter().map(|p| p.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"x"[..], &b"y"[..]]);
}

/// The server-side path constants baked into the generated code.
#[test]
fn service_names_match_kvproto() {
    use tonic::server::NamedService;
    assert_eq!(
        <ChangeDataServer<FakeTikv> as NamedService>::NAME,
        "cdcpb.ChangeData"
    );
    assert_eq!(<PdServer<FakePd> as NamedService>::NAME, "pdpb.PD");
    assert_eq!(<TikvServer<FakeTikv> as NamedService>::NAME, "tikvpb.Tikv");
}
