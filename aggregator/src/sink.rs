//! Writing to ClickHouse: row types, the two inserts of a flush, reading the
//! stored positions back, and settling an insert whose outcome is unknown.
//!
//! Mechanism only: *what* to write and *when* is decided by the pipeline.
//! Works on ClickHouse 18.16 and current releases: plain `RowBinary` (row
//! validation off, 18.16 lacks the typed header format) and values bound on
//! the client (18.16 has no server-side query parameters).
//!
//! **On a replicated cluster** ([`ClickHouseSink::replicated`]) the inserts go
//! to the `_local` ReplicatedMergeTree tables of the server this sink talks to
//! (never through `Distributed`, whose inserts are forwarded later and so are
//! neither atomic nor settleable). A replicated insert of one block is still
//! one part, fetched whole by the other replicas, so rollups and positions
//! still land together. What changes is *where* a position can be read from:
//!
//! - the rollup insert carries `insert_quorum = N`: it is acknowledged only
//!   once N replicas hold the part (a replica that is down makes it fail at
//!   once: "too few live replicas"; the pipeline then pauses and retries);
//! - positions are read with `select_sequential_consistency = 1`: a replica
//!   that lacks a part already written with quorum refuses the read instead
//!   of answering with an older position;
//! - a quorum insert that failed *after* its part was written (a replica died
//!   mid-insert) stays pending in ZooKeeper (`…/quorum/status`) and lands once
//!   the replica is back. Sequential consistency hides such a part, so while
//!   one is pending, reading positions is an error (retried by the pipeline's
//!   fence and settle): a position is never read from before a part that can
//!   still land. Only one quorum insert per table can be pending at a time
//!   (the next one is refused), so this wait ends when that one lands.

use std::collections::HashMap;
use std::time::Duration;

use clickhouse::{Client, Row};
use ricochet_schemas::{ClickEvent, EventType, Reason, RecipientToken};
use serde::Serialize;

use crate::checkpoint::PartitionRange;
use crate::rollup::{Counts, Grain, RollupKeyRef};

pub use ricochet_warehouse::tables::{EVENTS_TABLE, RECIPIENTS_TABLE, ROLLUP_TABLE};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("a quorum insert into {table} is still pending (a replica is behind); positions cannot be read yet")]
    QuorumPending { table: String },
}

/// One row of `click_events`.
#[derive(Debug, Clone, Row, Serialize)]
pub struct EventRow {
    pub event_id: String,
    pub event_time: u32,
    pub event_time_ms: i64,
    pub client_id: String,
    pub campaign_id: String,
    pub link_id: String,
    pub recipient_id: String,
    pub destination_url: String,
    pub http_method: String,
    pub user_agent: String,
    pub referer: String,
    pub client_ip: String,
    pub edge_node: String,
    /// Enum8: click = 1, open = 2.
    pub event_type: i8,
    pub is_prefetch: u8,
    /// Enum8: absent = 0, valid = 1, invalid = 2.
    pub recipient_token: i8,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub ingested_at: u32,
    // The v3 signals and the verdict (migration 0004).
    /// Enum8, `UaClass`'s discriminant.
    pub ua_class: i8,
    /// Enum8, `NetworkClass`'s discriminant.
    pub network_class: i8,
    pub asn: u32,
    pub network_name: String,
    pub prefetch_header: u8,
    pub has_accept: u8,
    pub has_accept_language: u8,
    pub scanner_referer: u8,
    pub network_allow_listed: u8,
    /// Nullable(DateTime): the signed send time, seconds.
    pub sent_at: Option<u32>,
    pub honeypot: u8,
    pub is_human: u8,
    /// Enum8, `Reason`'s discriminant.
    pub verdict_reason: i8,
    /// Nullable(Int32): whole seconds from the send to the click (negative
    /// when the edge's clock is behind the sender's).
    pub seconds_since_send: Option<i32>,
}

