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
-- the deletes are issued. It is made as a copy of click_events' columns
-- (0001 and 0004), so the two cannot differ; a migration that adds a column
-- to click_events adds it here too, and the view's `SELECT *` passes it on
-- (checked on 18.16, across a restart, and on current releases).
CREATE TABLE IF NOT EXISTS click_events_in AS click_events ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS click_events_erasure TO click_events AS
SELECT *
FROM click_events_in
WHERE (client_id, recipient_id) NOT IN (SELECT client_id, recipient_id FROM recipient_erasures);

-- The same for the recipients who clicked (0005).
CREATE TABLE IF NOT EXISTS click_recipients_in AS click_recipients ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS click_recipients_erasure TO click_recipients AS
SELECT *
FROM click_recipients_in
WHERE (client_id, recipient_id) NOT IN (SELECT client_id, recipient_id FROM recipient_erasures);
