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

# schemathesis, for the contract test (tests/tests/contract.rs): pinned in
# infra/requirements-test.txt, in the test venv that install.sh keeps.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/ricochet/venv"
export RICOCHET_SCHEMATHESIS="$venv/bin/schemathesis"

# The integration tests spawn these binaries as real processes.
cargo build --workspace --bins
# One test at a time per core: each integration test runs its own ClickHouse
# and broker, and the machine has 2 cores.
exec cargo nextest run --workspace --no-fail-fast --test-threads 2 "$@"
