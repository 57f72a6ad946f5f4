#!/usr/bin/env bash
# scripts/bench.sh [OUTPUT]: run the benchmarks of issue 4's targets table
# with `appnode bench` and write them, in issue 4's format, to OUTPUT
# (default bin/bench-issue4.md: BENCHMARKS.md is kept by hand, with the
# peers' rows from ../shared/peers/peers.sh beside appnode's).
#
# Each figure comes from one `appnode bench` run against 3 freshly spawned
# nodes on 127.0.0.1; runs that compare with the floor measure it in the
# same run. Nothing else should load the machine meanwhile: the load
# average at the start is recorded in the output.
#
# Knobs (environment): DURATION per measured phase (10s), POPULATE players
# for the memory figure (1000000), KILL_AFTER for the stall figure (5s),
# SETTLE wait for memory to settle (30s). Needs jq.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/bin/bench-issue4.md}"
DURATION="${DURATION:-10s}"
POPULATE="${POPULATE:-1000000}"
KILL_AFTER="${KILL_AFTER:-5s}"
SETTLE="${SETTLE:-30s}"

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  PATH="/usr/local/go/bin:$PATH"
fi
command -v jq >/dev/null || { echo "scripts/bench.sh needs jq (e.g. apt-get install jq)" >&2; exit 1; }
(cd "$here" && go build -o "$here/bin/appnode" ./cmd/appnode)
bin="$here/bin/appnode"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

load_before="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)"
started="$(date -u '+%Y-%m-%d %H:%M UTC')"
commands=()
run() { # run NAME ARGS...: one bench run, its JSON kept as NAME.json
  local name="$1"; shift
  commands+=("appnode bench $*")
  echo "+ appnode bench $* --json" >&2
  "$bin" bench "$@" --json >"$tmp/$name.json"
}

run owner --spawn 3 --floor --clients 1 --players 1000 --entry owner --duration "$DURATION"
run other --spawn 3 --floor --clients 1 --players 1000 --entry other --duration "$DURATION"
run any --spawn 3 --floor --clients 64 --players 10000 --entry any --duration "$DURATION"
run memory --spawn 3 --populate "$POPULATE" --settle "$SETTLE"
run kill --spawn 3 --clients 64 --players 10000 --entry any --duration "$DURATION" --kill-after "$KILL_AFTER"

j() { jq -r "$2" "$tmp/$1.json"; } # j RUN FILTER

# Figures, formatted.
us='def us: if . >= 1000 then "\(. / 1000 * 100 | round / 100) ms" else "\(. | round) µs" end;'
r2='def r2: (. * 100 | round / 100 | tostring) + "x";'
ok() { if [ "$(jq -n "$1")" = "true" ]; then echo "yes"; else echo "**no**"; fi; }

owner_p50="$(j owner "$us .p50_us | us")"
owner_floor="$(j owner "$us .floor.p50_us | us")"
owner_ratio="$(j owner "$r2 .ratio_to_floor.p50 | r2")"
owner_ok="$(ok "$(j owner '.ratio_to_floor.p50 <= 1.3')")"

other_p50="$(j other "$us .p50_us | us")"
other_floor="$(j other "$us .floor.p50_us | us") (one hop: $(j other "$us .floor.hop.p50_us | us"))"
other_ratio="$(j other "$r2 .ratio_to_floor.p50 | r2") ((p50 - one hop) / floor: $(j other "$r2 .ratio_to_floor.p50_minus_hop | r2"))"
other_ok="$(ok "$(j other '.ratio_to_floor.p50_minus_hop <= 1.3')")"

any_tp="$(j any '.throughput | round') rewards/s"
any_floor="$(j any '.floor.throughput | round') requests/s"
any_ratio="$(j any "$r2 .ratio_to_floor.throughput | r2")"
any_ok="$(ok "$(j any '.ratio_to_floor.throughput >= 1')")"

mem_bytes="$(j memory '.populate.bytes_per_copy | round') bytes"
mem_players="$(j memory '.populate.players')"
mem_ok="$(ok "$(j memory '.populate.bytes_per_copy <= 300')")"

kill_stall="$(j kill "$us .kill.longest_stall_ms * 1000 | us")"
kill_ok="$(ok "$(j kill '.kill.longest_stall_ms <= 1000')")"
kill_back="$(j kill "$us if .kill.recovery_ms == null then \"was not back to 80% of its pre-kill rate by the end of the run\" else \"was back to 80% of its pre-kill rate \\(.kill.recovery_ms * 1000 | us) after the kill\" end")"

