#!/usr/bin/env bash
# What the breakdowns cost in storage and reads (issue 16's storage benchmark;
# it reports numbers against goals, it is not a pass/fail test).
#
#   bench/breakdowns.sh
#
# 1. builds the aggregator, the API and the bench helpers (release) unless
#    BREAKDOWN_SKIP_BUILD=1;
# 2. starts a private broker and ClickHouse on free ports under one temporary
#    directory, preloads BREAKDOWN_EVENTS clicks of one sender (5 campaigns of
#    BREAKDOWN_LINKS links in all) spread evenly over the last 30 days, with
#    varied agents, referers and countries (bench/src/clicks.rs), and drains
#    them with the aggregator until every one is counted;
# 3. merges (`OPTIMIZE TABLE click_breakdowns FINAL`) and reports the breakdown
#    rows per (link or campaign, bucket, dimension, value): goal <= 1.1;
# 4. asks the API for a 30-day breakdown of one campaign by each dimension
#    (`GET /v1/clients/{id}/campaigns/{id}/breakdown?by=…`, over the default
#    range, the last 30 whole UTC days, then over the 30 days to the end of
#    the current hour), and reports the
#    rows ClickHouse read for it (`system.query_log`, read_rows of the
#    queries the API ran) against the campaign's raw events: the counts'
#    query (click_breakdowns) against the goal <= 1/20, and the exact unique
#    human recipients' query (raw events) beside it;
# 5. stops everything it started, on exit, failure or Ctrl-C.
#
# Settings (environment):
#   BREAKDOWN_EVENTS=300000   BREAKDOWN_LINKS=20   BREAKDOWN_SKIP_BUILD=1   BREAKDOWN_KEEP=1
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EVENTS="${BREAKDOWN_EVENTS:-300000}"
LINKS="${BREAKDOWN_LINKS:-20}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ricochet-breakdowns-bench.XXXXXX")"
ADMIN_KEY="bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
declare -A PID=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local status=$? name
    trap - EXIT INT TERM
    for name in aggregator api kafka clickhouse; do
        [[ -n "${PID[$name]:-}" ]] || continue
        kill -TERM "${PID[$name]}" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "${PID[$name]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${PID[$name]}" 2>/dev/null || true
    done
    if [[ "${BREAKDOWN_KEEP:-0}" == 1 || $status -ne 0 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Ports below the kernel's ephemeral range, so no outgoing connection holds one.
USED=" "
pick_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        [[ "$USED" == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then USED+="$p "; printf -v "$1" '%s' "$p"; return 0; fi
    done
    die "no free port"
}
wait_until() { # SECS WHAT CMD...
    local secs="$1" what="$2"
    shift 2
    for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "$what not ready within ${secs}s"
}
ch() { curl -sf --max-time 120 "http://127.0.0.1:$CH_HTTP/" --data-binary "$1" || die "clickhouse refused: $1"; }

if [[ "${BREAKDOWN_SKIP_BUILD:-0}" != 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release -p ricochet-aggregator -p ricochet-api -p ricochet-bench --bins) >&2
fi

pick_port KAFKA_PORT
"$ROOT/infra/kafka/run.sh" "$WORK/kafka" "$KAFKA_PORT" --group-initial-rebalance-delay 0s >"$WORK/kafka.log" 2>&1 &
PID[kafka]=$!
pick_port CH_HTTP
pick_port CH_TCP
pick_port CH_INTER
mkdir -p "$WORK/clickhouse"
"$ROOT/infra/clickhouse/run.sh" "$WORK/clickhouse" "$CH_HTTP" "$CH_TCP" "$CH_INTER" >"$WORK/clickhouse.log" 2>&1 &
PID[clickhouse]=$!
wait_until 60 "the broker" bash -c "exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT"
wait_until 60 "clickhouse" curl -sf "http://127.0.0.1:$CH_HTTP/ping"

log "preloading $EVENTS clicks of one sender over 30 days"
"$BIN/preload-clicks" --brokers "127.0.0.1:$KAFKA_PORT" --count "$EVENTS" --clients 1 --hot-share 1 \
    --hot-links "$LINKS" --span-minutes $((30 * 24 * 60)) >"$WORK/preload.log" 2>&1 || die "preload failed"

pick_port AGG_PORT
NO_COLOR=1 RUST_LOG=warn RICOCHET_LISTEN="127.0.0.1:$AGG_PORT" RICOCHET_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" \
    RICOCHET_CLICKHOUSE_URL="http://127.0.0.1:$CH_HTTP" RICOCHET_GROUP_ID="bench-breakdowns-$$" \
    RICOCHET_ADMIN_KEY="$ADMIN_KEY" RICOCHET_RETENTION_RAW_DAYS=90 \
    "$BIN/ricochet-aggregator" >"$WORK/aggregator.log" 2>&1 &
PID[aggregator]=$!
"$BIN/ch-wait" --clickhouse "127.0.0.1:$CH_HTTP" --query "SELECT sum(clicks) FROM click_rollup_minute" \
    --expect "$EVENTS" --timeout-secs 1800 >"$WORK/ch-wait.log" 2>&1 || die "the rollups did not reach $EVENTS clicks"
log "all $EVENTS clicks counted"

ch "OPTIMIZE TABLE click_breakdowns FINAL" >/dev/null
read -r ROWS KEYS < <(ch "SELECT count(), uniqExact(grain, client_id, campaign_id, link_id, bucket_start, dimension, value)
    FROM click_breakdowns WHERE grain != 0 FORMAT TSV")
PER_VALUE="$(awk -v r="$ROWS" -v k="$KEYS" 'BEGIN { printf "%.3f", r / k }')"

CLIENT="$(ch "SELECT any(client_id) FROM click_events FORMAT TSV")"
CAMPAIGN="$(ch "SELECT campaign_id FROM click_events GROUP BY campaign_id ORDER BY count() DESC LIMIT 1 FORMAT TSV")"
RAW="$(ch "SELECT count() FROM click_events WHERE client_id = '$CLIENT' AND campaign_id = '$CAMPAIGN' FORMAT TSV")"

pick_port API_PORT
NO_COLOR=1 RUST_LOG=warn RICOCHET_LISTEN="127.0.0.1:$API_PORT" RICOCHET_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" \
    RICOCHET_CLICKHOUSE_URL="http://127.0.0.1:$CH_HTTP" RICOCHET_ADMIN_KEY="$ADMIN_KEY" \
    "$BIN/ricochet-api" >"$WORK/api.log" 2>&1 &
PID[api]=$!
wait_until 60 "the API" curl -sf "http://127.0.0.1:$API_PORT/healthz"

{
    echo "breakdowns: $EVENTS clicks of one sender over 30 days, $LINKS links; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "breakdown rows after merges: $ROWS rows for $KEYS (link or campaign, bucket, dimension, value): $PER_VALUE per value (goal <= 1.1)"
    echo "campaign $CAMPAIGN: $RAW raw events"
} | tee "$WORK/summary.txt"

# The rows read by a breakdown by each dimension over `$1` (a query string).
measure() {
    local range="$1"
    {
        echo
        echo "rows read per 30-day breakdown, $2: the counts (rows of click_breakdowns) against the goal, and the"
        echo "exact unique human recipients (raw click_events: a recipient set cannot be summed from rows) beside"
        printf '%-16s %12s %8s %-12s %14s %8s\n' by counts_read ratio "goal <= 0.05" uniques_read ratio
    } | tee -a "$WORK/summary.txt"
    for by in country device os browser mail_client referrer_domain utm_source utm_medium utm_campaign; do
        sleep 1.1 # query_log times are whole seconds: this call's queries start after T0
        T0="$(ch "SELECT toUInt32(now()) FORMAT TSV")"
        curl -sf -H "Authorization: Bearer $ADMIN_KEY" \
            "http://127.0.0.1:$API_PORT/v1/clients/$CLIENT/campaigns/$CAMPAIGN/breakdown?by=$by$range" \
            >"$WORK/breakdown-$by.json" || die "the breakdown by $by failed"
        ch "SYSTEM FLUSH LOGS" >/dev/null
        # What the API's queries read: they alone name the campaign (the idle
        # aggregator's never do); split by the table each read.
        read_from() {
            ch "SELECT sum(read_rows) FROM system.query_log WHERE toUInt8(type) = 2
                AND toUInt32(query_start_time) >= $T0 AND query LIKE '%$CAMPAIGN%' AND query LIKE '%FROM $1 %'
                AND query NOT LIKE '%query_log%' FORMAT TSV"
        }
        COUNTS="$(read_from click_breakdowns)"
        UNIQUES="$(read_from click_events)"
        ratio() { awk -v r="$1" -v n="$RAW" 'BEGIN { printf "%.4f", r / n }'; }
        printf '%-16s %12s %8s %-12s %14s %8s\n' "$by" "$COUNTS" "$(ratio "$COUNTS")" \
            "$(awk -v r="$COUNTS" -v n="$RAW" 'BEGIN { print (r / n <= 0.05) ? "met" : "missed" }')" \
            "$UNIQUES" "$(ratio "$UNIQUES")" | tee -a "$WORK/summary.txt"
    done
}
measure "" "the default range (the last 30 whole UTC days, today's included)"
NEXT_HOUR=$(($(date -u +%s) / 3600 * 3600 + 3600))
measure "&from=$((NEXT_HOUR - 30 * 86400))&to=$NEXT_HOUR" "30 days to the end of the current hour (ragged hours at both ends)"
mkdir -p "$ROOT/bench/out"
cp "$WORK/summary.txt" "$ROOT/bench/out/breakdowns-$(date -u +%Y%m%dT%H%M%SZ).txt"
