"""Asset jobs, one per partitioned asset (partitioning is inferred from the asset; a run covers one partition,
or several in a single-run backfill)."""

from __future__ import annotations

import dagster as dg

from benchmark_pipeline.defs.benchmark_assets import benchmark_result, benchmark_result_per_variant
from benchmark_pipeline.defs.selection_assets import best_trial, best_trial_per_variant

#: Run tag of every benchmark job's runs; ``deploy/dagster.yaml`` limits how many such runs the queue starts at
#: once (benchmarks sharing cores disturb each other's latencies).
BENCHMARK_POOL_TAG = "benchmark_pipeline/pool"
BENCHMARK_POOL = "benchmark"

best_trial_job = dg.define_asset_job("best_trial_job", selection=dg.AssetSelection.assets(best_trial))
best_trial_per_variant_job = dg.define_asset_job(
    "best_trial_per_variant_job", selection=dg.AssetSelection.assets(best_trial_per_variant)
)
benchmark_job = dg.define_asset_job(
    "benchmark_job", selection=dg.AssetSelection.assets(benchmark_result), tags={BENCHMARK_POOL_TAG: BENCHMARK_POOL}
)
benchmark_per_variant_job = dg.define_asset_job(
    "benchmark_per_variant_job",
    selection=dg.AssetSelection.assets(benchmark_result_per_variant),
    tags={BENCHMARK_POOL_TAG: BENCHMARK_POOL},
)
