#!/bin/sh
# apt-install-quietly.sh PACKAGE...: installs Debian packages for the tests without
# letting their services start (policy-rc.d), and stops them if they run anyway, so
# nothing is left listening: the tests start their own servers and stop them by PID.
# Used by ensure-redis.sh and ensure-nginx.sh. Needs root.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "apt-install-quietly: run as root, or: apt-get install $*" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
created_policy=no
if [ ! -e "$policy" ]; then
    # Exit code 101 = "action forbidden": invoke-rc.d will not start the services.
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
apt-get install -y -q --no-install-recommends "$@"

# In case something started them despite the policy (e.g. a container with systemd).
if command -v service >/dev/null 2>&1; then
    for pkg in "$@"; do
        service "$pkg" stop >/dev/null 2>&1 || true
    done
fi
