//! `GET /v1/status`: how far behind Kafka the aggregators are, across every
//! aggregator process, as seen from outside them.
//!
//! The API does not ask the aggregators: it reads what they store. Each flush
//! writes the Kafka positions it covers into ClickHouse in the same insert as
//! the rollups (`ricochet_warehouse::positions`), so the stored position of a
//! partition is exactly what the stats already include, whichever member wrote
//! it, and stays right with 0, 1 or N aggregators, across rebalances and
//! crashes. Asking the members instead would need a registry of their
//! addresses and would report nothing for partitions between owners.
//!
//! - **lag** of a partition: the topic's high watermark (asked of the broker)
//!   minus the stored position; a partition never stored counts from its low
//!   watermark.
//! - **freshness**: now minus the newest event time stored in `click_events`
//!   (within the last week, so the query prunes old months; `null` otherwise).
//! - **aggregators**: the members of the consumer group, from the broker's
//!   group list; `0` with `running: false` says that nobody is consuming, so
//!   the lag will only grow.
//!
//! Only the admin key may ask, and the answer is cached for [`FRESHNESS`]
//! (concurrent calls coalesced), so polling it costs the broker and
//! ClickHouse one computation every 2 s at most.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

use crate::error::ApiError;

/// Freshness looks at events stored with an event time at most this old; older
/// than that it reads `null`, which says the same: nothing recent is stored.
const FRESHNESS_WINDOW_DAYS: u32 = 7;

/// How old an answer of `/v1/status` may be: calls within it share one
/// computation (broker round trips and a ClickHouse scan).
pub const FRESHNESS: Duration = Duration::from_secs(2);

/// How long one broker request may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of the broker outside the group, to read watermarks and members.
pub struct ClusterStatus {
    consumer: Arc<BaseConsumer>,
    topic: String,
    group_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartitionReport {
    pub partition: i32,
    /// The next offset not yet stored in ClickHouse; `null` before the first flush ever.
    pub stored_position: Option<i64>,
    pub high_watermark: i64,
    pub lag: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Aggregators {
    /// Members of the consumer group right now.
    pub members: usize,
    /// `false` when no aggregator is consuming: the lag only grows.
    pub running: bool,
    /// The group's state as the broker reports it (`Stable`, `Empty`, `Dead`, …).
    pub group_state: String,
}

/// The body of `GET /v1/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusReport {
    pub topic: String,
    pub aggregators: Aggregators,
    /// Every partition of the topic.
    pub partitions: Vec<PartitionReport>,
    /// Sum of the partition lags.
    pub lag: i64,
    pub newest_applied_event_time: Option<String>,
    pub freshness_seconds: Option<f64>,
    /// What needs an operator, e.g. that no aggregator is running; empty when all is well.
    pub warnings: Vec<String>,
}

impl ClusterStatus {
    pub fn new(
        kafka: &ricochet_registry::KafkaConnection,
        topic: &str,
        group_id: &str,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = kafka.client_config().create()?;
        Ok(ClusterStatus { consumer: Arc::new(consumer), topic: topic.to_owned(), group_id: group_id.to_owned() })
    }

    /// Asks the broker for every partition's watermarks and the group's members.
    async fn broker_view(&self) -> Result<(Vec<(i32, i64, i64)>, Aggregators), ApiError> {
        let (consumer, topic, group) = (self.consumer.clone(), self.topic.clone(), self.group_id.clone());
        tokio::task::spawn_blocking(move || {
            let kafka = |e: rdkafka::error::KafkaError| ApiError::Kafka(e.to_string());
            let metadata = consumer.fetch_metadata(Some(&topic), BROKER_TIMEOUT).map_err(kafka)?;
            let mut partitions = Vec::new();
            for t in metadata.topics().iter().filter(|t| t.name() == topic) {
                for p in t.partitions() {
                    let (low, high) = consumer.fetch_watermarks(&topic, p.id(), BROKER_TIMEOUT).map_err(kafka)?;
                    partitions.push((p.id(), low, high));
                }
            }
            partitions.sort_unstable();
            let groups = consumer.fetch_group_list(Some(&group), BROKER_TIMEOUT).map_err(kafka)?;
            let info = groups.groups().iter().find(|g| g.name() == group);
            let members = info.map_or(0, |g| g.members().len());
            let group_state = info.map_or_else(|| "Dead".to_owned(), |g| g.state().to_owned());
            Ok((partitions, Aggregators { members, running: members > 0, group_state }))
        })
        .await
        .map_err(|e| ApiError::Kafka(format!("the broker request did not finish: {e}")))?
    }

    pub async fn report(&self, clickhouse: &clickhouse::Client) -> Result<StatusReport, ApiError> {
        let store = |e: clickhouse::error::Error| ApiError::Store(e.to_string());
        let stored: HashMap<i32, i64> =
            ricochet_warehouse::positions::read(clickhouse, &self.topic).await.map_err(store)?;
        let newest_ms = crate::stats::newest_event_ms(clickhouse, FRESHNESS_WINDOW_DAYS).await.map_err(store)?;
        let (watermarks, aggregators) = self.broker_view().await?;
        let partitions: Vec<PartitionReport> = watermarks
            .into_iter()
            .map(|(partition, low, high)| {
                let stored_position = stored.get(&partition).copied();
                PartitionReport {
                    partition,
                    stored_position,
                    high_watermark: high,
                    lag: (high - stored_position.unwrap_or(low)).max(0),
                }
            })
            .collect();
        let mut warnings = Vec::new();
        if !aggregators.running {
            warnings.push(format!(
                "no aggregator is running (consumer group {:?} has no members): clicks wait in Kafka \
                 and the lag grows until one starts",
                self.group_id
            ));
        }
        if partitions.is_empty() {
            warnings
                .push(format!("the topic {:?} does not exist yet: no edge or aggregator has created it", self.topic));
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Ok(StatusReport {
            topic: self.topic.clone(),
            lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
            newest_applied_event_time: newest_ms.map(rfc3339),
            freshness_seconds: newest_ms.map(|ms| (now_ms - ms) as f64 / 1000.0),
            warnings,
            aggregators,
        })
    }
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}
