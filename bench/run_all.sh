#!/usr/bin/env bash
# Every bench script, one after the other (never concurrently: they share 2 cores). ~20 min on 2 cores.
# Output: bench/.cache/results/<name>.out (what the script printed) and <name>.json (the figures).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=bench/.cache/results
mkdir -p "$OUT"
$PY bench/generate_hpo_store.py                      > "$OUT/generate_hpo_store.out" 2>&1
$PY bench/retrieval_at_scale.py --repeats 1          2>&1 | tee "$OUT/retrieval_at_scale.out"
$PY bench/sensor_tick.py --repeats 3                 2>&1 | tee "$OUT/sensor_tick.out"
$PY bench/harness_fidelity.py --repeats 5            2>&1 | tee "$OUT/harness_fidelity.out"
$PY bench/profile_retrieval.py                       2>&1 | tee "$OUT/profile_retrieval.out"
$PY bench/idempotent_rerun.py                        2>&1 | tee "$OUT/idempotent_rerun.out"
