"""Shared fixtures for the benchmark_pipeline test suite.

The suite uses real parts only: a real MLflow tracking server over HTTP on 127.0.0.1, real Optuna sqlite
storages, real trial folders and real (tiny) training. Nothing is mocked.

Fixtures here:

* ``mlflow_server`` (session): starts ``mlflow server`` on a free port, yields its tracking URI.
* ``mlflow_client``: an ``MlflowClient`` for that server.
* ``private_mlflow_server``: a server (:class:`MlflowServer`) a test may kill and restart.
* ``tiny_raw_config`` / ``make_config``: factories for a small pipeline config (raw dict / ``PipelineConfig``)
  whose MLflow experiment names are unique per call, so tests sharing the server never see each other's runs.
* ``demo_sweeps`` (session): real sweeps of 2 backbones x 2 variants x 3 trials in one root, the suite's only
  training of the demo's sweeps; READ-ONLY for the tests that use it (copy what you need to change).
* ``postgres_server`` (session): a real PostgreSQL server (:class:`~benchmark_pipeline_tests.postgres_server.PostgresServer`);
  each test creates its own database in it.
* ``dagster_setup``: a private copy of those sweeps, the code location's resources and a real Dagster instance.

Only fixtures live here; what they are built from, and what tests import, lives in modules of its own:
:mod:`~benchmark_pipeline_tests.mlflow_server` (``MlflowServer``, ``benchmark_runs``),
:mod:`~benchmark_pipeline_tests.tiny_config` (``tiny_config_dict``, ``deep_merge``, ``unique_suffix``),
:mod:`~benchmark_pipeline_tests.demo_sweeps` (``DemoSweeps``, ``train_demo_sweeps``),
:mod:`~benchmark_pipeline_tests.postgres_server`, :mod:`~benchmark_pipeline_tests.ports` (``free_port``) and
:mod:`~benchmark_pipeline_tests.builders`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# MLflow's client prints a "View run ... at ..." line, fetching the run once more, every time a run is
# terminated; in tests that is only noise and an extra HTTP request per run. (A documented MLflow setting.)
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# The MLflow search fast path raises instead of falling back silently when MLflow's internals move (tracking.py).
os.environ.setdefault("BENCHMARK_PIPELINE_STRICT_MLFLOW_INTERNALS", "1")

from mlflow.tracking import MlflowClient

from benchmark_pipeline.config import PipelineConfig, config_from_dict
from benchmark_pipeline_tests.demo_sweeps import DemoSweeps, train_demo_sweeps
from benchmark_pipeline_tests.mlflow_server import MlflowServer
from benchmark_pipeline_tests.ports import free_port
from benchmark_pipeline_tests.postgres_server import PostgresServer, postgres_unavailable_reason
from benchmark_pipeline_tests.tiny_config import deep_merge, tiny_config_dict

# ---------------------------------------------------------------------------------------- MLflow server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (sqlite backend, local artifact store) for the whole session.

    Yields its tracking URI ``http://127.0.0.1:<port>``; the server's process group is terminated at the end.
    The server's output goes to ``mlflow-server.log`` in its tmp dir; its tail is shown if startup fails.
    """
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def private_mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A server of the test's own, which the test may kill and restart (fault injection)."""
    server = MlflowServer(tmp_path_factory.mktemp("private_mlflow_server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_client(mlflow_server: str) -> MlflowClient:
    """An explicit client for the session's MLflow server."""
    return MlflowClient(tracking_uri=mlflow_server)


# ---------------------------------------------------------------------------------------------- configs


@pytest.fixture
def tiny_raw_config() -> Callable[..., dict[str, Any]]:
    """``tiny_raw_config(root, tracking_uri=None, **overrides)`` → a raw config dict (no server needed).

    ``overrides`` are merged recursively (see :func:`deep_merge`; ``None`` removes a key).
    """

    def build(root: Path | str, tracking_uri: str | None = None, **overrides: Any) -> dict[str, Any]:
        return deep_merge(tiny_config_dict(root, tracking_uri), overrides)

    return build


@pytest.fixture
def make_config(mlflow_server: str) -> Callable[..., PipelineConfig]:
    """``make_config(root, **overrides)`` → a small ``PipelineConfig`` rooted at ``root``, tracking to the session
    server, with experiment names unique to this call. ``overrides`` are merged into the raw dict recursively;
    pass ``hpo_config={"variants": {"v2": None}}`` to drop a variant. The environment is ignored (``env={}``).
    """

    def build(root: Path | str, **overrides: Any) -> PipelineConfig:
        raw = deep_merge(tiny_config_dict(root, mlflow_server), overrides)
        return config_from_dict(raw, env={})

    return build


# ------------------------------------------------------------------------------------------ demo sweeps


@pytest.fixture(scope="session")
def demo_sweeps(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> DemoSweeps:
    """Real sweeps: tiny_transformer and bilstm x v1 and v2 x 3 trials (1 epoch each) in one root.

    READ-ONLY: many tests read these MLflow experiments, studies and folders. Tests that change data must
    copy it (e.g. ``shutil.copytree(demo_sweeps.hpo_dir, ...)``) or build their own.
    """
    return train_demo_sweeps(mlflow_server, tmp_path_factory.mktemp("demo_sweeps"))


# ------------------------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server (Debian's ``postgresql``) on 127.0.0.1 for the whole session, stopped and
    removed at the end; tests take their own database with ``postgres_server.create_database()``.

    Skips, printing what to install, where PostgreSQL is missing (``make test`` installs it when run as root).
    """
    reason = postgres_unavailable_reason()
    if reason is not None:
        print(f"\nSKIPPING the PostgreSQL tests: {reason}")
        pytest.skip(reason)
    server = PostgresServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------ dagster


@pytest.fixture
def dagster_setup(demo_sweeps: DemoSweeps, mlflow_server: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A config file reading a private copy of the demo sweeps' folders (tests may break files in it),
    the demo's MLflow HPO experiments, and a benchmark experiment of its own; the code location's resources
    for it; a real sqlite-backed Dagster instance (temporary DAGSTER_HOME) with the demo's partitions
    registered, backbones in the order ``tiny_transformer``, ``bilstm`` and variants ``v1``, ``v2``.

    Yields ``{"config", "resources", "instance", "client"}``.
    """
    import dagster as dg

    from benchmark_pipeline.config import load_config
    from benchmark_pipeline.defs.io_managers import JsonIOManager, default_io_base_path
    from benchmark_pipeline.defs.partitions import PAIRS_REGISTRY
    from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings

    path, _raw = demo_sweeps.private_config_file(tmp_path)
    resources = {
        "settings": PipelineSettings(config_path=str(path)),
        "mlflow": MlflowResource(tracking_uri=mlflow_server),
        "io_manager": JsonIOManager(base_path=default_io_base_path(load_config(path, env={}))),  # as default_resources
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("backbone", ["tiny_transformer", "bilstm"])
        instance.add_dynamic_partitions("variant", ["v1", "v2"])
        instance.add_dynamic_partitions(
            PAIRS_REGISTRY, ["bilstm|v1", "bilstm|v2", "tiny_transformer|v1", "tiny_transformer|v2"]
        )
        yield {
            "config": load_config(path, env={}),
            "resources": resources,
            "instance": instance,
            "client": MlflowClient(mlflow_server),
        }
