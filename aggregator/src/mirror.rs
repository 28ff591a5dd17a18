//! Mirroring the registry into ClickHouse (`links`, `clients`) so the data team
//! can join events to links. The compacted topics stay the source of truth;
//! each record is written with its Kafka offset as the version, so replays
//! (every start re-reads the topics) and retries collapse to the newest state.

use std::time::Duration;

use clickhouse::{Client, Row};
use ricochet_registry::RegistryChange;
use ricochet_schemas::{ClientStatus, LinkStatus};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Row, Serialize)]
struct LinkRow {
    link_id: String,
    code: String,
    client_id: String,
    campaign_id: String,
    destination_url: String,
    /// Enum8: active = 1, paused = 2, deleted = 3.
    status: i8,
    created_at: u32,
    valid_from: u32,
    valid_until: u32,
    click_limit: i64,
    version: u64,
}

#[derive(Row, Serialize)]
struct ClientRow {
    client_id: String,
    /// Enum8: active = 1, paused = 2.
    status: i8,
    fallback_url: String,
    hot_spread: u16,
    updated_at: u32,
    version: u64,
}

fn secs(ms: i64) -> u32 {
    u32::try_from(ms.div_euclid(1000)).unwrap_or(0)
}

/// Runs until shutdown: batches of up to 10,000 changes or 1 s, retried until written.
pub async fn run(client: Client, mut changes: mpsc::Receiver<RegistryChange>, shutdown: CancellationToken) {
    let mut links = Vec::new();
    let mut clients = Vec::new();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = changes.recv() => match c { Some(c) => c, None => return },
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut next = Some(first);
        while let Some(change) = next.take() {
            match change {
                RegistryChange::Link(l, version) => links.push(LinkRow {
                    link_id: l.link_id.to_string(),
                    code: l.code.to_string(),
                    client_id: l.client_id.to_string(),
                    campaign_id: l.campaign_id.to_string(),
                    destination_url: l.destination_url,
                    status: match l.status {
                        LinkStatus::Active => 1,
                        LinkStatus::Paused => 2,
                        LinkStatus::Deleted => 3,
                    },
                    created_at: secs(l.created_at_ms),
                    valid_from: l.valid_from_ms.map_or(0, secs),
                    valid_until: l.valid_until_ms.map_or(0, secs),
                    click_limit: l.click_limit.unwrap_or(0),
                    version: version as u64,
                }),
                RegistryChange::Client(c, version) => clients.push(ClientRow {
                    client_id: c.client_id.to_string(),
                    status: match c.status {
                        ClientStatus::Active => 1,
                        ClientStatus::Paused => 2,
                    },
                    fallback_url: c.fallback_url.unwrap_or_default(),
                    hot_spread: c.hot_spread,
                    updated_at: secs(c.updated_at_ms),
                    version: version as u64,
                }),
            }
            if links.len() + clients.len() < 10_000 {
                next = tokio::time::timeout_at(deadline, changes.recv()).await.ok().flatten();
            }
        }
        let mut backoff = Duration::from_millis(200);
        while let Err(e) = write(&client, &links, &clients).await {
            tracing::warn!(error = %e, "registry mirror write failed; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        links.clear();
        clients.clear();
    }
}

async fn write(client: &Client, links: &[LinkRow], clients: &[ClientRow]) -> clickhouse::error::Result<()> {
    if !links.is_empty() {
        let mut insert = client.insert::<LinkRow>(crate::sql::LINKS_TABLE).await?;
        for row in links {
            insert.write(row).await?;
        }
        insert.end().await?;
    }
    if !clients.is_empty() {
        let mut insert = client.insert::<ClientRow>(crate::sql::CLIENTS_TABLE).await?;
        for row in clients {
            insert.write(row).await?;
        }
        insert.end().await?;
    }
    Ok(())
}
