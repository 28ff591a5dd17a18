//! Every SQL statement the aggregator sends, in one place (the rows it
//! inserts are typed structs in [`crate::sink`] and [`crate::mirror`]; the
//! insert statement around them is the `clickhouse` crate's
//! `INSERT INTO table (columns) FORMAT RowBinary`, except the raw events',
//! the rollups' and the breakdowns' ([`rows_insert`], [`breakdown_insert`]),
//! whose bytes the sink writes by hand).
//!
//! Values are bound (`?`), never spliced; what is spliced is a table name from
//! [`ricochet_warehouse::tables`] or a number this crate computed. Each
//! statement runs on ClickHouse 18.16 and on current releases: the
//! `current_clickhouse` integration test runs the literals of this file on
//! chDB too.

use chrono::{DateTime, Utc};

use crate::rollup::Grain;
pub use ricochet_warehouse::tables::{BREAKDOWNS_TABLE, EVENTS_TABLE, RECIPIENTS_TABLE, ROLLUP_TABLE};

/// What the rollup insert goes into: `click_rollups` rows tagged with their
/// partition's fence; its materialized view passes on only rows under the
/// current token (`infra/migrations/0010_breakdowns.sql`, as 0007 made `click_rollups_in`).
pub const ROLLUP_INPUT_TABLE: &str = "click_counts_in";
/// What the breakdown insert goes into: `click_breakdowns` rows in fewer
/// bytes, tagged with their partition's fence and passed on by the same rule
/// (`infra/migrations/0013_compact_breakdown_input.sql`; 0012's
/// `click_breakdowns_in` stays for the build before it).
pub const BREAKDOWNS_INPUT_TABLE: &str = "click_breakdowns_compact_in";
/// Who holds each partition: one row per acquisition.
pub const OWNERS_TABLE: &str = "click_owners";
/// What raw events and recipient rows are inserted into: their materialized
/// views pass on every row whose recipient was not erased
/// (`infra/migrations/0008_recipient_erasures.sql`).
pub const EVENTS_INPUT_TABLE: &str = "click_events_in";
pub const RECIPIENTS_INPUT_TABLE: &str = "click_recipients_in";
pub use ricochet_warehouse::tables::{ERASURE_REQUESTS_TABLE, RECIPIENT_ERASURES_TABLE};
/// The registry mirror's tables (`crate::mirror`).
pub const LINKS_TABLE: &str = "links";
pub const CLIENTS_TABLE: &str = "clients";

// ------------------------------------------------------------------ inserts

/// Settings pinned on the rollup insert, whatever the server's profile says,
/// because exactly-once rests on them:
/// - `max_insert_block_size`: the whole insert is one block, hence one part
///   (the batch is capped far below it, see `AggregatorConfig::max_batch_events`);
/// - `insert_deduplicate = 0`: a replicated table must not drop a flush whose
///   block happens to equal a recent one (two quiet flushes of one click on
///   the same link and minute are byte-identical). Retries never rely on it:
///   a settled retry carries a new fence token.
pub const ROLLUP_INSERT_SETTINGS: [(&str, &str); 2] =
    [("max_insert_block_size", MAX_INSERT_BLOCK_ROWS_STR), ("insert_deduplicate", "0")];

/// The insert of `R`'s rows into `table` (its input table, on a cluster
/// the shard's), its columns in the order `R` declares them: the rows are
/// written by hand ([`crate::sink::RollupRow::put`],
/// [`crate::sink::EventRow::put`]).
pub fn rows_insert<R: clickhouse::Row>(table: &str) -> String {
    format!("INSERT INTO {table} ({}) FORMAT RowBinary", R::COLUMN_NAMES.join(", "))
}

/// The breakdown insert into `table` (its input table, on a cluster the
/// shard's): the rows are [`crate::sink::BreakdownWriter`]'s bytes, in the
/// order of [`crate::sink::BREAKDOWN_COLUMNS`].
pub fn breakdown_insert(table: &str) -> String {
    format!("INSERT INTO {table} ({}) FORMAT RowBinary", crate::sink::BREAKDOWN_COLUMNS.join(", "))
}

/// Rows of one rollup insert at most (ClickHouse's default block size).
pub const MAX_INSERT_BLOCK_ROWS: usize = 1_048_576;
const MAX_INSERT_BLOCK_ROWS_STR: &str = "1048576";

// ------------------------------------------------------------------ fencing and settling

