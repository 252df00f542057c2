//! `GET /api/v2/changefeeds/{id}/synced`: "has everything upstream committed so far reached the
//! sink?" — TiCDC's decision (ticdc.md §2.9), reproduced exactly, as a pure function.
//!
//! The answer is a heuristic on three times and PD's clock: when the sink last received data
//! (`LastSyncedTs`), how far the sink checkpoint is, and how far the puller's resolved ts is.
//! Scripts compare the `info` strings, so they are TiCDC's verbatim. Keeping the decision free
//! of I/O ([`decide`] takes "now" as an argument) makes every branch testable with a
//! controllable clock.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidal_model::Ts;

use crate::meta::ReplicaConfig;

/// Default `synced_check_interval`, seconds.
pub const DEFAULT_SYNCED_CHECK_INTERVAL: i64 = 300;
/// Default `checkpoint_interval`, seconds.
pub const DEFAULT_CHECKPOINT_INTERVAL: i64 = 15;

/// `info` when the data is synced.
pub const INFO_FINISHED: &str = "The data syncing is finished";
/// `info` when data is still flowing or the sink lags the puller.
pub const INFO_NOT_FINISHED: &str = "The data syncing is not finished, please wait";
/// `info` when nothing was written for a while but the checkpoint lags and the puller's resolved
/// ts is stuck near it (an upstream problem, or as synced as it can get in a disaster).
pub const INFO_CHECK_PD_TIKV: &str = "Please check whether PD is online and TiKV Regions are all available. If PD is offline or some TiKV regions are not available, it means that the data syncing process is complete. If the gap is large, such as a few minutes, it means that some regions in TiKV are unavailable. Otherwise, if the gap is small and PD is online, it means the data syncing is incomplete, so please wait";

/// The watermarks the decision looks at (all TSOs; 0 = never reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncedInputs {
    /// The changefeed checkpoint.
    pub checkpoint_ts: u64,
    /// The largest commit ts durably written to the sink.
    pub last_synced_ts: u64,
    /// The puller's (source) resolved ts.
    pub puller_resolved_ts: u64,
}

/// `synced_status` of the replica config, in seconds, as configured (0 = unset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncedConfig {
    /// Minimum quiet time since the last sink write.
    pub synced_check_interval: i64,
    /// Maximum checkpoint lag.
    pub checkpoint_interval: i64,
}

impl SyncedConfig {
    /// The configured values, from the stored replica config (`synced-status` section).
    pub fn from_replica_config(cfg: &ReplicaConfig) -> Self {
        let section = cfg.extra.get("synced-status");
        let get = |k: &str| {
            section
                .and_then(|s| s.get(k))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        SyncedConfig {
            synced_check_interval: get("synced-check-interval"),
            checkpoint_interval: get("checkpoint-interval"),
        }
    }

    /// The values used: if EITHER is 0, BOTH become the defaults (300 s, 15 s), as TiCDC does.
    pub fn effective(self) -> (i64, i64) {
        if self.synced_check_interval == 0 || self.checkpoint_interval == 0 {
            (DEFAULT_SYNCED_CHECK_INTERVAL, DEFAULT_CHECKPOINT_INTERVAL)
        } else {
            (self.synced_check_interval, self.checkpoint_interval)
        }
    }
}

/// The `/synced` response (TiCDC's `SyncedStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedStatus {
    /// Whether the data is synced.
    pub synced: bool,
    /// The checkpoint, as a JSON time.
    pub sink_checkpoint_ts: String,
    /// The puller's resolved ts, as a JSON time.
    pub puller_resolved_ts: String,
    /// The last synced ts, as a JSON time.
    pub last_synced_ts: String,
    /// PD's "now", truncated to whole seconds, as a JSON time.
    pub now_ts: String,
    /// One of [`INFO_FINISHED`], [`INFO_NOT_FINISHED`], [`INFO_CHECK_PD_TIKV`].
    pub info: String,
}

/// TiCDC's `JSONTime` text (`"2006-01-02 15:04:05.000"`) of Unix milliseconds, in UTC. Negative
/// inputs clamp to the epoch.
pub fn json_time_ms(ms: i64) -> String {
    Ts::from_unix_millis(ms.max(0).unsigned_abs()).to_string()
}

/// TiCDC's `JSONTime` text of a TSO's physical time (`0` → `"1970-01-01 00:00:00.000"`).
pub fn json_time_ts(ts: u64) -> String {
    Ts(ts).to_string()
}

fn phys(ts: u64) -> i64 {
    // Physical parts are below 2^46.
    i64::try_from(Ts(ts).physical_ms()).unwrap_or(i64::MAX)
}

