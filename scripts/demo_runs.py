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

import re
import sys
import time

import dagster as dg

from benchmark_pipeline.config import PipelineConfig, load_config
from benchmark_pipeline.definitions import defs
from benchmark_pipeline.demo.__main__ import print_summary

# The tags ``dagster asset materialize --partition-range`` sets: Dagster reads a run's partition range from them.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

# The benchmark assets log one of these per partition (defs/benchmark_assets.py).
_RAN = re.compile(r"benchmark \S+: benchmarked \(MLflow run")
_SKIPPED = re.compile(r"benchmark \S+: skipped: already benchmarked")


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


def benchmark_counts(instance: dg.DagsterInstance, run_ids: list[str]) -> tuple[int, int]:
    """(benchmarked, skipped) partitions, read from the runs' own log messages in the instance."""
    messages = [entry.user_message for run_id in run_ids for entry in instance.all_logs(run_id)]
    return sum(bool(_RAN.search(m)) for m in messages), sum(bool(_SKIPPED.search(m)) for m in messages)


def main() -> int:
    config = load_config()
    instance = dg.DagsterInstance.get()  # DAGSTER_HOME, as the CLI would use
    job = defs.resolve_implicit_global_asset_job_def()
    run_ids = []
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
        run_ids.append(result.run_id)
        label = selection + (f" [{partition_range[0]}...{partition_range[1]}]" if partition_range else "")
        if not result.success:
            print(f"FAILED: Dagster run {result.run_id} of {label} (its log is in DAGSTER_HOME and on stderr)")
            return 1
        print(f"  {label:<60} {time.perf_counter() - started:5.1f}s", flush=True)
    ran, skipped = benchmark_counts(instance, run_ids)
    print(f"== Benchmark materializations: {ran} ran, {skipped} skipped (key already benchmarked)")
    print_summary(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
