#!/usr/bin/env bash
# The wheel, not the editable install: build it, install it (no dependencies) into a fresh venv that borrows the
# dev venv's installed dependencies (torch is not downloaded again), and run the CLI smoke test from outside the
# checkout: --version, the packaged recipes, synthetic data, one tiny training, predict (issue 33).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip wheel -q --no-deps --no-build-isolation . -w "$work/wheel"
rm -rf build
"$PY" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps "$work"/wheel/cnnlab-*.whl
deps=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$site/dev-venv-deps.pth"   # appended after the venv's own site-packages: cnnlab is the wheel's
cd "$work"
export PATH="$work/venv/bin:$PATH" CNNLAB_CACHE_DIR="$work/cache"
python -c 'import cnnlab, sys; assert "site-packages" in cnnlab.__file__, cnnlab.__file__; print(cnnlab.__file__)'
cnnlab --version
cnnlab recipes --copy recipes >/dev/null
cnnlab data synth endovis --out data >/dev/null
cat > tiny.yaml <<'YAML'
base: recipes/endovis/a_baseline.yaml
name: tiny
out: runs
data: {root: data}
model: {params: {width: 4, depth: 2}}
train: {epochs: 1, max_steps_per_epoch: 2, progress: false, batch_size: 4, eval_batch_size: 4}
YAML
time cnnlab train tiny.yaml --set data.size=[48,64] | tail -1
run=$(ls -d runs/tiny-*)
cnnlab predict "$run" data/segmentation/test/3/3_input.jpg --out pred --no-overlays | tail -1
test -s pred/3_input_mask.png
test ! -e "$run/.lock"
echo "wheel smoke test passed"
