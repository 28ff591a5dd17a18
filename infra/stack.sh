#!/usr/bin/env bash
# Starts the whole Ricochet stack on this machine and prints where to click.
#
#   infra/stack.sh [up]    install what is missing, start ClickHouse, the broker,
#                          the aggregator, the API and the edge, create a demo link
#   infra/stack.sh down    stop everything `up` started
#   infra/stack.sh status  show what is running
#
# Already run Kafka or ClickHouse? Point the stack at them and the local one is
# not started:  RICOCHET_KAFKA_BROKERS=host:9092  RICOCHET_CLICKHOUSE_URL=http://host:8123
# Ports (defaults): RICOCHET_EDGE_PORT=8080 RICOCHET_API_PORT=8081 RICOCHET_AGGREGATOR_PORT=8082
#   RICOCHET_KAFKA_PORT=9092 RICOCHET_CLICKHOUSE_HTTP_PORT=8123 RICOCHET_CLICKHOUSE_TCP_PORT=9000
# State and logs: RICOCHET_STACK_DIR (default .stack/ in the repository).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

dir="${RICOCHET_STACK_DIR:-$repo/.stack}"
edge_port="${RICOCHET_EDGE_PORT:-8080}"
api_port="${RICOCHET_API_PORT:-8081}"
aggregator_port="${RICOCHET_AGGREGATOR_PORT:-8082}"
kafka_port="${RICOCHET_KAFKA_PORT:-9092}"
ch_http_port="${RICOCHET_CLICKHOUSE_HTTP_PORT:-8123}"
ch_tcp_port="${RICOCHET_CLICKHOUSE_TCP_PORT:-9000}"
external_kafka="${RICOCHET_KAFKA_BROKERS:-}"
external_ch="${RICOCHET_CLICKHOUSE_URL:-}"
brokers="${external_kafka:-127.0.0.1:$kafka_port}"
clickhouse_url="${external_ch:-http://127.0.0.1:$ch_http_port}"

