//! `ricochet-api`: parses the config, binds the listener and runs
//! [`ricochet_api::run`] until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use ricochet_api::config::{ApiConfig, Command};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    ricochet_serve::raise_open_files_limit_or_warn();
    if matches!(config.command, Some(Command::Migrate)) {
        return ricochet_api::migrate(&config).await;
    }
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });
    ricochet_api::run(config, listener, shutdown).await
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
