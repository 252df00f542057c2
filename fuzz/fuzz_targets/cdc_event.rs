//! `cdcpb::ChangeDataEvent` from arbitrary bytes (prost), its rows fed to the matcher.
//!
//! The bytes are decoded as one server-stream message, as the feed receives it. Every event's
//! entries go to a matcher for its region (created at checkpoint 0 on first sight), resolved
//! ts (per event and batched) go to the regions they name. Properties:
//! * decoding never panics, and a decoded message re-encodes to bytes that decode to an equal
//!   message (prost's encoding is canonical on its own output);
//! * the matchers never panic, and what they emit satisfies the same checks as the `matcher`
//!   target (commit ts above the resolved ts in force, values from the input, ...).
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tidal_fuzz::{MatcherOracle, check_matcher_state};
use tidal_ingest::feed::matcher::Matcher;
use tidal_model::Ts;
use tidal_proto::cdcpb::ChangeDataEvent;
use tidal_proto::cdcpb::event::Event as EventKind;

/// Regions are created on first sight; bound their number so one input cannot allocate without
/// limit (the real feed only knows regions it subscribed).
const MAX_REGIONS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = ChangeDataEvent::decode(data) else {
        return;
    };
    let enc = msg.encode_to_vec();
    let again = ChangeDataEvent::decode(enc.as_slice()).expect("prost re-decodes its own output");
    assert_eq!(again, msg, "prost round trip");

    let mut regions: HashMap<u64, (Matcher, MatcherOracle, bool)> = HashMap::new();
    for ev in msg.events {
        if !regions.contains_key(&ev.region_id) && regions.len() >= MAX_REGIONS {
            continue;
        }
        let (m, oracle, failed) = regions.entry(ev.region_id).or_insert_with(|| {
            (
                Matcher::new(ev.region_id, Ts(0)),
                MatcherOracle::default(),
                false,
            )
        });
        if *failed {
            continue;
        }
        match ev.event {
            Some(EventKind::Entries(entries)) => {
                let mut out = Vec::new();
                for row in entries.entries {
                    let resolved_before = m.resolved_ts();
                    oracle.observe(&row);
                    out.clear();
                    let res = m.process(row, &mut out);
                    oracle.check_emitted(m, resolved_before, &out);
                    check_matcher_state(m, resolved_before);
                    if res.is_err() {
                        *failed = true;
                        break;
                    }
                }
            }
            Some(EventKind::ResolvedTs(ts)) => {
                let before = m.resolved_ts();
                m.on_resolved(Ts(ts));
                check_matcher_state(m, before);
            }
            _ => {}
        }
    }
    if let Some(rts) = msg.resolved_ts {
        for id in rts.regions {
            if let Some((m, _, false)) = regions.get_mut(&id) {
                let before = m.resolved_ts();
                m.on_resolved(Ts(rts.ts));
                check_matcher_state(m, before);
            }
        }
    }
});
