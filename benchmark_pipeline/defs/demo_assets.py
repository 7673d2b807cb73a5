"""The embedded demo's HPO source as assets, group ``demo``: its dataset and its sweeps.

They sit at the edge of the asset graph: nothing depends on them, and :mod:`benchmark_pipeline.definitions`
includes them only when the config can drive the demo (:func:`~benchmark_pipeline.demo.settings.is_demo_config`).
This is the only module of the Dagster layer that imports the demo; the demo's torch-heavy modules are
imported when an asset runs, not when the code location loads.
"""

import dagster as dg

from benchmark_pipeline.config import ConfigError, PipelineConfig
from benchmark_pipeline.defs.log_forwarding import forward_core_logs
from benchmark_pipeline.defs.partitions import PAIRS_REGISTRY, backbone_variant_partitions, pair_key, split_pair_key
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.demo.settings import validate_demo_config

DEMO_GROUP = "demo"


def _demo_config(settings: PipelineSettings) -> PipelineConfig:
    try:
        return validate_demo_config(settings.load())
    except ConfigError as error:
        raise dg.Failure(description=f"the embedded demo cannot run with this config: {error}") from None


@dg.asset(
    group_name=DEMO_GROUP,
    description="The demo's synthetic token-classification dataset (train/validation/test JSONL).",
)
def demo_dataset(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    from benchmark_pipeline.demo.dataset import write_dataset

    config = _demo_config(settings)
    paths = write_dataset(config.data_config, config.root_dir)
    return dg.MaterializeResult(
        metadata={
            "directory": dg.MetadataValue.path(str(paths.directory)),
            "test_data_path": dg.MetadataValue.path(str(paths.test)),
            "fingerprint": dg.MetadataValue.text(paths.fingerprint),
        }
    )


@dg.asset(
    group_name=DEMO_GROUP,
    partitions_def=backbone_variant_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[demo_dataset],
    description="An Optuna sweep that trains, exports to ONNX and records each trial in MLflow, study.db and a trial folder.",
)
def hpo_sweep(
    context: dg.AssetExecutionContext, settings: PipelineSettings, mlflow: MlflowResource
) -> dg.MaterializeResult:
    from benchmark_pipeline.demo.sweep import run_sweep

    config = _demo_config(settings)
    pairs = [split_pair_key(str(key)) for key in context.partition_keys]  # one run may sweep several pairs
    unknown = [f"{b}|{v}" for b, v in pairs if b not in config.backbones or v not in config.variants]
    if unknown:
        raise dg.Failure(
            description=f"the sweep(s) {', '.join(unknown)} are not in the config ({config.source_path}): "
            f"backbones {list(config.backbones)}, variants {list(config.variants)}"
        )
    client = mlflow.client()
    for backbone, variant in pairs:
        with forward_core_logs(context):
            summary = run_sweep(config, backbone, variant, client, progress=context.log.info)
        context.instance.add_dynamic_partitions(PAIRS_REGISTRY, [pair_key(backbone, variant)])
        context.add_asset_metadata(
            {
                "study_name": summary.study_name,
                "study_key_hash": summary.study_key_hash,
                "storage": summary.storage_url,
                "trials_in_study": summary.trials_in_study,
                "trials_run_now": summary.trials_run_now,
                "best_value": float(summary.best_value) if summary.best_value is not None else float("nan"),
                "mlflow_experiment_id": summary.experiment_id,
            },
            partition_key=pair_key(backbone, variant),
        )
    return dg.MaterializeResult()
