//! Writing to ClickHouse: row types, the writes of a flush, acquiring
//! partitions (owner rows, the fence, the stored positions), and reading
//! positions back. Mechanism only: *what* to write and *when* is decided by
//! [`crate::protocol`] and the pipeline; the statements are in [`crate::sql`].
//!
//! Works on ClickHouse 18.16 and current releases: plain `RowBinary` (row
//! validation off, 18.16 lacks the typed header format) and values bound on
//! the client (18.16 has no server-side query parameters).
//!
//! **Shards.** A partition's writes (raw events, recipients, rollups,
//! positions, owner rows) all go to one shard, `partition % shards` in the
//! order of `RICOCHET_CLICKHOUSE_SHARD_URLS` (one shard, the server of
//! `RICOCHET_CLICKHOUSE_URL`, by default), whichever member writes them: so a
//! partition that moves between members on different shards resumes from the
//! position stored with its rollups.
//!
//! **Replicas** ([`ClickHouseSink::replicated`]): inserts go to the shard's
//! `_local` ReplicatedMergeTree tables (never through `Distributed`, whose
//! inserts are forwarded later and so are neither atomic nor settleable). A
//! replicated insert of one block is still one part, fetched whole by the
//! other replicas, so rollups and positions still land together:
//!
//! - the rollup insert and the owner rows carry `insert_quorum = N` (use the
//!   number of replicas per shard): acknowledged only once N replicas hold
//!   the part, so an owner row is on every replica before the fence starts;
//! - positions are read with `select_sequential_consistency = 1`: a replica
//!   that lacks a part already written with quorum refuses the read;
//! - a quorum insert that failed *after* its part was written stays pending in
//!   ZooKeeper (`…/quorum/status`) and lands once the replica is back; while
//!   one is pending, reading positions is an error (retried), so a position is
//!   never read from before a part that can still land.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clickhouse::{Client, Row};
use ricochet_schemas::{ClickEvent, EventType, MachineOpen, Reason, RecipientToken};
use serde::{Deserialize, Serialize};

use crate::dimensions::{EventDimensions, Value};
use crate::protocol::{Acquired, Fence, Part};
use crate::rollup::{BreakdownCounts, Counts, Grain, RollupKeyRef};
use crate::sql;

pub use crate::sql::{BREAKDOWNS_TABLE, EVENTS_TABLE, RECIPIENTS_TABLE, ROLLUP_TABLE};

/// Stored positions per partition.
pub type Positions = HashMap<i32, i64>;

