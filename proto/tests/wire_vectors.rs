//! Byte-exact wire vectors for the messages Tidal exchanges with TiKV and PD.
//!
//! Every expected hex string below was computed by hand from the protobuf
//! encoding rules, not by running prost: a field starts with the tag varint
//! `(field_number << 3) | wire_type` (0 = varint, 2 = length-delimited), a
//! length-delimited field continues with a varint byte length, and varints are
//! little-endian groups of 7 bits with the high bit set on all but the last
//! byte. Fields holding their proto3 default (0, false, empty) are not sent.
//! prost writes fields in field-number order (a oneof sits at its lowest
//! number), which is the canonical order these vectors assume.
//!
//! If one of these tests fails, either a field number / type in `proto/*.proto`
//! drifted from kvproto or the vector is wrong; it is never fixed by copying
//! prost's output into the test.
//!
//! Recurring varints (checked by hand, 7-bit groups from the low end):
//! * 445_644_800_000_000_005 = 0x062F_3F95_A000_0005 (physical 1_700_000_000_000 ms, logical 5)
//!   -> `85 80 80 80 da f2 cf 97 06`
//! * 445_644_800_000_000_000 = 0x062F_3F95_A000_0000 -> `80 80 80 80 da f2 cf 97 06`
//! * 445_644_799_999_999_999 = 0x062F_3F95_9FFF_FFFF -> `ff ff ff ff d9 f2 cf 97 06`
//! * 1_700_000_000_000 = 0x18B_CFE5_6800 -> `80 d0 95 ff bc 31`
//! * 300 = 0x12C -> `ac 02`; 86_400 = 0x1_5180 -> `80 a3 05`
//! * -1 as int64 -> ten bytes `ff ff ff ff ff ff ff ff ff 01`

use prost::Message;
use tidal_proto::cdcpb::change_data_request::{Deregister, Register, Request};
use tidal_proto::cdcpb::event::{self, Entries, LogType, Row, row::OpType};
use tidal_proto::cdcpb::{self, ChangeDataEvent, ChangeDataRequest, Event, ResolvedTs};
use tidal_proto::{errorpb, kvrpcpb, metapb, pdpb};

/// Parses a spaced hex literal such as `"0a 03 08 ac 02"`.
fn hex_bytes(spaced: &str) -> Vec<u8> {
    let compact: String = spaced.split_whitespace().collect();
    hex::decode(compact).expect("test vector is valid hex")
}

/// Encodes `msg`, compares with `expected_hex`, decodes the bytes back, and
/// checks every strict prefix of the encoding never decodes to `msg`.
fn check_vector<M>(msg: &M, expected_hex: &str)
where
    M: Message + Default + PartialEq + std::fmt::Debug,
{
    let expected = hex_bytes(expected_hex);
    let encoded = msg.encode_to_vec();
    assert_eq!(
        hex::encode(&encoded),
        hex::encode(&expected),
        "encoding of {msg:?}"
    );
    assert_eq!(msg.encoded_len(), expected.len());
    let decoded = M::decode(expected.as_slice()).expect("vector decodes");
    assert_eq!(&decoded, msg);
    for cut in 0..expected.len() {
        // A cut inside a field must fail; a cut on a field boundary decodes
        // to a message missing that field. Either way it is never `msg`.
        let prefix = expected.get(..cut).unwrap_or_default();
        if let Ok(partial) = M::decode(prefix) {
            assert_ne!(
                &partial, msg,
                "prefix of {cut} bytes decoded to the full message"
            );
        }
    }
}

const ENC_TS_5: u64 = 445_644_800_000_000_005;

fn register_request(request: Request) -> ChangeDataRequest {
    ChangeDataRequest {
        header: Some(cdcpb::Header {
            cluster_id: 1,
            ticdc_version: "8.5.0".to_owned(),
        }),
        region_id: 2,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 3,
        }),
        checkpoint_ts: ENC_TS_5,
        start_key: vec![0x74, 0x80],
        end_key: vec![0x74, 0x81],
        request_id: 7,
        extra_op: kvrpcpb::ExtraOp::ReadOldValue as i32,
        request: Some(request),
        ..Default::default()
    }
}

