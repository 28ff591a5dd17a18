#!/usr/bin/env bash
# Container health check for the Ricochet services, without curl in the image:
# GET http://127.0.0.1:PORT/PATH over bash's /dev/tcp; healthy (exit 0) on a 200.
#
#   ricochet-healthcheck PORT [PATH]     PATH defaults to /readyz
#
# infra/Dockerfile installs it as /usr/local/bin/ricochet-healthcheck; infra/compose.yaml
# runs it. Exit 1: refused, closed, timed out (4 s, inside compose's 5 s) or any status but 200.
set -euo pipefail
port=${1:?usage: ricochet-healthcheck PORT [PATH]}
path=${2:-/readyz}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port" >&3
status=""
read -r -t 4 _ status _ <&3 || exit 1
[[ $status == 200 ]]