/// What a failed write means for the caller: the retry rule, in one type.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Nothing was applied (the server could not be reached, or answered an
    /// error before applying anything): pause and retry later.
    #[error("clickhouse unavailable: {0}")]
    Retry(#[source] clickhouse::error::Error),
    /// The request reached the server and its answer was lost: it may have
    /// been applied. Settle it before writing again.
    #[error("outcome unknown: {0}")]
    Unknown(#[source] clickhouse::error::Error),
    /// Refused for what it is (a type mismatch, a row the table cannot take):
    /// the same rows fail the same way. A bug or a schema out of step; the
    /// pipeline keeps retrying, loudly, rather than lose the counts.
    #[error("refused by clickhouse: {0}")]
    Refused(#[source] clickhouse::error::Error),
    /// A quorum insert into this table is still pending (a replica is behind):
    /// positions cannot be read yet. Retry.
    #[error("a quorum insert into {table} is still pending (a replica is behind); positions cannot be read yet")]
    QuorumPending { table: String },
}

/// ClickHouse error codes that mean "these rows can never be written as they are".
const REFUSED_CODES: [u32; 8] = [
    6,   // CANNOT_PARSE_TEXT
    16,  // NO_SUCH_COLUMN_IN_TABLE
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33,  // CANNOT_READ_ALL_DATA
    53,  // TYPE_MISMATCH
    60,  // UNKNOWN_TABLE
    62,  // SYNTAX_ERROR
    117, // INCORRECT_DATA
];
/// ClickHouse error codes after which an insert may still land: 319
/// UNKNOWN_STATUS_OF_INSERT (the quorum's outcome is unknown), 159
/// TIMEOUT_EXCEEDED (on a quorum wait), 394 QUERY_WAS_CANCELLED (killed late).
const UNKNOWN_CODES: [u32; 3] = [319, 159, 394];

impl WriteError {
    /// Classifies an insert's error by what the caller must do.
    pub fn of_insert(e: clickhouse::error::Error) -> Self {
        use clickhouse::error::Error as E;
        match &e {
            E::BadResponse(text) => match error_code(text) {
                Some(code) if REFUSED_CODES.contains(&code) => WriteError::Refused(e),
                Some(code) if UNKNOWN_CODES.contains(&code) => WriteError::Unknown(e),
                _ => WriteError::Retry(e),
            },
            E::Network(_) if refused_connection(&e) => WriteError::Retry(e),
            E::Network(_) | E::TimedOut => WriteError::Unknown(e),
            _ => WriteError::Refused(e),
        }
    }

    /// Classifies a read's error: nothing a read does can half-apply.
    pub fn of_read(e: clickhouse::error::Error) -> Self {
        WriteError::Retry(e)
    }
}

/// `Code: 53, e.displayText() = …` → 53.
fn error_code(text: &str) -> Option<u32> {
    let at = text.find("Code: ")? + "Code: ".len();
    text[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The connection was refused: the request never left.
fn refused_connection(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        if err.to_string().contains("Connection refused") {
            return true;
        }
        source = err.source();
    }
    false
}

/// One row of `click_events`.
#[derive(Debug, Clone, Row, Serialize)]
pub struct EventRow {
    /// Written as its 36-character text (`event_id String`), formatted as
    /// the row is written rather than held as a string per event.
    pub event_id: uuid::Uuid,
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
    // The breakdowns' dimensions (migration 0009, `crate::dimensions`),
    // shared with the batch's other copies of the same values.
    pub device: &'static str,
    pub os: Value,
    pub browser: Value,
    pub mail_client: &'static str,
    pub referrer_domain: Value,
    pub utm_source: Value,
    pub utm_medium: Value,
    pub utm_campaign: Value,
    /// ISO 3166 alpha-2 (migration 0010); `""` unknown.
    pub country: Value,
}

impl EventRow {
    /// Appends the row as `RowBinary`, its fields in the order they are
    /// declared (the columns `Row` names, checked against the table by
    /// `rows_match_their_tables_column_for_column`): by hand, like
    /// [`RollupRow::put`], rather than serde's writes field by field.
    pub fn put(&self, out: &mut Vec<u8>) {
        fn nullable<const N: usize>(out: &mut Vec<u8>, value: Option<[u8; N]>) {
            match value {
                None => out.push(1),
                Some(bytes) => {
                    out.push(0);
                    out.extend_from_slice(&bytes);
                }
            }
        }
        let mut event_id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        put_strings(out, &[self.event_id.hyphenated().encode_lower(&mut event_id)]);
        out.extend_from_slice(&self.event_time.to_le_bytes());
        out.extend_from_slice(&self.event_time_ms.to_le_bytes());
        put_strings(
            out,
            &[
                &self.client_id,
                &self.campaign_id,
                &self.link_id,
                &self.recipient_id,
                &self.destination_url,
                &self.http_method,
                &self.user_agent,
                &self.referer,
                &self.client_ip,
                &self.edge_node,
            ],
        );
        out.extend_from_slice(&[self.event_type as u8, self.is_prefetch, self.recipient_token as u8]);
        out.extend_from_slice(&self.kafka_partition.to_le_bytes());
        out.extend_from_slice(&self.kafka_offset.to_le_bytes());
        out.extend_from_slice(&self.ingested_at.to_le_bytes());
        out.extend_from_slice(&[self.ua_class as u8, self.network_class as u8]);
        out.extend_from_slice(&self.asn.to_le_bytes());
        put_strings(out, &[&self.network_name]);
        out.extend_from_slice(&[
            self.prefetch_header,
            self.has_accept,
            self.has_accept_language,
            self.scanner_referer,
            self.network_allow_listed,
        ]);
        nullable(out, self.sent_at.map(u32::to_le_bytes));
        out.extend_from_slice(&[self.honeypot, self.is_human, self.verdict_reason as u8]);
        nullable(out, self.seconds_since_send.map(i32::to_le_bytes));
        put_strings(
            out,
            &[
                self.device,
                &self.os,
                &self.browser,
                self.mail_client,
                &self.referrer_domain,
                &self.utm_source,
                &self.utm_medium,
                &self.utm_campaign,
                &self.country,
            ],
        );
    }

    pub fn new(
        e: ClickEvent,
        reason: Reason,
        d: EventDimensions,
        partition: i32,
        offset: i64,
        ingested_at: u32,
    ) -> Self {
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
            device: d.device.as_str(),
            os: d.os,
            browser: d.browser,
            mail_client: d.mail_client.as_str(),
            referrer_domain: d.referrer_domain,
            utm_source: d.utm_source,
            utm_medium: d.utm_medium,
            utm_campaign: d.utm_campaign,
            country: d.country,
            event_id: e.event_id.0,
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

/// One row of `click_counts_in` (= `click_rollups` + the fence): the counts
/// of one bucket at one grain (of one dimension value, on a breakdown row),
/// or the position delta of one partition
/// (`grain` 0). Field order is the table's;
/// the reason fields follow [`Reason::ALL`] without `Human` (see
/// [`reason_columns`]). Its strings borrow from the batch: rows are
/// serialized as they are made, never copied or collected
/// ([`ClickHouseSink::write_rollups`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Row, Serialize)]
pub struct RollupRow<'a> {
    pub grain: u32,
    pub client_id: &'a str,
    pub campaign_id: &'a str,
    pub link_id: &'a str,
    pub bucket_start: u32,
    pub source_topic: &'a str,
    pub source_partition: i32,
    /// `""` on the rollup rows; on a breakdown row, one of
    /// [`crate::rollup::DIMENSIONS`] and the events' value of it.
    pub dimension: &'static str,
    pub value: &'a str,
    pub clicks: u64,
    pub human_clicks: u64,
    pub bot_clicks: u64,
    pub opens: u64,
    pub human_opens: u64,
    pub machine_opens: u64,
    pub open_apple_privacy: u64,
    pub open_scanner: u64,
    pub open_prefetch: u64,
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
    /// The fence the row is written under (`click_counts_in` only): its
    /// partition and the writer's token for it.
    pub fence_partition: i32,
    pub fence_token: u64,
}

/// The rollup column of each click reason but `Human` (plain humans are
/// `human_clicks - human_allow_listed`), in [`Reason::ALL`] order.
pub fn reason_columns() -> impl Iterator<Item = (Reason, String)> {
    Reason::ALL.into_iter().filter(|r| *r != Reason::Human && r.applies_to_clicks()).map(|r| {
        let side = if r.is_human() { "human" } else { "bot" };
        (r, format!("{side}_{}", r.as_str()))
    })
}

impl<'a> RollupRow<'a> {
    /// The counts of `key`'s minute folded into its bucket at `grain`.
    pub fn delta(key: RollupKeyRef<'a>, grain: Grain, counts: &Counts) -> Self {
        let r = |reason| counts.reason(reason);
        RollupRow {
            grain: grain.secs(),
            client_id: key.client_id.as_str(),
            campaign_id: key.campaign_id.as_str(),
            link_id: key.link_id.as_str(),
            bucket_start: grain.floor(key.bucket.0),
            source_topic: "",
            source_partition: 0,
            clicks: counts.clicks,
            human_clicks: counts.human_clicks,
            bot_clicks: counts.bot_clicks,
            opens: counts.opens,
            human_opens: counts.human_opens,
            machine_opens: counts.opens - counts.human_opens,
            open_apple_privacy: counts.machine_open(MachineOpen::ApplePrivacy),
            open_scanner: counts.machine_open(MachineOpen::Scanner),
            open_prefetch: counts.machine_open(MachineOpen::Prefetch),
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
            ..RollupRow::default()
        }
    }

    /// The row that moves a partition's stored position from `previous`
    /// (`None`: nothing stored yet, i.e. 0) to `range.next`. Positive for every
    /// batch (a batch holds at least one offset at or past the stored
    /// position), so neither this row nor the sum it merges into is all-zero.
    pub fn position(topic: &'a str, part: &Part) -> Self {
        RollupRow {
            grain: 0,
            source_topic: topic,
            source_partition: part.range.partition,
            position_delta: part.range.next - part.previous.unwrap_or(0),
            ..RollupRow::default()
        }
        .fenced(part)
    }

    /// Tags the row with the fence of the partition it counts.
    pub fn fenced(mut self, part: &Part) -> Self {
        self.fence_partition = part.range.partition;
        self.fence_token = part.fence.token;
        self
    }

    /// Appends the row as `RowBinary`, its fields in the order they are
    /// declared: the columns `Row` names (checked against the table by
    /// `rows_match_their_tables_column_for_column`), which
    /// [`sql::rows_insert`] lists. By hand rather than through serde,
    /// like the breakdowns' ([`BreakdownWriter`]): serde's writes, field by
    /// field into the insert's buffer, were 6 % of the pipeline thread.
    pub fn put(&self, out: &mut Vec<u8>) {
        let counters = [
            self.clicks,
            self.human_clicks,
            self.bot_clicks,
            self.opens,
            self.human_opens,
            self.machine_opens,
            self.open_apple_privacy,
            self.open_scanner,
            self.open_prefetch,
            self.human_allow_listed,
            self.bot_head,
            self.bot_prefetch_header,
            self.bot_preview_fetcher,
            self.bot_bot_user_agent,
            self.bot_http_client,
            self.bot_scanner_referer,
            self.bot_scanner_network,
            self.bot_honeypot,
            self.bot_burst,
            self.bot_network_fanout,
            self.bot_too_fast_after_send,
            self.bot_rescan,
        ];
        let mut numbers = [0u8; 22 * 8];
        for (slot, counter) in numbers.chunks_exact_mut(8).zip(counters) {
            slot.copy_from_slice(&counter.to_le_bytes());
        }
        out.extend_from_slice(&self.grain.to_le_bytes());
        put_strings(out, &[self.client_id, self.campaign_id, self.link_id]);
        out.extend_from_slice(&self.bucket_start.to_le_bytes());
        put_strings(out, &[self.source_topic]);
        out.extend_from_slice(&self.source_partition.to_le_bytes());
        put_strings(out, &[self.dimension, self.value]);
        out.extend_from_slice(&numbers);
        out.extend_from_slice(&self.position_delta.to_le_bytes());
        out.extend_from_slice(&self.fence_partition.to_le_bytes());
        out.extend_from_slice(&self.fence_token.to_le_bytes());
    }
}

/// `rows` as `RowBinary`, each written by `put` ([`RollupRow::put`],
/// [`EventRow::put`]), in chunks of about [`BreakdownWriter::CHUNK_BYTES`],
/// each with its row count: made as they are sent, never all at once.
pub fn row_chunks<R>(
    rows: impl Iterator<Item = R>,
    put: impl Fn(&R, &mut Vec<u8>),
) -> impl Iterator<Item = (bytes::Bytes, usize)> {
    let mut rows = rows;
    std::iter::from_fn(move || {
        let mut buf = Vec::with_capacity(BreakdownWriter::CAPACITY);
        let mut count = 0;
        for row in rows.by_ref() {
            put(&row, &mut buf);
            count += 1;
            if buf.len() >= BreakdownWriter::CHUNK_BYTES {
                break;
            }
        }
        (count > 0).then(|| (bytes::Bytes::from(buf), count))
    })
}

/// The breakdown insert's columns (`click_breakdowns_compact_in`, migration
/// 0013: `click_breakdowns`' rows in fewer bytes, and the fence) in the order
/// [`BreakdownWriter`] writes them: the owner's strings, then the value's,
/// then numbers, so that each run of strings is encoded once per flush and
/// copied into every row.
pub const BREAKDOWN_COLUMNS: [&str; 17] = [
    "client_id",
    "campaign_id",
    "link_id",
    "dimension_code",
    "value",
    "grain",
    "bucket_start",
    "human_click_count",
    "bot_click_count",
    "human_open_count",
    "apple_privacy_open_count",
    "scanner_open_count",
    "prefetch_open_count",
    "source_topic",
    "position_delta",
    "fence_partition",
    "fence_token",
];

/// The breakdown insert's bytes: `RowBinary` in [`BREAKDOWN_COLUMNS`]' order,
/// written by hand rather than through serde. A flush writes about twelve
/// breakdown rows per event on a drain of many thin links, and a row's
/// strings (its link's or campaign's, its dimension and value) repeat from
/// row to row: [`put_strings`] and [`put_value`] encode each run once per
/// flush, and a row is two copied runs and fixed-size numbers, 60 bytes
/// fewer than a row of `click_breakdowns` itself (migration 0013 says
/// which). The bytes go out in chunks of [`BreakdownWriter::CHUNK_BYTES`] as
/// they fill, never the whole flush at once; a full chunk is set aside and a
/// new one begun, so no buffer is ever grown and copied.
#[derive(Debug)]
pub struct BreakdownWriter {
    buf: Vec<u8>,
    rows: usize,
    /// Full chunks and their rows, oldest first.
    full: std::collections::VecDeque<(bytes::Bytes, usize)>,
    /// `source_topic` `""`, `position_delta` 0 and the current part's fence:
    /// how every counts row of that part ends.
    tail: [u8; Self::TAIL_BYTES],
}

impl Default for BreakdownWriter {
    fn default() -> Self {
        BreakdownWriter {
            buf: Vec::with_capacity(Self::CAPACITY),
            rows: 0,
            full: Default::default(),
            tail: [0; Self::TAIL_BYTES],
        }
    }
}

impl BreakdownWriter {
    /// The size of the chunks handed to the insert. The `clickhouse` crate
    /// passes each to the connection's task through a channel with room for
    /// one, so every chunk is a hand-over between the pipeline thread and a
    /// tokio worker: 1 MiB makes a quarter of the hand-overs 256 KiB (the
    /// crate's own buffer size) did, for 3 MiB more in flight at most.
    pub const CHUNK_BYTES: usize = 1024 * 1024;
    /// A chunk and room for its last row: a row's strings (ids, a
    /// dimension's name, a value of at most 100 characters) are a few
    /// hundred bytes at most.
    pub const CAPACITY: usize = Self::CHUNK_BYTES + 4096;
    const TAIL_BYTES: usize = 1 + 8 + 4 + 8;
    /// `grain`, `bucket_start` and the six counts.
    const NUMBERS_BYTES: usize = 4 + 4 + 6 * 4;

    /// Starts `part`'s rows: its fence on each, and first the row that moves
    /// its breakdowns' position to the part's end, if this part moves it.
    pub fn part(&mut self, topic: &str, part: &Part) {
        let fence = (part.range.partition.to_le_bytes(), part.fence.token.to_le_bytes());
        let mut tail = [0u8; Self::TAIL_BYTES];
        tail[9..13].copy_from_slice(&fence.0);
        tail[13..].copy_from_slice(&fence.1);
        self.tail = tail;
        if let Some(delta) = part.breakdowns_delta() {
            // Empty strings, dimension '' and zero counts, then the position
            // (its partition is the fence's: migration 0013's view reads it there).
            self.buf.resize(self.buf.len() + 5 + Self::NUMBERS_BYTES, 0);
            put_strings(&mut self.buf, &[topic]);
            self.buf.extend_from_slice(&delta.to_le_bytes());
            self.buf.extend_from_slice(&tail[9..]);
            self.rows += 1;
        }
    }

    /// One counts row: the events whose dimension has a value in one bucket
    /// of one link or campaign. `owner` is [`put_strings`] of `[client,
    /// campaign, link]` (`link` `""` for a campaign), `value` [`put_value`]'s.
    #[inline]
    pub fn counts(&mut self, owner: &[u8], value: &[u8], grain: Grain, bucket: u32, counts: &BreakdownCounts) {
        let mut numbers = [0u8; Self::NUMBERS_BYTES];
        let fields = [
            counts.human_clicks,
            counts.clicks - counts.human_clicks,
            counts.human_opens,
            counts.by_machine_open[MachineOpen::ApplePrivacy as usize],
            counts.by_machine_open[MachineOpen::Scanner as usize],
            counts.by_machine_open[MachineOpen::Prefetch as usize],
        ];
        numbers[..4].copy_from_slice(&grain.secs().to_le_bytes());
        numbers[4..8].copy_from_slice(&bucket.to_le_bytes());
        for (slot, field) in numbers[8..].chunks_exact_mut(4).zip(fields) {
            slot.copy_from_slice(&field.to_le_bytes());
        }
        self.buf.reserve(owner.len() + value.len() + Self::NUMBERS_BYTES + Self::TAIL_BYTES);
        self.buf.extend_from_slice(owner);
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(&numbers);
        self.buf.extend_from_slice(&self.tail);
        self.rows += 1;
        if self.buf.len() >= Self::CHUNK_BYTES {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CAPACITY));
            self.full.push_back((bytes::Bytes::from(chunk), std::mem::take(&mut self.rows)));
        }
    }

    /// The oldest full chunk and how many rows it holds.
    pub fn full_chunk(&mut self) -> Option<(bytes::Bytes, usize)> {
        self.full.pop_front()
    }

    /// What is left once every row is written: the full chunks, then the
    /// rest.
    pub fn finish(&mut self) -> Option<(bytes::Bytes, usize)> {
        self.full.pop_front().or_else(|| {
            let rest = std::mem::take(&mut self.buf);
            (!rest.is_empty()).then(|| (bytes::Bytes::from(rest), std::mem::take(&mut self.rows)))
        })
    }
}

/// Appends `strings` as `RowBinary` `String`s: each its length (LEB128) and
/// its bytes.
pub fn put_strings(out: &mut Vec<u8>, strings: &[&str]) {
    for s in strings {
        let mut len = s.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(s.as_bytes());
    }
}

/// Appends a breakdown row's dimension and value: the dimension as its
/// `Enum8` code in `click_breakdowns_compact_in` (its index in
/// [`crate::rollup::DIMENSIONS`] plus one; 0 is a position row's `''`), then
/// the value as a `RowBinary` `String`.
pub fn put_value(out: &mut Vec<u8>, dimension: usize, value: &str) {
    out.push(dimension_code(dimension));
    put_strings(out, &[value]);
}

fn dimension_code(dimension: usize) -> u8 {
    assert!(dimension < crate::rollup::DIMENSIONS.len(), "no dimension {dimension}");
    dimension as u8 + 1
}

/// One row of `click_breakdowns` as the breakdown insert's view makes it
/// from [`BreakdownWriter`]'s bytes ([`decode_breakdowns`]): what the tests
/// check.
#[cfg(test)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakdownRow<'a> {
    pub grain: u32,
    pub client_id: &'a str,
    pub campaign_id: &'a str,
    pub link_id: &'a str,
    pub dimension: &'a str,
    pub value: &'a str,
    pub bucket_start: u32,
    pub source_topic: &'a str,
    pub source_partition: i32,
    pub clicks: u64,
    pub human_clicks: u64,
    pub bot_clicks: u64,
    pub opens: u64,
    pub human_opens: u64,
    pub machine_opens: u64,
    pub open_apple_privacy: u64,
    pub open_scanner: u64,
    pub open_prefetch: u64,
    pub position_delta: i64,
    pub fence_partition: i32,
    pub fence_token: u64,
}

/// [`BreakdownWriter`]'s bytes, the columns in [`BREAKDOWN_COLUMNS`]' order,
/// as the rows migration 0013's view passes on to `click_breakdowns`: the
/// dimension's name, the sums, a position row's partition from its fence.
#[cfg(test)]
pub fn decode_breakdowns(mut bytes: &[u8]) -> Vec<BreakdownRow<'_>> {
    fn string<'a>(bytes: &mut &'a [u8]) -> &'a str {
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let byte = bytes[0];
            *bytes = &bytes[1..];
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte < 0x80 {
                break;
            }
        }
        let (s, rest) = bytes.split_at(len);
        *bytes = rest;
        std::str::from_utf8(s).expect("utf-8")
    }
    fn number<const N: usize>(bytes: &mut &[u8]) -> [u8; N] {
        let (n, rest) = bytes.split_at(N);
        *bytes = rest;
        n.try_into().expect("N bytes")
    }
    let mut rows = Vec::new();
    while !bytes.is_empty() {
        let b = &mut bytes;
        let [client_id, campaign_id, link_id] = [(); 3].map(|()| string(b));
        let [code] = number(b);
        let dimension = match code {
            0 => "",
            code => crate::rollup::DIMENSIONS[usize::from(code) - 1],
        };
        let value = string(b);
        let (grain, bucket_start) = (u32::from_le_bytes(number(b)), u32::from_le_bytes(number(b)));
        let [human_clicks, bot_clicks, human_opens, open_apple_privacy, open_scanner, open_prefetch] =
            [(); 6].map(|()| u64::from(u32::from_le_bytes(number(b))));
        let machine_opens = open_apple_privacy + open_scanner + open_prefetch;
        let (source_topic, position_delta) = (string(b), i64::from_le_bytes(number(b)));
        let (fence_partition, fence_token) = (i32::from_le_bytes(number(b)), u64::from_le_bytes(number(b)));
        rows.push(BreakdownRow {
            grain,
            client_id,
            campaign_id,
            link_id,
            dimension,
            value,
            bucket_start,
            clicks: human_clicks + bot_clicks,
            human_clicks,
            bot_clicks,
            opens: human_opens + machine_opens,
            human_opens,
            machine_opens,
            open_apple_privacy,
            open_scanner,
            open_prefetch,
            source_topic,
            source_partition: if source_topic.is_empty() { 0 } else { fence_partition },
            position_delta,
            fence_partition,
            fence_token,
        });
    }
    rows
}

