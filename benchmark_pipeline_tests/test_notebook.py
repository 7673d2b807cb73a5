"""``notebooks/benchmark_best_trials.ipynb`` executed for real (nbclient, a kernel on this venv's Python) against a
private copy of the demo sweeps and the session's MLflow server: retrieve → filter → benchmark, twice."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from benchmark_pipeline_tests.demo_sweeps import DemoSweeps

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "benchmark_best_trials.ipynb"
KERNEL = "benchmark-pipeline-test"


def test_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code) >= 5
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), (
        "strip the outputs before committing"
    )


def _execute(workdir: Path) -> tuple[str, list[str]]:
    """Run the notebook in ``workdir``; returns (all text output, MIME types of rich outputs)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(workdir)}}
    ).execute()
    texts, mimes = [], []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                pytest.fail(f"notebook cell failed: {output.get('ename')}: {output.get('evalue')}")
            texts.append(output.get("text", ""))
            mimes.extend(output.get("data", {}))
    return "".join(texts), mimes


def test_notebook_retrieves_filters_then_benchmarks_only_what_is_missing(
    demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kernel spec for this venv's interpreter, found through JUPYTER_PATH (nothing installed for the user).
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": KERNEL,
                "language": "python",
            }
        ),
        encoding="utf-8",
    )
    config_path, raw = demo_sweeps.private_config_file(tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("BENCHMARK_PIPELINE_CONFIG", str(config_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)

    first, mimes = _execute(tmp_path)
    assert f"MLflow      : {mlflow_server}" in first
    assert "Backbone           Variant  Trial ID" in first  # step 1: the retrieval table
    for backbone in ("tiny_transformer", "bilstm"):
        assert f"{backbone} / v" in first and "chosen from mlflow" in first
    assert "    study   available;" in first and "    disk    available;" in first  # why this trial: every source
    assert "skipped (already benchmarked): 0 of 2" in first  # step 2
    assert "benchmarked now: 2" in first  # step 3
    assert "pytorch batch 4 (4/4)" in first and "elapsed" in first and "left" in first  # progress, via INFO logging
    assert mimes.count("image/png") == 2  # one latency chart per selected trial

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(raw["mlflow"]["benchmark_experiment"])
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]

    second, mimes = _execute(tmp_path)
    assert "skipped (already benchmarked): 2 of 2" in second
    assert "benchmarked now: 0" in second and "(1/4)" not in second
    assert mimes.count("image/png") == 2  # the charts come from the stored results
    assert len(client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)) == 2