{
  cat <<EOF
# Benchmarks

Made by \`scripts/bench.sh\` on $started; re-run it to refresh this file.
Every figure is from one \`appnode bench\` run against 3 nodes it spawned
on 127.0.0.1 (the client, the nodes and the floor servers all share this
machine). The floor is the same load against two processes of the same
binary that only forward each request over appnode's framing and transport
and wait for the ack: the least any synchronously replicated write can
cost here. It is measured in the same run, with the same clients.

## Machine

- CPUs: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
- Memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
- Kernel: $(uname -sr); $(go version | cut -d' ' -f3-)
- Load average before the run: $load_before

## Targets

| figure | target | appnode | floor | ratio to floor | met |
|---|---|---|---|---|---|
| one client, entry = owner: reward latency p50 | at most 1.3x the floor's p50 | $owner_p50 | $owner_floor | $owner_ratio | $owner_ok |
| one client, entry = other (forwarded): p50 | at most 1.3x the floor's p50 plus one hop | $other_p50 | $other_floor | $other_ratio | $other_ok |
| 64 clients, 10,000 players, entry = any: rewards/s | at least the floor's throughput with 64 in flight | $any_tp | $any_floor | $any_ratio | $any_ok |
| memory, $mem_players players across 3 nodes | at most 300 bytes per player copy at rest | $mem_bytes per copy | - | - | $mem_ok |
| stall after kill -9 of a node, under load (64 clients) | at most 1 s for any player | $kill_stall | - | - | $kill_ok |

In the kill run, throughput $kill_back
(the pre-kill rate was $(j kill '.kill.pre_kill_throughput | round') rewards/s; the longest stall of a player the
killed node owned was $(j kill "$us .kill.its_players_stall_ms * 1000 | us")).

## Every figure

| run | rewards/s | p50 | p90 | p99 | p99.9 | max | errors | floor rewards/s | floor p50 | floor p99 |
|---|---|---|---|---|---|---|---|---|---|---|
EOF
  for name in owner other any kill; do
    jq -r "$us"' def f: if . == null then "-" else us end;
      "| \(.clients) client(s), entry \(.entry)\(if .kill then ", kill -9 at \(.kill.at_s | round) s" else "" end) | \(.throughput | round) | \(.p50_us | us) | \(.p90_us | us) | \(.p99_us | us) | \(.p999_us | us) | \(.max_us | us) | \(.errors) | \(if .floor then (.floor.throughput | round | tostring) else "-" end) | \(.floor.p50_us | f) | \(.floor.p99_us | f) |"' "$tmp/$name.json"
  done
  cat <<EOF

Memory ($mem_players players, $(j memory '.populate.seconds | round') s to create them,
$(j memory '.throughput | round') rewards/s with 256 in flight): resident memory
per node before and after, read from /proc once it stopped changing.

| node | RSS before | RSS after |
|---|---|---|
EOF
  jq -r '.populate.nodes[] | "| \(.name) | \(.rss_before / 1048576 * 10 | round / 10) MiB | \(.rss_after / 1048576 * 10 | round / 10) MiB |"' "$tmp/memory.json"
  cat <<EOF

CPU used during each load (cores; the machine has $(nproc)):

| run | phase | processes |
|---|---|---|
EOF
  for name in owner other any kill; do
    jq -r '"| \(.clients) client(s), entry \(.entry)\(if .kill then ", kill -9" else "" end) | appnode | \(.cpu_cores // {} | to_entries | map(select(.value >= 0.005) | "\(.key) \(.value * 100 | round / 100)") | join(", ")) |"' "$tmp/$name.json"
    jq -r 'select(.floor) | "| \(.clients) client(s), entry \(.entry) | floor | \(.floor.cpu_cores // {} | to_entries | map(select(.value >= 0.005) | "\(.key) \(.value * 100 | round / 100)") | join(", ")) |"' "$tmp/$name.json"
  done
  cat <<EOF

## Commands

\`\`\`sh
EOF
  printf '%s\n' "${commands[@]}"
  cat <<EOF
\`\`\`

Each with \`--json\`; \`scripts/bench.sh\` turns their output into this file.
Without \`--json\`, \`appnode bench\` prints the same figures as tables.
To see where a node's time goes, add \`--profile DIR\` (CPU and heap
profiles of every node, for \`go tool pprof\`).
EOF
} >"$out"
echo "wrote $out" >&2