/// Decides the synced status at PD time `now_pd_ms` (Unix milliseconds), exactly as TiCDC:
///
/// ```text
/// if now - lastSynced > S*1000 && now - ckpt < C*1000  → synced, "finished"
/// elif now - lastSynced > S*1000:
///     if resolved - ckpt < C*1000                      → not synced, check PD/TiKV
///     else                                             → not synced, "not finished"
/// else                                                 → not synced, "not finished"
/// ```
///
/// with signed millisecond arithmetic (saturating instead of wrapping at the extremes).
pub fn decide(inputs: &SyncedInputs, now_pd_ms: i64, config: SyncedConfig) -> SyncedStatus {
    let (s, c) = config.effective();
    let s_ms = s.saturating_mul(1000);
    let c_ms = c.saturating_mul(1000);
    let last_synced = phys(inputs.last_synced_ts);
    let ckpt = phys(inputs.checkpoint_ts);
    let resolved = phys(inputs.puller_resolved_ts);
    let quiet = now_pd_ms.saturating_sub(last_synced) > s_ms;
    let (synced, info) = if quiet && now_pd_ms.saturating_sub(ckpt) < c_ms {
        (true, INFO_FINISHED)
    } else if quiet {
        if resolved.saturating_sub(ckpt) < c_ms {
            (false, INFO_CHECK_PD_TIKV)
        } else {
            (false, INFO_NOT_FINISHED)
        }
    } else {
        (false, INFO_NOT_FINISHED)
    };
    SyncedStatus {
        synced,
        sink_checkpoint_ts: json_time_ts(inputs.checkpoint_ts),
        puller_resolved_ts: json_time_ts(inputs.puller_resolved_ts),
        last_synced_ts: json_time_ts(inputs.last_synced_ts),
        now_ts: json_time_ms(now_pd_ms.div_euclid(1000).saturating_mul(1000)),
        info: info.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_701_357_251_000; // 2023-11-30 15:14:11 UTC

    fn ts_ms(ms: i64) -> u64 {
        Ts::from_unix_millis(ms as u64).0
    }

    fn inputs(ckpt_ago: i64, synced_ago: Option<i64>, resolved_ago: Option<i64>) -> SyncedInputs {
        SyncedInputs {
            checkpoint_ts: ts_ms(NOW - ckpt_ago),
            last_synced_ts: synced_ago.map_or(0, |a| ts_ms(NOW - a)),
            puller_resolved_ts: resolved_ago.map_or(0, |a| ts_ms(NOW - a)),
        }
    }

    #[test]
    fn json_times() {
        assert_eq!(json_time_ts(0), "1970-01-01 00:00:00.000");
        assert_eq!(json_time_ms(-5), "1970-01-01 00:00:00.000");
        assert_eq!(json_time_ms(NOW + 15), "2023-11-30 15:14:11.015");
    }

    #[test]
    fn finished_example_from_docs() {
        // The documented response: checkpoint 15:14:11.015, resolved 15:14:12.215, last synced
        // 15:08:35.510, now 15:14:11(.xxx).
        let i = SyncedInputs {
            checkpoint_ts: ts_ms(NOW + 15),
            puller_resolved_ts: ts_ms(NOW + 1215),
            last_synced_ts: ts_ms(NOW - 335_490),
        };
        let s = decide(&i, NOW + 420, SyncedConfig::default());
        assert_eq!(
            s,
            SyncedStatus {
                synced: true,
                sink_checkpoint_ts: "2023-11-30 15:14:11.015".into(),
                puller_resolved_ts: "2023-11-30 15:14:12.215".into(),
                last_synced_ts: "2023-11-30 15:08:35.510".into(),
                now_ts: "2023-11-30 15:14:11.000".into(),
                info: INFO_FINISHED.into(),
            }
        );
    }

    #[test]
    fn fresh_changefeed_is_synced() {
        let s = decide(&inputs(1_000, None, None), NOW, SyncedConfig::default());
        assert!(s.synced);
        assert_eq!(s.info, INFO_FINISHED);
        assert_eq!(s.last_synced_ts, "1970-01-01 00:00:00.000");
        assert_eq!(s.puller_resolved_ts, "1970-01-01 00:00:00.000");
    }

    #[test]
    fn recent_write_is_not_finished() {
        // Written 10 s ago (< 300 s): not finished, whatever the checkpoint says.
        let s = decide(
            &inputs(0, Some(10_000), Some(0)),
            NOW,
            SyncedConfig::default(),
        );
        assert!(!s.synced);
        assert_eq!(s.info, INFO_NOT_FINISHED);
    }

    #[test]
    fn quiet_but_lagging_checkpoint_with_stuck_puller_says_check_pd() {
        // Quiet for 400 s, checkpoint 60 s behind, puller resolved only 5 s past the checkpoint.
        let s = decide(
            &inputs(60_000, Some(400_000), Some(55_000)),
            NOW,
            SyncedConfig::default(),
        );
        assert!(!s.synced);
        assert_eq!(s.info, INFO_CHECK_PD_TIKV);
    }

    #[test]
    fn quiet_but_sink_behind_puller_is_not_finished() {
        // Checkpoint 60 s behind, puller resolved 1 s ago: the sink is behind by 59 s ≥ 15 s.
        let s = decide(
            &inputs(60_000, Some(400_000), Some(1_000)),
            NOW,
            SyncedConfig::default(),
        );
        assert!(!s.synced);
        assert_eq!(s.info, INFO_NOT_FINISHED);
    }

    #[test]
    fn zero_resolved_is_negative_gap_so_check_pd() {
        let s = decide(
            &inputs(60_000, Some(400_000), None),
            NOW,
            SyncedConfig::default(),
        );
        assert_eq!(s.info, INFO_CHECK_PD_TIKV);
    }

    #[test]
    fn boundaries_are_strict() {
        let d = SyncedConfig::default();
        // now - lastSynced == S*1000 exactly is NOT quiet.
        let s = decide(&inputs(0, Some(300_000), Some(0)), NOW, d);
        assert_eq!(s.info, INFO_NOT_FINISHED);
        // one ms more is quiet
        let s = decide(&inputs(0, Some(300_001), Some(0)), NOW, d);
        assert_eq!(s.info, INFO_FINISHED);
        // now - ckpt == C*1000 exactly is NOT within the interval
        let s = decide(&inputs(15_000, Some(300_001), Some(14_000)), NOW, d);
        assert!(!s.synced);
        assert_eq!(s.info, INFO_CHECK_PD_TIKV);
        let s = decide(&inputs(14_999, Some(300_001), Some(0)), NOW, d);
        assert!(s.synced);
        // resolved - ckpt == C*1000 exactly → "not finished"
        let s = decide(&inputs(20_000, Some(300_001), Some(5_000)), NOW, d);
        assert_eq!(s.info, INFO_NOT_FINISHED);
        let s = decide(&inputs(20_000, Some(300_001), Some(5_001)), NOW, d);
        assert_eq!(s.info, INFO_CHECK_PD_TIKV);
    }

    #[test]
    fn defaults_apply_to_both_if_either_is_zero() {
        assert_eq!(SyncedConfig::default().effective(), (300, 15));
        let only_s = SyncedConfig {
            synced_check_interval: 10,
            checkpoint_interval: 0,
        };
        assert_eq!(only_s.effective(), (300, 15));
        let only_c = SyncedConfig {
            synced_check_interval: 0,
            checkpoint_interval: 100,
        };
        assert_eq!(only_c.effective(), (300, 15));
        let both = SyncedConfig {
            synced_check_interval: 10,
            checkpoint_interval: 100,
        };
        assert_eq!(both.effective(), (10, 100));
        // With S=10: quiet for 20 s counts; with the default it would not.
        let i = inputs(50_000, Some(20_000), Some(0));
        assert_eq!(decide(&i, NOW, both).info, INFO_FINISHED);
        assert_eq!(decide(&i, NOW, only_s).info, INFO_NOT_FINISHED);
    }

    #[test]
    fn now_is_truncated_to_seconds() {
        let s = decide(&inputs(0, None, None), NOW + 999, SyncedConfig::default());
        assert_eq!(s.now_ts, "2023-11-30 15:14:11.000");
    }

    #[test]
    fn config_from_stored_replica_config() {
        let mut cfg = ReplicaConfig::default();
        assert_eq!(
            SyncedConfig::from_replica_config(&cfg),
            SyncedConfig::default()
        );
        cfg.extra.insert(
            "synced-status".into(),
            serde_json::json!({"synced-check-interval": 60, "checkpoint-interval": 5}),
        );
        assert_eq!(
            SyncedConfig::from_replica_config(&cfg),
            SyncedConfig {
                synced_check_interval: 60,
                checkpoint_interval: 5
            }
        );
    }

    #[test]
    fn checkpoint_ahead_of_now_counts_as_fresh() {
        // PD clock behind the checkpoint (negative lag) is "within" the interval.
        let i = SyncedInputs {
            checkpoint_ts: ts_ms(NOW + 5_000),
            last_synced_ts: 0,
            puller_resolved_ts: 0,
        };
        assert!(decide(&i, NOW, SyncedConfig::default()).synced);
    }

    proptest! {
        #[test]
        fn never_panics(c in any::<u64>(), l in any::<u64>(), r in any::<u64>(), now in any::<i64>(),
                        s in any::<i64>(), ci in any::<i64>()) {
            let st = decide(
                &SyncedInputs { checkpoint_ts: c, last_synced_ts: l, puller_resolved_ts: r },
                now,
                SyncedConfig { synced_check_interval: s, checkpoint_interval: ci },
            );
            prop_assert!(st.synced == (st.info == INFO_FINISHED));
        }
    }
}
