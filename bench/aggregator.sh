#!/usr/bin/env bash
# The aggregator's benchmark, in one run on one machine (a benchmark: it
# reports numbers and goals, it is not a pass/fail test of speed).
#
#   bench/aggregator.sh
#
# 0. builds the aggregator and the helpers in bench/ (release), and a shared
#    librdkafka 2.12.1 for ClickHouse's Kafka engine (once per machine, cached);
# 1. starts a private broker (infra/kafka/run.sh) and preloads BENCH_EVENTS
#    clicks (preload-clicks): Avro ClickEvents keyed by client id into `clicks`
#    (12 partitions; one client sends half of them), the same events as
#    JSONEachRow into `clicks_json`;
# 2. drains the same data three times, one after the other, each from offset 0
#    in a fresh consumer group:
#    (a) bare:       drain-topic, a librdkafka consumer that reads and discards,
#                    with librdkafka's defaults like the aggregator; then (a')
#                    with fetch.wait.max.ms=100 (nisshi holds every Fetch for
#                    most of the 500 ms default: this shows the broker's own
#                    ceiling), and (a json) with the defaults on `clicks_json`;
#    (b) aggregator: target/release/ricochet-aggregator into a fresh ClickHouse,
#                    until `SELECT sum(clicks) FROM click_rollup_minute` shows
#                    every event (ch-wait), timed from its "partitions assigned"
#                    log line and from its start;
#    (c) ClickHouse: its own Kafka engine reading `clicks_json` (every field of
#                    the Avro events, as JSON: AvroConfluent needs a schema
#                    registry, which this setup has not), a materialized
#                    view rolling up into a SummingMergeTree, on a fresh server
#                    that loads the librdkafka built in step 0 (Debian's 2.0.2
#                    cannot talk to nisshi), timed from creating the view;
#    and samples each one's memory (VmRSS every 0.5 s, and VmHWM);
# 3. prints events/s, b/a and b/c, peak RSS and CPU of every process involved
#    (the aggregator's also without its start-up: the CPU it had used when
#    first handed partitions, which does not grow with the events),
#    and where the aggregator's time went (its flush metrics, ClickHouse's
#    query_log, per-thread CPU; with BENCH_PERF=1 a perf profile);
# 4. freshness, between (b) and (c), with the caught-up aggregator still
#    running: `freshness` produces BENCH_FRESH_RATE clicks/s stamped "now" for
#    BENCH_FRESH_SECS and polls the rollups every 100 ms: p50/p95 of
#    (visible - event time);
# 5. the steady run, still with the same aggregator: `steady-clicks` sends
#    BENCH_STEADY_RATE clicks/s over BENCH_STEADY_LINKS links of one sender for
#    BENCH_STEADY_SECS; once all are counted, the rows of that sender in
#    click_rollups per distinct bucket (grain, link, bucket, partition), and
#    the table's parts in system.parts, before and after OPTIMIZE ... FINAL;
#    the aggregator's CPU per event at that steady rate;
#    then 20 s of the idle aggregator, for what it costs the broker with
#    nothing to do.
#
# Everything runs on 127.0.0.1, on free ports, under one temporary directory;
# every process it starts is stopped on exit, failure or Ctrl-C (a SIGKILL of
# this script cannot be trapped: then `pkill -P` its leftovers by their pid).
# A summary is also written to bench/out/ (git-ignored).
#
# Settings (environment):
#   BENCH_EVENTS=2000000          clicks preloaded (and drained by each consumer)
#   BENCH_CLIENTS=1000            senders; the first sends BENCH_HOT_SHARE of the clicks
#   BENCH_HOT_SHARE=0.5
#   BENCH_FRESH_RATE=5000 BENCH_FRESH_SECS=60   the freshness load (0 seconds: skip)
#   BENCH_STEADY_SECS=600 BENCH_STEADY_RATE=200 BENCH_STEADY_LINKS=2000   the steady run
#                                 (5.): rollup rows per bucket before and after merges (0: skip)
#   BENCH_VERDICT_DELAY_MS=10000  the aggregator's RICOCHET_VERDICT_DELAY_MS (freshness goal: p95 <= it + 2 s)
#   BENCH_KAFKA_ENGINE_CONSUMERS=1   kafka_num_consumers of (c) (the aggregator has one)
#   BENCH_FLUSH_MS=1000           (c)'s stream_flush_interval_ms, matched to the
#                                 aggregator's RICOCHET_FLUSH_INTERVAL_MS (18.16 default: 7500)
#   BENCH_FAST_FETCH_WAIT_MS=100  (a') drains once more with this fetch.wait.max.ms (0: skip)
#   BENCH_C_FETCH_WAIT_MS=        (c)'s fetch.wait.max.ms (default: librdkafka's 500, like (a) and (b))
#   BENCH_PHASE_TIMEOUT=1800      seconds each consumer may take
#   BENCH_PERF=1                  perf-record the aggregator during (b) (cpu-clock samples)
#   BENCH_SKIP=c                  skip phases, any of "a b c" (b also skips freshness)
#   BENCH_SKIP_BUILD=1            use the binaries already in target/release
#   BENCH_BASELINE_AGGREGATOR=PATH  first drain the same events with this aggregator binary (b0),
#                                 for a before/after of a change in one run
#   BENCH_KEEP=1                  keep the temporary directory (logs, data)
#   RICOCHET_CACHE=~/.cache/ricochet   where the built librdkafka is kept
#
# Exit status: 0 when the benchmark ran (goals met or not, see the summary),
# 2 when a consumer counted a click twice or lost one, 1 when it could not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EVENTS="${BENCH_EVENTS:-2000000}"
CLIENTS="${BENCH_CLIENTS:-1000}"
HOT_SHARE="${BENCH_HOT_SHARE:-0.5}"
FRESH_RATE="${BENCH_FRESH_RATE:-5000}"
FRESH_SECS="${BENCH_FRESH_SECS:-60}"
STEADY_SECS="${BENCH_STEADY_SECS:-600}"
STEADY_RATE="${BENCH_STEADY_RATE:-200}"
STEADY_LINKS="${BENCH_STEADY_LINKS:-2000}"
VERDICT_DELAY_MS="${BENCH_VERDICT_DELAY_MS:-10000}"
ENGINE_CONSUMERS="${BENCH_KAFKA_ENGINE_CONSUMERS:-1}"
FLUSH_MS="${BENCH_FLUSH_MS:-1000}"
FAST_WAIT_MS="${BENCH_FAST_FETCH_WAIT_MS:-100}"
C_FETCH_WAIT_MS="${BENCH_C_FETCH_WAIT_MS:-}"
PHASE_TIMEOUT="${BENCH_PHASE_TIMEOUT:-1800}"
SKIP=" ${BENCH_SKIP:-} "
BIN="$ROOT/target/release"
TCK="$(getconf CLK_TCK)"
RDKAFKA_VERSION=2.12.1
RDKAFKA_DIR="${RICOCHET_CACHE:-$HOME/.cache/ricochet}/librdkafka-$RDKAFKA_VERSION"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ricochet-aggregator-bench.XXXXXX")"
OUT_DIR="$ROOT/bench/out"
SUMMARY="$WORK/summary.txt"
declare -A PID=()
declare -A R=() # results: R[phase.key]
WRONG=0

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

