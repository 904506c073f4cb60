#!/usr/bin/env bash
# Create .venv and install knnclass with the train and dev extras (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.knnclass-installed
# re-install when the project metadata or the native ops change (setup.py compiles them)
want=$(cat pyproject.toml setup.py knnclass/encoders/_fusedops.c | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # (setuptools warns at length that an editable install with a compiled part is one; nothing to act on)
  PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e '.[train,dev]'
  if ! ls knnclass/encoders/_fusedops.*.so >/dev/null 2>&1; then
    echo "note: knnclass's fused onnxruntime ops were not compiled (no C compiler?);" \
      "encoders run on stock onnxruntime ops, slower" >&2
  fi
  echo "$want" > "$stamp"
fi
