//! `ricochet-aggregator`: parses the config, binds the operations listener
//! and runs [`ricochet_aggregator::run`] until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use ricochet_aggregator::config::{AggregatorConfig, Command};
use tokio_util::sync::CancellationToken;

/// Every event is a dozen short strings that live for one flush: glibc's
/// malloc spent a quarter of the pipeline's CPU freeing and consolidating
/// them (`docs/benchmarks.md`, issue 10).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ricochet_aggregator::memory::hold_freed_memory();
    let small_pages = ricochet_aggregator::memory::small_pages();
    let config = AggregatorConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    if let Err(error) = small_pages {
        tracing::warn!(%error, "transparent huge pages stay on: prctl(PR_SET_THP_DISABLE) failed");
    }
    if matches!(config.command, Some(Command::Migrate)) {
        ricochet_aggregator::migrate(&config).await?;
        return Ok(());
    }
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });
    ricochet_aggregator::run(config, listener, shutdown).await
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
