"""Builders of records the tests need in many places (library code of the suite, not fixtures)."""

from __future__ import annotations

from typing import Any

from benchmark_pipeline.benchmarking.keys import parse_benchmark_key


def complete_result(benchmark_key: str, p50_ms: float = 1.0, **overrides: Any) -> dict[str, Any]:
    """A benchmark result with every field the disk cache requires (cache.REQUIRED_RESULT_FIELDS), as a
    real benchmark writes it, for ``benchmark_key``; ``overrides`` replace fields."""
    parts = parse_benchmark_key(benchmark_key)
    measurement = {
        "backend": "onnxruntime", "batch_size": 1, "provider": "CPUExecutionProvider", "count": 3, "mean_ms": p50_ms,
        "p50_ms": p50_ms, "p90_ms": p50_ms, "p95_ms": p50_ms, "p99_ms": p50_ms, "stdev_ms": 0.0, "cv": 0.0,
        "throughput_samples_per_s": 1000.0 / p50_ms, "peak_rss_mb": 100.0,
    }  # fmt: skip
    result = {
        "benchmark_key": benchmark_key, "backbone": parts.backbone, "variant": parts.variant, "trial_id": parts.trial_id,
        "hpo_run_id": None if parts.run_id == "unknown" else parts.run_id, "benchmark_config": {"batch_sizes": [1]},
        "measurements": [measurement], "quality": {"test_examples": 1.0}, "environment": {"python": "3.11"},
        "started_at": 0.0, "duration_s": 0.1, "providers_used": {"onnxruntime": "CPUExecutionProvider"},
    }  # fmt: skip
    return {**result, **overrides}
