//! The per-region transaction matcher, driven by an arbitrary sequence of TiKV CDC rows.
//!
//! The input is decoded (with `arbitrary`) into a checkpoint and a list of operations over small
//! key and timestamp domains, so prewrites, commits and rollbacks of the same transaction
//! actually meet. Each operation becomes a `cdcpb` row (or a resolved ts) given to one
//! `Matcher`, exactly as the feed does. Checked after every step (see `MatcherOracle`):
//! * the matcher never panics; an error ends the run, as it ends the subscription;
//! * every emitted row has a commit ts above the checkpoint and above the resolved ts in force,
//!   a PUT/DELETE op, this region's id, and a key, start ts, commit ts and value that the input
//!   actually carried for that transaction;
//! * the resolved ts never goes back and only moves once initialized;
//! * the cache accounting returns to zero when nothing is cached.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tidal_fuzz::{MatcherOracle, check_matcher_state, small_key};
use tidal_ingest::feed::matcher::Matcher;
use tidal_model::Ts;
use tidal_proto::cdcpb::event::{LogType, Row};

#[derive(Debug, Arbitrary)]
enum Op {
    Prewrite {
        key: u8,
        start: u8,
        op: u8,
        value: u8,
        generation: u8,
    },
    Commit {
        key: u8,
        start: u8,
        commit: u8,
        op: u8,
        value: u8,
    },
    Rollback {
        key: u8,
        start: u8,
    },
    Committed {
        key: u8,
        start: u8,
        commit: u8,
        op: u8,
        value: u8,
    },
    Initialized,
    Resolved {
        ts: u8,
    },
    /// A row type this client does not know (skipped by the matcher).
    Other {
        r#type: i32,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    checkpoint: u8,
    ops: Vec<Op>,
}

/// Keys 0..8 so transactions collide.
fn key(k: u8) -> Vec<u8> {
    small_key(k % 8)
}

/// Op types 0..4: UNKNOWN, PUT, DELETE and one out of range.
fn op_type(op: u8) -> i32 {
    i32::from(op % 4)
}

/// Values: empty (a fake prewrite / commit without inline value) or a short tag.
fn value(v: u8) -> Vec<u8> {
    if v % 4 == 0 {
        Vec::new()
    } else {
        vec![v; usize::from(v % 5)]
    }
}

fn ts(t: u8) -> u64 {
    u64::from(t % 64)
}

fn row(t: LogType, key: u8, start: u8, commit: u64, op: u8, v: u8) -> Row {
    Row {
        start_ts: ts(start),
        commit_ts: commit,
        r#type: t as i32,
        op_type: op_type(op),
        key: self::key(key),
        value: value(v),
        old_value: if v & 0x80 != 0 {
            vec![1, 2, 3]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

fuzz_target!(|input: Input| {
    let mut m = Matcher::new(7, Ts(ts(input.checkpoint)));
    let mut oracle = MatcherOracle::default();
    let mut out = Vec::new();
    for op in input.ops {
        let resolved_before = m.resolved_ts();
        let r = match op {
            Op::Prewrite {
                key,
                start,
                op,
                value,
                generation,
            } => {
                let mut r = row(LogType::Prewrite, key, start, 0, op, value);
                r.generation = u64::from(generation % 3);
                r
            }
            Op::Commit {
                key,
                start,
                commit,
                op,
                value,
            } => row(LogType::Commit, key, start, ts(commit), op, value),
            Op::Rollback { key, start } => row(LogType::Rollback, key, start, 0, 0, 0),
            Op::Committed {
                key,
                start,
                commit,
                op,
                value,
            } => row(LogType::Committed, key, start, ts(commit), op, value),
            Op::Initialized => Row {
                r#type: LogType::Initialized as i32,
                ..Default::default()
            },
            Op::Resolved { ts: t } => {
                let was_init = m.is_initialized();
                let accepted = m.on_resolved(Ts(ts(t)));
                assert_eq!(
                    accepted,
                    was_init && Ts(ts(t)) > resolved_before,
                    "resolved ts accepted wrongly"
                );
                if accepted {
                    assert_eq!(m.resolved_ts(), Ts(ts(t)));
                } else {
                    assert_eq!(m.resolved_ts(), resolved_before);
                }
                check_matcher_state(&m, resolved_before);
                continue;
            }
            Op::Other { r#type } => Row {
                r#type: r#type.saturating_add(6),
                ..Default::default()
            },
        };
        oracle.observe(&r);
        out.clear();
        let res = m.process(r, &mut out);
        oracle.check_emitted(&m, resolved_before, &out);
        check_matcher_state(&m, resolved_before);
        if res.is_err() {
            // The feed drops the matcher and re-subscribes the region.
            return;
        }
    }
});
