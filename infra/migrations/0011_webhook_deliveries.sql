-- Webhook deliveries (issue 17): one row per attempt the deliverer made to a
-- client's endpoint, written in batches about once a second by
-- ricochet-webhooks and read by the API's
-- `GET /v1/clients/{client_id}/webhooks/{webhook_id}/deliveries`.
--
-- A log for people, not the deliverer's state: what is still to be delivered
-- is its position in the `decided` topic (webhooks/src/deliverer.rs), so a
-- lost row costs a line in this list, never a delivery.
--
-- outcome: delivered (2xx), failed (any other status, or no answer: see
-- error), gone (410: the endpoint is disabled), refused (the target resolved
-- to an address webhooks may not reach), dropped (retried for a day: given
-- up). status is 0 when there was no HTTP answer. Partitioned by day so
-- that old attempts go by dropping a partition (RICOCHET_WEBHOOKS_LOG_DAYS,
-- webhooks/src/log.rs): a month would keep up to two months of a busy log.
CREATE TABLE IF NOT EXISTS webhook_deliveries
(
    client_id        String,
    webhook_id       String,
    message_id       String,
    attempted_at     DateTime,
    attempted_at_ms  Int64,
    attempt          UInt32,
    events           UInt32,
    replay           UInt8,
    outcome          String,
    status           UInt16,
    latency_ms       UInt32,
    error            String
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(attempted_at)
ORDER BY (client_id, webhook_id, attempted_at_ms);
