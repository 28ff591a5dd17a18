#!/usr/bin/env bash
# What delivering webhooks costs, and how fast a backlog drains (issue 17's
# webhook benchmarks; it reports numbers, it is not a pass/fail test).
#
#   bench/webhooks.sh
#
# 1. builds the services and the bench tools (release) unless WEBHOOKS_SKIP_BUILD=1;
# 2. starts a private broker and ClickHouse on free ports under one temporary
#    directory, the aggregator, the API, and bench/src/bin/webhook-receiver
#    (answers 204 at once and counts);
# 3. throughput, on one blast: registers an endpoint for every event of one
#    client (`batch_size` WEBHOOKS_BATCH, default 1: one event a request),
#    preloads WEBHOOKS_EVENTS clicks of that client into `clicks` with the
#    deliverer stopped, and times the aggregator counting them and publishing
#    them to `decided`; then starts the deliverer and times it delivering them
#    all. CPU per event of each from /proc/PID/stat over its own run;
# 4. backlog: registers a second endpoint whose receiver is not running,
#    sends WEBHOOKS_RATE clicks a second (steady-clicks) for
#    WEBHOOKS_OUTAGE_SECS, starts the receiver and times, from then, the first
#    delivery (the next retry of the exponential backoff) and the drain: until
#    the deliverer's lag behind `decided` is under a second of traffic, while
#    the clicks keep coming;
# 5. idle: what endpoints cost while nothing happens (each has a Kafka
#    reader of its own): WEBHOOKS_IDLE_ENDPOINTS endpoints of clients without
#    traffic, the deliverer's CPU over 60 s and its resident memory;
# 6. stops everything it started, on exit, failure or Ctrl-C.
#
# Settings (environment):
#   WEBHOOKS_EVENTS=200000  WEBHOOKS_BATCH=1  WEBHOOKS_RATE=2000  WEBHOOKS_OUTAGE_SECS=600
#   WEBHOOKS_IDLE_ENDPOINTS=50  WEBHOOKS_PHASES="throughput backlog idle"  WEBHOOKS_SKIP_BUILD=1
#   WEBHOOKS_KEEP=1
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EVENTS="${WEBHOOKS_EVENTS:-200000}"
BATCH="${WEBHOOKS_BATCH:-1}"
RATE="${WEBHOOKS_RATE:-2000}"
OUTAGE="${WEBHOOKS_OUTAGE_SECS:-600}"
PHASES="${WEBHOOKS_PHASES:-throughput backlog idle}"
IDLE_ENDPOINTS="${WEBHOOKS_IDLE_ENDPOINTS:-50}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ricochet-webhooks-bench.XXXXXX")"
ADMIN_KEY="bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PARTITIONS=12
declare -A PID=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local status=$? name
    trap - EXIT INT TERM
    for name in steady webhooks receiver receiver2 api aggregator kafka clickhouse; do
        [[ -n "${PID[$name]:-}" ]] || continue
        kill -TERM "${PID[$name]}" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "${PID[$name]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${PID[$name]}" 2>/dev/null || true
    done
    if [[ "${WEBHOOKS_KEEP:-0}" == 1 || $status -ne 0 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
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
api() { curl -sf -H "Authorization: Bearer $ADMIN_KEY" -H 'content-type: application/json' "$@"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK="$(getconf CLK_TCK)"
now() { date +%s.%N; }
received() { curl -sf "http://127.0.0.1:$1/count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events"])'; }
# The deliverer's lag behind `decided`, summed over its endpoints (its /metrics).
lag() {
    curl -sf "http://127.0.0.1:$WEBHOOKS_PORT/metrics" |
        awk '/^ricochet_webhook_lag_events\{/ && /run="live"/ { s += $NF } END { printf "%d\n", s }'
}

if [[ "${WEBHOOKS_SKIP_BUILD:-0}" != 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release -p ricochet-aggregator -p ricochet-api -p ricochet-webhooks -p ricochet-bench \
        --bins) >&2
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
BROKERS="127.0.0.1:$KAFKA_PORT"
export NO_COLOR=1 RUST_LOG=warn RICOCHET_KAFKA_BROKERS="$BROKERS" RICOCHET_CLICKHOUSE_URL="http://127.0.0.1:$CH_HTTP" \
    RICOCHET_CLICKS_PARTITIONS="$PARTITIONS" RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS=true

pick_port AGG_PORT
RICOCHET_LISTEN="127.0.0.1:$AGG_PORT" "$BIN/ricochet-aggregator" >"$WORK/aggregator.log" 2>&1 &
PID[aggregator]=$!
pick_port API_PORT
RICOCHET_LISTEN="127.0.0.1:$API_PORT" RICOCHET_ADMIN_KEY="$ADMIN_KEY" "$BIN/ricochet-api" >"$WORK/api.log" 2>&1 &
PID[api]=$!
wait_until 120 "the aggregator" curl -sf "http://127.0.0.1:$AGG_PORT/readyz"
wait_until 120 "the API" curl -sf "http://127.0.0.1:$API_PORT/readyz"
pick_port RECEIVER_PORT
"$BIN/webhook-receiver" --listen "127.0.0.1:$RECEIVER_PORT" >"$WORK/receiver.log" 2>&1 &
PID[receiver]=$!
wait_until 30 "the receiver" curl -sf "http://127.0.0.1:$RECEIVER_PORT/count"
pick_port WEBHOOKS_PORT

start_deliverer() {
    RICOCHET_LISTEN="127.0.0.1:$WEBHOOKS_PORT" "$BIN/ricochet-webhooks" >>"$WORK/webhooks.log" 2>&1 &
    PID[webhooks]=$!
    wait_until 60 "the deliverer" curl -sf "http://127.0.0.1:$WEBHOOKS_PORT/readyz"
}
stop_deliverer() {
    kill -TERM "${PID[webhooks]}"
    wait "${PID[webhooks]}" || true
    unset 'PID[webhooks]'
}
register() { # CLIENT PORT
    api -X POST "http://127.0.0.1:$API_PORT/v1/clients/$1/webhooks" -d "{\"url\":\"http://127.0.0.1:$2/hook\",
        \"events\":[\"click.human\",\"click.bot\",\"open.human\",\"open.machine\"],\"batch_size\":$BATCH}" >/dev/null ||
        die "registering a webhook for $1 failed"
}

SUMMARY="$WORK/summary.txt"
echo "webhooks: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), batch_size $BATCH" | tee "$SUMMARY"

if [[ " $PHASES " == *" throughput "* ]]; then
    register client-0000 "$RECEIVER_PORT"
    log "throughput: $EVENTS clicks of one client, the deliverer stopped"
    A0="$(cpu_ticks "${PID[aggregator]}")"
    T0="$(now)"
    "$BIN/preload-clicks" --brokers "$BROKERS" --partitions "$PARTITIONS" --count "$EVENTS" --clients 1 \
        --hot-share 1 --hot-links 200 --span-minutes 10 >"$WORK/preload.txt"
    "$BIN/topic-count" --brokers "$BROKERS" --topic decided --expect "$EVENTS" --timeout-secs 1800 \
        >"$WORK/decided.txt" || die "the decided topic did not reach $EVENTS: $(cat "$WORK/decided.txt")"
    T1="$(now)"
    A1="$(cpu_ticks "${PID[aggregator]}")"
    log "delivering them"
    start_deliverer
    W0="$(cpu_ticks "${PID[webhooks]}")"
    T2="$(now)"
    for _ in $(seq 36000); do
        [[ "$(received "$RECEIVER_PORT")" -ge "$EVENTS" ]] && break
        sleep 0.1
    done
    T3="$(now)"
    W1="$(cpu_ticks "${PID[webhooks]}")"
    GOT="$(received "$RECEIVER_PORT")"
    [[ "$GOT" -ge "$EVENTS" ]] || die "only $GOT of $EVENTS delivered"
    stop_deliverer
    printf '%-34s %10s %12s %14s\n' throughput events "events/s" "cpu_us/event" | tee -a "$SUMMARY"
    awk -v n="$EVENTS" -v t0="$T0" -v t1="$T1" -v c0="$A0" -v c1="$A1" -v tick="$TICK" 'BEGIN {
        printf "%-34s %10d %12.0f %14.1f\n", "aggregator (clicks -> decided)", n, n / (t1 - t0), (c1 - c0) * 1e6 / tick / n }' |
        tee -a "$SUMMARY"
    awk -v n="$GOT" -v t0="$T2" -v t1="$T3" -v c0="$W0" -v c1="$W1" -v tick="$TICK" 'BEGIN {
        printf "%-34s %10d %12.0f %14.1f\n", "deliverer (decided -> receiver)", n, n / (t1 - t0), (c1 - c0) * 1e6 / tick / n }' |
        tee -a "$SUMMARY"
fi

if [[ " $PHASES " == *" backlog "* ]]; then
    pick_port RECEIVER2_PORT
    register steady-0000 "$RECEIVER2_PORT"
    start_deliverer
    log "backlog: $RATE clicks/s with the receiver down for ${OUTAGE}s"
    "$BIN/steady-clicks" --brokers "$BROKERS" --rate "$RATE" --duration-secs $((OUTAGE + 3600)) --links 500 \
        >"$WORK/steady.txt" 2>&1 &
    PID[steady]=$!
    sleep "$OUTAGE"
    BACKLOG="$(lag)"
    "$BIN/webhook-receiver" --listen "127.0.0.1:$RECEIVER2_PORT" >"$WORK/receiver2.log" 2>&1 &
    PID[receiver2]=$!
    wait_until 30 "the second receiver" curl -sf "http://127.0.0.1:$RECEIVER2_PORT/count"
    UP="$(now)"
    log "receiver up with $BACKLOG events behind; waiting for the drain"
    FIRST=""
    DRAINED=""
    for _ in $(seq 3600); do
        sleep 1
        [[ -z "$FIRST" && "$(received "$RECEIVER2_PORT")" -gt 0 ]] && FIRST="$(now)"
        if [[ -n "$FIRST" ]] && [[ "$(lag)" -le "$RATE" ]]; then DRAINED="$(now)"; break; fi
    done
    [[ -n "$DRAINED" ]] || die "the backlog did not drain within an hour"
    DELIVERED="$(received "$RECEIVER2_PORT")"
    printf '%-34s %10s %12s %12s %14s\n' backlog backlog "first_s" "drain_s" "drain_ev/s" | tee -a "$SUMMARY"
    awk -v b="$BACKLOG" -v up="$UP" -v f="$FIRST" -v d="$DRAINED" -v n="$DELIVERED" -v o="$OUTAGE" -v r="$RATE" 'BEGIN {
        printf "%-34s %10d %12.0f %12.0f %14.0f\n", sprintf("%ds down at %d clicks/s", o, r), b, f - up, d - f, n / (d - f) }' |
        tee -a "$SUMMARY"
