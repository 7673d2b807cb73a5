"""Stable benchmark identity, existence checks, the inference benchmark and its orchestration.

Names are loaded on first use, so importing a submodule (``keys``, ``cache``) does not import the runner,
onnxruntime or torch.
"""

from __future__ import annotations

from benchmark_pipeline._lazy_exports import lazy_getattr

_EXPORTS: dict[str, str] = {
    "BenchmarkFailedError": "orchestrator",
    "BenchmarkResult": "runner",
    "ModelFileError": "backends",
    "ProviderMismatchError": "backends",
    "ResultStore": "existence",
    "benchmark_already_exists": "existence",
    "benchmark_best_trials": "orchestrator",
    "benchmark_exists_in_mlflow": "existence",
    "benchmark_exists_on_disk": "existence",
    "build_benchmark_key": "keys",
    "compute_config_hash": "keys",
    "compute_data_fingerprint": "keys",
    "fetch_benchmark_runs": "existence",
    "find_existing_benchmark": "existence",
    "filter_missing_benchmarks": "orchestrator",
    "format_benchmark_table": "report",
    "key_for_trial": "keys",
    "parse_benchmark_key": "keys",
    "run_benchmark": "runner",
}

__all__ = [  # the keys of _EXPORTS, written out for linters (test_layering checks they match)
    "BenchmarkFailedError",
    "BenchmarkResult",
    "ModelFileError",
    "ProviderMismatchError",
    "ResultStore",
    "benchmark_already_exists",
    "benchmark_best_trials",
    "benchmark_exists_in_mlflow",
    "benchmark_exists_on_disk",
    "build_benchmark_key",
    "compute_config_hash",
    "compute_data_fingerprint",
    "fetch_benchmark_runs",
    "filter_missing_benchmarks",
    "find_existing_benchmark",
    "format_benchmark_table",
    "key_for_trial",
    "parse_benchmark_key",
    "run_benchmark",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
