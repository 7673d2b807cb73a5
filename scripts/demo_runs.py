"""The embedded demo's Dagster runs, one per stage, all in this one Python process (``make demo`` calls it).

Each stage is one Dagster run over all its partitions (a partition range; the partitioned assets take
``BackfillPolicy.single_run()``), executed with Dagster's Python API against the ``DAGSTER_HOME`` instance, so
the runs, their materializations and their logs are the same as ``dagster asset materialize --partition-range``
would record (the UI shows them). One process instead of one CLI process per stage pays the imports of MLflow,
Dagster and the code location once: on a rerun with nothing to do, those start-ups were most of the time
(BENCHMARKS.md §3). The closing summary is printed by the same process.

Dagster's log goes to stderr (``scripts/demo.sh`` sends it to ``outputs/demo/dagster.log``); stdout gets one
line per stage with its duration, then the summary.
"""

from __future__ import annotations

import sys
import time

import dagster as dg

from benchmark_pipeline.config import PipelineConfig, load_config
from benchmark_pipeline.definitions import defs
from benchmark_pipeline.defs.benchmark_assets import STATUS_BENCHMARKED, STATUS_SKIPPED
from benchmark_pipeline.demo.__main__ import print_summary

# The tags ``dagster asset materialize --partition-range`` sets: Dagster reads a run's partition range from them.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

_BENCHMARK_ASSETS = {dg.AssetKey("benchmark_result"), dg.AssetKey("benchmark_result_per_variant")}


def stages(config: PipelineConfig) -> list[tuple[str, tuple[str, str] | None]]:
    """(asset selection, partition range or None) per stage, in dependency order.

    A range runs from the first to the last registered partition of each dimension. ``discovered_partitions``
    registers the demo's backbones and variants together, in sorted order, so the sorted lists give the ends
    (and the pairs' range, backbone x variant, is every pair: the demo sweeps them all)."""
    backbones, variants = sorted(config.backbones), sorted(config.variants)
    backbone_range = (backbones[0], backbones[-1])
    pair_range = (f"{backbones[0]}|{variants[0]}", f"{backbones[-1]}|{variants[-1]}")
    return [
        ("demo_dataset,discovered_partitions", None),
        ("hpo_sweep", pair_range),
        ("best_trial,benchmark_result", backbone_range),
        ("best_trial_per_variant,benchmark_result_per_variant", pair_range),
        ("leaderboard", None),
    ]


def benchmark_counts(results: list[dg.ExecuteInProcessResult]) -> tuple[int, int]:
    """(benchmarked, skipped) benchmark partitions, from the ``status`` metadata of the runs' materializations."""
    statuses = [
        event.materialization.metadata["status"].value
        for result in results
        for event in result.get_asset_materialization_events()
        if event.asset_key in _BENCHMARK_ASSETS
    ]
    return statuses.count(STATUS_BENCHMARKED), statuses.count(STATUS_SKIPPED)


def main() -> int:
    config = load_config()
    instance = dg.DagsterInstance.get()  # DAGSTER_HOME, as the CLI would use
    job = defs.resolve_implicit_global_asset_job_def()
    results = []
    for selection, partition_range in stages(config):
        started = time.perf_counter()
        tags = (
            {} if partition_range is None else {RANGE_START_TAG: partition_range[0], RANGE_END_TAG: partition_range[1]}
        )
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(name) for name in selection.split(",")],
            tags=tags,
            raise_on_error=False,
        )
        results.append(result)
        label = selection + (f" [{partition_range[0]}...{partition_range[1]}]" if partition_range else "")
        if not result.success:
            print(f"FAILED: Dagster run {result.run_id} of {label} (its log is in DAGSTER_HOME and on stderr)")
            return 1
        print(f"  {label:<60} {time.perf_counter() - started:5.1f}s", flush=True)
    ran, skipped = benchmark_counts(results)
    print(f"== Benchmark materializations: {ran} ran, {skipped} skipped (key already benchmarked)")
    print_summary(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
