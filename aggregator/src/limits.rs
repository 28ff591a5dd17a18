//! Feeding click counts back to the edges for links with a click limit.
//!
//! Every `interval`, the totals of limited links are read from the rollups and
//! published to the compacted `link_counts` topic; edges tail it and answer
//! 410 (or the client's fallback) once a link's count reaches its limit. The
//! limit is approximate by design, so no redirect ever waits on a counter: a
//! link can overshoot by about (flush interval + feedback interval + tail
//! latency) × its click rate. See `docs/click-limits.md`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clickhouse::{Client, Row};
use ricochet_registry::writer::now_ms;
use ricochet_registry::{Registry, RegistryWriter};
use ricochet_schemas::{LinkCount, LinkId};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Row, Deserialize)]
struct Total {
    link_id: String,
    clicks: u64,
}

pub async fn run(
    registry: Arc<Registry>,
    writer: Arc<RegistryWriter>,
    clickhouse: Client,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut published: HashMap<String, i64> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let limited = registry.limited_links();
        if limited.is_empty() {
            continue;
        }
        let clients: Vec<String> = limited.iter().map(|l| l.client_id.to_string()).collect();
        let ids: Vec<String> = limited.iter().map(|l| l.link_id.to_string()).collect();
        // client_id narrows the read to the key prefix; link ids are bound, never spliced.
        let totals =
            clickhouse.query(&crate::sql::limited_link_totals()).bind(clients).bind(ids).fetch_all::<Total>().await;
        let totals = match totals {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read totals of limited links");
                continue;
            }
        };
        for total in totals {
            let clicks = total.clicks as i64;
            if published.get(&total.link_id) == Some(&clicks) {
                continue;
            }
            let Ok(link_id) = LinkId::parse(total.link_id.clone()) else { continue };
            let count = LinkCount { link_id, clicks, as_of_ms: now_ms() };
            match writer.put_count(&count).await {
                Ok(()) => {
                    registry.apply_count(count);
                    published.insert(total.link_id, clicks);
                }
                Err(e) => tracing::warn!(error = %e, "cannot publish a link count"),
            }
        }
    }
}
