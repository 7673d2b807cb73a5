"""End to end: ``dagster dev`` (webserver + daemon) on 127.0.0.1, the benchmark sensor turned on through the
webserver's GraphQL API, its runs launched by the real daemon, and later ticks launching nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from benchmark_pipeline.config import load_config
from benchmark_pipeline.defs.io_managers import JsonIOManager, default_io_base_path
from benchmark_pipeline.defs.partitions import PAIRS_REGISTRY
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.defs.selection_assets import best_trial
from benchmark_pipeline.defs.sensors import SENSOR_TAG
from benchmark_pipeline_tests.demo_sweeps import DemoSweeps
from benchmark_pipeline_tests.ports import free_port
from benchmark_pipeline_tests.postgres_server import PostgresServer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SENSOR_SELECTOR = {
    "repositoryLocationName": "benchmark_pipeline",
    "repositoryName": "__repository__",
    "sensorName": "benchmark_sensor",
}


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


def _wait_for(condition: Any, timeout_s: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:]) if log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}; dagster dev log tail:\n{tail}")


@pytest.fixture
def dagster_home(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The deployment's ``deploy/dagster.yaml`` on the test PostgreSQL server (run queue limits included);
    a plain sqlite home where PostgreSQL is not installed."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    try:
        postgres: PostgresServer | None = request.getfixturevalue("postgres_server")
    except pytest.skip.Exception:
        postgres = None
    if postgres is None:
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
        return home
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    # The file's own variables, for this process and for `dagster dev` (which inherits the environment).
    for name, value in {"DAGSTER_PG_USERNAME": "postgres", "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_HOST": "127.0.0.1",
                        "DAGSTER_PG_DB": postgres.create_database("dagster_dev"), "DAGSTER_PG_PORT": str(postgres.port)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    return home


@pytest.fixture
def dagster_dev(
    demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path, dagster_home: Path
) -> Iterator[dict[str, Any]]:
    config_path, raw = demo_sweeps.private_config_file(tmp_path)

    # Select the best trials first (in this process, on the same instance), so the sensor has keys to check.
    resources = {
        "settings": PipelineSettings(config_path=str(config_path)),
        "mlflow": MlflowResource(tracking_uri=mlflow_server),
        # where the code location's runs will read the selections from (its default base path)
        "io_manager": JsonIOManager(base_path=default_io_base_path(load_config(config_path, env={}))),
    }
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("backbone", ["tiny_transformer", "bilstm"])
        instance.add_dynamic_partitions("variant", ["v1", "v2"])
        instance.add_dynamic_partitions(PAIRS_REGISTRY, [])
        for backbone in ("tiny_transformer", "bilstm"):
            assert dg.materialize([best_trial], partition_key=backbone, instance=instance, resources=resources).success

    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "BENCHMARK_PIPELINE_CONFIG": str(config_path),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "BENCHMARK_PIPELINE_SENSOR_INTERVAL_S": "5",
    }
    log = tmp_path / "dagster-dev.log"
    command = [
        str(Path(sys.executable).parent / "dagster"),
        "dev",
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            data = _graphql(url, "query { sensorOrError(sensorSelector: %s) { __typename } }" % _selector_literal())
        except (OSError, AssertionError):
            return False
        return data["sensorOrError"]["__typename"] == "Sensor"

    try:
        _wait_for(ready, 150, "dagster dev to load the code location", log)
        yield {"url": url, "log": log, "home": dagster_home, "config": raw, "client": MlflowClient(mlflow_server)}
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)


def _selector_literal() -> str:
    return "{" + ", ".join(f'{k}: "{v}"' for k, v in SENSOR_SELECTOR.items()) + "}"


def _ticks(url: str) -> list[dict[str, Any]]:
    data = _graphql(
        url,
        "query { sensorOrError(sensorSelector: %s) { ... on Sensor { sensorState { ticks(limit: 50) { status timestamp skipReason runIds } } } } }"
        % _selector_literal(),
    )
    return sorted(data["sensorOrError"]["sensorState"]["ticks"], key=lambda t: t["timestamp"])


@pytest.mark.slow
def test_sensor_launches_missing_benchmarks_once_and_then_nothing(dagster_dev: dict[str, Any]) -> None:
    url, log, client = dagster_dev["url"], dagster_dev["log"], dagster_dev["client"]
    started = _graphql(
        url,
        "mutation { startSensor(sensorSelector: %s) { __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"
        % _selector_literal(),
    )
    assert started["startSensor"]["sensorState"]["status"] == "RUNNING", started

    with dg.DagsterInstance.from_config(str(dagster_dev["home"])) as instance:

        def sensor_runs() -> list[Any]:
            return instance.get_runs(filters=dg.RunsFilter(tags={SENSOR_TAG: "benchmark_sensor"}))

        def both_succeeded() -> bool:
            runs = sensor_runs()
            failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
            assert not failed, f"sensor-launched runs failed: {[r.run_id for r in failed]}; see {log}"
            return len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)

        _wait_for(both_succeeded, 300, "the two sensor-launched benchmark runs to succeed", log)
        finished_at = time.time()
        assert sorted(r.tags["dagster/partition"] for r in sensor_runs()) == ["bilstm", "tiny_transformer"]
        if "tag_concurrency_limits" in (dagster_dev["home"] / "dagster.yaml").read_text():
            # deploy/dagster.yaml's benchmark pool (limit 1): the daemon started the second run after the first ended.
            records = sorted(
                instance.get_run_records(filters=dg.RunsFilter(tags={SENSOR_TAG: "benchmark_sensor"})),
                key=lambda r: r.start_time,
            )
            assert records[0].end_time <= records[1].start_time, [(r.start_time, r.end_time) for r in records]

        # Later ticks see every key FINISHED in MLflow and launch nothing.
        def completed_ticks_since_runs() -> list[dict[str, Any]]:
            return [t for t in _ticks(url) if t["timestamp"] > finished_at and t["status"] != "STARTED"]

        _wait_for(lambda: len(completed_ticks_since_runs()) >= 2, 90, "two more completed sensor ticks", log)
        later = completed_ticks_since_runs()
        assert all(t["status"] == "SKIPPED" and not t["runIds"] for t in later), later
        reason = later[-1]["skipReason"]
        assert "already benchmarked: bilstm (key " in reason and "tiny_transformer (key " in reason, reason
        assert len(sensor_runs()) == 2

    experiment = client.get_experiment_by_name(dagster_dev["config"]["mlflow"]["benchmark_experiment"])
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert len({r.data.tags["benchmark_key"] for r in runs}) == 2
