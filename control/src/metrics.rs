//! Prometheus metrics under TiCDC's names, so existing Grafana dashboards and alert rules work.
//!
//! TiCDC's names and labels (ticdc.md §9) are kept exactly: `ticdc_owner_*` per changefeed,
//! `ticdc_sink_*` for sink throughput and errors, `ticdc_gc_*` for the GC safe points; the
//! keyspace label is called `namespace` as in the classic kernel. Tidal adds what timely lets it
//! measure cheaply: per-span lag histograms (`tidal_span_resolved_lag_seconds`,
//! `tidal_span_checkpoint_lag_seconds`) and the per-worker span-set checksum state
//! (`tidal_span_set_checksum_state`), which says *why* a checkpoint is frozen.
//!
//! [`Metrics`] owns its own [`Registry`] (no global state, so tests and several clusters in one
//! process do not collide). The owner gauges are refreshed by a [`MetricsUpdater`] from the
//! persisted changefeeds, the [`crate::service::WatermarkSource`] and PD time; the sink and span
//! metrics are recorded by the dataflow through the helper methods.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tidal_model::Ts;

use crate::meta::FeedState;
use crate::service::{ChangefeedService, ServiceError};

/// The keyspace label (TiCDC classic kernel).
pub const KEYSPACE_LABEL: &str = "namespace";

/// The state of one worker's span-set checksum, as the `tidal_span_set_checksum_state` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumState {
    /// Not reported yet (0).
    Uninitialized,
    /// The worker hosts exactly the expected spans (1).
    Match,
    /// It does not; its watermark does not count (2).
    Mismatch,
}

impl ChecksumState {
    /// The gauge value.
    pub fn as_i64(self) -> i64 {
        match self {
            ChecksumState::Uninitialized => 0,
            ChecksumState::Match => 1,
            ChecksumState::Mismatch => 2,
        }
    }
}

/// TiCDC's `FeedState.ToInt()` (the `ticdc_owner_status` value).
pub fn state_to_int(state: FeedState) -> i64 {
    match state {
        FeedState::Normal => 0,
        FeedState::Pending => 1,
        FeedState::Failed => 2,
        FeedState::Stopped => 3,
        FeedState::Finished => 4,
        FeedState::Removed => 5,
        FeedState::Warning => 6,
        FeedState::Uninitialized => 7,
    }
}

/// The control plane's metrics and their registry. Cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `ticdc_owner_checkpoint_ts{namespace,changefeed}`: checkpoint physical ms.
    pub owner_checkpoint_ts: GaugeVec,
    /// `ticdc_owner_checkpoint_ts_lag{namespace,changefeed,keyspace_id}`: PD now − checkpoint, s.
    pub owner_checkpoint_ts_lag: GaugeVec,
    /// `ticdc_owner_resolved_ts{namespace,changefeed}`: puller resolved ts physical ms.
    pub owner_resolved_ts: GaugeVec,
    /// `ticdc_owner_resolved_ts_lag{namespace,changefeed}`: PD now − resolved ts, s.
    pub owner_resolved_ts_lag: GaugeVec,
    /// `ticdc_owner_status{namespace,changefeed,keyspace_id}`: [`state_to_int`].
    pub owner_status: IntGaugeVec,
    /// `ticdc_sink_batch_row_count{namespace,changefeed,type,keyspace_id}`: rows per batch.
    pub sink_batch_row_count: HistogramVec,
    /// `ticdc_sink_batch_write_bytes{namespace,changefeed,type}`: bytes per batch.
    pub sink_batch_write_bytes: HistogramVec,
    /// `ticdc_sink_write_bytes_total{namespace,changefeed,type}`.
    pub sink_write_bytes_total: IntCounterVec,
    /// `ticdc_sink_dml_event_count{namespace,changefeed}`.
    pub sink_dml_event_count: IntCounterVec,
    /// `ticdc_sink_execution_error{namespace,changefeed,event_type}`.
    pub sink_execution_error: IntCounterVec,
    /// `ticdc_gc_min_service_gc_safepoint`: PD's minimum service safe point, physical ms.
    pub gc_min_service_gc_safepoint: IntGauge,
    /// `ticdc_gc_cdc_gc_safepoint`: our cluster reservation, physical ms (0 = none).
    pub gc_cdc_gc_safepoint: IntGauge,
    /// `tidal_span_resolved_lag_seconds{namespace,changefeed}`: per-span resolved lag.
    pub span_resolved_lag_seconds: HistogramVec,
    /// `tidal_span_checkpoint_lag_seconds{namespace,changefeed}`: per-span checkpoint lag.
    pub span_checkpoint_lag_seconds: HistogramVec,
    /// `tidal_span_set_checksum_state{changefeed,worker}`: [`ChecksumState`].
    pub span_set_checksum_state: IntGaugeVec,
}

