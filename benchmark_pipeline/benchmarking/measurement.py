"""How a benchmark is measured: warm-up, timed iterations with a minimum measuring time, and statistics.

Kept apart from *what* is measured (the backends in :mod:`benchmark_pipeline.benchmarking.backends`).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Upper bound on timed iterations per (backend, batch size), whatever ``min_duration_s`` asks for.
MAX_ITERATIONS = 100_000


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one (backend, batch size) in milliseconds, over ``count`` timed runs."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    stdev_ms: float
    cv: float
    throughput_samples_per_s: float
    peak_rss_mb: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_calls(call: Callable[[], object], warmup: int, iterations: int, min_duration_s: float) -> np.ndarray:
    """Run ``call`` ``warmup`` times untimed, then time it with ``perf_counter_ns`` at least ``iterations``
    times and for at least ``min_duration_s`` seconds (capped at :data:`MAX_ITERATIONS`); nanoseconds."""
    if iterations <= 0:
        raise ValueError(f"iterations must be > 0, got {iterations}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        call()
    samples: list[int] = []
    deadline = time.perf_counter_ns() + int(min_duration_s * 1e9)
    clock = time.perf_counter_ns
    while len(samples) < MAX_ITERATIONS and (len(samples) < iterations or clock() < deadline):
        started = clock()
        call()
        samples.append(clock() - started)
    return np.asarray(samples, dtype=np.float64)


def summarize(samples_ns: np.ndarray, batch_size: int) -> LatencyStats:
    """Statistics of timed samples; percentiles use linear interpolation, stdev is the sample stdev."""
    ms = samples_ns / 1e6
    mean = float(ms.mean())
    stdev = float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
    return LatencyStats(
        count=len(ms),
        mean_ms=mean,
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        stdev_ms=stdev,
        cv=stdev / mean if mean > 0 else 0.0,
        throughput_samples_per_s=batch_size / (mean / 1e3) if mean > 0 else 0.0,
        peak_rss_mb=peak_rss_mb(),
    )
