#!/usr/bin/env bash
# The edge's registry at scale, in one run (a benchmark: it reports numbers
# against the goals of issue 9, it is not a pass/fail test).
#
#   bench/registry.sh
#
# For each size in BENCH_SIZES (cumulative: the topic grows from one size to the next):
# 1. in process: `registry-rss --decode` (the registry alone, links encoded and
#    decoded as the tail gets them): RSS per link and links applied per second;
# 2. with a private broker (infra/kafka/run.sh): `seed-links` brings the links
#    topic to the size, then a fresh edge with no snapshot loads it: seconds to
#    /readyz (the cold-load rate) and the edge's VmRSS when ready;
# 3. SIGTERM: the edge writes its snapshot on the way down (seconds, bytes);
# 4. the edge is started again on that snapshot: seconds to /readyz and VmRSS.
# Each start also reports the CPU per link the broker and the edge spent to get ready.
#
# Every process it starts is stopped on exit; all state is under one temporary
# directory. A summary goes to stdout and bench/out/registry-<time>.txt.
#
# Settings (environment):
#   BENCH_SIZES="1000000 10000000"   link counts, ascending
#   BENCH_SKIP_BUILD=1               use the binaries already in target/release
#   BENCH_SKIP_BROKER=1              only the in-process measurement (1)
#   BENCH_KEEP=1                     keep the temporary directory
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZES="${BENCH_SIZES:-1000000 10000000}"
BIN="$ROOT/target/release"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ricochet-registry-bench.XXXXXX")"
SUMMARY="$WORK/summary.txt"
declare -A PID=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
note() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }

stop() { # NAME [TIMEOUT_SECS]: SIGTERM, wait, SIGKILL
    local name="$1" timeout="${2:-120}" pid="${PID[$1]:-}"
    [[ -n "$pid" ]] || return 0
    unset "PID[$name]"
    kill -TERM "$pid" 2>/dev/null || return 0
    local i
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    for name in "${!PID[@]}"; do stop "$name" 10; done
    if [[ -s $SUMMARY ]]; then
        mkdir -p "$ROOT/bench/out"
        cp "$SUMMARY" "$ROOT/bench/out/registry-$(date +%Y%m%d-%H%M%S).txt"
    fi
    if [[ -n ${BENCH_KEEP:-} ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_mb() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
TCK="$(getconf CLK_TCK)"
ticks() { # PID -> utime+stime in clock ticks (0 once gone)
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
    stat="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}
us_per() { awk -v t="$1" -v n="$2" -v tck="$TCK" 'BEGIN { printf "%.1f", t * 1000000 / tck / n }'; } # TICKS N

wait_ready() { # URL TIMEOUT_SECS PID
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
    log "building (release)"
    cargo build --release -p ricochet-redirect -p ricochet-bench --bins >&2
fi

note "registry benchmark $(date -u +%FT%TZ) on $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in $SIZES; do
    log "in process: $n links"
    note "$("$BIN/registry-rss" --count "$n" --decode)"
done
[[ -n ${BENCH_SKIP_BROKER:-} ]] && exit 0

port=$(free_port)
mkdir -p "$WORK/kafka"
"$ROOT/infra/kafka/run.sh" "$WORK/kafka" "$port" > "$WORK/kafka.log" 2>&1 &
PID[kafka]=$!
for ((i = 0; i < 600; i++)); do grep -q "ready in" "$WORK/kafka.log" && break; sleep 0.1; done
grep -q "ready in" "$WORK/kafka.log" || die "broker not ready: $(tail -5 "$WORK/kafka.log")"
brokers="127.0.0.1:$port"

seeded=0
for n in $SIZES; do
    log "seeding to $n links"
    note "$("$BIN/seed-links" --brokers "$brokers" --count $((n - seeded)))"
    seeded=$n
    edge_port=$(free_port)
    spool="$WORK/spool-$n"
    start_edge() {
        RICOCHET_KAFKA_BROKERS="$brokers" RICOCHET_LISTEN="127.0.0.1:$edge_port" RICOCHET_SPOOL_DIR="$spool" \
            RICOCHET_NODE_ID=bench RUST_LOG=info,librdkafka=warn "$BIN/ricochet-redirect" >> "$WORK/edge-$n.log" 2>&1 &
        PID[edge]=$!
    }
    for phase in cold snapshot; do
        started=$(now)
        broker0=$(ticks "${PID[kafka]}")
        start_edge
        wait_ready "http://127.0.0.1:$edge_port/readyz" 1800 "${PID[edge]}" || die "edge not ready: $(tail -5 "$WORK/edge-$n.log")"
        ready=$(secs "$started" "$(now)")
        # CPU spent to get ready, per link: what the broker spent serving the
        # topics, and the edge's own (decoding, applying, or reading the snapshot).
        broker_us=$(us_per $(($(ticks "${PID[kafka]}") - broker0)) "$n")
        edge_us=$(us_per "$(ticks "${PID[edge]}")" "$n")
        rss=$(rss_mb "${PID[edge]}")
        rate=$(awk -v n="$n" -v s="$ready" 'BEGIN { printf "%.0f", n / s }')
        note "edge links=$n start=$phase ready_secs=$ready links_per_sec=$rate rss_mb=$rss cpu_us_per_link_broker=$broker_us cpu_us_per_link_edge=$edge_us"
        stopping=$(now)
        stop edge 600
        snap="$spool/registry.snapshot"
        note "edge links=$n stop_after=$phase shutdown_secs=$(secs "$stopping" "$(now)") snapshot_mb=$(du -m "$snap" | cut -f1)"
    done
    grep -E "snapshot (loaded|refused)|registry loaded" "$WORK/edge-$n.log" | tail -3 >&2 || true
done
note "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