impl EventRow {
    pub fn new(e: ClickEvent, reason: Reason, partition: i32, offset: i64, ingested_at: u32) -> Self {
        let s = e.signals;
        let seconds_since_send = s.sent_at_ms.map(|sent| {
            let secs = (e.event_time_ms - sent).div_euclid(1000);
            secs.clamp(i32::MIN as i64, i32::MAX as i64) as i32
        });
        EventRow {
            ua_class: s.ua_class as i8,
            network_class: s.network_class as i8,
            asn: s.asn,
            network_name: s.network_name.unwrap_or_default(),
            prefetch_header: s.prefetch_header as u8,
            has_accept: s.has_accept as u8,
            has_accept_language: s.has_accept_language as u8,
            scanner_referer: s.scanner_referer as u8,
            network_allow_listed: s.network_allow_listed as u8,
            sent_at: s.sent_at_ms.and_then(|ms| u32::try_from(ms.div_euclid(1000)).ok()),
            honeypot: s.honeypot as u8,
            is_human: reason.is_human() as u8,
            verdict_reason: reason as u8 as i8,
            seconds_since_send,
            event_id: e.event_id.to_string(),
            event_time: (e.event_time_ms.div_euclid(1000)) as u32,
            event_time_ms: e.event_time_ms,
            client_id: e.client_id.into(),
            campaign_id: e.campaign_id.into(),
            link_id: e.link_id.into(),
            recipient_id: e.recipient_id.map(String::from).unwrap_or_default(),
            destination_url: e.destination_url,
            http_method: e.http_method,
            user_agent: e.user_agent.unwrap_or_default(),
            referer: e.referer.unwrap_or_default(),
            client_ip: e.client_ip.unwrap_or_default(),
            edge_node: e.edge_node,
            event_type: match e.event_type {
                EventType::Click => 1,
                EventType::Open => 2,
            },
            is_prefetch: e.is_prefetch as u8,
            recipient_token: match e.recipient_token {
                RecipientToken::Absent => 0,
                RecipientToken::Valid => 1,
                RecipientToken::Invalid => 2,
            },
            kafka_partition: partition,
            kafka_offset: offset,
            ingested_at,
        }
    }
}

/// One row of `click_rollups`: the counts of one bucket at one grain, or the
/// position delta of one partition (`grain` 0). Field order is the table's;
/// the reason fields follow [`Reason::ALL`] without `Human` (see
/// [`reason_columns`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Row, Serialize)]
pub struct RollupRow {
    pub grain: u32,
    pub client_id: String,
    pub campaign_id: String,
    pub link_id: String,
    pub bucket_start: u32,
    pub source_topic: String,
    pub source_partition: i32,
    pub clicks: u64,
    pub human_clicks: u64,
    pub bot_clicks: u64,
    pub opens: u64,
    pub human_allow_listed: u64,
    pub bot_head: u64,
    pub bot_prefetch_header: u64,
    pub bot_preview_fetcher: u64,
    pub bot_bot_user_agent: u64,
    pub bot_http_client: u64,
    pub bot_scanner_referer: u64,
    pub bot_scanner_network: u64,
    pub bot_honeypot: u64,
    pub bot_burst: u64,
    pub bot_network_fanout: u64,
    pub bot_too_fast_after_send: u64,
    pub bot_rescan: u64,
    pub position_delta: i64,
}

/// The rollup column of each reason but `Human` (plain humans are
/// `human_clicks - human_allow_listed`), in [`Reason::ALL`] order.
pub fn reason_columns() -> impl Iterator<Item = (Reason, String)> {
    Reason::ALL.into_iter().filter(|r| *r != Reason::Human).map(|r| {
        let side = if r.is_human() { "human" } else { "bot" };
        (r, format!("{side}_{}", r.as_str()))
    })
}

impl RollupRow {
    /// The counts of `key`'s minute folded into its bucket at `grain`.
    pub fn delta(key: RollupKeyRef<'_>, grain: Grain, counts: &Counts) -> Self {
        let r = |reason| counts.reason(reason);
        RollupRow {
            grain: grain.secs(),
            client_id: key.client_id.as_str().to_owned(),
            campaign_id: key.campaign_id.as_str().to_owned(),
            link_id: key.link_id.as_str().to_owned(),
            bucket_start: grain.floor(key.bucket.0),
            source_topic: String::new(),
            source_partition: 0,
            clicks: counts.clicks,
            human_clicks: counts.human_clicks,
            bot_clicks: counts.bot_clicks,
            opens: counts.opens,
            human_allow_listed: r(Reason::AllowListed),
            bot_head: r(Reason::Head),
            bot_prefetch_header: r(Reason::PrefetchHeader),
            bot_preview_fetcher: r(Reason::PreviewFetcher),
            bot_bot_user_agent: r(Reason::BotUserAgent),
            bot_http_client: r(Reason::HttpClient),
            bot_scanner_referer: r(Reason::ScannerReferer),
            bot_scanner_network: r(Reason::ScannerNetwork),
            bot_honeypot: r(Reason::Honeypot),
            bot_burst: r(Reason::Burst),
            bot_network_fanout: r(Reason::NetworkFanout),
            bot_too_fast_after_send: r(Reason::TooFastAfterSend),
            bot_rescan: r(Reason::Rescan),
            position_delta: 0,
        }
    }

