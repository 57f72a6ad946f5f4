#!/usr/bin/env bash
# scripts/fuzz.sh [DURATION]: run every Go fuzz target of appnode for
# DURATION each (default 1m; anything `go test -fuzztime` takes, e.g. 30s,
# 10m, 100000x), one after the other, and print the executions each ran.
# A crash stops the script; the failing input is saved under the target's
# testdata/fuzz directory, where it becomes part of the normal suite. The
# normal suite (`go test ./...`) runs only the seed corpora.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  PATH="/usr/local/go/bin:$PATH"
fi
duration="${1:-1m}"

# package target
targets=(
  "./wire FuzzFrameReader"
  "./wire FuzzDecode"
  "./transport FuzzAcceptorHandshake"
  "./shell FuzzParse"
)

summary=()
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  echo "== $name ($pkg) for $duration"
  log="$(mktemp)"
  start=$(date +%s)
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$duration" "$pkg" 2>&1 | tee "$log"; then
    echo "fuzz.sh: $name found a failure (see above)" >&2
    rm -f "$log"
    exit 1
  fi
  secs=$(( $(date +%s) - start ))
  execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  rm -f "$log"
  summary+=("$(printf '%-24s %-18s %12s execs in %4ss' "$name" "$pkg" "${execs:-?}" "$secs")")
done
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
