//! API settings. Flags win over environment variables, which win over defaults.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use ricochet_warehouse::ClickHouseConfig;

#[derive(Parser, Clone, Debug)]
#[command(name = "ricochet-api", about = "Ricochet's HTTP API: links, clients, keys, stats and the dashboard")]
pub struct ApiConfig {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address of the HTTP API (links, stats, status, dashboard, health, metrics).
    #[arg(long, env = "RICOCHET_LISTEN", default_value = "127.0.0.1:8081", global = true)]
    pub listen: SocketAddr,

    /// Kafka bootstrap servers.
    #[arg(long, env = "RICOCHET_KAFKA_BROKERS", default_value = "127.0.0.1:9092", global = true)]
    pub kafka_brokers: String,

    /// TLS and SASL to the brokers (`RICOCHET_KAFKA_SECURITY_PROTOCOL`, …).
    #[command(flatten)]
    pub kafka_security: ricochet_registry::KafkaSecurity,

    /// The aggregators' consumer group, whose members `/v1/status` reports.
    #[arg(long, env = "RICOCHET_GROUP_ID", default_value = "ricochet-aggregator", global = true)]
    pub group_id: String,

    /// The clicks topic, whose lag `/v1/status` reports.
    #[arg(long, env = "RICOCHET_CLICKS_TOPIC", default_value = "clicks", global = true)]
    pub clicks_topic: String,

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

    /// The admin API key (create links, manage clients and keys, read everything).
    /// Required; generate one with `openssl rand -hex 32`.
    #[arg(long, env = "RICOCHET_ADMIN_KEY", hide_env_values = true, global = true)]
    pub admin_key: Option<String>,

    /// Master keys for recipient tokens (`kid:hexsecret[,…]`, newest first), the same
    /// as the edges'. Used to hand each client its derived signing keys.
    #[arg(long, env = "RICOCHET_TOKEN_KEYS", hide_env_values = true, global = true)]
    pub token_keys: Option<String>,

    #[command(flatten)]
    pub clickhouse: ClickHouseConfig,

    /// Base of the tracking URLs the API hands out (the edge's public address).
    #[arg(long, env = "RICOCHET_PUBLIC_REDIRECT_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub public_redirect_url: String,

    /// Requests a second each client key may send on average; requests without
    /// a valid key are counted per client address. Past it: 429 with
    /// `Retry-After`. The admin key, `/healthz` and `/readyz` are not limited.
    /// 0: no limit.
    #[arg(long, env = "RICOCHET_API_RATE_LIMIT_PER_SEC", default_value_t = 20, global = true)]
    pub rate_limit_per_sec: u32,

    /// Requests a key (or an address) may send at once before the rate applies.
    #[arg(long, env = "RICOCHET_API_RATE_LIMIT_BURST", default_value_t = 100, global = true)]
    pub rate_limit_burst: u32,

    /// Seconds a connection may take to send a whole request head; also how
    /// long an idle kept-alive connection stays open. 0: no limit.
    #[arg(long, env = "RICOCHET_HEADER_READ_TIMEOUT_SECS", default_value_t = 30, global = true)]
    pub header_read_timeout_secs: u64,

    /// Seconds from a request's head to its answer, waiting for a slot
    /// included; past it: 503. 0: no limit.
    #[arg(long, env = "RICOCHET_REQUEST_TIMEOUT_SECS", default_value_t = 30, global = true)]
    pub request_timeout_secs: u64,

    /// Seconds a connection may go without the client taking any of its
    /// answer (pipelining requests and never reading them, or pausing an
    /// export); past it the connection is closed. 0: no limit.
    #[arg(long, env = "RICOCHET_SEND_TIMEOUT_SECS", default_value_t = 30, global = true)]
    pub send_timeout_secs: u64,

    /// Connections open at once; past it new ones wait in the kernel's queue.
    #[arg(long, env = "RICOCHET_MAX_CONNECTIONS", default_value_t = 1024, global = true)]
    pub max_connections: usize,

