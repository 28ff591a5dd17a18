#!/usr/bin/env bash
# What exporting a large campaign costs the API (issue 17's export benchmark;
# it reports numbers, it is not a pass/fail test).
#
#   bench/export.sh
#
# 1. builds the API (release) unless EXPORT_SKIP_BUILD=1;
# 2. starts a private broker and ClickHouse on free ports under one temporary
#    directory, and the API, which applies the migrations;
# 3. writes EXPORT_EVENTS decided events of one campaign straight into
#    `click_events` (ClickHouse's own INSERT … SELECT FROM numbers(): the
#    export reads what the aggregator would have stored, so the aggregator is
#    not in the way), spread over the last 10 days, a third of them bots and
#    a fifth opens, with 50 links, countries, devices and mail clients;
# 4. exports the campaign once as CSV and once as NDJSON with curl
#    (`GET /v1/clients/{id}/campaigns/{id}/events?format=…`), and reports for
#    each: wall time, bytes, rows, the API's CPU per exported event (from
#    /proc/PID/stat), and the API's resident memory before, and its peak
#    during (VmHWM from /proc/PID/status, reset before each export);
# 5. stops everything it started, on exit, failure or Ctrl-C.
#
# Settings (environment):
#   EXPORT_EVENTS=1000000   EXPORT_SKIP_BUILD=1   EXPORT_KEEP=1
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EVENTS="${EXPORT_EVENTS:-1000000}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ricochet-export-bench.XXXXXX")"
ADMIN_KEY="bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
declare -A PID=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local status=$? name
    trap - EXIT INT TERM
    for name in api kafka clickhouse; do
        [[ -n "${PID[$name]:-}" ]] || continue
        kill -TERM "${PID[$name]}" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "${PID[$name]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${PID[$name]}" 2>/dev/null || true
    done
    if [[ "${EXPORT_KEEP:-0}" == 1 || $status -ne 0 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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
ch() { curl -sf --max-time 600 "http://127.0.0.1:$CH_HTTP/" --data-binary "$1" || die "clickhouse refused: $1"; }

if [[ "${EXPORT_SKIP_BUILD:-0}" != 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release -p ricochet-api --bins) >&2
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

pick_port API_PORT
NO_COLOR=1 RUST_LOG=warn RICOCHET_LISTEN="127.0.0.1:$API_PORT" RICOCHET_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" \
    RICOCHET_CLICKHOUSE_URL="http://127.0.0.1:$CH_HTTP" RICOCHET_ADMIN_KEY="$ADMIN_KEY" \
    "$BIN/ricochet-api" >"$WORK/api.log" 2>&1 &
PID[api]=$!
wait_until 120 "the API" curl -sf "http://127.0.0.1:$API_PORT/healthz"

log "writing $EVENTS decided events of one campaign"
ch "INSERT INTO click_events (event_id, event_time, event_time_ms, client_id, campaign_id, link_id, recipient_id,
        destination_url, user_agent, event_type, is_human, verdict_reason, country, device, os, browser, mail_client,
        referrer_domain, utm_source, utm_medium, utm_campaign)
    SELECT concat('0190f3a2-7c1e-7000-8000-', substring(toString(1000000000000 + number), 2)) AS event_id,
        toDateTime(t) AS event_time, toInt64(t) * 1000 + number % 1000 AS event_time_ms,
        'acme', 'blast', concat('link-', toString(number % 50)), concat('r', toString(number % 200000)),
        concat('https://acme.example/offer/', toString(number % 50), '?utm_source=newsletter&utm_medium=email'),
        'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36',
        if(number % 5 = 0, 'open', 'click'), toUInt8(number % 3 != 0),
        if(number % 3 != 0, 'human', if(number % 5 = 0, 'apple_privacy', 'burst')),
        ['DE', 'FR', 'US', 'GB', 'NL'][number % 5 + 1], ['desktop', 'mobile', 'tablet'][number % 3 + 1],
        'Windows', 'Chrome', ['gmail', 'outlook', 'apple_mail', 'other'][number % 4 + 1],
        if(number % 7 = 0, 'mail.google.com', ''), 'newsletter', 'email', 'blast'
    FROM (SELECT number, toUInt32(now()) - 60 - number % 864000 AS t FROM numbers($EVENTS))" >/dev/null \
    2>"$WORK/insert.err" || die "insert failed: $(cat "$WORK/insert.err")"
STORED="$(ch "SELECT count() FROM click_events WHERE client_id = 'acme' AND campaign_id = 'blast' FORMAT TSV")"
log "$STORED events stored"

API_PID="${PID[api]}"
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$API_PID/status"; }
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$API_PID/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$API_PID/stat"; }
TICK="$(getconf CLK_TCK)"

{
    echo "export: $STORED events of one campaign, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '%-7s %9s %12s %10s %14s %12s %12s\n' format secs bytes rows "api_cpu_us/ev" rss_before_mb peak_rss_mb
} | tee "$WORK/summary.txt"
for format in csv ndjson; do
    # Peak resident memory since this reset is the export's (Linux: writing 5 to clear_refs resets VmHWM).
    echo 5 >"/proc/$API_PID/clear_refs" 2>/dev/null || log "cannot reset VmHWM; the peak includes the start"
    BEFORE="$(rss_kib)"
    C0="$(cpu_ticks)"
    T0="$(date +%s.%N)"
    curl -sf --max-time 3600 -H "Authorization: Bearer $ADMIN_KEY" \
        "http://127.0.0.1:$API_PORT/v1/clients/acme/campaigns/blast/events?format=$format&from=$(( $(date +%s) - 11 * 86400 ))" \
        -o "$WORK/export.$format" || die "the $format export failed"
    T1="$(date +%s.%N)"
    C1="$(cpu_ticks)"
    PEAK="$(hwm_kib)"
    BYTES="$(stat -c %s "$WORK/export.$format")"
    LINES="$(wc -l <"$WORK/export.$format")"
    [[ "$format" == csv ]] && ROWS=$((LINES - 1)) || ROWS="$LINES"
    [[ "$ROWS" == "$STORED" ]] || log "warning: $ROWS rows exported, $STORED stored"
    awk -v f="$format" -v t0="$T0" -v t1="$T1" -v b="$BYTES" -v r="$ROWS" -v c0="$C0" -v c1="$C1" -v tick="$TICK" \
        -v before="$BEFORE" -v peak="$PEAK" 'BEGIN {
            printf "%-7s %9.1f %12s %10s %14.2f %12.1f %12.1f\n", f, t1 - t0, b, r, (c1 - c0) * 1e6 / tick / r,
                before / 1024, peak / 1024 }' | tee -a "$WORK/summary.txt"
    rm -f "$WORK/export.$format"
done
mkdir -p "$ROOT/bench/out"
cp "$WORK/summary.txt" "$ROOT/bench/out/export-$(date -u +%Y%m%dT%H%M%SZ).txt"
