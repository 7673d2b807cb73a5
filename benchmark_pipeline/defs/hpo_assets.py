"""The embedded demo's HPO source as assets: the dataset, partition discovery, and the sweeps."""


import dagster as dg

from benchmark_pipeline.defs.log_forwarding import forward_core_logs
from benchmark_pipeline.defs.partitions import PAIRS_REGISTRY, backbone_variant_partitions, missing_partitions, pair_key, partition_pair
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.discovery import discover_partitions
from benchmark_pipeline.hpo.dataset import write_dataset
from benchmark_pipeline.hpo.sweep import run_sweep


@dg.asset(group_name="hpo", description="The synthetic token-classification dataset (train/validation/test JSONL).")
def demo_dataset(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    config = settings.load()
    paths = write_dataset(config.data_config, config.root_dir)
    return dg.MaterializeResult(
        metadata={
            "directory": dg.MetadataValue.path(str(paths.directory)),
            "test_data_path": dg.MetadataValue.path(str(paths.test)),
            "fingerprint": dg.MetadataValue.text(paths.fingerprint),
        }
    )


@dg.asset(
    group_name="hpo",
    description="Registers the backbone and variant partitions found in the config, MLflow and disk "
    "(the discovery sensor does the same on a timer).",
)
def discovered_partitions(context: dg.AssetExecutionContext, settings: PipelineSettings, mlflow: MlflowResource) -> dg.MaterializeResult:
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


@dg.asset(
    group_name="hpo",
    partitions_def=backbone_variant_partitions,
    deps=[demo_dataset],
    description="An Optuna sweep that trains, exports to ONNX and records each trial in MLflow, study.db and a trial folder.",
)
def hpo_sweep(context: dg.AssetExecutionContext, settings: PipelineSettings, mlflow: MlflowResource) -> dg.MaterializeResult:
    config = settings.load()
    backbone, variant = partition_pair(context)
    if backbone not in config.backbones or variant not in config.variants:
        raise dg.Failure(
            description=f"the sweep {backbone}|{variant} is not in the config ({config.source_path}): "
            f"backbones {list(config.backbones)}, variants {list(config.variants)}"
        )
    with forward_core_logs(context):
        summary = run_sweep(config, backbone, variant, mlflow.client(), progress=context.log.info)
    context.instance.add_dynamic_partitions(PAIRS_REGISTRY, [pair_key(backbone, variant)])
    return dg.MaterializeResult(
        metadata={
            "study_name": summary.study_name,
            "study_key_hash": summary.study_key_hash,
            "storage": summary.storage_url,
            "trials_in_study": summary.trials_in_study,
            "trials_run_now": summary.trials_run_now,
            "best_value": float(summary.best_value) if summary.best_value is not None else float("nan"),
            "mlflow_experiment_id": summary.experiment_id,
        }
    )
