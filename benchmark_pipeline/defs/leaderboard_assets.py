"""``leaderboard`` (not partitioned): every backbone × variant's best trial, its accuracy and its latency.

It benchmarks nothing: it reads the stored results of the per-variant best trials (MLflow, else the disk
cache), shows a table and an accuracy-vs-latency chart in the UI, and logs both to an MLflow run in the
benchmark experiment. Picks not benchmarked yet are listed as such.
"""

from typing import Any

import dagster as dg

from benchmark_pipeline.benchmarking.leaderboard import (
    collect_leaderboard,
    format_leaderboard_table,
    leaderboard_chart,
    leaderboard_rows,
    log_leaderboard,
)
from benchmark_pipeline.defs.benchmark_assets import (
    benchmark_result,
    benchmark_result_per_variant,
)
from benchmark_pipeline.defs.log_forwarding import forward_core_logs
from benchmark_pipeline.defs.metadata import image_markdown, mlflow_run_url
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.selection.trial_retrieval import NoTrialsFoundError
from benchmark_pipeline.tracking import resolve_experiment_id

_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("backbone", "string"),
        dg.TableColumn("variant", "string"),
        dg.TableColumn("overall_best", "bool", description="the backbone's best trial across variants"),
        dg.TableColumn("trial_id", "string"),
        dg.TableColumn("hpo_metric", "float"),
        dg.TableColumn("test_macro_f1", "float"),
        dg.TableColumn("backend", "string"),
        dg.TableColumn("p50_ms", "float", description="at the smallest batch size"),
        dg.TableColumn("p95_ms", "float"),
        dg.TableColumn("samples_per_s", "float", description="at the largest batch size"),
        dg.TableColumn("status", "string"),
    ]
)


def _record(row: dict[str, Any]) -> dg.TableRecord:
    values = {name: row[name] for name in (c.name for c in _SCHEMA.columns)}
    values["trial_id"] = row["trial_id"][:16]
    return dg.TableRecord({k: ("" if v is None else v) for k, v in values.items()})


@dg.asset(
    group_name="benchmarks",
    deps=[benchmark_result, benchmark_result_per_variant],
    description="Leaderboard of the best trial of every backbone × variant: accuracy vs latency (reads stored benchmarks).",
)
def leaderboard(
    context: dg.AssetExecutionContext, settings: PipelineSettings, mlflow: MlflowResource
) -> dg.MaterializeResult:
    config = settings.load()
    client = mlflow.client()
    with forward_core_logs(context):
        try:
            per_variant, overall, stored = collect_leaderboard(config, client)
        except NoTrialsFoundError as error:
            raise dg.Failure(description=str(error)) from None
    rows = leaderboard_rows(per_variant, overall, stored, config.data_config, config.benchmark_config)
    chart = leaderboard_chart(rows, config.layout.charts_dir / "accuracy_vs_latency.png")
    table = format_leaderboard_table(rows)
    context.log.info("leaderboard:\n" + table)
    run_id = log_leaderboard(client, config.benchmark_experiment(), config.root_dir, rows, chart)
    missing = sorted({f"{r['backbone']}|{r['variant']}" for r in rows if r["status"] != "benchmarked"})
    metadata: dict[str, Any] = {
        "leaderboard": dg.MetadataValue.table([_record(r) for r in rows], schema=_SCHEMA),
        "accuracy_vs_latency": dg.MetadataValue.md(image_markdown(chart, "accuracy vs latency")),
        "chart_path": dg.MetadataValue.path(str(chart)),
        "table": dg.MetadataValue.md(f"```\n{table}\n```"),
        "not_benchmarked": dg.MetadataValue.json(missing),
        "mlflow_run_id": dg.MetadataValue.text(run_id),
    }
    url = mlflow_run_url(mlflow.tracking_uri, resolve_experiment_id(client, config.benchmark_experiment()), run_id)
    if url:
        metadata["mlflow_run"] = dg.MetadataValue.url(url)
    return dg.MaterializeResult(metadata=metadata)
