#!/usr/bin/env bash
# Issue 8's labelled blasts, end to end on this machine (a benchmark: it
# reports numbers against goals, it is not a pass/fail test).
#
#   bench/blast.sh
#
# 1. builds the edge, the aggregator, the API and the bench helpers (dev profile unless BLAST_PROFILE=release: the load is
#    hundreds of requests a second, not a throughput test);
# 2. starts a private ClickHouse (infra/clickhouse/run.sh) and broker
#    (infra/kafka/run.sh) on free ports under one temporary directory, then
#    the aggregator (it applies the migrations and creates the topics), the
#    API, and the edge behind a trusted loopback proxy (X-Forwarded-For) with
#    recipient-token keys;
# 3. runs every blast of BLAST_RUNS at once, each as its own sender (client
#    `blast-SEED-SHARE`): `blast` plans it, creates its links (one hidden
#    honeypot per message) through the API, replays it against the edge
#    (timeline compressed BLAST_TIME_SCALE times, see bench/src/bin/blast.rs)
#    and writes its truth file;
# 4. scores each one with `blast-score`: the verdicts in click_events and the
#    API's totals against the truth (confusion matrix by vendor, network,
#    hard case and seconds since send; the goals of issue 8), and issue 16's:
#    each breakdown's share error (country, device, mail client) and the
#    opens' verdicts (machine-open recall, human opens flagged);
# 5. stops everything it started, on exit, failure or Ctrl-C.
#
# Results go to bench/out/blast-<UTC time>/ (git-ignored): truth-*.jsonl,
# score-*.txt, summary.txt (the score_result lines, the machine's load).
#
# Settings (environment):
#   BLAST_RUNS="1:0.1 2:0.3 3:0.5 4:0.8"   seed:scanner-share of each blast
#   BLAST_RECIPIENTS=2000   BLAST_LINKS=4   BLAST_CLICK_RATE=0.2
#   BLAST_TIME_SCALE=30     BLAST_MIN_GAP_SECS=15   BLAST_HORIZON_HOURS=3
#   BLAST_ARGS=             more flags for every `blast` (e.g. --no-honeypot)
#   BLAST_PROFILE=dev       or release
#   BLAST_SKIP_BUILD=1      use the binaries already built
#   BLAST_KEEP=1            keep the temporary directory (logs, data)
#   CARGO_TARGET_DIR        where the binaries are built and looked for (default: target/)
#   RICOCHET_*              reach the services as set (e.g. the verdict delay)
#
# Exit status: 0 when every blast ran and was scored (goals met or not), 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${BLAST_RUNS:-1:0.1 2:0.3 3:0.5 4:0.8}"
RECIPIENTS="${BLAST_RECIPIENTS:-2000}"
LINKS="${BLAST_LINKS:-4}"
CLICK_RATE="${BLAST_CLICK_RATE:-0.2}"
TIME_SCALE="${BLAST_TIME_SCALE:-30}"
MIN_GAP="${BLAST_MIN_GAP_SECS:-15}"
HORIZON="${BLAST_HORIZON_HOURS:-3}"
PROFILE="${BLAST_PROFILE:-dev}"
# Binaries where cargo puts them: $CARGO_TARGET_DIR when set (a worktree with
# its own target directory), else the repository's target/.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "$PROFILE" == dev ]]; then BIN="$TARGET_DIR/debug"; else BIN="$TARGET_DIR/$PROFILE"; fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ricochet-blast.XXXXXX")"
OUT="$ROOT/bench/out/blast-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
declare -A PID=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

