-- The link registry and client states, mirrored from the compacted Kafka
-- topics `links` and `clients` (the source of truth) so the data team can
-- join events to links. `version` is the record's Kafka offset: it only grows
-- per key, so ReplacingMergeTree(version) keeps the newest state. Read with
-- FINAL (or argMax by version) for the current state before merges.
CREATE TABLE IF NOT EXISTS links
(
    link_id         String,
    code            String,
    client_id       String,
    campaign_id     String,
    destination_url String,
    status          Enum8('active' = 1, 'paused' = 2, 'deleted' = 3),
    created_at      DateTime,
    valid_from      DateTime,
    valid_until     DateTime,
    click_limit     Int64,
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY link_id;

CREATE TABLE IF NOT EXISTS clients
(
    client_id    String,
    status       Enum8('active' = 1, 'paused' = 2),
    fallback_url String,
    hot_spread   UInt16,
    updated_at   DateTime,
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY client_id
