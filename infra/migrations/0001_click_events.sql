-- Raw click events, one row per click, for the data team.
-- ReplacingMergeTree on a key that ends with event_id: a click written twice
-- (a replay after a crash, a spool resend) collapses to one row when parts
-- merge. Exact counts before a merge: count(DISTINCT event_id), or FINAL.
-- Partitioned by month so old months can be dropped whole; ordered for the
-- per-client and per-link queries in docs/data-model.md.
CREATE TABLE IF NOT EXISTS click_events
(
    event_id        String,
    event_time      DateTime,
    event_time_ms   Int64,
    client_id       String,
    campaign_id     String,
    link_id         String,
    recipient_id    String,
    destination_url String,
    http_method     String,
    user_agent      String,
    referer         String,
    client_ip       String,
    edge_node       String,
    event_type      Enum8('click' = 1, 'open' = 2),
    is_prefetch     UInt8,
    recipient_token Enum8('absent' = 0, 'valid' = 1, 'invalid' = 2),
    kafka_partition Int32,
    kafka_offset    Int64,
    ingested_at     DateTime
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_time)
ORDER BY (client_id, campaign_id, link_id, event_time, event_id)
