//! The deliveries log: every attempt, written to ClickHouse's
//! `webhook_deliveries` in batches about once a second, for the API's
//! deliveries list (and the data team). It is a record for people, not the
//! deliverer's state: a batch ClickHouse refuses is logged and dropped.
//!
//! Kept `RICOCHET_WEBHOOKS_LOG_DAYS` days ([`expire`]): the table holds one
//! partition per day of attempts, and a day wholly past the limit goes by
//! dropping its partition, which costs ClickHouse no rewrite on any version
//! (18.16 has no TTL). A busy endpoint logs a row per request, so without it
//! the log would outgrow what it is for.

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

/// The days (partitions, `YYYYMMDD` of `attempted_at` in the server's time
/// zone) wholly older than `?` days before today.
const EXPIRED_DAYS: &str = "SELECT DISTINCT partition FROM system.parts \
     WHERE database = currentDatabase() AND table = 'webhook_deliveries' AND active \
     AND toUInt32(partition) < toYYYYMMDD(today() - ?) ORDER BY partition";

const DROP_DAY: &str = "ALTER TABLE webhook_deliveries DROP PARTITION ?";

/// Drops the days of attempts older than `days` days; answers the days dropped.
pub async fn expire_once(clickhouse: &clickhouse::Client, days: u32) -> Result<Vec<u32>, clickhouse::error::Error> {
    let expired: Vec<String> = clickhouse.query(EXPIRED_DAYS).bind(days).fetch_all().await?;
    let mut dropped = Vec::new();
    for day in expired {
        // Only days (YYYYMMDD). The first version of migration 0011 made the
        // table by month (YYYYMM, which compares below any day): a table
        // made so keeps its months rather than losing the current one.
        let Some(day) = day.parse::<u32>().ok().filter(|d| *d >= 19_700_101) else { continue };
        clickhouse.query(DROP_DAY).bind(day).execute().await?;
        dropped.push(day);
    }
    Ok(dropped)
}

/// Expires old attempts at start and then every `interval`, until `shutdown`;
/// `days` 0 keeps every attempt. A failed pass is logged and tried again at
/// the next.
pub async fn expire(clickhouse: clickhouse::Client, days: u32, interval: Duration, shutdown: CancellationToken) {
    if days == 0 {
        return;
    }
    loop {
        match expire_once(&clickhouse, days).await {
            Ok(dropped) if !dropped.is_empty() => tracing::info!(?dropped, days, "deliveries log: old days dropped"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "deliveries log: expiring old days failed; next pass retries"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
