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

/// What counts towards a link's click limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitCounts {
    /// Clicks decided human: a scanner sweeping the message or `curl` in a
    /// loop does not close a capped link for the real recipients.
    Human,
    /// Every click, human or not.
    All,
}

impl LimitCounts {
    /// The rollup column summed.
    pub fn column(self) -> &'static str {
        match self {
            LimitCounts::Human => "human_clicks",
            LimitCounts::All => "clicks",
        }
    }
}

/// Limited links read per query: each id travels in the query text (bound on
/// the client, 18.16 has no server-side parameters), and the text must stay
/// under the server's `max_query_size` (256 KiB by default) whatever the
/// number of limited links.
pub const LINKS_PER_QUERY: usize = 1_500;

pub async fn run(
    registry: Arc<Registry>,
    writer: Arc<RegistryWriter>,
    clickhouse: Client,
    counts: LimitCounts,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut published: HashMap<String, i64> = HashMap::new();
    let query = crate::sql::limited_link_totals(counts.column());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let limited = registry.limited_links();
        for chunk in limited.chunks(LINKS_PER_QUERY) {
            let mut clients: Vec<String> = chunk.iter().map(|l| l.client_id.to_string()).collect();
            clients.sort_unstable();
            clients.dedup();
            let ids: Vec<String> = chunk.iter().map(|l| l.link_id.to_string()).collect();
            // client_id narrows the read to the key prefix; link ids are bound, never spliced.
            let totals = clickhouse.query(&query).bind(clients).bind(ids).fetch_all::<Total>().await;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest ids the registry accepts, bound as the `clickhouse` crate
    /// binds them: one chunk's query stays under 18.16's default
    /// `max_query_size` (262,144 bytes) with every id and client distinct.
    #[test]
    fn a_chunk_of_limited_links_fits_one_query() {
        let long = |prefix: &str, i: usize| format!("{prefix}{i:0>63}");
        let ids: Vec<String> = (0..LINKS_PER_QUERY).map(|i| long("l", i)).collect();
        let clients: Vec<String> = (0..LINKS_PER_QUERY).map(|i| long("c", i)).collect();
        let quoted = |v: &[String]| v.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(",").len() + 2;
        let text = crate::sql::limited_link_totals(LimitCounts::Human.column()).len() + quoted(&ids) + quoted(&clients);
        assert!(text < 262_144, "{text} bytes");
    }
}