    /// Requests handled at once, all callers together; the others wait their turn.
    #[arg(long, env = "RICOCHET_MAX_CONCURRENT_REQUESTS", default_value_t = 256, global = true)]
    pub max_concurrent_requests: usize,

    /// Largest request body in bytes (a batch of 10,000 links is ~2.2 MB).
    #[arg(long, env = "RICOCHET_MAX_BODY_BYTES", default_value_t = 8 << 20, global = true)]
    pub max_body_bytes: usize,

    /// Seconds ClickHouse may spend on one of the API's queries
    /// (`max_execution_time`); past it the API answers 503. Every query the
    /// API sends is also `readonly = 1`; only migrations, at start, may write.
    /// 0: no limit.
    #[arg(long, env = "RICOCHET_API_CLICKHOUSE_MAX_EXECUTION_SECS", default_value_t = 10, global = true)]
    pub clickhouse_max_execution_secs: u64,

    /// Seconds ClickHouse may spend on one export (`GET …/events`), which
    /// streams for as long as the caller reads. 0: no limit.
    #[arg(long, env = "RICOCHET_API_EXPORT_MAX_EXECUTION_SECS", default_value_t = 3600, global = true)]
    pub export_max_execution_secs: u64,

    /// Exports streaming at once, all callers together; past it: 503 with
    /// `Retry-After`. An export holds a ClickHouse query and a connection for
    /// its whole length, outside `RICOCHET_MAX_CONCURRENT_REQUESTS`.
    #[arg(long, env = "RICOCHET_API_MAX_CONCURRENT_EXPORTS", default_value_t = 4, global = true)]
    pub max_concurrent_exports: usize,

    /// Compacted topic of clients' webhook endpoints (they hold signing
    /// secrets: only the API and the deliverer may read it).
    #[arg(long, env = "RICOCHET_WEBHOOKS_TOPIC", default_value = "webhooks", global = true)]
    pub webhooks_topic: String,

    /// Let webhook URLs name loopback, private and link-local addresses
    /// (receivers on a private network: the local stack, the tests). Off,
    /// such a URL is refused at registration with a 400.
    #[arg(long, env = "RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS", default_value_t = false, global = true)]
    pub webhooks_allow_private_targets: bool,
}

#[derive(Subcommand, Clone, Debug)]
pub enum Command {
    /// Serve the API (the default).
    Run,
    /// Apply the ClickHouse migrations and exit.
    Migrate,
}

impl ApiConfig {
    /// How requests are limited ([`crate::limits`]).
    pub fn http_limits(&self) -> crate::limits::HttpLimits {
        crate::limits::HttpLimits {
            rate_per_sec: self.rate_limit_per_sec,
            rate_burst: self.rate_limit_burst,
            max_concurrent_requests: self.max_concurrent_requests,
            request_timeout: match self.request_timeout_secs {
                0 => std::time::Duration::MAX,
                secs => std::time::Duration::from_secs(secs),
            },
            max_body_bytes: self.max_body_bytes,
        }
    }

    /// How connections are held (`ricochet-serve`).
    pub fn connection_limits(&self) -> ricochet_serve::Limits {
        ricochet_serve::Limits {
            header_read_timeout: (self.header_read_timeout_secs > 0)
                .then(|| std::time::Duration::from_secs(self.header_read_timeout_secs)),
            send_timeout: (self.send_timeout_secs > 0).then(|| std::time::Duration::from_secs(self.send_timeout_secs)),
            max_connections: self.max_connections,
        }
    }

    pub fn registry_topics(&self) -> ricochet_registry::RegistryTopics {
        ricochet_registry::RegistryTopics {
            links: self.links_topic.clone(),
            clients: self.clients_topic.clone(),
            counts: self.link_counts_topic.clone(),
            api_keys: self.api_keys_topic.clone(),
        }
    }
}