fi
if [[ " $PHASES " == *" idle "* ]]; then
    [[ -n "${PID[webhooks]:-}" ]] && stop_deliverer
    if [[ -n "${PID[steady]:-}" ]]; then
        kill -TERM "${PID[steady]}"
        wait "${PID[steady]}" || true
        unset 'PID[steady]'
    fi
    for i in $(seq -w 1 "$IDLE_ENDPOINTS"); do register "idle-$i" "$RECEIVER_PORT"; done
    start_deliverer
    sleep 10
    C0="$(cpu_ticks "${PID[webhooks]}")"
    sleep 60
    C1="$(cpu_ticks "${PID[webhooks]}")"
    RSS="$(awk '/^VmRSS/ { print $2 }' "/proc/${PID[webhooks]}/status")"
    THREADS="$(awk '/^Threads/ { print $2 }' "/proc/${PID[webhooks]}/status")"
    RUNS="$(curl -sf "http://127.0.0.1:$WEBHOOKS_PORT/metrics" | awk '/^ricochet_webhook_runs / { print $2 }')"
    printf '%-34s %10s %12s %14s %10s %8s\n' idle runs "core_%" "core_%/run" rss_mb threads | tee -a "$SUMMARY"
    awk -v n="$RUNS" -v c0="$C0" -v c1="$C1" -v tick="$TICK" -v rss="$RSS" -v th="$THREADS" 'BEGIN {
        pct = (c1 - c0) / tick / 60 * 100
        printf "%-34s %10d %12.1f %14.3f %10.1f %8d\n", "endpoints without traffic, 60 s", n, pct, pct / n, rss / 1024, th }' |
        tee -a "$SUMMARY"
fi
mkdir -p "$ROOT/bench/out"
cp "$SUMMARY" "$ROOT/bench/out/webhooks-$(date -u +%Y%m%dT%H%M%SZ).txt"
