use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use ricochet_aggregator::config::{AggregatorConfig, Command};
use ricochet_aggregator::ops::{self, OpsState};
use ricochet_aggregator::pipeline::Pipeline;
use ricochet_aggregator::sink::ClickHouseSink;
use ricochet_registry::topics::{self, TopicSpec};
use ricochet_registry::{Registry, RegistryTail, RegistryWriter};
use ricochet_warehouse::migrations;
use tokio_util::sync::CancellationToken;

/// Every event is a dozen short strings that live for one flush: glibc's
/// malloc spent a quarter of the pipeline's CPU freeing and consolidating
/// them (`docs/benchmarks.md`, issue 10).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = AggregatorConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let clickhouse = config.clickhouse.client();
    let cluster = config.clickhouse.cluster().context("RICOCHET_CLICKHOUSE_CLUSTER")?;
    let mut sink = ClickHouseSink::new(clickhouse.clone(), Duration::from_secs(config.insert_timeout_secs));
    if cluster.is_some() {
        sink = sink.replicated(config.clickhouse_insert_quorum);
    }
    let version = sink
        .server_version()
        .await
        .with_context(|| format!("connecting to ClickHouse at {}", config.clickhouse.clickhouse_url))?;
    tracing::info!(%version, "clickhouse reachable");
    let applied = migrations::apply(&clickhouse, cluster.as_ref()).await.context("applying ClickHouse migrations")?;
    tracing::info!(?applied, "migrations up to date");
    if matches!(config.command, Some(Command::Migrate)) {
        return Ok(());
    }
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration_seconds".into()),
            &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0],
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    topics::ensure(
        &config.kafka_brokers,
        &[
            vec![
                TopicSpec { name: config.clicks_topic.clone(), partitions: config.clicks_partitions, compacted: false },
                TopicSpec { name: config.dead_letter_topic.clone(), partitions: 1, compacted: false },
            ],
            config.registry_topics().specs(),
        ]
        .concat(),
    )
    .await
    .context("creating topics")?;

    let shutdown = CancellationToken::new();
    let links = Arc::new(Registry::new());
    // The registry is mirrored into ClickHouse for the data team's joins.
    let (changes_tx, changes_rx) = tokio::sync::mpsc::channel(10_000);
    let mirror_task = tokio::spawn(ricochet_aggregator::mirror::run(clickhouse.clone(), changes_rx, shutdown.clone()));
    let (tail, tail_task) = RegistryTail::start_observed(
        &config.kafka_brokers,
        &config.registry_topics(),
        links.clone(),
        shutdown.clone(),
        Some(changes_tx),
    )
    .await
    .context("starting the registry tail")?;

    let pipeline = Pipeline::new(config.pipeline(), sink, tokio::runtime::Handle::current(), shutdown.clone())
        .context("creating the consumer")?;
    let status = pipeline.status();
    // The consumer owns a thread: its loop blocks in poll and in the rebalance callback.
    let pipeline_thread = std::thread::Builder::new().name("pipeline".into()).spawn(move || pipeline.run())?;

    let writer = Arc::new(
        RegistryWriter::new(&config.kafka_brokers, &config.registry_topics())
            .context("creating the registry writer")?,
    );
    let server = ricochet_aggregator::retention::ServerVersion::parse(&version)
        .with_context(|| format!("unexpected ClickHouse version {version:?}"))?;
    let retention_task = tokio::spawn(ricochet_aggregator::retention::run(
        clickhouse.clone(),
        server,
        config.retention(),
        shutdown.clone(),
    ));
    let limits_task = tokio::spawn(ricochet_aggregator::limits::run(
        links.clone(),
        writer.clone(),
        clickhouse.clone(),
        Duration::from_secs(2),
        shutdown.clone(),
    ));
    let state = Arc::new(OpsState { metrics: Some(metrics), tail: Some(tail), status });
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "aggregator operations listener serving");
    let stop = shutdown.clone();
    axum::serve(listener, ops::router(state))
        .with_graceful_shutdown(async move {
            wait_for_signal().await;
            stop.cancel();
        })
        .await?;

    tracing::info!("shutting down; flushing the pending batch");
    tokio::task::spawn_blocking(move || pipeline_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("pipeline thread panicked"))?;
    tail_task.abort();
    mirror_task.abort();
    limits_task.abort();
    retention_task.abort();
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
