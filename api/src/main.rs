use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use ricochet_api::config::{ApiConfig, Command};
use ricochet_api::router;
use ricochet_api::state::ApiState;
use ricochet_api::status::ClusterStatus;
use ricochet_registry::topics;
use ricochet_registry::{Registry, RegistryTail, RegistryWriter, TokenKeys};
use ricochet_warehouse::migrations;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    ricochet_serve::raise_open_files_limit_or_warn();

    let clickhouse = config.clickhouse.client();
    let version = ricochet_warehouse::config::server_version(&clickhouse)
        .await
        .with_context(|| format!("connecting to ClickHouse at {}", config.clickhouse.clickhouse_url))?;
    tracing::info!(%version, "clickhouse reachable");
    // Idempotent, so it does not matter whether the API or an aggregator starts first.
    let cluster = config.clickhouse.cluster().context("RICOCHET_CLICKHOUSE_CLUSTER")?;
    let applied = migrations::apply(&clickhouse, cluster.as_ref()).await.context("applying ClickHouse migrations")?;
    tracing::info!(?applied, "migrations up to date");
    if matches!(config.command, Some(Command::Migrate)) {
        return Ok(());
    }
    // Migrations above write; everything from here on reads, within limits.
    let clickhouse = ricochet_api::state::query_client(&config);
    let zones =
        ricochet_api::openapi::probe_zones(&clickhouse).await.context("asking ClickHouse for its time zones")?;
    tracing::info!(zones, "time zones both chrono-tz and ClickHouse know");
    let admin_key = match config.admin_key.clone() {
        Some(k) if k.len() >= 16 => k,
        Some(_) => anyhow::bail!("RICOCHET_ADMIN_KEY must be at least 16 characters"),
        None => anyhow::bail!("RICOCHET_ADMIN_KEY is required to serve the API (e.g. `openssl rand -hex 32`)"),
    };

    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration_seconds".into()),
            &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0],
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    // The API writes the registry topics, so it makes sure they exist; the
    // clicks topic is the aggregator's and the edges'.
    let kafka = ricochet_registry::KafkaConnection::new(&config.kafka_brokers, &config.kafka_security)
        .context("Kafka security settings")?;
    topics::ensure(&kafka, &config.registry_topics().specs()).await.context("creating topics")?;

    let shutdown = CancellationToken::new();
    let links = Arc::new(Registry::new());
    let (tail, tail_task) = RegistryTail::start(&kafka, &config.registry_topics(), links.clone(), shutdown.clone())
        .await
        .context("starting the registry tail")?;
    let writer =
        Arc::new(RegistryWriter::new(&kafka, &config.registry_topics()).context("creating the registry writer")?);
    let status =
        ClusterStatus::new(&kafka, &config.clicks_topic, &config.group_id).context("creating the status client")?;
    let state = Arc::new(ApiState {
        admin_key,
        cache: ricochet_api::cache::ResponseCache::default(),
        status_cache: ricochet_api::cache::ResponseCache::with_freshness(1, ricochet_api::status::FRESHNESS),
        limits: config.http_limits(),
        rate_limiter: ricochet_api::limits::RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst),
        links,
        writer,
        tail: Some(tail),
        token_keys: config.token_keys.as_deref().map(TokenKeys::parse).transpose().context("RICOCHET_TOKEN_KEYS")?,
        clickhouse,
        erasures: ricochet_api::state::erasure_client(&config),
        public_redirect_url: config.public_redirect_url.clone(),
        metrics: Some(metrics),
        status: Some(status),
    });
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "API serving");
    let stop = shutdown.clone();
    let router = router::router(state);
    ricochet_serve::serve(
        "api",
        listener,
        config.connection_limits(),
        move |peer| ricochet_serve::RouterService { router: router.clone(), peer },
        async move {
            wait_for_signal().await;
            stop.cancel();
        },
    )
    .await?;
    tail_task.abort();
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
