//! The aggregator as a service: [`run`] wires the pipeline thread, the
//! registry tail and mirror, click limits, retention, erasures and the operations
//! listener together, and stops them all when `shutdown` fires. `main.rs`
//! only parses the config, binds the listener and waits for a signal; tests
//! can drive a member in process the same way.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use ricochet_registry::topics::{self, TopicSpec};
use ricochet_registry::{Registry, RegistryTail, RegistryWriter};
use ricochet_warehouse::migrations;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::AggregatorConfig;
use crate::ops::{self, OpsState};
use crate::pipeline::Pipeline;
use crate::retention::ServerVersion;
use crate::sink::ClickHouseSink;

/// How long shutdown waits for a background task before giving up on it.
const TASK_GRACE: Duration = Duration::from_secs(10);

/// Applies the ClickHouse migrations (single server or cluster mode).
pub async fn migrate(config: &AggregatorConfig) -> anyhow::Result<String> {
    let clickhouse = config.clickhouse.client();
    let cluster = config.clickhouse.cluster().context("RICOCHET_CLICKHOUSE_CLUSTER")?;
    let version = ricochet_warehouse::config::server_version(&clickhouse)
        .await
        .with_context(|| format!("connecting to ClickHouse at {}", config.clickhouse.clickhouse_url))?;
    tracing::info!(%version, "clickhouse reachable");
    let applied = migrations::apply(&clickhouse, cluster.as_ref(), &config.shard_clients())
        .await
        .context("applying ClickHouse migrations")?;
    tracing::info!(?applied, "migrations up to date");
    Ok(version)
}

/// The process-wide Prometheus recorder, installed once (a second member in
/// the same process shares it).
fn metrics() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0],
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

/// Runs one aggregator until `shutdown` fires, then flushes and awaits every
/// task it started.
pub async fn run(config: AggregatorConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let kafka = config.kafka().context("Kafka security settings")?;
    let version = migrate(&config).await?;
    let clickhouse = config.clickhouse.client();
    let cluster = config.clickhouse.cluster().context("RICOCHET_CLICKHOUSE_CLUSTER")?;
    if !config.clickhouse_shard_urls.is_empty() && cluster.is_none() {
        anyhow::bail!("RICOCHET_CLICKHOUSE_SHARD_URLS needs RICOCHET_CLICKHOUSE_CLUSTER");
    }
    let mut sink = ClickHouseSink::new(
        config.shard_clients(),
        &config.clicks_topic,
        &config.clickhouse.clickhouse_database,
        Duration::from_secs(config.insert_timeout_secs),
    );
    if cluster.is_some() {
        sink = sink.replicated(config.clickhouse_insert_quorum);
    }
    let metrics = metrics();
    topics::ensure(
        &kafka,
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
    if let Some(decided) = config.decided_topic() {
        crate::decided::ensure_topic(&kafka, &decided, &config.clicks_topic, &config.group_id, &sink).await?;
    }

    let links = Arc::new(Registry::new());
    // The registry is mirrored into ClickHouse for the data team's joins.
    let (changes_tx, changes_rx) = tokio::sync::mpsc::channel(10_000);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::mirror::run(clickhouse.clone(), changes_rx, shutdown.clone()));
    let (tail, tail_task) = RegistryTail::start_observed(
        &kafka,
        &config.registry_topics(),
        links.clone(),
        shutdown.clone(),
        Some(changes_tx),
    )
    .await
    .context("starting the registry tail")?;

    tasks.spawn(crate::erasure::run(sink.clone(), Duration::from_secs(config.erasure_interval_secs), shutdown.clone()));
    crate::dimensions::load();
    let pipeline =
        Pipeline::new(config.pipeline(kafka.clone()), sink, tokio::runtime::Handle::current(), shutdown.clone())
            .context("creating the consumer")?;
    let status = pipeline.status();
    // The consumer owns a thread: its loop blocks in poll and in the rebalance callback.
    let pipeline_thread = std::thread::Builder::new().name("pipeline".into()).spawn(move || pipeline.run())?;

    let writer =
        Arc::new(RegistryWriter::new(&kafka, &config.registry_topics()).context("creating the registry writer")?);
    let server =
        ServerVersion::parse(&version).with_context(|| format!("unexpected ClickHouse version {version:?}"))?;
    tasks.spawn(crate::retention::run(clickhouse.clone(), server, config.retention(), shutdown.clone()));
    tasks.spawn(crate::limits::run(
        links.clone(),
        writer,
        clickhouse.clone(),
        config.click_limit_counts,
        Duration::from_secs(2),
        shutdown.clone(),
    ));
    let state = Arc::new(OpsState { metrics, tail: Some(tail), status });
    tracing::info!(listen = %listener.local_addr()?, "aggregator operations listener serving");
    let stop = shutdown.clone();
    let served =
        axum::serve(listener, ops::router(state)).with_graceful_shutdown(async move { stop.cancelled().await }).await;

    // Whatever ended the listener, everything else stops too.
    shutdown.cancel();
    tracing::info!("shutting down; flushing the pending batch");
    let joined = tokio::task::spawn_blocking(move || pipeline_thread.join()).await?;
    let _ = tokio::time::timeout(TASK_GRACE, tail_task).await;
    let all = async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::warn!(error = %e, "a task ended badly");
            }
        }
    };
    if tokio::time::timeout(TASK_GRACE, all).await.is_err() {
        tracing::warn!("tasks still running after the shutdown grace; leaving them");
    }
    joined.map_err(|_| anyhow::anyhow!("pipeline thread panicked"))?;
    served?;
    Ok(())
}