stop() { # NAME [TIMEOUT_SECS]: SIGTERM, wait, SIGKILL
    local name="$1" timeout="${2:-30}" pid="${PID[$1]:-}"
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
    trap - EXIT INT TERM
    local name
    # Samplers and probes first, servers last.
    for name in "${!PID[@]}"; do [[ "$name" == sampler.* || "$name" == perf ]] && stop "$name" 10; done
    for name in "${!PID[@]}"; do [[ "$name" != kafka && "$name" != ch_* ]] && stop "$name" 20; done
    for name in "${!PID[@]}"; do stop "$name" 20; done
    if [[ "${BENCH_KEEP:-0}" == 1 || $status -ne 0 ]]; then
        log "kept $WORK (logs, data)"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Ports below the kernel's ephemeral range, so no outgoing connection holds one.
USED_PORTS=" "
pick_port() { # VAR: a port nothing listens on, not handed out before
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

wait_until() { # TIMEOUT_SECS WHAT COMMAND...: retries COMMAND every 0.1 s
    local timeout="$1" what="$2" i
    shift 2
    for ((i = 0; i < timeout * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$what not ready within ${timeout}s"
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# capture VAR TIMEOUT_SECS COMMAND...: COMMAND's stdout into VAR, its exit status
# returned. It runs in the background and is waited for, so that Ctrl-C or a
# SIGTERM stops the script (and it) at once; stderr goes to $CAPTURE_ERR if set.
capture() {
    local var="$1" limit="$2" status=0
    shift 2
    # (Not 2>/dev/stderr: reopening a log file that stderr points to would truncate it.)
    if [[ -n "${CAPTURE_ERR:-}" ]]; then
        timeout "$limit" "$@" >"$WORK/capture.out" 2>"$CAPTURE_ERR" &
    else
        timeout "$limit" "$@" >"$WORK/capture.out" &
    fi
    PID[capture]=$!
    wait "$!" || status=$?
    unset 'PID[capture]'
    printf -v "$var" '%s' "$(cat "$WORK/capture.out")"
    return "$status"
}
now_ms() { date +%s%3N; }
kv() { # LINE KEY -> value of key=value in LINE
    tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2; exit }'
}
calc() { awk "BEGIN { printf \"%s\", $* }"; }
calcf() { awk "BEGIN { printf \"$1\", $2 }"; } # FORMAT EXPR

# ---- measurements ------------------------------------------------------------

ticks() { # /proc/PID or /proc/PID/task/TID -> utime+stime in clock ticks (0 once gone)
    local stat
    stat="$(cat "$1/stat" 2>/dev/null)" || { echo 0; return; }
    stat="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $stat # $1 is field 3 (state): utime is field 14, stime field 15
    echo $((${12} + ${13}))
}

busy_ticks() { # all CPUs, ticks not idle
    local _ user nice system idle iowait irq softirq steal
    read -r _ user nice system idle iowait irq softirq steal _ </proc/stat
    echo $((user + nice + system + irq + softirq + steal))
}

reaped_ticks() { # FILE (what `times` printed) -> CPU of this shell's reaped children, in ticks
    # `times` has to run in this shell itself: a $(…) subshell only counts its own children.
    awk -v tck="$TCK" 'NR == 2 {
        n = 0
        for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] }
        printf "%d\n", n * tck + 0.5 }' "$1"
}

thread_ticks() { # PID -> "pipeline librdkafka tokio other"
    local p=0 k=0 w=0 o=0 t name n
    for t in /proc/"$1"/task/*; do
        name="$(cat "$t/comm" 2>/dev/null)" || continue
        n="$(ticks "$t")"
        case "$name" in
            pipeline) p=$((p + n)) ;;
            rdk:*) k=$((k + n)) ;;
            tokio-runtime-w* | tokio-rt-worker) w=$((w + n)) ;; # the name by tokio version
            *) o=$((o + n)) ;;
        esac
    done
    echo "$p $k $w $o"
}

startup_ticks() { # LABEL PID: the process's CPU ticks once its log first shows partitions assigned
    # (its start-up: migrations, the dimension tables; a cost that does not grow with the events)
    local log="$WORK/$1-aggregator.log"
    until sed 's/\x1b\[[0-9;]*m//g' "$log" 2>/dev/null | grep 'partitions assigned' | grep -qv 'partitions=\[\]'; do
        kill -0 "$2" 2>/dev/null || return 0
        sleep 0.05
    done
    ticks "/proc/$2" >"$WORK/$1.startup-ticks"
}

mem_mb() { awk -v k="$2:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo 0; } # PID VmRSS|VmHWM

sample_rss() { # NAME PID: VmRSS (KiB) every 0.5 s into $WORK/rss-NAME.txt as "unix_ms kib"
    local name="$1" pid="$2"
    (
        while kill -0 "$pid" 2>/dev/null; do
            awk -v t="$(date +%s%3N)" '$1 == "VmRSS:" { print t, $2 }' "/proc/$pid/status" 2>/dev/null || true
            sleep 0.5
        done
    ) >"$WORK/rss-$name.txt" &
    PID[sampler.$name]=$!
}

rss_profile() { # NAME FROM_MS TO_MS -> "max q1 q2 q3 q4" (MB): max, and the last sample of each quarter
    awk -v a="$2" -v b="$3" '$1 >= a && $1 <= b { t[n] = $1; v[n] = $2; n++; if ($2 > m) m = $2 }
        END {
            if (n == 0) { print "0 0 0 0 0"; exit }
            printf "%.0f", m / 1024
            for (q = 1; q <= 4; q++) {
                lim = a + (b - a) * q / 4; last = 0
                for (i = 0; i < n; i++) if (t[i] <= lim) last = v[i]
                printf " %.0f", last / 1024
            }
            print ""
        }' "$WORK/rss-$1.txt"
}

cpu_begin() { # PHASE NAME=PID...: CPU ticks of each process, and the machine's, at the start of a phase
    local phase="$1" kv_
    shift
    R[$phase.t0]="$(now_ms)"
    R[$phase.machine0]="$(busy_ticks)"
    for kv_ in "$@"; do R[$phase.cpu0.${kv_%%=*}]="$(ticks "/proc/${kv_#*=}")"; done
}

cpu_end() { # PHASE NAME=PID...: CPU seconds of each process over the phase in R[PHASE.cpu.NAME]
    local phase="$1" kv_ name
    shift
    local t1 m1
    t1="$(now_ms)"
    m1="$(busy_ticks)"
    R[$phase.cpu_wall_s]="$(calcf %.1f "($t1 - ${R[$phase.t0]}) / 1000")"
    R[$phase.cpu.machine]="$(calcf %.2f "($m1 - ${R[$phase.machine0]}) / $TCK")"
    for kv_ in "$@"; do
        name="${kv_%%=*}"
        R[$phase.cpu.$name]="$(calcf %.2f "($(ticks "/proc/${kv_#*=}") - ${R[$phase.cpu0.$name]}) / $TCK")"
    done
}

metric() { # PORT NAME -> sum of the samples of a Prometheus metric (0 if absent)
    curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk -v name="$2" 'index($0, name) == 1 { rest = substr($0, length(name) + 1)
            if (rest ~ /^[ {]/) s += $NF } END { printf "%.3f\n", s }'
}

ch() { # HTTP_PORT SQL -> result
    curl -sf --max-time 60 "http://127.0.0.1:$1/" --data-binary "$2" || die "clickhouse on :$1 refused: $2"
}

# ---- servers -----------------------------------------------------------------

start_broker() {
    pick_port KAFKA_PORT
    "$ROOT/infra/kafka/run.sh" "$WORK/kafka" "$KAFKA_PORT" --group-initial-rebalance-delay 0s \
        >>"$WORK/kafka.log" 2>&1 &
    PID[kafka]=$!
    wait_until 60 "the broker" listening "$KAFKA_PORT"
}

start_clickhouse() { # NAME: a fresh server in $WORK/NAME; its HTTP port in CH_PORT[NAME]
    local name="$1" http tcp inter
    pick_port http
    pick_port tcp
    pick_port inter
    mkdir -p "$WORK/$name"
    "$ROOT/infra/clickhouse/run.sh" "$WORK/$name" "$http" "$tcp" "$inter" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
    CH_PORT[$name]="$http"
    wait_until 60 "clickhouse ($name)" curl -sf "http://127.0.0.1:$http/ping"
}
declare -A CH_PORT=()

# A shared librdkafka that ClickHouse 18.16 can load in place of Debian's 2.0.2,
# from the source the rdkafka-sys crate vendors (the version the Rust clients use).
build_librdkafka() {
    if [[ -f "$RDKAFKA_DIR/librdkafka.so.1" ]]; then
        log "librdkafka $RDKAFKA_VERSION: cached in $RDKAFKA_DIR"
        return 0
    fi
    local src
    src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/rdkafka-sys-*+"$RDKAFKA_VERSION"/librdkafka 2>/dev/null | head -1)"
    [[ -n "$src" ]] || die "no rdkafka-sys source with librdkafka $RDKAFKA_VERSION under ~/.cargo/registry (cargo fetch)"
    log "building librdkafka $RDKAFKA_VERSION from $src (once; a few minutes on 2 busy cores)"
    cp -r "$src" "$WORK/librdkafka"
    # configure looks for its modules as ./configure.NAME: its log must be named otherwise.
    (cd "$WORK/librdkafka" &&
        ./configure --disable-ssl --disable-sasl --disable-zstd --disable-lz4-ext --disable-curl \
            >"$WORK/librdkafka-build.txt" 2>&1 &&
        make -j2 -C src >>"$WORK/librdkafka-build.txt" 2>&1) ||
        die "librdkafka build failed: $(tail -5 "$WORK/librdkafka-build.txt")"
    mkdir -p "$RDKAFKA_DIR"
    cp "$WORK/librdkafka/src/librdkafka.so.1" "$RDKAFKA_DIR/librdkafka.so.1.tmp.$$"
    mv "$RDKAFKA_DIR/librdkafka.so.1.tmp.$$" "$RDKAFKA_DIR/librdkafka.so.1"
    rm -rf "$WORK/librdkafka"
}

skipped() { [[ "$SKIP" == *" $1 "* ]]; }

# ---- 0. build ----------------------------------------------------------------

for tool in curl awk; do command -v "$tool" >/dev/null || die "$tool is missing"; done
log "work dir $WORK"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release -p ricochet-aggregator -p ricochet-bench --bins"
    (cd "$ROOT" && cargo build --release -p ricochet-aggregator -p ricochet-bench --bins --quiet) || die "build failed"
fi
# A copy, so that a build in the shared tree during the run cannot swap a binary between phases.
mkdir -p "$WORK/bin"
for b in ricochet-aggregator preload-clicks drain-topic ch-wait freshness steady-clicks; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing"
    cp -p "$BIN/$b" "$WORK/bin/"
done
BIN="$WORK/bin"
skipped c || build_librdkafka

# ---- 1. broker and preload ---------------------------------------------------

start_broker
log "broker on 127.0.0.1:$KAFKA_PORT; preloading $EVENTS clicks into clicks and clicks_json"
capture line "$PHASE_TIMEOUT" "$BIN/preload-clicks" --brokers "127.0.0.1:$KAFKA_PORT" --count "$EVENTS" \
    --clients "$CLIENTS" --hot-share "$HOT_SHARE" || die "preload failed: $line"
R[preload.secs]="$(kv "$line" secs)"
R[preload.rate]="$(kv "$line" rate)"
R[preload.avro_bytes]="$(kv "$line" avro_bytes)"
R[preload.json_bytes]="$(kv "$line" json_bytes)"
log "preloaded in ${R[preload.secs]} s (${R[preload.rate]} events/s into each topic); Avro $((R[preload.avro_bytes] / EVENTS)) B/event, JSON $((R[preload.json_bytes] / EVENTS)) B/event"
# Let the broker settle (sqlite checkpoints) before anything is timed.
sleep 5

# ---- 2a. bare consumer -------------------------------------------------------

drain() { # LABEL [drain-topic args...]: one bare drain (of `clicks` unless --topic); results in R[LABEL.*]
    local label="$1" c0 c1 k
    shift
    cpu_begin "$label" broker="${PID[kafka]}"
    times >"$WORK/times0"
    capture line "$PHASE_TIMEOUT" "$BIN/drain-topic" --brokers "127.0.0.1:$KAFKA_PORT" --group "bench-$label-$$" \
        --timeout-secs "$PHASE_TIMEOUT" "$@" || die "drain-topic failed: $line"
    times >"$WORK/times1"
    cpu_end "$label" broker="${PID[kafka]}"
    c0="$(reaped_ticks "$WORK/times0")"
    c1="$(reaped_ticks "$WORK/times1")"
    R[$label.cpu.subject]="$(calcf %.2f "($c1 - $c0) / $TCK")"
    for k in messages eps eps_total elapsed_ms peak_rss_mb; do R[$label.$k]="$(kv "$line" "$k")"; done
    [[ "${R[$label.messages]}" == "$EVENTS" ]] || die "drain-topic read ${R[$label.messages]} messages, not $EVENTS"
    R[$label.eps]="$(calcf %.0f "${R[$label.eps]}")"
    R[$label.eps_total]="$(calcf %.0f "${R[$label.eps_total]}")"
    R[$label.wall_s]="$(calcf %.1f "${R[$label.elapsed_ms]} / 1000")"
    R[$label.rss_mb]="${R[$label.peak_rss_mb]}"
    log "($label) ${R[$label.eps]} events/s (${R[$label.wall_s]} s from assignment), peak RSS ${R[$label.rss_mb]} MB"
}

if ! skipped a; then
    log "(a) bare consumer: drain-topic, fresh group, from the earliest offset, librdkafka defaults (as the aggregator)"
    drain a
    if ((FAST_WAIT_MS > 0)); then
        # nisshi holds a Fetch for most of fetch.wait.max.ms (500 ms by default) even with
        # data ready; a short wait shows what the broker itself can serve.
        log "(a') the same with fetch.wait.max.ms=$FAST_WAIT_MS: the broker's ceiling"
        drain a_fast --set "fetch.wait.max.ms=$FAST_WAIT_MS"
    fi
    # (c) reads the JSON copy, which is half the bytes: its own floor, with (a)'s settings.
    log "(a json) the same as (a) on clicks_json, the topic (c) reads"
    drain a_json --topic clicks_json
fi

# ---- 2b. the aggregator ------------------------------------------------------

ADMIN_KEY="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# Drains every preloaded event with one aggregator binary into a fresh
# ClickHouse (named LABEL's server) in a fresh group, until the rollups hold
# them all; results in R[LABEL.*], the process in PID[LABEL] (left running).
drain_aggregator() { # LABEL BINARY
    local label="$1" binary="$2" port_var="AGG_PORT_$1" assigned
    start_clickhouse "ch_$label"
    pick_port "$port_var"
    cpu_begin "$label" clickhouse="${PID[ch_$label]}" broker="${PID[kafka]}"
    R[$label.start_ms]="$(now_ms)"
    NO_COLOR=1 RUST_LOG="info,librdkafka=warn,rdkafka=warn" \
        RICOCHET_LISTEN="127.0.0.1:${!port_var}" RICOCHET_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" \
        RICOCHET_CLICKHOUSE_URL="http://127.0.0.1:${CH_PORT[ch_$label]}" RICOCHET_GROUP_ID="bench-$label-$$" \
        RICOCHET_ADMIN_KEY="$ADMIN_KEY" RICOCHET_VERDICT_DELAY_MS="$VERDICT_DELAY_MS" \
        "$binary" >"$WORK/$label-aggregator.log" 2>&1 &
    PID[$label]=$!
    startup_ticks "$label" "${PID[$label]}" &
    sample_rss "$label" "${PID[$label]}"
    sample_rss "ch_$label" "${PID[ch_$label]}"
    if [[ "$label" == b && "${BENCH_PERF:-0}" == 1 ]]; then
        # DWARF call graphs: the release build has debug info but no frame pointers.
        perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p "${PID[$label]}" -o "$WORK/perf.data" \
            >"$WORK/perf.log" 2>&1 &
        PID[perf]=$!
    fi
    capture line $((PHASE_TIMEOUT + 60)) "$BIN/ch-wait" --clickhouse "127.0.0.1:${CH_PORT[ch_$label]}" \
        --query "SELECT sum(clicks) FROM click_rollup_minute" --expect "$EVENTS" \
        --timeout-secs "$PHASE_TIMEOUT" || {
        WRONG=1
        log "($label) the rollups did not end at exactly $EVENTS clicks: $line"
    }
    R[$label.cpu0.aggregator]=0
    R[$label.threads]="$(thread_ticks "${PID[$label]}")"
    cpu_end "$label" clickhouse="${PID[ch_$label]}" broker="${PID[kafka]}" aggregator="${PID[$label]}"
    R[$label.cpu.startup]="$(calcf %.2f "$(cat "$WORK/$label.startup-ticks" 2>/dev/null || echo 0) / $TCK")"
    R[$label.cpu.drain]="$(calcf %.2f "${R[$label.cpu.aggregator]} - ${R[$label.cpu.startup]}")"
    R[$label.value]="$(kv "$line" value)"
    R[$label.done_ms]="$(kv "$line" reached_unix_ms)"
    [[ -n "${R[$label.done_ms]}" ]] || die "($label) never reached $EVENTS clicks (see $WORK/$label-aggregator.log)"
    # The first assignment that handed this member partitions (tracing's RFC 3339 UTC timestamp).
    assigned="$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/$label-aggregator.log" | grep 'partitions assigned' |
        grep -v 'partitions=\[\]' | head -1 | awk '{ print $1 }')"
    [[ -n "$assigned" ]] || die "no 'partitions assigned' line in $WORK/$label-aggregator.log"
    R[$label.assign_ms]="$(date -d "$assigned" +%s%3N)"
    R[$label.wall_s]="$(calcf %.1f "(${R[$label.done_ms]} - ${R[$label.assign_ms]}) / 1000")"
    R[$label.eps]="$(calcf %.0f "$EVENTS / ((${R[$label.done_ms]} - ${R[$label.assign_ms]}) / 1000)")"
}

# (b0) the same drain with another build, for a before/after in one run.
if [[ -n "${BENCH_BASELINE_AGGREGATOR:-}" ]] && ! skipped b; then
    cp -p "$BENCH_BASELINE_AGGREGATOR" "$BIN/baseline-aggregator"
    log "(b0) baseline aggregator $BENCH_BASELINE_AGGREGATOR: fresh ClickHouse, fresh group"
    drain_aggregator b0 "$BIN/baseline-aggregator"
    log "(b0) ${R[b0.eps]} events/s from assignment (${R[b0.wall_s]} s)"
    stop b0 30
    stop ch_b0 30
    sleep 5
fi

if ! skipped b; then
    log "(b) aggregator: fresh ClickHouse, fresh group"
    drain_aggregator b "$BIN/ricochet-aggregator"
    agg="${PID[b]}"
    PID[aggregator]="$agg"
    PID[ch_b]="${PID[ch_b]}"
    AGG_PORT="$AGG_PORT_b"
    threads_b="${R[b.threads]}"
    stop perf 30
    R[b.eps_total]="$(calcf %.0f "$EVENTS / ((${R[b.done_ms]} - ${R[b.start_ms]}) / 1000)")"
    R[b.startup_s]="$(calcf %.1f "(${R[b.assign_ms]} - ${R[b.start_ms]}) / 1000")"
    R[b.rss_mb]="$(mem_mb "$agg" VmHWM)"
    R[b.ch_rss_mb]="$(mem_mb "${PID[ch_b]}" VmHWM)"
    read -r 'R[b.rss_max]' 'R[b.rss_q1]' 'R[b.rss_q2]' 'R[b.rss_q3]' 'R[b.rss_q4]' \
        <<<"$(rss_profile b "${R[b.assign_ms]}" "${R[b.done_ms]}")"
    # Where the time went: the pipeline's own flush metrics, and ClickHouse's view of the inserts.
    R[b.flush_s]="$(metric "$AGG_PORT" ricochet_aggregator_flush_duration_seconds_sum)"
    R[b.flushes]="$(metric "$AGG_PORT" ricochet_aggregator_flush_duration_seconds_count)"
    R[b.rollup_rows]="$(metric "$AGG_PORT" ricochet_aggregator_flush_rows_sum)"
    R[b.breakdown_rows]="$(metric "$AGG_PORT" ricochet_aggregator_flush_breakdown_rows_sum)"
    ch "${CH_PORT[ch_b]}" "SYSTEM FLUSH LOGS" >/dev/null
    ch "${CH_PORT[ch_b]}" "SELECT multiIf(query LIKE '%click_events%', 'click_events', query LIKE '%click_recipients%', 'click_recipients', query LIKE '%click_breakdowns%', 'click_breakdowns', query LIKE '%click_rollups%' OR query LIKE '%click_counts%', 'click_rollups', 'other') AS t,
        count(), sum(query_duration_ms), sum(written_rows), sum(written_bytes), max(memory_usage)
        FROM system.query_log WHERE type = 2 AND query LIKE 'INSERT%' GROUP BY t ORDER BY t FORMAT TSV" \
        >"$WORK/b-inserts.tsv"
    read -r 'R[b.thr_pipeline]' 'R[b.thr_rdkafka]' 'R[b.thr_tokio]' 'R[b.thr_other]' <<<"$threads_b"
    log "(b) ${R[b.eps]} events/s from assignment (${R[b.wall_s]} s; start-up ${R[b.startup_s]} s), peak RSS ${R[b.rss_mb]} MB"
    if [[ "${BENCH_PERF:-0}" == 1 ]]; then
        log "perf report (may take a minute)"
        perf report -i "$WORK/perf.data" --no-children --stdio --sort dso,symbol -g none --percent-limit 0.7 \
            2>/dev/null | grep -v '^#' | grep -v '^$' | head -45 >"$WORK/perf-self.txt" || true
        perf report -i "$WORK/perf.data" --children --stdio --comms pipeline --sort symbol -g none \
            --percent-limit 2 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 >"$WORK/perf-pipeline.txt" || true
        perf report -i "$WORK/perf.data" --no-children --stdio --sort comm -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -12 >"$WORK/perf-threads.txt" || true
    fi

    # ---- 4. freshness, with the caught-up aggregator --------------------------

    if ((FRESH_SECS > 0)); then
        log "freshness: $FRESH_RATE clicks/s for $FRESH_SECS s, rollups polled every 100 ms"
        cpu_begin fresh clickhouse="${PID[ch_b]}" broker="${PID[kafka]}" aggregator="$agg"
        CAPTURE_ERR="$WORK/freshness-windows.txt" capture line $((FRESH_SECS + 180)) "$BIN/freshness" \
            --brokers "127.0.0.1:$KAFKA_PORT" --clickhouse "127.0.0.1:${CH_PORT[ch_b]}" --rate "$FRESH_RATE" \
            --duration-secs "$FRESH_SECS" --verdict-delay-ms "$VERDICT_DELAY_MS" || die "freshness failed: $line $(tail -3 "$WORK/freshness-windows.txt")"
        cpu_end fresh clickhouse="${PID[ch_b]}" broker="${PID[kafka]}" aggregator="$agg"
        for k in events achieved_rate p50_ms p95_ms p99_ms max_ms unseen overcounted polls poll_p50_ms \
            verdict_delay_ms goal_p95_ms beyond_delay_p95_ms; do
            R[fresh.$k]="$(kv "$line" "$k")"
        done
        [[ "${R[fresh.unseen]}" == 0 && "${R[fresh.overcounted]}" == 0 ]] || WRONG=1
        R[fresh.rss_mb]="$(mem_mb "$agg" VmRSS)"
        log "freshness p50 ${R[fresh.p50_ms]} ms, p95 ${R[fresh.p95_ms]} ms at ${R[fresh.achieved_rate]} clicks/s"
    fi
    # ---- 5. steady run: rollup rows per bucket, before and after merges ------

    if ((STEADY_SECS > 0)); then
        log "steady: $STEADY_RATE clicks/s over $STEADY_LINKS links for $STEADY_SECS s"
        cpu_begin steady clickhouse="${PID[ch_b]}" broker="${PID[kafka]}" aggregator="$agg"
        capture line $((STEADY_SECS + 120)) "$BIN/steady-clicks" --brokers "127.0.0.1:$KAFKA_PORT" \
            --rate "$STEADY_RATE" --duration-secs "$STEADY_SECS" --links "$STEADY_LINKS" || die "steady-clicks failed: $line"
        R[steady.sent]="$(kv "$line" sent)"
        R[steady.rate]="$(kv "$line" achieved_rate)"
        steady_client="$(kv "$line" client)"
        minute_sum="SELECT sum(clicks) FROM click_rollups WHERE grain = 60 AND client_id = '$steady_client'"
        steady_counted() { test "$(ch "${CH_PORT[ch_b]}" "$minute_sum")" -ge "${R[steady.sent]}"; }
        wait_until 180 "the steady clicks in the rollups" steady_counted
        cpu_end steady clickhouse="${PID[ch_b]}" broker="${PID[kafka]}" aggregator="$agg"
        # Rows of this sender as stored (no FINAL: what a query reads), per
        # distinct key, i.e. per row a fully merged table would keep.
        steady_layout() { # -> "rows buckets minute_rows minute_buckets parts table_rows table_bytes"
            local port="${CH_PORT[ch_b]}" f="client_id = '$steady_client'"
            echo "$(ch "$port" "SELECT count() FROM click_rollups WHERE $f") $(ch "$port" "SELECT count() FROM (SELECT DISTINCT grain, link_id, bucket_start, source_topic, source_partition FROM click_rollups WHERE $f)") $(ch "$port" "SELECT count() FROM click_rollups WHERE $f AND grain = 60") $(ch "$port" "SELECT count() FROM (SELECT DISTINCT link_id, bucket_start FROM click_rollups WHERE $f AND grain = 60)") $(ch "$port" "SELECT count(), sum(rows), sum(bytes_on_disk) FROM system.parts WHERE active AND database = currentDatabase() AND table = 'click_rollups' FORMAT TSV")"
        }
        read -r 'R[steady.rows0]' 'R[steady.buckets]' 'R[steady.min_rows0]' 'R[steady.min_buckets]' \
            'R[steady.parts0]' 'R[steady.table_rows0]' 'R[steady.table_bytes0]' <<<"$(steady_layout)"
        R[steady.sum0]="$(ch "${CH_PORT[ch_b]}" "$minute_sum")"
        log "steady: ${R[steady.sent]} clicks; ${R[steady.rows0]} rows for ${R[steady.buckets]} buckets before merges; OPTIMIZE FINAL"
        # OPTIMIZE is a silent no-op while background merges hold some parts:
        # ask it to say so (optimize_throw_if_noop) and retry until it merged.
        optimized=0
        for ((i = 0; i < 60; i++)); do
            if curl -sS --fail "http://127.0.0.1:${CH_PORT[ch_b]}/?optimize_throw_if_noop=1" \
                --data-binary "OPTIMIZE TABLE click_rollups FINAL" >/dev/null 2>&1; then
                optimized=1
                break
            fi
            sleep 2
        done
        ((optimized)) || log "OPTIMIZE FINAL did not run within 120 s (background merges); 'after' is as it stands"
        read -r 'R[steady.rows1]' _ 'R[steady.min_rows1]' _ 'R[steady.parts1]' 'R[steady.table_rows1]' \
            'R[steady.table_bytes1]' <<<"$(steady_layout)"
        R[steady.sum1]="$(ch "${CH_PORT[ch_b]}" "$minute_sum")"
        [[ "${R[steady.sum0]}" == "${R[steady.sent]}" && "${R[steady.sum1]}" == "${R[steady.sent]}" ]] || WRONG=1
        R[steady.flushes]="$(metric "$AGG_PORT" ricochet_aggregator_flush_duration_seconds_count)"
    fi

    # What the aggregator costs when there is nothing to do: its registry tail,
    # status refresher and idle consumer keep the broker busy all the same.
    sleep 3
    cpu_begin idle broker="${PID[kafka]}" aggregator="$agg" clickhouse="${PID[ch_b]}"
    sleep 20
    cpu_end idle broker="${PID[kafka]}" aggregator="$agg" clickhouse="${PID[ch_b]}"
    R[b.rss_end_mb]="$(mem_mb "$agg" VmHWM)"
    stop aggregator 60
    stop ch_b 30
fi

# ---- 2c. ClickHouse's Kafka engine -------------------------------------------

if ! skipped c; then
    log "(c) ClickHouse Kafka engine + materialized view, librdkafka $RDKAFKA_VERSION, fresh server"
    mkdir -p "$WORK/ch_c/config.d" "$WORK/ch_c/users.d"
    # A fresh group would start at the end (librdkafka's default): read from the start, like (a) and (b).
    cat >"$WORK/ch_c/config.d/kafka.xml" <<EOF
<yandex><kafka><auto_offset_reset>earliest</auto_offset_reset>${C_FETCH_WAIT_MS:+<fetch_wait_max_ms>$C_FETCH_WAIT_MS</fetch_wait_max_ms>}</kafka></yandex>
EOF
    # The engine flushes a block at max_block_size rows or after stream_flush_interval_ms.
    cat >"$WORK/ch_c/users.d/stream.xml" <<EOF
<yandex><profiles><default><stream_flush_interval_ms>$FLUSH_MS</stream_flush_interval_ms></default></profiles></yandex>
EOF
    export LD_LIBRARY_PATH="$RDKAFKA_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    start_clickhouse ch_c
    unset LD_LIBRARY_PATH
    port="${CH_PORT[ch_c]}"
    grep -q "$RDKAFKA_DIR/librdkafka.so.1" "/proc/${PID[ch_c]}/maps" ||
        die "ClickHouse did not load $RDKAFKA_DIR/librdkafka.so.1"
    [[ "$(ch "$port" "SELECT value FROM system.settings WHERE name = 'stream_flush_interval_ms'")" == "$FLUSH_MS" ]] ||
        die "users.d/stream.xml was not applied"
    ch "$port" "CREATE DATABASE kafka_bench" >/dev/null
    ch "$port" "CREATE TABLE kafka_bench.rollup (client_id String, campaign_id String, link_id String,
        bucket_start DateTime, clicks UInt64, human_clicks UInt64, bot_clicks UInt64, opens UInt64)
        ENGINE = SummingMergeTree() ORDER BY (client_id, campaign_id, link_id, bucket_start)" >/dev/null
    # Every field of ClickEvent v3 (bench/src/clicks.rs json_row), so the
    # engine reads and parses what the aggregator does, not a smaller copy.
    ch "$port" "CREATE TABLE kafka_bench.queue (event_id String, event_time_ms Int64,
        client_id String, campaign_id String, link_id String, recipient_id Nullable(String),
        destination_url String, http_method String, user_agent Nullable(String), referer Nullable(String),
        client_ip Nullable(String), edge_node String, event_type String, is_prefetch UInt8, recipient_token String,
        signals_prefetch_header UInt8, signals_ua_class String, signals_has_accept UInt8,
        signals_has_accept_language UInt8, signals_scanner_referer UInt8, signals_network_class String,
        signals_network_name Nullable(String), signals_asn UInt32, signals_network_allow_listed UInt8,
        signals_sent_at_ms Nullable(Int64), signals_honeypot UInt8)
        ENGINE = Kafka SETTINGS kafka_broker_list = '127.0.0.1:$KAFKA_PORT', kafka_topic_list = 'clicks_json',
        kafka_group_name = 'bench-clickhouse-$$', kafka_format = 'JSONEachRow',
        kafka_num_consumers = $ENGINE_CONSUMERS" >/dev/null
    sleep 1
    R[c.rss_idle_mb]="$(mem_mb "${PID[ch_c]}" VmRSS)"
    sample_rss ch_c "${PID[ch_c]}"
    cpu_begin c clickhouse="${PID[ch_c]}" broker="${PID[kafka]}"
    R[c.start_ms]="$(now_ms)"
    ch "$port" "CREATE MATERIALIZED VIEW kafka_bench.consumer TO kafka_bench.rollup AS
        SELECT client_id, campaign_id, link_id, toStartOfMinute(toDateTime(intDiv(event_time_ms, 1000))) AS bucket_start,
            countIf(event_type = 'click') AS clicks, countIf(event_type = 'click' AND is_prefetch = 0) AS human_clicks,
            countIf(event_type = 'click' AND is_prefetch = 1) AS bot_clicks, countIf(event_type = 'open') AS opens
        FROM kafka_bench.queue GROUP BY client_id, campaign_id, link_id, bucket_start" >/dev/null
    capture line $((PHASE_TIMEOUT + 60)) "$BIN/ch-wait" --clickhouse "127.0.0.1:$port" \
        --query "SELECT sum(clicks) FROM kafka_bench.rollup" --expect "$EVENTS" \
        --timeout-secs "$PHASE_TIMEOUT" || {
        WRONG=1
        log "(c) the rollup did not end at exactly $EVENTS clicks: $line"
    }
    cpu_end c clickhouse="${PID[ch_c]}" broker="${PID[kafka]}"
    R[c.value]="$(kv "$line" value)"
    R[c.done_ms]="$(kv "$line" reached_unix_ms)"
    [[ -n "${R[c.done_ms]}" ]] || die "(c) never reached $EVENTS clicks (see $WORK/ch_c/log)"
    R[c.wall_s]="$(calcf %.1f "(${R[c.done_ms]} - ${R[c.start_ms]}) / 1000")"
    R[c.eps]="$(calcf %.0f "$EVENTS / ((${R[c.done_ms]} - ${R[c.start_ms]}) / 1000)")"
    R[c.rss_mb]="$(mem_mb "${PID[ch_c]}" VmHWM)"
    read -r 'R[c.rss_max]' 'R[c.rss_q1]' 'R[c.rss_q2]' 'R[c.rss_q3]' 'R[c.rss_q4]' \
        <<<"$(rss_profile ch_c "${R[c.start_ms]}" "${R[c.done_ms]}")"
    R[c.parts]="$(ch "$port" "SELECT count() FROM system.parts WHERE database = 'kafka_bench' AND active")"
    log "(c) ${R[c.eps]} events/s from creating the view (${R[c.wall_s]} s), peak RSS ${R[c.rss_mb]} MB (idle ${R[c.rss_idle_mb]} MB)"
    ch "$port" "DROP TABLE kafka_bench.consumer" >/dev/null
    stop ch_c 30
fi

# ---- summary -----------------------------------------------------------------

yes_no() { if awk "BEGIN { exit !($1) }"; then echo met; else echo MISSED; fi; }
v() { echo "${R[$1]:--}"; }
others() { # PHASE NAME...: cores kept busy by processes other than NAME... during PHASE
    local phase="$1" used=0 n
    shift
    [[ -n "${R[$phase.cpu_wall_s]:-}" ]] || { echo -; return; }
    for n in "$@"; do used="$(calc "$used + ${R[$phase.cpu.$n]:-0}")"; done
    calcf %.2f "(${R[$phase.cpu.machine]} - $used) / ${R[$phase.cpu_wall_s]}"
}
cores() { [[ -n "${R[$1.cpu_wall_s]:-}" ]] && calcf %.2f "${R[$1.cpu.$2]} / ${R[$1.cpu_wall_s]}" || echo -; } # PHASE NAME
per_event_us() { [[ -n "${R[$1]:-}" ]] && calcf %.1f "${R[$1]} * 1000000 / $EVENTS" || echo -; }
{
    dirty="$(cd "$ROOT" && git status --porcelain -- aggregator schemas bench | wc -l)"
    echo "Aggregator benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(cd "$ROOT" && git rev-parse --short HEAD) ($dirty uncommitted files under aggregator/ schemas/ bench/), aggregator built $(date -u -r "$BIN/ricochet-aggregator" '+%H:%M UTC')"
    echo "machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -r), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$EVENTS clicks, $CLIENTS clients (one sends $HOT_SHARE), 12 partitions, keyed by client; Avro $((R[preload.avro_bytes] / EVENTS)) B/event, JSON $((R[preload.json_bytes] / EVENTS)) B/event; preload ${R[preload.secs]} s"
    echo "nisshi 0.8.1 (sqlite) and ClickHouse $(clickhouse-client --version 2>/dev/null | grep -o '[0-9][0-9.]*[0-9]' | head -1) on 127.0.0.1; (c): librdkafka $RDKAFKA_VERSION, kafka_num_consumers=$ENGINE_CONSUMERS, stream_flush_interval_ms=$FLUSH_MS"
    echo
    row() { printf '%-38s %10s %10s %10s %14s %12s\n' "$@"; }
    busy() { [[ -n "${R[$1.cpu_wall_s]:-}" ]] && calcf %.2f "${R[$1.cpu.machine]} / ${R[$1.cpu_wall_s]}" || echo -; }
    row "" "(a) bare" "(a') bare" "(a) json" "(b) aggregator" "(c) CH Kafka"
    row "topic" "clicks" "clicks" "clicks_json" "clicks" "clicks_json"
    row "fetch.wait.max.ms" "500" "$( ((FAST_WAIT_MS > 0)) && echo "$FAST_WAIT_MS" || echo -)" "500" "500" \
        "${C_FETCH_WAIT_MS:-500}"
    row "events/s (from assignment / view)" "$(v a.eps)" "$(v a_fast.eps)" "$(v a_json.eps)" "$(v b.eps)" "$(v c.eps)"
    row "seconds for all events" "$(v a.wall_s)" "$(v a_fast.wall_s)" "$(v a_json.wall_s)" "$(v b.wall_s)" "$(v c.wall_s)"
    row "events/s from process start" "$(v a.eps_total)" "$(v a_fast.eps_total)" "$(v a_json.eps_total)" \
        "$(v b.eps_total)" "-"
    row "peak RSS MB, consumer (VmHWM)" "$(v a.rss_mb)" "$(v a_fast.rss_mb)" "$(v a_json.rss_mb)" "$(v b.rss_mb)" \
        "$(v c.rss_mb)"
    row "peak RSS MB, ClickHouse server" "-" "-" "-" "$(v b.ch_rss_mb)" "$(v c.rss_mb)"
    row "CPU µs/event, consumer process" "$(per_event_us a.cpu.subject)" "$(per_event_us a_fast.cpu.subject)" \
        "$(per_event_us a_json.cpu.subject)" "$(per_event_us b.cpu.aggregator)" "(in CH)"
    row "  the same without start-up" "" "" "" "$(per_event_us b.cpu.drain)" ""
    if [[ -n "${R[b0.eps]:-}" ]]; then
        row "(b0) baseline: events/s" "" "" "" "$(v b0.eps)" ""
        row "(b0) baseline: CPU µs/event" "" "" "" "$(per_event_us b0.cpu.aggregator)" ""
        row "  the same without start-up" "" "" "" "$(per_event_us b0.cpu.drain)" ""
        row "(b0) baseline: CPU µs/event, CH" "" "" "" "$(per_event_us b0.cpu.clickhouse)" ""
    fi
    row "CPU µs/event, ClickHouse server" "-" "-" "-" "$(per_event_us b.cpu.clickhouse)" \
        "$(per_event_us c.cpu.clickhouse)"
    row "CPU µs/event, broker" "$(per_event_us a.cpu.broker)" "$(per_event_us a_fast.cpu.broker)" \
        "$(per_event_us a_json.cpu.broker)" "$(per_event_us b.cpu.broker)" "$(per_event_us c.cpu.broker)"
    row "cores busy, broker" "$(cores a broker)" "$(cores a_fast broker)" "$(cores a_json broker)" \
        "$(cores b broker)" "$(cores c broker)"
    row "cores busy, whole machine" "$(busy a)" "$(busy a_fast)" "$(busy a_json)" "$(busy b)" "$(busy c)"
    row "cores busy by other processes" "$(others a subject broker)" "$(others a_fast subject broker)" \
        "$(others a_json subject broker)" "$(others b aggregator clickhouse broker)" "$(others c clickhouse broker)"
    echo
    if [[ -n "${R[a.eps]:-}" && -n "${R[b.eps]:-}" ]]; then RBA="$(calcf %.2f "${R[b.eps]} / ${R[a.eps]}")"; else RBA=-; fi
    if [[ -n "${R[c.eps]:-}" && -n "${R[b.eps]:-}" ]]; then RBC="$(calcf %.2f "${R[b.eps]} / ${R[c.eps]}")"; else RBC=-; fi
    if [[ -n "${R[a_fast.eps]:-}" && -n "${R[b.eps]:-}" ]]; then RBF="$(calcf %.2f "${R[b.eps]} / ${R[a_fast.eps]}")"; else RBF=-; fi
    if [[ -n "${R[a_json.eps]:-}" && -n "${R[c.eps]:-}" ]]; then RCJ="$(calcf %.2f "${R[c.eps]} / ${R[a_json.eps]}")"; else RCJ=-; fi
    echo "ratios: b/a $RBA (same consumer settings), b/a' $RBF, b/c $RBC; each against a bare drain of its own topic: b/a $RBA, c/(a json) $RCJ"
    if [[ -n "${R[b0.eps]:-}" && -n "${R[b.eps]:-}" ]]; then
        echo "against the baseline build (b0, $BENCH_BASELINE_AGGREGATOR): events/s b/b0 $(calcf %.2f "${R[b.eps]} / ${R[b0.eps]}"), aggregator CPU per event b/b0 $(calcf %.2f "${R[b.cpu.aggregator]} / ${R[b0.cpu.aggregator]}") (without start-up $(calcf %.2f "${R[b.cpu.drain]} / ${R[b0.cpu.drain]}")), ClickHouse CPU per event b/b0 $(calcf %.2f "${R[b.cpu.clickhouse]} / ${R[b0.cpu.clickhouse]}")"
    fi
    if [[ -n "${R[b.eps]:-}" ]]; then
        echo
        echo "(b) where the aggregator's time went ($(v b.wall_s) s from assignment; start-up before it $(v b.startup_s) s, $(v b.cpu.startup) s of CPU):"
        echo "  flushes: $(calcf %.0f "${R[b.flushes]}"), $(calcf %.1f "${R[b.flush_s]}") s in flush (raw-event insert + rollup insert), $(calcf %.0f "${R[b.flush_s]} * 100 / ${R[b.wall_s]}")% of the wall time; rollup rows written $(calcf %.0f "${R[b.rollup_rows]}") ($(calcf %.1f "$EVENTS / (${R[b.rollup_rows]} + 1)") events a row); breakdown rows written $(calcf %.0f "${R[b.breakdown_rows]:-0}") ($(calcf %.2f "${R[b.breakdown_rows]:-0} / $EVENTS") per event)"
        echo "  aggregator CPU by thread (s): pipeline $(calcf %.1f "${R[b.thr_pipeline]} / $TCK"), librdkafka $(calcf %.1f "${R[b.thr_rdkafka]} / $TCK"), tokio workers $(calcf %.1f "${R[b.thr_tokio]} / $TCK"), other $(calcf %.1f "${R[b.thr_other]} / $TCK")"
        echo "  ClickHouse inserts (query_log: table, inserts, total ms, rows, bytes, peak memory):"
        sed 's/^/    /' "$WORK/b-inserts.tsv"
        echo "  aggregator RSS (MB) at the end of each quarter of the drain: ${R[b.rss_q1]} ${R[b.rss_q2]} ${R[b.rss_q3]} ${R[b.rss_q4]}; max sampled ${R[b.rss_max]}; VmHWM after the freshness run $(v b.rss_end_mb)"
    fi
    if [[ -n "${R[c.eps]:-}" ]]; then
        echo "(c) ClickHouse RSS (MB): idle with the Kafka table ${R[c.rss_idle_mb]}, end of each quarter ${R[c.rss_q1]} ${R[c.rss_q2]} ${R[c.rss_q3]} ${R[c.rss_q4]}; active parts after: ${R[c.parts]}"
    fi
    if [[ -s "$WORK/perf-self.txt" ]]; then
        echo
        echo "(b) perf record -e cpu-clock -F 499 --call-graph dwarf, aggregator process, self time by thread:"
        sed 's/^/  /' "$WORK/perf-threads.txt"
        echo "  by function, self time (>= 0.7%):"
        sed 's/^/  /' "$WORK/perf-self.txt"
        echo "  the pipeline thread by function, including callees (>= 2% of the process):"
        sed 's/^/  /' "$WORK/perf-pipeline.txt"
    fi
    if [[ -n "${R[fresh.p95_ms]:-}" ]]; then
        echo
        echo "freshness: ${R[fresh.achieved_rate]} clicks/s for $FRESH_SECS s (first 5 s not measured), ${R[fresh.events]} clicks measured, rollups polled every 100 ms (poll p50 ${R[fresh.poll_p50_ms]} ms, ${R[fresh.polls]} polls)"
        echo "  verdict delay ${R[fresh.verdict_delay_ms]} ms (a click is counted once its verdict is final; included below)"
        echo "  visible - event time: p50 ${R[fresh.p50_ms]} ms, p95 ${R[fresh.p95_ms]} ms, p99 ${R[fresh.p99_ms]} ms, max ${R[fresh.max_ms]} ms; never seen ${R[fresh.unseen]}, counted twice ${R[fresh.overcounted]}"
        sed 's/^/  /' "$WORK/freshness-windows.txt"
        echo "  cores busy over the run: aggregator $(cores fresh aggregator), ClickHouse $(cores fresh clickhouse), broker $(cores fresh broker); aggregator RSS at the end ${R[fresh.rss_mb]} MB"
    fi
    if [[ -n "${R[steady.sent]:-}" ]]; then
        steady_per() { calcf %.2f "$1 / ${R[steady.buckets]}"; }
        echo
        echo "steady run: ${R[steady.sent]} clicks at ${R[steady.rate]} clicks/s over $STEADY_LINKS links of one sender, $STEADY_SECS s (aggregator flushing every RICOCHET_FLUSH_INTERVAL_MS, default 1 s)"
        echo "  distinct buckets of that sender in click_rollups (grain, link, bucket, source partition): ${R[steady.buckets]}; at the minute grain: ${R[steady.min_buckets]} link-minutes"
        echo "  rows per bucket, before merges: $(steady_per "${R[steady.rows0]}") (minute grain $(calcf %.2f "${R[steady.min_rows0]} / ${R[steady.min_buckets]}")); after OPTIMIZE FINAL: $(steady_per "${R[steady.rows1]}") (minute grain $(calcf %.2f "${R[steady.min_rows1]} / ${R[steady.min_buckets]}"))"
        echo "  whole click_rollups table in system.parts (with the drain's and the freshness run's rows): before ${R[steady.parts0]} parts, ${R[steady.table_rows0]} rows, ${R[steady.table_bytes0]} bytes; after ${R[steady.parts1]} parts, ${R[steady.table_rows1]} rows, ${R[steady.table_bytes1]} bytes ($(calcf %.1f "${R[steady.table_bytes1]} / ${R[steady.table_rows1]}") bytes a row)"
        echo "  minute-grain sum(clicks) before and after the merge: ${R[steady.sum0]} / ${R[steady.sum1]} (sent ${R[steady.sent]})"
        echo "  CPU µs/event at this rate: aggregator $(calcf %.1f "${R[steady.cpu.aggregator]} * 1000000 / ${R[steady.sent]}"), ClickHouse $(calcf %.1f "${R[steady.cpu.clickhouse]} * 1000000 / ${R[steady.sent]}"), broker $(calcf %.1f "${R[steady.cpu.broker]} * 1000000 / ${R[steady.sent]}") (includes the idle cost of each process over ${R[steady.cpu_wall_s]} s)"
    fi
    if [[ -n "${R[idle.cpu_wall_s]:-}" ]]; then
        echo "idle aggregator (caught up, no clicks, ${R[idle.cpu_wall_s]} s): cores busy: broker $(cores idle broker), aggregator $(cores idle aggregator), ClickHouse $(cores idle clickhouse)"
    fi
    echo
    echo "counts: (b) sum(clicks) $(v b.value), (c) $(v c.value), expected $EVENTS each"
    echo
    echo "goals:"
    [[ "$RBA" != - ]] && echo "  (b) >= 0.5 x (a): $RBA -> $(yes_no "$RBA >= 0.5")"
    [[ "$RBC" != - ]] && echo "  (b) faster than (c): $RBC -> $(yes_no "$RBC > 1")"
    [[ -n "${R[b.rss_mb]:-}" ]] && echo "  aggregator memory bounded: peak ${R[b.rss_mb]} MB; RSS by quarter ${R[b.rss_q1]} ${R[b.rss_q2]} ${R[b.rss_q3]} ${R[b.rss_q4]} MB (flat = bounded by the batch, not the backlog)"
    [[ -n "${R[fresh.p95_ms]:-}" ]] && echo "  freshness p95 <= verdict delay ${R[fresh.verdict_delay_ms]} ms + 2 s at $FRESH_RATE clicks/s: ${R[fresh.p95_ms]} ms (${R[fresh.beyond_delay_p95_ms]} ms beyond the delay) -> $(yes_no "${R[fresh.p95_ms]} <= ${R[fresh.goal_p95_ms]}")"
    [[ -n "${R[steady.sent]:-}" ]] && echo "  <= 1.1 rows per bucket after merges (steady run): $(calcf %.2f "${R[steady.rows1]} / ${R[steady.buckets]}") -> $(yes_no "${R[steady.rows1]} <= 1.1 * ${R[steady.buckets]}")"
    [[ -n "${R[b.cpu.aggregator]:-}" ]] && echo "  aggregator CPU <= 5 us/event (drain (b)): $(per_event_us b.cpu.aggregator) -> $(yes_no "$(per_event_us b.cpu.aggregator) <= 5")"
    true
} >"$SUMMARY"
mkdir -p "$OUT_DIR"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
cp "$SUMMARY" "$OUT_DIR/aggregator-$stamp.txt"
echo
cat "$SUMMARY"
if ((WRONG)); then
    log "a click was lost or counted twice (see counts / freshness)"
    exit 2
fi