stop() { # NAME: SIGTERM, up to 30 s, then SIGKILL
    local pid="${PID[$1]:-}" i
    [[ -n "$pid" ]] || return 0
    unset "PID[$1]"
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$? name
    trap - EXIT INT TERM
    # Blasts first, then the services, the servers last.
    for name in "${!PID[@]}"; do [[ "$name" == blast.* ]] && stop "$name"; done
    for name in edge api aggregator kafka clickhouse; do stop "$name"; done
    if [[ "${BLAST_KEEP:-0}" == 1 || $status -ne 0 ]]; then
        log "kept $WORK (logs, data)"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

USED_PORTS=" "
pick_port() { # VAR: a port below the ephemeral range that nothing listens on
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

wait_ready() { # NAME URL: until URL answers 2xx, while NAME's process lives (120 s)
    local i
    for ((i = 0; i < 1200; i++)); do
        curl -sf -o /dev/null "$2" && return 0
        kill -0 "${PID[$1]}" 2>/dev/null || { tail -n 30 "$WORK/$1.log" >&2; die "$1 exited"; }
        sleep 0.1
    done
    die "$1 not ready within 120 s (log: $WORK/$1.log)"
}

busy_ticks() { # all CPUs, ticks not idle
    local _ user nice system idle iowait irq softirq steal
    read -r _ user nice system idle iowait irq softirq steal _ </proc/stat
    echo $((user + nice + system + irq + softirq + steal))
}

# ---- build -------------------------------------------------------------------

if [[ "${BLAST_SKIP_BUILD:-0}" != 1 ]]; then
    packages=(-p ricochet-redirect -p ricochet-aggregator -p ricochet-api -p ricochet-bench)
    log "cargo build --profile $PROFILE ${packages[*]} --bins"
    (cd "$ROOT" && cargo build --profile "$PROFILE" "${packages[@]}" --bins --quiet) || die "build failed"
fi
for b in ricochet-redirect ricochet-aggregator ricochet-api blast blast-score; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing (unset BLAST_SKIP_BUILD)"
done

# ---- the stack ---------------------------------------------------------------

pick_port CH_HTTP; pick_port CH_TCP; pick_port CH_INTER; pick_port KAFKA_PORT
pick_port AGG_PORT; pick_port API_PORT; pick_port EDGE_PORT
"$ROOT/infra/clickhouse/run.sh" "$WORK/clickhouse" "$CH_HTTP" "$CH_TCP" "$CH_INTER" >"$WORK/clickhouse.log" 2>&1 &
PID[clickhouse]=$!
"$ROOT/infra/kafka/run.sh" "$WORK/kafka" "$KAFKA_PORT" --group-initial-rebalance-delay 0s >"$WORK/kafka.log" 2>&1 &
PID[kafka]=$!
wait_ready clickhouse "http://127.0.0.1:$CH_HTTP/ping"
for ((i = 0; i < 600; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null && break; sleep 0.1; done

ADMIN_KEY="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export RICOCHET_ADMIN_KEY="$ADMIN_KEY"
export RICOCHET_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export RICOCHET_CLICKHOUSE_URL="http://127.0.0.1:$CH_HTTP"
export RICOCHET_TOKEN_KEYS="${RICOCHET_TOKEN_KEYS:-b1:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export RICOCHET_PUBLIC_REDIRECT_URL="http://127.0.0.1:$EDGE_PORT"
export RICOCHET_GROUP_ID="blast-$$"
export RUST_LOG="${RUST_LOG:-info,librdkafka=warn,rdkafka=warn}"

# The aggregator applies the migrations and creates the topics.
RICOCHET_LISTEN="127.0.0.1:$AGG_PORT" "$BIN/ricochet-aggregator" >"$WORK/aggregator.log" 2>&1 &
PID[aggregator]=$!
wait_ready aggregator "http://127.0.0.1:$AGG_PORT/readyz"
RICOCHET_LISTEN="127.0.0.1:$API_PORT" "$BIN/ricochet-api" >"$WORK/api.log" 2>&1 &
PID[api]=$!
wait_ready api "http://127.0.0.1:$API_PORT/readyz"
API="http://127.0.0.1:$API_PORT"
# The edge sits behind a proxy on loopback: the client address is the one
# X-Forwarded-For entry each request carries (right-most untrusted hop).
RICOCHET_LISTEN="127.0.0.1:$EDGE_PORT" RICOCHET_SPOOL_DIR="$WORK/spool" \
    RICOCHET_TRUSTED_PROXIES="${RICOCHET_TRUSTED_PROXIES:-127.0.0.0/8}" \
    "$BIN/ricochet-redirect" >"$WORK/edge.log" 2>&1 &
PID[edge]=$!
wait_ready edge "http://127.0.0.1:$EDGE_PORT/readyz"
log "stack up: edge :$EDGE_PORT, API $API, ClickHouse :$CH_HTTP, broker :$KAFKA_PORT ($WORK)"

# ---- blasts ------------------------------------------------------------------

read -r load_before _ </proc/loadavg
busy0=$(busy_ticks)
t0=$(date +%s)
# shellcheck disable=SC2206
runs=($RUNS)
for run in "${runs[@]}"; do
    seed="${run%%:*}" share="${run#*:}"
    name="$seed-$share"
    # shellcheck disable=SC2086
    "$BIN/blast" --edge "127.0.0.1:$EDGE_PORT" --api "$API" --seed "$seed" --scanner-share "$share" \
        --recipients "$RECIPIENTS" --links "$LINKS" --click-rate "$CLICK_RATE" --time-scale "$TIME_SCALE" \
        --min-gap-secs "$MIN_GAP" --horizon-hours "$HORIZON" ${BLAST_ARGS:-} --truth "$OUT/truth-$name.jsonl" \
        >"$OUT/blast-$name.txt" 2>&1 &
    PID[blast.$name]=$!
    log "blast seed $seed, scanner share $share: pid ${PID[blast.$name]}"
done
failed=0
for run in "${runs[@]}"; do
    name="${run%%:*}-${run#*:}"
    if ! wait "${PID[blast.$name]}"; then
        log "blast $name failed: $(tail -n 3 "$OUT/blast-$name.txt")"
        failed=1
    fi
    unset "PID[blast.$name]"
done
t1=$(date +%s)
busy1=$(busy_ticks)
read -r load_after _ </proc/loadavg
cores=$(nproc)
busy_share=$(awk -v b=$((busy1 - busy0)) -v s=$((t1 - t0)) -v c="$cores" -v t="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.0f", (s > 0 ? 100 * b / (s * c * t) : 0) }')
log "replays done in $((t1 - t0)) s; the machine was ${busy_share}% busy (load ${load_before} -> ${load_after})"

# ---- scores ------------------------------------------------------------------

{
    echo "Labelled blasts, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(cd "$ROOT" && git rev-parse --short HEAD)"
    echo "runs: $RUNS; $RECIPIENTS recipients, $LINKS links, click rate $CLICK_RATE, time scale $TIME_SCALE, min gap ${MIN_GAP}s"
    echo "machine: $cores cores, ${busy_share}% busy during the replays (all processes), load ${load_before} -> ${load_after}"
} >"$OUT/summary.txt"
for run in "${runs[@]}"; do
    name="${run%%:*}-${run#*:}"
    [[ -s "$OUT/truth-$name.jsonl" ]] || continue
    if "$BIN/blast-score" --truth "$OUT/truth-$name.jsonl" --clickhouse "127.0.0.1:$CH_HTTP" --api "$API" \
        >"$OUT/score-$name.txt" 2>"$OUT/score-$name.err"; then
        cat "$OUT/score-$name.txt"
        grep '^score_result' "$OUT/score-$name.txt" >>"$OUT/summary.txt"
    else
        log "scoring $name failed: $(tail -n 3 "$OUT/score-$name.err")"
        failed=1
    fi
done
cp "$WORK"/*.log "$OUT/" 2>/dev/null || true
echo
cat "$OUT/summary.txt"
log "results in $OUT"
exit "$failed"
