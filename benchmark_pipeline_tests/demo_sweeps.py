"""Real demo sweeps in one root (:func:`train_demo_sweeps`), the session's ``demo_sweeps`` fixture trains them once."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

from benchmark_pipeline.config import PipelineConfig, config_from_dict
from benchmark_pipeline_tests.tiny_config import tiny_config_dict, unique_suffix


@dataclass(frozen=True)
class DemoSweeps:
    """The result of :func:`train_demo_sweeps`: the config and one ``SweepSummary`` per (backbone, variant)."""

    config: PipelineConfig
    summaries: dict[tuple[str, str], Any]

    @property
    def hpo_dir(self) -> Path:
        return self.config.hpo_output_dir

    def private_config_file(self, root: Path) -> tuple[Path, dict[str, Any]]:
        """``root/pipeline.yaml`` (and its raw dict): a config reading a private copy of these sweeps' trial
        folders (the test may break files in it), these sweeps' MLflow HPO experiments and dataset, and a
        benchmark experiment of its own."""
        hpo_copy = root / "hpo"
        shutil.copytree(self.hpo_dir, hpo_copy)
        raw = tiny_config_dict(root, self.config.mlflow.tracking_uri, suffix=unique_suffix())
        raw["mlflow"]["hpo_experiment_prefix"] = self.config.mlflow.hpo_experiment_prefix
        raw["hpo_output_dir"] = str(hpo_copy)
        # The sweeps' own dataset, read (never written) by the benchmark.
        data_dir = self.config.root_dir / self.config.data_config["local_path"]
        raw["data_config"]["local_path"] = str(data_dir)
        raw["benchmark_config"]["test_data"] = str(data_dir / "test.jsonl")
        path = root / "pipeline.yaml"
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        return path, raw


def train_demo_sweeps(tracking_uri: str, root: Path) -> DemoSweeps:
    """Real sweeps: tiny_transformer and bilstm x v1 and v2 x 3 trials (1 epoch each) in ``root``, tracked to
    ``tracking_uri`` under experiment names of their own."""
    from benchmark_pipeline.demo.sweep import run_sweep

    config = config_from_dict(tiny_config_dict(root, tracking_uri, suffix=f"demo-{unique_suffix()}"), env={})
    client = MlflowClient(tracking_uri=tracking_uri)
    summaries = {
        (backbone, variant): run_sweep(config, backbone, variant, client=client, progress=lambda _message: None)
        for backbone in config.backbones
        for variant in config.variants
    }
    return DemoSweeps(config=config, summaries=summaries)
