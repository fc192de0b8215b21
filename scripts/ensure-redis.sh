#!/bin/sh
# Makes sure `redis-server` and `redis-sentinel` are on PATH for the Redis layer's
# tests (tests/redis_store.rs, tests/redis_sentinel.rs).
#
# The tests start their own redis-server and redis-sentinel processes on free loopback
# ports and kill them by PID; they never use a system service, so the packages' own
# services are kept from starting (scripts/apt-install-quietly.sh).
set -eu

missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v redis-sentinel >/dev/null 2>&1 || missing="$missing redis-sentinel"
if [ -z "$missing" ]; then
    exit 0
fi

# shellcheck disable=SC2086 # one word per package
"$(dirname "$0")/apt-install-quietly.sh" $missing

for tool in redis-server redis-sentinel; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "ensure-redis: $tool still not on PATH after installing" >&2
        exit 1
    }
done
echo "ensure-redis: $(redis-server --version)"
