//! The deliverer's settings. Flags win over environment variables, which win
//! over defaults.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ricochet_warehouse::ClickHouseConfig;

use crate::retry::RetryPolicy;
use crate::target::Policy;

#[derive(Parser, Clone, Debug)]
#[command(
    name = "ricochet-webhooks",
    about = "Ricochet's webhook deliverer: decided clicks and opens -> clients' endpoints, signed (Standard Webhooks)"
)]
pub struct WebhooksConfig {
    /// The operations listener: /healthz, /readyz, /metrics.
    #[arg(long, env = "RICOCHET_LISTEN", default_value = "127.0.0.1:8084")]
    pub listen: SocketAddr,

    #[arg(long, env = "RICOCHET_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    #[command(flatten)]
    pub kafka_security: ricochet_registry::KafkaSecurity,

    /// The aggregator's topic of decided events, read one partition per endpoint.
    #[arg(long, env = "RICOCHET_DECIDED_TOPIC", default_value = "decided")]
    pub decided_topic: String,

    /// The compacted topic of endpoints, written by the API.
    #[arg(long, env = "RICOCHET_WEBHOOKS_TOPIC", default_value = "webhooks")]
    pub webhooks_topic: String,

    /// Each endpoint's position in the decided topic is committed as the
    /// consumer group `{prefix}.{webhook_id}` (a replay's as
    /// `{prefix}.{webhook_id}.replay.{replay_id}`). The deliverers running
    /// side by side elect the active one as the group `{prefix}.active`.
    #[arg(long, env = "RICOCHET_WEBHOOKS_GROUP_PREFIX", default_value = "ricochet-webhooks")]
    pub group_prefix: String,

    #[command(flatten)]
    pub clickhouse: ClickHouseConfig,

    /// Allow targets on loopback, private and link-local networks (the local
    /// stack, tests). Off in production: those are refused at registration
    /// and at every delivery (no SSRF).
    #[arg(long, env = "RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS", default_value_t = false)]
    pub allow_private_targets: bool,

    /// How long one request may take, connection included.
    #[arg(long, env = "RICOCHET_WEBHOOKS_TIMEOUT_SECS", default_value_t = 10)]
    pub timeout_secs: u64,

    /// Requests in flight per endpoint. Its recipients are spread over 64
    /// lanes, each in order (`webhooks/src/lanes.rs`); this many lanes send
    /// at once.
    #[arg(long, env = "RICOCHET_WEBHOOKS_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,

    /// Events an endpoint holds in memory, read ahead of its deliveries;
    /// past it, its reader waits (the rest stays in Kafka).
    #[arg(long, env = "RICOCHET_WEBHOOKS_MAX_QUEUED", default_value_t = 10_000)]
    pub max_queued: usize,

    /// The first wait before a failed delivery is retried; it doubles up to
    /// `RICOCHET_WEBHOOKS_RETRY_MAX_SECS`.
    #[arg(long, env = "RICOCHET_WEBHOOKS_RETRY_FIRST_MS", default_value_t = 5_000)]
    pub retry_first_ms: u64,

    #[arg(long, env = "RICOCHET_WEBHOOKS_RETRY_MAX_SECS", default_value_t = 3_600)]
    pub retry_max_secs: u64,

    /// How long a delivery is retried, and how long an endpoint may fail
    /// throughout before it is disabled.
    #[arg(long, env = "RICOCHET_WEBHOOKS_GIVE_UP_SECS", default_value_t = 86_400)]
    pub give_up_secs: u64,

    /// Days of delivery attempts `webhook_deliveries` keeps (whole days
    /// older go, once an hour); 0 keeps every attempt.
    #[arg(long, env = "RICOCHET_WEBHOOKS_LOG_DAYS", default_value_t = 30)]
    pub log_days: u32,

    /// How long in-flight deliveries may finish at shutdown.
    #[arg(long, env = "RICOCHET_WEBHOOKS_SHUTDOWN_GRACE_SECS", default_value_t = 15)]
    pub shutdown_grace_secs: u64,
}

impl WebhooksConfig {
    pub fn kafka(&self) -> Result<ricochet_registry::KafkaConnection, ricochet_registry::KafkaSecurityError> {
        ricochet_registry::KafkaConnection::new(&self.kafka_brokers, &self.kafka_security)
    }

    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            first: Duration::from_millis(self.retry_first_ms.max(1)),
            max: Duration::from_secs(self.retry_max_secs.max(1)),
            give_up_after: Duration::from_secs(self.give_up_secs),
            ..RetryPolicy::default()
        }
    }

    pub fn policy(&self) -> Policy {
        Policy { allow_private: self.allow_private_targets }
    }
}
