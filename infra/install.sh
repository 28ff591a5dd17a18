#!/usr/bin/env bash
# Idempotent installer for Ricochet's local servers on a Debian/Ubuntu machine.
# Called by the test command and by the stack command; safe to run repeatedly, without a TTY,
# and with CI=true. It only installs what is missing:
#
#   - clickhouse-server + clickhouse-client   (apt; Debian bookworm ships 18.16)
#   - nisshi 0.8.1, the Kafka-protocol broker  (cargo install from crates.io, ~10-25 min once)
#     plus its only native build dependency: a C/C++ compiler (build-essential), for the
#     bundled SQLite (libsql-ffi), zstd, lz4 and aws-lc-sys. Checked: cmake and libclang are
#     NOT needed (their crates use pre-generated bindings / the cc builder in this build).
#   - libssl-dev and pkg-config                (apt; the services' librdkafka is built with TLS
#                                               and SASL PLAIN/SCRAM against Debian's OpenSSL)
#   - openssl, the command                     (apt; tests/tests/tls.rs makes its certificates)
#   - zookeeper                                (apt; for the replicated-cluster test, tests/tests/cluster.rs,
#                                               run by infra/zookeeper/run.sh; needs Java, which it pulls in)
#   - a Python venv with infra/requirements-test.txt (pip, PyPI), in
#     ${XDG_CACHE_HOME:-$HOME/.cache}/ricochet/venv; redone when that file changes
#     (chdb for tests/tests/current_clickhouse.rs). Needs python3 with venv (apt python3-venv).
#   - wrk and nginx-light, only with --bench   (apt; nginx is bench/edge.sh's peer, never
#                                               started as a service: policy-rc.d below)
#   - chromium, only with --browser            (apt; Debian's package, for the dashboard's
#                                               headless browser test: Playwright's own
#                                               browser download is not used)
#
# Usage: infra/install.sh [--stack] [--bench] [--browser] [--build-deps]
#   --stack: only what infra/stack.sh runs (ClickHouse and the broker): no zookeeper, no test venv
#   --build-deps: only what compiling the workspace needs (libssl-dev, pkg-config), e.g. before
#                 .ci/run's clippy, which builds before the test command installs the rest
# Env:   RICOCHET_INSTALL_LOG_DIR  where the nisshi build log goes (default ${TMPDIR:-/tmp})
set -euo pipefail

NISSHI_VERSION=0.8.1
want_bench=0
want_browser=0
want_tests=1
only_build_deps=0

for arg in "$@"; do
    case "$arg" in
        --stack) want_tests=0 ;;
        --bench) want_bench=1 ;;
        --browser) want_browser=1 ;;
        --build-deps) only_build_deps=1 ;;
        -h|--help)
            sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "install.sh: unknown argument: $arg (accepted: --stack, --bench, --browser, --build-deps)" >&2
            exit 2
            ;;
    esac
done

export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR=never

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

# apt needs root; fall back to non-interactive sudo so a CI user with passwordless sudo works.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@" || die "'$*' needs root; run install.sh as root or configure passwordless sudo"
    else
        die "'$*' needs root and sudo is not available"
    fi
}

# The clickhouse-server postinst runs `invoke-rc.d clickhouse-server start || exit 1`. Without
# an init system (containers, CI) that start can fail and leave the package half-configured,
# and on a real machine it would start a system server on 8123/9000 that we never use.
# A temporary policy-rc.d (exit 101 = "action forbidden") stops the postinst from starting it.
# Only created when none exists, and always removed again on exit.
policy_rc_d=/usr/sbin/policy-rc.d
created_policy_rc_d=0
cargo_pid=""
cleanup() {
    # Don't leave an orphaned `cargo install` running if we are interrupted.
    if [[ -n $cargo_pid ]] && kill -0 "$cargo_pid" 2>/dev/null; then
        kill "$cargo_pid" 2>/dev/null || true
    fi
    if [[ $created_policy_rc_d -eq 1 ]]; then
        as_root rm -f "$policy_rc_d" || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these by hand: $*"
    if [[ $apt_updated -eq 0 ]]; then
        say "apt-get update"
        as_root apt-get update -q >/dev/null
        apt_updated=1
    fi
    if [[ ! -e $policy_rc_d ]]; then
        as_root sh -c "printf '#!/bin/sh\n# temporary, from ricochet infra/install.sh\nexit 101\n' > $policy_rc_d && chmod 755 $policy_rc_d"
        created_policy_rc_d=1
    fi
    say "apt-get install $*"
    as_root apt-get install -y -q --no-install-recommends "$@" >/dev/null
    if [[ $created_policy_rc_d -eq 1 ]]; then
        as_root rm -f "$policy_rc_d"
        created_policy_rc_d=0
    fi
}

