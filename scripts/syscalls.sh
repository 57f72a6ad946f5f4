#!/usr/bin/env bash
# scripts/syscalls.sh [BENCH ARGS...]: how many read and write syscalls a
# reward costs the nodes, against what a request costs the floor servers.
#
# Runs `appnode bench --spawn 3 --floor --duration 8s` with the arguments
# given (default: 64 clients, 10,000 players, entry any), samples syscr and
# syscw of /proc/PID/io of the three nodes over 4 s in the middle of the
# appnode phase, and of the two floor servers in the middle of the floor
# phase, and divides by each phase's rate. Linux only. This is the
# measurement behind the README's account of the throughput gap: frames
# per write, not frames, are what the nodes pay for.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  PATH="/usr/local/go/bin:$PATH"
fi
(cd "$here" && go build -o "$here/bin/appnode" ./cmd/appnode)
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--clients 64 --players 10000 --entry any)
out="$(mktemp)"
bench=
trap '[ -z "$bench" ] || kill "$bench" 2>/dev/null; rm -f "$out"' EXIT

"$here/bin/appnode" bench --spawn 3 --floor --duration 8s "${args[@]}" >"$out" 2>&1 &
bench=$!

# sample PATTERN MARKER: waits for MARKER in the bench's output, then
# prints the syscalls (reads, writes) of the processes matching PATTERN
# over 4 s, 2 s into the phase.
sample() {
  until grep -q "$2" "$out"; do
    kill -0 "$bench" 2>/dev/null || { cat "$out" >&2; exit 1; }
    sleep 0.1
  done
  sleep 2
  local pids
  pids="$(pgrep -f "$1" | tr '\n' ' ' || true)"
  [ -n "$pids" ] || { echo "scripts/syscalls.sh: no process matches $1" >&2; exit 1; }
  count() { for p in $pids; do awk '/^syscr|^syscw/ {printf "%s ", $2}' "/proc/$p/io"; done; }
  local a b
  a="$(count)"
  sleep 4
  b="$(count)"
  awk -v a="$a" -v b="$b" 'BEGIN {
    n = split(a, x, " "); split(b, y, " ")
    for (i = 1; i <= n; i += 2) { r += y[i] - x[i]; w += y[i+1] - x[i+1] }
    printf "%d %d\n", r / 4, w / 4
  }'
}

app="$(sample 'appnode-bench-.* bench[0-9]+@' 'load: ')"
floor="$(sample 'serve-floor' 'floor: ')"
read -r app_r app_w <<<"$app"
read -r floor_r floor_w <<<"$floor"
wait "$bench"
bench=
app_rate="$(awk '$1 == "appnode" && $2 ~ /^[0-9]+$/ {print $3; exit}' "$out")"
floor_rate="$(awk '$1 == "floor" && $2 == "(forward+ack)" {print $4; exit}' "$out")"
grep -E '^(appnode|floor|appnode / floor) ' "$out" | grep -v '^appnode bench:' || true
awk -v r="$app_r" -v w="$app_w" -v n="$app_rate" -v fr="$floor_r" -v fw="$floor_w" -v fn="$floor_rate" 'BEGIN {
  printf "syscalls per reward, the 3 nodes:          %.2f reads, %.2f writes (%d rewards/s)\n", r / n, w / n, n
  printf "syscalls per request, the 2 floor servers: %.2f reads, %.2f writes (%d requests/s)\n", fr / fn, fw / fn, fn
}'
