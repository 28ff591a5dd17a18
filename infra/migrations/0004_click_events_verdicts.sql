-- Raw events keep the edge's signals (ClickEvent v3), the aggregator's
-- verdict and its reason, so the data team can mine new scanner fingerprints
-- and reclassify past data (queries in docs/data-model.md).
--
-- One ALTER, so the columns arrive together. ClickHouse 18.16 has no
-- ADD COLUMN IF NOT EXISTS: an aggregator that finds them already added (a
-- second one migrating at the same moment) takes the migration as applied
-- (see aggregator/src/migrations.rs).
--
-- Rows written before this migration read the defaults: no signals ("no
-- evidence", like v1/v2 events), and the verdict the aggregator gave them
-- then (the edge's prefetch flag). verdict_reason's symbols are
-- ricochet_schemas::Reason's (Reason::clickhouse_enum(); a unit test keeps
-- them equal); new reasons are added at the end with ALTER … MODIFY COLUMN.
ALTER TABLE click_events
    ADD COLUMN ua_class Enum8('unknown' = 0, 'browser' = 1, 'bot' = 2, 'preview' = 3, 'http_client' = 4, 'absent' = 5) DEFAULT 'unknown',
    ADD COLUMN network_class Enum8('unknown' = 0, 'scanner' = 1, 'cloud' = 2, 'other' = 3) DEFAULT 'unknown',
    ADD COLUMN asn UInt32,
    ADD COLUMN network_name String,
    ADD COLUMN prefetch_header UInt8,
    ADD COLUMN has_accept UInt8 DEFAULT 1,
    ADD COLUMN has_accept_language UInt8 DEFAULT 1,
    ADD COLUMN scanner_referer UInt8,
    ADD COLUMN network_allow_listed UInt8,
    ADD COLUMN sent_at Nullable(DateTime),
    ADD COLUMN honeypot UInt8,
    ADD COLUMN is_human UInt8 DEFAULT is_prefetch = 0,
    ADD COLUMN verdict_reason Enum8('human' = 1, 'allow_listed' = 2, 'head' = 10, 'prefetch_header' = 11, 'preview_fetcher' = 12, 'bot_user_agent' = 13, 'http_client' = 14, 'scanner_referer' = 15, 'scanner_network' = 16, 'honeypot' = 17, 'burst' = 18, 'network_fanout' = 19, 'too_fast_after_send' = 20, 'rescan' = 21) DEFAULT CAST(if(is_prefetch = 1, 'preview_fetcher', 'human') AS Enum8('human' = 1, 'allow_listed' = 2, 'head' = 10, 'prefetch_header' = 11, 'preview_fetcher' = 12, 'bot_user_agent' = 13, 'http_client' = 14, 'scanner_referer' = 15, 'scanner_network' = 16, 'honeypot' = 17, 'burst' = 18, 'network_fanout' = 19, 'too_fast_after_send' = 20, 'rescan' = 21)),
    ADD COLUMN seconds_since_send Nullable(Int32)
