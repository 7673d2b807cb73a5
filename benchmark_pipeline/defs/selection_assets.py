"""Best-trial selection assets: ``best_trial`` (per backbone, overall scope) and ``best_trial_per_variant``.

Both take ``BackfillPolicy.single_run()``: a run over N partitions makes one retrieval over all their
backbones (:mod:`~benchmark_pipeline.defs.partition_runs` records each partition's result as its own).
"""

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.config import PipelineConfig
from benchmark_pipeline.defs.checks import SOURCES_AGREE, SOURCES_AGREE_DESCRIPTION, sources_agree_result
from benchmark_pipeline.defs.log_forwarding import forward_core_logs
from benchmark_pipeline.defs.metadata import retrieval_metadata
from benchmark_pipeline.defs.partition_runs import PartitionResult, partition_outputs, run_partition_keys
from benchmark_pipeline.defs.partitions import backbone_partitions, backbone_variant_partitions, split_pair_key
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.selection.report import format_selection_table
from benchmark_pipeline.selection.trial_retrieval import NoTrialsFoundError, retrieve_configured_best_trials


def _retrieve(config: PipelineConfig, mlflow: MlflowResource, backbones: Sequence[str], scope: str) -> dict[str, Any]:
    try:
        return retrieve_configured_best_trials(config, scope, mlflow.client(), backbones=list(backbones))
    except (NoTrialsFoundError, ValueError) as error:
        raise dg.Failure(description=str(error)) from None


def _result(
    asset_name: str, config: PipelineConfig, table_input: dict[str, Any], trial_info: dict[str, Any]
) -> PartitionResult:
    key = key_for_trial(trial_info, config.data_config, config.benchmark_config)
    metadata = retrieval_metadata(trial_info, key)  # its benchmark_key entry is what benchmark_sensor reads
    metadata["table"] = dg.MetadataValue.md(f"```\n{format_selection_table(table_input)}\n```")
    return PartitionResult(
        value=trial_info, benchmark_key=key, metadata=metadata, checks=[sources_agree_result(asset_name, trial_info)]
    )


@dg.asset(
    group_name="selection",
    partitions_def=backbone_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        dg.AssetCheckSpec(
            SOURCES_AGREE,
            asset="best_trial",
            partitions_def=backbone_partitions,
            description=SOURCES_AGREE_DESCRIPTION,
        )
    ],
    description="The best trial of a backbone across all variants (MLflow > Optuna study > disk). "
    "Its data version is the benchmark key of that trial.",
)
def best_trial(context: dg.AssetExecutionContext, settings: PipelineSettings, mlflow: MlflowResource) -> Iterator[Any]:
    config = settings.load()
    backbones = run_partition_keys(context)
    with forward_core_logs(context):
        result = _retrieve(config, mlflow, backbones, "overall")
    yield from partition_outputs(
        context, {b: _result("best_trial", config, {b: result[b]}, result[b]) for b in backbones}
    )


@dg.asset(
    group_name="selection",
    partitions_def=backbone_variant_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        dg.AssetCheckSpec(
            SOURCES_AGREE,
            asset="best_trial_per_variant",
            partitions_def=backbone_variant_partitions,
            description=SOURCES_AGREE_DESCRIPTION,
        )
    ],
    description="The best trial of one backbone within one HPO variant. Its data version is the benchmark key of that trial.",
)
def best_trial_per_variant(
    context: dg.AssetExecutionContext, settings: PipelineSettings, mlflow: MlflowResource
) -> Iterator[Any]:
    config = settings.load()
    pairs = {key: split_pair_key(str(key)) for key in run_partition_keys(context)}
    backbones = list(dict.fromkeys(backbone for backbone, _ in pairs.values()))
    with forward_core_logs(context):
        result = _retrieve(config, mlflow, backbones, "per_variant")
    missing = [f"{b}|{v}" for b, v in pairs.values() if v not in result[b]]
    if missing:
        have = {b: sorted(result[b]) for b in backbones}
        raise dg.Failure(
            description=f"no eligible trial for {', '.join(missing)}: "
            + "; ".join(
                f"backbone {b!r} has no eligible trial in variant {v!r}"
                for b, v in (split_pair_key(m) for m in missing)
            )
            + ". The backbone × variant partitions are a full cross-product, and only these variants have trials: "
            + ", ".join(f"{b}: {have[b]}" for b in backbones)
        )
    yield from partition_outputs(
        context,
        {
            key: _result("best_trial_per_variant", config, {b: {v: result[b][v]}}, result[b][v])
            for key, (b, v) in pairs.items()
        },
    )
