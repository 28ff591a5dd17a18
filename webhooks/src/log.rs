//! The deliveries log: every attempt, written to ClickHouse's
//! `webhook_deliveries` in batches about once a second, for the API's
//! deliveries list (and the data team). It is a record for people, not the
//! deliverer's state: a batch ClickHouse refuses is logged and dropped.

use std::time::Duration;

use clickhouse::Row;
use ricochet_warehouse::tables::WEBHOOK_DELIVERIES_TABLE;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One attempt, as stored.
#[derive(Clone, Debug, Row, Serialize)]
pub struct DeliveryRow {
    pub client_id: String,
    pub webhook_id: String,
    pub message_id: String,
    /// Seconds (a `DateTime`).
    pub attempted_at: u32,
    pub attempted_at_ms: i64,
    pub attempt: u32,
    pub events: u32,
    pub replay: u8,
    /// `delivered`, `failed`, `gone`, `refused`, `dropped`.
    pub outcome: &'static str,
    pub status: u16,
    pub latency_ms: u32,
    pub error: String,
}

/// Where attempts are recorded; cheap to clone.
#[derive(Clone)]
pub struct DeliveryLog {
    tx: mpsc::Sender<DeliveryRow>,
}

impl DeliveryLog {
    /// A log writing to `clickhouse` until `shutdown`, then once more.
    pub fn start(clickhouse: clickhouse::Client, shutdown: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(50_000);
        (DeliveryLog { tx }, tokio::spawn(write(clickhouse, rx, shutdown)))
    }

    /// Records an attempt; one that finds the log full is dropped (and
    /// counted) rather than holding up deliveries.
    pub fn record(&self, row: DeliveryRow) {
        if self.tx.try_send(row).is_err() {
            metrics::counter!("ricochet_webhook_log_dropped_total").increment(1);
        }
    }
}

async fn write(clickhouse: clickhouse::Client, mut rx: mpsc::Receiver<DeliveryRow>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut rows = Vec::new();
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = shutdown.cancelled() => true,
        };
        while let Ok(row) = rx.try_recv() {
            rows.push(row);
        }
        if !rows.is_empty() {
            if let Err(e) = insert(&clickhouse, &rows).await {
                metrics::counter!("ricochet_webhook_log_dropped_total").increment(rows.len() as u64);
                tracing::warn!(error = %e, rows = rows.len(), "deliveries log batch not written");
            }
            rows.clear();
        }
        if stopping {
            return;
        }
    }
}

async fn insert(clickhouse: &clickhouse::Client, rows: &[DeliveryRow]) -> Result<(), clickhouse::error::Error> {
    let mut insert = clickhouse.insert::<DeliveryRow>(WEBHOOK_DELIVERIES_TABLE).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
