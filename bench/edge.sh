#!/usr/bin/env bash
# The redirect edge's benchmark, in one run on one machine (a benchmark: it
# reports numbers and goals, it is not a pass/fail test of speed).
#
#   bench/edge.sh
#
# 1. builds the workspace in release mode (the edge and the helpers in bench/),
#    starts a private broker (infra/kafka/run.sh) and seeds 100,000 links
#    straight into the `links` topic (seed-links, which also writes them as an
#    nginx `map`);
# 2. starts side by side the bare axum ceiling (bare-redirect: constant 302),
#    nginx (Debian's nginx-light: the same codes in a `map`, 302 to their
#    destinations, every request in an access log buffered to disk; 2 worker
#    processes like the edge's 2 tokio workers) and the edge
#    (target/release/ricochet-redirect), and waits for /readyz;
# 3. drives the three with wrk over random valid codes (bench/random-codes.lua),
#    same threads, connections and duration, alternating, ROUNDS times each,
#    each run once the broker is idle (it catches up after an edge run);
# 4. prints CPU µs per request, req/s, p50/p99 and the ratios edge/nginx and
#    edge/bare (medians);
# 5. p99 at half the edge's max throughput with the open-loop rate-load,
#    alternating, ROUNDS times each;
# 6. checks that the clicks topic holds exactly one event per 302 the edge
#    served (topic-count), after the spool drained;
# 7. again with the broker stopped (the spool keeps every click), then checks
#    the count once the broker is back;
# 8. RSS of an edge that loaded 1,000,000 links.
#
# Everything runs on 127.0.0.1, on free ports, under one temporary directory;
# every process it starts is stopped on exit, failure or Ctrl-C (a SIGKILL of
# this script cannot be trapped: then `pkill -P` its leftovers by their pid).
# A summary is also written to bench/out/ (git-ignored).
#
# Settings (environment):
#   BENCH_THREADS=2 BENCH_CONNECTIONS=64 BENCH_DURATION=15   wrk -t -c -d (seconds)
#   BENCH_ROUNDS=3               wrk runs per server and phase, alternating (median reported)
#   BENCH_LINKS=100000           links loaded for the throughput runs
#   BENCH_BIG_LINKS=1000000      links loaded for the RSS measurement (0: skip)
#   BENCH_RATE_DURATION=15       seconds of each fixed-rate run (after 2 s of warm-up)
#   BENCH_DRAIN_TIMEOUT=300      seconds to wait for the topic to hold every click
#   BENCH_SPOOL_MAX_BYTES=4GiB   the edge's spool cap (RICOCHET_SPOOL_MAX_BYTES) for the outage phase
#   BENCH_SKIP_BUILD=1           use the binaries already in target/release
#   BENCH_BASELINE_EDGE=PATH     another build of ricochet-redirect, run beside the edge in the
#                                throughput phase (its own port and clicks topic), for a
#                                before/after in one run: "edge_b0" in the summary
#   BENCH_KEEP=1                 keep the temporary directory (logs, spool, broker data)
#
# Exit status: 0 when the benchmark ran (goals met or not, see the summary),
# 2 when a click was lost or counted twice, 1 when it could not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
THREADS="${BENCH_THREADS:-2}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
DURATION="${BENCH_DURATION:-15}"
ROUNDS="${BENCH_ROUNDS:-3}"
LINKS="${BENCH_LINKS:-100000}"
BIG_LINKS="${BENCH_BIG_LINKS:-1000000}"
RATE_DURATION="${BENCH_RATE_DURATION:-15}"
DRAIN_TIMEOUT="${BENCH_DRAIN_TIMEOUT:-300}"
# The outage phase spools ~45 s of the edge's full rate (~3M events, ~1 GB at
# 67,000 req/s): above the edge's default 1 GiB cap, which would count drops
# instead of measuring delivery.
SPOOL_MAX_BYTES="${BENCH_SPOOL_MAX_BYTES:-$((4 << 30))}"
BIN="$ROOT/target/release"
BASELINE_EDGE="${BENCH_BASELINE_EDGE:-}"
LUA="$ROOT/bench/random-codes.lua"
TCK="$(getconf CLK_TCK)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ricochet-edge-bench.XXXXXX")"
OUT_DIR="$ROOT/bench/out"
SUMMARY="$WORK/summary.txt"
declare -A PID=()
declare -A R=()   # results: R[label.key]
declare -A OPS_PORT=() # an edge's operations port (its /metrics), by its public port
LOST=0

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
    for name in "${!PID[@]}"; do stop "$name" 10; done
    if [[ "${BENCH_KEEP:-0}" == 1 || $status -ne 0 ]]; then
        log "kept $WORK (logs, spool, broker data)"
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

