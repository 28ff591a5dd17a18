#!/usr/bin/env bash
# The rollup tables' layout, old against new, side by side on one private
# ClickHouse (a benchmark: it prints numbers and goals, it passes or fails nothing).
#
#   bench/rollup-layout.sh
#
# Writes the same simulated flushes into both layouts, spread over 30 days:
# BENCH_LINKS links of one campaign, each clicked in BENCH_MINUTES minutes a day,
# each such link-minute touched by BENCH_FLUSHES flushes (one click each), one
# insert per simulated day:
#   old: click_rollup_minute_v1 (0002's MergeTree as it was: one delta row per
#        link-minute per flush) and raw click_events for unique recipients;
#   new: click_rollups (SummingMergeTree, the four grains of every delta, one
#        position row per partition per flush) and click_recipients.
# Then prints rows and bytes per bucket in system.parts before and after
# OPTIMIZE ... FINAL, and the median time and rows read (system.query_log) of
# the API's 30-day day-granularity campaign series with its unique recipients,
# as the old query and as the new one (coarsest grain, recipients table).
# What it does not cover: the broker and the aggregator's CPU (bench/aggregator.sh).
#
# Settings: BENCH_LINKS=2000 BENCH_MINUTES=6 BENCH_FLUSHES=5 BENCH_RECIPIENTS=50000
#           BENCH_RUNS=5 (query repetitions) BENCH_KEEP=1 (keep the temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."

LINKS=${BENCH_LINKS:-2000}
MINUTES=${BENCH_MINUTES:-6}
FLUSHES=${BENCH_FLUSHES:-5}
RECIPIENTS=${BENCH_RECIPIENTS:-50000}
RUNS=${BENCH_RUNS:-5}
DAYS=30
BASE=1762128000 # 2025-11-03T00:00:00Z

dir=$(mktemp -d /tmp/rollup-layout.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tcp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
infra/clickhouse/run.sh "$dir/ch" "$port" "$tcp" $((tcp + 1)) >"$dir/ch.log" 2>&1 &
ch_pid=$!
cleanup() {
  kill "$ch_pid" 2>/dev/null || true
  wait "$ch_pid" 2>/dev/null || true
  [[ -n "${BENCH_KEEP:-}" ]] && echo "kept $dir" || rm -rf "$dir"
}
trap cleanup EXIT
q() { curl -sS --fail-with-body "http://127.0.0.1:$port/" --data-binary "$1"; }
for _ in $(seq 100); do q "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
[[ -x target/debug/ricochet-aggregator || -x target/release/ricochet-aggregator ]] || cargo build -p ricochet-aggregator
agg=$(ls target/release/ricochet-aggregator 2>/dev/null || ls target/debug/ricochet-aggregator)
RICOCHET_CLICKHOUSE_URL="http://127.0.0.1:$port" "$agg" migrate >/dev/null 2>&1
# The old layout: 0002's table as it was before issue 10.
q "CREATE TABLE click_rollup_minute_v1 (client_id String, campaign_id String, link_id String, bucket_start DateTime,
   clicks UInt64, human_clicks UInt64, bot_clicks UInt64, opens UInt64, source_topic String, source_partition Int32,
   source_end_offset Int64) ENGINE = MergeTree() ORDER BY (client_id, campaign_id, link_id, bucket_start)"
# Merges are what is measured: none in the background while loading.
q "SYSTEM STOP MERGES"

per_day=$((LINKS * MINUTES * FLUSHES))
# One delta per (flush, link, minute slot); minute slots spread over the day.
deltas() { # $1 = day
  echo "SELECT number % $LINKS AS link, intDiv(number, $LINKS) % $MINUTES AS slot, intDiv(number, $LINKS * $MINUTES) AS flush,
    toUInt32($BASE + $1 * 86400 + ((slot * 211 + link) % 1440) * 60) AS minute, number AS n FROM numbers($per_day)"
}
t0=$(date +%s.%N)
for day in $(seq 0 $((DAYS - 1))); do
  q "INSERT INTO click_rollup_minute_v1 SELECT 'bench', 'camp', concat('l', toString(link)), toDateTime(minute), 1, 1, 0, 0, 'clicks', flush % 12, 0 FROM ($(deltas "$day"))"
  q "INSERT INTO click_events (event_id, event_time, client_id, campaign_id, link_id, recipient_id, event_type)
     SELECT concat(toString($day), '-', toString(n)), toDateTime(minute + n % 60), 'bench', 'camp', concat('l', toString(link)),
            concat('r', toString(cityHash64(n, $day) % $RECIPIENTS)), 'click' FROM ($(deltas "$day"))"
  q "INSERT INTO click_rollups (grain, client_id, campaign_id, link_id, bucket_start, source_topic, source_partition, clicks, human_clicks, position_delta)
     SELECT g, 'bench', 'camp', concat('l', toString(link)), toDateTime(intDiv(minute, g) * g), '', 0, 1, 1, 0
     FROM ($(deltas "$day")) ARRAY JOIN [60, 900, 3600, 86400] AS g
     UNION ALL SELECT 0, '', '', '', toDateTime(0), 'clicks', toInt32(number % 12), 0, 0, 1 FROM numbers($((FLUSHES * 12)))"
  q "INSERT INTO click_recipients SELECT DISTINCT client_id, campaign_id, link_id, toDateTime(intDiv(toUInt32(event_time), 900) * 900), 1, recipient_id
     FROM click_events WHERE event_id LIKE '$day-%'"
done
echo "loaded $DAYS days x $per_day deltas in $(echo "$(date +%s.%N) - $t0" | bc) s"

