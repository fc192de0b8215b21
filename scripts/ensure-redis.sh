#!/bin/sh
# Makes sure `redis-server` is on PATH for the Redis layer's tests (tests/redis_store.rs).
#
# The tests start their own redis-server on a free loopback port and kill it by PID;
# they never use a system service. So when this script installs Debian's package it
# keeps the package's own service from starting (policy-rc.d), and stops it if it
# runs anyway, so nothing is left listening on 6379.
set -eu

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-redis: redis-server is missing; run as root, or: apt-get install redis-server" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
created_policy=no
if [ ! -e "$policy" ]; then
    # Exit code 101 = "action forbidden": invoke-rc.d will not start the service.
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=yes
fi
cleanup() {
    if [ "$created_policy" = yes ]; then rm -f "$policy"; fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends redis-server

# In case something started it despite the policy (e.g. a container with systemd).
if command -v service >/dev/null 2>&1; then
    service redis-server stop >/dev/null 2>&1 || true
fi

command -v redis-server >/dev/null 2>&1 || {
    echo "ensure-redis: redis-server still not on PATH after installing" >&2
    exit 1
}
echo "ensure-redis: $(redis-server --version)"
