"""Benchmark worker processes for the concurrency tests: :data:`WORKER_SCRIPT` runs ``benchmark_best_trials`` from
a JSON spec (:func:`worker_spec`), and :func:`start_together_and_collect` starts several at one moment."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmark_pipeline import retrieve_best_trials
from benchmark_pipeline.demo.dataset import write_dataset
from benchmark_pipeline_tests.demo_sweeps import DemoSweeps

#: The folder the workers run in (the repository root).
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def best_from_disk(demo: DemoSweeps, backbone: str = "bilstm") -> dict[str, Any]:
    """The demo's best trial, retrieved without MLflow (so any MLflow server can serve as benchmark store)."""
    config = demo.config
    return retrieve_best_trials(
        [backbone],
        {},
        None,
        {"hpo_output_dir": str(demo.hpo_dir)},
        config.hpo_config,
        config.data_config,
        config.root_dir,
        config.environment,
    )


WORKER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from mlflow.tracking import MlflowClient
    from benchmark_pipeline import benchmark_best_trials
    spec = json.loads(Path(sys.argv[1]).read_text())
    def progress(message):
        if spec.get("ready_file"):
            Path(spec["ready_file"]).write_text(message)
            time.sleep(600)  # hold here, mid-benchmark, until killed
    if spec.get("barrier_dir"):  # announce readiness, then wait for the common start signal
        Path(spec["barrier_dir"], f"ready-{os.getpid()}").touch()
        while not Path(spec["barrier_dir"], "go").exists():
            time.sleep(0.01)
    results = benchmark_best_trials(
        spec["best"], Path(spec["test_data"]), Path(spec["root"]), spec["environment"], spec["data_config"], spec["hpo_config"],
        spec["benchmark_config"], spec["experiment"], MlflowClient(spec["uri"]), Path(spec["hpo_dir"]), progress,
    )
    print(json.dumps({"status": results[next(iter(results))]["status"]}))
    """
)


def worker_spec(
    demo: DemoSweeps, best: dict[str, Any], root: Path, experiment: dict[str, str], uri: str, **extra: Any
) -> dict[str, Any]:
    config = demo.config
    return {
        "best": best, "test_data": str(write_dataset(config.data_config, config.root_dir).test), "root": str(root), "environment": config.environment,
        "data_config": config.data_config, "hpo_config": config.hpo_config, "benchmark_config": config.benchmark_config,
        "experiment": experiment, "uri": uri, "hpo_dir": str(demo.hpo_dir), **extra,
    }  # fmt: skip


def start_together_and_collect(processes: list[subprocess.Popen[str]], barrier: Path) -> list[str]:
    """Wait until every worker announced readiness in ``barrier``, start them at one moment, and return the
    status each printed (after checking it exited 0)."""
    deadline = time.monotonic() + 180
    while len(list(barrier.glob("ready-*"))) < len(processes):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), (
            "a worker died before the start signal"
        )
        time.sleep(0.1)
    (barrier / "go").touch()
    statuses = []
    for process in processes:
        out, _ = process.communicate(timeout=240)
        assert process.returncode == 0, out
        statuses.append(json.loads(out.strip().splitlines()[-1])["status"])
    return statuses
