//! The control plane's HTTP API bodies and the `/synced` decision.
//!
//! Byte 0 picks what the rest is. Properties beyond "no panic":
//! * every request body that deserializes serializes and deserializes back to an equal value
//!   (`ChangefeedConfig`, `ResumeChangefeedConfig`, `LogLevelReq`, `RedactModeReq`);
//! * a replica config accepted in API form (`ReplicaConfig::from_api_json`) converts back to API
//!   form and is accepted again as an equal config (key renaming and Go durations are stable);
//! * `synced::decide` agrees with the rule it documents (TiCDC's), evaluated here independently
//!   with saturating arithmetic, for arbitrary watermarks, clock and intervals; its answer is
//!   one of the three documented messages and `synced` only with "finished".
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use tidal_control::api::models::{
    ChangefeedConfig, LogLevelReq, RedactModeReq, ResumeChangefeedConfig,
};
use tidal_control::api::synced::{
    INFO_CHECK_PD_TIKV, INFO_FINISHED, INFO_NOT_FINISHED, SyncedConfig, SyncedInputs, decide,
};
use tidal_control::meta::changefeed::ReplicaConfig;
use tidal_model::Ts;

fn body_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(bytes).ok()?;
    let enc = serde_json::to_vec(&v).expect("a parsed body serializes");
    let back: T = serde_json::from_slice(&enc).expect("a serialized body re-parses");
    assert_eq!(back, v, "API body round trip");
    Some(v)
}

fn replica_round_trip(v: serde_json::Value) {
    let Ok(cfg) = ReplicaConfig::from_api_json(v) else {
        return;
    };
    let api = cfg
        .to_api_json()
        .expect("an accepted replica config has an API form");
    let back = ReplicaConfig::from_api_json(api.clone())
        .unwrap_or_else(|e| panic!("API form {api} of an accepted config is refused: {e}"));
    assert_eq!(back, cfg, "replica config API round trip");
    let _ = cfg.memory_quota();
    let _ = cfg.filter_rules();
    let _ = SyncedConfig::from_replica_config(&cfg);
}

fn phys(ts: u64) -> i64 {
    i64::try_from(Ts(ts).physical_ms()).unwrap_or(i64::MAX)
}

#[derive(Debug, Arbitrary)]
struct Synced {
    checkpoint_ts: u64,
    last_synced_ts: u64,
    puller_resolved_ts: u64,
    now_ms: i64,
    check_interval: i64,
    checkpoint_interval: i64,
}

fn synced(s: Synced) {
    let inputs = SyncedInputs {
        checkpoint_ts: s.checkpoint_ts,
        last_synced_ts: s.last_synced_ts,
        puller_resolved_ts: s.puller_resolved_ts,
    };
    let config = SyncedConfig {
        synced_check_interval: s.check_interval,
        checkpoint_interval: s.checkpoint_interval,
    };
    let got = decide(&inputs, s.now_ms, config);

    // The documented rule, evaluated independently.
    let (si, ci) = if s.check_interval == 0 || s.checkpoint_interval == 0 {
        (300i64, 15i64)
    } else {
        (s.check_interval, s.checkpoint_interval)
    };
    let (s_ms, c_ms) = (si.saturating_mul(1000), ci.saturating_mul(1000));
    let quiet = s.now_ms.saturating_sub(phys(s.last_synced_ts)) > s_ms;
    let lag_ok = s.now_ms.saturating_sub(phys(s.checkpoint_ts)) < c_ms;
    let want = if quiet && lag_ok {
        (true, INFO_FINISHED)
    } else if quiet && phys(s.puller_resolved_ts).saturating_sub(phys(s.checkpoint_ts)) < c_ms {
        (false, INFO_CHECK_PD_TIKV)
    } else {
        (false, INFO_NOT_FINISHED)
    };
    assert_eq!((got.synced, got.info.as_str()), want, "decide({s:?})");
    for t in [
        &got.sink_checkpoint_ts,
        &got.puller_resolved_ts,
        &got.last_synced_ts,
        &got.now_ts,
    ] {
        assert!(!t.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 6 {
        0 => {
            if let Some(cfg) = body_round_trip::<ChangefeedConfig>(rest)
                && let Some(rc) = cfg.replica_config
            {
                replica_round_trip(rc);
            }
        }
        1 => {
            let _ = body_round_trip::<ResumeChangefeedConfig>(rest);
        }
        2 => {
            let _ = body_round_trip::<LogLevelReq>(rest);
            let _ = body_round_trip::<RedactModeReq>(rest);
        }
        3 | 4 => {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) {
                replica_round_trip(v);
            }
        }
        _ => {
            if let Ok(s) = Synced::arbitrary_take_rest(Unstructured::new(rest)) {
                synced(s);
            }
        }
    }
});
