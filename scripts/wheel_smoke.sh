#!/usr/bin/env bash
# The wheel, not the editable install: build it, install it (no dependencies) into a fresh venv that borrows the
# dev venv's installed dependencies (torch is not downloaded again), and run the CLI smoke test from outside the
# checkout: --version, the packaged recipes, synthetic data, one tiny training from a shipped recipe, predict,
# evaluate (issue 33).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip wheel -q --no-deps --no-build-isolation . -w "$work/wheel"
rm -rf build
"$PY" -m venv --without-pip "$work/venv"
"$PY" -m pip --python "$work/venv/bin/python" install -q --no-deps "$work"/wheel/cnnlab-*.whl
deps=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$site/dev-venv-deps.pth"   # appended after the venv's own site-packages: cnnlab is the wheel's
cd "$work"
export PATH="$work/venv/bin:$PATH" CNNLAB_CACHE_DIR="$work/cache"
python -c 'import cnnlab; assert cnnlab.__file__.startswith("'"$site"'"), cnnlab.__file__'
cnnlab --version | tee version.txt
! grep -q '(git ' version.txt   # an installed wheel is no checkout: no commit to name
cnnlab recipes --copy recipes >/dev/null
cnnlab data synth mnist --out data/mnist >/dev/null
cnnlab train recipes/mnist/b_course_cnn.yaml --set train.epochs=1 --set train.max_steps_per_epoch=2 \
    --set train.progress=false --set out=runs | tail -1
run=$(ls -d runs/*/)
test ! -e "$run/.lock" && test -s "$run/report.html"
python - <<'PY'
import numpy as np
from PIL import Image
Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save("digit.png")
PY
cnnlab predict "$run" digit.png --out pred | tail -1
test -s pred/probabilities.csv
echo "wheel smoke test passed"
