#!/usr/bin/env bash
# Fails when a public function, method, constant or type in src/ is named nowhere
# else in the workspace (src/, tests/, benches/, loadtest/). rustc never reports
# unused `pub` items of a library crate, so this catches the ones it cannot.
# A name used only by its own definition is dead: delete it, or make it private and
# let rustc's dead-code lint watch it.
set -euo pipefail
cd "$(dirname "$0")/.."

files=$(git ls-files --cached --others --exclude-standard -- 'src/*.rs' 'tests/*.rs' 'benches/*.rs' 'loadtest/*.rs' 2>/dev/null || find src tests benches loadtest -name '*.rs')
dead=0
while IFS=: read -r file line name; do
  # Every word-match of the name across the workspace, minus the definition itself.
  uses=$(grep -ow -- "$name" $files | wc -l)
  if (( uses <= 1 )); then
    echo "dead public item: $name ($file:$line)"
    dead=$((dead + 1))
  fi
done < <(grep -nE '^\s*pub(\((crate|super)\))? (const |unsafe )?(fn|struct|enum|type|const|trait) [A-Za-z_][A-Za-z0-9_]*' src -r \
  | sed -E 's/^([^:]+):([0-9]+):.*pub(\((crate|super)\))? (const |unsafe )?(fn|struct|enum|type|const|trait) ([A-Za-z_][A-Za-z0-9_]*).*/\1:\2:\7/')
if (( dead > 0 )); then
  echo "check-dead-code: $dead public item(s) used nowhere" >&2
  exit 1
fi
echo "check-dead-code: every public item in src/ is used"
