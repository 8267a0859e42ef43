#!/usr/bin/env bash
# Golden metrics for a behaviour-preserving change (issue 32): the demo, the digits recipe and the VOC CPU baseline,
# one seed, one thread, short; prints every run's metrics.csv (time columns dropped) and summary.json's metrics, so
# two checkouts can be compared with diff:
#
#   scripts/golden_metrics.sh > /tmp/before.txt   # on the old commit
#   scripts/golden_metrics.sh > /tmp/after.txt    # on the new one
#   diff /tmp/before.txt /tmp/after.txt           # empty: bit for bit the same numbers
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/.venv/bin
work=$(mktemp -d /tmp/cnnlab-golden.XXXXXX)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
one="--set train.threads=1 --set train.seed=0"
(cd "$work" && "$bin/cnnlab" demo --epochs 2 --out "$work/demo" > /dev/null 2>&1)
"$bin/cnnlab" train recipes/mnist/s_digits.yaml $one --set train.epochs=2 --set out="$work/digits" > /dev/null 2>&1
"$bin/cnnlab" data synth voc --out "$work/voc" > /dev/null 2>&1
"$bin/cnnlab" train recipes/voc/cpu_baseline.yaml $one --set train.epochs=2 --set data.root="$work/voc" \
  --set out="$work/voc_runs" > /dev/null 2>&1
"$bin/python" - "$work" <<'PY'
import csv, json, re, sys
from pathlib import Path

def timing(key: str) -> bool:
    """Keys that measure the clock or name the machine, not the numbers a change must keep."""
    return any(w in key for w in ("time", "sec", "date", "per_s", "speed", "env", "git", "dir", "path"))

for s in sorted(Path(sys.argv[1]).rglob("summary.json")):
    run = s.parent
    print(f"## {run.parent.name}/{run.name.split('-2')[0]}")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    for row in rows:
        print({k: v for k, v in row.items() if not timing(k)})
    summary = json.loads(s.read_text())
    # the cache's own timing rule (files written less than a second before a run are not cached) is no metric
    summary["notes"] = [n for n in summary.get("notes", []) if "in the last second" not in n]
    text = json.dumps({k: v for k, v in summary.items() if not timing(k)}, sort_keys=True, default=str)
    print(re.sub(r"-\d{8}-\d{6}", "-STAMP", text.replace(sys.argv[1], "WORK")))  # where and when, not what
PY