/// The ChangeDataRequest prefix shared by the register and deregister vectors.
const CDR_COMMON: &str = concat!(
    // 1 header (LEN, tag 0x0a), 9 bytes: cluster_id=1 `08 01`,
    //   ticdc_version="8.5.0" `12 05 38 2e 35 2e 30`
    "0a 09 08 01 12 05 38 2e 35 2e 30 ",
    // 2 region_id=2 (varint, tag 0x10)
    "10 02 ",
    // 3 region_epoch (LEN, tag 0x1a), 4 bytes: conf_ver=1 `08 01`, version=3 `10 03`
    "1a 04 08 01 10 03 ",
    // 4 checkpoint_ts (varint, tag 0x20)
    "20 85 80 80 80 da f2 cf 97 06 ",
    // 5 start_key (tag 0x2a) and 6 end_key (tag 0x32), 2 bytes each
    "2a 02 74 80 32 02 74 81 ",
    // 7 request_id=7 (tag 0x38), 8 extra_op=ReadOldValue=1 (tag 0x40)
    "38 07 40 01 ",
);

#[test]
fn change_data_request_register() {
    // oneof request: 9 register (LEN, tag 9<<3|2 = 0x4a), empty message.
    let expected = format!("{CDR_COMMON} 4a 00");
    check_vector(&register_request(Request::Register(Register {})), &expected);
}

#[test]
fn change_data_request_deregister() {
    // oneof request: 13 deregister (LEN, tag 13<<3|2 = 0x6a), empty message.
    let expected = format!("{CDR_COMMON} 6a 00");
    check_vector(
        &register_request(Request::Deregister(Deregister {})),
        &expected,
    );
}

#[test]
fn change_data_request_optional_fields() {
    // kv_api=RawKV (11, tag 0x58), filter_loop=true (12, tag 0x60),
    // scan_priority=HIGH (14, tag 0x70); nothing else set.
    let msg = ChangeDataRequest {
        kv_api: cdcpb::change_data_request::KvApi::RawKv as i32,
        filter_loop: true,
        scan_priority: cdcpb::ScanPriority::High as i32,
        ..Default::default()
    };
    check_vector(&msg, "58 01 60 01 70 02");
}

fn commit_row() -> Row {
    Row {
        start_ts: 445_644_800_000_000_000,
        commit_ts: ENC_TS_5,
        r#type: LogType::Commit as i32,
        op_type: OpType::Put as i32,
        key: b"k1".to_vec(),
        value: b"v2".to_vec(),
        old_value: b"v1".to_vec(),
        expire_ts_unix_secs: 0,
        txn_source: 1,
        generation: 3,
    }
}

/// Event.Row with every TiDB-mode field set: 40 (0x28) bytes.
const ROW_HEX: &str = concat!(
    "08 80 80 80 80 da f2 cf 97 06 ", // 1 start_ts (10 bytes)
    "10 85 80 80 80 da f2 cf 97 06 ", // 2 commit_ts (10 bytes)
    "18 02 ",                         // 3 type=COMMIT
    "20 01 ",                         // 4 op_type=PUT
    "2a 02 6b 31 ",                   // 5 key="k1"
    "32 02 76 32 ",                   // 6 value="v2"
    "3a 02 76 31 ",                   // 7 old_value="v1"
    "48 01 ",                         // 9 txn_source=1 (tag 9<<3 = 0x48)
    "50 03",                          // 10 generation=3 (tag 10<<3 = 0x50)
);

#[test]
fn event_row_alone() {
    check_vector(&commit_row(), ROW_HEX);
}

#[test]
fn event_row_initialized_marker() {
    // Only type=INITIALIZED(5) is set.
    let row = Row {
        r#type: LogType::Initialized as i32,
        ..Default::default()
    };
    check_vector(&row, "18 05");
}

#[test]
fn change_data_event_with_entries() {
    let msg = ChangeDataEvent {
        events: vec![Event {
            region_id: 2,
            index: 0,
            request_id: 7,
            event: Some(event::Event::Entries(Entries {
                entries: vec![commit_row()],
            })),
        }],
        resolved_ts: None,
    };
    // Entries = `0a 28 <row>` (42 = 0x2a bytes).
    // Event = region_id `08 02` + entries (3, tag 0x1a) `1a 2a <42>` + request_id (7) `38 07`
    //       = 2 + 44 + 2 = 48 (0x30) bytes.
    // ChangeDataEvent = events (1, tag 0x0a) `0a 30 <48>`.
    let expected = format!("0a 30 08 02 1a 2a 0a 28 {ROW_HEX} 38 07");
    check_vector(&msg, &expected);
}

