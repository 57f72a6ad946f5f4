#!/bin/bash
# scripts/node-ab.sh BIN [DUR]: two nodes of BIN (a build of cmd/appnode),
# one caller (scripts/floordrv) rewarding players owned by the node it
# calls, as scripts/floor-ab.sh does for the floor servers: prints the
# p50 and, from `perf stat` on both nodes, futex calls, context switches
# and CPU milliseconds per reward. Alternate two builds:
#   for i in 1 2 3 4; do scripts/node-ab.sh ./a; scripts/node-ab.sh ./b; done
# Needs perf (Linux). The nodes get a private cookie, state dir and names
# port, and are stopped at the end.
BIN=$1; D=${2:-7}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
W=$(mktemp -d)
(go build -o $W/floordrv ./scripts/floordrv) || exit 1
export APPNODE_COOKIE=$(head -c 32 /dev/urandom | base64 | tr -d '/+=' | head -c 40)
export APPNODE_STATE_DIR=$W/state APPNODE_NAMES_PORT=$((26000 + RANDOM % 2000))
P1=$((30000 + RANDOM % 5000)); P2=$((P1+1))
host=$(hostname | cut -d. -f1)  # a node is NAME@<short host name>
mkfifo $W/in1 $W/in2; sleep 1000 > $W/in1 & h1=$!; sleep 1000 > $W/in2 & h2=$!
$BIN --transport-port $P1 --http off nab1 < $W/in1 > $W/o1 2>&1 & A=$!
$BIN --transport-port $P2 --http off nab2 < $W/in2 > $W/o2 2>&1 & B=$!
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$P2) 2>/dev/null && break; sleep 0.1; done
for i in $(seq 50); do $BIN rpc nab1@$host connect nab2@$host 2>/dev/null | grep -q true && break; sleep 0.2; done
for i in $(seq 100); do $BIN rpc nab1@$host nodes 2>/dev/null | grep -q nab2 && break; sleep 0.1; done
$W/floordrv -addr 127.0.0.1:$P1 -c 1 -d 2s > /dev/null 2>&1   # creates the players at nab1, warms up
$W/floordrv -addr 127.0.0.1:$P1 -c 1 -d ${D}s > $W/drv 2>&1 & d=$!
sleep 1.5
EV=syscalls:sys_enter_futex,context-switches,task-clock
perf stat -x, -e $EV -p $A,$B sleep $((D-3)) 2> $W/perf
wait $d
ops=$(awk '{print $2}' $W/drv)
echo "$(basename $BIN): $(cat $W/drv | tr -d '\n') | per request: $(awk -F, -v o=$ops -v t=$((D-3)) '{printf "%s %.2f  ", $3, $1/(o*t)}' $W/perf)"
kill $A $B $h1 $h2 2>/dev/null; wait 2>/dev/null
pkill -f "names-serve.*--port $APPNODE_NAMES_PORT" 2>/dev/null
rm -rf $W
