//! What this member is doing, for operators: how far behind Kafka it is
//! (per-partition consumer lag) and how old the newest click it has stored is
//! (event-time freshness). Exported as gauges on `/metrics` and as JSON on
//! `GET /v1/status`.
//!
//! - **lag** of a partition: its high watermark minus the stored position (the
//!   next offset not yet in ClickHouse), so a ClickHouse outage shows as lag
//!   that grows even though the consumer is paused. A partition with no stored
//!   position yet counts from its low watermark.
//! - **freshness**: now minus the newest event time this member has stored.
//!   It grows while the pipeline is stalled, and also while no clicks arrive;
//!   read it together with the lag (zero lag: simply nothing new).
//!
//! The pipeline thread records assignments and stored positions; a small
//! thread of its own asks the broker for high watermarks once a second, so
//! the numbers stay current while the pipeline is blocked on ClickHouse. A
//! watermark is up to that second old: when the stored position has already
//! passed it, the lag reads 0 until the next refresh.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::PartitionRange;

/// How often the watermarks and the gauges are refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, Default)]
struct PartitionState {
    stored: Option<i64>,
    low: Option<i64>,
    high: Option<i64>,
}

#[derive(Debug, Default)]
struct Inner {
    partitions: BTreeMap<i32, PartitionState>,
    newest_applied_event_ms: Option<i64>,
    last_flush_ms: Option<i64>,
    paused: bool,
    pending_events: usize,
    dead_letters_unconfirmed: usize,
}

/// Shared between the pipeline thread (writer), the watermark thread and the API.
#[derive(Debug)]
pub struct PipelineStatus {
    topic: String,
    inner: Mutex<Inner>,
}

#[derive(Debug, Serialize)]
pub struct PartitionReport {
    pub partition: i32,
    /// The next offset not yet stored in ClickHouse; `null` before the first flush ever.
    pub stored_position: Option<i64>,
    pub high_watermark: Option<i64>,
    /// `null` until the broker has been asked for the watermark.
    pub lag: Option<i64>,
}

/// The body of `GET /v1/status`.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub topic: String,
    /// The partitions this member owns.
    pub partitions: Vec<PartitionReport>,
    /// Sum of the known partition lags.
    pub lag: i64,
    pub newest_applied_event_time: Option<String>,
    pub freshness_seconds: Option<f64>,
    pub last_flush: Option<String>,
    /// Consumption is paused because ClickHouse does not take the batch.
    pub paused: bool,
    /// Events held in memory, waiting to be stored.
    pub pending_events: usize,
    /// Poison messages the dead-letter topic has not acknowledged: their
    /// partitions wait (and are read again after a backoff) while the others
    /// are counted.
    pub dead_letters_unconfirmed: usize,
}

