"""benchmark_pipeline: deterministic best-trial retrieval and idempotent inference benchmarks.

The workflow (see ``docs/workflow.md``)::

    best = retrieve_best_trials(...)            # 1. MLflow > Optuna study > disk, deterministic
    todo = filter_missing_benchmarks(best, ...)  # 2. drop trials whose benchmark key already exists
    results = benchmark_best_trials(todo, ...)   # 3. benchmark exactly what is left

The Dagster code location lives in :mod:`benchmark_pipeline.definitions`; nothing here imports Dagster.
The public names below are loaded on first use (PEP 562), so ``import benchmark_pipeline`` costs almost
nothing and loads neither torch nor onnxruntime: those are imported when a benchmark runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark_pipeline._lazy_exports import lazy_getattr

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "BenchmarkFailedError": "benchmark_pipeline.benchmarking.orchestrator",
    "BenchmarkResult": "benchmark_pipeline.benchmarking.runner",
    "ModelFileError": "benchmark_pipeline.benchmarking.backends",
    "ProviderMismatchError": "benchmark_pipeline.benchmarking.backends",
    "benchmark_already_exists": "benchmark_pipeline.benchmarking.existence",
    "benchmark_best_trials": "benchmark_pipeline.benchmarking.orchestrator",
    "benchmark_exists_in_mlflow": "benchmark_pipeline.benchmarking.existence",
    "benchmark_exists_on_disk": "benchmark_pipeline.benchmarking.existence",
    "build_benchmark_key": "benchmark_pipeline.benchmarking.keys",
    "filter_missing_benchmarks": "benchmark_pipeline.benchmarking.orchestrator",
    "format_benchmark_table": "benchmark_pipeline.benchmarking.report",
    "ConfigError": "benchmark_pipeline.config",
    "PipelineConfig": "benchmark_pipeline.config",
    "load_config": "benchmark_pipeline.config",
    "SELECTION_SCOPES": "benchmark_pipeline.selection.trial_retrieval",
    "NoTrialsFoundError": "benchmark_pipeline.selection.trial_retrieval",
    "StudyDirectionError": "benchmark_pipeline.selection.trial_retrieval",
    "compare_sources": "benchmark_pipeline.selection.trial_retrieval",
    "find_best_trials_for_backbones": "benchmark_pipeline.selection.trial_finder",
    "format_selection_table": "benchmark_pipeline.selection.report",
    "retrieve_best_trials": "benchmark_pipeline.selection.trial_retrieval",
    "retrieve_configured_best_trials": "benchmark_pipeline.selection.trial_retrieval",
    "retrieve_from_disk": "benchmark_pipeline.selection.trial_retrieval",
    "retrieve_from_mlflow": "benchmark_pipeline.selection.trial_retrieval",
    "retrieve_from_study": "benchmark_pipeline.selection.trial_retrieval",
}

__all__ = [  # the keys of _EXPORTS, written out for linters (test_layering checks they match)
    "SELECTION_SCOPES",
    "BenchmarkFailedError",
    "BenchmarkResult",
    "ConfigError",
    "ModelFileError",
    "NoTrialsFoundError",
    "PipelineConfig",
    "ProviderMismatchError",
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
    "retrieve_configured_best_trials",
    "retrieve_from_disk",
    "retrieve_from_mlflow",
    "retrieve_from_study",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from benchmark_pipeline.benchmarking.backends import ModelFileError, ProviderMismatchError
    from benchmark_pipeline.benchmarking.existence import (
        benchmark_already_exists,
        benchmark_exists_in_mlflow,
        benchmark_exists_on_disk,
    )
    from benchmark_pipeline.benchmarking.keys import build_benchmark_key
    from benchmark_pipeline.benchmarking.orchestrator import (
        BenchmarkFailedError,
        benchmark_best_trials,
        filter_missing_benchmarks,
    )
    from benchmark_pipeline.benchmarking.report import format_benchmark_table
    from benchmark_pipeline.benchmarking.runner import BenchmarkResult
    from benchmark_pipeline.config import ConfigError, PipelineConfig, load_config
    from benchmark_pipeline.selection.report import format_selection_table
    from benchmark_pipeline.selection.trial_finder import find_best_trials_for_backbones
    from benchmark_pipeline.selection.trial_retrieval import (
        SELECTION_SCOPES,
        NoTrialsFoundError,
        StudyDirectionError,
        compare_sources,
        retrieve_best_trials,
        retrieve_configured_best_trials,
        retrieve_from_disk,
        retrieve_from_mlflow,
        retrieve_from_study,
    )
