//! Edge settings. Flags win over environment variables, which win over defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ricochet_ingest::PublisherConfig;
use ricochet_registry::{RegistryTopics, SnapshotConfig};

use crate::click::TrustedProxies;

#[derive(Parser, Clone, Debug)]
#[command(name = "ricochet-redirect", about = "Ricochet's redirect edge: tracking link -> 302, click -> Kafka")]
pub struct RedirectConfig {
    /// Address to serve tracking links on (and `/healthz`, `/readyz` for load balancers).
    #[arg(long, env = "RICOCHET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The operations listener: `/metrics`, `/healthz` and `/readyz`, for
    /// operators and their scrapers only. Keep it off the internet.
    #[arg(long, env = "RICOCHET_OPS_LISTEN", default_value = "127.0.0.1:9090")]
    pub ops_listen: SocketAddr,

    /// Seconds a connection may go without the client taking any of its
    /// answer (pipelining requests and never reading them, or pausing an
    /// export); past it the connection is closed. 0: no limit.
    #[arg(long, env = "RICOCHET_SEND_TIMEOUT_SECS", default_value_t = 30)]
    pub send_timeout_secs: u64,

    /// Connections open at once on the public port. Past it the edge stops
    /// accepting and new connections wait in the kernel's queue. HTTP/1.1
    /// serves one request at a time on a connection and the edge answers from
    /// memory, so this also caps the requests in flight.
    #[arg(long, env = "RICOCHET_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// This edge's id, stamped on every click event. Defaults to the host name.
    #[arg(long, env = "RICOCHET_NODE_ID")]
    pub node_id: Option<String>,

    /// Compacted topic holding the link registry.
    #[arg(long, env = "RICOCHET_LINKS_TOPIC", default_value = "links")]
    pub links_topic: String,

    /// Compacted topic of clients' API keys (hashed).
    #[arg(long, env = "RICOCHET_API_KEYS_TOPIC", default_value = "api_keys")]
    pub api_keys_topic: String,

    /// Compacted topic of click counts for links with a click limit (aggregator → edges).
    #[arg(long, env = "RICOCHET_LINK_COUNTS_TOPIC", default_value = "link_counts")]
    pub link_counts_topic: String,

    /// Compacted topic holding clients' status (pause, fallback URL, hot spread).
    #[arg(long, env = "RICOCHET_CLIENTS_TOPIC", default_value = "clients")]
    pub clients_topic: String,

    /// Master keys for recipient tokens, newest first: `kid:hexsecret[,kid:hexsecret…]`
    /// (secrets of at least 32 bytes). Unset: tokens are not checked and every
    /// token-carrying click is redirected but flagged invalid.
    #[arg(long, env = "RICOCHET_TOKEN_KEYS", hide_env_values = true)]
    pub token_keys: Option<String>,

    /// Partitions for the clicks topic when the edge has to create it.
    #[arg(long, env = "RICOCHET_CLICKS_PARTITIONS", default_value_t = 12)]
    pub clicks_partitions: i32,

    /// Proxies in front of the edge, as CIDRs (`127.0.0.0/8,10.0.0.0/8`). For a
    /// request from one of them the client is the right-most `X-Forwarded-For`
    /// entry that is not itself a trusted proxy; what the client wrote further
    /// left is ignored. Unset: the peer is the client and the header is ignored.
    #[arg(long, env = "RICOCHET_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Deprecated, use `RICOCHET_TRUSTED_PROXIES`: believe one hop of
    /// `X-Forwarded-For` (its right-most entry) from any peer.
    #[arg(long, env = "RICOCHET_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,

    /// The edge's local registry snapshot, so that a restart resumes from it
    /// instead of reading every link again. Default: `registry.snapshot` in the
    /// spool directory. Checked against the broker at start; a bad one is replaced.
    #[arg(long, env = "RICOCHET_REGISTRY_SNAPSHOT")]
    pub registry_snapshot: Option<PathBuf>,

    /// Seconds between snapshots while the registry changes (each one writes
    /// ~90 bytes per link); 0: only at graceful shutdown.
    #[arg(long, env = "RICOCHET_REGISTRY_SNAPSHOT_SECS", default_value_t = 300)]
    pub registry_snapshot_secs: u64,

    /// Seconds a connection may take to send a whole request head. On a
    /// kept-alive connection the clock starts when the previous response is
    /// sent, so this also closes idle connections: it is longer than the usual
    /// load-balancer idle timeout (60 s), so that the balancer, not the edge,
    /// closes a pooled connection. 0: no limit.
    #[arg(long, env = "RICOCHET_HEADER_READ_TIMEOUT_SECS", default_value_t = 75)]
    pub header_read_timeout_secs: u64,

    /// Seconds a graceful shutdown keeps forwarding the spool to the broker. What is
    /// still unacknowledged then stays in the spool and is sent at the next start.
    #[arg(long, env = "RICOCHET_SHUTDOWN_FLUSH_SECS", default_value_t = 30)]
    pub shutdown_flush_secs: u64,

    #[command(flatten)]
    pub kafka: PublisherConfig,
}

impl RedirectConfig {
    pub fn registry_topics(&self) -> RegistryTopics {
        RegistryTopics {
            links: self.links_topic.clone(),
            clients: self.clients_topic.clone(),
            counts: self.link_counts_topic.clone(),
            api_keys: self.api_keys_topic.clone(),
        }
    }

    pub fn trusted_proxies(&self) -> TrustedProxies {
        let proxies = TrustedProxies::new(self.trusted_proxies.clone());
        if self.trust_forwarded_for {
            proxies.with_any_peer()
        } else {
            proxies
        }
    }

    pub fn snapshot(&self) -> SnapshotConfig {
        SnapshotConfig {
            path: self.registry_snapshot.clone().unwrap_or_else(|| self.kafka.spool.dir.join("registry.snapshot")),
            interval: (self.registry_snapshot_secs > 0).then(|| Duration::from_secs(self.registry_snapshot_secs)),
        }
    }

    /// How the public port holds its connections.
    pub fn limits(&self) -> ricochet_serve::Limits {
        ricochet_serve::Limits {
            header_read_timeout: (self.header_read_timeout_secs > 0)
                .then(|| Duration::from_secs(self.header_read_timeout_secs)),
            send_timeout: (self.send_timeout_secs > 0).then(|| Duration::from_secs(self.send_timeout_secs)),
            max_connections: self.max_connections,
        }
    }

    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "edge".into())
        })
    }
}
