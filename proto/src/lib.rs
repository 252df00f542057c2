//! Protobuf messages and gRPC stubs, wire-compatible with kvproto.
#![deny(missing_docs)]
