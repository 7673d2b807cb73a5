"""The Dagster code location: composes the assets, jobs, sensors, schedules and resources in ``defs/``."""


import dagster as dg

from benchmark_pipeline.defs.benchmark_assets import benchmark_result, benchmark_result_per_variant
from benchmark_pipeline.defs.hpo_assets import demo_dataset, discovered_partitions, hpo_sweep
from benchmark_pipeline.defs.jobs import benchmark_job, benchmark_per_variant_job, best_trial_job, best_trial_per_variant_job
from benchmark_pipeline.defs.leaderboard_assets import leaderboard
from benchmark_pipeline.defs.resources import default_resources
from benchmark_pipeline.defs.schedules import per_variant_selection_refresh_schedule, selection_refresh_schedule
from benchmark_pipeline.defs.selection_assets import best_trial, best_trial_per_variant
from benchmark_pipeline.defs.sensors import benchmark_sensor, partition_discovery_sensor

defs = dg.Definitions(
    assets=[demo_dataset, discovered_partitions, hpo_sweep, best_trial, best_trial_per_variant, benchmark_result, benchmark_result_per_variant, leaderboard],
    jobs=[best_trial_job, best_trial_per_variant_job, benchmark_job, benchmark_per_variant_job],
    sensors=[benchmark_sensor, partition_discovery_sensor],
    schedules=[selection_refresh_schedule, per_variant_selection_refresh_schedule],
    resources=default_resources(),
)
