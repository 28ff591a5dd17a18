-- The breakdowns' dimensions of each raw event (issue 16), computed once by
-- the aggregator (aggregator/src/dimensions.rs) and kept as columns so the
-- data team can group by them (docs/data-model.md):
--
-- - device: desktop, mobile, tablet, bot or other (uap-core's device, OS and
--   agent, rules in signals/src/dimensions/device.rs);
-- - os, browser: uap-core's families (`iOS`, `Chrome Mobile`, ...; `Other`);
-- - mail_client: gmail, outlook, yahoo, apple_mail or other: an open's from
--   the pixel fetcher's user agent, a click's from the webmail Referer
--   (signals/data/mail-clients.txt);
-- - referrer_domain: the Referer's host without `www.`;
-- - utm_source, utm_medium, utm_campaign: the link's destination's tags.
--
-- Rows written before this migration read '' (unknown). Strings, not
-- LowCardinality: 18.16 has it only as an experimental setting.
--
-- click_events first, then the input table: an insert carrying the new
-- columns must find them in the table the view writes to. The view's
-- `SELECT *` (0008) passes them on.
ALTER TABLE click_events
    ADD COLUMN device String,
    ADD COLUMN os String,
    ADD COLUMN browser String,
    ADD COLUMN mail_client String,
    ADD COLUMN referrer_domain String,
    ADD COLUMN utm_source String,
    ADD COLUMN utm_medium String,
    ADD COLUMN utm_campaign String;

ALTER TABLE click_events_in
    ADD COLUMN device String,
    ADD COLUMN os String,
    ADD COLUMN browser String,
    ADD COLUMN mail_client String,
    ADD COLUMN referrer_domain String,
    ADD COLUMN utm_source String,
    ADD COLUMN utm_medium String,
    ADD COLUMN utm_campaign String;