#[test]
fn change_data_event_with_resolved_ts() {
    let msg = ChangeDataEvent {
        events: vec![],
        resolved_ts: Some(ResolvedTs {
            regions: vec![2, 3],
            ts: ENC_TS_5,
            request_id: 7,
        }),
    };
    // ResolvedTs: regions packed (1, LEN) `0a 02 02 03`, ts (2) `10 <9>`,
    // request_id (3) `18 07` = 4 + 10 + 2 = 16 (0x10) bytes.
    // ChangeDataEvent: resolved_ts (2, tag 0x12) `12 10 <16>`.
    check_vector(
        &msg,
        "12 10 0a 02 02 03 10 85 80 80 80 da f2 cf 97 06 18 07",
    );
}

#[test]
fn resolved_ts_accepts_unpacked_regions() {
    // Decoders must also accept the unpacked form (one `08 xx` per element).
    let decoded = ResolvedTs::decode(hex_bytes("08 02 08 03 10 05").as_slice()).unwrap();
    assert_eq!(decoded.regions, vec![2, 3]);
    assert_eq!(decoded.ts, 5);
}

#[test]
fn event_with_epoch_not_match_error() {
    let region = metapb::Region {
        id: 10,
        start_key: b"a".to_vec(),
        end_key: b"b".to_vec(),
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 5,
        }),
        peers: vec![metapb::Peer {
            id: 11,
            store_id: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    let msg = Event {
        region_id: 2,
        index: 0,
        request_id: 7,
        event: Some(event::Event::Error(cdcpb::Error {
            epoch_not_match: Some(errorpb::EpochNotMatch {
                current_regions: vec![region],
            }),
            ..Default::default()
        })),
    };
    // Region (20 = 0x14 bytes): id `08 0a`, start_key `12 01 61`, end_key `1a 01 62`,
    //   region_epoch (4, tag 0x22) `22 04 08 01 10 05`, peers (5, tag 0x2a) `2a 04 08 0b 10 01`.
    // EpochNotMatch: current_regions (1) `0a 14 <20>` = 22 (0x16) bytes.
    // cdcpb.Error: epoch_not_match (3, tag 0x1a) `1a 16 <22>` = 24 (0x18) bytes.
    // Event: `08 02`, error (5, tag 0x2a) `2a 18 <24>`, request_id `38 07`.
    check_vector(
        &msg,
        "08 02 2a 18 1a 16 0a 14 08 0a 12 01 61 1a 01 62 22 04 08 01 10 05 2a 04 08 0b 10 01 38 07",
    );
}

#[test]
fn cdc_error_variants_numbers() {
    // not_leader (1) with leader Peer{id=4, store_id=5}: NotLeader = region_id `08 02`,
    // leader (2, tag 0x12) `12 04 08 04 10 05`.
    let not_leader = cdcpb::Error {
        not_leader: Some(errorpb::NotLeader {
            region_id: 2,
            leader: Some(metapb::Peer {
                id: 4,
                store_id: 5,
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    check_vector(&not_leader, "0a 08 08 02 12 04 08 04 10 05");

    // region_not_found (2), duplicate_request (4), cluster_id_mismatch (6),
    // server_is_busy (7), congested (8), compatibility (5).
    let many = cdcpb::Error {
        region_not_found: Some(errorpb::RegionNotFound { region_id: 2 }),
        duplicate_request: Some(cdcpb::DuplicateRequest { region_id: 2 }),
        compatibility: Some(cdcpb::Compatibility {
            required_version: "6.2.0".to_owned(),
        }),
        cluster_id_mismatch: Some(cdcpb::ClusterIdMismatch {
            current: 1,
            request: 9,
        }),
        server_is_busy: Some(errorpb::ServerIsBusy {
            reason: "x".to_owned(),
            backoff_ms: 50,
            ..Default::default()
        }),
        congested: Some(cdcpb::Congested { region_id: 2 }),
        ..Default::default()
    };
    check_vector(
        &many,
        concat!(
            "12 02 08 02 ",                // 2 region_not_found{region_id=2}
            "22 02 08 02 ",                // 4 duplicate_request{region_id=2}
            "2a 07 0a 05 36 2e 32 2e 30 ", // 5 compatibility{"6.2.0"}
            "32 04 08 01 10 09 ",          // 6 cluster_id_mismatch{1, 9}
            "3a 05 0a 01 78 10 32 ",       // 7 server_is_busy{"x", backoff 50}
            "42 02 08 02",                 // 8 congested{region_id=2}
        ),
    );
}

#[test]
fn event_legacy_resolved_ts_and_admin() {
    // oneof resolved_ts (6, varint tag 0x30).
    let legacy = Event {
        region_id: 2,
        event: Some(event::Event::ResolvedTs(300)),
        ..Default::default()
    };
    check_vector(&legacy, "08 02 30 ac 02");
    // Admin carries its raft_cmdpb payloads as bytes; Admin (4, tag 0x22).
    let admin = Event {
        event: Some(event::Event::Admin(event::Admin {
            admin_request: vec![0x08, 0x01],
            admin_response: vec![],
        })),
        ..Default::default()
    };
    check_vector(&admin, "22 04 0a 02 08 01");
}

fn pd_header() -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: 300,
        ..Default::default()
    })
}

#[test]
fn pd_tso_request() {
    let msg = pdpb::TsoRequest {
        header: pd_header(),
        count: 10,
        dc_location: "global".to_owned(),
    };
    // header (1) `0a 03 08 ac 02`, count (2) `10 0a`, dc_location (3) `1a 06 "global"`.
    check_vector(&msg, "0a 03 08 ac 02 10 0a 1a 06 67 6c 6f 62 61 6c");
}

#[test]
fn pd_tso_response() {
    let msg = pdpb::TsoResponse {
        header: Some(pdpb::ResponseHeader {
            cluster_id: 300,
            error: None,
        }),
        count: 10,
        timestamp: Some(pdpb::Timestamp {
            physical: 1_700_000_000_000,
            logical: 5,
            suffix_bits: 0,
        }),
    };
    // Timestamp: physical (1) `08 80 d0 95 ff bc 31`, logical (2) `10 05` = 9 bytes.
    check_vector(
        &msg,
        "0a 03 08 ac 02 10 0a 1a 09 08 80 d0 95 ff bc 31 10 05",
    );
}

#[test]
fn pd_response_header_error() {
    let msg = pdpb::ResponseHeader {
        cluster_id: 0,
        error: Some(pdpb::Error {
            r#type: pdpb::ErrorType::RegionsNotContainAllKeyRange as i32,
            message: "m".to_owned(),
        }),
    };
    // error (2) `12 05`: type (1) = 12 `08 0c`, message (2) `12 01 6d`.
    check_vector(&msg, "12 05 08 0c 12 01 6d");
}

#[test]
fn pd_update_service_gc_safe_point() {
    let msg = pdpb::UpdateServiceGcSafePointRequest {
        header: pd_header(),
        service_id: b"ticdc".to_vec(),
        ttl: 86_400,
        safe_point: 445_644_799_999_999_999,
    };
    // header, service_id (2) `12 05 "ticdc"`, TTL (3) `18 80 a3 05`, safe_point (4) `20 <9>`.
    check_vector(
        &msg,
        "0a 03 08 ac 02 12 05 74 69 63 64 63 18 80 a3 05 20 ff ff ff ff d9 f2 cf 97 06",
    );
    // TTL = -1 (remove the safe point) is a 10-byte varint.
    let remove = pdpb::UpdateServiceGcSafePointRequest {
        ttl: -1,
        ..Default::default()
    };
    check_vector(&remove, "18 ff ff ff ff ff ff ff ff ff 01");
    let resp = pdpb::UpdateServiceGcSafePointResponse {
        header: None,
        service_id: b"gc_worker".to_vec(),
        ttl: 300,
        min_safe_point: 5,
    };
    check_vector(&resp, "12 09 67 63 5f 77 6f 72 6b 65 72 18 ac 02 20 05");
}

#[test]
fn pd_gc_safe_point_and_scan_regions() {
    let upd = pdpb::UpdateGcSafePointRequest {
        header: None,
        safe_point: 300,
    };
    check_vector(&upd, "10 ac 02");
    let upd_resp = pdpb::UpdateGcSafePointResponse {
        header: None,
        new_safe_point: 300,
    };
    check_vector(&upd_resp, "10 ac 02");
    let get_resp = pdpb::GetGcSafePointResponse {
        header: None,
        safe_point: 300,
    };
    check_vector(&get_resp, "10 ac 02");

    let scan = pdpb::ScanRegionsRequest {
        header: pd_header(),
        start_key: b"a".to_vec(),
        limit: -1,
        end_key: b"b".to_vec(),
    };
    // limit is int32 but negative values are sign-extended to 10 bytes.
    check_vector(
        &scan,
        "0a 03 08 ac 02 12 01 61 18 ff ff ff ff ff ff ff ff ff 01 22 01 62",
    );
    let scan_resp = pdpb::ScanRegionsResponse {
        header: None,
        region_metas: vec![metapb::Region {
            id: 10,
            ..Default::default()
        }],
        leaders: vec![metapb::Peer {
            id: 11,
            ..Default::default()
        }],
        regions: vec![pdpb::Region {
            region: Some(metapb::Region {
                id: 10,
                ..Default::default()
            }),
            leader: Some(metapb::Peer {
                id: 11,
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    // region_metas (2) `12 02 08 0a`, leaders (3) `1a 02 08 0b`,
    // regions (4) `22 08` { region (1) `0a 02 08 0a`, leader (2) `12 02 08 0b` }.
    check_vector(
        &scan_resp,
        "12 02 08 0a 1a 02 08 0b 22 08 0a 02 08 0a 12 02 08 0b",
    );
}

#[test]
fn pd_members_and_store() {
    let members = pdpb::GetMembersResponse {
        leader: Some(pdpb::Member {
            name: "p".to_owned(),
            member_id: 3,
            client_urls: vec!["h:1".to_owned()],
            ..Default::default()
        }),
        ..Default::default()
    };
    // leader (3, tag 0x1a) `1a 0a` { name `0a 01 70`, member_id `10 03`,
    // client_urls (4) `22 03 68 3a 31` }.
    check_vector(&members, "1a 0a 0a 01 70 10 03 22 03 68 3a 31");

    let store = metapb::Store {
        id: 1,
        address: "s:2".to_owned(),
        state: metapb::StoreState::Offline as i32,
        labels: vec![metapb::StoreLabel {
            key: "z".to_owned(),
            value: "1".to_owned(),
        }],
        node_state: metapb::NodeState::Serving as i32,
        ..Default::default()
    };
    // id `08 01`, address `12 03 73 3a 32`, state `18 01`,
    // labels (4) `22 06 0a 01 7a 12 01 31`, node_state (13, tag 0x68) `68 01`.
    check_vector(
        &store,
        "08 01 12 03 73 3a 32 18 01 22 06 0a 01 7a 12 01 31 68 01",
    );
}

fn kv_context() -> Option<kvrpcpb::Context> {
    Some(kvrpcpb::Context {
        region_id: 2,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 3,
        }),
        peer: Some(metapb::Peer {
            id: 11,
            store_id: 1,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Context above: region_id `08 02`, region_epoch (2) `12 04 08 01 10 03`,
/// peer (3) `1a 04 08 0b 10 01` = 14 (0x0e) bytes.
const CTX_HEX: &str = "0a 0e 08 02 12 04 08 01 10 03 1a 04 08 0b 10 01";

#[test]
fn kv_get_request_and_response() {
    let req = kvrpcpb::GetRequest {
        context: kv_context(),
        key: b"k1".to_vec(),
        version: 300,
        need_commit_ts: false,
    };
    check_vector(&req, &format!("{CTX_HEX} 12 02 6b 31 18 ac 02"));

    let found = kvrpcpb::GetResponse {
        value: b"v1".to_vec(),
        commit_ts: 5,
        ..Default::default()
    };
    // value (3) `1a 02 76 31`, commit_ts (7) `38 05`.
    check_vector(&found, "1a 02 76 31 38 05");

    let missing = kvrpcpb::GetResponse {
        not_found: true,
        ..Default::default()
    };
    check_vector(&missing, "20 01");
}

#[test]
fn kv_snapshot_too_old_is_expressible() {
    // A read below the GC safe point comes back as KeyError.abort text ...
    let key_err = kvrpcpb::GetResponse {
        error: Some(kvrpcpb::KeyError {
            abort: "gc".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // error (2) `12 04` { abort (3) `1a 02 67 63` }.
    check_vector(&key_err, "12 04 1a 02 67 63");
    // ... or as a region error carrying only a message.
    let region_err = kvrpcpb::GetResponse {
        region_error: Some(errorpb::Error {
            message: "gc".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    check_vector(&region_err, "0a 04 0a 02 67 63");
}

#[test]
fn kv_key_error_fields() {
    let err = kvrpcpb::KeyError {
        locked: Some(kvrpcpb::LockInfo {
            primary_lock: b"p".to_vec(),
            lock_version: 300,
            key: b"k".to_vec(),
            lock_ttl: 3,
            txn_size: 1,
            lock_type: kvrpcpb::Op::Del as i32,
            lock_for_update_ts: 2,
            use_async_commit: true,
            min_commit_ts: 4,
            ..Default::default()
        }),
        retryable: "r".to_owned(),
        conflict: Some(kvrpcpb::WriteConflict {
            start_ts: 1,
            conflict_ts: 2,
            reason: kvrpcpb::write_conflict::Reason::Optimistic as i32,
            ..Default::default()
        }),
        already_exist: Some(kvrpcpb::AlreadyExist { key: b"k".to_vec() }),
        ..Default::default()
    };
    // locked (1) `0a 18` { primary_lock `0a 01 70`, lock_version `10 ac 02`, key `1a 01 6b`,
    //   lock_ttl `20 03`, txn_size `28 01`, lock_type `30 01`, lock_for_update_ts `38 02`,
    //   use_async_commit `40 01`, min_commit_ts `48 04` }
    //   = 3 + 3 + 3 + 2 + 2 + 2 + 2 + 2 + 2 = 21 (0x15) bytes.
    // retryable (2) `12 01 72`; conflict (4) `22 06` { `08 01 10 02 30 01` };
    // already_exist (5) `2a 03` { `0a 01 6b` }.
    check_vector(
        &err,
        concat!(
            "0a 15 0a 01 70 10 ac 02 1a 01 6b 20 03 28 01 30 01 38 02 40 01 48 04 ",
            "12 01 72 22 06 08 01 10 02 30 01 2a 03 0a 01 6b",
        ),
    );
}

#[test]
fn kv_scan_and_batch_get() {
    let scan = kvrpcpb::ScanRequest {
        context: None,
        start_key: b"a".to_vec(),
        limit: 10,
        version: 300,
        key_only: true,
        reverse: false,
        end_key: b"b".to_vec(),
        sample_step: 0,
    };
    // start_key (2) `12 01 61`, limit (3) `18 0a`, version (4) `20 ac 02`,
    // key_only (5) `28 01`, end_key (7) `3a 01 62`.
    check_vector(&scan, "12 01 61 18 0a 20 ac 02 28 01 3a 01 62");

    let scan_resp = kvrpcpb::ScanResponse {
        region_error: None,
        pairs: vec![kvrpcpb::KvPair {
            key: b"k1".to_vec(),
            value: b"v1".to_vec(),
            ..Default::default()
        }],
        error: Some(kvrpcpb::KeyError {
            abort: "x".to_owned(),
            ..Default::default()
        }),
    };
    // pairs (2) `12 08` { key (2) `12 02 6b 31`, value (3) `1a 02 76 31` }, error (3) `1a 03 1a 01 78`.
    check_vector(&scan_resp, "12 08 12 02 6b 31 1a 02 76 31 1a 03 1a 01 78");

    let batch = kvrpcpb::BatchGetRequest {
        context: kv_context(),
        keys: vec![b"a".to_vec(), b"b".to_vec()],
        version: 300,
        need_commit_ts: true,
    };
    check_vector(
        &batch,
        &format!("{CTX_HEX} 12 01 61 12 01 62 18 ac 02 20 01"),
    );

    let batch_resp = kvrpcpb::BatchGetResponse {
        region_error: None,
        pairs: vec![kvrpcpb::KvPair {
            key: b"k1".to_vec(),
            value: b"v1".to_vec(),
            ..Default::default()
        }],
        error: Some(kvrpcpb::KeyError {
            abort: "x".to_owned(),
            ..Default::default()
        }),
    };
    // Same pair; error moves to field 5 (tag 0x2a).
    check_vector(&batch_resp, "12 08 12 02 6b 31 1a 02 76 31 2a 03 1a 01 78");
}

#[test]
fn region_error_numbers() {
    let err = errorpb::Error {
        message: "m".to_owned(),
        key_not_in_region: Some(errorpb::KeyNotInRegion {
            key: b"k".to_vec(),
            region_id: 2,
            ..Default::default()
        }),
        stale_command: Some(errorpb::StaleCommand {}),
        store_not_match: Some(errorpb::StoreNotMatch {
            request_store_id: 1,
            actual_store_id: 2,
        }),
        undetermined_result: Some(errorpb::UndeterminedResult {
            message: String::new(),
        }),
        ..Default::default()
    };
    // message (1) `0a 01 6d`; key_not_in_region (4) `22 05 0a 01 6b 10 02`;
    // stale_command (7) `3a 00`; store_not_match (8) `42 04 08 01 10 02`;
    // undetermined_result (22): tag 22<<3|2 = 178 = varint `b2 01`, then `00`.
    check_vector(
        &err,
        "0a 01 6d 22 05 0a 01 6b 10 02 3a 00 42 04 08 01 10 02 b2 01 00",
    );
}

#[test]
fn garbage_is_rejected() {
    let cases = [
        "0a ff",                               // LEN field whose length varint is cut off
        "0a 05 08",                            // LEN field claiming 5 bytes, 1 present
        "07",                                  // wire type 7 does not exist
        "00",                                  // field number 0 is invalid
        "08 80 80 80 80 80 80 80 80 80 80 01", // varint longer than 10 bytes
        "0b 08 01",                            // start-group without its end-group
    ];
    for case in cases {
        let bytes = hex_bytes(case);
        assert!(ChangeDataEvent::decode(bytes.as_slice()).is_err(), "{case}");
        assert!(
            ChangeDataRequest::decode(bytes.as_slice()).is_err(),
            "{case}"
        );
        assert!(
            pdpb::TsoResponse::decode(bytes.as_slice()).is_err(),
            "{case}"
        );
    }
    // A length-delimited field where a varint is expected is rejected too.
    assert!(Row::decode(hex_bytes("0a 01 00").as_slice()).is_err());
}

mod random_input {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ChangeDataEvent::decode(bytes.as_slice());
            let _ = ChangeDataRequest::decode(bytes.as_slice());
            let _ = Event::decode(bytes.as_slice());
            let _ = cdcpb::Error::decode(bytes.as_slice());
            let _ = pdpb::TsoResponse::decode(bytes.as_slice());
            let _ = pdpb::ScanRegionsResponse::decode(bytes.as_slice());
            let _ = pdpb::GetMembersResponse::decode(bytes.as_slice());
            let _ = kvrpcpb::ScanResponse::decode(bytes.as_slice());
            let _ = kvrpcpb::BatchGetResponse::decode(bytes.as_slice());
            let _ = errorpb::Error::decode(bytes.as_slice());
        }

        #[test]
        fn row_round_trips(
            start_ts: u64, commit_ts: u64, ty in 0i32..6, op in 0i32..3,
            key in proptest::collection::vec(any::<u8>(), 0..16),
            value in proptest::collection::vec(any::<u8>(), 0..16),
            txn_source: u64, generation: u64,
        ) {
            let row = Row {
                start_ts, commit_ts, r#type: ty, op_type: op, key, value,
                old_value: vec![], expire_ts_unix_secs: 0, txn_source, generation,
            };
            let bytes = row.encode_to_vec();
            prop_assert_eq!(Row::decode(bytes.as_slice()).unwrap(), row);
        }
    }
}
