"""The leaderboard: the best trial of every backbone × variant, its accuracy and its measured latency.

Dagster-free. :func:`collect_leaderboard` retrieves the per-variant best trials and reads each one's stored
benchmark (nothing is benchmarked here); :func:`leaderboard_rows` turns them into one row per
(backbone, variant, backend); :func:`format_leaderboard_table` and :func:`plot_leaderboard` render them and
:func:`log_leaderboard` logs both to an MLflow run in the benchmark experiment.

Latency is the p50 at the smallest configured batch size (the latency a single request sees); throughput is
at the largest. Accuracy is the benchmark's test macro-F1 (measured on the test split with ONNX Runtime),
with the HPO objective value alongside.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from benchmark_pipeline.benchmarking.existence import ResultStore
from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.benchmarking.report import headless_pyplot
from benchmark_pipeline.config import PipelineConfig
from benchmark_pipeline.selection.shapes import iter_trial_infos
from benchmark_pipeline.selection.trial_retrieval import retrieve_configured_best_trials
from benchmark_pipeline.tracking import default_artifact_location, get_or_create_experiment

#: Tag that marks leaderboard runs in the benchmark experiment (they carry no ``benchmark_key``).
LEADERBOARD_TAG = "benchmark_pipeline.leaderboard"
#: Tag holding :func:`leaderboard_digest` of a leaderboard run's rows: the same rows reuse that run.
LEADERBOARD_DIGEST_TAG = "benchmark_pipeline.leaderboard_digest"

COLUMNS = (
    "backbone", "variant", "overall_best", "trial_id", "trial_number", "source", "hpo_metric_name", "hpo_metric",
    "test_macro_f1", "backend", "provider", "latency_batch_size", "p50_ms", "p95_ms", "throughput_batch_size",
    "samples_per_s", "status", "benchmark_key", "mlflow_run_id",
)  # fmt: skip


def collect_leaderboard(
    config: PipelineConfig, client: MlflowClient | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any] | None]]:
    """``(per_variant, overall, stored)``: the best trial of each backbone × variant and of each backbone, and
    the stored benchmark of each per-variant pick by benchmark key (``None`` where not benchmarked yet)."""
    per_variant = retrieve_configured_best_trials(config, "per_variant", client)
    overall = retrieve_configured_best_trials(config, "overall", client)
    store = ResultStore.at(config.root_dir, config.environment, config.benchmark_experiment(), client)
    stored: dict[str, dict[str, Any] | None] = {}
    for info in iter_trial_infos(per_variant):
        key = key_for_trial(info, config.data_config, config.benchmark_config)
        stored[key] = store.find(key)
    return per_variant, overall, stored


def leaderboard_rows(
    per_variant: Mapping[str, Any],
    overall: Mapping[str, Any],
    stored: Mapping[str, Mapping[str, Any] | None],
    data_config: Mapping[str, Any],
    benchmark_config: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One row per (backbone, variant, backend), best accuracy first; a pick without a stored benchmark gets
    one row with ``status: not benchmarked`` and empty latency fields."""
    overall_ids = {backbone: info["trial_id"] for backbone, info in overall.items()}
    rows: list[dict[str, Any]] = []
    for info in iter_trial_infos(per_variant):
        key = key_for_trial(info, data_config, benchmark_config)
        result = stored.get(key)
        base = {
            "backbone": info["backbone"],
            "variant": info["variant"],
            "overall_best": overall_ids.get(info["backbone"]) == info["trial_id"],
            "trial_id": info["trial_id"],
            "trial_number": info.get("trial_number"),
            "source": info["source"],
            "hpo_metric_name": info["metric_name"],
            "hpo_metric": float(info["metric"]),
            "benchmark_key": key,
        }
        if not result or not result.get("measurements"):
            rows.append({**base, "test_macro_f1": None, "backend": None, "provider": None, "latency_batch_size": None, "p50_ms": None,
                         "p95_ms": None, "throughput_batch_size": None, "samples_per_s": None, "status": "not benchmarked", "mlflow_run_id": None})  # fmt: skip
            continue
        quality = result.get("quality") or {}
        for backend in sorted({m["backend"] for m in result["measurements"]}):
            by_size = sorted(
                (m for m in result["measurements"] if m["backend"] == backend), key=lambda m: m["batch_size"]
            )
            smallest, largest = by_size[0], by_size[-1]
            rows.append(
                {
                    **base,
                    "test_macro_f1": float(quality["test_macro_f1"]) if "test_macro_f1" in quality else None,
                    "backend": backend,
                    "provider": smallest["provider"],
                    "latency_batch_size": smallest["batch_size"],
                    "p50_ms": float(smallest["p50_ms"]),
                    "p95_ms": float(smallest["p95_ms"]),
                    "throughput_batch_size": largest["batch_size"],
                    "samples_per_s": float(largest["throughput_samples_per_s"]),
                    "status": "benchmarked",
                    "mlflow_run_id": result.get("mlflow_run_id"),
                }
            )
    rows.sort(key=lambda r: (-(_accuracy(r) or float("-inf")), r["backbone"], r["variant"], r["backend"] or ""))
    return rows


def _accuracy(row: Mapping[str, Any]) -> float | None:
    return row["test_macro_f1"] if row.get("test_macro_f1") is not None else row.get("hpo_metric")


