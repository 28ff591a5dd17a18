#!/usr/bin/env bash
# The aggregate API under dashboard polling, in one run (a benchmark: it
# reports numbers, it is not a pass/fail test of speed).
#
#   bench/dashboards.sh
#
# Starts ClickHouse, the broker, the aggregator and the edge (release builds)
# on free loopback ports in a temporary directory, creates 50 links for 5
# clients, then runs poll-dashboards: 1,000 screens polling one link's stats
# every second while clicks flow through the edge. Prints the endpoint's
# p50/p99, the ClickHouse queries per second the API made against the
# distinct requests per second (the goal: no more), and how fresh the numbers
# shown were. Everything it starts is stopped on exit.
#
# Settings: BENCH_DASHBOARDS=1000 BENCH_DURATION=30 BENCH_CLICK_RATE=200 BENCH_SKIP_BUILD=1
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DASHBOARDS="${BENCH_DASHBOARDS:-1000}"
DURATION="${BENCH_DURATION:-30}"
CLICK_RATE="${BENCH_CLICK_RATE:-200}"
BIN="$ROOT/target/release"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ricochet-dash-bench.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 1
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 300); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.2; done; echo "no answer from $1" >&2; exit 1; }

[[ -n ${BENCH_SKIP_BUILD:-} ]] || cargo build --release --bins -q
CH_HTTP=$(free_port); CH_TCP=$(free_port); KAFKA=$(free_port); API=$(free_port); EDGE=$(free_port)
"$ROOT/infra/clickhouse/run.sh" "$WORK/ch" "$CH_HTTP" "$CH_TCP" "$(free_port)" > "$WORK/ch.log" 2>&1 & PIDS+=($!)
"$ROOT/infra/kafka/run.sh" "$WORK/kafka" "$KAFKA" --group-initial-rebalance-delay 0s > "$WORK/kafka.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$CH_HTTP/ping"
until (exec 3<>/dev/tcp/127.0.0.1/"$KAFKA") 2>/dev/null; do sleep 0.2; done

export RICOCHET_KAFKA_BROKERS="127.0.0.1:$KAFKA" RICOCHET_CLICKHOUSE_URL="http://127.0.0.1:$CH_HTTP"
export RICOCHET_ADMIN_KEY="bench-admin-key-0123456789" RUST_LOG=warn
RICOCHET_LISTEN="127.0.0.1:$(free_port)" "$BIN/ricochet-aggregator" > "$WORK/aggregator.log" 2>&1 & PIDS+=($!)
RICOCHET_LISTEN="127.0.0.1:$API" "$BIN/ricochet-api" > "$WORK/api.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$API/readyz"
python3 - "$API" > "$WORK/links.txt" <<'PY'
import json, sys, urllib.request
api = sys.argv[1]
items = [{"client_id": f"client{c}", "campaign_id": "blast", "destination_url": f"https://c{c}.example/{l}"}
         for c in range(5) for l in range(10)]
req = urllib.request.Request(f"http://127.0.0.1:{api}/v1/links:batch", data=json.dumps({"links": items}).encode(),
                             headers={"content-type": "application/json", "authorization": "Bearer bench-admin-key-0123456789"})
for link in json.load(urllib.request.urlopen(req))["links"]:
    print(link["link_id"], link["code"])
PY
RICOCHET_LISTEN="127.0.0.1:$EDGE" RICOCHET_SPOOL_DIR="$WORK/spool" "$BIN/ricochet-redirect" > "$WORK/edge.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$EDGE/readyz"

echo "== bench/dashboards.sh: $DASHBOARDS dashboards, 50 links, 5 clients, ${DURATION}s, $CLICK_RATE clicks/s"
"$BIN/poll-dashboards" --api "http://127.0.0.1:$API" --edge "http://127.0.0.1:$EDGE" --key "$RICOCHET_ADMIN_KEY" \
    --links "$WORK/links.txt" --dashboards "$DASHBOARDS" --duration-s "$DURATION" --click-rate "$CLICK_RATE" | tee "$WORK/result.txt"
mkdir -p "$ROOT/bench/out"
cp "$WORK/result.txt" "$ROOT/bench/out/dashboards-$(date -u +%Y%m%dT%H%M%SZ).txt"
