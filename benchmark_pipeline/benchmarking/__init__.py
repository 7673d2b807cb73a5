"""Stable benchmark identity, existence checks, the inference benchmark and its orchestration."""

from benchmark_pipeline.benchmarking.backends import ModelFileError, ProviderMismatchError
from benchmark_pipeline.benchmarking.existence import (
    benchmark_already_exists,
    benchmark_exists_in_mlflow,
    benchmark_exists_on_disk,
    fetch_benchmark_runs,
    find_existing_benchmark,
)
from benchmark_pipeline.benchmarking.keys import (
    build_benchmark_key,
    compute_config_hash,
    compute_data_fingerprint,
    key_for_trial,
    parse_benchmark_key,
)
from benchmark_pipeline.benchmarking.orchestrator import (
    BenchmarkFailedError,
    benchmark_best_trials,
    filter_missing_benchmarks,
)
from benchmark_pipeline.benchmarking.report import format_benchmark_table
from benchmark_pipeline.benchmarking.runner import BenchmarkResult, run_benchmark

__all__ = [
    "BenchmarkFailedError",
    "BenchmarkResult",
    "ModelFileError",
    "ProviderMismatchError",
    "benchmark_already_exists",
    "benchmark_best_trials",
    "benchmark_exists_in_mlflow",
    "benchmark_exists_on_disk",
    "build_benchmark_key",
    "compute_config_hash",
    "compute_data_fingerprint",
    "fetch_benchmark_runs",
    "find_existing_benchmark",
    "filter_missing_benchmarks",
    "format_benchmark_table",
    "key_for_trial",
    "parse_benchmark_key",
    "run_benchmark",
]