/// One row of `click_recipients`: a recipient who clicked a link (or opened
/// the message, `is_open`) in a 15-minute bucket, with or without a human verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Row, Serialize)]
pub struct RecipientRow {
    pub client_id: String,
    pub campaign_id: String,
    pub link_id: String,
    pub bucket_start: u32,
    pub human: u8,
    pub recipient_id: String,
    pub is_open: u8,
}

/// One recipient to erase: a row of `erasure_requests`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct Erasure {
    pub client_id: String,
    pub recipient_id: String,
}

/// One row of `recipient_erasures`.
#[derive(Debug, Clone, Row, Serialize)]
struct ErasureRow {
    client_id: String,
    recipient_id: String,
    /// 0: written before the deletes; 1: after them.
    applied: u8,
    erased_at: u32,
}

/// One row of `click_owners`: an acquisition of a partition.
#[derive(Debug, Clone, Row, Serialize)]
struct OwnerRow {
    topic: String,
    partition: i32,
    generation: i32,
    fenced_at_ms: u64,
    token: u64,
}

/// The tables of one shard, on one of its servers.
#[derive(Clone)]
struct Shard {
    client: Client,
    /// Where raw events and recipient rows are inserted (through the
    /// erasure filter), and the tables that hold them (what an erasure deletes from).
    events_in: String,
    recipients_in: String,
    events: String,
    recipients: String,
    /// This shard's copy of the erased recipients.
    erasures: String,
    rollups_in: String,
    rollups: String,
    breakdowns_in: String,
    breakdowns: String,
    owners: String,
}

