-- Per-link one-minute rollups, and the Kafka position they cover.
--
-- Each aggregator flush is ONE insert into this table: the delta rows of the
-- batch plus one checkpoint row per source partition (client_id = '', counts
-- zero) whose source_end_offset is the next offset to consume. The table has
-- no partition key, so an insert of fewer than max_insert_block_size rows
-- becomes one part: it lands whole or not at all, and the rollups can never
-- disagree with the recorded position. On assignment the aggregator reads the
-- position back from here (the checkpoint rows sort first in the primary key).
--
-- clicks = human_clicks + bot_clicks (bot: HEAD or a known link-preview
-- fetcher, flagged by the edge); opens are counted apart.
--
-- Rows are deltas: read with sum(...) GROUP BY. Background merges keep the
-- row count proportional to the number of flushes.
CREATE TABLE IF NOT EXISTS click_rollup_minute
(
    client_id          String,
    campaign_id        String,
    link_id            String,
    bucket_start       DateTime,
    clicks             UInt64,
    human_clicks       UInt64,
    bot_clicks         UInt64,
    opens              UInt64,
    source_topic       String,
    source_partition   Int32,
    source_end_offset  Int64
)
ENGINE = MergeTree()
ORDER BY (client_id, campaign_id, link_id, bucket_start)
