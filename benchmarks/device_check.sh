#!/usr/bin/env bash
# The GPU check, one command, under 8 minutes on a CUDA machine: the tests marked `cuda`, the train and predict
# benchmarks at the course's full size (256x320) on CUDA, and a 2-GPU DDP step where two GPUs exist. Every
# number goes into one JSON: OUTDIR/device_check.json (parts/ beside it holds each step's own output).
#
#   benchmarks/device_check.sh [OUTDIR]       # default: $OUT when set, else runs/device_check
#
# Python: $PYTHON when given, else .venv/bin/python, else python3: the first whose torch sees a CUDA device.
# cnnlab is imported from src/ when that python has not installed it (a GPU image with torch needs nothing
# else). Only where no python has torch at all does it run `make venv` (needs internet). Without CUDA it prints
# one line and exits 2, before installing anything. Exit 1 when a step failed or ran out of its time.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
refuse() { echo "device_check: $1" >&2; exit 2; }

if ! command -v nvidia-smi >/dev/null 2>&1 && ! ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
    refuse "no CUDA device on this machine (no nvidia-smi, no /dev/nvidia*); run it on a GPU machine"
fi
OUTDIR=${1:-${OUT:-runs/device_check}}
mkdir -p "$OUTDIR/parts" || refuse "cannot create $OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/device_check.log
: >"$LOG"
export PYTHONUNBUFFERED=1

PY="" ANY=""
for c in ${PYTHON:-} .venv/bin/python python3; do
    command -v "$c" >/dev/null 2>&1 || continue
    "$c" -c "import torch" >/dev/null 2>&1 || continue
    ANY=${ANY:-$c}
    if "$c" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
        PY=$c
        break
    fi
done
if [ -z "$ANY" ]; then
    echo "device_check: no python with torch here: make venv (log: $LOG)"
    make venv >>"$LOG" 2>&1 || refuse "make venv failed (see $LOG); set PYTHON to a python with a CUDA build of torch"
    .venv/bin/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" && PY=.venv/bin/python
fi
[ -n "$PY" ] || refuse "torch sees no CUDA device (python: ${ANY:-.venv/bin/python}); run it on a GPU machine with a CUDA build of torch"
if ! "$PY" -c "import cnnlab" >/dev/null 2>&1; then
    export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
    "$PY" -c "import cnnlab" >>"$LOG" 2>&1 || refuse "cnnlab does not import with $PY (see $LOG)"
fi
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
WORK=$(mktemp -d /tmp/cnnlab-device-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
STATUS=""
FAILED=0

step() {  # NAME LIMIT_S COMMAND...: run with a time limit, output to the log, record rc and seconds
    local name=$1 limit=$2 t0 rc
    shift 2
    echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
    STATUS="$STATUS $name=$rc:$(( $(date +%s) - t0 ))"
    if [ "$rc" -ne 0 ]; then
        FAILED=1
        tail -n 25 "$LOG"  # the reason, without opening the log
    fi
}

echo "device_check: $PY, torch $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'), $NGPU GPU(s), output $OUTDIR" | tee -a "$LOG"
P=$OUTDIR/parts
step tests 120 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/engine/test_cuda.py --junitxml="$P/tests.xml"
step train 150 "$PY" benchmarks/train_speed.py --device cuda --rounds 3 --steps 5 --warmup 2 --fp32-engine \
    --json "$P/train_speed.json"
step predict 75 "$PY" benchmarks/predict_speed.py --device cuda --images 16 --rounds 3 --json "$P/predict_speed.json"
if [ "$NGPU" -ge 2 ]; then
    "$PY" -c "from cnnlab.data.synthetic.endovis import write; write('$WORK/data', n_train=64, n_val=16, n_test=0, n_color_train=0, n_color_val=0)"
    SETS=(--set "data.root=$WORK/data" --set data.test= --set train.epochs=2 --set train.max_steps_per_epoch=8
          --set train.progress=false)
    step ddp_1gpu 45 "$PY" -m cnnlab train recipes/endovis/b_augment.yaml "${SETS[@]}" --set "out=$WORK/ddp1"
    step ddp_2gpu 45 "$PY" -m torch.distributed.run --nproc_per_node=2 --master_addr=127.0.0.1 --master_port=29533 \
        -m cnnlab train recipes/endovis/b_augment.yaml "${SETS[@]}" --set "out=$WORK/ddp2"
else
    STATUS="$STATUS ddp=skipped"
    echo "== ddp: skipped ($NGPU GPU)" | tee -a "$LOG"
fi

"$PY" - "$OUTDIR" "$WORK" "$STATUS" <<'EOF' 2>&1 | tee -a "$LOG"
"""Merge every step's numbers into device_check.json and print the lines the README's GPU rows need."""
import csv, datetime, json, shutil, subprocess, sys, xml.etree.ElementTree as ET
from pathlib import Path
import torch

out, work, status = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split()
parts = out / "parts"
p = torch.cuda.get_device_properties(0)
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else ""
res = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "cudnn": torch.backends.cudnn.version(), "gpus": torch.cuda.device_count(),
       "gpu": {"name": p.name, "memory_gib": round(p.total_memory / 2 ** 30, 1),
               "capability": f"{p.major}.{p.minor}", "nvidia_smi": smi},
       "steps": {k: v for k, _, v in (s.partition("=") for s in status)}}
for name in ("train_speed", "predict_speed"):
    f = parts / f"{name}.json"
    res[name] = json.loads(f.read_text()) if f.is_file() else None
x = parts / "tests.xml"
if x.is_file():
    r = ET.parse(x).getroot()
    s = r if r.tag == "testsuite" else r.find("testsuite")
    res["tests"] = {k: int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    res["tests"]["failed_names"] = [c.get("name") for c in s.iter("testcase") if c.find("failure") is not None
                                    or c.find("error") is not None]
res["ddp"] = {}
for tag in ("ddp1", "ddp2"):
    m = sorted((work / tag).glob("*/metrics.csv"))
    if m:
        rows = list(csv.DictReader(open(m[0])))
        res["ddp"][tag] = {"images_per_s_by_epoch": [float(r["images_per_s"]) for r in rows]}
(out / "device_check.json").write_text(json.dumps(res, indent=2, default=str))
print(f"\nGPU: {p.name}, torch {torch.__version__}, CUDA {torch.version.cuda}; steps {res['steps']}")
print(f"tests: {res.get('tests')}")
t = res["train_speed"]
if t:
    size = "x".join(map(str, t.get("info", {}).get("size", [])))
    print(f"train {size} batch 8, images/s (median): " + ", ".join(
        f"{n} {s['images_per_s']['median']:.1f}" for n, s in t["sides"].items())
        + "; x plain: " + ", ".join(f"{n} {r['median']:.2f}" for n, r in t.get("ratios_vs_plain", {}).items()))
pr = res["predict_speed"]
if pr:
    print("predict, images/s (files in, masks out): " + ", ".join(
        f"{n} {s['images_per_s']['median']:.1f}" for n, s in pr["sides"].items()))
for tag, d in res["ddp"].items():
    print(f"{tag}: images/s by epoch {['%.1f' % v for v in d['images_per_s_by_epoch']]}")
print(f"wrote {out / 'device_check.json'}")
EOF
exit $FAILED
