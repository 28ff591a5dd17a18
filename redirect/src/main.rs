use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use ricochet_ingest::Publisher;
use ricochet_redirect::{run, Edge, RedirectConfig};
use ricochet_registry::topics::{self, TopicSpec};
use ricochet_registry::{Registry, RegistryTail, TokenKeys};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = RedirectConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    ricochet_serve::raise_open_files_limit_or_warn();
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration_seconds".into()),
            &[0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0],
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;

    let kafka = config.kafka.connection().context("Kafka security settings")?;
    topics::ensure(
        &kafka,
        &[
            vec![TopicSpec {
                name: config.kafka.topic.clone(),
                partitions: config.clicks_partitions,
                compacted: false,
            }],
            config.registry_topics().specs(),
        ]
        .concat(),
    )
    .await
    .context("creating topics")?;

    let shutdown = CancellationToken::new();
    // The edge looks links up by code only.
    let links = Arc::new(Registry::for_edge());
    let (tail, tail_task) = RegistryTail::start_with_snapshot(
        &kafka,
        &config.registry_topics(),
        links.clone(),
        shutdown.clone(),
        config.snapshot(),
    )
    .await
    .context("starting the registry tail")?;
    let publisher = Arc::new(Publisher::start(&config.kafka).context("opening the spool and the producer")?);
    let tokens = config.token_keys.as_deref().map(TokenKeys::parse).transpose().context("RICOCHET_TOKEN_KEYS")?;
    if tokens.is_none() {
        tracing::warn!("no RICOCHET_TOKEN_KEYS: recipient tokens cannot be verified and are flagged invalid");
    }
    if config.trust_forwarded_for {
        tracing::warn!(
            "RICOCHET_TRUST_FORWARDED_FOR is deprecated: set RICOCHET_TRUSTED_PROXIES to your proxies' CIDRs"
        );
    }
    let signals = Arc::new(
        tokio::task::spawn_blocking(ricochet_signals::Classifier::load)
            .await?
            .context("loading the bot-signal data")?,
    );
    let edge = Arc::new(Edge {
        signals,
        tokens,
        links,
        publisher: publisher.clone(),
        node_id: config.node_id(),
        trusted_proxies: config.trusted_proxies(),
        tail: Some(tail),
    });

    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let ops = tokio::net::TcpListener::bind(config.ops_listen)
        .await
        .with_context(|| format!("binding the operations listener {} (RICOCHET_OPS_LISTEN)", config.ops_listen))?;
    tracing::info!(
        listen = %listener.local_addr()?, ops = %ops.local_addr()?, node = %edge.node_id, "redirect edge serving"
    );
    let stop = shutdown.clone();
    run(listener, ops, edge, Some(metrics), config.limits(), async move {
        wait_for_signal().await;
        stop.cancel();
    })
    .await?;

    tracing::info!(in_flight = publisher.in_flight(), "shutting down; forwarding the spool");
    tokio::task::spawn_blocking(move || publisher.shutdown(Duration::from_secs(config.shutdown_flush_secs))).await?;
    // The tail writes its last snapshot on the way out.
    tail_task.await?;
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
