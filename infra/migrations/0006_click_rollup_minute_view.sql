-- click_rollup_minute (0002) becomes a view of the minute grain of
-- click_rollups, so queries written against it keep working. Its rows are
-- carried over once: every grain of every delta row, and each partition's
-- position as one delta, only where the old table exists as a MergeTree
-- (warehouse/src/migrations.rs checks; elsewhere only the CREATE VIEW runs).
-- Stop the old aggregators and run `ricochet-aggregator migrate` once before
-- starting new ones. A failure half-way stops at the next RENAME rather than
-- copying twice; the old table stays as click_rollup_minute_v1 for the
-- operator to drop.
RENAME TABLE click_rollup_minute TO click_rollup_minute_v1;

INSERT INTO click_rollups (grain, client_id, campaign_id, link_id, bucket_start, source_topic, source_partition, clicks, human_clicks, bot_clicks, opens, position_delta)
SELECT g, client_id, campaign_id, link_id, toDateTime(intDiv(toUInt32(bucket_start), g) * g), '', 0, clicks, human_clicks, bot_clicks, opens, 0
FROM click_rollup_minute_v1
ARRAY JOIN [60, 900, 3600, 86400] AS g
WHERE client_id != '';

INSERT INTO click_rollups (grain, client_id, campaign_id, link_id, bucket_start, source_topic, source_partition, position_delta)
SELECT 0, '', '', '', toDateTime(0), source_topic, source_partition, max(source_end_offset)
FROM click_rollup_minute_v1
WHERE client_id = ''
GROUP BY source_topic, source_partition;

CREATE VIEW IF NOT EXISTS click_rollup_minute AS
SELECT client_id, campaign_id, link_id, bucket_start, clicks, human_clicks, bot_clicks, opens
FROM click_rollups
WHERE grain = 60
