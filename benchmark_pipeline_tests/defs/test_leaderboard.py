"""The latency chart in benchmark metadata and the unpartitioned ``leaderboard`` asset, on a real Dagster
instance against the real MLflow server and a private copy of the demo sweeps (conftest's ``dagster_setup``)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import dagster as dg

from benchmark_pipeline.benchmarking.leaderboard import (
    LEADERBOARD_DIGEST_TAG,
    LEADERBOARD_TAG,
    format_leaderboard_table,
)
from benchmark_pipeline.defs.benchmark_assets import benchmark_result_per_variant
from benchmark_pipeline.defs.leaderboard_assets import leaderboard
from benchmark_pipeline.defs.partitions import multi_key
from benchmark_pipeline.defs.selection_assets import best_trial_per_variant

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return event.materialization.metadata


def _inline_png(markdown: str) -> bytes:
    assert markdown.startswith("![") and "(data:image/png;base64," in markdown, markdown[:80]
    return base64.b64decode(markdown.split("base64,", 1)[1].rstrip(")"))


def test_benchmark_chart_and_leaderboard(dagster_setup: dict[str, Any]) -> None:
    config, resources, instance, client = (dagster_setup[k] for k in ("config", "resources", "instance", "client"))
    benchmarked = dg.materialize(
        [best_trial_per_variant, benchmark_result_per_variant],
        partition_key=multi_key("bilstm", "v2"),
        instance=instance,
        resources=resources,
    )
    bench_meta = _metadata(benchmarked, "benchmark_result_per_variant")
    assert _inline_png(bench_meta["latency_chart"].value).startswith(PNG_MAGIC)
    chart_file = Path(bench_meta["latency_chart_path"].value)
    assert chart_file.is_file() and chart_file.is_relative_to(
        config.root_dir / "outputs" / "benchmarking" / "test" / "charts"
    )
    key = bench_meta["benchmark_key"].value

    # The per-variant materialization logged progress: backend and batch size i/n with elapsed and remaining time.
    logs = [e.message for e in instance.all_logs(benchmarked.run_id) if e.message]
    assert any("pytorch batch 4 (4/4)" in m and "elapsed" in m and "left" in m for m in logs), logs[-10:]

    result = dg.materialize([leaderboard], instance=instance, resources=resources)
    meta = _metadata(result, "leaderboard")
    rows = [r.data for r in meta["leaderboard"].value.records]
    # Four picks (2 backbones x 2 variants); the benchmarked one has a row per backend, the others one row each.
    done = [r for r in rows if r["status"] == "benchmarked"]
    assert sorted((r["backbone"], r["variant"], r["backend"]) for r in done) == [
        ("bilstm", "v2", "onnxruntime"),
        ("bilstm", "v2", "pytorch"),
    ]
    assert all(r["p50_ms"] > 0 and 0 <= r["test_macro_f1"] <= 1 for r in done)
    assert sorted(meta["not_benchmarked"].value) == ["bilstm|v1", "tiny_transformer|v1", "tiny_transformer|v2"]
    overall_picks = {(r["backbone"], r["variant"]) for r in rows if r["overall_best"]}
    assert sorted(b for b, _ in overall_picks) == ["bilstm", "tiny_transformer"]  # one overall best per backbone
    assert _inline_png(meta["accuracy_vs_latency"].value).startswith(PNG_MAGIC)

    run = client.get_run(meta["mlflow_run_id"].value)
    assert run.info.status == "FINISHED" and run.data.tags[LEADERBOARD_TAG] == "true"
    assert "benchmark_key" not in run.data.tags  # never mistaken for a benchmark by the existence checks
    assert run.info.experiment_id == client.get_experiment_by_name(config.mlflow.benchmark_experiment).experiment_id
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "leaderboard.json",
        "leaderboard.txt",
        "accuracy_vs_latency.png",
    }
    logged = json.loads(
        Path(client.download_artifacts(run.info.run_id, "leaderboard.json", str(config.root_dir))).read_text()
    )
    assert {r["benchmark_key"] for r in logged if r["status"] == "benchmarked"} == {key}
    table = format_leaderboard_table(logged)
    assert "not benchmarked" in table and "onnxruntime" in table

    # Rematerialized with nothing new benchmarked: the same rows, so the same MLflow run and the same chart file
    # (not redrawn); one leaderboard run in the experiment.
    chart_path = Path(meta["chart_path"].value)
    drawn_at = chart_path.stat().st_mtime_ns
    again = _metadata(dg.materialize([leaderboard], instance=instance, resources=resources), "leaderboard")
    assert again["mlflow_run_id"].value == run.info.run_id
    assert chart_path.stat().st_mtime_ns == drawn_at
    leaderboard_runs = client.search_runs([run.info.experiment_id], filter_string=f"tags.`{LEADERBOARD_TAG}` = 'true'")
    assert [r.info.run_id for r in leaderboard_runs] == [run.info.run_id]

    # A new benchmark changes the rows: a new chart and a new run, with the new digest.
    dg.materialize(
        [best_trial_per_variant, benchmark_result_per_variant],
        partition_key=multi_key("bilstm", "v1"),
        instance=instance,
        resources=resources,
    )
    changed = _metadata(dg.materialize([leaderboard], instance=instance, resources=resources), "leaderboard")
    assert changed["mlflow_run_id"].value != run.info.run_id
    assert chart_path.stat().st_mtime_ns != drawn_at
    new_run = client.get_run(changed["mlflow_run_id"].value)
    assert new_run.data.tags[LEADERBOARD_DIGEST_TAG] != run.data.tags[LEADERBOARD_DIGEST_TAG]
