-- Fencing (aggregator/src/protocol.rs has the argument): a member that was
-- frozen, cut off from Kafka or stuck in a slow write must not land rollups
-- or positions for a partition it no longer owns.
--
-- click_owners: who holds each partition, one row per acquisition. A member
-- writes a row with a fresh random token every time it acquires a partition
-- (on assignment, and again before settling an insert whose answer it lost),
-- *before* it waits out running inserts and reads the stored position. The
-- current holder of a partition is the newest row of its highest consumer-group
-- generation (Kafka hands a partition to a new owner only in a later
-- generation; within one, the later acquisition wins).
CREATE TABLE IF NOT EXISTS click_owners
(
    topic         String,
    partition     Int32,
    generation    Int32,
    fenced_at_ms  UInt64,
    token         UInt64
)
ENGINE = ReplacingMergeTree()
ORDER BY (topic, partition, generation, fenced_at_ms, token);

-- What the aggregator inserts into: the rows of click_rollups, each tagged
-- with the partition it counts and the writer's token for it (random 64-bit
-- tokens: the topic need not travel with every row). The table keeps
-- nothing (Null); the view below passes on only the rows whose token is the
-- partition's current one, as one block into click_rollups, so a partition's
-- counts and its position still land together or not at all, and a stale
-- writer's rows for a partition it lost land nowhere.
CREATE TABLE IF NOT EXISTS click_rollups_in
(
    grain                    UInt32,
    client_id                String,
    campaign_id              String,
    link_id                  String,
    bucket_start             DateTime,
    source_topic             String,
    source_partition         Int32,
    clicks                   UInt64,
    human_clicks             UInt64,
    bot_clicks               UInt64,
    opens                    UInt64,
    human_allow_listed       UInt64,
    bot_head                 UInt64,
    bot_prefetch_header      UInt64,
    bot_preview_fetcher      UInt64,
    bot_bot_user_agent       UInt64,
    bot_http_client          UInt64,
    bot_scanner_referer      UInt64,
    bot_scanner_network      UInt64,
    bot_honeypot             UInt64,
    bot_burst                UInt64,
    bot_network_fanout       UInt64,
    bot_too_fast_after_send  UInt64,
    bot_rescan               UInt64,
    position_delta           Int64,
    fence_partition          Int32,
    fence_token              UInt64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS click_rollups_fence TO click_rollups AS
SELECT grain, client_id, campaign_id, link_id, bucket_start, source_topic, source_partition,
       clicks, human_clicks, bot_clicks, opens, human_allow_listed, bot_head, bot_prefetch_header,
       bot_preview_fetcher, bot_bot_user_agent, bot_http_client, bot_scanner_referer, bot_scanner_network,
       bot_honeypot, bot_burst, bot_network_fanout, bot_too_fast_after_send, bot_rescan, position_delta
FROM click_rollups_in
WHERE (fence_partition, fence_token) IN
(
    SELECT partition, argMax(token, fenced_at_ms)
    FROM click_owners
    WHERE (topic, partition, generation) IN
        (SELECT topic, partition, max(generation) FROM click_owners GROUP BY topic, partition)
    GROUP BY topic, partition
)