/// How many rows of `count` recipients `table` still holds. Binds like
/// [`delete_recipients`].
pub fn count_recipients(table: &str, count: usize) -> String {
    let pairs = vec!["(?, ?)"; count.max(1)].join(", ");
    format!("SELECT count() FROM {table} WHERE (client_id, recipient_id) IN ({pairs})")
}

/// Inserts still running whose `query_id LIKE ?`: this deployment's (the
/// fence), or every aggregator's writing to this database (an erasure).
pub const RUNNING_INSERTS: &str = "SELECT query_id FROM system.processes WHERE query_id LIKE ?";

/// Marks one query cancelled without waiting for it (an insert stuck
/// receiving its rows from a frozen writer ends when it next reads, before
/// it writes anything).
pub const KILL_QUERY_ASYNC: &str = "KILL QUERY WHERE query_id = ? ASYNC";

/// The stored positions of a topic's partitions in `table` (see
/// `ricochet_warehouse::positions`, which the API shares).
pub fn positions(table: &str) -> String {
    ricochet_warehouse::positions::select(table)
}

/// The ZooKeeper path of a replicated table, to look for a pending quorum insert.
pub const REPLICA_ZOOKEEPER_PATH: &str =
    "SELECT zookeeper_path FROM system.replicas WHERE database = currentDatabase() AND table = ?";

/// Whether a quorum insert into that table is still pending.
pub const PENDING_QUORUM: &str = "SELECT count() FROM system.zookeeper WHERE path = ? AND name = 'status'";

// ------------------------------------------------------------------ erasure

/// The erasure requests not yet applied on one shard, whose own erasure
/// table is `erasures`: at most `limit`, oldest recipients first. `GLOBAL`:
/// on a cluster `erasure_requests` is a Distributed table, and "applied"
/// means applied on this shard, so the set is built here, not on each shard.
pub fn pending_erasures(erasures: &str, limit: usize) -> String {
    format!(
        "SELECT client_id, recipient_id FROM {ERASURE_REQUESTS_TABLE} \
         WHERE (client_id, recipient_id) GLOBAL NOT IN \
           (SELECT client_id, recipient_id FROM {erasures} WHERE applied = 1) \
         GROUP BY client_id, recipient_id ORDER BY client_id, recipient_id LIMIT {limit}"
    )
}

/// Deletes every row of `count` recipients from `table` (a mutation: it
/// rewrites the parts holding them, in the background). Binds two values,
/// client id then recipient id, per recipient.
pub fn delete_recipients(table: &str, count: usize) -> String {
    let pairs = vec!["(?, ?)"; count.max(1)].join(", ");
    format!("ALTER TABLE {table} DELETE WHERE (client_id, recipient_id) IN ({pairs})")
}

// ------------------------------------------------------------------ click limits

/// Clicks so far of the limited links (day grain), summing `column`
/// (`clicks` or `human_clicks`, from `crate::limits::LimitCounts`): client
/// ids narrow the read to the key prefix; both lists are bound.
pub fn limited_link_totals(column: &str) -> String {
    format!(
        "SELECT link_id, sum({column}) AS clicks FROM {ROLLUP_TABLE} \
         WHERE grain = {day} AND dimension = '' AND has(?, client_id) AND has(?, link_id) GROUP BY link_id",
        day = Grain::Day.secs()
    )
}

// ------------------------------------------------------------------ retention

/// Far enough in the future to mean never, and inside `DateTime` (…2106).
pub const NEVER: &str = "toDateTime('2105-12-31 00:00:00')";

/// The active partitions (months) of a table.
pub const ACTIVE_PARTITIONS: &str =
    "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = ? AND active";

/// Drops one month of raw events; `partition` is the server's own id, checked
/// to be digits by the caller.
pub fn drop_events_partition(partition: &str) -> String {
    format!("ALTER TABLE {EVENTS_TABLE} DROP PARTITION {partition}")
}

pub fn count_where(table: &str, condition: &str) -> String {
    format!("SELECT count() FROM {table} WHERE {condition}")
}

pub fn delete_where(table: &str, condition: &str) -> String {
    format!("ALTER TABLE {table} DELETE WHERE {condition}")
}

fn days_after(column: &str, days: u32) -> String {
    if days == 0 {
        NEVER.to_owned()
    } else {
        format!("{column} + toIntervalDay({days})")
    }
}

