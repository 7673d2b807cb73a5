"""``discovered_partitions``: registers the backbone and variant partitions found in the config, MLflow and disk."""

import dagster as dg

from benchmark_pipeline.defs.log_forwarding import forward_core_logs
from benchmark_pipeline.defs.partitions import missing_partitions
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.discovery import discover_partitions


@dg.asset(
    group_name="selection",
    description="Registers the backbone and variant partitions found in the config, MLflow and disk "
    "(the discovery sensor does the same on a timer).",
)
def discovered_partitions(
    context: dg.AssetExecutionContext, settings: PipelineSettings, mlflow: MlflowResource
) -> dg.MaterializeResult:
    config = settings.load()
    with forward_core_logs(context):
        found = discover_partitions(config, mlflow.client())
    added = missing_partitions(context.instance, found.backbones, found.variants, found.pairs_with_trials)
    for name, keys in added.items():
        if keys:
            context.instance.add_dynamic_partitions(name, keys)
    return dg.MaterializeResult(
        metadata={
            "backbones": dg.MetadataValue.json(sorted(found.backbones)),
            "variants": dg.MetadataValue.json(sorted(found.variants)),
            "pairs_with_trials": dg.MetadataValue.json(sorted(f"{b}|{v}" for b, v in found.pairs_with_trials)),
            "added": dg.MetadataValue.json(added),
        }
    )