buckets=$(q "SELECT uniqExact(link_id, bucket_start) FROM click_rollup_minute_v1")
parts() { # $1 = table
  q "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts WHERE database = currentDatabase() AND table = '$1' AND active FORMAT TSV"
}
report() { # $1 = when
  read -r old_rows old_bytes <<<"$(parts click_rollup_minute_v1)"
  read -r new_rows new_bytes <<<"$(parts click_rollups)"
  new_minute=$(q "SELECT count() FROM click_rollups WHERE grain = 60")
  printf '%-14s old: %9d rows %6.2f rows/bucket %7.1f B/bucket | new: %9d rows (%d minute rows) %6.2f minute rows/bucket %7.1f B/bucket (all grains)\n' \
    "$1" "$old_rows" "$(echo "$old_rows / $buckets" | bc -l)" "$(echo "$old_bytes / $buckets" | bc -l)" \
    "$new_rows" "$new_minute" "$(echo "$new_minute / $buckets" | bc -l)" "$(echo "$new_bytes / $buckets" | bc -l)"
}
echo "distinct link-minute buckets: $buckets"
report "before merges"
q "SYSTEM START MERGES"
# OPTIMIZE is a no-op while background merges hold some of the parts: ask it to
# say so (optimize_throw_if_noop) and retry until the table is one part.
for t in click_rollup_minute_v1 click_rollups click_recipients click_events; do
  for attempt in $(seq 120); do
    curl -sS --fail "http://127.0.0.1:$port/?optimize_throw_if_noop=1" --data-binary "OPTIMIZE TABLE $t FINAL" >/dev/null 2>&1 && break
    sleep 2
  done
done
report "after FINAL"

from=$BASE
to=$((BASE + DAYS * 86400))
old_sql="SELECT toUInt32(toStartOfDay(bucket_start, 'UTC')) AS bucket, sum(clicks) AS clicks, sum(human_clicks) AS human_clicks, sum(bot_clicks) AS bot_clicks, sum(opens) AS opens FROM click_rollup_minute_v1 WHERE client_id = 'bench' AND campaign_id = 'camp' AND bucket_start >= toDateTime($from) AND bucket_start < toDateTime($to) GROUP BY bucket UNION ALL SELECT toUInt32(4294967295) AS bucket, toUInt64(uniqExact(recipient_id)) AS clicks, toUInt64(0) AS human_clicks, toUInt64(0) AS bot_clicks, toUInt64(0) AS opens FROM click_events WHERE client_id = 'bench' AND campaign_id = 'camp' AND recipient_id != '' AND event_type = 'click' AND event_time >= toDateTime($from) AND event_time < toDateTime($to)"
new_sql="SELECT toUInt32(toStartOfDay(bucket_start, 'UTC')) AS bucket, sum(clicks) AS clicks, sum(human_clicks) AS human_clicks, sum(bot_clicks) AS bot_clicks, sum(opens) AS opens FROM click_rollups WHERE grain = 86400 AND client_id = 'bench' AND campaign_id = 'camp' AND bucket_start >= toDateTime($from) AND bucket_start < toDateTime($to) GROUP BY bucket UNION ALL SELECT toUInt32(4294967295) AS bucket, toUInt64(uniqExact(recipient_id)) AS clicks, toUInt64(0) AS human_clicks, toUInt64(0) AS bot_clicks, toUInt64(0) AS opens FROM (SELECT recipient_id FROM click_recipients WHERE client_id = 'bench' AND campaign_id = 'camp' AND bucket_start >= toDateTime($from) AND bucket_start < toDateTime($to))"
old_answer=$(q "$old_sql ORDER BY bucket FORMAT TSV")
new_answer=$(q "$new_sql ORDER BY bucket FORMAT TSV")
[[ "$old_answer" == "$new_answer" ]] || { echo "old and new answers differ:"; diff <(echo "$old_answer") <(echo "$new_answer") | head; exit 1; }
echo "old and new answers are identical ($(q "SELECT sum(clicks) FROM click_rollup_minute_v1") clicks, $(q "SELECT uniqExact(recipient_id) FROM click_events") recipients)"
old_series=${old_sql%% UNION ALL *}
new_series=${new_sql%% UNION ALL *}
old_uniq="SELECT uniqExact(recipient_id) FROM click_events WHERE client_id = 'bench' AND campaign_id = 'camp' AND recipient_id != '' AND event_type = 'click' AND event_time >= toDateTime($from) AND event_time < toDateTime($to)"
new_uniq="SELECT uniqExact(recipient_id) FROM click_recipients WHERE client_id = 'bench' AND campaign_id = 'camp' AND bucket_start >= toDateTime($from) AND bucket_start < toDateTime($to)"
for i in $(seq "$RUNS"); do
  for name in old_sql new_sql old_series new_series old_uniq new_uniq; do
    q "/* bench:$name */ ${!name} FORMAT Null" >/dev/null
  done
done
q "SYSTEM FLUSH LOGS"
stats() { # $1 = name
  q "SELECT median(query_duration_ms), median(read_rows) FROM system.query_log
     WHERE type = 2 AND query LIKE '/* bench:$1 */%' FORMAT TSV"
}
printf 'median of %d runs, 30 days, day granularity, one campaign:\n' "$RUNS"
for part in sql:"series + unique recipients (the API's query)" series:"series alone" uniq:"unique recipients alone"; do
  read -r old_ms old_read <<<"$(stats "old_${part%%:*}")"
  read -r new_ms new_read <<<"$(stats "new_${part%%:*}")"
  printf '  %-42s old %6s ms %10s rows read | new %6s ms %10s rows read | rows read new/old = 1/%.1f\n' \
    "${part#*:}" "$old_ms" "$old_read" "$new_ms" "$new_read" "$(echo "$old_read / $new_read" | bc -l)"
done
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
