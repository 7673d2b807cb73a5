"""The Dagster code location: composes the assets, jobs, sensors, schedules and resources in ``defs/``.

The embedded demo's assets (group ``demo``) are added only when the config can drive the demo; nothing
else depends on them, so a team's own config gets the same graph without them.
"""

import dagster as dg

from benchmark_pipeline.defs.benchmark_assets import benchmark_result, benchmark_result_per_variant
from benchmark_pipeline.defs.demo_assets import demo_dataset, hpo_sweep
from benchmark_pipeline.defs.discovery_assets import discovered_partitions
from benchmark_pipeline.defs.jobs import (
    benchmark_job,
    benchmark_per_variant_job,
    best_trial_job,
    best_trial_per_variant_job,
)
from benchmark_pipeline.defs.leaderboard_assets import leaderboard
from benchmark_pipeline.defs.resources import default_resources
from benchmark_pipeline.defs.schedules import per_variant_selection_refresh_schedule, selection_refresh_schedule
from benchmark_pipeline.defs.selection_assets import best_trial, best_trial_per_variant
from benchmark_pipeline.defs.sensors import benchmark_sensor, partition_discovery_sensor
from benchmark_pipeline.demo.settings import is_demo_config

_resources = default_resources()
_demo_assets = [demo_dataset, hpo_sweep] if is_demo_config(_resources["settings"].load()) else []

defs = dg.Definitions(
    assets=[
        *_demo_assets,
        discovered_partitions,
        best_trial,
        best_trial_per_variant,
        benchmark_result,
        benchmark_result_per_variant,
        leaderboard,
    ],
    jobs=[best_trial_job, best_trial_per_variant_job, benchmark_job, benchmark_per_variant_job],
    sensors=[benchmark_sensor, partition_discovery_sensor],
    schedules=[selection_refresh_schedule, per_variant_selection_refresh_schedule],
    resources=_resources,
)
