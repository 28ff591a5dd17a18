#!/usr/bin/env bash
# Runs every test of the project: the README's test command, and what .ci/run calls.
#
# Installs what is missing (ClickHouse, the nisshi broker, cargo-nextest,
# schemathesis; cached, so a second run skips them), builds the service binaries the integration
# tests start, then runs unit, property and integration tests. Integration
# tests start their own servers on free ports in temporary directories and
# stop them, even on failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

infra/install.sh --browser
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "test.sh: installing cargo-nextest (once per machine)"
    cargo install cargo-nextest --locked
fi

# schemathesis, for the contract test (tests/tests/contract.rs): pinned, in a
# venv of its own, installed once and reused.
SCHEMATHESIS_VERSION=4.32.5
venv="${XDG_CACHE_HOME:-$HOME/.cache}/ricochet/venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "test.sh: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    fi
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
export RICOCHET_SCHEMATHESIS="$venv/bin/schemathesis"

# The integration tests spawn these binaries as real processes.
cargo build --workspace --bins
# One test at a time per core: each integration test runs its own ClickHouse
# and broker, and the machine has 2 cores.
exec cargo nextest run --workspace --no-fail-fast --test-threads 2 "$@"