    /// The row that moves a partition's stored position from `previous`
    /// (`None`: nothing stored yet, i.e. 0) to `range.next`. Positive for every
    /// batch (a batch holds at least one offset at or past the stored
    /// position), so neither this row nor the sum it merges into is all-zero.
    pub fn position(topic: &str, range: PartitionRange, previous: Option<i64>) -> Self {
        RollupRow {
            grain: 0,
            source_topic: topic.to_owned(),
            source_partition: range.partition,
            position_delta: range.next - previous.unwrap_or(0),
            ..RollupRow::default()
        }
    }
}

/// One row of `click_recipients`: a recipient who clicked a link in a
/// 15-minute bucket, with or without a human verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Row, Serialize)]
pub struct RecipientRow {
    pub client_id: String,
    pub campaign_id: String,
    pub link_id: String,
    pub bucket_start: u32,
    pub human: u8,
    pub recipient_id: String,
}

/// The outcome of an insert that did not answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    Applied,
    NotApplied,
}

#[derive(Clone)]
pub struct ClickHouseSink {
    client: Client,
    insert_timeout: Duration,
    events_table: String,
    recipients_table: String,
    rollup_table: String,
    /// `insert_quorum` of the rollup insert; 0: none (one server).
    quorum: u64,
}

impl ClickHouseSink {
    pub fn new(client: Client, insert_timeout: Duration) -> Self {
        ClickHouseSink {
            client,
            insert_timeout,
            events_table: EVENTS_TABLE.to_owned(),
            recipients_table: RECIPIENTS_TABLE.to_owned(),
            rollup_table: ROLLUP_TABLE.to_owned(),
            quorum: 0,
        }
    }

    /// Cluster mode: write to the replicated `_local` tables, with
    /// `insert_quorum = quorum` (0: off) on the rollup insert. See the module doc.
    pub fn replicated(mut self, quorum: u64) -> Self {
        self.events_table = format!("{EVENTS_TABLE}{}", ricochet_warehouse::cluster::LOCAL_SUFFIX);
        self.recipients_table = format!("{RECIPIENTS_TABLE}{}", ricochet_warehouse::cluster::LOCAL_SUFFIX);
        self.rollup_table = format!("{ROLLUP_TABLE}{}", ricochet_warehouse::cluster::LOCAL_SUFFIX);
        self.quorum = quorum;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Raw events. Idempotent: a retried write leaves duplicates that the
    /// table's engine collapses by event id.
    pub async fn write_events<'a>(&self, rows: impl Iterator<Item = &'a EventRow>) -> Result<(), SinkError> {
        self.write_idempotent(&self.events_table, rows).await
    }

