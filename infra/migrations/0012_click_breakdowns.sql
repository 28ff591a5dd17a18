-- Breakdowns in a table of their own (issue 16). 0010 wrote them into
-- click_rollups, per link, so that one insert covered them and the positions;
-- but a breakdown then read every dimension's rows of a campaign's links in
-- 8,192-row granules, and each row carried every rollup column. Here:
--
-- - rows per campaign (link_id = '') and per link, at the hour (3600) and UTC
--   day (86400) grains: a campaign's breakdown reads its own rows, not its
--   links';
-- - the dimension ahead of the campaign and the bucket in the sorting key,
--   and small granules: a 30-day breakdown of one campaign by one dimension
--   reads about 30 × its values rows;
-- - only the counts a breakdown answers with (clicks and opens by verdict).
--
-- Exactly once, with positions of its own: each flush writes, per partition,
-- the breakdown rows of its events and the delta of the breakdowns' position
-- (grain 0, client_id '', as in click_rollups) in ONE insert (no partition
-- key: one part), through a fence like click_counts_in's. The aggregator
-- sends it before the rollups' insert and resumes reading from the rollups'
-- position; events before the breakdowns' position go to the rollups only
-- (aggregator/src/protocol.rs has the argument). A database that had 0010's
-- breakdowns keeps them in click_rollups (dimension != ''); the breakdowns
-- here begin where the rollups were when the aggregator first ran with it.
--
-- Read with sum(...) GROUP BY, filtered on one dimension and one grain, and
-- on link_id = '' for a campaign's (or a client's) counts.
CREATE TABLE IF NOT EXISTS click_breakdowns
(
    grain               UInt32,
    client_id           String,
    campaign_id         String,
    link_id             String,
    dimension           String,
    value               String,
    bucket_start        DateTime,
    source_topic        String,
    source_partition    Int32,
    clicks              UInt64,
    human_clicks        UInt64,
    bot_clicks          UInt64,
    opens               UInt64,
    human_opens         UInt64,
    machine_opens       UInt64,
    open_apple_privacy  UInt64,
    open_scanner        UInt64,
    open_prefetch       UInt64,
    position_delta      Int64
)
ENGINE = SummingMergeTree()
ORDER BY (client_id, dimension, grain, campaign_id, link_id, bucket_start, value, source_topic, source_partition)
SETTINGS index_granularity = 256;

-- What the aggregator inserts into: click_breakdowns' rows tagged with their
-- partition and the writer's token, passed on only under the partition's
-- current token (the same rule as click_counts_fence, 0010).
CREATE TABLE IF NOT EXISTS click_breakdowns_in
(
    grain               UInt32,
    client_id           String,
    campaign_id         String,
    link_id             String,
    dimension           String,
    value               String,
    bucket_start        DateTime,
    source_topic        String,
    source_partition    Int32,
    clicks              UInt64,
    human_clicks        UInt64,
    bot_clicks          UInt64,
    opens               UInt64,
    human_opens         UInt64,
    machine_opens       UInt64,
    open_apple_privacy  UInt64,
    open_scanner        UInt64,
    open_prefetch       UInt64,
    position_delta      Int64,
    fence_partition     Int32,
    fence_token         UInt64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS click_breakdowns_fence TO click_breakdowns AS
SELECT grain, client_id, campaign_id, link_id, dimension, value, bucket_start, source_topic, source_partition,
       clicks, human_clicks, bot_clicks, opens, human_opens, machine_opens, open_apple_privacy, open_scanner,
       open_prefetch, position_delta
FROM click_breakdowns_in
WHERE (fence_partition, fence_token) IN
(
    SELECT partition, argMax(token, fenced_at_ms)
    FROM click_owners
    WHERE (topic, partition, generation) IN
        (SELECT topic, partition, max(generation) FROM click_owners GROUP BY topic, partition)
    GROUP BY topic, partition
);