fn lag_buckets() -> Vec<f64> {
    vec![
        0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 300.0, 600.0, 1800.0,
        3600.0,
    ]
}

fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    // Names are static and distinct, and the registry is fresh, so this cannot fail; if it
    // ever did, the metric would simply be missing from the exposition.
    if let Err(e) = r.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "cannot register a metric");
    }
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let Ok(v) = GaugeVec::new(Opts::new(name, help), labels) else {
        unreachable_metric(name)
    };
    register(r, v)
}

fn int_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let Ok(v) = IntGaugeVec::new(Opts::new(name, help), labels) else {
        unreachable_metric(name)
    };
    register(r, v)
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let Ok(v) = IntCounterVec::new(Opts::new(name, help), labels) else {
        unreachable_metric(name)
    };
    register(r, v)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let Ok(v) = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels) else {
        unreachable_metric(name)
    };
    register(r, v)
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let Ok(v) = IntGauge::new(name, help) else {
        unreachable_metric(name)
    };
    register(r, v)
}

#[cold]
fn unreachable_metric(name: &str) -> ! {
    // Only reachable with an invalid static metric name or label set: a programming error that
    // the unit tests catch.
    panic!("invalid static metric definition {name}")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates every metric in a fresh registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let ks = KEYSPACE_LABEL;
        Metrics {
            owner_checkpoint_ts: gauge_vec(
                &r,
                "ticdc_owner_checkpoint_ts",
                "checkpoint ts of changefeeds (physical ms)",
                &[ks, "changefeed"],
            ),
            owner_checkpoint_ts_lag: gauge_vec(
                &r,
                "ticdc_owner_checkpoint_ts_lag",
                "checkpoint ts lag of changefeeds in seconds",
                &[ks, "changefeed", "keyspace_id"],
            ),
            owner_resolved_ts: gauge_vec(
                &r,
                "ticdc_owner_resolved_ts",
                "puller resolved ts of changefeeds (physical ms)",
                &[ks, "changefeed"],
            ),
            owner_resolved_ts_lag: gauge_vec(
                &r,
                "ticdc_owner_resolved_ts_lag",
                "puller resolved ts lag of changefeeds in seconds",
                &[ks, "changefeed"],
            ),
            owner_status: int_gauge_vec(
                &r,
                "ticdc_owner_status",
                "the state of changefeeds (0 normal, 1 pending, 2 failed, 3 stopped, 4 finished, \
                 5 removed, 6 warning, 7 uninitialized)",
                &[ks, "changefeed", "keyspace_id"],
            ),
            sink_batch_row_count: histogram_vec(
                &r,
                "ticdc_sink_batch_row_count",
                "rows per batch flushed to the sink",
                &[ks, "changefeed", "type", "keyspace_id"],
                prometheus::exponential_buckets(1.0, 2.0, 18).unwrap_or_default(),
            ),
            sink_batch_write_bytes: histogram_vec(
                &r,
                "ticdc_sink_batch_write_bytes",
                "bytes per batch flushed to the sink",
                &[ks, "changefeed", "type"],
                prometheus::exponential_buckets(64.0, 4.0, 14).unwrap_or_default(),
            ),
            sink_write_bytes_total: counter_vec(
                &r,
                "ticdc_sink_write_bytes_total",
                "total bytes written to the sink",
                &[ks, "changefeed", "type"],
            ),
            sink_dml_event_count: counter_vec(
                &r,
                "ticdc_sink_dml_event_count",
                "DML events written to the sink",
                &[ks, "changefeed"],
            ),
            sink_execution_error: counter_vec(
                &r,
                "ticdc_sink_execution_error",
                "sink execution errors",
                &[ks, "changefeed", "event_type"],
            ),
            gc_min_service_gc_safepoint: int_gauge(
                &r,
                "ticdc_gc_min_service_gc_safepoint",
                "PD's minimum service GC safe point (physical ms)",
            ),
            gc_cdc_gc_safepoint: int_gauge(
                &r,
                "ticdc_gc_cdc_gc_safepoint",
                "the service GC safe point held by this cluster (physical ms)",
            ),
            span_resolved_lag_seconds: histogram_vec(
                &r,
                "tidal_span_resolved_lag_seconds",
                "per-span resolved ts lag behind PD time, seconds",
                &[ks, "changefeed"],
                lag_buckets(),
            ),
            span_checkpoint_lag_seconds: histogram_vec(
                &r,
                "tidal_span_checkpoint_lag_seconds",
                "per-span checkpoint lag behind PD time, seconds",
                &[ks, "changefeed"],
                lag_buckets(),
            ),
            span_set_checksum_state: int_gauge_vec(
                &r,
                "tidal_span_set_checksum_state",
                "span-set checksum state per worker (0 uninitialized, 1 match, 2 mismatch)",
                &["changefeed", "worker"],
            ),
            registry: r,
        }
    }

    /// The registry (to add more collectors or to gather).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Records the GC safe points (physical ms).
    pub fn set_gc_safe_points(&self, min_service_ms: u64, cdc_ms: u64) {
        self.gc_min_service_gc_safepoint
            .set(i64::try_from(min_service_ms).unwrap_or(i64::MAX));
        self.gc_cdc_gc_safepoint
            .set(i64::try_from(cdc_ms).unwrap_or(i64::MAX));
    }

    /// Records `batches` batches durably written since the last call that carried `rows` rows
    /// and `bytes` bytes in all. The dataflow counts totals, not each batch, so every batch of
    /// the interval is observed at the interval's mean size (with metrics refreshed every
    /// checkpoint interval, that is a few batches at a time). Totals are exact.
    pub fn record_sink_batches(
        &self,
        keyspace: &str,
        changefeed: &str,
        sink_type: &str,
        batches: u64,
        rows: u64,
        bytes: u64,
    ) {
        if batches > 0 {
            let (mean_rows, mean_bytes) =
                (rows as f64 / batches as f64, bytes as f64 / batches as f64);
            let row_hist = self
                .sink_batch_row_count
                .with_label_values(&[keyspace, changefeed, sink_type, "0"]);
            let byte_hist = self
                .sink_batch_write_bytes
                .with_label_values(&[keyspace, changefeed, sink_type]);
            // Bounded work per tick whatever the batch count.
            for _ in 0..batches.min(1024) {
                row_hist.observe(mean_rows);
                byte_hist.observe(mean_bytes);
            }
        }
        if rows > 0 || bytes > 0 {
            self.sink_write_bytes_total
                .with_label_values(&[keyspace, changefeed, sink_type])
                .inc_by(bytes);
            self.sink_dml_event_count
                .with_label_values(&[keyspace, changefeed])
                .inc_by(rows);
        }
    }

    /// Counts one sink error for an event type (`dml`, `ddl`).
    pub fn record_sink_error(&self, keyspace: &str, changefeed: &str, event_type: &str) {
        self.sink_execution_error
            .with_label_values(&[keyspace, changefeed, event_type])
            .inc();
    }

    /// Records one span's lags (seconds) for the per-span histograms.
    pub fn observe_span_lags(
        &self,
        keyspace: &str,
        changefeed: &str,
        resolved_lag_secs: f64,
        checkpoint_lag_secs: f64,
    ) {
        self.span_resolved_lag_seconds
            .with_label_values(&[keyspace, changefeed])
            .observe(resolved_lag_secs);
        self.span_checkpoint_lag_seconds
            .with_label_values(&[keyspace, changefeed])
            .observe(checkpoint_lag_secs);
    }

    /// Sets one worker's span-set checksum state.
    pub fn set_checksum_state(&self, changefeed: &str, worker: usize, state: ChecksumState) {
        self.span_set_checksum_state
            .with_label_values(&[changefeed, worker.to_string().as_str()])
            .set(state.as_i64());
    }

    /// Withdraws one worker's checksum state series (its run ended).
    pub fn remove_checksum_state(&self, changefeed: &str, worker: usize) {
        let _ = self
            .span_set_checksum_state
            .remove_label_values(&[changefeed, worker.to_string().as_str()]);
    }

    fn drop_owner_series(&self, keyspace: &str, changefeed: &str, keyspace_id: &str) {
        let _ = self
            .owner_checkpoint_ts
            .remove_label_values(&[keyspace, changefeed]);
        let _ =
            self.owner_checkpoint_ts_lag
                .remove_label_values(&[keyspace, changefeed, keyspace_id]);
        let _ = self
            .owner_resolved_ts
            .remove_label_values(&[keyspace, changefeed]);
        let _ = self
            .owner_resolved_ts_lag
            .remove_label_values(&[keyspace, changefeed]);
        let _ = self
            .owner_status
            .remove_label_values(&[keyspace, changefeed, keyspace_id]);
    }
}

