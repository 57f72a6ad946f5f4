#!/usr/bin/env python3
"""scripts/targets.py OUTDIR...: issue 14's speed targets, as ratios, from
one or more runs of scripts/peers.sh (each OUTDIR one run), with the median
over the runs and how many runs meet each target on their own. A single
run on a shared 2-core machine moves by a quarter either way, so a target
is judged on the median of several, each ratio taken within its own run.

    for i in 1 2 3 4 5; do PEERS_DUR=5 scripts/peers.sh /tmp/peers-$i; done
    scripts/targets.py /tmp/peers-[1-5]
"""
import csv
import json
import math
import os
import statistics
import sys


def load(d):
    rows = {}
    with open(os.path.join(d, "peers.csv")) as f:
        for r in csv.DictReader(f):
            rows[(r["system"], int(r["callers"]))] = r

    def val(system, callers, field):
        r = rows.get((system, callers))
        if r is None:
            return math.nan
        try:
            return float(r[field])
        except ValueError:
            return math.nan

    def js(name, *path):
        try:
            with open(os.path.join(d, name)) as f:
                v = json.load(f)
            for p in path:
                v = v[p]
            return float(v)
        except (OSError, KeyError, TypeError, ValueError):
            return math.nan

    bare1 = val("bare wire 2 hops", 1, "p50_us")
    # mpbench under the Go runtime setting appnode runs with
    # (cmd/appnode/sysmon.go): the same code, the same runtime.
    tuned = "bare wire 2 hops GODEBUG=schedtrace=2147483647"
    tuned1 = val(tuned, 1, "p50_us")
    bare64 = val("bare wire 2 hops", 64, "ops_per_s")
    # The bench's own bare wire, with 64 callers, is the CPU reference:
    # mpbench does not read its processes' CPU.
    bare_cpu = js("a-64-owner.json", "bare_wire", "servers_cpu_us_per_request")
    redis64 = val("redis 7 INCRBY+WAIT", 64, "ops_per_s")
    erl64 = val("erlang seed (OTP) entry=any", 64, "ops_per_s")
    # The lone caller's p50 against the bare wire, as shipped and under the
    # same Go setting: one list of rows, taken against each reference.
    lone = [
        ("floor", "appnode transport floor", 1.15, ""),
        ("owner", "appnode 2 nodes entry=owner", 1.3, "2 nodes"),
        ("owner", "appnode 2 nodes one owner entry=owner", 1.3, "2 nodes, one owner"),
        ("owner", "appnode entry=owner", 1.3, "3 nodes"),
    ]
    targets = []
    for ref, against in ((bare1, "bare wire"), (tuned1, "bare wire, same Go setting")):
        for what, system, limit, shape in lone:
            name = f"{what}, 1 caller, p50 / {against}" + (f" ({shape})" if shape else "")
            targets.append((name, f"<= {limit}", val(system, 1, "p50_us") / ref, lambda x, limit=limit: x <= limit))
    return targets + [
        ("owner, 1 caller, p50 / Redis", "< 1",
         val("appnode 2 nodes entry=owner", 1, "p50_us") / val("redis 7 INCRBY+WAIT", 1, "p50_us"), lambda x: x < 1),
        ("any, 1 caller, p50 / Erlang", "< 1",
         val("appnode entry=any", 1, "p50_us") / val("erlang seed (OTP) entry=any", 1, "p50_us"), lambda x: x < 1),
        ("owner, 64 callers, rewards/s / bare wire (2 nodes)", ">= 0.8",
         val("appnode 2 nodes entry=owner", 64, "ops_per_s") / bare64, lambda x: x >= 0.8),
        ("owner, 64 callers, rewards/s / bare wire (2 nodes, one owner)", ">= 0.8",
         val("appnode 2 nodes one owner entry=owner", 64, "ops_per_s") / bare64, lambda x: x >= 0.8),
        ("owner, 64 callers, rewards/s / bare wire (3 nodes)", ">= 0.8",
         val("appnode entry=owner", 64, "ops_per_s") / bare64, lambda x: x >= 0.8),
        ("owner, 64 callers, rewards/s / bare wire, same Go setting (2 nodes, one owner)", ">= 0.8",
         val("appnode 2 nodes one owner entry=owner", 64, "ops_per_s") / val(tuned, 64, "ops_per_s"), lambda x: x >= 0.8),
        ("any, 64 callers, rewards/s / Redis", ">= 2",
         val("appnode entry=any", 64, "ops_per_s") / redis64, lambda x: x >= 2),
        ("any, 64 callers, rewards/s / Erlang", ">= 3",
         val("appnode entry=any", 64, "ops_per_s") / erl64, lambda x: x >= 3),
        ("any, 64 callers, rewards/s / bare mesh (same run)", "(shape)",
         val("appnode entry=any", 64, "ops_per_s") / val("bare mesh 3 servers (bench) entry=any", 64, "ops_per_s"), None),
        ("CPU per reward / bare wire's (2 nodes, owner)", "<= 2",
         js("a2-64-owner.json", "nodes_cpu_us_per_reward") / bare_cpu, lambda x: x <= 2),
        ("CPU per reward / bare wire's (2 nodes, one owner)", "<= 2",
         js("a2o-64-owner.json", "nodes_cpu_us_per_reward") / bare_cpu, lambda x: x <= 2),
        ("CPU per reward / bare wire's (3 nodes, owner)", "<= 2",
         js("a-64-owner.json", "nodes_cpu_us_per_reward") / bare_cpu, lambda x: x <= 2),
        ("CPU per reward / bare wire's (3 nodes, any)", "<= 2",
         js("a-64-any.json", "nodes_cpu_us_per_reward") / bare_cpu, lambda x: x <= 2),
    ]


def main():
    dirs = sys.argv[1:]
    if not dirs:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    runs = [load(d) for d in dirs]
    width = max(len(t[0]) for t in runs[0])
    print(f"{'target':<{width}}  {'want':<8}  {'median':>6}  met  {'runs met':>8}  runs ({', '.join(os.path.basename(d.rstrip('/')) for d in dirs)})")
    for i, (name, want, _, ok) in enumerate(runs[0]):
        xs = [r[i][2] for r in runs]
        good = [x for x in xs if not math.isnan(x)]
        med = statistics.median(good) if good else math.nan
        met = "-" if ok is None or not good else ("yes" if ok(med) else "no")
        # How many runs meet it on their own: a median near the line
        # with most runs on one side says more than the median alone.
        count = "-" if ok is None or not good else f"{sum(1 for x in good if ok(x))}/{len(good)}"
        each = " ".join("  -  " if math.isnan(x) else f"{x:5.2f}" for x in xs)
        print(f"{name:<{width}}  {want:<8}  {med:6.2f}  {met:<3}  {count:>8}  {each}")


if __name__ == "__main__":
    main()