def format_leaderboard_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Fixed-width table of :func:`leaderboard_rows` (``*`` marks each backbone's overall best trial)."""
    header = (
        f"  {'Backbone':<18} {'Variant':<8} {'Trial ID':<14} {'HPO metric':>10} {'test F1':>8} {'Backend':<12} "
        f"{'bs':>3} {'p50 ms':>9} {'p95 ms':>9} {'samples/s':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        star = "*" if r["overall_best"] else " "
        start = f"{star} {r['backbone']:<18} {r['variant']:<8} {r['trial_id'][:12]:<14} {r['hpo_metric']:>10.4f} "
        if r["status"] != "benchmarked":
            lines.append(start + f"{'-':>8} {r['status']}")
            continue
        f1 = f"{r['test_macro_f1']:.4f}" if r["test_macro_f1"] is not None else "-"
        lines.append(
            start
            + f"{f1:>8} {r['backend']:<12} {r['latency_batch_size']:>3} {r['p50_ms']:>9.3f} {r['p95_ms']:>9.3f} {r['samples_per_s']:>10.0f}"
        )
    lines.append(
        "(* = the backbone's overall best trial; latency at the smallest batch size, throughput at the largest)"
    )
    return "\n".join(lines)


def leaderboard_digest(rows: Sequence[Mapping[str, Any]]) -> str:
    """The leaderboard's identity: a digest of its rows (in order). Rematerializing with nothing new
    benchmarked gives the same rows, and then neither a chart nor an MLflow run is made again."""
    return hashlib.sha256(json.dumps(list(rows), sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def _digest_file(chart: Path) -> Path:
    return chart.with_name(chart.name + ".digest")


def leaderboard_chart(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The chart of ``rows`` at ``path``: drawn by :func:`plot_leaderboard` unless the file there was drawn from
    the same rows (its ``.digest`` file names them), so a rerun with nothing new imports no matplotlib."""
    digest = leaderboard_digest(rows)
    marker = _digest_file(path)
    if path.is_file() and marker.is_file() and marker.read_text(encoding="utf-8").strip() == digest:
        return path
    marker.unlink(missing_ok=True)  # the digest is written after the chart, so a half-written chart is redrawn
    plot_leaderboard(rows, path)
    marker.write_text(digest + "\n", encoding="utf-8")
    return path


def plot_leaderboard(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Accuracy (test macro-F1, else the HPO metric) vs p50 latency: one colour per backbone, one marker per
    backend, each point labelled with its variant; the overall best trials are drawn larger. PNG."""
    plt = headless_pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=100)
    benchmarked = [r for r in rows if r["status"] == "benchmarked"]
    backbones = sorted({r["backbone"] for r in benchmarked})
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backbones)}
    markers = {"onnxruntime": "o", "pytorch": "s"}
    seen: set[tuple[str, str]] = set()
    for r in benchmarked:
        label = f"{r['backbone']} ({r['backend']})"
        axis.scatter(
            r["p50_ms"], _accuracy(r), color=colours[r["backbone"]], marker=markers.get(r["backend"], "^"),
            s=110 if r["overall_best"] else 45, edgecolors="black" if r["overall_best"] else "none",
            label=None if (r["backbone"], r["backend"]) in seen else label,
        )  # fmt: skip
        seen.add((r["backbone"], r["backend"]))
        axis.annotate(r["variant"], (r["p50_ms"], _accuracy(r)), textcoords="offset points", xytext=(6, 4), fontsize=8)
    batch = next((r["latency_batch_size"] for r in benchmarked), None)
    axis.set_xlabel(f"p50 latency (ms) at batch size {batch}" if batch else "p50 latency (ms)")
    axis.set_ylabel("test macro-F1" if any(r["test_macro_f1"] is not None for r in benchmarked) else "HPO metric")
    axis.set_title("Accuracy vs latency (larger, outlined: overall best per backbone)")
    axis.grid(True, alpha=0.3)
    if benchmarked:
        axis.legend(fontsize=8)
    else:
        axis.text(0.5, 0.5, "nothing benchmarked yet", ha="center", va="center", transform=axis.transAxes)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def log_leaderboard(
    client: MlflowClient,
    benchmark_experiment: Mapping[str, str],
    root_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    chart: Path,
) -> str:
    """A FINISHED MLflow run in the benchmark experiment, tagged ``benchmark_pipeline.leaderboard``, holding
    ``leaderboard.json``, ``leaderboard.txt`` and ``accuracy_vs_latency.png``; returns its run id. A FINISHED
    leaderboard run of the same rows (tag ``benchmark_pipeline.leaderboard_digest``) is reused, not repeated."""
    experiment_id = benchmark_experiment.get("id") or get_or_create_experiment(
        client, benchmark_experiment["name"], default_artifact_location(client.tracking_uri, Path(root_dir))
    )
    digest = leaderboard_digest(rows)
    existing = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{LEADERBOARD_TAG}` = 'true' and tags.`{LEADERBOARD_DIGEST_TAG}` = '{digest}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if existing:
        return str(existing[0].info.run_id)
    tags = {LEADERBOARD_TAG: "true", LEADERBOARD_DIGEST_TAG: digest}
    run_id = client.create_run(experiment_id, run_name="leaderboard", tags=tags).info.run_id
    try:
        with tempfile.TemporaryDirectory(prefix="leaderboard_") as scratch:
            (Path(scratch) / "leaderboard.json").write_text(
                json.dumps(list(rows), indent=2, sort_keys=True), encoding="utf-8"
            )
            (Path(scratch) / "leaderboard.txt").write_text(format_leaderboard_table(rows) + "\n", encoding="utf-8")
            for name in ("leaderboard.json", "leaderboard.txt"):
                client.log_artifact(run_id, str(Path(scratch) / name))
        client.log_artifact(run_id, str(chart))
        client.set_tag(
            run_id, "benchmarked_picks", str(len({r["benchmark_key"] for r in rows if r["status"] == "benchmarked"}))
        )
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return str(run_id)
