//! `ricochet-webhooks`: parses the config, binds the operations listener and
//! runs [`ricochet_webhooks::run`] until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use ricochet_webhooks::config::WebhooksConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WebhooksConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        stop.cancel();
    });
    ricochet_webhooks::run(config, listener, shutdown).await
}