    /// Recipient rows. Idempotent like raw events: the table keeps one copy of
    /// a row on merge and is read with `uniqExact`. An empty batch writes nothing.
    pub async fn write_recipients<'a>(
        &self,
        rows: impl ExactSizeIterator<Item = &'a RecipientRow>,
    ) -> Result<(), SinkError> {
        if rows.len() == 0 {
            return Ok(());
        }
        self.write_idempotent(&self.recipients_table, rows).await
    }

    /// One plain insert of rows that may be written again.
    async fn write_idempotent<'a, R>(&self, table: &str, rows: impl Iterator<Item = &'a R>) -> Result<(), SinkError>
    where
        R: clickhouse::RowOwned + clickhouse::RowWrite + 'a,
    {
        let mut insert =
            self.client.insert::<R>(table).await?.with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Rollup deltas and positions in ONE insert, tagged with `query_id` so an
    /// unanswered attempt can be found and settled.
    pub async fn write_rollups(&self, rows: &[RollupRow], query_id: &str) -> Result<(), SinkError> {
        let mut insert = self
            .client
            .insert::<RollupRow>(&self.rollup_table)
            .await?
            .with_option("query_id", query_id)
            .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
        if self.quorum > 0 {
            // The server gives up waiting for the quorum when the client does.
            insert = insert
                .with_option("insert_quorum", self.quorum.to_string())
                .with_option("insert_quorum_timeout", self.insert_timeout.as_millis().to_string());
        }
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// The stored position (next offset to apply) of every partition of `topic`.
    /// On a cluster with quorum writes: an error while a quorum insert is
    /// pending, and never older than any insert acknowledged by the quorum.
    pub async fn read_positions(&self, topic: &str) -> Result<HashMap<i32, i64>, SinkError> {
        let client = if self.quorum > 0 {
            self.check_no_pending_quorum().await?;
            self.client.clone().with_option("select_sequential_consistency", "1")
        } else {
            self.client.clone()
        };
        Ok(ricochet_warehouse::positions::read_in(&client, &self.rollup_table, topic).await?)
    }

    /// Finds out whether the rollup insert `query_id` landed: waits until the
    /// server no longer runs it (killing it if it still does), then compares the
    /// stored positions with what the batch would have written. The insert is a
    /// single part, so it landed whole or not at all.
    pub async fn settle(&self, query_id: &str, topic: &str, ranges: &[PartitionRange]) -> Result<Settled, SinkError> {
        self.client.query("KILL QUERY WHERE query_id = ? SYNC").bind(query_id).execute().await?;
        let stored = self.read_positions(topic).await?;
        let applied = ranges.iter().filter(|r| stored.get(&r.partition).is_some_and(|s| *s >= r.next)).count();
        if applied == ranges.len() {
            Ok(Settled::Applied)
        } else {
            if applied > 0 {
                tracing::error!(
                    query_id,
                    applied,
                    of = ranges.len(),
                    "partially applied rollup insert: the table is not single-part"
                );
            }
            Ok(Settled::NotApplied)
        }
    }

    /// `Err(QuorumPending)` while ZooKeeper holds `…/quorum/status` for the
    /// rollup table: a quorum insert wrote its part but not yet to enough
    /// replicas, and will land once they fetch it.
    async fn check_no_pending_quorum(&self) -> Result<(), SinkError> {
        // system.zookeeper needs a literal path, so the table's path is read first.
        let zookeeper_path = self
            .client
            .query("SELECT zookeeper_path FROM system.replicas WHERE database = currentDatabase() AND table = ?")
            .bind(self.rollup_table.as_str())
            .fetch_one::<String>()
            .await?;
        let pending = self
            .client
            .query("SELECT count() FROM system.zookeeper WHERE path = ? AND name = 'status'")
            .bind(format!("{zookeeper_path}/quorum"))
            .fetch_one::<u64>()
            .await?;
        if pending > 0 {
            return Err(SinkError::QuorumPending { table: self.rollup_table.clone() });
        }
        Ok(())
    }

    pub async fn server_version(&self) -> Result<String, SinkError> {
        Ok(ricochet_warehouse::config::server_version(&self.client).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The columns of `CREATE TABLE IF NOT EXISTS {table}` in the migrations, in order.
    fn table_columns(table: &str) -> Vec<String> {
        let head = format!("CREATE TABLE IF NOT EXISTS {table}\n(");
        let sql = ricochet_warehouse::migrations::MIGRATIONS
            .iter()
            .find_map(|(_, sql)| sql.find(&head).map(|i| &sql[i..]))
            .unwrap();
        let body = &sql[head.len()..sql.find("\n)").unwrap()];
        body.lines().filter_map(|l| l.split_whitespace().next()).map(|c| c.trim_end_matches(',').to_owned()).collect()
    }

    #[test]
    fn rows_match_their_tables_column_for_column() {
        assert_eq!(<RollupRow as Row>::COLUMN_NAMES, table_columns(ROLLUP_TABLE));
        assert_eq!(<RecipientRow as Row>::COLUMN_NAMES, table_columns(RECIPIENTS_TABLE));
    }

    #[test]
    fn every_reason_but_human_has_its_column_in_order() {
        let names = <RollupRow as Row>::COLUMN_NAMES;
        let first = names.iter().position(|c| *c == "human_allow_listed").unwrap();
        let columns: Vec<String> = reason_columns().map(|(_, c)| c).collect();
        assert_eq!(columns.len(), Reason::ALL.len() - 1);
        assert_eq!(&names[first..first + columns.len()], columns.as_slice());
    }
}
