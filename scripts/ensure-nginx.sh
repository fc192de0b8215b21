#!/bin/sh
# Makes sure nginx and caddy (for the deploy/ configs' tests: tests/nginx.rs,
# tests/caddy.rs, tests/browser/tls.test.mjs) and certutil (to make the browser trust
# the test CA) are installed.
#
# The tests run their own nginx on loopback ports and stop it by PID; they never use
# a system service, so the packages' services are kept from starting
# (scripts/apt-install-quietly.sh) and nothing is left listening on 80 or 443.
set -eu

missing=""
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
command -v caddy >/dev/null 2>&1 || missing="$missing caddy"
command -v certutil >/dev/null 2>&1 || missing="$missing libnss3-tools"
[ -z "$missing" ] && exit 0

# shellcheck disable=SC2086 # the list is words on purpose
"$(dirname "$0")/apt-install-quietly.sh" $missing
echo "ensure-nginx: installed$missing"