http_ok() { curl -sf -o /dev/null --max-time 2 "$1"; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() { kill -0 "${PID[$1]}" 2>/dev/null; }

# ---- measurements ------------------------------------------------------------

proc_ticks() { # /proc/PID or /proc/PID/task/TID -> utime+stime in clock ticks
    local stat
    stat="$(cat "$1/stat" 2>/dev/null)" || { echo 0; return; }
    stat="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $stat # $1 is field 3 (state): utime is field 14, stime field 15
    echo $((${12} + ${13}))
}

server_ticks() { # PID -> CPU ticks of the process and of its child processes (nginx's workers)
    local n child
    n="$(proc_ticks "/proc/$1")"
    for child in $(pgrep -P "$1" 2>/dev/null); do n=$((n + $(proc_ticks "/proc/$child"))); done
    echo "$n"
}

machine_busy_ticks() { # all CPUs, ticks not idle
    local _ user nice system idle iowait irq softirq steal
    read -r _ user nice system idle iowait irq softirq steal _ </proc/stat
    echo $((user + nice + system + irq + softirq + steal))
}

thread_stats() { # PID -> CPU ticks of "workers spool_writer spool_forwarder librdkafka other", then
    # the workers' involuntary context switches (preemptions) and the spool writer's voluntary ones (wake-ups)
    local w=0 sw=0 fw=0 k=0 o=0 preempt=0 wakeups=0 t name ticks
    for t in /proc/"$1"/task/*; do
        name="$(cat "$t/comm" 2>/dev/null)" || continue
        ticks="$(proc_ticks "$t")"
        case "$name" in
            tokio-rt-worker)
                w=$((w + ticks))
                preempt=$((preempt + $(awk '/^nonvoluntary_ctxt_switches/ { print $2 }' "$t/status")))
                ;;
            spool-writer)
                sw=$((sw + ticks))
                wakeups=$((wakeups + $(awk '/^voluntary_ctxt_switches/ { print $2 }' "$t/status")))
                ;;
            spool-forwarder) fw=$((fw + ticks)) ;;
            rdk:* | "producer pollin") k=$((k + ticks)) ;;
            *) o=$((o + ticks)) ;;
        esac
    done
    echo "$w $sw $fw $k $o $preempt $wakeups"
}

children_ticks() { # FILE (output of `times`) -> CPU of this shell's reaped children (wrk, helpers), in ticks
    # `times` has to run in this shell itself: a $(…) subshell only counts its own children.
    awk -v tck="$TCK" 'NR == 2 {
        n = 0
        for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] }
        printf "%d\n", n * tck + 0.5 }' "$1"
}

edge_metric() { # PORT NAME -> sum of the samples of a metric (0 if absent)
    curl -sf --max-time 5 "http://127.0.0.1:${OPS_PORT[$1]}/metrics" |
        awk -v name="$2" 'index($0, name) == 1 { rest = substr($0, length(name) + 1)
            if (rest ~ /^[ {]/) s += $NF } END { printf "%d\n", s }'
}

edge_served() { # PORT -> 302s the edge answered since it started
    curl -sf --max-time 5 "http://127.0.0.1:${OPS_PORT[$1]}/metrics" |
        awk '/^ricochet_edge_request_duration_seconds_count\{status="302"\}/ { s += $NF } END { printf "%d\n", s }'
}

rss_mb() { awk -v k="$2:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; } # PID VmRSS|VmHWM

kv() { # LINE KEY -> value of key=value in LINE
    tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2; exit }'
}

calc() { awk "BEGIN { printf \"%s\", $* }"; }
calcf() { awk "BEGIN { printf \"$1\", $2 }"; } # FORMAT EXPR

median() { # values... -> median
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) printf "%s", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The broker catches up after an edge run (producing, then sqlite checkpoints)
# for up to a minute: a peer run started meanwhile would share the cores with
# it. Wait (at most 90 s) until it uses under 5% of a core over a second.
wait_broker_idle() {
    local pid="${PID[kafka]:-}" a b i
    [[ -n "$pid" ]] || return 0
    for ((i = 0; i < 90; i++)); do
        a="$(proc_ticks "/proc/$pid")"
        sleep 1
        b="$(proc_ticks "/proc/$pid")"
        (((b - a) * 100 < 5 * TCK)) && return 0
    done
    log "the broker is still busy after 90 s; measuring anyway"
}

# run_wrk LABEL SERVER_NAME PORT: one wrk run; results in R[LABEL.*]
run_wrk() {
    local label="$1" server="$2" port="$3" pid="${PID[$2]}"
    local broker_pid="${PID[kafka]:-}" out line
    wait_broker_idle
    local m0 s0 b0 c0 t0 w0 served0=0 served1=0
    if [[ "$server" == edge* ]]; then served0="$(edge_served "$port")"; fi
    t0="$(thread_stats "$pid")"
    m0="$(machine_busy_ticks)"
    w0="$(date +%s.%N)"
    s0="$(server_ticks "$pid")"
    b0=0
    if [[ -n "$broker_pid" ]]; then b0="$(proc_ticks "/proc/$broker_pid")"; fi
    times >"$WORK/times0"
    out="$WORK/wrk-$label.txt"
    timeout $((DURATION + 60)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -s "$LUA" "http://127.0.0.1:$port" -- "$WORK/codes.txt" >"$out" 2>&1 ||
        die "wrk failed: $(tail -3 "$out")"
    local m1 s1 b1=0 c1 w1
    m1="$(machine_busy_ticks)"
    w1="$(date +%s.%N)"
    s1="$(server_ticks "$pid")"
    if [[ -n "$broker_pid" ]]; then b1="$(proc_ticks "/proc/$broker_pid")"; fi
    times >"$WORK/times1"
    c0="$(children_ticks "$WORK/times0")"
    c1="$(children_ticks "$WORK/times1")"
    line="$(grep '^wrk_result ' "$out")" || die "no wrk_result in $out"
    local key
    for key in requests rps p50_us p99_us connect_errors read_errors write_errors timeouts non_2xx_3xx; do
        R[$label.$key]="$(kv "$line" "$key")"
    done
    R[$label.failed]=$((${R[$label.connect_errors]} + ${R[$label.read_errors]} + ${R[$label.write_errors]} +
        ${R[$label.timeouts]} + ${R[$label.non_2xx_3xx]}))
    local n="${R[$label.requests]}" us=$((1000000 / TCK))
    R[$label.cpu_server]="$(calc "($s1 - $s0) * $us / $n")"
    R[$label.cpu_broker]="$(calc "($b1 - $b0) * $us / $n")"
    R[$label.cpu_wrk]="$(calc "($c1 - $c0) * $us / $n")"
    # Cores that processes other than the server, the broker and wrk kept busy (a shared machine).
    R[$label.cores_other]="$(calc "(($m1 - $m0) - ($s1 - $s0) - ($b1 - $b0) - ($c1 - $c0)) / ($w1 - $w0) / $TCK")"
    R[$label.cores_busy]="$(calc "($m1 - $m0) / ($w1 - $w0) / $TCK")"
    local t1 a b i names=(workers spool_writer spool_forwarder librdkafka other_threads)
    t1="$(thread_stats "$pid")"
    read -r -a a <<<"$t0"
    read -r -a b <<<"$t1"
    for i in 0 1 2 3 4; do
        R[$label.cpu_${names[$i]}]="$(calc "(${b[$i]} - ${a[$i]}) * $us / $n")"
    done
    R[$label.preempt_per_1k]="$(calc "(${b[5]} - ${a[5]}) * 1000 / $n")"
    R[$label.writer_wakeups_per_1k]="$(calc "(${b[6]} - ${a[6]}) * 1000 / $n")"
    if [[ "$server" == edge* ]]; then
        served1="$(edge_served "$port")"
        R[$label.served]=$((served1 - served0))
    fi
    log "$(printf '%-14s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  failed %s  CPU µs/req: server %.1f, broker %.1f, wrk %.1f; other processes %.2f cores' \
        "$label" "${R[$label.rps]}" "$(calc "${R[$label.p50_us]} / 1000")" "$(calc "${R[$label.p99_us]} / 1000")" \
        "${R[$label.failed]}" "${R[$label.cpu_server]}" "${R[$label.cpu_broker]}" "${R[$label.cpu_wrk]}" \
        "${R[$label.cores_other]}")"
}

# run_rate LABEL PORT RATE: one fixed-rate run; results in R[LABEL.*]
run_rate() {
    local label="$1" port="$2" rate="$3" line key
    wait_broker_idle
    line="$(timeout $((RATE_DURATION + 90)) "$BIN/rate-load" --addr "127.0.0.1:$port" --codes "$WORK/codes.txt" \
        --rate "$rate" --duration-secs "$RATE_DURATION" --warmup-secs 2)" || die "rate-load failed: $line"
    echo "$line" >"$WORK/rate-$label.txt"
    for key in target_rate achieved_rate ok ok_total non_302 errors late p50_us p90_us p99_us p999_us max_us \
        service_p99_us; do
        R[$label.$key]="$(kv "$line" "$key")"
    done
    log "$(printf '%-14s %6s req/s offered, %6s done  p50 %5.2f ms  p99 %5.2f ms  p99.9 %5.2f ms  late %s  failed %s' \
        "$label" "$rate" "${R[$label.achieved_rate]}" "$(calc "${R[$label.p50_us]} / 1000")" \
        "$(calc "${R[$label.p99_us]} / 1000")" "$(calc "${R[$label.p999_us]} / 1000")" "${R[$label.late]}" \
        "$((${R[$label.non_302]} + ${R[$label.errors]}))")"
}

# count_clicks LABEL EXPECTED: waits until the clicks topic holds EXPECTED events
count_clicks() {
    local label="$1" expected="$2" line status=0
    line="$(timeout $((DRAIN_TIMEOUT + 60)) "$BIN/topic-count" --brokers "127.0.0.1:$KAFKA_PORT" \
        --expect "$expected" --timeout-secs "$DRAIN_TIMEOUT")" || status=$?
    R[$label.count]="$(kv "$line" count)"
    R[$label.expected]="$expected"
    R[$label.waited_s]="$(calcf %.1f "$(kv "$line" waited_ms) / 1000")"
    if [[ $status -eq 0 ]]; then
        R[$label.exact]=yes
        log "clicks topic: ${R[$label.count]} events = $expected served by the edge (drained ${R[$label.waited_s]} s after the load)"
    else
        R[$label.exact]=no
        LOST=1
        log "clicks topic: ${R[$label.count]} events, but the edge served $expected 302s"
    fi
}

# ---- servers -----------------------------------------------------------------

start_broker() {
    "$ROOT/infra/kafka/run.sh" "$WORK/kafka" "$KAFKA_PORT" --group-initial-rebalance-delay 0s \
        >>"$WORK/kafka.log" 2>&1 &
    PID[kafka]=$!
    wait_until 60 "the broker" listening "$KAFKA_PORT"
}

start_edge() { # NAME PORT [BINARY [CLICKS_TOPIC]]: RSS and load time in R[NAME.*]
    local name="$1" port="$2" binary="${3:-$BIN/ricochet-redirect}" topic="${4:-clicks}" t0 ops
    pick_port ops
    OPS_PORT[$port]="$ops"
    t0="$(date +%s.%N)"
    RICOCHET_LISTEN="127.0.0.1:$port" RICOCHET_OPS_LISTEN="127.0.0.1:$ops" RICOCHET_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" \
        RICOCHET_SPOOL_DIR="$WORK/$name-spool" RICOCHET_NODE_ID="bench-$name" \
        RICOCHET_SPOOL_MAX_BYTES="$SPOOL_MAX_BYTES" RICOCHET_CLICKS_TOPIC="$topic" \
        RUST_LOG="info,librdkafka=warn,rdkafka=warn" \
        "$binary" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
    wait_until 900 "the edge's registry (/readyz)" http_ok "http://127.0.0.1:$port/readyz"
    R[$name.load_s]="$(calcf %.1f "$(date +%s.%N) - $t0")"
    R[$name.rss_ready_mb]="$(rss_mb "${PID[$name]}" VmRSS)"
}

start_nginx() { # the same codes in a `map`, every request logged to disk with a buffer
    mkdir -p "$WORK/nginx/tmp"
    cat >"$WORK/nginx/nginx.conf" <<EOF
# bench/edge.sh's nginx peer: what a sender would run instead of the edge.
daemon off;
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    # The click record: when, who (the full address; nginx has no anonymizer),
    # what, the agent and referer, and where it was sent. Buffered: written
    # every 64 KiB or 100 ms (not fsynced: the page cache, like any access log).
    log_format clicks '\$msec \$remote_addr "\$request" \$status "\$http_user_agent" "\$http_referer" "\$sent_http_location"';
    access_log $WORK/nginx/access.log clicks buffer=64k flush=100ms;
    client_body_temp_path $WORK/nginx/tmp;
    proxy_temp_path $WORK/nginx/tmp;
    fastcgi_temp_path $WORK/nginx/tmp;
    uwsgi_temp_path $WORK/nginx/tmp;
    scgi_temp_path $WORK/nginx/tmp;
    keepalive_requests 1000000;
    server_tokens off;
    map_hash_max_size 262144;
    map_hash_bucket_size 128;
    map \$uri \$destination {
        default "";
        include $WORK/nginx-map.conf;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /healthz { access_log off; return 200 "ok"; }
        location / {
            if (\$destination = "") { return 404; }
            add_header Cache-Control no-store always;
            return 302 \$destination;
        }
    }
}
EOF
    "$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx.log" 2>&1 &
    PID[nginx]=$!
    wait_until 60 "nginx" http_ok "http://127.0.0.1:$NGINX_PORT/healthz"
}

# ---- 1. build, broker, links -------------------------------------------------

for tool in wrk curl awk; do command -v "$tool" >/dev/null || die "$tool is missing (infra/install.sh --bench installs wrk)"; done
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[[ -x "$NGINX" ]] || die "nginx is missing (infra/install.sh --bench installs nginx-light)"
log "work dir $WORK"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release --bins"
    (cd "$ROOT" && cargo build --release --bins --quiet) || die "build failed"
fi
for b in ricochet-redirect bare-redirect seed-links rate-load topic-count; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing"
done
[[ -z "$BASELINE_EDGE" || -x "$BASELINE_EDGE" ]] || die "BENCH_BASELINE_EDGE=$BASELINE_EDGE is not executable"

pick_port KAFKA_PORT
pick_port BARE_PORT
pick_port NGINX_PORT
pick_port EDGE_PORT
pick_port B0_PORT
start_broker
log "broker on 127.0.0.1:$KAFKA_PORT"
seed="$(timeout 600 "$BIN/seed-links" --brokers "127.0.0.1:$KAFKA_PORT" --count "$LINKS" --codes-out "$WORK/codes.txt" \
    --nginx-map-out "$WORK/nginx-map.conf")"
log "$seed"

# ---- 2. the ceiling and the edge, side by side -------------------------------

"$BIN/bare-redirect" --listen "127.0.0.1:$BARE_PORT" >"$WORK/bare.log" 2>&1 &
PID[bare]=$!
# It answers 302 to every GET, which curl -f counts as success.
wait_until 30 "bare-redirect" http_ok "http://127.0.0.1:$BARE_PORT/healthz"
start_nginx
start_edge edge "$EDGE_PORT"
log "edge ready with $LINKS links in ${R[edge.load_s]} s, RSS ${R[edge.rss_ready_mb]} MB"
if [[ -n "$BASELINE_EDGE" ]]; then
    # Its clicks go to a topic of their own: the exactly-one checks below count the edge's.
    start_edge edge_b0 "$B0_PORT" "$BASELINE_EDGE" clicks-b0
    log "baseline edge ($BASELINE_EDGE) ready in ${R[edge_b0.load_s]} s"
fi
code="$(head -1 "$WORK/codes.txt")"
status="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$EDGE_PORT/$code")"
[[ "$status" == 302 ]] || die "the edge answered $status for a seeded code"
location_edge="$(curl -s -o /dev/null -w '%{redirect_url}' "http://127.0.0.1:$EDGE_PORT/$code")"
location_nginx="$(curl -s -o /dev/null -w '%{redirect_url}' "http://127.0.0.1:$NGINX_PORT/$code")"
[[ "$location_nginx" == "$location_edge" ]] || die "nginx redirects $code to $location_nginx, the edge to $location_edge"
R[bare.rss_mb]="$(rss_mb "${PID[bare]}" VmRSS)"

# ---- 3./4. throughput: wrk, alternating --------------------------------------

log "warm-up (3 s each, not reported)"
port_of() { case "$1" in bare) echo "$BARE_PORT" ;; nginx) echo "$NGINX_PORT" ;; edge_b0) echo "$B0_PORT" ;; *) echo "$EDGE_PORT" ;; esac; }
SERVERS=(bare nginx edge)
if [[ -n "$BASELINE_EDGE" ]]; then SERVERS+=(edge_b0); fi
for s in "${SERVERS[@]}"; do
    port="$(port_of "$s")"
    timeout 60 wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$LUA" "http://127.0.0.1:$port" -- "$WORK/codes.txt" >/dev/null
done
count_clicks warmup "$(edge_served "$EDGE_PORT")"

log "throughput: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, alternating"
for ((r = 1; r <= ROUNDS; r++)); do
    run_wrk "bare.$r" bare "$BARE_PORT"
    run_wrk "nginx.$r" nginx "$NGINX_PORT"
    run_wrk "edge.$r" edge "$EDGE_PORT"
    if [[ -n "$BASELINE_EDGE" ]]; then run_wrk "edge_b0.$r" edge_b0 "$B0_PORT"; fi
done
if [[ -n "$BASELINE_EDGE" ]]; then stop edge_b0 60; fi

# ---- 6. every click reached Kafka --------------------------------------------

wrk_sum=0
served_sum=0
for ((r = 1; r <= ROUNDS; r++)); do
    wrk_sum=$((wrk_sum + ${R[edge.$r.requests]}))
    served_sum=$((served_sum + ${R[edge.$r.served]}))
done
R[up.wrk_requests]=$wrk_sum
R[up.served]=$served_sum
count_clicks up "$(edge_served "$EDGE_PORT")"
R[up.dropped]="$(edge_metric "$EDGE_PORT" ricochet_edge_events_dropped_total)"

# ---- 5. p99 at half the edge's max throughput --------------------------------

edge_rps=()
bare_rps=()
nginx_rps=()
for ((r = 1; r <= ROUNDS; r++)); do
    edge_rps+=("${R[edge.$r.rps]}")
    bare_rps+=("${R[bare.$r.rps]}")
    nginx_rps+=("${R[nginx.$r.rps]}")
done
EDGE_MAX="$(median "${edge_rps[@]}")"
BARE_MAX="$(median "${bare_rps[@]}")"
NGINX_MAX="$(median "${nginx_rps[@]}")"
HALF="$(calc "int($EDGE_MAX / 2)")"
log "fixed rate: $HALF req/s (half the edge's median max), ${RATE_DURATION}s each, $ROUNDS rounds, alternating"
for ((r = 1; r <= ROUNDS; r++)); do
    run_rate "rate_bare.$r" "$BARE_PORT" "$HALF"
    run_rate "rate_nginx.$r" "$NGINX_PORT" "$HALF"
    run_rate "rate_edge.$r" "$EDGE_PORT" "$HALF"
done
count_clicks rate "$(edge_served "$EDGE_PORT")"

# ---- 7. the broker stopped ---------------------------------------------------

log "broker down: stopping it, then the same wrk runs"
before_down="$(edge_served "$EDGE_PORT")"
stop kafka 30
sleep 2
for ((r = 1; r <= ROUNDS; r++)); do
    run_wrk "bare_down.$r" bare "$BARE_PORT"
    run_wrk "nginx_down.$r" nginx "$NGINX_PORT"
    run_wrk "edge_down.$r" edge "$EDGE_PORT"
done
after_down="$(edge_served "$EDGE_PORT")"
R[down.served]=$((after_down - before_down))
R[down.dropped]="$(edge_metric "$EDGE_PORT" ricochet_edge_events_dropped_total)"
R[down.spool_mb]="$(du -sm "$WORK/edge-spool" | cut -f1)"
R[down.rss_mb]="$(rss_mb "${PID[edge]}" VmRSS)"
log "while the broker was away the edge served ${R[down.served]} redirects; spool ${R[down.spool_mb]} MB on disk"
start_broker
log "broker restarted"
count_clicks down "$after_down"

# nginx's side of "every click persisted": its access log holds one line per request answered.
stop nginx 30
R[nginx.logged]="$(grep -c ' 302 ' "$WORK/nginx/access.log" || true)"
R[nginx.log_mb]="$(du -m "$WORK/nginx/access.log" | cut -f1)"

# ---- 8. RSS with 1M links ----------------------------------------------------

R[edge.rss_end_mb]="$(rss_mb "${PID[edge]}" VmRSS)"
R[edge.hwm_mb]="$(rss_mb "${PID[edge]}" VmHWM)"
if ((BIG_LINKS > LINKS)); then
    served_edge1="$(edge_served "$EDGE_PORT")"
    stop edge 60
    log "seeding $((BIG_LINKS - LINKS)) more links"
    seed="$(timeout 900 "$BIN/seed-links" --brokers "127.0.0.1:$KAFKA_PORT" --count $((BIG_LINKS - LINKS)))"
    log "$seed"
    pick_port BIG_PORT
    start_edge edge_big "$BIG_PORT"
    sleep 5
    R[edge_big.rss_mb]="$(rss_mb "${PID[edge_big]}" VmRSS)"
    R[edge_big.hwm_mb]="$(rss_mb "${PID[edge_big]}" VmHWM)"
    log "edge with $BIG_LINKS links: ready in ${R[edge_big.load_s]} s, RSS ${R[edge_big.rss_mb]} MB (peak ${R[edge_big.hwm_mb]} MB)"
    run_wrk big edge_big "$BIG_PORT"
    R[edge_big.rss_loaded_mb]="$(rss_mb "${PID[edge_big]}" VmRSS)"
    count_clicks big $((served_edge1 + $(edge_served "$BIG_PORT")))
fi

# ---- summary -----------------------------------------------------------------

med() { # PREFIX KEY -> median over rounds
    local v=() r
    for ((r = 1; r <= ROUNDS; r++)); do v+=("${R[$1.$r.$2]}"); done
    median "${v[@]}"
}
sum_failed() {
    local n=0 r
    for ((r = 1; r <= ROUNDS; r++)); do n=$((n + ${R[$1.$r.failed]})); done
    echo "$n"
}
ms() { calc "$1 / 1000"; }
yes_no() { if awk "BEGIN { exit !($1) }"; then echo met; else echo MISSED; fi; }

RATIO="$(calc "$EDGE_MAX / $BARE_MAX")"
NGINX_RATIO="$(calc "$EDGE_MAX / $NGINX_MAX")"
DOWN_EDGE="$(med edge_down rps)"
DOWN_BARE="$(med bare_down rps)"
DOWN_NGINX="$(med nginx_down rps)"
DOWN_RATIO="$(calc "$DOWN_EDGE / $DOWN_BARE")"
DOWN_NGINX_RATIO="$(calc "$DOWN_EDGE / $DOWN_NGINX")"
DOWN_FAILED="$(sum_failed edge_down)"
CPU_EDGE="$(med edge cpu_server)"
CPU_NGINX="$(med nginx cpu_server)"
CPU_RATIO="$(calc "$CPU_EDGE / $CPU_NGINX")"
P99_EDGE="$(med rate_edge p99_us)"
P99_NGINX="$(med rate_nginx p99_us)"
P99_RATIO="$(calc "$P99_EDGE / $P99_NGINX")"
row() { # LABEL FORMAT bare nginx edge [ratio edge/nginx]
    local label="$1" fmt="$2"
    shift 2
    # shellcheck disable=SC2059
    printf "%-36s $fmt\n" "$label" "$@"
}
{
    dirty="$(cd "$ROOT" && git status --porcelain -- redirect ingest registry schemas | wc -l)"
    echo "Edge benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(cd "$ROOT" && git rev-parse --short HEAD) ($dirty uncommitted files under redirect/ ingest/ registry/ schemas/)"
    echo "machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -r), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency -s bench/random-codes.lua, $ROUNDS rounds alternating, medians; $LINKS links; $("$NGINX" -v 2>&1)"
    echo
    row "" '%12s %12s %12s %12s %10s' bare nginx edge edge/nginx edge/bare
    row "server CPU µs/request (median)" '%12.1f %12.1f %12.1f %12.2f %10.2f' "$(med bare cpu_server)" "$CPU_NGINX" "$CPU_EDGE" "$CPU_RATIO" "$(calc "$CPU_EDGE / $(med bare cpu_server)")"
    if [[ -n "$BASELINE_EDGE" ]]; then
        row "baseline edge (edge_b0) CPU µs/req" '%12s %12s %12.1f %12.2f   edge/edge_b0 %.2f' "-" "-" "$(med edge_b0 cpu_server)" \
            "$(calc "$(med edge_b0 cpu_server) / $CPU_NGINX")" "$(calc "$CPU_EDGE / $(med edge_b0 cpu_server)")"
        row "baseline edge (edge_b0) req/s" '%12s %12s %12.0f' "-" "-" "$(med edge_b0 rps)"
    fi
    row "broker CPU µs/request (median)" '%12s %12s %12.1f' "-" "-" "$(med edge cpu_broker)"
    row "wrk CPU µs/request (median)" '%12.1f %12.1f %12.1f' "$(med bare cpu_wrk)" "$(med nginx cpu_wrk)" "$(med edge cpu_wrk)"
    row "server CPU µs/request, broker down" '%12.1f %12.1f %12.1f %12.2f' "$(med bare_down cpu_server)" "$(med nginx_down cpu_server)" "$(med edge_down cpu_server)" "$(calc "$(med edge_down cpu_server) / $(med nginx_down cpu_server)")"
    row "req/s (wrk, median)" '%12.0f %12.0f %12.0f %12.2f %10.2f' "$BARE_MAX" "$NGINX_MAX" "$EDGE_MAX" "$NGINX_RATIO" "$RATIO"
    row "p50 ms at max (wrk, median)" '%12.2f %12.2f %12.2f' "$(ms "$(med bare p50_us)")" "$(ms "$(med nginx p50_us)")" "$(ms "$(med edge p50_us)")"
    row "p99 ms at max (wrk, median)" '%12.2f %12.2f %12.2f' "$(ms "$(med bare p99_us)")" "$(ms "$(med nginx p99_us)")" "$(ms "$(med edge p99_us)")"
    row "p50 ms at $HALF req/s (median)" '%12.2f %12.2f %12.2f' "$(ms "$(med rate_bare p50_us)")" "$(ms "$(med rate_nginx p50_us)")" "$(ms "$(med rate_edge p50_us)")"
    row "p99 ms at $HALF req/s (median)" '%12.2f %12.2f %12.2f %12.2f' "$(ms "$(med rate_bare p99_us)")" "$(ms "$P99_NGINX")" "$(ms "$P99_EDGE")" "$P99_RATIO"
    row "p99.9 ms at $HALF req/s" '%12.2f %12.2f %12.2f' "$(ms "$(med rate_bare p999_us)")" "$(ms "$(med rate_nginx p999_us)")" "$(ms "$(med rate_edge p999_us)")"
    row "p99 ms from send at $HALF req/s" '%12.2f %12.2f %12.2f' "$(ms "$(med rate_bare service_p99_us)")" "$(ms "$(med rate_nginx service_p99_us)")" "$(ms "$(med rate_edge service_p99_us)")"
    row "requests due, no conn. free (med.)" '%12s %12s %12s' "$(med rate_bare late)" "$(med rate_nginx late)" "$(med rate_edge late)"
    row "req/s, broker down (median)" '%12.0f %12.0f %12.0f %12.2f %10.2f' "$DOWN_BARE" "$DOWN_NGINX" "$DOWN_EDGE" "$DOWN_NGINX_RATIO" "$DOWN_RATIO"
    row "p99 ms, broker down (median)" '%12.2f %12.2f %12.2f' "$(ms "$(med bare_down p99_us)")" "$(ms "$(med nginx_down p99_us)")" "$(ms "$(med edge_down p99_us)")"
    row "failed requests, broker up / down" '%12s %12s %12s' "$(sum_failed bare)/$(sum_failed bare_down)" "$(sum_failed nginx)/$(sum_failed nginx_down)" "$(sum_failed edge)/$DOWN_FAILED"
    row "other processes' cores (median)" '%12.2f %12.2f %12.2f' "$(med bare cores_other)" "$(med nginx cores_other)" "$(med edge cores_other)"
    row "worker preemptions per 1k requests" '%12.0f %12s %12.0f' "$(med bare preempt_per_1k)" "-" "$(med edge preempt_per_1k)"
    row "spool-writer wake-ups per 1k events" '%12s %12s %12.1f' "-" "-" "$(med edge writer_wakeups_per_1k)"
    echo
    echo "edge CPU µs/request by thread (median, broker up | down):"
    for t in workers spool_writer spool_forwarder librdkafka other_threads; do
        printf '  %-18s %8.1f | %8.1f\n' "$t" "$(med edge "cpu_$t")" "$(med edge_down "cpu_$t")"
    done
    echo
    echo "per run:"
    for p in "${SERVERS[@]}" bare_down nginx_down edge_down; do
        for ((r = 1; r <= ROUNDS; r++)); do
            printf '  %-12s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  failed %s  CPU µs/req: server %4.1f broker %4.1f wrk %4.1f  cores busy %.2f, by others %.2f\n' \
                "$p.$r" "${R[$p.$r.rps]}" "$(ms "${R[$p.$r.p50_us]}")" "$(ms "${R[$p.$r.p99_us]}")" "${R[$p.$r.failed]}" \
                "${R[$p.$r.cpu_server]}" "${R[$p.$r.cpu_broker]}" "${R[$p.$r.cpu_wrk]}" "${R[$p.$r.cores_busy]}" "${R[$p.$r.cores_other]}"
        done
    done
    echo
    echo "clicks recorded:"
    echo "  nginx:       ${R[nginx.logged]} lines with a 302 in its access log (${R[nginx.log_mb]} MB)"
    echo "  broker up:   wrk counted ${R[up.wrk_requests]}, the edge served ${R[up.served]} during the runs; topic ${R[up.count]} = ${R[up.expected]} served in all: ${R[up.exact]} (drained ${R[up.waited_s]} s after the load), dropped ${R[up.dropped]}"
    echo "  fixed rate:  topic ${R[rate.count]} = ${R[rate.expected]} served in all: ${R[rate.exact]}"
    echo "  broker down: the edge served ${R[down.served]}, failed requests $DOWN_FAILED, dropped ${R[down.dropped]}, spool ${R[down.spool_mb]} MB; after the restart topic ${R[down.count]} = ${R[down.expected]}: ${R[down.exact]} (drained ${R[down.waited_s]} s after the broker came back)"
    if [[ -n "${R[big.count]:-}" ]]; then
        echo "  1M links:    topic ${R[big.count]} = ${R[big.expected]}: ${R[big.exact]}"
    fi
    echo
    echo "memory (VmRSS): bare ${R[bare.rss_mb]} MB; edge with $LINKS links ${R[edge.rss_ready_mb]} MB when ready, ${R[edge.rss_end_mb]} MB after the runs (peak ${R[edge.hwm_mb]} MB, spool-backed outage included)"
    if [[ -n "${R[edge_big.rss_mb]:-}" ]]; then
        echo "  edge with $BIG_LINKS links: ready in ${R[edge_big.load_s]} s, ${R[edge_big.rss_mb]} MB when ready (peak ${R[edge_big.hwm_mb]} MB), ${R[edge_big.rss_loaded_mb]} MB after a wrk run at ${R[big.rps]%.*} req/s"
    fi
    echo
    echo "goals (issue 9):"
    echo "  edge CPU/request <= 1.3x nginx's while every click reaches Kafka: $(calcf %.2f "$CPU_RATIO")x ($(calcf %.1f "$CPU_EDGE") vs $(calcf %.1f "$CPU_NGINX") µs; the broker's $(calcf %.1f "$(med edge cpu_broker)") µs not included) -> $(yes_no "$CPU_RATIO <= 1.3 && \"${R[up.exact]}\" == \"yes\"")"
    echo "  broker down >= 0.9x nginx req/s, zero failures, all delivered after: $(calcf %.2f "$DOWN_NGINX_RATIO")x, $DOWN_FAILED failed, ${R[down.exact]} -> $(yes_no "$DOWN_NGINX_RATIO >= 0.9 && $DOWN_FAILED == 0 && \"${R[down.exact]}\" == \"yes\"")"
    echo "  p99 at half max ($HALF req/s) <= 1.5x nginx's: $(ms "$P99_EDGE") vs $(ms "$P99_NGINX") ms = $(calcf %.2f "$P99_RATIO")x -> $(yes_no "$P99_RATIO <= 1.5")"
    echo "  (issue 3's: edge >= 0.85x bare: $(calcf %.2f "$RATIO"); broker down >= 0.8x bare: $(calcf %.2f "$DOWN_RATIO"))"
} >"$SUMMARY"
mkdir -p "$OUT_DIR"
cp "$SUMMARY" "$OUT_DIR/edge-$(date -u +%Y%m%dT%H%M%SZ).txt"
echo
cat "$SUMMARY"
if ((LOST)); then
    log "a click was lost or counted twice (see 'clicks in Kafka')"
    exit 2
fi
