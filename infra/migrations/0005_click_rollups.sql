-- Rollups at four grains, and the Kafka positions they cover, in ONE table
-- that collapses on merge (SummingMergeTree): its size follows the buckets,
-- not the flushes.
--
-- Each aggregator flush is ONE insert into this table: for every
-- link-minute the batch touched, one delta row per grain (minute, 15 minutes,
-- hour, UTC day), plus one position row per source partition. The table has
-- no partition key, so an insert of fewer than max_insert_block_size rows is
-- one part: the counts of every grain and the position land together or not
-- at all.
--
-- grain: the bucket width in seconds, 60, 900, 3600 or 86400; 0 marks a
-- position row (client_id, campaign_id, link_id empty, bucket_start 0). The
-- 15-minute grain keeps zones with offsets that are not whole hours
-- (UTC+5:45, UTC+5:30) exact; hour and day rows serve long ranges.
--
-- Positions are stored as deltas: each flush writes, per partition,
-- position_delta = next offset to consume - the position stored before, so
-- sum(position_delta) per (source_topic, source_partition) is the position,
-- before and after merges, and the merged row is never all-zero (a position
-- is > 0 once anything was stored), so the engine never deletes it. Counts
-- rows carry position_delta = 0 and at least one non-zero count.
--
-- Every count is a delta: read with sum(...) GROUP BY, always filtered on one grain.
-- clicks = human_clicks + bot_clicks; opens are counted apart. The reason
-- columns split clicks by the verdict's reason (schemas' Reason::ALL):
-- human_clicks - human_allow_listed are the plain humans, and the bot_*
-- columns sum to bot_clicks.
CREATE TABLE IF NOT EXISTS click_rollups
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
    position_delta           Int64
)
ENGINE = SummingMergeTree()
ORDER BY (grain, client_id, campaign_id, link_id, bucket_start, source_topic, source_partition);

-- Distinct recipients who clicked, per link and 15-minute bucket (UTC), split
-- by human verdict: unique recipients of any range aligned to 15 minutes (every
-- hour and day in every time zone) without scanning raw events.
-- ReplacingMergeTree on the whole row: a recipient clicking twice in a bucket,
-- or a batch written again after a crash, collapses to one row on merge, and
-- uniqExact(recipient_id) is exact before merges too. Written, like raw
-- events, before the rollup insert of the same flush.
CREATE TABLE IF NOT EXISTS click_recipients
(
    client_id     String,
    campaign_id   String,
    link_id       String,
    bucket_start  DateTime,
    human         UInt8,
    recipient_id  String
)
ENGINE = ReplacingMergeTree()
ORDER BY (client_id, campaign_id, link_id, bucket_start, human, recipient_id)
