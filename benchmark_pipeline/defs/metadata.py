"""Dagster metadata for the UI: retrieval and benchmark tables, keys, providers, MLflow links."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg

from benchmark_pipeline.benchmarking.report import benchmark_rows
from benchmark_pipeline.selection.records import SOURCE_PRIORITY
from benchmark_pipeline.selection.report import agreement_label
from benchmark_pipeline.tracking import is_remote


def mlflow_run_url(tracking_uri: str, experiment_id: str | None, run_id: str | None) -> str | None:
    """Link to a run in the MLflow UI; ``None`` for local stores (no UI serves them)."""
    if not run_id or not experiment_id or not is_remote(tracking_uri):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{quote(str(experiment_id))}/runs/{quote(run_id)}"


_RETRIEVAL_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("source", "string"),
        dg.TableColumn("chosen", "bool"),
        dg.TableColumn("available", "bool"),
        dg.TableColumn("eligible", "int"),
        dg.TableColumn("pick_trial_id", "string"),
        dg.TableColumn("pick_metric", "float"),
        dg.TableColumn("ineligible", "string"),
        dg.TableColumn("error", "string"),
    ]
)


def retrieval_metadata(trial_info: Mapping[str, Any], benchmark_key: str) -> dict[str, Any]:
    """One row per source (what it picked, how many were eligible, why others were not) plus identity."""
    rows = []
    for source in SOURCE_PRIORITY:
        candidate = trial_info["candidates"][source]
        pick = candidate.get("pick") or {}
        rows.append(
            dg.TableRecord(
                {
                    "source": source,
                    "chosen": source == trial_info["source"],
                    "available": bool(candidate["available"]),
                    "eligible": int(candidate["eligible"]),
                    "pick_trial_id": (pick.get("trial_id") or "")[:16],
                    "pick_metric": float(pick["metric"]) if pick else float("nan"),
                    "ineligible": ", ".join(f"{k}={v}" for k, v in candidate["ineligible"].items()) or "-",
                    "error": candidate.get("error") or "",
                }
            )
        )
    return {
        "retrieval": dg.MetadataValue.table(rows, schema=_RETRIEVAL_SCHEMA),
        "source": dg.MetadataValue.text(trial_info["source"]),
        "agreement": dg.MetadataValue.text(agreement_label(trial_info)),
        "trial_id": dg.MetadataValue.text(trial_info["trial_id"]),
        "trial_number": dg.MetadataValue.int(int(trial_info["trial_number"]))
        if trial_info.get("trial_number") is not None
        else dg.MetadataValue.text("unknown"),
        "variant": dg.MetadataValue.text(trial_info["variant"]),
        "metric": dg.MetadataValue.float(float(trial_info["metric"])),
        "metric_name": dg.MetadataValue.text(trial_info["metric_name"]),
        "hpo_run_id": dg.MetadataValue.text(trial_info.get("run_id") or "unknown"),
        "hyperparameters": dg.MetadataValue.json(trial_info.get("hyperparameters") or {}),
        "benchmark_key": dg.MetadataValue.text(benchmark_key),
    }


_LATENCY_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("backend", "string"),
        dg.TableColumn("batch_size", "int"),
        dg.TableColumn("provider", "string"),
        dg.TableColumn("p50_ms", "float"),
        dg.TableColumn("p95_ms", "float"),
        dg.TableColumn("samples_per_s", "float"),
        dg.TableColumn("count", "int"),
    ]
)


def image_markdown(png: Path, alt: str) -> str:
    """Markdown showing ``png`` inline (a base64 ``data:`` URI, so the UI needs no file access)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode('ascii')})"


def benchmark_metadata(
    result: Mapping[str, Any], status: str, run_url: str | None, chart: Path | None = None
) -> dict[str, Any]:
    rows = [
        dg.TableRecord(
            {
                k: round(row[k], 4) if isinstance(row[k], float) else row[k]
                for k in ("backend", "batch_size", "provider", "p50_ms", "p95_ms", "samples_per_s", "count")
            }
        )
        for row in benchmark_rows(result)
    ]
    metadata: dict[str, Any] = {
        "status": dg.MetadataValue.text(status),
        "benchmark_key": dg.MetadataValue.text(result["benchmark_key"]),
        "latency": dg.MetadataValue.table(rows, schema=_LATENCY_SCHEMA),
        "providers_used": dg.MetadataValue.json(result.get("providers_used") or {}),
        "quality": dg.MetadataValue.json(result.get("quality") or {}),
        "mlflow_run_id": dg.MetadataValue.text(result.get("mlflow_run_id") or "none"),
    }
    if run_url:
        metadata["mlflow_run"] = dg.MetadataValue.url(run_url)
    if chart is not None:
        metadata["latency_chart"] = dg.MetadataValue.md(image_markdown(chart, "latency vs batch size"))
        metadata["latency_chart_path"] = dg.MetadataValue.path(str(chart))
    return metadata
