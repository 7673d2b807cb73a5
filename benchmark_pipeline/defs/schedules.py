"""Nightly refresh of the best-trial selection for every registered partition.

``build_schedule_from_partitioned_job`` does not accept dynamic partitions, so each schedule emits one
``RunRequest`` per registered partition itself. The cron comes from ``$BENCHMARK_PIPELINE_SELECTION_CRON``
(default: 02:00 every day). Per-variant requests cover only pairs that have trials.
"""

import os
from typing import Any

import dagster as dg

from benchmark_pipeline.defs.jobs import best_trial_job, best_trial_per_variant_job
from benchmark_pipeline.defs.partitions import PAIRS_REGISTRY, multi_key, split_pair_key

SELECTION_CRON = os.environ.get("BENCHMARK_PIPELINE_SELECTION_CRON", "0 2 * * *")


@dg.schedule(job=best_trial_job, cron_schedule=SELECTION_CRON, description="Refresh best_trial for every backbone.")
def selection_refresh_schedule(context: dg.ScheduleEvaluationContext) -> Any:
    backbones = sorted(context.instance.get_dynamic_partitions("backbone"))
    if not backbones:
        return dg.SkipReason("no backbone partitions registered yet")
    stamp = context.scheduled_execution_time.isoformat()
    return [dg.RunRequest(partition_key=b, run_key=f"best_trial:{b}:{stamp}") for b in backbones]


@dg.schedule(
    job=best_trial_per_variant_job,
    cron_schedule=SELECTION_CRON,
    description="Refresh best_trial_per_variant for every pair with trials.",
)
def per_variant_selection_refresh_schedule(context: dg.ScheduleEvaluationContext) -> Any:
    pairs = sorted(context.instance.get_dynamic_partitions(PAIRS_REGISTRY))
    if not pairs:
        return dg.SkipReason("no backbone × variant pair with trials registered yet")
    stamp = context.scheduled_execution_time.isoformat()
    return [
        dg.RunRequest(partition_key=multi_key(*split_pair_key(p)), run_key=f"best_trial_per_variant:{p}:{stamp}")
        for p in pairs
    ]
