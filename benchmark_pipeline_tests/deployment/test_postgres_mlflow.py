"""MLflow on a real PostgreSQL backend store (``mlflow server --serve-artifacts``), shared by two "machines"
(separate roots, so separate caches and ``flock`` claims): the MLflow lease lets exactly one benchmark a key."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from benchmark_pipeline import benchmark_best_trials
from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.benchmarking.leases import LEASE_STALE_S, TAG_LEASE_HEARTBEAT, TAG_LEASE_OWNER
from benchmark_pipeline.benchmarking.mlflow_logging import start_benchmark_run
from benchmark_pipeline.demo.dataset import write_dataset
from benchmark_pipeline_tests.benchmark_workers import (
    PROJECT_ROOT,
    WORKER_SCRIPT,
    best_from_disk,
    start_together_and_collect,
    worker_spec,
)
from benchmark_pipeline_tests.demo_sweeps import DemoSweeps
from benchmark_pipeline_tests.mlflow_server import MlflowServer
from benchmark_pipeline_tests.postgres_server import PostgresServer
from benchmark_pipeline_tests.tiny_config import unique_suffix


@pytest.fixture(scope="module")
def postgres_mlflow_server(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow server whose backend store is a Postgres database, given as users write the URL."""
    database = postgres_server.create_database("mlflow")
    server = MlflowServer(tmp_path_factory.mktemp("postgres_mlflow"), backend_store_uri=postgres_server.url(database))
    try:
        yield server.start()
    finally:
        server.stop()


def test_two_machines_benchmarking_one_key_at_once_make_exactly_one_benchmark(
    demo_sweeps: DemoSweeps, postgres_mlflow_server: str, tmp_path: Path
) -> None:
    best = best_from_disk(demo_sweeps, "bilstm")
    experiment = {"name": f"benchmarks-{unique_suffix()}"}
    client = MlflowClient(postgres_mlflow_server)
    client.create_experiment(experiment["name"])
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    processes = []
    for machine in ("machine-a", "machine-b"):
        root = tmp_path / machine  # its own cache folder, hence its own flock: only the MLflow lease is shared
        root.mkdir()
        spec = root / "spec.json"
        spec.write_text(
            json.dumps(
                worker_spec(demo_sweeps, best, root, experiment, postgres_mlflow_server, barrier_dir=str(barrier))
            )
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, str(script), str(spec)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
            )
        )
    assert sorted(start_together_and_collect(processes, barrier)) == ["benchmarked", "existing"]
    found = client.get_experiment_by_name(experiment["name"])
    runs = client.search_runs([found.experiment_id], run_view_type=ViewType.ACTIVE_ONLY)
    # One benchmark, FINISHED; the losing contender's lease run (if it got as far as creating one) is deleted.
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.tags[TAG_LEASE_OWNER] and float(runs[0].data.tags[TAG_LEASE_HEARTBEAT]) > 0
    assert (tmp_path / "machine-a" / "outputs").exists() and (tmp_path / "machine-b" / "outputs").exists()


def test_a_stale_lease_of_a_dead_machine_does_not_block_the_benchmark(
    demo_sweeps: DemoSweeps, postgres_mlflow_server: str, tmp_path: Path
) -> None:
    config = demo_sweeps.config
    best = best_from_disk(demo_sweeps, "bilstm")
    key = key_for_trial(best["bilstm"], config.data_config, config.benchmark_config)
    experiment = {"name": f"benchmarks-{unique_suffix()}"}
    client = MlflowClient(postgres_mlflow_server)
    experiment_id = client.create_experiment(experiment["name"])
    # What a machine that died mid-benchmark leaves: a RUNNING run with the key, its last heartbeat too old.
    dead = start_benchmark_run(client, experiment_id, key, best["bilstm"].get("run_id"))
    client.set_tag(dead, TAG_LEASE_OWNER, "dead-machine")
    client.set_tag(dead, TAG_LEASE_HEARTBEAT, f"{time.time() - LEASE_STALE_S - 30:.0f}")
    started = time.monotonic()
    result = benchmark_best_trials(
        best, write_dataset(config.data_config, config.root_dir).test, tmp_path, config.environment, config.data_config,
        config.hpo_config, config.benchmark_config, experiment, client, demo_sweeps.hpo_dir,
    )["bilstm"]  # fmt: skip
    assert result["status"] == "benchmarked" and result["mlflow_run_id"] != dead
    assert time.monotonic() - started < 60  # not the 30-minute wait of a live lease
    statuses = {r.info.run_id: r.info.status for r in client.search_runs([experiment_id])}
    assert statuses == {dead: "RUNNING", result["mlflow_run_id"]: "FINISHED"}  # the stale run never counts
