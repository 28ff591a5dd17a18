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
}

#[derive(Subcommand, Clone, Debug)]
pub enum Command {
    /// Serve the API (the default).
    Run,
    /// Apply the ClickHouse migrations and exit.
    Migrate,
}

impl ApiConfig {
    pub fn registry_topics(&self) -> ricochet_registry::RegistryTopics {
        ricochet_registry::RegistryTopics {
            links: self.links_topic.clone(),
            clients: self.clients_topic.clone(),
            counts: self.link_counts_topic.clone(),
            api_keys: self.api_keys_topic.clone(),
        }
    }
}