fn secs_between(now_ms: u64, ts: u64) -> f64 {
    (now_ms as f64 - Ts(ts).physical_ms() as f64) / 1000.0
}

/// Refreshes the `ticdc_owner_*` gauges from the service (persisted state + watermarks) and PD
/// time; series of changefeeds that disappeared are dropped.
#[derive(Debug)]
pub struct MetricsUpdater {
    service: Arc<ChangefeedService>,
    metrics: Metrics,
    seen: Mutex<HashSet<(String, String, String)>>,
}

impl MetricsUpdater {
    /// An updater writing into `metrics`.
    pub fn new(service: Arc<ChangefeedService>, metrics: Metrics) -> Self {
        MetricsUpdater {
            service,
            metrics,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// One refresh.
    pub async fn refresh(&self) -> Result<(), ServiceError> {
        let views = self.service.list_all().await?;
        let now_ms = Ts(self.service.tso().await?).physical_ms();
        let m = &self.metrics;
        let mut now_seen = HashSet::new();
        for v in &views {
            let ks = v.changefeed.keyspace.as_str();
            let id = v.changefeed.id.as_str();
            let ks_id = v.info.keyspace_id.to_string();
            let state = v.info.state;
            let ckpt = v.checkpoint_ts();
            m.owner_status
                .with_label_values(&[ks, id, ks_id.as_str()])
                .set(state_to_int(state));
            m.owner_checkpoint_ts
                .with_label_values(&[ks, id])
                .set(Ts(ckpt).physical_ms() as f64);
            if matches!(
                state,
                FeedState::Stopped | FeedState::Finished | FeedState::Removed
            ) {
                let _ = m
                    .owner_checkpoint_ts_lag
                    .remove_label_values(&[ks, id, ks_id.as_str()]);
            } else {
                m.owner_checkpoint_ts_lag
                    .with_label_values(&[ks, id, ks_id.as_str()])
                    .set(secs_between(now_ms, ckpt));
            }
            match v.watermarks {
                Some(w) if state.is_running() => {
                    let resolved = if w.puller_resolved_ts != 0 {
                        w.puller_resolved_ts
                    } else {
                        v.resolved_ts()
                    };
                    m.owner_resolved_ts
                        .with_label_values(&[ks, id])
                        .set(Ts(resolved).physical_ms() as f64);
                    m.owner_resolved_ts_lag
                        .with_label_values(&[ks, id])
                        .set(secs_between(now_ms, resolved));
                }
                _ => {
                    let _ = m.owner_resolved_ts.remove_label_values(&[ks, id]);
                    let _ = m.owner_resolved_ts_lag.remove_label_values(&[ks, id]);
                }
            }
            now_seen.insert((ks.to_string(), id.to_string(), ks_id));
        }
        let mut seen = self.seen.lock();
        for (ks, id, ks_id) in seen.difference(&now_seen) {
            m.drop_owner_series(ks, id, ks_id);
        }
        *seen = now_seen;
        Ok(())
    }

    /// Refreshes every `interval` until the task is aborted.
    pub fn spawn(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.refresh().await {
                    tracing::debug!(error = %e, "metrics refresh failed");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_observed_at_the_interval_mean_and_totals_are_exact() {
        let m = Metrics::new();
        m.record_sink_batches("default", "cf", "mysql", 4, 100, 8000);
        m.record_sink_batches("default", "cf", "mysql", 0, 0, 0);
        let rows = m
            .sink_batch_row_count
            .with_label_values(&["default", "cf", "mysql", "0"]);
        assert_eq!(rows.get_sample_count(), 4);
        assert_eq!(rows.get_sample_sum(), 100.0);
        let bytes = m
            .sink_batch_write_bytes
            .with_label_values(&["default", "cf", "mysql"]);
        assert_eq!(
            (bytes.get_sample_count(), bytes.get_sample_sum()),
            (4, 8000.0)
        );
        let total = m
            .sink_write_bytes_total
            .with_label_values(&["default", "cf", "mysql"]);
        assert_eq!(total.get(), 8000);
        assert_eq!(
            m.sink_dml_event_count
                .with_label_values(&["default", "cf"])
                .get(),
            100
        );
    }

    #[test]
    fn exposition_has_ticdc_names() {
        let m = Metrics::new();
        m.owner_checkpoint_ts
            .with_label_values(&["default", "cf"])
            .set(1.0);
        m.owner_checkpoint_ts_lag
            .with_label_values(&["default", "cf", "0"])
            .set(2.0);
        m.owner_resolved_ts
            .with_label_values(&["default", "cf"])
            .set(1.0);
        m.owner_resolved_ts_lag
            .with_label_values(&["default", "cf"])
            .set(1.0);
        m.owner_status
            .with_label_values(&["default", "cf", "0"])
            .set(3);
        m.record_sink_batches("default", "cf", "mysql", 1, 10, 1000);
        m.record_sink_error("default", "cf", "dml");
        m.set_gc_safe_points(5, 4);
        m.observe_span_lags("default", "cf", 0.5, 1.5);
        m.set_checksum_state("cf", 3, ChecksumState::Mismatch);
        let text = m.encode();
        for name in [
            "ticdc_owner_checkpoint_ts{",
            "ticdc_owner_checkpoint_ts_lag{",
            "ticdc_owner_resolved_ts{",
            "ticdc_owner_resolved_ts_lag{",
            "ticdc_owner_status{",
            "ticdc_sink_batch_row_count_bucket{",
            "ticdc_sink_batch_write_bytes_bucket{",
            "ticdc_sink_write_bytes_total{",
            "ticdc_sink_dml_event_count{",
            "ticdc_sink_execution_error{",
            "ticdc_gc_min_service_gc_safepoint 5",
            "ticdc_gc_cdc_gc_safepoint 4",
            "tidal_span_resolved_lag_seconds_bucket{",
            "tidal_span_checkpoint_lag_seconds_bucket{",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(
            text.contains(
                "ticdc_owner_status{changefeed=\"cf\",keyspace_id=\"0\",namespace=\"default\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("tidal_span_set_checksum_state{changefeed=\"cf\",worker=\"3\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "ticdc_sink_write_bytes_total{changefeed=\"cf\",namespace=\"default\",type=\"mysql\"} 1000"
        ));
    }

    #[test]
    fn state_ints_match_ticdc() {
        assert_eq!(state_to_int(FeedState::Normal), 0);
        assert_eq!(state_to_int(FeedState::Failed), 2);
        assert_eq!(state_to_int(FeedState::Stopped), 3);
        assert_eq!(state_to_int(FeedState::Warning), 6);
        assert_eq!(state_to_int(FeedState::Uninitialized), 7);
    }
}
