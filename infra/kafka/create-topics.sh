#!/usr/bin/env bash
# Create Ricochet's topics on a running nisshi broker (the no-Docker twin of compose.yaml's
# kafka-init). Idempotent: existing topics are left alone (nisshi's `topic create` exits 1
# for an existing topic, so we check `topic list` first). Partition counts and configs of
# existing topics are NOT changed.
#
#   infra/kafka/create-topics.sh PORT
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PORT" >&2
    exit 2
fi
broker="tcp://127.0.0.1:$1"

nisshi="${NISSHI_BIN:-}"
if [[ -z "$nisshi" ]]; then
    if [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/nisshi" ]]; then
        nisshi="${CARGO_HOME:-$HOME/.cargo}/bin/nisshi"
    else
        nisshi="$(command -v nisshi || true)"
    fi
fi
[[ -n "$nisshi" && -x "$nisshi" ]] || { echo "$0: nisshi not found; run infra/install.sh" >&2; exit 127; }

# `topic list` prints the Metadata response as JSON, one object per topic with "name":"...".
existing="$("$nisshi" topic list --broker "$broker")"

create() {
    local name="$1"
    shift
    if grep -qF "\"name\":\"$name\"" <<<"$existing"; then
        echo "topic $name: exists"
    else
        "$nisshi" topic create "$name" --broker "$broker" --silent "$@"
        echo "topic $name: created ($*)"
    fi
}

# Keep in sync with compose.yaml (kafka-init).
create clicks --partitions 12
create links --partitions 3 --config cleanup.policy=compact
create clients --partitions 3 --config cleanup.policy=compact
create clicks-dlq --partitions 3
