"""Dagster resources: the pipeline settings and an MLflow client factory.

Each asset asks :class:`MlflowResource` for its own ``MlflowClient`` bound to an explicit tracking URI:
MLflow's fluent API keeps the active run and URI in process-global state, which Dagster's multiprocess
and in-process executors would share between steps.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from mlflow.tracking import MlflowClient

from benchmark_pipeline.config import PipelineConfig, load_config
from benchmark_pipeline.defs.io_manager import PartitionsFilesystemIOManager
from benchmark_pipeline.tracking import make_client


class PipelineSettings(dg.ConfigurableResource):
    """Where the pipeline's YAML config lives (``None``: ``$BENCHMARK_PIPELINE_CONFIG`` or the demo config).

    Environment overrides documented in :mod:`benchmark_pipeline.config` apply on top.
    """

    config_path: str | None = None

    def load(self) -> PipelineConfig:
        return load_config(self.config_path)


class MlflowResource(dg.ConfigurableResource):
    """The MLflow tracking server (or local store) the pipeline reads HPO runs from and logs benchmarks to."""

    tracking_uri: str

    def client(self) -> MlflowClient:
        return make_client(self.tracking_uri)


def default_resources() -> dict[str, Any]:
    """Resources for this deployment: the tracking URI comes from ``$MLFLOW_TRACKING_URI`` when set (shown
    as an environment variable in the UI, never baked in), else from the config file; the IO manager stores
    single-run backfills' outputs (:mod:`~benchmark_pipeline.defs.io_manager`)."""

    settings = PipelineSettings(config_path=os.environ.get("BENCHMARK_PIPELINE_CONFIG") or None)
    tracking_uri: str | dg.EnvVar
    tracking_uri = dg.EnvVar("MLFLOW_TRACKING_URI") if os.environ.get("MLFLOW_TRACKING_URI") else settings.load().mlflow.tracking_uri
    return {"settings": settings, "mlflow": MlflowResource(tracking_uri=tracking_uri), "io_manager": PartitionsFilesystemIOManager()}
