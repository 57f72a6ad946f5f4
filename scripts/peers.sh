#!/bin/bash
# scripts/peers.sh [OUTDIR]: appnode beside the bare wire and its peers, in
# one run on this machine: a copy of ../shared/peers/peers.sh that waits for
# the bare wire's backup to listen before starting the primary that dials
# it, and adds the HTTP front door's rows (the bench's Go client and
# scripts/wrk-http.sh). PEERS_DUR sets the seconds per phase (10); the
# peers come from PEERS_DIR (../shared/peers); PEERS_APPNODE_GODEBUG
# (e.g. schedtrace=0) sets GODEBUG for appnode's rows. Run from the project's
# root. Needs erlang-base, erlang-dev, redis-server and wrk (Debian
# packages). Every server it starts, it stops.
#   bare wire  msgpack over TCP: client -> A -> B (ack) -> A -> client
#   appnode    `appnode bench --spawn 3`, entry owner and any, and its floor;
#              and `--spawn 2`, entry owner: the bare wire's links, with the
#              players spread over both nodes and (--owners 1) all at the
#              first, the bare wire's own shape
#   bare mesh  the bench's bare wire in the cluster's shape (3 servers, each
#              reward passed to its player's owner, forwarded to one of the
#              others), entry owner and any
#   erlang     the original design on Erlang/OTP (3 nodes, rpc from a client)
#   redis      Redis 7 primary + replica, INCRBY then WAIT 1 0
set -u
peers=${PEERS_DIR:-$(pwd)/../shared/peers}
out=${1:-${TMPDIR:-/tmp}/appnode-peers}; mkdir -p "$out"
export PEERS_WORK="$out/work"
D=${PEERS_DUR:-10}
go build -o "$out/appnode" ./cmd/appnode || exit 1
(cd "$peers/wire" && go build -o "$out/rediswait" ./cmd/rediswait && go build -o "$out/mpbench" ./cmd/mpbench) || exit 1
"$peers/erlang/build.sh" || exit 1
echo "system,callers,ops_per_s,p50_us,p99_us" >"$out/peers.csv"
up() { for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# The bare wire as shipped, then with the Go runtime setting appnode's
# nodes and bench run with (cmd/appnode/sysmon.go), to tell the code's cost
# from the setting's.
for godebug in "" schedtrace=2147483647; do
  export GODEBUG=$godebug
  name="bare wire 2 hops"; [ -n "$godebug" ] && name="bare wire 2 hops GODEBUG=$godebug"
  "$out/mpbench" server -listen 127.0.0.1:9192 >/dev/null 2>&1 & m1=$!
  up 9192
  "$out/mpbench" server -listen 127.0.0.1:9193 -backup 127.0.0.1:9192 >/dev/null 2>&1 & m2=$!
  up 9193
  "$out/mpbench" client -addr 127.0.0.1:9193 -mode seq -conns 1 -dur ${D}s -label x | awk -F, -v n="$name" '{printf "%s,1,%.0f,%.0f,%.0f\n", n, $3, $4, $5}' >>"$out/peers.csv"
  "$out/mpbench" client -addr 127.0.0.1:9193 -mode pipe -inflight 64 -dur ${D}s -label x | awk -F, -v n="$name" '{printf "%s,64,%.0f,%.0f,%.0f\n", n, $3, $4, $5}' >>"$out/peers.csv"
  kill $m1 $m2 2>/dev/null; wait $m1 $m2 2>/dev/null
done
# PEERS_APPNODE_GODEBUG=schedtrace=0 runs the rest with Go's default
# instead (appnode keeps any schedtrace it is given): the "before" of that
# setting, with every peer in the same run. It is Go's default for the
# other Go programs here.
if [ -n "${PEERS_APPNODE_GODEBUG:-}" ]; then export GODEBUG=$PEERS_APPNODE_GODEBUG; else unset GODEBUG; fi

# row SYSTEM CALLERS JSON [KEY]: a CSV row from an `appnode bench --json`
# report, or from its KEY part (floor, bare_mesh).
row() {
  python3 - "$@" >>"$out/peers.csv" <<'PY'
import json, sys
name, callers, path = sys.argv[1:4]
r = json.load(open(path))
if len(sys.argv) > 4:
    r = r[sys.argv[4]]
print(f"{name},{callers},{r['throughput']:.0f},{r['p50_us']:.0f},{r['p99_us']:.0f}")
PY
}
HOME=$out "$out/appnode" bench --spawn 3 --floor --clients 1 --players 1000 --entry owner --duration ${D}s --json >"$out/a-floor.json" 2>/dev/null
row "appnode transport floor" 1 "$out/a-floor.json" floor
row "bare mesh 3 servers (bench) entry=owner" 1 "$out/a-floor.json" bare_mesh
for c in 1 64; do
  for e in owner any; do
    # With 64 clients, --floor adds the bare mesh: the bare wire in the
    # cluster's shape, under the same load generator and entry.
    floor=""; [ $c = 64 ] && floor=--floor
    HOME=$out "$out/appnode" bench --spawn 3 $floor --clients $c --players 1000 --entry $e --duration ${D}s --json >"$out/a-$c-$e.json" 2>/dev/null
    row "appnode entry=$e" $c "$out/a-$c-$e.json"
    [ -n "$floor" ] && row "bare mesh 3 servers (bench) entry=$e" 64 "$out/a-$c-$e.json" bare_mesh
  done
done
# Two nodes: the bare wire's links (client -> owner -> keeper), so the
# difference from it is appnode's code, not a cluster's extra links. (A
# cluster of two stops serving when one dies; real ones run three or more.)
# The players are spread over both nodes, so each is owner and keeper in
# turn; with --owners 1 they all live at the first, which is then always
# the owner and the second always the keeper: the bare wire's own shape.
for c in 1 64; do
  HOME=$out "$out/appnode" bench --spawn 2 --clients $c --players 1000 --entry owner --duration ${D}s --json >"$out/a2-$c-owner.json" 2>/dev/null
  row "appnode 2 nodes entry=owner" $c "$out/a2-$c-owner.json"
  HOME=$out "$out/appnode" bench --spawn 2 --owners 1 --clients $c --players 1000 --entry owner --duration ${D}s --json >"$out/a2o-$c-owner.json" 2>/dev/null
  row "appnode 2 nodes one owner entry=owner" $c "$out/a2o-$c-owner.json"
done

"$peers/erlang/bench.sh" latency 5000 1000 >"$out/erl-1.txt" 2>&1
"$peers/erlang/bench.sh" throughput 1000 64 $D >"$out/erl-64.txt" 2>&1
"$peers/erlang/epmd.sh" stop >/dev/null 2>&1
python3 - "$out/erl-1.txt" "$out/erl-64.txt" >>"$out/peers.csv" <<'PY'
import re, sys
lat = open(sys.argv[1]).read(); thr = open(sys.argv[2]).read()
def num(pat, t):
    m = re.search(pat, t, re.S)
    return float(m.group(1)) if m else float('nan')
p50 = num(r'all => #\{[^}]*p50 => ([0-9.]+)', lat)
p99 = num(r'all => #\{[^}]*p99 => ([0-9.]+)', lat)
mean = num(r'all => #\{[^}]*mean => ([0-9.]+)', lat)
print(f"erlang seed (OTP) entry=any,1,{1e6 / mean:.0f},{p50:.0f},{p99:.0f}")
print(f"erlang seed (OTP) entry=any,64,{num(r'rewards_per_s => ([0-9.]+)', thr):.0f},nan,nan")
PY

mkdir -p "$out/redis"
redis-server --bind 127.0.0.1 --port 7001 --save "" --appendonly no --dir "$out/redis" --logfile "$out/redis/7001.log" & r1=$!
up 7001
redis-server --bind 127.0.0.1 --port 7002 --save "" --appendonly no --replicaof 127.0.0.1 7001 --dir "$out/redis" --logfile "$out/redis/7002.log" & r2=$!
for i in $(seq 100); do redis-cli -p 7002 info replication 2>/dev/null | grep -q 'master_link_status:up' && break; sleep 0.1; done
for c in 1 64; do
  "$out/rediswait" -dur ${D}s -workers $c -label x | awk -F, -v c=$c '{printf "redis 7 INCRBY+WAIT,%s,%.0f,%.0f,%.0f\n", c, $3, $4, $5}' >>"$out/peers.csv"
done
kill $r1 $r2 2>/dev/null
HOME=$out "$out/appnode" bench --spawn 3 --http --clients 64 --players 1000 --entry any --duration ${D}s --json >"$out/a-http.json" 2>/dev/null
row "appnode over HTTP (bench Go client) entry=any" 64 "$out/a-http.json"
DURATION=${D}s scripts/wrk-http.sh >"$out/wrk.txt" 2>&1
python3 - "$out/wrk.txt" >>"$out/peers.csv" <<'PY'
import re,sys
t=open(sys.argv[1]).read().split('== local')
def us(v,u): return float(v)*{'us':1,'ms':1000,'s':1e6}[u]
for name,part in (("appnode over HTTP (wrk) random players via node 1",t[0]),("appnode over HTTP (wrk) node 1's own players",t[1] if len(t)>1 else "")):
    rps=re.search(r'Requests/sec:\s+([0-9.]+)',part); p50=re.search(r'50%\s+([0-9.]+)(us|ms|s)',part); p99=re.search(r'99%\s+([0-9.]+)(us|ms|s)',part)
    if rps: print(f"{name},64,{float(rps.group(1)):.0f},{us(*p50.groups()):.0f},{us(*p99.groups()):.0f}")
PY
column -s, -t "$out/peers.csv"
