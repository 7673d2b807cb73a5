"""Best-trial selection assets: ``best_trial`` (per backbone, overall scope) and ``best_trial_per_variant``."""


from collections.abc import Iterator
from typing import Any

import dagster as dg

from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.config import PipelineConfig
from benchmark_pipeline.defs.checks import SOURCES_AGREE, SOURCES_AGREE_DESCRIPTION, sources_agree_result
from benchmark_pipeline.defs.log_forwarding import forward_core_logs
from benchmark_pipeline.defs.metadata import retrieval_metadata
from benchmark_pipeline.defs.partitions import backbone_partitions, backbone_variant_partitions, partition_pair
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.selection.report import format_selection_table
from benchmark_pipeline.selection.trial_retrieval import NoTrialsFoundError, retrieve_configured_best_trials

def _retrieve(config: PipelineConfig, mlflow: MlflowResource, backbone: str, scope: str) -> dict[str, Any]:
    try:
        return retrieve_configured_best_trials(config, scope, mlflow.client(), backbones=[backbone])
    except (NoTrialsFoundError, ValueError) as error:
        raise dg.Failure(description=str(error)) from None


def _outputs(asset_name: str, config: PipelineConfig, table_input: dict[str, Any], trial_info: dict[str, Any]) -> Iterator[Any]:
    key = key_for_trial(trial_info, config.data_config, config.benchmark_config)
    metadata = retrieval_metadata(trial_info, key)
    metadata["table"] = dg.MetadataValue.md(f"```\n{format_selection_table(table_input)}\n```")
    # The benchmark sensor reads the key back from this metadata entry.
    yield dg.Output(trial_info, metadata=metadata)
    yield sources_agree_result(asset_name, trial_info)


@dg.asset(
    group_name="selection",
    partitions_def=backbone_partitions,
    check_specs=[dg.AssetCheckSpec(SOURCES_AGREE, asset="best_trial", description=SOURCES_AGREE_DESCRIPTION)],
    description="The best trial of a backbone across all variants (MLflow > Optuna study > disk).",
)
def best_trial(context: dg.AssetExecutionContext, settings: PipelineSettings, mlflow: MlflowResource) -> Iterator[Any]:
    config = settings.load()
    backbone = context.partition_key
    with forward_core_logs(context):
        result = _retrieve(config, mlflow, backbone, "overall")
    yield from _outputs("best_trial", config, result, result[backbone])


@dg.asset(
    group_name="selection",
    partitions_def=backbone_variant_partitions,
    check_specs=[dg.AssetCheckSpec(SOURCES_AGREE, asset="best_trial_per_variant", description=SOURCES_AGREE_DESCRIPTION)],
    description="The best trial of one backbone within one HPO variant.",
)
def best_trial_per_variant(context: dg.AssetExecutionContext, settings: PipelineSettings, mlflow: MlflowResource) -> Iterator[Any]:
    config = settings.load()
    backbone, variant = partition_pair(context)
    with forward_core_logs(context):
        result = _retrieve(config, mlflow, backbone, "per_variant")
    if variant not in result[backbone]:
        raise dg.Failure(
            description=f"backbone {backbone!r} has no eligible trial in variant {variant!r}: the backbone × variant "
            f"partitions are a full cross-product, and only {sorted(result[backbone])} have trials for this backbone"
        )
    yield from _outputs("best_trial_per_variant", config, {backbone: {variant: result[backbone][variant]}}, result[backbone][variant])
