"""Benchmark tables and the latency-vs-batch-size chart."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmark_pipeline.selection.shapes import iter_trial_infos


def headless_pyplot() -> Any:
    """``matplotlib.pyplot`` on the headless Agg backend (Dagster workers, CI and servers have no display),
    imported on first use: it costs ~0.4 s, which loading the code location or a run that draws no chart
    should not pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def benchmark_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (backend, batch size) of a benchmark result."""
    return [
        {
            "backbone": result["backbone"],
            "variant": result["variant"],
            "batch_size": m["batch_size"],
            "backend": m["backend"],
            "provider": m["provider"],
            "p50_ms": m["p50_ms"],
            "p95_ms": m["p95_ms"],
            "samples_per_s": m["throughput_samples_per_s"],
            "count": m["count"],
        }
        for m in result.get("measurements", [])
    ]


def format_benchmark_table(results: Mapping[str, Any]) -> str:
    """Fixed-width table over results of either shape; skipped results show their status and key."""
    header = f"{'Backbone':<18} {'Variant':<8} {'Batch':>5} {'Backend':<12} {'Provider':<22} {'p50 ms':>9} {'p95 ms':>9} {'samples/s':>10}"
    lines = [header, "-" * len(header)]
    for result in iter_trial_infos(results):
        rows = benchmark_rows(result)
        if not rows:
            lines.append(
                f"{result['backbone']:<18} {result['variant']:<8} {result.get('status', '?')}: {result['benchmark_key']}"
            )
        for row in rows:
            lines.append(
                f"{row['backbone']:<18} {row['variant']:<8} {row['batch_size']:>5} {row['backend']:<12} {row['provider']:<22} "
                f"{row['p50_ms']:>9.3f} {row['p95_ms']:>9.3f} {row['samples_per_s']:>10.0f}"
            )
    return "\n".join(lines)


def plot_latency(result: Mapping[str, Any], path: Path) -> Path:
    """p50 latency (with p95 as a dashed line) vs batch size, one colour per backend; written as PNG."""
    plt = headless_pyplot()
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    backends = sorted({m["backend"] for m in result["measurements"]})
    for backend in backends:
        points = sorted(
            (m["batch_size"], m["p50_ms"], m["p95_ms"]) for m in result["measurements"] if m["backend"] == backend
        )
        sizes = [p[0] for p in points]
        line = axis.plot(sizes, [p[1] for p in points], marker="o", label=f"{backend} p50")[0]
        axis.plot(sizes, [p[2] for p in points], linestyle="--", color=line.get_color(), label=f"{backend} p95")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("batch size")
    axis.set_ylabel("latency (ms)")
    axis.set_title(f"{result['backbone']} / {result['variant']}")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
