#!/bin/sh
# Makes sure nginx and caddy (for the deploy/ configs' tests: tests/nginx.rs,
# tests/caddy.rs, tests/browser/tls.test.mjs) and certutil (to make the browser
# trust the test CA) are installed.
#
# The tests run their own nginx on loopback ports and stop it by PID; they never use
# a system service. So when this script installs Debian's packages it keeps their
# services from starting (policy-rc.d), and stops them if they run anyway, so
# nothing is left listening on 80 or 443.
set -eu

missing=""
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
command -v caddy >/dev/null 2>&1 || missing="$missing caddy"
command -v certutil >/dev/null 2>&1 || missing="$missing libnss3-tools"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-nginx: missing:$missing; run as root, or: apt-get install$missing" >&2
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
# shellcheck disable=SC2086 # the list is words on purpose
apt-get install -y -q --no-install-recommends $missing

if command -v service >/dev/null 2>&1; then
    service nginx stop >/dev/null 2>&1 || true
    service caddy stop >/dev/null 2>&1 || true
fi
echo "ensure-nginx: installed$missing"
