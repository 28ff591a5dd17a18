//! Aggregator settings. Flags win over environment variables, which win over defaults.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ricochet_warehouse::ClickHouseConfig;

use crate::pipeline::PipelineConfig;

#[derive(Parser, Clone, Debug)]
#[command(
    name = "ricochet-aggregator",
    about = "Ricochet's aggregator: clicks -> per-link rollups in ClickHouse (the API is ricochet-api)"
)]
pub struct AggregatorConfig {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address of the operations listener: `/healthz`, `/readyz`, `/metrics`
    /// and this member's `/v1/status`. The product API is `ricochet-api` (8081).
    #[arg(long, env = "RICOCHET_LISTEN", default_value = "127.0.0.1:8082", global = true)]
    pub listen: SocketAddr,

    /// Kafka bootstrap servers.
    #[arg(long, env = "RICOCHET_KAFKA_BROKERS", default_value = "127.0.0.1:9092", global = true)]
    pub kafka_brokers: String,

    /// TLS and SASL to the brokers (`RICOCHET_KAFKA_SECURITY_PROTOCOL`, …).
    #[command(flatten)]
    pub kafka_security: ricochet_registry::KafkaSecurity,

    /// Consumer group shared by every aggregator process.
    #[arg(long, env = "RICOCHET_GROUP_ID", default_value = "ricochet-aggregator", global = true)]
    pub group_id: String,

    #[arg(long, env = "RICOCHET_CLICKS_TOPIC", default_value = "clicks", global = true)]
    pub clicks_topic: String,

    /// Partitions for the clicks topic when the aggregator has to create it.
    #[arg(long, env = "RICOCHET_CLICKS_PARTITIONS", default_value_t = 12, global = true)]
    pub clicks_partitions: i32,

    #[arg(long, env = "RICOCHET_LINKS_TOPIC", default_value = "links", global = true)]
    pub links_topic: String,

    /// Compacted topic of clients' API keys (hashed).
    #[arg(long, env = "RICOCHET_API_KEYS_TOPIC", default_value = "api_keys", global = true)]
    pub api_keys_topic: String,

    /// Compacted topic of click counts for links with a click limit (aggregator → edges).
    #[arg(long, env = "RICOCHET_LINK_COUNTS_TOPIC", default_value = "link_counts", global = true)]
    pub link_counts_topic: String,

    /// Compacted topic of clients' status.
    #[arg(long, env = "RICOCHET_CLIENTS_TOPIC", default_value = "clients", global = true)]
    pub clients_topic: String,

    /// Where undecodable messages are set aside, with the reason in a header.
    #[arg(long, env = "RICOCHET_DEAD_LETTER_TOPIC", default_value = "clicks-dlq", global = true)]
    pub dead_letter_topic: String,

    /// Where every click and open is published once its verdict is final and
    /// counted (`DecidedEvent`, Avro, keyed by client id; partition N mirrors
    /// the clicks topic's partition N). Empty: not published.
    #[arg(long, env = "RICOCHET_DECIDED_TOPIC", default_value = "decided", global = true)]
    pub decided_topic: String,

    #[command(flatten)]
    pub clickhouse: ClickHouseConfig,

    /// `insert_quorum` of the rollup + positions insert in cluster mode: it
    /// succeeds only once this many replicas of the shard hold it, and
    /// positions are then read with `select_sequential_consistency=1`. Use the
    /// number of replicas per shard; 0 turns quorum writes off.
    #[arg(long, env = "RICOCHET_CLICKHOUSE_INSERT_QUORUM", default_value_t = 2, global = true)]
    pub clickhouse_insert_quorum: u64,

    /// Sharded cluster: one HTTP URL per shard (a replica of it, or a balancer
    /// over its replicas), comma-separated, in shard order. Partition `p`'s
    /// rollups, positions and raw events live on shard `p % shards`, whichever
    /// aggregator writes them. Unset: one shard, `RICOCHET_CLICKHOUSE_URL`'s.
    /// Needs `RICOCHET_CLICKHOUSE_CLUSTER`.
    #[arg(long, env = "RICOCHET_CLICKHOUSE_SHARD_URLS", value_delimiter = ',', global = true)]
    pub clickhouse_shard_urls: Vec<String>,

    /// A batch is flushed this often at the latest (milliseconds)...
    #[arg(long, env = "RICOCHET_FLUSH_INTERVAL_MS", default_value_t = 1000, global = true)]
    pub flush_interval_ms: u64,

    /// ...or as soon as it holds this many events (at most 200,000: an event
    /// makes up to four rollup rows, and one insert must stay one block of at
    /// most 1,048,576 rows, `max_insert_block_size`, which the insert pins).
    #[arg(long, env = "RICOCHET_MAX_BATCH_EVENTS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u64).range(1..=200_000), global = true)]
    pub max_batch_events: u64,

    /// `partition.assignment.strategy`: `cooperative-sticky` moves only the
    /// partitions that change owner; `range` or `roundrobin` (eager) for a
    /// broker without cooperative rebalancing.
    #[arg(long, env = "RICOCHET_ASSIGNMENT_STRATEGY", default_value = "cooperative-sticky", global = true)]
    pub assignment_strategy: String,

