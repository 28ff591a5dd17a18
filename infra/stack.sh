#!/usr/bin/env bash
# Starts the whole Ricochet stack on this machine and prints where to click.
#
#   infra/stack.sh [up]    install what is missing, start ClickHouse, the broker,
#                          the aggregator, the API and the edge, create a demo link
#   infra/stack.sh down    stop everything `up` started
#   infra/stack.sh status  show what is running
#   infra/stack.sh secrets make the keys (admin key, recipient-token keys) if missing,
#                          and print where they are; `up` does this first
#   infra/stack.sh demo    create a demo link and client key on the running stack
#
# Keys stay off command lines (every process's arguments are readable by every local
# user): they reach the services in environment variables and curl in header files,
# `-H @FILE`. The state folder is 0700 and the files holding keys 0600.
#
# Already run Kafka or ClickHouse? Point the stack at them and the local one is
# not started:  RICOCHET_KAFKA_BROKERS=host:9092  RICOCHET_CLICKHOUSE_URL=http://host:8123
# Ports (defaults): RICOCHET_EDGE_PORT=8080 RICOCHET_API_PORT=8081 RICOCHET_AGGREGATOR_PORT=8082 RICOCHET_EDGE_OPS_PORT=9090
#   RICOCHET_KAFKA_PORT=9092 RICOCHET_CLICKHOUSE_HTTP_PORT=8123 RICOCHET_CLICKHOUSE_TCP_PORT=9000
# State and logs: RICOCHET_STACK_DIR (default .stack/ in the repository).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

dir="${RICOCHET_STACK_DIR:-$repo/.stack}"
edge_port="${RICOCHET_EDGE_PORT:-8080}"
api_port="${RICOCHET_API_PORT:-8081}"
aggregator_port="${RICOCHET_AGGREGATOR_PORT:-8082}"
webhooks_port="${RICOCHET_WEBHOOKS_PORT:-8084}"
edge_ops_port="${RICOCHET_EDGE_OPS_PORT:-9090}"
kafka_port="${RICOCHET_KAFKA_PORT:-9092}"
ch_http_port="${RICOCHET_CLICKHOUSE_HTTP_PORT:-8123}"
ch_tcp_port="${RICOCHET_CLICKHOUSE_TCP_PORT:-9000}"
external_kafka="${RICOCHET_KAFKA_BROKERS:-}"
external_ch="${RICOCHET_CLICKHOUSE_URL:-}"
brokers="${external_kafka:-127.0.0.1:$kafka_port}"
clickhouse_url="${external_ch:-http://127.0.0.1:$ch_http_port}"

