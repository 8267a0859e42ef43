#!/usr/bin/env bash
# Run the test suite (or a part of it) N times and say which tests failed in which runs: the flake hunt of issue 38.
#
#   scripts/soak_tests.sh N [--busy] [--random] [PYTEST ARGS...]
#
#   --busy     one process spinning per core beside the tests (a loaded CI machine: windows open that a quiet
#              machine never hits)
#   --random   a new random test order each run (pytest-random-order, in the dev install); the seed is printed
#   PYTEST ARGS  e.g. -k interrupts, tests/engine/test_interrupts.py, -m "not slow"
#
# Examples:
#   scripts/soak_tests.sh 10 --busy tests/engine/test_interrupts.py tests/engine/test_run_failures.py
#   scripts/soak_tests.sh 3 --random -m "not slow"
# Exit status: 0 when every run passed, 1 otherwise. Logs: $SOAK_DIR (default: a new folder under /tmp).
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/soak_tests.sh N [--busy] [--random] [PYTEST ARGS...]   (N: how many runs, 1 or more)" >&2
  exit 2
fi
runs=$1; shift
busy=0; random=0; args=()
for a in "$@"; do
  case "$a" in
    --busy) busy=1 ;;
    --random) random=1 ;;
    *) args+=("$a") ;;
  esac
done
py=.venv/bin/python
[[ -x $py ]] || { echo "no .venv here: run 'make venv' first" >&2; exit 2; }
dir=${SOAK_DIR:-$(mktemp -d /tmp/cnnlab-soak.XXXXXX)}
mkdir -p "$dir"
spinners=()
stop_spinners() { for p in "${spinners[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap stop_spinners EXIT
if [[ $busy == 1 ]]; then
  for _ in $(seq "$(nproc)"); do "$py" -c "while True: pass" & spinners+=($!); done
  echo "beside $(nproc) busy processes"
fi
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 flags /proc/cpuinfo | grep -o -w 'avx512_bf16\|amx_bf16' | sort -u | tr '\n' ' ')
echo "CPU: $cpu (${flags:-avx2}), $(nproc) cores; logs in $dir"
failed_runs=0
for i in $(seq "$runs"); do
  order=()
  if [[ $random == 1 ]]; then seed=$RANDOM$RANDOM; order=(-p random_order --random-order --random-order-seed="$seed"); fi
  start=$(date +%s)
  "$py" -m pytest -q -p no:cacheprovider -rf "${order[@]}" "${args[@]}" > "$dir/run$i.log" 2>&1
  code=$?
  secs=$(( $(date +%s) - start ))
  tail_line=$(grep -E "^(=+ )?[0-9]+ (passed|failed)" "$dir/run$i.log" | tail -1 | sed 's/=//g;s/^ *//;s/ *$//')
  echo "run $i/$runs: exit $code in ${secs}s: ${tail_line:-no summary line}${seed:+ (order seed $seed)}"
  if [[ $code != 0 ]]; then
    failed_runs=$((failed_runs + 1))
    grep -E "^(FAILED|ERROR) " "$dir/run$i.log" | sed "s/^/    run $i: /"
  fi
done
echo "flaky or failing tests over $runs runs:"
if grep -h -o -E "^(FAILED|ERROR) [^ ]+" "$dir"/run*.log | sort | uniq -c | sort -rn; then :; else echo "  none"; fi
echo "$((runs - failed_runs)) of $runs runs passed"
[[ $failed_runs == 0 ]]
