//! Compiles the wire-compatible `.proto` files in `proto/` into Rust.
//!
//! Parsing is done by `protox` (pure Rust), so no system `protoc` is needed;
//! the resulting descriptor set is handed to `tonic-prost-build`, which emits
//! prost messages plus tonic clients and servers into `OUT_DIR`.

use std::error::Error;

/// Every proto file of the crate, in dependency order (order is not required
/// by protox, but it keeps the list readable).
const PROTOS: &[&str] = &[
    "proto/metapb.proto",
    "proto/errorpb.proto",
    "proto/kvrpcpb.proto",
    "proto/cdcpb.proto",
    "proto/pdpb.proto",
    "proto/tikvpb.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    for file in PROTOS {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