#[derive(Clone)]
pub struct ClickHouseSink {
    shards: Vec<Shard>,
    topic: String,
    insert_timeout: Duration,
    fence_timeout: Duration,
    /// `insert_quorum` of the rollup insert and owner rows; 0: none.
    quorum: u64,
    /// Every insert's `query_id` starts with it: this deployment's (database
    /// and topic), so the fence waits for and kills nothing else's.
    query_prefix: String,
    /// The part of [`Self::query_prefix`] naming the database: every
    /// aggregator writing there, whatever its topic.
    database_prefix: String,
    /// Acquisition times are strictly increasing within the process, so a
    /// member's own re-acquisition always wins over its earlier one.
    last_fenced_at_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Rows of one write, per shard.
pub struct ShardWrite<'a> {
    pub shard: usize,
    pub parts: Vec<&'a Part>,
}

impl ClickHouseSink {
    /// One server (`clients` has one client) or one client per shard, in
    /// shard order. `database` names this deployment in query ids.
    pub fn new(clients: Vec<Client>, topic: &str, database: &str, insert_timeout: Duration) -> Self {
        let shards = clients
            .into_iter()
            .map(|client| Shard {
                client,
                events_in: sql::EVENTS_INPUT_TABLE.to_owned(),
                recipients_in: sql::RECIPIENTS_INPUT_TABLE.to_owned(),
                events: EVENTS_TABLE.to_owned(),
                recipients: RECIPIENTS_TABLE.to_owned(),
                erasures: sql::RECIPIENT_ERASURES_TABLE.to_owned(),
                rollups_in: sql::ROLLUP_INPUT_TABLE.to_owned(),
                rollups: ROLLUP_TABLE.to_owned(),
                breakdowns_in: sql::BREAKDOWNS_INPUT_TABLE.to_owned(),
                breakdowns: BREAKDOWNS_TABLE.to_owned(),
                owners: sql::OWNERS_TABLE.to_owned(),
            })
            .collect();
        let clean = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect::<String>();
        ClickHouseSink {
            shards,
            topic: topic.to_owned(),
            insert_timeout,
            fence_timeout: insert_timeout,
            quorum: 0,
            query_prefix: format!("ricochet-{}-{}-", clean(database), clean(topic)),
            database_prefix: format!("ricochet-{}-", clean(database)),
            last_fenced_at_ms: Default::default(),
        }
    }

    /// Cluster mode: the replicated `_local` tables, with `insert_quorum =
    /// quorum` (0: off) on the rollup insert and the owner rows.
    pub fn replicated(mut self, quorum: u64) -> Self {
        let local = ricochet_warehouse::cluster::LOCAL_SUFFIX;
        for s in &mut self.shards {
            s.events = format!("{EVENTS_TABLE}{local}");
            s.recipients = format!("{RECIPIENTS_TABLE}{local}");
            s.erasures = format!("{}{local}", sql::RECIPIENT_ERASURES_TABLE);
            s.rollups = format!("{ROLLUP_TABLE}{local}");
            s.breakdowns = format!("{BREAKDOWNS_TABLE}{local}");
            s.owners = format!("{}{local}", sql::OWNERS_TABLE);
        }
        self.quorum = quorum;
        self
    }

    pub fn with_fence_timeout(mut self, timeout: Duration) -> Self {
        self.fence_timeout = timeout;
        self
    }

    pub fn num_shards(&self) -> usize {
        self.shards.len()
    }

    /// The client and raw-events table of `partition`'s shard.
    pub fn events_of(&self, partition: i32) -> (&Client, &str) {
        let shard = &self.shards[self.shard_of(partition)];
        (&shard.client, &shard.events)
    }

    /// The shard that holds `partition`'s rows.
    pub fn shard_of(&self, partition: i32) -> usize {
        partition.rem_euclid(self.shards.len() as i32) as usize
    }

    pub fn query_prefix(&self) -> &str {
        &self.query_prefix
    }

