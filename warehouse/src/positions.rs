//! The Kafka positions the aggregators store in ClickHouse, in the same insert
//! as the rollups they cover (see the aggregator's pipeline). Everything that
//! reads them goes through [`read`], so a change to how positions are stored
//! changes this one function.

use std::collections::HashMap;

use clickhouse::{Client, Row};
use serde::Deserialize;

use crate::tables::ROLLUP_TABLE;

#[derive(Row, Deserialize)]
struct PositionRow {
    partition: i32,
    next_offset: i64,
}

/// The stored position (the next offset not yet applied) of every partition
/// of `topic` that has one: the sum of the deltas its flushes wrote, which
/// SummingMergeTree collapses into one row per partition on merge.
pub async fn read(client: &Client, topic: &str) -> Result<HashMap<i32, i64>, clickhouse::error::Error> {
    read_in(client, ROLLUP_TABLE, topic).await
}

/// [`read`] from `table`: on a cluster, the aggregator reads its shard's
/// replicated `_local` table (see the aggregator's `sink.rs`).
pub async fn read_in(client: &Client, table: &str, topic: &str) -> Result<HashMap<i32, i64>, clickhouse::error::Error> {
    let rows = client.query(&select(table)).bind(topic).fetch_all::<PositionRow>().await?;
    Ok(rows.into_iter().map(|r| (r.partition, r.next_offset)).collect())
}

/// The query behind [`read_in`]; the topic is bound.
pub fn select(table: &str) -> String {
    format!(
        "SELECT source_partition AS partition, sum(position_delta) AS next_offset \
         FROM {table} WHERE grain = 0 AND client_id = '' AND source_topic = ? GROUP BY source_partition"
    )
}
