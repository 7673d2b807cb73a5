#!/usr/bin/env bash
# The embedded demo, driven by Dagster's own CLI against a project-local DAGSTER_HOME and MLflow store:
# dataset + partitions -> HPO sweeps (backbone x variant) -> best_trial + benchmark_result (per backbone)
# -> best_trial_per_variant + benchmark_result_per_variant (per pair) -> summary tables.
# Running it again reuses every trial and skips every benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DAGSTER=.venv/bin/dagster
export DAGSTER_HOME="$PWD/.dagster_home"
mkdir -p "$DAGSTER_HOME" outputs/demo
[ -f "$DAGSTER_HOME/dagster.yaml" ] || printf 'telemetry:\n  enabled: false\nnux:\n  enabled: false\n' > "$DAGSTER_HOME/dagster.yaml"
LOG=outputs/demo/dagster.log
: > "$LOG"
# One process per run: steps execute in-process instead of one subprocess (and one torch import) per step.
IN_PROCESS='{"execution": {"config": {"in_process": {}}}}'

materialize() {  # materialize SELECTION [PARTITION]
  local started=$SECONDS
  local args=(asset materialize -m benchmark_pipeline.definitions --select "$1" --config-json "$IN_PROCESS")
  [ -n "${2:-}" ] && args+=(--partition "$2")
  if ! "$DAGSTER" "${args[@]}" >>"$LOG" 2>&1; then
    echo "FAILED: dagster ${args[*]}  (last lines of $LOG below)" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
  printf '  %-60s %4ss\n' "$1${2:+ [$2]}" "$((SECONDS - started))"
}

echo "== Materializing with the dagster CLI (DAGSTER_HOME=$DAGSTER_HOME; full log: $LOG)"
materialize demo_dataset,discovered_partitions
for pair in $($PY -m benchmark_pipeline.demo pairs); do materialize hpo_sweep "$pair"; done
for backbone in $($PY -m benchmark_pipeline.demo backbones); do materialize best_trial,benchmark_result "$backbone"; done
for pair in $($PY -m benchmark_pipeline.demo pairs); do materialize best_trial_per_variant,benchmark_result_per_variant "$pair"; done
materialize leaderboard
ran=$(grep -c "benchmark [^ ]*: benchmarked (MLflow run" "$LOG" || true)
skipped=$(grep -c "benchmark [^ ]*: skipped: already benchmarked" "$LOG" || true)
echo "== Benchmark materializations: $ran ran, $skipped skipped (key already benchmarked)"
$PY -m benchmark_pipeline.demo summary
