#!/bin/bash
# scripts/floor-ab.sh KIND BIN CALLERS [DUR]: one run of two floor servers of
# BIN (KIND floor; driven by scripts/floordrv) or of the bare forwarder
# (KIND bare, BIN an mpbench binary), with CPU time and context switches
# per request of each process, read from /proc. Alternate two builds:
#   for i in 1 2 3; do scripts/floor-ab.sh floor ./a 1 7; scripts/floor-ab.sh floor ./b 1 7; done
KIND=$1; BIN=$2; C=$3; D=${4:-6}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
W=$(mktemp -d)
DRV=$W/floordrv
(cd "$here" && go build -o "$DRV" ./scripts/floordrv) || exit 1
# snap PID...: per pid, CPU ticks (utime+stime) and voluntary and
# involuntary context switches summed over its threads.
snap() {
  for p in "$@"; do
    t=$(awk '{print $14+$15}' /proc/$p/stat)
    v=0; n=0
    for s in /proc/$p/task/*/status; do
      read a b < <(awk '/^voluntary_ctxt/{v=$2} /^nonvoluntary_ctxt/{n=$2} END{print v, n}' $s)
      v=$((v+a)); n=$((n+b))
    done
    echo "$p $t $v $n"
  done
}
export APPNODE_COOKIE=$(head -c 32 /dev/urandom | base64 | tr -d '/+=' | head -c 40)
up() { for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
if [ $KIND = floor ]; then
  mkfifo $W/in
  sleep 1000 > $W/in & hold=$!
  $BIN bench serve-floor --name fb < $W/in > $W/b 2>/dev/null & B=$!
  until [ -s $W/b ]; do sleep 0.05; done
  $BIN bench serve-floor --name fa --peer fb=$(head -1 $W/b) < $W/in > $W/a 2>/dev/null & A=$!
  until [ -s $W/a ]; do sleep 0.05; done
  $DRV -addr $(head -1 $W/a) -c $C -d ${D}s > $W/drv & d=$!
else
  P=$((9300 + RANDOM % 500))
  $BIN server -listen 127.0.0.1:$P 2>/dev/null & B=$!
  up $P
  $BIN server -listen 127.0.0.1:$((P+1)) -backup 127.0.0.1:$P 2>/dev/null & A=$!
  up $((P+1))
  if [ $C = 1 ]; then m="-mode seq -conns 1"; else m="-mode pipe -inflight $C"; fi
  $BIN client -addr 127.0.0.1:$((P+1)) $m -dur $((D-1))s -warmup 1s -label x | awk -F, '{printf "ops/s %.0f p50 %.0f p99 %.0f\n", $3, $4, $5}' > $W/drv & d=$!
fi
sleep 1.5
dpid=$(pgrep -P $d | head -1); [ -z "$dpid" ] && dpid=$d
s0=$(snap $A $B $dpid)
sleep $((D-3))
s1=$(snap $A $B $dpid)
wait $d
out=$(cat $W/drv)
ops=$(echo $out | awk '{print $2}')
echo "$KIND $(basename $BIN) c=$C: $out"
paste <(echo "$s0") <(echo "$s1") | awk -v ops=$ops -v dt=$((D-3)) -v names="A B client" 'BEGIN{split(names,nm," ")} {i++; n=ops*dt; printf "  %-6s cpu/op %5.1fus vol/op %.2f invol/op %.2f\n", nm[i], ($6-$2)*10000/n, ($7-$3)/n, ($8-$4)/n}'
kill $A $B $hold 2>/dev/null; wait 2>/dev/null; rm -rf $W