    /// The parts of an attempt grouped by shard.
    pub fn by_shard<'a>(&self, parts: &'a [Part]) -> Vec<ShardWrite<'a>> {
        let mut out: Vec<ShardWrite<'a>> =
            (0..self.shards.len()).map(|shard| ShardWrite { shard, parts: Vec::new() }).collect();
        for part in parts {
            out[self.shard_of(part.range.partition)].parts.push(part);
        }
        out.retain(|w| !w.parts.is_empty());
        out
    }

    /// Raw events of one shard's partitions. Idempotent: a retried write
    /// leaves duplicates that the table's engine collapses by event id.
    /// Through the erasure filter, so an erased recipient's rows never land.
    pub async fn write_events<'a>(
        &self,
        shard: usize,
        rows: impl Iterator<Item = &'a EventRow>,
    ) -> Result<(), WriteError> {
        let mut chunks = row_chunks(rows, |row, out| row.put(out)).peekable();
        if chunks.peek().is_none() {
            return Ok(());
        }
        let statement = sql::rows_insert::<EventRow>(&self.shards[shard].events_in);
        self.write_chunks(shard, statement, [], chunks).await.map(drop)
    }

    /// Recipient rows. Idempotent like raw events: the table keeps one copy of
    /// a row on merge and is read with `uniqExact`.
    pub async fn write_recipients<'a>(
        &self,
        shard: usize,
        rows: impl Iterator<Item = &'a RecipientRow>,
    ) -> Result<(), WriteError> {
        let table = &self.shards[shard].recipients_in;
        self.write_idempotent(shard, table, rows).await
    }

    async fn write_idempotent<'a, R>(
        &self,
        shard: usize,
        table: &str,
        rows: impl Iterator<Item = &'a R>,
    ) -> Result<(), WriteError>
    where
        R: clickhouse::RowOwned + clickhouse::RowWrite + 'a,
    {
        let mut rows = rows.peekable();
        if rows.peek().is_none() {
            return Ok(());
        }
        let client = &self.shards[shard].client;
        // A query id of this deployment, so that an erasure can wait out an
        // insert that may not have met its erasure row.
        let query_id = self.query_id();
        let run = async {
            let mut insert = client
                .insert::<R>(table)
                .await?
                .with_option("query_id", query_id.as_str())
                .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
            for row in rows {
                insert.write(row).await?;
            }
            insert.end().await
        };
        run.await.map_err(WriteError::of_insert)
    }

    /// One shard's rollup deltas and positions in ONE insert through the
    /// fence, tagged with a fresh query id of this deployment.
    /// Writes `rows` as one insert (one block, one part: all or nothing),
    /// serializing each as it comes; returns how many there were.
    pub async fn write_rollups<'a>(
        &self,
        shard: usize,
        rows: impl Iterator<Item = RollupRow<'a>>,
    ) -> Result<usize, WriteError> {
        let statement = sql::rows_insert::<RollupRow<'static>>(&self.shards[shard].rollups_in);
        self.write_chunks(shard, statement, self.fenced_insert_options(), row_chunks(rows, RollupRow::put)).await
    }

    /// One shard's breakdown rows and breakdown positions in ONE insert
    /// through their fence, like [`Self::write_rollups`]; sent before it.
    /// `chunks` are [`BreakdownWriter`]'s, sent as they are made; returns
    /// how many rows they held.
    pub async fn write_breakdowns(
        &self,
        shard: usize,
        chunks: impl Iterator<Item = (bytes::Bytes, usize)>,
    ) -> Result<usize, WriteError> {
        let statement = sql::breakdown_insert(&self.shards[shard].breakdowns_in);
        self.write_chunks(shard, statement, self.fenced_insert_options(), chunks).await
    }

    /// `chunks` of `RowBinary` rows as ONE insert of `statement` with
    /// `options`, tagged with a fresh query id of this deployment (so that a
    /// fence or an erasure can wait out an insert still running), each chunk
    /// sent as it is made; returns how many rows they held.
    async fn write_chunks(
        &self,
        shard: usize,
        statement: String,
        options: impl IntoIterator<Item = (&'static str, String)>,
        chunks: impl Iterator<Item = (bytes::Bytes, usize)>,
    ) -> Result<usize, WriteError> {
        let s = &self.shards[shard];
        let query_id = self.query_id();
        let run = async {
            let mut insert = s
                .client
                .insert_formatted_with(statement)
                .with_option("query_id", query_id.as_str())
                .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
            for (name, value) in options {
                insert = insert.with_option(name, value);
            }
            let mut written = 0;
            for (chunk, rows) in chunks {
                insert.send(chunk).await?;
                written += rows;
            }
            insert.end().await.map(|()| written)
        };
        run.await.map_err(WriteError::of_insert)
    }

    fn with_quorum<T>(&self, mut insert: clickhouse::insert::Insert<T>) -> clickhouse::insert::Insert<T> {
        for (name, value) in self.quorum_options() {
            insert = insert.with_option(name, value);
        }
        insert
    }

    /// A fresh query id of this deployment, so that a fence or an erasure
    /// can find the inserts still running.
    fn query_id(&self) -> String {
        format!("{}{}", self.query_prefix, uuid::Uuid::now_v7().simple())
    }

    /// The settings of both fenced inserts (rollups, breakdowns): the ones
    /// exactly-once rests on, and the quorum on replicas.
    fn fenced_insert_options(&self) -> impl Iterator<Item = (&'static str, String)> {
        sql::ROLLUP_INSERT_SETTINGS
            .map(|(name, value)| (name, value.to_owned()))
            .into_iter()
            .chain(self.quorum_options())
    }

    /// The settings of a fenced insert on replicas (none without).
    fn quorum_options(&self) -> Vec<(&'static str, String)> {
        if self.quorum == 0 {
            return Vec::new();
        }
        // The server gives up waiting for the quorum when the client does.
        vec![
            ("insert_quorum", self.quorum.to_string()),
            ("insert_quorum_timeout", self.insert_timeout.as_millis().to_string()),
        ]
    }

    /// Acquires `partitions` under `generation` (the module doc of
    /// [`crate::protocol`]): owner rows with fresh tokens, then the fence,
    /// then the stored positions. Every partition or none.
    pub async fn acquire(&self, partitions: &[i32], generation: i32) -> Result<Vec<Acquired>, WriteError> {
        let mut acquired = Vec::with_capacity(partitions.len());
        for shard in 0..self.shards.len() {
            let mine: Vec<i32> = partitions.iter().copied().filter(|p| self.shard_of(*p) == shard).collect();
            if mine.is_empty() {
                continue;
            }
            let fences: Vec<(i32, Fence)> =
                mine.iter().map(|p| (*p, Fence { generation, token: rand::random::<u64>() | 1 })).collect();
            self.write_owners(shard, &fences).await?;
            self.fence(shard).await?;
            let (stored, breakdowns) = self.read_positions(shard).await?;
            acquired.extend(fences.into_iter().map(|(partition, fence)| Acquired {
                partition,
                stored: stored.get(&partition).copied(),
                breakdowns: breakdowns.get(&partition).copied(),
                fence,
            }));
        }
        Ok(acquired)
    }

    async fn write_owners(&self, shard: usize, fences: &[(i32, Fence)]) -> Result<(), WriteError> {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let prev = self.last_fenced_at_ms.fetch_max(now, Ordering::SeqCst);
        let fenced_at_ms = if prev >= now { self.last_fenced_at_ms.fetch_add(1, Ordering::SeqCst) + 1 } else { now };
        let s = &self.shards[shard];
        let run = async {
            let mut insert = s
                .client
                .insert::<OwnerRow>(&s.owners)
                .await?
                .with_option("insert_deduplicate", "0")
                .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
            insert = self.with_quorum(insert);
            for (partition, fence) in fences {
                let row = OwnerRow {
                    topic: self.topic.clone(),
                    partition: *partition,
                    generation: fence.generation,
                    fenced_at_ms,
                    token: fence.token,
                };
                insert.write(&row).await?;
            }
            insert.end().await
        };
        // An owner row whose answer was lost may or may not be there: either
        // way a fresh acquisition follows, so it is a plain retry.
        run.await.map_err(|e| match WriteError::of_insert(e) {
            WriteError::Unknown(e) => WriteError::Retry(e),
            other => other,
        })
    }

    /// Waits until this deployment's inserts running on the shard's server
    /// have ended. One still running after the fence timeout is killed: it is
    /// stuck receiving its rows (a frozen writer), and a killed insert that
    /// receives them later is cancelled before it writes; its rows would meet
    /// the new token anyway.
    async fn fence(&self, shard: usize) -> Result<(), WriteError> {
        self.wait_out_inserts(shard, &format!("{}%", self.query_prefix)).await
    }

    /// Waits until the inserts running now on the shard's server whose query
    /// id is `LIKE pattern` have ended; kills those still running after the
    /// fence timeout (see [`Self::fence`]).
    async fn wait_out_inserts(&self, shard: usize, pattern: &str) -> Result<(), WriteError> {
        let client = &self.shards[shard].client;
        let running = || async {
            client.query(sql::RUNNING_INSERTS).bind(pattern).fetch_all::<String>().await.map_err(WriteError::of_read)
        };
        let fenced = running().await?;
        if fenced.is_empty() {
            return Ok(());
        }
        tracing::info!(?fenced, "waiting for inserts still running");
        let deadline = Instant::now() + self.fence_timeout;
        loop {
            let still: Vec<String> = running().await?.into_iter().filter(|q| fenced.contains(q)).collect();
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                for query_id in &still {
                    tracing::warn!(query_id, "killing an insert that outlived the fence");
                    client
                        .query(sql::KILL_QUERY_ASYNC)
                        .bind(query_id.as_str())
                        .execute()
                        .await
                        .map_err(WriteError::of_read)?;
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The stored positions (next offset to apply) of every partition on one
    /// shard: the rollups', then the breakdowns'. With quorum writes: an
    /// error while a quorum insert is pending, and never older than any
    /// insert acknowledged by the quorum.
    pub async fn read_positions(&self, shard: usize) -> Result<(Positions, Positions), WriteError> {
        let s = &self.shards[shard];
        let client = if self.quorum > 0 {
            // The breakdowns first: their insert goes first, so a pending one
            // there may precede one of the rollups.
            self.check_no_pending_quorum(shard, &s.breakdowns).await?;
            self.check_no_pending_quorum(shard, &s.rollups).await?;
            s.client.clone().with_option("select_sequential_consistency", "1")
        } else {
            s.client.clone()
        };
        let read = |table| ricochet_warehouse::positions::read_in(&client, table, &self.topic);
        let rollups = read(&s.rollups).await.map_err(WriteError::of_read)?;
        let breakdowns = read(&s.breakdowns).await.map_err(WriteError::of_read)?;
        Ok((rollups, breakdowns))
    }

    /// The stored positions of the shards holding `partitions`.
    pub async fn read_positions_of(&self, partitions: &[i32]) -> Result<(Positions, Positions), WriteError> {
        let mut shards: Vec<usize> = partitions.iter().map(|p| self.shard_of(*p)).collect();
        shards.sort_unstable();
        shards.dedup();
        let (mut rollups, mut breakdowns) = (HashMap::new(), HashMap::new());
        for shard in shards {
            let mine = |(p, _): &(i32, i64)| self.shard_of(*p) == shard;
            let (r, b) = self.read_positions(shard).await?;
            rollups.extend(r.into_iter().filter(mine));
            breakdowns.extend(b.into_iter().filter(mine));
        }
        Ok((rollups, breakdowns))
    }

    /// Up to `limit` erasure requests not yet applied on `shard`.
    pub async fn pending_erasures(&self, shard: usize, limit: usize) -> Result<Vec<Erasure>, WriteError> {
        let s = &self.shards[shard];
        s.client.query(&sql::pending_erasures(&s.erasures, limit)).fetch_all().await.map_err(WriteError::of_read)
    }

    /// Applies `erasures` on `shard` in the order [`crate::erasure`] argues
    /// for: the erasure rows (which the insert views read), then the wait for
    /// every insert already running into this database, then the deletes, a
    /// second look after the insert timeout, and only then the rows that take
    /// the requests off the queue. Any step may
    /// fail and be retried from the start: each one is idempotent.
    pub async fn erase(&self, shard: usize, erasures: &[Erasure]) -> Result<(), WriteError> {
        if erasures.is_empty() {
            return Ok(());
        }
        let s = &self.shards[shard];
        self.write_erasures(shard, erasures, 0).await?;
        self.wait_out_inserts(shard, &format!("{}%", self.database_prefix)).await?;
        for table in [&s.events, &s.recipients] {
            self.delete_recipients(shard, table, erasures).await?;
        }
        // A member writing this shard through another of its replicas had its
        // inserts running there, not waited out above: one that began before
        // the erasure rows reached that replica may land after the delete. After
        // the insert timeout every such insert has ended or been given up by
        // its writer (and replicated here), so what is left of them is deleted now.
        tokio::time::sleep(self.insert_timeout).await;
        for table in [&s.events, &s.recipients] {
            let mut count = s.client.query(&sql::count_recipients(table, erasures.len()));
            for e in erasures {
                count = count.bind(e.client_id.as_str()).bind(e.recipient_id.as_str());
            }
            if count.fetch_one::<u64>().await.map_err(WriteError::of_read)? > 0 {
                tracing::info!(shard, table, "rows of erased recipients landed late; deleting them too");
                self.delete_recipients(shard, table, erasures).await?;
            }
        }
        self.write_erasures(shard, erasures, 1).await
    }

    async fn delete_recipients(&self, shard: usize, table: &str, erasures: &[Erasure]) -> Result<(), WriteError> {
        let mut delete = self.shards[shard].client.query(&sql::delete_recipients(table, erasures.len()));
        for e in erasures {
            delete = delete.bind(e.client_id.as_str()).bind(e.recipient_id.as_str());
        }
        delete.execute().await.map_err(WriteError::of_read)
    }

    async fn write_erasures(&self, shard: usize, erasures: &[Erasure], applied: u8) -> Result<(), WriteError> {
        let s = &self.shards[shard];
        let erased_at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
        let run = async {
            let insert = s
                .client
                .insert::<ErasureRow>(&s.erasures)
                .await?
                .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
            let mut insert = self.with_quorum(insert);
            for e in erasures {
                let row = ErasureRow {
                    client_id: e.client_id.clone(),
                    recipient_id: e.recipient_id.clone(),
                    applied,
                    erased_at,
                };
                insert.write(&row).await?;
            }
            insert.end().await
        };
        run.await.map_err(WriteError::of_insert)
    }

    /// `Err(QuorumPending)` while ZooKeeper holds `…/quorum/status` for
    /// `table` (the shard's rollups or breakdowns).
    async fn check_no_pending_quorum(&self, shard: usize, table: &str) -> Result<(), WriteError> {
        let s = &self.shards[shard];
        // system.zookeeper needs a literal path, so the table's path is read first.
        let zookeeper_path = s
            .client
            .query(sql::REPLICA_ZOOKEEPER_PATH)
            .bind(table)
            .fetch_one::<String>()
            .await
            .map_err(WriteError::of_read)?;
        let pending = s
            .client
            .query(sql::PENDING_QUORUM)
            .bind(format!("{zookeeper_path}/quorum"))
            .fetch_one::<u64>()
            .await
            .map_err(WriteError::of_read)?;
        if pending > 0 {
            return Err(WriteError::QuorumPending { table: table.to_owned() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The columns `table` has once every migration ran, in order: the
    /// migrations replayed over a map of table → columns (`CREATE TABLE … (…)`,
    /// `CREATE TABLE … AS source`, `ALTER TABLE … ADD COLUMN`).
    fn table_columns(table: &str) -> Vec<String> {
        let mut tables: HashMap<String, Vec<String>> = HashMap::new();
        for (_, file) in ricochet_warehouse::migrations::MIGRATIONS {
            for statement in ricochet_warehouse::migrations::statements(file) {
                let code: Vec<&str> = statement.lines().filter(|l| !l.trim_start().starts_with("--")).collect();
                let code = code.join("\n");
                let words: Vec<&str> = code.split_whitespace().collect();
                match words[..] {
                    ["CREATE", "TABLE", "IF", "NOT", "EXISTS", name, "AS", source, ..] => {
                        let copied = tables[source].clone();
                        tables.insert(name.to_owned(), copied);
                    }
                    ["CREATE", "TABLE", "IF", "NOT", "EXISTS", name, ..] => {
                        let body = &code[code.find("\n(").unwrap() + 2..code.find("\n)").unwrap()];
                        let columns = body
                            .lines()
                            .filter_map(|l| l.split_whitespace().next())
                            .map(|c| c.trim_end_matches(',').to_owned())
                            .collect();
                        tables.insert(name.to_owned(), columns);
                    }
                    ["ALTER", "TABLE", name, ..] => {
                        let added = code.split("ADD COLUMN ").skip(1).filter_map(|c| c.split_whitespace().next());
                        tables.get_mut(name).unwrap().extend(added.map(String::from));
                    }
                    _ => {}
                }
            }
        }
        tables.remove(table).unwrap_or_else(|| panic!("no table {table} in the migrations"))
    }

    /// `RollupRow::put` writes every field, in the order `Row` names the
    /// columns (the order the insert lists them in), each in its column's
    /// type: read back column by column, every value is the row's.
    #[test]
    fn rollup_rows_are_written_in_the_order_of_their_columns() {
        let row = RollupRow {
            grain: 3_600,
            client_id: "acme",
            campaign_id: "spring",
            link_id: "l1",
            bucket_start: 1_764_000_000,
            source_topic: "clicks",
            source_partition: 7,
            dimension: "country",
            value: "DE",
            clicks: 101,
            human_clicks: 102,
            bot_clicks: 103,
            opens: 104,
            human_opens: 105,
            machine_opens: 106,
            open_apple_privacy: 107,
            open_scanner: 108,
            open_prefetch: 109,
            human_allow_listed: 110,
            bot_head: 111,
            bot_prefetch_header: 112,
            bot_preview_fetcher: 113,
            bot_bot_user_agent: 114,
            bot_http_client: 115,
            bot_scanner_referer: 116,
            bot_scanner_network: 117,
            bot_honeypot: 118,
            bot_burst: 119,
            bot_network_fanout: 120,
            bot_too_fast_after_send: 121,
            bot_rescan: 122,
            position_delta: -5,
            fence_partition: 8,
            fence_token: u64::MAX - 1,
        };
        let mut bytes = Vec::new();
        row.put(&mut bytes);
        assert_reads_back(
            &bytes,
            <RollupRow<'static> as Row>::COLUMN_NAMES,
            &serde_json::to_value(&row).unwrap(),
            |c| match c {
                "client_id" | "campaign_id" | "link_id" | "source_topic" | "dimension" | "value" => Kind::Str,
                "grain" | "bucket_start" => Kind::U32,
                "source_partition" | "fence_partition" => Kind::I32,
                "position_delta" => Kind::I64,
                _ => Kind::U64,
            },
        );
    }

    /// The same for raw events, with their `Nullable` columns null and not.
    #[test]
    fn event_rows_are_written_in_the_order_of_their_columns() {
        let s = |v: &str| v.to_owned();
        let mut row = EventRow {
            event_id: "0199a0b1-0000-7000-8000-000000000001".parse().unwrap(),
            event_time: 1_764_000_000,
            event_time_ms: 1_764_000_000_123,
            client_id: s("acme"),
            campaign_id: s("spring"),
            link_id: s("l1"),
            recipient_id: s("ann@x.example"),
            destination_url: s("https://shop.example/?utm_source=news"),
            http_method: s("GET"),
            user_agent: s("Mozilla/5.0 (Windows NT 10.0; Win64; x64)"),
            referer: s("https://mail.google.com/"),
            client_ip: s("192.0.2.0"),
            edge_node: s("edge-1"),
            event_type: 2,
            is_prefetch: 1,
            recipient_token: -1,
            kafka_partition: 7,
            kafka_offset: 123_456_789_012,
            ingested_at: 1_764_000_009,
            ua_class: 3,
            network_class: -4,
            asn: 15_169,
            network_name: s("Google"),
            prefetch_header: 1,
            has_accept: 0,
            has_accept_language: 1,
            scanner_referer: 0,
            network_allow_listed: 1,
            sent_at: Some(1_763_999_000),
            honeypot: 0,
            is_human: 1,
            verdict_reason: 5,
            seconds_since_send: Some(-1_000),
            device: "desktop",
            os: "Windows".into(),
            browser: "Chrome".into(),
            mail_client: "gmail",
            referrer_domain: "mail.google.com".into(),
            utm_source: "news".into(),
            utm_medium: "email".into(),
            utm_campaign: "Spring Sale".into(),
            country: "DE".into(),
        };
        let kind = |c: &str| match c {
            "event_time" | "ingested_at" | "asn" => Kind::U32,
            "event_time_ms" | "kafka_offset" => Kind::I64,
            "kafka_partition" => Kind::I32,
            "event_type" | "recipient_token" | "ua_class" | "network_class" | "verdict_reason" => Kind::I8,
            "is_prefetch"
            | "prefetch_header"
            | "has_accept"
            | "has_accept_language"
            | "scanner_referer"
            | "network_allow_listed"
            | "honeypot"
            | "is_human" => Kind::U8,
            "sent_at" => Kind::NullableU32,
            "seconds_since_send" => Kind::NullableI32,
            _ => Kind::Str,
        };
        for _ in 0..2 {
            let mut bytes = Vec::new();
            row.put(&mut bytes);
            let want = serde_json::to_value(&row).unwrap();
            assert_reads_back(&bytes, <EventRow as Row>::COLUMN_NAMES, &want, kind);
            (row.sent_at, row.seconds_since_send) = (None, None);
        }
    }

    /// A column's `RowBinary` type, as the tests read it back.
    #[derive(Clone, Copy)]
    enum Kind {
        Str,
        U8,
        I8,
        U32,
        I32,
        U64,
        I64,
        NullableU32,
        NullableI32,
    }

    /// Reads `bytes` column by column, each as `kind` says, and checks each
    /// value against the row's serde view `want`, and that nothing is left.
    fn assert_reads_back(bytes: &[u8], columns: &[&str], want: &serde_json::Value, kind: impl Fn(&str) -> Kind) {
        let mut at = bytes;
        let mut take = |n: usize| {
            let (head, rest) = at.split_at(n);
            at = rest;
            head.to_vec()
        };
        for column in columns {
            let mut kind = kind(column);
            let got = loop {
                break match kind {
                    Kind::Str => {
                        let len = take(1)[0] as usize;
                        assert!(len < 0x80, "{column}: the test reads one-byte lengths");
                        serde_json::Value::from(String::from_utf8(take(len)).unwrap())
                    }
                    Kind::U8 => take(1)[0].into(),
                    Kind::I8 => (take(1)[0] as i8).into(),
                    Kind::U32 => u32::from_le_bytes(take(4).try_into().unwrap()).into(),
                    Kind::I32 => i32::from_le_bytes(take(4).try_into().unwrap()).into(),
                    Kind::U64 => u64::from_le_bytes(take(8).try_into().unwrap()).into(),
                    Kind::I64 => i64::from_le_bytes(take(8).try_into().unwrap()).into(),
                    Kind::NullableU32 | Kind::NullableI32 if take(1)[0] == 1 => serde_json::Value::Null,
                    Kind::NullableU32 => {
                        kind = Kind::U32;
                        continue;
                    }
                    Kind::NullableI32 => {
                        kind = Kind::I32;
                        continue;
                    }
                };
            };
            assert_eq!(got, want[*column], "{column}");
        }
        assert!(at.is_empty(), "{} bytes left over", at.len());
    }

    #[test]
    fn rows_match_their_tables_column_for_column() {
        assert_eq!(<RollupRow<'static> as Row>::COLUMN_NAMES, table_columns(sql::ROLLUP_INPUT_TABLE));
        let mut counted: Vec<String> =
            table_columns(sql::ROLLUP_INPUT_TABLE).into_iter().filter(|c| !c.starts_with("fence_")).collect();
        // Column order differs: 0010 appended the new ones to click_rollups.
        let mut rollups = table_columns(ROLLUP_TABLE);
        counted.sort();
        rollups.sort();
        assert_eq!(counted, rollups, "the input table is the rollups' columns and the fence");
        // The breakdown insert names every column of its table once, in its
        // own order (what its view makes of them: the integration tests).
        let mut written: Vec<String> = BREAKDOWN_COLUMNS.map(String::from).to_vec();
        let mut input = table_columns(sql::BREAKDOWNS_INPUT_TABLE);
        written.sort();
        input.sort();
        assert_eq!(written, input, "the breakdown insert's columns");
        assert_eq!(<RecipientRow as Row>::COLUMN_NAMES, table_columns(RECIPIENTS_TABLE));
        // The erasure filter's input tables take exactly the rows the sink writes.
        assert_eq!(<EventRow as Row>::COLUMN_NAMES, table_columns(sql::EVENTS_INPUT_TABLE));
        assert_eq!(table_columns(EVENTS_TABLE), table_columns(sql::EVENTS_INPUT_TABLE), "what the view passes on");
        assert_eq!(<RecipientRow as Row>::COLUMN_NAMES, table_columns(sql::RECIPIENTS_INPUT_TABLE));
    }

    #[test]
    fn dimension_codes_are_the_input_table_s_enum() {
        let (_, sql) = ricochet_warehouse::migrations::MIGRATIONS
            .iter()
            .find(|(version, _)| *version == "0013_compact_breakdown_input")
            .expect("migration 0013");
        let line = sql.lines().find(|l| l.trim_start().starts_with("dimension_code")).expect("the column");
        let body = &line[line.find("Enum8(").expect("an Enum8") + "Enum8(".len()..line.rfind(')').unwrap()];
        let declared: Vec<(String, u8)> = body
            .split(", ")
            .map(|pair| {
                let (name, code) = pair.split_once(" = ").expect("'name' = code");
                (name.trim_matches('\'').to_owned(), code.parse().expect("a code"))
            })
            .collect();
        let mut written = vec![(String::new(), 0)];
        written.extend(crate::rollup::DIMENSIONS.iter().enumerate().map(|(i, d)| (d.to_string(), dimension_code(i))));
        assert_eq!(declared, written);
    }

    #[test]
    fn breakdown_rows_read_back_as_written_whatever_their_strings_length() {
        let fence = Fence { generation: 1, token: u64::MAX - 7 };
        let part = Part {
            range: crate::checkpoint::PartitionRange { partition: 3, first: 10, next: 25 },
            previous: Some(10),
            breakdowns_previous: Some(12),
            fence,
        };
        // 127 and 128 bytes: a one- and a two-byte length.
        let (long, longer) = ("x".repeat(127), "é".repeat(64));
        let (mut owner, mut value) = (Vec::new(), Vec::new());
        put_strings(&mut owner, &["a", &long, ""]);
        put_value(&mut value, 0, &longer);
        let counts =
            BreakdownCounts { clicks: 5, human_clicks: 2, opens: 4, human_opens: 1, by_machine_open: [1, 2, 0] };
        let mut w = BreakdownWriter::default();
        w.part("clicks", &part);
        w.counts(&owner, &value, Grain::Day, 86_400, &counts);
        let (bytes, rows) = w.finish().expect("two rows");
        assert_eq!(w.finish(), None);
        let fenced = BreakdownRow { fence_partition: 3, fence_token: u64::MAX - 7, ..BreakdownRow::default() };
        let position =
            BreakdownRow { source_topic: "clicks", source_partition: 3, position_delta: 13, ..fenced.clone() };
        let row = BreakdownRow {
            grain: 86_400,
            client_id: "a",
            campaign_id: &long,
            dimension: "country",
            value: &longer,
            bucket_start: 86_400,
            clicks: 5,
            human_clicks: 2,
            bot_clicks: 3,
            opens: 4,
            human_opens: 1,
            machine_opens: 3,
            open_apple_privacy: 1,
            open_scanner: 2,
            ..fenced
        };
        assert_eq!((decode_breakdowns(&bytes), rows), (vec![position, row], 2));
    }

    #[test]
    fn breakdown_chunks_are_cut_at_the_chunk_size_and_never_grown() {
        let part = Part {
            range: crate::checkpoint::PartitionRange { partition: 0, first: 0, next: 1 },
            previous: None,
            breakdowns_previous: None,
            fence: Fence { generation: 1, token: 9 },
        };
        let mut w = BreakdownWriter::default();
        w.part("clicks", &part);
        let counts = BreakdownCounts { clicks: 1, ..BreakdownCounts::default() };
        // Rows of ~110 bytes: enough for three full chunks and a rest.
        let total = (3 * BreakdownWriter::CHUNK_BYTES / 100) as u32;
        for i in 0..total {
            let (mut owner, mut value) = (Vec::new(), Vec::new());
            put_strings(&mut owner, &["client", "campaign", &format!("{i:032x}")]);
            put_value(&mut value, 0, "DE");
            w.counts(&owner, &value, Grain::Hour, 3_600 * i, &counts);
        }
        let chunks: Vec<_> = std::iter::from_fn(|| w.finish()).collect();
        assert!(chunks.len() > 2, "{} chunks", chunks.len());
        for (chunk, _) in &chunks[..chunks.len() - 1] {
            assert!(
                (BreakdownWriter::CHUNK_BYTES..BreakdownWriter::CAPACITY).contains(&chunk.len()),
                "{}",
                chunk.len()
            );
        }
        let rows: Vec<BreakdownRow> = chunks.iter().flat_map(|(c, _)| decode_breakdowns(c)).collect();
        assert_eq!(rows.len(), total as usize + 1, "every row and the position");
        assert_eq!(chunks.iter().map(|c| c.1).sum::<usize>(), rows.len());
        let buckets: Vec<u32> = rows.iter().filter(|r| r.grain != 0).map(|r| r.bucket_start).collect();
        assert_eq!(buckets, (0..total).map(|i| 3_600 * i).collect::<Vec<_>>(), "in the order written");
    }

    #[test]
    fn an_erasure_deletes_every_recipient_it_binds() {
        let one = sql::delete_recipients("click_events", 1);
        assert_eq!(one, "ALTER TABLE click_events DELETE WHERE (client_id, recipient_id) IN ((?, ?))");
        let three = sql::delete_recipients("click_recipients_local", 3);
        assert_eq!(three.matches('?').count(), 6, "{three}");
        assert!(sql::pending_erasures("recipient_erasures_local", 500).contains("GLOBAL NOT IN"));
    }

    #[test]
    fn errors_say_what_the_caller_must_do() {
        use clickhouse::error::Error as E;
        let refused = E::BadResponse("Code: 53, e.displayText() = DB::Exception: Type mismatch".into());
        assert!(matches!(WriteError::of_insert(refused), WriteError::Refused(_)));
        let quorum =
            E::BadResponse("Code: 319, e.displayText() = DB::Exception: Unknown status, client must retry".into());
        assert!(matches!(WriteError::of_insert(quorum), WriteError::Unknown(_)));
        let down = E::BadResponse("Code: 242, e.displayText() = DB::Exception: Table is in readonly mode".into());
        assert!(matches!(WriteError::of_insert(down), WriteError::Retry(_)));
        assert!(matches!(WriteError::of_insert(E::TimedOut), WriteError::Unknown(_)));
        let refused_conn = E::Network(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        assert!(matches!(WriteError::of_insert(refused_conn), WriteError::Retry(_)));
        let reset = E::Network(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        assert!(matches!(WriteError::of_insert(reset), WriteError::Unknown(_)));
    }

    #[test]
    fn every_reason_but_human_has_its_column_in_order() {
        let names = <RollupRow<'static> as Row>::COLUMN_NAMES;
        let first = names.iter().position(|c| *c == "human_allow_listed").unwrap();
        let columns: Vec<String> = reason_columns().map(|(_, c)| c).collect();
        assert_eq!(columns.len(), Reason::ALL.len() - 2, "every reason but human and apple_privacy");
        assert_eq!(&names[first..first + columns.len()], columns.as_slice());
    }
}