deb_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

# ---------------------------------------------------------------- ClickHouse
install_clickhouse() {
    if [[ -x /usr/sbin/clickhouse-server && -x /usr/bin/clickhouse-client ]]; then
        say "clickhouse-server $(deb_version clickhouse-server): present"
        return
    fi
    say "clickhouse-server: missing, installing from apt"
    apt_install clickhouse-server clickhouse-client
    [[ -x /usr/sbin/clickhouse-server ]] || die "clickhouse-server still missing after apt-get install"
    # We never use the system service (tests run private servers via infra/clickhouse/run.sh).
    say "clickhouse-server $(deb_version clickhouse-server): installed"
}

# ---------------------------------------------------------------- nisshi
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
nisshi_bin="$cargo_home/bin/nisshi"

nisshi_ok() {
    [[ -x $nisshi_bin ]] && [[ "$("$nisshi_bin" --version 2>/dev/null)" == "nisshi $NISSHI_VERSION" ]]
}

# Native tools that `cargo install nisshi` needs (see header).
install_nisshi_build_deps() {
    if ! command -v cc >/dev/null 2>&1 || ! command -v c++ >/dev/null 2>&1; then
        say "nisshi build dependency missing: C/C++ compiler"
        apt_install build-essential
    fi
}

install_nisshi() {
    if nisshi_ok; then
        say "nisshi $NISSHI_VERSION: present ($nisshi_bin)"
        return
    fi

    command -v cargo >/dev/null 2>&1 || [[ -x $cargo_home/bin/cargo ]] ||
        die "cargo not found; install Rust with rustup (https://rustup.rs) and re-run"
    local cargo
    cargo="$(command -v cargo || echo "$cargo_home/bin/cargo")"

    # Two test runs starting at once must not both build nisshi; the second waits here and
    # then finds the binary already installed.
    mkdir -p "$cargo_home"
    exec 9>"$cargo_home/.ricochet-nisshi-install.lock"
    if ! flock -n 9; then
        say "another install.sh is building nisshi; waiting for it to finish"
        flock 9
    fi
    if nisshi_ok; then
        say "nisshi $NISSHI_VERSION: present ($nisshi_bin)"
        return
    fi

    if [[ -x $nisshi_bin ]]; then
        say "nisshi: found $("$nisshi_bin" --version 2>/dev/null || echo 'unknown version'), need $NISSHI_VERSION"
    else
        say "nisshi: missing"
    fi

    install_nisshi_build_deps

    local log_dir="${RICOCHET_INSTALL_LOG_DIR:-${TMPDIR:-/tmp}}"
    mkdir -p "$log_dir"
    local log="$log_dir/ricochet-nisshi-$NISSHI_VERSION-install.log"
    say "building the Kafka broker nisshi $NISSHI_VERSION from crates.io; this happens once per machine and takes 10-25 minutes on 2 cores"
    say "build log: $log"

    # --locked: the release's Cargo.lock. --ignore-rust-version: nisshi declares a newer
    # rust-version than some toolchains we meet; it builds fine with them.
    # Only the libsql feature (the sqlite:// storage the stack and the tests use): the default
    # set adds the postgres and dynostore (object store) backends, which roughly double the
    # first build. RICOCHET_NISSHI_FEATURES=libsql,postgres brings PostgreSQL storage back.
    # CARGO_TARGET_DIR is dropped so the build uses its own temp dir instead of (and without
    # locking) the workspace's target dir when the caller exported one.
    env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR \
        "$cargo" install "nisshi@$NISSHI_VERSION" --locked --ignore-rust-version \
        --no-default-features --features "${RICOCHET_NISSHI_FEATURES:-libsql}" >"$log" 2>&1 &
    cargo_pid=$!
    local pid=$cargo_pid start=$SECONDS next=60
    # A progress line every ~60 s so a user (or a CI log watcher) can see it hasn't hung.
    while kill -0 "$pid" 2>/dev/null; do
        sleep 5
        if (( SECONDS - start >= next )); then
            local last
            last="$(grep -E '^ *(Compiling|Downloaded|Installing|Finished)' "$log" 2>/dev/null | tail -n 1 | sed 's/^ *//' || true)"
            say "still building nisshi: $(( (SECONDS - start) / 60 )) min elapsed${last:+ (${last})}"
            next=$((next + 60))
        fi
    done
    local rc=0
    wait "$pid" || rc=$?
    cargo_pid=""
    if [[ $rc -ne 0 ]]; then
        echo "---- last 40 lines of $log ----" >&2
        tail -n 40 "$log" >&2 || true
        die "cargo install nisshi@$NISSHI_VERSION failed (exit $rc); full log: $log"
    fi
    nisshi_ok || die "nisshi built but '$nisshi_bin --version' is not 'nisshi $NISSHI_VERSION'"
    say "nisshi $NISSHI_VERSION: installed ($nisshi_bin) in $(( (SECONDS - start) / 60 )) min"
}

