#!/usr/bin/env bash
# Run a single-node Kafka-protocol broker (nisshi 0.8.1) in the FOREGROUND (exec), so whoever
# spawns this script owns the broker's PID directly.
#
#   infra/kafka/run.sh STATE_DIR PORT [extra nisshi broker args...]
#
# e.g. in tests: infra/kafka/run.sh "$dir" 19092 --group-initial-rebalance-delay 0s
#
# The broker listens on, and advertises, 127.0.0.1:PORT only. Topics, messages and committed
# offsets live in STATE_DIR/kafka.db (SQLite), so they survive a restart in the same STATE_DIR.
# When ready it prints "ready in <N>ms" on stdout (unless --silent is passed).
#
# Env:
#   NISSHI_BIN                   broker binary (default: ~/.cargo/bin/nisshi, then PATH)
#   NISSHI_MAINTENANCE_INTERVAL  how often retention + compaction run, e.g. 2s (nisshi's
#                                default is 10m; they also run once right at startup)
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 STATE_DIR PORT [extra nisshi broker args...]" >&2
    exit 2
fi

state_dir="$1"
port="$2"
shift 2

if ! [[ "$port" =~ ^[0-9]+$ ]] || (( port < 1 || port > 65535 )); then
    echo "$0: invalid port: $port" >&2
    exit 2
fi

# NISSHI_BIN overrides; otherwise prefer the cargo-installed binary (that's where
# infra/install.sh puts it), then PATH.
nisshi="${NISSHI_BIN:-}"
if [[ -z "$nisshi" ]]; then
    if [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/nisshi" ]]; then
        nisshi="${CARGO_HOME:-$HOME/.cargo}/bin/nisshi"
    else
        nisshi="$(command -v nisshi || true)"
    fi
fi
if [[ -z "$nisshi" || ! -x "$nisshi" ]]; then
    echo "$0: nisshi not found; run infra/install.sh first (or set NISSHI_BIN)" >&2
    exit 127
fi

mkdir -p "$state_dir"
# nisshi resolves sqlite://X against its working directory (an absolute path is NOT honoured:
# the cwd is prepended), so the broker must run from inside STATE_DIR with a relative URL.
cd "$state_dir"

# nisshi reads its settings from env vars too (STORAGE_ENGINE, LISTENER_URL, ...) and loads
# a .env file via dotenv. Explicit flags below win over both, so only things we don't set
# (e.g. RUST_LOG) can leak in from the caller.
storage="sqlite://kafka.db"
# Only via this env var, because --storage-engine can't be given twice in the extra args.
if [[ -n "${NISSHI_MAINTENANCE_INTERVAL:-}" ]]; then
    storage="$storage?maintenance_interval=$NISSHI_MAINTENANCE_INTERVAL"
fi

exec "$nisshi" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage" \
    "$@"
