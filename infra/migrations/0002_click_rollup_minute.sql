-- Until issue 10 this created click_rollup_minute, a MergeTree of one delta
-- row per link-minute per flush, with the Kafka positions as checkpoint rows.
-- Databases created since do not get it: click_rollups (0005) replaced it and
-- click_rollup_minute is a view of its minute grain (0006). Where this ran in
-- its old form, 0006 carries the old table's rows over once. Creating the old
-- table here would leave a window in which a second process starting at the
-- same time creates it again after 0006 renamed it.
SELECT 1