/// A whole table's TTL. "Never" still names the column: current servers
/// refuse a TTL that depends on no column (code 36, BAD_ARGUMENTS), and the
/// statement must still run, to lift a limit set before.
fn table_ttl(column: &str, days: u32) -> String {
    if days == 0 {
        format!("greatest({column}, {NEVER})")
    } else {
        days_after(column, days)
    }
}

/// The `ALTER TABLE … MODIFY TTL` statements for a server with TTL. Run with
/// `materialize_ttl_after_modify = 0`: existing parts expire as they merge,
/// instead of all being rewritten at every start.
pub fn ttl_statements(policy: &crate::retention::RetentionPolicy) -> Vec<String> {
    let fine = [Grain::Minute, Grain::QuarterHour].map(|g| g.secs().to_string()).join(", ");
    vec![
        format!("ALTER TABLE {EVENTS_TABLE} MODIFY TTL {}", table_ttl("event_time", policy.raw_days)),
        format!(
            "ALTER TABLE {ROLLUP_TABLE} MODIFY TTL multiIf(grain = 0, {NEVER}, grain IN ({fine}), {}, {})",
            days_after("bucket_start", policy.fine_rollup_days),
            days_after("bucket_start", policy.rollup_days)
        ),
        format!("ALTER TABLE {RECIPIENTS_TABLE} MODIFY TTL {}", table_ttl("bucket_start", policy.rollup_days)),
        // Its position rows (grain 0) never expire.
        format!(
            "ALTER TABLE {BREAKDOWNS_TABLE} MODIFY TTL {}",
            match policy.rollup_days {
                0 => table_ttl("bucket_start", 0),
                days => format!("if(grain = 0, {NEVER}, {})", days_after("bucket_start", days)),
            }
        ),
    ]
}

/// The `WHERE` clauses of the rows the job deletes at `now` (rollups first,
/// then recipients and breakdowns), each with the table it applies to. Never matches a
/// position row.
pub fn expired_rows(policy: &crate::retention::RetentionPolicy, now: DateTime<Utc>) -> Vec<(&'static str, String)> {
    let cutoff = |days: u32| now.timestamp() - i64::from(days) * 86_400;
    let fine = [Grain::Minute, Grain::QuarterHour].map(|g| g.secs().to_string()).join(", ");
    let coarse = [Grain::Hour, Grain::Day].map(|g| g.secs().to_string()).join(", ");
    let mut out = Vec::new();
    for (days, grains) in [(policy.fine_rollup_days, fine), (policy.rollup_days, coarse)] {
        if days > 0 {
            out.push((ROLLUP_TABLE, format!("grain IN ({grains}) AND bucket_start < toDateTime({})", cutoff(days))));
        }
    }
    if policy.rollup_days > 0 {
        out.push((RECIPIENTS_TABLE, format!("bucket_start < toDateTime({})", cutoff(policy.rollup_days))));
        out.push((
            BREAKDOWNS_TABLE,
            format!("grain != 0 AND bucket_start < toDateTime({})", cutoff(policy.rollup_days)),
        ));
    }
    out
}

// ------------------------------------------------------------------ decided events

/// The stored verdicts and dimensions of events a member counted but did not
/// get to publish to the decided topic (`crate::decided`): looked up by their
/// sort key (client, campaign, link, a time range, then the ids), which the
/// gap's messages, read again from Kafka, give. `FINAL`: the last written copy
/// of an event, the one the rollups counted. Binds the clients, campaigns,
/// links (`counts`: how many of each), the first and last second, then the
/// event ids (`counts.3`), each value its own placeholder: ClickHouse 18.16
/// reads a bound array after `IN` as one value, and `has()` skips the index.
pub fn stored_decided(table: &str, counts: (usize, usize, usize, usize)) -> String {
    let list = |n: usize| vec!["?"; n.max(1)].join(", ");
    format!(
        "SELECT event_id, toString(event_type) AS event_type, event_time_ms, client_id, campaign_id, link_id, \
         recipient_id, is_human, toString(verdict_reason) AS reason, country, device, os, browser, mail_client, \
         referrer_domain, utm_source, utm_medium, utm_campaign, destination_url \
         FROM {table} FINAL WHERE client_id IN ({}) AND campaign_id IN ({}) AND link_id IN ({}) \
         AND event_time >= toDateTime(?) AND event_time <= toDateTime(?) AND event_id IN ({})",
        list(counts.0),
        list(counts.1),
        list(counts.2),
        list(counts.3),
    )
}
