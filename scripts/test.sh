#!/usr/bin/env bash
# Install (if needed), lint, type-check and run the test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/ruff check knnclass tests benchmarks
.venv/bin/ruff format --check knnclass tests benchmarks
.venv/bin/mypy --strict knnclass
.venv/bin/pytest -q "$@"
