#!/usr/bin/env bash
# Runs the browser tests (headless Chromium, Debian's package, drives the page
# in www/) and the client-library tests (tests/client/, the library in Node),
# all against the real natter binary. Installs what is missing first.
#   NATTER_BIN  the server binary (default: target/release/natter, from the repo root)
#   arguments: test files to run instead of all (tests/browser/*.test.mjs tests/client/*.test.mjs)
set -euo pipefail

# Test files given as arguments are relative to where run.sh was called from.
args=()
for arg in "$@"; do
  if [[ -e "$arg" ]]; then args+=("$(realpath "$arg")"); else args+=("$arg"); fi
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

export NATTER_BIN="$(realpath -m "${NATTER_BIN:-target/release/natter}")"
if [[ ! -x "$NATTER_BIN" ]]; then
  echo "run.sh: natter binary not found at $NATTER_BIN (build it with: cargo build --release)" >&2
  exit 2
fi

# The emoji font: reactions, the attach button and the picker are emoji, and a
# screenshot without it shows empty boxes where a user's desktop shows pictures.
if [[ ! -x /usr/bin/chromium || ! -d /usr/share/fonts/truetype/noto ]]; then
  echo "run.sh: installing chromium and its emoji font from Debian" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null
fi

if [[ ! -d "$here/node_modules/playwright-core" ]]; then
  echo "run.sh: installing playwright-core (npm ci)" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
client_tests="$root/tests/client"
if [[ ! -d "$client_tests/node_modules/ws" || ! -d "$client_tests/node_modules/typescript" || ! -d "$client_tests/node_modules/@types/node" ]]; then
  echo "run.sh: installing ws and typescript for the client-library tests (npm ci)" >&2
  (cd "$client_tests" && npm ci --no-audit --no-fund --loglevel=error)
fi

mkdir -p "$root/artifacts/screenshots"
# From tests/client, so the library (which looks for ws from the current
# directory too) finds the ws installed there. One run, one summary.
cd "$client_tests"
if [[ ${#args[@]} -eq 0 ]]; then args=("$here"/*.test.mjs "$client_tests"/*.test.mjs); fi
exec node --test --test-concurrency=1 "${args[@]}"