# ---------------------------------------------------------------- OpenSSL
# rdkafka's `ssl` feature builds librdkafka against the system's OpenSSL (found with
# pkg-config); the tests make their CA and server certificates with the openssl command.
install_openssl() {
    local missing=()
    [[ -n "$(deb_version libssl-dev)" ]] || missing+=(libssl-dev)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "libssl-dev $(deb_version libssl-dev), pkg-config, openssl: present"
        return
    fi
    say "${missing[*]}: missing, installing from apt"
    apt_install "${missing[@]}"
}

# ---------------------------------------------------------------- ZooKeeper
# Only the jar is used (infra/zookeeper/run.sh runs private servers); the package's own
# service is never started (policy-rc.d, as for ClickHouse).
install_zookeeper() {
    if [[ -r /usr/share/java/zookeeper.jar ]] && command -v java >/dev/null 2>&1; then
        say "zookeeper $(deb_version zookeeper): present"
        return
    fi
    say "zookeeper: missing, installing from apt"
    apt_install zookeeper
    [[ -r /usr/share/java/zookeeper.jar ]] || die "/usr/share/java/zookeeper.jar still missing after apt-get install zookeeper"
    say "zookeeper $(deb_version zookeeper): installed"
}

# ---------------------------------------------------------------- test venv
# One venv for every Python tool the tests use, pinned in infra/requirements-test.txt. A stamp
# (the file's sha256) makes a second run a no-op and a changed file a reinstall.
install_test_venv() {
    local here requirements venv stamp want
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    requirements="$here/requirements-test.txt"
    venv="${XDG_CACHE_HOME:-$HOME/.cache}/ricochet/venv"
    stamp="$venv/.requirements.sha256"
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [[ -x $venv/bin/python && -r $stamp && "$(cat "$stamp")" == "$want" ]]; then
        say "test venv: present ($venv)"
        return
    fi
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    say "test venv: installing $requirements into $venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" ||
        die "pip install -r $requirements failed"
    printf '%s\n' "$want" > "$stamp"
    say "test venv: installed ($venv)"
}

# ---------------------------------------------------------------- wrk
install_wrk() {
    if command -v wrk >/dev/null 2>&1; then
        say "wrk $(deb_version wrk): present"
        return
    fi
    if [[ $want_bench -eq 0 ]]; then
        say "wrk: missing (only needed for benchmarks; pass --bench to install)"
        return
    fi
    apt_install wrk
    say "wrk $(deb_version wrk): installed"
}

# ---------------------------------------------------------------- nginx
# bench/edge.sh runs nginx (a `map` of the codes, access log to disk) beside the edge.
install_nginx() {
    if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
        say "nginx $(deb_version nginx-light): present"
        return
    fi
    if [[ $want_bench -eq 0 ]]; then
        say "nginx: missing (only needed for benchmarks; pass --bench to install)"
        return
    fi
    apt_install nginx-light
    say "nginx $(deb_version nginx-light): installed"
}

# ---------------------------------------------------------------- chromium
# tests/tests/dashboard.rs runs /usr/bin/chromium headless against the dashboard page.
install_chromium() {
    if [[ -x /usr/bin/chromium ]]; then
        say "chromium $(deb_version chromium): present"
        return
    fi
    if [[ $want_browser -eq 0 ]]; then
        say "chromium: missing (only needed for the dashboard browser test; pass --browser to install)"
        return
    fi
    apt_install chromium
    [[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium still missing after apt-get install chromium"
    say "chromium $(deb_version chromium): installed"
}

install_openssl
if [[ $only_build_deps == 1 ]]; then
    exit 0
fi
install_clickhouse
install_nisshi
if [[ $want_tests == 1 ]]; then
    install_zookeeper
    install_test_venv
fi
install_wrk
install_nginx
install_chromium
