"""Dagster beyond one machine, on a real PostgreSQL server: two "machines", each with a ``DAGSTER_HOME`` and a
root of its own, share only the Dagster storage (Postgres), the MLflow server and the IO manager's base path."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from benchmark_pipeline.defs.benchmark_assets import benchmark_result
from benchmark_pipeline.defs.io_managers import JsonIOManager
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.defs.selection_assets import best_trial
from benchmark_pipeline.defs.sensors import MAX_BENCHMARK_GENERATIONS, benchmark_run_key, benchmark_sensor
from benchmark_pipeline_tests.demo_sweeps import DemoSweeps
from benchmark_pipeline_tests.postgres_server import PostgresServer
from benchmark_pipeline_tests.tiny_config import unique_suffix


def dagster_yaml(postgres_url: str) -> dict[str, Any]:
    """The ``dagster.yaml`` of docs/deployment.md: run, event-log and schedule storage on Postgres. The URL
    names psycopg2 (``postgresql+psycopg2://``): dagster-postgres 0.29.27 sends ``NOTIFY run_events, :id``,
    which psycopg 3 (SQLAlchemy 2.1's default for ``postgresql://``) binds server-side and Postgres rejects."""
    return {"storage": {"postgres": {"postgres_url": postgres_url}}, "telemetry": {"enabled": False}}


class Machine:
    """One machine: its own DAGSTER_HOME (a Postgres-backed instance) and its own root and config file."""

    def __init__(self, base: Path, name: str, postgres_url: str, raw_config: dict[str, Any]) -> None:
        self.home = base / name / "dagster_home"
        self.root = base / name / "root"
        self.home.mkdir(parents=True)
        self.root.mkdir(parents=True)
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(dagster_yaml(postgres_url)), encoding="utf-8")
        raw = {**raw_config, "root_dir": str(self.root)}
        self.config_path = self.root / "pipeline.yaml"
        self.config_path.write_text(yaml.safe_dump(raw), encoding="utf-8")

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def resources(self, mlflow_server: str, io_base_path: str | None) -> dict[str, Any]:
        resources: dict[str, Any] = {
            "settings": PipelineSettings(config_path=str(self.config_path)),
            "mlflow": MlflowResource(tracking_uri=mlflow_server),
        }
        if io_base_path is not None:
            resources["io_manager"] = JsonIOManager(base_path=io_base_path)
        return resources


@pytest.fixture
def two_machines(
    postgres_server: PostgresServer, demo_sweeps: DemoSweeps, tmp_path: Path
) -> Iterator[tuple[Machine, Machine]]:
    database = postgres_server.create_database("dagster")
    url = postgres_server.url(database, driver="postgresql+psycopg2")
    _, raw = demo_sweeps.private_config_file(tmp_path / "source")
    # Machine A selects from its copy of the trial folders; machine B has none (an empty HPO folder).
    a = Machine(tmp_path, "machine-a", url, {**raw, "hpo_output_dir": str(tmp_path / "machine-a" / "root" / "hpo")})
    b = Machine(tmp_path, "machine-b", url, {**raw, "hpo_output_dir": str(tmp_path / "machine-b" / "root" / "hpo")})
    shutil.copytree(tmp_path / "source" / "hpo", a.root / "hpo")
    (b.root / "hpo").mkdir()
    yield a, b


def test_a_selection_made_on_one_machine_is_benchmarked_on_another(
    two_machines: tuple[Machine, Machine], mlflow_server: str, tmp_path: Path
) -> None:
    a, b = two_machines
    shared_io = str(tmp_path / "bucket" / f"io-{unique_suffix()}")  # a shared bucket or mount
    with a.instance() as instance_a, b.instance() as instance_b:
        instance_a.add_dynamic_partitions("backbone", ["bilstm"])
        # One run storage for both: B sees the partition A registered.
        assert instance_b.get_dynamic_partitions("backbone") == ["bilstm"]
        selected = dg.materialize(
            [best_trial], partition_key="bilstm", instance=instance_a, resources=a.resources(mlflow_server, shared_io)
        )
        trial_info = selected.output_for_node("best_trial")
        assert Path(shared_io, "best_trial", "bilstm.json").is_file()
        # Machine A's disk is not B's: its trial folders are gone from B's point of view.
        shutil.rmtree(a.root)

        # Dagster's default IO manager keeps outputs in the selecting machine's DAGSTER_HOME: the failure of #13.
        lost = dg.materialize(
            [best_trial, benchmark_result], selection=[benchmark_result], partition_key="bilstm", instance=instance_b,
            resources=b.resources(mlflow_server, None), raise_on_error=False,
        )  # fmt: skip
        assert not lost.success
        (failure,) = [e for e in lost.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
        assert "best_trial" in str(failure.step_failure_data.error) and "FileNotFoundError" in str(
            failure.step_failure_data.error
        )

        handed_over = dg.materialize(
            [best_trial, benchmark_result], selection=[benchmark_result], partition_key="bilstm", instance=instance_b,
            resources=b.resources(mlflow_server, shared_io),
        )  # fmt: skip
        result = handed_over.output_for_node("benchmark_result")
        assert result["trial_id"] == trial_info["trial_id"] and result["status"] == "benchmarked"
        # The model came from the HPO run's MLflow artifacts, the trial folder being on machine A only.
        assert not Path(trial_info["trial_dir"]).exists()
        records = instance_a.fetch_materializations(dg.AssetKey("benchmark_result"), limit=5).records
        assert len(records) == 1  # B's materialization, seen from A through the shared storage
        assert not (b.home / "storage" / "best_trial").exists()

    config = PipelineSettings(config_path=str(b.config_path)).load()
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(config.mlflow.benchmark_experiment)
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    assert [r.info.status for r in runs] == ["FINISHED"]


def test_a_lost_result_is_requested_again_under_a_new_run_key_up_to_the_bound(
    two_machines: tuple[Machine, Machine], mlflow_server: str, tmp_path: Path
) -> None:
    a, _ = two_machines
    resources = a.resources(mlflow_server, str(tmp_path / "bucket" / f"io-{unique_suffix()}"))
    client = MlflowClient(tracking_uri=mlflow_server)
    with a.instance() as instance:
        instance.add_dynamic_partitions("backbone", ["bilstm"])
        dg.materialize([best_trial], partition_key="bilstm", instance=instance, resources=resources)
        run_keys = []
        for _generation in range(MAX_BENCHMARK_GENERATIONS):
            tick = benchmark_sensor(dg.build_sensor_context(instance=instance, resources=resources))
            (request,) = tick.run_requests
            run_keys.append(request.run_key)
            # The run the daemon would launch for this request (same tags), for real.
            ran = dg.materialize(
                [best_trial, benchmark_result], selection=[benchmark_result], partition_key="bilstm", instance=instance,
                resources=resources, tags=request.tags,
            )  # fmt: skip
            result = ran.output_for_node("benchmark_result")
            assert result["status"] == "benchmarked"
            done = benchmark_sensor(dg.build_sensor_context(instance=instance, resources=resources))
            assert isinstance(done, dg.SkipReason) and "already benchmarked: bilstm (key " in done.skip_message, done
            # The result is lost: its MLflow run deleted, its cache entry gone.
            client.delete_run(result["mlflow_run_id"])
            Path(result["cache_path"]).unlink()
        key = request.tags["benchmark_pipeline/benchmark_key"]
        # A new run key each time (the daemon drops a request whose run key it has already launched) ...
        assert run_keys == [benchmark_run_key(key, generation, 0) for generation in range(MAX_BENCHMARK_GENERATIONS)]
        assert run_keys[0] == f"{key}#attempt-0" and len(set(run_keys)) == MAX_BENCHMARK_GENERATIONS
        # ... up to the bound; then the skip reason says what was skipped and why.
        final = benchmark_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(final, dg.SkipReason), final
        assert f"result lost again after {MAX_BENCHMARK_GENERATIONS} successful runs" in final.skip_message
        assert f"bilstm (key {key[:12]}" in final.skip_message


def test_the_shipped_dagster_yaml_runs_on_postgres_with_the_benchmark_limits(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    from benchmark_pipeline.defs.jobs import (
        BENCHMARK_POOL,
        BENCHMARK_POOL_TAG,
        benchmark_job,
        benchmark_per_variant_job,
    )
    from benchmark_pipeline.defs.sensors import RUN_KEY_TAG

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml", home / "dagster.yaml")
    # The deployment's environment (these are the file's own variables, not the code under test).
    for name, value in {"DAGSTER_PG_USERNAME": "postgres", "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_HOST": "127.0.0.1",
                        "DAGSTER_PG_DB": postgres_server.create_database("dagster_shipped"), "DAGSTER_PG_PORT": str(postgres_server.port)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        limits = {limit["key"]: limit for limit in coordinator.get_run_queue_config().tag_concurrency_limits}
        assert limits[RUN_KEY_TAG]["value"] == {"applyLimitPerUniqueValue": True} and limits[RUN_KEY_TAG]["limit"] == 1
        assert limits[BENCHMARK_POOL_TAG]["value"] == BENCHMARK_POOL

        # The storage works: an asset materialized through it is read back.
        @dg.asset
        def probe() -> int:
            return 1

        assert dg.materialize([probe], instance=instance).success
        assert instance.get_latest_materialization_event(dg.AssetKey("probe")) is not None
    # Every benchmark run carries the pool tag the limit counts.
    assert (
        benchmark_job.tags[BENCHMARK_POOL_TAG] == BENCHMARK_POOL == benchmark_per_variant_job.tags[BENCHMARK_POOL_TAG]
    )