say() { printf '\033[1mstack:\033[0m %s\n' "$*"; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

pidfile() { echo "$dir/pids/$1.pid"; }
running() { [[ -f $(pidfile "$1") ]] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }

# start NAME CMD...: runs CMD detached from this shell, logging to $dir/logs/NAME.log.
start() {
    local name=$1; shift
    if running "$name"; then
        say "$name already running (pid $(cat "$(pidfile "$name")"))"
        return
    fi
    mkdir -p "$dir/pids" "$dir/logs"
    setsid nohup "$@" >"$dir/logs/$name.log" 2>&1 < /dev/null &
    echo $! > "$(pidfile "$name")"
    say "$name started (pid $!, log $dir/logs/$name.log)"
}

# wait_for NAME URL SECONDS: polls URL until it answers 2xx.
wait_for() {
    local name=$1 url=$2 limit=$3 waited=0
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        if [[ -f $(pidfile "$name") ]] && ! running "$name"; then
            tail -n 30 "$dir/logs/$name.log" >&2 || true
            die "$name exited; log above"
        fi
        (( waited++ < limit * 5 )) || die "$name not ready after ${limit}s (log: $dir/logs/$name.log)"
        sleep 0.2
    done
}

up() {
    # The services build needs none of the servers, so it runs beside the
    # installer: on a first run the broker's build is most of the wait, and
    # the two together keep both cores busy through each one's serial steps
    # (downloads, build scripts, links). Only the three services, not bench/.
    mkdir -p "$dir/logs"
    say "building the services (release) beside the installer; log: $dir/logs/build.log"
    cargo build --release --bins -p ricochet-redirect -p ricochet-aggregator -p ricochet-api \
        >"$dir/logs/build.log" 2>&1 &
    local build=$!
    if ! infra/install.sh --stack; then
        kill "$build" 2>/dev/null || true
        die "installing the servers failed (output above)"
    fi
    if ! wait "$build"; then
        tail -n 40 "$dir/logs/build.log" >&2 || true
        die "building the services failed (log: $dir/logs/build.log)"
    fi
    say "services built"
    local bin="$repo/target/release"

    if [[ -z $external_ch ]]; then
        start clickhouse infra/clickhouse/run.sh "$dir/clickhouse" "$ch_http_port" "$ch_tcp_port" "$((ch_tcp_port + 9))"
        wait_for clickhouse "$clickhouse_url/ping" 60
    else
        say "using ClickHouse at $external_ch"
    fi
    if [[ -z $external_kafka ]]; then
        start kafka infra/kafka/run.sh "$dir/kafka" "$kafka_port"
        local waited=0
        until (exec 3<>/dev/tcp/127.0.0.1/"$kafka_port") 2>/dev/null; do
            (( waited++ < 300 )) || die "broker not listening after 60s (log: $dir/logs/kafka.log)"
            sleep 0.2
        done
    else
        say "using Kafka at $external_kafka"
    fi

    # The admin key is made once and kept with the stack's state.
    if [[ -z ${RICOCHET_ADMIN_KEY:-} ]]; then
        [[ -s $dir/admin-key ]] || python3 -c 'import secrets; print(secrets.token_hex(24))' > "$dir/admin-key"
        RICOCHET_ADMIN_KEY=$(cat "$dir/admin-key")
    fi
    export RICOCHET_ADMIN_KEY
    # So is the recipient-token master key: the edge verifies tokens with it, the
    # API derives each client's signing key from it.
    if [[ -z ${RICOCHET_TOKEN_KEYS:-} ]]; then
        [[ -s $dir/token-keys ]] || python3 -c 'import secrets; print("k1:" + secrets.token_hex(32))' > "$dir/token-keys"
        RICOCHET_TOKEN_KEYS=$(cat "$dir/token-keys")
    fi
    export RICOCHET_TOKEN_KEYS
    export RICOCHET_KAFKA_BROKERS="$brokers" RICOCHET_CLICKHOUSE_URL="$clickhouse_url"
    export RICOCHET_PUBLIC_REDIRECT_URL="http://127.0.0.1:$edge_port"
    # Both apply the ClickHouse migrations (idempotent) and create the topics they use at start.
    RICOCHET_LISTEN="127.0.0.1:$aggregator_port" start aggregator "$bin/ricochet-aggregator"
    RICOCHET_LISTEN="127.0.0.1:$api_port" start api "$bin/ricochet-api"
    wait_for aggregator "http://127.0.0.1:$aggregator_port/readyz" 60
    wait_for api "http://127.0.0.1:$api_port/readyz" 60
    local link
    local auth="Authorization: Bearer $RICOCHET_ADMIN_KEY"
    link=$(curl -fsS -X POST "http://127.0.0.1:$api_port/v1/links" -H "$auth" -H 'content-type: application/json' \
        -d '{"client_id":"demo","campaign_id":"welcome","destination_url":"https://example.com/"}') ||
        die "could not create the demo link"
    local tracking link_id
    local demo_key
    demo_key=$(curl -fsS -X POST "http://127.0.0.1:$api_port/v1/clients/demo/api-keys" -H "$auth" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])') || die "could not create the demo API key"
    tracking=$(printf '%s' "$link" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tracking_url"])')
    link_id=$(printf '%s' "$link" | python3 -c 'import json,sys; print(json.load(sys.stdin)["link_id"])')
    # One URL signed for a recipient, the way a sender mints them (docs/recipient-tokens.md).
    local recipient_url
    recipient_url=$(curl -fsS -H "Authorization: Bearer $demo_key" "http://127.0.0.1:$api_port/v1/clients/demo/token-keys" |
        TRACKING="$tracking" python3 -c '
import base64, hashlib, hmac, json, os, sys
key = json.load(sys.stdin)["keys"][0]
tracking, recipient = os.environ["TRACKING"], "alice@example.com"
code = tracking.rsplit("/", 1)[1]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
sig = hmac.new(bytes.fromhex(key["key"]), f"{code}.{recipient}".encode(), hashlib.sha256).digest()[:16]
kid = key["kid"]
print(f"{tracking}/{kid}.{b64(recipient.encode())}.{b64(sig)}")') ||
        die "could not sign the demo recipient URL"
    # Started after the demo link exists: the edge reports ready only once it has
    # loaded the registry up to that point, so the link works at the first click.
    RICOCHET_LISTEN="127.0.0.1:$edge_port" RICOCHET_SPOOL_DIR="$dir/spool" start redirect "$bin/ricochet-redirect"
    wait_for redirect "http://127.0.0.1:$edge_port/readyz" 60

    cat <<MSG

Ricochet is running.

  Click this tracking link:  $tracking
  Or as recipient alice:     $recipient_url
  Watch it on the dashboard: http://127.0.0.1:$api_port/dashboard?client=demo&key=$demo_key
  Or as JSON:                curl -H 'Authorization: Bearer $demo_key' http://127.0.0.1:$api_port/v1/links/$link_id/stats
  Admin key:                 $RICOCHET_ADMIN_KEY   (also in $dir/admin-key)
  Recipient-token keys:      $dir/token-keys   (RICOCHET_TOKEN_KEYS, docs/recipient-tokens.md)
  Create more links:         curl -X POST http://127.0.0.1:$api_port/v1/links -H 'Authorization: Bearer $RICOCHET_ADMIN_KEY' \\
                               -H 'content-type: application/json' \\
                               -d '{"client_id":"demo","campaign_id":"welcome","destination_url":"https://example.com/"}'
  API reference:             http://127.0.0.1:$api_port/v1/openapi.json
  Status (lag, freshness):   curl -H 'Authorization: Bearer $RICOCHET_ADMIN_KEY' http://127.0.0.1:$api_port/v1/status
  Metrics:                   http://127.0.0.1:$edge_port/metrics  http://127.0.0.1:$api_port/metrics  http://127.0.0.1:$aggregator_port/metrics
  ClickHouse (raw events):   $clickhouse_url   (click_events, click_rollups, click_recipients: docs/data-model.md)
  Logs:                      $dir/logs/
  Stop everything:           infra/stack.sh down
MSG
}

down() {
    local name
    for name in redirect api aggregator kafka clickhouse; do
        if running "$name"; then
            kill "$(cat "$(pidfile "$name")")" 2>/dev/null || true
            for _ in $(seq 1 100); do running "$name" || break; sleep 0.1; done
            running "$name" && kill -9 "$(cat "$(pidfile "$name")")" 2>/dev/null || true
            say "$name stopped"
        fi
        rm -f "$(pidfile "$name")"
    done
}

status() {
    local name
    for name in clickhouse kafka aggregator api redirect; do
        if running "$name"; then say "$name: running (pid $(cat "$(pidfile "$name")"))"; else say "$name: stopped"; fi
    done
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: infra/stack.sh [up|down|status]" ;;
esac
