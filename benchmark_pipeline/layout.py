"""Every path the pipeline writes under ``{root_dir}/outputs``: one home, so that "where does X live?" is one file.

* :class:`RootLayout`: what every environment of one root shares (the local MLflow store, the demo's datasets);
* :class:`Layout`: what belongs to one environment (HPO trial folders, the benchmark cache and charts, the
  Dagster IO manager's files).

Only default locations live here: ``hpo_output_dir``, ``mlflow.tracking_uri``, ``data_config.local_path`` and
the Dagster IO base path may each point elsewhere (see :mod:`benchmark_pipeline.config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

OUTPUTS_DIR = "outputs"


@dataclass(frozen=True)
class RootLayout:
    """Default paths shared by every environment under ``root_dir``."""

    root_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root_dir", Path(self.root_dir))

    @property
    def outputs_dir(self) -> Path:
        return self.root_dir / OUTPUTS_DIR

    @property
    def mlflow_dir(self) -> Path:
        return self.outputs_dir / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        """The sqlite MLflow store used when ``mlflow.tracking_uri`` is not set."""
        return self.mlflow_dir / "mlflow.db"

    @property
    def default_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        """Artifact root of the experiments this project creates in a local (non-HTTP) MLflow store."""
        return self.mlflow_dir / "artifacts"

    @property
    def data_dir(self) -> Path:
        """Where the embedded demo writes its datasets when ``data_config.local_path`` is not set."""
        return self.outputs_dir / "data"


@dataclass(frozen=True)
class Layout(RootLayout):
    """Default paths of one ``environment`` under ``root_dir``."""

    environment: str

    @property
    def default_hpo_dir(self) -> Path:
        """The HPO trial folders (and the sweeps' sqlite studies) when ``hpo_output_dir`` is not set."""
        return self.outputs_dir / "hpo" / self.environment

    @property
    def benchmarking_dir(self) -> Path:
        return self.outputs_dir / "benchmarking" / self.environment

    @property
    def benchmark_cache_dir(self) -> Path:
        """One JSON file per benchmark key (:mod:`benchmark_pipeline.benchmarking.cache`)."""
        return self.benchmarking_dir / "cache"

    @property
    def charts_dir(self) -> Path:
        """Latency charts per benchmark and the leaderboard's chart."""
        return self.benchmarking_dir / "charts"

    @property
    def dagster_io_dir(self) -> Path:
        """The Dagster IO manager's base path when ``BENCHMARK_PIPELINE_IO_BASE_PATH`` is not set."""
        return self.outputs_dir / "dagster_io" / self.environment
