-- Erasing one recipient (GDPR art. 17): `DELETE /v1/clients/{client_id}/recipients/{recipient_id}`
-- on the API, applied by the aggregators (aggregator/src/erasure.rs has the
-- argument; docs/security.md the user's side).
--
-- erasure_requests: what was asked, by whom, when: the API's only write to
-- ClickHouse, and the queue the aggregators work from. One row per request;
-- asking twice is harmless.
CREATE TABLE IF NOT EXISTS erasure_requests
(
    client_id     String,
    recipient_id  String,
    requested_at  DateTime,
    requested_by  String
)
ENGINE = ReplacingMergeTree()
ORDER BY (client_id, recipient_id);

-- recipient_erasures: the recipients whose rows may never be stored again,
-- on every shard (the aggregator writes each shard's copy itself). A row with
-- applied = 0 is written before the deletes; one with applied = 1 after they
-- were issued, which takes the request off the queue.
CREATE TABLE IF NOT EXISTS recipient_erasures
(
    client_id     String,
    recipient_id  String,
    applied       UInt8,
    erased_at     DateTime
)
ENGINE = ReplacingMergeTree()
ORDER BY (client_id, recipient_id, applied);

-- What the aggregator inserts raw events into. The table keeps nothing (Null);
-- the view below passes every row on to click_events unless its recipient was
-- erased. Checking at insert time, inside ClickHouse, is what makes an erasure
-- stick: a replay from Kafka or from an edge's spool, or a member that wakes up
-- late with an old batch, meets the erasure row whenever its insert runs, and
-- an insert already running when the erasure row landed is waited out before
-- the deletes are issued. The columns are click_events' (0001 and 0004); a
-- migration that adds a column to click_events adds it here too, and the
-- view's `SELECT *` passes it on (checked on 18.16, across a restart, and on
-- current releases).
CREATE TABLE IF NOT EXISTS click_events_in
(
    event_id            String,
    event_time          DateTime,
    event_time_ms       Int64,
    client_id           String,
    campaign_id         String,
    link_id             String,
    recipient_id        String,
    destination_url     String,
    http_method         String,
    user_agent          String,
    referer             String,
    client_ip           String,
    edge_node           String,
    event_type          Enum8('click' = 1, 'open' = 2),
    is_prefetch         UInt8,
    recipient_token     Enum8('absent' = 0, 'valid' = 1, 'invalid' = 2),
    kafka_partition     Int32,
    kafka_offset        Int64,
    ingested_at         DateTime,
    ua_class            Enum8('unknown' = 0, 'browser' = 1, 'bot' = 2, 'preview' = 3, 'http_client' = 4, 'absent' = 5),
    network_class       Enum8('unknown' = 0, 'scanner' = 1, 'cloud' = 2, 'other' = 3),
    asn                 UInt32,
    network_name        String,
    prefetch_header     UInt8,
    has_accept          UInt8,
    has_accept_language UInt8,
    scanner_referer     UInt8,
    network_allow_listed UInt8,
    sent_at             Nullable(DateTime),
    honeypot            UInt8,
    is_human            UInt8,
    verdict_reason      Enum8('human' = 1, 'allow_listed' = 2, 'head' = 10, 'prefetch_header' = 11, 'preview_fetcher' = 12, 'bot_user_agent' = 13, 'http_client' = 14, 'scanner_referer' = 15, 'scanner_network' = 16, 'honeypot' = 17, 'burst' = 18, 'network_fanout' = 19, 'too_fast_after_send' = 20, 'rescan' = 21),
    seconds_since_send  Nullable(Int32)
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS click_events_erasure TO click_events AS
SELECT *
FROM click_events_in
WHERE (client_id, recipient_id) NOT IN (SELECT client_id, recipient_id FROM recipient_erasures);

-- The same for the recipients who clicked (0005).
CREATE TABLE IF NOT EXISTS click_recipients_in
(
    client_id     String,
    campaign_id   String,
    link_id       String,
    bucket_start  DateTime,
    human         UInt8,
    recipient_id  String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS click_recipients_erasure TO click_recipients AS
SELECT *
FROM click_recipients_in
WHERE (client_id, recipient_id) NOT IN (SELECT client_id, recipient_id FROM recipient_erasures);
