-- Breakdowns and open verdicts (issue 16), stored exactly once like the
-- rollups: in click_rollups itself, so that every breakdown row lands in the
-- same insert (one part) as the positions it is counted under.
--
-- click_rollups gains:
-- - dimension, value: '' and '' on the rollup rows every grain already had;
--   on a breakdown row, one of country, device, os, browser, mail_client,
--   referrer_domain, utm_source, utm_medium, utm_campaign and the event's
--   value of it ('' = unknown). Breakdown rows are written per link at the
--   hour (3600) and UTC day (86400) grains only. Appended to the sorting key,
--   so SummingMergeTree keeps one row per (grain, link, bucket, partition,
--   dimension, value): a client's events all come from one partition (the
--   topic is keyed by client), so that is one row per (bucket, value).
-- - opens split by verdict: human_opens + machine_opens = opens, and
--   machine_opens = open_apple_privacy + open_scanner + open_prefetch (the
--   verdict reasons grouped; docs/data-model.md has the grouping).
--
-- Read rollups with dimension = '' and breakdowns with dimension = 'x':
-- never sum across dimensions.
ALTER TABLE click_rollups
    ADD COLUMN human_opens UInt64,
    ADD COLUMN machine_opens UInt64,
    ADD COLUMN open_apple_privacy UInt64,
    ADD COLUMN open_scanner UInt64,
    ADD COLUMN open_prefetch UInt64,
    ADD COLUMN dimension String,
    ADD COLUMN value String,
    MODIFY ORDER BY (grain, client_id, campaign_id, link_id, bucket_start, source_topic, source_partition, dimension, value);

-- The new input table and its fence, as click_rollups_in and its view (0007)
-- with the new columns. A new pair rather than the old one altered: the old
-- view would have to be dropped and made again, and an insert between the
-- two would be dropped (and seen as fenced). Aggregators older than this
-- migration keep inserting into click_rollups_in during a rolling upgrade;
-- their rows read 0 and '' in the new columns.
CREATE TABLE IF NOT EXISTS click_counts_in
(
    grain                    UInt32,
    client_id                String,
    campaign_id              String,
    link_id                  String,
    bucket_start             DateTime,
    source_topic             String,
    source_partition         Int32,
    dimension                String,
    value                    String,
    clicks                   UInt64,
    human_clicks             UInt64,
    bot_clicks               UInt64,
    opens                    UInt64,
    human_opens              UInt64,
    machine_opens            UInt64,
    open_apple_privacy       UInt64,
    open_scanner             UInt64,
    open_prefetch            UInt64,
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

CREATE MATERIALIZED VIEW IF NOT EXISTS click_counts_fence TO click_rollups AS
SELECT grain, client_id, campaign_id, link_id, bucket_start, source_topic, source_partition, dimension, value,
       clicks, human_clicks, bot_clicks, opens, human_opens, machine_opens, open_apple_privacy, open_scanner,
       open_prefetch, human_allow_listed, bot_head, bot_prefetch_header, bot_preview_fetcher, bot_bot_user_agent,
       bot_http_client, bot_scanner_referer, bot_scanner_network, bot_honeypot, bot_burst, bot_network_fanout,
       bot_too_fast_after_send, bot_rescan, position_delta
FROM click_counts_in
WHERE (fence_partition, fence_token) IN
(
    SELECT partition, argMax(token, fenced_at_ms)
    FROM click_owners
    WHERE (topic, partition, generation) IN
        (SELECT topic, partition, max(generation) FROM click_owners GROUP BY topic, partition)
    GROUP BY topic, partition
);

-- Each raw event's country (ISO 3166 alpha-2, '' unknown), and the verdict
-- reason of an open fetched by Apple's Mail Privacy Protection proxies.
ALTER TABLE click_events
    ADD COLUMN country String;

ALTER TABLE click_events
    MODIFY COLUMN verdict_reason Enum8('human' = 1, 'allow_listed' = 2, 'head' = 10, 'prefetch_header' = 11, 'preview_fetcher' = 12, 'bot_user_agent' = 13, 'http_client' = 14, 'scanner_referer' = 15, 'scanner_network' = 16, 'honeypot' = 17, 'burst' = 18, 'network_fanout' = 19, 'too_fast_after_send' = 20, 'rescan' = 21, 'apple_privacy' = 22) DEFAULT CAST(if(is_prefetch = 1, 'preview_fetcher', 'human') AS Enum8('human' = 1, 'allow_listed' = 2, 'head' = 10, 'prefetch_header' = 11, 'preview_fetcher' = 12, 'bot_user_agent' = 13, 'http_client' = 14, 'scanner_referer' = 15, 'scanner_network' = 16, 'honeypot' = 17, 'burst' = 18, 'network_fanout' = 19, 'too_fast_after_send' = 20, 'rescan' = 21, 'apple_privacy' = 22));

ALTER TABLE click_events_in
    ADD COLUMN country String;

ALTER TABLE click_events_in
    MODIFY COLUMN verdict_reason Enum8('human' = 1, 'allow_listed' = 2, 'head' = 10, 'prefetch_header' = 11, 'preview_fetcher' = 12, 'bot_user_agent' = 13, 'http_client' = 14, 'scanner_referer' = 15, 'scanner_network' = 16, 'honeypot' = 17, 'burst' = 18, 'network_fanout' = 19, 'too_fast_after_send' = 20, 'rescan' = 21, 'apple_privacy' = 22) DEFAULT CAST(if(is_prefetch = 1, 'preview_fetcher', 'human') AS Enum8('human' = 1, 'allow_listed' = 2, 'head' = 10, 'prefetch_header' = 11, 'preview_fetcher' = 12, 'bot_user_agent' = 13, 'http_client' = 14, 'scanner_referer' = 15, 'scanner_network' = 16, 'honeypot' = 17, 'burst' = 18, 'network_fanout' = 19, 'too_fast_after_send' = 20, 'rescan' = 21, 'apple_privacy' = 22));

-- Who opened, beside who clicked (is_open = 1): unique human openers per
-- campaign without scanning raw events. Appended to the sorting key so an
-- open and a click of one recipient in one bucket stay two rows. (18.16 puts
-- no column with a default into a sorting key: 0 = a click, no DEFAULT.)
ALTER TABLE click_recipients
    ADD COLUMN is_open UInt8,
    MODIFY ORDER BY (client_id, campaign_id, link_id, bucket_start, human, recipient_id, is_open);

ALTER TABLE click_recipients_in
    ADD COLUMN is_open UInt8;