    /// `group.instance.id` (static membership), unique per member, e.g. the pod
    /// name: a restarted member takes its partitions back at once. Unset:
    /// dynamic membership (a crashed member's partitions move after the
    /// 10 s session timeout).
    #[arg(long, env = "RICOCHET_GROUP_INSTANCE_ID", global = true)]
    pub group_instance_id: Option<String>,

    /// How long a click waits for the recipient's other clicks (bursts,
    /// honeypot hits, one network fanning out) before its verdict is final and
    /// it is counted (milliseconds). Clicks show up in the stats this much
    /// later; events still waiting are re-read after a crash, never lost.
    #[arg(long, env = "RICOCHET_VERDICT_DELAY_MS", default_value_t = 10_000, global = true)]
    pub verdict_delay_ms: u64,

    /// How long one insert may take before its outcome counts as unknown.
    #[arg(long, env = "RICOCHET_INSERT_TIMEOUT_SECS", default_value_t = 30, global = true)]
    pub insert_timeout_secs: u64,

    /// Days raw events (`click_events`) are kept; 0 keeps them forever. Without
    /// TTL (ClickHouse 18.16) whole months are dropped once past the limit.
    #[arg(long, env = "RICOCHET_RETENTION_RAW_DAYS", default_value_t = 0, global = true)]
    pub retention_raw_days: u32,

    /// Days minute and 15-minute rollups are kept; 0 keeps them forever.
    #[arg(long, env = "RICOCHET_RETENTION_MINUTE_DAYS", default_value_t = 0, global = true)]
    pub retention_minute_days: u32,

    /// Days hour and day rollups and recipients are kept; 0 keeps them forever.
    #[arg(long, env = "RICOCHET_RETENTION_ROLLUP_DAYS", default_value_t = 0, global = true)]
    pub retention_rollup_days: u32,

    /// What counts towards a link's click limit: `human` clicks (default:
    /// scanners and scripts do not close a capped link) or `all` clicks.
    #[arg(long, env = "RICOCHET_CLICK_LIMIT_COUNTS", value_enum, default_value = "human", global = true)]
    pub click_limit_counts: crate::limits::LimitCounts,

    /// How often the retention job runs on servers without TTL (seconds).
    #[arg(long, env = "RICOCHET_RETENTION_INTERVAL_SECS", default_value_t = 3600, global = true)]
    pub retention_interval_secs: u64,

    /// How often pending recipient erasures are looked for and applied
    /// (seconds); 0 turns the job off (another deployment on the same
    /// database must then run it).
    #[arg(long, env = "RICOCHET_ERASURE_INTERVAL_SECS", default_value_t = 5, global = true)]
    pub erasure_interval_secs: u64,
}

#[derive(Subcommand, Clone, Debug)]
pub enum Command {
    /// Consume and aggregate (the default).
    Run,
    /// Apply the ClickHouse migrations and exit.
    Migrate,
}

impl AggregatorConfig {
    /// One ClickHouse client per shard, in shard order (the main server alone
    /// when no shard URLs are set).
    pub fn shard_clients(&self) -> Vec<clickhouse::Client> {
        if self.clickhouse_shard_urls.is_empty() {
            return vec![self.clickhouse.client()];
        }
        self.clickhouse_shard_urls.iter().map(|url| self.clickhouse.client_for(url)).collect()
    }

    /// The brokers and how to reach them, checked.
    pub fn kafka(&self) -> Result<ricochet_registry::KafkaConnection, ricochet_registry::KafkaSecurityError> {
        ricochet_registry::KafkaConnection::new(&self.kafka_brokers, &self.kafka_security)
    }

    pub fn registry_topics(&self) -> ricochet_registry::RegistryTopics {
        ricochet_registry::RegistryTopics {
            links: self.links_topic.clone(),
            clients: self.clients_topic.clone(),
            counts: self.link_counts_topic.clone(),
            api_keys: self.api_keys_topic.clone(),
        }
    }

    pub fn retention(&self) -> crate::retention::RetentionPolicy {
        crate::retention::RetentionPolicy {
            raw_days: self.retention_raw_days,
            fine_rollup_days: self.retention_minute_days,
            rollup_days: self.retention_rollup_days,
            interval: std::time::Duration::from_secs(self.retention_interval_secs.max(1)),
        }
    }

    pub fn pipeline(&self, kafka: ricochet_registry::KafkaConnection) -> PipelineConfig {
        PipelineConfig {
            kafka,
            group_id: self.group_id.clone(),
            topic: self.clicks_topic.clone(),
            dead_letter_topic: self.dead_letter_topic.clone(),
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            max_batch_events: self.max_batch_events as usize,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            assignment_strategy: self.assignment_strategy.clone(),
            group_instance_id: self.group_instance_id.clone(),
            verdict_delay: Duration::from_millis(self.verdict_delay_ms),
            decided_topic: self.decided_topic(),
        }
    }

    /// The decided-events topic, `None` when it is turned off (set empty).
    pub fn decided_topic(&self) -> Option<String> {
        (!self.decided_topic.is_empty()).then(|| self.decided_topic.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decided_topic_is_on_by_default_and_off_when_set_empty() {
        let on = AggregatorConfig::try_parse_from(["ricochet-aggregator"]).unwrap();
        assert_eq!(on.decided_topic().as_deref(), Some("decided"));
        let off = AggregatorConfig::try_parse_from(["ricochet-aggregator", "--decided-topic", ""]).unwrap();
        assert_eq!(off.decided_topic(), None);
    }
}