say() { printf '\033[1mstack:\033[0m %s\n' "$*"; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

# The state folder holds keys (and the servers' data): only its owner may enter it,
# whatever the umask, and a folder made by an older stack.sh with 0755 is fixed.
state_dir() {
    mkdir -p "$dir"
    chmod 700 "$dir"
}

# write_secret FILE: stdin into FILE, 0600 from the first byte (mktemp makes it so)
# and in place only once complete.
write_secret() {
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    cat >"$tmp"
    mv -f "$tmp" "$1"
}

# header_file FILE KEY: FILE holds `Authorization: Bearer KEY`, for `curl -H @FILE`.
header_file() {
    printf 'Authorization: Bearer %s\n' "$2" | write_secret "$1"
}

# api KEY METHOD PATH [CURL ARGS...]: one call to the API, the key read by curl from a
# pipe (`-H @/dev/fd/N`; printf is a builtin, so the key is in no process's arguments).
api() {
    local key=$1 method=$2 path=$3
    shift 3
    curl -fsS -X "$method" -H @<(printf 'Authorization: Bearer %s\n' "$key") "$@" "http://127.0.0.1:$api_port$path"
}

# secrets: the admin key and the recipient-token master key, made once and kept with
# the stack's state (unless given in RICOCHET_ADMIN_KEY / RICOCHET_TOKEN_KEYS), then
# exported for the services.
secrets() {
    state_dir
    local file
    # Files an older stack.sh made world-readable.
    for file in admin-key token-keys admin.header demo.header; do
        if [[ -e $dir/$file ]]; then chmod 600 "$dir/$file"; fi
    done
    admin_key_at=RICOCHET_ADMIN_KEY
    if [[ -z ${RICOCHET_ADMIN_KEY:-} ]]; then
        [[ -s $dir/admin-key ]] ||
            python3 -c 'import secrets; print(secrets.token_hex(24))' | write_secret "$dir/admin-key"
        RICOCHET_ADMIN_KEY=$(<"$dir/admin-key")
        admin_key_at=$dir/admin-key
    fi
    export RICOCHET_ADMIN_KEY
    # For the commands printed at the end: `curl -H @.stack/admin.header …`.
    header_file "$dir/admin.header" "$RICOCHET_ADMIN_KEY"
    # The edge verifies recipient tokens with it, the API derives each client's
    # signing key from it.
    token_keys_at=RICOCHET_TOKEN_KEYS
    if [[ -z ${RICOCHET_TOKEN_KEYS:-} ]]; then
        [[ -s $dir/token-keys ]] ||
            python3 -c 'import secrets; print("k1:" + secrets.token_hex(32))' | write_secret "$dir/token-keys"
        RICOCHET_TOKEN_KEYS=$(<"$dir/token-keys")
        token_keys_at=$dir/token-keys
    fi
    export RICOCHET_TOKEN_KEYS
}

pidfile() { echo "$dir/pids/$1.pid"; }
running() { [[ -f $(pidfile "$1") ]] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }

# start NAME CMD...: runs CMD detached from this shell, logging to $dir/logs/NAME.log.
start() {
    local name=$1; shift
    if running "$name"; then
        say "$name already running (pid $(cat "$(pidfile "$name")"))"
        return
    fi
    state_dir
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
    # First, so that a stack that cannot get its keys starts nothing.
    secrets
    # The services build needs none of the servers, so it runs beside the
    # installer: on a first run the broker's build is most of the wait, and
    # the two together keep both cores busy through each one's serial steps
    # (downloads, build scripts, links). Only the three services, not bench/.
    mkdir -p "$dir/logs"
    # What the build itself needs (librdkafka's TLS: libssl-dev) comes first.
    infra/install.sh --build-deps || die "installing the build's dependencies failed (output above)"
    say "building the services (release) beside the installer; log: $dir/logs/build.log"
    cargo build --release --bins -p ricochet-redirect -p ricochet-aggregator -p ricochet-api -p ricochet-webhooks \
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

    export RICOCHET_KAFKA_BROKERS="$brokers" RICOCHET_CLICKHOUSE_URL="$clickhouse_url"
    export RICOCHET_PUBLIC_REDIRECT_URL="http://127.0.0.1:$edge_port"
    # Both apply the ClickHouse migrations (idempotent) and create the topics they use at start.
    RICOCHET_LISTEN="127.0.0.1:$aggregator_port" start aggregator "$bin/ricochet-aggregator"
    # The stack's webhooks may go to receivers on this machine (the API
    # checks targets at registration, the deliverer again at delivery).
    if [[ -z $external_ch ]]; then
        # The API's own ClickHouse user: its settings profile and a quota per client
        # (infra/clickhouse/users.xml, docs/security.md).
        RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS=true RICOCHET_CLICKHOUSE_USER=ricochet_api \
            RICOCHET_LISTEN="127.0.0.1:$api_port" start api "$bin/ricochet-api"
    else
        RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS=true RICOCHET_LISTEN="127.0.0.1:$api_port" start api "$bin/ricochet-api"
    fi
    wait_for aggregator "http://127.0.0.1:$aggregator_port/readyz" 60
    wait_for api "http://127.0.0.1:$api_port/readyz" 60
    # The webhook deliverer. Receivers on this machine or its network are
    # allowed here only: in production private targets are refused (no SSRF).
    RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS=true RICOCHET_LISTEN="127.0.0.1:$webhooks_port" \
        start webhooks "$bin/ricochet-webhooks"
    wait_for webhooks "http://127.0.0.1:$webhooks_port/readyz" 60
    make_demo
    # Started after the demo link exists: the edge reports ready only once it has
    # loaded the registry up to that point, so the link works at the first click.
    RICOCHET_LISTEN="127.0.0.1:$edge_port" RICOCHET_OPS_LISTEN="127.0.0.1:$edge_ops_port" RICOCHET_SPOOL_DIR="$dir/spool" \
      start redirect "$bin/ricochet-redirect"
    wait_for redirect "http://127.0.0.1:$edge_port/readyz" 60

    printf '\nRicochet is running.\n\n'
    print_demo
    cat <<MSG
  Admin key:                 in $admin_key_at   (for curl: -H @$dir/admin.header)
  Recipient-token keys:      in $token_keys_at   (docs/recipient-tokens.md)
  Create more links:         curl -X POST http://127.0.0.1:$api_port/v1/links -H @$dir/admin.header \\
                               -H 'content-type: application/json' \\
                               -d '{"client_id":"demo","campaign_id":"welcome","destination_url":"https://example.com/"}'
  API reference:             http://127.0.0.1:$api_port/v1/openapi.json
  Status (lag, freshness):   curl -H @$dir/admin.header http://127.0.0.1:$api_port/v1/status
  Webhooks of decided clicks: curl -X POST http://127.0.0.1:$api_port/v1/clients/demo/webhooks -H @$dir/admin.header \\
                               -H 'content-type: application/json' \\
                               -d '{"url":"http://127.0.0.1:9999/hook","events":["click.human"]}'   (docs/webhooks.md)
  Metrics:                   http://127.0.0.1:$edge_ops_port/metrics (the edge's operations port)  http://127.0.0.1:$api_port/metrics  http://127.0.0.1:$aggregator_port/metrics  http://127.0.0.1:$webhooks_port/metrics
  ClickHouse (raw events):   $clickhouse_url   (click_events, click_rollups, click_recipients: docs/data-model.md)
  Logs:                      $dir/logs/
  Stop everything:           infra/stack.sh down
MSG
}

# make_demo: a demo link, a client key for its dashboard and one URL signed for a
# recipient, on the running API; sets tracking, link_id, demo_key and recipient_url.
make_demo() {
    local link
    link=$(api "$RICOCHET_ADMIN_KEY" POST /v1/links -H 'content-type: application/json' \
        -d '{"client_id":"demo","campaign_id":"welcome","destination_url":"https://example.com/"}') ||
        die "could not create the demo link"
    # The dashboard's key sits in a URL and in the browser's localStorage: `read`
    # only, so it shows counts but no recipient addresses or signing keys.
    demo_key=$(api "$RICOCHET_ADMIN_KEY" POST /v1/clients/demo/api-keys -H 'content-type: application/json' \
        -d '{"label":"dashboard","scopes":["read"]}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])') || die "could not create the demo API key"
    header_file "$dir/demo.header" "$demo_key"
    tracking=$(printf '%s' "$link" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tracking_url"])')
    link_id=$(printf '%s' "$link" | python3 -c 'import json,sys; print(json.load(sys.stdin)["link_id"])')
    # One URL signed for a recipient, the way a sender mints them (docs/recipient-tokens.md).
    recipient_url=$(api "$RICOCHET_ADMIN_KEY" GET /v1/clients/demo/token-keys |
        TRACKING="$tracking" python3 -c '
import base64, hashlib, hmac, json, os, sys
key = json.load(sys.stdin)["keys"][0]
# An opaque recipient id, as docs/recipient-tokens.md recommends: the sender
# keeps HMAC(its own secret, address) beside the address, and the tracking URL,
# which mail scanners and proxies log, never carries the address itself.
address = "alice@example.com"
recipient = hmac.new(b"demo-sender-secret", address.encode(), hashlib.sha256).hexdigest()[:32]
tracking = os.environ["TRACKING"]
code = tracking.rsplit("/", 1)[1]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
sig = hmac.new(bytes.fromhex(key["key"]), f"{code}.{recipient}".encode(), hashlib.sha256).digest()[:16]
kid = key["kid"]
print(f"{tracking}/{kid}.{b64(recipient.encode())}.{b64(sig)}")') ||
        die "could not sign the demo recipient URL"
}

print_demo() {
    cat <<MSG
  Click this tracking link:  $tracking
  Or as recipient alice:     $recipient_url
                             (an opaque id, not her address: docs/recipient-tokens.md)
  Watch it on the dashboard: http://127.0.0.1:$api_port/dashboard?client=demo&key=$demo_key
  Or as JSON:                curl -H @$dir/demo.header http://127.0.0.1:$api_port/v1/links/$link_id/stats
MSG
}

down() {
    local name
    for name in redirect webhooks api aggregator kafka clickhouse; do
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
    for name in clickhouse kafka aggregator api webhooks redirect; do
        if running "$name"; then say "$name: running (pid $(cat "$(pidfile "$name")"))"; else say "$name: stopped"; fi
    done
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    status) status ;;
    secrets)
        secrets
        say "admin key: in $admin_key_at (for curl: -H @$dir/admin.header); recipient-token keys: in $token_keys_at"
        ;;
    demo)
        secrets
        make_demo
        print_demo
        ;;
    *) die "usage: infra/stack.sh [up|down|status|secrets|demo]" ;;
esac
