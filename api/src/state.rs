//! What every handler shares: the registry, its writer, ClickHouse, the cache, the webhook endpoints.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use ricochet_registry::{Registry, RegistryTail, RegistryWriter};

use crate::cache::ResponseCache;

pub struct ApiState {
    pub links: Arc<Registry>,
    pub writer: Arc<RegistryWriter>,
    pub tail: Option<RegistryTail>,
    pub clickhouse: clickhouse::Client,
    /// Whether queries carry the client's quota key: only where the API's
    /// ClickHouse user has a keyed quota ([`crate::stats::accepts_quota_keys`]).
    pub quota_keys: bool,
    /// The one client that writes: erasure requests ([`crate::routes::recipients`]).
    pub erasures: clickhouse::Client,
    /// Base of tracking URLs handed out, e.g. `https://t.example.com`.
    pub public_redirect_url: String,
    pub metrics: Option<PrometheusHandle>,
    /// Master keys for recipient tokens, to hand clients their derived keys.
    pub token_keys: Option<ricochet_registry::TokenKeys>,
    /// The broker client behind `/v1/status` (lag and freshness of the aggregators).
    pub status: Option<crate::status::ClusterStatus>,
    /// The key that may do everything.
    pub admin_key: String,
    pub cache: ResponseCache,
    /// `/v1/status`, computed at most once every [`crate::status::FRESHNESS`].
    pub status_cache: ResponseCache,
    /// What one caller and all callers together may ask ([`crate::limits`]).
    pub limits: crate::limits::HttpLimits,
    /// The token buckets; `None`: no rate limit.
    pub rate_limiter: Option<crate::limits::RateLimiter>,
    /// Exports' own cap and time limit ([`crate::routes::events`]).
    pub exports: crate::routes::events::Exports,
    /// Clients' webhook endpoints, their writer and the target policy ([`crate::routes::webhooks`]).
    pub webhooks: crate::routes::webhooks::WebhookState,
}

impl ApiState {
    /// The client for queries over `scope`'s data. Each is sent with the
    /// quota key (`X-ClickHouse-Quota`: the client crate authenticates with
    /// headers, and ClickHouse refuses a `quota_key` parameter beside them) =
    /// the client id, so it counts against that client's share
    /// of the API user's keyed ClickHouse quota (`infra/clickhouse/users.xml`,
    /// docs/security.md): one client's dashboards and exports cannot use
    /// ClickHouse up for the others. Erasure requests are not keyed: a
    /// client's spent quota must never hold up an erasure.
    ///
    /// A user whose quota is not keyed refuses every keyed query, so the key
    /// goes only where the start-up probe found it taken ([`Self::quota_keys`]).
    pub fn clickhouse_for(&self, scope: &crate::stats::Scope) -> clickhouse::Client {
        match self.quota_keys {
            true => self.clickhouse.clone().with_header("X-ClickHouse-Quota", scope.client_id()),
            false => self.clickhouse.clone(),
        }
    }
}

/// The ClickHouse client every request's queries go through: `readonly = 1`
/// and `max_execution_time`, sent as settings with each query, so ClickHouse
/// itself refuses a write and stops a query past the limit (the API answers
/// 503). Migrations, at start, use a client without them.
pub fn query_client(config: &crate::config::ApiConfig) -> clickhouse::Client {
    erasure_client(config).with_option("readonly", "1")
}

/// The client of the API's only write, an erasure request: the same time
/// limit, without `readonly`.
pub fn erasure_client(config: &crate::config::ApiConfig) -> clickhouse::Client {
    let client = config.clickhouse.client();
    match config.clickhouse_max_execution_secs {
        0 => client,
        secs => client.with_option("max_execution_time", secs.to_string()),
    }
}
