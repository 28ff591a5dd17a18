//! Running the deliverer: topics, the endpoints' follower, the deliveries
//! log, the runs' supervisor and the operations listener, until shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::WebhooksConfig;
use crate::deliverer::{self, Shared};
use crate::endpoints::{self, EndpointWriter, Endpoints};
use crate::log::DeliveryLog;
use crate::send::Sender;

struct OpsState {
    metrics: Option<PrometheusHandle>,
    endpoints: Arc<Endpoints>,
}

fn metrics() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().ok()).clone()
}

/// Runs the deliverer until `shutdown` fires, then lets each endpoint's
/// requests in flight finish, commits every position, flushes the
/// deliveries log and returns.
pub async fn run(config: WebhooksConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = metrics();
    let kafka = config.kafka().context("Kafka security settings")?;
    ricochet_registry::topics::ensure(&kafka, &[endpoints::topic_spec(&config.webhooks_topic)])
        .await
        .context("creating the webhooks topic")?;
    let endpoints = Endpoints::new();
    let follower = endpoints::Follower::start(&kafka, &config.webhooks_topic, endpoints.clone())
        .context("starting the webhooks follower")?;
    let election =
        crate::active::Election::start(&kafka, &config.webhooks_topic, &format!("{}.active", config.group_prefix))
            .context("joining the deliverers' group")?;
    let log_stop = CancellationToken::new();
    let (log, log_task) = DeliveryLog::start(config.clickhouse.client(), log_stop.clone());
    let expiry = tokio::spawn(crate::log::expire(
        config.clickhouse.client(),
        config.log_days,
        Duration::from_secs(3600),
        shutdown.clone(),
    ));
    let shared = Arc::new(Shared {
        kafka: kafka.clone(),
        decided_topic: config.decided_topic.clone(),
        group_prefix: config.group_prefix.clone(),
        concurrency: config.concurrency.max(1),
        max_queued: config.max_queued.max(1),
        retry: config.retry(),
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        endpoints: endpoints.clone(),
        writer: EndpointWriter::new(&kafka, &config.webhooks_topic).context("creating the webhooks writer")?,
        sender: Sender::new(config.policy(), Duration::from_secs(config.timeout_secs.max(1)))
            .context("creating the HTTP client")?,
        log,
        active: election.active(),
    });
    let supervisor = {
        let (shared, shutdown, endpoints) = (shared.clone(), shutdown.clone(), endpoints.clone());
        tokio::spawn(async move {
            // Runs start once every endpoint is known, so a deleted one is
            // never started from an older record.
            while !endpoints.is_loaded() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    () = shutdown.cancelled() => return,
                }
            }
            deliverer::supervise(shared, shutdown).await
        })
    };

    let state = Arc::new(OpsState { metrics, endpoints });
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<Arc<OpsState>>| async move {
                s.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default()
            }),
        )
        .with_state(state);
    tracing::info!(listen = %listener.local_addr()?, "webhook deliverer serving its operations listener");
    let stop = shutdown.clone();
    let served = axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await;

    shutdown.cancel();
    tracing::info!("shutting down: finishing requests in flight and committing positions");
    let _ = supervisor.await;
    // Positions are committed: a standby may take over from them now.
    election.stop().await;
    log_stop.cancel();
    let _ = log_task.await;
    let _ = expiry.await;
    follower.stop().await;
    served?;
    Ok(())
}

async fn readyz(State(s): State<Arc<OpsState>>) -> Response {
    if s.endpoints.is_loaded() {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading the webhooks topic").into_response()
    }
}
