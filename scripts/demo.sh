#!/usr/bin/env bash
# The main job on the shipped Banking77 tickets: index, tune, evaluate, classify (embedded store).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
K=".venv/bin/knnclass"
STORE=${KNNCLASS_STORE:-./knnclass-data}
D=data/banking77
set -x
$K index $D/train.csv --store "$STORE"
$K tune --store "$STORE" | tail -n 4
$K evaluate $D/test.csv --store "$STORE"
$K classify --store "$STORE" \
  "I still haven't received my new card, it's been two weeks" \
  "Someone took money from my account, I didn't make these payments!" \
  "What's the exchange rate for euros?" \
  "What is a good recipe for banana bread?"
$K index $D/train.csv --store "$STORE" --collection urgency --label-map $D/urgency.csv
$K tune --store "$STORE" --collection urgency | tail -n 1
$K evaluate $D/test.csv --store "$STORE" --collection urgency --label-map $D/urgency.csv
$K info --store "$STORE"
