//! The API as a service: [`run`] applies the migrations, checks the config,
//! starts the registry tail and the webhooks follower, and serves the router
//! until `shutdown` fires.
//! `main.rs` only parses the config, binds the listener and turns a signal
//! into `shutdown`, as the aggregator's does; tests can run an API in
//! process the same way.

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use ricochet_registry::topics;
use ricochet_registry::{KafkaConnection, Registry, RegistryTail, RegistryWriter, TokenKeys};
use ricochet_warehouse::migrations;
use ricochet_webhooks::endpoints::{self, EndpointWriter, Endpoints};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cache::ResponseCache;
use crate::config::ApiConfig;
use crate::limits::RateLimiter;
use crate::state::ApiState;
use crate::status::ClusterStatus;

/// Applies the ClickHouse migrations. Idempotent, so it does not matter
/// whether the API or an aggregator starts first.
pub async fn migrate(config: &ApiConfig) -> anyhow::Result<()> {
    let clickhouse = config.clickhouse.client();
    let version = ricochet_warehouse::config::server_version(&clickhouse)
        .await
        .with_context(|| format!("connecting to ClickHouse at {}", config.clickhouse.clickhouse_url))?;
    tracing::info!(%version, "clickhouse reachable");
    let cluster = config.clickhouse.cluster().context("RICOCHET_CLICKHOUSE_CLUSTER")?;
    let applied =
        migrations::apply(&clickhouse, cluster.as_ref(), &[]).await.context("applying ClickHouse migrations")?;
    tracing::info!(?applied, "migrations up to date");
    Ok(())
}

/// The process-wide Prometheus recorder. A process can install only one, so
/// a second API in the same process shares it; unlike the aggregator's, a
/// failure to install stays an error, as it always was for the API.
fn metrics() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut handle = HANDLE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(installed) = handle.as_ref() {
        return Ok(installed.clone());
    }
    let installed = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration_seconds".into()),
            &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0],
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    Ok(handle.insert(installed).clone())
}

/// Serves the API on `listener` until `shutdown` fires.
pub async fn run(config: ApiConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    migrate(&config).await?;
    // Migrations above write; everything from here on reads, within limits.
    let clickhouse = crate::state::query_client(&config);
    let zones = crate::openapi::probe_zones(&clickhouse).await.context("asking ClickHouse for its time zones")?;
    tracing::info!(zones, "time zones both chrono-tz and ClickHouse know");
    let quota_keys =
        crate::stats::accepts_quota_keys(&clickhouse).await.context("asking ClickHouse whether it takes quota keys")?;
    if !quota_keys {
        tracing::warn!(
            user = %config.clickhouse.clickhouse_user,
            "ClickHouse user's quota is not keyed: queries go without the client's quota key, so one client's \
             reads can use up the API's share for all (use the ricochet_api user of infra/clickhouse/users.xml; \
             docs/security.md)"
        );
    }
    let admin_key = match config.admin_key.clone() {
        Some(k) if k.len() >= 16 => k,
        Some(_) => anyhow::bail!("RICOCHET_ADMIN_KEY must be at least 16 characters"),
        None => anyhow::bail!("RICOCHET_ADMIN_KEY is required to serve the API (e.g. `openssl rand -hex 32`)"),
    };

    let metrics = metrics()?;
    // The API writes the registry topics and the webhooks topic, so it makes
    // sure they exist; the clicks topic is the aggregator's and the edges'.
    let kafka =
        KafkaConnection::new(&config.kafka_brokers, &config.kafka_security).context("Kafka security settings")?;
    let mut specs = config.registry_topics().specs();
    specs.push(endpoints::topic_spec(&config.webhooks_topic));
    topics::ensure(&kafka, &specs).await.context("creating topics")?;

    let links = Arc::new(Registry::new());
    let (tail, tail_task) = RegistryTail::start(&kafka, &config.registry_topics(), links.clone(), shutdown.clone())
        .await
        .context("starting the registry tail")?;
    let writer =
        Arc::new(RegistryWriter::new(&kafka, &config.registry_topics()).context("creating the registry writer")?);
    let status =
        ClusterStatus::new(&kafka, &config.clicks_topic, &config.group_id).context("creating the status client")?;
    let webhooks = Endpoints::new();
    let webhook_writer = EndpointWriter::new(&kafka, &config.webhooks_topic).context("creating the webhooks writer")?;
    let follower = endpoints::Follower::start(&kafka, &config.webhooks_topic, webhooks.clone())
        .context("starting the webhooks follower")?;
    let state = Arc::new(ApiState {
        admin_key,
        cache: ResponseCache::default(),
        status_cache: ResponseCache::with_freshness(1, crate::status::FRESHNESS),
        limits: config.http_limits(),
        rate_limiter: RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst),
        exports: crate::routes::events::Exports::new(config.max_concurrent_exports, config.export_max_execution_secs),
        links,
        writer,
        tail: Some(tail),
        token_keys: config.token_keys.as_deref().map(TokenKeys::parse).transpose().context("RICOCHET_TOKEN_KEYS")?,
        clickhouse,
        quota_keys,
        erasures: crate::state::erasure_client(&config),
        public_redirect_url: config.public_redirect_url.clone(),
        metrics: Some(metrics),
        status: Some(status),
        webhooks: crate::routes::webhooks::WebhookState::new(
            webhooks,
            webhook_writer,
            ricochet_webhooks::target::Policy { allow_private: config.webhooks_allow_private_targets },
        ),
    });
    tracing::info!(listen = %listener.local_addr()?, "API serving");
    let router = crate::router::router(state);
    ricochet_serve::serve(
        "api",
        listener,
        config.connection_limits(),
        move |peer| ricochet_serve::RouterService { router: router.clone(), peer },
        async move { shutdown.cancelled().await },
    )
    .await?;
    tail_task.abort();
    follower.stop().await;
    Ok(())
}