impl PipelineStatus {
    pub fn new(topic: &str) -> Arc<Self> {
        Arc::new(PipelineStatus { topic: topic.to_owned(), inner: Mutex::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn assigned(&self, partition: i32, stored: Option<i64>) {
        self.lock().partitions.insert(partition, PartitionState { stored, ..PartitionState::default() });
    }

    pub(crate) fn revoked(&self, partition: i32) {
        self.lock().partitions.remove(&partition);
    }

    pub(crate) fn revoked_all(&self) {
        self.lock().partitions.clear();
    }

    /// A batch covering `ranges`, whose newest event is `newest_event_ms`, is stored.
    pub(crate) fn stored(&self, ranges: &[PartitionRange], newest_event_ms: Option<i64>) {
        let mut inner = self.lock();
        for r in ranges {
            if let Some(p) = inner.partitions.get_mut(&r.partition) {
                p.stored = Some(p.stored.map_or(r.next, |s| s.max(r.next)));
            }
        }
        if let Some(ms) = newest_event_ms {
            inner.newest_applied_event_ms = Some(inner.newest_applied_event_ms.map_or(ms, |n| n.max(ms)));
        }
        inner.last_flush_ms = Some(unix_millis());
    }

    pub(crate) fn pending(&self, pending_events: usize, paused: bool) {
        let mut inner = self.lock();
        inner.pending_events = pending_events;
        inner.paused = paused;
    }

    pub(crate) fn dead_letters_unconfirmed(&self, n: usize) {
        self.lock().dead_letters_unconfirmed = n;
    }

    fn owned(&self) -> Vec<i32> {
        self.lock().partitions.keys().copied().collect()
    }

    fn watermarks(&self, partition: i32, low: i64, high: i64) {
        if let Some(p) = self.lock().partitions.get_mut(&partition) {
            (p.low, p.high) = (Some(low), Some(high));
        }
    }

    pub fn report(&self) -> StatusReport {
        let inner = self.lock();
        let now_ms = unix_millis();
        let partitions: Vec<PartitionReport> = inner
            .partitions
            .iter()
            .map(|(partition, p)| PartitionReport {
                partition: *partition,
                stored_position: p.stored,
                high_watermark: p.high,
                lag: p.high.zip(p.stored.or(p.low)).map(|(high, from)| (high - from).max(0)),
            })
            .collect();
        StatusReport {
            topic: self.topic.clone(),
            lag: partitions.iter().filter_map(|p| p.lag).sum(),
            partitions,
            newest_applied_event_time: inner.newest_applied_event_ms.map(rfc3339),
            freshness_seconds: inner.newest_applied_event_ms.map(|ms| (now_ms - ms) as f64 / 1000.0),
            last_flush: inner.last_flush_ms.map(rfc3339),
            paused: inner.paused,
            pending_events: inner.pending_events,
            dead_letters_unconfirmed: inner.dead_letters_unconfirmed,
        }
    }
}

/// Starts the thread that keeps watermarks and gauges current until `shutdown`.
pub fn spawn_refresher(
    kafka: &ricochet_registry::KafkaConnection,
    status: Arc<PipelineStatus>,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
    // A client of its own, outside the group: the pipeline's consumer is busy in its loop.
    let client: BaseConsumer = match kafka.client_config().create() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the watermark client; lag will not be reported");
            return None;
        }
    };
    let spawned = std::thread::Builder::new().name("status".into()).spawn(move || {
        let mut exported = BTreeSet::new();
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            for partition in status.owned() {
                match client.fetch_watermarks(&status.topic, partition, Duration::from_secs(2)) {
                    Ok((low, high)) => status.watermarks(partition, low, high),
                    Err(e) => {
                        tracing::debug!(partition, error = %e, "cannot fetch watermarks")
                    }
                }
            }
            exported = export(&status.report(), exported);
            while started.elapsed() < REFRESH_EVERY && !shutdown.is_cancelled() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the status thread");
            None
        }
    }
}

/// Sets the gauges; a partition exported before and no longer owned reads 0,
/// so a sum over members stays right. Returns the partitions exported now.
fn export(report: &StatusReport, before: BTreeSet<i32>) -> BTreeSet<i32> {
    let mut now = BTreeSet::new();
    for p in &report.partitions {
        if let Some(lag) = p.lag {
            metrics::gauge!("ricochet_aggregator_partition_lag", "partition" => p.partition.to_string())
                .set(lag as f64);
            now.insert(p.partition);
        }
    }
    for gone in before.difference(&now) {
        metrics::gauge!("ricochet_aggregator_partition_lag", "partition" => gone.to_string()).set(0.0);
    }
    if let Some(f) = report.freshness_seconds {
        metrics::gauge!("ricochet_aggregator_freshness_seconds").set(f);
    }
    now
}

/// `GET /v1/status` on the operations listener: this member only.
pub async fn serve(State(status): State<Arc<PipelineStatus>>) -> Json<StatusReport> {
    Json(status.report())
}

fn unix_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_stored_position_or_the_low_watermark() {
        let s = PipelineStatus::new("clicks");
        s.assigned(0, Some(40));
        s.assigned(1, None);
        s.assigned(2, Some(5));
        s.watermarks(0, 0, 100);
        s.watermarks(1, 10, 25);
        let r = s.report();
        let lags: Vec<_> = r.partitions.iter().map(|p| p.lag).collect();
        assert_eq!(lags, vec![Some(60), Some(15), None]);
        assert_eq!(r.lag, 75);
        s.stored(&[PartitionRange { partition: 0, first: 40, next: 100 }], Some(unix_millis() - 90_000));
        let r = s.report();
        assert_eq!(r.partitions[0].lag, Some(0));
        let f = r.freshness_seconds.unwrap();
        assert!((90.0..100.0).contains(&f), "{f}");
        s.revoked(1);
        assert_eq!(s.report().lag, 0);
    }
}
