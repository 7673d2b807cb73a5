"""Every default output path, from its one home (benchmark_pipeline.layout), spelled out as it always was."""

from __future__ import annotations

from pathlib import Path

from benchmark_pipeline.benchmarking.cache import cache_dir
from benchmark_pipeline.benchmarking.model_files import allowed_model_roots
from benchmark_pipeline.config import config_from_dict
from benchmark_pipeline.defs.benchmark_assets import latency_chart_path
from benchmark_pipeline.defs.io_managers import default_io_base_path
from benchmark_pipeline.demo.dataset import dataset_directory
from benchmark_pipeline.hashing import data_fingerprint
from benchmark_pipeline.layout import Layout, RootLayout
from benchmark_pipeline.tracking import default_artifact_location
from benchmark_pipeline_tests.tiny_config import tiny_config_dict


def test_layout_paths_are_the_documented_ones(tmp_path: Path) -> None:
    layout = Layout(tmp_path, "prod")
    outputs = tmp_path / "outputs"
    assert layout.outputs_dir == outputs
    assert layout.default_hpo_dir == outputs / "hpo" / "prod"
    assert layout.benchmark_cache_dir == outputs / "benchmarking" / "prod" / "cache"
    assert layout.charts_dir == outputs / "benchmarking" / "prod" / "charts"
    assert layout.dagster_io_dir == outputs / "dagster_io" / "prod"
    assert layout.mlflow_db == outputs / "mlflow" / "mlflow.db"
    assert layout.default_tracking_uri == f"sqlite:///{outputs / 'mlflow' / 'mlflow.db'}"
    assert layout.mlflow_artifacts_dir == outputs / "mlflow" / "artifacts"
    assert layout.data_dir == outputs / "data"
    # What every environment of a root shares does not depend on the environment.
    assert RootLayout(tmp_path).mlflow_db == Layout(tmp_path, "other").mlflow_db == layout.mlflow_db


def test_every_module_builds_its_default_paths_from_the_layout(tmp_path: Path) -> None:
    config = config_from_dict(tiny_config_dict(tmp_path), env={})
    layout = config.layout
    assert layout == Layout(tmp_path.resolve(), "test")
    assert config.hpo_output_dir == layout.default_hpo_dir == tmp_path.resolve() / "outputs" / "hpo" / "test"
    assert config.mlflow.tracking_uri == layout.default_tracking_uri
    assert cache_dir(config.root_dir, "test") == layout.benchmark_cache_dir
    assert allowed_model_roots(config.root_dir, "test", []) == [layout.default_hpo_dir]
    assert default_io_base_path(config) == str(tmp_path.resolve() / "outputs" / "dagster_io" / "test")
    assert default_artifact_location("sqlite:///x.db", config.root_dir) == layout.mlflow_artifacts_dir.as_uri()
    assert default_artifact_location("http://mlflow:5000", config.root_dir) is None
    key = "bilstm:v1:run:trial:data:config"
    assert latency_chart_path(config.root_dir, "test", key).parent == layout.charts_dir
    data_config = {"name": "synthetic-ner", "version": "1"}
    assert dataset_directory(data_config, config.root_dir) == (
        tmp_path.resolve() / "outputs" / "data" / f"synthetic-ner-{data_fingerprint(data_config)}"
    )
