#!/usr/bin/env bash
# Run a private ClickHouse server in the FOREGROUND (exec), so whoever spawns this script
# owns the server's PID directly and can kill it without hunting for children.
#
#   infra/clickhouse/run.sh STATE_DIR HTTP_PORT TCP_PORT [INTERSERVER_PORT]
#
# All state (data, tmp, logs, rendered config) goes under STATE_DIR; extra config (a replica's
# ZooKeeper, cluster and macros) can be dropped in STATE_DIR/config.d/ beforehand. INTERSERVER_PORT
# is where replicas fetch parts from each other (a single server binds it too); it defaults to
# TCP_PORT+1, so pass it explicitly when running several servers on adjacent ports.
set -euo pipefail

if [[ $# -lt 3 || $# -gt 4 ]]; then
    echo "usage: $0 STATE_DIR HTTP_PORT TCP_PORT [INTERSERVER_PORT]" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
http_port="$2"
tcp_port="$3"
interserver_port="${4:-$((tcp_port + 1))}"

for port in "$http_port" "$tcp_port" "$interserver_port"; do
    if ! [[ "$port" =~ ^[0-9]+$ ]] || (( port < 1 || port > 65535 )); then
        echo "$0: invalid port: $port" >&2
        exit 2
    fi
done

# ClickHouse resolves relative paths against its cwd, so make STATE_DIR absolute first.
mkdir -p "$1"
state_dir="$(cd "$1" && pwd)"
mkdir -p "$state_dir"/{data,tmp,user_files,format_schemas,log}

server="$(command -v clickhouse-server || true)"
server="${server:-/usr/sbin/clickhouse-server}"
if [[ ! -x "$server" ]]; then
    echo "$0: clickhouse-server not found; run infra/install.sh first" >&2
    exit 127
fi

# Escape characters that are special in a sed replacement (we use | as the delimiter).
sed_escape() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

sed -e "s|@STATE_DIR@|$(sed_escape "$state_dir")|g" \
    -e "s|@HTTP_PORT@|$http_port|g" \
    -e "s|@TCP_PORT@|$tcp_port|g" \
    -e "s|@INTERSERVER_PORT@|$interserver_port|g" \
    "$here/config.xml.tmpl" > "$state_dir/config.xml.new"
mv "$state_dir/config.xml.new" "$state_dir/config.xml"
# users_config is resolved relative to config.xml, so users.xml must sit next to it.
cp "$here/users.xml" "$state_dir/users.xml"

# cd so that anything ClickHouse writes relative to its cwd (e.g. preprocessed configs)
# also lands in STATE_DIR.
cd "$state_dir"
exec "$server" --config-file="$state_dir/config.xml"
