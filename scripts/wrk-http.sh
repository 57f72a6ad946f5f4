#!/usr/bin/env bash
# scripts/wrk-http.sh: measure POST /players/{id}/reward through the HTTP
# front door with wrk, against a 3-node cluster of this build on 127.0.0.1
# that the script starts (and stops) itself.
#
# Players are created first through every node (PLAYERS per node, so their
# primaries are spread over the three), then wrk sends rewards for random
# players of all three sets to node 1: two in three are forwarded to their
# owner, as behind a balancer with no stickiness. A second run sends node
# 1 only its own players (no forwarding).
#
# Knobs (environment): DURATION (10s), CONNECTIONS (64), THREADS (2),
# PLAYERS per node (1000). Needs wrk (apt-get install wrk) and curl.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
PLAYERS="${PLAYERS:-1000}"
command -v wrk >/dev/null || { echo "scripts/wrk-http.sh needs wrk (apt-get install wrk)" >&2; exit 1; }
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  PATH="/usr/local/go/bin:$PATH"
fi
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
(cd "$here" && go build -o "$tmp/appnode" ./cmd/appnode)
bin="$tmp/appnode"
export APPNODE_STATE_DIR="$tmp/state" APPNODE_NAMES_PORT="${APPNODE_NAMES_PORT:-14399}" APPNODE_COOKIE_FILE="$tmp/state/cookie"
unset APPNODE_COOKIE APPNODE_HTTP_TOKEN
host="$(hostname -s)"

"$bin" names-serve --bind 127.0.0.1 --port "$APPNODE_NAMES_PORT" & pids+=($!)
# Nodes that found no name service would start one that outlives them.
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$APPNODE_NAMES_PORT") 2>/dev/null && break
  sleep 0.05
done
mkdir -p "$APPNODE_STATE_DIR"
for i in 1 2 3; do
  # The console reads commands from a FIFO this script holds open until
  # the end (at EOF a node leaves).
  mkfifo "$tmp/in$i"
  exec {fd}<>"$tmp/in$i"
  "$bin" --bind 127.0.0.1 "wrk_node$i" <"$tmp/in$i" >"$tmp/node$i.log" 2>&1 & pids+=($!)
done
url=()
for i in 1 2 3; do
  for _ in $(seq 100); do
    u="$("$bin" rpc "wrk_node$i@$host" http 2>/dev/null || true)"
    [ -n "$u" ] && break
    sleep 0.1
  done
  [ -n "$u" ] || { echo "wrk_node$i did not start; see $tmp/node$i.log" >&2; exit 1; }
  url[$i]="$u"
done
"$bin" rpc "wrk_node1@$host" connect "wrk_node2@$host" >/dev/null
"$bin" rpc "wrk_node1@$host" connect "wrk_node3@$host" >/dev/null
for _ in $(seq 100); do
  curl -sf "${url[1]}/readyz" >/dev/null && curl -sf "${url[2]}/readyz" >/dev/null && curl -sf "${url[3]}/readyz" >/dev/null && break
  sleep 0.1
done

# Create the players through their owners (the entry node owns a new player).
for i in 1 2 3; do
  PLAYERS="$PLAYERS" PREFIX="n${i}p" wrk -t1 -c8 -d2s -s "$here/scripts/wrk-reward.lua" "${url[$i]}" >/dev/null
done

echo "== forwarded 2/3: random players of all three nodes, sent to node 1 ($CONNECTIONS connections, $DURATION)"
cat >"$tmp/mixed.lua" <<LUA
local players = $PLAYERS
local headers = { ["Content-Type"] = "application/json" }
function setup(thread) thread:set("seed", math.random(1, 1e9)) end
function init(args) math.randomseed(seed or os.time()) end
function request()
  local p = "n" .. math.random(3) .. "p" .. math.random(players)
  return wrk.format("POST", "/players/" .. p .. "/reward", headers, '{"points":1}')
end
LUA
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$tmp/mixed.lua" "${url[1]}"

echo "== local: node 1's own players only"
PLAYERS="$PLAYERS" PREFIX="n1p" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$here/scripts/wrk-reward.lua" "${url[1]}"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
