"""benchmark_pipeline: deterministic best-trial retrieval and idempotent inference benchmarks.

The workflow (see ``docs/workflow.md``)::

    best = retrieve_best_trials(...)            # 1. MLflow > Optuna study > disk, deterministic
    todo = filter_missing_benchmarks(best, ...)  # 2. drop trials whose benchmark key already exists
    results = benchmark_best_trials(todo, ...)   # 3. benchmark exactly what is left

The Dagster code location lives in :mod:`benchmark_pipeline.definitions`; nothing here imports Dagster.
"""

from benchmark_pipeline.benchmarking import (
    BenchmarkFailedError,
    BenchmarkResult,
    ModelFileError,
    ProviderMismatchError,
    benchmark_already_exists,
    benchmark_best_trials,
    benchmark_exists_in_mlflow,
    benchmark_exists_on_disk,
    build_benchmark_key,
    filter_missing_benchmarks,
    format_benchmark_table,
)
from benchmark_pipeline.config import ConfigError, PipelineConfig, load_config
from benchmark_pipeline.selection import (
    SELECTION_SCOPES,
    NoTrialsFoundError,
    StudyDirectionError,
    compare_sources,
    find_best_trials_for_backbones,
    format_selection_table,
    retrieve_best_trials,
    retrieve_from_disk,
    retrieve_from_mlflow,
    retrieve_from_study,
)

__all__ = [
    "BenchmarkFailedError",
    "BenchmarkResult",
    "ConfigError",
    "ModelFileError",
    "NoTrialsFoundError",
    "PipelineConfig",
    "ProviderMismatchError",
    "SELECTION_SCOPES",
    "StudyDirectionError",
    "benchmark_already_exists",
    "benchmark_best_trials",
    "benchmark_exists_in_mlflow",
    "benchmark_exists_on_disk",
    "build_benchmark_key",
    "compare_sources",
    "filter_missing_benchmarks",
    "find_best_trials_for_backbones",
    "format_benchmark_table",
    "format_selection_table",
    "load_config",
    "retrieve_best_trials",
    "retrieve_from_disk",
    "retrieve_from_mlflow",
    "retrieve_from_study",
]
