//! Connection-level constants that are not part of any `.proto` file.
//!
//! Some of the protocol lives outside the message definitions: the gRPC
//! metadata header that turns on stream multiplexing for `EventFeedV2`, the
//! version string TiKV uses to enable features, how PD timestamps are composed,
//! and how large a single gRPC message may be. They are collected here so the
//! client code uses one definition of each.

/// gRPC metadata key that lists the features a client wants on
/// `EventFeedV2` (a comma-separated list). TiKV fails the stream with
/// `UNIMPLEMENTED` if the list contains a feature it does not know.
pub const EVENT_FEED_FEATURES_KEY: &str = "features";

/// The `features` value that enables stream multiplexing: resolved-ts
/// batches are grouped per `request_id`, and `Deregister` can stop one
/// request on a shared stream.
pub const STREAM_MULTIPLEXING: &str = "stream-multiplexing";

/// Value for `cdcpb::Header::ticdc_version`. TiKV parses it as semver (no
/// leading `v`) and enables batch resolved ts (>= 4.0.8) and cluster-id
/// validation (>= 5.3.0) from it; an unparsable value disables both.
pub const TICDC_VERSION: &str = "8.5.0";

/// Number of low bits of a TSO that hold the logical counter:
/// `ts = physical_ms << PHYSICAL_SHIFT_BITS | logical`.
pub const PHYSICAL_SHIFT_BITS: u32 = 18;

/// Recommended maximum gRPC message size (256 MiB) for decoding and encoding
/// on CDC and KV channels. TiKV batches up to about 6 MiB of events per
/// message, and one large row can exceed that; tonic's 4 MiB default is too
/// small.
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tso_shift_matches_known_example() {
        // physical 1_700_000_000_000 ms, logical 5 (wire.md §7).
        let ts = (1_700_000_000_000_u64 << PHYSICAL_SHIFT_BITS) | 5;
        assert_eq!(ts, 445_644_800_000_000_005);
    }

    #[test]
    fn constants_have_expected_values() {
        assert_eq!(EVENT_FEED_FEATURES_KEY, "features");
        assert_eq!(STREAM_MULTIPLEXING, "stream-multiplexing");
        assert_eq!(TICDC_VERSION, "8.5.0");
        assert_eq!(MAX_MESSAGE_SIZE, 268_435_456);
    }
}
