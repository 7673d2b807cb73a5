"""The embedded HPO source: a synthetic dataset, small backbones, and Optuna sweeps that really train and
record every trial in MLflow, an Optuna study and a trial folder (the HPO contract)."""

from benchmark_pipeline.hpo.dataset import DatasetPaths, load_split, write_dataset
from benchmark_pipeline.hpo.models import BACKBONES, build_model
from benchmark_pipeline.hpo.sweep import SweepSummary, run_sweep

__all__ = ["BACKBONES", "DatasetPaths", "SweepSummary", "build_model", "load_split", "run_sweep", "write_dataset"]
