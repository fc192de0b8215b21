#!/bin/sh
# Makes sure `redis-server` is on PATH for the Redis layer's tests (tests/redis_store.rs).
#
# The tests start their own redis-server on a free loopback port and kill it by PID;
# they never use a system service, so the package's own service is kept from
# starting (scripts/apt-install-quietly.sh).
set -eu

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

"$(dirname "$0")/apt-install-quietly.sh" redis-server

command -v redis-server >/dev/null 2>&1 || {
    echo "ensure-redis: redis-server still not on PATH after installing" >&2
    exit 1
}
echo "ensure-redis: $(redis-server --version)"
