#!/usr/bin/env bash
# Run a private, standalone ZooKeeper (Debian's `zookeeper` package) in the FOREGROUND (exec),
# for ClickHouse's replicated tables in tests and on a dev box.
#
#   infra/zookeeper/run.sh STATE_DIR CLIENT_PORT
#
# Loopback only, all state under STATE_DIR, no admin server (it would take port 8080).
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 STATE_DIR CLIENT_PORT" >&2
    exit 2
fi
port="$2"
if ! [[ "$port" =~ ^[0-9]+$ ]] || (( port < 1 || port > 65535 )); then
    echo "$0: invalid port: $port" >&2
    exit 2
fi
jar=/usr/share/java/zookeeper.jar
if [[ ! -r $jar ]]; then
    echo "$0: $jar not found; run infra/install.sh first" >&2
    exit 127
fi
mkdir -p "$1"
state_dir="$(cd "$1" && pwd)"
mkdir -p "$state_dir/data"
# tickTime 2 s: sessions may last up to 20 ticks (40 s), so ClickHouse gets the 30 s it asks for
# (tests/src/servers.rs). With shorter sessions, a server starved of CPU for a few seconds loses
# its session, and 18.16 then stops applying ALTERs to its replicated tables (docs/cluster.md).
cat > "$state_dir/zoo.cfg" <<CFG
tickTime=2000
dataDir=$state_dir/data
clientPortAddress=127.0.0.1
clientPort=$port
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,mntr
CFG
cat > "$state_dir/log4j.properties" <<'LOG'
log4j.rootLogger=WARN, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1}: %m%n
LOG
cd "$state_dir"
# The package's jar names its dependencies in its manifest's Class-Path. A small heap: it holds
# a few hundred znodes.
exec java -Xmx256m -Dzookeeper.log.dir="$state_dir" -Dlog4j.configuration="file:$state_dir/log4j.properties" \
    -cp "$state_dir:$jar" org.apache.zookeeper.server.ZooKeeperServerMain "$state_dir/zoo.cfg"
