//! Protobuf messages and gRPC stubs that speak the TiKV and PD wire protocols.
//!
//! Tidal talks to real TiKV stores and PD servers, so its messages must be
//! byte-for-byte interchangeable with the ones in `kvproto`, the repository
//! that defines those protocols. This crate keeps its own `.proto` files (in
//! `proto/`) that use the same package names, message names, nesting, field
//! numbers, enum values and service/method names as kvproto. Only the parts
//! Tidal needs are declared; a protobuf decoder skips unknown fields, so a
//! subset is still wire-compatible as long as every declared number is exact.
//! A few fields whose kvproto type lives in a package we do not vendor are
//! declared as `bytes`, which has the identical encoding for an embedded
//! message (`metapb.Region.encryption_meta`, `cdcpb.Event.Admin`).
//!
//! The files are parsed by `protox` at build time (no system `protoc`) and
//! turned into prost messages plus tonic clients and servers.
//!
//! # Modules and their kvproto origin
//!
//! | module | kvproto file | what Tidal uses it for |
//! |---|---|---|
//! | [`metapb`] | `metapb.proto` | regions, epochs, peers, stores |
//! | [`errorpb`] | `errorpb.proto` | region errors (not leader, epoch not match, ...) |
//! | [`cdcpb`] | `cdcpb.proto` | the `ChangeData` service: `EventFeed` / `EventFeedV2` |
//! | [`pdpb`] | `pdpb.proto` (subset) | members, TSO, region and store lookup, GC safe points |
//! | [`kvrpcpb`] | `kvrpcpb.proto` (subset) | snapshot reads: `Get`, `Scan`, `BatchGet`, `ExtraOp` |
//! | [`tikvpb`] | `tikvpb.proto` (subset) | the `Tikv` service with `KvGet`, `KvScan`, `KvBatchGet` |
//!
//! gRPC paths therefore match the real servers: `/cdcpb.ChangeData/EventFeedV2`,
//! `/pdpb.PD/Tso`, `/tikvpb.Tikv/KvGet`, and so on. [`features`] holds the
//! protocol constants that live outside the message definitions (the
//! `features: stream-multiplexing` header, the TSO shift, message size limits).
//!
//! # Encoded versus raw keys
//!
//! Keys appear in two forms and mixing them up silently breaks range logic:
//!
//! * **memcomparable-encoded** (TiDB `codec.EncodeBytes`): region boundaries
//!   from PD (`metapb::Region::start_key`/`end_key`, `GetRegionRequest::region_key`,
//!   `ScanRegionsRequest` keys, `pdpb::KeyRange`) and the range of a CDC
//!   subscription (`cdcpb::ChangeDataRequest::start_key`/`end_key`).
//!   Intersections of spans and regions must be computed in this space, with
//!   an empty end key meaning +infinity.
//! * **raw** user keys: `cdcpb::event::Row::key` as emitted by TiKV, and the
//!   keys of KV read requests (`kvrpcpb::GetRequest::key`, `ScanRequest`,
//!   `BatchGetRequest`), which TiKV encodes itself.
//!
//! TiKV's internal MVCC keys (encoded key plus a descending timestamp) never
//! reach a client.
#![deny(missing_docs)]

pub mod features;

/// Cluster metadata: regions, region epochs, peers and stores (`metapb`).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod metapb {
    tonic::include_proto!("metapb");
}

/// Region errors returned by TiKV (`errorpb`).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod errorpb {
    tonic::include_proto!("errorpb");
}

/// Transactional KV read messages and shared enums such as `ExtraOp`
/// (`kvrpcpb`, subset).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod kvrpcpb {
    tonic::include_proto!("kvrpcpb");
}

/// TiKV change data capture: the `ChangeData` service and its events
/// (`cdcpb`).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod cdcpb {
    tonic::include_proto!("cdcpb");
}

/// Placement Driver RPCs: members, TSO, regions, stores, GC safe points
/// (`pdpb`, subset).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod pdpb {
    tonic::include_proto!("pdpb");
}

/// The TiKV `Tikv` service with the snapshot-read methods (`tikvpb`,
/// subset).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod tikvpb {
    tonic::include_proto!("tikvpb");
}
